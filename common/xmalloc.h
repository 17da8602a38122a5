/* xmalloc.h - small allocations that abort on OOM (weights and pools are checked by callers). */
#ifndef COMMON_XMALLOC_H
#define COMMON_XMALLOC_H

#include <stddef.h>

/* Each aborts with a log line on out-of-memory; a size of 0 returns a unique pointer.
 * Caller owns the result; free with free(). Thread-safe. */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Like asprintf, aborting on OOM. Caller owns the result. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
