/* daemon_config.c - judged.yaml (DESIGN.md §8; docs/OPERATIONS.md lists every field): read with
 * libyaml through common/yaml.c, validated field by field, unknown fields refused. */
#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "common/yaml.h"
#include "daemon/daemon.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cfg_ctx {
    const char *name;
    const struct yaml_doc_marks *marks;
    char *errstr;
    size_t errstr_len;
};

static int cfg_err(const struct cfg_ctx *ctx, const char *path, const char *what)
{
    const struct yaml_doc_mark *m = yaml_doc_mark_find(ctx->marks, path);
    if (m) {
        errstr_set(ctx->errstr, ctx->errstr_len, "%s:%d:%d: field '%s': %s", ctx->name, m->line,
                   m->col, path, what);
    } else {
        errstr_set(ctx->errstr, ctx->errstr_len, "%s: field '%s': %s", ctx->name, path, what);
    }
    return -EINVAL;
}

/* Refuses keys of obj outside `known`; prefix is the path of obj ("" at the top). */
static int cfg_keys(const struct cfg_ctx *ctx, const json_t *obj, const char *prefix,
                    const char *const *known)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        bool ok = false;
        for (const char *const *k = known; *k; k++) {
            ok = ok || strcmp(*k, key) == 0;
        }
        if (!ok) {
            char path[256];
            snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", key);
            return cfg_err(ctx, path, "unknown field");
        }
    }
    return 0;
}

/* A section: absent or null gives an empty object. */
static int cfg_section(const struct cfg_ctx *ctx, const json_t *root, const char *key,
                       const char *const *known, const json_t **out)
{
    static json_t *empty;
    if (!empty) {
        empty = json_object();
    }
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = empty;
        return 0;
    }
    if (!json_is_object(v)) {
        return cfg_err(ctx, key, "expected a mapping");
    }
    *out = v;
    return cfg_keys(ctx, v, key, known);
}

static int cfg_str(const struct cfg_ctx *ctx, const json_t *sec, const char *sec_name,
                   const char *key, const char *def, char **out)
{
    const json_t *v = json_object_get(sec, key);
    char path[128];
    snprintf(path, sizeof(path), "%s.%s", sec_name, key);
    if (!v || json_is_null(v)) {
        *out = def ? xstrdup(def) : NULL;
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0) {
        return cfg_err(ctx, path, "expected a non-empty string");
    }
    *out = xstrdup(json_string_value(v));
    return 0;
}

static int cfg_int(const struct cfg_ctx *ctx, const json_t *sec, const char *sec_name,
                   const char *key, int64_t lo, int64_t hi, int64_t def, int64_t *out)
{
    const json_t *v = json_object_get(sec, key);
    char path[128];
    snprintf(path, sizeof(path), "%s.%s", sec_name, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        char what[128];
        snprintf(what, sizeof(what), "expected an integer in [%lld, %lld]", (long long)lo,
                 (long long)hi);
        return cfg_err(ctx, path, what);
    }
    *out = json_integer_value(v);
    return 0;
}

static bool cfg_id_ok(const char *s)
{
    for (; *s; s++) {
        if (*s <= ' ' || *s == 0x7f) {
            return false;
        }
    }
    return true;
}

static int cfg_redis(const struct cfg_ctx *ctx, const json_t *root, struct daemon_config *cfg)
{
    static const char *const known[] = { "url",    "password_file", "namespace",
                                         "family", "timeout_ms",    NULL };
    const json_t *s;
    int64_t t;
    int err;
    if ((err = cfg_section(ctx, root, "redis", known, &s)) ||
        (err = cfg_str(ctx, s, "redis", "url", "redis://127.0.0.1:6379", &cfg->redis_url)) ||
        (err = cfg_str(ctx, s, "redis", "password_file", NULL, &cfg->redis_password_file)) ||
        (err = cfg_str(ctx, s, "redis", "namespace", "gq", &cfg->redis_namespace)) ||
        (err = cfg_str(ctx, s, "redis", "family", "judge", &cfg->redis_family)) ||
        (err = cfg_int(ctx, s, "redis", "timeout_ms", 10, 600000, 5000, &t))) {
        return err;
    }
    cfg->redis_timeout_ms = (int)t;
    return 0;
}

static int cfg_worker(const struct cfg_ctx *ctx, const json_t *root, struct daemon_config *cfg)
{
    static const char *const known[] = {
        "id",         "queues",           "lease_ms",       "heartbeat_ms", "reap_ms",
        "poll_ms",    "max_stalls",       "max_interrupts", "backoff_ms",   "backoff_cap_ms",
        "max_shards", "watermark_tokens", "drain_grace_ms", "schedule_ms",  NULL,
    };
    const json_t *s;
    int err;
    if ((err = cfg_section(ctx, root, "worker", known, &s)) ||
        (err = cfg_str(ctx, s, "worker", "id", NULL, &cfg->worker_id))) {
        return err;
    }
    if (!cfg->worker_id) {
        char host[200] = "host";
        gethostname(host, sizeof(host) - 1);
        char id[256];
        snprintf(id, sizeof(id), "%s-%ld", host, (long)getpid());
        cfg->worker_id = xstrdup(id);
    } else if (!cfg_id_ok(cfg->worker_id) || strlen(cfg->worker_id) > 200) {
        return cfg_err(ctx, "worker.id", "1-200 bytes without spaces");
    }
    const json_t *q = json_object_get(s, "queues");
    if (!q || json_is_null(q)) {
        cfg->queues[cfg->n_queues++] = xstrdup("judge");
    } else if (!json_is_array(q) || json_array_size(q) == 0 || json_array_size(q) > GQ_MAX_QUEUES) {
        return cfg_err(ctx, "worker.queues",
                       "expected a list of 1-16 queue names, in priority "
                       "order");
    } else {
        for (size_t i = 0; i < json_array_size(q); i++) {
            const json_t *v = json_array_get(q, i);
            if (!json_is_string(v) || json_string_length(v) == 0 ||
                !cfg_id_ok(json_string_value(v))) {
                return cfg_err(ctx, "worker.queues",
                               "queue names are non-empty strings without "
                               "spaces");
            }
            cfg->queues[cfg->n_queues++] = xstrdup(json_string_value(v));
        }
    }
    int64_t v;
    if ((err = cfg_int(ctx, s, "worker", "lease_ms", 500, 3600000, 60000, &cfg->lease_ms)) ||
        (err = cfg_int(ctx, s, "worker", "heartbeat_ms", 50, 3600000, cfg->lease_ms / 3,
                       &cfg->heartbeat_ms)) ||
        (err =
             cfg_int(ctx, s, "worker", "reap_ms", 50, 3600000, cfg->lease_ms / 2, &cfg->reap_ms)) ||
        (err = cfg_int(ctx, s, "worker", "poll_ms", 10, 60000, 1000, &cfg->poll_ms)) ||
        (err = cfg_int(ctx, s, "worker", "max_stalls", 0, 1000, 2, &v))) {
        return err;
    }
    cfg->max_stalls = (int)v;
    if (cfg->heartbeat_ms * 2 > cfg->lease_ms) {
        return cfg_err(ctx, "worker.heartbeat_ms", "must be at most half of worker.lease_ms");
    }
    if ((err = cfg_int(ctx, s, "worker", "max_interrupts", 0, 1000, 3, &v))) {
        return err;
    }
    cfg->max_interrupts = (int)v;
    if ((err = cfg_int(ctx, s, "worker", "backoff_ms", 0, 3600000, 1000, &cfg->backoff_base_ms)) ||
        (err = cfg_int(ctx, s, "worker", "backoff_cap_ms", 0, 86400000, 60000,
                       &cfg->backoff_cap_ms)) ||
        (err = cfg_int(ctx, s, "worker", "max_shards", 1, 1024, 8, &v))) {
        return err;
    }
    cfg->max_shards = (int)v;
    if ((err = cfg_int(ctx, s, "worker", "watermark_tokens", 1, INT64_C(1) << 40, 65536,
                       &cfg->watermark_tokens)) ||
        (err = cfg_int(ctx, s, "worker", "drain_grace_ms", 0, 86400000, 30000,
                       &cfg->drain_grace_ms)) ||
        (err = cfg_int(ctx, s, "worker", "schedule_ms", 100, 3600000, 10000, &cfg->schedule_ms))) {
        return err;
    }
    return 0;
}

static int cfg_engine(const struct cfg_ctx *ctx, const json_t *root, struct daemon_config *cfg)
{
    static const char *const known[] = { "devices",          "threads",  "context",    "kv_mib",
                                         "max_batch_tokens", "max_seqs", "max_models", NULL };
    const json_t *s;
    int64_t v[6];
    int err;
    if ((err = cfg_section(ctx, root, "engine", known, &s)) ||
        (err = cfg_str(ctx, s, "engine", "devices", "cpu", &cfg->devices)) ||
        (err = cfg_int(ctx, s, "engine", "threads", 0, 4096, 0, &v[0])) ||
        (err = cfg_int(ctx, s, "engine", "context", 0, 1 << 20, 0, &v[1])) ||
        (err = cfg_int(ctx, s, "engine", "kv_mib", 1, 1 << 24, 1024, &v[2])) ||
        (err = cfg_int(ctx, s, "engine", "max_batch_tokens", 16, 1 << 20, 512, &v[3])) ||
        (err = cfg_int(ctx, s, "engine", "max_seqs", 1, 4096, 64, &v[4])) ||
        (err = cfg_int(ctx, s, "engine", "max_models", 1, 64, 2, &v[5]))) {
        return err;
    }
    if (strncmp(cfg->devices, "cpu", 3) != 0 && strcmp(cfg->devices, "auto") != 0 &&
        strncmp(cfg->devices, "cuda", 4) != 0) {
        return cfg_err(ctx, "engine.devices", "expected cpu, cpu:N, auto, cuda or cuda:N,...");
    }
    cfg->threads = (int)v[0];
    cfg->context = (int32_t)v[1];
    cfg->kv_mib = (int32_t)v[2];
    cfg->max_batch_tokens = (int32_t)v[3];
    cfg->max_seqs = (int32_t)v[4];
    cfg->max_models = (int)v[5];
    return 0;
}

/* models: read by jobs/job_models.c, which judgectl run --config uses too. */
static int cfg_models(const struct cfg_ctx *ctx, const json_t *root, struct daemon_config *cfg)
{
    return job_models_parse(json_object_get(root, "models"), ctx->name, ctx->marks, &cfg->models,
                            ctx->errstr, ctx->errstr_len);
}

int daemon_config_load(const char *path, struct daemon_config *cfg, char *errstr, size_t errstr_len)
{
    memset(cfg, 0, sizeof(*cfg));
    char *buf = NULL;
    size_t len = 0;
    int err = file_read_all(path, &buf, &len, errstr, errstr_len);
    if (err) {
        return err;
    }
    struct yaml_doc_marks marks = { 0 };
    json_t *root = yaml_doc_parse(buf, len, path, &marks, errstr, errstr_len);
    free(buf);
    if (!root) {
        yaml_doc_marks_free(&marks);
        return -EINVAL;
    }
    struct cfg_ctx ctx = { path, &marks, errstr, errstr_len };
    static const char *const known[] = { "redis", "worker",    "engine", "models",
                                         "http",  "log_level", NULL };
    cfg->path = xstrdup(path);
    const json_t *http;
    static const char *const http_known[] = { "listen", NULL };
    if (json_is_null(root)) {
        json_decref(root);
        root = json_object();
    }
    if (!json_is_object(root)) {
        err = cfg_err(&ctx, "", "expected a mapping at the top");
    } else if (!(err = cfg_keys(&ctx, root, "", known)) && !(err = cfg_redis(&ctx, root, cfg)) &&
               !(err = cfg_worker(&ctx, root, cfg)) && !(err = cfg_engine(&ctx, root, cfg)) &&
               !(err = cfg_models(&ctx, root, cfg)) &&
               !(err = cfg_section(&ctx, root, "http", http_known, &http)) &&
               !(err = cfg_str(&ctx, http, "http", "listen", NULL, &cfg->http_listen))) {
        const json_t *lv = json_object_get(root, "log_level");
        enum log_level level;
        if (lv && !json_is_null(lv)) {
            if (!json_is_string(lv) || log_level_parse(json_string_value(lv), &level) != 0) {
                err = cfg_err(&ctx, "log_level", "expected error, warn, info or debug");
            } else {
                cfg->log_level = xstrdup(json_string_value(lv));
            }
        }
        if (!err && cfg->http_listen && !strrchr(cfg->http_listen, ':')) {
            err = cfg_err(&ctx, "http.listen", "expected host:port");
        }
    }
    json_decref(root);
    yaml_doc_marks_free(&marks);
    if (err) {
        daemon_config_free(cfg);
    }
    return err;
}

void daemon_config_free(struct daemon_config *cfg)
{
    free(cfg->path);
    free(cfg->redis_url);
    free(cfg->redis_password_file);
    free(cfg->redis_namespace);
    free(cfg->redis_family);
    free(cfg->worker_id);
    for (int i = 0; i < cfg->n_queues; i++) {
        free(cfg->queues[i]);
    }
    free(cfg->devices);
    job_models_free(&cfg->models);
    free(cfg->http_listen);
    free(cfg->log_level);
    memset(cfg, 0, sizeof(*cfg));
}

const char *daemon_config_model_path(const struct daemon_config *cfg, const char *model)
{
    return job_models_resolve(&cfg->models, model);
}

void daemon_config_reload(struct daemon *d)
{
    struct daemon_config next;
    char errstr[ERRSTR_LEN];
    if (daemon_config_load(d->cfg.path, &next, errstr, sizeof(errstr)) != 0) {
        log_error("SIGHUP: %s; keeping the running configuration", errstr);
        return;
    }
    struct daemon_config *cur = &d->cfg;
    /* what the engine thread alone reads changes now; the rest needs a restart */
    if (next.log_level) {
        enum log_level level;
        log_level_parse(next.log_level, &level);
        log_level_set(level);
    }
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < cur->n_queues; i++) {
        free(cur->queues[i]);
    }
    memcpy(cur->queues, next.queues, sizeof(cur->queues));
    cur->n_queues = next.n_queues;
    next.n_queues = 0;
    pthread_mutex_unlock(&d->mu);
    job_models_free(&cur->models);
    cur->models = next.models;
    memset(&next.models, 0, sizeof(next.models));
    cur->watermark_tokens = next.watermark_tokens;
    cur->poll_ms = next.poll_ms;
    cur->max_models = next.max_models;
    cur->drain_grace_ms = next.drain_grace_ms;
    bool restart = strcmp(cur->redis_url, next.redis_url) != 0 ||
                   strcmp(cur->redis_namespace, next.redis_namespace) != 0 ||
                   strcmp(cur->redis_family, next.redis_family) != 0 ||
                   cur->lease_ms != next.lease_ms || cur->heartbeat_ms != next.heartbeat_ms ||
                   cur->max_shards != next.max_shards || cur->context != next.context ||
                   cur->kv_mib != next.kv_mib || cur->max_batch_tokens != next.max_batch_tokens ||
                   cur->max_seqs != next.max_seqs || cur->threads != next.threads ||
                   strcmp(cur->devices, next.devices) != 0;
    log_info("SIGHUP: configuration reloaded from %s (queues, models, watermark, poll, log "
             "level)%s",
             cur->path,
             restart ? "; changes to redis, lease, shards or engine settings need a restart" : "");
    daemon_config_free(&next);
}
