/* test_kernels_twin.c - the CPU twins of the CUDA inference kernels (kernels/cpu/twin.h) against
 * naive references, so that what tests/gpu/ holds the CUDA kernels to is itself checked in CI.
 *
 * Bounds: outputs rounded to bf16 must lie within one bf16 rounding (2^-8 relative) plus 1e-4
 * of a double-precision reference; gathers, the K/V stores and RoPE against kern_cpu_rope_f32
 * are exact; the Philox generator matches Random123's published known answers; the sampler is
 * held to exact cases (greedy, top-k 1, ties) and to its distributions (chi-square). */
#include "kernels/cpu/ops.h"
#include "kernels/cpu/twin.h"

/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* Uniform in [-1, 1). */
static float frand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static uint16_t *random_bf16(size_t n, float scale)
{
    uint16_t *p = malloc(n * sizeof(*p) + 2);
    for (size_t i = 0; i < n; i++) {
        p[i] = kern_bf16_from_f32(frand() * scale);
    }
    return p;
}

static float *random_f32(size_t n, float scale)
{
    float *p = malloc(n * sizeof(*p) + 4);
    for (size_t i = 0; i < n; i++) {
        p[i] = frand() * scale;
    }
    return p;
}

/* got (bf16) within one bf16 rounding of want, plus 1e-4. */
static void assert_bf16_near(uint16_t got, double want, const char *what, size_t i)
{
    double g = kern_bf16_to_f32(got);
    if (fabs(g - want) > fabs(want) / 256.0 + 1e-4) {
        fail_msg("%s[%zu] = %.7g, reference %.7g", what, i, g, want);
    }
}

static void test_bf16_rounding(void **state)
{
    (void)state;
    assert_int_equal(kern_bf16_from_f32(1.0f), 0x3f80);
    /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1) */
    assert_int_equal(kern_bf16_from_f32(1.00390625f), 0x3f80);
    /* 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even (1 + 2^-6) */
    assert_int_equal(kern_bf16_from_f32(1.01171875f), 0x3f82);
    assert_int_equal(kern_bf16_from_f32(-2.0f), 0xc000);
    assert_true(isnan(kern_bf16_to_f32(kern_bf16_from_f32(NAN))));
    for (int i = 0; i < 1000; i++) {
        float f = frand() * 100.0f;
        assert_true(fabsf(kern_bf16_to_f32(kern_bf16_from_f32(f)) - f) <= fabsf(f) / 256.0f);
    }
}

static void test_embed_and_rows_gather_exact(void **state)
{
    (void)state;
    enum { V = 50, D = 24, T = 7 };
    uint16_t *table = random_bf16(V * D, 1.0f);
    int32_t tokens[T] = { 0, 49, 3, 3, 17, 8, 1 };
    float out[T * D];
    kern_cpu_embed_bf16(table, tokens, T, D, out);
    for (int t = 0; t < T; t++) {
        for (int d = 0; d < D; d++) {
            assert_true(out[t * D + d] == kern_bf16_to_f32(table[tokens[t] * D + d]));
        }
    }
    int32_t rows[3] = { 6, 0, 6 };
    float g[3 * D];
    kern_cpu_rows_gather_f32(out, D, rows, 3, g);
    for (int o = 0; o < 3; o++) {
        assert_memory_equal(g + o * D, out + rows[o] * D, D * sizeof(float));
    }
    free(table);
}

static void test_add_rmsnorm_matches_reference(void **state)
{
    (void)state;
    static const int32_t dims[] = { 8, 64, 4096 + 3 };
    for (size_t k = 0; k < 3; k++) {
        int32_t dim = dims[k], rows = 5;
        float *x = random_f32((size_t)rows * dim, 3.0f);
        float *x0 = malloc((size_t)rows * dim * sizeof(float));
        memcpy(x0, x, (size_t)rows * dim * sizeof(float));
        float *delta = random_f32((size_t)rows * dim, 1.0f);
        float *w = random_f32((size_t)dim, 2.0f);
        uint16_t *out = malloc((size_t)rows * dim * sizeof(uint16_t));
        for (int with_delta = 0; with_delta < 2; with_delta++) {
            memcpy(x, x0, (size_t)rows * dim * sizeof(float));
            kern_cpu_add_rmsnorm_bf16(x, with_delta ? delta : NULL, w, out, rows, dim, 1e-5f);
            for (int32_t r = 0; r < rows; r++) {
                double ss = 0;
                for (int32_t i = 0; i < dim; i++) {
                    size_t j = (size_t)r * dim + i;
                    float want_x = with_delta ? x0[j] + delta[j] : x0[j];
                    assert_true(x[j] == want_x); /* the residual stream, exactly */
                    ss += (double)want_x * want_x;
                }
                double scale = 1.0 / sqrt(ss / dim + 1e-5);
                for (int32_t i = 0; i < dim; i++) {
                    size_t j = (size_t)r * dim + i;
                    assert_bf16_near(out[j], (double)x[j] * scale * w[i], "rmsnorm", j);
                }
            }
        }
        free(x);
        free(x0);
        free(delta);
        free(w);
        free(out);
    }
}

static void test_silu_mul_matches_reference(void **state)
{
    (void)state;
    enum { R = 3, F = 37 };
    float *gu = random_f32(R * 2 * F, 6.0f);
    uint16_t out[R * F];
    kern_cpu_silu_mul_bf16(gu, R, F, out);
    for (int r = 0; r < R; r++) {
        for (int i = 0; i < F; i++) {
            double g = gu[r * 2 * F + i], u = gu[r * 2 * F + F + i];
            assert_bf16_near(out[r * F + i], g / (1.0 + exp(-g)) * u, "silu_mul", (size_t)i);
        }
    }
    free(gu);
}

/* q rotated as kern_cpu_rope_f32 rotates it (bit for bit), k rotated and v copied into their
 * slots as bf16, padding rows (slot -1) not stored, in both RoPE layouts. */
static void test_rope_kv_write_matches_rope_f32(void **state)
{
    (void)state;
    enum { T = 4, HQ = 4, HKV = 2, HD = 16, SLOTS = 32 };
    const size_t row = (HQ + 2 * HKV) * HD;
    int32_t pos[T] = { 0, 1, 700, 3 }, slot[T] = { 5, 30, -1, 0 };
    for (int half = 0; half < 2; half++) {
        struct kern_qkv_shape s = { HQ, HKV, HD, 10000.0f, half };
        float *qkv = random_f32(T * row, 1.0f);
        float *want = malloc(T * row * sizeof(float));
        memcpy(want, qkv, T * row * sizeof(float));
        uint16_t *kc = calloc(SLOTS * HKV * HD, sizeof(uint16_t));
        uint16_t *vc = calloc(SLOTS * HKV * HD, sizeof(uint16_t));
        kern_cpu_rope_kv_write_bf16(qkv, pos, slot, T, &s, kc, vc);
        for (int t = 0; t < T; t++) {
            float *w = want + t * row;
            kern_cpu_rope_f32(w, HQ, HD, pos[t], 10000.0f, half);
            kern_cpu_rope_f32(w + HQ * HD, HKV, HD, pos[t], 10000.0f, half);
            assert_memory_equal(qkv + t * row, w, (HQ + HKV) * HD * sizeof(float));
            for (int i = 0; slot[t] >= 0 && i < HKV * HD; i++) {
                assert_int_equal(kc[slot[t] * HKV * HD + i], kern_bf16_from_f32(w[HQ * HD + i]));
                assert_int_equal(vc[slot[t] * HKV * HD + i],
                                 kern_bf16_from_f32(w[(HQ + HKV) * HD + i]));
            }
        }
        for (int sl = 0; sl < SLOTS; sl++) { /* untouched slots stay zero */
            if (sl == 5 || sl == 30 || sl == 0) {
                continue;
            }
            for (int i = 0; i < HKV * HD; i++) {
                assert_int_equal(kc[sl * HKV * HD + i], 0);
            }
        }
        free(qkv);
        free(want);
        free(kc);
        free(vc);
    }
}

/* ---- paged attention ---- */

struct attn_case {
    int32_t n_heads, n_kv, hd, bs, n_blocks;
    uint16_t *kc, *vc; /* [n_blocks * bs, n_kv, hd] */
    float *q;          /* [rows, q_stride] */
    int32_t q_stride, rows;
    struct kern_attn_runs runs;
    int32_t q_start[8], q_len[8], pos0[8], indptr[9], ids[256];
};

/* Runs of (q_len, pos0); each run's blocks are a shuffled, disjoint set of the pool. */
static void attn_case_build(struct attn_case *c, int32_t n_heads, int32_t n_kv, int32_t hd,
                            int32_t bs, const int32_t *q_len, const int32_t *pos0, int32_t n_runs)
{
    memset(c, 0, sizeof(*c));
    c->n_heads = n_heads;
    c->n_kv = n_kv;
    c->hd = hd;
    c->bs = bs;
    int32_t need = 0;
    for (int32_t r = 0; r < n_runs; r++) {
        need += (pos0[r] + (q_len[r] ? q_len[r] : 1) + bs - 1) / bs;
    }
    c->n_blocks = need + 3;
    /* a permutation of the pool: run blocks are scattered */
    int32_t perm[256];
    assert_true(c->n_blocks <= 256);
    for (int32_t i = 0; i < c->n_blocks; i++) {
        perm[i] = i;
    }
    for (int32_t i = c->n_blocks - 1; i > 0; i--) {
        int32_t j = (int32_t)((frand() + 1.0f) * 0.5f * (float)(i + 1)) % (i + 1);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int32_t used = 0, row = 0;
    for (int32_t r = 0; r < n_runs; r++) {
        c->q_start[r] = row;
        c->q_len[r] = q_len[r];
        c->pos0[r] = pos0[r];
        c->indptr[r] = used;
        int32_t nb = (pos0[r] + (q_len[r] ? q_len[r] : 1) + bs - 1) / bs;
        for (int32_t b = 0; b < nb; b++) {
            c->ids[used++] = perm[(c->indptr[r] + b)];
        }
        row += q_len[r];
    }
    c->indptr[n_runs] = used;
    c->rows = row;
    c->q_stride = (n_heads + 2 * n_kv) * hd; /* as inside a fused qkv row */
    c->q = random_f32((size_t)(row ? row : 1) * c->q_stride, 1.0f);
    size_t kv = (size_t)c->n_blocks * bs * n_kv * hd;
    c->kc = random_bf16(kv, 2.0f); /* large enough that the softmax is peaked */
    c->vc = random_bf16(kv, 1.0f);
    c->runs = (struct kern_attn_runs){ n_runs, c->q_start, c->q_len, c->pos0, c->indptr, c->ids };
}

static void attn_case_free(struct attn_case *c)
{
    free(c->q);
    free(c->kc);
    free(c->vc);
}

/* Plain softmax attention in double over positions 0 .. n_ctx-1 of run r. */
static void attn_reference(const struct attn_case *c, int32_t r, int32_t row, int32_t h,
                           int32_t n_ctx, double *out)
{
    int32_t hd = c->hd, kvh = h / (c->n_heads / c->n_kv);
    const float *q = c->q + (size_t)row * c->q_stride + (size_t)h * hd;
    double *sc = malloc((size_t)n_ctx * sizeof(double));
    double max = -INFINITY, sum = 0;
    for (int32_t j = 0; j < n_ctx; j++) {
        size_t slot = (size_t)c->ids[c->indptr[r] + j / c->bs] * c->bs + (size_t)(j % c->bs);
        const uint16_t *k = c->kc + (slot * c->n_kv + kvh) * hd;
        double dot = 0;
        for (int32_t d = 0; d < hd; d++) {
            dot += (double)q[d] * kern_bf16_to_f32(k[d]);
        }
        sc[j] = dot / sqrt((double)hd);
        max = sc[j] > max ? sc[j] : max;
    }
    for (int32_t j = 0; j < n_ctx; j++) {
        sc[j] = exp(sc[j] - max);
        sum += sc[j];
    }
    for (int32_t d = 0; d < hd; d++) {
        out[d] = 0;
    }
    for (int32_t j = 0; j < n_ctx; j++) {
        size_t slot = (size_t)c->ids[c->indptr[r] + j / c->bs] * c->bs + (size_t)(j % c->bs);
        const uint16_t *v = c->vc + (slot * c->n_kv + kvh) * hd;
        for (int32_t d = 0; d < hd; d++) {
            out[d] += sc[j] / sum * kern_bf16_to_f32(v[d]);
        }
    }
    free(sc);
}

static void attn_check(const struct attn_case *c, const uint16_t *out, const char *what)
{
    double ref[256];
    for (int32_t r = 0; r < c->runs.n_runs; r++) {
        for (int32_t i = 0; i < c->q_len[r]; i++) {
            int32_t row = c->q_start[r] + i;
            for (int32_t h = 0; h < c->n_heads; h++) {
                attn_reference(c, r, row, h, c->pos0[r] + i + 1, ref);
                for (int32_t d = 0; d < c->hd; d++) {
                    size_t j = ((size_t)row * c->n_heads + h) * c->hd + d;
                    assert_bf16_near(out[j], ref[d], what, j);
                }
            }
        }
    }
}

static void test_attn_prefill_matches_softmax(void **state)
{
    (void)state;
    /* runs: a fresh prompt, a chunk after a 37-token prefix, a single token deep in its
     * sequence, a run ending exactly on a block boundary */
    static const int32_t q_len[] = { 23, 40, 1, 16 }, pos0[] = { 0, 37, 300, 16 };
    static const int32_t shapes[][4] = { { 4, 4, 64, 16 }, { 8, 2, 32, 16 }, { 4, 1, 128, 8 } };
    for (size_t k = 0; k < 3; k++) {
        struct attn_case c;
        attn_case_build(&c, shapes[k][0], shapes[k][1], shapes[k][2], shapes[k][3], q_len, pos0, 4);
        struct kern_attn_shape s = { c.n_heads, c.n_kv, c.hd, c.bs, c.q_stride };
        uint16_t *out = calloc((size_t)c.rows * c.n_heads * c.hd, sizeof(uint16_t));
        kern_cpu_attn_prefill_bf16(c.q, c.kc, c.vc, &c.runs, &s, out);
        attn_check(&c, out, "prefill");
        free(out);
        attn_case_free(&c);
    }
}

static void test_attn_decode_split_merge_matches_softmax(void **state)
{
    (void)state;
    /* one token per run at contexts 1, 16, 17, 300 and 1000 (a padding run in between) */
    static const int32_t q_len[] = { 1, 1, 0, 1, 1, 1 }, pos0[] = { 0, 15, 5, 16, 299, 999 };
    static const int32_t splits[] = { 16, 64, 1024 };
    for (size_t k = 0; k < 3; k++) {
        struct attn_case c;
        attn_case_build(&c, 8, 2, 64, 16, q_len, pos0, 6);
        struct kern_attn_shape s = { c.n_heads, c.n_kv, c.hd, c.bs, c.q_stride };
        int32_t max_splits = (1000 + splits[k] - 1) / splits[k];
        float *po = malloc((size_t)6 * c.n_heads * max_splits * c.hd * sizeof(float));
        float *pl = malloc((size_t)6 * c.n_heads * max_splits * sizeof(float));
        uint16_t *out = calloc((size_t)c.rows * c.n_heads * c.hd, sizeof(uint16_t));
        uint16_t *pre = calloc((size_t)c.rows * c.n_heads * c.hd, sizeof(uint16_t));
        kern_cpu_attn_decode_bf16(c.q, c.kc, c.vc, &c.runs, &s, splits[k], max_splits, po, pl, out);
        attn_check(&c, out, "decode");
        /* the prefill kernel on the same single-token runs agrees to within bf16 rounding */
        kern_cpu_attn_prefill_bf16(c.q, c.kc, c.vc, &c.runs, &s, pre);
        for (size_t i = 0; i < (size_t)c.rows * c.n_heads * c.hd; i++) {
            assert_bf16_near(out[i], kern_bf16_to_f32(pre[i]), "decode vs prefill", i);
        }
        free(po);
        free(pl);
        free(out);
        free(pre);
        attn_case_free(&c);
    }
}

/* ---- Philox and sampling ---- */

static void test_philox_known_answers(void **state)
{
    (void)state;
    /* Random123's kat_vectors for philox4x32_10 */
    static const uint32_t ctr[3][4] = { { 0, 0, 0, 0 },
                                        { 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff },
                                        { 0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344 } };
    static const uint32_t key[3][2] = { { 0, 0 },
                                        { 0xffffffff, 0xffffffff },
                                        { 0xa4093822, 0x299f31d0 } };
    static const uint32_t want[3][4] = { { 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8 },
                                         { 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd },
                                         { 0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1 } };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        kern_philox4x32_10(ctr[i], key[i], out);
        assert_memory_equal(out, want[i], sizeof(out));
    }
    double mean = 0;
    for (uint64_t s = 0; s < 20000; s++) {
        double u = kern_philox_uniform(42, s);
        assert_true(u >= 0.0 && u < 1.0);
        mean += u;
    }
    mean /= 20000;
    assert_true(fabs(mean - 0.5) < 5 * sqrt(1.0 / 12 / 20000)); /* 5 sigma */
    assert_true(kern_philox_uniform(1, 7) != kern_philox_uniform(2, 7));
}

/* Draws n samples of one row (steps 0 .. n-1) and counts the tokens. */
static void sample_counts(const float *logits, int32_t n_vocab, float t, int32_t k, float p,
                          uint64_t seed, int n, int *counts)
{
    memset(counts, 0, (size_t)n_vocab * sizeof(int));
    for (int i = 0; i < n; i++) {
        uint64_t step = (uint64_t)i;
        struct kern_sample_params sp = { &t, &k, &p, &seed, &step };
        int32_t tok;
        kern_cpu_sample(logits, 1, n_vocab, &sp, &tok);
        assert_true(tok >= 0 && tok < n_vocab);
        counts[tok]++;
    }
}

/* Chi-square of counts against probabilities `want` (zero-probability tokens must not occur);
 * fails above the 1e-6 tail for its degrees of freedom (generously bounded by df + 10 sqrt(2df)).
 */
static void assert_distribution(const int *counts, const double *want, int32_t n_vocab, int n)
{
    double chi2 = 0;
    int df = -1;
    for (int32_t i = 0; i < n_vocab; i++) {
        if (want[i] == 0) {
            if (counts[i] != 0) {
                fail_msg("token %d drawn %d times but filtered out", i, counts[i]);
            }
            continue;
        }
        double e = want[i] * n;
        chi2 += (counts[i] - e) * (counts[i] - e) / e;
        df++;
    }
    if (df > 0 && chi2 > df + 10 * sqrt(2.0 * df)) {
        fail_msg("chi-square %.1f with %d degrees of freedom", chi2, df);
    }
}

static void test_sample_distributions(void **state)
{
    (void)state;
    enum { V = 6, N = 40000 };
    /* probabilities at temperature 1: 0.4, 0.25, 0.15, 0.1, 0.06, 0.04 */
    static const double prob[V] = { 0.4, 0.25, 0.15, 0.1, 0.06, 0.04 };
    float logits[V];
    static const int perm[V] = { 3, 0, 5, 1, 4, 2 }; /* token ids not in probability order */
    for (int i = 0; i < V; i++) {
        logits[perm[i]] = (float)log(prob[i]) + 2.0f;
    }
    int counts[V];
    double want[V];
    /* plain temperature 1 */
    sample_counts(logits, V, 1.0f, 0, 1.0f, 7, N, counts);
    for (int i = 0; i < V; i++) {
        want[perm[i]] = prob[i];
    }
    assert_distribution(counts, want, V, N);
    /* temperature 0.5 squares and renormalizes */
    double z = 0;
    for (int i = 0; i < V; i++) {
        z += prob[i] * prob[i];
    }
    for (int i = 0; i < V; i++) {
        want[perm[i]] = prob[i] * prob[i] / z;
    }
    sample_counts(logits, V, 0.5f, 0, 1.0f, 8, N, counts);
    assert_distribution(counts, want, V, N);
    /* top-k 3 keeps 0.4, 0.25, 0.15 */
    for (int i = 0; i < V; i++) {
        want[perm[i]] = i < 3 ? prob[i] / 0.8 : 0.0;
    }
    sample_counts(logits, V, 1.0f, 3, 1.0f, 9, N, counts);
    assert_distribution(counts, want, V, N);
    /* top-p 0.75: drop 0.04, 0.06, 0.1 (0.2 <= 0.25) but not 0.15 (0.35 > 0.25) */
    for (int i = 0; i < V; i++) {
        want[perm[i]] = i < 3 ? prob[i] / 0.8 : 0.0;
    }
    sample_counts(logits, V, 1.0f, 0, 0.75f, 10, N, counts);
    assert_distribution(counts, want, V, N);
    /* top-k 4 then top-p 0.5 of the renormalized 0.9: drop while mass <= 0.45 -> keep 0.4, 0.25 */
    for (int i = 0; i < V; i++) {
        want[perm[i]] = i < 2 ? prob[i] / 0.65 : 0.0;
    }
    sample_counts(logits, V, 1.0f, 4, 0.5f, 11, N, counts);
    assert_distribution(counts, want, V, N);
}

static void test_sample_exact_cases(void **state)
{
    (void)state;
    enum { V = 3000 };
    float *logits = random_f32(V, 5.0f);
    logits[1234] = 9.0f;
    logits[2345] = 9.0f; /* a tie for the maximum */
    float t0 = 0.0f, t1 = 0.7f, p1 = 1.0f;
    int32_t k0 = 0, k1 = 1;
    uint64_t seed = 5, step = 0;
    int32_t tok;
    struct kern_sample_params greedy = { &t0, &k0, &p1, &seed, &step };
    kern_cpu_sample(logits, 1, V, &greedy, &tok);
    assert_int_equal(tok, 1234); /* the first maximum */
    /* top-k 1 at a temperature keeps both tied maxima (ties survive) and nothing else */
    int seen[2] = { 0, 0 };
    for (step = 0; step < 200; step++) {
        struct kern_sample_params sp = { &t1, &k1, &p1, &seed, &step };
        kern_cpu_sample(logits, 1, V, &sp, &tok);
        assert_true(tok == 1234 || tok == 2345);
        seen[tok == 2345]++;
    }
    assert_true(seen[0] > 50 && seen[1] > 50);
    /* a row's token depends on its own (seed, step), not on its place in the batch */
    enum { R = 5 };
    float *batch = malloc((size_t)R * V * sizeof(float));
    float temps[R];
    int32_t ks[R];
    float ps[R];
    uint64_t seeds[R], steps[R];
    for (int r = 0; r < R; r++) {
        memcpy(batch + (size_t)r * V, logits, V * sizeof(float));
        temps[r] = 1.5f;
        ks[r] = r == 2 ? 0 : 40;
        ps[r] = r == 3 ? 0.9f : 1.0f;
        seeds[r] = 100 + (uint64_t)r;
        steps[r] = 3;
    }
    int32_t toks[R];
    struct kern_sample_params bp = { temps, ks, ps, seeds, steps };
    kern_cpu_sample(batch, R, V, &bp, toks);
    for (int r = 0; r < R; r++) {
        struct kern_sample_params one = { &temps[r], &ks[r], &ps[r], &seeds[r], &steps[r] };
        kern_cpu_sample(logits, 1, V, &one, &tok);
        assert_int_equal(tok, toks[r]);
    }
    free(batch);
    free(logits);
}

/* kern_cpu_logprobs against a brute force: every id ranked by qsort on (logit descending, id
 * ascending), log-softmax in long double. Rows hold ties (values on a coarse grid), one row is
 * shorter than n_top. */
static const float *lp_sort_row;

static int lp_rank_cmp(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float x = lp_sort_row[i], y = lp_sort_row[j];
    return x > y ? -1 : x < y ? 1 : (i > j) - (i < j);
}

static void test_logprobs_matches_brute_force(void **state)
{
    (void)state;
    static const int32_t vocabs[] = { 1000, 32000, 7 };
    for (int v = 0; v < 3; v++) {
        int32_t V = vocabs[v], R = 3, T = 20;
        float *x = malloc((size_t)R * V * sizeof(float));
        for (size_t i = 0; i < (size_t)R * V; i++) {
            x[i] = roundf(frand() * 40.0f) / 4.0f; /* many ties */
        }
        int32_t chosen[3] = { 0, V / 2, V - 1 };
        struct kern_logprob *out = malloc((size_t)R * (1 + T) * sizeof(*out));
        kern_cpu_logprobs(x, R, V, chosen, T, out);
        int32_t *ids = malloc((size_t)V * sizeof(int32_t));
        for (int32_t r = 0; r < R; r++) {
            const float *row = x + (size_t)r * V;
            long double sum = 0;
            for (int32_t i = 0; i < V; i++) {
                sum += expl((long double)row[i]);
            }
            long double lse = logl(sum);
            const struct kern_logprob *o = out + (size_t)r * (1 + T);
            assert_int_equal(o[0].token, chosen[r]);
            assert_true(fabsl(o[0].logprob - (row[chosen[r]] - lse)) <= 1e-5L);
            for (int32_t i = 0; i < V; i++) {
                ids[i] = i;
            }
            lp_sort_row = row;
            qsort(ids, (size_t)V, sizeof(int32_t), lp_rank_cmp);
            for (int32_t k = 0; k < T; k++) {
                if (k < V) {
                    assert_int_equal(o[1 + k].token, ids[k]);
                    assert_true(fabsl(o[1 + k].logprob - (row[ids[k]] - lse)) <= 1e-5L);
                } else {
                    assert_int_equal(o[1 + k].token, -1);
                    assert_true(isinf(o[1 + k].logprob) && o[1 + k].logprob < 0);
                }
            }
        }
        free(ids);
        free(out);
        free(x);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_embed_and_rows_gather_exact),
        cmocka_unit_test(test_add_rmsnorm_matches_reference),
        cmocka_unit_test(test_silu_mul_matches_reference),
        cmocka_unit_test(test_rope_kv_write_matches_rope_f32),
        cmocka_unit_test(test_attn_prefill_matches_softmax),
        cmocka_unit_test(test_attn_decode_split_merge_matches_softmax),
        cmocka_unit_test(test_philox_known_answers),
        cmocka_unit_test(test_sample_distributions),
        cmocka_unit_test(test_sample_exact_cases),
        cmocka_unit_test(test_logprobs_matches_brute_force),
    };
    return cmocka_run_group_tests_name("kernels_twin", tests, NULL, NULL);
}
