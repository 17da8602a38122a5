/* sched_text.c - incremental detokenizer for completion text and stop strings.
 *
 * tok_decode allocates and decodes a whole id list; a scheduler step may not allocate and should
 * not re-decode a long output for every new token. This decoder keeps tok_decode's rules (see
 * engine/tokenizer.h) as a small state machine fed one id at a time: control pieces emit nothing,
 * U+2581 becomes a space, byte pieces are reassembled into UTF-8 with U+FFFD for every byte that
 * does not start a valid sequence, and the first piece's leading space is dropped. The two
 * tokenizer flags behind the leading-space rule are not public, so sched_text_vocab_init derives
 * them by decoding two probe sequences once. test_sched checks the result against tok_decode on
 * random id streams. */
#include "common/utf8.h"
#include "scheduler/sched_impl.h"

#include <errno.h>
#include <string.h>

#define SPACE_SYMBOL     "\xe2\x96\x81" /* U+2581 */
#define SPACE_SYMBOL_LEN 3
#define REPLACEMENT      "\xef\xbf\xbd" /* U+FFFD */

static bool starts_with_space_symbol(const char *s, size_t len)
{
    return len >= SPACE_SYMBOL_LEN && memcmp(s, SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0;
}

/* The byte a "<0xNN>" piece stands for; 0xff for a malformed one, as tok_decode does. */
static uint8_t byte_piece_value(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    if (strlen(s) != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') {
        return 0xff;
    }
    const char *hi = memchr(hex, s[3], 16), *lo = memchr(hex, s[4], 16);
    if (!hi || !lo) {
        return 0xff;
    }
    return (uint8_t)((hi - hex) * 16 + (lo - hex));
}

/* Bytes a piece of a normal kind emits at most (U+2581 becomes one space). */
static size_t piece_text_len(const char *s)
{
    size_t n = 0;
    for (size_t k = 0, len = strlen(s); k < len; n++) {
        k += starts_with_space_symbol(s + k, len - k) ? SPACE_SYMBOL_LEN : 1;
    }
    return n;
}

static bool is_plain_piece(enum tok_piece_type type)
{
    return type != TOK_PIECE_BYTE && type != TOK_PIECE_CONTROL && type != TOK_PIECE_UNKNOWN;
}

/* Decodes ids with tok_decode and compares with `want`. */
static bool decodes_to(const struct tok *t, const int32_t *ids, size_t n, const char *want)
{
    char *text = NULL;
    size_t len = 0;
    bool same = tok_decode(t, ids, n, &text, &len) == 0 && len == strlen(want) &&
                memcmp(text, want, len) == 0;
    free(text);
    return same;
}

int sched_text_vocab_init(struct sched_text_vocab *v, const struct tok *t)
{
    memset(v, 0, sizeof(*v));
    v->tok = t;
    v->n_vocab = tok_n_vocab(t);
    v->max_piece_bytes = 3;
    int32_t probe = -1, lone_space = -1;
    for (int32_t id = 0; id < v->n_vocab; id++) {
        enum tok_piece_type type = tok_type(t, id);
        const char *piece = tok_piece(t, id);
        if (!is_plain_piece(type) || !piece) {
            continue;
        }
        size_t n = piece_text_len(piece);
        v->max_piece_bytes = n > v->max_piece_bytes ? n : v->max_piece_bytes;
        size_t len = strlen(piece);
        if (starts_with_space_symbol(piece, len)) {
            if (len == SPACE_SYMBOL_LEN) {
                lone_space = lone_space < 0 ? id : lone_space;
            } else if (probe < 0 && !starts_with_space_symbol(piece + SPACE_SYMBOL_LEN,
                                                              len - SPACE_SYMBOL_LEN)) {
                probe = id;
            }
        }
    }
    int32_t unk = tok_unk_id(t);
    if (unk >= 0 && unk < v->n_vocab && tok_type(t, unk) == TOK_PIECE_UNKNOWN) {
        char *text = NULL;
        size_t len = 0;
        if (tok_decode(t, &unk, 1, &text, &len) != 0 || len >= sizeof(v->unk_surface)) {
            free(text);
            return -EINVAL;
        }
        memcpy(v->unk_surface, text, len);
        v->unk_surface_len = len;
        free(text);
        v->max_piece_bytes = len > v->max_piece_bytes ? len : v->max_piece_bytes;
    }
    /* The leading-space rule: is the first piece's U+2581 dropped, and after a first piece that
     * was nothing but U+2581, is the next one's dropped too (remove_extra_whitespaces)? */
    if (probe >= 0) {
        const char *piece = tok_piece(t, probe);
        /* the probe's text without its leading space: the rest has no U+2581 at its start */
        char want[256];
        size_t n = 0;
        for (size_t k = SPACE_SYMBOL_LEN, len = strlen(piece); k < len && n + 1 < sizeof(want);) {
            if (starts_with_space_symbol(piece + k, len - k)) {
                want[n++] = ' ';
                k += SPACE_SYMBOL_LEN;
            } else {
                want[n++] = piece[k++];
            }
        }
        want[n] = '\0';
        v->strip_leading_space = decodes_to(t, &probe, 1, want);
        if (v->strip_leading_space && lone_space >= 0) {
            int32_t ids[2] = { lone_space, probe };
            v->strip_repeated_space = decodes_to(t, ids, 2, want);
        }
    } else if (lone_space >= 0) {
        int32_t ids[2] = { lone_space, lone_space };
        v->strip_leading_space = decodes_to(t, ids, 1, "");
        v->strip_repeated_space = v->strip_leading_space && decodes_to(t, ids, 2, "");
    }
    return 0;
}

void sched_text_state_init(struct sched_text_state *st)
{
    memset(st, 0, sizeof(*st));
    st->is_bos_ws = true;
}

static void emit(struct sched_text_state *st, char *out, size_t *len, const char *s, size_t n)
{
    if (n == 0) {
        return;
    }
    st->any_output = true;
    if (out) {
        memcpy(out + *len, s, n);
        *len += n;
    }
}

/* Length of the UTF-8 sequence a lead byte announces, 0 for a byte that cannot lead. */
static uint8_t utf8_lead_len(uint8_t c)
{
    if (c < 0x80) {
        return 1;
    }
    if ((c & 0xe0) == 0xc0) {
        return 2;
    }
    if ((c & 0xf0) == 0xe0) {
        return 3;
    }
    if ((c & 0xf8) == 0xf0) {
        return 4;
    }
    return 0;
}

/* Whether n < want bytes can still be completed into a valid sequence: continuation bytes can
 * only matter from the second byte on, which is present when n >= 2. */
static bool utf8_viable(const uint8_t *s, uint8_t n, uint8_t want)
{
    if (n == 1) {
        return s[0] >= 0xc2 && s[0] <= 0xf4;
    }
    char padded[4];
    for (uint8_t i = 0; i < want; i++) {
        padded[i] = (char)(i < n ? s[i] : 0x80);
    }
    return utf8_validate(padded, want) == want;
}

/* Emits every pending byte whose fate is known: a complete valid sequence as itself, a byte
 * that cannot start one as U+FFFD. With `final` (the byte run ends) nothing stays pending. */
static void drain(struct sched_text_state *st, char *out, size_t *len, bool final)
{
    while (st->n_pending > 0) {
        uint8_t want = utf8_lead_len(st->pending[0]), take;
        if (want > 0 && st->n_pending >= want) {
            bool ok = utf8_validate((const char *)st->pending, want) == want;
            if (ok) {
                emit(st, out, len, (const char *)st->pending, want);
            } else {
                emit(st, out, len, REPLACEMENT, 3);
            }
            take = ok ? want : 1;
        } else if (want > 0 && !final && utf8_viable(st->pending, st->n_pending, want)) {
            return; /* wait for the rest of the character */
        } else {
            emit(st, out, len, REPLACEMENT, 3);
            take = 1;
        }
        memmove(st->pending, st->pending + take, (size_t)(st->n_pending - take));
        st->n_pending = (uint8_t)(st->n_pending - take);
    }
}

void sched_text_feed(const struct sched_text_vocab *v, struct sched_text_state *st, int32_t id,
                     char *out, size_t *len)
{
    /* the model's vocabulary may be padded past the tokenizer's: such ids read as control */
    enum tok_piece_type type =
        id >= 0 && id < v->n_vocab ? tok_type(v->tok, id) : TOK_PIECE_CONTROL;
    if (type == TOK_PIECE_BYTE) {
        SCHED_ASSERT(st->n_pending < sizeof(st->pending));
        st->pending[st->n_pending++] = byte_piece_value(tok_piece(v->tok, id));
        drain(st, out, len, false);
        return;
    }
    drain(st, out, len, true);
    if (st->has_bos_ws || st->any_output) {
        st->is_bos_ws = false;
    }
    st->has_bos_ws = false;
    if (type == TOK_PIECE_CONTROL) {
        return;
    }
    if (type == TOK_PIECE_UNKNOWN) {
        emit(st, out, len, v->unk_surface, v->unk_surface_len);
        return;
    }
    const char *piece = tok_piece(v->tok, id);
    size_t n = strlen(piece);
    if (st->is_bos_ws && v->strip_leading_space && starts_with_space_symbol(piece, n)) {
        piece += SPACE_SYMBOL_LEN;
        n -= SPACE_SYMBOL_LEN;
        st->has_bos_ws = !v->strip_repeated_space;
    }
    for (size_t k = 0; k < n;) {
        if (starts_with_space_symbol(piece + k, n - k)) {
            emit(st, out, len, " ", 1);
            k += SPACE_SYMBOL_LEN;
        } else {
            size_t run = 1;
            while (k + run < n && !starts_with_space_symbol(piece + k + run, n - k - run)) {
                run++;
            }
            emit(st, out, len, piece + k, run);
            k += run;
        }
    }
}

void sched_text_flush(struct sched_text_state *st, char *out, size_t *len)
{
    drain(st, out, len, true);
}
