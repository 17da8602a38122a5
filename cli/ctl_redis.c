/* ctl_redis.c - what judgectl's Redis commands share: the connection options, small Redis
 * helpers over queue/gq.h, reading a sweep and merging its results, time formatting. */
#include "cli/ctl_impl.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "jobs/judge.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CTL_ARGS_MAX 16

void ctl_redis_init(struct ctl_redis *r)
{
    const char *env = getenv("JUDGED_REDIS");
    r->url = env && *env ? env : "redis://127.0.0.1:6379";
    r->ns = "gq";
    r->family = "judge";
    r->password_file = NULL;
}

bool ctl_redis_option(struct ctl_redis *r, int c, const char *arg)
{
    switch (c) {
    case CTL_OPT_REDIS:
        r->url = arg;
        return true;
    case CTL_OPT_NAMESPACE:
        r->ns = arg;
        return true;
    case CTL_OPT_FAMILY:
        r->family = arg;
        return true;
    case CTL_OPT_PASSWORD_FILE:
        r->password_file = arg;
        return true;
    default:
        return false;
    }
}

int ctl_redis_connect(const struct ctl_redis *r, const char *cmd, struct gq **out)
{
    struct gq_config cfg;
    gq_config_default(&cfg);
    cfg.url = r->url;
    cfg.ns = r->ns;
    cfg.family = r->family;
    cfg.password_file = r->password_file;
    char errstr[ERRSTR_LEN];
    if (gq_connect(&cfg, out, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judgectl %s: %s: %s\n", cmd, r->url, errstr);
        return 1;
    }
    return 0;
}

int ctl_int_arg(const char *cmd, const char *opt, const char *arg, int64_t lo, int64_t hi,
                int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    if (errno || end == arg || *end || v < lo || v > hi) {
        fprintf(stderr, "judgectl %s: %s: '%s' is not an integer in [%" PRId64 ", %" PRId64 "]\n",
                cmd, opt, arg, lo, hi);
        return 2;
    }
    *out = v;
    return 0;
}

int ctl_duration_arg(const char *cmd, const char *opt, const char *arg, bool forever_ok,
                     int64_t *ms)
{
    static const struct {
        const char *name;
        int64_t ms;
    } units[] = { { "ms", 1 },      { "s", 1000 },     { "m", 60000 },
                  { "h", 3600000 }, { "d", 86400000 }, { "w", 7 * 86400000LL } };
    const int64_t max_ms = 3650 * 86400000LL;
    if (strcmp(arg, "0") == 0 || (forever_ok && strcmp(arg, "forever") == 0)) {
        *ms = 0;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long long v = arg[0] >= '0' && arg[0] <= '9' ? strtoll(arg, &end, 10) : -1;
    for (size_t i = 0; v >= 0 && !errno && i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].name) == 0 && v <= max_ms / units[i].ms) {
            *ms = v * units[i].ms;
            return 0;
        }
    }
    fprintf(stderr,
            "judgectl %s: %s: '%s' is not a duration (a whole number and a unit, ms, s, m, h, d "
            "or w, e.g. 30m, 12h, 7d, at most 3650d%s)\n",
            cmd, opt, arg, forever_ok ? "; 0 or forever keeps it forever" : "; or 0");
    return 2;
}

int ctl_args_parse(const char *usage, int argc, char **argv, struct ctl_redis *ro,
                   const struct ctl_opt *opts, size_t n_opts, int min_pos, int max_pos, int *first)
{
    static const struct option common[] = { CTL_REDIS_LONG_OPTS,
                                            { "help", no_argument, NULL, 'h' } };
    size_t n_common = sizeof(common) / sizeof(common[0]);
    struct option *lo = xcalloc(n_common + n_opts + 1, sizeof(*lo));
    char shorts[64] = "";
    size_t ns = 0;
    memcpy(lo, common, sizeof(common));
    for (size_t i = 0; i < n_opts; i++) {
        bool has_arg = opts[i].value != NULL;
        lo[n_common + i] = (struct option){ opts[i].name, has_arg ? required_argument : no_argument,
                                            NULL, 0x300 + (int)i };
        if (opts[i].short_name && ns + 3 < sizeof(shorts)) {
            shorts[ns++] = (char)opts[i].short_name;
            if (has_arg) {
                shorts[ns++] = ':';
            }
            shorts[ns] = '\0';
        }
    }
    int status = -1, c;
    optind = 1;
    while (status < 0 && (c = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
        if (ctl_redis_option(ro, c, optarg)) {
            continue;
        }
        if (c == 'h') {
            fputs(usage, stdout);
            status = 0;
            break;
        }
        size_t i = 0;
        while (i < n_opts && c != 0x300 + (int)i && c != opts[i].short_name) {
            i++;
        }
        if (i == n_opts) {
            status = 2;
        } else if (opts[i].value) {
            *opts[i].value = optarg;
        } else {
            *opts[i].flag = true;
        }
    }
    int n_pos = argc - optind;
    if (status < 0 && (n_pos < min_pos || n_pos > max_pos)) {
        status = 2;
    }
    if (status == 2) {
        fputs(usage, stderr);
    }
    *first = optind;
    free(lo);
    return status;
}

static size_t ctl_collect(const char **argv, size_t first, size_t argc, va_list ap)
{
    size_t n = first;
    for (size_t i = 0; i < argc && n < CTL_ARGS_MAX; i++) {
        argv[n++] = va_arg(ap, const char *);
    }
    return n;
}

int ctl_cmd(struct gq *g, struct gq_reply *out, size_t argc, ...)
{
    const char *argv[CTL_ARGS_MAX];
    va_list ap;
    va_start(ap, argc);
    size_t n = ctl_collect(argv, 0, argc, ap);
    va_end(ap);
    struct gq_reply scratch = { 0 };
    int err = gq_command(g, n, argv, NULL, out ? out : &scratch);
    gq_reply_free(&scratch);
    return err;
}

int ctl_fcall(struct gq *g, const char *fn, struct gq_reply *out, size_t argc, ...)
{
    const char *argv[CTL_ARGS_MAX];
    va_list ap;
    va_start(ap, argc);
    size_t n = ctl_collect(argv, 0, argc, ap);
    va_end(ap);
    struct gq_reply scratch = { 0 };
    int err = gq_fcall(g, fn, n, argv, NULL, out ? out : &scratch);
    gq_reply_free(&scratch);
    return err;
}

char *ctl_key(const struct gq *g, const char *fmt, ...)
{
    char suffix[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(suffix, sizeof(suffix), fmt, ap);
    va_end(ap);
    const char *p = gq_prefix(g);
    size_t n = strlen(p) + strlen(suffix) + 1;
    char *key = xmalloc(n);
    snprintf(key, n, "%s%s", p, suffix);
    return key;
}

int64_t ctl_now_ms(struct gq *g)
{
    struct gq_reply r = { 0 };
    int64_t now = 0;
    if (ctl_cmd(g, &r, 1, "TIME") == 0 && r.n == 2) {
        now = strtoll(r.str[0], NULL, 10) * 1000 + strtoll(r.str[1], NULL, 10) / 1000;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    gq_reply_free(&r);
    return now;
}

struct ctl_pair {
    char *field, *value;
    size_t value_len;
};

static int ctl_pair_cmp(const void *pa, const void *pb)
{
    const struct ctl_pair *a = pa, *b = pb;
    return strcmp(a->field, b->field);
}

int ctl_hash_read(struct gq *g, const char *key, struct gq_reply *out)
{
    memset(out, 0, sizeof(*out));
    char cursor[32] = "0";
    struct ctl_pair *pairs = NULL;
    size_t n = 0, cap = 0;
    int err = 0;
    do {
        struct gq_reply r = { 0 };
        if ((err = ctl_cmd(g, &r, 5, "HSCAN", key, cursor, "COUNT", "200")) != 0) {
            break;
        }
        if (r.n < 1 || r.n % 2 != 1) {
            gq_reply_free(&r);
            err = -EPROTO;
            break;
        }
        snprintf(cursor, sizeof(cursor), "%s", r.str[0]);
        for (size_t i = 1; i + 1 < r.n; i += 2) {
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                pairs = xrealloc(pairs, cap * sizeof(*pairs));
            }
            pairs[n++] = (struct ctl_pair){ r.str[i], r.str[i + 1], r.len[i + 1] };
            r.str[i] = r.str[i + 1] = NULL;
        }
        gq_reply_free(&r);
    } while (strcmp(cursor, "0") != 0);
    /* HSCAN may return a field twice while the hash rehashes: sort by field, keep one */
    if (n > 0) {
        qsort(pairs, n, sizeof(*pairs), ctl_pair_cmp);
    }
    out->str = xcalloc(2 * n + 1, sizeof(*out->str));
    out->len = xcalloc(2 * n + 1, sizeof(*out->len));
    for (size_t i = 0; i < n; i++) {
        if (err || (out->n > 0 && strcmp(out->str[out->n - 2], pairs[i].field) == 0)) {
            free(pairs[i].field);
            free(pairs[i].value);
            continue;
        }
        out->str[out->n] = pairs[i].field;
        out->len[out->n] = strlen(pairs[i].field);
        out->str[out->n + 1] = pairs[i].value;
        out->len[out->n + 1] = pairs[i].value_len;
        out->n += 2;
    }
    free(pairs);
    if (err) {
        gq_reply_free(out);
    }
    return err;
}

const char *ctl_reply_field(const struct gq_reply *r, const char *field, size_t *len)
{
    for (size_t i = 0; i + 1 < r->n; i += 2) {
        if (strcmp(r->str[i], field) == 0) {
            if (len) {
                *len = r->len[i + 1];
            }
            return r->str[i + 1];
        }
    }
    return NULL;
}

bool ctl_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 180) {
        return false;
    }
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch <= ' ' || ch == 0x7f || ch == ':') {
            return false;
        }
    }
    return true;
}

/* ---- sweeps ---------------------------------------------------------------------------------- */

static char *ctl_field_dup(const struct gq_reply *r, const char *field)
{
    const char *v = ctl_reply_field(r, field, NULL);
    return xstrdup(v ? v : "");
}

static int64_t ctl_field_int(const struct gq_reply *r, const char *field)
{
    const char *v = ctl_reply_field(r, field, NULL);
    return v ? strtoll(v, NULL, 10) : 0;
}

int ctl_sweep_load(struct gq *g, const char *sid, struct ctl_sweep *sw)
{
    memset(sw, 0, sizeof(*sw));
    char *key = ctl_key(g, "sweep:%s", sid);
    struct gq_reply r = { 0 };
    int err = ctl_cmd(g, &r, 2, "HGETALL", key);
    free(key);
    if (err) {
        return err;
    }
    if (r.n == 0) {
        gq_reply_free(&r);
        return -ENOENT;
    }
    sw->sid = xstrdup(sid);
    sw->state = ctl_field_dup(&r, "state");
    sw->expected = ctl_field_int(&r, "expected");
    sw->ok = ctl_field_int(&r, "ok");
    sw->failed = ctl_field_int(&r, "failed");
    sw->created_ms = ctl_field_int(&r, "created_ms");
    sw->finished_ms = ctl_field_int(&r, "finished_ms");
    sw->agg_job = ctl_field_dup(&r, "agg_job");
    sw->agg = ctl_field_dup(&r, "agg");
    sw->schedule = ctl_field_dup(&r, "schedule");
    sw->retention_ms = ctl_field_int(&r, "retention_ms");
    sw->expires_ms = ctl_field_int(&r, "expires_ms");
    sw->unsent = ctl_field_int(&r, "unsent");
    size_t meta_len = 0;
    const char *meta = ctl_reply_field(&r, "meta", &meta_len);
    json_error_t jerr;
    sw->meta = meta && meta_len ? json_loadb(meta, meta_len, 0, &jerr) : NULL;
    if (!json_is_object(sw->meta)) {
        json_decref(sw->meta);
        sw->meta = json_object(); /* a sweep made by a plain client may carry any meta */
    }
    json_t *v = json_object_get(sw->meta, "n_samples");
    sw->n_samples = json_is_integer(v) ? json_integer_value(v) : 0;
    v = json_object_get(sw->meta, "shard_size");
    sw->shard_size = json_is_integer(v) ? json_integer_value(v) : 0;
    gq_reply_free(&r);
    return 0;
}

void ctl_sweep_free(struct ctl_sweep *sw)
{
    free(sw->sid);
    free(sw->state);
    free(sw->agg_job);
    free(sw->agg);
    free(sw->schedule);
    json_decref(sw->meta);
    memset(sw, 0, sizeof(*sw));
}

int64_t ctl_sweep_shard_samples(const struct ctl_sweep *sw, int64_t i)
{
    if (sw->shard_size <= 0 || sw->n_samples <= 0) {
        return 0;
    }
    int64_t left = sw->n_samples - i * sw->shard_size;
    return left < 0 ? 0 : left < sw->shard_size ? left : sw->shard_size;
}

bool ctl_bit(const struct gq_reply *bitmap, int64_t i)
{
    if (bitmap->n < 1 || i < 0 || (size_t)(i / 8) >= bitmap->len[0]) {
        return false;
    }
    return ((unsigned char)bitmap->str[0][i / 8] >> (7 - i % 8)) & 1; /* SETBIT: MSB first */
}

void ctl_blobs_free(struct ctl_blobs *b)
{
    for (size_t i = 0; b->names && i < b->n; i++) {
        free(b->names[i]);
    }
    free(b->names);
    free(b->blobs);
    free(b->lens);
    gq_reply_free(&b->res);
    memset(b, 0, sizeof(*b));
}

int ctl_blobs_load(struct gq *g, const char *sid, struct ctl_blobs *b)
{
    memset(b, 0, sizeof(*b));
    char *key = ctl_key(g, "sweep:%s:res", sid);
    int err = ctl_hash_read(g, key, &b->res);
    free(key);
    if (err) {
        return err;
    }
    b->n = b->res.n / 2;
    b->blobs = xcalloc(b->n + 1, sizeof(*b->blobs));
    b->names = xcalloc(b->n + 1, sizeof(*b->names));
    b->lens = xcalloc(b->n + 1, sizeof(*b->lens));
    for (size_t i = 0; i < b->n; i++) {
        b->blobs[i] = b->res.str[2 * i + 1];
        b->lens[i] = b->res.len[2 * i + 1];
        size_t nl = strlen(sid) + strlen(b->res.str[2 * i]) + 32;
        b->names[i] = xmalloc(nl);
        snprintf(b->names[i], nl, "sweep %s shard %s", sid, b->res.str[2 * i]);
    }
    return 0;
}

int ctl_sweep_results(struct gq *g, const char *cmd, const struct ctl_sweep *sw, FILE *f,
                      size_t *n_records)
{
    struct ctl_blobs b;
    if (ctl_blobs_load(g, sw->sid, &b) != 0) {
        fprintf(stderr, "judgectl %s: reading the results of sweep %s: %s\n", cmd, sw->sid,
                gq_errstr(g));
        return 1;
    }
    char errstr[ERRSTR_LEN];
    int rc = 0;
    if (judge_results_merge(b.blobs, b.lens, (const char *const *)b.names, b.n, f, n_records,
                            errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judgectl %s: %s\n", cmd, errstr);
        rc = 1;
    }
    ctl_blobs_free(&b);
    return rc;
}

bool ctl_sweep_final(const struct ctl_sweep *sw)
{
    return strcmp(sw->state, "done") == 0 || (strcmp(sw->state, "cancelled") == 0 &&
                                              sw->ok + sw->failed + sw->unsent >= sw->expected);
}

/* ---- formatting ------------------------------------------------------------------------------ */

void ctl_fmt_age(int64_t ms, char *buf, size_t len)
{
    int64_t s = ms / 1000;
    if (s < 0) {
        s = 0;
    }
    if (s < 120) {
        snprintf(buf, len, "%" PRId64 "s", s);
    } else if (s < 7200) {
        snprintf(buf, len, "%" PRId64 "m", s / 60);
    } else if (s < 172800) {
        snprintf(buf, len, "%" PRId64 "h", s / 3600);
    } else {
        snprintf(buf, len, "%" PRId64 "d", s / 86400);
    }
}

void ctl_fmt_utc(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        snprintf(buf, len, "-");
    }
}

int ctl_print_json(json_t *v)
{
    int err = json_dumpf(v, stdout, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(12));
    return err == 0 && fputc('\n', stdout) != EOF && fflush(stdout) == 0 ? 0 : 1;
}
