/* The RFC 6455 opening handshake, server side (section 4.2). No I/O.
 *
 * hd_ws_handshake_check() decides whether a parsed HTTP request is a valid
 * WebSocket upgrade and, if so, computes Sec-WebSocket-Accept and whether the
 * herald.v1 subprotocol is selected. Extensions are never negotiated.
 */
#ifndef HD_PROTO_HANDSHAKE_H
#define HD_PROTO_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>

#include "proto/http.h"

#define HD_WS_SUBPROTOCOL "herald.v1"

typedef struct {
  int status;        /* 101 when valid; otherwise 400 or 426 */
  const char *error; /* snake_case reason when not valid (static string) */
  char accept[29];   /* base64(SHA-1(key + GUID)), NUL-terminated */
  bool protocol;     /* herald.v1 was offered and is selected */
} hd_ws_handshake_t;

/* Validates req as an upgrade: GET, HTTP/1.1 or later, Host present, Upgrade
 * containing "websocket" and Connection containing "upgrade" (token lists,
 * case-insensitive), exactly one Sec-WebSocket-Key that is base64 of 16 bytes,
 * and Sec-WebSocket-Version 13 (426 otherwise). Returns 0 and fills hs when
 * valid; HD_EPROTO with hs->status and hs->error set when not. */
int hd_ws_handshake_check(const hd_http_req_t *req, hd_ws_handshake_t *hs);

/* Writes the 101 response for a valid handshake into out. Returns its length,
 * or 0 if cap is too small (512 bytes always suffice). */
size_t hd_ws_handshake_response(const hd_ws_handshake_t *hs, char *out, size_t cap);

/* Computes the accept value for a key (any bytes) into out[29]. */
void hd_ws_accept_key(const char *key, size_t len, char out[29]);

#endif
