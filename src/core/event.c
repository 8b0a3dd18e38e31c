/* Backend events as JSON: validation and conversion to hd_event_t.
 *
 * The publish API's rules (PROTOCOL.md section 7): user_id a string of 1..128
 * bytes; thread_id and run_id absent, null or such a string; type one of the six
 * event types; data an object; the whole event, once enveloped, within the
 * client message limit. No I/O: fuzzed by tests/fuzz/fuzz_event.c.
 */
#include "core/event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *hd__json_id_field(json_t *ev, const char *name, bool required,
                              const char **err) {
  json_t *v = json_object_get(ev, name);
  size_t n;

  if (v == NULL || json_is_null(v)) {
    if (required) *err = "missing";
    return NULL;
  }
  if (!json_is_string(v)) {
    *err = "not_a_string";
    return NULL;
  }
  n = json_string_length(v);
  if (n == 0 || n > HD_ID_MAX || memchr(json_string_value(v), 0, n)) {
    *err = "bad_length";
    return NULL;
  }
  return json_string_value(v);
}

void hd__json_free(void *p) {
  json_free_t f;
  json_get_alloc_funcs(NULL, &f);
  f(p);
}

/* Validates one event; on error writes a message naming the problem. */
bool hd__event_from_json(json_t *j, size_t max_message, hd_event_json_t *out, char *msg,
                         size_t cap) {
  const char *err = NULL, *type;
  json_t *data;
  int t;

  memset(out, 0, sizeof(*out));
  if (!json_is_object(j)) {
    snprintf(msg, cap, "event must be an object");
    return false;
  }
  out->user_id = hd__json_id_field(j, "user_id", true, &err);
  if (err) {
    snprintf(msg, cap, "user_id: %s (a string of 1..%d bytes)", err, HD_ID_MAX);
    return false;
  }
  out->ev.thread_id = hd__json_id_field(j, "thread_id", false, &err);
  if (err) {
    snprintf(msg, cap, "thread_id: %s (a string of 1..%d bytes)", err, HD_ID_MAX);
    return false;
  }
  out->ev.run_id = hd__json_id_field(j, "run_id", false, &err);
  if (err) {
    snprintf(msg, cap, "run_id: %s (a string of 1..%d bytes)", err, HD_ID_MAX);
    return false;
  }
  type = json_string_value(json_object_get(j, "type"));
  if (type == NULL || (t = hd_event_type_parse(type, strlen(type))) < 0) {
    snprintf(msg, cap,
             "type: must be one of agent_started, agent_thinking, tool_executing, "
             "tool_completed, agent_message, agent_completed");
    return false;
  }
  out->ev.type = (hd_event_type_t)t;
  data = json_object_get(j, "data");
  if (!json_is_object(data)) {
    snprintf(msg, cap, "data: must be an object");
    return false;
  }
  out->data = json_dumps(data, JSON_COMPACT);
  if (out->data == NULL) {
    snprintf(msg, cap, "data: cannot be encoded");
    return false;
  }
  out->ev.data = out->data;
  out->ev.data_len = strlen(out->data);
  if (out->ev.data_len + HD_EVENT_ENVELOPE_MAX > max_message) {
    snprintf(msg, cap, "event encodes to more than the %zu-byte message limit",
             max_message);
    hd__json_free(out->data);
    out->data = NULL;
    return false;
  }
  return true;
}
