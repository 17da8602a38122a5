/* daemon_device.c - one thread per device: its models (engine + scheduler each), the shards it
 * runs, and the continuous batch over all of them (see daemon_worker.h for the hand-offs). */
#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "daemon/daemon_worker.h"
#include "engine/engine.h"
#include "engine/tokenizer.h"
#include "scheduler/sched.h"
#include "scheduler/sched_judge.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#undef LOG_MODULE
#define LOG_MODULE "device"

struct dw_model {
    char *path;
    struct tok *tok;
    struct engine *e;
    struct sched *s;
    struct judge_token_probs *probs; /* [max_ctx] */
    int n_shards;
    int64_t last_used_ms;
};

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

/* Opens a model on a device with the configured limits: on the CPU the KV pool comes from
 * kv_mib (at most max_seqs full contexts); on a GPU from its free memory. */
static int dw_model_open(const struct dw_device *dev, const char *path, struct dw_model **out,
                         char *errstr, size_t errstr_len)
{
    const struct daemon_config *c = &dev->d->cfg;
    struct model_config mc;
    char *cfg_path = path_join(path, "config.json");
    int err = model_config_load(cfg_path, &mc, errstr, errstr_len);
    free(cfg_path);
    if (err) {
        return err;
    }
    struct engine_config ec;
    engine_config_default(&ec);
    ec.backend = ENGINE_BACKEND_CPU;
    if (dev->cuda && engine_device_parse(dev->name, &ec) != 0) { /* cuda:N or cuda:N+M... */
        errstr_set(errstr, errstr_len, "%s: not a CUDA device", dev->name);
        return -EINVAL;
    }
    ec.n_threads = dev->threads;
    ec.max_batch_tokens = c->max_batch_tokens;
    ec.max_outputs = c->max_seqs;
    ec.max_ctx = c->context > 0 ? c->context : mc.max_pos;
    if (!dev->cuda) {
        ec.n_kv_blocks =
            engine_kv_blocks_for_mib(&mc, ec.kv_block_size, ec.max_ctx, c->kv_mib, c->max_seqs);
    }
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
    log_info("%s: model %s loaded: %s backend, context %d", dev->name, path,
             engine_backend_name(m->e), (int)engine_get_config(m->e)->max_ctx);
    *out = m;
    return 0;
}

/* The loaded model for a directory, loading it (and unloading an idle one past max_models). */
static int dw_model_get(struct dw_device *dev, const char *path, struct dw_model **out,
                        char *errstr, size_t errstr_len)
{
    for (int i = 0; i < dev->n_models; i++) {
        if (strcmp(dev->models[i]->path, path) == 0) {
            *out = dev->models[i];
            return 0;
        }
    }
    if (dev->n_models >= dev->d->cfg.max_models) {
        int victim = -1;
        for (int i = 0; i < dev->n_models; i++) {
            if (dev->models[i]->n_shards == 0 &&
                (victim < 0 || dev->models[i]->last_used_ms < dev->models[victim]->last_used_ms)) {
                victim = i;
            }
        }
        if (victim < 0) {
            errstr_set(errstr, errstr_len, "%s: every loaded model is busy (max_models %d)",
                       dev->name, dev->d->cfg.max_models);
            return -EAGAIN;
        }
        log_info("%s: model %s unloaded (idle; max_models %d)", dev->name,
                 dev->models[victim]->path, dev->d->cfg.max_models);
        dw_model_destroy(dev->models[victim]);
        dev->models[victim] = dev->models[--dev->n_models];
    }
    struct dw_model *m;
    int err = dw_model_open(dev, path, &m, errstr, errstr_len);
    if (err) {
        return err;
    }
    dev->models[dev->n_models++] = m;
    *out = m;
    return 0;
}

/* ---- shards ---------------------------------------------------------------------------------- */

char *dw_shard_lines(const struct dw_shard *sh, size_t *len)
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

/* Moves a shard from the device to the worker's outbox with its outcome. */
static void dw_shard_finish(struct dw_device *dev, int i_active, enum dw_outcome outcome)
{
    struct dw_shard *sh = dev->active[i_active];
    dev->active[i_active] = dev->active[--dev->n_active];
    if (sh->model) {
        if (sh->next_req > sh->n_done) {
            sched_cancel_job(sh->model->s, sh->sched_job);
        }
        sh->model->n_shards--;
        sh->model->last_used_ms = daemon_now_ms();
    }
    atomic_fetch_sub(&dev->queued_tokens, sh->queued_tokens);
    sh->queued_tokens = 0;
    sh->outcome = outcome;
    if (outcome == DW_OUTCOME_DONE) {
        sh->result = dw_shard_lines(sh, &sh->result_len);
        atomic_fetch_add(&dev->d->m.samples_done, judge_job_n_samples(sh->job));
    } else if (outcome == DW_OUTCOME_ABORTED && atomic_load(&sh->abort) == DW_ABORT_RELEASE) {
        sh->result = dw_shard_lines(sh, &sh->result_len); /* the checkpoint */
    }
    atomic_fetch_sub(&dev->n_shards, 1);
    struct dw *w = dev->w;
    pthread_mutex_lock(&w->out_mu);
    sh->next = w->outbox;
    w->outbox = sh;
    pthread_cond_signal(&w->out_cv);
    pthread_mutex_unlock(&w->out_mu);
}

static void dw_progress(struct daemon *d, const struct dw_shard *sh)
{
    pthread_mutex_lock(&d->mu);
    struct daemon_lease *l = &d->leases[sh->lease_slot];
    l->done = (int64_t)sh->n_done;
    l->total = (int64_t)sh->n_req;
    pthread_mutex_unlock(&d->mu);
}

/* Takes a shard from the inbox: model, judge job (samples judged by an earlier attempt skipped).
 * Returns false when it failed (then it is in the outbox). */
static bool dw_shard_start(struct dw_device *dev, struct dw_shard *sh)
{
    dev->active[dev->n_active++] = sh;
    struct dw_model *m = NULL;
    int err = dw_model_get(dev, sh->model_path, &m, sh->errstr, sizeof(sh->errstr));
    if (err) {
        sh->retryable = true;
        dw_shard_finish(dev, dev->n_active - 1, DW_OUTCOME_FAILED);
        return false;
    }
    struct judge_job *job = NULL;
    struct judge_sample *samples = sh->samples;
    sh->samples = NULL;
    if ((err = judge_job_create_samples(sh->spec, m->tok, samples, sh->n_samples, &job, sh->errstr,
                                        sizeof(sh->errstr))) != 0) {
        sh->retryable = false;
        dw_shard_finish(dev, dev->n_active - 1, DW_OUTCOME_FAILED);
        return false;
    }
    sh->job = job;
    sh->model = m;
    m->n_shards++;
    m->last_used_ms = daemon_now_ms();
    sh->sched_job = ++dev->next_sched_job;
    sh->n_req = judge_job_n_requests(job);
    log_info("job %s on %s: %zu samples, %zu requests%s, model %s", sh->claim.jid, dev->name,
             judge_job_n_samples(job), sh->n_req, sh->ckpt_len ? " after a checkpoint" : "",
             m->path);
    return true;
}

/* Feeds the scheduler with the shard's next requests while it accepts them. */
static void dw_shard_feed(struct dw_device *dev, struct dw_shard *sh)
{
    struct dw_model *m = sh->model;
    int32_t max_ctx = engine_get_config(m->e)->max_ctx;
    while (sh->next_req < sh->n_req) {
        bool queued;
        if (sched_judge_submit(m->s, sh->job, sh->next_req, sh->sched_job, max_ctx, &queued) ==
            -EAGAIN) {
            return;
        }
        if (queued) {
            int64_t n = (int64_t)judge_job_request(sh->job, sh->next_req)->n_tokens;
            sh->queued_tokens += n;
            atomic_fetch_add(&dev->queued_tokens, n);
        } else {
            sh->n_done++; /* an error record already */
        }
        sh->next_req++;
    }
}

static int dw_active_index(const struct dw_device *dev, uint64_t sched_job)
{
    for (int i = 0; i < dev->n_active; i++) {
        if (dev->active[i]->sched_job == sched_job) {
            return i;
        }
    }
    return -1;
}

static void dw_step_stats(struct daemon *d, double ms)
{
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

/* One step of every model with work; completions go to their shards. Returns true when any
 * batch ran. */
static bool dw_step(struct dw_device *dev)
{
    struct daemon *d = dev->d;
    bool ran = false;
    int64_t kv_used = 0, kv_total = 0, running = 0, waiting = 0;
    for (int mi = 0; mi < dev->n_models; mi++) {
        struct dw_model *m = dev->models[mi];
        int64_t t0 = daemon_now_ms();
        int err = sched_step(m->s);
        if (err == 0 || err == -EIO) {
            ran = true;
            dw_step_stats(d, (double)(daemon_now_ms() - t0));
        }
        struct sched_completion c;
        while (sched_poll(m->s, &c)) {
            int ia = dw_active_index(dev, c.job_id);
            if (ia < 0) {
                continue; /* a request of a shard that was stopped */
            }
            struct dw_shard *sh = dev->active[ia];
            size_t i = (size_t)(uintptr_t)c.user;
            const struct judge_request *r = judge_job_request(sh->job, i);
            sh->queued_tokens -= (int64_t)r->n_tokens;
            atomic_fetch_sub(&dev->queued_tokens, (int64_t)r->n_tokens);
            sched_judge_collect(sh->job, &c, m->probs);
            atomic_fetch_add(&d->m.requests_done, 1);
            atomic_fetch_add(&d->m.tokens_generated, (unsigned long long)c.n_tokens);
            sh->n_done++;
            dw_progress(d, sh);
        }
        struct sched_stats ss;
        sched_stats(m->s, &ss);
        kv_used += ss.kv_blocks_used;
        kv_total += ss.kv_blocks;
        running += ss.n_running;
        waiting += ss.n_waiting;
        atomic_store(&d->m.prefix_hit_rate, ss.prefix_hit_rate);
    }
    atomic_store(&dev->kv_used, kv_used);
    atomic_store(&dev->kv_total, kv_total);
    atomic_store(&dev->running, running);
    atomic_store(&dev->waiting, waiting);
    return ran;
}

static void *dw_device_main(void *arg)
{
    struct dw_device *dev = arg;
    while (true) {
        pthread_mutex_lock(&dev->mu);
        struct dw_shard *in = dev->inbox;
        dev->inbox = NULL;
        bool stop = dev->stop;
        pthread_mutex_unlock(&dev->mu);
        if (stop && !in && dev->n_active == 0) {
            break;
        }
        /* oldest first: the inbox is a stack */
        struct dw_shard *rev = NULL;
        while (in) {
            struct dw_shard *next = in->next;
            in->next = rev;
            rev = in;
            in = next;
        }
        for (struct dw_shard *sh = rev, *next; sh; sh = next) {
            next = sh->next;
            sh->next = NULL;
            atomic_fetch_sub(&dev->n_pending, 1);
            if (dw_shard_start(dev, sh)) {
                dw_shard_feed(dev, sh);
                dw_progress(dev->d, sh);
            }
        }
        if (rev) {
            /* room for the next claim */
            pthread_mutex_lock(&dev->w->out_mu);
            pthread_cond_signal(&dev->w->out_cv);
            pthread_mutex_unlock(&dev->w->out_mu);
        }
        /* stop requests, finished shards, and feeding */
        for (int i = dev->n_active - 1; i >= 0; i--) {
            struct dw_shard *sh = dev->active[i];
            if (atomic_load(&sh->abort) != DW_ABORT_NONE) {
                dw_shard_finish(dev, i, DW_OUTCOME_ABORTED);
            } else if (sh->n_done >= sh->n_req) {
                dw_shard_finish(dev, i, DW_OUTCOME_DONE);
            } else {
                dw_shard_feed(dev, sh);
            }
        }
        if (!dw_step(dev)) {
            /* idle: wait for the inbox (or a stop) */
            pthread_mutex_lock(&dev->mu);
            if (!dev->inbox && !dev->stop) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 20 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&dev->cv, &dev->mu, &ts);
            }
            pthread_mutex_unlock(&dev->mu);
        }
    }
    for (int i = 0; i < dev->n_models; i++) {
        dw_model_destroy(dev->models[i]);
    }
    dev->n_models = 0;
    return NULL;
}

void dw_device_push(struct dw_device *dev, struct dw_shard *sh)
{
    sh->dev = dev;
    atomic_fetch_add(&dev->n_pending, 1);
    atomic_fetch_add(&dev->n_shards, 1);
    pthread_mutex_lock(&dev->mu);
    sh->next = dev->inbox;
    dev->inbox = sh;
    pthread_cond_signal(&dev->cv);
    pthread_mutex_unlock(&dev->mu);
}

struct dw_device *dw_device_pick(struct dw *w)
{
    struct dw_device *best = NULL;
    int64_t best_tokens = 0;
    int best_shards = 0;
    for (int i = 0; i < w->n_devices; i++) {
        struct dw_device *dev = &w->devices[i];
        int64_t t = atomic_load(&dev->queued_tokens);
        int n = atomic_load(&dev->n_shards);
        if (!best || t < best_tokens || (t == best_tokens && n < best_shards)) {
            best = dev;
            best_tokens = t;
            best_shards = n;
        }
    }
    return best;
}

/* Parses engine.devices into device descriptions. */
static int dw_devices_parse(struct dw *w, char *errstr, size_t errstr_len)
{
    const struct daemon_config *c = &w->d->cfg;
    const char *spec = c->devices;
    int n_gpus = -1;
    int ids[64], n = 0;
    char groups[64][32]; /* cuda:N or cuda:N+M... per device */
    bool cuda = false;
    if (strcmp(spec, "cpu") == 0) {
        n = 1;
    } else if (strncmp(spec, "cpu:", 4) == 0) {
        char *end;
        long k = strtol(spec + 4, &end, 10);
        if (*end || k < 1 || k > 64) {
            errstr_set(errstr, errstr_len, "%s: field 'engine.devices': cpu:N needs N in 1..64",
                       c->path);
            return -EINVAL;
        }
        n = (int)k;
    } else if (strcmp(spec, "auto") == 0 || strcmp(spec, "cuda") == 0) {
        n_gpus = engine_cuda_device_count();
        if (n_gpus == 0) {
            log_warn("engine.devices %s: no CUDA device: falling back to the CPU backend", spec);
            n = 1;
        } else {
            cuda = true;
            n = n_gpus < 64 ? n_gpus : 64;
            for (int i = 0; i < n; i++) {
                ids[i] = i;
            }
        }
    } else if (strncmp(spec, "cuda:", 5) == 0) {
        /* cuda:0,1 is two engines; cuda:0+1,2+3 two engines of two GPUs each (tensor parallel) */
        n_gpus = engine_cuda_device_count();
        const char *p = spec + 5;
        while (*p && n < 64) {
            size_t len = strcspn(p, ",");
            struct engine_config probe;
            engine_config_default(&probe);
            if (len == 0 || len + 6 > sizeof(groups[0])) {
                len = 0;
            } else {
                snprintf(groups[n], sizeof(groups[n]), "cuda:%.*s", (int)len, p);
            }
            if (len == 0 || engine_device_parse(groups[n], &probe) != 0) {
                errstr_set(errstr, errstr_len,
                           "%s: field 'engine.devices': expected cuda:N[,N...] or groups N+M "
                           "(tensor parallel), got '%s'",
                           c->path, spec);
                return -EINVAL;
            }
            for (int k = 0; k < probe.tp_world; k++) {
                if (n_gpus > 0 && probe.tp_devices[k] >= n_gpus) {
                    errstr_set(errstr, errstr_len,
                               "%s: field 'engine.devices': cuda:%d, but this host has %d GPUs",
                               c->path, probe.tp_devices[k], n_gpus);
                    return -EINVAL;
                }
            }
            ids[n++] = probe.cuda_device;
            p += len;
            p += *p == ',';
        }
        cuda = n_gpus > 0;
        if (!cuda) {
            log_warn("engine.devices %s: no CUDA device: falling back to the CPU backend", spec);
            n = 1;
        }
    } else {
        errstr_set(errstr, errstr_len,
                   "%s: field 'engine.devices': expected cpu, cpu:N, auto, cuda or cuda:N,...",
                   c->path);
        return -EINVAL;
    }
    w->n_devices = n;
    w->devices = xcalloc((size_t)n, sizeof(*w->devices));
    for (int i = 0; i < n; i++) {
        struct dw_device *dev = &w->devices[i];
        dev->d = w->d;
        dev->w = w;
        dev->index = i;
        dev->cuda = cuda;
        dev->cuda_id = cuda ? ids[i] : 0;
        /* CPU devices split the threads between them (0: every CPU, shared) */
        dev->threads = cuda ? 1 : (c->threads > 0 ? (c->threads + n - 1) / n : 0);
        if (cuda && strncmp(spec, "cuda:", 5) == 0) {
            snprintf(dev->name, sizeof(dev->name), "%s", groups[i]);
        } else if (cuda) {
            snprintf(dev->name, sizeof(dev->name), "cuda:%d", dev->cuda_id);
        } else {
            snprintf(dev->name, sizeof(dev->name), n > 1 ? "cpu#%d" : "cpu", i);
        }
    }
    return 0;
}

int dw_devices_start(struct dw *w, char *errstr, size_t errstr_len)
{
    int err = dw_devices_parse(w, errstr, errstr_len);
    if (err) {
        return err;
    }
    for (int i = 0; i < w->n_devices; i++) {
        struct dw_device *dev = &w->devices[i];
        pthread_mutex_init(&dev->mu, NULL);
        pthread_cond_init(&dev->cv, NULL);
        if ((err = pthread_create(&dev->thread, NULL, dw_device_main, dev)) != 0) {
            errstr_set(errstr, errstr_len, "cannot start the thread of %s: %s", dev->name,
                       strerror(err));
            w->n_devices = i;
            return -err;
        }
    }
    log_info("%d device%s: %s%s", w->n_devices, w->n_devices > 1 ? "s" : "", w->devices[0].name,
             w->n_devices > 1 ? ", ..." : "");
    return 0;
}

void dw_devices_stop(struct dw *w)
{
    for (int i = 0; i < w->n_devices; i++) {
        struct dw_device *dev = &w->devices[i];
        pthread_mutex_lock(&dev->mu);
        dev->stop = true;
        pthread_cond_signal(&dev->cv);
        pthread_mutex_unlock(&dev->mu);
    }
    for (int i = 0; i < w->n_devices; i++) {
        pthread_join(w->devices[i].thread, NULL);
        pthread_mutex_destroy(&w->devices[i].mu);
        pthread_cond_destroy(&w->devices[i].cv);
    }
    free(w->devices);
    w->devices = NULL;
    w->n_devices = 0;
}
