/* json.h - jansson helpers: loading with errors that name file:line:column, typed field reads
 * whose errors name the file and the field. */
#ifndef COMMON_JSON_H
#define COMMON_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parses `len` bytes of JSON (duplicate keys rejected). `name` (a file name) prefixes errors.
 * Returns a new reference or NULL with errstr "name:line:col: message". Thread-safe. */
json_t *json_parse_buf(const char *buf, size_t len, const char *name, char *errstr,
                       size_t errstr_len);

/* Reads and parses a whole file. Same contract as json_parse_buf. */
json_t *json_load_path(const char *path, char *errstr, size_t errstr_len);

/* Reads an optional integer field. Absent or null: *out unchanged, returns 0. Present but not an
 * integer (or outside [lo, hi]): -EINVAL with errstr "name: field 'key': ...". */
int json_field_int(const json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                   const char *name, char *errstr, size_t errstr_len);

/* Reads an optional number field (integer or real) into *out. Same contract as json_field_int. */
int json_field_number(const json_t *obj, const char *key, double *out, const char *name,
                      char *errstr, size_t errstr_len);

/* Reads an optional boolean field. Same contract as json_field_int. */
int json_field_bool(const json_t *obj, const char *key, bool *out, const char *name, char *errstr,
                    size_t errstr_len);

#endif
