/* test_judge_job.c - jobs/judge_input.c, judge_job.c, judge_output.c and judge_probs.c: the
 * input formats (with file:line errors), the request list a runner gets, results in and JudgeLM
 * output records out (exact bytes, sorted, deterministic), metrics at the end of a job, and the
 * expected scores on synthetic token probabilities over the real LLaMA vocabulary (digits are
 * single pieces: "8 7\n" is 8, ▁, 7, <0x0A>; "10" is 1, 0). Run from the repository root. */
#include "common/util.h"
#include "engine/tokenizer.h"
#include "jobs/job.h"
#include "jobs/judge.h"

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

#define LLAMA_MODEL     "tests/fixtures/tokenizer/llama/tokenizer.model"
#define PANDALM_TESTSET "tests/fixtures/pandalm/testset-v1.json"
#define LLMBAR_NATURAL  "tests/fixtures/llmbar/LLMBar_Natural.json"

/* LLaMA ids (checked against the vocabulary in test_probs_vocabulary) */
#define ID_SPACE 29871 /* "▁" */
#define ID_NL    13    /* "<0x0A>" */
#define ID_THE   450   /* "▁The" */
static const int32_t id_digit[10] = { 29900, 29896, 29906, 29941, 29946,
                                      29945, 29953, 29955, 29947, 29929 };

static char test_dir[64];
static struct tok *llama;

static int setup(void **state)
{
    (void)state;
    strcpy(test_dir, "/tmp/judged-test-job-XXXXXX");
    if (!mkdtemp(test_dir)) {
        return -1;
    }
    char errstr[ERRSTR_LEN];
    return tok_load_file(LLAMA_MODEL, &llama, errstr, sizeof(errstr));
}

static int teardown(void **state)
{
    (void)state;
    tok_destroy(llama);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", test_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *tmp_path(const char *name)
{
    char *path = malloc(strlen(test_dir) + strlen(name) + 2);
    sprintf(path, "%s/%s", test_dir, name);
    return path;
}

static void write_file(const char *name, const char *content)
{
    char *path = tmp_path(name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    free(path);
}

static char *read_file(const char *name)
{
    char *path = tmp_path(name), *buf = NULL, errstr[ERRSTR_LEN];
    size_t len;
    if (file_read_all(path, &buf, &len, errstr, sizeof(errstr)) != 0) {
        fail_msg("%s", errstr);
    }
    free(path);
    return buf;
}

/* A spec written into the test directory, so its relative paths point there. */
static struct job_spec *spec_from(const char *yaml)
{
    char *name = tmp_path("spec.yaml");
    char errstr[ERRSTR_LEN] = "";
    struct job_spec *s = NULL;
    if (job_spec_parse_buf(yaml, strlen(yaml), name, true, &s, errstr, sizeof(errstr)) != 0) {
        fail_msg("%s", errstr);
    }
    free(name);
    return s;
}

static struct judge_job *job_from(const struct job_spec *spec, const struct tok *t)
{
    char errstr[ERRSTR_LEN] = "";
    struct judge_job *job = NULL;
    if (judge_job_create(spec, t, &job, errstr, sizeof(errstr)) != 0) {
        fail_msg("%s", errstr);
    }
    return job;
}

static void expect_job_error(const char *yaml, const char *needle1, const char *needle2)
{
    struct job_spec *spec = spec_from(yaml);
    char errstr[ERRSTR_LEN] = "";
    struct judge_job *job = NULL;
    assert_true(judge_job_create(spec, NULL, &job, errstr, sizeof(errstr)) < 0);
    assert_null(job);
    if (!strstr(errstr, needle1) || (needle2 && !strstr(errstr, needle2))) {
        fail_msg("'%s' lacks '%s' / '%s'", errstr, needle1, needle2 ? needle2 : "");
    }
    job_spec_destroy(spec);
}

static const char judgelm_input[] =
    "{\"question_id\": 5, \"question_body\": \"Q5 {x}\", \"answer1_body\": \"A5\", "
    "\"answer2_body\": \"B5\", \"answer3_body\": \"C5\", \"reference\": {\"text\": \"R5\"}}\n"
    "{\"question_id\": 1, \"question_body\": \"Q1 caf\\u00e9\", \"answer1_body\": \"A1\", "
    "\"answer2_body\": \"B1\", \"answer3_body\": \"C1\", \"reference\": {\"text\": \"R1\"}}\n"
    "\n"
    "{\"question_id\": 3, \"question_body\": \"Q3\", \"answer1_body\": \"A3\", "
    "\"answer2_body\": \"B3\", \"answer3_body\": \"C3\", \"reference\": {\"text\": \"R3\"}}\n";

static void test_input_judgelm_and_requests(void **state)
{
    (void)state;
    write_file("in.jsonl", judgelm_input);
    struct job_spec *spec =
        spec_from("kind: judge\nmodel: m\ninput: in.jsonl\nreference: embedded\n"
                  "swap: both\nseed: 100\nmax_new_tokens: 16\n");
    struct judge_job *job = job_from(spec, llama);
    assert_int_equal(judge_job_n_samples(job), 3);
    assert_int_equal(judge_job_n_requests(job), 6);
    const struct judge_sample *s = judge_job_sample(job, 1);
    assert_int_equal(s->question_id, 1);
    assert_int_equal(s->i_record, 1);
    assert_string_equal(s->question, "Q1 caf\xc3\xa9");
    assert_string_equal(s->reference, "R1");
    assert_int_equal(s->n_answers, 2);
    for (size_t i = 0; i < 6; i++) {
        const struct judge_request *r = judge_job_request(job, i);
        const struct judge_sample *rs = judge_job_sample(job, i / 2);
        assert_int_equal(r->i_sample, i / 2);
        assert_int_equal(r->question_id, rs->question_id);
        assert_int_equal(r->order, i % 2 ? JUDGE_ORDER_SWAPPED : JUDGE_ORDER_ORIGINAL);
        /* the same prompt judge_prompt_render gives for that sample and order */
        struct judge_prompt_input in = {
            .question = rs->question,
            .reference = rs->reference,
            .answers = (const char *const *)rs->answers,
            .n_answers = 2,
            .order = r->order,
        };
        char *want;
        assert_int_equal(judge_prompt_render(JUDGE_MODE_PAIR, &in, &want, NULL), 0);
        assert_string_equal(r->prompt, want);
        assert_int_equal(r->prompt_len, strlen(want));
        /* BOS first, then the tokenizer's ids */
        int32_t *ids;
        size_t n;
        assert_int_equal(tok_encode(llama, want, strlen(want), true, &ids, &n), 0);
        assert_int_equal(r->n_tokens, n);
        assert_int_equal(r->tokens[0], 1);
        assert_memory_equal(r->tokens, ids, n * sizeof(*ids));
        free(ids);
        free(want);
        /* JudgeLM's sampling with a seed per sample, fast mode's stop string */
        assert_int_equal(r->sampling.seed, 100 + i / 2);
        assert_int_equal(r->sampling.top_k, 50);
        assert_string_equal(r->stop, "\n");
        assert_int_equal(r->max_new_tokens, 16);
        assert_int_equal(r->n_logprobs, JUDGE_MAX_TOP);
    }
    assert_null(judge_job_request(job, 6));
    assert_non_null(strstr(judge_job_request(job, 1)->prompt, "Answer]\nB5\n\n[The End of "
                                                              "Assistant 1's"));
    judge_job_destroy(job);
    job_spec_destroy(spec);
    /* detailed mode stops at EOS only */
    spec = spec_from("kind: judge\nmodel: m\ninput: in.jsonl\noutput: detailed\nmode: multi\n"
                     "n_answers: 3\n");
    job = job_from(spec, NULL);
    assert_null(judge_job_request(job, 0)->stop);
    assert_null(judge_job_request(job, 0)->tokens);
    assert_non_null(strstr(judge_job_request(job, 0)->prompt, "Assistant 3's Answer]\nC5\n"));
    judge_job_destroy(job);
    job_spec_destroy(spec);
}

static void test_input_formats(void **state)
{
    (void)state;
    /* PandaLM: question = instruction + "\n\n" + input (when not empty), idx as question_id */
    struct job_spec *spec = spec_from("kind: judge\nmodel: m\ninput: " PANDALM_TESTSET "\n"
                                      "input_format: pandalm\n");
    free(spec->input);
    spec->input = strdup(PANDALM_TESTSET); /* the spec resolved it against the temp dir */
    struct judge_job *job = job_from(spec, NULL);
    assert_int_equal(judge_job_n_samples(job), 999);
    const struct judge_sample *s = judge_job_sample(job, 0);
    assert_int_equal(s->question_id, 0);
    const char *instr = json_string_value(json_object_get(s->record, "instruction"));
    const char *input = json_string_value(json_object_get(s->record, "input"));
    assert_true(*input);
    char *want = malloc(strlen(instr) + strlen(input) + 3);
    sprintf(want, "%s\n\n%s", instr, input);
    assert_string_equal(s->question, want);
    free(want);
    assert_string_equal(s->answers[1], json_string_value(json_object_get(s->record, "response2")));
    size_t n_plain = 0;
    for (size_t i = 0; i < judge_job_n_samples(job); i++) {
        s = judge_job_sample(job, i);
        if (!*json_string_value(json_object_get(s->record, "input"))) {
            assert_string_equal(s->question,
                                json_string_value(json_object_get(s->record, "instruction")));
            n_plain++;
        }
    }
    assert_int_equal(n_plain, 167);
    /* PandaLM has boolean responses: inserted as str.format would, "True" */
    assert_string_equal(judge_job_sample(job, 157)->answers[0], "True");
    assert_string_equal(judge_job_sample(job, 157)->answers[1], "True.");
    judge_job_destroy(job);
    job_spec_destroy(spec);
    /* LLMBar: question_id = position */
    spec = spec_from("kind: judge\nmodel: m\ninput: x\ninput_format: llmbar\n");
    free(spec->input);
    spec->input = strdup(LLMBAR_NATURAL);
    job = job_from(spec, NULL);
    assert_int_equal(judge_job_n_samples(job), 100);
    s = judge_job_sample(job, 7);
    assert_int_equal(s->question_id, 7);
    assert_string_equal(s->answers[0], json_string_value(json_object_get(s->record, "output_1")));
    judge_job_destroy(job);
    job_spec_destroy(spec);
    /* mapping, without question_id (position), reference embedded */
    write_file("map.jsonl", "{\"p\": \"q0\", \"x\": \"a0\", \"y\": \"b0\", \"g\": \"r0\"}\n"
                            "{\"p\": \"q1\", \"x\": \"a1\", \"y\": \"b1\", \"g\": \"r1\"}\n");
    spec = spec_from("kind: judge\nmodel: m\ninput: map.jsonl\ninput_format: mapping\n"
                     "reference: embedded\nfields:\n  question: p\n  answers: [y, x]\n"
                     "  reference: g\n");
    job = job_from(spec, NULL);
    s = judge_job_sample(job, 1);
    assert_int_equal(s->question_id, 1);
    assert_string_equal(s->question, "q1");
    assert_string_equal(s->answers[0], "b1");
    assert_string_equal(s->reference, "r1");
    judge_job_destroy(job);
    job_spec_destroy(spec);
    /* JudgeLM's MM-Vet samples: question, answer (the ground truth), answer1_body */
    write_file("mmvet.jsonl", "{\"question_id\": 0, \"question\": \"What animal?\", "
                              "\"answer\": \"cat<OR>kitten\", \"answer1_body\": \"a cat\"}\n");
    spec = spec_from("kind: judge\nmodel: m\ninput: mmvet.jsonl\nmode: mmvet\n");
    job = job_from(spec, NULL);
    s = judge_job_sample(job, 0);
    assert_string_equal(s->reference, "cat<OR>kitten");
    assert_string_equal(s->answers[0], "a cat");
    const char *p = judge_job_request(job, 0)->prompt;
    assert_non_null(strstr(p, "[Reference Answer]\ncat<OR>kitten\n\n"));
    assert_true(strstr(p, "Answer]\ncat\n\n[The End of Assistant 1") ||
                strstr(p, "Answer]\nkitten\n\n[The End of Assistant 1"));
    assert_string_equal(p + strlen(p) - 15, "### Response:10");
    judge_job_destroy(job);
    job_spec_destroy(spec);
    /* references file, matched by position */
    write_file("refs.jsonl",
               "{\"reference\": {\"text\": \"first\"}}\n"
               "{\"reference\": \"second\"}\n{\"reference\": {\"text\": \"third\"}}\n");
    write_file("in.jsonl", judgelm_input);
    spec = spec_from("kind: judge\nmodel: m\ninput: in.jsonl\nreference: file\n"
                     "reference_file: refs.jsonl\nmode: single\n");
    job = job_from(spec, NULL);
    assert_string_equal(judge_job_sample(job, 0)->reference, "first");
    assert_string_equal(judge_job_sample(job, 1)->reference, "second");
    assert_non_null(strstr(judge_job_request(job, 2)->prompt, "[Reference Answer]\nthird\n\n"));
    judge_job_destroy(job);
    job_spec_destroy(spec);
}

static void test_input_errors_name_file_line_and_field(void **state)
{
    (void)state;
    write_file("e1.jsonl", "{\"question_id\": 1, \"question_body\": \"q\", \"answer1_body\": "
                           "\"a\", \"answer2_body\": \"b\"}\n"
                           "{\"question_id\": 2, \"question_body\": \"q\", \"answer1_body\": "
                           "\"a\"}\n");
    expect_job_error("kind: judge\nmodel: m\ninput: e1.jsonl\n",
                     "e1.jsonl:2: field "
                     "'answer2_body'",
                     "missing");
    write_file("e2.jsonl", "\n{\"question_id\": 1,, }\n");
    expect_job_error("kind: judge\nmodel: m\ninput: e2.jsonl\n", "e2.jsonl:2:", "invalid JSON");
    write_file("e3.jsonl", "{\"question_id\": \"1\", \"question_body\": \"q\"}\n");
    expect_job_error("kind: judge\nmodel: m\ninput: e3.jsonl\n", "e3.jsonl:1: field 'question_id'",
                     "integer");
    write_file("e4.jsonl", "{\"question_id\": 1, \"question_body\": [7]}\n");
    expect_job_error("kind: judge\nmodel: m\ninput: e4.jsonl\n",
                     "e4.jsonl:1: field "
                     "'question_body'",
                     "string");
    write_file("e5.jsonl", "[1]\n");
    expect_job_error("kind: judge\nmodel: m\ninput: e5.jsonl\n", "e5.jsonl:[0]", "JSON object");
    write_file("e6.jsonl", judgelm_input);
    write_file("e6b.jsonl", "{\"question_id\": 1, \"question_body\": \"q\", \"answer1_body\": "
                            "\"a\", \"answer2_body\": \"b\"}\n");
    expect_job_error("kind: judge\nmodel: m\ninput: e6.jsonl\nreference: file\n"
                     "reference_file: e6b.jsonl\n",
                     "e6b.jsonl", "1 references for 3 input records");
    write_file("e7.jsonl", "{\"question_id\": 4, \"question_body\": \"q\", \"answer1_body\": "
                           "\"a\", \"answer2_body\": \"b\"}\n"
                           "{\"question_id\": 4, \"question_body\": \"q\", \"answer1_body\": "
                           "\"a\", \"answer2_body\": \"b\"}\n");
    expect_job_error("kind: judge\nmodel: m\ninput: e7.jsonl\n", "e7.jsonl:2: question_id 4",
                     "e7.jsonl:1");
    write_file("e8.jsonl", "{\"question_id\": 4, \"question_body\": \"q\", \"answer1_body\": "
                           "\"a\", \"answer2_body\": \"b\", \"reference\": {\"txt\": \"r\"}}\n");
    expect_job_error("kind: judge\nmodel: m\ninput: e8.jsonl\nreference: embedded\n",
                     "e8.jsonl:1: field 'reference': field 'text'", "missing");
    expect_job_error("kind: judge\nmodel: m\ninput: nothere.jsonl\n", "nothere.jsonl", "open");
    write_file("e9.jsonl", judgelm_input);
    write_file("bad_labels.jsonl", "{\"question_id\": 1}\n");
    expect_job_error("kind: judge\nmodel: m\ninput: e9.jsonl\nlabels: bad_labels.jsonl\n",
                     "bad_labels.jsonl:1", "'label' or 'text'");
}

static void complete_text(struct judge_job *job, size_t i, const char *text)
{
    assert_int_equal(judge_job_complete(job, i, text, strlen(text), NULL, 0), 0);
}

static void test_output_records_exact(void **state)
{
    (void)state;
    write_file("in.jsonl", judgelm_input);
    struct job_spec *spec =
        spec_from("kind: judge\nmodel: /models/JudgeLM-7B\ninput: in.jsonl\n"
                  "reference: embedded\ndeterministic: true\nseed: 7\noutput_path: out.jsonl\n");
    struct judge_job *job = job_from(spec, NULL);
    char errstr[ERRSTR_LEN] = "";
    complete_text(job, 0, "10 8");
    assert_int_equal(judge_job_finish(job, NULL, NULL, errstr, sizeof(errstr)), -EINVAL);
    assert_non_null(strstr(errstr, "request 1 (question_id 1, original) is not complete"));
    complete_text(job, 1, " 8 7 ");
    complete_text(job, 2, "garbage");
    struct judge_summary sum;
    assert_int_equal(judge_job_finish(job, NULL, &sum, errstr, sizeof(errstr)), 0);
    assert_int_equal(sum.n_samples, 3);
    assert_int_equal(sum.n_parse_failed, 1);
    assert_int_equal(sum.n_win1, 2);
    assert_int_equal(sum.n_tie, 1);
    assert_false(sum.has_metrics);
    char *out = read_file("out.jsonl");
    char id1[JUDGE_PRED_ID_LEN + 1], id3[JUDGE_PRED_ID_LEN + 1], id5[JUDGE_PRED_ID_LEN + 1];
    judge_pred_id(7, 1, JUDGE_ORDER_ORIGINAL, id1);
    judge_pred_id(7, 3, JUDGE_ORDER_ORIGINAL, id3);
    judge_pred_id(7, 5, JUDGE_ORDER_ORIGINAL, id5);
    char want[4096];
    snprintf(want, sizeof(want),
             "{\"question_id\": 1, \"question_body\": \"Q1 caf\\u00e9\", \"answer1_body\": "
             "\"A1\", \"answer2_body\": \"B1\", \"answer3_body\": \"C1\", \"reference\": \"R1\", "
             "\"pred_id\": \"%s\", \"pred_text\": \"8 7\", \"pred_model_id\": \"JudgeLM-7B\", "
             "\"tstamp\": 0.0, \"scores\": [8.0, 7.0], \"expected_scores\": null, "
             "\"score_confidence\": null}\n"
             "{\"question_id\": 3, \"question_body\": \"Q3\", \"answer1_body\": \"A3\", "
             "\"answer2_body\": \"B3\", \"answer3_body\": \"C3\", \"reference\": \"R3\", "
             "\"pred_id\": \"%s\", \"pred_text\": \"garbage\", \"pred_model_id\": \"JudgeLM-7B\", "
             "\"tstamp\": 0.0, \"scores\": [-1, -1], \"expected_scores\": null, "
             "\"score_confidence\": null}\n"
             "{\"question_id\": 5, \"question_body\": \"Q5 {x}\", \"answer1_body\": \"A5\", "
             "\"answer2_body\": \"B5\", \"answer3_body\": \"C5\", \"reference\": \"R5\", "
             "\"pred_id\": \"%s\", \"pred_text\": \"10 8\", \"pred_model_id\": \"JudgeLM-7B\", "
             "\"tstamp\": 0.0, \"scores\": [10.0, 8.0], \"expected_scores\": null, "
             "\"score_confidence\": null}\n",
             id1, id3, id5);
    assert_string_equal(out, want);
    free(out);
    judge_job_destroy(job);
    job_spec_destroy(spec);
}

static void test_pred_id(void **state)
{
    (void)state;
    static const char alphabet[] = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    char a[JUDGE_PRED_ID_LEN + 1], b[JUDGE_PRED_ID_LEN + 1];
    judge_pred_id(0, 42, JUDGE_ORDER_ORIGINAL, a);
    assert_int_equal(strlen(a), 22);
    assert_int_equal(strspn(a, alphabet), 22);
    judge_pred_id(0, 42, JUDGE_ORDER_ORIGINAL, b);
    assert_string_equal(a, b);
    judge_pred_id(0, 42, JUDGE_ORDER_SWAPPED, b);
    assert_string_not_equal(a, b);
    judge_pred_id(1, 42, JUDGE_ORDER_ORIGINAL, b);
    assert_string_not_equal(a, b);
    judge_pred_id(0, 43, JUDGE_ORDER_ORIGINAL, b);
    assert_string_not_equal(a, b);
}

/* Completes every request of a fresh job in the given order; returns the output file's bytes. */
static char *run_job(const char *yaml, const size_t *order, const char *const *texts, size_t n,
                     struct judge_summary *sum)
{
    struct job_spec *spec = spec_from(yaml);
    struct judge_job *job = job_from(spec, llama);
    assert_int_equal(judge_job_n_requests(job), n);
    for (size_t k = 0; k < n; k++) {
        complete_text(job, order[k], texts[order[k]]);
    }
    char errstr[ERRSTR_LEN] = "";
    if (judge_job_finish(job, NULL, sum, errstr, sizeof(errstr)) != 0) {
        fail_msg("%s", errstr);
    }
    judge_job_destroy(job);
    job_spec_destroy(spec);
    return read_file("out.jsonl");
}

static void test_swap_metrics_and_determinism(void **state)
{
    (void)state;
    write_file("in.jsonl", judgelm_input);
    write_file("labels.jsonl", "{\"question_id\": 1, \"label\": 1}\n"
                               "{\"question_id\": 3, \"text\": \"2 9\\nAssistant 2...\"}\n"
                               "{\"question_id\": 5, \"text\": \"error\"}\n"
                               "{\"question_id\": 9, \"label\": 0}\n");
    const char *yaml = "kind: judge\nmodel: m\ninput: in.jsonl\nswap: both\n"
                       "deterministic: true\nlabels: labels.jsonl\noutput_path: out.jsonl\n"
                       "metrics_path: metrics.json\n";
    /* requests: (5 orig, 5 swapped, 1 orig, 1 swapped, 3 orig, 3 swapped) */
    const char *const texts[] = { "7 3", "3 7", "9 2", "2 9", "6 6", "4 8" };
    const size_t forward[] = { 0, 1, 2, 3, 4, 5 }, backward[] = { 5, 3, 1, 4, 2, 0 };
    struct judge_summary sum;
    char *a = run_job(yaml, forward, texts, 6, &sum);
    char *b = run_job(yaml, backward, texts, 6, NULL);
    assert_string_equal(a, b); /* identical files whatever the completion order */
    assert_non_null(strstr(a, "\"pred_text\": \"9 2\""));
    assert_non_null(strstr(a, "\"pred_text_swapped\": \"2 9\", \"scores_swapped\": [2.0, 9.0]"));
    char id[JUDGE_PRED_ID_LEN + 1];
    judge_pred_id(0, 3, JUDGE_ORDER_SWAPPED, id);
    assert_non_null(strstr(a, id));
    /* metrics: labels 1 -> +1 (judged +1), 3 -> -1 (judged tie), 5 dropped, 9 unmatched */
    assert_true(sum.has_metrics);
    assert_int_equal(sum.metrics.n, 2);
    assert_true(fabs(sum.metrics.accuracy - 0.5) < 1e-12);
    assert_int_equal(sum.metrics.n_labels_dropped, 1);
    assert_int_equal(sum.metrics.n_unmatched_pred, 0);
    assert_int_equal(sum.metrics.n_unmatched_labels, 1);
    /* consistency: 1: s'=-1, r=-1 same; 3: s'=0, r=-1 (-s - r = 1 > 0: preferred the second) */
    assert_true(sum.metrics.has_consistency);
    assert_true(fabs(sum.metrics.consistency - 0.5) < 1e-12);
    assert_true(fabs(sum.metrics.prefer_second - 0.5) < 1e-12);
    char *m = read_file("metrics.json");
    assert_non_null(strstr(m, "\"accuracy\": 0.5"));
    free(m);
    free(a);
    free(b);
}

static void test_complete_error_and_dry_run(void **state)
{
    (void)state;
    write_file("in.jsonl", judgelm_input);
    struct job_spec *spec = spec_from("kind: judge\nmodel: m\ninput: in.jsonl\n"
                                      "deterministic: true\nswap: both\n");
    struct judge_job *job = job_from(spec, NULL);
    for (size_t i = 0; i < 6; i++) {
        if (i == 3) {
            assert_int_equal(judge_job_complete_error(job, i, "prompt longer than the context"), 0);
        } else {
            complete_text(job, i, "5 6");
        }
    }
    assert_int_equal(judge_job_complete(job, 6, "x", 1, NULL, 0), -EINVAL);
    char *path = tmp_path("err.jsonl");
    char errstr[ERRSTR_LEN];
    struct judge_summary sum;
    assert_int_equal(judge_job_finish(job, path, &sum, errstr, sizeof(errstr)), 0);
    assert_int_equal(sum.n_errors, 1);
    char *out = read_file("err.jsonl");
    assert_non_null(strstr(out, "\"pred_text_swapped\": \"\", \"scores_swapped\": [-1, -1], "
                                "\"expected_scores_swapped\": null, "
                                "\"score_confidence_swapped\": null, \"error_swapped\": \"prompt "
                                "longer than the context\"}"));
    free(out);
    free(path);
    /* the dry-run file: question_id, order, prompt per request */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(judge_job_write_prompts(job, f), 0);
    fclose(f);
    size_t n_lines = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"), n_lines++) {
        json_error_t jerr;
        json_t *o = json_loads(line, 0, &jerr);
        assert_non_null(o);
        const struct judge_request *r = judge_job_request(job, n_lines);
        assert_int_equal(json_integer_value(json_object_get(o, "question_id")), r->question_id);
        assert_string_equal(json_string_value(json_object_get(o, "order")),
                            n_lines % 2 ? "swapped" : "original");
        assert_string_equal(json_string_value(json_object_get(o, "prompt")), r->prompt);
        assert_int_equal(json_object_size(o), 3);
        json_decref(o);
    }
    assert_int_equal(n_lines, 6);
    free(buf);
    judge_job_destroy(job);
    job_spec_destroy(spec);
}

static void test_complete_cleans_text(void **state)
{
    (void)state;
    write_file("in.jsonl", judgelm_input);
    struct job_spec *spec = spec_from("kind: judge\nmodel: m\ninput: in.jsonl\noutput: detailed\n"
                                      "deterministic: true\noutput_path: out.jsonl\n");
    struct judge_job *job = job_from(spec, NULL);
    /* cut at max_new_tokens inside a character; a NUL byte; the last character is kept */
    const char cut[] = "9 4\nAssistant 1 \xe2\x96";
    assert_int_equal(judge_job_complete(job, 0, cut, sizeof(cut) - 1, NULL, 0), 0);
    const char nul[] = "\n 2 3\na\0b.\n";
    assert_int_equal(judge_job_complete(job, 1, nul, sizeof(nul) - 1, NULL, 0), 0);
    complete_text(job, 2, "8 8\nBoth are fine.");
    char errstr[ERRSTR_LEN];
    assert_int_equal(judge_job_finish(job, NULL, NULL, errstr, sizeof(errstr)), 0);
    char *out = read_file("out.jsonl");
    assert_non_null(strstr(out, "\"pred_text\": \"9 4\\nAssistant 1 \\ufffd\\ufffd\", "));
    assert_non_null(strstr(out, "\"pred_text\": \"2 3\\na\\u0000b.\", \"pred_model_id\": \"m\", "
                                "\"tstamp\": 0.0, \"scores\": [2.0, 3.0]"));
    assert_non_null(strstr(out, "\"pred_text\": \"8 8\\nBoth are fine.\""));
    free(out);
    judge_job_destroy(job);
    job_spec_destroy(spec);
}

/* ---- expected scores --------------------------------------------------------------------------
 */

static void test_probs_vocabulary(void **state)
{
    (void)state;
    for (int d = 0; d < 10; d++) {
        char want[2] = { (char)('0' + d), 0 };
        assert_string_equal(tok_piece(llama, id_digit[d]), want);
    }
    assert_string_equal(tok_piece(llama, ID_SPACE), "\xe2\x96\x81");
    assert_string_equal(tok_piece(llama, ID_NL), "<0x0A>");
    assert_string_equal(tok_piece(llama, ID_THE), "\xe2\x96\x81The");
    /* how the score lines tokenize */
    int32_t *ids;
    size_t n;
    assert_int_equal(tok_encode(llama, "### Response:8 7\n", 17, false, &ids, &n), 0);
    const int32_t want87[] = { id_digit[8], ID_SPACE, id_digit[7], ID_NL };
    assert_memory_equal(ids + n - 4, want87, sizeof(want87));
    free(ids);
    assert_int_equal(tok_encode(llama, "### Response:10 8\n", 18, false, &ids, &n), 0);
    const int32_t want108[] = { id_digit[1], id_digit[0], ID_SPACE, id_digit[8], ID_NL };
    assert_memory_equal(ids + n - 5, want108, sizeof(want108));
    free(ids);
}

/* One position: the chosen token with probability p, then alternatives (id, probability). */
static struct judge_token_probs pos(int32_t token, double p, int n_alt, ...)
{
    struct judge_token_probs t = { .token = token, .logprob = (float)log(p) };
    va_list ap;
    va_start(ap, n_alt);
    t.top_ids[t.n_top] = token; /* the chosen one is usually among the top too */
    t.top_logprobs[t.n_top++] = (float)log(p);
    for (int i = 0; i < n_alt; i++) {
        t.top_ids[t.n_top] = va_arg(ap, int32_t);
        t.top_logprobs[t.n_top++] = (float)log(va_arg(ap, double));
    }
    va_end(ap);
    return t;
}

static void expect_probs(enum judge_mode mode, enum judge_output out,
                         const struct judge_token_probs *probs, size_t n, const double *scores,
                         int n_scores, const double *want_e, const double *want_c)
{
    double e[JUDGE_MAX_ANSWERS], c[JUDGE_MAX_ANSWERS];
    bool avail[JUDGE_MAX_ANSWERS];
    assert_int_equal(
        judge_expected_scores(llama, mode, out, probs, n, scores, n_scores, e, c, avail), 0);
    for (int k = 0; k < n_scores; k++) {
        if (isnan(want_e[k])) {
            assert_false(avail[k]);
            continue;
        }
        if (!avail[k] || fabs(e[k] - want_e[k]) > 1e-5 || fabs(c[k] - want_c[k]) > 1e-5) {
            fail_msg("field %d: avail %d expected %.6f (want %.6f) confidence %.6f (want %.6f)", k,
                     avail[k], e[k], want_e[k], c[k], want_c[k]);
        }
    }
}

static void test_expected_scores_pair(void **state)
{
    (void)state;
    /* "8 7\n": at "8": 8 .6, 9 .3, 7 .05, "▁The" .02 (not a number); at "7": 7 .5, 6 .2, 8 .2,
     * and an alternative "1" (.05) that was not chosen: 7 < 5.5 is false, so it counts as 10 */
    const struct judge_token_probs p87[] = {
        pos(id_digit[8], 0.6, 3, id_digit[9], 0.3, id_digit[7], 0.05, ID_THE, 0.02),
        pos(ID_SPACE, 0.99, 0),
        pos(id_digit[7], 0.5, 3, id_digit[6], 0.2, id_digit[8], 0.2, id_digit[1], 0.05),
        pos(ID_NL, 0.9, 0),
    };
    const double s87[] = { 8, 7 };
    const double e87[] = { (8 * .6 + 9 * .3 + 7 * .05) / .95,
                           (7 * .5 + 6 * .2 + 8 * .2 + 10 * .05) / .95 };
    const double c87[] = { .6 / .95, .5 / .95 };
    expect_probs(JUDGE_MODE_PAIR, JUDGE_OUTPUT_FAST, p87, 4, s87, 2, e87, c87);
    expect_probs(JUDGE_MODE_PAIR, JUDGE_OUTPUT_DETAILED, p87, 4, s87, 2, e87, c87);
    expect_probs(JUDGE_MODE_PAIR, JUDGE_OUTPUT_FAST, p87, 3, s87, 2, e87, c87); /* no "\n" */
    /* "10 8": "1" chosen, then "0" with .9: the "1" mass splits .9 / .1 between 10 and 1 */
    const struct judge_token_probs p108[] = {
        pos(id_digit[1], 0.7, 2, id_digit[9], 0.2, id_digit[8], 0.1),
        pos(id_digit[0], 0.9, 1, ID_SPACE, 0.1),
        pos(ID_SPACE, 1.0, 0),
        pos(id_digit[8], 0.8, 1, id_digit[7], 0.2),
        pos(ID_NL, 1.0, 0),
    };
    const double s108[] = { 10, 8 };
    const double e108[] = { .7 * (.9 * 10 + .1 * 1) + .2 * 9 + .1 * 8, 8 * .8 + 7 * .2 };
    const double c108[] = { .7 * .9, .8 };
    expect_probs(JUDGE_MODE_PAIR, JUDGE_OUTPUT_FAST, p108, 5, s108, 2, e108, c108);
    /* "1 9": "1" chosen and ended there; "0" had .2 at the next position */
    const struct judge_token_probs p19[] = {
        pos(id_digit[1], 0.5, 1, id_digit[2], 0.3),
        pos(ID_SPACE, 0.8, 1, id_digit[0], 0.2),
        pos(id_digit[9], 1.0, 0),
    };
    const double s19[] = { 1, 9 };
    const double e19[] = { (.5 * (.2 * 10 + .8 * 1) + .3 * 2) / .8, 9 };
    const double c19[] = { .5 * .8 / .8, 1 };
    expect_probs(JUDGE_MODE_PAIR, JUDGE_OUTPUT_FAST, p19, 3, s19, 2, e19, c19);
    /* an alternative "1" beside a low score counts as 1 */
    const struct judge_token_probs p32[] = {
        pos(id_digit[3], 0.5, 1, id_digit[1], 0.5),
        pos(ID_SPACE, 1.0, 0),
        pos(id_digit[2], 1.0, 0),
    };
    const double s32[] = { 3, 2 };
    const double e32[] = { 2, 2 }, c32[] = { .5, 1 };
    expect_probs(JUDGE_MODE_PAIR, JUDGE_OUTPUT_FAST, p32, 3, s32, 2, e32, c32);
    /* a leading space before the score line (stripped, as pred_text is) */
    const struct judge_token_probs plead[] = {
        pos(ID_SPACE, 1.0, 0),
        pos(id_digit[8], 0.5, 1, id_digit[9], 0.5),
        pos(ID_SPACE, 1.0, 0),
        pos(id_digit[7], 1.0, 0),
    };
    const double elead[] = { 8.5, 7 }, clead[] = { .5, 1 };
    expect_probs(JUDGE_MODE_PAIR, JUDGE_OUTPUT_FAST, plead, 4, s87, 2, elead, clead);
}

static void test_expected_scores_other_modes_and_failures(void **state)
{
    (void)state;
    /* single: the prompt ends "### Response:10", the model writes " 7\n" */
    const struct judge_token_probs p7[] = {
        pos(ID_SPACE, 1.0, 0),
        pos(id_digit[7], 0.6, 1, id_digit[8], 0.4),
        pos(ID_NL, 1.0, 0),
    };
    const double s7[] = { 10, 7 };
    const double e7[] = { 10, 7.4 }, c7[] = { 1, .6 };
    expect_probs(JUDGE_MODE_SINGLE, JUDGE_OUTPUT_FAST, p7, 3, s7, 2, e7, c7);
    expect_probs(JUDGE_MODE_MMVET, JUDGE_OUTPUT_DETAILED, p7, 3, s7, 2, e7, c7);
    /* multi: three fields */
    const struct judge_token_probs p876[] = {
        pos(id_digit[8], 1.0, 0),
        pos(ID_SPACE, 1.0, 0),
        pos(id_digit[7], 0.5, 1, id_digit[5], 0.5),
        pos(ID_SPACE, 1.0, 0),
        pos(id_digit[6], 1.0, 0),
    };
    const double s876[] = { 8, 7, 6 }, e876[] = { 8, 6, 6 }, c876[] = { 1, .5, 1 };
    expect_probs(JUDGE_MODE_MULTI, JUDGE_OUTPUT_FAST, p876, 5, s876, 3, e876, c876);
    /* a field that does not start at a number piece: "8 The" is not a score line; scores that
     * the pieces do not rebuild: nothing available */
    const double s87[] = { 8, 7 };
    const double none[] = { NAN, NAN }, zero[] = { 0, 0 };
    const struct judge_token_probs pthe[] = {
        pos(id_digit[8], 1.0, 0),
        pos(ID_THE, 1.0, 0),
    };
    expect_probs(JUDGE_MODE_PAIR, JUDGE_OUTPUT_FAST, pthe, 2, s87, 2, none, zero);
    const double s99[] = { 9, 9 };
    expect_probs(JUDGE_MODE_PAIR, JUDGE_OUTPUT_FAST, p876, 3, s99, 2, none, zero);
    double e[2], c[2];
    bool avail[2] = { true, true };
    assert_int_equal(judge_expected_scores(llama, JUDGE_MODE_PAIR, JUDGE_OUTPUT_FAST, p876, 3, NULL,
                                           2, e, c, avail),
                     0);
    assert_false(avail[0] || avail[1]);
    assert_int_equal(judge_expected_scores(llama, JUDGE_MODE_PAIR, JUDGE_OUTPUT_FAST, p876, 3, s87,
                                           0, e, c, avail),
                     -EINVAL);
}

static void test_expected_scores_in_output(void **state)
{
    (void)state;
    write_file("in.jsonl", judgelm_input);
    struct job_spec *spec = spec_from("kind: judge\nmodel: m\ninput: in.jsonl\n"
                                      "deterministic: true\noutput_path: out.jsonl\n");
    struct judge_job *job = job_from(spec, llama);
    const struct judge_token_probs p87[] = {
        pos(id_digit[8], 0.5, 1, id_digit[9], 0.5),
        pos(ID_SPACE, 1.0, 0),
        pos(id_digit[7], 1.0, 0),
        pos(ID_NL, 1.0, 0),
    };
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(judge_job_complete(job, i, "8 7", 3, p87, i == 2 ? 0 : 4), 0);
    }
    char errstr[ERRSTR_LEN];
    assert_int_equal(judge_job_finish(job, NULL, NULL, errstr, sizeof(errstr)), 0);
    char *out = read_file("out.jsonl");
    assert_non_null(strstr(out, "\"scores\": [8.0, 7.0], \"expected_scores\": [8.5, 7.0], "
                                "\"score_confidence\": [0.5, 1.0]}"));
    assert_non_null(strstr(out, "\"expected_scores\": null"));
    free(out);
    judge_job_destroy(job);
    job_spec_destroy(spec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_input_judgelm_and_requests),
        cmocka_unit_test(test_input_formats),
        cmocka_unit_test(test_input_errors_name_file_line_and_field),
        cmocka_unit_test(test_output_records_exact),
        cmocka_unit_test(test_pred_id),
        cmocka_unit_test(test_swap_metrics_and_determinism),
        cmocka_unit_test(test_complete_error_and_dry_run),
        cmocka_unit_test(test_complete_cleans_text),
        cmocka_unit_test(test_probs_vocabulary),
        cmocka_unit_test(test_expected_scores_pair),
        cmocka_unit_test(test_expected_scores_other_modes_and_failures),
        cmocka_unit_test(test_expected_scores_in_output),
    };
    return cmocka_run_group_tests_name("judge_job", tests, setup, teardown);
}
