/* utf8.c - UTF-8 validation per RFC 3629 table 3-7 (well-formed byte sequences). */
#include "utf8.h"

#include <stdint.h>

size_t utf8_validate(const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i];
        size_t n;
        uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 3;
            if (c == 0xe0) {
                lo = 0xa0; /* no overlongs */
            } else if (c == 0xed) {
                hi = 0x9f; /* no surrogates */
            }
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 4;
            if (c == 0xf0) {
                lo = 0x90;
            } else if (c == 0xf4) {
                hi = 0x8f; /* nothing above U+10FFFF */
            }
        } else {
            return i;
        }
        if (i + n > len || p[i + 1] < lo || p[i + 1] > hi) {
            return i;
        }
        for (size_t k = 2; k < n; k++) {
            if (p[i + k] < 0x80 || p[i + k] > 0xbf) {
                return i;
            }
        }
        i += n;
    }
    return len;
}
