/* cuda_bf16.h - cuemu's bfloat16 (tests/cuemu/README.md): the storage type and the conversions
 * the kernels use, with CUDA's rounding (to nearest even; NaN becomes the canonical 0x7fff). */
#ifndef CUEMU_CUDA_BF16_H
#define CUEMU_CUDA_BF16_H

#include <stdint.h>
#include <string.h>

typedef struct cuemu_bf16 {
    uint16_t x;
} __nv_bfloat16;

static inline float __bfloat162float(__nv_bfloat16 h)
{
    uint32_t u = (uint32_t)h.x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    __nv_bfloat16 h;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        h.x = 0x7fff;
    } else {
        h.x = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    return h;
}

static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h)
{
    return h.x;
}

#endif
