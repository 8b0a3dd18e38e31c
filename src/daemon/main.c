/* heraldd: parse the configuration, start the workers, serve until SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "agent/runtime.h"
#include "auth/jwt.h"
#include "auth/users.h"
#include "core/config.h"
#include "daemon/log.h"
#include "net/net.h"

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long n;

  if (f == NULL) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && n < (1 << 20) &&
      fseek(f, 0, SEEK_SET) == 0 && (buf = calloc(1, (size_t)n + 1)) != NULL &&
      fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  return buf;
}

/* Builds the token verifier the configuration asks for; refuses weak setups. */
static int make_verifier(const hd_config_t *cfg, hd_jwt_verifier_t **out) {
  hd_jwt_config_t jc = {0};
  char err[256] = "", *pem = NULL;
  int rc;

  jc.alg = HD_JWT_HS256;
  if (cfg->jwt_alg && strcmp(cfg->jwt_alg, "RS256") == 0) jc.alg = HD_JWT_RS256;
  if (cfg->jwt_alg && strcmp(cfg->jwt_alg, "ES256") == 0) jc.alg = HD_JWT_ES256;
  if (jc.alg == HD_JWT_HS256) {
    if (cfg->jwt_secret == NULL) {
      hd_log(HD_LOG_ERROR, "HERALD_JWT_SECRET is not set (an HMAC key of >= %d bytes)",
             HD_JWT_MIN_SECRET);
      return -1;
    }
    jc.secret = (const uint8_t *)cfg->jwt_secret;
    jc.secret_len = cfg->jwt_secret_len;
  } else {
    if (cfg->jwt_public_key_file == NULL ||
        (pem = read_file(cfg->jwt_public_key_file)) == NULL) {
      hd_log(HD_LOG_ERROR, "--jwt-public-key: cannot read the PEM public key");
      return -1;
    }
    jc.public_key_pem = pem;
  }
  jc.audience = cfg->jwt_audience;
  jc.issuer = cfg->jwt_issuer;
  jc.leeway_s = cfg->jwt_leeway_s;
  rc = hd_jwt_verifier_new(&jc, out, err, sizeof(err));
  free(pem);
  if (rc != 0) hd_log(HD_LOG_ERROR, "JWT configuration: %s", err);
  return rc;
}

static int make_agent(const hd_config_t *cfg, int nworkers, hd_agent_t **out) {
  const char *kind = cfg->agent ? cfg->agent : "demo";

  *out = NULL;
  if (strcmp(kind, "none") == 0) return 0;
  if (strcmp(kind, "demo") == 0) {
    hd_demo_config_t dc = {cfg->demo_pace_min_ms, cfg->demo_pace_max_ms};
    *out = hd_agent_demo_new(&dc);
  } else if (strcmp(kind, "webhook") == 0) {
    const char *secret = getenv("HERALD_WEBHOOK_SECRET");
    hd_webhook_config_t wc = {cfg->agent_url, secret && *secret ? secret : cfg->api_key,
                              cfg->agent_timeout_ms, nworkers};
    if (cfg->agent_url == NULL || wc.secret == NULL) {
      hd_log(HD_LOG_ERROR, "--agent webhook needs --agent-url and HERALD_WEBHOOK_SECRET "
                           "(or HERALD_API_KEY) to sign requests");
      return -1;
    }
    *out = hd_agent_webhook_new(&wc);
  } else {
    hd_log(HD_LOG_ERROR, "--agent %s is not available in this build", kind);
    return -1;
  }
  if (*out == NULL) {
    hd_log(HD_LOG_ERROR, "cannot create the %s agent", kind);
    return -1;
  }
  hd_log(HD_LOG_INFO, "agent: %s", kind);
  return 0;
}

int main(int argc, char **argv) {
  hd_config_t cfg;
  hd_server_t srv;
  hd_agent_t *agent = NULL;
  hd_users_t *users = NULL;
  char err[256] = "";
  int rc;

  signal(SIGPIPE, SIG_IGN);
  hd_config_defaults(&cfg);
  rc = hd_config_from_args(&cfg, argc, argv, err, sizeof(err));
  if (rc == 1) return 0;
  if (rc != 0) {
    fprintf(stderr, "heraldd: %s\n", err);
    return 2;
  }
  if ((rc = hd_server_init(&srv, &cfg, uv_default_loop())) != 0) {
    hd_log(HD_LOG_ERROR, "cannot start: %s", uv_strerror(rc));
    return 1;
  }
  if (make_verifier(&cfg, &srv.jwt) != 0) return 1;
  if (make_agent(&cfg, srv.nworkers, &agent) != 0) return 1;
  if (cfg.users_file) {
    if ((users = hd_users_open(cfg.users_file)) == NULL) {
      hd_log(HD_LOG_ERROR, "cannot open the users file %s", cfg.users_file);
      return 1;
    }
    hd_api_login_init(users);
    hd_log(HD_LOG_INFO, "login enabled with users from %s", cfg.users_file);
  }
  hd_runtime_init(agent, srv.manager, cfg.run_timeout_s, cfg.max_runs);
  if (cfg.api_key == NULL)
    hd_log(HD_LOG_WARN, "HERALD_API_KEY is not set: the backend API answers 401");
  if (cfg.echo_path)
    hd_log(HD_LOG_INFO, "echo endpoint at %s (testing only)", cfg.echo_path);
  rc = hd_server_run(&srv);
  hd_server_dispose(&srv);
  hd_jwt_verifier_free(srv.jwt);
  if (agent) agent->ops->free(agent);
  hd_users_free(users);
  uv_loop_close(uv_default_loop());
  hd_config_dispose(&cfg);
  return rc == 0 ? 0 : 1;
}
