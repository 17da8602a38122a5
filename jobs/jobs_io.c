/* jobs_io.c - record files (JSONL or one JSON array) and JSON written the way Python's
 * json.dumps writes it, so judge output files match JudgeLM's byte for byte in layout
 * (see jobs_impl.h). */
#include "common/json.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "jobs/jobs_impl.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void jobs_buf_append(struct jobs_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    if (n) {
        memcpy(b->data + b->len, s, n);
    }
    b->len += n;
    b->data[b->len] = '\0';
}

void jobs_buf_puts(struct jobs_buf *b, const char *s)
{
    jobs_buf_append(b, s, strlen(s));
}

void jobs_buf_printf(struct jobs_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) {
        abort(); /* only fails on out-of-memory, like xmalloc */
    }
    jobs_buf_append(b, s, (size_t)n);
    free(s);
}

int jobs_records_load(const char *path, struct jobs_records *out, char *errstr, size_t errstr_len)
{
    memset(out, 0, sizeof(*out));
    char *buf = NULL;
    size_t len = 0;
    int err = file_read_all(path, &buf, &len, errstr, errstr_len);
    if (err) {
        return err;
    }
    err = jobs_records_parse(buf, len, path, out, errstr, errstr_len);
    free(buf);
    return err;
}

int jobs_records_parse(const char *buf, size_t len, const char *path, struct jobs_records *out,
                       char *errstr, size_t errstr_len)
{
    memset(out, 0, sizeof(*out));
    int err = 0;
    out->path = xstrdup(path);
    size_t p = 0;
    while (p < len && (buf[p] == ' ' || buf[p] == '\t' || buf[p] == '\r' || buf[p] == '\n')) {
        p++;
    }
    if (p < len && buf[p] == '[') {
        out->is_array = true;
        json_t *root = json_parse_buf(buf, len, path, errstr, errstr_len);
        if (!root) {
            err = -EINVAL;
            goto fail;
        }
        out->n = json_array_size(root);
        out->items = xcalloc(out->n ? out->n : 1, sizeof(*out->items));
        for (size_t i = 0; i < out->n; i++) {
            out->items[i].obj = json_incref(json_array_get(root, i));
        }
        json_decref(root);
        return 0;
    }
    size_t cap = 64, line = 0;
    out->items = xmalloc(cap * sizeof(*out->items));
    for (size_t start = 0; start < len;) {
        const char *nl = memchr(buf + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - buf) : len;
        line++;
        size_t q = start;
        while (q < end && (buf[q] == ' ' || buf[q] == '\t' || buf[q] == '\r')) {
            q++;
        }
        if (q < end) {
            json_error_t jerr;
            json_t *v = json_loadb(buf + start, end - start,
                                   JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
            if (!v) {
                errstr_set(errstr, errstr_len, "%s:%zu:%d: invalid JSON: %s", path, line,
                           jerr.column, jerr.text);
                err = -EINVAL;
                goto fail;
            }
            if (out->n == cap) {
                cap *= 2;
                out->items = xrealloc(out->items, cap * sizeof(*out->items));
            }
            out->items[out->n].obj = v;
            out->items[out->n].line = line;
            out->n++;
        }
        start = end + 1;
    }
    return 0;
fail:
    jobs_records_free(out);
    return err;
}

void jobs_records_free(struct jobs_records *r)
{
    for (size_t i = 0; r->items && i < r->n; i++) {
        json_decref(r->items[i].obj);
    }
    free(r->items);
    free(r->path);
    memset(r, 0, sizeof(*r));
}

const char *jobs_record_where(const struct jobs_records *r, size_t i, char *buf, size_t len)
{
    if (r->is_array) {
        snprintf(buf, len, "%s:[%zu]", r->path, i);
    } else {
        snprintf(buf, len, "%s:%zu", r->path, r->items[i].line);
    }
    return buf;
}

static pthread_once_t jobs_c_locale_once = PTHREAD_ONCE_INIT;
static locale_t jobs_c_locale;

static void jobs_c_locale_init(void)
{
    jobs_c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

void jobs_float_repr(double x, char *buf, size_t len)
{
    if (x == 0.0) {
        snprintf(buf, len, "%s", signbit(x) ? "-0.0" : "0.0");
        return;
    }
    pthread_once(&jobs_c_locale_once, jobs_c_locale_init);
    locale_t old = jobs_c_locale ? uselocale(jobs_c_locale) : (locale_t)0;
    /* the shortest "%.Ne" that reads back as x: Python repr's digits */
    char tmp[48];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, x);
        if (strtod(tmp, NULL) == x) {
            break;
        }
    }
    if (old) {
        uselocale(old);
    }
    char digits[24];
    size_t n_digits = 0;
    const char *p = tmp;
    bool neg = *p == '-';
    if (neg) {
        p++;
    }
    for (; *p && *p != 'e'; p++) {
        if (*p != '.') {
            digits[n_digits++] = *p;
        }
    }
    int e10 = atoi(p + 1);
    int decpt = e10 + 1; /* x = 0.d1d2... * 10^decpt */
    struct jobs_buf b = { 0 };
    if (neg) {
        jobs_buf_puts(&b, "-");
    }
    if (e10 >= -4 && e10 < 16) {
        if (decpt <= 0) {
            jobs_buf_puts(&b, "0.");
            for (int i = 0; i < -decpt; i++) {
                jobs_buf_puts(&b, "0");
            }
            jobs_buf_append(&b, digits, n_digits);
        } else if ((size_t)decpt >= n_digits) {
            jobs_buf_append(&b, digits, n_digits);
            for (size_t i = n_digits; i < (size_t)decpt; i++) {
                jobs_buf_puts(&b, "0");
            }
            jobs_buf_puts(&b, ".0");
        } else {
            jobs_buf_append(&b, digits, (size_t)decpt);
            jobs_buf_puts(&b, ".");
            jobs_buf_append(&b, digits + decpt, n_digits - (size_t)decpt);
        }
    } else {
        jobs_buf_append(&b, digits, 1);
        if (n_digits > 1) {
            jobs_buf_puts(&b, ".");
            jobs_buf_append(&b, digits + 1, n_digits - 1);
        }
        jobs_buf_printf(&b, "e%c%02d", e10 < 0 ? '-' : '+', e10 < 0 ? -e10 : e10);
    }
    snprintf(buf, len, "%s", b.data);
    free(b.data);
}

/* A JSON string as Python's ensure_ascii encoder writes it. */
static void jobs_dump_string(struct jobs_buf *b, const char *s, size_t len)
{
    jobs_buf_append(b, "\"", 1);
    const unsigned char *u = (const unsigned char *)s;
    size_t run = 0; /* start of the pending run of plain bytes */
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            i++;
            continue;
        }
        jobs_buf_append(b, s + run, i - run);
        uint32_t cp = c;
        size_t n = 1;
        if (c >= 0x80) {
            /* jansson strings are valid UTF-8 */
            n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            cp = c & (0x7F >> n);
            for (size_t k = 1; k < n && i + k < len; k++) {
                cp = (cp << 6) | (u[i + k] & 0x3F);
            }
        }
        switch (cp) {
        case '"':
            jobs_buf_puts(b, "\\\"");
            break;
        case '\\':
            jobs_buf_puts(b, "\\\\");
            break;
        case '\n':
            jobs_buf_puts(b, "\\n");
            break;
        case '\r':
            jobs_buf_puts(b, "\\r");
            break;
        case '\t':
            jobs_buf_puts(b, "\\t");
            break;
        case '\b':
            jobs_buf_puts(b, "\\b");
            break;
        case '\f':
            jobs_buf_puts(b, "\\f");
            break;
        default:
            if (cp > 0xFFFF) {
                uint32_t v = cp - 0x10000;
                jobs_buf_printf(b, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
            } else {
                jobs_buf_printf(b, "\\u%04x", cp);
            }
        }
        i += n;
        run = i;
    }
    jobs_buf_append(b, s + run, len - run);
    jobs_buf_append(b, "\"", 1);
}

static void jobs_dump_value(struct jobs_buf *b, const json_t *v)
{
    char num[64];
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        size_t key_len;
        json_t *item;
        bool first = true;
        jobs_buf_puts(b, "{");
        json_object_keylen_foreach((json_t *)v, key, key_len, item)
        {
            if (!first) {
                jobs_buf_puts(b, ", ");
            }
            first = false;
            jobs_dump_string(b, key, key_len);
            jobs_buf_puts(b, ": ");
            jobs_dump_value(b, item);
        }
        jobs_buf_puts(b, "}");
        break;
    }
    case JSON_ARRAY:
        jobs_buf_puts(b, "[");
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) {
                jobs_buf_puts(b, ", ");
            }
            jobs_dump_value(b, json_array_get(v, i));
        }
        jobs_buf_puts(b, "]");
        break;
    case JSON_STRING:
        jobs_dump_string(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        jobs_buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        jobs_float_repr(json_real_value(v), num, sizeof(num));
        jobs_buf_puts(b, num);
        break;
    case JSON_TRUE:
        jobs_buf_puts(b, "true");
        break;
    case JSON_FALSE:
        jobs_buf_puts(b, "false");
        break;
    case JSON_NULL:
        jobs_buf_puts(b, "null");
        break;
    }
}

char *jobs_json_dumps_python(const json_t *v, size_t *len)
{
    struct jobs_buf b = { 0 };
    jobs_buf_append(&b, "", 0);
    jobs_dump_value(&b, v);
    if (len) {
        *len = b.len;
    }
    return b.data;
}
