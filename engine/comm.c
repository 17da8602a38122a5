/* comm.c - dispatch of the communicator interface to its implementation (comm_impl.h). */
#include "engine/comm.h"

#include "engine/comm_impl.h"

int comm_rank(const struct comm *c)
{
    return c->rank;
}

int comm_size(const struct comm *c)
{
    return c->size;
}

const char *comm_name(const struct comm *c)
{
    return c->vt->name;
}

int comm_allreduce_sum_f32(struct comm *c, float *buf, size_t n)
{
    return c->vt->allreduce_sum_f32(c, buf, n);
}

int comm_broadcast(struct comm *c, void *buf, size_t n_bytes, int root)
{
    return c->vt->broadcast(c, buf, n_bytes, root);
}

int comm_barrier(struct comm *c)
{
    return c->vt->barrier(c);
}

void comm_destroy(struct comm *c)
{
    if (c) {
        c->vt->destroy(c);
    }
}
