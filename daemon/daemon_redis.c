/* daemon_redis.c - one Redis connection of the daemon (the engine thread and the heartbeat
 * thread each own one): connect on demand with jittered exponential backoff, drop on a transport
 * error. */
#include "common/log.h"
#include "common/util.h"
#include "daemon/daemon.h"

#undef LOG_MODULE
#define LOG_MODULE "redis"

bool daemon_redis_ready(struct daemon *d, struct daemon_redis *r)
{
    if (r->g) {
        return true;
    }
    int64_t now = daemon_now_ms();
    if (now < r->next_connect_ms) {
        return false;
    }
    const struct daemon_config *c = &d->cfg;
    struct gq_config gc;
    gq_config_default(&gc);
    gc.url = c->redis_url;
    gc.password_file = c->redis_password_file;
    gc.ns = c->redis_namespace;
    gc.family = c->redis_family;
    gc.timeout_ms = r->timeout_ms > 0 ? r->timeout_ms : c->redis_timeout_ms;
    char errstr[ERRSTR_LEN];
    if (gq_connect(&gc, &r->g, errstr, sizeof(errstr)) != 0) {
        r->failures++;
        int64_t wait = 50 + gq_backoff_ms(r->failures, r->backoff_base_ms, r->backoff_cap_ms);
        r->next_connect_ms = now + wait;
        if (r->failures == 1 || r->failures % 20 == 0) {
            log_warn("%s: %s (attempt %d, next in %lld ms)", r->who, errstr, r->failures,
                     (long long)wait);
        }
        return false;
    }
    if (r->failures > 0) {
        atomic_fetch_add(&d->m.reconnects, 1);
        log_info("%s: connected again after %d failed attempts", r->who, r->failures);
    }
    r->failures = 0;
    return true;
}

void daemon_redis_broken(struct daemon *d, struct daemon_redis *r, const char *what)
{
    log_warn("%s: %s failed: %s; reconnecting", r->who, what, r->g ? gq_errstr(r->g) : "-");
    atomic_fetch_add(&d->m.redis_errors, 1);
    gq_destroy(r->g);
    r->g = NULL;
    r->next_connect_ms = daemon_now_ms();
}
