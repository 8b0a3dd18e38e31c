/* The HTTP client: libcurl's multi socket API on a worker's uv loop.
 *
 * Each worker has a slot (slots[w->id]) holding its curl multi, the posts in
 * flight on it (a list), the sockets curl asked us to watch (a list of
 * uv_poll_t, one per socket, attached to curl's socket with
 * curl_multi_assign) and one uv_timer_t that carries curl's single timeout.
 * Only the worker's thread touches its slot; the slot array itself is made on
 * the main thread before the workers start and freed after they are joined.
 *
 * The loop, as curl's documentation for the socket API describes it: curl
 * tells us which sockets to watch (on_socket) and when to call it back at the
 * latest (on_curl_timer); we hand readiness and timer expiry back with
 * curl_multi_socket_action, then read finished transfers with
 * curl_multi_info_read. Callbacks to our users run only from there, never
 * from inside a curl callback, because curl forbids calling into the multi
 * (adding or removing handles) from its own callbacks.
 *
 * Invariants:
 *   - slot->timer is open exactly while slot->posts is non-empty (or until
 *     the slot goes idle at the end of the current dispatch); sockets still
 *     watched when the slot goes idle are closed with it. So an idle worker
 *     holds no handle of ours and a draining worker's loop can end; the multi
 *     and its cached connections stay for the next post.
 *   - a poll handle is freed in its close callback, never while curl may
 *     still report its socket: on CURL_POLL_REMOVE we detach it from curl
 *     first (curl_multi_assign NULL), then close it.
 *   - a post is in its slot's list exactly while its easy handle is in the
 *     multi.
 */
#include "net/http_client.h"

#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "herald/herald.h"
#include "net/net.h"

typedef struct slot_s slot_t;

typedef struct sock_s {
  uv_poll_t h;
  slot_t *slot;
  curl_socket_t fd;
  struct sock_s *prev, *next;
} sock_t;

struct slot_s {
  hd_worker_t *w;
  CURLM *multi;
  uv_timer_t *timer; /* open while posts are in flight */
  hd_http_post_t *posts;
  sock_t *socks;
};

struct hd_http_post_s {
  CURL *easy;
  slot_t *slot;
  struct curl_slist *headers;
  hd_http_done_cb cb;
  void *arg;
  hd_http_post_t *prev, *next;
  char errbuf[CURL_ERROR_SIZE];
};

static struct {
  slot_t **slots;
  int nslots;
  bool curl_ready;
} client;

/* ---- sockets and the timer ------------------------------------------------------ */

static void on_sock_closed(uv_handle_t *h) {
  free(h->data);
}

static void sock_close(sock_t *k) {
  slot_t *s = k->slot;

  if (k->prev)
    k->prev->next = k->next;
  else
    s->socks = k->next;
  if (k->next) k->next->prev = k->prev;
  uv_close((uv_handle_t *)&k->h, on_sock_closed);
}

static void on_timer_closed(uv_handle_t *h) {
  free(h);
}

static void dispatch(slot_t *s, curl_socket_t fd, int flags);

/* With no post in flight the slot gives back its handles (see the invariants). */
static void maybe_idle(slot_t *s) {
  if (s->posts != NULL) return;
  while (s->socks) {
    curl_multi_assign(s->multi, s->socks->fd, NULL);
    sock_close(s->socks);
  }
  if (s->timer) {
    uv_close((uv_handle_t *)s->timer, on_timer_closed);
    s->timer = NULL;
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  sock_t *k = h->data;
  int flags = 0;

  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  dispatch(k->slot, k->fd, flags);
}

static void on_timer(uv_timer_t *t) {
  dispatch(t->data, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what, or stop watching it. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  slot_t *s = userp;
  sock_t *k = socketp;
  int events = 0;

  if (what == CURL_POLL_REMOVE) {
    if (k) {
      curl_multi_assign(s->multi, fd, NULL);
      sock_close(k);
    }
    return 0;
  }
  if (k == NULL) {
    if ((k = calloc(1, sizeof(*k))) == NULL) return -1;
    if (uv_poll_init_socket(&s->w->loop, &k->h, fd) != 0) {
      free(k);
      return -1; /* curl fails the transfer that owns fd */
    }
    k->h.data = k;
    k->slot = s;
    k->fd = fd;
    k->next = s->socks;
    if (k->next) k->next->prev = k;
    s->socks = k;
    curl_multi_assign(s->multi, fd, k);
  }
  if (what & CURL_POLL_IN) events |= UV_READABLE;
  if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
  uv_poll_start(&k->h, events, on_poll);
  return 0;
}

/* CURLMOPT_TIMERFUNCTION: call curl back in timeout_ms (-1: never). A 0 ms
 * timer still fires from the loop, not from here, as curl requires. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  slot_t *s = userp;

  if (s->timer == NULL) return 0; /* idle: nothing to drive */
  if (timeout_ms < 0)
    uv_timer_stop(s->timer);
  else
    uv_timer_start(s->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

/* ---- posts ---------------------------------------------------------------------- */

/* Takes the post out of the multi and the slot; the caller frees it. */
static void detach(hd_http_post_t *p) {
  slot_t *s = p->slot;

  curl_multi_remove_handle(s->multi, p->easy);
  if (p->prev)
    p->prev->next = p->next;
  else
    s->posts = p->next;
  if (p->next) p->next->prev = p->prev;
  p->prev = p->next = NULL;
}

static void post_free(hd_http_post_t *p) {
  if (p->easy) curl_easy_cleanup(p->easy);
  curl_slist_free_all(p->headers);
  free(p);
}

static void finish(hd_http_post_t *p, CURLcode cc) {
  hd_http_result_t res = {0, 0, false, ""};
  long status = 0;

  if (cc == CURLE_OK) {
    curl_easy_getinfo(p->easy, CURLINFO_RESPONSE_CODE, &status);
    res.status = (int)status;
  } else {
    res.error = HD_EIO;
    res.timed_out = cc == CURLE_OPERATION_TIMEDOUT;
    res.detail = p->errbuf[0] ? p->errbuf : curl_easy_strerror(cc);
  }
  detach(p);
  if (p->cb) p->cb(p->arg, &res);
  post_free(p);
}

/* Hands an event to curl and completes what it finished. The slot outlives
 * this call: slots are freed only after the workers have stopped. */
static void dispatch(slot_t *s, curl_socket_t fd, int flags) {
  CURLMsg *msg;
  int running, left;

  curl_multi_socket_action(s->multi, fd, flags, &running);
  while ((msg = curl_multi_info_read(s->multi, &left)) != NULL) {
    char *priv = NULL;
    if (msg->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
    /* msg is invalid once the handle leaves the multi: read the result first. */
    finish((hd_http_post_t *)priv, msg->data.result);
  }
  maybe_idle(s);
}

static size_t discard(char *data, size_t size, size_t n, void *arg) {
  return size * n; /* the answer's status is all we use */
}

static slot_t *slot_of(hd_worker_t *w) {
  slot_t *s;

  if (w->id < 0 || w->id >= client.nslots) return NULL;
  if ((s = client.slots[w->id]) != NULL) return s;
  if ((s = calloc(1, sizeof(*s))) == NULL) return NULL;
  if ((s->multi = curl_multi_init()) == NULL) {
    free(s);
    return NULL;
  }
  s->w = w;
  curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
  curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
  client.slots[w->id] = s;
  return s;
}

int hd_http_post(hd_worker_t *w, const char *url, const char *const *headers,
                 const char *body, size_t len, unsigned timeout_ms, hd_http_done_cb cb,
                 void *arg, hd_http_post_t **out) {
  hd_http_post_t *p = NULL;
  struct curl_slist *l;
  slot_t *s;
  int rc = HD_ENOMEM;

  if (out) *out = NULL;
  if (w == NULL || url == NULL || (body == NULL && len > 0)) return HD_EINVAL;
  if (client.slots == NULL) return HD_EBUSY;
  if ((s = slot_of(w)) == NULL) return w->id < client.nslots ? HD_ENOMEM : HD_EINVAL;
  if ((p = calloc(1, sizeof(*p))) == NULL) goto fail;
  p->slot = s;
  p->cb = cb;
  p->arg = arg;
  if ((p->easy = curl_easy_init()) == NULL) goto fail;
  for (size_t i = 0; headers && headers[i]; i++) {
    if ((l = curl_slist_append(p->headers, headers[i])) == NULL) goto fail;
    p->headers = l;
  }
  /* An empty Expect: no "100-continue" round trip before larger bodies. */
  if ((l = curl_slist_append(p->headers, "Expect:")) == NULL) goto fail;
  p->headers = l;

  rc = HD_EIO;
  if (curl_easy_setopt(p->easy, CURLOPT_URL, url) != CURLE_OK ||
      curl_easy_setopt(p->easy, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
      curl_easy_setopt(p->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len) !=
          CURLE_OK ||
      curl_easy_setopt(p->easy, CURLOPT_COPYPOSTFIELDS, body ? body : "") != CURLE_OK ||
      curl_easy_setopt(p->easy, CURLOPT_HTTPHEADER, p->headers) != CURLE_OK)
    goto fail;
  /* NOSIGNAL: several threads use curl, and timeouts must not raise SIGALRM. */
  curl_easy_setopt(p->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(p->easy, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
  curl_easy_setopt(p->easy, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt(p->easy, CURLOPT_ERRORBUFFER, p->errbuf);
  curl_easy_setopt(p->easy, CURLOPT_PRIVATE, (char *)p);
  curl_easy_setopt(p->easy, CURLOPT_USERAGENT, "herald/" HD_VERSION_STRING);

  /* The timer must exist before the handle joins: adding it sets curl's
   * first timeout, synchronously. */
  if (s->timer == NULL) {
    rc = HD_ENOMEM;
    if ((s->timer = malloc(sizeof(*s->timer))) == NULL) goto fail;
    uv_timer_init(&w->loop, s->timer);
    s->timer->data = s;
  }
  p->next = s->posts;
  if (p->next) p->next->prev = p;
  s->posts = p;
  if (curl_multi_add_handle(s->multi, p->easy) != CURLM_OK) {
    s->posts = p->next;
    if (p->next) p->next->prev = NULL;
    rc = HD_EIO;
    goto fail;
  }
  if (out) *out = p;
  return 0;

fail:
  if (p) post_free(p);
  maybe_idle(s);
  return rc;
}

void hd_http_post_abort(hd_http_post_t *p) {
  slot_t *s;

  if (p == NULL) return;
  s = p->slot;
  detach(p);
  post_free(p);
  maybe_idle(s);
}

/* ---- setup and teardown ------------------------------------------------------ */

int hd_http_client_init(int nworkers) {
  if (client.slots != NULL) return HD_EBUSY;
  if (nworkers <= 0) return HD_EINVAL;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return HD_EIO;
  client.curl_ready = true;
  if ((client.slots = calloc((size_t)nworkers, sizeof(*client.slots))) == NULL) {
    hd_http_client_cleanup();
    return HD_ENOMEM;
  }
  client.nslots = nworkers;
  return 0;
}

void hd_http_client_cleanup(void) {
  for (int i = 0; i < client.nslots; i++) {
    slot_t *s = client.slots[i];
    if (s == NULL) continue;
    /* The worker's loop is gone: curl must not call back into it while the
     * cache closes its connections. A post still here means the loop stopped
     * with it in flight; its uv handles went with the loop. */
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, NULL);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, NULL);
    while (s->posts) {
      hd_http_post_t *p = s->posts;
      detach(p);
      post_free(p);
    }
    while (s->socks) {
      sock_t *k = s->socks;
      s->socks = k->next;
      free(k);
    }
    free(s->timer);
    curl_multi_cleanup(s->multi);
    free(s);
  }
  free(client.slots);
  client.slots = NULL;
  client.nslots = 0;
  if (client.curl_ready) curl_global_cleanup();
  client.curl_ready = false;
}
