/* daemon_worker.c - the engine thread of judged: claims shard jobs while the schedulers are below
 * their watermark, renders and tokenizes each shard's prompts, feeds every request to the
 * scheduler of its model, steps the schedulers, and commits each finished shard in one fenced
 * call. Aggregate jobs (a sweep's fan-in) merge the shard results and compute the metrics.
 *
 * Reliability rules (research/queues.md §7):
 * - a shard whose lease is lost (heartbeat said lost, or could not renew before the deadline:
 *   self-fencing) is cancelled and its results are discarded, never committed;
 * - a commit whose reply is lost (Redis went away) is retried identically after reconnecting:
 *   gq_complete answers ok, dup or lost, never a double count;
 * - a drain (SIGTERM) stops claiming, lets shards finish within drain_grace_ms, and hands the
 *   rest back with gq_release and a checkpoint holding the samples already judged, which the
 *   next attempt skips;
 * - a bad payload fails its job for good; a missing model or an engine failure fails the attempt
 *   (retried with jittered backoff, dead after max_attempts). */
#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "daemon/daemon.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "jobs/eval.h"
#include "jobs/job.h"
#include "jobs/judge.h"
#include "scheduler/sched.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#undef LOG_MODULE
#define LOG_MODULE "worker"

struct dw_model {
    char *path;
    struct tok *tok;
    struct engine *e;
    struct sched *s;
    struct judge_token_probs *probs; /* [max_ctx] */
    int n_shards;
    int64_t last_used_ms;
};

struct dw_shard {
    bool used;
    int lease_slot;
    uint64_t sched_job;
    struct gq_claimed claim;
    struct job_spec *spec;
    struct judge_job *job;
    struct dw_model *model;
    size_t n_req, next_req, n_done;
    int64_t queued_tokens; /* prompt tokens submitted and not finished */
    char *ckpt;            /* result lines carried over from earlier attempts */
    size_t ckpt_len;
    char *result; /* set when every request is done; committed next */
    size_t result_len;
    int64_t t_start_ms;
};

struct dw {
    struct daemon *d;
    struct daemon_redis r;
    struct gq *g; /* r.g: NULL while disconnected */
    struct dw_model *models[DAEMON_MAX_MODELS];
    int n_models;
    struct dw_shard *shards; /* [cfg.max_shards] */
    uint64_t next_sched_job;
    int64_t next_claim_ms;
    int64_t drain_deadline_ms;
    int64_t watchdog_ms, next_watchdog_ms;
};

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

/* ---- models ---------------------------------------------------------------------------------- */

static void dw_model_destroy(struct dw_model *m)
{
    if (!m) {
        return;
    }
    sched_destroy(m->s);
    engine_destroy(m->e);
    tok_destroy(m->tok);
    free(m->probs);
    free(m->path);
    free(m);
}

/* Opens a model with the configured limits: the KV pool from kv_mib, at most max_seqs full
 * contexts. */
static int dw_model_open(const struct daemon_config *c, const char *path, struct dw_model **out,
                         char *errstr, size_t errstr_len)
{
    struct model_config mc;
    char *cfg_path = path_join(path, "config.json");
    int err = model_config_load(cfg_path, &mc, errstr, errstr_len);
    free(cfg_path);
    if (err) {
        return err;
    }
    struct engine_config ec;
    engine_config_default(&ec);
    if (strcmp(c->devices, "cpu") == 0) {
        ec.backend = ENGINE_BACKEND_CPU;
    } else if (engine_backend_parse(strncmp(c->devices, "cuda", 4) == 0 ? "cuda" : "auto",
                                    &ec.backend) != 0) {
        ec.backend = ENGINE_BACKEND_AUTO;
    }
    ec.n_threads = c->threads;
    ec.max_batch_tokens = c->max_batch_tokens;
    ec.max_outputs = c->max_seqs;
    ec.max_ctx = c->context > 0 ? c->context : mc.max_pos;
    size_t block_bytes = 2u * (size_t)mc.n_layers * (size_t)ec.kv_block_size *
                         (size_t)mc.n_kv_heads * (size_t)mc.head_dim * sizeof(float);
    int64_t want = (int64_t)c->kv_mib * 1024 * 1024 / (int64_t)block_bytes;
    int64_t cap = (int64_t)c->max_seqs * ((ec.max_ctx + ec.kv_block_size - 1) / ec.kv_block_size);
    ec.n_kv_blocks = (int32_t)(want < cap ? want : cap);
    struct dw_model *m = xcalloc(1, sizeof(*m));
    m->path = xstrdup(path);
    if ((err = tok_load_dir(path, &m->tok, errstr, errstr_len)) != 0 ||
        (err = engine_open(path, NULL, &ec, &m->e, errstr, errstr_len)) != 0) {
        dw_model_destroy(m);
        return err;
    }
    struct sched_config sc;
    sched_config_default(&sc);
    sc.max_batched_tokens = c->max_batch_tokens;
    sc.max_seqs = c->max_seqs;
    if ((err = sched_create(&sc, m->e, m->tok, &m->s)) != 0) {
        errstr_set(errstr, errstr_len, "%s: cannot create the scheduler", path);
        dw_model_destroy(m);
        return err;
    }
    m->probs = xcalloc((size_t)engine_get_config(m->e)->max_ctx, sizeof(*m->probs));
    log_info("model %s loaded: %s backend, context %d, KV pool of %d blocks", path,
             engine_backend_name(m->e), (int)engine_get_config(m->e)->max_ctx, (int)ec.n_kv_blocks);
    *out = m;
    return 0;
}

/* The loaded model for a directory, loading it (and unloading an idle one past max_models). */
static int dw_model_get(struct dw *w, const char *path, struct dw_model **out, char *errstr,
                        size_t errstr_len)
{
    for (int i = 0; i < w->n_models; i++) {
        if (strcmp(w->models[i]->path, path) == 0) {
            *out = w->models[i];
            return 0;
        }
    }
    if (w->n_models >= w->d->cfg.max_models) {
        int victim = -1;
        for (int i = 0; i < w->n_models; i++) {
            if (w->models[i]->n_shards == 0 &&
                (victim < 0 || w->models[i]->last_used_ms < w->models[victim]->last_used_ms)) {
                victim = i;
            }
        }
        if (victim < 0) {
            return -EAGAIN; /* every loaded model is busy: try the shard later */
        }
        log_info("model %s unloaded (idle; max_models %d)", w->models[victim]->path,
                 w->d->cfg.max_models);
        dw_model_destroy(w->models[victim]);
        w->models[victim] = w->models[--w->n_models];
    }
    struct dw_model *m;
    int err = dw_model_open(&w->d->cfg, path, &m, errstr, errstr_len);
    if (err) {
        return err;
    }
    w->models[w->n_models++] = m;
    *out = m;
    return 0;
}

/* ---- shards ---------------------------------------------------------------------------------- */

static void dw_shard_drop(struct dw *w, struct dw_shard *sh)
{
    if (sh->model) {
        if (sh->next_req > sh->n_done) {
            sched_cancel_job(sh->model->s, sh->sched_job);
        }
        sh->model->n_shards--;
        sh->model->last_used_ms = daemon_now_ms();
    }
    if (sh->lease_slot >= 0) {
        daemon_lease_remove(w->d, sh->lease_slot);
    }
    atomic_fetch_sub(&w->d->m.queued_tokens, sh->queued_tokens);
    judge_job_destroy(sh->job);
    job_spec_destroy(sh->spec);
    gq_claimed_free(&sh->claim);
    free(sh->ckpt);
    free(sh->result);
    memset(sh, 0, sizeof(*sh));
    sh->lease_slot = -1;
    atomic_fetch_sub(&w->d->m.shards_in_flight, 1);
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

/* The lines of every complete sample ("<qid>\t<record>\n"), after the carried-over ones. */
static char *dw_shard_lines(const struct dw_shard *sh, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (sh->ckpt_len) {
        fwrite(sh->ckpt, 1, sh->ckpt_len, f);
    }
    size_t n_samples = sh->job ? judge_job_n_samples(sh->job) : 0;
    for (size_t i = 0; i < n_samples; i++) {
        size_t rec_len;
        char *rec = judge_job_sample_record(sh->job, i, &rec_len);
        if (rec) {
            fprintf(f, "%lld\t", (long long)judge_job_sample(sh->job, i)->question_id);
            fwrite(rec, 1, rec_len, f);
            fputc('\n', f);
            free(rec);
        }
    }
    fclose(f);
    *len = n;
    return buf;
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

/* Commits a finished shard; keeps it for a retry when Redis is unreachable. */
static void dw_shard_commit(struct dw *w, struct dw_shard *sh)
{
    struct daemon *d = w->d;
    if (!dw_redis_ready(w)) {
        return;
    }
    enum gq_status st;
    int err = gq_complete(w->g, sh->claim.jid, sh->claim.token, sh->result, sh->result_len, &st);
    if (err == -EIO) {
        dw_redis_broken(w, "complete");
        return; /* the identical call is repeated after reconnecting */
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
    dw_shard_drop(w, sh);
}

/* Feeds the scheduler with the shard's next requests while it accepts them. */
static void dw_shard_feed(struct dw *w, struct dw_shard *sh)
{
    struct dw_model *m = sh->model;
    int32_t max_ctx = engine_get_config(m->e)->max_ctx;
    while (sh->next_req < sh->n_req) {
        const struct judge_request *r = judge_job_request(sh->job, sh->next_req);
        struct sched_request_params p;
        sched_request_params_default(&p);
        p.tokens = r->tokens;
        p.n_tokens = r->n_tokens;
        p.sampling = r->sampling;
        p.max_new_tokens = r->max_new_tokens;
        const char *stop[1] = { r->stop };
        p.stop = r->stop ? stop : NULL;
        p.n_stop = r->stop ? 1 : 0;
        p.n_logprobs = r->n_logprobs < SCHED_MAX_LOGPROBS ? r->n_logprobs : SCHED_MAX_LOGPROBS;
        p.job_id = sh->sched_job;
        p.priority = 0;
        p.user = (void *)(uintptr_t)sh->next_req;
        int err = sched_submit(m->s, &p, NULL);
        if (err == -EAGAIN) {
            return;
        }
        if (err) {
            /* a prompt longer than the context or the KV pool: this sample's error record,
             * worded as judgectl run words it */
            char reason[128];
            snprintf(reason, sizeof(reason), "%s (%zu prompt tokens, context %d)",
                     err == -E2BIG ? "does not fit the KV pool" : "cannot be judged", r->n_tokens,
                     (int)max_ctx);
            judge_job_complete_error(sh->job, sh->next_req, reason);
            sh->n_done++;
        } else {
            sh->queued_tokens += (int64_t)r->n_tokens;
            atomic_fetch_add(&w->d->m.queued_tokens, (int64_t)r->n_tokens);
        }
        sh->next_req++;
    }
}

static void dw_progress(struct dw *w, const struct dw_shard *sh)
{
    pthread_mutex_lock(&w->d->mu);
    struct daemon_lease *l = &w->d->leases[sh->lease_slot];
    l->done = (int64_t)sh->n_done;
    l->total = (int64_t)sh->n_req;
    pthread_mutex_unlock(&w->d->mu);
}

/* When every request is done: the result blob, ready to commit. */
static void dw_shard_check_done(struct dw *w, struct dw_shard *sh)
{
    if (sh->result || sh->n_done < sh->n_req) {
        return;
    }
    sh->result = dw_shard_lines(sh, &sh->result_len);
    atomic_fetch_add(&w->d->m.samples_done, judge_job_n_samples(sh->job));
    dw_shard_commit(w, sh);
}

/* Converts one completion's log-probabilities into the judge's layout. */
static void dw_probs(const struct sched_completion *c, struct judge_token_probs *probs)
{
    int32_t stride = 1 + c->n_logprobs;
    for (int32_t i = 0; i < c->n_tokens; i++) {
        const struct sched_logprob *lp = c->logprobs + (size_t)i * (size_t)stride;
        struct judge_token_probs *p = &probs[i];
        p->token = lp[0].token;
        p->logprob = lp[0].logprob;
        p->n_top = c->n_logprobs < JUDGE_MAX_TOP ? c->n_logprobs : JUDGE_MAX_TOP;
        for (int32_t k = 0; k < p->n_top; k++) {
            p->top_ids[k] = lp[1 + k].token;
            p->top_logprobs[k] = lp[1 + k].logprob;
        }
    }
}

static struct dw_shard *dw_shard_by_sched_job(struct dw *w, uint64_t job)
{
    for (int i = 0; i < w->d->cfg.max_shards; i++) {
        if (w->shards[i].used && w->shards[i].sched_job == job) {
            return &w->shards[i];
        }
    }
    return NULL;
}

/* One step of every model with work; completions go to their shards. Returns true when any
 * batch ran. */
static bool dw_step(struct dw *w)
{
    struct daemon *d = w->d;
    bool ran = false;
    for (int mi = 0; mi < w->n_models; mi++) {
        struct dw_model *m = w->models[mi];
        int64_t t0 = daemon_now_ms();
        int err = sched_step(m->s);
        if (err == 0 || err == -EIO) {
            ran = true;
            double ms = (double)(daemon_now_ms() - t0);
            static const double bounds[7] = { 1, 5, 10, 50, 100, 500, 1000 };
            int b = 7;
            for (int k = 0; k < 7; k++) {
                if (ms <= bounds[k]) {
                    b = k;
                    break;
                }
            }
            atomic_fetch_add(&d->m.step_hist[b], 1);
            atomic_fetch_add(&d->m.n_steps, 1);
            double cur = atomic_load(&d->m.step_ms_sum);
            while (!atomic_compare_exchange_weak(&d->m.step_ms_sum, &cur, cur + ms)) {
            }
        }
        struct sched_completion c;
        while (sched_poll(m->s, &c)) {
            struct dw_shard *sh = dw_shard_by_sched_job(w, c.job_id);
            if (!sh) {
                continue; /* a dropped shard's cancelled request */
            }
            size_t i = (size_t)(uintptr_t)c.user;
            const struct judge_request *r = judge_job_request(sh->job, i);
            sh->queued_tokens -= (int64_t)r->n_tokens;
            atomic_fetch_sub(&d->m.queued_tokens, (int64_t)r->n_tokens);
            if (c.finish == SCHED_FINISH_ERROR || c.finish == SCHED_FINISH_CANCELLED) {
                judge_job_complete_error(sh->job, i, sched_finish_name(c.finish));
            } else {
                size_t n_probs = 0;
                if (c.n_logprobs > 0 && c.logprobs) {
                    dw_probs(&c, m->probs);
                    n_probs = (size_t)c.n_tokens;
                }
                judge_job_complete(sh->job, i, c.text, c.text_len, m->probs, n_probs);
            }
            atomic_fetch_add(&d->m.requests_done, 1);
            atomic_fetch_add(&d->m.tokens_generated, (unsigned long long)c.n_tokens);
            sh->n_done++;
            dw_progress(w, sh);
            dw_shard_check_done(w, sh);
        }
        struct sched_stats ss;
        sched_stats(m->s, &ss);
        atomic_store(&d->m.kv_blocks_used, ss.kv_blocks_used);
        atomic_store(&d->m.kv_blocks_total, ss.kv_blocks);
        atomic_store(&d->m.running_requests, ss.n_running);
        atomic_store(&d->m.waiting_requests, ss.n_waiting);
        atomic_store(&d->m.prefix_hit_rate, ss.prefix_hit_rate);
    }
    return ran;
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

/* Starts a claimed judge shard. Takes ownership of *c. */
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
    struct dw_model *m = NULL;
    if (!path) {
        errstr_set(errstr, sizeof(errstr),
                   "field 'model': '%s' is neither a model directory on this host nor a model "
                   "name in %s",
                   spec->model, d->cfg.path);
        err = -ENOENT;
    } else {
        err = dw_model_get(w, path, &m, errstr, sizeof(errstr));
        if (err == -EAGAIN) {
            errstr_set(errstr, sizeof(errstr), "every loaded model is busy (max_models %d)",
                       d->cfg.max_models);
        }
    }
    if (err) {
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
            json_decref(samples[i].record);
            free(samples[i].question);
            free(samples[i].reference);
            for (int k = 0; k < samples[i].n_answers; k++) {
                free(samples[i].answers[k]);
            }
            continue;
        }
        samples[kept++] = samples[i];
    }
    struct judge_job *job = NULL;
    if ((err = judge_job_create_samples(spec, m->tok, samples, kept, &job, errstr,
                                        sizeof(errstr))) != 0) {
        job_spec_destroy(spec);
        dw_fail(w, c, errstr, false);
        gq_claimed_free(c);
        return;
    }
    memset(sh, 0, sizeof(*sh));
    sh->used = true;
    sh->claim = *c;
    memset(c, 0, sizeof(*c));
    sh->spec = spec;
    sh->job = job;
    sh->model = m;
    m->n_shards++;
    m->last_used_ms = daemon_now_ms();
    sh->sched_job = ++w->next_sched_job;
    sh->n_req = judge_job_n_requests(job);
    sh->t_start_ms = daemon_now_ms();
    if (sh->claim.checkpoint_len) {
        sh->ckpt = xmalloc(sh->claim.checkpoint_len + 1);
        memcpy(sh->ckpt, sh->claim.checkpoint, sh->claim.checkpoint_len);
        sh->ckpt_len = sh->claim.checkpoint_len;
    }
    sh->lease_slot = daemon_lease_add(d, sh->claim.jid, sh->claim.token, (int64_t)sh->n_req);
    atomic_fetch_add(&d->m.shards_in_flight, 1);
    log_info("job %s claimed (attempt %d): %zu samples, %zu requests%s, model %s", sh->claim.jid,
             sh->claim.attempts, judge_job_n_samples(job), sh->n_req,
             sh->ckpt_len ? " after a checkpoint" : "", m->path);
    dw_shard_feed(w, sh);
    dw_progress(w, sh);
    dw_shard_check_done(w, sh);
}

/* Claims one job when there is room. Returns true when a job was claimed. */
static bool dw_claim(struct dw *w)
{
    struct daemon *d = w->d;
    int64_t now = daemon_now_ms();
    if (d->stop || now < w->next_claim_ms ||
        atomic_load(&d->m.queued_tokens) >= d->cfg.watermark_tokens || !dw_redis_ready(w)) {
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
    json_t *kind = NULL;
    json_t *root = json_loadb(c.payload, c.payload_len, 0, NULL);
    kind = root ? json_object_get(root, "kind") : NULL;
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

/* ---- heartbeat flags, drain ------------------------------------------------------------------ */

/* Acts on what the heartbeat thread learned: lost leases and cancellations. */
static void dw_check_leases(struct dw *w)
{
    struct daemon *d = w->d;
    for (int i = 0; i < d->cfg.max_shards; i++) {
        struct dw_shard *sh = &w->shards[i];
        if (!sh->used) {
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
            dw_shard_drop(w, sh);
        } else if (cancel[0] && dw_redis_ready(w)) {
            enum gq_status st;
            int err = gq_cancelled(w->g, sh->claim.jid, sh->claim.token, &st);
            if (err == -EIO) {
                dw_redis_broken(w, "cancelled");
                continue;
            }
            atomic_fetch_add(&d->m.cancels, 1);
            log_info("job %s stopped: cancel '%s' (%s)", sh->claim.jid, cancel,
                     err ? gq_errstr(w->g) : gq_status_name(st));
            dw_shard_drop(w, sh);
        }
    }
}

/* Hands every unfinished shard back with its checkpoint. */
static void dw_release_all(struct dw *w)
{
    struct daemon *d = w->d;
    for (int i = 0; i < d->cfg.max_shards; i++) {
        struct dw_shard *sh = &w->shards[i];
        if (!sh->used) {
            continue;
        }
        size_t len;
        char *ckpt = sh->result ? NULL : dw_shard_lines(sh, &len);
        if (sh->result) {
            dw_shard_commit(w, sh); /* a finished shard whose commit is pending */
            free(ckpt);
            if (sh->used) {
                dw_shard_drop(w, sh);
            }
            continue;
        }
        enum gq_status st = GQ_LOST;
        int err = dw_redis_ready(w) ? gq_release(w->g, sh->claim.jid, sh->claim.token, ckpt, len,
                                                 d->cfg.max_interrupts, &st)
                                    : -EIO;
        if (err == 0) {
            atomic_fetch_add(&d->m.releases, 1);
        }
        log_info("job %s released with a checkpoint of %zu bytes: %s", sh->claim.jid, len,
                 err ? (w->g ? gq_errstr(w->g) : "redis unreachable; the lease will expire")
                     : gq_status_name(st));
        free(ckpt);
        dw_shard_drop(w, sh);
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

int daemon_worker_run(struct daemon *d)
{
    struct dw w = { .d = d };
    w.r = (struct daemon_redis){ .who = "redis (worker)",
                                 .backoff_base_ms = 200,
                                 .backoff_cap_ms = 10000 };
    w.shards = xcalloc((size_t)d->cfg.max_shards, sizeof(*w.shards));
    for (int i = 0; i < d->cfg.max_shards; i++) {
        w.shards[i].lease_slot = -1;
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
            if (now >= w.drain_deadline_ms) {
                dw_release_all(&w);
                break;
            }
        }
        if (d->reload) {
            d->reload = 0;
            daemon_config_reload(d);
        }
        dw_check_leases(&w);
        /* commits whose reply was lost are retried as soon as Redis is back */
        for (int i = 0; i < d->cfg.max_shards; i++) {
            if (w.shards[i].used && w.shards[i].result) {
                dw_shard_commit(&w, &w.shards[i]);
            }
        }
        while (dw_claim(&w)) {
        }
        for (int i = 0; i < d->cfg.max_shards; i++) {
            if (w.shards[i].used && !w.shards[i].result) {
                dw_shard_feed(&w, &w.shards[i]);
            }
        }
        if (!dw_step(&w)) {
            usleep(d->stop ? 20000 : 10000);
        }
    }
    for (int i = 0; i < w.n_models; i++) {
        dw_model_destroy(w.models[i]);
    }
    free(w.shards);
    gq_destroy(w.r.g);
    log_info("drained; exiting");
    return 0;
}
