/* sample.c - Philox4x32-10 and next-token sampling with per-request seeds; twin of
 * kernels/cuda/sample.cu (see twin.h for the contract).
 *
 * Both thresholds are found by bisection over the 32-bit order-preserving image of the scaled
 * logits, which is how the CUDA kernel finds them without sorting the vocabulary: the k-th
 * largest value is the largest key K with count(key >= K) >= k; the top-p cut is the largest key
 * K whose lower mass sum(p : key < K) stays <= (1 - top_p) * Z. Each test is one pass over the
 * row, so both sides make the same decisions whenever their masses agree. */
#include "twin.h"

#include <math.h>
#include <stddef.h>

void kern_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

double kern_philox_uniform(uint64_t seed, uint64_t step)
{
    uint32_t ctr[4] = { (uint32_t)step, (uint32_t)(step >> 32), 0, 0 };
    uint32_t key[2] = { (uint32_t)seed, (uint32_t)(seed >> 32) };
    uint32_t r[4];
    kern_philox4x32_10(ctr, key, r);
    uint64_t bits = ((uint64_t)(r[0] >> 5) << 26) | (uint64_t)(r[1] >> 6); /* 27 + 26 bits */
    return (double)bits * (1.0 / 9007199254740992.0);
}

/* The order-preserving unsigned image of a float. */
static uint32_t sample_key(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

static int32_t sample_row(const float *logits, int32_t n, float temperature, int32_t top_k,
                          float top_p, uint64_t seed, uint64_t step)
{
    if (temperature < 1e-4f || n <= 1) {
        int32_t best = 0;
        for (int32_t i = 1; i < n; i++) {
            if (logits[i] > logits[best]) {
                best = i;
            }
        }
        return best;
    }
    float max = -INFINITY;
    for (int32_t i = 0; i < n; i++) {
        float s = logits[i] / temperature;
        max = s > max ? s : max;
    }
    /* top-k: the largest key K with count(key >= K) >= k */
    uint32_t k_cut = 0;
    if (top_k > 0 && top_k < n) {
        uint32_t lo = 0, hi = 0xffffffffu; /* count(>= lo) >= k holds; find the largest */
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2 + 1;
            int32_t c = 0;
            for (int32_t i = 0; i < n; i++) {
                c += sample_key(logits[i] / temperature) >= mid;
            }
            if (c >= top_k) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        k_cut = lo;
    }
    /* top-p: the largest key K >= k_cut with mass(k_cut <= key < K) <= (1 - top_p) Z */
    uint32_t cut = k_cut;
    if (top_p < 1.0f) {
        double z = 0.0;
        for (int32_t i = 0; i < n; i++) {
            float s = logits[i] / temperature;
            z += sample_key(s) >= k_cut ? (double)expf(s - max) : 0.0;
        }
        double limit = (1.0 - (double)top_p) * z;
        uint32_t lo = k_cut, hi = sample_key(max);
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2 + 1;
            double below = 0.0;
            for (int32_t i = 0; i < n; i++) {
                float s = logits[i] / temperature;
                uint32_t key = sample_key(s);
                below += key >= k_cut && key < mid ? (double)expf(s - max) : 0.0;
            }
            if (below <= limit) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        cut = lo;
    }
    /* the draw, in id order over KERN_SAMPLE_CHUNKS contiguous ranges */
    double chunk_sum[KERN_SAMPLE_CHUNKS], total = 0.0;
    for (int32_t c = 0; c < KERN_SAMPLE_CHUNKS; c++) {
        int32_t lo = (int32_t)((int64_t)n * c / KERN_SAMPLE_CHUNKS);
        int32_t hi = (int32_t)((int64_t)n * (c + 1) / KERN_SAMPLE_CHUNKS);
        double sum = 0.0;
        for (int32_t i = lo; i < hi; i++) {
            float s = logits[i] / temperature;
            sum += sample_key(s) >= cut ? (double)expf(s - max) : 0.0;
        }
        chunk_sum[c] = sum;
        total += sum;
    }
    double u = kern_philox_uniform(seed, step) * total, acc = 0.0;
    int32_t last = -1;
    for (int32_t c = 0; c < KERN_SAMPLE_CHUNKS; c++) {
        if (chunk_sum[c] <= 0.0) {
            continue;
        }
        int32_t lo = (int32_t)((int64_t)n * c / KERN_SAMPLE_CHUNKS);
        int32_t hi = (int32_t)((int64_t)n * (c + 1) / KERN_SAMPLE_CHUNKS);
        if (acc + chunk_sum[c] <= u) {
            acc += chunk_sum[c];
            for (int32_t i = hi - 1; i >= lo; i--) {
                if (sample_key(logits[i] / temperature) >= cut) {
                    last = i;
                    break;
                }
            }
            continue;
        }
        for (int32_t i = lo; i < hi; i++) {
            float s = logits[i] / temperature;
            if (sample_key(s) < cut) {
                continue;
            }
            acc += (double)expf(s - max);
            last = i;
            if (acc > u) {
                return i;
            }
        }
        return last; /* rounding left u at the chunk's end */
    }
    return last;
}

void kern_cpu_sample(const float *logits, int32_t n_rows, int32_t n_vocab,
                     const struct kern_sample_params *p, int32_t *tokens)
{
    for (int32_t r = 0; r < n_rows; r++) {
        tokens[r] = sample_row(logits + (size_t)r * (size_t)n_vocab, n_vocab, p->temperature[r],
                               p->top_k[r], p->top_p[r], p->seed[r], p->step[r]);
    }
}
