/* The error table of herald.h made into strings, and the version. */
#include "herald/herald.h"

HD_EXPORT const char *hd_strerror(int err) {
  switch (err) {
#define XX(name, value, text)                                                            \
  case HD_##name:                                                                        \
    return text;
    HD_ERRNO_MAP(XX)
#undef XX
  default:
    return "unknown error";
  }
}

HD_EXPORT const char *hd_err_name(int err) {
  switch (err) {
#define XX(name, value, text)                                                            \
  case HD_##name:                                                                        \
    return #name;
    HD_ERRNO_MAP(XX)
#undef XX
  default:
    return "UNKNOWN";
  }
}

HD_EXPORT const char *hd_version(void) {
  return HD_VERSION_STRING;
}
