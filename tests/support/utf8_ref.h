/* A reference UTF-8 decoder for tests and fuzzing, written from RFC 3629 by
 * code point ranges (not by a state table, unlike src/proto/utf8.c), so the
 * two can be compared. Classifies a string as valid, truncated (a valid prefix
 * cut inside a sequence) or invalid, with the index of the first bad byte. */
#ifndef HD_TEST_UTF8_REF_H
#define HD_TEST_UTF8_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { REF_VALID = 0, REF_TRUNCATED = 1, REF_INVALID = 2 };

/* True if some code point in [lo, hi] is a valid scalar value encoded with at
 * least min (the smallest code point that needs this sequence length). */
static bool ref_feasible(uint32_t lo, uint32_t hi, uint32_t min) {
  if (lo < min) lo = min;
  if (hi > 0x10FFFF) hi = 0x10FFFF;
  if (lo > hi) return false;
  if (lo >= 0xD800 && hi <= 0xDFFF) return false; /* only surrogates */
  return true;
}

/* Classifies s: valid and complete, a valid prefix cut inside a sequence, or
 * invalid with *bad the index of the first byte after which no completion
 * exists. */
static int ref_check(const uint8_t *s, size_t n, size_t *bad) {
  static const uint32_t mins[4] = {0, 0x80, 0x800, 0x10000};
  size_t i = 0;

  while (i < n) {
    uint8_t b = s[i];
    unsigned need;
    uint32_t cp;

    if (b < 0x80) {
      i++;
      continue;
    }
    if ((b & 0xE0) == 0xC0) {
      need = 1;
      cp = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
      need = 2;
      cp = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
      need = 3;
      cp = b & 0x07;
    } else {
      *bad = i;
      return REF_INVALID;
    }
    for (unsigned k = 0; k <= need; k++) {
      unsigned rest = need - k;
      uint32_t lo, hi;
      if (k > 0) {
        if (i + k >= n) return REF_TRUNCATED;
        if ((s[i + k] & 0xC0) != 0x80) {
          *bad = i + k;
          return REF_INVALID;
        }
        cp = cp << 6 | (s[i + k] & 0x3F);
      }
      lo = cp << (6 * rest);
      hi = lo | ((UINT32_C(1) << (6 * rest)) - 1);
      if (!ref_feasible(lo, hi, mins[need])) {
        *bad = i + k;
        return REF_INVALID;
      }
    }
    i += need + 1;
  }
  return REF_VALID;
}

#endif
