/* test_sched.c - the scheduler on the CUDA backend with device sampling (SKIPs without a GPU or
 * without nvcc; runs on cuemu in make test):
 *
 * - engine_sample_device against kern_cpu_sample (the twin) on the logits of the same pass, for
 *   greedy, temperature, top-k and top-p rows: the same tokens;
 * - every token the scheduler generates with device sampling equals a reference decode written
 *   here: the same requests run one at a time through engine_forward with the logits on the host
 *   and kern_cpu_sample at each (seed, step). The requests run batched together, with and
 *   without logprobs (computed on the device too): the tokens must not depend on that;
 * - device logprobs against the host path's (kern_cpu_logprobs on the same logits copied back),
 *   all requests greedy so both paths run the same batches: ids exactly, values to 1e-5;
 * - with JUDGED_DEVICE_SAMPLING=0 the host sampler takes over: greedy requests are unchanged. */
/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
#include "common/util.h"
#include "engine/engine.h"
#include "kernels/cpu/twin.h"
#include "scheduler/sched.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_CUDA
#define MODEL_DIR "tests/fixtures/stories260K-hf"

enum { N_REQ = 6, PROMPT = 9, GEN = 12, MAX_TOK = 128, N_LP = 3 };

static struct engine *open_engine(void)
{
    struct engine_config cfg;
    engine_config_default(&cfg);
    cfg.backend = ENGINE_BACKEND_CUDA;
    cfg.n_kv_blocks = 64;
    cfg.max_batch_tokens = MAX_TOK;
    cfg.max_outputs = 16;
    cfg.max_ctx = 64;
    struct engine *e = NULL;
    char err[ERRSTR_LEN];
    if (engine_open(MODEL_DIR, NULL, &cfg, &e, err, sizeof(err)) != 0) {
        fail_msg("engine_open: %s", err);
    }
    return e;
}

/* Request r's prompt and sampling: greedy, JudgeLM's (temperature 0.2, top-k 50), hot with
 * top-p, hot with a small top-k, plain temperature 1, greedy again. */
static void request(int r, int32_t *prompt, struct sampler_params *sp)
{
    uint32_t x = 1000u + (uint32_t)r * 7919u;
    prompt[0] = 1;
    for (int i = 1; i < PROMPT; i++) {
        x = x * 1664525u + 1013904223u;
        prompt[i] = 3 + (int32_t)((x >> 8) % 500u);
    }
    static const float temp[N_REQ] = { 0.0f, 0.2f, 1.3f, 0.9f, 1.0f, 0.0f };
    static const int32_t top_k[N_REQ] = { 0, 50, 0, 5, 0, 0 };
    static const float top_p[N_REQ] = { 1.0f, 1.0f, 0.8f, 1.0f, 1.0f, 1.0f };
    sp->temperature = temp[r];
    sp->top_k = top_k[r];
    sp->top_p = top_p[r];
    sp->seed = 77u + (uint64_t)r;
}

/* The reference: request r alone, its logits on the host, the twin sampler. */
static void reference_decode(struct engine *e, int r, int32_t *out)
{
    int32_t prompt[PROMPT], tokens[PROMPT + GEN], pos[PROMPT], seq[PROMPT] = { 0 };
    struct sampler_params sp;
    request(r, prompt, &sp);
    int32_t V = engine_model_config(e)->n_vocab, bs = engine_get_config(e)->kv_block_size;
    int32_t table[8];
    for (int k = 0; k < 8; k++) {
        table[k] = 8 * r + k; /* blocks of its own */
    }
    const int32_t *tables[1] = { table };
    float *logits = malloc((size_t)V * sizeof(float));
    memcpy(tokens, prompt, sizeof(prompt));
    for (int i = 0; i < PROMPT; i++) {
        pos[i] = i;
    }
    int32_t n = PROMPT;
    for (int step = 0; step < GEN; step++) {
        int32_t first = step == 0 ? 0 : n - 1, count = n - first;
        int32_t nb = (n + bs - 1) / bs, row = count - 1;
        int32_t p[PROMPT];
        for (int32_t i = 0; i < count; i++) {
            p[i] = first + i;
        }
        struct engine_batch b = {
            count, tokens + first, step == 0 ? pos : p, seq, 1, tables, &nb, 1, &row
        };
        assert_int_equal(engine_forward(e, &b, logits), 0);
        uint64_t seed = sp.seed, st = (uint64_t)step;
        struct kern_sample_params kp = { &sp.temperature, &sp.top_k, &sp.top_p, &seed, &st };
        kern_cpu_sample(logits, 1, V, &kp, &tokens[n]);
        out[step] = tokens[n];
        n++;
    }
    free(logits);
}

/* Every request through one scheduler; greedy: all of them greedy. */
static void sched_decode(struct engine *e, int n_logprobs, bool greedy, int32_t out[N_REQ][GEN],
                         struct sched_logprob lp[N_REQ][GEN][1 + N_LP])
{
    struct sched_config cfg;
    sched_config_default(&cfg);
    cfg.enable_prefix_cache = false;
    struct sched *s = NULL;
    assert_int_equal(sched_create(&cfg, e, NULL, &s), 0);
    int32_t prompts[N_REQ][PROMPT];
    for (int r = 0; r < N_REQ; r++) {
        struct sched_request_params p;
        sched_request_params_default(&p);
        request(r, prompts[r], &p.sampling);
        if (greedy) {
            sampler_params_greedy(&p.sampling);
        }
        p.tokens = prompts[r];
        p.n_tokens = PROMPT;
        p.max_new_tokens = GEN;
        p.ignore_eos = true;
        p.n_logprobs = n_logprobs;
        p.user = (void *)(intptr_t)r;
        assert_int_equal(sched_submit(s, &p, NULL), 0);
    }
    int seen = 0;
    struct sched_completion c;
    for (;;) {
        while (sched_poll(s, &c)) {
            int r = (int)(intptr_t)c.user;
            assert_int_equal(c.n_tokens, GEN);
            memcpy(out[r], c.tokens, sizeof(out[r]));
            if (n_logprobs) {
                assert_int_equal(n_logprobs, N_LP);
                memcpy(lp[r], c.logprobs, sizeof(lp[r]));
            }
            seen++;
        }
        int rc = sched_step(s);
        if (rc == -EAGAIN) {
            break;
        }
        assert_int_equal(rc, 0);
    }
    while (sched_poll(s, &c)) {
        seen++;
    }
    assert_int_equal(seen, N_REQ);
    sched_destroy(s);
}

static bool gpu_present(void)
{
    return engine_cuda_device_count() > 0;
}

static void test_sample_device_matches_twin(void **state)
{
    (void)state;
    if (!gpu_present()) {
        skip();
    }
    struct engine *e = open_engine();
    assert_true(engine_samples_on_device(e));
    int32_t V = engine_model_config(e)->n_vocab;
    /* six sequences of 5 tokens in one pass, one output row each */
    enum { R = 6, L = 5 };
    int32_t tok[R * L], pos[R * L], seq[R * L], rows[R], tables_mem[R], nb[R];
    const int32_t *tables[R];
    for (int r = 0; r < R; r++) {
        for (int i = 0; i < L; i++) {
            tok[r * L + i] = i == 0 ? 1 : 3 + (r * 31 + i * 17) % 500;
            pos[r * L + i] = i;
            seq[r * L + i] = r;
        }
        rows[r] = r * L + L - 1;
        tables_mem[r] = r;
        tables[r] = &tables_mem[r];
        nb[r] = 1;
    }
    struct engine_batch b = { R * L, tok, pos, seq, R, tables, nb, R, rows };
    float *logits = malloc((size_t)R * V * sizeof(float));
    assert_int_equal(engine_forward(e, &b, logits), 0);
    float temp[R] = { 0.0f, 0.2f, 0.7f, 1.0f, 1.5f, 2.0f }, top_p[R] = { 1, 1, 0.9f, 1, 0.5f, 1 };
    int32_t top_k[R] = { 0, 50, 0, 3, 0, 0 }, want[R], got[R];
    uint64_t seed[R] = { 1, 2, 3, 4, 5, 6 }, step[R] = { 0, 9, 3, 1, 100, 7 };
    struct kern_sample_params kp = { temp, top_k, top_p, seed, step };
    kern_cpu_sample(logits, R, V, &kp, want);
    assert_int_equal(engine_sample_device(e, R, temp, top_k, top_p, seed, step, got, 0, NULL), 0);
    for (int r = 0; r < R; r++) {
        assert_int_equal(got[r], want[r]);
    }
    /* more rows than the pass produced */
    assert_int_equal(engine_sample_device(e, R + 1, temp, top_k, top_p, seed, step, got, 0, NULL),
                     -EINVAL);
    printf("SCHED device sampling of %d rows = the twin on the same logits  PASS\n", R);
    free(logits);
    engine_destroy(e);
}

static void test_sched_device_sampling_matches_reference(void **state)
{
    (void)state;
    if (!gpu_present()) {
        skip();
    }
    struct engine *e = open_engine();
    int32_t want[N_REQ][GEN], got[N_REQ][GEN], got_lp[N_REQ][GEN], host[N_REQ][GEN];
    static struct sched_logprob lp_dev[N_REQ][GEN][1 + N_LP], lp_host[N_REQ][GEN][1 + N_LP];
    for (int r = 0; r < N_REQ; r++) {
        reference_decode(e, r, want[r]);
    }
    sched_decode(e, 0, false, got, NULL);
    sched_decode(e, N_LP, false, got_lp, lp_dev);
    int differ = 0;
    for (int r = 0; r < N_REQ; r++) {
        differ += memcmp(got[r], want[r], sizeof(want[r])) != 0;
        differ += memcmp(got_lp[r], want[r], sizeof(want[r])) != 0;
    }
    printf("SCHED device-sampled requests equal to the reference decode: %d of %d  %s\n",
           2 * N_REQ - differ, 2 * N_REQ, differ ? "FAIL" : "PASS");
    assert_int_equal(differ, 0);
    /* logprobs: all requests greedy, so the host path (JUDGED_DEVICE_SAMPLING=0) generates the
     * same tokens in the same batches, from the same logits; its logprobs are kern_cpu_logprobs
     * on those logits copied back, the device path's never leave the device */
    int32_t g_dev[N_REQ][GEN], g_host[N_REQ][GEN];
    sched_decode(e, N_LP, true, g_dev, lp_dev);
    engine_destroy(e);
    setenv("JUDGED_DEVICE_SAMPLING", "0", 1);
    e = open_engine();
    assert_false(engine_samples_on_device(e));
    sched_decode(e, 0, false, host, NULL);
    sched_decode(e, N_LP, true, g_host, lp_host);
    unsetenv("JUDGED_DEVICE_SAMPLING");
    assert_memory_equal(g_dev, g_host, sizeof(g_dev));
    int lp_ids = 0;
    double lp_worst = 0;
    for (int r = 0; r < N_REQ; r++) {
        for (int k = 0; k < GEN; k++) {
            for (int j = 0; j <= N_LP; j++) {
                lp_ids += lp_dev[r][k][j].token != lp_host[r][k][j].token;
                double d = fabs((double)lp_dev[r][k][j].logprob - lp_host[r][k][j].logprob);
                lp_worst = d > lp_worst ? d : lp_worst;
            }
        }
    }
    printf("SCHED device logprobs vs host logprobs of the same steps: ids differing %d, "
           "max|diff| %.3e  %s\n",
           lp_ids, lp_worst, lp_ids == 0 && lp_worst <= 1e-5 ? "PASS" : "FAIL");
    assert_int_equal(lp_ids, 0);
    assert_true(lp_worst <= 1e-5);
    /* the host sampler (another generator) on the same backend: greedy requests unchanged */
    assert_memory_equal(host[0], want[0], sizeof(want[0]));
    assert_memory_equal(host[5], want[5], sizeof(want[5]));
    engine_destroy(e);
}
#else
static void test_sample_device_matches_twin(void **state)
{
    (void)state;
    skip(); /* built without nvcc */
}
static void test_sched_device_sampling_matches_reference(void **state)
{
    (void)state;
    skip();
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_device_matches_twin),
        cmocka_unit_test(test_sched_device_sampling_matches_reference),
    };
    return cmocka_run_group_tests_name("gpu_sched", tests, NULL, NULL);
}
