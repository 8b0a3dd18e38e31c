/* Mission-critical 2: the test double matches the real API.
 *
 * The seed's Python mock had 48 methods fewer and 8 more than production.
 * Here the double (tests/support/manager_double.c) is generated from the same
 * HD_MANAGER_OPS list as the real prototypes; this test proves at run time
 * what the generation promises:
 *   - hd_manager_api_t holds exactly as many function pointers as the list
 *     has entries, and both tables fill every one of them;
 *   - the double's table points at the double, the real one at the real ops;
 *   - calling each op through the double's table records exactly one call on
 *     that op and hands the hook exactly the arguments given;
 *   - with hooks set to the real ops (possible only because the types are
 *     identical) the double delegates and agrees with the manager;
 *   - libherald.so (path in argv[1]) exports every op, and no hd_manager_* or
 *     hd_scope_* function beyond the list and hd_manager_get/hd_manager_api:
 *     no "extra methods" outside the one declaration.
 * Its compile-time half is the drift probes in CMakeLists.txt
 * (2_double_drift_*): a hand-written double with another signature must fail
 * to compile.
 *
 * How it fails: an op added to manager.h but not to the table type (size
 * check), a NULL or swapped table entry, a double that does not count or does
 * not forward its arguments, an exported manager function outside the list.
 */
#include <stdio.h>
#include <string.h>

#include "core/manager_internal.h"
#include "herald/herald.h"
#include "mission_critical/fake_transport.h"
#include "support/manager_double.h"
#include "support/unit.h"

typedef void (*any_fn)(void);

/* ---- hooks that record their arguments ------------------------------------ */

static struct {
  hd_manager_t *m;
  const hd_user_ctx_t *ctx;
  hd_scope_t scope;
  const hd_event_t *ev;
  hd_publish_result_t *res;
  const char *user;
  uint16_t code;
  char *out;
  hd_manager_stats_t *stats;
} seen;

static hd_scope_t hook_scope(hd_manager_t *m, const hd_user_ctx_t *ctx) {
  hd_scope_t s = {m, ctx};
  seen.m = m;
  seen.ctx = ctx;
  return s;
}
static int hook_emit(hd_scope_t s, const hd_event_t *ev, hd_publish_result_t *res) {
  seen.scope = s;
  seen.ev = ev;
  seen.res = res;
  res->seq = 77;
  return -1001;
}
static int hook_publish(hd_manager_t *m, const char *user_id, const hd_event_t *ev,
                        hd_publish_result_t *res) {
  seen.m = m;
  seen.user = user_id;
  seen.ev = ev;
  seen.res = res;
  return -1002;
}
static size_t hook_presence(hd_manager_t *m, const char *user_id) {
  seen.m = m;
  seen.user = user_id;
  return 1003;
}
static size_t hook_disconnect(hd_manager_t *m, const char *user_id, uint16_t code) {
  seen.m = m;
  seen.user = user_id;
  seen.code = code;
  return 1004;
}
static uint64_t hook_head_seq(hd_manager_t *m, const char *user_id) {
  seen.m = m;
  seen.user = user_id;
  return 1005;
}
static void hook_epoch(hd_manager_t *m, const char *user_id, char *out) {
  seen.m = m;
  seen.user = user_id;
  seen.out = out;
  strcpy(out, "hooked");
}
static void hook_stats(hd_manager_t *m, hd_manager_stats_t *out) {
  seen.m = m;
  seen.stats = out;
  out->instances = 1006;
}

/* Every op must have been called exactly once since the last reset. A new op
 * in HD_MANAGER_OPS that this file does not call shows up here as 0 calls. */
static void check_each_called_once(const char *phase) {
#define XX(ret, name, params, args)                                                      \
  if (atomic_load(&hd_double.name.calls) != 1) {                                         \
    fprintf(stderr, "%s: %s called %lu times (want 1)\n", phase, #name,                  \
            (unsigned long)atomic_load(&hd_double.name.calls));                          \
  }                                                                                      \
  CHECK_INT(atomic_load(&hd_double.name.calls), 1);
  HD_MANAGER_OPS(XX)
#undef XX
  CHECK_INT(hd_manager_double_total_calls(), HD_MANAGER_NOPS);
}

static void test_tables(void) {
  const hd_manager_api_t *real = hd_manager_api(), *dbl = hd_manager_double_api();
  const any_fn *r = (const any_fn *)(const void *)real,
               *d = (const any_fn *)(const void *)dbl;
  size_t n = sizeof(hd_manager_api_t) / sizeof(any_fn);

  CHECK(real != NULL);
  CHECK(dbl != NULL);
  CHECK(real != dbl);
  CHECK_INT(sizeof(hd_manager_api_t) % sizeof(any_fn), 0);
  CHECK_INT(n, HD_MANAGER_NOPS);
  CHECK(HD_MANAGER_NOPS >= 8); /* the list as of this writing; it may grow */
  for (size_t i = 0; i < n; i++) {
    CHECK(r[i] != NULL);
    CHECK(d[i] != NULL);
    CHECK(r[i] != d[i]); /* the double is not the real op under another name */
  }
  /* Field by field: each table entry is the op of that name. */
#define XX(ret, name, params, args)                                                      \
  CHECK(real->name == name);                                                             \
  CHECK(dbl->name == hd_double_##name);
  HD_MANAGER_OPS(XX)
#undef XX
}

static void test_calls_record(void) {
  const hd_manager_api_t *api = hd_manager_double_api();
  hd_manager_t *m = (hd_manager_t *)(uintptr_t)0x1234; /* never dereferenced */
  hd_user_ctx_t ctx = {.user_id = "u-dbl"};
  hd_event_t ev = {HD_EV_AGENT_MESSAGE, NULL, NULL, "{}", 2};
  hd_publish_result_t res = {0, 0};
  hd_manager_stats_t st;
  char epoch[HD_EPOCH_LEN + 1] = "untouched";
  hd_scope_t s;

  /* No hooks: each op records one call and returns the zero value. */
  hd_manager_double_reset();
  CHECK_INT(hd_manager_double_total_calls(), 0);
  s = api->hd_manager_scope(m, &ctx);
  CHECK(s.manager == NULL && s.ctx == NULL);
  CHECK_INT(api->hd_scope_emit(s, &ev, &res), 0);
  CHECK_INT(api->hd_manager_publish(m, "u-dbl", &ev, &res), 0);
  CHECK_INT(api->hd_manager_presence(m, "u-dbl"), 0);
  CHECK_INT(api->hd_manager_disconnect(m, "u-dbl", 4003), 0);
  CHECK_INT(api->hd_manager_head_seq(m, "u-dbl"), 0);
  api->hd_manager_epoch(m, "u-dbl", epoch);
  CHECK_STR(epoch, "untouched");
  api->hd_manager_stats(m, &st);
  check_each_called_once("no hooks");

  /* Hooks: each sees exactly its arguments and provides the result. */
  hd_manager_double_reset();
  memset(&seen, 0, sizeof(seen));
  hd_double.hd_manager_scope.hook = hook_scope;
  hd_double.hd_scope_emit.hook = hook_emit;
  hd_double.hd_manager_publish.hook = hook_publish;
  hd_double.hd_manager_presence.hook = hook_presence;
  hd_double.hd_manager_disconnect.hook = hook_disconnect;
  hd_double.hd_manager_head_seq.hook = hook_head_seq;
  hd_double.hd_manager_epoch.hook = hook_epoch;
  hd_double.hd_manager_stats.hook = hook_stats;

  s = api->hd_manager_scope(m, &ctx);
  CHECK(seen.m == m && seen.ctx == &ctx);
  CHECK(s.manager == m && s.ctx == &ctx);
  CHECK_INT(api->hd_scope_emit(s, &ev, &res), -1001);
  CHECK(seen.scope.manager == m && seen.scope.ctx == &ctx);
  CHECK(seen.ev == &ev && seen.res == &res);
  CHECK_INT(res.seq, 77);
  seen.m = NULL;
  CHECK_INT(api->hd_manager_publish(m, "u-pub", &ev, &res), -1002);
  CHECK(seen.m == m && seen.ev == &ev && seen.res == &res);
  CHECK_STR(seen.user, "u-pub");
  CHECK_INT(api->hd_manager_presence(m, "u-pres"), 1003);
  CHECK_STR(seen.user, "u-pres");
  CHECK_INT(api->hd_manager_disconnect(m, "u-disc", 4003), 1004);
  CHECK_STR(seen.user, "u-disc");
  CHECK_INT(seen.code, 4003);
  CHECK_INT(api->hd_manager_head_seq(m, "u-head"), 1005);
  CHECK_STR(seen.user, "u-head");
  api->hd_manager_epoch(m, "u-epoch", epoch);
  CHECK_STR(seen.user, "u-epoch");
  CHECK(seen.out == epoch);
  CHECK_STR(epoch, "hooked");
  api->hd_manager_stats(m, &st);
  CHECK(seen.stats == &st);
  CHECK_INT(st.instances, 1006);
  check_each_called_once("hooks");
  hd_manager_double_reset();
}

/* Hooks set to the real ops: the assignment compiles only because each hook
 * has the real op's exact type (-Werror=incompatible-pointer-types). */
static void test_delegation(void) {
  const hd_manager_api_t *api = hd_manager_double_api();
  hd_manager_t *m = fake_install();
  fake_conn_t c;
  hd_user_ctx_t ctx = {.user_id = "mc2-delegate"};
  hd_event_t ev = {HD_EV_AGENT_MESSAGE, NULL, NULL, "{\"k\":1}", 7};
  hd_publish_result_t res = {0, 0};
  hd_manager_stats_t st;
  char epoch[HD_EPOCH_LEN + 1], real_epoch[HD_EPOCH_LEN + 1];

  hd_manager_double_reset();
#define XX(ret, name, params, args) hd_double.name.hook = name;
  HD_MANAGER_OPS(XX)
#undef XX
  fake_init(&c);
  CHECK_INT(fake_attach(&c, "mc2-delegate", NULL, NULL), 0);
  hd_scope_t s = api->hd_manager_scope(m, &ctx);
  CHECK(s.manager == m && s.ctx == &ctx);
  CHECK_INT(api->hd_scope_emit(s, &ev, &res), 0);
  CHECK_INT(res.seq, 1);
  CHECK_INT(res.delivered, 1);
  CHECK_INT(api->hd_manager_publish(m, "mc2-delegate", &ev, &res), 0);
  CHECK_INT(res.seq, 2);
  CHECK_INT(c.nframes, 2);
  CHECK_INT(api->hd_manager_presence(m, "mc2-delegate"), 1);
  CHECK_INT(api->hd_manager_disconnect(m, "mc2-delegate", 4003), 1);
  CHECK_INT(c.closes, 1);
  CHECK_INT(api->hd_manager_head_seq(m, "mc2-delegate"), 2);
  api->hd_manager_epoch(m, "mc2-delegate", epoch);
  hd_manager_epoch(m, "mc2-delegate", real_epoch);
  CHECK_STR(epoch, real_epoch);
  api->hd_manager_stats(m, &st);
  CHECK_INT(st.instances, 1);
  check_each_called_once("delegation");
  fake_dispose(&c);
  hd_manager_double_reset();
}

/* libherald.so's manager surface is exactly the list (+ get and api). */
static void test_exports(const char *lib) {
  static const char *const ops[] = {
#define XX(ret, name, params, args) #name,
      HD_MANAGER_OPS(XX)
#undef XX
  };
  bool found[sizeof(ops) / sizeof(ops[0])] = {false};
  char cmd[4096], line[512];
  FILE *p;
  int total = 0;

  snprintf(cmd, sizeof(cmd), "nm -D --defined-only '%s'", lib);
  p = popen(cmd, "r");
  CHECK(p != NULL);
  if (p == NULL) return;
  while (fgets(line, sizeof(line), p)) {
    char addr[64], type[8], sym[400];
    if (sscanf(line, "%63s %7s %399s", addr, type, sym) != 3) continue;
    if (strcmp(type, "T") != 0) continue;
    total++;
    if (strncmp(sym, "hd_manager_", 11) != 0 && strncmp(sym, "hd_scope_", 9) != 0)
      continue;
    bool known = strcmp(sym, "hd_manager_get") == 0 || strcmp(sym, "hd_manager_api") == 0;
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
      if (strcmp(sym, ops[i]) == 0) known = found[i] = true;
    if (!known) fprintf(stderr, "exported outside HD_MANAGER_OPS: %s\n", sym);
    CHECK(known);
  }
  CHECK_INT(pclose(p), 0);
  CHECK(total > 10); /* nm really listed the library */
  for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
    if (!found[i]) fprintf(stderr, "op not exported by %s: %s\n", lib, ops[i]);
    CHECK(found[i]);
  }
}

int main(int argc, char **argv) {
  test_tables();
  test_calls_record();
  test_delegation();
  CHECK(argc > 1);
  if (argc > 1) test_exports(argv[1]);
  TEST_MAIN_END();
}
