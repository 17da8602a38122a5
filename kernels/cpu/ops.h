/* ops.h - the LLaMA forward pass's numerical operations as plain reference loops (fp32). These
 * are the oracle the CUDA twins are tested against; the CPU backend calls them per row or per
 * (token, head) from its thread pool. All pointers are row-major, unaliased unless stated. */
#ifndef KERNELS_CPU_OPS_H
#define KERNELS_CPU_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i], i < n. out may equal x. */
void kern_cpu_rmsnorm_f32(const float *x, const float *w, float *out, int32_t n, float eps);

/* Rotates one token's heads in place by position `pos`: x [n_heads, head_dim].
 * Frequencies theta^(-2i/head_dim), i < head_dim/2, computed in fp32 as transformers does.
 * half_split: pairs (i, i + head_dim/2) (Hugging Face); else pairs (2i, 2i+1) (Meta, llama2.c).*/
void kern_cpu_rope_f32(float *x, int32_t n_heads, int32_t head_dim, int32_t pos, float theta,
                       int half_split);

/* y[i] (+)= sum_d w[i, d] x[d] for i < n: w [n, k] row-major, x [k], y [n]; adds to y when
 * `accumulate`. Each row in a fixed summation order, independent of the other rows. */
void kern_cpu_gemv_f32(const float *w, const float *x, float *y, int32_t n, int32_t k,
                       int accumulate);

/* out[i] = silu(gate[i]) * up[i], i < n. out may equal gate. */
void kern_cpu_swiglu_f32(const float *gate, const float *up, float *out, size_t n);

/* In-place softmax over x[0..n). */
void kern_cpu_softmax_f32(float *x, int32_t n);

/* One layer's paged KV cache: a pool of blocks of block_size positions each. Key element d of KV
 * head h at position j of a sequence whose block table is `blocks` sits at
 *   k[blocks[j / block_size] * block_stride + h * head_stride + (j % block_size) * token_stride
 *     + d],
 * the value likewise in v. Head-major blocks ([n_kv_heads][block_size][head_dim], one head's
 * keys in one contiguous run) have head_stride block_size * head_dim and token_stride head_dim;
 * token-major ones ([block_size][n_kv_heads * head_dim]) head_stride head_dim and token_stride
 * n_kv_heads * head_dim. Plain data. */
struct kern_kv_layout {
    const float *k;
    const float *v;
    size_t block_stride, head_stride, token_stride;
    int32_t block_size, head_dim;
};

/* Causal attention of query heads h0 .. h1-1 of one token over positions 0 .. n_ctx-1 of a
 * sequence, scale 1/sqrt(head_dim). Query head h reads KV head h / group (grouped-query
 * attention; group 1 for multi-head).
 *   q       [n_heads, head_dim] the token's rotated queries (only heads h0 .. h1-1 are read)
 *   blocks  the sequence's block table, at least ceil(n_ctx / block_size) entries
 *   scores  scratch [h1 - h0, n_ctx]
 *   out     [n_heads, head_dim]; heads h0 .. h1-1 are written
 * The keys are walked block by block, each block's keys of all the heads at once, so a block is
 * read in one run. Each (token, head) result is computed in a fixed order that depends neither
 * on the layout's strides nor on h0, h1 or the other heads. */
void kern_cpu_attention_paged_f32(const struct kern_kv_layout *kv, const int32_t *blocks,
                                  int32_t n_ctx, const float *q, int32_t h0, int32_t h1,
                                  int32_t group, float *scores, float *out);

#ifdef __cplusplus
}
#endif

#endif
