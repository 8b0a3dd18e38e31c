/* The publish fast path (src/core/pubscan.c): what it accepts it reads right
 * (ids, type, the data bytes as sent); everything invalid, and everything
 * outside its subset, it declines so jansson can decide. Every strict prefix
 * of an accepted body is declined. tests/fuzz/fuzz_event.c checks the same
 * against jansson on generated input. */
#include <stdlib.h>

#include "core/event.h"
#include "support/unit.h"

#define LIMIT 65536

typedef struct {
  size_t n;
  bool batch;
  hd_event_json_t ev[8];
  char ids[4096];
} scan_t;

/* Scans; whatever the fast path accepts, jansson must accept too. */
static size_t scan_n(const char *body, size_t len, size_t cap, scan_t *s) {
  if (cap > 8) cap = 8;
  s->batch = false;
  s->n = hd__publish_scan(body, len, LIMIT, s->ev, cap, s->ids, &s->batch);
  if (s->n) {
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    CHECK(json_is_object(j));
    json_decref(j);
  }
  return s->n;
}

static size_t scan(const char *body, scan_t *s) {
  return scan_n(body, strlen(body), 8, s);
}

static void check_data(const hd_event_json_t *e, const char *want) {
  CHECK_MEM(e->ev.data, e->ev.data_len, want, strlen(want));
  CHECK(e->data == NULL); /* borrowed from the body, nothing to free */
}

static void test_single(void) {
  scan_t s;
  const char *body =
      " {\"user_id\" : \"alice\", \"thread_id\":\"t1\",\"run_id\":null,"
      "\"type\":\"tool_completed\",\"data\": {\"result\": 84, \"s\":\"a\\\"b\"},"
      "\"extra\":[1,2]}\r\n";

  CHECK_INT(scan(body, &s), 1);
  CHECK(!s.batch);
  CHECK_STR(s.ev[0].user_id, "alice");
  CHECK_STR(s.ev[0].ev.thread_id, "t1");
  CHECK(s.ev[0].ev.run_id == NULL);
  CHECK_INT(s.ev[0].ev.type, HD_EV_TOOL_COMPLETED);
  check_data(&s.ev[0], "{\"result\": 84, \"s\":\"a\\\"b\"}");
}

static void test_batch(void) {
  scan_t s;
  const char *body =
      "{\"events\":[{\"user_id\":\"u1\",\"type\":\"agent_message\",\"run_id\":\"r\","
      "\"data\":{\"delta\":\"h\xc3\xa9 \\u00e9\\ud83d\\ude00\"}},"
      "{\"type\":\"agent_started\",\"data\":{},\"user_id\":\"u2\"}]}";

  CHECK_INT(scan(body, &s), 2);
  CHECK(s.batch);
  CHECK_STR(s.ev[0].user_id, "u1");
  CHECK_STR(s.ev[0].ev.run_id, "r");
  CHECK_INT(s.ev[0].ev.type, HD_EV_AGENT_MESSAGE);
  check_data(&s.ev[0], "{\"delta\":\"h\xc3\xa9 \\u00e9\\ud83d\\ude00\"}");
  CHECK_STR(s.ev[1].user_id, "u2");
  CHECK(s.ev[1].ev.thread_id == NULL && s.ev[1].ev.run_id == NULL);
  CHECK_INT(s.ev[1].ev.type, HD_EV_AGENT_STARTED);
  check_data(&s.ev[1], "{}");

  /* More events than the caller has room for: declined (jansson then says
   * batch_too_large or handles it). */
  CHECK_INT(scan_n(body, strlen(body), 1, &s), 0);
}

/* Values at the edge of the subset that are still accepted. */
static void test_accepted_edges(void) {
  static const char *datas[] = {
      "{\"i\":123456789012345678,\"j\":-0,\"k\":0.5e-99,\"l\":1E+99,\"m\":-12.25}",
      "{\"\":\"empty key\",\"ctl\":\"\\b\\f\\n\\r\\t\\/\\\\\",\"del\":\"\x7f\"}",
      "{\"nc\":\"\xef\xbf\xbf\",\"max\":\"\xf4\x8f\xbf\xbf\",\"u\":"
      "\"\\uFFFF\\uDBFF\\uDFFF\"}",
  };
  char body[1024];
  scan_t s;

  for (size_t i = 0; i < sizeof(datas) / sizeof(datas[0]); i++) {
    snprintf(body, sizeof(body),
             "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":%s}", datas[i]);
    CHECK_INT(scan(body, &s), 1);
    if (s.n) check_data(&s.ev[0], datas[i]);
  }
}

/* Each is declined: invalid, breaks a publish rule, or outside the subset. */
static void test_declined(void) {
  static const char *bodies[] = {
      "",
      "   ",
      "[]",
      "{}",
      "null",
      "\xef\xbb\xbf{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{}}", /* BOM */
      /* grammar */
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{},}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":1,}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":[1,]}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":01}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":1.}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":.5}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":-}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":1e}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":tru}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":nul}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\" 1}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{a:1}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{}} x",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{}}{}",
      /* strings */
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":\"\\u0000\"}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":\"\\ud800\"}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":\"\\udc00\"}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":\"\\ud800\\u0041\"}"
      "}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":\"\\u12\"}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":\"\\x\"}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":\"tab\there\"}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":\"\xc0\xaf\"}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":\"\xed\xa0\x80\"}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":"
      "\"\xf4\x90\x80\x80\"}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":\"\xe2\x82\"}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":\"open}}",
      /* duplicate keys, at every level */
      "{\"user_id\":\"u\",\"user_id\":\"v\",\"type\":\"agent_thinking\",\"data\":{}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":1,\"a\":1}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"x\":[{\"b\":1,\"b\":2}]"
      "}}",
      "{\"events\":[],\"events\":[]}",
      /* outside the subset: jansson decides */
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"\\u0061\":1}}",
      "{\"user_id\":\"\\u0075\",\"type\":\"agent_thinking\",\"data\":{}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"i\":"
      "1234567890123456789}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"r\":1e100}}",
      /* publish rules */
      "{\"type\":\"agent_thinking\",\"data\":{}}",
      "{\"user_id\":null,\"type\":\"agent_thinking\",\"data\":{}}",
      "{\"user_id\":\"\",\"type\":\"agent_thinking\",\"data\":{}}",
      "{\"user_id\":7,\"type\":\"agent_thinking\",\"data\":{}}",
      "{\"user_id\":\"u\",\"thread_id\":\"\",\"type\":\"agent_thinking\",\"data\":{}}",
      "{\"user_id\":\"u\",\"run_id\":[],\"type\":\"agent_thinking\",\"data\":{}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinkin\",\"data\":{}}",
      "{\"user_id\":\"u\",\"type\":null,\"data\":{}}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\"}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":[]}",
      "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":\"{}\"}",
      "{\"events\":[]}",
      "{\"events\":{}}",
      "{\"events\":null}",
      "{\"events\":[1]}",
      "{\"events\":[{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{}},]}",
      "{\"events\":[{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{}},{}]}",
  };
  scan_t s;

  for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
    size_t n = scan(bodies[i], &s);
    if (n != 0) fprintf(stderr, "accepted #%zu: %s\n", i, bodies[i]);
    CHECK_INT(n, 0);
  }
}

/* Ids of 128 bytes pass, 129 do not; so does an object of 32 keys vs 33, and
 * data right at the message limit vs one byte over. */
static void test_limits(void) {
  char body[LIMIT + 256], id[130], keys[33 * 8 + 2], *o;
  scan_t s;
  size_t fill;

  memset(id, 'x', 129);
  id[128] = 0;
  snprintf(body, sizeof(body),
           "{\"user_id\":\"%s\",\"type\":\"agent_thinking\",\"data\":{}}", id);
  CHECK_INT(scan(body, &s), 1);
  id[128] = 'x';
  id[129] = 0;
  snprintf(body, sizeof(body),
           "{\"user_id\":\"%s\",\"type\":\"agent_thinking\",\"data\":{}}", id);
  CHECK_INT(scan(body, &s), 0);

  for (int k = 32; k <= 33; k++) {
    o = keys;
    *o++ = '{';
    for (int i = 0; i < k; i++) o += sprintf(o, "%s\"k%02d\":1", i ? "," : "", i);
    *o++ = '}';
    *o = 0;
    snprintf(body, sizeof(body),
             "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":%s}", keys);
    CHECK_INT(scan(body, &s), k == 32 ? 1 : 0);
  }

  /* data of exactly LIMIT - HD_EVENT_ENVELOPE_MAX bytes fits; one more does not. */
  for (int extra = 0; extra <= 1; extra++) {
    fill = LIMIT - HD_EVENT_ENVELOPE_MAX - 8 + (size_t)extra; /* {"a":""} is 8 */
    o = body +
        sprintf(body,
                "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"a\":\"");
    memset(o, 'y', fill);
    strcpy(o + fill, "\"}}");
    CHECK_INT(scan(body, &s), extra ? 0 : 1);
  }
}

/* Nesting: the data object is at depth 2 of a single event; 62 arrays inside
 * it reach depth 64, the deepest the fast path takes; 63 are left to jansson. */
static void test_depth(void) {
  char body[256], *o;
  scan_t s;

  for (int n = 62; n <= 63; n++) {
    o = body +
        sprintf(body, "{\"user_id\":\"u\",\"type\":\"agent_thinking\",\"data\":{\"d\":");
    memset(o, '[', (size_t)n);
    memset(o + n, ']', (size_t)n);
    strcpy(o + 2 * n, "}}");
    CHECK_INT(scan(body, &s), n == 62 ? 1 : 0);
  }
}

/* Every strict prefix of an accepted body is incomplete: declined. */
static void test_prefixes(void) {
  const char *body = "{\"events\":[{\"user_id\":\"u1\",\"type\":\"agent_message\","
                     "\"data\":{\"d\":[1,{\"x\":"
                     "null}],\"t\":true}}, "
                     "{\"user_id\":\"u2\",\"type\":\"agent_completed\",\"data\":{}}]}";
  size_t len = strlen(body);
  scan_t s;
  char *copy = malloc(len); /* exact size: ASan sees any read past the prefix */

  CHECK_INT(scan(body, &s), 2);
  for (size_t cut = 0; cut < len; cut++) {
    memcpy(copy, body, cut);
    size_t n = scan_n(copy, cut, 8, &s);
    if (n) fprintf(stderr, "prefix of %zu bytes accepted\n", cut);
    CHECK_INT(n, 0);
  }
  free(copy);
}

int main(void) {
  test_single();
  test_batch();
  test_accepted_edges();
  test_declined();
  test_limits();
  test_depth();
  test_prefixes();
  TEST_MAIN_END();
}
