/* bench_util.h - what the benchmark programs share (each benchmark is one .c file): a monotonic
 * clock and the OpenBLAS sgemm peer measurement. */
#ifndef BENCH_BENCH_UTIL_H
#define BENCH_BENCH_UTIL_H

#include <cblas.h>
#include <stdlib.h>
#include <time.h>

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The peer: one OpenBLAS sgemm call over the whole shape, on all its threads, in the engine's
 * layout C[m, n] = A[m, k] . B[n, k]^T. */
static inline double sgemm_gflops(int m, int n, int k, double min_time)
{
    float *a = malloc((size_t)m * k * sizeof(float));
    float *b = malloc((size_t)n * k * sizeof(float));
    float *c = malloc((size_t)m * n * sizeof(float));
    for (size_t i = 0; i < (size_t)m * k; i++) {
        a[i] = (float)(i % 17) * 0.01f;
    }
    for (size_t i = 0; i < (size_t)n * k; i++) {
        b[i] = (float)(i % 13) * 0.01f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
    long reps = 0;
    double t0 = now_s(), t;
    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
        reps++;
        t = now_s() - t0;
    } while (t < min_time);
    free(a);
    free(b);
    free(c);
    return 2.0 * m * n * k * (double)reps / t * 1e-9;
}

#endif
