/* gemv.c - y = W x (+ y), the single-token matmul of decode.
 *
 * Decoding one token is a matrix-vector product bound by memory bandwidth: every weight is read
 * once and used once. OpenBLAS 0.3.21's sgemv streams at about 80% of the rate this loop reaches
 * on the project's machines (bench/RESULTS.md), which decides batch-1 decode speed, so this one
 * product is done here. Four rows at a time share each load of x; each row keeps 8 partial sums
 * in lanes combined in a fixed tree, so a row's result depends only on that row. */
#include "ops.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__)
#define KERN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KERN_CPU_CLONES
#endif

typedef float gemv_v8 __attribute__((vector_size(32)));

/* Vectors never cross a call (see attention.c). */
#define GEMV_LOAD(dst, p) memcpy(&(dst), (p), sizeof(gemv_v8))

static inline float gemv_hsum(const gemv_v8 *v)
{
    const float *a = (const float *)v;
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

static inline float gemv_row_tail(const float *w, const float *x, int32_t k, int32_t from,
                                  float acc)
{
    for (int32_t d = from; d < k; d++) {
        acc += w[d] * x[d];
    }
    return acc;
}

KERN_CPU_CLONES
void kern_cpu_gemv_f32(const float *w, const float *x, float *y, int32_t n, int32_t k,
                       int accumulate)
{
    int32_t kv = k / 8 * 8;
    int32_t r = 0;
    for (; r + 4 <= n; r += 4) {
        const float *w0 = w + (size_t)r * (size_t)k;
        const float *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;
        gemv_v8 a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 };
        for (int32_t d = 0; d < kv; d += 8) {
            gemv_v8 xv, v0, v1, v2, v3;
            GEMV_LOAD(xv, x + d);
            GEMV_LOAD(v0, w0 + d);
            GEMV_LOAD(v1, w1 + d);
            GEMV_LOAD(v2, w2 + d);
            GEMV_LOAD(v3, w3 + d);
            a0 += v0 * xv;
            a1 += v1 * xv;
            a2 += v2 * xv;
            a3 += v3 * xv;
        }
        float s0 = gemv_row_tail(w0, x, k, kv, gemv_hsum(&a0));
        float s1 = gemv_row_tail(w1, x, k, kv, gemv_hsum(&a1));
        float s2 = gemv_row_tail(w2, x, k, kv, gemv_hsum(&a2));
        float s3 = gemv_row_tail(w3, x, k, kv, gemv_hsum(&a3));
        y[r] = accumulate ? y[r] + s0 : s0;
        y[r + 1] = accumulate ? y[r + 1] + s1 : s1;
        y[r + 2] = accumulate ? y[r + 2] + s2 : s2;
        y[r + 3] = accumulate ? y[r + 3] + s3 : s3;
    }
    for (; r < n; r++) {
        const float *wr = w + (size_t)r * (size_t)k;
        gemv_v8 a = { 0 };
        for (int32_t d = 0; d < kv; d += 8) {
            gemv_v8 xv, v;
            GEMV_LOAD(xv, x + d);
            GEMV_LOAD(v, wr + d);
            a += v * xv;
        }
        float s = gemv_row_tail(wr, x, k, kv, gemv_hsum(&a));
        y[r] = accumulate ? y[r] + s : s;
    }
}
