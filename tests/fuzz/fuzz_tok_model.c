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
