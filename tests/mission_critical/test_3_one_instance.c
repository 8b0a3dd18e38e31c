/* Mission-critical 3: a second instance cannot be created, and concurrent
 * first calls from many threads get the one instance.
 *
 * Linked against the shared library libherald.so, as an embedder would be.
 * Each round forks a fresh process (so the manager does not exist yet) in
 * which 64 threads wait on a barrier and then call hd_manager_get() as their
 * very first herald call; every pointer must be the same, non-NULL, and the
 * manager must report instances == 1. Rounds are repeated to give a racy
 * initialization (check-then-create without pthread_once, a non-atomic
 * counter) many chances to show up as two pointers or instances == 2.
 *
 * There is no public constructor: libherald.so (argv[1]) must export no
 * symbol matching manager_(new|create|init|alloc) (and must export
 * hd_manager_get, so an nm that lists nothing cannot pass). That the type is
 * opaque, so an embedder cannot allocate a second one itself, is the compile
 * probe 3_no_second_instance_compiles (drift_probe.c, HD_PROBE=4).
 *
 * How it fails: two different pointers, NULL, instances != 1, an exported
 * constructor-like symbol.
 */
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "herald/herald.h"
#include "support/unit.h"

enum { THREADS = 64, ROUNDS = 12 };

static pthread_barrier_t barrier;
static hd_manager_t *got[THREADS];

static void *racer(void *arg) {
  size_t i = (size_t)arg;
  pthread_barrier_wait(&barrier);
  got[i] = hd_manager_get(); /* the first herald call in this process */
  return NULL;
}

/* One fresh process: returns the number of failed checks. */
static int round_in_child(void) {
  pthread_t t[THREADS];
  hd_manager_stats_t st;
  int bad = 0;

  pthread_barrier_init(&barrier, NULL, THREADS);
  for (size_t i = 0; i < THREADS; i++)
    if (pthread_create(&t[i], NULL, racer, (void *)i) != 0) return 100;
  for (size_t i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&barrier);
  for (size_t i = 0; i < THREADS; i++) {
    if (got[i] == NULL || got[i] != got[0]) {
      fprintf(stderr, "thread %zu got %p, thread 0 got %p\n", i, (void *)got[i],
              (void *)got[0]);
      bad++;
    }
  }
  if (hd_manager_get() != got[0]) bad++;
  hd_manager_stats(got[0], &st);
  if (st.instances != 1) {
    fprintf(stderr, "instances == %llu, want 1\n", (unsigned long long)st.instances);
    bad++;
  }
  return bad;
}

static void test_concurrent_first_calls(void) {
  for (int r = 0; r < ROUNDS; r++) {
    int status = 0;
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) _exit(round_in_child() ? 1 : 0);
    CHECK_INT(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status));
    CHECK_INT(WEXITSTATUS(status), 0);
  }
  /* And in this process too (no fork), once more. */
  CHECK_INT(round_in_child(), 0);
}

static void test_no_constructor(const char *lib) {
  char cmd[4096], line[512];
  regex_t re;
  FILE *p;
  bool saw_get = false;
  int symbols = 0;

  CHECK_INT(regcomp(&re, "manager_(new|create|init|alloc)", REG_EXTENDED | REG_NOSUB), 0);
  snprintf(cmd, sizeof(cmd), "nm -D --defined-only '%s'", lib);
  p = popen(cmd, "r");
  CHECK(p != NULL);
  if (p == NULL) return;
  while (fgets(line, sizeof(line), p)) {
    char addr[64], type[8], sym[400];
    if (sscanf(line, "%63s %7s %399s", addr, type, sym) != 3) continue;
    symbols++;
    if (strcmp(sym, "hd_manager_get") == 0) saw_get = true;
    if (regexec(&re, sym, 0, NULL, 0) == 0) {
      fprintf(stderr, "%s exports a constructor-like symbol: %s\n", lib, sym);
      CHECK(!"public manager constructor");
    }
  }
  CHECK_INT(pclose(p), 0);
  CHECK(symbols > 10);
  CHECK(saw_get);
  regfree(&re);
}

int main(int argc, char **argv) {
  /* Nothing herald before the forks: every child starts without a manager. */
  test_concurrent_first_calls();
  CHECK(argc > 1);
  if (argc > 1) test_no_constructor(argv[1]);
  TEST_MAIN_END();
}
