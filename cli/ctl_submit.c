/* ctl_submit.c - judgectl submit: validate a judge spec and every input line, cut the samples
 * into shard payloads, then create the sweep, enqueue one job per shard ("<sid>:<i>") and seal
 * it (docs/PROTOCOL.md, "Submitting a sweep"). Nothing is written to Redis unless everything
 * validates; a repeated submit with the same --id enqueues nothing twice. */
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
#include <sys/random.h>
#include <time.h>

#define CTL_SUBMIT_USAGE                                                                     \
    "usage: judgectl submit SPEC [--id SID] [--queue Q] [--priority N] [--max-attempts N]\n" \
    "                        [--run-budget-s N] [--max-payload-mib N] [--keep DURATION]\n"   \
    "                        [--watch] " CTL_REDIS_USAGE "\n"                                \
    "Validates SPEC and its input, enqueues one job per shard and prints the sweep id.\n"    \
    "--keep: how long the sweep's keys stay in Redis once it is done or cancelled (30m,\n"   \
    "12h, 7d; default 0 or forever: until judgectl purge).\n"

/* "file:line" (JSONL, blank lines skipped as the reader skips them) or "file:[i]" (a JSON
 * array) of input record i, as judge_input_load names records in its errors. */
static void ctl_input_where(const char *path, size_t i_record, char *buf, size_t len)
{
    char *text = NULL;
    size_t n = 0;
    char errstr[ERRSTR_LEN];
    snprintf(buf, len, "%s:[%zu]", path, i_record);
    if (file_read_all(path, &text, &n, errstr, sizeof(errstr)) != 0) {
        return;
    }
    size_t p = strspn(text, " \t\r\n");
    if (p < n && text[p] != '[') {
        size_t line = 0, seen = 0;
        for (size_t start = 0; start < n;) {
            const char *nl = memchr(text + start, '\n', n - start);
            size_t end = nl ? (size_t)(nl - text) : n;
            line++;
            size_t q = start;
            while (q < end && (text[q] == ' ' || text[q] == '\t' || text[q] == '\r')) {
                q++;
            }
            if (q < end && seen++ == i_record) {
                snprintf(buf, len, "%s:%zu", path, line);
                break;
            }
            start = end + 1;
        }
    }
    free(text);
}

void ctl_build_free(struct ctl_build *b)
{
    for (size_t i = 0; b->payloads && i < b->n_shards; i++) {
        free(b->payloads[i]);
    }
    free(b->payloads);
    free(b->lens);
    free(b->labels);
    json_decref(b->spec_json);
    job_spec_destroy(b->spec);
    memset(b, 0, sizeof(*b));
}

int ctl_build_sweep(const char *cmd, const char *spec_path, size_t max_payload_bytes,
                    struct ctl_build *b)
{
    char errstr[ERRSTR_LEN];
    struct judge_sample *samples = NULL;
    size_t n = 0;
    memset(b, 0, sizeof(*b));
    if (job_spec_load(spec_path, &b->spec, errstr, sizeof(errstr)) != 0 ||
        judge_input_load(b->spec, &samples, &n, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judgectl %s: %s\n", cmd, errstr);
        goto fail;
    }
    if (n == 0) {
        fprintf(stderr, "judgectl %s: %s: field 'input': %s holds no samples\n", cmd, spec_path,
                b->spec->input);
        goto fail;
    }
    if (b->spec->labels) {
        struct eval_labels *labels = NULL;
        if (eval_labels_load(b->spec->labels, &labels, errstr, sizeof(errstr)) != 0 ||
            file_read_all(b->spec->labels, &b->labels, &b->labels_len, errstr, sizeof(errstr)) !=
                0) {
            eval_labels_destroy(labels);
            fprintf(stderr, "judgectl %s: %s: field 'labels': %s\n", cmd, spec_path, errstr);
            goto fail;
        }
        eval_labels_destroy(labels);
    }
    b->spec_json = job_spec_to_json(b->spec);
    size_t shard_size = (size_t)b->spec->shard_size;
    b->n_samples = n;
    b->n_shards = (n + shard_size - 1) / shard_size;
    b->payloads = xcalloc(b->n_shards, sizeof(*b->payloads));
    b->lens = xcalloc(b->n_shards, sizeof(*b->lens));
    for (size_t i = 0; i < b->n_shards; i++) {
        size_t first = i * shard_size, m = n - first < shard_size ? n - first : shard_size;
        b->payloads[i] = judge_shard_payload(b->spec_json, samples + first, m, &b->lens[i]);
        if (b->lens[i] <= max_payload_bytes) {
            continue;
        }
        /* name the largest sample of the shard: the one to fix, or to give a smaller shard */
        size_t worst = first, worst_len = 0;
        for (size_t k = first; k < first + m; k++) {
            size_t len = 0;
            free(judge_shard_payload(b->spec_json, samples + k, 1, &len));
            if (len > worst_len) {
                worst = k;
                worst_len = len;
            }
        }
        char where[ERRSTR_LEN];
        ctl_input_where(b->spec->input, samples[worst].i_record, where, sizeof(where));
        fprintf(stderr,
                "judgectl %s: %s: shard %zu is %.1f MiB, over the %.1f MiB payload limit "
                "(--max-payload-mib): its largest sample, %s (question_id %" PRId64
                "), takes %.1f MiB%s\n",
                cmd, spec_path, i, (double)b->lens[i] / 1048576.0,
                (double)max_payload_bytes / 1048576.0, where, samples[worst].question_id,
                (double)worst_len / 1048576.0,
                worst_len > max_payload_bytes ? " alone" : "; lower the field 'shard_size'");
        goto fail;
    }
    judge_samples_free(samples, n);
    return 0;
fail:
    judge_samples_free(samples, n);
    ctl_build_free(b);
    return 1;
}

json_t *ctl_build_meta(const struct ctl_build *b, const char *queue, int64_t submitted_ms)
{
    const struct job_spec *s = b->spec;
    json_t *m = json_object();
    json_object_set_new(m, "name", json_string(s->name));
    json_object_set(m, "model", json_object_get(b->spec_json, "model"));
    json_object_set_new(m, "n_samples", json_integer((json_int_t)b->n_samples));
    json_object_set_new(m, "shard_size", json_integer(s->shard_size));
    json_object_set_new(m, "n_shards", json_integer((json_int_t)b->n_shards));
    json_object_set_new(m, "mode", json_string(judge_mode_name(s->mode)));
    json_object_set_new(m, "swap", json_string(judge_swap_name(s->swap)));
    json_object_set_new(m, "output", json_string(judge_output_name(s->output)));
    json_object_set_new(m, "queue", json_string(queue));
    json_object_set_new(m, "submitted_ms", json_integer(submitted_ms));
    json_object_set(m, "spec", b->spec_json);
    return m;
}

/* "<name>-<yyyymmddThhmmss>-<6 hex>" with the name reduced to [A-Za-z0-9._-]. */
static void ctl_sweep_id_new(const char *name, char *out, size_t len)
{
    char clean[101];
    size_t k = 0;
    for (const char *p = name; *p && k < sizeof(clean) - 1; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        clean[k++] = ok ? c : '-';
    }
    clean[k] = '\0';
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char stamp[32];
    strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%S", &tm);
    char token[GQ_TOKEN_LEN + 1];
    gq_token_new(token);
    snprintf(out, len, "%s-%s-%.6s", k ? clean : "sweep", stamp, token);
}

/* A sweep id that exists already: harmless when it is this very submit, refused otherwise. */
static int ctl_submit_existing(struct gq *g, const char *sid, const struct ctl_build *b,
                               bool *finish)
{
    struct ctl_sweep sw;
    if (ctl_sweep_load(g, sid, &sw) != 0) {
        fprintf(stderr, "judgectl submit: sweep %s: %s\n", sid, gq_errstr(g));
        return 1;
    }
    int rc = 0;
    if (sw.expected != (int64_t)b->n_shards ||
        !json_equal(json_object_get(sw.meta, "spec"), b->spec_json)) {
        fprintf(stderr,
                "judgectl submit: sweep %s already exists with a different spec or shard count "
                "(%" PRId64 " shards there, %zu here); choose another --id\n",
                sid, sw.expected, b->n_shards);
        rc = 1;
    } else if (strcmp(sw.state, "open") == 0) {
        fprintf(stderr,
                "judgectl submit: sweep %s exists but was not sealed: finishing its enqueue\n",
                sid);
        *finish = true;
    } else {
        fprintf(stderr,
                "judgectl submit: sweep %s was already submitted (state %s): nothing enqueued\n",
                sid, sw.state);
    }
    ctl_sweep_free(&sw);
    return rc;
}

/* A gq_v1 library loaded before sweep retention existed ignores the argument: say so rather
 * than keep the sweep forever silently. */
static int ctl_submit_check_retention(struct gq *g, const char *sid)
{
    char *key = ctl_key(g, "sweep:%s", sid);
    struct gq_reply r = { 0 };
    int err = ctl_cmd(g, &r, 3, "HEXISTS", key, "retention_ms");
    int rc = 0;
    if (err) {
        fprintf(stderr, "judgectl submit: sweep %s: %s\n", sid, gq_errstr(g));
        rc = 1;
    } else if (r.n != 1 || strcmp(r.str[0], "1") != 0) {
        fprintf(stderr,
                "judgectl submit: warning: the gq_v1 library in this Redis predates sweep "
                "retention, so sweep %s is kept until purged; replace it (FUNCTION LOAD REPLACE, "
                "docs/OPERATIONS.md)\n",
                sid);
    }
    gq_reply_free(&r);
    free(key);
    return rc;
}

int ctl_submit(int argc, char **argv)
{
    static const struct option long_opts[] = {
        { "id", required_argument, NULL, 'i' },
        { "queue", required_argument, NULL, 'q' },
        { "priority", required_argument, NULL, 'p' },
        { "max-attempts", required_argument, NULL, 'a' },
        { "run-budget-s", required_argument, NULL, 'b' },
        { "max-payload-mib", required_argument, NULL, 'm' },
        { "keep", required_argument, NULL, 'k' },
        { "watch", no_argument, NULL, 'w' },
        { "help", no_argument, NULL, 'h' },
        CTL_REDIS_LONG_OPTS,
        { NULL, 0, NULL, 0 },
    };
    struct ctl_redis ro;
    ctl_redis_init(&ro);
    const char *sid_arg = NULL, *queue = "judge";
    int64_t prio = 0, max_attempts = 3, budget_s = 0, max_mib = 16, keep_ms = 0;
    bool watch = false;
    optind = 1;
    int c, rc;
    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        if (ctl_redis_option(&ro, c, optarg)) {
            continue;
        }
        switch (c) {
        case 'i':
            sid_arg = optarg;
            break;
        case 'q':
            queue = optarg;
            break;
        case 'p':
            if ((rc = ctl_int_arg("submit", "--priority", optarg, 0, 1000, &prio)) != 0) {
                return rc;
            }
            break;
        case 'a':
            if ((rc = ctl_int_arg("submit", "--max-attempts", optarg, 1, 1000, &max_attempts))) {
                return rc;
            }
            break;
        case 'b':
            if ((rc = ctl_int_arg("submit", "--run-budget-s", optarg, 0, 365 * 86400, &budget_s))) {
                return rc;
            }
            break;
        case 'm':
            if ((rc = ctl_int_arg("submit", "--max-payload-mib", optarg, 1, 64, &max_mib))) {
                return rc;
            }
            break;
        case 'k':
            if ((rc = ctl_duration_arg("submit", "--keep", optarg, true, &keep_ms))) {
                return rc;
            }
            break;
        case 'w':
            watch = true;
            break;
        case 'h':
            fputs(CTL_SUBMIT_USAGE, stdout);
            return 0;
        default:
            fputs(CTL_SUBMIT_USAGE, stderr);
            return 2;
        }
    }
    if (optind + 1 != argc) {
        fputs(CTL_SUBMIT_USAGE, stderr);
        return 2;
    }
    if (sid_arg && !ctl_id_ok(sid_arg)) {
        fprintf(stderr, "judgectl submit: --id '%s': 1-180 bytes without spaces or ':'\n", sid_arg);
        return 2;
    }
    if (!ctl_id_ok(queue)) {
        fprintf(stderr, "judgectl submit: --queue '%s': 1-180 bytes without spaces or ':'\n",
                queue);
        return 2;
    }
    const char *spec_path = argv[optind];
    struct ctl_build b;
    if (ctl_build_sweep("submit", spec_path, (size_t)max_mib * 1048576, &b) != 0) {
        return 1;
    }
    char sid[256];
    if (sid_arg) {
        snprintf(sid, sizeof(sid), "%s", sid_arg);
    } else {
        ctl_sweep_id_new(b.spec->name, sid, sizeof(sid));
    }
    struct gq *g = NULL;
    struct gq_job_new *jobs = NULL;
    char **jids = NULL;
    json_t *meta = NULL;
    char *meta_text = NULL;
    rc = 1;
    if (ctl_redis_connect(&ro, "submit", &g) != 0) {
        goto done;
    }
    meta = ctl_build_meta(&b, queue, ctl_now_ms(g));
    meta_text = json_dumps(meta, JSON_COMPACT | JSON_ENSURE_ASCII);
    enum gq_status st;
    const struct gq_sweep_new sweep = {
        .sid = sid,
        .expected = (int64_t)b.n_shards,
        .agg_queue = queue,
        .agg_prio = (int)prio,
        .meta = meta_text,
        .labels = b.labels,
        .labels_len = b.labels_len,
        .retention_ms = keep_ms,
    };
    if (gq_sweep_create_opts(g, &sweep, &st) != 0) {
        fprintf(stderr, "judgectl submit: creating sweep %s: %s\n", sid, gq_errstr(g));
        goto done;
    }
    if (st == GQ_OK && keep_ms > 0 && ctl_submit_check_retention(g, sid) != 0) {
        goto done;
    }
    bool enqueue = true;
    if (st == GQ_DUP) {
        enqueue = false;
        if (ctl_submit_existing(g, sid, &b, &enqueue) != 0) {
            goto done;
        }
    }
    if (enqueue) {
        jobs = xcalloc(b.n_shards, sizeof(*jobs));
        jids = xcalloc(b.n_shards, sizeof(*jids));
        for (size_t i = 0; i < b.n_shards; i++) {
            size_t jl = strlen(sid) + 24;
            jids[i] = xmalloc(jl);
            snprintf(jids[i], jl, "%s:%zu", sid, i);
            jobs[i] = (struct gq_job_new){
                .jid = jids[i],
                .queue = queue,
                .prio = (int)prio,
                .max_attempts = (int)max_attempts,
                .run_budget_ms = budget_s * 1000,
                .payload = b.payloads[i],
                .payload_len = b.lens[i],
                .sweep = sid,
                .shard = (int64_t)i,
            };
        }
        size_t n_dup = 0;
        bool fanin = false;
        if (gq_enqueue_many(g, jobs, b.n_shards, &n_dup) != 0) {
            fprintf(stderr,
                    "judgectl submit: sweep %s: %s (re-run with --id %s to finish the "
                    "submit)\n",
                    sid, gq_errstr(g), sid);
            goto done;
        }
        if (gq_sweep_seal(g, sid, &st, &fanin) != 0) {
            fprintf(stderr, "judgectl submit: sealing sweep %s: %s (re-run with --id %s)\n", sid,
                    gq_errstr(g), sid);
            goto done;
        }
        fprintf(stderr,
                "judgectl submit: sweep %s: %zu samples in %zu shards of up to %" PRId64
                " on queue '%s'",
                sid, b.n_samples, b.n_shards, b.spec->shard_size, queue);
        if (n_dup) {
            fprintf(stderr, " (%zu shards were already enqueued)", n_dup);
        }
        if (keep_ms > 0) {
            char keep[32];
            ctl_fmt_age(keep_ms, keep, sizeof(keep));
            fprintf(stderr, "; kept %s once it is finished", keep);
        }
        fputc('\n', stderr);
    }
    printf("%s\n", sid);
    if (fflush(stdout) != 0) {
        goto done;
    }
    rc = watch ? ctl_watch_sweep(g, sid, 0) : 0;
done:
    for (size_t i = 0; jids && i < b.n_shards; i++) {
        free(jids[i]);
    }
    free(jids);
    free(jobs);
    free(meta_text);
    json_decref(meta);
    gq_destroy(g);
    ctl_build_free(&b);
    return rc;
}
