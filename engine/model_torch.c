/* model_torch.c - PyTorch .bin checkpoints: the zip archive torch.save has written since torch
 * 1.6 (`<prefix>/data.pkl`, one `<prefix>/data/<key>` member per storage, `<prefix>/version`,
 * `<prefix>/byteorder`). The pickle goes through the restricted unpickler; storages are views of
 * the stored zip members, so tensors stay bit-identical views of the mmap'ed file. */
#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/model_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* torch's kMinSupportedFileFormatVersion .. kMaxSupportedFileFormatVersion. */
#define TORCH_VERSION_MIN 1
#define TORCH_VERSION_MAX 10

struct torch_archive {
    const struct model_zip *zip;
    const char *prefix; /* "<prefix>/", NUL-terminated */
};

static int torch_lookup(void *user, const char *key, size_t key_len, const uint8_t **data,
                        size_t *n_bytes)
{
    const struct torch_archive *a = user;
    char *name = xasprintf("%sdata/%.*s", a->prefix, (int)key_len, key);
    const struct model_zip_entry *e = model_zip_find(a->zip, name);
    free(name);
    if (!e || e->size > SIZE_MAX) {
        return -ENOENT;
    }
    *data = e->data;
    *n_bytes = (size_t)e->size;
    return 0;
}

/* Finds the one "<prefix>/data.pkl" member; *prefix gets "<prefix>/" (caller frees). */
static int torch_find_pickle(const struct model_zip *z, const char *file, char **prefix,
                             const struct model_zip_entry **pkl, char *errstr, size_t errstr_len)
{
    *pkl = NULL;
    for (size_t i = 0; i < z->n_entries; i++) {
        const char *name = z->entries[i].name;
        const char *slash = strchr(name, '/');
        if (!slash || slash == name || strcmp(slash, "/data.pkl") != 0) {
            continue;
        }
        if (*pkl) {
            errstr_set(errstr, errstr_len, "%s: more than one data.pkl ('%s', '%s')", file,
                       (*pkl)->name, name);
            return -EPROTO;
        }
        *pkl = &z->entries[i];
    }
    if (!*pkl) {
        errstr_set(errstr, errstr_len,
                   "%s: zip archive has no <prefix>/data.pkl (not a "
                   "torch.save checkpoint)",
                   file);
        return -EPROTO;
    }
    *prefix = xstrndup((*pkl)->name, (size_t)(strchr((*pkl)->name, '/') - (*pkl)->name) + 1);
    return 0;
}

/* `<prefix>/version` (or `.data/version`): a decimal number and a newline. */
static int torch_check_version(const struct model_zip *z, const char *prefix, const char *file,
                               char *errstr, size_t errstr_len)
{
    char *name = xasprintf("%sversion", prefix);
    const struct model_zip_entry *e = model_zip_find(z, name);
    free(name);
    if (!e) {
        name = xasprintf("%s.data/version", prefix);
        e = model_zip_find(z, name);
        free(name);
    }
    if (!e) {
        errstr_set(errstr, errstr_len, "%s: zip archive has no %sversion member", file, prefix);
        return -EPROTO;
    }
    long v = 0;
    size_t i = 0;
    while (i < e->size && i < 8 && e->data[i] >= '0' && e->data[i] <= '9') {
        v = v * 10 + (e->data[i] - '0');
        i++;
    }
    if (i < e->size && e->data[i] == '\n') {
        i++;
    }
    if (i == 0 || i != e->size || v < TORCH_VERSION_MIN || v > TORCH_VERSION_MAX) {
        errstr_set(errstr, errstr_len, "%s: member '%s' is not a supported version (%d to %d)",
                   file, e->name, TORCH_VERSION_MIN, TORCH_VERSION_MAX);
        return -EPROTO;
    }
    return 0;
}

int model_torch_parse(const uint8_t *buf, size_t size, const char *file,
                      struct model_tensor_vec *out, char *errstr, size_t errstr_len)
{
    struct model_zip z;
    char *prefix = NULL;
    int err = model_zip_open(buf, size, file, &z, errstr, errstr_len);
    if (err) {
        return err;
    }
    const struct model_zip_entry *pkl;
    if ((err = torch_find_pickle(&z, file, &prefix, &pkl, errstr, errstr_len)) != 0 ||
        (err = torch_check_version(&z, prefix, file, errstr, errstr_len)) != 0) {
        goto fail;
    }
    char *name = xasprintf("%sbyteorder", prefix);
    const struct model_zip_entry *bo = model_zip_find(&z, name);
    free(name);
    if (bo && !(bo->size == 6 && memcmp(bo->data, "little", 6) == 0)) {
        errstr_set(errstr, errstr_len,
                   "%s: member '%s' is not \"little\" (big-endian "
                   "checkpoints are not supported)",
                   file, bo->name);
        err = -EPROTO;
        goto fail;
    }
    if (pkl->size > MODEL_PICKLE_MAX_BYTES) {
        errstr_set(errstr, errstr_len, "%s: member '%s' is larger than %u bytes", file, pkl->name,
                   MODEL_PICKLE_MAX_BYTES);
        err = -EPROTO;
        goto fail;
    }
    if (model_crc32(pkl->data, (size_t)pkl->size) != pkl->crc32) {
        errstr_set(errstr, errstr_len, "%s: member '%s' fails its CRC-32 check", file, pkl->name);
        err = -EPROTO;
        goto fail;
    }
    struct torch_archive a = { .zip = &z, .prefix = prefix };
    err = model_pickle_load(pkl->data, (size_t)pkl->size, file, torch_lookup, &a, out, errstr,
                            errstr_len);

fail:
    free(prefix);
    model_zip_deinit(&z);
    return err;
}
