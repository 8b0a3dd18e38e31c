/* Agent runtimes and the runs they work on.
 *
 * A run begins when a user sends user_message. The runtime (runtime.c) owns
 * the run's life and its two guarantees: exactly one agent_started first (it
 * publishes it before the agent sees the run) and exactly one agent_completed
 * last (published by hd_run_finish, or by the runtime itself when the run is
 * cancelled, the agent fails, or it stays silent longer than run_timeout).
 * Between the two, the agent emits agent_thinking, tool_executing,
 * tool_completed and agent_message events through hd_run_emit, which sends
 * through a scope bound to the run's user: an agent cannot reach anyone else.
 *
 * A run lives on the worker whose connection started it; every callback below
 * runs on that worker's thread. Agents never block the loop: they use timers
 * (hd_timer_*) or asynchronous I/O.
 */
#ifndef HD_AGENT_AGENT_H
#define HD_AGENT_AGENT_H

#include <stdbool.h>
#include <stdint.h>

#include "herald/manager.h"

typedef struct hd_run_s hd_run_t;
typedef struct hd_agent_s hd_agent_t;
struct hd_worker_s;

typedef struct {
  const char *name; /* "demo", "webhook": the agent_started "agent" field */
  /* The run has started (agent_started is out). Begin working; return 0, or a
   * negative code to fail the run at once. */
  int (*start)(hd_agent_t *a, hd_run_t *run);
  /* The run is over (finished, cancelled or timed out): release everything the
   * agent holds for it. Called exactly once per started run, after which the
   * run is freed. cancelled tells whether the user cancelled it. */
  void (*stop)(hd_agent_t *a, hd_run_t *run, bool cancelled);
  void (*free)(hd_agent_t *a);
} hd_agent_ops_t;

struct hd_agent_s {
  const hd_agent_ops_t *ops;
};

/* A run as agents see it. The strings are owned by the run. */
struct hd_run_s {
  hd_user_ctx_t ctx;      /* user_id, thread_id, run_id */
  const char *input;      /* the user's text */
  const char *message_id; /* the client's id for the message, or "" */
  struct hd_worker_s *worker;
  void *agent_data; /* the agent's per-run state */
};

/* Emits one of the middle events (agent_thinking, tool_executing,
 * tool_completed, agent_message) with data, a JSON object as text. Returns 0,
 * HD_EINVAL for other types or bad JSON, HD_ECLOSED once the run is over. */
int hd_run_emit(hd_run_t *run, hd_event_type_t type, const char *data_json);

/* Ends the run: publishes agent_completed with status "succeeded" or
 * "failed", the final text and, when failed, error; then calls the agent's
 * stop() and frees the run. The agent must not touch run afterwards. */
void hd_run_finish(hd_run_t *run, bool ok, const char *text, const char *error);

/* The agents. */
typedef struct {
  unsigned pace_min_ms; /* delay between steps: uniform in [min, max] */
  unsigned pace_max_ms;
} hd_demo_config_t;

hd_agent_t *hd_agent_demo_new(const hd_demo_config_t *cfg);

typedef struct {
  const char *url;     /* POST target (copied) */
  const char *secret;  /* HMAC-SHA256 key for X-Herald-Signature (copied) */
  unsigned timeout_ms; /* per request; a timeout fails the run */
  int nworkers;        /* requests are driven by each run's worker loop */
} hd_webhook_config_t;

/* The webhook agent (src/agent/webhook.c, docs/agents.md). NULL on failure. */
hd_agent_t *hd_agent_webhook_new(const hd_webhook_config_t *cfg);

/* The demo agent's calculator: evaluates + - * / (also x, ×, ÷), parentheses,
 * decimals and unary minus with the usual precedence. Returns 0 and *out, or
 * HD_EINVAL (syntax) / HD_EPROTO (division by zero, overflow). Exposed for
 * unit tests. */
int hd_calc_eval(const char *expr, double *out);

/* Finds the arithmetic expression in a message ("what is 12*7?" -> "12*7").
 * Writes it NUL-terminated into out (cap bytes) and returns true if found. */
bool hd_calc_extract(const char *text, char *out, size_t cap);

#endif
