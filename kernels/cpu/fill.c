/* fill.c - Philox-driven random weights (a benchmark model made without a checkpoint); twin of
 * kernels/cuda/fill.cu (see twin.h). */
#include "twin.h"

static float fill_value(size_t i, uint64_t seed, float offset, float scale)
{
    uint32_t ctr[4] = { (uint32_t)i, (uint32_t)((uint64_t)i >> 32), 0, 0 };
    uint32_t key[2] = { (uint32_t)seed, (uint32_t)(seed >> 32) };
    uint32_t r[4];
    kern_philox4x32_10(ctr, key, r);
    return offset + scale * ((float)r[0] * (2.0f / 4294967296.0f) - 1.0f);
}

void kern_cpu_fill_random_bf16(uint16_t *dst, size_t n, uint64_t seed, float offset, float scale)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = kern_bf16_from_f32(fill_value(i, seed, offset, scale));
    }
}

void kern_cpu_fill_random_f32(float *dst, size_t n, uint64_t seed, float offset, float scale)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = fill_value(i, seed, offset, scale);
    }
}
