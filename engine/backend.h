/* backend.h - the ops table every engine backend implements [ggml_backend_i]. Internal to
 * engine/: the public API is engine.h. */
#ifndef ENGINE_BACKEND_H
#define ENGINE_BACKEND_H

#include "engine/engine.h"
#include "engine/model.h"

#include <stdbool.h>
#include <stddef.h>

/* Where the weights come from: the config and a lookup of tensors by Hugging Face name
 * ("model.layers.3.mlp.up_proj.weight"). lm_head.weight may be absent when tied. */
struct engine_weight_src {
    const struct model_config *cfg;
    const struct model_tensor *(*find)(const void *user, const char *name);
    const void *user;
};

struct engine_backend_ops {
    const char *name;
    /* Creates the backend context: loads the weights and allocates the KV pool and scratch for
     * cfg's limits. Returns 0 or a negative errno with errstr. */
    int (*init)(const struct engine_config *cfg, const struct engine_weight_src *src, void **ctx,
                char *errstr, size_t errstr_len);
    void (*destroy)(void *ctx);
    /* Runs a validated batch; logits [n_outputs, n_vocab]. */
    int (*forward)(void *ctx, const struct engine_batch *b, float *logits);
    /* Waits for queued device work; NULL when forward is synchronous (CPU). */
    int (*sync)(void *ctx);
};

extern const struct engine_backend_ops engine_backend_cpu_ops;

#endif
