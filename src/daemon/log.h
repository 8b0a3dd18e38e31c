/* The daemon's log: one line per event on stderr, with a level and context. */
#ifndef HD_DAEMON_LOG_H
#define HD_DAEMON_LOG_H

enum { HD_LOG_ERROR = 0, HD_LOG_WARN, HD_LOG_INFO, HD_LOG_DEBUG };

extern int hd__log_level;

void hd__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define hd_log(level, ...)                                                               \
  do {                                                                                   \
    if ((level) <= hd__log_level) hd__log((level), __VA_ARGS__);                         \
  } while (0)

#endif
