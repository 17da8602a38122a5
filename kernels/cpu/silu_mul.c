/* silu_mul.c - SwiGLU's gate (Shazeer 2020) on a fused gate/up GEMM output, rounded to bf16 for
 * the down projection; twin of kernels/cuda/silu_mul.cu (see twin.h). */
#include "twin.h"

#include <math.h>
#include <stddef.h>

void kern_cpu_silu_mul_bf16(const float *gate_up, int32_t n_rows, int32_t n_ff, uint16_t *out)
{
    for (int32_t r = 0; r < n_rows; r++) {
        const float *g = gate_up + (size_t)r * 2 * (size_t)n_ff;
        const float *u = g + n_ff;
        for (int32_t i = 0; i < n_ff; i++) {
            float silu = g[i] / (1.0f + expf(-g[i]));
            out[(size_t)r * (size_t)n_ff + (size_t)i] = kern_bf16_from_f32(silu * u[i]);
        }
    }
}
