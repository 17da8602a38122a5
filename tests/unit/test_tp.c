/* test_tp.c - tensor parallelism on the CPU communicator.
 *
 * - The CPU communicator: all-reduce gives every rank the rank-order sum (bit for bit, against a
 *   sequential sum), broadcast copies the root's bytes, mismatched lengths fail on every rank.
 * - The shard plan and the tensor slicer against hand-computed splits and a full conversion.
 * - The Megatron split end to end: stories260K (8 heads / 4 KV heads, llama2.c and Hugging Face
 *   files) and the tiny random LLaMAs (MHA, GQA, MQA with the KV head repeated over ranks; f32,
 *   f16, bf16; an MLP width that does not divide by 4) run with 1, 2 and 4 ranks through prefill
 *   chunks, a mixed batch and decode steps, and every logit is compared with the single-rank CPU
 *   engine fed the same batches. Tolerance: |tp - engine| <= 1e-4 (1 + |engine|): the split only
 *   reorders fp32 sums (partial products summed across ranks); a wrong head, slice or missing
 *   all-reduce moves logits by 1e-2 or more (see tests/fixtures/tiny/README.md, sensitivity). */
#include "common/util.h"
#include "engine/comm.h"
#include "engine/engine.h"
#include "engine/tp.h"
#include "kernels/cpu/convert.h"

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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORIES_BIN "tests/fixtures/stories260K/stories260K.bin"
#define STORIES_HF  "tests/fixtures/stories260K-hf"
#define TINY_DIR    "tests/fixtures/tiny"

/* ---- the CPU communicator ---- */

enum { COMM_TEST_MAX = 4 };

struct comm_test {
    struct comm *comm;
    int world;
    size_t n;       /* elements per all-reduce */
    float *got;     /* [n] this rank's buffer after the all-reduce */
    int rc_reduce;  /* all-reduce return */
    int rc_bcast;   /* broadcast return */
    char bcast[16]; /* what the broadcast left */
    int rc_mismatch;
    int rc_after; /* an all-reduce after the mismatch */
};

/* Values whose fp32 sum depends on the order of addition. */
static float comm_test_value(int rank, size_t i)
{
    static const float mags[] = { 1e8f, 1.0f, -1e8f, 3.5f };
    return mags[(rank + (int)i) % 4] * (float)(1 + i % 7) + 0.1f * (float)rank;
}

static void *comm_test_rank(void *arg)
{
    struct comm_test *t = arg;
    int rank = comm_rank(t->comm);
    for (size_t i = 0; i < t->n; i++) {
        t->got[i] = comm_test_value(rank, i);
    }
    t->rc_reduce = comm_allreduce_sum_f32(t->comm, t->got, t->n);
    if (rank == 1 % t->world) {
        snprintf(t->bcast, sizeof(t->bcast), "from rank %d", rank);
    } else {
        snprintf(t->bcast, sizeof(t->bcast), "untouched %d", rank);
    }
    t->rc_bcast = comm_broadcast(t->comm, t->bcast, sizeof(t->bcast), 1 % t->world);
    float one[3] = { 1, 2, 3 };
    /* rank 0 says 3 elements, the others 2 */
    t->rc_mismatch = comm_allreduce_sum_f32(t->comm, one, rank == 0 ? 3 : 2);
    t->rc_after = comm_allreduce_sum_f32(t->comm, one, 1);
    comm_barrier(t->comm);
    return NULL;
}

static void run_comm_test(int world, size_t n)
{
    struct comm_cpu_group *g;
    assert_int_equal(comm_cpu_group_create(world, &g), 0);
    struct comm_test t[COMM_TEST_MAX];
    pthread_t th[COMM_TEST_MAX];
    for (int r = 0; r < world; r++) {
        t[r] = (struct comm_test){ .world = world, .n = n };
        t[r].got = malloc(n * sizeof(float) + 1);
        assert_int_equal(comm_cpu_create(g, r, &t[r].comm), 0);
        assert_string_equal(comm_name(t[r].comm), "cpu");
        assert_int_equal(comm_size(t[r].comm), world);
    }
    for (int r = 0; r < world; r++) {
        assert_int_equal(pthread_create(&th[r], NULL, comm_test_rank, &t[r]), 0);
    }
    for (int r = 0; r < world; r++) {
        pthread_join(th[r], NULL);
    }
    for (int r = 0; r < world; r++) {
        assert_int_equal(t[r].rc_reduce, 0);
        for (size_t i = 0; i < n; i++) {
            float want = comm_test_value(0, i);
            for (int q = 1; q < world; q++) {
                want += comm_test_value(q, i);
            }
            if (memcmp(&want, &t[r].got[i], sizeof(float)) != 0) {
                fail_msg("world %d rank %d element %zu: %.9g, want %.9g (rank order)", world, r, i,
                         t[r].got[i], want);
            }
        }
        assert_int_equal(t[r].rc_bcast, 0);
        char want_b[16];
        snprintf(want_b, sizeof(want_b), "from rank %d", 1 % world);
        assert_string_equal(t[r].bcast, want_b);
        assert_int_equal(t[r].rc_mismatch, world > 1 ? -EINVAL : 0);
        assert_int_equal(t[r].rc_after, 0);
        comm_destroy(t[r].comm);
        free(t[r].got);
    }
    comm_cpu_group_destroy(g);
}

static void test_comm_cpu_collectives(void **state)
{
    (void)state;
    static const size_t sizes[] = { 1, 3, 7, 1000, 4099 };
    for (int world = 1; world <= COMM_TEST_MAX; world++) {
        for (size_t k = 0; k < ARRAY_LEN(sizes); k++) {
            run_comm_test(world, sizes[k]);
        }
    }
    struct comm_cpu_group *g;
    assert_int_equal(comm_cpu_group_create(0, &g), -EINVAL);
    assert_int_equal(comm_cpu_group_create(COMM_CPU_MAX_RANKS + 1, &g), -EINVAL);
    assert_int_equal(comm_cpu_group_create(2, &g), 0);
    struct comm *c;
    assert_int_equal(comm_cpu_create(g, 2, &c), -EINVAL);
    comm_cpu_group_destroy(g);
}

/* ---- the shard plan and the slicer ---- */

static void test_tp_shard_plan(void **state)
{
    (void)state;
    struct model_config m;
    model_config_default(&m);
    m.n_heads = 8;
    m.n_kv_heads = 4;
    m.n_ff = 150;
    char err[ERRSTR_LEN];
    struct tp_shard s;
    /* stories260K's heads over 2 ranks: 4 query heads and 2 KV heads each */
    assert_int_equal(tp_shard_plan(&m, 1, 2, &s, err, sizeof(err)), 0);
    assert_int_equal(s.head0, 4);
    assert_int_equal(s.n_heads, 4);
    assert_int_equal(s.kv_head0, 2);
    assert_int_equal(s.n_kv_heads, 2);
    assert_int_equal(s.ff0, 75);
    assert_int_equal(s.n_ff, 75);
    /* 150 MLP columns over 4 ranks: 37, 38, 37, 38, contiguous */
    int32_t next = 0;
    for (int r = 0; r < 4; r++) {
        assert_int_equal(tp_shard_plan(&m, r, 4, &s, err, sizeof(err)), 0);
        assert_int_equal(s.ff0, next);
        assert_int_equal(s.n_ff, r % 2 ? 38 : 37);
        assert_int_equal(s.kv_head0, r);
        assert_int_equal(s.n_kv_heads, 1);
        next += s.n_ff;
    }
    assert_int_equal(next, 150);
    /* MQA: 4 query heads, 1 KV head, 4 ranks: every rank repeats KV head 0 */
    m.n_heads = 4;
    m.n_kv_heads = 1;
    for (int r = 0; r < 4; r++) {
        assert_int_equal(tp_shard_plan(&m, r, 4, &s, err, sizeof(err)), 0);
        assert_int_equal(s.head0, r);
        assert_int_equal(s.kv_head0, 0);
        assert_int_equal(s.n_kv_heads, 1);
    }
    /* 8 heads over 4 KV heads... over 3 ranks does not divide */
    m.n_heads = 8;
    m.n_kv_heads = 4;
    assert_int_equal(tp_shard_plan(&m, 0, 3, &s, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "do not divide"));
    assert_int_equal(tp_shard_plan(&m, 2, 2, &s, err, sizeof(err)), -EINVAL);
}

static void test_tp_tensor_slice(void **state)
{
    (void)state;
    enum { R = 3, C = 5 };
    float full[R * C];
    uint16_t h[R * C], bf[R * C];
    for (int i = 0; i < R * C; i++) {
        full[i] = (float)i * 0.25f - 1.0f; /* exact in f16 and bf16 */
        h[i] = kern_cpu_f32_to_f16_one(full[i]);
        uint32_t u;
        memcpy(&u, &full[i], 4);
        bf[i] = (uint16_t)(u >> 16);
    }
    struct model_tensor t = { .name = "w", .n_dims = 2, .shape = { R, C }, .n_elems = R * C };
    const void *datas[] = { full, h, bf };
    enum model_dtype dtypes[] = { MODEL_DTYPE_F32, MODEL_DTYPE_F16, MODEL_DTYPE_BF16 };
    for (int k = 0; k < 3; k++) {
        t.dtype = dtypes[k];
        t.data = datas[k];
        float got[2 * 3];
        assert_int_equal(tp_tensor_slice_f32(&t, 1, 2, 2, 3, got), 0);
        for (int r = 0; r < 2; r++) {
            for (int c = 0; c < 3; c++) {
                assert_true(got[r * 3 + c] == full[(1 + r) * C + 2 + c]);
            }
        }
        assert_int_equal(tp_tensor_slice_f32(&t, 2, 2, 0, 1, got), -EINVAL);
        assert_int_equal(tp_tensor_slice_f32(&t, 0, 1, 3, 3, got), -EINVAL);
    }
}

/* ---- the split end to end against the single-rank engine ---- */

/* A deterministic pseudo-random prompt. */
static void make_prompt(int32_t *t, int32_t n, uint32_t seed, int32_t n_vocab)
{
    t[0] = 1;
    for (int32_t i = 1; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = 3 + (int32_t)((seed >> 8) % (uint32_t)(n_vocab - 3));
    }
}

enum { SCRIPT_A = 37, SCRIPT_B = 9, SCRIPT_DECODE = 4, SCRIPT_MAX_TOKENS = 64 };

/* The batches both sides run: sequence A prefilled in chunks of 20 and 17 (the second mixed with
 * all of sequence B), then decode steps of both sequences in one batch. Sequence A's blocks are
 * not contiguous. */
struct script {
    int32_t n_batches;
    struct engine_batch b[2 + SCRIPT_DECODE];
    int32_t tokens[2 + SCRIPT_DECODE][SCRIPT_MAX_TOKENS];
    int32_t pos[2 + SCRIPT_DECODE][SCRIPT_MAX_TOKENS];
    int32_t seq[2 + SCRIPT_DECODE][SCRIPT_MAX_TOKENS];
    int32_t rows[2 + SCRIPT_DECODE][SCRIPT_MAX_TOKENS];
    int32_t blocks_a[4], blocks_b[1];
    const int32_t *tables[2];
    int32_t n_blocks[2];
    int32_t total_rows;
};

static void script_build(struct script *s, int32_t n_vocab)
{
    memset(s, 0, sizeof(*s));
    int32_t a[SCRIPT_A + SCRIPT_DECODE], bb[SCRIPT_B + SCRIPT_DECODE];
    make_prompt(a, SCRIPT_A + SCRIPT_DECODE, 11, n_vocab);
    make_prompt(bb, SCRIPT_B + SCRIPT_DECODE, 29, n_vocab);
    static const int32_t blocks_a[4] = { 5, 2, 7, 0 };
    memcpy(s->blocks_a, blocks_a, sizeof(blocks_a));
    s->blocks_b[0] = 3;
    s->tables[0] = s->blocks_a;
    s->tables[1] = s->blocks_b;
    s->n_blocks[0] = 4;
    s->n_blocks[1] = 1;
    int32_t a_done = 0, b_done = 0;
    for (int32_t k = 0; k < 2 + SCRIPT_DECODE; k++) {
        int32_t n = 0;
        int32_t a_take = k == 0 ? 20 : k == 1 ? SCRIPT_A - 20 : 1;
        int32_t b_take = k == 0 ? 0 : k == 1 ? SCRIPT_B : 1;
        for (int32_t i = 0; i < b_take; i++, n++) { /* B first: batch order is free */
            s->tokens[k][n] = bb[b_done + i];
            s->pos[k][n] = b_done + i;
            s->seq[k][n] = 1;
        }
        for (int32_t i = 0; i < a_take; i++, n++) {
            s->tokens[k][n] = a[a_done + i];
            s->pos[k][n] = a_done + i;
            s->seq[k][n] = 0;
        }
        a_done += a_take;
        b_done += b_take;
        for (int32_t i = 0; i < n; i++) {
            s->rows[k][i] = i;
        }
        s->b[k] = (struct engine_batch){ .n_tokens = n,
                                         .tokens = s->tokens[k],
                                         .pos = s->pos[k],
                                         .seq = s->seq[k],
                                         .n_seqs = 2,
                                         .block_tables = s->tables,
                                         .n_blocks = s->n_blocks,
                                         .n_outputs = n,
                                         .output_rows = s->rows[k] };
        s->total_rows += n;
    }
    s->n_batches = 2 + SCRIPT_DECODE;
}

static struct engine_config tp_test_config(void)
{
    struct engine_config cfg;
    engine_config_default(&cfg);
    cfg.backend = ENGINE_BACKEND_CPU;
    cfg.n_threads = 2;
    cfg.n_kv_blocks = 8;
    cfg.max_batch_tokens = SCRIPT_MAX_TOKENS;
    cfg.max_outputs = SCRIPT_MAX_TOKENS;
    cfg.max_ctx = 64;
    return cfg;
}

/* Runs the script on the engine; returns logits [total_rows, n_vocab] (free). */
static float *run_engine(const char *path, struct script *s, int32_t *n_vocab)
{
    struct engine_config cfg = tp_test_config();
    struct engine *e = NULL;
    char err[ERRSTR_LEN];
    if (engine_open(path, NULL, &cfg, &e, err, sizeof(err)) != 0) {
        fail_msg("engine_open %s: %s", path, err);
    }
    *n_vocab = engine_model_config(e)->n_vocab;
    script_build(s, *n_vocab);
    float *out = malloc((size_t)s->total_rows * (size_t)*n_vocab * sizeof(float));
    size_t off = 0;
    for (int32_t k = 0; k < s->n_batches; k++) {
        if (engine_forward(e, &s->b[k], out + off) != 0) {
            fail_msg("engine_forward: %s", engine_errstr(e));
        }
        off += (size_t)s->b[k].n_outputs * (size_t)*n_vocab;
    }
    engine_destroy(e);
    return out;
}

static double run_tp_and_compare(const char *path, int world, const struct script *s,
                                 const float *want, int32_t n_vocab)
{
    struct engine_config cfg = tp_test_config();
    struct tp_group *g = NULL;
    char err[ERRSTR_LEN];
    if (tp_group_open(path, NULL, &cfg, world, &g, err, sizeof(err)) != 0) {
        fail_msg("tp_group_open %s world %d: %s", path, world, err);
    }
    assert_int_equal(tp_rank_model_config(tp_group_rank(g, 0))->n_vocab, n_vocab);
    float *got = malloc((size_t)s->total_rows * (size_t)n_vocab * sizeof(float));
    size_t off = 0;
    for (int32_t k = 0; k < s->n_batches; k++) {
        if (tp_group_forward(g, &s->b[k], got + off, err, sizeof(err)) != 0) {
            fail_msg("tp_group_forward %s world %d: %s", path, world, err);
        }
        off += (size_t)s->b[k].n_outputs * (size_t)n_vocab;
    }
    double excess = 0, max_diff = 0;
    for (size_t i = 0; i < off; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        double x = d / (1e-4 * (1.0 + fabs((double)want[i])));
        excess = x > excess ? x : excess;
        max_diff = d > max_diff ? d : max_diff;
    }
    if (excess > 1.0) {
        fail_msg("%s world %d: max |tp - engine| = %g (%.1fx the tolerance)", path, world, max_diff,
                 excess);
    }
    print_message("%-60s world %d  max |tp - engine| %.2e\n", path, world, max_diff);
    free(got);
    tp_group_destroy(g);
    return max_diff;
}

static void check_model(const char *path)
{
    struct script s;
    int32_t n_vocab;
    float *want = run_engine(path, &s, &n_vocab);
    for (int world = 1; world <= 4; world *= 2) {
        run_tp_and_compare(path, world, &s, want, n_vocab);
    }
    free(want);
}

static void test_tp_stories260k_matches_single_rank(void **state)
{
    (void)state;
    check_model(STORIES_HF);
    check_model(STORIES_BIN); /* Meta's interleaved RoPE layout */
}

static void test_tp_tiny_models_match_single_rank(void **state)
{
    (void)state;
    static const char *const names[] = {
        "v512-gqa-untied-f32-safetensors-sharded", /* 8 heads / 2 KV: KV repeated at 4 ranks */
        "v512-mqa-untied-bf16-bin-sharded",        /* 4 / 1: MQA, bf16 */
        "v512-mha-tied-f16-bin",                   /* 4 / 4, tied, f16, n_ff 150 */
        "v32k-gqa-tied-f16-safetensors",           /* 32000-piece vocabulary */
        "v32k-mha-untied-bf16-bin-sharded",        /* JudgeLM-like */
    };
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        char *dir = path_join(TINY_DIR, names[i]);
        check_model(dir);
        free(dir);
    }
}

/* A split that does not divide is refused at open; a malformed batch before any rank runs. */
static void test_tp_rejects_bad_splits_and_batches(void **state)
{
    (void)state;
    struct engine_config cfg = tp_test_config();
    struct tp_group *g = NULL;
    char err[ERRSTR_LEN];
    assert_int_equal(tp_group_open(STORIES_HF, NULL, &cfg, 3, &g, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "do not divide"));
    assert_int_equal(tp_group_open(STORIES_HF, NULL, &cfg, 0, &g, err, sizeof(err)), -EINVAL);
    assert_int_equal(tp_group_open(STORIES_HF, NULL, &cfg, 2, &g, err, sizeof(err)), 0);
    struct script s;
    script_build(&s, 512);
    struct engine_batch b = s.b[0];
    int32_t bad_tokens[SCRIPT_MAX_TOKENS];
    memcpy(bad_tokens, s.tokens[0], sizeof(bad_tokens));
    bad_tokens[3] = 512;
    b.tokens = bad_tokens;
    float logits[512 * SCRIPT_MAX_TOKENS];
    assert_int_equal(tp_group_forward(g, &b, logits, err, sizeof(err)), -EINVAL);
    b = s.b[0];
    int32_t bad_blocks[4] = { 5, 2, 8, 0 }; /* block 8 is outside the pool of 8 */
    const int32_t *tables[2] = { bad_blocks, s.blocks_b };
    b.block_tables = tables;
    assert_int_equal(tp_group_forward(g, &b, logits, err, sizeof(err)), 0); /* block 8 unused */
    b = s.b[1];
    b.block_tables = tables; /* positions 20..36 reach block index 2 */
    assert_int_equal(tp_group_forward(g, &b, logits, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "outside the pool"));
    tp_group_destroy(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_comm_cpu_collectives),
        cmocka_unit_test(test_tp_shard_plan),
        cmocka_unit_test(test_tp_tensor_slice),
        cmocka_unit_test(test_tp_stories260k_matches_single_rank),
        cmocka_unit_test(test_tp_tiny_models_match_single_rank),
        cmocka_unit_test(test_tp_rejects_bad_splits_and_batches),
    };
    return cmocka_run_group_tests_name("tp", tests, NULL, NULL);
}
