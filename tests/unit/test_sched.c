/* test_sched.c - the scheduler (scheduler/sched.c) on the CPU engine.
 *
 * - Completion text: the incremental decoder equals tok_decode on random id streams (byte pieces,
 *   control pieces, leading spaces) for the stories260K and LLaMA tokenizers.
 * - Property test on random workloads (stories260K, context 512; and a tiny random LLaMA with
 *   context 2048 for prompts up to 1000 tokens): prompts with shared prefixes, outputs up to 200
 *   tokens, three jobs with different priorities, random cancellations of requests and jobs, a
 *   KV pool small enough to force preemption. Every request completes exactly once, greedy output
 *   equals running the request alone (a difference must be a near-tie of the solo run: top-2
 *   logit gap < 1e-4, reported), cancelled requests hold a prefix of it, the scheduler's
 *   structures check out after every step, and the pool is all free after the drain.
 *   JUDGED_TEST_SCALE=k multiplies the number of requests, JUDGED_TEST_SEED=n varies the
 *   workloads, JUDGED_TEST_FILTER=pattern runs only the matching tests (for soak runs).
 * - Prefix cache: two prompts sharing 300 tokens forward the 18 shared blocks once, submitted
 *   together or one after the other; the count is exact.
 * - Fairness: a 5-request high-priority job submitted behind a queued 2,000-request job finishes
 *   within a bound derived from the configuration (47 steps), where FIFO would take thousands.
 * - Preemption, cancellation, stop strings, logprobs, sampling after recompute, the context cap,
 *   and submit's checks. */
#include "common/util.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "scheduler/sched.h"
#include "scheduler/sched_impl.h"

/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORIES      "tests/fixtures/stories260K-hf"
#define STORIES_TEXT "tests/fixtures/stories260K-hf/expected_greedy_n200.txt"
#define LONG_CTX     "tests/fixtures/tiny/v32k-mha-untied-bf16-bin-sharded"
#define LLAMA_TOK    "tests/fixtures/tokenizer/llama/tokenizer.model"

/* --- helpers ------------------------------------------------------------------------------------
 */

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static int32_t rng_range(uint32_t *s, int32_t lo, int32_t hi) /* [lo, hi] */
{
    return lo + (int32_t)(rng_next(s) % (uint32_t)(hi - lo + 1));
}

static double test_scale(void)
{
    const char *v = getenv("JUDGED_TEST_SCALE");
    double k = v ? atof(v) : 1.0;
    return k > 0 ? k : 1.0;
}

static struct engine *open_engine(const char *dir, int32_t n_blocks, int32_t max_batch)
{
    struct engine_config cfg;
    engine_config_default(&cfg);
    cfg.backend = ENGINE_BACKEND_CPU;
    cfg.n_threads = 1; /* the models are tiny; one thread is immune to a busy machine */
    cfg.max_batch_tokens = max_batch;
    cfg.max_outputs = 64;
    cfg.n_kv_blocks = n_blocks;
    struct engine *e = NULL;
    char err[ERRSTR_LEN];
    if (engine_open(dir, NULL, &cfg, &e, err, sizeof(err)) != 0) {
        fail_msg("engine_open %s: %s", dir, err);
    }
    return e;
}

static struct tok *open_tok(const char *dir)
{
    struct tok *t = NULL;
    char err[ERRSTR_LEN];
    if (tok_load_dir(dir, &t, err, sizeof(err)) != 0) {
        fail_msg("tok_load_dir %s: %s", dir, err);
    }
    return t;
}

static struct sched *open_sched(struct engine *e, const struct tok *t, int32_t max_seqs,
                                int32_t budget, bool cache, int32_t max_requests)
{
    struct sched_config cfg;
    sched_config_default(&cfg);
    cfg.max_seqs = max_seqs;
    cfg.max_batched_tokens = budget;
    cfg.enable_prefix_cache = cache;
    cfg.max_requests = max_requests;
    struct sched *s = NULL;
    assert_int_equal(sched_create(&cfg, e, t, &s), 0);
    return s;
}

/* A completion copied out of the scheduler. */
struct result {
    uint64_t req_id;
    enum sched_finish finish;
    int32_t *tokens;
    int32_t n_tokens;
    char *text;
    size_t text_len;
    struct sched_logprob *lp; /* [n_tokens][1 + n_lp] */
    int32_t n_lp;
    int32_t n_cached, n_preemptions;
    int n_seen;
};

static void result_set(struct result *r, const struct sched_completion *c)
{
    free(r->tokens);
    free(r->text);
    free(r->lp);
    r->req_id = c->req_id;
    r->finish = c->finish;
    r->n_tokens = c->n_tokens;
    r->tokens = malloc(((size_t)c->n_tokens + 1) * sizeof(*r->tokens));
    memcpy(r->tokens, c->tokens, (size_t)c->n_tokens * sizeof(*r->tokens));
    r->text = malloc(c->text_len + 1);
    memcpy(r->text, c->text, c->text_len + 1);
    r->text_len = c->text_len;
    r->n_lp = c->n_logprobs;
    r->lp = NULL;
    if (c->n_logprobs > 0) {
        size_t n = (size_t)c->n_tokens * (size_t)(1 + c->n_logprobs);
        r->lp = malloc((n + 1) * sizeof(*r->lp));
        memcpy(r->lp, c->logprobs, n * sizeof(*r->lp));
    }
    r->n_cached = c->n_cached_tokens;
    r->n_preemptions = c->n_preemptions;
}

static void result_clear(struct result *r)
{
    free(r->tokens);
    free(r->text);
    free(r->lp);
    memset(r, 0, sizeof(*r));
}

/* Steps until idle, checking the structures after every step; polls into results indexed by the
 * request's `user` (an index), counting completions. Returns the number of steps. */
static int drain(struct sched *s, struct result *results)
{
    int steps = 0;
    struct sched_completion c;
    for (;;) {
        while (sched_poll(s, &c)) {
            struct result *r = &results[(intptr_t)c.user];
            r->n_seen++;
            result_set(r, &c);
        }
        int rc = sched_step(s);
        if (rc == -EAGAIN) {
            break;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(sched_check(s), 0);
        steps++;
    }
    while (sched_poll(s, &c)) {
        struct result *r = &results[(intptr_t)c.user];
        r->n_seen++;
        result_set(r, &c);
    }
    return steps;
}

/* Runs one request alone (its own scheduler without prefix cache, one sequence), asking for the
 * top-2 logprobs so a difference can be diagnosed. */
static void run_solo(struct sched *solo, const struct sched_request_params *p, struct result *out)
{
    struct sched_request_params q = *p;
    q.n_logprobs = q.n_logprobs > 2 ? q.n_logprobs : 2;
    q.user = (void *)(intptr_t)0;
    assert_int_equal(sched_submit(solo, &q, NULL), 0);
    result_clear(out);
    drain(solo, out);
    assert_int_equal(out->n_seen, 1);
}

/* Top-2 logit gap of the solo run at generated step k (the logprob difference is the logit
 * difference). Reruns the request ignoring EOS when the solo run ended before step k. */
static double solo_gap(struct sched *solo, const struct sched_request_params *p,
                       const struct result *r, int32_t k)
{
    if (k < r->n_tokens) {
        const struct sched_logprob *lp = r->lp + (size_t)k * (size_t)(1 + r->n_lp);
        return (double)(lp[1].logprob - lp[2].logprob);
    }
    struct sched_request_params q = *p;
    q.ignore_eos = true;
    q.n_stop = 0;
    q.max_new_tokens = k + 1;
    struct result longer = { 0 };
    run_solo(solo, &q, &longer);
    double gap = solo_gap(solo, &q, &longer, k);
    result_clear(&longer);
    return gap;
}

/* Compares a batched result with the solo one. A difference must be a genuine near-tie in the
 * solo run (top-2 gap < 1e-4): it is reported and counted, never silently passed. With
 * `prefix_only` (a cancelled request) the batched tokens need only be a prefix. */
static void compare_with_solo(struct sched *solo, const struct sched_request_params *p,
                              const struct result *got, const struct result *want, bool prefix_only,
                              int *n_near_ties)
{
    int32_t n = got->n_tokens < want->n_tokens ? got->n_tokens : want->n_tokens;
    int32_t diff = -1;
    for (int32_t k = 0; k < n && diff < 0; k++) {
        if (got->tokens[k] != want->tokens[k]) {
            diff = k;
        }
    }
    if (diff < 0 && !prefix_only &&
        (got->n_tokens != want->n_tokens || got->finish != want->finish)) {
        diff = n;
    }
    if (diff < 0 && prefix_only && got->n_tokens > want->n_tokens) {
        diff = n;
    }
    if (diff < 0) {
        if (!prefix_only) {
            assert_int_equal(got->text_len, want->text_len);
            assert_memory_equal(got->text, want->text, got->text_len);
        }
        return;
    }
    double gap = solo_gap(solo, p, want, diff);
    print_message("request %llu differs from its solo run at generated token %d: "
                  "solo top-2 logit gap %.3g (%s)\n",
                  (unsigned long long)got->req_id, (int)diff, gap,
                  gap < 1e-4 ? "a near-tie, accepted" : "NOT a near-tie");
    assert_true(gap < 1e-4);
    (*n_near_ties)++;
}

/* Natural stories260K token ids (the model's own greedy story), for prompts the trained model
 * predicts decisively. */
static int32_t *story_tokens(const struct tok *t, size_t *n)
{
    char *text = NULL, err[ERRSTR_LEN];
    size_t len = 0;
    assert_int_equal(file_read_all(STORIES_TEXT, &text, &len, err, sizeof(err)), 0);
    int32_t *ids = NULL;
    assert_int_equal(tok_encode(t, text, len, false, &ids, n), 0);
    free(text);
    assert_true(*n > 100);
    return ids;
}

/* --- completion text
 * ------------------------------------------------------------------------------ */

static void check_text_stream(const struct tok *t, uint32_t seed, int rounds)
{
    struct sched_text_vocab v;
    assert_int_equal(sched_text_vocab_init(&v, t), 0);
    int32_t n_vocab = tok_n_vocab(t);
    int32_t ids[96];
    char out[96 * 64 + 64];
    for (int round = 0; round < rounds; round++) {
        int32_t n = rng_range(&seed, 1, 96), n_prompt = rng_range(&seed, 1, n);
        for (int32_t i = 0; i < n; i++) {
            uint32_t kind = rng_next(&seed) % 8;
            if (kind == 0) {
                ids[i] = rng_range(&seed, 0, 2); /* unk, bos, eos */
            } else if (kind <= 3) {
                ids[i] = rng_range(&seed, 3, 258); /* byte pieces */
            } else {
                ids[i] = rng_range(&seed, 3, n_vocab - 1);
            }
        }
        if (round % 5 == 0) {
            ids[0] = 1; /* a prompt of BOS alone: the first generated piece loses its space */
            n_prompt = 1;
        }
        /* the whole stream equals tok_decode */
        struct sched_text_state st;
        sched_text_state_init(&st);
        size_t len = 0;
        for (int32_t i = 0; i < n; i++) {
            sched_text_feed(&v, &st, ids[i], out, &len);
        }
        sched_text_flush(&st, out, &len);
        char *want = NULL;
        size_t want_len = 0;
        assert_int_equal(tok_decode(t, ids, (size_t)n, &want, &want_len), 0);
        assert_int_equal(len, want_len);
        assert_memory_equal(out, want, len);
        free(want);
        /* the continuation after a prompt that ends on a whole piece: decode(all) - decode(prompt)
         */
        if (tok_type(t, ids[n_prompt - 1]) == TOK_PIECE_BYTE) {
            continue;
        }
        sched_text_state_init(&st);
        for (int32_t i = 0; i < n_prompt; i++) {
            sched_text_feed(&v, &st, ids[i], NULL, NULL);
        }
        len = 0;
        for (int32_t i = n_prompt; i < n; i++) {
            sched_text_feed(&v, &st, ids[i], out, &len);
            assert_true(len <=
                        SCHED_TEXT_CARRY_BYTES + (size_t)(i - n_prompt + 1) * v.max_piece_bytes);
        }
        sched_text_flush(&st, out, &len);
        char *all = NULL, *prefix = NULL;
        size_t all_len = 0, prefix_len = 0;
        assert_int_equal(tok_decode(t, ids, (size_t)n, &all, &all_len), 0);
        assert_int_equal(tok_decode(t, ids, (size_t)n_prompt, &prefix, &prefix_len), 0);
        assert_true(prefix_len <= all_len && memcmp(all, prefix, prefix_len) == 0);
        assert_int_equal(len, all_len - prefix_len);
        assert_memory_equal(out, all + prefix_len, len);
        free(all);
        free(prefix);
    }
}

static void test_sched_text_matches_tok_decode(void **state)
{
    (void)state;
    struct tok *t = open_tok(STORIES);
    check_text_stream(t, 7, 3000);
    tok_destroy(t);
    char err[ERRSTR_LEN];
    assert_int_equal(tok_load_file(LLAMA_TOK, &t, err, sizeof(err)), 0);
    struct sched_text_vocab v;
    assert_int_equal(sched_text_vocab_init(&v, t), 0);
    assert_true(v.strip_leading_space);
    check_text_stream(t, 11, 3000);
    tok_destroy(t);
}

/* --- API checks ----------------------------------------------------------------------------------
 */

static void test_sched_submit_validates(void **state)
{
    (void)state;
    struct engine *e = open_engine(STORIES, 32, 128);
    struct tok *t = open_tok(STORIES);
    struct sched *s = open_sched(e, t, 4, 128, true, 2);
    int32_t prompt[600];
    for (int i = 0; i < 600; i++) {
        prompt[i] = 3 + i % 500;
    }
    struct sched_request_params p;
    sched_request_params_default(&p);
    p.tokens = prompt;
    p.n_tokens = 0;
    assert_int_equal(sched_submit(s, &p, NULL), -EINVAL);
    p.n_tokens = 513; /* context 512 */
    assert_int_equal(sched_submit(s, &p, NULL), -EINVAL);
    p.n_tokens = 10;
    p.max_new_tokens = 0;
    assert_int_equal(sched_submit(s, &p, NULL), -EINVAL);
    p.max_new_tokens = 4;
    prompt[3] = 512; /* outside the vocabulary */
    assert_int_equal(sched_submit(s, &p, NULL), -EINVAL);
    prompt[3] = 3;
    p.priority = SCHED_PRIORITY_MAX + 1;
    assert_int_equal(sched_submit(s, &p, NULL), -EINVAL);
    p.priority = 0;
    p.n_logprobs = SCHED_MAX_LOGPROBS + 1;
    assert_int_equal(sched_submit(s, &p, NULL), -EINVAL);
    p.n_logprobs = 0;
    const char *stops[] = { "" };
    p.stop = stops;
    p.n_stop = 1;
    assert_int_equal(sched_submit(s, &p, NULL), -EINVAL);
    p.n_stop = 0;
    p.sampling.top_p = 0.0f;
    assert_int_equal(sched_submit(s, &p, NULL), -EINVAL);
    sampler_params_greedy(&p.sampling);
    /* the context (512) caps max_new_tokens at 13, and 500 + 13 - 1 positions fit the 32 blocks
     * exactly; -E2BIG needs a pool smaller than the context (below) */
    p.n_tokens = 500;
    p.max_new_tokens = 600;
    uint64_t id = 0;
    assert_int_equal(sched_submit(s, &p, &id), 0);
    assert_int_equal(sched_submit(s, &p, NULL), 0);
    assert_int_equal(sched_submit(s, &p, NULL), -EAGAIN); /* max_requests 2 */
    assert_int_equal(sched_cancel(s, id), 0);
    assert_int_equal(sched_cancel(s, id), -EALREADY);
    assert_int_equal(sched_cancel(s, id + 1), -ENOENT);
    assert_int_equal(sched_submit(s, &p, NULL), -EAGAIN); /* not yet polled */
    struct sched_completion c;
    assert_true(sched_poll(s, &c));
    assert_int_equal(c.finish, SCHED_FINISH_CANCELLED);
    assert_int_equal(c.n_tokens, 0);
    assert_int_equal(sched_submit(s, &p, NULL), 0);
    assert_int_equal(sched_cancel_job(s, 0), 2);
    sched_destroy(s);
    engine_destroy(e);

    e = open_engine(STORIES, 8, 128); /* 128 positions */
    s = open_sched(e, NULL, 4, 128, true, 8);
    p.n_tokens = 100;
    p.max_new_tokens = 29; /* positions 0..127 */
    assert_int_equal(sched_submit(s, &p, NULL), 0);
    p.max_new_tokens = 30;
    assert_int_equal(sched_submit(s, &p, NULL), -E2BIG);
    p.max_new_tokens = 4;
    p.stop = stops;
    stops[0] = "x";
    p.n_stop = 1; /* no tokenizer: no stop strings */
    assert_int_equal(sched_submit(s, &p, NULL), -EINVAL);
    sched_destroy(s);
    sched_destroy(NULL);
    engine_destroy(e);
    tok_destroy(t);
}

/* From BOS, greedy: llama2.c's story for stories260K, with the leading space dropped. */
static void test_sched_generates_reference_story(void **state)
{
    (void)state;
    struct engine *e = open_engine(STORIES, 64, 128);
    struct tok *t = open_tok(STORIES);
    struct sched *s = open_sched(e, t, 4, 128, true, 8);
    char *want = NULL, err[ERRSTR_LEN];
    size_t want_len = 0;
    assert_int_equal(file_read_all(STORIES_TEXT, &want, &want_len, err, sizeof(err)), 0);
    int32_t bos = 1;
    struct sched_request_params p;
    sched_request_params_default(&p);
    p.tokens = &bos;
    p.n_tokens = 1;
    p.max_new_tokens = 199;
    uint64_t id;
    assert_int_equal(sched_submit(s, &p, &id), 0);
    struct result r = { 0 };
    drain(s, &r);
    assert_int_equal(r.n_seen, 1);
    assert_true(r.req_id == id);
    assert_true(r.text_len > 100);
    /* the file is the story as llama2.c printed it, maybe with a final newline */
    size_t n = r.text_len < want_len ? r.text_len : want_len;
    assert_memory_equal(r.text, want, n);
    assert_true(r.text[0] == 'O');
    result_clear(&r);
    free(want);
    sched_destroy(s);
    engine_destroy(e);
    tok_destroy(t);
}

/* --- property test on random workloads ----------------------------------------------------------
 */

struct prop_config {
    const char *model;
    int32_t n_requests;
    int32_t max_prompt;
    int32_t max_new;
    int32_t pool_blocks;
    int32_t max_seqs;
    int32_t budget;
    uint32_t seed;
    bool natural; /* prompts from the stories text (trained model) rather than random ids */
};

struct prop_request {
    struct sched_request_params p;
    int32_t *prompt;
    uint64_t req_id;
    bool submitted;
    bool cancel_ok; /* sched_cancel returned 0, or its job was cancelled while it was in flight */
    uint64_t job;
};

static const char *const prop_stops[] = { "\n", ".", " the", "ly" };

static void run_property(const struct prop_config *pc)
{
    int32_t n_req = (int32_t)(pc->n_requests * test_scale());
    struct engine *e = open_engine(pc->model, pc->pool_blocks, 512);
    const struct model_config *mc = engine_model_config(e);
    int32_t ctx = engine_get_config(e)->max_ctx;
    struct engine *e_solo = open_engine(pc->model, (ctx + 15) / 16, 512);
    struct tok *t = open_tok(pc->model);
    struct sched *s = open_sched(e, t, pc->max_seqs, pc->budget, true, n_req + 1);
    struct sched *solo = open_sched(e_solo, t, 1, 512, false, 4);
    const char *seed_env = getenv("JUDGED_TEST_SEED");
    uint32_t rng = pc->seed + (seed_env ? (uint32_t)strtoul(seed_env, NULL, 10) * 7919u : 0);
    size_t n_story = 0;
    int32_t *story = pc->natural ? story_tokens(t, &n_story) : NULL;

    /* shared prefixes: a few base sequences that many prompts start with */
    enum { N_BASE = 4 };
    int32_t *base[N_BASE];
    for (int b = 0; b < N_BASE; b++) {
        base[b] = malloc((size_t)pc->max_prompt * sizeof(int32_t));
        for (int32_t i = 0; i < pc->max_prompt; i++) {
            base[b][i] = pc->natural ? story[(size_t)(b * 37 + i) % n_story]
                                     : rng_range(&rng, 3, mc->n_vocab - 1);
        }
        base[b][0] = 1;
    }
    struct prop_request *reqs = calloc((size_t)n_req, sizeof(*reqs));
    struct result *results = calloc((size_t)n_req, sizeof(*results));
    for (int32_t i = 0; i < n_req; i++) {
        struct prop_request *q = &reqs[i];
        int32_t len = rng_range(&rng, 1, pc->max_prompt);
        if (rng_next(&rng) % 4 == 0) {
            len = rng_range(&rng, 1, 24); /* many short ones */
        }
        q->prompt = malloc((size_t)len * sizeof(int32_t));
        int32_t shared = rng_next(&rng) % 2 ? rng_range(&rng, 0, len) : 0;
        int b = (int)(rng_next(&rng) % N_BASE);
        size_t off = (size_t)rng_range(&rng, 0, 1000);
        for (int32_t k = 0; k < len; k++) {
            q->prompt[k] = k < shared ? base[b][k]
                           : story    ? story[(off + (size_t)k) % n_story]
                                      : rng_range(&rng, 3, mc->n_vocab - 1);
        }
        q->prompt[0] = 1;
        sched_request_params_default(&q->p);
        q->p.tokens = q->prompt;
        q->p.n_tokens = (size_t)len;
        int32_t room = ctx - len + 1;
        int32_t max_new = rng_range(&rng, 1, pc->max_new);
        q->p.max_new_tokens = max_new < room ? max_new : room;
        q->p.ignore_eos = rng_next(&rng) % 2;
        if (rng_next(&rng) % 5 == 0) {
            q->p.stop = prop_stops + rng_next(&rng) % 3;
            q->p.n_stop = 1 + (int)(rng_next(&rng) % 2);
        }
        q->job = rng_next(&rng) % 3;
        q->p.job_id = q->job;
        q->p.priority = (int)q->job * 2;
        q->p.user = (void *)(intptr_t)i;
    }

    /* submit in waves between steps, cancel now and then */
    int32_t next = 0, steps = 0, n_cancel = 0, n_job_cancel = 0;
    bool job_cancelled = false;
    struct sched_completion c;
    while (next < n_req || !sched_idle(s)) {
        int32_t wave = next < n_req ? rng_range(&rng, 0, 3) : 0;
        if (steps == 0) {
            wave = n_req / 4; /* a backlog from the start */
        }
        for (int32_t k = 0; k < wave && next < n_req; k++, next++) {
            assert_int_equal(sched_submit(s, &reqs[next].p, &reqs[next].req_id), 0);
            reqs[next].submitted = true;
        }
        if (next > 0 && n_cancel < n_req / 6 && rng_next(&rng) % 24 == 0) {
            struct prop_request *q = &reqs[rng_next(&rng) % (uint32_t)next];
            int rc = sched_cancel(s, q->req_id);
            assert_true(rc == 0 || rc == -EALREADY);
            if (rc == 0) {
                q->cancel_ok = true;
                n_cancel++;
            }
        }
        if (!job_cancelled && next >= n_req / 2) {
            /* once, half-way through the submissions: later ones of that job form a new one */
            uint64_t job = 1;
            job_cancelled = true;
            for (int32_t i = 0; i < next; i++) {
                if (reqs[i].job == job && results[i].n_seen == 0) {
                    reqs[i].cancel_ok = true; /* unless it finished already (checked below) */
                }
            }
            n_job_cancel += sched_cancel_job(s, job);
        }
        int rc = sched_step(s);
        assert_true(rc == 0 || (rc == -EAGAIN && sched_idle(s)));
        assert_int_equal(sched_check(s), 0);
        steps++;
        while (sched_poll(s, &c)) {
            struct result *r = &results[(intptr_t)c.user];
            r->n_seen++;
            result_set(r, &c);
            assert_true(c.req_id == reqs[(intptr_t)c.user].req_id);
            assert_true(c.t_submit_us <= c.t_done_us);
        }
    }
    struct sched_stats st;
    sched_stats(s, &st);
    assert_int_equal(st.n_running, 0);
    assert_int_equal(st.n_waiting, 0);
    assert_int_equal(st.n_done, 0);
    assert_int_equal(st.n_jobs, 0);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.kv_blocks_free, pc->pool_blocks);
    assert_true(st.n_submitted == (uint64_t)n_req && st.n_finished == (uint64_t)n_req);
    assert_true(st.n_preemptions > 0);

    /* every request exactly once; outputs equal the solo runs */
    int n_near_ties = 0, n_cancelled = 0;
    uint64_t preempt_sum = 0;
    for (int32_t i = 0; i < n_req; i++) {
        struct result *r = &results[i];
        assert_int_equal(r->n_seen, 1);
        preempt_sum += (uint64_t)r->n_preemptions;
        struct result want = { 0 };
        run_solo(solo, &reqs[i].p, &want);
        if (r->finish == SCHED_FINISH_CANCELLED) {
            assert_true(reqs[i].cancel_ok);
            n_cancelled++;
        }
        compare_with_solo(solo, &reqs[i].p, r, &want, r->finish == SCHED_FINISH_CANCELLED,
                          &n_near_ties);
        result_clear(&want);
    }
    assert_true(preempt_sum == st.n_preemptions);
    print_message("%s: %d requests, %d steps, %llu preemptions, %d cancelled (%d by job), "
                  "prefix hit rate %.2f, %.1f tokens/step, %d near-ties\n",
                  pc->model, (int)n_req, (int)steps, (unsigned long long)st.n_preemptions,
                  n_cancelled, n_job_cancel, st.prefix_hit_rate, st.mean_tokens_per_step,
                  n_near_ties);
    for (int32_t i = 0; i < n_req; i++) {
        free(reqs[i].prompt);
        result_clear(&results[i]);
    }
    for (int b = 0; b < N_BASE; b++) {
        free(base[b]);
    }
    free(reqs);
    free(results);
    free(story);
    sched_destroy(s);
    sched_destroy(solo);
    engine_destroy(e);
    engine_destroy(e_solo);
    tok_destroy(t);
}

static void test_sched_property_stories(void **state)
{
    (void)state;
    /* context 512; the largest request needs 32 blocks, the pool has 40 */
    struct prop_config pc = {
        .model = STORIES,
        .n_requests = 96,
        .max_prompt = 400,
        .max_new = 200,
        .pool_blocks = 40,
        .max_seqs = 6,
        .budget = 96,
        .seed = 20240607,
        .natural = true,
    };
    run_property(&pc);
}

static void test_sched_property_long_prompts(void **state)
{
    (void)state;
    /* context 2048, prompts up to 1000 tokens: the largest request needs 75 blocks */
    struct prop_config pc = {
        .model = LONG_CTX,
        .n_requests = 40,
        .max_prompt = 1000,
        .max_new = 200,
        .pool_blocks = 90,
        .max_seqs = 4,
        .budget = 256,
        .seed = 777,
        .natural = false,
    };
    run_property(&pc);
}

/* --- prefix cache -------------------------------------------------------------------------------
 */

static void test_sched_prefix_cache_computes_shared_blocks_once(void **state)
{
    (void)state;
    struct engine *e = open_engine(STORIES, 128, 512);
    struct engine *e_solo = open_engine(STORIES, 64, 512);
    struct tok *t = open_tok(STORIES);
    size_t n_story = 0;
    int32_t *story = story_tokens(t, &n_story);
    /* A = 300 shared + 40 own, B = 300 shared + 70 own, C = 300 shared + 10 own */
    int32_t a[340], b[370], c3[310];
    for (int i = 0; i < 370; i++) {
        int32_t shared = story[(size_t)i % n_story];
        if (i < 340) {
            a[i] = i < 300 ? shared : story[(size_t)(i + 50) % n_story];
        }
        b[i] = i < 300 ? shared : story[(size_t)(i + 90) % n_story];
        if (i < 310) {
            c3[i] = i < 300 ? shared : story[(size_t)(i + 7) % n_story];
        }
    }
    a[0] = b[0] = c3[0] = 1;
    struct sched_request_params pa, pb, pc;
    sched_request_params_default(&pa);
    pa.tokens = a;
    pa.n_tokens = 340;
    pa.max_new_tokens = 8;
    pa.ignore_eos = true;
    pb = pa;
    pb.tokens = b;
    pb.n_tokens = 370;
    pb.user = (void *)(intptr_t)1;
    pc = pa;
    pc.tokens = c3;
    pc.n_tokens = 310;
    pc.user = (void *)(intptr_t)2;
    const uint64_t shared_tokens = 288; /* 18 full blocks of 16 */

    struct sched *solo = open_sched(e_solo, t, 1, 512, false, 4);
    struct result want[3] = { { 0 } };
    run_solo(solo, &pa, &want[0]);
    run_solo(solo, &pb, &want[1]);
    run_solo(solo, &pc, &want[2]);
    int near = 0;

    /* submitted together: the second waits one step for the shared blocks, then hits them */
    struct sched *s = open_sched(e, t, 8, 512, true, 8);
    struct result got[3] = { { 0 } };
    assert_int_equal(sched_submit(s, &pa, NULL), 0);
    assert_int_equal(sched_submit(s, &pb, NULL), 0);
    drain(s, got);
    struct sched_stats st;
    sched_stats(s, &st);
    assert_true(st.n_prompt_tokens_forwarded == 340 + 370 - shared_tokens);
    assert_true(st.n_prompt_tokens_cached == shared_tokens);
    assert_int_equal(got[0].n_cached + got[1].n_cached, (int)shared_tokens);
    compare_with_solo(solo, &pa, &got[0], &want[0], false, &near);
    compare_with_solo(solo, &pb, &got[1], &want[1], false, &near);
    /* after both finished, their blocks stay cached: C hits them too */
    assert_int_equal(sched_submit(s, &pc, NULL), 0);
    drain(s, got);
    sched_stats(s, &st);
    assert_int_equal(got[2].n_cached, (int)shared_tokens);
    assert_true(st.n_prompt_tokens_forwarded == 340 + 370 + 310 - 2 * shared_tokens);
    compare_with_solo(solo, &pc, &got[2], &want[2], false, &near);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_true(st.kv_blocks_cached > 0);
    assert_true(st.prefix_hit_rate > 0.5);
    sched_destroy(s);

    /* without the cache every prompt token is forwarded */
    s = open_sched(e, t, 8, 512, false, 8);
    assert_int_equal(sched_submit(s, &pa, NULL), 0);
    assert_int_equal(sched_submit(s, &pb, NULL), 0);
    drain(s, got);
    sched_stats(s, &st);
    assert_true(st.n_prompt_tokens_forwarded == 340 + 370);
    assert_true(st.n_prompt_tokens_cached == 0);
    assert_int_equal(st.kv_blocks_cached, 0);
    compare_with_solo(solo, &pa, &got[0], &want[0], false, &near);
    compare_with_solo(solo, &pb, &got[1], &want[1], false, &near);
    sched_destroy(s);
    assert_int_equal(near, 0);
    for (int i = 0; i < 3; i++) {
        result_clear(&got[i]);
        result_clear(&want[i]);
    }
    free(story);
    sched_destroy(solo);
    engine_destroy(e);
    engine_destroy(e_solo);
    tok_destroy(t);
}

/* --- fairness ------------------------------------------------------------------------------------
 */

/* 2,000 low-priority requests are queued and running; 20 steps later a 5-request job at priority
 * 10 arrives. Bound: every running low request ends within L_low = ceil(P / (B - S)) + M_low
 * steps (P = longest prompt, B = budget, S = max_seqs: a prompt gets at least B - S tokens of a
 * step once admitted), and each slot it frees goes to the urgent job (smallest pass); admitting
 * all five prompts needs at most ceil(5 P / (B - S)) steps of budget, and each then decodes
 * M_high tokens: bound = L_low + ceil(5 P / (B - S)) + M_high + 2 = 31 + 4 + 10 + 2 = 47 steps.
 * In FIFO order it would wait for ~2,000 / 8 * 30 = 7,500 steps. */
static void test_sched_fairness_urgent_job_bound(void **state)
{
    (void)state;
    enum { N_LOW = 2000, N_HIGH = 5, B = 64, S = 8, P = 41, M_LOW = 30, M_HIGH = 10 };
    struct engine *e = open_engine(STORIES, 128, 512);
    struct sched *s = open_sched(e, NULL, S, B, true, N_LOW + N_HIGH);
    uint32_t rng = 99;
    int32_t(*prompts)[P] = malloc(sizeof(int32_t[P]) * (N_LOW + N_HIGH));
    struct sched_request_params p;
    sched_request_params_default(&p);
    p.ignore_eos = true;
    for (int i = 0; i < N_LOW + N_HIGH; i++) {
        prompts[i][0] = 1;
        for (int k = 1; k < P; k++) {
            prompts[i][k] = rng_range(&rng, 3, 511);
        }
    }
    p.job_id = 1;
    p.priority = 0;
    p.max_new_tokens = M_LOW;
    for (int i = 0; i < N_LOW; i++) {
        p.tokens = prompts[i];
        p.n_tokens = (size_t)rng_range(&rng, 8, P);
        p.user = (void *)(intptr_t)i;
        assert_int_equal(sched_submit(s, &p, NULL), 0);
    }
    struct sched_completion c;
    int n_low_done = 0, n_high_done = 0;
    for (int k = 0; k < 20; k++) {
        assert_int_equal(sched_step(s), 0);
        while (sched_poll(s, &c)) {
            n_low_done++;
        }
    }
    p.job_id = 2;
    p.priority = 10;
    p.max_new_tokens = M_HIGH;
    for (int i = N_LOW; i < N_LOW + N_HIGH; i++) {
        p.tokens = prompts[i];
        p.n_tokens = P;
        p.user = (void *)(intptr_t)i;
        assert_int_equal(sched_submit(s, &p, NULL), 0);
    }
    const int bound =
        (P + (B - S) - 1) / (B - S) + M_LOW + (N_HIGH * P + (B - S) - 1) / (B - S) + M_HIGH + 2;
    assert_int_equal(bound, 47);
    int steps = 0;
    while (n_high_done < N_HIGH) {
        assert_int_equal(sched_step(s), 0);
        assert_int_equal(sched_check(s), 0);
        steps++;
        while (sched_poll(s, &c)) {
            if (c.job_id == 2) {
                assert_int_equal(c.finish, SCHED_FINISH_LENGTH);
                assert_int_equal(c.n_tokens, M_HIGH);
                n_high_done++;
            } else {
                n_low_done++;
            }
        }
        assert_true(steps <= bound);
    }
    print_message("urgent job done %d steps after submission (bound %d); %d of %d low done\n",
                  steps, bound, n_low_done, N_LOW);
    /* the big job was not starved meanwhile, and the rest cancels cleanly */
    assert_true(n_low_done > 0);
    struct sched_stats st;
    sched_stats(s, &st);
    assert_true(st.n_preemptions == 0);
    int n_cancelled = sched_cancel_job(s, 1);
    assert_int_equal(n_cancelled + n_low_done + (int)st.n_done, N_LOW);
    int seen = 0;
    while (sched_poll(s, &c)) {
        seen++;
    }
    assert_int_equal(seen + n_low_done, N_LOW);
    sched_stats(s, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_true(sched_idle(s));
    assert_int_equal(sched_step(s), -EAGAIN);
    free(prompts);
    sched_destroy(s);
    engine_destroy(e);
}

/* Two busy jobs of weights 1 and 4 (priorities 0 and 3) with identical requests: while both
 * have work queued, the heavier one gets about four times the tokens. */
static void test_sched_fairness_weighted_share(void **state)
{
    (void)state;
    struct engine *e = open_engine(STORIES, 128, 512);
    struct sched *s = open_sched(e, NULL, 4, 64, false, 400);
    int32_t prompt[16];
    for (int k = 0; k < 16; k++) {
        prompt[k] = 3 + k * 7;
    }
    struct sched_request_params p;
    sched_request_params_default(&p);
    p.tokens = prompt;
    p.n_tokens = 16;
    p.max_new_tokens = 8;
    p.ignore_eos = true;
    for (int i = 0; i < 400; i++) {
        p.job_id = (uint64_t)(i % 2);
        p.priority = i % 2 ? 3 : 0;
        assert_int_equal(sched_submit(s, &p, NULL), 0);
    }
    int done[2] = { 0, 0 };
    struct sched_completion c;
    for (int k = 0; k < 200; k++) {
        assert_int_equal(sched_step(s), 0);
        while (sched_poll(s, &c)) {
            done[c.job_id]++;
        }
    }
    print_message("weights 1:4 -> completions %d:%d\n", done[0], done[1]);
    assert_true(done[1] < 200); /* both still busy */
    double ratio = (double)done[1] / (double)(done[0] ? done[0] : 1);
    assert_true(ratio > 3.0 && ratio < 5.5);
    sched_destroy(s);
    engine_destroy(e);
}

/* --- preemption, cancellation, stop strings, logprobs, sampling ----------------------------------
 */

static void test_sched_preemption_recomputes_same_output(void **state)
{
    (void)state;
    struct engine *e = open_engine(STORIES, 32, 512); /* 512 positions in all */
    struct engine *e_solo = open_engine(STORIES, 64, 512);
    struct tok *t = open_tok(STORIES);
    size_t n_story = 0;
    int32_t *story = story_tokens(t, &n_story);
    struct sched *s = open_sched(e, t, 8, 256, true, 8);
    struct sched *solo = open_sched(e_solo, t, 1, 512, false, 4);
    /* four requests of 16 blocks each, and one that needs the whole pool */
    struct sched_request_params p[5];
    int32_t prompts[5][300];
    for (int i = 0; i < 5; i++) {
        for (int k = 0; k < 300; k++) {
            prompts[i][k] = story[(size_t)(i * 41 + k) % n_story];
        }
        prompts[i][0] = 1;
        sched_request_params_default(&p[i]);
        p[i].tokens = prompts[i];
        p[i].n_tokens = i < 4 ? 100 : 300;
        p[i].max_new_tokens = i < 4 ? 150 : 212; /* 249 positions = 16 blocks; 511 = 32 */
        p[i].ignore_eos = true;
        p[i].job_id = (uint64_t)i;
        p[i].user = (void *)(intptr_t)i;
        if (i == 2) {
            p[i].sampling.temperature = 1.0f; /* the draw depends on (seed, step) only */
            p[i].sampling.top_p = 0.9f;
            p[i].sampling.seed = 1234;
        }
        assert_int_equal(sched_submit(s, &p[i], NULL), 0);
    }
    struct result got[5] = { { 0 } };
    drain(s, got);
    struct sched_stats st;
    sched_stats(s, &st);
    print_message("preemptions: %llu\n", (unsigned long long)st.n_preemptions);
    assert_true(st.n_preemptions > 0);
    assert_int_equal(st.kv_blocks_used, 0);
    int near = 0;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(got[i].n_seen, 1);
        assert_int_equal(got[i].finish, SCHED_FINISH_LENGTH);
        struct result want = { 0 };
        run_solo(solo, &p[i], &want);
        compare_with_solo(solo, &p[i], &got[i], &want, false, &near);
        result_clear(&want);
        result_clear(&got[i]);
    }
    assert_int_equal(near, 0);
    free(story);
    sched_destroy(s);
    sched_destroy(solo);
    engine_destroy(e);
    engine_destroy(e_solo);
    tok_destroy(t);
}

static void test_sched_cancel_waiting_running_and_job(void **state)
{
    (void)state;
    struct engine *e = open_engine(STORIES, 64, 512);
    struct sched *s = open_sched(e, NULL, 2, 64, true, 16);
    int32_t prompt[20];
    for (int k = 0; k < 20; k++) {
        prompt[k] = 3 + k;
    }
    struct sched_request_params p;
    sched_request_params_default(&p);
    p.tokens = prompt;
    p.n_tokens = 20;
    p.max_new_tokens = 50;
    p.ignore_eos = true;
    uint64_t ids[6];
    for (int i = 0; i < 6; i++) {
        p.job_id = i < 3 ? 7 : 8;
        p.user = (void *)(intptr_t)i;
        assert_int_equal(sched_submit(s, &p, &ids[i]), 0);
    }
    for (int k = 0; k < 3; k++) {
        assert_int_equal(sched_step(s), 0);
    }
    struct sched_stats st;
    sched_stats(s, &st);
    assert_int_equal(st.n_running, 2);
    assert_int_equal(st.n_waiting, 4);
    /* the first request of each job runs (each admission is charged to its job's pass, so
     * the two jobs alternate); the last of job 8 waits */
    struct sched_completion c;
    assert_int_equal(sched_cancel(s, ids[0]), 0);
    assert_true(sched_poll(s, &c));
    assert_int_equal(c.finish, SCHED_FINISH_CANCELLED);
    assert_true(c.req_id == ids[0]);
    assert_true(c.n_tokens > 0 && c.n_tokens < 50); /* it was running: partial output */
    assert_int_equal(sched_check(s), 0);
    assert_int_equal(sched_cancel(s, ids[5]), 0);
    assert_int_equal(sched_cancel(s, ids[5]), -EALREADY);
    assert_int_equal(sched_cancel(s, 12345), -ENOENT);
    assert_true(sched_poll(s, &c));
    assert_true(c.req_id == ids[5]);
    assert_int_equal(c.n_tokens, 0); /* it was waiting */
    assert_int_equal(sched_cancel(s, ids[5]), -EALREADY);
    int n_left = 0;
    sched_stats(s, &st);
    n_left = st.n_running + st.n_waiting;
    int n = sched_cancel_job(s, 8) + sched_cancel_job(s, 7);
    assert_int_equal(n, n_left);
    assert_int_equal(sched_cancel_job(s, 99), 0);
    sched_stats(s, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.n_jobs, 0);
    assert_true(sched_idle(s));
    assert_int_equal(sched_check(s), 0);
    int polled = 0;
    while (sched_poll(s, &c)) {
        assert_int_equal(c.finish, SCHED_FINISH_CANCELLED);
        polled++;
    }
    assert_int_equal(polled, n);
    assert_int_equal(sched_step(s), -EAGAIN);
    sched_destroy(s);
    engine_destroy(e);
}

static void test_sched_stop_strings_cut_text(void **state)
{
    (void)state;
    struct engine *e = open_engine(STORIES, 64, 512);
    struct tok *t = open_tok(STORIES);
    struct sched *s = open_sched(e, t, 4, 128, true, 8);
    int32_t bos = 1;
    /* "Once upon a time, there was a little girl named Lily. She loved ..." */
    const char *const cases[][2] = {
        { "Lily", "Once upon a time, there was a little girl named " },
        { "e, t", "Once upon a tim" }, /* spans three pieces */
        { "\n", NULL },                /* the first line */
    };
    char *story = NULL, err[ERRSTR_LEN];
    size_t story_len = 0;
    assert_int_equal(file_read_all(STORIES_TEXT, &story, &story_len, err, sizeof(err)), 0);
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        const char *stops[2] = { cases[i][0], "never appears" };
        struct sched_request_params p;
        sched_request_params_default(&p);
        p.tokens = &bos;
        p.n_tokens = 1;
        p.max_new_tokens = 199;
        p.stop = stops;
        p.n_stop = 2;
        assert_int_equal(sched_submit(s, &p, NULL), 0);
        struct result r = { 0 };
        drain(s, &r);
        assert_int_equal(r.finish, SCHED_FINISH_STOP);
        size_t want_len = cases[i][1] ? strlen(cases[i][1]) : (size_t)(strchr(story, '\n') - story);
        assert_int_equal(r.text_len, want_len);
        assert_memory_equal(r.text, story, want_len);
        assert_int_equal(r.text[r.text_len], '\0');
        /* the tokens end with the one that completed the stop string */
        char *all = NULL, *before = NULL;
        size_t all_len = 0, before_len = 0;
        int32_t ids[256];
        ids[0] = 1;
        memcpy(ids + 1, r.tokens, (size_t)r.n_tokens * sizeof(int32_t));
        assert_int_equal(tok_decode(t, ids, (size_t)r.n_tokens + 1, &all, &all_len), 0);
        assert_int_equal(tok_decode(t, ids, (size_t)r.n_tokens, &before, &before_len), 0);
        assert_non_null(strstr(all, cases[i][0]));
        assert_null(strstr(before, cases[i][0]));
        result_clear(&r);
        free(all);
        free(before);
    }
    free(story);
    sched_destroy(s);
    engine_destroy(e);
    tok_destroy(t);
}

static void test_sched_logprobs(void **state)
{
    (void)state;
    struct engine *e = open_engine(STORIES, 64, 512);
    struct tok *t = open_tok(STORIES);
    struct sched *s = open_sched(e, t, 4, 128, true, 8);
    int32_t bos = 1;
    struct sched_request_params p;
    sched_request_params_default(&p);
    p.tokens = &bos;
    p.n_tokens = 1;
    p.max_new_tokens = 20;
    p.n_logprobs = 5;
    assert_int_equal(sched_submit(s, &p, NULL), 0);
    struct result r = { 0 };
    drain(s, &r);
    assert_int_equal(r.n_tokens, 20);
    assert_int_equal(r.n_lp, 5);
    for (int32_t k = 0; k < r.n_tokens; k++) {
        const struct sched_logprob *lp = r.lp + (size_t)k * 6;
        assert_int_equal(lp[0].token, r.tokens[k]);
        assert_int_equal(lp[1].token, r.tokens[k]); /* greedy chose the most likely */
        assert_true(lp[0].logprob == lp[1].logprob);
        double mass = 0;
        for (int i = 1; i <= 5; i++) {
            assert_true(lp[i].logprob <= 0.0f);
            assert_true(i == 1 || lp[i].logprob <= lp[i - 1].logprob);
            mass += exp((double)lp[i].logprob);
        }
        assert_true(mass <= 1.0 + 1e-5 && mass > 0.2);
    }
    result_clear(&r);
    sched_destroy(s);
    engine_destroy(e);
    tok_destroy(t);
}

static void test_sched_stops_at_context(void **state)
{
    (void)state;
    struct engine *e = open_engine(STORIES, 64, 512);
    struct sched *s = open_sched(e, NULL, 4, 512, true, 8);
    int32_t prompt[512];
    for (int k = 0; k < 512; k++) {
        prompt[k] = 3 + k % 400;
    }
    struct sched_request_params p;
    sched_request_params_default(&p);
    p.tokens = prompt;
    p.n_tokens = 500;
    p.max_new_tokens = 100;
    p.ignore_eos = true;
    assert_int_equal(sched_submit(s, &p, NULL), 0);
    p.n_tokens = 512; /* a full context still yields one token */
    p.user = (void *)(intptr_t)1;
    assert_int_equal(sched_submit(s, &p, NULL), 0);
    struct result r[2] = { { 0 } };
    drain(s, r);
    assert_int_equal(r[0].finish, SCHED_FINISH_LENGTH);
    assert_int_equal(r[0].n_tokens + 500, 513); /* the last token is sampled, not fed */
    assert_int_equal(r[0].text_len, 0);         /* no tokenizer */
    assert_int_equal(r[1].finish, SCHED_FINISH_LENGTH);
    assert_int_equal(r[1].n_tokens, 1);
    result_clear(&r[0]);
    result_clear(&r[1]);
    sched_destroy(s);
    engine_destroy(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sched_text_matches_tok_decode),
        cmocka_unit_test(test_sched_submit_validates),
        cmocka_unit_test(test_sched_generates_reference_story),
        cmocka_unit_test(test_sched_prefix_cache_computes_shared_blocks_once),
        cmocka_unit_test(test_sched_preemption_recomputes_same_output),
        cmocka_unit_test(test_sched_cancel_waiting_running_and_job),
        cmocka_unit_test(test_sched_stop_strings_cut_text),
        cmocka_unit_test(test_sched_logprobs),
        cmocka_unit_test(test_sched_stops_at_context),
        cmocka_unit_test(test_sched_fairness_urgent_job_bound),
        cmocka_unit_test(test_sched_fairness_weighted_share),
        cmocka_unit_test(test_sched_property_stories),
        cmocka_unit_test(test_sched_property_long_prompts),
    };
    const char *filter = getenv("JUDGED_TEST_FILTER");
    if (filter) {
        cmocka_set_test_filter(filter);
    }
    return cmocka_run_group_tests_name("sched", tests, NULL, NULL);
}
