/* tokenizer.c - the LLaMA SentencePiece BPE tokenizer: vocabulary tables and the piece hash
 * (open addressing over piece records, with a 32 KB negative filter in front, since most pairs
 * the merge loops try are not pieces), SentencePiece-compatible decoding, and the dispatch to the
 * file readers and encoders in tok_spm.c (tokenizer.model, SentencePiece's merge loop) and
 * tok_hf.c (tokenizer.json, Hugging Face's rank-ordered BPE). */
#include "engine/tokenizer.h"

#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/tokenizer_impl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Inputs longer than this are refused so that 3 * len (the normalizer's worst case: every byte
 * malformed or a space) fits the int32 symbol positions. */
#define TOK_MAX_TEXT_BYTES ((size_t)1 << 29)

/* ---- hashing and lookup -------------------------------------------------------------------- */

/* Bits of the negative filter over piece hashes (tag bits), 2^18 = 32 KB. */
#define TOK_FILTER_MASK ((1u << 18) - 1)

int32_t tok_impl_lookup_poly(const struct tok *t, const char *s, size_t len, uint64_t poly)
{
    if (len > t->max_piece_len) {
        return -1;
    }
    uint64_t h = tok_mix(poly ^ (uint64_t)len);
    uint32_t tag = (uint32_t)(h >> 32);
    uint32_t bit = tag & TOK_FILTER_MASK;
    if (!(t->filter[bit >> 6] >> (bit & 63) & 1)) {
        return -1; /* most candidate pairs are not pieces: answer from 32 KB, not the table */
    }
    for (size_t i = (size_t)h & t->slot_mask;; i = (i + 1) & t->slot_mask) {
        const struct tok_slot *slot = &t->slots[i];
        if (slot->rec == UINT32_MAX) {
            return -1;
        }
        if (slot->tag == tag) {
            /* record: int32 id, uint32 len, bytes */
            const char *rec = t->blob + slot->rec;
            uint32_t rec_len;
            memcpy(&rec_len, rec + 4, 4);
            if (rec_len == len && memcmp(rec + 8, s, len) == 0) {
                int32_t id;
                memcpy(&id, rec, 4);
                return id;
            }
        }
    }
}

int32_t tok_impl_lookup(const struct tok *t, const char *s, size_t len)
{
    if (len > t->max_piece_len) {
        return -1;
    }
    return tok_impl_lookup_poly(t, s, len, tok_poly(s, len));
}

/* ---- small helpers ------------------------------------------------------------------------- */

size_t tok_impl_utf8_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    if (c < 0x80) {
        return 1;
    }
    if ((c & 0xe0) == 0xc0) {
        if (n >= 2 && (s[1] & 0xc0) == 0x80) {
            uint32_t cp = (uint32_t)(c & 0x1f) << 6 | (s[1] & 0x3f);
            return cp >= 0x80 ? 2 : 0;
        }
        return 0;
    }
    if ((c & 0xf0) == 0xe0) {
        if (n >= 3 && (s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80) {
            uint32_t cp = (uint32_t)(c & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
            return cp >= 0x800 && (cp < 0xd800 || cp > 0xdfff) ? 3 : 0;
        }
        return 0;
    }
    if ((c & 0xf8) == 0xf0) {
        if (n >= 4 && (s[1] & 0xc0) == 0x80 && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80) {
            uint32_t cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 |
                          (uint32_t)(s[2] & 0x3f) << 6 | (s[3] & 0x3f);
            return cp >= 0x10000 && cp <= 0x10ffff ? 4 : 0;
        }
        return 0;
    }
    return 0;
}

int tok_impl_byte_piece_value(const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') {
        return -1;
    }
    const char *hi = memchr(hex, s[3], 16);
    const char *lo = memchr(hex, s[4], 16);
    if (!hi || !lo || s[3] == '\0' || s[4] == '\0') {
        return -1;
    }
    return (int)((hi - hex) * 16 + (lo - hex));
}

void tok_impl_quote(char *out, size_t out_len, const char *s, size_t len)
{
    size_t o = 0;
    if (out_len == 0) {
        return;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o + 8 >= out_len) {
            if (o + 4 <= out_len) {
                memcpy(out + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            out[o++] = (char)c;
        } else {
            o += (size_t)snprintf(out + o, out_len - o, "\\x%02x", c);
        }
    }
    out[o < out_len ? o : out_len - 1] = '\0';
}

/* ---- building a vocabulary ----------------------------------------------------------------- */

void tok_impl_builder_init(struct tok_builder *b, enum tok_algo algo, int32_t n_vocab)
{
    memset(b, 0, sizeof(*b));
    struct tok *t = xcalloc(1, sizeof(*t));
    t->algo = algo;
    t->n_vocab = n_vocab;
    t->offs = xcalloc((size_t)n_vocab, sizeof(*t->offs));
    t->lens = xcalloc((size_t)n_vocab, sizeof(*t->lens));
    t->scores = xcalloc((size_t)n_vocab, sizeof(*t->scores));
    t->types = xcalloc((size_t)n_vocab, sizeof(*t->types));
    t->unk_id = -1;
    t->bos_id = -1;
    t->eos_id = -1;
    t->add_dummy_prefix = true;
    t->remove_extra_ws = true;
    t->escape_ws = true;
    for (int i = 0; i < 256; i++) {
        t->byte_ids[i] = -1;
    }
    b->t = t;
    b->blob_cap = 4096;
    t->blob = xmalloc(b->blob_cap);
    b->is_set = xcalloc((size_t)n_vocab, 1);
}

void tok_impl_builder_deinit(struct tok_builder *b)
{
    free(b->is_set);
    b->is_set = NULL;
    tok_destroy(b->t);
    b->t = NULL;
}

void tok_impl_builder_set(struct tok_builder *b, int32_t id, const char *text, size_t len,
                          float score, enum tok_piece_type type)
{
    struct tok *t = b->t;
    /* A record: int32 id, uint32 len, the bytes, NUL, padded to 4 bytes. */
    size_t rec_size = (8 + len + 1 + 3) & ~(size_t)3;
    while (b->blob_len + rec_size > b->blob_cap) {
        b->blob_cap *= 2;
        t->blob = xrealloc(t->blob, b->blob_cap);
    }
    char *rec = t->blob + b->blob_len;
    uint32_t len32 = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
    memcpy(rec, &id, 4);
    memcpy(rec + 4, &len32, 4);
    memcpy(rec + 8, text, len);
    memset(rec + 8 + len, 0, rec_size - 8 - len);
    t->offs[id] = b->blob_len + 8;
    t->lens[id] = len32;
    t->scores[id] = score;
    t->types[id] = (uint8_t)type;
    b->blob_len += rec_size;
    if (!b->is_set[id]) {
        b->is_set[id] = 1;
        b->n_set++;
    }
}

static const char *tok_type_name(int type)
{
    static const char *const names[] = { "?",      "NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED",
                                         "UNUSED", "BYTE" };
    return type >= 1 && type <= 6 ? names[type] : "?";
}

static int cmp_u32_desc(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

bool tok_impl_ws_split_ok(const struct tok *t, const char *ws, size_t ws_len)
{
    if (t->has_unused) {
        return false;
    }
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t type = t->types[id];
        if (type != TOK_PIECE_NORMAL && type != TOK_PIECE_USER_DEFINED) {
            continue;
        }
        const char *s = t->blob + t->offs[id];
        size_t len = t->lens[id];
        bool in_prefix = true;
        for (size_t i = 0; i < len;) {
            if (i + ws_len <= len && memcmp(s + i, ws, ws_len) == 0) {
                if (!in_prefix) {
                    return false;
                }
                i += ws_len;
            } else {
                in_prefix = false;
                i++;
            }
        }
    }
    return true;
}

int tok_impl_finish(struct tok_builder *b, bool require_unk, const char *name, struct tok **out,
                    char *errstr, size_t errstr_len)
{
    struct tok *t = b->t;
    char q[64];
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (!b->is_set[id]) {
            errstr_set(errstr, errstr_len, "%s: no piece has id %d (vocabulary of %d)", name, id,
                       t->n_vocab);
            return -EINVAL;
        }
        const char *s = t->blob + t->offs[id];
        size_t len = t->lens[id];
        if (len == 0) {
            errstr_set(errstr, errstr_len, "%s: piece %d is empty", name, id);
            return -EINVAL;
        }
        if (isnan(t->scores[id])) {
            errstr_set(errstr, errstr_len, "%s: piece %d has a NaN score", name, id);
            return -EINVAL;
        }
        switch (t->types[id]) {
        case TOK_PIECE_UNKNOWN:
            if (t->unk_id >= 0 && t->unk_id != id) {
                errstr_set(errstr, errstr_len, "%s: pieces %d and %d are both UNKNOWN", name,
                           t->unk_id, id);
                return -EINVAL;
            }
            t->unk_id = id;
            break;
        case TOK_PIECE_BYTE: {
            int v = tok_impl_byte_piece_value(s, len);
            tok_impl_quote(q, sizeof(q), s, len);
            if (v < 0) {
                errstr_set(errstr, errstr_len, "%s: byte piece %d '%s' is not of the form <0xNN>",
                           name, id, q);
                return -EINVAL;
            }
            if (!t->byte_fallback) {
                errstr_set(errstr, errstr_len,
                           "%s: byte piece %d '%s' found although byte_fallback is false", name, id,
                           q);
                return -EINVAL;
            }
            if (t->algo == TOK_ALGO_SPM) {
                t->byte_ids[v] = id; /* a second <0xNN> is reported as a duplicate below */
            }
            break;
        }
        case TOK_PIECE_UNUSED:
            t->has_unused = true;
            break;
        case TOK_PIECE_USER_DEFINED:
            t->n_user++;
            break;
        case TOK_PIECE_NORMAL:
        case TOK_PIECE_CONTROL:
            break;
        default:
            errstr_set(errstr, errstr_len, "%s: piece %d has type %d (valid: 1..6)", name, id,
                       t->types[id]);
            return -EINVAL;
        }
    }
    if (require_unk && t->unk_id < 0) {
        errstr_set(errstr, errstr_len, "%s: no piece has type UNKNOWN (an <unk> is required)",
                   name);
        return -EINVAL;
    }

    /* Piece hash, at most half full, over records addressed by 32-bit offsets. */
    if (b->blob_len >= UINT32_MAX) {
        errstr_set(errstr, errstr_len, "%s: pieces too large", name);
        return -EINVAL;
    }
    size_t cap = 16;
    while (cap < 2 * (size_t)t->n_vocab) {
        cap *= 2;
    }
    t->slots = xmalloc(cap * sizeof(*t->slots));
    for (size_t i = 0; i < cap; i++) {
        t->slots[i].rec = UINT32_MAX;
        t->slots[i].tag = 0;
    }
    t->slot_mask = cap - 1;
    t->filter = xcalloc(((size_t)TOK_FILTER_MASK + 1) / 64, sizeof(*t->filter));
    t->max_piece_len = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        if (t->lens[id] > t->max_piece_len) {
            t->max_piece_len = t->lens[id];
        }
    }
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const char *s = t->blob + t->offs[id];
        int32_t other = tok_impl_lookup(t, s, t->lens[id]);
        if (other >= 0) {
            tok_impl_quote(q, sizeof(q), s, t->lens[id]);
            errstr_set(errstr, errstr_len, "%s: pieces %d (%s) and %d (%s) are both '%s'", name,
                       other, tok_type_name(t->types[other]), id, tok_type_name(t->types[id]), q);
            return -EINVAL;
        }
        uint64_t h = tok_mix(tok_poly(s, t->lens[id]) ^ (uint64_t)t->lens[id]);
        size_t i = (size_t)h & t->slot_mask;
        while (t->slots[i].rec != UINT32_MAX) {
            i = (i + 1) & t->slot_mask;
        }
        t->slots[i].rec = (uint32_t)(t->offs[id] - 8);
        t->slots[i].tag = (uint32_t)(h >> 32);
        uint32_t bit = (uint32_t)(h >> 32) & TOK_FILTER_MASK;
        t->filter[bit >> 6] |= (uint64_t)1 << (bit & 63);
    }
    if (t->algo == TOK_ALGO_SPM) {
        t->ws_split = t->escape_ws ? tok_impl_ws_split_ok(t, TOK_SPACE_SYMBOL, TOK_SPACE_SYMBOL_LEN)
                                   : tok_impl_ws_split_ok(t, " ", 1);
    }
    t->hash_pow = xmalloc((t->max_piece_len + 1) * sizeof(*t->hash_pow));
    t->hash_pow[0] = 1;
    for (size_t i = 1; i <= t->max_piece_len; i++) {
        t->hash_pow[i] = t->hash_pow[i - 1] * TOK_HASH_P;
    }

    if (t->algo == TOK_ALGO_SPM && t->byte_fallback) {
        for (int v = 0; v < 256; v++) {
            if (t->byte_ids[v] < 0) {
                errstr_set(errstr, errstr_len,
                           "%s: byte_fallback is true but there is no byte piece <0x%02X>", name,
                           v);
                return -EINVAL;
            }
        }
    }
    if (t->algo == TOK_ALGO_HF) {
        /* Hugging Face looks the <0xNN> spellings up in model.vocab, whatever their type (but
         * text never becomes a control id). */
        for (int v = 0; v < 256; v++) {
            char spelled[8];
            snprintf(spelled, sizeof(spelled), "<0x%02X>", v);
            int32_t id = tok_impl_lookup(t, spelled, 6);
            bool usable =
                id >= 0 && t->in_bpe && t->in_bpe[id] && t->types[id] != TOK_PIECE_CONTROL;
            t->byte_ids[v] = usable ? id : -1;
        }
    }

    if (t->n_user > 0) {
        uint32_t *lens = xmalloc(t->n_user * sizeof(*lens));
        size_t n = 0;
        for (int32_t id = 0; id < t->n_vocab; id++) {
            if (t->types[id] == TOK_PIECE_USER_DEFINED) {
                lens[n++] = t->lens[id];
            }
        }
        qsort(lens, n, sizeof(*lens), cmp_u32_desc);
        size_t n_distinct = 0;
        for (size_t i = 0; i < n; i++) {
            if (n_distinct == 0 || lens[n_distinct - 1] != lens[i]) {
                lens[n_distinct++] = lens[i];
            }
        }
        t->user_lens = lens;
        t->n_user_lens = n_distinct;
    }
    if (!t->unk_surface) {
        t->unk_surface = xstrdup(TOK_DEFAULT_UNK_SURFACE);
        t->unk_surface_len = strlen(TOK_DEFAULT_UNK_SURFACE);
    }
    *out = t;
    b->t = NULL;
    return 0;
}

/* ---- public: loading, facts ---------------------------------------------------------------- */

int tok_load_file(const char *path, struct tok **out, char *errstr, size_t errstr_len)
{
    struct file_map m;
    *out = NULL;
    int err = file_map_open(path, &m, errstr, errstr_len);
    if (err) {
        return err;
    }
    size_t i = 0;
    while (i < m.size &&
           (m.data[i] == ' ' || m.data[i] == '\t' || m.data[i] == '\n' || m.data[i] == '\r')) {
        i++;
    }
    if (i < m.size && m.data[i] == '{') {
        err = tok_load_hf_json_buf((const char *)m.data, m.size, path, out, errstr, errstr_len);
    } else {
        err = tok_load_spm_buf(m.data, m.size, path, out, errstr, errstr_len);
    }
    file_map_close(&m);
    return err;
}

int tok_load_dir(const char *dir, struct tok **out, char *errstr, size_t errstr_len)
{
    static const char *const names[] = { "tokenizer.model", "tokenizer.json" };
    *out = NULL;
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        char *path = path_join(dir, names[i]);
        if (path_is_file(path)) {
            int err = tok_load_file(path, out, errstr, errstr_len);
            free(path);
            return err;
        }
        free(path);
    }
    errstr_set(errstr, errstr_len, "%s: no tokenizer.model or tokenizer.json", dir);
    return -ENOENT;
}

void tok_destroy(struct tok *t)
{
    if (!t) {
        return;
    }
    tok_impl_hf_free(t);
    free(t->blob);
    free(t->offs);
    free(t->lens);
    free(t->scores);
    free(t->types);
    free(t->in_bpe);
    free(t->slots);
    free(t->filter);
    free(t->hash_pow);
    free(t->unk_surface);
    free(t->user_lens);
    free(t);
}

int32_t tok_n_vocab(const struct tok *t)
{
    return t->n_vocab;
}

int32_t tok_bos_id(const struct tok *t)
{
    return t->bos_id;
}

int32_t tok_eos_id(const struct tok *t)
{
    return t->eos_id;
}

int32_t tok_unk_id(const struct tok *t)
{
    return t->unk_id;
}

const char *tok_piece(const struct tok *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->blob + t->offs[id] : NULL;
}

float tok_score(const struct tok *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->scores[id] : 0.0f;
}

enum tok_piece_type tok_type(const struct tok *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? (enum tok_piece_type)t->types[id] : (enum tok_piece_type)0;
}

int tok_encode(const struct tok *t, const char *text, size_t len, bool add_bos, int32_t **ids,
               size_t *n_ids)
{
    *ids = NULL;
    *n_ids = 0;
    if (!t || (!text && len > 0) || len > TOK_MAX_TEXT_BYTES || (add_bos && t->bos_id < 0)) {
        return -EINVAL;
    }
    size_t cap = 16, n = 0;
    int32_t *out = xmalloc(cap * sizeof(*out));
    if (add_bos) {
        out[n++] = t->bos_id;
    }
    if (len > 0) {
        if (t->algo == TOK_ALGO_SPM) {
            tok_impl_spm_encode(t, (const uint8_t *)text, len, &out, &n, &cap);
        } else {
            int err = tok_impl_hf_encode(t, text, len, &out, &n, &cap);
            if (err) {
                free(out);
                return err;
            }
        }
    }
    *ids = out;
    *n_ids = n;
    return 0;
}

/* ---- decode -------------------------------------------------------------------------------- */

/* Appends a run of byte pieces' bytes, each malformed byte as U+FFFD (sentencepiece's
 * ProcessBytePieces). */
static size_t tok_flush_bytes(const uint8_t *bytes, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l = tok_impl_utf8_len(bytes + i, n - i);
        if (l == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, bytes + i, l);
            o += l;
            i += l;
        }
    }
    return o;
}

int tok_decode(const struct tok *t, const int32_t *ids, size_t n_ids, char **text, size_t *text_len)
{
    *text = NULL;
    *text_len = 0;
    if (!t || (!ids && n_ids > 0)) {
        return -EINVAL;
    }
    size_t bound = 0;
    for (size_t i = 0; i < n_ids; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab) {
            return -EINVAL;
        }
        switch (t->types[id]) {
        case TOK_PIECE_BYTE:
            bound += 3;
            break;
        case TOK_PIECE_UNKNOWN:
            bound += t->unk_surface_len;
            break;
        default:
            bound += t->lens[id];
        }
    }
    char *out = xmalloc(bound + 1);
    uint8_t *run = n_ids > 0 ? xmalloc(n_ids) : NULL;
    size_t o = 0, n_run = 0;
    bool is_bos_ws = true, has_bos_ws = false;
    bool strip_ok = t->add_dummy_prefix || t->remove_extra_ws;
    for (size_t i = 0; i < n_ids; i++) {
        int32_t id = ids[i];
        uint8_t type = t->types[id];
        const char *piece = t->blob + t->offs[id];
        size_t len = t->lens[id];
        if (type == TOK_PIECE_BYTE) {
            run[n_run++] = (uint8_t)tok_impl_byte_piece_value(piece, len);
            continue;
        }
        o += tok_flush_bytes(run, n_run, out + o);
        n_run = 0;
        /* sentencepiece: once a leading space was consumed or anything was written, no more. */
        if (has_bos_ws || o > 0) {
            is_bos_ws = false;
        }
        has_bos_ws = false;
        if (type == TOK_PIECE_CONTROL) {
            continue;
        }
        if (type == TOK_PIECE_UNKNOWN) {
            memcpy(out + o, t->unk_surface, t->unk_surface_len);
            o += t->unk_surface_len;
            continue;
        }
        if (is_bos_ws && strip_ok && len >= TOK_SPACE_SYMBOL_LEN &&
            memcmp(piece, TOK_SPACE_SYMBOL, TOK_SPACE_SYMBOL_LEN) == 0) {
            piece += TOK_SPACE_SYMBOL_LEN;
            len -= TOK_SPACE_SYMBOL_LEN;
            /* With remove_extra_whitespaces every leading space goes. */
            has_bos_ws = !t->remove_extra_ws;
        }
        for (size_t k = 0; k < len;) {
            if (k + TOK_SPACE_SYMBOL_LEN <= len &&
                memcmp(piece + k, TOK_SPACE_SYMBOL, TOK_SPACE_SYMBOL_LEN) == 0) {
                out[o++] = ' ';
                k += TOK_SPACE_SYMBOL_LEN;
            } else {
                out[o++] = piece[k++];
            }
        }
    }
    o += tok_flush_bytes(run, n_run, out + o);
    free(run);
    out[o] = '\0';
    *text = out;
    *text_len = o;
    return 0;
}

void tok_heap_push(struct tok_heap *h, struct tok_merge m)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 64;
        h->items = xrealloc(h->items, h->cap * sizeof(*h->items));
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (m.key >= h->items[parent].key) {
            break;
        }
        h->items[i] = h->items[parent];
        i = parent;
    }
    h->items[i] = m;
}

struct tok_merge tok_heap_pop(struct tok_heap *h)
{
    struct tok_merge top = h->items[0];
    struct tok_merge last = h->items[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) {
            break;
        }
        if (c + 1 < n && h->items[c + 1].key < h->items[c].key) {
            c++;
        }
        if (h->items[c].key >= last.key) {
            break;
        }
        h->items[i] = h->items[c];
        i = c;
    }
    if (n > 0) {
        h->items[i] = last;
    }
    return top;
}
