/*
 * tests/unit/test_units: the edges of the duration, size, rate and number parsers.
 *
 * Each parser is driven by a table of (text, expected value) for good inputs and of
 * (text, expected reason) for bad ones, so a new edge is one line.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "conf/units.h"

struct good_u64 {
    const char *text;
    uint64_t value;
};

struct good_dbl {
    const char *text;
    double value;
};

struct bad {
    const char *text;
    const char *why; /* substring of the reason */
};

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static void check_bad_u64(int (*parse)(const char *, uint64_t *, const char **),
                          const struct bad *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t out = 12345;
        const char *why = NULL;
        if (parse(b[i].text, &out, &why) != -1)
            fail_msg("'%s' was accepted as %llu", b[i].text, (unsigned long long)out);
        assert_non_null(why);
        if (strstr(why, b[i].why) == NULL)
            fail_msg("'%s': reason '%s', expected '%s'", b[i].text, why, b[i].why);
        assert_int_equal(out, 12345); /* untouched on error */
    }
}

static void check_good_u64(int (*parse)(const char *, uint64_t *, const char **),
                           const struct good_u64 *g, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t out = 0;
        const char *why = NULL;
        if (parse(g[i].text, &out, &why) != 0)
            fail_msg("'%s' rejected: %s", g[i].text, why);
        if (out != g[i].value)
            fail_msg("'%s' = %llu, expected %llu", g[i].text, (unsigned long long)out,
                     (unsigned long long)g[i].value);
    }
}

static void check_good_dbl(int (*parse)(const char *, double *, const char **),
                           const struct good_dbl *g, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double out = 0;
        const char *why = NULL;
        if (parse(g[i].text, &out, &why) != 0)
            fail_msg("'%s' rejected: %s", g[i].text, why);
        /* Relative tolerance: the parsers promise correctly rounded short decimals,
         * and a quotient like 5000/3600 is within an ulp or two. */
        double diff = out > g[i].value ? out - g[i].value : g[i].value - out;
        if (diff > g[i].value * 1e-15)
            fail_msg("'%s' = %.17g, expected %.17g", g[i].text, out, g[i].value);
    }
}

static void check_bad_dbl(int (*parse)(const char *, double *, const char **), const struct bad *b,
                          size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double out = 42;
        const char *why = NULL;
        if (parse(b[i].text, &out, &why) != -1)
            fail_msg("'%s' was accepted as %g", b[i].text, out);
        assert_non_null(why);
        if (strstr(why, b[i].why) == NULL)
            fail_msg("'%s': reason '%s', expected '%s'", b[i].text, why, b[i].why);
        assert_true(out == 42);
    }
}

static void test_duration_good(void **state)
{
    static const struct good_u64 g[] = {
        {"0s", 0},        {"0ms", 0},
        {"1ms", 1},       {"500ms", 500},
        {"30s", 30000},   {"2m", 120000},
        {"1h", 3600000},  {"24h", 86400000},
        {"1.5s", 1500},   {"0.5s", 500},
        {"0.001s", 1},    {"1.50000s", 1500}, /* trailing zeros cost nothing */
        {"0.25m", 15000}, {"007s", 7000},     /* leading zeros are only digits */
        {"1.0ms", 1},     {"18446744073709551615ms", UINT64_MAX},
    };
    check_good_u64(units_parse_duration_ms, g, ARRAY_LEN(g));
}

static void test_duration_bad(void **state)
{
    static const struct bad b[] = {
        {"", "empty"},
        {"30", "missing unit"}, /* a bare number is rejected */
        {"0", "missing unit"},
        {"-1s", "negative"},
        {"-0s", "negative"},
        {"+1s", "expected a duration"},
        {"s", "expected a duration"},
        {"1.s", "expected a duration"},
        {".5s", "expected a duration"},
        {"1 s", "expected a duration"},
        {" 1s", "expected a duration"},
        {"1s ", "expected a duration"},
        {"1sec", "expected a duration"},
        {"1S", "expected a duration"}, /* units are lower case */
        {"1d", "expected a duration"},
        {"1e3ms", "expected a duration"},
        {"0x10s", "expected a duration"},
        {"infs", "expected a duration"},
        {"nan", "expected a duration"},
        {"inf", "expected a duration"},
        {"1,5s", "expected a duration"},
        {"1.5.0s", "expected a duration"},
        {"0.5ms", "finer than a millisecond"},
        {"1.0001s", "finer than a millisecond"},
        {"1.0000000001s", "finer than a millisecond"}, /* past the exact digits */
        {"18446744073709551616ms", "too large"},
        {"5124095576030432h", "too large"}, /* the product overflows */
        {"99999999999999999999999s", "too large"},
    };
    check_bad_u64(units_parse_duration_ms, b, ARRAY_LEN(b));
    const char *why = NULL;
    uint64_t out;
    assert_int_equal(units_parse_duration_ms(NULL, &out, &why), -1);
}

static void test_size_good(void **state)
{
    static const struct good_u64 g[] = {
        {"0", 0},
        {"512", 512},
        {"512b", 512},
        {"512B", 512},
        {"1k", 1024},
        {"64k", 65536},
        {"64K", 65536},
        {"64kb", 65536},
        {"64KB", 65536},
        {"64kB", 65536},
        {"1m", 1048576},
        {"1M", 1048576},
        {"1g", 1073741824},
        {"1G", 1073741824},
        {"1gb", 1073741824},
        {"1.5k", 1536},
        {"0.5m", 524288},
        {"16777216g", 16777216ull << 30},
        {"18446744073709551615", UINT64_MAX},
    };
    check_good_u64(units_parse_size, g, ARRAY_LEN(g));
}

static void test_size_bad(void **state)
{
    static const struct bad b[] = {
        {"", "empty"},
        {"-1", "negative"},
        {"-1k", "negative"},
        {"k", "expected a size"},
        {"1t", "expected a size"},
        {"1kk", "expected a size"},
        {"1bb", "expected a size"},
        {"1kib", "expected a size"},
        {"1 k", "expected a size"},
        {"1e3", "expected a size"},
        {"0x10", "expected a size"},
        {"inf", "expected a size"},
        {"nan", "expected a size"},
        {"1.", "expected a size"},
        {"0.5", "not a whole number of bytes"},
        {"1.1k", "not a whole number of bytes"},
        {"18446744073709551616", "too large"},
        {"17179869184g", "too large"},
    };
    check_bad_u64(units_parse_size, b, ARRAY_LEN(b));
}

static void test_rate_good(void **state)
{
    static const struct good_dbl g[] = {
        {"10/s", 10},       {"1/s", 1},
        {"0.5/s", 0.5},     {"100/m", 100.0 / 60},
        {"60/m", 1},        {"5000/h", 5000.0 / 3600},
        {"3600/h", 1},      {"1000000000/s", 1e9},
        {"0.1/s", 0.1},     {"0.000000000001/s", 1e-12}, /* more digits than the exact path keeps */
        {"10.25/s", 10.25},
    };
    check_good_dbl(units_parse_rate, g, ARRAY_LEN(g));
}

static void test_rate_bad(void **state)
{
    static const struct bad b[] = {
        {"", "empty"},
        {"0/s", "must be positive"},
        {"0.0/s", "must be positive"},
        {"-1/s", "must be positive"},
        {"10", "expected N/s, N/m or N/h"},
        {"10/", "expected N/s, N/m or N/h"},
        {"/s", "expected N/s, N/m or N/h"},
        {"10 per second", "expected N/s, N/m or N/h"},
        {"10/sec", "expected N/s, N/m or N/h"},
        {"10/d", "expected N/s, N/m or N/h"},
        {"10/S", "expected N/s, N/m or N/h"},
        {"10 /s", "expected N/s, N/m or N/h"},
        {"1e3/s", "expected N/s, N/m or N/h"},
        {"inf/s", "expected N/s, N/m or N/h"},
        {"nan/s", "expected N/s, N/m or N/h"},
        {"0x10/s", "expected N/s, N/m or N/h"},
        {"10/s/s", "expected N/s, N/m or N/h"},
    };
    check_bad_dbl(units_parse_rate, b, ARRAY_LEN(b));

    /* 400 digits: finite as text, infinite as a double. */
    char big[410];
    memset(big, '9', 400);
    strcpy(big + 400, "/s");
    double out;
    const char *why = NULL;
    assert_int_equal(units_parse_rate(big, &out, &why), -1);
    assert_string_equal(why, "too large");
}

static void test_number(void **state)
{
    static const struct good_dbl g[] = {
        {"1", 1}, {"2.5", 2.5}, {"1000000", 1e6}, {"0", 0}, {"0.1", 0.1},
    };
    static const struct bad b[] = {
        {"", "empty"},
        {"-1", "negative"},
        {"1e6", "expected a number"},
        {"inf", "expected a number"},
        {"nan", "expected a number"},
        {"1.", "expected a number"},
        {"1/s", "expected a number"},
        {" 1", "expected a number"},
    };
    check_good_dbl(units_parse_number, g, ARRAY_LEN(g));
    check_bad_dbl(units_parse_number, b, ARRAY_LEN(b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_good), cmocka_unit_test(test_duration_bad),
        cmocka_unit_test(test_size_good),     cmocka_unit_test(test_size_bad),
        cmocka_unit_test(test_rate_good),     cmocka_unit_test(test_rate_bad),
        cmocka_unit_test(test_number),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
