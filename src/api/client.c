/* The client side of the protocol: GET /ws and the messages a browser sends.
 *
 * Upgrade (PROTOCOL.md section 2). In order: the RFC 6455 handshake must be
 * valid (400/426), the Origin allowed (403), and a token presented in the
 * handshake valid (401). The token comes from `Authorization: Bearer`, else the
 * `access_token` query parameter (never logged); without either, the first
 * text message must be {"type":"auth","token":...} within auth_timeout_s,
 * else the connection is closed with 4001.
 *
 * Messages (section 4). Every message is a JSON object with a "type". Malformed
 * JSON or an unknown type gets an `error` reply and the connection stays open;
 * nothing a client sends can change who it is: user ids in messages are
 * ignored, the user is the token's subject.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "agent/runtime.h"
#include "auth/jwt.h"
#include "core/event.h"
#include "daemon/log.h"
#include "net/net.h"
#include "proto/handshake.h"

/* ---- origin ------------------------------------------------------------------- */

static bool origin_in_list(const char *list, const char *o, size_t n) {
  const char *p = list;

  while (*p) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    while (len && (*p == ' ')) p++, len--;
    while (len && p[len - 1] == ' ') len--;
    if (len == n && strncasecmp(p, o, n) == 0) return true;
    if (!e) break;
    p = e + 1;
  }
  return false;
}

/* No Origin (a non-browser client) is allowed. Otherwise the origin must be in
 * the configured list, or by default be exactly the request's own host:
 * "https://app.example.com.evil.com" is not "app.example.com", nor is "null". */
static bool origin_allowed(const hd_config_t *cfg, const hd_http_req_t *req) {
  const hd_http_header_t *o = hd_http_header_find(req, "origin", NULL), *host;
  const char *sep;

  if (o == NULL) return true;
  if (cfg->allowed_origins)
    return origin_in_list(cfg->allowed_origins, o->value, o->value_len);
  host = hd_http_header_find(req, "host", NULL);
  if (host == NULL) return false;
  sep = memmem(o->value, o->value_len, "://", 3);
  if (sep == NULL) return false;
  sep += 3;
  size_t n = o->value_len - (size_t)(sep - o->value);
  return n == host->value_len && n > 0 && strncasecmp(sep, host->value, n) == 0;
}

/* ---- replies -------------------------------------------------------------------- */

static void send_text(hd_conn_t *c, const char *s, size_t n) {
  hd_frame_t *f = hd_frame_new(HD_WS_OP_TEXT, s, n);
  if (f == NULL) {
    hd_conn_ws_close(c, HD_WS_CLOSE_INTERNAL, "out of memory");
    return;
  }
  hd_conn_send(c, f);
  hd_frame_unref(f);
}

static void send_json(hd_conn_t *c, json_t *j) {
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (s == NULL) {
    hd_conn_ws_close(c, HD_WS_CLOSE_INTERNAL, "out of memory");
    return;
  }
  send_text(c, s, strlen(s));
  free(s);
}

static void reply_error(hd_conn_t *c, const char *code, const char *message) {
  atomic_fetch_add(&c->w->stats.client_errors, 1);
  send_json(
      c, json_pack("{s:s, s:s, s:s}", "type", "error", "code", code, "message", message));
}

/* ---- authentication ------------------------------------------------------------- */

static hd_jwt_reason_t verify(hd_conn_t *c, const char *tok, size_t n,
                              hd_jwt_claims_t *cl) {
  hd_server_t *srv = c->w->srv;
  hd_jwt_reason_t r;

  if (srv->jwt == NULL) return HD_JWT_BAD_SIGNATURE;
  r = hd_jwt_verify(srv->jwt, tok, n, (int64_t)time(NULL), cl);
  if (r != HD_JWT_OK) {
    atomic_fetch_add(&c->w->stats.auth_failures, 1);
    hd_log(HD_LOG_INFO, "conn %llu: token refused: %s", (unsigned long long)c->id,
           hd_jwt_reason_name(r));
  }
  return r;
}

static void authenticate(hd_conn_t *c, const hd_jwt_claims_t *cl, hd_attach_t *a) {
  int rc;

  a->max_subs = c->w->srv->cfg->max_user_conns;
  if ((rc = hd_conn_authenticate(c, cl->sub, cl->exp, a)) == HD_ELIMIT)
    hd_conn_ws_close(c, HD_WS_CLOSE_TOO_MANY, "too many connections for this user");
  else if (rc < 0)
    hd_conn_ws_close(c, HD_WS_CLOSE_INTERNAL, "cannot register connection");
}

/* Resume parameters from the handshake's query string. Returns false if
 * since_seq is present but not a non-negative integer. */
static bool query_resume(const hd_http_req_t *req, hd_attach_t *a, char *epoch,
                         size_t cap) {
  char num[32], *end;
  int n = hd_http_query_get(req->query, req->query_len, "since_seq", num, sizeof(num));

  if (n == HD_ENOENT) return true;
  if (n <= 0 || num[0] == '-' || num[0] == '+') return false;
  a->since_seq = strtoull(num, &end, 10);
  if (*end) return false;
  a->resume = true;
  n = hd_http_query_get(req->query, req->query_len, "epoch", epoch, cap);
  if (n == HD_ELIMIT || n == HD_EPROTO) epoch[0] = '\0'; /* no epoch of ours: mismatch */
  if (n != HD_ENOENT) a->client_epoch = epoch;
  return true;
}

void hd_client_upgrade(hd_conn_t *c, const hd_http_req_t *req) {
  const hd_config_t *cfg = c->w->srv->cfg;
  const hd_http_header_t *h;
  hd_ws_handshake_t hs;
  hd_jwt_claims_t claims;
  char qtok[HD_JWT_MAX_TOKEN + 1], epoch[HD_EPOCH_LEN + 1];
  hd_attach_t resume = {0};
  const char *tok = NULL;
  size_t toklen = 0;
  int n;

  if (hd_ws_handshake_check(req, &hs) < 0) { /* answers 400/426 */
    hd_conn_upgrade(c, req, HD_EP_CLIENT);
    return;
  }
  if (!query_resume(req, &resume, epoch, sizeof(epoch))) {
    hd_conn_respond_error(c, 400, "invalid_since_seq",
                          "since_seq must be an integer >= 0", false);
    return;
  }
  if (!origin_allowed(cfg, req)) {
    hd_conn_respond_error(c, 403, "origin_not_allowed", "this Origin may not connect",
                          false);
    return;
  }
  h = hd_http_header_find(req, "authorization", NULL);
  if (h && h->value_len > 7 && strncasecmp(h->value, "Bearer ", 7) == 0) {
    tok = h->value + 7;
    toklen = h->value_len - 7;
  } else if ((n = hd_http_query_get(req->query, req->query_len, "access_token", qtok,
                                    sizeof(qtok))) >= 0) {
    tok = qtok;
    toklen = (size_t)n;
  } else if (n == HD_ELIMIT || n == HD_EPROTO) {
    hd_conn_respond_error(c, 401, "malformed", "access_token is not a valid token",
                          false);
    return;
  }
  if (tok) {
    hd_jwt_reason_t r = verify(c, tok, toklen, &claims);
    if (r != HD_JWT_OK) {
      hd_conn_respond_error(c, 401, hd_jwt_reason_name(r), "invalid token", false);
      return;
    }
  }
  hd_conn_upgrade(c, req, HD_EP_CLIENT);
  if (c->state != HD_CONN_WS) return;
  if (tok) {
    authenticate(c, &claims, &resume);
  } else if (resume.resume && (c->pending = malloc(sizeof(*c->pending))) != NULL) {
    /* Kept for the auth message, which may override it. */
    c->pending->since_seq = resume.since_seq;
    c->pending->has_epoch = resume.client_epoch != NULL;
    snprintf(c->pending->epoch, sizeof(c->pending->epoch), "%s", epoch);
  }
}

/* since_seq as a JSON integer >= 0; false if present and anything else. */
static bool json_seq(json_t *v, uint64_t *out) {
  if (v == NULL) return true;
  if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
  *out = (uint64_t)json_integer_value(v);
  return true;
}

static void on_auth_message(hd_conn_t *c, json_t *msg) {
  json_t *tok = json_object_get(msg, "token");
  hd_jwt_claims_t claims;
  hd_jwt_reason_t r;

  if (!json_is_string(tok)) {
    atomic_fetch_add(&c->w->stats.auth_failures, 1);
    hd_conn_ws_close(c, HD_WS_CLOSE_UNAUTHORIZED, "first message must be auth");
    return;
  }
  r = verify(c, json_string_value(tok), json_string_length(tok), &claims);
  if (r != HD_JWT_OK) {
    hd_conn_ws_close(
        c, r == HD_JWT_EXPIRED ? HD_WS_CLOSE_TOKEN_EXPIRED : HD_WS_CLOSE_UNAUTHORIZED,
        hd_jwt_reason_name(r));
    return;
  }
  hd_attach_t resume = {0};
  json_t *since = json_object_get(msg, "since_seq");
  const char *epoch = json_string_value(json_object_get(msg, "epoch"));
  if (!json_seq(since, &resume.since_seq)) {
    hd_conn_ws_close(c, HD_WS_CLOSE_POLICY, "since_seq must be an integer >= 0");
    return;
  }
  if (since) {
    resume.resume = true;
    resume.client_epoch = epoch;
  } else if (c->pending) { /* given in the handshake's query string */
    resume.resume = true;
    resume.since_seq = c->pending->since_seq;
    resume.client_epoch = c->pending->has_epoch ? c->pending->epoch : NULL;
  }
  authenticate(c, &claims, &resume);
}

static void on_history(hd_conn_t *c, json_t *msg) {
  uint64_t since = 0, limit = 1000;
  char *reply;

  if (!json_seq(json_object_get(msg, "since_seq"), &since) ||
      !json_seq(json_object_get(msg, "limit"), &limit) || limit == 0) {
    reply_error(c, "invalid_request",
                "since_seq and limit must be integers (limit >= 1)");
    return;
  }
  if (limit > 1000) limit = 1000;
  reply =
      hd__manager_history_json(c->w->srv->manager, c->sub.user_id, since, (size_t)limit);
  if (reply == NULL) {
    reply_error(c, "internal", "out of memory");
    return;
  }
  send_text(c, reply, strlen(reply));
  free(reply);
}

/* user_message: {"type":"user_message","id":..,"thread_id":..,"text":..} ->
 * ack {"type":"ack","id":..,"run_id":..}, then the run's events. The ack is
 * queued here, before agent_started can arrive (that comes through the
 * manager and this worker's inbox, which is handled after this returns). */
static void on_user_message(hd_conn_t *c, json_t *msg) {
  const char *err = NULL, *thread = hd__json_id_field(msg, "thread_id", true, &err);
  const char *id = NULL, *text = json_string_value(json_object_get(msg, "text"));
  char run_id[48];
  int rc;

  if (thread == NULL) {
    reply_error(c, "invalid_request", "thread_id: a string of 1..128 bytes");
    return;
  }
  err = NULL;
  id = hd__json_id_field(msg, "id", false, &err);
  if (err) {
    reply_error(c, "invalid_request", "id: a string of 1..128 bytes");
    return;
  }
  if (text == NULL || json_string_length(json_object_get(msg, "text")) == 0 ||
      memchr(text, 0, json_string_length(json_object_get(msg, "text")))) {
    reply_error(c, "invalid_request", "text: a non-empty string");
    return;
  }
  rc = hd_runtime_user_message(c->w, c->sub.user_id, c->id, thread, text, id, run_id,
                               sizeof(run_id));
  if (rc == 0) {
    send_json(c,
              json_pack("{s:s, s:s?, s:s}", "type", "ack", "id", id, "run_id", run_id));
    return;
  }
  /* Refusals carry the message's id too, so the client knows which one. */
  atomic_fetch_add(&c->w->stats.client_errors, 1);
  send_json(c, json_pack("{s:s, s:s, s:s, s:s?}", "type", "error", "code",
                         rc == HD_ENOENT   ? "no_agent"
                         : rc == HD_ELIMIT ? "too_many_runs"
                         : rc == HD_EBUSY  ? "shutting_down"
                                           : "internal",
                         "message",
                         rc == HD_ENOENT   ? "no agent is configured on this server"
                         : rc == HD_ELIMIT ? "too many runs in flight; wait or cancel one"
                         : rc == HD_EBUSY  ? "the server is draining"
                                           : "the run could not start",
                         "id", id));
}

static void on_cancel(hd_conn_t *c, json_t *msg) {
  const char *err = NULL, *run = hd__json_id_field(msg, "run_id", true, &err);
  int rc;

  if (run == NULL) {
    reply_error(c, "invalid_request", "run_id: a string of 1..128 bytes");
    return;
  }
  rc = hd_runtime_cancel(c->w->srv, c->sub.user_id, run);
  if (rc == HD_ENOENT)
    reply_error(c, "unknown_run", "no run of yours with this id is in flight");
  else if (rc == HD_EINVAL)
    reply_error(c, "not_cancellable", "this run is driven by a backend");
  else if (rc < 0)
    reply_error(c, "internal", "the run could not be cancelled");
  /* Success shows as agent_completed with status "cancelled". */
}

static void on_runs(hd_conn_t *c) {
  char *reply = hd__manager_runs_json(c->w->srv->manager, c->sub.user_id);
  if (reply == NULL) {
    reply_error(c, "internal", "out of memory");
    return;
  }
  send_text(c, reply, strlen(reply));
  free(reply);
}

/* ---- messages ----------------------------------------------------------------- */

void hd_client_on_message(hd_conn_t *c, const uint8_t *data, size_t len) {
  json_error_t jerr;
  json_t *msg = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
  const char *type = json_string_value(json_object_get(msg, "type"));

  if (!c->authed) {
    if (type && strcmp(type, "auth") == 0) {
      on_auth_message(c, msg);
    } else {
      atomic_fetch_add(&c->w->stats.auth_failures, 1);
      hd_conn_ws_close(c, HD_WS_CLOSE_UNAUTHORIZED, "first message must be auth");
    }
    json_decref(msg);
    return;
  }
  if (msg == NULL || !json_is_object(msg))
    reply_error(c, "invalid_json", "expected a JSON object");
  else if (type == NULL)
    reply_error(c, "missing_type", "the message has no string \"type\"");
  else if (strcmp(type, "auth") == 0)
    reply_error(c, "already_authenticated", "this connection is already authenticated");
  else if (strcmp(type, "history") == 0)
    on_history(c, msg);
  else if (strcmp(type, "runs") == 0)
    on_runs(c);
  else if (strcmp(type, "user_message") == 0)
    on_user_message(c, msg);
  else if (strcmp(type, "cancel") == 0)
    on_cancel(c, msg);
  else
    reply_error(c, "unknown_type", "unknown message type");
  json_decref(msg);
}
