/* judge_job.c - the judge job state machine: samples in, one request per sample and answer
 * order out, results fed back one by one (see judge.h). The runner owns the scheduling; this
 * file never calls the scheduler or the engine. Output writing is in judge_output.c. */
#include "common/utf8.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "jobs/job.h"
#include "jobs/jobs_impl.h"
#include "jobs/judge.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const judge_mode_names[] = { "pair", "single", "multi", "mmvet" };
static const char *const judge_order_names[] = { "original", "swapped" };
static const char *const judge_output_names[] = { "fast", "detailed" };
static const char *const judge_format_names[] = { "judgelm", "pandalm", "llmbar", "mapping" };
static const char *const judge_reference_names[] = { "none", "embedded", "file" };
static const char *const judge_swap_names[] = { "none", "both" };

static const char *judge_name(const char *const *names, size_t n, int v)
{
    return v >= 0 && (size_t)v < n ? names[v] : "?";
}

static int judge_parse_name(const char *const *names, size_t n, const char *s, int *out)
{
    for (size_t i = 0; s && i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (int)i;
            return 0;
        }
    }
    return -EINVAL;
}

#define JUDGE_NAMES(names) names, sizeof(names) / sizeof(names[0])

const char *judge_mode_name(enum judge_mode m)
{
    return judge_name(JUDGE_NAMES(judge_mode_names), (int)m);
}

int judge_mode_parse(const char *s, enum judge_mode *out)
{
    int v;
    int err = judge_parse_name(JUDGE_NAMES(judge_mode_names), s, &v);
    if (!err) {
        *out = (enum judge_mode)v;
    }
    return err;
}

const char *judge_order_name(enum judge_order o)
{
    return judge_name(JUDGE_NAMES(judge_order_names), (int)o);
}

const char *judge_output_name(enum judge_output o)
{
    return judge_name(JUDGE_NAMES(judge_output_names), (int)o);
}

int judge_output_parse(const char *s, enum judge_output *out)
{
    int v;
    int err = judge_parse_name(JUDGE_NAMES(judge_output_names), s, &v);
    if (!err) {
        *out = (enum judge_output)v;
    }
    return err;
}

const char *judge_input_format_name(enum judge_input_format f)
{
    return judge_name(JUDGE_NAMES(judge_format_names), (int)f);
}

int judge_input_format_parse(const char *s, enum judge_input_format *out)
{
    int v;
    int err = judge_parse_name(JUDGE_NAMES(judge_format_names), s, &v);
    if (!err) {
        *out = (enum judge_input_format)v;
    }
    return err;
}

const char *judge_reference_name(enum judge_reference r)
{
    return judge_name(JUDGE_NAMES(judge_reference_names), (int)r);
}

int judge_reference_parse(const char *s, enum judge_reference *out)
{
    int v;
    int err = judge_parse_name(JUDGE_NAMES(judge_reference_names), s, &v);
    if (!err) {
        *out = (enum judge_reference)v;
    }
    return err;
}

const char *judge_swap_name(enum judge_swap s)
{
    return judge_name(JUDGE_NAMES(judge_swap_names), (int)s);
}

int judge_swap_parse(const char *s, enum judge_swap *out)
{
    int v;
    int err = judge_parse_name(JUDGE_NAMES(judge_swap_names), s, &v);
    if (!err) {
        *out = (enum judge_swap)v;
    }
    return err;
}

int judge_job_n_scores(const struct judge_job *job)
{
    return job->spec->mode == JUDGE_MODE_MULTI ? job->spec->n_answers : 2;
}

static int judge_job_build(struct judge_job *job, char *errstr, size_t errstr_len);

int judge_job_create(const struct job_spec *spec, const struct tok *t, struct judge_job **out,
                     char *errstr, size_t errstr_len)
{
    struct judge_job *job = xcalloc(1, sizeof(*job));
    job->spec = spec;
    job->tok = t;
    int err = judge_input_load(spec, &job->samples, &job->n_samples, errstr, errstr_len);
    if (err) {
        goto fail;
    }
    if (spec->labels &&
        (err = eval_labels_load(spec->labels, &job->labels, errstr, errstr_len)) != 0) {
        goto fail;
    }
    if ((err = judge_job_build(job, errstr, errstr_len)) != 0) {
        goto fail;
    }
    *out = job;
    return 0;
fail:
    judge_job_destroy(job);
    return err;
}

int judge_job_create_samples(const struct job_spec *spec, const struct tok *t,
                             struct judge_sample *samples, size_t n, struct judge_job **out,
                             char *errstr, size_t errstr_len)
{
    struct judge_job *job = xcalloc(1, sizeof(*job));
    job->spec = spec;
    job->tok = t;
    job->samples = samples;
    job->n_samples = n;
    int err = judge_job_build(job, errstr, errstr_len);
    if (err) {
        judge_job_destroy(job);
        return err;
    }
    *out = job;
    return 0;
}

/* Renders and tokenizes one request per sample and order. */
static int judge_job_build(struct judge_job *job, char *errstr, size_t errstr_len)
{
    const struct job_spec *spec = job->spec;
    const struct tok *t = job->tok;
    int err = 0;
    job->n_orders = spec->swap == JUDGE_SWAP_BOTH ? 2 : 1;
    job->n_requests = job->n_samples * (size_t)job->n_orders;
    job->requests = xcalloc(job->n_requests ? job->n_requests : 1, sizeof(*job->requests));
    job->results = xcalloc(job->n_requests ? job->n_requests : 1, sizeof(*job->results));
    for (size_t i = 0; i < job->n_requests; i++) {
        const struct judge_sample *s = &job->samples[i / (size_t)job->n_orders];
        struct judge_request *r = &job->requests[i];
        r->i_sample = i / (size_t)job->n_orders;
        r->question_id = s->question_id;
        r->order = (enum judge_order)(i % (size_t)job->n_orders);
        uint64_t seed = spec->seed + (uint64_t)s->i_record; /* position in the whole input */
        struct judge_prompt_input in = {
            .question = s->question,
            .reference = spec->reference != JUDGE_REFERENCE_NONE ? s->reference : NULL,
            .answers = (const char *const *)s->answers,
            .n_answers = s->n_answers,
            .order = r->order,
            .seed = seed,
        };
        char *prompt = NULL;
        if ((err = judge_prompt_render(spec->mode, &in, &prompt, &r->prompt_len)) != 0) {
            errstr_set(errstr, errstr_len, "%s: question_id %lld: cannot render the %s prompt",
                       spec->input, (long long)s->question_id, judge_mode_name(spec->mode));
            goto fail;
        }
        r->prompt = prompt;
        if (t) {
            int32_t *ids = NULL;
            if ((err = tok_encode(t, prompt, r->prompt_len, true, &ids, &r->n_tokens)) != 0) {
                errstr_set(errstr, errstr_len, "%s: question_id %lld: tokenization failed",
                           spec->input, (long long)s->question_id);
                goto fail;
            }
            r->tokens = ids;
        }
        r->sampling = spec->sampling;
        r->sampling.seed = seed;
        r->max_new_tokens = spec->max_new_tokens;
        r->stop = spec->output == JUDGE_OUTPUT_FAST ? "\n" : NULL;
        r->n_logprobs = JUDGE_MAX_TOP;
    }
    return 0;
fail:
    return err;
}

static void judge_result_clear(struct judge_result *res)
{
    free(res->pred_text);
    free(res->error);
    memset(res, 0, sizeof(*res));
}

void judge_job_destroy(struct judge_job *job)
{
    if (!job) {
        return;
    }
    for (size_t i = 0; job->requests && i < job->n_requests; i++) {
        free((char *)job->requests[i].prompt);
        free((int32_t *)job->requests[i].tokens);
        judge_result_clear(&job->results[i]);
    }
    free(job->requests);
    free(job->results);
    judge_samples_free(job->samples, job->n_samples);
    eval_labels_destroy(job->labels);
    free(job);
}

size_t judge_job_n_requests(const struct judge_job *job)
{
    return job->n_requests;
}

const struct judge_request *judge_job_request(const struct judge_job *job, size_t i)
{
    return i < job->n_requests ? &job->requests[i] : NULL;
}

size_t judge_job_n_samples(const struct judge_job *job)
{
    return job->n_samples;
}

const struct judge_sample *judge_job_sample(const struct judge_job *job, size_t i)
{
    return i < job->n_samples ? &job->samples[i] : NULL;
}

static double judge_now(const struct judge_job *job)
{
    if (job->spec->deterministic) {
        return 0.0;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Replaces each byte that does not start a valid UTF-8 sequence with U+FFFD, so the text can go
 * into JSON (a generation cut at max_new_tokens may end inside a character). Takes ownership of
 * s; returns the cleaned string. */
static char *judge_utf8_clean(char *s, size_t *len)
{
    if (utf8_validate(s, *len) == *len) {
        return s;
    }
    struct jobs_buf b = { 0 };
    jobs_buf_append(&b, "", 0);
    for (size_t i = 0; i < *len;) {
        size_t ok = utf8_validate(s + i, *len - i);
        jobs_buf_append(&b, s + i, ok);
        i += ok;
        if (i < *len) {
            jobs_buf_append(&b, "\xef\xbf\xbd", 3);
            i++;
        }
    }
    free(s);
    *len = b.len;
    return b.data;
}

int judge_job_complete(struct judge_job *job, size_t i, const char *text, size_t text_len,
                       const struct judge_token_probs *probs, size_t n_probs)
{
    if (i >= job->n_requests || (!text && text_len)) {
        return -EINVAL;
    }
    if (!text) {
        text = "";
    }
    const struct job_spec *spec = job->spec;
    struct judge_result *res = &job->results[i];
    judge_result_clear(res);
    size_t pred_len;
    res->pred_text = judge_text_postprocess(spec->output, text, text_len, &pred_len);
    res->pred_text = judge_utf8_clean(res->pred_text, &pred_len);
    res->pred_len = pred_len;
    int n = judge_job_n_scores(job);
    if (spec->mode == JUDGE_MODE_SINGLE || spec->mode == JUDGE_MODE_MMVET) {
        /* the score line the model wrote: "10" from the prompt, then its own first line */
        struct jobs_buf line = { 0 };
        const char *nl = memchr(text, '\n', text_len);
        jobs_buf_puts(&line, "10");
        jobs_buf_append(&line, text, nl ? (size_t)(nl - text) : text_len);
        res->parse_ok = judge_score_parse(line.data, line.len, n, res->scores) == 0;
        free(line.data);
    } else {
        res->parse_ok = judge_score_parse(res->pred_text, pred_len, n, res->scores) == 0;
    }
    res->has_probs = probs && n_probs > 0 && job->tok;
    judge_expected_scores(job->tok, spec->mode, spec->output, probs, n_probs,
                          res->parse_ok ? res->scores : NULL, n, res->expected, res->confidence,
                          res->available);
    res->tstamp = judge_now(job);
    res->done = true;
    return 0;
}

int judge_job_complete_error(struct judge_job *job, size_t i, const char *reason)
{
    int err = judge_job_complete(job, i, "", 0, NULL, 0);
    if (err) {
        return err;
    }
    job->results[i].error = xstrdup(reason ? reason : "failed");
    return 0;
}

int judge_job_write_prompts(const struct judge_job *job, FILE *f)
{
    for (size_t i = 0; i < job->n_requests; i++) {
        const struct judge_request *r = &job->requests[i];
        json_t *obj = json_object();
        json_object_set_new(obj, "question_id", json_integer(r->question_id));
        json_object_set_new(obj, "order", json_string(judge_order_name(r->order)));
        json_object_set_new(obj, "prompt", json_stringn(r->prompt, r->prompt_len));
        size_t len;
        char *line = jobs_json_dumps_python(obj, &len);
        json_decref(obj);
        bool ok = fwrite(line, 1, len, f) == len && fputc('\n', f) != EOF;
        free(line);
        if (!ok) {
            return -EIO;
        }
    }
    return fflush(f) == 0 ? 0 : -EIO;
}
