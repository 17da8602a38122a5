/* test_cron.c - cron_parse, cron_match and cron_next against known dates and against an
 * independent brute-force matcher: random expressions are generated together with the value sets
 * they mean, and every minute of a year (decomposed by libc's gmtime_r, not by cron.c's own
 * calendar arithmetic) is matched against those sets. cron_next must then step from match to
 * match over the whole year, and land on the first match after random probe times. */
#include "common/cron.h"

/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MINUTES_PER_WINDOW (366 * 24 * 60)

static time_t utc(int y, int mon, int d, int h, int min)
{
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mon - 1, .tm_mday = d, .tm_hour = h, .tm_min = min
    };
    return timegm(&tm);
}

static void expect_next(const char *expr, time_t after, time_t want)
{
    struct cron c;
    char err[256];
    assert_int_equal(cron_parse(expr, &c, err, sizeof(err)), 0);
    time_t got = cron_next(&c, after);
    if (got != want) {
        fail_msg("cron_next('%s', %lld) = %lld, want %lld", expr, (long long)after, (long long)got,
                 (long long)want);
    }
    assert_true(cron_match(&c, got));
}

static void test_cron_known_cases(void **state)
{
    (void)state;
    expect_next("0 0 29 2 *", 1677628800, 1709164800); /* 2023-03-01 -> 2024-02-29 */
    expect_next("*/15 * * * *", 1704067650, 1704068100);
    expect_next("0 9 * * 1-5", 1704445200, 1704704400); /* Fri 09:00 -> Mon 09:00 */
    expect_next("0 9 * * mon-FRI", 1704445200, 1704704400);
    /* both day fields restricted: the 1st OR a Sunday */
    expect_next("0 0 1 * 7", 1704067200, 1704585600);
    expect_next("0 0 1 * 0", 1704067200, 1704585600);
    expect_next("0 0 1 * sun", 1704067200, 1704585600);
    /* a day field starting with '*' means AND: Feb 29 that is a Sunday */
    expect_next("0 0 29 2 */7", 1704067200, 1961625600);
    expect_next("59 23 31 12 *", 1704067140, 1735689540); /* year rollover */
    expect_next("* * * * *", 1704067200, 1704067260);     /* strictly after */
    expect_next("* * * * *", 1704067201, 1704067260);
    expect_next("0 0 1 jan *", 1704067200, utc(2025, 1, 1, 0, 0));
    expect_next("5/20 * * * *", utc(2024, 6, 1, 10, 46), utc(2024, 6, 1, 11, 5));
    expect_next("0 0 31 * *", utc(2024, 1, 31, 0, 0), utc(2024, 3, 31, 0, 0));
    expect_next("30 4 1,15 * 5", utc(2024, 3, 1, 4, 30), utc(2024, 3, 8, 4, 30));
    expect_next("0 0 * * 6,0", utc(1999, 12, 31, 12, 0), utc(2000, 1, 1, 0, 0));
    expect_next("0 0 29 2 *", utc(2096, 3, 1, 0, 0), utc(2104, 2, 29, 0, 0)); /* 2100 */
    expect_next("0 12 * * *", -100, 43200);                                   /* before 1970 */
}

static void expect_refused(const char *expr, const char *needle)
{
    struct cron c;
    char err[256] = "";
    int rc = cron_parse(expr, &c, err, sizeof(err));
    if (rc == 0 || !strstr(err, needle)) {
        fail_msg("cron_parse('%s') = %d '%s', want an error containing '%s'", expr, rc, err,
                 needle);
    }
}

static void test_cron_parse_errors(void **state)
{
    (void)state;
    expect_refused("60 * * * *", "minute: '60' is outside 0-59");
    expect_refused("* 24 * * *", "hour");
    expect_refused("* * 0 * *", "day-of-month");
    expect_refused("* * * 13 *", "month");
    expect_refused("* * * * 8", "day-of-week");
    expect_refused("* * * *", "got 4");
    expect_refused("* * * * * *", "more than five");
    expect_refused("", "got 0");
    expect_refused("5-1 * * * *", "backwards");
    expect_refused("*/0 * * * *", "step");
    expect_refused("*/61 * * * *", "step");
    expect_refused("1,,2 * * * *", "empty list item");
    expect_refused("a * * * *", "not a value");
    expect_refused("* * * foo *", "not a value");
    expect_refused("1-x * * * *", "not a range");
    expect_refused("*5 * * * *", "unexpected");
    expect_refused("0 0 30 2 *", "never occurs");
    expect_refused("0 0 31 4,6,9,11 *", "never occurs");
    struct cron c;
    char err[256];
    /* OR semantics make these fire on the weekday */
    assert_int_equal(cron_parse("0 0 30 2 1", &c, err, sizeof(err)), 0);
    assert_int_equal(cron_parse(" \t0\t0  * * 7 ", &c, err, sizeof(err)), 0);
    assert_int_equal(c.wdays, 1);
}

/* ---- brute force ----------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int rnd_in(int lo, int hi)
{
    return lo + (int)(rnd() % (uint64_t)(hi - lo + 1));
}

static const char *const month_names[] = { "jan", "feb", "mar", "apr", "may", "jun",
                                           "jul", "aug", "sep", "oct", "nov", "dec" };
static const char *const wday_names[] = { "Sun", "MON", "tue", "wed", "thu", "fri", "sat" };

/* Writes value v of field f, sometimes as a name. */
static int put_value(char *out, int f, int v)
{
    if (f == 3 && rnd() % 4 == 0) {
        return sprintf(out, "%s", month_names[v - 1]);
    }
    if (f == 4 && v < 7 && rnd() % 4 == 0) {
        return sprintf(out, "%s", wday_names[v]);
    }
    return sprintf(out, "%d", v);
}

/* A random field of [lo, hi] as text, and the set of values it means (day-of-week 7 stored as
 * 0). *star: the text starts with '*'. */
static void random_field(int f, int lo, int hi, char *text, uint64_t *set, int *star)
{
    int n_items = rnd() % 3 == 0 ? rnd_in(2, 4) : 1;
    char *p = text;
    *set = 0;
    for (int i = 0; i < n_items; i++) {
        if (i > 0) {
            *p++ = ',';
        }
        int kind = (int)(rnd() % 10), a = lo, b = hi, step = 1;
        /* unrestricted fields are common in real crontabs, and keep the sets dense enough to
         * fire within a year; minutes lean towards few values so the chains stay short */
        if (kind < (f == 0 ? 1 : 3)) {
            p += sprintf(p, "*");
        } else if (kind < 5) {
            step = rnd_in(1, hi - lo + 1);
            p += sprintf(p, "*/%d", step);
        } else if (kind < 7) {
            a = b = rnd_in(lo, hi);
            p += put_value(p, f, a);
        } else if (kind < 8) {
            a = rnd_in(lo, hi);
            b = rnd_in(a, hi);
            p += put_value(p, f, a);
            *p++ = '-';
            p += put_value(p, f, b);
        } else if (kind < 9) {
            a = rnd_in(lo, hi);
            b = rnd_in(a, hi);
            step = rnd_in(1, hi - lo + 1);
            p += put_value(p, f, a);
            *p++ = '-';
            p += put_value(p, f, b);
            p += sprintf(p, "/%d", step);
        } else {
            a = rnd_in(lo, hi);
            step = rnd_in(1, hi - lo + 1);
            p += put_value(p, f, a);
            p += sprintf(p, "/%d", step);
        }
        if (i == 0) {
            *star = text[0] == '*';
        }
        for (int v = a; v <= b; v += step) {
            *set |= 1ull << (f == 4 && v == 7 ? 0 : v);
        }
    }
    *p = '\0';
}

struct minute_fields {
    unsigned char min, hour, mday, mon, wday;
};

struct expr_sets {
    uint64_t set[5];
    int star[5];
};

static bool brute_match(const struct expr_sets *e, const struct minute_fields *m)
{
    bool md = (e->set[2] >> m->mday) & 1, wd = (e->set[4] >> m->wday) & 1;
    bool day = e->star[2] || e->star[4] ? md && wd : md || wd;
    return ((e->set[0] >> m->min) & 1) && ((e->set[1] >> m->hour) & 1) &&
           ((e->set[3] >> m->mon) & 1) && day;
}

static void fields_of(time_t t, struct minute_fields *m)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    *m = (struct minute_fields){ (unsigned char)tm.tm_min, (unsigned char)tm.tm_hour,
                                 (unsigned char)tm.tm_mday, (unsigned char)(tm.tm_mon + 1),
                                 (unsigned char)tm.tm_wday };
}

static void test_cron_matches_brute_force(void **state)
{
    (void)state;
    static const int window_years[] = { 2023, 2024, 2099, 2100, 1999 };
    struct minute_fields *table = malloc(MINUTES_PER_WINDOW * sizeof(*table));
    time_t *matches = malloc(MINUTES_PER_WINDOW * sizeof(*matches));
    assert_non_null(table);
    assert_non_null(matches);
    int n_exprs = 0, n_sparse = 0;
    for (size_t w = 0; w < sizeof(window_years) / sizeof(window_years[0]); w++) {
        /* a window starting mid-year, so it spans a year boundary and (mostly) a February */
        time_t t0 =
            utc(window_years[w], rnd_in(1, 12), rnd_in(1, 28), rnd_in(0, 23), rnd_in(0, 59));
        for (int i = 0; i < MINUTES_PER_WINDOW; i++) {
            fields_of(t0 + 60 * (time_t)i, &table[i]);
        }
        time_t t_end = t0 + 60 * (time_t)MINUTES_PER_WINDOW;
        for (int k = 0; k < 30; k++) {
            static const int lo[5] = { 0, 0, 1, 1, 0 }, hi[5] = { 59, 23, 31, 12, 7 };
            char text[5][128], expr[700];
            struct expr_sets e;
            for (int f = 0; f < 5; f++) {
                random_field(f, lo[f], hi[f], text[f], &e.set[f], &e.star[f]);
            }
            snprintf(expr, sizeof(expr), "%s %s %s %s %s", text[0], text[1], text[2], text[3],
                     text[4]);
            struct cron c;
            char err[256];
            if (cron_parse(expr, &c, err, sizeof(err)) != 0) {
                /* only an expression that can never fire may be refused */
                assert_non_null(strstr(err, "never occurs"));
                continue;
            }
            n_exprs++;
            size_t n = 0;
            for (int i = 0; i < MINUTES_PER_WINDOW; i++) {
                bool want = brute_match(&e, &table[i]);
                if (cron_match(&c, t0 + 60 * (time_t)i) != want) {
                    fail_msg("cron_match('%s', %lld) != %d", expr, (long long)(t0 + 60 * (time_t)i),
                             want);
                }
                if (want) {
                    matches[n++] = t0 + 60 * (time_t)i;
                }
            }
            n_sparse += n < 20000;
            /* step from match to match: no minute skipped, none invented */
            time_t t = t0 - 1;
            size_t n_chain = n < 20000 ? n : 20000;
            for (size_t i = 0; i < n_chain; i++) {
                time_t got = cron_next(&c, t);
                if (got != matches[i]) {
                    fail_msg("'%s': cron_next(%lld) = %lld, brute force %lld", expr, (long long)t,
                             (long long)got, (long long)matches[i]);
                }
                t = got;
            }
            if (n_chain == n) {
                /* past the last match of the window: a real match beyond the window */
                time_t got = cron_next(&c, n ? matches[n - 1] : t0 - 1);
                struct minute_fields mf;
                fields_of(got, &mf);
                assert_true(got >= t_end);
                assert_true(brute_match(&e, &mf));
            }
            /* random probes anywhere in the window, not minute-aligned */
            for (int p = 0; p < 300 && n > 0; p++) {
                time_t probe = t0 - 1 + (time_t)(rnd() % (uint64_t)(t_end - t0));
                size_t a = 0, b = n; /* first match > probe */
                while (a < b) {
                    size_t mid = (a + b) / 2;
                    if (matches[mid] <= probe) {
                        a = mid + 1;
                    } else {
                        b = mid;
                    }
                }
                time_t got = cron_next(&c, probe);
                if (a < n ? got != matches[a] : got < t_end) {
                    fail_msg("'%s': cron_next(%lld) = %lld", expr, (long long)probe,
                             (long long)got);
                }
            }
        }
    }
    /* the generator must exercise both the full chain and the probes */
    assert_true(n_exprs >= 100);
    assert_true(n_sparse >= 20);
    free(table);
    free(matches);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cron_known_cases),
        cmocka_unit_test(test_cron_parse_errors),
        cmocka_unit_test(test_cron_matches_brute_force),
    };
    return cmocka_run_group_tests_name("cron", tests, NULL, NULL);
}
