// test_cuemu.cu - cuemu's own tests (tests/cuemu/README.md), built only with `make CUDA=emu`:
// that it executes CUDA's semantics (barriers, shuffles, dynamic shared memory, graphs that
// capture arguments by value, cuBLAS's column-major GEMM) against independent host
// computations, and that it catches what a GPU would punish: a missing barrier changes results
// between thread orders, deadlocks and divergent collectives abort, copies and GEMM operands on
// the wrong side or out of range fail, captures that call forbidden APIs are invalidated.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
extern "C" {
#include <cmocka.h>
}
/* clang-format on */

#include <vector>

// ---- kernels --------------------------------------------------------------------------------

// Tree sum of 256 ints per block through shared memory.
static __global__ void k_block_sum(const int *in, int *out)
{
    __shared__ int s[256];
    int t = threadIdx.x;
    s[t] = in[blockIdx.x * 256 + t];
    __syncthreads();
    for (int half = 128; half > 0; half >>= 1) {
        if (t < half) {
            s[t] += s[t + half];
        }
        __syncthreads();
    }
    if (t == 0) {
        out[blockIdx.x] = s[0];
    }
}

// Each thread publishes its index and reads its neighbour's: correct only with the barrier.
static __global__ void k_neighbour(int *out, int with_barrier)
{
    __shared__ int buf[64];
    int t = threadIdx.x, n = blockDim.x;
    buf[t] = -1;
    __syncthreads();
    buf[t] = t;
    if (with_barrier) {
        __syncthreads();
    }
    out[t] = buf[(t + 1) % n];
}

// Butterfly sums over the warp (float and double) and over halves of it (width 16).
static __global__ void k_shuffle(float *f_out, double *d_out, int *w16_out)
{
    int lane = threadIdx.x % 32;
    float f = (float)(threadIdx.x + 1);
    double d = 1e10 + threadIdx.x;
    int w = lane;
    for (int o = 16; o > 0; o >>= 1) {
        f += __shfl_xor_sync(0xffffffffu, f, o);
        d += __shfl_xor_sync(0xffffffffu, d, o);
    }
    for (int o = 8; o > 0; o >>= 1) {
        w += __shfl_xor_sync(0xffffffffu, w, o, 16);
    }
    f_out[threadIdx.x] = f;
    d_out[threadIdx.x] = d;
    w16_out[threadIdx.x] = w;
}

// Reverses n floats of each block through dynamic shared memory.
static __global__ void k_reverse(const float *in, float *out, int n)
{
    extern __shared__ float tile[];
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        tile[i] = in[blockIdx.x * n + i];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        out[blockIdx.x * n + i] = tile[n - 1 - i];
    }
}

// Half a warp shuffles while the other half waits at a barrier: no thread can go on.
static __global__ void k_deadlock(float *out)
{
    float v = 1.0f;
    if (threadIdx.x < 16) {
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = v;
}

// Lanes of one warp name different masks for the same shuffle.
static __global__ void k_mask_mismatch(float *out)
{
    unsigned mask = threadIdx.x < 16 ? 0x0000ffffu : 0xffffffffu;
    out[threadIdx.x] = __shfl_xor_sync(mask, 1.0f, 1);
}

static __global__ void k_add(float *x, float v)
{
    x[threadIdx.x] += v;
}

// ---- helpers --------------------------------------------------------------------------------

static void *dev(size_t bytes)
{
    void *p = NULL;
    assert_int_equal(cudaMalloc(&p, bytes), cudaSuccess);
    return p;
}

static void put(void *d, const void *h, size_t bytes)
{
    assert_int_equal(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice), cudaSuccess);
}

static void get(void *h, const void *d, size_t bytes)
{
    assert_int_equal(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
}

// Runs fn in a child process; returns its termination signal (0 if it exited) and what it
// wrote on stderr.
static int in_child(void (*fn)(void), char *err, size_t err_len)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        fn();
        _exit(0);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < err_len && (r = read(fds[0], err + n, err_len - 1 - n)) > 0) {
        n += (size_t)r;
    }
    err[n] = 0;
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

// ---- tests ----------------------------------------------------------------------------------

static void test_block_sum_matches_host(void **state)
{
    (void)state;
    enum { BLOCKS = 37 };
    std::vector<int> in(BLOCKS * 256), out(BLOCKS), want(BLOCKS, 0);
    for (size_t i = 0; i < in.size(); i++) {
        in[i] = (int)((i * 2654435761u) % 1000) - 500;
        want[i / 256] += in[i];
    }
    int *in_d = (int *)dev(in.size() * 4), *out_d = (int *)dev(BLOCKS * 4);
    put(in_d, in.data(), in.size() * 4);
    static const char *const orders[] = { "forward", "reverse", "random:7" };
    for (const char *o : orders) {
        setenv("CUEMU_ORDER", o, 1);
        k_block_sum<<<BLOCKS, 256>>>(in_d, out_d);
        assert_int_equal(cudaGetLastError(), cudaSuccess);
        get(out.data(), out_d, BLOCKS * 4);
        for (int b = 0; b < BLOCKS; b++) {
            assert_int_equal(out[b], want[b]);
        }
    }
    unsetenv("CUEMU_ORDER");
    cudaFree(in_d);
    cudaFree(out_d);
}

// The check that matters for kernels/cuda: a missing barrier gives a wrong answer in at least one
// order, a present one the right answer in all.
static void test_missing_barrier_is_visible(void **state)
{
    (void)state;
    enum { N = 64 };
    int *out_d = (int *)dev(N * 4), out[N];
    static const char *const orders[] = { "forward", "reverse", "random:3" };
    for (int with = 0; with < 2; with++) {
        int wrong_orders = 0;
        for (const char *o : orders) {
            setenv("CUEMU_ORDER", o, 1);
            k_neighbour<<<1, N>>>(out_d, with);
            get(out, out_d, sizeof(out));
            int wrong = 0;
            for (int t = 0; t < N; t++) {
                wrong += out[t] != (t + 1) % N;
            }
            wrong_orders += wrong > 0;
        }
        if (with) {
            assert_int_equal(wrong_orders, 0);
        } else {
            assert_int_equal(wrong_orders, 3); // every order shows the race somewhere
        }
    }
    unsetenv("CUEMU_ORDER");
    cudaFree(out_d);
}

static void test_shuffles(void **state)
{
    (void)state;
    enum { N = 96 }; // three warps
    float *f_d = (float *)dev(N * 4);
    double *d_d = (double *)dev(N * 8);
    int *w_d = (int *)dev(N * 4);
    k_shuffle<<<1, N>>>(f_d, d_d, w_d);
    float f[N];
    double d[N];
    int w[N];
    get(f, f_d, sizeof(f));
    get(d, d_d, sizeof(d));
    get(w, w_d, sizeof(w));
    for (int t = 0; t < N; t++) {
        int warp0 = t / 32 * 32, half0 = t / 16 * 16;
        float fs = 0;
        double ds = 0;
        int ws = 0;
        for (int l = 0; l < 32; l++) {
            fs += (float)(warp0 + l + 1);
            ds += 1e10 + (warp0 + l);
        }
        for (int l = 0; l < 16; l++) {
            ws += (half0 + l) % 32;
        }
        assert_true(f[t] == fs); // small integers: exact in any order
        assert_true(d[t] == ds);
        assert_int_equal(w[t], ws);
    }
    cudaFree(f_d);
    cudaFree(d_d);
    cudaFree(w_d);
}

static void test_dynamic_shared_memory(void **state)
{
    (void)state;
    enum { B = 5, N = 1000 };
    std::vector<float> in(B * N), out(B * N);
    for (size_t i = 0; i < in.size(); i++) {
        in[i] = (float)i;
    }
    float *in_d = (float *)dev(in.size() * 4), *out_d = (float *)dev(in.size() * 4);
    put(in_d, in.data(), in.size() * 4);
    k_reverse<<<B, 128, N * sizeof(float)>>>(in_d, out_d, N);
    assert_int_equal(cudaGetLastError(), cudaSuccess);
    get(out.data(), out_d, out.size() * 4);
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < N; i++) {
            assert_true(out[b * N + i] == in[b * N + N - 1 - i]);
        }
    }
    // more than 48 KiB without an opt-in, and a block of 2048 threads: refused, nothing runs
    k_reverse<<<B, 128, 64 * 1024>>>(in_d, out_d, N);
    assert_int_equal(cudaGetLastError(), cudaErrorInvalidValue);
    k_reverse<<<B, 2048, 1024>>>(in_d, out_d, N);
    assert_int_equal(cudaGetLastError(), cudaErrorInvalidConfiguration);
    assert_int_equal(cudaGetLastError(), cudaSuccess); // cleared by the read
    cudaFree(in_d);
    cudaFree(out_d);
}

static void run_deadlock(void)
{
    float *o = NULL;
    cudaMalloc((void **)&o, 32 * 4);
    k_deadlock<<<1, 32>>>(o);
}

static void run_mask_mismatch(void)
{
    float *o = NULL;
    cudaMalloc((void **)&o, 32 * 4);
    k_mask_mismatch<<<1, 32>>>(o);
}

static void test_deadlock_and_divergence_abort(void **state)
{
    (void)state;
    char err[2048];
    assert_int_equal(in_child(run_deadlock, err, sizeof(err)), SIGABRT);
    assert_non_null(strstr(err, "kernel k_deadlock block (0,0,0)"));
    assert_non_null(strstr(err, "deadlock: 16 threads wait at __syncthreads, 16 in warp"));
    // lanes 0-15 shuffle among themselves and leave; 16-31 wait for them in a full-warp one
    assert_int_equal(in_child(run_mask_mismatch, err, sizeof(err)), SIGABRT);
    assert_non_null(strstr(err, "kernel k_mask_mismatch block (0,0,0)"));
    assert_non_null(strstr(err, "exited while its warp waits for it in a collective"));
}

static void test_memory_checks(void **state)
{
    (void)state;
    size_t free0, total;
    assert_int_equal(cudaMemGetInfo(&free0, &total), cudaSuccess);
    char *a = (char *)dev(1000);
    size_t free1;
    cudaMemGetInfo(&free1, &total);
    assert_int_equal(free0 - free1, 1000);
    // fresh device memory is not zero: reading it before writing shows up as NaN
    float f;
    get(&f, a, 4);
    assert_true(isnan(f));
    char host[2000] = { 0 };
    assert_int_equal(cudaMemcpy(a, host, 1000, cudaMemcpyHostToDevice), cudaSuccess);
    // one byte past the end, the wrong direction, a host pointer as the device side
    assert_int_equal(cudaMemcpy(a, host, 1001, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    assert_int_equal(cudaMemcpy(host, a + 1, 1000, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
    assert_int_equal(cudaMemcpy(a, host, 10, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
    assert_int_equal(cudaMemcpy(host, host + 100, 10, cudaMemcpyHostToDevice),
                     cudaErrorInvalidValue);
    assert_int_equal(cudaMemset(host, 0, 10), cudaErrorInvalidValue);
    assert_int_equal(cudaMemsetAsync(a + 990, 0, 11, NULL), cudaErrorInvalidValue);
    assert_int_equal(cudaFree(a + 8), cudaErrorInvalidValue);
    assert_int_equal(cudaFreeHost(a), cudaErrorInvalidValue);
    // more than the emulated device holds
    void *big = NULL;
    assert_int_equal(cudaMalloc(&big, total), cudaErrorMemoryAllocation);
    assert_null(big);
    assert_int_equal(cudaGetLastError(), cudaErrorMemoryAllocation);
    assert_int_equal(cudaFree(a), cudaSuccess);
    cudaMemGetInfo(&free1, &total);
    assert_int_equal(free1, free0);
}

static void test_graph_capture(void **state)
{
    (void)state;
    cudaStream_t s;
    assert_int_equal(cudaStreamCreateWithFlags(&s, cudaStreamDefault), cudaSuccess);
    float *x_d = (float *)dev(32 * 4), *h = NULL;
    assert_int_equal(cudaMallocHost((void **)&h, 32 * 4), cudaSuccess);
    for (int i = 0; i < 32; i++) {
        h[i] = (float)i;
    }
    // a copy node reads host memory when the graph runs; a kernel's arguments are fixed at capture
    float v = 100.0f;
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    assert_int_equal(cudaMemcpyAsync(x_d, h, 32 * 4, cudaMemcpyHostToDevice, s), cudaSuccess);
    k_add<<<1, 32, 0, s>>>(x_d, v);
    cudaGraph_t g;
    assert_int_equal(cudaStreamEndCapture(s, &g), cudaSuccess);
    float out[32];
    get(out, x_d, sizeof(out));
    assert_true(isnan(out[0])); // capturing ran nothing
    cudaGraphExec_t e;
    assert_int_equal(cudaGraphInstantiate(&e, g, 0), cudaSuccess);
    v = 5.0f;
    h[3] = 1000.0f;
    assert_int_equal(cudaGraphLaunch(e, s), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(s), cudaSuccess);
    get(out, x_d, sizeof(out));
    for (int i = 0; i < 32; i++) {
        assert_true(out[i] == (i == 3 ? 1000.0f : (float)i) + 100.0f);
    }
    cudaGraphExecDestroy(e);
    cudaGraphDestroy(g);
    // a synchronous copy inside a capture is refused and spoils the capture
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    k_add<<<1, 32, 0, s>>>(x_d, 1.0f);
    assert_int_equal(cudaMemcpy(out, x_d, 4, cudaMemcpyDeviceToHost),
                     cudaErrorStreamCaptureUnsupported);
    assert_int_equal(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
    assert_null(g);
    // so does work on the legacy stream, and synchronizing the captured stream
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    assert_int_equal(cudaMemsetAsync(x_d, 0, 4, NULL), cudaErrorStreamCaptureImplicit);
    assert_int_equal(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
    assert_int_equal(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    assert_int_equal(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
    assert_int_equal(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
    cudaGetLastError();
    cudaFreeHost(h);
    cudaFree(x_d);
    cudaStreamDestroy(s);
}

static uint16_t bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static double from_bf16(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// cublasGemmEx against a double-precision loop over the column-major definition, both
// transposes, with padding in every leading dimension and beta != 0.
static void test_gemm_ex(void **state)
{
    (void)state;
    cublasHandle_t hdl;
    assert_int_equal(cublasCreate(&hdl), CUBLAS_STATUS_SUCCESS);
    const int m = 13, n = 7, k = 21;
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
            int lda = ar + 3, ldb = br + 1, ldc = m + 2;
            std::vector<uint16_t> A((size_t)lda * ac), B((size_t)ldb * bc);
            std::vector<float> C((size_t)ldc * n);
            for (size_t i = 0; i < A.size(); i++) {
                A[i] = bf16((float)((int)(i * 7 % 19) - 9) / 8);
            }
            for (size_t i = 0; i < B.size(); i++) {
                B[i] = bf16((float)((int)(i * 5 % 13) - 6) / 4);
            }
            for (size_t i = 0; i < C.size(); i++) {
                C[i] = (float)i;
            }
            void *A_d = dev(A.size() * 2), *B_d = dev(B.size() * 2), *C_d = dev(C.size() * 4);
            put(A_d, A.data(), A.size() * 2);
            put(B_d, B.data(), B.size() * 2);
            put(C_d, C.data(), C.size() * 4);
            float alpha = 1.5f, beta = 0.5f;
            assert_int_equal(cublasGemmEx(hdl, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                          tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, A_d,
                                          CUDA_R_16BF, lda, B_d, CUDA_R_16BF, ldb, &beta, C_d,
                                          CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                             CUBLAS_STATUS_SUCCESS);
            std::vector<float> got(C.size());
            get(got.data(), C_d, got.size() * 4);
            for (int j = 0; j < n; j++) {
                for (int i = 0; i < m; i++) {
                    double s = 0;
                    for (int p = 0; p < k; p++) {
                        double a = from_bf16(ta ? A[(size_t)i * lda + p] : A[(size_t)p * lda + i]);
                        double b = from_bf16(tb ? B[(size_t)p * ldb + j] : B[(size_t)j * ldb + p]);
                        s += a * b;
                    }
                    double want = alpha * s + beta * C[(size_t)j * ldc + i];
                    assert_true(fabs(got[(size_t)j * ldc + i] - want) <= 1e-4 * (1 + fabs(want)));
                }
                for (int i = m; i < ldc; i++) { // padding rows untouched
                    assert_true(got[(size_t)j * ldc + i] == C[(size_t)j * ldc + i]);
                }
            }
            // an operand one column short of what m, n, k and ld describe
            assert_int_equal(cublasGemmEx(hdl, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                          tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n + 1, k, &alpha, A_d,
                                          CUDA_R_16BF, lda, B_d, CUDA_R_16BF, ldb, &beta, C_d,
                                          CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                             CUBLAS_STATUS_INVALID_VALUE);
            cudaFree(A_d);
            cudaFree(B_d);
            cudaFree(C_d);
        }
    }
    cudaGetLastError();
    cublasDestroy(hdl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_sum_matches_host),
        cmocka_unit_test(test_missing_barrier_is_visible),
        cmocka_unit_test(test_shuffles),
        cmocka_unit_test(test_dynamic_shared_memory),
        cmocka_unit_test(test_deadlock_and_divergence_abort),
        cmocka_unit_test(test_memory_checks),
        cmocka_unit_test(test_graph_capture),
        cmocka_unit_test(test_gemm_ex),
    };
    return cmocka_run_group_tests_name("cuemu", tests, NULL, NULL);
}
