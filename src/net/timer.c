/* One-shot timers on a worker's loop, for code outside src/net (agents).
 *
 * hd_timer_free() may be called from the timer's own callback: the handle is
 * closed asynchronously and the memory released in the close callback, as
 * libuv requires. */
#include <stdlib.h>

#include "net/net.h"

struct hd_timer_s {
  uv_timer_t h;
  void (*cb)(void *arg);
  void *arg;
};

static void on_timer(uv_timer_t *h) {
  hd_timer_t *t = h->data;
  t->cb(t->arg);
}

static void on_close(uv_handle_t *h) {
  free(h->data);
}

hd_timer_t *hd_timer_new(hd_worker_t *w, void (*cb)(void *arg), void *arg) {
  hd_timer_t *t = malloc(sizeof(*t));

  if (t == NULL) return NULL;
  uv_timer_init(&w->loop, &t->h);
  t->h.data = t;
  t->cb = cb;
  t->arg = arg;
  return t;
}

void hd_timer_start(hd_timer_t *t, uint64_t ms) {
  uv_timer_start(&t->h, on_timer, ms, 0);
}

void hd_timer_free(hd_timer_t *t) {
  if (t == NULL) return;
  uv_timer_stop(&t->h);
  uv_close((uv_handle_t *)&t->h, on_close);
}
