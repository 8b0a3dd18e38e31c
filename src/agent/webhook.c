/* The webhook agent: the run is worked on by someone else's backend.
 *
 * start() POSTs the user's message to the configured URL, signed with
 * X-Herald-Signature: sha256=<HMAC-SHA256 of the exact body>, through the
 * worker's HTTP client (src/net/http_client.c), and returns at once. A 2xx
 * answer means the backend took the run: from then on it publishes the run's
 * events itself through POST /api/v1/publish with the run_id it was given,
 * ending with agent_completed, and the runtime's sweep notices the run is no
 * longer in flight and calls stop(). Any other answer, no answer within
 * timeout_ms, or no connection at all fails the run here.
 *
 * A cancelled run's stop() POSTs {"type":"cancel",...}, signed the same way,
 * and does not wait for the answer. stop() always aborts the run's request if
 * it is still in flight, so a late answer can never reach a freed run.
 *
 * Per run the agent holds one small state (run->agent_data): the request in
 * flight, if any. State lives and dies on the run's worker thread.
 */
#include "agent/webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "daemon/log.h"
#include "herald/herald.h"
#include "net/http_client.h"
#include "net/net.h"

typedef struct {
  hd_agent_t base;
  char *url;
  uint8_t *secret;
  size_t secret_len;
  unsigned timeout_ms;
} webhook_t;

typedef struct {
  webhook_t *wh;
  hd_run_t *run;
  hd_http_post_t *post; /* the user_message request until it completes */
} state_t;

/* ---- the pure parts ------------------------------------------------------------- */

int hd_webhook_sign(const uint8_t *key, size_t key_len, const uint8_t *body, size_t len,
                    char out[HD_WEBHOOK_SIG_LEN + 1]) {
  static const char hex[] = "0123456789abcdef";
  static const uint8_t empty[1];
  uint8_t md[EVP_MAX_MD_SIZE];
  unsigned md_len = 0;

  /* HMAC() reads a NULL key as "reuse the previous one": pass a real pointer. */
  if (HMAC(EVP_sha256(), key_len ? key : empty, (int)key_len, len ? body : empty, len, md,
           &md_len) == NULL ||
      md_len != 32)
    return HD_EIO;
  memcpy(out, "sha256=", 7);
  for (unsigned i = 0; i < md_len; i++) {
    out[7 + 2 * i] = hex[md[i] >> 4];
    out[7 + 2 * i + 1] = hex[md[i] & 15];
  }
  out[HD_WEBHOOK_SIG_LEN] = '\0';
  return 0;
}

char *hd_webhook_body(const hd_run_t *run, bool cancel) {
  json_t *j;
  char *s;

  if (cancel)
    j = json_pack("{s:s, s:s, s:s, s:s}", "type", "cancel", "user_id", run->ctx.user_id,
                  "thread_id", run->ctx.thread_id, "run_id", run->ctx.run_id);
  else
    j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "type", "user_message", "user_id",
                  run->ctx.user_id, "thread_id", run->ctx.thread_id, "run_id",
                  run->ctx.run_id, "message_id", run->message_id ? run->message_id : "",
                  "text", run->input);
  if (j == NULL) return NULL;
  s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  return s;
}

/* ---- requests ------------------------------------------------------------------- */

static int post_signed(webhook_t *wh, hd_worker_t *w, const char *body,
                       hd_http_done_cb cb, void *arg, hd_http_post_t **out) {
  char sig[HD_WEBHOOK_SIG_LEN + 1];
  char sig_header[32 + HD_WEBHOOK_SIG_LEN];
  const char *headers[] = {"Content-Type: application/json", sig_header, NULL};
  size_t len = strlen(body);
  int rc;

  if ((rc = hd_webhook_sign(wh->secret, wh->secret_len, (const uint8_t *)body, len,
                            sig)) < 0)
    return rc;
  snprintf(sig_header, sizeof(sig_header), "X-Herald-Signature: %s", sig);
  return hd_http_post(w, wh->url, headers, body, len, wh->timeout_ms, cb, arg, out);
}

/* The backend's answer to a user_message. The error text reaches the user in
 * agent_completed, so it names what happened without the backend's address;
 * the log has the detail. */
static void on_answer(void *arg, const hd_http_result_t *res) {
  state_t *st = arg;
  hd_run_t *run = st->run;
  char why[64];

  st->post = NULL; /* over: stop() must not abort it */
  if (res->error == 0 && res->status >= 200 && res->status < 300) return;
  if (res->error == 0) {
    snprintf(why, sizeof(why), "webhook answered %d", res->status);
  } else if (res->timed_out) {
    snprintf(why, sizeof(why), "webhook did not answer within %u ms", st->wh->timeout_ms);
  } else {
    snprintf(why, sizeof(why), "webhook unreachable");
  }
  hd_log(HD_LOG_WARN, "run %s of %s: %s%s%s", run->ctx.run_id, run->ctx.user_id, why,
         res->detail[0] ? ": " : "", res->detail);
  hd_run_finish(run, false, "", why); /* calls stop(): st is freed */
}

/* ---- the agent ------------------------------------------------------------------ */

static int webhook_start(hd_agent_t *a, hd_run_t *run) {
  webhook_t *wh = (webhook_t *)a;
  state_t *st;
  char *body = NULL;
  int rc = HD_ENOMEM;

  if ((st = calloc(1, sizeof(*st))) == NULL) goto fail;
  st->wh = wh;
  st->run = run;
  if ((body = hd_webhook_body(run, false)) == NULL) goto fail;
  if ((rc = post_signed(wh, run->worker, body, on_answer, st, &st->post)) < 0) goto fail;
  free(body);
  run->agent_data = st;
  return 0;

fail:
  hd_log(HD_LOG_WARN, "run %s of %s: webhook request not sent: %s", run->ctx.run_id,
         run->ctx.user_id, hd_strerror(rc));
  free(body);
  free(st);
  return rc;
}

static void webhook_stop(hd_agent_t *a, hd_run_t *run, bool cancelled) {
  webhook_t *wh = (webhook_t *)a;
  state_t *st = run->agent_data;
  char *body;
  int rc = HD_ENOMEM;

  if (st) {
    hd_http_post_abort(st->post); /* NULL once answered */
    free(st);
    run->agent_data = NULL;
  }
  if (!cancelled) return;
  /* Fire and forget: the run is over for Herald whatever the backend says. */
  if ((body = hd_webhook_body(run, true)) == NULL ||
      (rc = post_signed(wh, run->worker, body, NULL, NULL, NULL)) < 0)
    hd_log(HD_LOG_WARN, "run %s of %s: cancel not sent to the webhook: %s",
           run->ctx.run_id, run->ctx.user_id, hd_strerror(rc));
  free(body);
}

static void webhook_free(hd_agent_t *a) {
  webhook_t *wh = (webhook_t *)a;

  /* The workers are joined by now (main.c frees the agent last). */
  hd_http_client_cleanup();
  free(wh->url);
  if (wh->secret) OPENSSL_cleanse(wh->secret, wh->secret_len);
  free(wh->secret);
  free(wh);
}

static const hd_agent_ops_t webhook_ops = {"webhook", webhook_start, webhook_stop,
                                           webhook_free};

hd_agent_t *hd_agent_webhook_new(const hd_webhook_config_t *cfg) {
  webhook_t *wh;

  if (cfg == NULL || cfg->url == NULL || cfg->secret == NULL || cfg->nworkers <= 0)
    return NULL;
  if ((wh = calloc(1, sizeof(*wh))) == NULL) return NULL;
  wh->base.ops = &webhook_ops;
  wh->timeout_ms = cfg->timeout_ms;
  wh->secret_len = strlen(cfg->secret);
  if ((wh->url = strdup(cfg->url)) == NULL ||
      (wh->secret = malloc(wh->secret_len + 1)) == NULL)
    goto fail;
  memcpy(wh->secret, cfg->secret, wh->secret_len + 1);
  /* Runs the curl global setup here, on the main thread, before any worker. */
  if (hd_http_client_init(cfg->nworkers) < 0) goto fail;
  return &wh->base;

fail:
  free(wh->url);
  free(wh->secret);
  free(wh);
  return NULL;
}
