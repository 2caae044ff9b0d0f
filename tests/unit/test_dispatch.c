/*
 * tests/unit/test_dispatch: limiter/dispatch (with the real bucket and queue) against a
 * fake clock: admission, release order and timing, in-flight cap, expiry, cancel,
 * reconfigure and requeue, shared limits, and the predicted wait against admission's.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "limiter/dispatch.h"
#include "limiter/lease.h"
#include "limiter/queue.h"
#include "tests/unit/fakeclock.h"

#define NW 64

static struct waiter w[NW];

static int setup(void **state)
{
    memset(w, 0, sizeof(w));
    for (int i = 0; i < NW; i++) {
        w[i].cost = 1;
        w[i].data = &w[i];
    }
    return 0;
}

static struct dispatch_config config(const struct dispatch_limit *limits, size_t nlimits,
                                     uint32_t max_in_flight, uint32_t queue_size,
                                     uint64_t max_wait_ns)
{
    return (struct dispatch_config){
        .limits = limits,
        .nlimits = nlimits,
        .max_in_flight = max_in_flight,
        .queue_size = queue_size,
        .max_wait_ns = max_wait_ns,
    };
}

static struct dispatch *make(const struct dispatch_limit *limits, size_t nlimits,
                             uint32_t max_in_flight, uint32_t queue_size, uint64_t max_wait_ns)
{
    struct dispatch_config cfg = config(limits, nlimits, max_in_flight, queue_size, max_wait_ns);
    struct dispatch *d = dispatch_new(&cfg, fake_now());

    assert_non_null(d);
    return d;
}

static void submit_ok(struct dispatch *d, struct waiter *x)
{
    uint64_t retry = 12345;

    assert_int_equal(dispatch_submit(d, x, fake_now(), &retry), DISPATCH_QUEUED);
    assert_int_equal(x->queued, 1);
    assert_int_equal(retry, 12345); /* untouched when queued */
}

/* Releases everything dispatch_next() gives now; returns how many. */
static unsigned release_all(struct dispatch *d)
{
    unsigned n = 0;

    while (dispatch_next(d, fake_now()) != NULL)
        n++;
    return n;
}

/* Empties the queue so dispatch_free's precondition holds. */
static void drain_free(struct dispatch *d)
{
    while (dispatch_pop(d) != NULL)
        ;
    dispatch_free(d);
}

static void test_invalid_config(void **state)
{
    const struct dispatch_limit ok[] = {{10, 5}};
    const struct dispatch_limit bad_rate[] = {{10, 5}, {0, 5}};
    const struct dispatch_limit fast[] = {{2e9, 5}};
    const struct dispatch_limit bad_burst[] = {{10, 0.5}};
    const struct dispatch_limit big_burst[] = {{10, 2e6}};
    const struct dispatch_limit nine[9] = {{1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1},
                                           {1, 1}, {1, 1}, {1, 1}, {1, 1}};
    struct dispatch_config cfgs[] = {
        config(ok, 0, 1, 1, NS_PER_SEC),        config(nine, 9, 1, 1, NS_PER_SEC),
        config(NULL, 1, 1, 1, NS_PER_SEC),      config(bad_rate, 2, 1, 1, NS_PER_SEC),
        config(fast, 1, 1, 1, NS_PER_SEC),      config(bad_burst, 1, 1, 1, NS_PER_SEC),
        config(big_burst, 1, 1, 1, NS_PER_SEC), config(ok, 1, 0, 1, NS_PER_SEC),
        config(ok, 1, 1, 0, NS_PER_SEC),        config(ok, 1, 1, 1, 0),
    };

    assert_null(dispatch_new(NULL, fake_now()));
    for (size_t i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++) {
        if (dispatch_new(&cfgs[i], fake_now()) != NULL)
            fail_msg("config %zu accepted", i);
    }
    struct dispatch_config eight = config(nine, 8, 1, 1, NS_PER_SEC);
    struct dispatch *d = dispatch_new(&eight, fake_now());
    assert_non_null(d);
    assert_int_equal(dispatch_nlimits(d), 8);
    dispatch_free(d);
    dispatch_free(NULL);
}

static void test_release_timing(void **state)
{
    const struct dispatch_limit lim[] = {{10, 2}};
    struct dispatch *d = make(lim, 1, 100, 10, 10 * NS_PER_SEC);
    uint64_t t0 = fake_now();

    for (int i = 0; i < 5; i++)
        submit_ok(d, &w[i]);
    assert_int_equal(w[0].enqueued_ns, t0);
    assert_int_equal(w[0].deadline_ns, t0 + 10 * NS_PER_SEC);
    assert_int_equal(dispatch_queue_len(d), 5);

    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    assert_int_equal(w[0].queued, 0);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[1]);
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(dispatch_in_flight(d), 2);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 100 * NS_PER_MS);

    fake_advance_ms(99);
    assert_null(dispatch_next(d, fake_now()));
    fake_advance_ms(1);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[2]);
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(dispatch_in_flight(d), 3);
    assert_int_equal(dispatch_queue_len(d), 2);
    drain_free(d);
}

/* 10/s and 15/min together: after the first burst the minute limit sets the pace. */
static void test_several_limits(void **state)
{
    const struct dispatch_limit lim[] = {{10, 10}, {15.0 / 60, 15}};
    struct dispatch *d = make(lim, 2, 1000, 100, 3600 * NS_PER_SEC);
    uint64_t t0 = fake_now();

    for (int i = 0; i < 40; i++)
        submit_ok(d, &w[i]);
    assert_int_equal(release_all(d), 10); /* the 10/s burst binds first */
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 0, 1e-9);
    assert_float_equal(dispatch_tokens(d, 1, fake_now()), 5, 1e-9);

    fake_advance_ms(1000);
    assert_int_equal(release_all(d), 5); /* 10 per-second tokens, but 5 per-minute ones */
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 5, 1e-9);
    /* From here on, one every 4 s. */
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 4 * NS_PER_SEC);

    unsigned released = 15;
    while (fake_now() < t0 + 60 * NS_PER_SEC) {
        uint64_t wake = dispatch_wake_ns(d, fake_now());
        assert_true(wake > fake_now());
        fake_advance_ns(wake - fake_now());
        unsigned n = release_all(d);
        assert_int_equal(n, 1);
        assert_int_equal((fake_now() - t0) % (4 * NS_PER_SEC), 0);
        released += n;
    }
    /* 15 burst + 60 s * 15/min over the first minute, and not one more. */
    assert_int_equal(released, 30);
    assert_int_equal(fake_now(), t0 + 60 * NS_PER_SEC);
    assert_int_equal(dispatch_queue_len(d), 10);
    drain_free(d);
}

/* The prediction for a newcomer uses every limit: the minute limit refuses first. */
static void test_late_several_limits(void **state)
{
    const struct dispatch_limit lim[] = {{10, 10}, {15.0 / 60, 15}};
    struct dispatch *d = make(lim, 2, 1000, 100, 10 * NS_PER_SEC);
    uint64_t retry = 0;

    /* The k-th waiter waits k * 4 s - 60 s on the minute limit: 17 fit in 10 s. */
    for (int i = 0; i < 17; i++)
        submit_ok(d, &w[i]);
    assert_int_equal(dispatch_submit(d, &w[17], fake_now(), &retry), DISPATCH_LATE);
    assert_int_equal(retry, 2 * NS_PER_SEC); /* 12 s predicted, 10 s allowed */
    assert_int_equal(w[17].queued, 0);
    assert_int_equal(dispatch_queue_len(d), 17);
    drain_free(d);
}

static void test_late(void **state)
{
    const struct dispatch_limit lim[] = {{1, 2}};
    struct dispatch *d = make(lim, 1, 100, 100, 3 * NS_PER_SEC);
    uint64_t retry = 0;

    /* Predicted waits 0, 0, 1, 2 and 3 s: the last equals max_wait and still goes in. */
    for (int i = 0; i < 5; i++)
        submit_ok(d, &w[i]);
    assert_int_equal(dispatch_submit(d, &w[5], fake_now(), &retry), DISPATCH_LATE);
    assert_int_equal(retry, 1 * NS_PER_SEC);
    assert_int_equal(w[5].queued, 0);
    /* A request of cost 2 needs both tokens: 5 s predicted. */
    w[6].cost = 2;
    assert_int_equal(dispatch_submit(d, &w[6], fake_now(), &retry), DISPATCH_LATE);
    assert_int_equal(retry, 2 * NS_PER_SEC);
    /* Waiting alone does not help while nobody is released: the bucket is already full. */
    fake_advance_ms(1000);
    assert_int_equal(dispatch_submit(d, &w[5], fake_now(), &retry), DISPATCH_LATE);
    assert_int_equal(retry, 1 * NS_PER_SEC);
    /* Released waiters make room: 2 + 1 go, and the tokens the queue needs shrink. */
    assert_int_equal(release_all(d), 2);
    assert_int_equal(dispatch_queue_len(d), 3);
    /* Both tokens went at t0 + 1 s; the 3 queued are due at t0 + 2, 3 and 4 s, and a
     * newcomer at t0 + 5 s: 4 s from now, 1 s too many. */
    assert_int_equal(dispatch_submit(d, &w[5], fake_now(), &retry), DISPATCH_LATE);
    assert_int_equal(retry, 1 * NS_PER_SEC);
    fake_advance_ms(1000);
    assert_int_equal(release_all(d), 1);
    submit_ok(d, &w[5]);
    drain_free(d);
}

static void test_cost_zero_and_too_big(void **state)
{
    const struct dispatch_limit lim[] = {{1, 2}, {100, 50}};
    struct dispatch *d = make(lim, 2, 100, 100, 60 * NS_PER_SEC);
    uint64_t retry = 0;

    w[0].cost = 0;
    submit_ok(d, &w[0]);
    assert_int_equal(w[0].cost, 1); /* 0 counts as 1 */
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 1, 1e-9);
    assert_float_equal(dispatch_tokens(d, 1, fake_now()), 49, 1e-9);

    /* More than the 2-token burst: no wait would ever grant it. */
    w[1].cost = 3;
    assert_int_equal(dispatch_submit(d, &w[1], fake_now(), &retry), DISPATCH_LATE);
    assert_int_equal(retry, DISPATCH_NEVER);
    assert_int_equal(w[1].queued, 0);
    /* Exactly the burst is fine: it goes when the bucket is full again. */
    w[2].cost = 2;
    submit_ok(d, &w[2]);
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now() + NS_PER_SEC);
    fake_advance_ms(1000);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[2]);
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 0, 1e-9);
    assert_float_equal(dispatch_tokens(d, 1, fake_now()), 48, 1e-9);
    dispatch_free(d);
}

static void test_full(void **state)
{
    const struct dispatch_limit lim[] = {{1, 1}};
    struct dispatch *d = make(lim, 1, 100, 3, 100 * NS_PER_SEC);
    uint64_t retry = 0;

    for (int i = 0; i < 3; i++)
        submit_ok(d, &w[i]);
    /* The head could go right now: "retry" is the 1 ms floor, never 0. */
    assert_int_equal(dispatch_submit(d, &w[3], fake_now(), &retry), DISPATCH_FULL);
    assert_int_equal(retry, NS_PER_MS);
    assert_int_equal(w[3].queued, 0);
    assert_int_equal(dispatch_queue_len(d), 3);

    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    submit_ok(d, &w[3]);
    /* Now the head w[1] needs the next token, 1 s away. */
    assert_int_equal(dispatch_submit(d, &w[4], fake_now(), &retry), DISPATCH_FULL);
    assert_int_equal(retry, NS_PER_SEC);
    fake_advance_ms(250);
    assert_int_equal(dispatch_submit(d, &w[4], fake_now(), &retry), DISPATCH_FULL);
    assert_int_equal(retry, 750 * NS_PER_MS);
    assert_int_equal(dispatch_submit(d, &w[4], fake_now(), NULL), DISPATCH_FULL);
    /* A place freed by a cancel is a place. */
    dispatch_cancel(d, &w[2]);
    submit_ok(d, &w[4]);
    /* The head leaves at its deadline if that comes before its token. */
    struct dispatch_config cfg = config(lim, 1, 100, 3, 200 * NS_PER_MS);
    assert_int_equal(dispatch_reconfigure(d, &cfg, fake_now()), 0);
    assert_int_equal(dispatch_submit(d, &w[5], fake_now(), &retry), DISPATCH_FULL);
    assert_int_equal(retry, 200 * NS_PER_MS);
    drain_free(d);
}

static void test_max_in_flight(void **state)
{
    const struct dispatch_limit lim[] = {{100, 100}};
    struct dispatch *d = make(lim, 1, 2, 10, 10 * NS_PER_SEC);

    for (int i = 0; i < 4; i++)
        submit_ok(d, &w[i]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[1]);
    assert_null(dispatch_next(d, fake_now())); /* tokens plenty, slots none */
    assert_int_equal(dispatch_in_flight(d), 2);
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 98, 1e-9);
    /* Only the deadline can wake us now: done() is the event that frees a slot. */
    assert_int_equal(dispatch_wake_ns(d, fake_now()), w[2].deadline_ns);

    dispatch_done(d);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now());
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[2]);
    assert_null(dispatch_next(d, fake_now()));
    dispatch_done(d);
    dispatch_done(d);
    assert_int_equal(dispatch_in_flight(d), 0);
    dispatch_done(d); /* one too many: stays at 0 */
    assert_int_equal(dispatch_in_flight(d), 0);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[3]);
    assert_int_equal(dispatch_in_flight(d), 1);
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 96, 1e-9);
    dispatch_free(d);
}

static void test_expiry_order(void **state)
{
    /* One token per 1000 s: over this test the balance moves by ~0.001 only. */
    const struct dispatch_limit lim[] = {{0.001, 1000}};
    struct dispatch *d = make(lim, 1, 1, 10, NS_PER_SEC);
    uint64_t t0 = fake_now();

    /* Occupy the only slot so that nothing queued is released. */
    submit_ok(d, &w[9]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[9]);
    for (int i = 0; i < 3; i++) {
        submit_ok(d, &w[i]);
        fake_advance_ms(200);
    }
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + NS_PER_SEC);

    fake_advance_ns(t0 + NS_PER_SEC - 1 - fake_now());
    assert_null(dispatch_expired(d, fake_now()));
    fake_advance_ns(1);
    assert_ptr_equal(dispatch_expired(d, fake_now()), &w[0]);
    assert_int_equal(w[0].queued, 0);
    assert_null(dispatch_expired(d, fake_now()));
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 1200 * NS_PER_MS);

    fake_advance_ms(300);
    assert_ptr_equal(dispatch_expired(d, fake_now()), &w[1]);
    assert_null(dispatch_expired(d, fake_now()));
    fake_advance_ms(100);
    assert_ptr_equal(dispatch_expired(d, fake_now()), &w[2]);
    assert_null(dispatch_expired(d, fake_now()));
    assert_int_equal(dispatch_queue_len(d), 0);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), DISPATCH_NEVER);
    /* Expired waiters took nothing: 999 plus 1.4 s of refill. */
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 999.0014, 1e-9);
    dispatch_free(d);
}

static void test_cancel_takes_nothing(void **state)
{
    const struct dispatch_limit lim[] = {{1, 3}};
    struct dispatch *d = make(lim, 1, 10, 10, 60 * NS_PER_SEC);

    for (int i = 0; i < 4; i++)
        submit_ok(d, &w[i]);
    dispatch_cancel(d, &w[0]); /* the head */
    dispatch_cancel(d, &w[2]); /* the middle */
    dispatch_cancel(d, &w[2]); /* again: no-op */
    dispatch_cancel(d, &w[7]); /* never queued: no-op */
    assert_int_equal(dispatch_queue_len(d), 2);
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 3, 1e-12);

    assert_ptr_equal(dispatch_next(d, fake_now()), &w[1]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[3]);
    assert_null(dispatch_next(d, fake_now()));
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 1, 1e-12);
    /* Cancelling a released waiter changes nothing either. */
    dispatch_cancel(d, &w[1]);
    assert_int_equal(dispatch_in_flight(d), 2);
    dispatch_free(d);
}

static void test_wake_ns(void **state)
{
    const struct dispatch_limit lim[] = {{10, 1}};
    struct dispatch *d = make(lim, 1, 1, 10, 5 * NS_PER_SEC);

    assert_int_equal(dispatch_wake_ns(d, fake_now()), DISPATCH_NEVER);
    submit_ok(d, &w[0]);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now()); /* due now */
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), DISPATCH_NEVER);

    submit_ok(d, &w[1]);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), w[1].deadline_ns); /* slot taken */
    dispatch_done(d);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now() + 100 * NS_PER_MS);
    fake_advance_ms(40);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now() + 60 * NS_PER_MS);

    /* A deadline before the token: the deadline is the wake-up. */
    const struct dispatch_limit same[] = {{10, 1}};
    struct dispatch_config cfg = config(same, 1, 1, 10, 30 * NS_PER_MS);
    assert_int_equal(dispatch_reconfigure(d, &cfg, fake_now()), 0);
    assert_int_equal(w[1].deadline_ns, fake_now() + 30 * NS_PER_MS);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now() + 30 * NS_PER_MS);
    drain_free(d);
}

static void test_reconfigure(void **state)
{
    const struct dispatch_limit lim[] = {{10, 10}};
    struct dispatch *d = make(lim, 1, 5, 10, 10 * NS_PER_SEC);
    uint64_t t0 = fake_now();

    for (int i = 0; i < 6; i++)
        submit_ok(d, &w[i]);
    assert_int_equal(release_all(d), 5); /* max_in_flight */
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 5, 1e-9);
    fake_advance_ms(500);
    submit_ok(d, &w[6]);
    assert_int_equal(w[5].deadline_ns, t0 + 10 * NS_PER_SEC);
    assert_int_equal(w[6].deadline_ns, t0 + 10500 * NS_PER_MS);
    /* 5 tokens + 5 refilled over 500 ms = 10 */
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 10, 1e-9);

    /* Invalid (second limit): nothing at all changes, not even the first limit. */
    const struct dispatch_limit bad[] = {{1, 2}, {0, 1}};
    struct dispatch_config badcfg = config(bad, 2, 1, 1, NS_PER_SEC);
    assert_int_equal(dispatch_reconfigure(d, &badcfg, fake_now()), -1);
    badcfg = config(lim, 1, 1, 1, 0);
    assert_int_equal(dispatch_reconfigure(d, &badcfg, fake_now()), -1);
    assert_int_equal(dispatch_nlimits(d), 1);
    assert_int_equal(dispatch_queue_cap(d), 10);
    assert_int_equal(w[5].deadline_ns, t0 + 10 * NS_PER_SEC);
    assert_int_equal(w[6].deadline_ns, t0 + 10500 * NS_PER_MS);
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 10, 1e-9);
    dispatch_done(d);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now()); /* still 10/s, 5 slots */

    /* A slower, bigger first limit and a new second one; smaller caps; shorter wait. */
    const struct dispatch_limit next[] = {{2, 20}, {1, 3}};
    struct dispatch_config cfg = config(next, 2, 1, 1, 2 * NS_PER_SEC);
    assert_int_equal(dispatch_reconfigure(d, &cfg, fake_now()), 0);
    assert_int_equal(dispatch_nlimits(d), 2);
    assert_int_equal(dispatch_queue_cap(d), 1);
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 10, 1e-9); /* kept, not refilled */
    assert_float_equal(dispatch_tokens(d, 1, fake_now()), 3, 1e-9);  /* new: full */
    /* Nobody queued is dropped; every deadline is clamped to now + 2 s. */
    assert_int_equal(dispatch_queue_len(d), 2);
    assert_int_equal(w[5].deadline_ns, fake_now() + 2 * NS_PER_SEC);
    assert_int_equal(w[6].deadline_ns, fake_now() + 2 * NS_PER_SEC);
    uint64_t retry = 0;
    assert_int_equal(dispatch_submit(d, &w[7], fake_now(), &retry), DISPATCH_FULL);

    /* 4 in flight against a new max of 1: nothing goes until 4 are done. */
    assert_null(dispatch_next(d, fake_now()));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dispatch_wake_ns(d, fake_now()), w[5].deadline_ns);
        dispatch_done(d);
        assert_null(dispatch_next(d, fake_now()));
    }
    dispatch_done(d);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[5]);
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 9, 1e-9);
    assert_float_equal(dispatch_tokens(d, 1, fake_now()), 2, 1e-9);

    /* A longer max_wait does not lengthen deadlines already given; dropping a limit works. */
    uint64_t deadline = w[6].deadline_ns;
    cfg = config(next, 1, 1, 10, 3600 * NS_PER_SEC);
    assert_int_equal(dispatch_reconfigure(d, &cfg, fake_now()), 0);
    assert_int_equal(w[6].deadline_ns, deadline);
    assert_int_equal(dispatch_nlimits(d), 1);
    assert_float_equal(dispatch_tokens(d, 1, fake_now()), 0, 0); /* out of range */
    submit_ok(d, &w[7]);
    assert_int_equal(w[7].deadline_ns, fake_now() + 3600 * NS_PER_SEC);
    drain_free(d);
}

/* A burst shrunk under a queued waiter's cost: it can only expire, and the wake-up is its
 * deadline rather than a token time that would come round again and again. */
static void test_reconfigure_below_cost(void **state)
{
    const struct dispatch_limit lim[] = {{1, 5}};
    struct dispatch *d = make(lim, 1, 10, 10, 10 * NS_PER_SEC);

    w[0].cost = 4;
    submit_ok(d, &w[0]);
    const struct dispatch_limit small[] = {{1, 2}};
    struct dispatch_config cfg = config(small, 1, 10, 10, 10 * NS_PER_SEC);
    assert_int_equal(dispatch_reconfigure(d, &cfg, fake_now()), 0);
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(dispatch_wake_ns(d, fake_now()), w[0].deadline_ns);
    fake_advance_ns(w[0].deadline_ns - fake_now());
    assert_null(dispatch_next(d, fake_now()));
    assert_ptr_equal(dispatch_expired(d, fake_now()), &w[0]);
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 2, 1e-9);
    dispatch_free(d);
}

static void test_requeue_head(void **state)
{
    const struct dispatch_limit lim[] = {{10, 5}};
    struct dispatch *d = make(lim, 1, 2, 2, 10 * NS_PER_SEC);

    for (int i = 0; i < 2; i++)
        submit_ok(d, &w[i]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    submit_ok(d, &w[2]);
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 4, 1e-9);

    /* Back at the head, beyond queue_size, out of flight; its token stays spent. */
    dispatch_requeue_head(d, &w[0]);
    assert_int_equal(w[0].queued, 1);
    assert_int_equal(dispatch_queue_len(d), 3);
    assert_int_equal(dispatch_in_flight(d), 0);
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 4, 1e-9);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]); /* its turn first */
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 3, 1e-9);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[1]);
    assert_null(dispatch_next(d, fake_now())); /* max_in_flight 2 */

    /* Requeued with nothing in flight (a caller slip): the count does not wrap. */
    dispatch_done(d);
    dispatch_done(d);
    dispatch_requeue_head(d, &w[1]);
    dispatch_requeue_head(d, &w[0]);
    assert_int_equal(dispatch_in_flight(d), 0);
    assert_ptr_equal(dispatch_pop(d), &w[0]);
    assert_ptr_equal(dispatch_pop(d), &w[1]);
    assert_ptr_equal(dispatch_pop(d), &w[2]);
    assert_null(dispatch_pop(d));
    dispatch_free(d);
}

/* Several refused at once (one 429) come back in any order, but go again in the order
 * they first arrived, all ahead of those that never left. */
static void test_requeued_keep_arrival_order(void **state)
{
    const struct dispatch_limit lim[] = {{1000, 1000}};
    struct dispatch *d = make(lim, 1, 8, 10, 10 * NS_PER_SEC);

    for (int i = 0; i < 3; i++)
        submit_ok(d, &w[i]);
    for (int i = 0; i < 3; i++)
        assert_ptr_equal(dispatch_next(d, fake_now()), &w[i]);
    submit_ok(d, &w[3]);
    dispatch_requeue_head(d, &w[2]);
    dispatch_requeue_head(d, &w[0]);
    dispatch_requeue_head(d, &w[1]);
    assert_int_equal(dispatch_queue_len(d), 4);
    for (int i = 0; i < 4; i++)
        assert_ptr_equal(dispatch_next(d, fake_now()), &w[i]);
    /* Released again, they are ordinary waiters: a later requeue goes to the head. */
    submit_ok(d, &w[4]);
    dispatch_requeue_head(d, &w[3]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[3]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[4]);
    for (int i = 0; i < 5; i++)
        dispatch_done(d);
    dispatch_free(d);
}

/* The same within one key of a fair dispatcher. */
static void test_requeued_keep_arrival_order_in_a_flow(void **state)
{
    const struct dispatch_limit lim[] = {{1000, 1000}};
    struct dispatch_config cfg = config(lim, 1, 3, 10, 10 * NS_PER_SEC);
    struct dispatch_fair_config fair = {0};
    struct dispatch *d = dispatch_new_fair(&cfg, &fair, fake_now());

    assert_non_null(d);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dispatch_submit_key(d, &w[i], "k", 1, fake_now(), NULL), DISPATCH_QUEUED);
    for (int i = 0; i < 3; i++)
        assert_ptr_equal(dispatch_next(d, fake_now()), &w[i]);
    dispatch_requeue_head(d, &w[1]);
    dispatch_requeue_head(d, &w[2]);
    dispatch_requeue_head(d, &w[0]);
    for (int i = 0; i < 3; i++)
        assert_ptr_equal(dispatch_next(d, fake_now()), &w[i]);
    for (int i = 0; i < 3; i++)
        dispatch_done(d);
    dispatch_free(d);
}

/* A reload that shortened max_wait while a waiter was out must not let it come back with
 * a later deadline than the head's, or expiry would stop at it and miss the head. */
static void test_requeue_after_reload_keeps_deadline_order(void **state)
{
    const struct dispatch_limit lim[] = {{100, 100}};
    struct dispatch *d = make(lim, 1, 1, 10, 10 * NS_PER_SEC);

    submit_ok(d, &w[0]);
    submit_ok(d, &w[1]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    fake_advance_ms(100);
    struct dispatch_config cfg = config(lim, 1, 1, 10, NS_PER_SEC);
    assert_int_equal(dispatch_reconfigure(d, &cfg, fake_now()), 0);
    dispatch_requeue_head(d, &w[0]);
    assert_true(w[0].deadline_ns <= w[1].deadline_ns);
    fake_advance_ms(1000);
    assert_ptr_equal(dispatch_expired(d, fake_now()), &w[0]);
    assert_ptr_equal(dispatch_expired(d, fake_now()), &w[1]);
    dispatch_free(d);
}

/* A clock that steps back cannot give a newcomer an earlier deadline than those ahead. */
static void test_clock_backwards(void **state)
{
    const struct dispatch_limit lim[] = {{1, 1}};
    struct dispatch *d = make(lim, 1, 1, 10, 10 * NS_PER_SEC);
    uint64_t now = fake_now();

    assert_int_equal(dispatch_submit(d, &w[0], now, NULL), DISPATCH_QUEUED);
    assert_int_equal(dispatch_submit(d, &w[1], now - 5 * NS_PER_SEC, NULL), DISPATCH_QUEUED);
    assert_true(w[1].deadline_ns >= w[0].deadline_ns);
    assert_ptr_equal(dispatch_next(d, now), &w[0]);
    dispatch_done(d);
    assert_null(dispatch_next(d, now - 5 * NS_PER_SEC)); /* no token from the past */
    assert_ptr_equal(dispatch_next(d, now + NS_PER_SEC), &w[1]);
    fake_advance_ns(2 * NS_PER_SEC);
    dispatch_free(d);
}

/* Freeing with waiters left (a caller slip) leaves them unlinked, not dangling. */
static void test_free_unlinks(void **state)
{
    const struct dispatch_limit lim[] = {{1, 1}};
    struct dispatch *d = make(lim, 1, 1, 10, 10 * NS_PER_SEC);

    submit_ok(d, &w[0]);
    submit_ok(d, &w[1]);
    dispatch_free(d);
    assert_int_equal(w[0].queued, 0);
    assert_int_equal(w[1].queued, 0);
    assert_null(w[0].next);
}

/* The fair-queuing config: invalid values refused at new and reconfigure; NULL and a zeroed
 * struct are the plain FIFO of dispatch_new. */
static void test_fair_config(void **state)
{
    const struct dispatch_limit lim[] = {{10, 5}};
    const struct dispatch_limit five[5] = {{1, 1}, {1, 1}, {1, 1}, {1, 1}, {1, 1}};
    const struct dispatch_limit bad[] = {{1, 0}};
    struct dispatch_config cfg = config(lim, 1, 1, 10, NS_PER_SEC);
    struct dispatch_fair_config fairs[] = {
        {.key_limits = five, .nkey_limits = 5},
        {.key_limits = NULL, .nkey_limits = 1},
        {.key_limits = bad, .nkey_limits = 1},
        {.priority_classes = DISPATCH_MAX_CLASSES + 1},
    };

    for (size_t i = 0; i < sizeof(fairs) / sizeof(fairs[0]); i++) {
        if (dispatch_new_fair(&cfg, &fairs[i], fake_now()) != NULL)
            fail_msg("fair config %zu accepted", i);
    }
    assert_null(dispatch_new_fair(NULL, NULL, fake_now()));
    struct dispatch_fair_config zero = {0};
    struct dispatch *d = dispatch_new_fair(&cfg, &zero, fake_now());
    assert_non_null(d);
    for (size_t i = 0; i < sizeof(fairs) / sizeof(fairs[0]); i++)
        assert_int_equal(dispatch_reconfigure_fair(d, &cfg, &fairs[i], fake_now()), -1);
    struct dispatch_fair_config four = {
        .key_limits = five, .nkey_limits = 4, .priority_classes = DISPATCH_MAX_CLASSES};
    assert_int_equal(dispatch_reconfigure_fair(d, &cfg, &four, fake_now()), 0);
    assert_int_equal(dispatch_nkey_limits(d), 4);
    dispatch_free(d);

    /* Unkeyed waiters use no hash table at all. */
    d = make(lim, 1, 1, 10, NS_PER_SEC);
    submit_ok(d, &w[0]);
    assert_int_equal(dispatch_nkeys(d), 0);
    assert_int_equal(dispatch_active_flows(d), 1);
    assert_int_equal(dispatch_key_queue_len(d, NULL, 0), 1);
    drain_free(d);
}

/* Priorities on the unkeyed path: class 0 first, FIFO within a class. */
static void test_priority_unkeyed(void **state)
{
    const struct dispatch_limit lim[] = {{100, 100}};
    struct dispatch_config cfg = config(lim, 1, 1, 10, 10 * NS_PER_SEC);
    struct dispatch_fair_config fair = {.priority_classes = 2};
    struct dispatch *d = dispatch_new_fair(&cfg, &fair, fake_now());

    assert_non_null(d);
    w[0].priority = 1;
    w[1].priority = 1;
    w[2].priority = 0;
    for (int i = 0; i < 3; i++)
        submit_ok(d, &w[i]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[2]);
    assert_null(dispatch_next(d, fake_now())); /* max_in_flight 1 */
    dispatch_done(d);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    dispatch_done(d);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[1]);
    dispatch_free(d);
}

/* Pause and budget on the unkeyed path; wake-up follows them. */
static void test_pause_and_budget(void **state)
{
    const struct dispatch_limit lim[] = {{10, 10}};
    struct dispatch *d = make(lim, 1, 100, 10, 60 * NS_PER_SEC);
    uint64_t t0 = fake_now();

    for (int i = 0; i < 5; i++)
        submit_ok(d, &w[i]);
    dispatch_pause_until(d, t0 + 500 * NS_PER_MS);
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 500 * NS_PER_MS);
    fake_advance_ms(500);
    dispatch_set_budget(d, 2, t0 + 2 * NS_PER_SEC);
    assert_int_equal(release_all(d), 2);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 2 * NS_PER_SEC);
    fake_advance_ms(1500);
    assert_int_equal(release_all(d), 3);
    drain_free(d);
}

/* Freeing with keyed waiters left unlinks them from their flows too. */
static void test_free_unlinks_keyed(void **state)
{
    const struct dispatch_limit lim[] = {{1, 1}};
    struct dispatch *d = make(lim, 1, 1, 10, 10 * NS_PER_SEC);

    assert_int_equal(dispatch_submit_key(d, &w[0], "k", 1, fake_now(), NULL), DISPATCH_QUEUED);
    assert_int_equal(dispatch_submit_key(d, &w[1], "k", 1, fake_now(), NULL), DISPATCH_QUEUED);
    dispatch_free(d);
    assert_int_equal(w[0].queued, 0);
    assert_null(w[0].flow);
    assert_null(w[1].fnext);
}

/* ---- a release that fires late keeps the schedule (issue 9) ---- */

/* A small deterministic generator, so every run sees the same lateness. */
static uint64_t lcg_state = 0x2545f4914f6cdd1dull;

static uint64_t lcg_next(void)
{
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return lcg_state >> 33;
}

/* A uniformly drawn lateness in [lo_ns, hi_ns). */
static uint64_t lateness_ns(uint64_t lo_ns, uint64_t hi_ns)
{
    return hi_ns > lo_ns ? lo_ns + lcg_next() % (hi_ns - lo_ns) : lo_ns;
}

/* Keeps `backlog` waiters queued (each released one is done at once and submitted again)
 * and pulls at every wake-up plus a lateness drawn from [late_lo_ns, late_hi_ns), until
 * `count` releases; their instants go to at[]. Every pull releases what may go. */
static void run_backlogged(struct dispatch *d, size_t backlog, uint64_t late_lo_ns,
                           uint64_t late_hi_ns, uint64_t *at, size_t count)
{
    size_t n = 0;

    assert_true(backlog <= NW);
    for (size_t i = 0; i < backlog; i++)
        submit_ok(d, &w[i]);
    while (n < count) {
        struct waiter *x;
        while (n < count && (x = dispatch_next(d, fake_now())) != NULL) {
            at[n++] = fake_now();
            dispatch_done(d);
            submit_ok(d, x);
        }
        uint64_t wake = dispatch_wake_ns(d, fake_now());
        assert_true(wake != DISPATCH_NEVER);
        assert_true(wake > fake_now() || n == count);
        fake_advance_ns(wake - fake_now() + lateness_ns(late_lo_ns, late_hi_ns));
    }
}

/* Releases per second between the first and the last of at[0..n). */
static double achieved_rate(const uint64_t *at, size_t n)
{
    return (double)(n - 1) * 1e9 / (double)(at[n - 1] - at[0]);
}

/* The most releases in any closed window [t, t + len_ns] (the worst one starts at a
 * release). at[] is non-decreasing. */
static size_t max_in_window(const uint64_t *at, size_t n, uint64_t len_ns)
{
    size_t best = 0;

    for (size_t i = 0, j = 0; i < n; i++) {
        if (j < i)
            j = i;
        while (j < n && at[j] - at[i] <= len_ns)
            j++;
        if (j - i > best)
            best = j - i;
    }
    return best;
}

/* The documented bound (limiter/bucket.h) for a whole burst: ceil(len / interval) + burst. */
static size_t window_bound(uint64_t len_ns, uint64_t interval_ns, size_t burst)
{
    return (size_t)((len_ns + interval_ns - 1) / interval_ns) + burst;
}

#define LATE_RELEASES 10000

/* (a) 100/s, burst 1, always backlogged, every pull 0.3 to 0.9 interval late: the
 * upstream still sees 100/s (within 0.1 %). Basing each slot on the late pull would give
 * about 1 / 1.6 interval, 62.5/s. */
static void test_late_pulls_keep_rate(void **state)
{
    static uint64_t at[LATE_RELEASES];
    const struct dispatch_limit lim[] = {{100, 1}};
    const uint64_t iv = 10 * NS_PER_MS;

    for (int pass = 0; pass < 3; pass++) {
        /* Varied lateness: the whole range, then its two ends. */
        const uint64_t lo[] = {3 * iv / 10, 3 * iv / 10, 8 * iv / 10};
        const uint64_t hi[] = {9 * iv / 10, 4 * iv / 10, 9 * iv / 10};
        struct dispatch *d = make(lim, 1, 1000, 64, 3600 * NS_PER_SEC);

        memset(w, 0, sizeof(w));
        for (int i = 0; i < NW; i++)
            w[i].cost = 1;
        run_backlogged(d, 32, lo[pass], hi[pass], at, LATE_RELEASES);
        double rate = achieved_rate(at, LATE_RELEASES);
        print_message("late %.1f-%.1f interval: %.4f/s over %d releases\n",
                      (double)lo[pass] / (double)iv, (double)hi[pass] / (double)iv, rate,
                      LATE_RELEASES);
        assert_true(rate >= 100 * 0.999 && rate <= 100 * 1.001);
        drain_free(d);
    }
}

/* (b) The same run, every window: a 1 s window holds at most rate + burst = 101; a window
 * of any length t at most ceil(t / interval) + burst (one more than before the change only
 * when t is not a multiple of the interval). Also with burst 3 and with two limits. */
static void test_late_pulls_window_bound(void **state)
{
    static uint64_t at[LATE_RELEASES];
    const uint64_t lens[] = {1,
                             5 * NS_PER_MS,
                             10 * NS_PER_MS,
                             15 * NS_PER_MS,
                             20 * NS_PER_MS,
                             25 * NS_PER_MS,
                             99 * NS_PER_MS + 1,
                             100 * NS_PER_MS,
                             999 * NS_PER_MS,
                             NS_PER_SEC,
                             NS_PER_SEC + 5 * NS_PER_MS,
                             10 * NS_PER_SEC};
    const struct {
        struct dispatch_limit lim[2];
        size_t nlimits;
        uint64_t iv_ns; /* of the limit checked */
        size_t burst;
    } cases[] = {
        {{{100, 1}}, 1, 10 * NS_PER_MS, 1},
        {{{100, 3}}, 1, 10 * NS_PER_MS, 3},
        /* 100/s burst 2 and 6000/min burst 1 (the same pace): both must grant. */
        {{{100, 2}, {6000.0 / 60, 1}}, 2, 10 * NS_PER_MS, 1},
    };

    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        uint64_t iv = cases[c].iv_ns;
        struct dispatch *d = make(cases[c].lim, cases[c].nlimits, 1000, 64, 3600 * NS_PER_SEC);

        memset(w, 0, sizeof(w));
        for (int i = 0; i < NW; i++)
            w[i].cost = 1;
        run_backlogged(d, 32, 3 * iv / 10, 9 * iv / 10, at, LATE_RELEASES);
        assert_true(max_in_window(at, LATE_RELEASES, NS_PER_SEC) <= 100 + cases[c].burst);
        for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
            size_t got = max_in_window(at, LATE_RELEASES, lens[k]);
            size_t bound = window_bound(lens[k], iv, cases[c].burst);
            if (got > bound)
                fail_msg("case %zu: %zu releases in %llu ns, bound %zu", c, got,
                         (unsigned long long)lens[k], bound);
        }
        double rate = achieved_rate(at, LATE_RELEASES);
        assert_true(rate >= 100 * 0.999 && rate <= 100 * 1.001);
        drain_free(d);
    }
}

/* (c) No idle credit: a token that came due while nobody waited is not handed out "as of"
 * then. Idle for 1.5 intervals, two immediate takes: the second is refused, and it goes
 * one interval after the first (not after the idle due time). */
static void test_late_no_idle_credit(void **state)
{
    const struct dispatch_limit lim[] = {{100, 1}};
    struct dispatch *d = make(lim, 1, 100, 10, 60 * NS_PER_SEC);
    uint64_t t0 = fake_now();

    submit_ok(d, &w[0]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    fake_advance_ms(15); /* the next token came due at t0 + 10 ms; nobody was waiting */
    submit_ok(d, &w[1]);
    submit_ok(d, &w[2]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[1]);
    assert_null(dispatch_next(d, fake_now())); /* burst 1: the second immediate take */
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 25 * NS_PER_MS);
    fake_advance_ms(4);
    assert_null(dispatch_next(d, fake_now()));
    /* w[2] was waiting when its token came due: a late pull keeps that slot... */
    fake_advance_ms(9); /* t0 + 28 ms: 3 ms late */
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[2]);
    submit_ok(d, &w[3]);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 35 * NS_PER_MS);
    /* ...but a newcomer after an idle due is booked as of its own arrival. */
    fake_advance_ms(7);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[3]);
    fake_advance_ms(18); /* t0 + 53: due at 45 with nobody waiting */
    submit_ok(d, &w[4]);
    submit_ok(d, &w[5]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[4]);
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 63 * NS_PER_MS);
    drain_free(d);
}

/* (d) A pull one interval late or more has missed its slot: the schedule restarts from
 * the late pull, one release, no catch-up burst. */
static void test_late_stall_drops_slot(void **state)
{
    const struct dispatch_limit lim[] = {{100, 1}};
    struct dispatch *d = make(lim, 1, 100, 10, 60 * NS_PER_SEC);
    uint64_t t0 = fake_now();

    for (int i = 0; i < 5; i++)
        submit_ok(d, &w[i]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 10 * NS_PER_MS);
    /* Exactly one interval late: the slot is gone. */
    fake_advance_ms(20);
    assert_int_equal(release_all(d), 1);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 30 * NS_PER_MS);
    /* A stall of five intervals: one release, and the next one interval later. */
    fake_advance_ms(60);
    assert_int_equal(release_all(d), 1);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 90 * NS_PER_MS);
    /* Just under one interval late still keeps the slot. */
    fake_advance_ns(20 * NS_PER_MS - 1);
    assert_int_equal(release_all(d), 1);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 100 * NS_PER_MS);
    drain_free(d);

    /* With burst 3, a stall gives back the burst and not one release more. */
    const struct dispatch_limit three[] = {{100, 3}};
    d = make(three, 1, 100, 20, 60 * NS_PER_SEC);
    for (int i = 0; i < 20; i++)
        submit_ok(d, &w[10 + i]);
    assert_int_equal(release_all(d), 3);
    fake_advance_ms(500);
    assert_int_equal(release_all(d), 3);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now() + 10 * NS_PER_MS);
    drain_free(d);
}

/* A pause restarts the schedule at its end: a token that came due during the pause is not
 * booked back then, though the waiter was queued (a late pull after the pause does not
 * make the next release come sooner than one interval). */
static void test_late_pause_restarts_schedule(void **state)
{
    const struct dispatch_limit lim[] = {{100, 1}};
    struct dispatch *d = make(lim, 1, 100, 10, 60 * NS_PER_SEC);
    uint64_t t0 = fake_now();

    submit_ok(d, &w[0]);
    submit_ok(d, &w[1]);
    submit_ok(d, &w[2]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    dispatch_pause_until(d, t0 + 15 * NS_PER_MS); /* w[1]'s token is due at t0 + 10 ms */
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 15 * NS_PER_MS);
    fake_advance_ms(17);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[1]);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 27 * NS_PER_MS);
    /* The same holds for a key's own pause. */
    dispatch_pause_key_until(d, NULL, 0, t0 + 30 * NS_PER_MS);
    assert_int_equal(dispatch_key_paused_until(d, NULL, 0), t0 + 30 * NS_PER_MS);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 30 * NS_PER_MS);
    fake_advance_ms(15); /* t0 + 32 ms */
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[2]);
    submit_ok(d, &w[3]);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 42 * NS_PER_MS);
    drain_free(d);
}

/* ---------------------------------------------------------------- shared limits (issue 10) */

static struct dispatch *make_shared(const struct dispatch_limit *limits, size_t nlimits,
                                    uint32_t mask, uint32_t queue_size, uint64_t max_wait_ns)
{
    struct dispatch_config cfg = config(limits, nlimits, 1000, queue_size, max_wait_ns);
    struct dispatch_shared_config sc = {.limits = mask};
    struct dispatch *d = dispatch_new_shared(&cfg, NULL, &sc, fake_now());

    assert_non_null(d);
    return d;
}

static struct lease_reply slots(uint32_t k, int64_t off_ns, uint64_t interval_ns, uint32_t n)
{
    return (struct lease_reply){
        .slots = k, .first_offset_ns = off_ns, .interval_ns = interval_ns, .instances = n};
}

static void test_shared_config(void **state)
{
    const struct dispatch_limit lim[] = {{10, 1}, {5, 1}};
    struct dispatch_config cfg = config(lim, 2, 10, 10, NS_PER_SEC);
    struct dispatch_shared_config beyond = {.limits = 1u << 2};
    struct dispatch_shared_config bad_horizon = {.limits = 1,
                                                 .horizon_ns = LEASE_MAX_HORIZON_NS + 1};
    struct dispatch_shared_config second = {.limits = 2, .horizon_ns = 200 * NS_PER_MS};

    assert_null(dispatch_new_shared(&cfg, NULL, &beyond, fake_now()));
    assert_null(dispatch_new_shared(&cfg, NULL, &bad_horizon, fake_now()));
    struct dispatch *d = dispatch_new_shared(&cfg, NULL, NULL, fake_now());
    assert_non_null(d);
    assert_int_equal(dispatch_shared_count(d), 0);
    assert_null(dispatch_lease(d, 0));
    dispatch_free(d);

    d = dispatch_new_shared(&cfg, NULL, &second, fake_now());
    assert_non_null(d);
    assert_int_equal(dispatch_shared_count(d), 1);
    assert_null(dispatch_lease(d, 0));
    assert_null(dispatch_lease(d, 2));
    const struct lease *l = dispatch_lease(d, 1);
    assert_non_null(l);
    assert_int_equal(lease_horizon_ns(l), 200 * NS_PER_MS);
    assert_int_equal(lease_interval_ns(l), 200 * NS_PER_MS);
    /* The lease calls on a local limit (or out of range) do nothing. */
    struct lease_reply r = slots(3, 0, 0, 1);
    dispatch_lease_grant(d, 0, fake_now(), fake_now(), &r);
    dispatch_lease_fallback(d, 0, fake_now());
    dispatch_lease_drop_until(d, 7, fake_now() + NS_PER_SEC);
    assert_int_equal(dispatch_lease_recover(d, 0), 0);
    assert_int_equal(dispatch_lease_want(d, 0, fake_now()), 0);
    assert_int_equal(dispatch_lease_want_at_ns(d, 0, fake_now()), DISPATCH_NEVER);
    dispatch_free(d);
}

/* A shared limit releases only on the slots its lease holds: nothing before a grant, and no
 * timer for it (the grant comes with a kick); then one release per slot, in its window. */
static void test_shared_needs_grant(void **state)
{
    const struct dispatch_limit lim[] = {{10, 1}};
    struct dispatch *d = make_shared(lim, 1, 1, 10, 10 * NS_PER_SEC);
    uint64_t t0 = fake_now();

    for (int i = 0; i < 3; i++)
        submit_ok(d, &w[i]);
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(dispatch_wake_ns(d, fake_now()), w[0].deadline_ns);
    assert_int_equal(dispatch_lease_want(d, 0, fake_now()), 3);
    assert_int_equal(dispatch_lease_want_at_ns(d, 0, fake_now()), fake_now());

    fake_advance_ms(1);
    struct lease_reply r = slots(3, 10 * NS_PER_MS, 100 * NS_PER_MS, 1);
    dispatch_lease_grant(d, 0, t0, fake_now(), &r);
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 3, 1e-9);
    assert_int_equal(dispatch_lease_want(d, 0, fake_now()), 0); /* held cover the queue */
    /* Slot j: [t0 + 11 + 100 j, t0 + 30 + 100 j] ms. */
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 11 * NS_PER_MS);
    fake_now_ns = t0 + 11 * NS_PER_MS;
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 111 * NS_PER_MS);
    /* A loop stalled past slot 1's deadline: it is dropped, slot 2 goes in its window. */
    fake_now_ns = t0 + 215 * NS_PER_MS;
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[2 - 1]);
    assert_null(dispatch_next(d, fake_now()));
    const struct lease_counters *c = lease_counters(dispatch_lease(d, 0));
    assert_int_equal(c->released, 2);
    assert_int_equal(c->dropped, 1);
    /* Nothing held again: no timer but the deadline, and a slot asked for. */
    assert_int_equal(dispatch_wake_ns(d, fake_now()), w[2].deadline_ns);
    assert_int_equal(dispatch_lease_want(d, 0, fake_now()), 1 + 2); /* + recent releases */
    drain_free(d);
}

/* A local bucket and a shared limit: a release needs a token AND a slot. */
static void test_shared_and_local(void **state)
{
    const struct dispatch_limit lim[] = {{2, 1}, {10, 1}}; /* local 2/s, shared 10/s */
    struct dispatch *d = make_shared(lim, 2, 2, 10, 10 * NS_PER_SEC);
    uint64_t t0 = fake_now();

    for (int i = 0; i < 4; i++)
        submit_ok(d, &w[i]);
    /* Twenty slots, the first due now (offset 0), then every 100 ms. */
    struct lease_reply r = slots(20, 0, 100 * NS_PER_MS, 1);
    dispatch_lease_grant(d, 1, t0, t0, &r);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    assert_null(dispatch_next(d, fake_now()));
    /* Slot at 100 ms, token at 500 ms: the token decides. */
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 500 * NS_PER_MS);
    fake_now_ns = t0 + 100 * NS_PER_MS;
    assert_null(dispatch_next(d, fake_now())); /* a slot, no token: the slot passes */
    fake_now_ns = t0 + 500 * NS_PER_MS;
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[1]);
    assert_int_equal(lease_counters(dispatch_lease(d, 1))->dropped, 4); /* 100..400 ms */
    /* Token at 1000 ms, and a slot then too. */
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 1000 * NS_PER_MS);
    /* A token with no slot open: the slot decides. */
    fake_now_ns = t0 + 1050 * NS_PER_MS;
    assert_null(dispatch_next(d, fake_now())); /* slot 10 ms past its window of [1000, 1020] */
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 1100 * NS_PER_MS);
    fake_now_ns = t0 + 1100 * NS_PER_MS;
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[2]);
    /* The token came due at 1000 ms: booked then (a late release keeps the local schedule). */
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 0.2, 1e-9);
    drain_free(d);
}

/* Wake-ups: held slots arm the timer; none held arms none; fallback arms the local pace. */
static void test_shared_wake(void **state)
{
    const struct dispatch_limit lim[] = {{30, 1}};
    struct dispatch *d = make_shared(lim, 1, 1, 100, 60 * NS_PER_SEC);
    uint64_t t0 = fake_now();

    assert_int_equal(dispatch_wake_ns(d, fake_now()), DISPATCH_NEVER);
    submit_ok(d, &w[0]);
    submit_ok(d, &w[1]);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), w[0].deadline_ns);
    /* A zero grant: n = 3, ask again in 200 ms; still nothing to wake for but the deadline. */
    struct lease_reply none = {.slots = 0, .instances = 3, .retry_in_ns = 200 * NS_PER_MS};
    dispatch_lease_grant(d, 0, t0, t0, &none);
    assert_int_equal(dispatch_lease_want(d, 0, fake_now()), 0);
    assert_int_equal(dispatch_lease_want_at_ns(d, 0, fake_now()), t0 + 200 * NS_PER_MS);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), w[0].deadline_ns);
    /* The store unreachable: rate / 3, one release every 100 ms (burst 1). */
    dispatch_lease_fallback(d, 0, fake_now());
    assert_int_equal(lease_mode(dispatch_lease(d, 0)), LEASE_FALLBACK);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now());
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now() + 3 * 33333334ull);
    fake_advance_ns(3 * 33333334ull);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[1]);
    /* Back: the debit, and the lease governs again. */
    assert_int_equal(dispatch_lease_recover(d, 0), 2);
    submit_ok(d, &w[2]);
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(dispatch_wake_ns(d, fake_now()), w[2].deadline_ns);
    struct lease_reply r = slots(1, 40 * NS_PER_MS, 33333334, 3);
    dispatch_lease_grant(d, 0, fake_now(), fake_now(), &r);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now() + 40 * NS_PER_MS);
    drain_free(d);
}

/* Admission predicts a shared limit at this instance's share: rate / n per queued token. */
static void test_shared_admission(void **state)
{
    const struct dispatch_limit lim[] = {{30, 1}};
    struct dispatch *d = make_shared(lim, 1, 1, 100, 2 * NS_PER_SEC);
    uint64_t retry = 0;
    int i;

    /* Before any reply n = 1: one token every 33.3 ms; the 60th is predicted at 2 s. */
    for (i = 0; i < 59; i++)
        submit_ok(d, &w[i]);
    assert_int_equal(dispatch_submit(d, &w[59], fake_now(), &retry), DISPATCH_LATE);
    while (dispatch_pop(d) != NULL)
        ;
    /* Three instances: 10/s each, 100 ms a token: 20 fit in 2 s. */
    struct lease_reply none = {.slots = 0, .instances = 3};
    dispatch_lease_grant(d, 0, fake_now(), fake_now(), &none);
    for (i = 0; i < 19; i++)
        submit_ok(d, &w[i]);
    assert_int_equal(dispatch_submit(d, &w[19], fake_now(), &retry), DISPATCH_LATE);
    assert_int_equal(retry, 3 * 33333334ull * 20 - 2 * NS_PER_SEC);
    assert_int_equal(w[19].queued, 0);
    /* Slots held count at their times: 10 slots over the next 300 ms make room. */
    struct lease_reply r = slots(10, 0, 33333334, 3);
    dispatch_lease_grant(d, 0, fake_now(), fake_now(), &r);
    /* The 27th token: the 10th slot at 9 T, then 17 at 3 T each: 40 ns over 2 s. */
    for (i = 19; i < 26; i++)
        submit_ok(d, &w[i]);
    assert_int_equal(dispatch_submit(d, &w[26], fake_now(), &retry), DISPATCH_LATE);
    assert_int_equal(retry, 9 * 33333334ull + 17 * 3 * 33333334ull - 2 * NS_PER_SEC);
    drain_free(d);
}

/* A cost above 1 is gathered slot by slot, each in its window, and goes with the last. */
static void test_shared_cost_gathered(void **state)
{
    const struct dispatch_limit lim[] = {{10, 5}};
    struct dispatch *d = make_shared(lim, 1, 1, 10, 10 * NS_PER_SEC);
    uint64_t t0 = fake_now();

    w[0].cost = 3;
    submit_ok(d, &w[0]);
    struct lease_reply r = slots(5, 10 * NS_PER_MS, 100 * NS_PER_MS, 1); /* 10, 110, ... */
    dispatch_lease_grant(d, 0, t0, t0, &r);
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 10 * NS_PER_MS);
    const uint64_t at_ms[] = {10, 110};
    for (int i = 0; i < 2; i++) {
        fake_now_ns = t0 + at_ms[i] * NS_PER_MS;
        assert_null(dispatch_next(d, fake_now()));
        assert_int_equal(lease_gathered(dispatch_lease(d, 0)), (uint64_t)i + 1);
        assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + (at_ms[i] + 100) * NS_PER_MS);
    }
    fake_now_ns = t0 + 210 * NS_PER_MS;
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    assert_int_equal(lease_counters(dispatch_lease(d, 0))->released, 3);
    assert_int_equal(lease_counters(dispatch_lease(d, 0))->dropped, 0);

    /* The waiter leaves after one slot was gathered for it: the next one uses it. */
    w[1].cost = 2;
    submit_ok(d, &w[1]);
    fake_now_ns = t0 + 310 * NS_PER_MS;
    assert_null(dispatch_next(d, fake_now()));
    dispatch_cancel(d, &w[1]);
    submit_ok(d, &w[2]);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[2]);
    /* A cost above the burst can never be granted: refused as for a local limit. */
    w[3].cost = 6;
    uint64_t retry = 0;
    assert_int_equal(dispatch_submit(d, &w[3], fake_now(), &retry), DISPATCH_LATE);
    assert_int_equal(retry, DISPATCH_NEVER);
    drain_free(d);
}

/* Two shared limits: a slot of the first is gathered in its window and waits for the second's. */
static void test_shared_two_leases(void **state)
{
    const struct dispatch_limit lim[] = {{10, 1}, {10, 1}};
    struct dispatch *d = make_shared(lim, 2, 3, 10, 10 * NS_PER_SEC);
    uint64_t t0 = fake_now();

    submit_ok(d, &w[0]);
    submit_ok(d, &w[1]);
    struct lease_reply a = slots(2, 10 * NS_PER_MS, 100 * NS_PER_MS, 1); /* 10, 110 */
    struct lease_reply b = slots(2, 50 * NS_PER_MS, 100 * NS_PER_MS, 1); /* 50, 150 */
    dispatch_lease_grant(d, 0, t0, t0, &a);
    dispatch_lease_grant(d, 1, t0, t0, &b);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 10 * NS_PER_MS);
    fake_now_ns = t0 + 10 * NS_PER_MS;
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(lease_gathered(dispatch_lease(d, 0)), 1);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 50 * NS_PER_MS);
    fake_now_ns = t0 + 50 * NS_PER_MS;
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 110 * NS_PER_MS);
    fake_now_ns = t0 + 110 * NS_PER_MS;
    assert_null(dispatch_next(d, fake_now()));
    fake_now_ns = t0 + 150 * NS_PER_MS;
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[1]);
    assert_int_equal(lease_counters(dispatch_lease(d, 0))->dropped, 0);
    assert_int_equal(lease_counters(dispatch_lease(d, 1))->dropped, 0);
    drain_free(d);
}

/* The fleet paused the budget: held slots before its end are dropped, nothing goes before it. */
static void test_shared_drop_until(void **state)
{
    const struct dispatch_limit lim[] = {{10, 1}};
    struct dispatch *d = make_shared(lim, 1, 1, 10, 10 * NS_PER_SEC);
    uint64_t t0 = fake_now();

    for (int i = 0; i < 3; i++)
        submit_ok(d, &w[i]);
    struct lease_reply r = slots(5, 10 * NS_PER_MS, 100 * NS_PER_MS, 1);
    dispatch_lease_grant(d, 0, t0, t0, &r);
    dispatch_lease_drop_until(d, 0, t0 + 250 * NS_PER_MS);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 310 * NS_PER_MS);
    assert_int_equal(dispatch_lease_want(d, 0, fake_now()), 0);
    fake_now_ns = t0 + 310 * NS_PER_MS;
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    assert_int_equal(lease_counters(dispatch_lease(d, 0))->dropped, 3);
    drain_free(d);
}

/* A reload: a limit staying shared keeps its slots; one turning shared starts with none; one
 * turning local starts with a full bucket; NULL keeps the shared config. */
static void test_shared_reconfigure(void **state)
{
    const struct dispatch_limit lim[] = {{10, 1}, {1, 1}};
    struct dispatch *d = make_shared(lim, 2, 1, 10, 10 * NS_PER_SEC);
    uint64_t t0 = fake_now();

    struct lease_reply r = slots(5, 10 * NS_PER_MS, 100 * NS_PER_MS, 2);
    dispatch_lease_grant(d, 0, t0, t0, &r);
    submit_ok(d, &w[0]);
    fake_now_ns = t0 + 10 * NS_PER_MS;
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]); /* limit 1's only token */

    /* Same shared limit at another rate, through the old API (NULL: keep shared). */
    const struct dispatch_limit faster[] = {{20, 1}, {1, 1}};
    struct dispatch_config cfg = config(faster, 2, 1000, 10, 10 * NS_PER_SEC);
    assert_int_equal(dispatch_reconfigure(d, &cfg, fake_now()), 0);
    assert_int_equal(dispatch_shared_count(d), 1);
    const struct lease *l = dispatch_lease(d, 0);
    assert_int_equal(lease_held(l, fake_now()), 4);
    assert_int_equal(lease_instances(l), 2);
    assert_int_equal(lease_interval_ns(l), 50 * NS_PER_MS);
    /* Balance kept (the take was booked at t0, when the token came due). */
    assert_float_equal(dispatch_tokens(d, 1, fake_now()), 0.01, 1e-9);

    /* Limit 1 turns shared (fresh lease), limit 0 turns local (full bucket). */
    struct dispatch_shared_config swap = {.limits = 2};
    assert_int_equal(dispatch_reconfigure_shared(d, &cfg, NULL, &swap, fake_now()), 0);
    assert_null(dispatch_lease(d, 0));
    assert_non_null(dispatch_lease(d, 1));
    assert_int_equal(lease_held(dispatch_lease(d, 1), fake_now()), 0);
    assert_float_equal(dispatch_tokens(d, 0, fake_now()), 1, 1e-9);
    submit_ok(d, &w[1]);
    assert_null(dispatch_next(d, fake_now())); /* limit 1 waits for a grant */
    assert_int_equal(dispatch_wake_ns(d, fake_now()), w[1].deadline_ns);

    /* Refused as a whole: a bit beyond the limits. */
    struct dispatch_shared_config beyond = {.limits = 4};
    assert_int_equal(dispatch_reconfigure_shared(d, &cfg, NULL, &beyond, fake_now()), -1);
    assert_non_null(dispatch_lease(d, 1));
    /* One limit left: the bit of the one removed goes with it. */
    struct dispatch_config one = config(faster, 1, 1000, 10, 10 * NS_PER_SEC);
    assert_int_equal(dispatch_reconfigure(d, &one, fake_now()), 0);
    assert_int_equal(dispatch_shared_count(d), 0);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[1]);
    drain_free(d);
}

/* Cancel and expiry behave as for local limits; a lease with nothing held waits for the
 * deadline, which expires the waiter. */
static void test_shared_cancel_expiry(void **state)
{
    const struct dispatch_limit lim[] = {{10, 1}};
    struct dispatch *d = make_shared(lim, 1, 1, 10, 500 * NS_PER_MS);

    submit_ok(d, &w[0]);
    submit_ok(d, &w[1]);
    dispatch_cancel(d, &w[0]);
    assert_int_equal(dispatch_lease_want(d, 0, fake_now()), 1);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), w[1].deadline_ns);
    fake_now_ns = w[1].deadline_ns;
    assert_null(dispatch_next(d, fake_now()));
    assert_ptr_equal(dispatch_expired(d, fake_now()), &w[1]);
    assert_int_equal(dispatch_lease_want(d, 0, fake_now()), 0);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), DISPATCH_NEVER);
    dispatch_free(d);
}

/* Three instances (dispatchers), one budget of 30/s through a tiny GCRA script (the design
 * note's), each offered 40 req/s for 4 s, each driven only by its wake-ups, its lease timer
 * and the replies: the fleet releases at 30/s, no 1 s window above the bound. */
struct sim_script {
    uint64_t T, H, tat, seen[3];
};

static struct lease_reply sim_script_call(struct sim_script *s, int who, uint64_t now,
                                          uint32_t want)
{
    uint32_t n = 0;

    s->seen[who] = now;
    for (int i = 0; i < 3; i++)
        n += s->seen[i] != 0 && now - s->seen[i] <= 3 * NS_PER_SEC;
    uint64_t tat = s->tat > now ? s->tat : now;
    uint64_t fit = now + s->H >= tat ? (now + s->H - tat) / s->T + 1 : 0;
    uint64_t share = s->H / s->T / n > 1 ? s->H / s->T / n : 1;
    uint64_t k = want < fit ? want : fit;
    k = k < share ? k : share;
    struct lease_reply r = {.slots = (uint32_t)k,
                            .first_offset_ns = (int64_t)tat - (int64_t)now,
                            .interval_ns = s->T,
                            .instances = n};
    if (k == 0 && tat > now + s->H)
        r.retry_in_ns = tat - s->H - now;
    s->tat = tat + k * s->T;
    return r;
}

#define SIM_REQS 160

static void test_shared_three_dispatchers(void **state)
{
    const struct dispatch_limit lim[] = {{30, 1}};
    static struct waiter req[3][SIM_REQS];
    struct dispatch *d[3];
    struct sim_script s = {.T = 33333334, .H = 500 * NS_PER_MS};
    const int64_t off[3] = {0, 3 * (int64_t)NS_PER_SEC, -2 * (int64_t)NS_PER_SEC};
    const uint64_t rtt[3] = {300000, 800000, 1500000}; /* script at half of it */
    uint64_t call_sent[3] = {0}, call_back[3] = {0}, rel[3 * SIM_REQS];
    int in_flight[3] = {0}, answered[3] = {0}, submitted[3] = {0};
    uint32_t asked[3] = {0};
    unsigned nrel = 0, refused = 0, expired = 0, calls = 0;
    struct lease_reply rep[3];
    uint64_t t0 = 2000 * NS_PER_SEC; /* real time; instance i reads t + off[i] */

    memset(req, 0, sizeof(req));
    for (int i = 0; i < 3; i++) {
        struct dispatch_config cfg = config(lim, 1, 1000, 1000, 30 * NS_PER_SEC);
        struct dispatch_shared_config sc = {.limits = 1};
        d[i] = dispatch_new_shared(&cfg, NULL, &sc, (uint64_t)((int64_t)t0 + off[i]));
        assert_non_null(d[i]);
    }
    for (uint64_t t = t0; t < t0 + 6 * NS_PER_SEC; t += 100000) {
        for (int i = 0; i < 3; i++) {
            uint64_t local = (uint64_t)((int64_t)t + off[i]);
            int kick = 0;
            /* 40 req/s for 4 s. */
            if (t < t0 + 4 * NS_PER_SEC && t >= t0 + (uint64_t)submitted[i] * 25 * NS_PER_MS) {
                struct waiter *x = &req[i][submitted[i]++];
                x->cost = 1;
                refused += dispatch_submit(d[i], x, local, NULL) != DISPATCH_QUEUED;
                kick = 1;
            }
            /* The script runs the call at half its round trip; the reply is read at the end. */
            if (in_flight[i] && !answered[i] && t >= call_sent[i] + rtt[i] / 2) {
                rep[i] = sim_script_call(&s, i, call_sent[i] + rtt[i] / 2, asked[i]);
                answered[i] = 1;
            }
            if (in_flight[i] && answered[i] && t >= call_back[i]) {
                dispatch_lease_grant(d[i], 0, (uint64_t)((int64_t)call_sent[i] + off[i]), local,
                                     &rep[i]);
                in_flight[i] = answered[i] = 0;
                kick = 1;
            }
            if (kick || dispatch_wake_ns(d[i], local) <= local) {
                while (dispatch_next(d[i], local) != NULL) {
                    assert_true(nrel < 3 * SIM_REQS);
                    rel[nrel++] = t;
                    dispatch_done(d[i]);
                }
                while (dispatch_expired(d[i], local) != NULL)
                    expired++;
                /* A timer armed for the next wake-up never fires at once again (no spin). */
                assert_true(dispatch_wake_ns(d[i], local) > local);
            }
            if (!in_flight[i] && dispatch_lease_want_at_ns(d[i], 0, local) <= local) {
                asked[i] = dispatch_lease_want(d[i], 0, local);
                assert_true(asked[i] > 0);
                calls++;
                in_flight[i] = 1;
                call_sent[i] = t;
                call_back[i] = t + rtt[i];
            }
        }
    }
    /* 4 s of demand at 120/s against 30/s: the queues never empty before 4 s, and drain after
     * (the predicted waits admitted only what fits in max_wait). */
    assert_int_equal(expired, 0);
    unsigned in4 = 0;
    for (unsigned i = 0; i < nrel; i++)
        in4 += rel[i] < t0 + 4 * NS_PER_SEC;
    assert_in_range(in4, 116, 124); /* 30/s for 4 s, within 3 % */
    for (unsigned i = 0, j = 0; i < nrel; i++) {
        while (j < nrel && rel[j] <= rel[i] + NS_PER_SEC)
            j++;
        assert_true(j - i <= 31); /* floor(1 s / T) + 1 + ceil(G / T) = 29 + 1 + 1 */
    }
    /* Backlogged throughout: no slot went unused (every wake-up in time), and a few calls a
     * second for the fleet, not one per request. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(lease_counters(dispatch_lease(d[i], 0))->dropped, 0);
    assert_true(calls < 6 * 30);
    print_message("    3 dispatchers at 30/s: %u released in the first 4 s, %u in 6 s, %u "
                  "refused, %.1f lease calls/s\n",
                  in4, nrel, refused, calls / 6.0);
    for (int i = 0; i < 3; i++)
        drain_free(d[i]);
}

/* ---------------------------------------------------------------- predicted wait (issue 12) */

/* dispatch_predict_wait_ns() for `x` now, then its submit: the prediction is what admission
 * reports, and asking twice gives the same (it changed nothing). Returns the verdict. */
static enum dispatch_admit predict_then_submit(struct dispatch *d, struct waiter *x,
                                               uint64_t *predicted)
{
    struct dispatch_admission adm;
    size_t len = dispatch_queue_len(d);
    uint64_t p = dispatch_predict_wait_ns(d, NULL, 0, x->cost, fake_now());

    assert_int_equal(dispatch_predict_wait_ns(d, NULL, 0, x->cost, fake_now()), p);
    assert_int_equal(dispatch_queue_len(d), len);
    enum dispatch_admit a = dispatch_submit_key(d, x, NULL, 0, fake_now(), &adm);
    assert_int_not_equal(a, DISPATCH_FULL);
    assert_int_equal(adm.predicted_wait_ns, p);
    if (predicted != NULL)
        *predicted = p;
    return a;
}

/* The prediction equals the next submit's on the unkeyed path, in each state: empty, a
 * backlog through two limits, requests in flight (not counted), a pause, a budget; a cost
 * above a burst is DISPATCH_NEVER (LATE, no Retry-After); a cost of 0 counts as 1. A later
 * `now` in a prediction does not move the dispatcher's clock. */
static void test_predict_wait_unkeyed(void **state)
{
    const struct dispatch_limit lim[] = {{10, 3}, {4, 5}};
    struct dispatch *d = make(lim, 2, 1, 100, 5 * NS_PER_SEC);
    uint64_t p, t0 = fake_now();
    int i;

    assert_int_equal(dispatch_predict_wait_ns(d, NULL, 0, 1, fake_now()), 0);
    assert_true(dispatch_predict_wait_ns(d, NULL, 0, 1, t0 + 60 * NS_PER_SEC) == 0);
    assert_int_equal(predict_then_submit(d, &w[0], &p), DISPATCH_QUEUED);
    assert_int_equal(p, 0);
    assert_int_equal(w[0].deadline_ns, t0 + 5 * NS_PER_SEC); /* the clock did not move */

    /* A backlog: 11 tokens, the slower limit decides (4/s burst 5: 2.75 s - 1.25 s; 10/s
     * burst 3: 0.8 s). */
    for (i = 1; i < 8; i++)
        assert_int_equal(predict_then_submit(d, &w[i], NULL), DISPATCH_QUEUED);
    w[8].cost = 3;
    assert_int_equal(predict_then_submit(d, &w[8], &p), DISPATCH_QUEUED);
    assert_int_equal(p, 1500 * NS_PER_MS);
    /* Cost 0 is 1: one more token, 250 ms more. */
    assert_int_equal(dispatch_predict_wait_ns(d, NULL, 0, 0, fake_now()), 1750 * NS_PER_MS);
    assert_int_equal(dispatch_predict_wait_ns(d, NULL, 0, 1, fake_now()), 1750 * NS_PER_MS);

    /* Some released, one in flight at max_in_flight: not part of the prediction. */
    assert_int_equal(release_all(d), 1);
    fake_advance_ms(300);
    assert_int_equal(predict_then_submit(d, &w[9], NULL), DISPATCH_QUEUED);
    dispatch_done(d);
    assert_int_equal(release_all(d), 1);
    assert_int_equal(predict_then_submit(d, &w[10], NULL), DISPATCH_QUEUED);

    /* A pause: the tokens are counted from its end. */
    dispatch_pause_until(d, fake_now() + 2 * NS_PER_SEC);
    assert_int_equal(predict_then_submit(d, &w[11], &p), DISPATCH_QUEUED);
    assert_true(p > 2 * NS_PER_SEC);
    dispatch_pause_until(d, fake_now() + 4 * NS_PER_SEC);
    assert_int_equal(predict_then_submit(d, &w[16], &p), DISPATCH_LATE); /* past max_wait */
    assert_true(p > 5 * NS_PER_SEC);
    fake_advance_ms(4500);
    dispatch_done(d);
    assert_true(release_all(d) >= 1);
    assert_int_equal(predict_then_submit(d, &w[12], NULL), DISPATCH_QUEUED);

    /* A budget that runs out before this request: the reset. */
    dispatch_set_budget(d, 0, fake_now() + 4 * NS_PER_SEC);
    assert_int_equal(predict_then_submit(d, &w[13], &p), DISPATCH_QUEUED);
    assert_int_equal(p, 4 * NS_PER_SEC);

    /* A cost no burst covers: never, and admission says so too. */
    w[14].cost = 6;
    assert_int_equal(dispatch_predict_wait_ns(d, NULL, 0, 6, fake_now()), DISPATCH_NEVER);
    assert_int_equal(predict_then_submit(d, &w[14], NULL), DISPATCH_LATE);
    uint64_t retry = 0;
    assert_int_equal(dispatch_submit(d, &w[14], fake_now(), &retry), DISPATCH_LATE);
    assert_int_equal(retry, DISPATCH_NEVER);

    /* Cost 0 is 1. */
    w[15].cost = 0;
    assert_int_equal(dispatch_predict_wait_ns(d, NULL, 0, 0, fake_now()),
                     dispatch_predict_wait_ns(d, NULL, 0, 1, fake_now()));
    assert_int_equal(predict_then_submit(d, &w[15], NULL), DISPATCH_QUEUED);
    drain_free(d);
}

/* With a shared limit the prediction follows the lease (slots held, then rate / n), as
 * admission does; a full queue is not part of it (the depth tells). */
static void test_predict_wait_shared(void **state)
{
    const struct dispatch_limit lim[] = {{30, 1}};
    struct dispatch *d = make_shared(lim, 1, 1, 10, 2 * NS_PER_SEC);
    uint64_t p;
    int i = 0;

    /* Before any reply: n = 1, a slot every 33.3 ms. */
    assert_int_equal(predict_then_submit(d, &w[i++], &p), DISPATCH_QUEUED);
    assert_int_equal(p, 33333334);
    struct lease_reply none = {.slots = 0, .instances = 3};
    dispatch_lease_grant(d, 0, fake_now(), fake_now(), &none);
    assert_int_equal(predict_then_submit(d, &w[i++], &p), DISPATCH_QUEUED);
    assert_int_equal(p, 2 * 3 * 33333334ull);
    struct lease_reply r = slots(4, 10 * NS_PER_MS, 33333334, 3);
    dispatch_lease_grant(d, 0, fake_now(), fake_now(), &r);
    while (i < 10)
        assert_int_equal(predict_then_submit(d, &w[i++], NULL), DISPATCH_QUEUED);
    /* Full: admission says FULL (and predicts nothing); the prediction is still the wait. */
    p = dispatch_predict_wait_ns(d, NULL, 0, 1, fake_now());
    assert_true(p > 0 && p != DISPATCH_NEVER);
    assert_int_equal(dispatch_submit(d, &w[i], fake_now(), NULL), DISPATCH_FULL);
    drain_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_invalid_config, setup),
        cmocka_unit_test_setup(test_release_timing, setup),
        cmocka_unit_test_setup(test_several_limits, setup),
        cmocka_unit_test_setup(test_late_several_limits, setup),
        cmocka_unit_test_setup(test_late, setup),
        cmocka_unit_test_setup(test_cost_zero_and_too_big, setup),
        cmocka_unit_test_setup(test_full, setup),
        cmocka_unit_test_setup(test_max_in_flight, setup),
        cmocka_unit_test_setup(test_expiry_order, setup),
        cmocka_unit_test_setup(test_cancel_takes_nothing, setup),
        cmocka_unit_test_setup(test_wake_ns, setup),
        cmocka_unit_test_setup(test_reconfigure, setup),
        cmocka_unit_test_setup(test_reconfigure_below_cost, setup),
        cmocka_unit_test_setup(test_requeue_head, setup),
        cmocka_unit_test_setup(test_requeue_after_reload_keeps_deadline_order, setup),
        cmocka_unit_test_setup(test_requeued_keep_arrival_order, setup),
        cmocka_unit_test_setup(test_requeued_keep_arrival_order_in_a_flow, setup),
        cmocka_unit_test_setup(test_clock_backwards, setup),
        cmocka_unit_test_setup(test_free_unlinks, setup),
        cmocka_unit_test_setup(test_fair_config, setup),
        cmocka_unit_test_setup(test_priority_unkeyed, setup),
        cmocka_unit_test_setup(test_pause_and_budget, setup),
        cmocka_unit_test_setup(test_free_unlinks_keyed, setup),
        cmocka_unit_test_setup(test_late_pulls_keep_rate, setup),
        cmocka_unit_test_setup(test_late_pulls_window_bound, setup),
        cmocka_unit_test_setup(test_late_no_idle_credit, setup),
        cmocka_unit_test_setup(test_late_stall_drops_slot, setup),
        cmocka_unit_test_setup(test_late_pause_restarts_schedule, setup),
        cmocka_unit_test_setup(test_shared_config, setup),
        cmocka_unit_test_setup(test_shared_needs_grant, setup),
        cmocka_unit_test_setup(test_shared_and_local, setup),
        cmocka_unit_test_setup(test_shared_wake, setup),
        cmocka_unit_test_setup(test_shared_admission, setup),
        cmocka_unit_test_setup(test_shared_cost_gathered, setup),
        cmocka_unit_test_setup(test_shared_two_leases, setup),
        cmocka_unit_test_setup(test_shared_drop_until, setup),
        cmocka_unit_test_setup(test_shared_reconfigure, setup),
        cmocka_unit_test_setup(test_shared_cancel_expiry, setup),
        cmocka_unit_test_setup(test_shared_three_dispatchers, setup),
        cmocka_unit_test_setup(test_predict_wait_unkeyed, setup),
        cmocka_unit_test_setup(test_predict_wait_shared, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
