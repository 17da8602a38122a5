/* gq.h - the C client of the gq_v1 Redis Functions library (queue/gq_v1.lua), shared by judged
 * and judgectl. docs/PROTOCOL.md is the reference for the keys, payloads and calls; this header
 * wraps each call with typed arguments and replies.
 *
 * A struct gq is one hiredis connection plus the key prefix of one queue family
 * ("<namespace>:{<family>}:"). Connections are not thread-safe: each thread that talks to Redis
 * owns its own (judged's engine thread and heartbeat thread each have one).
 *
 * Errors: every call returns 0 or a negative errno. -EIO means the connection failed or timed
 * out: the outcome of a write is then unknown, and the caller retries the identical call after
 * gq_reconnect (every function is idempotent or fenced, see PROTOCOL.md). -EPROTO means Redis
 * refused the call (a function error: bad arguments, a missing sweep; or a reply of the wrong
 * shape); errstr says which. -ENOMEM as usual. */
#ifndef QUEUE_GQ_H
#define QUEUE_GQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GQ_TOKEN_LEN  32 /* hex digits of a claim token (128 random bits) */
#define GQ_LIBRARY    "gq_v1"
#define GQ_MAX_QUEUES 16

/* Connection options. Plain data; fill with gq_config_default first. Strings are borrowed for
 * the duration of gq_connect. */
struct gq_config {
    const char *url;           /* redis://[[user]:password@]host[:port][/db] or unix:///path
                                * (default redis://127.0.0.1:6379) */
    const char *password_file; /* NULL, or a file whose first line is the password */
    const char *ns;            /* key namespace (default "gq") */
    const char *family;        /* queue family, the hash tag (default "judge") */
    int timeout_ms;            /* connect and command timeout (default 5000) */
};

void gq_config_default(struct gq_config *cfg);

struct gq;

/* Connects, authenticates, selects the database and loads the gq_v1 library when Redis does not
 * have it yet (FUNCTION LOAD without REPLACE; a concurrent load by another client is fine).
 * Returns 0, -EINVAL (a bad url), -EIO (unreachable, auth refused) or -EPROTO (Redis < 7, the
 * library is refused), with errstr. Caller owns *out; free with gq_destroy. */
int gq_connect(const struct gq_config *cfg, struct gq **out, char *errstr, size_t errstr_len);

/* Closes the connection. No-op on NULL. */
void gq_destroy(struct gq *g);

/* Drops and re-opens the connection (and re-checks the library). Returns 0 or -EIO. */
int gq_reconnect(struct gq *g);

/* The key prefix, e.g. "gq:{judge}:". Borrowed. */
const char *gq_prefix(const struct gq *g);

/* The last error of this connection (a static string when none). Borrowed until the next call. */
const char *gq_errstr(const struct gq *g);

/* A reply: a flat array of binary-safe strings (integers and nils become "" or their decimal
 * text). Plain data owned by the caller; release with gq_reply_free. */
struct gq_reply {
    size_t n;
    char **str;  /* [n] NUL-terminated */
    size_t *len; /* [n] */
};

void gq_reply_free(struct gq_reply *r);

/* Low level: FCALL fn with KEYS[1] = <prefix>seq and ARGV = prefix, argv[0..argc-1] (lens NULL:
 * strlen). Returns 0 with *out filled, -EIO, -EPROTO (an error reply; errstr holds it). */
int gq_fcall(struct gq *g, const char *fn, size_t argc, const char *const *argv, const size_t *lens,
             struct gq_reply *out);

/* Any other command (argv[0] is the command name; keys are given in full). Same contract; a
 * scalar reply becomes one string, an array its elements (nested arrays are flattened). */
int gq_command(struct gq *g, size_t argc, const char *const *argv, const size_t *lens,
               struct gq_reply *out);

/* Pipelined FCALLs: n calls of the same function, each with argc arguments (argv[i*argc ...]).
 * Every reply's first element goes to status[i] (caller frees each with free). Returns 0,
 * -EIO or -EPROTO (the first error reply; the other calls still ran). */
int gq_fcall_pipeline(struct gq *g, const char *fn, size_t n, size_t argc, const char *const *argv,
                      const size_t *lens, char **status);

/* A fresh claim token: 32 lower-case hex digits from getrandom(2), NUL-terminated. */
void gq_token_new(char out[GQ_TOKEN_LEN + 1]);

/* ---- typed calls ----------------------------------------------------------------------------- */

/* A job to enqueue. Plain data, borrowed. */
struct gq_job_new {
    const char *jid;
    const char *queue;
    int prio;              /* 0..1000, higher first */
    int64_t delay_ms;      /* 0: ready now */
    int max_attempts;      /* >= 1 */
    int64_t run_budget_ms; /* 0: none */
    const char *payload;
    size_t payload_len;
    const char *sweep; /* NULL or "" for a single job */
    int64_t shard;     /* index within the sweep */
};

/* What the enqueue did. */
enum gq_status {
    GQ_OK = 0,  /* the transition happened */
    GQ_DUP,     /* already done (idempotent replay) */
    GQ_LOST,    /* the token is no longer the job's: stop and discard */
    GQ_CLOSED,  /* the sweep is sealed or cancelled */
    GQ_RETRY,   /* gq_fail: scheduled for another attempt */
    GQ_DEAD,    /* gq_fail, gq_release: moved to the dead-letter set */
    GQ_REFUSED, /* gq_dlq_retry: not possible now */
};

const char *gq_status_name(enum gq_status s);

/* Enqueues one job. *status: GQ_OK, GQ_DUP (the jid exists) or GQ_CLOSED. */
int gq_enqueue(struct gq *g, const struct gq_job_new *job, enum gq_status *status);

/* Enqueues many jobs of one sweep in pipelined batches. Returns 0 when every job is OK or DUP;
 * -EPROTO naming the first refused job otherwise. *n_dup counts replays (may be NULL). */
int gq_enqueue_many(struct gq *g, const struct gq_job_new *jobs, size_t n, size_t *n_dup);

/* A sweep to create. Plain data, borrowed. */
struct gq_sweep_new {
    const char *sid;
    int64_t expected;      /* shards, 1..1e8 */
    const char *agg_queue; /* where the aggregate job goes at fan-in; NULL or "" for none */
    int agg_prio;          /* 0..1000 */
    const char *meta;      /* a JSON object shown by status tools */
    const char *labels;    /* NULL, or a labels file's content (labels_len bytes) for metrics */
    size_t labels_len;
    int64_t retention_ms; /* how long its keys live once it is final; 0 keeps them forever */
};

/* Creates a sweep in state open (gq_sweep_create in PROTOCOL.md). *status GQ_OK or GQ_DUP (it
 * exists: nothing changes, its retention included). */
int gq_sweep_create_opts(struct gq *g, const struct gq_sweep_new *s, enum gq_status *status);

/* gq_sweep_create_opts without a retention (kept forever). */
int gq_sweep_create(struct gq *g, const char *sid, int64_t expected, const char *agg_queue,
                    int agg_prio, const char *meta, const char *labels, size_t labels_len,
                    enum gq_status *status);

/* Deletes a sweep's keys and its job hashes now (gq_sweep_purge in PROTOCOL.md); without force
 * only a final sweep (done, or cancelled with every shard stopped). *status GQ_OK (*n_jobs job
 * hashes deleted), GQ_REFUSED (not final; state receives its state, 16 bytes) or GQ_DUP (no
 * such sweep). n_jobs and state may be NULL. */
int gq_sweep_purge(struct gq *g, const char *sid, bool force, enum gq_status *status,
                   int64_t *n_jobs, char state[16]);

/* Seals a sweep. *fanin is true when every shard had already finished. */
int gq_sweep_seal(struct gq *g, const char *sid, enum gq_status *status, bool *fanin);

/* A claimed job. Plain data owned by the caller; release with gq_claimed_free. */
struct gq_claimed {
    char *jid;
    char *payload;
    size_t payload_len;
    int attempts;
    char *checkpoint; /* "" when none */
    size_t checkpoint_len;
    char *queue;
    char *sweep; /* "" for a single job */
    int64_t shard;
    char token[GQ_TOKEN_LEN + 1];
};

void gq_claimed_free(struct gq_claimed *c);

/* Claims the best ready job across queues (in the given order, paused ones skipped) with a fresh
 * token and a lease of lease_ms (Redis server time). Returns 0 with *got false when nothing is
 * ready. On -EIO the claim may have happened: gq_token_lookup(c->token) tells (c->token is set
 * before the call). */
int gq_claim(struct gq *g, const char *wid, int64_t lease_ms, const char *const *queues,
             size_t n_queues, struct gq_claimed *c, bool *got);

/* After a gq_claim that failed with -EIO: the claim made with token (c->token of that call),
 * when it happened. *got false when Redis never saw it (nothing to adopt). Same ownership as
 * gq_claim. */
int gq_adopt(struct gq *g, const char *token, struct gq_claimed *c, bool *got);

/* Renews a lease and stores progress (and a checkpoint, NULL/"" to keep the stored one).
 * *status GQ_OK with cancel set to "", "1", "timeout" or "sweep" (cancel has 16 bytes), or
 * GQ_LOST. */
int gq_heartbeat(struct gq *g, const char *jid, const char *token, int64_t lease_ms,
                 const char *progress, const char *checkpoint, size_t checkpoint_len,
                 enum gq_status *status, char cancel[16]);

/* Commits a job's result. *status GQ_OK, GQ_DUP (already committed by this token, or the shard
 * had an outcome) or GQ_LOST. Safe to repeat after -EIO. */
int gq_complete(struct gq *g, const char *jid, const char *token, const char *result,
                size_t result_len, enum gq_status *status);

/* Fails an attempt: *status GQ_RETRY (after backoff_ms), GQ_DEAD or GQ_LOST. */
int gq_fail(struct gq *g, const char *jid, const char *token, const char *error, bool retryable,
            int64_t backoff_ms, enum gq_status *status);

/* Hands a running job back (drain) with a checkpoint: GQ_OK, GQ_DEAD (too many interrupts) or
 * GQ_LOST. */
int gq_release(struct gq *g, const char *jid, const char *token, const char *checkpoint,
               size_t checkpoint_len, int max_interrupts, enum gq_status *status);

/* Acknowledges that a job told to stop has stopped: GQ_OK or GQ_LOST. */
int gq_cancelled(struct gq *g, const char *jid, const char *token, enum gq_status *status);

/* Reaps expired leases and overrun budgets. *n_reaped may be NULL. */
int gq_reap(struct gq *g, int limit, int max_stalls, int64_t backoff_ms, int *n_reaped);

/* The jid a claim token holds, "" when none. Caller frees *jid. */
int gq_token_lookup(struct gq *g, const char *token, char **jid);

/* Registers this worker (info: a JSON object) for ttl_ms. */
int gq_worker_register(struct gq *g, const char *wid, const char *info, int64_t ttl_ms);

/* Full jittered exponential backoff: uniform in [0, min(cap, base * 2^attempt)]. */
int64_t gq_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms);

#endif
