/* judge_input.c - judge inputs: JudgeLM's judge-samples records (and its MM-Vet samples),
 * PandaLM's test set, LLMBar, or records with field names given in the spec, plus JudgeLM's
 * references file matched by position. Every bad record is an error naming file:line (file:[i]
 * inside a JSON array) and the field.
 *
 * PandaLM's question is the instruction, then, when its input is not empty, "\n\n" and the
 * input: PandaLM's own prompt keeps them as separate sections divided by a blank line, and a
 * blank line is also what separates every block of JudgeLM's template. */
#include "common/util.h"
#include "common/xmalloc.h"
#include "jobs/job.h"
#include "jobs/jobs_impl.h"
#include "jobs/judge.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define JUDGE_WHERE_LEN 600

/* A text field of a record as str.format would insert it: a string verbatim; true, false, null
 * and numbers as Python's str() writes them (PandaLM's test set has boolean responses, which
 * JudgeLM's format() would show as "True"). Returns a new string, or NULL with errstr set when
 * the field is missing, an object or array, or a string holding a NUL byte. */
static char *judge_field_string(const json_t *obj, const char *field, const char *where,
                                char *errstr, size_t errstr_len)
{
    json_t *v = json_object_get(obj, field);
    char num[64];
    if (!v) {
        errstr_set(errstr, errstr_len, "%s: field '%s': missing", where, field);
        return NULL;
    }
    switch (json_typeof(v)) {
    case JSON_STRING:
        if (strlen(json_string_value(v)) != json_string_length(v)) {
            errstr_set(errstr, errstr_len, "%s: field '%s': holds a NUL character", where, field);
            return NULL;
        }
        return xstrdup(json_string_value(v));
    case JSON_TRUE:
        return xstrdup("True");
    case JSON_FALSE:
        return xstrdup("False");
    case JSON_NULL:
        return xstrdup("None");
    case JSON_INTEGER:
        return xasprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
    case JSON_REAL:
        jobs_float_repr(json_real_value(v), num, sizeof(num));
        return xstrdup(num);
    default:
        errstr_set(errstr, errstr_len, "%s: field '%s': expected a string", where, field);
        return NULL;
    }
}

/* An integer question id. */
static int judge_field_id(const json_t *obj, const char *field, const char *where, int64_t *out,
                          char *errstr, size_t errstr_len)
{
    json_t *v = json_object_get(obj, field);
    if (!v) {
        errstr_set(errstr, errstr_len, "%s: field '%s': missing", where, field);
        return -EINVAL;
    }
    if (!json_is_integer(v)) {
        errstr_set(errstr, errstr_len, "%s: field '%s': expected an integer", where, field);
        return -EINVAL;
    }
    *out = json_integer_value(v);
    return 0;
}

/* JudgeLM's reference: {"text": ...} (the references file, training records) or a string. */
static char *judge_field_reference(const json_t *obj, const char *field, const char *where,
                                   char *errstr, size_t errstr_len)
{
    json_t *v = json_object_get(obj, field);
    if (json_is_object(v)) {
        char sub[JUDGE_WHERE_LEN + 16];
        snprintf(sub, sizeof(sub), "%s: field '%s'", where, field);
        return judge_field_string(v, "text", sub, errstr, errstr_len);
    }
    return judge_field_string(obj, field, where, errstr, errstr_len);
}

/* Fills s from one record; on failure s may hold some strings (judge_samples_free frees them). */
static int judge_sample_fill(const struct job_spec *spec, const json_t *obj, size_t i,
                             const char *where, struct judge_sample *s, char *errstr,
                             size_t errstr_len)
{
    const char *answer_fields[JUDGE_MAX_ANSWERS];
    const char *question_field = NULL, *reference_field = NULL, *id_field = NULL;
    const char *input_field = NULL; /* PandaLM's optional input, appended to the question */
    int n = spec->n_answers;
    bool embedded = spec->reference == JUDGE_REFERENCE_EMBEDDED;
    bool reference_object = false; /* JudgeLM's {"text": ...} accepted */
    char numbered[JUDGE_MAX_ANSWERS][24];
    s->question_id = (int64_t)i;
    switch (spec->input_format) {
    case JUDGE_INPUT_JUDGELM:
        id_field = "question_id";
        if (spec->mode == JUDGE_MODE_MMVET) {
            /* JudgeLM's mm-vet-judge-samples.jsonl */
            question_field = "question";
            answer_fields[0] = "answer1_body";
            reference_field = "answer";
            break;
        }
        question_field = "question_body";
        for (int k = 0; k < n; k++) {
            snprintf(numbered[k], sizeof(numbered[k]), "answer%d_body", k + 1);
            answer_fields[k] = numbered[k];
        }
        reference_field = "reference";
        reference_object = true;
        break;
    case JUDGE_INPUT_PANDALM:
        id_field = "idx";
        question_field = "instruction";
        input_field = "input";
        answer_fields[0] = "response1";
        answer_fields[1] = "response2";
        break;
    case JUDGE_INPUT_LLMBAR:
        question_field = "input";
        answer_fields[0] = "output_1";
        answer_fields[1] = "output_2";
        break;
    case JUDGE_INPUT_MAPPING:
        id_field = spec->fields.question_id;
        question_field = spec->fields.question;
        for (int k = 0; k < n; k++) {
            answer_fields[k] = spec->fields.answers[k];
        }
        reference_field = spec->fields.reference;
        reference_object = true;
        break;
    default:
        errstr_set(errstr, errstr_len, "%s: unknown input format", where);
        return -EINVAL;
    }
    if (id_field && judge_field_id(obj, id_field, where, &s->question_id, errstr, errstr_len)) {
        return -EINVAL;
    }
    if (!(s->question = judge_field_string(obj, question_field, where, errstr, errstr_len))) {
        return -EINVAL;
    }
    for (int k = 0; k < n; k++) {
        s->answers[k] = judge_field_string(obj, answer_fields[k], where, errstr, errstr_len);
        if (!s->answers[k]) {
            return -EINVAL;
        }
        s->n_answers = k + 1;
    }
    json_t *input_v = input_field ? json_object_get(obj, input_field) : NULL;
    if (input_v && !json_is_null(input_v)) {
        char *input = judge_field_string(obj, input_field, where, errstr, errstr_len);
        if (!input) {
            return -EINVAL;
        }
        if (*input) {
            char *joined = xasprintf("%s\n\n%s", s->question, input);
            free(s->question);
            s->question = joined;
        }
        free(input);
    }
    if (embedded && !reference_field) {
        errstr_set(errstr, errstr_len, "%s: input format %s has no embedded reference", where,
                   judge_input_format_name(spec->input_format));
        return -EINVAL;
    }
    if (embedded) {
        s->reference = reference_object
                           ? judge_field_reference(obj, reference_field, where, errstr, errstr_len)
                           : judge_field_string(obj, reference_field, where, errstr, errstr_len);
        if (!s->reference) {
            return -EINVAL;
        }
    }
    return 0;
}

static int judge_sample_cmp_id(const void *pa, const void *pb)
{
    const struct judge_sample *const *a = pa, *const *b = pb;
    if ((*a)->question_id != (*b)->question_id) {
        return (*a)->question_id < (*b)->question_id ? -1 : 1;
    }
    return (*a)->i_record < (*b)->i_record ? -1 : (*a)->i_record > (*b)->i_record;
}

/* Duplicate question_ids would make the output (keyed and sorted by question_id) ambiguous. */
static int judge_check_unique(const struct jobs_records *recs, struct judge_sample *samples,
                              size_t n, char *errstr, size_t errstr_len)
{
    if (n < 2) {
        return 0;
    }
    struct judge_sample **order = xmalloc(n * sizeof(*order));
    for (size_t i = 0; i < n; i++) {
        order[i] = &samples[i];
    }
    qsort(order, n, sizeof(*order), judge_sample_cmp_id);
    int err = 0;
    for (size_t i = 1; i < n && !err; i++) {
        if (order[i]->question_id == order[i - 1]->question_id) {
            char a[JUDGE_WHERE_LEN], b[JUDGE_WHERE_LEN];
            jobs_record_where(recs, order[i]->i_record, b, sizeof(b));
            jobs_record_where(recs, order[i - 1]->i_record, a, sizeof(a));
            errstr_set(errstr, errstr_len, "%s: question_id %lld repeats the one at %s", b,
                       (long long)order[i]->question_id, a);
            err = -EINVAL;
        }
    }
    free(order);
    return err;
}

/* JudgeLM's references file: record i holds the reference of input record i. */
static int judge_references_load(const struct job_spec *spec, struct judge_sample *samples,
                                 size_t n, char *errstr, size_t errstr_len)
{
    struct jobs_records refs;
    int err = jobs_records_load(spec->reference_file, &refs, errstr, errstr_len);
    if (err) {
        return err;
    }
    if (refs.n != n) {
        errstr_set(errstr, errstr_len,
                   "%s: %zu references for %zu input records (they are matched by position)",
                   spec->reference_file, refs.n, n);
        err = -EINVAL;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        char where[JUDGE_WHERE_LEN];
        jobs_record_where(&refs, i, where, sizeof(where));
        if (!json_is_object(refs.items[i].obj)) {
            errstr_set(errstr, errstr_len, "%s: expected a JSON object", where);
            err = -EINVAL;
            goto done;
        }
        samples[i].reference =
            judge_field_reference(refs.items[i].obj, "reference", where, errstr, errstr_len);
        if (!samples[i].reference) {
            err = -EINVAL;
            goto done;
        }
    }
done:
    jobs_records_free(&refs);
    return err;
}

int judge_input_load(const struct job_spec *spec, struct judge_sample **samples_out, size_t *n_out,
                     char *errstr, size_t errstr_len)
{
    struct jobs_records recs;
    int err = jobs_records_load(spec->input, &recs, errstr, errstr_len);
    if (err) {
        return err;
    }
    struct judge_sample *samples = xcalloc(recs.n ? recs.n : 1, sizeof(*samples));
    size_t n = 0;
    for (size_t i = 0; i < recs.n; i++) {
        char where[JUDGE_WHERE_LEN];
        jobs_record_where(&recs, i, where, sizeof(where));
        json_t *obj = recs.items[i].obj;
        if (!json_is_object(obj)) {
            errstr_set(errstr, errstr_len, "%s: expected a JSON object", where);
            err = -EINVAL;
            goto fail;
        }
        struct judge_sample *s = &samples[n++];
        s->i_record = i;
        s->record = json_incref(obj);
        if ((err = judge_sample_fill(spec, obj, i, where, s, errstr, errstr_len)) != 0) {
            goto fail;
        }
    }
    if ((err = judge_check_unique(&recs, samples, n, errstr, errstr_len)) != 0) {
        goto fail;
    }
    if (spec->reference == JUDGE_REFERENCE_FILE &&
        (err = judge_references_load(spec, samples, n, errstr, errstr_len)) != 0) {
        goto fail;
    }
    jobs_records_free(&recs);
    *samples_out = samples;
    *n_out = n;
    return 0;
fail:
    jobs_records_free(&recs);
    judge_samples_free(samples, n);
    return err;
}

void judge_sample_clear(struct judge_sample *s)
{
    free(s->question);
    free(s->reference);
    for (int k = 0; k < s->n_answers; k++) {
        free(s->answers[k]);
    }
    json_decref(s->record);
    memset(s, 0, sizeof(*s));
}

void judge_samples_free(struct judge_sample *samples, size_t n)
{
    if (!samples) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        judge_sample_clear(&samples[i]);
    }
    free(samples);
}
