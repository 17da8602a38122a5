/* ctl_local.c - judgectl commands that need no Redis: tokenize, detokenize, inspect. */
#include "cli/ctl.h"
#include "common/log.h"
#include "common/utf8.h"
#include "common/util.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Options shared by tokenize and detokenize. */
struct ctl_tok_opts {
    const char *model_dir;
    const char *tokenizer_file;
    bool no_bos;
};

static int ctl_tok_opts_parse(int argc, char **argv, bool allow_no_bos, struct ctl_tok_opts *o)
{
    static const struct option long_opts[] = {
        { "model", required_argument, NULL, 'm' },
        { "tokenizer", required_argument, NULL, 't' },
        { "no-bos", no_argument, NULL, 'n' },
        { "log-level", required_argument, NULL, 'l' },
        { NULL, 0, NULL, 0 },
    };
    memset(o, 0, sizeof(*o));
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            o->model_dir = optarg;
            break;
        case 't':
            o->tokenizer_file = optarg;
            break;
        case 'n':
            if (!allow_no_bos) {
                fprintf(stderr, "judgectl %s: --no-bos does not apply here\n", argv[0]);
                return 2;
            }
            o->no_bos = true;
            break;
        case 'l': {
            enum log_level level;
            if (log_level_parse(optarg, &level) != 0) {
                fprintf(stderr, "judgectl: --log-level: unknown level '%s'\n", optarg);
                return 2;
            }
            log_level_set(level);
            break;
        }
        default:
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "judgectl %s: unexpected argument '%s'\n", argv[0], argv[optind]);
        return 2;
    }
    if (!o->model_dir == !o->tokenizer_file) {
        fprintf(stderr, "judgectl %s: give exactly one of --model DIR or --tokenizer FILE\n",
                argv[0]);
        return 2;
    }
    return 0;
}

static int ctl_tok_open(const struct ctl_tok_opts *o, struct tok **out)
{
    char errstr[ERRSTR_LEN];
    int err = o->model_dir ? tok_load_dir(o->model_dir, out, errstr, sizeof(errstr))
                           : tok_load_file(o->tokenizer_file, out, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "judgectl: %s\n", errstr);
    }
    return err;
}

int ctl_tokenize(int argc, char **argv)
{
    struct ctl_tok_opts o;
    int rc = ctl_tok_opts_parse(argc, argv, true, &o);
    if (rc) {
        return rc;
    }
    char *text = NULL;
    size_t len = 0;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    struct tok *t = NULL;
    rc = 1;
    if (fd_read_all(STDIN_FILENO, &text, &len) != 0) {
        fprintf(stderr, "judgectl tokenize: cannot read stdin: %s\n", strerror(errno));
        goto done;
    }
    size_t bad = utf8_validate(text, len);
    if (bad != len) {
        fprintf(stderr, "judgectl tokenize: stdin: invalid UTF-8 at byte %zu (0x%02x)\n", bad,
                (unsigned char)text[bad]);
        goto done;
    }
    if (ctl_tok_open(&o, &t) != 0) {
        goto done;
    }
    if (tok_encode(t, text, len, !o.no_bos, &ids, &n_ids) != 0) {
        fprintf(stderr, "judgectl tokenize: encoding failed\n");
        goto done;
    }
    for (size_t i = 0; i < n_ids; i++) {
        printf(i ? " %" PRId32 : "%" PRId32, ids[i]);
    }
    printf("\n");
    rc = fflush(stdout) == 0 ? 0 : 1;
done:
    free(ids);
    free(text);
    tok_destroy(t);
    return rc;
}

/* Parses whitespace-separated decimal ids; errors name the position of the bad token. */
static int ctl_ids_parse(const char *text, int32_t **out, size_t *n_out)
{
    size_t cap = 64, n = 0;
    int32_t *ids = malloc(cap * sizeof(*ids));
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v') {
            p++;
        }
        if (!*p) {
            break;
        }
        const char *start = p;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        bool sep = *end == '\0' || *end == ' ' || *end == '\t' || *end == '\n' || *end == '\r' ||
                   *end == '\f' || *end == '\v';
        if (end == p || !sep || errno == ERANGE || v < 0 || v > INT32_MAX) {
            int tok_len = 0;
            while (start[tok_len] && start[tok_len] != ' ' && start[tok_len] != '\n' &&
                   tok_len < 40) {
                tok_len++;
            }
            fprintf(stderr,
                    "judgectl detokenize: stdin: token %zu (byte %zu): '%.*s' is not a "
                    "token id\n",
                    n + 1, (size_t)(start - text), tok_len, start);
            free(ids);
            return -EINVAL;
        }
        if (n == cap) {
            cap *= 2;
            ids = realloc(ids, cap * sizeof(*ids));
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    *out = ids;
    *n_out = n;
    return 0;
}

int ctl_detokenize(int argc, char **argv)
{
    struct ctl_tok_opts o;
    int rc = ctl_tok_opts_parse(argc, argv, false, &o);
    if (rc) {
        return rc;
    }
    char *input = NULL, *text = NULL;
    size_t len = 0, text_len = 0, n_ids = 0;
    int32_t *ids = NULL;
    struct tok *t = NULL;
    rc = 1;
    if (fd_read_all(STDIN_FILENO, &input, &len) != 0) {
        fprintf(stderr, "judgectl detokenize: cannot read stdin: %s\n", strerror(errno));
        goto done;
    }
    if (ctl_ids_parse(input, &ids, &n_ids) != 0 || ctl_tok_open(&o, &t) != 0) {
        goto done;
    }
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] >= tok_n_vocab(t)) {
            fprintf(stderr,
                    "judgectl detokenize: stdin: token %zu: id %" PRId32
                    " is outside the vocabulary of %" PRId32 " pieces\n",
                    i + 1, ids[i], tok_n_vocab(t));
            goto done;
        }
    }
    if (tok_decode(t, ids, n_ids, &text, &text_len) != 0) {
        fprintf(stderr, "judgectl detokenize: decoding failed\n");
        goto done;
    }
    if (fwrite(text, 1, text_len, stdout) != text_len || fflush(stdout) != 0) {
        goto done;
    }
    rc = 0;
done:
    free(text);
    free(ids);
    free(input);
    tok_destroy(t);
    return rc;
}

static void ctl_print_shape(const struct model_tensor *t, char *out, size_t n)
{
    size_t used = (size_t)snprintf(out, n, "[");
    for (int d = 0; d < t->n_dims && used < n; d++) {
        used += (size_t)snprintf(out + used, n - used, d ? ", %" PRId64 : "%" PRId64, t->shape[d]);
    }
    if (used < n) {
        snprintf(out + used, n - used, "]");
    }
}

static void ctl_problem_print(void *user, const char *msg)
{
    (void)user;
    printf("problem: %s\n", msg);
}

int ctl_inspect(int argc, char **argv)
{
    static const struct option long_opts[] = {
        { "weights", required_argument, NULL, 'w' },
        { NULL, 0, NULL, 0 },
    };
    const char *weights_file = NULL;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        if (c != 'w') {
            return 2;
        }
        weights_file = optarg;
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "usage: judgectl inspect DIR [--weights FILE]\n");
        return 2;
    }
    const char *dir = argv[optind];
    char errstr[ERRSTR_LEN];
    char *config_path = path_join(dir, "config.json");
    struct model_config cfg;
    struct model_weights *w = NULL;
    struct tok *t = NULL;
    int n_problems = 0;
    printf("model: %s\n", dir);
    if (model_config_load(config_path, &cfg, errstr, sizeof(errstr)) != 0) {
        printf("problem: %s\n", errstr);
        n_problems++;
    } else {
        printf("config: vocab_size=%" PRId32 " hidden_size=%" PRId32 " intermediate_size=%" PRId32
               " num_hidden_layers=%" PRId32 " num_attention_heads=%" PRId32
               " num_key_value_heads=%" PRId32 " head_dim=%" PRId32
               " max_position_embeddings=%" PRId32 " rms_norm_eps=%g rope_theta=%g"
               " tie_word_embeddings=%s bos_token_id=%" PRId32 " eos_token_id=%" PRId32
               " torch_dtype=%s\n",
               cfg.n_vocab, cfg.dim, cfg.n_ff, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads,
               cfg.head_dim, cfg.max_pos, (double)cfg.rms_eps, (double)cfg.rope_theta,
               cfg.tie_embeddings ? "true" : "false", cfg.bos_id, cfg.eos_id,
               cfg.torch_dtype[0] ? cfg.torch_dtype : "(unset)");
    }
    if (model_weights_open(dir, weights_file, &w, errstr, sizeof(errstr)) != 0) {
        printf("problem: %s\n", errstr);
        n_problems++;
    } else {
        size_t n = model_weights_count(w);
        int64_t n_params = 0;
        size_t n_bytes = 0;
        for (size_t i = 0; i < n; i++) {
            n_params += model_weights_at(w, i)->n_elems;
            n_bytes += model_weights_at(w, i)->n_bytes;
        }
        printf("weights: %s, %zu tensors, %" PRId64 " parameters, %.2f MiB\n",
               model_weights_format(w), n, n_params, (double)n_bytes / (1024.0 * 1024.0));
        for (size_t i = 0; i < n; i++) {
            const struct model_tensor *ts = model_weights_at(w, i);
            char shape[96];
            ctl_print_shape(ts, shape, sizeof(shape));
            printf("  %-52s %-4s %s\n", ts->name, model_dtype_name(ts->dtype), shape);
        }
        if (n_problems == 0) {
            if (weights_file) {
                /* an explicitly chosen file (model.f16.safetensors beside float32 weights) need
                 * not be in config.json's torch_dtype, as model_open also accepts */
                cfg.torch_dtype[0] = '\0';
            }
            n_problems += model_check(&cfg, w, ctl_problem_print, NULL);
        }
    }
    char *spm_path = path_join(dir, "tokenizer.model");
    char *json_path = path_join(dir, "tokenizer.json");
    bool has_tokenizer = path_is_file(spm_path) || path_is_file(json_path);
    free(spm_path);
    free(json_path);
    if (!has_tokenizer) {
        printf("tokenizer: none (no tokenizer.model or tokenizer.json)\n");
    } else if (tok_load_dir(dir, &t, errstr, sizeof(errstr)) != 0) {
        printf("problem: %s\n", errstr);
        n_problems++;
    } else {
        printf("tokenizer: %" PRId32 " pieces, bos=%" PRId32 " eos=%" PRId32 " unk=%" PRId32 "\n",
               tok_n_vocab(t), tok_bos_id(t), tok_eos_id(t), tok_unk_id(t));
        if (n_problems == 0 && tok_n_vocab(t) > cfg.n_vocab) {
            printf("problem: tokenizer: %" PRId32 " pieces but config.json vocab_size is %" PRId32
                   "\n",
                   tok_n_vocab(t), cfg.n_vocab);
            n_problems++;
        }
    }
    if (n_problems) {
        printf("check: FAILED, %d problem%s\n", n_problems, n_problems == 1 ? "" : "s");
    } else {
        printf("check: OK, complete and consistent\n");
    }
    free(config_path);
    model_weights_destroy(w);
    tok_destroy(t);
    return n_problems ? 1 : 0;
}
