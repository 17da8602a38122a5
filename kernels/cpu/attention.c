/* attention.c - softmax and causal attention of one query head over a paged KV cache.
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

KERN_CPU_CLONES
void kern_cpu_attention_paged_f32(const float *q, const float *k_pool, const float *v_pool,
                                  size_t block_stride, size_t head_off, size_t token_stride,
                                  int32_t head_dim, const int32_t *blocks, int32_t block_size,
                                  int32_t n_ctx, float *scores, float *out)
{
    float scale = 1.0f / sqrtf((float)head_dim);
    int32_t n_vec = head_dim / 8;
    for (int32_t j0 = 0; j0 < n_ctx; j0 += block_size) {
        const float *k_blk = k_pool + (size_t)blocks[j0 / block_size] * block_stride + head_off;
        int32_t n = n_ctx - j0 < block_size ? n_ctx - j0 : block_size;
        int32_t r = 0;
        /* four keys at a time: independent accumulator chains, the same order per key */
        for (; r + 4 <= n; r += 4) {
            const float *k0 = k_blk + (size_t)r * token_stride;
            const float *k1 = k0 + token_stride, *k2 = k1 + token_stride, *k3 = k2 + token_stride;
            kern_v8 a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 };
            for (int32_t d = 0; d < n_vec; d++) {
                kern_v8 qv, x0, x1, x2, x3;
                KERN_V8_LOAD(qv, q + 8 * d);
                KERN_V8_LOAD(x0, k0 + 8 * d);
                KERN_V8_LOAD(x1, k1 + 8 * d);
                KERN_V8_LOAD(x2, k2 + 8 * d);
                KERN_V8_LOAD(x3, k3 + 8 * d);
                a0 += qv * x0;
                a1 += qv * x1;
                a2 += qv * x2;
                a3 += qv * x3;
            }
            for (int32_t d = 8 * n_vec; d < head_dim; d++) {
                a0[d % 8] += q[d] * k0[d];
                a1[d % 8] += q[d] * k1[d];
                a2[d % 8] += q[d] * k2[d];
                a3[d % 8] += q[d] * k3[d];
            }
            scores[j0 + r] = kern_v8_hsum(&a0) * scale;
            scores[j0 + r + 1] = kern_v8_hsum(&a1) * scale;
            scores[j0 + r + 2] = kern_v8_hsum(&a2) * scale;
            scores[j0 + r + 3] = kern_v8_hsum(&a3) * scale;
        }
        for (; r < n; r++) {
            const float *k = k_blk + (size_t)r * token_stride;
            kern_v8 acc = { 0 };
            for (int32_t d = 0; d < n_vec; d++) {
                kern_v8 qv, kv;
                KERN_V8_LOAD(qv, q + 8 * d);
                KERN_V8_LOAD(kv, k + 8 * d);
                acc += qv * kv;
            }
            for (int32_t d = 8 * n_vec; d < head_dim; d++) {
                acc[d % 8] += q[d] * k[d];
            }
            scores[j0 + r] = kern_v8_hsum(&acc) * scale;
        }
    }
    kern_cpu_softmax_f32(scores, n_ctx);
    memset(out, 0, (size_t)head_dim * sizeof(float));
    for (int32_t j0 = 0; j0 < n_ctx; j0 += block_size) {
        const float *v_blk = v_pool + (size_t)blocks[j0 / block_size] * block_stride + head_off;
        int32_t n = n_ctx - j0 < block_size ? n_ctx - j0 : block_size;
        for (int32_t r = 0; r < n; r++) {
            const float *v = v_blk + (size_t)r * token_stride;
            float a = scores[j0 + r];
            kern_v8 av = { a, a, a, a, a, a, a, a };
            for (int32_t d = 0; d < n_vec; d++) {
                kern_v8 o, vv;
                KERN_V8_LOAD(o, out + 8 * d);
                KERN_V8_LOAD(vv, v + 8 * d);
                o += av * vv;
                KERN_V8_STORE(out + 8 * d, o);
            }
            for (int32_t d = 8 * n_vec; d < head_dim; d++) {
                out[d] += a * v[d];
            }
        }
    }
}
