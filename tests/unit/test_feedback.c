/*
 * Unit tests for proxy/feedback: reading an upstream's rate-limit answer headers.
 * Wall-clock "now" is passed in, so HTTP dates and Unix-time resets are exact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/feedback.h"

/* 2026-11-23T00:00:00Z */
#define NOW ((time_t)1795392000)

static void test_retry_after_seconds(void **state)
{
    (void)state;
    assert_int_equal(feedback_retry_after_ms("2", NOW), 2000);
    assert_int_equal(feedback_retry_after_ms(" 0 ", NOW), 0);
    assert_int_equal(feedback_retry_after_ms("120", NOW), 120000);
    /* Absurd waits are capped at a day rather than trusted. */
    assert_int_equal(feedback_retry_after_ms("99999999999", NOW), 24ll * 3600 * 1000);
}

static void test_retry_after_date(void **state)
{
    (void)state;
    assert_int_equal(feedback_retry_after_ms("Mon, 23 Nov 2026 00:00:30 GMT", NOW), 30000);
    assert_int_equal(feedback_retry_after_ms("Sun, 22 Nov 2026 23:59:00 GMT", NOW), 0);
}

static void test_retry_after_garbage(void **state)
{
    (void)state;
    assert_int_equal(feedback_retry_after_ms(NULL, NOW), -1);
    assert_int_equal(feedback_retry_after_ms("", NOW), -1);
    assert_int_equal(feedback_retry_after_ms("-5", NOW), -1);
    assert_int_equal(feedback_retry_after_ms("soon", NOW), -1);
    assert_int_equal(feedback_retry_after_ms("2s", NOW), -1);
    assert_int_equal(feedback_retry_after_ms("Mon, 99 Foo 2026 00:00:30 GMT", NOW), -1);
}

static void test_ratelimit_draft(void **state)
{
    struct feedback_headers h = {.ratelimit = "\"default\";r=3;t=5"};
    struct feedback fb;

    (void)state;
    assert_int_equal(feedback_parse(&h, NOW, &fb), 1);
    assert_true(fb.has_budget);
    assert_int_equal(fb.remaining, 3);
    assert_int_equal(fb.reset_ms, 5000);
    assert_false(fb.has_retry_after);

    /* Several policies: the one with the least remaining governs. */
    h.ratelimit = "\"burst\";r=50;t=1, \"day\";r=2;t=3600";
    assert_int_equal(feedback_parse(&h, NOW, &fb), 1);
    assert_int_equal(fb.remaining, 2);
    assert_int_equal(fb.reset_ms, 3600000);

    /* A negative or malformed count is no value: that policy says nothing (before, "-5"
     * wrapped to a huge count, and "0x" read as 0). */
    h.ratelimit = "\"a\";r=-5;t=5, \"b\";r=7;t=9";
    assert_int_equal(feedback_parse(&h, NOW, &fb), 1);
    assert_int_equal(fb.remaining, 7);
    assert_int_equal(fb.reset_ms, 9000);
    h.ratelimit = "\"a\";r=0x;t=5";
    assert_int_equal(feedback_parse(&h, NOW, &fb), 0);
    assert_false(fb.has_budget);
    h.ratelimit = "\"a\";r=0 ;t=5";
    assert_int_equal(feedback_parse(&h, NOW, &fb), 1);
    assert_int_equal(fb.remaining, 0);
    assert_int_equal(fb.reset_ms, 5000);
}

static void test_x_ratelimit_epoch_and_delta(void **state)
{
    struct feedback_headers h = {.x_ratelimit_remaining = "0", .x_ratelimit_reset = "1795392010"};
    struct feedback fb;

    (void)state;
    assert_int_equal(feedback_parse(&h, NOW, &fb), 1);
    assert_int_equal(fb.remaining, 0);
    assert_int_equal(fb.reset_ms, 10000);
    h.x_ratelimit_reset = "7";
    assert_int_equal(feedback_parse(&h, NOW, &fb), 1);
    assert_int_equal(fb.reset_ms, 7000);
    /* Remaining without a reset says nothing usable. */
    h.x_ratelimit_reset = NULL;
    assert_int_equal(feedback_parse(&h, NOW, &fb), 0);
}

static void test_nothing(void **state)
{
    struct feedback_headers h = {0};
    struct feedback fb;

    (void)state;
    assert_int_equal(feedback_parse(&h, NOW, &fb), 0);
    h.ratelimit = "garbage";
    assert_int_equal(feedback_parse(&h, NOW, &fb), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_after_seconds),         cmocka_unit_test(test_retry_after_date),
        cmocka_unit_test(test_retry_after_garbage),         cmocka_unit_test(test_ratelimit_draft),
        cmocka_unit_test(test_x_ratelimit_epoch_and_delta), cmocka_unit_test(test_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
