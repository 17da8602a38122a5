/* paged_attention.c - causal attention over the paged bf16 KV cache for prefill (FlashAttention's
 * online softmax, one KV block at a time) and for decode (Flash-Decoding: splits over the KV
 * length merged by log-sum-exp); twins of kernels/cuda/paged_attention.cu (see twin.h). The
 * per-(query, head) loops are the same algorithm the CUDA kernels run with one warp per query;
 * the unit tests hold them to a plain softmax over all keys. */
#include "twin.h"

#include <math.h>
#include <stddef.h>

#define ATTN_MAX_HEAD_DIM 256

/* Running state of one (query, head): max score, sum of exp, unnormalized output. */
struct attn_state {
    float m, l;
    float acc[ATTN_MAX_HEAD_DIM];
};

static void attn_state_init(struct attn_state *st, int32_t hd)
{
    st->m = -INFINITY;
    st->l = 0.0f;
    for (int32_t d = 0; d < hd; d++) {
        st->acc[d] = 0.0f;
    }
}

/* Folds keys [j_lo, j_hi) of one sequence into st, one KV block at a time. */
static void attn_visit(const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                       const int32_t *blocks, int32_t j_lo, int32_t j_hi, int32_t kv_head,
                       const struct kern_attn_shape *s, struct attn_state *st)
{
    int32_t hd = s->head_dim, bs = s->block_size;
    size_t kv_row = (size_t)s->n_kv_heads * (size_t)hd;
    float scale = 1.0f / sqrtf((float)hd);
    float sc[1024];
    for (int32_t j0 = j_lo; j0 < j_hi;) {
        int32_t j1 = (j0 / bs + 1) * bs; /* end of j0's block */
        j1 = j1 < j_hi ? j1 : j_hi;
        if (j1 - j0 > (int32_t)(sizeof(sc) / sizeof(sc[0]))) {
            j1 = j0 + (int32_t)(sizeof(sc) / sizeof(sc[0]));
        }
        float m_blk = -INFINITY;
        for (int32_t j = j0; j < j1; j++) {
            size_t slot = (size_t)blocks[j / bs] * (size_t)bs + (size_t)(j % bs);
            const uint16_t *k = k_cache + slot * kv_row + (size_t)kv_head * (size_t)hd;
            float dot = 0.0f;
            for (int32_t d = 0; d < hd; d++) {
                dot += q[d] * kern_bf16_to_f32(k[d]);
            }
            sc[j - j0] = dot * scale;
            m_blk = sc[j - j0] > m_blk ? sc[j - j0] : m_blk;
        }
        float m_new = st->m > m_blk ? st->m : m_blk;
        float corr = expf(st->m - m_new); /* 0 on the first block: m = -inf */
        st->l *= corr;
        for (int32_t d = 0; d < hd; d++) {
            st->acc[d] *= corr;
        }
        for (int32_t j = j0; j < j1; j++) {
            size_t slot = (size_t)blocks[j / bs] * (size_t)bs + (size_t)(j % bs);
            const uint16_t *v = v_cache + slot * kv_row + (size_t)kv_head * (size_t)hd;
            float p = expf(sc[j - j0] - m_new);
            st->l += p;
            for (int32_t d = 0; d < hd; d++) {
                st->acc[d] += p * kern_bf16_to_f32(v[d]);
            }
        }
        st->m = m_new;
        j0 = j1;
    }
}

void kern_cpu_attn_prefill_bf16(const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                                const struct kern_attn_runs *runs, const struct kern_attn_shape *s,
                                uint16_t *out)
{
    int32_t hd = s->head_dim, group = s->n_heads / s->n_kv_heads;
    size_t out_row = (size_t)s->n_heads * (size_t)hd;
    struct attn_state st;
    for (int32_t r = 0; r < runs->n_runs; r++) {
        const int32_t *blocks = runs->block_ids + runs->block_indptr[r];
        for (int32_t i = 0; i < runs->q_len[r]; i++) {
            size_t row = (size_t)(runs->q_start[r] + i);
            for (int32_t h = 0; h < s->n_heads; h++) {
                attn_state_init(&st, hd);
                attn_visit(q + row * (size_t)s->q_stride + (size_t)h * (size_t)hd, k_cache, v_cache,
                           blocks, 0, runs->pos0[r] + i + 1, h / group, s, &st);
                for (int32_t d = 0; d < hd; d++) {
                    out[row * out_row + (size_t)h * (size_t)hd + (size_t)d] =
                        kern_bf16_from_f32(st.acc[d] / st.l);
                }
            }
        }
    }
}

void kern_cpu_attn_decode_bf16(const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                               const struct kern_attn_runs *runs, const struct kern_attn_shape *s,
                               int32_t kv_split, int32_t max_splits, float *part_o, float *part_lse,
                               uint16_t *out)
{
    int32_t hd = s->head_dim, group = s->n_heads / s->n_kv_heads;
    size_t out_row = (size_t)s->n_heads * (size_t)hd;
    struct attn_state st;
    for (int32_t r = 0; r < runs->n_runs; r++) {
        if (runs->q_len[r] == 0) {
            continue;
        }
        const int32_t *blocks = runs->block_ids + runs->block_indptr[r];
        int32_t n_ctx = runs->pos0[r] + 1;
        int32_t n_splits = (n_ctx + kv_split - 1) / kv_split;
        size_t row = (size_t)runs->q_start[r];
        for (int32_t h = 0; h < s->n_heads; h++) {
            size_t base = ((size_t)r * (size_t)s->n_heads + (size_t)h) * (size_t)max_splits;
            /* pass 1: each split on its own, as the CUDA grid's z dimension does */
            for (int32_t sp = 0; sp < n_splits; sp++) {
                int32_t lo = sp * kv_split, hi = lo + kv_split < n_ctx ? lo + kv_split : n_ctx;
                attn_state_init(&st, hd);
                attn_visit(q + row * (size_t)s->q_stride + (size_t)h * (size_t)hd, k_cache, v_cache,
                           blocks, lo, hi, h / group, s, &st);
                for (int32_t d = 0; d < hd; d++) {
                    part_o[(base + (size_t)sp) * (size_t)hd + (size_t)d] = st.acc[d] / st.l;
                }
                part_lse[base + (size_t)sp] = st.m + logf(st.l);
            }
            /* pass 2: the log-sum-exp merge */
            float m = -INFINITY;
            for (int32_t sp = 0; sp < n_splits; sp++) {
                m = part_lse[base + (size_t)sp] > m ? part_lse[base + (size_t)sp] : m;
            }
            float wsum = 0.0f;
            for (int32_t sp = 0; sp < n_splits; sp++) {
                wsum += expf(part_lse[base + (size_t)sp] - m);
            }
            for (int32_t d = 0; d < hd; d++) {
                float o = 0.0f;
                for (int32_t sp = 0; sp < n_splits; sp++) {
                    o += expf(part_lse[base + (size_t)sp] - m) *
                         part_o[(base + (size_t)sp) * (size_t)hd + (size_t)d];
                }
                out[row * out_row + (size_t)h * (size_t)hd + (size_t)d] =
                    kern_bf16_from_f32(o / wsum);
            }
        }
    }
}
