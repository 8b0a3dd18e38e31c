/* One client connection: HTTP/1.1 until an upgrade, then RFC 6455.
 *
 * Reading. Every read on a worker lands in the worker's one shared buffer and is
 * handled before the callback returns: the HTTP parser copies what it keeps,
 * and the WebSocket reader either hands a whole frame out in place or copies a
 * partial one into its own buffer. So an idle connection holds no read buffer.
 *
 * Writing. Everything sent is a shared, refcounted hd_frame_t (HTTP responses
 * too) appended to the connection's ring. Queuing only marks the connection
 * dirty; the worker flushes dirty connections once per loop pass, before and
 * after polling, with one writev (uv_try_write) over the queued frames. What the
 * socket does not take goes out through one uv_write whose frames stay
 * referenced until its callback. The queued byte count is bounded by
 * cfg->max_queue: a frame arriving when the queue already holds that much closes
 * the WebSocket with 4008.
 *
 * Closing (RFC 6455 7.1). When the peer sends a close frame, the server answers
 * with its own and closes TCP once that is written. When the server closes
 * (an error, shutdown, a slow consumer), it queues a close frame, shuts down its
 * sending side once the frame is out, and waits up to close_timeout_s for the
 * peer's close frame or EOF before closing TCP. A connection is freed only in
 * its uv_close callback, never inside one of its own callbacks.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "daemon/log.h"
#include "herald/herald.h"
#include "net/net.h"
#include "proto/handshake.h"

#define container_of(p, type, field) ((type *)((char *)(p)-offsetof(type, field)))

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void flush(hd_conn_t *c);
static void mark_dirty(hd_conn_t *c);

static void on_shutdown(uv_shutdown_t *req, int status) {
  free(req);
}

static hd_server_t *srv_of(hd_conn_t *c) {
  return c->w->srv;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  hd_conn_t *c = container_of(h, hd_conn_t, tcp);
  buf->base = (char *)c->w->rbuf;
  buf->len = sizeof(c->w->rbuf);
}

static void on_closed(uv_handle_t *h) {
  hd_conn_t *c = container_of(h, hd_conn_t, tcp);
  hd_worker_t *w = c->w;

  while (c->qlen) {
    hd_frame_unref(c->q[c->qhead]);
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
  }
  free(c->q);
  if (c->endpoint == HD_EP_CLIENT && !c->authed) free(c->pending);
  hd_ws_reader_dispose(&c->ws);
  hd_http_parser_free(c->http);
  c->http = NULL;
  if (c->prev)
    c->prev->next = c->next;
  else
    w->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  atomic_fetch_sub(&w->stats.conns, 1);
  hd_conn_unref(c); /* inbox items may still hold the memory */
}

void hd_conn_unref(hd_conn_t *c) {
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) free(c);
}

/* Closes the TCP connection now; queued bytes are dropped. Idempotent. */
void hd_conn_abort(hd_conn_t *c) {
  if (c->state == HD_CONN_CLOSED) return;
  if (c->endpoint != HD_EP_NONE) atomic_fetch_sub(&c->w->stats.ws_conns, 1);
  /* Unregister first: from here on no thread can hand us new frames. */
  if (c->sub.user) hd__manager_detach(srv_of(c)->manager, &c->sub);
  c->state = HD_CONN_CLOSED;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

void hd_conn_accept(hd_worker_t *w) {
  hd_conn_t *c = calloc(1, sizeof(*c));

  if (c == NULL) {
    hd_log(HD_LOG_ERROR, "accept: out of memory");
    return;
  }
  c->w = w;
  atomic_init(&c->refs, 1);
  c->sub.worker = (uint16_t)w->id;
  c->id = atomic_fetch_add(&w->srv->next_conn_id, 1) + 1;
  uv_tcp_init(&w->loop, &c->tcp);
  c->next = w->conns;
  if (w->conns) w->conns->prev = c;
  w->conns = c;
  atomic_fetch_add(&w->stats.conns, 1);
  if (uv_accept((uv_stream_t *)&w->listener, (uv_stream_t *)&c->tcp) != 0) {
    hd_conn_abort(c);
    return;
  }
  atomic_fetch_add(&w->stats.accepted, 1);
  c->http = hd_http_parser_new(srv_of(c)->cfg->max_body);
  if (c->http == NULL) {
    hd_conn_abort(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  if (srv_of(c)->cfg->sndbuf > 0) {
    int size = srv_of(c)->cfg->sndbuf;
    uv_send_buffer_size((uv_handle_t *)&c->tcp, &size);
  }
  c->deadline_s = w->now_s + srv_of(c)->cfg->request_timeout_s;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- the send queue ---------------------------------------------------- */

static void mark_dirty(hd_conn_t *c) {
  if (c->in_dirty) return;
  c->in_dirty = true;
  c->dirty_next = c->w->dirty;
  c->w->dirty = c;
}

static int push(hd_conn_t *c, hd_frame_t *f) {
  if (c->qlen == c->qcap) {
    uint32_t cap = c->qcap ? c->qcap * 2 : 4;
    hd_frame_t **q = malloc(cap * sizeof(*q));
    if (q == NULL) return -1;
    for (uint32_t i = 0; i < c->qlen; i++) q[i] = c->q[(c->qhead + i) % c->qcap];
    free(c->q);
    c->q = q;
    c->qcap = cap;
    c->qhead = 0;
  }
  c->q[(c->qhead + c->qlen) % c->qcap] = hd_frame_ref(f);
  c->qlen++;
  c->queued += f->len;
  return 0;
}

/* Drops n written bytes from the head of the queue. */
static void advance(hd_conn_t *c, size_t n) {
  c->queued -= n;
  if (c->grace > c->queued) c->grace = c->queued;
  while (n > 0) {
    hd_frame_t *f = c->q[c->qhead];
    size_t left = f->len - c->head_off;
    if (n < left) {
      c->head_off += (uint32_t)n;
      return;
    }
    n -= left;
    c->head_off = 0;
    hd_frame_unref(f);
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
  }
  if (c->qlen == 0 && c->qcap > 16) { /* give back a ring grown by a burst */
    free(c->q);
    c->q = NULL;
    c->qcap = 0;
    c->qhead = 0;
  }
}

/* Queues a new frame without the slow-consumer check (our own close, the
 * welcome and resume replies); aborts the connection if memory runs out. */
static void queue_new(hd_conn_t *c, unsigned opcode, const void *payload, size_t n) {
  hd_frame_t *f = hd_frame_new(opcode, payload, n);
  if (f == NULL || push(c, f) < 0) {
    if (f) hd_frame_unref(f);
    hd_conn_abort(c);
    return;
  }
  hd_frame_unref(f);
  mark_dirty(c);
}

/* The frame at position i of the queue (0 = head). */
static hd_frame_t **qat(hd_conn_t *c, uint32_t i) {
  return &c->q[(c->qhead + i) % c->qcap];
}

/* Over the limit: the bytes queued before the newest frame reach it. A queue
 * thus holds at most max_queue (plus replay grace) and one frame, and a single
 * frame larger than the limit (a big echo) can still go out. */
static bool over_limit(hd_conn_t *c) {
  return c->qlen > 1 &&
         c->queued - (*qat(c, c->qlen - 1))->len >= srv_of(c)->cfg->max_queue + c->grace;
}

/* Frames at positions >= first_free are not yet handed to the socket. */
static uint32_t first_free(hd_conn_t *c) {
  return c->inflight ? c->inflight : c->head_off ? 1 : 0;
}

/* Parses the fields of a queued agent_message frame that coalescing needs. */
static json_t *parse_event(const hd_frame_t *f) {
  size_t n;
  const uint8_t *b = hd_frame_body(f, &n);
  return json_loadb((const char *)b, n, 0, NULL);
}

static bool same_run(json_t *a, json_t *b) {
  json_t *ra = json_object_get(a, "run_id"), *rb = json_object_get(b, "run_id");
  return ra && rb && json_equal(ra, rb);
}

/* Builds the merged event: type, seq (the last's), seq_from, then the first's
 * other fields, with ts (the last's) and data {"delta": joined}. */
static hd_frame_t *merge(json_t *first, json_t *last, json_int_t seq_from,
                         const char *joined) {
  json_t *o = json_object(), *v;
  const char *key;
  hd_frame_t *f = NULL;
  char *text;

  json_object_set(o, "type", json_object_get(first, "type"));
  json_object_set(o, "seq", json_object_get(last, "seq"));
  json_object_set_new(o, "seq_from", json_integer(seq_from));
  json_object_foreach(first, key, v) {
    if (strcmp(key, "ts") == 0) v = json_object_get(last, "ts");
    if (strcmp(key, "data") == 0)
      json_object_set_new(o, key, json_pack("{s:s}", "delta", joined));
    else if (json_object_get(o, key) == NULL)
      json_object_set(o, key, v);
  }
  if ((text = json_dumps(o, JSON_COMPACT)) != NULL)
    f = hd_frame_new(HD_WS_OP_TEXT, text, strlen(text));
  free(text);
  json_decref(o);
  return f;
}

static const char *delta_of(json_t *ev) {
  return json_string_value(json_object_get(json_object_get(ev, "data"), "delta"));
}

/* Merges consecutive agent_message events of one run still waiting in the
 * queue into one event carrying seq_from (the first seq it replaces), seq (the
 * last) and the deltas joined in order (PROTOCOL.md section 3). Nothing else
 * is merged or dropped. Slow path only: it parses the frames it looks at. */
static void coalesce(hd_conn_t *c) {
  const unsigned agent_message = HD_EV_AGENT_MESSAGE + 1;
  uint32_t i = first_free(c), out = i;

  while (i < c->qlen) {
    hd_frame_t *f = *qat(c, i), *merged = NULL;
    json_t *first = NULL, *last = NULL;
    uint32_t j = i + 1;
    char *joined = NULL;
    size_t cap = 0;
    FILE *mem;

    if (f->event == agent_message && j < c->qlen &&
        (*qat(c, j))->event == agent_message && (first = parse_event(f)) != NULL &&
        delta_of(first) && (mem = open_memstream(&joined, &cap)) != NULL) {
      json_t *from = json_object_get(first, "seq_from");
      json_int_t seq_from =
          json_integer_value(from ? from : json_object_get(first, "seq"));
      fputs(delta_of(first), mem);
      for (; j < c->qlen && (*qat(c, j))->event == agent_message; j++) {
        json_t *e = parse_event(*qat(c, j));
        if (e == NULL || delta_of(e) == NULL || !same_run(first, e)) {
          json_decref(e);
          break;
        }
        fputs(delta_of(e), mem);
        json_decref(last);
        last = e;
      }
      fclose(mem);
      if (last) merged = merge(first, last, seq_from, joined);
    }
    json_decref(first);
    json_decref(last);
    free(joined);
    if (merged == NULL) { /* keep the frame as it is */
      *qat(c, out++) = *qat(c, i++);
      continue;
    }
    merged->user = f->user;
    merged->event = (uint8_t)agent_message;
    merged->seq = (*qat(c, j - 1))->seq;
    for (uint32_t k = i; k < j; k++) {
      c->queued -= (*qat(c, k))->len;
      hd_frame_unref(*qat(c, k));
    }
    c->queued += merged->len;
    *qat(c, out++) = merged;
    i = j;
  }
  c->qlen = out;
}

/* Drops every frame not yet handed to the socket (before a 4008 close). */
static void drop_unsent(hd_conn_t *c) {
  uint32_t keep = first_free(c);
  for (uint32_t i = keep; i < c->qlen; i++) {
    c->queued -= (*qat(c, i))->len;
    hd_frame_unref(*qat(c, i));
  }
  c->qlen = keep;
  c->grace = 0;
}

void hd_conn_send(hd_conn_t *c, hd_frame_t *f) {
  hd_config_t *cfg = srv_of(c)->cfg;

  if (c->state == HD_CONN_CLOSED || c->close_after_write) return;
  if (c->state == HD_CONN_CLOSING && f->event) return; /* no events after our close */
  if (push(c, f) < 0) {
    hd_conn_abort(c);
    return;
  }
  if (c->state == HD_CONN_WS && over_limit(c)) {
    /* A burst (a whole inbox batch) may pass the limit before this pass's
     * flush: write what the socket takes now, then merge, and only then
     * decide the client cannot keep up. */
    flush(c);
    if (c->state != HD_CONN_WS) return;
    if (over_limit(c)) coalesce(c);
  }
  if (c->state == HD_CONN_WS && over_limit(c)) {
    atomic_fetch_add(&c->w->stats.slow_consumers, 1);
    hd_log(HD_LOG_WARN, "conn %llu: send queue over %zu bytes, closing 4008",
           (unsigned long long)c->id, cfg->max_queue);
    drop_unsent(c);
    hd_conn_ws_close(c, HD_WS_CLOSE_SLOW_CONSUMER, "slow consumer");
    return;
  }
  mark_dirty(c);
}

/* Sends whatever the queue holds and the connection state allows. */
static void after_drain(hd_conn_t *c) {
  if (c->qlen != 0 || c->state == HD_CONN_CLOSED) return;
  if (c->close_after_write && c->state == HD_CONN_HTTP) {
    /* Lingering close: the client may still be sending (a refused body).
     * Closing now would reset the connection and lose our response; half-close
     * instead and discard what arrives until EOF or the close timeout. */
    c->close_after_write = false;
    c->state = HD_CONN_CLOSING;
    c->deadline_s = c->w->now_s + srv_of(c)->cfg->close_timeout_s;
  }
  if (c->close_after_write) {
    hd_conn_abort(c);
    return;
  }
  if (c->state == HD_CONN_CLOSING && !c->shut) {
    /* Our close frame is out: half-close so the peer sees EOF after it, and
     * keep reading until its close frame, EOF or the deadline. */
    uv_shutdown_t *req = malloc(sizeof(*req));
    c->shut = true;
    if (req == NULL || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
      free(req);
  }
}

static void on_write(uv_write_t *req, int status) {
  hd_conn_t *c = req->data;
  size_t n = 0;

  for (uint32_t i = 0; i < c->inflight; i++)
    n += c->q[(c->qhead + i) % c->qcap]->len - (i == 0 ? c->head_off : 0);
  c->inflight = 0;
  free(req);
  c->wreq = NULL;
  if (status != 0) { /* peer gone or we are closing: drop everything */
    advance(c, n);
    hd_conn_abort(c);
    return;
  }
  atomic_fetch_add(&c->w->stats.bytes_out, n);
  advance(c, n);
  if (c->qlen)
    flush(c);
  else
    after_drain(c);
}

#define MAX_IOV 64

static uint32_t gather(hd_conn_t *c, uv_buf_t *bufs, size_t *total) {
  uint32_t n = c->qlen < MAX_IOV ? c->qlen : MAX_IOV;

  *total = 0;
  for (uint32_t i = 0; i < n; i++) {
    hd_frame_t *f = c->q[(c->qhead + i) % c->qcap];
    uint32_t off = i == 0 ? c->head_off : 0;
    bufs[i] = uv_buf_init((char *)f->data + off, f->len - off);
    *total += f->len - off;
  }
  return n;
}

static void flush(hd_conn_t *c) {
  uv_buf_t bufs[MAX_IOV];
  size_t total;
  uint32_t n;
  int rc;

  if (c->wreq != NULL || c->state == HD_CONN_CLOSED) return;
  while (c->qlen) {
    n = gather(c, bufs, &total);
    rc = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
    if (rc == UV_EAGAIN) rc = 0;
    if (rc < 0) {
      hd_conn_abort(c);
      return;
    }
    atomic_fetch_add(&c->w->stats.bytes_out, (uint64_t)rc);
    advance(c, (size_t)rc);
    if ((size_t)rc < total) break; /* the socket is full */
  }
  if (c->qlen == 0) {
    after_drain(c);
    return;
  }
  /* Hand the rest to libuv; the frames stay referenced until on_write. */
  n = gather(c, bufs, &total);
  c->wreq = malloc(sizeof(*c->wreq));
  if (c->wreq == NULL) {
    hd_conn_abort(c);
    return;
  }
  c->wreq->data = c;
  c->inflight = n;
  if (uv_write(c->wreq, (uv_stream_t *)&c->tcp, bufs, n, on_write) != 0) {
    free(c->wreq);
    c->wreq = NULL;
    c->inflight = 0;
    hd_conn_abort(c);
  }
}

void hd_worker_flush(hd_worker_t *w) {
  while (w->dirty) {
    hd_conn_t *c = w->dirty;
    w->dirty = c->dirty_next;
    c->in_dirty = false;
    c->dirty_next = NULL;
    flush(c);
  }
}

/* ---- HTTP ---------------------------------------------------------------- */

static const char *reason_phrase(int status) {
  switch (status) {
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 204:
    return "No Content";
  case 304:
    return "Not Modified";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 413:
    return "Content Too Large";
  case 426:
    return "Upgrade Required";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  default:
    return "Unknown";
  }
}

void hd_conn_respond(hd_conn_t *c, int status, const char *content_type, const char *body,
                     size_t len, const char *extra_headers, bool keep_alive) {
  char head[1024];
  hd_frame_t *f;
  int n;

  if (srv_of(c)->draining) keep_alive = false;
  if (status >= 400) atomic_fetch_add(&c->w->stats.http_errors, 1);
  n = snprintf(head, sizeof(head),
               "HTTP/1.1 %d %s\r\n"
               "Content-Type: %s\r\n"
               "Content-Length: %zu\r\n"
               "%s"
               "%s"
               "\r\n",
               status, reason_phrase(status), content_type, len,
               keep_alive ? "" : "Connection: close\r\n",
               extra_headers ? extra_headers : "");
  if (n < 0 || (size_t)n >= sizeof(head)) {
    hd_conn_abort(c);
    return;
  }
  f = hd_frame_alloc(0, (size_t)n + len);
  if (f == NULL) {
    hd_conn_abort(c);
    return;
  }
  /* A raw buffer: overwrite the frame header with the response itself. */
  f->len = (uint32_t)((size_t)n + len);
  memcpy(f->data, head, (size_t)n);
  if (len) memcpy(f->data + n, body, len);
  hd_conn_send(c, f);
  hd_frame_unref(f);
  if (!keep_alive) c->close_after_write = true;
}

void hd_conn_respond_json(hd_conn_t *c, int status, const char *json, bool keep_alive) {
  hd_conn_respond(c, status, "application/json", json, strlen(json), NULL, keep_alive);
}

void hd_conn_respond_error(hd_conn_t *c, int status, const char *code,
                           const char *message, bool keep_alive) {
  char body[1600], esc[6 * 200];
  size_t mlen = strnlen(message, 200);
  int n =
      snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":\"%.*s\"}}",
               code, (int)hd__json_escape(esc, message, mlen), esc);
  if (n < 0 || (size_t)n >= sizeof(body)) n = 0;
  hd_conn_respond(c, status, "application/json", body, (size_t)n, NULL, keep_alive);
}

static void ws_feed(hd_conn_t *c, uint8_t *p, size_t n);

void hd_conn_upgrade(hd_conn_t *c, const hd_http_req_t *req, int endpoint) {
  hd_ws_handshake_t hs;
  char resp[512];
  size_t n;
  hd_frame_t *f;

  if (hd_ws_handshake_check(req, &hs) < 0) {
    atomic_fetch_add(&c->w->stats.protocol_errors, 1);
    if (hs.status == 426) {
      char msg[160];
      snprintf(msg, sizeof(msg), "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}",
               hs.error, "only WebSocket version 13 is supported");
      hd_conn_respond(c, 426, "application/json", msg, strlen(msg),
                      "Sec-WebSocket-Version: 13\r\n", false);
    } else {
      hd_conn_respond_error(c, hs.status, hs.error, "invalid WebSocket handshake", false);
    }
    return;
  }
  n = hd_ws_handshake_response(&hs, resp, sizeof(resp));
  f = hd_frame_alloc(0, n);
  if (f == NULL) {
    hd_conn_abort(c);
    return;
  }
  f->len = (uint32_t)n;
  memcpy(f->data, resp, n);
  hd_conn_send(c, f);
  hd_frame_unref(f);
  hd_ws_reader_init(&c->ws, srv_of(c)->cfg->max_message);
  c->state = HD_CONN_WS;
  c->endpoint = (uint8_t)endpoint;
  c->last_rx_s = c->last_ping_s = c->w->now_s;
  c->deadline_s = c->w->now_s + srv_of(c)->cfg->auth_timeout_s; /* CLIENT: auth */
  atomic_fetch_add(&c->w->stats.ws_upgrades, 1);
  atomic_fetch_add(&c->w->stats.ws_conns, 1);
}

/* A request handled off the loop (hd_conn_defer). */
typedef struct hd_defer_s {
  uv_work_t req;
  hd_conn_t *c;
  void (*work)(void *arg);
  void (*done)(hd_conn_t *c, void *arg);
  void *arg;
  uint8_t *stash; /* bytes that followed the request (pipelining) */
  size_t stash_len;
} defer_t;

static void http_feed(hd_conn_t *c, uint8_t *p, size_t n) {
  while (n > 0 && c->state == HD_CONN_HTTP && !c->close_after_write) {
    size_t used = 0;
    int rc = hd_http_parser_feed(c->http, p, n, &used);

    if (rc < 0) {
      int st = hd_http_parser_status(c->http);
      atomic_fetch_add(&c->w->stats.protocol_errors, 1);
      hd_conn_respond_error(c, st,
                            st == 431   ? "headers_too_large"
                            : st == 413 ? "body_too_large"
                                        : "bad_request",
                            st == 431   ? "request head over 8 KiB or 100 lines"
                            : st == 413 ? "request body over the limit"
                                        : "malformed HTTP request",
                            false);
      return;
    }
    p += used;
    n -= used;
    if (rc == 0) return;
    atomic_fetch_add(&c->w->stats.http_requests, 1);
    hd_api_handle(c, hd_http_parser_request(c->http));
    if (c->state == HD_CONN_WS) {
      /* Bytes after the handshake are the first frames: don't lose them. */
      hd_http_parser_free(c->http);
      c->http = NULL;
      if (n) ws_feed(c, p, n);
      return;
    }
    if (c->state != HD_CONN_HTTP) return;
    hd_http_parser_next(c->http);
    c->deadline_s = c->w->now_s + srv_of(c)->cfg->request_timeout_s;
    if (c->defer) {
      /* Answers go out in order: keep what follows until the handler is done. */
      if (n && (c->defer->stash = malloc(n)) != NULL) {
        memcpy(c->defer->stash, p, n);
        c->defer->stash_len = n;
      } else if (n) {
        hd_conn_abort(c);
      }
      return;
    }
  }
}

static void defer_work(uv_work_t *req) {
  defer_t *d = req->data;
  d->work(d->arg);
}

static void defer_done(uv_work_t *req, int status) {
  defer_t *d = req->data;
  hd_conn_t *c = d->c;

  c->defer = NULL;
  d->done(c, d->arg);
  if (c->state == HD_CONN_HTTP) {
    if (d->stash_len) http_feed(c, d->stash, d->stash_len);
    if (c->state == HD_CONN_HTTP && c->defer == NULL)
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  }
  free(d->stash);
  free(d);
  hd_conn_unref(c);
}

int hd_conn_defer(hd_conn_t *c, void (*work)(void *arg),
                  void (*done)(hd_conn_t *c, void *arg), void *arg) {
  defer_t *d = malloc(sizeof(*d));
  int rc;

  if (d == NULL) return UV_ENOMEM;
  *d = (defer_t){.c = c, .work = work, .done = done, .arg = arg, .stash = NULL};
  d->req.data = d;
  if ((rc = uv_queue_work(&c->w->loop, &d->req, defer_work, defer_done)) != 0) {
    free(d);
    return rc;
  }
  atomic_fetch_add(&c->refs, 1);
  c->defer = d;
  uv_read_stop((uv_stream_t *)&c->tcp);
  return 0;
}

void hd_conn_peer(hd_conn_t *c, char *out, size_t cap) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);

  out[0] = '\0';
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0) return;
  if (ss.ss_family == AF_INET)
    uv_ip4_name((struct sockaddr_in *)&ss, out, cap);
  else if (ss.ss_family == AF_INET6)
    uv_ip6_name((struct sockaddr_in6 *)&ss, out, cap);
}

/* ---- WebSocket ------------------------------------------------------------ */

static void send_control(hd_conn_t *c, unsigned opcode, const uint8_t *p, size_t n) {
  hd_frame_t *f = hd_frame_new(opcode, p, n);
  if (f == NULL) {
    hd_conn_abort(c);
    return;
  }
  hd_conn_send(c, f);
  hd_frame_unref(f);
}

void hd_conn_ws_close(hd_conn_t *c, uint16_t code, const char *reason) {
  uint8_t payload[HD_WS_MAX_CONTROL];
  size_t n;

  if (c->state != HD_CONN_WS) return;
  n = hd_ws_close_payload(payload, code, reason);
  c->state = HD_CONN_CLOSING;
  c->deadline_s = c->w->now_s + srv_of(c)->cfg->close_timeout_s;
  /* Queued bytes do not count against the limit here: the close must go out. */
  queue_new(c, HD_WS_OP_CLOSE, payload, n);
}

static void on_message(hd_conn_t *c, const hd_ws_event_t *ev) {
  atomic_fetch_add(&c->w->stats.ws_messages_in, 1);
  switch (c->endpoint) {
  case HD_EP_ECHO: {
    hd_frame_t *f = hd_frame_new(ev->opcode, ev->data, ev->len);
    if (f == NULL) {
      hd_conn_ws_close(c, HD_WS_CLOSE_INTERNAL, "out of memory");
      return;
    }
    hd_conn_send(c, f);
    hd_frame_unref(f);
    break;
  }
  case HD_EP_CLIENT:
    if (c->rate_window_s != c->w->now_s) {
      c->rate_window_s = c->w->now_s;
      c->msgs_in_window = 0;
    }
    if (++c->msgs_in_window > srv_of(c)->cfg->max_client_rate) {
      hd_conn_ws_close(c, HD_WS_CLOSE_RATE_LIMITED, "too many messages per second");
      return;
    }
    if (ev->opcode != HD_WS_OP_TEXT) {
      hd_conn_ws_close(c, HD_WS_CLOSE_UNSUPPORTED, "binary messages are not accepted");
      return;
    }
    hd_client_on_message(c, ev->data, ev->len);
    break;
  default:
    break;
  }
}

int hd_conn_authenticate(hd_conn_t *c, const char *user_id, int64_t token_exp,
                         hd_attach_t *a) {
  hd_server_t *srv = srv_of(c);
  char msg[256 + 6 * HD_ID_MAX], esc[6 * HD_ID_MAX];
  size_t replayed = 0;
  int n, rc;

  assert(c->endpoint == HD_EP_CLIENT && !c->authed);
  if ((rc = hd__manager_attach(srv->manager, &c->sub, user_id, a)) < 0) return rc;
  free(c->pending); /* the union's other member: token_exp from now on */
  c->pending = NULL;
  c->authed = true;
  c->token_exp = token_exp;
  /* Everything below is queued before any live event can be: inbox items are
   * handled on this thread, after this function returns. So the client sees
   * welcome, the replay, resumed, then live events from head_seq + 1 on. */
  n = snprintf(msg, sizeof(msg),
               "{\"type\":\"welcome\",\"user_id\":\"%.*s\",\"connection_id\":\"%llu\","
               "\"seq\":%llu,\"epoch\":\"%s\",\"heartbeat_s\":%u}",
               (int)hd__json_escape(esc, user_id, strlen(user_id)), esc,
               (unsigned long long)c->id, (unsigned long long)a->head_seq, a->epoch,
               srv->cfg->heartbeat_s);
  queue_new(c, HD_WS_OP_TEXT, msg, (size_t)n);
  for (size_t i = 0; i < a->nreplay; i++) {
    /* The replay bypasses the slow-consumer limit: a client reading at full
     * speed must not be closed for the size of its own backlog. */
    if (!hd__manager_check_write(srv->manager, &c->sub, a->replay[i])) {
      hd_log(HD_LOG_ERROR,
             "isolation: replay frame for user tag %u refused on conn %llu "
             "(user tag %u)",
             a->replay[i]->user, (unsigned long long)c->id, c->sub.uid);
    } else if (c->state != HD_CONN_CLOSED && push(c, a->replay[i]) == 0) {
      c->grace += a->replay[i]->len;
      replayed++;
    }
    hd_frame_unref(a->replay[i]);
  }
  free(a->replay);
  a->replay = NULL;
  if (a->resume && c->state != HD_CONN_CLOSED) {
    n = snprintf(
        msg, sizeof(msg),
        "{\"type\":\"resumed\",\"from_seq\":%llu,\"to_seq\":%llu,\"complete\":%s}",
        (unsigned long long)a->since_seq + 1, (unsigned long long)a->head_seq,
        a->complete && replayed == a->nreplay ? "true" : "false");
    queue_new(c, HD_WS_OP_TEXT, msg, (size_t)n);
  }
  hd_log(HD_LOG_DEBUG, "conn %llu: authenticated as %s%s", (unsigned long long)c->id,
         user_id, a->resume ? " (resume)" : "");
  return 0;
}

static void ws_feed(hd_conn_t *c, uint8_t *p, size_t n) {
  c->last_rx_s = c->w->now_s;
  while (n > 0 && (c->state == HD_CONN_WS || c->state == HD_CONN_CLOSING)) {
    hd_ws_event_t ev;
    int rc = hd_ws_reader_feed(&c->ws, p, n, &ev);

    if (rc < 0) {
      uint16_t code = hd_ws_reader_close_code(&c->ws);
      atomic_fetch_add(&c->w->stats.protocol_errors, 1);
      hd_log(HD_LOG_DEBUG, "conn %llu: %s, closing %u", (unsigned long long)c->id,
             hd_strerror(rc), code);
      hd_conn_ws_close(c, code,
                       code == HD_WS_CLOSE_BAD_DATA  ? "invalid UTF-8"
                       : code == HD_WS_CLOSE_TOO_BIG ? "message too big"
                                                     : "protocol error");
      return;
    }
    p += rc;
    n -= (size_t)rc;
    switch (ev.type) {
    case HD_WS_EV_NONE:
      break;
    case HD_WS_EV_MESSAGE:
      if (c->state == HD_CONN_WS) on_message(c, &ev);
      break;
    case HD_WS_EV_PING:
      /* RFC 6455 5.5.2: answer at once, also between fragments. */
      if (c->state == HD_CONN_WS) send_control(c, HD_WS_OP_PONG, ev.data, ev.len);
      break;
    case HD_WS_EV_PONG:
      break; /* unsolicited pongs are fine (5.5.3) */
    case HD_WS_EV_CLOSE:
      if (c->state == HD_CONN_WS) {
        /* Echo the peer's code (RFC 6455 5.5.1); none means an empty close. */
        uint8_t payload[2] = {(uint8_t)(ev.close_code >> 8), (uint8_t)ev.close_code};
        send_control(c, HD_WS_OP_CLOSE, payload,
                     ev.close_code == HD_WS_CLOSE_NO_STATUS ? 0 : 2);
        c->state = HD_CONN_CLOSING;
        c->close_after_write = true;
        if (c->qlen == 0) hd_conn_abort(c);
      } else {
        hd_conn_abort(c); /* the reply to our close: the handshake is done */
      }
      return;
    }
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  hd_conn_t *c = container_of(s, hd_conn_t, tcp);

  if (nread < 0) {
    hd_conn_abort(c);
    return;
  }
  if (nread == 0) return;
  if (c->state == HD_CONN_HTTP)
    http_feed(c, (uint8_t *)buf->base, (size_t)nread);
  else if (c->endpoint == HD_EP_NONE)
    return; /* lingering HTTP close: discard */
  else if (c->state == HD_CONN_WS || c->state == HD_CONN_CLOSING)
    ws_feed(c, (uint8_t *)buf->base, (size_t)nread);
}

/* ---- timers ------------------------------------------------------------------ */

void hd_conn_sweep(hd_conn_t *c) {
  hd_worker_t *w = c->w;
  hd_config_t *cfg = srv_of(c)->cfg;

  switch (c->state) {
  case HD_CONN_HTTP:
    if ((int32_t)(w->now_s - c->deadline_s) >= 0) {
      atomic_fetch_add(&w->stats.timeouts, 1);
      hd_conn_abort(c);
    }
    break;
  case HD_CONN_WS:
    if (c->qlen == 0 && c->q && c->wreq == NULL) {
      /* An idle connection gives its send ring back; a busy one reallocates
       * it at most once per sweep. */
      free(c->q);
      c->q = NULL;
      c->qcap = c->qhead = 0;
    }
    if (atomic_load(&c->inbox_lost)) {
      hd_conn_ws_close(c, HD_WS_CLOSE_INTERNAL, "events lost: reconnect to resume");
    } else if (c->endpoint == HD_EP_CLIENT && !c->authed &&
               (int32_t)(w->now_s - c->deadline_s) >= 0) {
      atomic_fetch_add(&w->stats.auth_failures, 1);
      hd_conn_ws_close(c, HD_WS_CLOSE_UNAUTHORIZED, "no auth message in time");
    } else if (c->authed && c->token_exp + cfg->jwt_leeway_s <= w->wall_s) {
      hd_conn_ws_close(c, HD_WS_CLOSE_TOKEN_EXPIRED, "token expired");
    } else if (w->now_s - c->last_rx_s >= 2 * cfg->heartbeat_s) {
      atomic_fetch_add(&w->stats.timeouts, 1);
      hd_log(HD_LOG_INFO, "conn %llu: silent for two heartbeats, closing",
             (unsigned long long)c->id);
      hd_conn_abort(c);
    } else if (w->now_s - c->last_ping_s >= cfg->heartbeat_s) {
      c->last_ping_s = w->now_s;
      hd_conn_send(c, w->ping);
    }
    break;
  case HD_CONN_CLOSING:
    if ((int32_t)(w->now_s - c->deadline_s) >= 0) hd_conn_abort(c);
    break;
  default:
    break;
  }
}
