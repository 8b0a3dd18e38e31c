/* The manager: the one registry of who is connected, and the only way to send.
 *
 * There is exactly one manager per process. hd_manager_get() returns it from any
 * thread, creating it on the first call (thread-safe one-time initialization);
 * there is no other constructor, and the type is opaque. Every connection of
 * every user, on every worker, is registered here and nowhere else.
 *
 * Sending is bound to a user. Either name the user explicitly
 * (hd_manager_publish) or send through a scope (hd_scope_emit): a scope is a
 * small value binding the manager to one user's context, made by the factory
 * hd_manager_scope(). Nothing here keeps a shared "current user": two threads
 * emitting through scopes of two users cannot swap each other's context.
 *
 * Every event in a user's stream gets the next sequence number of that user
 * (+1 per event, identical on all of the user's connections) and the user's
 * epoch, and is encoded once; the same bytes are queued to each connection.
 *
 * The operations are declared once, in HD_MANAGER_OPS below. The prototypes
 * here, the function-table type hd_manager_api_t, and the test double in
 * tests/support are all generated from that one list, so an operation cannot
 * change in one place without the others failing to compile.
 */
#ifndef HERALD_MANAGER_H
#define HERALD_MANAGER_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "herald/herald.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hd_manager_s hd_manager_t;

/* The event types of a run (PROTOCOL.md section 3): enum name, wire name. */
#define HD_EVENT_TYPES(XX)                                                               \
  XX(AGENT_STARTED, "agent_started")                                                     \
  XX(AGENT_THINKING, "agent_thinking")                                                   \
  XX(TOOL_EXECUTING, "tool_executing")                                                   \
  XX(TOOL_COMPLETED, "tool_completed")                                                   \
  XX(AGENT_MESSAGE, "agent_message")                                                     \
  XX(AGENT_COMPLETED, "agent_completed")

typedef enum {
#define XX(name, wire) HD_EV_##name,
  HD_EVENT_TYPES(XX)
#undef XX
      HD_EV__COUNT
} hd_event_type_t;

#define HD_ID_MAX 128 /* user, thread and run ids: at most this many bytes */

/* Who an operation acts for. The strings are borrowed by whatever takes the
 * context; they must outlive it. */
typedef struct hd_user_ctx_s {
  const char *user_id;    /* the token's "sub"; never from client input */
  uint64_t connection_id; /* 0 outside a connection (backend, agent) */
  const char *thread_id;  /* where relevant, else NULL */
  const char *run_id;     /* where relevant, else NULL */
  int64_t token_exp;      /* claims of the token that authenticated the user */
  int64_t token_iat;
} hd_user_ctx_t;

/* The manager bound to one user's context. A plain value: copy it freely. It
 * borrows ctx, which must outlive every use of the scope. */
typedef struct hd_scope_s {
  hd_manager_t *manager;
  const hd_user_ctx_t *ctx;
} hd_scope_t;

/* One event to publish. Borrowed for the duration of the call. */
typedef struct hd_event_s {
  hd_event_type_t type;
  const char *thread_id; /* NULL: none; else <= HD_ID_MAX bytes */
  const char *run_id;    /* NULL: none; else <= HD_ID_MAX bytes */
  const char *data;      /* the "data" object as JSON text (trusted to be valid) */
  size_t data_len;
} hd_event_t;

typedef struct {
  uint64_t seq;       /* the event's seq in the user's stream */
  uint32_t delivered; /* the user's open connections it was queued to */
} hd_publish_result_t;

typedef struct {
  uint64_t connections; /* authenticated connections registered */
  uint64_t users;       /* users with at least one connection */
  uint64_t known_users; /* user records held (connections, history or runs) */
  uint64_t instances;   /* managers created in this process: 1 */
  uint64_t events_published;
  uint64_t deliveries;           /* event frames queued to connections */
  uint64_t isolation_violations; /* frames refused at write time: must be 0 */
  uint64_t history_events;       /* events retained for resume */
  uint64_t history_bytes;        /* their memory, as counted against the cap */
  uint64_t history_evictions;    /* events dropped by any history limit */
} hd_manager_stats_t;

/* The manager's operations: return type, name, parameters, argument names.
 *
 * hd_manager_scope: the factory. Returns the one manager bound to ctx.
 * hd_scope_emit: publishes ev to the scope's user only. 0, HD_EINVAL (bad
 *   event or no user in the context), HD_ENOMEM, or HD_EBUSY while draining.
 * hd_manager_publish: the same, naming the user explicitly.
 * hd_manager_presence: the user's open authenticated connections.
 * hd_manager_disconnect: closes all of the user's connections with code
 *   (asynchronously, on their workers); returns how many were asked to close.
 * hd_manager_head_seq: the newest seq of the user's stream (0 if none yet).
 * hd_manager_epoch: the epoch of the user's stream, NUL-terminated, copied
 *   into out (at least 33 bytes); "" for a user with no state.
 * hd_manager_stats: counters, for /ws-health and /metrics.
 * All are thread-safe. */
#define HD_MANAGER_OPS(XX)                                                               \
  XX(hd_scope_t, hd_manager_scope, (hd_manager_t * m, const hd_user_ctx_t *ctx),         \
     (m, ctx))                                                                           \
  XX(int, hd_scope_emit, (hd_scope_t s, const hd_event_t *ev, hd_publish_result_t *res), \
     (s, ev, res))                                                                       \
  XX(int, hd_manager_publish,                                                            \
     (hd_manager_t * m, const char *user_id, const hd_event_t *ev,                       \
      hd_publish_result_t *res),                                                         \
     (m, user_id, ev, res))                                                              \
  XX(size_t, hd_manager_presence, (hd_manager_t * m, const char *user_id), (m, user_id)) \
  XX(size_t, hd_manager_disconnect,                                                      \
     (hd_manager_t * m, const char *user_id, uint16_t code), (m, user_id, code))         \
  XX(uint64_t, hd_manager_head_seq, (hd_manager_t * m, const char *user_id),             \
     (m, user_id))                                                                       \
  XX(void, hd_manager_epoch, (hd_manager_t * m, const char *user_id, char *out),         \
     (m, user_id, out))                                                                  \
  XX(void, hd_manager_stats, (hd_manager_t * m, hd_manager_stats_t * out), (m, out))

#define HD__MANAGER_PROTO(ret, name, params, args) HD_EXPORT ret name params;
HD_MANAGER_OPS(HD__MANAGER_PROTO)
#undef HD__MANAGER_PROTO

/* A table of the operations, for code that should work against the real
 * manager or a test double alike. */
typedef struct hd_manager_api_s {
#define HD__MANAGER_FIELD(ret, name, params, args) ret(*name) params;
  HD_MANAGER_OPS(HD__MANAGER_FIELD)
#undef HD__MANAGER_FIELD
} hd_manager_api_t;

/* The process's one manager, created on first use. Any thread. Never NULL
 * (aborts if the first creation cannot allocate a few hundred bytes). */
HD_EXPORT hd_manager_t *hd_manager_get(void);

/* The real operations as a table. */
HD_EXPORT const hd_manager_api_t *hd_manager_api(void);

/* The wire name of an event type ("agent_started", ...), or NULL. */
HD_EXPORT const char *hd_event_type_name(hd_event_type_t t);

/* Parses a wire name; returns the type or -1. */
HD_EXPORT int hd_event_type_parse(const char *name, size_t len);

#ifdef __cplusplus
}
#endif
#endif
