/* swiglu.c - the LLaMA MLP gate: silu(gate) * up (Shazeer 2020). */
#include "ops.h"

#include <math.h>

void kern_cpu_swiglu_f32(const float *gate, const float *up, float *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
