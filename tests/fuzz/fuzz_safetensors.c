/* fuzz_safetensors.c - libFuzzer target for the safetensors parser (model_safetensors_parse):
 * any input either fails with -EPROTO and a message starting with the file name, or yields
 * tensors whose views lie inside the data section, do not overlap, and whose byte counts agree
 * with shape and dtype. Every byte of every view is read, so ASan catches a bad view. Replayed
 * by `make test-fuzz`. */
#include "common/util.h"
#include "engine/model_impl.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct model_tensor_vec v = { 0 };
    char err[ERRSTR_LEN] = "";
    int rc = model_safetensors_parse(data, size, "fuzz.safetensors", &v, err, sizeof(err));
    if (rc != 0) {
        if (rc != -EPROTO || strncmp(err, "fuzz.safetensors", 16) != 0 || v.n != 0) {
            abort();
        }
        model_tensor_vec_deinit(&v);
        return 0;
    }
    const uint8_t *data_start = data + 8 + load_le64(data);
    const uint8_t *prev_end = data_start;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < v.n; i++) {
        const struct model_tensor *t = &v.items[i];
        int64_t n = 1;
        for (int d = 0; d < t->n_dims; d++) {
            n *= t->shape[d];
        }
        const uint8_t *p = t->data;
        if (t->name[0] == '\0' || t->n_dims > MODEL_MAX_DIMS || n != t->n_elems ||
            t->n_bytes != (size_t)n * model_dtype_size(t->dtype) || p < prev_end ||
            p + t->n_bytes > data + size) {
            abort();
        }
        for (size_t k = 0; k < t->n_bytes; k++) {
            sink ^= p[k];
        }
        prev_end = p + t->n_bytes;
    }
    (void)sink;
    model_tensor_vec_deinit(&v);
    return 0;
}
