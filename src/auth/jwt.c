/* JWT verification (RFC 7519) of JWS compact tokens (RFC 7515 section 7.1),
 * HS256/RS256/ES256 (RFC 7518 section 3), on OpenSSL 3 and jansson.
 *
 * A verifier is built once from configuration and never changes afterwards, so
 * hd_jwt_verify only reads it and may run on any number of threads at once:
 * every call makes its own digest context and its own JSON trees, and an
 * EVP_PKEY is safe to share for verification in OpenSSL 3.
 *
 * hd_jwt_verify works in this order, and the order is a security property:
 *
 *   1. length and shape: at most HD_JWT_MAX_TOKEN bytes, exactly two '.'
 *      separators, non-empty header and payload, all three parts valid
 *      base64url (else MALFORMED). Decoding is only a character scan, so doing
 *      it for the payload before the signature check exposes nothing and gives
 *      a truer reason than BAD_SIGNATURE for a mangled token;
 *   2. the header is parsed; its "alg" must be exactly the pinned algorithm
 *      (else BAD_ALG). Nothing about the key is taken from the header ("kid",
 *      "jwk", "jku" and "x5u" are ignored), so "none", an HS256 header on an
 *      RS256 verifier (the public key used as an HMAC secret) and the reverse
 *      are all refused here;
 *      a "crit" header names extensions we do not implement, and RFC 7515 4.1.11
 *      says such a token must be rejected (MALFORMED). "typ" is ignored: it is
 *      advisory (RFC 7519 5.1) and real issuers send "JWT", "at+jwt" (RFC 9068)
 *      and others; the pinned alg and key, "aud" and "iss" do what it would do;
 *   3. the signature is checked over the ASCII text "header.payload" exactly as
 *      received (a signature of the wrong length is BAD_SIGNATURE);
 *   4. only then is the payload parsed as JSON, so attacker-chosen claims
 *      reach the JSON parser only when signed by the key holder;
 *   5. claims, in this order: exp (MISSING_EXP, EXPIRED), nbf (NOT_YET_VALID),
 *      iss (BAD_ISSUER), aud (BAD_AUDIENCE), sub (BAD_SUBJECT).
 *
 * Base64url (RFC 4648 section 5) is decoded strictly: no '=' padding (RFC 7515
 * section 2 omits it), no characters outside the alphabet, no length that is 1
 * mod 4, and the unused low bits of the last character must be zero, so each
 * byte string has exactly one accepted encoding and a token cannot be altered
 * without the signature failing.
 *
 * JSON is parsed with duplicate keys rejected (RFC 7515 4 / RFC 7519 4 allow a
 * parser to, and a duplicate "alg" or "sub" is how two parsers are made to
 * disagree); jansson also rejects invalid UTF-8, trailing text and \u0000.
 * Header and payload must be objects. exp, nbf and iat are NumericDates given as
 * JSON integers or as numbers with an integral value within int64; anything else
 * present under those names (a string, a fraction, null) is MALFORMED, while an
 * absent exp is MISSING_EXP. The RFC allows fractional NumericDates; we do not
 * accept them because no mainstream issuer sends them and rounding would have to
 * be chosen per claim.
 *
 * Time: exp is valid while now < exp + leeway (RFC 7519 4.1.4 "before"), nbf once
 * now >= nbf - leeway (4.1.5 "after or equal"). iat is reported, not checked.
 *
 * OpenSSL reports failures on a per-thread error queue; this module brackets its
 * calls with ERR_set_mark/ERR_pop_to_mark so a bad token leaves nothing behind
 * for an unrelated caller (a TLS read deciding by SSL_get_error) on that thread.
 */
#include "auth/jwt.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "herald/herald.h"

#define HS256_LEN    32
#define ES256_COORD  32   /* RFC 7518 3.4: r and s are 32 octets each for P-256 */
#define RSA_MIN_BITS 2048 /* RFC 7518 3.3: a key of 2048 bits or larger MUST be used */

struct hd_jwt_verifier_s {
  hd_jwt_alg_t alg;
  uint8_t *secret; /* HS256 */
  size_t secret_len;
  EVP_PKEY *pkey; /* RS256/ES256; only ever used to verify after creation */
  char *audience; /* NULL: not checked */
  size_t audience_len;
  char *issuer; /* NULL: not checked */
  size_t issuer_len;
  int64_t leeway;
};

static const char *const alg_names[] = {"HS256", "RS256", "ES256"};

/* ---- base64url ---------------------------------------------------------- */

static int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

/* Decodes len characters into out, which holds at least len * 3 / 4 bytes.
 * Returns the decoded length or -1 for anything but the one canonical unpadded
 * encoding. */
static ptrdiff_t b64url_decode(const char *in, size_t len, uint8_t *out) {
  uint32_t acc = 0;
  unsigned bits = 0;
  size_t n = 0;
  int v;

  if (len % 4 == 1) return -1; /* 6 bits cannot make a byte */
  for (size_t i = 0; i < len; i++) {
    v = b64_value((unsigned char)in[i]);
    if (v < 0) return -1;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (uint8_t)(acc >> bits);
    }
  }
  /* The leftover 2 or 4 bits are padding; non-zero ones would make a second
   * spelling of the same bytes. */
  if (acc & ((1u << bits) - 1)) return -1;
  return (ptrdiff_t)n;
}

/* Encodes len bytes into out (room for 4 * ceil(len / 3) + 1), NUL-terminated
 * and unpadded. Returns the length written. */
static size_t b64url_encode(const uint8_t *in, size_t len, char *out) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t n = 0, i = 0;

  for (; i + 3 <= len; i += 3) {
    uint32_t w = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[n++] = tab[w >> 18];
    out[n++] = tab[(w >> 12) & 63];
    out[n++] = tab[(w >> 6) & 63];
    out[n++] = tab[w & 63];
  }
  if (len - i == 1) {
    uint32_t w = (uint32_t)in[i] << 16;
    out[n++] = tab[w >> 18];
    out[n++] = tab[(w >> 12) & 63];
  } else if (len - i == 2) {
    uint32_t w = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[n++] = tab[w >> 18];
    out[n++] = tab[(w >> 12) & 63];
    out[n++] = tab[(w >> 6) & 63];
  }
  out[n] = '\0';
  return n;
}

/* ---- verifier lifecycle --------------------------------------------------- */

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static int
fail_msg(char *err, size_t errlen, int code, const char *fmt, ...) {
  va_list ap;

  if (err != NULL && errlen > 0) {
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return code;
}

static char *dup_str(const char *s, size_t *len) {
  char *d;

  *len = strlen(s);
  d = malloc(*len + 1);
  if (d != NULL) memcpy(d, s, *len + 1);
  return d;
}

/* Loads a SubjectPublicKeyInfo PEM and checks it suits alg. Returns 0, or an
 * HD_E* code with err filled. */
static int load_key(hd_jwt_alg_t alg, const char *pem, EVP_PKEY **out, char *err,
                    size_t errlen) {
  EVP_PKEY *pkey = NULL;
  BIO *bio = NULL;
  char group[64];
  size_t group_len = 0;
  int rc;

  bio = BIO_new_mem_buf(pem, -1);
  if (bio == NULL) {
    rc = fail_msg(err, errlen, HD_ENOMEM, "jwt: out of memory");
    goto fail;
  }
  pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
  if (pkey == NULL) {
    rc = fail_msg(err, errlen, HD_EINVAL,
                  "jwt: %s public key is not a PEM \"PUBLIC KEY\" block", alg_names[alg]);
    goto fail;
  }
  if (alg == HD_JWT_RS256) {
    /* "RSA" only: an RSA-PSS key must not verify PKCS#1 v1.5 signatures. */
    if (!EVP_PKEY_is_a(pkey, "RSA")) {
      rc = fail_msg(err, errlen, HD_EINVAL, "jwt: RS256 needs an RSA public key");
      goto fail;
    }
    if (EVP_PKEY_get_bits(pkey) < RSA_MIN_BITS) {
      rc = fail_msg(err, errlen, HD_EINVAL, "jwt: RS256 key has %d bits, need >= %d",
                    EVP_PKEY_get_bits(pkey), RSA_MIN_BITS);
      goto fail;
    }
  } else {
    if (!EVP_PKEY_is_a(pkey, "EC") ||
        !EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
                                        sizeof(group), &group_len) ||
        (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
      rc = fail_msg(err, errlen, HD_EINVAL, "jwt: ES256 needs an EC P-256 public key");
      goto fail;
    }
  }
  BIO_free(bio);
  *out = pkey;
  return 0;

fail:
  EVP_PKEY_free(pkey);
  BIO_free(bio);
  return rc;
}

int hd_jwt_verifier_new(const hd_jwt_config_t *cfg, hd_jwt_verifier_t **out, char *err,
                        size_t errlen) {
  hd_jwt_verifier_t *v = NULL;
  int rc;

  *out = NULL;
  if (cfg == NULL) return fail_msg(err, errlen, HD_EINVAL, "jwt: no configuration");
  if ((unsigned)cfg->alg > HD_JWT_ES256)
    return fail_msg(err, errlen, HD_EINVAL, "jwt: unknown algorithm %d", (int)cfg->alg);
  if (cfg->leeway_s > HD_JWT_MAX_LEEWAY)
    return fail_msg(err, errlen, HD_EINVAL, "jwt: leeway %u s exceeds %d s",
                    cfg->leeway_s, HD_JWT_MAX_LEEWAY);
  /* An empty audience or issuer cannot be what was meant; failing here beats
   * a check that only an empty claim would pass. */
  if (cfg->audience != NULL && cfg->audience[0] == '\0')
    return fail_msg(err, errlen, HD_EINVAL, "jwt: audience is empty (use NULL)");
  if (cfg->issuer != NULL && cfg->issuer[0] == '\0')
    return fail_msg(err, errlen, HD_EINVAL, "jwt: issuer is empty (use NULL)");
  if (cfg->alg == HD_JWT_HS256) {
    if (cfg->secret == NULL || cfg->secret_len < HD_JWT_MIN_SECRET ||
        cfg->secret_len > INT_MAX) /* HMAC() takes an int length */
      return fail_msg(err, errlen, HD_EINVAL, "jwt: HS256 secret must be >= %d bytes",
                      HD_JWT_MIN_SECRET);
  } else if (cfg->public_key_pem == NULL) {
    return fail_msg(err, errlen, HD_EINVAL, "jwt: %s needs a public key",
                    alg_names[cfg->alg]);
  }

  v = calloc(1, sizeof(*v));
  if (v == NULL) goto nomem;
  v->alg = cfg->alg;
  v->leeway = cfg->leeway_s;
  if (cfg->alg == HD_JWT_HS256) {
    v->secret = malloc(cfg->secret_len);
    if (v->secret == NULL) goto nomem;
    memcpy(v->secret, cfg->secret, cfg->secret_len);
    v->secret_len = cfg->secret_len;
  } else {
    ERR_set_mark();
    rc = load_key(cfg->alg, cfg->public_key_pem, &v->pkey, err, errlen);
    ERR_pop_to_mark();
    if (rc != 0) goto fail;
  }
  if (cfg->audience != NULL) {
    v->audience = dup_str(cfg->audience, &v->audience_len);
    if (v->audience == NULL) goto nomem;
  }
  if (cfg->issuer != NULL) {
    v->issuer = dup_str(cfg->issuer, &v->issuer_len);
    if (v->issuer == NULL) goto nomem;
  }
  *out = v;
  return 0;

nomem:
  rc = fail_msg(err, errlen, HD_ENOMEM, "jwt: out of memory");
fail:
  hd_jwt_verifier_free(v);
  return rc;
}

void hd_jwt_verifier_free(hd_jwt_verifier_t *v) {
  if (v == NULL) return;
  if (v->secret != NULL) OPENSSL_cleanse(v->secret, v->secret_len);
  free(v->secret);
  EVP_PKEY_free(v->pkey);
  free(v->audience);
  free(v->issuer);
  free(v);
}

/* ---- signatures ----------------------------------------------------------- */

static bool hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len,
                        uint8_t mac[HS256_LEN]) {
  unsigned mac_len = 0;

  if (HMAC(EVP_sha256(), key, (int)key_len, data, len, mac, &mac_len) == NULL)
    return false;
  return mac_len == HS256_LEN;
}

static bool verify_hs256(const hd_jwt_verifier_t *v, const char *input, size_t input_len,
                         const uint8_t *sig, size_t sig_len) {
  uint8_t mac[HS256_LEN];
  bool ok;

  if (sig_len != HS256_LEN) return false;
  if (!hmac_sha256(v->secret, v->secret_len, input, input_len, mac)) return false;
  ok = CRYPTO_memcmp(mac, sig, HS256_LEN) == 0;
  OPENSSL_cleanse(mac, sizeof(mac));
  return ok;
}

/* RFC 7518 3.4: a JWS ECDSA signature is r || s as fixed-width big-endian
 * integers, while OpenSSL verifies the DER Ecdsa-Sig-Value of X9.62. */
static int es256_to_der(const uint8_t *raw, uint8_t *der, size_t der_cap) {
  ECDSA_SIG *es = NULL;
  BIGNUM *r = NULL, *s = NULL;
  unsigned char *p = der;
  int n = -1;

  es = ECDSA_SIG_new();
  r = BN_bin2bn(raw, ES256_COORD, NULL);
  s = BN_bin2bn(raw + ES256_COORD, ES256_COORD, NULL);
  if (es == NULL || r == NULL || s == NULL) goto fail;
  if (!ECDSA_SIG_set0(es, r, s)) goto fail;
  r = s = NULL; /* owned by es now */
  n = i2d_ECDSA_SIG(es, NULL);
  if (n <= 0 || (size_t)n > der_cap) {
    n = -1;
    goto fail;
  }
  n = i2d_ECDSA_SIG(es, &p);

fail:
  BN_free(r);
  BN_free(s);
  ECDSA_SIG_free(es);
  return n;
}

static bool verify_pkey(const hd_jwt_verifier_t *v, const char *input, size_t input_len,
                        const uint8_t *sig, size_t sig_len) {
  EVP_MD_CTX *ctx = NULL;
  uint8_t der[80]; /* P-256 DER signature: at most 72 bytes */
  int der_len;
  bool ok = false;

  if (v->alg == HD_JWT_ES256) {
    if (sig_len != 2 * ES256_COORD) return false;
    der_len = es256_to_der(sig, der, sizeof(der));
    if (der_len <= 0) return false;
    sig = der;
    sig_len = (size_t)der_len;
  } else if (sig_len != (size_t)EVP_PKEY_get_size(v->pkey)) {
    /* RFC 7518 3.3 / RFC 8017 8.2.2: the signature is exactly k octets. */
    return false;
  }
  /* A fresh context per call: the key is shared, the context is not. */
  ctx = EVP_MD_CTX_new();
  if (ctx == NULL) return false;
  /* The cast drops const for OpenSSL's prototype; verification does not
   * modify the key. RSA defaults to PKCS#1 v1.5 padding, as RS256 needs. */
  if (EVP_DigestVerifyInit_ex(ctx, NULL, "SHA256", NULL, NULL, v->pkey, NULL) == 1 &&
      EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)input, input_len) == 1)
    ok = true;
  EVP_MD_CTX_free(ctx);
  return ok;
}

/* ---- claims --------------------------------------------------------------- */

/* NumericDate: 0 and *out when j is an integer or an integral number within
 * int64, -1 otherwise. */
static int numeric_date(const json_t *j, int64_t *out) {
  double d;

  if (json_is_integer(j)) {
    *out = (int64_t)json_integer_value(j);
    return 0;
  }
  if (json_is_real(j)) {
    d = json_real_value(j);
    /* -2^63 and 2^63 are exact doubles; the range is half-open. Inside it the
     * conversion is defined, and a round trip that changes the value means a
     * fraction (this also keeps the module off libm). */
    if (!isfinite(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0 ||
        (double)(int64_t)d != d)
      return -1;
    *out = (int64_t)d;
    return 0;
  }
  return -1;
}

static bool string_is(const json_t *j, const char *s, size_t len) {
  return json_is_string(j) && json_string_length(j) == len &&
         memcmp(json_string_value(j), s, len) == 0;
}

/* RFC 7519 4.1.3: aud is one string or an array of strings, and the token is
 * for us when one of them is our audience. A non-string element makes the
 * whole claim malformed and is refused rather than skipped. */
static bool audience_ok(const hd_jwt_verifier_t *v, const json_t *aud) {
  size_t i;
  const json_t *e;
  bool found = false;

  if (json_is_string(aud)) return string_is(aud, v->audience, v->audience_len);
  if (!json_is_array(aud)) return false;
  json_array_foreach(aud, i, e) {
    if (!json_is_string(e)) return false;
    if (string_is(e, v->audience, v->audience_len)) found = true;
  }
  return found;
}

static hd_jwt_reason_t check_claims(const hd_jwt_verifier_t *v, const json_t *payload,
                                    int64_t now, hd_jwt_claims_t *claims) {
  const json_t *j;
  int64_t exp, nbf, iat = 0;
  size_t len;

  j = json_object_get(payload, "exp");
  if (j == NULL) return HD_JWT_MISSING_EXP;
  if (numeric_date(j, &exp) != 0) return HD_JWT_MALFORMED;
  /* now - exp in unsigned arithmetic is exact whenever now >= exp, where the
   * signed subtraction could overflow. */
  if (now >= exp && (uint64_t)now - (uint64_t)exp >= (uint64_t)v->leeway)
    return HD_JWT_EXPIRED;

  j = json_object_get(payload, "nbf");
  if (j != NULL) {
    if (numeric_date(j, &nbf) != 0) return HD_JWT_MALFORMED;
    if (nbf > now && (uint64_t)nbf - (uint64_t)now > (uint64_t)v->leeway)
      return HD_JWT_NOT_YET_VALID;
  }

  j = json_object_get(payload, "iat");
  if (j != NULL && numeric_date(j, &iat) != 0) return HD_JWT_MALFORMED;

  if (v->issuer != NULL &&
      !string_is(json_object_get(payload, "iss"), v->issuer, v->issuer_len))
    return HD_JWT_BAD_ISSUER;

  if (v->audience != NULL && !audience_ok(v, json_object_get(payload, "aud")))
    return HD_JWT_BAD_AUDIENCE;

  /* jansson has already refused invalid UTF-8 and embedded NULs, so the user id
   * is a clean C string. */
  j = json_object_get(payload, "sub");
  if (!json_is_string(j)) return HD_JWT_BAD_SUBJECT;
  len = json_string_length(j);
  if (len == 0 || len > HD_JWT_MAX_SUB) return HD_JWT_BAD_SUBJECT;

  if (claims != NULL) {
    memcpy(claims->sub, json_string_value(j), len);
    claims->sub[len] = '\0';
    claims->exp = exp;
    claims->iat = iat;
  }
  return HD_JWT_OK;
}

/* ---- verification --------------------------------------------------------- */

/* Parses a decoded part as a JSON object. NULL if it is not one. */
static json_t *parse_object(const uint8_t *buf, size_t len) {
  json_t *j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, NULL);

  if (j != NULL && !json_is_object(j)) {
    json_decref(j);
    j = NULL;
  }
  return j;
}

hd_jwt_reason_t hd_jwt_verify(const hd_jwt_verifier_t *v, const char *token, size_t len,
                              int64_t now, hd_jwt_claims_t *claims) {
  /* Decoding shrinks text by a quarter, so the three decoded parts fit one
   * token-sized buffer, laid end to end. */
  uint8_t buf[HD_JWT_MAX_TOKEN];
  const char *dot1, *dot2, *payload, *sig;
  size_t header_len, payload_len, sig_len;
  uint8_t *hbuf, *pbuf, *sbuf;
  ptrdiff_t hn, pn, sn;
  json_t *header = NULL, *body = NULL;
  const json_t *alg;
  bool sig_ok;
  hd_jwt_reason_t r;

  if (v == NULL || token == NULL || len == 0 || len > HD_JWT_MAX_TOKEN)
    return HD_JWT_MALFORMED;
  dot1 = memchr(token, '.', len);
  if (dot1 == NULL) return HD_JWT_MALFORMED;
  payload = dot1 + 1;
  dot2 = memchr(payload, '.', len - (size_t)(payload - token));
  if (dot2 == NULL) return HD_JWT_MALFORMED;
  sig = dot2 + 1;
  sig_len = len - (size_t)(sig - token);
  if (memchr(sig, '.', sig_len) != NULL) return HD_JWT_MALFORMED; /* JWE has five */
  header_len = (size_t)(dot1 - token);
  payload_len = (size_t)(dot2 - payload);
  if (header_len == 0 || payload_len == 0) return HD_JWT_MALFORMED;

  hbuf = buf;
  hn = b64url_decode(token, header_len, hbuf);
  if (hn <= 0) return HD_JWT_MALFORMED;
  pbuf = hbuf + hn;
  pn = b64url_decode(payload, payload_len, pbuf);
  if (pn <= 0) return HD_JWT_MALFORMED;
  sbuf = pbuf + pn;
  sn = b64url_decode(sig, sig_len, sbuf); /* empty is well-formed, and fails below */
  if (sn < 0) return HD_JWT_MALFORMED;

  header = parse_object(hbuf, (size_t)hn);
  if (header == NULL) return HD_JWT_MALFORMED;
  alg = json_object_get(header, "alg");
  if (!json_is_string(alg) || strcmp(json_string_value(alg), alg_names[v->alg]) != 0) {
    r = HD_JWT_BAD_ALG;
    goto done;
  }
  if (json_object_get(header, "crit") != NULL) {
    r = HD_JWT_MALFORMED;
    goto done;
  }

  ERR_set_mark();
  if (v->alg == HD_JWT_HS256)
    sig_ok = verify_hs256(v, token, (size_t)(dot2 - token), sbuf, (size_t)sn);
  else
    sig_ok = verify_pkey(v, token, (size_t)(dot2 - token), sbuf, (size_t)sn);
  ERR_pop_to_mark();
  if (!sig_ok) {
    r = HD_JWT_BAD_SIGNATURE;
    goto done;
  }

  body = parse_object(pbuf, (size_t)pn);
  if (body == NULL) {
    r = HD_JWT_MALFORMED;
    goto done;
  }
  r = check_claims(v, body, now, claims);

done:
  json_decref(body);
  json_decref(header);
  return r;
}

const char *hd_jwt_reason_name(hd_jwt_reason_t r) {
  switch (r) {
  case HD_JWT_OK:
    return "ok";
  case HD_JWT_MALFORMED:
    return "malformed";
  case HD_JWT_BAD_ALG:
    return "bad_alg";
  case HD_JWT_BAD_SIGNATURE:
    return "bad_signature";
  case HD_JWT_EXPIRED:
    return "expired";
  case HD_JWT_MISSING_EXP:
    return "missing_exp";
  case HD_JWT_NOT_YET_VALID:
    return "not_yet_valid";
  case HD_JWT_BAD_AUDIENCE:
    return "bad_audience";
  case HD_JWT_BAD_ISSUER:
    return "bad_issuer";
  case HD_JWT_BAD_SUBJECT:
    return "bad_subject";
  }
  return "unknown";
}

/* ---- signing -------------------------------------------------------------- */

/* Serialises j compactly into a malloc'ed buffer; jansson's own dump would
 * allocate with jansson's allocator, which the caller may have replaced. */
static char *dump(const json_t *j, size_t *len) {
  size_t n = json_dumpb(j, NULL, 0, JSON_COMPACT);
  char *s;

  if (n == 0) return NULL;
  s = malloc(n);
  if (s == NULL) return NULL;
  if (json_dumpb(j, s, n, JSON_COMPACT) != n) {
    free(s);
    return NULL;
  }
  *len = n;
  return s;
}

char *hd_jwt_sign_hs256(const hd_jwt_verifier_t *v, const char *sub, int64_t iat,
                        int64_t exp) {
  static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
  json_t *claims = NULL;
  char *json = NULL, *tok = NULL;
  size_t json_len = 0, sub_len, cap, n;
  uint8_t mac[HS256_LEN];

  if (v == NULL || v->alg != HD_JWT_HS256 || sub == NULL) return NULL;
  /* Sign only what hd_jwt_verify would accept back. */
  sub_len = strlen(sub);
  if (sub_len == 0 || sub_len > HD_JWT_MAX_SUB) return NULL;

  /* json_string refuses invalid UTF-8, which the verifier would refuse too. */
  claims = json_pack("{s:s, s:I, s:I}", "sub", sub, "iat", (json_int_t)iat, "exp",
                     (json_int_t)exp);
  if (claims == NULL) goto fail;
  if (v->audience != NULL && json_object_set_new(claims, "aud", json_string(v->audience)))
    goto fail;
  if (v->issuer != NULL && json_object_set_new(claims, "iss", json_string(v->issuer)))
    goto fail;
  json = dump(claims, &json_len);
  if (json == NULL) goto fail;

  /* header.payload.signature, each part 4/3 of its bytes rounded up. */
  cap = (sizeof(header) - 1 + 2) / 3 * 4 + 1 + (json_len + 2) / 3 * 4 + 1 +
        (HS256_LEN + 2) / 3 * 4 + 1;
  tok = malloc(cap);
  if (tok == NULL) goto fail;
  n = b64url_encode((const uint8_t *)header, sizeof(header) - 1, tok);
  tok[n++] = '.';
  n += b64url_encode((const uint8_t *)json, json_len, tok + n);
  ERR_set_mark();
  if (!hmac_sha256(v->secret, v->secret_len, tok, n, mac)) {
    ERR_pop_to_mark();
    goto fail;
  }
  ERR_pop_to_mark();
  tok[n++] = '.';
  b64url_encode(mac, sizeof(mac), tok + n);
  OPENSSL_cleanse(mac, sizeof(mac));
  free(json);
  json_decref(claims);
  return tok;

fail:
  free(tok);
  free(json);
  json_decref(claims);
  return NULL;
}

/* ---- constant-time comparison --------------------------------------------- */

bool hd_secret_equal(const char *a, size_t alen, const char *b, size_t blen) {
  uint8_t da[32], db[32];
  bool ok = false;

  /* Hashing first makes the comparison a fixed 32 bytes whatever the lengths,
   * so neither where they differ nor how long the secret is leaks through
   * timing (beyond SHA-256's own linear cost). */
  ERR_set_mark();
  if (EVP_Digest(a != NULL ? a : "", a != NULL ? alen : 0, da, NULL, EVP_sha256(),
                 NULL) == 1 &&
      EVP_Digest(b != NULL ? b : "", b != NULL ? blen : 0, db, NULL, EVP_sha256(),
                 NULL) == 1)
    ok = CRYPTO_memcmp(da, db, sizeof(da)) == 0;
  ERR_pop_to_mark();
  return ok;
}
