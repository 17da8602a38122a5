/* test_job_spec.c - jobs/job_spec.c and job_yaml.c: one schema in YAML and JSON, defaults,
 * path resolution, and an error naming the file, the field (and the YAML line:column) for every
 * kind of mistake. */
#include "common/util.h"
#include "jobs/job.h"

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

static const char full_yaml[] = "# a judge sweep\n"
                                "kind: judge\n"
                                "name: pandalm-fast\n"
                                "model: /models/JudgeLM-7B-v1.0\n"
                                "model_id: judgelm-7b\n"
                                "input: data/test.jsonl\n"
                                "input_format: mapping\n"
                                "fields:\n"
                                "  question_id: id\n"
                                "  question: prompt\n"
                                "  answers: [a, b]\n"
                                "  reference: gold\n"
                                "mode: pair\n"
                                "reference: embedded\n"
                                "output: detailed\n"
                                "swap: both\n"
                                "sampling:\n"
                                "  temperature: 0.7\n"
                                "  top_k: 40\n"
                                "  top_p: 0.9\n"
                                "seed: 1234\n"
                                "max_new_tokens: 512\n"
                                "labels: labels.jsonl\n"
                                "output_path: /tmp/out.jsonl\n"
                                "metrics_path: metrics.json\n"
                                "shard_size: 100\n"
                                "deterministic: true\n";

static const char full_json[] =
    "{\"kind\": \"judge\", \"name\": \"pandalm-fast\", \"model\": \"/models/JudgeLM-7B-v1.0\","
    " \"model_id\": \"judgelm-7b\", \"input\": \"data/test.jsonl\", \"input_format\": "
    "\"mapping\", \"fields\": {\"question_id\": \"id\", \"question\": \"prompt\", \"answers\": "
    "[\"a\", \"b\"], \"reference\": \"gold\"}, \"mode\": \"pair\", \"reference\": \"embedded\","
    " \"output\": \"detailed\", \"swap\": \"both\", \"sampling\": {\"temperature\": 0.7, "
    "\"top_k\": 40, \"top_p\": 0.9}, \"seed\": 1234, \"max_new_tokens\": 512, \"labels\": "
    "\"labels.jsonl\", \"output_path\": \"/tmp/out.jsonl\", \"metrics_path\": \"metrics.json\", "
    "\"shard_size\": 100, \"deterministic\": true}";

static void check_full(const struct job_spec *s)
{
    assert_int_equal(s->kind, JOB_KIND_JUDGE);
    assert_string_equal(s->name, "pandalm-fast");
    assert_string_equal(s->model, "/models/JudgeLM-7B-v1.0");
    assert_null(s->model_path); /* not a directory here: a configured name */
    assert_string_equal(s->model_id, "judgelm-7b");
    assert_string_equal(s->input, "specs/data/test.jsonl"); /* relative to the spec */
    assert_int_equal(s->input_format, JUDGE_INPUT_MAPPING);
    assert_string_equal(s->fields.question_id, "id");
    assert_string_equal(s->fields.question, "prompt");
    assert_int_equal(s->fields.n_answers, 2);
    assert_string_equal(s->fields.answers[1], "b");
    assert_string_equal(s->fields.reference, "gold");
    assert_int_equal(s->mode, JUDGE_MODE_PAIR);
    assert_int_equal(s->n_answers, 2);
    assert_int_equal(s->reference, JUDGE_REFERENCE_EMBEDDED);
    assert_int_equal(s->output, JUDGE_OUTPUT_DETAILED);
    assert_int_equal(s->swap, JUDGE_SWAP_BOTH);
    assert_true(fabsf(s->sampling.temperature - 0.7f) < 1e-6f);
    assert_int_equal(s->sampling.top_k, 40);
    assert_true(fabsf(s->sampling.top_p - 0.9f) < 1e-6f);
    assert_int_equal(s->seed, 1234);
    assert_int_equal(s->max_new_tokens, 512);
    assert_string_equal(s->labels, "specs/labels.jsonl");
    assert_string_equal(s->output_path, "/tmp/out.jsonl");
    assert_string_equal(s->metrics_path, "specs/metrics.json");
    assert_int_equal(s->shard_size, 100);
    assert_true(s->deterministic);
}

static struct job_spec *parse_ok(const char *text, const char *name, bool yaml)
{
    char errstr[ERRSTR_LEN] = "";
    struct job_spec *s = NULL;
    int rc = job_spec_parse_buf(text, strlen(text), name, yaml, &s, errstr, sizeof(errstr));
    if (rc != 0) {
        fail_msg("%s", errstr);
    }
    return s;
}

static void test_spec_full_yaml_and_json_agree(void **state)
{
    (void)state;
    struct job_spec *y = parse_ok(full_yaml, "specs/judge.yaml", true);
    check_full(y);
    job_spec_destroy(y);
    struct job_spec *j = parse_ok(full_json, "specs/judge.json", false);
    check_full(j);
    job_spec_destroy(j);
}

static void test_spec_defaults(void **state)
{
    (void)state;
    struct job_spec *s = parse_ok("kind: judge\nmodel: judgelm-7b\ninput: /data/in.jsonl\n",
                                  "jobs/sweep-1.yaml", true);
    assert_string_equal(s->name, "sweep-1");
    assert_string_equal(s->model_id, "judgelm-7b");
    assert_int_equal(s->input_format, JUDGE_INPUT_JUDGELM);
    assert_int_equal(s->mode, JUDGE_MODE_PAIR);
    assert_int_equal(s->n_answers, 2);
    assert_int_equal(s->reference, JUDGE_REFERENCE_NONE);
    assert_int_equal(s->output, JUDGE_OUTPUT_FAST);
    assert_int_equal(s->swap, JUDGE_SWAP_NONE);
    /* JudgeLM's sampling: temperature 0.2, top-k 50, no top-p */
    assert_true(fabsf(s->sampling.temperature - 0.2f) < 1e-6f);
    assert_int_equal(s->sampling.top_k, 50);
    assert_true(s->sampling.top_p == 1.0f);
    assert_int_equal(s->seed, 0);
    assert_int_equal(s->max_new_tokens, 2048);
    assert_int_equal(s->shard_size, 64);
    assert_false(s->deterministic);
    assert_null(s->labels);
    assert_null(s->output_path);
    assert_string_equal(s->input, "/data/in.jsonl");
    job_spec_destroy(s);
    /* greedy; model given as a directory keeps its path; model_id from its last component */
    s = parse_ok("kind: judge\nmodel: tests/fixtures/stories260K-hf/\ninput: in.jsonl\n"
                 "sampling: greedy\nmode: mmvet\n",
                 "spec.yaml", true);
    assert_true(s->sampling.temperature == 0.0f);
    assert_string_equal(s->model_path, "tests/fixtures/stories260K-hf/");
    assert_string_equal(s->model_id, "stories260K-hf");
    assert_string_equal(s->input, "in.jsonl");
    assert_int_equal(s->n_answers, 1);
    assert_int_equal(s->reference, JUDGE_REFERENCE_EMBEDDED); /* mmvet's default */
    job_spec_destroy(s);
    s = parse_ok("{\"kind\": \"judge\", \"model\": \"m\", \"input\": \"x\", \"mode\": \"multi\", "
                 "\"n_answers\": 19, \"sampling\": {\"top_k\": 1}}",
                 "a.json", false);
    assert_int_equal(s->n_answers, 19);
    assert_int_equal(s->sampling.top_k, 1);
    assert_true(fabsf(s->sampling.temperature - 0.2f) < 1e-6f);
    job_spec_destroy(s);
    /* YAML 1.2 core schema: quoted numbers are strings, so this name is "0123" */
    s = parse_ok("kind: judge\nname: '0123'\nmodel: m\ninput: x\nseed: 0x10\n", "s.yaml", true);
    assert_string_equal(s->name, "0123");
    assert_int_equal(s->seed, 16);
    job_spec_destroy(s);
}

static void expect_error(const char *text, bool yaml, const char *needle1, const char *needle2)
{
    char errstr[ERRSTR_LEN] = "";
    struct job_spec *s = NULL;
    const char *name = yaml ? "bad.yaml" : "bad.json";
    int rc = job_spec_parse_buf(text, strlen(text), name, yaml, &s, errstr, sizeof(errstr));
    if (rc != -EINVAL) {
        fail_msg("accepted:\n%s", text);
    }
    assert_null(s);
    if (!strstr(errstr, needle1) || (needle2 && !strstr(errstr, needle2))) {
        fail_msg("error '%s' lacks '%s' / '%s'", errstr, needle1, needle2 ? needle2 : "");
    }
    assert_non_null(strstr(errstr, name));
}

#define BASE "kind: judge\nmodel: m\ninput: in.jsonl\n"

static void test_spec_errors_name_the_field(void **state)
{
    (void)state;
    /* unknown fields, with their YAML position */
    expect_error(BASE "temprature: 0.2\n", true, "bad.yaml:4:1: field 'temprature'",
                 "unknown field");
    expect_error(BASE "sampling:\n  temperature: 0.2\n  topk: 3\n", true,
                 "bad.yaml:6:3: field 'sampling.topk'", "unknown field");
    expect_error("{\"kind\": \"judge\", \"model\": \"m\", \"input\": \"x\", \"swapp\": 1}", false,
                 "bad.json: field 'swapp'", "unknown field");
    /* required fields */
    expect_error("model: m\ninput: x\n", true, "field 'kind'", "required");
    expect_error("kind: judge\ninput: x\n", true, "field 'model'", "required");
    expect_error("kind: judge\nmodel: m\n", true, "field 'input'", "required");
    expect_error("kind: train\nmodel: m\ninput: x\n", true, "bad.yaml:1:1: field 'kind'", "judge");
    /* types and ranges */
    expect_error(BASE "sampling:\n  top_k: -1\n", true, "bad.yaml:5:3: field 'sampling.top_k'",
                 "outside");
    expect_error(BASE "sampling:\n  top_p: 0\n", true, "field 'sampling.top_p'", "outside");
    expect_error(BASE "sampling:\n  temperature: hot\n", true, "field 'sampling.temperature'",
                 "expected a number");
    expect_error(BASE "sampling: fancy\n", true, "field 'sampling'", "greedy");
    expect_error(BASE "max_new_tokens: 0\n", true, "field 'max_new_tokens'", "outside");
    expect_error(BASE "max_new_tokens: 12.5\n", true, "field 'max_new_tokens'", "integer");
    expect_error(BASE "seed: -3\n", true, "field 'seed'", "outside");
    expect_error(BASE "shard_size: 0\n", true, "field 'shard_size'", "outside");
    expect_error(BASE "deterministic: yes\n", true, "field 'deterministic'", "true or false");
    expect_error(BASE "mode: triple\n", true, "bad.yaml:4:1: field 'mode'",
                 "pair, single, multi, mmvet");
    expect_error(BASE "input_format: csv\n", true, "field 'input_format'", "pandalm");
    expect_error(BASE "output: verbose\n", true, "field 'output'", "fast, detailed");
    expect_error(BASE "swap: maybe\n", true, "field 'swap'", "none, both");
    expect_error(BASE "reference: always\n", true, "field 'reference'", "embedded");
    expect_error(BASE "name: ''\n", true, "field 'name'", "non-empty");
    expect_error(BASE "name: [a]\n", true, "field 'name'", "string");
    expect_error(BASE "n_answers: 20\n", true, "field 'n_answers'", "outside");
    /* rules across fields */
    expect_error(BASE "mode: multi\n", true, "field 'n_answers'", "required for mode multi");
    expect_error(BASE "mode: multi\nn_answers: 1\n", true, "field 'n_answers'", "2 to 19");
    expect_error(BASE "n_answers: 3\n", true, "field 'n_answers'", "mode pair judges 2");
    expect_error(BASE "mode: multi\nn_answers: 3\ninput_format: pandalm\n", true,
                 "field 'n_answers'", "2 answers per record");
    expect_error(BASE "mode: mmvet\nreference: none\n", true, "field 'reference'",
                 "needs a reference");
    expect_error(BASE "input_format: pandalm\nreference: embedded\n", true, "field 'reference'",
                 "no embedded reference");
    expect_error(BASE "reference: file\n", true, "field 'reference_file'", "required");
    expect_error(BASE "reference_file: r.jsonl\n", true, "field 'reference_file'",
                 "only with reference file");
    expect_error(BASE "mode: single\nswap: both\n", true, "field 'swap'", "pair or multi");
    expect_error(BASE "mode: multi\nn_answers: 3\nlabels: l.jsonl\n", true, "field 'labels'",
                 "mode pair");
    expect_error(BASE "metrics_path: m.json\n", true, "field 'metrics_path'", "needs labels");
    expect_error(BASE "fields:\n  question: q\n", true, "field 'fields'", "mapping");
    expect_error(BASE "input_format: mapping\n", true, "field 'fields'", "required");
    expect_error(BASE "input_format: mapping\nfields:\n  answers: [a, b]\n", true,
                 "field 'fields.question'", "required");
    expect_error(BASE "input_format: mapping\nfields:\n  question: q\n  answers: [a]\n", true,
                 "field 'fields.answers'", "needs 2");
    expect_error(BASE "input_format: mapping\nfields:\n  question: q\n  answers: [a, 3]\n", true,
                 "field 'fields.answers[1]'", "string");
    expect_error(BASE "input_format: mapping\nreference: embedded\nfields:\n  question: q\n"
                      "  answers: [a, b]\n",
                 true, "field 'fields.reference'", "required");
    expect_error(BASE "input_format: mapping\nfields:\n  question: q\n  answers: [a, b]\n"
                      "  reference: r\n",
                 true, "field 'fields.reference'", "only with reference embedded");
}

static void test_spec_syntax_errors(void **state)
{
    (void)state;
    expect_error("kind: judge\nmodel: [unclosed\n", true, "bad.yaml:", "invalid YAML");
    expect_error(BASE "model: m2\n", true, "bad.yaml:4:1", "duplicate key 'model'");
    expect_error("kind: judge\nmodel: &m x\ninput: *m\n", true, "bad.yaml:2", "anchors");
    expect_error(BASE "---\nkind: judge\n", true, "bad.yaml:4", "more than one");
    expect_error("", true, "bad.yaml", "empty");
    expect_error("- a\n- b\n", true, "bad.yaml", "mapping of fields");
    expect_error(BASE "seed: !!int 3\n", true, "bad.yaml:4:7", "tag");
    expect_error(BASE "seed: 99999999999999999999\n", true, "bad.yaml:4:7", "out of range");
    expect_error("{\"kind\": \"judge\",, }", false, "bad.json:1:", "invalid JSON");
    expect_error("{\"kind\": \"judge\", \"kind\": \"judge\"}", false,
                 "bad.json:1:", "invalid JSON");
}

static void test_spec_load_detects_syntax(void **state)
{
    (void)state;
    char dir[] = "/tmp/judged-test-spec-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/job.spec", dir);
    FILE *f = fopen(path, "w");
    fputs("  {\"kind\": \"judge\", \"model\": \"m\", \"input\": \"in.jsonl\"}", f);
    fclose(f);
    char errstr[ERRSTR_LEN] = "";
    struct job_spec *s = NULL;
    assert_int_equal(job_spec_load(path, &s, errstr, sizeof(errstr)), 0);
    char want[160];
    snprintf(want, sizeof(want), "%s/in.jsonl", dir);
    assert_string_equal(s->input, want);
    assert_string_equal(s->name, "job");
    job_spec_destroy(s);
    snprintf(path, sizeof(path), "%s/missing.yaml", dir);
    assert_int_equal(job_spec_load(path, &s, errstr, sizeof(errstr)), -ENOENT);
    assert_non_null(strstr(errstr, "missing.yaml"));
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_full_yaml_and_json_agree),
        cmocka_unit_test(test_spec_defaults),
        cmocka_unit_test(test_spec_errors_name_the_field),
        cmocka_unit_test(test_spec_syntax_errors),
        cmocka_unit_test(test_spec_load_detects_syntax),
    };
    return cmocka_run_group_tests_name("job_spec", tests, NULL, NULL);
}
