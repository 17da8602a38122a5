/* model_test_util.h - what test_model.c and test_model_torch.c share: fixture paths, a scratch
 * directory per test group, byte writers for safetensors images, and hand-built pickle and zip
 * images (bytes only: nothing is ever executed). Static inline so each test binary keeps only
 * what it uses. */
#ifndef TESTS_UNIT_MODEL_TEST_UTIL_H
#define TESTS_UNIT_MODEL_TEST_UTIL_H

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
static __attribute__((unused)) char scratch[64];
static __attribute__((unused)) int scratch_seq;

/* ---- small helpers ---- */

static inline void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) {
        fail_msg("message \"%s\" does not contain \"%s\"", hay, needle);
    }
}

static inline uint64_t fnv1a64(const void *p, size_t n)
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

static inline void put(struct bytes *b, const void *src, size_t n)
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

static inline void put_u8(struct bytes *b, uint8_t v)
{
    put(b, &v, 1);
}

static inline void put_le(struct bytes *b, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        put_u8(b, (uint8_t)(v >> (8 * i)));
    }
}

static inline void put_str(struct bytes *b, const char *s)
{
    put(b, s, strlen(s));
}

/* Writes a file into the scratch directory under a fresh name; returns its path (free). */
static inline char *write_scratch(const char *name, const void *data, size_t len)
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
static inline void write_in(const char *dir, const char *name, const void *data, size_t len)
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

static inline char *new_scratch_dir(void)
{
    char *dir = xasprintf("%s/%d", scratch, scratch_seq++);
    assert_int_equal(mkdir(dir, 0700), 0);
    return dir;
}

static inline void read_whole(const char *path, char **data, size_t *len)
{
    char err[ERRSTR_LEN];
    if (file_read_all(path, data, len, err, sizeof(err)) != 0) {
        fail_msg("%s", err);
    }
}

/* Links dir/name to an existing file (absolute path), so big fixtures are not copied. */
static inline void link_in(const char *dir, const char *name, const char *target)
{
    char *abs = realpath(target, NULL);
    assert_non_null(abs);
    char *path = path_join(dir, name);
    assert_int_equal(symlink(abs, path), 0);
    free(path);
    free(abs);
}

/* Opens one file, expecting failure; returns the code and leaves the message in err. */
static inline int open_file_err(const char *path, char *err, size_t err_len)
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
static inline void st_image(struct bytes *b, const char *header, const void *data, size_t data_len)
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
static inline int st_expect_error(const char *header, size_t data_len, const char *needle)
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

static inline void pk_op(struct bytes *b, uint8_t op)
{
    put_u8(b, op);
}

static inline void pk_global(struct bytes *b, const char *module, const char *name)
{
    pk_op(b, 'c');
    put_str(b, module);
    put_u8(b, '\n');
    put_str(b, name);
    put_u8(b, '\n');
}

static inline void pk_str(struct bytes *b, const char *s)
{
    pk_op(b, 'X');
    put_le(b, strlen(s), 4);
    put_str(b, s);
}

static inline void pk_int(struct bytes *b, int64_t v)
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

static inline void pk_tensor(struct bytes *b, const struct pk_tensor *t)
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
static inline void pk_begin_dict(struct bytes *b)
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
static inline void pk_end_dict(struct bytes *b)
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
static inline void zip_image(struct bytes *b, const struct zip_member *m, size_t n, bool zip64)
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
static __attribute__((unused)) uint8_t storage0[64], storage1[16];

static inline void torch_image(struct bytes *out, const struct bytes *pkl, bool zip64,
                               uint16_t method, const char *byteorder)
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
static inline void pk_good_state_dict(struct bytes *b)
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
static inline void pickle_expect_error(const struct bytes *pkl, const char *needle)
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

/* ---- group ---- */

static inline int remove_tree(const char *path)
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

static inline int group_setup(void **state)
{
    (void)state;
    snprintf(scratch, sizeof(scratch), "/tmp/test_model.XXXXXX");
    return mkdtemp(scratch) ? 0 : -1;
}

static inline int group_teardown(void **state)
{
    (void)state;
    return remove_tree(scratch) == 0 ? 0 : -1;
}

#endif
