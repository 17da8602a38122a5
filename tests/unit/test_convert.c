/* test_convert.c - f16/bf16 -> f32 conversion against an independent formula (ldexp over the
 * bit fields) for all 65,536 patterns, and f32 -> f16 rounding against the compiler's _Float16. */
#include "kernels/cpu/convert.h"

/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
#include <math.h>
#include <string.h>

static double f16_formula(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    double v;
    if (exp == 0x1f) {
        v = mant ? NAN : INFINITY;
    } else if (exp == 0) {
        v = ldexp(mant, -24);
    } else {
        v = ldexp(1024 + mant, exp - 25);
    }
    return sign ? -v : v;
}

static void test_convert_f16_to_f32_all_patterns(void **state)
{
    (void)state;
    for (uint32_t i = 0; i < 65536; i++) {
        float got = kern_cpu_f16_to_f32_one((uint16_t)i);
        double want = f16_formula((uint16_t)i);
        if (isnan(want)) {
            assert_true(isnan(got));
        } else {
            assert_true((double)got == want);
            assert_int_equal(signbit(got) != 0, (i >> 15) != 0);
        }
    }
}

static void test_convert_bf16_to_f32_all_patterns(void **state)
{
    (void)state;
    for (uint32_t i = 0; i < 65536; i++) {
        float got = kern_cpu_bf16_to_f32_one((uint16_t)i);
        /* bf16: 1 sign, 8 exponent, 7 mantissa bits */
        int sign = (int)(i >> 15), exp = (int)((i >> 7) & 0xff), mant = (int)(i & 0x7f);
        double want = exp == 0xff ? (mant ? NAN : INFINITY)
                      : exp == 0  ? ldexp(mant, -133)
                                  : ldexp(128 + mant, exp - 134);
        want = sign ? -want : want;
        if (isnan(want)) {
            assert_true(isnan(got));
        } else {
            assert_true((double)got == want);
        }
    }
}

static void test_convert_f32_to_f16_round_trip_and_rounding(void **state)
{
    (void)state;
    /* every finite f16 survives f16 -> f32 -> f16 */
    for (uint32_t i = 0; i < 65536; i++) {
        if (((i >> 10) & 0x1f) == 0x1f) {
            continue;
        }
        assert_int_equal(kern_cpu_f32_to_f16_one(kern_cpu_f16_to_f32_one((uint16_t)i)), i);
    }
    /* rounding of arbitrary f32 values matches the compiler's conversion (round to nearest even) */
    uint32_t x = 12345;
    for (int n = 0; n < 200000; n++) {
        x = x * 1664525u + 1013904223u;
        float f;
        memcpy(&f, &x, sizeof(f));
        if (isnan(f)) {
            continue;
        }
        __extension__ _Float16 h = f;
        uint16_t want;
        memcpy(&want, &h, sizeof(want));
        assert_int_equal(kern_cpu_f32_to_f16_one(f), want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convert_f16_to_f32_all_patterns),
        cmocka_unit_test(test_convert_bf16_to_f32_all_patterns),
        cmocka_unit_test(test_convert_f32_to_f16_round_trip_and_rounding),
    };
    return cmocka_run_group_tests_name("convert", tests, NULL, NULL);
}
