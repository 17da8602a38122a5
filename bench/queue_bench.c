/* queue_bench.c - the queue protocol's rates against a running redis-server: shards enqueued per
 * second (pipelined gq_enqueue, as judgectl submit does it), and claim + heartbeat + complete
 * round trips per second on one connection (a worker's cycle for one shard). The peer, measured
 * in the same run on the same connection: plain SET round trips per second, so the ratio says
 * what a whole FCALL transition costs next to the cheapest write Redis can do.
 * Usage: queue_bench URL [N_SHARDS] [PAYLOAD_BYTES] */
#include "bench/bench_util.h"
#include "queue/gq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: queue_bench URL [N_SHARDS] [PAYLOAD_BYTES]\n");
        return 2;
    }
    size_t n = argc > 2 ? (size_t)atol(argv[2]) : 2000;
    size_t payload_len = argc > 3 ? (size_t)atol(argv[3]) : 16384;
    struct gq_config gc;
    gq_config_default(&gc);
    gc.url = argv[1];
    gc.ns = "bench";
    char errstr[512];
    struct gq *g;
    if (gq_connect(&gc, &g, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "queue_bench: %s\n", errstr);
        return 1;
    }
    char sid[64];
    snprintf(sid, sizeof(sid), "b%ld", (long)time(NULL));
    enum gq_status st;
    if (gq_sweep_create(g, sid, (int64_t)n, "", 0, "{}", NULL, 0, &st) != 0) {
        fprintf(stderr, "queue_bench: %s\n", gq_errstr(g));
        return 1;
    }
    char *payload = malloc(payload_len);
    memset(payload, 'x', payload_len);
    struct gq_job_new *jobs = calloc(n, sizeof(*jobs));
    char(*jids)[96] = calloc(n, 96);
    for (size_t i = 0; i < n; i++) {
        snprintf(jids[i], 96, "%s:%zu", sid, i);
        jobs[i] = (struct gq_job_new){ .jid = jids[i],
                                       .queue = "bench",
                                       .max_attempts = 3,
                                       .payload = payload,
                                       .payload_len = payload_len,
                                       .sweep = sid,
                                       .shard = (int64_t)i };
    }
    double t0 = now_s();
    if (gq_enqueue_many(g, jobs, n, NULL) != 0) {
        fprintf(stderr, "queue_bench: %s\n", gq_errstr(g));
        return 1;
    }
    double t_enq = now_s() - t0;
    bool fanin;
    gq_sweep_seal(g, sid, &st, &fanin);
    /* the worker cycle */
    const char *queues[] = { "bench" };
    t0 = now_s();
    size_t cycles = 0;
    for (;;) {
        struct gq_claimed c;
        bool got;
        if (gq_claim(g, "bench-worker", 60000, queues, 1, &c, &got) != 0) {
            fprintf(stderr, "queue_bench: %s\n", gq_errstr(g));
            return 1;
        }
        if (!got) {
            break;
        }
        char cancel[16];
        gq_heartbeat(g, c.jid, c.token, 60000, "1/1", NULL, 0, &st, cancel);
        if (gq_complete(g, c.jid, c.token, "0\t{}", 4, &st) != 0 || st != GQ_OK) {
            fprintf(stderr, "queue_bench: complete %s: %s\n", c.jid, gq_status_name(st));
            return 1;
        }
        gq_claimed_free(&c);
        cycles++;
    }
    double t_cycle = now_s() - t0;
    /* the peer: SET round trips on the same connection */
    size_t n_set = 3 * n;
    t0 = now_s();
    for (size_t i = 0; i < n_set; i++) {
        const char *argv_set[] = { "SET", "bench:peer", "1" };
        gq_command(g, 3, argv_set, NULL, NULL);
    }
    double t_set = now_s() - t0;
    double set_rate = (double)n_set / t_set;
    printf("shards %zu, payload %zu bytes\n", n, payload_len);
    printf("enqueue (pipelined):       %10.0f shards/s  (%.1f MB/s of payload)\n",
           (double)n / t_enq, (double)n * (double)payload_len / t_enq / 1e6);
    printf("claim+heartbeat+complete:  %10.0f cycles/s   (%zu cycles, 3 round trips each)\n",
           (double)cycles / t_cycle, cycles);
    printf("peer SET round trips:      %10.0f /s\n", set_rate);
    printf("fcall_vs_set: %.2f   (FCALL round trips/s over SET round trips/s)\n",
           3.0 * (double)cycles / t_cycle / set_rate);
    free(payload);
    free(jobs);
    free(jids);
    gq_destroy(g);
    return cycles == n ? 0 : 1;
}
