/* The manager: the process's one registry of users and their connections.
 *
 * Structure. Users live in a hash table split into HD_SHARDS shards, each with
 * its own mutex, so publishes for different users rarely contend. A user record
 * holds the user's stream state (head seq) and the list of its registered
 * connections (hd_sub_t, embedded in the connection). Records are created on
 * first use and kept for the life of the process, so a user's seq never goes
 * back within an epoch.
 *
 * Ordering. A publish takes the user's shard lock, assigns seq = head + 1,
 * encodes the frame and hands it to the transport for each connection before
 * unlocking. Transports append to per-worker FIFO queues, so two publishes for
 * one user, racing on two workers, reach every connection in seq order.
 *
 * Isolation. Routing looks up exactly one user. Each frame also carries its
 * user's tag, and the network layer asks hd__manager_check_write() before
 * writing it: a frame whose tag differs from the connection's is refused and
 * counted. The count must stay 0; a unit test corrupts routing to prove the
 * check fires.
 *
 * The one instance. The struct is private to this file and created only by
 * hd_manager_get() through pthread_once; `instances` counts creations and is
 * what /ws-health reports.
 */
#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "core/manager_internal.h"
#include "herald/herald.h"

#define HD_SHARDS 64

typedef struct hd_user_s {
  struct hd_user_s *hnext;
  uint64_t hash;
  uint64_t seq;       /* head of the stream: the newest event's seq */
  hd_sub_t *subs;     /* registered connections */
  uint32_t nsubs;
  uint32_t uid;
  size_t id_len;
  char id[];
} hd_user_t;

typedef struct {
  pthread_mutex_t lock;
  hd_user_t **buckets;
  size_t nbuckets; /* power of two */
  size_t nusers;
} shard_t;

struct hd_manager_s {
  shard_t shards[HD_SHARDS];
  hd_transport_t transport;
  uint64_t seed;
  char epoch[HD_EPOCH_LEN + 1];
  atomic_bool draining;
  atomic_uint_fast32_t next_uid;
  atomic_uint_fast64_t connections;
  atomic_uint_fast64_t users;
  atomic_uint_fast64_t known_users;
  atomic_uint_fast64_t published;
  atomic_uint_fast64_t deliveries;
  atomic_uint_fast64_t violations;
};

static atomic_uint_fast64_t instances;
static hd_manager_t *instance;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static const char *const type_names[] = {
#define XX(name, wire) wire,
    HD_EVENT_TYPES(XX)
#undef XX
};

HD_EXPORT const char *hd_event_type_name(hd_event_type_t t) {
  return (unsigned)t < HD_EV__COUNT ? type_names[t] : NULL;
}

HD_EXPORT int hd_event_type_parse(const char *name, size_t len) {
  for (int i = 0; i < HD_EV__COUNT; i++)
    if (strlen(type_names[i]) == len && memcmp(type_names[i], name, len) == 0) return i;
  return -1;
}

static void create(void) {
  hd_manager_t *m = calloc(1, sizeof(*m));
  uint8_t rnd[HD_EPOCH_LEN / 2 + 8];

  if (m == NULL) abort(); /* nothing can work without it */
  for (int i = 0; i < HD_SHARDS; i++) pthread_mutex_init(&m->shards[i].lock, NULL);
  if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
    /* Fall back to time: epochs only need to differ between runs. */
    uint64_t t = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)m;
    for (size_t i = 0; i < sizeof(rnd); i++) rnd[i] = (uint8_t)(t >> (8 * (i % 8))) ^ (uint8_t)i;
  }
  for (int i = 0; i < HD_EPOCH_LEN / 2; i++) snprintf(m->epoch + 2 * i, 3, "%02x", rnd[i]);
  memcpy(&m->seed, rnd + HD_EPOCH_LEN / 2, 8);
  atomic_init(&m->next_uid, 1);
  atomic_fetch_add(&instances, 1);
  instance = m;
}

HD_EXPORT hd_manager_t *hd_manager_get(void) {
  pthread_once(&once, create);
  return instance;
}

void hd__manager_set_transport(hd_manager_t *m, const hd_transport_t *t) {
  m->transport = *t;
}

void hd__manager_set_draining(hd_manager_t *m, bool draining) {
  atomic_store(&m->draining, draining);
}

/* ---- the user table -------------------------------------------------------- */

static uint64_t hash_id(const hd_manager_t *m, const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull ^ m->seed; /* FNV-1a, seeded */
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
  return h ^ (h >> 29);
}

static shard_t *shard_of(hd_manager_t *m, uint64_t h) {
  return &m->shards[h % HD_SHARDS];
}

static hd_user_t *find(shard_t *s, uint64_t h, const char *id, size_t n) {
  if (s->nbuckets == 0) return NULL;
  for (hd_user_t *u = s->buckets[(h / HD_SHARDS) & (s->nbuckets - 1)]; u; u = u->hnext)
    if (u->hash == h && u->id_len == n && memcmp(u->id, id, n) == 0) return u;
  return NULL;
}

static int grow(shard_t *s) {
  size_t nb = s->nbuckets ? s->nbuckets * 2 : 16;
  hd_user_t **b = calloc(nb, sizeof(*b));

  if (b == NULL) return HD_ENOMEM;
  for (size_t i = 0; i < s->nbuckets; i++) {
    hd_user_t *u = s->buckets[i], *next;
    for (; u; u = next) {
      size_t k = (u->hash / HD_SHARDS) & (nb - 1);
      next = u->hnext;
      u->hnext = b[k];
      b[k] = u;
    }
  }
  free(s->buckets);
  s->buckets = b;
  s->nbuckets = nb;
  return 0;
}

/* Finds or creates the user; the shard is locked. */
static hd_user_t *intern(hd_manager_t *m, shard_t *s, uint64_t h, const char *id, size_t n) {
  hd_user_t *u = find(s, h, id, n);
  size_t k;

  if (u) return u;
  if (s->nusers >= s->nbuckets && grow(s) < 0) return NULL;
  if ((u = calloc(1, sizeof(*u) + n + 1)) == NULL) return NULL;
  u->hash = h;
  u->id_len = n;
  memcpy(u->id, id, n);
  u->uid = (uint32_t)atomic_fetch_add(&m->next_uid, 1);
  k = (h / HD_SHARDS) & (s->nbuckets - 1);
  u->hnext = s->buckets[k];
  s->buckets[k] = u;
  s->nusers++;
  atomic_fetch_add(&m->known_users, 1);
  return u;
}

static bool valid_id(const char *id, size_t *len) {
  if (id == NULL) return false;
  *len = strnlen(id, HD_ID_MAX + 1);
  return *len > 0 && *len <= HD_ID_MAX;
}

/* ---- connections -------------------------------------------------------------- */

int hd__manager_attach(hd_manager_t *m, hd_sub_t *sub, const char *user_id,
                       uint64_t *head_seq, char *epoch) {
  size_t n;
  uint64_t h;
  shard_t *s;
  hd_user_t *u;

  assert(sub->user == NULL);
  if (!valid_id(user_id, &n)) return HD_EINVAL;
  h = hash_id(m, user_id, n);
  s = shard_of(m, h);
  pthread_mutex_lock(&s->lock);
  if ((u = intern(m, s, h, user_id, n)) == NULL) {
    pthread_mutex_unlock(&s->lock);
    return HD_ENOMEM;
  }
  sub->user = u;
  sub->uid = u->uid;
  sub->prev = NULL;
  sub->next = u->subs;
  if (u->subs) u->subs->prev = sub;
  u->subs = sub;
  if (u->nsubs++ == 0) atomic_fetch_add(&m->users, 1);
  *head_seq = u->seq;
  memcpy(epoch, m->epoch, HD_EPOCH_LEN + 1);
  pthread_mutex_unlock(&s->lock);
  atomic_fetch_add(&m->connections, 1);
  return 0;
}

void hd__manager_detach(hd_manager_t *m, hd_sub_t *sub) {
  hd_user_t *u = sub->user;
  shard_t *s;

  if (u == NULL) return;
  s = shard_of(m, u->hash);
  pthread_mutex_lock(&s->lock);
  if (sub->prev) sub->prev->next = sub->next;
  else u->subs = sub->next;
  if (sub->next) sub->next->prev = sub->prev;
  if (--u->nsubs == 0) atomic_fetch_sub(&m->users, 1);
  pthread_mutex_unlock(&s->lock);
  sub->user = NULL;
  sub->prev = sub->next = NULL;
  atomic_fetch_sub(&m->connections, 1);
}

bool hd__manager_check_write(hd_manager_t *m, const hd_sub_t *sub, const hd_frame_t *f) {
  if (f->user == 0 || f->user == sub->uid) return true;
  atomic_fetch_add(&m->violations, 1);
  return false;
}

/* ---- publishing ------------------------------------------------------------------ */

size_t hd__json_escape(char *out, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  char *o = out;

  for (size_t i = 0; i < n; i++) {
    uint8_t c = (uint8_t)s[i];
    if (c == '"' || c == '\\') {
      *o++ = '\\';
      *o++ = (char)c;
    } else if (c < 0x20) {
      *o++ = '\\';
      *o++ = 'u';
      *o++ = '0';
      *o++ = '0';
      *o++ = hex[c >> 4];
      *o++ = hex[c & 15];
    } else {
      *o++ = (char)c;
    }
  }
  return (size_t)(o - out);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Everything of the envelope after the seq: built outside the lock. */
static char *encode_suffix(hd_manager_t *m, const hd_event_t *ev, size_t *len) {
  size_t tl = ev->thread_id ? strlen(ev->thread_id) : 0;
  size_t rl = ev->run_id ? strlen(ev->run_id) : 0;
  size_t cap = 128 + HD_EPOCH_LEN + 6 * (tl + rl) + ev->data_len;
  char *p = malloc(cap), *o = p;

  if (p == NULL) return NULL;
  o += sprintf(o, ",\"epoch\":\"%s\"", m->epoch);
  if (ev->thread_id) {
    o += sprintf(o, ",\"thread_id\":\"");
    o += hd__json_escape(o, ev->thread_id, tl);
    *o++ = '"';
  }
  if (ev->run_id) {
    o += sprintf(o, ",\"run_id\":\"");
    o += hd__json_escape(o, ev->run_id, rl);
    *o++ = '"';
  }
  o += sprintf(o, ",\"ts\":%lld,\"data\":", (long long)now_ms());
  memcpy(o, ev->data, ev->data_len);
  o += ev->data_len;
  *o++ = '}';
  *len = (size_t)(o - p);
  return p;
}

static bool valid_event(const hd_event_t *ev) {
  size_t n;
  if ((unsigned)ev->type >= HD_EV__COUNT || ev->data == NULL || ev->data_len == 0)
    return false;
  if (ev->thread_id && !valid_id(ev->thread_id, &n)) return false;
  if (ev->run_id && !valid_id(ev->run_id, &n)) return false;
  return true;
}

HD_EXPORT int hd_manager_publish(hd_manager_t *m, const char *user_id, const hd_event_t *ev,
                                 hd_publish_result_t *res) {
  char prefix[64], digits[24];
  size_t n, plen, dlen, slen;
  uint64_t h;
  shard_t *s;
  hd_user_t *u;
  hd_frame_t *f;
  char *suffix;
  uint32_t delivered = 0;

  if (!valid_id(user_id, &n) || !valid_event(ev)) return HD_EINVAL;
  if (atomic_load(&m->draining)) return HD_EBUSY;
  plen = (size_t)snprintf(prefix, sizeof(prefix), "{\"type\":\"%s\",\"seq\":",
                          type_names[ev->type]);
  if ((suffix = encode_suffix(m, ev, &slen)) == NULL) return HD_ENOMEM;
  h = hash_id(m, user_id, n);
  s = shard_of(m, h);

  pthread_mutex_lock(&s->lock);
  if ((u = intern(m, s, h, user_id, n)) == NULL) goto fail_locked;
  dlen = (size_t)snprintf(digits, sizeof(digits), "%llu", (unsigned long long)(u->seq + 1));
  f = hd_frame_alloc(0x1 /* text */, plen + dlen + slen);
  if (f == NULL) goto fail_locked;
  {
    uint8_t *p = hd_frame_payload(f, plen + dlen + slen);
    memcpy(p, prefix, plen);
    memcpy(p + plen, digits, dlen);
    memcpy(p + plen + dlen, suffix, slen);
  }
  f->user = u->uid;
  u->seq++;
  for (hd_sub_t *sub = u->subs; sub; sub = sub->next) {
    m->transport.deliver(m->transport.ud, sub, f);
    delivered++;
  }
  if (res) {
    res->seq = u->seq;
    res->delivered = delivered;
  }
  pthread_mutex_unlock(&s->lock);

  hd_frame_unref(f);
  free(suffix);
  atomic_fetch_add(&m->published, 1);
  atomic_fetch_add(&m->deliveries, delivered);
  return 0;

fail_locked:
  pthread_mutex_unlock(&s->lock);
  free(suffix);
  return HD_ENOMEM;
}

HD_EXPORT hd_scope_t hd_manager_scope(hd_manager_t *m, const hd_user_ctx_t *ctx) {
  hd_scope_t s = {m, ctx};
  return s;
}

HD_EXPORT int hd_scope_emit(hd_scope_t s, const hd_event_t *ev, hd_publish_result_t *res) {
  if (s.manager == NULL || s.ctx == NULL || s.ctx->user_id == NULL) return HD_EINVAL;
  return hd_manager_publish(s.manager, s.ctx->user_id, ev, res);
}

/* Runs fn on the user's record under its lock; returns false if unknown. */
static bool with_user(hd_manager_t *m, const char *user_id,
                      void (*fn)(hd_manager_t *, hd_user_t *, void *), void *arg) {
  size_t n;
  uint64_t h;
  shard_t *s;
  hd_user_t *u;

  if (!valid_id(user_id, &n)) return false;
  h = hash_id(m, user_id, n);
  s = shard_of(m, h);
  pthread_mutex_lock(&s->lock);
  if ((u = find(s, h, user_id, n)) != NULL) fn(m, u, arg);
  pthread_mutex_unlock(&s->lock);
  return u != NULL;
}

static void get_presence(hd_manager_t *m, hd_user_t *u, void *arg) {
  *(size_t *)arg = u->nsubs;
}

HD_EXPORT size_t hd_manager_presence(hd_manager_t *m, const char *user_id) {
  size_t n = 0;
  with_user(m, user_id, get_presence, &n);
  return n;
}

typedef struct {
  uint16_t code;
  size_t closed;
} close_arg_t;

static void close_all(hd_manager_t *m, hd_user_t *u, void *arg) {
  close_arg_t *a = arg;
  for (hd_sub_t *sub = u->subs; sub; sub = sub->next) {
    m->transport.close(m->transport.ud, sub, a->code);
    a->closed++;
  }
}

HD_EXPORT size_t hd_manager_disconnect(hd_manager_t *m, const char *user_id, uint16_t code) {
  close_arg_t a = {code, 0};
  with_user(m, user_id, close_all, &a);
  return a.closed;
}

static void get_seq(hd_manager_t *m, hd_user_t *u, void *arg) {
  *(uint64_t *)arg = u->seq;
}

HD_EXPORT uint64_t hd_manager_head_seq(hd_manager_t *m, const char *user_id) {
  uint64_t seq = 0;
  with_user(m, user_id, get_seq, &seq);
  return seq;
}

HD_EXPORT void hd_manager_epoch(hd_manager_t *m, const char *user_id, char *out) {
  memcpy(out, m->epoch, HD_EPOCH_LEN + 1);
}

HD_EXPORT void hd_manager_stats(hd_manager_t *m, hd_manager_stats_t *out) {
  out->connections = atomic_load(&m->connections);
  out->users = atomic_load(&m->users);
  out->known_users = atomic_load(&m->known_users);
  out->instances = atomic_load(&instances);
  out->events_published = atomic_load(&m->published);
  out->deliveries = atomic_load(&m->deliveries);
  out->isolation_violations = atomic_load(&m->violations);
}

HD_EXPORT const hd_manager_api_t *hd_manager_api(void) {
  static const hd_manager_api_t api = {
#define XX(ret, name, params, args) name,
      HD_MANAGER_OPS(XX)
#undef XX
  };
  return &api;
}
