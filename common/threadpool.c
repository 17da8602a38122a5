/* threadpool.c - persistent workers, one loop at a time (see threadpool.h).
 *
 * A loop is published by bumping an atomic generation; workers spin on it for a while, then
 * sleep on `start` (the only lock, `mu`, guards just the sleeper count and the condition
 * variable). Tasks are claimed with an atomic counter; the caller spins until every worker has
 * reported back. */
#include "threadpool.h"

#include "xmalloc.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

/* Spin this many rounds (tens of microseconds) waiting for work or completion before sleeping or
 * yielding: a forward pass runs hundreds of short loops and a condition-variable wake-up costs
 * tens of microseconds, but long spins starve other threads when cores are oversubscribed. */
#define THREADPOOL_SPIN 4000

struct threadpool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t start;
    /* the current loop; fn/ctx/n_tasks are written before generation is released */
    atomic_ulong generation;
    atomic_bool stopping;
    threadpool_task_fn fn;
    void *ctx;
    size_t n_tasks;
    atomic_size_t next;   /* next task index to hand out */
    atomic_int n_pending; /* workers still inside the current loop */
    int n_sleeping;       /* workers blocked on `start`, under mu */
};

struct threadpool_worker_arg {
    struct threadpool *pool;
    int worker;
};

static inline void threadpool_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void threadpool_drain(struct threadpool *p, int worker)
{
    for (;;) {
        size_t i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= p->n_tasks) {
            return;
        }
        p->fn(p->ctx, i, worker);
    }
}

static void *threadpool_main(void *arg_)
{
    struct threadpool_worker_arg *arg = arg_;
    struct threadpool *p = arg->pool;
    int worker = arg->worker;
    free(arg);
    unsigned long seen = 0;
    for (;;) {
        unsigned long gen;
        int spins = 0;
        /* acquire: pairs with the release in threadpool_run, making fn/ctx/n_tasks visible */
        while ((gen = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
               !atomic_load(&p->stopping)) {
            if (++spins < THREADPOOL_SPIN) {
                threadpool_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            p->n_sleeping++;
            while (atomic_load_explicit(&p->generation, memory_order_acquire) == seen &&
                   !atomic_load(&p->stopping)) {
                pthread_cond_wait(&p->start, &p->mu);
            }
            p->n_sleeping--;
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load(&p->stopping)) {
            break;
        }
        seen = gen;
        threadpool_drain(p, worker);
        /* release: the caller's acquire load of n_pending sees this worker's results */
        atomic_fetch_sub_explicit(&p->n_pending, 1, memory_order_release);
    }
    return NULL;
}

int threadpool_create(int n_threads, struct threadpool **out)
{
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    struct threadpool *p = xcalloc(1, sizeof(*p));
    p->n_threads = n_threads;
    p->threads = xcalloc((size_t)n_threads, sizeof(*p->threads));
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->stopping, false);
    atomic_init(&p->next, 0);
    atomic_init(&p->n_pending, 0);
    for (int i = 1; i < n_threads; i++) {
        struct threadpool_worker_arg *arg = xmalloc(sizeof(*arg));
        arg->pool = p;
        arg->worker = i;
        if (pthread_create(&p->threads[i], NULL, threadpool_main, arg) != 0) {
            free(arg);
            p->n_threads = i;
            threadpool_destroy(p);
            return -EAGAIN;
        }
    }
    *out = p;
    return 0;
}

void threadpool_destroy(struct threadpool *p)
{
    if (!p) {
        return;
    }
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stopping, true);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++) {
        pthread_join(p->threads[i], NULL);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start);
    free(p->threads);
    free(p);
}

int threadpool_size(const struct threadpool *p)
{
    return p->n_threads;
}

void threadpool_run(struct threadpool *p, size_t n_tasks, threadpool_task_fn fn, void *ctx)
{
    if (n_tasks == 0) {
        return;
    }
    if (p->n_threads == 1 || n_tasks == 1) {
        for (size_t i = 0; i < n_tasks; i++) {
            fn(ctx, i, 0);
        }
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->n_pending, p->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_mutex_lock(&p->mu);
    if (p->n_sleeping > 0) {
        pthread_cond_broadcast(&p->start);
    }
    pthread_mutex_unlock(&p->mu);
    threadpool_drain(p, 0);
    int spins = 0;
    while (atomic_load_explicit(&p->n_pending, memory_order_acquire) > 0) {
        if (++spins < THREADPOOL_SPIN) {
            threadpool_relax();
        } else {
            sched_yield();
        }
    }
}
