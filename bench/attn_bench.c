/* attn_bench.c - batched-decode attention alone: one decode step's attention for S sequences,
 * each over its own context on its own random, non-contiguous blocks, through every layer, on an
 * OpenMP team as engine/backend_cpu.c runs it. The K/V of the whole step is far larger than the
 * L3, so it streams from DRAM.
 *
 * Four variants read the same pool in the same run:
 *   block layout token-major ([block_size][kv_dim], one head's key every kv_dim floats, what the
 *   engine stores) or head-major ([kv_head][block_size][head_dim], one head's keys contiguous);
 *   a task per (sequence, head), the engine's walk before this benchmark, or a task per sequence
 *   (all its heads block by block, each block read in one run, the engine's walk now).
 * The peer is a plain sequential read of the same pools on the same threads. Each figure is the
 * median over the steps: milliseconds per step and per decode token, and K/V GB/s.
 *
 * Usage: attn_bench [--seqs S] [--ctx N] [--layers L] [--kv-heads H] [--head-dim D]
 *                   [--block-size B] [--threads T] [--steps K] */
#include "bench/bench_util.h"
#include "kernels/cpu/ops.h"

#include <omp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct attn_shape {
    int n_seqs, n_ctx, n_layers, n_kv_heads, head_dim, block_size, n_threads, n_steps;
    int n_blocks_seq; /* blocks per sequence */
    int n_blocks;     /* per layer */
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint32_t lcg(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* One step: every layer, every sequence, its heads split into tasks of heads_per_task. */
static void attn_step(const struct attn_shape *sh, float *const *k_pools, float *const *v_pools,
                      const int32_t *tables, const float *q, float *scores, float *out,
                      bool token_major, int heads_per_task)
{
    int hd = sh->head_dim, bs = sh->block_size;
    int tasks_per_seq = (sh->n_kv_heads + heads_per_task - 1) / heads_per_task;
    int n_tasks = sh->n_seqs * tasks_per_seq;
    size_t kv_dim = (size_t)sh->n_kv_heads * (size_t)hd;
    for (int l = 0; l < sh->n_layers; l++) {
        struct kern_kv_layout kv = {
            .k = k_pools[l],
            .v = v_pools[l],
            .block_stride = (size_t)bs * kv_dim,
            .head_stride = token_major ? (size_t)hd : (size_t)bs * hd,
            .token_stride = token_major ? kv_dim : (size_t)hd,
            .block_size = bs,
            .head_dim = hd,
        };
#pragma omp parallel for schedule(dynamic, 1) num_threads(sh->n_threads)
        for (int i = 0; i < n_tasks; i++) {
            int s = i / tasks_per_seq, h0 = i % tasks_per_seq * heads_per_task;
            int h1 = h0 + heads_per_task < sh->n_kv_heads ? h0 + heads_per_task : sh->n_kv_heads;
            kern_cpu_attention_paged_f32(
                &kv, tables + (size_t)s * sh->n_blocks_seq, sh->n_ctx, q + (size_t)s * kv_dim, h0,
                h1, 1, scores + (size_t)omp_get_thread_num() * sh->n_kv_heads * sh->n_ctx,
                out + (size_t)s * kv_dim);
        }
    }
}

/* The peer: every pool read front to back, split across the threads. */
static double read_pools(const struct attn_shape *sh, float *const *k_pools, float *const *v_pools,
                         size_t pool_floats)
{
    double total = 0;
    for (int l = 0; l < sh->n_layers; l++) {
        for (int kv = 0; kv < 2; kv++) {
            const float *p = kv ? v_pools[l] : k_pools[l];
            double sum = 0;
#pragma omp parallel for schedule(static) num_threads(sh->n_threads) reduction(+ : sum)
            for (size_t i0 = 0; i0 < pool_floats; i0 += 1024) {
                float acc[8] = { 0 };
                size_t end = i0 + 1024 < pool_floats ? i0 + 1024 : pool_floats;
                for (size_t i = i0; i + 8 <= end; i += 8) {
                    for (int j = 0; j < 8; j++) {
                        acc[j] += p[i + j];
                    }
                }
                for (int j = 0; j < 8; j++) {
                    sum += acc[j];
                }
            }
            total += sum;
        }
    }
    return total;
}

int main(int argc, char **argv)
{
    struct attn_shape sh = { .n_seqs = 32,
                             .n_ctx = 550,
                             .n_layers = 12,
                             .n_kv_heads = 12,
                             .head_dim = 64,
                             .block_size = 16,
                             .n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN),
                             .n_steps = 9 };
    for (int i = 1; i < argc; i++) {
        int *dst = NULL;
        if (strcmp(argv[i], "--seqs") == 0) {
            dst = &sh.n_seqs;
        } else if (strcmp(argv[i], "--ctx") == 0) {
            dst = &sh.n_ctx;
        } else if (strcmp(argv[i], "--layers") == 0) {
            dst = &sh.n_layers;
        } else if (strcmp(argv[i], "--kv-heads") == 0) {
            dst = &sh.n_kv_heads;
        } else if (strcmp(argv[i], "--head-dim") == 0) {
            dst = &sh.head_dim;
        } else if (strcmp(argv[i], "--block-size") == 0) {
            dst = &sh.block_size;
        } else if (strcmp(argv[i], "--threads") == 0) {
            dst = &sh.n_threads;
        } else if (strcmp(argv[i], "--steps") == 0) {
            dst = &sh.n_steps;
        }
        if (!dst || i + 1 >= argc || (*dst = atoi(argv[++i])) <= 0) {
            fprintf(stderr, "usage: attn_bench [--seqs S] [--ctx N] [--layers L] [--kv-heads H] "
                            "[--head-dim D] [--block-size B] [--threads T] [--steps K]\n");
            return 2;
        }
    }
    sh.n_blocks_seq = (sh.n_ctx + sh.block_size - 1) / sh.block_size;
    sh.n_blocks = sh.n_seqs * sh.n_blocks_seq;
    size_t kv_dim = (size_t)sh.n_kv_heads * (size_t)sh.head_dim;
    size_t pool_floats = (size_t)sh.n_blocks * (size_t)sh.block_size * kv_dim;
    float **k_pools = calloc((size_t)sh.n_layers, sizeof(*k_pools));
    float **v_pools = calloc((size_t)sh.n_layers, sizeof(*v_pools));
    uint32_t seed = 7;
    for (int l = 0; l < sh.n_layers; l++) {
        k_pools[l] = malloc(pool_floats * sizeof(float));
        v_pools[l] = malloc(pool_floats * sizeof(float));
        if (!k_pools[l] || !v_pools[l]) {
            fprintf(stderr, "attn_bench: out of memory for the pools\n");
            return 1;
        }
        for (size_t i = 0; i < pool_floats; i++) {
            k_pools[l][i] = (float)(lcg(&seed) & 0xffff) / 32768.0f - 1.0f;
            v_pools[l][i] = (float)(lcg(&seed) & 0xffff) / 32768.0f - 1.0f;
        }
    }
    /* the pool's blocks shuffled and dealt out: every table non-contiguous and interleaved */
    int32_t *tables = malloc((size_t)sh.n_blocks * sizeof(*tables));
    for (int i = 0; i < sh.n_blocks; i++) {
        tables[i] = i;
    }
    for (int i = sh.n_blocks - 1; i > 0; i--) {
        int j = (int)(lcg(&seed) % (uint32_t)(i + 1));
        int32_t t = tables[i];
        tables[i] = tables[j];
        tables[j] = t;
    }
    size_t n_q = (size_t)sh.n_seqs * kv_dim;
    float *q = malloc(n_q * sizeof(float)), *out = malloc(n_q * sizeof(float));
    for (size_t i = 0; i < n_q; i++) {
        q[i] = (float)(lcg(&seed) & 0xffff) / 32768.0f - 1.0f;
    }
    float *scores =
        malloc((size_t)sh.n_threads * (size_t)sh.n_kv_heads * (size_t)sh.n_ctx * sizeof(float));
    double kv_bytes = 2.0 * sh.n_layers * sh.n_seqs * (double)sh.n_ctx * (double)kv_dim * 4.0;
    double pool_bytes = 2.0 * sh.n_layers * (double)pool_floats * 4.0;

    /* the variants interleaved, so that a noisy neighbour hits all of them alike */
    enum { N_VAR = 4 };
    static const struct {
        const char *name;
        bool token_major;
        int all_heads;
    } var[N_VAR] = {
        { "token-major, a task per (sequence, head)", true, 0 },
        { "head-major,  a task per (sequence, head)", false, 0 },
        { "token-major, a task per sequence        ", true, 1 },
        { "head-major,  a task per sequence        ", false, 1 },
    };
    double *t_var[N_VAR];
    double *t_read = malloc((size_t)sh.n_steps * sizeof(double));
    double sink = 0;
    for (int v = 0; v < N_VAR; v++) {
        t_var[v] = malloc((size_t)sh.n_steps * sizeof(double));
        attn_step(&sh, k_pools, v_pools, tables, q, scores, out, var[v].token_major,
                  var[v].all_heads ? sh.n_kv_heads : 1); /* warm-up */
    }
    for (int st = 0; st < sh.n_steps; st++) {
        for (int v = 0; v < N_VAR; v++) {
            double t0 = now_s();
            attn_step(&sh, k_pools, v_pools, tables, q, scores, out, var[v].token_major,
                      var[v].all_heads ? sh.n_kv_heads : 1);
            t_var[v][st] = now_s() - t0;
            sink += out[0];
        }
        double t0 = now_s();
        sink += read_pools(&sh, k_pools, v_pools, pool_floats);
        t_read[st] = now_s() - t0;
    }
    qsort(t_read, (size_t)sh.n_steps, sizeof(double), cmp_double);
    double rd = t_read[sh.n_steps / 2];
    printf("shape: %d sequences x %d tokens of context (distinct, shuffled blocks of %d), %d "
           "layers, %d heads x %d, %d threads, median of %d steps\n",
           sh.n_seqs, sh.n_ctx, sh.block_size, sh.n_layers, sh.n_kv_heads, sh.head_dim,
           sh.n_threads, sh.n_steps);
    printf("K/V per step: %.0f MB\n", kv_bytes / 1e6);
    printf("sequential read of the pools: %.1f GB/s\n", pool_bytes / rd * 1e-9);
    double t_med[N_VAR];
    for (int v = 0; v < N_VAR; v++) {
        qsort(t_var[v], (size_t)sh.n_steps, sizeof(double), cmp_double);
        t_med[v] = t_var[v][sh.n_steps / 2];
        printf("%s: %6.1f ms/step, %.2f ms per decode token, %5.1f GB/s = %.2f of the read\n",
               var[v].name, t_med[v] * 1e3, t_med[v] * 1e3 / sh.n_seqs, kv_bytes / t_med[v] * 1e-9,
               (kv_bytes / t_med[v]) / (pool_bytes / rd));
    }
    printf("head_major_per_seq_vs_token_major_per_head: %.2f\n", t_med[0] / t_med[3]);
    if (sink == 42.0) {
        printf("#\n"); /* keep the results alive */
    }
    for (int l = 0; l < sh.n_layers; l++) {
        free(k_pools[l]);
        free(v_pools[l]);
    }
    free(k_pools);
    free(v_pools);
    free(tables);
    free(q);
    free(out);
    free(scores);
    for (int v = 0; v < N_VAR; v++) {
        free(t_var[v]);
    }
    free(t_read);
    return 0;
}
