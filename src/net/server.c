/* Workers and the server's lifecycle.
 *
 * hd_server_init() binds one listening socket per worker on the same address
 * with SO_REUSEPORT (the first bind resolves port 0; the others reuse the port
 * it got) and prepares each worker's loop. hd_server_run() starts a thread per
 * worker and runs the main loop, which only waits for SIGTERM/SIGINT.
 *
 * Shutdown: the signal sets srv->draining and wakes every worker. A worker then
 * stops accepting, closes its WebSockets with 1001, closes idle HTTP
 * connections, and lets the rest finish; after drain_timeout_s it aborts what
 * remains. When its last connection is gone it closes its own handles, its loop
 * ends and the thread exits. The main thread joins them all and returns.
 *
 * Each worker flushes its dirty connections from a prepare handle (before the
 * loop blocks, after timers and wakeups queued data) and a check handle (after
 * I/O callbacks queued data): every write of a loop pass goes out in one batch.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/runtime.h"
#include "api/json_arena.h"
#include "daemon/log.h"
#include "net/net.h"

static void on_connection(uv_stream_t *l, int status) {
  hd_worker_t *w = l->data;

  if (status < 0) {
    hd_log(HD_LOG_WARN, "worker %d: accept: %s", w->id, uv_strerror(status));
    return;
  }
  hd_conn_accept(w);
}

static void on_flush_prepare(uv_prepare_t *h) {
  hd_worker_flush(h->data);
}

static void on_flush_check(uv_check_t *h) {
  hd_worker_flush(h->data);
}

static void close_handles(hd_worker_t *w) {
  uv_close((uv_handle_t *)&w->wakeup, NULL);
  uv_close((uv_handle_t *)&w->sweep, NULL);
  uv_close((uv_handle_t *)&w->flush_before_poll, NULL);
  uv_close((uv_handle_t *)&w->flush_after_poll, NULL);
}

static void begin_drain(hd_worker_t *w) {
  hd_conn_t *c, *next;

  w->stopping = true;
  uv_close((uv_handle_t *)&w->listener, NULL);
  hd_runtime_stop_worker(w);
  for (c = w->conns; c; c = next) {
    next = c->next;
    if (c->state == HD_CONN_WS)
      hd_conn_ws_close(c, HD_WS_CLOSE_GOING_AWAY, "server shutting down");
    else if (c->state == HD_CONN_HTTP && !hd_http_parser_busy(c->http) && c->qlen == 0)
      hd_conn_abort(c);
    else if (c->state == HD_CONN_HTTP)
      c->deadline_s = w->now_s + w->srv->cfg->drain_timeout_s;
  }
}

static void on_sweep(uv_timer_t *t) {
  hd_worker_t *w = t->data;
  hd_conn_t *c, *next;

  w->now_s = (uint32_t)(uv_now(&w->loop) / 1000);
  w->wall_s = (int64_t)time(NULL);
  for (c = w->conns; c; c = next) {
    next = c->next;
    hd_conn_sweep(c);
  }
  hd_runtime_sweep(w);
  /* Age limit of the history: one worker sweeps all users every few seconds. */
  if (w->id == 0 && w->now_s % 5 == 0) hd__manager_expire(w->srv->manager);
}

static void abort_all(hd_worker_t *w) {
  hd_conn_t *c, *next;
  for (c = w->conns; c; c = next) {
    next = c->next;
    hd_conn_abort(c);
  }
}

static void on_wakeup(uv_async_t *a) {
  hd_worker_t *w = a->data;

  hd_worker_drain_inbox(w, false);
  if (atomic_load(&w->srv->draining) && !w->stopping) {
    begin_drain(w);
    /* Wake often while draining so worker_main notices the last connection
     * going away and the drain deadline passing. */
    uv_timer_start(&w->sweep, on_sweep, 100, 100);
  }
}

static void worker_main(void *arg) {
  hd_worker_t *w = arg;
  uint64_t drain_started = 0;

  /* Run until the handles are closed. Drain deadline: checked between runs of
   * the loop with a bounded UV_RUN_ONCE so the check needs no extra handle. */
  while (uv_run(&w->loop, UV_RUN_ONCE)) {
    if (w->stopping) {
      if (drain_started == 0) drain_started = uv_now(&w->loop);
      if (uv_now(&w->loop) - drain_started >= w->srv->cfg->drain_timeout_s * 1000ull)
        abort_all(w);
      if (w->conns == NULL && !uv_is_closing((uv_handle_t *)&w->wakeup)) close_handles(w);
    }
  }
  hd_json_arena_release();
}

static int bind_socket(const hd_config_t *cfg, int port, int *out_port) {
  struct sockaddr_storage ss;
  struct sockaddr *sa = (struct sockaddr *)&ss;
  socklen_t len;
  int fd, one = 1, rc;

  if (uv_ip4_addr(cfg->listen_host, port, (struct sockaddr_in *)&ss) == 0) {
    len = sizeof(struct sockaddr_in);
  } else if (uv_ip6_addr(cfg->listen_host, port, (struct sockaddr_in6 *)&ss) == 0) {
    len = sizeof(struct sockaddr_in6);
  } else {
    return UV_EINVAL;
  }
  fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
      bind(fd, sa, len) < 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  len = sizeof(ss);
  getsockname(fd, sa, &len);
  *out_port = ntohs(sa->sa_family == AF_INET ? ((struct sockaddr_in *)sa)->sin_port
                                             : ((struct sockaddr_in6 *)sa)->sin6_port);
  return fd;
}

static int worker_init(hd_server_t *srv, hd_worker_t *w, int id) {
  int fd, port = 0, rc;

  w->srv = srv;
  w->id = id;
  if ((rc = uv_loop_init(&w->loop)) != 0) return rc;
  fd = bind_socket(srv->cfg, srv->port, &port);
  if (fd < 0) {
    hd_log(HD_LOG_ERROR, "bind %s:%d: %s", srv->cfg->listen_host, srv->port,
           strerror(-fd));
    return fd;
  }
  srv->port = port;
  uv_tcp_init(&w->loop, &w->listener);
  w->listener.data = w;
  if ((rc = uv_tcp_open(&w->listener, fd)) != 0 ||
      (rc = uv_listen((uv_stream_t *)&w->listener, srv->cfg->backlog, on_connection)) !=
          0) {
    hd_log(HD_LOG_ERROR, "listen: %s", uv_strerror(rc));
    return rc;
  }
  uv_async_init(&w->loop, &w->wakeup, on_wakeup);
  w->wakeup.data = w;
  uv_timer_init(&w->loop, &w->sweep);
  w->sweep.data = w;
  uv_timer_start(&w->sweep, on_sweep, 1000, 1000);
  uv_prepare_init(&w->loop, &w->flush_before_poll);
  w->flush_before_poll.data = w;
  uv_prepare_start(&w->flush_before_poll, on_flush_prepare);
  uv_check_init(&w->loop, &w->flush_after_poll);
  w->flush_after_poll.data = w;
  uv_check_start(&w->flush_after_poll, on_flush_check);
  w->ping = hd_frame_new(HD_WS_OP_PING, NULL, 0);
  w->now_s = (uint32_t)(uv_now(&w->loop) / 1000);
  w->wall_s = (int64_t)time(NULL);
  uv_mutex_init(&w->inbox_lock);
  return w->ping ? 0 : UV_ENOMEM;
}

int hd_server_init(hd_server_t *srv, hd_config_t *cfg, uv_loop_t *main_loop) {
  int rc;

  memset(srv, 0, sizeof(*srv));
  hd_json_arena_install();
  srv->cfg = cfg;
  srv->main_loop = main_loop;
  srv->port = cfg->listen_port;
  srv->nworkers = cfg->workers > 0 ? cfg->workers : (int)uv_available_parallelism();
  srv->started_ms = uv_hrtime() / 1000000;
  srv->manager = hd_manager_get();
  hd__manager_set_transport(srv->manager, &hd_net_transport);
  hd__manager_configure(srv->manager,
                        &(hd_history_limits_t){cfg->history_events, cfg->history_bytes,
                                               (int64_t)cfg->history_age_s * 1000,
                                               cfg->history_memory});
  srv->workers = calloc((size_t)srv->nworkers, sizeof(hd_worker_t));
  if (srv->workers == NULL) return UV_ENOMEM;
  for (int i = 0; i < srv->nworkers; i++)
    if ((rc = worker_init(srv, &srv->workers[i], i)) != 0) return rc;
  return 0;
}

static void on_signal(uv_signal_t *s, int signum) {
  hd_server_t *srv = s->data;

  if (atomic_exchange(&srv->draining, true)) return;
  hd__manager_set_draining(srv->manager, true);
  hd_log(HD_LOG_INFO, "signal %d: draining (up to %us)", signum,
         srv->cfg->drain_timeout_s);
  for (int i = 0; i < srv->nworkers; i++) uv_async_send(&srv->workers[i].wakeup);
  uv_close((uv_handle_t *)&srv->sigterm, NULL);
  uv_close((uv_handle_t *)&srv->sigint, NULL);
}

int hd_server_run(hd_server_t *srv) {
  int rc;

  uv_signal_init(srv->main_loop, &srv->sigterm);
  uv_signal_init(srv->main_loop, &srv->sigint);
  srv->sigterm.data = srv->sigint.data = srv;
  uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
  uv_signal_start(&srv->sigint, on_signal, SIGINT);
  for (int i = 0; i < srv->nworkers; i++) {
    if ((rc = uv_thread_create(&srv->workers[i].thread, worker_main, &srv->workers[i])) !=
        0)
      return rc;
  }
  hd_log(HD_LOG_INFO, "listening on %s:%d (%d workers)", srv->cfg->listen_host, srv->port,
         srv->nworkers);
  uv_run(srv->main_loop, UV_RUN_DEFAULT);
  for (int i = 0; i < srv->nworkers; i++) uv_thread_join(&srv->workers[i].thread);
  hd_log(HD_LOG_INFO, "drained, exiting");
  return 0;
}

void hd_server_dispose(hd_server_t *srv) {
  for (int i = 0; srv->workers && i < srv->nworkers; i++) {
    hd_worker_t *w = &srv->workers[i];
    hd_worker_drain_inbox(
        w, false); /* drops what arrived after the last connection closed */
    free(w->inbox);
    free(w->spare);
    uv_mutex_destroy(&w->inbox_lock);
    if (w->ping) hd_frame_unref(w->ping);
    uv_loop_close(&w->loop);
  }
  free(srv->workers);
  srv->workers = NULL;
}
