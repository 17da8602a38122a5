/* ctl_metrics.c - judgectl metrics: JudgeLM's metrics of a judge output file against labels
 * (see jobs/eval.h for the formats and the matching by question_id). `judgectl metrics SID`
 * computes the same for a sweep in Redis (ctl_status.c). */
#include "cli/ctl.h"
#include "common/util.h"
#include "jobs/eval.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CTL_METRICS_USAGE                                                            \
    "usage: judgectl metrics --pred FILE --labels FILE [--reversed FILE] [--json]\n" \
    "       judgectl metrics SID [--json] [--partial] [--redis URL] ...\n"

int ctl_metrics(int argc, char **argv)
{
    if (argc >= 2 && argv[1][0] != '-') {
        return ctl_metrics_sweep(argc, argv); /* judgectl metrics SID: a sweep in Redis */
    }
    static const struct option long_opts[] = {
        { "pred", required_argument, NULL, 'p' },     { "labels", required_argument, NULL, 'l' },
        { "reversed", required_argument, NULL, 'r' }, { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },           { NULL, 0, NULL, 0 },
    };
    const char *pred_path = NULL, *labels_path = NULL, *reversed_path = NULL;
    bool as_json = false;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            pred_path = optarg;
            break;
        case 'l':
            labels_path = optarg;
            break;
        case 'r':
            reversed_path = optarg;
            break;
        case 'j':
            as_json = true;
            break;
        case 'h':
            fputs(CTL_METRICS_USAGE, stdout);
            return 0;
        default:
            fputs(CTL_METRICS_USAGE, stderr);
            return 2;
        }
    }
    if (optind != argc || !pred_path || !labels_path) {
        fputs(CTL_METRICS_USAGE, stderr);
        return 2;
    }
    char errstr[ERRSTR_LEN];
    struct eval_labels *labels = NULL;
    struct eval_preds *pred = NULL, *reversed = NULL;
    struct eval_metrics m;
    int rc = 1;
    if (eval_labels_load(labels_path, &labels, errstr, sizeof(errstr)) != 0 ||
        eval_preds_load(pred_path, &pred, errstr, sizeof(errstr)) != 0 ||
        (reversed_path && eval_preds_load(reversed_path, &reversed, errstr, sizeof(errstr)) != 0) ||
        eval_metrics_from_files(labels, pred, reversed, &m, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judgectl metrics: %s\n", errstr);
        goto done;
    }
    if (as_json) {
        json_t *o = eval_metrics_json(&m);
        int err = json_dumpf(o, stdout, JSON_REAL_PRECISION(12));
        json_decref(o);
        if (err != 0 || fputc('\n', stdout) == EOF) {
            goto done;
        }
    } else if (eval_metrics_print(stdout, &m) != 0) {
        goto done;
    }
    rc = fflush(stdout) == 0 ? 0 : 1;
done:
    eval_labels_destroy(labels);
    eval_preds_destroy(pred);
    eval_preds_destroy(reversed);
    return rc;
}
