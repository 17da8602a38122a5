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

/* judgectl run SPEC [--dry-run] [-o FILE] [--config judged.yaml]: a whole judge job in-process
 * (no Redis); model names resolve through the configuration's models: as judged resolves them */
int ctl_run(int argc, char **argv);

/* judgectl metrics --pred FILE --labels FILE [--reversed FILE] [--json], or
 * judgectl metrics SID [--json] [--partial]: a sweep's metrics from Redis */
int ctl_metrics(int argc, char **argv);

/* ---- commands on Redis (docs/PROTOCOL.md); each takes --redis URL, --namespace NS,
 * --family F and --password-file FILE ---------------------------------------------------------- */

/* judgectl submit SPEC [--id SID] [--queue Q] [--priority N] [--max-attempts N]
 * [--run-budget-s N] [--max-payload-mib N] [--keep DURATION] [--watch]: prints the sweep id */
int ctl_submit(int argc, char **argv);

/* judgectl watch SID [--interval-ms N]: progress on stderr until the sweep ends */
int ctl_watch(int argc, char **argv);

/* judgectl status [SID] [--limit N] [--json] */
int ctl_status(int argc, char **argv);

/* judgectl results SID [-o FILE] [--partial]: JudgeLM's JSONL as judgectl run writes it */
int ctl_results(int argc, char **argv);

/* judgectl metrics SID [--json] [--partial] (ctl_metrics dispatches here) */
int ctl_metrics_sweep(int argc, char **argv);

/* judgectl cancel ID: a sweep, else a job */
int ctl_cancel(int argc, char **argv);

/* judgectl purge SID [--force] | purge --finished-before DURATION [--dry-run]: delete sweeps'
 * keys and jobs now */
int ctl_purge(int argc, char **argv);

/* judgectl queues [--json] */
int ctl_queues(int argc, char **argv);

/* judgectl workers [--json] */
int ctl_workers(int argc, char **argv);

/* judgectl dlq list [--json] | judgectl dlq retry (JID... | --all) */
int ctl_dlq(int argc, char **argv);

/* judgectl pause QUEUE / judgectl resume QUEUE */
int ctl_pause(int argc, char **argv);
int ctl_resume(int argc, char **argv);

/* judgectl schedule add NAME CRON SPEC [...] | list [--json] | remove NAME */
int ctl_schedule(int argc, char **argv);

#endif
