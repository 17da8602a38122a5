/* eval_files.c - labels and judge predictions read from files and matched by question_id (see
 * eval.h). JudgeLM matches its files by line after sorting; matching by question_id gives the
 * same pairs on JudgeLM's own files and also works when one file has gaps. */
#include "common/util.h"
#include "common/xmalloc.h"
#include "jobs/eval.h"
#include "jobs/jobs_impl.h"
#include "jobs/judge.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define EVAL_WHERE_LEN 600

struct eval_entry {
    int64_t question_id;
    size_t position; /* in the file: the last record of a question wins */
    int label;       /* JudgeLM's frame */
    bool unusable;   /* labels: text dropped; predictions: score line failed (label is 0) */
    bool has_swapped;
    int swapped;
    bool swapped_failed;
};

struct eval_table {
    struct eval_entry *items; /* sorted by question_id, one per question */
    size_t n;
};

struct eval_labels {
    struct eval_table t;
    size_t n_dropped;
};

struct eval_preds {
    struct eval_table t;
};

static int eval_entry_cmp(const void *pa, const void *pb)
{
    const struct eval_entry *a = pa, *b = pb;
    if (a->question_id != b->question_id) {
        return a->question_id < b->question_id ? -1 : 1;
    }
    return a->position < b->position ? -1 : a->position > b->position;
}

/* Sorts by question_id and keeps the last record of each. */
static void eval_table_finish(struct eval_table *t)
{
    qsort(t->items, t->n, sizeof(*t->items), eval_entry_cmp);
    size_t m = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (i + 1 < t->n && t->items[i + 1].question_id == t->items[i].question_id) {
            continue;
        }
        t->items[m++] = t->items[i];
    }
    t->n = m;
}

static const struct eval_entry *eval_table_find(const struct eval_table *t, int64_t id)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->items[mid].question_id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < t->n && t->items[lo].question_id == id ? &t->items[lo] : NULL;
}

/* 1 -> +1 (answer 1 better), 2 -> -1 (answer 2 better), 0 -> 0 (tie). */
static int eval_label_from_int(json_int_t v, bool allow_tie, int *out)
{
    if (v == 1) {
        *out = 1;
    } else if (v == 2) {
        *out = -1;
    } else if (v == 0 && allow_tie) {
        *out = 0;
    } else {
        return -EINVAL;
    }
    return 0;
}

static int eval_int_field(const json_t *obj, const char *field, const char *where, json_int_t *out,
                          char *errstr, size_t errstr_len)
{
    json_t *v = json_object_get(obj, field);
    if (!json_is_integer(v)) {
        errstr_set(errstr, errstr_len, "%s: field '%s': %s", where, field,
                   v ? "expected an integer" : "missing");
        return -EINVAL;
    }
    *out = json_integer_value(v);
    return 0;
}

/* PandaLM's test set: the majority of annotator1..3 (0 tie, 1 response1, 2 response2). */
static int eval_pandalm_label(const json_t *obj, const char *where, struct eval_entry *e,
                              char *errstr, size_t errstr_len)
{
    json_int_t idx, votes[3];
    if (eval_int_field(obj, "idx", where, &idx, errstr, errstr_len)) {
        return -EINVAL;
    }
    for (int k = 0; k < 3; k++) {
        char field[16];
        snprintf(field, sizeof(field), "annotator%d", k + 1);
        if (eval_int_field(obj, field, where, &votes[k], errstr, errstr_len)) {
            return -EINVAL;
        }
        if (votes[k] < 0 || votes[k] > 2) {
            errstr_set(errstr, errstr_len, "%s: field '%s': %lld is not 0, 1 or 2", where, field,
                       (long long)votes[k]);
            return -EINVAL;
        }
    }
    json_int_t major = votes[0] == votes[1] || votes[0] == votes[2] ? votes[0]
                       : votes[1] == votes[2]                       ? votes[1]
                                                                    : -1;
    if (major < 0) {
        errstr_set(errstr, errstr_len, "%s: annotators disagree three ways: no majority", where);
        return -EINVAL;
    }
    e->question_id = idx;
    return eval_label_from_int(major, true, &e->label);
}

/* One record of a generic labels file: question_id with label or text. */
static int eval_generic_label(const json_t *obj, const char *where, struct eval_entry *e,
                              char *errstr, size_t errstr_len)
{
    json_int_t id;
    if (eval_int_field(obj, "question_id", where, &id, errstr, errstr_len)) {
        return -EINVAL;
    }
    e->question_id = id;
    json_t *label = json_object_get(obj, "label");
    json_t *text = json_object_get(obj, "text");
    if (label) {
        if (!json_is_integer(label) ||
            eval_label_from_int(json_integer_value(label), true, &e->label)) {
            errstr_set(errstr, errstr_len, "%s: field 'label': expected 1, 2 or 0", where);
            return -EINVAL;
        }
        return 0;
    }
    if (!text) {
        errstr_set(errstr, errstr_len, "%s: needs a field 'label' or 'text'", where);
        return -EINVAL;
    }
    if (!json_is_string(text)) {
        errstr_set(errstr, errstr_len, "%s: field 'text': expected a string", where);
        return -EINVAL;
    }
    double s[2];
    /* JudgeLM drops a ground truth whose parse holds -1 in either position */
    if (judge_score_parse(json_string_value(text), json_string_length(text), 2, s) != 0 ||
        s[0] == -1 || s[1] == -1) {
        e->unusable = true;
        return 0;
    }
    e->label = judge_score_win(s[0], s[1]);
    return 0;
}

static int eval_labels_from_records(struct jobs_records recs, struct eval_labels **out,
                                    char *errstr, size_t errstr_len);

int eval_labels_load(const char *path, struct eval_labels **out, char *errstr, size_t errstr_len)
{
    struct jobs_records recs;
    int err = jobs_records_load(path, &recs, errstr, errstr_len);
    if (err) {
        return err;
    }
    return eval_labels_from_records(recs, out, errstr, errstr_len);
}

int eval_labels_parse_buf(const char *buf, size_t len, const char *name, struct eval_labels **out,
                          char *errstr, size_t errstr_len)
{
    struct jobs_records recs;
    int err = jobs_records_parse(buf, len, name, &recs, errstr, errstr_len);
    if (err) {
        return err;
    }
    return eval_labels_from_records(recs, out, errstr, errstr_len);
}

/* Takes ownership of recs. */
static int eval_labels_from_records(struct jobs_records recs, struct eval_labels **out,
                                    char *errstr, size_t errstr_len)
{
    int err = 0;
    struct eval_labels *l = xcalloc(1, sizeof(*l));
    l->t.items = xcalloc(recs.n ? recs.n : 1, sizeof(*l->t.items));
    const json_t *first = recs.n ? recs.items[0].obj : NULL;
    bool pandalm = recs.is_array && json_object_get(first, "annotator1");
    bool llmbar = recs.is_array && !pandalm && json_object_get(first, "output_1") &&
                  json_object_get(first, "label");
    for (size_t i = 0; i < recs.n; i++) {
        char where[EVAL_WHERE_LEN];
        jobs_record_where(&recs, i, where, sizeof(where));
        const json_t *obj = recs.items[i].obj;
        struct eval_entry *e = &l->t.items[l->t.n++];
        e->position = i;
        if (!json_is_object(obj)) {
            errstr_set(errstr, errstr_len, "%s: expected a JSON object", where);
            err = -EINVAL;
        } else if (pandalm) {
            err = eval_pandalm_label(obj, where, e, errstr, errstr_len);
        } else if (llmbar) {
            json_int_t v;
            e->question_id = (int64_t)i;
            if ((err = eval_int_field(obj, "label", where, &v, errstr, errstr_len)) == 0 &&
                (err = eval_label_from_int(v, false, &e->label)) != 0) {
                errstr_set(errstr, errstr_len, "%s: field 'label': expected 1 or 2", where);
            }
        } else {
            err = eval_generic_label(obj, where, e, errstr, errstr_len);
        }
        if (err) {
            jobs_records_free(&recs);
            eval_labels_destroy(l);
            return -EINVAL;
        }
    }
    jobs_records_free(&recs);
    eval_table_finish(&l->t);
    for (size_t i = 0; i < l->t.n; i++) {
        l->n_dropped += l->t.items[i].unusable;
    }
    *out = l;
    return 0;
}

void eval_labels_destroy(struct eval_labels *l)
{
    if (!l) {
        return;
    }
    free(l->t.items);
    free(l);
}

int eval_labels_get(const struct eval_labels *l, int64_t question_id, int *label)
{
    const struct eval_entry *e = eval_table_find(&l->t, question_id);
    if (!e) {
        return -ENOENT;
    }
    if (e->unusable) {
        return -ENODATA;
    }
    *label = e->label;
    return 0;
}

size_t eval_labels_count(const struct eval_labels *l)
{
    return l->t.n;
}

size_t eval_labels_n_dropped(const struct eval_labels *l)
{
    return l->n_dropped;
}

/* A judge's score line as a class; a parse failure is a tie (JudgeLM's [-1, -1]). */
static int eval_pred_text(const json_t *obj, const char *field, const char *where, int *label,
                          bool *failed, char *errstr, size_t errstr_len)
{
    json_t *v = json_object_get(obj, field);
    if (!json_is_string(v)) {
        errstr_set(errstr, errstr_len, "%s: field '%s': %s", where, field,
                   v ? "expected a string" : "missing");
        return -EINVAL;
    }
    double s[2];
    *failed = judge_score_parse(json_string_value(v), json_string_length(v), 2, s) != 0;
    *label = judge_score_win(s[0], s[1]);
    return 0;
}

static int eval_preds_from_records(struct jobs_records recs, struct eval_preds **out, char *errstr,
                                   size_t errstr_len);

int eval_preds_load(const char *path, struct eval_preds **out, char *errstr, size_t errstr_len)
{
    struct jobs_records recs;
    int err = jobs_records_load(path, &recs, errstr, errstr_len);
    if (err) {
        return err;
    }
    return eval_preds_from_records(recs, out, errstr, errstr_len);
}

int eval_preds_parse_buf(const char *buf, size_t len, const char *name, struct eval_preds **out,
                         char *errstr, size_t errstr_len)
{
    struct jobs_records recs;
    int err = jobs_records_parse(buf, len, name, &recs, errstr, errstr_len);
    if (err) {
        return err;
    }
    return eval_preds_from_records(recs, out, errstr, errstr_len);
}

/* Takes ownership of recs. */
static int eval_preds_from_records(struct jobs_records recs, struct eval_preds **out, char *errstr,
                                   size_t errstr_len)
{
    int err = 0;
    struct eval_preds *p = xcalloc(1, sizeof(*p));
    p->t.items = xcalloc(recs.n ? recs.n : 1, sizeof(*p->t.items));
    for (size_t i = 0; i < recs.n; i++) {
        char where[EVAL_WHERE_LEN];
        jobs_record_where(&recs, i, where, sizeof(where));
        const json_t *obj = recs.items[i].obj;
        struct eval_entry *e = &p->t.items[p->t.n++];
        json_int_t id;
        e->position = i;
        if (!json_is_object(obj)) {
            errstr_set(errstr, errstr_len, "%s: expected a JSON object", where);
            err = -EINVAL;
        } else if ((err = eval_int_field(obj, "question_id", where, &id, errstr, errstr_len)) ==
                   0) {
            e->question_id = id;
            err = eval_pred_text(obj, "pred_text", where, &e->label, &e->unusable, errstr,
                                 errstr_len);
            if (!err && json_object_get(obj, "pred_text_swapped")) {
                e->has_swapped = true;
                err = eval_pred_text(obj, "pred_text_swapped", where, &e->swapped,
                                     &e->swapped_failed, errstr, errstr_len);
            }
        }
        if (err) {
            jobs_records_free(&recs);
            eval_preds_destroy(p);
            return -EINVAL;
        }
    }
    jobs_records_free(&recs);
    eval_table_finish(&p->t);
    *out = p;
    return 0;
}

void eval_preds_destroy(struct eval_preds *p)
{
    if (!p) {
        return;
    }
    free(p->t.items);
    free(p);
}

int eval_metrics_from_files(const struct eval_labels *labels, const struct eval_preds *pred,
                            const struct eval_preds *reversed, struct eval_metrics *out,
                            char *errstr, size_t errstr_len)
{
    size_t cap = labels->t.n + 1, n = 0;
    int *truth = xmalloc(cap * sizeof(int)), *judged = xmalloc(cap * sizeof(int));
    int *rev = xmalloc(cap * sizeof(int));
    size_t n_failed = 0, n_rev_failed = 0, n_unmatched_labels = 0, n_unmatched_pred = 0;
    bool all_swapped = true;
    int err = 0;
    for (size_t i = 0; i < labels->t.n; i++) {
        const struct eval_entry *l = &labels->t.items[i];
        if (l->unusable) {
            continue;
        }
        const struct eval_entry *p = eval_table_find(&pred->t, l->question_id);
        if (!p) {
            n_unmatched_labels++;
            continue;
        }
        truth[n] = l->label;
        judged[n] = p->label;
        n_failed += p->unusable;
        if (reversed) {
            const struct eval_entry *r = eval_table_find(&reversed->t, l->question_id);
            if (!r) {
                errstr_set(errstr, errstr_len, "the reversed predictions lack question_id %lld",
                           (long long)l->question_id);
                err = -EINVAL;
                goto done;
            }
            rev[n] = r->label;
            n_rev_failed += r->unusable;
        } else if (p->has_swapped) {
            rev[n] = p->swapped;
            n_rev_failed += p->swapped_failed;
        } else {
            all_swapped = false;
        }
        n++;
    }
    for (size_t i = 0; i < pred->t.n; i++) {
        n_unmatched_pred += eval_table_find(&labels->t, pred->t.items[i].question_id) == NULL;
    }
    if (n == 0) {
        errstr_set(errstr, errstr_len, "no question_id has both a usable label and a prediction");
        err = -EINVAL;
        goto done;
    }
    bool with_rev = reversed || all_swapped;
    if ((err = eval_metrics_compute(truth, judged, with_rev ? rev : NULL, n, out)) != 0) {
        errstr_set(errstr, errstr_len, "more than %d distinct classes", EVAL_MAX_CLASSES);
        goto done;
    }
    out->n_pred_failed = n_failed;
    out->n_reversed_failed = with_rev ? n_rev_failed : 0;
    out->n_labels_dropped = eval_labels_n_dropped(labels);
    out->n_unmatched_pred = n_unmatched_pred;
    out->n_unmatched_labels = n_unmatched_labels;
done:
    free(truth);
    free(judged);
    free(rev);
    return err;
}
