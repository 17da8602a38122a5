/* rmsnorm.c - root-mean-square layer norm (Zhang & Sennrich 2019), as LlamaRMSNorm: the mean of
 * squares is accumulated in fp32 over the row, then x * rsqrt(ms + eps) * weight. */
#include "ops.h"

#include <math.h>

void kern_cpu_rmsnorm_f32(const float *x, const float *w, float *out, int32_t n, float eps)
{
    float ss = 0.0f;
    for (int32_t i = 0; i < n; i++) {
        ss += x[i] * x[i];
    }
    float scale = 1.0f / sqrtf(ss / (float)n + eps);
    for (int32_t i = 0; i < n; i++) {
        out[i] = x[i] * scale * w[i];
    }
}
