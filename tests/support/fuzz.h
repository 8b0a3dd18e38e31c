/* What the fuzz targets share: REQUIRE, a check that aborts (so libFuzzer
 * keeps the input) after naming the failed condition and where it is. */
#ifndef HD_TEST_FUZZ_H
#define HD_TEST_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

#define REQUIRE(c)                                                                       \
  do {                                                                                   \
    if (!(c)) {                                                                          \
      fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #c);            \
      abort();                                                                           \
    }                                                                                    \
  } while (0)

#endif
