/* backend_tp_nccl_cuda.c - one engine over several GPUs by tensor parallelism (engine/tp.h's
 * split), for a model that does not fit one GPU: rank i runs engine/backend_cuda.c on
 * cfg->tp_devices[i] with its slice of every layer, and the ranks all-reduce over NCCL twice per
 * layer (built only with HAVE_CUDA and NCCL).
 *
 * Rank 0 runs on the engine's thread; ranks 1.. each have a thread of their own, because NCCL's
 * collectives block until every rank has enqueued them. A forward pass hands the batch to every
 * rank and waits for all of them; the LM head is replicated, so rank 0's logits (and its device
 * sampling and logprobs) are the engine's. The KV pool has the same number of blocks on every
 * rank: the least any rank could fit. */
#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/backend_cuda.h"

#include <cuda_runtime.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tp_cuda;

struct tp_cuda_rank {
    struct tp_cuda *g;
    int rank;
    pthread_t thread;
    bool started;
    struct comm *comm;
    void *ctx; /* backend_cuda context */
    int err;   /* of its last init or forward */
};

struct tp_cuda {
    int world;
    struct engine_config cfg;
    const struct engine_weight_src *src;
    struct comm_nccl_id id;
    struct tp_cuda_rank ranks[ENGINE_TP_MAX];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t gen; /* work posted: generation */
    int n_done;   /* ranks 1.. done with the current generation */
    bool stop;    /* the rank threads exit */
    const struct engine_batch *batch;
    char errstr[256];
};

/* Rank r's part of init: its device, its communicator (a collective), its backend. */
static int tp_cuda_rank_init(struct tp_cuda_rank *rk)
{
    struct tp_cuda *g = rk->g;
    struct engine_config cfg = g->cfg;
    cfg.cuda_device = g->cfg.tp_devices[rk->rank];
    cfg.tp_world = 1;
    char err[256] = "";
    int rc = cudaSetDevice(cfg.cuda_device) == cudaSuccess ? 0 : -EIO; /* NCCL's buffers too */
    if (rc == 0) {
        rc = comm_nccl_create(&g->id, g->world, rk->rank, NULL, &rk->comm);
    }
    if (rc == 0) {
        rc = engine_backend_cuda_init_tp(&cfg, g->src, rk->comm, &rk->ctx, err, sizeof(err));
    } else {
        snprintf(err, sizeof(err), "NCCL communicator of %d ranks on GPU %d", g->world,
                 cfg.cuda_device);
    }
    if (rc != 0) {
        pthread_mutex_lock(&g->mu);
        if (!g->errstr[0]) {
            snprintf(g->errstr, sizeof(g->errstr), "tensor-parallel rank %d (GPU %d): %s", rk->rank,
                     cfg.cuda_device, err);
        }
        pthread_mutex_unlock(&g->mu);
    }
    return rc;
}

static void *tp_cuda_rank_main(void *arg)
{
    struct tp_cuda_rank *rk = arg;
    struct tp_cuda *g = rk->g;
    rk->err = tp_cuda_rank_init(rk);
    uint64_t seen = 0;
    pthread_mutex_lock(&g->mu);
    g->n_done++;
    pthread_cond_broadcast(&g->cv);
    for (;;) {
        while (!g->stop && g->gen == seen) {
            pthread_cond_wait(&g->cv, &g->mu);
        }
        if (g->stop) {
            break;
        }
        seen = g->gen;
        const struct engine_batch *b = g->batch;
        pthread_mutex_unlock(&g->mu);
        int err = rk->err ? rk->err : engine_backend_cuda_ops.forward(rk->ctx, b, NULL);
        if (!err && engine_backend_cuda_ops.sync) {
            err = engine_backend_cuda_ops.sync(rk->ctx);
        }
        pthread_mutex_lock(&g->mu);
        rk->err = err;
        g->n_done++;
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

/* Waits until ranks 1.. have finished the current generation. */
static void tp_cuda_wait(struct tp_cuda *g)
{
    pthread_mutex_lock(&g->mu);
    while (g->n_done < g->world - 1) {
        pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
}

static void tp_cuda_destroy(void *ctx)
{
    struct tp_cuda *g = ctx;
    if (!g) {
        return;
    }
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    for (int r = 0; r < g->world; r++) {
        struct tp_cuda_rank *rk = &g->ranks[r];
        if (rk->started) {
            pthread_join(rk->thread, NULL);
        }
        if (rk->ctx) {
            engine_backend_cuda_ops.destroy(rk->ctx);
        }
        if (rk->comm) {
            comm_destroy(rk->comm);
        }
    }
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

static int tp_cuda_init(const struct engine_config *cfg, const struct engine_weight_src *src,
                        void **out, char *errstr, size_t errstr_len)
{
    if (cfg->tp_world < 2 || cfg->tp_world > ENGINE_TP_MAX) {
        errstr_set(errstr, errstr_len, "tensor parallelism over %d GPUs", cfg->tp_world);
        return -EINVAL;
    }
    struct tp_cuda *g = xcalloc(1, sizeof(*g));
    g->world = cfg->tp_world;
    g->cfg = *cfg;
    g->src = src;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    int err = comm_nccl_id_create(&g->id);
    if (err) {
        errstr_set(errstr, errstr_len, "cannot create an NCCL unique id");
        tp_cuda_destroy(g);
        return err;
    }
    for (int r = 0; r < g->world; r++) {
        g->ranks[r].g = g;
        g->ranks[r].rank = r;
    }
    /* ranks 1.. initialize on their threads while rank 0 does here: NCCL's init is a collective */
    for (int r = 1; r < g->world; r++) {
        if (pthread_create(&g->ranks[r].thread, NULL, tp_cuda_rank_main, &g->ranks[r]) != 0) {
            errstr_set(errstr, errstr_len, "cannot start the thread of rank %d", r);
            /* ranks already started would wait for this one in NCCL's init forever */
            log_error("cuda: tensor parallel: cannot start rank %d's thread; aborting", r);
            abort();
        }
        g->ranks[r].started = true;
    }
    g->ranks[0].err = tp_cuda_rank_init(&g->ranks[0]);
    tp_cuda_wait(g);
    err = 0;
    for (int r = 0; r < g->world && !err; r++) {
        err = g->ranks[r].err;
    }
    if (err) {
        errstr_set(errstr, errstr_len, "%s", g->errstr[0] ? g->errstr : "tensor parallel init");
        tp_cuda_destroy(g);
        return err;
    }
    /* one pool size on every rank: the least any of them fits */
    int32_t blocks = engine_backend_cuda_kv_blocks(g->ranks[0].ctx);
    for (int r = 1; r < g->world; r++) {
        int32_t b = engine_backend_cuda_kv_blocks(g->ranks[r].ctx);
        blocks = b < blocks ? b : blocks;
    }
    g->cfg.n_kv_blocks = blocks;
    log_info("cuda: tensor parallel over %d GPUs, KV pool %d blocks", g->world, (int)blocks);
    *out = g;
    return 0;
}

static int tp_cuda_forward(void *ctx, const struct engine_batch *b, float *logits)
{
    struct tp_cuda *g = ctx;
    pthread_mutex_lock(&g->mu);
    g->batch = b;
    g->n_done = 0;
    g->gen++;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    int err = engine_backend_cuda_ops.forward(g->ranks[0].ctx, b, logits);
    if (!err && engine_backend_cuda_ops.sync) {
        err = engine_backend_cuda_ops.sync(g->ranks[0].ctx);
    }
    tp_cuda_wait(g);
    for (int r = 1; r < g->world && !err; r++) {
        err = g->ranks[r].err;
    }
    return err;
}

const struct engine_backend_ops engine_backend_cuda_tp_ops = {
    .name = "cuda-tp",
    .init = tp_cuda_init,
    .destroy = tp_cuda_destroy,
    .forward = tp_cuda_forward,
    .sync = NULL, /* forward waits for every rank */
};

void *engine_backend_cuda_tp_rank0(void *ctx)
{
    return ((struct tp_cuda *)ctx)->ranks[0].ctx;
}

int32_t engine_backend_cuda_tp_kv_blocks(const void *ctx)
{
    return ((const struct tp_cuda *)ctx)->cfg.n_kv_blocks;
}
