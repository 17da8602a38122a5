/* tp.c - tensor parallelism on the CPU: each rank's slice of the weights in f32, its own KV heads
 * in its own paged storage, and the forward pass with two all-reduces per layer (see tp.h).
 *
 * This path exists to prove the split, so it favours being callable from any thread over speed:
 * matmuls are the row-at-a-time kern_cpu_gemv_f32 (pure, no BLAS threading underneath), and the
 * other per-row work reuses kernels/cpu (RMSNorm, RoPE, SwiGLU). A rank's KV storage is
 * [n_kv_blocks * block_size, n_kv_heads_local * head_dim] per layer, independent of the CPU
 * backend's own layout. */
#include "engine/tp.h"

#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/llama2c.h"
#include "kernels/cpu/convert.h"
#include "kernels/cpu/ops.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tp_shard_plan(const struct model_config *m, int rank, int world, struct tp_shard *out,
                  char *errstr, size_t errstr_len)
{
    if (world < 1 || rank < 0 || rank >= world) {
        errstr_set(errstr, errstr_len, "tp: rank %d of a world of %d", rank, world);
        return -EINVAL;
    }
    if (m->n_heads % world != 0 || m->n_kv_heads <= 0 || m->n_heads % m->n_kv_heads != 0) {
        errstr_set(errstr, errstr_len,
                   "tp: %d attention heads (%d KV heads) do not divide over %d ranks",
                   (int)m->n_heads, (int)m->n_kv_heads, world);
        return -EINVAL;
    }
    if (m->n_ff < world) {
        errstr_set(errstr, errstr_len, "tp: %d MLP columns for %d ranks", (int)m->n_ff, world);
        return -EINVAL;
    }
    int32_t hq = m->n_heads / world, group = m->n_heads / m->n_kv_heads;
    out->rank = rank;
    out->world = world;
    out->head0 = rank * hq;
    out->n_heads = hq;
    out->kv_head0 = out->head0 / group;
    out->n_kv_heads = (out->head0 + hq - 1) / group - out->kv_head0 + 1;
    int64_t lo = (int64_t)m->n_ff * rank / world, hi = (int64_t)m->n_ff * (rank + 1) / world;
    out->ff0 = (int32_t)lo;
    out->n_ff = (int32_t)(hi - lo);
    return 0;
}

int tp_tensor_slice_f32(const struct model_tensor *t, int64_t row0, int64_t n_rows, int64_t col0,
                        int64_t n_cols, float *dst)
{
    int64_t rows = t->n_dims == 2 ? t->shape[0] : 1;
    int64_t cols = t->n_dims == 2 ? t->shape[1] : t->shape[0];
    if (t->n_dims < 1 || t->n_dims > 2 || row0 < 0 || col0 < 0 || n_rows < 0 || n_cols < 0 ||
        row0 + n_rows > rows || col0 + n_cols > cols) {
        return -EINVAL;
    }
    size_t esize = model_dtype_size(t->dtype);
    uint16_t *bits =
        t->dtype == MODEL_DTYPE_F32 ? NULL : xmalloc((size_t)(n_cols ? n_cols : 1) * 2);
    for (int64_t r = 0; r < n_rows; r++) {
        const uint8_t *src =
            (const uint8_t *)t->data + ((size_t)(row0 + r) * (size_t)cols + (size_t)col0) * esize;
        float *d = dst + (size_t)r * (size_t)n_cols;
        if (t->dtype == MODEL_DTYPE_F32) {
            memcpy(d, src, (size_t)n_cols * sizeof(float)); /* the map may be unaligned */
        } else {
            memcpy(bits, src, (size_t)n_cols * 2);
            if (t->dtype == MODEL_DTYPE_F16) {
                kern_cpu_f16_to_f32(bits, d, (size_t)n_cols);
            } else {
                kern_cpu_bf16_to_f32(bits, d, (size_t)n_cols);
            }
        }
    }
    free(bits);
    return 0;
}

int tp_batch_check(const struct model_config *m, const struct engine_config *c,
                   const struct engine_batch *b, char *errstr, size_t errstr_len)
{
    if (b->n_tokens <= 0 || b->n_tokens > c->max_batch_tokens || b->n_seqs <= 0 ||
        b->n_outputs < 0 || b->n_outputs > c->max_outputs || b->n_outputs > b->n_tokens) {
        errstr_set(errstr, errstr_len,
                   "batch of %" PRId32 " tokens, %" PRId32 " sequences, %" PRId32
                   " outputs outside the limits",
                   b->n_tokens, b->n_seqs, b->n_outputs);
        return -EINVAL;
    }
    for (int32_t i = 0; i < b->n_tokens; i++) {
        int32_t s = b->seq[i], p = b->pos[i];
        if (b->tokens[i] < 0 || b->tokens[i] >= m->n_vocab || s < 0 || s >= b->n_seqs || p < 0 ||
            p >= c->max_ctx || p / c->kv_block_size >= b->n_blocks[s]) {
            errstr_set(errstr, errstr_len,
                       "token %" PRId32 ": id, sequence or position out of range", i);
            return -EINVAL;
        }
        const int32_t *blocks = b->block_tables[s];
        for (int32_t k = 0; k <= p / c->kv_block_size; k++) {
            if (blocks[k] < 0 || blocks[k] >= c->n_kv_blocks) {
                errstr_set(errstr, errstr_len,
                           "sequence %" PRId32 ": block %" PRId32 " outside the pool", s,
                           blocks[k]);
                return -EINVAL;
            }
        }
    }
    for (int32_t o = 0; o < b->n_outputs; o++) {
        if (b->output_rows[o] < 0 || b->output_rows[o] >= b->n_tokens) {
            errstr_set(errstr, errstr_len, "output %" PRId32 ": row out of range", o);
            return -EINVAL;
        }
    }
    return 0;
}

struct tp_layer {
    float *attn_norm; /* [dim] */
    float *wq;        /* [n_heads_l * head_dim, dim] rows of this rank's query heads */
    float *wk;        /* [n_kv_l * head_dim, dim] */
    float *wv;        /* [n_kv_l * head_dim, dim] */
    float *wo;        /* [dim, n_heads_l * head_dim] the matching input columns */
    float *ffn_norm;  /* [dim] */
    float *w_gate;    /* [n_ff_l, dim] */
    float *w_up;      /* [n_ff_l, dim] */
    float *w_down;    /* [dim, n_ff_l] */
    float *k_cache;   /* [n_kv_blocks * block_size, n_kv_l * head_dim] */
    float *v_cache;   /* likewise */
};

struct tp_rank {
    struct model_config mc;
    struct engine_config cfg;
    struct tp_shard sh;
    struct comm *comm;     /* borrowed */
    int32_t q_dim, kv_dim; /* local: n_heads_l * head_dim, n_kv_l * head_dim */
    float *embed;          /* [n_vocab, dim] */
    float *out_norm;       /* [dim] */
    float *lm_head;        /* [n_vocab, dim]; == embed when tied */
    struct tp_layer *layers;
    /* scratch for cfg.max_batch_tokens (T) and max_outputs */
    float *x;      /* [T, dim] residual stream */
    float *xb;     /* [T, dim] normed input */
    float *q;      /* [T, q_dim] */
    float *k;      /* [T, kv_dim] */
    float *v;      /* [T, kv_dim] */
    float *att;    /* [T, q_dim] */
    float *delta;  /* [T, dim] this rank's partial o_proj / down_proj output, then the sum */
    float *gate;   /* [T, n_ff_l] */
    float *up;     /* [T, n_ff_l] */
    float *xo;     /* [n_out, dim] */
    float *scores; /* [max_ctx] */
};

void tp_rank_destroy(struct tp_rank *r)
{
    if (!r) {
        return;
    }
    if (r->layers) {
        for (int32_t l = 0; l < r->mc.n_layers; l++) {
            struct tp_layer *L = &r->layers[l];
            float *all[] = { L->attn_norm, L->wq,   L->wk,     L->wv,      L->wo,     L->ffn_norm,
                             L->w_gate,    L->w_up, L->w_down, L->k_cache, L->v_cache };
            for (size_t i = 0; i < ARRAY_LEN(all); i++) {
                free(all[i]);
            }
        }
    }
    if (r->lm_head != r->embed) {
        free(r->lm_head);
    }
    float *bufs[] = { r->embed, r->out_norm, r->x,    r->xb, r->q,  r->k,     r->v,
                      r->att,   r->delta,    r->gate, r->up, r->xo, r->scores };
    for (size_t i = 0; i < ARRAY_LEN(bufs); i++) {
        free(bufs[i]);
    }
    free(r->layers);
    free(r);
}

/* The weight source while loading: one of the two checkpoint kinds. */
struct tp_src {
    struct model *hf;
    struct llama2c_file *l2;
};

static const struct model_tensor *tp_find(const struct tp_src *s, const char *name)
{
    return s->hf ? model_weights_find(s->hf->weights, name) : llama2c_find(s->l2, name);
}

/* Loads the window of tensor `name` (expected full shape [rows, cols], cols 0 for 1-D) into a
 * fresh f32 buffer; NULL with errstr when absent, misshapen or out of memory. */
static float *tp_load(const struct tp_src *s, const char *name, int64_t rows, int64_t cols,
                      int64_t row0, int64_t n_rows, int64_t col0, int64_t n_cols, char *errstr,
                      size_t errstr_len)
{
    const struct model_tensor *t = tp_find(s, name);
    if (!t) {
        errstr_set(errstr, errstr_len, "missing tensor %s", name);
        return NULL;
    }
    bool shape_ok = cols ? t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols
                         : t->n_dims == 1 && t->shape[0] == rows;
    if (!shape_ok) {
        errstr_set(errstr, errstr_len, "%s: tensor %s has the wrong shape for the config", t->file,
                   name);
        return NULL;
    }
    float *dst = malloc((size_t)(n_rows * n_cols) * sizeof(float) + 1);
    if (!dst) {
        errstr_set(errstr, errstr_len, "out of memory loading tensor %s", name);
        return NULL;
    }
    if (tp_tensor_slice_f32(t, row0, n_rows, col0, n_cols, dst) != 0) {
        free(dst);
        errstr_set(errstr, errstr_len, "tensor %s: slice outside the tensor", name);
        return NULL;
    }
    return dst;
}

static int tp_rank_load(struct tp_rank *r, const struct tp_src *s, char *errstr, size_t errstr_len)
{
    const struct model_config *m = &r->mc;
    const struct tp_shard *sh = &r->sh;
    int64_t hd = m->head_dim, dim = m->dim;
    int64_t q_full = (int64_t)m->n_heads * hd, kv_full = (int64_t)m->n_kv_heads * hd;
    char name[128];
#define TP_LOAD(dst, nm, rows, cols, r0, nr, c0, nc)                                          \
    do {                                                                                      \
        (dst) = tp_load(s, (nm), (rows), (cols), (r0), (nr), (c0), (nc), errstr, errstr_len); \
        if (!(dst)) {                                                                         \
            return -EINVAL;                                                                   \
        }                                                                                     \
    } while (0)
    TP_LOAD(r->embed, "model.embed_tokens.weight", m->n_vocab, dim, 0, m->n_vocab, 0, dim);
    TP_LOAD(r->out_norm, "model.norm.weight", dim, 0, 0, 1, 0, dim);
    if (m->tie_embeddings && !tp_find(s, "lm_head.weight")) {
        r->lm_head = r->embed;
    } else {
        TP_LOAD(r->lm_head, "lm_head.weight", m->n_vocab, dim, 0, m->n_vocab, 0, dim);
    }
    r->layers = xcalloc((size_t)m->n_layers, sizeof(*r->layers));
    for (int32_t l = 0; l < m->n_layers; l++) {
        struct tp_layer *L = &r->layers[l];
#define TP_LAYER(dst, suffix, rows, cols, r0, nr, c0, nc)                     \
    do {                                                                      \
        snprintf(name, sizeof(name), "model.layers.%d.%s", (int)l, (suffix)); \
        TP_LOAD(dst, name, rows, cols, r0, nr, c0, nc);                       \
    } while (0)
        TP_LAYER(L->attn_norm, "input_layernorm.weight", dim, 0, 0, 1, 0, dim);
        TP_LAYER(L->wq, "self_attn.q_proj.weight", q_full, dim, sh->head0 * hd, r->q_dim, 0, dim);
        TP_LAYER(L->wk, "self_attn.k_proj.weight", kv_full, dim, sh->kv_head0 * hd, r->kv_dim, 0,
                 dim);
        TP_LAYER(L->wv, "self_attn.v_proj.weight", kv_full, dim, sh->kv_head0 * hd, r->kv_dim, 0,
                 dim);
        TP_LAYER(L->wo, "self_attn.o_proj.weight", dim, q_full, 0, dim, sh->head0 * hd, r->q_dim);
        TP_LAYER(L->ffn_norm, "post_attention_layernorm.weight", dim, 0, 0, 1, 0, dim);
        TP_LAYER(L->w_gate, "mlp.gate_proj.weight", m->n_ff, dim, sh->ff0, sh->n_ff, 0, dim);
        TP_LAYER(L->w_up, "mlp.up_proj.weight", m->n_ff, dim, sh->ff0, sh->n_ff, 0, dim);
        TP_LAYER(L->w_down, "mlp.down_proj.weight", dim, m->n_ff, 0, dim, sh->ff0, sh->n_ff);
        size_t cache =
            (size_t)r->cfg.n_kv_blocks * (size_t)r->cfg.kv_block_size * (size_t)r->kv_dim;
        L->k_cache = calloc(cache ? cache : 1, sizeof(float));
        L->v_cache = calloc(cache ? cache : 1, sizeof(float));
        if (!L->k_cache || !L->v_cache) {
            errstr_set(errstr, errstr_len, "out of memory for the KV storage of rank %d", sh->rank);
            return -ENOMEM;
        }
    }
#undef TP_LAYER
#undef TP_LOAD
    return 0;
}

static float *tp_scratch(size_t n, bool *ok)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    *ok = *ok && p;
    return p;
}

int tp_rank_open(const char *path, const char *weights_file, const struct engine_config *cfg,
                 struct comm *comm, struct tp_rank **out, char *errstr, size_t errstr_len)
{
    struct tp_rank *r = xcalloc(1, sizeof(*r));
    struct tp_src s = { NULL, NULL };
    int err;
    if (path_is_dir(path)) {
        err = model_open(path, weights_file, &s.hf, errstr, errstr_len);
        if (!err) {
            r->mc = s.hf->cfg;
        }
    } else {
        err = llama2c_open(path, &s.l2, errstr, errstr_len);
        if (!err) {
            r->mc = *llama2c_config(s.l2);
        }
    }
    if (err) {
        goto fail;
    }
    /* the defaults engine_open resolves */
    r->cfg = *cfg;
    if (r->cfg.max_ctx <= 0) {
        r->cfg.max_ctx = r->mc.max_pos;
    }
    if (r->cfg.kv_block_size <= 0) {
        r->cfg.kv_block_size = 16;
    }
    if (r->cfg.n_kv_blocks <= 0) {
        r->cfg.n_kv_blocks =
            4 * ((r->cfg.max_ctx + r->cfg.kv_block_size - 1) / r->cfg.kv_block_size);
    }
    if (r->cfg.max_batch_tokens <= 0 || r->cfg.max_outputs <= 0) {
        errstr_set(errstr, errstr_len, "tp: max_batch_tokens and max_outputs must be > 0");
        err = -EINVAL;
        goto fail;
    }
    r->comm = comm;
    err = tp_shard_plan(&r->mc, comm_rank(comm), comm_size(comm), &r->sh, errstr, errstr_len);
    if (err) {
        goto fail;
    }
    r->q_dim = r->sh.n_heads * r->mc.head_dim;
    r->kv_dim = r->sh.n_kv_heads * r->mc.head_dim;
    err = tp_rank_load(r, &s, errstr, errstr_len);
    if (err) {
        goto fail;
    }
    size_t T = (size_t)r->cfg.max_batch_tokens, dim = (size_t)r->mc.dim;
    bool ok = true;
    r->x = tp_scratch(T * dim, &ok);
    r->xb = tp_scratch(T * dim, &ok);
    r->q = tp_scratch(T * (size_t)r->q_dim, &ok);
    r->k = tp_scratch(T * (size_t)r->kv_dim, &ok);
    r->v = tp_scratch(T * (size_t)r->kv_dim, &ok);
    r->att = tp_scratch(T * (size_t)r->q_dim, &ok);
    r->delta = tp_scratch(T * dim, &ok);
    r->gate = tp_scratch(T * (size_t)r->sh.n_ff, &ok);
    r->up = tp_scratch(T * (size_t)r->sh.n_ff, &ok);
    r->xo = tp_scratch((size_t)r->cfg.max_outputs * dim, &ok);
    r->scores = tp_scratch((size_t)r->cfg.max_ctx, &ok);
    if (!ok) {
        errstr_set(errstr, errstr_len, "tp: out of memory for scratch");
        err = -ENOMEM;
        goto fail;
    }
    model_destroy(s.hf);
    llama2c_close(s.l2);
    *out = r;
    return 0;
fail:
    model_destroy(s.hf);
    llama2c_close(s.l2);
    tp_rank_destroy(r);
    return err;
}

const struct model_config *tp_rank_model_config(const struct tp_rank *r)
{
    return &r->mc;
}

const struct engine_config *tp_rank_config(const struct tp_rank *r)
{
    return &r->cfg;
}

const struct tp_shard *tp_rank_shard(const struct tp_rank *r)
{
    return &r->sh;
}

/* y[t, 0..n) (+)= x[t, 0..k) . w[n, k]^T for t < n_rows. */
static void tp_matmul(const float *x, const float *w, float *y, int32_t n_rows, int32_t k,
                      int32_t n, int accumulate)
{
    for (int32_t t = 0; t < n_rows; t++) {
        kern_cpu_gemv_f32(w, x + (size_t)t * (size_t)k, y + (size_t)t * (size_t)n, n, k,
                          accumulate);
    }
}

/* Causal attention of one query head over positions 0 .. n_ctx-1 of one local KV head. */
static void tp_attend(const struct tp_rank *r, const struct tp_layer *L, const float *q,
                      int32_t kv_local, const int32_t *blocks, int32_t n_ctx, float *out)
{
    int32_t hd = r->mc.head_dim, bs = r->cfg.kv_block_size;
    float scale = 1.0f / sqrtf((float)hd), max = -INFINITY;
    float *sc = r->scores;
    for (int32_t j = 0; j < n_ctx; j++) {
        size_t row = (size_t)blocks[j / bs] * (size_t)bs + (size_t)(j % bs);
        const float *k = L->k_cache + row * (size_t)r->kv_dim + (size_t)kv_local * (size_t)hd;
        float dot = 0.0f;
        for (int32_t d = 0; d < hd; d++) {
            dot += q[d] * k[d];
        }
        sc[j] = dot * scale;
        max = sc[j] > max ? sc[j] : max;
    }
    float sum = 0.0f;
    for (int32_t j = 0; j < n_ctx; j++) {
        sc[j] = expf(sc[j] - max);
        sum += sc[j];
    }
    memset(out, 0, (size_t)hd * sizeof(float));
    for (int32_t j = 0; j < n_ctx; j++) {
        size_t row = (size_t)blocks[j / bs] * (size_t)bs + (size_t)(j % bs);
        const float *v = L->v_cache + row * (size_t)r->kv_dim + (size_t)kv_local * (size_t)hd;
        float p = sc[j] / sum;
        for (int32_t d = 0; d < hd; d++) {
            out[d] += p * v[d];
        }
    }
}

int tp_rank_forward(struct tp_rank *r, const struct engine_batch *b, float *logits)
{
    const struct model_config *m = &r->mc;
    const struct tp_shard *sh = &r->sh;
    int32_t T = b->n_tokens, dim = m->dim, hd = m->head_dim, bs = r->cfg.kv_block_size;
    int32_t group = m->n_heads / m->n_kv_heads;
    int half_split = m->rope_layout == MODEL_ROPE_HALF_SPLIT;
    for (int32_t i = 0; i < T; i++) {
        memcpy(r->x + (size_t)i * dim, r->embed + (size_t)b->tokens[i] * dim,
               (size_t)dim * sizeof(float));
    }
    for (int32_t l = 0; l < m->n_layers; l++) {
        struct tp_layer *L = &r->layers[l];
        for (int32_t i = 0; i < T; i++) {
            kern_cpu_rmsnorm_f32(r->x + (size_t)i * dim, L->attn_norm, r->xb + (size_t)i * dim, dim,
                                 m->rms_eps);
        }
        tp_matmul(r->xb, L->wq, r->q, T, dim, r->q_dim, 0);
        tp_matmul(r->xb, L->wk, r->k, T, dim, r->kv_dim, 0);
        tp_matmul(r->xb, L->wv, r->v, T, dim, r->kv_dim, 0);
        for (int32_t i = 0; i < T; i++) {
            float *k = r->k + (size_t)i * r->kv_dim;
            kern_cpu_rope_f32(r->q + (size_t)i * r->q_dim, sh->n_heads, hd, b->pos[i],
                              m->rope_theta, half_split);
            kern_cpu_rope_f32(k, sh->n_kv_heads, hd, b->pos[i], m->rope_theta, half_split);
            int32_t p = b->pos[i];
            size_t row = (size_t)b->block_tables[b->seq[i]][p / bs] * (size_t)bs + (size_t)(p % bs);
            memcpy(L->k_cache + row * (size_t)r->kv_dim, k, (size_t)r->kv_dim * sizeof(float));
            memcpy(L->v_cache + row * (size_t)r->kv_dim, r->v + (size_t)i * r->kv_dim,
                   (size_t)r->kv_dim * sizeof(float));
        }
        for (int32_t i = 0; i < T; i++) {
            for (int32_t h = 0; h < sh->n_heads; h++) {
                int32_t kv_local = (sh->head0 + h) / group - sh->kv_head0;
                size_t off = (size_t)i * r->q_dim + (size_t)h * hd;
                tp_attend(r, L, r->q + off, kv_local, b->block_tables[b->seq[i]], b->pos[i] + 1,
                          r->att + off);
            }
        }
        /* o_proj over this rank's heads: a partial sum of the full output, completed by the
         * all-reduce, then the residual add */
        tp_matmul(r->att, L->wo, r->delta, T, r->q_dim, dim, 0);
        int err = comm_allreduce_sum_f32(r->comm, r->delta, (size_t)T * (size_t)dim);
        if (err) {
            return err;
        }
        for (size_t i = 0; i < (size_t)T * (size_t)dim; i++) {
            r->x[i] += r->delta[i];
        }
        for (int32_t i = 0; i < T; i++) {
            kern_cpu_rmsnorm_f32(r->x + (size_t)i * dim, L->ffn_norm, r->xb + (size_t)i * dim, dim,
                                 m->rms_eps);
        }
        tp_matmul(r->xb, L->w_gate, r->gate, T, dim, sh->n_ff, 0);
        tp_matmul(r->xb, L->w_up, r->up, T, dim, sh->n_ff, 0);
        kern_cpu_swiglu_f32(r->gate, r->up, r->gate, (size_t)T * (size_t)sh->n_ff);
        tp_matmul(r->gate, L->w_down, r->delta, T, sh->n_ff, dim, 0);
        err = comm_allreduce_sum_f32(r->comm, r->delta, (size_t)T * (size_t)dim);
        if (err) {
            return err;
        }
        for (size_t i = 0; i < (size_t)T * (size_t)dim; i++) {
            r->x[i] += r->delta[i];
        }
    }
    if (!logits) {
        return 0;
    }
    for (int32_t o = 0; o < b->n_outputs; o++) {
        kern_cpu_rmsnorm_f32(r->x + (size_t)b->output_rows[o] * dim, r->out_norm,
                             r->xo + (size_t)o * dim, dim, m->rms_eps);
    }
    tp_matmul(r->xo, r->lm_head, logits, b->n_outputs, dim, m->n_vocab, 0);
    return 0;
}

/* ---- the CPU group: one thread per rank but rank 0, started once ----
 *
 * The threads meet the caller on two barriers per forward: `start` (the batch is published, or
 * `stopping` is set) and `done` (every rank has returned). No lock is needed: the barriers order
 * every hand-over. */

struct tp_group {
    int world;
    struct comm_cpu_group *cg;
    struct comm **comms;    /* [world] */
    struct tp_rank **ranks; /* [world] */
    pthread_t *threads;     /* [world], threads[0] unused */
    int n_started;          /* threads running (1 .. world-1) */
    pthread_barrier_t start, done;
    bool barriers_ready;
    const struct engine_batch *batch; /* published before `start` */
    int *status;                      /* [world] each rank's return */
    bool stopping;
};

struct tp_worker_arg {
    struct tp_group *g;
    int rank;
};

static void *tp_worker(void *arg_)
{
    struct tp_worker_arg *arg = arg_;
    struct tp_group *g = arg->g;
    int rank = arg->rank;
    free(arg);
    for (;;) {
        pthread_barrier_wait(&g->start);
        if (g->stopping) {
            return NULL;
        }
        g->status[rank] = tp_rank_forward(g->ranks[rank], g->batch, NULL);
        pthread_barrier_wait(&g->done);
    }
}

void tp_group_destroy(struct tp_group *g)
{
    if (!g) {
        return;
    }
    if (g->barriers_ready) {
        if (g->n_started == g->world - 1) {
            g->stopping = true;
            pthread_barrier_wait(&g->start);
        } else {
            /* a thread failed to start: the barriers can never fill, so stop the rest */
            for (int i = 1; i <= g->n_started; i++) {
                pthread_cancel(g->threads[i]);
            }
        }
        for (int i = 1; i <= g->n_started; i++) {
            pthread_join(g->threads[i], NULL);
        }
        pthread_barrier_destroy(&g->start);
        pthread_barrier_destroy(&g->done);
    }
    for (int i = 0; i < g->world; i++) {
        tp_rank_destroy(g->ranks[i]);
        comm_destroy(g->comms[i]);
    }
    comm_cpu_group_destroy(g->cg);
    free(g->ranks);
    free(g->comms);
    free(g->threads);
    free(g->status);
    free(g);
}

int tp_group_open(const char *path, const char *weights_file, const struct engine_config *cfg,
                  int world, struct tp_group **out, char *errstr, size_t errstr_len)
{
    if (world < 1 || world > COMM_CPU_MAX_RANKS) {
        errstr_set(errstr, errstr_len, "tp: world size %d outside 1..%d", world,
                   COMM_CPU_MAX_RANKS);
        return -EINVAL;
    }
    struct tp_group *g = xcalloc(1, sizeof(*g));
    g->world = world;
    g->comms = xcalloc((size_t)world, sizeof(*g->comms));
    g->ranks = xcalloc((size_t)world, sizeof(*g->ranks));
    g->threads = xcalloc((size_t)world, sizeof(*g->threads));
    g->status = xcalloc((size_t)world, sizeof(*g->status));
    int err = comm_cpu_group_create(world, &g->cg);
    for (int i = 0; i < world && !err; i++) {
        err = comm_cpu_create(g->cg, i, &g->comms[i]);
        if (!err) {
            err = tp_rank_open(path, weights_file, cfg, g->comms[i], &g->ranks[i], errstr,
                               errstr_len);
        }
    }
    if (err) {
        goto fail;
    }
    if (pthread_barrier_init(&g->start, NULL, (unsigned)world) != 0) {
        err = -ENOMEM;
        goto fail_msg;
    }
    if (pthread_barrier_init(&g->done, NULL, (unsigned)world) != 0) {
        pthread_barrier_destroy(&g->start);
        err = -ENOMEM;
        goto fail_msg;
    }
    g->barriers_ready = true;
    for (int i = 1; i < world; i++) {
        struct tp_worker_arg *arg = xmalloc(sizeof(*arg));
        *arg = (struct tp_worker_arg){ g, i };
        if (pthread_create(&g->threads[i], NULL, tp_worker, arg) != 0) {
            free(arg);
            err = -EAGAIN;
            goto fail_msg;
        }
        g->n_started = i;
    }
    *out = g;
    return 0;
fail_msg:
    errstr_set(errstr, errstr_len, "tp: cannot start the threads of %d ranks", world);
fail:
    tp_group_destroy(g);
    return err;
}

const struct tp_rank *tp_group_rank(const struct tp_group *g, int i)
{
    return g->ranks[i];
}

int tp_group_forward(struct tp_group *g, const struct engine_batch *b, float *logits, char *errstr,
                     size_t errstr_len)
{
    int err = tp_batch_check(&g->ranks[0]->mc, &g->ranks[0]->cfg, b, errstr, errstr_len);
    if (err) {
        return err;
    }
    g->batch = b;
    if (g->world > 1) {
        pthread_barrier_wait(&g->start);
    }
    g->status[0] = tp_rank_forward(g->ranks[0], b, logits);
    if (g->world > 1) {
        pthread_barrier_wait(&g->done);
    }
    for (int i = 0; i < g->world; i++) {
        if (g->status[i]) {
            errstr_set(errstr, errstr_len, "tp: rank %d failed: %d", i, g->status[i]);
            return g->status[i];
        }
    }
    return 0;
}
