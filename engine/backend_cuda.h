/* backend_cuda.h - what engine/backend_cuda.c offers beyond the ops table (built only with
 * HAVE_CUDA; plain C, no CUDA types). Internal to engine/ and the GPU tests and benchmark. */
#ifndef ENGINE_BACKEND_CUDA_H
#define ENGINE_BACKEND_CUDA_H

#include "engine/backend.h"
#include "engine/comm.h"
#include "kernels/cpu/twin.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ops table: bf16 weights and KV cache on cfg->cuda_device, cuBLAS GEMMs with fp32
 * accumulation, the kernels of kernels/cuda/, CUDA graphs for decode steps at bucketed batch
 * sizes (set JUDGED_CUDA_GRAPHS=0 to run decode steps eagerly). With cfg->n_kv_blocks 0 the KV
 * pool takes what cfg->gpu_mem_fraction of the device leaves after weights and scratch. When
 * src->find is NULL the weights are random (Philox, seed 1), made on the device: the
 * benchmark's model. */
extern const struct engine_backend_ops engine_backend_cuda_ops;

/* As engine_backend_cuda_ops.init, for rank comm_rank(comm) of a tensor-parallel group (the split
 * of engine/tp.h); collectives run on the legacy default stream, which orders them with the
 * backend's blocking stream (make the NCCL communicator with stream NULL). Decode graphs are
 * off under tensor parallelism. */
int engine_backend_cuda_init_tp(const struct engine_config *cfg,
                                const struct engine_weight_src *src, struct comm *comm, void **ctx,
                                char *errstr, size_t errstr_len);

#ifdef HAVE_NCCL
/* One engine over cfg->tp_world GPUs cfg->tp_devices (engine/backend_tp_nccl_cuda.c): a rank of
 * the backend above per GPU, all-reducing over NCCL. */
extern const struct engine_backend_ops engine_backend_cuda_tp_ops;

/* Rank 0's backend context (its logits are the engine's: device sampling and logprobs), and the
 * KV pool's block count, the same on every rank. */
void *engine_backend_cuda_tp_rank0(void *ctx);
int32_t engine_backend_cuda_tp_kv_blocks(const void *ctx);
#endif

/* The KV pool's block count in force (resolved from memory when cfg->n_kv_blocks was 0). */
int32_t engine_backend_cuda_kv_blocks(const void *ctx);

/* Samples one token per logits row of the last forward pass on the device
 * (kernels/cuda/sample.cu) without copying the logits back: n_rows <= that pass's n_outputs;
 * parameters are host arrays [n_rows] (see struct kern_sample_params). Writes tokens [n_rows] and,
 * when n_top > 0, their logprobs (kernels/cuda/logprobs.cu, the contract of kern_cpu_logprobs)
 * into logprobs [n_rows, 1 + n_top], in the same staging round trip. Returns 0, -EINVAL or -EIO.
 * Engine thread only. */
int engine_backend_cuda_sample(void *ctx, int32_t n_rows, const float *temperature,
                               const int32_t *top_k, const float *top_p, const uint64_t *seed,
                               const uint64_t *step, int32_t *tokens, int32_t n_top,
                               struct kern_logprob *logprobs);

/* Skips the copy of logits to the host in later forward passes (when only device sampling
 * reads them); `logits` may then be NULL. */
void engine_backend_cuda_set_logits_to_host(void *ctx, bool on);

#ifdef __cplusplus
}
#endif

#endif
