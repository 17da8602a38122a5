/* sched_judge.h - a judge job's requests on a scheduler: the one bridge between jobs/ (what to
 * judge) and the scheduler (how it runs) that judgectl run and judged's devices share, so both
 * submit the same requests and write the same records, error records included. */
#ifndef SCHEDULER_SCHED_JUDGE_H
#define SCHEDULER_SCHED_JUDGE_H

#include "jobs/judge.h"
#include "scheduler/sched.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Submits request i of the job as scheduler job job_id (the completion's user is i). A request
 * the scheduler can never run (its prompt is longer than the context or the KV pool) is
 * completed at once as an error record, "cannot be judged (N prompt tokens, context C)" or
 * "does not fit the KV pool (...)", and *queued is false. Returns 0, or -EAGAIN when the
 * scheduler is full (nothing was done: retry after polling). Engine thread only. */
int sched_judge_submit(struct sched *s, struct judge_job *job, size_t i, uint64_t job_id,
                       int32_t max_ctx, bool *queued);

/* Hands a finished request (c->user is its index) to the job: its text and, with
 * log-probabilities, the expected scores; an engine error or a cancellation becomes an error
 * record. probs has room for c->n_tokens entries (scratch). Returns judge_job_complete's code. */
int sched_judge_collect(struct judge_job *job, const struct sched_completion *c,
                        struct judge_token_probs *probs);

#endif
