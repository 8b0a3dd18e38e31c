/* heraldd's configuration: defaults, then a JSON file (--config), then the
 * command line. Every option has the same name in the file and on the command
 * line (without the dashes, '-' written as '_' in the file), e.g.
 * {"listen":"0.0.0.0:8080","workers":2,"max_message":65536}. */
#include "core/config.h"

#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "daemon/log.h"
#include "herald/herald.h"

void hd_config_defaults(hd_config_t *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  snprintf(cfg->listen_host, sizeof(cfg->listen_host), "127.0.0.1");
  cfg->listen_port = 8080;
  cfg->workers = 0;
  cfg->max_message = 64 * 1024;
  cfg->max_body = 1024 * 1024;
  cfg->max_queue = 1024 * 1024;
  cfg->heartbeat_s = 25;
  cfg->request_timeout_s = 10;
  cfg->close_timeout_s = 5;
  cfg->auth_timeout_s = 10;
  cfg->drain_timeout_s = 10;
  cfg->backlog = 1024;
  cfg->max_batch = 1000;
  cfg->max_user_conns = 64;
  cfg->max_client_rate = 50;
  cfg->history_events = 1000;
  cfg->history_bytes = 1024 * 1024;
  cfg->history_age_s = 600;
  cfg->history_memory = (size_t)256 << 20;
  cfg->run_timeout_s = 120;
  cfg->agent_timeout_ms = 10000;
  cfg->max_runs = 4;
  cfg->demo_pace_min_ms = 30;
  cfg->demo_pace_max_ms = 80;
  cfg->token_ttl_s = 3600;
  cfg->jwt_leeway_s = 30;
}

void hd_config_dispose(hd_config_t *cfg) {
  char **strs[] = {
      &cfg->echo_path,    &cfg->jwt_secret, &cfg->jwt_alg,   &cfg->jwt_public_key_file,
      &cfg->jwt_audience, &cfg->jwt_issuer, &cfg->api_key,   &cfg->allowed_origins,
      &cfg->agent,        &cfg->agent_url,  &cfg->users_file};
  for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
    free(*strs[i]);
    *strs[i] = NULL;
  }
}

static int set_str(char **dst, const char *v) {
  char *p = strdup(v);
  if (p == NULL) return HD_ENOMEM;
  free(*dst);
  *dst = p;
  return 0;
}

/* Option names: the command line spelling; the file may use '_' for '-'. */
static bool is(const char *name, const char *opt) {
  for (; *name && *opt; name++, opt++)
    if (*name != *opt && !(*name == '_' && *opt == '-')) return false;
  return *name == *opt;
}

static int errf(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return HD_EINVAL;
}

static int parse_listen(hd_config_t *cfg, const char *v, char *err, size_t errlen) {
  const char *colon = strrchr(v, ':');
  const char *host = v;
  size_t hlen;
  char *end;
  long port;

  if (colon == NULL)
    return errf(err, errlen, "--listen: expected HOST:PORT, got '%s'", v);
  hlen = (size_t)(colon - v);
  if (hlen >= 2 && v[0] == '[' && v[hlen - 1] == ']') { /* [::1]:8080 */
    host++;
    hlen -= 2;
  }
  errno = 0;
  port = strtol(colon + 1, &end, 10);
  if (errno || *end || end == colon + 1 || port < 0 || port > 65535)
    return errf(err, errlen, "--listen: bad port in '%s'", v);
  if (hlen == 0 || hlen >= sizeof(cfg->listen_host))
    return errf(err, errlen, "--listen: bad host in '%s'", v);
  memcpy(cfg->listen_host, host, hlen);
  cfg->listen_host[hlen] = '\0';
  cfg->listen_port = (int)port;
  return 0;
}

static int parse_size(const char *name, const char *v, size_t min, size_t max,
                      size_t *out, char *err, size_t errlen) {
  char *end;
  unsigned long long n;

  errno = 0;
  n = strtoull(v, &end, 10);
  if (errno || *end || end == v || v[0] == '-' || n < min || n > max)
    return errf(err, errlen, "%s: expected an integer in [%zu, %zu], got '%s'", name, min,
                max, v);
  *out = (size_t)n;
  return 0;
}

/* The numeric options: name, field, and the accepted range. */
typedef struct {
  const char *name;
  size_t off;   /* offsetof the field in hd_config_t */
  size_t width; /* sizeof the field: 4 (int, unsigned) or 8 (size_t) */
  size_t min, max;
} num_opt_t;

#define NUM(name, field, min, max)                                                       \
  { name, offsetof(hd_config_t, field), sizeof(((hd_config_t *)0)->field), min, max }

static const num_opt_t nums[] = {
    NUM("workers", workers, 1, 256),
    NUM("max-message", max_message, 125, (size_t)1 << 30),
    NUM("max-body", max_body, 1024, (size_t)1 << 30),
    NUM("max-queue", max_queue, 4096, (size_t)1 << 31),
    NUM("socket-sndbuf", sndbuf, 0, 64 << 20),
    NUM("heartbeat", heartbeat_s, 1, 3600),
    NUM("request-timeout", request_timeout_s, 1, 3600),
    NUM("auth-timeout", auth_timeout_s, 1, 3600),
    NUM("drain-timeout", drain_timeout_s, 1, 3600),
    NUM("jwt-leeway", jwt_leeway_s, 0, 60),
    NUM("max-user-connections", max_user_conns, 1, 100000),
    NUM("max-client-rate", max_client_rate, 1, 60000),
    NUM("max-batch", max_batch, 1, 100000),
    NUM("history-events", history_events, 1, 1000000),
    NUM("history-bytes", history_bytes, 1024, (size_t)1 << 30),
    NUM("history-age", history_age_s, 1, 7 * 86400),
    NUM("history-memory", history_memory, 1 << 16, (size_t)1 << 40),
    NUM("agent-timeout-ms", agent_timeout_ms, 100, 600000),
    NUM("run-timeout", run_timeout_s, 1, 86400),
    NUM("max-runs", max_runs, 1, 1000),
    NUM("token-ttl", token_ttl_s, 60, 30 * 86400),
};

static int apply_num(hd_config_t *cfg, const num_opt_t *o, const char *v, char *err,
                     size_t errlen) {
  char flag[64];
  size_t n = 0;
  int rc;

  snprintf(flag, sizeof(flag), "--%s", o->name);
  if ((rc = parse_size(flag, v, o->min, o->max, &n, err, errlen)) != 0) return rc;
  if (o->width == sizeof(size_t)) {
    memcpy((char *)cfg + o->off, &n, sizeof(n));
  } else {
    unsigned u = (unsigned)n; /* int fields hold the same bits for these ranges */
    memcpy((char *)cfg + o->off, &u, sizeof(u));
  }
  return 0;
}

/* One option, by name (the command line's spelling or the file's). */
static int apply(hd_config_t *cfg, const char *name, const char *v, char *err,
                 size_t errlen) {
  for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
    if (is(name, nums[i].name)) return apply_num(cfg, &nums[i], v, err, errlen);
  if (is(name, "listen")) return parse_listen(cfg, v, err, errlen);
  if (is(name, "echo-path")) {
    if (v[0] != '/') return errf(err, errlen, "--echo-path must start with '/'");
    return set_str(&cfg->echo_path, v);
  }
  if (is(name, "jwt-alg")) {
    if (strcmp(v, "HS256") && strcmp(v, "RS256") && strcmp(v, "ES256"))
      return errf(err, errlen, "--jwt-alg: one of HS256, RS256, ES256");
    return set_str(&cfg->jwt_alg, v);
  }
  if (is(name, "jwt-public-key")) return set_str(&cfg->jwt_public_key_file, v);
  if (is(name, "jwt-audience")) return set_str(&cfg->jwt_audience, v);
  if (is(name, "jwt-issuer")) return set_str(&cfg->jwt_issuer, v);
  if (is(name, "allowed-origins")) return set_str(&cfg->allowed_origins, v);
  if (is(name, "users")) return set_str(&cfg->users_file, v);
  if (is(name, "agent")) {
    if (strcmp(v, "demo") && strcmp(v, "webhook") && strcmp(v, "none"))
      return errf(err, errlen, "--agent: one of demo, webhook, none");
    return set_str(&cfg->agent, v);
  }
  if (is(name, "agent-url")) {
    if (strncmp(v, "http://", 7) && strncmp(v, "https://", 8))
      return errf(err, errlen, "--agent-url: an http:// or https:// URL");
    return set_str(&cfg->agent_url, v);
  }
  if (is(name, "demo-pace")) { /* MS or MIN-MAX */
    unsigned lo, hi;
    int k = 0;
    if (sscanf(v, "%u-%u%n", &lo, &hi, &k) == 2 && v[k] == '\0' && lo <= hi &&
        hi <= 60000) {
      cfg->demo_pace_min_ms = lo;
      cfg->demo_pace_max_ms = hi;
      return 0;
    }
    if (sscanf(v, "%u%n", &lo, &k) == 1 && v[k] == '\0' && lo <= 60000) {
      cfg->demo_pace_min_ms = cfg->demo_pace_max_ms = lo;
      return 0;
    }
    return errf(err, errlen, "--demo-pace: MS or MIN-MAX (milliseconds, <= 60000)");
  }
  if (is(name, "log-level")) {
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
      if (strcmp(v, levels[i]) == 0) {
        hd__log_level = i;
        return 0;
      }
    return errf(err, errlen, "--log-level: one of error, warn, info, debug");
  }
  return errf(err, errlen, "unknown option '%s' (try --help)", name);
}

int hd_config_load_file(hd_config_t *cfg, const char *path, char *err, size_t errlen) {
  json_error_t jerr;
  json_t *root = json_load_file(path, 0, &jerr), *v;
  const char *key;
  int rc = 0;

  if (root == NULL) return errf(err, errlen, "%s:%d: %s", path, jerr.line, jerr.text);
  if (!json_is_object(root)) {
    json_decref(root);
    return errf(err, errlen, "%s: expected a JSON object", path);
  }
  json_object_foreach(root, key, v) {
    char buf[64];
    const char *s = buf;
    if (json_is_string(v))
      s = json_string_value(v);
    else if (json_is_integer(v))
      snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
    else {
      rc = errf(err, errlen, "%s: '%s' must be a string or an integer", path, key);
      break;
    }
    if ((rc = apply(cfg, key, s, err, errlen)) != 0) break;
  }
  json_decref(root);
  return rc;
}

static const char usage[] =
    "usage: heraldd [options]\n"
    "  --listen HOST:PORT      address to listen on (default 127.0.0.1:8080; port 0 = "
    "any)\n"
    "  --config FILE           JSON config file (same option names, '_' for '-')\n"
    "  --workers N             event-loop threads (default: one per CPU)\n"
    "  --echo-path PATH        unauthenticated echo endpoint for RFC 6455 testing (off)\n"
    "  --max-message BYTES     largest client message (default 65536)\n"
    "  --max-body BYTES        largest HTTP request body (default 1048576)\n"
    "  --max-queue BYTES       send queue per connection before 4008 (default 1048576)\n"
    "  --heartbeat SECONDS     ping interval; two silent intervals close (default 25)\n"
    "  --request-timeout S     a request or handshake must arrive within (default 10)\n"
    "  --drain-timeout S       SIGTERM: wait this long for clients (default 10)\n"
    "  --auth-timeout S        first-message auth must arrive within (default 10)\n"
    "  --jwt-alg ALG           HS256 (default, key HERALD_JWT_SECRET), RS256, ES256\n"
    "  --jwt-public-key FILE   PEM public key for RS256/ES256\n"
    "  --jwt-audience AUD      require this aud claim\n"
    "  --jwt-issuer ISS        require this iss claim\n"
    "  --jwt-leeway S          clock skew allowed for exp/nbf, <= 60 (default 30)\n"
    "  --allowed-origins LIST  comma-separated origins (default: the request's host)\n"
    "  --max-batch N           events per publish request (default 1000)\n"
    "  --socket-sndbuf BYTES   kernel send buffer per connection (default: the "
    "kernel's)\n"
    "  --max-user-connections N  connections per user, then 4009 (default 64)\n"
    "  --max-client-rate N     client messages per second per connection, then 4029 "
    "(default 50)\n"
    "  --agent demo|webhook|none  who answers user messages (default demo)\n"
    "  --agent-url URL         webhook agent: where user messages are POSTed\n"
    "  --agent-timeout-ms MS   webhook agent: answer deadline per request (default "
    "10000)\n"
    "  --run-timeout S         fail a run whose agent is silent this long (default 120)\n"
    "  --max-runs N            runs in flight per user (default 4)\n"
    "  --demo-pace MS|MIN-MAX  demo agent delay between steps (default 30-80)\n"
    "  --users FILE            users file for POST /auth/login (herald user add)\n"
    "  --token-ttl S           lifetime of tokens issued by /auth/login (default 3600)\n"
    "  --history-events N      events kept per user for resume (default 1000)\n"
    "  --history-bytes BYTES   history per user (default 1048576)\n"
    "  --history-age SECONDS   history age limit (default 600)\n"
    "  --history-memory BYTES  history of all users together (default 268435456)\n"
    "  --log-level LEVEL       error, warn, info (default) or debug\n"
    "  --help, --version\n"
    "environment: HERALD_JWT_SECRET (HMAC key, >= 32 bytes), HERALD_API_KEY (backend "
    "API),\n"
    "  HERALD_WEBHOOK_SECRET (webhook signatures; default HERALD_API_KEY)\n";

int hd_config_from_args(hd_config_t *cfg, int argc, char **argv, char *err,
                        size_t errlen) {
  int rc;

  /* The config file first, so the command line overrides it. */
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--config") == 0) {
      if (i + 1 >= argc) return errf(err, errlen, "--config needs a FILE");
      if ((rc = hd_config_load_file(cfg, argv[i + 1], err, errlen)) != 0) return rc;
    }
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage, stdout);
      return 1;
    }
    if (strcmp(a, "--version") == 0) {
      printf("heraldd %s\n", HD_VERSION_STRING);
      return 1;
    }
    if (strncmp(a, "--", 2) != 0) return errf(err, errlen, "unexpected argument '%s'", a);
    if (i + 1 >= argc) return errf(err, errlen, "%s needs a value", a);
    if (strcmp(a, "--config") == 0) {
      i++;
      continue;
    }
    if ((rc = apply(cfg, a + 2, argv[++i], err, errlen)) != 0) return rc;
  }
  const char *secret = getenv("HERALD_JWT_SECRET"), *key = getenv("HERALD_API_KEY");
  if (secret && *secret) {
    if ((rc = set_str(&cfg->jwt_secret, secret)) != 0) return rc;
    cfg->jwt_secret_len = strlen(secret);
  }
  if (key && *key && (rc = set_str(&cfg->api_key, key)) != 0) return rc;
  return 0;
}
