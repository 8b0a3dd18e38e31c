/* The users file of the embedded identity provider (POST /auth/login).
 *
 * A JSON object {"users":{"<name>":{"hash":"$argon2id$..."}}} holding argon2id
 * password hashes (libsodium's crypto_pwhash_str). The daemon reloads the file
 * when its modification time changes, so `herald user add` takes effect without
 * a restart. Names: 1..64 bytes of [A-Za-z0-9._@-]; they become user ids.
 */
#ifndef HD_AUTH_USERS_H
#define HD_AUTH_USERS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct hd_users_s hd_users_t;

#define HD_USER_NAME_MAX 64

/* Opens the users file at path (copied). The file may not exist yet (no users).
 * Returns NULL on OOM or if libsodium cannot start. */
hd_users_t *hd_users_open(const char *path);
void hd_users_free(hd_users_t *u);

/* Checks a password. Slow on purpose (argon2id): call off the event loop. An
 * unknown user costs the same as a wrong password. Thread-safe. Returns true
 * only for a known user with the right password. */
bool hd_users_verify(hd_users_t *u, const char *name, const char *password, size_t plen);

/* True for a valid user name. */
bool hd_user_name_valid(const char *name);

/* For the CLI: add or replace (hashing password), delete, list. Each rewrites
 * the file atomically (mode 0600). Return 0, HD_EINVAL (bad name or file),
 * HD_ENOENT (del: no such user), HD_EIO or HD_ENOMEM, with a message in err. */
int hd_users_file_add(const char *path, const char *name, const char *password,
                      size_t plen, char *err, size_t errlen);
int hd_users_file_del(const char *path, const char *name, char *err, size_t errlen);
/* Calls fn for each user name, in sorted order. */
int hd_users_file_list(const char *path, void (*fn)(const char *name, void *arg),
                       void *arg, char *err, size_t errlen);

#endif
