/* Backend events as JSON (see event.c). */
#ifndef HD_CORE_EVENT_H
#define HD_CORE_EVENT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "herald/manager.h"

/* What an event's envelope (type, seq, epoch, escaped ids, ts) may add to its
 * data: a generous bound, used to keep the whole within the message limit. */
#define HD_EVENT_ENVELOPE_MAX 700

typedef struct {
  const char *user_id; /* borrowed from the JSON (or the scanner's id copies) */
  hd_event_t ev;       /* ids borrowed likewise; data points at .data or the body */
  char *data; /* owned: the compact JSON of "data" (hd__json_free() it); NULL when
                 ev.data points into the request body (the fast path) */
} hd_event_json_t;

/* The publish fast path (pubscan.c): scans a whole publish body without a DOM.
 * Returns the number of events (>= 1) with out[] filled, ids copied
 * NUL-terminated into ids (room for len + 3 * cap + 1 bytes), each ev.data
 * pointing into body, and *batch telling {"events":[...]} from a single event;
 * or 0 to decline, when the body is invalid, has more than cap events, or lies
 * outside the subset it handles: then parse it with jansson, which decides. */
size_t hd__publish_scan(const char *body, size_t len, size_t max_message,
                        hd_event_json_t *out, size_t cap, char *ids, bool *batch);

/* Frees what jansson allocated (a json_dumps string) with jansson's
 * configured free function, which is not always free(). */
void hd__json_free(void *p);

/* Validates one event object. On success fills out (hd__json_free(out->data)
 * when done)
 * and returns true; otherwise writes a message naming the problem into msg. */
bool hd__event_from_json(json_t *j, size_t max_message, hd_event_json_t *out, char *msg,
                         size_t cap);

/* Reads the id field name of object j: a string of 1..HD_ID_MAX bytes without
 * NUL. Returns it (borrowed), or NULL with *err set ("missing" only when
 * required, "not_a_string", "bad_length"). */
const char *hd__json_id_field(json_t *j, const char *name, bool required,
                              const char **err);

#endif
