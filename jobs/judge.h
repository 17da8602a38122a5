/* judge.h - JudgeLM judging as pure logic: the prompt templates, score parsing and text
 * post-processing, expected scores from token probabilities, input readers, and the judge job
 * state machine that a runner (judgectl run, the daemon) drives through a scheduler.
 *
 * Everything here reproduces baaivision/JudgeLM as ../shared/research/judgelm.md describes it;
 * where JudgeLM has a bug or leaves a choice open, the decision is stated at the function and in
 * docs/JOB_SPEC.md. Nothing here touches Redis, the scheduler or the engine's forward pass. */
#ifndef JOBS_JUDGE_H
#define JOBS_JUDGE_H

#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "jobs/eval.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define JUDGE_MAX_ANSWERS 19 /* JudgeLM's number words stop at "nineteen" */
#define JUDGE_MAX_TOP     20 /* most alternatives per generated token */
#define JUDGE_PRED_ID_LEN 22 /* shortuuid length */

/* What is judged: two answers, one graded answer ("### Response:10"), N answers, or an MM-Vet
 * answer against its ground truth. */
enum judge_mode { JUDGE_MODE_PAIR = 0, JUDGE_MODE_SINGLE, JUDGE_MODE_MULTI, JUDGE_MODE_MMVET };

/* Answer order in the prompt: as in the input, or answers 1 and 2 exchanged. */
enum judge_order { JUDGE_ORDER_ORIGINAL = 0, JUDGE_ORDER_SWAPPED };

/* fast: stop at the first newline, keep the score line; detailed: generate up to EOS. */
enum judge_output { JUDGE_OUTPUT_FAST = 0, JUDGE_OUTPUT_DETAILED };

enum judge_input_format {
    JUDGE_INPUT_JUDGELM = 0, /* question_id, question_body, answer{k}_body, reference.text */
    JUDGE_INPUT_PANDALM,     /* idx, instruction, input, response1, response2 */
    JUDGE_INPUT_LLMBAR,      /* input, output_1, output_2 (question_id = position) */
    JUDGE_INPUT_MAPPING,     /* field names given in the spec */
};

enum judge_reference {
    JUDGE_REFERENCE_NONE = 0,
    JUDGE_REFERENCE_EMBEDDED, /* a field of each input record */
    JUDGE_REFERENCE_FILE,     /* a references file matched by record position */
};

enum judge_swap { JUDGE_SWAP_NONE = 0, JUDGE_SWAP_BOTH };

/* Names as written in specs and output ("pair", "original", "fast", ...); the parsers return 0
 * or -EINVAL for an unknown name. Thread-safe. */
const char *judge_mode_name(enum judge_mode m);
int judge_mode_parse(const char *s, enum judge_mode *out);
const char *judge_order_name(enum judge_order o);
const char *judge_output_name(enum judge_output o);
int judge_output_parse(const char *s, enum judge_output *out);
const char *judge_input_format_name(enum judge_input_format f);
int judge_input_format_parse(const char *s, enum judge_input_format *out);
const char *judge_reference_name(enum judge_reference r);
int judge_reference_parse(const char *s, enum judge_reference *out);
const char *judge_swap_name(enum judge_swap s);
int judge_swap_parse(const char *s, enum judge_swap *out);

/* ---- prompts (judge_prompt.c) ---------------------------------------------------------------- */

/* The texts of one sample. Plain data, borrowed for the duration of the call. */
struct judge_prompt_input {
    const char *question;
    const char *reference;      /* NULL: no "[Reference Answer]" block. MM-Vet: required, the
                                 * raw ground truth (may hold <OR>/<AND>) */
    const char *const *answers; /* [n_answers] NUL-terminated, inserted verbatim */
    int n_answers;              /* pair and single 2, multi 2..JUDGE_MAX_ANSWERS, mmvet 1 */
    enum judge_order order;     /* SWAPPED exchanges answers[0] and answers[1] (pair, multi) */
    uint64_t seed;              /* the sample's seed: picks MM-Vet's <OR> alternative */
};

/* Renders the exact string JudgeLM feeds its tokenizer (BOS is added at tokenization):
 * "<system>\n" + template (placeholders filled like str.format, texts verbatim) + appendix.
 * pair: the pairwise template, with the reference block when in->reference is set,
 * "### Response:". single: the same, "### Response:10" (answers[0] is shown as Assistant 1, the
 * reference answer in JudgeLM's pipeline; answers[1] is graded). multi: the multi-answer
 * template with the instruction rewritten for N ("two" -> the number word, "for Assistant 1, 2,
 * ... and N"), "### Response:"; N = 2 gives the pairwise text. mmvet: the reference template
 * with the VQA instruction, Assistant 1 = judge_mmvet_placeholder(reference, seed), Assistant 2 =
 * answers[0], "### Response:10".
 * Returns 0, or -EINVAL for a wrong answer count, a missing text, or swapped order in single or
 * mmvet mode. Caller owns *out (NUL-terminated; free). Thread-safe. */
int judge_prompt_render(enum judge_mode mode, const struct judge_prompt_input *in, char **out,
                        size_t *out_len);

/* MM-Vet's Assistant 1 text from a ground truth: with "<OR>", one alternative of the split,
 * chosen as splitmix64(seed) % n_alternatives (JudgeLM drew it with unseeded random.choice);
 * otherwise every "<AND>" replaced by " and "; otherwise the text unchanged.
 * Caller owns *out (free). Thread-safe. */
char *judge_mmvet_placeholder(const char *answer, uint64_t seed);

/* The splitmix64 finalizer (Steele, Lea, Flood 2014): the mixing step behind every seeded choice
 * and id in jobs/. Thread-safe. */
uint64_t judge_mix64(uint64_t x);

/* ---- score parsing and post-processing (judge_parse.c) --------------------------------------- */

/* Python's float(str) on `len` bytes of UTF-8: surrounding whitespace stripped (ASCII
 * " \t\n\v\f\r" and Unicode White_Space), then sign, digits with PEP 515 underscores between
 * digits, '.', exponent, or "inf"/"infinity"/"nan" in any case. Unicode decimal digits (category
 * Nd, e.g. full-width "８") count as their ASCII digits, as in CPython (table from Unicode 14).
 * Returns true and sets *out, or false where Python raises ValueError. Thread-safe. */
bool judge_float_parse(const char *s, size_t len, double *out);

/* JudgeLM's parse_score generalised to n fields: the text before the first '\n', every ',' made
 * a space, split on single spaces keeping empty fields; exactly n fields, each a Python float.
 * Returns 0 with scores[0..n-1], or -EINVAL with every score set to -1 (JudgeLM's [-1, -1]).
 * n is 1..JUDGE_MAX_ANSWERS. Thread-safe. */
int judge_score_parse(const char *text, size_t len, int n, double *scores);

/* JudgeLM's translate_score_to_win_list with T = 0: +1 when s1 > s2 (answer 1 better), -1 when
 * s2 > s1, 0 otherwise (NaN compares as a tie). Thread-safe. */
int judge_score_win(double s1, double s2);

/* Bounds of Python's str.strip() on UTF-8 text: *start and *end (exclusive) skip the characters
 * for which str.isspace() is true. Thread-safe. */
void judge_text_strip(const char *s, size_t len, size_t *start, size_t *end);

/* pred_text from a generated continuation, as JudgeLM's batch scripts post-process it: fast mode
 * cuts at the first '\n' then strips; detailed mode strips. JudgeLM also cuts one character when
 * the stop keyword is absent (find() returning -1, so every detailed output loses its last
 * character); that bug is NOT reproduced. Caller owns the result (NUL-terminated; free).
 * Thread-safe. */
char *judge_text_postprocess(enum judge_output output, const char *text, size_t len,
                             size_t *out_len);

/* ---- expected scores from token probabilities (judge_probs.c) -------------------------------- */

/* One generated token: its id and log-probability, and the n_top most likely tokens at that
 * position with theirs (log-softmax of the raw logits, before temperature). Plain data. */
struct judge_token_probs {
    int32_t token;
    float logprob;
    int32_t n_top; /* 0..JUDGE_MAX_TOP */
    int32_t top_ids[JUDGE_MAX_TOP];
    float top_logprobs[JUDGE_MAX_TOP];
};

/* The probability-weighted score of each score field, with no extra decoding pass. The score
 * line is rebuilt from the generated pieces as the job reads it (pair and multi: the first line
 * of pred_text; single and mmvet: "10" from the prompt + the raw first line) and split as
 * judge_score_parse does. At the token where field k starts, every candidate (the chosen token
 * and its alternatives) that is a number piece contributes exp(logprob) x its score: the chosen
 * token its parsed score, others their digits' value. "1" is ambiguous (score 1, or the first
 * piece of "10"): where "1" was chosen, the next position's probability of "0" splits its mass
 * between 10 and 1; where an alternative "1" was not chosen, it counts as 10 when the parsed
 * score is >= 5.5, else as 1 (an approximation: that continuation was never scored).
 * expected[k] = sum / (mass of number candidates); confidence[k] = the normalised mass of
 * outcomes equal to the parsed score. A field from the prompt's forced "10" gets 10 and 1.
 * available[k] is false (expected and confidence 0) when the field does not start at a number
 * piece, the rebuilt line does not parse to `scores`, or no probabilities were given.
 * `scores` holds the n_scores parsed scores, or is NULL when the parse failed (then nothing is
 * available). Returns 0, or -EINVAL for bad arguments. Thread-safe. */
int judge_expected_scores(const struct tok *t, enum judge_mode mode, enum judge_output output,
                          const struct judge_token_probs *probs, size_t n_probs,
                          const double *scores, int n_scores, double *expected, double *confidence,
                          bool *available);

/* ---- input samples (judge_input.c) ----------------------------------------------------------- */

struct job_spec;

/* One sample to judge. Plain data owned by whoever loaded it. */
struct judge_sample {
    int64_t question_id;
    size_t i_record; /* 0-based position in the input */
    char *question;
    char *reference; /* NULL without a reference */
    char *answers[JUDGE_MAX_ANSWERS];
    int n_answers;
    json_t *record; /* the input record as parsed (one reference owned) */
};

/* Reads the spec's input (JSONL, or a JSON array) in its input_format, and the references file
 * when reference is "file". Every bad record is an error naming "file:line" (JSONL) or
 * "file:[index]" (array) and the field; duplicate question_ids are errors.
 * Returns 0, -ENOENT/-EIO (file), -EINVAL (content) with errstr. Caller owns *samples; free with
 * judge_samples_free. Thread-safe. */
int judge_input_load(const struct job_spec *spec, struct judge_sample **samples, size_t *n,
                     char *errstr, size_t errstr_len);

/* Frees n samples and the array. No-op on NULL. */
void judge_samples_free(struct judge_sample *samples, size_t n);

/* Frees one sample's fields and zeroes it (the array stays the caller's). */
void judge_sample_clear(struct judge_sample *s);

/* ---- the judge job state machine (judge_job.c, judge_output.c) ------------------------------- */

/* One generation to run: a sample in one answer order. Plain data borrowed from the job, valid
 * until judge_job_destroy. */
struct judge_request {
    size_t i_sample; /* index into the job's samples (input order) */
    int64_t question_id;
    enum judge_order order;
    const char *prompt; /* [prompt_len] NUL-terminated: the exact string before tokenization */
    size_t prompt_len;
    const int32_t *tokens; /* [n_tokens] BOS first; NULL when the job has no tokenizer */
    size_t n_tokens;
    struct sampler_params sampling; /* the spec's sampling, seed = spec seed + i_sample */
    int32_t max_new_tokens;
    const char *stop;   /* fast: "\n" (the text ends before it); detailed: NULL, EOS ends */
    int32_t n_logprobs; /* alternatives wanted per generated token (JUDGE_MAX_TOP) */
};

/* What a finished job did. Plain data. */
struct judge_summary {
    size_t n_samples;
    size_t n_requests;
    size_t n_parse_failed;        /* requests whose score line did not parse (ties in pair mode) */
    size_t n_errors;              /* requests completed with judge_job_complete_error */
    size_t n_win1, n_tie, n_win2; /* pair mode, original order */
    bool has_metrics;             /* labels were given */
    struct eval_metrics metrics;
};

struct judge_job;

/* Loads the spec's input (and references and labels), renders every prompt and, when t is not
 * NULL, tokenizes it with BOS. Requests come sample by sample in input order, the original order
 * before the swapped one, so both prompts of a sample are adjacent (they share a prefix).
 * spec and t are borrowed and must outlive the job (t is also used by judge_job_complete for
 * the expected scores).
 * Returns 0, or a negative errno with errstr (input, references or labels unreadable or bad).
 * Caller owns *out; free with judge_job_destroy. Thread-safe (one job per thread). */
int judge_job_create(const struct job_spec *spec, const struct tok *t, struct judge_job **out,
                     char *errstr, size_t errstr_len);

/* The same over samples already loaded (a shard of a sweep, see judge_shard_parse): takes
 * ownership of samples[0..n-1] (freed by judge_job_destroy, also on failure). Each sample's
 * seed is spec seed + its i_record, so a sample judges the same in any shard. No labels. */
int judge_job_create_samples(const struct job_spec *spec, const struct tok *t,
                             struct judge_sample *samples, size_t n, struct judge_job **out,
                             char *errstr, size_t errstr_len);

/* Frees the job. No-op on NULL. */
void judge_job_destroy(struct judge_job *job);

/* The job's requests. judge_job_request returns NULL past the end; borrowed from the job. */
size_t judge_job_n_requests(const struct judge_job *job);
const struct judge_request *judge_job_request(const struct judge_job *job, size_t i);

/* The samples, in input order. Borrowed from the job. */
size_t judge_job_n_samples(const struct judge_job *job);
const struct judge_sample *judge_job_sample(const struct judge_job *job, size_t i);

/* Records the result of request i: `text` is the generated continuation (special tokens
 * skipped; in fast mode cut before the "\n" stop string, as the scheduler returns it), `probs`
 * one entry per generated token (the stop string's token may be included; EOS excluded), or NULL
 * with n_probs 0. Computes pred_text, the scores, and the expected scores. Completing a request
 * twice replaces the first result. Returns 0, -EINVAL for i out of range. Not thread-safe on one
 * job. */
int judge_job_complete(struct judge_job *job, size_t i, const char *text, size_t text_len,
                       const struct judge_token_probs *probs, size_t n_probs);

/* Records that request i could not run (e.g. its prompt is longer than the context): pred_text
 * is "", the scores fail to parse (a tie), and the output record gets "error": reason.
 * Returns 0, -EINVAL for i out of range. Not thread-safe on one job. */
int judge_job_complete_error(struct judge_job *job, size_t i, const char *reason);

/* Whether every request of sample i_sample is complete. */
bool judge_job_sample_done(const struct judge_job *job, size_t i_sample);

/* The output record of a complete sample, as judge_job_finish writes it (no newline), or NULL
 * when the sample is not complete. Caller owns the result (free). */
char *judge_job_sample_record(const struct judge_job *job, size_t i_sample, size_t *len);

/* Writes the dry-run file: one JSON object per request, in request order, with question_id,
 * order ("original" or "swapped") and prompt. Returns 0 or -EIO. */
int judge_job_write_prompts(const struct judge_job *job, FILE *f);

/* Finishes the job: every request must be complete. Writes the output JSONL sorted by
 * question_id to output_path ("-" for stdout; NULL for the spec's output_path), computes the
 * summary and, with labels (pair mode), the metrics, which also go to the spec's metrics_path
 * as JSON when it is set. Output record: the input record, then "reference" (reference modes),
 * pred_id, pred_text, pred_model_id, tstamp, scores, expected_scores, score_confidence, and in
 * swap mode pred_id_swapped, pred_text_swapped, scores_swapped, expected_scores_swapped,
 * score_confidence_swapped (the swapped run's own frame: its Assistant 1 is answer 2), and
 * "error" for requests that failed. JSON as Python's json.dumps writes it (", ", ": ",
 * ensure_ascii, float repr). Returns 0, -EINVAL (incomplete, no output path), -EIO with errstr.
 * *summary may be NULL. Not thread-safe on one job. */
int judge_job_finish(struct judge_job *job, const char *output_path, struct judge_summary *summary,
                     char *errstr, size_t errstr_len);

/* ---- sweeps: shard payloads and results (judge_shard.c, docs/PROTOCOL.md) ---------------------
 */

/* A shard payload: {"v": 1, "kind": "judge", "spec": spec_json, "samples": [{"i": position in
 * the input, "question_id", "question", "answers": [...], "reference": text or null, "record":
 * the input record}]}, compact JSON with ASCII escapes. Caller owns the result (free). */
char *judge_shard_payload(const json_t *spec_json, const struct judge_sample *samples, size_t n,
                          size_t *len);

/* Parses and validates a shard payload (`name` prefixes errors): the spec through
 * job_spec_parse_buf, every sample's fields. Returns 0, or -EINVAL with errstr. Caller owns
 * *spec (job_spec_destroy) and *samples (judge_samples_free, or judge_job_create_samples). */
int judge_shard_parse(const char *buf, size_t len, const char *name, struct job_spec **spec,
                      struct judge_sample **samples, size_t *n, char *errstr, size_t errstr_len);

/* Merges shard results (each a blob of "<question_id>\t<output record>\n" lines; names[i]
 * labels blob i in errors) into one output file sorted by question_id, exactly as
 * judge_job_finish writes it. A question_id seen twice is an error. Returns 0, -EINVAL, -EIO. */
int judge_results_merge(const char *const *blobs, const size_t *lens, const char *const *names,
                        size_t n_blobs, FILE *f, size_t *n_records, char *errstr,
                        size_t errstr_len);

/* Metrics of shard results (the same blobs as judge_results_merge) against a labels file's
 * content (any format eval_labels_load reads), matched by the question_id of each line, as
 * `judgectl metrics --pred --labels` computes them. Returns 0 or -EINVAL with errstr. */
int judge_results_metrics(const char *const *blobs, const size_t *lens, const char *const *names,
                          size_t n_blobs, const char *labels, size_t labels_len,
                          struct eval_metrics *m, char *errstr, size_t errstr_len);

/* The 22-character id of one judgment (shortuuid's alphabet), a function of the job seed, the
 * question_id and the order, so reruns give identical files. out holds JUDGE_PRED_ID_LEN + 1
 * bytes. Thread-safe. */
void judge_pred_id(uint64_t seed, int64_t question_id, enum judge_order order, char *out);

#endif
