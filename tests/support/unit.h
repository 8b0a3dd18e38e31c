/* A minimal unit-test harness: checks print both values on failure and the
 * process exits non-zero if any check failed. One test file per source file. */
#ifndef HD_TEST_UNIT_H
#define HD_TEST_UNIT_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hd_test_failures;
static int hd_test_checks;

#define CHECK(cond)                                                                      \
  do {                                                                                   \
    hd_test_checks++;                                                                    \
    if (!(cond)) {                                                                       \
      hd_test_failures++;                                                                \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);           \
    }                                                                                    \
  } while (0)

#define CHECK_INT(a, b)                                                                  \
  do {                                                                                   \
    long long va_ = (long long)(a), vb_ = (long long)(b);                                \
    hd_test_checks++;                                                                    \
    if (va_ != vb_) {                                                                    \
      hd_test_failures++;                                                                \
      fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a,  \
              #b, va_, vb_);                                                             \
    }                                                                                    \
  } while (0)

#define CHECK_MEM(a, alen, b, blen)                                                      \
  do {                                                                                   \
    size_t la_ = (size_t)(alen), lb_ = (size_t)(blen);                                   \
    hd_test_checks++;                                                                    \
    if (la_ != lb_ || (la_ && memcmp((a), (b), la_) != 0)) {                             \
      hd_test_failures++;                                                                \
      fprintf(stderr, "%s:%d: %s (%zu bytes) != %s (%zu bytes)\n", __FILE__, __LINE__,   \
              #a, la_, #b, lb_);                                                         \
    }                                                                                    \
  } while (0)

#define CHECK_STR(a, b)                                                                  \
  do {                                                                                   \
    const char *sa_ = (a), *sb_ = (b);                                                   \
    hd_test_checks++;                                                                    \
    if (sa_ == NULL || sb_ == NULL || strcmp(sa_, sb_) != 0) {                           \
      hd_test_failures++;                                                                \
      fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__,  \
              #a, #b, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                       \
    }                                                                                    \
  } while (0)

#define TEST_MAIN_END()                                                                  \
  do {                                                                                   \
    fprintf(stderr, "%d checks, %d failures\n", hd_test_checks, hd_test_failures);       \
    return hd_test_failures ? 1 : 0;                                                     \
  } while (0)

#endif
