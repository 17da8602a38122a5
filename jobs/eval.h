/* eval.h - judge metrics as JudgeLM's eval_model_judgement.py computes them (agreement, macro
 * precision/recall/F1 with scikit-learn's semantics, position consistency and bias), and the
 * readers for labels and prediction files used by `judgectl metrics` and judge jobs.
 *
 * Classes are plain ints. Judgments use JudgeLM's frame: +1 answer 1 better, 0 tie, -1 answer 2
 * better; the metric code accepts any ints (a "garbage" class, say) up to EVAL_MAX_CLASSES
 * distinct values. */
#ifndef JOBS_EVAL_H
#define JOBS_EVAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define EVAL_MAX_CLASSES 8

/* Results. Rates are fractions in [0, 1]. Plain data. */
struct eval_metrics {
    size_t n;                     /* samples scored (after dropping unparseable labels) */
    double accuracy;              /* "agreement" */
    double precision, recall, f1; /* macro over the classes present in truth or prediction */
    int n_classes;
    int classes[EVAL_MAX_CLASSES];                        /* sorted ascending */
    size_t confusion[EVAL_MAX_CLASSES][EVAL_MAX_CLASSES]; /* [truth][prediction] */
    double class_precision[EVAL_MAX_CLASSES], class_recall[EVAL_MAX_CLASSES],
        class_f1[EVAL_MAX_CLASSES];
    size_t class_support[EVAL_MAX_CLASSES]; /* truth count per class */
    bool has_consistency;                   /* a reversed judgment was given for every sample */
    double consistency;                     /* #(-s == r) / n */
    double prefer_first;                    /* #(-s - r < 0) / n: JudgeLM's perfer_before_rate */
    double prefer_second;                   /* #(-s - r > 0) / n: JudgeLM's perfer_after_rate */
    double delta_bias; /* |#first - #second| / n = |prefer_first - prefer_second| */
    double total_bias; /* (#first + #second) / n = 1 - consistency */
    /* filled by the file-level helpers, zero from eval_metrics_compute: */
    size_t n_pred_failed;      /* predictions whose score line failed to parse: ties */
    size_t n_reversed_failed;  /* the same for reversed predictions */
    size_t n_labels_dropped;   /* label texts that failed to parse: dropped, as JudgeLM does */
    size_t n_unmatched_pred;   /* predictions with no label */
    size_t n_unmatched_labels; /* usable labels with no prediction */
};

/* Computes the metrics of n samples: truth[i] vs pred[i]; reversed (may be NULL) holds the
 * judgments of the same samples with the answers swapped, in the swapped run's own frame.
 * Accuracy = matches / n. Per class c of the sorted union of truth and pred values: precision
 * tp / (tp + fp), recall tp / (tp + fn), F1 2PR / (P + R), each 0 when its denominator is 0
 * (scikit-learn's zero_division=0); the macro figures are unweighted means over those classes
 * (macro F1 is the mean of per-class F1s). Consistency uses s' = -pred and r = reversed.
 * Returns 0, or -EINVAL for n == 0 or more than EVAL_MAX_CLASSES classes. Thread-safe. */
int eval_metrics_compute(const int *truth, const int *pred, const int *reversed, size_t n,
                         struct eval_metrics *out);

/* Prints the metrics as a table (percentages with two decimals, as JudgeLM's README reports
 * them, the confusion matrix, the counters). Returns 0 or -EIO. */
int eval_metrics_print(FILE *f, const struct eval_metrics *m);

/* The metrics as a JSON object (fractions; keys accuracy, precision, recall, f1, consistency,
 * prefer_first, prefer_second, delta_bias, total_bias, n, classes, confusion, per_class and
 * the counters). Returns a new reference. Thread-safe. */
json_t *eval_metrics_json(const struct eval_metrics *m);

/* ---- labels and predictions from files (eval_files.c) ---------------------------------------- */

/* Ground-truth labels keyed by question_id. */
struct eval_labels;

/* Reads labels, detecting the format from the content:
 * - JSONL (or a JSON array) of objects with question_id and either "label" (1 answer 1 better,
 *   2 answer 2 better, 0 tie) or "text" (a judgment such as JudgeLM's GPT-4 files, parsed with
 *   parse_score; a text that does not parse, or has a -1 score, is dropped as JudgeLM does);
 * - PandaLM's test set (a JSON array with annotator1..3): the majority vote, question_id = idx;
 * - LLMBar (a JSON array with output_1, output_2 and label 1/2): question_id = position.
 * A repeated question_id keeps the last record. Errors name file:line (or file:[index]) and the
 * field. Returns 0, -ENOENT/-EIO, -EINVAL with errstr. Caller owns *out; free with
 * eval_labels_destroy. Thread-safe. */
int eval_labels_load(const char *path, struct eval_labels **out, char *errstr, size_t errstr_len);

/* The same on `len` bytes in memory; `name` stands for the file in errors. */
int eval_labels_parse_buf(const char *buf, size_t len, const char *name, struct eval_labels **out,
                          char *errstr, size_t errstr_len);

/* No-op on NULL. */
void eval_labels_destroy(struct eval_labels *l);

/* The label of a question: 0 with *label in JudgeLM's frame, -ENODATA when its text was
 * dropped, -ENOENT when absent. Thread-safe on a loaded set. */
int eval_labels_get(const struct eval_labels *l, int64_t question_id, int *label);

/* Distinct question_ids, and how many were dropped. */
size_t eval_labels_count(const struct eval_labels *l);
size_t eval_labels_n_dropped(const struct eval_labels *l);

/* Judge predictions keyed by question_id. */
struct eval_preds;

/* Reads a judge output file (JSONL or a JSON array of objects with question_id and pred_text,
 * parsed with parse_score; a failure is a tie and is counted). A record's pred_text_swapped
 * (this project's swap mode) is kept as its reversed judgment. A repeated question_id keeps the
 * last record, as JudgeLM's reorg_answer_file does. Same contract as eval_labels_load. */
int eval_preds_load(const char *path, struct eval_preds **out, char *errstr, size_t errstr_len);

/* The same on `len` bytes in memory; `name` stands for the file in errors. */
int eval_preds_parse_buf(const char *buf, size_t len, const char *name, struct eval_preds **out,
                         char *errstr, size_t errstr_len);

/* No-op on NULL. */
void eval_preds_destroy(struct eval_preds *p);

/* Matches labels and predictions by question_id (ascending) and computes the metrics. reversed
 * may be NULL: then the predictions' own swapped judgments give the consistency figures when
 * every matched record has one. Returns 0, -EINVAL with errstr when nothing matches or a
 * matched question_id is missing from `reversed`. Thread-safe. */
int eval_metrics_from_files(const struct eval_labels *labels, const struct eval_preds *pred,
                            const struct eval_preds *reversed, struct eval_metrics *out,
                            char *errstr, size_t errstr_len);

#endif
