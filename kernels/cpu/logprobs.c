/* logprobs.c - log-probabilities of the chosen token and the most likely ones; twin of
 * kernels/cuda/logprobs.cu (see twin.h for the contract). The scheduler's host path uses it, so
 * both backends return logprobs by one definition. */
#include "twin.h"

#include <math.h>
#include <stddef.h>

static void logprobs_row(const float *x, int32_t n_vocab, int32_t chosen, int32_t n_top,
                         struct kern_logprob *out)
{
    float mx = x[0];
    for (int32_t i = 1; i < n_vocab; i++) {
        mx = x[i] > mx ? x[i] : mx;
    }
    double sum = 0.0;
    for (int32_t i = 0; i < n_vocab; i++) {
        sum += exp((double)(x[i] - mx));
    }
    float lse = mx + (float)log(sum);
    out[0].token = chosen;
    out[0].logprob = x[chosen] - lse;
    /* insertion into a list kept best first; an equal value never passes an earlier id */
    struct kern_logprob *top = out + 1;
    int32_t n = 0;
    for (int32_t i = 0; i < n_vocab && n_top > 0; i++) {
        if (n == n_top && x[i] <= top[n_top - 1].logprob) {
            continue;
        }
        int32_t k = n < n_top ? n++ : n_top - 1;
        while (k > 0 && top[k - 1].logprob < x[i]) {
            top[k] = top[k - 1];
            k--;
        }
        top[k].token = i;
        top[k].logprob = x[i];
    }
    for (int32_t k = 0; k < n_top; k++) {
        if (k < n) {
            top[k].logprob -= lse;
        } else {
            top[k].token = -1;
            top[k].logprob = -INFINITY;
        }
    }
}

void kern_cpu_logprobs(const float *logits, int32_t n_rows, int32_t n_vocab, const int32_t *chosen,
                       int32_t n_top, struct kern_logprob *out)
{
    for (int32_t r = 0; r < n_rows; r++) {
        logprobs_row(logits + (size_t)r * (size_t)n_vocab, n_vocab, chosen[r], n_top,
                     out + (size_t)r * (size_t)(1 + n_top));
    }
}
