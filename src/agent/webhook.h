/* The webhook agent's pure parts, exposed for unit tests: the request bodies
 * and their signature. The agent itself is hd_agent_webhook_new (agent.h). */
#ifndef HD_AGENT_WEBHOOK_H
#define HD_AGENT_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/agent.h"

/* "sha256=" and 64 lowercase hex digits. */
#define HD_WEBHOOK_SIG_LEN 71

/* Writes "sha256=<hex HMAC-SHA256 of body keyed with key>" and a NUL into out.
 * Returns 0, or HD_EIO if the digest could not be computed. Any thread. */
int hd_webhook_sign(const uint8_t *key, size_t key_len, const uint8_t *body, size_t len,
                    char out[HD_WEBHOOK_SIG_LEN + 1]);

/* The JSON body POSTed for run: {"type":"user_message","user_id","thread_id",
 * "run_id","message_id","text"}, or with cancel {"type":"cancel","user_id",
 * "thread_id","run_id"}. Compact, keys in that order. Returns a malloc'd
 * string the caller frees, or NULL (out of memory, or text not UTF-8). */
char *hd_webhook_body(const hd_run_t *run, bool cancel);

#endif
