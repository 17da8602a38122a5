/* log.h - one line per event on stderr: "ts LEVEL module: msg key=value".
 *
 * Levels are checked before formatting; each line is formatted into a local buffer and written
 * with a single write(2) so lines from different threads never interleave. */
#ifndef COMMON_LOG_H
#define COMMON_LOG_H

#include <stdbool.h>

enum log_level { LOG_LEVEL_ERROR = 0, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/* Sets the global level (default INFO). Thread-safe (atomic). */
void log_level_set(enum log_level level);

/* Parses "error", "warn", "info" or "debug". Returns 0, or -EINVAL for anything else. */
int log_level_parse(const char *name, enum log_level *out);

/* True when messages of `level` are written. Thread-safe. */
bool log_enabled(enum log_level level);

/* Writes one line at `level` for `module`. Thread-safe. */
void log_write(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifndef LOG_MODULE
#define LOG_MODULE "judged"
#endif

#define log_error(...) log_write(LOG_LEVEL_ERROR, LOG_MODULE, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_LEVEL_WARN, LOG_MODULE, __VA_ARGS__)
#define log_info(...)  log_write(LOG_LEVEL_INFO, LOG_MODULE, __VA_ARGS__)
#define log_debug(...) log_write(LOG_LEVEL_DEBUG, LOG_MODULE, __VA_ARGS__)

#endif
