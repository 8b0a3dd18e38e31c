/* A server frame encoded once and shared by every connection it is written to.
 *
 * The header and payload live in one allocation after a reference count. A
 * sender creates the frame with one reference, each connection queue that holds
 * it takes another, and whoever drops the last reference frees it. References
 * are atomic because a frame published on one worker may be queued on others.
 */
#ifndef HD_CORE_FRAME_H
#define HD_CORE_FRAME_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hd_frame_s {
  atomic_uint refs;
  uint32_t len;  /* bytes in data: header + payload */
  uint32_t user; /* owner tag for the write-time isolation check; 0 = any */
  uint8_t opcode;
  uint8_t event; /* stream events: hd_event_type_t + 1; 0 for anything else */
  uint64_t seq;  /* stream events: the (last) seq the frame carries */
  uint8_t data[];
} hd_frame_t;

/* Encodes an unmasked, final frame with the given payload (copied). Returns the
 * frame with one reference, or NULL on OOM or if len exceeds 4 GiB. */
hd_frame_t *hd_frame_new(unsigned opcode, const void *payload, size_t len);

/* Like hd_frame_new() for a payload the caller will write itself into
 * hd_frame_payload(f), which has room for len bytes. */
hd_frame_t *hd_frame_alloc(unsigned opcode, size_t len);

static inline uint8_t *hd_frame_payload(hd_frame_t *f, size_t len) {
  return f->data + f->len - len;
}

static inline hd_frame_t *hd_frame_ref(hd_frame_t *f) {
  atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
  return f;
}

void hd_frame_unref(hd_frame_t *f);

/* The payload of a frame made by hd_frame_new/alloc (after its header). */
static inline const uint8_t *hd_frame_body(const hd_frame_t *f, size_t *len) {
  size_t h = (f->data[1] & 0x7F) == 126 ? 4 : (f->data[1] & 0x7F) == 127 ? 10 : 2;
  *len = f->len - h;
  return f->data + h;
}

#endif
