/* Backend events as JSON (see event.c). */
#ifndef HD_CORE_EVENT_H
#define HD_CORE_EVENT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "herald/manager.h"

typedef struct {
  const char *user_id; /* borrowed from the JSON */
  hd_event_t ev;       /* ids borrowed from the JSON; data points at .data */
  char *data;          /* owned: the compact JSON of "data"; hd__json_free() it */
} hd_event_json_t;

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
