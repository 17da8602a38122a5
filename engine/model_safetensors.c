/* model_safetensors.c - the safetensors format: an 8-byte little-endian header length, a JSON
 * header mapping tensor names to {dtype, shape, data_offsets}, then the data section. Every
 * number in the header is checked against the bytes actually present, so a hostile or
 * truncated file is an error naming the file and the tensor, never an out-of-bounds view. */
#include "common/json.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/model_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Where one tensor's bytes lie in the data section, kept for the overlap check. */
struct st_span {
    uint64_t begin;
    uint64_t end;
    size_t i_tensor; /* index into the output vector */
};

static int st_span_cmp(const void *a, const void *b)
{
    const struct st_span *x = a, *y = b;
    if (x->begin != y->begin) {
        return x->begin < y->begin ? -1 : 1;
    }
    if (x->end != y->end) {
        return x->end < y->end ? -1 : 1;
    }
    return 0;
}

/* "__metadata__" must map strings to strings. */
static int st_check_metadata(const json_t *meta, const char *file, char *errstr, size_t errstr_len)
{
    if (!json_is_object(meta)) {
        errstr_set(errstr, errstr_len, "%s: '__metadata__' must be an object of strings", file);
        return -EPROTO;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)meta, key, v)
    {
        if (!json_is_string(v)) {
            errstr_set(errstr, errstr_len, "%s: '__metadata__' entry '%s' must be a string", file,
                       key);
            return -EPROTO;
        }
    }
    return 0;
}

/* A non-negative JSON integer (safetensors writes u64; jansson holds up to INT64_MAX). */
static bool st_get_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        return false;
    }
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* Fills t from one header entry; `data` is the start of the data section [data_len]. */
static int st_tensor_from_json(const char *name, const json_t *info, const uint8_t *data,
                               uint64_t data_len, const char *file, struct model_tensor *t,
                               struct st_span *span, char *errstr, size_t errstr_len)
{
    if (!json_is_object(info)) {
        errstr_set(errstr, errstr_len, "%s: tensor '%s': header entry must be an object", file,
                   name);
        return -EPROTO;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)info, key, v)
    {
        if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 &&
            strcmp(key, "data_offsets") != 0) {
            errstr_set(errstr, errstr_len, "%s: tensor '%s': unknown field '%s'", file, name, key);
            return -EPROTO;
        }
    }

    json_t *dtype = json_object_get(info, "dtype");
    if (!json_is_string(dtype)) {
        errstr_set(errstr, errstr_len, "%s: tensor '%s': 'dtype' must be a string", file, name);
        return -EPROTO;
    }
    if (model_dtype_parse(json_string_value(dtype), &t->dtype) != 0) {
        errstr_set(errstr, errstr_len,
                   "%s: tensor '%s': dtype '%s' is not supported (F32, F16, BF16 only)", file, name,
                   json_string_value(dtype));
        return -EPROTO;
    }

    json_t *shape = json_object_get(info, "shape");
    if (!json_is_array(shape)) {
        errstr_set(errstr, errstr_len, "%s: tensor '%s': 'shape' must be a list", file, name);
        return -EPROTO;
    }
    if (json_array_size(shape) > MODEL_MAX_DIMS) {
        errstr_set(errstr, errstr_len, "%s: tensor '%s': rank %zu exceeds %d", file, name,
                   json_array_size(shape), MODEL_MAX_DIMS);
        return -EPROTO;
    }
    t->n_dims = (int)json_array_size(shape);
    uint64_t n_elems = 1;
    for (int i = 0; i < t->n_dims; i++) {
        uint64_t d;
        if (!st_get_u64(json_array_get(shape, (size_t)i), &d)) {
            errstr_set(errstr, errstr_len,
                       "%s: tensor '%s': shape[%d] must be a non-negative integer", file, name, i);
            return -EPROTO;
        }
        if (__builtin_mul_overflow(n_elems, d, &n_elems) || n_elems > INT64_MAX) {
            errstr_set(errstr, errstr_len, "%s: tensor '%s': element count overflows", file, name);
            return -EPROTO;
        }
        t->shape[i] = (int64_t)d;
    }
    uint64_t n_bytes;
    if (__builtin_mul_overflow(n_elems, (uint64_t)model_dtype_size(t->dtype), &n_bytes)) {
        errstr_set(errstr, errstr_len, "%s: tensor '%s': byte size overflows", file, name);
        return -EPROTO;
    }

    json_t *offs = json_object_get(info, "data_offsets");
    uint64_t begin, end;
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        !st_get_u64(json_array_get(offs, 0), &begin) ||
        !st_get_u64(json_array_get(offs, 1), &end)) {
        errstr_set(errstr, errstr_len,
                   "%s: tensor '%s': 'data_offsets' must be [begin, end] non-negative integers",
                   file, name);
        return -EPROTO;
    }
    if (begin > end) {
        errstr_set(errstr, errstr_len, "%s: tensor '%s': data_offsets begin %llu > end %llu", file,
                   name, (unsigned long long)begin, (unsigned long long)end);
        return -EPROTO;
    }
    if (end > data_len) {
        errstr_set(errstr, errstr_len,
                   "%s: tensor '%s': data_offsets [%llu, %llu] beyond the %llu-byte data section "
                   "(file truncated?)",
                   file, name, (unsigned long long)begin, (unsigned long long)end,
                   (unsigned long long)data_len);
        return -EPROTO;
    }
    if (end - begin != n_bytes) {
        errstr_set(errstr, errstr_len,
                   "%s: tensor '%s': %llu data bytes, but shape and dtype %s need %llu", file, name,
                   (unsigned long long)(end - begin), model_dtype_name(t->dtype),
                   (unsigned long long)n_bytes);
        return -EPROTO;
    }
    t->n_elems = (int64_t)n_elems;
    t->n_bytes = (size_t)n_bytes;
    t->data = data + begin;
    t->file = file;
    span->begin = begin;
    span->end = end;
    return 0;
}

int model_safetensors_parse(const uint8_t *buf, size_t size, const char *file,
                            struct model_tensor_vec *out, char *errstr, size_t errstr_len)
{
    const size_t n_before = out->n;
    struct st_span *spans = NULL;
    json_t *root = NULL;
    int err = -EPROTO;

    if (size < 8) {
        errstr_set(errstr, errstr_len, "%s: %zu bytes is too short for a safetensors header", file,
                   size);
        goto fail;
    }
    uint64_t header_len = load_le64(buf);
    if (header_len > size - 8) {
        errstr_set(errstr, errstr_len,
                   "%s: header length %llu exceeds the %zu bytes after it (truncated or not "
                   "safetensors)",
                   file, (unsigned long long)header_len, size - 8);
        goto fail;
    }
    if (header_len > MODEL_HEADER_MAX_BYTES) {
        errstr_set(errstr, errstr_len, "%s: header length %llu exceeds the %u-byte limit", file,
                   (unsigned long long)header_len, MODEL_HEADER_MAX_BYTES);
        goto fail;
    }
    if (header_len < 2 || buf[8] != '{') {
        errstr_set(errstr, errstr_len, "%s: header does not start with '{'", file);
        goto fail;
    }
    char jerr[ERRSTR_LEN];
    root = json_parse_buf((const char *)buf + 8, (size_t)header_len, file, jerr, sizeof(jerr));
    if (!root) {
        errstr_set(errstr, errstr_len, "%s (safetensors header)", jerr);
        goto fail;
    }
    if (!json_is_object(root)) {
        errstr_set(errstr, errstr_len, "%s: header must be a JSON object", file);
        goto fail;
    }

    const uint8_t *data = buf + 8 + header_len;
    const uint64_t data_len = size - 8 - header_len;
    spans = xcalloc(json_object_size(root) + 1, sizeof(*spans));
    size_t n_spans = 0;
    const char *name;
    json_t *info;
    json_object_foreach(root, name, info)
    {
        if (strcmp(name, "__metadata__") == 0) {
            if ((err = st_check_metadata(info, file, errstr, errstr_len)) != 0) {
                goto fail;
            }
            continue;
        }
        if (name[0] == '\0') {
            errstr_set(errstr, errstr_len, "%s: a tensor has an empty name", file);
            err = -EPROTO;
            goto fail;
        }
        struct model_tensor t;
        memset(&t, 0, sizeof(t));
        err = st_tensor_from_json(name, info, data, data_len, file, &t, &spans[n_spans], errstr,
                                  errstr_len);
        if (err) {
            goto fail;
        }
        struct model_tensor *slot = model_tensor_vec_push(out);
        *slot = t;
        slot->name = xstrdup(name);
        spans[n_spans].i_tensor = out->n - 1;
        n_spans++;
    }

    /* Sort by offset: overlaps become adjacent, and tensors come out in file order. */
    qsort(spans, n_spans, sizeof(*spans), st_span_cmp);
    for (size_t i = 1; i < n_spans; i++) {
        if (spans[i].begin < spans[i - 1].end) {
            errstr_set(errstr, errstr_len,
                       "%s: tensor '%s' [%llu, %llu] overlaps tensor '%s' [%llu, %llu]", file,
                       out->items[spans[i].i_tensor].name, (unsigned long long)spans[i].begin,
                       (unsigned long long)spans[i].end, out->items[spans[i - 1].i_tensor].name,
                       (unsigned long long)spans[i - 1].begin,
                       (unsigned long long)spans[i - 1].end);
            err = -EPROTO;
            goto fail;
        }
    }
    if (n_spans > 0) {
        struct model_tensor *sorted = xmalloc(n_spans * sizeof(*sorted));
        for (size_t i = 0; i < n_spans; i++) {
            sorted[i] = out->items[spans[i].i_tensor];
        }
        memcpy(out->items + n_before, sorted, n_spans * sizeof(*sorted));
        free(sorted);
    }

    free(spans);
    json_decref(root);
    return 0;

fail:
    while (out->n > n_before) {
        out->n--;
        free((char *)out->items[out->n].name);
        out->items[out->n].name = NULL;
    }
    free(spans);
    json_decref(root);
    return err ? err : -EPROTO;
}
