/* sched_judge.c - a judge job's requests on a scheduler (see sched_judge.h). */
#include "scheduler/sched_judge.h"

#include <errno.h>
#include <stdio.h>

int sched_judge_submit(struct sched *s, struct judge_job *job, size_t i, uint64_t job_id,
                       int32_t max_ctx, bool *queued)
{
    const struct judge_request *r = judge_job_request(job, i);
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
    p.job_id = job_id;
    p.user = (void *)(uintptr_t)i;
    int err = sched_submit(s, &p, NULL);
    *queued = err == 0;
    if (err == -EAGAIN || err == 0) {
        return err;
    }
    /* a prompt longer than the context or the KV pool: this sample's error record */
    char reason[128];
    snprintf(reason, sizeof(reason), "%s (%zu prompt tokens, context %d)",
             err == -E2BIG ? "does not fit the KV pool" : "cannot be judged", r->n_tokens,
             (int)max_ctx);
    judge_job_complete_error(job, i, reason);
    return 0;
}

int sched_judge_collect(struct judge_job *job, const struct sched_completion *c,
                        struct judge_token_probs *probs)
{
    size_t i = (size_t)(uintptr_t)c->user;
    if (c->finish == SCHED_FINISH_ERROR || c->finish == SCHED_FINISH_CANCELLED) {
        return judge_job_complete_error(job, i, sched_finish_name(c->finish));
    }
    if (c->n_logprobs <= 0 || !c->logprobs) {
        return judge_job_complete(job, i, c->text, c->text_len, NULL, 0);
    }
    /* per token: the chosen one, then the most likely alternatives */
    int32_t stride = 1 + c->n_logprobs;
    for (int32_t t = 0; t < c->n_tokens; t++) {
        const struct sched_logprob *lp = c->logprobs + (size_t)t * (size_t)stride;
        struct judge_token_probs *p = &probs[t];
        p->token = lp[0].token;
        p->logprob = lp[0].logprob;
        p->n_top = c->n_logprobs < JUDGE_MAX_TOP ? c->n_logprobs : JUDGE_MAX_TOP;
        for (int32_t k = 0; k < p->n_top; k++) {
            p->top_ids[k] = lp[1 + k].token;
            p->top_logprobs[k] = lp[1 + k].logprob;
        }
    }
    return judge_job_complete(job, i, c->text, c->text_len, probs, (size_t)c->n_tokens);
}
