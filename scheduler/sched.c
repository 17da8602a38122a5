/* sched.c - request lifecycle, the step builder, fairness across jobs and preemption (the
 * contract is in sched.h; the KV block manager is kv_pool.c, completion text sched_text.c).
 *
 * Queues, all intrusive:
 *   - running: requests holding KV blocks, highest priority first, then in admission order, so
 *     the tail is always the preemption victim and the head always makes progress;
 *   - per job: `resume` (preempted requests, readmitted first) and a treap of waiting requests
 *     ordered by (sweep round, block-hash chain of the prompt, id), which visits prompts that
 *     share prefixes one after another and never lets a request wait more than one sweep;
 *   - done: finished requests until sched_poll hands them out.
 * Jobs are picked for admission by stride scheduling: each job's pass grows by the tokens it has
 * forwarded divided by its weight, and the job with the smallest pass goes next. */
#define LOG_MODULE "sched"
#include "scheduler/sched.h"

#include "common/log.h"
#include "kernels/cpu/twin.h"
#include "scheduler/sched_impl.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define SCHED_SLOT_BITS  24 /* a request id is (submit sequence << 24) | slot */
#define SCHED_SLOT_MASK  ((1u << SCHED_SLOT_BITS) - 1)
#define SCHED_PASS_SCALE (1u << 20) /* pass added per token at weight 1 */

enum sched_req_state {
    SCHED_REQ_FREE = 0,
    SCHED_REQ_WAITING,
    SCHED_REQ_RUNNING,
    SCHED_REQ_DONE,
    SCHED_REQ_POLLED,
};

struct sched_job;

struct sched_req {
    struct sched_link link;              /* free, job resume, running or done list */
    struct sched_req *left, *right, *up; /* the job's waiting treap */
    uint32_t heap_key;                   /* treap priority (random) */
    uint32_t round;                      /* elevator sweep it waits for */
    bool in_tree;
    enum sched_req_state state;
    uint64_t id;
    struct sched_job *job; /* NULL once finished */
    uint64_t job_id;
    void *user;
    int priority;
    struct sampler_params sampling;
    bool ignore_eos;
    int32_t n_logprobs;
    int32_t max_new; /* after the context cap */
    int n_stop;
    const char *stop[SCHED_MAX_STOP];
    size_t stop_len[SCHED_MAX_STOP];
    size_t stop_len_max;
    int32_t *tokens; /* [n_prompt + max_new] prompt, then generated ids */
    int32_t n_prompt;
    int32_t n_tokens;
    int32_t n_computed; /* leading tokens whose K/V are in the blocks */
    int32_t *blocks;    /* [cap_blocks] block table */
    int32_t n_blocks;
    uint64_t *hashes; /* [cap_blocks] chain hashes of full blocks, [0, n_hashed) known */
    int32_t n_hashed;
    int32_t n_prompt_full; /* full prompt blocks: the length of the ordering key */
    int32_t n_registered;  /* leading blocks already offered to the prefix cache */
    char *text;            /* [text_cap] continuation text */
    size_t text_len;
    struct sched_text_state text_state;
    struct sched_logprob *logprobs; /* [max_new][1 + n_logprobs] */
    int64_t t_submit_us, t_first_us, t_done_us;
    int32_t n_cached_prompt;
    bool admitted_once;
    int32_t n_preemptions;
    enum sched_finish finish;
    int32_t batch_tokens; /* tokens in the current step's batch */
    int32_t batch_row;    /* its logits row in the current step, -1 when none */
    void *arena;          /* the one allocation behind tokens, blocks, hashes, text, ... */
};

struct sched_job {
    struct sched_link link; /* active or free list */
    uint64_t job_id;
    int priority;
    uint64_t pass;      /* stride scheduling: smallest goes next */
    uint64_t pass_step; /* SCHED_PASS_SCALE / weight, per token forwarded */
    struct sched_link resume;
    struct sched_req *root;
    uint32_t round;   /* the sweep being served */
    uint64_t *cursor; /* [max_ctx / block_size] key of the last request taken from the treap */
    int32_t cursor_n;
    uint64_t cursor_id;
    bool has_cursor;
    int32_t n_waiting, n_running;
    uint64_t deferred_step; /* waits for a prefix being computed in this step */
};

struct sched {
    struct sched_config cfg;
    struct engine *e;
    const struct tok *tok;
    bool have_text;
    struct sched_text_vocab vocab;
    int32_t n_vocab, block_size, max_ctx, eos_id;
    struct kv_pool *pool;

    struct sched_req *reqs; /* [max_requests + 1]: one more for the polled completion */
    int32_t n_slots;
    struct sched_link free_reqs, running, done;
    struct sched_req *polled;
    int32_t n_in_flight; /* submitted, not yet polled */
    int32_t n_running, n_waiting, n_done;
    uint64_t next_seq;

    struct sched_job *jobs; /* [max_jobs] */
    uint64_t *cursor_mem;   /* [max_jobs * max_key] */
    struct sched_link free_jobs, active_jobs;
    int32_t n_jobs;
    uint64_t vtime; /* pass given to a job when none is active */
    uint32_t rng;

    /* the batch being built, sized by max_batched_tokens and max_seqs */
    int32_t *b_tokens, *b_pos, *b_seq; /* [max_batched_tokens] */
    const int32_t **b_tables;          /* [max_seqs] */
    int32_t *b_n_blocks, *b_rows;      /* [max_seqs] */
    struct sched_req **b_reqs;         /* [max_seqs] */
    int32_t b_n_tokens, b_n_seqs, b_n_outputs;
    float *logits; /* [max_seqs, n_vocab] */
    struct sampler_scratch *scratch;
    /* device sampling (engine_samples_on_device): per output row [max_seqs] */
    bool dev_sampling;
    float *d_temp, *d_top_p;
    int32_t *d_top_k, *d_tokens;
    uint64_t *d_seed, *d_step;
    struct kern_logprob *d_lp; /* [max_seqs, 1 + d_lp_top] this step's device logprobs */
    int32_t d_lp_top;          /* 0: none this step */
    uint64_t step_id;

    struct sched_stats st;
    char errstr[256];
};

static int64_t sched_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static struct sched_req *req_of(struct sched_link *l)
{
    return SCHED_CONTAINER_OF(l, struct sched_req, link);
}

static struct sched_job *job_of(struct sched_link *l)
{
    return SCHED_CONTAINER_OF(l, struct sched_job, link);
}

static int32_t blocks_for(const struct sched *s, int32_t n_positions)
{
    return (n_positions + s->block_size - 1) / s->block_size;
}

/* --- options ---------------------------------------------------------------------------------- */

void sched_config_default(struct sched_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_batched_tokens = 0;
    cfg->max_seqs = 0;
    cfg->max_requests = 4096;
    cfg->max_jobs = 256;
    cfg->watermark_blocks = -1;
    cfg->enable_prefix_cache = true;
}

void sched_request_params_default(struct sched_request_params *p)
{
    memset(p, 0, sizeof(*p));
    sampler_params_greedy(&p->sampling);
    p->max_new_tokens = 256;
}

const char *sched_finish_name(enum sched_finish f)
{
    switch (f) {
    case SCHED_FINISH_EOS:
        return "eos";
    case SCHED_FINISH_LENGTH:
        return "length";
    case SCHED_FINISH_STOP:
        return "stop";
    case SCHED_FINISH_CANCELLED:
        return "cancelled";
    case SCHED_FINISH_ERROR:
        return "error";
    }
    return "?";
}

/* --- create / destroy ------------------------------------------------------------------------ */

void sched_destroy(struct sched *s)
{
    if (!s) {
        return;
    }
    if (s->reqs) {
        for (int32_t i = 0; i < s->n_slots; i++) {
            free(s->reqs[i].arena);
            s->reqs[i].arena = NULL;
        }
    }
    free(s->reqs);
    free(s->jobs);
    free(s->cursor_mem);
    free(s->b_tokens);
    free(s->b_pos);
    free(s->b_seq);
    free(s->b_tables);
    free(s->b_n_blocks);
    free(s->b_rows);
    free(s->b_reqs);
    free(s->logits);
    sampler_scratch_destroy(s->scratch);
    free(s->d_temp);
    free(s->d_top_p);
    free(s->d_top_k);
    free(s->d_tokens);
    free(s->d_seed);
    free(s->d_step);
    free(s->d_lp);
    kv_pool_destroy(s->pool);
    free(s);
}

int sched_create(const struct sched_config *cfg, struct engine *e, const struct tok *t,
                 struct sched **out)
{
    *out = NULL;
    const struct engine_config *ec = engine_get_config(e);
    const struct model_config *mc = engine_model_config(e);
    struct sched_config c = *cfg;
    if (c.max_batched_tokens == 0) {
        c.max_batched_tokens = ec->max_batch_tokens;
    }
    if (c.max_seqs == 0) {
        c.max_seqs = ec->max_outputs < 256 ? ec->max_outputs : 256;
    }
    if (c.watermark_blocks < 0) {
        c.watermark_blocks = ec->n_kv_blocks / 100;
    }
    if (c.max_batched_tokens < 1 || c.max_batched_tokens > ec->max_batch_tokens || c.max_seqs < 1 ||
        c.max_seqs > ec->max_outputs || c.max_requests < 1 ||
        c.max_requests > SCHED_MAX_REQUESTS_MAX - 1 || c.max_jobs < 1 ||
        c.watermark_blocks >= ec->n_kv_blocks) {
        log_error("invalid config: max_batched_tokens=%" PRId32 " (engine %" PRId32
                  ") max_seqs=%" PRId32 " (engine outputs %" PRId32 ") max_requests=%" PRId32
                  " max_jobs=%" PRId32 " watermark_blocks=%" PRId32 " (pool %" PRId32 ")",
                  c.max_batched_tokens, ec->max_batch_tokens, c.max_seqs, ec->max_outputs,
                  c.max_requests, c.max_jobs, c.watermark_blocks, ec->n_kv_blocks);
        return -EINVAL;
    }
    if (t && tok_n_vocab(t) > mc->n_vocab) {
        log_error("the tokenizer has %" PRId32 " pieces, the model %" PRId32, tok_n_vocab(t),
                  mc->n_vocab);
        return -EINVAL;
    }
    struct sched *s = calloc(1, sizeof(*s));
    if (!s) {
        return -ENOMEM;
    }
    int err = -ENOMEM;
    s->cfg = c;
    s->e = e;
    s->tok = t;
    s->n_vocab = mc->n_vocab;
    s->block_size = ec->kv_block_size;
    s->max_ctx = ec->max_ctx;
    s->eos_id = mc->eos_id >= 0 ? mc->eos_id : (t ? tok_eos_id(t) : -1);
    s->rng = 0x2545f491u;
    if (t) {
        err = sched_text_vocab_init(&s->vocab, t);
        if (err) {
            log_error("the tokenizer's unknown piece is too long for completion text");
            goto fail;
        }
        s->have_text = true;
    }
    err = kv_pool_create(ec->n_kv_blocks, s->block_size, c.enable_prefix_cache, &s->pool);
    if (err) {
        goto fail;
    }
    err = -ENOMEM;
    s->n_slots = c.max_requests + 1;
    s->reqs = calloc((size_t)s->n_slots, sizeof(*s->reqs));
    int32_t max_key = s->max_ctx / s->block_size + 1;
    s->jobs = calloc((size_t)c.max_jobs, sizeof(*s->jobs));
    s->cursor_mem = calloc((size_t)c.max_jobs * (size_t)max_key, sizeof(*s->cursor_mem));
    size_t T = (size_t)c.max_batched_tokens, S = (size_t)c.max_seqs;
    s->b_tokens = malloc(T * sizeof(*s->b_tokens));
    s->b_pos = malloc(T * sizeof(*s->b_pos));
    s->b_seq = malloc(T * sizeof(*s->b_seq));
    s->b_tables = malloc(S * sizeof(*s->b_tables));
    s->b_n_blocks = malloc(S * sizeof(*s->b_n_blocks));
    s->b_rows = malloc(S * sizeof(*s->b_rows));
    s->b_reqs = malloc(S * sizeof(*s->b_reqs));
    s->logits = malloc(S * (size_t)s->n_vocab * sizeof(*s->logits));
    s->scratch = sampler_scratch_create(s->n_vocab);
    s->dev_sampling = engine_samples_on_device(e);
    s->d_temp = malloc(S * sizeof(*s->d_temp));
    s->d_top_p = malloc(S * sizeof(*s->d_top_p));
    s->d_top_k = malloc(S * sizeof(*s->d_top_k));
    s->d_tokens = malloc(S * sizeof(*s->d_tokens));
    s->d_seed = malloc(S * sizeof(*s->d_seed));
    s->d_step = malloc(S * sizeof(*s->d_step));
    s->d_lp = malloc(S * (1 + SCHED_MAX_LOGPROBS) * sizeof(*s->d_lp));
    if (!s->reqs || !s->jobs || !s->cursor_mem || !s->b_tokens || !s->b_pos || !s->b_seq ||
        !s->b_tables || !s->b_n_blocks || !s->b_rows || !s->b_reqs || !s->logits || !s->scratch ||
        !s->d_temp || !s->d_top_p || !s->d_top_k || !s->d_tokens || !s->d_seed || !s->d_step ||
        !s->d_lp) {
        goto fail;
    }
    sched_list_init(&s->free_reqs);
    sched_list_init(&s->running);
    sched_list_init(&s->done);
    for (int32_t i = 0; i < s->n_slots; i++) {
        sched_list_push_back(&s->free_reqs, &s->reqs[i].link);
    }
    sched_list_init(&s->free_jobs);
    sched_list_init(&s->active_jobs);
    for (int32_t i = 0; i < c.max_jobs; i++) {
        s->jobs[i].cursor = s->cursor_mem + (size_t)i * (size_t)max_key;
        sched_list_push_back(&s->free_jobs, &s->jobs[i].link);
    }
    s->st.kv_blocks = ec->n_kv_blocks;
    *out = s;
    return 0;
fail:
    sched_destroy(s);
    return err;
}

/* --- hashing and the within-job order ----------------------------------------------------------
 */

static uint64_t req_parent_hash(const struct sched_req *r, int32_t k)
{
    return k > 0 ? r->hashes[k - 1] : KV_POOL_ROOT_HASH;
}

/* Makes hashes[0, n_full) known; the tokens of those blocks must exist. */
static void req_hash_upto(const struct sched *s, struct sched_req *r, int32_t n_full)
{
    for (int32_t k = r->n_hashed; k < n_full; k++) {
        r->hashes[k] = kv_pool_hash(req_parent_hash(r, k), r->tokens + (size_t)k * s->block_size,
                                    s->block_size);
    }
    if (n_full > r->n_hashed) {
        r->n_hashed = n_full;
    }
}

/* Order of waiting requests within a job: by the prompt's chain of full-block hashes (a
 * depth-first walk of the block trie, so shared prefixes are adjacent), then by id. */
static int key_cmp(const uint64_t *ha, int32_t na, uint64_t ida, const uint64_t *hb, int32_t nb,
                   uint64_t idb)
{
    int32_t n = na < nb ? na : nb;
    for (int32_t i = 0; i < n; i++) {
        if (ha[i] != hb[i]) {
            return ha[i] < hb[i] ? -1 : 1;
        }
    }
    if (na != nb) {
        return na < nb ? -1 : 1;
    }
    return ida < idb ? -1 : ida > idb ? 1 : 0;
}

static int req_cmp(const struct sched_req *a, const struct sched_req *b)
{
    if (a->round != b->round) {
        return a->round < b->round ? -1 : 1;
    }
    return key_cmp(a->hashes, a->n_prompt_full, a->id, b->hashes, b->n_prompt_full, b->id);
}

static void tree_rotate_up(struct sched_job *j, struct sched_req *x)
{
    struct sched_req *p = x->up, *g = p->up;
    if (p->left == x) {
        p->left = x->right;
        if (x->right) {
            x->right->up = p;
        }
        x->right = p;
    } else {
        p->right = x->left;
        if (x->left) {
            x->left->up = p;
        }
        x->left = p;
    }
    p->up = x;
    x->up = g;
    if (!g) {
        j->root = x;
    } else if (g->left == p) {
        g->left = x;
    } else {
        g->right = x;
    }
}

static void tree_insert(struct sched *s, struct sched_job *j, struct sched_req *r)
{
    /* the elevator: a prompt that sorts before the last one served waits for the next sweep */
    bool behind = j->has_cursor && key_cmp(r->hashes, r->n_prompt_full, r->id, j->cursor,
                                           j->cursor_n, j->cursor_id) < 0;
    r->round = j->round + (behind ? 1u : 0u);
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 17;
    s->rng ^= s->rng << 5;
    r->heap_key = s->rng;
    r->left = r->right = r->up = NULL;
    struct sched_req **slot = &j->root, *parent = NULL;
    while (*slot) {
        parent = *slot;
        slot = req_cmp(r, parent) < 0 ? &parent->left : &parent->right;
    }
    *slot = r;
    r->up = parent;
    while (r->up && r->heap_key < r->up->heap_key) {
        tree_rotate_up(j, r);
    }
    r->in_tree = true;
}

static void tree_remove(struct sched_job *j, struct sched_req *r)
{
    while (r->left && r->right) {
        tree_rotate_up(j, r->left->heap_key < r->right->heap_key ? r->left : r->right);
    }
    struct sched_req *child = r->left ? r->left : r->right;
    if (child) {
        child->up = r->up;
    }
    if (!r->up) {
        j->root = child;
    } else if (r->up->left == r) {
        r->up->left = child;
    } else {
        r->up->right = child;
    }
    r->left = r->right = r->up = NULL;
    r->in_tree = false;
}

static struct sched_req *tree_min(const struct sched_job *j)
{
    struct sched_req *r = j->root;
    while (r && r->left) {
        r = r->left;
    }
    return r;
}

/* The request a job admits next: a preempted one first, then the treap's minimum. */
static struct sched_req *job_head(const struct sched_job *j)
{
    if (!sched_list_empty(&j->resume)) {
        return req_of(j->resume.next);
    }
    return tree_min(j);
}

/* Takes a waiting request off its job's queues (admission, cancellation). */
static void job_unqueue(struct sched *s, struct sched_req *r, bool admitted)
{
    struct sched_job *j = r->job;
    if (r->in_tree) {
        tree_remove(j, r);
        if (admitted) {
            j->round = r->round;
            j->cursor_n = r->n_prompt_full;
            j->cursor_id = r->id;
            memcpy(j->cursor, r->hashes, (size_t)r->n_prompt_full * sizeof(*j->cursor));
            j->has_cursor = true;
        }
    } else {
        sched_list_remove(&r->link);
    }
    j->n_waiting--;
    s->n_waiting--;
}

/* --- jobs ---------------------------------------------------------------------------------------
 */

static struct sched_job *job_find(struct sched *s, uint64_t job_id)
{
    for (struct sched_link *l = s->active_jobs.next; l != &s->active_jobs; l = l->next) {
        if (job_of(l)->job_id == job_id) {
            return job_of(l);
        }
    }
    return NULL;
}

static struct sched_job *job_acquire(struct sched *s, uint64_t job_id)
{
    if (sched_list_empty(&s->free_jobs)) {
        return NULL;
    }
    struct sched_job *j = job_of(s->free_jobs.next);
    sched_list_remove(&j->link);
    uint64_t *cursor = j->cursor;
    memset(j, 0, sizeof(*j));
    j->cursor = cursor;
    j->job_id = job_id;
    sched_list_init(&j->resume);
    /* a new job starts level with the least served active job: no credit for having been idle */
    uint64_t vt = s->vtime;
    bool any = false;
    for (struct sched_link *l = s->active_jobs.next; l != &s->active_jobs; l = l->next) {
        uint64_t p = job_of(l)->pass;
        vt = !any || p < vt ? p : vt;
        any = true;
    }
    j->pass = vt;
    sched_list_push_back(&s->active_jobs, &j->link);
    s->n_jobs++;
    return j;
}

static void job_release_if_idle(struct sched *s, struct sched_job *j)
{
    if (j->n_waiting > 0 || j->n_running > 0) {
        return;
    }
    s->vtime = j->pass > s->vtime ? j->pass : s->vtime;
    sched_list_remove(&j->link);
    sched_list_push_back(&s->free_jobs, &j->link);
    s->n_jobs--;
}

/* The job with waiting requests and the smallest pass (ties: higher priority, then older). */
static struct sched_job *job_pick(const struct sched *s)
{
    struct sched_job *best = NULL;
    for (struct sched_link *l = s->active_jobs.next; l != &s->active_jobs; l = l->next) {
        struct sched_job *j = job_of(l);
        if (j->n_waiting == 0 || j->deferred_step == s->step_id) {
            continue;
        }
        if (!best || j->pass < best->pass ||
            (j->pass == best->pass && j->priority > best->priority)) {
            best = j;
        }
    }
    return best;
}

/* --- lifecycle
 * ------------------------------------------------------------------------------------ */

static void running_insert(struct sched *s, struct sched_req *r)
{
    struct sched_link *pos = s->running.prev;
    while (pos != &s->running && req_of(pos)->priority < r->priority) {
        pos = pos->prev;
    }
    sched_list_insert_after(pos, &r->link);
}

static void req_finish(struct sched *s, struct sched_req *r, enum sched_finish why)
{
    struct sched_job *j = r->job;
    if (r->state == SCHED_REQ_RUNNING) {
        kv_pool_free(s->pool, r->blocks, r->n_blocks);
        r->n_blocks = 0;
        sched_list_remove(&r->link);
        j->n_running--;
        s->n_running--;
    } else {
        SCHED_ASSERT(r->state == SCHED_REQ_WAITING);
        job_unqueue(s, r, false);
    }
    if (s->have_text) {
        if (why != SCHED_FINISH_STOP) {
            sched_text_flush(&r->text_state, r->text, &r->text_len);
        }
        r->text[r->text_len] = '\0';
    }
    r->state = SCHED_REQ_DONE;
    r->finish = why;
    r->t_done_us = sched_now_us();
    r->job = NULL;
    sched_list_push_back(&s->done, &r->link);
    s->n_done++;
    s->st.n_finished++;
    job_release_if_idle(s, j);
}

/* Evicts a running request: frees its blocks and puts it at the front of its job's queue with
 * its generated tokens, to be recomputed when readmitted. */
static void req_preempt(struct sched *s, struct sched_req *r)
{
    kv_pool_free(s->pool, r->blocks, r->n_blocks);
    r->n_blocks = 0;
    r->n_computed = 0;
    r->n_registered = 0;
    sched_list_remove(&r->link);
    sched_list_insert_after(&r->job->resume, &r->link);
    r->state = SCHED_REQ_WAITING;
    r->job->n_running--;
    r->job->n_waiting++;
    s->n_running--;
    s->n_waiting++;
    r->n_preemptions++;
    s->st.n_preemptions++;
}

static void req_release(struct sched *s, struct sched_req *r)
{
    free(r->arena);
    r->arena = NULL;
    r->tokens = r->blocks = NULL;
    r->hashes = NULL;
    r->text = NULL;
    r->logprobs = NULL;
    r->state = SCHED_REQ_FREE;
    sched_list_push_back(&s->free_reqs, &r->link);
}

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static int submit_check(const struct sched *s, const struct sched_request_params *p)
{
    if (!p->tokens || p->n_tokens == 0 || p->n_tokens > (size_t)s->max_ctx ||
        p->max_new_tokens < 1 || sampler_params_check(&p->sampling) != 0 || p->n_stop < 0 ||
        p->n_stop > SCHED_MAX_STOP || (p->n_stop > 0 && (!p->stop || !s->have_text)) ||
        p->priority < 0 || p->priority > SCHED_PRIORITY_MAX || p->n_logprobs < 0 ||
        p->n_logprobs > SCHED_MAX_LOGPROBS) {
        return -EINVAL;
    }
    for (size_t i = 0; i < p->n_tokens; i++) {
        if (p->tokens[i] < 0 || p->tokens[i] >= s->n_vocab) {
            return -EINVAL;
        }
    }
    for (int k = 0; k < p->n_stop; k++) {
        size_t len = p->stop[k] ? strlen(p->stop[k]) : 0;
        if (len == 0 || len > SCHED_MAX_STOP_LEN) {
            return -EINVAL;
        }
    }
    return 0;
}

int sched_submit(struct sched *s, const struct sched_request_params *p, uint64_t *req_id)
{
    int err = submit_check(s, p);
    if (err) {
        return err;
    }
    int32_t n_prompt = (int32_t)p->n_tokens;
    int32_t max_new = p->max_new_tokens;
    if (max_new > s->max_ctx - n_prompt + 1) {
        max_new = s->max_ctx - n_prompt + 1; /* the last token is sampled, never fed */
    }
    if (blocks_for(s, n_prompt + max_new - 1) > kv_pool_n_blocks(s->pool)) {
        return -E2BIG;
    }
    if (s->n_in_flight >= s->cfg.max_requests) {
        return -EAGAIN;
    }
    struct sched_job *j = job_find(s, p->job_id);
    if (!j && !(j = job_acquire(s, p->job_id))) {
        return -EAGAIN;
    }
    /* one buffer: hashes, logprobs, tokens, block table, text, stop strings */
    int32_t n_all = n_prompt + max_new;
    int32_t cap_blocks = blocks_for(s, n_all);
    size_t n_lp = (size_t)max_new * (size_t)(1 + p->n_logprobs);
    size_t text_cap =
        s->have_text ? SCHED_TEXT_CARRY_BYTES + (size_t)max_new * s->vocab.max_piece_bytes + 1 : 0;
    size_t stop_bytes = 0;
    for (int k = 0; k < p->n_stop; k++) {
        stop_bytes += strlen(p->stop[k]) + 1;
    }
    size_t off_lp = align8((size_t)cap_blocks * sizeof(uint64_t));
    size_t off_tok = align8(off_lp + (p->n_logprobs > 0 ? n_lp * sizeof(struct sched_logprob) : 0));
    size_t off_blk = align8(off_tok + (size_t)n_all * sizeof(int32_t));
    size_t off_text = align8(off_blk + (size_t)cap_blocks * sizeof(int32_t));
    size_t off_stop = off_text + text_cap;
    char *arena = malloc(off_stop + stop_bytes);
    if (!arena) {
        job_release_if_idle(s, j);
        return -ENOMEM;
    }
    struct sched_req *r = req_of(s->free_reqs.next);
    sched_list_remove(&r->link);
    uint32_t slot = (uint32_t)(r - s->reqs);
    memset(r, 0, sizeof(*r));
    sched_list_init(&r->link);
    r->arena = arena;
    r->hashes = (uint64_t *)(void *)arena;
    r->logprobs = p->n_logprobs > 0 ? (struct sched_logprob *)(void *)(arena + off_lp) : NULL;
    r->tokens = (int32_t *)(void *)(arena + off_tok);
    r->blocks = (int32_t *)(void *)(arena + off_blk);
    r->text = s->have_text ? arena + off_text : NULL;
    char *stops = arena + off_stop;
    for (int k = 0; k < p->n_stop; k++) {
        size_t len = strlen(p->stop[k]);
        memcpy(stops, p->stop[k], len + 1);
        r->stop[k] = stops;
        r->stop_len[k] = len;
        r->stop_len_max = len > r->stop_len_max ? len : r->stop_len_max;
        stops += len + 1;
    }
    r->n_stop = p->n_stop;
    r->id = (++s->next_seq << SCHED_SLOT_BITS) | slot;
    r->job = j;
    r->job_id = p->job_id;
    r->user = p->user;
    r->priority = p->priority;
    r->sampling = p->sampling;
    r->ignore_eos = p->ignore_eos;
    r->n_logprobs = p->n_logprobs;
    r->max_new = max_new;
    memcpy(r->tokens, p->tokens, (size_t)n_prompt * sizeof(*r->tokens));
    r->n_prompt = r->n_tokens = n_prompt;
    r->n_prompt_full = n_prompt / s->block_size;
    req_hash_upto(s, r, r->n_prompt_full);
    if (s->have_text) {
        sched_text_state_init(&r->text_state);
        for (int32_t i = 0; i < n_prompt; i++) {
            sched_text_feed(&s->vocab, &r->text_state, r->tokens[i], NULL, NULL);
        }
        r->text[0] = '\0';
    }
    r->batch_row = -1;
    r->t_submit_us = sched_now_us();
    r->state = SCHED_REQ_WAITING;
    j->priority = p->priority;
    j->pass_step = SCHED_PASS_SCALE / (uint64_t)(1 + p->priority);
    tree_insert(s, j, r);
    j->n_waiting++;
    s->n_waiting++;
    s->n_in_flight++;
    s->st.n_submitted++;
    if (req_id) {
        *req_id = r->id;
    }
    return 0;
}

static struct sched_req *req_lookup(struct sched *s, uint64_t req_id)
{
    uint32_t slot = (uint32_t)(req_id & SCHED_SLOT_MASK);
    if (slot >= (uint32_t)s->n_slots || s->reqs[slot].id != req_id) {
        return NULL;
    }
    return &s->reqs[slot];
}

int sched_cancel(struct sched *s, uint64_t req_id)
{
    struct sched_req *r = req_lookup(s, req_id);
    if (!r) {
        return -ENOENT;
    }
    if (r->state != SCHED_REQ_WAITING && r->state != SCHED_REQ_RUNNING) {
        return -EALREADY;
    }
    req_finish(s, r, SCHED_FINISH_CANCELLED);
    return 0;
}

int sched_cancel_job(struct sched *s, uint64_t job_id)
{
    struct sched_job *j = job_find(s, job_id);
    if (!j) {
        return 0;
    }
    int n = 0;
    int32_t n_running = j->n_running;
    while (j->n_waiting > 0) {
        req_finish(s, job_head(j), SCHED_FINISH_CANCELLED);
        n++;
    }
    struct sched_link *l = s->running.next;
    while (n_running > 0 && l != &s->running) {
        struct sched_link *next = l->next;
        if (req_of(l)->job == j) {
            req_finish(s, req_of(l), SCHED_FINISH_CANCELLED);
            n_running--;
            n++;
        }
        l = next;
    }
    return n;
}

bool sched_poll(struct sched *s, struct sched_completion *out)
{
    if (s->polled) {
        req_release(s, s->polled);
        s->polled = NULL;
    }
    if (sched_list_empty(&s->done)) {
        return false;
    }
    struct sched_req *r = req_of(s->done.next);
    sched_list_remove(&r->link);
    s->n_done--;
    s->n_in_flight--;
    r->state = SCHED_REQ_POLLED;
    s->polled = r;
    memset(out, 0, sizeof(*out));
    out->req_id = r->id;
    out->job_id = r->job_id;
    out->user = r->user;
    out->finish = r->finish;
    out->tokens = r->tokens + r->n_prompt;
    out->n_tokens = r->n_tokens - r->n_prompt;
    out->text = r->text ? r->text : "";
    out->text_len = r->text ? r->text_len : 0;
    out->n_prompt_tokens = r->n_prompt;
    out->n_cached_tokens = r->n_cached_prompt;
    out->n_preemptions = r->n_preemptions;
    out->t_submit_us = r->t_submit_us;
    out->t_first_token_us = r->t_first_us;
    out->t_done_us = r->t_done_us;
    out->n_logprobs = r->n_logprobs;
    out->logprobs = r->logprobs;
    return true;
}

bool sched_idle(const struct sched *s)
{
    return s->n_running == 0 && s->n_waiting == 0;
}

void sched_stats(const struct sched *s, struct sched_stats *out)
{
    *out = s->st;
    out->n_running = s->n_running;
    out->n_waiting = s->n_waiting;
    out->n_done = s->n_done;
    out->n_jobs = s->n_jobs;
    out->kv_blocks = kv_pool_n_blocks(s->pool);
    out->kv_blocks_free = kv_pool_n_free(s->pool);
    out->kv_blocks_cached = kv_pool_n_cached_free(s->pool);
    out->kv_blocks_used = out->kv_blocks - out->kv_blocks_free;
    out->prefix_hit_rate = s->st.n_tokens_looked_up
                               ? (double)s->st.n_tokens_cached / (double)s->st.n_tokens_looked_up
                               : 0.0;
    out->mean_tokens_per_step =
        s->st.n_steps ? (double)s->st.n_tokens_forwarded / (double)s->st.n_steps : 0.0;
}

const char *sched_errstr(const struct sched *s)
{
    return s->errstr;
}

static int32_t list_len(const struct sched_link *head)
{
    int32_t n = 0;
    for (const struct sched_link *l = head->next; l != head; l = l->next) {
        n++;
    }
    return n;
}

static int32_t tree_size(const struct sched_req *r)
{
    return r ? 1 + tree_size(r->left) + tree_size(r->right) : 0;
}

int sched_check(const struct sched *s)
{
#define CHECK(x)                                                  \
    do {                                                          \
        if (!(x)) {                                               \
            log_error("sched_check: %s (line %d)", #x, __LINE__); \
            free(refs);                                           \
            return -EPROTO;                                       \
        }                                                         \
    } while (0)
    int32_t n_blocks = kv_pool_n_blocks(s->pool);
    int32_t *refs = calloc((size_t)n_blocks, sizeof(*refs));
    CHECK(refs != NULL);
    CHECK(kv_pool_check(s->pool) == 0);
    int32_t n_running = 0;
    int prev_priority = SCHED_PRIORITY_MAX;
    for (const struct sched_link *l = s->running.next; l != &s->running; l = l->next) {
        const struct sched_req *r = SCHED_CONTAINER_OF(l, const struct sched_req, link);
        CHECK(r->state == SCHED_REQ_RUNNING && r->job);
        CHECK(r->priority <= prev_priority);
        prev_priority = r->priority;
        CHECK(r->n_blocks >= blocks_for(s, r->n_computed));
        CHECK(r->n_computed < r->n_tokens);
        for (int32_t k = 0; k < r->n_blocks; k++) {
            CHECK(r->blocks[k] >= 0 && r->blocks[k] < n_blocks);
            refs[r->blocks[k]]++;
        }
        n_running++;
    }
    for (int32_t id = 0; id < n_blocks; id++) {
        CHECK(refs[id] == kv_pool_ref_count(s->pool, id));
    }
    CHECK(n_running == s->n_running && n_running <= s->cfg.max_seqs);
    int32_t n_waiting = 0, n_jobs = 0, n_job_running = 0;
    for (const struct sched_link *l = s->active_jobs.next; l != &s->active_jobs; l = l->next) {
        const struct sched_job *j = SCHED_CONTAINER_OF(l, const struct sched_job, link);
        CHECK(j->n_waiting + j->n_running > 0);
        CHECK(j->n_waiting == list_len(&j->resume) + tree_size(j->root));
        n_waiting += j->n_waiting;
        n_job_running += j->n_running;
        n_jobs++;
    }
    CHECK(n_waiting == s->n_waiting && n_job_running == s->n_running && n_jobs == s->n_jobs);
    CHECK(list_len(&s->done) == s->n_done);
    CHECK(s->n_in_flight == s->n_running + s->n_waiting + s->n_done);
    CHECK(list_len(&s->free_reqs) == s->n_slots - s->n_in_flight - (s->polled ? 1 : 0));
    free(refs);
    return 0;
#undef CHECK
}

/* --- the step ------------------------------------------------------------------------------------
 */

/* Offers the blocks that become full once the request's first n_full blocks are computed to the
 * prefix cache, as pending until the forward pass has written them. */
static void req_register(struct sched *s, struct sched_req *r, int32_t n_full)
{
    if (!s->cfg.enable_prefix_cache || n_full <= r->n_registered) {
        return;
    }
    req_hash_upto(s, r, n_full);
    for (int32_t k = r->n_registered; k < n_full; k++) {
        kv_pool_register(s->pool, r->blocks[k], r->hashes[k], req_parent_hash(r, k),
                         r->tokens + (size_t)k * s->block_size, true);
    }
    r->n_registered = n_full;
}

/* Puts the request's next n_new tokens into the batch. Its blocks must already cover them. */
static void batch_add(struct sched *s, struct sched_req *r, int32_t n_new)
{
    int32_t seq = s->b_n_seqs++;
    s->b_reqs[seq] = r;
    s->b_tables[seq] = r->blocks;
    s->b_n_blocks[seq] = r->n_blocks;
    for (int32_t i = 0; i < n_new; i++) {
        s->b_tokens[s->b_n_tokens + i] = r->tokens[r->n_computed + i];
        s->b_pos[s->b_n_tokens + i] = r->n_computed + i;
        s->b_seq[s->b_n_tokens + i] = seq;
    }
    s->b_n_tokens += n_new;
    r->batch_tokens = n_new;
    /* charged now, so later admissions in this step already see it */
    r->job->pass += (uint64_t)n_new * r->job->pass_step;
    r->batch_row = -1;
    if (r->n_computed + n_new == r->n_tokens) {
        r->batch_row = s->b_n_outputs;
        s->b_rows[s->b_n_outputs++] = s->b_n_tokens - 1;
    }
    req_register(s, r, (r->n_computed + n_new) / s->block_size);
}

/* Gives a running request the blocks for its next n_new tokens, preempting from the tail of the
 * running list while there are too few. Returns false when the request itself was preempted. */
static bool running_reserve(struct sched *s, struct sched_req *r, int32_t n_new, bool *preempted)
{
    int32_t need = blocks_for(s, r->n_computed + n_new) - r->n_blocks;
    while (need > kv_pool_n_free(s->pool)) {
        struct sched_req *victim = req_of(s->running.prev);
        req_preempt(s, victim);
        *preempted = true;
        if (victim == r) {
            return false;
        }
    }
    if (need > 0) {
        SCHED_ASSERT(kv_pool_alloc(s->pool, need, r->blocks + r->n_blocks) == 0);
        r->n_blocks += need;
    }
    return true;
}

/* Tries to admit a waiting request with at most `budget` new tokens: looks up its prefix in the
 * cache, then takes blocks for the first chunk. Returns 0 with *n_new set; -EAGAIN when its next
 * block is being computed in this step (worth waiting one step for); -ENOSPC when the blocks
 * (and the watermark) do not allow it now. */
static int waiting_admit(struct sched *s, struct sched_req *r, int32_t budget, int32_t *n_new)
{
    int32_t bs = s->block_size, hit = 0, hit_free = 0;
    if (s->cfg.enable_prefix_cache) {
        /* the last token is always computed: its logits are needed */
        int32_t n_lookup = (r->n_tokens - 1) / bs;
        req_hash_upto(s, r, n_lookup);
        for (; hit < n_lookup; hit++) {
            int32_t id = kv_pool_lookup(s->pool, r->hashes[hit], req_parent_hash(r, hit),
                                        r->tokens + (size_t)hit * bs);
            if (id < 0) {
                break;
            }
            if (kv_pool_is_pending(s->pool, id)) {
                return -EAGAIN;
            }
            r->blocks[hit] = id;
            hit_free += kv_pool_ref_count(s->pool, id) == 0;
        }
    }
    int32_t n_comp = hit * bs;
    int32_t n = r->n_tokens - n_comp < budget ? r->n_tokens - n_comp : budget;
    int32_t n_alloc = blocks_for(s, n_comp + n) - hit;
    int32_t reserve = s->n_running > 0 ? s->cfg.watermark_blocks : 0;
    if (n_alloc > kv_pool_n_free(s->pool) - hit_free - reserve) {
        return -ENOSPC;
    }
    for (int32_t k = 0; k < hit; k++) {
        kv_pool_ref(s->pool, r->blocks[k]);
    }
    SCHED_ASSERT(kv_pool_alloc(s->pool, n_alloc, r->blocks + hit) == 0);
    r->n_blocks = hit + n_alloc;
    r->n_computed = n_comp;
    r->n_registered = hit;
    int32_t cached_prompt = n_comp < r->n_prompt ? n_comp : r->n_prompt;
    if (!r->admitted_once) {
        r->n_cached_prompt = cached_prompt;
        r->admitted_once = true;
    }
    s->st.n_tokens_looked_up += (uint64_t)r->n_tokens;
    s->st.n_tokens_cached += (uint64_t)n_comp;
    s->st.n_prompt_tokens_cached += (uint64_t)cached_prompt;
    *n_new = n;
    return 0;
}

static void batch_build(struct sched *s)
{
    int32_t budget = s->cfg.max_batched_tokens;
    bool preempted = false;
    s->b_n_tokens = s->b_n_seqs = s->b_n_outputs = 0;
    /* 1. running requests, first to last: a decode token each, or a prompt's next chunk */
    for (struct sched_link *l = s->running.next; l != &s->running && budget > 0;) {
        struct sched_req *r = req_of(l);
        int32_t n_new = r->n_tokens - r->n_computed < budget ? r->n_tokens - r->n_computed : budget;
        if (!running_reserve(s, r, n_new, &preempted)) {
            break; /* r was the last one left to schedule */
        }
        batch_add(s, r, n_new);
        budget -= n_new;
        l = r->link.next;
    }
    /* 2. waiting requests, unless this step had to preempt (they would only be evicted again) */
    while (!preempted && budget > 0 && s->n_running < s->cfg.max_seqs) {
        struct sched_job *j = job_pick(s);
        if (!j) {
            break;
        }
        struct sched_req *r = job_head(j);
        int32_t n_new = 0;
        int rc = waiting_admit(s, r, budget, &n_new);
        if (rc == -EAGAIN) {
            j->deferred_step = s->step_id;
            continue;
        }
        if (rc != 0) {
            break; /* strictly in turn: a later job does not overtake a blocked one */
        }
        job_unqueue(s, r, true);
        j->n_running++;
        s->n_running++;
        r->state = SCHED_REQ_RUNNING;
        running_insert(s, r);
        batch_add(s, r, n_new);
        budget -= n_new;
    }
}

/* struct sched_logprob is kern_logprob (kernels/cpu/twin.h), so both paths write it directly */
_Static_assert(sizeof(struct sched_logprob) == sizeof(struct kern_logprob) &&
                   offsetof(struct sched_logprob, token) == offsetof(struct kern_logprob, token) &&
                   offsetof(struct sched_logprob, logprob) ==
                       offsetof(struct kern_logprob, logprob),
               "sched_logprob and kern_logprob must share a layout");

/* Appends the token's text and looks for a stop string ending in the new text. Returns true when
 * one was found; the text is then cut before the earliest one. */
static bool req_text_append(struct sched *s, struct sched_req *r, int32_t token)
{
    size_t before = r->text_len;
    sched_text_feed(&s->vocab, &r->text_state, token, r->text, &r->text_len);
    if (r->n_stop == 0 || r->text_len == before) {
        return false;
    }
    size_t from = before > r->stop_len_max - 1 ? before - (r->stop_len_max - 1) : 0;
    const char *cut = NULL;
    for (int k = 0; k < r->n_stop; k++) {
        const char *hit = memmem(r->text + from, r->text_len - from, r->stop[k], r->stop_len[k]);
        if (hit && (!cut || hit < cut)) {
            cut = hit;
        }
    }
    if (!cut) {
        return false;
    }
    r->text_len = (size_t)(cut - r->text);
    return true;
}

/* Takes the next token of r: `token` when the device sampled it (>= 0), else sampled here from
 * `logits` (its row), which logprobs also need. */
static void req_sample(struct sched *s, struct sched_req *r, const float *logits, int32_t token,
                       int64_t now)
{
    int32_t step = r->n_tokens - r->n_prompt;
    if (token < 0) {
        token = sampler_sample(&r->sampling, (uint64_t)step, logits, s->n_vocab, s->scratch);
    }
    if (!r->t_first_us) {
        r->t_first_us = now;
    }
    if (!r->ignore_eos && token == s->eos_id) {
        req_finish(s, r, SCHED_FINISH_EOS);
        return;
    }
    if (r->n_logprobs > 0) {
        struct kern_logprob *dst =
            (struct kern_logprob *)(r->logprobs + (size_t)step * (size_t)(1 + r->n_logprobs));
        if (s->dev_sampling) { /* the best n_logprobs of the step's d_lp_top are a prefix */
            memcpy(dst, s->d_lp + (size_t)r->batch_row * (size_t)(1 + s->d_lp_top),
                   (size_t)(1 + r->n_logprobs) * sizeof(*dst));
        } else {
            kern_cpu_logprobs(logits, 1, s->n_vocab, &token, r->n_logprobs, dst);
        }
    }
    r->tokens[r->n_tokens++] = token;
    s->st.n_tokens_generated++;
    if (s->have_text && req_text_append(s, r, token)) {
        req_finish(s, r, SCHED_FINISH_STOP);
    } else if (step + 1 >= r->max_new) {
        req_finish(s, r, SCHED_FINISH_LENGTH);
    }
}

int sched_step(struct sched *s)
{
    if (sched_idle(s)) {
        return -EAGAIN;
    }
    int64_t t0 = sched_now_us();
    s->step_id++;
    s->errstr[0] = '\0';
    batch_build(s);
    /* the running head always fits and gets budget, and with nothing running every block is
     * free for the next waiting request (sched.h, "Progress") */
    SCHED_ASSERT(s->b_n_tokens > 0);
    struct engine_batch b = {
        .n_tokens = s->b_n_tokens,
        .tokens = s->b_tokens,
        .pos = s->b_pos,
        .seq = s->b_seq,
        .n_seqs = s->b_n_seqs,
        .block_tables = s->b_tables,
        .n_blocks = s->b_n_blocks,
        .n_outputs = s->b_n_outputs,
        .output_rows = s->b_rows,
    };
    /* with device sampling every token and logprob comes from the device (the same sampler for
     * every batch a request lands in), and the logits never leave it */
    int err = engine_forward(s->e, &b, s->dev_sampling ? NULL : s->logits);
    const char *what = "engine_forward";
    if (!err && s->dev_sampling && s->b_n_outputs > 0) {
        s->d_lp_top = 0;
        for (int32_t i = 0; i < s->b_n_seqs; i++) {
            const struct sched_req *r = s->b_reqs[i];
            int32_t row = r->batch_row;
            if (row >= 0) {
                s->d_temp[row] = r->sampling.temperature;
                s->d_top_k[row] = r->sampling.top_k;
                s->d_top_p[row] = r->sampling.top_p;
                s->d_seed[row] = r->sampling.seed;
                s->d_step[row] = (uint64_t)(r->n_tokens - r->n_prompt);
                s->d_lp_top = r->n_logprobs > s->d_lp_top ? r->n_logprobs : s->d_lp_top;
            }
        }
        err = engine_sample_device(s->e, s->b_n_outputs, s->d_temp, s->d_top_k, s->d_top_p,
                                   s->d_seed, s->d_step, s->d_tokens, s->d_lp_top, s->d_lp);
        what = "engine_sample_device";
    }
    if (err) {
        snprintf(s->errstr, sizeof(s->errstr), "%s: %s (%d)", what, engine_errstr(s->e), err);
        log_error("%s; failing the %" PRId32 " requests of the batch", s->errstr, s->b_n_seqs);
        for (int32_t i = 0; i < s->b_n_seqs; i++) {
            req_finish(s, s->b_reqs[i], SCHED_FINISH_ERROR);
        }
        return -EIO;
    }
    /* commit every request's new blocks before any finishes and releases them */
    for (int32_t i = 0; i < s->b_n_seqs; i++) {
        struct sched_req *r = s->b_reqs[i];
        int32_t start = r->n_computed, end = start + r->batch_tokens;
        for (int32_t k = start / s->block_size; k < end / s->block_size; k++) {
            kv_pool_commit(s->pool, r->blocks[k]);
        }
        r->n_computed = end;
        if (start < r->n_prompt) {
            s->st.n_prompt_tokens_forwarded +=
                (uint64_t)((end < r->n_prompt ? end : r->n_prompt) - start);
        }
    }
    int64_t now = sched_now_us();
    for (int32_t i = 0; i < s->b_n_seqs; i++) {
        struct sched_req *r = s->b_reqs[i];
        if (r->batch_row >= 0) {
            req_sample(s, r, s->logits + (size_t)r->batch_row * (size_t)s->n_vocab,
                       s->dev_sampling ? s->d_tokens[r->batch_row] : -1, now);
        }
    }
    int64_t t1 = sched_now_us();
    s->st.n_steps++;
    s->st.n_tokens_forwarded += (uint64_t)s->b_n_tokens;
    s->st.last_step_tokens = s->b_n_tokens;
    s->st.last_step_ms = (double)(t1 - t0) / 1000.0;
    s->st.total_step_ms += s->st.last_step_ms;
    return 0;
}
