/* twin.h - the contracts the CUDA inference kernels (kernels/cuda/<op>.cu, declared in
 * kernels/cuda/kernels_cuda.h with the same arguments as device pointers) share with their CPU
 * twins here. The twins are plain loops a reviewer can check against the papers, unit-tested
 * against naive references in CI; tests/gpu/ compares each CUDA kernel with its twin on the same
 * inputs under a per-op bound.
 *
 * Storage follows the CUDA backend: weights, the KV cache and the inputs of every GEMM are bf16
 * (passed as uint16_t bits); norms, RoPE, softmax and every accumulation are fp32. bf16 results
 * are rounded to nearest even. The KV cache of one layer is [n_slots, n_kv_heads, head_dim] bf16
 * for K and likewise for V, where slot = block * block_size + offset (FlashInfer's NHD layout).
 * All pointers are row-major and unaliased unless stated. */
#ifndef KERNELS_CPU_TWIN_H
#define KERNELS_CPU_TWIN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* f32 to bf16 bits, round to nearest even; NaN stays NaN. */
static inline uint16_t kern_bf16_from_f32(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t)((u >> 16) | 0x40u);
    }
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* bf16 bits to f32 (exact). */
static inline float kern_bf16_to_f32(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* out[t, :] = table[tokens[t], :] as f32, t < n_tokens. table [n_vocab, dim] bf16. Exact. */
void kern_cpu_embed_bf16(const uint16_t *table, const int32_t *tokens, int32_t n_tokens,
                         int32_t dim, float *out);

/* The residual add fused with the next RMSNorm, per row r < n_rows:
 *   x[r] += delta[r] (skipped when delta is NULL), kept in fp32 (the residual stream);
 *   out[r] = bf16(x[r] / sqrt(mean(x[r]^2) + eps) * w).
 * x [n_rows, dim] in/out, delta [n_rows, dim], w [dim] fp32, out [n_rows, dim] bf16. */
void kern_cpu_add_rmsnorm_bf16(float *x, const float *delta, const float *w, uint16_t *out,
                               int32_t n_rows, int32_t dim, float eps);

/* Geometry of a fused q/k/v row: qkv [n_tokens, (n_heads + 2 n_kv_heads) * head_dim] fp32 holds
 * q (n_heads heads), then k, then v, as one GEMM against the concatenated weights writes it. */
struct kern_qkv_shape {
    int32_t n_heads, n_kv_heads, head_dim;
    float rope_theta;
    int32_t half_split; /* 1: pairs (i, i + head_dim/2) (Hugging Face); 0: (2i, 2i+1) (Meta) */
};

/* RoPE applied while K/V are written into the paged cache: for each token t, rotates its q heads
 * in place in qkv and its k heads by pos[t] (frequencies theta^(-2i/head_dim) in fp32, as
 * transformers), then stores bf16(k) and bf16(v) into slot slot[t] of k_cache and v_cache
 * ([n_slots, n_kv_heads, head_dim]). A slot < 0 skips the store (padding rows). */
void kern_cpu_rope_kv_write_bf16(float *qkv, const int32_t *pos, const int32_t *slot,
                                 int32_t n_tokens, const struct kern_qkv_shape *s,
                                 uint16_t *k_cache, uint16_t *v_cache);

/* The query runs of one attention call (CSR over the batch, as FlashInfer's page table). Run r
 * holds q rows [q_start[r], q_start[r] + q_len[r]) of one sequence at positions pos0[r] + i; query
 * i attends causally to that sequence's positions 0 .. pos0[r] + i, which live in blocks
 * block_ids[block_indptr[r] ...] (position j in block_ids[block_indptr[r] + j / block_size], offset
 * j % block_size). Plain data; on the GPU every array is device memory. */
struct kern_attn_runs {
    int32_t n_runs;
    const int32_t *q_start;      /* [n_runs] */
    const int32_t *q_len;        /* [n_runs]; 0 = a padding run (decode graphs) */
    const int32_t *pos0;         /* [n_runs] */
    const int32_t *block_indptr; /* [n_runs + 1] */
    const int32_t *block_ids;    /* [block_indptr[n_runs]] */
};

/* Attention geometry: q rows are read from q + row * q_stride + head * head_dim (q_stride lets
 * attention read q in place inside qkv); out [rows, n_heads * head_dim] bf16. Query head h reads
 * KV head h / (n_heads / n_kv_heads). Scale 1/sqrt(head_dim). */
struct kern_attn_shape {
    int32_t n_heads, n_kv_heads, head_dim, block_size;
    int32_t q_stride;
};

/* Prefill attention, FlashAttention-style (Dao et al. 2022): for each (run, head, query) the keys
 * are visited one KV block at a time with an online softmax (running max m, running sum l, fp32
 * accumulator rescaled by exp(m_old - m_new)), causal within the run. Any q_len. */
void kern_cpu_attn_prefill_bf16(const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                                const struct kern_attn_runs *runs, const struct kern_attn_shape *s,
                                uint16_t *out);

/* Decode attention split over the KV length (Flash-Decoding): runs have q_len 0 or 1; the keys
 * 0 .. pos0 of each run are cut into splits of kv_split tokens (a multiple of block_size);
 * each split yields a partial output o_s (normalized within the split) and its log-sum-exp
 * lse_s, and the merge weights the splits by exp(lse_s - max lse). part_o [n_runs, n_heads,
 * max_splits, head_dim] and part_lse [n_runs, n_heads, max_splits] are scratch, max_splits >=
 * ceil((pos0 + 1) / kv_split) for every run. */
void kern_cpu_attn_decode_bf16(const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                               const struct kern_attn_runs *runs, const struct kern_attn_shape *s,
                               int32_t kv_split, int32_t max_splits, float *part_o, float *part_lse,
                               uint16_t *out);

/* SwiGLU: gate_up [n_rows, 2 n_ff] fp32 (gate columns, then up, as one GEMM against the
 * concatenated weights writes them); out [n_rows, n_ff] bf16 = bf16(silu(gate) * up). */
void kern_cpu_silu_mul_bf16(const float *gate_up, int32_t n_rows, int32_t n_ff, uint16_t *out);

/* Logits only for requested rows: out[o, :] = x[rows[o], :], o < n_out; x [*, dim] fp32. */
void kern_cpu_rows_gather_f32(const float *x, int32_t dim, const int32_t *rows, int32_t n_out,
                              float *out);

/* Philox4x32-10 (Salmon et al. 2011): the 128-bit counter `ctr` under the 64-bit key. */
void kern_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* The uniform in [0, 1) with 53 bits for (seed, step): Philox of counter (step, 0) under the key
 * seed, its first two words combined. */
double kern_philox_uniform(uint64_t seed, uint64_t step);

/* Per-row sampling parameters (plain data; device arrays on the GPU). */
struct kern_sample_params {
    const float *temperature; /* [n_rows] < 1e-4: greedy */
    const int32_t *top_k;     /* [n_rows] 0 = off */
    const float *top_p;       /* [n_rows] 1 = off */
    const uint64_t *seed;     /* [n_rows] per request */
    const uint64_t *step;     /* [n_rows] generated tokens so far */
};

/* Number of partial sums the draw walks over (one per CUDA thread of the sampling block). */
#define KERN_SAMPLE_CHUNKS 1024

/* Samples one token per row of logits [n_rows, n_vocab] into tokens [n_rows]:
 *   greedy: the first maximum;
 *   else s = logit / temperature; top-k keeps s >= the k-th largest s (ties survive); top-p with
 *   p = exp(s - max s) drops the lowest values, a whole group of equal values at a time, while
 *   the dropped mass stays <= (1 - top_p) * (kept mass before top-p), always keeping the
 *   maximum; the draw u = kern_philox_uniform(seed, step) * (kept mass) walks the kept tokens
 *   in id order (sums in double over KERN_SAMPLE_CHUNKS contiguous id ranges, then within the
 *   chosen range) and picks the first whose cumulative mass exceeds u.
 * The same parameters and logits give the same token on any batch. */
void kern_cpu_sample(const float *logits, int32_t n_rows, int32_t n_vocab,
                     const struct kern_sample_params *p, int32_t *tokens);

/* A token with its log-probability (the layout of struct sched_logprob). */
struct kern_logprob {
    int32_t token;
    float logprob;
};

/* Most alternatives kern_*_logprobs return per row. */
#define KERN_LOGPROBS_MAX 32

/* Log-probabilities of rows of logits [n_rows, n_vocab] for logprobs: lse = max + (float)
 * log(sum exp(x - max)) with the sum in double; out [n_rows, 1 + n_top]: first chosen[r] with
 * x - lse, then the n_top largest logits (ties: the lower id first) with x - lse, best first;
 * places beyond the vocabulary hold token -1 and -inf. 0 <= n_top <= KERN_LOGPROBS_MAX. */
void kern_cpu_logprobs(const float *logits, int32_t n_rows, int32_t n_vocab, const int32_t *chosen,
                       int32_t n_top, struct kern_logprob *out);

/* Random weights for benchmarks (a model made on the device): element i of dst [n] is
 * offset + scale * (2 w / 2^32 - 1), w the first word of Philox of counter (i, 0) under the key
 * seed; rounded to bf16, or kept in f32. */
void kern_cpu_fill_random_bf16(uint16_t *dst, size_t n, uint64_t seed, float offset, float scale);
void kern_cpu_fill_random_f32(float *dst, size_t n, uint64_t seed, float offset, float scale);

#ifdef __cplusplus
}
#endif

#endif
