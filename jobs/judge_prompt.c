/* judge_prompt.c - JudgeLM's judge prompts, byte for byte (research/judgelm.md section 1):
 * system line + "\n" + template + appendix, placeholders filled as str.format fills them (texts
 * inserted verbatim, braces in them left alone), and the multi-answer rewriting of the
 * instruction in JudgeLM's order. */
#include "common/xmalloc.h"
#include "jobs/jobs_impl.h"
#include "jobs/judge.h"

#include <errno.h>
#include <string.h>

static const char judge_system[] =
    "You are a helpful and precise assistant for checking the quality of the answer.";

/* The "[System]" instruction of the pairwise, single and multi templates ({prompt}). */
static const char judge_instruction_pair[] =
    "We would like to request your feedback on the performance of two AI assistants in response "
    "to the user question displayed above.\n"
    "Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each "
    "assistant receives an overall score on a scale of 1 to 10, where a higher score indicates "
    "better overall performance.\n"
    "Please first output a single line containing only two values indicating the scores for "
    "Assistant 1 and 2, respectively. The two scores are separated by a space. In the subsequent "
    "line, please provide a comprehensive explanation of your evaluation, avoiding any potential "
    "bias and ensuring that the order in which the responses were presented does not affect your "
    "judgment.";

/* MM-Vet's instruction (conv_judge_vqa_single_answer); note the "\n " sequences. */
static const char judge_instruction_vqa[] =
    "We would like to request your feedback on the performance of two AI assistants' answers in "
    "comparing with the reference answer and determine if they match meaningfully. Please rate "
    "the helpfulness, relevance, accuracy, level of details of the Assistants' answers. To "
    "accomplish the task, you must : 1. Focus on the meaningful match between the reference "
    "answer and the Assistants' answers.\n"
    " 2. Consider synonyms or paraphrases as valid matches.\n"
    " 3. Evaluate the correctness of the Assistants' answers compared to the reference answer.\n"
    " 4. If there are multiple reference answers, the Assistants' answer is considered correct "
    "as long as it is close to any of the answers.\n"
    "Please first output a single line containing only two values indicating the scores for "
    "Assistant 1 and 2, respectively. The two scores are separated by a space. In the subsequent "
    "line, please provide a comprehensive explanation of your evaluation, avoiding any potential "
    "bias and ensuring that the order in which the responses were presented does not affect your "
    "judgment.";

static const char *const judge_number_words[JUDGE_MAX_ANSWERS + 1] = {
    NULL,       "one",     "two",     "three",     "four",     "five",     "six",
    "seven",    "eight",   "nine",    "ten",       "eleven",   "twelve",   "thirteen",
    "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
};

uint64_t judge_mix64(uint64_t x)
{
    uint64_t z = x + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Python's s.replace(old, new) into a fresh buffer. */
static void judge_replace_all(struct jobs_buf *out, const char *s, const char *old,
                              const char *new_text)
{
    size_t old_len = strlen(old);
    const char *p = s, *hit;
    while ((hit = strstr(p, old)) != NULL) {
        jobs_buf_append(out, p, (size_t)(hit - p));
        jobs_buf_puts(out, new_text);
        p = hit + old_len;
    }
    jobs_buf_puts(out, p);
}

/* The pairwise instruction rewritten for n answers, in JudgeLM's three steps. */
static char *judge_instruction_multi(int n)
{
    struct jobs_buf step1 = { 0 }, step2 = { 0 }, step3 = { 0 };
    judge_replace_all(&step1, judge_instruction_pair, "two", judge_number_words[n]);
    judge_replace_all(&step2, step1.data, "for Assistant 1 and 2", "for Assistant 1");
    const char *anchor = "for Assistant 1";
    const char *hit = strstr(step2.data, anchor);
    size_t cut = (size_t)(hit - step2.data) + strlen(anchor);
    jobs_buf_append(&step3, step2.data, cut);
    for (int k = 2; k < n; k++) {
        jobs_buf_printf(&step3, ", %d", k);
    }
    jobs_buf_printf(&step3, " and %d", n);
    jobs_buf_puts(&step3, step2.data + cut);
    free(step1.data);
    free(step2.data);
    return step3.data;
}

char *judge_mmvet_placeholder(const char *answer, uint64_t seed)
{
    if (strstr(answer, "<OR>")) {
        size_t n_alt = 1;
        for (const char *p = answer; (p = strstr(p, "<OR>")) != NULL; p += 4) {
            n_alt++;
        }
        size_t pick = (size_t)(judge_mix64(seed) % n_alt);
        const char *start = answer;
        for (size_t i = 0; i < pick; i++) {
            start = strstr(start, "<OR>") + 4;
        }
        const char *end = strstr(start, "<OR>");
        return xstrndup(start, end ? (size_t)(end - start) : strlen(start));
    }
    struct jobs_buf out = { 0 };
    judge_replace_all(&out, answer, "<AND>", " and ");
    return out.data;
}

/* One "[The Start of Assistant k's Answer]" block. */
static void judge_answer_block(struct jobs_buf *b, int k, const char *answer)
{
    jobs_buf_printf(b, "[The Start of Assistant %d's Answer]\n", k);
    jobs_buf_puts(b, answer);
    jobs_buf_printf(b, "\n\n[The End of Assistant %d's Answer]\n\n", k);
}

int judge_prompt_render(enum judge_mode mode, const struct judge_prompt_input *in, char **out,
                        size_t *out_len)
{
    int n = in->n_answers;
    switch (mode) {
    case JUDGE_MODE_PAIR:
    case JUDGE_MODE_SINGLE:
        if (n != 2) {
            return -EINVAL;
        }
        break;
    case JUDGE_MODE_MULTI:
        if (n < 2 || n > JUDGE_MAX_ANSWERS) {
            return -EINVAL;
        }
        break;
    case JUDGE_MODE_MMVET:
        if (n != 1 || !in->reference) {
            return -EINVAL;
        }
        break;
    default:
        return -EINVAL;
    }
    if (!in->question || !in->answers ||
        ((mode == JUDGE_MODE_SINGLE || mode == JUDGE_MODE_MMVET) &&
         in->order != JUDGE_ORDER_ORIGINAL)) {
        return -EINVAL;
    }
    for (int k = 0; k < n; k++) {
        if (!in->answers[k]) {
            return -EINVAL;
        }
    }
    const char *a[JUDGE_MAX_ANSWERS];
    char *placeholder = NULL, *instruction_multi = NULL;
    const char *instruction = judge_instruction_pair;
    if (mode == JUDGE_MODE_MMVET) {
        placeholder = judge_mmvet_placeholder(in->reference, in->seed);
        a[0] = placeholder;
        a[1] = in->answers[0];
        instruction = judge_instruction_vqa;
        n = 2;
    } else {
        memcpy(a, in->answers, (size_t)n * sizeof(*a));
        if (in->order == JUDGE_ORDER_SWAPPED) {
            a[0] = in->answers[1];
            a[1] = in->answers[0];
        }
        if (mode == JUDGE_MODE_MULTI) {
            instruction = instruction_multi = judge_instruction_multi(n);
        }
    }
    struct jobs_buf b = { 0 };
    jobs_buf_puts(&b, judge_system);
    jobs_buf_puts(&b, "\n[Question]\n");
    jobs_buf_puts(&b, in->question);
    jobs_buf_puts(&b, "\n\n");
    if (in->reference) {
        jobs_buf_puts(&b, "[Reference Answer]\n");
        jobs_buf_puts(&b, in->reference);
        jobs_buf_puts(&b, "\n\n");
    }
    for (int k = 0; k < n; k++) {
        judge_answer_block(&b, k + 1, a[k]);
    }
    jobs_buf_puts(&b, "[System]\n");
    jobs_buf_puts(&b, instruction);
    jobs_buf_puts(&b, "\n\n");
    jobs_buf_puts(&b, mode == JUDGE_MODE_SINGLE || mode == JUDGE_MODE_MMVET ? "### Response:10"
                                                                            : "### Response:");
    free(placeholder);
    free(instruction_multi);
    *out = b.data;
    if (out_len) {
        *out_len = b.len;
    }
    return 0;
}
