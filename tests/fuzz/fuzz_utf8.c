/* libFuzzer target for the UTF-8 validator (src/proto/utf8.c).
 *
 * A reference decoder written here from RFC 3629 (by code point ranges, not a
 * state table) classifies the input as valid, truncated (a valid prefix cut
 * inside a sequence) or invalid with the index of the first bad byte. The
 * validator must agree when fed whole, when split at a point chosen by the first
 * input byte, and when fed in small chunks; a rejection must come from the piece
 * holding the first bad byte. Any disagreement aborts. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/herald.h"
#include "proto/utf8.h"
#include "support/utf8_ref.h"

static void fail(const char *what, int ref, size_t bad, int got, size_t where) {
  fprintf(stderr,
          "fuzz_utf8: %s: reference %d (first bad byte %zu), validator %d (at %zu)\n",
          what, ref, bad, got, where);
  abort();
}

/* Feeds s in pieces of at most chunk bytes (chunk 0: whole, with an optional
 * single cut). Returns REF_*; *where is the start of the rejected piece. */
static int feed(const uint8_t *s, size_t n, size_t chunk, size_t cut, size_t *where,
                size_t *where_end) {
  hd_utf8_state_t st = HD_UTF8_ACCEPT;
  size_t pos = 0;

  while (pos < n) {
    size_t len = chunk ? chunk : (pos < cut ? cut - pos : n - pos);
    uint8_t *piece;
    int rc;
    if (len > n - pos) len = n - pos;
    piece = malloc(len);
    if (piece == NULL) abort();
    memcpy(piece, s + pos, len);
    rc = hd_utf8_feed(&st, piece, len);
    free(piece);
    if (rc != 0) {
      if (rc != HD_EUTF8) fail("unexpected return code", 0, 0, rc, pos);
      *where = pos;
      *where_end = pos + len;
      return REF_INVALID;
    }
    pos += len;
  }
  return hd_utf8_complete(st) ? REF_VALID : REF_TRUNCATED;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t bad = 0, where = 0, where_end = 0, cut, chunk;
  int ref, got;

  if (size < 1) return 0;
  cut = data[0];
  chunk = 1 + data[0] % 9;
  data++;
  size--;
  if (cut > size) cut = size;

  ref = ref_check(data, size, &bad);

  got = feed(data, size, 0, size, &where, &where_end);
  if (got != ref) fail("whole", ref, bad, got, where);
  if ((ref == REF_VALID) != hd_utf8_valid(data, size))
    fail("hd_utf8_valid", ref, bad, -1, 0);

  got = feed(data, size, 0, cut, &where, &where_end);
  if (got != ref || (ref == REF_INVALID && (bad < where || bad >= where_end)))
    fail("split", ref, bad, got, where);

  got = feed(data, size, chunk, 0, &where, &where_end);
  if (got != ref || (ref == REF_INVALID && (bad < where || bad >= where_end)))
    fail("chunked", ref, bad, got, where);

  if (size <= 256) { /* byte by byte: rejected exactly at the first bad byte */
    got = feed(data, size, 1, 0, &where, &where_end);
    if (got != ref || (ref == REF_INVALID && where != bad))
      fail("byte by byte", ref, bad, got, where);
  }
  return 0;
}
