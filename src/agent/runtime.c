/* The run runtime: starts runs for user messages and guarantees their shape.
 *
 * Each run lives on the worker whose connection started it, in that worker's
 * list. Its id is "hr-<worker>-<random>": the prefix marks it as Herald's own
 * (the manager then refuses anyone else's agent_started or late events for it,
 * see hd__manager_run_begin) and the worker number routes a cancel arriving on
 * another worker to the run's owner as a posted task.
 *
 * The manager's run table is the source of truth for "in flight": the runtime
 * begins a run with hd__manager_run_begin (atomic with the per-user limit),
 * and the once-a-second sweep asks the manager how long each local run has
 * been silent. A run that is no longer in flight was completed by its backend
 * (webhook agent) and is released quietly; one silent past run_timeout is
 * ended here with status failed.
 */
#include "agent/runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "daemon/log.h"
#include "net/net.h"

typedef struct run_s {
  hd_run_t pub;
  struct run_s *prev, *next;
  char *input;
  char user_id[HD_ID_MAX + 1];
  char thread_id[HD_ID_MAX + 1];
  char message_id[HD_ID_MAX + 1];
  char run_id[40];
} run_t;

static struct {
  hd_agent_t *agent;
  hd_manager_t *manager;
  unsigned run_timeout_s;
  size_t max_runs;
} rt;

static run_t **runs_of(hd_worker_t *w) {
  return (run_t **)&w->agent_runs;
}

void hd_runtime_init(hd_agent_t *agent, hd_manager_t *m, unsigned run_timeout_s,
                     size_t max_runs) {
  rt.agent = agent;
  rt.manager = m;
  rt.run_timeout_s = run_timeout_s;
  rt.max_runs = max_runs;
}

const char *hd_runtime_agent_name(void) {
  return rt.agent ? rt.agent->ops->name : NULL;
}

static run_t *impl(hd_run_t *r) {
  return (run_t *)r;
}

static void unlink_free(run_t *r) {
  run_t **head = runs_of(r->pub.worker);
  if (r->prev)
    r->prev->next = r->next;
  else
    *head = r->next;
  if (r->next) r->next->prev = r->prev;
  free(r->input);
  free(r);
}

static int publish(run_t *r, hd_event_type_t type, const char *data) {
  hd_scope_t scope = hd_manager_scope(rt.manager, &r->pub.ctx);
  hd_event_t ev = {type, r->thread_id, r->run_id, data, strlen(data)};
  int rc = hd_scope_emit(scope, &ev, NULL);
  return rc == HD_ENOENT ? HD_ECLOSED : rc;
}

/* Publishes agent_completed (if the run is still in flight), stops the agent,
 * frees the run. */
static void end(run_t *r, const char *status, const char *text, const char *error,
                bool stop_agent) {
  json_t *d = json_pack("{s:s, s:s}", "status", status, "text", text ? text : "");
  char *data;

  if (d && error) json_object_set_new(d, "error", json_string(error));
  data = d ? json_dumps(d, JSON_COMPACT) : NULL;
  if (data == NULL || publish(r, HD_EV_AGENT_COMPLETED, data) < 0)
    hd_log(HD_LOG_DEBUG, "run %s: completion not published (already over or draining)",
           r->run_id);
  free(data);
  json_decref(d);
  if (stop_agent)
    rt.agent->ops->stop(rt.agent, &r->pub, strcmp(status, "cancelled") == 0);
  unlink_free(r);
}

int hd_run_emit(hd_run_t *run, hd_event_type_t type, const char *data_json) {
  if (type == HD_EV_AGENT_STARTED || type == HD_EV_AGENT_COMPLETED || data_json == NULL ||
      data_json[0] != '{')
    return HD_EINVAL;
  return publish(impl(run), type, data_json);
}

void hd_run_finish(hd_run_t *run, bool ok, const char *text, const char *error) {
  end(impl(run), ok ? "succeeded" : "failed", text, ok ? NULL : error, true);
}

int hd_runtime_user_message(hd_worker_t *w, const char *user_id, uint64_t conn_id,
                            const char *thread_id, const char *text,
                            const char *message_id, char *run_id_out, size_t cap) {
  uint8_t rnd[8];
  run_t *r;
  json_t *d;
  char *data;
  int rc;

  if (rt.agent == NULL) return HD_ENOENT;
  if (RAND_bytes(rnd, sizeof(rnd)) != 1) return HD_EIO;
  if ((r = calloc(1, sizeof(*r))) == NULL || (r->input = strdup(text)) == NULL) {
    free(r);
    return HD_ENOMEM;
  }
  snprintf(r->user_id, sizeof(r->user_id), "%s", user_id);
  snprintf(r->thread_id, sizeof(r->thread_id), "%s", thread_id);
  snprintf(r->message_id, sizeof(r->message_id), "%s", message_id ? message_id : "");
  snprintf(r->run_id, sizeof(r->run_id), "hr-%d-%02x%02x%02x%02x%02x%02x%02x%02x", w->id,
           rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
  r->pub.ctx = (hd_user_ctx_t){r->user_id, conn_id, r->thread_id, r->run_id, 0, 0};
  r->pub.input = r->input;
  r->pub.message_id = r->message_id;
  r->pub.worker = w;

  d = json_pack("{s:s, s:s}", "agent", rt.agent->ops->name, "input", text);
  data = d ? json_dumps(d, JSON_COMPACT) : NULL;
  json_decref(d);
  if (data == NULL) {
    rc = HD_ENOMEM;
  } else {
    hd_event_t ev = {HD_EV_AGENT_STARTED, r->thread_id, r->run_id, data, strlen(data)};
    rc = hd__manager_run_begin(rt.manager, user_id, &ev, rt.max_runs, NULL);
  }
  free(data);
  if (rc < 0) {
    free(r->input);
    free(r);
    return rc;
  }
  snprintf(run_id_out, cap, "%s", r->run_id);
  r->next = *runs_of(w);
  if (r->next) r->next->prev = r;
  *runs_of(w) = r;
  if ((rc = rt.agent->ops->start(rt.agent, &r->pub)) < 0) {
    /* The agent never took the run: end it without calling stop(). */
    end(r, "failed", "", "the agent could not start", false);
  }
  return 0;
}

/* ---- cancel ------------------------------------------------------------------ */

typedef struct {
  char user_id[HD_ID_MAX + 1];
  char run_id[40];
} cancel_t;

static void cancel_task(hd_worker_t *w, void *arg) {
  cancel_t *c = arg;

  for (run_t *r = w ? *runs_of(w) : NULL; r; r = r->next) {
    if (strcmp(r->run_id, c->run_id) == 0 && strcmp(r->user_id, c->user_id) == 0) {
      end(r, "cancelled", "", NULL, true);
      break;
    }
  }
  free(c);
}

int hd_runtime_cancel(hd_server_t *srv, const char *user_id, const char *run_id) {
  int worker = -1;
  cancel_t *c;

  /* Only the user's own runs in flight: the lookup is in the user's record. */
  if (hd__manager_run_idle(srv->manager, user_id, run_id) < 0) return HD_ENOENT;
  if (sscanf(run_id, "hr-%d-", &worker) != 1 || worker < 0 || worker >= srv->nworkers)
    return HD_EINVAL; /* a backend's run: Herald cannot cancel it */
  if ((c = calloc(1, sizeof(*c))) == NULL) return HD_ENOMEM;
  snprintf(c->user_id, sizeof(c->user_id), "%s", user_id);
  snprintf(c->run_id, sizeof(c->run_id), "%s", run_id);
  if (hd_worker_post(&srv->workers[worker], cancel_task, c) < 0) {
    free(c);
    return HD_ENOMEM;
  }
  return 0;
}

/* ---- the sweep ------------------------------------------------------------------ */

void hd_runtime_sweep(hd_worker_t *w) {
  run_t *r = *runs_of(w), *next;

  for (; r; r = next) {
    int64_t idle = hd__manager_run_idle(rt.manager, r->user_id, r->run_id);
    next = r->next;
    if (idle < 0) { /* completed by its backend, or forgotten */
      rt.agent->ops->stop(rt.agent, &r->pub, false);
      unlink_free(r);
    } else if (idle >= (int64_t)rt.run_timeout_s * 1000) {
      hd_log(HD_LOG_WARN, "run %s of %s: agent silent for %us, failing it", r->run_id,
             r->user_id, rt.run_timeout_s);
      end(r, "failed", "", "the agent did not answer in time", true);
    }
  }
}

void hd_runtime_stop_worker(hd_worker_t *w) {
  run_t *r;
  while ((r = *runs_of(w)) != NULL)
    end(r, "failed", "", "the server is shutting down", true);
}
