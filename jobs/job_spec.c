/* job_spec.c - judge job specs from YAML or JSON into one validated struct (see job.h and
 * docs/JOB_SPEC.md). Both syntaxes become jansson values first; validation walks them once,
 * naming each field by its path ("sampling.top_k", "fields.answers[1]") and, for YAML, by the
 * line and column where it was written. */
#include "common/json.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "common/yaml.h"
#include "jobs/job.h"
#include "jobs/jobs_impl.h"

#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define SPEC_DEFAULT_MAX_NEW_TOKENS 2048 /* JudgeLM's --max-new-token default */
#define SPEC_DEFAULT_SHARD_SIZE     64
#define SPEC_MAX_TOKENS             (1 << 20)

struct spec_ctx {
    const char *name;
    const struct yaml_doc_marks *marks; /* NULL for JSON */
    char *dir;                          /* relative paths resolve against it; NULL: cwd */
    char *errstr;
    size_t errstr_len;
};

__attribute__((format(printf, 3, 4))) static int spec_err(const struct spec_ctx *ctx,
                                                          const char *path, const char *fmt, ...)
{
    char what[ERRSTR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    const struct yaml_doc_mark *m = yaml_doc_mark_find(ctx->marks, path);
    if (m) {
        errstr_set(ctx->errstr, ctx->errstr_len, "%s:%d:%d: field '%s': %s", ctx->name, m->line,
                   m->col, path, what);
    } else {
        errstr_set(ctx->errstr, ctx->errstr_len, "%s: field '%s': %s", ctx->name, path, what);
    }
    return -EINVAL;
}

/* "parent.key" (or "key" at the top). Caller frees. */
static char *spec_path(const char *parent, const char *key)
{
    return *parent ? xasprintf("%s.%s", parent, key) : xstrdup(key);
}

/* Every key of obj must be in `known` (NULL-terminated). */
static int spec_check_keys(const struct spec_ctx *ctx, const json_t *obj, const char *parent,
                           const char *const *known)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++) {
            ok = strcmp(*k, key) == 0;
        }
        if (!ok) {
            char *path = spec_path(parent, key);
            int err = spec_err(ctx, path, "unknown field");
            free(path);
            return err;
        }
    }
    return 0;
}

/* An optional non-empty string without NUL bytes. Absent or null: *out unchanged. */
static int spec_string(const struct spec_ctx *ctx, const json_t *obj, const char *key,
                       const char *path, char **out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        return spec_err(ctx, path, "expected a non-empty string");
    }
    free(*out);
    *out = xstrdup(json_string_value(v));
    return 0;
}

static int spec_int(const struct spec_ctx *ctx, const json_t *obj, const char *key,
                    const char *path, int64_t lo, int64_t hi, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_integer(v)) {
        return spec_err(ctx, path, "expected an integer");
    }
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        return spec_err(ctx, path, "%lld is outside [%lld, %lld]", (long long)x, (long long)lo,
                        (long long)hi);
    }
    *out = x;
    return 0;
}

static int spec_number(const struct spec_ctx *ctx, const json_t *obj, const char *key,
                       const char *path, double lo, double hi, bool lo_open, double *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_number(v)) {
        return spec_err(ctx, path, "expected a number");
    }
    double x = json_number_value(v);
    if (x > hi || (lo_open ? x <= lo : x < lo)) {
        return spec_err(ctx, path, "%g is outside %s%g, %g]", x, lo_open ? "(" : "[", lo, hi);
    }
    *out = x;
    return 0;
}

static int spec_bool(const struct spec_ctx *ctx, const json_t *obj, const char *key,
                     const char *path, bool *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_boolean(v)) {
        return spec_err(ctx, path, "expected true or false");
    }
    *out = json_is_true(v);
    return 0;
}

/* An optional name from a fixed set; `names` lists them for the error. present is set when the
 * field was given. */
static int spec_enum(const struct spec_ctx *ctx, const json_t *obj, const char *key,
                     int (*parse)(const char *, int *), const char *names, int *out, bool *present)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v) || parse(json_string_value(v), out) != 0) {
        return spec_err(ctx, key, "expected one of %s", names);
    }
    if (present) {
        *present = true;
    }
    return 0;
}

/* int-typed adapters over the judge_*_parse functions */
static int spec_parse_mode(const char *s, int *out)
{
    enum judge_mode v;
    int err = judge_mode_parse(s, &v);
    *out = (int)v;
    return err;
}

static int spec_parse_format(const char *s, int *out)
{
    enum judge_input_format v;
    int err = judge_input_format_parse(s, &v);
    *out = (int)v;
    return err;
}

static int spec_parse_reference(const char *s, int *out)
{
    enum judge_reference v;
    int err = judge_reference_parse(s, &v);
    *out = (int)v;
    return err;
}

static int spec_parse_output(const char *s, int *out)
{
    enum judge_output v;
    int err = judge_output_parse(s, &v);
    *out = (int)v;
    return err;
}

static int spec_parse_swap(const char *s, int *out)
{
    enum judge_swap v;
    int err = judge_swap_parse(s, &v);
    *out = (int)v;
    return err;
}

static int spec_parse_kind(const char *s, int *out)
{
    if (s && strcmp(s, "judge") == 0) {
        *out = JOB_KIND_JUDGE;
        return 0;
    }
    return -EINVAL;
}

/* sampling: "judgelm" | "greedy" | {temperature, top_k, top_p} (missing keys: JudgeLM's). */
static int spec_sampling(const struct spec_ctx *ctx, const json_t *root, struct job_spec *spec)
{
    json_t *v = json_object_get(root, "sampling");
    sampler_params_judgelm(&spec->sampling, 0);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (json_is_string(v)) {
        if (strcmp(json_string_value(v), "judgelm") == 0) {
            return 0;
        }
        if (strcmp(json_string_value(v), "greedy") == 0) {
            sampler_params_greedy(&spec->sampling);
            return 0;
        }
        return spec_err(ctx, "sampling", "expected judgelm, greedy or {temperature, top_k, top_p}");
    }
    if (!json_is_object(v)) {
        return spec_err(ctx, "sampling", "expected judgelm, greedy or {temperature, top_k, top_p}");
    }
    static const char *const known[] = { "temperature", "top_k", "top_p", NULL };
    double temperature = spec->sampling.temperature, top_p = spec->sampling.top_p;
    int64_t top_k = spec->sampling.top_k;
    int err;
    if ((err = spec_check_keys(ctx, v, "sampling", known)) ||
        (err = spec_number(ctx, v, "temperature", "sampling.temperature", 0, 100, false,
                           &temperature)) ||
        (err = spec_int(ctx, v, "top_k", "sampling.top_k", 0, 1 << 24, &top_k)) ||
        (err = spec_number(ctx, v, "top_p", "sampling.top_p", 0, 1, true, &top_p))) {
        return err;
    }
    spec->sampling.temperature = (float)temperature;
    spec->sampling.top_k = (int32_t)top_k;
    spec->sampling.top_p = (float)top_p;
    return 0;
}

/* fields: the record field names of input_format "mapping". */
static int spec_fields(const struct spec_ctx *ctx, const json_t *root, struct job_spec *spec)
{
    json_t *v = json_object_get(root, "fields");
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_object(v)) {
        return spec_err(ctx, "fields", "expected a mapping of field names");
    }
    static const char *const known[] = { "question_id", "question", "answers", "reference", NULL };
    struct job_field_map *f = &spec->fields;
    int err;
    if ((err = spec_check_keys(ctx, v, "fields", known)) ||
        (err = spec_string(ctx, v, "question_id", "fields.question_id", &f->question_id)) ||
        (err = spec_string(ctx, v, "question", "fields.question", &f->question)) ||
        (err = spec_string(ctx, v, "reference", "fields.reference", &f->reference))) {
        return err;
    }
    json_t *answers = json_object_get(v, "answers");
    if (!answers || json_is_null(answers)) {
        return 0;
    }
    if (!json_is_array(answers) || json_array_size(answers) < 1 ||
        json_array_size(answers) > JUDGE_MAX_ANSWERS) {
        return spec_err(ctx, "fields.answers", "expected a list of 1 to %d field names",
                        JUDGE_MAX_ANSWERS);
    }
    for (size_t i = 0; i < json_array_size(answers); i++) {
        json_t *a = json_array_get(answers, i);
        char path[48];
        snprintf(path, sizeof(path), "fields.answers[%zu]", i);
        if (!json_is_string(a) || json_string_length(a) == 0) {
            return spec_err(ctx, path, "expected a non-empty string");
        }
        f->answers[f->n_answers++] = xstrdup(json_string_value(a));
    }
    return 0;
}

/* A path written in the spec, made relative to the spec file's directory. */
static void spec_resolve(const struct spec_ctx *ctx, char **path)
{
    if (*path && ctx->dir && (*path)[0] != '/' && strcmp(*path, "-") != 0) {
        char *joined = path_join(ctx->dir, *path);
        free(*path);
        *path = joined;
    }
}

/* The last component of a path, trailing slashes ignored. Caller frees. */
static char *spec_basename(const char *path, bool strip_ext)
{
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/') {
        end--;
    }
    size_t start = end;
    while (start > 0 && path[start - 1] != '/') {
        start--;
    }
    char *base = xstrndup(path + start, end - start);
    char *dot = strip_ext ? strrchr(base, '.') : NULL;
    if (dot && dot != base) {
        *dot = '\0';
    }
    return base;
}

/* The rules that tie fields together. */
static int spec_cross_check(const struct spec_ctx *ctx, const json_t *root, struct job_spec *spec,
                            bool has_n_answers, bool has_reference)
{
    enum judge_input_format fmt = spec->input_format;
    enum judge_mode mode = spec->mode;
    struct job_field_map *f = &spec->fields;
    const char *fmt_name = judge_input_format_name(fmt);
    if (json_object_get(root, "fields") && fmt != JUDGE_INPUT_MAPPING) {
        return spec_err(ctx, "fields", "only with input_format mapping");
    }
    if (!has_reference) {
        spec->reference =
            mode == JUDGE_MODE_MMVET ? JUDGE_REFERENCE_EMBEDDED : JUDGE_REFERENCE_NONE;
    }
    /* answers per sample */
    int want = mode == JUDGE_MODE_MMVET ? 1 : 2;
    if (!has_n_answers) {
        if (mode == JUDGE_MODE_MULTI && fmt == JUDGE_INPUT_MAPPING && f->n_answers) {
            spec->n_answers = f->n_answers;
        } else if (mode == JUDGE_MODE_MULTI && fmt == JUDGE_INPUT_JUDGELM) {
            return spec_err(ctx, "n_answers", "required for mode multi (2 to %d)",
                            JUDGE_MAX_ANSWERS);
        } else {
            spec->n_answers = want;
        }
    } else if (mode != JUDGE_MODE_MULTI && spec->n_answers != want) {
        return spec_err(ctx, "n_answers", "mode %s judges %d answer%s", judge_mode_name(mode), want,
                        want == 1 ? "" : "s");
    } else if (mode == JUDGE_MODE_MULTI && spec->n_answers < 2) {
        return spec_err(ctx, "n_answers", "mode multi needs 2 to %d answers", JUDGE_MAX_ANSWERS);
    }
    if ((fmt == JUDGE_INPUT_PANDALM || fmt == JUDGE_INPUT_LLMBAR) && spec->n_answers > 2) {
        return spec_err(ctx, "n_answers", "input_format %s has 2 answers per record", fmt_name);
    }
    if (fmt == JUDGE_INPUT_MAPPING) {
        if (!json_is_object(json_object_get(root, "fields"))) {
            return spec_err(ctx, "fields", "required with input_format mapping");
        }
        if (!f->question) {
            return spec_err(ctx, "fields.question", "required");
        }
        if (f->n_answers != spec->n_answers) {
            return spec_err(ctx, "fields.answers", "needs %d field name%s for mode %s",
                            spec->n_answers, spec->n_answers == 1 ? "" : "s",
                            judge_mode_name(mode));
        }
        if (spec->reference == JUDGE_REFERENCE_EMBEDDED && !f->reference) {
            return spec_err(ctx, "fields.reference", "required with reference embedded");
        }
        if (spec->reference != JUDGE_REFERENCE_EMBEDDED && f->reference) {
            return spec_err(ctx, "fields.reference", "only with reference embedded");
        }
    }
    /* references */
    if (mode == JUDGE_MODE_MMVET && spec->reference == JUDGE_REFERENCE_NONE) {
        return spec_err(ctx, "reference", "mode mmvet needs a reference (embedded or file)");
    }
    if (spec->reference == JUDGE_REFERENCE_EMBEDDED &&
        (fmt == JUDGE_INPUT_PANDALM || fmt == JUDGE_INPUT_LLMBAR)) {
        return spec_err(ctx, "reference", "input_format %s has no embedded reference", fmt_name);
    }
    if (spec->reference == JUDGE_REFERENCE_FILE && !spec->reference_file) {
        return spec_err(ctx, "reference_file", "required with reference file");
    }
    if (spec->reference != JUDGE_REFERENCE_FILE && spec->reference_file) {
        return spec_err(ctx, "reference_file", "only with reference file");
    }
    /* orders and metrics */
    if (spec->swap == JUDGE_SWAP_BOTH && mode != JUDGE_MODE_PAIR && mode != JUDGE_MODE_MULTI) {
        return spec_err(ctx, "swap",
                        "both needs mode pair or multi (mode %s shows the "
                        "reference as Assistant 1)",
                        judge_mode_name(mode));
    }
    if (spec->labels && mode != JUDGE_MODE_PAIR) {
        return spec_err(ctx, "labels", "metrics need mode pair");
    }
    if (spec->metrics_path && !spec->labels) {
        return spec_err(ctx, "metrics_path", "needs labels");
    }
    return 0;
}

static int spec_validate(const struct spec_ctx *ctx, const json_t *root, struct job_spec *spec)
{
    static const char *const known[] = {
        "kind",           "name",   "model",       "model_id",     "input",
        "input_format",   "fields", "mode",        "n_answers",    "reference",
        "reference_file", "output", "swap",        "sampling",     "seed",
        "max_new_tokens", "labels", "output_path", "metrics_path", "shard_size",
        "deterministic",  NULL,
    };
    if (!json_is_object(root)) {
        errstr_set(ctx->errstr, ctx->errstr_len, "%s: expected a mapping of fields", ctx->name);
        return -EINVAL;
    }
    int err, v;
    bool has_kind = false, has_n_answers = false, has_reference = false;
    if ((err = spec_check_keys(ctx, root, "", known)) ||
        (err = spec_enum(ctx, root, "kind", spec_parse_kind, "judge", &v, &has_kind))) {
        return err;
    }
    if (!has_kind) {
        return spec_err(ctx, "kind", "required (judge)");
    }
    spec->kind = (enum job_kind)v;
    int64_t n_answers = 0, seed = 0, max_new = SPEC_DEFAULT_MAX_NEW_TOKENS;
    int64_t shard = SPEC_DEFAULT_SHARD_SIZE;
    int fmt = JUDGE_INPUT_JUDGELM, mode = JUDGE_MODE_PAIR, ref = JUDGE_REFERENCE_NONE;
    int output = JUDGE_OUTPUT_FAST, swap = JUDGE_SWAP_NONE;
    if ((err = spec_string(ctx, root, "name", "name", &spec->name)) ||
        (err = spec_string(ctx, root, "model", "model", &spec->model)) ||
        (err = spec_string(ctx, root, "model_id", "model_id", &spec->model_id)) ||
        (err = spec_string(ctx, root, "input", "input", &spec->input)) ||
        (err = spec_enum(ctx, root, "input_format", spec_parse_format,
                         "judgelm, pandalm, llmbar, mapping", &fmt, NULL)) ||
        (err = spec_fields(ctx, root, spec)) ||
        (err = spec_enum(ctx, root, "mode", spec_parse_mode, "pair, single, multi, mmvet", &mode,
                         NULL)) ||
        (err = spec_int(ctx, root, "n_answers", "n_answers", 1, JUDGE_MAX_ANSWERS, &n_answers)) ||
        (err = spec_enum(ctx, root, "reference", spec_parse_reference, "none, embedded, file", &ref,
                         &has_reference)) ||
        (err = spec_string(ctx, root, "reference_file", "reference_file", &spec->reference_file)) ||
        (err =
             spec_enum(ctx, root, "output", spec_parse_output, "fast, detailed", &output, NULL)) ||
        (err = spec_enum(ctx, root, "swap", spec_parse_swap, "none, both", &swap, NULL)) ||
        (err = spec_sampling(ctx, root, spec)) ||
        (err = spec_int(ctx, root, "seed", "seed", 0, INT64_MAX, &seed)) ||
        (err = spec_int(ctx, root, "max_new_tokens", "max_new_tokens", 1, SPEC_MAX_TOKENS,
                        &max_new)) ||
        (err = spec_string(ctx, root, "labels", "labels", &spec->labels)) ||
        (err = spec_string(ctx, root, "output_path", "output_path", &spec->output_path)) ||
        (err = spec_string(ctx, root, "metrics_path", "metrics_path", &spec->metrics_path)) ||
        (err = spec_int(ctx, root, "shard_size", "shard_size", 1, SPEC_MAX_TOKENS, &shard)) ||
        (err = spec_bool(ctx, root, "deterministic", "deterministic", &spec->deterministic))) {
        return err;
    }
    if (!spec->model) {
        return spec_err(ctx, "model", "required (a model directory or a configured name)");
    }
    if (!spec->input) {
        return spec_err(ctx, "input", "required (a JSONL or JSON file)");
    }
    has_n_answers = json_object_get(root, "n_answers") != NULL &&
                    !json_is_null(json_object_get(root, "n_answers"));
    spec->input_format = (enum judge_input_format)fmt;
    spec->mode = (enum judge_mode)mode;
    spec->n_answers = (int)n_answers;
    spec->reference = (enum judge_reference)ref;
    spec->output = (enum judge_output)output;
    spec->swap = (enum judge_swap)swap;
    spec->seed = (uint64_t)seed;
    spec->sampling.seed = spec->seed;
    spec->max_new_tokens = (int32_t)max_new;
    spec->shard_size = shard;
    if ((err = spec_cross_check(ctx, root, spec, has_n_answers, has_reference)) != 0) {
        return err;
    }
    /* derived values */
    spec_resolve(ctx, &spec->input);
    spec_resolve(ctx, &spec->reference_file);
    spec_resolve(ctx, &spec->labels);
    spec_resolve(ctx, &spec->output_path);
    spec_resolve(ctx, &spec->metrics_path);
    char *model = xstrdup(spec->model);
    spec_resolve(ctx, &model);
    if (path_is_dir(model)) {
        spec->model_path = model;
    } else {
        free(model);
    }
    if (!spec->model_id) {
        spec->model_id = spec_basename(spec->model, false);
    }
    if (!spec->name) {
        spec->name = strcmp(ctx->name, "-") == 0 ? xstrdup("job") : spec_basename(ctx->name, true);
    }
    return 0;
}

int job_spec_parse_buf(const char *buf, size_t len, const char *name, bool yaml,
                       struct job_spec **out, char *errstr, size_t errstr_len)
{
    struct yaml_doc_marks marks = { 0 };
    struct spec_ctx ctx = {
        .name = name, .marks = yaml ? &marks : NULL, .errstr = errstr, .errstr_len = errstr_len
    };
    json_t *root = yaml ? yaml_doc_parse(buf, len, name, &marks, errstr, errstr_len)
                        : json_parse_buf(buf, len, name, errstr, errstr_len);
    if (!root) {
        yaml_doc_marks_free(&marks);
        return -EINVAL;
    }
    if (strchr(name, '/') && strcmp(name, "-") != 0) {
        char *copy = xstrdup(name);
        ctx.dir = xstrdup(dirname(copy));
        free(copy);
    }
    struct job_spec *spec = xcalloc(1, sizeof(*spec));
    spec->spec_path = xstrdup(name);
    int err = spec_validate(&ctx, root, spec);
    json_decref(root);
    yaml_doc_marks_free(&marks);
    free(ctx.dir);
    if (err) {
        job_spec_destroy(spec);
        return err;
    }
    *out = spec;
    return 0;
}

int job_spec_load(const char *path, struct job_spec **out, char *errstr, size_t errstr_len)
{
    char *buf;
    size_t len;
    int err = file_read_all(path, &buf, &len, errstr, errstr_len);
    if (err) {
        return err;
    }
    size_t n = strlen(path), p = 0;
    while (p < len && (buf[p] == ' ' || buf[p] == '\t' || buf[p] == '\r' || buf[p] == '\n')) {
        p++;
    }
    bool json = (n >= 5 && strcmp(path + n - 5, ".json") == 0) || (p < len && buf[p] == '{');
    err = job_spec_parse_buf(buf, len, path, !json, out, errstr, errstr_len);
    free(buf);
    return err;
}

void job_spec_destroy(struct job_spec *spec)
{
    if (!spec) {
        return;
    }
    free(spec->spec_path);
    free(spec->name);
    free(spec->model);
    free(spec->model_path);
    free(spec->model_id);
    free(spec->input);
    free(spec->fields.question_id);
    free(spec->fields.question);
    for (int i = 0; i < spec->fields.n_answers; i++) {
        free(spec->fields.answers[i]);
    }
    free(spec->fields.reference);
    free(spec->reference_file);
    free(spec->labels);
    free(spec->output_path);
    free(spec->metrics_path);
    free(spec);
}
