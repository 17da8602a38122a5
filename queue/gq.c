/* gq.c - the hiredis client of the gq_v1 functions library (see gq.h, docs/PROTOCOL.md). */
#include "queue/gq.h"

#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>

/* queue/gq_v1.lua, embedded by the Makefile (build/<variant>/gen/gq_lua.c). */
extern const char gq_lua_source[];

#define GQ_PREFIX_MAX 128
#define GQ_PIPELINE   256 /* calls in flight per pipelined batch */

struct gq {
    redisContext *c;
    char *host; /* NULL for a unix socket */
    char *path; /* unix socket path */
    int port;
    int db;
    char *user;     /* NULL: AUTH with the password alone */
    char *password; /* NULL: no AUTH */
    int timeout_ms;
    char prefix[GQ_PREFIX_MAX];
    char seq_key[GQ_PREFIX_MAX + 8];
    char errstr[ERRSTR_LEN];
};

void gq_config_default(struct gq_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->url = "redis://127.0.0.1:6379";
    cfg->ns = "gq";
    cfg->family = "judge";
    cfg->timeout_ms = 5000;
}

const char *gq_prefix(const struct gq *g)
{
    return g->prefix;
}

const char *gq_errstr(const struct gq *g)
{
    return g->errstr[0] ? g->errstr : "no error";
}

static bool gq_name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 40) {
        return false;
    }
    for (; *s; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-' || *s == '.')) {
            return false;
        }
    }
    return true;
}

/* Parses redis://[[user]:password@]host[:port][/db] or unix:///path into g. */
static int gq_url_parse(struct gq *g, const char *url, char *errstr, size_t errstr_len)
{
    if (strncmp(url, "unix://", 7) == 0) {
        if (url[7] != '/') {
            errstr_set(errstr, errstr_len, "redis url '%s': unix:// needs an absolute path", url);
            return -EINVAL;
        }
        g->path = xstrdup(url + 7);
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        errstr_set(errstr, errstr_len,
                   "redis url '%s': expected redis://[[user]:password@]host[:port][/db] or "
                   "unix:///path",
                   url);
        return -EINVAL;
    }
    const char *p = url + 8;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon) {
            errstr_set(errstr, errstr_len, "redis url '%s': credentials must be [user]:password",
                       url);
            return -EINVAL;
        }
        if (colon > p) {
            g->user = xstrndup(p, (size_t)(colon - p));
        }
        g->password = xstrndup(colon + 1, (size_t)(at - colon - 1));
        p = at + 1;
    }
    size_t hl = strcspn(p, ":/");
    if (hl == 0) {
        errstr_set(errstr, errstr_len, "redis url '%s': no host", url);
        return -EINVAL;
    }
    g->host = xstrndup(p, hl);
    p += hl;
    g->port = 6379;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535) {
            errstr_set(errstr, errstr_len, "redis url '%s': bad port", url);
            return -EINVAL;
        }
        g->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        char *end;
        long db = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || db < 0 || db > 1000000) {
            errstr_set(errstr, errstr_len, "redis url '%s': bad database number", url);
            return -EINVAL;
        }
        g->db = (int)db;
    } else if (*p && strcmp(p, "/") != 0) {
        errstr_set(errstr, errstr_len, "redis url '%s': unexpected '%s'", url, p);
        return -EINVAL;
    }
    return 0;
}

static int gq_password_file(struct gq *g, const char *path, char *errstr, size_t errstr_len)
{
    char *text = NULL;
    size_t len = 0;
    int err = file_read_all(path, &text, &len, errstr, errstr_len);
    if (err) {
        return err;
    }
    size_t n = strcspn(text, "\r\n");
    free(g->password);
    g->password = xstrndup(text, n);
    free(text);
    return 0;
}

void gq_reply_free(struct gq_reply *r)
{
    if (!r) {
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        free(r->str[i]);
    }
    free(r->str);
    free(r->len);
    memset(r, 0, sizeof(*r));
}

static void gq_reply_push(struct gq_reply *out, const char *s, size_t len)
{
    out->str = xrealloc(out->str, (out->n + 1) * sizeof(*out->str));
    out->len = xrealloc(out->len, (out->n + 1) * sizeof(*out->len));
    char *copy = xmalloc(len + 1);
    memcpy(copy, s, len);
    copy[len] = '\0';
    out->str[out->n] = copy;
    out->len[out->n] = len;
    out->n++;
}

/* Flattens a hiredis reply into out. */
static void gq_reply_flatten(const redisReply *r, struct gq_reply *out)
{
    char num[32];
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        gq_reply_push(out, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        snprintf(num, sizeof(num), "%lld", r->integer);
        gq_reply_push(out, num, strlen(num));
        break;
    case REDIS_REPLY_NIL:
        gq_reply_push(out, "", 0);
        break;
    case REDIS_REPLY_ARRAY:
        for (size_t i = 0; i < r->elements; i++) {
            gq_reply_flatten(r->element[i], out);
        }
        break;
    default:
        break;
    }
}

/* Takes a reply from hiredis; converts transport failures and error replies. */
static int gq_reply_take(struct gq *g, redisReply *r, struct gq_reply *out)
{
    if (!r) {
        errstr_set(g->errstr, sizeof(g->errstr), "redis: %s",
                   g->c && g->c->errstr[0] ? g->c->errstr : "connection lost");
        return -EIO;
    }
    int err = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        errstr_set(g->errstr, sizeof(g->errstr), "%.*s", (int)r->len, r->str);
        /* out of memory, loading, busy scripts and failovers are transient */
        err = (strncmp(r->str, "OOM", 3) == 0 || strncmp(r->str, "LOADING", 7) == 0 ||
               strncmp(r->str, "BUSY", 4) == 0 || strncmp(r->str, "READONLY", 8) == 0 ||
               strncmp(r->str, "MASTERDOWN", 10) == 0 || strncmp(r->str, "TRYAGAIN", 8) == 0)
                  ? -EIO
                  : -EPROTO;
    } else if (out) {
        memset(out, 0, sizeof(*out));
        gq_reply_flatten(r, out);
    }
    freeReplyObject(r);
    return err;
}

int gq_command(struct gq *g, size_t argc, const char *const *argv, const size_t *lens,
               struct gq_reply *out)
{
    if (!g->c) {
        errstr_set(g->errstr, sizeof(g->errstr), "redis: not connected");
        return -EIO;
    }
    redisReply *r = redisCommandArgv(g->c, (int)argc, (const char **)argv, lens);
    return gq_reply_take(g, r, out);
}

/* Fills the first 5 words of an FCALL: FCALL fn 1 <prefix>seq <prefix>. */
static void gq_fcall_head(const struct gq *g, const char *fn, const char **av, size_t *al)
{
    av[0] = "FCALL";
    av[1] = fn;
    av[2] = "1";
    av[3] = g->seq_key;
    av[4] = g->prefix;
    for (size_t i = 0; i < 5; i++) {
        al[i] = strlen(av[i]);
    }
}

int gq_fcall(struct gq *g, const char *fn, size_t argc, const char *const *argv, const size_t *lens,
             struct gq_reply *out)
{
    size_t n = argc + 5;
    const char **av = xmalloc(n * sizeof(*av));
    size_t *al = xmalloc(n * sizeof(*al));
    gq_fcall_head(g, fn, av, al);
    for (size_t i = 0; i < argc; i++) {
        av[5 + i] = argv[i];
        al[5 + i] = lens ? lens[i] : strlen(argv[i]);
    }
    int err = gq_command(g, n, av, al, out);
    free(av);
    free(al);
    return err;
}

int gq_fcall_pipeline(struct gq *g, const char *fn, size_t n, size_t argc, const char *const *argv,
                      const size_t *lens, char **status)
{
    if (!g->c) {
        errstr_set(g->errstr, sizeof(g->errstr), "redis: not connected");
        return -EIO;
    }
    size_t na = argc + 5;
    const char **av = xmalloc(na * sizeof(*av));
    size_t *al = xmalloc(na * sizeof(*al));
    gq_fcall_head(g, fn, av, al);
    int err = 0, first_err = 0;
    for (size_t i = 0; i < n; i++) {
        status[i] = NULL;
    }
    for (size_t base = 0; base < n && !err; base += GQ_PIPELINE) {
        size_t m = n - base < GQ_PIPELINE ? n - base : GQ_PIPELINE;
        for (size_t k = 0; k < m && !err; k++) {
            for (size_t a = 0; a < argc; a++) {
                av[5 + a] = argv[(base + k) * argc + a];
                al[5 + a] = lens ? lens[(base + k) * argc + a] : strlen(av[5 + a]);
            }
            if (redisAppendCommandArgv(g->c, (int)na, av, al) != REDIS_OK) {
                err = -EIO;
            }
        }
        for (size_t k = 0; k < m && !err; k++) {
            void *rv = NULL;
            if (redisGetReply(g->c, &rv) != REDIS_OK) {
                err = -EIO;
                break;
            }
            struct gq_reply rep = { 0 };
            char saved[ERRSTR_LEN];
            snprintf(saved, sizeof(saved), "%s", g->errstr);
            int rerr = gq_reply_take(g, rv, &rep);
            if (rerr) {
                if (!first_err) {
                    first_err = rerr;
                } else {
                    snprintf(g->errstr, sizeof(g->errstr), "%s", saved); /* keep the first */
                }
                continue;
            }
            status[base + k] = xstrdup(rep.n > 0 ? rep.str[0] : "");
            gq_reply_free(&rep);
        }
    }
    if (err) {
        errstr_set(g->errstr, sizeof(g->errstr), "redis: %s", g->c->errstr);
    }
    free(av);
    free(al);
    return err ? err : first_err;
}

/* Loads the library unless Redis has it. */
static int gq_library_ensure(struct gq *g)
{
    const char *list[] = { "FUNCTION", "LIST", "LIBRARYNAME", GQ_LIBRARY };
    struct gq_reply rep = { 0 };
    int err = gq_command(g, 4, list, NULL, &rep);
    if (err) {
        if (err == -EPROTO) {
            errstr_set(g->errstr, sizeof(g->errstr),
                       "redis: FUNCTION LIST failed (%s); judged needs Redis 7 or newer",
                       gq_errstr(g));
        }
        return err;
    }
    bool have = false;
    for (size_t i = 0; i + 1 < rep.n; i++) {
        if (strcmp(rep.str[i], "library_name") == 0 && strcmp(rep.str[i + 1], GQ_LIBRARY) == 0) {
            have = true;
        }
    }
    gq_reply_free(&rep);
    if (have) {
        return 0;
    }
    const char *load[] = { "FUNCTION", "LOAD", gq_lua_source };
    err = gq_command(g, 3, load, NULL, NULL);
    if (err == -EPROTO && strstr(g->errstr, "already exists")) {
        return 0; /* another client loaded it meanwhile */
    }
    if (err == 0) {
        log_info("redis: loaded the %s functions library", GQ_LIBRARY);
    }
    return err;
}

static int gq_open(struct gq *g)
{
    struct timeval tv = { .tv_sec = g->timeout_ms / 1000,
                          .tv_usec = (g->timeout_ms % 1000) * 1000 };
    if (g->c) {
        redisFree(g->c);
        g->c = NULL;
    }
    redisContext *c = g->path ? redisConnectUnixWithTimeout(g->path, tv)
                              : redisConnectWithTimeout(g->host, g->port, tv);
    if (!c || c->err) {
        errstr_set(g->errstr, sizeof(g->errstr), "redis %s:%d: %s", g->path ? g->path : g->host,
                   g->path ? 0 : g->port, c ? c->errstr : "cannot allocate a context");
        if (c) {
            redisFree(c);
        }
        return -EIO;
    }
    g->c = c;
    redisSetTimeout(c, tv);
    if (!g->path) {
        redisEnableKeepAlive(c);
    }
    int err = 0;
    if (g->password) {
        const char *auth_user[] = { "AUTH", g->user ? g->user : "", g->password };
        const char *auth[] = { "AUTH", g->password };
        err =
            g->user ? gq_command(g, 3, auth_user, NULL, NULL) : gq_command(g, 2, auth, NULL, NULL);
        if (err == -EPROTO) {
            err = -EIO;
        }
    }
    if (!err && g->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", g->db);
        const char *sel[] = { "SELECT", db };
        err = gq_command(g, 2, sel, NULL, NULL);
    }
    if (!err) {
        err = gq_library_ensure(g);
    }
    if (err) {
        redisFree(g->c);
        g->c = NULL;
    }
    return err;
}

int gq_connect(const struct gq_config *cfg, struct gq **out, char *errstr, size_t errstr_len)
{
    struct gq *g = xcalloc(1, sizeof(*g));
    int err;
    g->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 5000;
    const char *ns = cfg->ns ? cfg->ns : "gq";
    const char *family = cfg->family ? cfg->family : "judge";
    if (!gq_name_ok(ns) || !gq_name_ok(family)) {
        errstr_set(errstr, errstr_len, "redis namespace '%s' / family '%s': 1-40 of [A-Za-z0-9_.-]",
                   ns, family);
        err = -EINVAL;
        goto fail;
    }
    snprintf(g->prefix, sizeof(g->prefix), "%s:{%s}:", ns, family);
    snprintf(g->seq_key, sizeof(g->seq_key), "%sseq", g->prefix);
    if ((err = gq_url_parse(g, cfg->url ? cfg->url : "redis://127.0.0.1:6379", errstr,
                            errstr_len)) != 0) {
        goto fail;
    }
    if (cfg->password_file &&
        (err = gq_password_file(g, cfg->password_file, errstr, errstr_len)) != 0) {
        goto fail;
    }
    if ((err = gq_open(g)) != 0) {
        errstr_set(errstr, errstr_len, "%s", g->errstr);
        goto fail;
    }
    *out = g;
    return 0;
fail:
    gq_destroy(g);
    return err;
}

void gq_destroy(struct gq *g)
{
    if (!g) {
        return;
    }
    if (g->c) {
        redisFree(g->c);
    }
    free(g->host);
    free(g->path);
    free(g->user);
    free(g->password);
    free(g);
}

int gq_reconnect(struct gq *g)
{
    return gq_open(g);
}

void gq_token_new(char out[GQ_TOKEN_LEN + 1])
{
    unsigned char raw[GQ_TOKEN_LEN / 2];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n > 0) {
            got += (size_t)n;
        }
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(raw); i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[GQ_TOKEN_LEN] = '\0';
}

int64_t gq_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms)
{
    int64_t ceiling = base_ms;
    for (int i = 0; i < attempt && ceiling < cap_ms; i++) {
        ceiling *= 2;
    }
    if (ceiling > cap_ms) {
        ceiling = cap_ms;
    }
    uint64_t r = 0;
    while (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
    }
    return ceiling > 0 ? (int64_t)(r % (uint64_t)(ceiling + 1)) : 0;
}

/* ---- typed calls ----------------------------------------------------------------------------- */

static const char *const gq_status_names[] = {
    [GQ_OK] = "ok",       [GQ_DUP] = "dup",   [GQ_LOST] = "lost",       [GQ_CLOSED] = "closed",
    [GQ_RETRY] = "retry", [GQ_DEAD] = "dead", [GQ_REFUSED] = "refused",
};

const char *gq_status_name(enum gq_status s)
{
    return (size_t)s < sizeof(gq_status_names) / sizeof(gq_status_names[0]) ? gq_status_names[s]
                                                                            : "?";
}

static int gq_status_parse(struct gq *g, const struct gq_reply *rep, enum gq_status *out)
{
    if (rep->n > 0) {
        for (size_t i = 0; i < sizeof(gq_status_names) / sizeof(gq_status_names[0]); i++) {
            if (strcmp(rep->str[0], gq_status_names[i]) == 0) {
                *out = (enum gq_status)i;
                return 0;
            }
        }
    }
    errstr_set(g->errstr, sizeof(g->errstr), "redis: unexpected reply '%s'",
               rep->n > 0 ? rep->str[0] : "(empty)");
    return -EPROTO;
}

/* One FCALL whose reply starts with a status word. */
static int gq_call_status(struct gq *g, const char *fn, size_t argc, const char *const *argv,
                          const size_t *lens, enum gq_status *status, struct gq_reply *keep)
{
    struct gq_reply rep = { 0 };
    int err = gq_fcall(g, fn, argc, argv, lens, &rep);
    if (!err) {
        err = gq_status_parse(g, &rep, status);
    }
    if (keep && !err) {
        *keep = rep;
    } else {
        gq_reply_free(&rep);
    }
    return err;
}

static void gq_i64(char *buf, size_t len, int64_t v)
{
    snprintf(buf, len, "%" PRId64, v);
}

/* The 9 arguments of gq_enqueue, into argv/lens (nums holds the numbers' text). */
static void gq_enqueue_args(const struct gq_job_new *j, char nums[5][24], const char **argv,
                            size_t *lens)
{
    gq_i64(nums[0], 24, j->prio);
    gq_i64(nums[1], 24, j->delay_ms);
    gq_i64(nums[2], 24, j->max_attempts);
    gq_i64(nums[3], 24, j->run_budget_ms);
    gq_i64(nums[4], 24, j->shard);
    const char *sweep = j->sweep ? j->sweep : "";
    const char *v[9] = { j->jid,     j->queue, nums[0],
                         nums[1],    nums[2],  nums[3],
                         j->payload, sweep,    *sweep ? nums[4] : "" };
    for (int i = 0; i < 9; i++) {
        argv[i] = v[i];
        lens[i] = i == 6 ? j->payload_len : strlen(v[i]);
    }
}

int gq_enqueue(struct gq *g, const struct gq_job_new *job, enum gq_status *status)
{
    char nums[5][24];
    const char *argv[9];
    size_t lens[9];
    gq_enqueue_args(job, nums, argv, lens);
    return gq_call_status(g, "gq_enqueue", 9, argv, lens, status, NULL);
}

int gq_enqueue_many(struct gq *g, const struct gq_job_new *jobs, size_t n, size_t *n_dup)
{
    const char **argv = xmalloc(n * 9 * sizeof(*argv));
    size_t *lens = xmalloc(n * 9 * sizeof(*lens));
    char(*nums)[5][24] = xmalloc(n * sizeof(*nums));
    char **status = xcalloc(n ? n : 1, sizeof(*status));
    for (size_t i = 0; i < n; i++) {
        gq_enqueue_args(&jobs[i], nums[i], argv + i * 9, lens + i * 9);
    }
    int err = gq_fcall_pipeline(g, "gq_enqueue", n, 9, argv, lens, status);
    size_t dups = 0;
    for (size_t i = 0; i < n && !err; i++) {
        if (status[i] && strcmp(status[i], "dup") == 0) {
            dups++;
        } else if (!status[i] || strcmp(status[i], "ok") != 0) {
            errstr_set(g->errstr, sizeof(g->errstr), "enqueue %s: %s", jobs[i].jid,
                       status[i] ? status[i] : "no reply");
            err = -EPROTO;
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(status[i]);
    }
    free(status);
    free(nums);
    free(lens);
    free(argv);
    if (n_dup) {
        *n_dup = dups;
    }
    return err;
}

int gq_sweep_create_opts(struct gq *g, const struct gq_sweep_new *s, enum gq_status *status)
{
    char e[24], p[24], r[24];
    gq_i64(e, sizeof(e), s->expected);
    gq_i64(p, sizeof(p), s->agg_prio);
    gq_i64(r, sizeof(r), s->retention_ms);
    const char *argv[] = { s->sid,
                           e,
                           s->agg_queue ? s->agg_queue : "",
                           p,
                           s->meta ? s->meta : "",
                           s->labels ? s->labels : "",
                           r };
    size_t lens[] = { strlen(s->sid), strlen(e),       strlen(argv[2]),
                      strlen(p),      strlen(argv[4]), s->labels ? s->labels_len : 0,
                      strlen(r) };
    /* the retention is an optional trailing argument: leave it out when there is none, so that
     * the call is the same as before it existed */
    size_t argc = s->retention_ms > 0 ? 7 : 6;
    return gq_call_status(g, "gq_sweep_create", argc, argv, lens, status, NULL);
}

int gq_sweep_create(struct gq *g, const char *sid, int64_t expected, const char *agg_queue,
                    int agg_prio, const char *meta, const char *labels, size_t labels_len,
                    enum gq_status *status)
{
    const struct gq_sweep_new s = {
        .sid = sid,
        .expected = expected,
        .agg_queue = agg_queue,
        .agg_prio = agg_prio,
        .meta = meta,
        .labels = labels,
        .labels_len = labels_len,
    };
    return gq_sweep_create_opts(g, &s, status);
}

int gq_sweep_purge(struct gq *g, const char *sid, bool force, enum gq_status *status,
                   int64_t *n_jobs, char state[16])
{
    const char *argv[] = { sid, force ? "1" : "0" };
    struct gq_reply rep = { 0 };
    int err = gq_call_status(g, "gq_sweep_purge", 2, argv, NULL, status, &rep);
    if (err) {
        return err;
    }
    if (n_jobs) {
        *n_jobs = *status == GQ_OK && rep.n > 1 ? strtoll(rep.str[1], NULL, 10) : 0;
    }
    if (state) {
        snprintf(state, 16, "%s", *status == GQ_REFUSED && rep.n > 1 ? rep.str[1] : "");
    }
    gq_reply_free(&rep);
    return 0;
}

int gq_sweep_seal(struct gq *g, const char *sid, enum gq_status *status, bool *fanin)
{
    const char *argv[] = { sid };
    struct gq_reply rep = { 0 };
    int err = gq_call_status(g, "gq_sweep_seal", 1, argv, NULL, status, &rep);
    if (!err) {
        *fanin = rep.n > 1 && strcmp(rep.str[1], "fanin") == 0;
        gq_reply_free(&rep);
    }
    return err;
}

void gq_claimed_free(struct gq_claimed *c)
{
    if (!c) {
        return;
    }
    free(c->jid);
    free(c->payload);
    free(c->checkpoint);
    free(c->queue);
    free(c->sweep);
    memset(c, 0, sizeof(*c));
}

/* Fills c from a 7-element claim reply (taking its strings). */
static int gq_claimed_take(struct gq *g, struct gq_reply *rep, struct gq_claimed *c, bool *got)
{
    if (rep->n == 0) {
        return 0;
    }
    if (rep->n != 7) {
        errstr_set(g->errstr, sizeof(g->errstr), "claim: reply of %zu elements", rep->n);
        gq_reply_free(rep);
        return -EPROTO;
    }
    c->jid = rep->str[0];
    c->payload = rep->str[1];
    c->payload_len = rep->len[1];
    c->attempts = atoi(rep->str[2]);
    c->checkpoint = rep->str[3];
    c->checkpoint_len = rep->len[3];
    c->queue = rep->str[4];
    c->sweep = rep->str[5];
    c->shard = rep->len[6] ? strtoll(rep->str[6], NULL, 10) : -1;
    free(rep->str[2]);
    free(rep->str[6]);
    free(rep->str);
    free(rep->len);
    memset(rep, 0, sizeof(*rep));
    *got = true;
    return 0;
}

int gq_adopt(struct gq *g, const char *token, struct gq_claimed *c, bool *got)
{
    memset(c, 0, sizeof(*c));
    *got = false;
    snprintf(c->token, sizeof(c->token), "%s", token);
    const char *argv[] = { token };
    struct gq_reply rep = { 0 };
    int err = gq_fcall(g, "gq_adopt", 1, argv, NULL, &rep);
    return err ? err : gq_claimed_take(g, &rep, c, got);
}

int gq_claim(struct gq *g, const char *wid, int64_t lease_ms, const char *const *queues,
             size_t n_queues, struct gq_claimed *c, bool *got)
{
    memset(c, 0, sizeof(*c));
    *got = false;
    gq_token_new(c->token);
    if (n_queues == 0 || n_queues > GQ_MAX_QUEUES) {
        errstr_set(g->errstr, sizeof(g->errstr), "claim: 1..%d queues", GQ_MAX_QUEUES);
        return -EINVAL;
    }
    char lease[24];
    gq_i64(lease, sizeof(lease), lease_ms);
    const char *argv[3 + GQ_MAX_QUEUES] = { wid, c->token, lease };
    for (size_t i = 0; i < n_queues; i++) {
        argv[3 + i] = queues[i];
    }
    struct gq_reply rep = { 0 };
    int err = gq_fcall(g, "gq_claim", 3 + n_queues, argv, NULL, &rep);
    return err ? err : gq_claimed_take(g, &rep, c, got);
}

int gq_heartbeat(struct gq *g, const char *jid, const char *token, int64_t lease_ms,
                 const char *progress, const char *checkpoint, size_t checkpoint_len,
                 enum gq_status *status, char cancel[16])
{
    char lease[24];
    gq_i64(lease, sizeof(lease), lease_ms);
    const char *argv[] = { jid, token, lease, progress ? progress : "",
                           checkpoint ? checkpoint : "" };
    size_t lens[] = { strlen(jid), strlen(token), strlen(lease), strlen(argv[3]),
                      checkpoint ? checkpoint_len : 0 };
    struct gq_reply rep = { 0 };
    int err = gq_call_status(g, "gq_heartbeat", 5, argv, lens, status, &rep);
    cancel[0] = '\0';
    if (!err) {
        if (*status == GQ_OK && rep.n > 1) {
            snprintf(cancel, 16, "%s", rep.str[1]);
        }
        gq_reply_free(&rep);
    }
    return err;
}

int gq_complete(struct gq *g, const char *jid, const char *token, const char *result,
                size_t result_len, enum gq_status *status)
{
    const char *argv[] = { jid, token, result };
    size_t lens[] = { strlen(jid), strlen(token), result_len };
    return gq_call_status(g, "gq_complete", 3, argv, lens, status, NULL);
}

int gq_fail(struct gq *g, const char *jid, const char *token, const char *error, bool retryable,
            int64_t backoff_ms, enum gq_status *status)
{
    char b[24];
    gq_i64(b, sizeof(b), backoff_ms);
    const char *argv[] = { jid, token, error, retryable ? "1" : "0", b };
    return gq_call_status(g, "gq_fail", 5, argv, NULL, status, NULL);
}

int gq_release(struct gq *g, const char *jid, const char *token, const char *checkpoint,
               size_t checkpoint_len, int max_interrupts, enum gq_status *status)
{
    char m[24];
    gq_i64(m, sizeof(m), max_interrupts);
    const char *argv[] = { jid, token, checkpoint ? checkpoint : "", m };
    size_t lens[] = { strlen(jid), strlen(token), checkpoint ? checkpoint_len : 0, strlen(m) };
    return gq_call_status(g, "gq_release", 4, argv, lens, status, NULL);
}

int gq_cancelled(struct gq *g, const char *jid, const char *token, enum gq_status *status)
{
    const char *argv[] = { jid, token };
    return gq_call_status(g, "gq_cancelled", 2, argv, NULL, status, NULL);
}

int gq_reap(struct gq *g, int limit, int max_stalls, int64_t backoff_ms, int *n_reaped)
{
    char l[24], m[24], b[24];
    gq_i64(l, sizeof(l), limit);
    gq_i64(m, sizeof(m), max_stalls);
    gq_i64(b, sizeof(b), backoff_ms);
    const char *argv[] = { l, m, b };
    struct gq_reply rep = { 0 };
    enum gq_status st;
    int err = gq_call_status(g, "gq_reap", 3, argv, NULL, &st, &rep);
    if (!err) {
        if (n_reaped) {
            *n_reaped = rep.n > 1 ? atoi(rep.str[1]) : 0;
        }
        gq_reply_free(&rep);
    }
    return err;
}

int gq_token_lookup(struct gq *g, const char *token, char **jid)
{
    const char *argv[] = { token };
    struct gq_reply rep = { 0 };
    int err = gq_fcall(g, "gq_token_lookup", 1, argv, NULL, &rep);
    if (!err) {
        *jid = xstrdup(rep.n > 0 ? rep.str[0] : "");
        gq_reply_free(&rep);
    }
    return err;
}

int gq_worker_register(struct gq *g, const char *wid, const char *info, int64_t ttl_ms)
{
    char t[24];
    gq_i64(t, sizeof(t), ttl_ms);
    const char *argv[] = { wid, info, t };
    enum gq_status st;
    return gq_call_status(g, "gq_worker", 3, argv, NULL, &st, NULL);
}
