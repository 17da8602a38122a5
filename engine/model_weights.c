/* model_weights.c - weight sets: which files of a Hugging Face directory hold the weights
 * (single file or shards listed by an index), the name -> tensor table, the check of a weight
 * set against config.json, and model_open, which ties config and weights together. */
#include "common/json.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/model.h"
#include "engine/model_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum weights_format { WEIGHTS_FORMAT_NONE = 0, WEIGHTS_FORMAT_SAFETENSORS, WEIGHTS_FORMAT_TORCH };

struct model_weights {
    enum weights_format format;
    size_t n_files;
    char **paths;          /* [n_files]; tensors' `file` points here */
    struct file_map *maps; /* [n_files] */
    struct model_tensor_vec tensors;
    uint32_t *slots; /* [n_slots] open addressing: tensor index + 1, 0 = empty */
    size_t n_slots;  /* a power of two, at least twice the tensor count */
};

const char *model_dtype_name(enum model_dtype dtype)
{
    switch (dtype) {
    case MODEL_DTYPE_F32:
        return "F32";
    case MODEL_DTYPE_F16:
        return "F16";
    case MODEL_DTYPE_BF16:
        return "BF16";
    }
    return "?";
}

size_t model_dtype_size(enum model_dtype dtype)
{
    return dtype == MODEL_DTYPE_F32 ? 4 : 2;
}

int model_dtype_parse(const char *name, enum model_dtype *out)
{
    if (strcmp(name, "F32") == 0) {
        *out = MODEL_DTYPE_F32;
    } else if (strcmp(name, "F16") == 0) {
        *out = MODEL_DTYPE_F16;
    } else if (strcmp(name, "BF16") == 0) {
        *out = MODEL_DTYPE_BF16;
    } else {
        return -EINVAL;
    }
    return 0;
}

struct model_tensor *model_tensor_vec_push(struct model_tensor_vec *v)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 64;
        v->items = xrealloc(v->items, v->cap * sizeof(*v->items));
    }
    struct model_tensor *t = &v->items[v->n++];
    memset(t, 0, sizeof(*t));
    return t;
}

void model_tensor_vec_deinit(struct model_tensor_vec *v)
{
    for (size_t i = 0; i < v->n; i++) {
        free((char *)v->items[i].name);
    }
    free(v->items);
    memset(v, 0, sizeof(*v));
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    }
    return h;
}

/* Fills the name table; a name present twice is an error naming both files. */
static int weights_index(struct model_weights *w, char *errstr, size_t errstr_len)
{
    size_t n = 16;
    while (n < 2 * w->tensors.n) {
        n *= 2;
    }
    free(w->slots);
    w->slots = xcalloc(n, sizeof(*w->slots));
    w->n_slots = n;
    if (w->tensors.n >= UINT32_MAX) {
        errstr_set(errstr, errstr_len, "%s: too many tensors", w->paths[0]);
        return -EPROTO;
    }
    for (size_t i = 0; i < w->tensors.n; i++) {
        const struct model_tensor *t = &w->tensors.items[i];
        size_t k = (size_t)name_hash(t->name) & (n - 1);
        while (w->slots[k] != 0) {
            const struct model_tensor *o = &w->tensors.items[w->slots[k] - 1];
            if (strcmp(o->name, t->name) == 0) {
                errstr_set(errstr, errstr_len, "%s: tensor '%s' appears twice (also in %s)",
                           t->file, t->name, o->file);
                return -EPROTO;
            }
            k = (k + 1) & (n - 1);
        }
        w->slots[k] = (uint32_t)(i + 1);
    }
    return 0;
}

/* Maps one file and appends its tensors, telling the format apart by content. */
static int weights_add_file(struct model_weights *w, const char *path, char *errstr,
                            size_t errstr_len)
{
    w->paths = xrealloc(w->paths, (w->n_files + 1) * sizeof(*w->paths));
    w->maps = xrealloc(w->maps, (w->n_files + 1) * sizeof(*w->maps));
    char *owned = xstrdup(path);
    struct file_map *m = &w->maps[w->n_files];
    w->paths[w->n_files] = owned;
    int err = file_map_open(path, m, errstr, errstr_len);
    if (err) {
        free(owned);
        return err;
    }
    w->n_files++;

    enum weights_format format = WEIGHTS_FORMAT_SAFETENSORS;
    if (m->size >= 4 && m->data[0] == 'P' && m->data[1] == 'K' &&
        (m->data[2] == 3 || m->data[2] == 5)) {
        format = WEIGHTS_FORMAT_TORCH;
    } else if (m->size >= 2 && m->data[0] == 0x80 && m->data[1] >= 2 && m->data[1] <= 5) {
        errstr_set(errstr, errstr_len,
                   "%s: a bare pickle (torch.save before torch 1.6, or not torch) is not "
                   "supported; re-save it with a current torch or as safetensors",
                   owned);
        return -EPROTO;
    }
    if (w->format != WEIGHTS_FORMAT_NONE && w->format != format) {
        errstr_set(errstr, errstr_len, "%s: mixes safetensors and PyTorch files", owned);
        return -EPROTO;
    }
    w->format = format;
    if (format == WEIGHTS_FORMAT_TORCH) {
        return model_torch_parse(m->data, m->size, owned, &w->tensors, errstr, errstr_len);
    }
    return model_safetensors_parse(m->data, m->size, owned, &w->tensors, errstr, errstr_len);
}

static int shard_name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A shard named by an index must be a plain file name inside the directory. */
static bool shard_name_ok(const char *name)
{
    return name[0] != '\0' && strchr(name, '/') == NULL && strcmp(name, ".") != 0 &&
           strcmp(name, "..") != 0;
}

/* Opens the shards an index's weight_map names (each once, in name order) and checks that
 * the index and the shards agree tensor for tensor. */
static int weights_open_index(struct model_weights *w, const char *dir, const char *index_path,
                              char *errstr, size_t errstr_len)
{
    const char **shards = NULL;
    size_t n_shards = 0;
    int err = -EPROTO;
    if (!path_is_file(index_path)) {
        errstr_set(errstr, errstr_len, "%s: no such file", index_path);
        return -ENOENT;
    }
    json_t *root = json_load_path(index_path, errstr, errstr_len);
    if (!root) {
        return -EPROTO;
    }
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map) || json_object_size(map) == 0) {
        errstr_set(errstr, errstr_len, "%s: field 'weight_map': expected a non-empty object",
                   index_path);
        goto fail;
    }
    shards = xcalloc(json_object_size(map), sizeof(*shards));
    const char *name;
    json_t *v;
    json_object_foreach(map, name, v)
    {
        if (!json_is_string(v) || !shard_name_ok(json_string_value(v)) ||
            strlen(json_string_value(v)) != json_string_length(v)) {
            errstr_set(errstr, errstr_len,
                       "%s: field 'weight_map': tensor '%s' must map to a file name in the "
                       "directory",
                       index_path, name);
            goto fail;
        }
        shards[n_shards++] = json_string_value(v);
    }
    qsort(shards, n_shards, sizeof(*shards), shard_name_cmp);
    size_t n_unique = 0;
    for (size_t i = 0; i < n_shards; i++) {
        if (n_unique == 0 || strcmp(shards[n_unique - 1], shards[i]) != 0) {
            shards[n_unique++] = shards[i];
        }
    }
    n_shards = n_unique;

    const size_t first_file = w->n_files;
    for (size_t i = 0; i < n_shards; i++) {
        char *path = path_join(dir, shards[i]);
        err = weights_add_file(w, path, errstr, errstr_len);
        free(path);
        if (err) {
            goto fail;
        }
    }
    if ((err = weights_index(w, errstr, errstr_len)) != 0) {
        goto fail;
    }
    err = -EPROTO;
    json_object_foreach(map, name, v)
    {
        const struct model_tensor *t = model_weights_find(w, name);
        const char **shard = bsearch(&(const char *){ json_string_value(v) }, shards, n_shards,
                                     sizeof(*shards), shard_name_cmp);
        const char *want = w->paths[first_file + (size_t)(shard - shards)];
        if (!t) {
            errstr_set(errstr, errstr_len, "%s: tensor '%s' listed by %s is missing", want, name,
                       index_path);
            goto fail;
        }
        if (t->file != want) {
            errstr_set(errstr, errstr_len, "%s: tensor '%s' is here, but %s lists it in %s",
                       t->file, name, index_path, want);
            goto fail;
        }
    }
    for (size_t i = 0; i < w->tensors.n; i++) {
        const struct model_tensor *t = &w->tensors.items[i];
        if (!json_object_get(map, t->name)) {
            errstr_set(errstr, errstr_len, "%s: tensor '%s' is not listed in %s", t->file, t->name,
                       index_path);
            goto fail;
        }
    }
    err = 0;

fail:
    free(shards);
    json_decref(root);
    return err;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int model_weights_open(const char *dir, const char *weights_file, struct model_weights **out,
                       char *errstr, size_t errstr_len)
{
    static const char *const candidates[] = {
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    };
    *out = NULL;
    const char *chosen = weights_file;
    char *path = NULL;
    if (!chosen) {
        for (size_t i = 0; i < ARRAY_LEN(candidates) && !chosen; i++) {
            path = path_join(dir, candidates[i]);
            if (path_is_file(path)) {
                chosen = candidates[i];
            }
            free(path);
            path = NULL;
        }
        if (!chosen) {
            errstr_set(errstr, errstr_len,
                       "%s: no weights (tried model.safetensors, model.safetensors.index.json, "
                       "pytorch_model.bin, pytorch_model.bin.index.json)",
                       dir);
            return -ENOENT;
        }
    }
    path = path_join(dir, chosen);
    if (!ends_with(chosen, ".index.json")) {
        int err = model_weights_open_file(path, out, errstr, errstr_len);
        free(path);
        return err;
    }
    struct model_weights *w = xcalloc(1, sizeof(*w));
    int err = weights_open_index(w, dir, path, errstr, errstr_len);
    free(path);
    if (err) {
        model_weights_destroy(w);
        return err;
    }
    *out = w;
    return 0;
}

int model_weights_open_file(const char *path, struct model_weights **out, char *errstr,
                            size_t errstr_len)
{
    *out = NULL;
    struct model_weights *w = xcalloc(1, sizeof(*w));
    int err = weights_add_file(w, path, errstr, errstr_len);
    if (!err) {
        err = weights_index(w, errstr, errstr_len);
    }
    if (err) {
        model_weights_destroy(w);
        return err;
    }
    *out = w;
    return 0;
}

void model_weights_destroy(struct model_weights *w)
{
    if (!w) {
        return;
    }
    model_tensor_vec_deinit(&w->tensors);
    for (size_t i = 0; i < w->n_files; i++) {
        file_map_close(&w->maps[i]);
        free(w->paths[i]);
    }
    free(w->maps);
    free(w->paths);
    free(w->slots);
    free(w);
}

const char *model_weights_format(const struct model_weights *w)
{
    return w->format == WEIGHTS_FORMAT_TORCH ? "pytorch" : "safetensors";
}

size_t model_weights_count(const struct model_weights *w)
{
    return w->tensors.n;
}

const struct model_tensor *model_weights_at(const struct model_weights *w, size_t i)
{
    return i < w->tensors.n ? &w->tensors.items[i] : NULL;
}

const struct model_tensor *model_weights_find(const struct model_weights *w, const char *name)
{
    if (w->n_slots == 0) {
        return NULL;
    }
    size_t k = (size_t)name_hash(name) & (w->n_slots - 1);
    while (w->slots[k] != 0) {
        const struct model_tensor *t = &w->tensors.items[w->slots[k] - 1];
        if (strcmp(t->name, name) == 0) {
            return t;
        }
        k = (k + 1) & (w->n_slots - 1);
    }
    return NULL;
}

/* ---- model_check ---- */

/* Per-layer tensors: name suffix after "model.layers.<i>.", and shape as rows x cols from the
 * config (cols 0 for a vector). */
enum check_size { CHECK_DIM, CHECK_Q, CHECK_KV, CHECK_FF };

static const struct {
    const char *suffix;
    enum check_size rows;
    enum check_size cols; /* unused for a vector */
    bool vector;
} layer_tensors[] = {
    { "input_layernorm.weight", CHECK_DIM, CHECK_DIM, true },
    { "post_attention_layernorm.weight", CHECK_DIM, CHECK_DIM, true },
    { "self_attn.q_proj.weight", CHECK_Q, CHECK_DIM, false },
    { "self_attn.k_proj.weight", CHECK_KV, CHECK_DIM, false },
    { "self_attn.v_proj.weight", CHECK_KV, CHECK_DIM, false },
    { "self_attn.o_proj.weight", CHECK_DIM, CHECK_Q, false },
    { "mlp.gate_proj.weight", CHECK_FF, CHECK_DIM, false },
    { "mlp.up_proj.weight", CHECK_FF, CHECK_DIM, false },
    { "mlp.down_proj.weight", CHECK_DIM, CHECK_FF, false },
};

#define CHECK_INV_FREQ "self_attn.rotary_emb.inv_freq"

static int64_t check_size_of(const struct model_config *cfg, enum check_size s)
{
    switch (s) {
    case CHECK_DIM:
        return cfg->dim;
    case CHECK_Q:
        return (int64_t)cfg->n_heads * cfg->head_dim;
    case CHECK_KV:
        return (int64_t)cfg->n_kv_heads * cfg->head_dim;
    case CHECK_FF:
        return cfg->n_ff;
    }
    return 0;
}

/* What a tensor name means to model_check. */
enum check_kind { CHECK_KIND_UNEXPECTED = 0, CHECK_KIND_EXPECTED, CHECK_KIND_IGNORED };

/* "model.layers.<i>.<rest>" with i a canonical decimal below n_layers: returns rest. */
static const char *check_layer_rest(const struct model_config *cfg, const char *name)
{
    static const char prefix[] = "model.layers.";
    if (strncmp(name, prefix, sizeof(prefix) - 1) != 0) {
        return NULL;
    }
    const char *p = name + sizeof(prefix) - 1;
    int64_t i = 0;
    const char *digits = p;
    while (*p >= '0' && *p <= '9' && p - digits < 9) {
        i = i * 10 + (*p - '0');
        p++;
    }
    if (p == digits || *p != '.' || (digits[0] == '0' && p - digits > 1) || i >= cfg->n_layers) {
        return NULL;
    }
    return p + 1;
}

static enum check_kind check_classify(const struct model_config *cfg, const char *name)
{
    if (strcmp(name, "model.embed_tokens.weight") == 0 || strcmp(name, "model.norm.weight") == 0 ||
        strcmp(name, "lm_head.weight") == 0) {
        return CHECK_KIND_EXPECTED;
    }
    const char *rest = check_layer_rest(cfg, name);
    if (!rest) {
        return CHECK_KIND_UNEXPECTED;
    }
    if (strcmp(rest, CHECK_INV_FREQ) == 0) {
        return CHECK_KIND_IGNORED;
    }
    for (size_t k = 0; k < ARRAY_LEN(layer_tensors); k++) {
        if (strcmp(rest, layer_tensors[k].suffix) == 0) {
            return CHECK_KIND_EXPECTED;
        }
    }
    return CHECK_KIND_UNEXPECTED;
}

struct check_ctx {
    const struct model_config *cfg;
    const struct model_weights *w;
    model_problem_fn fn;
    void *user;
    int n_problems;
};

static void check_problem(struct check_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void check_problem(struct check_ctx *c, const char *fmt, ...)
{
    c->n_problems++;
    if (!c->fn) {
        return;
    }
    char msg[ERRSTR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    c->fn(c->user, msg);
}

static void shape_str(char *buf, size_t len, int n_dims, const int64_t *shape)
{
    size_t k = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < n_dims && k < len; i++) {
        k += (size_t)snprintf(buf + k, len - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    }
    if (k < len) {
        snprintf(buf + k, len - k, "]");
    }
}

/* One expected tensor: present (unless optional) with exactly this shape. */
static void check_tensor(struct check_ctx *c, const char *name, int n_dims, int64_t rows,
                         int64_t cols, bool optional)
{
    const struct model_tensor *t = model_weights_find(c->w, name);
    int64_t want[2] = { rows, cols };
    char want_s[64];
    shape_str(want_s, sizeof(want_s), n_dims, want);
    if (!t) {
        if (!optional) {
            check_problem(c, "tensor '%s' is missing (expected shape %s)", name, want_s);
        }
        return;
    }
    bool ok = t->n_dims == n_dims;
    for (int i = 0; ok && i < n_dims; i++) {
        ok = t->shape[i] == want[i];
    }
    if (!ok) {
        char got_s[96];
        shape_str(got_s, sizeof(got_s), t->n_dims, t->shape);
        check_problem(c, "tensor '%s' in %s: shape %s, expected %s from the config", name, t->file,
                      got_s, want_s);
    }
}

/* The dtype config.json's torch_dtype (or dtype) names; false when absent or unknown. */
static bool check_config_dtype(const char *torch_dtype, enum model_dtype *out)
{
    if (strcmp(torch_dtype, "float32") == 0 || strcmp(torch_dtype, "float") == 0) {
        *out = MODEL_DTYPE_F32;
    } else if (strcmp(torch_dtype, "float16") == 0 || strcmp(torch_dtype, "half") == 0) {
        *out = MODEL_DTYPE_F16;
    } else if (strcmp(torch_dtype, "bfloat16") == 0) {
        *out = MODEL_DTYPE_BF16;
    } else {
        return false;
    }
    return true;
}

int model_check(const struct model_config *cfg, const struct model_weights *w, model_problem_fn fn,
                void *user)
{
    struct check_ctx c = { .cfg = cfg, .w = w, .fn = fn, .user = user, .n_problems = 0 };

    /* The one dtype every weight must have: config.json's, else the embedding's. */
    enum model_dtype want_dtype = MODEL_DTYPE_F32;
    char dtype_source[160] = "";
    if (cfg->torch_dtype[0] != '\0') {
        if (check_config_dtype(cfg->torch_dtype, &want_dtype)) {
            snprintf(dtype_source, sizeof(dtype_source), "config torch_dtype '%s'",
                     cfg->torch_dtype);
        } else {
            check_problem(&c,
                          "config field 'torch_dtype': '%s' is not float32, float16 or "
                          "bfloat16",
                          cfg->torch_dtype);
        }
    }
    if (dtype_source[0] == '\0') {
        const struct model_tensor *ref = model_weights_find(w, "model.embed_tokens.weight");
        if (!ref && model_weights_count(w) > 0) {
            ref = model_weights_at(w, 0);
        }
        if (ref) {
            want_dtype = ref->dtype;
            snprintf(dtype_source, sizeof(dtype_source), "the dtype of '%.128s'", ref->name);
        }
    }

    for (size_t i = 0; i < model_weights_count(w); i++) {
        const struct model_tensor *t = model_weights_at(w, i);
        enum check_kind kind = check_classify(cfg, t->name);
        if (kind == CHECK_KIND_UNEXPECTED) {
            check_problem(&c, "tensor '%s' in %s is not part of a %d-layer LLaMA", t->name, t->file,
                          (int)cfg->n_layers);
        } else if (kind == CHECK_KIND_EXPECTED && dtype_source[0] && t->dtype != want_dtype) {
            check_problem(&c, "tensor '%s' in %s: dtype %s, expected %s (%s)", t->name, t->file,
                          model_dtype_name(t->dtype), model_dtype_name(want_dtype), dtype_source);
        }
    }

    check_tensor(&c, "model.embed_tokens.weight", 2, cfg->n_vocab, cfg->dim, false);
    check_tensor(&c, "model.norm.weight", 1, cfg->dim, 0, false);
    /* transformers may store lm_head.weight even when tied; then it must still fit. */
    check_tensor(&c, "lm_head.weight", 2, cfg->n_vocab, cfg->dim, cfg->tie_embeddings);
    char name[96];
    for (int32_t l = 0; l < cfg->n_layers; l++) {
        for (size_t k = 0; k < ARRAY_LEN(layer_tensors); k++) {
            snprintf(name, sizeof(name), "model.layers.%d.%s", (int)l, layer_tensors[k].suffix);
            int64_t rows = check_size_of(cfg, layer_tensors[k].rows);
            if (layer_tensors[k].vector) {
                check_tensor(&c, name, 1, rows, 0, false);
            } else {
                check_tensor(&c, name, 2, rows, check_size_of(cfg, layer_tensors[k].cols), false);
            }
        }
    }
    return c.n_problems;
}

/* ---- model_open ---- */

struct open_problems {
    char *errstr;
    size_t errstr_len;
    const char *dir;
    int n;
};

static void open_problem(void *user, const char *msg)
{
    struct open_problems *p = user;
    if (p->n++ == 0) {
        errstr_set(p->errstr, p->errstr_len, "%s: %s", p->dir, msg);
    }
}

int model_open(const char *dir, const char *weights_file, struct model **out, char *errstr,
               size_t errstr_len)
{
    *out = NULL;
    struct model *m = xcalloc(1, sizeof(*m));
    m->dir = xstrdup(dir);
    char *cfg_path = path_join(dir, "config.json");
    int err = model_config_load(cfg_path, &m->cfg, errstr, errstr_len);
    free(cfg_path);
    if (err) {
        goto fail;
    }
    if ((err = model_weights_open(dir, weights_file, &m->weights, errstr, errstr_len)) != 0) {
        goto fail;
    }
    /* torch_dtype describes the default weight files; an explicitly chosen file (say a float16
     * copy next to float32 weights) only has to be consistent with itself. */
    struct model_config check_cfg = m->cfg;
    if (weights_file) {
        check_cfg.torch_dtype[0] = '\0';
    }
    struct open_problems p = { .errstr = errstr, .errstr_len = errstr_len, .dir = dir, .n = 0 };
    if (model_check(&check_cfg, m->weights, open_problem, &p) != 0) {
        if (p.n > 1 && errstr) {
            size_t k = strlen(errstr);
            if (k < errstr_len) {
                snprintf(errstr + k, errstr_len - k, " (and %d more problems)", p.n - 1);
            }
        }
        err = -EINVAL;
        goto fail;
    }
    *out = m;
    return 0;

fail:
    model_destroy(m);
    return err;
}

void model_destroy(struct model *m)
{
    if (!m) {
        return;
    }
    model_weights_destroy(m->weights);
    m->weights = NULL;
    free(m->dir);
    m->dir = NULL;
    free(m);
}
