/* tok_hf.c - reads a Hugging Face tokenizer.json of the LLaMA kind (model type BPE with
 * byte_fallback) and encodes with Hugging Face's BPE: the input is split into characters (unknown
 * ones become <0xNN> byte pieces before merging, else <unk>), and the adjacent pair with the lowest
 * rank in `merges` is merged first, ties to the leftmost (tokenizers' Word::merge_all).
 *
 * Supported pipeline: normalizer null, Prepend, Replace (literal String pattern) or a Sequence of
 * them (LLaMA-2: Prepend "▁", Replace " " -> "▁"); pre_tokenizer null or Metaspace (newer files).
 * Special added tokens are CONTROL pieces and never matched in the text; non-special added tokens
 * are matched in the raw text, longest first, as if normalized were false. Decoding uses
 * SentencePiece's rules (tokenizer.c) with add_dummy_prefix taken from the normalizer. */
#include "common/json.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_PAIR_EMPTY UINT64_MAX

/* ---- the merges table ---------------------------------------------------------------------- */

static inline size_t hf_pair_hash(uint64_t key)
{
    key ^= key >> 31;
    key *= 0x9e3779b97f4a7c15ULL;
    key ^= key >> 29;
    return (size_t)key;
}

static struct tok_pair_slot *hf_pair_slot(const struct tok *t, uint64_t key)
{
    size_t i = hf_pair_hash(key) & t->pair_mask;
    while (t->pairs[i].key != TOK_PAIR_EMPTY && t->pairs[i].key != key) {
        i = (i + 1) & t->pair_mask;
    }
    return &t->pairs[i];
}

/* Bits of the negative filter over merge pairs, 2^19 = 64 KB: most adjacent pairs are not
 * merges, and the filter answers them without touching the (megabytes) table. */
#define HF_PAIR_FILTER_MASK ((1u << 19) - 1)

static inline uint32_t hf_pair_filter_bit(uint64_t key)
{
    return (uint32_t)((key * 0xd6e8feb86659fd93ULL) >> 40) & HF_PAIR_FILTER_MASK;
}

static inline const struct tok_pair_slot *hf_pair_get(const struct tok *t, int32_t left,
                                                      int32_t right)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    uint32_t bit = hf_pair_filter_bit(key);
    if (!(t->pair_filter[bit >> 6] >> (bit & 63) & 1)) {
        return NULL;
    }
    const struct tok_pair_slot *s = hf_pair_slot(t, key);
    return s->key == TOK_PAIR_EMPTY ? NULL : s;
}
void tok_impl_hf_free(struct tok *t)
{
    for (size_t i = 0; i < t->n_hf_steps; i++) {
        free(t->hf_steps[i].from);
        free(t->hf_steps[i].to);
    }
    free(t->hf_steps);
    t->hf_steps = NULL;
    t->n_hf_steps = 0;
    free(t->pairs);
    t->pairs = NULL;
    free(t->pair_filter);
    t->pair_filter = NULL;
    free(t->hf_replacement);
    t->hf_replacement = NULL;
}

/* ---- loading ------------------------------------------------------------------------------- */

struct hf_ctx {
    const char *name;
    char *errstr;
    size_t errstr_len;
};

static int hf_fail(struct hf_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int hf_fail(struct hf_ctx *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    errstr_set(c->errstr, c->errstr_len, "%s: %s", c->name, msg);
    return -EINVAL;
}

/* Reads an optional string member: NULL when absent or null, -EINVAL when another type. */
static int hf_opt_string(struct hf_ctx *c, const json_t *obj, const char *key, const json_t **out)
{
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v)) {
        return hf_fail(c, "field '%s' must be a string", key);
    }
    *out = v;
    return 0;
}

static int hf_opt_bool(struct hf_ctx *c, const json_t *obj, const char *key, bool *out)
{
    return json_field_bool(obj, key, out, c->name, c->errstr, c->errstr_len);
}

static void hf_add_step(struct tok *t, enum tok_hf_step_kind kind, const char *from,
                        size_t from_len, const char *to, size_t to_len)
{
    t->hf_steps = xrealloc(t->hf_steps, (t->n_hf_steps + 1) * sizeof(*t->hf_steps));
    struct tok_hf_step *s = &t->hf_steps[t->n_hf_steps++];
    s->kind = kind;
    s->from = NULL;
    s->from_len = from_len;
    if (from) {
        s->from = xmalloc(from_len + 1);
        memcpy(s->from, from, from_len);
        s->from[from_len] = '\0';
    }
    s->to = xmalloc(to_len + 1);
    memcpy(s->to, to, to_len);
    s->to[to_len] = '\0';
    s->to_len = to_len;
}

static int hf_parse_normalizer(struct hf_ctx *c, struct tok *t, const json_t *n, int depth)
{
    if (!n || json_is_null(n)) {
        return 0;
    }
    if (!json_is_object(n) || depth > 8) {
        return hf_fail(c, "normalizer must be an object");
    }
    const char *type = json_string_value(json_object_get(n, "type"));
    if (!type) {
        return hf_fail(c, "normalizer has no 'type'");
    }
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(n, "normalizers");
        if (!json_is_array(list)) {
            return hf_fail(c, "normalizer Sequence needs a 'normalizers' array");
        }
        for (size_t i = 0; i < json_array_size(list); i++) {
            int err = hf_parse_normalizer(c, t, json_array_get(list, i), depth + 1);
            if (err) {
                return err;
            }
        }
        return 0;
    }
    if (strcmp(type, "Prepend") == 0) {
        const json_t *p;
        int err = hf_opt_string(c, n, "prepend", &p);
        if (err) {
            return err;
        }
        if (!p) {
            return hf_fail(c, "normalizer Prepend needs 'prepend'");
        }
        hf_add_step(t, TOK_HF_STEP_PREPEND, NULL, 0, json_string_value(p), json_string_length(p));
        return 0;
    }
    if (strcmp(type, "Replace") == 0) {
        const json_t *pattern = json_object_get(n, "pattern"), *from = NULL, *to;
        if (json_is_object(pattern)) {
            from = json_object_get(pattern, "String");
        }
        if (!json_is_string(from) || json_string_length(from) == 0) {
            return hf_fail(c, "normalizer Replace: only a non-empty {\"String\": ...} pattern is "
                              "supported");
        }
        int err = hf_opt_string(c, n, "content", &to);
        if (err) {
            return err;
        }
        if (!to) {
            return hf_fail(c, "normalizer Replace needs 'content'");
        }
        hf_add_step(t, TOK_HF_STEP_REPLACE, json_string_value(from), json_string_length(from),
                    json_string_value(to), json_string_length(to));
        return 0;
    }
    return hf_fail(c, "normalizer type '%s' is not supported", type);
}

static int hf_parse_metaspace(struct hf_ctx *c, struct tok *t, const json_t *m)
{
    const json_t *rep, *scheme;
    int err = hf_opt_string(c, m, "replacement", &rep);
    if (!err) {
        err = hf_opt_string(c, m, "prepend_scheme", &scheme);
    }
    if (err) {
        return err;
    }
    if (t->hf_metaspace) {
        return hf_fail(c, "more than one Metaspace pre_tokenizer");
    }
    t->hf_metaspace = true;
    const char *r = rep ? json_string_value(rep) : TOK_SPACE_SYMBOL;
    size_t r_len = rep ? json_string_length(rep) : TOK_SPACE_SYMBOL_LEN;
    if (r_len == 0 || tok_impl_utf8_len((const uint8_t *)r, r_len) != r_len) {
        return hf_fail(c, "Metaspace replacement must be one character");
    }
    t->hf_replacement = xstrndup(r, r_len);
    t->hf_replacement_len = r_len;
    t->hf_prepend = TOK_PREPEND_ALWAYS;
    bool add_prefix_space = true;
    err = hf_opt_bool(c, m, "add_prefix_space", &add_prefix_space);
    if (err) {
        return err;
    }
    if (!add_prefix_space) {
        t->hf_prepend = TOK_PREPEND_NEVER;
    }
    if (scheme) {
        const char *s = json_string_value(scheme);
        if (strcmp(s, "always") == 0) {
            t->hf_prepend = TOK_PREPEND_ALWAYS;
        } else if (strcmp(s, "first") == 0) {
            t->hf_prepend = TOK_PREPEND_FIRST;
        } else if (strcmp(s, "never") == 0) {
            t->hf_prepend = TOK_PREPEND_NEVER;
        } else {
            return hf_fail(c, "Metaspace prepend_scheme '%s' is not supported", s);
        }
    }
    t->hf_metaspace_split = true;
    return hf_opt_bool(c, m, "split", &t->hf_metaspace_split);
}

static int hf_parse_pre_tokenizer(struct hf_ctx *c, struct tok *t, const json_t *p)
{
    if (!p || json_is_null(p)) {
        return 0;
    }
    const char *type = json_is_object(p) ? json_string_value(json_object_get(p, "type")) : NULL;
    if (!type) {
        return hf_fail(c, "pre_tokenizer must be an object with a 'type'");
    }
    if (strcmp(type, "Metaspace") == 0) {
        return hf_parse_metaspace(c, t, p);
    }
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list)) {
            return hf_fail(c, "pre_tokenizer Sequence needs a 'pretokenizers' array");
        }
        for (size_t i = 0; i < json_array_size(list); i++) {
            const json_t *m = json_array_get(list, i);
            const char *mt =
                json_is_object(m) ? json_string_value(json_object_get(m, "type")) : NULL;
            if (!mt || strcmp(mt, "Metaspace") != 0) {
                return hf_fail(c, "pre_tokenizer '%s' is not supported (only Metaspace)",
                               mt ? mt : "?");
            }
            int err = hf_parse_metaspace(c, t, m);
            if (err) {
                return err;
            }
        }
        return 0;
    }
    return hf_fail(c, "pre_tokenizer '%s' is not supported (only Metaspace)", type);
}

/* Finds the ids of merge `s` ("left right"). Pieces may contain spaces themselves, so every space
 * is tried as the separator and the first split whose halves and concatenation are all in the
 * vocabulary wins. */
static int hf_split_merge(const struct tok *t, const char *s, size_t len, int32_t *left,
                          int32_t *right, int32_t *merged)
{
    char *joined = xmalloc(len + 1);
    int found = -1;
    for (size_t k = 1; k + 1 < len && found < 0; k++) {
        if (s[k] != ' ') {
            continue;
        }
        int32_t l = tok_impl_lookup(t, s, k);
        int32_t r = tok_impl_lookup(t, s + k + 1, len - k - 1);
        if (l < 0 || r < 0 || !t->in_bpe[l] || !t->in_bpe[r]) {
            continue;
        }
        memcpy(joined, s, k);
        memcpy(joined + k, s + k + 1, len - k - 1);
        int32_t m = tok_impl_lookup(t, joined, len - 1);
        if (m >= 0 && t->in_bpe[m]) {
            *left = l;
            *right = r;
            *merged = m;
            found = 0;
        }
    }
    free(joined);
    return found;
}

static int hf_parse_merges(struct hf_ctx *c, struct tok *t, const json_t *merges)
{
    char q[64];
    size_t n = json_array_size(merges);
    size_t cap = 16;
    while (cap < 2 * n) {
        cap *= 2;
    }
    t->pairs = xmalloc(cap * sizeof(*t->pairs));
    for (size_t i = 0; i < cap; i++) {
        t->pairs[i].key = TOK_PAIR_EMPTY;
    }
    t->pair_mask = cap - 1;
    t->pair_filter = xcalloc(((size_t)HF_PAIR_FILTER_MASK + 1) / 64, sizeof(*t->pair_filter));
    if (n > INT32_MAX) {
        return hf_fail(c, "too many merges");
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(merges, i);
        int32_t left = -1, right = -1, merged = -1;
        if (json_is_string(m)) {
            if (hf_split_merge(t, json_string_value(m), json_string_length(m), &left, &right,
                               &merged) != 0) {
                tok_impl_quote(q, sizeof(q), json_string_value(m), json_string_length(m));
                errstr_set(c->errstr, c->errstr_len,
                           "%s: merges[%zu] '%s' is not two vocabulary pieces separated by a "
                           "space whose concatenation is in the vocabulary",
                           c->name, i, q);
                return -EINVAL;
            }
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            const json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
            size_t la = json_string_length(a), lb = json_string_length(b);
            left = tok_impl_lookup(t, json_string_value(a), la);
            right = tok_impl_lookup(t, json_string_value(b), lb);
            char *joined = xmalloc(la + lb + 1);
            memcpy(joined, json_string_value(a), la);
            memcpy(joined + la, json_string_value(b), lb);
            merged = tok_impl_lookup(t, joined, la + lb);
            tok_impl_quote(q, sizeof(q), joined, la + lb);
            free(joined);
            if (left < 0 || right < 0 || merged < 0 || !t->in_bpe[left] || !t->in_bpe[right] ||
                !t->in_bpe[merged]) {
                errstr_set(c->errstr, c->errstr_len,
                           "%s: merges[%zu]: a half or the result '%s' is not in the vocabulary",
                           c->name, i, q);
                return -EINVAL;
            }
        } else {
            errstr_set(c->errstr, c->errstr_len,
                       "%s: merges[%zu] must be a string \"a b\" or an array [\"a\", \"b\"]",
                       c->name, i);
            return -EINVAL;
        }
        /* Text never turns into a control id: merges into or out of CONTROL pieces are left
         * out (tokenizers would split special tokens off the input first anyway). */
        if (t->types[left] == TOK_PIECE_CONTROL || t->types[right] == TOK_PIECE_CONTROL ||
            t->types[merged] == TOK_PIECE_CONTROL) {
            continue;
        }
        /* Later duplicates win, as in tokenizers' HashMap collect. */
        struct tok_pair_slot *s = hf_pair_slot(t, (uint64_t)(uint32_t)left << 32 | (uint32_t)right);
        s->key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
        s->rank = (int32_t)i;
        s->new_id = merged;
        uint32_t bit = hf_pair_filter_bit(s->key);
        t->pair_filter[bit >> 6] |= (uint64_t)1 << (bit & 63);
    }
    return 0;
}

/* Largest id in vocab and added_tokens, validating their shapes. */
static int hf_scan_ids(struct hf_ctx *c, const json_t *vocab, const json_t *added, size_t *n_ids,
                       int64_t *max_id)
{
    const char *key;
    size_t key_len;
    json_t *v;
    *max_id = -1;
    *n_ids = 0;
    json_object_keylen_foreach((json_t *)vocab, key, key_len, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= INT32_MAX) {
            char q[64];
            tok_impl_quote(q, sizeof(q), key, key_len);
            return hf_fail(c, "model.vocab['%s'] must be an id in [0, 2^31-1)", q);
        }
        if (json_integer_value(v) > *max_id) {
            *max_id = json_integer_value(v);
        }
        (*n_ids)++;
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i), *id = json_object_get(a, "id");
        const json_t *content = json_object_get(a, "content");
        if (!json_is_object(a) || !json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= INT32_MAX || !json_is_string(content) ||
            json_string_length(content) == 0) {
            return hf_fail(c, "added_tokens[%zu] needs an 'id' and a non-empty 'content'", i);
        }
        if (json_integer_value(id) > *max_id) {
            *max_id = json_integer_value(id);
        }
        (*n_ids)++;
    }
    return 0;
}

int tok_load_hf_json_buf(const char *buf, size_t len, const char *name, struct tok **out,
                         char *errstr, size_t errstr_len)
{
    struct tok_builder b = { 0 };
    struct hf_ctx c = { name ? name : "tokenizer.json", errstr, errstr_len };
    json_t *root = NULL;
    int err = -EINVAL;
    char q[64];

    *out = NULL;
    if (!buf && len > 0) {
        return hf_fail(&c, "no data");
    }
    root = json_parse_buf(buf ? buf : "", len, c.name, errstr, errstr_len);
    if (!root) {
        return -EINVAL;
    }
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(root) || !json_is_object(model)) {
        err = hf_fail(&c, "no 'model' object (not a tokenizer.json?)");
        goto fail;
    }
    const char *type = json_string_value(json_object_get(model, "type"));
    if (!type || strcmp(type, "BPE") != 0) {
        err = hf_fail(&c, "model.type is '%s'; only BPE is supported", type ? type : "(none)");
        goto fail;
    }
    const json_t *vocab = json_object_get(model, "vocab");
    const json_t *merges = json_object_get(model, "merges");
    const json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(vocab) || json_object_size(vocab) == 0) {
        err = hf_fail(&c, "model.vocab must be a non-empty object");
        goto fail;
    }
    if (merges && !json_is_null(merges) && !json_is_array(merges)) {
        err = hf_fail(&c, "model.merges must be an array");
        goto fail;
    }
    if (added && !json_is_null(added) && !json_is_array(added)) {
        err = hf_fail(&c, "added_tokens must be an array");
        goto fail;
    }
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) &&
        !(json_is_number(dropout) && json_number_value(dropout) == 0.0)) {
        err = hf_fail(&c, "model.dropout is not supported");
        goto fail;
    }
    const char *affixes[] = { "continuing_subword_prefix", "end_of_word_suffix" };
    for (size_t i = 0; i < ARRAY_LEN(affixes); i++) {
        const json_t *a;
        err = hf_opt_string(&c, model, affixes[i], &a);
        if (err) {
            goto fail;
        }
        if (a && json_string_length(a) > 0) {
            err = hf_fail(&c, "model.%s is not supported", affixes[i]);
            goto fail;
        }
    }

    size_t n_ids;
    int64_t max_id;
    err = hf_scan_ids(&c, vocab, added, &n_ids, &max_id);
    if (err) {
        goto fail;
    }
    if (max_id >= (int64_t)n_ids) {
        errstr_set(errstr, errstr_len,
                   "%s: id %lld but only %zu vocabulary entries and added tokens: ids must be "
                   "dense",
                   c.name, (long long)max_id, n_ids);
        err = -EINVAL;
        goto fail;
    }
    bool byte_fallback = false, fuse_unk = false, ignore_merges = false;
    err = hf_opt_bool(&c, model, "byte_fallback", &byte_fallback);
    if (!err) {
        err = hf_opt_bool(&c, model, "fuse_unk", &fuse_unk);
    }
    if (!err) {
        err = hf_opt_bool(&c, model, "ignore_merges", &ignore_merges);
    }
    if (err) {
        goto fail;
    }

    tok_impl_builder_init(&b, TOK_ALGO_HF, (int32_t)(max_id + 1));
    struct tok *t = b.t;
    t->byte_fallback = byte_fallback;
    t->hf_fuse_unk = fuse_unk;
    t->hf_ignore_merges = ignore_merges;
    t->add_dummy_prefix = false;
    t->remove_extra_ws = false;
    t->escape_ws = true;
    t->in_bpe = xcalloc((size_t)t->n_vocab, 1);

    const char *key;
    size_t key_len;
    json_t *v;
    json_object_keylen_foreach((json_t *)vocab, key, key_len, v)
    {
        int32_t id = (int32_t)json_integer_value(v);
        if (b.is_set[id]) {
            tok_impl_quote(q, sizeof(q), key, key_len);
            errstr_set(errstr, errstr_len, "%s: model.vocab: id %d is used twice (again by '%s')",
                       c.name, id, q);
            err = -EINVAL;
            goto fail;
        }
        bool is_byte = byte_fallback && tok_impl_byte_piece_value(key, key_len) >= 0;
        tok_impl_builder_set(&b, id, key, key_len, 0.0f,
                             is_byte ? TOK_PIECE_BYTE : TOK_PIECE_NORMAL);
        t->in_bpe[id] = 1;
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i);
        int32_t id = (int32_t)json_integer_value(json_object_get(a, "id"));
        const json_t *content = json_object_get(a, "content");
        bool special = false;
        err = hf_opt_bool(&c, a, "special", &special);
        if (err) {
            goto fail;
        }
        const char *s = json_string_value(content);
        size_t s_len = json_string_length(content);
        if (b.is_set[id] &&
            (t->lens[id] != s_len || memcmp(t->blob + t->offs[id], s, s_len) != 0)) {
            tok_impl_quote(q, sizeof(q), s, s_len);
            errstr_set(errstr, errstr_len,
                       "%s: added_tokens[%zu] '%s' has id %d, which the vocabulary gives to "
                       "another piece",
                       c.name, i, q, id);
            err = -EINVAL;
            goto fail;
        }
        if (!b.is_set[id]) {
            tok_impl_builder_set(&b, id, s, s_len, 0.0f, TOK_PIECE_NORMAL);
        }
        t->types[id] = special ? TOK_PIECE_CONTROL : TOK_PIECE_USER_DEFINED;
    }

    const json_t *unk;
    err = hf_opt_string(&c, model, "unk_token", &unk);
    if (err) {
        goto fail;
    }
    /* The piece hash is built by finish; look the specials up by scanning once instead. */
    if (unk) {
        const char *u = json_string_value(unk);
        size_t u_len = json_string_length(unk);
        int32_t unk_id = -1;
        for (int32_t id = 0; id < t->n_vocab && unk_id < 0; id++) {
            if (b.is_set[id] && t->in_bpe[id] && t->lens[id] == u_len &&
                memcmp(t->blob + t->offs[id], u, u_len) == 0) {
                unk_id = id;
            }
        }
        if (unk_id < 0) {
            tok_impl_quote(q, sizeof(q), u, u_len);
            err = hf_fail(&c, "model.unk_token '%s' is not in model.vocab", q);
            goto fail;
        }
        t->types[unk_id] = TOK_PIECE_UNKNOWN;
    }

    err = tok_impl_finish(&b, false, c.name, out, errstr, errstr_len);
    if (err) {
        goto fail;
    }
    t = *out;
    err = hf_parse_merges(&c, t, merges);
    if (!err) {
        err = hf_parse_normalizer(&c, t, json_object_get(root, "normalizer"), 0);
    }
    if (!err) {
        err = hf_parse_pre_tokenizer(&c, t, json_object_get(root, "pre_tokenizer"));
    }
    if (err) {
        tok_destroy(*out);
        *out = NULL;
        goto fail;
    }
    for (size_t i = 0; i < t->n_hf_steps; i++) {
        /* The dummy prefix whose space decode drops, as the decoder's Strip would. */
        const struct tok_hf_step *st = &t->hf_steps[i];
        if (st->kind == TOK_HF_STEP_PREPEND && st->to_len == TOK_SPACE_SYMBOL_LEN &&
            memcmp(st->to, TOK_SPACE_SYMBOL, TOK_SPACE_SYMBOL_LEN) == 0) {
            t->add_dummy_prefix = true;
        }
    }
    if (t->hf_metaspace && t->hf_prepend != TOK_PREPEND_NEVER) {
        t->add_dummy_prefix = true;
    }
    for (int byte = 0; byte < 128; byte++) {
        char ch = (char)byte;
        t->hf_ascii_ids[byte] = tok_impl_lookup(t, &ch, 1);
    }
    const char *ws = t->hf_metaspace ? t->hf_replacement : TOK_SPACE_SYMBOL;
    size_t ws_len = t->hf_metaspace ? t->hf_replacement_len : TOK_SPACE_SYMBOL_LEN;
    t->hf_ws_id = tok_impl_lookup(t, ws, ws_len);
    t->ws_split = t->hf_ws_id >= 0 && t->in_bpe[t->hf_ws_id] &&
                  t->types[t->hf_ws_id] != TOK_PIECE_CONTROL && tok_impl_ws_split_ok(t, ws, ws_len);
    int32_t bos = tok_impl_lookup(t, "<s>", 3), eos = tok_impl_lookup(t, "</s>", 4);
    t->bos_id = bos >= 0 && t->types[bos] == TOK_PIECE_CONTROL ? bos : -1;
    t->eos_id = eos >= 0 && t->types[eos] == TOK_PIECE_CONTROL ? eos : -1;
    tok_impl_builder_deinit(&b);
    json_decref(root);
    return 0;

fail:
    tok_impl_builder_deinit(&b);
    json_decref(root);
    return err;
}

/* ---- encoding ------------------------------------------------------------------------------ */

/* A growable byte string. */
struct hf_str {
    char *s;
    size_t len;
    size_t cap;
};

static void hf_str_reserve(struct hf_str *s, size_t more)
{
    if (s->len + more + 1 > s->cap) {
        s->cap = (s->len + more + 1) * 2;
        s->s = xrealloc(s->s, s->cap);
    }
}

static void hf_str_append(struct hf_str *s, const char *p, size_t n)
{
    hf_str_reserve(s, n);
    memcpy(s->s + s->len, p, n);
    s->len += n;
}

/* Applies one normalizer step from `in` into `out` (out is cleared first). */
static void hf_apply_step(const struct tok_hf_step *step, const char *in, size_t n,
                          struct hf_str *out)
{
    out->len = 0;
    if (step->kind == TOK_HF_STEP_PREPEND) {
        if (n > 0) {
            hf_str_append(out, step->to, step->to_len);
        }
        hf_str_append(out, in, n);
        return;
    }
    for (size_t i = 0; i < n;) {
        if (i + step->from_len <= n && memcmp(in + i, step->from, step->from_len) == 0) {
            hf_str_append(out, step->to, step->to_len);
            i += step->from_len;
        } else {
            hf_str_append(out, in + i, 1);
            i++;
        }
    }
}

struct hf_sym {
    int32_t id;
    int32_t prev;
    int32_t next;
    int32_t len; /* bytes; 0 once merged away */
};

/* Heap order of Hugging Face BPE: the lowest merge rank first, then the leftmost position. */
static inline uint64_t hf_merge_key(int32_t rank, int32_t pos)
{
    return (uint64_t)(uint32_t)rank << 32 | (uint32_t)pos;
}

struct hf_scratch {
    struct hf_sym *syms;
    size_t cap_syms;
    struct tok_heap heap;
};

static void hf_sym_add(struct hf_scratch *sc, int32_t *n, int32_t id, int32_t len)
{
    if ((size_t)*n == sc->cap_syms) {
        sc->cap_syms = sc->cap_syms ? 2 * sc->cap_syms : 64;
        sc->syms = xrealloc(sc->syms, sc->cap_syms * sizeof(*sc->syms));
    }
    struct hf_sym s = { id, *n - 1, *n + 1, len };
    sc->syms[(*n)++] = s;
}

static void hf_push_ids(int32_t **ids, size_t *n, size_t *cap, size_t more)
{
    if (*n + more > *cap) {
        *cap = (*n + more) * 2;
        *ids = xrealloc(*ids, *cap * sizeof(**ids));
    }
}

/* tokenizers' BPE::merge_word and Word::merge_all for one word (valid UTF-8). */
static void hf_bpe_word(const struct tok *t, const char *w, size_t len, struct hf_scratch *sc,
                        int32_t **ids, size_t *n_ids, size_t *cap)
{
    if (len == 0) {
        return;
    }
    if (t->hf_ignore_merges) {
        int32_t id = tok_impl_lookup(t, w, len);
        if (id >= 0 && t->in_bpe[id] && t->types[id] != TOK_PIECE_CONTROL) {
            hf_push_ids(ids, n_ids, cap, 1);
            (*ids)[(*n_ids)++] = id;
            return;
        }
    }
    int32_t n = 0, unk_len = 0;
    for (size_t i = 0; i < len;) {
        size_t l = tok_impl_utf8_len((const uint8_t *)w + i, len - i);
        if (l == 0) {
            l = 1; /* cannot happen: the text was made valid */
        }
        int32_t id = l == 1 && (uint8_t)w[i] < 0x80 ? t->hf_ascii_ids[(uint8_t)w[i]]
                                                    : tok_impl_lookup(t, w + i, l);
        if (id >= 0 && t->in_bpe[id] && t->types[id] != TOK_PIECE_CONTROL) {
            if (unk_len > 0) {
                hf_sym_add(sc, &n, t->unk_id, unk_len);
                unk_len = 0;
            }
            hf_sym_add(sc, &n, id, (int32_t)l);
        } else {
            bool bytes_ok = t->byte_fallback;
            for (size_t k = 0; k < l && bytes_ok; k++) {
                bytes_ok = t->byte_ids[(uint8_t)w[i + k]] >= 0;
            }
            if (bytes_ok) {
                for (size_t k = 0; k < l; k++) {
                    hf_sym_add(sc, &n, t->byte_ids[(uint8_t)w[i + k]], 1);
                }
            } else if (t->unk_id >= 0) {
                if (unk_len > 0 && !t->hf_fuse_unk) {
                    hf_sym_add(sc, &n, t->unk_id, unk_len);
                    unk_len = 0;
                }
                unk_len += (int32_t)l;
            }
        }
        i += l;
    }
    if (unk_len > 0) {
        hf_sym_add(sc, &n, t->unk_id, unk_len);
    }
    if (n == 0) {
        return;
    }
    sc->syms[n - 1].next = -1;

    struct hf_sym *s = sc->syms;
    for (int32_t seg = 0, seg_end; seg < n; seg = seg_end) {
        /* Words between "x|▁" boundaries merge independently (tok_impl_ws_split_ok). */
        seg_end = t->ws_split ? seg + 1 : n;
        while (seg_end < n && !(s[seg_end].id == t->hf_ws_id && s[seg_end - 1].id != t->hf_ws_id)) {
            seg_end++;
        }
        sc->heap.n = 0;
        for (int32_t i = seg; i + 1 < seg_end; i++) {
            const struct tok_pair_slot *p = hf_pair_get(t, s[i].id, s[i + 1].id);
            if (p) {
                struct tok_merge m = { hf_merge_key(p->rank, i), i, 0, p->new_id };
                tok_heap_push(&sc->heap, m);
            }
        }
        while (sc->heap.n > 0) {
            struct tok_merge top = tok_heap_pop(&sc->heap);
            if (s[top.pos].len == 0 || s[top.pos].next == -1) {
                continue;
            }
            int32_t next = s[top.pos].next;
            const struct tok_pair_slot *p = hf_pair_get(t, s[top.pos].id, s[next].id);
            if (!p || p->new_id != top.id) {
                continue; /* an expired entry */
            }
            s[top.pos].id = top.id;
            s[top.pos].len += s[next].len;
            s[top.pos].next = s[next].next;
            s[next].len = 0;
            if (s[next].next >= 0) {
                s[s[next].next].prev = top.pos;
            }
            if (s[top.pos].prev >= 0) {
                int32_t prev = s[top.pos].prev;
                p = hf_pair_get(t, s[prev].id, s[top.pos].id);
                if (p) {
                    struct tok_merge m = { hf_merge_key(p->rank, prev), prev, 0, p->new_id };
                    tok_heap_push(&sc->heap, m);
                }
            }
            if (s[top.pos].next >= 0) {
                p = hf_pair_get(t, s[top.pos].id, s[s[top.pos].next].id);
                if (p) {
                    struct tok_merge m = { hf_merge_key(p->rank, top.pos), top.pos, 0, p->new_id };
                    tok_heap_push(&sc->heap, m);
                }
            }
        }
    }
    hf_push_ids(ids, n_ids, cap, (size_t)n);
    for (int32_t i = 0; i < n; i++) {
        if (s[i].len > 0) {
            (*ids)[(*n_ids)++] = s[i].id;
        }
    }
}

/* Normalizes, pre-tokenizes and encodes one stretch of text between added tokens. */
static void hf_encode_segment(const struct tok *t, const char *text, size_t len, bool at_start,
                              struct hf_str *a, struct hf_str *b, struct hf_scratch *sc,
                              int32_t **ids, size_t *n_ids, size_t *cap)
{
    a->len = 0;
    hf_str_append(a, text, len);
    for (size_t i = 0; i < t->n_hf_steps; i++) {
        hf_apply_step(&t->hf_steps[i], a->s, a->len, b);
        struct hf_str swap = *a;
        *a = *b;
        *b = swap;
    }
    if (t->hf_metaspace) {
        struct tok_hf_step rep = { TOK_HF_STEP_REPLACE, (char *)" ", 1, t->hf_replacement,
                                   t->hf_replacement_len };
        hf_apply_step(&rep, a->s, a->len, b);
        const char *r = t->hf_replacement;
        size_t r_len = t->hf_replacement_len;
        bool starts = b->len >= r_len && memcmp(b->s, r, r_len) == 0;
        a->len = 0;
        if (!starts && (t->hf_prepend == TOK_PREPEND_ALWAYS ||
                        (t->hf_prepend == TOK_PREPEND_FIRST && at_start))) {
            hf_str_append(a, r, r_len);
        }
        hf_str_append(a, b->s, b->len);
        if (t->hf_metaspace_split) {
            /* Split before every replacement character (MergedWithNext). */
            size_t start = 0;
            for (size_t i = 1; i + r_len <= a->len; i++) {
                if (memcmp(a->s + i, r, r_len) == 0) {
                    hf_bpe_word(t, a->s + start, i - start, sc, ids, n_ids, cap);
                    start = i;
                    i += r_len - 1;
                }
            }
            hf_bpe_word(t, a->s + start, a->len - start, sc, ids, n_ids, cap);
            return;
        }
    }
    hf_bpe_word(t, a->s, a->len, sc, ids, n_ids, cap);
}

int tok_impl_hf_encode(const struct tok *t, const char *text, size_t len, int32_t **ids,
                       size_t *n_ids, size_t *cap)
{
    struct hf_str clean = { 0 }, a = { 0 }, b = { 0 };
    struct hf_scratch sc = { 0 };

    /* Malformed UTF-8 bytes become U+FFFD each, as SentencePiece's normalizer does. */
    hf_str_reserve(&clean, len);
    for (size_t i = 0; i < len;) {
        size_t l = tok_impl_utf8_len((const uint8_t *)text + i, len - i);
        if (l == 0) {
            hf_str_append(&clean, "\xef\xbf\xbd", 3);
            i++;
        } else {
            hf_str_append(&clean, text + i, l);
            i += l;
        }
    }

    size_t seg = 0;
    for (size_t i = 0; i < clean.len && t->n_user > 0;) {
        size_t m = 0;
        for (size_t k = 0; k < t->n_user_lens && m == 0; k++) {
            size_t l = t->user_lens[k];
            if (l <= clean.len - i) {
                int32_t id = tok_impl_lookup(t, clean.s + i, l);
                if (id >= 0 && t->types[id] == TOK_PIECE_USER_DEFINED) {
                    m = l;
                }
            }
        }
        if (m == 0) {
            i += tok_impl_utf8_len((const uint8_t *)clean.s + i, clean.len - i);
            continue;
        }
        if (i > seg) {
            hf_encode_segment(t, clean.s + seg, i - seg, seg == 0, &a, &b, &sc, ids, n_ids, cap);
        }
        hf_push_ids(ids, n_ids, cap, 1);
        (*ids)[(*n_ids)++] = tok_impl_lookup(t, clean.s + i, m);
        i += m;
        seg = i;
    }
    if (seg < clean.len) {
        hf_encode_segment(t, clean.s + seg, clean.len - seg, seg == 0, &a, &b, &sc, ids, n_ids,
                          cap);
    }
    free(clean.s);
    free(a.s);
    free(b.s);
    free(sc.syms);
    free(sc.heap.items);
    return 0;
}
