/* tok_spm.c - SentencePiece: reads tokenizer.model, a serialized ModelProto, with a small
 * protobuf wire-format reader (varints and length-delimited fields; no generated code), and
 * encodes exactly as sentencepiece's normalizer.cc and bpe_model.cc do.
 *
 * Encoding: characters become a linked list of symbols, every adjacent pair whose concatenation
 * is a NORMAL, USER_DEFINED or UNUSED piece goes into a heap keyed by (piece score, -left
 * position), and the best pair is merged until none is left. Stale heap entries are recognised by
 * their recorded length, so the loop is O(n log n); when the vocabulary allows it the text is
 * merged word by word (tok_impl_ws_split_ok). UNUSED pieces are merged through, then re-split into
 * the pieces they were made of; what is left unknown becomes <0xNN> byte pieces (or one <unk> per
 * run of unknowns without byte fallback).
 *
 * Field numbers, from sentencepiece_model.proto:
 *   ModelProto      pieces=1 (repeated SentencePiece), trainer_spec=2, normalizer_spec=3,
 *                   denormalizer_spec=5
 *   SentencePiece   piece=1 (string), score=2 (float), type=3 (enum, default NORMAL=1)
 *   TrainerSpec     model_type=3 (UNIGRAM=1 by default; BPE=2 required),
 * treat_whitespace_as_suffix=24, byte_fallback=35, unk_id=40, bos_id=41, eos_id=42, pad_id=43,
 * unk_surface=44, bos_piece=46, eos_piece=47 (unk is the piece of type UNKNOWN) NormalizerSpec
 * name=1, precompiled_charsmap=2, add_dummy_prefix=3, remove_extra_whitespaces=4,
 *                   escape_whitespaces=5 (proto2 defaults: the three flags are true when absent)
 * Unknown fields are skipped; a known field with the wrong wire type is an error. A message that
 * occurs twice is merged, as protobuf does. */
#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum pb_wire {
    PB_WIRE_VARINT = 0,
    PB_WIRE_I64 = 1,
    PB_WIRE_LEN = 2,
    PB_WIRE_SGROUP = 3,
    PB_WIRE_EGROUP = 4,
    PB_WIRE_I32 = 5,
};

/* A cursor over one message; `base` is the file start, for offsets in errors. */
struct pb_reader {
    const uint8_t *p;
    const uint8_t *end;
    const uint8_t *base;
    const char *name; /* file name */
    const char *what; /* the message being read, e.g. "pieces[12]" */
    char *errstr;
    size_t errstr_len;
};

static int pb_fail(struct pb_reader *r, const char *msg)
{
    errstr_set(r->errstr, r->errstr_len, "%s: offset %zu in %s: %s", r->name,
               (size_t)(r->p - r->base), r->what, msg);
    return -EINVAL;
}

static int pb_varint(struct pb_reader *r, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) {
            return pb_fail(r, "truncated varint");
        }
        uint8_t b = *r->p++;
        if (shift == 63 && b > 1) {
            return pb_fail(r, "varint overflows 64 bits");
        }
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return pb_fail(r, "varint longer than 10 bytes");
}

static int pb_key(struct pb_reader *r, uint32_t *field, int *wire)
{
    uint64_t key;
    int err = pb_varint(r, &key);
    if (err) {
        return err;
    }
    if (key > UINT32_MAX || (key >> 3) == 0) {
        return pb_fail(r, "invalid field key");
    }
    *field = (uint32_t)(key >> 3);
    *wire = (int)(key & 7);
    return 0;
}

/* Reads a length-delimited payload into *sub (sharing r's context). */
static int pb_len(struct pb_reader *r, struct pb_reader *sub)
{
    uint64_t n;
    int err = pb_varint(r, &n);
    if (err) {
        return err;
    }
    if (n > (uint64_t)(r->end - r->p)) {
        return pb_fail(r, "length runs past the end of the data (truncated file?)");
    }
    *sub = *r;
    sub->end = r->p + n;
    r->p += n;
    return 0;
}

static int pb_skip(struct pb_reader *r, int wire)
{
    uint64_t v;
    struct pb_reader sub;
    switch (wire) {
    case PB_WIRE_VARINT:
        return pb_varint(r, &v);
    case PB_WIRE_I64:
    case PB_WIRE_I32: {
        size_t n = wire == PB_WIRE_I64 ? 8 : 4;
        if ((size_t)(r->end - r->p) < n) {
            return pb_fail(r, "truncated fixed-width field");
        }
        r->p += n;
        return 0;
    }
    case PB_WIRE_LEN:
        return pb_len(r, &sub);
    default:
        return pb_fail(r, "unsupported wire type (groups or invalid)");
    }
}

static int pb_expect(struct pb_reader *r, int wire, int want, uint32_t field)
{
    if (wire == want) {
        return 0;
    }
    char msg[96];
    snprintf(msg, sizeof(msg), "field %u has wire type %d, expected %d", field, wire, want);
    return pb_fail(r, msg);
}

static int pb_int32(struct pb_reader *r, int wire, uint32_t field, int32_t *out)
{
    uint64_t v;
    int err = pb_expect(r, wire, PB_WIRE_VARINT, field);
    if (!err) {
        err = pb_varint(r, &v);
    }
    if (!err) {
        *out = (int32_t)(uint32_t)v; /* negative int32s are sign-extended on the wire */
    }
    return err;
}

static int pb_bool(struct pb_reader *r, int wire, uint32_t field, bool *out)
{
    uint64_t v;
    int err = pb_expect(r, wire, PB_WIRE_VARINT, field);
    if (!err) {
        err = pb_varint(r, &v);
    }
    if (!err) {
        *out = v != 0;
    }
    return err;
}

struct spm_bytes {
    const char *s;
    size_t len;
};

static int pb_bytes(struct pb_reader *r, int wire, uint32_t field, struct spm_bytes *out)
{
    struct pb_reader sub;
    int err = pb_expect(r, wire, PB_WIRE_LEN, field);
    if (!err) {
        err = pb_len(r, &sub);
    }
    if (!err) {
        out->s = (const char *)sub.p;
        out->len = (size_t)(sub.end - sub.p);
    }
    return err;
}

struct spm_piece {
    struct spm_bytes text;
    float score;
    int32_t type;
};

struct spm_trainer {
    int32_t model_type;
    bool byte_fallback;
    bool treat_ws_as_suffix;
    int32_t unk_id, bos_id, eos_id, pad_id;
    struct spm_bytes bos_piece, eos_piece, unk_surface;
    bool has_unk_surface;
};

struct spm_normalizer {
    struct spm_bytes name;
    struct spm_bytes charsmap;
    bool add_dummy_prefix;
    bool remove_extra_ws;
    bool escape_ws;
};

static int spm_parse_piece(struct pb_reader *r, struct spm_piece *pc)
{
    pc->text.s = "";
    pc->text.len = 0;
    pc->score = 0.0f;
    pc->type = TOK_PIECE_NORMAL;
    while (r->p < r->end) {
        uint32_t field;
        int wire, err = pb_key(r, &field, &wire);
        if (err) {
            return err;
        }
        switch (field) {
        case 1:
            err = pb_bytes(r, wire, field, &pc->text);
            break;
        case 2: {
            err = pb_expect(r, wire, PB_WIRE_I32, field);
            if (!err && r->end - r->p < 4) {
                err = pb_fail(r, "truncated score");
            }
            if (!err) {
                uint32_t bits = load_le32(r->p);
                memcpy(&pc->score, &bits, 4);
                r->p += 4;
            }
            break;
        }
        case 3:
            err = pb_int32(r, wire, field, &pc->type);
            if (!err && (pc->type < TOK_PIECE_NORMAL || pc->type > TOK_PIECE_BYTE)) {
                err = pb_fail(r, "piece type outside 1..6");
            }
            break;
        default:
            err = pb_skip(r, wire);
        }
        if (err) {
            return err;
        }
    }
    return 0;
}

static int spm_parse_trainer(struct pb_reader *r, struct spm_trainer *ts)
{
    while (r->p < r->end) {
        uint32_t field;
        int wire, err = pb_key(r, &field, &wire);
        if (err) {
            return err;
        }
        switch (field) {
        case 3:
            err = pb_int32(r, wire, field, &ts->model_type);
            break;
        case 24:
            err = pb_bool(r, wire, field, &ts->treat_ws_as_suffix);
            break;
        case 35:
            err = pb_bool(r, wire, field, &ts->byte_fallback);
            break;
        case 40:
            err = pb_int32(r, wire, field, &ts->unk_id);
            break;
        case 41:
            err = pb_int32(r, wire, field, &ts->bos_id);
            break;
        case 42:
            err = pb_int32(r, wire, field, &ts->eos_id);
            break;
        case 43:
            err = pb_int32(r, wire, field, &ts->pad_id);
            break;
        case 44:
            err = pb_bytes(r, wire, field, &ts->unk_surface);
            ts->has_unk_surface = true;
            break;
        case 46:
            err = pb_bytes(r, wire, field, &ts->bos_piece);
            break;
        case 47:
            err = pb_bytes(r, wire, field, &ts->eos_piece);
            break;
        default:
            err = pb_skip(r, wire);
        }
        if (err) {
            return err;
        }
    }
    return 0;
}

static int spm_parse_normalizer(struct pb_reader *r, struct spm_normalizer *ns)
{
    while (r->p < r->end) {
        uint32_t field;
        int wire, err = pb_key(r, &field, &wire);
        if (err) {
            return err;
        }
        switch (field) {
        case 1:
            err = pb_bytes(r, wire, field, &ns->name);
            break;
        case 2:
            err = pb_bytes(r, wire, field, &ns->charsmap);
            break;
        case 3:
            err = pb_bool(r, wire, field, &ns->add_dummy_prefix);
            break;
        case 4:
            err = pb_bool(r, wire, field, &ns->remove_extra_ws);
            break;
        case 5:
            err = pb_bool(r, wire, field, &ns->escape_ws);
            break;
        default:
            err = pb_skip(r, wire);
        }
        if (err) {
            return err;
        }
    }
    return 0;
}

static void spm_normalizer_default(struct spm_normalizer *ns)
{
    memset(ns, 0, sizeof(*ns));
    ns->add_dummy_prefix = true;
    ns->remove_extra_ws = true;
    ns->escape_ws = true;
}

/* sentencepiece's bos_id()/eos_id(): the id of the named piece when it is a CONTROL piece. */
static int32_t spm_control_id(const struct tok *t, struct spm_bytes piece, const char *dflt)
{
    const char *s = piece.s ? piece.s : dflt;
    size_t len = piece.s ? piece.len : strlen(dflt);
    int32_t id = tok_impl_lookup(t, s, len);
    return id >= 0 && t->types[id] == TOK_PIECE_CONTROL ? id : -1;
}

static int spm_check_id(const char *name, const char *field, int32_t id, int32_t n_vocab,
                        char *errstr, size_t errstr_len)
{
    if (id < -1 || id >= n_vocab) {
        errstr_set(errstr, errstr_len, "%s: trainer_spec.%s %d is outside [-1, %d)", name, field,
                   id, n_vocab);
        return -EINVAL;
    }
    return 0;
}

int tok_load_spm_buf(const uint8_t *buf, size_t len, const char *name, struct tok **out,
                     char *errstr, size_t errstr_len)
{
    struct spm_trainer ts = {
        .model_type = 1, .unk_id = 0, .bos_id = 1, .eos_id = 2, .pad_id = -1
    };
    struct spm_normalizer ns, dns;
    struct spm_piece *pieces = NULL;
    size_t n_pieces = 0, cap_pieces = 0;
    struct tok_builder b = { 0 };
    int err;

    *out = NULL;
    if (!name) {
        name = "tokenizer.model";
    }
    spm_normalizer_default(&ns);
    spm_normalizer_default(&dns);
    struct pb_reader r = { .p = buf,
                           .end = buf ? buf + len : buf,
                           .base = buf,
                           .name = name,
                           .what = "ModelProto",
                           .errstr = errstr,
                           .errstr_len = errstr_len };
    while (r.p < r.end) {
        uint32_t field;
        int wire;
        struct pb_reader sub;
        err = pb_key(&r, &field, &wire);
        if (err) {
            goto fail;
        }
        if (field == 1 || field == 2 || field == 3 || field == 5) {
            err = pb_expect(&r, wire, PB_WIRE_LEN, field);
            if (!err) {
                err = pb_len(&r, &sub);
            }
            if (err) {
                goto fail;
            }
        }
        char what[48];
        switch (field) {
        case 1:
            if (n_pieces == cap_pieces) {
                cap_pieces = cap_pieces ? 2 * cap_pieces : 1024;
                pieces = xrealloc(pieces, cap_pieces * sizeof(*pieces));
            }
            snprintf(what, sizeof(what), "pieces[%zu]", n_pieces);
            sub.what = what;
            err = spm_parse_piece(&sub, &pieces[n_pieces]);
            n_pieces++;
            break;
        case 2:
            sub.what = "trainer_spec";
            err = spm_parse_trainer(&sub, &ts);
            break;
        case 3:
            sub.what = "normalizer_spec";
            err = spm_parse_normalizer(&sub, &ns);
            break;
        case 5:
            sub.what = "denormalizer_spec";
            err = spm_parse_normalizer(&sub, &dns);
            break;
        default:
            err = pb_skip(&r, wire);
        }
        if (err) {
            goto fail;
        }
    }

    err = -EINVAL;
    if (n_pieces == 0) {
        errstr_set(errstr, errstr_len, "%s: no pieces (not a SentencePiece model?)", name);
        goto fail;
    }
    if (n_pieces > INT32_MAX) {
        errstr_set(errstr, errstr_len, "%s: too many pieces", name);
        goto fail;
    }
    if (ts.model_type != 2) {
        errstr_set(errstr, errstr_len,
                   "%s: trainer_spec.model_type is %d; only BPE (2) is supported (1 is UNIGRAM)",
                   name, ts.model_type);
        goto fail;
    }
    if (ts.treat_ws_as_suffix) {
        errstr_set(errstr, errstr_len, "%s: treat_whitespace_as_suffix is not supported", name);
        goto fail;
    }
    if (ns.charsmap.len > 0 || dns.charsmap.len > 0) {
        char q[64];
        tok_impl_quote(q, sizeof(q), ns.name.s ? ns.name.s : "", ns.name.len);
        errstr_set(errstr, errstr_len,
                   "%s: normalizer '%s' has a precompiled_charsmap; only the identity normalizer "
                   "is supported",
                   name, q);
        goto fail;
    }
    int32_t n_vocab = (int32_t)n_pieces;
    if (spm_check_id(name, "unk_id", ts.unk_id, n_vocab, errstr, errstr_len) ||
        spm_check_id(name, "bos_id", ts.bos_id, n_vocab, errstr, errstr_len) ||
        spm_check_id(name, "eos_id", ts.eos_id, n_vocab, errstr, errstr_len) ||
        spm_check_id(name, "pad_id", ts.pad_id, n_vocab, errstr, errstr_len)) {
        goto fail;
    }

    tok_impl_builder_init(&b, TOK_ALGO_SPM, n_vocab);
    struct tok *t = b.t;
    t->byte_fallback = ts.byte_fallback;
    t->add_dummy_prefix = ns.add_dummy_prefix;
    t->remove_extra_ws = ns.remove_extra_ws;
    t->escape_ws = ns.escape_ws;
    if (ts.has_unk_surface) {
        t->unk_surface = xmalloc(ts.unk_surface.len + 1);
        memcpy(t->unk_surface, ts.unk_surface.s, ts.unk_surface.len);
        t->unk_surface[ts.unk_surface.len] = '\0';
        t->unk_surface_len = ts.unk_surface.len;
    }
    for (int32_t id = 0; id < n_vocab; id++) {
        tok_impl_builder_set(&b, id, pieces[id].text.s, pieces[id].text.len, pieces[id].score,
                             (enum tok_piece_type)pieces[id].type);
    }
    err = tok_impl_finish(&b, true, name, out, errstr, errstr_len);
    if (err) {
        goto fail;
    }
    (*out)->bos_id = spm_control_id(*out, ts.bos_piece, "<s>");
    (*out)->eos_id = spm_control_id(*out, ts.eos_piece, "</s>");
    tok_impl_builder_deinit(&b);
    free(pieces);
    return 0;

fail:
    tok_impl_builder_deinit(&b);
    free(pieces);
    return err;
}

/* ---- encoding ------------------------------------------------------------------------------ */

/* Longest USER_DEFINED piece that s starts with (SentencePiece's PrefixMatcher), or 0. */
static size_t spm_user_match(const struct tok *t, const char *s, size_t n)
{
    for (size_t i = 0; i < t->n_user_lens; i++) {
        size_t l = t->user_lens[i];
        if (l > n) {
            continue;
        }
        int32_t id = tok_impl_lookup(t, s, l);
        if (id >= 0 && t->types[id] == TOK_PIECE_USER_DEFINED) {
            return l;
        }
    }
    return 0;
}

/* One step of SentencePiece's identity normalizer: a user-defined piece as is, one valid UTF-8
 * character, or U+FFFD standing for one malformed byte. */
static void spm_norm_prefix(const struct tok *t, const uint8_t *s, size_t n, const char **piece,
                            size_t *piece_len, size_t *consumed)
{
    size_t l = 0;
    if (t->n_user > 0) {
        l = spm_user_match(t, (const char *)s, n);
    }
    if (l == 0) {
        l = tok_impl_utf8_len(s, n);
    }
    if (l == 0) {
        *piece = "\xef\xbf\xbd";
        *piece_len = 3;
        *consumed = 1;
        return;
    }
    *piece = (const char *)s;
    *piece_len = l;
    *consumed = l;
}

/* SentencePiece's Normalizer::Normalize for an identity (no charsmap) spec. out holds at least
 * 3 * len + 3 bytes. Returns the normalized length. */
static size_t spm_normalize(const struct tok *t, const uint8_t *in, size_t len, char *out)
{
    const char *ws = t->escape_ws ? TOK_SPACE_SYMBOL : " ";
    size_t ws_len = t->escape_ws ? TOK_SPACE_SYMBOL_LEN : 1;
    const char *piece;
    size_t piece_len, consumed, i = 0, o = 0;

    if (t->remove_extra_ws) {
        while (i < len) {
            spm_norm_prefix(t, in + i, len - i, &piece, &piece_len, &consumed);
            if (piece_len != 1 || piece[0] != ' ') {
                break;
            }
            i += consumed;
        }
    }
    if (i == len) {
        return 0;
    }
    if (t->add_dummy_prefix) {
        memcpy(out, ws, ws_len);
        o = ws_len;
    }
    bool prev_space = t->remove_extra_ws;
    while (i < len) {
        if (t->n_user == 0 && in[i] < 0x80) {
            /* Fast path for ASCII: one byte, one character. */
            char c = (char)in[i++];
            if (c == ' ') {
                if (!prev_space) {
                    memcpy(out + o, ws, ws_len);
                    o += ws_len;
                }
                prev_space = t->remove_extra_ws;
            } else {
                out[o++] = c;
                prev_space = false;
            }
            continue;
        }
        spm_norm_prefix(t, in + i, len - i, &piece, &piece_len, &consumed);
        while (prev_space && piece_len > 0 && piece[0] == ' ') {
            piece++;
            piece_len--;
        }
        if (piece_len > 0) {
            for (size_t k = 0; k < piece_len; k++) {
                if (piece[k] == ' ' && t->escape_ws) {
                    memcpy(out + o, TOK_SPACE_SYMBOL, TOK_SPACE_SYMBOL_LEN);
                    o += TOK_SPACE_SYMBOL_LEN;
                } else {
                    out[o++] = piece[k];
                }
            }
            prev_space = piece[piece_len - 1] == ' ';
        }
        i += consumed;
        if (!t->remove_extra_ws) {
            prev_space = false;
        }
    }
    if (t->remove_extra_ws) {
        while (o >= ws_len && memcmp(out + o - ws_len, ws, ws_len) == 0) {
            o -= ws_len;
        }
    }
    return o;
}

struct spm_sym {
    uint64_t poly; /* tok_poly of the symbol's bytes */
    int32_t start; /* byte offset in the normalized text */
    int32_t len;   /* bytes; 0 once merged into the symbol on its left */
    int32_t prev;  /* -1: none */
    int32_t next;  /* -1: none */
    int32_t id;    /* piece id once merged, -1 while a single character */
    int32_t freeze;
};

/* Heap order as sentencepiece's SymbolPairComparator: higher score first, then the leftmost pair.
 * The score is mapped to an unsigned integer of the same order and inverted, then the left
 * position breaks ties: one integer comparison. The order is that of the scores' bit patterns
 * (IEEE totalOrder; NaN is refused at load), which is what sentencepiece does in practice: checked
 * against the pip package, -0.0 loses to +0.0 and denormals are not zero (tok512.model has a -0.0
 * score). */
static inline uint64_t spm_pair_key(float score, int32_t left)
{
    uint32_t bits;
    memcpy(&bits, &score, 4);
    uint32_t ordered = bits & 0x80000000u ? ~bits : bits | 0x80000000u;
    return (uint64_t)~ordered << 32 | (uint32_t)left;
}

static inline int32_t spm_pair_left(const struct tok_merge *p)
{
    return (int32_t)(uint32_t)p->key;
}

/* How an UNUSED piece was last formed (sentencepiece's rev_merge): its two halves as spans of the
 * normalized text. Open addressing keyed by piece id; the latest entry for an id wins. */
struct spm_rev {
    int32_t id; /* -1: empty */
    int32_t left_start, left_len, right_start, right_len;
};

struct spm_rev_map {
    struct spm_rev *slots;
    size_t mask;
    size_t n;
};

static struct spm_rev *spm_rev_slot(struct spm_rev_map *m, int32_t id)
{
    size_t i = (size_t)tok_mix((uint64_t)id + 1) & m->mask;
    while (m->slots[i].id >= 0 && m->slots[i].id != id) {
        i = (i + 1) & m->mask;
    }
    return &m->slots[i];
}

static void spm_rev_put(struct spm_rev_map *m, struct spm_rev r)
{
    if (2 * (m->n + 1) > m->mask + 1) {
        struct spm_rev_map bigger;
        bigger.mask = m->mask ? 2 * m->mask + 1 : 15;
        bigger.n = 0;
        bigger.slots = xmalloc((bigger.mask + 1) * sizeof(*bigger.slots));
        for (size_t i = 0; i <= bigger.mask; i++) {
            bigger.slots[i].id = -1;
        }
        for (size_t i = 0; m->slots && i <= m->mask; i++) {
            if (m->slots[i].id >= 0) {
                *spm_rev_slot(&bigger, m->slots[i].id) = m->slots[i];
                bigger.n++;
            }
        }
        free(m->slots);
        *m = bigger;
    }
    struct spm_rev *slot = spm_rev_slot(m, r.id);
    if (slot->id < 0) {
        m->n++;
    }
    *slot = r;
}

struct spm_state {
    const struct tok *t;
    const char *norm;
    struct spm_sym *syms;
    struct tok_heap heap;
    struct spm_rev_map rev;
};

/* sentencepiece's MaybeAddNewSymbolPair. */
static void spm_try_pair(struct spm_state *st, int32_t left, int32_t right)
{
    if (left < 0 || right < 0) {
        return;
    }
    const struct spm_sym *l = &st->syms[left], *r = &st->syms[right];
    if (l->freeze || r->freeze) {
        return;
    }
    const struct tok *t = st->t;
    size_t len = (size_t)l->len + (size_t)r->len;
    if (len > t->max_piece_len) {
        return;
    }
    uint64_t poly = l->poly * t->hash_pow[r->len] + r->poly;
    int32_t id = tok_impl_lookup_poly(t, st->norm + l->start, len, poly);
    if (id < 0) {
        return;
    }
    uint8_t type = t->types[id];
    if (type != TOK_PIECE_NORMAL && type != TOK_PIECE_USER_DEFINED && type != TOK_PIECE_UNUSED) {
        return;
    }
    /* pos: the right symbol; len: the pair's bytes when pushed (stale once they differ) */
    struct tok_merge p = { spm_pair_key(t->scores[id], left), right, l->len + r->len, id };
    tok_heap_push(&st->heap, p);
    if (type == TOK_PIECE_UNUSED) {
        struct spm_rev rv = { id, l->start, l->len, r->start, r->len };
        spm_rev_put(&st->rev, rv);
    }
}

/* Emits one final piece w as sentencepiece's Encode does: unknown ones as byte pieces (or one
 * <unk> per run). `id` is w's piece id when already known, else -1. */
static void spm_emit(const struct tok *t, const char *w, size_t len, int32_t id, int32_t *ids,
                     size_t *n, bool *prev_unk)
{
    if (id < 0) {
        id = tok_impl_lookup(t, w, len);
        if (id < 0) {
            id = t->unk_id;
        }
    }
    /* A one-character CONTROL piece is where sentencepiece would let text produce a control id;
     * judged treats it as unknown instead, so that no text can inject BOS/EOS. */
    if (t->types[id] == TOK_PIECE_UNKNOWN || t->types[id] == TOK_PIECE_CONTROL) {
        if (t->byte_fallback) {
            for (size_t k = 0; k < len; k++) {
                ids[(*n)++] = t->byte_ids[(uint8_t)w[k]];
            }
        } else if (!*prev_unk) {
            ids[(*n)++] = t->unk_id;
        }
        *prev_unk = true;
        return;
    }
    ids[(*n)++] = id;
    *prev_unk = false;
}

/* sentencepiece's resegment: an UNUSED piece is replaced, recursively, by the two pieces it was
 * last formed from. */
static void spm_resegment(struct spm_state *st, int32_t start, int32_t len, int32_t *ids, size_t *n,
                          bool *prev_unk)
{
    const struct tok *t = st->t;
    int32_t stack_small[64];
    int32_t *stack = stack_small;
    size_t n_stack = 0, cap = ARRAY_LEN(stack_small) / 2;
    stack[0] = start;
    stack[1] = len;
    n_stack = 1;
    while (n_stack > 0) {
        n_stack--;
        int32_t s = stack[2 * n_stack], l = stack[2 * n_stack + 1];
        int32_t id = tok_impl_lookup(t, st->norm + s, (size_t)l);
        const struct spm_rev *r = NULL;
        if (id >= 0 && t->types[id] == TOK_PIECE_UNUSED && st->rev.slots) {
            r = spm_rev_slot(&st->rev, id);
            if (r->id < 0) {
                r = NULL;
            }
        }
        if (!r) {
            spm_emit(t, st->norm + s, (size_t)l, id, ids, n, prev_unk);
            continue;
        }
        if (n_stack + 2 > cap) {
            cap *= 2;
            if (stack == stack_small) {
                stack = xmalloc(2 * cap * sizeof(*stack));
                memcpy(stack, stack_small, sizeof(stack_small));
            } else {
                stack = xrealloc(stack, 2 * cap * sizeof(*stack));
            }
        }
        /* Right half below the left one, so the left comes out first. */
        stack[2 * n_stack] = r->right_start;
        stack[2 * n_stack + 1] = r->right_len;
        stack[2 * n_stack + 2] = r->left_start;
        stack[2 * n_stack + 3] = r->left_len;
        n_stack += 2;
    }
    if (stack != stack_small) {
        free(stack);
    }
}

/* OneCharLen of sentencepiece: the UTF-8 length announced by a lead byte. */
static inline size_t spm_one_char_len(uint8_t c)
{
    static const uint8_t lens[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };
    return lens[c >> 4];
}

void tok_impl_spm_encode(const struct tok *t, const uint8_t *text, size_t len, int32_t **ids_io,
                         size_t *n_io, size_t *cap_io)
{
    char *norm = xmalloc(3 * len + 4);
    size_t n_norm = spm_normalize(t, text, len, norm);
    if (n_norm == 0) {
        free(norm);
        return;
    }

    struct spm_state st = { .t = t, .norm = norm };
    st.syms = xmalloc(n_norm * sizeof(*st.syms));
    int32_t n_syms = 0;
    for (size_t p = 0; p < n_norm;) {
        size_t l = 0;
        int32_t freeze = 0;
        if (t->n_user > 0) {
            l = spm_user_match(t, norm + p, n_norm - p);
            freeze = l > 0;
        }
        if (l == 0) {
            l = spm_one_char_len((uint8_t)norm[p]);
            if (l > n_norm - p) {
                l = n_norm - p;
            }
        }
        struct spm_sym s = {
            tok_poly(norm + p, l), (int32_t)p, (int32_t)l, n_syms - 1, n_syms + 1, -1, freeze
        };
        st.syms[n_syms++] = s;
        p += l;
    }
    st.syms[n_syms - 1].next = -1;

    st.heap.cap = 64;
    st.heap.items = xmalloc(st.heap.cap * sizeof(*st.heap.items));
    const char *ws = t->escape_ws ? TOK_SPACE_SYMBOL : " ";
    int32_t ws_len = t->escape_ws ? TOK_SPACE_SYMBOL_LEN : 1;
    for (int32_t seg = 0, seg_end; seg < n_syms; seg = seg_end) {
        /* With t->ws_split no piece spans "x|▁", so the words between such boundaries merge
         * independently, in small heaps, to the same result as one heap over the text. */
        seg_end = t->ws_split ? seg + 1 : n_syms;
        while (seg_end < n_syms) {
            const struct spm_sym *a = &st.syms[seg_end - 1], *b = &st.syms[seg_end];
            if (b->len == ws_len && memcmp(norm + b->start, ws, (size_t)ws_len) == 0 &&
                !(a->len == ws_len && memcmp(norm + a->start, ws, (size_t)ws_len) == 0)) {
                break;
            }
            seg_end++;
        }
        for (int32_t i = seg + 1; i < seg_end; i++) {
            spm_try_pair(&st, i - 1, i);
        }
        while (st.heap.n > 0) {
            struct tok_merge top = tok_heap_pop(&st.heap);
            int32_t left = spm_pair_left(&top);
            struct spm_sym *l = &st.syms[left], *r = &st.syms[top.pos];
            if (l->len == 0 || r->len == 0 || l->len + r->len != top.len) {
                continue;
            }
            l->poly = l->poly * t->hash_pow[r->len] + r->poly;
            l->len += r->len;
            l->id = top.id;
            l->next = r->next;
            if (r->next >= 0) {
                st.syms[r->next].prev = left;
            }
            r->len = 0;
            spm_try_pair(&st, l->prev, left);
            spm_try_pair(&st, left, l->next);
        }
    }

    /* Every emitted id covers at least one byte of the normalized text. */
    if (*cap_io < *n_io + n_norm) {
        *cap_io = *n_io + n_norm;
        *ids_io = xrealloc(*ids_io, *cap_io * sizeof(**ids_io));
    }
    bool prev_unk = false;
    for (int32_t i = 0; i >= 0; i = st.syms[i].next) {
        const struct spm_sym *s = &st.syms[i];
        if (t->has_unused) {
            spm_resegment(&st, s->start, s->len, *ids_io, n_io, &prev_unk);
        } else {
            spm_emit(t, norm + s->start, (size_t)s->len, s->id, *ids_io, n_io, &prev_unk);
        }
    }
    free(st.rev.slots);
    free(st.heap.items);
    free(st.syms);
    free(norm);
}
