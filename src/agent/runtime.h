/* The run runtime's entry points for the network and API layers. */
#ifndef HD_AGENT_RUNTIME_H
#define HD_AGENT_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "agent/agent.h"

struct hd_server_s;

/* Installs the process's agent (NULL: --agent none) and the run limits. Call
 * once before the workers start. */
void hd_runtime_init(hd_agent_t *agent, hd_manager_t *m, unsigned run_timeout_s,
                     size_t max_runs);

/* The configured agent's name, or NULL. */
const char *hd_runtime_agent_name(void);

/* Starts a run for a user_message received on worker w; on success writes the
 * new run id into run_id_out and returns 0 (agent_started is published).
 * HD_ENOENT: no agent; HD_ELIMIT: too many runs in flight; HD_EBUSY: draining;
 * HD_ENOMEM. Worker thread only. */
int hd_runtime_user_message(struct hd_worker_s *w, const char *user_id, uint64_t conn_id,
                            const char *thread_id, const char *text,
                            const char *message_id, char *run_id_out, size_t cap);

/* Cancels user_id's run run_id, wherever it lives. HD_ENOENT if the user has
 * no such run in flight; HD_EINVAL if it is not one of Herald's. Any worker. */
int hd_runtime_cancel(struct hd_server_s *srv, const char *user_id, const char *run_id);

/* Once a second per worker: ends runs silent past run_timeout, releases runs
 * their backend completed. */
void hd_runtime_sweep(struct hd_worker_s *w);

/* Draining: ends every run on the worker. */
void hd_runtime_stop_worker(struct hd_worker_s *w);

#endif
