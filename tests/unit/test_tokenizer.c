/* test_tokenizer.c - engine/tokenizer: exact agreement with sentencepiece (llama.cpp's 46 LLaMA
 * cases, and the random oracle cases tools/make_tok_cases.py writes for the LLaMA model, tok512
 * and its one-feature variants), with Hugging Face tokenizers for tokenizer.json, decode/encode
 * round trips over random UTF-8, and malformed tokenizer.model / tokenizer.json inputs.
 * Run from the repository root: fixtures are read from tests/fixtures/. */
#include "common/json.h"
#include "common/util.h"
#include "engine/tokenizer.h"
#include "engine/tokenizer_impl.h"

#include <errno.h>
#include <math.h>
/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* cmocka needs the standard headers above. */

#define LLAMA_MODEL  "tests/fixtures/tokenizer/llama/tokenizer.model"
#define LLAMA_JSON   "tests/fixtures/tokenizer/hf-llama2/tokenizer.json"
#define TOK512_MODEL "tests/fixtures/stories260K/tok512.model"
#define CASES_DIR    "tests/fixtures/tokenizer/"
#define LLAMACPP_INP "tests/fixtures/tokenizer/llamacpp/ggml-vocab-llama-spm.gguf.inp"
#define LLAMACPP_OUT "tests/fixtures/tokenizer/llamacpp/ggml-vocab-llama-spm.gguf.out"

/* Pieces whose U+00A0 the Hugging Face conversion turned into ASCII spaces (tokenizer.model is the
 * authority): text with U+00A0, or ids with these pieces, differ between the two files. */
static const int32_t llama_json_nbsp_ids[] = { 8655, 17891, 20246, 30081 };

static struct tok *load_or_fail(const char *path)
{
    char errstr[ERRSTR_LEN] = "";
    struct tok *t = NULL;
    int err = tok_load_file(path, &t, errstr, sizeof(errstr));
    if (err) {
        fail_msg("%s: %d %s", path, err, errstr);
    }
    return t;
}

static char *slurp(const char *path, size_t *len)
{
    char errstr[ERRSTR_LEN];
    char *buf = NULL;
    if (file_read_all(path, &buf, len, errstr, sizeof(errstr)) != 0) {
        fail_msg("%s", errstr);
    }
    return buf;
}

static void print_ids(const char *label, const int32_t *ids, size_t n)
{
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < n && i < 40; i++) {
        fprintf(stderr, " %d", ids[i]);
    }
    fprintf(stderr, "%s\n", n > 40 ? " ..." : "");
}

/* ---- llama.cpp's cases --------------------------------------------------------------------- */

static void check_llamacpp(const char *tok_path, bool skip_nbsp)
{
    struct tok *t = load_or_fail(tok_path);
    size_t inp_len, out_len;
    char *inp = slurp(LLAMACPP_INP, &inp_len);
    char *out = slurp(LLAMACPP_OUT, &out_len);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    char *p = inp, *line = out;
    int n_cases = 0, n_bad = 0, n_skipped = 0;
    for (;;) {
        char *end = strstr(p, sep);
        if (!end) {
            break;
        }
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        int32_t want[512];
        size_t n_want = 0;
        for (char *q = line; *q;) {
            char *next;
            long v = strtol(q, &next, 10);
            if (next == q) {
                break;
            }
            assert_true(n_want < ARRAY_LEN(want));
            want[n_want++] = (int32_t)v;
            q = next;
        }
        bool skip = false;
        for (size_t i = 0; i < n_want && skip_nbsp; i++) {
            for (size_t k = 0; k < ARRAY_LEN(llama_json_nbsp_ids); k++) {
                skip |= want[i] == llama_json_nbsp_ids[k];
            }
        }
        if (skip_nbsp && memmem(p, (size_t)(end - p), "\xc2\xa0", 2)) {
            skip = true;
        }
        if (skip) {
            n_skipped++;
        } else {
            int32_t *ids;
            size_t n_ids;
            assert_int_equal(tok_encode(t, p, (size_t)(end - p), false, &ids, &n_ids), 0);
            if (n_ids != n_want || memcmp(ids, want, n_ids * sizeof(*ids)) != 0) {
                fprintf(stderr, "llama.cpp case %d (%s) differs\n", n_cases, tok_path);
                print_ids("want", want, n_want);
                print_ids("got", ids, n_ids);
                n_bad++;
            }
            free(ids);
        }
        n_cases++;
        p = end + strlen(sep);
        line = nl + 1;
    }
    assert_int_equal(n_cases, 46);
    assert_int_equal(n_skipped, 0); /* none of the 46 touches U+00A0 */
    assert_int_equal(n_bad, 0);
    free(inp);
    free(out);
    tok_destroy(t);
}

static void test_tok_encode_llamacpp_cases(void **state)
{
    (void)state;
    check_llamacpp(LLAMA_MODEL, false);
}

static void test_tok_encode_llamacpp_cases_json(void **state)
{
    (void)state;
    check_llamacpp(LLAMA_JSON, true);
}

/* ---- oracle cases from tools/make_tok_cases.py --------------------------------------------- */

static size_t ids_from_json(const json_t *arr, int32_t **out)
{
    size_t n = json_array_size(arr);
    *out = malloc((n ? n : 1) * sizeof(**out));
    for (size_t i = 0; i < n; i++) {
        (*out)[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    }
    return n;
}

static bool has_nbsp_id(const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < ARRAY_LEN(llama_json_nbsp_ids); k++) {
            if (ids[i] == llama_json_nbsp_ids[k]) {
                return true;
            }
        }
    }
    return false;
}

/* Checks one case object against t: encode (text or hex) gives ids, and decoding ids (or
 * decode_ids) gives decoded. skip_nbsp: leave out cases whose text has U+00A0 or whose ids have
 * one of llama_json_nbsp_ids (the LLaMA tokenizer.json). Returns 1 when checked and bad, 0 when
 * checked and good, -1 when skipped. */
static int check_case(const struct tok *t, const json_t *c, const char *where, int line_no,
                      bool skip_nbsp)
{
    const json_t *text = json_object_get(c, "text"), *hex = json_object_get(c, "hex");
    const json_t *decoded = json_object_get(c, "decoded");
    char *bytes = NULL;
    size_t n_bytes = 0;
    if (text) {
        n_bytes = json_string_length(text);
        bytes = malloc(n_bytes + 1);
        memcpy(bytes, json_string_value(text), n_bytes);
    } else if (hex) {
        const char *h = json_string_value(hex);
        n_bytes = strlen(h) / 2;
        bytes = malloc(n_bytes + 1);
        for (size_t i = 0; i < n_bytes; i++) {
            unsigned v;
            sscanf(h + 2 * i, "%2x", &v);
            bytes[i] = (char)v;
        }
    }
    int32_t *want;
    size_t n_want = ids_from_json(json_object_get(c, bytes ? "ids" : "decode_ids"), &want);
    int result = -1;
    bool skip = skip_nbsp &&
                (has_nbsp_id(want, n_want) || (bytes && memmem(bytes, n_bytes, "\xc2\xa0", 2)));
    if (!skip) {
        result = 0;
        if (bytes) {
            int32_t *ids;
            size_t n_ids;
            assert_int_equal(tok_encode(t, bytes, n_bytes, false, &ids, &n_ids), 0);
            if (n_ids != n_want || memcmp(ids, want, n_ids * sizeof(*ids)) != 0) {
                fprintf(stderr, "%s:%d: encode differs\n", where, line_no);
                print_ids("want", want, n_want);
                print_ids("got", ids, n_ids);
                result = 1;
            }
            /* BOS is only ever an id in front. */
            if (tok_bos_id(t) >= 0) {
                int32_t *ids_bos;
                size_t n_bos;
                assert_int_equal(tok_encode(t, bytes, n_bytes, true, &ids_bos, &n_bos), 0);
                assert_int_equal(n_bos, n_ids + 1);
                assert_int_equal(ids_bos[0], tok_bos_id(t));
                assert_memory_equal(ids_bos + 1, ids, n_ids * sizeof(*ids));
                free(ids_bos);
            }
            free(ids);
        }
        char *out;
        size_t out_len;
        assert_int_equal(tok_decode(t, want, n_want, &out, &out_len), 0);
        if (out_len != json_string_length(decoded) ||
            memcmp(out, json_string_value(decoded), out_len) != 0) {
            fprintf(stderr, "%s:%d: decode differs: want '%s' got '%s'\n", where, line_no,
                    json_string_value(decoded), out);
            result = 1;
        }
        free(out);
    }
    free(want);
    free(bytes);
    return result;
}

/* Calls fn on every line of path, parsed. */
static void for_each_json_line(const char *path,
                               void (*fn)(const json_t *line, int line_no, void *arg), void *arg)
{
    size_t len;
    char *buf = slurp(path, &len);
    int line_no = 0;
    for (char *p = buf; *p;) {
        char *nl = strchr(p, '\n');
        size_t line_len = nl ? (size_t)(nl - p) : strlen(p);
        line_no++;
        char errstr[ERRSTR_LEN];
        json_t *line = json_parse_buf(p, line_len, path, errstr, sizeof(errstr));
        if (!line) {
            fail_msg("%s", errstr);
        }
        fn(line, line_no, arg);
        json_decref(line);
        p += line_len + (nl ? 1 : 0);
    }
    free(buf);
}

struct case_run {
    const struct tok *t;
    const char *path;
    bool skip_nbsp;
    int n_checked;
    int n_bad;
};

static void case_line(const json_t *line, int line_no, void *arg)
{
    struct case_run *run = arg;
    int r = check_case(run->t, line, run->path, line_no, run->skip_nbsp);
    run->n_checked += r >= 0;
    run->n_bad += r > 0;
}

/* Checks every line of cases_path against t. Returns cases checked. */
static int check_cases(const struct tok *t, const char *cases_path, bool skip_nbsp)
{
    struct case_run run = { t, cases_path, skip_nbsp, 0, 0 };
    for_each_json_line(cases_path, case_line, &run);
    if (run.n_bad) {
        fail_msg("%s: %d of %d cases differ", cases_path, run.n_bad, run.n_checked);
    }
    return run.n_checked;
}

static void check_cases_file(const char *tok_path, const char *cases_name, bool skip_nbsp,
                             int min_checked)
{
    struct tok *t = load_or_fail(tok_path);
    char path[256];
    snprintf(path, sizeof(path), CASES_DIR "%s", cases_name);
    int n = check_cases(t, path, skip_nbsp);
    assert_true(n >= min_checked);
    tok_destroy(t);
}

static void test_tok_sp_cases_llama(void **state)
{
    (void)state;
    check_cases_file(LLAMA_MODEL, "sp_cases_llama.jsonl", false, 1200);
}

static void test_tok_sp_cases_llama_json(void **state)
{
    (void)state;
    check_cases_file(LLAMA_JSON, "sp_cases_llama.jsonl", true, 1000);
}

static void test_tok_sp_cases_tok512(void **state)
{
    (void)state;
    check_cases_file(TOK512_MODEL, "sp_cases_tok512.jsonl", false, 1200);
}

/* tok512 with one SentencePiece feature changed: USER_DEFINED pieces (frozen, matched longest
 * first), UNUSED pieces (merged through, then re-split), no byte fallback (one <unk> per run),
 * no dummy prefix, whitespace kept, whitespace not escaped. */
static void test_tok_sp_cases_variants(void **state)
{
    (void)state;
    static const char *const names[] = { "tok512_user",     "tok512_unused", "tok512_nofb",
                                         "tok512_noprefix", "tok512_keepws", "tok512_noescape" };
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        char model[256], cases[256];
        snprintf(model, sizeof(model), CASES_DIR "variants/%s.model", names[i]);
        snprintf(cases, sizeof(cases), "sp_cases_%s.jsonl", names[i]);
        check_cases_file(model, cases, false, 290);
    }
}

static size_t base64_decode(const char *in, uint8_t *out)
{
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; *in && *in != '='; in++) {
        const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const char *p = strchr(alphabet, *in);
        assert_non_null(p);
        acc = acc << 6 | (uint32_t)(p - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return n;
}

static void random_model_line(const json_t *line, int line_no, void *arg)
{
    struct case_run *run = arg;
    const char *b64 = json_string_value(json_object_get(line, "model"));
    uint8_t *model = malloc(strlen(b64));
    size_t len = base64_decode(b64, model);
    char errstr[ERRSTR_LEN] = "", where[64];
    struct tok *t;
    snprintf(where, sizeof(where), "random model %d", line_no);
    if (tok_load_spm_buf(model, len, where, &t, errstr, sizeof(errstr)) != 0) {
        fail_msg("%s", errstr);
    }
    const json_t *cases = json_object_get(line, "cases");
    for (size_t i = 0; i < json_array_size(cases); i++) {
        int r = check_case(t, json_array_get(cases, i), where, (int)i + 1, false);
        run->n_checked += r >= 0;
        run->n_bad += r > 0;
    }
    tok_destroy(t);
    free(model);
}

/* 36 random small models, each mixing missing characters, UNUSED and USER_DEFINED pieces, score
 * ties, -0.0 against 0.0 and denormal scores, byte fallback or not, and random normalizer flags;
 * and one model where signed zeros and denormals decide every merge. */
static void test_tok_sp_cases_random_models(void **state)
{
    (void)state;
    struct case_run run = { NULL, CASES_DIR "sp_cases_random_models.jsonl", false, 0, 0 };
    for_each_json_line(run.path, random_model_line, &run);
    if (run.n_bad) {
        fail_msg("%s: %d of %d cases differ", run.path, run.n_bad, run.n_checked);
    }
    assert_int_equal(run.n_checked, 37 * 20);
}

/* tokenizer.json versions of tok512 against the Hugging Face tokenizers package: the LLaMA-2
 * normalizer, and Metaspace pre-tokenizers with and without splitting. */
static void test_tok_hf_cases_tok512_json(void **state)
{
    (void)state;
    static const char *const names[] = { "tok512_hf", "tok512_hf_metaspace",
                                         "tok512_hf_metaspace_split" };
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        char model[256], cases[256];
        snprintf(model, sizeof(model), CASES_DIR "variants/%s.json", names[i]);
        snprintf(cases, sizeof(cases), "hf_cases_%s.jsonl", names[i]);
        check_cases_file(model, cases, false, 260);
    }
}

/* ---- facts and small behaviours ------------------------------------------------------------ */

static void test_tok_llama_facts(void **state)
{
    (void)state;
    static const char *const paths[] = { LLAMA_MODEL, LLAMA_JSON };
    for (size_t i = 0; i < ARRAY_LEN(paths); i++) {
        struct tok *t = load_or_fail(paths[i]);
        assert_int_equal(tok_n_vocab(t), 32000);
        assert_int_equal(tok_unk_id(t), 0);
        assert_int_equal(tok_bos_id(t), 1);
        assert_int_equal(tok_eos_id(t), 2);
        assert_string_equal(tok_piece(t, 1), "<s>");
        assert_int_equal(tok_type(t, 0), TOK_PIECE_UNKNOWN);
        assert_int_equal(tok_type(t, 2), TOK_PIECE_CONTROL);
        assert_int_equal(tok_type(t, 3 + 0x0a), TOK_PIECE_BYTE);
        assert_string_equal(tok_piece(t, 3 + 0x0a), "<0x0A>");
        assert_string_equal(tok_piece(t, 29871), TOK_SPACE_SYMBOL);
        assert_int_equal(tok_type(t, 15043), TOK_PIECE_NORMAL);
        assert_string_equal(tok_piece(t, 15043), TOK_SPACE_SYMBOL "Hello");
        assert_null(tok_piece(t, 32000));
        assert_null(tok_piece(t, -1));
        assert_int_equal(tok_type(t, 32000), 0);
        if (i == 0) {
            assert_true(tok_score(t, 15043) < 0.0f);
        }
        /* The vocabulary allows merging word by word (the fast path the oracles check). */
        assert_true(t->ws_split);
        tok_destroy(t);
    }
}

static void test_tok_control_text_is_plain(void **state)
{
    (void)state;
    struct tok *t = load_or_fail(LLAMA_MODEL);
    static const char text[] = "<s>[INST] hi </s><unk><s>";
    int32_t *ids;
    size_t n;
    assert_int_equal(tok_encode(t, text, strlen(text), false, &ids, &n), 0);
    for (size_t i = 0; i < n; i++) {
        assert_true(tok_type(t, ids[i]) != TOK_PIECE_CONTROL);
        assert_true(tok_type(t, ids[i]) != TOK_PIECE_UNKNOWN);
    }
    free(ids);
    assert_int_equal(tok_encode(t, text, strlen(text), true, &ids, &n), 0);
    assert_int_equal(ids[0], 1);
    for (size_t i = 1; i < n; i++) {
        assert_true(ids[i] != 1 && ids[i] != 2);
    }
    char *out;
    size_t out_len;
    assert_int_equal(tok_decode(t, ids, n, &out, &out_len), 0);
    assert_string_equal(out, text);
    free(out);
    free(ids);
    /* Empty text: nothing, or BOS alone. */
    assert_int_equal(tok_encode(t, "", 0, false, &ids, &n), 0);
    assert_int_equal(n, 0);
    free(ids);
    assert_int_equal(tok_encode(t, NULL, 0, true, &ids, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 1);
    free(ids);
    assert_int_equal(tok_encode(t, NULL, 3, false, &ids, &n), -EINVAL);
    tok_destroy(t);
}

/* sentencepiece's decode keeps ids' leading-space rule: after BOS/EOS the first piece's U+2581 is
 * the dummy prefix and goes; a byte piece or <unk> before it keeps it. */
static void test_tok_decode_leading_space_rule(void **state)
{
    (void)state;
    struct tok *t = load_or_fail(LLAMA_MODEL);
    static const struct {
        int32_t ids[4];
        size_t n;
        const char *want;
    } cases[] = {
        { { 1, 15043 }, 2, "Hello" },
        { { 1, 2, 15043 }, 3, "Hello" },
        { { 1, 29871, 15043 }, 3, " Hello" },
        { { 3 + 'A', 15043 }, 2, "A Hello" },
        { { 0, 15043 }, 2, " \xe2\x81\x87  Hello" },
        { { 15043, 15043 }, 2, "Hello Hello" },
        { { 3 + 0xe6, 3 + 0x97 }, 2, "\xef\xbf\xbd\xef\xbf\xbd" },
        { { 3 + 0xe6, 1, 3 + 0x97, 3 + 0xa5 }, 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
        { { 3 + 0xe6, 3 + 0x97, 3 + 0xa5 }, 3, "\xe6\x97\xa5" },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char *out;
        size_t len;
        assert_int_equal(tok_decode(t, cases[i].ids, cases[i].n, &out, &len), 0);
        assert_string_equal(out, cases[i].want);
        assert_int_equal(len, strlen(cases[i].want));
        free(out);
    }
    tok_destroy(t);
}

static void test_tok_decode_out_of_range(void **state)
{
    (void)state;
    static const char *const paths[] = { LLAMA_MODEL, LLAMA_JSON, TOK512_MODEL };
    for (size_t i = 0; i < ARRAY_LEN(paths); i++) {
        struct tok *t = load_or_fail(paths[i]);
        int32_t bad[][3] = { { 1, 100, -1 }, { tok_n_vocab(t), 5, 6 }, { 7, INT32_MAX, 8 } };
        for (size_t k = 0; k < ARRAY_LEN(bad); k++) {
            char *out = (char *)1;
            size_t len = 99;
            assert_int_equal(tok_decode(t, bad[k], 3, &out, &len), -EINVAL);
            assert_null(out);
            assert_int_equal(len, 0);
        }
        char *out;
        size_t len;
        assert_int_equal(tok_decode(t, NULL, 0, &out, &len), 0);
        assert_string_equal(out, "");
        free(out);
        tok_destroy(t);
    }
}

static void test_tok_load_dir_and_file(void **state)
{
    (void)state;
    char errstr[ERRSTR_LEN];
    struct tok *t;
    assert_int_equal(tok_load_dir("tests/fixtures/tokenizer/llama", &t, errstr, sizeof(errstr)), 0);
    assert_int_equal(tok_n_vocab(t), 32000);
    tok_destroy(t);
    /* hf-llama2 has only tokenizer.json */
    assert_int_equal(tok_load_dir("tests/fixtures/tokenizer/hf-llama2", &t, errstr, sizeof(errstr)),
                     0);
    assert_int_equal(tok_n_vocab(t), 32000);
    tok_destroy(t);
    assert_int_equal(tok_load_dir("tests/fixtures/no-such-dir", &t, errstr, sizeof(errstr)),
                     -ENOENT);
    assert_null(t);
    assert_non_null(strstr(errstr, "tests/fixtures/no-such-dir"));
    assert_int_equal(tok_load_file("tests/fixtures/no-such-file", &t, errstr, sizeof(errstr)),
                     -ENOENT);
    assert_non_null(strstr(errstr, "no-such-file"));
    /* A file that is neither: a JSON config is not a tokenizer. */
    assert_int_equal(tok_load_file("tests/fixtures/tokenizer/hf-llama2/tokenizer_config.json", &t,
                                   errstr, sizeof(errstr)),
                     -EINVAL);
    assert_non_null(strstr(errstr, "tokenizer_config.json"));
    tok_destroy(NULL);
}

/* ---- round trips --------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dULL;
}

static size_t put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A random code point: ASCII, spaces and controls, Latin, other alphabets, CJK, emoji, rare
 * planes. Never a surrogate, and never U+2581, which SentencePiece reads as an escaped space. */
static uint32_t rand_code_point(uint64_t *s)
{
    uint32_t r = (uint32_t)(rng_next(s) % 100), x = (uint32_t)(rng_next(s) >> 11);
    uint32_t cp;
    if (r < 30) {
        cp = 0x20 + x % 0x5f;
    } else if (r < 40) {
        static const uint32_t ws[] = { ' ', ' ', ' ', '\n', '\t', '\r', 0, 0x0b, 0x1f, 0x7f, 0xa0 };
        cp = ws[x % ARRAY_LEN(ws)];
    } else if (r < 55) {
        cp = 0x80 + x % (0x800 - 0x80);
    } else if (r < 75) {
        cp = 0x800 + x % (0x10000 - 0x800);
    } else if (r < 85) {
        cp = 0x4e00 + x % 0x5200;
    } else if (r < 95) {
        cp = 0x1f300 + x % 0x900;
    } else {
        cp = 0x10000 + x % (0x110000 - 0x10000);
    }
    if ((cp >= 0xd800 && cp <= 0xdfff) || cp == 0x2581) {
        cp = 'x';
    }
    return cp;
}

static void test_tok_roundtrip_random_utf8(void **state)
{
    (void)state;
    struct tok *t = load_or_fail(LLAMA_MODEL);
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    char text[1024];
    int n_strings = 0;
    for (int iter = 0; iter < 4000; iter++) {
        size_t len = 0, n_cp = rng_next(&seed) % 60;
        for (size_t i = 0; i < n_cp; i++) {
            if (rng_next(&seed) % 10 == 0) {
                /* a run of spaces */
                size_t run = 1 + rng_next(&seed) % 8;
                memset(text + len, ' ', run);
                len += run;
            } else {
                len += put_utf8(text + len, rand_code_point(&seed));
            }
        }
        for (int bos = 0; bos < 2; bos++) {
            int32_t *ids;
            size_t n_ids;
            char *out;
            size_t out_len;
            assert_int_equal(tok_encode(t, text, len, bos, &ids, &n_ids), 0);
            if (bos) {
                assert_true(n_ids >= 1);
                assert_int_equal(ids[0], 1);
            }
            assert_int_equal(tok_decode(t, ids, n_ids, &out, &out_len), 0);
            if (out_len != len || memcmp(out, text, len) != 0) {
                fail_msg("round trip %d (bos=%d) differs: %zu bytes in, %zu out", iter, bos, len,
                         out_len);
            }
            free(out);
            free(ids);
        }
        n_strings++;
    }
    assert_int_equal(n_strings, 4000);
    tok_destroy(t);
}

/* ---- malformed tokenizer.model ------------------------------------------------------------- */

struct pbw {
    uint8_t buf[4096];
    size_t n;
};

static void pbw_varint(struct pbw *w, uint64_t v)
{
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        w->buf[w->n++] = (uint8_t)(b | (v ? 0x80 : 0));
    } while (v);
}

static void pbw_bytes(struct pbw *w, uint32_t field, const void *data, size_t len)
{
    pbw_varint(w, (uint64_t)field << 3 | 2);
    pbw_varint(w, len);
    memcpy(w->buf + w->n, data, len);
    w->n += len;
}

static void pbw_int(struct pbw *w, uint32_t field, int64_t v)
{
    pbw_varint(w, (uint64_t)field << 3);
    pbw_varint(w, (uint64_t)v);
}

static void pbw_piece(struct pbw *w, const char *text, float score, int type)
{
    struct pbw p = { .n = 0 };
    pbw_bytes(&p, 1, text, strlen(text));
    uint32_t bits;
    memcpy(&bits, &score, 4);
    pbw_varint(&p, 2 << 3 | 5);
    for (int i = 0; i < 4; i++) {
        p.buf[p.n++] = (uint8_t)(bits >> (8 * i));
    }
    if (type != TOK_PIECE_NORMAL) {
        pbw_int(&p, 3, type);
    }
    pbw_bytes(w, 1, p.buf, p.n);
}

/* What to change in the small model below. */
enum bad_model {
    BAD_NONE = 0,
    BAD_NO_PIECES,
    BAD_UNIGRAM,
    BAD_NO_TRAINER,
    BAD_DUPLICATE,
    BAD_EMPTY_PIECE,
    BAD_TYPE_7,
    BAD_BYTE_SPELLING,
    BAD_BYTE_WITHOUT_FALLBACK,
    BAD_FALLBACK_WITHOUT_BYTES,
    BAD_TWO_UNK,
    BAD_NO_UNK,
    BAD_BOS_ID_RANGE,
    BAD_PAD_ID_RANGE,
    BAD_NAN_SCORE,
    BAD_CHARSMAP,
    BAD_SUFFIX,
    BAD_PIECES_VARINT_WIRE,
    BAD_GROUP_WIRE,
    BAD_LONG_VARINT,
    BAD_LENGTH_PAST_END,
    BAD_TRUNCATED_KEY,
    BAD_FIELD_ZERO,
    BAD_COUNT,
    MODEL_CONTROL_CHAR, /* valid: "b" is a CONTROL piece */
};

/* <unk> <s> </s> ▁ a b ab ▁a, BPE, no byte fallback; normalizer left at proto2 defaults. */
static size_t build_model(enum bad_model bad, uint8_t *out)
{
    struct pbw w = { .n = 0 };
    if (bad != BAD_NO_PIECES) {
        pbw_piece(&w, "<unk>", 0, bad == BAD_NO_UNK ? TOK_PIECE_CONTROL : TOK_PIECE_UNKNOWN);
        pbw_piece(&w, "<s>", 0, TOK_PIECE_CONTROL);
        pbw_piece(&w, "</s>", 0, bad == BAD_TWO_UNK ? TOK_PIECE_UNKNOWN : TOK_PIECE_CONTROL);
        pbw_piece(&w, TOK_SPACE_SYMBOL, -3, TOK_PIECE_NORMAL);
        pbw_piece(&w, "a", -4, TOK_PIECE_NORMAL);
        const char *b = bad == BAD_DUPLICATE ? "a" : bad == BAD_EMPTY_PIECE ? "" : "b";
        int b_type = bad == BAD_TYPE_7 ? 7 : TOK_PIECE_NORMAL;
        if (bad == MODEL_CONTROL_CHAR) {
            b_type = TOK_PIECE_CONTROL;
        }
        pbw_piece(&w, b, -5, b_type);
        pbw_piece(&w, "ab", bad == BAD_NAN_SCORE ? NAN : -1, TOK_PIECE_NORMAL);
        pbw_piece(&w, TOK_SPACE_SYMBOL "a", -2, TOK_PIECE_NORMAL);
        if (bad == BAD_BYTE_SPELLING) {
            pbw_piece(&w, "<0x4g>", 0, TOK_PIECE_BYTE);
        }
        if (bad == BAD_BYTE_WITHOUT_FALLBACK) {
            pbw_piece(&w, "<0x41>", 0, TOK_PIECE_BYTE);
        }
    }
    if (bad != BAD_NO_TRAINER) {
        struct pbw ts = { .n = 0 };
        pbw_int(&ts, 3, bad == BAD_UNIGRAM ? 1 : 2);
        if (bad == BAD_FALLBACK_WITHOUT_BYTES || bad == BAD_BYTE_SPELLING) {
            pbw_int(&ts, 35, 1);
        }
        if (bad == BAD_BOS_ID_RANGE) {
            pbw_int(&ts, 41, 8);
        }
        pbw_int(&ts, 43, bad == BAD_PAD_ID_RANGE ? -2 : -1);
        if (bad == BAD_SUFFIX) {
            pbw_int(&ts, 24, 1);
        }
        pbw_bytes(&w, 2, ts.buf, ts.n);
    }
    if (bad == BAD_CHARSMAP) {
        struct pbw ns = { .n = 0 };
        pbw_bytes(&ns, 1, "nmt_nfkc", 8);
        pbw_bytes(&ns, 2, "\x01\x02", 2);
        pbw_bytes(&w, 3, ns.buf, ns.n);
    }
    if (bad == BAD_PIECES_VARINT_WIRE) {
        pbw_int(&w, 1, 5);
    }
    if (bad == BAD_GROUP_WIRE) {
        pbw_varint(&w, 9 << 3 | 3);
    }
    if (bad == BAD_LONG_VARINT) {
        pbw_varint(&w, 9 << 3);
        for (int i = 0; i < 10; i++) {
            w.buf[w.n++] = 0xff;
        }
        w.buf[w.n++] = 0x01;
    }
    if (bad == BAD_LENGTH_PAST_END) {
        pbw_varint(&w, 1 << 3 | 2);
        pbw_varint(&w, 1000);
        w.buf[w.n++] = 0x0a;
    }
    if (bad == BAD_TRUNCATED_KEY) {
        w.buf[w.n++] = 0x80;
    }
    if (bad == BAD_FIELD_ZERO) {
        pbw_varint(&w, 0 << 3);
        pbw_varint(&w, 0);
    }
    memcpy(out, w.buf, w.n);
    return w.n;
}

static void test_tok_load_small_model(void **state)
{
    (void)state;
    uint8_t buf[4096];
    size_t len = build_model(BAD_NONE, buf);
    char errstr[ERRSTR_LEN] = "";
    struct tok *t;
    assert_int_equal(tok_load_spm_buf(buf, len, "small.model", &t, errstr, sizeof(errstr)), 0);
    assert_int_equal(tok_n_vocab(t), 8);
    assert_int_equal(tok_bos_id(t), 1);
    assert_int_equal(tok_eos_id(t), 2);
    int32_t *ids;
    size_t n;
    /* "▁ab▁a": ab (-1) beats ▁a (-2) on the left, then ▁a on the right; b and c are unknown. */
    assert_int_equal(tok_encode(t, "ab a", 4, true, &ids, &n), 0);
    int32_t want[] = { 1, 3, 6, 7 };
    assert_int_equal(n, ARRAY_LEN(want));
    assert_memory_equal(ids, want, sizeof(want));
    free(ids);
    /* No byte fallback: a run of unknown characters is one <unk>. */
    assert_int_equal(tok_encode(t, "xyz a\xff", 7, false, &ids, &n), 0);
    int32_t want_unk[] = { 3, 0, 7, 0 };
    assert_int_equal(n, ARRAY_LEN(want_unk));
    assert_memory_equal(ids, want_unk, sizeof(want_unk));
    char *out;
    size_t out_len;
    assert_int_equal(tok_decode(t, ids, n, &out, &out_len), 0);
    assert_string_equal(out, " \xe2\x81\x87  a \xe2\x81\x87 ");
    free(out);
    free(ids);
    tok_destroy(t);

    /* sentencepiece would emit the id of a one-character CONTROL piece; judged never lets text
     * become a control id and treats it as unknown. */
    len = build_model(MODEL_CONTROL_CHAR, buf);
    assert_int_equal(tok_load_spm_buf(buf, len, "small.model", &t, errstr, sizeof(errstr)), 0);
    assert_int_equal(tok_type(t, 5), TOK_PIECE_CONTROL);
    assert_int_equal(tok_encode(t, "ba", 2, false, &ids, &n), 0);
    int32_t want_ctrl[] = { 3, 0, 4 };
    assert_int_equal(n, ARRAY_LEN(want_ctrl));
    assert_memory_equal(ids, want_ctrl, sizeof(want_ctrl));
    free(ids);
    tok_destroy(t);
}

static void test_tok_load_bad_models(void **state)
{
    (void)state;
    static const char *const want[BAD_COUNT] = {
        [BAD_NO_PIECES] = "no pieces",
        [BAD_UNIGRAM] = "model_type is 1",
        [BAD_NO_TRAINER] = "model_type is 1",
        [BAD_DUPLICATE] = "are both 'a'",
        [BAD_EMPTY_PIECE] = "piece 5 is empty",
        [BAD_TYPE_7] = "piece type outside",
        [BAD_BYTE_SPELLING] = "not of the form <0xNN>",
        [BAD_BYTE_WITHOUT_FALLBACK] = "byte_fallback is false",
        [BAD_FALLBACK_WITHOUT_BYTES] = "no byte piece <0x00>",
        [BAD_TWO_UNK] = "both UNKNOWN",
        [BAD_NO_UNK] = "no piece has type UNKNOWN",
        [BAD_BOS_ID_RANGE] = "bos_id 8 is outside",
        [BAD_PAD_ID_RANGE] = "pad_id -2 is outside",
        [BAD_NAN_SCORE] = "NaN score",
        [BAD_CHARSMAP] = "precompiled_charsmap",
        [BAD_SUFFIX] = "treat_whitespace_as_suffix",
        [BAD_PIECES_VARINT_WIRE] = "field 1 has wire type 0",
        [BAD_GROUP_WIRE] = "unsupported wire type",
        [BAD_LONG_VARINT] = "varint",
        [BAD_LENGTH_PAST_END] = "runs past the end",
        [BAD_TRUNCATED_KEY] = "truncated varint",
        [BAD_FIELD_ZERO] = "invalid field key",
    };
    for (int bad = BAD_NO_PIECES; bad < BAD_COUNT; bad++) {
        uint8_t buf[4096];
        size_t len = build_model((enum bad_model)bad, buf);
        char errstr[ERRSTR_LEN] = "";
        struct tok *t = (struct tok *)1;
        int err = tok_load_spm_buf(buf, len, "bad.model", &t, errstr, sizeof(errstr));
        if (err != -EINVAL || !strstr(errstr, want[bad]) ||
            strncmp(errstr, "bad.model: ", 11) != 0) {
            fail_msg("case %d: err %d, errstr '%s', want '%s'", bad, err, errstr, want[bad]);
        }
        assert_null(t);
    }
}

/* Every truncation of tok512.model fails cleanly (or, cut exactly after trainer_spec, loads with
 * the normalizer's proto2 defaults); random corruptions never crash. */
static void test_tok_load_truncated_and_corrupted_model(void **state)
{
    (void)state;
    size_t len;
    char *full = slurp(TOK512_MODEL, &len);
    int n_loaded = 0;
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, full, cut);
        char errstr[ERRSTR_LEN] = "";
        struct tok *t = NULL;
        int err = tok_load_spm_buf(copy, cut, "tok512.model", &t, errstr, sizeof(errstr));
        if (err == 0) {
            n_loaded++;
            tok_destroy(t);
        } else {
            assert_int_equal(err, -EINVAL);
            assert_int_equal(strncmp(errstr, "tok512.model: ", 14), 0);
        }
        free(copy);
    }
    assert_true(n_loaded <= 1);

    uint64_t seed = 12345;
    uint8_t *copy = malloc(len);
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(copy, full, len);
        int n_flips = 1 + (int)(rng_next(&seed) % 4);
        for (int k = 0; k < n_flips; k++) {
            copy[rng_next(&seed) % len] ^= (uint8_t)(1 + rng_next(&seed) % 255);
        }
        char errstr[ERRSTR_LEN] = "";
        struct tok *t = NULL;
        int err = tok_load_spm_buf(copy, len, "tok512.model", &t, errstr, sizeof(errstr));
        if (err) {
            assert_int_equal(err, -EINVAL);
            assert_int_equal(strncmp(errstr, "tok512.model: ", 14), 0);
            continue;
        }
        static const char text[] = "Once upon a time, \xe6\x97\xa5 \xff <s> the end.";
        int32_t *ids;
        size_t n;
        char *out;
        size_t out_len;
        assert_int_equal(tok_encode(t, text, sizeof(text) - 1, false, &ids, &n), 0);
        for (size_t i = 0; i < n; i++) {
            assert_true(ids[i] >= 0 && ids[i] < tok_n_vocab(t));
        }
        assert_int_equal(tok_decode(t, ids, n, &out, &out_len), 0);
        free(out);
        free(ids);
        tok_destroy(t);
    }
    free(copy);
    free(full);
}

/* ---- malformed and small tokenizer.json ---------------------------------------------------- */

#define SMALL_JSON_VOCAB                                                                       \
    "{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"\\u2581\":3,\"a\":4,\"b\":5,\"ab\":6,\"\\u2581a\":7," \
    "\"<0x78>\":8,\"<0xC3>\":9,\"<0xA9>\":10}"

static int load_json_str(const char *json, struct tok **t, char *errstr, size_t errstr_len)
{
    return tok_load_hf_json_buf(json, strlen(json), "small.json", t, errstr, errstr_len);
}

static void test_tok_load_small_json(void **state)
{
    (void)state;
    static const char json[] =
        "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
        "{\"id\":1,\"content\":\"<s>\",\"special\":true},"
        "{\"id\":2,\"content\":\"</s>\",\"special\":true}],"
        "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\","
        "\"prepend\":\"\\u2581\"},{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},"
        "\"content\":\"\\u2581\"}]},"
        "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"byte_fallback\":true,"
        "\"fuse_unk\":true,\"vocab\":" SMALL_JSON_VOCAB ","
        "\"merges\":[\"a b\",[\"\\u2581\",\"a\"]]}}";
    char errstr[ERRSTR_LEN] = "";
    struct tok *t;
    assert_int_equal(load_json_str(json, &t, errstr, sizeof(errstr)), 0);
    assert_int_equal(tok_n_vocab(t), 11);
    assert_int_equal(tok_bos_id(t), 1);
    assert_int_equal(tok_type(t, 8), TOK_PIECE_BYTE);
    int32_t *ids;
    size_t n;
    /* "▁ab▁ax\xc3\xa9z": ab has rank 0, so it goes before ▁a; x and é fall back to bytes, z (no
     * byte piece) to <unk>. */
    static const char text[] = "ab ax\xc3\xa9z";
    assert_int_equal(tok_encode(t, text, sizeof(text) - 1, true, &ids, &n), 0);
    int32_t want[] = { 1, 3, 6, 7, 8, 9, 10, 0 };
    assert_int_equal(n, ARRAY_LEN(want));
    assert_memory_equal(ids, want, sizeof(want));
    char *out;
    size_t out_len;
    assert_int_equal(tok_decode(t, ids, n, &out, &out_len), 0);
    assert_string_equal(out, "ab ax\xc3\xa9 \xe2\x81\x87 ");
    free(out);
    free(ids);
    tok_destroy(t);
}

static void test_tok_load_bad_json(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        const char *want;
    } cases[] = {
        { "{\"model\": ", "small.json:1:" },
        { "[1, 2]", "no 'model' object" },
        { "{\"model\":{\"type\":\"Unigram\",\"vocab\":" SMALL_JSON_VOCAB "}}",
          "only BPE is supported" },
        { "{\"model\":{\"type\":\"BPE\"}}", "model.vocab must be" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":5}}}", "ids must be dense" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0}}}", "used twice" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":1}}}", "used twice" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1}}}", "must be an id" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"x\"}}}", "must be an id" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB ",\"merges\":[\"a c\"]}}",
          "merges[0] 'a c'" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB ",\"merges\":[\"ab\"]}}",
          "merges[0] 'ab'" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB
          ",\"merges\":[[\"b\",\"a\"]]}}",
          "'ba' is not in the vocabulary" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB ",\"merges\":[7]}}",
          "merges[0] must be" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB ",\"merges\":{}}}",
          "model.merges must be an array" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB ",\"unk_token\":\"?\"}}",
          "unk_token '?' is not in model.vocab" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB ",\"dropout\":0.1}}",
          "dropout is not supported" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB ",\"byte_fallback\":\"yes\"}}",
          "byte_fallback" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB
          ",\"continuing_subword_prefix\":\"##\"}}",
          "continuing_subword_prefix is not supported" },
        { "{\"normalizer\":{\"type\":\"NFKC\"},\"model\":{\"type\":\"BPE\","
          "\"vocab\":" SMALL_JSON_VOCAB "}}",
          "normalizer type 'NFKC' is not supported" },
        { "{\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" +\"},\"content\":\"x\"},"
          "\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB "}}",
          "String" },
        { "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\","
          "\"vocab\":" SMALL_JSON_VOCAB "}}",
          "pre_tokenizer 'ByteLevel' is not supported" },
        { "{\"pre_tokenizer\":{\"type\":\"Metaspace\",\"prepend_scheme\":\"sometimes\"},"
          "\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB "}}",
          "prepend_scheme 'sometimes'" },
        { "{\"added_tokens\":[{\"id\":4,\"content\":\"zz\",\"special\":true}],"
          "\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB "}}",
          "gives to another piece" },
        { "{\"added_tokens\":[{\"id\":40,\"content\":\"zz\"}],"
          "\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB "}}",
          "ids must be dense" },
        { "{\"added_tokens\":[{\"content\":\"zz\"}],"
          "\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB "}}",
          "added_tokens[0] needs an 'id'" },
        { "{\"added_tokens\":{},\"model\":{\"type\":\"BPE\",\"vocab\":" SMALL_JSON_VOCAB "}}",
          "added_tokens must be an array" },
        { "{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"<unk>\":0,"
          "\"<0x41>\":1,\"<0x41\":2,\"\":3}}}",
          "piece 3 is empty" },
        { "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"a\\u0000\":1}}}",
          "NUL byte in object key" },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char errstr[ERRSTR_LEN] = "";
        struct tok *t = NULL;
        int err = load_json_str(cases[i].json, &t, errstr, sizeof(errstr));
        if (err != -EINVAL || !strstr(errstr, cases[i].want) ||
            strncmp(errstr, "small.json", 10) != 0) {
            fail_msg("case %zu: err %d, errstr '%s', want '%s'", i, err, errstr, cases[i].want);
        }
        assert_null(t);
    }
}

/* The LLaMA tokenizer.json's merges hold pieces with spaces ("▁ " was "▁\u00a0"): each string is
 * split at the space that leaves two pieces whose concatenation is a piece. */
static void test_tok_json_merges_with_spaces(void **state)
{
    (void)state;
    static const char json[] =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"<unk>\":0,\" \":1,\"  \":2,\"    \":3,"
        "\"\\u2581\":4,\"\\u2581 \":5},\"unk_token\":\"<unk>\","
        "\"merges\":[\"   \",\"     \",\"\\u2581  \"]}}";
    char errstr[ERRSTR_LEN] = "";
    struct tok *t;
    assert_int_equal(load_json_str(json, &t, errstr, sizeof(errstr)), 0);
    int32_t *ids;
    size_t n;
    /* No <s>: BOS cannot be asked for. */
    assert_int_equal(tok_bos_id(t), -1);
    assert_int_equal(tok_encode(t, "a", 1, true, &ids, &n), -EINVAL);
    assert_null(ids);
    /* No normalizer: the spaces stay spaces and merge pairwise. */
    assert_int_equal(tok_encode(t, "     ", 5, false, &ids, &n), 0);
    int32_t want[] = { 3, 1 };
    assert_int_equal(n, ARRAY_LEN(want));
    assert_memory_equal(ids, want, sizeof(want));
    free(ids);
    tok_destroy(t);
}

/* Non-special added tokens are matched in the raw text (longest first) and keep the text around
 * them apart, each stretch normalized on its own; special ones never are. */
static void test_tok_json_added_tokens(void **state)
{
    (void)state;
#define ADDED_JSON(extra)                                                         \
    "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"       \
    "{\"id\":11,\"content\":\"[X]\",\"special\":false},"                          \
    "{\"id\":12,\"content\":\"[X]]\",\"special\":false}," extra "],"              \
    "\"normalizer\":{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"              \
    "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"byte_fallback\":true," \
    "\"vocab\":" SMALL_JSON_VOCAB ",\"merges\":[\"a b\",\"\\u2581 a\"]}}"
    static const char dup[] = ADDED_JSON("{\"id\":13,\"content\":\"b\",\"special\":true}");
    static const char ok[] = ADDED_JSON("{\"id\":13,\"content\":\"<b>\",\"special\":true},"
                                        "{\"id\":5,\"content\":\"b\",\"special\":false}");
#undef ADDED_JSON
    char errstr[ERRSTR_LEN] = "";
    struct tok *t;
    assert_int_equal(load_json_str(dup, &t, errstr, sizeof(errstr)), -EINVAL);
    assert_non_null(strstr(errstr, "are both 'b'"));
    assert_int_equal(load_json_str(ok, &t, errstr, sizeof(errstr)), 0);
    assert_int_equal(tok_n_vocab(t), 14);
    assert_int_equal(tok_type(t, 13), TOK_PIECE_CONTROL);
    assert_int_equal(tok_type(t, 11), TOK_PIECE_USER_DEFINED);
    assert_int_equal(tok_type(t, 5), TOK_PIECE_USER_DEFINED);
    int32_t *ids;
    size_t n;
    /* "a" | [X]] | "a" | b | "<" | b | ">": each stretch gets its ▁; < and > are unknown. */
    static const char text[] = "a[X]]ab<b>";
    assert_int_equal(tok_encode(t, text, sizeof(text) - 1, false, &ids, &n), 0);
    int32_t want[] = { 7, 12, 7, 5, 3, 0, 5, 3, 0 };
    if (n != ARRAY_LEN(want) || memcmp(ids, want, sizeof(want)) != 0) {
        print_ids("got", ids, n);
        fail();
    }
    free(ids);
    tok_destroy(t);
}

/* Random corruptions of a small tokenizer.json never crash and fail with the file's name. */
static void test_tok_load_corrupted_json(void **state)
{
    (void)state;
    size_t len;
    char *full = slurp(CASES_DIR "variants/tok512_hf.json", &len);
    uint64_t seed = 777;
    char *copy = malloc(len);
    int n_ok = 0;
    for (int iter = 0; iter < 1500; iter++) {
        memcpy(copy, full, len);
        size_t cut = iter % 3 == 0 ? rng_next(&seed) % len : len;
        for (int k = 0; k < 2; k++) {
            static const char junk[] = "\"{}[]:,0a\\ \xe2\x96\x81";
            copy[rng_next(&seed) % len] = junk[rng_next(&seed) % (sizeof(junk) - 1)];
        }
        char errstr[ERRSTR_LEN] = "";
        struct tok *t = NULL;
        int err = tok_load_hf_json_buf(copy, cut, "tok512_hf.json", &t, errstr, sizeof(errstr));
        if (err) {
            assert_int_equal(err, -EINVAL);
            assert_int_equal(strncmp(errstr, "tok512_hf.json", 14), 0);
            continue;
        }
        n_ok++;
        int32_t *ids;
        size_t n;
        assert_int_equal(tok_encode(t, "Hello there \xff!", 14, false, &ids, &n), 0);
        free(ids);
        tok_destroy(t);
    }
    assert_true(n_ok > 0);
    free(copy);
    free(full);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tok_llama_facts),
        cmocka_unit_test(test_tok_encode_llamacpp_cases),
        cmocka_unit_test(test_tok_encode_llamacpp_cases_json),
        cmocka_unit_test(test_tok_sp_cases_llama),
        cmocka_unit_test(test_tok_sp_cases_llama_json),
        cmocka_unit_test(test_tok_sp_cases_tok512),
        cmocka_unit_test(test_tok_sp_cases_variants),
        cmocka_unit_test(test_tok_sp_cases_random_models),
        cmocka_unit_test(test_tok_hf_cases_tok512_json),
        cmocka_unit_test(test_tok_control_text_is_plain),
        cmocka_unit_test(test_tok_decode_leading_space_rule),
        cmocka_unit_test(test_tok_decode_out_of_range),
        cmocka_unit_test(test_tok_load_dir_and_file),
        cmocka_unit_test(test_tok_roundtrip_random_utf8),
        cmocka_unit_test(test_tok_load_small_model),
        cmocka_unit_test(test_tok_load_bad_models),
        cmocka_unit_test(test_tok_load_truncated_and_corrupted_model),
        cmocka_unit_test(test_tok_load_small_json),
        cmocka_unit_test(test_tok_load_bad_json),
        cmocka_unit_test(test_tok_json_merges_with_spaces),
        cmocka_unit_test(test_tok_json_added_tokens),
        cmocka_unit_test(test_tok_load_corrupted_json),
    };
    return cmocka_run_group_tests_name("tokenizer", tests, NULL, NULL);
}
