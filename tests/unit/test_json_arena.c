/* The per-thread jansson arena (src/api/json_arena.c): values built in a
 * window are correct and come from the arena; values from malloc are still
 * freed when they die inside a window; other threads are not affected; what a
 * thread keeps between windows is bounded. Run under ASan/LSan by `make asan`,
 * which also catches a pointer freed by the wrong allocator. */
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>

#include <jansson.h>

#include "api/json_arena.h"
#include "core/event.h"
#include "support/unit.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define UNDER_ASAN 1
#endif

/* Bytes in use by glibc malloc (meaningless when a sanitizer replaces it). */
static long long heap_used(void) {
  return (long long)mallinfo2().uordblks;
}

static char *batch_text(int n) {
  json_t *list = json_array();
  for (int i = 0; i < n; i++)
    json_array_append_new(list, json_pack("{s:s, s:s, s:{s:i, s:s}}", "user_id", "u1",
                                          "type", "agent_message", "data", "i", i,
                                          "delta", "hello world"));
  char *s = json_dumps(list, JSON_COMPACT);
  json_decref(list);
  return s;
}

static void test_window_values(void) {
  char *text = batch_text(1000), *again;
  json_error_t err;
  json_t *v;
  long long before;

  hd_json_arena_begin();
  before = heap_used();
  v = json_loads(text, JSON_REJECT_DUPLICATES, &err);
  CHECK(json_is_array(v));
  CHECK_INT(json_array_size(v), 1000);
  CHECK_INT(json_integer_value(
                json_object_get(json_object_get(json_array_get(v, 999), "data"), "i")),
            999);
  again = json_dumps(v, JSON_COMPACT);
  CHECK_STR(again, text);
  CHECK(hd_json_arena_held() >= strlen(text));
#ifndef UNDER_ASAN
  /* The whole DOM took a few chunks, not thousands of mallocs: the heap grew
   * by about what the arena holds. */
  CHECK(heap_used() - before <= (long long)hd_json_arena_held() + 4096);
#endif
  (void)before;
  hd__json_free(again);
  json_decref(v);
  hd_json_arena_end();
  CHECK(hd_json_arena_held() <= HD_JSON_ARENA_KEEP);
  hd__json_free(text);
}

/* A value allocated outside a window (malloc) and freed inside one is freed
 * for real; LSan reports it otherwise. */
static void test_malloc_value_dies_in_window(void) {
  char big[200000];
  json_t *outside;
  long long before;

  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = 0;
  outside = json_string(big);
  CHECK(outside != NULL);
  before = heap_used();
  hd_json_arena_begin();
  json_decref(outside);
#ifndef UNDER_ASAN
  CHECK(before - heap_used() >= (long long)sizeof(big));
#endif
  (void)before;
  hd_json_arena_end();
}

/* Windows are reusable, big requests get big chunks, and only a bounded
 * amount stays cached. */
static void test_growth_and_bound(void) {
  static char huge[3 << 20];
  memset(huge, 'y', sizeof(huge) - 1);
  for (int round = 0; round < 3; round++) {
    hd_json_arena_begin();
    json_t *s = json_string(huge);
    CHECK(s != NULL);
    CHECK_INT(json_string_length(s), sizeof(huge) - 1);
    CHECK(hd_json_arena_held() >= sizeof(huge));
    json_decref(s);
    hd_json_arena_end();
    CHECK(hd_json_arena_held() <= HD_JSON_ARENA_KEEP);

    hd_json_arena_begin();
    json_t *small = json_pack("{s:i}", "round", round);
    CHECK_INT(json_integer_value(json_object_get(small, "round")), round);
    json_decref(small);
    hd_json_arena_end();
    CHECK(hd_json_arena_held() > 0 && hd_json_arena_held() <= HD_JSON_ARENA_KEEP);
  }
}

/* The hooks themselves, at a chunk's exact end: a 0-byte request still gets a
 * block inside a chunk, so freeing it is a no-op and not a free() of a pointer
 * malloc never returned (glibc would abort). */
static void test_hook_edges(void) {
  json_malloc_t m;
  json_free_t f;
  void *a, *b, *z;

  json_get_alloc_funcs(&m, &f);
  hd_json_arena_release();
  hd_json_arena_begin();
  a = m(1);
  b = m(HD_JSON_ARENA_CHUNK - 16); /* the first chunk is now exactly full */
  z = m(0);
  CHECK(a != NULL && b != NULL && z != NULL);
  CHECK(((uintptr_t)a | (uintptr_t)b | (uintptr_t)z) % 16 == 0);
  CHECK_INT(hd_json_arena_held(), 3 * HD_JSON_ARENA_CHUNK);
  f(z);
  f(b);
  f(a);
  f(NULL);
  hd_json_arena_end();
  CHECK(hd_json_arena_held() == 2 * HD_JSON_ARENA_CHUNK);
}

static void *other_thread(void *arg) {
  json_t *v = json_pack("{s:s}", "from", "thread");
  (void)arg;
  /* This thread has no window open: its values come from malloc. */
  size_t held = hd_json_arena_held();
  json_decref(v);
  return (void *)held;
}

static void test_other_threads_unaffected(void) {
  pthread_t t;
  void *held = (void *)1;

  hd_json_arena_begin();
  json_t *mine = json_pack("{s:s}", "from", "main");
  CHECK(pthread_create(&t, NULL, other_thread, NULL) == 0);
  CHECK(pthread_join(t, &held) == 0);
  CHECK(held == NULL);
  CHECK_STR(json_string_value(json_object_get(mine, "from")), "main");
  json_decref(mine);
  hd_json_arena_end();
}

int main(void) {
  json_t *early = json_pack("{s:s}", "made", "before install");
  hd_json_arena_install();
  test_window_values();
  test_malloc_value_dies_in_window();
  test_growth_and_bound();
  test_other_threads_unaffected();
  test_hook_edges();
  json_decref(early); /* malloc'ed before the hooks: still freed correctly */
  hd_json_arena_release();
  CHECK_INT(hd_json_arena_held(), 0);
  TEST_MAIN_END();
}
