/* llama2c.c - reads llama2.c's legacy checkpoint format (see llama2c.h). */
#include "engine/llama2c.h"

#include "common/util.h"
#include "common/xmalloc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 9 per layer + embed + final norm + optional classifier */
struct llama2c_file {
    char *path;
    struct file_map map;
    struct model_config cfg;
    size_t n_tensors;
    struct model_tensor *tensors;
    char **names;
};

static void llama2c_add(struct llama2c_file *f, char *name, const float *data, int64_t rows,
                        int64_t cols)
{
    struct model_tensor *t = &f->tensors[f->n_tensors];
    f->names[f->n_tensors] = name;
    f->n_tensors++;
    t->name = name;
    t->dtype = MODEL_DTYPE_F32;
    t->n_dims = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->n_elems = rows * (cols ? cols : 1);
    t->data = data;
    t->n_bytes = (size_t)t->n_elems * sizeof(float);
    t->file = f->path;
}

int llama2c_open(const char *path, struct llama2c_file **out, char *errstr, size_t errstr_len)
{
    struct llama2c_file *f = xcalloc(1, sizeof(*f));
    f->path = xstrdup(path);
    int err = file_map_open(path, &f->map, errstr, errstr_len);
    if (err) {
        goto fail;
    }
    err = -EINVAL;
    if (f->map.size < 28) {
        errstr_set(errstr, errstr_len, "%s: too short for a llama2.c header (%zu bytes)", path,
                   f->map.size);
        goto fail;
    }
    int32_t h[7];
    for (int i = 0; i < 7; i++) {
        h[i] = (int32_t)load_le32(f->map.data + 4 * i);
    }
    bool shared = h[5] > 0;
    int64_t dim = h[0], ff = h[1], n_layers = h[2], n_heads = h[3], n_kv = h[4];
    int64_t vocab = shared ? h[5] : -(int64_t)h[5], seq_len = h[6];
    if (dim <= 0 || ff <= 0 || n_layers <= 0 || n_heads <= 0 || n_kv <= 0 || vocab <= 0 ||
        seq_len <= 0 || dim > (1 << 16) || ff > (1 << 18) || n_layers > 1024 || vocab > (1 << 22) ||
        seq_len > (1 << 22) || dim % n_heads || n_heads % n_kv || (dim / n_heads) % 2) {
        errstr_set(errstr, errstr_len,
                   "%s: implausible llama2.c header (dim %d, hidden %d, layers %d, heads %d, "
                   "kv heads %d, vocab %d, seq_len %d)",
                   path, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
        goto fail;
    }
    int64_t head_dim = dim / n_heads, kv_dim = n_kv * head_dim;
    int64_t per_layer = 2 * dim + dim * dim * 2 + dim * kv_dim * 2 + 3 * dim * ff;
    int64_t body = vocab * dim + n_layers * per_layer + dim;
    int64_t freq = seq_len * head_dim; /* freq_cis_real + imag, seq_len * head_dim / 2 each */
    int64_t n_floats = ((int64_t)f->map.size - 28) / 4;
    int64_t need = body + freq + (shared ? 0 : vocab * dim);
    if (((int64_t)f->map.size - 28) % 4 != 0 || n_floats != need) {
        errstr_set(errstr, errstr_len,
                   "%s: size %zu bytes does not match the header (expected %lld)", path,
                   f->map.size, (long long)(28 + 4 * need));
        goto fail;
    }
    struct model_config *c = &f->cfg;
    model_config_default(c);
    c->n_vocab = (int32_t)vocab;
    c->dim = (int32_t)dim;
    c->n_ff = (int32_t)ff;
    c->n_layers = (int32_t)n_layers;
    c->n_heads = (int32_t)n_heads;
    c->n_kv_heads = (int32_t)n_kv;
    c->head_dim = (int32_t)head_dim;
    c->max_pos = (int32_t)seq_len;
    c->rms_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->tie_embeddings = shared;
    c->bos_id = 1;
    c->eos_id = 2;
    c->rope_layout = MODEL_ROPE_INTERLEAVED;
    snprintf(c->torch_dtype, sizeof(c->torch_dtype), "float32");

    size_t max_tensors = 3 + 9 * (size_t)n_layers;
    f->tensors = xcalloc(max_tensors, sizeof(*f->tensors));
    f->names = xcalloc(max_tensors, sizeof(*f->names));
    /* The file is mapped at a page boundary and the header is 28 bytes: floats are aligned. */
    const float *p = (const float *)(const void *)(f->map.data + 28);
    llama2c_add(f, xstrdup("model.embed_tokens.weight"), p, vocab, dim);
    p += vocab * dim;
    /* llama2.c stores each kind of weight for all layers together */
    static const struct {
        const char *suffix;
        int rows, cols; /* 0 dim, 1 kv_dim, 2 ff; cols -1 for a vector */
    } order[] = {
        { "input_layernorm.weight", 0, -1 }, { "self_attn.q_proj.weight", 0, 0 },
        { "self_attn.k_proj.weight", 1, 0 }, { "self_attn.v_proj.weight", 1, 0 },
        { "self_attn.o_proj.weight", 0, 0 }, { "post_attention_layernorm.weight", 0, -1 },
        { "mlp.gate_proj.weight", 2, 0 },    { "mlp.down_proj.weight", 0, 2 },
        { "mlp.up_proj.weight", 2, 0 },
    };
    int64_t sizes[3] = { dim, kv_dim, ff };
    for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
        int64_t rows = sizes[order[k].rows];
        int64_t cols = order[k].cols < 0 ? 0 : sizes[order[k].cols];
        for (int64_t l = 0; l < n_layers; l++) {
            llama2c_add(f, xasprintf("model.layers.%lld.%s", (long long)l, order[k].suffix), p,
                        rows, cols);
            p += rows * (cols ? cols : 1);
        }
    }
    llama2c_add(f, xstrdup("model.norm.weight"), p, dim, 0);
    p += dim + freq;
    if (!shared) {
        llama2c_add(f, xstrdup("lm_head.weight"), p, vocab, dim);
    }
    *out = f;
    return 0;
fail:
    llama2c_close(f);
    return err;
}

void llama2c_close(struct llama2c_file *f)
{
    if (!f) {
        return;
    }
    for (size_t i = 0; i < f->n_tensors; i++) {
        free(f->names[i]);
    }
    free(f->names);
    free(f->tensors);
    file_map_close(&f->map);
    free(f->path);
    free(f);
}

const struct model_config *llama2c_config(const struct llama2c_file *f)
{
    return &f->cfg;
}

const struct model_tensor *llama2c_find(const void *user, const char *name)
{
    const struct llama2c_file *f = user;
    for (size_t i = 0; i < f->n_tensors; i++) {
        if (strcmp(f->tensors[i].name, name) == 0) {
            return &f->tensors[i];
        }
    }
    return NULL;
}
