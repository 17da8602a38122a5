/* add_rmsnorm.c - the residual add fused with RMSNorm (Zhang & Sennrich 2019) and the bf16
 * rounding of the next GEMM's input; twin of kernels/cuda/add_rmsnorm.cu (see twin.h). */
#include "twin.h"

#include <math.h>
#include <stddef.h>

void kern_cpu_add_rmsnorm_bf16(float *x, const float *delta, const float *w, uint16_t *out,
                               int32_t n_rows, int32_t dim, float eps)
{
    for (int32_t r = 0; r < n_rows; r++) {
        float *xr = x + (size_t)r * (size_t)dim;
        float ss = 0.0f;
        for (int32_t i = 0; i < dim; i++) {
            if (delta) {
                xr[i] += delta[(size_t)r * (size_t)dim + (size_t)i];
            }
            ss += xr[i] * xr[i];
        }
        float scale = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int32_t i = 0; i < dim; i++) {
            out[(size_t)r * (size_t)dim + (size_t)i] = kern_bf16_from_f32(xr[i] * scale * w[i]);
        }
    }
}
