/* judge_probs.c - expected scores and confidences from the probabilities the model gave the
 * score tokens it generated (beyond JudgeLM; see judge.h for the definition).
 *
 * LLaMA's tokenizer splits digits: "8 7\n" is "8", "▁", "7", "<0x0A>" and "10 8\n" is "1", "0",
 * "▁", "8", "<0x0A>". So the distribution at the first piece of a field is a distribution over
 * its leading digit, where "1" stands for both 1 and 10; the code resolves that as documented in
 * judge.h. Pieces with several digits (other vocabularies) are read as their whole value. */
#include "common/xmalloc.h"
#include "jobs/jobs_impl.h"
#include "jobs/judge.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Appends the text a piece decodes to inside a continuation: U+2581 as a space, byte pieces as
 * their byte, control pieces as nothing. */
static void judge_piece_append(const struct tok *t, int32_t id, struct jobs_buf *b)
{
    const char *piece = tok_piece(t, id);
    if (!piece) {
        return;
    }
    enum tok_piece_type type = tok_type(t, id);
    if (type == TOK_PIECE_CONTROL) {
        return;
    }
    unsigned v;
    if (type == TOK_PIECE_BYTE && sscanf(piece, "<0x%2X>", &v) == 1) {
        char c = (char)v;
        jobs_buf_append(b, &c, 1);
        return;
    }
    for (const char *p = piece; *p;) {
        if ((unsigned char)p[0] == 0xE2 && (unsigned char)p[1] == 0x96 &&
            (unsigned char)p[2] == 0x81) {
            jobs_buf_append(b, " ", 1);
            p += 3;
        } else {
            jobs_buf_append(b, p, 1);
            p++;
        }
    }
}

/* A number piece: n_space spaces then 1..9 ASCII digits, nothing else. Sets the value and
 * whether it is exactly "1" (the ambiguous one). */
static bool judge_number_piece(const struct tok *t, int32_t id, size_t n_space, double *value,
                               bool *is_one)
{
    struct jobs_buf b = { 0 };
    jobs_buf_append(&b, "", 0);
    judge_piece_append(t, id, &b);
    bool ok = b.len > n_space && b.len - n_space <= 9;
    for (size_t i = 0; ok && i < b.len; i++) {
        ok = i < n_space ? b.data[i] == ' ' : (b.data[i] >= '0' && b.data[i] <= '9');
    }
    if (ok) {
        *value = strtod(b.data + n_space, NULL);
        *is_one = strcmp(b.data + n_space, "1") == 0;
    }
    free(b.data);
    return ok;
}

/* The probability of the piece "0" at one position (0 when it is not among the candidates). */
static double judge_prob_zero(const struct tok *t, const struct judge_token_probs *pos)
{
    const char *chosen = tok_piece(t, pos->token);
    if (chosen && strcmp(chosen, "0") == 0) {
        return exp((double)pos->logprob);
    }
    for (int32_t i = 0; i < pos->n_top && i < JUDGE_MAX_TOP; i++) {
        const char *piece = tok_piece(t, pos->top_ids[i]);
        if (piece && strcmp(piece, "0") == 0) {
            return exp((double)pos->top_logprobs[i]);
        }
    }
    return 0.0;
}

static bool judge_same_score(double a, double b)
{
    return a == b || (isnan(a) && isnan(b));
}

/* Field k of a score line: its start offsets, as judge_score_parse splits it. */
static int judge_field_starts(const char *line, size_t len, size_t *starts, int max)
{
    int n = 0;
    starts[n++] = 0;
    for (size_t i = 0; i < len; i++) {
        if (line[i] == ' ' || line[i] == ',') {
            if (n == max) {
                return -1;
            }
            starts[n++] = i + 1;
        }
    }
    return n;
}

/* Scores one field whose first piece is generated token j (the field starts n_space characters
 * into it). */
static bool judge_field_expect(const struct tok *t, const struct judge_token_probs *probs,
                               size_t n_probs, size_t j, size_t n_space, double parsed,
                               double *expected, double *confidence)
{
    const struct judge_token_probs *pos = &probs[j];
    double value;
    bool is_one;
    if (!judge_number_piece(t, pos->token, n_space, &value, &is_one)) {
        return false;
    }
    int32_t ids[JUDGE_MAX_TOP + 1];
    double ps[JUDGE_MAX_TOP + 1];
    int n_cand = 0;
    ids[n_cand] = pos->token;
    ps[n_cand++] = exp((double)pos->logprob);
    for (int32_t i = 0; i < pos->n_top && i < JUDGE_MAX_TOP; i++) {
        if (pos->top_ids[i] != pos->token) {
            ids[n_cand] = pos->top_ids[i];
            ps[n_cand++] = exp((double)pos->top_logprobs[i]);
        }
    }
    double mass = 0.0, sum = 0.0, same = 0.0;
    for (int c = 0; c < n_cand; c++) {
        if (!judge_number_piece(t, ids[c], n_space, &value, &is_one) || !(ps[c] > 0.0)) {
            continue;
        }
        mass += ps[c];
        if (c == 0 && is_one && j + 1 < n_probs) {
            /* "1" was chosen: the next position says how likely "10" was */
            double q0 = judge_prob_zero(t, &probs[j + 1]);
            const char *next = tok_piece(t, probs[j + 1].token);
            bool realized_ten = next && strcmp(next, "0") == 0;
            double v_ten = realized_ten ? parsed : 10.0, v_one = realized_ten ? 1.0 : parsed;
            sum += ps[c] * (q0 * v_ten + (1.0 - q0) * v_one);
            same += ps[c] * (realized_ten ? q0 : 1.0 - q0);
            continue;
        }
        double v = c == 0 ? parsed : is_one ? (parsed >= 5.5 ? 10.0 : 1.0) : value;
        sum += ps[c] * v;
        if (judge_same_score(v, parsed)) {
            same += ps[c];
        }
    }
    if (!(mass > 0.0)) {
        return false;
    }
    *expected = sum / mass;
    *confidence = same / mass;
    return true;
}

int judge_expected_scores(const struct tok *t, enum judge_mode mode, enum judge_output output,
                          const struct judge_token_probs *probs, size_t n_probs,
                          const double *scores, int n_scores, double *expected, double *confidence,
                          bool *available)
{
    if (n_scores < 1 || n_scores > JUDGE_MAX_ANSWERS || !expected || !confidence || !available) {
        return -EINVAL;
    }
    for (int k = 0; k < n_scores; k++) {
        expected[k] = 0.0;
        confidence[k] = 0.0;
        available[k] = false;
    }
    if (!t || !probs || n_probs == 0 || !scores) {
        return 0;
    }
    /* the continuation rebuilt from its pieces, with each token's start offset */
    struct jobs_buf text = { 0 };
    jobs_buf_append(&text, "", 0);
    size_t *starts = xmalloc((n_probs + 1) * sizeof(*starts));
    for (size_t i = 0; i < n_probs; i++) {
        starts[i] = text.len;
        judge_piece_append(t, probs[i].token, &text);
    }
    starts[n_probs] = text.len;
    /* the score line, and where it sits in the continuation */
    const char *prefix = "";
    size_t a = 0, b = text.len;
    const char *nl = memchr(text.data, '\n', text.len);
    if (mode == JUDGE_MODE_SINGLE || mode == JUDGE_MODE_MMVET) {
        prefix = "10";
        b = nl ? (size_t)(nl - text.data) : text.len;
    } else if (output == JUDGE_OUTPUT_FAST) {
        judge_text_strip(text.data, nl ? (size_t)(nl - text.data) : text.len, &a, &b);
    } else {
        judge_text_strip(text.data, text.len, &a, &b);
        const char *nl2 = memchr(text.data + a, '\n', b - a);
        if (nl2) {
            b = (size_t)(nl2 - text.data);
        }
    }
    size_t prefix_len = strlen(prefix);
    struct jobs_buf line = { 0 };
    jobs_buf_append(&line, prefix, prefix_len);
    jobs_buf_append(&line, text.data + a, b - a);
    double check[JUDGE_MAX_ANSWERS];
    size_t field_start[JUDGE_MAX_ANSWERS];
    bool same = judge_score_parse(line.data, line.len, n_scores, check) == 0 &&
                judge_field_starts(line.data, line.len, field_start, n_scores) == n_scores;
    for (int k = 0; same && k < n_scores; k++) {
        same = judge_same_score(check[k], scores[k]);
    }
    for (int k = 0; same && k < n_scores; k++) {
        if (field_start[k] < prefix_len) {
            expected[k] = scores[k];
            confidence[k] = 1.0;
            available[k] = true;
            continue;
        }
        size_t q = a + field_start[k] - prefix_len;
        size_t j = 0;
        while (j < n_probs && starts[j + 1] <= q) {
            j++;
        }
        if (j == n_probs) {
            continue;
        }
        available[k] = judge_field_expect(t, probs, n_probs, j, q - starts[j], scores[k],
                                          &expected[k], &confidence[k]);
    }
    free(line.data);
    free(text.data);
    free(starts);
    return 0;
}
