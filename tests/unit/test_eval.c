/* test_eval.c - jobs/eval: metrics with scikit-learn's semantics on hand-computed cases, the
 * consistency and bias figures, the PandaLM cross-check figures of research/judgelm.md section 5
 * (computed outside this project, reproduced here to two decimals from the fixture files), and
 * the label/prediction readers with their errors. Run from the repository root. */
#include "common/util.h"
#include "jobs/eval.h"

/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PANDALM_TESTSET "tests/fixtures/pandalm/testset-v1.json"
#define PANDALM_7B      "tests/fixtures/pandalm/pandalm-7b-testset-v1.json"
#define PANDALM_GPT35   "tests/fixtures/pandalm/gpt-3.5-turbo-testset-v1.json"
#define LLMBAR_NATURAL  "tests/fixtures/llmbar/LLMBar_Natural.json"

static void assert_close(double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol)) {
        fail_msg("got %.10f want %.10f", got, want);
    }
}

/* Figures as the README reports them: x 100, two decimals. */
static void assert_pct(double frac, double want)
{
    double got = round(frac * 10000.0) / 100.0;
    if (fabs(got - want) > 1e-9) {
        fail_msg("got %.4f (%.2f) want %.2f", 100.0 * frac, got, want);
    }
}

static void test_metrics_hand_computed(void **state)
{
    (void)state;
    const int truth[] = { 1, 1, 0, -1, -1, 1, 0, -1 };
    const int pred[] = { 1, 0, 0, -1, 1, 1, 1, -1 };
    struct eval_metrics m;
    assert_int_equal(eval_metrics_compute(truth, pred, NULL, 8, &m), 0);
    assert_int_equal(m.n, 8);
    assert_close(m.accuracy, 5.0 / 8, 1e-12);
    /* per class (sorted -1, 0, 1): P = 1, 1/2, 1/2; R = 2/3, 1/2, 2/3; F1 = 0.8, 0.5, 4/7 */
    assert_int_equal(m.n_classes, 3);
    assert_int_equal(m.classes[0], -1);
    assert_int_equal(m.classes[2], 1);
    assert_close(m.class_f1[0], 0.8, 1e-12);
    assert_close(m.class_f1[2], 4.0 / 7, 1e-12);
    assert_close(m.precision, 2.0 / 3, 1e-12);
    assert_close(m.recall, (2.0 / 3 + 0.5 + 2.0 / 3) / 3, 1e-12);
    assert_close(m.f1, (0.8 + 0.5 + 4.0 / 7) / 3, 1e-12); /* mean of F1s, not F1 of means */
    assert_int_equal(m.confusion[0][0], 2);               /* truth -1, judged -1 */
    assert_int_equal(m.confusion[0][2], 1);
    assert_int_equal(m.confusion[1][2], 1);
    assert_int_equal(m.confusion[2][1], 1);
    assert_int_equal(m.class_support[2], 3);
    assert_false(m.has_consistency);
}

static void test_metrics_zero_division_gives_zero(void **state)
{
    (void)state;
    struct eval_metrics m;
    /* classes predicted but absent from the truth: recall 0 for them, still in the macro mean */
    const int t1[] = { 1, 1, 1 }, p1[] = { 1, 0, -1 };
    assert_int_equal(eval_metrics_compute(t1, p1, NULL, 3, &m), 0);
    assert_int_equal(m.n_classes, 3);
    assert_close(m.precision, 1.0 / 3, 1e-12);
    assert_close(m.recall, 1.0 / 9, 1e-12);
    assert_close(m.f1, 0.5 / 3, 1e-12);
    /* classes never predicted: precision 0 */
    const int t2[] = { 1, 0, -1 }, p2[] = { 1, 1, 1 };
    assert_int_equal(eval_metrics_compute(t2, p2, NULL, 3, &m), 0);
    assert_close(m.precision, 1.0 / 9, 1e-12);
    assert_close(m.recall, 1.0 / 3, 1e-12);
    assert_close(m.f1, 0.5 / 3, 1e-12);
    /* only the classes present count: two classes here */
    const int t3[] = { 1, -1 }, p3[] = { 1, 1 };
    assert_int_equal(eval_metrics_compute(t3, p3, NULL, 2, &m), 0);
    assert_int_equal(m.n_classes, 2);
    assert_close(m.precision, 0.25, 1e-12);
    assert_close(m.recall, 0.5, 1e-12);
    assert_int_equal(eval_metrics_compute(t3, p3, NULL, 0, &m), -EINVAL);
    const int many[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    assert_int_equal(eval_metrics_compute(many, many, NULL, 9, &m), -EINVAL);
}

static void test_consistency_and_bias_hand_computed(void **state)
{
    (void)state;
    /* s' = -pred = -1 -1 1 0 -1 1 0; reversed = 1 -1 1 0 0 -1 1; s' - r = -2 0 0 0 -1 2 -1 */
    const int pred[] = { 1, 1, -1, 0, 1, -1, 0 };
    const int rev[] = { 1, -1, 1, 0, 0, -1, 1 };
    const int truth[] = { 1, 1, 1, 1, 1, 1, 1 };
    struct eval_metrics m;
    assert_int_equal(eval_metrics_compute(truth, pred, rev, 7, &m), 0);
    assert_true(m.has_consistency);
    assert_close(m.consistency, 3.0 / 7, 1e-12);
    assert_close(m.prefer_first, 3.0 / 7, 1e-12);
    assert_close(m.prefer_second, 1.0 / 7, 1e-12);
    assert_close(m.delta_bias, 2.0 / 7, 1e-12);
    assert_close(m.total_bias, 4.0 / 7, 1e-12);
    assert_close(m.total_bias, 1.0 - m.consistency, 1e-12);
}

/* The PandaLM majority labels, from the loader. */
static struct eval_labels *pandalm_labels(void)
{
    char errstr[ERRSTR_LEN] = "";
    struct eval_labels *l = NULL;
    if (eval_labels_load(PANDALM_TESTSET, &l, errstr, sizeof(errstr)) != 0) {
        fail_msg("%s", errstr);
    }
    return l;
}

static json_t *load_json(const char *path)
{
    json_error_t jerr;
    json_t *v = json_load_file(path, 0, &jerr);
    if (!v) {
        fail_msg("%s: %s", path, jerr.text);
    }
    return v;
}

static void test_pandalm_7b_cross_check(void **state)
{
    (void)state;
    struct eval_labels *l = pandalm_labels();
    assert_int_equal(eval_labels_count(l), 999);
    json_t *preds = load_json(PANDALM_7B);
    int truth[999], pred[999];
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(preds); i++) {
        json_t *r = json_array_get(preds, i);
        int64_t idx = json_integer_value(json_object_get(r, "idx"));
        json_int_t res = json_integer_value(json_object_get(r, "pandalm_result"));
        assert_int_equal(eval_labels_get(l, idx, &truth[n]), 0);
        pred[n++] = res == 1 ? 1 : res == 2 ? -1 : 0;
    }
    struct eval_metrics m;
    assert_int_equal(eval_metrics_compute(truth, pred, NULL, n, &m), 0);
    assert_int_equal(m.n, 999);
    assert_pct(m.accuracy, 66.77);
    assert_pct(m.precision, 57.38);
    assert_pct(m.recall, 57.50);
    assert_pct(m.f1, 57.43);
    /* the majority-vote distribution of research/judgelm.md 3.5: 0:105, 1:422, 2:472 */
    assert_int_equal(m.class_support[0], 472);
    assert_int_equal(m.class_support[1], 105);
    assert_int_equal(m.class_support[2], 422);
    json_decref(preds);
    eval_labels_destroy(l);
}

static void test_gpt35_cross_check(void **state)
{
    (void)state;
    struct eval_labels *l = pandalm_labels();
    json_t *preds = load_json(PANDALM_GPT35);
    int truth[999], pred[999], truth_all[999], pred_all[999];
    size_t n = 0, n_all = 0;
    for (size_t i = 0; i < json_array_size(preds); i++) {
        json_t *r = json_array_get(preds, i);
        int64_t idx = json_integer_value(json_object_get(r, "idx"));
        const char *res = json_string_value(json_object_get(r, "gpt_result"));
        int t;
        assert_int_equal(eval_labels_get(l, idx, &t), 0);
        int p = strcmp(res, "1") == 0     ? 1
                : strcmp(res, "2") == 0   ? -1
                : strcmp(res, "Tie") == 0 ? 0
                                          : 9;
        truth_all[n_all] = t;
        pred_all[n_all++] = p; /* garbage kept as its own class 9 */
        if (p != 9) {
            truth[n] = t;
            pred[n++] = p;
        }
    }
    struct eval_metrics m;
    assert_int_equal(eval_metrics_compute(truth, pred, NULL, n, &m), 0);
    assert_int_equal(m.n, 974);
    assert_pct(m.accuracy, 71.56);
    assert_pct(m.precision, 53.65);
    assert_pct(m.recall, 54.17);
    assert_pct(m.f1, 53.31);
    assert_int_equal(eval_metrics_compute(truth_all, pred_all, NULL, n_all, &m), 0);
    assert_int_equal(m.n, 999);
    assert_int_equal(m.n_classes, 4);
    assert_pct(m.accuracy, 69.77);
    assert_pct(m.precision, 40.24);
    assert_pct(m.recall, 39.93);
    assert_pct(m.f1, 39.56);
    json_decref(preds);
    eval_labels_destroy(l);
}

static char test_dir[64];

static int setup_dir(void **state)
{
    (void)state;
    strcpy(test_dir, "/tmp/judged-test-eval-XXXXXX");
    return mkdtemp(test_dir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *write_file(const char *name, const char *content)
{
    char *path = malloc(strlen(test_dir) + strlen(name) + 2);
    sprintf(path, "%s/%s", test_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    return path;
}

static void test_files_pandalm_7b_through_judge_output_format(void **state)
{
    (void)state;
    /* PandaLM-7B's verdicts written as judge output lines (score lines), as `judgectl metrics
     * --pred` reads them */
    json_t *preds = load_json(PANDALM_7B);
    char *path = malloc(strlen(test_dir) + 16);
    sprintf(path, "%s/p7.jsonl", test_dir);
    FILE *f = fopen(path, "w");
    for (size_t i = 0; i < json_array_size(preds); i++) {
        json_t *r = json_array_get(preds, i);
        json_int_t res = json_integer_value(json_object_get(r, "pandalm_result"));
        fprintf(f, "{\"question_id\": %lld, \"pred_text\": \"%s\"}\n",
                (long long)json_integer_value(json_object_get(r, "idx")),
                res == 1   ? "9 2"
                : res == 2 ? "2 9"
                           : "5 5");
    }
    fclose(f);
    json_decref(preds);
    char errstr[ERRSTR_LEN] = "";
    struct eval_labels *l = pandalm_labels();
    struct eval_preds *p = NULL;
    assert_int_equal(eval_preds_load(path, &p, errstr, sizeof(errstr)), 0);
    struct eval_metrics m;
    assert_int_equal(eval_metrics_from_files(l, p, NULL, &m, errstr, sizeof(errstr)), 0);
    assert_int_equal(m.n, 999);
    assert_pct(m.accuracy, 66.77);
    assert_pct(m.f1, 57.43);
    assert_false(m.has_consistency);
    /* the same file as its own reversed run: every verdict flips frame, consistency = ties */
    assert_int_equal(eval_metrics_from_files(l, p, p, &m, errstr, sizeof(errstr)), 0);
    assert_true(m.has_consistency);
    assert_close(m.consistency, 107.0 / 999, 1e-12);
    eval_preds_destroy(p);
    eval_labels_destroy(l);
    free(path);
}

static void test_files_text_labels_and_failures(void **state)
{
    (void)state;
    /* GPT-4-style texts: unparseable ones and -1 scores are dropped as JudgeLM does */
    char *labels = write_file("gt.jsonl", "{\"question_id\": 0, \"text\": \"8 7\\nA1 better\"}\n"
                                          "{\"question_id\": 1, \"text\": \"error\"}\n"
                                          "\n"
                                          "{\"question_id\": 2, \"label\": 2}\n"
                                          "{\"question_id\": 3, \"text\": \"-1 5\\nodd\"}\n"
                                          "{\"question_id\": 4, \"text\": \"6 6\"}\n"
                                          "{\"question_id\": 5, \"label\": 0}\n");
    /* predictions: one failure (a tie), one unmatched, a swapped judgment on every line, and a
     * repeated question_id (the last line wins) */
    char *preds = write_file(
        "pred.jsonl",
        "{\"question_id\": 4, \"pred_text\": \"1 9\", \"pred_text_swapped\": \"9 1\"}\n"
        "{\"question_id\": 0, \"pred_text\": \"9 2\", \"pred_text_swapped\": \"2 9\"}\n"
        "{\"question_id\": 1, \"pred_text\": \"9 2\", \"pred_text_swapped\": \"2 9\"}\n"
        "{\"question_id\": 2, \"pred_text\": \"garbage\", \"pred_text_swapped\": \"3 3\"}\n"
        "{\"question_id\": 9, \"pred_text\": \"1 2\", \"pred_text_swapped\": \"2 1\"}\n"
        "{\"question_id\": 4, \"pred_text\": \"6 6\", \"pred_text_swapped\": \"7 7\"}\n");
    char errstr[ERRSTR_LEN] = "";
    struct eval_labels *l = NULL;
    struct eval_preds *p = NULL;
    assert_int_equal(eval_labels_load(labels, &l, errstr, sizeof(errstr)), 0);
    assert_int_equal(eval_labels_count(l), 6);
    assert_int_equal(eval_labels_n_dropped(l), 2);
    int label;
    assert_int_equal(eval_labels_get(l, 1, &label), -ENODATA);
    assert_int_equal(eval_labels_get(l, 7, &label), -ENOENT);
    assert_int_equal(eval_labels_get(l, 2, &label), 0);
    assert_int_equal(label, -1);
    assert_int_equal(eval_preds_load(preds, &p, errstr, sizeof(errstr)), 0);
    struct eval_metrics m;
    assert_int_equal(eval_metrics_from_files(l, p, NULL, &m, errstr, sizeof(errstr)), 0);
    /* matched: 0 (+1 vs +1), 2 (-1 vs tie: failed), 4 (tie vs tie); 5 has no prediction */
    assert_int_equal(m.n, 3);
    assert_close(m.accuracy, 2.0 / 3, 1e-12);
    assert_int_equal(m.n_pred_failed, 1);
    assert_int_equal(m.n_labels_dropped, 2);
    assert_int_equal(m.n_unmatched_labels, 1);
    assert_int_equal(m.n_unmatched_pred, 1);
    /* consistency from pred_text_swapped: 0: -1 vs -1 same; 2: 0 vs 0 same; 4: 0 vs 0 same */
    assert_true(m.has_consistency);
    assert_close(m.consistency, 1.0, 1e-12);
    eval_preds_destroy(p);
    /* a reversed file that lacks a matched question is an error naming it */
    char *rev = write_file("rev.jsonl", "{\"question_id\": 0, \"pred_text\": \"1 2\"}\n");
    struct eval_preds *r = NULL;
    assert_int_equal(eval_preds_load(preds, &p, errstr, sizeof(errstr)), 0);
    assert_int_equal(eval_preds_load(rev, &r, errstr, sizeof(errstr)), 0);
    assert_int_equal(eval_metrics_from_files(l, p, r, &m, errstr, sizeof(errstr)), -EINVAL);
    assert_non_null(strstr(errstr, "question_id 2"));
    eval_preds_destroy(p);
    eval_preds_destroy(r);
    eval_labels_destroy(l);
    free(labels);
    free(preds);
    free(rev);
}

static void test_llmbar_labels(void **state)
{
    (void)state;
    char errstr[ERRSTR_LEN] = "";
    struct eval_labels *l = NULL;
    assert_int_equal(eval_labels_load(LLMBAR_NATURAL, &l, errstr, sizeof(errstr)), 0);
    assert_int_equal(eval_labels_count(l), 100);
    int label;
    /* labels 1, 1, 1, 1, 2 ... by position */
    assert_int_equal(eval_labels_get(l, 0, &label), 0);
    assert_int_equal(label, 1);
    assert_int_equal(eval_labels_get(l, 4, &label), 0);
    assert_int_equal(label, -1);
    assert_int_equal(eval_labels_get(l, 100, &label), -ENOENT);
    eval_labels_destroy(l);
}

static void expect_load_error(const char *name, const char *content, bool labels,
                              const char *needle1, const char *needle2)
{
    char *path = write_file(name, content);
    char errstr[ERRSTR_LEN] = "";
    struct eval_labels *l = NULL;
    struct eval_preds *p = NULL;
    int rc = labels ? eval_labels_load(path, &l, errstr, sizeof(errstr))
                    : eval_preds_load(path, &p, errstr, sizeof(errstr));
    assert_int_equal(rc, -EINVAL);
    if (!strstr(errstr, needle1) || !strstr(errstr, needle2)) {
        fail_msg("'%s' lacks '%s' or '%s'", errstr, needle1, needle2);
    }
    assert_non_null(strstr(errstr, path));
    free(path);
}

static void test_reader_errors_name_file_line_and_field(void **state)
{
    (void)state;
    expect_load_error("a.jsonl", "{\"question_id\": 0, \"label\": 1}\n{\"label\": 1}\n", true,
                      "a.jsonl:2", "'question_id'");
    expect_load_error("b.jsonl", "{\"question_id\": 0, \"label\": 3}\n", true, "b.jsonl:1",
                      "'label'");
    expect_load_error("c.jsonl", "{\"question_id\": 0}\n", true, "c.jsonl:1", "'label' or 'text'");
    expect_load_error("d.jsonl", "{\"question_id\": 0, \"label\": 1}\n\n{\"question_id\": 1,,}\n",
                      true, "d.jsonl:3:", "invalid JSON");
    expect_load_error("e.json",
                      "[{\"idx\": 0, \"annotator1\": 0, \"annotator2\": 1, \"annotator3\": 2}]",
                      true, "e.json:[0]", "no majority");
    expect_load_error("f.json", "[{\"idx\": 0, \"annotator1\": 0, \"annotator2\": 1}]", true,
                      "f.json:[0]", "'annotator3'");
    expect_load_error("g.jsonl", "{\"question_id\": \"7\", \"pred_text\": \"8 7\"}\n", false,
                      "g.jsonl:1", "'question_id'");
    expect_load_error("h.jsonl", "{\"question_id\": 7, \"pred_text\": 8}\n", false, "h.jsonl:1",
                      "'pred_text'");
    expect_load_error("i.jsonl", "[1, 2]\n", false, "i.jsonl:[0]", "JSON object");
}

static void test_metrics_json_and_table(void **state)
{
    (void)state;
    const int truth[] = { 1, 0, -1, 1 }, pred[] = { 1, 0, 1, 1 }, rev[] = { -1, 0, -1, 1 };
    struct eval_metrics m;
    assert_int_equal(eval_metrics_compute(truth, pred, rev, 4, &m), 0);
    json_t *o = eval_metrics_json(&m);
    assert_int_equal(json_integer_value(json_object_get(o, "n")), 4);
    assert_close(json_real_value(json_object_get(o, "accuracy")), 0.75, 1e-12);
    assert_true(json_is_real(json_object_get(o, "consistency")));
    assert_int_equal(json_array_size(json_object_get(o, "confusion")), 3);
    json_decref(o);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(eval_metrics_print(f, &m), 0);
    fclose(f);
    assert_non_null(strstr(buf, "agreement               75.00"));
    assert_non_null(strstr(buf, "consistency"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_hand_computed),
        cmocka_unit_test(test_metrics_zero_division_gives_zero),
        cmocka_unit_test(test_consistency_and_bias_hand_computed),
        cmocka_unit_test(test_pandalm_7b_cross_check),
        cmocka_unit_test(test_gpt35_cross_check),
        cmocka_unit_test(test_files_pandalm_7b_through_judge_output_format),
        cmocka_unit_test(test_files_text_labels_and_failures),
        cmocka_unit_test(test_llmbar_labels),
        cmocka_unit_test(test_reader_errors_name_file_line_and_field),
        cmocka_unit_test(test_metrics_json_and_table),
    };
    return cmocka_run_group_tests_name("eval", tests, setup_dir, teardown_dir);
}
