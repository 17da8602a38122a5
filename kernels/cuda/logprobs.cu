// logprobs.cu - log-probabilities on the device, so that logits never leave it; twin of
// kernels/cpu/logprobs.c (see kernels/cpu/twin.h for the contract). One block per row: the max,
// the sum of exp in double (another order than the twin's: the same lse to within a float
// rounding), then the n_top best in n_top rounds, each a block-wide argmax over the entries
// that come after the previous winner in the order (value descending, id ascending), which
// needs no record of what was taken.
#include "common.cuh"
#include "kernels_cuda.h"

#include <math.h>

#define LOGPROBS_THREADS 256

// a before b in the order: larger value, then lower id; id -1 is "none"
static __device__ __forceinline__ bool lp_before(float va, int32_t ia, float vb, int32_t ib)
{
    return ib < 0 || (ia >= 0 && (va > vb || (va == vb && ia < ib)));
}

static __global__ void logprobs_kernel(const float *logits, int32_t n_rows, int32_t n,
                                       const int32_t *chosen, int32_t n_top,
                                       struct kern_logprob *out)
{
    __shared__ float fscratch[32];
    __shared__ double dscratch[32];
    __shared__ float best_v[LOGPROBS_THREADS / 32];
    __shared__ int32_t best_i[LOGPROBS_THREADS / 32];
    int32_t r = blockIdx.x;
    if (r >= n_rows) {
        return;
    }
    const float *x = logits + (size_t)r * (size_t)n;
    struct kern_logprob *o = out + (size_t)r * (size_t)(1 + n_top);
    float mx = -INFINITY;
    for (int32_t i = threadIdx.x; i < n; i += blockDim.x) {
        mx = fmaxf(mx, x[i]);
    }
    mx = cuda_block_max(mx, fscratch);
    double sum = 0.0;
    for (int32_t i = threadIdx.x; i < n; i += blockDim.x) {
        sum += exp((double)(x[i] - mx));
    }
    sum = cuda_block_sum<double>(sum, dscratch);
    float lse = mx + (float)log(sum);
    if (threadIdx.x == 0) {
        o[0].token = chosen[r];
        o[0].logprob = x[chosen[r]] - lse;
    }
    float pv = INFINITY;
    int32_t pi = -1; // the previous winner (-1 before the first round)
    bool exhausted = false;
    for (int32_t k = 0; k < n_top; k++) {
        float bv = -INFINITY;
        int32_t bi = -1;
        for (int32_t i = threadIdx.x; i < n && !exhausted; i += blockDim.x) {
            float v = x[i];
            bool after = k == 0 || v < pv || (v == pv && i > pi);
            if (after && lp_before(v, i, bv, bi)) {
                bv = v;
                bi = i;
            }
        }
        for (int off = 16; off > 0; off >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, off);
            int32_t oi = __shfl_xor_sync(0xffffffffu, bi, off);
            if (lp_before(ov, oi, bv, bi)) {
                bv = ov;
                bi = oi;
            }
        }
        __syncthreads(); // best_* of the previous round are read
        if (threadIdx.x % 32 == 0) {
            best_v[threadIdx.x / 32] = bv;
            best_i[threadIdx.x / 32] = bi;
        }
        __syncthreads();
        bv = best_v[0];
        bi = best_i[0];
        for (int w = 1; w < LOGPROBS_THREADS / 32; w++) {
            if (lp_before(best_v[w], best_i[w], bv, bi)) {
                bv = best_v[w];
                bi = best_i[w];
            }
        }
        if (threadIdx.x == 0) {
            o[1 + k].token = bi;
            o[1 + k].logprob = bi >= 0 ? bv - lse : -INFINITY;
        }
        pv = bv;
        pi = bi;
        exhausted = bi < 0; // a vocabulary smaller than n_top: the rest stay empty
    }
}

extern "C" int kern_cuda_logprobs(const float *logits_d, int32_t n_rows, int32_t n_vocab,
                                  const int32_t *chosen_d, int32_t n_top,
                                  struct kern_logprob *out_d, void *stream)
{
    if (n_rows <= 0) {
        return 0;
    }
    if (n_top < 0 || n_top > KERN_LOGPROBS_MAX || n_vocab <= 0) {
        return -EINVAL;
    }
    logprobs_kernel<<<n_rows, LOGPROBS_THREADS, 0, (cudaStream_t)stream>>>(
        logits_d, n_rows, n_vocab, chosen_d, n_top, out_d);
    CUDA_CHECK_LAUNCH();
    return 0;
}
