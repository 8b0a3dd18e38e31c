/* GET /metrics (Prometheus text exposition, version 0.0.4) and GET /ws-health.
 *
 * Counters are summed over the workers' atomic stats and the manager's; nothing
 * here takes a lock. Metric names are documented in docs/operations.md.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/net.h"

typedef struct {
  char *buf;
  size_t len, cap;
} out_t;

static void put(out_t *o, const char *fmt, ...) {
  va_list ap;
  int n;

  for (;;) {
    va_start(ap, fmt);
    n = vsnprintf(o->buf ? o->buf + o->len : NULL, o->buf ? o->cap - o->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (o->buf && o->len + (size_t)n < o->cap) {
      o->len += (size_t)n;
      return;
    }
    size_t cap = o->cap ? o->cap * 2 : 4096;
    while (cap < o->len + (size_t)n + 1) cap *= 2;
    char *b = realloc(o->buf, cap);
    if (b == NULL) return;
    o->buf = b;
    o->cap = cap;
  }
}

static void metric(out_t *o, const char *name, const char *type, const char *help,
                   unsigned long long v) {
  put(o, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name, v);
}

#define SUM(field)                                                                       \
  ({                                                                                     \
    unsigned long long s_ = 0;                                                           \
    for (int i_ = 0; i_ < srv->nworkers; i_++)                                           \
      s_ += (unsigned long long)atomic_load(&srv->workers[i_].stats.field);              \
    s_;                                                                                  \
  })

static unsigned long long rss_bytes(void) {
  unsigned long long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%llu %llu", &pages, &rss) != 2) rss = 0;
    fclose(f);
  }
  return rss * (unsigned long long)sysconf(_SC_PAGESIZE);
}

void hd_api_metrics(hd_conn_t *c, const hd_http_req_t *req) {
  hd_server_t *srv = c->w->srv;
  hd_manager_stats_t ms;
  out_t o = {0};

  hd_manager_stats(srv->manager, &ms);
  metric(&o, "herald_up", "gauge", "1 while the process serves", 1);
  metric(&o, "herald_uptime_seconds", "gauge", "Seconds since start",
         (uv_hrtime() / 1000000 - srv->started_ms) / 1000);
  metric(&o, "herald_manager_instances", "gauge", "Managers in this process (must be 1)",
         ms.instances);
  metric(&o, "herald_isolation_violations_total", "counter",
         "Frames refused at write time because they belong to another user (must be 0)",
         ms.isolation_violations);
  metric(&o, "herald_connections", "gauge", "Open TCP connections", SUM(conns));
  metric(&o, "herald_ws_connections", "gauge", "Open WebSocket connections",
         SUM(ws_conns));
  metric(&o, "herald_authenticated_connections", "gauge",
         "Authenticated client connections registered with the manager", ms.connections);
  metric(&o, "herald_users", "gauge", "Users with at least one connection", ms.users);
  metric(&o, "herald_known_users", "gauge", "Users with stream state", ms.known_users);
  metric(&o, "herald_history_events", "gauge", "Events retained for resume",
         ms.history_events);
  metric(&o, "herald_history_bytes", "gauge",
         "Memory of retained events (counted against "
         "--history-memory)",
         ms.history_bytes);
  metric(&o, "herald_history_evictions_total", "counter",
         "Events dropped from history by a count, byte, age or memory limit",
         ms.history_evictions);
  metric(&o, "herald_events_published_total", "counter",
         "Events accepted into user streams", ms.events_published);
  metric(&o, "herald_deliveries_total", "counter", "Event frames queued to connections",
         ms.deliveries);
  metric(&o, "herald_frames_written_total", "counter",
         "Event frames handed to connections by workers", SUM(frames_out));
  metric(&o, "herald_bytes_written_total", "counter", "Bytes written to sockets",
         SUM(bytes_out));
  metric(&o, "herald_connections_accepted_total", "counter", "TCP connections accepted",
         SUM(accepted));
  metric(&o, "herald_http_requests_total", "counter", "HTTP requests parsed",
         SUM(http_requests));
  metric(&o, "herald_http_errors_total", "counter",
         "HTTP answers with a status of 400 or more (bad requests, refused handshakes, "
         "API errors, failed logins)",
         SUM(http_errors));
  metric(&o, "herald_ws_upgrades_total", "counter", "Successful WebSocket handshakes",
         SUM(ws_upgrades));
  metric(&o, "herald_ws_messages_received_total", "counter", "Client WebSocket messages",
         SUM(ws_messages_in));
  metric(&o, "herald_protocol_errors_total", "counter",
         "Malformed HTTP requests, handshakes and frames", SUM(protocol_errors));
  metric(&o, "herald_auth_failures_total", "counter", "Refused tokens and missing auth",
         SUM(auth_failures));
  metric(&o, "herald_client_errors_total", "counter",
         "Error replies to client messages (bad JSON, unknown type)", SUM(client_errors));
  metric(&o, "herald_slow_consumer_closes_total", "counter",
         "Connections closed with 4008 (send queue over its limit)", SUM(slow_consumers));
  metric(&o, "herald_timeouts_total", "counter",
         "Connections closed for request, auth or heartbeat timeouts", SUM(timeouts));
  metric(&o, "herald_process_resident_memory_bytes", "gauge", "Resident set size",
         rss_bytes());
  if (o.buf == NULL) {
    hd_conn_respond_error(c, 500, "internal", "out of memory", req->keep_alive);
    return;
  }
  hd_conn_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", o.buf, o.len, NULL,
                  req->keep_alive);
  free(o.buf);
}

void hd_api_ws_health(hd_conn_t *c, const hd_http_req_t *req) {
  hd_server_t *srv = c->w->srv;
  hd_manager_stats_t ms;
  char body[256];
  bool draining = atomic_load(&srv->draining);

  hd_manager_stats(srv->manager, &ms);
  snprintf(
      body, sizeof(body),
      "{\"status\":\"%s\",\"connections\":%llu,\"users\":%llu,\"manager_instances\":%llu,"
      "\"isolation_violations\":%llu,\"workers\":%d}",
      draining ? "draining" : "ok", (unsigned long long)ms.connections,
      (unsigned long long)ms.users, (unsigned long long)ms.instances,
      (unsigned long long)ms.isolation_violations, srv->nworkers);
  hd_conn_respond_json(c, draining ? 503 : 200, body, req->keep_alive);
}
