/* test_model.c - config.json, safetensors, torch .bin (zip + restricted unpickler), shard
 * indexes and model_check (the torch .bin tests are in test_model_torch.c).
 *
 * Oracles: values and FNV-1a hashes of stories260K-hf computed with Python's safetensors; the
 * f16 copy equals the f32 weights rounded to nearest even; every tensor of every
 * tests/fixtures/tiny variant hashes to its reference.json entry (written by torch). Malformed
 * inputs are built here byte by byte (safetensors headers, pickles, zip archives, ZIP64
 * included) and must fail with -EPROTO/-EINVAL and a message naming the file and the tensor,
 * field, opcode or global. Run from the repository root. */
#include "tests/unit/model_test_util.h"

/* ---- config.json ---- */

static int parse_config(const char *json, struct model_config *cfg, char *err, size_t err_len)
{
    return model_config_parse(json, strlen(json), "config.json", cfg, err, err_len);
}

static void test_model_config_defaults_match_llama_config(void **state)
{
    (void)state;
    struct model_config cfg;
    char err[ERRSTR_LEN];
    assert_int_equal(parse_config("{}", &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.n_vocab, 32000);
    assert_int_equal(cfg.dim, 4096);
    assert_int_equal(cfg.n_ff, 11008);
    assert_int_equal(cfg.n_layers, 32);
    assert_int_equal(cfg.n_heads, 32);
    assert_int_equal(cfg.n_kv_heads, 32);
    assert_int_equal(cfg.head_dim, 128);
    assert_int_equal(cfg.max_pos, 2048);
    assert_float_equal(cfg.rms_eps, 1e-6f, 0);
    assert_float_equal(cfg.rope_theta, 10000.0f, 0);
    assert_false(cfg.tie_embeddings);
    assert_int_equal(cfg.bos_id, 1);
    assert_int_equal(cfg.eos_id, 2);
    assert_int_equal(cfg.pad_id, -1);
    assert_int_equal(cfg.rope_layout, MODEL_ROPE_HALF_SPLIT);
    assert_string_equal(cfg.torch_dtype, "");
}

static void test_model_config_reads_stories260k(void **state)
{
    (void)state;
    struct model_config cfg;
    char err[ERRSTR_LEN];
    assert_int_equal(model_config_load(STORIES_HF "/config.json", &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.n_vocab, 512);
    assert_int_equal(cfg.dim, 64);
    assert_int_equal(cfg.n_ff, 172);
    assert_int_equal(cfg.n_layers, 5);
    assert_int_equal(cfg.n_heads, 8);
    assert_int_equal(cfg.n_kv_heads, 4);
    assert_int_equal(cfg.head_dim, 8);
    assert_int_equal(cfg.max_pos, 512);
    assert_float_equal(cfg.rms_eps, 1e-5f, 0);
    assert_true(cfg.tie_embeddings);
    assert_string_equal(cfg.torch_dtype, "float32");
}

static void test_model_config_derives_and_lists(void **state)
{
    (void)state;
    struct model_config cfg;
    char err[ERRSTR_LEN];
    /* eos list (first wins), kv heads and head_dim derived, null pad, transformers 5 names. */
    assert_int_equal(parse_config("{\"hidden_size\": 256, \"num_attention_heads\": 4, "
                                  "\"eos_token_id\": [7, 2], \"pad_token_id\": null, "
                                  "\"dtype\": \"bfloat16\", \"rope_parameters\": "
                                  "{\"rope_type\": \"default\", \"rope_theta\": 500000.0}}",
                                  &cfg, err, sizeof(err)),
                     0);
    assert_int_equal(cfg.n_kv_heads, 4);
    assert_int_equal(cfg.head_dim, 64);
    assert_int_equal(cfg.eos_id, 7);
    assert_int_equal(cfg.pad_id, -1);
    assert_string_equal(cfg.torch_dtype, "bfloat16");
    assert_float_equal(cfg.rope_theta, 500000.0f, 0);
    /* An explicit head_dim need not divide hidden_size. */
    assert_int_equal(parse_config("{\"hidden_size\": 100, \"num_attention_heads\": 4, "
                                  "\"head_dim\": 32, \"num_key_value_heads\": 2}",
                                  &cfg, err, sizeof(err)),
                     0);
    assert_int_equal(cfg.head_dim, 32);
    assert_int_equal(cfg.n_kv_heads, 2);
}

static void test_model_config_rejects_bad_fields(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        const char *field;
    } cases[] = {
        { "{\"hidden_size\": \"4096\"}", "hidden_size" },
        { "{\"hidden_size\": 0}", "hidden_size" },
        { "{\"vocab_size\": -5}", "vocab_size" },
        { "{\"num_hidden_layers\": 1.5}", "num_hidden_layers" },
        { "{\"model_type\": \"mistral\"}", "model_type" },
        { "{\"hidden_act\": \"gelu\"}", "hidden_act" },
        { "{\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}", "rope_scaling" },
        { "{\"rope_parameters\": {\"rope_type\": \"llama3\"}}", "rope_type" },
        { "{\"num_key_value_heads\": 5}", "num_key_value_heads" },
        { "{\"hidden_size\": 100}", "hidden_size" },
        { "{\"head_dim\": 7}", "head_dim" },
        { "{\"eos_token_id\": []}", "eos_token_id" },
        { "{\"eos_token_id\": [1, \"x\"]}", "eos_token_id" },
        { "{\"vocab_size\": 10, \"bos_token_id\": 10}", "bos_token_id" },
        { "{\"rms_norm_eps\": 0}", "rms_norm_eps" },
        { "{\"rope_theta\": \"big\"}", "rope_theta" },
        { "{\"tie_word_embeddings\": 1}", "tie_word_embeddings" },
        { "{\"attention_bias\": true}", "attention_bias" },
        { "{\"torch_dtype\": 16}", "torch_dtype" },
        { "{\"hidden_size\": 64,}", "invalid JSON" },
        { "[1, 2]", "object" },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct model_config cfg;
        model_config_default(&cfg);
        cfg.dim = 1234;
        char err[ERRSTR_LEN] = "";
        int rc = parse_config(cases[i].json, &cfg, err, sizeof(err));
        if (rc != -EINVAL) {
            fail_msg("%s: rc %d", cases[i].json, rc);
        }
        assert_contains(err, "config.json");
        assert_contains(err, cases[i].field);
        assert_int_equal(cfg.dim, 1234); /* untouched on error */
    }
}

static void test_model_config_load_missing_is_enoent(void **state)
{
    (void)state;
    struct model_config cfg;
    char err[ERRSTR_LEN];
    assert_int_equal(
        model_config_load("tests/fixtures/no-such/config.json", &cfg, err, sizeof(err)), -ENOENT);
    assert_contains(err, "no-such/config.json");
}

/* ---- real files ---- */

struct expect_tensor {
    const char *name;
    int64_t rows, cols; /* cols 0 for a vector */
    const char *fnv;
    double sum;
    float first, last;
};

/* Computed with Python: safetensors.torch.load_file, then FNV-1a 64 over tensor.numpy().tobytes()
 * and tensor.double().sum(). */
static const struct expect_tensor stories_expect[] = {
    { "model.embed_tokens.weight", 512, 64, "92105060e9e7c6f6", -752.3677446640068,
      -0.29474878311157227f, -0.424032598733902f },
    { "model.layers.4.mlp.down_proj.weight", 64, 172, "e2f9a3f14f9577bb", 19.543787761240765,
      -0.04791264981031418f, -0.0035068716388195753f },
    { "model.norm.weight", 64, 0, "411bf9c8787bfab5", 115.95276230573654, 2.4583089351654053f,
      1.7077769041061401f },
};

static void test_model_stories260k_opens_complete_and_exact(void **state)
{
    (void)state;
    struct model *m = NULL;
    char err[ERRSTR_LEN];
    if (model_open(STORIES_HF, NULL, &m, err, sizeof(err)) != 0) {
        fail_msg("%s", err);
    }
    assert_string_equal(model_weights_format(m->weights), "safetensors");
    /* 5 layers x 9 + embed + norm; tied, so no lm_head. */
    assert_int_equal(model_weights_count(m->weights), 47);
    assert_int_equal(model_check(&m->cfg, m->weights, NULL, NULL), 0);
    assert_null(model_weights_find(m->weights, "lm_head.weight"));
    assert_null(model_weights_find(m->weights, "model.layers.5.mlp.up_proj.weight"));
    assert_null(model_weights_at(m->weights, 47));

    for (size_t i = 0; i < ARRAY_LEN(stories_expect); i++) {
        const struct expect_tensor *e = &stories_expect[i];
        const struct model_tensor *t = model_weights_find(m->weights, e->name);
        assert_non_null(t);
        assert_string_equal(t->name, e->name);
        assert_int_equal(t->dtype, MODEL_DTYPE_F32);
        assert_int_equal(t->n_dims, e->cols ? 2 : 1);
        assert_int_equal(t->shape[0], e->rows);
        assert_int_equal(t->n_elems, e->rows * (e->cols ? e->cols : 1));
        assert_int_equal(t->n_bytes, (size_t)t->n_elems * 4);
        assert_string_equal(t->file, STORIES_HF "/model.safetensors");
        char hex[17];
        snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)fnv1a64(t->data, t->n_bytes));
        assert_string_equal(hex, e->fnv);
        double sum = 0;
        float first, last;
        for (int64_t k = 0; k < t->n_elems; k++) {
            float x;
            memcpy(&x, (const uint8_t *)t->data + 4 * k, 4);
            sum += x;
        }
        memcpy(&first, t->data, 4);
        memcpy(&last, (const uint8_t *)t->data + t->n_bytes - 4, 4);
        assert_float_equal(sum, e->sum, 1e-6);
        assert_float_equal(first, e->first, 0);
        assert_float_equal(last, e->last, 0);
    }
    model_destroy(m);
}

static void count_problem(void *user, const char *msg)
{
    (void)msg;
    (*(int *)user)++;
}

static void test_model_stories260k_f16_is_rounded_f32(void **state)
{
    (void)state;
    struct model *m32 = NULL, *m16 = NULL;
    char err[ERRSTR_LEN];
    assert_int_equal(model_open(STORIES_HF, NULL, &m32, err, sizeof(err)), 0);
    /* The explicit file need not match config.json's torch_dtype (float32)... */
    if (model_open(STORIES_HF, "model.f16.safetensors", &m16, err, sizeof(err)) != 0) {
        fail_msg("%s", err);
    }
    /* ...but model_check against that torch_dtype flags every weight. */
    int n = 0;
    assert_int_equal(model_check(&m16->cfg, m16->weights, count_problem, &n), 47);
    assert_int_equal(n, 47);

    assert_int_equal(model_weights_count(m16->weights), model_weights_count(m32->weights));
    for (size_t i = 0; i < model_weights_count(m32->weights); i++) {
        const struct model_tensor *a = model_weights_at(m32->weights, i);
        const struct model_tensor *b = model_weights_find(m16->weights, a->name);
        assert_non_null(b);
        assert_int_equal(b->dtype, MODEL_DTYPE_F16);
        assert_int_equal(b->n_elems, a->n_elems);
        assert_memory_equal(b->shape, a->shape, sizeof(a->shape));
        assert_string_equal(b->file, STORIES_HF "/model.f16.safetensors");
        uint16_t *h = xmalloc(b->n_bytes);
        float *back = xmalloc((size_t)b->n_elems * sizeof(float));
        memcpy(h, b->data, b->n_bytes);
        kern_cpu_f16_to_f32(h, back, (size_t)b->n_elems);
        for (int64_t k = 0; k < a->n_elems; k++) {
            float x;
            memcpy(&x, (const uint8_t *)a->data + 4 * k, 4);
            /* Bit-exact round to nearest even, and within half an f16 ulp once widened. */
            assert_int_equal(h[k], kern_cpu_f32_to_f16_one(x));
            assert_true(fabsf(back[k] - x) <= fabsf(x) * 0x1p-11f + 0x1p-25f);
        }
        free(h);
        free(back);
    }
    model_destroy(m16);
    model_destroy(m32);
}

/* Every tensor of every tiny variant: dtype, shape, order and FNV-1a of the raw bytes as
 * reference.json (written by the generator, from torch) says; and config.json as it says. */
static void check_tiny_variant(const char *dir)
{
    char err[ERRSTR_LEN];
    char *ref_path = path_join(dir, "reference.json");
    json_t *ref = json_load_path(ref_path, err, sizeof(err));
    free(ref_path);
    if (!ref) {
        fail_msg("%s", err);
    }
    struct model *m = NULL;
    if (model_open(dir, NULL, &m, err, sizeof(err)) != 0) {
        fail_msg("%s", err);
    }
    json_t *rc = json_object_get(ref, "config");
    assert_int_equal(m->cfg.n_vocab, json_integer_value(json_object_get(rc, "vocab")));
    assert_int_equal(m->cfg.dim, json_integer_value(json_object_get(rc, "hidden")));
    assert_int_equal(m->cfg.n_layers, json_integer_value(json_object_get(rc, "layers")));
    assert_int_equal(m->cfg.n_heads, json_integer_value(json_object_get(rc, "heads")));
    assert_int_equal(m->cfg.n_kv_heads, json_integer_value(json_object_get(rc, "kv_heads")));
    assert_int_equal(m->cfg.head_dim, json_integer_value(json_object_get(rc, "head_dim")));
    assert_int_equal(m->cfg.n_ff, json_integer_value(json_object_get(rc, "ffn")));
    assert_int_equal(m->cfg.max_pos, json_integer_value(json_object_get(rc, "max_pos")));
    assert_int_equal(m->cfg.bos_id, json_integer_value(json_object_get(rc, "bos")));
    assert_int_equal(m->cfg.eos_id, json_integer_value(json_object_get(rc, "eos")));
    assert_int_equal(m->cfg.tie_embeddings, json_is_true(json_object_get(rc, "tied")));
    assert_float_equal(m->cfg.rope_theta, json_number_value(json_object_get(rc, "rope_theta")), 0);
    assert_float_equal(m->cfg.rms_eps, (float)json_number_value(json_object_get(rc, "eps")), 0);
    const char *format = json_string_value(json_object_get(rc, "format"));
    assert_non_null(format);
    assert_string_equal(model_weights_format(m->weights),
                        strstr(format, "bin") ? "pytorch" : "safetensors");

    json_t *tensors = json_object_get(ref, "tensors");
    assert_int_equal(model_weights_count(m->weights), json_object_size(tensors));
    size_t i = 0;
    const char *name;
    json_t *want;
    json_object_foreach(tensors, name, want)
    {
        const struct model_tensor *t = model_weights_at(m->weights, i++);
        assert_string_equal(t->name, name); /* file order */
        assert_ptr_equal(model_weights_find(m->weights, name), t);
        assert_string_equal(model_dtype_name(t->dtype),
                            json_string_value(json_object_get(want, "dtype")));
        json_t *shape = json_object_get(want, "shape");
        assert_int_equal(t->n_dims, json_array_size(shape));
        int64_t n_elems = 1;
        for (int d = 0; d < t->n_dims; d++) {
            assert_int_equal(t->shape[d], json_integer_value(json_array_get(shape, (size_t)d)));
            n_elems *= t->shape[d];
        }
        assert_int_equal(t->n_elems, n_elems);
        assert_int_equal(t->n_bytes, (size_t)n_elems * model_dtype_size(t->dtype));
        char hex[17];
        snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)fnv1a64(t->data, t->n_bytes));
        if (strcmp(hex, json_string_value(json_object_get(want, "fnv1a64"))) != 0) {
            fail_msg("%s: tensor %s hashes to %s, reference %s", dir, name, hex,
                     json_string_value(json_object_get(want, "fnv1a64")));
        }
        const char *file = json_string_value(json_object_get(want, "file"));
        if (file) {
            char *path = path_join(dir, file);
            assert_string_equal(t->file, path);
            free(path);
        }
    }
    model_destroy(m);
    json_decref(ref);
}

static void test_model_tiny_variants_match_reference_hashes(void **state)
{
    (void)state;
    DIR *d = opendir(TINY_DIR);
    if (!d) {
        fail_msg("%s is missing", TINY_DIR);
    }
    int n_variants = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char *dir = path_join(TINY_DIR, e->d_name);
        char *ref = path_join(dir, "reference.json");
        if (path_is_file(ref)) {
            check_tiny_variant(dir);
            n_variants++;
        }
        free(ref);
        free(dir);
    }
    closedir(d);
    assert_true(n_variants >= 7);
}

/* ---- safetensors: malformed ---- */

static void test_model_safetensors_parses_views_in_offset_order(void **state)
{
    (void)state;
    static const char header[] =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[10,16]},"
        "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[10,10]},"
        "\"a\":{\"dtype\":\"F16\",\"shape\":[1,5],\"data_offsets\":[0,10]},"
        "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[16,20]}}";
    uint8_t data[24];
    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = (uint8_t)i;
    }
    struct bytes b = { 0 };
    st_image(&b, header, data, sizeof(data));
    size_t header_len = (size_t)load_le64(b.p);
    struct model_tensor_vec v = { 0 };
    char err[ERRSTR_LEN];
    assert_int_equal(model_safetensors_parse(b.p, b.n, "mem.safetensors", &v, err, sizeof(err)), 0);
    assert_int_equal(v.n, 4);
    static const char *order[] = { "a", "empty", "b", "s" };
    static const size_t begin[] = { 0, 10, 10, 16 };
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(v.items[i].name, order[i]);
        assert_ptr_equal(v.items[i].data, b.p + 8 + header_len + begin[i]);
        assert_string_equal(v.items[i].file, "mem.safetensors");
    }
    assert_int_equal(v.items[0].dtype, MODEL_DTYPE_F16);
    assert_int_equal(v.items[1].n_elems, 0);
    assert_int_equal(v.items[1].n_bytes, 0);
    assert_int_equal(v.items[2].dtype, MODEL_DTYPE_BF16);
    assert_int_equal(v.items[3].n_dims, 0);
    assert_int_equal(v.items[3].n_elems, 1);
    model_tensor_vec_deinit(&v);
    free(b.p);
}

/* A header with no tensors is a valid (empty) file; found by fuzz replay under UBSan (a memcpy
 * from a NULL array of zero tensors). */
static void test_model_safetensors_accepts_empty_header(void **state)
{
    (void)state;
    static const char *const headers[] = { "{}", "{\"__metadata__\":{}}" };
    for (size_t i = 0; i < ARRAY_LEN(headers); i++) {
        struct bytes b = { 0 };
        st_image(&b, headers[i], NULL, 0);
        struct model_tensor_vec v = { 0 };
        char err[ERRSTR_LEN];
        assert_int_equal(
            model_safetensors_parse(b.p, b.n, "empty.safetensors", &v, err, sizeof(err)), 0);
        assert_int_equal(v.n, 0);
        model_tensor_vec_deinit(&v);
        free(b.p);
    }
}

static void test_model_safetensors_rejects_truncated(void **state)
{
    (void)state;
    /* The header promises 16 bytes; only 12 are there. */
    assert_int_equal(
        st_expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12,
                        "tensor 'w'"),
        -EPROTO);
    /* Too short even for the length prefix, and an empty file. */
    char *path = write_scratch("short.safetensors", "\x10\x00\x00", 3);
    char err[ERRSTR_LEN];
    assert_int_equal(open_file_err(path, err, sizeof(err)), -EPROTO);
    assert_contains(err, path);
    free(path);
    path = write_scratch("empty.safetensors", "", 0);
    assert_int_equal(open_file_err(path, err, sizeof(err)), -EPROTO);
    assert_contains(err, path);
    free(path);
}

static void test_model_safetensors_rejects_header_beyond_file(void **state)
{
    (void)state;
    struct bytes b = { 0 };
    put_le(&b, 1000000, 8);
    put_str(&b, "{\"w\":{}}");
    char *path = write_scratch("model.safetensors", b.p, b.n);
    char err[ERRSTR_LEN];
    assert_int_equal(open_file_err(path, err, sizeof(err)), -EPROTO);
    assert_contains(err, path);
    assert_contains(err, "header length 1000000");
    free(path);
    b.n = 0;
    put_le(&b, UINT64_MAX, 8); /* must not wrap */
    put_str(&b, "{}");
    path = write_scratch("model.safetensors", b.p, b.n);
    assert_int_equal(open_file_err(path, err, sizeof(err)), -EPROTO);
    assert_contains(err, "header length");
    free(path);
    free(b.p);
}

static void test_model_safetensors_rejects_out_of_range_offsets(void **state)
{
    (void)state;
    st_expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}", 16,
                    "tensor 'w'");
    st_expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 16,
                    "tensor 'w'");
    st_expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],"
                    "\"data_offsets\":[9223372036854775800,9223372036854775807]}}",
                    16, "tensor 'w'");
    st_expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 16,
                    "data_offsets");
    st_expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 16,
                    "begin 8 > end 0");
}

static void test_model_safetensors_rejects_overlap(void **state)
{
    (void)state;
    assert_int_equal(
        st_expect_error("{\"first\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                        "\"second\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[12,20]}}",
                        32, "overlaps"),
        -EPROTO);
    st_expect_error("{\"first\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                    "\"second\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[12,20]}}",
                    32, "'second'");
    /* Identical ranges overlap too. */
    st_expect_error("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                    "\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    8, "overlaps");
}

static void test_model_safetensors_rejects_unknown_dtype(void **state)
{
    (void)state;
    static const char *dtypes[] = { "I8", "F64", "F8_E4M3", "BOOL", "f32" };
    for (size_t i = 0; i < ARRAY_LEN(dtypes); i++) {
        char header[160], needle[64];
        snprintf(header, sizeof(header),
                 "{\"odd\":{\"dtype\":\"%s\",\"shape\":[2],\"data_offsets\":[0,8]}}", dtypes[i]);
        snprintf(needle, sizeof(needle), "tensor 'odd': dtype '%s'", dtypes[i]);
        assert_int_equal(st_expect_error(header, 8, needle), -EPROTO);
    }
}

static void test_model_safetensors_rejects_shape_mismatch(void **state)
{
    (void)state;
    /* [3, 3] F32 needs 36 bytes, not 32. */
    st_expect_error("{\"m\":{\"dtype\":\"F32\",\"shape\":[3,3],\"data_offsets\":[0,32]}}", 40,
                    "tensor 'm': 32 data bytes");
    /* Rank 5, a negative dim, a non-integer dim, and a product that overflows 64 bits. */
    st_expect_error("{\"m\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 8,
                    "tensor 'm': rank 5");
    st_expect_error("{\"m\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,16]}}", 16,
                    "tensor 'm': shape[0]");
    st_expect_error("{\"m\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,16]}}", 16,
                    "tensor 'm': shape[0]");
    st_expect_error("{\"m\":{\"dtype\":\"BF16\",\"shape\":[4294967296,4294967296],"
                    "\"data_offsets\":[0,0]}}",
                    8, "tensor 'm'");
    st_expect_error("{\"m\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
                    "\"data_offsets\":[0,0]}}",
                    8, "tensor 'm': byte size overflows");
}

static void test_model_safetensors_rejects_bad_header(void **state)
{
    (void)state;
    st_expect_error("{\"__metadata__\":{\"format\":1}}", 0, "__metadata__");
    st_expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    8, "duplicate");
    st_expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],"
                    "\"extra\":1}}",
                    4, "tensor 'w': unknown field 'extra'");
    st_expect_error("{\"w\":[1,2]}", 0, "tensor 'w'");
    st_expect_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]", 4,
                    "invalid JSON");
    st_expect_error("not json at all!", 0, "'{'");
}

/* ---- shard indexes ---- */

/* A copy of the sharded tiny variant (shards linked) with a rewritten index. */
static char *sharded_copy_with_index(const char *index_json)
{
    char *dir = new_scratch_dir();
    link_in(dir, "config.json", TINY_SHARD "/config.json");
    link_in(dir, "model-00001-of-00002.safetensors",
            TINY_SHARD "/model-00001-of-00002.safetensors");
    link_in(dir, "model-00002-of-00002.safetensors",
            TINY_SHARD "/model-00002-of-00002.safetensors");
    write_in(dir, "model.safetensors.index.json", index_json, strlen(index_json));
    return dir;
}

/* The tiny variant's own index with one edit applied to weight_map. */
static char *index_edited(const char *del, const char *add_name, const char *add_file)
{
    char err[ERRSTR_LEN];
    json_t *root = json_load_path(TINY_SHARD "/model.safetensors.index.json", err, sizeof(err));
    if (!root) {
        fail_msg("%s", err);
    }
    json_t *map = json_object_get(root, "weight_map");
    if (del) {
        assert_int_equal(json_object_del(map, del), 0);
    }
    if (add_name) {
        json_object_set_new(map, add_name, json_string(add_file));
    }
    char *text = json_dumps(root, 0);
    json_decref(root);
    return text;
}

static void expect_dir_error(const char *dir, const char *needle1, const char *needle2)
{
    struct model_weights *w = NULL;
    char err[ERRSTR_LEN];
    int rc = model_weights_open(dir, NULL, &w, err, sizeof(err));
    if (rc == 0) {
        model_weights_destroy(w);
        fail_msg("%s opened", dir);
    }
    assert_int_equal(rc, -EPROTO);
    assert_contains(err, needle1);
    assert_contains(err, needle2);
}

static void test_model_index_opens_shards_once(void **state)
{
    (void)state;
    char *text = index_edited(NULL, NULL, NULL);
    char *dir = sharded_copy_with_index(text);
    struct model_weights *w = NULL;
    char err[ERRSTR_LEN];
    if (model_weights_open(dir, NULL, &w, err, sizeof(err)) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(model_weights_count(w), 30);
    /* Tensors come shard by shard: all of shard 1's before any of shard 2's. */
    bool in_second = false;
    for (size_t i = 0; i < model_weights_count(w); i++) {
        bool second = strstr(model_weights_at(w, i)->file, "00002-of") != NULL;
        assert_true(second || !in_second);
        in_second = second;
    }
    model_weights_destroy(w);
    free(dir);
    free(text);
}

static void test_model_index_rejects_missing_tensor(void **state)
{
    (void)state;
    char *text =
        index_edited(NULL, "model.layers.9.mlp.up_proj.weight", "model-00002-of-00002.safetensors");
    char *dir = sharded_copy_with_index(text);
    expect_dir_error(dir, "tensor 'model.layers.9.mlp.up_proj.weight'",
                     "model-00002-of-00002.safetensors");
    expect_dir_error(dir, "missing", "model.safetensors.index.json");
    free(dir);
    free(text);
}

static void test_model_index_rejects_unlisted_and_misplaced_tensors(void **state)
{
    (void)state;
    char *text = index_edited("model.norm.weight", NULL, NULL);
    char *dir = sharded_copy_with_index(text);
    expect_dir_error(dir, "tensor 'model.norm.weight' is not listed", ".safetensors");
    free(dir);
    free(text);

    /* Listed in the wrong shard. */
    json_t *root = json_load_path(TINY_SHARD "/model.safetensors.index.json", NULL, 0);
    assert_non_null(root);
    json_t *map = json_object_get(root, "weight_map");
    const char *was = json_string_value(json_object_get(map, "model.norm.weight"));
    const char *other = strstr(was, "00001-of") ? "model-00002-of-00002.safetensors"
                                                : "model-00001-of-00002.safetensors";
    json_object_set_new(map, "model.norm.weight", json_string(other));
    text = json_dumps(root, 0);
    json_decref(root);
    dir = sharded_copy_with_index(text);
    expect_dir_error(dir, "tensor 'model.norm.weight'", other);
    free(dir);
    free(text);

    /* A shard name that leaves the directory, and a shard that does not exist. */
    text = index_edited("model.norm.weight", "model.norm.weight", "../model.safetensors");
    dir = sharded_copy_with_index(text);
    expect_dir_error(dir, "model.norm.weight", "file name");
    free(dir);
    free(text);
    text = index_edited(NULL, "model.norm.weight", "model-00003-of-00003.safetensors");
    dir = sharded_copy_with_index(text);
    struct model_weights *w = NULL;
    char err[ERRSTR_LEN];
    assert_int_equal(model_weights_open(dir, NULL, &w, err, sizeof(err)), -ENOENT);
    assert_contains(err, "model-00003-of-00003.safetensors");
    free(dir);
    free(text);
}

static void test_model_index_rejects_duplicate_across_shards(void **state)
{
    (void)state;
    char *dir = new_scratch_dir();
    float one = 1.0f;
    struct bytes b = { 0 };
    st_image(&b, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", &one, 4);
    write_in(dir, "s1.safetensors", b.p, b.n);
    write_in(dir, "s2.safetensors", b.p, b.n);
    static const char index[] = "{\"weight_map\":{\"w\":\"s1.safetensors\","
                                "\"v\":\"s2.safetensors\"}}";
    write_in(dir, "model.safetensors.index.json", index, strlen(index));
    expect_dir_error(dir, "tensor 'w' appears twice", "s1.safetensors");
    free(b.p);
    free(dir);
}

static void test_model_weights_open_picks_files(void **state)
{
    (void)state;
    struct model_weights *w = NULL;
    char err[ERRSTR_LEN];
    char *dir = new_scratch_dir();
    assert_int_equal(model_weights_open(dir, NULL, &w, err, sizeof(err)), -ENOENT);
    assert_contains(err, dir);
    assert_contains(err, "pytorch_model.bin");
    assert_int_equal(model_weights_open(dir, "nope.safetensors", &w, err, sizeof(err)), -ENOENT);
    assert_contains(err, "nope.safetensors");
    struct model *m = NULL;
    assert_int_equal(model_open(dir, NULL, &m, err, sizeof(err)), -ENOENT);
    assert_contains(err, "config.json");
    assert_null(m);
    free(dir);

    /* A bare pickle (torch.save before 1.6) is refused by name. */
    char *path = write_scratch("pytorch_model.bin", "\x80\x02\x8a\x0a", 4);
    assert_int_equal(open_file_err(path, err, sizeof(err)), -EPROTO);
    assert_contains(err, path);
    assert_contains(err, "torch 1.6");
    free(path);
    model_weights_destroy(NULL);
    model_destroy(NULL);
}

/* ---- model_check ---- */

struct problems {
    int n;
    char text[8192];
};

static void collect_problem(void *user, const char *msg)
{
    struct problems *p = user;
    p->n++;
    size_t k = strlen(p->text);
    snprintf(p->text + k, sizeof(p->text) - k, "%s\n", msg);
}

static void test_model_check_reports_shape_disagreeing_with_config(void **state)
{
    (void)state;
    /* stories260K weights with a config claiming intermediate_size 100. */
    char *cfg_text;
    size_t cfg_len;
    read_whole(STORIES_HF "/config.json", &cfg_text, &cfg_len);
    char *at = strstr(cfg_text, "\"intermediate_size\": 172");
    assert_non_null(at);
    memcpy(at, "\"intermediate_size\": 100", 24);
    char *dir = new_scratch_dir();
    write_in(dir, "config.json", cfg_text, cfg_len);
    link_in(dir, "model.safetensors", STORIES_HF "/model.safetensors");

    struct model *m = NULL;
    char err[ERRSTR_LEN];
    assert_int_equal(model_open(dir, NULL, &m, err, sizeof(err)), -EINVAL);
    assert_null(m);
    assert_contains(err, dir);
    assert_contains(err, "tensor 'model.layers.0.mlp.");
    assert_contains(err, "expected [100, 64]");
    assert_contains(err, "and 14 more problems");

    struct model_config cfg;
    assert_int_equal(model_config_load(STORIES_HF "/config.json", &cfg, err, sizeof(err)), 0);
    cfg.n_ff = 100;
    struct model_weights *w = NULL;
    assert_int_equal(model_weights_open(STORIES_HF, NULL, &w, err, sizeof(err)), 0);
    struct problems p = { 0 };
    assert_int_equal(model_check(&cfg, w, collect_problem, &p), 15); /* 5 layers x 3 */
    assert_int_equal(p.n, 15);
    assert_contains(p.text, "tensor 'model.layers.4.mlp.down_proj.weight' in " STORIES_HF
                            "/model.safetensors: shape [64, 172], expected [64, 100]");
    assert_contains(p.text, "tensor 'model.layers.2.mlp.gate_proj.weight' in " STORIES_HF
                            "/model.safetensors: shape [172, 64], expected [100, 64]");
    /* Fewer layers in the config: layers 3 and 4 are unexpected. */
    cfg.n_ff = 172;
    cfg.n_layers = 3;
    memset(&p, 0, sizeof(p));
    assert_int_equal(model_check(&cfg, w, collect_problem, &p), 18);
    assert_contains(p.text, "tensor 'model.layers.4.self_attn.q_proj.weight' in");
    assert_contains(p.text, "not part of a 3-layer LLaMA");
    /* Untied: lm_head.weight is required. */
    cfg.n_layers = 5;
    cfg.tie_embeddings = false;
    memset(&p, 0, sizeof(p));
    assert_int_equal(model_check(&cfg, w, collect_problem, &p), 1);
    assert_contains(p.text, "tensor 'lm_head.weight' is missing (expected shape [512, 64])");
    /* A config dtype the weights do not have: one problem per weight, naming both dtypes. */
    cfg.tie_embeddings = true;
    strcpy(cfg.torch_dtype, "bfloat16");
    memset(&p, 0, sizeof(p));
    assert_int_equal(model_check(&cfg, w, collect_problem, &p), 47);
    assert_contains(p.text, "tensor 'model.norm.weight' in " STORIES_HF
                            "/model.safetensors: dtype F32, expected BF16 (config torch_dtype "
                            "'bfloat16')");
    strcpy(cfg.torch_dtype, "int8");
    assert_int_equal(model_check(&cfg, w, NULL, NULL), 1);
    model_weights_destroy(w);
    free(dir);
    free(cfg_text);
}

static void test_model_check_mixed_dtypes_and_extras(void **state)
{
    (void)state;
    /* A 1-layer model with dim 2, vocab 2, ff 2, 1 head of 2: one odd dtype, an inv_freq
     * buffer (accepted whatever its dtype), an unexpected tensor, a tied lm_head that exists. */
    struct model_config cfg;
    char err[ERRSTR_LEN];
    assert_int_equal(parse_config("{\"vocab_size\":2,\"hidden_size\":2,\"intermediate_size\":2,"
                                  "\"num_hidden_layers\":1,\"num_attention_heads\":1,"
                                  "\"tie_word_embeddings\":true}",
                                  &cfg, err, sizeof(err)),
                     0);
    static const char *const names[] = {
        "model.embed_tokens.weight",
        "lm_head.weight",
        "model.norm.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
    };
    char header[4096] = "{";
    size_t off = 0;
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        bool vec = strstr(names[i], "norm") != NULL;
        bool odd = strstr(names[i], "v_proj") != NULL;
        size_t n = (vec ? 2 : 4) * (odd ? 4 : 2);
        size_t k = strlen(header);
        snprintf(header + k, sizeof(header) - k,
                 "\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]},", names[i],
                 odd ? "F32" : "F16", vec ? "[2]" : "[2,2]", off, off + n);
        off += n;
    }
    size_t k = strlen(header);
    snprintf(header + k, sizeof(header) - k,
             "\"model.layers.0.self_attn.rotary_emb.inv_freq\":{\"dtype\":\"F32\",\"shape\":[1],"
             "\"data_offsets\":[%zu,%zu]},"
             "\"model.layers.00.mlp.up_proj.weight\":{\"dtype\":\"F16\",\"shape\":[1],"
             "\"data_offsets\":[%zu,%zu]}}",
             off, off + 4, off + 4, off + 6);
    static uint8_t data[256];
    struct bytes b = { 0 };
    st_image(&b, header, data, off + 6);
    char *path = write_scratch("model.safetensors", b.p, b.n);
    struct model_weights *w = NULL;
    if (model_weights_open_file(path, &w, err, sizeof(err)) != 0) {
        fail_msg("%s", err);
    }
    struct problems p = { 0 };
    assert_int_equal(model_check(&cfg, w, collect_problem, &p), 2);
    assert_contains(p.text, "tensor 'model.layers.0.self_attn.v_proj.weight' in ");
    assert_contains(p.text, "dtype F32, expected F16 (the dtype of 'model.embed_tokens.weight')");
    assert_contains(p.text, "tensor 'model.layers.00.mlp.up_proj.weight' in ");
    assert_contains(p.text, "not part of a 1-layer LLaMA");
    model_weights_destroy(w);
    free(path);
    free(b.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_config_defaults_match_llama_config),
        cmocka_unit_test(test_model_config_reads_stories260k),
        cmocka_unit_test(test_model_config_derives_and_lists),
        cmocka_unit_test(test_model_config_rejects_bad_fields),
        cmocka_unit_test(test_model_config_load_missing_is_enoent),
        cmocka_unit_test(test_model_stories260k_opens_complete_and_exact),
        cmocka_unit_test(test_model_stories260k_f16_is_rounded_f32),
        cmocka_unit_test(test_model_tiny_variants_match_reference_hashes),
        cmocka_unit_test(test_model_safetensors_parses_views_in_offset_order),
        cmocka_unit_test(test_model_safetensors_accepts_empty_header),
        cmocka_unit_test(test_model_safetensors_rejects_truncated),
        cmocka_unit_test(test_model_safetensors_rejects_header_beyond_file),
        cmocka_unit_test(test_model_safetensors_rejects_out_of_range_offsets),
        cmocka_unit_test(test_model_safetensors_rejects_overlap),
        cmocka_unit_test(test_model_safetensors_rejects_unknown_dtype),
        cmocka_unit_test(test_model_safetensors_rejects_shape_mismatch),
        cmocka_unit_test(test_model_safetensors_rejects_bad_header),
        cmocka_unit_test(test_model_index_opens_shards_once),
        cmocka_unit_test(test_model_index_rejects_missing_tensor),
        cmocka_unit_test(test_model_index_rejects_unlisted_and_misplaced_tensors),
        cmocka_unit_test(test_model_index_rejects_duplicate_across_shards),
        cmocka_unit_test(test_model_weights_open_picks_files),
        cmocka_unit_test(test_model_check_reports_shape_disagreeing_with_config),
        cmocka_unit_test(test_model_check_mixed_dtypes_and_extras),
    };
    return cmocka_run_group_tests_name("model", tests, group_setup, group_teardown);
}
