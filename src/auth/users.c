/* Users file: loading, reloading, password checks, and the CLI's edits.
 *
 * The loaded users live in a jansson object guarded by a mutex; verification
 * copies the one hash it needs under the lock and runs argon2id outside it.
 * For an unknown name, a dummy hash made at open is verified instead, so both
 * failures take the same time.
 */
#include "auth/users.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "herald/herald.h"

struct hd_users_s {
  pthread_mutex_t lock;
  char *path;
  json_t *users; /* name -> {"hash": ...} */
  struct timespec mtime;
  off_t size;
  char dummy[crypto_pwhash_STRBYTES];
};

bool hd_user_name_valid(const char *name) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > HD_USER_NAME_MAX) return false;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '@' || c == '-'))
      return false;
  }
  return true;
}

/* Reads the file; a missing file is an empty set. NULL on a bad file. */
static json_t *load(const char *path, char *err, size_t errlen) {
  json_error_t jerr;
  json_t *root, *users;

  if (access(path, F_OK) != 0 && errno == ENOENT) return json_object();
  root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
  if (root == NULL) {
    if (err) snprintf(err, errlen, "%s:%d: %s", path, jerr.line, jerr.text);
    return NULL;
  }
  users = json_object_get(root, "users");
  if (!json_is_object(users)) {
    if (err) snprintf(err, errlen, "%s: expected {\"users\":{...}}", path);
    json_decref(root);
    return NULL;
  }
  json_incref(users);
  json_decref(root);
  return users;
}

/* Reloads if the file changed; lock held. A bad file keeps the old users. */
static void refresh(hd_users_t *u) {
  struct stat st;
  json_t *fresh;

  if (stat(u->path, &st) != 0) st.st_size = -1, st.st_mtim = (struct timespec){0, 0};
  if (st.st_size == u->size && st.st_mtim.tv_sec == u->mtime.tv_sec &&
      st.st_mtim.tv_nsec == u->mtime.tv_nsec && u->users)
    return;
  if ((fresh = load(u->path, NULL, 0)) == NULL) return;
  json_decref(u->users);
  u->users = fresh;
  u->size = st.st_size;
  u->mtime = st.st_mtim;
}

hd_users_t *hd_users_open(const char *path) {
  hd_users_t *u;

  if (sodium_init() < 0 || (u = calloc(1, sizeof(*u))) == NULL) return NULL;
  if ((u->path = strdup(path)) == NULL ||
      crypto_pwhash_str(u->dummy, "not a password", 14,
                        crypto_pwhash_OPSLIMIT_INTERACTIVE,
                        crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
    free(u->path);
    free(u);
    return NULL;
  }
  pthread_mutex_init(&u->lock, NULL);
  u->size = -2;
  return u;
}

void hd_users_free(hd_users_t *u) {
  if (u == NULL) return;
  json_decref(u->users);
  pthread_mutex_destroy(&u->lock);
  free(u->path);
  free(u);
}

bool hd_users_verify(hd_users_t *u, const char *name, const char *password, size_t plen) {
  char hash[crypto_pwhash_STRBYTES];
  const char *h = NULL;
  bool known;

  pthread_mutex_lock(&u->lock);
  refresh(u);
  if (hd_user_name_valid(name) && u->users)
    h = json_string_value(json_object_get(json_object_get(u->users, name), "hash"));
  known = h != NULL && strlen(h) < sizeof(hash);
  snprintf(hash, sizeof(hash), "%s", known ? h : u->dummy);
  pthread_mutex_unlock(&u->lock);
  return crypto_pwhash_str_verify(hash, password, plen) == 0 && known;
}

/* ---- the CLI's edits ------------------------------------------------------------ */

static int save(const char *path, json_t *users, char *err, size_t errlen) {
  char tmp[4096];
  json_t *root = json_pack("{s:O}", "users", users);
  FILE *f;
  int fd, rc = 0;

  if (root == NULL) return HD_ENOMEM;
  snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
    snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
    if (fd >= 0) close(fd);
    json_decref(root);
    return HD_EIO;
  }
  if (json_dumpf(root, f, JSON_INDENT(2) | JSON_SORT_KEYS) != 0 ||
      fputc('\n', f) == EOF || fflush(f) != 0 || fsync(fileno(f)) != 0)
    rc = HD_EIO;
  if (fclose(f) != 0) rc = HD_EIO;
  if (rc == 0 && rename(tmp, path) != 0) rc = HD_EIO;
  if (rc != 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    unlink(tmp);
  }
  json_decref(root);
  return rc;
}

int hd_users_file_add(const char *path, const char *name, const char *password,
                      size_t plen, char *err, size_t errlen) {
  char hash[crypto_pwhash_STRBYTES];
  json_t *users;
  int rc;

  if (!hd_user_name_valid(name)) {
    snprintf(err, errlen, "user names are 1..%d characters of A-Z a-z 0-9 . _ @ -",
             HD_USER_NAME_MAX);
    return HD_EINVAL;
  }
  if (plen == 0) {
    snprintf(err, errlen, "empty password");
    return HD_EINVAL;
  }
  if (sodium_init() < 0) return HD_EIO;
  if ((users = load(path, err, errlen)) == NULL) return HD_EINVAL;
  if (crypto_pwhash_str(hash, password, plen, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                        crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
    snprintf(err, errlen, "out of memory while hashing");
    json_decref(users);
    return HD_ENOMEM;
  }
  json_object_set_new(users, name, json_pack("{s:s}", "hash", hash));
  rc = save(path, users, err, errlen);
  json_decref(users);
  return rc;
}

int hd_users_file_del(const char *path, const char *name, char *err, size_t errlen) {
  json_t *users = load(path, err, errlen);
  int rc;

  if (users == NULL) return HD_EINVAL;
  if (json_object_del(users, name) != 0) {
    snprintf(err, errlen, "no user '%s'", name);
    json_decref(users);
    return HD_ENOENT;
  }
  rc = save(path, users, err, errlen);
  json_decref(users);
  return rc;
}

static int cmp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int hd_users_file_list(const char *path, void (*fn)(const char *name, void *arg),
                       void *arg, char *err, size_t errlen) {
  json_t *users = load(path, err, errlen), *v;
  const char *key, **names;
  size_t n = 0;

  if (users == NULL) return HD_EINVAL;
  names = calloc(json_object_size(users) + 1, sizeof(*names));
  if (names == NULL) {
    json_decref(users);
    return HD_ENOMEM;
  }
  json_object_foreach(users, key, v) names[n++] = key;
  qsort(names, n, sizeof(*names), cmp);
  for (size_t i = 0; i < n; i++) fn(names[i], arg);
  free(names);
  json_decref(users);
  return 0;
}
