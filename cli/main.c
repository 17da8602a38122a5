/* main.c - judgectl: the command line for people and scripts (local tools for now; the Redis
 * commands arrive with the queue). */
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
      "run SPEC [--dry-run] [-o FILE]                         a judge job in-process (no Redis);\n"
      "           --dry-run writes the rendered prompts as JSONL" },
    { "metrics", ctl_metrics,
      "metrics --pred FILE --labels FILE [--reversed FILE] [--json]\n"
      "           agreement, precision, recall, F1, consistency and bias" },
};

static void ctl_usage(FILE *f)
{
    fprintf(f, "usage: judgectl COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(ctl_commands) / sizeof(ctl_commands[0]); i++) {
        fprintf(f, "  %s\n", ctl_commands[i].usage);
    }
    fprintf(f, "\ntokenize, detokenize, generate and run take --log-level error|warn|info|debug\n");
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
