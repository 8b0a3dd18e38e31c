/* Log lines go to stderr, written with a single write so lines from different
 * workers never interleave. Format: ISO-8601 time, level, message. */
#include "daemon/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int hd__log_level = HD_LOG_INFO;

static const char *const names[] = {"error", "warn", "info", "debug"};

void hd__log(int level, const char *fmt, ...) {
  char line[1024];
  struct timespec ts;
  struct tm tm;
  size_t n;
  int k;
  va_list ap;

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
  k = snprintf(line + n, sizeof(line) - n, ".%03ldZ %s ", ts.tv_nsec / 1000000,
               names[level < 0   ? 0
                     : level > 3 ? 3
                                 : level]);
  if (k > 0) n += (size_t)k;
  va_start(ap, fmt);
  k = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
  va_end(ap);
  if (k > 0) n += (size_t)k < sizeof(line) - n - 1 ? (size_t)k : sizeof(line) - n - 2;
  line[n++] = '\n';
  if (write(STDERR_FILENO, line, n) < 0) { /* nowhere left to report it */
  }
}
