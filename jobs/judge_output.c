/* judge_output.c - the end of a judge job: JudgeLM's output records sorted by question_id, the
 * win/tie/loss summary and, with labels, the metrics (see judge_job_finish in judge.h).
 *
 * pred_id: JudgeLM draws a random shortuuid; here it is 22 base-57 digits (shortuuid's
 * alphabet, most significant first) of h1 * 2^64 + h2, with h1 = mix64(seed ^ mix64(question_id
 * ^ mix64(order))) and h2 = mix64(h1), so that reruns of a job write identical files. */
#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "jobs/job.h"
#include "jobs/jobs_impl.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char judge_id_alphabet[] = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

void judge_pred_id(uint64_t seed, int64_t question_id, enum judge_order order, char *out)
{
    uint64_t h1 = judge_mix64(seed ^ judge_mix64((uint64_t)question_id ^ judge_mix64(order)));
    uint64_t h2 = judge_mix64(h1);
    /* the 128-bit number as four 32-bit limbs, most significant first */
    uint32_t limb[4] = { (uint32_t)(h1 >> 32), (uint32_t)h1, (uint32_t)(h2 >> 32), (uint32_t)h2 };
    for (int d = JUDGE_PRED_ID_LEN - 1; d >= 0; d--) {
        uint64_t rem = 0;
        for (int k = 0; k < 4; k++) {
            uint64_t cur = (rem << 32) | limb[k];
            limb[k] = (uint32_t)(cur / 57);
            rem = cur % 57;
        }
        out[d] = judge_id_alphabet[rem];
    }
    out[JUDGE_PRED_ID_LEN] = '\0';
}

/* A score as JSON: JudgeLM's failure value is the int -1; non-finite values become null. */
static json_t *judge_score_json(double v, bool parse_ok)
{
    if (!parse_ok) {
        return json_integer(-1);
    }
    return isfinite(v) ? json_real(v) : json_null();
}

/* Rounded to 4 decimals, so that the file shows 7.8312 rather than 17 digits. */
static json_t *judge_prob_json(double v)
{
    return json_real(round(v * 1e4) / 1e4);
}

/* Adds one judgment's fields, with `suffix` ("" or "_swapped") after each name. */
static void judge_result_fields(const struct judge_job *job, json_t *rec,
                                const struct judge_request *r, const struct judge_result *res,
                                const char *suffix)
{
    char key[64], id[JUDGE_PRED_ID_LEN + 1];
    int n = judge_job_n_scores(job);
    judge_pred_id(job->spec->seed, r->question_id, r->order, id);
    snprintf(key, sizeof(key), "pred_id%s", suffix);
    json_object_set_new(rec, key, json_string(id));
    snprintf(key, sizeof(key), "pred_text%s", suffix);
    json_object_set_new(rec, key, json_stringn(res->pred_text, res->pred_len));
    if (!*suffix) {
        json_object_set_new(rec, "pred_model_id", json_string(job->spec->model_id));
        json_object_set_new(rec, "tstamp", json_real(res->tstamp));
    }
    json_t *scores = json_array();
    for (int k = 0; k < n; k++) {
        json_array_append_new(scores, judge_score_json(res->scores[k], res->parse_ok));
    }
    snprintf(key, sizeof(key), "scores%s", suffix);
    json_object_set_new(rec, key, scores);
    bool any = false;
    for (int k = 0; k < n; k++) {
        any = any || res->available[k];
    }
    json_t *expected = any ? json_array() : json_null();
    json_t *confidence = any ? json_array() : json_null();
    for (int k = 0; any && k < n; k++) {
        json_array_append_new(expected,
                              res->available[k] ? judge_prob_json(res->expected[k]) : json_null());
        json_array_append_new(confidence, res->available[k] ? judge_prob_json(res->confidence[k])
                                                            : json_null());
    }
    snprintf(key, sizeof(key), "expected_scores%s", suffix);
    json_object_set_new(rec, key, expected);
    snprintf(key, sizeof(key), "score_confidence%s", suffix);
    json_object_set_new(rec, key, confidence);
    if (res->error) {
        snprintf(key, sizeof(key), "error%s", suffix);
        json_object_set_new(rec, key, json_string(res->error));
    }
}

struct judge_sort_key {
    int64_t question_id;
    size_t i_sample;
};

static int judge_cmp_key(const void *pa, const void *pb)
{
    const struct judge_sort_key *a = pa, *b = pb;
    if (a->question_id != b->question_id) {
        return a->question_id < b->question_id ? -1 : 1;
    }
    return a->i_sample < b->i_sample ? -1 : a->i_sample > b->i_sample;
}

/* Sample indices in ascending question_id order (ids are unique: judge_input_load). */
static size_t *judge_sorted_samples(const struct judge_job *job)
{
    size_t n = job->n_samples;
    struct judge_sort_key *keys = xmalloc((n ? n : 1) * sizeof(*keys));
    for (size_t i = 0; i < n; i++) {
        keys[i].question_id = job->samples[i].question_id;
        keys[i].i_sample = i;
    }
    qsort(keys, n, sizeof(*keys), judge_cmp_key);
    size_t *order = xmalloc((n ? n : 1) * sizeof(*order));
    for (size_t i = 0; i < n; i++) {
        order[i] = keys[i].i_sample;
    }
    free(keys);
    return order;
}

bool judge_job_sample_done(const struct judge_job *job, size_t i_sample)
{
    if (i_sample >= job->n_samples) {
        return false;
    }
    for (int k = 0; k < job->n_orders; k++) {
        if (!job->results[i_sample * (size_t)job->n_orders + (size_t)k].done) {
            return false;
        }
    }
    return true;
}

char *judge_job_sample_record(const struct judge_job *job, size_t i_sample, size_t *len)
{
    if (!judge_job_sample_done(job, i_sample)) {
        return NULL;
    }
    const struct judge_sample *s = &job->samples[i_sample];
    size_t base = i_sample * (size_t)job->n_orders;
    json_t *rec = json_copy(s->record);
    if (job->spec->reference != JUDGE_REFERENCE_NONE && s->reference) {
        json_object_set_new(rec, "reference", json_string(s->reference));
    }
    judge_result_fields(job, rec, &job->requests[base], &job->results[base], "");
    if (job->n_orders == 2) {
        judge_result_fields(job, rec, &job->requests[base + 1], &job->results[base + 1],
                            "_swapped");
    }
    char *line = jobs_json_dumps_python(rec, len);
    json_decref(rec);
    return line;
}

static int judge_write_records(const struct judge_job *job, const size_t *order, FILE *f)
{
    for (size_t i = 0; i < job->n_samples; i++) {
        size_t len;
        char *line = judge_job_sample_record(job, order[i], &len);
        if (!line) {
            return -EINVAL;
        }
        bool ok = fwrite(line, 1, len, f) == len && fputc('\n', f) != EOF;
        free(line);
        if (!ok) {
            return -EIO;
        }
    }
    return 0;
}

/* Metrics against the labels: pair mode, matched by question_id. */
static int judge_job_metrics(const struct judge_job *job, const size_t *order,
                             struct judge_summary *sum)
{
    size_t n = 0;
    int *truth = xmalloc((job->n_samples + 1) * sizeof(int));
    int *pred = xmalloc((job->n_samples + 1) * sizeof(int));
    int *rev = xmalloc((job->n_samples + 1) * sizeof(int));
    size_t n_failed = 0, n_rev_failed = 0, n_unmatched = 0;
    for (size_t i = 0; i < job->n_samples; i++) {
        const struct judge_sample *s = &job->samples[order[i]];
        const struct judge_result *res = &job->results[order[i] * (size_t)job->n_orders];
        int label;
        int rc = eval_labels_get(job->labels, s->question_id, &label);
        if (rc != 0) {
            n_unmatched += rc == -ENOENT; /* a dropped label drops the sample, as in JudgeLM */
            continue;
        }
        truth[n] = label;
        pred[n] = judge_score_win(res->scores[0], res->scores[1]);
        n_failed += !res->parse_ok;
        if (job->n_orders == 2) {
            rev[n] = judge_score_win(res[1].scores[0], res[1].scores[1]);
            n_rev_failed += !res[1].parse_ok;
        }
        n++;
    }
    int err =
        n ? eval_metrics_compute(truth, pred, job->n_orders == 2 ? rev : NULL, n, &sum->metrics)
          : -ENODATA;
    if (!err) {
        sum->has_metrics = true;
        sum->metrics.n_pred_failed = n_failed;
        sum->metrics.n_reversed_failed = n_rev_failed;
        sum->metrics.n_unmatched_pred = n_unmatched;
        sum->metrics.n_labels_dropped = eval_labels_n_dropped(job->labels);
        size_t usable = eval_labels_count(job->labels) - eval_labels_n_dropped(job->labels);
        sum->metrics.n_unmatched_labels = usable > n ? usable - n : 0;
    } else {
        log_warn("job %s: no judged question_id has a usable label in %s: no metrics",
                 job->spec->name, job->spec->labels);
    }
    free(truth);
    free(pred);
    free(rev);
    return 0;
}

static int judge_write_metrics(const struct judge_summary *sum, const char *path, char *errstr,
                               size_t errstr_len)
{
    json_t *m = eval_metrics_json(&sum->metrics);
    int rc = json_dump_file(m, path, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    json_decref(m);
    if (rc != 0) {
        errstr_set(errstr, errstr_len, "%s: cannot write the metrics", path);
        return -EIO;
    }
    return 0;
}

int judge_job_finish(struct judge_job *job, const char *output_path, struct judge_summary *summary,
                     char *errstr, size_t errstr_len)
{
    const struct job_spec *spec = job->spec;
    struct judge_summary local;
    struct judge_summary *sum = summary ? summary : &local;
    memset(sum, 0, sizeof(*sum));
    for (size_t i = 0; i < job->n_requests; i++) {
        if (!job->results[i].done) {
            errstr_set(errstr, errstr_len,
                       "job %s: request %zu (question_id %lld, %s) is not "
                       "complete",
                       spec->name, i, (long long)job->requests[i].question_id,
                       judge_order_name(job->requests[i].order));
            return -EINVAL;
        }
    }
    if (!output_path) {
        output_path = spec->output_path;
    }
    if (!output_path) {
        errstr_set(errstr, errstr_len, "job %s: no output path", spec->name);
        return -EINVAL;
    }
    sum->n_samples = job->n_samples;
    sum->n_requests = job->n_requests;
    for (size_t i = 0; i < job->n_requests; i++) {
        const struct judge_result *res = &job->results[i];
        sum->n_parse_failed += !res->parse_ok;
        sum->n_errors += res->error != NULL;
        if (spec->mode == JUDGE_MODE_PAIR && job->requests[i].order == JUDGE_ORDER_ORIGINAL) {
            int w = judge_score_win(res->scores[0], res->scores[1]);
            sum->n_win1 += w > 0;
            sum->n_tie += w == 0;
            sum->n_win2 += w < 0;
        }
    }
    size_t *order = judge_sorted_samples(job);
    bool to_stdout = strcmp(output_path, "-") == 0;
    FILE *f = to_stdout ? stdout : fopen(output_path, "w");
    int err = 0;
    if (!f) {
        errstr_set(errstr, errstr_len, "%s: cannot write: %s", output_path, strerror(errno));
        err = -EIO;
        goto done;
    }
    err = judge_write_records(job, order, f);
    if (to_stdout ? fflush(f) != 0 : fclose(f) != 0) {
        err = -EIO;
    }
    if (err) {
        errstr_set(errstr, errstr_len, "%s: write failed", output_path);
        goto done;
    }
    if (job->labels && spec->mode == JUDGE_MODE_PAIR) {
        judge_job_metrics(job, order, sum);
        if (sum->has_metrics && spec->metrics_path) {
            err = judge_write_metrics(sum, spec->metrics_path, errstr, errstr_len);
        }
    }
done:
    free(order);
    return err;
}
