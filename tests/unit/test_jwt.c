/* Tests for src/auth/jwt.c: JWS compact verification, claim checks, HS256
 * signing and the constant-time secret comparison.
 *
 * Tokens are built here, independently of the module: this file has its own
 * base64url encoder, signs HS256 with OpenSSL's HMAC() and RS256/ES256 with
 * EVP_DigestSign over keys generated at start-up (ES256 DER signatures are
 * re-encoded as raw r || s). So an accepted token proves interoperability with
 * a second implementation, not just agreement of the module with itself. */
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "auth/jwt.h"
#include "herald/herald.h"
#include "support/unit.h"

#define NOW INT64_C(1700000000)

static const char SECRET[] = "0123456789abcdef0123456789abcdef"; /* 32 bytes */
#define SECRET_LEN (sizeof(SECRET) - 1)

static EVP_PKEY *rsa_key, *ec_key;
static char *rsa_pem, *ec_pem;

/* ---- token construction (independent of jwt.c) --------------------------- */

static char *b64(const void *data, size_t len) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const uint8_t *p = data;
  char *out = malloc(len * 4 / 3 + 4), *o = out;
  uint32_t acc = 0;
  int bits = 0;

  for (size_t i = 0; i < len; i++) {
    acc = acc << 8 | p[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      *o++ = tab[(acc >> bits) & 63];
    }
  }
  if (bits > 0) *o++ = tab[(acc << (6 - bits)) & 63];
  *o = '\0';
  return out;
}

static char *b64s(const char *s) {
  return b64(s, strlen(s));
}

/* Decodes base64url (valid input only) into a malloc'ed buffer. */
static uint8_t *unb64(const char *s, size_t len, size_t *out_len) {
  uint8_t *out = malloc(len + 1);
  uint32_t acc = 0;
  int bits = 0;
  size_t n = 0;

  for (size_t i = 0; i < len; i++) {
    const char *tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    acc = acc << 6 | (uint32_t)(strchr(tab, s[i]) - tab);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (uint8_t)(acc >> bits);
    }
  }
  *out_len = n;
  return out;
}

typedef enum { SIG_HS256, SIG_RS256, SIG_ES256, SIG_NONE } sig_kind_t;

/* Raw JWS signature of input. HS256 uses key/key_len, the others pkey. */
static uint8_t *sign_raw(sig_kind_t kind, const void *key, size_t key_len, EVP_PKEY *pkey,
                         const char *input, size_t *sig_len) {
  uint8_t *sig = NULL;

  if (kind == SIG_HS256) {
    unsigned n = 0;
    sig = malloc(EVP_MAX_MD_SIZE);
    HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)input, strlen(input),
         sig, &n);
    *sig_len = n;
  } else {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t n = 0;
    uint8_t *der;

    EVP_DigestSignInit_ex(ctx, NULL, "SHA256", NULL, NULL, pkey, NULL);
    EVP_DigestSign(ctx, NULL, &n, (const unsigned char *)input, strlen(input));
    der = malloc(n);
    EVP_DigestSign(ctx, der, &n, (const unsigned char *)input, strlen(input));
    EVP_MD_CTX_free(ctx);
    if (kind == SIG_RS256) {
      sig = der;
      *sig_len = n;
    } else {
      const unsigned char *p = der;
      ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
      const BIGNUM *r, *s;
      ECDSA_SIG_get0(es, &r, &s);
      sig = malloc(64);
      BN_bn2binpad(r, sig, 32);
      BN_bn2binpad(s, sig + 32, 32);
      *sig_len = 64;
      ECDSA_SIG_free(es);
      free(der);
    }
  }
  return sig;
}

/* header.payload.signature from JSON texts; SIG_NONE leaves the last part empty. */
static char *make_token(const char *header, const char *payload, sig_kind_t kind,
                        const void *key, size_t key_len, EVP_PKEY *pkey) {
  char *h = b64s(header), *p = b64s(payload), *s = NULL, *input, *tok;
  size_t sig_len = 0;
  uint8_t *sig;

  input = malloc(strlen(h) + strlen(p) + 2);
  sprintf(input, "%s.%s", h, p);
  if (kind == SIG_NONE) {
    s = strdup("");
  } else {
    sig = sign_raw(kind, key, key_len, pkey, input, &sig_len);
    s = b64(sig, sig_len);
    free(sig);
  }
  tok = malloc(strlen(input) + strlen(s) + 2);
  sprintf(tok, "%s.%s", input, s);
  free(h);
  free(p);
  free(s);
  free(input);
  return tok;
}

/* Signs already-encoded parts as given (HS256), so that deviant encodings can
 * be presented with a signature that would otherwise be valid. */
static char *sign_parts(const char *h64, const char *p64) {
  char *input = malloc(strlen(h64) + strlen(p64) + 2), *s, *tok;
  size_t sig_len;
  uint8_t *sig;

  sprintf(input, "%s.%s", h64, p64);
  sig = sign_raw(SIG_HS256, SECRET, SECRET_LEN, NULL, input, &sig_len);
  s = b64(sig, sig_len);
  tok = malloc(strlen(input) + strlen(s) + 2);
  sprintf(tok, "%s.%s", input, s);
  free(input);
  free(sig);
  free(s);
  return tok;
}

static char *hs(const char *payload) {
  return make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, SIG_HS256, SECRET,
                    SECRET_LEN, NULL);
}

static char *rs(const char *payload) {
  return make_token("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", payload, SIG_RS256, NULL, 0,
                    rsa_key);
}

static char *es(const char *payload) {
  return make_token("{\"alg\":\"ES256\",\"typ\":\"JWT\"}", payload, SIG_ES256, NULL, 0,
                    ec_key);
}

static char *pem_of(EVP_PKEY *k) {
  BIO *bio = BIO_new(BIO_s_mem());
  char *data, *out;
  long n;

  PEM_write_bio_PUBKEY(bio, k);
  n = BIO_get_mem_data(bio, &data);
  out = malloc((size_t)n + 1);
  memcpy(out, data, (size_t)n);
  out[n] = '\0';
  BIO_free(bio);
  return out;
}

/* ---- verifiers ------------------------------------------------------------ */

static hd_jwt_verifier_t *mk(hd_jwt_alg_t alg, const char *aud, const char *iss,
                             unsigned leeway) {
  hd_jwt_config_t cfg = {.alg = alg, .audience = aud, .issuer = iss, .leeway_s = leeway};
  hd_jwt_verifier_t *v = NULL;
  char err[128] = "";
  int rc;

  if (alg == HD_JWT_HS256) {
    cfg.secret = (const uint8_t *)SECRET;
    cfg.secret_len = SECRET_LEN;
  } else {
    cfg.public_key_pem = alg == HD_JWT_RS256 ? rsa_pem : ec_pem;
  }
  rc = hd_jwt_verifier_new(&cfg, &v, err, sizeof(err));
  CHECK_INT(rc, 0);
  if (rc != 0) fprintf(stderr, "  verifier_new: %s\n", err);
  return v;
}

static hd_jwt_reason_t verify_str(const hd_jwt_verifier_t *v, const char *tok,
                                  hd_jwt_claims_t *c) {
  return hd_jwt_verify(v, tok, strlen(tok), NOW, c);
}

/* Verifies and frees tok; checks the reason. */
#define EXPECT(v, tok, want)                                                             \
  do {                                                                                   \
    char *t_ = (tok);                                                                    \
    hd_jwt_claims_t c_;                                                                  \
    hd_jwt_reason_t r_ = verify_str((v), t_, &c_);                                       \
    if (r_ != (want)) fprintf(stderr, "  token: %s\n", t_);                              \
    CHECK_STR(hd_jwt_reason_name(r_), hd_jwt_reason_name(want));                         \
    free(t_);                                                                            \
  } while (0)

static char *payload_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *payload_fmt(const char *fmt, ...) {
  static char buf[16384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  return buf;
}

#define P(...) payload_fmt(__VA_ARGS__)

/* ---- tests ---------------------------------------------------------------- */

static void test_valid(void) {
  hd_jwt_verifier_t *vh = mk(HD_JWT_HS256, NULL, NULL, 0);
  hd_jwt_verifier_t *vr = mk(HD_JWT_RS256, NULL, NULL, 0);
  hd_jwt_verifier_t *ve = mk(HD_JWT_ES256, NULL, NULL, 0);
  hd_jwt_verifier_t *vs[3] = {vh, vr, ve};
  char *(*makers[3])(const char *) = {hs, rs, es};
  const char *pl = P("{\"sub\":\"alice\",\"exp\":%lld,\"iat\":%lld}",
                     (long long)NOW + 3600, (long long)NOW - 5);

  for (int i = 0; i < 3; i++) {
    char *tok = makers[i](pl);
    hd_jwt_claims_t c;
    memset(&c, 0x55, sizeof(c));
    CHECK_INT(verify_str(vs[i], tok, &c), HD_JWT_OK);
    CHECK_STR(c.sub, "alice");
    CHECK_INT(c.exp, NOW + 3600);
    CHECK_INT(c.iat, NOW - 5);
    /* claims may be NULL */
    CHECK_INT(verify_str(vs[i], tok, NULL), HD_JWT_OK);
    /* The token need not be NUL-terminated: trailing bytes beyond len are not read. */
    size_t n = strlen(tok);
    char *padded = malloc(n + 8);
    memcpy(padded, tok, n);
    memcpy(padded + n, ".AAAA==", 8);
    CHECK_INT(hd_jwt_verify(vs[i], padded, n, NOW, &c), HD_JWT_OK);
    free(padded);
    free(tok);
  }

  /* ES256 signatures are randomised; several must all convert and verify (r or
   * s with leading zero bytes exercise the fixed-width encoding). */
  for (int i = 0; i < 50; i++) EXPECT(ve, es(pl), HD_JWT_OK);

  /* iat absent reads as 0; the sub is copied exactly, multi-byte UTF-8 too. */
  {
    char *tok =
        hs(P("{\"sub\":\"j\\u00f6rg \\u2603\",\"exp\":%lld}", (long long)NOW + 1));
    hd_jwt_claims_t c;
    CHECK_INT(verify_str(vh, tok, &c), HD_JWT_OK);
    CHECK_STR(c.sub, "j\xc3\xb6rg \xe2\x98\x83");
    CHECK_INT(c.iat, 0);
    free(tok);
  }
  /* typ is ignored, whatever it says (documented in jwt.c). */
  EXPECT(vh,
         make_token("{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}",
                    P("{\"sub\":\"a\",\"exp\":%lld}", (long long)NOW + 1), SIG_HS256,
                    SECRET, SECRET_LEN, NULL),
         HD_JWT_OK);
  EXPECT(vh,
         make_token("{\"alg\":\"HS256\"}",
                    P("{\"sub\":\"a\",\"exp\":%lld}", (long long)NOW + 1), SIG_HS256,
                    SECRET, SECRET_LEN, NULL),
         HD_JWT_OK);
  /* A fixed vector computed outside C (Python's base64 and hmac modules with
   * SECRET), so the encoder and HMAC above are not the only witnesses. */
  {
    const char *fixed = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
                        "eyJzdWIiOiJib2IiLCJleHAiOjE3MDAwMDAxMDB9."
                        "hbw_mQY10Mzo0Dzxi9jVf13uxsJWNxm8O-o7DBboFsc";
    hd_jwt_claims_t c;
    CHECK_INT(hd_jwt_verify(vh, fixed, strlen(fixed), NOW, &c), HD_JWT_OK);
    CHECK_STR(c.sub, "bob");
    CHECK_INT(c.exp, 1700000100);
  }

  hd_jwt_verifier_free(vh);
  hd_jwt_verifier_free(vr);
  hd_jwt_verifier_free(ve);
}

static void test_bad_alg(void) {
  hd_jwt_verifier_t *vs[3] = {mk(HD_JWT_HS256, NULL, NULL, 0),
                              mk(HD_JWT_RS256, NULL, NULL, 0),
                              mk(HD_JWT_ES256, NULL, NULL, 0)};
  const char *pl = P("{\"sub\":\"alice\",\"exp\":%lld}", (long long)NOW + 3600);
  char payload[256];
  snprintf(payload, sizeof(payload), "%s", pl);

  for (int i = 0; i < 3; i++) {
    hd_jwt_verifier_t *v = vs[i];
    /* alg:none with an empty signature part, and with a signature. */
    EXPECT(v, make_token("{\"alg\":\"none\"}", payload, SIG_NONE, NULL, 0, NULL),
           HD_JWT_BAD_ALG);
    EXPECT(v,
           make_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", payload, SIG_NONE, NULL, 0,
                      NULL),
           HD_JWT_BAD_ALG);
    EXPECT(v,
           make_token("{\"alg\":\"none\"}", payload, SIG_HS256, SECRET, SECRET_LEN, NULL),
           HD_JWT_BAD_ALG);
    EXPECT(v, make_token("{\"alg\":\"None\"}", payload, SIG_NONE, NULL, 0, NULL),
           HD_JWT_BAD_ALG);
    EXPECT(v, make_token("{\"alg\":\"NONE\"}", payload, SIG_NONE, NULL, 0, NULL),
           HD_JWT_BAD_ALG);
    /* "header.payload" with no third part at all is structurally malformed. */
    {
      char *t = make_token("{\"alg\":\"none\"}", payload, SIG_NONE, NULL, 0, NULL);
      t[strlen(t) - 1] = '\0';
      EXPECT(v, t, HD_JWT_MALFORMED);
    }
    /* alg missing, not a string, wrong case, unknown. */
    EXPECT(v,
           make_token("{\"typ\":\"JWT\"}", payload, SIG_HS256, SECRET, SECRET_LEN, NULL),
           HD_JWT_BAD_ALG);
    EXPECT(v, make_token("{\"alg\":256}", payload, SIG_HS256, SECRET, SECRET_LEN, NULL),
           HD_JWT_BAD_ALG);
    EXPECT(v, make_token("{\"alg\":null}", payload, SIG_HS256, SECRET, SECRET_LEN, NULL),
           HD_JWT_BAD_ALG);
    EXPECT(
        v,
        make_token("{\"alg\":[\"HS256\"]}", payload, SIG_HS256, SECRET, SECRET_LEN, NULL),
        HD_JWT_BAD_ALG);
    EXPECT(v, make_token("{\"alg\":\"PS256\"}", payload, SIG_RS256, NULL, 0, rsa_key),
           HD_JWT_BAD_ALG);
    EXPECT(
        v,
        make_token("{\"alg\":\"HS512\"}", payload, SIG_HS256, SECRET, SECRET_LEN, NULL),
        HD_JWT_BAD_ALG);
  }
  EXPECT(vs[0],
         make_token("{\"alg\":\"hs256\"}", payload, SIG_HS256, SECRET, SECRET_LEN, NULL),
         HD_JWT_BAD_ALG);

  /* Algorithm confusion: an HS256 token HMAC'ed with the public key's PEM text
   * (what a naive "key from the header's alg" verifier would check) must fail on
   * RS256 and ES256 verifiers, as must one HMAC'ed with the DER key bytes. */
  EXPECT(vs[1],
         make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, SIG_HS256, rsa_pem,
                    strlen(rsa_pem), NULL),
         HD_JWT_BAD_ALG);
  EXPECT(vs[2],
         make_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, SIG_HS256, ec_pem,
                    strlen(ec_pem), NULL),
         HD_JWT_BAD_ALG);
  /* ... and with the header lying ("RS256") over an HMAC signature: the
   * signature is checked as RSA and fails. */
  EXPECT(vs[1],
         make_token("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", payload, SIG_HS256, rsa_pem,
                    strlen(rsa_pem), NULL),
         HD_JWT_BAD_SIGNATURE);
  EXPECT(vs[2],
         make_token("{\"alg\":\"ES256\",\"typ\":\"JWT\"}", payload, SIG_HS256, ec_pem,
                    strlen(ec_pem), NULL),
         HD_JWT_BAD_SIGNATURE);
  /* Asymmetric tokens to the HS256 verifier, and across RS/ES. */
  EXPECT(vs[0], rs(payload), HD_JWT_BAD_ALG);
  EXPECT(vs[0], es(payload), HD_JWT_BAD_ALG);
  EXPECT(vs[1], es(payload), HD_JWT_BAD_ALG);
  EXPECT(vs[2], rs(payload), HD_JWT_BAD_ALG);
  EXPECT(vs[1], hs(payload), HD_JWT_BAD_ALG);
  /* An RS256 signature under an "RS256" header from a different key. */
  {
    EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EXPECT(vs[1], make_token("{\"alg\":\"RS256\"}", payload, SIG_RS256, NULL, 0, other),
           HD_JWT_BAD_SIGNATURE);
    EVP_PKEY_free(other);
    other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EXPECT(vs[2], make_token("{\"alg\":\"ES256\"}", payload, SIG_ES256, NULL, 0, other),
           HD_JWT_BAD_SIGNATURE);
    EVP_PKEY_free(other);
    EXPECT(vs[0],
           make_token("{\"alg\":\"HS256\"}", payload, SIG_HS256,
                      "0123456789abcdef0123456789abcdeF", 32, NULL),
           HD_JWT_BAD_SIGNATURE);
  }
  for (int i = 0; i < 3; i++) hd_jwt_verifier_free(vs[i]);
}

/* Flips bit `bit` of the decoded part `part` (0 header, 1 payload, 2 sig) and
 * re-encodes it, keeping the other parts. */
static char *flip(const char *tok, int part, size_t bit) {
  const char *start = tok, *end;
  size_t n;
  uint8_t *raw;
  char *enc, *out;

  for (int i = 0; i < part; i++) start = strchr(start, '.') + 1;
  end = strchr(start, '.');
  if (end == NULL) end = start + strlen(start);
  raw = unb64(start, (size_t)(end - start), &n);
  raw[(bit / 8) % n] ^= (uint8_t)(1u << (bit % 8));
  enc = b64(raw, n);
  out = malloc(strlen(tok) + strlen(enc) + 1);
  memcpy(out, tok, (size_t)(start - tok));
  strcpy(out + (start - tok), enc);
  strcat(out, end);
  free(raw);
  free(enc);
  return out;
}

static void test_bad_signature(void) {
  hd_jwt_verifier_t *vs[3] = {mk(HD_JWT_HS256, NULL, NULL, 0),
                              mk(HD_JWT_RS256, NULL, NULL, 0),
                              mk(HD_JWT_ES256, NULL, NULL, 0)};
  static const char *const headers[3] = {"{\"alg\":\"HS256\",\"kid\":\"k1\"}",
                                         "{\"alg\":\"RS256\",\"kid\":\"k1\"}",
                                         "{\"alg\":\"ES256\",\"kid\":\"k1\"}"};
  char payload[128];
  snprintf(payload, sizeof(payload), "{\"sub\":\"alice\",\"exp\":%lld}",
           (long long)NOW + 3600);

  for (int i = 0; i < 3; i++) {
    char *tok = make_token(headers[i], payload, (sig_kind_t)i, SECRET, SECRET_LEN,
                           i == 1 ? rsa_key : ec_key);
    size_t sig_bits = (i == 0 ? 32 : i == 1 ? 256 : 64) * 8;
    int bad = 0;

    CHECK_INT(verify_str(vs[i], tok, NULL), HD_JWT_OK);
    /* Every single-bit change of the signature fails (RS256: a sample). */
    for (size_t b = 0; b < sig_bits; b += i == 1 ? 97 : 1) {
      char *t = flip(tok, 2, b);
      if (verify_str(vs[i], t, NULL) != HD_JWT_BAD_SIGNATURE) bad++;
      free(t);
    }
    CHECK_INT(bad, 0);
    /* Payload: "alice" -> "alicd"/"clice"; still valid JSON, still a valid sub. */
    EXPECT(vs[i], flip(tok, 1, 8 * 12), HD_JWT_BAD_SIGNATURE);
    EXPECT(vs[i], flip(tok, 1, 8 * 8 + 1), HD_JWT_BAD_SIGNATURE);
    /* Header: "k1" -> "k0", still a well-formed header with the right alg. */
    {
      const char *h = headers[i];
      size_t pos = (size_t)(strstr(h, "k1") - h) + 1;
      EXPECT(vs[i], flip(tok, 0, 8 * pos), HD_JWT_BAD_SIGNATURE);
    }
    /* Signature truncated by one byte, extended by one byte, empty. */
    {
      char *sig = strrchr(tok, '.') + 1;
      size_t n;
      uint8_t *raw = unb64(sig, strlen(sig), &n);
      uint8_t *longer = calloc(n + 1, 1);
      memcpy(longer, raw, n);
      char *e1 = b64(raw, n - 1), *e2 = b64(longer, n + 1);
      char *t1 = malloc(strlen(tok) + 8), *t2 = malloc(strlen(tok) + 8);
      char *t3 = strdup(tok);
      memcpy(t1, tok, (size_t)(sig - tok));
      strcpy(t1 + (sig - tok), e1);
      memcpy(t2, tok, (size_t)(sig - tok));
      strcpy(t2 + (sig - tok), e2);
      t3[sig - tok] = '\0';
      EXPECT(vs[i], t1, HD_JWT_BAD_SIGNATURE);
      EXPECT(vs[i], t2, HD_JWT_BAD_SIGNATURE);
      EXPECT(vs[i], t3, HD_JWT_BAD_SIGNATURE);
      free(raw);
      free(longer);
      free(e1);
      free(e2);
    }
    /* A bad signature leaves nothing on the thread's OpenSSL error queue. */
    ERR_clear_error();
    EXPECT(vs[i], flip(tok, 2, 3), HD_JWT_BAD_SIGNATURE);
    CHECK_INT(ERR_peek_error(), 0);
    free(tok);
  }
  /* ES256: an all-zero signature (r = s = 0) and one of all 0xff (r, s >= n). */
  {
    char *h = b64s("{\"alg\":\"ES256\"}"), *p = b64s(payload);
    uint8_t raw[64];
    char *tok = malloc(512), *s;
    for (int k = 0; k < 2; k++) {
      memset(raw, k ? 0xff : 0, sizeof(raw));
      s = b64(raw, sizeof(raw));
      snprintf(tok, 512, "%s.%s.%s", h, p, s);
      CHECK_INT(verify_str(vs[2], tok, NULL), HD_JWT_BAD_SIGNATURE);
      free(s);
    }
    free(tok);
    free(h);
    free(p);
  }
  for (int i = 0; i < 3; i++) hd_jwt_verifier_free(vs[i]);
}

static void test_time(void) {
  hd_jwt_verifier_t *v0 = mk(HD_JWT_HS256, NULL, NULL, 0);
  hd_jwt_verifier_t *v30 = mk(HD_JWT_HS256, NULL, NULL, 30);
  long long now = (long long)NOW;

  /* exp: valid while now < exp (+ leeway). */
  EXPECT(v0, hs(P("{\"sub\":\"a\",\"exp\":%lld}", now + 1)), HD_JWT_OK);
  EXPECT(v0, hs(P("{\"sub\":\"a\",\"exp\":%lld}", now)), HD_JWT_EXPIRED);
  EXPECT(v0, hs(P("{\"sub\":\"a\",\"exp\":%lld}", now - 1)), HD_JWT_EXPIRED);
  EXPECT(v0, hs(P("{\"sub\":\"a\",\"exp\":%lld}", now - 86400)), HD_JWT_EXPIRED);
  EXPECT(v30, hs(P("{\"sub\":\"a\",\"exp\":%lld}", now - 29)), HD_JWT_OK);
  EXPECT(v30, hs(P("{\"sub\":\"a\",\"exp\":%lld}", now - 30)), HD_JWT_EXPIRED);
  EXPECT(v30, hs(P("{\"sub\":\"a\",\"exp\":%lld}", now - 31)), HD_JWT_EXPIRED);
  /* Extremes do not overflow. */
  EXPECT(v30, hs("{\"sub\":\"a\",\"exp\":9223372036854775807}"), HD_JWT_OK);
  EXPECT(v30, hs("{\"sub\":\"a\",\"exp\":-9223372036854775808}"), HD_JWT_EXPIRED);
  {
    char *t = hs("{\"sub\":\"a\",\"exp\":-9223372036854775808}");
    CHECK_INT(hd_jwt_verify(v30, t, strlen(t), INT64_MAX, NULL), HD_JWT_EXPIRED);
    CHECK_INT(hd_jwt_verify(v0, t, strlen(t), INT64_MIN, NULL), HD_JWT_EXPIRED);
    CHECK_INT(hd_jwt_verify(v30, t, strlen(t), INT64_MIN + 29, NULL), HD_JWT_OK);
    CHECK_INT(hd_jwt_verify(v30, t, strlen(t), INT64_MIN + 30, NULL), HD_JWT_EXPIRED);
    free(t);
    t = hs("{\"sub\":\"a\",\"exp\":9223372036854775807}");
    CHECK_INT(hd_jwt_verify(v30, t, strlen(t), INT64_MIN, NULL), HD_JWT_OK);
    CHECK_INT(hd_jwt_verify(v0, t, strlen(t), INT64_MAX, NULL), HD_JWT_EXPIRED);
    free(t);
  }

  /* Missing exp, and exp present but not an integral NumericDate. */
  EXPECT(v0, hs("{\"sub\":\"a\"}"), HD_JWT_MISSING_EXP);
  EXPECT(v0, hs("{\"sub\":\"a\",\"nbf\":1}"), HD_JWT_MISSING_EXP);
  EXPECT(v0, hs(P("{\"sub\":\"a\",\"exp\":\"%lld\"}", now + 60)), HD_JWT_MALFORMED);
  EXPECT(v0, hs("{\"sub\":\"a\",\"exp\":null}"), HD_JWT_MALFORMED);
  EXPECT(v0, hs("{\"sub\":\"a\",\"exp\":true}"), HD_JWT_MALFORMED);
  EXPECT(v0, hs(P("{\"sub\":\"a\",\"exp\":[%lld]}", now + 60)), HD_JWT_MALFORMED);
  EXPECT(v0, hs(P("{\"sub\":\"a\",\"exp\":%lld.5}", now + 60)), HD_JWT_MALFORMED);
  EXPECT(v0, hs("{\"sub\":\"a\",\"exp\":1e300}"), HD_JWT_MALFORMED);
  EXPECT(v0, hs("{\"sub\":\"a\",\"exp\":9223372036854775808}"), HD_JWT_MALFORMED);
  /* An integral real is accepted as that integer. */
  {
    char *t = hs(P("{\"sub\":\"a\",\"exp\":%lld.0}", now + 60));
    hd_jwt_claims_t c;
    CHECK_INT(verify_str(v0, t, &c), HD_JWT_OK);
    CHECK_INT(c.exp, NOW + 60);
    free(t);
    t = hs(P("{\"sub\":\"a\",\"exp\":1.7e9,\"iat\":1.6e9}"));
    CHECK_INT(hd_jwt_verify(v0, t, strlen(t), 1699999999, &c), HD_JWT_OK);
    CHECK_INT(c.exp, 1700000000);
    CHECK_INT(c.iat, 1600000000);
    free(t);
  }

  /* nbf: valid once now >= nbf (- leeway). */
  EXPECT(v0, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":%lld}", now + 600, now)),
         HD_JWT_OK);
  EXPECT(v0, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":%lld}", now + 600, now - 100)),
         HD_JWT_OK);
  EXPECT(v0, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":%lld}", now + 600, now + 1)),
         HD_JWT_NOT_YET_VALID);
  EXPECT(v30, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":%lld}", now + 600, now + 30)),
         HD_JWT_OK);
  EXPECT(v30, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":%lld}", now + 600, now + 31)),
         HD_JWT_NOT_YET_VALID);
  EXPECT(v30,
         hs(P("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":9223372036854775807}", now + 600)),
         HD_JWT_NOT_YET_VALID);
  EXPECT(v0, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"nbf\":\"0\"}", now + 600)),
         HD_JWT_MALFORMED);
  EXPECT(v0, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"iat\":\"0\"}", now + 600)),
         HD_JWT_MALFORMED);
  /* iat in the future is reported, not judged. */
  {
    char *t = hs(P("{\"sub\":\"a\",\"exp\":%lld,\"iat\":%lld}", now + 600, now + 500));
    hd_jwt_claims_t c;
    CHECK_INT(verify_str(v0, t, &c), HD_JWT_OK);
    CHECK_INT(c.iat, NOW + 500);
    free(t);
  }
  hd_jwt_verifier_free(v0);
  hd_jwt_verifier_free(v30);
}

static void test_aud_iss(void) {
  hd_jwt_verifier_t *va = mk(HD_JWT_HS256, "herald", NULL, 0);
  hd_jwt_verifier_t *vi = mk(HD_JWT_HS256, NULL, "https://idp.example", 0);
  hd_jwt_verifier_t *vn = mk(HD_JWT_HS256, NULL, NULL, 0);
  hd_jwt_verifier_t *vb = mk(HD_JWT_ES256, "herald", "https://idp.example", 0);
  long long e = (long long)NOW + 60;

  EXPECT(va, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":\"herald\"}", e)), HD_JWT_OK);
  EXPECT(va, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":[\"x\",\"herald\"]}", e)),
         HD_JWT_OK);
  EXPECT(va, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":[\"herald\"]}", e)), HD_JWT_OK);
  EXPECT(va, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":\"other\"}", e)),
         HD_JWT_BAD_AUDIENCE);
  EXPECT(va, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":\"Herald\"}", e)),
         HD_JWT_BAD_AUDIENCE);
  EXPECT(va, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":\"herald2\"}", e)),
         HD_JWT_BAD_AUDIENCE);
  EXPECT(va, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":\"heral\"}", e)),
         HD_JWT_BAD_AUDIENCE);
  EXPECT(va, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":[\"x\",\"y\"]}", e)),
         HD_JWT_BAD_AUDIENCE);
  EXPECT(va, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":[]}", e)), HD_JWT_BAD_AUDIENCE);
  EXPECT(va, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":[\"herald\",5]}", e)),
         HD_JWT_BAD_AUDIENCE);
  EXPECT(va, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":[[\"herald\"]]}", e)),
         HD_JWT_BAD_AUDIENCE);
  EXPECT(va, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":5}", e)), HD_JWT_BAD_AUDIENCE);
  EXPECT(va, hs(P("{\"sub\":\"a\",\"exp\":%lld}", e)), HD_JWT_BAD_AUDIENCE);
  /* Not configured: aud is ignored, whatever its shape. */
  EXPECT(vn, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":\"other\"}", e)), HD_JWT_OK);
  EXPECT(vn, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":5}", e)), HD_JWT_OK);
  EXPECT(vi,
         hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":\"other\",\"iss\":"
              "\"https://idp.example\"}",
              e)),
         HD_JWT_OK);

  EXPECT(vi, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://idp.example\"}", e)),
         HD_JWT_OK);
  EXPECT(vi, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://idp.example/\"}", e)),
         HD_JWT_BAD_ISSUER);
  EXPECT(vi, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://evil.example\"}", e)),
         HD_JWT_BAD_ISSUER);
  EXPECT(vi, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"iss\":[\"https://idp.example\"]}", e)),
         HD_JWT_BAD_ISSUER);
  EXPECT(vi, hs(P("{\"sub\":\"a\",\"exp\":%lld}", e)), HD_JWT_BAD_ISSUER);
  EXPECT(vn, hs(P("{\"sub\":\"a\",\"exp\":%lld,\"iss\":7}", e)), HD_JWT_OK);

  EXPECT(vb,
         es(P("{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://idp.example\","
              "\"aud\":[\"herald\"]}",
              e)),
         HD_JWT_OK);
  EXPECT(vb, es(P("{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://idp.example\"}", e)),
         HD_JWT_BAD_AUDIENCE);
  EXPECT(vb, es(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":\"herald\"}", e)),
         HD_JWT_BAD_ISSUER);
  hd_jwt_verifier_free(va);
  hd_jwt_verifier_free(vi);
  hd_jwt_verifier_free(vn);
  hd_jwt_verifier_free(vb);
}

static void test_subject(void) {
  hd_jwt_verifier_t *v = mk(HD_JWT_HS256, NULL, NULL, 0);
  long long e = (long long)NOW + 60;
  char s128[129], s129[130];

  memset(s128, 'u', 128);
  s128[128] = '\0';
  memset(s129, 'u', 129);
  s129[129] = '\0';
  EXPECT(v, hs(P("{\"exp\":%lld}", e)), HD_JWT_BAD_SUBJECT);
  EXPECT(v, hs(P("{\"sub\":\"\",\"exp\":%lld}", e)), HD_JWT_BAD_SUBJECT);
  EXPECT(v, hs(P("{\"sub\":42,\"exp\":%lld}", e)), HD_JWT_BAD_SUBJECT);
  EXPECT(v, hs(P("{\"sub\":null,\"exp\":%lld}", e)), HD_JWT_BAD_SUBJECT);
  EXPECT(v, hs(P("{\"sub\":[\"a\"],\"exp\":%lld}", e)), HD_JWT_BAD_SUBJECT);
  EXPECT(v, hs(P("{\"sub\":{\"id\":\"a\"},\"exp\":%lld}", e)), HD_JWT_BAD_SUBJECT);
  EXPECT(v, hs(P("{\"sub\":\"%s\",\"exp\":%lld}", s129, e)), HD_JWT_BAD_SUBJECT);
  {
    char *t = hs(P("{\"sub\":\"%s\",\"exp\":%lld}", s128, e));
    hd_jwt_claims_t c;
    CHECK_INT(verify_str(v, t, &c), HD_JWT_OK);
    CHECK_STR(c.sub, s128);
    free(t);
  }
  /* 128 bytes counted as bytes: 64 two-byte characters fit, 65 do not. */
  {
    char buf[8 * 65 + 1] = "";
    for (int i = 0; i < 64; i++) strcat(buf, "\\u00e9");
    EXPECT(v, hs(P("{\"sub\":\"%s\",\"exp\":%lld}", buf, e)), HD_JWT_OK);
    strcat(buf, "\\u00e9");
    EXPECT(v, hs(P("{\"sub\":\"%s\",\"exp\":%lld}", buf, e)), HD_JWT_BAD_SUBJECT);
  }
  /* An embedded NUL could truncate the user id; the JSON layer refuses it. */
  EXPECT(v, hs(P("{\"sub\":\"admin\\u0000x\",\"exp\":%lld}", e)), HD_JWT_MALFORMED);
  hd_jwt_verifier_free(v);
}

/* Replaces the char at index i of a copy of tok. */
static char *poke(const char *tok, size_t i, char ch) {
  char *t = strdup(tok);
  t[i] = ch;
  return t;
}

static char *cat3(const char *a, const char *b, const char *c) {
  char *t = malloc(strlen(a) + strlen(b) + strlen(c) + 1);
  sprintf(t, "%s%s%s", a, b, c);
  return t;
}

static void test_malformed(void) {
  hd_jwt_verifier_t *v = mk(HD_JWT_HS256, NULL, NULL, 0);
  hd_jwt_verifier_t *vr = mk(HD_JWT_RS256, NULL, NULL, 0);
  char payload[128];
  char *good;
  size_t d1, d2, n;

  snprintf(payload, sizeof(payload), "{\"sub\":\"alice\",\"exp\":%lld}",
           (long long)NOW + 3600);
  good = hs(payload);
  n = strlen(good);
  d1 = (size_t)(strchr(good, '.') - good);
  d2 = (size_t)(strrchr(good, '.') - good);
  CHECK_INT(verify_str(v, good, NULL), HD_JWT_OK);

  /* Part counts. */
  EXPECT(v, strdup(""), HD_JWT_MALFORMED);
  EXPECT(v, strdup("abc"), HD_JWT_MALFORMED);
  EXPECT(v, strdup("."), HD_JWT_MALFORMED);
  EXPECT(v, strdup(".."), HD_JWT_MALFORMED);
  EXPECT(v, strdup("..."), HD_JWT_MALFORMED);
  {
    char *t = strdup(good);
    t[d2] = '\0'; /* two parts */
    EXPECT(v, t, HD_JWT_MALFORMED);
  }
  EXPECT(v, cat3(good, ".", ""), HD_JWT_MALFORMED);          /* four parts, last empty */
  EXPECT(v, cat3(good, ".", "AAAA"), HD_JWT_MALFORMED);      /* four parts */
  EXPECT(v, cat3(good, ".AAAA", ".AAAA"), HD_JWT_MALFORMED); /* five: JWE shape */
  EXPECT(v, cat3(".", good + d1 + 1, ""), HD_JWT_MALFORMED); /* empty header */
  {
    char *t = malloc(n + 1); /* empty payload */
    memcpy(t, good, d1 + 1);
    strcpy(t + d1 + 1, good + d2);
    EXPECT(v, t, HD_JWT_MALFORMED);
  }

  /* base64url: characters outside the alphabet in each part, padding, a length
   * of 1 mod 4, and non-zero trailing bits (a second spelling of the same bytes). */
  EXPECT(v, poke(good, 2, '+'), HD_JWT_MALFORMED);
  EXPECT(v, poke(good, 2, '/'), HD_JWT_MALFORMED);
  EXPECT(v, poke(good, 2, ' '), HD_JWT_MALFORMED);
  EXPECT(v, poke(good, d1 + 3, '!'), HD_JWT_MALFORMED);
  EXPECT(v, poke(good, d1 + 3, '\0'), HD_JWT_MALFORMED);
  EXPECT(v, poke(good, d2 + 3, '+'), HD_JWT_MALFORMED);
  EXPECT(v, poke(good, n - 1, '='), HD_JWT_MALFORMED);
  EXPECT(v, poke(good, d2 + 1, (char)0xC3), HD_JWT_MALFORMED);
  EXPECT(v, cat3(good, "=", ""), HD_JWT_MALFORMED);
  EXPECT(v, cat3(good, " ", ""), HD_JWT_MALFORMED);
  EXPECT(v, cat3(good, "\n", ""), HD_JWT_MALFORMED);
  EXPECT(v, cat3(" ", good, ""), HD_JWT_MALFORMED);
  {
    /* The signature is 32 bytes = 43 chars with 2 unused bits in the last one;
     * 'A' + 1 sets one of those bits and changes no decoded byte. */
    char *t = strdup(good);
    const char *tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int val = (int)(strchr(tab, t[n - 1]) - tab);
    CHECK_INT(n - d2 - 1, 43);
    CHECK_INT(val & 3, 0);
    t[n - 1] = tab[val | 1];
    EXPECT(v, t, HD_JWT_MALFORMED);
    /* 44 chars decode to 33 bytes: well-formed, but no HS256 signature. */
    EXPECT(v, cat3(good, "A", ""), HD_JWT_BAD_SIGNATURE);
  }
  {
    /* A header padded with '=': the standard base64 spelling. */
    char *h = b64s("{\"alg\":\"HS256\"}");   /* 15 bytes -> 20 chars, no pad needed */
    char *h2 = b64s("{\"alg\":\"HS256\" }"); /* 16 bytes -> 22 chars + "==" */
    char *t = malloc(n + 64);
    sprintf(t, "%s==%s", h2, good + d1);
    EXPECT(v, t, HD_JWT_MALFORMED);
    free(h);
    free(h2);
  }
  /* Deviant encodings of header and payload, each validly signed as sent: a
   * decoder that tolerated them would accept these tokens. */
  {
    char *h = b64s("{\"alg\":\"HS256\"}");    /* 15 bytes: 20 chars */
    char *h16 = b64s("{\"alg\":\"HS256\" }"); /* 16 bytes: 22 chars, 4 spare bits */
    char *p = b64s(payload);
    char buf[512];
    const char *tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    EXPECT(v, sign_parts(h, p), HD_JWT_OK); /* the control */
    snprintf(buf, sizeof(buf), "%sA", h);   /* 21 chars: 1 mod 4 */
    EXPECT(v, sign_parts(buf, p), HD_JWT_MALFORMED);
    snprintf(buf, sizeof(buf), "%sAAAAA", h);
    EXPECT(v, sign_parts(buf, p), HD_JWT_MALFORMED);
    {
      /* 33 bytes: 44 chars, so one more char is 1 mod 4 and decodes no byte. */
      char *p33 = b64s(P("{\"sub\":\"alice\", \"exp\":%lld}", (long long)NOW + 3600));
      CHECK_INT(strlen(p33), 44);
      EXPECT(v, sign_parts(h, p33), HD_JWT_OK);
      snprintf(buf, sizeof(buf), "%sA", p33);
      EXPECT(v, sign_parts(h, buf), HD_JWT_MALFORMED);
      free(p33);
    }
    snprintf(buf, sizeof(buf), "%s==", h16); /* standard padding */
    EXPECT(v, sign_parts(buf, p), HD_JWT_MALFORMED);
    EXPECT(v, sign_parts(h16, p), HD_JWT_OK);
    snprintf(buf, sizeof(buf), "%s", h16); /* a spare bit set */
    buf[21] = tab[(strchr(tab, buf[21]) - tab) | 1];
    EXPECT(v, sign_parts(buf, p), HD_JWT_MALFORMED);
    snprintf(buf, sizeof(buf), "%s", h); /* standard alphabet instead of url-safe */
    for (char *q = buf; *q; q++) {
      if (*q == '-') *q = '+';
      if (*q == '_') *q = '/';
    }
    free(h);
    h = b64s("{\"alg\":\"HS256\",\"x\":\"\xfb\xff\"}"); /* encodes to '-'/'_' */
    CHECK(strpbrk(h, "-_") != NULL);
    snprintf(buf, sizeof(buf), "%s", h);
    for (char *q = buf; *q; q++) {
      if (*q == '-') *q = '+';
      if (*q == '_') *q = '/';
    }
    EXPECT(v, sign_parts(buf, p), HD_JWT_MALFORMED);
    free(h);
    free(h16);
    free(p);
  }

  /* JSON. */
  EXPECT(v, make_token("not json", payload, SIG_HS256, SECRET, SECRET_LEN, NULL),
         HD_JWT_MALFORMED);
  EXPECT(v, make_token("[\"HS256\"]", payload, SIG_HS256, SECRET, SECRET_LEN, NULL),
         HD_JWT_MALFORMED);
  EXPECT(v, make_token("\"HS256\"", payload, SIG_HS256, SECRET, SECRET_LEN, NULL),
         HD_JWT_MALFORMED);
  EXPECT(v,
         make_token("{\"alg\":\"HS256\"", payload, SIG_HS256, SECRET, SECRET_LEN, NULL),
         HD_JWT_MALFORMED);
  EXPECT(v,
         make_token("{\"alg\":\"HS256\"}x", payload, SIG_HS256, SECRET, SECRET_LEN, NULL),
         HD_JWT_MALFORMED);
  EXPECT(v,
         make_token("{\"alg\":\"none\",\"alg\":\"HS256\"}", payload, SIG_HS256, SECRET,
                    SECRET_LEN, NULL),
         HD_JWT_MALFORMED);
  EXPECT(v,
         make_token("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", payload, SIG_HS256, SECRET,
                    SECRET_LEN, NULL),
         HD_JWT_MALFORMED);
  /* crit names extensions we do not implement: RFC 7515 4.1.11 says reject. */
  EXPECT(v,
         make_token("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", payload,
                    SIG_HS256, SECRET, SECRET_LEN, NULL),
         HD_JWT_MALFORMED);
  /* Properly signed payloads that are not a JSON object. */
  EXPECT(v, hs("[\"sub\",\"alice\"]"), HD_JWT_MALFORMED);
  EXPECT(v, hs("\"alice\""), HD_JWT_MALFORMED);
  EXPECT(v, hs("42"), HD_JWT_MALFORMED);
  EXPECT(v, hs("null"), HD_JWT_MALFORMED);
  EXPECT(v, hs("{\"sub\":\"alice\""), HD_JWT_MALFORMED);
  EXPECT(v, hs(P("{\"sub\":\"alice\",\"exp\":%lld}{}", (long long)NOW + 60)),
         HD_JWT_MALFORMED);
  EXPECT(v,
         hs(P("{\"sub\":\"alice\",\"exp\":%lld,\"sub\":\"admin\"}", (long long)NOW + 60)),
         HD_JWT_MALFORMED);
  EXPECT(v, hs(P("{\"sub\":\"al\xff\",\"exp\":%lld}", (long long)NOW + 60)),
         HD_JWT_MALFORMED);
  EXPECT(v, hs(P("{'sub':'alice','exp':%lld}", (long long)NOW + 60)), HD_JWT_MALFORMED);

  /* Size: 8192 bytes is accepted, 8193 refused unparsed, even if validly signed. */
  {
    char *t = NULL;
    size_t want = HD_JWT_MAX_TOKEN, fill = 0;
    /* Grow the padding claim until the token is exactly the maximum length. */
    for (fill = 5000; fill < 7000; fill++) {
      char *pad = malloc(fill + 1);
      memset(pad, 'x', fill);
      pad[fill] = '\0';
      t = hs(P("{\"sub\":\"a\",\"exp\":%lld,\"pad\":\"%s\"}", (long long)NOW + 60, pad));
      free(pad);
      if (strlen(t) >= want) break;
      free(t);
      t = NULL;
    }
    CHECK(t != NULL);
    if (t != NULL) {
      size_t len = strlen(t);
      CHECK_INT(len, want); /* payload lengths step by 1 or 2 chars; 8192 is hit */
      CHECK_INT(verify_str(v, t, NULL), HD_JWT_OK);
      free(t);
      /* The next size up is over the limit, validly signed or not. */
      char *pad = malloc(fill + 2);
      memset(pad, 'x', fill + 1);
      pad[fill + 1] = '\0';
      t = hs(P("{\"sub\":\"a\",\"exp\":%lld,\"pad\":\"%s\"}", (long long)NOW + 60, pad));
      free(pad);
      CHECK(strlen(t) > want);
      CHECK_INT(verify_str(v, t, NULL), HD_JWT_MALFORMED);
      free(t);
    }
    char *huge = malloc(1 << 20);
    memset(huge, 'A', (1 << 20) - 1);
    huge[(1 << 20) - 1] = '\0';
    huge[100] = '.';
    huge[200] = '.';
    EXPECT(v, huge, HD_JWT_MALFORMED);
  }
  /* A NULL token or zero length. */
  CHECK_INT(hd_jwt_verify(v, NULL, 0, NOW, NULL), HD_JWT_MALFORMED);
  CHECK_INT(hd_jwt_verify(v, good, 0, NOW, NULL), HD_JWT_MALFORMED);
  /* Every proper prefix of a good token is refused, never accepted. */
  {
    int accepted = 0;
    for (size_t i = 0; i < n; i++)
      if (hd_jwt_verify(v, good, i, NOW, NULL) == HD_JWT_OK) accepted++;
    CHECK_INT(accepted, 0);
  }
  /* RS256 verifier: the same structural checks come first. */
  EXPECT(vr, strdup("a.b"), HD_JWT_MALFORMED);
  EXPECT(vr, make_token("[]", payload, SIG_NONE, NULL, 0, NULL), HD_JWT_MALFORMED);
  free(good);
  hd_jwt_verifier_free(v);
  hd_jwt_verifier_free(vr);
}

static int try_new(hd_jwt_config_t cfg, char *err, size_t errlen) {
  hd_jwt_verifier_t *v = (hd_jwt_verifier_t *)&cfg; /* must be reset to NULL */
  int rc;

  err[0] = '\0';
  rc = hd_jwt_verifier_new(&cfg, &v, err, errlen);
  if (rc != 0) {
    CHECK(v == NULL);
    CHECK(err[0] != '\0');
  } else {
    CHECK(v != NULL);
  }
  hd_jwt_verifier_free(v);
  return rc;
}

static void test_config(void) {
  char err[256];
  uint8_t secret[64];
  hd_jwt_config_t hs_cfg = {.alg = HD_JWT_HS256, .secret = secret, .secret_len = 32};
  hd_jwt_config_t c;
  EVP_PKEY *small_rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
  EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
  EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  char *small_pem = pem_of(small_rsa), *p384_pem = pem_of(p384), *ed_pem = pem_of(ed);

  memset(secret, 's', sizeof(secret));
  CHECK_INT(try_new(hs_cfg, err, sizeof(err)), 0);
  c = hs_cfg;
  c.secret_len = 31;
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  CHECK(strstr(err, "32") != NULL);
  c.secret_len = 0;
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  c = hs_cfg;
  c.secret = NULL;
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  c = hs_cfg;
  c.secret_len = 64;
  CHECK_INT(try_new(c, err, sizeof(err)), 0);

  c = hs_cfg;
  c.leeway_s = 60;
  CHECK_INT(try_new(c, err, sizeof(err)), 0);
  c.leeway_s = 61;
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  c.leeway_s = 3600;
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  c = hs_cfg;
  c.alg = (hd_jwt_alg_t)7;
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  c = hs_cfg;
  c.audience = "";
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  c = hs_cfg;
  c.issuer = "";
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  CHECK_INT(hd_jwt_verifier_new(NULL, &(hd_jwt_verifier_t *){NULL}, err, sizeof(err)),
            HD_EINVAL);
  /* err may be NULL. */
  {
    hd_jwt_verifier_t *v = NULL;
    c = hs_cfg;
    c.secret_len = 1;
    CHECK_INT(hd_jwt_verifier_new(&c, &v, NULL, 0), HD_EINVAL);
    CHECK(v == NULL);
  }

  /* Keys: right type and size only. */
  hd_jwt_config_t rs_cfg = {.alg = HD_JWT_RS256, .public_key_pem = rsa_pem};
  hd_jwt_config_t es_cfg = {.alg = HD_JWT_ES256, .public_key_pem = ec_pem};
  CHECK_INT(try_new(rs_cfg, err, sizeof(err)), 0);
  CHECK_INT(try_new(es_cfg, err, sizeof(err)), 0);
  c = rs_cfg;
  c.public_key_pem = ec_pem;
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  c.public_key_pem = small_pem;
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  c.public_key_pem = ed_pem;
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  c = es_cfg;
  c.public_key_pem = rsa_pem;
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  c.public_key_pem = p384_pem;
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  c.public_key_pem = ed_pem;
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  c.public_key_pem = NULL;
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  c.public_key_pem = "";
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  c.public_key_pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  /* An HS256 secret does not make an RS256 verifier. */
  c = rs_cfg;
  c.public_key_pem = NULL;
  c.secret = secret;
  c.secret_len = 64;
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  /* Failed PEM parsing leaves the thread's OpenSSL error queue as it was. */
  ERR_clear_error();
  c = es_cfg;
  c.public_key_pem = "garbage";
  CHECK_INT(try_new(c, err, sizeof(err)), HD_EINVAL);
  CHECK_INT(ERR_peek_error(), 0);

  /* Configuration strings and the secret are copied. */
  {
    char aud[] = "herald", iss[] = "idp";
    uint8_t sec[32];
    hd_jwt_verifier_t *v = NULL;
    memcpy(sec, SECRET, 32);
    c = (hd_jwt_config_t){.alg = HD_JWT_HS256,
                          .secret = sec,
                          .secret_len = 32,
                          .audience = aud,
                          .issuer = iss};
    CHECK_INT(hd_jwt_verifier_new(&c, &v, err, sizeof(err)), 0);
    memset(sec, 0, sizeof(sec));
    memset(aud, 'z', 6);
    memset(iss, 'z', 3);
    EXPECT(v,
           hs(P("{\"sub\":\"a\",\"exp\":%lld,\"aud\":\"herald\",\"iss\":\"idp\"}",
                (long long)NOW + 9)),
           HD_JWT_OK);
    hd_jwt_verifier_free(v);
    char *pem = strdup(rsa_pem);
    c = rs_cfg;
    c.public_key_pem = pem;
    CHECK_INT(hd_jwt_verifier_new(&c, &v, err, sizeof(err)), 0);
    memset(pem, 0, strlen(pem));
    free(pem);
    EXPECT(v, rs(P("{\"sub\":\"a\",\"exp\":%lld}", (long long)NOW + 9)), HD_JWT_OK);
    hd_jwt_verifier_free(v);
  }
  hd_jwt_verifier_free(NULL);

  EVP_PKEY_free(small_rsa);
  EVP_PKEY_free(p384);
  EVP_PKEY_free(ed);
  free(small_pem);
  free(p384_pem);
  free(ed_pem);
}

static json_t *decode_payload(const char *tok) {
  const char *p = strchr(tok, '.') + 1, *e = strchr(p, '.');
  size_t n;
  uint8_t *raw = unb64(p, (size_t)(e - p), &n);
  json_t *j = json_loadb((const char *)raw, n, 0, NULL);
  free(raw);
  return j;
}

static void test_sign(void) {
  hd_jwt_verifier_t *v = mk(HD_JWT_HS256, NULL, NULL, 0);
  hd_jwt_verifier_t *vai = mk(HD_JWT_HS256, "herald", "https://idp.example", 0);
  hd_jwt_verifier_t *vother = mk(HD_JWT_HS256, "other", "https://idp.example", 0);
  hd_jwt_verifier_t *vr = mk(HD_JWT_RS256, NULL, NULL, 0);
  hd_jwt_claims_t c;
  char *tok;
  json_t *j;

  tok = hd_jwt_sign_hs256(v, "alice", NOW, NOW + 3600);
  CHECK(tok != NULL);
  CHECK_INT(verify_str(v, tok, &c), HD_JWT_OK);
  CHECK_STR(c.sub, "alice");
  CHECK_INT(c.exp, NOW + 3600);
  CHECK_INT(c.iat, NOW);
  j = decode_payload(tok);
  CHECK(j != NULL);
  CHECK(json_object_get(j, "aud") == NULL);
  CHECK(json_object_get(j, "iss") == NULL);
  CHECK_INT(json_object_size(j), 3);
  json_decref(j);
  /* The signature matches an independent HMAC over header.payload. */
  {
    char *input = strdup(tok);
    *strrchr(input, '.') = '\0';
    size_t sl;
    uint8_t *sig = sign_raw(SIG_HS256, SECRET, SECRET_LEN, NULL, input, &sl);
    char *enc = b64(sig, sl);
    CHECK_STR(strrchr(tok, '.') + 1, enc);
    free(input);
    free(sig);
    free(enc);
  }
  /* Expired as signed, at the verifier's clock. */
  CHECK_INT(hd_jwt_verify(v, tok, strlen(tok), NOW + 3600, NULL), HD_JWT_EXPIRED);
  free(tok);

  tok = hd_jwt_sign_hs256(vai, "bob", NOW, NOW + 60);
  CHECK(tok != NULL);
  CHECK_INT(verify_str(vai, tok, &c), HD_JWT_OK);
  CHECK_STR(c.sub, "bob");
  j = decode_payload(tok);
  CHECK_STR(json_string_value(json_object_get(j, "aud")), "herald");
  CHECK_STR(json_string_value(json_object_get(j, "iss")), "https://idp.example");
  json_decref(j);
  CHECK_INT(verify_str(vother, tok, NULL), HD_JWT_BAD_AUDIENCE);
  CHECK_INT(verify_str(v, tok, NULL), HD_JWT_OK); /* same secret, nothing configured */
  free(tok);

  /* Escaping: the sub survives JSON quoting. */
  tok = hd_jwt_sign_hs256(v, "a\"b\\c\n\xc3\xa9", NOW, NOW + 60);
  CHECK(tok != NULL);
  CHECK_INT(verify_str(v, tok, &c), HD_JWT_OK);
  CHECK_STR(c.sub, "a\"b\\c\n\xc3\xa9");
  free(tok);

  /* What the verifier would refuse is not signed. */
  {
    char s129[130];
    memset(s129, 'x', 129);
    s129[129] = '\0';
    CHECK(hd_jwt_sign_hs256(v, s129, NOW, NOW + 60) == NULL);
    s129[128] = '\0';
    tok = hd_jwt_sign_hs256(v, s129, NOW, NOW + 60);
    CHECK(tok != NULL);
    CHECK_INT(verify_str(v, tok, NULL), HD_JWT_OK);
    free(tok);
  }
  CHECK(hd_jwt_sign_hs256(v, "", NOW, NOW + 60) == NULL);
  CHECK(hd_jwt_sign_hs256(v, NULL, NOW, NOW + 60) == NULL);
  CHECK(hd_jwt_sign_hs256(v, "bad\xff", NOW, NOW + 60) == NULL);
  CHECK(hd_jwt_sign_hs256(vr, "alice", NOW, NOW + 60) == NULL);
  CHECK(hd_jwt_sign_hs256(NULL, "alice", NOW, NOW + 60) == NULL);

  hd_jwt_verifier_free(v);
  hd_jwt_verifier_free(vai);
  hd_jwt_verifier_free(vother);
  hd_jwt_verifier_free(vr);
}

static void test_secret_equal(void) {
  CHECK(hd_secret_equal("key-123", 7, "key-123", 7));
  CHECK(!hd_secret_equal("key-123", 7, "key-124", 7));
  CHECK(!hd_secret_equal("key-123", 7, "Key-123", 7));
  CHECK(!hd_secret_equal("key-123", 7, "key-12", 6));
  CHECK(!hd_secret_equal("key-12", 6, "key-123", 7));
  CHECK(!hd_secret_equal("key-123", 7, "key-1234", 8));
  CHECK(hd_secret_equal("", 0, "", 0));
  CHECK(hd_secret_equal(NULL, 0, "", 0));
  CHECK(!hd_secret_equal("", 0, "a", 1));
  CHECK(!hd_secret_equal("a", 1, NULL, 0));
  /* Lengths are honoured: bytes past len do not count, NULs inside do. */
  CHECK(hd_secret_equal("abcX", 3, "abcY", 3));
  CHECK(hd_secret_equal("a\0b", 3, "a\0b", 3));
  CHECK(!hd_secret_equal("a\0b", 3, "a\0c", 3));
  CHECK(!hd_secret_equal("a\0b", 3, "a", 1));
}

static void test_reason_names(void) {
  static const struct {
    hd_jwt_reason_t r;
    const char *name;
  } names[] = {
      {HD_JWT_OK, "ok"},
      {HD_JWT_MALFORMED, "malformed"},
      {HD_JWT_BAD_ALG, "bad_alg"},
      {HD_JWT_BAD_SIGNATURE, "bad_signature"},
      {HD_JWT_EXPIRED, "expired"},
      {HD_JWT_MISSING_EXP, "missing_exp"},
      {HD_JWT_NOT_YET_VALID, "not_yet_valid"},
      {HD_JWT_BAD_AUDIENCE, "bad_audience"},
      {HD_JWT_BAD_ISSUER, "bad_issuer"},
      {HD_JWT_BAD_SUBJECT, "bad_subject"},
  };
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    CHECK_STR(hd_jwt_reason_name(names[i].r), names[i].name);
  CHECK_STR(hd_jwt_reason_name((hd_jwt_reason_t)99), "unknown");
}

/* ---- concurrency ---------------------------------------------------------- */

typedef struct {
  const hd_jwt_verifier_t *v[3];
  char *good[3];
  char *bad[3];
  int failures;
} thread_arg_t;

static void *verify_thread(void *p) {
  thread_arg_t *a = p;
  hd_jwt_claims_t c;

  for (int i = 0; i < 1000; i++) {
    int k = i % 3;
    memset(&c, 0, sizeof(c));
    if (hd_jwt_verify(a->v[k], a->good[k], strlen(a->good[k]), NOW, &c) != HD_JWT_OK ||
        strcmp(c.sub, "carol") != 0 || c.exp != NOW + 3600)
      a->failures++;
    /* Interleave a refusal so failing paths also run concurrently. */
    if (i % 10 == 0 && hd_jwt_verify(a->v[k], a->bad[k], strlen(a->bad[k]), NOW, &c) !=
                           HD_JWT_BAD_SIGNATURE)
      a->failures++;
  }
  return NULL;
}

static void test_threads(void) {
  hd_jwt_verifier_t *vs[3] = {mk(HD_JWT_HS256, NULL, NULL, 0),
                              mk(HD_JWT_RS256, NULL, NULL, 0),
                              mk(HD_JWT_ES256, NULL, NULL, 0)};
  const char *pl = P("{\"sub\":\"carol\",\"exp\":%lld}", (long long)NOW + 3600);
  char *good[3] = {hs(pl), rs(pl), es(pl)};
  char *bad[3];
  thread_arg_t args[4];
  pthread_t th[4];

  for (int k = 0; k < 3; k++) bad[k] = flip(good[k], 2, 5);
  for (int i = 0; i < 4; i++) {
    args[i] = (thread_arg_t){.failures = 0};
    for (int k = 0; k < 3; k++) {
      args[i].v[k] = vs[k];
      args[i].good[k] = good[k];
      args[i].bad[k] = bad[k];
    }
    CHECK_INT(pthread_create(&th[i], NULL, verify_thread, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    CHECK_INT(pthread_join(th[i], NULL), 0);
    CHECK_INT(args[i].failures, 0);
  }
  for (int k = 0; k < 3; k++) {
    free(good[k]);
    free(bad[k]);
    hd_jwt_verifier_free(vs[k]);
  }
}

int main(void) {
  rsa_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  ec_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  if (rsa_key == NULL || ec_key == NULL) {
    fprintf(stderr, "key generation failed\n");
    return 1;
  }
  rsa_pem = pem_of(rsa_key);
  ec_pem = pem_of(ec_key);

  test_valid();
  test_bad_alg();
  test_bad_signature();
  test_time();
  test_aud_iss();
  test_subject();
  test_malformed();
  test_config();
  test_sign();
  test_secret_equal();
  test_reason_names();
  test_threads();

  free(rsa_pem);
  free(ec_pem);
  EVP_PKEY_free(rsa_key);
  EVP_PKEY_free(ec_key);
  TEST_MAIN_END();
}
