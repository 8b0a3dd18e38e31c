/* Tests for src/proto/handshake.c: the server side of the RFC 6455 opening
 * handshake. Requests are parsed through hd_http_parser (whole and split at every
 * byte boundary, which must not change the outcome) to get the hd_http_req_t. */
#include <stdbool.h>
#include <stdint.h>

#include "herald/herald.h"
#include "proto/handshake.h"
#include "proto/http.h"
#include "support/unit.h"

#define KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

/* Parses req (fed in two pieces split at cut; cut == 0 means whole) and checks
 * the handshake. Returns the return code; *hs is filled. */
static int check_req(const char *req, size_t cut, hd_ws_handshake_t *hs, bool *parsed) {
  hd_http_parser_t *p = hd_http_parser_new(0);
  size_t n = strlen(req), consumed = 0, off = 0;
  int rc = 0;

  *parsed = false;
  memset(hs, 0xAB, sizeof(*hs));
  if (cut > 0 && cut < n) {
    uint8_t *a = malloc(cut);
    memcpy(a, req, cut);
    rc = hd_http_parser_feed(p, a, cut, &consumed);
    free(a);
    off = cut;
  }
  if (rc == 0) {
    uint8_t *b = malloc(n - off + 1);
    memcpy(b, req + off, n - off);
    rc = hd_http_parser_feed(p, b, n - off, &consumed);
    free(b);
  }
  if (rc == 1) {
    *parsed = true;
    rc = hd_ws_handshake_check(hd_http_parser_request(p), hs);
  }
  hd_http_parser_free(p);
  return rc;
}

typedef struct {
  const char *name;
  const char *req;
  int status;    /* 101, 400 or 426 */
  bool protocol; /* herald.v1 selected (101 only) */
} hs_case_t;

#define GOOD_HEAD "GET /ws HTTP/1.1\r\nHost: example.com\r\n"
#define UPG       "Upgrade: websocket\r\n"
#define CONN      "Connection: Upgrade\r\n"
#define VER       "Sec-WebSocket-Version: 13\r\n"
#define SKEY      "Sec-WebSocket-Key: " KEY "\r\n"
#define END       "\r\n"

static const hs_case_t cases[] = {
    {"RFC 6455 example", GOOD_HEAD UPG CONN SKEY VER END, 101, false},
    {"RFC 6455 1.2 example with protocols",
     "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
     "Connection: Upgrade\r\nSec-WebSocket-Key: " KEY "\r\nOrigin: http://example.com\r\n"
     "Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n",
     101, false},
    {"POST",
     "POST /ws HTTP/1.1\r\nHost: h\r\n" UPG CONN SKEY VER "Content-Length: 0\r\n" END,
     400, false},
    {"HEAD", "HEAD /ws HTTP/1.1\r\nHost: h\r\n" UPG CONN SKEY VER END, 400, false},
    {"HTTP/1.0", "GET /ws HTTP/1.0\r\nHost: h\r\n" UPG CONN SKEY VER END, 400, false},
    {"missing Host", "GET /ws HTTP/1.1\r\n" UPG CONN SKEY VER END, 400, false},
    {"two Host headers", GOOD_HEAD "Host: other\r\n" UPG CONN SKEY VER END, 400, false},
    {"missing Upgrade", GOOD_HEAD CONN SKEY VER END, 400, false},
    {"Upgrade: h2c", GOOD_HEAD "Upgrade: h2c\r\n" CONN SKEY VER END, 400, false},
    {"missing Connection", GOOD_HEAD UPG SKEY VER END, 400, false},
    {"Connection: keep-alive", GOOD_HEAD UPG "Connection: keep-alive\r\n" SKEY VER END,
     400, false},
    {"Connection: keep-alive, Upgrade",
     GOOD_HEAD UPG "Connection: keep-alive, Upgrade\r\n" SKEY VER END, 101, false},
    {"Connection: upgrade (lower case)",
     GOOD_HEAD UPG "connection: upgrade\r\n" SKEY VER END, 101, false},
    {"Upgrade: WebSocket", GOOD_HEAD "Upgrade: WebSocket\r\n" CONN SKEY VER END, 101,
     false},
    {"Upgrade list", GOOD_HEAD "UPGRADE: foo/2, websocket\r\n" CONN SKEY VER END, 101,
     false},
    {"header names in odd case",
     "GET /ws HTTP/1.1\r\nhOsT: h\r\nuPgRaDe: websocket\r\ncOnNeCtIoN: Upgrade\r\n"
     "SEC-WEBSOCKET-KEY: " KEY "\r\nsec-websocket-version: 13\r\n\r\n",
     101, false},
    {"missing key", GOOD_HEAD UPG CONN VER END, 400, false},
    {"key not base64",
     GOOD_HEAD UPG CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ*==\r\n" VER END, 400,
     false},
    {"key too short",
     GOOD_HEAD UPG CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j\r\n" VER END, 400,
     false},
    {"key too long (20 bytes)",
     GOOD_HEAD UPG CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZTEyMw==\r\n" VER END,
     400, false},
    {"key 15 bytes",
     GOOD_HEAD UPG CONN "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2Rl\r\n" VER END, 400,
     false},
    {"key 17 bytes (24 chars)",
     GOOD_HEAD UPG CONN "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZmc=\r\n" VER END, 400,
     false},
    {"another valid key",
     GOOD_HEAD UPG CONN "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\n" VER END, 101,
     false},
    {"key in a second header",
     GOOD_HEAD UPG CONN "Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\n" SKEY VER END,
     400, false},
    {"key without padding",
     GOOD_HEAD UPG CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n" VER END, 400,
     false},
    {"key with nonzero pad bits",
     GOOD_HEAD UPG CONN "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n" VER END, 400,
     false},
    {"key twice", GOOD_HEAD UPG CONN SKEY SKEY VER END, 400, false},
    {"key empty", GOOD_HEAD UPG CONN "Sec-WebSocket-Key: \r\n" VER END, 400, false},
    {"key with blanks around",
     GOOD_HEAD UPG CONN "Sec-WebSocket-Key:   " KEY "  \r\n" VER END, 101, false},
    {"version 8", GOOD_HEAD UPG CONN SKEY "Sec-WebSocket-Version: 8\r\n" END, 426, false},
    {"version 130", GOOD_HEAD UPG CONN SKEY "Sec-WebSocket-Version: 130\r\n" END, 426,
     false},
    {"version twice", GOOD_HEAD UPG CONN SKEY VER VER END, 426, false},
    {"missing version", GOOD_HEAD UPG CONN SKEY END, 426, false},
    {"herald.v1 alone",
     GOOD_HEAD UPG CONN SKEY VER "Sec-WebSocket-Protocol: herald.v1\r\n" END, 101, true},
    {"herald.v1 in a list",
     GOOD_HEAD UPG CONN SKEY VER "Sec-WebSocket-Protocol: chat, herald.v1 , x\r\n" END,
     101, true},
    {"herald.v1 in a second header",
     GOOD_HEAD UPG CONN SKEY VER "Sec-WebSocket-Protocol: chat\r\n"
                                 "sec-websocket-protocol: herald.v1\r\n" END,
     101, true},
    {"other protocols only",
     GOOD_HEAD UPG CONN SKEY VER "Sec-WebSocket-Protocol: herald.v2, herald\r\n" END, 101,
     false},
    {"protocol token case",
     GOOD_HEAD UPG CONN SKEY VER "Sec-WebSocket-Protocol: HERALD.V1\r\n" END, 101, true},
    {"extensions offered (ignored)",
     GOOD_HEAD UPG CONN SKEY VER
     "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" END,
     101, false},
};

static void test_cases(void) {
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const hs_case_t *c = &cases[i];
    size_t n = strlen(c->req);
    int want_rc = c->status == 101 ? 0 : HD_EPROTO;
    for (size_t cut = 0; cut < n; cut++) {
      hd_ws_handshake_t hs;
      bool parsed;
      int rc = check_req(c->req, cut, &hs, &parsed);
      bool ok = parsed && rc == want_rc && hs.status == c->status &&
                (c->status != 101 || (hs.protocol == c->protocol && hs.error == NULL)) &&
                (c->status == 101 || (hs.error != NULL && hs.error[0] != '\0'));
      hd_test_checks++;
      if (!ok) {
        hd_test_failures++;
        fprintf(stderr,
                "%s (cut %zu): expected rc %d status %d protocol %d, got parsed %d rc %d "
                "status %d protocol %d error %s\n",
                c->name, cut, want_rc, c->status, c->protocol, parsed, rc, hs.status,
                hs.protocol, parsed && hs.status != 101 && hs.error ? hs.error : "-");
        break;
      }
      if (c->status == 101 && strstr(c->req, KEY)) {
        CHECK_STR(hs.accept, ACCEPT);
        if (strcmp(hs.accept, ACCEPT) != 0) break;
      }
    }
  }
}

static void test_accept_key(void) {
  char out[29];
  hd_ws_accept_key(KEY, strlen(KEY), out);
  CHECK_STR(out, ACCEPT);
  CHECK_INT(strlen(out), 28);
  /* another known pair (computed with Python: base64(sha1(key + GUID))) */
  hd_ws_accept_key("x3JJHMbDL1EzLkh9GBhXDw==", 24, out);
  CHECK_STR(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
  /* the key is used byte for byte, whatever it contains */
  hd_ws_accept_key("", 0, out);
  CHECK_INT(strlen(out), 28);
  CHECK(strcmp(out, ACCEPT) != 0);
}

static void test_response(void) {
  hd_ws_handshake_t hs;
  bool parsed;
  char out[512];
  size_t n;

  CHECK_INT(check_req(GOOD_HEAD UPG CONN SKEY VER END, 0, &hs, &parsed), 0);
  n = hd_ws_handshake_response(&hs, out, sizeof(out));
  CHECK(n > 0);
  CHECK_INT(strlen(out), n);
  CHECK_STR(out, "HTTP/1.1 101 Switching Protocols\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                 "\r\n");
  CHECK(strstr(out, "Sec-WebSocket-Protocol") == NULL);
  CHECK(strstr(out, "Sec-WebSocket-Extensions") == NULL);
  /* too small a buffer: 0 */
  CHECK_INT(hd_ws_handshake_response(&hs, out, n), 0);
  CHECK_INT(hd_ws_handshake_response(&hs, out, n + 1), n);

  CHECK_INT(check_req(GOOD_HEAD UPG CONN SKEY VER
                      "Sec-WebSocket-Protocol: chat, herald.v1\r\n"
                      "Sec-WebSocket-Extensions: permessage-deflate\r\n" END,
                      0, &hs, &parsed),
            0);
  CHECK(hs.protocol);
  n = hd_ws_handshake_response(&hs, out, sizeof(out));
  CHECK(n > 0);
  CHECK(strstr(out, "Sec-WebSocket-Accept: " ACCEPT "\r\n") != NULL);
  CHECK(strstr(out, "\r\nSec-WebSocket-Protocol: herald.v1\r\n") != NULL);
  CHECK(strstr(out, "Sec-WebSocket-Extensions") == NULL);
  CHECK(strncmp(out, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
  CHECK(n >= 4 && memcmp(out + n - 4, "\r\n\r\n", 4) == 0);
  /* each header line once */
  CHECK(strstr(strstr(out, "Upgrade: websocket") + 1, "Upgrade: websocket") == NULL);
}

/* The error strings name the reason (snake_case) and statuses match. */
static void test_errors(void) {
  static const struct {
    const char *req;
    const char *error;
  } t[] = {
      {"POST /ws HTTP/1.1\r\nHost: h\r\n" UPG CONN SKEY VER "Content-Length: 0\r\n" END,
       "method_not_get"},
      {"GET /ws HTTP/1.0\r\nHost: h\r\n" UPG CONN SKEY VER END, "http_version"},
      {"GET /ws HTTP/1.1\r\n" UPG CONN SKEY VER END, "missing_host"},
      {GOOD_HEAD CONN SKEY VER END, "not_websocket_upgrade"},
      {GOOD_HEAD UPG SKEY VER END, "connection_not_upgrade"},
      {GOOD_HEAD UPG CONN SKEY END, "missing_version"},
      {GOOD_HEAD UPG CONN SKEY "Sec-WebSocket-Version: 8\r\n" END, "unsupported_version"},
      {GOOD_HEAD UPG CONN VER END, "bad_websocket_key"},
  };
  for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
    hd_ws_handshake_t hs;
    bool parsed;
    CHECK_INT(check_req(t[i].req, 0, &hs, &parsed), HD_EPROTO);
    CHECK(parsed);
    CHECK_STR(hs.error, t[i].error);
    for (const char *e = hs.error; e && *e; e++)
      CHECK((*e >= 'a' && *e <= 'z') || *e == '_');
  }
}

int main(void) {
  test_cases();
  test_accept_key();
  test_response();
  test_errors();
  TEST_MAIN_END();
}
