/* Tests for src/proto/utf8.c: the incremental RFC 3629 validator.
 *
 * Every table case is fed whole, split at every byte boundary, split at every
 * pair of boundaries and byte by byte; the verdict must not depend on the split
 * and a rejection must come from the piece that holds the first bad byte. A
 * reference decoder written independently (by code point ranges, not by a state
 * table) is compared against the validator over a few hundred thousand random and
 * structured strings. */
#include <stdbool.h>
#include <stdint.h>

#include "herald/herald.h"
#include "proto/utf8.h"
#include "support/unit.h"
#include "support/utf8_ref.h"

/* ---- helpers -------------------------------------------------------------- */

/* Feeds s in pieces ending at the given cut points. Returns the verdict; *piece is
 * the index of the piece that was rejected. Pieces are separately allocated so a
 * read past a piece's end is caught under ASan. */
static int feed_split(const uint8_t *s, size_t n, const size_t *cuts, size_t ncuts,
                      size_t *piece, bool *complete) {
  hd_utf8_state_t st = HD_UTF8_ACCEPT;
  size_t start = 0;

  for (size_t k = 0; k <= ncuts; k++) {
    size_t end = k < ncuts ? cuts[k] : n;
    uint8_t *copy = malloc(end - start + 1);
    int rc;
    memcpy(copy, s + start, end - start);
    rc = hd_utf8_feed(&st, copy, end - start);
    free(copy);
    if (rc != 0) {
      *piece = k;
      *complete = false;
      return rc;
    }
    start = end;
  }
  *complete = hd_utf8_complete(st);
  return 0;
}

static size_t piece_of(size_t idx, const size_t *cuts, size_t ncuts) {
  size_t k = 0;
  while (k < ncuts && idx >= cuts[k]) k++;
  return k;
}

static void hexs(char *out, const uint8_t *s, size_t n) {
  out[0] = '\0';
  for (size_t i = 0; i < n && i < 40; i++) sprintf(out + 3 * i, "%02X ", s[i]);
}

/* Checks one case under one split. expect is REF_*; bad the first bad byte. */
static void check_split(const uint8_t *s, size_t n, int expect, size_t bad,
                        const size_t *cuts, size_t ncuts) {
  size_t piece = (size_t)-1;
  bool complete = false;
  int rc = feed_split(s, n, cuts, ncuts, &piece, &complete);
  char hx[128];

  hexs(hx, s, n);
  hd_test_checks++;
  if (expect == REF_INVALID) {
    size_t want = piece_of(bad, cuts, ncuts);
    if (rc != HD_EUTF8 || piece != want) {
      hd_test_failures++;
      fprintf(stderr,
              "utf8 [%s] cuts=%zu(first %zu): expected EUTF8 in piece %zu, got rc=%d "
              "piece=%zu\n",
              hx, ncuts, ncuts ? cuts[0] : 0, want, rc, piece);
    }
  } else {
    bool want_complete = expect == REF_VALID;
    if (rc != 0 || complete != want_complete) {
      hd_test_failures++;
      fprintf(stderr,
              "utf8 [%s] cuts=%zu(first %zu): expected rc=0 complete=%d, got rc=%d "
              "complete=%d\n",
              hx, ncuts, ncuts ? cuts[0] : 0, want_complete, rc, complete);
    }
  }
}

/* Whole, every single split point, every pair of split points, byte by byte. */
static void check_all_splits(const uint8_t *s, size_t n, int expect, size_t bad) {
  size_t cuts[64];

  check_split(s, n, expect, bad, NULL, 0);
  for (size_t i = 0; i <= n; i++) {
    cuts[0] = i;
    check_split(s, n, expect, bad, cuts, 1);
    for (size_t j = i; j <= n && n <= 24; j++) {
      cuts[1] = j;
      check_split(s, n, expect, bad, cuts, 2);
    }
  }
  if (n > 0 && n < 64) {
    for (size_t i = 0; i < n; i++) cuts[i] = i + 1;
    check_split(s, n, expect, bad, cuts, n - 1);
  }
  /* hd_utf8_valid agrees with the incremental verdict. */
  CHECK_INT(hd_utf8_valid(s, n), expect == REF_VALID);
}

/* ---- table ---------------------------------------------------------------- */

typedef struct {
  const char *name;
  const char *bytes; /* hex, space separated */
  int expect;        /* REF_VALID, REF_TRUNCATED, REF_INVALID */
  int bad;           /* index of the first bad byte (REF_INVALID) */
} utf8_case_t;

static const utf8_case_t cases[] = {
    /* valid: boundaries of each length class */
    {"empty", "", REF_VALID, 0},
    {"U+0000", "00", REF_VALID, 0},
    {"U+007F", "7F", REF_VALID, 0},
    {"U+0080", "C2 80", REF_VALID, 0},
    {"U+07FF", "DF BF", REF_VALID, 0},
    {"U+0800", "E0 A0 80", REF_VALID, 0},
    {"U+0FFF", "E0 BF BF", REF_VALID, 0},
    {"U+1000", "E1 80 80", REF_VALID, 0},
    {"U+D7FF", "ED 9F BF", REF_VALID, 0},
    {"U+E000", "EE 80 80", REF_VALID, 0},
    {"U+FFFD", "EF BF BD", REF_VALID, 0},
    {"U+FFFF", "EF BF BF", REF_VALID, 0},
    {"U+10000", "F0 90 80 80", REF_VALID, 0},
    {"U+3FFFF", "F0 BF BF BF", REF_VALID, 0},
    {"U+40000", "F1 80 80 80", REF_VALID, 0},
    {"U+FFFFF", "F3 BF BF BF", REF_VALID, 0},
    {"U+100000", "F4 80 80 80", REF_VALID, 0},
    {"U+10FFFF", "F4 8F BF BF", REF_VALID, 0},
    /* noncharacters are valid UTF-8 */
    {"U+FFFE", "EF BF BE", REF_VALID, 0},
    {"U+FDD0", "EF B7 90", REF_VALID, 0},
    {"U+FDEF", "EF B7 AF", REF_VALID, 0},
    {"U+1FFFE", "F0 9F BF BE", REF_VALID, 0},
    {"mixed", "48 C3 A9 E2 82 AC F0 9F 98 80 21", REF_VALID, 0},
    {"ascii 9", "61 62 63 64 65 66 67 68 69", REF_VALID, 0},
    {"ascii 16 then 2-byte", "30 31 32 33 34 35 36 37 38 39 41 42 43 44 45 46 C3 A9",
     REF_VALID, 0},
    /* overlongs */
    {"C0 80 (overlong NUL)", "C0 80", REF_INVALID, 0},
    {"C1 BF (overlong 7F)", "C1 BF", REF_INVALID, 0},
    {"E0 80 80", "E0 80 80", REF_INVALID, 1},
    {"E0 9F BF", "E0 9F BF", REF_INVALID, 1},
    {"F0 80 80 80", "F0 80 80 80", REF_INVALID, 1},
    {"F0 8F BF BF", "F0 8F BF BF", REF_INVALID, 1},
    {"overlong after ascii", "41 42 C0 AF", REF_INVALID, 2},
    /* surrogates */
    {"U+D800", "ED A0 80", REF_INVALID, 1},
    {"U+DBFF", "ED AF BF", REF_INVALID, 1},
    {"U+DC00", "ED B0 80", REF_INVALID, 1},
    {"U+DFFF", "ED BF BF", REF_INVALID, 1},
    {"surrogate pair", "ED A0 BD ED B2 A9", REF_INVALID, 1},
    /* above U+10FFFF */
    {"U+110000", "F4 90 80 80", REF_INVALID, 1},
    {"F4 BF BF BF", "F4 BF BF BF", REF_INVALID, 1},
    {"F5", "F5 80 80 80", REF_INVALID, 0},
    {"F7", "F7 BF BF BF", REF_INVALID, 0},
    {"F8", "F8 88 80 80 80", REF_INVALID, 0},
    {"FB", "FB BF BF BF BF", REF_INVALID, 0},
    {"FC", "FC 84 80 80 80 80", REF_INVALID, 0},
    {"FE", "FE", REF_INVALID, 0},
    {"FF", "FF", REF_INVALID, 0},
    {"FF after text", "68 69 FF", REF_INVALID, 2},
    /* truncated: a valid prefix that ends inside a sequence */
    {"C2", "C2", REF_TRUNCATED, 0},
    {"DF", "DF", REF_TRUNCATED, 0},
    {"E0", "E0", REF_TRUNCATED, 0},
    {"E0 A0", "E0 A0", REF_TRUNCATED, 0},
    {"ED 9F", "ED 9F", REF_TRUNCATED, 0},
    {"EF BF", "EF BF", REF_TRUNCATED, 0},
    {"F0", "F0", REF_TRUNCATED, 0},
    {"F0 90", "F0 90", REF_TRUNCATED, 0},
    {"F0 90 80", "F0 90 80", REF_TRUNCATED, 0},
    {"F4 8F BF", "F4 8F BF", REF_TRUNCATED, 0},
    {"text then F3 80", "61 62 63 64 65 66 67 68 F3 80", REF_TRUNCATED, 0},
    /* truncated sequence followed by something that is not a continuation */
    {"C2 41", "C2 41", REF_INVALID, 1},
    {"E1 80 41", "E1 80 41", REF_INVALID, 2},
    {"F1 80 80 41", "F1 80 80 41", REF_INVALID, 3},
    {"E1 C2 80", "E1 C2 80", REF_INVALID, 1},
    {"F0 90 80 F0", "F0 90 80 F0 90 80 80", REF_INVALID, 3},
    /* lone continuation bytes */
    {"80", "80", REF_INVALID, 0},
    {"BF", "BF", REF_INVALID, 0},
    {"ascii 80", "61 80", REF_INVALID, 1},
    {"2-byte then 80", "C3 A9 80", REF_INVALID, 2},
    {"4-byte then BF", "F0 9F 98 80 BF", REF_INVALID, 4},
    {"ascii 8 then 80", "61 62 63 64 65 66 67 68 80", REF_INVALID, 8},
    {"ascii 15 then 9F", "61 62 63 64 65 66 67 68 61 62 63 64 65 66 67 9F", REF_INVALID,
     15},
};

static size_t parse_hex(const char *h, uint8_t *out) {
  size_t n = 0;
  while (*h) {
    unsigned v;
    if (*h == ' ') {
      h++;
      continue;
    }
    sscanf(h, "%2x", &v);
    out[n++] = (uint8_t)v;
    h += 2;
  }
  return n;
}

static void test_table(void) {
  for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
    uint8_t s[64];
    size_t n = parse_hex(cases[c].bytes, s), rbad = 0;
    int ref = ref_check(s, n, &rbad);

    /* The table and the reference agree (guards the reference itself). */
    CHECK_INT(ref, cases[c].expect);
    if (ref == REF_INVALID) CHECK_INT(rbad, cases[c].bad);
    if (ref != cases[c].expect) fprintf(stderr, "  case %s\n", cases[c].name);
    check_all_splits(s, n, cases[c].expect, (size_t)cases[c].bad);
  }
}

/* Every single code point 0..0x10FFFF plus surrogates, encoded by the test. */
static size_t encode_cp(uint32_t cp, uint8_t *o) {
  if (cp < 0x80) {
    o[0] = (uint8_t)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (uint8_t)(0xC0 | cp >> 6);
    o[1] = (uint8_t)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (uint8_t)(0xE0 | cp >> 12);
    o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (uint8_t)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (uint8_t)(0xF0 | cp >> 18);
  o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (uint8_t)(0x80 | (cp & 0x3F));
  return 4;
}

static void test_all_code_points(void) {
  int wrong = 0;
  uint32_t first_wrong = 0;

  for (uint32_t cp = 0; cp <= 0x13FFFF; cp++) {
    uint8_t s[4];
    size_t n = encode_cp(cp, s);
    bool want = cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF);
    if (hd_utf8_valid(s, n) != want) {
      if (!wrong) first_wrong = cp;
      wrong++;
    }
  }
  CHECK_INT(wrong, 0);
  if (wrong) fprintf(stderr, "  first wrong code point U+%04" PRIX32 "\n", first_wrong);

  /* Every 2-byte and 3-byte combination against the reference. */
  wrong = 0;
  for (unsigned a = 0; a < 256; a++)
    for (unsigned b = 0; b < 256; b++) {
      uint8_t s[2] = {(uint8_t)a, (uint8_t)b};
      size_t bad = 0;
      int ref = ref_check(s, 2, &bad);
      hd_utf8_state_t st = HD_UTF8_ACCEPT;
      int rc = hd_utf8_feed(&st, s, 2);
      int got = rc ? REF_INVALID : hd_utf8_complete(st) ? REF_VALID : REF_TRUNCATED;
      if (got != ref) {
        if (wrong++ < 5) fprintf(stderr, "  %02X %02X: ref %d got %d\n", a, b, ref, got);
      }
    }
  CHECK_INT(wrong, 0);
}

/* The fast path: ASCII runs of every length at every alignment, with a bad, a
 * multi-byte or a truncated byte at every position of the run. */
static void test_ascii_fast_path(void) {
  static uint8_t storage[128 + 16];
  int wrong = 0;

  for (size_t align = 0; align < 8; align++)
    for (size_t len = 0; len <= 70; len++) {
      uint8_t *s = storage + align;
      for (size_t i = 0; i < len; i++) s[i] = (uint8_t)(0x20 + (i * 7) % 95);
      /* all ASCII, also 0x00 and 0x7F */
      if (len > 3) s[1] = 0x00, s[2] = 0x7F;
      if (!hd_utf8_valid(s, len)) wrong++;
      for (size_t pos = 0; pos < len; pos++) {
        uint8_t saved = s[pos];
        hd_utf8_state_t st = HD_UTF8_ACCEPT;
        /* a lone continuation byte at pos: rejected */
        s[pos] = 0x80;
        if (hd_utf8_valid(s, len)) wrong++;
        /* split at pos: the error is in the second piece */
        if (hd_utf8_feed(&st, s, pos) != 0) wrong++;
        if (hd_utf8_feed(&st, s + pos, len - pos) != HD_EUTF8) wrong++;
        /* a truncated lead at the end */
        s[pos] = 0xE2;
        st = HD_UTF8_ACCEPT;
        if (pos == len - 1) {
          if (hd_utf8_feed(&st, s, len) != 0 || hd_utf8_complete(st)) wrong++;
        } else if (hd_utf8_valid(s, len)) {
          wrong++; /* E2 followed by ASCII */
        }
        /* 0xFF */
        s[pos] = 0xFF;
        if (hd_utf8_valid(s, len)) wrong++;
        s[pos] = saved;
      }
      /* a 2-byte sequence spanning a word boundary */
      if (len >= 2)
        for (size_t pos = 0; pos + 1 < len; pos++) {
          uint8_t a = s[pos], b = s[pos + 1];
          s[pos] = 0xC3;
          s[pos + 1] = 0xA9;
          if (!hd_utf8_valid(s, len)) wrong++;
          s[pos + 1] = 0x41;
          if (hd_utf8_valid(s, len)) wrong++;
          s[pos] = a;
          s[pos + 1] = b;
        }
    }
  CHECK_INT(wrong, 0);
}

/* ---- differential --------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static const uint8_t interesting[] = {
    0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0,
    0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xF7, 0xF8, 0xFE, 0xFF};

static size_t gen(uint8_t *s, size_t cap) {
  size_t n = 0, len = rnd() % cap;
  unsigned mode = (unsigned)(rnd() % 4);

  while (n < len) {
    unsigned what = mode == 0 ? 0 : (unsigned)(rnd() % 6);
    switch (what) {
    case 0:
      s[n++] = (uint8_t)rnd();
      break; /* random byte */
    case 1:
      s[n++] = interesting[rnd() % sizeof(interesting)];
      break;
    case 2: { /* ASCII run */
      size_t run = rnd() % 20;
      while (run-- && n < len) s[n++] = (uint8_t)(rnd() % 0x80);
      break;
    }
    default: { /* a code point, sometimes invalid or cut */
      uint8_t e[4];
      uint32_t cp;
      size_t k;
      switch (rnd() % 4) {
      case 0:
        cp = (uint32_t)(rnd() % 0x800);
        break;
      case 1:
        cp = (uint32_t)(0xD000 + rnd() % 0x3000);
        break;
      case 2:
        cp = (uint32_t)(0x10000 + rnd() % 0x100000);
        break;
      default:
        cp = (uint32_t)(rnd() % 0x120000);
        break;
      }
      k = encode_cp(cp, e);
      if (rnd() % 8 == 0) k = rnd() % k;
      for (size_t i = 0; i < k && n < len; i++) s[n++] = e[i];
      break;
    }
    }
  }
  return n;
}

static void test_differential(void) {
  enum { N = 300000 };
  uint8_t s[48];
  long mismatches = 0, counts[3] = {0, 0, 0};

  for (int it = 0; it < N; it++) {
    size_t n = gen(s, sizeof(s)), bad = 0, piece = 0, cut;
    int ref = ref_check(s, n, &bad), got;
    bool complete = false;
    hd_utf8_state_t st = HD_UTF8_ACCEPT;
    int rc;

    counts[ref]++;
    /* whole */
    rc = hd_utf8_feed(&st, s, n);
    got = rc ? REF_INVALID : hd_utf8_complete(st) ? REF_VALID : REF_TRUNCATED;
    /* split at a random point: the same verdict, rejected in the right piece */
    cut = n ? rnd() % (n + 1) : 0;
    rc = feed_split(s, n, &cut, 1, &piece, &complete);
    if (got != ref || (ref == REF_INVALID && (rc != HD_EUTF8 || piece != (bad >= cut))) ||
        (ref != REF_INVALID && (rc != 0 || complete != (ref == REF_VALID))) ||
        hd_utf8_valid(s, n) != (ref == REF_VALID)) {
      if (mismatches++ < 10) {
        char hx[128];
        hexs(hx, s, n);
        fprintf(stderr,
                "  differential [%s]: ref %d bad %zu, got %d (cut %zu piece %zu)\n", hx,
                ref, bad, got, cut, piece);
      }
    }
    /* byte by byte: rejected exactly at the first bad byte */
    if (ref == REF_INVALID) {
      st = HD_UTF8_ACCEPT;
      for (size_t i = 0; i < n; i++) {
        rc = hd_utf8_feed(&st, s + i, 1);
        if (rc != 0) {
          if (i != bad && mismatches++ < 10)
            fprintf(stderr, "  byte by byte: rejected at %zu, first bad %zu\n", i, bad);
          break;
        }
      }
      if (rc == 0 && mismatches++ < 10)
        fprintf(stderr, "  byte by byte: never rejected\n");
    }
  }
  CHECK_INT(mismatches, 0);
  /* The generator exercised all three outcomes substantially. */
  CHECK(counts[REF_VALID] > N / 20);
  CHECK(counts[REF_TRUNCATED] > N / 100);
  CHECK(counts[REF_INVALID] > N / 20);
  fprintf(stderr, "differential: %ld valid, %ld truncated, %ld invalid\n", counts[0],
          counts[1], counts[2]);
}

/* Long valid text followed by one bad byte at each position of the last 16. */
static void test_long_inputs(void) {
  enum { L = 4096 };
  static uint8_t s[L];
  size_t n = 0;

  while (n + 4 <= L) {
    static const uint8_t pat[] = {'a', 'b', 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 'c',  'd', 'e',
                                  'f', 'g', 'h',  'i',  'j',  0xF0, 0x9F, 0x98, 0x80};
    for (size_t i = 0; i < sizeof(pat) && n < L; i++) s[n++] = pat[i];
  }
  while (n < L) s[n++] = 'z';
  /* fix a possibly cut tail: pad is ASCII, but the pattern may be cut before it */
  {
    size_t bad = 0;
    int ref = ref_check(s, L, &bad);
    if (ref != REF_VALID) {
      for (size_t i = L - 8; i < L; i++) s[i] = 'z';
      while (ref_check(s, L, &bad) != REF_VALID) s[bad] = 'z';
    }
  }
  CHECK(hd_utf8_valid(s, L));
  for (size_t pos = L - 16; pos < L; pos++) {
    uint8_t saved = s[pos];
    size_t bad = 0;
    s[pos] = 0xFF;
    CHECK_INT(ref_check(s, L, &bad), REF_INVALID);
    CHECK(!hd_utf8_valid(s, L));
    s[pos] = saved;
  }
}

int main(void) {
  test_table();
  test_all_code_points();
  test_ascii_fast_path();
  test_differential();
  test_long_inputs();
  TEST_MAIN_END();
}
