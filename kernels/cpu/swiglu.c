/* swiglu.c - the LLaMA MLP gate: silu(gate) * up (Shazeer 2020), with exp in lanes of 8
 * (vexp.h). */
#include "ops.h"
#include "simd.h"
#include "vexp.h"

KERN_CPU_CLONES
void kern_cpu_swiglu_f32(const float *gate, const float *up, float *out, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float neg[8], e[8];
        for (int j = 0; j < 8; j++) {
            neg[j] = -gate[i + j];
        }
        kern_cpu_exp8(neg, e);
        for (int j = 0; j < 8; j++) {
            out[i + j] = gate[i + j] / (1.0f + e[j]) * up[i + j];
        }
    }
    for (; i < n; i++) {
        out[i] = gate[i] / (1.0f + kern_cpu_exp1(-gate[i])) * up[i];
    }
}
