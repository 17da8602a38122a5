/* fuzz_tok_model.c - libFuzzer target for the tokenizer.model reader (tok_load_spm_buf): any
 * input either fails with -EINVAL and a message naming the input, or loads a tokenizer that
 * encodes fixed texts and a slice of the input into in-range, non-control ids and decodes ids
 * derived from the input without error. Replayed by `make test-fuzz`. */
#include "common/util.h"
#include "engine/tokenizer.h"
#include "tests/fuzz/fuzz_tok.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const texts[] = {
    "",
    " ",
    "Hello world",
    "  Once upon  a time\t\n there   was <s> a </s> <unk> ",
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\xa6\x99 caf\xc3\xa9 \xe2\x96\x81\xe2\x96\x81x",
    "a\xff\xfe\xc0\x80\xed\xa0\x80\xf4\x90\x80\x80\xe6\x97 b",
    "[INST] <<SYS>> hello a b he [/INST]",
};

static void check_encode(const struct tok *t, const char *text, size_t len, int bos)
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char errstr[ERRSTR_LEN] = "";
    struct tok *t = NULL;
    int err = tok_load_spm_buf(data, size, "fuzz.model", &t, errstr, sizeof(errstr));
    if (err) {
        if (err != -EINVAL || strncmp(errstr, "fuzz.model: ", 12) != 0 || t) {
            fprintf(stderr, "bad failure: %d '%s'\n", err, errstr);
            abort();
        }
        return 0;
    }
    fuzz_tok_exercise(t, data, size);
    tok_destroy(t);
    return 0;
}
