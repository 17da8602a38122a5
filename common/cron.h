/* cron.h - five-field cron expressions (minute hour day-of-month month day-of-week) evaluated in
 * UTC: judgectl validates schedules with cron_parse, judged fires them with cron_next.
 *
 * Syntax per field: '*', a value, a range 'a-b', a step over either ('*' + "/s", 'a-b/s', and
 * 'a/s' meaning a through the field's maximum), and comma-separated lists of those. Months and
 * weekdays also take three-letter English names (jan..dec, sun..sat, any case). Day-of-week is
 * 0-7 with both 0 and 7 meaning Sunday. Day matching follows Vixie cron (and cronie): when the
 * day-of-month and day-of-week fields both start with something other than '*', a day matches
 * if EITHER matches; otherwise both must (a field starting with '*', "*" + "/2" included, is
 * unrestricted for this rule). An expression that can never fire (e.g. "0 0 30 2 *") is refused. */
#ifndef COMMON_CRON_H
#define COMMON_CRON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* A parsed expression: one bit per allowed value. Plain data. */
struct cron {
    uint64_t minutes; /* bits 0..59 */
    uint32_t hours;   /* bits 0..23 */
    uint32_t mdays;   /* bits 1..31 */
    uint16_t months;  /* bits 1..12 */
    uint8_t wdays;    /* bits 0..6, Sunday = 0 */
    bool mday_star;   /* the day-of-month field starts with '*' */
    bool wday_star;   /* the day-of-week field starts with '*' */
};

/* Parses `expr` (fields separated by spaces or tabs, surrounding blanks ignored).
 * Returns 0, or -EINVAL with errstr naming the field and what is wrong, e.g.
 * "cron '61 * * * *': minute: 61 is outside 0-59". Thread-safe. */
int cron_parse(const char *expr, struct cron *out, char *errstr, size_t errstr_len);

/* Whether the UTC minute containing t matches. Thread-safe. */
bool cron_match(const struct cron *c, time_t t);

/* The first matching minute (a multiple of 60 seconds, UTC) strictly after after_utc, or
 * (time_t)-1 when none comes within 400 years, one Gregorian cycle (cron_parse refuses
 * expressions that never fire).
 * Thread-safe. */
time_t cron_next(const struct cron *c, time_t after_utc);

#endif
