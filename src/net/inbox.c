/* The manager's transport: how a frame published on one thread reaches a
 * connection owned by a worker.
 *
 * Each worker has an inbox: a mutex-protected array of (connection, frame)
 * items, double-buffered so the worker swaps it out in O(1) and processes it
 * without holding the lock. deliver() runs under the manager's user lock and
 * only appends and wakes the worker (uv_async_send coalesces wakeups), so
 * the items of one user land in every inbox in seq order. Each item holds a
 * reference to its connection, so a connection closed meanwhile stays
 * allocated until its items are drained; they are then dropped.
 *
 * Before a frame is written, the manager's isolation check compares the
 * frame's user tag with the connection's; a mismatch is never written.
 */
#include <stdlib.h>

#include "daemon/log.h"
#include "net/net.h"

#define container_of(p, type, field) ((type *)((char *)(p)-offsetof(type, field)))

static int push_item(hd_worker_t *w, hd_inbox_item_t item) {
  bool wake;

  uv_mutex_lock(&w->inbox_lock);
  if (w->inbox_len == w->inbox_cap) {
    size_t cap = w->inbox_cap ? w->inbox_cap * 2 : 256;
    hd_inbox_item_t *p = realloc(w->inbox, cap * sizeof(*p));
    if (p == NULL) {
      uv_mutex_unlock(&w->inbox_lock);
      hd_log(HD_LOG_ERROR, "inbox: out of memory");
      return HD_ENOMEM;
    }
    w->inbox = p;
    w->inbox_cap = cap;
  }
  w->inbox[w->inbox_len++] = item;
  wake = w->inbox_len == 1;
  uv_mutex_unlock(&w->inbox_lock);
  if (wake) uv_async_send(&w->wakeup);
  return 0;
}

static void enqueue(hd_conn_t *c, hd_frame_t *f, uint16_t code) {
  atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  if (f) hd_frame_ref(f);
  if (push_item(c->w, (hd_inbox_item_t){c, f, code, NULL, NULL}) < 0) {
    /* A dropped event would be a gap in the stream: close the connection
     * instead (the flag is read by its worker at the next sweep). */
    atomic_store(&c->inbox_lost, true);
    if (f) hd_frame_unref(f);
    hd_conn_unref(c);
  }
}

int hd_worker_post(hd_worker_t *w, void (*task)(hd_worker_t *w, void *arg), void *arg) {
  return push_item(w, (hd_inbox_item_t){NULL, NULL, 0, task, arg});
}

static void deliver(void *ud, hd_sub_t *sub, hd_frame_t *f) {
  enqueue(container_of(sub, hd_conn_t, sub), f, 0);
}

static void close_conn(void *ud, hd_sub_t *sub, uint16_t code) {
  enqueue(container_of(sub, hd_conn_t, sub), NULL, code);
}

const hd_transport_t hd_net_transport = {deliver, close_conn, NULL};

void hd_worker_drain_inbox(hd_worker_t *w, bool stopped) {
  hd_inbox_item_t *items;
  size_t n, cap;

  uv_mutex_lock(&w->inbox_lock);
  items = w->inbox;
  n = w->inbox_len;
  cap = w->inbox_cap;
  w->inbox = w->spare;
  w->inbox_cap = w->spare_cap;
  w->inbox_len = 0;
  w->spare = items;
  w->spare_cap = cap;
  uv_mutex_unlock(&w->inbox_lock);
  for (size_t i = 0; i < n; i++) {
    hd_inbox_item_t *it = &items[i];
    hd_conn_t *c = it->c;

    if (it->task) {
      it->task(stopped ? NULL : w, it->arg);
      continue;
    }
    if (it->f) {
      if (c->state == HD_CONN_WS && c->authed) {
        if (hd__manager_check_write(w->srv->manager, &c->sub, it->f)) {
          hd_conn_send(c, it->f);
          atomic_fetch_add(&w->stats.frames_out, 1);
        } else {
          hd_log(HD_LOG_ERROR,
                 "isolation: frame for user tag %u refused on conn %llu (user tag %u)",
                 it->f->user, (unsigned long long)c->id, c->sub.uid);
        }
      }
      hd_frame_unref(it->f);
    } else if (c->state == HD_CONN_WS) {
      hd_conn_ws_close(c, it->code, "disconnected by the backend");
    }
    hd_conn_unref(c);
  }
}
