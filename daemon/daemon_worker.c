/* daemon_worker.c - the main thread of judged's worker: claims shard jobs while some device is
 * below its watermark of queued prompt tokens, parses each and hands it to the least loaded
 * device (daemon_device.c runs it), and turns the devices' outcomes into Redis calls: a finished
 * shard is committed in one fenced call, a failed attempt is failed (retried with jittered
 * backoff, dead after max_attempts), a stopped one is acknowledged or released. Aggregate jobs
 * (a sweep's fan-in) run here: they merge the shard results and compute the metrics.
 *
 * Reliability rules (research/queues.md §7):
 * - a shard whose lease is lost (heartbeat said lost, or could not renew before the deadline:
 *   self-fencing) is stopped and its results are discarded, never committed;
 * - a commit whose reply is lost (Redis went away) is retried identically after reconnecting:
 *   gq_complete answers ok, dup or lost, never a double count;
 * - a drain (SIGTERM) stops claiming, lets shards finish within drain_grace_ms, and hands the
 *   rest back with gq_release and a checkpoint holding the samples already judged, which the
 *   next attempt skips;
 * - a bad payload fails its job for good; a missing model or an engine failure fails the attempt
 *   (retried with jittered backoff, dead after max_attempts). */
#include "daemon/daemon_worker.h"

#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "daemon/daemon.h"
#include "jobs/eval.h"
#include "jobs/job.h"
#include "jobs/judge.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#undef LOG_MODULE
#define LOG_MODULE "worker"

int64_t daemon_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- Redis connection ------------------------------------------------------------------------ */

static bool dw_redis_ready(struct dw *w)
{
    bool up = daemon_redis_ready(w->d, &w->r);
    w->g = w->r.g;
    atomic_store(&w->d->m.redis_up, up);
    return up;
}

static void dw_redis_broken(struct dw *w, const char *what)
{
    daemon_redis_broken(w->d, &w->r, what);
    w->g = NULL;
    atomic_store(&w->d->m.redis_up, false);
}

/* The question_ids of a result blob (or checkpoint), for skipping judged samples. */
static bool dw_ckpt_has(const char *ckpt, size_t len, int64_t qid)
{
    for (size_t p = 0; p < len;) {
        const char *nl = memchr(ckpt + p, '\n', len - p);
        size_t end = nl ? (size_t)(nl - ckpt) : len;
        if (end > p && strtoll(ckpt + p, NULL, 10) == qid) {
            return true;
        }
        p = end + 1;
    }
    return false;
}

/* Fails the attempt of a claimed job (retryable: jittered backoff; else dead now). */
static void dw_fail(struct dw *w, const struct gq_claimed *c, const char *reason, bool retryable)
{
    struct daemon *d = w->d;
    int64_t backoff = gq_backoff_ms(c->attempts, d->cfg.backoff_base_ms, d->cfg.backoff_cap_ms);
    enum gq_status st = GQ_LOST;
    atomic_fetch_add(&d->m.fails, 1);
    for (int tries = 0; tries < 3; tries++) {
        if (!dw_redis_ready(w)) {
            usleep(200000);
            continue;
        }
        int err = gq_fail(w->g, c->jid, c->token, reason, retryable, backoff, &st);
        if (err == -EIO) {
            dw_redis_broken(w, "fail");
            continue;
        }
        if (err) {
            log_error("job %s: fail refused: %s", c->jid, gq_errstr(w->g));
        }
        break;
    }
    log_warn("job %s attempt %d failed (%s): %s", c->jid, c->attempts,
             st == GQ_RETRY  ? "will retry"
             : st == GQ_DEAD ? "dead"
                             : gq_status_name(st),
             reason);
    if (st == GQ_DEAD) {
        atomic_fetch_add(&d->m.shards_failed, 1);
    }
}

/* ---- shards ---------------------------------------------------------------------------------- */

/* Frees a shard that is back from its device (or never left). */
static void dw_shard_free(struct dw *w, struct dw_shard *sh)
{
    if (sh->lease_slot >= 0) {
        daemon_lease_remove(w->d, sh->lease_slot);
    }
    judge_job_destroy(sh->job);
    judge_samples_free(sh->samples, sh->n_samples);
    job_spec_destroy(sh->spec);
    gq_claimed_free(&sh->claim);
    free(sh->model_path);
    free(sh->ckpt);
    free(sh->result);
    memset(sh, 0, sizeof(*sh));
    sh->lease_slot = -1;
    atomic_fetch_sub(&w->d->m.shards_in_flight, 1);
}

/* Commits a finished shard. Returns false when Redis is unreachable (retry later). */
static bool dw_shard_commit(struct dw *w, struct dw_shard *sh)
{
    struct daemon *d = w->d;
    if (!dw_redis_ready(w)) {
        return false;
    }
    enum gq_status st;
    int err = gq_complete(w->g, sh->claim.jid, sh->claim.token, sh->result, sh->result_len, &st);
    if (err == -EIO) {
        dw_redis_broken(w, "complete");
        return false; /* the identical call is repeated after reconnecting */
    }
    if (err) {
        log_error("job %s: commit refused: %s", sh->claim.jid, gq_errstr(w->g));
        dw_fail(w, &sh->claim, gq_errstr(w->g), false);
    } else if (st == GQ_OK) {
        atomic_fetch_add(&d->m.completes, 1);
        log_info("job %s committed: %zu requests in %.1f s (attempt %d)", sh->claim.jid, sh->n_req,
                 (double)(daemon_now_ms() - sh->t_start_ms) / 1000.0, sh->claim.attempts);
    } else if (st == GQ_DUP) {
        atomic_fetch_add(&d->m.commit_dups, 1);
        log_info("job %s: commit was a replay (dup)", sh->claim.jid);
    } else {
        atomic_fetch_add(&d->m.commit_lost, 1);
        log_warn("job %s: commit refused, lease lost (%s); result discarded", sh->claim.jid,
                 gq_status_name(st));
    }
    return true;
}

/* Hands a stopped shard back with its checkpoint. Returns false to retry later. */
static bool dw_shard_release(struct dw *w, struct dw_shard *sh)
{
    struct daemon *d = w->d;
    if (!dw_redis_ready(w)) {
        return daemon_now_ms() > w->drain_deadline_ms + d->cfg.lease_ms; /* the lease expires */
    }
    enum gq_status st = GQ_LOST;
    int err = gq_release(w->g, sh->claim.jid, sh->claim.token, sh->result, sh->result_len,
                         d->cfg.max_interrupts, &st);
    if (err == -EIO) {
        dw_redis_broken(w, "release");
        return false;
    }
    if (err == 0) {
        atomic_fetch_add(&d->m.releases, 1);
    }
    log_info("job %s released with a checkpoint of %zu bytes: %s", sh->claim.jid, sh->result_len,
             err ? gq_errstr(w->g) : gq_status_name(st));
    return true;
}

/* Acknowledges a cancelled shard. Returns false to retry later. */
static bool dw_shard_cancelled(struct dw *w, struct dw_shard *sh)
{
    if (!dw_redis_ready(w)) {
        return false;
    }
    enum gq_status st;
    int err = gq_cancelled(w->g, sh->claim.jid, sh->claim.token, &st);
    if (err == -EIO) {
        dw_redis_broken(w, "cancelled");
        return false;
    }
    atomic_fetch_add(&w->d->m.cancels, 1);
    log_info("job %s stopped: cancel '%s' (%s)", sh->claim.jid, sh->cancel,
             err ? gq_errstr(w->g) : gq_status_name(st));
    return true;
}

/* Turns the devices' outcomes into Redis calls. A shard whose call could not reach Redis stays
 * in the outbox for the next round. */
static void dw_outbox(struct dw *w)
{
    pthread_mutex_lock(&w->out_mu);
    struct dw_shard *list = w->outbox;
    w->outbox = NULL;
    pthread_mutex_unlock(&w->out_mu);
    struct dw_shard *keep = NULL;
    while (list) {
        struct dw_shard *sh = list;
        list = sh->next;
        sh->next = NULL;
        bool handled = true;
        switch (sh->outcome) {
        case DW_OUTCOME_DONE:
            handled = dw_shard_commit(w, sh);
            break;
        case DW_OUTCOME_FAILED:
            dw_fail(w, &sh->claim, sh->errstr, sh->retryable);
            break;
        case DW_OUTCOME_ABORTED:
            if (atomic_load(&sh->abort) == DW_ABORT_RELEASE) {
                handled = dw_shard_release(w, sh);
            } else if (sh->cancel[0]) {
                handled = dw_shard_cancelled(w, sh);
            }
            break;
        case DW_OUTCOME_NONE:
            break;
        }
        if (handled) {
            dw_shard_free(w, sh);
        } else {
            sh->next = keep;
            keep = sh;
        }
    }
    if (keep) {
        pthread_mutex_lock(&w->out_mu);
        struct dw_shard *tail = keep;
        while (tail->next) {
            tail = tail->next;
        }
        tail->next = w->outbox;
        w->outbox = keep;
        pthread_mutex_unlock(&w->out_mu);
    }
}

/* ---- aggregate jobs -------------------------------------------------------------------------- */

/* Merges a sweep's shard results and computes its metrics (with labels); the JSON summary is
 * the aggregate job's result. */
static int dw_aggregate(struct dw *w, const char *sid, char **out, char *errstr, size_t errstr_len)
{
    char key[512];
    snprintf(key, sizeof(key), "%ssweep:%s:res", gq_prefix(w->g), sid);
    const char *hgetall[] = { "HGETALL", key };
    struct gq_reply rep = { 0 };
    int err = gq_command(w->g, 2, hgetall, NULL, &rep);
    if (err) {
        errstr_set(errstr, errstr_len, "%s", gq_errstr(w->g));
        return err;
    }
    size_t n_blobs = rep.n / 2;
    const char **blobs = xcalloc(n_blobs + 1, sizeof(*blobs));
    const char **names = xcalloc(n_blobs + 1, sizeof(*names));
    size_t *lens = xcalloc(n_blobs + 1, sizeof(*lens));
    for (size_t i = 0; i < n_blobs; i++) {
        names[i] = rep.str[2 * i];
        blobs[i] = rep.str[2 * i + 1];
        lens[i] = rep.len[2 * i + 1];
    }
    char *records = NULL;
    size_t records_len = 0, n_records = 0;
    FILE *f = open_memstream(&records, &records_len);
    err = judge_results_merge(blobs, lens, names, n_blobs, f, &n_records, errstr, errstr_len);
    fclose(f);
    json_t *o = json_object();
    json_object_set_new(o, "sweep", json_string(sid));
    json_object_set_new(o, "n_records", json_integer((json_int_t)n_records));
    json_object_set_new(o, "n_shards_ok", json_integer((json_int_t)n_blobs));
    if (!err) {
        snprintf(key, sizeof(key), "%ssweep:%s:labels", gq_prefix(w->g), sid);
        const char *get[] = { "GET", key };
        struct gq_reply lab = { 0 };
        err = gq_command(w->g, 2, get, NULL, &lab);
        if (err) {
            errstr_set(errstr, errstr_len, "%s", gq_errstr(w->g));
        } else if (lab.n == 1 && lab.len[0] > 0 && n_records > 0) {
            struct eval_metrics m;
            char merr[ERRSTR_LEN];
            if (judge_results_metrics(blobs, lens, names, n_blobs, lab.str[0], lab.len[0], &m, merr,
                                      sizeof(merr)) == 0) {
                json_object_set_new(o, "metrics", eval_metrics_json(&m));
            } else {
                json_object_set_new(o, "metrics_error", json_string(merr));
            }
        }
        gq_reply_free(&lab);
    }
    if (!err) {
        *out = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12));
    }
    json_decref(o);
    free(records);
    free(blobs);
    free(names);
    free(lens);
    gq_reply_free(&rep);
    return err;
}

static void dw_run_aggregate(struct dw *w, struct gq_claimed *c, const char *sid)
{
    char errstr[ERRSTR_LEN];
    char *result = NULL;
    int err = dw_aggregate(w, sid, &result, errstr, sizeof(errstr));
    if (err == -EIO) {
        dw_redis_broken(w, "aggregate");
        return; /* the lease expires and another attempt runs it */
    }
    if (err) {
        dw_fail(w, c, errstr, err != -EINVAL);
        return;
    }
    enum gq_status st;
    for (int tries = 0; tries < 5; tries++) {
        if (!dw_redis_ready(w)) {
            usleep(200000);
            continue;
        }
        err = gq_complete(w->g, c->jid, c->token, result, strlen(result), &st);
        if (err == -EIO) {
            dw_redis_broken(w, "complete");
            continue;
        }
        if (!err) {
            atomic_fetch_add(&w->d->m.aggregates, 1);
            log_info("sweep %s aggregated (%s)", sid, gq_status_name(st));
        }
        break;
    }
    free(result);
}

/* ---- claiming -------------------------------------------------------------------------------- */

static struct dw_shard *dw_shard_free_slot(struct dw *w)
{
    for (int i = 0; i < w->d->cfg.max_shards; i++) {
        if (!w->shards[i].used) {
            return &w->shards[i];
        }
    }
    return NULL;
}

/* Parses a claimed judge shard and hands it to a device. Takes ownership of *c. */
static void dw_start_shard(struct dw *w, struct dw_shard *sh, struct gq_claimed *c)
{
    struct daemon *d = w->d;
    char errstr[ERRSTR_LEN];
    struct job_spec *spec = NULL;
    struct judge_sample *samples = NULL;
    size_t n = 0;
    int err = judge_shard_parse(c->payload, c->payload_len, c->jid, &spec, &samples, &n, errstr,
                                sizeof(errstr));
    if (err) {
        dw_fail(w, c, errstr, false); /* a bad payload never gets better */
        gq_claimed_free(c);
        return;
    }
    const char *path = daemon_config_model_path(&d->cfg, spec->model);
    if (!path) {
        errstr_set(errstr, sizeof(errstr),
                   "field 'model': '%s' is neither a model directory on this host nor a model "
                   "name in %s",
                   spec->model, d->cfg.path);
        judge_samples_free(samples, n);
        job_spec_destroy(spec);
        dw_fail(w, c, errstr, true);
        gq_claimed_free(c);
        return;
    }
    /* samples already judged by an earlier, interrupted attempt are carried over */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (c->checkpoint_len &&
            dw_ckpt_has(c->checkpoint, c->checkpoint_len, samples[i].question_id)) {
            judge_sample_clear(&samples[i]);
            continue;
        }
        samples[kept++] = samples[i];
    }
    memset(sh, 0, sizeof(*sh));
    sh->used = true;
    sh->claim = *c;
    memset(c, 0, sizeof(*c));
    sh->spec = spec;
    sh->samples = samples;
    sh->n_samples = kept;
    sh->model_path = xstrdup(path);
    sh->t_start_ms = daemon_now_ms();
    if (sh->claim.checkpoint_len) {
        sh->ckpt = xmalloc(sh->claim.checkpoint_len + 1);
        memcpy(sh->ckpt, sh->claim.checkpoint, sh->claim.checkpoint_len);
        sh->ckpt_len = sh->claim.checkpoint_len;
    }
    sh->lease_slot = daemon_lease_add(d, sh->claim.jid, sh->claim.token, 0);
    atomic_fetch_add(&d->m.shards_in_flight, 1);
    struct dw_device *dev = dw_device_pick(w);
    log_info("job %s claimed (attempt %d): %zu samples to %s", sh->claim.jid, sh->claim.attempts,
             kept, dev->name);
    dw_device_push(dev, sh);
}

/* Whether a device has room for another shard: below the watermark, nothing waiting to start. */
static bool dw_room(const struct dw *w)
{
    for (int i = 0; i < w->n_devices; i++) {
        const struct dw_device *dev = &w->devices[i];
        if (atomic_load(&dev->queued_tokens) < w->d->cfg.watermark_tokens &&
            atomic_load(&dev->n_pending) == 0) {
            return true;
        }
    }
    return false;
}

/* Claims one job when there is room. Returns true when a job was claimed. */
static bool dw_claim(struct dw *w)
{
    struct daemon *d = w->d;
    int64_t now = daemon_now_ms();
    if (d->stop || now < w->next_claim_ms || !dw_room(w) || !dw_redis_ready(w)) {
        return false;
    }
    struct dw_shard *sh = dw_shard_free_slot(w);
    if (!sh) {
        return false;
    }
    struct gq_claimed c;
    bool got = false;
    int err = gq_claim(w->g, d->cfg.worker_id, d->cfg.lease_ms, (const char *const *)d->cfg.queues,
                       (size_t)d->cfg.n_queues, &c, &got);
    if (err == -EIO) {
        /* the claim may have happened: adopt it through its token after reconnecting, else
         * Redis never saw it */
        char token[GQ_TOKEN_LEN + 1];
        memcpy(token, c.token, sizeof(token));
        dw_redis_broken(w, "claim");
        if (!dw_redis_ready(w) || gq_adopt(w->g, token, &c, &got) != 0 || !got) {
            return false;
        }
        log_warn("job %s: claim reply was lost; adopted through its token", c.jid);
        err = 0;
    }
    if (err) {
        log_error("claim refused: %s", gq_errstr(w->g));
        w->next_claim_ms = now + d->cfg.poll_ms;
        return false;
    }
    if (!got) {
        /* nothing ready: poll again after poll_ms, with jitter so daemons spread out */
        w->next_claim_ms =
            now + d->cfg.poll_ms / 2 + gq_backoff_ms(0, d->cfg.poll_ms, d->cfg.poll_ms) / 2;
        return false;
    }
    atomic_fetch_add(&d->m.claims, 1);
    json_t *root = json_loadb(c.payload, c.payload_len, 0, NULL);
    json_t *kind = root ? json_object_get(root, "kind") : NULL;
    if (json_is_string(kind) && strcmp(json_string_value(kind), "aggregate") == 0) {
        const char *sid = json_string_value(json_object_get(root, "sweep"));
        if (sid) {
            dw_run_aggregate(w, &c, sid);
        } else {
            dw_fail(w, &c, "aggregate payload without 'sweep'", false);
        }
        gq_claimed_free(&c);
    } else {
        dw_start_shard(w, sh, &c);
    }
    json_decref(root);
    return true;
}

/* ---- leases, drain, main loop ---------------------------------------------------------------- */

/* Acts on what the heartbeat thread learned: lost leases and cancellations stop their shards
 * (the device moves them to the outbox). */
static void dw_check_leases(struct dw *w)
{
    struct daemon *d = w->d;
    for (int i = 0; i < d->cfg.max_shards; i++) {
        struct dw_shard *sh = &w->shards[i];
        if (!sh->used || sh->stop_asked || sh->lease_slot < 0) {
            continue;
        }
        pthread_mutex_lock(&d->mu);
        struct daemon_lease *l = &d->leases[sh->lease_slot];
        bool lost = l->lost, fenced = l->fenced;
        char cancel[16];
        memcpy(cancel, l->cancel, sizeof(cancel));
        pthread_mutex_unlock(&d->mu);
        if (lost) {
            atomic_fetch_add(&d->m.lost_leases, 1);
            log_warn("job %s: %s; stopping it and discarding its results", sh->claim.jid,
                     fenced ? "lease not renewed in time (self-fenced)" : "lease lost");
        } else if (cancel[0]) {
            memcpy(sh->cancel, cancel, sizeof(sh->cancel));
        } else {
            continue;
        }
        sh->stop_asked = true;
        atomic_store(&sh->abort, DW_ABORT_DROP);
    }
}

static int dw_n_shards(const struct dw *w)
{
    int n = 0;
    for (int i = 0; i < w->d->cfg.max_shards; i++) {
        n += w->shards[i].used;
    }
    return n;
}

/* Sums the devices' gauges into the daemon's metrics. */
static void dw_gauges(struct dw *w)
{
    int64_t tokens = 0, kv_used = 0, kv_total = 0, running = 0, waiting = 0;
    for (int i = 0; i < w->n_devices; i++) {
        struct dw_device *dev = &w->devices[i];
        tokens += atomic_load(&dev->queued_tokens);
        kv_used += atomic_load(&dev->kv_used);
        kv_total += atomic_load(&dev->kv_total);
        running += atomic_load(&dev->running);
        waiting += atomic_load(&dev->waiting);
    }
    struct daemon_metrics *m = &w->d->m;
    atomic_store(&m->queued_tokens, tokens);
    atomic_store(&m->kv_blocks_used, kv_used);
    atomic_store(&m->kv_blocks_total, kv_total);
    atomic_store(&m->running_requests, running);
    atomic_store(&m->waiting_requests, waiting);
}

/* Waits up to ms for a device outcome. */
static void dw_wait_outbox(struct dw *w, int ms)
{
    pthread_mutex_lock(&w->out_mu);
    if (!w->outbox) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)ms * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->out_cv, &w->out_mu, &ts);
    }
    pthread_mutex_unlock(&w->out_mu);
}

int daemon_worker_run(struct daemon *d)
{
    struct dw w = { .d = d };
    w.r = (struct daemon_redis){ .who = "redis (worker)",
                                 .backoff_base_ms = 200,
                                 .backoff_cap_ms = 10000 };
    pthread_mutex_init(&w.out_mu, NULL);
    pthread_cond_init(&w.out_cv, NULL);
    w.shards = xcalloc((size_t)d->cfg.max_shards, sizeof(*w.shards));
    for (int i = 0; i < d->cfg.max_shards; i++) {
        w.shards[i].lease_slot = -1;
    }
    char errstr[ERRSTR_LEN];
    if (dw_devices_start(&w, errstr, sizeof(errstr)) != 0) {
        log_error("%s", errstr);
        free(w.shards);
        return 1;
    }
    const char *wd = getenv("WATCHDOG_USEC");
    w.watchdog_ms = wd ? atoll(wd) / 1000 : 0;
    bool announced = false;
    while (true) {
        int64_t now = daemon_now_ms();
        if (w.watchdog_ms > 0 && now >= w.next_watchdog_ms) {
            daemon_notify("WATCHDOG=1");
            w.next_watchdog_ms = now + w.watchdog_ms / 3;
        }
        if (!announced && dw_redis_ready(&w)) {
            atomic_store(&d->m.ready, true);
            daemon_notify("READY=1");
            log_info("worker %s ready: queues %s%s, lease %lld ms, max %d shards", d->cfg.worker_id,
                     d->cfg.queues[0], d->cfg.n_queues > 1 ? ", ..." : "",
                     (long long)d->cfg.lease_ms, d->cfg.max_shards);
            announced = true;
        }
        if (d->stop && !atomic_load(&d->m.draining)) {
            atomic_store(&d->m.draining, true);
            w.drain_deadline_ms = now + d->cfg.drain_grace_ms;
            daemon_notify("STOPPING=1");
            log_info("draining: %d shards in flight, grace %lld ms", dw_n_shards(&w),
                     (long long)d->cfg.drain_grace_ms);
        }
        if (atomic_load(&d->m.draining)) {
            if (dw_n_shards(&w) == 0) {
                break;
            }
            if (now >= w.drain_deadline_ms && !w.released) {
                /* hand back what is still running, with the samples judged so far */
                for (int i = 0; i < d->cfg.max_shards; i++) {
                    struct dw_shard *sh = &w.shards[i];
                    if (sh->used && !sh->stop_asked) {
                        sh->stop_asked = true;
                        atomic_store(&sh->abort, DW_ABORT_RELEASE);
                    }
                }
                w.released = true;
            }
        }
        if (d->reload) {
            d->reload = 0;
            daemon_config_reload(d);
        }
        dw_check_leases(&w);
        dw_outbox(&w);
        while (dw_claim(&w)) {
        }
        dw_gauges(&w);
        /* woken by a device (an outcome, or a shard taken from its inbox); otherwise leases
         * and claims are checked every poll_ms / 2, at most every 250 ms */
        int64_t wait = d->cfg.poll_ms / 2;
        dw_wait_outbox(&w, (int)(wait < 10 ? 10 : wait > 250 ? 250 : wait));
    }
    dw_devices_stop(&w);
    free(w.shards);
    gq_destroy(w.r.g);
    pthread_mutex_destroy(&w.out_mu);
    pthread_cond_destroy(&w.out_cv);
    log_info("drained; exiting");
    return 0;
}
