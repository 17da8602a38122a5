/* test_kernels.c - the CPU reference kernels against independent double-precision formulas:
 * RMSNorm, RoPE in both layouts (as complex rotations), SwiGLU, softmax, GEMV, and paged
 * attention (token-major and head-major blocks, random block tables) against dense attention
 * over the same keys in contiguous memory. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vexp.h"

static uint32_t rng_state = 12345;

static float frand(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static void fill(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        x[i] = frand();
    }
}

static void test_kernels_rmsnorm(void **state)
{
    (void)state;
    enum { N = 77 };
    float x[N], w[N], out[N];
    fill(x, N);
    fill(w, N);
    kern_cpu_rmsnorm_f32(x, w, out, N, 1e-5f);
    double ss = 0;
    for (int i = 0; i < N; i++) {
        ss += (double)x[i] * x[i];
    }
    double scale = 1.0 / sqrt(ss / N + 1e-5);
    for (int i = 0; i < N; i++) {
        assert_true(fabs(out[i] - x[i] * scale * w[i]) < 1e-5);
    }
    kern_cpu_rmsnorm_f32(x, w, x, N, 1e-5f); /* in place */
    assert_memory_equal(x, out, sizeof(out));
}

/* Both layouts are the same rotation of complex pairs; only which elements pair up differs. */
static void test_kernels_rope_both_layouts(void **state)
{
    (void)state;
    enum { H = 3, D = 16 };
    const float thetas[2] = { 10000.0f, 500000.0f };
    for (int t = 0; t < 2; t++) {
        for (int pos = 0; pos < 300; pos += 37) {
            for (int half_split = 0; half_split < 2; half_split++) {
                float x[H * D], y[H * D];
                fill(x, H * D);
                memcpy(y, x, sizeof(x));
                kern_cpu_rope_f32(y, H, D, pos, thetas[t], half_split);
                for (int h = 0; h < H; h++) {
                    for (int i = 0; i < D / 2; i++) {
                        int a = half_split ? i : 2 * i, b = half_split ? i + D / 2 : 2 * i + 1;
                        double ang = pos * pow(thetas[t], -2.0 * i / D);
                        double re = x[h * D + a], im = x[h * D + b];
                        double want_re = re * cos(ang) - im * sin(ang);
                        double want_im = re * sin(ang) + im * cos(ang);
                        assert_true(fabs(y[h * D + a] - want_re) < 2e-4);
                        assert_true(fabs(y[h * D + b] - want_im) < 2e-4);
                    }
                }
            }
        }
    }
}

/* The vector exp behind softmax and SiLU: relative error below 2e-7 against libm's double exp
 * over the whole finite range, and the vector and scalar forms agree bit for bit. */
static void test_kernels_exp_accuracy(void **state)
{
    (void)state;
    double worst = 0;
    for (float x = -87.0f; x < 88.0f; x += 0.00173f) {
        float in[8], out[8];
        for (int j = 0; j < 8; j++) {
            in[j] = x + 0.0002f * (float)j;
        }
        kern_cpu_exp8(in, out);
        for (int j = 0; j < 8; j++) {
            double want = exp((double)in[j]);
            double rel = fabs(out[j] - want) / want;
            worst = rel > worst ? rel : worst;
            float one = kern_cpu_exp1(in[j]);
            assert_memory_equal(&one, &out[j], sizeof(float));
        }
    }
    print_message("exp: worst relative error %.3g\n", worst);
    assert_true(worst < 2e-7);
    assert_true(kern_cpu_exp1(-1000.0f) < 1e-37f && kern_cpu_exp1(-1000.0f) >= 0.0f);
    assert_true(kern_cpu_exp1(1000.0f) > 1e38f);
}

static void test_kernels_swiglu_and_softmax(void **state)
{
    (void)state;
    enum { N = 50 };
    float g[N], u[N], out[N], s[N];
    fill(g, N);
    fill(u, N);
    for (int i = 0; i < N; i++) {
        g[i] *= 8.0f;
    }
    kern_cpu_swiglu_f32(g, u, out, N);
    for (int i = 0; i < N; i++) {
        double want = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        assert_true(fabs(out[i] - want) < 1e-5);
    }
    memcpy(s, g, sizeof(s));
    kern_cpu_softmax_f32(s, N);
    double z = 0;
    for (int i = 0; i < N; i++) {
        z += exp((double)g[i]);
    }
    for (int i = 0; i < N; i++) {
        assert_true(fabs(s[i] - exp((double)g[i]) / z) < 1e-6);
    }
}

static void test_kernels_gemv(void **state)
{
    (void)state;
    const int shapes[][2] = { { 1, 1 }, { 5, 7 }, { 64, 64 }, { 33, 172 }, { 130, 768 } };
    for (size_t c = 0; c < sizeof(shapes) / sizeof(shapes[0]); c++) {
        int n = shapes[c][0], k = shapes[c][1];
        float *w = malloc((size_t)n * k * sizeof(float)), *x = malloc((size_t)k * sizeof(float));
        float *y = malloc((size_t)n * sizeof(float)), *y0 = malloc((size_t)n * sizeof(float));
        fill(w, (size_t)n * k);
        fill(x, (size_t)k);
        fill(y0, (size_t)n);
        for (int acc = 0; acc < 2; acc++) {
            memcpy(y, y0, (size_t)n * sizeof(float));
            kern_cpu_gemv_f32(w, x, y, n, k, acc);
            for (int r = 0; r < n; r++) {
                double want = acc ? y0[r] : 0.0;
                for (int d = 0; d < k; d++) {
                    want += (double)w[(size_t)r * k + d] * x[d];
                }
                assert_true(fabs(y[r] - want) < 1e-5 * (1 + sqrt((double)k)));
            }
        }
        /* a row does not depend on its neighbours: row r alone gives the same bits */
        for (int r = 0; r < n; r++) {
            float one;
            kern_cpu_gemv_f32(w + (size_t)r * k, x, &one, 1, k, 0);
            kern_cpu_gemv_f32(w, x, y, n, k, 0);
            assert_memory_equal(&one, &y[r], sizeof(float));
        }
        free(w);
        free(x);
        free(y);
        free(y0);
    }
}

/* Keys and values scattered over shuffled blocks give the same output as dense attention. */
static void test_kernels_attention_paged_matches_dense(void **state)
{
    (void)state;
    enum { BS = 16, NB = 9, KV_HEADS = 2, HD = 24, STRIDE = KV_HEADS * HD };
    const int32_t blocks[NB] = { 7, 2, 11, 0, 5, 9, 3, 12, 1 };
    float *k_pool = calloc(13 * BS * STRIDE, sizeof(float));
    float *v_pool = calloc(13 * BS * STRIDE, sizeof(float));
    float q[STRIDE], out[STRIDE], scores[NB * BS];
    fill(q, STRIDE);
    float dense_k[NB * BS][HD], dense_v[NB * BS][HD];
    for (int j = 0; j < NB * BS; j++) {
        fill(dense_k[j], HD);
        fill(dense_v[j], HD);
        size_t row = (size_t)blocks[j / BS] * BS + (size_t)(j % BS);
        memcpy(k_pool + row * STRIDE + HD, dense_k[j], sizeof(dense_k[j])); /* kv head 1 */
        memcpy(v_pool + row * STRIDE + HD, dense_v[j], sizeof(dense_v[j]));
    }
    const struct kern_kv_layout kv = { k_pool, v_pool, BS * STRIDE, HD, STRIDE, BS, HD };
    const int ctx[] = { 1, 5, 16, 17, 100, NB * BS };
    for (size_t c = 0; c < sizeof(ctx) / sizeof(ctx[0]); c++) {
        int n = ctx[c];
        kern_cpu_attention_paged_f32(&kv, blocks, n, q, 1, 2, 1, scores, out); /* head 1 only */
        double s[NB * BS], mx = -1e30, z = 0;
        for (int j = 0; j < n; j++) {
            s[j] = 0;
            for (int d = 0; d < HD; d++) {
                s[j] += (double)q[HD + d] * dense_k[j][d];
            }
            s[j] /= sqrt((double)HD);
            mx = s[j] > mx ? s[j] : mx;
        }
        for (int j = 0; j < n; j++) {
            s[j] = exp(s[j] - mx);
            z += s[j];
        }
        for (int d = 0; d < HD; d++) {
            double want = 0;
            for (int j = 0; j < n; j++) {
                want += s[j] / z * dense_v[j][d];
            }
            assert_true(fabs(out[HD + d] - want) < 1e-5);
        }
    }
    free(k_pool);
    free(v_pool);
}

/* Softmax(q . k_j / sqrt(hd)) . v_j over j < n in double: keys and values dense [n, hd]. */
static void attention_ref(const float *q, const float *k, const float *v, int hd, int n,
                          double *out)
{
    double *s = malloc((size_t)n * sizeof(*s)), mx = -1e30, z = 0;
    for (int j = 0; j < n; j++) {
        s[j] = 0;
        for (int d = 0; d < hd; d++) {
            s[j] += (double)q[d] * k[(size_t)j * hd + d];
        }
        s[j] /= sqrt((double)hd);
        mx = s[j] > mx ? s[j] : mx;
    }
    for (int j = 0; j < n; j++) {
        s[j] = exp(s[j] - mx);
        z += s[j];
    }
    for (int d = 0; d < hd; d++) {
        out[d] = 0;
        for (int j = 0; j < n; j++) {
            out[d] += s[j] / z * v[(size_t)j * hd + d];
        }
    }
    free(s);
}

/* Decode attention of whole tokens (all query heads, grouped-query: 6 query heads on 3 KV heads)
 * on random, non-contiguous, interleaved block tables, against the naive reference per head; and
 * bit-identical output whatever the head range of the call (all heads, one KV group, one head)
 * and whether the blocks are token-major or head-major. */
static void test_kernels_attention_paged_random_tables(void **state)
{
    (void)state;
    enum { BS = 16, N_SEQ = 5, MAX_BLK = 12, POOL = N_SEQ * MAX_BLK + 7, N_KV = 3, GROUP = 2 };
    enum { N_HEADS = N_KV * GROUP };
    const int head_dims[] = { 64, 20 }; /* 20: the scalar tails of the 8-lane loops */
    for (size_t hi = 0; hi < sizeof(head_dims) / sizeof(head_dims[0]); hi++) {
        int hd = head_dims[hi], kv_dim = N_KV * hd;
        size_t block_stride = (size_t)BS * (size_t)kv_dim, pool = POOL * block_stride;
        float *k_tok = malloc(pool * sizeof(float)), *v_tok = malloc(pool * sizeof(float));
        float *k_head = malloc(pool * sizeof(float)), *v_head = malloc(pool * sizeof(float));
        fill(k_tok, pool); /* garbage where no sequence writes */
        fill(v_tok, pool);
        memcpy(k_head, k_tok, pool * sizeof(float));
        memcpy(v_head, v_tok, pool * sizeof(float));
        const struct kern_kv_layout tok = { k_tok, v_tok, block_stride, (size_t)hd, (size_t)kv_dim,
                                            BS,    hd };
        const struct kern_kv_layout head = {
            k_head, v_head, block_stride, (size_t)BS * hd, (size_t)hd, BS, hd
        };
        size_t dense_n = (size_t)N_KV * MAX_BLK * BS * hd;
        float *dense_k = malloc(dense_n * sizeof(float)); /* [kv_head][position][hd] */
        float *dense_v = malloc(dense_n * sizeof(float));
        size_t q_n = (size_t)N_HEADS * hd;
        float *q = malloc(q_n * sizeof(float)), *out = malloc(q_n * sizeof(float));
        float *out2 = malloc(q_n * sizeof(float));
        float *scores = malloc((size_t)N_HEADS * MAX_BLK * BS * sizeof(float));
        double *want = malloc((size_t)hd * sizeof(double));
        /* a random permutation of the pool, dealt out to the sequences */
        int32_t perm[POOL];
        for (int i = 0; i < POOL; i++) {
            perm[i] = i;
        }
        for (int i = POOL - 1; i > 0; i--) {
            rng_state = rng_state * 1664525u + 1013904223u;
            int j = (int)((rng_state >> 8) % (uint32_t)(i + 1));
            int32_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        for (int s = 0; s < N_SEQ; s++) {
            const int32_t *table = perm + s * MAX_BLK;
            rng_state = rng_state * 1664525u + 1013904223u;
            int n = 1 + (int)((rng_state >> 8) % (MAX_BLK * BS));
            fill(dense_k, dense_n);
            fill(dense_v, dense_n);
            for (int h = 0; h < N_KV; h++) {
                for (int j = 0; j < n; j++) {
                    size_t blk = (size_t)table[j / BS] * block_stride;
                    size_t at_tok = blk + (size_t)(j % BS) * kv_dim + (size_t)h * hd;
                    size_t at_head = blk + (size_t)h * BS * hd + (size_t)(j % BS) * hd;
                    const float *dk = dense_k + ((size_t)h * MAX_BLK * BS + j) * hd;
                    const float *dv = dense_v + ((size_t)h * MAX_BLK * BS + j) * hd;
                    memcpy(k_tok + at_tok, dk, (size_t)hd * sizeof(float));
                    memcpy(v_tok + at_tok, dv, (size_t)hd * sizeof(float));
                    memcpy(k_head + at_head, dk, (size_t)hd * sizeof(float));
                    memcpy(v_head + at_head, dv, (size_t)hd * sizeof(float));
                }
            }
            fill(q, q_n);
            kern_cpu_attention_paged_f32(&tok, table, n, q, 0, N_HEADS, GROUP, scores, out);
            for (int h = 0; h < N_HEADS; h++) {
                size_t kv_at = (size_t)(h / GROUP) * MAX_BLK * BS * hd;
                attention_ref(q + (size_t)h * hd, dense_k + kv_at, dense_v + kv_at, hd, n, want);
                for (int d = 0; d < hd; d++) {
                    assert_true(fabs(out[(size_t)h * hd + d] - want[d]) < 1e-5);
                }
            }
            kern_cpu_attention_paged_f32(&head, table, n, q, 0, N_HEADS, GROUP, scores, out2);
            assert_memory_equal(out, out2, q_n * sizeof(float));
            memset(out2, 0, q_n * sizeof(float));
            for (int g = 0; g < N_KV; g++) { /* one KV group per call */
                kern_cpu_attention_paged_f32(&head, table, n, q, g * GROUP, (g + 1) * GROUP, GROUP,
                                             scores, out2);
            }
            assert_memory_equal(out, out2, q_n * sizeof(float));
            memset(out2, 0, q_n * sizeof(float));
            for (int h = 0; h < N_HEADS; h++) { /* one head per call */
                kern_cpu_attention_paged_f32(&tok, table, n, q, h, h + 1, GROUP, scores, out2);
            }
            assert_memory_equal(out, out2, q_n * sizeof(float));
        }
        free(k_tok);
        free(v_tok);
        free(k_head);
        free(v_head);
        free(dense_k);
        free(dense_v);
        free(q);
        free(out);
        free(out2);
        free(scores);
        free(want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels_rmsnorm),
        cmocka_unit_test(test_kernels_rope_both_layouts),
        cmocka_unit_test(test_kernels_exp_accuracy),
        cmocka_unit_test(test_kernels_swiglu_and_softmax),
        cmocka_unit_test(test_kernels_gemv),
        cmocka_unit_test(test_kernels_attention_paged_matches_dense),
        cmocka_unit_test(test_kernels_attention_paged_random_tables),
    };
    return cmocka_run_group_tests_name("kernels", tests, NULL, NULL);
}
