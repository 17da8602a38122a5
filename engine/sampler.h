/* sampler.h - next-token choice from logits: greedy, or temperature then top-k then top-p then a
 * draw, in the order transformers applies its warpers. The draw for step n of a request depends
 * only on (seed, n) and the logits, so a sequence's output never depends on what it was batched
 * with, or on whether it was preempted and recomputed. */
#ifndef ENGINE_SAMPLER_H
#define ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Plain data. temperature < 1e-4 means greedy (as JudgeLM's scripts decide); top_k 0 and
 * top_p 1 disable those filters. */
struct sampler_params {
    float temperature;
    int32_t top_k;
    float top_p;
    uint64_t seed;
};

/* Greedy decoding. */
void sampler_params_greedy(struct sampler_params *p);

/* JudgeLM's setting: temperature 0.2, top-k 50 (transformers' default), top-p off. */
void sampler_params_judgelm(struct sampler_params *p, uint64_t seed);

/* Checks ranges: temperature in [0, 100], top_k >= 0, top_p in (0, 1]. Returns 0 or -EINVAL. */
int sampler_params_check(const struct sampler_params *p);

/* Scratch for one thread's sampling, sized for a vocabulary. */
struct sampler_scratch;

/* Returns NULL on out-of-memory. Free with sampler_scratch_destroy. */
struct sampler_scratch *sampler_scratch_create(int32_t n_vocab);
void sampler_scratch_destroy(struct sampler_scratch *s);

/* Chooses the token for step `step` (0 for the first generated token) from logits [n_vocab].
 * Greedy picks the first maximum. Allocates nothing. Thread-safe with a scratch per thread. */
int32_t sampler_sample(const struct sampler_params *p, uint64_t step, const float *logits,
                       int32_t n_vocab, struct sampler_scratch *scratch);

/* The uniform draw in [0, 1) used for (seed, step); exposed for tests. */
double sampler_uniform(uint64_t seed, uint64_t step);

#ifdef __cplusplus
}
#endif

#endif
