/* The manager's side facing the network layer (hd__ symbols: internal).
 *
 * A connection registers with the manager as an hd_sub_t it embeds. The manager
 * never touches a connection: to deliver a frame or close a connection it calls
 * the transport, which hands the work to the connection's own worker. The
 * transport's callbacks run while the manager holds the user's lock, which is
 * what keeps every connection's frames in seq order; they must only enqueue.
 */
#ifndef HD_CORE_MANAGER_INTERNAL_H
#define HD_CORE_MANAGER_INTERNAL_H

#include "core/frame.h"
#include "herald/manager.h"

struct hd_user_s;

typedef struct hd_sub_s {
  struct hd_user_s *user; /* set by attach; NULL when not registered */
  struct hd_sub_s *prev, *next;
  uint32_t uid;           /* the user's tag, checked against each frame's */
  uint16_t worker;        /* the worker the connection lives on */
} hd_sub_t;

typedef struct {
  /* Queue f (take a reference) for sub's connection. */
  void (*deliver)(void *ud, hd_sub_t *sub, hd_frame_t *f);
  /* Ask sub's connection to close with code. */
  void (*close)(void *ud, hd_sub_t *sub, uint16_t code);
  void *ud;
} hd_transport_t;

#define HD_EPOCH_LEN 32

/* Installs the transport; call before any attach. */
void hd__manager_set_transport(hd_manager_t *m, const hd_transport_t *t);

/* Registers sub for user_id and reports the stream's head seq and epoch (at
 * least HD_EPOCH_LEN + 1 bytes) at the moment of registration: every event
 * after that seq will be delivered to sub. Returns 0, HD_EINVAL or HD_ENOMEM. */
int hd__manager_attach(hd_manager_t *m, hd_sub_t *sub, const char *user_id,
                       uint64_t *head_seq, char *epoch);

/* Unregisters sub. After it returns the manager holds no reference to sub. */
void hd__manager_detach(hd_manager_t *m, hd_sub_t *sub);

/* The write-time isolation check: true if frame f may be written to sub's
 * connection. A frame tagged for another user is refused, logged by the caller
 * and counted in herald_isolation_violations_total. */
bool hd__manager_check_write(hd_manager_t *m, const hd_sub_t *sub, const hd_frame_t *f);

/* While draining, publishes fail with HD_EBUSY. */
void hd__manager_set_draining(hd_manager_t *m, bool draining);

/* Escapes s (n bytes) as the inside of a JSON string into out, which has room
 * for 6 * n bytes. Returns the bytes written. */
size_t hd__json_escape(char *out, const char *s, size_t n);

#endif
