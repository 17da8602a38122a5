/* gemv.c - y = W x (+ y), the single-token matmul of decode.
 *
 * Decoding one token is a matrix-vector product bound by memory bandwidth: every weight is read
 * once and used once. OpenBLAS 0.3.21's sgemv streams at about 75% of the rate this loop reaches
 * on the project's machines (bench/RESULTS.md), which decides batch-1 decode speed, so this one
 * product is done here. Rows are read one after another, so each thread's weights form a single
 * sequential stream (interleaving four rows was 15% slower: four short streams per 3 KB row
 * defeat the hardware prefetcher). Each row keeps 32 partial sums (four 8-lane accumulators for
 * ILP) combined in a fixed tree, so a row's result depends only on that row. */
#include "ops.h"
#include "simd.h"

#include <string.h>

KERN_CPU_CLONES
void kern_cpu_gemv_f32(const float *w, const float *x, float *y, int32_t n, int32_t k,
                       int accumulate)
{
    int32_t k32 = k / 32 * 32, k8 = k / 8 * 8;
    for (int32_t r = 0; r < n; r++) {
        const float *wr = w + (size_t)r * (size_t)k;
        kern_v8 a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 };
        int32_t d = 0;
        for (; d < k32; d += 32) {
            kern_v8 x0, x1, x2, x3, w0, w1, w2, w3;
            KERN_V8_LOAD(x0, x + d);
            KERN_V8_LOAD(x1, x + d + 8);
            KERN_V8_LOAD(x2, x + d + 16);
            KERN_V8_LOAD(x3, x + d + 24);
            KERN_V8_LOAD(w0, wr + d);
            KERN_V8_LOAD(w1, wr + d + 8);
            KERN_V8_LOAD(w2, wr + d + 16);
            KERN_V8_LOAD(w3, wr + d + 24);
            a0 += w0 * x0;
            a1 += w1 * x1;
            a2 += w2 * x2;
            a3 += w3 * x3;
        }
        for (; d < k8; d += 8) {
            kern_v8 xv, wv;
            KERN_V8_LOAD(xv, x + d);
            KERN_V8_LOAD(wv, wr + d);
            a0 += wv * xv;
        }
        kern_v8 acc = (a0 + a1) + (a2 + a3);
        float s = kern_v8_hsum(&acc);
        for (; d < k; d++) {
            s += wr[d] * x[d];
        }
        y[r] = accumulate ? y[r] + s : s;
    }
}
