/* Herald benchmark load generator: one thread, plain epoll, no dependency but
 * OpenSSL's HMAC (to mint HS256 tokens). Built by bench/Makefile.
 *
 *   loadgen echo --port P [--path /echo] [--conns 100] [--window 32] [--size 20]
 *                [--warmup 2] [--duration 10]
 *       Pipelined echo: every connection keeps `window` masked text messages of
 *       `size` bytes in flight; prints the echoes received per second, counted
 *       over `duration` seconds after `warmup`.
 *
 *   loadgen sub --port P --conns N [--users U] [--user-base B] [--warmup W] [--duration
 * D]
 *               [--hold]
 *       N authenticated /ws connections (connection i is user "u<B + i % U>", token in
 *       ?access_token=). Prints "READY <ms>" once every welcome arrived. With
 *       --hold it then waits for SIGTERM or EOF on stdin (idle-memory test);
 *       otherwise it counts agent_message events from the first one on, over
 *       [first + W, first + W + D], and the publish-to-receive latency of each
 *       (the publisher puts its CLOCK_MONOTONIC send time in data.delta).
 *
 *   loadgen pub --port P --users U --api-key K [--rate R] [--batch B] [--conns C]
 *               [--duration D] [--per-user K]
 *       C keep-alive publishers posting {"events":[...]} batches of B events to
 *       users u0..u(U-1) in turn (K consecutive events per user, default 1), as
 *       fast as the server answers (R = 0) or paced at R events per second.
 *
 *   loadgen hs --port P [--conc 64] [--users U] [--warmup W] [--duration D]
 *       Short connections: connect, GET /ws with `Authorization: Bearer` (a
 *       distinct pre-minted token per user), wait for the welcome, close.
 *       Prints completed handshakes per second.
 *
 * Common: --host 127.0.0.1, --src-ips K (bind to 127.0.0.2 .. 127.0.0.(K+1) in
 * turn, for more source ports), HERALD_JWT_SECRET from the environment.
 * Output: key=value pairs on stdout, the last line the load generator's own CPU time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* ---- options ----------------------------------------------------------------- */

static const char *o_host = "127.0.0.1", *o_path = "/echo", *o_key = "", *o_secret;
static int o_port, o_conns = 100, o_window = 32, o_size = 20, o_users = 0, o_batch = 1000;
static int o_conc = 64, o_src_ips = 0, o_hold = 0, o_user_base = 0, o_per_user = 1;
static double o_warmup = 2, o_duration = 10, o_rate = 0;

static void die(const char *m) {
  fprintf(stderr, "loadgen: %s: %s\n", m, strerror(errno));
  exit(2);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- buffers ----------------------------------------------------------------- */

typedef struct {
  char *p;
  size_t len, off, cap;
} buf_t;

static void buf_reserve(buf_t *b, size_t more) {
  if (b->off && b->off == b->len) b->off = b->len = 0;
  if (b->len + more <= b->cap) return;
  if (b->off) { /* compact first */
    memmove(b->p, b->p + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
    if (b->len + more <= b->cap) return;
  }
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + more) cap *= 2;
  b->p = realloc(b->p, cap);
  if (!b->p) die("realloc");
  b->cap = cap;
}

static void buf_add(buf_t *b, const void *d, size_t n) {
  buf_reserve(b, n);
  memcpy(b->p + b->len, d, n);
  b->len += n;
}

/* ---- tokens ------------------------------------------------------------------ */

static size_t b64url(const unsigned char *in, size_t n, char *out) {
  static const char t[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t o = 0, i = 0;
  for (; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = t[v >> 18 & 63], out[o++] = t[v >> 12 & 63];
    out[o++] = t[v >> 6 & 63], out[o++] = t[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    out[o++] = t[v >> 18 & 63], out[o++] = t[v >> 12 & 63];
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[o++] = t[v >> 18 & 63], out[o++] = t[v >> 12 & 63], out[o++] = t[v >> 6 & 63];
  }
  out[o] = 0;
  return o;
}

static char *mint(int user) {
  char payload[128], tok[512];
  unsigned char mac[32];
  unsigned int maclen = 32;
  int n = snprintf(payload, sizeof payload, "{\"sub\":\"u%d\",\"exp\":%lld}",
                   o_user_base + user, (long long)time(NULL) + 3600);
  size_t o =
      b64url((const unsigned char *)"{\"alg\":\"HS256\",\"typ\":\"JWT\"}", 27, tok);
  tok[o++] = '.';
  o += b64url((unsigned char *)payload, (size_t)n, tok + o);
  HMAC(EVP_sha256(), o_secret, (int)strlen(o_secret), (unsigned char *)tok, o, mac,
       &maclen);
  tok[o++] = '.';
  b64url(mac, 32, tok + o);
  return strdup(tok);
}

/* ---- connections --------------------------------------------------------------- */

enum { S_CONNECTING = 1, S_UPGRADING, S_OPEN, S_HTTP, S_DEAD };

typedef struct conn_s {
  int fd, state, user;
  bool want_out; /* EPOLLOUT registered */
  buf_t in, out;
  uint32_t inflight;
  /* publisher */
  bool busy;
  size_t resp_need; /* total bytes of the current response once known */
} conn_t;

static int ep;
static struct sockaddr_in dst;
static uint64_t src_rr;
static long n_connect_errors, n_closed_by_server, n_bad_upgrade;

static void conn_io(conn_t *c);

static void ep_set(conn_t *c, bool out) {
  struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) die("epoll_ctl mod");
  c->want_out = out;
}

static int conn_open(conn_t *c) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
  if (fd < 0) die("socket");
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (o_src_ips > 0) {
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(src_rr++ % (uint64_t)o_src_ips));
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) die("bind");
  }
  if (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS) {
    close(fd);
    n_connect_errors++;
    return -1;
  }
  c->fd = fd;
  c->state = S_CONNECTING;
  c->in.len = c->in.off = c->out.len = c->out.off = 0;
  c->inflight = 0;
  c->busy = false;
  c->resp_need = 0;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl add");
  c->want_out = true;
  return 0;
}

static void conn_close(conn_t *c) {
  if (c->fd >= 0) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
  }
  c->fd = -1;
  c->state = S_DEAD;
}

/* Writes what is queued; registers EPOLLOUT if the socket is full. */
static int conn_flush(conn_t *c) {
  while (c->out.off < c->out.len) {
    ssize_t n = write(c->fd, c->out.p + c->out.off, c->out.len - c->out.off);
    if (n > 0) {
      c->out.off += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!c->want_out) ep_set(c, true);
      return 0;
    }
    return -1;
  }
  c->out.off = c->out.len = 0;
  if (c->want_out && c->state != S_CONNECTING) ep_set(c, false);
  return 0;
}

/* Reads everything available into c->in. Returns bytes read, -1 on EOF/error. */
static ssize_t conn_read(conn_t *c) {
  ssize_t total = 0;
  for (;;) {
    buf_reserve(&c->in, 65536);
    ssize_t n = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
    if (n > 0) {
      c->in.len += (size_t)n;
      total += n;
      if ((size_t)n < 65536) return total;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return total;
    return -1;
  }
}

static void send_upgrade(conn_t *c, const char *path, const char *token, bool bearer) {
  char req[1024];
  int n;
  if (token && bearer)
    n = snprintf(
        req, sizeof req,
        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Authorization: Bearer %s\r\n\r\n",
        path, o_host, o_port, token);
  else if (token)
    n = snprintf(
        req, sizeof req,
        "GET %s?access_token=%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n",
        path, token, o_host, o_port);
  else
    n = snprintf(
        req, sizeof req,
        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: "
        "13\r\n\r\n",
        path, o_host, o_port);
  buf_add(&c->out, req, (size_t)n);
}

/* Consumes the HTTP upgrade response from c->in. 1: done (101), 0: need more, -1:
 * refused. */
static int take_upgrade(conn_t *c) {
  char *s = c->in.p + c->in.off;
  size_t n = c->in.len - c->in.off;
  char *e = memmem(s, n, "\r\n\r\n", 4);
  if (!e) return 0;
  if (n < 12 || memcmp(s + 9, "101", 3) != 0) return -1;
  c->in.off += (size_t)(e + 4 - s);
  return 1;
}

/* Next complete server frame in c->in: opcode, payload pointer and length.
 * Returns 1 with the frame consumed, 0 if incomplete. */
static int take_frame(conn_t *c, int *op, char **pl, size_t *plen) {
  unsigned char *s = (unsigned char *)c->in.p + c->in.off;
  size_t n = c->in.len - c->in.off, h = 2, len;
  if (n < 2) return 0;
  len = s[1] & 127;
  if (len == 126) {
    if (n < 4) return 0;
    len = (size_t)s[2] << 8 | s[3];
    h = 4;
  } else if (len == 127) {
    if (n < 10) return 0;
    len = 0;
    for (int i = 2; i < 10; i++) len = len << 8 | s[i];
    h = 10;
  }
  if (n < h + len) return 0;
  *op = s[0] & 15;
  *pl = (char *)s + h;
  *plen = len;
  c->in.off += h + len;
  return 1;
}

static const unsigned char MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

static void send_masked(conn_t *c, int op, const char *d, size_t n) {
  unsigned char hdr[8];
  size_t h = 2;
  hdr[0] = (unsigned char)(0x80 | op);
  hdr[1] = (unsigned char)(0x80 | n); /* control frames and small messages only */
  memcpy(hdr + h, MASK, 4);
  h += 4;
  buf_add(&c->out, hdr, h);
  buf_reserve(&c->out, n);
  for (size_t i = 0; i < n; i++) c->out.p[c->out.len + i] = (char)(d[i] ^ MASK[i & 3]);
  c->out.len += n;
}

/* ---- event loop -------------------------------------------------------------------- */

static volatile sig_atomic_t stop_flag;
static void on_signal(int s) {
  (void)s;
  stop_flag = 1;
}

static void loop_wait(const struct timespec *ts) {
  struct epoll_event evs[512];
  int n = epoll_pwait2(ep, evs, 512, ts, NULL);
  if (n < 0 && errno != EINTR) die("epoll_wait");
  for (int i = 0; i < n; i++) {
    conn_t *c = evs[i].data.ptr;
    if (c->state == S_CONNECTING) {
      int err = 0;
      socklen_t l = sizeof err;
      getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
      if (err) {
        n_connect_errors++;
        conn_close(c);
        continue;
      }
      c->state = S_UPGRADING;
    }
    conn_io(c);
  }
}

static void loop_once(int timeout_ms) {
  struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000};
  loop_wait(&ts);
}

/* ---- mode: echo ------------------------------------------------------------------- */

static conn_t *conns;
static uint64_t n_msgs;
static char *echo_frame;
static size_t echo_frame_len;

/* Reads, and while upgrading takes the 101: -1 when the connection was closed
 * (counted), 1 when it has just opened, 0 otherwise. */
static int read_upgrade(conn_t *c) {
  int r;

  if (conn_read(c) < 0) {
    n_closed_by_server++;
    conn_close(c);
    return -1;
  }
  if (c->state != S_UPGRADING) return 0;
  if ((r = take_upgrade(c)) < 0) {
    n_bad_upgrade++;
    conn_close(c);
    return -1;
  }
  if (r == 0) return 0;
  c->state = S_OPEN;
  return 1;
}

static void echo_io(conn_t *c) {
  int r;

  if (c->state == S_UPGRADING && c->in.len == 0 && c->out.len == 0 && c->inflight == 0) {
    send_upgrade(c, o_path, NULL, false);
    c->inflight = 1; /* marks "request sent" */
  }
  if ((r = read_upgrade(c)) < 0) return;
  if (r == 1) {
    for (int i = 0; i < o_window; i++) buf_add(&c->out, echo_frame, echo_frame_len);
    c->inflight = (uint32_t)o_window;
  }
  if (c->state == S_OPEN) {
    int op;
    char *pl;
    size_t len;
    uint32_t got = 0;
    while (take_frame(c, &op, &pl, &len))
      if (op == 1 || op == 2) got++;
    n_msgs += got;
    for (uint32_t i = 0; i < got; i++) buf_add(&c->out, echo_frame, echo_frame_len);
  }
  if (conn_flush(c) < 0) {
    n_closed_by_server++;
    conn_close(c);
  }
}

static void run_echo(void) {
  echo_frame_len = 6 + (size_t)o_size;
  echo_frame = malloc(echo_frame_len);
  char *msg = malloc((size_t)o_size);
  for (int i = 0; i < o_size; i++) msg[i] = (char)('a' + i % 26);
  echo_frame[0] = (char)0x81;
  echo_frame[1] = (char)(0x80 | o_size);
  memcpy(echo_frame + 2, MASK, 4);
  for (int i = 0; i < o_size; i++) echo_frame[6 + i] = (char)(msg[i] ^ MASK[i & 3]);
  conns = calloc((size_t)o_conns, sizeof *conns);
  for (int i = 0; i < o_conns; i++) conn_open(&conns[i]);
  uint64_t t0 = now_ns(), tw = t0 + (uint64_t)(o_warmup * 1e9),
           te = tw + (uint64_t)(o_duration * 1e9);
  uint64_t m0 = 0, t_start = 0;
  bool measuring = false;
  for (;;) {
    loop_once(50);
    uint64_t t = now_ns();
    if (!measuring && t >= tw) {
      measuring = true;
      m0 = n_msgs;
      t_start = t;
    }
    if (t >= te) {
      double secs = (double)(t - t_start) / 1e9;
      int open = 0;
      for (int i = 0; i < o_conns; i++) open += conns[i].state == S_OPEN;
      printf("mode=echo conns=%d open=%d window=%d size=%d msgs=%llu secs=%.3f "
             "msgs_per_s=%.0f "
             "connect_errors=%ld closed=%ld\n",
             o_conns, open, o_window, o_size, (unsigned long long)(n_msgs - m0), secs,
             (double)(n_msgs - m0) / secs, n_connect_errors, n_closed_by_server);
      return;
    }
  }
}

/* ---- mode: sub ----------------------------------------------------------------------
 */

#define LAT_BUCKETS 200000 /* 10 us each: up to 2 s */
static uint32_t *lat_hist;
static uint64_t lat_over, lat_n;
static int n_welcomed;
static uint64_t first_event_ns, win_start, win_end, n_events_win, n_frames_win,
    n_events_all;
static char **tokens;

static void record_events(const char *pl, size_t len, uint64_t t) {
  /* one agent_message frame: may be several merged events (seq_from..seq) */
  uint64_t events = 1;
  const char *sf = memmem(pl, len, "\"seq_from\":", 11);
  if (sf) {
    const char *sq = memmem(pl, len, "\"seq\":", 6);
    if (sq) {
      unsigned long long a = strtoull(sf + 11, NULL, 10), b = strtoull(sq + 6, NULL, 10);
      if (b >= a) events = b - a + 1;
    }
  }
  n_events_all += events;
  if (!first_event_ns) {
    first_event_ns = t;
    win_start = t + (uint64_t)(o_warmup * 1e9);
    win_end = win_start + (uint64_t)(o_duration * 1e9);
  }
  if (t < win_start || t >= win_end) return;
  n_events_win += events;
  n_frames_win++;
  /* send times: "delta":"T<ns>T<ns>..." */
  const char *d = memmem(pl, len, "\"delta\":\"", 9);
  if (!d) return;
  d += 9;
  const char *end = pl + len;
  while (d < end && *d == 'T') {
    char *next;
    unsigned long long s = strtoull(d + 1, &next, 10);
    d = next;
    if (s == 0 || s > t) continue;
    uint64_t us10 = (t - s) / 10000;
    if (us10 >= LAT_BUCKETS)
      lat_over++;
    else
      lat_hist[us10]++;
    lat_n++;
  }
}

static double lat_pct(double p) {
  uint64_t want = (uint64_t)(p * (double)lat_n), acc = 0;
  if (lat_n == 0) return -1;
  if (want >= lat_n) want = lat_n - 1;
  for (int i = 0; i < LAT_BUCKETS; i++) {
    acc += lat_hist[i];
    if (acc > want) return (i + 0.5) / 100.0; /* ms */
  }
  return LAT_BUCKETS / 100.0;
}

static void sub_io(conn_t *c) {
  if (c->state == S_UPGRADING && c->inflight == 0) {
    send_upgrade(c, "/ws", tokens[c->user], false);
    c->inflight = 1;
  }
  if (read_upgrade(c) < 0) return;
  if (c->state == S_OPEN) {
    int op;
    char *pl;
    size_t len;
    uint64_t t = 0;
    while (take_frame(c, &op, &pl, &len)) {
      if (op == 1) {
        if (len > 20 && memmem(pl, len < 40 ? len : 40, "\"agent_message\"", 15)) {
          if (!t) t = now_ns();
          record_events(pl, len, t);
        } else if (memmem(pl, len < 40 ? len : 40, "\"welcome\"", 9)) {
          n_welcomed++;
        }
      } else if (op == 9) {
        send_masked(c, 10, pl, len);
      } else if (op == 8) {
        n_closed_by_server++;
        conn_close(c);
        return;
      }
    }
  }
  if (conn_flush(c) < 0) {
    n_closed_by_server++;
    conn_close(c);
  }
}

static int users_of(void) {
  return o_users > 0 ? o_users : o_conns;
}

static void run_sub(void) {
  int users = users_of();
  tokens = calloc((size_t)users, sizeof *tokens);
  for (int i = 0; i < users; i++) tokens[i] = mint(i);
  lat_hist = calloc(LAT_BUCKETS, sizeof *lat_hist);
  conns = calloc((size_t)o_conns, sizeof *conns);
  uint64_t t0 = now_ns();
  /* connect in waves so the listen backlog never overflows */
  int opened = 0;
  while (n_welcomed + n_bad_upgrade + n_connect_errors + n_closed_by_server < o_conns) {
    while (opened < o_conns &&
           opened - (n_welcomed + n_bad_upgrade + n_connect_errors + n_closed_by_server) <
               256) {
      conns[opened].user = opened % users;
      conn_open(&conns[opened]);
      opened++;
    }
    loop_once(10);
    if (now_ns() - t0 > 120e9) break;
  }
  printf(
      "READY welcomed=%d connect_ms=%.0f bad_upgrade=%ld connect_errors=%ld closed=%ld\n",
      n_welcomed, (double)(now_ns() - t0) / 1e6, n_bad_upgrade, n_connect_errors,
      n_closed_by_server);
  fflush(stdout);
  if (o_hold) {
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    while (!stop_flag) {
      loop_once(100);
      if (poll(&pfd, 1, 0) > 0) {
        char b[64];
        if (read(0, b, sizeof b) <= 0) break;
      }
    }
    return;
  }
  uint64_t deadline = now_ns() + 60e9; /* wait at most 60 s for the first event */
  while (!stop_flag) {
    loop_once(20);
    uint64_t t = now_ns();
    if (first_event_ns ? t >= win_end : t >= deadline) break;
  }
  double secs = o_duration;
  printf("mode=sub conns=%d users=%d welcomed=%d events=%llu frames=%llu "
         "events_total=%llu secs=%.3f "
         "events_per_s=%.0f lat_n=%llu p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f "
         "max_over_2s=%llu closed=%ld\n",
         o_conns, users, n_welcomed, (unsigned long long)n_events_win,
         (unsigned long long)n_frames_win, (unsigned long long)n_events_all, secs,
         (double)n_events_win / secs, (unsigned long long)lat_n, lat_pct(0.5),
         lat_pct(0.9), lat_pct(0.99), lat_pct(0.999), (unsigned long long)lat_over,
         n_closed_by_server);
}

/* ---- mode: pub
 * ------------------------------------------------------------------------- */

static uint64_t pub_next_user, pub_events_sent, pub_batches_done, pub_delivered,
    pub_errors;
static uint64_t pub_next_send;

static void pub_send(conn_t *c) {
  static buf_t body;
  char ev[256];
  uint64_t t = now_ns();
  int users = users_of();
  body.len = body.off = 0;
  buf_add(&body, "{\"events\":[", 11);
  for (int i = 0; i < o_batch; i++) {
    int u = (int)(pub_next_user++ / (uint64_t)o_per_user % (uint64_t)users);
    int n = snprintf(ev, sizeof ev,
                     "%s{\"user_id\":\"u%d\",\"thread_id\":\"t1\",\"run_id\":\"r1\","
                     "\"type\":\"agent_message\",\"data\":{\"delta\":\"T%llu\"}}",
                     i ? "," : "", u, (unsigned long long)t);
    buf_add(&body, ev, (size_t)n);
  }
  buf_add(&body, "]}", 2);
  char hdr[256];
  int n = snprintf(
      hdr, sizeof hdr,
      "POST /api/v1/publish HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
      o_host, o_port, o_key, body.len);
  buf_add(&c->out, hdr, (size_t)n);
  buf_add(&c->out, body.p, body.len);
  c->busy = true;
  pub_events_sent += (uint64_t)o_batch;
}

static void pub_io(conn_t *c) {
  if (c->state == S_UPGRADING) c->state = S_HTTP; /* connected */
  if (conn_read(c) < 0) {
    n_closed_by_server++;
    conn_close(c);
    return;
  }
  for (;;) {
    char *s = c->in.p + c->in.off;
    size_t n = c->in.len - c->in.off;
    if (!c->resp_need) {
      char *e = n ? memmem(s, n, "\r\n\r\n", 4) : NULL;
      if (!e) break;
      char *cl = memmem(s, (size_t)(e - s), "Content-Length:", 15);
      if (!cl) cl = memmem(s, (size_t)(e - s), "content-length:", 15);
      size_t blen = cl ? strtoul(cl + 15, NULL, 10) : 0;
      if (n < 12 || memcmp(s + 9, "200", 3) != 0) pub_errors++;
      c->resp_need = (size_t)(e + 4 - s) + blen;
    }
    if (n < c->resp_need) break;
    /* count "delivered":N in the results */
    char *p = s, *end = s + c->resp_need;
    while ((p = memmem(p, (size_t)(end - p), "\"delivered\":", 12)) != NULL) {
      pub_delivered += strtoull(p + 12, NULL, 10);
      p += 12;
    }
    c->in.off += c->resp_need;
    c->resp_need = 0;
    c->busy = false;
    pub_batches_done++;
  }
  if (conn_flush(c) < 0) {
    n_closed_by_server++;
    conn_close(c);
  }
}

static void run_pub(void) {
  conns = calloc((size_t)o_conns, sizeof *conns);
  for (int i = 0; i < o_conns; i++) conn_open(&conns[i]);
  uint64_t t0 = now_ns(), te = t0 + (uint64_t)(o_duration * 1e9);
  uint64_t interval = o_rate > 0 ? (uint64_t)(1e9 * o_batch / o_rate) : 0;
  pub_next_send = t0;
  while (!stop_flag) {
    uint64_t t = now_ns();
    if (t >= te) break;
    for (int i = 0; i < o_conns; i++) {
      conn_t *c = &conns[i];
      if (c->state != S_HTTP || c->busy) continue;
      if (interval && t < pub_next_send) break;
      pub_send(c);
      if (conn_flush(c) < 0) conn_close(c);
      pub_next_send += interval;
      t = now_ns();
    }
    /* sleep until the next paced send (ns precision: no busy loop) */
    uint64_t wait_ns = 10000000;
    bool idle = false;
    for (int i = 0; i < o_conns; i++) idle |= conns[i].state == S_HTTP && !conns[i].busy;
    if (interval && idle) {
      t = now_ns();
      wait_ns = pub_next_send > t ? pub_next_send - t : 0;
      if (wait_ns > 10000000) wait_ns = 10000000;
    }
    struct timespec ts = {0, (long)wait_ns};
    loop_wait(&ts);
  }
  double secs = (double)(now_ns() - t0) / 1e9;
  printf("mode=pub batch=%d conns=%d events_sent=%llu batches_done=%llu delivered=%llu "
         "errors=%llu "
         "secs=%.3f sent_per_s=%.0f closed=%ld\n",
         o_batch, o_conns, (unsigned long long)pub_events_sent,
         (unsigned long long)pub_batches_done, (unsigned long long)pub_delivered,
         (unsigned long long)pub_errors, secs, (double)pub_events_sent / secs,
         n_closed_by_server);
}

/* ---- mode: hs
 * ----------------------------------------------------------------------------- */

static uint64_t hs_done, hs_failed, hs_next_user;

static void hs_start(conn_t *c) {
  c->user = (int)(hs_next_user++ % (uint64_t)users_of());
  if (conn_open(c) != 0) hs_failed++;
}

static void hs_io(conn_t *c) {
  if (c->state == S_UPGRADING && c->inflight == 0) {
    send_upgrade(c, "/ws", tokens[c->user], true);
    c->inflight = 1;
  }
  ssize_t r = conn_read(c);
  if (c->state == S_UPGRADING) {
    int u = take_upgrade(c);
    if (u < 0) {
      hs_failed++;
      conn_close(c);
      hs_start(c);
      return;
    }
    if (u == 1) c->state = S_OPEN;
  }
  if (c->state == S_OPEN) {
    int op;
    char *pl;
    size_t len;
    while (take_frame(c, &op, &pl, &len)) {
      if (op == 1 && memmem(pl, len, "\"welcome\"", 9)) {
        hs_done++;
        conn_close(c);
        hs_start(c);
        return;
      }
    }
  }
  if (r < 0 || conn_flush(c) < 0) {
    hs_failed++;
    conn_close(c);
    hs_start(c);
  }
}

static void run_hs(void) {
  int users = users_of();
  tokens = calloc((size_t)users, sizeof *tokens);
  for (int i = 0; i < users; i++) tokens[i] = mint(i);
  conns = calloc((size_t)o_conc, sizeof *conns);
  for (int i = 0; i < o_conc; i++) hs_start(&conns[i]);
  uint64_t t0 = now_ns(), tw = t0 + (uint64_t)(o_warmup * 1e9),
           te = tw + (uint64_t)(o_duration * 1e9);
  uint64_t d0 = 0, f0 = 0, ts = 0;
  bool measuring = false;
  for (;;) {
    loop_once(20);
    uint64_t t = now_ns();
    if (!measuring && t >= tw) measuring = true, d0 = hs_done, f0 = hs_failed, ts = t;
    if (t >= te) {
      double secs = (double)(t - ts) / 1e9;
      printf(
          "mode=hs conc=%d users=%d handshakes=%llu failed=%llu secs=%.3f hs_per_s=%.0f "
          "connect_errors=%ld\n",
          o_conc, users, (unsigned long long)(hs_done - d0),
          (unsigned long long)(hs_failed - f0), secs, (double)(hs_done - d0) / secs,
          n_connect_errors);
      return;
    }
  }
}

/* ---- main
 * -------------------------------------------------------------------------------------
 */

static void conn_io(conn_t *c) {
  extern int g_mode;
  switch (g_mode) {
  case 0:
    echo_io(c);
    break;
  case 1:
    sub_io(c);
    break;
  case 2:
    pub_io(c);
    break;
  default:
    hs_io(c);
    break;
  }
}

int g_mode;

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: loadgen echo|sub|pub|hs [options] (see the source)\n");
    return 2;
  }
  const char *mode = argv[1];
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--hold")) {
      o_hold = 1;
      continue;
    }
    if (!v) {
      fprintf(stderr, "loadgen: %s needs a value\n", a);
      return 2;
    }
    i++;
    if (!strcmp(a, "--host"))
      o_host = v;
    else if (!strcmp(a, "--port"))
      o_port = atoi(v);
    else if (!strcmp(a, "--path"))
      o_path = v;
    else if (!strcmp(a, "--conns"))
      o_conns = atoi(v);
    else if (!strcmp(a, "--window"))
      o_window = atoi(v);
    else if (!strcmp(a, "--size"))
      o_size = atoi(v);
    else if (!strcmp(a, "--users"))
      o_users = atoi(v);
    else if (!strcmp(a, "--user-base"))
      o_user_base = atoi(v);
    else if (!strcmp(a, "--per-user"))
      o_per_user = atoi(v) > 0 ? atoi(v) : 1;
    else if (!strcmp(a, "--batch"))
      o_batch = atoi(v);
    else if (!strcmp(a, "--conc"))
      o_conc = atoi(v);
    else if (!strcmp(a, "--src-ips"))
      o_src_ips = atoi(v);
    else if (!strcmp(a, "--warmup"))
      o_warmup = atof(v);
    else if (!strcmp(a, "--duration"))
      o_duration = atof(v);
    else if (!strcmp(a, "--rate"))
      o_rate = atof(v);
    else if (!strcmp(a, "--api-key"))
      o_key = v;
    else {
      fprintf(stderr, "loadgen: unknown option %s\n", a);
      return 2;
    }
  }
  if (o_size > 125) o_size = 125;
  o_secret = getenv("HERALD_JWT_SECRET");
  if (!o_secret) o_secret = "";
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  dst.sin_family = AF_INET;
  dst.sin_port = htons((uint16_t)o_port);
  if (inet_pton(AF_INET, o_host, &dst.sin_addr) != 1) {
    fprintf(stderr, "loadgen: bad host %s\n", o_host);
    return 2;
  }
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  if (!strcmp(mode, "echo"))
    g_mode = 0, run_echo();
  else if (!strcmp(mode, "sub"))
    g_mode = 1, run_sub();
  else if (!strcmp(mode, "pub"))
    g_mode = 2, run_pub();
  else if (!strcmp(mode, "hs"))
    g_mode = 3, run_hs();
  else {
    fprintf(stderr, "loadgen: unknown mode %s\n", mode);
    return 2;
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("loadgen_cpu_s=%.3f\n", (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                                     (double)ru.ru_stime.tv_sec +
                                     ru.ru_stime.tv_usec / 1e6);
  fflush(stdout);
  return 0;
}
