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

#include <stdatomic.h>

typedef struct hd_sub_s {
  struct hd_user_s *user; /* set by attach; NULL when not registered */
  const char *user_id;    /* the user's id, owned by the manager; valid while set */
  struct hd_sub_s *prev, *next;
  uint32_t uid;    /* the user's tag, checked against each frame's */
  uint16_t worker; /* the worker the connection lives on */
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

/* History limits (each with its default); the first two are per user. */
typedef struct {
  size_t max_events;  /* 1000 events */
  size_t max_bytes;   /* 1 MiB of encoded events */
  int64_t max_age_ms; /* 10 minutes */
  size_t max_total;   /* 256 MiB across all users, oldest first */
} hd_history_limits_t;

void hd__manager_configure(hd_manager_t *m, const hd_history_limits_t *limits);

/* Registration of a connection, with an optional resume. */
typedef struct {
  bool resume;                  /* in: the client sent since_seq */
  uint64_t since_seq;           /* in */
  const char *client_epoch;     /* in: the epoch the client last saw, or NULL */
  uint32_t max_subs;            /* in: the user's connection limit, 0 = none */
  uint64_t head_seq;            /* out: the newest seq at registration */
  char epoch[HD_EPOCH_LEN + 1]; /* out */
  hd_frame_t **replay;          /* out: retained events after since_seq, in order;
                                   each holds a reference; free() the array */
  size_t nreplay;               /* out */
  bool complete;                /* out: no event after since_seq is missing */
} hd_attach_t;

/* Registers sub for user_id. Atomically with the registration, reports the
 * head seq and epoch and, when resuming, takes the retained events after
 * since_seq: every later event is delivered to sub through the transport, so
 * replay + live has no gap and no duplicate. Returns 0, HD_EINVAL or HD_ENOMEM. */
int hd__manager_attach(hd_manager_t *m, hd_sub_t *sub, const char *user_id,
                       hd_attach_t *a);
/* (HD_ELIMIT: the user already has max_subs connections; nothing registered.) */

/* The "runs" reply for user_id: its runs in flight. malloc'ed JSON text. */
char *hd__manager_runs_json(hd_manager_t *m, const char *user_id);

/* The "history" reply: retained events after since_seq (at most limit), as
 * malloc'ed JSON text. */
char *hd__manager_history_json(hd_manager_t *m, const char *user_id, uint64_t since_seq,
                               size_t limit);

/* Starts one of Herald's own runs: publishes agent_started, whose run_id must
 * begin with "hr-", unless the run is already in flight (HD_EEXIST) or the user
 * has max_runs (> 0) runs in flight (HD_ELIMIT). For such runs,
 * hd_manager_publish() refuses any agent_started (HD_EEXIST) and any event once
 * the run is no longer in flight (HD_ENOENT): each gets exactly one
 * agent_started first and one agent_completed last, whoever publishes. */
int hd__manager_run_begin(hd_manager_t *m, const char *user_id, const hd_event_t *started,
                          size_t max_runs, hd_publish_result_t *res);

/* Milliseconds since the run's latest event, or -1 when it is not in flight
 * (never started, completed, or forgotten). */
int64_t hd__manager_run_idle(hd_manager_t *m, const char *user_id, const char *run_id);

/* Drops events older than the age limit (called periodically). */
void hd__manager_expire(hd_manager_t *m);

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
