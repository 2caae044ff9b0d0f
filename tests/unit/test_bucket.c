/*
 * tests/unit/test_bucket: limiter/bucket against a fake clock.
 *
 * The central property is the window guarantee: whatever a greedy client does, no window
 * of length t holds more than rate * t + burst takes. It is checked by brute force over
 * every pair of takes, with the taker both polling every millisecond and waking at the
 * exact nanosecond bucket_wait_ns() names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "limiter/bucket.h"
#include "tests/unit/fakeclock.h"

#define RATE_PER_HOUR(n) ((double)(n) / 3600.0)

/* How many cost-1 takes succeed right now, without moving the clock. */
static unsigned take_all(struct bucket *b, uint64_t now)
{
    unsigned n = 0;

    while (bucket_take(b, 1, now) == 0) {
        n++;
        assert_true(n <= 2000000); /* a bucket that never refuses */
    }
    return n;
}

static void test_interval_rounding(void **state)
{
    struct bucket b;
    uint64_t now = fake_now();

    assert_int_equal(bucket_init(&b, 10, 1, now), 0);
    assert_int_equal(b.interval_ns, 100000000);
    assert_int_equal(b.burst_ns, 100000000);

    /* 1e9 / 3 = 333333333.33: rounded up, so the limit never runs fast. */
    assert_int_equal(bucket_init(&b, 3, 20, now), 0);
    assert_int_equal(b.interval_ns, 333333334);
    assert_int_equal(b.burst_ns, 20 * 333333334ull);

    /* 5000/h arrives as an inexact quotient; its interval is exactly 0.72 s all the same. */
    assert_int_equal(bucket_init(&b, RATE_PER_HOUR(5000), 1, now), 0);
    assert_int_equal(b.interval_ns, 720000000);

    /* 10/day computed as 10 * (1.0 / 86400) lands just above 8640 s; still exactly 8640 s. */
    assert_int_equal(bucket_init(&b, 10 * (1.0 / 86400), 1, now), 0);
    assert_int_equal(b.interval_ns, 8640 * NS_PER_SEC);
    /* But a quotient really above an integer is rounded up. */
    assert_int_equal(bucket_init(&b, 1e9 / 100000000.5, 1, now), 0);
    assert_int_equal(b.interval_ns, 100000001);

    assert_int_equal(bucket_init(&b, 0.5, 1, now), 0);
    assert_int_equal(b.interval_ns, 2 * NS_PER_SEC);
    assert_float_equal(bucket_rate_per_sec(&b), 0.5, 1e-12);

    assert_int_equal(bucket_init(&b, 1e9, 1e6, now), 0);
    assert_int_equal(b.interval_ns, 1);
    assert_int_equal(b.burst_ns, 1000000);

    /* A fractional burst is rounded down to the nanosecond. */
    assert_int_equal(bucket_init(&b, 1, 2.5, now), 0);
    assert_int_equal(b.burst_ns, 2500000000ull);
    assert_float_equal(bucket_burst_tokens(&b), 2.5, 1e-12);
}

static void test_invalid_arguments(void **state)
{
    struct bucket b, before;
    uint64_t now = fake_now();
    const double bad_rates[] = {0, -1, 1e9 * 1.5, strtod("nan", NULL), strtod("inf", NULL)};
    const double bad_bursts[] = {0, 0.999, -5, 1e6 + 1, strtod("nan", NULL)};

    for (size_t i = 0; i < sizeof(bad_rates) / sizeof(bad_rates[0]); i++)
        assert_int_equal(bucket_init(&b, bad_rates[i], 1, now), -1);
    for (size_t i = 0; i < sizeof(bad_bursts) / sizeof(bad_bursts[0]); i++)
        assert_int_equal(bucket_init(&b, 1, bad_bursts[i], now), -1);
    /* Too slow for the representation: a burst of 1e6 at one token per 10000 s spans
     * 317 years. */
    assert_int_equal(bucket_init(&b, 1e-4, 1e6, now), -1);
    /* One per day with a large burst still fits. */
    assert_int_equal(bucket_init(&b, 1.0 / 86400, 1000, now), 0);

    assert_int_equal(bucket_init(&b, 10, 5, now), 0);
    assert_int_equal(bucket_take(&b, 2, now), 0);
    memcpy(&before, &b, sizeof(b));
    assert_int_equal(bucket_reconfigure(&b, 0, 5, now + NS_PER_SEC), -1);
    assert_int_equal(bucket_reconfigure(&b, 10, 0, now + NS_PER_SEC), -1);
    assert_memory_equal(&b, &before, sizeof(b));
}

/* From full, a burst of N gives exactly N immediate takes, whatever the rate. */
static void test_burst_exact(void **state)
{
    const double rates[] = {10, RATE_PER_HOUR(5000), 0.5, 3, 1e9};
    const double bursts[] = {1, 20};

    for (size_t r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
        for (size_t k = 0; k < sizeof(bursts) / sizeof(bursts[0]); k++) {
            struct bucket b;
            uint64_t now = fake_now();
            assert_int_equal(bucket_init(&b, rates[r], bursts[k], now), 0);
            assert_float_equal(bucket_tokens(&b, now), bursts[k], 1e-9);
            assert_int_equal(take_all(&b, now), (unsigned)bursts[k]);
            assert_float_equal(bucket_tokens(&b, now), 0, 1e-9);
            assert_true(bucket_wait_ns(&b, 1, now) > 0);
        }
    }
    /* A burst of 2.5 gives 2 at once, and the third half an interval later. */
    struct bucket b;
    uint64_t now = fake_now();
    assert_int_equal(bucket_init(&b, 1, 2.5, now), 0);
    assert_int_equal(take_all(&b, now), 2);
    assert_int_equal(bucket_wait_ns(&b, 1, now), NS_PER_SEC / 2);
}

/* One token comes back after exactly one interval, not one nanosecond sooner. */
static void test_refill_timing(void **state)
{
    struct {
        double rate;
        uint64_t interval_ns;
    } cases[] = {
        {10, 100000000},
        {3, 333333334},
        {0.5, 2000000000},
        {RATE_PER_HOUR(5000), 720000000},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct bucket b;
        uint64_t t0 = fake_now();
        assert_int_equal(bucket_init(&b, cases[i].rate, 1, t0), 0);
        assert_int_equal(bucket_take(&b, 1, t0), 0);
        assert_int_equal(bucket_wait_ns(&b, 1, t0), cases[i].interval_ns);
        assert_float_equal(bucket_tokens(&b, t0 + cases[i].interval_ns / 2), 0.5, 1e-8);
        assert_int_equal(bucket_wait_ns(&b, 1, t0 + cases[i].interval_ns - 1), 1);
        assert_int_equal(bucket_take(&b, 1, t0 + cases[i].interval_ns - 1), -1);
        assert_int_equal(bucket_wait_ns(&b, 1, t0 + cases[i].interval_ns), 0);
        assert_int_equal(bucket_take(&b, 1, t0 + cases[i].interval_ns), 0);
        assert_int_equal(bucket_take(&b, 1, t0 + cases[i].interval_ns), -1);
    }
}

/* wait_ns for a cost beyond the burst is the time to drain that many tokens: the
 * dispatcher's prediction for a request behind a queue. */
static void test_wait_beyond_burst(void **state)
{
    struct bucket b;
    uint64_t now = fake_now();

    assert_int_equal(bucket_init(&b, 10, 5, now), 0);
    assert_int_equal(bucket_wait_ns(&b, 5, now), 0);
    assert_int_equal(bucket_wait_ns(&b, 6, now), 100 * NS_PER_MS);
    assert_int_equal(bucket_wait_ns(&b, 25, now), 2 * NS_PER_SEC);
    assert_int_equal(bucket_take(&b, 6, now), -1);
    assert_float_equal(bucket_tokens(&b, now), 5, 1e-12); /* a refused take takes nothing */
    assert_int_equal(bucket_take(&b, 3, now), 0);
    assert_int_equal(bucket_wait_ns(&b, 25, now), 2300 * NS_PER_MS);
    assert_int_equal(bucket_wait_ns(&b, 0, now), 0);
}

/* A cost whose span overflows 64 bits saturates instead of wrapping into a small wait. */
static void test_huge_cost(void **state)
{
    struct bucket b;
    uint64_t now = fake_now();

    assert_int_equal(bucket_init(&b, 0.5, 1e6, now), 0);
    assert_int_equal(bucket_take(&b, UINT64_MAX, now), -1);
    assert_int_equal(bucket_take(&b, UINT64_MAX / 2000000000ull + 1, now), -1);
    assert_true(bucket_wait_ns(&b, UINT64_MAX, now) > 100ull * 365 * 86400 * NS_PER_SEC);
    assert_float_equal(bucket_tokens(&b, now), 1e6, 1e-6);
    assert_int_equal(bucket_take(&b, 1000000, now), 0);
    assert_int_equal(bucket_take(&b, 1, now), -1);
}

/* Takes at the given instants, checked against rate * t + burst for every window
 * [a_i, a_j]. The tolerance absorbs only the last ulp of a rate such as 5000.0 / 3600,
 * whose interval is taken as exact; counts are integers, so any real excess still fails. */
static void assert_window_bound(const uint64_t *at, size_t n, double rate, double burst)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i; j < n; j++) {
            double t_sec = (double)(at[j] - at[i]) / 1e9;
            double count = (double)(j - i + 1);
            if (count > rate * t_sec + burst + 1e-6)
                fail_msg("%zu takes in %.9f s at rate %g burst %g", j - i + 1, t_sec, rate, burst);
        }
    }
}

/* A greedy taker over `duration_ns`: polling every millisecond, or (exact) waking at the
 * nanosecond bucket_wait_ns() names. Also checks it got what the limit promises. */
static void run_greedy(double rate, double burst, uint64_t duration_ns, int exact)
{
    size_t max = (size_t)(rate * (double)duration_ns / 1e9 + burst) + 2;
    uint64_t *at = calloc(max, sizeof(*at));
    size_t n = 0;
    struct bucket b;
    uint64_t start = fake_now(), end = start + duration_ns;

    assert_non_null(at);
    assert_int_equal(bucket_init(&b, rate, burst, start), 0);
    for (uint64_t now = start; now <= end;) {
        while (bucket_take(&b, 1, now) == 0) {
            assert_true(n < max);
            at[n++] = now;
        }
        now += exact ? bucket_wait_ns(&b, 1, now) : NS_PER_MS;
    }
    fake_advance_ns(duration_ns);

    assert_window_bound(at, n, rate, burst);
    /* Greedy loses nothing to polling: GCRA counts from tat, not from the late take. */
    assert_true((double)n >= rate * (double)duration_ns / 1e9 + burst - 1);
    free(at);
}

static void test_window_guarantee(void **state)
{
    /* Each long enough for dozens of intervals of its rate. */
    const struct {
        double rate;
        uint64_t duration_ns;
    } cases[] = {
        {10, 60 * NS_PER_SEC},
        {3, 60 * NS_PER_SEC},
        {0.5, 600 * NS_PER_SEC},
        {RATE_PER_HOUR(5000), 3600 * NS_PER_SEC},
    };
    const double bursts[] = {1, 20};

    for (size_t r = 0; r < sizeof(cases) / sizeof(cases[0]); r++) {
        for (size_t k = 0; k < sizeof(bursts) / sizeof(bursts[0]); k++) {
            run_greedy(cases[r].rate, bursts[k], cases[r].duration_ns, 0);
            run_greedy(cases[r].rate, bursts[k], cases[r].duration_ns, 1);
        }
    }
}

/* After a long idle the bucket holds its burst, never more: integer time does not drift. */
static void test_long_idle(void **state)
{
    struct bucket b;

    assert_int_equal(bucket_init(&b, 3, 20, fake_now()), 0);
    assert_int_equal(take_all(&b, fake_now()), 20);
    fake_advance_ns(86400 * NS_PER_SEC);
    assert_float_equal(bucket_tokens(&b, fake_now()), 20, 1e-9);
    assert_int_equal(take_all(&b, fake_now()), 20);

    /* Idle for a day from full as well. */
    assert_int_equal(bucket_init(&b, 0.5, 1, fake_now()), 0);
    fake_advance_ns(86400 * NS_PER_SEC);
    assert_int_equal(take_all(&b, fake_now()), 1);
}

/* A clock reading that goes back counts as the last one seen: no refill, no debt. */
static void test_clock_backwards(void **state)
{
    struct bucket b;
    uint64_t t0 = fake_now();

    assert_int_equal(bucket_init(&b, 1, 2, t0), 0);
    assert_int_equal(bucket_take(&b, 2, t0 + 500 * NS_PER_MS), 0);
    /* tat is t0 + 2.5 s. Read at t0 (behind the last call), the bucket must look as it
     * does at t0 + 0.5 s: 1 s to the next token, not 1.5 s, and nothing to take. */
    assert_int_equal(bucket_wait_ns(&b, 1, t0), NS_PER_SEC);
    assert_float_equal(bucket_tokens(&b, t0), 0, 1e-12);
    assert_int_equal(bucket_take(&b, 1, t0), -1);
    assert_int_equal(bucket_take(&b, 1, t0 - 3600 * NS_PER_SEC), -1);
    /* Forward again: the token arrives on schedule, and only one. */
    assert_int_equal(bucket_take(&b, 1, t0 + 1500 * NS_PER_MS - 1), -1);
    assert_int_equal(bucket_take(&b, 1, t0 + 1500 * NS_PER_MS), 0);
    assert_int_equal(bucket_take(&b, 1, t0 + 1500 * NS_PER_MS), -1);
    /* A take at a stale time after a later one does not take at the stale time. */
    assert_int_equal(bucket_take(&b, 1, t0 + 10 * NS_PER_SEC), 0);
    assert_int_equal(bucket_take(&b, 1, t0 + 10 * NS_PER_SEC), 0);
    assert_int_equal(bucket_take(&b, 1, t0 + 9 * NS_PER_SEC), -1);
    fake_advance_ns(20 * NS_PER_SEC);
}

static void test_reconfigure_keeps_balance(void **state)
{
    struct bucket b;
    uint64_t now = fake_now();

    assert_int_equal(bucket_init(&b, 10, 20, now), 0);
    assert_int_equal(bucket_take(&b, 5, now), 0);

    /* Half the rate: still 15 tokens. */
    assert_int_equal(bucket_reconfigure(&b, 5, 20, now), 0);
    assert_float_equal(bucket_rate_per_sec(&b), 5, 1e-12);
    assert_float_equal(bucket_burst_tokens(&b), 20, 1e-12);
    assert_float_equal(bucket_tokens(&b, now), 15, 1e-9);
    /* and they refill at the new rate: 200 ms per token. */
    assert_int_equal(bucket_wait_ns(&b, 16, now), 200 * NS_PER_MS);

    /* A smaller burst clamps the balance, a larger one does not refill it. */
    assert_int_equal(bucket_reconfigure(&b, 5, 10, now), 0);
    assert_float_equal(bucket_tokens(&b, now), 10, 1e-9);
    assert_int_equal(bucket_reconfigure(&b, 5, 50, now), 0);
    assert_float_equal(bucket_tokens(&b, now), 10, 1e-9);
    /* An awkward rate change keeps the balance within a nanosecond's worth. */
    assert_int_equal(bucket_reconfigure(&b, 3, 50, now), 0);
    assert_float_equal(bucket_tokens(&b, now), 10, 1e-8);
    assert_int_equal(take_all(&b, now), 10);

    /* An empty bucket stays empty, and a full one full. */
    assert_int_equal(bucket_init(&b, 10, 4, now), 0);
    assert_int_equal(take_all(&b, now), 4);
    assert_int_equal(bucket_reconfigure(&b, 100, 8, now), 0);
    assert_int_equal(take_all(&b, now), 0);
    assert_int_equal(bucket_wait_ns(&b, 1, now), 10 * NS_PER_MS);
    assert_int_equal(bucket_init(&b, 10, 4, now), 0);
    assert_int_equal(bucket_reconfigure(&b, 10, 4, now + NS_PER_SEC), 0);
    assert_int_equal(take_all(&b, now + NS_PER_SEC), 4);
}

/* ---- late takes (bucket_take_since) ---- */

static uint64_t lcg_state = 0x9e3779b97f4a7c15ull;

/* A deterministic lateness in [lo_ns, hi_ns). */
static uint64_t lateness_ns(uint64_t lo_ns, uint64_t hi_ns)
{
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return hi_ns > lo_ns ? lo_ns + (lcg_state >> 33) % (hi_ns - lo_ns) : lo_ns;
}

/* A backlogged taker (waiting since `start`) that wakes when bucket_wait_ns() says, plus a
 * lateness in [late_lo, late_hi) intervals (tenths). Fills at[] with `n` take instants. */
static void run_late(struct bucket *b, int since, unsigned late_lo, unsigned late_hi, uint64_t *at,
                     size_t n)
{
    uint64_t start = fake_now(), now = start;
    uint64_t iv = b->interval_ns;
    size_t k = 0;

    while (k < n) {
        while (k < n && (since ? bucket_take_since(b, 1, now, start) : bucket_take(b, 1, now)) == 0)
            at[k++] = now;
        now += bucket_wait_ns(b, 1, now) + lateness_ns(iv * late_lo / 10, iv * late_hi / 10);
    }
    fake_advance_ns(now - start);
}

/* Every window [a_i, a_j] against the bound of bucket.h: ceil((t + burst_ns) / interval). */
static void assert_late_window_bound(const uint64_t *at, size_t n, const struct bucket *b)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i; j < n; j++) {
            uint64_t t = at[j] - at[i];
            uint64_t bound = (t + b->burst_ns + b->interval_ns - 1) / b->interval_ns;
            if (j - i + 1 > bound)
                fail_msg("%zu takes in %llu ns, bound %llu", j - i + 1, (unsigned long long)t,
                         (unsigned long long)bound);
        }
    }
}

/* Burst 1, takes 0.3 to 0.9 interval late: booked as of their due time, the rate holds;
 * plain takes lose the lateness every time. */
static void test_take_since_keeps_schedule(void **state)
{
    enum { N = 10000 };
    static uint64_t at[N];
    struct bucket b;

    assert_int_equal(bucket_init(&b, 100, 1, fake_now()), 0);
    run_late(&b, 1, 3, 9, at, N);
    double rate = (double)(N - 1) * 1e9 / (double)(at[N - 1] - at[0]);
    assert_true(rate >= 99.9 && rate <= 100.1);

    assert_int_equal(bucket_init(&b, 100, 1, fake_now()), 0);
    run_late(&b, 0, 3, 9, at, N);
    rate = (double)(N - 1) * 1e9 / (double)(at[N - 1] - at[0]);
    assert_true(rate < 65); /* about 1 / 1.6 interval */
}

/* The window bound of bucket.h, by brute force, with lateness from 0 to 2 intervals (so
 * some takes keep their slot and some lose it), for round and awkward intervals and whole,
 * fractional and large bursts. 1 s windows at 100/s: never more than 101. */
static void test_take_since_window_bound(void **state)
{
    enum { N = 3000 };
    static uint64_t at[N];
    const double rates[] = {100, 3, RATE_PER_HOUR(5000)};
    const double bursts[] = {1, 1.5, 2, 20};

    for (size_t r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
        for (size_t k = 0; k < sizeof(bursts) / sizeof(bursts[0]); k++) {
            struct bucket b;
            assert_int_equal(bucket_init(&b, rates[r], bursts[k], fake_now()), 0);
            run_late(&b, 1, 0, 20, at, N);
            assert_late_window_bound(at, N, &b);
            if (rates[r] == 100) {
                /* Windows of exactly 1 s: rate * t is whole, so the plain bound holds. */
                for (size_t i = 0, j = 0; i < N; i++) {
                    while (j < N && at[j] - at[i] <= NS_PER_SEC)
                        j++;
                    assert_true(j - i <= 100 + (size_t)bursts[k]);
                }
            }
        }
    }
}

/* The one token more: a take late by almost an interval, then the next on time, are two
 * takes within a window shorter than an interval (bound ceil(t / interval) + 1 = 2). */
static void test_take_since_one_more(void **state)
{
    struct bucket b;
    uint64_t t0 = fake_now();
    const uint64_t iv = 10 * NS_PER_MS;

    assert_int_equal(bucket_init(&b, 100, 1, t0), 0);
    assert_int_equal(bucket_take_since(&b, 1, t0, t0), 0);
    assert_int_equal(bucket_take_since(&b, 1, t0 + 2 * iv - 1, t0), 0); /* due t0 + iv */
    assert_int_equal(bucket_wait_ns(&b, 1, t0 + 2 * iv - 1), 1);
    assert_int_equal(bucket_take_since(&b, 1, t0 + 2 * iv, t0), 0);
    assert_int_equal(bucket_take_since(&b, 1, t0 + 2 * iv, t0), -1);
    fake_advance_ns(2 * iv);
}

/* No idle credit: tokens that came due while nobody waited are not booked in the past. */
static void test_take_since_no_idle_credit(void **state)
{
    struct bucket b;
    uint64_t t0 = fake_now();
    const uint64_t iv = 10 * NS_PER_MS;

    assert_int_equal(bucket_init(&b, 100, 1, t0), 0);
    assert_int_equal(bucket_take_since(&b, 1, t0, t0), 0);
    /* Due at t0 + iv; the waiter came at t0 + 1.5 iv: booked now. */
    uint64_t now = t0 + 3 * iv / 2;
    assert_int_equal(bucket_take_since(&b, 1, now, now), 0);
    assert_int_equal(bucket_take_since(&b, 1, now, now), -1);
    assert_int_equal(bucket_wait_ns(&b, 1, now), iv);
    /* Long idle from full: two immediate takes, the second refused. */
    now += 10 * NS_PER_SEC;
    assert_int_equal(bucket_take_since(&b, 1, now, now - NS_PER_SEC), 0);
    assert_int_equal(bucket_take_since(&b, 1, now, now - NS_PER_SEC), -1);
    assert_int_equal(bucket_wait_ns(&b, 1, now), iv);
    fake_advance_ns(now - t0);
}

/* One interval late or more: the slot is gone, booked now. Never booked before the latest
 * instant the bucket saw (a refused take here), so booked instants stay in order. */
static void test_take_since_stall_and_order(void **state)
{
    struct bucket b;
    uint64_t t0 = fake_now();
    const uint64_t iv = 100 * NS_PER_MS;

    assert_int_equal(bucket_init(&b, 10, 1, t0), 0);
    assert_int_equal(bucket_take_since(&b, 1, t0, t0), 0);
    assert_int_equal(bucket_take_since(&b, 1, t0 + 2 * iv, t0), 0); /* exactly 1 late */
    assert_int_equal(bucket_wait_ns(&b, 1, t0 + 2 * iv), iv);
    assert_int_equal(bucket_take_since(&b, 1, t0 + 8 * iv, t0), 0); /* 5 late: one take */
    assert_int_equal(bucket_take_since(&b, 1, t0 + 8 * iv, t0), -1);
    assert_int_equal(bucket_wait_ns(&b, 1, t0 + 8 * iv), iv);
    /* Due at t0 + 9 iv; a take of 2 (above the burst) refused at t0 + 9.2 iv; taken at
     * t0 + 9.5 iv: booked at t0 + 9.2 iv, not at the due time before it. */
    assert_int_equal(bucket_take(&b, 2, t0 + 92 * iv / 10), -1);
    assert_int_equal(bucket_take_since(&b, 1, t0 + 95 * iv / 10, t0), 0);
    assert_int_equal(bucket_wait_ns(&b, 1, t0 + 95 * iv / 10), 7 * iv / 10);
    fake_advance_ns(10 * iv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interval_rounding),
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_burst_exact),
        cmocka_unit_test(test_refill_timing),
        cmocka_unit_test(test_wait_beyond_burst),
        cmocka_unit_test(test_huge_cost),
        cmocka_unit_test(test_window_guarantee),
        cmocka_unit_test(test_long_idle),
        cmocka_unit_test(test_clock_backwards),
        cmocka_unit_test(test_reconfigure_keeps_balance),
        cmocka_unit_test(test_take_since_keeps_schedule),
        cmocka_unit_test(test_take_since_window_bound),
        cmocka_unit_test(test_take_since_one_more),
        cmocka_unit_test(test_take_since_no_idle_credit),
        cmocka_unit_test(test_take_since_stall_and_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
