/* main.c - judged, the daemon: the only place allowed to exit(). The Redis worker loop (claim,
 * schedule, heartbeat, commit) is built on top of the engine and scheduler; until then judged
 * answers --version and --help, and refuses to start rather than pretend to serve. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JUDGED_VERSION "0.1.0"

static void daemon_usage(FILE *f)
{
    fprintf(f, "usage: judged -c judged.yaml\n"
               "       judged --version\n\n"
               "judged pulls judging and training jobs from Redis and runs them on the GPUs (or\n"
               "the CPU) of this host. This build has the model readers and the tokenizer; the\n"
               "worker loop is not part of it yet, so judged does not start.\n");
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("judged %s\n", JUDGED_VERSION);
        exit(0);
    }
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        daemon_usage(stdout);
        exit(0);
    }
    daemon_usage(stderr);
    exit(2);
}
