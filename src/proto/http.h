/* HTTP/1.1 request parsing on llhttp, with Herald's limits. No I/O.
 *
 * hd_http_parser_feed() takes request bytes in pieces of any size and stops at
 * the end of each request, so pipelined requests are handled one at a time and
 * bytes after an Upgrade request are left to the caller (the first WebSocket
 * frames may share a segment with the handshake). The request's URL, header
 * names and values are copied into the parser's own storage, so the caller's
 * read buffer may be reused between calls.
 *
 * Limits, each with the status the caller should answer:
 *   - request line + headers over HD_HTTP_MAX_HEAD bytes, or more than
 *     HD_HTTP_MAX_HEADERS header lines: 431;
 *   - body over max_body (declared Content-Length or chunked total): 413;
 *   - anything llhttp rejects: 400.
 */
#ifndef HD_PROTO_HTTP_H
#define HD_PROTO_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include <llhttp.h>

#define HD_HTTP_MAX_HEAD    8192
#define HD_HTTP_MAX_HEADERS 100

typedef struct {
  const char *name; /* not NUL-terminated */
  size_t name_len;
  const char *value; /* not NUL-terminated, leading/trailing blanks removed */
  size_t value_len;
} hd_http_header_t;

typedef struct {
  unsigned method; /* llhttp_method_t: HTTP_GET, HTTP_POST, ... */
  unsigned http_major;
  unsigned http_minor;
  bool keep_alive;  /* the connection may carry another request */
  bool upgrade;     /* the request asked for a protocol upgrade */
  const char *path; /* URL up to '?', not NUL-terminated */
  size_t path_len;
  const char *query; /* after '?', or NULL */
  size_t query_len;
  const hd_http_header_t *headers;
  size_t nheaders;
  const uint8_t *body; /* NULL when empty */
  size_t body_len;
} hd_http_req_t;

typedef struct hd_http_parser_s hd_http_parser_t;

/* Allocates a parser. max_body is the body limit in bytes. NULL on OOM. */
hd_http_parser_t *hd_http_parser_new(size_t max_body);
void hd_http_parser_free(hd_http_parser_t *p);

/* Feeds bytes. Returns 1 when a complete request is ready (see
 * hd_http_parser_request(); *consumed is where it ended), 0 when all bytes were
 * consumed without completing one, or HD_EPROTO / HD_ELIMIT on a bad request
 * (hd_http_parser_status() gives 400, 413 or 431). */
int hd_http_parser_feed(hd_http_parser_t *p, const uint8_t *data, size_t len,
                        size_t *consumed);

/* The request completed by the last feed. Borrowed: valid until the next call to
 * hd_http_parser_next() or hd_http_parser_free(). */
const hd_http_req_t *hd_http_parser_request(const hd_http_parser_t *p);

/* Prepares for the next request on the same connection. */
void hd_http_parser_next(hd_http_parser_t *p);

/* The HTTP status for the last error. */
int hd_http_parser_status(const hd_http_parser_t *p);

/* True while part of a request has been received (for the request timeout). */
bool hd_http_parser_busy(const hd_http_parser_t *p);

/* Finds header name (case-insensitive). Returns the first match or NULL; when
 * count is not NULL it receives the number of headers with that name. */
const hd_http_header_t *hd_http_header_find(const hd_http_req_t *req, const char *name,
                                            size_t *count);

/* True if the comma-separated list in value contains token (case-insensitive,
 * blanks around elements ignored), as in Connection and Upgrade. */
bool hd_http_token_list_has(const char *value, size_t len, const char *token);

/* Finds key in a query string and percent-decodes its value into out (at most
 * cap - 1 bytes, NUL-terminated). Returns the decoded length, HD_ENOENT when the
 * key is absent, HD_ELIMIT when the value does not fit, HD_EPROTO on a bad
 * escape. */
int hd_http_query_get(const char *query, size_t len, const char *key, char *out,
                      size_t cap);

#endif
