/* model_impl.h - internals of the weight readers: the parsers that turn the bytes of one file
 * (already in memory) into tensor views, shared by model_weights.c, the unit tests and the fuzz
 * targets. Not included from outside engine/ and tests/. */
#ifndef ENGINE_MODEL_IMPL_H
#define ENGINE_MODEL_IMPL_H

#include "engine/model.h"

#include <stddef.h>
#include <stdint.h>

/* Limits that keep hostile files from costing unbounded memory or time. */
#define MODEL_HEADER_MAX_BYTES  (100u << 20) /* safetensors JSON header (the format's own cap) */
#define MODEL_PICKLE_MAX_BYTES  (64u << 20)  /* data.pkl of a torch archive */
#define MODEL_PICKLE_MAX_VALUES (1u << 20)   /* values the unpickler creates (~120 MB at most) */
#define MODEL_PICKLE_MAX_STACK  (1u << 16)   /* unpickler stack entries */
#define MODEL_PICKLE_MAX_MARKS  256          /* nested MARKs */
#define MODEL_PICKLE_MAX_MEMO   (1u << 20)   /* memo slots */

/* A growable array of tensors; each name is heap-owned (free with model_tensor_vec_deinit).
 * Plain data: zero it to initialise. */
struct model_tensor_vec {
    struct model_tensor *items; /* [n] */
    size_t n;
    size_t cap;
};

/* Appends a zeroed tensor and returns it (aborts on OOM). The pointer is valid until the next
 * push. */
struct model_tensor *model_tensor_vec_push(struct model_tensor_vec *v);

/* Frees the names and the array; leaves *v zeroed. Safe on a zeroed vector. */
void model_tensor_vec_deinit(struct model_tensor_vec *v);

/* Parses a whole safetensors image `buf` [size] (8-byte LE header length, JSON header, data).
 * Appends one tensor per entry, in data-offset order, with data pointing into `buf` and `file`
 * set to `file` (borrowed: both must outlive the tensors). `file` prefixes every error, which
 * also names the tensor. Returns 0 or -EPROTO (on error, tensors appended by this call are
 * removed). Thread-safe. */
int model_safetensors_parse(const uint8_t *buf, size_t size, const char *file,
                            struct model_tensor_vec *out, char *errstr, size_t errstr_len);

/* One stored member of a zip archive. Plain data; name is owned by the model_zip. */
struct model_zip_entry {
    char *name;          /* NUL-terminated entry name */
    const uint8_t *data; /* [size] bytes of the (stored, uncompressed) member, inside the image */
    uint64_t size;
    uint32_t crc32; /* as recorded in the central directory */
};

/* A parsed zip archive: its entries sorted by name (names are unique). */
struct model_zip {
    struct model_zip_entry *entries; /* [n_entries] */
    size_t n_entries;
};

/* Reads the central directory of a zip image `buf` [size] (plain or ZIP64: the zip64
 * end-of-central-directory locator and record, and zip64 extra fields in central entries), then
 * each local header to locate member data. Every member must be stored (method 0), unencrypted,
 * within the image, and uniquely named. `file` prefixes errors. Returns 0 or -EPROTO. Caller
 * owns *z; free with model_zip_deinit. Thread-safe. */
int model_zip_open(const uint8_t *buf, size_t size, const char *file, struct model_zip *z,
                   char *errstr, size_t errstr_len);

/* Frees the entries; leaves *z zeroed. Safe on a zeroed struct. */
void model_zip_deinit(struct model_zip *z);

/* The entry named `name`, or NULL (binary search). */
const struct model_zip_entry *model_zip_find(const struct model_zip *z, const char *name);

/* Standard CRC-32 (IEEE, as zip uses) of `len` bytes. */
uint32_t model_crc32(const uint8_t *p, size_t len);

/* Resolves a storage key named by a pickle's persistent id ('storage', cls, key, location,
 * numel) to its bytes. Returns 0 with *data and *n_bytes set, or -ENOENT. */
typedef int (*model_storage_lookup_fn)(void *user, const char *key, size_t key_len,
                                       const uint8_t **data, size_t *n_bytes);

/* Runs the restricted unpickler over `pkl` [len], the data.pkl of a torch.save archive holding a
 * state dict, and appends one tensor per dict entry (in dict order) with data resolved through
 * `lookup`. Only the opcodes and globals a state dict needs are implemented (see
 * model_pickle.c); anything else is an error naming `file`, the opcode or global and its byte
 * offset. Nothing is executed; memory is bounded by the input size and the limits above.
 * Returns 0 or -EPROTO (tensors appended by this call are removed on error). Thread-safe. */
int model_pickle_load(const uint8_t *pkl, size_t len, const char *file,
                      model_storage_lookup_fn lookup, void *user, struct model_tensor_vec *out,
                      char *errstr, size_t errstr_len);

/* Parses a whole torch.save zip image (`<prefix>/data.pkl`, `<prefix>/data/<key>`,
 * `<prefix>/version`, optional `<prefix>/byteorder` that must read "little") and appends its
 * tensors as model_pickle_load does, with data pointing into `buf`. Returns 0 or -EPROTO.
 * Thread-safe. */
int model_torch_parse(const uint8_t *buf, size_t size, const char *file,
                      struct model_tensor_vec *out, char *errstr, size_t errstr_len);

/* Parses a dtype name as safetensors writes it ("F32", "F16", "BF16"). Returns 0 or -EINVAL. */
int model_dtype_parse(const char *name, enum model_dtype *out);

#endif
