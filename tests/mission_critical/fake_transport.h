/* A fake transport for tests of the manager: connections that record.
 *
 * A test embeds the manager's hd_sub_t in fake_conn_t (as the network layer
 * embeds it in hd_conn_t), registers it with fake_attach(), and after a
 * publish reads what the manager handed to the transport: the frames (each
 * holding a reference) and close requests. Nothing is written anywhere.
 *
 * fake_misroute, when set, makes deliver() record every frame on that
 * connection instead of the one the manager named: the corrupted routing the
 * isolation tests use to prove the write-time check fires.
 *
 * Thread-safety: each connection has its own mutex, so publishes from many
 * threads may record concurrently. Header-only (static functions): used by
 * tests/unit/test_manager.c and the mission-critical C tests.
 */
#ifndef HD_TEST_FAKE_TRANSPORT_H
#define HD_TEST_FAKE_TRANSPORT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/frame.h"
#include "core/manager_internal.h"

typedef struct fake_conn_s {
  hd_sub_t sub; /* the registration; the manager only ever sees this */
  const char *user;
  pthread_mutex_t lock;
  hd_frame_t **frames; /* recorded frames, one reference each */
  size_t nframes, cap;
  unsigned closes;
  uint16_t close_code;
  bool attached;
} fake_conn_t;

static fake_conn_t *_Atomic fake_misroute;
static atomic_ulong fake_delivered_total;
static atomic_ulong fake_closes_total;

#define FAKE_CONN_OF(s) ((fake_conn_t *)((char *)(s)-offsetof(fake_conn_t, sub)))

static inline void fake_deliver(void *ud, hd_sub_t *sub, hd_frame_t *f) {
  fake_conn_t *c = atomic_load(&fake_misroute);
  (void)ud;
  if (c == NULL) c = FAKE_CONN_OF(sub);
  pthread_mutex_lock(&c->lock);
  if (c->nframes == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 16;
    hd_frame_t **p = realloc(c->frames, cap * sizeof(*p));
    if (p == NULL) abort();
    c->frames = p;
    c->cap = cap;
  }
  c->frames[c->nframes++] = hd_frame_ref(f);
  pthread_mutex_unlock(&c->lock);
  atomic_fetch_add(&fake_delivered_total, 1);
}

static inline void fake_close(void *ud, hd_sub_t *sub, uint16_t code) {
  fake_conn_t *c = FAKE_CONN_OF(sub);
  (void)ud;
  pthread_mutex_lock(&c->lock);
  c->closes++;
  c->close_code = code;
  pthread_mutex_unlock(&c->lock);
  atomic_fetch_add(&fake_closes_total, 1);
}

/* Installs the fake transport on the process's manager; idempotent. */
static inline hd_manager_t *fake_install(void) {
  static const hd_transport_t t = {fake_deliver, fake_close, NULL};
  hd_manager_t *m = hd_manager_get();
  hd__manager_set_transport(m, &t);
  return m;
}

static inline void fake_init(fake_conn_t *c) {
  memset(c, 0, sizeof(*c));
  pthread_mutex_init(&c->lock, NULL);
}

/* Registers c as user; head/epoch (HD_EPOCH_LEN + 1 bytes) may be NULL.
 * Returns hd__manager_attach's result. */
static inline int fake_attach(fake_conn_t *c, const char *user, uint64_t *head,
                              char *epoch) {
  hd_attach_t a;
  int rc;

  memset(&a, 0, sizeof(a));
  rc = hd__manager_attach(hd_manager_get(), &c->sub, user, &a);
  if (rc == 0) {
    c->user = user;
    c->attached = true;
    if (head) *head = a.head_seq;
    if (epoch) memcpy(epoch, a.epoch, HD_EPOCH_LEN + 1);
  }
  free(a.replay); /* no resume asked: nothing to unref */
  return rc;
}

static inline void fake_detach(fake_conn_t *c) {
  if (c->attached) hd__manager_detach(hd_manager_get(), &c->sub);
  c->attached = false;
}

/* Drops the recorded frames and close requests. */
static inline void fake_clear(fake_conn_t *c) {
  pthread_mutex_lock(&c->lock);
  for (size_t i = 0; i < c->nframes; i++) hd_frame_unref(c->frames[i]);
  c->nframes = 0;
  c->closes = 0;
  c->close_code = 0;
  pthread_mutex_unlock(&c->lock);
}

static inline void fake_dispose(fake_conn_t *c) {
  fake_detach(c);
  fake_clear(c);
  free(c->frames);
  c->frames = NULL;
  c->cap = 0;
  pthread_mutex_destroy(&c->lock);
}

/* The payload of a server frame, decoded from its RFC 6455 header here (not
 * with the library's helper): FIN + opcode byte, then an unmasked length of
 * 7, 7+16 or 7+64 bits (RFC 6455 5.2). NULL if the header is not that. */
static inline const uint8_t *fake_payload(const hd_frame_t *f, size_t *len) {
  size_t h, n;
  uint8_t b1;

  if (f->len < 2 || (f->data[1] & 0x80)) return NULL; /* servers never mask */
  b1 = f->data[1] & 0x7F;
  if (b1 < 126) {
    h = 2;
    n = b1;
  } else if (b1 == 126) {
    h = 4;
    n = ((size_t)f->data[2] << 8) | f->data[3];
  } else {
    h = 10;
    n = 0;
    for (int i = 0; i < 8; i++) n = (n << 8) | f->data[2 + i];
  }
  if (h + n != f->len) return NULL;
  *len = n;
  return f->data + h;
}

/* The frame's JSON (caller json_decref()s), or NULL if it is not JSON. */
static inline json_t *fake_json(const hd_frame_t *f) {
  size_t n;
  const uint8_t *p = fake_payload(f, &n);
  json_error_t err;
  return p ? json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &err) : NULL;
}

#endif
