/* yaml.c - one YAML document to jansson values, with each node's line and column, so that a
 * YAML spec and a JSON spec go through the same validation (see yaml.h). libyaml parses
 * YAML 1.1 syntax; scalars are resolved with the YAML 1.2 core schema, so "yes", "on" and "no"
 * stay strings (the Norway problem) and only true/false are booleans. */
#include "common/yaml.h"

#include "common/util.h"
#include "common/xmalloc.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

struct yaml_doc_ctx {
    yaml_parser_t parser;
    const char *name;
    struct yaml_doc_marks *marks;
    char *errstr;
    size_t errstr_len;
};

static void yaml_doc_mark_add(struct yaml_doc_ctx *ctx, const char *path, yaml_mark_t m)
{
    struct yaml_doc_marks *marks = ctx->marks;
    if (!marks) {
        return;
    }
    if (marks->n == marks->cap) {
        marks->cap = marks->cap ? 2 * marks->cap : 32;
        marks->items = xrealloc(marks->items, marks->cap * sizeof(*marks->items));
    }
    marks->items[marks->n].path = xstrdup(path);
    marks->items[marks->n].line = (int)m.line + 1;
    marks->items[marks->n].col = (int)m.column + 1;
    marks->n++;
}

void yaml_doc_marks_free(struct yaml_doc_marks *marks)
{
    for (size_t i = 0; i < marks->n; i++) {
        free(marks->items[i].path);
    }
    free(marks->items);
    memset(marks, 0, sizeof(*marks));
}

const struct yaml_doc_mark *yaml_doc_mark_find(const struct yaml_doc_marks *marks, const char *path)
{
    for (size_t i = 0; marks && i < marks->n; i++) {
        if (strcmp(marks->items[i].path, path) == 0) {
            return &marks->items[i];
        }
    }
    return NULL;
}

static json_t *yaml_doc_fail(struct yaml_doc_ctx *ctx, yaml_mark_t m, const char *what)
{
    errstr_set(ctx->errstr, ctx->errstr_len, "%s:%zu:%zu: %s", ctx->name, m.line + 1, m.column + 1,
               what);
    return NULL;
}

static bool yaml_doc_next(struct yaml_doc_ctx *ctx, yaml_event_t *ev)
{
    if (yaml_parser_parse(&ctx->parser, ev)) {
        return true;
    }
    yaml_parser_t *p = &ctx->parser;
    errstr_set(ctx->errstr, ctx->errstr_len, "%s:%zu:%zu: invalid YAML: %s%s%s", ctx->name,
               p->problem_mark.line + 1, p->problem_mark.column + 1,
               p->problem ? p->problem : "syntax error", p->context ? " " : "",
               p->context ? p->context : "");
    return false;
}

static bool yaml_doc_match(const char *s, const char *const *words)
{
    for (; *words; words++) {
        if (strcmp(s, *words) == 0) {
            return true;
        }
    }
    return false;
}

/* YAML 1.2 core schema integers: [-+]?[0-9]+, 0o[0-7]+, 0x[0-9a-fA-F]+. */
static bool yaml_doc_int(const char *s, bool *overflow, json_int_t *out)
{
    int base = 10;
    const char *digits = s;
    if (s[0] == '0' && s[1] == 'o') {
        base = 8, digits = s + 2;
    } else if (s[0] == '0' && s[1] == 'x') {
        base = 16, digits = s + 2;
    } else if (s[0] == '-' || s[0] == '+') {
        digits = s + 1;
    }
    if (!*digits) {
        return false;
    }
    for (const char *p = digits; *p; p++) {
        bool ok = base == 8    ? (*p >= '0' && *p <= '7')
                  : base == 10 ? (*p >= '0' && *p <= '9')
                               : strchr("0123456789abcdefABCDEF", *p) != NULL;
        if (!ok) {
            return false;
        }
    }
    errno = 0;
    long long v = strtoll(base == 10 ? s : digits, NULL, base);
    *overflow = errno == ERANGE;
    *out = (json_int_t)v;
    return true;
}

/* YAML 1.2 core schema floats (finite ones; .inf and .nan are recognised to be refused). */
static bool yaml_doc_float(const char *s, bool *finite, double *out)
{
    static const char *const inf[] = { ".inf",  ".Inf",  ".INF",  "+.inf", "+.Inf",
                                       "+.INF", "-.inf", "-.Inf", "-.INF", NULL };
    static const char *const nan[] = { ".nan", ".NaN", ".NAN", NULL };
    if (yaml_doc_match(s, inf) || yaml_doc_match(s, nan)) {
        *finite = false;
        return true;
    }
    const char *p = s;
    if (*p == '-' || *p == '+') {
        p++;
    }
    size_t n_digits = 0;
    while (*p >= '0' && *p <= '9') {
        p++, n_digits++;
    }
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            p++, n_digits++;
        }
    }
    if (n_digits == 0) {
        return false;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '-' || *p == '+') {
            p++;
        }
        if (!(*p >= '0' && *p <= '9')) {
            return false;
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (*p) {
        return false;
    }
    *out = strtod(s, NULL);
    *finite = isfinite(*out);
    return true;
}

static json_t *yaml_doc_scalar(struct yaml_doc_ctx *ctx, const yaml_event_t *ev)
{
    static const char *const nulls[] = { "", "~", "null", "Null", "NULL", NULL };
    static const char *const trues[] = { "true", "True", "TRUE", NULL };
    static const char *const falses[] = { "false", "False", "FALSE", NULL };
    const char *s = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    if (ev->data.scalar.anchor) {
        return yaml_doc_fail(ctx, ev->start_mark, "anchors are not supported");
    }
    if (tag && strcmp(tag, YAML_STR_TAG) != 0 && strcmp(tag, "!") != 0) {
        return yaml_doc_fail(ctx, ev->start_mark, "only the !!str tag is supported");
    }
    if (tag || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        return json_stringn(s, len); /* quoted, block or !!str: always a string */
    }
    if (yaml_doc_match(s, nulls)) {
        return json_null();
    }
    if (yaml_doc_match(s, trues)) {
        return json_true();
    }
    if (yaml_doc_match(s, falses)) {
        return json_false();
    }
    bool overflow, finite;
    json_int_t i;
    double d;
    if (yaml_doc_int(s, &overflow, &i)) {
        if (overflow) {
            return yaml_doc_fail(ctx, ev->start_mark, "integer out of range");
        }
        return json_integer(i);
    }
    if (yaml_doc_float(s, &finite, &d)) {
        if (!finite) {
            return yaml_doc_fail(ctx, ev->start_mark,
                                 "infinite and NaN numbers are not "
                                 "supported");
        }
        return json_real(d);
    }
    return json_stringn(s, len);
}

static json_t *yaml_doc_node(struct yaml_doc_ctx *ctx, yaml_event_t *ev, const char *path);

static json_t *yaml_doc_sequence(struct yaml_doc_ctx *ctx, const char *path)
{
    json_t *arr = json_array();
    for (size_t i = 0;; i++) {
        yaml_event_t ev;
        if (!yaml_doc_next(ctx, &ev)) {
            goto fail;
        }
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return arr;
        }
        char *child = xasprintf("%s[%zu]", path, i);
        yaml_doc_mark_add(ctx, child, ev.start_mark);
        json_t *v = yaml_doc_node(ctx, &ev, child);
        free(child);
        yaml_event_delete(&ev);
        if (!v) {
            goto fail;
        }
        json_array_append_new(arr, v);
    }
fail:
    json_decref(arr);
    return NULL;
}

static json_t *yaml_doc_mapping(struct yaml_doc_ctx *ctx, const char *path)
{
    json_t *obj = json_object();
    for (;;) {
        yaml_event_t key;
        if (!yaml_doc_next(ctx, &key)) {
            goto fail;
        }
        if (key.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&key);
            return obj;
        }
        if (key.type != YAML_SCALAR_EVENT) {
            yaml_doc_fail(ctx, key.start_mark, "mapping keys must be plain strings");
            yaml_event_delete(&key);
            goto fail;
        }
        const char *k = (const char *)key.data.scalar.value;
        char *child = *path ? xasprintf("%s.%s", path, k) : xstrdup(k);
        if (json_object_get(obj, k)) {
            char *what = xasprintf("duplicate key '%s'", child);
            yaml_doc_fail(ctx, key.start_mark, what);
            free(what);
            free(child);
            yaml_event_delete(&key);
            goto fail;
        }
        yaml_doc_mark_add(ctx, child, key.start_mark);
        yaml_event_t val;
        json_t *v = NULL;
        if (yaml_doc_next(ctx, &val)) {
            v = yaml_doc_node(ctx, &val, child);
            yaml_event_delete(&val);
        }
        if (v) {
            json_object_set_new(obj, k, v);
        }
        free(child);
        yaml_event_delete(&key);
        if (!v) {
            goto fail;
        }
    }
fail:
    json_decref(obj);
    return NULL;
}

static json_t *yaml_doc_node(struct yaml_doc_ctx *ctx, yaml_event_t *ev, const char *path)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return yaml_doc_scalar(ctx, ev);
    case YAML_SEQUENCE_START_EVENT:
        if (ev->data.sequence_start.anchor) {
            return yaml_doc_fail(ctx, ev->start_mark, "anchors are not supported");
        }
        return yaml_doc_sequence(ctx, path);
    case YAML_MAPPING_START_EVENT:
        if (ev->data.mapping_start.anchor) {
            return yaml_doc_fail(ctx, ev->start_mark, "anchors are not supported");
        }
        return yaml_doc_mapping(ctx, path);
    case YAML_ALIAS_EVENT:
        return yaml_doc_fail(ctx, ev->start_mark, "aliases are not supported");
    default:
        return yaml_doc_fail(ctx, ev->start_mark, "unexpected YAML event");
    }
}

json_t *yaml_doc_parse(const char *buf, size_t len, const char *name, struct yaml_doc_marks *marks,
                       char *errstr, size_t errstr_len)
{
    struct yaml_doc_ctx ctx = {
        .name = name, .marks = marks, .errstr = errstr, .errstr_len = errstr_len
    };
    if (!yaml_parser_initialize(&ctx.parser)) {
        errstr_set(errstr, errstr_len, "%s: out of memory", name);
        return NULL;
    }
    yaml_parser_set_input_string(&ctx.parser, (const unsigned char *)buf, len);
    json_t *root = NULL;
    yaml_event_t ev;
    bool ok = yaml_doc_next(&ctx, &ev); /* stream start */
    if (ok) {
        yaml_event_delete(&ev);
        ok = yaml_doc_next(&ctx, &ev);
    }
    if (ok && ev.type != YAML_DOCUMENT_START_EVENT) {
        yaml_doc_fail(&ctx, ev.start_mark, "the document is empty");
        yaml_event_delete(&ev);
        ok = false;
    }
    if (ok) {
        yaml_event_delete(&ev);
        ok = yaml_doc_next(&ctx, &ev);
        if (ok) {
            root = yaml_doc_node(&ctx, &ev, "");
            yaml_event_delete(&ev);
            ok = root != NULL;
        }
    }
    if (ok && (ok = yaml_doc_next(&ctx, &ev))) { /* document end */
        yaml_event_delete(&ev);
        ok = yaml_doc_next(&ctx, &ev);
        if (ok && ev.type != YAML_STREAM_END_EVENT) {
            yaml_doc_fail(&ctx, ev.start_mark, "more than one YAML document");
            ok = false;
        }
        yaml_event_delete(&ev); /* a failed parse leaves a zeroed event */
    }
    yaml_parser_delete(&ctx.parser);
    if (!ok) {
        json_decref(root);
        return NULL;
    }
    return root;
}
