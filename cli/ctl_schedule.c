/* ctl_schedule.c - judgectl schedule add|list|remove: sweeps re-run from a cron expression.
 * `add` validates the spec exactly as submit does, stores the shard payloads (and labels) under
 * the schedule, then registers it with gq_schedule_set; judged fires it (gq_schedule_fire) at
 * each due minute of the cron expression, in UTC (docs/PROTOCOL.md, "Schedules"). */
#include "cli/ctl.h"
#include "cli/ctl_impl.h"
#include "common/cron.h"
#include "common/util.h"
#include "common/xmalloc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define CTL_SCHEDULE_USAGE                                                               \
    "usage: judgectl schedule add NAME CRON SPEC [--queue Q] [--priority N]\n"           \
    "                             [--max-attempts N] [--run-budget-s N]\n"               \
    "                             [--max-payload-mib N] [--keep DURATION] [--replace]\n" \
    "                             " CTL_REDIS_USAGE "\n"                                 \
    "       judgectl schedule list [--json] " CTL_REDIS_USAGE "\n"                       \
    "       judgectl schedule remove NAME " CTL_REDIS_USAGE "\n"                         \
    "CRON: minute hour day-of-month month day-of-week, in UTC (e.g. \"0 2 * * *\").\n"   \
    "--keep: how long each fired sweep's keys stay once it is finished (as submit --keep).\n"

/* HSETs every shard payload under <P>sched:<name>:shards; labels under :labels. */
static int ctl_schedule_store(struct gq *g, const char *name, const struct ctl_build *b)
{
    char *shards_key = ctl_key(g, "sched:%s:shards", name);
    char *labels_key = ctl_key(g, "sched:%s:labels", name);
    int err = ctl_cmd(g, NULL, 3, "DEL", shards_key, labels_key);
    for (size_t i = 0; i < b->n_shards && !err; i++) {
        char idx[24];
        snprintf(idx, sizeof(idx), "%zu", i);
        const char *argv[] = { "HSET", shards_key, idx, b->payloads[i] };
        size_t lens[] = { 4, strlen(shards_key), strlen(idx), b->lens[i] };
        struct gq_reply r = { 0 };
        err = gq_command(g, 4, argv, lens, &r);
        gq_reply_free(&r);
    }
    if (!err && b->labels) {
        const char *argv[] = { "SET", labels_key, b->labels };
        size_t lens[] = { 3, strlen(labels_key), b->labels_len };
        struct gq_reply r = { 0 };
        err = gq_command(g, 3, argv, lens, &r);
        gq_reply_free(&r);
    }
    free(shards_key);
    free(labels_key);
    return err;
}

static int ctl_schedule_add(int argc, char **argv)
{
    struct ctl_redis ro;
    ctl_redis_init(&ro);
    const char *queue = "judge", *prio_arg = NULL, *attempts_arg = NULL, *budget_arg = NULL,
               *mib_arg = NULL, *keep_arg = NULL;
    bool replace = false;
    const struct ctl_opt opts[] = {
        { "queue", 0, NULL, &queue },
        { "priority", 0, NULL, &prio_arg },
        { "max-attempts", 0, NULL, &attempts_arg },
        { "run-budget-s", 0, NULL, &budget_arg },
        { "max-payload-mib", 0, NULL, &mib_arg },
        { "keep", 0, NULL, &keep_arg },
        { "replace", 0, &replace, NULL },
    };
    int first, rc = ctl_args_parse(CTL_SCHEDULE_USAGE, argc, argv, &ro, opts,
                                   sizeof(opts) / sizeof(opts[0]), 3, 3, &first);
    if (rc >= 0) {
        return rc;
    }
    int64_t prio = 0, max_attempts = 3, budget_s = 0, max_mib = 16, keep_ms = 0;
    if ((prio_arg && (rc = ctl_int_arg("schedule", "--priority", prio_arg, 0, 1000, &prio))) ||
        (attempts_arg &&
         (rc = ctl_int_arg("schedule", "--max-attempts", attempts_arg, 1, 1000, &max_attempts))) ||
        (budget_arg &&
         (rc = ctl_int_arg("schedule", "--run-budget-s", budget_arg, 0, 365 * 86400, &budget_s))) ||
        (mib_arg &&
         (rc = ctl_int_arg("schedule", "--max-payload-mib", mib_arg, 1, 64, &max_mib))) ||
        (keep_arg && (rc = ctl_duration_arg("schedule", "--keep", keep_arg, true, &keep_ms)))) {
        return rc;
    }
    const char *name = argv[first], *cron_text = argv[first + 1], *spec_path = argv[first + 2];
    if (!ctl_id_ok(name)) {
        fprintf(stderr, "judgectl schedule: name '%s': 1-180 bytes without spaces or ':'\n", name);
        return 2;
    }
    if (!ctl_id_ok(queue)) {
        fprintf(stderr, "judgectl schedule: --queue '%s': 1-180 bytes without spaces or ':'\n",
                queue);
        return 2;
    }
    struct cron cron;
    char errstr[ERRSTR_LEN];
    if (cron_parse(cron_text, &cron, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judgectl schedule: %s\n", errstr);
        return 1;
    }
    struct ctl_build b;
    if (ctl_build_sweep("schedule", spec_path, (size_t)max_mib * 1048576, &b) != 0) {
        return 1;
    }
    struct gq *g = NULL;
    json_t *meta = NULL;
    char *meta_text = NULL, *set_key = NULL;
    struct gq_reply r = { 0 };
    rc = 1;
    if (ctl_redis_connect(&ro, "schedule", &g) != 0) {
        goto done;
    }
    set_key = ctl_key(g, "schedules");
    if (ctl_cmd(g, &r, 3, "SISMEMBER", set_key, name) != 0) {
        fprintf(stderr, "judgectl schedule: %s\n", gq_errstr(g));
        goto done;
    }
    if (r.n == 1 && strcmp(r.str[0], "1") == 0) {
        if (!replace) {
            fprintf(stderr, "judgectl schedule: schedule '%s' exists; --replace replaces it\n",
                    name);
            goto done;
        }
        /* unregister first, so judged cannot fire it while its shards are rewritten */
        if (ctl_fcall(g, "gq_schedule_remove", NULL, 1, name) != 0) {
            fprintf(stderr, "judgectl schedule: %s\n", gq_errstr(g));
            goto done;
        }
    }
    int64_t now = ctl_now_ms(g);
    meta = ctl_build_meta(&b, queue, now);
    json_object_set_new(meta, "cron", json_string(cron_text));
    json_object_set_new(meta, "priority", json_integer(prio));
    json_object_set_new(meta, "max_attempts", json_integer(max_attempts));
    json_object_set_new(meta, "run_budget_ms", json_integer(budget_s * 1000));
    json_object_set_new(meta, "agg_queue", json_string(queue));
    meta_text = json_dumps(meta, JSON_COMPACT | JSON_ENSURE_ASCII);
    char n_shards[24], keep[24];
    snprintf(n_shards, sizeof(n_shards), "%zu", b.n_shards);
    snprintf(keep, sizeof(keep), "%" PRId64, keep_ms);
    /* the retention is gq_schedule_set's optional trailing argument: given only when set */
    if (ctl_schedule_store(g, name, &b) != 0 ||
        ctl_fcall(g, "gq_schedule_set", NULL, keep_ms > 0 ? 5 : 4, name, cron_text, meta_text,
                  n_shards, keep) != 0) {
        fprintf(stderr, "judgectl schedule: %s: %s\n", name, gq_errstr(g));
        goto done;
    }
    char next[32];
    ctl_fmt_utc((int64_t)cron_next(&cron, (time_t)(now / 1000)) * 1000, next, sizeof(next));
    printf("schedule %s: '%s' (UTC), next run %s: %zu samples in %zu shards on queue '%s'", name,
           cron_text, next, b.n_samples, b.n_shards, queue);
    if (keep_ms > 0) {
        char kept[32];
        ctl_fmt_age(keep_ms, kept, sizeof(kept));
        printf(", each sweep kept %s once finished", kept);
    }
    putchar('\n');
    rc = fflush(stdout) == 0 ? 0 : 1;
done:
    gq_reply_free(&r);
    free(set_key);
    free(meta_text);
    json_decref(meta);
    gq_destroy(g);
    ctl_build_free(&b);
    return rc;
}

static int ctl_schedule_list(int argc, char **argv)
{
    struct ctl_redis ro;
    ctl_redis_init(&ro);
    bool as_json = false;
    const struct ctl_opt opts[] = { { "json", 0, &as_json, NULL } };
    int first, rc = ctl_args_parse(CTL_SCHEDULE_USAGE, argc, argv, &ro, opts, 1, 0, 0, &first);
    if (rc >= 0) {
        return rc;
    }
    struct gq *g;
    if (ctl_redis_connect(&ro, "schedule", &g) != 0) {
        return 1;
    }
    char *set_key = ctl_key(g, "schedules");
    struct gq_reply names = { 0 };
    json_t *list = json_array();
    rc = 1;
    if (ctl_cmd(g, &names, 3, "SORT", set_key, "ALPHA") != 0) {
        fprintf(stderr, "judgectl schedule: %s\n", gq_errstr(g));
        goto done;
    }
    int64_t now = ctl_now_ms(g);
    if (!as_json) {
        printf("%-24s %-18s %-21s %-16s %-32s %s\n", "SCHEDULE", "CRON (UTC)", "NEXT DUE", "QUEUE",
               "LAST SWEEP", "KEEP");
    }
    for (size_t i = 0; i < names.n; i++) {
        char *key = ctl_key(g, "sched:%s", names.str[i]);
        struct gq_reply h = { 0 };
        int err = ctl_cmd(g, &h, 2, "HGETALL", key);
        free(key);
        if (err) {
            fprintf(stderr, "judgectl schedule: %s\n", gq_errstr(g));
            goto done;
        }
        const char *cron_text = ctl_reply_field(&h, "cron", NULL);
        const char *last_due = ctl_reply_field(&h, "last_due_ms", NULL);
        const char *last_sweep = ctl_reply_field(&h, "last_sweep", NULL);
        const char *meta_text = ctl_reply_field(&h, "meta", NULL);
        const char *keep_text = ctl_reply_field(&h, "retention_ms", NULL);
        int64_t keep_ms = keep_text ? strtoll(keep_text, NULL, 10) : 0;
        char keep[32] = "forever";
        if (keep_ms > 0) {
            ctl_fmt_age(keep_ms, keep, sizeof(keep));
        }
        json_error_t jerr;
        json_t *meta = meta_text ? json_loads(meta_text, 0, &jerr) : NULL;
        const char *queue = json_string_value(json_object_get(meta, "queue"));
        /* the next due minute after both now and the last fired one */
        int64_t after = last_due ? strtoll(last_due, NULL, 10) : 0;
        after = after > now ? after : now;
        struct cron c;
        char errstr[ERRSTR_LEN], next[32] = "invalid cron";
        time_t t = (time_t)-1;
        if (cron_text && cron_parse(cron_text, &c, errstr, sizeof(errstr)) == 0) {
            t = cron_next(&c, (time_t)(after / 1000));
            ctl_fmt_utc((int64_t)t * 1000, next, sizeof(next));
        }
        if (as_json) {
            json_t *e = json_object();
            json_object_set_new(e, "schedule", json_string(names.str[i]));
            json_object_set_new(e, "cron", json_string(cron_text ? cron_text : ""));
            json_object_set_new(e, "next_due_ms",
                                t != (time_t)-1 ? json_integer((json_int_t)t * 1000) : json_null());
            json_object_set_new(e, "last_sweep",
                                last_sweep ? json_string(last_sweep) : json_null());
            json_object_set_new(e, "meta", meta ? json_incref(meta) : json_null());
            json_object_set_new(e, "retention_ms", json_integer(keep_ms));
            json_array_append_new(list, e);
        } else {
            printf("%-24s %-18s %-21s %-16s %-32s %s\n", names.str[i], cron_text ? cron_text : "-",
                   next, queue ? queue : "-", last_sweep ? last_sweep : "-", keep);
        }
        json_decref(meta);
        gq_reply_free(&h);
    }
    rc = as_json ? ctl_print_json(list) : fflush(stdout) == 0 ? 0 : 1;
done:
    json_decref(list);
    gq_reply_free(&names);
    free(set_key);
    gq_destroy(g);
    return rc;
}

static int ctl_schedule_remove(int argc, char **argv)
{
    struct ctl_redis ro;
    ctl_redis_init(&ro);
    int first, rc = ctl_args_parse(CTL_SCHEDULE_USAGE, argc, argv, &ro, NULL, 0, 1, 1, &first);
    if (rc >= 0) {
        return rc;
    }
    const char *name = argv[first];
    struct gq *g;
    if (ctl_redis_connect(&ro, "schedule", &g) != 0) {
        return 1;
    }
    struct gq_reply r = { 0 };
    char *labels_key = ctl_key(g, "sched:%s:labels", name);
    rc = 1;
    /* gq_schedule_remove leaves the labels key: drop it too */
    if (ctl_fcall(g, "gq_schedule_remove", &r, 1, name) != 0 ||
        ctl_cmd(g, NULL, 2, "DEL", labels_key) != 0) {
        fprintf(stderr, "judgectl schedule: %s\n", gq_errstr(g));
    } else if (r.n >= 1 && strcmp(r.str[0], "ok") == 0) {
        printf("schedule %s removed\n", name);
        rc = 0;
    } else {
        fprintf(stderr, "judgectl schedule: no schedule named '%s'\n", name);
    }
    free(labels_key);
    gq_reply_free(&r);
    gq_destroy(g);
    return rc;
}

int ctl_schedule(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "add") == 0) {
        return ctl_schedule_add(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "list") == 0) {
        return ctl_schedule_list(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "remove") == 0) {
        return ctl_schedule_remove(argc - 1, argv + 1);
    }
    bool help = argc >= 2 && strcmp(argv[1], "--help") == 0;
    fputs(CTL_SCHEDULE_USAGE, help ? stdout : stderr);
    return help ? 0 : 2;
}
