/* libFuzzer target for the WebSocket frame reader (src/proto/ws.c).
 *
 * Input layout: byte 0-1 choose max_message, bytes 2-3 seed the chunking; the
 * rest is the client byte stream. The stream is fed whole and then in random
 * chunks (each a separate heap copy, so a reader that keeps a pointer into an
 * earlier read is caught by ASan); the two event sequences, errors and close codes
 * must be identical. Every event is also checked against the contract: limits,
 * UTF-8 of text messages, control payload sizes, close codes, no events after a
 * close or an error, the error/close code pairing. Any violation aborts. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/herald.h"
#include "support/bytelog.h"
#include "proto/utf8.h"
#include "proto/ws.h"
#include "support/fuzz.h"

static uint32_t rng;
static uint32_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 17;
  rng ^= rng << 5;
  return rng;
}

static void check_event(const hd_ws_event_t *ev, size_t max_message) {
  switch (ev->type) {
  case HD_WS_EV_MESSAGE:
    REQUIRE(ev->opcode == HD_WS_OP_TEXT || ev->opcode == HD_WS_OP_BINARY);
    REQUIRE(ev->len <= max_message);
    REQUIRE(ev->data != NULL || ev->len == 0);
    if (ev->opcode == HD_WS_OP_TEXT) REQUIRE(hd_utf8_valid(ev->data, ev->len));
    break;
  case HD_WS_EV_PING:
  case HD_WS_EV_PONG:
    REQUIRE(ev->len <= HD_WS_MAX_CONTROL);
    REQUIRE(ev->data != NULL || ev->len == 0);
    break;
  case HD_WS_EV_CLOSE:
    REQUIRE(ev->len <= HD_WS_MAX_CONTROL - 2);
    if (ev->close_code == HD_WS_CLOSE_NO_STATUS)
      REQUIRE(ev->len == 0);
    else
      REQUIRE(hd_ws_close_code_valid(ev->close_code));
    REQUIRE(hd_utf8_valid(ev->data, ev->len));
    break;
  default:
    REQUIRE(!"unknown event type");
  }
}

/* Feeds in[0..n) in chunks (chunk == 0: whole) and records everything. */
static void run(const uint8_t *in, size_t n, size_t max_message, unsigned max_chunk,
                log_t *l) {
  hd_ws_reader_t r;
  size_t pos = 0;
  bool done = false;
  int err = 0;

  hd_ws_reader_init(&r, max_message);
  while (pos < n) {
    size_t len = max_chunk ? 1 + next_rand() % max_chunk : n - pos, off = 0;
    uint8_t *piece;
    if (len > n - pos) len = n - pos;
    piece = malloc(len);
    REQUIRE(piece != NULL);
    memcpy(piece, in + pos, len);
    while (off < len) {
      hd_ws_event_t ev;
      int rc = hd_ws_reader_feed(&r, piece + off, len - off, &ev);
      if (rc < 0) {
        uint16_t code = hd_ws_reader_close_code(&r);
        REQUIRE(!done);
        REQUIRE((rc == HD_EPROTO && code == HD_WS_CLOSE_PROTOCOL) ||
                (rc == HD_EUTF8 && code == HD_WS_CLOSE_BAD_DATA) ||
                (rc == HD_ELIMIT && code == HD_WS_CLOSE_TOO_BIG) ||
                (rc == HD_ENOMEM && code == HD_WS_CLOSE_INTERNAL));
        err = rc;
        done = true;
        log_put(l, "E", 1);
        log_put(l, &rc, sizeof(rc));
        log_put(l, &code, sizeof(code));
        break;
      }
      REQUIRE((size_t)rc <= len - off);
      off += (size_t)rc;
      if (ev.type == HD_WS_EV_NONE) {
        REQUIRE(off == len);
        break;
      }
      REQUIRE(!done);
      REQUIRE(rc > 0);
      check_event(&ev, max_message);
      {
        uint8_t hdr[4] = {(uint8_t)ev.type, ev.opcode, (uint8_t)(ev.close_code >> 8),
                          (uint8_t)ev.close_code};
        uint64_t elen = ev.len;
        log_put(l, "V", 1);
        log_put(l, hdr, sizeof(hdr));
        log_put(l, &elen, sizeof(elen));
        log_put(l, ev.data, ev.len);
      }
      if (ev.type == HD_WS_EV_CLOSE) done = true;
    }
    if (!done) REQUIRE(off == len);
    free(piece);
    pos += len;
  }
  if (!err) REQUIRE(hd_ws_reader_close_code(&r) == 0);
  /* After a close or an error everything is consumed and ignored. */
  if (done) {
    uint8_t more[6] = {0x81, 0x80, 0, 0, 0, 0};
    hd_ws_event_t ev;
    REQUIRE(hd_ws_reader_feed(&r, more, sizeof(more), &ev) == (int)sizeof(more));
    REQUIRE(ev.type == HD_WS_EV_NONE);
  }
  hd_ws_reader_dispose(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  log_t whole = {0}, split = {0};
  size_t max_message;
  unsigned max_chunk;

  if (size < 4) return 0;
  /* max_message 1..~70000, biased towards small limits */
  max_message = 1 + (size_t)(data[0] | data[1] << 8) % (data[1] & 0x80 ? 70000u : 300u);
  rng = (uint32_t)(data[2] | data[3] << 8) * 2654435761u + 1;
  max_chunk = 1 + (data[2] % 4 == 0 ? 0u : data[3] % 64u); /* 1: byte by byte */
  data += 4;
  size -= 4;

  run(data, size, max_message, 0, &whole);
  run(data, size, max_message, max_chunk, &split);
  if (whole.len != split.len || (whole.len && memcmp(whole.p, split.p, whole.len) != 0)) {
    fprintf(stderr,
            "fuzz_ws_frame: whole and chunked (max %u) runs differ (max_message %zu)\n",
            max_chunk, max_message);
    abort();
  }
  free(whole.p);
  free(split.p);
  return 0;
}
