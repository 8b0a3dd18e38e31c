/* The manager: the process's one registry of users and their connections.
 *
 * Structure. Users live in a hash table split into HD_SHARDS shards, each with
 * its own mutex, so publishes for different users rarely contend. A user record
 * holds the user's stream state (head seq) and the list of its registered
 * connections (hd_sub_t, embedded in the connection). Records are created on
 * first use. A record with no connection, no retained event and no run in
 * flight is dropped by the periodic sweep, so memory follows the active users,
 * not every id ever seen; a later record for the same id gets a new epoch
 * (process prefix + creation number), so seq never goes back within an epoch.
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
 * History. Each user keeps its recent events (the encoded frames themselves,
 * shared with the connections) in a ring ordered by seq: the retained range is
 * (evicted_through, seq]. Events leave from the front only, so the range stays
 * contiguous and a resume is complete exactly when since_seq >= evicted_through.
 * Limits: per-user count and age (soft for events of runs still in flight:
 * run-aware retention), per-user bytes (hard) and a global byte cap (hard,
 * oldest first across users, through a global FIFO of (user, seq)).
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

#include <jansson.h>
#include <openssl/rand.h>

#include "core/manager_internal.h"
#include "herald/herald.h"

#define HD_SHARDS 64

#define MAX_RUNS       64 /* runs in flight tracked per user */
#define ENTRY_OVERHEAD 64 /* bookkeeping bytes counted per retained event */

typedef struct {
  hd_frame_t *f;
  uint64_t seq;
  int64_t ts_ms;
  uint32_t run; /* serial of the run it belongs to, 0 if none */
  uint32_t cost;
} hist_t;

typedef struct {
  uint32_t serial;
  uint64_t first_seq;
  int64_t last_ms; /* when the run's latest event was published */
  char *run_id;
  char *thread_id; /* NULL if none */
} run_t;

typedef struct hd_user_s {
  struct hd_user_s *hnext;
  uint64_t hash;
  uint64_t seq;                         /* head of the stream: the newest event's seq */
  atomic_uint_fast64_t evicted_through; /* the newest seq no longer retained */
  atomic_uint fifo_refs; /* entries in the global FIFO naming this record */
  char epoch[HD_EPOCH_LEN + 1];
  hd_sub_t *subs; /* registered connections */
  uint32_t nsubs;
  uint32_t uid;
  hist_t *hist; /* ring */
  size_t hcap, hhead, hlen, hbytes;
  run_t *runs; /* in flight, oldest first; grown on demand */
  uint32_t nruns, runs_cap;
  uint32_t next_run;
  size_t id_len;
  char id[];
} hd_user_t;

typedef struct {
  hd_user_t *u;
  uint64_t seq;
} fifo_t;

typedef struct {
  pthread_mutex_t lock;
  hd_user_t **buckets;
  size_t nbuckets; /* power of two */
  size_t nusers;
} shard_t;

struct hd_manager_s {
  shard_t shards[HD_SHARDS];
  hd_transport_t transport;
  hd_history_limits_t limits;
  pthread_mutex_t fifo_lock; /* the global eviction order; taken after a shard */
  fifo_t *fifo;
  size_t fcap, fhead, flen;
  atomic_size_t hist_total; /* bytes counted against limits.max_total */
  atomic_size_t hist_events;
  atomic_uint_fast64_t evictions;
  uint64_t seed;
  char epoch_prefix[HD_EPOCH_LEN / 2 + 1]; /* this process's half of every epoch */
  atomic_uint_fast64_t created;            /* user records made: the other half */
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
  pthread_mutex_init(&m->fifo_lock, NULL);
  m->limits = (hd_history_limits_t){1000, 1 << 20, 600 * 1000, (size_t)256 << 20};
  if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
    /* Fall back to time: epochs only need to differ between runs. */
    uint64_t t = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)m;
    for (size_t i = 0; i < sizeof(rnd); i++)
      rnd[i] = (uint8_t)(t >> (8 * (i % 8))) ^ (uint8_t)i;
  }
  for (int i = 0; i < HD_EPOCH_LEN / 4; i++)
    snprintf(m->epoch_prefix + 2 * i, 3, "%02x", rnd[i]);
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

void hd__manager_configure(hd_manager_t *m, const hd_history_limits_t *limits) {
  m->limits = *limits;
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
static hd_user_t *intern(hd_manager_t *m, shard_t *s, uint64_t h, const char *id,
                         size_t n) {
  hd_user_t *u = find(s, h, id, n);
  size_t k;

  if (u) return u;
  if (s->nusers >= s->nbuckets && grow(s) < 0) return NULL;
  if ((u = calloc(1, sizeof(*u) + n + 1)) == NULL) return NULL;
  u->hash = h;
  u->id_len = n;
  memcpy(u->id, id, n);
  u->uid = (uint32_t)atomic_fetch_add(&m->next_uid, 1);
  snprintf(u->epoch, sizeof(u->epoch), "%s%016llx", m->epoch_prefix,
           (unsigned long long)atomic_fetch_add(&m->created, 1));
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

static bool with_user(hd_manager_t *m, const char *user_id,
                      void (*fn)(hd_manager_t *, hd_user_t *, void *), void *arg);

/* ---- history ------------------------------------------------------------- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static hist_t *hist_at(hd_user_t *u, size_t i) {
  return &u->hist[(u->hhead + i) % u->hcap];
}

static run_t *find_run(hd_user_t *u, const char *run_id) {
  for (uint32_t i = 0; i < u->nruns; i++)
    if (strcmp(u->runs[i].run_id, run_id) == 0) return &u->runs[i];
  return NULL;
}

static bool run_active(const hd_user_t *u, uint32_t serial) {
  for (uint32_t i = 0; serial && i < u->nruns; i++)
    if (u->runs[i].serial == serial) return true;
  return false;
}

static void drop_run(hd_user_t *u, run_t *r) {
  free(r->run_id);
  free(r->thread_id);
  memmove(r, r + 1, (size_t)(u->runs + u->nruns - (r + 1)) * sizeof(*r));
  u->nruns--;
}

static void pop_front(hd_manager_t *m, hd_user_t *u) {
  hist_t *e = hist_at(u, 0);

  atomic_store(&u->evicted_through, e->seq);
  u->hbytes -= e->cost;
  atomic_fetch_sub(&m->hist_total, e->cost);
  atomic_fetch_sub(&m->hist_events, 1);
  atomic_fetch_add(&m->evictions, 1);
  hd_frame_unref(e->f);
  u->hhead = (u->hhead + 1) % u->hcap;
  u->hlen--;
}

/* Applies the per-user limits; the user's shard is locked. Count and age spare
 * the events of runs in flight; bytes do not. */
static void evict(hd_manager_t *m, hd_user_t *u, int64_t now) {
  while (u->hlen) {
    hist_t *e = hist_at(u, 0);
    bool spare = run_active(u, e->run);
    if (u->hbytes > m->limits.max_bytes ||
        (!spare &&
         (u->hlen > m->limits.max_events || now - e->ts_ms > m->limits.max_age_ms)))
      pop_front(m, u);
    else
      break;
  }
}

/* Appends the FIFO entry for a new event; shard locked, then the FIFO lock.
 * Entries whose event is already gone are compacted away once they make up
 * half of the FIFO, so its size stays within twice the retained events. */
static int fifo_push(hd_manager_t *m, hd_user_t *u, uint64_t seq) {
  int rc = 0;

  pthread_mutex_lock(&m->fifo_lock);
  if (m->flen > 1024 && m->flen > 2 * atomic_load(&m->hist_events)) {
    size_t k = 0;
    for (size_t i = 0; i < m->flen; i++) {
      fifo_t e = m->fifo[(m->fhead + i) % m->fcap];
      if (e.seq > atomic_load(&e.u->evicted_through))
        m->fifo[(m->fhead + k++) % m->fcap] = e;
      else
        atomic_fetch_sub(&e.u->fifo_refs, 1);
    }
    m->flen = k;
  }
  if (m->flen == m->fcap) {
    size_t cap = m->fcap ? m->fcap * 2 : 1024;
    fifo_t *f = malloc(cap * sizeof(*f));
    if (f == NULL) {
      rc = HD_ENOMEM;
      goto out;
    }
    for (size_t i = 0; i < m->flen; i++) f[i] = m->fifo[(m->fhead + i) % m->fcap];
    free(m->fifo);
    m->fifo = f;
    m->fcap = cap;
    m->fhead = 0;
  }
  m->fifo[(m->fhead + m->flen++) % m->fcap] = (fifo_t){u, seq};
  atomic_fetch_add(&u->fifo_refs, 1);
out:
  pthread_mutex_unlock(&m->fifo_lock);
  return rc;
}

/* Enforces the global cap, oldest events first across users. Called with no
 * lock held: takes the FIFO lock, then (after releasing it) one shard. */
static void evict_global(hd_manager_t *m) {
  while (atomic_load(&m->hist_total) > m->limits.max_total) {
    fifo_t e;
    shard_t *s;

    pthread_mutex_lock(&m->fifo_lock);
    if (m->flen == 0) {
      pthread_mutex_unlock(&m->fifo_lock);
      return;
    }
    e = m->fifo[m->fhead];
    m->fhead = (m->fhead + 1) % m->fcap;
    m->flen--;
    pthread_mutex_unlock(&m->fifo_lock);
    s = shard_of(m, e.u->hash);
    pthread_mutex_lock(&s->lock);
    while (e.u->hlen && hist_at(e.u, 0)->seq <= e.seq) pop_front(m, e.u);
    /* Dropped only under the shard lock, so the sweep cannot free e.u while
     * this entry still names it. */
    atomic_fetch_sub(&e.u->fifo_refs, 1);
    pthread_mutex_unlock(&s->lock);
  }
}

/* Records the event in the user's history and run table; shard locked. */
static int remember(hd_manager_t *m, hd_user_t *u, hd_frame_t *f, const hd_event_t *ev,
                    int64_t now) {
  run_t *r = ev->run_id ? find_run(u, ev->run_id) : NULL;
  uint32_t cost = f->len + ENTRY_OVERHEAD;

  if (ev->type == HD_EV_AGENT_STARTED && ev->run_id && r == NULL) {
    if (u->nruns == MAX_RUNS) drop_run(u, &u->runs[0]); /* forget the oldest */
    if (u->nruns == u->runs_cap) {
      uint32_t cap = u->runs_cap ? u->runs_cap * 2 : 2;
      run_t *grown = realloc(u->runs, cap * sizeof(*grown));
      if (grown == NULL) return HD_ENOMEM;
      u->runs = grown;
      u->runs_cap = cap;
    }
    r = &u->runs[u->nruns];
    r->run_id = strdup(ev->run_id);
    r->thread_id = ev->thread_id ? strdup(ev->thread_id) : NULL;
    if (r->run_id == NULL || (ev->thread_id && r->thread_id == NULL)) {
      free(r->run_id);
      free(r->thread_id);
      return HD_ENOMEM;
    }
    r->serial = ++u->next_run ? u->next_run : ++u->next_run;
    r->first_seq = f->seq;
    u->nruns++;
  }
  if (r) r->last_ms = now;
  if (u->hlen == u->hcap) {
    size_t cap = u->hcap ? u->hcap * 2 : 16;
    hist_t *h = malloc(cap * sizeof(*h));
    if (h == NULL) return HD_ENOMEM;
    for (size_t i = 0; i < u->hlen; i++) h[i] = *hist_at(u, i);
    free(u->hist);
    u->hist = h;
    u->hcap = cap;
    u->hhead = 0;
  }
  if (fifo_push(m, u, f->seq) < 0) return HD_ENOMEM;
  *hist_at(u, u->hlen++) =
      (hist_t){hd_frame_ref(f), f->seq, now, r ? r->serial : 0, cost};
  u->hbytes += cost;
  atomic_fetch_add(&m->hist_total, cost);
  atomic_fetch_add(&m->hist_events, 1);
  if (ev->type == HD_EV_AGENT_COMPLETED && r) drop_run(u, r);
  evict(m, u, now);
  return 0;
}

/* Takes references to the retained events after since (at most limit);
 * shard locked. Returns the count; *out is malloc'ed (NULL when none). */
static size_t collect(hd_user_t *u, uint64_t since, size_t limit, hd_frame_t ***out) {
  size_t first = 0, n;

  *out = NULL;
  while (first < u->hlen && hist_at(u, first)->seq <= since) first++;
  n = u->hlen - first;
  if (n > limit) n = limit;
  if (n == 0 || (*out = malloc(n * sizeof(**out))) == NULL) return 0;
  for (size_t i = 0; i < n; i++) (*out)[i] = hd_frame_ref(hist_at(u, first + i)->f);
  return n;
}

/* ---- connections -------------------------------------------------------------- */

int hd__manager_attach(hd_manager_t *m, hd_sub_t *sub, const char *user_id,
                       hd_attach_t *a) {
  size_t n;
  uint64_t h, since;
  shard_t *s;
  hd_user_t *u;
  bool epoch_ok;

  assert(sub->user == NULL && m->transport.deliver != NULL);
  a->replay = NULL;
  a->nreplay = 0;
  a->complete = true;
  if (!valid_id(user_id, &n)) return HD_EINVAL;
  h = hash_id(m, user_id, n);
  s = shard_of(m, h);
  pthread_mutex_lock(&s->lock);
  if ((u = intern(m, s, h, user_id, n)) == NULL) {
    pthread_mutex_unlock(&s->lock);
    return HD_ENOMEM;
  }
  if (a->max_subs && u->nsubs >= a->max_subs) {
    pthread_mutex_unlock(&s->lock);
    return HD_ELIMIT;
  }
  sub->user = u;
  sub->user_id = u->id;
  sub->uid = u->uid;
  sub->prev = NULL;
  sub->next = u->subs;
  if (u->subs) u->subs->prev = sub;
  u->subs = sub;
  if (u->nsubs++ == 0) atomic_fetch_add(&m->users, 1);
  a->head_seq = u->seq;
  memcpy(a->epoch, u->epoch, HD_EPOCH_LEN + 1);
  if (a->resume) {
    /* Another epoch's seq numbers mean nothing here: replay all we have. */
    epoch_ok = a->client_epoch == NULL || strcmp(a->client_epoch, u->epoch) == 0;
    since = epoch_ok ? a->since_seq : 0;
    evict(m, u, now_ms());
    if (since > u->seq) {
      a->complete = false; /* the client saw events this stream never had */
    } else {
      a->complete = epoch_ok && since >= atomic_load(&u->evicted_through);
      a->nreplay = collect(u, since, SIZE_MAX, &a->replay);
    }
  }
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
  if (sub->prev)
    sub->prev->next = sub->next;
  else
    u->subs = sub->next;
  if (sub->next) sub->next->prev = sub->prev;
  if (--u->nsubs == 0) atomic_fetch_sub(&m->users, 1);
  pthread_mutex_unlock(&s->lock);
  sub->user = NULL;
  sub->prev = sub->next = NULL;
  atomic_fetch_sub(&m->connections, 1);
}

bool hd__manager_check_write(hd_manager_t *m, const hd_sub_t *sub, const hd_frame_t *f) {
  /* Replies and control frames carry no tag; every event frame must. */
  if (f->user == 0 ? f->event == 0 : f->user == sub->uid) return true;
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

/* Everything of the envelope after the epoch: built outside the lock, in buf
 * (cap bytes) when it fits, else in a malloc'ed block. */
static char *encode_suffix(const hd_event_t *ev, int64_t ts, char *buf, size_t cap,
                           size_t *len) {
  size_t tl = ev->thread_id ? strlen(ev->thread_id) : 0;
  size_t rl = ev->run_id ? strlen(ev->run_id) : 0;
  size_t need = 128 + 6 * (tl + rl) + ev->data_len;
  char *p = need <= cap ? buf : malloc(need), *o = p;

  if (p == NULL) return NULL;
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
  o += sprintf(o, ",\"ts\":%lld,\"data\":", (long long)ts);
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

/* Herald's own runs (started by its agent runtime) have ids with this prefix;
 * nobody else may start or complete one. */
#define MANAGED_PREFIX "hr-"

static bool managed_id(const char *run_id) {
  return strncmp(run_id, MANAGED_PREFIX, sizeof(MANAGED_PREFIX) - 1) == 0;
}

/* The run rules of PROTOCOL.md section 3 for Herald's own runs, checked under
 * the user's lock: one agent_started first (the runtime's, through
 * hd__manager_run_begin with max_runs > 0) and one agent_completed last.
 * Runs a backend drives itself are its own business. */
static int check_run(hd_user_t *u, const hd_event_t *ev, size_t max_runs) {
  bool begin = max_runs > 0;
  run_t *r;

  if (ev->run_id == NULL || !managed_id(ev->run_id)) return begin ? HD_EINVAL : 0;
  r = find_run(u, ev->run_id);
  if (ev->type == HD_EV_AGENT_STARTED) {
    if (r || !begin) return HD_EEXIST;
    if (u->nruns >= max_runs) return HD_ELIMIT;
  } else if (r == NULL) {
    return HD_ENOENT; /* nothing after agent_completed */
  }
  return 0;
}

static int publish(hd_manager_t *m, const char *user_id, const hd_event_t *ev,
                   size_t max_runs, hd_publish_result_t *res) {
  char prefix[64], digits[32 + HD_EPOCH_LEN], sbuf[2048];
  size_t n, plen, dlen, slen;
  uint64_t h;
  shard_t *s;
  hd_user_t *u;
  hd_frame_t *f;
  char *suffix;
  uint32_t delivered = 0;
  int64_t ts = now_ms();
  int rc = HD_ENOMEM;

  if (!valid_id(user_id, &n) || !valid_event(ev)) return HD_EINVAL;
  if (atomic_load(&m->draining)) return HD_EBUSY;
  plen = (size_t)snprintf(prefix, sizeof(prefix),
                          "{\"type\":\"%s\",\"seq\":", type_names[ev->type]);
  if ((suffix = encode_suffix(ev, ts, sbuf, sizeof(sbuf), &slen)) == NULL)
    return HD_ENOMEM;
  h = hash_id(m, user_id, n);
  s = shard_of(m, h);

  pthread_mutex_lock(&s->lock);
  if ((u = intern(m, s, h, user_id, n)) == NULL) goto fail_locked;
  if ((rc = check_run(u, ev, max_runs)) < 0) goto fail_locked;
  rc = HD_ENOMEM;
  /* Only the seq and the user's epoch need the lock; the rest is copied. */
  dlen = (size_t)snprintf(digits, sizeof(digits), "%llu,\"epoch\":\"%s\"",
                          (unsigned long long)(u->seq + 1), u->epoch);
  f = hd_frame_alloc(0x1 /* text */, plen + dlen + slen);
  if (f == NULL) goto fail_locked;
  {
    uint8_t *p = hd_frame_payload(f, plen + dlen + slen);
    memcpy(p, prefix, plen);
    memcpy(p + plen, digits, dlen);
    memcpy(p + plen + dlen, suffix, slen);
  }
  f->user = u->uid;
  f->event = (uint8_t)(ev->type + 1);
  f->seq = u->seq + 1;
  if (remember(m, u, f, ev, ts) < 0) {
    hd_frame_unref(f);
    goto fail_locked;
  }
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
  if (suffix != sbuf) free(suffix);
  atomic_fetch_add(&m->published, 1);
  atomic_fetch_add(&m->deliveries, delivered);
  if (atomic_load(&m->hist_total) > m->limits.max_total) evict_global(m);
  return 0;

fail_locked:
  pthread_mutex_unlock(&s->lock);
  if (suffix != sbuf) free(suffix);
  return rc;
}

HD_EXPORT int hd_manager_publish(hd_manager_t *m, const char *user_id,
                                 const hd_event_t *ev, hd_publish_result_t *res) {
  return publish(m, user_id, ev, 0, res);
}

int hd__manager_run_begin(hd_manager_t *m, const char *user_id, const hd_event_t *started,
                          size_t max_runs, hd_publish_result_t *res) {
  if (started->type != HD_EV_AGENT_STARTED || started->run_id == NULL) return HD_EINVAL;
  return publish(m, user_id, started, max_runs, res);
}

typedef struct {
  const char *run_id;
  int64_t idle;
} idle_arg_t;

static void get_idle(hd_manager_t *m, hd_user_t *u, void *arg) {
  idle_arg_t *a = arg;
  run_t *r = find_run(u, a->run_id);
  if (r) a->idle = now_ms() - r->last_ms;
}

int64_t hd__manager_run_idle(hd_manager_t *m, const char *user_id, const char *run_id) {
  idle_arg_t a = {run_id, -1};
  with_user(m, user_id, get_idle, &a);
  return a.idle;
}

HD_EXPORT hd_scope_t hd_manager_scope(hd_manager_t *m, const hd_user_ctx_t *ctx) {
  hd_scope_t s = {m, ctx};
  return s;
}

HD_EXPORT int hd_scope_emit(hd_scope_t s, const hd_event_t *ev,
                            hd_publish_result_t *res) {
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

HD_EXPORT size_t hd_manager_disconnect(hd_manager_t *m, const char *user_id,
                                       uint16_t code) {
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

static void get_epoch(hd_manager_t *m, hd_user_t *u, void *arg) {
  memcpy(arg, u->epoch, HD_EPOCH_LEN + 1);
}

HD_EXPORT void hd_manager_epoch(hd_manager_t *m, const char *user_id, char *out) {
  out[0] = '\0';
  with_user(m, user_id, get_epoch, out);
}

HD_EXPORT void hd_manager_stats(hd_manager_t *m, hd_manager_stats_t *out) {
  out->connections = atomic_load(&m->connections);
  out->users = atomic_load(&m->users);
  out->known_users = atomic_load(&m->known_users);
  out->instances = atomic_load(&instances);
  out->events_published = atomic_load(&m->published);
  out->deliveries = atomic_load(&m->deliveries);
  out->isolation_violations = atomic_load(&m->violations);
  out->history_events = atomic_load(&m->hist_events);
  out->history_bytes = atomic_load(&m->hist_total);
  out->history_evictions = atomic_load(&m->evictions);
}

HD_EXPORT const hd_manager_api_t *hd_manager_api(void) {
  static const hd_manager_api_t api = {
#define XX(ret, name, params, args) name,
      HD_MANAGER_OPS(XX)
#undef XX
  };
  return &api;
}

/* ---- late joiners --------------------------------------------------------------- */

typedef struct {
  char *json;
} reply_t;

static void runs_reply(hd_manager_t *m, hd_user_t *u, void *arg) {
  json_t *list = json_array();

  for (uint32_t i = 0; list && i < u->nruns; i++) {
    run_t *r = &u->runs[i];
    json_t *o =
        json_pack("{s:s, s:s?, s:I, s:s}", "run_id", r->run_id, "thread_id", r->thread_id,
                  "first_seq", (json_int_t)r->first_seq, "status", "running");
    if (o) json_array_append_new(list, o);
  }
  json_t *reply = json_pack("{s:s, s:o}", "type", "runs", "runs", list);
  ((reply_t *)arg)->json = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
  json_decref(reply);
}

char *hd__manager_runs_json(hd_manager_t *m, const char *user_id) {
  reply_t r = {NULL};
  if (!with_user(m, user_id, runs_reply, &r))
    return strdup("{\"type\":\"runs\",\"runs\":[]}");
  return r.json;
}

typedef struct {
  uint64_t since;
  size_t limit;
  hd_frame_t **frames;
  size_t n;
  bool complete;
  bool more;
} history_arg_t;

static void history_take(hd_manager_t *m, hd_user_t *u, void *arg) {
  history_arg_t *h = arg;
  size_t retained_after;

  evict(m, u, now_ms());
  h->complete = h->since >= atomic_load(&u->evicted_through) && h->since <= u->seq;
  h->n = collect(u, h->since, h->limit, &h->frames);
  retained_after = 0;
  for (size_t i = 0; i < u->hlen; i++)
    if (hist_at(u, i)->seq > h->since) retained_after++;
  h->more = retained_after > h->n;
}

char *hd__manager_history_json(hd_manager_t *m, const char *user_id, uint64_t since_seq,
                               size_t limit) {
  history_arg_t h = {since_seq, limit, NULL, 0, true, false};
  size_t cap = 96, len = 0;
  char *out, *p;

  if (!with_user(m, user_id, history_take, &h)) h.complete = since_seq == 0;
  for (size_t i = 0; i < h.n; i++) {
    size_t n;
    hd_frame_body(h.frames[i], &n);
    cap += n + 1;
  }
  if ((out = malloc(cap)) != NULL) {
    p = out;
    len = (size_t)sprintf(p, "{\"type\":\"history\",\"events\":[");
    for (size_t i = 0; i < h.n; i++) {
      size_t n;
      const uint8_t *b = hd_frame_body(h.frames[i], &n);
      if (i) out[len++] = ',';
      memcpy(out + len, b, n);
      len += n;
    }
    sprintf(out + len, "],\"complete\":%s,\"more\":%s}", h.complete ? "true" : "false",
            h.more ? "true" : "false");
  }
  for (size_t i = 0; i < h.n; i++) hd_frame_unref(h.frames[i]);
  free(h.frames);
  return out;
}

/* A record nobody needs: no connection, no retained event, no run in flight,
 * and no FIFO entry naming it. Shard locked. */
static bool idle(hd_user_t *u) {
  return u->nsubs == 0 && u->hlen == 0 && u->nruns == 0 &&
         atomic_load(&u->fifo_refs) == 0;
}

void hd__manager_expire(hd_manager_t *m) {
  int64_t now = now_ms();

  for (int i = 0; i < HD_SHARDS; i++) {
    shard_t *s = &m->shards[i];
    pthread_mutex_lock(&s->lock);
    for (size_t b = 0; b < s->nbuckets; b++) {
      for (hd_user_t **link = &s->buckets[b], *u; (u = *link) != NULL;) {
        if (u->hlen) evict(m, u, now);
        if (!idle(u)) {
          link = &u->hnext;
          continue;
        }
        *link = u->hnext;
        s->nusers--;
        atomic_fetch_sub(&m->known_users, 1);
        free(u->hist);
        free(u->runs);
        free(u);
      }
    }
    pthread_mutex_unlock(&s->lock);
  }
}
