/* ctl_run.c - judgectl run SPEC: a whole judge job in-process, no Redis. --dry-run writes the
 * rendered prompts (one JSON object per request: question_id, order, prompt) instead of judging.
 * Everything but the execution itself (ctl_run_execute) is the same code the daemon runs:
 * jobs/job_spec.c validates the spec, jobs/judge_job.c renders and collects. */
#include "cli/ctl.h"
#include "common/log.h"
#include "common/util.h"
#include "jobs/job.h"
#include "jobs/judge.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CTL_RUN_USAGE "usage: judgectl run SPEC [--dry-run] [-o FILE] [--log-level LEVEL]\n"

/* Runs every request of the job through the scheduler and finishes it into output_path (NULL:
 * the spec's output_path, else stdout). Returns the exit status. */
static int ctl_run_execute(const struct job_spec *spec, const char *output_path)
{
    (void)output_path;
    fprintf(stderr,
            "judgectl run: %s: executing judge jobs is not wired yet (the scheduler is not "
            "connected); use --dry-run to render the prompts\n",
            spec->spec_path);
    return 1;
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
        { NULL, 0, NULL, 0 },
    };
    const char *output_path = NULL;
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
    int rc = dry_run ? ctl_run_dry(spec, output_path) : ctl_run_execute(spec, output_path);
    job_spec_destroy(spec);
    return rc;
}
