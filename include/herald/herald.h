/* Herald: a real-time event gateway for AI-agent chat.
 *
 * This is the umbrella header: the only one an embedder includes. Everything it
 * declares is exported from libherald; everything else is hidden.
 *
 * Conventions (STYLE.md):
 *   - fallible functions return int: 0 on success, a negative HD_E* code on failure;
 *   - parsers return bytes consumed, HD_EAGAIN for "need more input";
 *   - the library never prints; the daemon logs.
 */
#ifndef HERALD_H
#define HERALD_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(HD_BUILDING) && defined(__GNUC__)
#define HD_EXPORT __attribute__((visibility("default")))
#else
#define HD_EXPORT
#endif

#define HD_VERSION_MAJOR  0
#define HD_VERSION_MINOR  1
#define HD_VERSION_PATCH  0
#define HD_VERSION_STRING "0.1.0"

/* The error table: name, value, description. One list makes the enum,
 * hd_strerror() and hd_err_name(). */
#define HD_ERRNO_MAP(XX)                                                                 \
  XX(EAGAIN, -11, "need more input")                                                     \
  XX(EPROTO, -71, "protocol error")                                                      \
  XX(ELIMIT, -90, "size or count limit exceeded")                                        \
  XX(ENOMEM, -12, "out of memory")                                                       \
  XX(EINVAL, -22, "invalid argument")                                                    \
  XX(EUTF8, -84, "invalid UTF-8")                                                        \
  XX(ECLOSED, -32, "connection is closing")                                              \
  XX(ENOENT, -2, "not found")                                                            \
  XX(EEXIST, -17, "already exists")                                                      \
  XX(EACCES, -13, "not authorized")                                                      \
  XX(EEXPIRED, -62, "expired")                                                           \
  XX(EBUSY, -16, "busy or shutting down")                                                \
  XX(EIO, -5, "I/O error")

typedef enum {
#define XX(name, value, _) HD_##name = (value),
  HD_ERRNO_MAP(XX)
#undef XX
} hd_errno_t;

/* Human-readable description of an HD_E* code. Never NULL; unknown codes give
 * "unknown error". Thread-safe. */
HD_EXPORT const char *hd_strerror(int err);

/* The code's name without the HD_ prefix, e.g. "EPROTO". Never NULL. */
HD_EXPORT const char *hd_err_name(int err);

/* The library version, "MAJOR.MINOR.PATCH". */
HD_EXPORT const char *hd_version(void);

#ifdef __cplusplus
}
#endif

#include "herald/manager.h"

#endif /* HERALD_H */
