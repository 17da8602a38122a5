/* ctl_impl.h - internals shared by judgectl's Redis commands: the common connection options,
 * small Redis helpers, reading a sweep, building a sweep's shards from a spec, time and table
 * formatting. Not for use outside cli/. */
#ifndef CLI_CTL_IMPL_H
#define CLI_CTL_IMPL_H

#include "jobs/job.h"
#include "queue/gq.h"

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- connection options (ctl_redis.c) -------------------------------------------------------- */

/* The options every Redis command takes. Strings borrowed from argv or the environment. */
struct ctl_redis {
    const char *url;           /* --redis, else $JUDGED_REDIS, else redis://127.0.0.1:6379 */
    const char *ns;            /* --namespace (gq) */
    const char *family;        /* --family (judge) */
    const char *password_file; /* --password-file */
};

#define CTL_OPT_REDIS         0x200
#define CTL_OPT_NAMESPACE     0x201
#define CTL_OPT_FAMILY        0x202
#define CTL_OPT_PASSWORD_FILE 0x203

/* The getopt_long entries of the common options, to put in each command's table. */
#define CTL_REDIS_LONG_OPTS                                             \
    { "redis", required_argument, NULL, CTL_OPT_REDIS },                \
        { "namespace", required_argument, NULL, CTL_OPT_NAMESPACE },    \
        { "family", required_argument, NULL, CTL_OPT_FAMILY },          \
    {                                                                   \
        "password-file", required_argument, NULL, CTL_OPT_PASSWORD_FILE \
    }

#define CTL_REDIS_USAGE "[--redis URL] [--namespace NS] [--family F] [--password-file FILE]"

/* Fills the defaults (reads $JUDGED_REDIS). */
void ctl_redis_init(struct ctl_redis *r);

/* Handles getopt_long's result c when it is a common option; returns whether it was. */
bool ctl_redis_option(struct ctl_redis *r, int c, const char *arg);

/* Connects (loading the gq_v1 library when Redis lacks it). On failure prints
 * "judgectl <cmd>: <url>: <why>" and returns 1; 0 with *out (gq_destroy) otherwise. */
int ctl_redis_connect(const struct ctl_redis *r, const char *cmd, struct gq **out);

/* Parses an integer option value in [lo, hi]; prints a usage error and returns 2 when it is not
 * one, 0 otherwise. */
int ctl_int_arg(const char *cmd, const char *opt, const char *arg, int64_t lo, int64_t hi,
                int64_t *out);

/* Parses a duration option value: a whole number with a unit, ms, s, m, h, d or w ("30m",
 * "12h", "7d"), at most ten years, or "0" (and, with forever_ok, "forever") for 0. Prints a usage
 * error naming opt and returns 2 when it is not one, 0 otherwise. */
int ctl_duration_arg(const char *cmd, const char *opt, const char *arg, bool forever_ok,
                     int64_t *ms);

/* A command-specific option for ctl_args_parse: a flag or an option with a value. */
struct ctl_opt {
    const char *name;   /* long name without "--" */
    int short_name;     /* e.g. 'o', or 0 */
    bool *flag;         /* set to true when given (an option without a value), or NULL */
    const char **value; /* receives the value (an option with a value), or NULL */
};

/* Parses argv[1..] with the common Redis options, --help and opts; the positional arguments end
 * up in argv[*first .. argc) and must number min_pos..max_pos. Returns -1 to go on, else the
 * exit status to return (0 after --help, 2 after a usage error, with usage printed). */
int ctl_args_parse(const char *usage, int argc, char **argv, struct ctl_redis *ro,
                   const struct ctl_opt *opts, size_t n_opts, int min_pos, int max_pos, int *first);

/* ---- Redis helpers (ctl_redis.c) ------------------------------------------------------------- */

/* One command of argc NUL-terminated arguments (argv[0] the command name). out may be NULL.
 * Returns 0, -EIO, -EPROTO (gq_errstr says why). */
int ctl_cmd(struct gq *g, struct gq_reply *out, size_t argc, ...);

/* One FCALL of a gq_v1 function with argc NUL-terminated arguments after the prefix. */
int ctl_fcall(struct gq *g, const char *fn, struct gq_reply *out, size_t argc, ...);

/* prefix + formatted suffix, e.g. ctl_key(g, "sweep:%s:res", sid). Caller frees. */
char *ctl_key(const struct gq *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Redis server time in ms (TIME), or the local clock if that fails. */
int64_t ctl_now_ms(struct gq *g);

/* Reads a whole hash with HSCAN (large hashes do not block Redis). out->str alternates field,
 * value. Returns 0, -EIO, -EPROTO. */
int ctl_hash_read(struct gq *g, const char *key, struct gq_reply *out);

/* The value of `field` in a field/value reply (HGETALL, ctl_hash_read), or NULL. */
const char *ctl_reply_field(const struct gq_reply *r, const char *field, size_t *len);

/* Whether s is a usable sweep / schedule id: 1-180 bytes, no space or control character, no
 * ':' (shard jobs are "<sid>:<i>"). */
bool ctl_id_ok(const char *s);

/* ---- sweeps (ctl_redis.c) -------------------------------------------------------------------- */

/* A sweep's hash. Plain data owned by the caller; free with ctl_sweep_free. */
struct ctl_sweep {
    char *sid;
    char *state; /* open, sealed, aggregating, done, cancelled */
    int64_t expected, ok, failed;
    int64_t created_ms, finished_ms; /* 0 when absent */
    json_t *meta;                    /* the submit's meta object (never NULL) */
    char *agg_job;                   /* "" when none */
    char *agg;                       /* the aggregate's result, "" when none */
    char *schedule;                  /* the schedule that fired it, "" when none */
    int64_t retention_ms;            /* its keys' life once final; 0 = forever */
    int64_t expires_ms;              /* when its keys expire; 0 when not set */
    int64_t unsent;                  /* shards without a job when it was cancelled */
    int64_t n_samples, shard_size;   /* from meta; 0 when unknown */
};

/* Reads sweep sid. Returns 0, -ENOENT (no such sweep), -EIO/-EPROTO. */
int ctl_sweep_load(struct gq *g, const char *sid, struct ctl_sweep *sw);
void ctl_sweep_free(struct ctl_sweep *sw);

/* Samples in shard i of a sweep (from meta's n_samples and shard_size; 0 when unknown). */
int64_t ctl_sweep_shard_samples(const struct ctl_sweep *sw, int64_t i);

/* The terminal-shard bitmap (sweep:<sid>:term): bit i set = shard i has an outcome. */
bool ctl_bit(const struct gq_reply *bitmap, int64_t i);

/* A sweep's shard results (sweep:<sid>:res): blob i is shard names[i]'s "<question_id>\t<record>"
 * lines. Owned; free with ctl_blobs_free. */
struct ctl_blobs {
    size_t n;
    const char **blobs; /* [n] borrowed from res */
    size_t *lens;       /* [n] */
    char **names;       /* [n] "sweep <sid> shard <i>", for errors */
    struct gq_reply res;
};

/* Reads every shard result of sweep sid. Returns 0, -EIO, -EPROTO. */
int ctl_blobs_load(struct gq *g, const char *sid, struct ctl_blobs *b);
void ctl_blobs_free(struct ctl_blobs *b);

/* Loads every shard result of a sweep and merges them into f exactly as judgectl run writes its
 * output. Returns 0 or 1 (message printed). */
int ctl_sweep_results(struct gq *g, const char *cmd, const struct ctl_sweep *sw, FILE *f,
                      size_t *n_records);

/* ---- building a sweep from a spec (ctl_submit.c) --------------------------------------------- */

/* A spec validated and cut into shard payloads. Owned; free with ctl_build_free. */
struct ctl_build {
    struct job_spec *spec;
    json_t *spec_json;
    size_t n_samples, n_shards;
    char **payloads; /* [n_shards] */
    size_t *lens;    /* [n_shards] */
    char *labels;    /* the labels file's bytes, NULL without labels */
    size_t labels_len;
};

/* Loads the spec and every input line (errors name file:line), reads and validates the labels,
 * and builds the shard payloads, refusing any over max_payload_bytes with the offending sample's
 * input line. Prints "judgectl <cmd>: ..." and returns 1 on failure, 0 otherwise. */
int ctl_build_sweep(const char *cmd, const char *spec_path, size_t max_payload_bytes,
                    struct ctl_build *b);
void ctl_build_free(struct ctl_build *b);

/* The meta object stored with a sweep (name, model, n_samples, shard_size, mode, swap, output,
 * submitted_ms, spec, queue). New reference. */
json_t *ctl_build_meta(const struct ctl_build *b, const char *queue, int64_t submitted_ms);

/* ---- formatting (ctl_redis.c) ---------------------------------------------------------------- */

/* Whether a sweep is final: done, or cancelled with every shard terminal (PROTOCOL.md §3). */
bool ctl_sweep_final(const struct ctl_sweep *sw);

/* "42s", "7m", "3h", "5d" for a duration in ms. */
void ctl_fmt_age(int64_t ms, char *buf, size_t len);

/* "2024-01-31T12:00:00Z" for epoch ms. */
void ctl_fmt_utc(int64_t ms, char *buf, size_t len);

/* Prints a JSON value and a newline to stdout. Returns 0 or 1. */
int ctl_print_json(json_t *v);

/* judgectl watch's loop, shared with submit --watch. Returns the exit status. */
int ctl_watch_sweep(struct gq *g, const char *sid, int interval_ms);

#endif
