/* ctl_watch.c - judgectl watch SID: a sweep's progress until it ends. Samples done are the
 * samples of shards with an outcome (the sweep's :term bitmap) plus the "done/total" progress
 * that running shard jobs report through their heartbeats; running shards are found through the
 * leases index, so a tick costs a few calls however large the sweep is. */
#include "cli/ctl.h"
#include "cli/ctl_impl.h"
#include "common/util.h"
#include "common/xmalloc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CTL_WATCH_USAGE                                                               \
    "usage: judgectl watch SID [--interval-ms N] " CTL_REDIS_USAGE "\n"               \
    "Shows a sweep's progress on stderr until it ends; exit 0 when it is done with\n" \
    "every shard judged, 1 otherwise.\n"

static double ctl_watch_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void ctl_fmt_secs(double s, char *buf, size_t len)
{
    if (s < 0 || s > 1e8) {
        snprintf(buf, len, "-");
    } else if (s < 60) {
        snprintf(buf, len, "%.0fs", s);
    } else if (s < 3600) {
        snprintf(buf, len, "%dm%02ds", (int)s / 60, (int)s % 60);
    } else {
        snprintf(buf, len, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
    }
}

/* One look at the sweep. */
struct ctl_watch_view {
    int64_t samples_done, samples_total;
    int64_t shards_running;
};

/* Samples of shards with an outcome, plus the progress of running shards. */
static int ctl_watch_look(struct gq *g, const struct ctl_sweep *sw, struct ctl_watch_view *v)
{
    char *term_key = ctl_key(g, "sweep:%s:term", sw->sid);
    char *leases_key = ctl_key(g, "leases");
    struct gq_reply term = { 0 }, leases = { 0 };
    int err = ctl_cmd(g, &term, 2, "GET", term_key);
    if (!err) {
        err = ctl_cmd(g, &leases, 4, "ZRANGE", leases_key, "0", "-1");
    }
    free(term_key);
    free(leases_key);
    memset(v, 0, sizeof(*v));
    bool by_samples = sw->n_samples > 0 && sw->shard_size > 0;
    v->samples_total = by_samples ? sw->n_samples : sw->expected;
    for (int64_t i = 0; !err && i < sw->expected; i++) {
        if (ctl_bit(&term, i)) {
            v->samples_done += by_samples ? ctl_sweep_shard_samples(sw, i) : 1;
        }
    }
    size_t sid_len = strlen(sw->sid);
    for (size_t k = 0; !err && k < leases.n; k++) {
        const char *jid = leases.str[k];
        char *end;
        if (strncmp(jid, sw->sid, sid_len) != 0 || jid[sid_len] != ':') {
            continue;
        }
        long long shard = strtoll(jid + sid_len + 1, &end, 10);
        if (*end || end == jid + sid_len + 1 || ctl_bit(&term, shard)) {
            continue;
        }
        v->shards_running++;
        char *job_key = ctl_key(g, "job:%s", jid);
        struct gq_reply p = { 0 };
        err = ctl_cmd(g, &p, 3, "HGET", job_key, "progress");
        free(job_key);
        long long done = p.n == 1 ? strtoll(p.str[0], NULL, 10) : 0;
        int64_t cap = ctl_sweep_shard_samples(sw, shard);
        if (by_samples && done > 0) {
            v->samples_done += done < cap ? done : cap;
        }
        gq_reply_free(&p);
    }
    gq_reply_free(&term);
    gq_reply_free(&leases);
    return err;
}

/* The state of a sweep's aggregate job ("" when none). Caller frees. */
static char *ctl_watch_agg_state(struct gq *g, const struct ctl_sweep *sw)
{
    if (!*sw->agg_job) {
        return xstrdup("");
    }
    char *key = ctl_key(g, "job:%s", sw->agg_job);
    struct gq_reply r = { 0 };
    char *state = xstrdup(ctl_cmd(g, &r, 3, "HGET", key, "state") == 0 && r.n == 1 ? r.str[0] : "");
    gq_reply_free(&r);
    free(key);
    return state;
}

int ctl_watch_sweep(struct gq *g, const char *sid, int interval_ms)
{
    bool tty = isatty(STDERR_FILENO);
    if (interval_ms <= 0) {
        interval_ms = tty ? 500 : 5000;
    }
    double t0 = ctl_watch_clock(), t_line = -1e9;
    int64_t done0 = -1;
    int n_errors = 0;
    for (;;) {
        struct ctl_sweep sw;
        struct ctl_watch_view v;
        int err = ctl_sweep_load(g, sid, &sw);
        if (err == -ENOENT) {
            fprintf(stderr, "%sjudgectl watch: no sweep named '%s'\n", tty ? "\n" : "", sid);
            return 1;
        }
        if (!err && (err = ctl_watch_look(g, &sw, &v)) != 0) {
            ctl_sweep_free(&sw);
        }
        if (err) {
            /* Redis restarting or a failover: keep watching for a while */
            if (++n_errors > 10 || gq_reconnect(g) != 0) {
                fprintf(stderr, "%sjudgectl watch: %s\n", tty ? "\n" : "", gq_errstr(g));
                if (n_errors > 10) {
                    return 1;
                }
            }
            usleep(1000000);
            continue;
        }
        n_errors = 0;
        double now = ctl_watch_clock();
        if (done0 < 0) {
            done0 = v.samples_done;
        }
        bool done = strcmp(sw.state, "done") == 0, cancelled = strcmp(sw.state, "cancelled") == 0;
        char *agg_state = NULL;
        bool agg_failed = false;
        if (strcmp(sw.state, "aggregating") == 0) {
            agg_state = ctl_watch_agg_state(g, &sw);
            agg_failed = strcmp(agg_state, "dead") == 0 || strcmp(agg_state, "cancelled") == 0;
        }
        const char *unit = sw.n_samples > 0 && sw.shard_size > 0 ? "samples" : "shards";
        if (done || cancelled || agg_failed) {
            char took[32];
            ctl_fmt_secs(now - t0, took, sizeof(took));
            fprintf(stderr,
                    "%ssweep %s %s: %" PRId64 "/%" PRId64 " %s, %" PRId64 " shards ok, %" PRId64
                    " failed of %" PRId64 "%s%s (watched %s)\n",
                    tty ? "\r\033[K" : "", sid,
                    agg_failed ? "ended without its aggregate" : sw.state, v.samples_done,
                    v.samples_total, unit, sw.ok, sw.failed, sw.expected,
                    agg_failed ? "; aggregate job " : "", agg_failed ? agg_state : "", took);
            int rc = done && sw.failed == 0 ? 0 : 1;
            free(agg_state);
            ctl_sweep_free(&sw);
            return rc;
        }
        free(agg_state);
        if (tty || now - t_line >= interval_ms / 1000.0 - 1e-3) {
            double rate = now > t0 ? (double)(v.samples_done - done0) / (now - t0) : 0;
            char eta[32] = "-";
            if (rate > 0) {
                ctl_fmt_secs((double)(v.samples_total - v.samples_done) / rate, eta, sizeof(eta));
            }
            char bar[31];
            int64_t total = v.samples_total > 0 ? v.samples_total : 1;
            int filled = (int)(30 * (v.samples_done < total ? v.samples_done : total) / total);
            for (int i = 0; i < 30; i++) {
                bar[i] = i < filled ? '#' : '.';
            }
            bar[30] = '\0';
            fprintf(stderr,
                    "%s%s [%s] %" PRId64 "/%" PRId64
                    " %s (%.1f%%) %.2f %s/s ETA %s | shards %" PRId64 " ok, %" PRId64
                    " failed, %" PRId64 " running of %" PRId64 " (%s)%s",
                    tty ? "\r" : "", sid, bar, v.samples_done, v.samples_total, unit,
                    100.0 * (double)v.samples_done / (double)total, rate, unit, eta, sw.ok,
                    sw.failed, v.shards_running, sw.expected, sw.state, tty ? "\033[K" : "\n");
            fflush(stderr);
            t_line = now;
        }
        ctl_sweep_free(&sw);
        usleep((useconds_t)(tty ? interval_ms : (interval_ms < 1000 ? interval_ms : 1000)) * 1000);
    }
}

int ctl_watch(int argc, char **argv)
{
    struct ctl_redis ro;
    ctl_redis_init(&ro);
    const char *interval = NULL;
    const struct ctl_opt opts[] = { { "interval-ms", 0, NULL, &interval } };
    int first, rc = ctl_args_parse(CTL_WATCH_USAGE, argc, argv, &ro, opts, 1, 1, 1, &first);
    if (rc >= 0) {
        return rc;
    }
    int64_t ms = 0;
    if (interval && (rc = ctl_int_arg("watch", "--interval-ms", interval, 50, 3600000, &ms))) {
        return rc;
    }
    struct gq *g;
    if (ctl_redis_connect(&ro, "watch", &g) != 0) {
        return 1;
    }
    rc = ctl_watch_sweep(g, argv[first], (int)ms);
    gq_destroy(g);
    return rc;
}
