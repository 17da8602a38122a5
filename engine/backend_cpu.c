/* backend_cpu.c - the CPU backend: fp32 weights, every matmul of two or more tokens one OpenBLAS
 * sgemm over the whole batch, attention and element-wise work in parallel loops.
 *
 * There is one set of threads: the OpenMP team. OpenBLAS (the OpenMP build) runs each sgemm on
 * that team, and the engine's own loops (attention per token, norms, RoPE, SwiGLU, the
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
#include <math.h>
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

/* Prefill attention runs as GEMMs over tiles of this many queries of one sequence; shorter runs
 * (decode steps, small chunks) use the per-token kernel. */
#define CPU_ATTN_TILE     64
#define CPU_ATTN_GEMM_MIN 16

/* Consecutive batch rows of one sequence at consecutive positions. */
struct cpu_run {
    int32_t row; /* first batch row */
    int32_t len; /* rows */
    int32_t pos; /* position of the first row */
    int32_t seq; /* index into the block tables */
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
    float *scores; /* [n_threads, n_heads * max_ctx] short-run attention, one token's heads */
    size_t scores_stride; /* n_heads * max_ctx */
    /* prefill attention by GEMM, per thread: a sequence's keys and values of one KV head gathered
     * out of their blocks, and the scores of one tile of queries */
    float *gather_k;      /* [n_threads, max_ctx, head_dim] */
    float *gather_v;      /* [n_threads, max_ctx, head_dim] */
    float *tile_s;        /* [n_threads, CPU_ATTN_TILE, max_ctx] */
    struct cpu_run *runs; /* [max_batch_tokens] this forward's runs of one sequence */
    int32_t n_runs;
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
    free(c->gather_k);
    free(c->gather_v);
    free(c->tile_s);
    free(c->runs);
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
    c->scores_stride = (size_t)m->n_heads * (size_t)cfg->max_ctx;
    c->scores = cpu_alloc((size_t)c->n_threads * c->scores_stride, &ok);
    size_t gather = (size_t)c->n_threads * (size_t)cfg->max_ctx * (size_t)m->head_dim;
    c->gather_k = cpu_alloc(gather, &ok);
    c->gather_v = cpu_alloc(gather, &ok);
    c->tile_s = cpu_alloc((size_t)c->n_threads * CPU_ATTN_TILE * (size_t)cfg->max_ctx, &ok);
    c->runs = xcalloc((size_t)cfg->max_batch_tokens, sizeof(*c->runs));
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

/* Runs fn(ctx, i, thread) for i < n on the OpenMP team, or on the calling thread when there are
 * fewer than `min_parallel` tasks: a parallel region costs a wake-up and a barrier, and on a
 * loaded machine a barrier waits for a descheduled thread, so cheap per-row loops of a few tokens
 * (decode) stay serial. */
typedef void (*cpu_task_fn)(void *ctx, size_t i, int thread);

#define CPU_ROWS_MIN_PARALLEL 8 /* rows of norms, RoPE, SwiGLU worth a parallel region */

static void cpu_parallel(const struct cpu_ctx *c, size_t n, size_t min_parallel, cpu_task_fn fn,
                         void *ctx)
{
    if (n < min_parallel || n == 1 || c->n_threads == 1) {
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

/* One product of a fused group: y[T, n] (+)= x[T, k] . w[n, k]^T, all sharing x. */
struct cpu_mm {
    const float *w;
    float *y;
    int32_t n;
};

/* The GEMVs of one token, fused: their rows laid end to end and cut into one slice per thread,
 * so q, k and v (or gate and up) cost one parallel region instead of one each. */
struct cpu_gemv_args {
    const float *x;
    const struct cpu_mm *mm;
    int n_mm;
    int32_t k, chunk;
    int accumulate;
};

static void cpu_gemv_task(void *ctx, size_t i, int thread)
{
    (void)thread;
    const struct cpu_gemv_args *a = ctx;
    int32_t lo = (int32_t)i * a->chunk, hi = lo + a->chunk, base = 0;
    for (int j = 0; j < a->n_mm; base += a->mm[j].n, j++) {
        int32_t r0 = lo > base ? lo - base : 0;
        int32_t r1 = hi - base < a->mm[j].n ? hi - base : a->mm[j].n;
        if (r0 < r1) {
            kern_cpu_gemv_f32(a->mm[j].w + (size_t)r0 * (size_t)a->k, a->x, a->mm[j].y + r0,
                              r1 - r0, a->k, a->accumulate);
        }
    }
}

/* For each product of the group, y[T, n] (+)= x[T, k] . W[n, k]^T: one OpenBLAS sgemm over the
 * whole batch each (on the team), or for one token the fused GEMVs above. */
static void cpu_matmuls(struct cpu_ctx *c, const float *x, int32_t t, int32_t k,
                        const struct cpu_mm *mm, int n_mm, float beta)
{
    if (t > 1) {
        for (int j = 0; j < n_mm; j++) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t, mm[j].n, k, 1.0f, x, k, mm[j].w,
                        k, beta, mm[j].y, mm[j].n);
        }
        return;
    }
    int32_t total = 0;
    for (int j = 0; j < n_mm; j++) {
        total += mm[j].n;
    }
    int32_t chunk = (total + c->n_threads - 1) / c->n_threads;
    chunk = (chunk + 15) / 16 * 16;
    struct cpu_gemv_args a = { x, mm, n_mm, k, chunk, beta != 0.0f };
    cpu_parallel(c, (size_t)((total + chunk - 1) / chunk), 2, cpu_gemv_task, &a);
}

static void cpu_matmul(struct cpu_ctx *c, const float *x, const float *w, float *y, int32_t t,
                       int32_t k, int32_t n, float beta)
{
    struct cpu_mm mm = { w, y, n };
    cpu_matmuls(c, x, t, k, &mm, 1, beta);
}

struct cpu_rows_args {
    struct cpu_ctx *c;
    const struct engine_batch *b;
    const float *norm;
    float *in;
    float *out;
    int layer;
    int32_t heads_per_task; /* query heads per short-run attention task */
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

/* Query heads h0 .. h1-1 of batch row t over its sequence's cached keys and values. */
static void cpu_attention_row(const struct cpu_rows_args *a, size_t t, int32_t h0, int32_t h1,
                              int thread)
{
    struct cpu_ctx *c = a->c;
    const struct engine_batch *b = a->b;
    const struct model_config *m = &c->mc;
    const struct cpu_layer *L = &c->layers[a->layer];
    struct kern_kv_layout kv = {
        .k = L->k_cache,
        .v = L->v_cache,
        .block_stride = (size_t)c->cfg.kv_block_size * (size_t)c->kv_dim,
        .head_stride = (size_t)m->head_dim,
        .token_stride = (size_t)c->kv_dim,
        .block_size = c->cfg.kv_block_size,
        .head_dim = m->head_dim,
    };
    kern_cpu_attention_paged_f32(&kv, b->block_tables[b->seq[t]], b->pos[t] + 1,
                                 c->q + t * (size_t)c->q_dim, h0, h1, m->n_heads / m->n_kv_heads,
                                 c->scores + (size_t)thread * c->scores_stride,
                                 c->att + t * (size_t)c->q_dim);
}

/* Splits the batch into runs of one sequence at consecutive positions. */
static void cpu_runs_build(struct cpu_ctx *c, const struct engine_batch *b)
{
    c->n_runs = 0;
    for (int32_t i = 0; i < b->n_tokens; i++) {
        struct cpu_run *r = c->n_runs ? &c->runs[c->n_runs - 1] : NULL;
        if (r && r->seq == b->seq[i] && r->pos + r->len == b->pos[i]) {
            r->len++;
        } else {
            c->runs[c->n_runs++] = (struct cpu_run){ i, 1, b->pos[i], b->seq[i] };
        }
    }
}

/* One task per (long run, query tile, KV head): gather the sequence's keys and values of that
 * head, then for each query head of the group S = Q K^T / sqrt(d) over the causal window of the
 * tile, a masked softmax per row, and O = P V into the attention output. OpenBLAS runs
 * single-threaded inside the parallel loop. */
static void cpu_attention_gemm_task(void *ctx, size_t i, int thread)
{
    const struct cpu_rows_args *a = ctx;
    struct cpu_ctx *c = a->c;
    const struct engine_batch *b = a->b;
    const struct model_config *m = &c->mc;
    int32_t hd = m->head_dim, group = m->n_heads / m->n_kv_heads;
    int32_t kv_head = (int32_t)(i % (size_t)m->n_kv_heads);
    size_t rest = i / (size_t)m->n_kv_heads;
    /* find the (run, tile) of index `rest` among the long runs */
    const struct cpu_run *run = NULL;
    int32_t tile = 0;
    for (int32_t r = 0; r < c->n_runs; r++) {
        if (c->runs[r].len < CPU_ATTN_GEMM_MIN) {
            continue;
        }
        size_t n_tiles = (size_t)((c->runs[r].len + CPU_ATTN_TILE - 1) / CPU_ATTN_TILE);
        if (rest < n_tiles) {
            run = &c->runs[r];
            tile = (int32_t)rest;
            break;
        }
        rest -= n_tiles;
    }
    int32_t q0 = tile * CPU_ATTN_TILE; /* first query of the tile, within the run */
    int32_t nq = run->len - q0 < CPU_ATTN_TILE ? run->len - q0 : CPU_ATTN_TILE;
    int32_t n_ctx = run->pos + q0 + nq; /* keys the last query of the tile sees */
    const struct cpu_layer *L = &c->layers[a->layer];
    const int32_t *blocks = b->block_tables[run->seq];
    int32_t bs = c->cfg.kv_block_size;
    float *gk = c->gather_k + (size_t)thread * (size_t)c->cfg.max_ctx * (size_t)hd;
    float *gv = c->gather_v + (size_t)thread * (size_t)c->cfg.max_ctx * (size_t)hd;
    float *sc = c->tile_s + (size_t)thread * CPU_ATTN_TILE * (size_t)c->cfg.max_ctx;
    for (int32_t j = 0; j < n_ctx; j++) {
        size_t row = (size_t)blocks[j / bs] * (size_t)bs + (size_t)(j % bs);
        size_t off = row * (size_t)c->kv_dim + (size_t)kv_head * (size_t)hd;
        memcpy(gk + (size_t)j * hd, L->k_cache + off, (size_t)hd * sizeof(float));
        memcpy(gv + (size_t)j * hd, L->v_cache + off, (size_t)hd * sizeof(float));
    }
    float scale = 1.0f / sqrtf((float)hd);
    size_t row0 = (size_t)(run->row + q0);
    for (int32_t g = 0; g < group; g++) {
        int32_t h = kv_head * group + g;
        const float *q = c->q + row0 * (size_t)c->q_dim + (size_t)h * hd;
        float *out = c->att + row0 * (size_t)c->q_dim + (size_t)h * hd;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, n_ctx, hd, scale, q, c->q_dim, gk,
                    hd, 0.0f, sc, n_ctx);
        for (int32_t r = 0; r < nq; r++) {
            float *srow = sc + (size_t)r * n_ctx;
            int32_t visible = run->pos + q0 + r + 1; /* causal: keys 0 .. pos */
            kern_cpu_softmax_f32(srow, visible);
            memset(srow + visible, 0, (size_t)(n_ctx - visible) * sizeof(float));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, n_ctx, 1.0f, sc, n_ctx, gv,
                    hd, 0.0f, out, c->q_dim);
    }
}

/* Query heads per attention task of the short runs. A task walks its sequence's blocks once
 * for all its heads, reading each block's rows of those heads in one run, so whole tokens make
 * the best tasks; with fewer tokens than a few per thread their heads are split, at KV-head
 * boundaries, so that every thread has work (batch-1 decode). */
static int32_t cpu_attention_heads_per_task(const struct cpu_ctx *c, size_t n_tokens)
{
    int32_t n_kv = c->mc.n_kv_heads;
    size_t want = 4 * (size_t)c->n_threads;
    size_t splits = n_tokens == 0 || n_tokens >= want ? 1 : (want + n_tokens - 1) / n_tokens;
    if (splits > (size_t)n_kv) {
        splits = (size_t)n_kv;
    }
    int32_t kv_per_task = (n_kv + (int32_t)splits - 1) / (int32_t)splits;
    return kv_per_task * (c->mc.n_heads / n_kv);
}

/* One task of the short runs: i = token among the short runs' tokens * splits + split, where a
 * split is heads_per_task query heads. */
static void cpu_attention_short_task(void *ctx, size_t i, int thread)
{
    const struct cpu_rows_args *a = ctx;
    struct cpu_ctx *c = a->c;
    int32_t n_heads = c->mc.n_heads, per = a->heads_per_task;
    size_t splits = (size_t)((n_heads + per - 1) / per);
    size_t k = i / splits;
    int32_t h0 = (int32_t)(i % splits) * per;
    int32_t h1 = h0 + per < n_heads ? h0 + per : n_heads;
    for (int32_t r = 0; r < c->n_runs; r++) {
        const struct cpu_run *run = &c->runs[r];
        if (run->len >= CPU_ATTN_GEMM_MIN) {
            continue;
        }
        if (k < (size_t)run->len) {
            cpu_attention_row(a, (size_t)run->row + k, h0, h1, thread);
            return;
        }
        k -= (size_t)run->len;
    }
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
    cpu_runs_build(c, b);
    size_t n_gemm_tasks = 0, n_short_tokens = 0;
    for (int32_t r = 0; r < c->n_runs; r++) {
        if (c->runs[r].len >= CPU_ATTN_GEMM_MIN) {
            n_gemm_tasks += (size_t)((c->runs[r].len + CPU_ATTN_TILE - 1) / CPU_ATTN_TILE) *
                            (size_t)m->n_kv_heads;
        } else {
            n_short_tokens += (size_t)c->runs[r].len;
        }
    }
    a.heads_per_task = cpu_attention_heads_per_task(c, n_short_tokens);
    size_t n_short_splits = (size_t)((m->n_heads + a.heads_per_task - 1) / a.heads_per_task);
    for (int32_t l = 0; l < m->n_layers; l++) {
        const struct cpu_layer *L = &c->layers[l];
        a.layer = l;
        a.norm = L->attn_norm;
        a.in = c->x;
        a.out = c->xb;
        cpu_parallel(c, (size_t)T, CPU_ROWS_MIN_PARALLEL, cpu_rmsnorm_task, &a);
        const struct cpu_mm qkv[3] = { { L->wq, c->q, c->q_dim },
                                       { L->wk, c->k, c->kv_dim },
                                       { L->wv, c->v, c->kv_dim } };
        cpu_matmuls(c, c->xb, T, m->dim, qkv, 3, 0.0f);
        cpu_parallel(c, (size_t)T, CPU_ROWS_MIN_PARALLEL, cpu_rope_store_task, &a);
        cpu_parallel(c, n_gemm_tasks, 2, cpu_attention_gemm_task, &a);
        cpu_parallel(c, n_short_tokens * n_short_splits, 2, cpu_attention_short_task, &a);
        cpu_matmul(c, c->att, L->wo, c->x, T, c->q_dim, m->dim, 1.0f); /* residual add */
        a.norm = L->ffn_norm;
        cpu_parallel(c, (size_t)T, CPU_ROWS_MIN_PARALLEL, cpu_rmsnorm_task, &a);
        const struct cpu_mm gate_up[2] = { { L->w_gate, c->gate, m->n_ff },
                                           { L->w_up, c->up, m->n_ff } };
        cpu_matmuls(c, c->xb, T, m->dim, gate_up, 2, 0.0f);
        cpu_parallel(c, (size_t)T, CPU_ROWS_MIN_PARALLEL, cpu_swiglu_task, &a);
        cpu_matmul(c, c->gate, L->w_down, c->x, T, m->n_ff, m->dim, 1.0f); /* residual add */
    }
    for (int32_t o = 0; o < b->n_outputs; o++) {
        memcpy(c->xb + (size_t)o * dim, c->x + (size_t)b->output_rows[o] * dim,
               dim * sizeof(float));
    }
    a.norm = c->out_norm;
    a.in = c->xb;
    a.out = c->xo;
    cpu_parallel(c, (size_t)b->n_outputs, CPU_ROWS_MIN_PARALLEL, cpu_rmsnorm_task, &a);
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
