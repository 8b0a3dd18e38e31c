/* Tests for src/proto/http.c: request parsing on llhttp with Herald's limits,
 * header lookup, token lists and query strings.
 *
 * A runner feeds a byte stream in given pieces (each a separate heap copy that is
 * freed after the call, so a parser keeping pointers into a read buffer is caught
 * under ASan), handles pipelining as a server would (answer, next, feed the rest)
 * and renders every completed request to text. Every case must render the same
 * whole, at every split point and byte by byte. */
#include <stdbool.h>
#include <stdint.h>

#include "herald/herald.h"
#include "proto/http.h"
#include "support/unit.h"

/* ---- rendering and running ------------------------------------------------ */

typedef struct {
  char *s;
  size_t len, cap;
} str_t;

static void sput(str_t *o, const char *p, size_t n) {
  if (o->len + n + 1 > o->cap) {
    size_t cap = o->cap ? o->cap : 256;
    while (cap < o->len + n + 1) cap *= 2;
    o->s = realloc(o->s, cap);
    o->cap = cap;
  }
  memcpy(o->s + o->len, p, n);
  o->len += n;
  o->s[o->len] = '\0';
}

static void sputs(str_t *o, const char *p) {
  sput(o, p, strlen(p));
}

static void sputq(str_t *o, const char *p, size_t n) { /* quoted, escaped */
  sputs(o, "\"");
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      sput(o, (const char *)&c, 1);
    } else {
      char e[8];
      snprintf(e, sizeof(e), "\\x%02X", c);
      sputs(o, e);
    }
  }
  sputs(o, "\"");
}

static void render(str_t *o, const hd_http_req_t *r, size_t end) {
  char tmp[128];
  snprintf(tmp, sizeof(tmp),
           "end=%zu method=%s HTTP/%u.%u keep_alive=%d upgrade=%d path=", end,
           llhttp_method_name((llhttp_method_t)r->method), r->http_major, r->http_minor,
           r->keep_alive, r->upgrade);
  sputs(o, tmp);
  sputq(o, r->path, r->path_len);
  sputs(o, " query=");
  if (r->query)
    sputq(o, r->query, r->query_len);
  else
    sputs(o, "NULL");
  for (size_t i = 0; i < r->nheaders; i++) {
    sputs(o, "\n  ");
    sputq(o, r->headers[i].name, r->headers[i].name_len);
    sputs(o, ": ");
    sputq(o, r->headers[i].value, r->headers[i].value_len);
  }
  sputs(o, "\n  body=");
  if (r->body)
    sputq(o, (const char *)r->body, r->body_len);
  else
    sputs(o, r->body_len ? "NULL with a length!" : "NULL");
  sputs(o, "\n");
}

typedef struct {
  str_t text; /* rendered requests, then the outcome */
  int nreq;
  int err;            /* 0, or the error returned */
  int status;         /* hd_http_parser_status() after an error */
  size_t upgrade_end; /* stream offset where an upgrade request ended */
} result_t;

/* Feeds s in pieces ending at cuts[]. Stops after an upgrade request (the rest
 * belongs to the WebSocket reader) or an error. */
static void run(const char *s, size_t n, const size_t *cuts, size_t ncuts,
                size_t max_body, result_t *res) {
  hd_http_parser_t *p = hd_http_parser_new(max_body);
  size_t start = 0;
  bool stop = false;
  char tmp[96];

  memset(res, 0, sizeof(*res));
  sputs(&res->text, "");
  for (size_t k = 0; k <= ncuts && !stop; k++) {
    size_t end = k < ncuts ? cuts[k] : n, plen = end - start, off = 0;
    uint8_t *piece = malloc(plen ? plen : 1);
    memcpy(piece, s + start, plen);
    for (;;) {
      size_t consumed = (size_t)-1;
      int rc = hd_http_parser_feed(p, piece + off, plen - off, &consumed);
      if (rc == 1) {
        const hd_http_req_t *r = hd_http_parser_request(p);
        if (consumed > plen - off) {
          sputs(&res->text, "BAD consumed\n");
          stop = true;
          break;
        }
        off += consumed;
        if (hd_http_parser_busy(p)) sputs(&res->text, "BUSY after a complete request\n");
        render(&res->text, r, start + off);
        res->nreq++;
        if (r->upgrade) {
          res->upgrade_end = start + off;
          stop = true;
          break;
        }
        hd_http_parser_next(p);
        if (off == plen) break;
        continue;
      }
      if (rc == 0) {
        if (consumed != plen - off) sputs(&res->text, "BAD consumed on 0\n");
        break;
      }
      res->err = rc;
      res->status = hd_http_parser_status(p);
      snprintf(tmp, sizeof(tmp), "error %d status %d\n", rc, res->status);
      sputs(&res->text, tmp);
      stop = true;
      break;
    }
    free(piece);
    start = end;
  }
  hd_http_parser_free(p);
}

static void result_free(result_t *r) {
  free(r->text.s);
}

static bool same(const result_t *a, const result_t *b, const char *what) {
  hd_test_checks++;
  if (strcmp(a->text.s, b->text.s) != 0 || a->err != b->err || a->status != b->status ||
      a->upgrade_end != b->upgrade_end) {
    hd_test_failures++;
    fprintf(stderr, "%s: results differ:\n--- split:\n%s--- whole:\n%s", what, a->text.s,
            b->text.s);
    return false;
  }
  return true;
}

/* Whole, every split point, byte by byte. Returns the whole result. */
static void run_all(const char *s, size_t n, size_t max_body, result_t *whole,
                    const char *name) {
  size_t *cuts = malloc((n + 1) * sizeof(size_t));
  result_t r;
  char what[128];
  bool ok = true;

  run(s, n, NULL, 0, max_body, whole);
  for (size_t i = 0; i <= n && ok; i++) {
    cuts[0] = i;
    run(s, n, cuts, 1, max_body, &r);
    snprintf(what, sizeof(what), "%s: split at %zu", name, i);
    ok = same(&r, whole, what);
    result_free(&r);
  }
  if (ok && n > 1) {
    for (size_t i = 0; i + 1 < n; i++) cuts[i] = i + 1;
    run(s, n, cuts, n - 1, max_body, &r);
    snprintf(what, sizeof(what), "%s: byte by byte", name);
    same(&r, whole, what);
    result_free(&r);
  }
  free(cuts);
}

/* Parses one complete request (whole) and returns the parser for inspection. */
static hd_http_parser_t *parse1(const char *s, size_t max_body, int *rc,
                                size_t *consumed) {
  hd_http_parser_t *p = hd_http_parser_new(max_body);
  *rc = hd_http_parser_feed(p, (const uint8_t *)s, strlen(s), consumed);
  return p;
}

#define CHECK_TEXT(res, expected)                                                        \
  do {                                                                                   \
    hd_test_checks++;                                                                    \
    if (strcmp((res)->text.s, (expected)) != 0) {                                        \
      hd_test_failures++;                                                                \
      fprintf(stderr, "%s:%d: parsed:\n%s--- expected:\n%s", __FILE__, __LINE__,         \
              (res)->text.s, (expected));                                                \
    }                                                                                    \
  } while (0)

/* ---- tests ---------------------------------------------------------------- */

static void test_simple_get(void) {
  static const char req[] = "GET /ws?token=abc&x=1 HTTP/1.1\r\n"
                            "Host: example.com\r\n"
                            "User-Agent:   test agent  \r\n"
                            "X-Tab:\tvalue\t\r\n"
                            "\r\n";
  result_t r;

  run_all(req, sizeof(req) - 1, 1024, &r, "simple GET");
  CHECK_INT(r.nreq, 1);
  CHECK_INT(r.err, 0);
  CHECK_TEXT(&r, "end=96 method=GET HTTP/1.1 keep_alive=1 upgrade=0 path=\"/ws\" "
                 "query=\"token=abc&x=1\"\n"
                 "  \"Host\": \"example.com\"\n"
                 "  \"User-Agent\": \"test agent\"\n"
                 "  \"X-Tab\": \"value\"\n"
                 "  body=NULL\n");
  CHECK_INT(sizeof(req) - 1, 96);
  result_free(&r);

  {
    static const char r2[] = "GET / HTTP/1.0\r\nHost: h\r\n\r\n";
    run_all(r2, sizeof(r2) - 1, 0, &r, "HTTP/1.0");
    CHECK_TEXT(&r,
               "end=27 method=GET HTTP/1.0 keep_alive=0 upgrade=0 path=\"/\" query=NULL\n"
               "  \"Host\": \"h\"\n"
               "  body=NULL\n");
    result_free(&r);
  }
  {
    static const char r3[] = "GET /p? HTTP/1.1\r\nConnection: close\r\n\r\n";
    run_all(r3, sizeof(r3) - 1, 0, &r, "empty query");
    CHECK_TEXT(
        &r, "end=39 method=GET HTTP/1.1 keep_alive=0 upgrade=0 path=\"/p\" query=\"\"\n"
            "  \"Connection\": \"close\"\n"
            "  body=NULL\n");
    result_free(&r);
  }
  { /* headers with empty values, then others: names must not run together */
    static const char r4[] =
        "GET / HTTP/1.1\r\nX-Empty:\r\nHost: h\r\nX-Blank:   \r\nX-Last: v\r\n\r\n";
    run_all(r4, sizeof(r4) - 1, 0, &r, "empty header values");
    CHECK_TEXT(&r,
               "end=61 method=GET HTTP/1.1 keep_alive=1 upgrade=0 path=\"/\" query=NULL\n"
               "  \"X-Empty\": \"\"\n"
               "  \"Host\": \"h\"\n"
               "  \"X-Blank\": \"\"\n"
               "  \"X-Last\": \"v\"\n"
               "  body=NULL\n");
    result_free(&r);
  }
}

static void test_header_find(void) {
  static const char req[] = "GET / HTTP/1.1\r\n"
                            "host: a\r\n"
                            "X-Dup: one\r\n"
                            "x-dup: two\r\n"
                            "X-DUP: three\r\n"
                            "X-Dupe: no\r\n"
                            "\r\n";
  int rc;
  size_t consumed, count = 99;
  hd_http_parser_t *p = parse1(req, 0, &rc, &consumed);
  const hd_http_req_t *r = hd_http_parser_request(p);
  const hd_http_header_t *h;

  CHECK_INT(rc, 1);
  CHECK_INT(consumed, sizeof(req) - 1);
  CHECK_INT(r->nheaders, 5);
  h = hd_http_header_find(r, "HOST", &count);
  CHECK(h != NULL);
  CHECK_INT(count, 1);
  if (h) CHECK_MEM(h->value, h->value_len, "a", 1);
  h = hd_http_header_find(r, "x-dup", &count);
  CHECK_INT(count, 3);
  if (h) CHECK_MEM(h->value, h->value_len, "one", 3);
  h = hd_http_header_find(r, "X-Dupe", NULL);
  if (h) CHECK_MEM(h->value, h->value_len, "no", 2);
  CHECK(h != NULL);
  h = hd_http_header_find(r, "x-du", &count);
  CHECK(h == NULL);
  CHECK_INT(count, 0);
  h = hd_http_header_find(r, "missing", &count);
  CHECK(h == NULL);
  CHECK_INT(count, 0);
  CHECK(hd_http_header_find(r, "X-Dup", NULL) != NULL);
  hd_http_parser_free(p);
}

static void test_pipelining(void) {
  static const char two[] = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                            "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz";
  size_t first = strlen("GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
  hd_http_parser_t *p = hd_http_parser_new(100);
  size_t consumed = 0;
  int rc;
  const hd_http_req_t *r;

  CHECK(!hd_http_parser_busy(p));
  rc = hd_http_parser_feed(p, (const uint8_t *)two, sizeof(two) - 1, &consumed);
  CHECK_INT(rc, 1);
  CHECK_INT(consumed, first);
  r = hd_http_parser_request(p);
  CHECK_MEM(r->path, r->path_len, "/a", 2);
  CHECK_INT(r->method, HTTP_GET);
  hd_http_parser_next(p);
  rc = hd_http_parser_feed(p, (const uint8_t *)two + first, sizeof(two) - 1 - first,
                           &consumed);
  CHECK_INT(rc, 1);
  CHECK_INT(consumed, sizeof(two) - 1 - first);
  r = hd_http_parser_request(p);
  CHECK_MEM(r->path, r->path_len, "/b", 2);
  CHECK_INT(r->method, HTTP_POST);
  CHECK_MEM(r->body, r->body_len, "xyz", 3);
  hd_http_parser_next(p);
  CHECK(!hd_http_parser_busy(p));
  /* a partial third request makes the parser busy */
  rc = hd_http_parser_feed(p, (const uint8_t *)"GET /c HT", 9, &consumed);
  CHECK_INT(rc, 0);
  CHECK_INT(consumed, 9);
  CHECK(hd_http_parser_busy(p));
  rc = hd_http_parser_feed(p, (const uint8_t *)"TP/1.1\r\n\r\n", 10, &consumed);
  CHECK_INT(rc, 1);
  CHECK_INT(consumed, 10);
  CHECK_MEM(hd_http_parser_request(p)->path, hd_http_parser_request(p)->path_len, "/c",
            2);
  hd_http_parser_free(p);

  { /* three requests at every split point */
    static const char three[] =
        "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
        "PUT /2?q HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
        "GET /3 HTTP/1.1\r\nConnection: close\r\n\r\n";
    result_t res;
    run_all(three, sizeof(three) - 1, 100, &res, "three pipelined");
    CHECK_INT(res.nreq, 3);
    CHECK_INT(res.err, 0);
    CHECK_TEXT(
        &res,
        "end=28 method=GET HTTP/1.1 keep_alive=1 upgrade=0 path=\"/1\" query=NULL\n"
        "  \"Host\": \"h\"\n"
        "  body=NULL\n"
        "end=89 method=PUT HTTP/1.1 keep_alive=1 upgrade=0 path=\"/2\" query=\"q\"\n"
        "  \"Transfer-Encoding\": \"chunked\"\n"
        "  body=\"ab\"\n"
        "end=127 method=GET HTTP/1.1 keep_alive=0 upgrade=0 path=\"/3\" query=NULL\n"
        "  \"Connection\": \"close\"\n"
        "  body=NULL\n");
    result_free(&res);
  }
}

static void test_bodies(void) {
  result_t r;
  {
    static const char req[] = "POST /x HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world";
    run_all(req, sizeof(req) - 1, 11, &r, "content-length body");
    CHECK_INT(r.err, 0);
    CHECK_TEXT(
        &r, "end=51 method=POST HTTP/1.1 keep_alive=1 upgrade=0 path=\"/x\" query=NULL\n"
            "  \"Content-Length\": \"11\"\n"
            "  body=\"hello world\"\n");
    result_free(&r);
    /* one byte over the limit: 413 from the declared length */
    run_all(req, sizeof(req) - 1, 10, &r, "content-length over");
    CHECK_INT(r.err, HD_ELIMIT);
    CHECK_INT(r.status, 413);
    CHECK_INT(r.nreq, 0);
    result_free(&r);
  }
  {
    static const char req[] = "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
    run_all(req, sizeof(req) - 1, 11, &r, "chunked body");
    CHECK_INT(r.err, 0);
    CHECK_INT(r.nreq, 1);
    CHECK(strstr(r.text.s, "body=\"hello world\"") != NULL);
    result_free(&r);
    run_all(req, sizeof(req) - 1, 10, &r, "chunked over");
    CHECK_INT(r.err, HD_ELIMIT);
    CHECK_INT(r.status, 413);
    CHECK_INT(r.nreq, 0);
    result_free(&r);
  }
  { /* a large body (buffer growth) */
    str_t s = {0};
    char *body = malloc(100000);
    result_t w;
    size_t cuts[3] = {10, 5000, 70000};
    for (size_t i = 0; i < 100000; i++) body[i] = (char)('a' + i % 26);
    sputs(&s, "POST /big HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
    sput(&s, body, 100000);
    run(s.s, s.len, NULL, 0, 100000, &w);
    CHECK_INT(w.err, 0);
    CHECK_INT(w.nreq, 1);
    run(s.s, s.len, cuts, 3, 100000, &r);
    same(&r, &w, "large body");
    result_free(&r);
    result_free(&w);
    free(body);
    free(s.s);
  }
}

static void test_limits(void) {
  result_t r;
  str_t s = {0};

  { /* head exactly HD_HTTP_MAX_HEAD bytes: accepted; one more: 431 */
    size_t fixed = strlen("GET / HTTP/1.1\r\nX-Pad: \r\n\r\n");
    sputs(&s, "GET / HTTP/1.1\r\nX-Pad: ");
    for (size_t i = 0; i < HD_HTTP_MAX_HEAD - fixed; i++) sput(&s, "p", 1);
    sputs(&s, "\r\n\r\n");
    CHECK_INT(s.len, HD_HTTP_MAX_HEAD);
    run_all(s.s, s.len, 0, &r, "head at the limit");
    CHECK_INT(r.err, 0);
    CHECK_INT(r.nreq, 1);
    result_free(&r);
    s.len = 0;
    sputs(&s, "GET / HTTP/1.1\r\nX-Pad: ");
    for (size_t i = 0; i < HD_HTTP_MAX_HEAD - fixed + 1; i++) sput(&s, "p", 1);
    sputs(&s, "\r\n\r\n");
    run_all(s.s, s.len, 0, &r, "head over the limit");
    CHECK_INT(r.err, HD_ELIMIT);
    CHECK_INT(r.status, 431);
    result_free(&r);
  }
  { /* a never-ending header line: 431 after at most HD_HTTP_MAX_HEAD bytes */
    hd_http_parser_t *p = hd_http_parser_new(0);
    size_t total = 0, consumed = 0;
    int rc = 0;
    static const char start[] = "GET / HTTP/1.1\r\nX-Long: ";
    rc = hd_http_parser_feed(p, (const uint8_t *)start, sizeof(start) - 1, &consumed);
    total += consumed;
    while (rc == 0 && total < 3 * HD_HTTP_MAX_HEAD) {
      rc = hd_http_parser_feed(p, (const uint8_t *)"x", 1, &consumed);
      total += consumed;
    }
    CHECK_INT(rc, HD_ELIMIT);
    CHECK_INT(hd_http_parser_status(p), 431);
    CHECK(total <= HD_HTTP_MAX_HEAD);
    hd_http_parser_free(p);
  }
  { /* a long URL */
    s.len = 0;
    sputs(&s, "GET /");
    for (int i = 0; i < 9000; i++) sput(&s, "u", 1);
    sputs(&s, " HTTP/1.1\r\n\r\n");
    run_all(s.s, s.len, 0, &r, "long url");
    CHECK_INT(r.err, HD_ELIMIT);
    CHECK_INT(r.status, 431);
    result_free(&r);
  }
  { /* 100 header lines: fine; 101: 431 */
    for (int lines = 99; lines <= 102; lines++) {
      s.len = 0;
      sputs(&s, "GET / HTTP/1.1\r\n");
      for (int i = 0; i < lines; i++) {
        char line[32];
        snprintf(line, sizeof(line), "X-H%d: %d\r\n", i, i);
        sputs(&s, line);
      }
      sputs(&s, "\r\n");
      run(s.s, s.len, NULL, 0, 0, &r);
      if (lines <= HD_HTTP_MAX_HEADERS) {
        CHECK_INT(r.err, 0);
        CHECK_INT(r.nreq, 1);
      } else {
        CHECK_INT(r.err, HD_ELIMIT);
        CHECK_INT(r.status, 431);
      }
      result_free(&r);
      if (lines == 101) {
        run_all(s.s, s.len, 0, &r, "101 headers");
        CHECK_INT(r.status, 431);
        result_free(&r);
      }
    }
  }
  free(s.s);
}

/* The outcome must not depend on the segmentation even when a request breaks two
 * rules at once: here the 101st header line (over HD_HTTP_MAX_HEADERS: 431) also
 * has an invalid name (llhttp: 400). Whatever the answer, it must be the same
 * whole, at every split point and byte by byte. */
static void test_header_limit_split(void) {
  str_t s = {0};
  result_t r;

  sputs(&s, "GET / HTTP/1.1\r\n");
  for (int i = 0; i < HD_HTTP_MAX_HEADERS; i++) {
    char line[32];
    snprintf(line, sizeof(line), "X-H%d: %d\r\n", i, i);
    sputs(&s, line);
  }
  sputs(&s, "Bad\x01Name: v\r\n\r\n");
  run_all(s.s, s.len, 0, &r, "101st header line malformed");
  CHECK(r.err == HD_EPROTO || r.err == HD_ELIMIT);
  CHECK_INT(r.nreq, 0);
  result_free(&r);
  free(s.s);
}

static void test_garbage(void) {
  static const char *bad[] = {
      "HELLO WORLD\r\n\r\n",
      "\x01\x02\x03\r\n\r\n",
      "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
      "GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
      "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      "GET / HTTP/1.1\r\nHo\x01st: h\r\n\r\n",
      "GET /\x7f HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "GET / XTTP/1.1\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    result_t r;
    char name[32];
    snprintf(name, sizeof(name), "garbage %zu", i);
    run_all(bad[i], strlen(bad[i]), 100, &r, name);
    CHECK_INT(r.err, HD_EPROTO);
    CHECK_INT(r.status, 400);
    CHECK_INT(r.nreq, 0);
    if (r.err != HD_EPROTO) fprintf(stderr, "  case %s: %s", name, r.text.s);
    result_free(&r);
  }
}

/* An upgrade request followed by the first frame bytes in the same read. */
static void test_upgrade_trailing(void) {
  static const char head[] = "GET /ws HTTP/1.1\r\n"
                             "Host: h\r\n"
                             "Upgrade: websocket\r\n"
                             "Connection: Upgrade\r\n"
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                             "Sec-WebSocket-Version: 13\r\n"
                             "\r\n";
  char buf[300];
  size_t hlen = sizeof(head) - 1;
  result_t r;

  memcpy(buf, head, hlen);
  memcpy(buf + hlen, "\x81\x85\x01\x02\x03\x04iiiii\x88\x80\x00\x00\x00\x00", 17);
  run_all(buf, hlen + 17, 0, &r, "upgrade with frames");
  CHECK_INT(r.err, 0);
  CHECK_INT(r.nreq, 1);
  CHECK_INT(r.upgrade_end, hlen);
  CHECK(strstr(r.text.s, "upgrade=1") != NULL);
  result_free(&r);
  {
    hd_http_parser_t *p = hd_http_parser_new(0);
    size_t consumed = 0;
    int rc = hd_http_parser_feed(p, (const uint8_t *)buf, hlen + 17, &consumed);
    CHECK_INT(rc, 1);
    CHECK_INT(consumed, hlen);
    CHECK(hd_http_parser_request(p)->upgrade);
    CHECK(!hd_http_parser_busy(p));
    hd_http_parser_free(p);
  }
}

static void test_token_list(void) {
  static const struct {
    const char *value, *token;
    bool want;
  } t[] = {
      {"Upgrade", "upgrade", true},
      {"upgrade", "upgrade", true},
      {"UPGRADE", "upgrade", true},
      {"keep-alive, Upgrade", "upgrade", true},
      {"keep-alive,Upgrade", "upgrade", true},
      {"Upgrade, keep-alive", "upgrade", true},
      {"  upgrade  ", "upgrade", true},
      {"\tupgrade\t,x", "upgrade", true},
      {",,upgrade,,", "upgrade", true},
      {"a, b ,  upgrade ,c", "upgrade", true},
      {"keep-alive", "upgrade", false},
      {"upgrades", "upgrade", false},
      {"xupgrade", "upgrade", false},
      {"up grade", "upgrade", false},
      {"upgrade-x, keep-alive", "upgrade", false},
      {"", "upgrade", false},
      {",", "upgrade", false},
      {"websocket", "websocket", true},
      {"WebSocket", "websocket", true},
      {"h2c, WebSocket", "websocket", true},
      {"websocket/13", "websocket", false},
      {"chat, herald.v1", "herald.v1", true},
      {"herald.v2, herald.v10", "herald.v1", false},
  };
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
    bool got = hd_http_token_list_has(t[i].value, strlen(t[i].value), t[i].token);
    CHECK_INT(got, t[i].want);
    if (got != t[i].want)
      fprintf(stderr, "  \"%s\" has \"%s\"\n", t[i].value, t[i].token);
  }
  /* the length bounds the value: a match beyond len does not count */
  CHECK(!hd_http_token_list_has("keep-alive, upgrade", 11, "upgrade"));
  CHECK(hd_http_token_list_has("upgrade, x", 7, "upgrade"));
  CHECK(!hd_http_token_list_has("upgradeX", 7 + 1, "upgrade"));
}

static void test_query_get(void) {
  static const struct {
    const char *query, *key;
    size_t cap;
    int rc;
    const char *value;
  } t[] = {
      {"token=abc", "token", 64, 3, "abc"},
      {"a=1&token=abc&b=2", "token", 64, 3, "abc"},
      {"a=1&b=2", "token", 64, HD_ENOENT, NULL},
      {"", "token", 64, HD_ENOENT, NULL},
      {"tokenx=1&token=2", "token", 64, 1, "2"},
      {"tok=1&token=2", "token", 64, 1, "2"},
      {"xtoken=1", "token", 64, HD_ENOENT, NULL},
      {"token", "token", 64, 0, ""},
      {"token=", "token", 64, 0, ""},
      {"token=&x=1", "token", 64, 0, ""},
      {"token=a%20b", "token", 64, 3, "a b"},
      {"token=a+b", "token", 64, 3, "a b"},
      {"token=%2B%2b%41%7e", "token", 64, 4, "++A~"},
      {"token=%e2%82%ac", "token", 64, 3, "\xE2\x82\xAC"},
      {"token=%", "token", 64, HD_EPROTO, NULL},
      {"token=%4", "token", 64, HD_EPROTO, NULL},
      {"token=%4g", "token", 64, HD_EPROTO, NULL},
      {"token=%G1", "token", 64, HD_EPROTO, NULL},
      {"token=ab%&x=1", "token", 64, HD_EPROTO, NULL},
      {"token=12345", "token", 6, 5, "12345"},
      {"token=123456", "token", 6, HD_ELIMIT, NULL},
      {"token=%41%41%41%41%41%41", "token", 6, HD_ELIMIT, NULL},
      {"token=%41%41%41%41%41", "token", 6, 5, "AAAAA"},
      {"token=a=b", "token", 64, 3, "a=b"},
      {"token=1&token=2", "token", 64, 1, "1"},
      {"Token=1", "token", 64, HD_ENOENT, NULL},
      {"a&token=x%26y", "token", 64, 3, "x&y"},
  };
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
    char out[64];
    int rc;
    memset(out, 'Z', sizeof(out));
    rc = hd_http_query_get(t[i].query, strlen(t[i].query), t[i].key, out, t[i].cap);
    CHECK_INT(rc, t[i].rc);
    if (rc != t[i].rc)
      fprintf(stderr, "  query \"%s\" key \"%s\"\n", t[i].query, t[i].key);
    if (t[i].value && rc >= 0) {
      CHECK_STR(out, t[i].value);
      CHECK_INT(out[rc], 0);
    }
  }
  { /* the length bounds the query; NULL query */
    char out[16];
    CHECK_INT(hd_http_query_get("token=abcdef", 9, "token", out, sizeof(out)), 3);
    CHECK_STR(out, "abc");
    CHECK_INT(hd_http_query_get("a=1&token=x", 3, "token", out, sizeof(out)), HD_ENOENT);
    CHECK_INT(hd_http_query_get(NULL, 0, "token", out, sizeof(out)), HD_ENOENT);
    CHECK_INT(hd_http_query_get("token=%41", 8, "token", out, sizeof(out)), HD_EPROTO);
  }
  { /* through the parser: the query of a real request */
    static const char req[] = "GET /ws?x=1&token=a%2Fb+c HTTP/1.1\r\nHost: h\r\n\r\n";
    int rc;
    size_t consumed;
    char out[32];
    hd_http_parser_t *p = parse1(req, 0, &rc, &consumed);
    const hd_http_req_t *r = hd_http_parser_request(p);
    CHECK_INT(rc, 1);
    CHECK_INT(hd_http_query_get(r->query, r->query_len, "token", out, sizeof(out)), 5);
    CHECK_STR(out, "a/b c");
    hd_http_parser_free(p);
  }
}

/* Random chunkings of a mixed pipelined stream agree with the whole run. */
static void test_random_chunks(void) {
  static const char stream[] =
      "GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-A:  1 \r\n\r\n"
      "POST /p HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody"
      "POST /q HTTP/1.1\r\nTransfer-Encoding: "
      "chunked\r\n\r\n3\r\nabc\r\n1\r\nd\r\n0\r\nX-Trailer: t\r\n\r\n"
      "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: "
      "upgrade\r\n\r\n\x81\x80";
  result_t whole, r;
  uint64_t seed = 99;
  size_t n = sizeof(stream) - 1;

  run(stream, n, NULL, 0, 100, &whole);
  CHECK_INT(whole.nreq, 4);
  CHECK_INT(whole.err, 0);
  CHECK_INT(whole.upgrade_end, n - 2);
  for (int it = 0; it < 2000; it++) {
    size_t cuts[64], nc = 0, pos = 0;
    while (nc < 64) {
      seed = seed * 6364136223846793005u + 1442695040888963407u;
      pos += 1 + (size_t)(seed >> 33) % 30;
      if (pos >= n) break;
      cuts[nc++] = pos;
    }
    run(stream, n, cuts, nc, 100, &r);
    if (!same(&r, &whole, "random chunks")) it = 2000;
    result_free(&r);
  }
  result_free(&whole);
}

int main(void) {
  test_simple_get();
  test_header_find();
  test_pipelining();
  test_bodies();
  test_limits();
  test_header_limit_split();
  test_garbage();
  test_upgrade_trailing();
  test_token_list();
  test_query_get();
  test_random_chunks();
  TEST_MAIN_END();
}
