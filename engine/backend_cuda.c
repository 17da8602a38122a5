/* backend_cuda.c - the CUDA backend (built only with HAVE_CUDA): bf16 weights and KV cache on one
 * GPU, every matmul one cuBLAS GEMM over the whole batch (bf16 inputs, fp32 accumulation and
 * output), the fused kernels of kernels/cuda/ for the rest, and decode steps replayed from CUDA
 * graphs captured once per bucketed batch size.
 *
 * One forward pass: the host packs the batch's int32 inputs (tokens, positions, KV slots, the
 * runs of each sequence as CSR over its blocks, the output rows) into one pinned buffer and sends
 * it with one copy; then per layer: RMSNorm fused with the previous residual add, one GEMM for
 * q/k/v against the concatenated weights, RoPE fused with the K/V write into the paged cache,
 * paged attention (the prefill kernel, or the split-K decode kernel when every run is one token),
 * the o_proj GEMM, RMSNorm fused with that residual add, one GEMM for gate/up, SiLU-mul, the
 * down GEMM. Only the requested rows go through the final norm and the LM head. Under tensor
 * parallelism (engine/tp.h's split) the o_proj and down outputs are all-reduced before the add.
 *
 * Every CUDA and cuBLAS call is checked: an error is logged with file and line and returned as
 * -EIO; a failed forward pass marks the context failed (a sticky device error), and every later
 * call returns -EIO so the daemon can stop intake and exit. Device memory is allocated only in
 * init and freed only in destroy. */
#include "engine/backend_cuda.h"

#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/tp.h"
#include "kernels/cuda/kernels_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CUDA_KV_SPLIT       256 /* decode: keys per split (a multiple of the block size) */
#define CUDA_GRAPH_BUCKETS  9   /* decode graphs for 1, 2, 4, ..., 256 sequences */
#define CUDA_BLAS_WORKSPACE (32u << 20)
#define CUDA_RANDOM_SCALE   0.02f /* random weights: uniform in +-scale */

/* Logs a failing CUDA runtime call with file and line and returns -EIO. */
#define BC_CUDA(expr)                                                   \
    do {                                                                \
        cudaError_t bc_err_ = (expr);                                   \
        if (bc_err_ != cudaSuccess) {                                   \
            log_error("cuda: %s:%d: %s: %s", __FILE__, __LINE__, #expr, \
                      cudaGetErrorString(bc_err_));                     \
            return -EIO;                                                \
        }                                                               \
    } while (0)

#define BC_BLAS(expr)                                                     \
    do {                                                                  \
        cublasStatus_t bc_st_ = (expr);                                   \
        if (bc_st_ != CUBLAS_STATUS_SUCCESS) {                            \
            log_error("cublas: %s:%d: %s: %s", __FILE__, __LINE__, #expr, \
                      cublasGetStatusString(bc_st_));                     \
            return -EIO;                                                  \
        }                                                                 \
    } while (0)

/* A kern_cuda_* call or a helper returning 0 or a negative errno. */
#define BC_TRY(expr)         \
    do {                     \
        int bc_rc_ = (expr); \
        if (bc_rc_ != 0) {   \
            return bc_rc_;   \
        }                    \
    } while (0)

struct cuda_layer {
    uint16_t *w_qkv_d;     /* [q_dim + 2 kv_dim, dim] this shard's q rows, then k, then v */
    uint16_t *w_o_d;       /* [dim, q_dim] */
    uint16_t *w_gate_up_d; /* [2 n_ff, dim] gate rows, then up */
    uint16_t *w_down_d;    /* [dim, n_ff] */
    float *attn_norm_d;    /* [dim] */
    float *ffn_norm_d;     /* [dim] */
    uint16_t *k_cache_d;   /* [n_kv_blocks * block_size, n_kv_heads_l, head_dim] */
    uint16_t *v_cache_d;   /* likewise */
};

/* Offsets (in int32) of each input inside the packed buffers in_h / in_d. */
struct cuda_inputs {
    size_t tokens, pos, slot, rows, q_start, q_len, pos0, indptr;
    size_t d_q_start, d_q_len, d_pos0, d_indptr; /* a mixed batch's one-token runs */
    size_t block_ids, cap_blocks, total;
};

struct cuda_ctx {
    struct model_config mc;
    struct engine_config cfg;
    struct tp_shard sh;
    struct comm *comm; /* NULL: one device */
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws_d;
    int32_t q_dim, kv_dim, qkv_dim, n_ff; /* this shard's */
    uint64_t random_seed;                 /* random weights: the next tensor's seed */
    bool random;
    uint16_t *embed_d;   /* [n_vocab, dim] */
    uint16_t *lm_head_d; /* [n_vocab, dim]; == embed_d when tied */
    float *out_norm_d;   /* [dim] */
    struct cuda_layer *layers;
    /* scratch for T = max_batch_tokens rows, O = max_outputs rows */
    float *x_d;        /* [T, dim] residual stream */
    uint16_t *xb_d;    /* [T, dim] normed GEMM input */
    float *qkv_d;      /* [T, qkv_dim] */
    uint16_t *att_d;   /* [T, q_dim] */
    float *delta_d;    /* [T, dim] o_proj / down output */
    float *gate_up_d;  /* [T, 2 n_ff] */
    uint16_t *h_d;     /* [T, n_ff] */
    float *xo_d;       /* [O, dim] */
    float *deltao_d;   /* [O, dim] */
    uint16_t *xob_d;   /* [O, dim] */
    float *logits_d;   /* [O, n_vocab] */
    float *part_o_d;   /* [T, n_heads_l, max_splits, head_dim] decode splits */
    float *part_lse_d; /* [T, n_heads_l, max_splits] */
    int32_t max_splits;
    struct cuda_inputs in;
    int32_t *in_d;   /* [in.total] */
    int32_t *in_h;   /* [in.total] pinned */
    float *logits_h; /* [O, n_vocab] pinned */
    bool logits_to_host;
    int32_t last_n_out;
    /* device sampling: parameters staged in one pinned buffer */
    /* device sampling: [O] seed, step, temperature, top_p, top_k in; tokens [O] and logprobs
     * [O, 1 + KERN_LOGPROBS_MAX] out (one pinned staging buffer and its device twin) */
    void *samp_h, *samp_d;
    cudaGraphExec_t graphs[CUDA_GRAPH_BUCKETS];
    bool graphs_on;
    bool failed;
};

static void *cuda_free_d(void *p)
{
    if (p) {
        cudaFree(p);
    }
    return NULL;
}

static void cuda_destroy(void *ctx_)
{
    struct cuda_ctx *c = ctx_;
    if (!c) {
        return;
    }
    cudaSetDevice(c->device);
    if (c->stream) {
        cudaStreamSynchronize(c->stream);
    }
    for (int b = 0; b < CUDA_GRAPH_BUCKETS; b++) {
        if (c->graphs[b]) {
            cudaGraphExecDestroy(c->graphs[b]);
        }
    }
    if (c->layers) {
        for (int32_t l = 0; l < c->mc.n_layers; l++) {
            struct cuda_layer *L = &c->layers[l];
            L->w_qkv_d = cuda_free_d(L->w_qkv_d);
            L->w_o_d = cuda_free_d(L->w_o_d);
            L->w_gate_up_d = cuda_free_d(L->w_gate_up_d);
            L->w_down_d = cuda_free_d(L->w_down_d);
            L->attn_norm_d = cuda_free_d(L->attn_norm_d);
            L->ffn_norm_d = cuda_free_d(L->ffn_norm_d);
            L->k_cache_d = cuda_free_d(L->k_cache_d);
            L->v_cache_d = cuda_free_d(L->v_cache_d);
        }
        free(c->layers);
    }
    if (c->lm_head_d != c->embed_d) {
        cuda_free_d(c->lm_head_d);
    }
    void *dev[] = { c->embed_d,  c->out_norm_d, c->x_d,        c->xb_d, c->qkv_d,    c->att_d,
                    c->delta_d,  c->gate_up_d,  c->h_d,        c->xo_d, c->deltao_d, c->xob_d,
                    c->logits_d, c->part_o_d,   c->part_lse_d, c->in_d, c->samp_d,   c->blas_ws_d };
    for (size_t i = 0; i < ARRAY_LEN(dev); i++) {
        cuda_free_d(dev[i]);
    }
    if (c->in_h) {
        cudaFreeHost(c->in_h);
    }
    if (c->logits_h) {
        cudaFreeHost(c->logits_h);
    }
    if (c->samp_h) {
        cudaFreeHost(c->samp_h);
    }
    if (c->blas) {
        cublasDestroy(c->blas);
    }
    if (c->stream) {
        cudaStreamDestroy(c->stream);
    }
    free(c);
}

static int cuda_malloc(void **p, size_t bytes)
{
    BC_CUDA(cudaMalloc(p, bytes ? bytes : 1));
    return 0;
}

/* Rows [r0, r0 + nr) x columns [c0, c0 + nc) of tensor `name` (full shape [rows, cols]; cols 0:
 * 1-D) into dst_d: bf16 when dst16_d, else f32 into dst32_d. Random weights when the source has
 * no lookup: matmul weights uniform in +-CUDA_RANDOM_SCALE, norms 1 +- 0.1. */
static int cuda_upload(struct cuda_ctx *c, const struct engine_weight_src *src, const char *name,
                       int64_t rows, int64_t cols, int64_t r0, int64_t nr, int64_t c0, int64_t nc,
                       uint16_t *dst16_d, float *dst32_d, char *errstr, size_t errstr_len)
{
    size_t n = (size_t)(nr * nc);
    if (c->random) {
        uint64_t seed = c->random_seed++;
        if (dst16_d) {
            BC_TRY(
                kern_cuda_fill_random_bf16(dst16_d, n, seed, 0.0f, CUDA_RANDOM_SCALE, c->stream));
        } else {
            BC_TRY(kern_cuda_fill_random_f32(dst32_d, n, seed, 1.0f, 0.1f, c->stream));
        }
        return 0;
    }
    const struct model_tensor *t = src->find(src->user, name);
    if (!t) {
        errstr_set(errstr, errstr_len, "missing tensor %s", name);
        return -EINVAL;
    }
    bool shape_ok = cols ? t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols
                         : t->n_dims == 1 && t->shape[0] == rows;
    if (!shape_ok) {
        errstr_set(errstr, errstr_len, "%s: tensor %s has the wrong shape for the config", t->file,
                   name);
        return -EINVAL;
    }
    float *f = malloc(n * sizeof(float) + 4);
    uint16_t *b = dst16_d ? malloc(n * sizeof(uint16_t) + 2) : NULL;
    if (!f || (dst16_d && !b)) {
        free(f);
        free(b);
        errstr_set(errstr, errstr_len, "out of host memory staging tensor %s", name);
        return -ENOMEM;
    }
    int err = tp_tensor_slice_f32(t, r0, nr, c0, nc, f);
    if (!err && dst16_d) {
        for (size_t i = 0; i < n; i++) {
            b[i] = kern_bf16_from_f32(f[i]);
        }
    }
    cudaError_t ce = cudaSuccess;
    if (!err) {
        ce = dst16_d ? cudaMemcpy(dst16_d, b, n * sizeof(uint16_t), cudaMemcpyHostToDevice)
                     : cudaMemcpy(dst32_d, f, n * sizeof(float), cudaMemcpyHostToDevice);
    }
    free(f);
    free(b);
    if (err) {
        errstr_set(errstr, errstr_len, "tensor %s: slice outside the tensor", name);
        return err;
    }
    if (ce != cudaSuccess) {
        log_error("cuda: %s:%d: uploading %s: %s", __FILE__, __LINE__, name,
                  cudaGetErrorString(ce));
        errstr_set(errstr, errstr_len, "cuda: uploading %s: %s", name, cudaGetErrorString(ce));
        return -EIO;
    }
    return 0;
}

static int cuda_load_weights(struct cuda_ctx *c, const struct engine_weight_src *src, char *errstr,
                             size_t errstr_len)
{
    const struct model_config *m = &c->mc;
    const struct tp_shard *sh = &c->sh;
    int64_t dim = m->dim, hd = m->head_dim;
    int64_t q_full = (int64_t)m->n_heads * hd, kv_full = (int64_t)m->n_kv_heads * hd;
    size_t b16 = sizeof(uint16_t);
    BC_TRY(cuda_malloc((void **)&c->embed_d, (size_t)(m->n_vocab * dim) * b16));
    BC_TRY(cuda_upload(c, src, "model.embed_tokens.weight", m->n_vocab, dim, 0, m->n_vocab, 0, dim,
                       c->embed_d, NULL, errstr, errstr_len));
    BC_TRY(cuda_malloc((void **)&c->out_norm_d, (size_t)dim * sizeof(float)));
    BC_TRY(cuda_upload(c, src, "model.norm.weight", dim, 0, 0, 1, 0, dim, NULL, c->out_norm_d,
                       errstr, errstr_len));
    if (m->tie_embeddings && (c->random || !src->find(src->user, "lm_head.weight"))) {
        c->lm_head_d = c->embed_d;
    } else {
        BC_TRY(cuda_malloc((void **)&c->lm_head_d, (size_t)(m->n_vocab * dim) * b16));
        BC_TRY(cuda_upload(c, src, "lm_head.weight", m->n_vocab, dim, 0, m->n_vocab, 0, dim,
                           c->lm_head_d, NULL, errstr, errstr_len));
    }
    c->layers = xcalloc((size_t)m->n_layers, sizeof(*c->layers));
    char name[128];
    for (int32_t l = 0; l < m->n_layers; l++) {
        struct cuda_layer *L = &c->layers[l];
#define BC_NAME(suffix) (snprintf(name, sizeof(name), "model.layers.%d.%s", (int)l, suffix), name)
        BC_TRY(cuda_malloc((void **)&L->w_qkv_d, (size_t)(c->qkv_dim * dim) * b16));
        BC_TRY(cuda_upload(c, src, BC_NAME("self_attn.q_proj.weight"), q_full, dim, sh->head0 * hd,
                           c->q_dim, 0, dim, L->w_qkv_d, NULL, errstr, errstr_len));
        BC_TRY(cuda_upload(c, src, BC_NAME("self_attn.k_proj.weight"), kv_full, dim,
                           sh->kv_head0 * hd, c->kv_dim, 0, dim,
                           L->w_qkv_d + (size_t)c->q_dim * (size_t)dim, NULL, errstr, errstr_len));
        BC_TRY(cuda_upload(c, src, BC_NAME("self_attn.v_proj.weight"), kv_full, dim,
                           sh->kv_head0 * hd, c->kv_dim, 0, dim,
                           L->w_qkv_d + (size_t)(c->q_dim + c->kv_dim) * (size_t)dim, NULL, errstr,
                           errstr_len));
        BC_TRY(cuda_malloc((void **)&L->w_o_d, (size_t)(dim * c->q_dim) * b16));
        BC_TRY(cuda_upload(c, src, BC_NAME("self_attn.o_proj.weight"), dim, q_full, 0, dim,
                           sh->head0 * hd, c->q_dim, L->w_o_d, NULL, errstr, errstr_len));
        BC_TRY(cuda_malloc((void **)&L->w_gate_up_d, (size_t)(2 * c->n_ff * dim) * b16));
        BC_TRY(cuda_upload(c, src, BC_NAME("mlp.gate_proj.weight"), m->n_ff, dim, sh->ff0, c->n_ff,
                           0, dim, L->w_gate_up_d, NULL, errstr, errstr_len));
        BC_TRY(cuda_upload(c, src, BC_NAME("mlp.up_proj.weight"), m->n_ff, dim, sh->ff0, c->n_ff, 0,
                           dim, L->w_gate_up_d + (size_t)c->n_ff * (size_t)dim, NULL, errstr,
                           errstr_len));
        BC_TRY(cuda_malloc((void **)&L->w_down_d, (size_t)(dim * c->n_ff) * b16));
        BC_TRY(cuda_upload(c, src, BC_NAME("mlp.down_proj.weight"), dim, m->n_ff, 0, dim, sh->ff0,
                           c->n_ff, L->w_down_d, NULL, errstr, errstr_len));
        BC_TRY(cuda_malloc((void **)&L->attn_norm_d, (size_t)dim * sizeof(float)));
        BC_TRY(cuda_upload(c, src, BC_NAME("input_layernorm.weight"), dim, 0, 0, 1, 0, dim, NULL,
                           L->attn_norm_d, errstr, errstr_len));
        BC_TRY(cuda_malloc((void **)&L->ffn_norm_d, (size_t)dim * sizeof(float)));
        BC_TRY(cuda_upload(c, src, BC_NAME("post_attention_layernorm.weight"), dim, 0, 0, 1, 0, dim,
                           NULL, L->ffn_norm_d, errstr, errstr_len));
#undef BC_NAME
    }
    return 0;
}

static int cuda_alloc_scratch(struct cuda_ctx *c)
{
    const struct model_config *m = &c->mc;
    size_t T = (size_t)c->cfg.max_batch_tokens, O = (size_t)c->cfg.max_outputs;
    size_t dim = (size_t)m->dim, f4 = sizeof(float), b2 = sizeof(uint16_t);
    c->max_splits = (c->cfg.max_ctx + CUDA_KV_SPLIT - 1) / CUDA_KV_SPLIT;
    struct {
        void **p;
        size_t bytes;
    } bufs[] = {
        { (void **)&c->x_d, T * dim * f4 },
        { (void **)&c->xb_d, T * dim * b2 },
        { (void **)&c->qkv_d, T * (size_t)c->qkv_dim * f4 },
        { (void **)&c->att_d, T * (size_t)c->q_dim * b2 },
        { (void **)&c->delta_d, T * dim * f4 },
        { (void **)&c->gate_up_d, T * 2 * (size_t)c->n_ff * f4 },
        { (void **)&c->h_d, T * (size_t)c->n_ff * b2 },
        { (void **)&c->xo_d, O * dim * f4 },
        { (void **)&c->deltao_d, O * dim * f4 },
        { (void **)&c->xob_d, O * dim * b2 },
        { (void **)&c->logits_d, O * (size_t)m->n_vocab * f4 },
        { (void **)&c->part_o_d,
          T * (size_t)c->sh.n_heads * (size_t)c->max_splits * (size_t)m->head_dim * f4 },
        { (void **)&c->part_lse_d, T * (size_t)c->sh.n_heads * (size_t)c->max_splits * f4 },
    };
    for (size_t i = 0; i < ARRAY_LEN(bufs); i++) {
        BC_TRY(cuda_malloc(bufs[i].p, bufs[i].bytes));
        /* pad rows of decode graphs read stale scratch: keep it finite */
        BC_CUDA(cudaMemsetAsync(*bufs[i].p, 0, bufs[i].bytes, c->stream));
    }
    struct cuda_inputs *in = &c->in;
    size_t blocks_per_seq =
        (size_t)(c->cfg.max_ctx + c->cfg.kv_block_size - 1) / (size_t)c->cfg.kv_block_size;
    in->tokens = 0;
    in->pos = in->tokens + T;
    in->slot = in->pos + T;
    in->rows = in->slot + T;
    in->q_start = in->rows + O;
    in->q_len = in->q_start + T;
    in->pos0 = in->q_len + T;
    in->indptr = in->pos0 + T;
    in->d_q_start = in->indptr + T + 1;
    in->d_q_len = in->d_q_start + T;
    in->d_pos0 = in->d_q_len + T;
    in->d_indptr = in->d_pos0 + T;
    in->block_ids = in->d_indptr + T + 1;
    in->cap_blocks = T * blocks_per_seq;
    in->total = in->block_ids + in->cap_blocks;
    BC_TRY(cuda_malloc((void **)&c->in_d, in->total * sizeof(int32_t)));
    BC_CUDA(cudaMallocHost((void **)&c->in_h, in->total * sizeof(int32_t)));
    BC_CUDA(cudaMallocHost((void **)&c->logits_h, O * (size_t)m->n_vocab * f4));
    size_t samp = O * (sizeof(float) * 2 + sizeof(int32_t) * 2 + sizeof(uint64_t) * 2 +
                       (1 + KERN_LOGPROBS_MAX) * sizeof(struct kern_logprob));
    BC_CUDA(cudaMallocHost(&c->samp_h, samp));
    BC_TRY(cuda_malloc(&c->samp_d, samp));
    return 0;
}

/* The KV pool: cfg.n_kv_blocks, or what the memory fraction leaves. */
static int cuda_alloc_kv(struct cuda_ctx *c, char *errstr, size_t errstr_len)
{
    size_t per_block = 2 * (size_t)c->mc.n_layers * (size_t)c->cfg.kv_block_size *
                       (size_t)c->kv_dim * sizeof(uint16_t);
    if (c->cfg.n_kv_blocks <= 0) {
        size_t free_b = 0, total_b = 0;
        BC_CUDA(cudaMemGetInfo(&free_b, &total_b));
        double frac = c->cfg.gpu_mem_fraction > 0 ? c->cfg.gpu_mem_fraction : 0.9;
        double budget = frac * (double)total_b - (double)(total_b - free_b);
        double n = budget > 0 ? budget / (double)per_block : 0;
        int32_t need = (c->cfg.max_ctx + c->cfg.kv_block_size - 1) / c->cfg.kv_block_size;
        if (n < need) {
            errstr_set(errstr, errstr_len,
                       "cuda: %.0f MiB free within gpu_mem_fraction %.2f leaves no room for one "
                       "context's KV cache",
                       budget / 1048576.0, frac);
            return -ENOMEM;
        }
        c->cfg.n_kv_blocks = n > INT32_MAX / 2 ? INT32_MAX / 2 : (int32_t)n;
    }
    size_t slots = (size_t)c->cfg.n_kv_blocks * (size_t)c->cfg.kv_block_size;
    for (int32_t l = 0; l < c->mc.n_layers; l++) {
        size_t bytes = slots * (size_t)c->kv_dim * sizeof(uint16_t);
        if (cudaMalloc((void **)&c->layers[l].k_cache_d, bytes) != cudaSuccess ||
            cudaMalloc((void **)&c->layers[l].v_cache_d, bytes) != cudaSuccess) {
            cudaGetLastError(); /* clear the allocation error; it is not sticky */
            errstr_set(errstr, errstr_len, "cuda: out of memory for the KV pool (%d blocks)",
                       (int)c->cfg.n_kv_blocks);
            return -ENOMEM;
        }
    }
    log_info("cuda: device %d KV pool %d blocks of %d tokens (%.1f GiB)", c->device,
             (int)c->cfg.n_kv_blocks, (int)c->cfg.kv_block_size,
             (double)per_block * c->cfg.n_kv_blocks / 1073741824.0);
    return 0;
}

static int cuda_init_common(const struct engine_config *cfg, const struct engine_weight_src *src,
                            struct comm *comm, void **out, char *errstr, size_t errstr_len)
{
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev <= 0) {
        cudaGetLastError();
        errstr_set(errstr, errstr_len, "cuda: no CUDA device");
        return -ENODEV;
    }
    if (cfg->cuda_device < 0 || cfg->cuda_device >= n_dev) {
        errstr_set(errstr, errstr_len, "cuda: device %d of %d", cfg->cuda_device, n_dev);
        return -ENODEV;
    }
    struct cuda_ctx *c = xcalloc(1, sizeof(*c));
    c->mc = *src->cfg;
    c->cfg = *cfg;
    c->device = cfg->cuda_device;
    c->comm = comm;
    c->random = src->find == NULL;
    c->random_seed = 1;
    c->logits_to_host = true;
    const char *g = getenv("JUDGED_CUDA_GRAPHS");
    c->graphs_on = !comm && !(g && strcmp(g, "0") == 0);
    int err = tp_shard_plan(&c->mc, comm ? comm_rank(comm) : 0, comm ? comm_size(comm) : 1, &c->sh,
                            errstr, errstr_len);
    if (err) {
        goto fail;
    }
    c->q_dim = c->sh.n_heads * c->mc.head_dim;
    c->kv_dim = c->sh.n_kv_heads * c->mc.head_dim;
    c->qkv_dim = c->q_dim + 2 * c->kv_dim;
    c->n_ff = c->sh.n_ff;
    err = -EIO;
    if (cudaSetDevice(c->device) != cudaSuccess ||
        cudaStreamCreateWithFlags(&c->stream, cudaStreamDefault) != cudaSuccess ||
        cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS ||
        cublasSetStream(c->blas, c->stream) != CUBLAS_STATUS_SUCCESS ||
        cudaMalloc(&c->blas_ws_d, CUDA_BLAS_WORKSPACE) != cudaSuccess ||
        cublasSetWorkspace(c->blas, c->blas_ws_d, CUDA_BLAS_WORKSPACE) != CUBLAS_STATUS_SUCCESS) {
        log_error("cuda: %s:%d: device %d: cannot create the stream, cuBLAS or its workspace",
                  __FILE__, __LINE__, c->device);
        errstr_set(errstr, errstr_len, "cuda: device %d: setup failed", c->device);
        goto fail;
    }
    err = cuda_load_weights(c, src, errstr, errstr_len);
    if (!err) {
        err = cuda_alloc_scratch(c);
    }
    if (!err) {
        err = cuda_alloc_kv(c, errstr, errstr_len);
    }
    if (!err && cudaStreamSynchronize(c->stream) != cudaSuccess) {
        err = -EIO;
    }
    if (err) {
        if (err == -EIO && (!errstr || !errstr[0])) {
            errstr_set(errstr, errstr_len, "cuda: device %d: a CUDA call failed (see the log)",
                       c->device);
        }
        goto fail;
    }
    *out = c;
    return 0;
fail:
    cuda_destroy(c);
    return err;
}

static int cuda_init(const struct engine_config *cfg, const struct engine_weight_src *src,
                     void **out, char *errstr, size_t errstr_len)
{
    return cuda_init_common(cfg, src, NULL, out, errstr, errstr_len);
}

int engine_backend_cuda_init_tp(const struct engine_config *cfg,
                                const struct engine_weight_src *src, struct comm *comm, void **ctx,
                                char *errstr, size_t errstr_len)
{
    return cuda_init_common(cfg, src, comm, ctx, errstr, errstr_len);
}

int32_t engine_backend_cuda_kv_blocks(const void *ctx)
{
    return ((const struct cuda_ctx *)ctx)->cfg.n_kv_blocks;
}

void engine_backend_cuda_set_logits_to_host(void *ctx, bool on)
{
    ((struct cuda_ctx *)ctx)->logits_to_host = on;
}

/* y[t, n] = x[t, k] . w[n, k]^T: bf16 inputs, fp32 accumulation and output. Row-major y is
 * column-major y^T [n, t] = W^T(op T of column-major [k, n]) x^T ([k, t]). */
static int cuda_gemm(struct cuda_ctx *c, const uint16_t *x_d, const uint16_t *w_d, float *y_d,
                     int32_t t, int32_t k, int32_t n)
{
    const float alpha = 1.0f, beta = 0.0f;
    BC_BLAS(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, n, t, k, &alpha, w_d, CUDA_R_16BF, k,
                         x_d, CUDA_R_16BF, k, &beta, y_d, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT));
    return 0;
}

/* Enqueues one forward pass of n_tok rows in n_runs runs with n_out outputs whose inputs are in
 * in_d. decode: every run is one token (the split-K kernel). Otherwise the n_runs runs go to the
 * prefill kernel and the n_dec one-token runs of a mixed batch (the d_ lists) to the split-K
 * kernel, each writing its own rows. Capturable when comm is NULL. */
static int cuda_enqueue(struct cuda_ctx *c, int32_t n_tok, int32_t n_runs, int32_t n_dec,
                        int32_t n_out, int32_t max_q_len, bool decode)
{
    const struct model_config *m = &c->mc;
    const struct cuda_inputs *in = &c->in;
    int32_t dim = m->dim;
    struct kern_qkv_shape qs = { c->sh.n_heads, c->sh.n_kv_heads, m->head_dim, m->rope_theta,
                                 m->rope_layout == MODEL_ROPE_HALF_SPLIT };
    struct kern_attn_runs runs = { n_runs,
                                   c->in_d + in->q_start,
                                   c->in_d + in->q_len,
                                   c->in_d + in->pos0,
                                   c->in_d + in->indptr,
                                   c->in_d + in->block_ids };
    struct kern_attn_runs d_runs = { n_dec,
                                     c->in_d + in->d_q_start,
                                     c->in_d + in->d_q_len,
                                     c->in_d + in->d_pos0,
                                     c->in_d + in->d_indptr,
                                     c->in_d + in->block_ids };
    struct kern_attn_shape as = { c->sh.n_heads, c->sh.n_kv_heads, m->head_dim,
                                  c->cfg.kv_block_size, c->qkv_dim };
    BC_TRY(kern_cuda_embed_bf16(c->embed_d, c->in_d + in->tokens, n_tok, dim, c->x_d, c->stream));
    for (int32_t l = 0; l < m->n_layers; l++) {
        const struct cuda_layer *L = &c->layers[l];
        BC_TRY(kern_cuda_add_rmsnorm_bf16(c->x_d, l ? c->delta_d : NULL, L->attn_norm_d, c->xb_d,
                                          n_tok, dim, m->rms_eps, c->stream));
        BC_TRY(cuda_gemm(c, c->xb_d, L->w_qkv_d, c->qkv_d, n_tok, dim, c->qkv_dim));
        BC_TRY(kern_cuda_rope_kv_write_bf16(c->qkv_d, c->in_d + in->pos, c->in_d + in->slot, n_tok,
                                            &qs, L->k_cache_d, L->v_cache_d, c->stream));
        if (decode) {
            BC_TRY(kern_cuda_attn_decode_bf16(c->qkv_d, L->k_cache_d, L->v_cache_d, &runs, &as,
                                              CUDA_KV_SPLIT, c->max_splits, c->part_o_d,
                                              c->part_lse_d, c->att_d, c->stream));
        } else {
            BC_TRY(kern_cuda_attn_prefill_bf16(c->qkv_d, L->k_cache_d, L->v_cache_d, &runs, &as,
                                               max_q_len, c->att_d, c->stream));
            if (n_dec > 0) {
                BC_TRY(kern_cuda_attn_decode_bf16(c->qkv_d, L->k_cache_d, L->v_cache_d, &d_runs,
                                                  &as, CUDA_KV_SPLIT, c->max_splits, c->part_o_d,
                                                  c->part_lse_d, c->att_d, c->stream));
            }
        }
        BC_TRY(cuda_gemm(c, c->att_d, L->w_o_d, c->delta_d, n_tok, c->q_dim, dim));
        if (c->comm) {
            BC_TRY(comm_allreduce_sum_f32(c->comm, c->delta_d, (size_t)n_tok * (size_t)dim));
        }
        BC_TRY(kern_cuda_add_rmsnorm_bf16(c->x_d, c->delta_d, L->ffn_norm_d, c->xb_d, n_tok, dim,
                                          m->rms_eps, c->stream));
        BC_TRY(cuda_gemm(c, c->xb_d, L->w_gate_up_d, c->gate_up_d, n_tok, dim, 2 * c->n_ff));
        BC_TRY(kern_cuda_silu_mul_bf16(c->gate_up_d, n_tok, c->n_ff, c->h_d, c->stream));
        BC_TRY(cuda_gemm(c, c->h_d, L->w_down_d, c->delta_d, n_tok, c->n_ff, dim));
        if (c->comm) {
            BC_TRY(comm_allreduce_sum_f32(c->comm, c->delta_d, (size_t)n_tok * (size_t)dim));
        }
    }
    /* only the requested rows: the last residual add, the final norm, the LM head */
    BC_TRY(kern_cuda_rows_gather_f32(c->x_d, dim, c->in_d + in->rows, n_out, c->xo_d, c->stream));
    BC_TRY(kern_cuda_rows_gather_f32(c->delta_d, dim, c->in_d + in->rows, n_out, c->deltao_d,
                                     c->stream));
    BC_TRY(kern_cuda_add_rmsnorm_bf16(c->xo_d, c->deltao_d, c->out_norm_d, c->xob_d, n_out, dim,
                                      m->rms_eps, c->stream));
    BC_TRY(cuda_gemm(c, c->xob_d, c->lm_head_d, c->logits_d, n_out, dim, m->n_vocab));
    return 0;
}

/* Packs the batch into in_h: slots, runs (consecutive rows of one sequence at consecutive
 * positions) and their blocks. Returns the run count; *max_q_len, *n_blocks_used set. When the
 * batch mixes one-token runs (decoding sequences) with longer ones (prefill chunks), the
 * one-token runs move to the d_ lists (*n_dec of them), for the split-K decode kernel: the
 * prefill kernel would spend a tile of queries on each. */
static int32_t cuda_pack(struct cuda_ctx *c, const struct engine_batch *b, int32_t *max_q_len,
                         size_t *n_blocks_used, int32_t *n_dec)
{
    const struct cuda_inputs *in = &c->in;
    int32_t *h = c->in_h, bs = c->cfg.kv_block_size, n_runs = 0;
    size_t used = 0;
    *max_q_len = 0;
    for (int32_t i = 0; i < b->n_tokens; i++) {
        int32_t s = b->seq[i], p = b->pos[i];
        const int32_t *blocks = b->block_tables[s];
        h[in->tokens + (size_t)i] = b->tokens[i];
        h[in->pos + (size_t)i] = p;
        h[in->slot + (size_t)i] = blocks[p / bs] * bs + p % bs;
        int32_t r = n_runs - 1;
        bool extend = r >= 0 && b->seq[i - 1] == s && b->pos[i - 1] + 1 == p;
        if (extend) {
            h[in->q_len + (size_t)r]++;
        } else {
            r = n_runs++;
            h[in->q_start + (size_t)r] = i;
            h[in->q_len + (size_t)r] = 1;
            h[in->pos0 + (size_t)r] = p;
        }
    }
    for (int32_t r = 0; r < n_runs; r++) {
        int32_t i = h[in->q_start + (size_t)r], len = h[in->q_len + (size_t)r];
        int32_t last = h[in->pos0 + (size_t)r] + len - 1;
        const int32_t *blocks = b->block_tables[b->seq[i]];
        h[in->indptr + (size_t)r] = (int32_t)used;
        for (int32_t k = 0; k <= last / bs; k++) {
            h[in->block_ids + used++] = blocks[k];
        }
        *max_q_len = len > *max_q_len ? len : *max_q_len;
    }
    h[in->indptr + (size_t)n_runs] = (int32_t)used;
    for (int32_t o = 0; o < b->n_outputs; o++) {
        h[in->rows + (size_t)o] = b->output_rows[o];
    }
    *n_blocks_used = used;
    *n_dec = 0;
    if (*max_q_len > 1 && n_runs < b->n_tokens) {
        int32_t keep = 0;
        for (int32_t r = 0; r < n_runs; r++) {
            int32_t qs = h[in->q_start + (size_t)r], ql = h[in->q_len + (size_t)r];
            int32_t p0 = h[in->pos0 + (size_t)r], ip = h[in->indptr + (size_t)r];
            size_t at = ql == 1 ? (size_t)(*n_dec)++ : (size_t)keep++;
            h[(ql == 1 ? in->d_q_start : in->q_start) + at] = qs;
            h[(ql == 1 ? in->d_q_len : in->q_len) + at] = ql;
            h[(ql == 1 ? in->d_pos0 : in->pos0) + at] = p0;
            h[(ql == 1 ? in->d_indptr : in->indptr) + at] = ip;
        }
        h[in->indptr + (size_t)keep] = (int32_t)used;
        h[in->d_indptr + (size_t)*n_dec] = (int32_t)used;
        n_runs = keep;
    }
    return n_runs;
}

/* The smallest graph bucket (1, 2, 4, ...) holding n decode rows, or -1. */
static int cuda_bucket(const struct cuda_ctx *c, int32_t n, int32_t *size)
{
    for (int k = 0; k < CUDA_GRAPH_BUCKETS; k++) {
        int32_t s = 1 << k;
        if (s >= n && s <= c->cfg.max_batch_tokens && s <= c->cfg.max_outputs) {
            *size = s;
            return k;
        }
    }
    return -1;
}

static int cuda_capture(struct cuda_ctx *c, int k, int32_t size)
{
    cudaGraph_t graph = NULL;
    BC_CUDA(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    int err = cuda_enqueue(c, size, size, 0, size, 1, true);
    cudaError_t ce = cudaStreamEndCapture(c->stream, &graph);
    if (err) {
        if (graph) {
            cudaGraphDestroy(graph);
        }
        return err;
    }
    BC_CUDA(ce);
    ce = cudaGraphInstantiate(&c->graphs[k], graph, 0);
    cudaGraphDestroy(graph);
    BC_CUDA(ce);
    log_debug("cuda: captured the decode graph for %d sequences", (int)size);
    return 0;
}

static int cuda_forward_inner(struct cuda_ctx *c, const struct engine_batch *b, float *logits)
{
    BC_CUDA(cudaSetDevice(c->device));
    int32_t max_q_len;
    size_t used;
    int32_t n_dec = 0;
    int32_t n_runs = cuda_pack(c, b, &max_q_len, &used, &n_dec);
    const struct cuda_inputs *in = &c->in;
    bool decode = n_runs == b->n_tokens;
    bool rows_identity = b->n_outputs == b->n_tokens;
    for (int32_t o = 0; rows_identity && o < b->n_outputs; o++) {
        rows_identity = b->output_rows[o] == o;
    }
    int32_t size = 0;
    int k = decode && rows_identity && c->graphs_on ? cuda_bucket(c, b->n_tokens, &size) : -1;
    if (k >= 0) {
        /* pad to the bucket: no KV store (slot -1), empty runs, outputs ignored */
        int32_t *h = c->in_h;
        for (int32_t i = b->n_tokens; i < size; i++) {
            h[in->tokens + (size_t)i] = 0;
            h[in->pos + (size_t)i] = 0;
            h[in->slot + (size_t)i] = -1;
            h[in->rows + (size_t)i] = i;
            h[in->q_start + (size_t)i] = i;
            h[in->q_len + (size_t)i] = 0;
            h[in->pos0 + (size_t)i] = 0;
            h[in->indptr + (size_t)i + 1] = (int32_t)used;
        }
    }
    BC_CUDA(cudaMemcpyAsync(c->in_d, c->in_h, (in->block_ids + used) * sizeof(int32_t),
                            cudaMemcpyHostToDevice, c->stream));
    if (k >= 0) {
        if (!c->graphs[k]) {
            BC_TRY(cuda_capture(c, k, size));
        }
        BC_CUDA(cudaGraphLaunch(c->graphs[k], c->stream));
    } else {
        BC_TRY(cuda_enqueue(c, b->n_tokens, n_runs, n_dec, b->n_outputs, max_q_len, decode));
    }
    c->last_n_out = b->n_outputs;
    if (c->logits_to_host && logits && b->n_outputs > 0) {
        size_t bytes = (size_t)b->n_outputs * (size_t)c->mc.n_vocab * sizeof(float);
        BC_CUDA(
            cudaMemcpyAsync(c->logits_h, c->logits_d, bytes, cudaMemcpyDeviceToHost, c->stream));
        BC_CUDA(cudaStreamSynchronize(c->stream));
        memcpy(logits, c->logits_h, bytes);
    }
    return 0;
}

static int cuda_forward(void *ctx, const struct engine_batch *b, float *logits)
{
    struct cuda_ctx *c = ctx;
    if (c->failed) {
        return -EIO;
    }
    if (b->n_tokens > c->cfg.max_batch_tokens || b->n_outputs > c->cfg.max_outputs) {
        return -EINVAL;
    }
    int err = cuda_forward_inner(c, b, logits);
    if (err == -EIO) {
        c->failed = true; /* a device error is sticky: stop here */
    }
    return err;
}

static int cuda_sync(void *ctx)
{
    struct cuda_ctx *c = ctx;
    if (c->failed) {
        return -EIO;
    }
    cudaError_t ce = cudaStreamSynchronize(c->stream);
    if (ce != cudaSuccess) {
        log_error("cuda: %s:%d: cudaStreamSynchronize: %s", __FILE__, __LINE__,
                  cudaGetErrorString(ce));
        c->failed = true;
        return -EIO;
    }
    return 0;
}

int engine_backend_cuda_sample(void *ctx, int32_t n_rows, const float *temperature,
                               const int32_t *top_k, const float *top_p, const uint64_t *seed,
                               const uint64_t *step, int32_t *tokens, int32_t n_top,
                               struct kern_logprob *logprobs)
{
    struct cuda_ctx *c = ctx;
    if (c->failed) {
        return -EIO;
    }
    if (n_rows <= 0 || n_rows > c->last_n_out || n_top < 0 || n_top > KERN_LOGPROBS_MAX) {
        return -EINVAL;
    }
    size_t O = (size_t)c->cfg.max_outputs, n = (size_t)n_rows;
    /* layout: seed [O], step [O] (8-byte aligned first), temperature [O], top_p [O], top_k [O],
     * tokens [O], logprobs [O, 1 + KERN_LOGPROBS_MAX] */
    uint8_t *h = c->samp_h, *d = c->samp_d;
    size_t o_seed = 0, o_step = O * 8, o_temp = 2 * O * 8, o_topp = o_temp + O * 4;
    size_t o_topk = o_topp + O * 4, o_tok = o_topk + O * 4, o_lp = o_tok + O * 4;
    size_t lp_bytes = n * (size_t)(1 + n_top) * sizeof(struct kern_logprob);
    memcpy(h + o_seed, seed, n * 8);
    memcpy(h + o_step, step, n * 8);
    memcpy(h + o_temp, temperature, n * 4);
    memcpy(h + o_topp, top_p, n * 4);
    memcpy(h + o_topk, top_k, n * 4);
    int err = 0;
    cudaError_t ce = cudaMemcpyAsync(d, h, o_tok, cudaMemcpyHostToDevice, c->stream);
    if (ce == cudaSuccess) {
        struct kern_sample_params p = { (const float *)(d + o_temp), (const int32_t *)(d + o_topk),
                                        (const float *)(d + o_topp), (const uint64_t *)(d + o_seed),
                                        (const uint64_t *)(d + o_step) };
        err = kern_cuda_sample(c->logits_d, n_rows, c->mc.n_vocab, &p, (int32_t *)(d + o_tok),
                               c->stream);
    }
    /* the logprobs of the tokens just drawn, read where the sampler left them */
    if (ce == cudaSuccess && !err && n_top > 0) {
        err = kern_cuda_logprobs(c->logits_d, n_rows, c->mc.n_vocab, (const int32_t *)(d + o_tok),
                                 n_top, (struct kern_logprob *)(d + o_lp), c->stream);
    }
    if (ce == cudaSuccess && !err) {
        ce = cudaMemcpyAsync(h + o_tok, d + o_tok, n * 4, cudaMemcpyDeviceToHost, c->stream);
    }
    if (ce == cudaSuccess && !err && n_top > 0) {
        ce = cudaMemcpyAsync(h + o_lp, d + o_lp, lp_bytes, cudaMemcpyDeviceToHost, c->stream);
    }
    if (ce == cudaSuccess && !err) {
        ce = cudaStreamSynchronize(c->stream);
    }
    if (ce != cudaSuccess || err) {
        if (ce != cudaSuccess) {
            log_error("cuda: %s:%d: sampling: %s", __FILE__, __LINE__, cudaGetErrorString(ce));
        }
        c->failed = true;
        return -EIO;
    }
    memcpy(tokens, h + o_tok, n * 4);
    if (n_top > 0) {
        memcpy(logprobs, h + o_lp, lp_bytes);
    }
    return 0;
}

const struct engine_backend_ops engine_backend_cuda_ops = {
    .name = "cuda",
    .init = cuda_init,
    .destroy = cuda_destroy,
    .forward = cuda_forward,
    .sync = cuda_sync,
};
