/* judge_parse.c - JudgeLM's parse_score and output post-processing, with Python's float() and
 * str.strip() reproduced exactly, since parse_score's behaviour is defined by them (see judge.h).
 *
 * Decisions where a C port must choose (research/judgelm.md section 2):
 * - "nan", "inf", "infinity" (any case, signed) are accepted, as Python does; NaN scores compare
 *   as a tie, as in JudgeLM, and are written as null in JSON output.
 * - PEP 515 underscores ("1_0") are accepted where Python accepts them: only between digits.
 * - Non-ASCII: CPython maps Unicode White_Space to ' ' and decimal digits (category Nd) to ASCII
 *   digits before parsing; so do we, with the tables below (generated from Python 3.11's
 *   unicodedata, Unicode 14.0; JudgeLM's Python 3.8-3.10 knew a few blocks fewer). Every other
 *   non-ASCII character (full-width '．' included) fails, as in Python. */
#include "common/xmalloc.h"
#include "jobs/judge.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* First code point of each run of ten Unicode decimal digits (0..9) above ASCII. */
static const uint32_t judge_nd_zeros[] = {
    0x660,   0x6F0,   0x7C0,   0x966,   0x9E6,   0xA66,   0xAE6,   0xB66,   0xBE6,   0xC66,
    0xCE6,   0xD66,   0xDE6,   0xE50,   0xED0,   0xF20,   0x1040,  0x1090,  0x17E0,  0x1810,
    0x1946,  0x19D0,  0x1A80,  0x1A90,  0x1B50,  0x1BB0,  0x1C40,  0x1C50,  0xA620,  0xA8D0,
    0xA900,  0xA9D0,  0xA9F0,  0xAA50,  0xABF0,  0xFF10,  0x104A0, 0x10D30, 0x11066, 0x110F0,
    0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650, 0x116C0, 0x11730, 0x118E0, 0x11950,
    0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC,
    0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
};

/* Python's str.isspace() for one code point. */
static bool judge_py_isspace(uint32_t cp)
{
    if (cp < 0x80) {
        return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20);
    }
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* The decimal value of a non-ASCII Nd code point, or -1. */
static int judge_nd_value(uint32_t cp)
{
    for (size_t i = 0; i < sizeof(judge_nd_zeros) / sizeof(judge_nd_zeros[0]); i++) {
        if (cp >= judge_nd_zeros[i] && cp < judge_nd_zeros[i] + 10) {
            return (int)(cp - judge_nd_zeros[i]);
        }
    }
    return -1;
}

/* Decodes one UTF-8 sequence at s[0..len). Returns its length (>= 1) and the code point, or
 * length 1 and 0xFFFFFFFF for an invalid byte. */
static size_t judge_utf8_next(const unsigned char *s, size_t len, uint32_t *cp)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        n = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = 0xFFFFFFFFu;
        return 1;
    }
    if (n > len) {
        *cp = 0xFFFFFFFFu;
        return 1;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = 0xFFFFFFFFu;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = 0xFFFFFFFFu;
        return 1;
    }
    *cp = v;
    return n;
}

void judge_text_strip(const char *s, size_t len, size_t *start, size_t *end)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t a = 0, b = len;
    while (a < b) {
        uint32_t cp;
        size_t n = judge_utf8_next(u + a, b - a, &cp);
        if (!judge_py_isspace(cp)) {
            break;
        }
        a += n;
    }
    while (b > a) {
        /* back up to the first byte of the last sequence */
        size_t p = b - 1;
        while (p > a && b - p < 4 && (u[p] & 0xC0) == 0x80) {
            p--;
        }
        uint32_t cp;
        size_t n = judge_utf8_next(u + p, b - p, &cp);
        if (p + n != b) {
            n = 1, p = b - 1, cp = 0xFFFFFFFFu; /* a stray continuation byte */
        }
        if (!judge_py_isspace(cp)) {
            break;
        }
        b = p;
    }
    *start = a;
    *end = b;
}

static pthread_once_t judge_c_locale_once = PTHREAD_ONCE_INIT;
static locale_t judge_c_locale;

static void judge_c_locale_init(void)
{
    judge_c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

static bool judge_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Case-insensitive equality of s[0..len) with an all-lower-case word. */
static bool judge_word_eq(const char *s, size_t len, const char *word)
{
    if (strlen(word) != len) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') {
            c = (char)(c - 'A' + 'a');
        }
        if (c != word[i]) {
            return false;
        }
    }
    return true;
}

bool judge_float_parse(const char *s, size_t len, double *out)
{
    /* 1. CPython's _PyUnicode_TransformDecimalAndSpaceToASCII: every code point to one byte. */
    char stack_buf[128];
    char *a = len < sizeof(stack_buf) ? stack_buf : xmalloc(len + 1);
    bool ok = false;
    size_t n = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = judge_utf8_next(u + i, len - i, &cp);
        i += k;
        if (cp == 0) {
            goto done; /* an embedded NUL: Python refuses it */
        } else if (cp < 127) {
            a[n++] = (char)cp;
        } else if (cp != 0xFFFFFFFFu && judge_py_isspace(cp)) {
            a[n++] = ' ';
        } else {
            int d = cp == 0xFFFFFFFFu ? -1 : judge_nd_value(cp);
            if (d < 0) {
                goto done;
            }
            a[n++] = (char)('0' + d);
        }
    }
    /* 2. strip ASCII whitespace (Py_ISSPACE: space and \t\n\v\f\r; not \x1c-\x1f) */
    size_t b = 0, e = n;
    while (b < e && (a[b] == ' ' || (a[b] >= '\t' && a[b] <= '\r'))) {
        b++;
    }
    while (e > b && (a[e - 1] == ' ' || (a[e - 1] >= '\t' && a[e - 1] <= '\r'))) {
        e--;
    }
    /* 3. underscores: each must sit between two digits; then they are removed */
    size_t m = 0;
    char prev = '\0';
    for (size_t i = b; i < e; i++) {
        char c = a[i];
        if (c == '_') {
            if (!judge_is_digit(prev)) {
                goto done;
            }
        } else {
            if (prev == '_' && !judge_is_digit(c)) {
                goto done;
            }
            a[m++] = c;
        }
        prev = c;
    }
    if (prev == '_') {
        goto done;
    }
    a[m] = '\0';
    /* 4. the grammar of _Py_dg_strtod / _Py_parse_inf_or_nan, to the end of the string */
    size_t p = 0;
    bool neg = false;
    if (p < m && (a[p] == '+' || a[p] == '-')) {
        neg = a[p] == '-';
        p++;
    }
    if (judge_word_eq(a + p, m - p, "inf") || judge_word_eq(a + p, m - p, "infinity")) {
        *out = neg ? -INFINITY : INFINITY;
        ok = true;
        goto done;
    }
    if (judge_word_eq(a + p, m - p, "nan")) {
        *out = NAN;
        ok = true;
        goto done;
    }
    size_t n_digits = 0;
    while (p < m && judge_is_digit(a[p])) {
        p++, n_digits++;
    }
    if (p < m && a[p] == '.') {
        p++;
        while (p < m && judge_is_digit(a[p])) {
            p++, n_digits++;
        }
    }
    if (n_digits == 0) {
        goto done;
    }
    if (p < m && (a[p] == 'e' || a[p] == 'E')) {
        p++;
        if (p < m && (a[p] == '+' || a[p] == '-')) {
            p++;
        }
        size_t n_exp = 0;
        while (p < m && judge_is_digit(a[p])) {
            p++, n_exp++;
        }
        if (n_exp == 0) {
            goto done;
        }
    }
    if (p != m) {
        goto done;
    }
    /* validated: plain decimal syntax, which strtod in the C locale rounds correctly */
    pthread_once(&judge_c_locale_once, judge_c_locale_init);
    *out = judge_c_locale ? strtod_l(a, NULL, judge_c_locale) : strtod(a, NULL);
    ok = true;
done:
    if (a != stack_buf) {
        free(a);
    }
    return ok;
}

int judge_score_parse(const char *text, size_t len, int n, double *scores)
{
    if (n < 1 || n > JUDGE_MAX_ANSWERS || (!text && len > 0)) {
        return -EINVAL;
    }
    const char *nl = len ? memchr(text, '\n', len) : NULL;
    size_t line = nl ? (size_t)(nl - text) : len;
    /* split(' ') after replace(',', ' '): fields end at every ' ' or ',' */
    int n_fields = 0;
    size_t start = 0;
    double v[JUDGE_MAX_ANSWERS];
    for (size_t i = 0; i <= line; i++) {
        if (i < line && text[i] != ' ' && text[i] != ',') {
            continue;
        }
        if (n_fields == n || !judge_float_parse(text + start, i - start, &v[n_fields])) {
            n_fields = -1;
            break;
        }
        n_fields++;
        start = i + 1;
    }
    if (n_fields != n) {
        for (int k = 0; k < n; k++) {
            scores[k] = -1;
        }
        return -EINVAL;
    }
    memcpy(scores, v, (size_t)n * sizeof(*scores));
    return 0;
}

int judge_score_win(double s1, double s2)
{
    if (s1 - s2 > 0.0) {
        return 1;
    }
    if (s2 - s1 > 0.0) {
        return -1;
    }
    return 0;
}

char *judge_text_postprocess(enum judge_output output, const char *text, size_t len,
                             size_t *out_len)
{
    if (!text) {
        len = 0;
        text = "";
    }
    if (output == JUDGE_OUTPUT_FAST) {
        const char *nl = memchr(text, '\n', len);
        if (nl) {
            len = (size_t)(nl - text);
        }
    }
    size_t a, b;
    judge_text_strip(text, len, &a, &b);
    char *out = xmalloc(b - a + 1);
    memcpy(out, text + a, b - a);
    out[b - a] = '\0';
    if (out_len) {
        *out_len = b - a;
    }
    return out;
}
