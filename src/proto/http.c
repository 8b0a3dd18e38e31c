/* HTTP/1.1 request parsing glue around llhttp.
 *
 * llhttp calls back with spans of the caller's buffer; a span may be cut at a
 * read boundary, so every span is appended to head[], a fixed store of
 * HD_HTTP_MAX_HEAD bytes inside the parser. Because the store never moves,
 * header entries can point straight into it. The raw bytes of the request line
 * and headers are also counted while they arrive: llhttp is never fed more than
 * the remaining allowance, so an oversized head is refused (431) after at most
 * HD_HTTP_MAX_HEAD bytes, whatever the client sends.
 *
 * on_message_complete pauses llhttp, so each feed stops at the end of one
 * request; the caller answers it, calls hd_http_parser_next() and feeds the
 * rest (pipelining). For an Upgrade request, llhttp stops by itself.
 */
#include "proto/http.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "herald/herald.h"

typedef struct {
  uint16_t name_off, name_len, value_off, value_len;
} span_t;

struct hd_http_parser_s {
  llhttp_t llhttp;
  size_t max_body;
  size_t raw_head; /* raw bytes of the current request's head so far */
  bool in_request; /* some bytes of a request have arrived */
  bool head_done;  /* headers complete */
  bool in_value;   /* the last header callback was a value */
  bool complete;   /* on_message_complete fired */
  bool overflow;   /* a header line beyond HD_HTTP_MAX_HEADERS began */
  int status;      /* HTTP status for the last error */
  size_t head_len;
  size_t url_len;
  size_t nheaders;
  uint8_t *body;
  size_t body_len;
  size_t body_cap;
  hd_http_req_t req;
  span_t spans[HD_HTTP_MAX_HEADERS];
  hd_http_header_t headers[HD_HTTP_MAX_HEADERS];
  char head[HD_HTTP_MAX_HEAD];
};

static hd_http_parser_t *self(llhttp_t *h) {
  return h->data;
}

static int append(hd_http_parser_t *p, const char *at, size_t len) {
  if (len > sizeof(p->head) - p->head_len) {
    p->status = 431;
    return -1;
  }
  memcpy(p->head + p->head_len, at, len);
  p->head_len += len;
  return 0;
}

static int on_message_begin(llhttp_t *h) {
  hd_http_parser_t *p = self(h);
  p->in_request = true;
  return 0;
}

static int on_url(llhttp_t *h, const char *at, size_t len) {
  hd_http_parser_t *p = self(h);
  p->url_len += len;
  return append(p, at, len);
}

static int on_header_field(llhttp_t *h, const char *at, size_t len) {
  hd_http_parser_t *p = self(h);
  span_t *s;

  if (p->overflow) return 0;
  if (p->in_value || p->nheaders == 0) { /* a new header line begins */
    if (p->nheaders == HD_HTTP_MAX_HEADERS) {
      /* Refused once the name is complete (and valid), so the verdict does
       * not depend on where the reads split the request. */
      p->overflow = true;
      return 0;
    }
    s = &p->spans[p->nheaders++];
    s->name_off = (uint16_t)p->head_len;
    s->name_len = 0;
    s->value_off = 0;
    s->value_len = 0;
    p->in_value = false;
  }
  s = &p->spans[p->nheaders - 1];
  s->name_len = (uint16_t)(s->name_len + len);
  return append(p, at, len);
}

static int on_header_field_complete(llhttp_t *h) {
  hd_http_parser_t *p = self(h);
  if (!p->overflow) return 0;
  p->status = 431;
  return -1;
}

static int on_header_value(llhttp_t *h, const char *at, size_t len) {
  hd_http_parser_t *p = self(h);
  span_t *s = &p->spans[p->nheaders - 1];

  if (!p->in_value) {
    s->value_off = (uint16_t)p->head_len;
    p->in_value = true;
  }
  s->value_len = (uint16_t)(s->value_len + len);
  return append(p, at, len);
}

static int on_headers_complete(llhttp_t *h) {
  hd_http_parser_t *p = self(h);

  p->head_done = true;
  if ((h->flags & F_CONTENT_LENGTH) && h->content_length > p->max_body) {
    p->status = 413;
    return -1;
  }
  /* A declared length sizes the body buffer once, instead of by doubling. */
  if ((h->flags & F_CONTENT_LENGTH) && h->content_length > p->body_cap) {
    uint8_t *b = realloc(p->body, h->content_length);
    if (b == NULL) {
      p->status = 500;
      return -1;
    }
    p->body = b;
    p->body_cap = h->content_length;
  }
  return 0;
}

static int on_body(llhttp_t *h, const char *at, size_t len) {
  hd_http_parser_t *p = self(h);

  if (len > p->max_body - p->body_len) {
    p->status = 413;
    return -1;
  }
  if (p->body_len + len > p->body_cap) {
    size_t cap = p->body_cap ? p->body_cap : 1024;
    uint8_t *b;
    while (cap < p->body_len + len) cap *= 2;
    if (cap > p->max_body) cap = p->max_body;
    if ((b = realloc(p->body, cap)) == NULL) {
      p->status = 500;
      return -1;
    }
    p->body = b;
    p->body_cap = cap;
  }
  memcpy(p->body + p->body_len, at, len);
  p->body_len += len;
  return 0;
}

static int on_message_complete(llhttp_t *h) {
  hd_http_parser_t *p = self(h);
  p->complete = true;
  return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void reset(hd_http_parser_t *p) {
  p->raw_head = 0;
  p->in_request = false;
  p->head_done = false;
  p->in_value = false;
  p->complete = false;
  p->overflow = false;
  p->status = 0;
  p->head_len = 0;
  p->url_len = 0;
  p->nheaders = 0;
  p->body_len = 0;
}

hd_http_parser_t *hd_http_parser_new(size_t max_body) {
  /* Not calloc: the 8 KiB head store and the header tables need no zeroing
   * (they are written before they are read), and touching them would cost
   * every new connection RSS. */
  hd_http_parser_t *p = malloc(sizeof(*p));

  if (p == NULL) return NULL;
  reset(p);
  p->body = NULL;
  p->body_cap = 0;
  memset(&p->req, 0, sizeof(p->req));
  llhttp_init(&p->llhttp, HTTP_REQUEST, &settings);
  p->llhttp.data = p;
  p->max_body = max_body;
  return p;
}

void hd_http_parser_free(hd_http_parser_t *p) {
  if (p == NULL) return;
  free(p->body);
  free(p);
}

static void trim(const char **s, size_t *n) {
  while (*n && ((*s)[0] == ' ' || (*s)[0] == '\t')) (*s)++, (*n)--;
  while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t')) (*n)--;
}

/* Builds the public view of the completed request. */
static void finish(hd_http_parser_t *p) {
  hd_http_req_t *r = &p->req;
  const char *q;

  for (size_t i = 0; i < p->nheaders; i++) {
    hd_http_header_t *hd = &p->headers[i];
    hd->name = p->head + p->spans[i].name_off;
    hd->name_len = p->spans[i].name_len;
    hd->value = p->head + p->spans[i].value_off;
    hd->value_len = p->spans[i].value_len;
    trim(&hd->value, &hd->value_len);
  }
  r->method = p->llhttp.method;
  r->http_major = p->llhttp.http_major;
  r->http_minor = p->llhttp.http_minor;
  r->keep_alive = llhttp_should_keep_alive(&p->llhttp);
  r->upgrade = p->llhttp.upgrade;
  r->path = p->head;
  r->path_len = p->url_len;
  r->query = NULL;
  r->query_len = 0;
  if ((q = memchr(p->head, '?', p->url_len)) != NULL) {
    r->path_len = (size_t)(q - p->head);
    r->query = q + 1;
    r->query_len = p->url_len - r->path_len - 1;
  }
  r->headers = p->headers;
  r->nheaders = p->nheaders;
  r->body = p->body_len ? p->body : NULL;
  r->body_len = p->body_len;
}

int hd_http_parser_feed(hd_http_parser_t *p, const uint8_t *data, size_t len,
                        size_t *consumed) {
  size_t off = 0;

  while (off < len) {
    size_t n = len - off;
    llhttp_errno_t err;

    if (!p->head_done) {
      size_t room = HD_HTTP_MAX_HEAD - p->raw_head;
      if (room == 0) {
        p->status = 431;
        *consumed = off;
        return HD_ELIMIT;
      }
      if (n > room) n = room;
    }
    err = llhttp_execute(&p->llhttp, (const char *)data + off, n);
    if (err == HPE_OK) {
      if (!p->head_done) p->raw_head += n;
      off += n;
      continue;
    }
    if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
      off = (size_t)((const uint8_t *)llhttp_get_error_pos(&p->llhttp) - data);
      *consumed = off;
      finish(p);
      return 1;
    }
    *consumed = off;
    if (p->status == 0) p->status = 400;
    return p->status == 400 ? HD_EPROTO : HD_ELIMIT;
  }
  *consumed = len;
  return 0;
}

const hd_http_req_t *hd_http_parser_request(const hd_http_parser_t *p) {
  return &p->req;
}

void hd_http_parser_next(hd_http_parser_t *p) {
  reset(p);
  if (llhttp_get_errno(&p->llhttp) == HPE_PAUSED) llhttp_resume(&p->llhttp);
  if (p->body_cap > 64 * 1024) { /* don't keep a large body buffer around */
    free(p->body);
    p->body = NULL;
    p->body_cap = 0;
  }
}

int hd_http_parser_status(const hd_http_parser_t *p) {
  return p->status;
}

bool hd_http_parser_busy(const hd_http_parser_t *p) {
  return p->in_request && !p->complete;
}

const hd_http_header_t *hd_http_header_find(const hd_http_req_t *req, const char *name,
                                            size_t *count) {
  const hd_http_header_t *first = NULL;
  size_t n = strlen(name), c = 0;

  for (size_t i = 0; i < req->nheaders; i++) {
    const hd_http_header_t *h = &req->headers[i];
    if (h->name_len == n && strncasecmp(h->name, name, n) == 0) {
      if (first == NULL) first = h;
      c++;
    }
  }
  if (count) *count = c;
  return first;
}

bool hd_http_token_list_has(const char *value, size_t len, const char *token) {
  size_t tn = strlen(token), i = 0;

  while (i < len) {
    size_t start, end;
    while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ',')) i++;
    start = i;
    while (i < len && value[i] != ',') i++;
    end = i;
    while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t')) end--;
    if (end - start == tn && strncasecmp(value + start, token, tn) == 0) return true;
  }
  return false;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int hd_http_query_get(const char *query, size_t len, const char *key, char *out,
                      size_t cap) {
  size_t kn = strlen(key), i = 0;

  if (query == NULL) return HD_ENOENT;
  while (i < len) {
    size_t start = i, eq, end;
    while (i < len && query[i] != '&') i++;
    end = i++;
    eq = start;
    while (eq < end && query[eq] != '=') eq++;
    if (eq - start != kn || memcmp(query + start, key, kn) != 0) continue;
    size_t o = 0;
    for (size_t j = eq < end ? eq + 1 : end; j < end; j++) {
      char c = query[j];
      if (c == '%') {
        int hi, lo;
        if (j + 2 >= end) return HD_EPROTO;
        hi = hexval(query[j + 1]);
        lo = hexval(query[j + 2]);
        if (hi < 0 || lo < 0) return HD_EPROTO;
        c = (char)(hi << 4 | lo);
        j += 2;
      } else if (c == '+') {
        c = ' ';
      }
      if (o + 1 >= cap) return HD_ELIMIT;
      out[o++] = c;
    }
    if (cap == 0) return HD_ELIMIT;
    out[o] = '\0';
    return (int)o;
  }
  return HD_ENOENT;
}
