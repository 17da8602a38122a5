/* embed.c - the embedding gather and the row gather before the LM head, twins of
 * kernels/cuda/embed.cu (see twin.h). */
#include "twin.h"

#include <stddef.h>

void kern_cpu_embed_bf16(const uint16_t *table, const int32_t *tokens, int32_t n_tokens,
                         int32_t dim, float *out)
{
    for (int32_t t = 0; t < n_tokens; t++) {
        const uint16_t *row = table + (size_t)tokens[t] * (size_t)dim;
        for (int32_t d = 0; d < dim; d++) {
            out[(size_t)t * (size_t)dim + (size_t)d] = kern_bf16_to_f32(row[d]);
        }
    }
}

void kern_cpu_rows_gather_f32(const float *x, int32_t dim, const int32_t *rows, int32_t n_out,
                              float *out)
{
    for (int32_t o = 0; o < n_out; o++) {
        memcpy(out + (size_t)o * (size_t)dim, x + (size_t)rows[o] * (size_t)dim,
               (size_t)dim * sizeof(float));
    }
}
