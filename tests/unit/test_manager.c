/* Tests for src/core/manager.c: the one registry, per-user streams, routing,
 * the factory (scopes) and the write-time isolation check.
 *
 * The manager is driven through a fake transport (tests/mission_critical/
 * fake_transport.h): connections are fake_conn_t structs embedding hd_sub_t
 * that record the frames and closes the manager hands them. Frames are decoded
 * from their WebSocket header here and parsed with jansson, so the wire JSON
 * is checked, not the manager's idea of it.
 *
 * The manager is a process-wide singleton that keeps user state for the life
 * of the process: every case uses its own user ids and compares counters as
 * deltas. Each check can fail: wrong seq arithmetic, routing to a wrong or an
 * extra connection, a missing envelope field, a check_write that lets a
 * foreign frame through, all show up as a CHECK printing both values.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "core/manager_internal.h"
#include "herald/herald.h"
#include "mission_critical/fake_transport.h"
#include "support/unit.h"

static hd_manager_t *M;

static hd_event_t event(hd_event_type_t type, const char *data) {
  hd_event_t ev = {type, NULL, NULL, data, strlen(data)};
  return ev;
}

static int publish(const char *user, const char *data, hd_publish_result_t *res) {
  hd_event_t ev = event(HD_EV_AGENT_MESSAGE, data);
  return hd_manager_publish(M, user, &ev, res);
}

static hd_manager_stats_t stats(void) {
  hd_manager_stats_t s;
  hd_manager_stats(M, &s);
  return s;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The seq of frame i on c (-1 if not an event). */
static long long seq_of(fake_conn_t *c, size_t i) {
  json_t *j = fake_json(c->frames[i]);
  long long seq = json_is_integer(json_object_get(j, "seq"))
                      ? (long long)json_integer_value(json_object_get(j, "seq"))
                      : -1;
  json_decref(j);
  return seq;
}

/* ---- the one instance --------------------------------------------------- */

static void test_singleton(void) {
  hd_manager_stats_t s = stats();
  const hd_manager_api_t *api = hd_manager_api();

  CHECK(hd_manager_get() == M);
  CHECK(hd_manager_get() == hd_manager_get());
  CHECK_INT(s.instances, 1);
  /* The table is the real operations, field by field. */
#define XX(ret, name, params, args) CHECK(api->name == name);
  HD_MANAGER_OPS(XX)
#undef XX
}

/* ---- sequence numbers ------------------------------------------------------ */

static void test_seq_new_user(void) {
  fake_conn_t c;
  uint64_t head = 99;
  char epoch[HD_EPOCH_LEN + 1] = "", epoch2[HD_EPOCH_LEN + 1] = "";
  hd_publish_result_t r = {0, 0};

  fake_init(&c);
  CHECK_INT(hd_manager_head_seq(M, "tm-seq-new"), 0);
  CHECK_INT(fake_attach(&c, "tm-seq-new", &head, epoch), 0);
  CHECK_INT(head, 0); /* a user never seen before starts at 0 */
  CHECK_INT(strlen(epoch), HD_EPOCH_LEN);
  CHECK_INT(strspn(epoch, "0123456789abcdef"), HD_EPOCH_LEN);
  hd_manager_epoch(M, "tm-seq-new", epoch2);
  CHECK_STR(epoch2, epoch);

  CHECK_INT(publish("tm-seq-new", "{\"i\":1}", &r), 0);
  CHECK_INT(r.seq, 1); /* ... and its first event gets 1 */
  CHECK_INT(r.delivered, 1);
  CHECK_INT(hd_manager_head_seq(M, "tm-seq-new"), 1);
  for (int i = 2; i <= 10; i++) {
    CHECK_INT(publish("tm-seq-new", "{}", &r), 0);
    CHECK_INT(r.seq, i);
  }
  CHECK_INT(c.nframes, 10);
  for (size_t i = 0; i < c.nframes; i++) CHECK_INT(seq_of(&c, i), (long long)i + 1);
  fake_dispose(&c);
}

static void test_seq_per_user(void) {
  hd_publish_result_t r;

  /* Interleaved publishes to three users: each stream counts on its own. */
  for (int i = 1; i <= 20; i++) {
    CHECK_INT(publish("tm-seq-a", "{}", &r), 0);
    CHECK_INT(r.seq, i);
    if (i % 2 == 0) {
      CHECK_INT(publish("tm-seq-b", "{}", &r), 0);
      CHECK_INT(r.seq, i / 2);
    }
    if (i % 5 == 0) {
      CHECK_INT(publish("tm-seq-c", "{}", &r), 0);
      CHECK_INT(r.seq, i / 5);
    }
  }
  CHECK_INT(hd_manager_head_seq(M, "tm-seq-a"), 20);
  CHECK_INT(hd_manager_head_seq(M, "tm-seq-b"), 10);
  CHECK_INT(hd_manager_head_seq(M, "tm-seq-c"), 4);
  CHECK_INT(hd_manager_head_seq(M, "tm-seq-never"), 0);
  CHECK_INT(r.delivered, 0); /* nobody connected */
}

static void test_welcome_head(void) {
  fake_conn_t c;
  uint64_t head = 0;
  char epoch[HD_EPOCH_LEN + 1], real[HD_EPOCH_LEN + 1];
  hd_publish_result_t r;

  /* Events before the connection: attach reports the head at registration,
   * and the next event is head + 1 and reaches the new connection. */
  for (int i = 0; i < 3; i++) CHECK_INT(publish("tm-welcome", "{}", NULL), 0);
  fake_init(&c);
  CHECK_INT(fake_attach(&c, "tm-welcome", &head, epoch), 0);
  CHECK_INT(head, 3);
  hd_manager_epoch(M, "tm-welcome", real);
  CHECK_STR(epoch, real);
  CHECK_INT(c.nframes, 0); /* no replay without a resume */
  CHECK_INT(publish("tm-welcome", "{}", &r), 0);
  CHECK_INT(r.seq, 4);
  CHECK_INT(c.nframes, 1);
  if (c.nframes == 1) CHECK_INT(seq_of(&c, 0), 4);
  fake_dispose(&c);
}

/* ---- routing ------------------------------------------------------------------ */

static void test_routing(void) {
  fake_conn_t a1, a2, b1;
  hd_publish_result_t r = {0, 0};
  hd_manager_stats_t s0 = stats(), s1;

  fake_init(&a1);
  fake_init(&a2);
  fake_init(&b1);
  CHECK_INT(fake_attach(&a1, "tm-route-a", NULL, NULL), 0);
  CHECK_INT(fake_attach(&a2, "tm-route-a", NULL, NULL), 0);
  CHECK_INT(fake_attach(&b1, "tm-route-b", NULL, NULL), 0);
  CHECK(a1.sub.uid != b1.sub.uid);
  CHECK_INT(a1.sub.uid, a2.sub.uid);
  s1 = stats();
  CHECK_INT(s1.connections - s0.connections, 3);
  CHECK_INT(s1.users - s0.users, 2);

  CHECK_INT(publish("tm-route-a", "{\"to\":\"a\"}", &r), 0);
  CHECK_INT(r.delivered, 2);
  CHECK_INT(a1.nframes, 1);
  CHECK_INT(a2.nframes, 1);
  CHECK_INT(b1.nframes, 0);
  if (a1.nframes == 1 && a2.nframes == 1) {
    /* Encoded once: the same bytes go to every connection of the user. */
    CHECK(a1.frames[0] == a2.frames[0]);
    CHECK_INT(a1.frames[0]->user, a1.sub.uid);
  }
  CHECK_INT(publish("tm-route-b", "{\"to\":\"b\"}", &r), 0);
  CHECK_INT(r.delivered, 1);
  CHECK_INT(r.seq, 1);
  CHECK_INT(a1.nframes, 1);
  CHECK_INT(a2.nframes, 1);
  CHECK_INT(b1.nframes, 1);
  if (b1.nframes == 1) {
    json_t *j = fake_json(b1.frames[0]);
    CHECK_STR(json_string_value(json_object_get(json_object_get(j, "data"), "to")), "b");
    CHECK_INT(b1.frames[0]->user, b1.sub.uid);
    json_decref(j);
  }
  s1 = stats();
  CHECK_INT(s1.events_published - s0.events_published, 2);
  CHECK_INT(s1.deliveries - s0.deliveries, 3);

  /* A user with a similar name (prefix, different case) is another user. */
  CHECK_INT(publish("tm-route-", "{}", &r), 0);
  CHECK_INT(r.delivered, 0);
  CHECK_INT(publish("TM-ROUTE-A", "{}", &r), 0);
  CHECK_INT(r.delivered, 0);
  CHECK_INT(a1.nframes + a2.nframes + b1.nframes, 3);

  fake_dispose(&a1);
  fake_dispose(&a2);
  fake_dispose(&b1);
  s1 = stats();
  CHECK_INT(s1.connections, s0.connections);
  CHECK_INT(s1.users, s0.users);
}

static void test_detach(void) {
  fake_conn_t a1, a2;
  hd_publish_result_t r = {0, 0};

  fake_init(&a1);
  fake_init(&a2);
  CHECK_INT(fake_attach(&a1, "tm-detach", NULL, NULL), 0);
  CHECK_INT(fake_attach(&a2, "tm-detach", NULL, NULL), 0);
  CHECK_INT(hd_manager_presence(M, "tm-detach"), 2);
  fake_detach(&a1);
  CHECK(a1.sub.user == NULL);
  CHECK_INT(hd_manager_presence(M, "tm-detach"), 1);
  CHECK_INT(publish("tm-detach", "{}", &r), 0);
  CHECK_INT(r.delivered, 1);
  CHECK_INT(a1.nframes, 0);
  CHECK_INT(a2.nframes, 1);
  fake_detach(&a2);
  CHECK_INT(hd_manager_presence(M, "tm-detach"), 0);
  CHECK_INT(publish("tm-detach", "{}", &r), 0);
  CHECK_INT(r.delivered, 0);
  CHECK_INT(r.seq, 2); /* the stream outlives its connections */
  CHECK_INT(a2.nframes, 1);
  /* Re-attaching the same sub works and sees the head. */
  {
    uint64_t head = 0;
    CHECK_INT(fake_attach(&a1, "tm-detach", &head, NULL), 0);
    CHECK_INT(head, 2);
    CHECK_INT(publish("tm-detach", "{}", &r), 0);
    CHECK_INT(r.delivered, 1);
    CHECK_INT(a1.nframes, 1);
  }
  fake_dispose(&a1);
  fake_dispose(&a2);
}

static void test_presence(void) {
  enum { N = 5 };
  fake_conn_t c[N];

  CHECK_INT(hd_manager_presence(M, "tm-presence"), 0);
  CHECK_INT(hd_manager_presence(M, ""), 0);
  CHECK_INT(hd_manager_presence(M, NULL), 0);
  for (int i = 0; i < N; i++) {
    fake_init(&c[i]);
    CHECK_INT(fake_attach(&c[i], "tm-presence", NULL, NULL), 0);
    CHECK_INT(hd_manager_presence(M, "tm-presence"), i + 1);
  }
  CHECK_INT(hd_manager_presence(M, "tm-presence-other"), 0);
  /* Detach from the middle of the list, then the ends. */
  int order[N] = {2, 0, 4, 1, 3};
  for (int i = 0; i < N; i++) {
    fake_detach(&c[order[i]]);
    CHECK_INT(hd_manager_presence(M, "tm-presence"), N - 1 - i);
  }
  for (int i = 0; i < N; i++) fake_dispose(&c[i]);
}

static void test_disconnect(void) {
  fake_conn_t a1, a2, b1;
  size_t closes0 = atomic_load(&fake_closes_total);

  fake_init(&a1);
  fake_init(&a2);
  fake_init(&b1);
  CHECK_INT(fake_attach(&a1, "tm-disc-a", NULL, NULL), 0);
  CHECK_INT(fake_attach(&a2, "tm-disc-a", NULL, NULL), 0);
  CHECK_INT(fake_attach(&b1, "tm-disc-b", NULL, NULL), 0);
  CHECK_INT(hd_manager_disconnect(M, "tm-disc-a", 4003), 2);
  CHECK_INT(a1.closes, 1);
  CHECK_INT(a1.close_code, 4003);
  CHECK_INT(a2.closes, 1);
  CHECK_INT(a2.close_code, 4003);
  CHECK_INT(b1.closes, 0);
  CHECK_INT(atomic_load(&fake_closes_total) - closes0, 2);
  /* Closing is asynchronous: the subs stay registered until detached. */
  CHECK_INT(hd_manager_presence(M, "tm-disc-a"), 2);
  CHECK_INT(hd_manager_disconnect(M, "tm-disc-b", 1000), 1);
  CHECK_INT(b1.close_code, 1000);
  CHECK_INT(hd_manager_disconnect(M, "tm-disc-nobody", 4003), 0);
  CHECK_INT(hd_manager_disconnect(M, "", 4003), 0);
  CHECK_INT(hd_manager_disconnect(M, NULL, 4003), 0);
  CHECK_INT(a1.closes + a2.closes + b1.closes, 3);
  fake_dispose(&a1);
  fake_dispose(&a2);
  fake_dispose(&b1);
  CHECK_INT(hd_manager_disconnect(M, "tm-disc-a", 4003), 0);
}

/* ---- invalid input and draining ---------------------------------------------- */

static void test_invalid(void) {
  char id128[HD_ID_MAX + 1], id129[HD_ID_MAX + 2];
  hd_event_t ev = event(HD_EV_AGENT_MESSAGE, "{}");
  hd_publish_result_t r;
  fake_conn_t c;
  hd_manager_stats_t s0 = stats();

  memset(id128, 'q', HD_ID_MAX);
  id128[HD_ID_MAX] = 0;
  memset(id129, 'q', HD_ID_MAX + 1);
  id129[HD_ID_MAX + 1] = 0;

  CHECK_INT(hd_manager_publish(M, "", &ev, &r), HD_EINVAL);
  CHECK_INT(hd_manager_publish(M, NULL, &ev, &r), HD_EINVAL);
  CHECK_INT(hd_manager_publish(M, id129, &ev, &r), HD_EINVAL);
  CHECK_INT(hd_manager_publish(M, id128, &ev, &r), 0); /* the limit itself is fine */
  CHECK_INT(r.seq, 1);

  fake_init(&c);
  CHECK_INT(fake_attach(&c, "", NULL, NULL), HD_EINVAL);
  CHECK_INT(fake_attach(&c, NULL, NULL, NULL), HD_EINVAL);
  CHECK_INT(fake_attach(&c, id129, NULL, NULL), HD_EINVAL);
  CHECK(c.sub.user == NULL);

  /* Bad events: nothing published, no seq consumed. */
  ev.type = (hd_event_type_t)HD_EV__COUNT;
  CHECK_INT(hd_manager_publish(M, "tm-invalid", &ev, &r), HD_EINVAL);
  ev.type = (hd_event_type_t)-1;
  CHECK_INT(hd_manager_publish(M, "tm-invalid", &ev, &r), HD_EINVAL);
  ev = event(HD_EV_AGENT_MESSAGE, "{}");
  ev.data_len = 0;
  CHECK_INT(hd_manager_publish(M, "tm-invalid", &ev, &r), HD_EINVAL);
  ev = event(HD_EV_AGENT_MESSAGE, "{}");
  ev.data = NULL;
  CHECK_INT(hd_manager_publish(M, "tm-invalid", &ev, &r), HD_EINVAL);
  ev = event(HD_EV_AGENT_MESSAGE, "{}");
  ev.thread_id = "";
  CHECK_INT(hd_manager_publish(M, "tm-invalid", &ev, &r), HD_EINVAL);
  ev.thread_id = NULL;
  ev.run_id = id129;
  CHECK_INT(hd_manager_publish(M, "tm-invalid", &ev, &r), HD_EINVAL);
  CHECK_INT(hd_manager_head_seq(M, "tm-invalid"), 0);
  ev.run_id = id128;
  CHECK_INT(hd_manager_publish(M, "tm-invalid", &ev, &r), 0);
  CHECK_INT(r.seq, 1);

  /* Scopes without a user. */
  {
    hd_user_ctx_t ctx = {0};
    ev = event(HD_EV_AGENT_MESSAGE, "{}");
    CHECK_INT(hd_scope_emit(hd_manager_scope(M, &ctx), &ev, &r), HD_EINVAL);
    CHECK_INT(hd_scope_emit(hd_manager_scope(M, NULL), &ev, &r), HD_EINVAL);
    ctx.user_id = "";
    CHECK_INT(hd_scope_emit(hd_manager_scope(M, &ctx), &ev, &r), HD_EINVAL);
    ctx.user_id = "tm-invalid";
    CHECK_INT(hd_scope_emit(hd_manager_scope(NULL, &ctx), &ev, &r), HD_EINVAL);
  }
  CHECK_INT(stats().events_published - s0.events_published, 2);
  fake_dispose(&c);
}

static void test_draining(void) {
  hd_event_t ev = event(HD_EV_AGENT_MESSAGE, "{}");
  hd_user_ctx_t ctx = {.user_id = "tm-drain"};
  hd_publish_result_t r;

  CHECK_INT(publish("tm-drain", "{}", &r), 0);
  hd__manager_set_draining(M, true);
  CHECK_INT(publish("tm-drain", "{}", &r), HD_EBUSY);
  CHECK_INT(hd_scope_emit(hd_manager_scope(M, &ctx), &ev, &r), HD_EBUSY);
  CHECK_INT(hd_manager_head_seq(M, "tm-drain"), 1); /* no seq consumed */
  hd__manager_set_draining(M, false);
  CHECK_INT(publish("tm-drain", "{}", &r), 0);
  CHECK_INT(r.seq, 2);
}

/* ---- the encoded event ---------------------------------------------------------- */

static void test_frame_json(void) {
  static const char data[] =
      "{\"delta\":\"h\\u00e9llo \\\"w\\\"\",\"n\":[1,2,{\"x\":null}]}";
  fake_conn_t c;
  char epoch[HD_EPOCH_LEN + 1];
  hd_event_t ev = {HD_EV_TOOL_EXECUTING, "th\"1\\\n", "run-7", data, strlen(data)};
  hd_publish_result_t r;
  int64_t t0, t1;

  fake_init(&c);
  CHECK_INT(fake_attach(&c, "tm-json", NULL, epoch), 0);
  t0 = wall_ms();
  CHECK_INT(hd_manager_publish(M, "tm-json", &ev, &r), 0);
  t1 = wall_ms();
  CHECK_INT(c.nframes, 1);
  if (c.nframes == 1) {
    hd_frame_t *f = c.frames[0];
    json_t *j = fake_json(f), *want = json_loads(data, 0, NULL);
    const char *key;
    json_t *v;
    int n = 0;

    CHECK_INT(f->data[0], 0x81); /* FIN, text */
    CHECK(j != NULL);
    CHECK(json_is_object(j));
    json_object_foreach(j, key, v) {
      n++;
      CHECK(strcmp(key, "type") == 0 || strcmp(key, "seq") == 0 ||
            strcmp(key, "epoch") == 0 || strcmp(key, "thread_id") == 0 ||
            strcmp(key, "run_id") == 0 || strcmp(key, "ts") == 0 ||
            strcmp(key, "data") == 0);
    }
    CHECK_INT(n, 7);
    CHECK_STR(json_string_value(json_object_get(j, "type")), "tool_executing");
    CHECK(json_is_integer(json_object_get(j, "seq")));
    CHECK_INT(json_integer_value(json_object_get(j, "seq")), 1);
    CHECK_STR(json_string_value(json_object_get(j, "epoch")), epoch);
    CHECK_STR(json_string_value(json_object_get(j, "thread_id")), "th\"1\\\n");
    CHECK_STR(json_string_value(json_object_get(j, "run_id")), "run-7");
    CHECK(json_is_integer(json_object_get(j, "ts")));
    CHECK(json_integer_value(json_object_get(j, "ts")) >= t0);
    CHECK(json_integer_value(json_object_get(j, "ts")) <= t1);
    CHECK(json_equal(json_object_get(j, "data"), want));
    json_decref(want);
    json_decref(j);
  }

  /* Without thread and run ids: exactly type, seq, epoch, ts, data. */
  ev = event(HD_EV_AGENT_COMPLETED, "{\"status\":\"succeeded\"}");
  CHECK_INT(hd_manager_publish(M, "tm-json", &ev, &r), 0);
  CHECK_INT(c.nframes, 2);
  if (c.nframes == 2) {
    json_t *j = fake_json(c.frames[1]);
    CHECK_INT(json_object_size(j), 5);
    CHECK_STR(json_string_value(json_object_get(j, "type")), "agent_completed");
    CHECK_INT(json_integer_value(json_object_get(j, "seq")), 2);
    CHECK(json_object_get(j, "thread_id") == NULL);
    CHECK(json_object_get(j, "run_id") == NULL);
    CHECK_STR(json_string_value(json_object_get(json_object_get(j, "data"), "status")),
              "succeeded");
    json_decref(j);
  }

  /* A payload over 125 and over 65535 bytes: the 16- and 64-bit length forms. */
  {
    size_t sizes[2] = {300, 70000};
    for (int k = 0; k < 2; k++) {
      size_t n = sizes[k];
      char *big = malloc(n + 16);
      memcpy(big, "{\"delta\":\"", 10);
      memset(big + 10, 'z', n);
      memcpy(big + 10 + n, "\"}", 3);
      ev = event(HD_EV_AGENT_MESSAGE, big);
      CHECK_INT(hd_manager_publish(M, "tm-json", &ev, &r), 0);
      CHECK_INT(c.nframes, 3 + k);
      if (c.nframes == 3 + (size_t)k) {
        json_t *j = fake_json(c.frames[2 + k]);
        const char *d =
            json_string_value(json_object_get(json_object_get(j, "data"), "delta"));
        CHECK(d != NULL && strlen(d) == n);
        CHECK_INT(json_integer_value(json_object_get(j, "seq")), 3 + k);
        json_decref(j);
      }
      free(big);
    }
  }
  fake_dispose(&c);
}

static void test_event_types(void) {
  static const char *const wire[] = {"agent_started",  "agent_thinking",
                                     "tool_executing", "tool_completed",
                                     "agent_message",  "agent_completed"};

  CHECK_INT(HD_EV__COUNT, 6);
  for (int t = 0; t < HD_EV__COUNT; t++) {
    const char *name = hd_event_type_name((hd_event_type_t)t);
    CHECK_STR(name, wire[t]);
    if (name) CHECK_INT(hd_event_type_parse(name, strlen(name)), t);
  }
  CHECK(hd_event_type_name(HD_EV__COUNT) == NULL);
  CHECK(hd_event_type_name((hd_event_type_t)-1) == NULL);
  CHECK_INT(hd_event_type_parse("agent_started", 5), -1); /* a prefix is not a name */
  CHECK_INT(hd_event_type_parse("agent_startedx", 14), -1);
  CHECK_INT(hd_event_type_parse("agent_startedx", 13),
            HD_EV_AGENT_STARTED); /* len counts */
  CHECK_INT(hd_event_type_parse("Agent_Started", 13), -1);
  CHECK_INT(hd_event_type_parse("", 0), -1);
  CHECK_INT(hd_event_type_parse("welcome", 7), -1);
}

/* ---- scopes --------------------------------------------------------------------- */

static void test_scope_emit(void) {
  fake_conn_t a, b;
  hd_user_ctx_t ca = {.user_id = "tm-scope-a", .thread_id = "t1"};
  hd_user_ctx_t cb = {.user_id = "tm-scope-b"};
  hd_scope_t sa, sb;
  hd_event_t ev = event(HD_EV_AGENT_THINKING, "{\"text\":\"hm\"}");
  hd_publish_result_t r = {0, 0};

  fake_init(&a);
  fake_init(&b);
  CHECK_INT(fake_attach(&a, "tm-scope-a", NULL, NULL), 0);
  CHECK_INT(fake_attach(&b, "tm-scope-b", NULL, NULL), 0);
  sa = hd_manager_scope(M, &ca);
  sb = hd_manager_scope(M, &cb);
  CHECK(sa.manager == M);
  CHECK(sa.ctx == &ca);
  CHECK(sb.ctx == &cb);

  CHECK_INT(hd_scope_emit(sa, &ev, &r), 0);
  CHECK_INT(r.seq, 1);
  CHECK_INT(r.delivered, 1);
  CHECK_INT(a.nframes, 1);
  CHECK_INT(b.nframes, 0);
  CHECK_INT(hd_scope_emit(sb, &ev, &r), 0);
  CHECK_INT(hd_scope_emit(sb, &ev, &r), 0);
  CHECK_INT(r.seq, 2);
  CHECK_INT(a.nframes, 1);
  CHECK_INT(b.nframes, 2);
  CHECK_INT(hd_scope_emit(sa, &ev, &r), 0);
  CHECK_INT(r.seq, 2);
  CHECK_INT(a.nframes, 2);
  for (size_t i = 0; i < a.nframes; i++) CHECK_INT(a.frames[i]->user, a.sub.uid);
  for (size_t i = 0; i < b.nframes; i++) CHECK_INT(b.frames[i]->user, b.sub.uid);
  fake_dispose(&a);
  fake_dispose(&b);
}

/* ---- the write-time isolation check --------------------------------------------- */

static void test_isolation_check(void) {
  fake_conn_t a, b;
  hd_publish_result_t r;
  uint64_t v0 = stats().isolation_violations;
  uint32_t uid;

  fake_init(&a);
  fake_init(&b);
  CHECK_INT(fake_attach(&a, "tm-iso-a", NULL, NULL), 0);
  CHECK_INT(fake_attach(&b, "tm-iso-b", NULL, NULL), 0);

  /* Correct routing: every recorded frame passes the check. */
  CHECK_INT(publish("tm-iso-a", "{}", &r), 0);
  CHECK_INT(a.nframes, 1);
  if (a.nframes == 1) CHECK(hd__manager_check_write(M, &a.sub, a.frames[0]));
  CHECK_INT(stats().isolation_violations - v0, 0);

  /* Corrupted routing: the transport delivers a's event to b's connection.
   * The write-time check must refuse it and count it. */
  atomic_store(&fake_misroute, &b);
  CHECK_INT(publish("tm-iso-a", "{\"secret\":\"a\"}", &r), 0);
  atomic_store(&fake_misroute, NULL);
  CHECK_INT(r.delivered, 1);
  CHECK_INT(a.nframes, 1);
  CHECK_INT(b.nframes, 1);
  if (b.nframes == 1) {
    CHECK(!hd__manager_check_write(M, &b.sub, b.frames[0]));
    CHECK_INT(stats().isolation_violations - v0, 1);
    /* The same frame on its owner's connection passes (and counts nothing). */
    CHECK(hd__manager_check_write(M, &a.sub, b.frames[0]));
    CHECK_INT(stats().isolation_violations - v0, 1);
  }

  /* Corrupted registration: a's connection carries b's tag. */
  fake_clear(&a);
  CHECK_INT(publish("tm-iso-a", "{}", &r), 0);
  CHECK_INT(a.nframes, 1);
  uid = a.sub.uid;
  a.sub.uid = b.sub.uid;
  if (a.nframes == 1) CHECK(!hd__manager_check_write(M, &a.sub, a.frames[0]));
  CHECK_INT(stats().isolation_violations - v0, 2);
  a.sub.uid = uid;
  if (a.nframes == 1) CHECK(hd__manager_check_write(M, &a.sub, a.frames[0]));
  CHECK_INT(stats().isolation_violations - v0, 2);

  /* Untagged frames (welcome, replies: f->user == 0) pass anywhere. */
  {
    hd_frame_t *f = hd_frame_new(0x1, "{}", 2);
    CHECK_INT(f->user, 0);
    CHECK(hd__manager_check_write(M, &b.sub, f));
    hd_frame_unref(f);
  }
  CHECK_INT(stats().isolation_violations - v0, 2);
  fake_dispose(&a);
  fake_dispose(&b);
}

int main(void) {
  M = fake_install();
  test_singleton();
  test_seq_new_user();
  test_seq_per_user();
  test_welcome_head();
  test_routing();
  test_detach();
  test_presence();
  test_disconnect();
  test_invalid();
  test_draining();
  test_frame_json();
  test_event_types();
  test_scope_emit();
  test_isolation_check();
  TEST_MAIN_END();
}
