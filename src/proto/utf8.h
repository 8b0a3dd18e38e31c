/* Incremental UTF-8 validation (RFC 3629), used for WebSocket text messages.
 *
 * The validator is a small state machine that can be fed a message in any number
 * of pieces and rejects at the first byte that cannot begin or continue a valid
 * sequence: overlong forms, UTF-16 surrogates (U+D800..U+DFFF), code points above
 * U+10FFFF, bytes C0, C1 and F5..FF, and stray continuation bytes. Noncharacters
 * such as U+FFFE and U+10FFFF are valid UTF-8 and are accepted. No I/O, no
 * allocation.
 */
#ifndef HD_PROTO_UTF8_H
#define HD_PROTO_UTF8_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* Validator state. HD_UTF8_ACCEPT (0) means "at a code point boundary". */
typedef uint8_t hd_utf8_state_t;
#define HD_UTF8_ACCEPT 0

/* Feeds len bytes. Returns 0 if every byte so far is valid (the state may still
 * be inside a sequence), or HD_EUTF8 at the first invalid byte; *st is then
 * unspecified. */
int hd_utf8_feed(hd_utf8_state_t *st, const uint8_t *p, size_t len);

/* True when the state ends on a code point boundary (no truncated sequence). */
static inline bool hd_utf8_complete(hd_utf8_state_t st) {
  return st == HD_UTF8_ACCEPT;
}

/* Validates a whole buffer: true if it is complete, valid UTF-8. */
bool hd_utf8_valid(const uint8_t *p, size_t len);

#endif
