/* libFuzzer target for the HTTP request parser (src/proto/http.c) and the
 * WebSocket handshake check (src/proto/handshake.c).
 *
 * Input layout: byte 0 chooses the chunking, byte 1 max_body, bytes 2-3 seed the
 * chunk sizes; the rest is the client byte stream. The stream is parsed as a
 * server would (pipelining: answer, hd_http_parser_next(), feed the rest; stop
 * after an upgrade request or an error), once whole and once in random chunks
 * (each a separate heap copy, so a parser that keeps pointers into a read buffer
 * is caught by ASan). Every completed request goes through hd_ws_handshake_check(),
 * the response writer, header lookup and hd_http_query_get(). The two runs must
 * produce the same requests, handshake results and final error; the documented
 * limits and return codes are checked on the way. Any violation aborts. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herald/herald.h"
#include "support/bytelog.h"
#include "proto/handshake.h"
#include "proto/http.h"
#include "support/fuzz.h"

static void log_num(log_t *l, uint64_t v) {
  log_put(l, &v, sizeof(v));
}

static void log_span(log_t *l, const void *p, size_t n) {
  log_num(l, n);
  log_put(l, p, n);
}

static uint32_t rng;
static uint32_t next_rand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 17;
  rng ^= rng << 5;
  return rng;
}

/* Records a completed request and everything derived from it. */
static void use_request(const hd_http_req_t *r, size_t max_body, log_t *l) {
  size_t head = r->path_len + (r->query ? r->query_len + 1 : 0);
  hd_ws_handshake_t hs;
  char out[512], val[16];
  int rc;

  REQUIRE(r->nheaders <= HD_HTTP_MAX_HEADERS);
  REQUIRE(r->body_len <= max_body);
  REQUIRE((r->body == NULL) == (r->body_len == 0));
  REQUIRE(r->path != NULL || r->path_len == 0);
  if (r->query) REQUIRE(r->query == r->path + r->path_len + 1 && r->query[-1] == '?');
  REQUIRE(memchr(r->path, '?', r->path_len) == NULL);
  log_num(l, r->method);
  log_num(l, r->http_major << 8 | r->http_minor);
  log_num(l, (unsigned)r->keep_alive << 1 | r->upgrade);
  log_span(l, r->path, r->path_len);
  log_num(l, r->query != NULL);
  if (r->query) log_span(l, r->query, r->query_len);
  log_num(l, r->nheaders);
  for (size_t i = 0; i < r->nheaders; i++) {
    const hd_http_header_t *h = &r->headers[i];
    const hd_http_header_t *f;
    char name[64];
    size_t count = 0;
    head += h->name_len + h->value_len;
    if (h->value_len) REQUIRE(h->value[0] != ' ' && h->value[0] != '\t');
    if (h->value_len)
      REQUIRE(h->value[h->value_len - 1] != ' ' && h->value[h->value_len - 1] != '\t');
    log_span(l, h->name, h->name_len);
    log_span(l, h->value, h->value_len);
    /* the lookup finds a header by its own name (if it has no NUL) */
    if (h->name_len < sizeof(name) && memchr(h->name, '\0', h->name_len) == NULL) {
      memcpy(name, h->name, h->name_len);
      name[h->name_len] = '\0';
      f = hd_http_header_find(r, name, &count);
      REQUIRE(f != NULL && f <= h && count >= 1);
    }
  }
  REQUIRE(head <= HD_HTTP_MAX_HEAD);
  log_span(l, r->body, r->body_len);

  rc = hd_ws_handshake_check(r, &hs);
  log_num(l, (uint64_t)(int64_t)rc);
  log_num(l, (uint64_t)hs.status);
  if (rc == 0) {
    size_t n;
    REQUIRE(hs.status == 101);
    REQUIRE(strlen(hs.accept) == 28);
    REQUIRE(r->method == HTTP_GET);
    log_put(l, hs.accept, 28);
    log_num(l, hs.protocol);
    n = hd_ws_handshake_response(&hs, out, sizeof(out));
    REQUIRE(n > 0 && n < sizeof(out) && strlen(out) == n);
    REQUIRE(strstr(out, "Sec-WebSocket-Extensions") == NULL);
  } else {
    REQUIRE(rc == HD_EPROTO);
    REQUIRE(hs.status == 400 || hs.status == 426);
    REQUIRE(hs.error != NULL && hs.error[0] != '\0');
    log_put(l, hs.error, strlen(hs.error));
  }

  rc = hd_http_query_get(r->query, r->query_len, "token", val, sizeof(val));
  REQUIRE(rc == HD_ENOENT || rc == HD_ELIMIT || rc == HD_EPROTO ||
          (rc >= 0 && rc < (int)sizeof(val) && val[rc] == '\0'));
  if (!r->query) REQUIRE(rc == HD_ENOENT);
  log_num(l, (uint64_t)(int64_t)rc);
  if (rc > 0) log_put(l, val, (size_t)rc);
}

static void run(const uint8_t *in, size_t n, size_t max_body, unsigned max_chunk,
                log_t *l) {
  hd_http_parser_t *p = hd_http_parser_new(max_body);
  size_t pos = 0;
  bool stop = false;

  REQUIRE(p != NULL);
  while (pos < n && !stop) {
    size_t len = max_chunk ? 1 + next_rand() % max_chunk : n - pos, off = 0;
    uint8_t *piece;
    if (len > n - pos) len = n - pos;
    piece = malloc(len);
    REQUIRE(piece != NULL);
    memcpy(piece, in + pos, len);
    while (off < len) {
      size_t consumed = (size_t)-1;
      int rc = hd_http_parser_feed(p, piece + off, len - off, &consumed);
      if (rc == 1) {
        const hd_http_req_t *r = hd_http_parser_request(p);
        REQUIRE(consumed <= len - off);
        off += consumed;
        REQUIRE(!hd_http_parser_busy(p));
        log_put(l, "R", 1);
        log_num(l, pos + off); /* where the request ended in the stream */
        use_request(r, max_body, l);
        if (r->upgrade) { /* the rest belongs to the WebSocket reader */
          stop = true;
          break;
        }
        hd_http_parser_next(p);
        continue;
      }
      if (rc == 0) {
        REQUIRE(consumed == len - off);
        break;
      }
      {
        int status = hd_http_parser_status(p);
        REQUIRE((rc == HD_EPROTO && status == 400) ||
                (rc == HD_ELIMIT && (status == 413 || status == 431 || status == 500)));
        log_put(l, "E", 1);
        log_num(l, (uint64_t)(int64_t)rc);
        log_num(l, (uint64_t)status);
      }
      stop = true;
      break;
    }
    free(piece);
    pos += len;
  }
  hd_http_parser_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  log_t whole = {0}, split = {0};
  size_t max_body;
  unsigned max_chunk;

  if (size < 4) return 0;
  max_chunk = 1 + (data[0] % 4 == 0 ? 0u : data[0] % 97u);
  max_body = data[1] & 0x80 ? (size_t)(data[1] & 0x7F) * 1000 : data[1];
  rng = (uint32_t)(data[2] | data[3] << 8) * 2654435761u + 1;
  data += 4;
  size -= 4;

  run(data, size, max_body, 0, &whole);
  run(data, size, max_body, max_chunk, &split);
  if (whole.len != split.len || (whole.len && memcmp(whole.p, split.p, whole.len) != 0)) {
    fprintf(stderr, "fuzz_http: whole and chunked (max %u) runs differ (max_body %zu)\n",
            max_chunk, max_body);
    abort();
  }
  free(whole.p);
  free(split.p);
  return 0;
}
