/* threadpool.h - a fixed pool of worker threads that runs one parallel loop at a time.
 *
 * The engine runs every phase of a forward pass (GEMM slices, attention, element-wise work)
 * through one pool, with OpenBLAS itself single-threaded, so the two never compete for cores.
 * The calling thread takes part in each loop. */
#ifndef COMMON_THREADPOOL_H
#define COMMON_THREADPOOL_H

#include <stddef.h>

struct threadpool;

/* Runs task i of n_tasks on worker `worker` (0 = the caller, < threadpool_size). */
typedef void (*threadpool_task_fn)(void *ctx, size_t i, int worker);

/* Starts n_threads - 1 workers (n_threads <= 0: one per online CPU). Returns 0 or -EAGAIN.
 * Caller owns *out; free with threadpool_destroy. */
int threadpool_create(int n_threads, struct threadpool **out);

/* Joins the workers. No-op on NULL. Not while a loop runs. */
void threadpool_destroy(struct threadpool *p);

/* Threads taking part in a loop, the caller included. */
int threadpool_size(const struct threadpool *p);

/* Runs fn(ctx, i, worker) for every i in [0, n_tasks), tasks handed out dynamically, and returns
 * when all are done. One loop at a time: call from the owning thread only. */
void threadpool_run(struct threadpool *p, size_t n_tasks, threadpool_task_fn fn, void *ctx);

#endif
