/* JWT verification and signing (RFC 7519, JWS compact form, RFC 7515), on
 * OpenSSL and jansson. No I/O.
 *
 * The accepted algorithm is pinned by the verifier's configuration: a token
 * whose header names any other "alg" (including "none") is rejected before its
 * signature is looked at. HS256 uses a shared secret of at least 32 bytes;
 * RS256 and ES256 use a public key (PEM). Claims checked: "exp" is required and
 * must be in the future; "nbf", when present, must not be in the future; both
 * with the configured leeway (at most 60 s). "aud" and "iss" are checked when
 * configured ("aud" may be a string or an array of strings). "sub" must be a
 * non-empty string of at most 128 bytes: it is the user id.
 */
#ifndef HD_AUTH_JWT_H
#define HD_AUTH_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HD_JWT_MAX_TOKEN  8192 /* longer tokens are rejected unparsed */
#define HD_JWT_MAX_SUB    128
#define HD_JWT_MIN_SECRET 32
#define HD_JWT_MAX_LEEWAY 60

typedef enum { HD_JWT_HS256 = 0, HD_JWT_RS256, HD_JWT_ES256 } hd_jwt_alg_t;

typedef struct hd_jwt_verifier_s hd_jwt_verifier_t;

/* Why a token was refused; hd_jwt_reason_name() gives a snake_case code. */
typedef enum {
  HD_JWT_OK = 0,
  HD_JWT_MALFORMED, /* not three base64url parts, bad JSON, too long */
  HD_JWT_BAD_ALG,   /* header alg missing, "none", or not the pinned one */
  HD_JWT_BAD_SIGNATURE,
  HD_JWT_EXPIRED, /* exp in the past (beyond leeway) */
  HD_JWT_MISSING_EXP,
  HD_JWT_NOT_YET_VALID, /* nbf in the future (beyond leeway) */
  HD_JWT_BAD_AUDIENCE,
  HD_JWT_BAD_ISSUER,
  HD_JWT_BAD_SUBJECT /* sub missing, not a string, empty or too long */
} hd_jwt_reason_t;

typedef struct {
  char sub[HD_JWT_MAX_SUB + 1]; /* the user id, NUL-terminated */
  int64_t exp;                  /* seconds since the Unix epoch */
  int64_t iat;                  /* 0 when absent */
} hd_jwt_claims_t;

typedef struct {
  hd_jwt_alg_t alg;
  const uint8_t *secret; /* HS256: the raw key bytes (copied); >= 32 bytes */
  size_t secret_len;
  const char *public_key_pem; /* RS256/ES256: PEM text (copied) */
  const char *audience;       /* NULL: not checked (copied) */
  const char *issuer;         /* NULL: not checked (copied) */
  unsigned leeway_s;          /* clock skew allowance, <= 60 */
} hd_jwt_config_t;

/* Creates a verifier. Returns 0 and *out, or HD_EINVAL with a message in err
 * (secret under 32 bytes, bad PEM, key type not matching alg, leeway > 60), or
 * HD_ENOMEM. All configuration strings are copied.
 * Details settled in jwt.c: the PEM is a SubjectPublicKeyInfo ("BEGIN PUBLIC
 * KEY") block; RS256 needs an RSA key of >= 2048 bits (RFC 7518 3.3), ES256 an
 * EC P-256 key; an empty (non-NULL) audience or issuer is HD_EINVAL, since only
 * NULL means "not checked". The verifier never changes after this returns. */
int hd_jwt_verifier_new(const hd_jwt_config_t *cfg, hd_jwt_verifier_t **out, char *err,
                        size_t errlen);
void hd_jwt_verifier_free(hd_jwt_verifier_t *v);

/* Verifies token (len bytes, need not be NUL-terminated) at time now (Unix
 * seconds). Returns HD_JWT_OK and fills claims, or the reason it was refused.
 * Thread-safe: a verifier may be shared by all workers.
 * Settled in jwt.c: a present exp/nbf/iat that is not an integral number is
 * HD_JWT_MALFORMED (an absent exp is HD_JWT_MISSING_EXP); "typ" is ignored; a
 * "crit" header is HD_JWT_MALFORMED; a signature of the wrong length is
 * HD_JWT_BAD_SIGNATURE. claims may be NULL. */
hd_jwt_reason_t hd_jwt_verify(const hd_jwt_verifier_t *v, const char *token, size_t len,
                              int64_t now, hd_jwt_claims_t *claims);

const char *hd_jwt_reason_name(hd_jwt_reason_t r);

/* Signs an HS256 token with claims {"sub":sub,"iat":iat,"exp":exp} plus, when
 * set, "aud" and "iss" from the verifier's configuration. Returns a malloc'ed
 * NUL-terminated token (caller frees) or NULL. Only for HS256 verifiers. */
char *hd_jwt_sign_hs256(const hd_jwt_verifier_t *v, const char *sub, int64_t iat,
                        int64_t exp);

/* Compares two byte strings in time that does not depend on where they differ
 * (nor, beyond a hash, on their lengths): for API keys. */
bool hd_secret_equal(const char *a, size_t alen, const char *b, size_t blen);

#endif
