/* POST /auth/login: the embedded identity provider (PROTOCOL.md section 8).
 *
 * {"username":"alice","password":"..."} -> 200 {"token","user_id","expires_at"}
 * or 401. The argon2id check runs on libuv's thread pool (hd_conn_defer), never
 * on an event loop. An unknown user and a wrong password get the same answer
 * after the same work.
 *
 * Failed logins are limited per client address and per username, in fixed
 * one-minute windows: past the limit the answer is 429 with Retry-After, and
 * the password is not even checked. The counters live in a small fixed table
 * (a collision only makes two keys share a budget), so memory stays bounded
 * whatever an attacker sends.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "auth/jwt.h"
#include "auth/users.h"
#include "daemon/log.h"
#include "net/net.h"

#define RL_SLOTS    4096
#define RL_WINDOW_S 60
#define RL_PER_USER 5  /* failures per window per username */
#define RL_PER_ADDR 20 /* failures per window per client address */

typedef struct {
  uint64_t key;
  int64_t window_start;
  uint32_t failures;
} slot_t;

static struct {
  pthread_mutex_t lock;
  slot_t slots[RL_SLOTS];
  hd_users_t *users;
} login = {.lock = PTHREAD_MUTEX_INITIALIZER};

void hd_api_login_init(hd_users_t *users) {
  login.users = users;
}

static uint64_t key_of(const char *kind, const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char *p = kind; *p; p++) h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
  for (const char *p = s; *p; p++) h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
  return h | 1; /* 0 marks a free slot */
}

/* The slot for key in the current window; lock held. */
static slot_t *slot(uint64_t key, int64_t now) {
  slot_t *s = &login.slots[key % RL_SLOTS];
  if (s->key != key || now - s->window_start >= RL_WINDOW_S) {
    s->key = key;
    s->window_start = now;
    s->failures = 0;
  }
  return s;
}

/* Seconds until key may try again, or 0. */
static int64_t blocked(uint64_t key, uint32_t limit, int64_t now) {
  slot_t *s = slot(key, now);
  return s->failures >= limit ? s->window_start + RL_WINDOW_S - now : 0;
}

typedef struct {
  char user[HD_USER_NAME_MAX + 1];
  char addr[64];
  char *password;
  size_t plen;
  bool ok;
  bool keep_alive;
} attempt_t;

static void verify(void *arg) {
  attempt_t *a = arg;
  a->ok = hd_users_verify(login.users, a->user, a->password, a->plen);
}

static void answer(hd_conn_t *c, void *arg) {
  attempt_t *a = arg;
  hd_server_t *srv = c->w->srv;
  int64_t now = (int64_t)time(NULL), exp = now + srv->cfg->token_ttl_s;
  char *token = NULL;

  sodium_memzero(a->password, a->plen);
  free(a->password);
  if (a->ok) { /* the attempt was counted as a failure up front: undo it */
    pthread_mutex_lock(&login.lock);
    slot(key_of("u:", a->user), now)->failures = 0;
    slot_t *as = slot(key_of("a:", a->addr), now);
    if (as->failures) as->failures--;
    pthread_mutex_unlock(&login.lock);
  }
  if (a->ok) token = hd_jwt_sign_hs256(srv->jwt, a->user, now, exp);
  hd_log(HD_LOG_INFO, "login %s for '%s' from %s", a->ok ? "ok" : "refused", a->user,
         a->addr);
  if (c->state == HD_CONN_HTTP) {
    if (a->ok && token) {
      json_t *j = json_pack("{s:s, s:s, s:I}", "token", token, "user_id", a->user,
                            "expires_at", (json_int_t)exp);
      char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
      if (body)
        hd_conn_respond_json(c, 200, body, a->keep_alive);
      else
        hd_conn_respond_error(c, 500, "internal", "out of memory", false);
      free(body);
      json_decref(j);
    } else if (a->ok) {
      hd_conn_respond_error(c, 503, "login_unavailable",
                            "tokens can only be issued with --jwt-alg HS256",
                            a->keep_alive);
    } else {
      hd_conn_respond_error(c, 401, "invalid_credentials", "wrong username or password",
                            a->keep_alive);
    }
  }
  free(token);
  free(a);
}

void hd_api_login(hd_conn_t *c, const hd_http_req_t *req) {
  json_t *body = NULL, *jp;
  const char *user;
  attempt_t *a = NULL;
  int64_t now = (int64_t)time(NULL), wait;
  char addr[64];

  if (req->method != HTTP_POST) {
    hd_conn_respond_error(c, 405, "method_not_allowed", "use POST", req->keep_alive);
    return;
  }
  if (login.users == NULL) {
    hd_conn_respond_error(c, 404, "login_disabled", "start heraldd with --users FILE",
                          req->keep_alive);
    return;
  }
  body = json_loadb((const char *)req->body, req->body_len, JSON_REJECT_DUPLICATES, NULL);
  user = json_string_value(json_object_get(body, "username"));
  jp = json_object_get(body, "password");
  if (user == NULL || !json_is_string(jp) || json_string_length(jp) > 1024) {
    hd_conn_respond_error(c, 400, "invalid_request",
                          "expected {\"username\":\"...\",\"password\":\"...\"}",
                          req->keep_alive);
    goto done;
  }
  hd_conn_peer(c, addr, sizeof(addr));
  /* Every attempt counts as a failure until it succeeds, so concurrent
   * guesses cannot all slip under the limit before any of them is judged. */
  pthread_mutex_lock(&login.lock);
  wait = blocked(key_of("a:", addr), RL_PER_ADDR, now);
  if (wait == 0)
    wait = blocked(key_of("u:", hd_user_name_valid(user) ? user : ""), RL_PER_USER, now);
  if (wait == 0) {
    slot(key_of("a:", addr), now)->failures++;
    slot(key_of("u:", hd_user_name_valid(user) ? user : ""), now)->failures++;
  }
  pthread_mutex_unlock(&login.lock);
  if (wait > 0) {
    char retry[64];
    snprintf(retry, sizeof(retry), "Retry-After: %lld\r\n", (long long)wait);
    static const char limited[] =
        "{\"error\":{\"code\":\"rate_limited\",\"message\":\"too many failed logins\"}}";
    hd_conn_respond(c, 429, "application/json", limited, sizeof(limited) - 1, retry,
                    req->keep_alive);
    goto done;
  }
  if ((a = calloc(1, sizeof(*a))) == NULL ||
      (a->password = malloc(json_string_length(jp) + 1)) == NULL) {
    hd_conn_respond_error(c, 500, "internal", "out of memory", false);
    goto fail;
  }
  /* An invalid name still costs a full check, so it is not told apart. */
  snprintf(a->user, sizeof(a->user), "%s", hd_user_name_valid(user) ? user : "");
  snprintf(a->addr, sizeof(a->addr), "%s", addr);
  memcpy(a->password, json_string_value(jp), json_string_length(jp) + 1);
  a->plen = json_string_length(jp);
  a->keep_alive = req->keep_alive;
  if (hd_conn_defer(c, verify, answer, a) != 0) {
    hd_conn_respond_error(c, 503, "busy", "try again", false);
    goto fail;
  }
  goto done;
fail:
  if (a) free(a->password);
  free(a);
done:
  json_decref(body);
}
