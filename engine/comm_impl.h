/* comm_impl.h - what the communicator implementations share (internal to engine/comm*.c). */
#ifndef ENGINE_COMM_IMPL_H
#define ENGINE_COMM_IMPL_H

#include "engine/comm.h"

struct comm_vtbl {
    const char *name;
    int (*allreduce_sum_f32)(struct comm *c, float *buf, size_t n);
    int (*broadcast)(struct comm *c, void *buf, size_t n_bytes, int root);
    int (*barrier)(struct comm *c);
    void (*destroy)(struct comm *c);
};

/* The head of every implementation's communicator. */
struct comm {
    const struct comm_vtbl *vt;
    int rank;
    int size;
};

#endif
