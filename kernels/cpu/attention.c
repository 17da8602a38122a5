/* attention.c - softmax, and causal attention of one token's query heads over a paged KV cache.
 *
 * Dot products keep 8 partial sums (lane j sums elements j, j+8, ...) combined in a fixed tree,
 * written with GCC vector extensions so they vectorize without reassociation; the result for a
 * (token, head) never depends on what else is in the batch. On x86-64 an AVX2+FMA clone is
 * chosen at load time when the CPU has it. */
#include "ops.h"
#include "simd.h"
#include "vexp.h"

#include <math.h>
#include <string.h>

KERN_CPU_CLONES
void kern_cpu_softmax_f32(float *x, int32_t n)
{
    float max = x[0];
    for (int32_t i = 1; i < n; i++) {
        max = x[i] > max ? x[i] : max;
    }
    /* exp in lanes of 8 (kernels/cpu/vexp.h), summed in a fixed order */
    int32_t n8 = n / 8 * 8;
    kern_v8 acc = { 0 };
    for (int32_t i = 0; i < n8; i += 8) {
        kern_v8 v;
        KERN_V8_LOAD(v, x + i);
        v -= max;
        KERN_V8_STORE(x + i, v);
        kern_cpu_exp8(x + i, x + i);
        KERN_V8_LOAD(v, x + i);
        acc += v;
    }
    float sum = kern_v8_hsum(&acc);
    for (int32_t i = n8; i < n; i++) {
        x[i] = kern_cpu_exp1(x[i] - max);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int32_t i = 0; i < n; i++) {
        x[i] *= inv;
    }
}

/* sc[r .. r+N) = scale * qh . k_r for keys r .. r+N-1 of a block, N independent accumulator
 * chains. Each key's sum runs in the same order whatever N is: lane j adds qh[d] k[d] for
 * d = j, j + 8, ..., then the scalar tail, then the fixed lane sum. */
#define ATTENTION_SCORES(N)                                                        \
    do {                                                                           \
        kern_v8 acc[N];                                                            \
        _Pragma("GCC unroll 8") for (int u = 0; u < (N); u++)                      \
        {                                                                          \
            acc[u] = (kern_v8){ 0 };                                               \
        }                                                                          \
        for (int32_t d = 0; d < n_vec; d++) {                                      \
            kern_v8 qv;                                                            \
            KERN_V8_LOAD(qv, qh + 8 * d);                                          \
            _Pragma("GCC unroll 8") for (int u = 0; u < (N); u++)                  \
            {                                                                      \
                kern_v8 kv8;                                                       \
                KERN_V8_LOAD(kv8, k_blk + (size_t)(r + u) * token_stride + 8 * d); \
                acc[u] += qv * kv8;                                                \
            }                                                                      \
        }                                                                          \
        for (int u = 0; u < (N); u++) {                                            \
            const float *k = k_blk + (size_t)(r + u) * token_stride;               \
            for (int32_t d = 8 * n_vec; d < head_dim; d++) {                       \
                acc[u][d % 8] += qh[d] * k[d];                                     \
            }                                                                      \
            sc[r + u] = kern_v8_hsum(&acc[u]) * scale;                             \
        }                                                                          \
    } while (0)

/* oh[8 dv .. 8 (dv + N)) += sum over the block's keys r < n of p_r v_r, in N vector registers
 * across the keys; each element adds the keys in order, whatever N is. */
#define ATTENTION_VALUES(N)                                             \
    do {                                                                \
        kern_v8 o[N];                                                   \
        _Pragma("GCC unroll 8") for (int u = 0; u < (N); u++)           \
        {                                                               \
            KERN_V8_LOAD(o[u], oh + 8 * (dv + u));                      \
        }                                                               \
        for (int32_t r = 0; r < n; r++) {                               \
            float a = sc[r];                                            \
            kern_v8 av = { a, a, a, a, a, a, a, a };                    \
            const float *v = v_blk + (size_t)r * token_stride + 8 * dv; \
            _Pragma("GCC unroll 8") for (int u = 0; u < (N); u++)       \
            {                                                           \
                kern_v8 vv;                                             \
                KERN_V8_LOAD(vv, v + 8 * u);                            \
                o[u] += av * vv;                                        \
            }                                                           \
        }                                                               \
        _Pragma("GCC unroll 8") for (int u = 0; u < (N); u++)           \
        {                                                               \
            KERN_V8_STORE(oh + 8 * (dv + u), o[u]);                     \
        }                                                               \
    } while (0)

KERN_CPU_CLONES
void kern_cpu_attention_paged_f32(const struct kern_kv_layout *kv, const int32_t *blocks,
                                  int32_t n_ctx, const float *q, int32_t h0, int32_t h1,
                                  int32_t group, float *scores, float *out)
{
    int32_t head_dim = kv->head_dim, bs = kv->block_size, n_vec = head_dim / 8;
    size_t token_stride = kv->token_stride;
    float scale = 1.0f / sqrtf((float)head_dim);
    int32_t n_blocks = (n_ctx + bs - 1) / bs;
    /* block by block, all the heads of a block before the next: the block is read in one run
     * (bench/attn_bench.c: 1.3-1.5x the (token, head) walk over DRAM) */
    for (int32_t ib = 0; ib < n_blocks; ib++) {
        int32_t j0 = ib * bs;
        int32_t n = n_ctx - j0 < bs ? n_ctx - j0 : bs;
        for (int32_t h = h0; h < h1; h++) {
            const float *k_blk = kv->k + (size_t)blocks[ib] * kv->block_stride +
                                 (size_t)(h / group) * kv->head_stride;
            const float *qh = q + (size_t)h * head_dim;
            float *sc = scores + (size_t)(h - h0) * n_ctx + j0;
            int32_t r = 0;
            for (; r + 8 <= n; r += 8) {
                ATTENTION_SCORES(8);
            }
            for (; r + 4 <= n; r += 4) {
                ATTENTION_SCORES(4);
            }
            for (; r < n; r++) {
                ATTENTION_SCORES(1);
            }
        }
    }
    for (int32_t h = h0; h < h1; h++) {
        kern_cpu_softmax_f32(scores + (size_t)(h - h0) * n_ctx, n_ctx);
        memset(out + (size_t)h * head_dim, 0, (size_t)head_dim * sizeof(float));
    }
    for (int32_t ib = 0; ib < n_blocks; ib++) {
        int32_t j0 = ib * bs;
        int32_t n = n_ctx - j0 < bs ? n_ctx - j0 : bs;
        for (int32_t h = h0; h < h1; h++) {
            const float *v_blk = kv->v + (size_t)blocks[ib] * kv->block_stride +
                                 (size_t)(h / group) * kv->head_stride;
            const float *sc = scores + (size_t)(h - h0) * n_ctx + j0;
            float *oh = out + (size_t)h * head_dim;
            int32_t dv = 0;
            for (; dv + 8 <= n_vec; dv += 8) {
                ATTENTION_VALUES(8);
            }
            for (; dv + 4 <= n_vec; dv += 4) {
                ATTENTION_VALUES(4);
            }
            for (; dv < n_vec; dv++) {
                ATTENTION_VALUES(1);
            }
            for (int32_t r = 0; r < n; r++) {
                const float *v = v_blk + (size_t)r * token_stride;
                for (int32_t d = 8 * n_vec; d < head_dim; d++) {
                    oh[d] += sc[r] * v[d];
                }
            }
        }
    }
}
