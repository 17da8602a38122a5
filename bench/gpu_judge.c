/* gpu_judge.c - the judge workload on one GPU: a LLaMA-7B-shaped model with random bf16 weights
 * made on the device, N synthetic pairwise judge prompts of about 700 tokens (a shared 100-token
 * template, then 500-700 random tokens), greedy decoding of a score line (fast mode, 5 tokens) or
 * of a detailed judgement (100 tokens), under a simple continuous batcher: whole prompts are
 * prefilled up to a token budget while sequence slots are free, otherwise every running sequence
 * decodes one token (a CUDA graph per bucketed batch size); sampling and the judge's 20 logprobs
 * per generated token run on the device, as in the service.
 *
 * Reports samples/s, prefill TFLOP/s against cuBLAS's own bf16 GEMM rate and decode bytes/s
 * against a device-to-device copy, both measured in the same run on the same card. Prints
 * "BENCH key value" lines for tests/gpu/run.sh. Without CUDA (or a GPU) it says so and exits 0.
 *
 *   gpu_judge [--samples N] [--mode fast|detailed|both] [--prefill-tokens T] [--max-seqs S]
 *             [--shape 7b|small]
 * --shape small (2 layers of 512, prompts / 8) is the benchmark's own smoke test on cuemu. */
#include "common/util.h"
#include "engine/engine.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef HAVE_CUDA
#include "engine/backend_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* cuBLAS's own rate for the engine's largest GEMM shape (bf16 in, fp32 accumulate and out). */
static double peer_gemm_tflops(int m, int n, int k)
{
    void *a, *b, *c;
    cublasHandle_t h;
    if (cudaMalloc(&a, (size_t)m * k * 2) || cudaMalloc(&b, (size_t)n * k * 2) ||
        cudaMalloc(&c, (size_t)m * n * 4) || cublasCreate(&h)) {
        return 0;
    }
    cudaMemset(a, 0, (size_t)m * k * 2);
    cudaMemset(b, 0, (size_t)n * k * 2);
    const float one = 1, zero = 0;
    double best = 0;
    for (int rep = 0; rep < 12; rep++) {
        cudaDeviceSynchronize();
        double t0 = now_s();
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, b, CUDA_R_16BF, k, a, CUDA_R_16BF,
                     k, &zero, c, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        cudaDeviceSynchronize();
        double r = 2.0 * m * n * k / (now_s() - t0) / 1e12;
        best = rep > 1 && r > best ? r : best; /* skip the warm-up calls */
    }
    cublasDestroy(h);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    return best;
}

/* Device-to-device copy bandwidth (bytes read + written per second). */
static double peer_copy_gbs(size_t bytes)
{
    void *a, *b;
    if (cudaMalloc(&a, bytes) || cudaMalloc(&b, bytes)) {
        return 0;
    }
    double best = 0;
    for (int rep = 0; rep < 8; rep++) {
        cudaDeviceSynchronize();
        double t0 = now_s();
        cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
        cudaDeviceSynchronize();
        double r = 2.0 * (double)bytes / (now_s() - t0) / 1e9;
        best = rep > 0 && r > best ? r : best;
    }
    cudaFree(a);
    cudaFree(b);
    return best;
}

struct seq_state {
    int sample;   /* -1: free slot */
    int32_t len;  /* prompt length */
    int32_t pos;  /* next position */
    int32_t gen;  /* tokens generated */
    int32_t last; /* last sampled token */
};

struct run_stats {
    double wall_s, prefill_s, decode_s, prefill_flop, decode_bytes;
    long prefill_tokens, decode_tokens, decode_steps;
};

/* Prompts are divided by this in --shape small (a smoke test of the benchmark itself). */
static int32_t g_prompt_div = 1;

static int32_t prompt_len(int sample)
{
    uint32_t x = (uint32_t)sample * 2654435761u + 12345u;
    return (600 + (int32_t)(x % 201)) / g_prompt_div; /* 600 .. 800, mean 700 */
}

static int32_t prompt_token(int sample, int32_t i)
{
    if (i < 100 / g_prompt_div) { /* the shared judge template */
        return 3 + (i * 7919) % 31997;
    }
    uint32_t x = (uint32_t)sample * 2246822519u ^ (uint32_t)i * 3266489917u;
    x ^= x >> 15;
    return 3 + (int32_t)(x % 31997u);
}

static int run(void *ctx, const struct model_config *mc, const struct engine_config *cfg,
               int n_samples, int32_t n_gen, int max_seqs, struct run_stats *st)
{
    int32_t bs = cfg->kv_block_size, bps = (800 / g_prompt_div + n_gen + bs - 1) / bs;
    int n_slots = cfg->n_kv_blocks / bps;
    n_slots = n_slots < max_seqs ? n_slots : max_seqs;
    n_slots = n_slots < cfg->max_outputs ? n_slots : cfg->max_outputs;
    if (n_slots < 1) {
        fprintf(stderr, "gpu_judge: KV pool too small\n");
        return -1;
    }
    struct seq_state *slot = calloc((size_t)n_slots, sizeof(*slot));
    int32_t **tables = calloc((size_t)n_slots, sizeof(*tables));
    for (int s = 0; s < n_slots; s++) {
        slot[s].sample = -1;
        tables[s] = malloc((size_t)bps * sizeof(int32_t));
        for (int32_t k = 0; k < bps; k++) {
            tables[s][k] = s * bps + k;
        }
    }
    int32_t T = cfg->max_batch_tokens;
    int32_t *tok = malloc((size_t)T * 4), *pos = malloc((size_t)T * 4),
            *seq = malloc((size_t)T * 4);
    int32_t *rows = malloc((size_t)T * 4), *nblk = malloc((size_t)n_slots * 4),
            *who = malloc((size_t)T * 4);
    /* the judge's 20 logprobs per generated token, computed on the device as the service does */
    struct kern_logprob *lp = malloc((size_t)cfg->max_outputs * 21 * sizeof(*lp));
    int32_t *next = malloc((size_t)cfg->max_outputs * 4),
            *topk = calloc((size_t)cfg->max_outputs, 4);
    float *temp = calloc((size_t)cfg->max_outputs, 4), *topp = malloc((size_t)cfg->max_outputs * 4);
    uint64_t *seeds = calloc((size_t)cfg->max_outputs, 8),
             *steps = calloc((size_t)cfg->max_outputs, 8);
    for (int i = 0; i < cfg->max_outputs; i++) {
        topp[i] = 1.0f;
    }
    for (int s = 0; s < n_slots; s++) {
        nblk[s] = bps;
    }
    double mm_params = (double)mc->n_layers *
                       ((double)mc->dim * (mc->n_heads + 2 * mc->n_kv_heads) * mc->head_dim +
                        (double)mc->n_heads * mc->head_dim * mc->dim + 3.0 * mc->dim * mc->n_ff);
    double kv_bytes_tok = 2.0 * mc->n_layers * mc->n_kv_heads * mc->head_dim * 2;
    memset(st, 0, sizeof(*st));
    int next_sample = 0, done = 0;
    double t_start = now_s();
    while (done < n_samples) {
        int32_t n = 0, n_out = 0;
        bool prefill = false;
        /* admit whole prompts while slots are free and the token budget allows */
        for (int s = 0; s < n_slots && next_sample < n_samples; s++) {
            int32_t len = prompt_len(next_sample);
            if (slot[s].sample >= 0 || n + len > T) {
                continue;
            }
            slot[s] = (struct seq_state){ next_sample++, len, 0, 0, 0 };
            for (int32_t i = 0; i < len; i++, n++) {
                tok[n] = prompt_token(slot[s].sample, i);
                pos[n] = i;
                seq[n] = s;
            }
            rows[n_out] = n - 1;
            who[n_out++] = s;
            st->prefill_flop +=
                2.0 * mm_params * len + 2.0 * mc->dim * mc->n_vocab +
                4.0 * mc->n_layers * mc->n_heads * mc->head_dim * (double)len * (len + 1) / 2;
            st->prefill_tokens += len;
            prefill = true;
        }
        if (!prefill) { /* one decode token for every running sequence */
            for (int s = 0; s < n_slots; s++) {
                if (slot[s].sample < 0 || slot[s].gen == 0) {
                    continue;
                }
                tok[n] = slot[s].last;
                pos[n] = slot[s].pos;
                seq[n] = s;
                rows[n_out] = n;
                who[n_out++] = s;
                st->decode_bytes += kv_bytes_tok * (slot[s].pos + 1);
                n++;
            }
            /* the weights stream once per step; each sequence reads its KV cache */
            st->decode_bytes += 2.0 * (mm_params + (double)mc->dim * mc->n_vocab);
            st->decode_tokens += n;
            st->decode_steps++;
        }
        if (n == 0) {
            break; /* nothing runnable: cannot happen with n_gen >= 1 */
        }
        const int32_t *const *tb = (const int32_t *const *)tables;
        struct engine_batch b = { n, tok, pos, seq, n_slots, tb, nblk, n_out, rows };
        double t0 = now_s();
        if (engine_backend_cuda_ops.forward(ctx, &b, NULL) != 0 ||
            engine_backend_cuda_sample(ctx, n_out, temp, topk, topp, seeds, steps, next, 20, lp) !=
                0) {
            fprintf(stderr, "gpu_judge: forward, sampling or logprobs failed\n");
            return -1;
        }
        double dt = now_s() - t0;
        if (prefill) {
            st->prefill_s += dt;
        } else {
            st->decode_s += dt;
        }
        for (int32_t o = 0; o < n_out; o++) {
            struct seq_state *q = &slot[who[o]];
            q->pos = prefill ? q->len : q->pos + 1;
            q->last = next[o];
            if (++q->gen >= n_gen) {
                q->sample = -1;
                done++;
            }
        }
    }
    st->wall_s = now_s() - t_start;
    /* every sample got its first token from its prefill and the others from decode steps */
    if (done != n_samples || st->decode_tokens != (long)n_samples * (n_gen - 1)) {
        fprintf(stderr, "gpu_judge: %d of %d samples finished with %ld decode tokens (want %ld)\n",
                done, n_samples, st->decode_tokens, (long)n_samples * (n_gen - 1));
        return -1;
    }
    for (int s = 0; s < n_slots; s++) {
        free(tables[s]);
    }
    free(tables);
    free(slot);
    free(tok);
    free(pos);
    free(seq);
    free(rows);
    free(nblk);
    free(who);
    free(next);
    free(lp);
    free(topk);
    free(temp);
    free(topp);
    free(seeds);
    free(steps);
    return 0;
}

int main(int argc, char **argv)
{
    int n_samples = 5000, max_seqs = 256;
    int32_t prefill_tokens = 8192;
    const char *mode = "both", *shape = "7b";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--samples") == 0) {
            n_samples = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--mode") == 0) {
            mode = argv[i + 1];
        } else if (strcmp(argv[i], "--prefill-tokens") == 0) {
            prefill_tokens = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--max-seqs") == 0) {
            max_seqs = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--shape") == 0 &&
                   (strcmp(argv[i + 1], "7b") == 0 || strcmp(argv[i + 1], "small") == 0)) {
            shape = argv[i + 1];
        } else {
            fprintf(stderr, "usage: gpu_judge [--samples N] [--mode fast|detailed|both] "
                            "[--prefill-tokens T] [--max-seqs S] [--shape 7b|small]\n");
            return 2;
        }
    }
    bool small = strcmp(shape, "small") == 0;
    if (engine_cuda_device_count() == 0) {
        printf("gpu_judge: no CUDA device: nothing to measure\n");
        return 0;
    }
    struct model_config mc;
    model_config_default(&mc); /* LLaMA-7B: 32 layers, 4096, 11008, 32 heads, 32000 pieces */
    if (small) { /* two layers of 512 (head_dim 64: the tensor-core prefill), prompts / 8 */
        mc.dim = 512;
        mc.n_layers = 2;
        mc.n_heads = mc.n_kv_heads = 8;
        mc.head_dim = 64;
        mc.n_ff = 1376;
        g_prompt_div = 8;
    }
    struct engine_config cfg;
    engine_config_default(&cfg);
    cfg.backend = ENGINE_BACKEND_CUDA;
    cfg.max_batch_tokens = prefill_tokens;
    cfg.max_outputs = 256;
    cfg.max_ctx = 1024;
    cfg.n_kv_blocks = 0; /* from free memory */
    double gemm = peer_gemm_tflops(prefill_tokens, mc.n_ff, mc.dim);
    double copy = peer_copy_gbs(small ? (size_t)16 << 20 : (size_t)2 << 30);
    printf("BENCH peer_gemm_bf16_tflops %.1f\nBENCH peer_d2d_copy_gbs %.0f\n", gemm, copy);
    struct engine_weight_src src = { &mc, NULL, NULL }; /* random weights, made on the device */
    void *ctx = NULL;
    char err[ERRSTR_LEN];
    double t0 = now_s();
    if (engine_backend_cuda_ops.init(&cfg, &src, &ctx, err, sizeof(err)) != 0) {
        fprintf(stderr, "gpu_judge: %s\n", err);
        return 1;
    }
    engine_backend_cuda_set_logits_to_host(ctx, false);
    cfg.n_kv_blocks = engine_backend_cuda_kv_blocks(ctx);
    printf("BENCH model_init_s %.1f\nBENCH kv_blocks %d\n", now_s() - t0, (int)cfg.n_kv_blocks);
    static const struct {
        const char *name;
        int32_t n_gen;
    } modes[] = { { "fast", 5 }, { "detailed", 100 } };
    int rc = 0;
    for (int k = 0; k < 2; k++) {
        if (strcmp(mode, "both") != 0 && strcmp(mode, modes[k].name) != 0) {
            continue;
        }
        struct run_stats st;
        if (run(ctx, &mc, &cfg, n_samples, modes[k].n_gen, max_seqs, &st) != 0) {
            rc = 1;
            break;
        }
        double pf = st.prefill_s > 0 ? st.prefill_flop / st.prefill_s / 1e12 : 0;
        double dbw = st.decode_s > 0 ? st.decode_bytes / st.decode_s / 1e9 : 0;
        printf("BENCH %s_samples %d\nBENCH %s_wall_s %.1f\nBENCH %s_samples_per_s %.1f\n",
               modes[k].name, n_samples, modes[k].name, st.wall_s, modes[k].name,
               n_samples / st.wall_s);
        printf("BENCH %s_prefill_tflops %.1f\nBENCH %s_prefill_vs_gemm %.2f\n", modes[k].name, pf,
               modes[k].name, gemm > 0 ? pf / gemm : 0);
        printf("BENCH %s_decode_gbs %.0f\nBENCH %s_decode_vs_copy %.2f\n", modes[k].name, dbw,
               modes[k].name, copy > 0 ? dbw / copy : 0);
        printf("BENCH %s_decode_steps %ld\nBENCH %s_decode_tokens %ld\n", modes[k].name,
               st.decode_steps, modes[k].name, st.decode_tokens);
    }
    engine_backend_cuda_ops.destroy(ctx);
    return rc;
}
#else
int main(void)
{
    printf("gpu_judge: built without CUDA: nothing to measure\n");
    return 0;
}
#endif
