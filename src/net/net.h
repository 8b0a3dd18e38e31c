/* The network layer: workers, listeners, connections, write queues, timers.
 * The only part of Herald that calls uv_*.
 *
 * Threads. The server owns N workers; each runs its own uv loop on its own
 * thread with its own listening socket on the shared port (SO_REUSEPORT), so the
 * kernel spreads new connections across them. A connection lives on the worker
 * that accepted it for its whole life and is touched only by that worker's
 * thread. The main thread only handles signals and starts/stops the workers.
 */
#ifndef HD_NET_NET_H
#define HD_NET_NET_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "core/config.h"
#include "core/frame.h"
#include "core/manager_internal.h"
#include "proto/http.h"
#include "proto/ws.h"

typedef struct hd_server_s hd_server_t;
typedef struct hd_worker_s hd_worker_t;
typedef struct hd_conn_s hd_conn_t;

#define HD_READ_BUF (64 * 1024)

/* Per-worker counters; read by other threads for /metrics, so atomic. */
typedef struct {
  atomic_uint_fast64_t accepted;
  atomic_uint_fast64_t http_requests;
  atomic_uint_fast64_t ws_upgrades;
  atomic_uint_fast64_t ws_messages_in;
  atomic_uint_fast64_t frames_out;
  atomic_uint_fast64_t bytes_out;
  atomic_uint_fast64_t protocol_errors;
  atomic_uint_fast64_t slow_consumers;
  atomic_uint_fast64_t timeouts;
  atomic_uint_fast64_t auth_failures;
  atomic_uint_fast64_t client_errors; /* error replies to client messages */
  atomic_uint_fast64_t http_errors;   /* HTTP answers with a status >= 400 */
  atomic_int_fast64_t conns;          /* open TCP connections */
  atomic_int_fast64_t ws_conns;       /* open WebSocket connections */
} hd_worker_stats_t;

struct hd_worker_s {
  hd_server_t *srv;
  int id;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_tcp_t listener;
  uv_async_t wakeup; /* another thread has work for this worker */
  uv_mutex_t inbox_lock;
  struct hd_inbox_item_s *inbox; /* frames and closes handed over by other threads */
  size_t inbox_len, inbox_cap;
  struct hd_inbox_item_s *spare; /* the other buffer of the double-buffered inbox */
  size_t spare_cap;
  uv_timer_t sweep; /* once a second: timeouts and heartbeats */
  uv_prepare_t flush_before_poll;
  uv_check_t flush_after_poll;
  hd_conn_t *conns; /* every open connection (intrusive list) */
  hd_conn_t *dirty; /* connections with queued bytes to write this pass */
  hd_frame_t *ping; /* the shared heartbeat ping frame */
  void *agent_runs; /* the runs living on this worker (src/agent/runtime.c) */
  uint32_t now_s;   /* loop time in seconds, updated by the sweep */
  int64_t wall_s;   /* Unix time, updated by the sweep (token expiry) */
  bool stopping;
  hd_worker_stats_t stats;
  uint8_t rbuf[HD_READ_BUF]; /* shared read buffer: reads are handled synchronously */
};

struct hd_server_s {
  hd_config_t *cfg;
  int nworkers;
  hd_worker_t *workers;
  int port;            /* the bound port (resolves --listen ...:0) */
  uint64_t started_ms; /* wall clock at start, for uptime */
  atomic_bool draining;
  uv_loop_t *main_loop;
  uv_signal_t sigterm;
  uv_signal_t sigint;
  atomic_uint_fast64_t next_conn_id;
  hd_manager_t *manager;
  struct hd_jwt_verifier_s *jwt; /* NULL: /ws refuses every token */
};

/* Connection states. */
enum { HD_CONN_HTTP = 0, HD_CONN_WS, HD_CONN_CLOSING, HD_CONN_CLOSED };

/* What a WebSocket connection is for. */
enum { HD_EP_NONE = 0, HD_EP_ECHO, HD_EP_CLIENT };

struct hd_conn_s {
  uv_tcp_t tcp;
  hd_worker_t *w;
  hd_sub_t sub;     /* registration with the manager (CLIENT, authed) */
  atomic_uint refs; /* 1 for the open handle + 1 per inbox item */
  union {
    int64_t token_exp; /* CLIENT, authed: the token's exp; 4002 when passed */
    struct hd_pending_resume_s *pending; /* CLIENT, awaiting auth: the query's
                                            since_seq/epoch (heap, or NULL) */
  };
  hd_conn_t *prev, *next; /* worker's list */
  hd_conn_t *dirty_next;
  hd_http_parser_t *http; /* while speaking HTTP; NULL after the upgrade */
  hd_frame_t **q;         /* send queue: a ring of shared frames */
  uv_write_t *wreq;       /* the write in flight, if any */
  uint64_t id;
  uint32_t queued; /* bytes queued and not yet written (< 4 GiB by the limits) */
  uint32_t grace;  /* of those, resume replay not counted against the limit */
  hd_ws_reader_t ws;
  uint32_t qhead, qlen, qcap;
  uint32_t head_off;   /* bytes of q[qhead] already written */
  uint32_t inflight;   /* frames at the head owned by wreq */
  uint32_t deadline_s; /* HTTP: request deadline; CLOSING: give up waiting */
  uint32_t last_rx_s;
  uint32_t last_ping_s;
  uint32_t rate_window_s; /* CLIENT: the second msgs_in_window counts */
  uint16_t msgs_in_window;
  uint8_t state;
  uint8_t endpoint;
  bool in_dirty;
  bool close_after_write;   /* close TCP once the queue drains */
  bool shut;                /* uv_shutdown issued */
  bool authed;              /* CLIENT: the user is known and registered */
  struct hd_defer_s *defer; /* HTTP: a handler working off the loop, or NULL */
  atomic_bool inbox_lost;   /* an inbox push failed: close, there is a gap */
};

/* Resume parameters from the handshake, kept until the auth message. */
typedef struct hd_pending_resume_s {
  uint64_t since_seq;
  bool has_epoch;
  char epoch[HD_EPOCH_LEN + 1];
} hd_pending_resume_t;

/* Work handed to a worker by another thread: a frame or a close for one of its
 * connections, or a task to run on its loop. */
typedef struct hd_inbox_item_s {
  hd_conn_t *c;  /* holds a reference; NULL for a task */
  hd_frame_t *f; /* holds a reference; NULL for a close or a task */
  uint16_t code; /* close code */
  void (*task)(hd_worker_t *w, void *arg);
  void *arg;
} hd_inbox_item_t;

/* Runs task(w, arg) on worker w's thread, soon. Any thread. Returns 0 or
 * HD_ENOMEM (then task never runs). If the worker stops first, the task is
 * called with w == NULL and must only release arg. */
int hd_worker_post(hd_worker_t *w, void (*task)(hd_worker_t *w, void *arg), void *arg);

/* A one-shot timer on a worker's loop, for agents. */
typedef struct hd_timer_s hd_timer_t;
hd_timer_t *hd_timer_new(hd_worker_t *w, void (*cb)(void *arg), void *arg);
void hd_timer_start(hd_timer_t *t, uint64_t ms); /* (re)arms it */
void hd_timer_free(hd_timer_t *t); /* stops it; safe inside its own callback */

/* Server lifecycle (main thread). */
int hd_server_init(hd_server_t *srv, hd_config_t *cfg, uv_loop_t *main_loop);
int hd_server_run(hd_server_t *srv); /* until SIGTERM/SIGINT and drain */
void hd_server_dispose(hd_server_t *srv);

/* Connection operations (the connection's worker thread only). */
void hd_conn_accept(hd_worker_t *w);
void hd_conn_send(hd_conn_t *c, hd_frame_t *f); /* takes a new reference */
void hd_conn_respond(hd_conn_t *c, int status, const char *content_type, const char *body,
                     size_t len, const char *extra_headers, bool keep_alive);
void hd_conn_respond_json(hd_conn_t *c, int status, const char *json, bool keep_alive);
void hd_conn_respond_error(hd_conn_t *c, int status, const char *code,
                           const char *message, bool keep_alive);
void hd_conn_upgrade(hd_conn_t *c, const hd_http_req_t *req, int endpoint);
void hd_conn_ws_close(hd_conn_t *c, uint16_t code, const char *reason);
void hd_conn_abort(hd_conn_t *c);
void hd_conn_sweep(hd_conn_t *c); /* timeouts and heartbeat, once a second */
void hd_worker_flush(hd_worker_t *w);
void hd_conn_unref(hd_conn_t *c);

/* Runs work(arg) on libuv's thread pool, then done(c, arg) on c's worker.
 * Until done returns, the connection handles no further request (pipelined
 * bytes wait). done runs even if the connection closed meanwhile: check
 * c->state before answering. Returns 0 or a libuv error (nothing runs). */
int hd_conn_defer(hd_conn_t *c, void (*work)(void *arg),
                  void (*done)(hd_conn_t *c, void *arg), void *arg);

/* The peer's address as text ("127.0.0.1"), for logs and rate limits. */
void hd_conn_peer(hd_conn_t *c, char *out, size_t cap);

/* Registers an upgraded CLIENT connection as user_id and sends the welcome. */
int hd_conn_authenticate(hd_conn_t *c, const char *user_id, int64_t token_exp,
                         hd_attach_t *resume);

/* The manager's transport: hands frames and closes to connections' workers. */
extern const hd_transport_t hd_net_transport;
void hd_worker_drain_inbox(hd_worker_t *w, bool stopped);

/* The HTTP router (src/api): handles one complete request. */
void hd_api_handle(hd_conn_t *c, const hd_http_req_t *req);

/* The client protocol (src/api/client.c): a text message from a CLIENT
 * connection, and the upgrade of GET /ws. */
void hd_client_on_message(hd_conn_t *c, const uint8_t *data, size_t len);
void hd_client_upgrade(hd_conn_t *c, const hd_http_req_t *req);

/* The backend API under /api/v1 (src/api/backend.c); path is after the prefix. */
void hd_api_backend(hd_conn_t *c, const hd_http_req_t *req, const char *path, size_t n);

/* POST /auth/login (src/api/login.c) and the embedded page (src/api/static.c,
 * false when no file matches). */
void hd_api_login(hd_conn_t *c, const hd_http_req_t *req);
bool hd_api_static(hd_conn_t *c, const hd_http_req_t *req);
struct hd_users_s;
void hd_api_login_init(struct hd_users_s *users);

/* GET /metrics and /ws-health (src/api/metrics.c). */
void hd_api_metrics(hd_conn_t *c, const hd_http_req_t *req);
void hd_api_ws_health(hd_conn_t *c, const hd_http_req_t *req);

#endif
