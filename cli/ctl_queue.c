/* ctl_queue.c - judgectl's operator commands on the queues: cancel, queues, workers, dlq,
 * pause and resume. Each is one or a few calls of the gq_v1 functions (docs/PROTOCOL.md). */
#include "cli/ctl.h"
#include "cli/ctl_impl.h"
#include "common/util.h"
#include "common/xmalloc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define CTL_CANCEL_USAGE                                                           \
    "usage: judgectl cancel ID " CTL_REDIS_USAGE "\n"                              \
    "Cancels a sweep (queued shards now, running ones at their next heartbeat),\n" \
    "or a single job.\n"

int ctl_cancel(int argc, char **argv)
{
    struct ctl_redis ro;
    ctl_redis_init(&ro);
    int first, rc = ctl_args_parse(CTL_CANCEL_USAGE, argc, argv, &ro, NULL, 0, 1, 1, &first);
    if (rc >= 0) {
        return rc;
    }
    const char *id = argv[first];
    struct gq *g;
    if (ctl_redis_connect(&ro, "cancel", &g) != 0) {
        return 1;
    }
    char *key = ctl_key(g, "sweep:%s", id);
    struct gq_reply r = { 0 };
    rc = 1;
    if (ctl_cmd(g, &r, 2, "EXISTS", key) != 0) {
        fprintf(stderr, "judgectl cancel: %s\n", gq_errstr(g));
        goto done;
    }
    bool is_sweep = r.n == 1 && strcmp(r.str[0], "1") == 0;
    gq_reply_free(&r);
    if (is_sweep) {
        if (ctl_fcall(g, "gq_sweep_cancel", &r, 1, id) != 0 || r.n < 2) {
            fprintf(stderr, "judgectl cancel: sweep %s: %s\n", id, gq_errstr(g));
            goto done;
        }
        if (strcmp(r.str[0], "ok") == 0) {
            printf("sweep %s cancelled: %s queued shards cancelled; running shards stop at "
                   "their next heartbeat\n",
                   id, r.str[1]);
        } else {
            printf("sweep %s was already %s: nothing to cancel\n", id, r.str[1]);
        }
        rc = 0;
        goto done;
    }
    int err = ctl_fcall(g, "gq_cancel", &r, 1, id);
    if (err == -EPROTO && strstr(gq_errstr(g), "does not exist")) {
        fprintf(stderr, "judgectl cancel: no sweep or job named '%s'\n", id);
        goto done;
    }
    if (err || r.n < 2) {
        fprintf(stderr, "judgectl cancel: job %s: %s\n", id, gq_errstr(g));
        goto done;
    }
    if (strcmp(r.str[0], "ok") == 0 && strcmp(r.str[1], "cancelled") == 0) {
        printf("job %s cancelled\n", id);
    } else if (strcmp(r.str[0], "ok") == 0) {
        printf("job %s is running: its worker stops it at the next heartbeat\n", id);
    } else {
        printf("job %s was already %s: nothing to cancel\n", id, r.str[1]);
    }
    rc = 0;
done:
    gq_reply_free(&r);
    free(key);
    gq_destroy(g);
    return rc;
}

#define CTL_QUEUES_USAGE "usage: judgectl queues [--json] " CTL_REDIS_USAGE "\n"

int ctl_queues(int argc, char **argv)
{
    struct ctl_redis ro;
    ctl_redis_init(&ro);
    bool as_json = false;
    const struct ctl_opt opts[] = { { "json", 0, &as_json, NULL } };
    int first, rc = ctl_args_parse(CTL_QUEUES_USAGE, argc, argv, &ro, opts, 1, 0, 0, &first);
    if (rc >= 0) {
        return rc;
    }
    struct gq *g;
    if (ctl_redis_connect(&ro, "queues", &g) != 0) {
        return 1;
    }
    struct gq_reply r = { 0 };
    rc = 1;
    if (ctl_fcall(g, "gq_stats", &r, 0) != 0) {
        fprintf(stderr, "judgectl queues: %s\n", gq_errstr(g));
        goto done;
    }
    size_t nq = r.n >= 2 ? strtoul(r.str[1], NULL, 10) : 0;
    if (r.n != 2 + 3 * nq + 3) {
        fprintf(stderr, "judgectl queues: gq_stats: unexpected reply of %zu elements\n", r.n);
        goto done;
    }
    const char *const *tot = (const char *const *)r.str + 2 + 3 * nq;
    if (as_json) {
        json_t *o = json_object(), *qs = json_array();
        for (size_t i = 0; i < nq; i++) {
            const char *const *q = (const char *const *)r.str + 2 + 3 * i;
            json_t *e = json_object();
            json_object_set_new(e, "queue", json_string(q[0]));
            json_object_set_new(e, "ready", json_integer(strtoll(q[1], NULL, 10)));
            json_object_set_new(e, "paused", json_boolean(strcmp(q[2], "1") == 0));
            json_array_append_new(qs, e);
        }
        json_object_set_new(o, "queues", qs);
        json_object_set_new(o, "delayed", json_integer(strtoll(tot[0], NULL, 10)));
        json_object_set_new(o, "running", json_integer(strtoll(tot[1], NULL, 10)));
        json_object_set_new(o, "dead", json_integer(strtoll(tot[2], NULL, 10)));
        rc = ctl_print_json(o);
        json_decref(o);
        goto done;
    }
    printf("%-32s %10s %7s\n", "QUEUE", "READY", "PAUSED");
    for (size_t i = 0; i < nq; i++) {
        const char *const *q = (const char *const *)r.str + 2 + 3 * i;
        printf("%-32s %10s %7s\n", q[0], q[1], strcmp(q[2], "1") == 0 ? "yes" : "no");
    }
    printf("delayed %s, running (leases) %s, dead %s\n", tot[0], tot[1], tot[2]);
    rc = fflush(stdout) == 0 ? 0 : 1;
done:
    gq_reply_free(&r);
    gq_destroy(g);
    return rc;
}

#define CTL_WORKERS_USAGE "usage: judgectl workers [--json] " CTL_REDIS_USAGE "\n"

int ctl_workers(int argc, char **argv)
{
    struct ctl_redis ro;
    ctl_redis_init(&ro);
    bool as_json = false;
    const struct ctl_opt opts[] = { { "json", 0, &as_json, NULL } };
    int first, rc = ctl_args_parse(CTL_WORKERS_USAGE, argc, argv, &ro, opts, 1, 0, 0, &first);
    if (rc >= 0) {
        return rc;
    }
    struct gq *g;
    if (ctl_redis_connect(&ro, "workers", &g) != 0) {
        return 1;
    }
    char *zkey = ctl_key(g, "workers");
    struct gq_reply z = { 0 };
    json_t *list = json_array();
    rc = 1;
    if (ctl_cmd(g, &z, 5, "ZREVRANGE", zkey, "0", "-1", "WITHSCORES") != 0) {
        fprintf(stderr, "judgectl workers: %s\n", gq_errstr(g));
        goto done;
    }
    int64_t now = ctl_now_ms(g);
    if (!as_json) {
        printf("%-32s %-5s %9s  %-28s %s\n", "WORKER", "ALIVE", "SEEN", "JOB", "INFO");
    }
    for (size_t i = 0; i + 1 < z.n; i += 2) {
        char *hkey = ctl_key(g, "worker:%s", z.str[i]);
        struct gq_reply h = { 0 };
        int err = ctl_cmd(g, &h, 2, "HGETALL", hkey);
        free(hkey);
        if (err) {
            fprintf(stderr, "judgectl workers: %s\n", gq_errstr(g));
            goto done;
        }
        /* the hash expires with the registration; a claim may add "job" to a stale one, so
         * alive means registered: the hash holds the seen_ms that gq_worker writes */
        const char *seen = ctl_reply_field(&h, "seen_ms", NULL);
        const char *job = ctl_reply_field(&h, "job", NULL);
        const char *info = ctl_reply_field(&h, "info", NULL);
        int64_t seen_ms = seen ? strtoll(seen, NULL, 10) : strtoll(z.str[i + 1], NULL, 10);
        bool alive = seen != NULL;
        if (as_json) {
            json_t *e = json_object();
            json_error_t jerr;
            json_t *iv = info ? json_loads(info, 0, &jerr) : NULL;
            json_object_set_new(e, "worker", json_string(z.str[i]));
            json_object_set_new(e, "alive", json_boolean(alive));
            json_object_set_new(e, "seen_ms", json_integer(seen_ms));
            json_object_set_new(e, "job", job && alive ? json_string(job) : json_null());
            json_object_set_new(e, "info", iv ? iv : info ? json_string(info) : json_null());
            json_array_append_new(list, e);
        } else {
            char age[32];
            ctl_fmt_age(now - seen_ms, age, sizeof(age));
            printf("%-32s %-5s %9s  %-28s %s\n", z.str[i], alive ? "yes" : "no", age,
                   job && alive && *job ? job : "-", info ? info : "-");
        }
        gq_reply_free(&h);
    }
    rc = as_json ? ctl_print_json(list) : fflush(stdout) == 0 ? 0 : 1;
done:
    json_decref(list);
    gq_reply_free(&z);
    free(zkey);
    gq_destroy(g);
    return rc;
}

#define CTL_DLQ_USAGE                                                          \
    "usage: judgectl dlq list [--json] " CTL_REDIS_USAGE "\n"                  \
    "       judgectl dlq retry (JID... | --all) " CTL_REDIS_USAGE "\n"         \
    "list: the dead-letter set (jobs out of attempts); retry: back to their\n" \
    "queue with fresh attempts.\n"

static int ctl_dlq_list(struct gq *g, bool as_json)
{
    char *key = ctl_key(g, "dead");
    struct gq_reply z = { 0 };
    json_t *list = json_array();
    int rc = 1;
    if (ctl_cmd(g, &z, 5, "ZRANGE", key, "0", "-1", "WITHSCORES") != 0) {
        fprintf(stderr, "judgectl dlq: %s\n", gq_errstr(g));
        goto done;
    }
    if (!as_json) {
        printf("%-40s %-20s %8s  %-16s %s\n", "JOB", "DIED (UTC)", "ATTEMPTS", "QUEUE", "ERROR");
    }
    for (size_t i = 0; i + 1 < z.n; i += 2) {
        char *jkey = ctl_key(g, "job:%s", z.str[i]);
        struct gq_reply h = { 0 };
        int err = ctl_cmd(g, &h, 6, "HMGET", jkey, "attempts", "queue", "error", "sweep");
        free(jkey);
        if (err || h.n != 4) {
            gq_reply_free(&h);
            fprintf(stderr, "judgectl dlq: %s\n", gq_errstr(g));
            goto done;
        }
        int64_t died = strtoll(z.str[i + 1], NULL, 10);
        if (as_json) {
            json_t *e = json_object();
            json_object_set_new(e, "job", json_string(z.str[i]));
            json_object_set_new(e, "died_ms", json_integer(died));
            json_object_set_new(e, "attempts", json_integer(strtoll(h.str[0], NULL, 10)));
            json_object_set_new(e, "queue", json_string(h.str[1]));
            json_object_set_new(e, "error", json_string(h.str[2]));
            json_object_set_new(e, "sweep", *h.str[3] ? json_string(h.str[3]) : json_null());
            json_array_append_new(list, e);
        } else {
            char when[32];
            ctl_fmt_utc(died, when, sizeof(when));
            /* one line per job: errors may hold newlines */
            for (char *p = h.str[2]; *p; p++) {
                if (*p == '\n' || *p == '\r' || *p == '\t') {
                    *p = ' ';
                }
            }
            printf("%-40s %-20s %8s  %-16s %s\n", z.str[i], when, h.str[0], h.str[1], h.str[2]);
        }
        gq_reply_free(&h);
    }
    rc = as_json ? ctl_print_json(list) : fflush(stdout) == 0 ? 0 : 1;
done:
    json_decref(list);
    gq_reply_free(&z);
    free(key);
    return rc;
}

/* Retries one dead job; prints what happened. Returns 0 or 1. */
static int ctl_dlq_retry_one(struct gq *g, const char *jid)
{
    struct gq_reply r = { 0 };
    int rc = 1;
    if (ctl_fcall(g, "gq_dlq_retry", &r, 1, jid) != 0) {
        fprintf(stderr, "judgectl dlq retry: %s: %s\n", jid, gq_errstr(g));
    } else if (r.n >= 1 && strcmp(r.str[0], "ok") == 0) {
        printf("%s: queued again\n", jid);
        rc = 0;
    } else if (r.n >= 2 && strcmp(r.str[0], "dup") == 0) {
        fprintf(stderr, "judgectl dlq retry: %s is %s, not dead\n", jid, r.str[1]);
    } else {
        fprintf(stderr, "judgectl dlq retry: %s: refused: %s\n", jid, r.n >= 2 ? r.str[1] : "?");
    }
    gq_reply_free(&r);
    return rc;
}

int ctl_dlq(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "list") != 0 && strcmp(argv[1], "retry") != 0)) {
        bool help = argc >= 2 && strcmp(argv[1], "--help") == 0;
        fputs(CTL_DLQ_USAGE, help ? stdout : stderr);
        return help ? 0 : 2;
    }
    bool list = strcmp(argv[1], "list") == 0;
    struct ctl_redis ro;
    ctl_redis_init(&ro);
    bool as_json = false, all = false;
    const struct ctl_opt list_opts[] = { { "json", 0, &as_json, NULL } };
    const struct ctl_opt retry_opts[] = { { "all", 0, &all, NULL } };
    int first, rc = ctl_args_parse(CTL_DLQ_USAGE, argc - 1, argv + 1, &ro,
                                   list ? list_opts : retry_opts, 1, 0, list ? 0 : 1000, &first);
    if (rc >= 0) {
        return rc;
    }
    first++; /* argv was shifted by one */
    if (!list && all == (first < argc)) {
        fputs(CTL_DLQ_USAGE, stderr);
        return 2;
    }
    struct gq *g;
    if (ctl_redis_connect(&ro, "dlq", &g) != 0) {
        return 1;
    }
    if (list) {
        rc = ctl_dlq_list(g, as_json);
    } else if (!all) {
        rc = 0;
        for (int i = first; i < argc; i++) {
            rc |= ctl_dlq_retry_one(g, argv[i]);
        }
    } else {
        char *key = ctl_key(g, "dead");
        struct gq_reply z = { 0 };
        rc = 0;
        if (ctl_cmd(g, &z, 4, "ZRANGE", key, "0", "-1") != 0) {
            fprintf(stderr, "judgectl dlq retry: %s\n", gq_errstr(g));
            rc = 1;
        }
        for (size_t i = 0; i < z.n; i++) {
            rc |= ctl_dlq_retry_one(g, z.str[i]);
        }
        if (z.n == 0 && rc == 0) {
            printf("the dead-letter set is empty\n");
        }
        gq_reply_free(&z);
        free(key);
    }
    gq_destroy(g);
    return rc;
}

static int ctl_pause_set(int argc, char **argv, bool pause)
{
    const char *cmd = pause ? "pause" : "resume";
    const char *usage = pause ? "usage: judgectl pause QUEUE " CTL_REDIS_USAGE "\n"
                              : "usage: judgectl resume QUEUE " CTL_REDIS_USAGE "\n";
    struct ctl_redis ro;
    ctl_redis_init(&ro);
    int first, rc = ctl_args_parse(usage, argc, argv, &ro, NULL, 0, 1, 1, &first);
    if (rc >= 0) {
        return rc;
    }
    const char *queue = argv[first];
    if (!ctl_id_ok(queue)) {
        fprintf(stderr, "judgectl %s: queue '%s': 1-180 bytes without spaces or ':'\n", cmd, queue);
        return 2;
    }
    struct gq *g;
    if (ctl_redis_connect(&ro, cmd, &g) != 0) {
        return 1;
    }
    rc = 0;
    if (ctl_fcall(g, "gq_pause", NULL, 2, queue, pause ? "1" : "0") != 0) {
        fprintf(stderr, "judgectl %s: %s\n", cmd, gq_errstr(g));
        rc = 1;
    } else if (pause) {
        printf("queue %s paused: workers claim nothing from it; running jobs go on\n", queue);
    } else {
        printf("queue %s resumed\n", queue);
    }
    gq_destroy(g);
    return rc;
}

int ctl_pause(int argc, char **argv)
{
    return ctl_pause_set(argc, argv, true);
}

int ctl_resume(int argc, char **argv)
{
    return ctl_pause_set(argc, argv, false);
}
