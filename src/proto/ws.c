/* RFC 6455 frame codec.
 *
 * The reader is a two-state machine, HEADER and PAYLOAD, plus DONE once the
 * connection is finished from the reader's point of view (after a close frame or
 * an error). A header split across reads is gathered in r->hdr; a payload that
 * is not entirely in the caller's buffer, or that belongs to a fragmented
 * message, is gathered in r->buf (data) or r->ctl (control). Otherwise the
 * payload is unmasked in place and handed out without a copy: the common case of
 * a small, unfragmented frame arriving in one read costs no allocation at all.
 *
 * Invariants:
 *   - msg_opcode != 0 exactly while a fragmented data message is in progress;
 *     buf_len is then the bytes received for it so far (<= max_message);
 *   - utf8 is the validator state of the text message in progress, fed with every
 *     payload byte as soon as it is unmasked (fail fast, RFC 6455 8.1);
 *   - a data frame is refused with 1009 from its header alone when it would take
 *     the message past max_message (RFC 6455 10.4);
 *   - control frames are final and carry at most 125 bytes (5.5), and may arrive
 *     between the fragments of a data message (5.4).
 */
#include "proto/ws.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "herald/herald.h"

enum { ST_HEADER = 0, ST_PAYLOAD, ST_DONE };
enum { REL_BUF = 1, REL_CTL = 2 };

static const uint8_t empty[1];

static bool is_control(unsigned op) {
  return op & 0x8;
}

/* Header size implied by the second header byte (client frames are masked; an
 * unmasked one is rejected after its header is read). */
static size_t header_size(uint8_t b1) {
  size_t n = 2 + ((b1 & 0x80) ? 4 : 0);
  switch (b1 & 0x7F) {
  case 126:
    return n + 2;
  case 127:
    return n + 8;
  default:
    return n;
  }
}

static int fail(hd_ws_reader_t *r, int err, uint16_t code) {
  r->state = ST_DONE;
  r->close_code = code;
  return err;
}

void hd_ws_reader_init(hd_ws_reader_t *r, size_t max_message) {
  assert(max_message > 0 && max_message <= UINT32_MAX);
  memset(r, 0, sizeof(*r));
  r->max_message = (uint32_t)max_message;
}

void hd_ws_reader_dispose(hd_ws_reader_t *r) {
  free(r->buf);
  free(r->ctl);
  r->buf = NULL;
  r->ctl = NULL;
  r->buf_len = r->buf_cap = 0;
  r->ctl_len = 0;
}

bool hd_ws_reader_busy(const hd_ws_reader_t *r) {
  return r->state == ST_PAYLOAD || r->hdr_len > 0 || r->msg_opcode != 0;
}

unsigned hd_ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], unsigned pos) {
  uint8_t m8[8];
  uint64_t m;
  size_t i = 0;

  for (unsigned k = 0; k < 8; k++) m8[k] = mask[(pos + k) & 3];
  memcpy(&m, m8, 8);
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    w ^= m;
    memcpy(p + i, &w, 8);
  }
  for (; i < n; i++) p[i] ^= m8[i & 7];
  return (unsigned)((pos + n) & 3);
}

/* Validates a complete frame header and enters the frame. */
static int start_frame(hd_ws_reader_t *r, const uint8_t *h) {
  unsigned op = h[0] & 0x0F;
  bool fin = h[0] & 0x80;
  uint64_t len = h[1] & 0x7F;
  const uint8_t *mask = h + 2;

  if (h[0] & 0x70)
    return fail(r, HD_EPROTO, HD_WS_CLOSE_PROTOCOL); /* 5.2: no extension */
  if (!(h[1] & 0x80))
    return fail(r, HD_EPROTO, HD_WS_CLOSE_PROTOCOL); /* 5.3: must mask */
  if (len == 126) {
    len = (uint64_t)h[2] << 8 | h[3];
    mask = h + 4;
  } else if (len == 127) {
    len = 0;
    for (int i = 0; i < 8; i++) len = len << 8 | h[2 + i];
    if (len >> 63)
      return fail(r, HD_EPROTO, HD_WS_CLOSE_PROTOCOL); /* 5.2: MSB must be 0 */
    mask = h + 10;
  }

  switch (op) {
  case HD_WS_OP_CONT:
    if (r->msg_opcode == 0) return fail(r, HD_EPROTO, HD_WS_CLOSE_PROTOCOL);
    break;
  case HD_WS_OP_TEXT:
  case HD_WS_OP_BINARY:
    if (r->msg_opcode != 0) return fail(r, HD_EPROTO, HD_WS_CLOSE_PROTOCOL);
    break;
  case HD_WS_OP_CLOSE:
  case HD_WS_OP_PING:
  case HD_WS_OP_PONG:
    if (!fin || len > HD_WS_MAX_CONTROL) return fail(r, HD_EPROTO, HD_WS_CLOSE_PROTOCOL);
    if (op == HD_WS_OP_CLOSE && len == 1) return fail(r, HD_EPROTO, HD_WS_CLOSE_PROTOCOL);
    break;
  default:
    return fail(r, HD_EPROTO, HD_WS_CLOSE_PROTOCOL); /* 5.2: reserved opcode */
  }

  if (!is_control(op)) {
    /* The limit applies to the whole message, checked before any payload. */
    if (len > r->max_message - r->buf_len) return fail(r, HD_ELIMIT, HD_WS_CLOSE_TOO_BIG);
    if (op != HD_WS_OP_CONT) r->utf8 = HD_UTF8_ACCEPT;
    if (op != HD_WS_OP_CONT && !fin) r->msg_opcode = (uint8_t)op;
  }
  r->opcode = (uint8_t)op;
  r->fin = fin;
  r->remaining = len;
  memcpy(r->mask, mask, 4);
  r->mask_pos = 0;
  r->state = ST_PAYLOAD;
  return 0;
}

static int control_event(hd_ws_reader_t *r, const uint8_t *p, size_t n,
                         hd_ws_event_t *ev) {
  ev->data = p;
  ev->len = n;
  switch (r->opcode) {
  case HD_WS_OP_PING:
    ev->type = HD_WS_EV_PING;
    return 0;
  case HD_WS_OP_PONG:
    ev->type = HD_WS_EV_PONG;
    return 0;
  default:
    break;
  }
  /* RFC 6455 5.5.1: an optional 2-byte code, then a UTF-8 reason. */
  ev->close_code = HD_WS_CLOSE_NO_STATUS;
  ev->data = empty;
  ev->len = 0;
  if (n >= 2) {
    unsigned code = (unsigned)p[0] << 8 | p[1];
    if (!hd_ws_close_code_valid(code)) return fail(r, HD_EPROTO, HD_WS_CLOSE_PROTOCOL);
    if (!hd_utf8_valid(p + 2, n - 2)) return fail(r, HD_EPROTO, HD_WS_CLOSE_PROTOCOL);
    ev->close_code = (uint16_t)code;
    ev->data = p + 2;
    ev->len = n - 2;
  }
  r->state = ST_DONE;
  ev->type = HD_WS_EV_CLOSE;
  return 0;
}

/* The current data frame is complete; a final one completes the message. */
static int data_frame_end(hd_ws_reader_t *r, const uint8_t *p, size_t n,
                          hd_ws_event_t *ev) {
  if (!r->fin) return 0;
  if (r->opcode == HD_WS_OP_CONT) {
    ev->opcode = r->msg_opcode;
    r->msg_opcode = 0;
  } else {
    ev->opcode = r->opcode;
  }
  if (ev->opcode == HD_WS_OP_TEXT && !hd_utf8_complete(r->utf8))
    return fail(r, HD_EUTF8, HD_WS_CLOSE_BAD_DATA); /* truncated sequence at the end */
  ev->type = HD_WS_EV_MESSAGE;
  ev->data = p ? p : empty;
  ev->len = n;
  return 0;
}

static int reserve(hd_ws_reader_t *r, size_t extra) {
  size_t want = r->buf_len + extra, cap = r->buf_cap ? r->buf_cap : 256;
  uint8_t *p;

  if (want <= r->buf_cap) return 0;
  while (cap < want) cap = cap > SIZE_MAX / 2 ? want : cap * 2;
  if (cap > r->max_message) cap = r->max_message;
  if (cap < want) cap = want;
  p = realloc(r->buf, cap);
  if (p == NULL) return HD_ENOMEM;
  r->buf = p;
  r->buf_cap = (uint32_t)cap;
  return 0;
}

/* Takes up to n payload bytes of the current frame from p. Returns bytes taken
 * or an error; sets ev when the frame completes an event. */
static int take_payload(hd_ws_reader_t *r, uint8_t *p, size_t n, hd_ws_event_t *ev) {
  size_t k = n < r->remaining ? n : (size_t)r->remaining;
  bool text = r->opcode == HD_WS_OP_TEXT ||
              (r->opcode == HD_WS_OP_CONT && r->msg_opcode == HD_WS_OP_TEXT);
  int rc;

  if (is_control(r->opcode)) {
    if (k == r->remaining && r->ctl_len == 0) { /* whole in the input: no copy */
      hd_ws_unmask(p, k, r->mask, 0);
      r->state = ST_HEADER;
      r->remaining = 0;
      rc = control_event(r, p, k, ev);
      return rc < 0 ? rc : (int)k;
    }
    if (r->ctl == NULL && (r->ctl = malloc(HD_WS_MAX_CONTROL)) == NULL)
      return fail(r, HD_ENOMEM, HD_WS_CLOSE_INTERNAL);
    memcpy(r->ctl + r->ctl_len, p, k);
    r->mask_pos = (uint8_t)hd_ws_unmask(r->ctl + r->ctl_len, k, r->mask, r->mask_pos);
    r->ctl_len = (uint8_t)(r->ctl_len + k);
    r->remaining -= k;
    if (r->remaining == 0) {
      r->state = ST_HEADER;
      r->release |= REL_CTL;
      rc = control_event(r, r->ctl, r->ctl_len, ev);
      if (rc < 0) return rc;
    }
    return (int)k;
  }

  if (k == r->remaining && r->fin && r->opcode != HD_WS_OP_CONT && r->buf_len == 0) {
    /* A whole unfragmented message in the input: unmask in place, no copy. */
    hd_ws_unmask(p, k, r->mask, 0);
    if (text && hd_utf8_feed(&r->utf8, p, k) < 0)
      return fail(r, HD_EUTF8, HD_WS_CLOSE_BAD_DATA);
    r->state = ST_HEADER;
    r->remaining = 0;
    rc = data_frame_end(r, p, k, ev);
    return rc < 0 ? rc : (int)k;
  }

  if (reserve(r, k) < 0) return fail(r, HD_ENOMEM, HD_WS_CLOSE_INTERNAL);
  memcpy(r->buf + r->buf_len, p, k);
  r->mask_pos = (uint8_t)hd_ws_unmask(r->buf + r->buf_len, k, r->mask, r->mask_pos);
  if (text && hd_utf8_feed(&r->utf8, r->buf + r->buf_len, k) < 0)
    return fail(r, HD_EUTF8, HD_WS_CLOSE_BAD_DATA);
  r->buf_len += (uint32_t)k;
  r->remaining -= k;
  if (r->remaining == 0) {
    r->state = ST_HEADER;
    rc = data_frame_end(r, r->buf, r->buf_len, ev);
    if (rc < 0) return rc;
    if (ev->type == HD_WS_EV_MESSAGE) r->release |= REL_BUF;
  }
  return (int)k;
}

int hd_ws_reader_feed(hd_ws_reader_t *r, uint8_t *in, size_t len, hd_ws_event_t *ev) {
  size_t pos = 0;

  assert(len <= INT_MAX);
  memset(ev, 0, sizeof(*ev));
  if (r->release & REL_BUF) {
    free(r->buf);
    r->buf = NULL;
    r->buf_len = r->buf_cap = 0;
  }
  if (r->release & REL_CTL) {
    free(r->ctl);
    r->ctl = NULL;
    r->ctl_len = 0;
  }
  r->release = 0;
  if (r->state == ST_DONE) return (int)len;

  while (pos < len && ev->type == HD_WS_EV_NONE) {
    if (r->state == ST_HEADER) {
      const uint8_t *h;
      int rc;

      if (r->hdr_len == 0 && len - pos >= 2 && len - pos >= header_size(in[pos + 1])) {
        h = in + pos;
        pos += header_size(in[pos + 1]);
      } else {
        while (pos < len && (r->hdr_len < 2 || r->hdr_len < header_size(r->hdr[1])))
          r->hdr[r->hdr_len++] = in[pos++];
        if (r->hdr_len < 2 || r->hdr_len < header_size(r->hdr[1])) break;
        h = r->hdr;
        r->hdr_len = 0;
      }
      if ((rc = start_frame(r, h)) < 0) return rc;
      if (r->remaining == 0) { /* empty payload: the frame is complete now */
        r->state = ST_HEADER;
        rc = is_control(r->opcode) ? control_event(r, empty, 0, ev)
                                   : data_frame_end(r, r->buf, r->buf_len, ev);
        if (rc < 0) return rc;
        if (ev->type == HD_WS_EV_MESSAGE && r->buf) r->release |= REL_BUF;
      }
    } else {
      int n = take_payload(r, in + pos, len - pos, ev);
      if (n < 0) return n;
      pos += (size_t)n;
    }
  }
  return (int)pos;
}

size_t hd_ws_header_encode(uint8_t out[HD_WS_MAX_HEADER], unsigned opcode, bool fin,
                           uint64_t len) {
  out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
  if (len < 126) {
    out[1] = (uint8_t)len;
    return 2;
  }
  if (len <= 0xFFFF) {
    out[1] = 126;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
  return 10;
}

bool hd_ws_close_code_valid(unsigned code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
         (code >= 3000 && code <= 4999);
}

size_t hd_ws_close_payload(uint8_t out[HD_WS_MAX_CONTROL], uint16_t code,
                           const char *reason) {
  size_t n = reason ? strlen(reason) : 0;

  out[0] = (uint8_t)(code >> 8);
  out[1] = (uint8_t)code;
  if (n > HD_WS_MAX_CONTROL - 2) {
    n = HD_WS_MAX_CONTROL - 2;
    while (n > 0 && ((uint8_t)reason[n] & 0xC0) == 0x80) n--; /* keep UTF-8 whole */
  }
  if (n) memcpy(out + 2, reason, n);
  return 2 + n;
}
