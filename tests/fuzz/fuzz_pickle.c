/* fuzz_pickle.c - libFuzzer target for the restricted unpickler (model_pickle_load) and, for
 * inputs that start like a zip ("PK\3\4"), the whole torch archive reader (model_torch_parse:
 * zip, ZIP64 and the pickle inside). Raw pickles resolve persistent ids through a fake storage
 * table: keys "0".."7", storage k holding 16 * (k + 1) bytes. Any input either fails with
 * -EPROTO and a message starting with the file name, or yields tensors whose views lie inside
 * their storage (or the zip image) with byte counts that agree with shape and dtype. Every byte
 * of every view is read, so ASan catches a bad view. Replayed by `make test-fuzz`. */
#include "common/util.h"
#include "engine/model_impl.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAKE_STORAGES 8

static uint8_t fake_bytes[16 * FAKE_STORAGES * (FAKE_STORAGES + 1) / 2];

static int fake_lookup(void *user, const char *key, size_t key_len, const uint8_t **out,
                       size_t *n_bytes)
{
    (void)user;
    if (key_len != 1 || key[0] < '0' || key[0] >= '0' + FAKE_STORAGES) {
        return -ENOENT;
    }
    size_t k = (size_t)(key[0] - '0');
    *out = fake_bytes + 16 * k * (k + 1) / 2;
    *n_bytes = 16 * (k + 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct model_tensor_vec v = { 0 };
    char err[ERRSTR_LEN] = "";
    bool zip = size >= 4 && memcmp(data, "PK\x03\x04", 4) == 0;
    const uint8_t *lo = zip ? data : fake_bytes;
    const uint8_t *hi = zip ? data + size : fake_bytes + sizeof(fake_bytes);
    int rc =
        zip ? model_torch_parse(data, size, "fuzz.bin", &v, err, sizeof(err))
            : model_pickle_load(data, size, "fuzz.bin", fake_lookup, NULL, &v, err, sizeof(err));
    if (rc != 0) {
        if (rc != -EPROTO || strncmp(err, "fuzz.bin", 8) != 0 || v.n != 0) {
            abort();
        }
        model_tensor_vec_deinit(&v);
        return 0;
    }
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < v.n; i++) {
        const struct model_tensor *t = &v.items[i];
        int64_t n = 1;
        for (int d = 0; d < t->n_dims; d++) {
            n *= t->shape[d];
        }
        const uint8_t *p = t->data;
        if (t->name[0] == '\0' || t->n_dims > MODEL_MAX_DIMS || n != t->n_elems ||
            t->n_bytes != (size_t)n * model_dtype_size(t->dtype) ||
            (t->n_bytes > 0 && (p < lo || p + t->n_bytes > hi))) {
            abort();
        }
        for (size_t k = 0; k < t->n_bytes; k++) {
            sink ^= p[k];
        }
    }
    (void)sink;
    model_tensor_vec_deinit(&v);
    return 0;
}
