/* ctl_run.c - judgectl run SPEC: a whole judge job in-process, no Redis. --dry-run writes the
 * rendered prompts (one JSON object per request: question_id, order, prompt) instead of judging.
 * Everything but the execution itself (ctl_run_execute) is the same code the daemon runs:
 * jobs/job_spec.c validates the spec, jobs/job_models.c resolves a model name through the
 * `models:` of a judged.yaml (--config), jobs/judge_job.c renders and collects. */
#include "cli/ctl.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "jobs/job.h"
#include "jobs/judge.h"
#include "scheduler/sched.h"
#include "scheduler/sched_judge.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double ctl_run_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define CTL_RUN_USAGE                                                                            \
    "usage: judgectl run SPEC [--dry-run] [-o FILE] [--config FILE] [--threads N]\n"             \
    "                 [--max-batch-tokens N] [--max-seqs N] [--context N] [--kv-mib N]\n"        \
    "                 [--device DEV] [--log-level LEVEL]\n"                                      \
    "--config: a judged.yaml whose models: resolve a model name in the spec's field 'model'\n"   \
    "(default $JUDGED_CONFIG); a directory in that field is used as it is.\n"                    \
    "--device: cpu (default), auto, cuda, cuda:N, or cuda:N+M... (one engine over those GPUs,\n" \
    "tensor parallel); without a GPU, auto and cuda run on the CPU and say so once.\n"

/* Engine and scheduler limits of a local run (command-line options). */
struct ctl_run_limits {
    int n_threads;            /* 0: every CPU */
    int32_t max_batch_tokens; /* engine batch and scheduler token budget */
    int32_t max_seqs;
    int32_t context;    /* 0: the model's max_position_embeddings */
    int32_t kv_mib;     /* KV pool budget */
    const char *device; /* engine_device_parse */
};

/* The model directory of a spec: its field 'model' when that is a directory (relative to the
 * spec), else the name looked up in config_path's models: as judged does (NULL: no
 * configuration). Prints the error naming the spec, the field and the configuration and returns
 * 1, or 0 with *dir (caller frees). */
static int ctl_run_model_dir(const struct job_spec *spec, const char *config_path, char **dir)
{
    if (spec->model_path) {
        *dir = xstrdup(spec->model_path);
        return 0;
    }
    if (!config_path) {
        fprintf(stderr,
                "judgectl run: %s: field 'model': '%s' is not a model directory (a model name "
                "needs --config judged.yaml or $JUDGED_CONFIG)\n",
                spec->spec_path, spec->model);
        return 1;
    }
    struct job_models models = { 0 };
    char errstr[ERRSTR_LEN];
    if (job_models_load(config_path, &models, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judgectl run: --config: %s\n", errstr);
        return 1;
    }
    const char *path = job_models_resolve(&models, spec->model);
    int rc = 0;
    if (path) {
        *dir = xstrdup(path);
    } else {
        fprintf(stderr,
                "judgectl run: %s: field 'model': '%s' is neither a model directory nor a "
                "model name in %s (models:",
                spec->spec_path, spec->model, config_path);
        for (int i = 0; i < models.n; i++) {
            fprintf(stderr, "%s %s", i ? "," : "", models.entries[i].name);
        }
        fprintf(stderr, "%s)\n", models.n ? "" : " none");
        rc = 1;
    }
    job_models_free(&models);
    return rc;
}

/* Runs every request of the job through one engine and scheduler on this machine, with the model
 * in model_dir, then finishes it into output_path (NULL: the spec's output_path, else stdout).
 * Returns the exit status. */
static int ctl_run_execute(const struct job_spec *spec, const char *model_dir,
                           const char *output_path, const struct ctl_run_limits *lim)
{
    char errstr[ERRSTR_LEN];
    struct tok *t = NULL;
    struct judge_job *job = NULL;
    struct engine *e = NULL;
    struct sched *s = NULL;
    struct judge_token_probs *probs = NULL;
    int rc = 1;
    double t0 = ctl_run_now_s();
    if (tok_load_dir(model_dir, &t, errstr, sizeof(errstr)) != 0 ||
        judge_job_create(spec, t, &job, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judgectl run: %s\n", errstr);
        goto done;
    }
    struct model_config mc;
    char *cfg_path = path_join(model_dir, "config.json");
    int cerr = model_config_load(cfg_path, &mc, errstr, sizeof(errstr));
    free(cfg_path);
    if (cerr != 0) {
        fprintf(stderr, "judgectl run: %s\n", errstr);
        goto done;
    }
    struct engine_config ecfg;
    engine_config_default(&ecfg);
    engine_device_parse(lim->device, &ecfg); /* checked with the options */
    ecfg.n_threads = lim->n_threads;
    ecfg.max_batch_tokens = lim->max_batch_tokens;
    ecfg.max_outputs = lim->max_seqs;
    ecfg.max_ctx = lim->context > 0 ? lim->context : mc.max_pos;
    ecfg.n_kv_blocks =
        engine_kv_blocks_for_mib(&mc, ecfg.kv_block_size, ecfg.max_ctx, lim->kv_mib, lim->max_seqs);
    if (engine_open(model_dir, NULL, &ecfg, &e, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judgectl run: %s\n", errstr);
        goto done;
    }
    struct sched_config scfg;
    sched_config_default(&scfg);
    scfg.max_batched_tokens = lim->max_batch_tokens;
    scfg.max_seqs = lim->max_seqs;
    if (sched_create(&scfg, e, t, &s) != 0) {
        fprintf(stderr, "judgectl run: cannot create the scheduler\n");
        goto done;
    }
    probs = calloc((size_t)engine_get_config(e)->max_ctx, sizeof(*probs));
    if (!probs) {
        fprintf(stderr, "judgectl run: out of memory\n");
        goto done;
    }
    size_t n = judge_job_n_requests(job), next = 0, n_done = 0;
    double t_start = ctl_run_now_s();
    log_info("job %s: %zu samples, %zu requests, KV pool of %d blocks", spec->spec_path,
             judge_job_n_samples(job), n, (int)ecfg.n_kv_blocks);
    while (n_done < n) {
        /* keep the scheduler fed; it says -EAGAIN when its request table is full */
        while (next < n) {
            bool queued;
            if (sched_judge_submit(s, job, next, 1, engine_get_config(e)->max_ctx, &queued) ==
                -EAGAIN) {
                break;
            }
            n_done += !queued; /* an error record already */
            next++;
        }
        int err = sched_step(s);
        if (err && err != -EAGAIN && err != -EIO) {
            fprintf(stderr, "judgectl run: scheduler step failed: %s\n", strerror(-err));
            goto done;
        }
        struct sched_completion c;
        while (sched_poll(s, &c)) {
            if (sched_judge_collect(job, &c, probs) != 0) {
                fprintf(stderr, "judgectl run: could not record request %zu\n",
                        (size_t)(uintptr_t)c.user);
                goto done;
            }
            n_done++;
        }
    }
    double t_run = ctl_run_now_s() - t_start;
    struct judge_summary sum;
    if (judge_job_finish(job, output_path, &sum, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judgectl run: %s\n", errstr);
        goto done;
    }
    struct engine_stats es;
    struct sched_stats ss;
    engine_stats_get(e, &es);
    sched_stats(s, &ss);
    fprintf(stderr,
            "judged %zu samples (%zu requests) in %.2f s: %.2f samples/s; %zu errors, %zu "
            "unparsed scores; answer 1 / tie / answer 2: %zu / %zu / %zu\n",
            sum.n_samples, sum.n_requests, t_run, (double)sum.n_samples / t_run, sum.n_errors,
            sum.n_parse_failed, sum.n_win1, sum.n_tie, sum.n_win2);
    fprintf(stderr,
            "engine: %.2f s in %llu forward passes (%.1f%% of the run outside them), %llu "
            "tokens, prefix cache hit rate %.1f%%, %llu preemptions; total %.2f s with loading\n",
            es.forward_s, (unsigned long long)es.n_forward,
            t_run > 0 ? 100.0 * (t_run - es.forward_s) / t_run : 0.0,
            (unsigned long long)es.n_tokens, 100.0 * ss.prefix_hit_rate,
            (unsigned long long)ss.n_preemptions, ctl_run_now_s() - t0);
    if (sum.has_metrics) {
        const struct eval_metrics *m = &sum.metrics;
        fprintf(stderr, "metrics (n = %zu): agreement %.2f, precision %.2f, recall %.2f, F1 %.2f\n",
                (size_t)m->n, 100.0 * m->accuracy, 100.0 * m->precision, 100.0 * m->recall,
                100.0 * m->f1);
    }
    rc = 0;
done:
    free(probs);
    sched_destroy(s);
    engine_destroy(e);
    judge_job_destroy(job);
    tok_destroy(t);
    return rc;
}

static int ctl_run_dry(const struct job_spec *spec, const char *output_path)
{
    char errstr[ERRSTR_LEN];
    struct judge_job *job = NULL;
    FILE *f = NULL;
    int rc = 1;
    if (judge_job_create(spec, NULL, &job, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judgectl run: %s\n", errstr);
        goto done;
    }
    bool to_stdout = !output_path || strcmp(output_path, "-") == 0;
    f = to_stdout ? stdout : fopen(output_path, "w");
    if (!f) {
        fprintf(stderr, "judgectl run: %s: %s\n", output_path, strerror(errno));
        goto done;
    }
    int err = judge_job_write_prompts(job, f);
    if (!to_stdout && fclose(f) != 0) {
        err = -EIO;
    }
    if (err) {
        fprintf(stderr, "judgectl run: %s: write failed\n", to_stdout ? "stdout" : output_path);
        goto done;
    }
    log_info("job %s: %zu prompts for %zu samples (mode %s)", spec->name, judge_job_n_requests(job),
             judge_job_n_samples(job), judge_mode_name(spec->mode));
    rc = 0;
done:
    judge_job_destroy(job);
    return rc;
}

int ctl_run(int argc, char **argv)
{
    static const struct option long_opts[] = {
        { "dry-run", no_argument, NULL, 'd' },
        { "output", required_argument, NULL, 'o' },
        { "log-level", required_argument, NULL, 'l' },
        { "help", no_argument, NULL, 'h' },
        { "threads", required_argument, NULL, 'T' },
        { "max-batch-tokens", required_argument, NULL, 'B' },
        { "max-seqs", required_argument, NULL, 'S' },
        { "context", required_argument, NULL, 'C' },
        { "kv-mib", required_argument, NULL, 'K' },
        { "config", required_argument, NULL, 'c' },
        { "device", required_argument, NULL, 'D' },
        { NULL, 0, NULL, 0 },
    };
    struct ctl_run_limits lim = { 0, 512, 64, 0, 512, "cpu" };
    const char *output_path = NULL, *config_path = getenv("JUDGED_CONFIG");
    bool dry_run = false;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "o:", long_opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dry_run = true;
            break;
        case 'o':
            output_path = optarg;
            break;
        case 'c':
            config_path = optarg;
            break;
        case 'D': {
            struct engine_config probe;
            engine_config_default(&probe);
            if (engine_device_parse(optarg, &probe) != 0) {
                fprintf(stderr,
                        "judgectl run: --device: '%s' is not cpu, auto, cuda, cuda:N or cuda:N+M\n",
                        optarg);
                return 2;
            }
            lim.device = optarg;
            break;
        }
        case 'l': {
            enum log_level level;
            if (log_level_parse(optarg, &level) != 0) {
                fprintf(stderr, "judgectl run: --log-level: unknown level '%s'\n", optarg);
                return 2;
            }
            log_level_set(level);
            break;
        }
        case 'h':
            fputs(CTL_RUN_USAGE, stdout);
            return 0;
        case 'T':
        case 'B':
        case 'S':
        case 'C':
        case 'K': {
            char *end;
            long v = strtol(optarg, &end, 10);
            long lo = c == 'T' || c == 'C' ? 0 : 1;
            if (*end || end == optarg || v < lo || v > (1L << 24)) {
                fprintf(stderr, "judgectl run: %s: '%s' is not a number in [%ld, %ld]\n",
                        argv[optind - 1], optarg, lo, 1L << 24);
                return 2;
            }
            if (c == 'T') {
                lim.n_threads = (int)v;
            } else if (c == 'B') {
                lim.max_batch_tokens = (int32_t)v;
            } else if (c == 'S') {
                lim.max_seqs = (int32_t)v;
            } else if (c == 'C') {
                lim.context = (int32_t)v;
            } else {
                lim.kv_mib = (int32_t)v;
            }
            break;
        }
        default:
            fputs(CTL_RUN_USAGE, stderr);
            return 2;
        }
    }
    if (optind + 1 != argc) {
        fputs(CTL_RUN_USAGE, stderr);
        return 2;
    }
    char errstr[ERRSTR_LEN];
    struct job_spec *spec = NULL;
    if (job_spec_load(argv[optind], &spec, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judgectl run: %s\n", errstr);
        return 1;
    }
    char *model_dir = NULL;
    int rc = 1;
    if (dry_run) {
        rc = ctl_run_dry(spec, output_path); /* prompts need no model */
    } else if (ctl_run_model_dir(spec, config_path && *config_path ? config_path : NULL,
                                 &model_dir) == 0) {
        rc = ctl_run_execute(spec, model_dir, output_path, &lim);
    }
    free(model_dir);
    job_spec_destroy(spec);
    return rc;
}
