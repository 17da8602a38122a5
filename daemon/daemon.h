/* daemon.h - internals of judged shared by the files of daemon/: the configuration
 * (daemon_config.c), the worker that claims and runs shards on the engine thread
 * (daemon_worker.c), the heartbeat/reaper thread (daemon_heartbeat.c), the HTTP endpoints
 * (daemon_http.c) and systemd notification (daemon_notify.c). Not for use outside daemon/.
 *
 * Threads: main (the engine thread: claims, runs the schedulers, commits), heartbeat (leases,
 * reaping, schedules; its own Redis connection), and libmicrohttpd's (reads counters only). The
 * engine thread and the heartbeat thread share the table of shards in flight under `mu`. */
#ifndef DAEMON_DAEMON_H
#define DAEMON_DAEMON_H

#include "jobs/job.h"
#include "queue/gq.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DAEMON_VERSION    "0.2.0"
#define DAEMON_MAX_MODELS 64 /* models loaded at once per device (engine.max_models) */

/* judged.yaml, validated. Plain data; free with daemon_config_free. */
struct daemon_config {
    char *path; /* the file it came from */
    /* redis */
    char *redis_url;
    char *redis_password_file; /* NULL: none */
    char *redis_namespace;
    char *redis_family;
    int redis_timeout_ms;
    /* worker */
    char *worker_id;
    char *queues[GQ_MAX_QUEUES];
    int n_queues;
    int64_t lease_ms;
    int64_t heartbeat_ms;
    int64_t reap_ms;
    int64_t poll_ms;
    int max_stalls;
    int max_interrupts;
    int64_t backoff_base_ms, backoff_cap_ms;
    int max_shards;           /* shards in flight */
    int64_t watermark_tokens; /* queued prompt tokens above which no new shard is claimed */
    int64_t drain_grace_ms;
    int64_t schedule_ms; /* how often schedules are checked */
    /* devices and engine */
    char *devices; /* "cpu", "auto", "cuda:0,1" */
    int threads;
    int32_t context;
    int32_t kv_mib;
    int32_t max_batch_tokens;
    int32_t max_seqs;
    int max_models;           /* models kept loaded */
    struct job_models models; /* the `models:` table (jobs/job_models.c) */
    /* http */
    char *http_listen; /* "host:port", NULL: off */
    char *log_level;
};

/* Reads and validates judged.yaml. Errors name "file:line:col: field 'x.y': ...".
 * Returns 0 or a negative errno with errstr. Free with daemon_config_free. */
int daemon_config_load(const char *path, struct daemon_config *cfg, char *errstr,
                       size_t errstr_len);
void daemon_config_free(struct daemon_config *cfg);

/* SIGHUP: re-reads cfg.path and applies the queues, models, watermark, poll interval, drain
 * grace and log level; other changes are logged as needing a restart. An invalid file is
 * logged and ignored. Engine thread only. */
struct daemon;
void daemon_config_reload(struct daemon *d);

/* The model directory for a spec's model field: a configured name, else the path itself when it
 * is a directory. NULL when neither. Borrowed from cfg or `model`. */
const char *daemon_config_model_path(const struct daemon_config *cfg, const char *model);

/* Counters for /metrics. Written by the daemon's threads, read by the HTTP thread. */
struct daemon_metrics {
    atomic_ullong claims, completes, commit_dups, commit_lost, fails, releases, cancels,
        lost_leases, self_fenced, reaped, redis_errors, reconnects, heartbeats, samples_done,
        requests_done, tokens_generated, shards_failed, aggregates;
    atomic_llong shards_in_flight, queued_tokens, kv_blocks_used, kv_blocks_total, running_requests,
        waiting_requests;
    atomic_llong hb_rtt_us; /* the last heartbeat's round trip */
    _Atomic double step_ms_sum;
    atomic_ullong n_steps;
    atomic_ullong step_hist[8]; /* step time buckets: <=1,5,10,50,100,500,1000,+Inf ms */
    _Atomic double prefix_hit_rate;
    atomic_bool redis_up;
    atomic_bool ready;
    atomic_bool draining;
};

/* A shard in flight as the heartbeat thread sees it (the engine-side state is in the worker). */
struct daemon_lease {
    bool used;
    char jid[256];
    char token[GQ_TOKEN_LEN + 1];
    int64_t renewed_ms;  /* monotonic ms when the last confirmed heartbeat was sent */
    int64_t done, total; /* progress in requests */
    bool lost;           /* the heartbeat said lost, or the lease could not be renewed in time */
    bool fenced;         /* lost because of the local deadline (self-fencing) */
    char cancel[16];     /* "", "1", "timeout", "sweep" */
};

struct daemon {
    struct daemon_config cfg;
    struct daemon_metrics m;
    pthread_mutex_t mu;
    struct daemon_lease *leases;  /* [cfg.max_shards], under mu */
    volatile sig_atomic_t stop;   /* SIGTERM/SIGINT: drain */
    volatile sig_atomic_t reload; /* SIGHUP */
    atomic_bool hb_stop;
    pthread_t hb_thread;
    struct daemon_http *http;
};

/* One Redis connection with reconnect backoff. Plain data: zero it, set who, timeout_ms (0: the
 * config's), backoff_base_ms and backoff_cap_ms. Owned by one thread. */
struct daemon_redis {
    const char *who; /* "redis (worker)", "redis (heartbeat)": log prefix */
    int timeout_ms;
    int64_t backoff_base_ms, backoff_cap_ms;
    struct gq *g; /* NULL while disconnected */
    int failures;
    int64_t next_connect_ms;
};

/* Connects when disconnected and the backoff allows. Returns true when connected. */
bool daemon_redis_ready(struct daemon *d, struct daemon_redis *r);

/* Drops the connection after a transport error in `what`; the next ready() reconnects. */
void daemon_redis_broken(struct daemon *d, struct daemon_redis *r, const char *what);

/* Monotonic milliseconds. */
int64_t daemon_now_ms(void);

/* The worker: runs on the calling thread until a drain ends. Returns the exit status. */
int daemon_worker_run(struct daemon *d);

/* The heartbeat thread. */
int daemon_heartbeat_start(struct daemon *d, char *errstr, size_t errstr_len);
void daemon_heartbeat_stop(struct daemon *d);

/* Registers a lease for the heartbeat thread; returns its slot or -1 when full. */
int daemon_lease_add(struct daemon *d, const char *jid, const char *token, int64_t total);
void daemon_lease_remove(struct daemon *d, int slot);

/* HTTP: /metrics, /healthz. */
struct daemon_http;
int daemon_http_start(struct daemon *d, const char *listen, struct daemon_http **out, char *errstr,
                      size_t errstr_len);
void daemon_http_stop(struct daemon_http *h);

/* systemd notification (sd_notify protocol over $NOTIFY_SOCKET); no-op without it. */
void daemon_notify(const char *state);

#endif
