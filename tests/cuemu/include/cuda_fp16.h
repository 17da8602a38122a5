/* cuda_fp16.h - cuemu's half precision (tests/cuemu/README.md): __half_raw, __half and an exact
 * __half2float (subnormals, infinities and NaN payloads included). */
#ifndef CUEMU_CUDA_FP16_H
#define CUEMU_CUDA_FP16_H

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct cuemu_half_raw {
    unsigned short x;
} __half_raw;

#ifdef __cplusplus
struct __half {
    unsigned short x;
    __half() = default;
    __half(__half_raw r) : x(r.x)
    {
    }
};
#else
typedef struct cuemu_half {
    unsigned short x;
} __half;
#endif

static inline float __half2float(__half h)
{
    uint32_t sign = (uint32_t)(h.x & 0x8000u) << 16, exp = (h.x >> 10) & 0x1fu, man = h.x & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13); /* infinities and NaNs keep their payload */
    } else if (exp != 0) {
        u = sign | ((exp + 112u) << 23) | (man << 13);
    } else {
        float f = ldexpf((float)man, -24); /* zero and subnormals: exact in f32 */
        memcpy(&u, &f, 4);
        u |= sign;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#endif
