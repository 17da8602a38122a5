/* job.h - job specs: one schema written as YAML or JSON, validated field by field into plain
 * data. Every error names the spec file and the field path (and, for YAML, line:column); unknown
 * fields are errors. docs/JOB_SPEC.md documents every field. */
#ifndef JOBS_JOB_H
#define JOBS_JOB_H

#include "engine/sampler.h"
#include "jobs/judge.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum job_kind { JOB_KIND_JUDGE = 0 };

/* Record field names for input_format "mapping". Strings owned by the spec. */
struct job_field_map {
    char *question_id; /* NULL: the record's position */
    char *question;
    char *answers[JUDGE_MAX_ANSWERS];
    int n_answers;
    char *reference; /* NULL unless reference is "embedded" */
};

/* A validated spec. Plain data; every string is owned by the spec (paths already resolved
 * against the spec file's directory). Free with job_spec_destroy. */
struct job_spec {
    enum job_kind kind;
    char *spec_path; /* the file it came from ("-" for stdin; "<buffer>" names for buffers) */
    char *name;
    char *model;      /* as written: a directory or a configured model name */
    char *model_path; /* model resolved to an existing directory, or NULL (a name) */
    char *model_id;   /* pred_model_id */
    char *input;
    enum judge_input_format input_format;
    struct job_field_map fields;
    enum judge_mode mode;
    int n_answers; /* pair, single 2; multi 2..19; mmvet 1 */
    enum judge_reference reference;
    char *reference_file; /* reference "file" */
    enum judge_output output;
    enum judge_swap swap;
    struct sampler_params sampling; /* seed unused: each request gets seed + sample index */
    uint64_t seed;
    int32_t max_new_tokens;
    char *labels;       /* NULL: no metrics */
    char *output_path;  /* NULL: the runner decides */
    char *metrics_path; /* NULL: metrics are only printed */
    int64_t shard_size;
    bool deterministic; /* tstamp written as 0.0 */
};

/* Parses and validates a spec held in memory. `name` is the file name used in errors and the
 * directory relative paths resolve against; yaml selects the syntax (JSON otherwise).
 * Returns 0, or -EINVAL with errstr "name[:line:col]: field 'path': what is wrong".
 * Caller owns *out; free with job_spec_destroy. Thread-safe. */
int job_spec_parse_buf(const char *buf, size_t len, const char *name, bool yaml,
                       struct job_spec **out, char *errstr, size_t errstr_len);

/* Reads and parses a spec file: JSON when the name ends in ".json" or the content starts with
 * '{', YAML otherwise. Returns 0, -ENOENT/-EIO, -EINVAL with errstr. Same ownership. */
int job_spec_load(const char *path, struct job_spec **out, char *errstr, size_t errstr_len);

/* No-op on NULL. */
void job_spec_destroy(struct job_spec *spec);

/* The spec as the canonical JSON that daemons receive in shard payloads: every field explicit,
 * model as an absolute directory when it is one here (else the name), no labels or output
 * paths. job_spec_parse_buf gives back an equal spec. Returns a new reference. Thread-safe. */
json_t *job_spec_to_json(const struct job_spec *spec);

#endif
