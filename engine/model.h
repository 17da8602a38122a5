/* model.h - LLaMA checkpoints: config.json, and weights from safetensors (single or sharded) or
 * PyTorch .bin zip archives (single or sharded, read by a restricted unpickler).
 *
 * Tensors are views of the files' bytes (mmap'ed, bit-identical to the file, little-endian,
 * row-major, contiguous); converting f16/bf16 to f32 is the backend's job at load. */
#ifndef ENGINE_MODEL_H
#define ENGINE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum model_dtype { MODEL_DTYPE_F32 = 0, MODEL_DTYPE_F16, MODEL_DTYPE_BF16 };

/* "F32", "F16", "BF16". */
const char *model_dtype_name(enum model_dtype dtype);

/* Bytes per element: 4, 2, 2. */
size_t model_dtype_size(enum model_dtype dtype);

/* How q/k rows are laid out for RoPE: Hugging Face rotates (i, i + head_dim/2); Meta's original
 * checkpoints and llama2.c rotate adjacent pairs (2i, 2i + 1). */
enum model_rope_layout { MODEL_ROPE_HALF_SPLIT = 0, MODEL_ROPE_INTERLEAVED };

/* A LLaMA architecture, as transformers' LlamaConfig reads it from config.json. Plain data. */
struct model_config {
    int32_t n_vocab;     /* vocab_size (default 32000) */
    int32_t dim;         /* hidden_size (4096) */
    int32_t n_ff;        /* intermediate_size (11008) */
    int32_t n_layers;    /* num_hidden_layers (32) */
    int32_t n_heads;     /* num_attention_heads (32) */
    int32_t n_kv_heads;  /* num_key_value_heads (defaults to n_heads) */
    int32_t head_dim;    /* head_dim (defaults to dim / n_heads) */
    int32_t max_pos;     /* max_position_embeddings (2048) */
    float rms_eps;       /* rms_norm_eps (1e-6) */
    float rope_theta;    /* rope_theta (10000) */
    bool tie_embeddings; /* tie_word_embeddings (false) */
    int32_t bos_id;      /* bos_token_id (1) */
    int32_t eos_id;      /* eos_token_id (2); the first one when config.json holds a list */
    int32_t pad_id;      /* pad_token_id, -1 when absent */
    enum model_rope_layout rope_layout; /* HALF_SPLIT for every HF directory */
    char torch_dtype[16];               /* torch_dtype as written ("bfloat16"), "" when absent */
};

/* Fills transformers' LlamaConfig defaults (the 7B shape). */
void model_config_default(struct model_config *cfg);

/* Parses config.json text over the defaults (model_config_default; *cfg's prior contents are
 * ignored, and it is left untouched on error). `name` prefixes errors. Rejects a model_type other
 * than "llama" (absent is accepted), a hidden_act other than "silu", non-positive sizes, sizes
 * that do not divide (dim % n_heads when head_dim is absent, n_heads % n_kv_heads), an odd
 * head_dim, rope_scaling (unsupported), rope_parameters with a rope_type other than "default"
 * (transformers 5 moves rope_theta there), attention_bias or mlp_bias true, token ids outside
 * the vocabulary. torch_dtype may also be spelled "dtype" (transformers >= 4.56).
 * Returns 0 or -EINVAL with errstr naming the field. Thread-safe. */
int model_config_parse(const char *json, size_t len, const char *name, struct model_config *cfg,
                       char *errstr, size_t errstr_len);

/* Reads and parses a config.json file. Same contract as model_config_parse, plus -ENOENT. */
int model_config_load(const char *path, struct model_config *cfg, char *errstr, size_t errstr_len);

#define MODEL_MAX_DIMS 4

/* One tensor of a weight set. Plain data, borrowed from the weight set. */
struct model_tensor {
    const char *name; /* e.g. "model.layers.0.self_attn.q_proj.weight" */
    enum model_dtype dtype;
    int n_dims;
    int64_t shape[MODEL_MAX_DIMS]; /* row-major, PyTorch order: [out, in] for a Linear */
    int64_t n_elems;
    const void *data; /* [n_elems] of dtype; borrowed, valid until model_weights_destroy */
    size_t n_bytes;
    const char *file; /* path of the file holding it */
};
/* `data` has no alignment guarantee beyond the file's own (safetensors data may start at any
 * byte; torch aligns storages to 64): read elements with memcpy or convert in bulk. */

struct model_weights;

/* Opens the weights of a Hugging Face directory, trying in order: model.safetensors,
 * model.safetensors.index.json (shards), pytorch_model.bin, pytorch_model.bin.index.json.
 * `weights_file` (may be NULL) names one file inside dir to use instead (for example
 * "model.f16.safetensors"); a name ending in ".index.json" is read as a shard index. Every file
 * is mmap'ed; each shard is opened once. Every error names the file and tensor: missing or
 * truncated files, bad headers, out-of-range or overlapping offsets, unknown dtypes, forbidden
 * pickle content, a tensor listed by an index but absent from its shard, a tensor in a shard
 * but not in the index, a tensor present twice.
 * Returns 0; -ENOENT (no weights, or a missing file); -EPROTO (a weight file or index is
 * malformed, inconsistent or forbidden); or another negative errno from opening a file (-EACCES,
 * -EISDIR, -EIO). Caller owns *out; free with model_weights_destroy. Thread-safe. */
int model_weights_open(const char *dir, const char *weights_file, struct model_weights **out,
                       char *errstr, size_t errstr_len);

/* Opens one weight file, safetensors or PyTorch zip (torch.save since torch 1.6), told apart by
 * content. Same contract as model_weights_open. */
int model_weights_open_file(const char *path, struct model_weights **out, char *errstr,
                            size_t errstr_len);

/* No-op on NULL. */
void model_weights_destroy(struct model_weights *w);

/* "safetensors" or "pytorch". */
const char *model_weights_format(const struct model_weights *w);

/* Number of tensors and tensor i (in file order, shard by shard; NULL when i >= count).
 * Thread-safe (read-only). */
size_t model_weights_count(const struct model_weights *w);
const struct model_tensor *model_weights_at(const struct model_weights *w, size_t i);

/* The tensor named `name`, or NULL. Thread-safe (read-only). */
const struct model_tensor *model_weights_find(const struct model_weights *w, const char *name);

/* Called once per problem found by model_check, with a message naming the tensor or field. */
typedef void (*model_problem_fn)(void *user, const char *msg);

/* Checks a weight set against a config: every tensor LLaMA needs is present with the shape the
 * config implies; lm_head.weight present unless tie_embeddings (when tied it may still be
 * present, with the embedding's shape); all weight tensors share one dtype, the one
 * cfg->torch_dtype names when it is set (else the embedding's); nothing unexpected is present
 * (model.layers.<i>.self_attn.rotary_emb.inv_freq buffers, which transformers < 4.31 saved, are
 * accepted whatever their dtype). Each problem is one call of `fn` naming the tensor (or the
 * field) with expected and found shape or dtype. Returns the number of problems (0 = complete
 * and consistent). `fn` may be NULL. Thread-safe (read-only). */
int model_check(const struct model_config *cfg, const struct model_weights *w, model_problem_fn fn,
                void *user);

/* A Hugging Face model directory, opened and checked. Plain data; owns its members. */
struct model {
    char *dir;
    struct model_config cfg;
    struct model_weights *weights;
};

/* Opens dir/config.json and the weights (see model_weights_open), then runs model_check; the
 * first problem becomes errstr. config.json's torch_dtype describes the default weight files, so
 * when `weights_file` names a file explicitly (say a float16 copy beside float32 weights) its
 * dtype only has to be consistent with itself. Returns 0, -ENOENT (config.json or weights
 * missing), -EINVAL (config.json invalid, or weights that do not fit it), -EPROTO (see
 * model_weights_open). Caller owns *out; free with model_destroy. Thread-safe. */
int model_open(const char *dir, const char *weights_file, struct model **out, char *errstr,
               size_t errstr_len);

/* No-op on NULL. */
void model_destroy(struct model *m);

#ifdef __cplusplus
}
#endif

#endif
