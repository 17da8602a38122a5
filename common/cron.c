/* cron.c - five-field cron expressions in UTC (see cron.h). Dates are computed with plain
 * proleptic-Gregorian arithmetic (days since 1970-01-01), so nothing depends on the process's
 * time zone or on libc's gmtime/timegm. */
#include "common/cron.h"

#include "common/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CRON_SEARCH_YEARS 400 /* one Gregorian cycle: every calendar day recurs within it */

struct cron_field {
    const char *name;
    int lo, hi;
    const char *const *names; /* value names for lo.. (NULL: numbers only) */
};

static const char *const cron_month_names[] = { "jan", "feb", "mar", "apr", "may", "jun",
                                                "jul", "aug", "sep", "oct", "nov", "dec" };
static const char *const cron_wday_names[] = { "sun", "mon", "tue", "wed", "thu", "fri", "sat" };

static const struct cron_field cron_fields[5] = {
    { "minute", 0, 59, NULL },
    { "hour", 0, 23, NULL },
    { "day-of-month", 1, 31, NULL },
    { "month", 1, 12, cron_month_names },
    { "day-of-week", 0, 7, cron_wday_names },
};

/* Reads a value (digits, or a name of the field) at *p. Returns 0 or -EINVAL. */
static int cron_value(const struct cron_field *f, const char **p, const char *end, int *out)
{
    const char *s = *p;
    if (s < end && isdigit((unsigned char)*s)) {
        long v = 0;
        while (s < end && isdigit((unsigned char)*s)) {
            v = v * 10 + (*s - '0');
            if (v > 1000) {
                return -EINVAL;
            }
            s++;
        }
        *out = (int)v;
        *p = s;
        return 0;
    }
    if (f->names && end - s >= 3) {
        int n = f == &cron_fields[3] ? 12 : 7;
        for (int i = 0; i < n; i++) {
            if (strncasecmp(s, f->names[i], 3) == 0 &&
                (end - s == 3 || !isalpha((unsigned char)s[3]))) {
                *out = f->lo + i;
                *p = s + 3;
                return 0;
            }
        }
    }
    return -EINVAL;
}

/* Parses one comma-separated field of len bytes into a bit set. */
static int cron_field_parse(const struct cron_field *f, const char *text, size_t len,
                            uint64_t *bits, char *errstr, size_t errstr_len)
{
    const char *p = text, *end = text + len;
    *bits = 0;
    for (;;) {
        const char *item_end = memchr(p, ',', (size_t)(end - p));
        if (!item_end) {
            item_end = end;
        }
        const char *item = p;
        int item_len = (int)(item_end - item);
        int a, b, step = 1;
        bool single = false;
        if (item_len == 0) {
            errstr_set(errstr, errstr_len, "%s: empty list item", f->name);
            return -EINVAL;
        }
        if (*p == '*') {
            a = f->lo;
            b = f->hi;
            p++;
        } else {
            if (cron_value(f, &p, item_end, &a) != 0) {
                errstr_set(errstr, errstr_len, "%s: '%.*s' is not a value", f->name, item_len,
                           item);
                return -EINVAL;
            }
            b = a;
            single = true;
            if (p < item_end && *p == '-') {
                p++;
                if (cron_value(f, &p, item_end, &b) != 0) {
                    errstr_set(errstr, errstr_len, "%s: '%.*s' is not a range", f->name, item_len,
                               item);
                    return -EINVAL;
                }
                single = false;
            }
            if (a < f->lo || a > f->hi || b < f->lo || b > f->hi) {
                errstr_set(errstr, errstr_len, "%s: '%.*s' is outside %d-%d", f->name, item_len,
                           item, f->lo, f->hi);
                return -EINVAL;
            }
            if (b < a) {
                errstr_set(errstr, errstr_len, "%s: range '%.*s' is backwards", f->name, item_len,
                           item);
                return -EINVAL;
            }
        }
        if (p < item_end && *p == '/') {
            p++;
            const char *s = p;
            long v = 0;
            while (p < item_end && isdigit((unsigned char)*p) && v <= 1000) {
                v = v * 10 + (*p - '0');
                p++;
            }
            if (p == s || p != item_end || v < 1 || v > f->hi - f->lo + 1) {
                errstr_set(errstr, errstr_len, "%s: step in '%.*s' must be 1-%d", f->name, item_len,
                           item, f->hi - f->lo + 1);
                return -EINVAL;
            }
            step = (int)v;
            if (single) {
                b = f->hi; /* "a/s": a through the maximum */
            }
        }
        if (p != item_end) {
            errstr_set(errstr, errstr_len, "%s: unexpected '%.*s' in '%.*s'", f->name,
                       (int)(item_end - p), p, item_len, item);
            return -EINVAL;
        }
        for (int v = a; v <= b; v += step) {
            *bits |= 1ull << v;
        }
        if (item_end == end) {
            break;
        }
        p = item_end + 1;
    }
    return 0;
}

static bool cron_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int cron_month_days(int64_t y, int m)
{
    static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    return m == 2 && cron_leap(y) ? 29 : days[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t cron_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void cron_civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int64_t cron_floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static bool cron_day_match(const struct cron *c, int d, int64_t days)
{
    int wday = (int)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday (4) */
    bool md = (c->mdays >> d) & 1, wd = (c->wdays >> wday) & 1;
    return c->mday_star || c->wday_star ? md && wd : md || wd;
}

int cron_parse(const char *expr, struct cron *out, char *errstr, size_t errstr_len)
{
    memset(out, 0, sizeof(*out));
    const char *p = expr;
    uint64_t bits[5];
    int n = 0;
    char msg[ERRSTR_LEN];
    if (strlen(expr) > 200) {
        errstr_set(errstr, errstr_len, "cron: longer than 200 bytes");
        return -EINVAL;
    }
    for (;;) {
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (!*p) {
            break;
        }
        size_t len = strcspn(p, " \t");
        if (n == 5) {
            errstr_set(errstr, errstr_len,
                       "cron '%s': more than five fields (minute hour day-of-month month "
                       "day-of-week)",
                       expr);
            return -EINVAL;
        }
        if (cron_field_parse(&cron_fields[n], p, len, &bits[n], msg, sizeof(msg)) != 0) {
            errstr_set(errstr, errstr_len, "cron '%s': %s", expr, msg);
            return -EINVAL;
        }
        if (n == 2) {
            out->mday_star = *p == '*';
        } else if (n == 4) {
            out->wday_star = *p == '*';
        }
        n++;
        p += len;
    }
    if (n != 5) {
        errstr_set(errstr, errstr_len,
                   "cron '%s': expected five fields (minute hour day-of-month month "
                   "day-of-week), got %d",
                   expr, n);
        return -EINVAL;
    }
    out->minutes = bits[0];
    out->hours = (uint32_t)bits[1];
    out->mdays = (uint32_t)bits[2];
    out->months = (uint16_t)bits[3];
    out->wdays = (uint8_t)((bits[4] & 0x7f) | ((bits[4] >> 7) & 1)); /* 7 is Sunday too */
    /* with AND day matching, a day-of-month that no chosen month has never fires (every
     * calendar day meets every weekday within the Gregorian cycle, so weekdays cannot) */
    if (out->mday_star || out->wday_star) {
        bool possible = false;
        for (int m = 1; m <= 12 && !possible; m++) {
            for (int d = 1; d <= (m == 2 ? 29 : cron_month_days(2001, m)); d++) {
                if (((out->months >> m) & 1) && ((out->mdays >> d) & 1)) {
                    possible = true;
                    break;
                }
            }
        }
        if (!possible) {
            errstr_set(errstr, errstr_len,
                       "cron '%s': day-of-month never occurs in the chosen months", expr);
            return -EINVAL;
        }
    }
    return 0;
}

bool cron_match(const struct cron *c, time_t t)
{
    int64_t days = cron_floor_div((int64_t)t, 86400);
    int64_t secs = (int64_t)t - days * 86400;
    int64_t y;
    int m, d;
    cron_civil_from_days(days, &y, &m, &d);
    return ((c->minutes >> ((secs % 3600) / 60)) & 1) && ((c->hours >> (secs / 3600)) & 1) &&
           ((c->months >> m) & 1) && cron_day_match(c, d, days);
}

time_t cron_next(const struct cron *c, time_t after_utc)
{
    int64_t t = cron_floor_div((int64_t)after_utc, 60) * 60 + 60;
    int64_t days = cron_floor_div(t, 86400);
    int64_t secs = t - days * 86400;
    int hour = (int)(secs / 3600), minute = (int)((secs % 3600) / 60);
    int64_t y;
    int m, d;
    cron_civil_from_days(days, &y, &m, &d);
    int64_t y_end = y + CRON_SEARCH_YEARS;
    while (y <= y_end) {
        if (!((c->months >> m) & 1) || d > cron_month_days(y, m)) {
            /* the first day of the next month */
            if (++m > 12) {
                m = 1;
                y++;
            }
            d = 1;
            hour = minute = 0;
            continue;
        }
        days = cron_days_from_civil(y, m, d);
        if (!cron_day_match(c, d, days)) {
            d++;
            hour = minute = 0;
            continue;
        }
        if (!((c->hours >> hour) & 1)) {
            minute = 0;
            if (++hour > 23) {
                d++;
                hour = 0;
            }
            continue;
        }
        uint64_t later = c->minutes >> minute << minute; /* allowed minutes >= minute */
        if (later == 0) {
            minute = 0;
            if (++hour > 23) {
                d++;
                hour = 0;
            }
            continue;
        }
        minute = __builtin_ctzll(later);
        return (time_t)(days * 86400 + hour * 3600 + minute * 60);
    }
    return (time_t)-1;
}
