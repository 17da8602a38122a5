/* engine_bench.c - CPU engine speed against this machine's own limits, measured in the same run:
 *   1. OpenBLAS sgemm GFLOP/s on the model's own matmul shapes at 512 tokens (all threads);
 *   2. memory read bandwidth (all threads, 1 GiB);
 *   3. prefill tokens/s in 512-token batches, as a fraction of the sgemm rate;
 *   4. decode tokens/s at batch 1, 8, 32, 64, every sequence with its own 700-token context
 *      (so their K/V does not fit in the L3 together, as in a judge run); batch 1 as a fraction
 *      of the bandwidth limit (weight bytes per token / bandwidth).
 * Usage: engine_bench MODEL_DIR [--threads N] [--quick] */
#include "bench/bench_util.h"
#include "common/util.h"
#include "engine/engine.h"

#include <cblas.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* --- 1. sgemm --------------------------------------------------------------------------- */

/* --- 2. bandwidth ----------------------------------------------------------------------- */

struct bw_arg {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
};

static void *bw_thread(void *arg_)
{
    struct bw_arg *a = arg_;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i + 4 <= a->n; i += 4) {
        s0 += a->p[i];
        s1 += a->p[i + 1];
        s2 += a->p[i + 2];
        s3 += a->p[i + 3];
    }
    a->sum = s0 + s1 + s2 + s3;
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of 7 passes over 1 GiB, all threads at once: robust to a pass that a noisy neighbour
 * slowed down or that ran alone on an idle memory bus. */
static double read_bandwidth_gbs(int n_threads)
{
    size_t bytes = (size_t)1 << 30, n = bytes / sizeof(uint64_t);
    uint64_t *buf = malloc(bytes);
    for (size_t i = 0; i < n; i++) {
        buf[i] = i;
    }
    enum { PASSES = 7 };
    double gbs[PASSES];
    for (int rep = 0; rep < PASSES; rep++) {
        pthread_t th[64];
        struct bw_arg args[64];
        double t0 = now_s();
        for (int i = 0; i < n_threads; i++) {
            args[i] = (struct bw_arg){ buf + n / n_threads * i, n / n_threads, 0 };
            pthread_create(&th[i], NULL, bw_thread, &args[i]);
        }
        uint64_t total = 0;
        for (int i = 0; i < n_threads; i++) {
            pthread_join(th[i], NULL);
            total += args[i].sum;
        }
        gbs[rep] = (double)bytes / (now_s() - t0) * 1e-9;
        if (total == 42) {
            printf("#"); /* keep the sums alive */
        }
    }
    free(buf);
    qsort(gbs, PASSES, sizeof(gbs[0]), cmp_double);
    return gbs[PASSES / 2];
}

/* --- 3, 4. engine ------------------------------------------------------------------------- */

#define DECODE_MAX_SEQS 64
#define DECODE_CTX      700 /* each sequence's own context before the timed steps */
#define DECODE_BLOCKS   46  /* 736 positions: the context and up to 36 steps */

static void make_tokens(int32_t *t, int32_t n, uint32_t seed, int32_t n_vocab)
{
    for (int32_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        t[i] = 3 + (int32_t)((seed >> 8) % (uint32_t)(n_vocab - 3));
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: engine_bench MODEL_DIR [--threads N] [--quick]\n");
        return 2;
    }
    int n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    bool quick = false, decode_only = false, prefill_only = false;
    int max_batch = 64;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            n_threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else if (strcmp(argv[i], "--max-batch") == 0 && i + 1 < argc) {
            max_batch = atoi(argv[++i]); /* for profiling one batch size */
        } else if (strcmp(argv[i], "--prefill-only") == 0) {
            prefill_only = true; /* for profiling */
        } else if (strcmp(argv[i], "--decode-only") == 0) {
            decode_only = true; /* for profiling */
        }
    }
    struct engine_config cfg;
    engine_config_default(&cfg);
    cfg.backend = ENGINE_BACKEND_CPU;
    cfg.n_threads = n_threads;
    cfg.max_batch_tokens = 512;
    cfg.max_outputs = 64;
    cfg.max_ctx = 1024;
    cfg.n_kv_blocks = DECODE_MAX_SEQS * DECODE_BLOCKS + 32; /* decode contexts, prefill */
    struct engine *e;
    char err[ERRSTR_LEN];
    if (engine_open(argv[1], NULL, &cfg, &e, err, sizeof(err)) != 0) {
        fprintf(stderr, "engine_bench: %s\n", err);
        return 1;
    }
    const struct model_config *m = engine_model_config(e);
    int32_t V = m->n_vocab, D = m->dim, F = m->n_ff, L = m->n_layers;
    int32_t Q = m->n_heads * m->head_dim, KV = m->n_kv_heads * m->head_dim;
    /* matmul FLOPs per token (without the lm_head) and weight bytes read per decode token */
    double layer_params = (double)Q * D * 2 + (double)KV * D * 2 + 3.0 * F * D;
    double flops_tok = 2.0 * L * layer_params;
    double weight_bytes = 4.0 * (L * layer_params + (double)V * D);

    /* the peer: OpenBLAS itself on the same shapes, with as many threads as the engine */
    openblas_set_num_threads(n_threads);
    double min_t = quick ? 0.3 : 1.0;
    double t_gemm = 0;
    struct {
        int n, k, count;
    } shapes[] = { { Q, D, 1 }, { KV, D, 2 }, { D, Q, 1 }, { F, D, 2 }, { D, F, 1 } };
    double total_flop = 0;
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        double g = sgemm_gflops(512, shapes[i].n, shapes[i].k, min_t);
        double flop = 2.0 * 512 * shapes[i].n * shapes[i].k * shapes[i].count;
        total_flop += flop;
        t_gemm += flop / (g * 1e9);
    }
    double sgemm_rate = total_flop / t_gemm * 1e-9;
    double bw = read_bandwidth_gbs(n_threads);

    printf("model: %s  dim %d, layers %d, heads %d/%d, ffn %d, vocab %d, %.1fM params\n", argv[1],
           D, L, m->n_heads, m->n_kv_heads, F, V,
           (L * layer_params + (double)V * D + (2.0 * L + 1) * D) / 1e6);
    printf("threads: %d\n", n_threads);
    if (max_batch < 64 || decode_only) {
        printf("(profiling run: --max-batch %d%s)\n", max_batch,
               decode_only ? ", --decode-only" : "");
    }
    printf("sgemm (OpenBLAS, %d threads, the model's shapes at 512 tokens): %.1f GFLOP/s\n",
           n_threads, sgemm_rate);
    printf("memory read bandwidth: %.1f GB/s\n", bw);

    /* prefill: one 512-token batch from position 0, logits for the last token only */
    int32_t toks[512], pos[512], seq[512], blocks[64], n_blocks = 32;
    for (int32_t i = 0; i < 512; i++) {
        pos[i] = i;
        seq[i] = 0;
    }
    for (int32_t i = 0; i < 64; i++) {
        blocks[i] = DECODE_MAX_SEQS * DECODE_BLOCKS + i % 32;
    }
    make_tokens(toks, 512, 1, V);
    float *logits = malloc((size_t)64 * V * sizeof(float));
    const int32_t *one_table[1] = { blocks };
    int32_t last = 511;
    struct engine_batch pb = {
        .n_tokens = 512,
        .tokens = toks,
        .pos = pos,
        .seq = seq,
        .n_seqs = 1,
        .block_tables = one_table,
        .n_blocks = &n_blocks,
        .n_outputs = 1,
        .output_rows = &last,
    };
    engine_forward(e, &pb, logits); /* warm-up */
    int reps = decode_only ? 0 : quick ? 2 : 5;
    double t0 = now_s();
    for (int r = 0; r < reps; r++) {
        engine_forward(e, &pb, logits);
    }
    double t_pre = (now_s() - t0) / (reps ? reps : 1);
    double pre_tps = 512.0 / t_pre;
    double pre_gflops = (flops_tok * 512 + 2.0 * D * V) / t_pre * 1e-9;
    printf("prefill: %.0f tokens/s (512-token batches), %.1f GFLOP/s = %.0f%% of sgemm\n", pre_tps,
           pre_gflops, 100.0 * pre_gflops / sgemm_rate);

    if (prefill_only) {
        free(logits);
        engine_destroy(e);
        return 0;
    }
    /* decode: each sequence its own 700-token context (distinct tokens, so distinct K/V), on
     * blocks interleaved between the sequences as when they grow together; the contexts are
     * prefilled in 512-token batches packed across sequences */
    int n_ctx_seqs = max_batch < DECODE_MAX_SEQS ? max_batch : DECODE_MAX_SEQS;
    static int32_t tables[DECODE_MAX_SEQS][DECODE_BLOCKS];
    static int32_t ctx_toks[DECODE_MAX_SEQS][DECODE_CTX];
    const int32_t *table_ptrs[DECODE_MAX_SEQS];
    int32_t nb[DECODE_MAX_SEQS];
    for (int s = 0; s < DECODE_MAX_SEQS; s++) {
        for (int k = 0; k < DECODE_BLOCKS; k++) {
            tables[s][k] = k * DECODE_MAX_SEQS + s;
        }
        table_ptrs[s] = tables[s];
        nb[s] = DECODE_BLOCKS;
        make_tokens(ctx_toks[s], DECODE_CTX, 100u + (uint32_t)s, V);
    }
    double t_fill = now_s();
    for (int32_t start = 0; start < n_ctx_seqs * DECODE_CTX; start += 512) {
        int32_t n = n_ctx_seqs * DECODE_CTX - start < 512 ? n_ctx_seqs * DECODE_CTX - start : 512;
        for (int32_t i = 0; i < n; i++) {
            seq[i] = (start + i) / DECODE_CTX;
            pos[i] = (start + i) % DECODE_CTX;
            toks[i] = ctx_toks[seq[i]][pos[i]];
        }
        int32_t row = n - 1;
        struct engine_batch b = {
            .n_tokens = n,
            .tokens = toks,
            .pos = pos,
            .seq = seq,
            .n_seqs = n_ctx_seqs,
            .block_tables = table_ptrs,
            .n_blocks = nb,
            .n_outputs = 1,
            .output_rows = &row,
        };
        engine_forward(e, &b, logits);
    }
    t_fill = now_s() - t_fill;
    const int batches[4] = { 1, 8, 32, 64 };
    double decode_tps[4];
    int steps = quick ? 8 : 32;
    for (int bi = 0; bi < 4; bi++) {
        int B = batches[bi];
        if (B > max_batch) {
            decode_tps[bi] = 0;
            continue;
        }
        int32_t rows[DECODE_MAX_SEQS];
        for (int s = 0; s < B; s++) {
            toks[s] = 3 + s % (V - 3);
            pos[s] = DECODE_CTX;
            seq[s] = s;
            rows[s] = s;
        }
        struct engine_batch b = {
            .n_tokens = B,
            .tokens = toks,
            .pos = pos,
            .seq = seq,
            .n_seqs = B,
            .block_tables = table_ptrs,
            .n_blocks = nb,
            .n_outputs = B,
            .output_rows = rows,
        };
        engine_forward(e, &b, logits); /* warm-up step at position 700 */
        t0 = now_s();
        for (int st = 0; st < steps; st++) {
            for (int s = 0; s < B; s++) {
                toks[s] = 3 + (s * 7 + st) % (V - 3);
                pos[s] = DECODE_CTX + 1 + st;
                seq[s] = s;
                rows[s] = s;
            }
            engine_forward(e, &b, logits);
        }
        decode_tps[bi] = (double)B * steps / (now_s() - t0);
    }
    double limit = bw * 1e9 / weight_bytes;
    printf("decode contexts: %d sequences x %d tokens, each its own, prefilled in %.1f s\n",
           n_ctx_seqs, DECODE_CTX, t_fill);
    printf("decode at context 700 (distinct contexts): ");
    for (int bi = 0; bi < 4; bi++) {
        printf("%sB=%d %.1f tok/s", bi ? ", " : "", batches[bi], decode_tps[bi]);
    }
    printf("\n");
    printf("decode batch 1: %.1f tok/s vs bandwidth limit %.1f tok/s (%.0f MB weights/token) = "
           "%.0f%%\n",
           decode_tps[0], limit, weight_bytes / 1e6, 100.0 * decode_tps[0] / limit);
    printf("prefill_vs_sgemm: %.2f\ndecode1_vs_bandwidth: %.2f\n", pre_gflops / sgemm_rate,
           decode_tps[0] / limit);
    free(logits);
    engine_destroy(e);
    return 0;
}
