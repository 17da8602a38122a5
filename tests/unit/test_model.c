/* test_model.c - config.json, safetensors, torch .bin (zip + restricted unpickler), shard
 * indexes and model_check.
 *
 * Oracles: values and FNV-1a hashes of stories260K-hf computed with Python's safetensors; the
 * f16 copy equals the f32 weights rounded to nearest even; every tensor of every
 * tests/fixtures/tiny variant hashes to its reference.json entry (written by torch). Malformed
 * inputs are built here byte by byte (safetensors headers, pickles, zip archives, ZIP64
 * included) and must fail with -EPROTO/-EINVAL and a message naming the file and the tensor,
 * field, opcode or global. Run from the repository root. */
/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include "common/json.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/model.h"
#include "engine/model_impl.h"
#include "kernels/cpu/convert.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STORIES_HF "tests/fixtures/stories260K-hf"
#define TINY_DIR   "tests/fixtures/tiny"
#define TINY_BIN   TINY_DIR "/v512-mha-untied-f32-bin"
#define TINY_SHARD TINY_DIR "/v512-gqa-untied-f32-safetensors-sharded"

/* A scratch directory for the files each test writes; removed by the group teardown. */
static char scratch[64];
static int scratch_seq;

/* ---- small helpers ---- */

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) {
        fail_msg("message \"%s\" does not contain \"%s\"", hay, needle);
    }
}

static uint64_t fnv1a64(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001b3ull;
    }
    return h;
}

struct bytes {
    uint8_t *p;
    size_t n;
    size_t cap;
};

static void put(struct bytes *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = xrealloc(b->p, b->cap);
    }
    if (n) {
        memcpy(b->p + b->n, src, n);
    }
    b->n += n;
}

static void put_u8(struct bytes *b, uint8_t v)
{
    put(b, &v, 1);
}

static void put_le(struct bytes *b, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        put_u8(b, (uint8_t)(v >> (8 * i)));
    }
}

static void put_str(struct bytes *b, const char *s)
{
    put(b, s, strlen(s));
}

/* Writes a file into the scratch directory under a fresh name; returns its path (free). */
static char *write_scratch(const char *name, const void *data, size_t len)
{
    char *dir = xasprintf("%s/%d", scratch, scratch_seq++);
    assert_int_equal(mkdir(dir, 0700), 0);
    char *path = path_join(dir, name);
    free(dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len) {
        assert_int_equal(fwrite(data, 1, len, f), len);
    }
    fclose(f);
    return path;
}

/* Writes a file into an existing directory. */
static void write_in(const char *dir, const char *name, const void *data, size_t len)
{
    char *path = path_join(dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len) {
        assert_int_equal(fwrite(data, 1, len, f), len);
    }
    fclose(f);
    free(path);
}

static char *new_scratch_dir(void)
{
    char *dir = xasprintf("%s/%d", scratch, scratch_seq++);
    assert_int_equal(mkdir(dir, 0700), 0);
    return dir;
}

static void read_whole(const char *path, char **data, size_t *len)
{
    char err[ERRSTR_LEN];
    if (file_read_all(path, data, len, err, sizeof(err)) != 0) {
        fail_msg("%s", err);
    }
}

/* Links dir/name to an existing file (absolute path), so big fixtures are not copied. */
static void link_in(const char *dir, const char *name, const char *target)
{
    char *abs = realpath(target, NULL);
    assert_non_null(abs);
    char *path = path_join(dir, name);
    assert_int_equal(symlink(abs, path), 0);
    free(path);
    free(abs);
}

/* Opens one file, expecting failure; returns the code and leaves the message in err. */
static int open_file_err(const char *path, char *err, size_t err_len)
{
    struct model_weights *w = NULL;
    int rc = model_weights_open_file(path, &w, err, err_len);
    if (rc == 0) {
        model_weights_destroy(w);
        fail_msg("%s opened, but should have failed", path);
    }
    assert_null(w);
    return rc;
}

/* A safetensors image: the header text (padded with spaces to 8 bytes), then `data`. */
static void st_image(struct bytes *b, const char *header, const void *data, size_t data_len)
{
    size_t n = strlen(header);
    size_t padded = (n + 7) / 8 * 8;
    put_le(b, padded, 8);
    put_str(b, header);
    for (size_t i = n; i < padded; i++) {
        put_u8(b, ' ');
    }
    put(b, data, data_len);
}

/* Writes a safetensors file with `header` and `data_len` bytes counting 0, 1, 2, ...; opens it,
 * expecting failure with a message containing the file name and `needle`. */
static int st_expect_error(const char *header, size_t data_len, const char *needle)
{
    uint8_t data[256];
    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = (uint8_t)i;
    }
    assert_true(data_len <= sizeof(data));
    struct bytes b = { 0 };
    st_image(&b, header, data, data_len);
    char *path = write_scratch("bad.safetensors", b.p, b.n);
    char err[ERRSTR_LEN];
    int rc = open_file_err(path, err, sizeof(err));
    assert_contains(err, path);
    assert_contains(err, needle);
    free(path);
    free(b.p);
    return rc;
}

/* ---- pickle and zip writers (bytes only: nothing is ever executed) ---- */

static void pk_op(struct bytes *b, uint8_t op)
{
    put_u8(b, op);
}

static void pk_global(struct bytes *b, const char *module, const char *name)
{
    pk_op(b, 'c');
    put_str(b, module);
    put_u8(b, '\n');
    put_str(b, name);
    put_u8(b, '\n');
}

static void pk_str(struct bytes *b, const char *s)
{
    pk_op(b, 'X');
    put_le(b, strlen(s), 4);
    put_str(b, s);
}

static void pk_int(struct bytes *b, int64_t v)
{
    if (v >= 0 && v < 256) {
        pk_op(b, 'K');
        put_u8(b, (uint8_t)v);
    } else if (v >= 0 && v < 65536) {
        pk_op(b, 'M');
        put_le(b, (uint64_t)v, 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        pk_op(b, 'J');
        put_le(b, (uint64_t)v, 4);
    } else {
        pk_op(b, 0x8a); /* LONG1, 8 bytes */
        put_u8(b, 8);
        put_le(b, (uint64_t)v, 8);
    }
}

/* A tensor as torch.save writes it: _rebuild_tensor_v2((pid), offset, size, stride, False,
 * OrderedDict()). */
struct pk_tensor {
    const char *storage_class;
    const char *key;
    int64_t numel;
    int64_t offset;
    int n_dims;
    int64_t shape[4];
    int64_t stride[4];
};

static void pk_tensor(struct bytes *b, const struct pk_tensor *t)
{
    pk_global(b, "torch._utils", "_rebuild_tensor_v2");
    pk_op(b, '(');
    pk_op(b, '(');
    pk_str(b, "storage");
    pk_global(b, "torch", t->storage_class);
    pk_str(b, t->key);
    pk_str(b, "cpu");
    pk_int(b, t->numel);
    pk_op(b, 't');
    pk_op(b, 'Q');
    pk_int(b, t->offset);
    pk_op(b, '(');
    for (int i = 0; i < t->n_dims; i++) {
        pk_int(b, t->shape[i]);
    }
    pk_op(b, 't');
    pk_op(b, '(');
    for (int i = 0; i < t->n_dims; i++) {
        pk_int(b, t->stride[i]);
    }
    pk_op(b, 't');
    pk_op(b, 0x89); /* NEWFALSE */
    pk_global(b, "collections", "OrderedDict");
    pk_op(b, ')');
    pk_op(b, 'R');
    pk_op(b, 't');
    pk_op(b, 'R');
}

/* PROTO 2, OrderedDict() with its memo slot, MARK: the start of a state dict. */
static void pk_begin_dict(struct bytes *b)
{
    pk_op(b, 0x80);
    put_u8(b, 2);
    pk_global(b, "collections", "OrderedDict");
    pk_op(b, 'q');
    put_u8(b, 0);
    pk_op(b, ')');
    pk_op(b, 'R');
    pk_op(b, 'q');
    put_u8(b, 1);
    pk_op(b, '(');
}

/* SETITEMS, then the _metadata BUILD torch adds, then STOP. */
static void pk_end_dict(struct bytes *b)
{
    pk_op(b, 'u');
    pk_op(b, '}');
    pk_str(b, "_metadata");
    pk_op(b, 'h');
    put_u8(b, 0); /* BINGET OrderedDict */
    pk_op(b, ')');
    pk_op(b, 'R');
    pk_str(b, "");
    pk_op(b, '}');
    pk_str(b, "version");
    pk_int(b, 1);
    pk_op(b, 's');
    pk_op(b, 's');
    pk_op(b, 's');
    pk_op(b, 'b');
    pk_op(b, '.');
}

struct zip_member {
    const char *name;
    const void *data;
    size_t len;
    uint16_t method;
};

/* Writes a zip archive of `members` (stored unless method says otherwise). With zip64, the
 * central entries carry all-ones sizes and offsets with a zip64 extra field, and the archive
 * ends with a zip64 end record and locator, as torch writes shards over 4 GB. Local headers get
 * a padding extra field (as torch's 64-byte alignment does) that the central ones lack. */
static void zip_image(struct bytes *b, const struct zip_member *m, size_t n, bool zip64)
{
    uint64_t *offsets = xcalloc(n, sizeof(*offsets));
    for (size_t i = 0; i < n; i++) {
        offsets[i] = b->n;
        uint32_t crc = model_crc32(m[i].data, m[i].len);
        size_t pad = 64 - (b->n + 30 + strlen(m[i].name) + 4) % 64;
        put_le(b, 0x04034b50, 4);
        put_le(b, 20, 2);
        put_le(b, 0, 2);
        put_le(b, m[i].method, 2);
        put_le(b, 0, 4); /* time, date */
        put_le(b, crc, 4);
        put_le(b, m[i].len, 4);
        put_le(b, m[i].len, 4);
        put_le(b, strlen(m[i].name), 2);
        put_le(b, 4 + pad, 2);
        put_str(b, m[i].name);
        put_le(b, 0x4246, 2); /* "FB" padding, like torch */
        put_le(b, pad, 2);
        for (size_t k = 0; k < pad; k++) {
            put_u8(b, 'Z');
        }
        put(b, m[i].data, m[i].len);
    }
    uint64_t cd_offset = b->n;
    for (size_t i = 0; i < n; i++) {
        put_le(b, 0x02014b50, 4);
        put_le(b, zip64 ? 45 : 20, 2);
        put_le(b, zip64 ? 45 : 20, 2);
        put_le(b, 0, 2);
        put_le(b, m[i].method, 2);
        put_le(b, 0, 4);
        put_le(b, model_crc32(m[i].data, m[i].len), 4);
        put_le(b, zip64 ? 0xffffffffu : m[i].len, 4);
        put_le(b, zip64 ? 0xffffffffu : m[i].len, 4);
        put_le(b, strlen(m[i].name), 2);
        put_le(b, zip64 ? 28 : 0, 2);
        put_le(b, 0, 2); /* comment */
        put_le(b, 0, 2); /* disk */
        put_le(b, 0, 2);
        put_le(b, 0, 4);
        put_le(b, zip64 ? 0xffffffffu : offsets[i], 4);
        put_str(b, m[i].name);
        if (zip64) {
            put_le(b, 1, 2);
            put_le(b, 24, 2);
            put_le(b, m[i].len, 8);
            put_le(b, m[i].len, 8);
            put_le(b, offsets[i], 8);
        }
    }
    uint64_t cd_size = b->n - cd_offset;
    if (zip64) {
        uint64_t rec = b->n;
        put_le(b, 0x06064b50, 4);
        put_le(b, 44, 8);
        put_le(b, 45, 2);
        put_le(b, 45, 2);
        put_le(b, 0, 4);
        put_le(b, 0, 4);
        put_le(b, n, 8);
        put_le(b, n, 8);
        put_le(b, cd_size, 8);
        put_le(b, cd_offset, 8);
        put_le(b, 0x07064b50, 4);
        put_le(b, 0, 4);
        put_le(b, rec, 8);
        put_le(b, 1, 4);
    }
    put_le(b, 0x06054b50, 4);
    put_le(b, 0, 2);
    put_le(b, 0, 2);
    put_le(b, zip64 ? 0xffff : n, 2);
    put_le(b, zip64 ? 0xffff : n, 2);
    put_le(b, zip64 ? 0xffffffffu : cd_size, 4);
    put_le(b, zip64 ? 0xffffffffu : cd_offset, 4);
    put_le(b, 0, 2);
    free(offsets);
}

/* A torch archive "archive/..." holding `pkl` and storages "0" (64 bytes) and "1" (16 bytes),
 * filled with 0, 1, 2, .... */
static uint8_t storage0[64], storage1[16];

static void torch_image(struct bytes *out, const struct bytes *pkl, bool zip64, uint16_t method,
                        const char *byteorder)
{
    for (size_t i = 0; i < sizeof(storage0); i++) {
        storage0[i] = (uint8_t)i;
    }
    for (size_t i = 0; i < sizeof(storage1); i++) {
        storage1[i] = (uint8_t)(100 + i);
    }
    struct zip_member m[] = {
        { "archive/data.pkl", pkl->p, pkl->n, method },
        { "archive/byteorder", byteorder, strlen(byteorder), 0 },
        { "archive/data/0", storage0, sizeof(storage0), 0 },
        { "archive/data/1", storage1, sizeof(storage1), 0 },
        { "archive/version", "3\n", 2, 0 },
    };
    zip_image(out, m, ARRAY_LEN(m), zip64);
}

/* A valid state dict: "a" [4, 4] F32 over all of storage 0, "b" [2, 3] F32 a view of storage 0
 * at element 5 (like tied weights sharing a storage), "c" [8] BF16 over storage 1. */
static void pk_good_state_dict(struct bytes *b)
{
    struct pk_tensor a = { "FloatStorage", "0", 16, 0, 2, { 4, 4 }, { 4, 1 } };
    struct pk_tensor v = { "FloatStorage", "0", 16, 5, 2, { 2, 3 }, { 3, 1 } };
    struct pk_tensor c = { "BFloat16Storage", "1", 8, 0, 1, { 8 }, { 1 } };
    pk_begin_dict(b);
    pk_str(b, "a");
    pk_tensor(b, &a);
    pk_str(b, "b");
    pk_tensor(b, &v);
    pk_str(b, "c");
    pk_tensor(b, &c);
    pk_end_dict(b);
}

/* Runs the unpickler on `pkl` inside a torch archive, expecting failure with a message naming
 * the file and containing `needle`. */
static void pickle_expect_error(const struct bytes *pkl, const char *needle)
{
    struct bytes img = { 0 };
    torch_image(&img, pkl, false, 0, "little");
    char *path = write_scratch("pytorch_model.bin", img.p, img.n);
    char err[ERRSTR_LEN];
    assert_int_equal(open_file_err(path, err, sizeof(err)), -EPROTO);
    assert_contains(err, path);
    assert_contains(err, needle);
    free(path);
    free(img.p);
}

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

/* ---- PyTorch .bin ---- */

static void check_good_torch(const char *path)
{
    struct model_weights *w = NULL;
    char err[ERRSTR_LEN];
    if (model_weights_open_file(path, &w, err, sizeof(err)) != 0) {
        fail_msg("%s", err);
    }
    assert_string_equal(model_weights_format(w), "pytorch");
    assert_int_equal(model_weights_count(w), 3);
    const struct model_tensor *a = model_weights_at(w, 0), *v = model_weights_at(w, 1),
                              *c = model_weights_at(w, 2);
    assert_string_equal(a->name, "a");
    assert_string_equal(v->name, "b");
    assert_string_equal(c->name, "c");
    assert_int_equal(a->dtype, MODEL_DTYPE_F32);
    assert_int_equal(a->n_elems, 16);
    assert_memory_equal(a->data, storage0, 64);
    /* The view shares storage 0 and starts at element 5. */
    assert_ptr_equal(v->data, (const uint8_t *)a->data + 20);
    assert_int_equal(v->n_dims, 2);
    assert_int_equal(v->shape[0], 2);
    assert_int_equal(v->shape[1], 3);
    assert_int_equal(v->n_bytes, 24);
    assert_int_equal(c->dtype, MODEL_DTYPE_BF16);
    assert_memory_equal(c->data, storage1, 16);
    assert_string_equal(c->file, path);
    model_weights_destroy(w);
}

static void test_model_torch_reads_hand_built_archive_and_zip64(void **state)
{
    (void)state;
    for (int zip64 = 0; zip64 < 2; zip64++) {
        struct bytes pkl = { 0 }, img = { 0 };
        pk_good_state_dict(&pkl);
        torch_image(&img, &pkl, zip64, 0, "little");
        char *path = write_scratch("pytorch_model.bin", img.p, img.n);
        check_good_torch(path);
        free(path);
        free(pkl.p);
        free(img.p);
    }
}

static void test_model_pickle_rejects_forbidden_global(void **state)
{
    (void)state;
    static const char *const globals[][2] = {
        { "os", "system" },           { "builtins", "eval" },
        { "__builtin__", "getattr" }, { "torch._utils", "_rebuild_parameter" },
        { "torch", "DoubleStorage" },
    };
    for (size_t i = 0; i < ARRAY_LEN(globals); i++) {
        /* PROTO 2; GLOBAL 'os system' at offset 2; 'touch /tmp/x'; TUPLE1; REDUCE; STOP. */
        struct bytes pkl = { 0 };
        pk_op(&pkl, 0x80);
        put_u8(&pkl, 2);
        pk_global(&pkl, globals[i][0], globals[i][1]);
        pk_str(&pkl, "touch /tmp/pwned");
        pk_op(&pkl, 0x85);
        pk_op(&pkl, 'R');
        pk_op(&pkl, '.');
        char needle[128];
        snprintf(needle, sizeof(needle), "data.pkl offset 2: forbidden global '%s %s'",
                 globals[i][0], globals[i][1]);
        pickle_expect_error(&pkl, needle);
        free(pkl.p);
    }
    /* The same through STACK_GLOBAL (protocol 4): the call is refused at the lookup. */
    struct bytes pkl = { 0 };
    pk_op(&pkl, 0x80);
    put_u8(&pkl, 4);
    pk_op(&pkl, 0x8c);
    put_u8(&pkl, 2);
    put_str(&pkl, "os");
    pk_op(&pkl, 0x8c);
    put_u8(&pkl, 6);
    put_str(&pkl, "system");
    pk_op(&pkl, 0x93);
    pk_op(&pkl, '.');
    pickle_expect_error(&pkl, "data.pkl offset 14: forbidden global 'os system'");
    free(pkl.p);
}

static void test_model_pickle_rejects_unknown_opcode(void **state)
{
    (void)state;
    static const struct {
        uint8_t op;
        const char *text;
    } ops[] = {
        { 'i', "0x69 (INST)" },
        { 0x81, "0x81 (NEWOBJ)" },
        { ']', "0x5d (EMPTY_LIST)" },
        { 'G', "0x47 (BINFLOAT)" },
        { 'd', "0x64 (DICT)" },
        { 0x82, "0x82 (EXT1)" },
        { 0xff, "0xff (not a pickle opcode)" },
    };
    for (size_t i = 0; i < ARRAY_LEN(ops); i++) {
        struct bytes pkl = { 0 };
        pk_begin_dict(&pkl); /* 40 bytes */
        pk_op(&pkl, ops[i].op);
        pk_op(&pkl, '.');
        char needle[96];
        snprintf(needle, sizeof(needle), "offset %zu: unsupported pickle opcode %s", pkl.n - 2,
                 ops[i].text);
        pickle_expect_error(&pkl, needle);
        free(pkl.p);
    }
}

static void test_model_pickle_rejects_bad_tensors(void **state)
{
    (void)state;
    static const struct {
        struct pk_tensor t;
        const char *needle;
    } cases[] = {
        /* Transposed (non-contiguous) strides. */
        { { "FloatStorage", "0", 16, 0, 2, { 4, 4 }, { 1, 4 } },
          "tensor 'w': stride 4 at dim 1 is not contiguous" },
        /* A view running past its storage. */
        { { "FloatStorage", "0", 16, 10, 2, { 2, 4 }, { 4, 1 } },
          "tensor 'w': elements [10, +8] lie outside its 16-element storage" },
        /* numel in the persistent id disagrees with the member's 64 bytes. */
        { { "FloatStorage", "0", 15, 0, 1, { 15 }, { 1 } },
          "storage '0' holds 64 bytes, not 15 F32 elements" },
        { { "HalfStorage", "0", 16, 0, 1, { 16 }, { 1 } },
          "storage '0' holds 64 bytes, not 16 F16 elements" },
        /* A storage the archive lacks. */
        { { "FloatStorage", "7", 16, 0, 1, { 16 }, { 1 } },
          "storage '7' is missing from the archive" },
        /* Rank 5, negative size, huge sizes. */
        { { "FloatStorage", "0", 16, 0, 4, { 1, 1, 1, 16 }, { 16, 16, 16, 1 } }, NULL },
        { { "FloatStorage", "0", 16, 0, 2, { -4, -4 }, { -4, 1 } }, "tensor 'w': bad size" },
        { { "FloatStorage", "0", 16, 0, 2, { 1ll << 40, 1ll << 40 }, { 1ll << 40, 1 } },
          "tensor 'w': bad size" },
        { { "FloatStorage", "0", 16, 0, 1, { 1ll << 40 }, { 1 } },
          "tensor 'w': elements [0, +1099511627776]" },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct bytes pkl = { 0 };
        pk_begin_dict(&pkl);
        pk_str(&pkl, "w");
        pk_tensor(&pkl, &cases[i].t);
        pk_end_dict(&pkl);
        if (cases[i].needle) {
            pickle_expect_error(&pkl, cases[i].needle);
        } else {
            /* Rank 4 is the limit and fine. */
            struct bytes img = { 0 };
            torch_image(&img, &pkl, false, 0, "little");
            char *path = write_scratch("pytorch_model.bin", img.p, img.n);
            struct model_weights *w = NULL;
            char err[ERRSTR_LEN];
            assert_int_equal(model_weights_open_file(path, &w, err, sizeof(err)), 0);
            assert_int_equal(model_weights_at(w, 0)->n_dims, 4);
            model_weights_destroy(w);
            free(path);
            free(img.p);
        }
        free(pkl.p);
    }
    /* Rank 5. */
    struct pk_tensor t5 = { "FloatStorage", "0", 16, 0, 4, { 1, 1, 1, 16 }, { 16, 16, 16, 1 } };
    struct bytes pkl = { 0 };
    pk_begin_dict(&pkl);
    pk_str(&pkl, "w");
    /* Hand-edit: a fifth size and stride. */
    pk_global(&pkl, "torch._utils", "_rebuild_tensor_v2");
    pk_op(&pkl, '(');
    pk_op(&pkl, '(');
    pk_str(&pkl, "storage");
    pk_global(&pkl, "torch", t5.storage_class);
    pk_str(&pkl, "0");
    pk_str(&pkl, "cpu");
    pk_int(&pkl, 16);
    pk_op(&pkl, 't');
    pk_op(&pkl, 'Q');
    pk_int(&pkl, 0);
    pk_op(&pkl, '(');
    for (int d = 0; d < 5; d++) {
        pk_int(&pkl, d == 4 ? 16 : 1);
    }
    pk_op(&pkl, 't');
    pk_op(&pkl, '(');
    for (int d = 0; d < 5; d++) {
        pk_int(&pkl, d == 4 ? 1 : 16);
    }
    pk_op(&pkl, 't');
    pk_op(&pkl, 0x89);
    pk_op(&pkl, '}');
    pk_op(&pkl, 't');
    pk_op(&pkl, 'R');
    pk_end_dict(&pkl);
    pickle_expect_error(&pkl, "tensor 'w': rank 5");
    free(pkl.p);
}

/* Malformed machine states: each must fail cleanly with the offset. */
static void test_model_pickle_rejects_malformed_streams(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
        const char *needle;
    } cases[] = {
#define CASE(lit, needle) { lit, sizeof(lit) - 1, needle }
        CASE("\x80\x02", "offset 2: truncated: no STOP"),
        CASE("", "offset 0: truncated: no STOP"),
        CASE("\x80\x02.", "offset 2: STOP needs exactly one value"),
        CASE("\x80\x02s", "offset 2: stack underflow"),
        CASE("\x80\x02h\x05", "offset 2: memo index not defined"),
        CASE("\x80\x02}r\x05\x00\x00\x00", "offset 3: memo index out of order"),
        CASE("\x80\x02X\xff\xff\xff\x7f", "offset 2: truncated operand"),
        CASE("\x80\x02X\x02\x00\x00\x00\xc3\x28", "offset 2: string is not valid UTF-8"),
        CASE("\x80\x02X\x01\x00\x00\x00\x00", "not valid UTF-8 or holds a NUL"),
        CASE("\x80\x09", "offset 0: pickle protocol must be 2 to 5"),
        CASE("\x80\x02\x8a\x09", "offset 2: LONG1 wider than 64 bits"),
        CASE("\x80\x02)(u", "offset 4: SETITEMS target is not a dict"),
        CASE("\x80\x02}(K\x01u", "offset 6: SETITEMS needs key, value pairs"),
        CASE("\x80\x02K\x01K\x01K\x02s", "offset 8: SETITEM target is not a dict"),
        CASE("\x80\x02K\x01)R", "offset 5: REDUCE needs an allowed global"),
        CASE("\x80\x02K\x01Q", "offset 4: persistent id must be"),
        CASE("\x80\x02K\x01}b", "offset 5: BUILD is only allowed on a dict"),
        CASE("\x80\x02}K\x01.", "offset 5: STOP needs exactly one value"),
        CASE("\x80\x02(}.", "offset 4: STOP needs exactly one value"),
        CASE("\x80\x02K\x01.", "top-level object is not a state dict"),
        CASE("\x80\x02}K\x01K\x02s.", "state dict key must be a string"),
        CASE("\x80\x02}X\x01\x00\x00\x00kK\x02s.", "tensor 'k': data.pkl value is not a tensor"),
        CASE("\x80\x02\x95\xff\x00\x00\x00\x00\x00\x00\x00", "offset 2: FRAME runs past"),
        CASE("\x80\x02\x63os", "offset 2: GLOBAL operand is unterminated"),
        CASE("\x80\x02\x63\x63ollections\nOrderedDict\nK\x01\x85R",
             "offset 30: OrderedDict() with arguments"),
        CASE("\x80\x02\x63torch\nFloatStorage\n)R", "offset 23: REDUCE of a storage class"),
#undef CASE
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct bytes pkl = { 0 };
        put(&pkl, cases[i].bytes, cases[i].len);
        pickle_expect_error(&pkl, cases[i].needle);
        free(pkl.p);
    }
    /* MARK nesting and stack depth are bounded. */
    struct bytes pkl = { 0 };
    pk_op(&pkl, 0x80);
    put_u8(&pkl, 2);
    for (int i = 0; i < 1000; i++) {
        pk_op(&pkl, '(');
    }
    pickle_expect_error(&pkl, "MARK nesting limit exceeded");
    pkl.n = 2;
    for (int i = 0; i < (1 << 16) + 5; i++) {
        pk_op(&pkl, 'N');
    }
    pickle_expect_error(&pkl, "stack depth limit exceeded");
    /* So is the number of values, even when the stack stays shallow. */
    pkl.n = 2;
    pk_op(&pkl, '}');
    for (int i = 0; i < (1 << 19) + 5; i++) {
        pk_op(&pkl, 'N');
        pk_op(&pkl, 'N');
        pk_op(&pkl, 's');
    }
    pickle_expect_error(&pkl, "value count limit exceeded");
    free(pkl.p);
}

static void test_model_torch_rejects_truncated_zip(void **state)
{
    (void)state;
    char *data;
    size_t len;
    read_whole(TINY_BIN "/pytorch_model.bin", &data, &len);
    const size_t cuts[] = { 0, 3, 4, 100, len / 2, len - 200, len - 23, len - 22, len - 1 };
    for (size_t i = 0; i < ARRAY_LEN(cuts); i++) {
        char *path = write_scratch("pytorch_model.bin", data, cuts[i]);
        char err[ERRSTR_LEN];
        assert_int_equal(open_file_err(path, err, sizeof(err)), -EPROTO);
        assert_contains(err, path);
        free(path);
    }
    /* Cut inside the stored data with the directory intact: the directory is moved up, so
     * offsets point past it. Done on a hand-built archive: drop 8 bytes of storage 1. */
    struct bytes pkl = { 0 }, img = { 0 };
    pk_good_state_dict(&pkl);
    torch_image(&img, &pkl, true, 0, "little");
    char err[ERRSTR_LEN];
    struct model_zip z;
    assert_int_equal(model_zip_open(img.p, img.n, "mem.zip", &z, err, sizeof(err)), 0);
    const struct model_zip_entry *e = model_zip_find(&z, "archive/data/1");
    assert_non_null(e);
    size_t at = (size_t)(e->data - img.p);
    model_zip_deinit(&z);
    memmove(img.p + at, img.p + at + 8, img.n - at - 8);
    img.n -= 8;
    char *path = write_scratch("pytorch_model.bin", img.p, img.n);
    assert_int_equal(open_file_err(path, err, sizeof(err)), -EPROTO);
    assert_contains(err, path);
    free(path);
    free(pkl.p);
    free(img.p);
    free(data);
}

static void test_model_torch_rejects_compressed_entry(void **state)
{
    (void)state;
    struct bytes pkl = { 0 }, img = { 0 };
    pk_good_state_dict(&pkl);
    torch_image(&img, &pkl, false, 8, "little");
    char *path = write_scratch("pytorch_model.bin", img.p, img.n);
    char err[ERRSTR_LEN];
    assert_int_equal(open_file_err(path, err, sizeof(err)), -EPROTO);
    assert_contains(err, path);
    assert_contains(err, "zip entry 'archive/data.pkl' is compressed (method 8)");
    free(path);
    free(img.p);
    free(pkl.p);
}

static void test_model_torch_rejects_bad_members(void **state)
{
    (void)state;
    struct bytes pkl = { 0 }, img = { 0 };
    char err[ERRSTR_LEN];
    pk_good_state_dict(&pkl);
    torch_image(&img, &pkl, false, 0, "big");
    char *path = write_scratch("pytorch_model.bin", img.p, img.n);
    assert_int_equal(open_file_err(path, err, sizeof(err)), -EPROTO);
    assert_contains(err, "member 'archive/byteorder' is not \"little\"");
    free(path);

    /* A flipped byte in data.pkl fails its CRC. */
    img.n = 0;
    torch_image(&img, &pkl, false, 0, "little");
    uint8_t *hit = memmem(img.p, img.n, "_rebuild_tensor_v2", 18);
    assert_non_null(hit);
    hit[0] ^= 1;
    path = write_scratch("pytorch_model.bin", img.p, img.n);
    assert_int_equal(open_file_err(path, err, sizeof(err)), -EPROTO);
    assert_contains(err, "member 'archive/data.pkl' fails its CRC-32 check");
    free(path);

    /* No data.pkl, and a duplicated member. */
    struct zip_member none[] = { { "archive/version", "3\n", 2, 0 } };
    img.n = 0;
    zip_image(&img, none, 1, false);
    path = write_scratch("pytorch_model.bin", img.p, img.n);
    assert_int_equal(open_file_err(path, err, sizeof(err)), -EPROTO);
    assert_contains(err, "no <prefix>/data.pkl");
    free(path);
    struct zip_member dup[] = { { "archive/version", "3\n", 2, 0 },
                                { "archive/version", "3\n", 2, 0 } };
    img.n = 0;
    zip_image(&img, dup, 2, true);
    path = write_scratch("pytorch_model.bin", img.p, img.n);
    assert_int_equal(open_file_err(path, err, sizeof(err)), -EPROTO);
    assert_contains(err, "zip entry 'archive/version' appears twice");
    free(path);
    free(img.p);
    free(pkl.p);
}

/* Every single-byte corruption of the zip structures of a real torch file either still opens
 * (a byte the reader does not depend on) or fails cleanly; none crashes (ASan builds check). */
static void test_model_torch_survives_corrupt_directory(void **state)
{
    (void)state;
    char *data;
    size_t len;
    read_whole(TINY_DIR "/v512-mha-tied-f16-bin/pytorch_model.bin", &data, &len);
    uint8_t *copy = xmalloc(len);
    char err[ERRSTR_LEN];
    /* The central directory and end records are the last ~2 KB. */
    size_t start = len > 2048 ? len - 2048 : 0;
    int n_failed = 0;
    for (size_t at = start; at < len; at++) {
        memcpy(copy, data, len);
        copy[at] ^= 0xff;
        struct model_tensor_vec v = { 0 };
        if (model_torch_parse(copy, len, "mem.bin", &v, err, sizeof(err)) != 0) {
            n_failed++;
            assert_contains(err, "mem.bin");
        }
        model_tensor_vec_deinit(&v);
    }
    assert_true(n_failed > 0);
    free(copy);
    free(data);
}

/* ---- group ---- */

static int remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) != NULL) {
                if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                    char *child = path_join(path, e->d_name);
                    remove_tree(child);
                    free(child);
                }
            }
            closedir(d);
        }
        return rmdir(path);
    }
    return unlink(path);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(scratch, sizeof(scratch), "/tmp/test_model.XXXXXX");
    return mkdtemp(scratch) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return remove_tree(scratch) == 0 ? 0 : -1;
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
        cmocka_unit_test(test_model_torch_reads_hand_built_archive_and_zip64),
        cmocka_unit_test(test_model_pickle_rejects_forbidden_global),
        cmocka_unit_test(test_model_pickle_rejects_unknown_opcode),
        cmocka_unit_test(test_model_pickle_rejects_bad_tensors),
        cmocka_unit_test(test_model_pickle_rejects_malformed_streams),
        cmocka_unit_test(test_model_torch_rejects_truncated_zip),
        cmocka_unit_test(test_model_torch_rejects_compressed_entry),
        cmocka_unit_test(test_model_torch_rejects_bad_members),
        cmocka_unit_test(test_model_torch_survives_corrupt_directory),
    };
    return cmocka_run_group_tests_name("model", tests, group_setup, group_teardown);
}
