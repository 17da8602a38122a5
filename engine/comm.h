/* comm.h - the collectives tensor parallelism needs (all-reduce sum, broadcast, barrier) behind
 * one small interface with two implementations: threads of one process sharing host memory (the
 * CPU communicator, which lets the tensor-parallel logic run in CI), and NCCL over device memory
 * (built only with HAVE_CUDA where nccl.h is found: HAVE_NCCL).
 *
 * Every rank of a group must make the same sequence of collective calls with the same sizes; a
 * rank that skips one leaves the others waiting. One struct comm belongs to one rank's thread. */
#ifndef ENGINE_COMM_H
#define ENGINE_COMM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct comm;

/* This rank (0 .. size-1) and the group's size. */
int comm_rank(const struct comm *c);
int comm_size(const struct comm *c);

/* The implementation's name: "cpu" or "nccl". */
const char *comm_name(const struct comm *c);

/* buf [n] := the element-wise sum of every rank's buf [n]. Host memory for the CPU communicator
 * (the sum runs in rank order, so every rank gets the same bits and a rerun gives the same
 * result); device memory for NCCL (enqueued on the communicator's stream). Returns 0, -EINVAL
 * when the ranks disagree on n, -ENOMEM, or -EIO (NCCL). Owning rank's thread only. */
int comm_allreduce_sum_f32(struct comm *c, float *buf, size_t n);

/* buf [n_bytes] := root's buf on every rank. Same memory rules and returns as the all-reduce. */
int comm_broadcast(struct comm *c, void *buf, size_t n_bytes, int root);

/* Returns once every rank has entered. For NCCL, also waits for the rank's stream. Returns 0 or
 * -EIO. */
int comm_barrier(struct comm *c);

/* Frees this rank's communicator. No-op on NULL. Not a collective. */
void comm_destroy(struct comm *c);

/* ---- CPU: ranks are threads of this process ---- */

/* What the ranks of one CPU group share. */
struct comm_cpu_group;

/* Creates a group of `size` ranks (1 .. COMM_CPU_MAX_RANKS). Returns 0 or -EINVAL, -ENOMEM.
 * Caller owns *out; destroy it after every rank's comm is destroyed. Thread-safe. */
#define COMM_CPU_MAX_RANKS 64
int comm_cpu_group_create(int size, struct comm_cpu_group **out);

/* No-op on NULL. */
void comm_cpu_group_destroy(struct comm_cpu_group *g);

/* Rank `rank`'s communicator in group g (each rank once). Returns 0 or -EINVAL. Caller owns
 * *out; free with comm_destroy. Thread-safe. */
int comm_cpu_create(struct comm_cpu_group *g, int rank, struct comm **out);

#ifdef HAVE_NCCL
/* ---- NCCL: one rank per GPU (engine/comm_nccl_cuda.c) ---- */

/* A group's identity, made once (by rank 0) and handed to every rank. Plain data. */
struct comm_nccl_id {
    char bytes[128]; /* an ncclUniqueId */
};

/* Makes a fresh group id. Returns 0 or -EIO. Thread-safe. */
int comm_nccl_id_create(struct comm_nccl_id *id);

/* Joins group `id` as `rank` of `size` on the current CUDA device; collectives are enqueued on
 * `stream` (a cudaStream_t; NULL = the default stream). Blocks until all ranks have joined, so
 * ranks must call it from different threads (or processes). Returns 0 or -EIO. Caller owns
 * *out; free with comm_destroy on the same device. */
int comm_nccl_create(const struct comm_nccl_id *id, int size, int rank, void *stream,
                     struct comm **out);
#endif

#ifdef __cplusplus
}
#endif

#endif
