/* GET / and the chat page's files, served from the copies embedded in the
 * binary. Every response carries a strong ETag and "Cache-Control: no-cache"
 * (revalidate each time; a matching If-None-Match gets 304), plus headers that
 * keep the page from being framed or its types sniffed. */
#include <stdio.h>
#include <string.h>

#include "api/assets.h"
#include "net/net.h"

static const char headers_fmt[] =
    "ETag: %s\r\n"
    "Cache-Control: no-cache\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "Referrer-Policy: no-referrer\r\n"
    "Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data:; frame-ancestors 'none'\r\n";

static const hd_asset_t *find(const char *path, size_t n) {
  if (n == 1 && path[0] == '/') return find("/index.html", 11);
  for (const hd_asset_t *a = hd_assets; a->path; a++)
    if (strlen(a->path) == n && memcmp(a->path, path, n) == 0) return a;
  return NULL;
}

bool hd_api_static(hd_conn_t *c, const hd_http_req_t *req) {
  const hd_asset_t *a = find(req->path, req->path_len);
  const hd_http_header_t *inm;
  char extra[512];

  if (a == NULL) return false;
  if (req->method != HTTP_GET) {
    hd_conn_respond_error(c, 405, "method_not_allowed", "use GET", req->keep_alive);
    return true;
  }
  snprintf(extra, sizeof(extra), headers_fmt, a->etag);
  inm = hd_http_header_find(req, "if-none-match", NULL);
  if (inm && inm->value_len == strlen(a->etag) &&
      memcmp(inm->value, a->etag, inm->value_len) == 0) {
    hd_conn_respond(c, 304, a->content_type, NULL, 0, extra, req->keep_alive);
    return true;
  }
  hd_conn_respond(c, 200, a->content_type, (const char *)a->data, a->len, extra,
                  req->keep_alive);
  return true;
}
