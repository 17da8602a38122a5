/* test_judge_parse.c - jobs/judge_parse.c: JudgeLM's parse_score (every row of the table in
 * research/judgelm.md section 2), Python's float() acceptance (the expected values were
 * produced by CPython 3.11's float() on each input), the win label, str.strip() and the fast /
 * detailed post-processing; plus the Python-style JSON writer of jobs_io.c (expected bytes from
 * CPython's json.dumps and repr). */
#include "jobs/jobs_impl.h"
#include "jobs/judge.h"

/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void expect_scores(const char *text, size_t len, int n, const double *want)
{
    double got[JUDGE_MAX_ANSWERS];
    int rc = judge_score_parse(text, len, n, got);
    if (!want) {
        if (rc != -EINVAL) {
            fail_msg("'%.*s' parsed, JudgeLM gives [-1, -1]", (int)len, text);
        }
        for (int k = 0; k < n; k++) {
            assert_true(got[k] == -1.0);
        }
        return;
    }
    if (rc != 0) {
        fail_msg("'%.*s' did not parse", (int)len, text);
    }
    for (int k = 0; k < n; k++) {
        if (!(got[k] == want[k] || (isnan(got[k]) && isnan(want[k])))) {
            fail_msg("'%.*s' field %d: got %g want %g", (int)len, text, k, got[k], want[k]);
        }
    }
}

#define PARSED(s, ...)                                                          \
    do {                                                                        \
        const double w_[] = { __VA_ARGS__ };                                    \
        expect_scores(s, sizeof(s) - 1, (int)(sizeof(w_) / sizeof(w_[0])), w_); \
    } while (0)
#define FAILS(s) expect_scores(s, sizeof(s) - 1, 2, NULL)

static void test_parse_score_table_parsed_rows(void **state)
{
    (void)state;
    PARSED("8 7", 8, 7);
    PARSED("10 8", 10, 8);
    PARSED("8.5 9", 8.5, 9);
    PARSED("8,7", 8, 7);
    PARSED("1e1 5", 10, 5);
    /* only the first line counts */
    PARSED("8 7\nAssistant 1 was 3 4", 8, 7);
    PARSED("1 5\n\nAssistant 1's response is completely irrelevant", 1, 5);
}

static void test_parse_score_table_failing_rows(void **state)
{
    (void)state;
    FAILS("8, 7");  /* comma + space: three fields */
    FAILS("8  7");  /* two spaces */
    FAILS(" 8 7");  /* leading space */
    FAILS("8 7 ");  /* trailing space */
    FAILS("8\t7");  /* a tab does not split */
    FAILS("8 7 6"); /* three fields */
    FAILS("");
    FAILS("\n8 7"); /* text starting with a newline: the first line is empty */
    FAILS("Assistant 1: 8");
}

static void test_parse_score_table_python_float_rows(void **state)
{
    (void)state;
    /* accepted by Python's float(); reproduced (see judge_parse.c) */
    PARSED("nan 3", NAN, 3);
    PARSED("inf 2", INFINITY, 2);
    PARSED("1_0 5", 10, 5);
    PARSED("\xef\xbc\x98 \xef\xbc\x97", 8, 7); /* full-width digits */
    /* float() strips what split(' ') leaves in a field */
    PARSED("8 \t7", 8, 7);
    PARSED("8 7\r\nmore", 8, 7);
    PARSED("8\xc2\xa0 7", 8, 7);
    FAILS("8\x1c 7"); /* \x1c is not stripped by float() */
}

static void test_parse_score_n_fields(void **state)
{
    (void)state;
    PARSED("8 7 6", 8, 7, 6);
    PARSED("1,2,3,4", 1, 2, 3, 4);
    PARSED("10 9 8 7 6 5 4 3 2 1 10 9 8 7 6 5 4 3 2", 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 10, 9, 8, 7, 6,
           5, 4, 3, 2);
    double got[3];
    assert_int_equal(judge_score_parse("8 7", 3, 3, got), -EINVAL);
    assert_true(got[0] == -1 && got[1] == -1 && got[2] == -1);
    assert_int_equal(judge_score_parse("8 7 6 5", 7, 3, got), -EINVAL);
    assert_int_equal(judge_score_parse("7", 1, 1, got), 0);
    assert_true(got[0] == 7);
    assert_int_equal(judge_score_parse("8 7", 3, 0, got), -EINVAL);
    assert_int_equal(judge_score_parse("8 7", 3, 20, got), -EINVAL);
}

/* CPython 3.11 float() on each input: ok = 0 where it raises ValueError. */
static const struct {
    const char *s;
    size_t len;
    int ok;
    double v;
} py_float_cases[] = {
    { "8", 1, 1, 8.0 },
    { "\x09"
      "8",
      2, 1, 8.0 },
    { "8\x0d", 2, 1, 8.0 },
    { "\x0b"
      "8\x0c",
      3, 1, 8.0 },
    { " 8 ", 3, 1, 8.0 },
    { "\x1c"
      "8",
      2, 0, 0 },
    { "8\x1c", 2, 0, 0 },
    { "1_0", 3, 1, 10.0 },
    { "_10", 3, 0, 0 },
    { "10_", 3, 0, 0 },
    { "1__0", 4, 0, 0 },
    { "1_.5", 4, 0, 0 },
    { "1._5", 4, 0, 0 },
    { "1.5_0", 5, 1, 1.5 },
    { "1e1_0", 5, 1, 10000000000.0 },
    { "1e_10", 5, 0, 0 },
    { "1_e5", 4, 0, 0 },
    { "nan", 3, 1, NAN },
    { "NaN", 3, 1, NAN },
    { "-nan", 4, 1, NAN },
    { "+inf", 4, 1, INFINITY },
    { "infinity", 8, 1, INFINITY },
    { "-Infinity", 9, 1, -INFINITY },
    { "INF", 3, 1, INFINITY },
    { "iNfInItY", 8, 1, INFINITY },
    { "infinit", 7, 0, 0 },
    { "inf_", 4, 0, 0 },
    { "1e", 2, 0, 0 },
    { "1e+", 3, 0, 0 },
    { ".5", 2, 1, 0.5 },
    { "5.", 2, 1, 5.0 },
    { ".", 1, 0, 0 },
    { "+.5e-3", 6, 1, 0.0005 },
    { "0x10", 4, 0, 0 },
    { "1.0e5", 5, 1, 100000.0 },
    { "\xc2\xa0"
      "8",
      3, 1, 8.0 },
    { "8\xe3\x80\x80", 4, 1, 8.0 },
    { "\xef\xbc\x98", 3, 1, 8.0 },
    { "\xd9\xa8", 2, 1, 8.0 },
    { "1\xc2\xa0", 3, 1, 1.0 },
    { "\xc2\x85"
      "1",
      3, 1, 1.0 },
    { "1 ", 2, 1, 1.0 },
    { "", 0, 0, 0 },
    { "+", 1, 0, 0 },
    { "-0", 2, 1, -0.0 },
    { "nan(1)", 6, 0, 0 },
    { "1d5", 3, 0, 0 },
    { "1E5", 3, 1, 100000.0 },
    { "1.5e", 4, 0, 0 },
    { "\xef\xbc\x98.\xef\xbc\x95", 7, 1, 8.5 },
    { "8\xe2\x80\x8b", 4, 0, 0 },
    { "\xe1\xa0\x8e"
      "8",
      4, 0, 0 },
    { "\xe2\x80\xa8"
      "8",
      4, 1, 8.0 },
    { "\xef\xbc\x8e"
      "5",
      4, 0, 0 },
    { "1\xe3\x80\x80"
      "2",
      5, 0, 0 },
    { "0009", 4, 1, 9.0 },
    { "1e999", 5, 1, INFINITY },
    { "-1e999", 6, 1, -INFINITY },
    { "1e-999", 6, 1, 0.0 },
    { "8\x00", 2, 0, 0 },
    { "\x7f"
      "8",
      2, 0, 0 },
    { "+-1", 3, 0, 0 },
    { "--1", 3, 0, 0 },
    { "1.2.3", 5, 0, 0 },
    { "\xd9\xa1\xd9\xa0", 4, 1, 10.0 },
    { "\xf0\x9d\x9f\x96", 4, 1, 8.0 },
    { "8 7", 3, 0, 0 },
    { "  ", 2, 0, 0 },
    { "\x09", 1, 0, 0 },
    { "1,0", 3, 0, 0 },
    { "0.1", 3, 1, 0.1 },
    { "2.2250738585072014e-308", 23, 1, 2.2250738585072014e-308 },
    { "9007199254740993", 16, 1, 9007199254740992.0 },
};

static void test_python_float_acceptance(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(py_float_cases) / sizeof(py_float_cases[0]); i++) {
        double v = 12345;
        bool ok = judge_float_parse(py_float_cases[i].s, py_float_cases[i].len, &v);
        if (ok != (bool)py_float_cases[i].ok) {
            fail_msg("case %zu: '%.*s' ok=%d, Python says %d", i, (int)py_float_cases[i].len,
                     py_float_cases[i].s, ok, py_float_cases[i].ok);
        }
        double want = py_float_cases[i].v;
        if (ok && !(v == want || (isnan(v) && isnan(want)))) {
            fail_msg("case %zu: '%.*s' = %.17g, Python says %.17g", i, (int)py_float_cases[i].len,
                     py_float_cases[i].s, v, want);
        }
        if (ok && want == 0.0) {
            assert_int_equal(signbit(v), signbit(want));
        }
    }
}

static void test_win_label(void **state)
{
    (void)state;
    assert_int_equal(judge_score_win(8, 7), 1);
    assert_int_equal(judge_score_win(7, 8), -1);
    assert_int_equal(judge_score_win(7, 7), 0);
    assert_int_equal(judge_score_win(8.5, 8.4), 1);
    assert_int_equal(judge_score_win(-1, -1), 0); /* a failed parse is a tie */
    assert_int_equal(judge_score_win(NAN, 3), 0); /* NaN compares as a tie */
    assert_int_equal(judge_score_win(INFINITY, INFINITY), 0);
    assert_int_equal(judge_score_win(INFINITY, 2), 1);
}

static void expect_post(enum judge_output mode, const char *in, const char *want)
{
    size_t len;
    char *got = judge_text_postprocess(mode, in, strlen(in), &len);
    assert_string_equal(got, want);
    assert_int_equal(len, strlen(want));
    free(got);
}

static void test_postprocess_fast_and_detailed(void **state)
{
    (void)state;
    expect_post(JUDGE_OUTPUT_FAST, "8 7", "8 7");
    expect_post(JUDGE_OUTPUT_FAST, "8 7\nAssistant 1 ...", "8 7");
    expect_post(JUDGE_OUTPUT_FAST, " 8 7 ", "8 7");
    expect_post(JUDGE_OUTPUT_FAST, "\n8 7", "");
    /* detailed: whole text stripped; the last character is kept (JudgeLM's find(-1) bug is not
     * reproduced) */
    expect_post(JUDGE_OUTPUT_DETAILED, "8 7\nAssistant 1 is better.",
                "8 7\nAssistant 1 is better.");
    expect_post(JUDGE_OUTPUT_DETAILED, "\n 8 7\nGood.\n\n", "8 7\nGood.");
    /* fast output with no newline is not cut either */
    expect_post(JUDGE_OUTPUT_FAST, "8 7", "8 7");
    /* Python's str.strip(): Unicode White_Space and \x1c-\x1f too */
    expect_post(JUDGE_OUTPUT_DETAILED, "\xc2\xa0\xe3\x80\x80 8 7\x1c\x1f\xe2\x80\xa9", "8 7");
    expect_post(JUDGE_OUTPUT_DETAILED,
                "\xe2\x80\x8b"
                "8 7",
                "\xe2\x80\x8b"
                "8 7"); /* U+200B is not whitespace */
    expect_post(JUDGE_OUTPUT_DETAILED, "", "");
    expect_post(JUDGE_OUTPUT_DETAILED, " \t\n", "");
    size_t a, b;
    judge_text_strip("x\x80", 2, &a, &b); /* a stray byte is kept */
    assert_int_equal(a, 0);
    assert_int_equal(b, 2);
}

/* CPython 3.11 repr(float) */
static const struct {
    double v;
    const char *repr;
} py_repr_cases[] = {
    { 0.1, "0.1" },
    { 1e+16, "1e+16" },
    { 1.5e-07, "1.5e-07" },
    { 1234.5, "1234.5" },
    { 8.0, "8.0" },
    { -0.0, "-0.0" },
    { 0.0, "0.0" },
    { 1e-05, "1e-05" },
    { 0.0001, "0.0001" },
    { 1.2345678901234568e+17, "1.2345678901234568e+17" },
    { 1700000000.123456, "1700000000.123456" },
    { 5e-324, "5e-324" },
    { 1.7976931348623157e+308, "1.7976931348623157e+308" },
    { 0.30000000000000004, "0.30000000000000004" },
    { -2.5e-10, "-2.5e-10" },
    { 100.0, "100.0" },
    { 1000000000000000.0, "1000000000000000.0" },
    { 0.5, "0.5" },
    { 7.8312, "7.8312" },
    { 1.152921504606847e+18, "1.152921504606847e+18" },
};

static void test_python_float_repr(void **state)
{
    (void)state;
    char buf[64];
    for (size_t i = 0; i < sizeof(py_repr_cases) / sizeof(py_repr_cases[0]); i++) {
        jobs_float_repr(py_repr_cases[i].v, buf, sizeof(buf));
        assert_string_equal(buf, py_repr_cases[i].repr);
    }
}

static void test_python_json_dumps(void **state)
{
    (void)state;
    /* json.dumps of this record, by CPython 3.11 */
    const char *in = "{\"question_id\": 3, \"text\": \"caf\\u00e9 \\\"q\\\" \\\\ /\\n\\t\\r\\b\\f"
                     "\\u0001\\u007f \\ud83d\\ude00 \\u2028\", \"a\": [1, 2.5, true, null, {}], "
                     "\"b\": {}, \"c\": []}";
    json_error_t jerr;
    json_t *v = json_loads(in, 0, &jerr);
    assert_non_null(v);
    size_t len;
    char *out = jobs_json_dumps_python(v, &len);
    assert_string_equal(out, in);
    assert_int_equal(len, strlen(in));
    free(out);
    json_decref(v);
    /* an embedded NUL survives as \u0000 */
    v = json_stringn("a\0b", 3);
    out = jobs_json_dumps_python(v, &len);
    assert_string_equal(out, "\"a\\u0000b\"");
    free(out);
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_score_table_parsed_rows),
        cmocka_unit_test(test_parse_score_table_failing_rows),
        cmocka_unit_test(test_parse_score_table_python_float_rows),
        cmocka_unit_test(test_parse_score_n_fields),
        cmocka_unit_test(test_python_float_acceptance),
        cmocka_unit_test(test_win_label),
        cmocka_unit_test(test_postprocess_fast_and_detailed),
        cmocka_unit_test(test_python_float_repr),
        cmocka_unit_test(test_python_json_dumps),
    };
    return cmocka_run_group_tests_name("judge_parse", tests, NULL, NULL);
}
