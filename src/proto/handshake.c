/* RFC 6455 section 4.2.1 (reading the client's handshake) and 4.2.2 (the
 * server's answer). The accept value is SHA-1 over the key and the protocol's
 * GUID, base64-encoded: OpenSSL does both. */
#include "proto/handshake.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "herald/herald.h"

static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

static int reject(hd_ws_handshake_t *hs, int status, const char *error) {
  hs->status = status;
  hs->error = error;
  return HD_EPROTO;
}

static bool b64char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
         c == '+' || c == '/';
}

/* A 16-byte value in base64 is 22 symbols and "==" (RFC 6455 4.1, item 7). The
 * last symbol carries 2 bits of data and 4 zero bits: one of AQgw. */
static bool valid_key(const char *k, size_t n) {
  if (n != 24 || k[22] != '=' || k[23] != '=') return false;
  for (size_t i = 0; i < 22; i++)
    if (!b64char(k[i])) return false;
  return strchr("AQgw", k[21]) != NULL;
}

/* A list-valued header may be split over several lines (RFC 9110 5.3): true
 * if any line named name lists token. */
static bool any_has(const hd_http_req_t *req, const char *name, const char *token) {
  size_t n = strlen(name);
  for (size_t i = 0; i < req->nheaders; i++) {
    const hd_http_header_t *h = &req->headers[i];
    if (h->name_len == n && strncasecmp(h->name, name, n) == 0 &&
        hd_http_token_list_has(h->value, h->value_len, token))
      return true;
  }
  return false;
}

void hd_ws_accept_key(const char *key, size_t len, char out[29]) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  EVP_MD_CTX *c = EVP_MD_CTX_new();

  /* On allocation failure the accept value is left empty; the client then
   * fails the handshake, which is the right outcome. */
  out[0] = '\0';
  if (c == NULL) return;
  if (EVP_DigestInit_ex(c, EVP_sha1(), NULL) && EVP_DigestUpdate(c, key, len) &&
      EVP_DigestUpdate(c, guid, sizeof(guid) - 1) && EVP_DigestFinal_ex(c, digest, &dlen))
    EVP_EncodeBlock((unsigned char *)out, digest, (int)dlen);
  EVP_MD_CTX_free(c);
}

int hd_ws_handshake_check(const hd_http_req_t *req, hd_ws_handshake_t *hs) {
  const hd_http_header_t *h;
  size_t n;

  memset(hs, 0, sizeof(*hs));
  if (req->method != HTTP_GET) return reject(hs, 400, "method_not_get");
  if (req->http_major < 1 || (req->http_major == 1 && req->http_minor < 1))
    return reject(hs, 400, "http_version");
  if (hd_http_header_find(req, "host", &n) == NULL || n != 1)
    return reject(hs, 400, "missing_host");
  if (!any_has(req, "upgrade", "websocket"))
    return reject(hs, 400, "not_websocket_upgrade");
  if (!any_has(req, "connection", "upgrade"))
    return reject(hs, 400, "connection_not_upgrade");
  h = hd_http_header_find(req, "sec-websocket-version", &n);
  if (h == NULL) return reject(hs, 426, "missing_version");
  if (n != 1 || h->value_len != 2 || memcmp(h->value, "13", 2) != 0)
    return reject(hs, 426, "unsupported_version");
  h = hd_http_header_find(req, "sec-websocket-key", &n);
  if (h == NULL || n != 1 || !valid_key(h->value, h->value_len))
    return reject(hs, 400, "bad_websocket_key");
  hd_ws_accept_key(h->value, h->value_len, hs->accept);

  hs->protocol = any_has(req, "sec-websocket-protocol", HD_WS_SUBPROTOCOL);
  hs->status = 101;
  return 0;
}

size_t hd_ws_handshake_response(const hd_ws_handshake_t *hs, char *out, size_t cap) {
  int n =
      snprintf(out, cap,
               "HTTP/1.1 101 Switching Protocols\r\n"
               "Upgrade: websocket\r\n"
               "Connection: Upgrade\r\n"
               "Sec-WebSocket-Accept: %s\r\n"
               "%s"
               "\r\n",
               hs->accept,
               hs->protocol ? "Sec-WebSocket-Protocol: " HD_WS_SUBPROTOCOL "\r\n" : "");
  return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
