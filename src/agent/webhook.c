/* Placeholder until the webhook agent lands: the agent is unavailable. */
#include <stddef.h>

#include "agent/agent.h"

hd_agent_t *hd_agent_webhook_new(const hd_webhook_config_t *cfg) {
  (void)cfg;
  return NULL;
}
