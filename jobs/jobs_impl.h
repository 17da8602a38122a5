/* jobs_impl.h - internals shared by the files of jobs/: record files (JSONL or a JSON array),
 * Python-style JSON output, and the YAML reader behind job specs. Not for use outside jobs/. */
#ifndef JOBS_JOBS_IMPL_H
#define JOBS_JOBS_IMPL_H

#include "jobs/judge.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* A growing byte string; zero-initialise, release with free(b.data). */
struct jobs_buf {
    char *data; /* NUL-terminated once anything was appended */
    size_t len, cap;
};

void jobs_buf_append(struct jobs_buf *b, const char *s, size_t n);
void jobs_buf_puts(struct jobs_buf *b, const char *s);
void jobs_buf_printf(struct jobs_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* One record of a record file. */
struct jobs_record {
    json_t *obj; /* owned reference; any JSON value (callers check for objects) */
    size_t line; /* 1-based line in a JSONL file; 0 in a JSON array */
};

/* A loaded record file. */
struct jobs_records {
    char *path;
    bool is_array; /* the file is one JSON array; else JSONL (blank lines skipped) */
    struct jobs_record *items;
    size_t n;
};

/* Reads `path`: a JSON array when its first non-blank byte is '[', else JSON Lines. Errors name
 * "path:line:col". Returns 0 or a negative errno with errstr. Free with jobs_records_free. */
int jobs_records_load(const char *path, struct jobs_records *out, char *errstr, size_t errstr_len);

/* The same on `len` bytes held in memory; `path` names them in errors. */
int jobs_records_parse(const char *buf, size_t len, const char *path, struct jobs_records *out,
                       char *errstr, size_t errstr_len);
void jobs_records_free(struct jobs_records *r);

/* "path:line" for JSONL, "path:[i]" for an array element, into buf. Returns buf. */
const char *jobs_record_where(const struct jobs_records *r, size_t i, char *buf, size_t len);

/* Serialises v as Python's json.dumps(v) does with its defaults: ", " and ": " separators,
 * ensure_ascii (lower-case \uXXXX, surrogate pairs), float repr (shortest round trip; integral
 * values end in ".0"). jansson holds no NaN or infinity, so none occur. Caller owns the result
 * (NUL-terminated; free). */
char *jobs_json_dumps_python(const json_t *v, size_t *len);

/* Python's repr(float) for a finite x, into buf (at least 32 bytes). */
void jobs_float_repr(double x, char *buf, size_t len);

/* The result of one judge request. */
struct judge_result {
    bool done;
    bool parse_ok;
    bool has_probs;
    char *pred_text; /* [pred_len] valid UTF-8 */
    size_t pred_len;
    char *error; /* judge_job_complete_error's reason, or NULL */
    double scores[JUDGE_MAX_ANSWERS];
    double expected[JUDGE_MAX_ANSWERS];
    double confidence[JUDGE_MAX_ANSWERS];
    bool available[JUDGE_MAX_ANSWERS];
    double tstamp;
};

struct judge_job {
    const struct job_spec *spec; /* borrowed */
    const struct tok *tok;       /* borrowed; may be NULL */
    struct judge_sample *samples;
    size_t n_samples;
    int n_orders;                   /* 1, or 2 with swap "both" */
    struct judge_request *requests; /* [n_requests]: sample i, order k at i * n_orders + k */
    struct judge_result *results;   /* [n_requests] */
    size_t n_requests;
    struct eval_labels *labels; /* NULL without labels */
};

/* Scores per judgment: n_answers in multi mode, else 2. */
int judge_job_n_scores(const struct judge_job *job);

#endif
