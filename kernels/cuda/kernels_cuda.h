/* kernels_cuda.h - the extern "C" entries of kernels/cuda/ (plain C: streams travel as void *,
 * so callers need no CUDA headers). Each returns 0, -EINVAL for a shape it does not support, or
 * -EIO after logging the CUDA error. Pointers ending in _d are device memory; the structs of
 * kernels/cpu/twin.h are passed by value to the kernels, so their arrays must be device memory
 * too. Each kern_cuda_<op> has the contract of its CPU twin kern_cpu_<op> in twin.h. */
#ifndef KERNELS_CUDA_H
#define KERNELS_CUDA_H

#include "kernels/cpu/twin.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* f16 / bf16 bits [n] to f32 [n] on `stream` (a cudaStream_t, NULL for the default stream). */
int kern_cuda_f16_to_f32(const uint16_t *src_d, float *dst_d, size_t n, void *stream);
int kern_cuda_bf16_to_f32(const uint16_t *src_d, float *dst_d, size_t n, void *stream);

/* Twins of kernels/cpu/twin.h. */
int kern_cuda_embed_bf16(const uint16_t *table_d, const int32_t *tokens_d, int32_t n_tokens,
                         int32_t dim, float *out_d, void *stream);
int kern_cuda_rows_gather_f32(const float *x_d, int32_t dim, const int32_t *rows_d, int32_t n_out,
                              float *out_d, void *stream);
int kern_cuda_add_rmsnorm_bf16(float *x_d, const float *delta_d, const float *w_d, uint16_t *out_d,
                               int32_t n_rows, int32_t dim, float eps, void *stream);
int kern_cuda_rope_kv_write_bf16(float *qkv_d, const int32_t *pos_d, const int32_t *slot_d,
                                 int32_t n_tokens, const struct kern_qkv_shape *s,
                                 uint16_t *k_cache_d, uint16_t *v_cache_d, void *stream);
int kern_cuda_silu_mul_bf16(const float *gate_up_d, int32_t n_rows, int32_t n_ff, uint16_t *out_d,
                            void *stream);

/* max_q_len: the longest run's q_len (sizes the grid; the host knows it). head_dim <= 256 and
 * 2 * block_size * head_dim floats must fit 48 KiB of shared memory. */
int kern_cuda_attn_prefill_bf16(const float *q_d, const uint16_t *k_cache_d,
                                const uint16_t *v_cache_d, const struct kern_attn_runs *runs,
                                const struct kern_attn_shape *s, int32_t max_q_len, uint16_t *out_d,
                                void *stream);

/* The grid depends only on runs->n_runs and max_splits (graph-capturable). */
int kern_cuda_attn_decode_bf16(const float *q_d, const uint16_t *k_cache_d,
                               const uint16_t *v_cache_d, const struct kern_attn_runs *runs,
                               const struct kern_attn_shape *s, int32_t kv_split,
                               int32_t max_splits, float *part_o_d, float *part_lse_d,
                               uint16_t *out_d, void *stream);

int kern_cuda_sample(const float *logits_d, int32_t n_rows, int32_t n_vocab,
                     const struct kern_sample_params *p, int32_t *tokens_d, void *stream);

/* chosen_d [n_rows], out_d [n_rows, 1 + n_top]; one block per row. */
int kern_cuda_logprobs(const float *logits_d, int32_t n_rows, int32_t n_vocab,
                       const int32_t *chosen_d, int32_t n_top, struct kern_logprob *out_d,
                       void *stream);

int kern_cuda_fill_random_bf16(uint16_t *dst_d, size_t n, uint64_t seed, float offset, float scale,
                               void *stream);
int kern_cuda_fill_random_f32(float *dst_d, size_t n, uint64_t seed, float offset, float scale,
                              void *stream);

#ifdef __cplusplus
}
#endif

#endif
