/* Mission-critical 4: the factory returns the one manager bound to the given
 * context, and never mutates shared state.
 *
 * The seed's factory either built a new manager per user or called
 * set_user_context() on the shared one (a cross-user race). Herald's factory,
 * hd_manager_scope(m, ctx), returns a value {manager, ctx}. This test checks:
 *   - from 16 threads at once, each making scopes for its own 64 contexts:
 *     every scope's .manager is hd_manager_get() and .ctx is exactly the
 *     context passed (not one of another thread's);
 *   - making scopes changes nothing in the manager: its stats (users, known
 *     users, events, connections) and the head seq of every context's user are
 *     the same before and after 1024 scopes were made;
 *   - two scopes made in either order each still emit to their own user,
 *     including a scope used after a scope for another user was made (a
 *     "current user" would then point at the other user);
 *   - threads that each make a fresh scope per event and emit through it
 *     deliver only to their own user.
 *
 * How it fails: a factory returning another manager or a copy, rebinding a
 * shared context, interning users, or routing by the last scope made.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/manager_internal.h"
#include "herald/herald.h"
#include "mission_critical/fake_transport.h"
#include "support/unit.h"

enum { THREADS = 16, CTXS = 64, EMITS = 300 };

static hd_manager_t *M;
static pthread_barrier_t barrier;
static atomic_int bad_scopes;

typedef struct {
  int id;
  char users[CTXS][32];
  hd_user_ctx_t ctx[CTXS];
} maker_t;

static void *make_scopes(void *arg) {
  maker_t *mk = arg;
  pthread_barrier_wait(&barrier);
  for (int round = 0; round < 20; round++) {
    for (int i = 0; i < CTXS; i++) {
      hd_scope_t s = hd_manager_scope(hd_manager_get(), &mk->ctx[i]);
      if (s.manager != M || s.ctx != &mk->ctx[i] || s.ctx->user_id != mk->users[i])
        atomic_fetch_add(&bad_scopes, 1);
    }
  }
  return NULL;
}

static void test_concurrent_factory(void) {
  static maker_t mk[THREADS];
  pthread_t t[THREADS];
  hd_manager_stats_t s0, s1;

  for (int k = 0; k < THREADS; k++) {
    mk[k].id = k;
    for (int i = 0; i < CTXS; i++) {
      snprintf(mk[k].users[i], sizeof(mk[k].users[i]), "mc4-t%d-u%d", k, i);
      mk[k].ctx[i] =
          (hd_user_ctx_t){.user_id = mk[k].users[i], .connection_id = (uint64_t)i};
    }
  }
  hd_manager_stats(M, &s0);
  pthread_barrier_init(&barrier, NULL, THREADS);
  for (int k = 0; k < THREADS; k++) pthread_create(&t[k], NULL, make_scopes, &mk[k]);
  for (int k = 0; k < THREADS; k++) pthread_join(t[k], NULL);
  pthread_barrier_destroy(&barrier);
  hd_manager_stats(M, &s1);

  CHECK_INT(atomic_load(&bad_scopes), 0);
  /* Making a scope is not an operation on the manager. */
  CHECK_INT(s1.users, s0.users);
  CHECK_INT(s1.known_users, s0.known_users);
  CHECK_INT(s1.connections, s0.connections);
  CHECK_INT(s1.events_published, s0.events_published);
  CHECK_INT(s1.deliveries, s0.deliveries);
  CHECK_INT(s1.instances, 1);
  for (int k = 0; k < THREADS; k++)
    for (int i = 0; i < CTXS; i++) {
      CHECK_INT(hd_manager_head_seq(M, mk[k].users[i]), 0);
      CHECK_INT(hd_manager_presence(M, mk[k].users[i]), 0);
    }
}

/* The user named in frame f's data ("u"), compared with want. */
static bool frame_is_for(hd_frame_t *f, const char *want) {
  json_t *j = fake_json(f);
  const char *u = json_string_value(json_object_get(json_object_get(j, "data"), "u"));
  bool ok = u != NULL && strcmp(u, want) == 0;
  json_decref(j);
  return ok;
}

static int emit(hd_scope_t s) {
  char data[96];
  hd_event_t ev = {HD_EV_AGENT_MESSAGE, NULL, NULL, data, 0};
  ev.data_len = (size_t)snprintf(data, sizeof(data), "{\"u\":\"%s\"}", s.ctx->user_id);
  return hd_scope_emit(s, &ev, NULL);
}

static void test_order(void) {
  fake_conn_t a, b;
  hd_user_ctx_t ca = {.user_id = "mc4-order-a"}, cb = {.user_id = "mc4-order-b"};

  fake_init(&a);
  fake_init(&b);
  CHECK_INT(fake_attach(&a, ca.user_id, NULL, NULL), 0);
  CHECK_INT(fake_attach(&b, cb.user_id, NULL, NULL), 0);

  /* a made first, b second; a used after b was made. */
  hd_scope_t sa = hd_manager_scope(M, &ca);
  hd_scope_t sb = hd_manager_scope(M, &cb);
  CHECK_INT(emit(sa), 0);
  CHECK_INT(emit(sb), 0);
  CHECK_INT(a.nframes, 1);
  CHECK_INT(b.nframes, 1);

  /* b made first, a second; b used after a was made, then a. */
  hd_scope_t sb2 = hd_manager_scope(M, &cb);
  hd_scope_t sa2 = hd_manager_scope(M, &ca);
  CHECK_INT(emit(sb2), 0);
  CHECK_INT(emit(sa2), 0);
  /* And the first pair is unaffected by the second. */
  CHECK_INT(emit(sa), 0);
  CHECK_INT(emit(sb), 0);
  CHECK_INT(a.nframes, 3);
  CHECK_INT(b.nframes, 3);
  for (size_t i = 0; i < a.nframes; i++) CHECK(frame_is_for(a.frames[i], ca.user_id));
  for (size_t i = 0; i < b.nframes; i++) CHECK(frame_is_for(b.frames[i], cb.user_id));
  CHECK_INT(hd_manager_head_seq(M, ca.user_id), 3);
  CHECK_INT(hd_manager_head_seq(M, cb.user_id), 3);
  fake_dispose(&a);
  fake_dispose(&b);
}

typedef struct {
  hd_user_ctx_t ctx;
  char user[32];
  fake_conn_t conn;
  int errors;
} emitter_t;

static void *emit_loop(void *arg) {
  emitter_t *e = arg;
  pthread_barrier_wait(&barrier);
  for (int i = 0; i < EMITS; i++) {
    /* A fresh scope per event, made while other threads make theirs. */
    if (emit(hd_manager_scope(hd_manager_get(), &e->ctx)) != 0) e->errors++;
  }
  return NULL;
}

static void test_concurrent_emit(void) {
  enum { N = 6 };
  static emitter_t e[N];
  pthread_t t[N];
  uint64_t v0;
  hd_manager_stats_t st;

  hd_manager_stats(M, &st);
  v0 = st.isolation_violations;
  for (int k = 0; k < N; k++) {
    snprintf(e[k].user, sizeof(e[k].user), "mc4-emit-%d", k);
    e[k].ctx = (hd_user_ctx_t){.user_id = e[k].user};
    fake_init(&e[k].conn);
    CHECK_INT(fake_attach(&e[k].conn, e[k].user, NULL, NULL), 0);
  }
  pthread_barrier_init(&barrier, NULL, N);
  for (int k = 0; k < N; k++) pthread_create(&t[k], NULL, emit_loop, &e[k]);
  for (int k = 0; k < N; k++) pthread_join(t[k], NULL);
  pthread_barrier_destroy(&barrier);
  for (int k = 0; k < N; k++) {
    fake_conn_t *c = &e[k].conn;
    int wrong = 0;
    CHECK_INT(e[k].errors, 0);
    CHECK_INT(c->nframes, EMITS);
    for (size_t i = 0; i < c->nframes; i++)
      if (!frame_is_for(c->frames[i], e[k].user) ||
          !hd__manager_check_write(M, &c->sub, c->frames[i]))
        wrong++;
    CHECK_INT(wrong, 0);
    CHECK_INT(hd_manager_head_seq(M, e[k].user), EMITS);
    fake_dispose(c);
  }
  hd_manager_stats(M, &st);
  CHECK_INT(st.isolation_violations - v0, 0);
}

int main(void) {
  M = fake_install();
  test_concurrent_factory();
  test_order();
  test_concurrent_emit();
  TEST_MAIN_END();
}
