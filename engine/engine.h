/* engine.h - one model on one device: weights loaded once, a paged KV cache allocated once, and
 * a forward pass over a flattened batch of tokens from many sequences.
 *
 * A batch mixes prefill chunks of any length and single decode tokens. Each token carries its
 * sequence and position; the engine writes its K/V into the sequence's blocks and attends over
 * positions 0..pos of that sequence. Which blocks a sequence owns is the caller's business (the
 * scheduler's block manager); the engine only reads the block tables. */
#ifndef ENGINE_ENGINE_H
#define ENGINE_ENGINE_H

#include "engine/model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum engine_backend_kind { ENGINE_BACKEND_AUTO = 0, ENGINE_BACKEND_CPU, ENGINE_BACKEND_CUDA };

/* Parses "auto", "cpu" or "cuda". Returns 0 or -EINVAL. */
int engine_backend_parse(const char *name, enum engine_backend_kind *out);

struct engine_config;

/* Parses a device: "cpu", "auto", "cuda" (the first GPU), "cuda:N", or "cuda:N+M[+...]" (one
 * engine over several GPUs by tensor parallelism, engine/tp.h: at most ENGINE_TP_MAX distinct
 * GPUs), setting cfg->backend, cfg->cuda_device (the first) and cfg->tp_world/tp_devices.
 * Returns 0 or -EINVAL. */
int engine_device_parse(const char *name, struct engine_config *cfg);

/* CUDA devices usable by this build: 0 without CUDA, without a driver, or without a GPU. */
int engine_cuda_device_count(void);

#define ENGINE_TP_MAX 8 /* GPUs in one tensor-parallel engine */

/* Engine options. Plain data; fill with engine_config_default first. */
struct engine_config {
    enum engine_backend_kind backend; /* AUTO or CUDA: CUDA when built and a GPU is present,
                                       * else the CPU (one WARN line says so) */
    int n_threads;                    /* CPU threads, 0 = one per online CPU */
    int32_t max_batch_tokens;         /* most tokens in one engine_forward (default 512) */
    int32_t max_outputs;              /* most logits rows in one engine_forward (default 512) */
    int32_t kv_block_size;            /* tokens per KV block (default 16) */
    int32_t n_kv_blocks;              /* blocks in the pool; 0 = 4 full contexts' worth */
    int32_t max_ctx; /* longest sequence; 0 = the model's max_position_embeddings */
    int cuda_device; /* the GPU for backend CUDA (default 0) */
    /* CUDA: the share of the device's memory the engine may hold (weights, scratch and KV
     * pool); with n_kv_blocks 0 the KV pool takes what is left of it (default 0.9) */
    float gpu_mem_fraction;
    /* CUDA: tensor parallelism over tp_world GPUs tp_devices[0..tp_world) (NCCL); 1 = off */
    int tp_world;
    int tp_devices[ENGINE_TP_MAX];
};

void engine_config_default(struct engine_config *cfg);

/* One forward pass's input. Plain data, borrowed for the duration of engine_forward.
 * Tokens of one sequence must appear in increasing position order, and a sequence's positions
 * before the first one in this batch must already be in its KV blocks. */
struct engine_batch {
    int32_t n_tokens;
    const int32_t *tokens; /* [n_tokens] token ids */
    const int32_t *pos;    /* [n_tokens] position of each token within its sequence */
    const int32_t *seq;    /* [n_tokens] index into block_tables */
    int32_t n_seqs;
    const int32_t *const *block_tables; /* [n_seqs] -> block ids; position p of sequence s lives
                                         * in block_tables[s][p / kv_block_size] */
    const int32_t *n_blocks;            /* [n_seqs] length of each block table */
    int32_t n_outputs;
    const int32_t *output_rows; /* [n_outputs] token indices whose logits are wanted */
};

struct engine;

/* KV blocks that budget_mib of fp32 K/V holds for a model (the CPU backend's pool), capped at
 * max_seqs full contexts of max_ctx tokens, so a small model does not get a pool it can never
 * fill. Thread-safe. */
int32_t engine_kv_blocks_for_mib(const struct model_config *mc, int32_t kv_block_size,
                                 int32_t max_ctx, int64_t budget_mib, int32_t max_seqs);

/* Opens a model: a Hugging Face directory (see model_open; `weights_file` may pick one file) or
 * a llama2.c checkpoint file (stories260K.bin layout). Loads the weights (f16/bf16 converted to
 * f32 once on the CPU backend) and allocates the KV pool and all scratch memory.
 * Returns 0, -ENOENT, -EINVAL, -EPROTO, -ENOMEM or -ENODEV with errstr.
 * Caller owns *out; free with engine_destroy. */
int engine_open(const char *path, const char *weights_file, const struct engine_config *cfg,
                struct engine **out, char *errstr, size_t errstr_len);

/* No-op on NULL. */
void engine_destroy(struct engine *e);

/* The model's architecture. Borrowed, valid until engine_destroy. */
const struct model_config *engine_model_config(const struct engine *e);

/* The options in force (defaults resolved). Borrowed. */
const struct engine_config *engine_get_config(const struct engine *e);

/* "cpu" or "cuda". */
const char *engine_backend_name(const struct engine *e);

/* Runs the batch and writes logits [n_outputs, n_vocab] (fp32) to `logits`. Allocates nothing.
 * Returns 0, or -EINVAL for a malformed batch (token, position, sequence or block out of range,
 * more than max_batch_tokens tokens or sequences) with the reason in engine_errstr. Engine
 * thread only. */
int engine_forward(struct engine *e, const struct engine_batch *b, float *logits);

/* True when the backend samples on its device (the CUDA backend, unless the environment sets
 * JUDGED_DEVICE_SAMPLING=0 when the engine is opened). engine_forward may then be given NULL
 * logits, and engine_sample_device picks one token per output row of the last pass with the
 * contract of kern_cpu_sample (kernels/cpu/twin.h: Philox draws per seed and step, batch
 * invariant) without copying the logits back. Engine thread only. */
bool engine_samples_on_device(const struct engine *e);

struct kern_logprob;

/* Parameters are host arrays [n_rows], n_rows <= the last pass's n_outputs; writes tokens
 * [n_rows] and, when n_top > 0, their log-probabilities computed on the device too
 * (kern_cpu_logprobs's contract: the chosen token, then the n_top most likely) into logprobs
 * [n_rows, 1 + n_top]. Returns 0, -ENOTSUP without device sampling, -EINVAL for a bad n_rows
 * or n_top, or -EIO after a device error (sticky, as in engine_forward). Engine thread only. */
int engine_sample_device(struct engine *e, int32_t n_rows, const float *temperature,
                         const int32_t *top_k, const float *top_p, const uint64_t *seed,
                         const uint64_t *step, int32_t *tokens, int32_t n_top,
                         struct kern_logprob *logprobs);

/* Counters of the forward passes run so far. Plain data. */
struct engine_stats {
    uint64_t n_forward; /* engine_forward calls that ran */
    uint64_t n_tokens;  /* tokens they processed */
    double forward_s;   /* wall time inside them, seconds */
};

/* Fills *out. Engine thread only. */
void engine_stats_get(const struct engine *e, struct engine_stats *out);

/* The last error's message. Borrowed, valid until the next call on e. */
const char *engine_errstr(const struct engine *e);

#ifdef __cplusplus
}
#endif

#endif
