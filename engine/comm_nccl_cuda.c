/* comm_nccl_cuda.c - the NCCL communicator: one rank per GPU, collectives on device buffers,
 * enqueued on the rank's stream (built only with HAVE_CUDA and NCCL).
 *
 * NCCL has no barrier of its own; comm_barrier is a one-float all-reduce followed by a stream
 * synchronize, which is the usual substitute. Every NCCL and CUDA call is checked: a failure is
 * logged with file and line and returned as -EIO, never an abort. */
#include "common/log.h"
#include "common/xmalloc.h"
#include "engine/comm.h"
#include "engine/comm_impl.h"

#include <cuda_runtime.h>
#include <errno.h>
/* nccl.h declares a few functions as f() */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop
#include <stdlib.h>
#include <string.h>

#define COMM_NCCL_TRY(expr)                                             \
    do {                                                                \
        ncclResult_t comm_nccl_rc_ = (expr);                            \
        if (comm_nccl_rc_ != ncclSuccess) {                             \
            log_error("nccl: %s:%d: %s: %s", __FILE__, __LINE__, #expr, \
                      ncclGetErrorString(comm_nccl_rc_));               \
            return -EIO;                                                \
        }                                                               \
    } while (0)

#define COMM_CUDA_TRY(expr)                                             \
    do {                                                                \
        cudaError_t comm_cuda_rc_ = (expr);                             \
        if (comm_cuda_rc_ != cudaSuccess) {                             \
            log_error("cuda: %s:%d: %s: %s", __FILE__, __LINE__, #expr, \
                      cudaGetErrorString(comm_cuda_rc_));               \
            return -EIO;                                                \
        }                                                               \
    } while (0)

struct comm_nccl {
    struct comm base; /* first */
    ncclComm_t nccl;
    cudaStream_t stream;
    float *one_d; /* [1] the barrier's all-reduce operand */
};

_Static_assert(sizeof(ncclUniqueId) <= sizeof(((struct comm_nccl_id *)0)->bytes),
               "ncclUniqueId must fit struct comm_nccl_id");

int comm_nccl_id_create(struct comm_nccl_id *id)
{
    ncclUniqueId uid;
    COMM_NCCL_TRY(ncclGetUniqueId(&uid));
    memset(id, 0, sizeof(*id));
    memcpy(id->bytes, &uid, sizeof(uid));
    return 0;
}

static int comm_nccl_allreduce(struct comm *base, float *buf, size_t n)
{
    struct comm_nccl *c = (struct comm_nccl *)base;
    COMM_NCCL_TRY(ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, c->nccl, c->stream));
    return 0;
}

static int comm_nccl_broadcast(struct comm *base, void *buf, size_t n_bytes, int root)
{
    struct comm_nccl *c = (struct comm_nccl *)base;
    if (root < 0 || root >= base->size) {
        return -EINVAL;
    }
    COMM_NCCL_TRY(ncclBroadcast(buf, buf, n_bytes, ncclInt8, root, c->nccl, c->stream));
    return 0;
}

static int comm_nccl_barrier(struct comm *base)
{
    struct comm_nccl *c = (struct comm_nccl *)base;
    COMM_NCCL_TRY(ncclAllReduce(c->one_d, c->one_d, 1, ncclFloat32, ncclSum, c->nccl, c->stream));
    COMM_CUDA_TRY(cudaStreamSynchronize(c->stream));
    return 0;
}

static void comm_nccl_destroy(struct comm *base)
{
    struct comm_nccl *c = (struct comm_nccl *)base;
    if (c->nccl) {
        ncclCommDestroy(c->nccl);
    }
    if (c->one_d) {
        cudaFree(c->one_d);
    }
    free(c);
}

static const struct comm_vtbl comm_nccl_vtbl = {
    .name = "nccl",
    .allreduce_sum_f32 = comm_nccl_allreduce,
    .broadcast = comm_nccl_broadcast,
    .barrier = comm_nccl_barrier,
    .destroy = comm_nccl_destroy,
};

static int comm_nccl_init(struct comm_nccl *c, const struct comm_nccl_id *id)
{
    ncclUniqueId uid;
    memcpy(&uid, id->bytes, sizeof(uid));
    COMM_CUDA_TRY(cudaMalloc((void **)&c->one_d, sizeof(float)));
    COMM_CUDA_TRY(cudaMemset(c->one_d, 0, sizeof(float)));
    COMM_NCCL_TRY(ncclCommInitRank(&c->nccl, c->base.size, uid, c->base.rank));
    return 0;
}

int comm_nccl_create(const struct comm_nccl_id *id, int size, int rank, void *stream,
                     struct comm **out)
{
    if (size < 1 || rank < 0 || rank >= size) {
        return -EINVAL;
    }
    struct comm_nccl *c = xcalloc(1, sizeof(*c));
    c->base = (struct comm){ &comm_nccl_vtbl, rank, size };
    c->stream = (cudaStream_t)stream;
    int err = comm_nccl_init(c, id);
    if (err) {
        comm_nccl_destroy(&c->base);
        return err;
    }
    *out = &c->base;
    return 0;
}
