/* job_models.c - the `models:` table of judged.yaml: model names a job spec may use instead of a
 * directory. judged reads it with the rest of its configuration (daemon/daemon_config.c) and
 * judgectl run reads it on its own (--config), so both resolve a spec's model the same way. */
#include "common/util.h"
#include "common/xmalloc.h"
#include "common/yaml.h"
#include "jobs/job.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "file:line:col: field 'path': what", as every judged.yaml error reads. */
static int models_err(const char *config_path, const struct yaml_doc_marks *marks, const char *path,
                      const char *what, char *errstr, size_t errstr_len)
{
    const struct yaml_doc_mark *m = marks ? yaml_doc_mark_find(marks, path) : NULL;
    if (m) {
        errstr_set(errstr, errstr_len, "%s:%d:%d: field '%s': %s", config_path, m->line, m->col,
                   path, what);
    } else {
        errstr_set(errstr, errstr_len, "%s: field '%s': %s", config_path, path, what);
    }
    return -EINVAL;
}

/* The directory of a models entry: relative ones are relative to the configuration's folder. */
static char *models_dir(const char *config_path, const char *dir)
{
    if (dir[0] == '/') {
        return xstrdup(dir);
    }
    char *base = xstrdup(config_path), *slash = strrchr(base, '/');
    char *out = NULL;
    if (slash) {
        *slash = '\0';
        out = path_join(base, dir);
    } else {
        out = xstrdup(dir);
    }
    free(base);
    return out;
}

int job_models_parse(const json_t *models, const char *config_path,
                     const struct yaml_doc_marks *marks, struct job_models *out, char *errstr,
                     size_t errstr_len)
{
    memset(out, 0, sizeof(*out));
    if (!models || json_is_null(models)) {
        return 0;
    }
    if (!json_is_object(models)) {
        return models_err(config_path, marks, "models",
                          "expected a mapping of model name to directory", errstr, errstr_len);
    }
    const char *key;
    const json_t *v;
    int err = 0;
    json_object_foreach((json_t *)models, key, v)
    {
        char path[300];
        snprintf(path, sizeof(path), "models.%s", key);
        if (out->n == JOB_MODELS_MAX) {
            err = models_err(config_path, marks, path, "too many models (at most 64)", errstr,
                             errstr_len);
            break;
        }
        const json_t *p = v;
        if (json_is_object(v)) {
            const char *k;
            const json_t *x;
            json_object_foreach((json_t *)v, k, x)
            {
                if (strcmp(k, "path") != 0 && !err) {
                    char field[600];
                    snprintf(field, sizeof(field), "%s.%s", path, k);
                    err =
                        models_err(config_path, marks, field, "unknown field", errstr, errstr_len);
                }
            }
            p = json_object_get(v, "path");
        }
        if (!err && (!json_is_string(p) || json_string_length(p) == 0)) {
            err = models_err(config_path, marks, path,
                             "expected a model directory (or {path: DIR})", errstr, errstr_len);
        }
        if (err) {
            break;
        }
        out->entries[out->n].name = xstrdup(key);
        out->entries[out->n].path = models_dir(config_path, json_string_value(p));
        out->n++;
    }
    if (err) {
        job_models_free(out);
    }
    return err;
}

int job_models_load(const char *config_path, struct job_models *out, char *errstr,
                    size_t errstr_len)
{
    memset(out, 0, sizeof(*out));
    char *buf = NULL;
    size_t len = 0;
    int err = file_read_all(config_path, &buf, &len, errstr, errstr_len);
    if (err) {
        return err;
    }
    struct yaml_doc_marks marks = { 0 };
    json_t *root = yaml_doc_parse(buf, len, config_path, &marks, errstr, errstr_len);
    free(buf);
    if (!root) {
        err = -EINVAL;
    } else if (!json_is_object(root) && !json_is_null(root)) {
        err = models_err(config_path, &marks, "", "expected a mapping at the top", errstr,
                         errstr_len);
    } else {
        err = job_models_parse(json_object_get(root, "models"), config_path, &marks, out, errstr,
                               errstr_len);
    }
    json_decref(root);
    yaml_doc_marks_free(&marks);
    return err;
}

void job_models_free(struct job_models *m)
{
    for (int i = 0; i < m->n; i++) {
        free(m->entries[i].name);
        free(m->entries[i].path);
    }
    memset(m, 0, sizeof(*m));
}

const char *job_models_resolve(const struct job_models *m, const char *model)
{
    for (int i = 0; i < m->n; i++) {
        if (strcmp(m->entries[i].name, model) == 0) {
            return m->entries[i].path;
        }
    }
    return path_is_dir(model) ? model : NULL;
}
