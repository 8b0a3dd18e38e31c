/* The demo agent: a small, honest agent that needs no model.
 *
 * For each run it picks a tool from the message: the calculator when the text
 * holds an arithmetic expression ("what is 12*7?"), the clock when it asks for
 * the time or date, otherwise word_count. Then, one step per timer tick, it
 * emits 1-3 agent_thinking events, tool_executing with the arguments, runs the
 * tool for real, tool_completed with the result, the answer word by word as
 * agent_message deltas, and finishes with the full answer. The pace between
 * steps is uniform in [pace_min_ms, pace_max_ms]; 0 still yields to the loop.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "agent/agent.h"
#include "herald/herald.h"
#include "net/net.h"

/* ---- the calculator ------------------------------------------------------------- */

typedef struct {
  const char *p;
  int err;
} calc_t;

static void skip(calc_t *c) {
  while (*c->p == ' ' || *c->p == '\t') c->p++;
}

/* Operators may be ASCII or the Unicode signs people type: x, ×, ÷, −. */
static int peek_op(calc_t *c, size_t *len) {
  const unsigned char *p = (const unsigned char *)c->p;
  *len = 1;
  if (*p == '+' || *p == '-' || *p == '*' || *p == '/' || *p == '(' || *p == ')')
    return *p;
  if (*p == 'x' || *p == 'X') return '*';
  *len = 2;
  if (p[0] == 0xC3 && p[1] == 0x97) return '*'; /* × */
  if (p[0] == 0xC3 && p[1] == 0xB7) return '/'; /* ÷ */
  *len = 3;
  if (p[0] == 0xE2 && p[1] == 0x88 && p[2] == 0x92) return '-'; /* − */
  return 0;
}

static double expr(calc_t *c, int depth);

static double factor(calc_t *c, int depth) {
  size_t n;
  int op;

  skip(c);
  if (depth > 64) {
    c->err = HD_EINVAL;
    return 0;
  }
  op = peek_op(c, &n);
  if (op == '-' || op == '+') {
    c->p += n;
    double v = factor(c, depth + 1);
    return op == '-' ? -v : v;
  }
  if (op == '(') {
    c->p += n;
    double v = expr(c, depth + 1);
    skip(c);
    if (peek_op(c, &n) != ')')
      c->err = HD_EINVAL;
    else
      c->p += n;
    return v;
  }
  if (isdigit((unsigned char)*c->p) ||
      (*c->p == '.' && isdigit((unsigned char)c->p[1]))) {
    /* Plain decimals only: strtod alone would also read "0x5" as hex and
     * "1e3" as an exponent, where people mean 0 × 5. */
    char num[64];
    size_t len = 0;
    bool dot = false;
    while (isdigit((unsigned char)c->p[len]) || (c->p[len] == '.' && !dot)) {
      dot |= c->p[len] == '.';
      if (len < sizeof(num) - 1) num[len] = c->p[len];
      len++;
    }
    c->p += len;
    if (len >= sizeof(num)) { /* beyond any precision a double has */
      c->err = HD_EPROTO;
      return 0;
    }
    num[len] = '\0';
    return strtod(num, NULL);
  }
  c->err = HD_EINVAL;
  return 0;
}

static double term(calc_t *c, int depth) {
  double v = factor(c, depth);
  size_t n;
  int op;

  for (;;) {
    skip(c);
    op = peek_op(c, &n);
    if (c->err || (op != '*' && op != '/')) return v;
    c->p += n;
    double r = factor(c, depth);
    if (op == '/' && r == 0) c->err = HD_EPROTO;
    v = op == '*' ? v * r : (r == 0 ? 0 : v / r);
  }
}

static double expr(calc_t *c, int depth) {
  double v = term(c, depth);
  size_t n;
  int op;

  for (;;) {
    skip(c);
    op = peek_op(c, &n);
    if (c->err || (op != '+' && op != '-')) return v;
    c->p += n;
    double r = term(c, depth);
    v = op == '+' ? v + r : v - r;
  }
}

int hd_calc_eval(const char *s, double *out) {
  calc_t c = {s, 0};
  double v = expr(&c, 0);

  skip(&c);
  if (c.err) return c.err;
  if (*c.p != '\0') return HD_EINVAL;
  if (!isfinite(v)) return HD_EPROTO;
  *out = v;
  return 0;
}

/* A character that may belong to an expression at p; *len is its size. */
static bool expr_char(const char *start, const char *p, size_t *len) {
  size_t n;
  calc_t c = {p, 0};
  int op = peek_op(&c, &n);

  *len = 1;
  if (isdigit((unsigned char)*p) || *p == '.' || *p == ' ') return true;
  if (op == 0) return false;
  *len = n;
  if (*p == 'x' || *p == 'X') { /* only as "3 x 4", never inside a word */
    const char *a = p, *b = p + 1;
    while (a > start && a[-1] == ' ') a--;
    while (*b == ' ') b++;
    return a > start && (isdigit((unsigned char)a[-1]) || a[-1] == ')') &&
           (isdigit((unsigned char)*b) || *b == '(');
  }
  return true;
}

bool hd_calc_extract(const char *text, char *out, size_t cap) {
  const char *p = text;
  char cand[256];
  int best_ops = 0;

  while (*p) {
    const char *start, *end;
    size_t n, len;
    int ops = 0, digits = 0;
    double v;

    if (!expr_char(text, p, &n)) {
      p++;
      continue;
    }
    for (start = p; *p && expr_char(text, p, &n); p += n) {
      if (isdigit((unsigned char)*p))
        digits++;
      else if (*p != ' ' && *p != '.' && *p != '(' && *p != ')')
        ops++;
    }
    /* Trim blanks, and a sentence's final dot ("is 12*7."). */
    end = p;
    while (start < end && *start == ' ') start++;
    while (end > start && (end[-1] == ' ' || end[-1] == '.')) end--;
    len = (size_t)(end - start);
    if (digits < 2 || ops <= best_ops || len == 0 || len >= cap || len >= sizeof(cand))
      continue;
    memcpy(cand, start, len);
    cand[len] = '\0';
    if (hd_calc_eval(cand, &v) == HD_EINVAL) continue; /* not arithmetic after all */
    memcpy(out, cand, len + 1);
    best_ops = ops;
  }
  return best_ops > 0;
}

/* ---- the agent ------------------------------------------------------------------- */

typedef struct {
  hd_agent_t base;
  hd_demo_config_t cfg;
} demo_t;

enum { STEP_THINK, STEP_TOOL, STEP_RESULT, STEP_ANSWER, STEP_DONE };

typedef struct {
  hd_run_t *run;
  demo_t *agent;
  hd_timer_t *timer;
  int step;
  int thoughts_left;
  int row, col; /* the next thought in thoughts[][] */
  const char *tool;
  json_t *args;
  json_t *result;
  bool ok;
  char *answer;
  const char *cursor; /* next word of the answer to stream */
} state_t;

static const char *const thoughts[][3] = {
    {"Reading your question.", "This is arithmetic, so I'll use the calculator.",
     "Checking the order of operations."},
    {"Reading your question.", "You're asking about the time; I'll check the clock.",
     "Formatting the answer."},
    {"Reading your message.", "I'll count its words with the word_count tool.",
     "Putting the numbers together."},
};

static unsigned pace(const demo_t *d) {
  unsigned span = d->cfg.pace_max_ms - d->cfg.pace_min_ms;
  return d->cfg.pace_min_ms + (span ? (unsigned)rand() % (span + 1) : 0);
}

static void emit(state_t *s, hd_event_type_t type, json_t *data) {
  char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;
  if (text) hd_run_emit(s->run, type, text);
  free(text);
  json_decref(data);
}

static char *format_number(double v) {
  char buf[64];
  if (fabs(v) < 1e15 && v == (double)(long long)v)
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
  else
    snprintf(buf, sizeof(buf), "%.10g", v);
  return strdup(buf);
}

/* Chooses and runs the tool; builds the answer. */
static int plan(state_t *s) {
  const char *in = s->run->input;
  char expr_text[256], buf[512];
  double v;
  int kind;

  if (hd_calc_extract(in, expr_text, sizeof(expr_text))) {
    int rc = hd_calc_eval(expr_text, &v);
    kind = 0;
    s->tool = "calculator";
    s->args = json_pack("{s:s}", "expression", expr_text);
    s->ok = rc == 0;
    if (s->ok) {
      char *num = format_number(v);
      s->result = json_real(v);
      if (v == (double)(long long)v && fabs(v) < 1e15) {
        json_decref(s->result);
        s->result = json_integer((json_int_t)v);
      }
      snprintf(buf, sizeof(buf), "%s = %s.", expr_text, num ? num : "?");
      free(num);
    } else {
      s->result = json_pack("{s:s}", "error", "division by zero or overflow");
      snprintf(buf, sizeof(buf),
               "I couldn't compute %s: it divides by zero or overflows.", expr_text);
    }
  } else if (strcasestr(in, "time") || strcasestr(in, "clock") ||
             strcasestr(in, "date") || strcasestr(in, "today")) {
    time_t now = time(NULL);
    struct tm tm;
    char iso[32], hm[8], day[16];
    kind = 1;
    gmtime_r(&now, &tm);
    strftime(iso, sizeof(iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
    strftime(hm, sizeof(hm), "%H:%M", &tm);
    strftime(day, sizeof(day), "%Y-%m-%d", &tm);
    s->tool = "clock";
    s->args = json_pack("{s:s}", "timezone", "UTC");
    s->result = json_pack("{s:s}", "utc", iso);
    s->ok = true;
    snprintf(buf, sizeof(buf), "It is %s UTC on %s.", hm, day);
  } else {
    size_t words = 0, chars = 0;
    bool in_word = false;
    kind = 2;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
      if ((*p & 0xC0) != 0x80) chars++;
      if (isspace(*p))
        in_word = false;
      else if (!in_word)
        in_word = true, words++;
    }
    s->tool = "word_count";
    s->args = json_pack("{s:s}", "text", in);
    s->result = json_pack("{s:I, s:I}", "words", (json_int_t)words, "characters",
                          (json_int_t)chars);
    s->ok = true;
    snprintf(buf, sizeof(buf), "Your message has %zu word%s and %zu character%s.", words,
             words == 1 ? "" : "s", chars, chars == 1 ? "" : "s");
  }
  s->row = kind;
  s->col = 0;
  s->thoughts_left = 1 + rand() % 3;
  s->answer = strdup(buf);
  s->cursor = s->answer;
  s->step = STEP_THINK;
  return s->args && s->result && s->answer ? 0 : HD_ENOMEM;
}

static void tick(void *arg) {
  state_t *s = arg;
  char call_id[] = "call-1";

  switch (s->step) {
  case STEP_THINK:
    emit(s, HD_EV_AGENT_THINKING, json_pack("{s:s}", "text", thoughts[s->row][s->col++]));
    if (--s->thoughts_left == 0) s->step = STEP_TOOL;
    break;
  case STEP_TOOL:
    emit(s, HD_EV_TOOL_EXECUTING,
         json_pack("{s:s, s:s, s:O}", "tool", s->tool, "call_id", call_id, "args",
                   s->args));
    s->step = STEP_RESULT;
    break;
  case STEP_RESULT:
    emit(s, HD_EV_TOOL_COMPLETED,
         json_pack("{s:s, s:s, s:b, s:O}", "tool", s->tool, "call_id", call_id, "ok",
                   s->ok, "result", s->result));
    s->step = STEP_ANSWER;
    break;
  case STEP_ANSWER: {
    /* One word (with its trailing space) per step. */
    const char *p = s->cursor, *e = p;
    while (*e && *e != ' ') e++;
    while (*e == ' ') e++;
    char *word = strndup(p, (size_t)(e - p));
    emit(s, HD_EV_AGENT_MESSAGE, json_pack("{s:s}", "delta", word ? word : ""));
    free(word);
    s->cursor = e;
    if (*e == '\0') s->step = STEP_DONE;
    break;
  }
  default:
    hd_run_finish(s->run, true, s->answer, NULL); /* calls stop(): s is freed */
    return;
  }
  hd_timer_start(s->timer, pace(s->agent));
}

static int demo_start(hd_agent_t *a, hd_run_t *run) {
  state_t *s = calloc(1, sizeof(*s));

  if (s == NULL) return HD_ENOMEM;
  s->run = run;
  s->agent = (demo_t *)a;
  run->agent_data = s;
  if (plan(s) < 0 || (s->timer = hd_timer_new(run->worker, tick, s)) == NULL) {
    json_decref(s->args);
    json_decref(s->result);
    free(s->answer);
    free(s);
    run->agent_data = NULL;
    return HD_ENOMEM;
  }
  hd_timer_start(s->timer, pace(s->agent));
  return 0;
}

static void demo_stop(hd_agent_t *a, hd_run_t *run, bool cancelled) {
  state_t *s = run->agent_data;

  if (s == NULL) return;
  hd_timer_free(s->timer);
  json_decref(s->args);
  json_decref(s->result);
  free(s->answer);
  free(s);
  run->agent_data = NULL;
}

static void demo_free(hd_agent_t *a) {
  free(a);
}

static const hd_agent_ops_t demo_ops = {"demo", demo_start, demo_stop, demo_free};

hd_agent_t *hd_agent_demo_new(const hd_demo_config_t *cfg) {
  demo_t *d = calloc(1, sizeof(*d));
  if (d == NULL) return NULL;
  d->base.ops = &demo_ops;
  d->cfg = *cfg;
  return &d->base;
}
