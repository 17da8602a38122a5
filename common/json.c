/* json.c - jansson helpers with errors naming file, line and field (see json.h). */
#include "json.h"

#include "util.h"

#include <errno.h>
#include <stdlib.h>

json_t *json_parse_buf(const char *buf, size_t len, const char *name, char *errstr,
                       size_t errstr_len)
{
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root) {
        errstr_set(errstr, errstr_len, "%s:%d:%d: invalid JSON: %s", name, jerr.line, jerr.column,
                   jerr.text);
    }
    return root;
}

json_t *json_load_path(const char *path, char *errstr, size_t errstr_len)
{
    char *buf;
    size_t len;
    if (file_read_all(path, &buf, &len, errstr, errstr_len) != 0) {
        return NULL;
    }
    json_t *root = json_parse_buf(buf, len, path, errstr, errstr_len);
    free(buf);
    return root;
}

int json_field_int(const json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                   const char *name, char *errstr, size_t errstr_len)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    json_int_t x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == (double)(json_int_t)json_real_value(v)) {
        x = (json_int_t)json_real_value(v); /* 4096.0 is written by some converters */
    } else {
        errstr_set(errstr, errstr_len, "%s: field '%s': expected an integer", name, key);
        return -EINVAL;
    }
    if (x < lo || x > hi) {
        errstr_set(errstr, errstr_len, "%s: field '%s': %lld is outside [%lld, %lld]", name, key,
                   (long long)x, (long long)lo, (long long)hi);
        return -EINVAL;
    }
    *out = x;
    return 0;
}

int json_field_number(const json_t *obj, const char *key, double *out, const char *name,
                      char *errstr, size_t errstr_len)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_number(v)) {
        errstr_set(errstr, errstr_len, "%s: field '%s': expected a number", name, key);
        return -EINVAL;
    }
    *out = json_number_value(v);
    return 0;
}

int json_field_bool(const json_t *obj, const char *key, bool *out, const char *name, char *errstr,
                    size_t errstr_len)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_boolean(v)) {
        errstr_set(errstr, errstr_len, "%s: field '%s': expected true or false", name, key);
        return -EINVAL;
    }
    *out = json_is_true(v);
    return 0;
}
