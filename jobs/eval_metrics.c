/* eval_metrics.c - JudgeLM's calculate_metrics (research/judgelm.md section 5): scikit-learn's
 * accuracy and macro precision/recall/F1 over the classes present, and the position-swap
 * figures.
 *
 * delta_bias and total_bias: JudgeLM divides the counts of "preferred the first shown" and
 * "preferred the second shown" by n; total_bias = (#first + #second) / n equals 1 - consistency
 * only with counts, which pins that reading. So delta_bias = |#first - #second| / n, which is
 * |prefer_first - prefer_second| in rates. */
#include "jobs/eval.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int eval_class_index(const struct eval_metrics *m, int c)
{
    for (int i = 0; i < m->n_classes; i++) {
        if (m->classes[i] == c) {
            return i;
        }
    }
    return -1;
}

/* Adds c to the sorted class list. Returns -EINVAL when the list is full. */
static int eval_class_add(struct eval_metrics *m, int c)
{
    if (eval_class_index(m, c) >= 0) {
        return 0;
    }
    if (m->n_classes == EVAL_MAX_CLASSES) {
        return -EINVAL;
    }
    int i = m->n_classes++;
    while (i > 0 && m->classes[i - 1] > c) {
        m->classes[i] = m->classes[i - 1];
        i--;
    }
    m->classes[i] = c;
    return 0;
}

int eval_metrics_compute(const int *truth, const int *pred, const int *reversed, size_t n,
                         struct eval_metrics *out)
{
    memset(out, 0, sizeof(*out));
    if (n == 0 || !truth || !pred) {
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (eval_class_add(out, truth[i]) || eval_class_add(out, pred[i])) {
            memset(out, 0, sizeof(*out));
            return -EINVAL;
        }
    }
    out->n = n;
    size_t hits = 0;
    for (size_t i = 0; i < n; i++) {
        int t = eval_class_index(out, truth[i]), p = eval_class_index(out, pred[i]);
        out->confusion[t][p]++;
        hits += t == p;
    }
    out->accuracy = (double)hits / (double)n;
    for (int c = 0; c < out->n_classes; c++) {
        size_t tp = out->confusion[c][c], predicted = 0, actual = 0;
        for (int k = 0; k < out->n_classes; k++) {
            predicted += out->confusion[k][c];
            actual += out->confusion[c][k];
        }
        double p = predicted ? (double)tp / (double)predicted : 0.0;
        double r = actual ? (double)tp / (double)actual : 0.0;
        double f = p + r > 0.0 ? 2.0 * p * r / (p + r) : 0.0;
        out->class_precision[c] = p;
        out->class_recall[c] = r;
        out->class_f1[c] = f;
        out->class_support[c] = actual;
        out->precision += p;
        out->recall += r;
        out->f1 += f;
    }
    out->precision /= out->n_classes;
    out->recall /= out->n_classes;
    out->f1 /= out->n_classes;
    if (reversed) {
        size_t same = 0, first = 0, second = 0;
        for (size_t i = 0; i < n; i++) {
            int d = -pred[i] - reversed[i];
            same += d == 0;
            first += d < 0;
            second += d > 0;
        }
        out->has_consistency = true;
        out->consistency = (double)same / (double)n;
        out->prefer_first = (double)first / (double)n;
        out->prefer_second = (double)second / (double)n;
        out->delta_bias = (double)(first > second ? first - second : second - first) / (double)n;
        out->total_bias = (double)(first + second) / (double)n;
    }
    return 0;
}

/* "answer1", "tie", "answer2" for JudgeLM's classes, the number otherwise. */
static const char *eval_class_name(int c, char *buf, size_t len)
{
    if (c == 1) {
        return "answer1";
    }
    if (c == 0) {
        return "tie";
    }
    if (c == -1) {
        return "answer2";
    }
    snprintf(buf, len, "%d", c);
    return buf;
}

int eval_metrics_print(FILE *f, const struct eval_metrics *m)
{
    char name[32];
    fprintf(f, "%-18s %10zu\n", "n", m->n);
    fprintf(f, "%-18s %10.2f\n", "agreement", 100.0 * m->accuracy);
    fprintf(f, "%-18s %10.2f\n", "precision", 100.0 * m->precision);
    fprintf(f, "%-18s %10.2f\n", "recall", 100.0 * m->recall);
    fprintf(f, "%-18s %10.2f\n", "f1", 100.0 * m->f1);
    if (m->has_consistency) {
        fprintf(f, "%-18s %10.2f\n", "consistency", 100.0 * m->consistency);
        fprintf(f, "%-18s %10.2f\n", "prefer_first", 100.0 * m->prefer_first);
        fprintf(f, "%-18s %10.2f\n", "prefer_second", 100.0 * m->prefer_second);
        fprintf(f, "%-18s %10.2f\n", "delta_bias", 100.0 * m->delta_bias);
        fprintf(f, "%-18s %10.2f\n", "total_bias", 100.0 * m->total_bias);
    }
    fprintf(f, "%-18s %10zu   (score lines that did not parse: ties)\n", "pred_failed",
            m->n_pred_failed);
    if (m->has_consistency) {
        fprintf(f, "%-18s %10zu\n", "reversed_failed", m->n_reversed_failed);
    }
    fprintf(f, "%-18s %10zu   (label texts that did not parse: dropped)\n", "labels_dropped",
            m->n_labels_dropped);
    fprintf(f, "%-18s %10zu\n", "unmatched_pred", m->n_unmatched_pred);
    fprintf(f, "%-18s %10zu\n", "unmatched_labels", m->n_unmatched_labels);
    /* classes from the highest down: answer1, tie, answer2 */
    fprintf(f, "\n%-10s %10s %10s %10s %10s\n", "class", "precision", "recall", "f1", "support");
    for (int c = m->n_classes - 1; c >= 0; c--) {
        fprintf(f, "%-10s %10.2f %10.2f %10.2f %10zu\n",
                eval_class_name(m->classes[c], name, sizeof(name)), 100.0 * m->class_precision[c],
                100.0 * m->class_recall[c], 100.0 * m->class_f1[c], m->class_support[c]);
    }
    fprintf(f, "\nconfusion (rows: label, columns: judge)\n%-10s", "");
    for (int c = m->n_classes - 1; c >= 0; c--) {
        fprintf(f, " %10s", eval_class_name(m->classes[c], name, sizeof(name)));
    }
    fputc('\n', f);
    for (int r = m->n_classes - 1; r >= 0; r--) {
        fprintf(f, "%-10s", eval_class_name(m->classes[r], name, sizeof(name)));
        for (int c = m->n_classes - 1; c >= 0; c--) {
            fprintf(f, " %10zu", m->confusion[r][c]);
        }
        fputc('\n', f);
    }
    return ferror(f) ? -EIO : 0;
}

json_t *eval_metrics_json(const struct eval_metrics *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "n", json_integer((json_int_t)m->n));
    json_object_set_new(o, "accuracy", json_real(m->accuracy));
    json_object_set_new(o, "precision", json_real(m->precision));
    json_object_set_new(o, "recall", json_real(m->recall));
    json_object_set_new(o, "f1", json_real(m->f1));
    const char *keys[] = { "consistency", "prefer_first", "prefer_second", "delta_bias",
                           "total_bias" };
    const double vals[] = { m->consistency, m->prefer_first, m->prefer_second, m->delta_bias,
                            m->total_bias };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        json_object_set_new(o, keys[i], m->has_consistency ? json_real(vals[i]) : json_null());
    }
    json_t *classes = json_array(), *confusion = json_array(), *per_class = json_array();
    for (int r = 0; r < m->n_classes; r++) {
        json_array_append_new(classes, json_integer(m->classes[r]));
        json_t *row = json_array();
        for (int c = 0; c < m->n_classes; c++) {
            json_array_append_new(row, json_integer((json_int_t)m->confusion[r][c]));
        }
        json_array_append_new(confusion, row);
        json_t *pc = json_object();
        json_object_set_new(pc, "class", json_integer(m->classes[r]));
        json_object_set_new(pc, "precision", json_real(m->class_precision[r]));
        json_object_set_new(pc, "recall", json_real(m->class_recall[r]));
        json_object_set_new(pc, "f1", json_real(m->class_f1[r]));
        json_object_set_new(pc, "support", json_integer((json_int_t)m->class_support[r]));
        json_array_append_new(per_class, pc);
    }
    json_object_set_new(o, "classes", classes);
    json_object_set_new(o, "confusion", confusion);
    json_object_set_new(o, "per_class", per_class);
    json_object_set_new(o, "n_pred_failed", json_integer((json_int_t)m->n_pred_failed));
    json_object_set_new(o, "n_reversed_failed", json_integer((json_int_t)m->n_reversed_failed));
    json_object_set_new(o, "n_labels_dropped", json_integer((json_int_t)m->n_labels_dropped));
    json_object_set_new(o, "n_unmatched_pred", json_integer((json_int_t)m->n_unmatched_pred));
    json_object_set_new(o, "n_unmatched_labels", json_integer((json_int_t)m->n_unmatched_labels));
    return o;
}
