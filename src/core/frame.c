/* Shared, refcounted server frames. See frame.h. */
#include "core/frame.h"

#include <stdlib.h>
#include <string.h>

#include "proto/ws.h"

hd_frame_t *hd_frame_alloc(unsigned opcode, size_t len) {
  uint8_t hdr[HD_WS_MAX_HEADER];
  size_t hlen;
  hd_frame_t *f;

  if (len > UINT32_MAX - HD_WS_MAX_HEADER) return NULL;
  hlen = hd_ws_header_encode(hdr, opcode, true, len);
  f = malloc(sizeof(*f) + hlen + len);
  if (f == NULL) return NULL;
  atomic_init(&f->refs, 1);
  f->len = (uint32_t)(hlen + len);
  f->user = 0;
  f->opcode = (uint8_t)opcode;
  f->event = 0;
  f->seq = 0;
  memcpy(f->data, hdr, hlen);
  return f;
}

hd_frame_t *hd_frame_new(unsigned opcode, const void *payload, size_t len) {
  hd_frame_t *f = hd_frame_alloc(opcode, len);

  if (f != NULL && len) memcpy(hd_frame_payload(f, len), payload, len);
  return f;
}

void hd_frame_unref(hd_frame_t *f) {
  /* Release ordering so the last holder sees every write to the frame. */
  if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1) free(f);
}
