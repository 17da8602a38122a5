/* utf8.h - UTF-8 validation (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF). */
#ifndef COMMON_UTF8_H
#define COMMON_UTF8_H

#include <stddef.h>

/* Returns the offset of the first byte that does not start a valid sequence, or len when all
 * `len` bytes are valid UTF-8. Thread-safe. */
size_t utf8_validate(const char *s, size_t len);

#endif
