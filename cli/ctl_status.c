/* ctl_status.c - judgectl status, results and metrics of sweeps in Redis: a table of recent
 * sweeps or one sweep's details; its merged results in JudgeLM's JSONL (byte-identical to what
 * `judgectl run` writes); its metrics recomputed from those results and the stored labels. */
#include "cli/ctl.h"
#include "cli/ctl_impl.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "jobs/eval.h"
#include "jobs/judge.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define CTL_STATUS_USAGE                                                                 \
    "usage: judgectl status [SID] [--limit N] [--json] " CTL_REDIS_USAGE "\n"            \
    "Without SID, the most recent sweeps (--limit, default 20); with SID its details,\n" \
    "failed shards with reasons, and running shards with worker and progress.\n"

static const char *ctl_meta_str(const struct ctl_sweep *sw, const char *key)
{
    const char *s = json_string_value(json_object_get(sw->meta, key));
    return s ? s : "-";
}

static json_t *ctl_sweep_json(const struct ctl_sweep *sw)
{
    json_t *o = json_object();
    json_object_set_new(o, "sweep", json_string(sw->sid));
    json_object_set_new(o, "state", json_string(sw->state));
    json_object_set_new(o, "expected", json_integer(sw->expected));
    json_object_set_new(o, "ok", json_integer(sw->ok));
    json_object_set_new(o, "failed", json_integer(sw->failed));
    json_object_set_new(o, "n_samples", json_integer(sw->n_samples));
    json_object_set_new(o, "created_ms", json_integer(sw->created_ms));
    json_object_set_new(o, "finished_ms",
                        sw->finished_ms ? json_integer(sw->finished_ms) : json_null());
    json_object_set(o, "meta", sw->meta);
    json_object_set_new(o, "agg_job", *sw->agg_job ? json_string(sw->agg_job) : json_null());
    json_error_t jerr;
    json_t *agg = *sw->agg ? json_loads(sw->agg, 0, &jerr) : NULL;
    json_object_set_new(o, "agg", agg ? agg : *sw->agg ? json_string(sw->agg) : json_null());
    json_object_set_new(o, "schedule", *sw->schedule ? json_string(sw->schedule) : json_null());
    json_object_set_new(o, "retention_ms", json_integer(sw->retention_ms));
    json_object_set_new(o, "expires_ms",
                        sw->expires_ms ? json_integer(sw->expires_ms) : json_null());
    return o;
}

static int ctl_status_list(struct gq *g, int64_t limit, bool as_json)
{
    char *key = ctl_key(g, "sweeps");
    char stop[32];
    snprintf(stop, sizeof(stop), "%" PRId64, limit - 1);
    struct gq_reply z = { 0 };
    json_t *list = json_array();
    int rc = 1;
    if (ctl_cmd(g, &z, 4, "ZREVRANGE", key, "0", stop) != 0) {
        fprintf(stderr, "judgectl status: %s\n", gq_errstr(g));
        goto done;
    }
    int64_t now = ctl_now_ms(g);
    if (!as_json) {
        printf("%-48s %-11s %17s %9s %6s\n", "SWEEP", "STATE", "OK/FAILED/SHARDS", "SAMPLES",
               "AGE");
    }
    for (size_t i = 0; i < z.n; i++) {
        struct ctl_sweep sw;
        int err = ctl_sweep_load(g, z.str[i], &sw);
        if (err == -ENOENT) {
            continue; /* removed meanwhile */
        }
        if (err) {
            fprintf(stderr, "judgectl status: %s\n", gq_errstr(g));
            goto done;
        }
        if (as_json) {
            json_array_append_new(list, ctl_sweep_json(&sw));
        } else {
            char shards[64], age[32];
            snprintf(shards, sizeof(shards), "%" PRId64 "/%" PRId64 "/%" PRId64, sw.ok, sw.failed,
                     sw.expected);
            ctl_fmt_age(now - sw.created_ms, age, sizeof(age));
            printf("%-48s %-11s %17s %9" PRId64 " %6s\n", sw.sid, sw.state, shards, sw.n_samples,
                   age);
        }
        ctl_sweep_free(&sw);
    }
    rc = as_json ? ctl_print_json(list) : fflush(stdout) == 0 ? 0 : 1;
done:
    json_decref(list);
    gq_reply_free(&z);
    free(key);
    return rc;
}

/* One sweep: its hash, failed shards, and the state of every shard without an outcome. */
static int ctl_status_sweep(struct gq *g, const char *sid, bool as_json)
{
    struct ctl_sweep sw;
    int err = ctl_sweep_load(g, sid, &sw);
    if (err) {
        if (err == -ENOENT) {
            fprintf(stderr, "judgectl status: no sweep named '%s'\n", sid);
        } else {
            fprintf(stderr, "judgectl status: %s\n", gq_errstr(g));
        }
        return 1;
    }
    char *term_key = ctl_key(g, "sweep:%s:term", sid), *err_key = ctl_key(g, "sweep:%s:err", sid);
    struct gq_reply term = { 0 }, errs = { 0 };
    json_t *o = ctl_sweep_json(&sw), *failed = json_array(), *running = json_array();
    int64_t n_queued = 0, n_delayed = 0, n_running = 0, n_other = 0;
    int rc = 1;
    if (ctl_cmd(g, &term, 2, "GET", term_key) != 0 || ctl_hash_read(g, err_key, &errs) != 0) {
        fprintf(stderr, "judgectl status: %s\n", gq_errstr(g));
        goto done;
    }
    for (size_t i = 0; i + 1 < errs.n; i += 2) {
        json_t *e = json_object();
        json_object_set_new(e, "shard", json_integer(strtoll(errs.str[i], NULL, 10)));
        json_object_set_new(e, "reason", json_string(errs.str[i + 1]));
        json_array_append_new(failed, e);
    }
    /* shards without an outcome: queued, delayed (retry backoff) or running */
    for (int64_t i = 0; i < sw.expected && strcmp(sw.state, "cancelled") != 0; i++) {
        if (ctl_bit(&term, i)) {
            continue;
        }
        char *jkey = ctl_key(g, "job:%s:%" PRId64, sid, i);
        struct gq_reply j = { 0 };
        err = ctl_cmd(g, &j, 7, "HMGET", jkey, "state", "owner", "progress", "attempts",
                      "started_ms");
        free(jkey);
        if (err || j.n != 5) {
            gq_reply_free(&j);
            fprintf(stderr, "judgectl status: %s\n", gq_errstr(g));
            goto done;
        }
        if (strcmp(j.str[0], "running") == 0) {
            n_running++;
            json_t *e = json_object();
            json_object_set_new(e, "shard", json_integer(i));
            json_object_set_new(e, "owner", json_string(j.str[1]));
            json_object_set_new(e, "progress", json_string(j.str[2]));
            json_object_set_new(e, "attempts", json_integer(strtoll(j.str[3], NULL, 10)));
            json_object_set_new(e, "started_ms", json_integer(strtoll(j.str[4], NULL, 10)));
            json_array_append_new(running, e);
        } else if (strcmp(j.str[0], "queued") == 0) {
            n_queued++;
        } else if (strcmp(j.str[0], "delayed") == 0) {
            n_delayed++;
        } else {
            n_other++; /* not enqueued yet (an open sweep), or its hash expired */
        }
        gq_reply_free(&j);
    }
    json_object_set_new(o, "queued", json_integer(n_queued));
    json_object_set_new(o, "delayed", json_integer(n_delayed));
    json_object_set_new(o, "running", running);
    json_object_set_new(o, "failed_shards", failed);
    running = failed = NULL;
    if (as_json) {
        rc = ctl_print_json(o);
        goto done;
    }
    int64_t now = ctl_now_ms(g);
    char when[32], age[32];
    ctl_fmt_utc(sw.created_ms, when, sizeof(when));
    ctl_fmt_age(now - sw.created_ms, age, sizeof(age));
    printf("sweep    %s\nstate    %s\n", sid, sw.state);
    printf("spec     %s: model %s, mode %s, swap %s, output %s, queue %s\n",
           ctl_meta_str(&sw, "name"), ctl_meta_str(&sw, "model"), ctl_meta_str(&sw, "mode"),
           ctl_meta_str(&sw, "swap"), ctl_meta_str(&sw, "output"), ctl_meta_str(&sw, "queue"));
    printf("created  %s (%s ago)", when, age);
    if (sw.finished_ms) {
        ctl_fmt_utc(sw.finished_ms, when, sizeof(when));
        printf(", finished %s", when);
    }
    if (*sw.schedule) {
        printf(", by schedule %s", sw.schedule);
    }
    putchar('\n');
    if (sw.expires_ms) {
        char in[32], keep[32];
        ctl_fmt_utc(sw.expires_ms, when, sizeof(when));
        ctl_fmt_age(sw.expires_ms - now, in, sizeof(in));
        ctl_fmt_age(sw.retention_ms, keep, sizeof(keep));
        printf("expires  %s (in %s; kept %s once finished)\n", when, in, keep);
    } else if (sw.retention_ms) {
        char keep[32];
        ctl_fmt_age(sw.retention_ms, keep, sizeof(keep));
        printf("expires  %s after it finishes\n", keep);
    } else {
        printf("expires  never (judgectl purge deletes it)\n");
    }
    printf("samples  %" PRId64 " in shards of %" PRId64 "\n", sw.n_samples, sw.shard_size);
    printf("shards   %" PRId64 " ok, %" PRId64 " failed, %" PRId64 " running, %" PRId64
           " queued, %" PRId64 " retrying",
           sw.ok, sw.failed, n_running, n_queued, n_delayed);
    if (n_other) {
        printf(", %" PRId64 " not enqueued", n_other);
    }
    printf(" of %" PRId64 "\n", sw.expected);
    if (*sw.agg_job) {
        printf("aggregate %s%s\n", sw.agg_job,
               *sw.agg ? " (metrics stored: judgectl metrics SID)" : "");
    }
    json_t *fl = json_object_get(o, "failed_shards"), *rl = json_object_get(o, "running");
    if (json_array_size(fl)) {
        printf("failed shards:\n");
        for (size_t i = 0; i < json_array_size(fl); i++) {
            json_t *e = json_array_get(fl, i);
            printf("  %6" JSON_INTEGER_FORMAT "  %s\n",
                   json_integer_value(json_object_get(e, "shard")),
                   json_string_value(json_object_get(e, "reason")));
        }
    }
    if (json_array_size(rl)) {
        printf("running shards:\n");
        for (size_t i = 0; i < json_array_size(rl); i++) {
            json_t *e = json_array_get(rl, i);
            const char *prog = json_string_value(json_object_get(e, "progress"));
            printf("  %6" JSON_INTEGER_FORMAT "  %-32s progress %-12s attempt %" JSON_INTEGER_FORMAT
                   "\n",
                   json_integer_value(json_object_get(e, "shard")),
                   json_string_value(json_object_get(e, "owner")), *prog ? prog : "-",
                   json_integer_value(json_object_get(e, "attempts")));
        }
    }
    rc = fflush(stdout) == 0 ? 0 : 1;
done:
    json_decref(o);
    json_decref(failed);
    json_decref(running);
    gq_reply_free(&term);
    gq_reply_free(&errs);
    free(term_key);
    free(err_key);
    ctl_sweep_free(&sw);
    return rc;
}

int ctl_status(int argc, char **argv)
{
    struct ctl_redis ro;
    ctl_redis_init(&ro);
    bool as_json = false;
    const char *limit_arg = NULL;
    const struct ctl_opt opts[] = { { "json", 0, &as_json, NULL },
                                    { "limit", 0, NULL, &limit_arg } };
    int first, rc = ctl_args_parse(CTL_STATUS_USAGE, argc, argv, &ro, opts, 2, 0, 1, &first);
    if (rc >= 0) {
        return rc;
    }
    int64_t limit = 20;
    if (limit_arg && (rc = ctl_int_arg("status", "--limit", limit_arg, 1, 100000, &limit))) {
        return rc;
    }
    struct gq *g;
    if (ctl_redis_connect(&ro, "status", &g) != 0) {
        return 1;
    }
    rc = first < argc ? ctl_status_sweep(g, argv[first], as_json)
                      : ctl_status_list(g, limit, as_json);
    gq_destroy(g);
    return rc;
}

/* Loads a sweep for results or metrics: refuses (1) when it is missing, or incomplete without
 * partial. Lists failed shards on stderr. */
static int ctl_sweep_for_results(struct gq *g, const char *cmd, const char *sid, bool partial,
                                 struct ctl_sweep *sw)
{
    int err = ctl_sweep_load(g, sid, sw);
    if (err) {
        if (err == -ENOENT) {
            fprintf(stderr, "judgectl %s: no sweep named '%s'\n", cmd, sid);
        } else {
            fprintf(stderr, "judgectl %s: %s\n", cmd, gq_errstr(g));
        }
        return 1;
    }
    if (sw->ok == sw->expected) {
        return 0;
    }
    char *err_key = ctl_key(g, "sweep:%s:err", sid);
    struct gq_reply errs = { 0 };
    if (ctl_hash_read(g, err_key, &errs) == 0) {
        for (size_t i = 0; i + 1 < errs.n; i += 2) {
            fprintf(stderr, "judgectl %s: sweep %s: shard %s failed: %s\n", cmd, sid, errs.str[i],
                    errs.str[i + 1]);
        }
    }
    gq_reply_free(&errs);
    free(err_key);
    int64_t pending = sw->expected - sw->ok - sw->failed;
    if (!partial) {
        fprintf(stderr,
                "judgectl %s: sweep %s is not complete (state %s: %" PRId64 " of %" PRId64
                " shards have results, %" PRId64 " failed, %" PRId64
                " pending); --partial uses the results there are\n",
                cmd, sid, sw->state, sw->ok, sw->expected, sw->failed, pending);
        ctl_sweep_free(sw);
        return 1;
    }
    fprintf(stderr,
            "judgectl %s: sweep %s: partial: %" PRId64 " of %" PRId64 " shards (%" PRId64
            " failed, %" PRId64 " pending)\n",
            cmd, sid, sw->ok, sw->expected, sw->failed, pending);
    return 0;
}

#define CTL_RESULTS_USAGE                                                             \
    "usage: judgectl results SID [-o FILE] [--partial] " CTL_REDIS_USAGE "\n"         \
    "Writes the sweep's judgments as JSONL in JudgeLM's output format, sorted by\n"   \
    "question_id (as judgectl run writes them); refuses an incomplete sweep unless\n" \
    "--partial.\n"

int ctl_results(int argc, char **argv)
{
    struct ctl_redis ro;
    ctl_redis_init(&ro);
    bool partial = false;
    const char *out_path = NULL;
    const struct ctl_opt opts[] = { { "partial", 0, &partial, NULL },
                                    { "output", 'o', NULL, &out_path } };
    int first, rc = ctl_args_parse(CTL_RESULTS_USAGE, argc, argv, &ro, opts, 2, 1, 1, &first);
    if (rc >= 0) {
        return rc;
    }
    struct gq *g;
    if (ctl_redis_connect(&ro, "results", &g) != 0) {
        return 1;
    }
    struct ctl_sweep sw;
    if (ctl_sweep_for_results(g, "results", argv[first], partial, &sw) != 0) {
        gq_destroy(g);
        return 1;
    }
    bool to_stdout = !out_path || strcmp(out_path, "-") == 0;
    FILE *f = to_stdout ? stdout : fopen(out_path, "w");
    size_t n = 0;
    rc = 1;
    if (!f) {
        fprintf(stderr, "judgectl results: %s: %s\n", out_path, strerror(errno));
    } else {
        rc = ctl_sweep_results(g, "results", &sw, f, &n);
        if ((to_stdout ? fflush(f) : fclose(f)) != 0 && rc == 0) {
            fprintf(stderr, "judgectl results: %s: write failed\n",
                    to_stdout ? "stdout" : out_path);
            rc = 1;
        }
        if (rc == 0 && !to_stdout) {
            fprintf(stderr, "judgectl results: %zu records written to %s\n", n, out_path);
        }
    }
    ctl_sweep_free(&sw);
    gq_destroy(g);
    return rc;
}

/* The labels stored with a sweep, or with the schedule that fired it. Caller frees *labels. */
static int ctl_sweep_labels(struct gq *g, const struct ctl_sweep *sw, char **labels, size_t *len)
{
    char *key = ctl_key(g, "sweep:%s:labels", sw->sid);
    struct gq_reply r = { 0 };
    int err = ctl_cmd(g, &r, 2, "GET", key);
    free(key);
    if (!err && (r.n != 1 || r.len[0] == 0) && *sw->schedule) {
        /* gq_schedule_fire does not copy the schedule's labels to the sweep */
        gq_reply_free(&r);
        key = ctl_key(g, "sched:%s:labels", sw->schedule);
        err = ctl_cmd(g, &r, 2, "GET", key);
        free(key);
    }
    *labels = NULL;
    *len = 0;
    if (!err && r.n == 1 && r.len[0] > 0) {
        *labels = r.str[0];
        *len = r.len[0];
        r.str[0] = NULL;
    }
    gq_reply_free(&r);
    return err;
}

#define CTL_METRICS_SWEEP_USAGE \
    "usage: judgectl metrics SID [--json] [--partial] " CTL_REDIS_USAGE "\n"

int ctl_metrics_sweep(int argc, char **argv)
{
    struct ctl_redis ro;
    ctl_redis_init(&ro);
    bool partial = false, as_json = false;
    const struct ctl_opt opts[] = { { "partial", 0, &partial, NULL },
                                    { "json", 0, &as_json, NULL } };
    int first, rc = ctl_args_parse(CTL_METRICS_SWEEP_USAGE, argc, argv, &ro, opts, 2, 1, 1, &first);
    if (rc >= 0) {
        return rc;
    }
    struct gq *g;
    if (ctl_redis_connect(&ro, "metrics", &g) != 0) {
        return 1;
    }
    struct ctl_sweep sw;
    if (ctl_sweep_for_results(g, "metrics", argv[first], partial, &sw) != 0) {
        gq_destroy(g);
        return 1;
    }
    char *labels = NULL;
    size_t labels_len = 0;
    struct ctl_blobs b = { 0 };
    rc = 1;
    if (ctl_sweep_labels(g, &sw, &labels, &labels_len) != 0) {
        fprintf(stderr, "judgectl metrics: %s\n", gq_errstr(g));
        goto done;
    }
    if (!labels) {
        fprintf(stderr,
                "judgectl metrics: sweep %s has no labels (its spec had no field 'labels'); "
                "use judgectl results and judgectl metrics --pred --labels\n",
                sw.sid);
        goto done;
    }
    if (ctl_blobs_load(g, sw.sid, &b) != 0) {
        fprintf(stderr, "judgectl metrics: reading the results of sweep %s: %s\n", sw.sid,
                gq_errstr(g));
        goto done;
    }
    struct eval_metrics m;
    char errstr[ERRSTR_LEN];
    if (judge_results_metrics(b.blobs, b.lens, (const char *const *)b.names, b.n, labels,
                              labels_len, &m, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judgectl metrics: sweep %s: %s\n", sw.sid, errstr);
        goto done;
    }
    if (as_json) {
        json_t *o = eval_metrics_json(&m);
        int err = json_dumpf(o, stdout, JSON_REAL_PRECISION(12));
        json_decref(o);
        rc = err == 0 && fputc('\n', stdout) != EOF && fflush(stdout) == 0 ? 0 : 1;
    } else {
        rc = eval_metrics_print(stdout, &m) == 0 && fflush(stdout) == 0 ? 0 : 1;
    }
done:
    ctl_blobs_free(&b);
    free(labels);
    ctl_sweep_free(&sw);
    gq_destroy(g);
    return rc;
}
