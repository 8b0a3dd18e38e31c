/* UTF-8 validation as an explicit state machine.
 *
 * RFC 3629 section 4 gives the well-formed byte sequences:
 *
 *   00..7F
 *   C2..DF 80..BF
 *   E0     A0..BF 80..BF        (E0 80..9F would be overlong)
 *   E1..EC 80..BF 80..BF
 *   ED     80..9F 80..BF        (ED A0..BF would be a surrogate)
 *   EE..EF 80..BF 80..BF
 *   F0     90..BF 80..BF 80..BF (F0 80..8F would be overlong)
 *   F1..F3 80..BF 80..BF 80..BF
 *   F4     80..8F 80..BF 80..BF (F4 90.. would be above U+10FFFF)
 *
 * Each state is "how many continuation bytes remain" plus, for the four lead
 * bytes above with a narrowed second byte, the range that second byte must fall
 * in. The ASCII fast path checks eight bytes at a time while at a boundary.
 */
#include "proto/utf8.h"

#include <string.h>

#include "herald/herald.h"

enum {
  S_ACCEPT = 0,
  S_CONT1, /* one 80..BF left */
  S_CONT2, /* two 80..BF left */
  S_CONT3, /* three 80..BF left */
  S_E0,    /* A0..BF, then one */
  S_ED,    /* 80..9F, then one */
  S_F0,    /* 90..BF, then two */
  S_F4,    /* 80..8F, then two */
  S_REJECT
};

static uint8_t step(uint8_t s, uint8_t b) {
  switch (s) {
  case S_ACCEPT:
    if (b < 0x80) return S_ACCEPT;
    if (b < 0xC2) return S_REJECT; /* continuation byte, or overlong C0/C1 */
    if (b < 0xE0) return S_CONT1;
    if (b == 0xE0) return S_E0;
    if (b == 0xED) return S_ED;
    if (b < 0xF0) return S_CONT2;
    if (b == 0xF0) return S_F0;
    if (b < 0xF4) return S_CONT3;
    if (b == 0xF4) return S_F4;
    return S_REJECT;
  case S_CONT1:
    return (b & 0xC0) == 0x80 ? S_ACCEPT : S_REJECT;
  case S_CONT2:
    return (b & 0xC0) == 0x80 ? S_CONT1 : S_REJECT;
  case S_CONT3:
    return (b & 0xC0) == 0x80 ? S_CONT2 : S_REJECT;
  case S_E0:
    return b >= 0xA0 && b <= 0xBF ? S_CONT1 : S_REJECT;
  case S_ED:
    return b >= 0x80 && b <= 0x9F ? S_CONT1 : S_REJECT;
  case S_F0:
    return b >= 0x90 && b <= 0xBF ? S_CONT2 : S_REJECT;
  case S_F4:
    return b >= 0x80 && b <= 0x8F ? S_CONT2 : S_REJECT;
  default:
    return S_REJECT;
  }
}

int hd_utf8_feed(hd_utf8_state_t *st, const uint8_t *p, size_t len) {
  uint8_t s = *st;
  const uint8_t *end = p + len;

  while (p < end) {
    if (s == S_ACCEPT) {
      /* Skip runs of ASCII a word at a time. */
      while (end - p >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        if (w & UINT64_C(0x8080808080808080)) break;
        p += 8;
      }
      if (p == end) break;
    }
    s = step(s, *p++);
    if (s == S_REJECT) {
      *st = s;
      return HD_EUTF8;
    }
  }
  *st = s;
  return 0;
}

bool hd_utf8_valid(const uint8_t *p, size_t len) {
  hd_utf8_state_t st = HD_UTF8_ACCEPT;
  return hd_utf8_feed(&st, p, len) == 0 && hd_utf8_complete(st);
}
