/* engine.c - opens a model on a backend and validates batches before they reach it. */
#include "engine/engine.h"

#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/backend.h"
#include "engine/llama2c.h"
#ifdef HAVE_CUDA
#include "engine/backend_cuda.h"

#include <cuda_runtime.h>
#endif

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct engine {
    struct engine_config cfg;
    struct model_config mc;
    const struct engine_backend_ops *ops;
    void *ctx;
    struct model *hf;        /* a Hugging Face directory, or */
    struct llama2c_file *l2; /* a llama2.c checkpoint */
    int32_t *last_pos;       /* [max_batch_tokens] per sequence, scratch for batch validation */
    struct engine_stats stats;
    void *dev_sampler; /* the CUDA context whose logits are sampled on the device, or NULL */
    char errstr[256];
};

int engine_backend_parse(const char *name, enum engine_backend_kind *out)
{
    static const char *const names[] = { "auto", "cpu", "cuda" };
    for (int i = 0; i < 3; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (enum engine_backend_kind)i;
            return 0;
        }
    }
    return -EINVAL;
}

int engine_device_parse(const char *name, struct engine_config *cfg)
{
    if (strcmp(name, "cpu") == 0 || strcmp(name, "auto") == 0 || strcmp(name, "cuda") == 0) {
        cfg->cuda_device = 0;
        cfg->tp_world = 1;
        return engine_backend_parse(name, &cfg->backend);
    }
    char *end = NULL;
    if (strncmp(name, "cuda:", 5) != 0 || name[5] < '0' || name[5] > '9') {
        return -EINVAL;
    }
    int devs[ENGINE_TP_MAX], n_devs = 0;
    const char *at = name + 5;
    for (;;) {
        if (*at < '0' || *at > '9' || n_devs == ENGINE_TP_MAX) {
            return -EINVAL;
        }
        long n = strtol(at, &end, 10);
        if (n > 1024) {
            return -EINVAL;
        }
        for (int i = 0; i < n_devs; i++) {
            if (devs[i] == (int)n) {
                return -EINVAL; /* a GPU twice in one group */
            }
        }
        devs[n_devs++] = (int)n;
        if (*end == '\0') {
            break;
        }
        if (*end != '+') {
            return -EINVAL;
        }
        at = end + 1;
    }
    cfg->backend = ENGINE_BACKEND_CUDA;
    cfg->cuda_device = devs[0];
    cfg->tp_world = n_devs;
    memcpy(cfg->tp_devices, devs, (size_t)n_devs * sizeof(int));
    return 0;
}

int32_t engine_kv_blocks_for_mib(const struct model_config *mc, int32_t kv_block_size,
                                 int32_t max_ctx, int64_t budget_mib, int32_t max_seqs)
{
    size_t block_bytes = 2u * (size_t)mc->n_layers * (size_t)kv_block_size *
                         (size_t)mc->n_kv_heads * (size_t)mc->head_dim * sizeof(float);
    int64_t want = budget_mib * 1024 * 1024 / (int64_t)block_bytes;
    int64_t cap = (int64_t)max_seqs * ((max_ctx + kv_block_size - 1) / kv_block_size);
    int64_t n = want < cap ? want : cap;
    return (int32_t)(n > INT32_MAX ? INT32_MAX : n);
}

int engine_cuda_device_count(void)
{
#ifdef HAVE_CUDA
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver or no device: not sticky */
        return 0;
    }
    return n;
#else
    return 0;
#endif
}

void engine_config_default(struct engine_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->backend = ENGINE_BACKEND_AUTO;
    cfg->n_threads = 0;
    cfg->max_batch_tokens = 512;
    cfg->max_outputs = 512;
    cfg->kv_block_size = 16;
    cfg->n_kv_blocks = 0;
    cfg->max_ctx = 0;
    cfg->cuda_device = 0;
    cfg->gpu_mem_fraction = 0.9f;
    cfg->tp_world = 1;
}

static const struct model_tensor *engine_find_hf(const void *user, const char *name)
{
    return model_weights_find(((const struct model *)user)->weights, name);
}

#ifdef HAVE_CUDA
/* The CUDA backend context that holds the logits: the engine's, or rank 0's under tensor
 * parallelism; NULL for other backends. */
static void *engine_cuda_ctx(const struct engine *e)
{
    if (e->ops == &engine_backend_cuda_ops) {
        return e->ctx;
    }
#ifdef HAVE_NCCL
    if (e->ops == &engine_backend_cuda_tp_ops) {
        return engine_backend_cuda_tp_rank0(e->ctx);
    }
#endif
    return NULL;
}
#endif

int engine_open(const char *path, const char *weights_file, const struct engine_config *cfg,
                struct engine **out, char *errstr, size_t errstr_len)
{
    struct engine *e = xcalloc(1, sizeof(*e));
    struct engine_weight_src src;
    int err;
    if (path_is_dir(path)) {
        err = model_open(path, weights_file, &e->hf, errstr, errstr_len);
        if (err) {
            goto fail;
        }
        e->mc = e->hf->cfg;
        src = (struct engine_weight_src){ &e->mc, engine_find_hf, e->hf };
    } else {
        err = llama2c_open(path, &e->l2, errstr, errstr_len);
        if (err) {
            goto fail;
        }
        e->mc = *llama2c_config(e->l2);
        src = (struct engine_weight_src){ &e->mc, llama2c_find, e->l2 };
    }
    e->cfg = *cfg;
    if (e->cfg.max_ctx <= 0) {
        e->cfg.max_ctx = e->mc.max_pos;
    } else if (e->cfg.max_ctx > e->mc.max_pos) {
        /* RoPE extends to any position, but the model never saw these: the caller asked */
        log_warn("context %d is beyond the %d positions %s was trained on", (int)e->cfg.max_ctx,
                 (int)e->mc.max_pos, path);
    }
    if (e->cfg.kv_block_size <= 0) {
        e->cfg.kv_block_size = 16;
    }
    /* CUDA when asked for (or auto) and a GPU is there; else the CPU, saying so once */
    e->ops = &engine_backend_cpu_ops;
    if (e->cfg.backend != ENGINE_BACKEND_CPU) {
#ifdef HAVE_CUDA
        int n_dev = engine_cuda_device_count();
        if (e->cfg.tp_world > 1 && n_dev > 0) {
            for (int i = 0; i < e->cfg.tp_world; i++) {
                if (e->cfg.tp_devices[i] >= n_dev) {
                    errstr_set(errstr, errstr_len,
                               "tensor parallelism over GPU %d, but this host has %d GPUs",
                               e->cfg.tp_devices[i], n_dev);
                    err = -ENODEV;
                    goto fail;
                }
            }
#ifdef HAVE_NCCL
            e->ops = &engine_backend_cuda_tp_ops;
#else
            errstr_set(errstr, errstr_len, "tensor parallelism needs a build with NCCL");
            err = -ENOTSUP;
            goto fail;
#endif
        } else if (n_dev > e->cfg.cuda_device) {
            e->ops = &engine_backend_cuda_ops;
        }
#endif
        if (e->ops == &engine_backend_cpu_ops) {
            log_warn("no CUDA device: falling back to the CPU backend");
        }
    }
    /* the CUDA backend sizes an unset pool from free device memory */
    if (e->cfg.n_kv_blocks <= 0 && e->ops == &engine_backend_cpu_ops) {
        e->cfg.n_kv_blocks =
            4 * ((e->cfg.max_ctx + e->cfg.kv_block_size - 1) / e->cfg.kv_block_size);
    }
    if (e->cfg.max_batch_tokens <= 0 || e->cfg.max_outputs <= 0) {
        errstr_set(errstr, errstr_len, "engine: max_batch_tokens and max_outputs must be > 0");
        err = -EINVAL;
        goto fail;
    }
    /* a sequence holds at least one of the batch's tokens, so n_seqs <= max_batch_tokens;
     * allocated here because engine_forward allocates nothing */
    e->last_pos = xcalloc((size_t)e->cfg.max_batch_tokens, sizeof(*e->last_pos));
    err = e->ops->init(&e->cfg, &src, &e->ctx, errstr, errstr_len);
    if (err) {
        goto fail;
    }
#ifdef HAVE_CUDA
    if (e->ops == &engine_backend_cuda_ops) {
        e->cfg.n_kv_blocks = engine_backend_cuda_kv_blocks(e->ctx);
    }
#ifdef HAVE_NCCL
    if (e->ops == &engine_backend_cuda_tp_ops) {
        e->cfg.n_kv_blocks = engine_backend_cuda_tp_kv_blocks(e->ctx);
    }
#endif
    const char *dev_sampling = getenv("JUDGED_DEVICE_SAMPLING");
    if (!(dev_sampling && strcmp(dev_sampling, "0") == 0)) {
        e->dev_sampler = engine_cuda_ctx(e);
    }
#endif
    *out = e;
    return 0;
fail:
    engine_destroy(e);
    return err;
}

void engine_destroy(struct engine *e)
{
    if (!e) {
        return;
    }
    if (e->ops && e->ctx) {
        e->ops->destroy(e->ctx);
    }
    model_destroy(e->hf);
    llama2c_close(e->l2);
    free(e->last_pos);
    free(e);
}

const struct model_config *engine_model_config(const struct engine *e)
{
    return &e->mc;
}

const struct engine_config *engine_get_config(const struct engine *e)
{
    return &e->cfg;
}

const char *engine_backend_name(const struct engine *e)
{
    return e->ops->name;
}

const char *engine_errstr(const struct engine *e)
{
    return e->errstr;
}

/* Every index the backend will follow is checked here, so a bad batch is an error, never an
 * out-of-bounds access. */
static int engine_batch_check(struct engine *e, const struct engine_batch *b)
{
    const struct engine_config *c = &e->cfg;
    if (b->n_tokens <= 0 || b->n_tokens > c->max_batch_tokens) {
        snprintf(e->errstr, sizeof(e->errstr), "batch of %" PRId32 " tokens (limit %" PRId32 ")",
                 b->n_tokens, c->max_batch_tokens);
        return -EINVAL;
    }
    if (b->n_outputs < 0 || b->n_outputs > c->max_outputs || b->n_outputs > b->n_tokens) {
        snprintf(e->errstr, sizeof(e->errstr), "%" PRId32 " outputs for %" PRId32 " tokens",
                 b->n_outputs, b->n_tokens);
        return -EINVAL;
    }
    if (b->n_seqs <= 0 || b->n_seqs > c->max_batch_tokens) {
        snprintf(e->errstr, sizeof(e->errstr), "batch of %" PRId32 " sequences (limit %" PRId32 ")",
                 b->n_seqs, c->max_batch_tokens);
        return -EINVAL;
    }
    for (int32_t s = 0; s < b->n_seqs; s++) {
        e->last_pos[s] = -1;
    }
    for (int32_t i = 0; i < b->n_tokens; i++) {
        int32_t s = b->seq[i], p = b->pos[i];
        if (b->tokens[i] < 0 || b->tokens[i] >= e->mc.n_vocab) {
            snprintf(e->errstr, sizeof(e->errstr),
                     "token %" PRId32 ": id %" PRId32 " outside the vocabulary", i, b->tokens[i]);
            return -EINVAL;
        }
        if (s < 0 || s >= b->n_seqs) {
            snprintf(e->errstr, sizeof(e->errstr),
                     "token %" PRId32 ": sequence %" PRId32 " out of range", i, s);
            return -EINVAL;
        }
        if (p < 0 || p >= c->max_ctx || p <= e->last_pos[s]) {
            snprintf(e->errstr, sizeof(e->errstr),
                     "token %" PRId32 ": position %" PRId32
                     " out of range or not increasing (context %" PRId32 ")",
                     i, p, c->max_ctx);
            return -EINVAL;
        }
        e->last_pos[s] = p;
        if (p / c->kv_block_size >= b->n_blocks[s]) {
            snprintf(e->errstr, sizeof(e->errstr),
                     "token %" PRId32 ": position %" PRId32 " beyond sequence %" PRId32
                     "'s %" PRId32 " blocks",
                     i, p, s, b->n_blocks[s]);
            return -EINVAL;
        }
    }
    for (int32_t s = 0; s < b->n_seqs; s++) {
        for (int32_t k = 0; k < b->n_blocks[s]; k++) {
            int32_t blk = b->block_tables[s][k];
            if (blk < 0 || blk >= c->n_kv_blocks) {
                snprintf(e->errstr, sizeof(e->errstr),
                         "sequence %" PRId32 ": block %" PRId32 " outside the pool of %" PRId32, s,
                         blk, c->n_kv_blocks);
                return -EINVAL;
            }
        }
    }
    for (int32_t o = 0; o < b->n_outputs; o++) {
        if (b->output_rows[o] < 0 || b->output_rows[o] >= b->n_tokens) {
            snprintf(e->errstr, sizeof(e->errstr),
                     "output %" PRId32 ": row %" PRId32 " out of range", o, b->output_rows[o]);
            return -EINVAL;
        }
    }
    return 0;
}

static double engine_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool engine_samples_on_device(const struct engine *e)
{
    return e->dev_sampler != NULL;
}

int engine_sample_device(struct engine *e, int32_t n_rows, const float *temperature,
                         const int32_t *top_k, const float *top_p, const uint64_t *seed,
                         const uint64_t *step, int32_t *tokens, int32_t n_top,
                         struct kern_logprob *logprobs)
{
    e->errstr[0] = '\0';
    if (!e->dev_sampler) {
        snprintf(e->errstr, sizeof(e->errstr), "the %s backend does not sample on a device",
                 e->ops->name);
        return -ENOTSUP;
    }
#ifdef HAVE_CUDA
    int err = engine_backend_cuda_sample(e->dev_sampler, n_rows, temperature, top_k, top_p, seed,
                                         step, tokens, n_top, logprobs);
    if (err) {
        snprintf(e->errstr, sizeof(e->errstr), "device sampling of %" PRId32 " rows failed (%d)",
                 n_rows, err);
    }
    return err;
#else
    (void)n_rows, (void)temperature, (void)top_k, (void)top_p, (void)seed, (void)step, (void)tokens;
    (void)n_top, (void)logprobs;
    return -ENOTSUP;
#endif
}

int engine_forward(struct engine *e, const struct engine_batch *b, float *logits)
{
    e->errstr[0] = '\0';
    int err = engine_batch_check(e, b);
    if (err) {
        return err;
    }
    if (!logits && b->n_outputs > 0 && !e->dev_sampler) {
        snprintf(e->errstr, sizeof(e->errstr), "no logits buffer for %" PRId32 " outputs",
                 b->n_outputs);
        return -EINVAL;
    }
    double t0 = engine_now_s();
    err = e->ops->forward(e->ctx, b, logits);
    if (e->ops->sync && !err) {
        err = e->ops->sync(e->ctx);
    }
    e->stats.forward_s += engine_now_s() - t0;
    e->stats.n_forward++;
    e->stats.n_tokens += (uint64_t)b->n_tokens;
    return err;
}

void engine_stats_get(const struct engine *e, struct engine_stats *out)
{
    *out = e->stats;
}
