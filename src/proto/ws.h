/* The RFC 6455 frame codec: an incremental reader for client frames and an
 * encoder for server frames. No I/O: bytes in, events out.
 *
 * Reading. hd_ws_reader_feed() consumes client bytes in pieces of any size and
 * returns one event at a time: a complete data message (text or binary,
 * reassembled from fragments), a ping, a pong or a close. It enforces every
 * framing rule of RFC 6455 section 5 and fails fast: an invalid UTF-8 byte in a
 * text message is reported the moment it arrives, and a frame whose header
 * announces a message larger than the limit is refused before its payload is
 * read. When it fails, hd_ws_reader_close_code() gives the close code to send
 * (1002, 1007, 1009 or 1011).
 *
 * Payload bytes are unmasked in place in the caller's buffer: the input is
 * mutable and, when a whole unfragmented frame is present in it, the event
 * points straight into it (no copy). Frames that span reads are assembled in a
 * heap buffer that exists only while they do, so an idle reader holds no memory
 * beyond the struct itself.
 *
 * Writing. Server frames are never masked; hd_ws_header_encode() writes the 2,
 * 4 or 10 header bytes for a payload of a given length.
 */
#ifndef HD_PROTO_WS_H
#define HD_PROTO_WS_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "proto/utf8.h"

enum {
  HD_WS_OP_CONT = 0x0,
  HD_WS_OP_TEXT = 0x1,
  HD_WS_OP_BINARY = 0x2,
  HD_WS_OP_CLOSE = 0x8,
  HD_WS_OP_PING = 0x9,
  HD_WS_OP_PONG = 0xA
};

/* Close codes (RFC 6455 7.4.1 and Herald's PROTOCOL.md section 6). */
enum {
  HD_WS_CLOSE_NORMAL = 1000,
  HD_WS_CLOSE_GOING_AWAY = 1001,
  HD_WS_CLOSE_PROTOCOL = 1002,
  HD_WS_CLOSE_UNSUPPORTED = 1003,
  HD_WS_CLOSE_NO_STATUS = 1005, /* never sent: "the close frame had no code" */
  HD_WS_CLOSE_BAD_DATA = 1007,
  HD_WS_CLOSE_POLICY = 1008,
  HD_WS_CLOSE_TOO_BIG = 1009,
  HD_WS_CLOSE_INTERNAL = 1011,
  HD_WS_CLOSE_UNAUTHORIZED = 4001,
  HD_WS_CLOSE_TOKEN_EXPIRED = 4002,
  HD_WS_CLOSE_BACKEND = 4003,
  HD_WS_CLOSE_SLOW_CONSUMER = 4008,
  HD_WS_CLOSE_TOO_MANY = 4009,
  HD_WS_CLOSE_RATE_LIMITED = 4029
};

#define HD_WS_MAX_CONTROL 125 /* RFC 6455 5.5 */
#define HD_WS_MAX_HEADER  10  /* server frames: 2 + 8 length bytes, no mask */

typedef enum {
  HD_WS_EV_NONE = 0, /* all input consumed, no event yet */
  HD_WS_EV_MESSAGE,  /* a complete text or binary message */
  HD_WS_EV_PING,
  HD_WS_EV_PONG,
  HD_WS_EV_CLOSE /* the peer's close frame, already validated */
} hd_ws_ev_type_t;

typedef struct {
  hd_ws_ev_type_t type;
  uint8_t opcode;      /* MESSAGE: HD_WS_OP_TEXT or HD_WS_OP_BINARY */
  uint16_t close_code; /* CLOSE: the peer's code, or 1005 when it sent none */
  /* Payload (MESSAGE, PING, PONG) or close reason (CLOSE). Borrowed: valid until
   * the next call on the reader or on the input buffer, whichever comes first. */
  const uint8_t *data;
  size_t len;
} hd_ws_event_t;

typedef struct hd_ws_reader_s {
  uint64_t remaining;   /* payload bytes still to come in the current frame */
  uint8_t *buf;         /* assembly buffer for data spanning reads; heap or NULL */
  uint32_t max_message; /* limit on a (reassembled) data message, < 4 GiB */
  uint32_t buf_len;
  uint32_t buf_cap;
  uint8_t *ctl; /* partial control frame payload; heap or NULL */
  uint8_t ctl_len;
  uint8_t hdr[14]; /* header bytes of a header split across reads */
  uint8_t hdr_len;
  uint8_t mask[4];
  uint8_t mask_pos;   /* offset into the mask of the next payload byte */
  uint8_t opcode;     /* current frame */
  uint8_t msg_opcode; /* TEXT/BINARY of the message in progress, 0 if none */
  uint8_t state;
  bool fin;
  uint8_t release; /* the last event pointed at buf or ctl: drop it next call */
  hd_utf8_state_t utf8;
  uint16_t close_code; /* after an error: the code to close with */
} hd_ws_reader_t;

/* Prepares a reader (caller's storage). max_message bounds a data message's
 * total payload; it must be > 0. */
void hd_ws_reader_init(hd_ws_reader_t *r, size_t max_message);

/* Releases the reader's heap buffers. The struct may be init'ed again. */
void hd_ws_reader_dispose(hd_ws_reader_t *r);

/* Consumes client bytes from in (which is modified: payloads are unmasked in
 * place) and stops after at most one event.
 *
 * Returns the number of bytes consumed (>= 0) and sets ev->type: an event, or
 * HD_WS_EV_NONE when all len bytes were consumed without completing one. Call
 * again with the rest of the input after handling an event.
 * Returns HD_EPROTO (close 1002), HD_EUTF8 (1007), HD_ELIMIT (1009) or HD_ENOMEM
 * (1011) when the input must fail the connection; see hd_ws_reader_close_code().
 * After a CLOSE event or an error, further input is consumed and ignored. */
int hd_ws_reader_feed(hd_ws_reader_t *r, uint8_t *in, size_t len, hd_ws_event_t *ev);

/* The close code for the error the reader last reported (0 if none). */
static inline uint16_t hd_ws_reader_close_code(const hd_ws_reader_t *r) {
  return r->close_code;
}

/* True while a message or frame is partially received (used for timeouts and
 * memory accounting). */
bool hd_ws_reader_busy(const hd_ws_reader_t *r);

/* XORs n bytes at p with the 4-byte mask, starting at mask offset pos (0..3).
 * Works a machine word at a time. Returns the mask offset after the last byte. */
unsigned hd_ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4], unsigned pos);

/* Writes the header of an unmasked (server) frame into out and returns its
 * length: 2, 4 or 10 bytes. */
size_t hd_ws_header_encode(uint8_t out[HD_WS_MAX_HEADER], unsigned opcode, bool fin,
                           uint64_t len);

/* True for the codes a peer may send in a close frame (RFC 6455 7.4): 1000-1003,
 * 1007-1011 and 3000-4999. */
bool hd_ws_close_code_valid(unsigned code);

/* Writes a close payload (code, then reason truncated to fit 125 bytes) into out
 * and returns its length. */
size_t hd_ws_close_payload(uint8_t out[HD_WS_MAX_CONTROL], uint16_t code,
                           const char *reason);

#endif
