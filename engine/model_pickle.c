/* model_pickle.c - a restricted unpickler for the data.pkl of a torch.save'd state dict.
 *
 * Python's pickle is a stack machine whose GLOBAL and REDUCE opcodes call arbitrary code, so a
 * checkpoint can run anything on load. This reader implements only what torch.save emits for a
 * state dict (pickle protocol 2, torch's default, and protocols 3-5 for
 * torch.save(pickle_protocol=N)), and only five globals, none of which is ever called:
 * REDUCE of collections.OrderedDict with no arguments makes an empty dict, and REDUCE of
 * torch._utils._rebuild_tensor_v2 records a tensor view over a storage named by a persistent id.
 * Everything else (other globals, other opcodes, other REDUCE targets) is an error naming the
 * opcode or global and its byte offset.
 *
 * Values live in one arena freed at the end; nothing recurses, the memo must be filled in order,
 * and the stack and MARK depth are capped, so memory and time are linear in the input size. */
#include "common/utf8.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/model_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Opcodes, named as in CPython's pickle.py. */
enum pk_op {
    PK_OP_MARK = '(',
    PK_OP_STOP = '.',
    PK_OP_BININT = 'J',
    PK_OP_BININT1 = 'K',
    PK_OP_BININT2 = 'M',
    PK_OP_NONE = 'N',
    PK_OP_BINPERSID = 'Q',
    PK_OP_REDUCE = 'R',
    PK_OP_BINUNICODE = 'X',
    PK_OP_BUILD = 'b',
    PK_OP_GLOBAL = 'c',
    PK_OP_BINGET = 'h',
    PK_OP_LONG_BINGET = 'j',
    PK_OP_BINPUT = 'q',
    PK_OP_LONG_BINPUT = 'r',
    PK_OP_SETITEM = 's',
    PK_OP_TUPLE = 't',
    PK_OP_SETITEMS = 'u',
    PK_OP_EMPTY_DICT = '}',
    PK_OP_EMPTY_TUPLE = ')',
    PK_OP_PROTO = 0x80,
    PK_OP_TUPLE1 = 0x85,
    PK_OP_TUPLE2 = 0x86,
    PK_OP_TUPLE3 = 0x87,
    PK_OP_NEWTRUE = 0x88,
    PK_OP_NEWFALSE = 0x89,
    PK_OP_LONG1 = 0x8a,
    PK_OP_SHORT_BINUNICODE = 0x8c,
    PK_OP_STACK_GLOBAL = 0x93,
    PK_OP_MEMOIZE = 0x94,
    PK_OP_FRAME = 0x95,
};

enum pk_kind {
    PK_KIND_NONE = 0,
    PK_KIND_BOOL,
    PK_KIND_INT,
    PK_KIND_STR,
    PK_KIND_TUPLE,
    PK_KIND_DICT,
    PK_KIND_GLOBAL,
    PK_KIND_STORAGE,
    PK_KIND_TENSOR,
};

/* The only globals a state dict refers to. */
enum pk_global {
    PK_GLOBAL_ORDERED_DICT = 0,
    PK_GLOBAL_REBUILD_TENSOR_V2,
    PK_GLOBAL_STORAGE_CLASS,
};

static const struct {
    const char *module;
    const char *name;
    enum pk_global global;
    enum model_dtype dtype; /* for storage classes */
} pk_allowed[] = {
    { "collections", "OrderedDict", PK_GLOBAL_ORDERED_DICT, MODEL_DTYPE_F32 },
    { "torch._utils", "_rebuild_tensor_v2", PK_GLOBAL_REBUILD_TENSOR_V2, MODEL_DTYPE_F32 },
    { "torch", "FloatStorage", PK_GLOBAL_STORAGE_CLASS, MODEL_DTYPE_F32 },
    { "torch", "HalfStorage", PK_GLOBAL_STORAGE_CLASS, MODEL_DTYPE_F16 },
    { "torch", "BFloat16Storage", PK_GLOBAL_STORAGE_CLASS, MODEL_DTYPE_BF16 },
};

/* One value. Only the members of its kind are meaningful; there is no union so that an arena
 * of them stays trivially safe to free. */
struct pk_value {
    enum pk_kind kind;
    int64_t i;               /* INT, BOOL */
    const char *s;           /* STR: UTF-8 bytes inside the pickle, not NUL-terminated */
    size_t len;              /* STR */
    struct pk_value **items; /* TUPLE: [n_items]; DICT: key, value pairs [n_items] */
    size_t n_items;
    size_t cap_items;
    enum pk_global global;    /* GLOBAL */
    enum model_dtype dtype;   /* GLOBAL (storage class), STORAGE */
    const uint8_t *data;      /* STORAGE: [numel] of dtype */
    int64_t numel;            /* STORAGE */
    struct pk_value *storage; /* TENSOR */
    int64_t offset;           /* TENSOR: storage offset in elements */
    struct pk_value *size;    /* TENSOR: TUPLE of INT */
    struct pk_value *stride;  /* TENSOR: TUPLE of INT */
};

struct unpickler {
    const uint8_t *pkl;
    size_t len;
    size_t pos;    /* next byte to read */
    size_t op_pos; /* offset of the opcode being run, for messages */
    const char *file;
    model_storage_lookup_fn lookup;
    void *user;
    char *errstr;
    size_t errstr_len;

    struct pk_value **arena; /* every value allocated, freed at the end */
    size_t n_arena, cap_arena;
    struct pk_value **stack;
    size_t n_stack, cap_stack;
    size_t marks[MODEL_PICKLE_MAX_MARKS];
    size_t n_marks;
    struct pk_value **memo;
    size_t n_memo, cap_memo;
};

static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) {
        return p;
    }
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        n *= 2;
    }
    *cap = n;
    return xrealloc(p, n * elem);
}

static int pk_fail(struct unpickler *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int pk_fail(struct unpickler *u, const char *fmt, ...)
{
    char msg[ERRSTR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    errstr_set(u->errstr, u->errstr_len, "%s: data.pkl offset %zu: %s", u->file, u->op_pos, msg);
    return -EPROTO;
}

static struct pk_value *pk_new(struct unpickler *u, enum pk_kind kind)
{
    struct pk_value *v = xcalloc(1, sizeof(*v));
    v->kind = kind;
    u->arena = grow(u->arena, &u->cap_arena, u->n_arena + 1, sizeof(*u->arena));
    u->arena[u->n_arena++] = v;
    return v;
}

static int pk_push(struct unpickler *u, struct pk_value *v)
{
    if (u->n_stack >= MODEL_PICKLE_MAX_STACK) {
        return pk_fail(u, "stack depth limit exceeded");
    }
    u->stack = grow(u->stack, &u->cap_stack, u->n_stack + 1, sizeof(*u->stack));
    u->stack[u->n_stack++] = v;
    return 0;
}

/* Values above the innermost MARK start here; pops the mark. */
static int pk_pop_mark(struct unpickler *u, size_t *start)
{
    if (u->n_marks == 0) {
        return pk_fail(u, "no MARK on the stack");
    }
    *start = u->marks[--u->n_marks];
    return 0;
}

static int pk_pop(struct unpickler *u, struct pk_value **out)
{
    size_t floor = u->n_marks ? u->marks[u->n_marks - 1] : 0;
    if (u->n_stack <= floor) {
        return pk_fail(u, "stack underflow");
    }
    *out = u->stack[--u->n_stack];
    return 0;
}

static int pk_top(struct unpickler *u, struct pk_value **out)
{
    size_t floor = u->n_marks ? u->marks[u->n_marks - 1] : 0;
    if (u->n_stack <= floor) {
        return pk_fail(u, "stack underflow");
    }
    *out = u->stack[u->n_stack - 1];
    return 0;
}

static int pk_read(struct unpickler *u, size_t n, const uint8_t **out)
{
    if (n > u->len - u->pos) {
        return pk_fail(u, "truncated operand");
    }
    *out = u->pkl + u->pos;
    u->pos += n;
    return 0;
}

/* Strict UTF-8 (no overlongs, surrogates or code points above U+10FFFF) without NUL bytes,
 * since names become C strings. */
static bool pk_utf8_valid(const uint8_t *s, size_t n)
{
    return memchr(s, 0, n) == NULL && utf8_validate((const char *)s, n) == n;
}

/* Copies untrusted bytes for an error message, replacing anything unprintable. */
static void pk_printable(char *dst, size_t dst_len, const char *src, size_t n)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < dst_len; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[j++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    dst[j] = '\0';
}

static int pk_string(struct unpickler *u, size_t n)
{
    const uint8_t *p = NULL;
    int err = pk_read(u, n, &p);
    if (err) {
        return err;
    }
    if (!pk_utf8_valid(p, n)) {
        return pk_fail(u, "string is not valid UTF-8 or holds a NUL");
    }
    struct pk_value *v = pk_new(u, PK_KIND_STR);
    v->s = (const char *)p;
    v->len = n;
    return pk_push(u, v);
}

static int pk_int(struct unpickler *u, int64_t x)
{
    struct pk_value *v = pk_new(u, PK_KIND_INT);
    v->i = x;
    return pk_push(u, v);
}

/* Looks a module and name up in the allow-list; anything else is refused, never imported. */
static int pk_global(struct unpickler *u, const char *module, size_t module_len, const char *name,
                     size_t name_len)
{
    for (size_t i = 0; i < ARRAY_LEN(pk_allowed); i++) {
        if (strlen(pk_allowed[i].module) == module_len &&
            memcmp(pk_allowed[i].module, module, module_len) == 0 &&
            strlen(pk_allowed[i].name) == name_len &&
            memcmp(pk_allowed[i].name, name, name_len) == 0) {
            struct pk_value *v = pk_new(u, PK_KIND_GLOBAL);
            v->global = pk_allowed[i].global;
            v->dtype = pk_allowed[i].dtype;
            return pk_push(u, v);
        }
    }
    char m[96], n[96];
    pk_printable(m, sizeof(m), module, module_len);
    pk_printable(n, sizeof(n), name, name_len);
    return pk_fail(u, "forbidden global '%s %s'", m, n);
}

/* GLOBAL: "module\nname\n". */
static int pk_op_global(struct unpickler *u)
{
    const char *parts[2];
    size_t lens[2];
    for (int k = 0; k < 2; k++) {
        const uint8_t *start = u->pkl + u->pos;
        size_t avail = u->len - u->pos;
        const uint8_t *nl = memchr(start, '\n', avail < 256 ? avail : 256);
        if (!nl) {
            return pk_fail(u, "GLOBAL operand is unterminated or too long");
        }
        parts[k] = (const char *)start;
        lens[k] = (size_t)(nl - start);
        u->pos += lens[k] + 1;
    }
    return pk_global(u, parts[0], lens[0], parts[1], lens[1]);
}

static int pk_op_stack_global(struct unpickler *u)
{
    struct pk_value *name = NULL, *module = NULL;
    int err = pk_pop(u, &name);
    if (!err) {
        err = pk_pop(u, &module);
    }
    if (err) {
        return err;
    }
    if (name->kind != PK_KIND_STR || module->kind != PK_KIND_STR) {
        return pk_fail(u, "STACK_GLOBAL needs two strings");
    }
    return pk_global(u, module->s, module->len, name->s, name->len);
}

/* Builds a tuple from the stack entries [start, n_stack). */
static int pk_make_tuple(struct unpickler *u, size_t start)
{
    struct pk_value *t = pk_new(u, PK_KIND_TUPLE);
    t->n_items = u->n_stack - start;
    t->items = xmalloc((t->n_items + 1) * sizeof(*t->items));
    if (t->n_items > 0) {
        memcpy(t->items, u->stack + start, t->n_items * sizeof(*t->items));
    }
    u->n_stack = start;
    return pk_push(u, t);
}

static int pk_tuple_n(struct unpickler *u, size_t n)
{
    size_t floor = u->n_marks ? u->marks[u->n_marks - 1] : 0;
    if (u->n_stack - floor < n) {
        return pk_fail(u, "stack underflow");
    }
    return pk_make_tuple(u, u->n_stack - n);
}

static void pk_dict_add(struct pk_value *d, struct pk_value *key, struct pk_value *value)
{
    d->items = grow(d->items, &d->cap_items, d->n_items + 2, sizeof(*d->items));
    d->items[d->n_items++] = key;
    d->items[d->n_items++] = value;
}

static int pk_op_setitems(struct unpickler *u)
{
    size_t start = 0;
    int err = pk_pop_mark(u, &start);
    if (err) {
        return err;
    }
    size_t floor = u->n_marks ? u->marks[u->n_marks - 1] : 0;
    if (start <= floor) {
        return pk_fail(u, "stack underflow");
    }
    struct pk_value *d = u->stack[start - 1];
    if (d->kind != PK_KIND_DICT) {
        return pk_fail(u, "SETITEMS target is not a dict");
    }
    if ((u->n_stack - start) % 2 != 0) {
        return pk_fail(u, "SETITEMS needs key, value pairs");
    }
    for (size_t i = start; i < u->n_stack; i += 2) {
        pk_dict_add(d, u->stack[i], u->stack[i + 1]);
    }
    u->n_stack = start;
    return 0;
}

static int pk_op_setitem(struct unpickler *u)
{
    struct pk_value *key = NULL, *value = NULL, *d = NULL;
    int err;
    if ((err = pk_pop(u, &value)) || (err = pk_pop(u, &key)) || (err = pk_top(u, &d))) {
        return err;
    }
    if (d->kind != PK_KIND_DICT) {
        return pk_fail(u, "SETITEM target is not a dict");
    }
    pk_dict_add(d, key, value);
    return 0;
}

static bool pk_is_empty_dict(const struct pk_value *v)
{
    return v->kind == PK_KIND_DICT && v->n_items == 0;
}

static bool pk_is_int_tuple(const struct pk_value *v)
{
    if (v->kind != PK_KIND_TUPLE) {
        return false;
    }
    for (size_t i = 0; i < v->n_items; i++) {
        if (v->items[i]->kind != PK_KIND_INT) {
            return false;
        }
    }
    return true;
}

/* REDUCE: only OrderedDict() and _rebuild_tensor_v2(storage, storage_offset, size, stride,
 * requires_grad, backward_hooks[, metadata]) with empty hooks and metadata. */
static int pk_op_reduce(struct unpickler *u)
{
    struct pk_value *args = NULL, *fn = NULL;
    int err;
    if ((err = pk_pop(u, &args)) || (err = pk_pop(u, &fn))) {
        return err;
    }
    if (fn->kind != PK_KIND_GLOBAL || args->kind != PK_KIND_TUPLE) {
        return pk_fail(u, "REDUCE needs an allowed global and an argument tuple");
    }
    if (fn->global == PK_GLOBAL_ORDERED_DICT) {
        if (args->n_items != 0) {
            return pk_fail(u, "OrderedDict() with arguments is not supported");
        }
        return pk_push(u, pk_new(u, PK_KIND_DICT));
    }
    if (fn->global != PK_GLOBAL_REBUILD_TENSOR_V2) {
        return pk_fail(u, "REDUCE of a storage class is not allowed");
    }
    struct pk_value **a = args->items;
    if (args->n_items != 6 && args->n_items != 7) {
        return pk_fail(u, "_rebuild_tensor_v2 needs 6 or 7 arguments");
    }
    if (a[0]->kind != PK_KIND_STORAGE || a[1]->kind != PK_KIND_INT || a[1]->i < 0 ||
        !pk_is_int_tuple(a[2]) || !pk_is_int_tuple(a[3]) || a[4]->kind != PK_KIND_BOOL ||
        !pk_is_empty_dict(a[5]) || (args->n_items == 7 && !pk_is_empty_dict(a[6]))) {
        return pk_fail(u, "_rebuild_tensor_v2 arguments must be (storage, offset >= 0, size tuple, "
                          "stride tuple, bool, {}[, {}])");
    }
    struct pk_value *t = pk_new(u, PK_KIND_TENSOR);
    t->storage = a[0];
    t->offset = a[1]->i;
    t->size = a[2];
    t->stride = a[3];
    return pk_push(u, t);
}

/* BINPERSID with ('storage', StorageClass, key, location, numel): resolves the storage bytes
 * and checks their size against numel. */
static int pk_op_binpersid(struct unpickler *u)
{
    struct pk_value *pid = NULL;
    int err = pk_pop(u, &pid);
    if (err) {
        return err;
    }
    struct pk_value **a = pid->items;
    if (pid->kind != PK_KIND_TUPLE || pid->n_items != 5 || a[0]->kind != PK_KIND_STR ||
        a[0]->len != 7 || memcmp(a[0]->s, "storage", 7) != 0 || a[1]->kind != PK_KIND_GLOBAL ||
        a[1]->global != PK_GLOBAL_STORAGE_CLASS || a[2]->kind != PK_KIND_STR ||
        a[3]->kind != PK_KIND_STR || a[4]->kind != PK_KIND_INT || a[4]->i < 0) {
        return pk_fail(u, "persistent id must be ('storage', StorageClass, key, location, numel)");
    }
    char key[64];
    pk_printable(key, sizeof(key), a[2]->s, a[2]->len);
    const uint8_t *data = NULL;
    size_t n_bytes = 0;
    if (u->lookup(u->user, a[2]->s, a[2]->len, &data, &n_bytes) != 0) {
        return pk_fail(u, "storage '%s' is missing from the archive", key);
    }
    uint64_t want;
    if (__builtin_mul_overflow((uint64_t)a[4]->i, (uint64_t)model_dtype_size(a[1]->dtype), &want) ||
        want != n_bytes) {
        return pk_fail(u, "storage '%s' holds %zu bytes, not %lld %s elements", key, n_bytes,
                       (long long)a[4]->i, model_dtype_name(a[1]->dtype));
    }
    struct pk_value *s = pk_new(u, PK_KIND_STORAGE);
    s->dtype = a[1]->dtype;
    s->data = data;
    s->numel = a[4]->i;
    return pk_push(u, s);
}

/* BUILD on a dict: torch sets the state dict's _metadata attribute (a dict of dicts) this way;
 * the state is ignored. */
static int pk_op_build(struct unpickler *u)
{
    struct pk_value *state = NULL, *obj = NULL;
    int err;
    if ((err = pk_pop(u, &state)) || (err = pk_top(u, &obj))) {
        return err;
    }
    if (obj->kind != PK_KIND_DICT || (state->kind != PK_KIND_DICT && state->kind != PK_KIND_NONE)) {
        return pk_fail(u, "BUILD is only allowed on a dict with a dict state");
    }
    return 0;
}

static int pk_memo_put(struct unpickler *u, size_t idx)
{
    struct pk_value *v = NULL;
    int err = pk_top(u, &v);
    if (err) {
        return err;
    }
    /* Picklers number memo slots in order; requiring it bounds the memo by the input size. */
    if (idx > u->n_memo || idx >= MODEL_PICKLE_MAX_MEMO) {
        return pk_fail(u, "memo index out of order");
    }
    if (idx == u->n_memo) {
        u->memo = grow(u->memo, &u->cap_memo, u->n_memo + 1, sizeof(*u->memo));
        u->n_memo++;
    }
    u->memo[idx] = v;
    return 0;
}

static int pk_memo_get(struct unpickler *u, size_t idx)
{
    if (idx >= u->n_memo) {
        return pk_fail(u, "memo index not defined");
    }
    return pk_push(u, u->memo[idx]);
}

/* The name of an opcode this reader refuses, for messages. */
static const char *pk_op_name(uint8_t op)
{
    static const struct {
        uint8_t op;
        const char *name;
    } names[] = {
        { '0', "POP" },
        { '1', "POP_MARK" },
        { '2', "DUP" },
        { 'F', "FLOAT" },
        { 'I', "INT" },
        { 'L', "LONG" },
        { 'P', "PERSID" },
        { 'S', "STRING" },
        { 'T', "BINSTRING" },
        { 'U', "SHORT_BINSTRING" },
        { 'V', "UNICODE" },
        { 'a', "APPEND" },
        { 'd', "DICT" },
        { 'e', "APPENDS" },
        { 'g', "GET" },
        { 'i', "INST" },
        { 'l', "LIST" },
        { ']', "EMPTY_LIST" },
        { 'o', "OBJ" },
        { 'p', "PUT" },
        { 'G', "BINFLOAT" },
        { 'B', "BINBYTES" },
        { 'C', "SHORT_BINBYTES" },
        { 0x81, "NEWOBJ" },
        { 0x82, "EXT1" },
        { 0x83, "EXT2" },
        { 0x84, "EXT4" },
        { 0x8b, "LONG4" },
        { 0x8d, "BINUNICODE8" },
        { 0x8e, "BINBYTES8" },
        { 0x8f, "EMPTY_SET" },
        { 0x90, "ADDITEMS" },
        { 0x91, "FROZENSET" },
        { 0x92, "NEWOBJ_EX" },
        { 0x96, "BYTEARRAY8" },
        { 0x97, "NEXT_BUFFER" },
        { 0x98, "READONLY_BUFFER" },
    };
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        if (names[i].op == op) {
            return names[i].name;
        }
    }
    return "not a pickle opcode";
}

/* Runs one opcode at u->pos. Sets *done on STOP. */
static int pk_step(struct unpickler *u, bool *done)
{
    const uint8_t *p = NULL;
    int err;
    u->op_pos = u->pos;
    if (u->n_arena >= MODEL_PICKLE_MAX_VALUES) {
        return pk_fail(u, "value count limit exceeded"); /* each opcode makes at most one */
    }
    uint8_t op = u->pkl[u->pos++];
    switch (op) {
    case PK_OP_PROTO:
        if ((err = pk_read(u, 1, &p)) != 0) {
            return err;
        }
        if (p[0] < 2 || p[0] > 5) {
            return pk_fail(u, "pickle protocol must be 2 to 5");
        }
        return 0;
    case PK_OP_FRAME:
        /* Framing is only a read-ahead hint; the frame must still lie inside the input. */
        if ((err = pk_read(u, 8, &p)) != 0) {
            return err;
        }
        if (load_le64(p) > u->len - u->pos) {
            return pk_fail(u, "FRAME runs past the end");
        }
        return 0;
    case PK_OP_MARK:
        if (u->n_marks >= MODEL_PICKLE_MAX_MARKS) {
            return pk_fail(u, "MARK nesting limit exceeded");
        }
        u->marks[u->n_marks++] = u->n_stack;
        return 0;
    case PK_OP_EMPTY_DICT:
        return pk_push(u, pk_new(u, PK_KIND_DICT));
    case PK_OP_EMPTY_TUPLE:
        return pk_make_tuple(u, u->n_stack);
    case PK_OP_TUPLE: {
        size_t start = 0;
        if ((err = pk_pop_mark(u, &start)) != 0) {
            return err;
        }
        return pk_make_tuple(u, start);
    }
    case PK_OP_TUPLE1:
        return pk_tuple_n(u, 1);
    case PK_OP_TUPLE2:
        return pk_tuple_n(u, 2);
    case PK_OP_TUPLE3:
        return pk_tuple_n(u, 3);
    case PK_OP_NONE:
        return pk_push(u, pk_new(u, PK_KIND_NONE));
    case PK_OP_NEWTRUE:
    case PK_OP_NEWFALSE: {
        struct pk_value *v = pk_new(u, PK_KIND_BOOL);
        v->i = op == PK_OP_NEWTRUE;
        return pk_push(u, v);
    }
    case PK_OP_BININT:
        if ((err = pk_read(u, 4, &p)) != 0) {
            return err;
        }
        return pk_int(u, (int32_t)load_le32(p));
    case PK_OP_BININT1:
        if ((err = pk_read(u, 1, &p)) != 0) {
            return err;
        }
        return pk_int(u, p[0]);
    case PK_OP_BININT2:
        if ((err = pk_read(u, 2, &p)) != 0) {
            return err;
        }
        return pk_int(u, load_le16(p));
    case PK_OP_LONG1: {
        if ((err = pk_read(u, 1, &p)) != 0) {
            return err;
        }
        size_t n = p[0];
        if (n > 8) {
            return pk_fail(u, "LONG1 wider than 64 bits");
        }
        if ((err = pk_read(u, n, &p)) != 0) {
            return err;
        }
        uint64_t x = 0;
        for (size_t i = n; i-- > 0;) {
            x = (x << 8) | p[i];
        }
        if (n > 0 && n < 8 && (p[n - 1] & 0x80)) {
            x |= ~(uint64_t)0 << (8 * n); /* sign-extend two's complement */
        }
        return pk_int(u, (int64_t)x);
    }
    case PK_OP_BINUNICODE:
        if ((err = pk_read(u, 4, &p)) != 0) {
            return err;
        }
        return pk_string(u, load_le32(p));
    case PK_OP_SHORT_BINUNICODE:
        if ((err = pk_read(u, 1, &p)) != 0) {
            return err;
        }
        return pk_string(u, p[0]);
    case PK_OP_BINPUT:
        if ((err = pk_read(u, 1, &p)) != 0) {
            return err;
        }
        return pk_memo_put(u, p[0]);
    case PK_OP_LONG_BINPUT:
        if ((err = pk_read(u, 4, &p)) != 0) {
            return err;
        }
        return pk_memo_put(u, load_le32(p));
    case PK_OP_MEMOIZE:
        return pk_memo_put(u, u->n_memo);
    case PK_OP_BINGET:
        if ((err = pk_read(u, 1, &p)) != 0) {
            return err;
        }
        return pk_memo_get(u, p[0]);
    case PK_OP_LONG_BINGET:
        if ((err = pk_read(u, 4, &p)) != 0) {
            return err;
        }
        return pk_memo_get(u, load_le32(p));
    case PK_OP_GLOBAL:
        return pk_op_global(u);
    case PK_OP_STACK_GLOBAL:
        return pk_op_stack_global(u);
    case PK_OP_REDUCE:
        return pk_op_reduce(u);
    case PK_OP_BINPERSID:
        return pk_op_binpersid(u);
    case PK_OP_SETITEM:
        return pk_op_setitem(u);
    case PK_OP_SETITEMS:
        return pk_op_setitems(u);
    case PK_OP_BUILD:
        return pk_op_build(u);
    case PK_OP_STOP:
        if (u->n_marks != 0 || u->n_stack != 1) {
            return pk_fail(u, "STOP needs exactly one value on the stack and no MARK");
        }
        *done = true;
        return 0;
    default:
        return pk_fail(u, "unsupported pickle opcode 0x%02x (%s)", op, pk_op_name(op));
    }
}

/* Turns one dict entry into a tensor view: contiguous row-major strides, inside its storage. */
static int pk_emit_tensor(struct unpickler *u, const struct pk_value *key,
                          const struct pk_value *val, struct model_tensor_vec *out)
{
    char name[128];
    if (key->kind != PK_KIND_STR || key->len == 0) {
        errstr_set(u->errstr, u->errstr_len, "%s: data.pkl: state dict key must be a string",
                   u->file);
        return -EPROTO;
    }
    pk_printable(name, sizeof(name), key->s, key->len);
    if (val->kind != PK_KIND_TENSOR) {
        errstr_set(u->errstr, u->errstr_len, "%s: tensor '%s': data.pkl value is not a tensor",
                   u->file, name);
        return -EPROTO;
    }
    const struct pk_value *size = val->size, *stride = val->stride, *st = val->storage;
    if (size->n_items > MODEL_MAX_DIMS || stride->n_items != size->n_items) {
        errstr_set(u->errstr, u->errstr_len,
                   "%s: tensor '%s': rank %zu with %zu strides (at most %d dims)", u->file, name,
                   size->n_items, stride->n_items, MODEL_MAX_DIMS);
        return -EPROTO;
    }
    uint64_t n_elems = 1;
    for (size_t i = 0; i < size->n_items; i++) {
        int64_t d = size->items[i]->i;
        if (d < 0 || __builtin_mul_overflow(n_elems, (uint64_t)d, &n_elems) ||
            n_elems > INT64_MAX) {
            errstr_set(u->errstr, u->errstr_len, "%s: tensor '%s': bad size at dim %zu", u->file,
                       name, i);
            return -EPROTO;
        }
    }
    if (n_elems > 0) {
        int64_t expect = 1;
        for (size_t i = size->n_items; i-- > 0;) {
            int64_t d = size->items[i]->i;
            if (d != 1 && stride->items[i]->i != expect) {
                errstr_set(u->errstr, u->errstr_len,
                           "%s: tensor '%s': stride %lld at dim %zu is not contiguous row-major "
                           "(expected %lld)",
                           u->file, name, (long long)stride->items[i]->i, i, (long long)expect);
                return -EPROTO;
            }
            expect *= d; /* cannot overflow: bounded by n_elems */
        }
    }
    uint64_t end;
    if (__builtin_add_overflow((uint64_t)val->offset, n_elems, &end) || end > (uint64_t)st->numel) {
        errstr_set(u->errstr, u->errstr_len,
                   "%s: tensor '%s': elements [%lld, +%llu] lie outside its %lld-element storage",
                   u->file, name, (long long)val->offset, (unsigned long long)n_elems,
                   (long long)st->numel);
        return -EPROTO;
    }
    size_t elsize = model_dtype_size(st->dtype);
    struct model_tensor *t = model_tensor_vec_push(out);
    t->name = xstrndup(key->s, key->len);
    t->dtype = st->dtype;
    t->n_dims = (int)size->n_items;
    for (size_t i = 0; i < size->n_items; i++) {
        t->shape[i] = size->items[i]->i;
    }
    t->n_elems = (int64_t)n_elems;
    t->n_bytes = (size_t)n_elems * elsize;
    t->data = st->data ? st->data + (size_t)val->offset * elsize : st->data;
    t->file = u->file;
    return 0;
}

int model_pickle_load(const uint8_t *pkl, size_t len, const char *file,
                      model_storage_lookup_fn lookup, void *user, struct model_tensor_vec *out,
                      char *errstr, size_t errstr_len)
{
    const size_t n_before = out->n;
    struct unpickler u;
    memset(&u, 0, sizeof(u));
    u.pkl = pkl;
    u.len = len;
    u.file = file;
    u.lookup = lookup;
    u.user = user;
    u.errstr = errstr;
    u.errstr_len = errstr_len;

    int err = 0;
    bool done = false;
    if (len > MODEL_PICKLE_MAX_BYTES) {
        err = pk_fail(&u, "data.pkl is larger than the limit");
        goto fail;
    }
    while (!done) {
        if (u.pos >= u.len) {
            u.op_pos = u.pos;
            err = pk_fail(&u, "truncated: no STOP opcode");
            goto fail;
        }
        if ((err = pk_step(&u, &done)) != 0) {
            goto fail;
        }
    }
    const struct pk_value *root = u.stack[0];
    if (root->kind != PK_KIND_DICT) {
        errstr_set(errstr, errstr_len,
                   "%s: data.pkl: top-level object is not a state dict of tensors", file);
        err = -EPROTO;
        goto fail;
    }
    for (size_t i = 0; i < root->n_items; i += 2) {
        if ((err = pk_emit_tensor(&u, root->items[i], root->items[i + 1], out)) != 0) {
            goto fail;
        }
    }
    goto done;

fail:
    while (out->n > n_before) {
        out->n--;
        free((char *)out->items[out->n].name);
        out->items[out->n].name = NULL;
    }
done:
    for (size_t i = 0; i < u.n_arena; i++) {
        free(u.arena[i]->items);
        free(u.arena[i]);
    }
    free(u.arena);
    free(u.stack);
    free(u.memo);
    return err;
}
