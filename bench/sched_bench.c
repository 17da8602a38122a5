/* sched_bench.c - the scheduler on a judge-like workload, three ways in the same run:
 *   1. one request at a time (max_seqs 1);
 *   2. static batches of 16 (submit 16, run them all to the end, then the next 16);
 *   3. continuous batching (everything submitted, max_seqs sequences, a token budget per step).
 * Prompts of 300-700 tokens are built from the PandaLM test set (instruction, input and the two
 * responses in PandaLM's evaluation template, more samples appended until the drawn length is
 * reached); outputs are max_new_tokens tokens with EOS ignored, greedy.
 *
 * For each mode: requests/s, generated tokens/s, prompt tokens/s, steps, prefix hit rate and
 * CPU time / wall time (about the thread count when nothing else ran). Then the limit: OpenBLAS
 * sgemm GFLOP/s on the model's matmul shapes at 512 rows, measured with the engine's thread
 * count before and after the modes (the higher one counts), turned into the requests/s it allows
 * (matmul FLOPs of every prompt token, every fed generated token and every logits row, no credit
 * for the prefix cache), and each mode's rate as a fraction of it (the per-mode column uses the
 * first measurement). The last line is `continuous_vs_sequential: X.XX`.
 *
 * Usage: sched_bench --model DIR [--requests N] [--max-new-tokens M] [--threads T]
 *                    [--max-seqs S] [--budget B] [--modes seq,static,cont] [--data FILE]
 *                    [--seed S] [--trace FILE]
 * --trace writes one line per step: mode, tokens, prompt tokens, tokens sampled, requests
 * running before the step, step milliseconds. */
#include "bench/bench_util.h"
#include "common/json.h"
#include "common/util.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "scheduler/sched.h"

#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_DATA "tests/fixtures/pandalm/testset-v1.json"
#define STATIC_BATCH 16

/* CPU seconds of this process, all threads: CPU time / wall time near the thread count means
 * the machine was ours; well below it, someone else was running. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double sgemm_rate_for_model(const struct model_config *m)
{
    int Q = m->n_heads * m->head_dim, KV = m->n_kv_heads * m->head_dim, D = m->dim, F = m->n_ff;
    struct {
        int n, k, count;
    } shapes[] = { { Q, D, 1 }, { KV, D, 2 }, { D, Q, 1 }, { F, D, 2 }, { D, F, 1 } };
    double total_flop = 0, t_gemm = 0;
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        double g = sgemm_gflops(512, shapes[i].n, shapes[i].k, 1.0);
        double flop = 2.0 * 512 * shapes[i].n * shapes[i].k * shapes[i].count;
        total_flop += flop;
        t_gemm += flop / (g * 1e9);
    }
    return total_flop / t_gemm * 1e-9;
}

/* --- workload ------------------------------------------------------------------------------------
 */

struct prompt {
    int32_t *ids;
    int32_t n;
};

static void ids_append(int32_t **ids, int32_t *n, int32_t *cap, const int32_t *src, size_t n_src)
{
    if (*n + (int32_t)n_src > *cap) {
        *cap = (*n + (int32_t)n_src) * 2;
        *ids = realloc(*ids, (size_t)*cap * sizeof(**ids));
    }
    memcpy(*ids + *n, src, n_src * sizeof(*src));
    *n += (int32_t)n_src;
}

static int encode_append(const struct tok *t, const char *text, int32_t **ids, int32_t *n,
                         int32_t *cap)
{
    int32_t *enc = NULL;
    size_t n_enc = 0;
    if (tok_encode(t, text, strlen(text), false, &enc, &n_enc) != 0) {
        return -EINVAL;
    }
    ids_append(ids, n, cap, enc, n_enc);
    free(enc);
    return 0;
}

static const char *field(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

/* PandaLM's evaluation prompt around sample i, with samples i+1, i+2, ... appended until the
 * prompt has `len` tokens, then cut to exactly len (BOS and the closing header included). */
static int build_prompt(const struct tok *t, const json_t *set, size_t i, int32_t len,
                        struct prompt *out)
{
    static const char header[] =
        "Below are two responses for a given task. The task is defined by the Instruction with "
        "an Input that provides further context. Evaluate the responses and generate a "
        "reference answer for the task.\n\n";
    static const char tail[] = "\n\n### Evaluation:\n";
    int32_t *ids = NULL, n = 0, cap = 0;
    int32_t bos = tok_bos_id(t);
    if (bos >= 0) {
        ids_append(&ids, &n, &cap, &bos, 1);
    }
    int32_t *tail_ids = NULL, n_tail = 0, tail_cap = 0;
    if (encode_append(t, header, &ids, &n, &cap) != 0 ||
        encode_append(t, tail, &tail_ids, &n_tail, &tail_cap) != 0) {
        free(ids);
        free(tail_ids);
        return -EINVAL;
    }
    size_t n_set = json_array_size(set);
    for (size_t k = i; n < len - n_tail; k++) {
        const json_t *s = json_array_get(set, k % n_set);
        char *text = NULL;
        size_t text_len = 0;
        FILE *f = open_memstream(&text, &text_len);
        fprintf(f,
                "%s### Instruction:\n%s\n\n### Input:\n%s\n\n### Response 1:\n%s\n\n"
                "### Response 2:\n%s",
                k == i ? "" : "\n\n", field(s, "instruction"), field(s, "input"),
                field(s, "response1"), field(s, "response2"));
        fclose(f);
        int err = encode_append(t, text, &ids, &n, &cap);
        free(text);
        if (err) {
            free(ids);
            free(tail_ids);
            return err;
        }
    }
    n = len - n_tail;
    ids_append(&ids, &n, &cap, tail_ids, (size_t)n_tail);
    free(tail_ids);
    out->ids = ids;
    out->n = n;
    return 0;
}

/* --- modes
 * ----------------------------------------------------------------------------------------- */

enum mode { MODE_SEQUENTIAL, MODE_STATIC, MODE_CONTINUOUS };

static const char *const mode_names[] = { "one at a time", "static batches of 16",
                                          "continuous batching" };

struct run_result {
    double seconds;
    double cpu_seconds;
    int32_t n_done;
    uint64_t n_generated, n_prompt;
    struct sched_stats st;
    int32_t **outputs; /* [n_requests][max_new] generated ids */
};

static int run_mode(enum mode mode, struct engine *e, const struct tok *t,
                    const struct prompt *prompts, int32_t n_req, int32_t max_new, int32_t max_seqs,
                    int32_t budget, FILE *trace, struct run_result *res)
{
    struct sched_config cfg;
    sched_config_default(&cfg);
    cfg.max_batched_tokens = budget;
    cfg.max_seqs = mode == MODE_SEQUENTIAL ? 1 : mode == MODE_STATIC ? STATIC_BATCH : max_seqs;
    cfg.max_requests = n_req;
    struct sched *s = NULL;
    int err = sched_create(&cfg, e, t, &s);
    if (err) {
        fprintf(stderr, "sched_bench: sched_create: %s\n", strerror(-err));
        return err;
    }
    memset(res, 0, sizeof(*res));
    res->outputs = calloc((size_t)n_req, sizeof(*res->outputs));
    struct sched_request_params p;
    sched_request_params_default(&p);
    p.max_new_tokens = max_new;
    p.ignore_eos = true;
    int32_t group = mode == MODE_STATIC ? STATIC_BATCH : n_req;
    double t0 = now_s(), c0 = cpu_s();
    for (int32_t first = 0; first < n_req; first += group) {
        int32_t end = first + group < n_req ? first + group : n_req;
        for (int32_t i = first; i < end; i++) {
            p.tokens = prompts[i].ids;
            p.n_tokens = (size_t)prompts[i].n;
            p.user = (void *)(intptr_t)i;
            err = sched_submit(s, &p, NULL);
            if (err) {
                fprintf(stderr, "sched_bench: sched_submit: %s\n", strerror(-err));
                goto done;
            }
        }
        struct sched_completion c;
        for (;;) {
            struct sched_stats before;
            if (trace) {
                sched_stats(s, &before);
            }
            err = sched_step(s);
            if (trace && err == 0) {
                /* mode, tokens, prompt tokens, logits rows (samples), running, ms */
                struct sched_stats after;
                sched_stats(s, &after);
                fprintf(trace, "%d %d %d %d %d %.2f\n", (int)mode, (int)after.last_step_tokens,
                        (int)(after.n_prompt_tokens_forwarded - before.n_prompt_tokens_forwarded),
                        (int)(after.n_tokens_generated - before.n_tokens_generated),
                        (int)before.n_running, after.last_step_ms);
            }
            while (sched_poll(s, &c)) {
                intptr_t i = (intptr_t)c.user;
                res->outputs[i] = malloc((size_t)max_new * sizeof(int32_t));
                memcpy(res->outputs[i], c.tokens, (size_t)c.n_tokens * sizeof(int32_t));
                res->n_done++;
                res->n_generated += (uint64_t)c.n_tokens;
                res->n_prompt += (uint64_t)c.n_prompt_tokens;
            }
            if (err == -EAGAIN) {
                break;
            }
            if (err) {
                fprintf(stderr, "sched_bench: sched_step: %s\n", sched_errstr(s));
                goto done;
            }
        }
    }
    err = 0;
done:
    res->seconds = now_s() - t0;
    res->cpu_seconds = cpu_s() - c0;
    sched_stats(s, &res->st);
    sched_destroy(s);
    return err;
}

static void usage(void)
{
    fprintf(stderr, "usage: sched_bench --model DIR [--requests N] [--max-new-tokens M] "
                    "[--threads T] [--max-seqs S] [--budget B] [--modes seq,static,cont] "
                    "[--data FILE] [--seed S] [--trace FILE]\n");
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        { "model", required_argument, NULL, 'm' },
        { "requests", required_argument, NULL, 'n' },
        { "max-new-tokens", required_argument, NULL, 'M' },
        { "threads", required_argument, NULL, 't' },
        { "max-seqs", required_argument, NULL, 's' },
        { "budget", required_argument, NULL, 'b' },
        { "modes", required_argument, NULL, 'o' },
        { "data", required_argument, NULL, 'd' },
        { "seed", required_argument, NULL, 'S' },
        { "trace", required_argument, NULL, 'T' },
        { NULL, 0, NULL, 0 },
    };
    const char *model = NULL, *data = DEFAULT_DATA, *modes = "seq,static,cont";
    int32_t n_req = 200, max_new = 100, max_seqs = 32, budget = 512;
    int n_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t seed = 1;
    FILE *trace = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 'n':
            n_req = atoi(optarg);
            break;
        case 'M':
            max_new = atoi(optarg);
            break;
        case 't':
            n_threads = atoi(optarg);
            break;
        case 's':
            max_seqs = atoi(optarg);
            break;
        case 'b':
            budget = atoi(optarg);
            break;
        case 'o':
            modes = optarg;
            break;
        case 'd':
            data = optarg;
            break;
        case 'S':
            seed = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'T':
            trace = fopen(optarg, "w");
            if (!trace) {
                perror(optarg);
                return 1;
            }
            break;
        default:
            usage();
            return 2;
        }
    }
    if (!model || optind != argc || n_req < 1 || max_new < 1 || max_seqs < 1 || budget < 1) {
        usage();
        return 2;
    }
    char err[ERRSTR_LEN];
    struct tok *t = NULL;
    if (tok_load_dir(model, &t, err, sizeof(err)) != 0) {
        fprintf(stderr, "sched_bench: %s\n", err);
        return 1;
    }
    json_t *set = json_load_path(data, err, sizeof(err));
    if (!set || !json_is_array(set) || json_array_size(set) == 0) {
        fprintf(stderr, "sched_bench: %s\n", set ? "the data set is not a JSON array" : err);
        return 1;
    }
    struct prompt *prompts = calloc((size_t)n_req, sizeof(*prompts));
    int32_t max_prompt = 0;
    uint64_t total_prompt = 0;
    for (int32_t i = 0; i < n_req; i++) {
        seed = seed * 1664525u + 1013904223u;
        int32_t len = 300 + (int32_t)((seed >> 8) % 401);
        if (build_prompt(t, set, (size_t)i * 7, len, &prompts[i]) != 0) {
            fprintf(stderr, "sched_bench: cannot encode sample %d\n", (int)i);
            return 1;
        }
        max_prompt = prompts[i].n > max_prompt ? prompts[i].n : max_prompt;
        total_prompt += (uint64_t)prompts[i].n;
    }
    json_decref(set);

    struct engine_config ecfg;
    engine_config_default(&ecfg);
    ecfg.backend = ENGINE_BACKEND_CPU;
    ecfg.n_threads = n_threads;
    ecfg.max_batch_tokens = budget;
    ecfg.max_outputs = max_seqs > STATIC_BATCH ? max_seqs : STATIC_BATCH;
    ecfg.max_ctx = max_prompt + max_new;
    int32_t per_seq = (max_prompt + max_new + 15) / 16;
    ecfg.n_kv_blocks = per_seq * ecfg.max_outputs + 64; /* every sequence at full length, plus
                                                         * room for cached prefixes */
    struct engine *e = NULL;
    if (engine_open(model, NULL, &ecfg, &e, err, sizeof(err)) != 0) {
        fprintf(stderr, "sched_bench: %s\n", err);
        return 1;
    }
    const struct model_config *m = engine_model_config(e);
    int32_t Q = m->n_heads * m->head_dim, KV = m->n_kv_heads * m->head_dim;
    double layer_params = (double)Q * m->dim * 2 + (double)KV * m->dim * 2 + 3.0 * m->n_ff * m->dim;
    double flops_tok = 2.0 * m->n_layers * layer_params, flops_head = 2.0 * m->dim * m->n_vocab;
    openblas_set_num_threads(n_threads);
    double sgemm = sgemm_rate_for_model(m);
    /* matmul work of one average request: prompt and fed generated tokens through the layers,
     * one logits row per generated token */
    double flops_req =
        flops_tok * ((double)total_prompt / n_req + max_new - 1) + flops_head * max_new;
    double allowed = sgemm * 1e9 / flops_req;

    printf("model: %s  dim %d, layers %d, heads %d/%d, ffn %d, vocab %d\n", model, m->dim,
           m->n_layers, m->n_heads, m->n_kv_heads, m->n_ff, m->n_vocab);
    printf("workload: %d requests, prompts %.0f tokens on average (max %d) from %s, "
           "%d new tokens each (EOS ignored), greedy\n",
           (int)n_req, (double)total_prompt / n_req, (int)max_prompt, data, (int)max_new);
    printf("engine: %d threads, %d KV blocks; continuous: max_seqs %d, budget %d tokens/step\n",
           n_threads, (int)ecfg.n_kv_blocks, (int)max_seqs, (int)budget);
    printf("sgemm (OpenBLAS, %d threads, the model's shapes at 512 rows): %.1f GFLOP/s -> "
           "%.3f requests/s allowed\n",
           n_threads, sgemm, allowed);
    printf("%-22s %9s %10s %12s %12s %7s %9s %8s %8s %8s\n", "mode", "seconds", "requests/s",
           "gen tok/s", "prompt tok/s", "steps", "tok/step", "hit rate", "cpu/wall", "vs sgemm");

    struct run_result res[3];
    bool ran[3] = { false, false, false };
    const char *keys[3] = { "seq", "static", "cont" };
    for (int mode = 0; mode < 3; mode++) {
        if (!strstr(modes, keys[mode])) {
            continue;
        }
        if (run_mode((enum mode)mode, e, t, prompts, n_req, max_new, max_seqs, budget, trace,
                     &res[mode]) != 0) {
            return 1;
        }
        ran[mode] = true;
        const struct run_result *r = &res[mode];
        double rps = r->n_done / r->seconds;
        printf("%-22s %9.1f %10.3f %12.1f %12.1f %7llu %9.1f %8.2f %8.2f %8.2f\n", mode_names[mode],
               r->seconds, rps, r->n_generated / r->seconds, r->n_prompt / r->seconds,
               (unsigned long long)r->st.n_steps, r->st.mean_tokens_per_step, r->st.prefix_hit_rate,
               r->cpu_seconds / r->seconds, rps / allowed);
        fflush(stdout);
    }
    /* greedy outputs of the batched modes against one at a time (batch composition changes the
     * logits by ~1e-5, so a random-weight model may flip a near-tie now and then) */
    for (int mode = 1; mode < 3; mode++) {
        if (!ran[0] || !ran[mode]) {
            continue;
        }
        int same = 0;
        for (int32_t i = 0; i < n_req; i++) {
            same += res[0].outputs[i] && res[mode].outputs[i] &&
                    memcmp(res[0].outputs[i], res[mode].outputs[i],
                           (size_t)max_new * sizeof(int32_t)) == 0;
        }
        printf("%s: %d of %d outputs identical to one at a time\n", mode_names[mode], same,
               (int)n_req);
    }
    /* the limit again: the machine is shared, so the better of the two measurements is the
     * one the rates are held to */
    double sgemm_end = sgemm_rate_for_model(m);
    if (sgemm_end > sgemm) {
        allowed *= sgemm_end / sgemm;
    }
    printf("sgemm at the end: %.1f GFLOP/s; the ratios below use the higher of the two "
           "(%.3f requests/s allowed)\n",
           sgemm_end, allowed);
    if (ran[0]) {
        printf("sequential_vs_sgemm: %.2f\n", res[0].n_done / res[0].seconds / allowed);
    }
    if (ran[2]) {
        printf("continuous_vs_sgemm: %.2f\n", res[2].n_done / res[2].seconds / allowed);
    }
    if (ran[0] && ran[1]) {
        printf("static16_vs_sequential: %.2f\n", res[0].seconds / res[1].seconds);
    }
    if (ran[0] && ran[2]) {
        printf("continuous_vs_sequential: %.2f\n", res[0].seconds / res[2].seconds);
    }
    for (int mode = 0; mode < 3; mode++) {
        for (int32_t i = 0; ran[mode] && i < n_req; i++) {
            free(res[mode].outputs[i]);
        }
        if (ran[mode]) {
            free(res[mode].outputs);
        }
    }
    for (int32_t i = 0; i < n_req; i++) {
        free(prompts[i].ids);
    }
    free(prompts);
    if (trace) {
        fclose(trace);
    }
    engine_destroy(e);
    tok_destroy(t);
    return 0;
}
