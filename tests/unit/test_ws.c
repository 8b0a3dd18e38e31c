/* Tests for src/proto/ws.c: the RFC 6455 frame reader and the server-side helpers.
 *
 * Client frames are built by a helper with a real mask. A runner feeds a stream in
 * given pieces (each piece a separate heap copy, so ASan catches a reader that
 * keeps a pointer into a previous read), records every event with a copy of its
 * payload, and records the error and the piece it came from. Every case is run
 * whole, at every split point and byte by byte, and must give the same record. */
#include <stdbool.h>
#include <stdint.h>

#include "herald/herald.h"
#include "proto/ws.h"
#include "support/unit.h"

/* ---- building client frames --------------------------------------------- */

typedef struct {
  uint8_t *p;
  size_t len, cap;
} buf_t;

static void put(buf_t *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n) cap *= 2;
    b->p = realloc(b->p, cap);
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, p, n);
  b->len += n;
}

static void put8(buf_t *b, unsigned v) {
  uint8_t c = (uint8_t)v;
  put(b, &c, 1);
}

static unsigned mask_seed = 1;

enum { LEN_AUTO = 0, LEN_16 = 126, LEN_64 = 127 };

/* Appends a frame. b0 is the first header byte (FIN, RSV, opcode); the payload is
 * masked unless masked is false; declared is the length written in the header
 * (normally plen) in the form len_form. Returns the header size. */
static size_t frame_ex(buf_t *b, unsigned b0, bool masked, int len_form,
                       uint64_t declared, const void *payload, size_t plen) {
  size_t start = b->len;
  uint8_t m[4];
  unsigned mbit = masked ? 0x80 : 0;

  put8(b, b0);
  if (len_form == LEN_AUTO)
    len_form = declared < 126 ? 0 : declared <= 0xFFFF ? LEN_16 : LEN_64;
  if (len_form == 0) {
    put8(b, mbit | (unsigned)declared);
  } else if (len_form == LEN_16) {
    put8(b, mbit | 126);
    put8(b, (unsigned)(declared >> 8));
    put8(b, (unsigned)declared);
  } else {
    put8(b, mbit | 127);
    for (int i = 7; i >= 0; i--) put8(b, (unsigned)(declared >> (8 * i)));
  }
  /* masks that differ from frame to frame and are never all-zero */
  mask_seed = mask_seed * 1103515245u + 12345u;
  m[0] = (uint8_t)(mask_seed >> 8) | 1;
  m[1] = (uint8_t)(mask_seed >> 16);
  m[2] = (uint8_t)(mask_seed >> 24) ^ 0x5A;
  m[3] = (uint8_t)(mask_seed >> 3) | 0x80;
  if (masked) put(b, m, 4);
  {
    size_t hsize = b->len - start, at = b->len;
    put(b, payload, plen);
    if (masked)
      for (size_t i = 0; i < plen; i++) b->p[at + i] ^= m[i & 3];
    return hsize;
  }
}

static size_t frame(buf_t *b, unsigned op, bool fin, const void *payload, size_t plen) {
  return frame_ex(b, (fin ? 0x80 : 0) | op, true, LEN_AUTO, plen, payload, plen);
}

static size_t frame_str(buf_t *b, unsigned op, bool fin, const char *s) {
  return frame(b, op, fin, s, strlen(s));
}

static void close_frame(buf_t *b, unsigned code, const void *reason, size_t rlen) {
  uint8_t p[200];
  p[0] = (uint8_t)(code >> 8);
  p[1] = (uint8_t)code;
  memcpy(p + 2, reason, rlen);
  frame(b, HD_WS_OP_CLOSE, true, p, rlen + 2);
}

/* ---- running the reader --------------------------------------------------- */

typedef struct {
  int type;
  int opcode;
  int close_code;
  size_t len;
  uint8_t *data;
} rec_t;

enum { MAX_EV = 64 };

typedef struct {
  rec_t ev[MAX_EV];
  int nev;
  int err;          /* 0 or the error returned */
  int close_code;   /* hd_ws_reader_close_code() after the run */
  size_t err_piece; /* piece that returned the error */
  int anomalies;    /* protocol of the API broken: counted, reported */
  size_t ev_piece[MAX_EV];
} log_t;

static void log_free(log_t *l) {
  for (int i = 0; i < l->nev; i++) free(l->ev[i].data);
  l->nev = 0;
}

/* Feeds stream s (not modified) in pieces ending at cuts[]. */
static void run(const uint8_t *s, size_t n, const size_t *cuts, size_t ncuts,
                size_t max_message, log_t *l) {
  hd_ws_reader_t r;
  size_t start = 0;
  bool done = false; /* after an error or a close event */

  memset(l, 0, sizeof(*l));
  hd_ws_reader_init(&r, max_message);
  for (size_t k = 0; k <= ncuts; k++) {
    size_t end = k < ncuts ? cuts[k] : n, plen = end - start, off = 0;
    uint8_t *piece = malloc(plen ? plen : 1);

    memcpy(piece, s + start, plen);
    while (off < plen || (plen == 0 && off == 0)) {
      hd_ws_event_t ev;
      int rc = hd_ws_reader_feed(&r, piece + off, plen - off, &ev);
      if (rc < 0) {
        if (done || l->err) l->anomalies++; /* errors only once */
        l->err = rc;
        l->err_piece = k;
        done = true;
        off = plen; /* the rest of the piece is dropped by the caller */
        break;
      }
      if ((size_t)rc > plen - off) {
        l->anomalies++;
        break;
      }
      off += (size_t)rc;
      if (ev.type == HD_WS_EV_NONE) {
        if (off != plen) l->anomalies++; /* NONE means all consumed */
        break;
      }
      if (done || rc == 0) l->anomalies++; /* nothing after close/error; progress */
      if (l->nev < MAX_EV) {
        rec_t *e = &l->ev[l->nev];
        e->type = ev.type;
        e->opcode = ev.type == HD_WS_EV_MESSAGE ? ev.opcode : 0;
        e->close_code = ev.type == HD_WS_EV_CLOSE ? ev.close_code : 0;
        e->len = ev.len;
        e->data = malloc(ev.len ? ev.len : 1);
        if (ev.len) memcpy(e->data, ev.data, ev.len);
        l->ev_piece[l->nev] = k;
        l->nev++;
      }
      if (ev.type == HD_WS_EV_CLOSE) done = true;
      if (plen == 0) break;
    }
    free(piece);
    start = end;
  }
  /* After a close or an error, more input is consumed and ignored. */
  if (done) {
    uint8_t more[6] = {0x81, 0x80, 1, 2, 3, 4};
    hd_ws_event_t ev;
    int rc = hd_ws_reader_feed(&r, more, sizeof(more), &ev);
    if (rc != (int)sizeof(more) || ev.type != HD_WS_EV_NONE) l->anomalies++;
  }
  l->close_code = hd_ws_reader_close_code(&r);
  hd_ws_reader_dispose(&r);
}

static const char *ev_name(int t) {
  switch (t) {
  case HD_WS_EV_NONE:
    return "NONE";
  case HD_WS_EV_MESSAGE:
    return "MESSAGE";
  case HD_WS_EV_PING:
    return "PING";
  case HD_WS_EV_PONG:
    return "PONG";
  case HD_WS_EV_CLOSE:
    return "CLOSE";
  default:
    return "?";
  }
}

/* Compares two logs (ignoring where the error happened); prints the first
 * difference with both values. */
static bool log_eq(const log_t *a, const log_t *b, const char *what) {
  bool ok = true;

  hd_test_checks++;
  if (a->nev != b->nev) {
    fprintf(stderr, "%s: %d events != %d events\n", what, a->nev, b->nev);
    ok = false;
  }
  for (int i = 0; ok && i < a->nev; i++) {
    const rec_t *x = &a->ev[i], *y = &b->ev[i];
    if (x->type != y->type || x->opcode != y->opcode || x->close_code != y->close_code ||
        x->len != y->len || (x->len && memcmp(x->data, y->data, x->len) != 0)) {
      fprintf(stderr,
              "%s: event %d: %s op %d code %d len %zu != %s op %d code %d len %zu%s\n",
              what, i, ev_name(x->type), x->opcode, x->close_code, x->len,
              ev_name(y->type), y->opcode, y->close_code, y->len,
              x->len == y->len ? " (payload differs)" : "");
      ok = false;
    }
  }
  if (ok && (a->err != b->err || a->close_code != b->close_code)) {
    fprintf(stderr, "%s: err %d close %d != err %d close %d\n", what, a->err,
            a->close_code, b->err, b->close_code);
    ok = false;
  }
  if (ok && (a->anomalies || b->anomalies)) {
    fprintf(stderr, "%s: API anomalies %d / %d\n", what, a->anomalies, b->anomalies);
    ok = false;
  }
  if (!ok) hd_test_failures++;
  return ok;
}

/* Runs s whole, then at every split point, byte by byte, and (for short
 * streams) at every pair of split points; every run must equal the whole run.
 * The whole run is returned in *whole. Returns false after the first mismatch. */
static bool run_all_splits(const uint8_t *s, size_t n, size_t max_message, log_t *whole,
                           const char *name) {
  log_t l;
  size_t *cuts = malloc((n + 1) * sizeof(size_t));
  char what[160];
  bool ok = true;

  run(s, n, NULL, 0, max_message, whole);
  for (size_t i = 0; i <= n && ok; i++) {
    cuts[0] = i;
    run(s, n, cuts, 1, max_message, &l);
    snprintf(what, sizeof(what), "%s: split at %zu", name, i);
    ok = log_eq(&l, whole, what);
    log_free(&l);
  }
  if (ok && n > 0) {
    for (size_t i = 0; i + 1 < n; i++) cuts[i] = i + 1;
    run(s, n, cuts, n - 1, max_message, &l);
    snprintf(what, sizeof(what), "%s: byte by byte", name);
    ok = log_eq(&l, whole, what);
    log_free(&l);
  }
  for (size_t i = 1; ok && n <= 64 && i < n; i++)
    for (size_t j = i + 1; ok && j < n; j++) {
      cuts[0] = i;
      cuts[1] = j;
      run(s, n, cuts, 2, max_message, &l);
      snprintf(what, sizeof(what), "%s: split at %zu and %zu", name, i, j);
      ok = log_eq(&l, whole, what);
      log_free(&l);
    }
  free(cuts);
  return ok;
}

static void check_event(const log_t *l, int i, int type, int opcode, int close_code,
                        const void *data, size_t len) {
  CHECK(i < l->nev);
  if (i >= l->nev) return;
  CHECK_STR(ev_name(l->ev[i].type), ev_name(type));
  CHECK_INT(l->ev[i].opcode, opcode);
  CHECK_INT(l->ev[i].close_code, close_code);
  CHECK_MEM(l->ev[i].data, l->ev[i].len, data, len);
}

/* ---- payload lengths ------------------------------------------------------ */

static void test_lengths(void) {
  static const size_t lens[] = {0, 1,   2,   3,   4,   5,     7,     8,
                                9, 125, 126, 127, 128, 65535, 65536, 70000};

  for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++)
    for (unsigned op = HD_WS_OP_TEXT; op <= HD_WS_OP_BINARY; op++) {
      size_t len = lens[li], hsize;
      uint8_t *payload = malloc(len + 1);
      buf_t b = {0};
      log_t whole, l;
      size_t cuts[8];
      char what[96];

      for (size_t i = 0; i < len; i++)
        payload[i] =
            op == HD_WS_OP_TEXT ? (uint8_t)('a' + i % 26) : (uint8_t)(i * 31 + 7);
      /* text: a 2-byte character now and then, never cut at the end */
      if (op == HD_WS_OP_TEXT)
        for (size_t i = 3; i + 2 < len; i += 11) payload[i] = 0xC3, payload[i + 1] = 0xA9;
      hsize = frame(&b, op, true, payload, len);
      CHECK_INT(hsize, len < 126 ? 6 : len <= 65535 ? 8 : 14);

      snprintf(what, sizeof(what), "len %zu op %u", len, op);
      run(b.p, b.len, NULL, 0, 1 << 20, &whole);
      CHECK_INT(whole.err, 0);
      CHECK_INT(whole.nev, 1);
      check_event(&whole, 0, HD_WS_EV_MESSAGE, (int)op, 0, payload, len);

      /* header split at every byte, payload split in a few places */
      for (size_t i = 0; i <= hsize + 2 && i <= b.len; i++) {
        cuts[0] = i;
        run(b.p, b.len, cuts, 1, 1 << 20, &l);
        log_eq(&l, &whole, what);
        log_free(&l);
      }
      if (len > 8) {
        cuts[0] = hsize + len / 3;
        cuts[1] = hsize + len / 2;
        cuts[2] = b.len - 1;
        run(b.p, b.len, cuts, 3, 1 << 20, &l);
        log_eq(&l, &whole, what);
        log_free(&l);
      }
      /* byte by byte */
      {
        size_t *all = malloc(b.len * sizeof(size_t));
        for (size_t i = 0; i + 1 < b.len; i++) all[i] = i + 1;
        run(b.p, b.len, all, b.len - 1, 1 << 20, &l);
        log_eq(&l, &whole, what);
        log_free(&l);
        free(all);
      }
      /* exactly at the limit: accepted; one byte under the size: 1009 */
      if (len > 1) {
        run(b.p, b.len, NULL, 0, len, &l);
        CHECK_INT(l.err, 0);
        CHECK_INT(l.nev, 1);
        log_free(&l);
        run(b.p, hsize /* only the header */, NULL, 0, len - 1, &l);
        CHECK_INT(l.err, HD_ELIMIT);
        CHECK_INT(l.close_code, HD_WS_CLOSE_TOO_BIG);
        log_free(&l);
      }
      log_free(&whole);
      free(b.p);
      free(payload);
    }
}

/* A non-minimal length encoding (RFC 6455 5.2 says "minimal", but the length is
 * still unambiguous). 16-bit and 64-bit forms for a short payload both decode. */
static void test_length_forms(void) {
  static const uint8_t p[] = "abcde";
  buf_t b = {0};
  log_t l;

  frame_ex(&b, 0x82, true, LEN_16, 5, p, 5);
  frame_ex(&b, 0x82, true, LEN_64, 5, p, 5);
  run_all_splits(b.p, b.len, 1024, &l, "length forms");
  CHECK_INT(l.err, 0);
  CHECK_INT(l.nev, 2);
  check_event(&l, 0, HD_WS_EV_MESSAGE, HD_WS_OP_BINARY, 0, p, 5);
  check_event(&l, 1, HD_WS_EV_MESSAGE, HD_WS_OP_BINARY, 0, p, 5);
  log_free(&l);
  free(b.p);
}

/* ---- fragmentation and control frames ------------------------------------- */

static void test_fragments(void) {
  log_t l;

  { /* two fragments */
    buf_t b = {0};
    frame_str(&b, HD_WS_OP_TEXT, false, "Hello, ");
    frame_str(&b, HD_WS_OP_CONT, true, "world");
    run_all_splits(b.p, b.len, 1024, &l, "two fragments");
    CHECK_INT(l.err, 0);
    CHECK_INT(l.nev, 1);
    check_event(&l, 0, HD_WS_EV_MESSAGE, HD_WS_OP_TEXT, 0, "Hello, world", 12);
    log_free(&l);
    free(b.p);
  }
  { /* many fragments, some empty, a multi-byte character cut across fragments */
    buf_t b = {0};
    static const uint8_t euro[] = {0xE2, 0x82, 0xAC};
    frame_str(&b, HD_WS_OP_TEXT, false, "");
    frame_str(&b, HD_WS_OP_CONT, false, "a");
    frame(&b, HD_WS_OP_CONT, false, euro, 1);
    frame_str(&b, HD_WS_OP_CONT, false, "");
    frame(&b, HD_WS_OP_CONT, false, euro + 1, 1);
    frame(&b, HD_WS_OP_CONT, false, euro + 2, 1);
    frame_str(&b, HD_WS_OP_CONT, false, "bc");
    frame_str(&b, HD_WS_OP_CONT, true, "");
    run_all_splits(b.p, b.len, 1024, &l, "many fragments");
    CHECK_INT(l.err, 0);
    CHECK_INT(l.nev, 1);
    check_event(&l, 0, HD_WS_EV_MESSAGE, HD_WS_OP_TEXT, 0,
                "a\xE2\x82\xAC"
                "bc",
                6);
    log_free(&l);
    free(b.p);
  }
  { /* all fragments empty, binary */
    buf_t b = {0};
    frame_str(&b, HD_WS_OP_BINARY, false, "");
    frame_str(&b, HD_WS_OP_CONT, false, "");
    frame_str(&b, HD_WS_OP_CONT, true, "");
    frame_str(&b, HD_WS_OP_BINARY, true, "x");
    run_all_splits(b.p, b.len, 1024, &l, "empty fragments");
    CHECK_INT(l.err, 0);
    CHECK_INT(l.nev, 2);
    check_event(&l, 0, HD_WS_EV_MESSAGE, HD_WS_OP_BINARY, 0, "", 0);
    check_event(&l, 1, HD_WS_EV_MESSAGE, HD_WS_OP_BINARY, 0, "x", 1);
    log_free(&l);
    free(b.p);
  }
  { /* control frames between fragments: in order, the message still assembles */
    buf_t b = {0};
    frame_str(&b, HD_WS_OP_BINARY, false, "one,");
    frame_str(&b, HD_WS_OP_PING, true, "p1");
    frame_str(&b, HD_WS_OP_CONT, false, "two,");
    frame_str(&b, HD_WS_OP_PONG, true, "");
    frame_str(&b, HD_WS_OP_PING, true, "p2");
    frame_str(&b, HD_WS_OP_CONT, true, "three");
    frame_str(&b, HD_WS_OP_PING, true, "p3");
    run_all_splits(b.p, b.len, 1024, &l, "control between fragments");
    CHECK_INT(l.err, 0);
    CHECK_INT(l.nev, 5);
    check_event(&l, 0, HD_WS_EV_PING, 0, 0, "p1", 2);
    check_event(&l, 1, HD_WS_EV_PONG, 0, 0, "", 0);
    check_event(&l, 2, HD_WS_EV_PING, 0, 0, "p2", 2);
    check_event(&l, 3, HD_WS_EV_MESSAGE, HD_WS_OP_BINARY, 0, "one,two,three", 13);
    check_event(&l, 4, HD_WS_EV_PING, 0, 0, "p3", 2);
    log_free(&l);
    free(b.p);
  }
  { /* a close frame in the middle of a fragmented message ends the stream */
    buf_t b = {0};
    frame_str(&b, HD_WS_OP_TEXT, false, "par");
    close_frame(&b, 1001, "bye", 3);
    frame_str(&b, HD_WS_OP_CONT, true, "tial");
    run_all_splits(b.p, b.len, 1024, &l, "close between fragments");
    CHECK_INT(l.err, 0);
    CHECK_INT(l.nev, 1);
    check_event(&l, 0, HD_WS_EV_CLOSE, 0, 1001, "bye", 3);
    log_free(&l);
    free(b.p);
  }
  { /* cumulative fragments over the limit: 1009 at the header that goes over */
    buf_t b = {0};
    size_t h1, h2, over;
    frame_str(&b, HD_WS_OP_TEXT, false, "123456");
    h1 = b.len;
    frame_str(&b, HD_WS_OP_PING, true, "");
    frame_str(&b, HD_WS_OP_CONT, false, "");
    frame_str(&b, HD_WS_OP_CONT, false, "7890");
    h2 = b.len;
    over = frame_str(&b, HD_WS_OP_CONT, true, "x"); /* 11 > 10 */
    run_all_splits(b.p, b.len, 10, &l, "cumulative limit");
    CHECK_INT(l.err, HD_ELIMIT);
    CHECK_INT(l.close_code, HD_WS_CLOSE_TOO_BIG);
    CHECK_INT(l.nev, 1);
    check_event(&l, 0, HD_WS_EV_PING, 0, 0, "", 0);
    log_free(&l);
    /* the last header alone is enough */
    run(b.p, h2 + over, NULL, 0, 10, &l);
    CHECK_INT(l.err, HD_ELIMIT);
    log_free(&l);
    /* exactly at the limit the same message is fine */
    b.len = h2;
    frame_str(&b, HD_WS_OP_CONT, true, "");
    run_all_splits(b.p, b.len, 10, &l, "cumulative at limit");
    CHECK_INT(l.err, 0);
    CHECK_INT(l.nev, 2);
    check_event(&l, 1, HD_WS_EV_MESSAGE, HD_WS_OP_TEXT, 0, "1234567890", 10);
    log_free(&l);
    (void)h1;
    free(b.p);
  }
  { /* large fragmented message (buffer growth), 3 x 30000 */
    buf_t b = {0};
    uint8_t *p = malloc(90000);
    for (size_t i = 0; i < 90000; i++) p[i] = (uint8_t)(i ^ (i >> 8));
    frame(&b, HD_WS_OP_BINARY, false, p, 30000);
    frame_str(&b, HD_WS_OP_PING, true, "mid");
    frame(&b, HD_WS_OP_CONT, false, p + 30000, 30000);
    frame(&b, HD_WS_OP_CONT, true, p + 60000, 30000);
    {
      log_t whole;
      size_t cuts[4] = {5, 29000, 61000, 89990};
      run(b.p, b.len, NULL, 0, 90000, &whole);
      CHECK_INT(whole.err, 0);
      CHECK_INT(whole.nev, 2);
      check_event(&whole, 0, HD_WS_EV_PING, 0, 0, "mid", 3);
      check_event(&whole, 1, HD_WS_EV_MESSAGE, HD_WS_OP_BINARY, 0, p, 90000);
      run(b.p, b.len, cuts, 4, 90000, &l);
      log_eq(&l, &whole, "large fragmented");
      log_free(&l);
      run(b.p, b.len, NULL, 0, 89999, &l);
      CHECK_INT(l.err, HD_ELIMIT);
      log_free(&l);
      log_free(&whole);
    }
    free(p);
    free(b.p);
  }
}

static void test_close_events(void) {
  log_t l;
  { /* no payload: 1005 */
    buf_t b = {0};
    frame_str(&b, HD_WS_OP_CLOSE, true, "");
    run_all_splits(b.p, b.len, 64, &l, "close empty");
    CHECK_INT(l.err, 0);
    check_event(&l, 0, HD_WS_EV_CLOSE, 0, HD_WS_CLOSE_NO_STATUS, "", 0);
    log_free(&l);
    free(b.p);
  }
  { /* code only */
    buf_t b = {0};
    close_frame(&b, 1000, "", 0);
    run_all_splits(b.p, b.len, 64, &l, "close code");
    check_event(&l, 0, HD_WS_EV_CLOSE, 0, 1000, "", 0);
    log_free(&l);
    free(b.p);
  }
  { /* code and a UTF-8 reason of the maximum size (123 bytes) */
    buf_t b = {0};
    char reason[124];
    for (int i = 0; i < 123; i++) reason[i] = (char)('A' + i % 26);
    reason[0] = (char)0xC3;
    reason[1] = (char)0xA9;
    close_frame(&b, 4999, reason, 123);
    run_all_splits(b.p, b.len, 64, &l, "close reason");
    CHECK_INT(l.err, 0);
    check_event(&l, 0, HD_WS_EV_CLOSE, 0, 4999, reason, 123);
    log_free(&l);
    free(b.p);
  }
  { /* everything after the close frame is ignored */
    buf_t b = {0};
    close_frame(&b, 3000, "x", 1);
    frame_str(&b, HD_WS_OP_TEXT, true, "ignored");
    b.p[b.len - 1] ^= 0xFF; /* even garbage */
    put8(&b, 0xFF);
    run_all_splits(b.p, b.len, 64, &l, "after close");
    CHECK_INT(l.err, 0);
    CHECK_INT(l.nev, 1);
    check_event(&l, 0, HD_WS_EV_CLOSE, 0, 3000, "x", 1);
    log_free(&l);
    free(b.p);
  }
  { /* the close code rule in the reader, for every code */
    int wrong = 0;
    for (unsigned code = 0; code <= 65535; code++) {
      buf_t b = {0};
      bool valid = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
                   (code >= 3000 && code <= 4999);
      close_frame(&b, code, "", 0);
      run(b.p, b.len, NULL, 0, 64, &l);
      if (valid ? (l.err != 0 || l.nev != 1 || l.ev[0].close_code != (int)code)
                : (l.err != HD_EPROTO || l.close_code != HD_WS_CLOSE_PROTOCOL ||
                   l.nev != 0)) {
        if (wrong++ < 5)
          fprintf(stderr, "close code %u: err %d nev %d\n", code, l.err, l.nev);
      }
      log_free(&l);
      free(b.p);
    }
    CHECK_INT(wrong, 0);
  }
}

/* ---- errors ---------------------------------------------------------------- */

typedef struct {
  const char *name;
  buf_t b;
  size_t max_message;
  int err;
  int close_code;
  int nev;   /* events before the error */
  size_t lo; /* the error is reported by the piece holding a byte in [lo, hi] */
  size_t hi;
} err_case_t;

static void check_err_case(err_case_t *c) {
  log_t whole, l;
  size_t cuts[2];
  char what[160];

  run(c->b.p, c->b.len, NULL, 0, c->max_message, &whole);
  hd_test_checks++;
  if (whole.err != c->err || whole.close_code != c->close_code || whole.nev != c->nev) {
    hd_test_failures++;
    fprintf(stderr,
            "%s: expected err %d close %d after %d events, got err %d close %d after %d "
            "events\n",
            c->name, c->err, c->close_code, c->nev, whole.err, whole.close_code,
            whole.nev);
  }
  for (size_t i = 0; i <= c->b.len; i++) {
    size_t piece_lo, piece_hi;
    cuts[0] = i;
    run(c->b.p, c->b.len, cuts, 1, c->max_message, &l);
    snprintf(what, sizeof(what), "%s: split at %zu", c->name, i);
    if (log_eq(&l, &whole, what) && c->err) {
      /* piece k covers [k ? i : 0, k ? len : i) */
      piece_lo = c->lo >= i ? 1 : 0;
      piece_hi = c->hi >= i ? 1 : 0;
      hd_test_checks++;
      if (l.err_piece < piece_lo || l.err_piece > piece_hi) {
        hd_test_failures++;
        fprintf(
            stderr,
            "%s: error reported by piece %zu, expected the piece holding byte %zu..%zu\n",
            what, l.err_piece, c->lo, c->hi);
      }
    }
    log_free(&l);
  }
  { /* byte by byte: the error is reported by a byte in [lo, hi] */
    size_t *all = malloc(c->b.len * sizeof(size_t));
    for (size_t i = 0; i + 1 < c->b.len; i++) all[i] = i + 1;
    run(c->b.p, c->b.len, all, c->b.len - 1, c->max_message, &l);
    snprintf(what, sizeof(what), "%s: byte by byte", c->name);
    if (log_eq(&l, &whole, what) && c->err) {
      hd_test_checks++;
      if (l.err_piece < c->lo || l.err_piece > c->hi) {
        hd_test_failures++;
        fprintf(stderr, "%s: error at byte %zu, expected %zu..%zu\n", what, l.err_piece,
                c->lo, c->hi);
      }
    }
    log_free(&l);
    free(all);
  }
  log_free(&whole);
}

static void test_errors(void) {
  enum { NC = 64 };
  static err_case_t c[NC];
  int n = 0;
  size_t at, h;

#define NEW(nm, mm, e, cc)                                                               \
  (memset(&c[n], 0, sizeof(c[n])), c[n].name = (nm), c[n].max_message = (mm),            \
   c[n].err = (e), c[n].close_code = (cc), &c[n++])
  err_case_t *x;

  /* header errors: reported once the header is complete, at the latest */
  x = NEW("unmasked", 64, HD_EPROTO, 1002);
  h = frame_ex(&x->b, 0x81, false, LEN_AUTO, 2, "hi", 2);
  x->hi = h - 1;

  for (unsigned rsv = 0x10; rsv <= 0x40; rsv <<= 1) {
    static const char *names[] = {"RSV3", "RSV2", "RSV1"};
    x = NEW(names[rsv == 0x10 ? 0 : rsv == 0x20 ? 1 : 2], 64, HD_EPROTO, 1002);
    h = frame_ex(&x->b, 0x80 | rsv | HD_WS_OP_TEXT, true, LEN_AUTO, 2, "hi", 2);
    x->hi = h - 1;
  }
  x = NEW("RSV on a control frame", 64, HD_EPROTO, 1002);
  h = frame_ex(&x->b, 0x80 | 0x40 | HD_WS_OP_PING, true, LEN_AUTO, 0, "", 0);
  x->hi = h - 1;
  x = NEW("RSV on a continuation", 64, HD_EPROTO, 1002);
  frame_str(&x->b, HD_WS_OP_TEXT, false, "a");
  at = x->b.len;
  h = frame_ex(&x->b, 0x80 | 0x20 | HD_WS_OP_CONT, true, LEN_AUTO, 1, "b", 1);
  x->lo = at;
  x->hi = at + h - 1;

  {
    static const unsigned ops[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    static const char *names[] = {"opcode 3", "opcode 4", "opcode 5", "opcode 6",
                                  "opcode 7", "opcode B", "opcode C", "opcode D",
                                  "opcode E", "opcode F"};
    for (size_t i = 0; i < 10; i++) {
      x = NEW(names[i], 64, HD_EPROTO, 1002);
      h = frame_ex(&x->b, 0x80 | ops[i], true, LEN_AUTO, 1, "z", 1);
      x->hi = h - 1;
    }
  }
  x = NEW("64-bit length with the top bit", 64, HD_EPROTO, 1002);
  h = frame_ex(&x->b, 0x82, true, LEN_64, UINT64_C(1) << 63, "", 0);
  x->hi = h - 1;
  x = NEW("64-bit length all ones", 64, HD_EPROTO, 1002);
  h = frame_ex(&x->b, 0x82, true, LEN_64, UINT64_MAX, "", 0);
  x->hi = h - 1;
  x = NEW("ping 126 bytes", 1000, HD_EPROTO, 1002);
  {
    uint8_t p[126] = {0};
    h = frame_ex(&x->b, 0x89, true, LEN_AUTO, 126, p, 126);
    x->hi = h - 1;
  }
  x = NEW("close 126 bytes (64-bit form)", 1000, HD_EPROTO, 1002);
  h = frame_ex(&x->b, 0x88, true, LEN_64, 126, "", 0);
  x->hi = h - 1;
  x = NEW("fragmented ping", 64, HD_EPROTO, 1002);
  h = frame_ex(&x->b, HD_WS_OP_PING, true, LEN_AUTO, 1, "p", 1);
  x->hi = h - 1;
  x = NEW("fragmented pong", 64, HD_EPROTO, 1002);
  h = frame_ex(&x->b, HD_WS_OP_PONG, true, LEN_AUTO, 0, "", 0);
  x->hi = h - 1;
  x = NEW("fragmented close", 64, HD_EPROTO, 1002);
  h = frame_ex(&x->b, HD_WS_OP_CLOSE, true, LEN_AUTO, 2, "\x03\xe8", 2);
  x->hi = h - 1;
  x = NEW("continuation without start", 64, HD_EPROTO, 1002);
  h = frame_str(&x->b, HD_WS_OP_CONT, true, "a");
  x->hi = h - 1;
  x = NEW("continuation after a complete message", 64, HD_EPROTO, 1002);
  frame_str(&x->b, HD_WS_OP_TEXT, false, "a");
  frame_str(&x->b, HD_WS_OP_CONT, true, "b");
  at = x->b.len;
  h = frame_str(&x->b, HD_WS_OP_CONT, true, "c");
  x->nev = 1, x->lo = at, x->hi = at + h - 1;
  x = NEW("new text during fragmented message", 64, HD_EPROTO, 1002);
  frame_str(&x->b, HD_WS_OP_TEXT, false, "a");
  at = x->b.len;
  h = frame_str(&x->b, HD_WS_OP_TEXT, true, "b");
  x->lo = at, x->hi = at + h - 1;
  x = NEW("new binary during fragmented message", 64, HD_EPROTO, 1002);
  frame_str(&x->b, HD_WS_OP_BINARY, false, "a");
  frame_str(&x->b, HD_WS_OP_PING, true, "");
  at = x->b.len;
  h = frame_str(&x->b, HD_WS_OP_BINARY, false, "b");
  x->nev = 1, x->lo = at, x->hi = at + h - 1;
  x = NEW("close payload 1 byte", 64, HD_EPROTO, 1002);
  h = frame(&x->b, HD_WS_OP_CLOSE, true, "\x03", 1);
  x->hi = h; /* at the latest when the byte arrives */
  x = NEW("close code 1005", 64, HD_EPROTO, 1002);
  close_frame(&x->b, 1005, "", 0);
  x->hi = x->b.len - 1;
  x = NEW("close code 999", 64, HD_EPROTO, 1002);
  close_frame(&x->b, 999, "a", 1);
  x->hi = x->b.len - 1;
  x = NEW("close code 5000", 64, HD_EPROTO, 1002);
  close_frame(&x->b, 5000, "", 0);
  x->hi = x->b.len - 1;
  x = NEW("close reason invalid UTF-8", 64, HD_EPROTO, 1002);
  close_frame(&x->b, 1000, "ok\xC0\x80", 4);
  x->hi = x->b.len - 1;
  x = NEW("close reason truncated UTF-8", 64, HD_EPROTO, 1002);
  close_frame(&x->b, 1000, "ok\xE2\x82", 4);
  x->hi = x->b.len - 1;

  /* UTF-8: reported by the piece holding the bad byte (fail fast) */
  x = NEW("invalid UTF-8 in text (frame incomplete)", 64, HD_EUTF8, 1007);
  {
    /* the frame declares 20 bytes; only 6 are sent, the 4th is bad */
    uint8_t p[20];
    memcpy(p,
           "abc\xFF"
           "de",
           6);
    h = frame(&x->b, 0x81, true, p, 20);
    x->b.len = h + 6;
    x->lo = x->hi = h + 3;
  }
  x = NEW("surrogate in text", 64, HD_EUTF8, 1007);
  h = frame_str(&x->b, HD_WS_OP_TEXT, true, "xy\xED\xA0\x80z");
  x->lo = x->hi = h + 3;
  x = NEW("invalid UTF-8 in the second fragment", 64, HD_EUTF8, 1007);
  frame_str(&x->b, HD_WS_OP_TEXT, false, "ab\xC3");
  frame_str(&x->b, HD_WS_OP_PING, true, "");
  at = x->b.len;
  h = frame(&x->b, HD_WS_OP_CONT, false, "\xA9\x80zzzzzzzzzz", 12);
  x->nev = 1, x->lo = x->hi = at + h + 1;
  x->b.len -= 4; /* and the fragment is incomplete */
  x = NEW("invalid continuation across fragments", 64, HD_EUTF8, 1007);
  frame_str(&x->b, HD_WS_OP_TEXT, false, "ab\xE2\x82");
  at = x->b.len;
  h = frame_str(&x->b, HD_WS_OP_CONT, true, "Acd");
  x->lo = x->hi = at + h;
  x = NEW("truncated UTF-8 at the end of a text message", 64, HD_EUTF8, 1007);
  h = frame_str(&x->b, HD_WS_OP_TEXT, true, "ab\xF0\x9F\x98");
  x->lo = x->hi = x->b.len - 1;
  x = NEW("truncated UTF-8 at the end of a fragmented text", 64, HD_EUTF8, 1007);
  frame_str(&x->b, HD_WS_OP_TEXT, false, "ab\xE2");
  frame_str(&x->b, HD_WS_OP_CONT, false, "\x82");
  at = x->b.len;
  h = frame_str(&x->b, HD_WS_OP_CONT, true, "");
  x->lo = x->hi = at + h - 1;
  x = NEW("invalid UTF-8 in binary is fine, then bad text", 64, HD_EUTF8, 1007);
  frame(&x->b, 0x82, true, "\xFF\xFE", 2);
  at = x->b.len;
  h = frame(&x->b, 0x81, true, "\xFF", 1);
  x->nev = 1, x->lo = x->hi = at + h;

  /* limits from the header alone */
  x = NEW("too big: header only", 100, HD_ELIMIT, 1009);
  h = frame_ex(&x->b, 0x82, true, LEN_AUTO, 101, "", 0);
  x->hi = h - 1;
  x = NEW("too big: 64-bit length, header only", 1 << 20, HD_ELIMIT, 1009);
  h = frame_ex(&x->b, 0x81, true, LEN_64, UINT64_C(1) << 40, "", 0);
  x->hi = h - 1;
  x = NEW("too big: first fragment", 10, HD_ELIMIT, 1009);
  h = frame_ex(&x->b, 0x01, true, LEN_AUTO, 11, "", 0);
  x->hi = h - 1;

  /* the error comes after the events of earlier frames */
  x = NEW("error after events", 64, HD_EPROTO, 1002);
  frame_str(&x->b, HD_WS_OP_TEXT, true, "one");
  frame_str(&x->b, HD_WS_OP_PING, true, "two");
  at = x->b.len;
  h = frame_ex(&x->b, 0x83, true, LEN_AUTO, 0, "", 0);
  x->nev = 2, x->lo = at, x->hi = at + h - 1;
#undef NEW

  for (int i = 0; i < n; i++) {
    check_err_case(&c[i]);
    free(c[i].b.p);
  }
}

/* ---- the split test over a realistic stream ------------------------------ */

static void test_stream_splits(void) {
  buf_t b = {0};
  log_t whole, l;
  uint8_t bin[300];
  static const char *exp_text1 = "Hello";
  static const char *exp_frag = "fragm\xC3\xA9nted \xE2\x82\xAC!";

  for (size_t i = 0; i < sizeof(bin); i++) bin[i] = (uint8_t)(255 - i);
  frame_str(&b, HD_WS_OP_TEXT, true, exp_text1);
  frame_str(&b, HD_WS_OP_TEXT, false, "fragm\xC3");
  frame_str(&b, HD_WS_OP_PING, true, "are you there");
  frame_str(&b, HD_WS_OP_CONT, false, "\xA9nted \xE2");
  frame_str(&b, HD_WS_OP_CONT, true, "\x82\xAC!");
  frame(&b, HD_WS_OP_BINARY, true, bin, sizeof(bin));
  frame_str(&b, HD_WS_OP_PONG, true, "pong");
  frame_str(&b, HD_WS_OP_TEXT, true, "");
  close_frame(&b, 1000, "bye", 3);

  run_all_splits(b.p, b.len, 4096, &whole, "stream");
  CHECK_INT(whole.err, 0);
  CHECK_INT(whole.nev, 7);
  check_event(&whole, 0, HD_WS_EV_MESSAGE, HD_WS_OP_TEXT, 0, exp_text1, 5);
  check_event(&whole, 1, HD_WS_EV_PING, 0, 0, "are you there", 13);
  check_event(&whole, 2, HD_WS_EV_MESSAGE, HD_WS_OP_TEXT, 0, exp_frag, strlen(exp_frag));
  check_event(&whole, 3, HD_WS_EV_MESSAGE, HD_WS_OP_BINARY, 0, bin, sizeof(bin));
  check_event(&whole, 4, HD_WS_EV_PONG, 0, 0, "pong", 4);
  check_event(&whole, 5, HD_WS_EV_MESSAGE, HD_WS_OP_TEXT, 0, "", 0);
  check_event(&whole, 6, HD_WS_EV_CLOSE, 0, 1000, "bye", 3);

  /* every pair of split points over the part without the 300-byte frame */
  {
    buf_t s = {0};
    log_t w2;
    frame_str(&s, HD_WS_OP_TEXT, false, "ab\xC3");
    frame_str(&s, HD_WS_OP_PING, true, "p");
    frame_str(&s, HD_WS_OP_CONT, true,
              "\xA9"
              "c");
    frame_str(&s, HD_WS_OP_BINARY, true, "bin");
    close_frame(&s, 1001, "", 0);
    run_all_splits(s.p, s.len, 64, &w2, "short stream");
    CHECK_INT(w2.nev, 4);
    check_event(&w2, 1, HD_WS_EV_MESSAGE, HD_WS_OP_TEXT, 0,
                "ab\xC3\xA9"
                "c",
                5);
    log_free(&w2);
    free(s.p);
  }

  /* random chunkings */
  {
    uint64_t seed = 12345;
    size_t cuts[64];
    for (int it = 0; it < 3000; it++) {
      size_t nc = 0, pos = 0;
      while (nc < 64) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        pos += 1 + (size_t)(seed >> 33) % 40;
        if (pos >= b.len) break;
        cuts[nc++] = pos;
      }
      run(b.p, b.len, cuts, nc, 4096, &l);
      if (!log_eq(&l, &whole, "stream random chunks")) it = 3000;
      log_free(&l);
    }
  }
  log_free(&whole);
  free(b.p);
}

/* A whole unfragmented frame in the input is handed out in place (no copy), and
 * an idle reader holds no heap memory. */
static void test_zero_copy_and_memory(void) {
  hd_ws_reader_t r;
  hd_ws_event_t ev;
  buf_t b = {0};
  int rc;

  hd_ws_reader_init(&r, 1024);
  frame_str(&b, HD_WS_OP_TEXT, true, "in place");
  rc = hd_ws_reader_feed(&r, b.p, b.len, &ev);
  CHECK_INT(rc, b.len);
  CHECK_INT(ev.type, HD_WS_EV_MESSAGE);
  CHECK(ev.data == b.p + 6);
  CHECK_MEM(ev.data, ev.len, "in place", 8);
  CHECK(r.buf == NULL && r.ctl == NULL);
  CHECK(!hd_ws_reader_busy(&r));

  /* a fragmented message: busy while in progress, buffers dropped after */
  b.len = 0;
  frame_str(&b, HD_WS_OP_TEXT, false, "frag");
  rc = hd_ws_reader_feed(&r, b.p, b.len, &ev);
  CHECK_INT(rc, b.len);
  CHECK_INT(ev.type, HD_WS_EV_NONE);
  CHECK(hd_ws_reader_busy(&r));
  b.len = 0;
  frame_str(&b, HD_WS_OP_PING, true, "p");
  frame_str(&b, HD_WS_OP_CONT, true, "ment");
  rc = hd_ws_reader_feed(&r, b.p, b.len, &ev);
  CHECK_INT(ev.type, HD_WS_EV_PING);
  CHECK(hd_ws_reader_busy(&r));
  rc = hd_ws_reader_feed(&r, b.p + rc, b.len - (size_t)rc, &ev);
  CHECK_INT(ev.type, HD_WS_EV_MESSAGE);
  CHECK_MEM(ev.data, ev.len, "fragment", 8);
  CHECK(!hd_ws_reader_busy(&r));
  rc = hd_ws_reader_feed(&r, b.p, 0, &ev);
  CHECK_INT(rc, 0);
  CHECK_INT(ev.type, HD_WS_EV_NONE);
  CHECK(r.buf == NULL && r.ctl == NULL);

  /* a header split across reads: busy */
  b.len = 0;
  frame_str(&b, HD_WS_OP_BINARY, true, "xyz");
  rc = hd_ws_reader_feed(&r, b.p, 3, &ev);
  CHECK_INT(rc, 3);
  CHECK(hd_ws_reader_busy(&r));
  rc = hd_ws_reader_feed(&r, b.p + 3, b.len - 3, &ev);
  CHECK_INT(ev.type, HD_WS_EV_MESSAGE);
  CHECK_MEM(ev.data, ev.len, "xyz", 3);
  CHECK(!hd_ws_reader_busy(&r));
  CHECK_INT(hd_ws_reader_close_code(&r), 0);
  hd_ws_reader_dispose(&r);
  free(b.p);
}

/* ---- helpers ---------------------------------------------------------------- */

static void test_unmask(void) {
  static const uint8_t mask[4] = {0x12, 0xA5, 0x00, 0xFF};
  uint8_t storage[64], ref[64];
  int wrong = 0;

  for (unsigned pos = 0; pos < 4; pos++)
    for (size_t align = 0; align < 8; align++)
      for (size_t n = 0; n <= 40; n++) {
        uint8_t *p = storage + align;
        unsigned out;
        for (size_t i = 0; i < sizeof(storage); i++) storage[i] = (uint8_t)(i * 37 + 11);
        memcpy(ref, storage, sizeof(storage));
        for (size_t i = 0; i < n; i++) ref[align + i] ^= mask[(pos + i) & 3];
        out = hd_ws_unmask(p, n, mask, pos);
        if (memcmp(storage, ref, sizeof(storage)) != 0 || out != ((pos + n) & 3)) {
          if (wrong++ < 5)
            fprintf(
                stderr, "unmask pos %u align %zu n %zu: bytes %s, returned %u want %zu\n",
                pos, align, n, memcmp(storage, ref, sizeof(storage)) ? "differ" : "ok",
                out, (pos + n) & 3);
        }
      }
  CHECK_INT(wrong, 0);
  /* chaining: unmasking in pieces equals unmasking at once */
  {
    uint8_t a[40], c[40];
    unsigned pos = 0;
    for (size_t i = 0; i < 40; i++) a[i] = c[i] = (uint8_t)i;
    hd_ws_unmask(a, 40, mask, 0);
    pos = hd_ws_unmask(c, 3, mask, pos);
    pos = hd_ws_unmask(c + 3, 14, mask, pos);
    pos = hd_ws_unmask(c + 17, 23, mask, pos);
    CHECK_MEM(a, 40, c, 40);
    CHECK_INT(pos, 0);
  }
}

static void test_header_encode(void) {
  static const struct {
    uint64_t len;
    size_t n;
    uint8_t bytes[10];
  } t[] = {
      {0, 2, {0x81, 0x00}},
      {1, 2, {0x81, 0x01}},
      {125, 2, {0x81, 0x7D}},
      {126, 4, {0x81, 0x7E, 0x00, 0x7E}},
      {65535, 4, {0x81, 0x7E, 0xFF, 0xFF}},
      {65536, 10, {0x81, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0}},
      {UINT64_C(1) << 32, 10, {0x81, 0x7F, 0, 0, 0, 1, 0, 0, 0, 0}},
      {UINT64_C(0x0102030405060708), 10, {0x81, 0x7F, 1, 2, 3, 4, 5, 6, 7, 8}},
  };
  uint8_t out[HD_WS_MAX_HEADER];

  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
    size_t n;
    memset(out, 0xEE, sizeof(out));
    n = hd_ws_header_encode(out, HD_WS_OP_TEXT, true, t[i].len);
    CHECK_INT(n, t[i].n);
    CHECK_MEM(out, n, t[i].bytes, t[i].n);
  }
  CHECK_INT(hd_ws_header_encode(out, HD_WS_OP_BINARY, false, 3), 2);
  CHECK_INT(out[0], 0x02);
  CHECK_INT(out[1], 0x03);
  CHECK_INT(hd_ws_header_encode(out, HD_WS_OP_CLOSE, true, 2), 2);
  CHECK_INT(out[0], 0x88);
  CHECK_INT(hd_ws_header_encode(out, HD_WS_OP_PONG, true, 0), 2);
  CHECK_INT(out[0], 0x8A);
}

static void test_close_code_valid(void) {
  int wrong = 0;
  for (unsigned code = 0; code <= 65535; code++) {
    bool want = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
                (code >= 3000 && code <= 4999);
    if (hd_ws_close_code_valid(code) != want) {
      if (wrong++ < 5)
        fprintf(stderr, "close code %u: got %d want %d\n", code, !want, want);
    }
  }
  CHECK_INT(wrong, 0);
  CHECK(hd_ws_close_code_valid(1000));
  CHECK(!hd_ws_close_code_valid(1004));
  CHECK(!hd_ws_close_code_valid(1005));
  CHECK(!hd_ws_close_code_valid(1006));
  CHECK(!hd_ws_close_code_valid(1012));
  CHECK(!hd_ws_close_code_valid(2999));
  CHECK(hd_ws_close_code_valid(4999));
  CHECK(!hd_ws_close_code_valid(5000));
}

static void test_close_payload(void) {
  uint8_t out[HD_WS_MAX_CONTROL + 8];
  char reason[400];
  size_t n;

  n = hd_ws_close_payload(out, 1000, NULL);
  CHECK_INT(n, 2);
  CHECK_INT(out[0], 0x03);
  CHECK_INT(out[1], 0xE8);
  n = hd_ws_close_payload(out, 4008, "slow");
  CHECK_INT(n, 6);
  CHECK_MEM(out, n, "\x0f\xa8slow", 6);
  n = hd_ws_close_payload(out, 1001, "");
  CHECK_INT(n, 2);

  /* ASCII: exactly 123 fits, longer is cut to 123 */
  for (size_t len = 120; len <= 130; len++) {
    memset(reason, 'r', len);
    reason[len] = '\0';
    memset(out, 0, sizeof(out));
    n = hd_ws_close_payload(out, 1000, reason);
    CHECK_INT(n, 2 + (len < 123 ? len : 123));
    CHECK_INT(out[HD_WS_MAX_CONTROL], 0); /* nothing written past 125 */
  }
  /* multi-byte characters at every alignment: never cut inside a sequence, the
   * result is the longest whole-character prefix that fits and is valid UTF-8 */
  {
    static const char *chars[] = {"\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};
    for (size_t ci = 0; ci < 3; ci++)
      for (size_t lead = 0; lead < 4; lead++) {
        size_t cl = strlen(chars[ci]), len = 0, best = 0;
        memset(reason, 'a', lead);
        len = lead;
        while (len + cl < 300) {
          memcpy(reason + len, chars[ci], cl);
          len += cl;
        }
        reason[len] = '\0';
        /* longest prefix <= 123 ending at a character boundary */
        best = lead + ((123 - lead) / cl) * cl;
        memset(out, 0, sizeof(out));
        n = hd_ws_close_payload(out, 1000, reason);
        CHECK_INT(n, 2 + best);
        CHECK(n <= HD_WS_MAX_CONTROL);
        CHECK_MEM(out + 2, n - 2, reason, best);
        CHECK(hd_utf8_valid(out + 2, n - 2));
      }
  }
  /* the payload is readable by the reader as a close frame */
  {
    buf_t b = {0};
    log_t l;
    memset(reason, 'z', 200);
    reason[200] = '\0';
    n = hd_ws_close_payload(out, 4001, reason);
    frame(&b, HD_WS_OP_CLOSE, true, out, n);
    run(b.p, b.len, NULL, 0, 64, &l);
    CHECK_INT(l.err, 0);
    check_event(&l, 0, HD_WS_EV_CLOSE, 0, 4001, reason, 123);
    log_free(&l);
    free(b.p);
  }
}

/* Random frame soup: feeding whole and in random chunks always agrees. */
static void test_random_streams(void) {
  uint64_t seed = 777;
  int bad = 0;
#define RND() (seed = seed * 6364136223846793005u + 1442695040888963407u, seed >> 33)
  for (int it = 0; it < 3000 && bad < 3; it++) {
    buf_t b = {0};
    log_t whole, l;
    size_t cuts[64], nc = 0, pos = 0;
    int nframes = 1 + (int)(RND() % 8);
    for (int f = 0; f < nframes; f++) {
      static const unsigned b0s[] = {0x81, 0x82, 0x01, 0x02, 0x00, 0x80,
                                     0x89, 0x8A, 0x88, 0x09, 0xC1, 0x83};
      uint8_t p[300];
      unsigned b0 = b0s[RND() % (sizeof(b0s) / sizeof(b0s[0]))];
      size_t len = RND() % 8 == 0 ? RND() % 300 : RND() % 12;
      for (size_t i = 0; i < len; i++) {
        unsigned k = (unsigned)(RND() % 10);
        p[i] = k < 7    ? (uint8_t)('a' + k)
               : k == 7 ? 0xC3
               : k == 8 ? 0xA9
                        : (uint8_t)RND();
      }
      if ((b0 & 0x0F) == HD_WS_OP_CLOSE && len >= 2 && RND() % 2)
        p[0] = 0x03, p[1] = 0xE8;
      frame_ex(&b, b0, RND() % 50 != 0, LEN_AUTO, len, p, len);
    }
    while (nc < 64) {
      pos += 1 + RND() % 16;
      if (pos >= b.len) break;
      cuts[nc++] = pos;
    }
    size_t mm = 1 + RND() % 400;
    run(b.p, b.len, NULL, 0, mm, &whole);
    run(b.p, b.len, cuts, nc, mm, &l);
    if (!log_eq(&l, &whole, "random stream")) bad++;
    log_free(&l);
    log_free(&whole);
    free(b.p);
  }
#undef RND
}

int main(void) {
  test_lengths();
  test_length_forms();
  test_fragments();
  test_close_events();
  test_errors();
  test_stream_splits();
  test_zero_copy_and_memory();
  test_unmask();
  test_header_encode();
  test_close_code_valid();
  test_close_payload();
  test_random_streams();
  TEST_MAIN_END();
}
