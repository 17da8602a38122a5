/* tp.h - tensor parallelism (Megatron-LM, Shoeybi et al. 2019) for a model that does not fit one
 * device: each of `world` ranks holds a slice of every layer and all-reduces twice per layer.
 *
 * The split: q/k/v and gate/up are cut by output rows (whole attention heads and a contiguous
 * range of MLP columns per rank); o_proj and down_proj by input columns to match, so each rank's
 * product is a partial sum of the full output, and one all-reduce after attention and one after
 * the MLP complete it. Each rank keeps the KV heads its query heads read (a KV head is repeated
 * on several ranks when there are fewer KV heads than ranks, as in MQA). Embedding, norms and the
 * LM head are replicated.
 *
 * tp_rank_* is one rank over any communicator (engine/comm.h); tp_group_* runs every rank of a
 * CPU group on threads of this process, which is how the split is tested against the single-rank
 * engine in CI. The CUDA backend uses tp_shard_plan and tp_tensor_slice_f32 for the same split. */
#ifndef ENGINE_TP_H
#define ENGINE_TP_H

#include "engine/comm.h"
#include "engine/engine.h"
#include "engine/model.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What rank `rank` of `world` holds. Plain data. */
struct tp_shard {
    int rank, world;
    int32_t head0, n_heads;       /* query heads [head0, head0 + n_heads) */
    int32_t kv_head0, n_kv_heads; /* the KV heads those queries read */
    int32_t ff0, n_ff;            /* MLP intermediate columns [ff0, ff0 + n_ff) */
};

/* Plans rank `rank`'s slice. The query heads must divide evenly over the ranks; the MLP columns
 * are spread as evenly as they go (n_ff need not divide). Returns 0 or -EINVAL with errstr.
 * Thread-safe. */
int tp_shard_plan(const struct model_config *m, int rank, int world, struct tp_shard *out,
                  char *errstr, size_t errstr_len);

/* Copies rows [row0, row0 + n_rows) x columns [col0, col0 + n_cols) of a 2-D tensor (a 1-D
 * tensor is one row) into dst [n_rows, n_cols] as f32, converting f16/bf16 exactly. Returns 0, or
 * -EINVAL when the window is outside the tensor. Thread-safe. */
int tp_tensor_slice_f32(const struct model_tensor *t, int64_t row0, int64_t n_rows, int64_t col0,
                        int64_t n_cols, float *dst);

/* ---- one rank (CPU compute, fp32) ---- */

struct tp_rank;

/* Opens a model as engine_open does (Hugging Face directory or llama2.c file) and keeps rank
 * comm_rank(comm)'s slice as f32, with its own KV storage for cfg's pool (block size, block
 * count and context resolved as engine_open resolves them). `comm` is borrowed and must outlive
 * the rank. Not a collective. Returns 0, -ENOENT, -EINVAL, -EPROTO or -ENOMEM with errstr.
 * Caller owns *out; free with tp_rank_destroy. */
int tp_rank_open(const char *path, const char *weights_file, const struct engine_config *cfg,
                 struct comm *comm, struct tp_rank **out, char *errstr, size_t errstr_len);

/* No-op on NULL. */
void tp_rank_destroy(struct tp_rank *r);

/* The model's architecture and the options in force. Borrowed. */
const struct model_config *tp_rank_model_config(const struct tp_rank *r);
const struct engine_config *tp_rank_config(const struct tp_rank *r);

/* This rank's slice. Borrowed. */
const struct tp_shard *tp_rank_shard(const struct tp_rank *r);

/* One forward pass of an engine_forward batch, which the caller has validated (tp_batch_check).
 * A collective: every rank calls it with the same batch. Writes logits [n_outputs, n_vocab]
 * when `logits` is not NULL (the LM head is replicated, so any rank may). Returns 0, or the
 * communicator's error (the same on every rank). The rank's thread only. */
int tp_rank_forward(struct tp_rank *r, const struct engine_batch *b, float *logits);

/* Checks every index the forward pass follows against the model and cfg, as engine_forward
 * does. Returns 0 or -EINVAL with errstr. Thread-safe. */
int tp_batch_check(const struct model_config *m, const struct engine_config *cfg,
                   const struct engine_batch *b, char *errstr, size_t errstr_len);

/* ---- every rank of a CPU group, on threads of this process ---- */

struct tp_group;

/* Opens `world` ranks over the CPU communicator, each with a thread of its own (rank 0 runs on
 * the caller's). Returns 0 or a negative errno with errstr. Caller owns *out; free with
 * tp_group_destroy. */
int tp_group_open(const char *path, const char *weights_file, const struct engine_config *cfg,
                  int world, struct tp_group **out, char *errstr, size_t errstr_len);

/* No-op on NULL. */
void tp_group_destroy(struct tp_group *g);

/* Rank i (i < world). Borrowed. */
const struct tp_rank *tp_group_rank(const struct tp_group *g, int i);

/* Validates the batch, runs it on every rank and writes rank 0's logits [n_outputs, n_vocab].
 * Returns 0 or -EINVAL with errstr, or a communicator error. One caller thread at a time. */
int tp_group_forward(struct tp_group *g, const struct engine_batch *b, float *logits, char *errstr,
                     size_t errstr_len);

#ifdef __cplusplus
}
#endif

#endif
