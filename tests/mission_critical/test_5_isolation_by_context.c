/* Mission-critical 5: isolation is by context, not by per-user managers.
 *
 * One manager, two users, a scope for each, and events emitted from four
 * threads at once (two per user, released together by a barrier, so the
 * publishes of the two users interleave and those of one user race each
 * other). Each user has two fake connections. Afterwards, for every
 * connection:
 *   - it received exactly its user's 2 x EMITS events, and nothing else: every
 *     frame's user tag equals the connection's, the write-time check accepts
 *     it, and its JSON data names the user and carries the user's secret;
 *   - seq runs 1, 2, 3, ... without a gap or repeat, in arrival order;
 *   - both connections of the user received the same frames in the same order
 *     (the same encoded bytes: one frame object shared);
 *   - each emitting thread's own events arrive in the order it emitted them;
 * and both scopes point at the same manager, the one hd_manager_get() returns,
 * and no isolation violation was counted.
 *
 * How it fails: routing by a shared "current user" (events land on the other
 * user's connections or carry the other user's secret), per-user managers
 * (scopes with different managers), seq assigned outside the user's lock
 * (gaps, repeats or out-of-order arrival).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/manager_internal.h"
#include "herald/herald.h"
#include "mission_critical/fake_transport.h"
#include "support/unit.h"

enum { EMITS = 5000, USERS = 2, CONNS = 2, PER_USER_THREADS = 2 };

static hd_manager_t *M;
static pthread_barrier_t barrier;

typedef struct {
  char user[32];
  char secret[40];
  hd_user_ctx_t ctx;
  hd_scope_t scope;
  fake_conn_t conn[CONNS];
} user_t;

typedef struct {
  user_t *u;
  int thread; /* 0 or 1 within the user */
  int errors;
} emitter_t;

static user_t users[USERS];

static void *emit_loop(void *arg) {
  emitter_t *e = arg;
  char data[160];
  hd_event_t ev = {HD_EV_AGENT_MESSAGE, "thread-1", "run-1", data, 0};

  pthread_barrier_wait(&barrier);
  for (int i = 0; i < EMITS; i++) {
    hd_publish_result_t r;
    ev.data_len = (size_t)snprintf(data, sizeof(data),
                                   "{\"u\":\"%s\",\"secret\":\"%s\",\"t\":%d,\"i\":%d}",
                                   e->u->user, e->u->secret, e->thread, i);
    if (hd_scope_emit(e->u->scope, &ev, &r) != 0 || r.delivered != CONNS) e->errors++;
  }
  return NULL;
}

static void check_conn(user_t *u, fake_conn_t *c, fake_conn_t *twin) {
  int wrong_user = 0, wrong_secret = 0, bad_tag = 0, refused = 0, bad_seq = 0,
      bad_order = 0, bad_twin = 0;
  int next_i[PER_USER_THREADS] = {0};

  CHECK_INT(c->nframes, EMITS * PER_USER_THREADS);
  for (size_t k = 0; k < c->nframes; k++) {
    hd_frame_t *f = c->frames[k];
    json_t *j = fake_json(f), *d = json_object_get(j, "data");
    const char *who = json_string_value(json_object_get(d, "u"));
    const char *secret = json_string_value(json_object_get(d, "secret"));
    json_int_t t = json_integer_value(json_object_get(d, "t"));
    json_int_t i = json_integer_value(json_object_get(d, "i"));

    if (who == NULL || strcmp(who, u->user) != 0) wrong_user++;
    if (secret == NULL || strcmp(secret, u->secret) != 0) wrong_secret++;
    if (f->user != c->sub.uid) bad_tag++;
    if (!hd__manager_check_write(M, &c->sub, f)) refused++;
    if (json_integer_value(json_object_get(j, "seq")) != (json_int_t)k + 1) bad_seq++;
    if (t >= 0 && t < PER_USER_THREADS) {
      if (i != next_i[t]) bad_order++;
      next_i[t] = (int)i + 1;
    } else {
      bad_order++;
    }
    if (k >= twin->nframes || twin->frames[k] != f) bad_twin++;
    json_decref(j);
  }
  CHECK_INT(wrong_user, 0);
  CHECK_INT(wrong_secret, 0);
  CHECK_INT(bad_tag, 0);
  CHECK_INT(refused, 0);
  CHECK_INT(bad_seq, 0);
  CHECK_INT(bad_order, 0);
  CHECK_INT(bad_twin, 0);
  for (int t = 0; t < PER_USER_THREADS; t++) CHECK_INT(next_i[t], EMITS);
}

int main(void) {
  emitter_t em[USERS * PER_USER_THREADS];
  pthread_t th[USERS * PER_USER_THREADS];
  hd_manager_stats_t s0, s1;

  M = fake_install();
  hd_manager_stats(M, &s0);
  for (int k = 0; k < USERS; k++) {
    user_t *u = &users[k];
    snprintf(u->user, sizeof(u->user), "mc5-user-%d", k);
    snprintf(u->secret, sizeof(u->secret), "secret-%d-%08x", k,
             (unsigned)(0x9e3779b9u * (k + 1)));
    u->ctx = (hd_user_ctx_t){.user_id = u->user};
    u->scope = hd_manager_scope(M, &u->ctx);
    CHECK(u->scope.manager == hd_manager_get());
    for (int c = 0; c < CONNS; c++) {
      fake_init(&u->conn[c]);
      CHECK_INT(fake_attach(&u->conn[c], u->user, NULL, NULL), 0);
    }
  }
  CHECK(users[0].scope.manager == users[1].scope.manager);
  CHECK(users[0].conn[0].sub.uid != users[1].conn[0].sub.uid);

  pthread_barrier_init(&barrier, NULL, USERS * PER_USER_THREADS);
  for (int k = 0; k < USERS * PER_USER_THREADS; k++) {
    em[k] = (emitter_t){&users[k % USERS], k / USERS, 0};
    pthread_create(&th[k], NULL, emit_loop, &em[k]);
  }
  for (int k = 0; k < USERS * PER_USER_THREADS; k++) pthread_join(th[k], NULL);
  pthread_barrier_destroy(&barrier);
  for (int k = 0; k < USERS * PER_USER_THREADS; k++) CHECK_INT(em[k].errors, 0);

  for (int k = 0; k < USERS; k++) {
    user_t *u = &users[k];
    check_conn(u, &u->conn[0], &u->conn[1]);
    check_conn(u, &u->conn[1], &u->conn[0]);
    CHECK_INT(hd_manager_head_seq(M, u->user), EMITS * PER_USER_THREADS);
  }
  hd_manager_stats(M, &s1);
  CHECK_INT(s1.isolation_violations - s0.isolation_violations, 0);
  CHECK_INT(s1.events_published - s0.events_published, USERS * PER_USER_THREADS * EMITS);
  CHECK_INT(s1.deliveries - s0.deliveries, USERS * PER_USER_THREADS * EMITS * CONNS);
  CHECK_INT(s1.instances, 1);
  for (int k = 0; k < USERS; k++)
    for (int c = 0; c < CONNS; c++) fake_dispose(&users[k].conn[c]);
  TEST_MAIN_END();
}
