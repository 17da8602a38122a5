/* ctl_generate.c - judgectl generate: one prompt through the engine, printing only the
 * continuation. Prefill in chunks of the engine's batch limit, then one token per step. */
#include "cli/ctl.h"
#include "common/log.h"
#include "common/util.h"
#include "engine/engine.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ctl_generate_opts {
    const char *model;
    const char *weights;
    const char *tokenizer;
    const char *prompt;
    const char *logits_path;
    const char *stop[8];
    int n_stop;
    int32_t max_new_tokens;
    int n_threads;
    bool no_bos;
    struct sampler_params sp;
};

static int ctl_parse_number(const char *opt, const char *arg, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (end == arg || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "judgectl generate: %s: '%s' is not a number in [%g, %g]\n", opt, arg, lo,
                hi);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

static int ctl_generate_parse(int argc, char **argv, struct ctl_generate_opts *o)
{
    static const struct option long_opts[] = {
        { "model", required_argument, NULL, 'm' },
        { "weights", required_argument, NULL, 'w' },
        { "tokenizer", required_argument, NULL, 'k' },
        { "prompt", required_argument, NULL, 'p' },
        { "max-new-tokens", required_argument, NULL, 'n' },
        { "temperature", required_argument, NULL, 't' },
        { "top-k", required_argument, NULL, 'K' },
        { "top-p", required_argument, NULL, 'P' },
        { "seed", required_argument, NULL, 's' },
        { "judgelm", no_argument, NULL, 'J' },
        { "stop", required_argument, NULL, 'S' },
        { "logits", required_argument, NULL, 'L' },
        { "threads", required_argument, NULL, 'T' },
        { "no-bos", no_argument, NULL, 'B' },
        { "log-level", required_argument, NULL, 'l' },
        { NULL, 0, NULL, 0 },
    };
    memset(o, 0, sizeof(*o));
    o->max_new_tokens = 256;
    sampler_params_greedy(&o->sp);
    optind = 1;
    int c;
    double v;
    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            o->model = optarg;
            break;
        case 'w':
            o->weights = optarg;
            break;
        case 'k':
            o->tokenizer = optarg;
            break;
        case 'p':
            o->prompt = optarg;
            break;
        case 'n':
            if (ctl_parse_number("--max-new-tokens", optarg, 0, 1 << 20, &v)) {
                return 2;
            }
            o->max_new_tokens = (int32_t)v;
            break;
        case 't':
            if (ctl_parse_number("--temperature", optarg, 0, 100, &v)) {
                return 2;
            }
            o->sp.temperature = (float)v;
            break;
        case 'K':
            if (ctl_parse_number("--top-k", optarg, 0, 1 << 24, &v)) {
                return 2;
            }
            o->sp.top_k = (int32_t)v;
            break;
        case 'P':
            if (ctl_parse_number("--top-p", optarg, 1e-6, 1, &v)) {
                return 2;
            }
            o->sp.top_p = (float)v;
            break;
        case 's':
            if (ctl_parse_number("--seed", optarg, 0, 9007199254740992.0, &v)) {
                return 2;
            }
            o->sp.seed = (uint64_t)v;
            break;
        case 'J':
            sampler_params_judgelm(&o->sp, o->sp.seed);
            break;
        case 'S':
            if (o->n_stop == (int)(sizeof(o->stop) / sizeof(o->stop[0]))) {
                fprintf(stderr, "judgectl generate: at most 8 --stop strings\n");
                return 2;
            }
            o->stop[o->n_stop++] = optarg;
            break;
        case 'L':
            o->logits_path = optarg;
            break;
        case 'T':
            if (ctl_parse_number("--threads", optarg, 0, 1024, &v)) {
                return 2;
            }
            o->n_threads = (int)v;
            break;
        case 'B':
            o->no_bos = true;
            break;
        case 'l': {
            enum log_level level;
            if (log_level_parse(optarg, &level) != 0) {
                fprintf(stderr, "judgectl generate: --log-level: unknown level '%s'\n", optarg);
                return 2;
            }
            log_level_set(level);
            break;
        }
        default:
            return 2;
        }
    }
    if (optind != argc || !o->model || !o->prompt) {
        fprintf(stderr, "usage: judgectl generate --model PATH --prompt TEXT [--max-new-tokens N] "
                        "[--temperature T] [--top-k K] [--top-p P] [--seed S] [--judgelm] "
                        "[--stop STR]... [--logits FILE] [--tokenizer FILE] [--weights FILE]\n");
        return 2;
    }
    if (!path_is_dir(o->model) && !o->tokenizer) {
        fprintf(stderr, "judgectl generate: %s is a llama2.c checkpoint: give --tokenizer FILE\n",
                o->model);
        return 2;
    }
    return 0;
}

/* Writes the logits that chose one generated token as a text line
 * "pos input_token logit[0] ... logit[V-1]": the position and token fed last, the layout of the
 * llama2.c reference files in tests/fixtures. */
static int ctl_logits_write(FILE *f, int32_t pos, int32_t token, const float *logits,
                            int32_t n_vocab)
{
    fprintf(f, "%" PRId32 " %" PRId32, pos, token);
    for (int32_t i = 0; i < n_vocab; i++) {
        fprintf(f, " %.9g", (double)logits[i]);
    }
    return fputc('\n', f) == EOF ? -EIO : 0;
}

/* Text of the continuation: decode(prompt + generated) minus decode(prompt), so the first
 * generated piece keeps its leading space. */
static int ctl_continuation(const struct tok *t, const int32_t *ids, size_t n_prompt, size_t n_all,
                            char **out, size_t *out_len)
{
    char *all = NULL, *prefix = NULL;
    size_t all_len, prefix_len;
    if (tok_decode(t, ids, n_all, &all, &all_len) != 0 ||
        tok_decode(t, ids, n_prompt, &prefix, &prefix_len) != 0) {
        free(all);
        free(prefix);
        return -EINVAL;
    }
    size_t skip = prefix_len <= all_len && memcmp(all, prefix, prefix_len) == 0 ? prefix_len : 0;
    memmove(all, all + skip, all_len - skip + 1);
    *out = all;
    *out_len = all_len - skip;
    free(prefix);
    return 0;
}

int ctl_generate(int argc, char **argv)
{
    struct ctl_generate_opts o;
    int rc = ctl_generate_parse(argc, argv, &o);
    if (rc) {
        return rc;
    }
    char errstr[ERRSTR_LEN];
    struct tok *t = NULL;
    struct engine *e = NULL;
    struct sampler_scratch *scratch = NULL;
    int32_t *prompt_ids = NULL, *ids = NULL, *blocks = NULL;
    float *logits = NULL;
    char *text = NULL;
    size_t n_prompt = 0, text_len = 0;
    FILE *logits_file = NULL;
    rc = 1;
    int err = o.tokenizer ? tok_load_file(o.tokenizer, &t, errstr, sizeof(errstr))
                          : tok_load_dir(o.model, &t, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "judgectl generate: %s\n", errstr);
        goto done;
    }
    if (tok_encode(t, o.prompt, strlen(o.prompt), !o.no_bos, &prompt_ids, &n_prompt) != 0 ||
        n_prompt == 0) {
        fprintf(stderr, "judgectl generate: the prompt encodes to no tokens\n");
        goto done;
    }
    struct engine_config ecfg;
    engine_config_default(&ecfg);
    ecfg.backend = ENGINE_BACKEND_CPU;
    ecfg.n_threads = o.n_threads;
    ecfg.max_outputs = 1;
    ecfg.n_kv_blocks = 0;
    if (engine_open(o.model, o.weights, &ecfg, &e, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judgectl generate: %s\n", errstr);
        goto done;
    }
    const struct engine_config *cfg = engine_get_config(e);
    int32_t n_vocab = engine_model_config(e)->n_vocab;
    int32_t max_ctx = cfg->max_ctx;
    if ((int64_t)n_prompt > max_ctx) {
        fprintf(stderr,
                "judgectl generate: the prompt has %zu tokens, more than the context of "
                "%" PRId32 "\n",
                n_prompt, max_ctx);
        goto done;
    }
    int32_t total = (int32_t)n_prompt + o.max_new_tokens;
    if (total > max_ctx) {
        log_warn("generation stops at the context length: %" PRId32 " tokens", max_ctx);
        total = max_ctx;
    }
    int32_t n_blocks = (max_ctx + cfg->kv_block_size - 1) / cfg->kv_block_size;
    if (n_blocks > cfg->n_kv_blocks) {
        n_blocks = cfg->n_kv_blocks;
    }
    blocks = malloc((size_t)n_blocks * sizeof(*blocks));
    ids = malloc((size_t)(total + 1) * sizeof(*ids));
    logits = malloc((size_t)n_vocab * sizeof(*logits));
    int32_t *pos = malloc((size_t)cfg->max_batch_tokens * sizeof(*pos));
    int32_t *seq = calloc((size_t)cfg->max_batch_tokens, sizeof(*seq));
    scratch = sampler_scratch_create(n_vocab);
    if (!blocks || !ids || !logits || !pos || !seq || !scratch) {
        free(pos);
        free(seq);
        fprintf(stderr, "judgectl generate: out of memory\n");
        goto done;
    }
    for (int32_t i = 0; i < n_blocks; i++) {
        blocks[i] = i;
    }
    if (o.logits_path && !(logits_file = fopen(o.logits_path, "w"))) {
        fprintf(stderr, "judgectl generate: %s: %s\n", o.logits_path, strerror(errno));
        free(pos);
        free(seq);
        goto done;
    }
    memcpy(ids, prompt_ids, n_prompt * sizeof(*ids));
    const int32_t *tables[1] = { blocks };
    int32_t n = 0, n_all = (int32_t)n_prompt;
    const char *finish = "length";
    while (n < n_all) {
        /* feed everything not yet in the cache, up to the batch limit */
        int32_t len = n_all - n < cfg->max_batch_tokens ? n_all - n : cfg->max_batch_tokens;
        for (int32_t i = 0; i < len; i++) {
            pos[i] = n + i;
        }
        int32_t row = len - 1;
        struct engine_batch b = {
            .n_tokens = len,
            .tokens = ids + n,
            .pos = pos,
            .seq = seq,
            .n_seqs = 1,
            .block_tables = tables,
            .n_blocks = &n_blocks,
            .n_outputs = 1,
            .output_rows = &row,
        };
        if (engine_forward(e, &b, logits) != 0) {
            fprintf(stderr, "judgectl generate: %s\n", engine_errstr(e));
            free(pos);
            free(seq);
            goto done;
        }
        n += len;
        if (n < n_all) {
            continue; /* still prefilling */
        }
        if (n_all >= total) {
            break;
        }
        int32_t step = n_all - (int32_t)n_prompt;
        int32_t next = sampler_sample(&o.sp, (uint64_t)step, logits, n_vocab, scratch);
        if (logits_file && ctl_logits_write(logits_file, n - 1, ids[n - 1], logits, n_vocab) != 0) {
            fprintf(stderr, "judgectl generate: %s: write failed\n", o.logits_path);
            free(pos);
            free(seq);
            goto done;
        }
        if (next == tok_eos_id(t)) {
            finish = "eos";
            break;
        }
        ids[n_all++] = next;
        if (o.n_stop) {
            free(text);
            text = NULL;
            if (ctl_continuation(t, ids, n_prompt, (size_t)n_all, &text, &text_len) == 0) {
                for (int k = 0; k < o.n_stop; k++) {
                    if (strstr(text, o.stop[k])) {
                        finish = "stop";
                    }
                }
            }
            if (strcmp(finish, "stop") == 0) {
                break;
            }
        }
        if (n_all >= total) {
            break;
        }
    }
    free(pos);
    free(seq);
    free(text);
    text = NULL;
    if (ctl_continuation(t, ids, n_prompt, (size_t)n_all, &text, &text_len) != 0) {
        fprintf(stderr, "judgectl generate: decoding failed\n");
        goto done;
    }
    if (strcmp(finish, "stop") == 0) {
        /* the continuation ends before the earliest stop string */
        for (int k = 0; k < o.n_stop; k++) {
            char *hit = strstr(text, o.stop[k]);
            if (hit && (size_t)(hit - text) < text_len) {
                text_len = (size_t)(hit - text);
            }
        }
    }
    if (fwrite(text, 1, text_len, stdout) != text_len || fflush(stdout) != 0) {
        goto done;
    }
    log_info("generated %" PRId32 " tokens after a %zu-token prompt, finish=%s",
             n_all - (int32_t)n_prompt, n_prompt, finish);
    rc = 0;
done:
    if (logits_file && fclose(logits_file) != 0) {
        rc = 1;
    }
    free(text);
    free(logits);
    free(ids);
    free(blocks);
    free(prompt_ids);
    sampler_scratch_destroy(scratch);
    engine_destroy(e);
    tok_destroy(t);
    return rc;
}
