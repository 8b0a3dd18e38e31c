/* Runtime configuration: one plain struct, filled with defaults, then from the
 * config file, then from the command line and environment (later wins). Every
 * limit here has a documented default (docs/operations.md). */
#ifndef HD_CORE_CONFIG_H
#define HD_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

typedef struct hd_config_s {
  char listen_host[64];       /* "127.0.0.1" */
  int listen_port;            /* 8080; 0 picks a free port */
  int workers;                /* 0 = one per CPU */
  char *echo_path;            /* NULL = no echo endpoint */
  size_t max_message;         /* 65536: a client WebSocket message */
  size_t max_body;            /* 1 MiB: an HTTP request body */
  size_t max_queue;           /* 1 MiB: bytes queued to one connection */
  unsigned heartbeat_s;       /* 25: ping interval; 2 missed = closed */
  unsigned request_timeout_s; /* 10: a request (or handshake) must complete */
  unsigned close_timeout_s;   /* 5: wait for the peer's close reply */
  unsigned auth_timeout_s;    /* 10: the first-message auth must arrive */
  unsigned drain_timeout_s;   /* 10: SIGTERM drain */
  int backlog;                /* 1024 */
  int sndbuf;                 /* 0: the kernel's default SO_SNDBUF per socket */
  unsigned max_user_conns;    /* 64 connections per user, then 4009 */
  unsigned max_client_rate; /* 50 client messages per second per connection, then 4029 */
  size_t max_batch;         /* 1000 events per publish request */
  size_t history_events;    /* 1000 retained events per user */
  size_t history_bytes;     /* 1 MiB retained per user */
  unsigned history_age_s;   /* 600: events older than this are dropped */
  size_t history_memory;    /* 256 MiB for all users' history */

  /* Agents (docs/agents.md). */
  char *agent;               /* "demo" (default), "webhook" or "none" */
  char *agent_url;           /* webhook: where user messages are POSTed */
  unsigned agent_timeout_ms; /* 10000: a webhook request must be answered within */
  unsigned run_timeout_s;    /* 120: a silent agent's run is failed */
  size_t max_runs;           /* 4 runs in flight per user */
  unsigned demo_pace_min_ms; /* 30 */
  unsigned demo_pace_max_ms; /* 80 */

  /* The embedded identity provider (POST /auth/login). */
  char *users_file;     /* NULL: login disabled */
  unsigned token_ttl_s; /* 3600 */

  /* Identity (PROTOCOL.md section 1). The HMAC secret and the API key come from
   * the environment: HERALD_JWT_SECRET and HERALD_API_KEY. */
  char *jwt_secret; /* raw bytes of HERALD_JWT_SECRET, >= 32 */
  size_t jwt_secret_len;
  char *jwt_alg;             /* "HS256" (default), "RS256" or "ES256" */
  char *jwt_public_key_file; /* PEM, for RS256/ES256 */
  char *jwt_audience;        /* checked when set */
  char *jwt_issuer;          /* checked when set */
  unsigned jwt_leeway_s;     /* 30, at most 60 */
  char *api_key;             /* HERALD_API_KEY; NULL disables the backend API */
  char *allowed_origins;     /* comma-separated origins; NULL = same host only */
} hd_config_t;

/* Fills cfg with the defaults above. */
void hd_config_defaults(hd_config_t *cfg);

/* Applies a JSON config file. Returns 0, or a negative HD_E* code with a message
 * in err (size errlen). */
int hd_config_load_file(hd_config_t *cfg, const char *path, char *err, size_t errlen);

/* Parses heraldd's command line and environment into cfg. Returns 0 to run, 1
 * when --help/--version was handled, or a negative HD_E* code with err set. */
int hd_config_from_args(hd_config_t *cfg, int argc, char **argv, char *err,
                        size_t errlen);

/* Frees strings owned by cfg. */
void hd_config_dispose(hd_config_t *cfg);

#endif
