/* fuzz_tok.h - what both tokenizer fuzz targets do with a tokenizer that loaded: encode fixed
 * texts and a slice of the input into in-range, non-control ids and decode ids derived from the
 * input without error (any violation aborts). Included by fuzz_tok_model.c and fuzz_tok_json.c. */
#ifndef TESTS_FUZZ_FUZZ_TOK_H
#define TESTS_FUZZ_FUZZ_TOK_H

#include "engine/tokenizer.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const fuzz_tok_texts[] = {
    "",
    " ",
    "Hello world",
    "  Once upon  a time\t\n there   was <s> a </s> <unk> ",
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\xa6\x99 caf\xc3\xa9 \xe2\x96\x81\xe2\x96\x81x",
    "a\xff\xfe\xc0\x80\xed\xa0\x80\xf4\x90\x80\x80\xe6\x97 b",
    "[INST] <<SYS>> hello a b he [/INST]",
};

static void fuzz_tok_check_encode(const struct tok *t, const char *text, size_t len, int bos)
{
    int32_t *ids;
    size_t n;
    if (tok_encode(t, text, len, bos, &ids, &n) != 0) {
        /* only refused when BOS is asked for and the model has none */
        if (!bos || tok_bos_id(t) >= 0) {
            abort();
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= tok_n_vocab(t)) {
            abort();
        }
        if (tok_type(t, ids[i]) == TOK_PIECE_CONTROL && !(bos && i == 0)) {
            abort();
        }
    }
    char *out;
    size_t out_len;
    if (tok_decode(t, ids, n, &out, &out_len) != 0 || strlen(out) > out_len) {
        abort();
    }
    free(out);
    free(ids);
}

/* Exercises a loaded tokenizer with the fuzz input; frees nothing. */
static void fuzz_tok_exercise(const struct tok *t, const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < sizeof(fuzz_tok_texts) / sizeof(fuzz_tok_texts[0]); i++) {
        fuzz_tok_check_encode(t, fuzz_tok_texts[i], strlen(fuzz_tok_texts[i]), (int)(i & 1));
    }
    size_t tail = size < 256 ? size : 256;
    fuzz_tok_check_encode(t, (const char *)data + size - tail, tail, 0);

    int32_t ids[128];
    size_t n = 0;
    for (size_t i = 0; i + 1 < size && n < 128; i += 37) {
        ids[n++] = (int32_t)((data[i] | data[i + 1] << 8) % (uint32_t)tok_n_vocab(t));
    }
    char *out;
    size_t out_len;
    if (tok_decode(t, ids, n, &out, &out_len) != 0) {
        abort();
    }
    free(out);
    int32_t bad = tok_n_vocab(t);
    if (tok_decode(t, &bad, 1, &out, &out_len) != -EINVAL) {
        abort();
    }
}

#endif
