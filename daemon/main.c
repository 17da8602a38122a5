/* main.c - judged, the daemon: the only place allowed to exit(). Reads judged.yaml, starts the
 * heartbeat thread and the HTTP endpoints, and runs the worker (the engine thread) until a
 * SIGTERM/SIGINT drain ends. SIGHUP reloads what can change at run time (see daemon_reload). */
#include "common/log.h"
#include "common/util.h"
#include "daemon/daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct daemon daemon_g;

static void daemon_usage(FILE *f)
{
    fprintf(f, "usage: judged -c judged.yaml [--check]\n"
               "       judged --version\n\n"
               "judged pulls judge jobs (sweep shards) from Redis and runs them on this host with\n"
               "continuous batching; see docs/OPERATIONS.md for judged.yaml and the signals:\n"
               "SIGTERM/SIGINT drain (finish or hand back shards), SIGHUP reloads the config.\n"
               "--check validates the configuration and exits.\n");
}

static void daemon_on_stop(int sig)
{
    (void)sig;
    daemon_g.stop = 1;
}

static void daemon_on_hup(int sig)
{
    (void)sig;
    daemon_g.reload = 1;
}

static void daemon_signal_install(void)
{
    struct sigaction sa = { 0 };
    sa.sa_handler = daemon_on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = daemon_on_hup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int main(int argc, char **argv)
{
    const char *config = NULL;
    bool check = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0) {
            printf("judged %s\n", DAEMON_VERSION);
            exit(0);
        } else if (strcmp(argv[i], "--help") == 0) {
            daemon_usage(stdout);
            exit(0);
        } else if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) &&
                   i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--check") == 0) {
            check = true;
        } else {
            daemon_usage(stderr);
            exit(2);
        }
    }
    if (!config) {
        daemon_usage(stderr);
        exit(2);
    }
    struct daemon *d = &daemon_g;
    char errstr[ERRSTR_LEN];
    if (daemon_config_load(config, &d->cfg, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judged: %s\n", errstr);
        exit(1);
    }
    if (d->cfg.log_level) {
        enum log_level level;
        log_level_parse(d->cfg.log_level, &level);
        log_level_set(level);
    }
    if (check) {
        printf("%s: ok\n", config);
        daemon_config_free(&d->cfg);
        exit(0);
    }
    pthread_mutex_init(&d->mu, NULL);
    d->leases = calloc((size_t)d->cfg.max_shards, sizeof(*d->leases));
    daemon_signal_install();
    if (d->cfg.http_listen &&
        daemon_http_start(d, d->cfg.http_listen, &d->http, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judged: %s\n", errstr);
        exit(1);
    }
    if (daemon_heartbeat_start(d, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "judged: %s\n", errstr);
        exit(1);
    }
    int rc = daemon_worker_run(d);
    daemon_heartbeat_stop(d);
    daemon_http_stop(d->http);
    free(d->leases);
    daemon_config_free(&d->cfg);
    exit(rc);
}
