/* sched.h - the scheduler: continuous batching of generation requests over one engine.
 *
 * The local runner and the daemon both drive an engine through this API: submit requests (token
 * ids, sampling parameters, stop conditions, owning job, priority), call sched_step in a loop,
 * and collect completions with sched_poll; cancel one request or all of a job's.
 *
 * Each step builds one batch under a token budget (max_batched_tokens) and max_seqs: running
 * requests first (one decode token each, or the next chunk of a prompt being prefilled), then
 * chunks of waiting requests while the budget, sequence slots and KV blocks last. Waiting
 * requests are admitted by weighted round-robin across jobs (stride scheduling over the tokens
 * each job has had forwarded, weight 1 + priority, so a huge job cannot starve a small urgent
 * one); within a job they go in an order that keeps shared prompt prefixes together (an
 * elevator sweep over the prompts' block-hash chains, so no request waits more than one sweep).
 *
 * KV memory is the engine's pool of n_kv_blocks blocks of kv_block_size tokens, managed here
 * with reference counts and a prefix cache: a full block is keyed by the hash chain (parent
 * hash, block tokens), and blocks released by finished requests stay cached, least recently
 * released evicted first, until reused on a hit. When a running request cannot get a block, the
 * lowest-priority, most recently admitted running request is preempted: its blocks are freed,
 * its generated tokens kept, and it goes back to the front of its job's queue, to be recomputed
 * (prompt + generated tokens, helped by the prefix cache) when readmitted. Sampling depends
 * only on (seed, step), so a recomputed request produces the same tokens.
 *
 * Progress: submit refuses a request whose prompt + max_new_tokens can never fit the pool, and
 * every step then makes progress. The running request that comes first (highest priority, then
 * oldest) is never preempted by another and gets budget first, so every step moves it forward;
 * with nothing running, every block is free and the next waiting request is admitted. So every
 * request finishes (a steady stream of higher-priority requests can delay it, not block the
 * scheduler).
 *
 * Memory: everything is allocated by sched_create (request and job tables, the batch arrays,
 * the logits buffer, the block manager) or by sched_submit (one buffer per request for its
 * tokens, block table, text and logprobs). sched_step allocates nothing.
 *
 * Threads: a scheduler belongs to the engine thread that owns its engine; every function but
 * sched_config_default, sched_request_params_default and sched_finish_name is engine thread
 * only. */
#ifndef SCHEDULER_SCHED_H
#define SCHEDULER_SCHED_H

#include "engine/engine.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SCHED_MAX_LOGPROBS     20   /* most alternatives returned per generated token */
#define SCHED_MAX_STOP         8    /* most stop strings per request */
#define SCHED_MAX_STOP_LEN     256  /* longest stop string, bytes */
#define SCHED_PRIORITY_MAX     1000 /* priorities run 0 (default) .. SCHED_PRIORITY_MAX */
#define SCHED_MAX_REQUESTS_MAX (1 << 24)

/* Options. Plain data; fill with sched_config_default first. */
struct sched_config {
    int32_t max_batched_tokens; /* token budget per step; 0 = the engine's max_batch_tokens */
    int32_t max_seqs;           /* most running requests; 0 = min(engine max_outputs, 256) */
    int32_t max_requests;       /* most requests submitted and not yet polled (default 4096) */
    int32_t max_jobs;           /* most distinct jobs with requests in flight (default 256) */
    int32_t watermark_blocks;   /* KV blocks an admission must leave free while others run, so
                                 * running requests can grow without preemption; -1 (default) =
                                 * 1% of the pool */
    bool enable_prefix_cache;   /* default true */
};

/* Fills the defaults listed above. Thread-safe. */
void sched_config_default(struct sched_config *cfg);

/* Why a request ended. */
enum sched_finish {
    SCHED_FINISH_EOS = 0,   /* the model produced EOS (not included in the output) */
    SCHED_FINISH_LENGTH,    /* max_new_tokens, or the context length, reached */
    SCHED_FINISH_STOP,      /* a stop string appeared; the text ends before it */
    SCHED_FINISH_CANCELLED, /* sched_cancel or sched_cancel_job */
    SCHED_FINISH_ERROR,     /* the engine failed on a batch holding this request */
};

/* "eos", "length", "stop", "cancelled", "error". Thread-safe. */
const char *sched_finish_name(enum sched_finish f);

/* One request. Plain data, borrowed by sched_submit for the duration of the call (it copies
 * what it keeps); fill with sched_request_params_default first. */
struct sched_request_params {
    const int32_t *tokens;          /* [n_tokens] prompt ids (BOS included if wanted) */
    size_t n_tokens;                /* 1 .. the engine's max_ctx */
    struct sampler_params sampling; /* default greedy */
    int32_t max_new_tokens;         /* >= 1 (default 256); capped at max_ctx - n_tokens + 1 */
    bool ignore_eos;                /* keep generating after EOS (benchmarks) */
    const char *const *stop;        /* [n_stop] NUL-terminated stop strings, or NULL */
    int n_stop;                     /* 0 .. SCHED_MAX_STOP; each 1 .. SCHED_MAX_STOP_LEN bytes;
                                     * JudgeLM's fast mode is one stop string "\n" */
    uint64_t job_id;                /* the owning job: fairness and sched_cancel_job */
    int priority;                   /* 0 .. SCHED_PRIORITY_MAX, higher is more urgent; the job's
                                     * weight is 1 + the priority of its latest request */
    int32_t n_logprobs; /* 0 .. SCHED_MAX_LOGPROBS: for each generated token also return its
                         * logprob and the n_logprobs most likely tokens with theirs */
    void *user;         /* returned in the completion */
};

/* Zeroes *p, then greedy sampling and max_new_tokens 256. Thread-safe. */
void sched_request_params_default(struct sched_request_params *p);

/* A log-probability: log_softmax of the model's raw logits (before temperature and filters). */
struct sched_logprob {
    int32_t token;
    float logprob;
};

/* A finished request. Plain data; every pointer is borrowed from the scheduler and valid until
 * the next sched_poll or sched_destroy. */
struct sched_completion {
    uint64_t req_id;
    uint64_t job_id;
    void *user;
    enum sched_finish finish;
    const int32_t *tokens; /* [n_tokens] generated ids: EOS excluded, a stop string's last
                            * token included */
    int32_t n_tokens;
    const char *text; /* [text_len] NUL-terminated continuation text, cut before a stop string;
                       * "" without a tokenizer */
    size_t text_len;
    int32_t n_prompt_tokens;
    int32_t n_cached_tokens; /* prompt tokens served by the prefix cache at first admission */
    int32_t n_preemptions;
    int64_t t_submit_us;      /* CLOCK_MONOTONIC microseconds */
    int64_t t_first_token_us; /* 0 when no token was generated */
    int64_t t_done_us;
    int32_t n_logprobs;                   /* as requested */
    const struct sched_logprob *logprobs; /* [n_tokens][1 + n_logprobs]: the chosen token,
                                           * then the n_logprobs most likely, best first */
};

/* Counters and gauges. Plain data. */
struct sched_stats {
    int32_t n_running;        /* requests holding KV blocks */
    int32_t n_waiting;        /* queued, preempted ones included */
    int32_t n_done;           /* finished, not yet polled */
    int32_t n_jobs;           /* jobs with requests running or waiting */
    int32_t kv_blocks;        /* the pool */
    int32_t kv_blocks_used;   /* held by running requests */
    int32_t kv_blocks_cached; /* free but holding a reusable prefix */
    int32_t kv_blocks_free;   /* not held (cached ones included) */
    uint64_t n_submitted, n_finished, n_preemptions, n_steps;
    uint64_t n_tokens_forwarded;        /* every token sent through the engine */
    uint64_t n_prompt_tokens_forwarded; /* of those, prompt positions */
    uint64_t n_prompt_tokens_cached;    /* prompt positions served by the prefix cache */
    uint64_t n_tokens_looked_up;        /* tokens of admitted requests (the hit-rate base) */
    uint64_t n_tokens_cached;           /* of those, served by the cache (recomputes too) */
    uint64_t n_tokens_generated;
    double prefix_hit_rate;      /* n_tokens_cached / n_tokens_looked_up, 0 when none */
    int32_t last_step_tokens;    /* tokens in the last step's batch */
    double last_step_ms;         /* the last step's time, forward pass included */
    double mean_tokens_per_step; /* over all steps that ran a batch */
    double total_step_ms;
};

struct sched;

/* Creates a scheduler over an open engine (borrowed; it must outlive the scheduler, and nothing
 * else may run it meanwhile) and an optional tokenizer (borrowed; NULL gives no text, and stop
 * strings are then refused). The KV pool, block size and context come from the engine's config.
 * When the engine samples on its device (engine_samples_on_device: the CUDA backend), every
 * token is drawn there, with kern_cpu_sample's contract, and logits come back to the host only
 * for steps where a request of the batch wants logprobs; the CPU backend samples with
 * sampler_sample. Either way a request's tokens do not depend on its batch.
 * Returns 0, -EINVAL (an option out of range, logged) or -ENOMEM.
 * Caller owns *out; free with sched_destroy. Engine thread only. */
int sched_create(const struct sched_config *cfg, struct engine *e, const struct tok *t,
                 struct sched **out);

/* Frees everything; requests still in flight are dropped without completions. No-op on NULL. */
void sched_destroy(struct sched *s);

/* Queues a request (copying the prompt and stop strings). Writes its id to *req_id (may be
 * NULL). Returns 0; -EINVAL for an empty prompt, one longer than the context, an id outside the
 * vocabulary or any parameter out of range; -E2BIG when prompt + max_new_tokens can never fit
 * the KV pool; -EAGAIN when max_requests are in flight or max_jobs jobs are active (retry after
 * polling completions); -ENOMEM. Engine thread only. */
int sched_submit(struct sched *s, const struct sched_request_params *p, uint64_t *req_id);

/* Runs one iteration: builds the batch, runs engine_forward, samples, applies stop conditions
 * and frees the blocks of finished requests. Returns 0 when a batch ran; -EAGAIN when there is
 * nothing to run; -EIO when the engine failed (the batch's requests finish with
 * SCHED_FINISH_ERROR, see sched_errstr; the scheduler stays usable). Allocates nothing.
 * Engine thread only. */
int sched_step(struct sched *s);

/* Takes the next completion, oldest first. Returns false when there is none. The completion's
 * pointers stay valid until the next sched_poll or sched_destroy. Engine thread only. */
bool sched_poll(struct sched *s, struct sched_completion *out);

/* Cancels a request: waiting or running, it finishes at once with SCHED_FINISH_CANCELLED and
 * the tokens generated so far. Returns 0, -EALREADY when it already finished (its completion
 * is or was returned by sched_poll), -ENOENT for an unknown id. Engine thread only. */
int sched_cancel(struct sched *s, uint64_t req_id);

/* Cancels every waiting and running request of a job. Returns how many (0 for an unknown or
 * idle job). Engine thread only. */
int sched_cancel_job(struct sched *s, uint64_t job_id);

/* True when no request is waiting or running (completions may still wait for sched_poll). */
bool sched_idle(const struct sched *s);

/* Fills *out. Engine thread only. */
void sched_stats(const struct sched *s, struct sched_stats *out);

/* The last engine error. Borrowed, valid until the next sched_step. Engine thread only. */
const char *sched_errstr(const struct sched *s);

#ifdef __cplusplus
}
#endif

#endif
