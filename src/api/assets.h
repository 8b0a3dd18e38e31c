/* The chat page's files, embedded at build time (cmake/embed.cmake). */
#ifndef HD_API_ASSETS_H
#define HD_API_ASSETS_H

#include <stddef.h>

typedef struct {
  const char *path; /* "/index.html"; NULL ends the table */
  const char *content_type;
  const unsigned char *data;
  size_t len;
  const char *etag; /* quoted, from the file's SHA-1 */
} hd_asset_t;

extern const hd_asset_t hd_assets[];

#endif
