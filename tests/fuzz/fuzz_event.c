/* Fuzz target: backend event validation (src/core/event.c).
 *
 * The input is a publish body. Every event the validator accepts must satisfy
 * the rules it claims to enforce: a known type, ids of 1..128 bytes, data that
 * re-parses as a JSON object, and an encoded size within the limit.
 *
 * Like the publish handler, it parses and validates inside a jansson arena
 * window (src/api/json_arena.c), so ASan sees every arena allocation too.
 *
 * Differential: whenever the fast path (hd__publish_scan, src/core/pubscan.c)
 * accepts a body, jansson must accept it as well and yield the same events:
 * the same ids and type, and a data object equal to the bytes the fast path
 * would publish. Declining is always allowed; disagreeing never is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/json_arena.h"
#include "core/event.h"

static void check(json_t *j, size_t limit) {
  hd_event_json_t ev;
  char msg[200];
  json_t *data;

  if (!hd__event_from_json(j, limit, &ev, msg, sizeof(msg))) {
    if (msg[0] == '\0') abort(); /* every refusal names its reason */
    return;
  }
  if (ev.user_id == NULL || strlen(ev.user_id) == 0 || strlen(ev.user_id) > HD_ID_MAX)
    abort();
  if (hd_event_type_name(ev.ev.type) == NULL) abort();
  if (ev.ev.thread_id &&
      (strlen(ev.ev.thread_id) == 0 || strlen(ev.ev.thread_id) > HD_ID_MAX))
    abort();
  if (ev.ev.run_id && (strlen(ev.ev.run_id) == 0 || strlen(ev.ev.run_id) > HD_ID_MAX))
    abort();
  if (ev.ev.data_len >= limit) abort();
  data = json_loadb(ev.ev.data, ev.ev.data_len, 0, NULL);
  if (!json_is_object(data)) abort();
  json_decref(data);
  hd__json_free(ev.data);
}

static bool same_id(const char *a, const char *b) {
  return a == b || (a && b && strcmp(a, b) == 0);
}

/* The fast path must never accept what jansson refuses or read it otherwise. */
static void differential(const uint8_t *p, size_t n, size_t limit) {
  size_t cap = n / 32 + 1, got;
  hd_event_json_t *fast = malloc(cap * sizeof(*fast));
  char *ids = malloc(n + 3 * cap + 1);
  json_t *body, *list;
  bool batch = false;

  got = hd__publish_scan((const char *)p, n, limit, fast, cap, ids, &batch);
  if (got > 0) {
    body = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(body)) abort();
    list = json_object_get(body, "events");
    if (batch != (list != NULL)) abort();
    if (got != (batch ? json_array_size(list) : 1)) abort();
    for (size_t i = 0; i < got; i++) {
      hd_event_json_t slow;
      char msg[200];
      json_t *data;
      if (!hd__event_from_json(batch ? json_array_get(list, i) : body, (size_t)-1 / 2,
                               &slow, msg, sizeof(msg)))
        abort();
      if (!same_id(fast[i].user_id, slow.user_id) ||
          !same_id(fast[i].ev.thread_id, slow.ev.thread_id) ||
          !same_id(fast[i].ev.run_id, slow.ev.run_id) ||
          fast[i].ev.type != slow.ev.type || fast[i].data != NULL ||
          fast[i].ev.data_len + HD_EVENT_ENVELOPE_MAX > limit)
        abort();
      data =
          json_loadb(fast[i].ev.data, fast[i].ev.data_len, JSON_REJECT_DUPLICATES, NULL);
      if (!json_equal(data,
                      json_object_get(batch ? json_array_get(list, i) : body, "data")))
        abort();
      json_decref(data);
      hd__json_free(slow.data);
    }
    json_decref(body);
  }
  free(fast);
  free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *p, size_t n) {
  static bool installed;
  json_t *body, *list;
  size_t limit = 2048;

  if (!installed) hd_json_arena_install();
  installed = true;
  hd_json_arena_begin();
  differential(p, n, limit);
  body = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, NULL);
  if (body == NULL) {
    hd_json_arena_end();
    return 0;
  }
  list = json_object_get(body, "events");
  if (json_is_array(list)) {
    for (size_t i = 0; i < json_array_size(list); i++)
      check(json_array_get(list, i), limit);
  } else {
    check(body, limit);
  }
  json_decref(body);
  hd_json_arena_end();
  return 0;
}
