/* Tests for the pure parts of src/agent/webhook.c: the X-Herald-Signature
 * value and the request bodies it signs.
 *
 * The signature is checked against the HMAC-SHA256 vectors of RFC 4231
 * (cases 1, 2, 6 and 7: short key, short text, and keys longer than the hash
 * block, which HMAC must hash first) and against a value computed
 * independently with Python's hmac module for a webhook-like body. The bodies
 * are checked byte for byte, since the backend verifies the signature over
 * the exact bytes it receives. */
#include <stdint.h>
#include <string.h>

#include "agent/webhook.h"
#include "herald/herald.h"
#include "support/unit.h"

typedef struct {
  const char *name;
  uint8_t key[160];
  size_t key_len;
  const char *data;
  const char *hex;
} vector_t;

static void fill(uint8_t *k, uint8_t b, size_t n) {
  memset(k, b, n);
}

static void test_rfc4231(void) {
  static vector_t v[4];
  char out[HD_WEBHOOK_SIG_LEN + 1], want[HD_WEBHOOK_SIG_LEN + 1];

  v[0] = (vector_t){"case 1",
                    {0},
                    20,
                    "Hi There",
                    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"};
  fill(v[0].key, 0x0b, 20);
  v[1] = (vector_t){"case 2", "Jefe", 4, "what do ya want for nothing?",
                    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"};
  v[2] = (vector_t){"case 6",
                    {0},
                    131,
                    "Test Using Larger Than Block-Size Key - Hash Key First",
                    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"};
  fill(v[2].key, 0xaa, 131);
  v[3] =
      (vector_t){"case 7",
                 {0},
                 131,
                 "This is a test using a larger than block-size key and a larger than "
                 "block-size data. The key needs to be hashed before being used by the "
                 "HMAC algorithm.",
                 "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"};
  fill(v[3].key, 0xaa, 131);

  for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
    memset(out, 'Z', sizeof(out));
    CHECK_INT(hd_webhook_sign(v[i].key, v[i].key_len, (const uint8_t *)v[i].data,
                              strlen(v[i].data), out),
              0);
    snprintf(want, sizeof(want), "sha256=%s", v[i].hex);
    CHECK_STR(out, want);
    CHECK_INT(strlen(out), HD_WEBHOOK_SIG_LEN);
  }
}

/* python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec-test", BODY, hashlib.sha256)
 * .hexdigest())' with BODY the user_message body below. */
static void test_body_and_signature(void) {
  hd_run_t run = {0};
  char out[HD_WEBHOOK_SIG_LEN + 1];
  char *body;

  run.ctx.user_id = "alice";
  run.ctx.thread_id = "t1";
  run.ctx.run_id = "hr-0-0011223344556677";
  run.input = "what is 12*7? \"quoted\" \xc3\xa9";
  run.message_id = "m1";

  body = hd_webhook_body(&run, false);
  CHECK_STR(body, "{\"type\":\"user_message\",\"user_id\":\"alice\",\"thread_id\":\"t1\","
                  "\"run_id\":\"hr-0-0011223344556677\",\"message_id\":\"m1\","
                  "\"text\":\"what is 12*7? \\\"quoted\\\" \xc3\xa9\"}");
  CHECK_INT(hd_webhook_sign((const uint8_t *)"whsec-test", 10, (const uint8_t *)body,
                            body ? strlen(body) : 0, out),
            0);
  CHECK_STR(out,
            "sha256=3f01e47c911484544d56266a0b13eb5296c359d9cdc03106c4dcdd1ffd609e65");
  free(body);

  body = hd_webhook_body(&run, true);
  CHECK_STR(body, "{\"type\":\"cancel\",\"user_id\":\"alice\",\"thread_id\":\"t1\","
                  "\"run_id\":\"hr-0-0011223344556677\"}");
  free(body);

  /* No client id: an empty string, never a missing key. */
  run.message_id = "";
  body = hd_webhook_body(&run, false);
  CHECK(body != NULL && strstr(body, "\"message_id\":\"\"") != NULL);
  free(body);

  /* Text that is not UTF-8 cannot be put in JSON: no body, not a broken one. */
  run.input = "bad \xff";
  CHECK(hd_webhook_body(&run, false) == NULL);
}

static void test_empty_inputs(void) {
  char out[HD_WEBHOOK_SIG_LEN + 1];

  /* HMAC-SHA256 with an empty key over an empty message (a known value). */
  CHECK_INT(hd_webhook_sign(NULL, 0, NULL, 0, out), 0);
  CHECK_STR(out,
            "sha256=b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

int main(void) {
  test_rfc4231();
  test_body_and_signature();
  test_empty_inputs();
  TEST_MAIN_END();
}
