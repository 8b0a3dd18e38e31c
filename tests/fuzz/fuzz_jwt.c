/* libFuzzer target for JWT verification and signing (src/auth/jwt.c).
 *
 * Byte 0 chooses the mode; the rest is the input:
 *   0 (and 5..255): the bytes are a token, given to an HS256, RS256 and ES256
 *      verifier; only a token the HS256 secret signed can pass, and the seed
 *      corpus holds such tokens so mutations start from the signed path;
 *   1: the bytes are the payload JSON, signed properly with HS256 under a fixed
 *      header, so claim parsing runs past the signature check;
 *   2: the bytes are the header JSON over a fixed valid payload, signed with
 *      HS256, so the alg/crit handling of the header runs past parsing;
 *   3: the bytes are a subject for hd_jwt_sign_hs256, whose token must verify
 *      back to the same subject whenever signing succeeds;
 *   4: the bytes, split in two halves, go to hd_secret_equal, which must agree
 *      with memcmp.
 * Verifiers are created once (the RS256/ES256 keys are fixed public keys whose
 * private halves were discarded). Every OK result is checked against the
 * header's promises about the claims; a violation aborts. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth/jwt.h"
#include "herald/herald.h"
#include "support/fuzz.h"

#define NOW INT64_C(1700000000)

static const char SECRET[] = "fuzz-secret-0123456789abcdefghij"; /* 32 bytes */

static const char RSA_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAofI/E1ebwJmcJg8PKpDu\n"
    "ktrWB1Gr3aMIbmCuBjUjlEVW5wYxv3Ewfz/sxDZz2UnG8iSAANZnEJS4BMW25lyJ\n"
    "1rr92iG3PNltUjcFtggg46LzjJg4r+mKfQulzdsOEZKPeFpQl71iI4ualeAUkaLX\n"
    "jBEWJ8D359A3/iS67jNiaqhTzjIhn2reLgufbTDTo3CDmsxGqgC+uZb9gwfP6DIx\n"
    "eN7Y91rnPrdokKwm2UO1cjkFx0ysyJpTlOX2QPiPgcyjULijf9GnS/JVCVpEmeQn\n"
    "VkceVgQ7Vwtfab/KcsbWlEzPAnImkaiyajx/zurczCE/YHRij/55Qb74oKrZnFK5\n"
    "vQIDAQAB\n"
    "-----END PUBLIC KEY-----\n";

static const char EC_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEiWsx6TGEYVq8euxtidwf1c0VHH84\n"
    "HP3hx278ORbS/9MGbIwCYWalgLX2evjYjJP3jpHkhpI4wlq5kyPD8nfvdw==\n"
    "-----END PUBLIC KEY-----\n";

enum { V_HS, V_HS_AUD_ISS, V_RS, V_ES, V_COUNT };
static hd_jwt_verifier_t *verifiers[V_COUNT];

static hd_jwt_verifier_t *make(hd_jwt_alg_t alg, const char *pem, const char *aud,
                               const char *iss, unsigned leeway) {
  hd_jwt_config_t cfg = {.alg = alg,
                         .secret = (const uint8_t *)SECRET,
                         .secret_len = sizeof(SECRET) - 1,
                         .public_key_pem = pem,
                         .audience = aud,
                         .issuer = iss,
                         .leeway_s = leeway};
  hd_jwt_verifier_t *v = NULL;
  char err[128];

  if (hd_jwt_verifier_new(&cfg, &v, err, sizeof(err)) != 0) {
    fprintf(stderr, "fuzz_jwt: verifier: %s\n", err);
    abort();
  }
  return v;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  verifiers[V_HS] = make(HD_JWT_HS256, NULL, NULL, NULL, 0);
  verifiers[V_HS_AUD_ISS] = make(HD_JWT_HS256, NULL, "herald", "https://idp.example", 60);
  verifiers[V_RS] = make(HD_JWT_RS256, RSA_PEM, NULL, NULL, 0);
  verifiers[V_ES] = make(HD_JWT_ES256, EC_PEM, "herald", NULL, 30);
  return 0;
}

static size_t b64url(const uint8_t *in, size_t len, char *out) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  uint32_t acc = 0;
  int bits = 0;
  size_t n = 0;

  for (size_t i = 0; i < len; i++) {
    acc = acc << 8 | in[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out[n++] = tab[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out[n++] = tab[(acc << (6 - bits)) & 63];
  return n;
}

/* Builds b64(header).b64(payload).b64(HMAC) into a malloc'ed buffer. */
static char *sign(const uint8_t *h, size_t hlen, const uint8_t *p, size_t plen,
                  size_t *out_len) {
  char *tok = malloc((hlen + plen + 32) * 4 / 3 + 16);
  uint8_t mac[EVP_MAX_MD_SIZE];
  unsigned mac_len = 0;
  size_t n;

  n = b64url(h, hlen, tok);
  tok[n++] = '.';
  n += b64url(p, plen, tok + n);
  REQUIRE(HMAC(EVP_sha256(), SECRET, sizeof(SECRET) - 1, (const uint8_t *)tok, n, mac,
               &mac_len) != NULL);
  tok[n++] = '.';
  n += b64url(mac, mac_len, tok + n);
  *out_len = n;
  return tok;
}

/* What an accepted token promises (jwt.h). */
static void check_ok(hd_jwt_reason_t r, const hd_jwt_claims_t *c, int64_t now,
                     unsigned leeway) {
  size_t n;

  REQUIRE((int)r >= HD_JWT_OK && (int)r <= HD_JWT_BAD_SUBJECT);
  REQUIRE(strcmp(hd_jwt_reason_name(r), "unknown") != 0);
  if (r != HD_JWT_OK) return;
  n = strnlen(c->sub, sizeof(c->sub));
  REQUIRE(n >= 1 && n <= HD_JWT_MAX_SUB);
  REQUIRE(c->exp > now - (int64_t)leeway); /* the times used keep this in range */
}

static void verify_all(const char *tok, size_t len) {
  static const unsigned leeways[V_COUNT] = {0, 60, 0, 30};
  static const int64_t times[] = {NOW, 0, INT64_MAX, INT64_MIN + 100};
  hd_jwt_claims_t c;
  hd_jwt_reason_t r;

  for (int i = 0; i < V_COUNT; i++) {
    for (size_t t = 0; t < sizeof(times) / sizeof(times[0]); t++) {
      memset(&c, 0xAA, sizeof(c));
      r = hd_jwt_verify(verifiers[i], tok, len, times[t], &c);
      check_ok(r, &c, times[t], leeways[i]);
      /* A token that is not signed by the HS256 secret can never pass. */
      if (i == V_RS || i == V_ES) REQUIRE(r != HD_JWT_OK);
      if (len > HD_JWT_MAX_TOKEN) REQUIRE(r == HD_JWT_MALFORMED);
      /* The result does not depend on whether claims are wanted. */
      REQUIRE(hd_jwt_verify(verifiers[i], tok, len, times[t], NULL) == r);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char fixed_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
  static const char fixed_payload[] = "{\"sub\":\"fuzz\",\"exp\":1700003600,\"aud\":"
                                      "\"herald\",\"iss\":\"https://idp.example\"}";
  char *tok;
  size_t len;

  if (size == 0) return 0;
  switch (data[0]) {
  case 1:
    tok = sign((const uint8_t *)fixed_header, sizeof(fixed_header) - 1, data + 1,
               size - 1, &len);
    verify_all(tok, len);
    free(tok);
    break;
  case 2:
    tok = sign(data + 1, size - 1, (const uint8_t *)fixed_payload,
               sizeof(fixed_payload) - 1, &len);
    verify_all(tok, len);
    free(tok);
    break;
  case 3: {
    char *sub = malloc(size);
    hd_jwt_claims_t c;
    memcpy(sub, data + 1, size - 1);
    sub[size - 1] = '\0';
    for (int i = V_HS; i <= V_HS_AUD_ISS; i++) {
      tok = hd_jwt_sign_hs256(verifiers[i], sub, NOW, NOW + 60);
      if (tok != NULL) {
        REQUIRE(hd_jwt_verify(verifiers[i], tok, strlen(tok), NOW, &c) == HD_JWT_OK);
        REQUIRE(strcmp(c.sub, sub) == 0);
        REQUIRE(c.exp == NOW + 60 && c.iat == NOW);
        REQUIRE(hd_jwt_verify(verifiers[V_RS], tok, strlen(tok), NOW, &c) ==
                HD_JWT_BAD_ALG);
        free(tok);
      } else {
        /* Refused only for what the verifier would refuse: an empty or
         * over-long sub, or one that is not UTF-8 (which JSON cannot carry). */
        size_t n = strlen(sub);
        json_t *j = json_string(sub);
        REQUIRE(n == 0 || n > HD_JWT_MAX_SUB || j == NULL);
        json_decref(j);
      }
    }
    REQUIRE(hd_jwt_sign_hs256(verifiers[V_RS], "x", NOW, NOW + 60) == NULL);
    free(sub);
    break;
  }
  case 4: {
    size_t half = (size - 1) / 2, blen = size - 1 - half;
    const char *a = (const char *)data + 1, *b = a + half;
    REQUIRE(hd_secret_equal(a, half, b, blen) ==
            (half == blen && memcmp(a, b, half) == 0));
    REQUIRE(hd_secret_equal(a, half, a, half));
    break;
  }
  default:
    verify_all((const char *)data + 1, size - 1);
    break;
  }
  return 0;
}
