/* model_config.c - config.json of a Hugging Face LLaMA directory, read the way transformers'
 * LlamaConfig reads it: absent fields take LlamaConfig's defaults, and anything this engine
 * cannot run (other architectures, activations, rope scaling, biases) is rejected by name. */
#include "common/json.h"
#include "common/util.h"
#include "engine/model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void model_config_default(struct model_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->n_vocab = 32000;
    cfg->dim = 4096;
    cfg->n_ff = 11008;
    cfg->n_layers = 32;
    cfg->n_heads = 32;
    cfg->max_pos = 2048;
    cfg->rms_eps = 1e-6f;
    cfg->rope_theta = 10000.0f;
    cfg->tie_embeddings = false;
    cfg->bos_id = 1;
    cfg->eos_id = 2;
    cfg->pad_id = -1;
    cfg->rope_layout = MODEL_ROPE_HALF_SPLIT;
    cfg->torch_dtype[0] = '\0';
    cfg->n_kv_heads = cfg->n_heads;
    cfg->head_dim = cfg->dim / cfg->n_heads;
}

/* Reads an int32 field into *out (unchanged when absent or null). */
static int config_int(const json_t *root, const char *key, int64_t lo, int64_t hi, int32_t *out,
                      const char *name, char *errstr, size_t errstr_len)
{
    int64_t v = *out;
    int err = json_field_int(root, key, lo, hi, &v, name, errstr, errstr_len);
    if (err == 0) {
        *out = (int32_t)v;
    }
    return err;
}

/* Reads a positive, finite float field into *out (unchanged when absent or null). */
static int config_positive_float(const json_t *root, const char *key, float *out, const char *name,
                                 char *errstr, size_t errstr_len)
{
    double v = *out;
    int err = json_field_number(root, key, &v, name, errstr, errstr_len);
    if (err) {
        return err;
    }
    if (!(v > 0.0) || !isfinite(v) || v > 3.0e38) {
        errstr_set(errstr, errstr_len, "%s: field '%s': %g must be a positive finite number", name,
                   key, v);
        return -EINVAL;
    }
    *out = (float)v;
    return 0;
}

/* Reads an optional string field that must equal `want` when present. */
static int config_expect_string(const json_t *root, const char *key, const char *want,
                                const char *name, char *errstr, size_t errstr_len)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v)) {
        errstr_set(errstr, errstr_len, "%s: field '%s': expected a string", name, key);
        return -EINVAL;
    }
    if (strcmp(json_string_value(v), want) != 0) {
        errstr_set(errstr, errstr_len, "%s: field '%s': '%s' is not supported (only '%s')", name,
                   key, json_string_value(v), want);
        return -EINVAL;
    }
    return 0;
}

/* A feature flag that must be absent, null or false. */
static int config_reject_true(const json_t *root, const char *key, const char *name, char *errstr,
                              size_t errstr_len)
{
    bool v = false;
    int err = json_field_bool(root, key, &v, name, errstr, errstr_len);
    if (err) {
        return err;
    }
    if (v) {
        errstr_set(errstr, errstr_len, "%s: field '%s': true is not supported", name, key);
        return -EINVAL;
    }
    return 0;
}

/* eos_token_id: an integer, or a list of integers of which the first is taken. */
static int config_eos(const json_t *root, int32_t n_vocab, struct model_config *cfg,
                      const char *name, char *errstr, size_t errstr_len)
{
    const char *key = "eos_token_id";
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (json_is_array(v)) {
        if (json_array_size(v) == 0) {
            errstr_set(errstr, errstr_len, "%s: field '%s': empty list", name, key);
            return -EINVAL;
        }
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *x = json_array_get(v, i);
            if (!json_is_integer(x) || json_integer_value(x) < 0 ||
                json_integer_value(x) >= n_vocab) {
                errstr_set(errstr, errstr_len,
                           "%s: field '%s': item %zu must be an integer in [0, %d)", name, key, i,
                           (int)n_vocab);
                return -EINVAL;
            }
        }
        cfg->eos_id = (int32_t)json_integer_value(json_array_get(v, 0));
        return 0;
    }
    return config_int(root, key, 0, n_vocab - 1, &cfg->eos_id, name, errstr, errstr_len);
}

/* torch_dtype (transformers < 4.56) or dtype (newer): a string, kept as written. */
static int config_dtype(const json_t *root, struct model_config *cfg, const char *name,
                        char *errstr, size_t errstr_len)
{
    const char *key = "torch_dtype";
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        key = "dtype";
        v = json_object_get(root, key);
    }
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) >= sizeof(cfg->torch_dtype) ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        errstr_set(errstr, errstr_len, "%s: field '%s': expected a short dtype name", name, key);
        return -EINVAL;
    }
    memcpy(cfg->torch_dtype, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

/* rope_parameters (transformers >= 5): only rope_type "default"; its rope_theta counts like
 * the top-level one (which, when present too, is read after it). */
static int config_rope_parameters(const json_t *root, struct model_config *cfg, const char *name,
                                  char *errstr, size_t errstr_len)
{
    json_t *rp = json_object_get(root, "rope_parameters");
    if (!rp || json_is_null(rp)) {
        return 0;
    }
    if (!json_is_object(rp)) {
        errstr_set(errstr, errstr_len, "%s: field 'rope_parameters': expected an object", name);
        return -EINVAL;
    }
    int err =
        config_expect_string(rp, "rope_type", "default", "rope_parameters", errstr, errstr_len);
    if (err == 0) {
        err = config_positive_float(rp, "rope_theta", &cfg->rope_theta, "rope_parameters", errstr,
                                    errstr_len);
    }
    if (err) {
        /* Re-prefix with the file name: "config.json: rope_parameters: field ...". */
        char inner[ERRSTR_LEN];
        snprintf(inner, sizeof(inner), "%s", errstr ? errstr : "");
        errstr_set(errstr, errstr_len, "%s: %s", name, inner);
    }
    return err;
}

static int config_from_json(const json_t *root, const char *name, struct model_config *cfg,
                            char *errstr, size_t errstr_len)
{
    if (!json_is_object(root)) {
        errstr_set(errstr, errstr_len, "%s: expected a JSON object", name);
        return -EINVAL;
    }
    int err;
    err = config_expect_string(root, "model_type", "llama", name, errstr, errstr_len);
    if (!err) {
        err = config_expect_string(root, "hidden_act", "silu", name, errstr, errstr_len);
    }
    if (!err) {
        json_t *rs = json_object_get(root, "rope_scaling");
        if (rs && !json_is_null(rs)) {
            errstr_set(errstr, errstr_len, "%s: field 'rope_scaling': not supported", name);
            err = -EINVAL;
        }
    }
    if (!err) {
        err = config_rope_parameters(root, cfg, name, errstr, errstr_len);
    }
    if (!err) {
        err = config_reject_true(root, "attention_bias", name, errstr, errstr_len);
    }
    if (!err) {
        err = config_reject_true(root, "mlp_bias", name, errstr, errstr_len);
    }
    if (err) {
        return err;
    }

    const int64_t big = INT32_MAX;
    int32_t n_kv_heads = -1, head_dim = -1;
    if ((err = config_int(root, "vocab_size", 1, big, &cfg->n_vocab, name, errstr, errstr_len)) ||
        (err = config_int(root, "hidden_size", 1, big, &cfg->dim, name, errstr, errstr_len)) ||
        (err =
             config_int(root, "intermediate_size", 1, big, &cfg->n_ff, name, errstr, errstr_len)) ||
        (err = config_int(root, "num_hidden_layers", 1, 65536, &cfg->n_layers, name, errstr,
                          errstr_len)) ||
        (err = config_int(root, "num_attention_heads", 1, 65536, &cfg->n_heads, name, errstr,
                          errstr_len)) ||
        (err = config_int(root, "num_key_value_heads", 1, 65536, &n_kv_heads, name, errstr,
                          errstr_len)) ||
        (err = config_int(root, "head_dim", 1, 65536, &head_dim, name, errstr, errstr_len)) ||
        (err = config_int(root, "max_position_embeddings", 1, big, &cfg->max_pos, name, errstr,
                          errstr_len)) ||
        (err = config_positive_float(root, "rms_norm_eps", &cfg->rms_eps, name, errstr,
                                     errstr_len)) ||
        (err = config_positive_float(root, "rope_theta", &cfg->rope_theta, name, errstr,
                                     errstr_len)) ||
        (err = json_field_bool(root, "tie_word_embeddings", &cfg->tie_embeddings, name, errstr,
                               errstr_len)) ||
        (err = config_int(root, "bos_token_id", 0, cfg->n_vocab - 1, &cfg->bos_id, name, errstr,
                          errstr_len)) ||
        (err = config_eos(root, cfg->n_vocab, cfg, name, errstr, errstr_len)) ||
        (err = config_int(root, "pad_token_id", -1, cfg->n_vocab - 1, &cfg->pad_id, name, errstr,
                          errstr_len)) ||
        (err = config_dtype(root, cfg, name, errstr, errstr_len))) {
        return err;
    }

    cfg->n_kv_heads = n_kv_heads > 0 ? n_kv_heads : cfg->n_heads;
    if (head_dim > 0) {
        /* An explicit head_dim need not equal dim / n_heads (transformers allows it). */
        cfg->head_dim = head_dim;
    } else {
        if (cfg->dim % cfg->n_heads != 0) {
            errstr_set(errstr, errstr_len,
                       "%s: field 'hidden_size': %d is not divisible by num_attention_heads %d",
                       name, (int)cfg->dim, (int)cfg->n_heads);
            return -EINVAL;
        }
        cfg->head_dim = cfg->dim / cfg->n_heads;
    }
    if (cfg->head_dim % 2 != 0) {
        errstr_set(errstr, errstr_len, "%s: field 'head_dim': %d must be even for RoPE", name,
                   (int)cfg->head_dim);
        return -EINVAL;
    }
    if (cfg->n_heads % cfg->n_kv_heads != 0) {
        errstr_set(errstr, errstr_len,
                   "%s: field 'num_key_value_heads': %d does not divide num_attention_heads %d",
                   name, (int)cfg->n_kv_heads, (int)cfg->n_heads);
        return -EINVAL;
    }
    if ((int64_t)cfg->n_heads * cfg->head_dim > INT32_MAX) {
        errstr_set(errstr, errstr_len,
                   "%s: field 'head_dim': num_attention_heads * head_dim "
                   "overflows",
                   name);
        return -EINVAL;
    }
    cfg->rope_layout = MODEL_ROPE_HALF_SPLIT;
    return 0;
}

int model_config_parse(const char *json, size_t len, const char *name, struct model_config *cfg,
                       char *errstr, size_t errstr_len)
{
    json_t *root = json_parse_buf(json, len, name, errstr, errstr_len);
    if (!root) {
        return -EINVAL;
    }
    struct model_config parsed;
    model_config_default(&parsed);
    int err = config_from_json(root, name, &parsed, errstr, errstr_len);
    json_decref(root);
    if (err == 0) {
        *cfg = parsed;
    }
    return err;
}

int model_config_load(const char *path, struct model_config *cfg, char *errstr, size_t errstr_len)
{
    char *buf;
    size_t len;
    int err = file_read_all(path, &buf, &len, errstr, errstr_len);
    if (err) {
        return err;
    }
    err = model_config_parse(buf, len, path, cfg, errstr, errstr_len);
    free(buf);
    return err;
}
