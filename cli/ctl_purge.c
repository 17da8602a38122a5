/* ctl_purge.c - judgectl purge: deletes a sweep's keys and jobs from Redis now (gq_sweep_purge,
 * docs/PROTOCOL.md), or every finished sweep that finished more than a given time ago. A sweep
 * that is not finished is refused unless --force; the bulk form never forces. */
#include "cli/ctl.h"
#include "cli/ctl_impl.h"
#include "common/xmalloc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define CTL_PURGE_USAGE                                                                     \
    "usage: judgectl purge SID [--force] " CTL_REDIS_USAGE "\n"                             \
    "       judgectl purge --finished-before DURATION [--dry-run] " CTL_REDIS_USAGE "\n"    \
    "Deletes a sweep's keys and jobs from Redis now. A sweep that is not finished (open,\n" \
    "sealed, aggregating, or cancelled with shards still running) is refused unless\n"      \
    "--force, which also drops the work of its running shards. --finished-before purges\n"  \
    "every done or cancelled sweep that finished more than DURATION (30m, 12h, 7d) ago\n"   \
    "and lists each; with --dry-run it only lists them.\n"

static int ctl_purge_one(struct gq *g, const char *sid, bool force)
{
    enum gq_status st;
    int64_t n_jobs = 0;
    char state[16];
    if (gq_sweep_purge(g, sid, force, &st, &n_jobs, state) != 0) {
        fprintf(stderr, "judgectl purge: sweep %s: %s\n", sid, gq_errstr(g));
        return 1;
    }
    if (st == GQ_DUP) {
        fprintf(stderr, "judgectl purge: no sweep named '%s'\n", sid);
        return 1;
    }
    if (st == GQ_REFUSED) {
        fprintf(stderr,
                "judgectl purge: sweep %s is %s%s, not finished: nothing deleted (--force "
                "purges it anyway)\n",
                sid, state, strcmp(state, "cancelled") == 0 ? " with shards still running" : "");
        return 1;
    }
    printf("purged %s (%" PRId64 " jobs)\n", sid, n_jobs);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* The fields of a sweep the bulk purge looks at, or -ENOENT when it is gone. */
static int ctl_purge_load(struct gq *g, const char *sid, struct ctl_sweep *sw)
{
    char *key = ctl_key(g, "sweep:%s", sid);
    struct gq_reply r = { 0 };
    int err = ctl_cmd(g, &r, 8, "HMGET", key, "state", "finished_ms", "expected", "ok", "failed",
                      "unsent");
    free(key);
    memset(sw, 0, sizeof(*sw));
    if (!err && (r.n != 6 || r.len[0] == 0)) {
        err = r.n == 6 ? -ENOENT : -EPROTO;
    }
    if (!err) {
        sw->sid = xstrdup(sid);
        sw->state = xstrdup(r.str[0]);
        sw->finished_ms = strtoll(r.str[1], NULL, 10);
        sw->expected = strtoll(r.str[2], NULL, 10);
        sw->ok = strtoll(r.str[3], NULL, 10);
        sw->failed = strtoll(r.str[4], NULL, 10);
        sw->unsent = strtoll(r.str[5], NULL, 10);
    }
    gq_reply_free(&r);
    return err;
}

/* Every done or cancelled sweep that finished at or before now - age_ms. */
static int ctl_purge_finished(struct gq *g, int64_t age_ms, bool dry_run)
{
    int64_t cutoff = ctl_now_ms(g) - age_ms;
    char *key = ctl_key(g, "sweeps");
    char max[32], when[32];
    snprintf(max, sizeof(max), "%" PRId64, cutoff);
    ctl_fmt_utc(cutoff, when, sizeof(when));
    struct gq_reply z = { 0 };
    size_t n_purged = 0, n_skipped = 0;
    int rc = 1;
    /* a sweep finishes after it is created: only those created before the cutoff qualify */
    if (ctl_cmd(g, &z, 4, "ZRANGEBYSCORE", key, "-inf", max) != 0) {
        fprintf(stderr, "judgectl purge: %s\n", gq_errstr(g));
        goto done;
    }
    for (size_t i = 0; i < z.n; i++) {
        struct ctl_sweep sw;
        int err = ctl_purge_load(g, z.str[i], &sw);
        if (err == -ENOENT) {
            continue; /* gone meanwhile, or expired: gq_reap drops its entry */
        }
        if (err) {
            fprintf(stderr, "judgectl purge: %s\n", gq_errstr(g));
            goto done;
        }
        bool finished = strcmp(sw.state, "done") == 0 || strcmp(sw.state, "cancelled") == 0;
        if (finished && sw.finished_ms > 0 && sw.finished_ms <= cutoff) {
            char fin[32];
            ctl_fmt_utc(sw.finished_ms, fin, sizeof(fin));
            enum gq_status st = GQ_REFUSED;
            int64_t n_jobs = 0;
            if (!ctl_sweep_final(&sw)) {
                st = GQ_REFUSED;
            } else if (dry_run) {
                printf("would purge %s (%s, finished %s)\n", sw.sid, sw.state, fin);
                st = GQ_OK;
            } else if (gq_sweep_purge(g, sw.sid, false, &st, &n_jobs, NULL) != 0) {
                fprintf(stderr, "judgectl purge: sweep %s: %s\n", sw.sid, gq_errstr(g));
                ctl_sweep_free(&sw);
                goto done;
            } else if (st == GQ_OK) {
                printf("purged %s (%s, finished %s, %" PRId64 " jobs)\n", sw.sid, sw.state, fin,
                       n_jobs);
            }
            if (st == GQ_OK) {
                n_purged++;
            } else if (st == GQ_REFUSED) {
                fprintf(stderr, "judgectl purge: skipped %s: cancelled, shards still running\n",
                        sw.sid);
                n_skipped++;
            }
        }
        ctl_sweep_free(&sw);
    }
    if (fflush(stdout) != 0) {
        goto done;
    }
    fprintf(stderr, "judgectl purge: %zu sweeps %s (finished before %s)", n_purged,
            dry_run ? "would be purged" : "purged", when);
    if (n_skipped) {
        fprintf(stderr, ", %zu skipped", n_skipped);
    }
    fputc('\n', stderr);
    rc = 0;
done:
    gq_reply_free(&z);
    free(key);
    return rc;
}

int ctl_purge(int argc, char **argv)
{
    struct ctl_redis ro;
    ctl_redis_init(&ro);
    bool force = false, dry_run = false;
    const char *before_arg = NULL;
    const struct ctl_opt opts[] = {
        { "force", 0, &force, NULL },
        { "dry-run", 0, &dry_run, NULL },
        { "finished-before", 0, NULL, &before_arg },
    };
    int first, rc = ctl_args_parse(CTL_PURGE_USAGE, argc, argv, &ro, opts,
                                   sizeof(opts) / sizeof(opts[0]), 0, 1, &first);
    if (rc >= 0) {
        return rc;
    }
    bool by_sid = first < argc;
    if (by_sid == (before_arg != NULL) || (by_sid && dry_run) || (!by_sid && force)) {
        fputs(CTL_PURGE_USAGE, stderr);
        return 2;
    }
    int64_t age_ms = 0;
    if (before_arg &&
        (rc = ctl_duration_arg("purge", "--finished-before", before_arg, false, &age_ms))) {
        return rc;
    }
    if (by_sid && !ctl_id_ok(argv[first])) {
        fprintf(stderr, "judgectl purge: SID '%s': 1-180 bytes without spaces or ':'\n",
                argv[first]);
        return 2;
    }
    struct gq *g;
    if (ctl_redis_connect(&ro, "purge", &g) != 0) {
        return 1;
    }
    rc = by_sid ? ctl_purge_one(g, argv[first], force) : ctl_purge_finished(g, age_ms, dry_run);
    gq_destroy(g);
    return rc;
}
