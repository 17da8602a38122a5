/* test_convert.c - the CUDA f16/bf16 -> f32 kernels against their CPU twins, bit for bit, over
 * every one of the 65,536 input patterns. Prints SKIP and passes where no GPU is present. */
#include "kernels/cpu/convert.h"

/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_CUDA
#include "kernels/cuda/kernels_cuda.h"

#include <cuda_runtime.h>

static bool gpu_present(void)
{
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

typedef int (*gpu_convert_fn)(const uint16_t *, float *, size_t, void *);
typedef void (*cpu_convert_fn)(const uint16_t *, float *, size_t);

static void check_all_patterns(gpu_convert_fn gpu, cpu_convert_fn cpu)
{
    enum { N = 65536 };
    uint16_t *src = malloc(N * sizeof(*src));
    float *want = malloc(N * sizeof(*want));
    float *got = malloc(N * sizeof(*got));
    for (uint32_t i = 0; i < N; i++) {
        src[i] = (uint16_t)i;
    }
    cpu(src, want, N);
    uint16_t *src_d;
    float *dst_d;
    assert_int_equal(cudaMalloc((void **)&src_d, N * sizeof(*src)), cudaSuccess);
    assert_int_equal(cudaMalloc((void **)&dst_d, N * sizeof(*want)), cudaSuccess);
    assert_int_equal(cudaMemcpy(src_d, src, N * sizeof(*src), cudaMemcpyHostToDevice), cudaSuccess);
    assert_int_equal(gpu(src_d, dst_d, N, NULL), 0);
    assert_int_equal(cudaMemcpy(got, dst_d, N * sizeof(*got), cudaMemcpyDeviceToHost), cudaSuccess);
    size_t n_diff = 0;
    for (uint32_t i = 0; i < N; i++) {
        uint32_t a, b;
        memcpy(&a, &want[i], 4);
        memcpy(&b, &got[i], 4);
        /* NaN payloads may be canonicalized by the hardware conversion: compare NaN-ness only */
        bool nan_a = want[i] != want[i], nan_b = got[i] != got[i];
        if (nan_a ? !nan_b : a != b) {
            n_diff++;
        }
    }
    assert_int_equal(n_diff, 0);
    cudaFree(src_d);
    cudaFree(dst_d);
    free(src);
    free(want);
    free(got);
}

static void test_cuda_f16_to_f32_matches_cpu(void **state)
{
    (void)state;
    if (!gpu_present()) {
        skip();
    }
    check_all_patterns(kern_cuda_f16_to_f32, kern_cpu_f16_to_f32);
}

static void test_cuda_bf16_to_f32_matches_cpu(void **state)
{
    (void)state;
    if (!gpu_present()) {
        skip();
    }
    check_all_patterns(kern_cuda_bf16_to_f32, kern_cpu_bf16_to_f32);
}
#else
static void test_cuda_f16_to_f32_matches_cpu(void **state)
{
    (void)state;
    skip(); /* built without nvcc */
}

static void test_cuda_bf16_to_f32_matches_cpu(void **state)
{
    (void)state;
    skip();
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cuda_f16_to_f32_matches_cpu),
        cmocka_unit_test(test_cuda_bf16_to_f32_matches_cpu),
    };
    return cmocka_run_group_tests_name("gpu_convert", tests, NULL, NULL);
}
