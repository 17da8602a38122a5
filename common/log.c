/* log.c - leveled, single-write log lines on stderr (see log.h). */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Relaxed is enough: the level is an independent flag; a reader seeing an old value for a moment
 * only writes or skips one line. */
static atomic_int log_level_current = LOG_LEVEL_INFO;

static const char *const log_level_names[] = { "ERROR", "WARN", "INFO", "DEBUG" };

void log_level_set(enum log_level level)
{
    atomic_store_explicit(&log_level_current, (int)level, memory_order_relaxed);
}

int log_level_parse(const char *name, enum log_level *out)
{
    static const char *const lower[] = { "error", "warn", "info", "debug" };
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, lower[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

bool log_enabled(enum log_level level)
{
    return (int)level <= atomic_load_explicit(&log_level_current, memory_order_relaxed);
}

void log_write(enum log_level level, const char *module, const char *fmt, ...)
{
    if (!log_enabled(level)) {
        return;
    }
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, log_level_names[level], module);
    if (n < 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m > 0 ? (size_t)m : 0);
    if (len > sizeof(line) - 2) {
        len = sizeof(line) - 2;
    }
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; /* nothing sensible to do when stderr is gone */
}
