/* tokenizer_impl.h - internals of the tokenizer shared by tokenizer.c (vocabulary tables, piece
 * hash, encoding, decoding), tok_spm.c (the tokenizer.model reader) and tok_hf.c (the
 * tokenizer.json reader and Hugging Face's rank-ordered BPE). Included only by those files and
 * by the tokenizer's tests and fuzzers. */
#ifndef ENGINE_TOKENIZER_IMPL_H
#define ENGINE_TOKENIZER_IMPL_H

#include "engine/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's escaped space. */
#define TOK_SPACE_SYMBOL     "\xe2\x96\x81"
#define TOK_SPACE_SYMBOL_LEN 3

/* SentencePiece's default unk_surface, " \u2047 ". */
#define TOK_DEFAULT_UNK_SURFACE " \xe2\x81\x87 "

/* Which encoder a loaded tokenizer runs. */
enum tok_algo {
    TOK_ALGO_SPM = 0, /* SentencePiece: merged piece's score, higher first */
    TOK_ALGO_HF,      /* Hugging Face BPE: the pair's rank in merges, lower first */
};

/* Open-addressing hash from piece text to id. Slots hold the hash's high 32 bits as a tag and
 * the offset of the piece's record in blob (UINT32_MAX when empty), so that a probe touches the
 * slot and one record; capacity is a power of two at most half full. */
struct tok_slot {
    uint32_t tag;
    uint32_t rec;
};

/* Hugging Face merges: (left id, right id) -> (rank, merged id), open addressing. */
struct tok_pair_slot {
    uint64_t key; /* (uint64_t)left << 32 | right; UINT64_MAX when empty */
    int32_t rank;
    int32_t new_id;
};

/* One step of a tokenizer.json normalizer, applied in order. */
enum tok_hf_step_kind {
    TOK_HF_STEP_PREPEND = 0, /* prepend `to` unless the text is empty */
    TOK_HF_STEP_REPLACE,     /* replace every occurrence of `from` with `to`, left to right */
};

struct tok_hf_step {
    enum tok_hf_step_kind kind;
    char *from; /* REPLACE only; owned */
    size_t from_len;
    char *to; /* owned */
    size_t to_len;
};

/* The Metaspace pre-tokenizer of newer tokenizer.json files. */
enum tok_prepend_scheme {
    TOK_PREPEND_ALWAYS = 0,
    TOK_PREPEND_FIRST, /* like ALWAYS: special tokens never split the input here */
    TOK_PREPEND_NEVER,
};

struct tok {
    enum tok_algo algo;
    int32_t n_vocab;

    char *blob;      /* per piece a record: int32 id, uint32 len, bytes, NUL, padding to 4 */
    size_t *offs;    /* [n_vocab] offset of the piece's bytes in blob */
    uint32_t *lens;  /* [n_vocab] piece length in bytes */
    float *scores;   /* [n_vocab] */
    uint8_t *types;  /* [n_vocab] enum tok_piece_type */
    uint8_t *in_bpe; /* [n_vocab] HF only: 1 when the piece is in model.vocab */

    struct tok_slot *slots; /* piece text -> id, every piece */
    size_t slot_mask;       /* capacity - 1 */
    uint64_t *filter;       /* bitmap of piece-hash tag bits: a clear bit means no such piece */
    size_t max_piece_len;   /* bytes; longer strings are never looked up */
    uint64_t *hash_pow;     /* [max_piece_len + 1] powers of the piece hash's multiplier */

    int32_t unk_id; /* the UNKNOWN piece; -1 only for a tokenizer.json without unk_token */
    int32_t bos_id;
    int32_t eos_id;
    bool byte_fallback;
    int32_t byte_ids[256]; /* <0xNN> pieces, -1 when absent */

    /* SentencePiece normalizer (also used by decode for both algorithms). */
    bool add_dummy_prefix;
    bool remove_extra_ws;
    bool escape_ws;
    char *unk_surface; /* decode of the UNKNOWN piece */
    size_t unk_surface_len;

    bool has_unused;     /* UNUSED pieces present: SentencePiece re-splits them after merging */
    bool ws_split;       /* merges never cross a non-space|space boundary (see tok_ws_split_ok) */
    size_t n_user;       /* USER_DEFINED pieces, matched longest-first as frozen symbols */
    uint32_t *user_lens; /* [n_user_lens] distinct USER_DEFINED piece lengths, longest first */
    size_t n_user_lens;

    /* Hugging Face BPE. */
    struct tok_pair_slot *pairs;
    uint64_t *pair_filter;     /* bitmap: a clear bit means no such merge */
    int32_t hf_ascii_ids[128]; /* one-byte pieces, -1 when absent */
    size_t pair_mask;
    struct tok_hf_step *hf_steps;
    size_t n_hf_steps;
    bool hf_metaspace;
    bool hf_metaspace_split;
    enum tok_prepend_scheme hf_prepend;
    char *hf_replacement; /* Metaspace replacement character, usually U+2581 */
    size_t hf_replacement_len;
    int32_t hf_ws_id; /* the piece of the space symbol, for ws_split; -1 when none */
    bool hf_fuse_unk;
    bool hf_ignore_merges;
};

/* A vocabulary under construction: the readers add pieces, then tok_impl_finish validates the
 * whole and builds the lookup tables. */
struct tok_builder {
    struct tok *t;
    size_t blob_len;
    size_t blob_cap;
    int32_t n_set;
    uint8_t *is_set; /* [n_vocab] */
};

/* Starts a tokenizer with n_vocab (> 0) empty pieces, special ids -1, SentencePiece's defaults
 * for the normalizer flags. Aborts on OOM. Caller owns b->t until tok_impl_finish. */
void tok_impl_builder_init(struct tok_builder *b, enum tok_algo algo, int32_t n_vocab);

/* Frees the builder's scratch and, unless finish handed it out, the tokenizer. */
void tok_impl_builder_deinit(struct tok_builder *b);

/* Sets piece `id` (0 <= id < n_vocab, not set before) to len bytes of `text`. */
void tok_impl_builder_set(struct tok_builder *b, int32_t id, const char *text, size_t len,
                          float score, enum tok_piece_type type);

/* Validates the vocabulary (every id set, no empty or duplicate pieces, no NaN scores, byte
 * pieces spelled <0xNN>, byte pieces only with byte_fallback and then all 256 of them, exactly
 * one UNKNOWN piece when require_unk) and builds the piece hash, byte table and user-defined
 * lengths. Returns 0 and moves the tokenizer to *out, or -EINVAL with errstr "name: ...". The
 * builder must still be deinit'ed either way. */
int tok_impl_finish(struct tok_builder *b, bool require_unk, const char *name, struct tok **out,
                    char *errstr, size_t errstr_len);

/* Pieces are hashed with a polynomial, H(s) = sum (s[i] + 1) * P^(n-1-i) mod 2^64, so that the
 * merge loop gets a pair's hash from its halves' as H(l) * P^|r| + H(r) without rereading bytes;
 * the table index and tag come from tok_mix of it. */
#define TOK_HASH_P 0x9e3779b97f4a7c15ULL

static inline uint64_t tok_mix(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    return x ^ (x >> 32);
}

static inline uint64_t tok_poly(const char *s, size_t len)
{
    uint64_t h = 0;
    for (size_t i = 0; i < len; i++) {
        h = h * TOK_HASH_P + (uint64_t)(uint8_t)s[i] + 1;
    }
    return h;
}

/* The id of the piece spelled by len bytes at s, or -1. Thread-safe. */
int32_t tok_impl_lookup(const struct tok *t, const char *s, size_t len);

/* tok_impl_lookup with poly == tok_poly(s, len) already known. */
int32_t tok_impl_lookup_poly(const struct tok *t, const char *s, size_t len, uint64_t poly);

/* True when no NORMAL or USER_DEFINED piece has `ws` after another character, so that merges
 * never cross a boundary "x|ws" and the words between such boundaries can be merged one at a time,
 * in small heaps, with the same result as one heap over the text (sentencepiece trains with
 * split_by_whitespace; LLaMA's vocabulary has this property). False with UNUSED pieces: their
 * re-split depends on the order of every push in the text. */
bool tok_impl_ws_split_ok(const struct tok *t, const char *ws, size_t ws_len);

/* Parses "<0xNN>" (upper-case hex, as SentencePiece writes it) into 0..255, else -1. */
int tok_impl_byte_piece_value(const char *s, size_t len);

/* Length of the valid UTF-8 character starting at s (1..4), or 0 when s starts a malformed
 * sequence, by SentencePiece's rules (no overlongs, no surrogates, at most U+10FFFF). n >= 1. */
size_t tok_impl_utf8_len(const uint8_t *s, size_t n);

/* Writes len bytes of s into out (size out_len, NUL-terminated) for error messages: printable
 * ASCII as is, everything else as \xNN, cut with "..." when too long. */
void tok_impl_quote(char *out, size_t out_len, const char *s, size_t len);

/* SentencePiece encode (see tok_spm.c): appends the ids of len bytes of text to *ids (capacity
 * *cap, grown with xrealloc) from *n_ids on. len > 0 and at most 512 MiB. Thread-safe. */
void tok_impl_spm_encode(const struct tok *t, const uint8_t *text, size_t len, int32_t **ids,
                         size_t *n_ids, size_t *cap);

/* Hugging Face encode of already-validated text (see tok_hf.c): appends ids to *ids (capacity
 * *cap, grown with xrealloc) from *n_ids on. Returns 0 or -EINVAL. Thread-safe. */
/* A queued merge candidate of either encoder: the smallest `key` pops first; pos, len and id
 * mean what the encoder that pushed it says. */
struct tok_merge {
    uint64_t key;
    int32_t pos;
    int32_t len;
    int32_t id;
};

/* A binary min-heap of merge candidates, grown on demand. Zero it to initialise; free items. */
struct tok_heap {
    struct tok_merge *items;
    size_t n;
    size_t cap;
};

void tok_heap_push(struct tok_heap *h, struct tok_merge m);

/* Removes and returns the smallest key. The heap must not be empty. */
struct tok_merge tok_heap_pop(struct tok_heap *h);

int tok_impl_hf_encode(const struct tok *t, const char *text, size_t len, int32_t **ids,
                       size_t *n_ids, size_t *cap);

/* Frees what the Hugging Face reader attached to t (steps, pair table, replacement). */
void tok_impl_hf_free(struct tok *t);

#endif
