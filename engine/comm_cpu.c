/* comm_cpu.c - the CPU communicator: the ranks are threads of one process, and a collective is a
 * rendezvous on a barrier over pointers each rank publishes.
 *
 * All-reduce: every rank publishes its buffer and length; after a barrier, rank r sums its
 * 1/size share of the elements over the ranks in rank order into a shared result; after a second
 * barrier every rank copies the result back; a third keeps the result alive until all have
 * copied. Summing in rank order (never "whoever arrives first") makes the result the same bits on
 * every rank and on every run, which the tensor-parallel tests rely on.
 *
 * The only synchronization is a pthread barrier (a rendezvous, not a lock: no data is guarded by
 * it beyond the hand-over between phases, which the barrier's memory ordering covers). */
#include "common/xmalloc.h"
#include "engine/comm.h"
#include "engine/comm_impl.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct comm_cpu_group {
    int size;
    pthread_barrier_t barrier;
    void *slot[COMM_CPU_MAX_RANKS];    /* each rank's published buffer */
    size_t n_slot[COMM_CPU_MAX_RANKS]; /* and its length */
    float *result;                     /* [cap] the all-reduce sum, grown by rank 0 */
    size_t cap;
    int status; /* set by rank 0 before the first barrier of a collective */
};

struct comm_cpu {
    struct comm base; /* first: struct comm * converts to struct comm_cpu * */
    struct comm_cpu_group *g;
};

int comm_cpu_group_create(int size, struct comm_cpu_group **out)
{
    if (size < 1 || size > COMM_CPU_MAX_RANKS) {
        return -EINVAL;
    }
    struct comm_cpu_group *g = xcalloc(1, sizeof(*g));
    g->size = size;
    if (pthread_barrier_init(&g->barrier, NULL, (unsigned)size) != 0) {
        free(g);
        return -ENOMEM;
    }
    *out = g;
    return 0;
}

void comm_cpu_group_destroy(struct comm_cpu_group *g)
{
    if (!g) {
        return;
    }
    pthread_barrier_destroy(&g->barrier);
    free(g->result);
    free(g);
}

static void comm_cpu_wait(struct comm_cpu_group *g)
{
    pthread_barrier_wait(&g->barrier);
}

/* Publishes (p, n) and meets the other ranks; returns 0 when every rank published the same n. */
static int comm_cpu_publish(struct comm_cpu *c, void *p, size_t n)
{
    struct comm_cpu_group *g = c->g;
    g->slot[c->base.rank] = p;
    g->n_slot[c->base.rank] = n;
    comm_cpu_wait(g);
    for (int r = 1; r < g->size; r++) {
        if (g->n_slot[r] != g->n_slot[0]) {
            return -EINVAL; /* every rank sees the same slots, so all return this */
        }
    }
    return 0;
}

static int comm_cpu_allreduce(struct comm *base, float *buf, size_t n)
{
    struct comm_cpu *c = (struct comm_cpu *)base;
    struct comm_cpu_group *g = c->g;
    if (g->size == 1) {
        return 0;
    }
    if (c->base.rank == 0) {
        /* the previous collective's last barrier guarantees nobody still reads g->result */
        g->status = 0;
        if (n > g->cap) {
            float *p = realloc(g->result, n * sizeof(float));
            if (p) {
                g->result = p;
                g->cap = n;
            } else {
                g->status = -ENOMEM;
            }
        }
    }
    int err = comm_cpu_publish(c, buf, n);
    if (!err) {
        err = g->status;
    }
    if (err) {
        comm_cpu_wait(g); /* the others return too; keep the barrier count in step */
        return err;
    }
    size_t lo = n * (size_t)c->base.rank / (size_t)g->size;
    size_t hi = n * (size_t)(c->base.rank + 1) / (size_t)g->size;
    for (size_t i = lo; i < hi; i++) {
        float s = ((const float *)g->slot[0])[i];
        for (int r = 1; r < g->size; r++) {
            s += ((const float *)g->slot[r])[i];
        }
        g->result[i] = s;
    }
    comm_cpu_wait(g);
    memcpy(buf, g->result, n * sizeof(float));
    comm_cpu_wait(g);
    return 0;
}

static int comm_cpu_broadcast(struct comm *base, void *buf, size_t n_bytes, int root)
{
    struct comm_cpu *c = (struct comm_cpu *)base;
    struct comm_cpu_group *g = c->g;
    if (root < 0 || root >= g->size) {
        return -EINVAL;
    }
    int err = comm_cpu_publish(c, buf, n_bytes);
    if (!err && c->base.rank != root && n_bytes) {
        memcpy(buf, g->slot[root], n_bytes);
    }
    comm_cpu_wait(g); /* root's buffer stays untouched until every rank has copied it */
    return err;
}

static int comm_cpu_barrier(struct comm *base)
{
    comm_cpu_wait(((struct comm_cpu *)base)->g);
    return 0;
}

static void comm_cpu_destroy(struct comm *base)
{
    free(base);
}

static const struct comm_vtbl comm_cpu_vtbl = {
    .name = "cpu",
    .allreduce_sum_f32 = comm_cpu_allreduce,
    .broadcast = comm_cpu_broadcast,
    .barrier = comm_cpu_barrier,
    .destroy = comm_cpu_destroy,
};

int comm_cpu_create(struct comm_cpu_group *g, int rank, struct comm **out)
{
    if (!g || rank < 0 || rank >= g->size) {
        return -EINVAL;
    }
    struct comm_cpu *c = xcalloc(1, sizeof(*c));
    c->base = (struct comm){ &comm_cpu_vtbl, rank, g->size };
    c->g = g;
    *out = &c->base;
    return 0;
}
