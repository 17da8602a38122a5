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

/* Causal attention of one query head over a paged KV cache.
 *   q            [head_dim] the (rotated) query
 *   k_pool       keys of one layer, one block every `block_stride` floats; v_pool likewise
 *   head_off     where this head's first key sits within a block
 *   token_stride floats from one key of this head to the next within a block: head_dim when the
 *                block is head-major ([kv_head][block_size][head_dim], one head's keys in one
 *                contiguous run), kv_dim when it is token-major ([block_size][kv_dim])
 *   blocks       the sequence's block table: position j lives in block blocks[j / block_size],
 *                its key at k_pool + blocks[j / bs] * block_stride + head_off
 *                + (j % bs) * token_stride
 *   n_ctx        attend to positions 0 .. n_ctx-1
 *   scores       scratch [n_ctx]
 *   out          [head_dim]
 * Scale 1/sqrt(head_dim). The arithmetic does not depend on the strides. */
void kern_cpu_attention_paged_f32(const float *q, const float *k_pool, const float *v_pool,
                                  size_t block_stride, size_t head_off, size_t token_stride,
                                  int32_t head_dim, const int32_t *blocks, int32_t block_size,
                                  int32_t n_ctx, float *scores, float *out);

#ifdef __cplusplus
}
#endif

#endif
