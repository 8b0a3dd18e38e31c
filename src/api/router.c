/* The HTTP router: maps a complete request to its handler.
 *
 *   GET  /health            liveness: {"status":"ok","version":..,"uptime_s":..}
 *   GET  /ws-health         the manager's view; 503 while draining
 *   GET  /metrics           Prometheus text
 *   GET  /ws                the client WebSocket (src/api/client.c)
 *   *    /api/v1/...        the backend API (src/api/backend.c)
 *   POST /auth/login        the embedded identity provider (src/api/login.c)
 *   GET  <echo-path>        the RFC 6455 echo endpoint, when configured
 *   GET  /, /app.js, ...    the chat page (src/api/static.c)
 *   anything else           404 with a JSON error body
 */
#include <stdio.h>
#include <string.h>

#include "herald/herald.h"
#include "net/net.h"

static bool path_is(const hd_http_req_t *req, const char *path) {
  size_t n = strlen(path);
  return req->path_len == n && memcmp(req->path, path, n) == 0;
}

static bool get_only(hd_conn_t *c, const hd_http_req_t *req) {
  if (req->method == HTTP_GET) return true;
  hd_conn_respond_error(c, 405, "method_not_allowed", "use GET", req->keep_alive);
  return false;
}

static void health(hd_conn_t *c, const hd_http_req_t *req) {
  hd_server_t *srv = c->w->srv;
  char body[160];
  uint64_t up = uv_hrtime() / 1000000 - srv->started_ms;

  snprintf(body, sizeof(body), "{\"status\":\"ok\",\"version\":\"%s\",\"uptime_s\":%llu}",
           HD_VERSION_STRING, (unsigned long long)(up / 1000));
  hd_conn_respond_json(c, 200, body, req->keep_alive);
}

void hd_api_handle(hd_conn_t *c, const hd_http_req_t *req) {
  const hd_config_t *cfg = c->w->srv->cfg;
  static const char api[] = "/api/v1/";

  if (path_is(req, "/health")) {
    if (get_only(c, req)) health(c, req);
  } else if (path_is(req, "/ws")) {
    hd_client_upgrade(c, req);
  } else if (path_is(req, "/ws-health")) {
    if (get_only(c, req)) hd_api_ws_health(c, req);
  } else if (path_is(req, "/metrics")) {
    if (get_only(c, req)) hd_api_metrics(c, req);
  } else if (req->path_len > sizeof(api) - 1 &&
             memcmp(req->path, api, sizeof(api) - 1) == 0) {
    hd_api_backend(c, req, req->path + sizeof(api) - 2,
                   req->path_len - (sizeof(api) - 2));
  } else if (path_is(req, "/auth/login")) {
    hd_api_login(c, req);
  } else if (cfg->echo_path && path_is(req, cfg->echo_path)) {
    hd_conn_upgrade(c, req, HD_EP_ECHO);
  } else if (!hd_api_static(c, req)) {
    hd_conn_respond_error(c, 404, "not_found", "no such path", req->keep_alive);
  }
}
