/* test_judge_prompt.c - jobs/judge_prompt.c against JudgeLM's prompts, byte for byte.
 *
 * Oracle: the literals quoted in ../shared/research/judgelm.md section 1 (the fully rendered
 * pairwise prompt, the templates, the [System] instructions, the multi-answer rewriting rules and
 * the worked N = 3 / N = 4 sentences). Every expected string is assembled here with this file's
 * own str.format-style filler and rewriting code; nothing comes from the renderer's tables. */
#include "jobs/judge.h"

/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* research/judgelm.md 1.3: the whole rendered pairwise prompt, <Q>, <A1>, <A2> standing for the
 * inserted texts (974 characters with all three empty). */
static const char doc_pair_rendered[] =
    "You are a helpful and precise assistant for checking the quality of the answer.\n[Question]\n<"
    "Q>\n\n[The Start of Assistant 1's Answer]\n<A1>\n\n[The End of Assistant 1's Answer]\n\n[The "
    "Start of Assistant 2's Answer]\n<A2>\n\n[The End of Assistant 2's Answer]\n\n[System]\nWe "
    "would like to request your feedback on the performance of two AI assistants in response to "
    "the user question displayed above.\nPlease rate the helpfulness, relevance, accuracy, level "
    "of details of their responses. Each assistant receives an overall score on a scale of 1 to "
    "10, where a higher score indicates better overall performance.\nPlease first output a single "
    "line containing only two values indicating the scores for Assistant 1 and 2, respectively. "
    "The two scores are separated by a space. In the subsequent line, please provide a "
    "comprehensive explanation of your evaluation, avoiding any potential bias and ensuring that "
    "the order in which the responses were presented does not affect your judgment.\n\n### "
    "Response:";

/* 1.1 */
static const char doc_system[] =
    "You are a helpful and precise assistant for checking the quality of the answer.";

/* 1.2: exactly two '\n', no trailing newline */
static const char doc_instruction[] =
    "We would like to request your feedback on the performance of two AI assistants in response to "
    "the user question displayed above.\nPlease rate the helpfulness, relevance, accuracy, level "
    "of details of their responses. Each assistant receives an overall score on a scale of 1 to "
    "10, where a higher score indicates better overall performance.\nPlease first output a single "
    "line containing only two values indicating the scores for Assistant 1 and 2, respectively. "
    "The two scores are separated by a space. In the subsequent line, please provide a "
    "comprehensive explanation of your evaluation, avoiding any potential bias and ensuring that "
    "the order in which the responses were presented does not affect your judgment.";

/* 1.4 */
static const char doc_pair_w_ref_template[] =
    "[Question]\n{question}\n\n[Reference Answer]\n{reference}\n\n[The Start of Assistant 1's "
    "Answer]\n{answer_1}\n\n[The End of Assistant 1's Answer]\n\n[The Start of Assistant 2's "
    "Answer]\n{answer_2}\n\n[The End of Assistant 2's Answer]\n\n[System]\n{prompt}\n\n";

/* 1.3 */
static const char doc_pair_template[] =
    "[Question]\n{question}\n\n[The Start of Assistant 1's Answer]\n{answer_1}\n\n[The End of "
    "Assistant 1's Answer]\n\n[The Start of Assistant 2's Answer]\n{answer_2}\n\n[The End of "
    "Assistant 2's Answer]\n\n[System]\n{prompt}\n\n";

/* 1.6 */
static const char doc_multi_template[] =
    "[Question]\n{question}\n\n[The Start of Assistant 1's Answer]\n{answer_1}\n\n[The End of "
    "Assistant 1's Answer]\n\n[The Start of Assistant 2's Answer]\n{answer_2}\n\n[The End of "
    "Assistant 2's Answer]\n\n{answer_more}[System]\n{prompt}\n\n";
static const char doc_multi_block[] = "[The Start of Assistant {answer_id}'s Answer]\n{answer}\n\n"
                                      "[The End of Assistant {answer_id}'s Answer]\n\n";

/* 1.7 */
static const char doc_vqa_instruction[] =
    "We would like to request your feedback on the performance of two AI assistants' answers in "
    "comparing with the reference answer and determine if they match meaningfully. Please rate "
    "the helpfulness, relevance, accuracy, level of details of the Assistants' answers. To "
    "accomplish the task, you must : 1. Focus on the meaningful match between the reference "
    "answer and the Assistants' answers.\n 2. Consider synonyms or paraphrases as valid "
    "matches.\n 3. Evaluate the correctness of the Assistants' answers compared to the reference "
    "answer.\n 4. If there are multiple reference answers, the Assistants' answer is considered "
    "correct as long as it is close to any of the answers.\nPlease first output a single line "
    "containing only two values indicating the scores for Assistant 1 and 2, respectively. The "
    "two scores are separated by a space. In the subsequent line, please provide a comprehensive "
    "explanation of your evaluation, avoiding any potential bias and ensuring that the order in "
    "which the responses were presented does not affect your judgment.";

static const char *const doc_number_words[] = {
    "",         "one",     "two",     "three",     "four",     "five",     "six",
    "seven",    "eight",   "nine",    "ten",       "eleven",   "twelve",   "thirteen",
    "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
};

/* Texts with braces and format fields in them: str.format must leave them alone. */
static const char *const q_text = "What is {question}? Use }{ and {0} and {answer_1}.";
static const char *const ref_text = "The reference {reference}\nwith two lines.";
static const char *const answer_texts[19] = {
    "Answer one {prompt}",
    " two, with spaces ",
    "three",
    "four\n",
    "five",
    "six {answer_more}",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
};

/* Python's s.replace(old, new): a fresh string. */
static char *py_replace(const char *s, const char *old, const char *new_text)
{
    size_t cap = strlen(s) + 1, ol = strlen(old), nl = strlen(new_text);
    for (const char *p = s; (p = strstr(p, old)) != NULL; p += ol) {
        cap += nl;
    }
    char *out = malloc(cap), *w = out;
    const char *p = s, *hit;
    while ((hit = strstr(p, old)) != NULL) {
        memcpy(w, p, (size_t)(hit - p));
        w += hit - p;
        memcpy(w, new_text, nl);
        w += nl;
        p = hit + ol;
    }
    strcpy(w, p);
    return out;
}

/* str.format on a template: each "{name}" replaced once, left to right, by its value. Values
 * are never rescanned, as str.format never rescans them. */
static char *py_format(const char *tmpl, const char *const *names, const char *const *values, int n)
{
    size_t cap = strlen(tmpl) + 1;
    for (int i = 0; i < n; i++) {
        cap += strlen(values[i]);
    }
    char *out = malloc(cap), *w = out;
    for (const char *p = tmpl; *p;) {
        int hit = -1;
        if (*p == '{') {
            for (int i = 0; i < n && hit < 0; i++) {
                size_t l = strlen(names[i]);
                if (strncmp(p + 1, names[i], l) == 0 && p[1 + l] == '}') {
                    hit = i;
                }
            }
        }
        if (hit < 0) {
            *w++ = *p++;
            continue;
        }
        size_t l = strlen(values[hit]);
        memcpy(w, values[hit], l);
        w += l;
        p += strlen(names[hit]) + 2;
    }
    *w = '\0';
    return out;
}

static char *concat3(const char *a, const char *b, const char *c)
{
    char *out = malloc(strlen(a) + strlen(b) + strlen(c) + 1);
    strcpy(out, a);
    strcat(out, b);
    strcat(out, c);
    return out;
}

/* system + "\n" + filled template + appendix */
static char *expected_prompt(const char *tmpl, const char *prompt_text, const char *q,
                             const char *ref, const char *a1, const char *a2, const char *more,
                             const char *appendix)
{
    const char *names[] = {
        "question", "reference", "answer_1", "answer_2", "answer_more", "prompt"
    };
    const char *values[] = { q, ref ? ref : "", a1, a2, more ? more : "", prompt_text };
    char *body = py_format(tmpl, names, values, 6);
    char *head = concat3(doc_system, "\n", body);
    char *all = concat3(head, appendix, "");
    free(body);
    free(head);
    return all;
}

static char *render(enum judge_mode mode, const char *ref, const char *const *answers, int n,
                    enum judge_order order, uint64_t seed)
{
    struct judge_prompt_input in = {
        .question = q_text,
        .reference = ref,
        .answers = answers,
        .n_answers = n,
        .order = order,
        .seed = seed,
    };
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(judge_prompt_render(mode, &in, &out, &len), 0);
    assert_int_equal(len, strlen(out));
    return out;
}

static void assert_same(const char *got, const char *want)
{
    if (strcmp(got, want) != 0) {
        size_t i = 0;
        while (got[i] && got[i] == want[i]) {
            i++;
        }
        fail_msg("prompt differs at byte %zu:\n got: %.60s\nwant: %.60s", i, got + i, want + i);
    }
}

static void test_pair_matches_rendered_doc_string(void **state)
{
    (void)state;
    const char *empty[2] = { "", "" };
    struct judge_prompt_input in = { .question = "", .answers = empty, .n_answers = 2 };
    char *out;
    size_t len;
    assert_int_equal(judge_prompt_render(JUDGE_MODE_PAIR, &in, &out, &len), 0);
    assert_int_equal(len, 974); /* "with all three fields empty ... 974 characters long" */
    free(out);

    char *want1 = py_replace(doc_pair_rendered, "<Q>", q_text);
    char *want2 = py_replace(want1, "<A1>", answer_texts[0]);
    char *want = py_replace(want2, "<A2>", answer_texts[1]);
    char *got = render(JUDGE_MODE_PAIR, NULL, answer_texts, 2, JUDGE_ORDER_ORIGINAL, 0);
    assert_same(got, want);
    /* the same string from the template and the [System] text */
    char *want_tmpl = expected_prompt(doc_pair_template, doc_instruction, q_text, NULL,
                                      answer_texts[0], answer_texts[1], NULL, "### Response:");
    assert_same(got, want_tmpl);
    free(got);
    free(want);
    free(want1);
    free(want2);
    free(want_tmpl);
}

static void test_pair_swapped_exchanges_answers(void **state)
{
    (void)state;
    char *got = render(JUDGE_MODE_PAIR, NULL, answer_texts, 2, JUDGE_ORDER_SWAPPED, 0);
    char *want = expected_prompt(doc_pair_template, doc_instruction, q_text, NULL, answer_texts[1],
                                 answer_texts[0], NULL, "### Response:");
    assert_same(got, want);
    free(got);
    free(want);
}

static void test_pair_with_reference(void **state)
{
    (void)state;
    char *got = render(JUDGE_MODE_PAIR, ref_text, answer_texts, 2, JUDGE_ORDER_ORIGINAL, 0);
    char *want = expected_prompt(doc_pair_w_ref_template, doc_instruction, q_text, ref_text,
                                 answer_texts[0], answer_texts[1], NULL, "### Response:");
    assert_same(got, want);
    /* the instruction does not mention the reference */
    assert_non_null(strstr(got, "[Reference Answer]\nThe reference {reference}\nwith two lines."
                                "\n\n[The Start of Assistant 1's Answer]"));
    free(got);
    free(want);
    got = render(JUDGE_MODE_PAIR, ref_text, answer_texts, 2, JUDGE_ORDER_SWAPPED, 0);
    want = expected_prompt(doc_pair_w_ref_template, doc_instruction, q_text, ref_text,
                           answer_texts[1], answer_texts[0], NULL, "### Response:");
    assert_same(got, want);
    free(got);
    free(want);
}

static void test_single_answer_grading(void **state)
{
    (void)state;
    /* 1.5: the pairwise templates with "### Response:10" */
    char *got = render(JUDGE_MODE_SINGLE, NULL, answer_texts, 2, JUDGE_ORDER_ORIGINAL, 0);
    char *want = expected_prompt(doc_pair_template, doc_instruction, q_text, NULL, answer_texts[0],
                                 answer_texts[1], NULL, "### Response:10");
    assert_same(got, want);
    size_t n = strlen(got);
    assert_string_equal(got + n - strlen("judgment.\n\n### Response:10"),
                        "judgment.\n\n### Response:10");
    free(got);
    free(want);
    got = render(JUDGE_MODE_SINGLE, ref_text, answer_texts, 2, JUDGE_ORDER_ORIGINAL, 0);
    want = expected_prompt(doc_pair_w_ref_template, doc_instruction, q_text, ref_text,
                           answer_texts[0], answer_texts[1], NULL, "### Response:10");
    assert_same(got, want);
    free(got);
    free(want);
}

/* 1.6, the three rewriting steps written independently. */
static char *doc_multi_instruction(int n)
{
    char *s1 = py_replace(doc_instruction, "two", doc_number_words[n]);
    char *s2 = py_replace(s1, "for Assistant 1 and 2", "for Assistant 1");
    const char *anchor = "for Assistant 1";
    char *hit = strstr(s2, anchor) + strlen(anchor);
    char ins[256] = "";
    for (int k = 2; k <= n - 1; k++) {
        char part[16];
        snprintf(part, sizeof(part), ", %d", k);
        strcat(ins, part);
    }
    char last[16];
    snprintf(last, sizeof(last), " and %d", n);
    strcat(ins, last);
    char *out = malloc(strlen(s2) + strlen(ins) + 1);
    memcpy(out, s2, (size_t)(hit - s2));
    strcpy(out + (hit - s2), ins);
    strcat(out, hit);
    free(s1);
    free(s2);
    return out;
}

static char *doc_answer_more(int n, const char *const *answers)
{
    char *more = calloc(1, 1);
    for (int k = 3; k <= n; k++) {
        char id[16];
        snprintf(id, sizeof(id), "%d", k);
        const char *names[] = { "answer_id", "answer" };
        const char *values[] = { id, answers[k - 1] };
        char *block = py_format(doc_multi_block, names, values, 2);
        char *next = concat3(more, block, "");
        free(more);
        free(block);
        more = next;
    }
    return more;
}

static void check_multi(int n, const char *ref, enum judge_order order)
{
    char *instruction = doc_multi_instruction(n);
    char *more = doc_answer_more(n, answer_texts);
    const char *tmpl = doc_multi_template;
    char *tmpl_ref = NULL;
    if (ref) {
        /* "adds [Reference Answer]\n{reference}\n\n after the question, exactly as in 1.4" */
        tmpl_ref = py_replace(doc_multi_template, "{question}\n\n",
                              "{question}\n\n[Reference Answer]\n{reference}\n\n");
        tmpl = tmpl_ref;
    }
    bool swapped = order == JUDGE_ORDER_SWAPPED;
    char *want = expected_prompt(tmpl, instruction, q_text, ref, answer_texts[swapped ? 1 : 0],
                                 answer_texts[swapped ? 0 : 1], more, "### Response:");
    char *got = render(JUDGE_MODE_MULTI, ref, answer_texts, n, order, 0);
    assert_same(got, want);
    free(got);
    free(want);
    free(instruction);
    free(more);
    free(tmpl_ref);
}

static void test_multi_every_n(void **state)
{
    (void)state;
    static const int ns[] = { 2, 3, 4, 10, 19 };
    for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++) {
        check_multi(ns[i], NULL, JUDGE_ORDER_ORIGINAL);
        check_multi(ns[i], ref_text, JUDGE_ORDER_ORIGINAL);
        check_multi(ns[i], NULL, JUDGE_ORDER_SWAPPED);
    }
    for (int n = 2; n <= JUDGE_MAX_ANSWERS; n++) {
        check_multi(n, NULL, JUDGE_ORDER_ORIGINAL);
    }
}

static void test_multi_worked_sentences(void **state)
{
    (void)state;
    /* N = 2 is the pairwise prompt */
    char *pair = render(JUDGE_MODE_PAIR, NULL, answer_texts, 2, JUDGE_ORDER_ORIGINAL, 0);
    char *multi2 = render(JUDGE_MODE_MULTI, NULL, answer_texts, 2, JUDGE_ORDER_ORIGINAL, 0);
    assert_same(multi2, pair);
    free(pair);
    free(multi2);
    /* the sentences research/judgelm.md spells out for N = 3 and N = 4, and ours for 10, 19 */
    struct {
        int n;
        const char *parts[3];
    } cases[] = {
        { 3,
          { "performance of three AI assistants",
            "containing only three values indicating the scores for Assistant 1, 2 and 3, "
            "respectively. The three scores are separated by a space.",
            "[The Start of Assistant 3's Answer]\nthree\n\n[The End of Assistant 3's "
            "Answer]\n\n[System]\n" } },
        { 4,
          { "performance of four AI assistants",
            "containing only four values indicating the scores for Assistant 1, 2, 3 and 4, "
            "respectively. The four scores are separated by a space.",
            "[The End of Assistant 3's Answer]\n\n[The Start of Assistant 4's Answer]\nfour\n\n\n"
            "[The End of Assistant 4's Answer]\n\n[System]\n" } },
        { 10,
          { "performance of ten AI assistants",
            "containing only ten values indicating the scores for Assistant 1, 2, 3, 4, 5, 6, 7, "
            "8, 9 and 10, respectively. The ten scores are separated by a space.",
            "[The Start of Assistant 10's Answer]\nten\n\n[The End of Assistant 10's "
            "Answer]\n\n[System]\n" } },
        { 19,
          { "performance of nineteen AI assistants",
            "containing only nineteen values indicating the scores for Assistant 1, 2, 3, 4, 5, "
            "6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18 and 19, respectively. The nineteen "
            "scores are separated by a space.",
            "[The Start of Assistant 19's Answer]\nnineteen\n\n[The End of Assistant 19's "
            "Answer]\n\n[System]\n" } },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got =
            render(JUDGE_MODE_MULTI, NULL, answer_texts, cases[i].n, JUDGE_ORDER_ORIGINAL, 0);
        for (int k = 0; k < 3; k++) {
            if (!strstr(got, cases[i].parts[k])) {
                fail_msg("N=%d lacks: %s", cases[i].n, cases[i].parts[k]);
            }
        }
        assert_null(strstr(got, " two "));
        assert_non_null(strstr(got, "### Response:"));
        free(got);
    }
}

/* The splitmix64 output for state x, from the published algorithm (Steele et al. 2014). */
static uint64_t ref_splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void check_mmvet(const char *gt, const char *placeholder, uint64_t seed)
{
    const char *pred[1] = { "A cat on a mat {x}" };
    char *got = render(JUDGE_MODE_MMVET, gt, pred, 1, JUDGE_ORDER_ORIGINAL, seed);
    char *want = expected_prompt(doc_pair_w_ref_template, doc_vqa_instruction, q_text, gt,
                                 placeholder, pred[0], NULL, "### Response:10");
    assert_same(got, want);
    free(got);
    free(want);
}

static void test_mmvet_placeholder_rules(void **state)
{
    (void)state;
    check_mmvet("plain answer", "plain answer", 1);
    check_mmvet("red<AND>blue<AND>green", "red and blue and green", 1);
    /* <OR>: one alternative, chosen as splitmix64(seed) % n_alternatives */
    const char *alts[] = { "cat", "", "big dog", "a<AND>b" };
    for (uint64_t seed = 0; seed < 40; seed++) {
        const char *pick = alts[ref_splitmix64(seed) % 4];
        check_mmvet("cat<OR><OR>big dog<OR>a<AND>b", pick, seed); /* <AND> stays inside <OR> */
        char *p = judge_mmvet_placeholder("cat<OR><OR>big dog<OR>a<AND>b", seed);
        assert_string_equal(p, pick);
        free(p);
    }
    /* every alternative is reachable */
    bool seen[4] = { false };
    for (uint64_t seed = 0; seed < 64; seed++) {
        seen[ref_splitmix64(seed) % 4] = true;
    }
    assert_true(seen[0] && seen[1] && seen[2] && seen[3]);
    assert_int_equal(judge_mix64(12345), ref_splitmix64(12345));
}

static void test_render_rejects_bad_inputs(void **state)
{
    (void)state;
    char *out = NULL;
    size_t len;
    struct judge_prompt_input in = { .question = "q", .answers = answer_texts, .n_answers = 3 };
    assert_int_equal(judge_prompt_render(JUDGE_MODE_PAIR, &in, &out, &len), -EINVAL);
    in.n_answers = 20;
    assert_int_equal(judge_prompt_render(JUDGE_MODE_MULTI, &in, &out, &len), -EINVAL);
    in.n_answers = 1;
    assert_int_equal(judge_prompt_render(JUDGE_MODE_MULTI, &in, &out, &len), -EINVAL);
    assert_int_equal(judge_prompt_render(JUDGE_MODE_MMVET, &in, &out, &len), -EINVAL);
    in.n_answers = 2;
    in.order = JUDGE_ORDER_SWAPPED;
    assert_int_equal(judge_prompt_render(JUDGE_MODE_SINGLE, &in, &out, &len), -EINVAL);
    in.question = NULL;
    in.order = JUDGE_ORDER_ORIGINAL;
    assert_int_equal(judge_prompt_render(JUDGE_MODE_PAIR, &in, &out, &len), -EINVAL);
    assert_null(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pair_matches_rendered_doc_string),
        cmocka_unit_test(test_pair_swapped_exchanges_answers),
        cmocka_unit_test(test_pair_with_reference),
        cmocka_unit_test(test_single_answer_grading),
        cmocka_unit_test(test_multi_every_n),
        cmocka_unit_test(test_multi_worked_sentences),
        cmocka_unit_test(test_mmvet_placeholder_rules),
        cmocka_unit_test(test_render_rejects_bad_inputs),
    };
    return cmocka_run_group_tests_name("judge_prompt", tests, NULL, NULL);
}
