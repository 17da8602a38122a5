/* test_model_torch.c - the PyTorch .bin reader: hand-built zip (plain and ZIP64) and pickle
 * images, read back exactly, and every malformed or forbidden construct refused with an error
 * naming the file and the opcode, global or member. Nothing in a pickle is ever executed. Run
 * from the repository root. */
#include "tests/unit/model_test_util.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
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
    return cmocka_run_group_tests_name("model_torch", tests, group_setup, group_teardown);
}
