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

/* ---- model names: the `models:` table of judged.yaml (job_models.c) ---------------------------
 */

#define JOB_MODELS_MAX 64

struct job_model_entry {
    char *name;
    char *path; /* absolute, or relative to the working directory */
};

/* Model names a spec's `model` field may use, and their directories. Plain data owned by the
 * struct; zero-initialize, free with job_models_free. */
struct job_models {
    struct job_model_entry entries[JOB_MODELS_MAX];
    int n;
};

struct yaml_doc_marks;

/* Fills out from the value of `models:` in a configuration read with yaml_doc_parse (NULL or
 * null: no models): each name maps to a directory or to {path: DIR}; a relative directory is
 * taken relative to config_path's folder. Errors read "config_path:line:col: field 'models.x':
 * ..." (marks may be NULL). Returns 0, or -EINVAL with errstr and out empty. Thread-safe. */
int job_models_parse(const json_t *models, const char *config_path,
                     const struct yaml_doc_marks *marks, struct job_models *out, char *errstr,
                     size_t errstr_len);

/* Reads the `models:` section of a judged configuration file with job_models_parse; the other
 * sections are not looked at. Returns 0, -ENOENT/-EIO (unreadable) or -EINVAL with errstr. */
int job_models_load(const char *config_path, struct job_models *out, char *errstr,
                    size_t errstr_len);

/* Frees the entries; m is empty afterwards. */
void job_models_free(struct job_models *m);

/* The model directory for a spec's model field: a configured name, else the field itself when it
 * is a directory. NULL when neither. Borrowed from m or model. */
const char *job_models_resolve(const struct job_models *m, const char *model);

#endif
