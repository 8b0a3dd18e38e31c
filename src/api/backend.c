/* The backend API (PROTOCOL.md section 7): publish, disconnect, presence.
 *
 * Every request needs `Authorization: Bearer <HERALD_API_KEY>`, compared in
 * constant time. A batch is validated whole before any of it is published, so
 * a bad event in position 7 publishes nothing and the error names index 7.
 * Events are validated here (known type, ids are strings of 1..128 bytes, data
 * an object, the encoded event within the message limit); the manager then
 * assigns seq and routes.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "api/json_arena.h"
#include "auth/jwt.h"
#include "core/event.h"
#include "net/net.h"

static bool authorized(hd_conn_t *c, const hd_http_req_t *req) {
  const char *key = c->w->srv->cfg->api_key;
  const hd_http_header_t *h = hd_http_header_find(req, "authorization", NULL);

  if (key == NULL || h == NULL || h->value_len < 7 ||
      strncasecmp(h->value, "Bearer ", 7) != 0)
    return false;
  return hd_secret_equal(h->value + 7, h->value_len - 7, key, strlen(key));
}

static void error_reply(hd_conn_t *c, const hd_http_req_t *req, int status,
                        const char *code, const char *message) {
  hd_conn_respond_error(c, status, code, message, req->keep_alive);
}

/* The fast path (src/core/pubscan.c): the events without a DOM, or 0 when it
 * declines. *evs and *ids are the caller's to free either way. */
static size_t scan(const hd_http_req_t *req, const hd_config_t *cfg,
                   hd_event_json_t **evs, char **ids, bool *batch) {
  size_t cap = req->body_len / 32 + 1; /* an event takes more than 32 bytes */

  if (cap > cfg->max_batch) cap = cfg->max_batch;
  *evs = malloc(cap * sizeof(**evs));
  *ids = malloc(req->body_len + 3 * cap + 1);
  if (*evs == NULL || *ids == NULL || req->body == NULL) return 0;
  return hd__publish_scan((const char *)req->body, req->body_len, cfg->max_message, *evs,
                          cap, *ids, batch);
}

/* The jansson path: decides what the fast path declined, with the error that
 * names the problem. Returns false once it has answered with that error. */
static bool parse(hd_conn_t *c, const hd_http_req_t *req, json_t **body,
                  hd_event_json_t **evs, size_t *count, bool *batch) {
  const hd_config_t *cfg = c->w->srv->cfg;
  json_error_t jerr;
  json_t *list;
  size_t n;
  char msg[200];

  *body =
      json_loadb((const char *)req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
  if (!json_is_object(*body)) {
    error_reply(c, req, 400, "invalid_json", "the body must be a JSON object");
    return false;
  }
  list = json_object_get(*body, "events");
  *batch = list != NULL;
  if (*batch && (!json_is_array(list) || json_array_size(list) == 0)) {
    error_reply(c, req, 400, "invalid_batch", "events must be a non-empty array");
    return false;
  }
  n = *batch ? json_array_size(list) : 1;
  if (n > cfg->max_batch) {
    snprintf(msg, sizeof(msg), "at most %zu events per request", cfg->max_batch);
    error_reply(c, req, 400, "batch_too_large", msg);
    return false;
  }
  if ((*evs = calloc(n, sizeof(**evs))) == NULL) {
    error_reply(c, req, 500, "internal", "out of memory");
    return false;
  }
  for (*count = 0; *count < n; ++*count) {
    char why[160];
    size_t i = *count;
    if (!hd__event_from_json(*batch ? json_array_get(list, i) : *body, cfg->max_message,
                             &(*evs)[i], why, sizeof(why))) {
      if (*batch)
        snprintf(msg, sizeof(msg), "events[%zu]: %s", i, why);
      else
        snprintf(msg, sizeof(msg), "%s", why);
      error_reply(c, req, 400, "invalid_event", msg);
      return false;
    }
  }
  return true;
}

static void publish(hd_conn_t *c, const hd_http_req_t *req) {
  hd_server_t *srv = c->w->srv;
  json_t *body = NULL;
  char *reply = NULL, *ids = NULL;
  size_t rlen = 0;
  hd_event_json_t *evs = NULL;
  size_t n = 0, i;
  bool batch = false;
  char msg[200];

  /* A DOM, if one is built, lives in the arena until the end of this function. */
  hd_json_arena_begin();
  if ((n = scan(req, srv->cfg, &evs, &ids, &batch)) == 0) {
    free(evs);
    evs = NULL;
    if (!parse(c, req, &body, &evs, &n, &batch)) goto done;
  }
  /* Herald's own runs ("hr-"): refuse the whole batch up front if an event
   * would break their shape (a later race is still caught by the manager). */
  for (i = 0; i < n; i++) {
    const hd_event_t *ev = &evs[i].ev;
    const char *code = NULL;
    if (ev->run_id == NULL || strncmp(ev->run_id, "hr-", 3) != 0) continue;
    if (ev->type == HD_EV_AGENT_STARTED)
      code = "run_already_started";
    else if (hd__manager_run_idle(srv->manager, evs[i].user_id, ev->run_id) < 0)
      code = "run_not_in_flight";
    if (code) {
      snprintf(msg, sizeof(msg), "events[%zu]: run %s is Herald's and %s", i, ev->run_id,
               code[4] == 'a' ? "was started by Herald" : "is not in flight");
      error_reply(c, req, 409, code, msg);
      goto done;
    }
  }
  if ((reply = malloc(16 + 64 * n)) == NULL) { /* 64 > the longest {"seq":..} */
    error_reply(c, req, 500, "internal", "out of memory");
    goto done;
  }
  rlen = (size_t)sprintf(reply, "%s", batch ? "{\"results\":[" : "");
  for (i = 0; i < n; i++) {
    hd_publish_result_t r;
    int rc = hd_manager_publish(srv->manager, evs[i].user_id, &evs[i].ev, &r);
    if (rc == HD_EBUSY) {
      error_reply(c, req, 503, "shutting_down", "the server is draining");
      goto done;
    }
    if (rc == HD_EEXIST || rc == HD_ENOENT) {
      snprintf(msg, sizeof(msg), "events[%zu]: %s (%zu events before it were published)",
               i,
               rc == HD_EEXIST ? "Herald started this run itself"
                               : "this run of Herald's is not in flight",
               i);
      error_reply(c, req, 409,
                  rc == HD_EEXIST ? "run_already_started" : "run_not_in_flight", msg);
      goto done;
    }
    if (rc < 0) {
      error_reply(c, req, 500, "internal", hd_strerror(rc));
      goto done;
    }
    rlen +=
        (size_t)sprintf(reply + rlen, "%s{\"seq\":%llu,\"delivered\":%u}", i ? "," : "",
                        (unsigned long long)r.seq, (unsigned)r.delivered);
  }
  if (batch) rlen += (size_t)sprintf(reply + rlen, "]}");
  hd_conn_respond(c, 200, "application/json", reply, rlen, NULL, req->keep_alive);
done:
  for (i = 0; evs && i < n; i++) hd__json_free(evs[i].data);
  free(evs);
  free(ids);
  free(reply);
  json_decref(body);
  hd_json_arena_end();
}

static void disconnect(hd_conn_t *c, const hd_http_req_t *req) {
  json_error_t jerr;
  json_t *body = json_loadb((const char *)req->body, req->body_len, 0, &jerr);
  const char *err = NULL, *user = json_is_object(body)
                                      ? hd__json_id_field(body, "user_id", true, &err)
                                      : NULL;
  char out[64];

  if (user == NULL) {
    error_reply(c, req, 400, "invalid_request", "expected {\"user_id\":\"...\"}");
  } else {
    size_t closed = hd_manager_disconnect(c->w->srv->manager, user, HD_WS_CLOSE_BACKEND);
    snprintf(out, sizeof(out), "{\"closed\":%zu}", closed);
    hd_conn_respond_json(c, 200, out, req->keep_alive);
  }
  json_decref(body);
}

static void presence(hd_conn_t *c, const hd_http_req_t *req, const char *raw, size_t n) {
  char user[HD_ID_MAX + 1], q[3 * HD_ID_MAX + 8];
  json_t *out;
  char *s;
  int len;

  /* Reuse the query decoder for the percent-encoded path segment. */
  len = snprintf(q, sizeof(q), "u=%.*s", (int)n, raw);
  if (len < 0 || (size_t)len >= sizeof(q) ||
      (len = hd_http_query_get(q, (size_t)len, "u", user, sizeof(user))) <= 0 ||
      memchr(user, 0, (size_t)len)) {
    error_reply(c, req, 400, "invalid_user_id", "a user id of 1..128 bytes");
    return;
  }
  out = json_pack("{s:s, s:I}", "user_id", user, "connections",
                  (json_int_t)hd_manager_presence(c->w->srv->manager, user));
  s = out ? json_dumps(out, JSON_COMPACT) : NULL;
  if (s == NULL)
    error_reply(c, req, 400, "invalid_user_id", "the user id is not UTF-8");
  else
    hd_conn_respond_json(c, 200, s, req->keep_alive);
  free(s);
  json_decref(out);
}

/* Handles /api/v1/...; path excludes the prefix. */
void hd_api_backend(hd_conn_t *c, const hd_http_req_t *req, const char *path, size_t n) {
  if (!authorized(c, req)) {
    hd_conn_respond_error(
        c, 401, c->w->srv->cfg->api_key ? "invalid_api_key" : "api_disabled",
        c->w->srv->cfg->api_key ? "missing or wrong API key"
                                : "set HERALD_API_KEY to enable the API",
        req->keep_alive);
    return;
  }
  if (n == 8 && memcmp(path, "/publish", 8) == 0) {
    if (req->method != HTTP_POST)
      error_reply(c, req, 405, "method_not_allowed", "use POST");
    else
      publish(c, req);
  } else if (n == 11 && memcmp(path, "/disconnect", 11) == 0) {
    if (req->method != HTTP_POST)
      error_reply(c, req, 405, "method_not_allowed", "use POST");
    else
      disconnect(c, req);
  } else if (n > 10 && memcmp(path, "/presence/", 10) == 0) {
    if (req->method != HTTP_GET)
      error_reply(c, req, 405, "method_not_allowed", "use GET");
    else
      presence(c, req, path + 10, n - 10);
  } else {
    error_reply(c, req, 404, "not_found", "no such API endpoint");
  }
}
