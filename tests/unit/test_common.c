/* test_common.c - common/: UTF-8 validation against glibc's decoder (C.UTF-8 mbrtowc) over every
 * 1-3 byte sequence and random 4-byte ones; JSON field readers; file maps. */
#include "common/json.h"
#include "common/utf8.h"
#include "common/util.h"

/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
#include <errno.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

/* Oracle: glibc decodes exactly one sequence of `len` bytes. glibc still accepts the pre-2003
 * range above U+10FFFF, which RFC 3629 forbids, so such code points count as invalid. */
static bool glibc_valid(const char *s, size_t len)
{
    mbstate_t st;
    memset(&st, 0, sizeof(st));
    wchar_t wc = 0;
    size_t r = mbrtowc(&wc, s, len, &st);
    return (r == len || (len == 1 && r == 0 && s[0] == 0)) && (uint32_t)wc <= 0x10ffff;
}

static void test_utf8_validate_matches_glibc(void **state)
{
    (void)state;
    if (!setlocale(LC_CTYPE, "C.UTF-8")) {
        skip();
    }
    char b[4];
    for (int a = 0; a < 256; a++) {
        b[0] = (char)a;
        assert_int_equal(utf8_validate(b, 1) == 1, glibc_valid(b, 1));
        for (int c = 0; c < 256; c++) {
            b[1] = (char)c;
            assert_int_equal(utf8_validate(b, 2) == 2,
                             glibc_valid(b, 2) || (glibc_valid(b, 1) && glibc_valid(b + 1, 1)));
            if (a < 0xe0 || a > 0xef) {
                continue;
            }
            for (int d = 0; d < 256; d++) {
                b[2] = (char)d;
                bool want = glibc_valid(b, 3);
                if (utf8_validate(b, 3) == 3 && !want) {
                    fail_msg("accepted %02x %02x %02x", a, c, d);
                }
                if (want) {
                    assert_int_equal(utf8_validate(b, 3), 3);
                }
            }
        }
    }
    uint32_t x = 1;
    for (int n = 0; n < 1000000; n++) {
        x = x * 1103515245u + 12345u;
        b[0] = (char)(0xf0 | ((x >> 24) & 7));
        b[1] = (char)(x >> 16);
        b[2] = (char)(x >> 8);
        b[3] = (char)x;
        assert_int_equal(utf8_validate(b, 4) == 4, glibc_valid(b, 4));
    }
    setlocale(LC_CTYPE, "C");
}

static void test_utf8_validate_reports_offset(void **state)
{
    (void)state;
    const char s[] = "ok \xc3\xa9 then \xc0\xaf";
    assert_int_equal(utf8_validate(s, strlen(s)), strlen("ok \xc3\xa9 then "));
    assert_int_equal(utf8_validate("\xe2\x82", 2), 0);         /* truncated */
    assert_int_equal(utf8_validate("\xed\xa0\x80", 3), 0);     /* surrogate */
    assert_int_equal(utf8_validate("\xf4\x90\x80\x80", 4), 0); /* above U+10FFFF */
}

static void test_json_fields_name_file_and_key(void **state)
{
    (void)state;
    char err[ERRSTR_LEN];
    const char *text = "{\"a\": 5, \"b\": \"x\", \"c\": 2.0, \"d\": true, \"e\": 1e40}";
    json_t *j = json_parse_buf(text, strlen(text), "cfg.json", err, sizeof(err));
    assert_non_null(j);
    int64_t v = -1;
    assert_int_equal(json_field_int(j, "a", 0, 10, &v, "cfg.json", err, sizeof(err)), 0);
    assert_int_equal(v, 5);
    assert_int_equal(json_field_int(j, "c", 0, 10, &v, "cfg.json", err, sizeof(err)), 0);
    assert_int_equal(v, 2);
    assert_int_equal(json_field_int(j, "zz", 0, 10, &v, "cfg.json", err, sizeof(err)), 0);
    assert_int_equal(v, 2); /* absent leaves the default */
    assert_int_equal(json_field_int(j, "b", 0, 10, &v, "cfg.json", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "cfg.json"));
    assert_non_null(strstr(err, "'b'"));
    assert_int_equal(json_field_int(j, "a", 0, 4, &v, "cfg.json", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "outside"));
    assert_int_equal(json_field_int(j, "e", 0, 10, &v, "cfg.json", err, sizeof(err)), -EINVAL);
    bool flag = false;
    assert_int_equal(json_field_bool(j, "d", &flag, "cfg.json", err, sizeof(err)), 0);
    assert_true(flag);
    assert_int_equal(json_field_bool(j, "a", &flag, "cfg.json", err, sizeof(err)), -EINVAL);
    json_decref(j);

    assert_null(json_parse_buf("{\"a\": 1,\n \"a\": 2}", 18, "dup.json", err, sizeof(err)));
    assert_non_null(strstr(err, "dup.json:2:"));
    assert_null(json_parse_buf("{\"a\": ", 6, "cut.json", err, sizeof(err)));
    assert_non_null(strstr(err, "cut.json:"));
}

static void test_file_map_reads_and_reports(void **state)
{
    (void)state;
    char dir[] = "/tmp/judged-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *path = path_join(dir, "f.bin");
    FILE *f = fopen(path, "wb");
    fputs("hello", f);
    fclose(f);
    char err[ERRSTR_LEN];
    struct file_map m;
    assert_int_equal(file_map_open(path, &m, err, sizeof(err)), 0);
    assert_int_equal(m.size, 5);
    assert_memory_equal(m.data, "hello", 5);
    file_map_close(&m);
    assert_int_equal(file_map_open(dir, &m, err, sizeof(err)), -EISDIR);
    char *missing = path_join(dir, "nope");
    assert_int_equal(file_map_open(missing, &m, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, missing));
    unlink(path);
    rmdir(dir);
    free(path);
    free(missing);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_validate_matches_glibc),
        cmocka_unit_test(test_utf8_validate_reports_offset),
        cmocka_unit_test(test_json_fields_name_file_and_key),
        cmocka_unit_test(test_file_map_reads_and_reports),
    };
    return cmocka_run_group_tests_name("common", tests, NULL, NULL);
}
