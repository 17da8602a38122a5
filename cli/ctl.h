/* ctl.h - judgectl subcommands. Each takes the arguments after the subcommand name (argv[0] is
 * the subcommand) and returns the process exit status: 0 success, 1 failure, 2 usage error.
 * Results go to stdout, diagnostics to stderr. */
#ifndef CLI_CTL_H
#define CLI_CTL_H

/* judgectl tokenize (--model DIR | --tokenizer FILE) [--no-bos] < text */
int ctl_tokenize(int argc, char **argv);

/* judgectl detokenize (--model DIR | --tokenizer FILE) < ids */
int ctl_detokenize(int argc, char **argv);

/* judgectl inspect DIR [--weights FILE] */
int ctl_inspect(int argc, char **argv);

/* judgectl generate --model PATH --prompt TEXT [sampling options] [--logits FILE] */
int ctl_generate(int argc, char **argv);

/* judgectl run SPEC [--dry-run] [-o FILE]: a whole judge job in-process (no Redis) */
int ctl_run(int argc, char **argv);

/* judgectl metrics --pred FILE --labels FILE [--reversed FILE] [--json] */
int ctl_metrics(int argc, char **argv);

#endif
