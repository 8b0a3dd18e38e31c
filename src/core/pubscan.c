/* The publish body's fast path: one pass over the bytes, no DOM.
 *
 * jansson's parse of a batch was the largest userspace cost of routing. Most
 * bodies backends send are simple: plain ids, a known type, a data object. This
 * scanner accepts a body only when it is certainly valid JSON that jansson
 * would accept too (RFC 8259 grammar, UTF-8, no duplicate keys, no \u0000,
 * no lone surrogates) and every event passes the publish rules; the data
 * object's bytes then go into the frame as they are. Anything else - an error,
 * or a body outside the subset this scanner handles (escaped keys or ids, more
 * than 32 keys in an object, nesting deeper than 64, numbers jansson might
 * find too large) - makes it decline, and the caller parses with jansson,
 * which decides and words the error. So the fast path can change speed, not
 * verdicts. tests/fuzz/fuzz_event.c holds it to that against jansson.
 */
#include <string.h>

#include "core/event.h"
#include "proto/utf8.h"

#define MAX_DEPTH 64
#define MAX_KEYS  32

typedef struct {
  const char *p, *end;
} cur_t;

typedef struct {
  const char *k, *v; /* key; value (a string's content, else its whole text) */
  size_t kn, vn;
  char kind;  /* s(tring) o(bject) a(rray) n(umber) t(rue) f(alse) z (null) */
  bool plain; /* a string without escapes */
} member_t;

static void skip_ws(cur_t *c) {
  while (c->p < c->end &&
         (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

static bool eat(cur_t *c, char ch) {
  skip_ws(c);
  if (c->p >= c->end || *c->p != ch) return false;
  c->p++;
  skip_ws(c);
  return true;
}

static bool hex4(const char *p, const char *end, unsigned *out) {
  unsigned v = 0;
  if (end - p < 4) return false;
  for (int i = 0; i < 4; i++) {
    char h = p[i];
    v <<= 4;
    if (h >= '0' && h <= '9')
      v |= (unsigned)(h - '0');
    else if ((h | 0x20) >= 'a' && (h | 0x20) <= 'f')
      v |= (unsigned)((h | 0x20) - 'a' + 10);
    else
      return false;
  }
  *out = v;
  return true;
}

/* A string at the opening quote: checks escapes, control bytes and UTF-8. */
static bool scan_string(cur_t *c, member_t *m) {
  const char *p = c->p + 1, *start = p;
  bool plain = true;
  unsigned cp, lo;

  for (;;) {
    if (p >= c->end || (unsigned char)*p < 0x20) return false;
    if (*p == '"') break;
    if (*p != '\\') {
      p++;
      continue;
    }
    plain = false;
    if (c->end - p < 2) return false;
    switch (p[1]) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
      p += 2;
      continue;
    case 'u':
      if (!hex4(p + 2, c->end, &cp) || cp == 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
        return false;
      p += 6;
      if (cp >= 0xD800 && cp <= 0xDBFF) { /* must be followed by its low half */
        if (c->end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, c->end, &lo) ||
            lo < 0xDC00 || lo > 0xDFFF)
          return false;
        p += 6;
      }
      continue;
    default:
      return false;
    }
  }
  if (!hd_utf8_valid((const uint8_t *)start, (size_t)(p - start))) return false;
  if (m) {
    m->kind = 's';
    m->v = start;
    m->vn = (size_t)(p - start);
    m->plain = plain;
  }
  c->p = p + 1;
  return true;
}

static size_t digits(cur_t *c) {
  const char *s = c->p;
  while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
  return (size_t)(c->p - s);
}

/* RFC 8259 numbers; declines integers beyond 18 digits (jansson's int64) and
 * exponents of 3 digits or more (jansson refuses reals that overflow). */
static bool scan_number(cur_t *c) {
  size_t whole;
  bool real = false;

  if (c->p < c->end && *c->p == '-') c->p++;
  if (c->p < c->end && *c->p == '0') {
    c->p++;
    whole = 1;
  } else if ((whole = digits(c)) == 0) {
    return false;
  }
  if (c->p < c->end && *c->p == '.') {
    c->p++;
    if (digits(c) == 0) return false;
    real = true;
  }
  if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
    size_t n;
    c->p++;
    if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
    if ((n = digits(c)) == 0 || n > 2) return false;
    real = true;
  }
  return real ? whole <= 200 : whole <= 18;
}

static bool scan_literal(cur_t *c, const char *word, size_t n) {
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return false;
  c->p += n;
  return true;
}

static bool scan_value(cur_t *c, int depth, member_t *m);

/* After a member or element: 1 when a ',' says another follows, 0 when the
 * container's close was consumed, -1 otherwise. */
static int next(cur_t *c, char close) {
  skip_ws(c);
  if (c->p < c->end && (*c->p == ',' || *c->p == close)) {
    bool more = *c->p++ == ',';
    skip_ws(c);
    return more;
  }
  return -1;
}

/* Opens a container at its bracket: 1 when a first member follows, 0 when it
 * is empty (and consumed), -1 when it is not there. */
static int enter(cur_t *c, char bracket, char close) {
  if (!eat(c, bracket)) return -1;
  if (c->p < c->end && *c->p == close) {
    c->p++;
    return 0;
  }
  return 1;
}

/* A member's key and its ':' into ms[n]: plain, and none of ms[0..n). */
static bool scan_key(cur_t *c, member_t *ms, size_t n) {
  member_t key;

  if (n == MAX_KEYS || c->p >= c->end || *c->p != '"' || !scan_string(c, &key) ||
      !key.plain)
    return false;
  for (size_t i = 0; i < n; i++)
    if (ms[i].kn == key.vn && memcmp(ms[i].k, key.v, key.vn) == 0) return false;
  ms[n].k = key.v;
  ms[n].kn = key.vn;
  return eat(c, ':');
}

/* An object at its '{'; with members, records up to MAX_KEYS of them. */
static bool scan_object(cur_t *c, int depth, member_t *members, size_t *count) {
  member_t local[MAX_KEYS], *ms = members ? members : local;
  size_t n = 0;
  int more = depth > MAX_DEPTH ? -1 : enter(c, '{', '}');

  while (more > 0) {
    if (!scan_key(c, ms, n) || !scan_value(c, depth + 1, &ms[n])) return false;
    n++;
    more = next(c, '}');
  }
  if (count) *count = n;
  return more == 0;
}

static bool scan_array(cur_t *c, int depth) {
  int more = depth > MAX_DEPTH ? -1 : enter(c, '[', ']');

  while (more > 0) {
    if (!scan_value(c, depth + 1, NULL)) return false;
    more = next(c, ']');
  }
  return more == 0;
}

static bool scan_value(cur_t *c, int depth, member_t *m) {
  const char *start = c->p;
  char kind;
  bool ok;

  if (c->p >= c->end) return false;
  switch (*c->p) {
  case '"':
    return scan_string(c, m);
  case '{':
    kind = 'o', ok = scan_object(c, depth, NULL, NULL);
    break;
  case '[':
    kind = 'a', ok = scan_array(c, depth);
    break;
  case 't':
    kind = 't', ok = scan_literal(c, "true", 4);
    break;
  case 'f':
    kind = 'f', ok = scan_literal(c, "false", 5);
    break;
  case 'n':
    kind = 'z', ok = scan_literal(c, "null", 4);
    break;
  default:
    kind = 'n', ok = scan_number(c);
    break;
  }
  if (ok && m) {
    m->kind = kind;
    m->v = start;
    m->vn = (size_t)(c->p - start);
  }
  return ok;
}

static const member_t *member(const member_t *ms, size_t n, const char *key) {
  size_t kn = strlen(key);
  for (size_t i = 0; i < n; i++)
    if (ms[i].kn == kn && memcmp(ms[i].k, key, kn) == 0) return &ms[i];
  return NULL;
}

/* An id field: absent or null (when optional), or a plain string of 1..128
 * bytes, copied NUL-terminated to *ids. */
static bool take_id(const member_t *ms, size_t n, const char *key, bool required,
                    const char **out, char **ids) {
  const member_t *m = member(ms, n, key);

  *out = NULL;
  if (m == NULL || m->kind == 'z') return !required;
  if (m->kind != 's' || !m->plain || m->vn == 0 || m->vn > HD_ID_MAX) return false;
  memcpy(*ids, m->v, m->vn);
  (*ids)[m->vn] = '\0';
  *out = *ids;
  *ids += m->vn + 1;
  return true;
}

/* The publish rules of hd__event_from_json, on scanned members. */
static bool take_event(const member_t *ms, size_t n, size_t max_message,
                       hd_event_json_t *out, char **ids) {
  const member_t *type = member(ms, n, "type"), *data = member(ms, n, "data");
  int t;

  memset(out, 0, sizeof(*out));
  if (!take_id(ms, n, "user_id", true, &out->user_id, ids) ||
      !take_id(ms, n, "thread_id", false, &out->ev.thread_id, ids) ||
      !take_id(ms, n, "run_id", false, &out->ev.run_id, ids))
    return false;
  if (type == NULL || type->kind != 's' || !type->plain ||
      (t = hd_event_type_parse(type->v, type->vn)) < 0)
    return false;
  if (data == NULL || data->kind != 'o' || data->vn + HD_EVENT_ENVELOPE_MAX > max_message)
    return false;
  out->ev.type = (hd_event_type_t)t;
  out->ev.data = data->v; /* borrowed from the body; out->data stays NULL */
  out->ev.data_len = data->vn;
  return true;
}

/* The events array at its '[': each element an event, at most cap of them. */
static size_t scan_events(cur_t *c, size_t max_message, hd_event_json_t *out, size_t cap,
                          char **ids) {
  size_t n = 0;
  int more = enter(c, '[', ']'); /* an empty batch is an error: declined */

  while (more > 0) {
    member_t ms[MAX_KEYS];
    size_t k;
    if (n == cap || !scan_object(c, 3, ms, &k) ||
        !take_event(ms, k, max_message, &out[n], ids))
      return 0;
    n++;
    more = next(c, ']');
  }
  return more == 0 ? n : 0;
}

size_t hd__publish_scan(const char *body, size_t len, size_t max_message,
                        hd_event_json_t *out, size_t cap, char *ids, bool *batch) {
  cur_t c = {body, body + len};
  member_t top[MAX_KEYS];
  size_t ntop = 0, n = 0;
  int more = enter(&c, '{', '}');

  /* The top object by hand, to read "events" as it streams by. */
  while (more > 0) {
    member_t *m = &top[ntop];
    if (!scan_key(&c, top, ntop)) return 0;
    if (m->kn == 6 && memcmp(m->k, "events", 6) == 0) {
      if ((n = scan_events(&c, max_message, out, cap, &ids)) == 0) return 0;
      m->kind = 'a';
    } else if (!scan_value(&c, 2, m)) {
      return 0;
    }
    ntop++;
    more = next(&c, '}');
  }
  if (more < 0 || c.p != c.end) return 0; /* not an object, or bytes after it */
  *batch = n > 0;
  if (n > 0) return n;
  if (cap == 0 || !take_event(top, ntop, max_message, &out[0], &ids)) return 0;
  return 1;
}
