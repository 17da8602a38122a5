/* daemon_heartbeat.c - the heartbeat thread: renews the lease of every shard in flight every
 * heartbeat_ms over its own Redis connection (so a busy engine thread can never starve it),
 * carries progress, learns about cancellation and lost leases, self-fences a shard whose lease
 * could not be renewed in time, reaps expired leases of every worker, registers this worker,
 * and fires due schedules. */
#include "common/cron.h"
#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "daemon/daemon.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#undef LOG_MODULE
#define LOG_MODULE "heartbeat"

int daemon_lease_add(struct daemon *d, const char *jid, const char *token, int64_t total)
{
    int slot = -1;
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < d->cfg.max_shards; i++) {
        if (!d->leases[i].used) {
            struct daemon_lease *l = &d->leases[i];
            memset(l, 0, sizeof(*l));
            l->used = true;
            snprintf(l->jid, sizeof(l->jid), "%s", jid);
            memcpy(l->token, token, sizeof(l->token));
            l->renewed_ms = daemon_now_ms(); /* the claim itself set the lease */
            l->total = total;
            slot = i;
            break;
        }
    }
    pthread_mutex_unlock(&d->mu);
    return slot;
}

void daemon_lease_remove(struct daemon *d, int slot)
{
    pthread_mutex_lock(&d->mu);
    d->leases[slot].used = false;
    pthread_mutex_unlock(&d->mu);
}

struct hb {
    struct daemon *d;
    struct daemon_redis r;
    struct gq *g; /* r.g */
};

static bool hb_ready(struct hb *h)
{
    bool up = daemon_redis_ready(h->d, &h->r);
    h->g = h->r.g;
    return up;
}

static void hb_broken(struct hb *h, const char *what)
{
    daemon_redis_broken(h->d, &h->r, what);
    h->g = NULL;
}

/* Renews every lease once. */
static void hb_renew(struct hb *h)
{
    struct daemon *d = h->d;
    for (int i = 0; i < d->cfg.max_shards; i++) {
        char jid[256], token[GQ_TOKEN_LEN + 1], progress[64];
        pthread_mutex_lock(&d->mu);
        struct daemon_lease *l = &d->leases[i];
        bool live = l->used && !l->lost;
        if (live) {
            memcpy(jid, l->jid, sizeof(jid));
            memcpy(token, l->token, sizeof(token));
            snprintf(progress, sizeof(progress), "%lld/%lld", (long long)l->done,
                     (long long)l->total);
        }
        pthread_mutex_unlock(&d->mu);
        if (!live || !hb_ready(h)) {
            continue;
        }
        int64_t t_send = daemon_now_ms();
        enum gq_status st;
        char cancel[16];
        int err = gq_heartbeat(h->g, jid, token, d->cfg.lease_ms, progress, NULL, 0, &st, cancel);
        if (err == -EIO) {
            hb_broken(h, "heartbeat");
            continue;
        }
        atomic_store(&d->m.hb_rtt_us, (daemon_now_ms() - t_send) * 1000);
        atomic_fetch_add(&d->m.heartbeats, 1);
        pthread_mutex_lock(&d->mu);
        if (l->used && strcmp(l->token, token) == 0) {
            if (err) {
                log_error("heartbeat of %s refused: %s", jid, gq_errstr(h->g));
            } else if (st == GQ_LOST) {
                l->lost = true;
            } else {
                l->renewed_ms = t_send;
                memcpy(l->cancel, cancel, sizeof(l->cancel));
            }
        }
        pthread_mutex_unlock(&d->mu);
    }
}

/* Self-fencing: a lease not renewed within lease - heartbeat/2 of its last confirmed renewal
 * may already be someone else's; its shard stops and its results are discarded. */
static void hb_fence(struct daemon *d)
{
    int64_t now = daemon_now_ms();
    int64_t limit = d->cfg.lease_ms - d->cfg.heartbeat_ms / 2;
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < d->cfg.max_shards; i++) {
        struct daemon_lease *l = &d->leases[i];
        if (l->used && !l->lost && now - l->renewed_ms > limit) {
            l->lost = true;
            l->fenced = true;
            atomic_fetch_add(&d->m.self_fenced, 1);
        }
    }
    pthread_mutex_unlock(&d->mu);
}

static void hb_register(struct hb *h)
{
    struct daemon *d = h->d;
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    json_t *o = json_pack("{s:s, s:i, s:s, s:s, s:I, s:I, s:b}", "host", host, "pid", (int)getpid(),
                          "version", DAEMON_VERSION, "devices", d->cfg.devices, "shards",
                          (json_int_t)atomic_load(&d->m.shards_in_flight), "samples_done",
                          (json_int_t)atomic_load(&d->m.samples_done), "draining",
                          atomic_load(&d->m.draining));
    char *info = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (gq_worker_register(h->g, d->cfg.worker_id, info, 3 * d->cfg.heartbeat_ms + 1000) == -EIO) {
        hb_broken(h, "worker registration");
    }
    free(info);
}

/* Redis server time in ms, or -1. */
static int64_t hb_server_ms(struct hb *h)
{
    const char *argv[] = { "TIME" };
    struct gq_reply rep = { 0 };
    if (gq_command(h->g, 1, argv, NULL, &rep) != 0 || rep.n != 2) {
        gq_reply_free(&rep);
        return -1;
    }
    int64_t ms = atoll(rep.str[0]) * 1000 + atoll(rep.str[1]) / 1000;
    gq_reply_free(&rep);
    return ms;
}

/* Fires each schedule's latest due run, once between all daemons (gq_schedule_fire refuses a
 * due time that is not after the last fired one). Runs missed while no daemon was up collapse
 * into the latest one. */
static void hb_schedules(struct hb *h)
{
    const char *smembers[2];
    char key[512];
    snprintf(key, sizeof(key), "%sschedules", gq_prefix(h->g));
    smembers[0] = "SMEMBERS";
    smembers[1] = key;
    struct gq_reply names = { 0 };
    if (gq_command(h->g, 2, smembers, NULL, &names) != 0) {
        return;
    }
    int64_t now = hb_server_ms(h);
    for (size_t i = 0; i < names.n && now > 0; i++) {
        snprintf(key, sizeof(key), "%ssched:%s", gq_prefix(h->g), names.str[i]);
        const char *hmget[] = { "HMGET", key, "cron", "last_due_ms", "meta" };
        struct gq_reply s = { 0 };
        if (gq_command(h->g, 5, hmget, NULL, &s) != 0 || s.n != 3 || !s.str[0][0]) {
            gq_reply_free(&s);
            continue;
        }
        struct cron c;
        char errstr[ERRSTR_LEN];
        if (cron_parse(s.str[0], &c, errstr, sizeof(errstr)) != 0) {
            log_error("schedule %s: %s", names.str[i], errstr);
            gq_reply_free(&s);
            continue;
        }
        time_t last = (time_t)(atoll(s.str[1]) / 1000);
        time_t due = -1;
        for (int k = 0; k < 100000; k++) {
            time_t next = cron_next(&c, last);
            if (next < 0 || (int64_t)next * 1000 > now) {
                break;
            }
            due = last = next;
        }
        if (due >= 0) {
            json_t *meta = json_loads(s.str[2], 0, NULL);
            const char *queue = json_string_value(json_object_get(meta, "queue"));
            json_int_t prio = json_integer_value(json_object_get(meta, "priority"));
            json_int_t attempts = json_integer_value(json_object_get(meta, "max_attempts"));
            json_int_t budget = json_integer_value(json_object_get(meta, "run_budget_ms"));
            struct tm tm;
            gmtime_r(&due, &tm);
            char sid[300], due_ms[32], p[24], a[24], b[32];
            snprintf(sid, sizeof(sid), "%s-%04d%02d%02dT%02d%02d", names.str[i], tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min);
            snprintf(due_ms, sizeof(due_ms), "%lld", (long long)due * 1000);
            snprintf(p, sizeof(p), "%lld", (long long)prio);
            snprintf(a, sizeof(a), "%lld", (long long)(attempts > 0 ? attempts : 3));
            snprintf(b, sizeof(b), "%lld", (long long)budget);
            char first[256];
            pthread_mutex_lock(&h->d->mu);
            snprintf(first, sizeof(first), "%s", h->d->cfg.queues[0]);
            pthread_mutex_unlock(&h->d->mu);
            const char *q = queue ? queue : first;
            const char *argv[] = { names.str[i], due_ms, sid, q, p, a, b, q };
            struct gq_reply rep = { 0 };
            if (gq_fcall(h->g, "gq_schedule_fire", 8, argv, NULL, &rep) == 0 && rep.n > 0 &&
                strcmp(rep.str[0], "ok") == 0) {
                log_info("schedule %s: fired sweep %s", names.str[i], sid);
            }
            gq_reply_free(&rep);
            json_decref(meta);
        }
        gq_reply_free(&s);
    }
    gq_reply_free(&names);
}

static void *hb_main(void *arg)
{
    struct daemon *d = arg;
    /* a heartbeat that takes longer than its interval is as good as lost */
    struct hb h = { .d = d };
    h.r = (struct daemon_redis){
        .who = "redis (heartbeat)",
        .timeout_ms =
            (int)(d->cfg.heartbeat_ms < d->cfg.redis_timeout_ms ? d->cfg.heartbeat_ms
                                                                : d->cfg.redis_timeout_ms),
        .backoff_base_ms = 100,
        .backoff_cap_ms = 2000,
    };
    int64_t next_hb = 0, next_reap = 0, next_reg = 0, next_sched = 0;
    while (!atomic_load(&d->hb_stop)) {
        int64_t now = daemon_now_ms();
        if (now >= next_hb) {
            next_hb = now + d->cfg.heartbeat_ms;
            hb_renew(&h);
        }
        hb_fence(d);
        if (now >= next_reap && hb_ready(&h)) {
            next_reap = now + d->cfg.reap_ms;
            int n = 0;
            int64_t backoff = gq_backoff_ms(1, d->cfg.backoff_base_ms, d->cfg.backoff_cap_ms);
            int err = gq_reap(h.g, 200, d->cfg.max_stalls, backoff, &n);
            if (err == -EIO) {
                hb_broken(&h, "reap");
            } else if (n > 0) {
                atomic_fetch_add(&d->m.reaped, (unsigned long long)n);
                log_info("reaped %d expired leases", n);
            }
        }
        if (now >= next_reg && hb_ready(&h)) {
            next_reg = now + d->cfg.heartbeat_ms;
            hb_register(&h);
        }
        if (now >= next_sched && !atomic_load(&d->m.draining) && hb_ready(&h)) {
            next_sched = now + d->cfg.schedule_ms;
            hb_schedules(&h);
        }
        /* sleep to the next event, at most a quarter of a heartbeat (the self-fencing check):
         * on a small machine every wake-up takes a core from the engine's OpenMP team, which
         * then waits at its next barrier */
        int64_t next = next_hb < next_reap ? next_hb : next_reap;
        next = next < next_reg ? next : next_reg;
        int64_t cap = d->cfg.heartbeat_ms / 4 < 10 ? 10 : d->cfg.heartbeat_ms / 4;
        int64_t wait = next - daemon_now_ms();
        wait = wait < 1 ? 1 : wait > cap ? cap : wait;
        usleep((useconds_t)wait * 1000);
    }
    gq_destroy(h.r.g);
    return NULL;
}

int daemon_heartbeat_start(struct daemon *d, char *errstr, size_t errstr_len)
{
    atomic_store(&d->hb_stop, false);
    int err = pthread_create(&d->hb_thread, NULL, hb_main, d);
    if (err) {
        errstr_set(errstr, errstr_len, "cannot start the heartbeat thread: %s", strerror(err));
        return -err;
    }
    return 0;
}

void daemon_heartbeat_stop(struct daemon *d)
{
    atomic_store(&d->hb_stop, true);
    pthread_join(d->hb_thread, NULL);
}
