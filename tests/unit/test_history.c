/* Tests for the history side of src/core/manager.c: the per-user ring and its
 * limits (count, bytes, age, the global cap oldest-first across users),
 * run-aware retention, the replay handed out by hd__manager_attach for a
 * resume, the "history" and "runs" replies, and resumes racing publishes.
 *
 * The manager is driven through the fake transport of
 * tests/mission_critical/fake_transport.h: fake_conn_t embeds hd_sub_t and
 * records, under its own mutex, every frame the manager delivers to it.
 * Frames are decoded from their WebSocket header and parsed with jansson, so
 * the wire JSON is what is checked.
 *
 * The manager is a process singleton that keeps user state for the life of
 * the process: every case uses its own user ids, sets the limits it needs
 * with hd__manager_configure and compares global counters as deltas.
 *
 * Build and run under ThreadSanitizer:
 *   cmake -S . -B build-tsan-h -DHD_TSAN=ON -DCMAKE_BUILD_TYPE=Debug
 *   cmake --build build-tsan-h --target test_history -j2 && build-tsan-h/bin/test_history
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "core/manager_internal.h"
#include "herald/herald.h"
#include "mission_critical/fake_transport.h"
#include "support/unit.h"

static hd_manager_t *M;

#define DEFAULT_TOTAL ((size_t)256 << 20)

static void limits(size_t events, size_t bytes, int64_t age_ms, size_t total) {
  hd_history_limits_t l = {events, bytes, age_ms, total};
  hd__manager_configure(M, &l);
}

static void default_limits(void) {
  limits(1000, 1 << 20, 600 * 1000, DEFAULT_TOTAL);
}

static hd_manager_stats_t stats(void) {
  hd_manager_stats_t s;
  hd_manager_stats(M, &s);
  return s;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* Publishes one event; returns its seq (0 on failure, which is also checked). */
static uint64_t pub(const char *user, hd_event_type_t type, const char *thread,
                    const char *run, const char *data) {
  hd_event_t ev = {type, thread, run, data, strlen(data)};
  hd_publish_result_t r = {0, 0};
  int rc = hd_manager_publish(M, user, &ev, &r);
  CHECK_INT(rc, 0);
  return rc == 0 ? r.seq : 0;
}

/* An agent_message with data {"i":i,"delta":"..."} (pad extra bytes). */
static uint64_t pub_msg(const char *user, const char *run, int i, size_t pad) {
  char buf[8192];
  int n = snprintf(buf, sizeof(buf), "{\"i\":%d,\"delta\":\"d%d-", i, i);
  if (pad > sizeof(buf) - 64) pad = sizeof(buf) - 64;
  memset(buf + n, 'x', pad);
  snprintf(buf + n + pad, sizeof(buf) - n - pad, "\"}");
  return pub(user, HD_EV_AGENT_MESSAGE, run ? "t1" : NULL, run, buf);
}

/* A resume: attach c as user with since/epoch; the caller owns a.replay. */
typedef struct {
  fake_conn_t c;
  hd_attach_t a;
  char epoch[HD_EPOCH_LEN + 1];
} resume_t;

static int resume_open(resume_t *r, const char *user, bool resume, uint64_t since,
                       const char *epoch) {
  int rc;
  fake_init(&r->c);
  memset(&r->a, 0, sizeof(r->a));
  r->a.resume = resume;
  r->a.since_seq = since;
  if (epoch) {
    snprintf(r->epoch, sizeof(r->epoch), "%s", epoch);
    r->a.client_epoch = r->epoch;
  }
  rc = hd__manager_attach(M, &r->c.sub, user, &r->a);
  CHECK_INT(rc, 0);
  if (rc == 0) {
    r->c.user = user;
    r->c.attached = true;
  }
  return rc;
}

static void resume_close(resume_t *r) {
  for (size_t i = 0; i < r->a.nreplay; i++) hd_frame_unref(r->a.replay[i]);
  free(r->a.replay);
  r->a.replay = NULL;
  r->a.nreplay = 0;
  fake_dispose(&r->c);
}

static long long jint(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_integer(v) ? (long long)json_integer_value(v) : -1;
}

static const char *jstr(json_t *o, const char *k) {
  return json_string_value(json_object_get(o, k));
}

/* seq of a frame, from its wire JSON (-1 if none). */
static long long frame_seq(const hd_frame_t *f) {
  json_t *j = fake_json(f);
  long long s = jint(j, "seq");
  json_decref(j);
  return s;
}

/* Checks that replay holds exactly seqs first..last in order. */
#define CHECK_REPLAY(r, first, last)                                                     \
  do {                                                                                   \
    long long f_ = (long long)(first), l_ = (long long)(last);                           \
    CHECK_INT((r)->a.nreplay, l_ >= f_ ? l_ - f_ + 1 : 0);                               \
    for (size_t i_ = 0; i_ < (r)->a.nreplay && (long long)i_ <= l_ - f_; i_++)           \
      CHECK_INT(frame_seq((r)->a.replay[i_]), f_ + (long long)i_);                       \
  } while (0)

/* One resume: attach, compare complete and the replay range, detach. */
static void check_resume(const char *user, uint64_t since, const char *epoch,
                         bool complete, long long first, long long last, int line) {
  resume_t r;
  size_t before = (size_t)hd_test_failures;
  resume_open(&r, user, true, since, epoch);
  CHECK_INT(r.a.complete, complete);
  CHECK_REPLAY(&r, first, last);
  if ((size_t)hd_test_failures != before)
    fprintf(stderr, "  ^ in resume of %s since %llu (epoch %s) at line %d\n", user,
            (unsigned long long)since, epoch ? epoch : "none", line);
  resume_close(&r);
}
#define RESUME(user, since, epoch, complete, first, last)                                \
  check_resume(user, since, epoch, complete, first, last, __LINE__)

/* The parsed history reply. */
static json_t *history(const char *user, uint64_t since, size_t limit) {
  char *s = hd__manager_history_json(M, user, since, limit);
  json_error_t err;
  json_t *j = s ? json_loads(s, JSON_REJECT_DUPLICATES, &err) : NULL;
  CHECK(s != NULL);
  CHECK(j != NULL);
  if (s && !j) fprintf(stderr, "  history reply is not JSON: %s\n", s);
  free(s);
  return j;
}

static json_t *runs(const char *user) {
  char *s = hd__manager_runs_json(M, user);
  json_error_t err;
  json_t *j = s ? json_loads(s, JSON_REJECT_DUPLICATES, &err) : NULL;
  CHECK(s != NULL);
  CHECK(j != NULL);
  free(s);
  return j;
}

/* Checks a history reply: complete, more, and events seq first..last. */
static void check_history(const char *user, uint64_t since, size_t limit, bool complete,
                          bool more, long long first, long long last, int line) {
  json_t *j = history(user, since, limit), *evs = json_object_get(j, "events");
  size_t before = (size_t)hd_test_failures;
  size_t n = json_array_size(evs);

  CHECK_STR(jstr(j, "type"), "history");
  CHECK(json_is_array(evs));
  CHECK(json_is_boolean(json_object_get(j, "complete")));
  CHECK_INT(json_is_true(json_object_get(j, "complete")), complete);
  CHECK(json_is_boolean(json_object_get(j, "more")));
  CHECK_INT(json_is_true(json_object_get(j, "more")), more);
  CHECK_INT(n, last >= first ? last - first + 1 : 0);
  for (size_t i = 0; i < n; i++)
    CHECK_INT(jint(json_array_get(evs, i), "seq"), first + (long long)i);
  if ((size_t)hd_test_failures != before)
    fprintf(stderr, "  ^ in history of %s since %llu limit %zu at line %d\n", user,
            (unsigned long long)since, limit, line);
  json_decref(j);
}
#define HISTORY(user, since, limit, complete, more, first, last)                         \
  check_history(user, since, limit, complete, more, first, last, __LINE__)

/* ---- count limit, replay contents, epochs ------------------------------------- */

static void test_count_limit(void) {
  const char *u = "th-count";
  char epoch[HD_EPOCH_LEN + 1];
  hd_manager_stats_t s0, s1;

  limits(10, 1 << 20, 600 * 1000, DEFAULT_TOTAL);
  s0 = stats();
  for (int i = 1; i <= 25; i++) CHECK_INT(pub_msg(u, NULL, i, 0), i);
  s1 = stats();
  /* 25 published, 10 retained: 15 evicted, history counters moved by 10. */
  CHECK_INT(s1.history_evictions - s0.history_evictions, 15);
  CHECK_INT((long long)s1.history_events - (long long)s0.history_events, 10);
  CHECK((long long)s1.history_bytes - (long long)s0.history_bytes > 10 * 64);
  hd_manager_epoch(M, u, epoch);

  /* Retained: 16..25 (evicted through 15). */
  RESUME(u, 14, NULL, false, 16, 25); /* 15 is gone */
  RESUME(u, 0, NULL, false, 16, 25);
  RESUME(u, 15, NULL, true, 16, 25); /* the oldest retained is next */
  RESUME(u, 20, NULL, true, 21, 25);
  RESUME(u, 20, epoch, true, 21, 25); /* the right epoch is like none */
  RESUME(u, 25, NULL, true, 1, 0);    /* up to date: nothing to replay */
  RESUME(u, 26, NULL, false, 1, 0);   /* beyond the head: never had it */
  RESUME(u, 1000, epoch, false, 1, 0);
  /* Another epoch: since means nothing, everything retained is replayed. */
  RESUME(u, 20, "0123456789abcdef0123456789abcdef", false, 16, 25);
  RESUME(u, 25, "x", false, 16, 25);

  /* The replay is the events as published: envelope and data. */
  {
    resume_t r;
    resume_open(&r, u, true, 17, NULL);
    CHECK_INT(r.a.head_seq, 25);
    CHECK_STR(r.a.epoch, epoch);
    CHECK_INT(r.a.nreplay, 8);
    for (size_t i = 0; i < r.a.nreplay; i++) {
      json_t *j = fake_json(r.a.replay[i]);
      char delta[32];
      CHECK(j != NULL);
      CHECK_STR(jstr(j, "type"), "agent_message");
      CHECK_INT(jint(j, "seq"), 18 + (long long)i);
      CHECK_STR(jstr(j, "epoch"), epoch);
      CHECK(json_is_integer(json_object_get(j, "ts")));
      CHECK_INT(jint(json_object_get(j, "data"), "i"), 18 + (long long)i);
      snprintf(delta, sizeof(delta), "d%d-", 18 + (int)i);
      CHECK_STR(jstr(json_object_get(j, "data"), "delta"), delta);
      CHECK(json_object_get(j, "seq_from") == NULL);
      CHECK_INT(r.a.replay[i]->seq, 18 + (long long)i);
      json_decref(j);
    }
    /* ... and live events continue after the head on the same sub. */
    CHECK_INT(pub_msg(u, NULL, 26, 0), 26);
    CHECK_INT(r.c.nframes, 1);
    if (r.c.nframes == 1) CHECK_INT(frame_seq(r.c.frames[0]), 26);
    resume_close(&r);
  }
  /* Without resume: no replay, complete stays true, head reported. */
  {
    resume_t r;
    resume_open(&r, u, false, 0, NULL);
    CHECK_INT(r.a.nreplay, 0);
    CHECK(r.a.replay == NULL);
    CHECK_INT(r.a.head_seq, 26);
    resume_close(&r);
  }
  /* Retained now 17..26. */
  HISTORY(u, 15, 1000, false, false, 17, 26);
  HISTORY(u, 16, 1000, true, false, 17, 26);
  HISTORY(u, 16, 3, true, true, 17, 19);
  HISTORY(u, 23, 3, true, false, 24, 26);
  HISTORY(u, 26, 10, true, false, 1, 0);
  HISTORY(u, 27, 10, false, false, 1, 0); /* beyond the head */
  default_limits();
}

/* ---- bytes limit (hard, also for runs in flight) ------------------------------ */

static void test_bytes_limit(void) {
  const char *u = "th-bytes", *v = "th-bytes-run";
  size_t cost, max;
  resume_t r;

  /* Each event: ~1000 bytes of data. Measure one event's cost first. */
  limits(1000, 1 << 20, 600 * 1000, DEFAULT_TOTAL);
  CHECK_INT(pub_msg(u, NULL, 1, 1000), 1);
  resume_open(&r, u, true, 0, NULL);
  CHECK_INT(r.a.nreplay, 1);
  cost = r.a.nreplay ? r.a.replay[0]->len + 64 : 1200;
  resume_close(&r);

  /* Room for 4.5 events: 4 stay. */
  max = cost * 9 / 2;
  limits(1000, max, 600 * 1000, DEFAULT_TOTAL);
  for (int i = 2; i <= 9; i++) CHECK_INT(pub_msg(u, NULL, i, 1000), i);
  RESUME(u, 5, NULL, true, 6, 9);
  RESUME(u, 4, NULL, false, 6, 9);
  HISTORY(u, 4, 100, false, false, 6, 9);
  HISTORY(u, 5, 100, true, false, 6, 9);

  /* A run in flight does not stretch the byte limit. */
  CHECK_INT(pub(v, HD_EV_AGENT_STARTED, "t1", "rb", "{\"agent\":\"a\",\"input\":\"q\"}"),
            1);
  for (int i = 2; i <= 12; i++) CHECK_INT(pub_msg(v, "rb", i, 1000), i);
  {
    resume_t q;
    uint64_t sum = 0;
    resume_open(&q, v, true, 0, NULL);
    CHECK(!q.a.complete);
    CHECK(q.a.nreplay >= 3 && q.a.nreplay <= 5);
    for (size_t i = 0; i < q.a.nreplay; i++) sum += q.a.replay[i]->len + 64;
    CHECK(sum <= max);
    if (q.a.nreplay) CHECK_INT(q.a.replay[q.a.nreplay - 1]->seq, 12);
    resume_close(&q);
  }
  default_limits();
}

/* ---- age limit --------------------------------------------------------------- */

static void test_age_limit(void) {
  const char *u = "th-age", *v = "th-age-sweep", *w = "th-age-run";
  hd_manager_stats_t s0, s1;

  limits(1000, 1 << 20, 300, DEFAULT_TOTAL);
  for (int i = 1; i <= 5; i++) CHECK_INT(pub_msg(u, NULL, i, 0), i);
  /* A run in flight is spared by the age limit. */
  CHECK_INT(pub(w, HD_EV_AGENT_STARTED, "t1", "ra", "{\"agent\":\"a\",\"input\":\"q\"}"),
            1);
  for (int i = 2; i <= 4; i++) CHECK_INT(pub_msg(w, "ra", i, 0), i);
  RESUME(u, 0, NULL, true, 1, 5); /* young enough */
  sleep_ms(450);
  /* A publish applies the limit: 1..5 are older than 300 ms. */
  CHECK_INT(pub_msg(u, NULL, 6, 0), 6);
  RESUME(u, 5, NULL, true, 6, 6);
  RESUME(u, 4, NULL, false, 6, 6);
  RESUME(u, 0, NULL, false, 6, 6);
  HISTORY(u, 0, 100, false, false, 6, 6);

  /* A resume applies the limit too, without any publish. */
  for (int i = 1; i <= 5; i++) CHECK_INT(pub_msg(v, NULL, i, 0), i);
  RESUME(v, 0, NULL, true, 1, 5);
  sleep_ms(450);
  RESUME(v, 0, NULL, false, 1, 0);
  RESUME(v, 5, NULL, true, 1, 0);

  /* The periodic sweep (hd__manager_expire) drops old events of idle users. */
  for (int i = 6; i <= 10; i++) CHECK_INT(pub_msg(v, NULL, i, 0), i);
  sleep_ms(450);
  s0 = stats();
  hd__manager_expire(M);
  s1 = stats();
  CHECK((long long)s0.history_events - (long long)s1.history_events >= 5);
  CHECK(s1.history_evictions - s0.history_evictions >= 5);
  CHECK(s1.history_bytes < s0.history_bytes);
  /* v's 6..10 are gone. */
  HISTORY(v, 5, 100, false, false, 1, 0);
  HISTORY(v, 10, 100, true, false, 1, 0);

  /* The run in flight survived both. */
  RESUME(w, 0, NULL, true, 1, 4);
  CHECK_INT(pub(w, HD_EV_AGENT_COMPLETED, "t1", "ra",
                "{\"status\":\"succeeded\",\"text\":\"x\"}"),
            5);
  /* Completed: the old events of the run are now subject to the age limit. */
  RESUME(w, 0, NULL, false, 5, 5);
  default_limits();
}

/* ---- run-aware retention ------------------------------------------------------ */

static void test_run_aware(void) {
  const char *u = "th-run";
  json_t *j;

  limits(5, 1 << 20, 600 * 1000, DEFAULT_TOTAL);
  /* 1..3: events outside any run; 4: the run starts; 5..30 its messages. */
  for (int i = 1; i <= 3; i++) CHECK_INT(pub_msg(u, NULL, i, 0), i);
  CHECK_INT(
      pub(u, HD_EV_AGENT_STARTED, "th1", "run-long", "{\"agent\":\"a\",\"input\":\"q\"}"),
      4);
  for (int i = 5; i <= 30; i++) CHECK_INT(pub_msg(u, "run-long", i, 0), i);
  /* The events before the run went by the count limit, the run's all stay. */
  RESUME(u, 3, NULL, true, 4, 30);
  RESUME(u, 2, NULL, false, 4, 30);
  HISTORY(u, 3, 1000, true, false, 4, 30);
  HISTORY(u, 3, 10, true, true, 4, 13);

  j = runs(u);
  CHECK_STR(jstr(j, "type"), "runs");
  CHECK_INT(json_array_size(json_object_get(j, "runs")), 1);
  {
    json_t *r = json_array_get(json_object_get(j, "runs"), 0);
    CHECK_STR(jstr(r, "run_id"), "run-long");
    CHECK_STR(jstr(r, "thread_id"), "th1");
    CHECK_INT(jint(r, "first_seq"), 4);
    CHECK_STR(jstr(r, "status"), "running");
  }
  json_decref(j);

  /* Events of no run published while the run is in flight stay behind it. */
  CHECK_INT(pub(u, HD_EV_TOOL_EXECUTING, "th1", NULL,
                "{\"tool\":\"t\",\"call_id\":\"c\",\"args\":{}}"),
            31);
  RESUME(u, 3, NULL, true, 4, 31);

  /* The run completes: the count limit applies again, to all of it. */
  CHECK_INT(pub(u, HD_EV_AGENT_COMPLETED, "th1", "run-long",
                "{\"status\":\"succeeded\",\"text\":\"done\"}"),
            32);
  RESUME(u, 27, NULL, true, 28, 32);
  RESUME(u, 26, NULL, false, 28, 32);
  RESUME(u, 3, NULL, false, 28, 32);
  j = runs(u);
  CHECK_INT(json_array_size(json_object_get(j, "runs")), 0);
  json_decref(j);

  /* A second run, then a third started while the second is in flight:
   * the second's start pins everything after it. */
  CHECK_INT(
      pub(u, HD_EV_AGENT_STARTED, "th1", "run-b", "{\"agent\":\"a\",\"input\":\"q\"}"),
      33);
  for (int i = 34; i <= 40; i++) CHECK_INT(pub_msg(u, "run-b", i, 0), i);
  CHECK_INT(
      pub(u, HD_EV_AGENT_STARTED, "th2", "run-c", "{\"agent\":\"a\",\"input\":\"q\"}"),
      41);
  for (int i = 42; i <= 45; i++) CHECK_INT(pub_msg(u, "run-c", i, 0), i);
  RESUME(u, 32, NULL, true, 33, 45);
  j = runs(u);
  CHECK_INT(json_array_size(json_object_get(j, "runs")), 2);
  CHECK_STR(jstr(json_array_get(json_object_get(j, "runs"), 0), "run_id"), "run-b");
  CHECK_INT(jint(json_array_get(json_object_get(j, "runs"), 0), "first_seq"), 33);
  CHECK_STR(jstr(json_array_get(json_object_get(j, "runs"), 1), "run_id"), "run-c");
  CHECK_STR(jstr(json_array_get(json_object_get(j, "runs"), 1), "thread_id"), "th2");
  CHECK_INT(jint(json_array_get(json_object_get(j, "runs"), 1), "first_seq"), 41);
  json_decref(j);
  /* run-b completes: run-c (started at 41) still pins 41..; 33..40 go. */
  CHECK_INT(pub(u, HD_EV_AGENT_COMPLETED, "th1", "run-b",
                "{\"status\":\"failed\",\"text\":\"\",\"error\":\"e\"}"),
            46);
  RESUME(u, 40, NULL, true, 41, 46);
  RESUME(u, 39, NULL, false, 41, 46);
  j = runs(u);
  CHECK_INT(json_array_size(json_object_get(j, "runs")), 1);
  CHECK_STR(jstr(json_array_get(json_object_get(j, "runs"), 0), "run_id"), "run-c");
  json_decref(j);
  CHECK_INT(pub(u, HD_EV_AGENT_COMPLETED, "th2", "run-c",
                "{\"status\":\"cancelled\",\"text\":\"\"}"),
            47);
  RESUME(u, 42, NULL, true, 43, 47);
  RESUME(u, 41, NULL, false, 43, 47);
  default_limits();
}

/* ---- runs / history replies ------------------------------------------------------ */

static void test_replies(void) {
  const char *u = "th-replies";
  json_t *j, *evs;
  char epoch[HD_EPOCH_LEN + 1];

  default_limits();
  /* Unknown user: empty runs, empty complete history. */
  j = runs("th-never-seen");
  CHECK_STR(jstr(j, "type"), "runs");
  CHECK(json_is_array(json_object_get(j, "runs")));
  CHECK_INT(json_array_size(json_object_get(j, "runs")), 0);
  json_decref(j);
  HISTORY("th-never-seen", 0, 1000, true, false, 1, 0);

  CHECK_INT(pub(u, HD_EV_AGENT_STARTED, "tA", "rA",
                "{\"agent\":\"demo\",\"input\":\"h\\u00e9\"}"),
            1);
  hd_manager_epoch(M, u, epoch); /* a user's epoch exists once it has state */
  CHECK_INT(
      pub(u, HD_EV_AGENT_STARTED, NULL, "rB", "{\"agent\":\"demo\",\"input\":\"x\"}"), 2);
  CHECK_INT(
      pub(u, HD_EV_TOOL_EXECUTING, "tA", "rA",
          "{\"tool\":\"search\",\"call_id\":\"c1\",\"args\":{\"q\":[1,2,{\"k\":null}]}}"),
      3);
  CHECK_INT(pub(u, HD_EV_AGENT_MESSAGE, "tA", "rA",
                "{\"delta\":\"\\u00fcber \\ud83d\\ude00\"}"),
            4);

  j = runs(u);
  evs = json_object_get(j, "runs");
  CHECK_INT(json_array_size(evs), 2);
  CHECK_STR(jstr(json_array_get(evs, 0), "run_id"), "rA");
  CHECK_STR(jstr(json_array_get(evs, 0), "thread_id"), "tA");
  CHECK_INT(jint(json_array_get(evs, 0), "first_seq"), 1);
  CHECK_STR(jstr(json_array_get(evs, 0), "status"), "running");
  CHECK_STR(jstr(json_array_get(evs, 1), "run_id"), "rB");
  CHECK_INT(jint(json_array_get(evs, 1), "first_seq"), 2);
  {
    json_t *t = json_object_get(json_array_get(evs, 1), "thread_id");
    CHECK(t == NULL || json_is_null(t)); /* no thread: none reported */
  }
  json_decref(j);

  j = history(u, 0, 1000);
  evs = json_object_get(j, "events");
  CHECK_INT(json_array_size(evs), 4);
  CHECK(json_is_true(json_object_get(j, "complete")));
  CHECK(json_is_false(json_object_get(j, "more")));
  {
    json_t *e1 = json_array_get(evs, 0), *e3 = json_array_get(evs, 2),
           *e4 = json_array_get(evs, 3);
    json_t *want;
    json_error_t err;
    CHECK_STR(jstr(e1, "type"), "agent_started");
    CHECK_STR(jstr(e1, "thread_id"), "tA");
    CHECK_STR(jstr(e1, "run_id"), "rA");
    CHECK_STR(jstr(e1, "epoch"), epoch);
    CHECK_STR(jstr(json_object_get(e1, "data"), "input"), "h\xc3\xa9");
    CHECK_STR(jstr(json_array_get(evs, 1), "run_id"), "rB");
    CHECK(json_object_get(json_array_get(evs, 1), "thread_id") == NULL);
    CHECK_STR(jstr(e3, "type"), "tool_executing");
    want = json_loads(
        "{\"tool\":\"search\",\"call_id\":\"c1\",\"args\":{\"q\":[1,2,{\"k\":null}]}}", 0,
        &err);
    CHECK(json_equal(json_object_get(e3, "data"), want));
    json_decref(want);
    CHECK_STR(jstr(e4, "type"), "agent_message");
    CHECK_STR(jstr(json_object_get(e4, "data"), "delta"), "\xc3\xbc"
                                                          "ber \xf0\x9f\x98\x80");
  }
  json_decref(j);
  /* The history reply carries the same bytes as the replay of a resume. */
  {
    resume_t r;
    char *s = hd__manager_history_json(M, u, 2, 1000);
    resume_open(&r, u, true, 2, NULL);
    CHECK_INT(r.a.nreplay, 2);
    for (size_t i = 0; s && i < r.a.nreplay; i++) {
      size_t n;
      const uint8_t *b = fake_payload(r.a.replay[i], &n);
      CHECK(b != NULL && memmem(s, strlen(s), b, n) != NULL);
    }
    free(s);
    resume_close(&r);
  }
  /* A limit of 1 pages through. */
  HISTORY(u, 0, 1, true, true, 1, 1);
  HISTORY(u, 1, 1, true, true, 2, 2);
  HISTORY(u, 3, 1, true, false, 4, 4);
  CHECK_INT(pub(u, HD_EV_AGENT_COMPLETED, "tA", "rA",
                "{\"status\":\"succeeded\",\"text\":\"t\"}"),
            5);
  CHECK_INT(pub(u, HD_EV_AGENT_COMPLETED, NULL, "rB",
                "{\"status\":\"succeeded\",\"text\":\"t\"}"),
            6);
  j = runs(u);
  CHECK_INT(json_array_size(json_object_get(j, "runs")), 0);
  json_decref(j);
}

/* ---- the global cap: oldest first across users ---------------------------------- */

static void test_global_cap(void) {
  const char *a = "th-gcap-a", *b = "th-gcap-b";
  size_t cost;
  resume_t r;

  /* Empty everyone's history: a cap of 0 evicts all on the next publish. */
  limits(1000, 1 << 20, 600 * 1000, 0);
  CHECK_INT(pub_msg("th-gcap-flush", NULL, 1, 0), 1);
  CHECK_INT(stats().history_events, 0);
  CHECK_INT(stats().history_bytes, 0);

  /* One event's cost (all events below encode to the same length). */
  limits(1000, 1 << 20, 600 * 1000, DEFAULT_TOTAL);
  CHECK_INT(pub_msg("th-gcap-probe", NULL, 1, 100), 1);
  resume_open(&r, "th-gcap-probe", true, 0, NULL);
  CHECK_INT(r.a.nreplay, 1);
  cost = r.a.nreplay ? r.a.replay[0]->len + 64 : 300;
  resume_close(&r);
  limits(1000, 1 << 20, 600 * 1000, 0);
  CHECK_INT(pub_msg("th-gcap-flush", NULL, 2, 0), 2);
  CHECK_INT(stats().history_bytes, 0);

  /* Room for 10.5 events across users. a publishes 6, then b 6: 12 > 10.5,
   * so a's two oldest go, b (newer) keeps all. Per-user limits are far. */
  limits(1000, 1 << 20, 600 * 1000, cost * 21 / 2);
  for (int i = 1; i <= 6; i++) CHECK_INT(pub_msg(a, NULL, i, 100), i);
  for (int i = 1; i <= 6; i++) CHECK_INT(pub_msg(b, NULL, i, 100), i);
  CHECK_INT(stats().history_events, 10);
  CHECK(stats().history_bytes <= cost * 21 / 2);
  RESUME(a, 2, NULL, true, 3, 6);
  RESUME(a, 1, NULL, false, 3, 6);
  RESUME(b, 0, NULL, true, 1, 6);
  /* Three more for b: a's 3, 4, 5 go, still not b's. */
  for (int i = 7; i <= 9; i++) CHECK_INT(pub_msg(b, NULL, i, 100), i);
  RESUME(a, 5, NULL, true, 6, 6);
  RESUME(a, 4, NULL, false, 6, 6);
  RESUME(b, 0, NULL, true, 1, 9);
  /* Two more for b: a's last, then b's oldest. */
  for (int i = 10; i <= 11; i++) CHECK(pub_msg(b, NULL, i, 100) == (uint64_t)i);
  RESUME(a, 6, NULL, true, 1, 0);
  RESUME(a, 5, NULL, false, 1, 0);
  /* b: seq 10 and 11 have 2 digits: one byte more each, so one or two go. */
  {
    resume_t q;
    resume_open(&q, b, true, 0, NULL);
    CHECK(!q.a.complete);
    CHECK(q.a.nreplay == 9 || q.a.nreplay == 10);
    if (q.a.nreplay) CHECK_INT(q.a.replay[q.a.nreplay - 1]->seq, 11);
    if (q.a.nreplay) CHECK_INT(q.a.replay[0]->seq, 12 - (long long)q.a.nreplay);
    resume_close(&q);
  }
  /* The global cap is hard: it also takes a run in flight. */
  limits(1000, 1 << 20, 600 * 1000, 0);
  CHECK_INT(pub(b, HD_EV_AGENT_STARTED, "t", "rg", "{\"agent\":\"a\",\"input\":\"q\"}"),
            12);
  CHECK_INT(stats().history_events, 0);
  RESUME(b, 11, NULL, false, 1, 0);
  CHECK_INT(pub(b, HD_EV_AGENT_COMPLETED, "t", "rg",
                "{\"status\":\"succeeded\",\"text\":\"\"}"),
            13);
  default_limits();
}

/* Interleaved publishes to two users: eviction follows publish order. */
static void test_global_cap_interleaved(void) {
  const char *a = "th-gcap2-a", *b = "th-gcap2-b";
  size_t cost;
  resume_t r;

  limits(1000, 1 << 20, 600 * 1000, 0);
  CHECK_INT(pub_msg("th-gcap2-flush", NULL, 1, 0), 1);
  limits(1000, 1 << 20, 600 * 1000, DEFAULT_TOTAL);
  CHECK_INT(pub_msg(a, NULL, 1, 100), 1);
  resume_open(&r, a, true, 0, NULL);
  cost = r.a.nreplay ? r.a.replay[0]->len + 64 : 300;
  resume_close(&r);
  /* a1 is in; cap for 6.5 events. Then b1 a2 b2 a3 b3 a4 b4: 8 events, the
   * two oldest (a1, b1) go. */
  limits(1000, 1 << 20, 600 * 1000, cost * 13 / 2);
  for (int i = 1; i <= 4; i++) {
    CHECK_INT(pub_msg(b, NULL, i, 100), i);
    if (i < 4) CHECK_INT(pub_msg(a, NULL, i + 1, 100), i + 1);
  }
  RESUME(a, 1, NULL, true, 2, 4);
  RESUME(a, 0, NULL, false, 2, 4);
  RESUME(b, 1, NULL, true, 2, 4);
  RESUME(b, 0, NULL, false, 2, 4);
  default_limits();
}

/* ---- resumes racing publishes ------------------------------------------------------ */

#define RACE_USER          "th-race"
#define RACE_PUBLISHERS    2
#define RACE_ATTACHERS     4
#define RACE_ATTACHES      1000  /* in all */
#define RACE_PER_PUBLISHER 30000 /* at most; they stop when the attaches are done */

static atomic_int race_attaches_left;
static atomic_int race_failures;
static atomic_bool race_stop;
static atomic_ullong race_frames_checked;

static void *race_publisher(void *arg) {
  int id = (int)(intptr_t)arg;
  char data[96];
  for (int i = 0; i < RACE_PER_PUBLISHER && !atomic_load(&race_stop); i++) {
    hd_event_t ev = {HD_EV_AGENT_MESSAGE, "t", "r", data, 0};
    hd_publish_result_t r;
    ev.data_len = (size_t)snprintf(data, sizeof(data),
                                   "{\"p\":%d,\"i\":%d,\"delta\":\"x\"}", id, i);
    if (hd_manager_publish(M, RACE_USER, &ev, &r) != 0)
      atomic_fetch_add(&race_failures, 1);
    if ((i & 63) == 0) sched_yield();
  }
  return NULL;
}

static uint64_t xorshift(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void race_fail(const char *what, uint64_t since, uint64_t head, size_t idx,
                      long long got, long long want) {
  if (atomic_fetch_add(&race_failures, 1) < 10)
    fprintf(stderr,
            "race: %s: resume since %llu (head %llu): frame %zu has seq %lld, expected "
            "%lld\n",
            what, (unsigned long long)since, (unsigned long long)head, idx, got, want);
}

static void *race_attacher(void *arg) {
  uint64_t rng = 0x9E3779B97F4A7C15ull * (uint64_t)((intptr_t)arg + 1);

  while (atomic_fetch_sub(&race_attaches_left, 1) > 0) {
    resume_t r;
    uint64_t head = hd_manager_head_seq(M, RACE_USER), since, want;
    int spin;

    /* A random cut point behind the head (bounded, so replays stay short);
     * often right at the boundary. */
    since = head - xorshift(&rng) % (head < 300 ? head + 1 : 300);
    if ((xorshift(&rng) & 3) == 0)
      since = head - xorshift(&rng) % (head < 3 ? head + 1 : 3);
    fake_init(&r.c);
    memset(&r.a, 0, sizeof(r.a));
    r.a.resume = true;
    r.a.since_seq = since;
    if (hd__manager_attach(M, &r.c.sub, RACE_USER, &r.a) != 0) {
      atomic_fetch_add(&race_failures, 1);
      continue;
    }
    r.c.attached = true;
    spin = (int)(xorshift(&rng) % 200);
    for (int i = 0; i < spin; i++) sched_yield();
    hd__manager_detach(M, &r.c.sub);
    r.c.attached = false;

    if (!r.a.complete) race_fail("complete:false", since, r.a.head_seq, 0, 0, 0);
    want = since + 1;
    for (size_t i = 0; i < r.a.nreplay; i++, want++) {
      long long s = frame_seq(r.a.replay[i]);
      if (s != (long long)want)
        race_fail("replay", since, r.a.head_seq, i, s, (long long)want);
      want = (uint64_t)s;
    }
    if (want - 1 != r.a.head_seq)
      race_fail("replay does not end at head", since, r.a.head_seq, r.a.nreplay,
                (long long)want - 1, (long long)r.a.head_seq);
    pthread_mutex_lock(&r.c.lock);
    for (size_t i = 0; i < r.c.nframes; i++, want++) {
      long long s = frame_seq(r.c.frames[i]);
      if (s != (long long)want)
        race_fail("live", since, r.a.head_seq, i, s, (long long)want);
      want = (uint64_t)s;
    }
    atomic_fetch_add(&race_frames_checked, r.a.nreplay + r.c.nframes);
    pthread_mutex_unlock(&r.c.lock);
    resume_close(&r);
  }
  return NULL;
}

static void test_resume_race(void) {
  pthread_t pubs[RACE_PUBLISHERS], atts[RACE_ATTACHERS];
  uint64_t head;

  /* Large limits: nothing is evicted, so every resume must be complete. */
  limits(1000000, (size_t)1 << 30, 600 * 1000, (size_t)1 << 31);
  atomic_store(&race_attaches_left, RACE_ATTACHES);
  atomic_store(&race_failures, 0);
  atomic_store(&race_stop, false);
  for (int i = 0; i < 200; i++) CHECK_INT(pub_msg(RACE_USER, "r", i, 0), i + 1);
  for (int i = 0; i < RACE_PUBLISHERS; i++)
    CHECK_INT(pthread_create(&pubs[i], NULL, race_publisher, (void *)(intptr_t)i), 0);
  for (int i = 0; i < RACE_ATTACHERS; i++)
    CHECK_INT(pthread_create(&atts[i], NULL, race_attacher, (void *)(intptr_t)i), 0);
  for (int i = 0; i < RACE_ATTACHERS; i++) pthread_join(atts[i], NULL);
  atomic_store(&race_stop, true); /* the publishers may stop once all attaches ran */
  for (int i = 0; i < RACE_PUBLISHERS; i++) pthread_join(pubs[i], NULL);
  CHECK_INT(atomic_load(&race_failures), 0);
  head = hd_manager_head_seq(M, RACE_USER);
  CHECK(head > 200);
  CHECK(atomic_load(&race_frames_checked) > 0);
  fprintf(stderr, "race: %d attaches, head %llu, %llu frames checked\n", RACE_ATTACHES,
          (unsigned long long)head,
          (unsigned long long)atomic_load(&race_frames_checked));
  /* After it all: a full resume is exactly 1..head. */
  RESUME(RACE_USER, 0, NULL, true, 1, (long long)head);
  CHECK_INT(hd_manager_presence(M, RACE_USER), 0);
  default_limits();
}

int main(void) {
  M = fake_install();
  (void)fake_attach; /* the helper attaches without resume; these tests resume */
  test_count_limit();
  test_bytes_limit();
  test_age_limit();
  test_run_aware();
  test_replies();
  test_global_cap();
  test_global_cap_interleaved();
  test_resume_race();
  TEST_MAIN_END();
}
