/* sampler.c - greedy, temperature, top-k, top-p (see sampler.h).
 *
 * Filters follow transformers: top-k keeps every logit >= the k-th largest (ties at the
 * boundary survive); top-p sorts by probability, drops the tokens whose cumulative probability
 * from the low end stays <= 1 - top_p, and always keeps the most likely token. The draw walks the
 * kept tokens from most to least likely (ties by lower id) with one uniform number. */
#include "engine/sampler.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

struct sampler_scratch {
    int32_t cap;
    int32_t *idx; /* [cap] candidate ids */
    float *val;   /* [cap] their scaled logits, then probabilities */
};

void sampler_params_greedy(struct sampler_params *p)
{
    p->temperature = 0.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->seed = 0;
}

void sampler_params_judgelm(struct sampler_params *p, uint64_t seed)
{
    p->temperature = 0.2f;
    p->top_k = 50;
    p->top_p = 1.0f;
    p->seed = seed;
}

int sampler_params_check(const struct sampler_params *p)
{
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f) || p->top_k < 0 ||
        !(p->top_p > 0.0f && p->top_p <= 1.0f)) {
        return -EINVAL;
    }
    return 0;
}

struct sampler_scratch *sampler_scratch_create(int32_t n_vocab)
{
    struct sampler_scratch *s = calloc(1, sizeof(*s));
    if (!s) {
        return NULL;
    }
    s->cap = n_vocab;
    s->idx = malloc((size_t)n_vocab * sizeof(*s->idx));
    s->val = malloc((size_t)n_vocab * sizeof(*s->val));
    if (!s->idx || !s->val) {
        sampler_scratch_destroy(s);
        return NULL;
    }
    return s;
}

void sampler_scratch_destroy(struct sampler_scratch *s)
{
    if (!s) {
        return;
    }
    free(s->idx);
    free(s->val);
    free(s);
}

/* splitmix64 over (seed, step): a stateless counter-based generator. */
double sampler_uniform(uint64_t seed, uint64_t step)
{
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (step + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0); /* 53 bits */
}

static int32_t sampler_argmax(const float *logits, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++) {
        if (logits[i] > logits[best]) {
            best = i;
        }
    }
    return best;
}

/* Orders candidates by value descending, then id ascending (a total order: deterministic). */
static void sampler_sort(int32_t *idx, float *val, int32_t n)
{
    /* insertion sort for short lists, heap sort otherwise; no qsort context needed */
    if (n <= 64) {
        for (int32_t i = 1; i < n; i++) {
            int32_t ki = idx[i];
            float kv = val[i];
            int32_t j = i - 1;
            while (j >= 0 && (val[j] < kv || (val[j] == kv && idx[j] > ki))) {
                idx[j + 1] = idx[j];
                val[j + 1] = val[j];
                j--;
            }
            idx[j + 1] = ki;
            val[j + 1] = kv;
        }
        return;
    }
    /* heap sort into ascending order of "rank" where the min-heap root is the worst candidate */
    for (int32_t start = n / 2 - 1; start >= 0; start--) {
        int32_t root = start;
        for (;;) {
            int32_t child = 2 * root + 1;
            if (child >= n) {
                break;
            }
            int32_t sw = root;
#define SAMPLER_WORSE(a, b) (val[a] < val[b] || (val[a] == val[b] && idx[a] > idx[b]))
            if (SAMPLER_WORSE(child, sw)) {
                sw = child;
            }
            if (child + 1 < n && SAMPLER_WORSE(child + 1, sw)) {
                sw = child + 1;
            }
            if (sw == root) {
                break;
            }
            int32_t ti = idx[root];
            float tv = val[root];
            idx[root] = idx[sw];
            val[root] = val[sw];
            idx[sw] = ti;
            val[sw] = tv;
            root = sw;
        }
    }
    for (int32_t end = n - 1; end > 0; end--) {
        int32_t ti = idx[0];
        float tv = val[0];
        idx[0] = idx[end];
        val[0] = val[end];
        idx[end] = ti;
        val[end] = tv;
        int32_t root = 0;
        for (;;) {
            int32_t child = 2 * root + 1;
            if (child >= end) {
                break;
            }
            int32_t sw = root;
            if (SAMPLER_WORSE(child, sw)) {
                sw = child;
            }
            if (child + 1 < end && SAMPLER_WORSE(child + 1, sw)) {
                sw = child + 1;
            }
            if (sw == root) {
                break;
            }
            ti = idx[root];
            tv = val[root];
            idx[root] = idx[sw];
            val[root] = val[sw];
            idx[sw] = ti;
            val[sw] = tv;
            root = sw;
        }
#undef SAMPLER_WORSE
    }
}

int32_t sampler_sample(const struct sampler_params *p, uint64_t step, const float *logits,
                       int32_t n_vocab, struct sampler_scratch *s)
{
    if (p->temperature < 1e-4f || n_vocab <= 1) {
        return sampler_argmax(logits, n_vocab);
    }
    int32_t n = 0;
    if (p->top_k > 0 && p->top_k < n_vocab) {
        /* threshold = the k-th largest logit: selection by a bounded min-heap of k values */
        int32_t k = p->top_k;
        float *heap = s->val;
        int32_t h = 0;
        for (int32_t i = 0; i < n_vocab; i++) {
            float v = logits[i];
            if (h < k) {
                int32_t c = h++;
                heap[c] = v;
                while (c > 0 && heap[(c - 1) / 2] > heap[c]) {
                    float t = heap[c];
                    heap[c] = heap[(c - 1) / 2];
                    heap[(c - 1) / 2] = t;
                    c = (c - 1) / 2;
                }
            } else if (v > heap[0]) {
                heap[0] = v;
                int32_t r = 0;
                for (;;) {
                    int32_t l = 2 * r + 1, m = r;
                    if (l < k && heap[l] < heap[m]) {
                        m = l;
                    }
                    if (l + 1 < k && heap[l + 1] < heap[m]) {
                        m = l + 1;
                    }
                    if (m == r) {
                        break;
                    }
                    float t = heap[r];
                    heap[r] = heap[m];
                    heap[m] = t;
                    r = m;
                }
            }
        }
        float kth = heap[0];
        for (int32_t i = 0; i < n_vocab; i++) {
            if (logits[i] >= kth) {
                s->idx[n++] = i;
            }
        }
    } else {
        for (int32_t i = 0; i < n_vocab; i++) {
            s->idx[n++] = i;
        }
    }
    float inv_t = 1.0f / p->temperature;
    for (int32_t i = 0; i < n; i++) {
        s->val[i] = logits[s->idx[i]] * inv_t;
    }
    sampler_sort(s->idx, s->val, n);
    /* softmax over the survivors (most likely first) */
    double max = s->val[0], sum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        double e = exp((double)s->val[i] - max);
        s->val[i] = (float)e;
        sum += e;
    }
    if (p->top_p < 1.0f) {
        /* drop from the low end while the cumulative mass there stays <= 1 - top_p */
        double tail = 0.0, limit = (1.0 - (double)p->top_p) * sum;
        int32_t keep = n;
        while (keep > 1 && tail + s->val[keep - 1] <= limit) {
            tail += s->val[keep - 1];
            keep--;
        }
        sum -= tail;
        n = keep;
    }
    double u = sampler_uniform(p->seed, step) * sum, acc = 0.0;
    for (int32_t i = 0; i < n; i++) {
        acc += s->val[i];
        if (u < acc) {
            return s->idx[i];
        }
    }
    return s->idx[n - 1];
}
