/* llama2c.h - llama2.c checkpoints (the stories260K.bin layout): a header of 7 int32
 * (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
 * means an unshared classifier follows), then fp32 arrays in llama2.c's order. q/k rows are in
 * Meta's interleaved RoPE layout. Tensors are exposed under Hugging Face names. */
#ifndef ENGINE_LLAMA2C_H
#define ENGINE_LLAMA2C_H

#include "engine/model.h"

#include <stddef.h>

struct llama2c_file;

/* Maps and validates `path` (sizes positive and consistent, file exactly as long as the header
 * implies, allowing the freq_cis arrays that older exports carry). Returns 0, -ENOENT or -EINVAL
 * with errstr naming the file. Caller owns *out; free with llama2c_close. */
int llama2c_open(const char *path, struct llama2c_file **out, char *errstr, size_t errstr_len);

/* No-op on NULL. */
void llama2c_close(struct llama2c_file *f);

/* The architecture (rope_layout INTERLEAVED, tie_embeddings per the header, bos 1, eos 2,
 * rms_eps 1e-5, rope_theta 10000 as llama2.c uses). Borrowed. */
const struct model_config *llama2c_config(const struct llama2c_file *f);

/* The tensor with a Hugging Face name, or NULL. `user` is the llama2c_file. Borrowed. */
const struct model_tensor *llama2c_find(const void *user, const char *name);

#endif
