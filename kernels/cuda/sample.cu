// sample.cu - next-token sampling on the device with per-request Philox seeds, one block of
// KERN_SAMPLE_CHUNKS threads per row; twin of kernels/cpu/sample.c (same thresholds by
// bisection, same id-order draw over the same contiguous chunks, masses summed in double in the
// same order within a chunk and across chunks).
#include "common.cuh"
#include "kernels_cuda.h"

#include <math.h>

static __device__ void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c1 = lo1;
        c3 = lo0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

static __device__ double philox_uniform(uint64_t seed, uint64_t step)
{
    uint32_t ctr[4] = { (uint32_t)step, (uint32_t)(step >> 32), 0, 0 };
    uint32_t key[2] = { (uint32_t)seed, (uint32_t)(seed >> 32) };
    uint32_t r[4];
    philox4x32_10(ctr, key, r);
    unsigned long long bits = ((unsigned long long)(r[0] >> 5) << 26) | (r[1] >> 6);
    return (double)bits * (1.0 / 9007199254740992.0);
}

static __device__ __forceinline__ uint32_t sample_key(float f)
{
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

static __global__ void sample_kernel(const float *logits, int32_t n_rows, int32_t n,
                                     struct kern_sample_params p, int32_t *tokens)
{
    __shared__ double dscratch[32];
    __shared__ int iscratch[32];
    __shared__ float fscratch[32];
    __shared__ double chunk_sum[KERN_SAMPLE_CHUNKS];
    __shared__ int32_t chunk_last[KERN_SAMPLE_CHUNKS];
    __shared__ int32_t best_idx[32];
    __shared__ float best_val[32];
    int32_t r = blockIdx.x, c = threadIdx.x;
    if (r >= n_rows) {
        return;
    }
    const float *x = logits + (size_t)r * (size_t)n;
    int32_t lo = (int32_t)((int64_t)n * c / KERN_SAMPLE_CHUNKS);
    int32_t hi = (int32_t)((int64_t)n * (c + 1) / KERN_SAMPLE_CHUNKS);
    float t = p.temperature[r];
    if (t < 1e-4f || n <= 1) {
        // greedy: the first maximum (ties go to the lower id)
        int32_t bi = -1;
        float bv = -INFINITY;
        for (int32_t i = lo; i < hi; i++) {
            if (bi < 0 || x[i] > bv) {
                bv = x[i];
                bi = i;
            }
        }
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
                bv = ov;
                bi = oi;
            }
        }
        if (c % 32 == 0) {
            best_val[c / 32] = bv;
            best_idx[c / 32] = bi;
        }
        __syncthreads();
        if (c == 0) {
            for (int w = 1; w < KERN_SAMPLE_CHUNKS / 32; w++) {
                if (best_idx[w] >= 0 && (bi < 0 || best_val[w] > bv)) {
                    bv = best_val[w];
                    bi = best_idx[w];
                }
            }
            tokens[r] = bi < 0 ? 0 : bi;
        }
        return;
    }
    float mx = -INFINITY;
    for (int32_t i = lo; i < hi; i++) {
        mx = fmaxf(mx, x[i] / t);
    }
    mx = cuda_block_max(mx, fscratch);
    // top-k: the largest key K with count(key >= K) >= k (block-uniform decisions)
    uint32_t k_cut = 0;
    int32_t top_k = p.top_k[r];
    if (top_k > 0 && top_k < n) {
        uint32_t a = 0, b = 0xffffffffu;
        while (a < b) {
            uint32_t mid = a + (b - a) / 2 + 1;
            int cnt = 0;
            for (int32_t i = lo; i < hi; i++) {
                cnt += sample_key(x[i] / t) >= mid;
            }
            if (cuda_block_sum<int>(cnt, iscratch) >= top_k) {
                a = mid;
            } else {
                b = mid - 1;
            }
        }
        k_cut = a;
    }
    // top-p: the largest key K >= k_cut with mass(k_cut <= key < K) <= (1 - top_p) Z
    uint32_t cut = k_cut;
    float top_p = p.top_p[r];
    if (top_p < 1.0f) {
        double z = 0.0;
        for (int32_t i = lo; i < hi; i++) {
            float s = x[i] / t;
            z += sample_key(s) >= k_cut ? (double)expf(s - mx) : 0.0;
        }
        z = cuda_block_sum<double>(z, dscratch);
        double limit = (1.0 - (double)top_p) * z;
        uint32_t a = k_cut, b = sample_key(mx);
        while (a < b) {
            uint32_t mid = a + (b - a) / 2 + 1;
            double below = 0.0;
            for (int32_t i = lo; i < hi; i++) {
                float s = x[i] / t;
                uint32_t key = sample_key(s);
                below += key >= k_cut && key < mid ? (double)expf(s - mx) : 0.0;
            }
            if (cuda_block_sum<double>(below, dscratch) <= limit) {
                a = mid;
            } else {
                b = mid - 1;
            }
        }
        cut = a;
    }
    // the draw in id order: chunk sums, then one thread walks them as the CPU twin does
    double sum = 0.0;
    int32_t last = -1;
    for (int32_t i = lo; i < hi; i++) {
        float s = x[i] / t;
        if (sample_key(s) >= cut) {
            sum += (double)expf(s - mx);
            last = i;
        }
    }
    chunk_sum[c] = sum;
    chunk_last[c] = last;
    __syncthreads();
    if (c != 0) {
        return;
    }
    double total = 0.0;
    for (int k = 0; k < KERN_SAMPLE_CHUNKS; k++) {
        total += chunk_sum[k];
    }
    double u = philox_uniform(p.seed[r], p.step[r]) * total, acc = 0.0;
    int32_t pick = -1;
    for (int k = 0; k < KERN_SAMPLE_CHUNKS && pick < 0; k++) {
        if (chunk_sum[k] <= 0.0) {
            continue;
        }
        if (acc + chunk_sum[k] <= u) {
            acc += chunk_sum[k];
            last = chunk_last[k];
            continue;
        }
        int32_t klo = (int32_t)((int64_t)n * k / KERN_SAMPLE_CHUNKS);
        int32_t khi = (int32_t)((int64_t)n * (k + 1) / KERN_SAMPLE_CHUNKS);
        for (int32_t i = klo; i < khi; i++) {
            float s = x[i] / t;
            if (sample_key(s) < cut) {
                continue;
            }
            acc += (double)expf(s - mx);
            last = i;
            if (acc > u) {
                break;
            }
        }
        pick = last; // the chosen token, or the chunk's last when rounding left u at its end
    }
    tokens[r] = pick >= 0 ? pick : (last >= 0 ? last : 0);
}

extern "C" int kern_cuda_sample(const float *logits_d, int32_t n_rows, int32_t n_vocab,
                                const struct kern_sample_params *p, int32_t *tokens_d, void *stream)
{
    if (n_rows <= 0) {
        return 0;
    }
    sample_kernel<<<n_rows, KERN_SAMPLE_CHUNKS, 0, (cudaStream_t)stream>>>(logits_d, n_rows,
                                                                           n_vocab, *p, tokens_d);
    CUDA_CHECK_LAUNCH();
    return 0;
}
