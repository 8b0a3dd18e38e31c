/* An asynchronous HTTP client for code that runs on a worker (agents).
 *
 * Requests are libcurl easy handles driven by the worker's own uv loop through
 * curl's multi socket API: one curl multi per worker, created on that worker's
 * thread the first time it posts, kept for its connection cache until
 * hd_http_client_cleanup(). Nothing here blocks a loop; the completion
 * callback runs on the worker that posted, outside any curl call, so it may
 * post or abort other requests.
 *
 * The uv handles (one poll per curl socket, one timer per multi) exist only
 * while requests are in flight: an idle worker holds no handle of ours, and a
 * draining worker's loop ends once its last request completes (at most its
 * timeout later).
 */
#ifndef HD_NET_HTTP_CLIENT_H
#define HD_NET_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

struct hd_worker_s;

typedef struct hd_http_post_s hd_http_post_t;

typedef struct {
  int status;         /* HTTP status of the answer; 0 when none arrived */
  int error;          /* 0: an answer arrived (any status). HD_EIO: connection
                       * or protocol error, or timed out */
  bool timed_out;     /* error is HD_EIO because timeout_ms passed */
  const char *detail; /* why it failed, for logs; "" when error is 0.
                       * Borrowed: valid during the callback only */
} hd_http_result_t;

/* Called once when a post ends, on the posting worker's thread, unless the
 * post was aborted first. The post is freed when the callback returns: do not
 * abort it from inside its own callback. */
typedef void (*hd_http_done_cb)(void *arg, const hd_http_result_t *res);

/* Prepares the client for nworkers workers (curl_global_init and the
 * per-worker slots). Main thread, once, before the workers start. Returns 0,
 * HD_ENOMEM, HD_EIO (libcurl failed to initialise) or HD_EBUSY (already
 * initialised). */
int hd_http_client_init(int nworkers);

/* Releases the curl multis and their connection caches, then libcurl. Main
 * thread, after every worker thread has been joined. Safe if init failed or
 * never ran. */
void hd_http_client_cleanup(void);

/* POSTs body (len bytes, copied) to url from worker w, with headers (a
 * NULL-terminated array of "Name: value" lines, copied; may be NULL). The
 * whole exchange, connect included, must end within timeout_ms (0: no
 * limit). cb(arg, result) fires later on w's thread; cb may be NULL for fire
 * and forget. *out (if out is not NULL) receives a handle for
 * hd_http_post_abort, valid until cb runs or the post is aborted.
 * Returns 0, HD_EINVAL (bad arguments), HD_ENOMEM, HD_EIO (curl refused the
 * request) or HD_EBUSY (called before hd_http_client_init). On error cb never
 * fires. Worker w's thread only. */
int hd_http_post(struct hd_worker_s *w, const char *url, const char *const *headers,
                 const char *body, size_t len, unsigned timeout_ms, hd_http_done_cb cb,
                 void *arg, hd_http_post_t **out);

/* Ends a post that has not completed: its connection is closed, cb never
 * fires, and arg is no longer referenced. The posting worker's thread only,
 * never from the post's own callback. */
void hd_http_post_abort(hd_http_post_t *p);

#endif
