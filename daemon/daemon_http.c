/* daemon_http.c - GET /metrics (Prometheus text format 0.0.4) and GET /healthz through
 * libmicrohttpd's internal thread. Handlers only read the daemon's atomic counters. */
#include "common/log.h"
#include "common/util.h"
#include "common/xmalloc.h"
#include "daemon/daemon.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#undef LOG_MODULE
#define LOG_MODULE "http"

struct daemon_http {
    struct MHD_Daemon *mhd;
    struct daemon *d;
};

static void http_counter(FILE *f, const char *name, const char *help, unsigned long long v)
{
    fprintf(f, "# HELP judged_%s %s\n# TYPE judged_%s counter\njudged_%s %llu\n", name, help, name,
            name, v);
}

static void http_gauge(FILE *f, const char *name, const char *help, double v)
{
    fprintf(f, "# HELP judged_%s %s\n# TYPE judged_%s gauge\njudged_%s %.17g\n", name, help, name,
            name, v);
}

static char *http_metrics_text(struct daemon *d, size_t *len)
{
    struct daemon_metrics *m = &d->m;
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    http_counter(f, "claims_total", "Jobs claimed.", atomic_load(&m->claims));
    http_counter(f, "commits_total", "Shard results committed (ok).", atomic_load(&m->completes));
    http_counter(f, "commit_duplicates_total",
                 "Commits answered dup: replays suppressed by the idempotent commit.",
                 atomic_load(&m->commit_dups));
    http_counter(f, "commit_lost_total", "Commits refused because the lease was lost.",
                 atomic_load(&m->commit_lost));
    http_counter(f, "fails_total", "Attempts failed.", atomic_load(&m->fails));
    http_counter(f, "dead_total", "Jobs whose failure moved them to the dead-letter set.",
                 atomic_load(&m->shards_failed));
    http_counter(f, "releases_total", "Jobs handed back on drain.", atomic_load(&m->releases));
    http_counter(f, "cancels_total", "Jobs stopped by cancellation.", atomic_load(&m->cancels));
    http_counter(f, "lost_leases_total", "Leases lost (heartbeat lost or self-fenced).",
                 atomic_load(&m->lost_leases));
    http_counter(f, "self_fenced_total", "Leases not renewed before their deadline.",
                 atomic_load(&m->self_fenced));
    http_counter(f, "reaped_total", "Expired leases reaped by this daemon.",
                 atomic_load(&m->reaped));
    http_counter(f, "redis_errors_total", "Redis calls that failed in transport.",
                 atomic_load(&m->redis_errors));
    http_counter(f, "heartbeats_total", "Lease renewals sent.", atomic_load(&m->heartbeats));
    http_counter(f, "samples_total", "Samples judged.", atomic_load(&m->samples_done));
    http_counter(f, "requests_total", "Generation requests finished.",
                 atomic_load(&m->requests_done));
    http_counter(f, "generated_tokens_total", "Tokens generated.",
                 atomic_load(&m->tokens_generated));
    http_counter(f, "aggregates_total", "Sweep aggregates computed.", atomic_load(&m->aggregates));
    http_gauge(f, "shards_in_flight", "Shards held by this daemon.",
               (double)atomic_load(&m->shards_in_flight));
    http_gauge(f, "queued_prompt_tokens", "Prompt tokens submitted and not finished.",
               (double)atomic_load(&m->queued_tokens));
    http_gauge(f, "kv_blocks_used", "KV blocks held by running requests.",
               (double)atomic_load(&m->kv_blocks_used));
    http_gauge(f, "kv_blocks", "KV blocks in the pool.", (double)atomic_load(&m->kv_blocks_total));
    http_gauge(f, "requests_running", "Requests holding KV blocks.",
               (double)atomic_load(&m->running_requests));
    http_gauge(f, "requests_waiting", "Requests queued in the scheduler.",
               (double)atomic_load(&m->waiting_requests));
    http_gauge(f, "prefix_cache_hit_rate", "Prompt tokens served by the prefix cache.",
               atomic_load(&m->prefix_hit_rate));
    http_gauge(f, "heartbeat_rtt_seconds", "Round trip of the last heartbeat.",
               (double)atomic_load(&m->hb_rtt_us) / 1e6);
    http_gauge(f, "redis_up", "1 when the worker connection to Redis is up.",
               atomic_load(&m->redis_up) ? 1.0 : 0.0);
    http_gauge(f, "draining", "1 while draining.", atomic_load(&m->draining) ? 1.0 : 0.0);
    static const char *const bounds[8] = { "0.001", "0.005", "0.01", "0.05",
                                           "0.1",   "0.5",   "1",    "+Inf" };
    fprintf(f, "# HELP judged_step_seconds Scheduler step time.\n"
               "# TYPE judged_step_seconds histogram\n");
    unsigned long long cum = 0;
    for (int i = 0; i < 8; i++) {
        cum += atomic_load(&m->step_hist[i]);
        fprintf(f, "judged_step_seconds_bucket{le=\"%s\"} %llu\n", bounds[i], cum);
    }
    fprintf(f, "judged_step_seconds_sum %.6f\njudged_step_seconds_count %llu\n",
            atomic_load(&m->step_ms_sum) / 1000.0, atomic_load(&m->n_steps));
    fclose(f);
    return buf;
}

static enum MHD_Result http_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    struct daemon_http *h = cls;
    struct daemon *d = h->d;
    unsigned code = MHD_HTTP_OK;
    char *body = NULL;
    size_t len = 0;
    const char *type = "text/plain; charset=utf-8";
    if (strcmp(method, "GET") != 0) {
        code = MHD_HTTP_METHOD_NOT_ALLOWED;
        body = xstrdup("GET only\n");
    } else if (strcmp(url, "/metrics") == 0) {
        body = http_metrics_text(d, &len);
        type = "text/plain; version=0.0.4";
    } else if (strcmp(url, "/healthz") == 0) {
        bool up = atomic_load(&d->m.redis_up), ready = atomic_load(&d->m.ready);
        code = up && ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
        char text[256];
        snprintf(text, sizeof(text), "%s redis=%s ready=%s draining=%s shards=%lld\n",
                 code == MHD_HTTP_OK ? "ok" : "unavailable", up ? "up" : "down",
                 ready ? "yes" : "no", atomic_load(&d->m.draining) ? "yes" : "no",
                 (long long)atomic_load(&d->m.shards_in_flight));
        body = xstrdup(text);
    } else {
        code = MHD_HTTP_NOT_FOUND;
        body = xstrdup("not found: try /metrics or /healthz\n");
    }
    if (!len) {
        len = strlen(body);
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

int daemon_http_start(struct daemon *d, const char *listen, struct daemon_http **out, char *errstr,
                      size_t errstr_len)
{
    const char *colon = strrchr(listen, ':');
    char host[128];
    snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (*end || port < 0 || port > 65535 ||
        inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &sa.sin_addr) != 1) {
        errstr_set(errstr, errstr_len, "http.listen '%s': expected IPv4-address:port", listen);
        return -EINVAL;
    }
    struct daemon_http *h = xcalloc(1, sizeof(*h));
    h->d = d;
    h->mhd =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL, http_handler,
                         h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_END);
    if (!h->mhd) {
        errstr_set(errstr, errstr_len, "http.listen '%s': cannot listen (%s)", listen,
                   strerror(errno));
        free(h);
        return -EIO;
    }
    log_info("http: /metrics and /healthz on %s", listen);
    *out = h;
    return 0;
}

void daemon_http_stop(struct daemon_http *h)
{
    if (!h) {
        return;
    }
    MHD_stop_daemon(h->mhd);
    free(h);
}
