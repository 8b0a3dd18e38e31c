/* Tests for src/agent/demo.c: the demo agent's calculator (hd_calc_eval) and
 * the expression finder (hd_calc_extract) that decides when it is used.
 *
 * hd_calc_eval: precedence, parentheses, decimals, unary minus, the Unicode and
 * letter operator signs, division by zero and overflow (HD_EPROTO), syntax
 * errors (HD_EINVAL) and bounded nesting (no stack exhaustion on hostile input).
 * hd_calc_extract: the expression inside a sentence, and no expression where a
 * sentence merely holds numbers or number words; a tiny output buffer is never
 * overrun. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "herald/herald.h"
#include "support/unit.h"

/* ---- hd_calc_eval ----------------------------------------------------------- */

static void check_value(const char *expr, double want, int line) {
  double v = -12345.678;
  int rc = hd_calc_eval(expr, &v);
  hd_test_checks++;
  if (rc != 0 || fabs(v - want) > 1e-9 * (fabs(want) > 1 ? fabs(want) : 1)) {
    hd_test_failures++;
    fprintf(stderr, "test_demo.c:%d: hd_calc_eval(\"%s\") = %d, %.17g; want 0, %.17g\n",
            line, expr, rc, v, want);
  }
}
#define EVAL_IS(expr, want) check_value((expr), (want), __LINE__)

static void check_error(const char *expr, int want_rc, int line) {
  double v = 4242.0;
  int rc = hd_calc_eval(expr, &v);
  hd_test_checks++;
  if (rc != want_rc) {
    hd_test_failures++;
    fprintf(stderr, "test_demo.c:%d: hd_calc_eval(\"%.60s%s\") = %d (%s), want %d (%s)\n",
            line, expr, strlen(expr) > 60 ? "..." : "", rc, hd_err_name(rc), want_rc,
            hd_err_name(want_rc));
  }
  /* A failed evaluation leaves *out alone. */
  hd_test_checks++;
  if (rc != 0 && v != 4242.0) {
    hd_test_failures++;
    fprintf(stderr, "test_demo.c:%d: hd_calc_eval(\"%.60s\") failed but wrote %.17g\n",
            line, expr, v);
  }
}
#define EVAL_FAILS(expr, rc) check_error((expr), (rc), __LINE__)

static void test_arithmetic(void) {
  EVAL_IS("12*7", 84);
  EVAL_IS("2+3*4", 14);
  EVAL_IS("2*3+4", 10);
  EVAL_IS("10-4-3", 3);   /* left associative */
  EVAL_IS("100/10/5", 2); /* left associative */
  EVAL_IS("2+3*4-6/2", 11);
  EVAL_IS("(2+3)*4", 20);
  EVAL_IS("2*(3+4)", 14);
  EVAL_IS("((1+2)*(3+4))", 21);
  EVAL_IS("(((7)))", 7);
  EVAL_IS("  1 +  2 ", 3);
  EVAL_IS("\t6\t/\t4", 1.5);
  EVAL_IS("7/2", 3.5);
  EVAL_IS("42", 42);
  EVAL_IS("0", 0);
}

static void test_decimals(void) {
  double v = 0;
  CHECK_INT(hd_calc_eval("0.1+0.2", &v), 0);
  CHECK(fabs(v - 0.3) < 1e-12);
  EVAL_IS("1.5*2", 3);
  EVAL_IS(".5+.5", 1);
  EVAL_IS("3.25-0.25", 3);
  EVAL_IS("2.5*(1.5+0.5)", 5);
}

static void test_unary(void) {
  EVAL_IS("-3", -3);
  EVAL_IS("-3+5", 2);
  EVAL_IS("2*-3", -6);
  EVAL_IS("-(2+3)", -5);
  EVAL_IS("--2", 2);
  EVAL_IS("+4", 4);
  EVAL_IS("4-(-4)", 8);
  EVAL_IS("-2*-2", 4);
}

static void test_signs(void) {
  EVAL_IS("3 x 4", 12);
  EVAL_IS("3x4", 12);
  EVAL_IS("3 X 4", 12);
  EVAL_IS("3 \xC3\x97 4", 12); /* × */
  EVAL_IS("(2+3)\xC3\x97"
          "4",
          20);                    /* (2+3)×4 */
  EVAL_IS("12 \xC3\xB7 4", 3);    /* ÷ */
  EVAL_IS("5 \xE2\x88\x92 3", 2); /* − (U+2212) */
  EVAL_IS("\xE2\x88\x92"
          "5",
          -5); /* unary − */
  EVAL_IS("2 x 3 \xC3\xB7 6 \xE2\x88\x92 1", 0);
  /* "x" is multiplication, also right after a zero: not a C hex prefix. */
  EVAL_IS("0x5", 0);
  EVAL_IS("0x10", 0);
}

static void test_errors(void) {
  /* Division by zero and overflow: HD_EPROTO. */
  EVAL_FAILS("1/0", HD_EPROTO);
  EVAL_FAILS("0/0", HD_EPROTO);
  EVAL_FAILS("5/(2-2)", HD_EPROTO);
  EVAL_FAILS("3 \xC3\xB7 0", HD_EPROTO);
  EVAL_FAILS("1+2/0*3", HD_EPROTO);
  {
    char big[700];
    size_t n = 0;
    big[n++] = '1';
    for (int i = 0; i < 300; i++) big[n++] = '0';
    big[n++] = '*';
    big[n++] = '1';
    for (int i = 0; i < 300; i++) big[n++] = '0';
    big[n] = '\0';
    EVAL_FAILS(big, HD_EPROTO); /* 1e300 * 1e300 = inf */
  }

  /* Syntax: HD_EINVAL. */
  EVAL_FAILS("2+", HD_EINVAL);
  EVAL_FAILS("(3", HD_EINVAL);
  EVAL_FAILS("3)", HD_EINVAL);
  EVAL_FAILS("()", HD_EINVAL);
  EVAL_FAILS("abc", HD_EINVAL);
  EVAL_FAILS("", HD_EINVAL);
  EVAL_FAILS("   ", HD_EINVAL);
  EVAL_FAILS("*3", HD_EINVAL);
  EVAL_FAILS("2 3", HD_EINVAL);
  EVAL_FAILS("2**3", HD_EINVAL);
  EVAL_FAILS("12*7?", HD_EINVAL);
  EVAL_FAILS("1+abc", HD_EINVAL);
  EVAL_FAILS(".", HD_EINVAL);
  EVAL_FAILS("\xC3", HD_EINVAL);     /* a cut UTF-8 sequence */
  EVAL_FAILS("\xE2\x88", HD_EINVAL); /* a cut − */
}

static void test_nesting(void) {
  /* Reasonable nesting works... */
  {
    char s[128];
    size_t n = 0;
    for (int i = 0; i < 30; i++) s[n++] = '(';
    s[n++] = '9';
    for (int i = 0; i < 30; i++) s[n++] = ')';
    s[n] = '\0';
    EVAL_IS(s, 9);
  }
  /* ...and hostile nesting is refused, not a stack overflow. */
  {
    size_t depth = 200000;
    char *s = malloc(2 * depth + 2);
    CHECK(s != NULL);
    if (s) {
      memset(s, '(', depth);
      s[depth] = '1';
      memset(s + depth + 1, ')', depth);
      s[2 * depth + 1] = '\0';
      EVAL_FAILS(s, HD_EINVAL);
      memset(s, '-', 2 * depth);
      s[2 * depth] = '1';
      s[2 * depth + 1] = '\0';
      EVAL_FAILS(s, HD_EINVAL); /* a long run of unary minus */
      memset(s, '(', 2 * depth + 1);
      s[2 * depth + 1] = '\0';
      EVAL_FAILS(s, HD_EINVAL); /* unclosed */
      free(s);
    }
  }
  /* A long flat expression is fine (no depth involved). */
  {
    size_t terms = 20000;
    char *s = malloc(terms * 2 + 1);
    CHECK(s != NULL);
    if (s) {
      for (size_t i = 0; i < terms; i++) {
        s[2 * i] = '1';
        s[2 * i + 1] = '+';
      }
      s[2 * terms - 1] = '\0';
      EVAL_IS(s, (double)terms);
      free(s);
    }
  }
}

/* ---- hd_calc_extract -------------------------------------------------------- */

static void check_extract(const char *text, const char *want, int line) {
  char out[256];
  bool found;

  memset(out, 0x5A, sizeof(out));
  out[sizeof(out) - 1] = '\0';
  found = hd_calc_extract(text, out, sizeof(out));
  hd_test_checks++;
  if (want == NULL ? found : (!found || strcmp(out, want) != 0)) {
    hd_test_failures++;
    fprintf(stderr, "test_demo.c:%d: hd_calc_extract(\"%s\") = %s \"%s\"; want %s%s%s\n",
            line, text, found ? "found" : "none", found ? out : "", want ? "\"" : "",
            want ? want : "none", want ? "\"" : "");
  }
}
#define EXTRACTS(text, want) check_extract((text), (want), __LINE__)

static void test_extract(void) {
  EXTRACTS("what is 12*7?", "12*7");
  EXTRACTS("compute (2+3)\xC3\x97"
           "4 please",
           "(2+3)\xC3\x97"
           "4");
  EXTRACTS("3 x 4", "3 x 4");
  EXTRACTS("What is 3 x 4?", "3 x 4");
  EXTRACTS("12*7", "12*7");
  EXTRACTS("what's 1.5 + 2.25 ?", "1.5 + 2.25");
  EXTRACTS("the answer to 12*7.", "12*7");
  EXTRACTS("how much is 10 \xC3\xB7 4", "10 \xC3\xB7 4");
  EXTRACTS("and 9 \xE2\x88\x92 3?", "9 \xE2\x88\x92 3");
  EXTRACTS("what is 1/0?", "1/0"); /* found; evaluating it reports the error */
  /* The expression with the most operators wins. */
  EXTRACTS("2+2 or rather 3*4*5?", "3*4*5");

  /* No arithmetic. */
  EXTRACTS("six x five", NULL);
  EXTRACTS("I have 3 cats", NULL);
  EXTRACTS("I have 3 cats and 2 dogs", NULL);
  EXTRACTS("version 1.2.3", NULL);
  EXTRACTS("explain the xylophone", NULL);
  EXTRACTS("box 3", NULL);
  EXTRACTS("hello there", NULL);
  EXTRACTS("what time is it?", NULL);
  EXTRACTS("", NULL);
  EXTRACTS("42", NULL);
  EXTRACTS("-", NULL);
  EXTRACTS("((((", NULL);
  EXTRACTS("max 3x", NULL); /* an x with no right operand */

  /* Whatever is extracted always evaluates without a syntax error. */
  {
    static const char *const texts[] = {
        "what is 12*7?",
        "compute (2+3)\xC3\x97"
        "4 please",
        "3 x 4",
        "2 + (3",
        "1) + 2 (",
        "call 555-1234",
        "on 2024-01-15 at 10:30",
        "a - b - 1 - 2",
        "x 2 x 3 x",
        "(((1+2",
        "1+2)))",
        ". . 1 . + . 2",
        "10 %  3 + 1",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
      char out[256];
      double v;
      if (hd_calc_extract(texts[i], out, sizeof(out))) {
        int rc = hd_calc_eval(out, &v);
        hd_test_checks++;
        if (rc == HD_EINVAL) {
          hd_test_failures++;
          fprintf(stderr, "extract(\"%s\") = \"%s\" which does not parse\n", texts[i],
                  out);
        }
      }
    }
  }

  /* The output buffer's capacity is respected. */
  {
    char small[8];
    memset(small, 0x5A, sizeof(small));
    CHECK(hd_calc_extract("what is 12*7?", small, 5)); /* "12*7" + NUL fits */
    CHECK_STR(small, "12*7");
    memset(small, 0x5A, sizeof(small));
    CHECK(!hd_calc_extract("what is 12*7?", small, 4)); /* does not fit: not found */
    CHECK_INT((unsigned char)small[4], 0x5A);
    CHECK_INT((unsigned char)small[0], 0x5A);
  }

  /* A long message: no overrun, and a long expression is not taken. */
  {
    size_t n = 100000;
    char *s = malloc(n + 1);
    char out[256];
    CHECK(s != NULL);
    if (s) {
      for (size_t i = 0; i < n; i++) s[i] = (i % 2) ? '+' : '1';
      s[n] = '\0';
      (void)hd_calc_extract(s, out, sizeof(out)); /* must not crash */
      memset(s, 'a', n);
      memcpy(s + n / 2, " 6*7 ", 5);
      CHECK(hd_calc_extract(s, out, sizeof(out)));
      CHECK_STR(out, "6*7");
      free(s);
    }
  }
}

int main(void) {
  test_arithmetic();
  test_decimals();
  test_unary();
  test_signs();
  test_errors();
  test_nesting();
  test_extract();
  TEST_MAIN_END();
}
