/* judge_shard.c - judge sweeps as data: the canonical spec JSON, shard payloads (a spec and a
 * slice of normalised samples), shard results ("<question_id>\t<record>" lines) and the merge of
 * shard results into one output file with its metrics. docs/PROTOCOL.md documents the formats. */
#include "common/json.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "jobs/eval.h"
#include "jobs/job.h"
#include "jobs/jobs_impl.h"
#include "jobs/judge.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

json_t *job_spec_to_json(const struct job_spec *spec)
{
    json_t *o = json_object();
    json_object_set_new(o, "kind", json_string("judge"));
    json_object_set_new(o, "name", json_string(spec->name));
    char *model = spec->model_path ? realpath(spec->model_path, NULL) : NULL;
    json_object_set_new(o, "model", json_string(model ? model : spec->model));
    free(model);
    json_object_set_new(o, "model_id", json_string(spec->model_id));
    json_object_set_new(o, "input", json_string(spec->input));
    json_object_set_new(o, "input_format",
                        json_string(judge_input_format_name(spec->input_format)));
    if (spec->input_format == JUDGE_INPUT_MAPPING) {
        const struct job_field_map *f = &spec->fields;
        json_t *fo = json_object();
        if (f->question_id) {
            json_object_set_new(fo, "question_id", json_string(f->question_id));
        }
        json_object_set_new(fo, "question", json_string(f->question));
        json_t *a = json_array();
        for (int i = 0; i < f->n_answers; i++) {
            json_array_append_new(a, json_string(f->answers[i]));
        }
        json_object_set_new(fo, "answers", a);
        if (f->reference) {
            json_object_set_new(fo, "reference", json_string(f->reference));
        }
        json_object_set_new(o, "fields", fo);
    }
    json_object_set_new(o, "mode", json_string(judge_mode_name(spec->mode)));
    json_object_set_new(o, "n_answers", json_integer(spec->n_answers));
    json_object_set_new(o, "reference", json_string(judge_reference_name(spec->reference)));
    if (spec->reference_file) {
        json_object_set_new(o, "reference_file", json_string(spec->reference_file));
    }
    json_object_set_new(o, "output", json_string(judge_output_name(spec->output)));
    json_object_set_new(o, "swap", json_string(judge_swap_name(spec->swap)));
    json_t *smp = json_object();
    json_object_set_new(smp, "temperature", json_real((double)spec->sampling.temperature));
    json_object_set_new(smp, "top_k", json_integer(spec->sampling.top_k));
    json_object_set_new(smp, "top_p", json_real((double)spec->sampling.top_p));
    json_object_set_new(o, "sampling", smp);
    json_object_set_new(o, "seed", json_integer((json_int_t)spec->seed));
    json_object_set_new(o, "max_new_tokens", json_integer(spec->max_new_tokens));
    json_object_set_new(o, "shard_size", json_integer(spec->shard_size));
    json_object_set_new(o, "deterministic", json_boolean(spec->deterministic));
    return o;
}

static json_t *judge_sample_json(const struct judge_sample *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "i", json_integer((json_int_t)s->i_record));
    json_object_set_new(o, "question_id", json_integer(s->question_id));
    json_object_set_new(o, "question", json_string(s->question));
    json_t *a = json_array();
    for (int k = 0; k < s->n_answers; k++) {
        json_array_append_new(a, json_string(s->answers[k]));
    }
    json_object_set_new(o, "answers", a);
    json_object_set_new(o, "reference", s->reference ? json_string(s->reference) : json_null());
    json_object_set(o, "record", s->record);
    return o;
}

char *judge_shard_payload(const json_t *spec_json, const struct judge_sample *samples, size_t n,
                          size_t *len)
{
    json_t *o = json_object();
    json_object_set_new(o, "v", json_integer(1));
    json_object_set_new(o, "kind", json_string("judge"));
    json_object_set(o, "spec", (json_t *)spec_json);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(a, judge_sample_json(&samples[i]));
    }
    json_object_set_new(o, "samples", a);
    char *out = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    *len = strlen(out);
    return out;
}

/* A required string member of a sample: owned copy or NULL with errstr. */
static char *judge_shard_str(const json_t *o, const char *key, const char *where, char *errstr,
                             size_t errstr_len)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_string(v)) {
        errstr_set(errstr, errstr_len, "%s: field '%s': %s", where, key,
                   v ? "expected a string" : "missing");
        return NULL;
    }
    return xstrndup(json_string_value(v), json_string_length(v));
}

static int judge_shard_sample(const struct job_spec *spec, const json_t *o, const char *where,
                              struct judge_sample *s, char *errstr, size_t errstr_len)
{
    if (!json_is_object(o)) {
        errstr_set(errstr, errstr_len, "%s: expected an object", where);
        return -EINVAL;
    }
    const json_t *i = json_object_get(o, "i"), *qid = json_object_get(o, "question_id");
    if (!json_is_integer(i) || json_integer_value(i) < 0 || !json_is_integer(qid)) {
        errstr_set(errstr, errstr_len, "%s: fields 'i' (>= 0) and 'question_id': integers", where);
        return -EINVAL;
    }
    s->i_record = (size_t)json_integer_value(i);
    s->question_id = json_integer_value(qid);
    if (!(s->question = judge_shard_str(o, "question", where, errstr, errstr_len))) {
        return -EINVAL;
    }
    const json_t *a = json_object_get(o, "answers");
    if (!json_is_array(a) || json_array_size(a) != (size_t)spec->n_answers) {
        errstr_set(errstr, errstr_len, "%s: field 'answers': expected %d strings", where,
                   spec->n_answers);
        return -EINVAL;
    }
    for (size_t k = 0; k < json_array_size(a); k++) {
        const json_t *v = json_array_get(a, k);
        if (!json_is_string(v)) {
            errstr_set(errstr, errstr_len, "%s: field 'answers[%zu]': expected a string", where, k);
            return -EINVAL;
        }
        s->answers[s->n_answers++] = xstrndup(json_string_value(v), json_string_length(v));
    }
    const json_t *ref = json_object_get(o, "reference");
    if (json_is_string(ref)) {
        s->reference = xstrndup(json_string_value(ref), json_string_length(ref));
    } else if (spec->reference != JUDGE_REFERENCE_NONE) {
        errstr_set(errstr, errstr_len, "%s: field 'reference': a string is required by the spec",
                   where);
        return -EINVAL;
    }
    const json_t *rec = json_object_get(o, "record");
    if (!json_is_object(rec)) {
        errstr_set(errstr, errstr_len, "%s: field 'record': expected the input record", where);
        return -EINVAL;
    }
    s->record = json_incref((json_t *)rec);
    return 0;
}

int judge_shard_parse(const char *buf, size_t len, const char *name, struct job_spec **spec_out,
                      struct judge_sample **samples_out, size_t *n_out, char *errstr,
                      size_t errstr_len)
{
    json_t *root = json_parse_buf(buf, len, name, errstr, errstr_len);
    if (!root) {
        return -EINVAL;
    }
    struct job_spec *spec = NULL;
    struct judge_sample *samples = NULL;
    size_t n = 0;
    int err = -EINVAL;
    const json_t *kind = json_object_get(root, "kind"), *spec_json = json_object_get(root, "spec");
    const json_t *arr = json_object_get(root, "samples");
    if (!json_is_object(root) || !json_is_string(kind) ||
        strcmp(json_string_value(kind), "judge") != 0 || !json_is_object(spec_json) ||
        !json_is_array(arr)) {
        errstr_set(errstr, errstr_len,
                   "%s: expected {\"v\": 1, \"kind\": \"judge\", \"spec\": {...}, "
                   "\"samples\": [...]}",
                   name);
        goto done;
    }
    char *spec_text = json_dumps(spec_json, JSON_COMPACT);
    err = job_spec_parse_buf(spec_text, strlen(spec_text), name, false, &spec, errstr, errstr_len);
    free(spec_text);
    if (err) {
        goto done;
    }
    size_t m = json_array_size(arr);
    samples = xcalloc(m ? m : 1, sizeof(*samples));
    for (size_t i = 0; i < m; i++) {
        char where[256];
        snprintf(where, sizeof(where), "%s: samples[%zu]", name, i);
        err = judge_shard_sample(spec, json_array_get(arr, i), where, &samples[n++], errstr,
                                 errstr_len);
        if (err) {
            goto done;
        }
    }
    *spec_out = spec;
    *samples_out = samples;
    *n_out = n;
    spec = NULL;
    samples = NULL;
    n = 0;
    err = 0;
done:
    json_decref(root);
    job_spec_destroy(spec);
    judge_samples_free(samples, n);
    return err;
}

/* ---- shard results --------------------------------------------------------------------------- */

struct judge_result_line {
    int64_t question_id;
    const char *text; /* the record, not NUL-terminated */
    size_t len;
};

static int judge_result_line_cmp(const void *pa, const void *pb)
{
    const struct judge_result_line *a = pa, *b = pb;
    return a->question_id < b->question_id ? -1 : a->question_id > b->question_id;
}

/* Splits a result blob into lines; appends to *lines. */
static int judge_result_lines(const char *blob, size_t len, const char *name,
                              struct judge_result_line **lines, size_t *n, size_t *cap,
                              char *errstr, size_t errstr_len)
{
    size_t line_no = 0;
    for (size_t start = 0; start < len;) {
        const char *nl = memchr(blob + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - blob) : len;
        line_no++;
        if (end > start) {
            const char *tab = memchr(blob + start, '\t', end - start);
            char *stop = NULL;
            long long qid = tab ? strtoll(blob + start, &stop, 10) : 0;
            if (!tab || stop != tab || tab == blob + start) {
                errstr_set(errstr, errstr_len, "%s:%zu: expected '<question_id>\\t<record>'", name,
                           line_no);
                return -EINVAL;
            }
            if (*n == *cap) {
                *cap = *cap ? *cap * 2 : 256;
                *lines = xrealloc(*lines, *cap * sizeof(**lines));
            }
            (*lines)[*n] = (struct judge_result_line){
                .question_id = qid,
                .text = tab + 1,
                .len = (size_t)(blob + end - (tab + 1)),
            };
            (*n)++;
        }
        start = end + 1;
    }
    return 0;
}

int judge_results_merge(const char *const *blobs, const size_t *lens, const char *const *names,
                        size_t n_blobs, FILE *f, size_t *n_records, char *errstr, size_t errstr_len)
{
    struct judge_result_line *lines = NULL;
    size_t n = 0, cap = 0;
    int err = 0;
    for (size_t i = 0; i < n_blobs && !err; i++) {
        err = judge_result_lines(blobs[i], lens[i], names[i], &lines, &n, &cap, errstr, errstr_len);
    }
    if (!err) {
        qsort(lines, n, sizeof(*lines), judge_result_line_cmp);
        for (size_t i = 0; i < n; i++) {
            if (i > 0 && lines[i].question_id == lines[i - 1].question_id) {
                errstr_set(errstr, errstr_len, "question_id %lld has two results",
                           (long long)lines[i].question_id);
                err = -EINVAL;
                break;
            }
            if (fwrite(lines[i].text, 1, lines[i].len, f) != lines[i].len ||
                fputc('\n', f) == EOF) {
                errstr_set(errstr, errstr_len, "write failed");
                err = -EIO;
                break;
            }
        }
    }
    if (n_records) {
        *n_records = n;
    }
    free(lines);
    return err;
}

int judge_results_metrics(const char *const *blobs, const size_t *lens, const char *const *names,
                          size_t n_blobs, const char *labels, size_t labels_len,
                          struct eval_metrics *m, char *errstr, size_t errstr_len)
{
    struct judge_result_line *lines = NULL;
    size_t n = 0, cap = 0;
    int err = 0;
    for (size_t i = 0; i < n_blobs && !err; i++) {
        err = judge_result_lines(blobs[i], lens[i], names[i], &lines, &n, &cap, errstr, errstr_len);
    }
    /* the judgments keyed by the question_id of each line (records keep their input's own id
     * field, "idx" for PandaLM, so the id comes from the line, not the record) */
    json_t *preds = json_array();
    for (size_t i = 0; i < n && !err; i++) {
        json_error_t jerr;
        json_t *rec = json_loadb(lines[i].text, lines[i].len, 0, &jerr);
        if (!json_is_object(rec)) {
            errstr_set(errstr, errstr_len, "result of question_id %lld: not a JSON object",
                       (long long)lines[i].question_id);
            err = -EINVAL;
        } else {
            json_t *p = json_object();
            json_object_set_new(p, "question_id", json_integer(lines[i].question_id));
            json_object_set(p, "pred_text", json_object_get(rec, "pred_text"));
            json_t *sw = json_object_get(rec, "pred_text_swapped");
            if (sw) {
                json_object_set(p, "pred_text_swapped", sw);
            }
            json_array_append_new(preds, p);
        }
        json_decref(rec);
    }
    free(lines);
    struct eval_labels *l = NULL;
    struct eval_preds *p = NULL;
    char *text = err ? NULL : json_dumps(preds, JSON_COMPACT);
    json_decref(preds);
    if (!err &&
        (err = eval_labels_parse_buf(labels, labels_len, "labels", &l, errstr, errstr_len)) == 0 &&
        (err = eval_preds_parse_buf(text, strlen(text), "results", &p, errstr, errstr_len)) == 0) {
        err = eval_metrics_from_files(l, p, NULL, m, errstr, errstr_len);
    }
    free(text);
    eval_labels_destroy(l);
    eval_preds_destroy(p);
    return err;
}
