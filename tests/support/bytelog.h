/* A growable byte log for fuzz targets: each run appends what it observed, and
 * two runs over the same input (whole and chunked) must log the same bytes. */
#ifndef HD_TEST_BYTELOG_H
#define HD_TEST_BYTELOG_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  uint8_t *p;
  size_t len, cap;
} log_t;

static void log_put(log_t *l, const void *p, size_t n) {
  if (l->len + n > l->cap) {
    size_t cap = l->cap ? l->cap : 1024;
    while (cap < l->len + n) cap *= 2;
    l->p = realloc(l->p, cap);
    if (l->p == NULL) abort();
    l->cap = cap;
  }
  if (n) memcpy(l->p + l->len, p, n);
  l->len += n;
}

#endif
