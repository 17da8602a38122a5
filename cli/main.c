/* main.c - judgectl: the command line for people and scripts: local tools that need no Redis,
 * and the commands that submit, watch and manage sweeps through Redis (docs/PROTOCOL.md). */
#include "cli/ctl.h"
#include "common/log.h"

#include <stdio.h>
#include <string.h>

#define JUDGED_VERSION "0.1.0"

struct ctl_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage;
};

static const struct ctl_command ctl_commands[] = {
    { "tokenize", ctl_tokenize,
      "tokenize (--model DIR | --tokenizer FILE) [--no-bos]   stdin text -> ids on one line" },
    { "detokenize", ctl_detokenize,
      "detokenize (--model DIR | --tokenizer FILE)            stdin ids -> text" },
    { "generate", ctl_generate,
      "generate --model PATH --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K]\n"
      "           [--top-p P] [--seed S] [--judgelm] [--stop STR] [--logits FILE]\n"
      "           [--tokenizer FILE] [--weights FILE]     print the continuation" },
    { "inspect", ctl_inspect,
      "inspect DIR [--weights FILE]                           config, tensors, consistency" },
    { "run", ctl_run,
      "run SPEC [--dry-run] [-o FILE] [--config judged.yaml]  a judge job in-process (no Redis);\n"
      "           --dry-run writes the rendered prompts as JSONL; --config resolves model names" },
    { "metrics", ctl_metrics,
      "metrics --pred FILE --labels FILE [--reversed FILE] [--json]\n"
      "           agreement, precision, recall, F1, consistency and bias\n"
      "  metrics SID [--json] [--partial]                       the same for a sweep in Redis" },
    { "submit", ctl_submit,
      "submit SPEC [--id SID] [--queue Q] [--priority N] [--max-attempts N]\n"
      "           [--run-budget-s N] [--max-payload-mib N] [--keep DURATION] [--watch]\n"
      "           validate, shard and enqueue a sweep; prints its id; --keep 7d: its keys\n"
      "           expire 7 days after it finishes (default: kept until purged)" },
    { "watch", ctl_watch,
      "watch SID [--interval-ms N]                            progress bar until the sweep ends" },
    { "status", ctl_status,
      "status [SID] [--limit N] [--json]                      recent sweeps, or one in detail" },
    { "results", ctl_results,
      "results SID [-o FILE] [--partial]                      the sweep's judgments as JSONL" },
    { "cancel", ctl_cancel,
      "cancel ID                                              cancel a sweep or a job" },
    { "purge", ctl_purge,
      "purge SID [--force] | purge --finished-before DURATION [--dry-run]\n"
      "           delete finished sweeps' keys and jobs now (--force: a running one too)" },
    { "queues", ctl_queues,
      "queues [--json]                                        ready/paused per queue, totals" },
    { "workers", ctl_workers,
      "workers [--json]                                       registered daemons, last seen" },
    { "dlq", ctl_dlq,
      "dlq list [--json] | dlq retry (JID... | --all)         the dead-letter set" },
    { "pause", ctl_pause,
      "pause QUEUE                                            stop claims from a queue" },
    { "resume", ctl_resume,
      "resume QUEUE                                           allow claims again" },
    { "schedule", ctl_schedule,
      "schedule add NAME CRON SPEC [submit options] [--keep DURATION] [--replace]\n"
      "           | schedule list [--json] | schedule remove NAME\n"
      "           sweeps re-run on a cron (UTC)" },
};

static void ctl_usage(FILE *f)
{
    fprintf(f, "usage: judgectl COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(ctl_commands) / sizeof(ctl_commands[0]); i++) {
        fprintf(f, "  %s\n", ctl_commands[i].usage);
    }
    fprintf(f, "\ntokenize, detokenize, generate and run take --log-level error|warn|info|debug\n"
               "the Redis commands take --redis URL (default $JUDGED_REDIS, else\n"
               "redis://127.0.0.1:6379), --namespace NS (gq), --family F (judge) and\n"
               "--password-file FILE\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        ctl_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        ctl_usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("judgectl %s\n", JUDGED_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(ctl_commands) / sizeof(ctl_commands[0]); i++) {
        if (strcmp(argv[1], ctl_commands[i].name) == 0) {
            return ctl_commands[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "judgectl: unknown command '%s' (see judgectl --help)\n", argv[1]);
    return 2;
}
