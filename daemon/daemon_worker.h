/* daemon_worker.h - internals of the worker: the main thread (daemon_worker.c: Redis, claims,
 * placement, commits, leases, drain, aggregates) and one thread per device (daemon_device.c:
 * models, engines, schedulers). Not for use outside daemon/.
 *
 * A claimed shard is parsed by the main thread and handed to the least loaded device's inbox.
 * The device thread loads the model if needed, creates the judge job, feeds its requests to the
 * model's scheduler and steps; when the shard is complete, failed or aborted it goes to the
 * worker's outbox, and the main thread commits, fails, acknowledges or releases it in Redis.
 * The main thread asks a running shard to stop through `abort` (an atomic); everything else in a
 * shard is owned by one thread at a time: the main thread until the hand-off, the device thread
 * until the outbox, the main thread again after. */
#ifndef DAEMON_DAEMON_WORKER_H
#define DAEMON_DAEMON_WORKER_H

#include "common/util.h"
#include "daemon/daemon.h"
#include "jobs/job.h"
#include "jobs/judge.h"

#include <pthread.h>
#include <stdatomic.h>

enum dw_outcome {
    DW_OUTCOME_NONE = 0, /* still queued or running */
    DW_OUTCOME_DONE,     /* result is set: commit it */
    DW_OUTCOME_FAILED,   /* errstr is set: fail the attempt (retryable or not) */
    DW_OUTCOME_ABORTED,  /* stopped on request; with DW_ABORT_RELEASE, result holds the
                          * checkpoint (the lines of the samples already judged) */
};

enum dw_abort {
    DW_ABORT_NONE = 0,
    DW_ABORT_DROP,    /* lease lost or cancelled: stop, discard */
    DW_ABORT_RELEASE, /* drain deadline: stop, return a checkpoint */
};

struct dw_device;
struct dw_model;

struct dw_shard {
    /* set by the main thread before the hand-off */
    bool used;
    int lease_slot;
    struct gq_claimed claim;
    struct job_spec *spec;
    struct judge_sample *samples; /* handed to the job by the device thread */
    size_t n_samples;
    char *model_path;
    char *ckpt; /* result lines carried over from earlier attempts */
    size_t ckpt_len;
    int64_t t_start_ms;
    struct dw_device *dev;
    atomic_int abort; /* enum dw_abort, set by the main thread */
    char cancel[16];  /* main thread: the cancel word that made it stop ("" for a lost lease) */
    bool stop_asked;  /* main thread: abort was set */
    /* device thread */
    struct judge_job *job;
    struct dw_model *model;
    uint64_t sched_job;
    size_t n_req, next_req, n_done;
    int64_t queued_tokens;
    /* the outcome, set by the device thread before it moves the shard to the outbox */
    enum dw_outcome outcome;
    char *result;
    size_t result_len;
    bool retryable;
    char errstr[ERRSTR_LEN];
    struct dw_shard *next; /* inbox / outbox link */
};

struct dw_device {
    struct daemon *d;
    struct dw *w;
    int index;
    char name[32];
    bool cuda;
    int cuda_id;
    int threads;
    pthread_t thread;
    pthread_mutex_t mu; /* inbox, stop */
    pthread_cond_t cv;
    struct dw_shard *inbox;
    bool stop;
    atomic_llong queued_tokens; /* prompt tokens submitted and not finished */
    atomic_int n_pending;       /* shards in the inbox, not yet fed */
    atomic_int n_shards;        /* shards held (inbox + running) */
    /* stats for /metrics, written by the device thread */
    atomic_llong kv_used, kv_total, running, waiting;
    /* device thread only */
    struct dw_model *models[DAEMON_MAX_MODELS];
    int n_models;
    struct dw_shard *active[1024];
    int n_active;
    uint64_t next_sched_job;
};

struct dw {
    struct daemon *d;
    struct daemon_redis r;
    struct gq *g; /* r.g: NULL while disconnected */
    struct dw_device *devices;
    int n_devices;
    struct dw_shard *shards; /* [cfg.max_shards] slots */
    pthread_mutex_t out_mu;
    pthread_cond_t out_cv;
    struct dw_shard *outbox;
    int64_t next_claim_ms;
    int64_t drain_deadline_ms;
    bool released;
    int64_t watchdog_ms, next_watchdog_ms;
};

/* Starts the device threads named by cfg.devices ("cpu", "cpu:N", "auto", "cuda",
 * "cuda:0,1,..."). Returns 0 or -EINVAL with errstr. */
int dw_devices_start(struct dw *w, char *errstr, size_t errstr_len);

/* Stops and joins them (their shards must be gone), freeing models. */
void dw_devices_stop(struct dw *w);

/* Hands a parsed shard to a device. */
void dw_device_push(struct dw_device *dev, struct dw_shard *sh);

/* The device a new shard goes to: the least queued prompt tokens, then the fewest shards. */
struct dw_device *dw_device_pick(struct dw *w);

/* The result lines ("<qid>\t<record>\n") of every complete sample, after the carried-over
 * ones. Caller frees. */
char *dw_shard_lines(const struct dw_shard *sh, size_t *len);

#endif
