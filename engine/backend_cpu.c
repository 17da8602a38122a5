/* backend_cpu.c - the CPU backend: fp32 weights, every matmul of two or more tokens one OpenBLAS
 * sgemm over the whole batch, attention and element-wise work in parallel loops.
 *
 * There is one set of threads: the OpenMP team. OpenBLAS (the OpenMP build) runs each sgemm on
 * that team, and the engine's own loops (attention per token and head, norms, RoPE, SwiGLU, the
 * single-token GEMV) run on the same team between sgemm calls, so BLAS threads and ours never
 * compete for cores. Two things measured here ruled out the alternatives (bench/RESULTS.md): the
 * pthreads OpenBLAS serializes calls made from several threads at once (half the rate when each
 * pool thread called it on a slice), and its threads spin after a call while a separate pool
 * works (prefill fell by a third); the serial OpenBLAS is not safe to call concurrently. */
#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/backend.h"
#include "kernels/cpu/convert.h"
#include "kernels/cpu/ops.h"

#include <cblas.h>
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cpu_layer {
    const float *attn_norm; /* [dim] */
    const float *wq;        /* [n_heads * head_dim, dim] */
    const float *wk;        /* [n_kv_heads * head_dim, dim] */
    const float *wv;        /* [n_kv_heads * head_dim, dim] */
    const float *wo;        /* [dim, n_heads * head_dim] */
    const float *ffn_norm;  /* [dim] */
    const float *w_gate;    /* [n_ff, dim] */
    const float *w_up;      /* [n_ff, dim] */
    const float *w_down;    /* [dim, n_ff] */
    float *k_cache;         /* [n_kv_blocks * block_size, kv_dim] */
    float *v_cache;         /* [n_kv_blocks * block_size, kv_dim] */
};

struct cpu_ctx {
    struct model_config mc;
    struct engine_config cfg;
    int n_threads; /* the OpenMP team size for every parallel loop and every sgemm */
    int32_t q_dim, kv_dim;
    const float *embed;    /* [n_vocab, dim] */
    const float *out_norm; /* [dim] */
    const float *lm_head;  /* [n_vocab, dim], the embedding when tied */
    struct cpu_layer *layers;
    float **converted; /* f32 copies made at load, freed at destroy */
    size_t n_converted;
    /* scratch, sized for cfg.max_batch_tokens / max_outputs / max_ctx */
    float *x;      /* [T, dim] residual stream */
    float *xb;     /* [T, dim] normed input */
    float *q;      /* [T, q_dim] */
    float *k;      /* [T, kv_dim] */
    float *v;      /* [T, kv_dim] */
    float *att;    /* [T, q_dim] */
    float *gate;   /* [T, n_ff] */
    float *up;     /* [T, n_ff] */
    float *xo;     /* [n_out, dim] */
    float *scores; /* [n_threads, max_ctx] */
};

/* Loads one tensor as f32, checking its shape; converts f16/bf16 into an owned copy. */
static const float *cpu_tensor(struct cpu_ctx *c, const struct engine_weight_src *src,
                               const char *name, int64_t rows, int64_t cols, char *errstr,
                               size_t errstr_len)
{
    const struct model_tensor *t = src->find(src->user, name);
    if (!t) {
        errstr_set(errstr, errstr_len, "missing tensor %s", name);
        return NULL;
    }
    int64_t want = rows * (cols ? cols : 1);
    bool shape_ok =
        t->n_elems == want && (cols ? t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols
                                    : t->n_dims == 1 && t->shape[0] == rows);
    if (!shape_ok) {
        errstr_set(errstr, errstr_len, "%s: tensor %s has the wrong shape for the config", t->file,
                   name);
        return NULL;
    }
    if (t->dtype == MODEL_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        return t->data; /* used in place from the read-only map */
    }
    float *dst = malloc((size_t)want * sizeof(float));
    if (!dst) {
        errstr_set(errstr, errstr_len, "%s: out of memory converting tensor %s", t->file, name);
        return NULL;
    }
    if (t->dtype == MODEL_DTYPE_F32) {
        memcpy(dst, t->data, (size_t)want * sizeof(float));
    } else {
        uint16_t *bits = malloc((size_t)want * sizeof(uint16_t));
        if (!bits) {
            free(dst);
            errstr_set(errstr, errstr_len, "%s: out of memory converting tensor %s", t->file, name);
            return NULL;
        }
        memcpy(bits, t->data, (size_t)want * sizeof(uint16_t)); /* the map may be unaligned */
        if (t->dtype == MODEL_DTYPE_F16) {
            kern_cpu_f16_to_f32(bits, dst, (size_t)want);
        } else {
            kern_cpu_bf16_to_f32(bits, dst, (size_t)want);
        }
        free(bits);
    }
    c->converted = xrealloc(c->converted, (c->n_converted + 1) * sizeof(*c->converted));
    c->converted[c->n_converted++] = dst;
    return dst;
}

static void cpu_destroy(void *ctx_)
{
    struct cpu_ctx *c = ctx_;
    if (!c) {
        return;
    }
    for (size_t i = 0; i < c->n_converted; i++) {
        free(c->converted[i]);
    }
    free(c->converted);
    if (c->layers) {
        for (int32_t l = 0; l < c->mc.n_layers; l++) {
            free(c->layers[l].k_cache);
            free(c->layers[l].v_cache);
        }
    }
    free(c->layers);
    free(c->x);
    free(c->xb);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att);
    free(c->gate);
    free(c->up);
    free(c->xo);
    free(c->scores);
    free(c);
}

static float *cpu_alloc(size_t n, bool *ok)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    if (!p) {
        *ok = false;
    }
    return p;
}

static int cpu_init(const struct engine_config *cfg, const struct engine_weight_src *src,
                    void **out, char *errstr, size_t errstr_len)
{
    struct cpu_ctx *c = xcalloc(1, sizeof(*c));
    c->mc = *src->cfg;
    c->cfg = *cfg;
    const struct model_config *m = &c->mc;
    c->q_dim = m->n_heads * m->head_dim;
    c->kv_dim = m->n_kv_heads * m->head_dim;
    c->n_threads = cfg->n_threads > 0 ? cfg->n_threads : omp_get_num_procs();
    openblas_set_num_threads(c->n_threads);
    char name[128];
#define CPU_LOAD(dst, nm, rows, cols)                                         \
    do {                                                                      \
        (dst) = cpu_tensor(c, src, (nm), (rows), (cols), errstr, errstr_len); \
        if (!(dst)) {                                                         \
            goto fail;                                                        \
        }                                                                     \
    } while (0)
    CPU_LOAD(c->embed, "model.embed_tokens.weight", m->n_vocab, m->dim);
    CPU_LOAD(c->out_norm, "model.norm.weight", m->dim, 0);
    if (m->tie_embeddings && !src->find(src->user, "lm_head.weight")) {
        c->lm_head = c->embed;
    } else {
        CPU_LOAD(c->lm_head, "lm_head.weight", m->n_vocab, m->dim);
    }
    size_t cache_rows = (size_t)cfg->n_kv_blocks * (size_t)cfg->kv_block_size;
    bool ok = true;
    c->layers = xcalloc((size_t)m->n_layers, sizeof(*c->layers));
    for (int32_t l = 0; l < m->n_layers; l++) {
        struct cpu_layer *L = &c->layers[l];
#define CPU_LAYER(dst, suffix, rows, cols)                                    \
    do {                                                                      \
        snprintf(name, sizeof(name), "model.layers.%d.%s", (int)l, (suffix)); \
        CPU_LOAD(dst, name, rows, cols);                                      \
    } while (0)
        CPU_LAYER(L->attn_norm, "input_layernorm.weight", m->dim, 0);
        CPU_LAYER(L->wq, "self_attn.q_proj.weight", c->q_dim, m->dim);
        CPU_LAYER(L->wk, "self_attn.k_proj.weight", c->kv_dim, m->dim);
        CPU_LAYER(L->wv, "self_attn.v_proj.weight", c->kv_dim, m->dim);
        CPU_LAYER(L->wo, "self_attn.o_proj.weight", m->dim, c->q_dim);
        CPU_LAYER(L->ffn_norm, "post_attention_layernorm.weight", m->dim, 0);
        CPU_LAYER(L->w_gate, "mlp.gate_proj.weight", m->n_ff, m->dim);
        CPU_LAYER(L->w_up, "mlp.up_proj.weight", m->n_ff, m->dim);
        CPU_LAYER(L->w_down, "mlp.down_proj.weight", m->dim, m->n_ff);
        L->k_cache = cpu_alloc(cache_rows * (size_t)c->kv_dim, &ok);
        L->v_cache = cpu_alloc(cache_rows * (size_t)c->kv_dim, &ok);
    }
#undef CPU_LAYER
#undef CPU_LOAD
    size_t T = (size_t)cfg->max_batch_tokens;
    c->x = cpu_alloc(T * (size_t)m->dim, &ok);
    c->xb = cpu_alloc(T * (size_t)m->dim, &ok);
    c->q = cpu_alloc(T * (size_t)c->q_dim, &ok);
    c->k = cpu_alloc(T * (size_t)c->kv_dim, &ok);
    c->v = cpu_alloc(T * (size_t)c->kv_dim, &ok);
    c->att = cpu_alloc(T * (size_t)c->q_dim, &ok);
    c->gate = cpu_alloc(T * (size_t)m->n_ff, &ok);
    c->up = cpu_alloc(T * (size_t)m->n_ff, &ok);
    c->xo = cpu_alloc((size_t)cfg->max_outputs * (size_t)m->dim, &ok);
    c->scores = cpu_alloc((size_t)c->n_threads * (size_t)cfg->max_ctx, &ok);
    if (!ok) {
        errstr_set(errstr, errstr_len,
                   "out of memory for the KV pool (%d blocks of %d tokens) or scratch",
                   (int)cfg->n_kv_blocks, (int)cfg->kv_block_size);
        goto fail;
    }
    *out = c;
    return 0;
fail:
    cpu_destroy(c);
    return -ENOMEM;
}

/* Runs fn(ctx, i, thread) for i < n on the OpenMP team. */
typedef void (*cpu_task_fn)(void *ctx, size_t i, int thread);

static void cpu_parallel(const struct cpu_ctx *c, size_t n, cpu_task_fn fn, void *ctx)
{
    if (n == 1 || c->n_threads == 1) {
        for (size_t i = 0; i < n; i++) {
            fn(ctx, i, 0);
        }
        return;
    }
#pragma omp parallel for schedule(dynamic, 1) num_threads(c->n_threads)
    for (size_t i = 0; i < n; i++) {
        fn(ctx, i, omp_get_thread_num());
    }
}

/* y[1, n] (+)= x[1, k] . W[n, k]^T: a GEMV in one slice of rows per thread. */
struct cpu_gemv_args {
    const float *x;
    const float *w;
    float *y;
    int32_t k, n, chunk;
    int accumulate;
};

static void cpu_gemv_task(void *ctx, size_t i, int thread)
{
    (void)thread;
    const struct cpu_gemv_args *a = ctx;
    int32_t n0 = (int32_t)i * a->chunk;
    int32_t nn = a->n - n0 < a->chunk ? a->n - n0 : a->chunk;
    kern_cpu_gemv_f32(a->w + (size_t)n0 * (size_t)a->k, a->x, a->y + n0, nn, a->k, a->accumulate);
}

/* y[T, n] (+)= x[T, k] . W[n, k]^T: one OpenBLAS sgemm over the whole batch (on the team), or for
 * one token a GEMV split into one multiple-of-16 slice of rows per thread. */
static void cpu_matmul(struct cpu_ctx *c, const float *x, const float *w, float *y, int32_t t,
                       int32_t k, int32_t n, float beta)
{
    if (t > 1) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t, n, k, 1.0f, x, k, w, k, beta, y, n);
        return;
    }
    int32_t chunk = (n + c->n_threads - 1) / c->n_threads;
    chunk = (chunk + 15) / 16 * 16;
    struct cpu_gemv_args a = { x, w, y, k, n, chunk, beta != 0.0f };
    cpu_parallel(c, (size_t)((n + chunk - 1) / chunk), cpu_gemv_task, &a);
}

struct cpu_rows_args {
    struct cpu_ctx *c;
    const struct engine_batch *b;
    const float *norm;
    float *in;
    float *out;
    int layer;
};

static void cpu_rmsnorm_task(void *ctx, size_t i, int thread)
{
    (void)thread;
    const struct cpu_rows_args *a = ctx;
    int32_t dim = a->c->mc.dim;
    kern_cpu_rmsnorm_f32(a->in + i * (size_t)dim, a->norm, a->out + i * (size_t)dim, dim,
                         a->c->mc.rms_eps);
}

/* RoPE on q and k of token i, then its k and v rows into the cache. */
static void cpu_rope_store_task(void *ctx, size_t i, int thread)
{
    (void)thread;
    const struct cpu_rows_args *a = ctx;
    struct cpu_ctx *c = a->c;
    const struct engine_batch *b = a->b;
    const struct model_config *m = &c->mc;
    int half_split = m->rope_layout == MODEL_ROPE_HALF_SPLIT;
    int32_t pos = b->pos[i];
    float *q = c->q + i * (size_t)c->q_dim;
    float *k = c->k + i * (size_t)c->kv_dim;
    kern_cpu_rope_f32(q, m->n_heads, m->head_dim, pos, m->rope_theta, half_split);
    kern_cpu_rope_f32(k, m->n_kv_heads, m->head_dim, pos, m->rope_theta, half_split);
    const int32_t *blocks = b->block_tables[b->seq[i]];
    int32_t bs = c->cfg.kv_block_size;
    size_t row = (size_t)blocks[pos / bs] * (size_t)bs + (size_t)(pos % bs);
    struct cpu_layer *L = &c->layers[a->layer];
    memcpy(L->k_cache + row * (size_t)c->kv_dim, k, (size_t)c->kv_dim * sizeof(float));
    memcpy(L->v_cache + row * (size_t)c->kv_dim, c->v + i * (size_t)c->kv_dim,
           (size_t)c->kv_dim * sizeof(float));
}

/* One (token, head) pair: i = token * n_heads + head. */
static void cpu_attention_task(void *ctx, size_t i, int thread)
{
    const struct cpu_rows_args *a = ctx;
    struct cpu_ctx *c = a->c;
    const struct engine_batch *b = a->b;
    const struct model_config *m = &c->mc;
    size_t t = i / (size_t)m->n_heads;
    int32_t h = (int32_t)(i % (size_t)m->n_heads);
    int32_t kv_head = h / (m->n_heads / m->n_kv_heads);
    const struct cpu_layer *L = &c->layers[a->layer];
    kern_cpu_attention_paged_f32(c->q + t * (size_t)c->q_dim + (size_t)h * m->head_dim, L->k_cache,
                                 L->v_cache, c->kv_dim, kv_head * m->head_dim, m->head_dim,
                                 b->block_tables[b->seq[t]], c->cfg.kv_block_size, b->pos[t] + 1,
                                 c->scores + (size_t)thread * c->cfg.max_ctx,
                                 c->att + t * (size_t)c->q_dim + (size_t)h * m->head_dim);
}

static void cpu_swiglu_task(void *ctx, size_t i, int thread)
{
    (void)thread;
    const struct cpu_rows_args *a = ctx;
    size_t n = (size_t)a->c->mc.n_ff;
    kern_cpu_swiglu_f32(a->c->gate + i * n, a->c->up + i * n, a->c->gate + i * n, n);
}

static int cpu_forward(void *ctx_, const struct engine_batch *b, float *logits)
{
    struct cpu_ctx *c = ctx_;
    const struct model_config *m = &c->mc;
    int32_t T = b->n_tokens;
    size_t dim = (size_t)m->dim;
    for (int32_t i = 0; i < T; i++) {
        memcpy(c->x + (size_t)i * dim, c->embed + (size_t)b->tokens[i] * dim, dim * sizeof(float));
    }
    struct cpu_rows_args a = { .c = c, .b = b };
    for (int32_t l = 0; l < m->n_layers; l++) {
        const struct cpu_layer *L = &c->layers[l];
        a.layer = l;
        a.norm = L->attn_norm;
        a.in = c->x;
        a.out = c->xb;
        cpu_parallel(c, (size_t)T, cpu_rmsnorm_task, &a);
        cpu_matmul(c, c->xb, L->wq, c->q, T, m->dim, c->q_dim, 0.0f);
        cpu_matmul(c, c->xb, L->wk, c->k, T, m->dim, c->kv_dim, 0.0f);
        cpu_matmul(c, c->xb, L->wv, c->v, T, m->dim, c->kv_dim, 0.0f);
        cpu_parallel(c, (size_t)T, cpu_rope_store_task, &a);
        cpu_parallel(c, (size_t)T * (size_t)m->n_heads, cpu_attention_task, &a);
        cpu_matmul(c, c->att, L->wo, c->x, T, c->q_dim, m->dim, 1.0f); /* residual add */
        a.norm = L->ffn_norm;
        cpu_parallel(c, (size_t)T, cpu_rmsnorm_task, &a);
        cpu_matmul(c, c->xb, L->w_gate, c->gate, T, m->dim, m->n_ff, 0.0f);
        cpu_matmul(c, c->xb, L->w_up, c->up, T, m->dim, m->n_ff, 0.0f);
        cpu_parallel(c, (size_t)T, cpu_swiglu_task, &a);
        cpu_matmul(c, c->gate, L->w_down, c->x, T, m->n_ff, m->dim, 1.0f); /* residual add */
    }
    for (int32_t o = 0; o < b->n_outputs; o++) {
        memcpy(c->xb + (size_t)o * dim, c->x + (size_t)b->output_rows[o] * dim,
               dim * sizeof(float));
    }
    a.norm = c->out_norm;
    a.in = c->xb;
    a.out = c->xo;
    cpu_parallel(c, (size_t)b->n_outputs, cpu_rmsnorm_task, &a);
    cpu_matmul(c, c->xo, c->lm_head, logits, b->n_outputs, m->dim, m->n_vocab, 0.0f);
    return 0;
}

const struct engine_backend_ops engine_backend_cpu_ops = {
    .name = "cpu",
    .init = cpu_init,
    .destroy = cpu_destroy,
    .forward = cpu_forward,
    .sync = NULL, /* synchronous */
};
