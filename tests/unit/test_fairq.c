/*
 * tests/unit/test_fairq: fair queuing through limiter/dispatch (with the real fairq, bucket
 * and queue) against a fake clock: round robin across keys, cost weighting, per-key limits,
 * per-key queue share, priorities and the starvation guard, the key cap with its overflow
 * flow and idle expiry, the upstream's pause and budget, deadlines in arrival order while
 * release order is fair, cancel, requeue and reconfigure; the dashboard's observers (the
 * predicted wait against admission's, the busiest keys against a brute force).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "limiter/dispatch.h"
#include "limiter/fairq.h"
#include "limiter/queue.h"
#include "tests/unit/fakeclock.h"

#define NW 2000

static struct waiter w[NW];
static const char *wkey[NW]; /* the key each waiter was submitted with */

static int setup(void **state)
{
    memset(w, 0, sizeof(w));
    memset(wkey, 0, sizeof(wkey));
    for (int i = 0; i < NW; i++) {
        w[i].cost = 1;
        w[i].data = &w[i];
    }
    return 0;
}

static struct dispatch_config config(const struct dispatch_limit *limits, uint32_t max_in_flight,
                                     uint32_t queue_size, uint64_t max_wait_ns)
{
    return (struct dispatch_config){
        .limits = limits,
        .nlimits = 1,
        .max_in_flight = max_in_flight,
        .queue_size = queue_size,
        .max_wait_ns = max_wait_ns,
    };
}

static struct dispatch *make(double rate, double burst, uint32_t queue_size, uint64_t max_wait_ns,
                             const struct dispatch_fair_config *fair)
{
    static struct dispatch_limit lim[1];
    lim[0] = (struct dispatch_limit){rate, burst};
    struct dispatch_config cfg = config(lim, 1000000, queue_size, max_wait_ns);
    struct dispatch *d = dispatch_new_fair(&cfg, fair, fake_now());

    assert_non_null(d);
    return d;
}

static enum dispatch_admit submit(struct dispatch *d, int i, const char *key,
                                  struct dispatch_admission *out)
{
    enum dispatch_admit a =
        dispatch_submit_key(d, &w[i], key, key != NULL ? strlen(key) : 0, fake_now(), out);
    if (a == DISPATCH_QUEUED)
        wkey[i] = key;
    return a;
}

static void submit_ok(struct dispatch *d, int i, const char *key)
{
    assert_int_equal(submit(d, i, key, NULL), DISPATCH_QUEUED);
    assert_int_equal(w[i].queued, 1);
}

static int idx(const struct waiter *x) { return (int)(x - w); }

/* Release everything allowed now, done at once; store the indexes in order[]. */
static size_t release_now(struct dispatch *d, int *order, size_t max)
{
    size_t n = 0;
    struct waiter *x;

    while (n < max && (x = dispatch_next(d, fake_now())) != NULL) {
        order[n++] = idx(x);
        dispatch_done(d);
    }
    return n;
}

/* Release `count` waiters, moving the clock to each wake-up; their indexes in order[]. */
static void release_timed(struct dispatch *d, int *order, size_t count)
{
    size_t n = 0;

    while (n < count) {
        n += release_now(d, order + n, count - n);
        if (n == count)
            break;
        uint64_t wake = dispatch_wake_ns(d, fake_now());
        assert_true(wake != DISPATCH_NEVER);
        assert_true(wake > fake_now()); /* nothing left to do now: no spinning */
        fake_advance_ns(wake - fake_now());
    }
}

static void drain_free(struct dispatch *d)
{
    while (dispatch_pop(d) != NULL)
        ;
    dispatch_free(d);
}

/* The scenario: A queues 500, B then queues 10; B's 10 go within about
 * 10 x 2 releases (two active keys), not behind A's 500, and in B's own order. */
static void test_flood_does_not_delay_other_key(void **state)
{
    struct dispatch *d = make(10, 1, 1000, 3600 * NS_PER_SEC, NULL);
    uint64_t t0 = fake_now();
    int order[40];

    for (int i = 0; i < 500; i++)
        submit_ok(d, i, "A");
    for (int i = 500; i < 510; i++)
        submit_ok(d, i, "B");
    assert_int_equal(dispatch_active_flows(d), 2);
    assert_int_equal(dispatch_nkeys(d), 2);

    release_timed(d, order, 21);
    int nb = 0, next_a = 0, next_b = 500;
    for (int k = 0; k < 21; k++) {
        if (strcmp(wkey[order[k]], "B") == 0) {
            assert_int_equal(order[k], next_b++); /* FIFO within B */
            nb++;
        } else {
            assert_int_equal(order[k], next_a++); /* FIFO within A */
        }
    }
    assert_int_equal(nb, 10);
    /* 21 releases at 10/s with a burst of 1: 2 s, i.e. 10 x 2 keys / rate. */
    assert_true(fake_now() - t0 <= 2 * NS_PER_SEC);
    assert_int_equal(dispatch_key_queue_len(d, "B", 1), 0);
    assert_int_equal(dispatch_key_queue_len(d, "A", 1), 489);
    assert_int_equal(dispatch_active_flows(d), 1);
    drain_free(d);
}

/* Costs: a flow of cost-5 requests and one of cost-1 requests get equal token shares. */
static void test_weighted_costs(void **state)
{
    struct dispatch *d = make(100, 5, 1000, 3600 * NS_PER_SEC, NULL);
    int order[400];

    for (int i = 0; i < 100; i++) {
        w[i].cost = 5;
        submit_ok(d, i, "heavy");
    }
    for (int i = 100; i < 600; i++)
        submit_ok(d, i, "light");

    release_timed(d, order, 360);
    uint64_t heavy = 0, light = 0;
    for (int k = 0; k < 360; k++) {
        if (w[order[k]].cost == 5)
            heavy += 5;
        else
            light += 1;
    }
    /* 60 heavy (300 tokens) vs 300 light; a round's worth of slack. */
    assert_true(heavy >= light - 5 && heavy <= light + 5);
    assert_int_equal(heavy + light, 600);
    drain_free(d);
}

/* A configured quantum smaller than the costs still serves everyone (a turn is never
 * smaller than the head's cost), O(1) per choice. */
static void test_small_quantum(void **state)
{
    struct dispatch_fair_config fair = {.quantum_tokens = 1};
    struct dispatch *d = make(1000, 1000, 100, 3600 * NS_PER_SEC, &fair);
    int order[8];

    w[0].cost = w[1].cost = 3;
    submit_ok(d, 0, "A");
    submit_ok(d, 1, "A");
    submit_ok(d, 2, "B");
    submit_ok(d, 3, "B");
    assert_int_equal(release_now(d, order, 8), 4);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 1);
    assert_int_equal(order[3], 3);
    drain_free(d);
}

/* Per-key limits: a key at its own limit steps aside; others go; wake-up is its due time. */
static void test_key_limits(void **state)
{
    const struct dispatch_limit klim[] = {{1, 1}};
    struct dispatch_fair_config fair = {.key_limits = klim, .nkey_limits = 1};
    struct dispatch *d = make(100, 100, 100, 60 * NS_PER_SEC, &fair);
    uint64_t t0 = fake_now();
    int order[8];

    for (int i = 0; i < 3; i++)
        submit_ok(d, i, "A");
    assert_int_equal(release_now(d, order, 8), 1); /* A's own token */
    assert_int_equal(order[0], 0);
    assert_int_equal(dispatch_parked_flows(d), 1);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + NS_PER_SEC);
    assert_float_equal(dispatch_key_tokens(d, "A", 1, 0, fake_now()), 0, 1e-9);
    assert_float_equal(dispatch_key_tokens(d, "nobody", 6, 0, fake_now()), 1, 1e-9);

    /* B is not blocked by A. */
    fake_advance_ms(10);
    submit_ok(d, 10, "B");
    submit_ok(d, 11, "B");
    assert_int_equal(release_now(d, order, 8), 1);
    assert_int_equal(order[0], 10);
    assert_int_equal(dispatch_parked_flows(d), 2);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + NS_PER_SEC);

    fake_advance_ns(t0 + NS_PER_SEC - 1 - fake_now());
    assert_null(dispatch_next(d, fake_now()));
    fake_advance_ns(1);
    assert_int_equal(release_now(d, order, 8), 1);
    assert_int_equal(order[0], 1);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 1010 * NS_PER_MS); /* B's due */
    fake_advance_ms(10);
    assert_int_equal(release_now(d, order, 8), 1);
    assert_int_equal(order[0], 11);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 2 * NS_PER_SEC);

    /* The admission estimate counts the key's own limit: 2 queued ahead at 1/s. */
    struct dispatch_admission adm;
    submit_ok(d, 3, "A");
    assert_int_equal(submit(d, 4, "A", &adm), DISPATCH_QUEUED);
    /* A's 2, 3 and 4 get A's tokens at t0 + 2, 3 and 4 s. */
    assert_int_equal(adm.predicted_wait_ns, 3 * NS_PER_SEC - 10 * NS_PER_MS);
    /* A cost above the key's burst can never go. */
    w[5].cost = 2;
    assert_int_equal(submit(d, 5, "C", &adm), DISPATCH_LATE);
    assert_int_equal(adm.retry_after_ns, DISPATCH_NEVER);
    drain_free(d);
}

/* Per-key queue share: the flooding key is refused, others still get in. */
static void test_key_queue_share(void **state)
{
    struct dispatch_fair_config fair = {.key_queue_share = 3};
    struct dispatch *d = make(1, 1, 5, 3600 * NS_PER_SEC, &fair);
    struct dispatch_admission adm;

    for (int i = 0; i < 3; i++)
        submit_ok(d, i, "A");
    assert_int_equal(submit(d, 3, "A", &adm), DISPATCH_FULL);
    assert_int_equal(adm.key_full, 1);
    assert_true(adm.retry_after_ns >= NS_PER_MS);
    assert_int_equal(w[3].queued, 0);
    submit_ok(d, 4, "B");
    submit_ok(d, 5, "B");
    /* Now the whole queue (5) is full: that is not the key's fault. */
    assert_int_equal(submit(d, 6, "C", &adm), DISPATCH_FULL);
    assert_int_equal(adm.key_full, 0);
    /* A release from A makes room in A. */
    assert_int_equal(idx(dispatch_next(d, fake_now())), 0);
    assert_int_equal(submit(d, 3, "A", &adm), DISPATCH_QUEUED);
    drain_free(d);
}

/* Strict priorities with the guard: after 3 releases of class 0 while class 1 waits, one
 * of class 1; nothing of class 1 when class 0 is alone... and class 2 is not starved by 1. */
static void test_priorities_guard(void **state)
{
    struct dispatch_fair_config fair = {.priority_classes = 3, .priority_guard = 3};
    struct dispatch *d = make(1e6, 1e6, 1000, 3600 * NS_PER_SEC, &fair);
    int order[64];

    for (int i = 0; i < 12; i++) {
        w[i].priority = 0;
        submit_ok(d, i, "hi");
    }
    fake_advance_ms(1);
    for (int i = 20; i < 24; i++) {
        w[i].priority = 1;
        submit_ok(d, i, "mid");
    }
    fake_advance_ms(1);
    for (int i = 30; i < 33; i++) {
        w[i].priority = 9; /* beyond the classes: the lowest */
        submit_ok(d, i, "low");
    }
    /* The guard's release goes to the lower class whose next waiter is oldest: class 1's
     * while they are older, then class 2's (aging), never a starved class 2. */
    assert_int_equal(release_now(d, order, 64), 19);
    const int expect[19] = {0, 1, 2, 20, 3, 4, 5, 21, 6, 7, 8, 22, 9, 10, 11, 30, 23, 31, 32};
    for (int k = 0; k < 19; k++)
        assert_int_equal(order[k], expect[k]);

    /* A class-0 waiter arriving later still goes before the lower classes. */
    w[40].priority = 1;
    submit_ok(d, 40, "mid");
    w[41].priority = 0;
    submit_ok(d, 41, "hi2");
    assert_int_equal(release_now(d, order, 64), 2);
    assert_int_equal(order[0], 41);
    assert_int_equal(order[1], 40);
    dispatch_free(d);
}

/* Priorities and fairness together: within class 0, two keys alternate. */
static void test_priority_with_keys(void **state)
{
    struct dispatch_fair_config fair = {.priority_classes = 2, .priority_guard = 100};
    struct dispatch *d = make(1e6, 1e6, 1000, 3600 * NS_PER_SEC, &fair);
    int order[16];

    w[0].priority = 1;
    submit_ok(d, 0, "A");
    submit_ok(d, 1, "A");
    submit_ok(d, 2, "A");
    submit_ok(d, 3, "B");
    submit_ok(d, 4, "B");
    assert_int_equal(release_now(d, order, 16), 5);
    const int expect[5] = {1, 3, 2, 4, 0};
    for (int k = 0; k < 5; k++)
        assert_int_equal(order[k], expect[k]);
    dispatch_free(d);
}

/* The key cap: active keys are never evicted; newcomers share "~overflow"; an idle key
 * without state is recycled; idle keys expire; a flood of keys stays within max_keys. */
static void test_max_keys_overflow_idle(void **state)
{
    struct dispatch_fair_config fair = {.max_keys = 3, .key_idle_ns = 10 * NS_PER_SEC};
    struct dispatch *d = make(1000, 1000, 1000, 3600 * NS_PER_SEC, &fair);
    int order[16];

    submit_ok(d, 0, "k0");
    submit_ok(d, 1, "k1");
    submit_ok(d, 2, "k2");
    assert_int_equal(dispatch_nkeys(d), 3);
    submit_ok(d, 3, "k3"); /* at the cap, every key active: overflow */
    submit_ok(d, 4, "k4");
    assert_int_equal(dispatch_nkeys(d), 3);
    assert_int_equal(dispatch_key_queue_len(d, "~overflow", 9), 2);
    assert_int_equal(dispatch_key_queue_len(d, "k3", 2), 0);
    assert_int_equal(dispatch_key_queue_len(d, "k0", 2), 1);
    assert_int_equal(dispatch_active_flows(d), 4);

    /* Fair between the three keys and the overflow flow. */
    assert_int_equal(release_now(d, order, 16), 5);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[3], 3);
    assert_int_equal(order[4], 4);

    /* All idle now with full buckets (no key limits): a new key recycles the oldest idle. */
    submit_ok(d, 5, "k5");
    assert_int_equal(dispatch_nkeys(d), 3);
    assert_int_equal(dispatch_key_queue_len(d, "k5", 2), 1);
    assert_int_equal(dispatch_key_queue_len(d, "~overflow", 9), 0);

    /* Idle expiry, a few per submit: after 10 s the idle ones go. */
    assert_int_equal(release_now(d, order, 16), 1);
    fake_advance_ms(10000);
    submit_ok(d, 6, NULL); /* the default flow does no expiry work... */
    assert_int_equal(dispatch_nkeys(d), 3);
    submit_ok(d, 7, "k7"); /* ...a keyed submit looks at up to 2 idle flows */
    assert_int_equal(dispatch_nkeys(d), 2);
    submit_ok(d, 8, "k8");
    assert_int_equal(dispatch_nkeys(d), 2); /* k5 expired, k8 created */
    drain_free(d);

    /* A flood of distinct keys: memory stays at max_keys flows. */
    fair.max_keys = 50;
    d = make(1e6, 1e6, 2000, 3600 * NS_PER_SEC, &fair);
    static char keys[NW][24];
    for (int i = 0; i < 1500; i++) {
        snprintf(keys[i], sizeof(keys[i]), "flood%d", i);
        submit_ok(d, i, keys[i]);
        assert_true(dispatch_nkeys(d) <= 50);
        if (i % 7 == 0)
            release_now(d, order, 16);
    }
    assert_int_equal(dispatch_nkeys(d), 50);
    drain_free(d);
}

/* With per-key limits, an idle key whose bucket is not full yet is not recycled (that would
 * hand it a fresh burst): the newcomer uses the overflow flow. */
static void test_cap_keeps_key_state(void **state)
{
    const struct dispatch_limit klim[] = {{1, 5}};
    struct dispatch_fair_config fair = {
        .key_limits = klim, .nkey_limits = 1, .max_keys = 1, .key_idle_ns = NS_PER_SEC};
    struct dispatch *d = make(1000, 1000, 100, 3600 * NS_PER_SEC, &fair);
    int order[4];

    submit_ok(d, 0, "a");
    assert_int_equal(release_now(d, order, 4), 1);
    submit_ok(d, 1, "b");
    assert_int_equal(dispatch_key_queue_len(d, "~overflow", 9), 1);
    assert_float_equal(dispatch_key_tokens(d, "a", 1, 0, fake_now()), 4, 1e-9);
    /* Idle for 1 s but the bucket is full only at +1 s: expiry waits for both. */
    fake_advance_ms(1000);
    submit_ok(d, 2, "c"); /* a expires first (idle 1 s, bucket full again): room for c */
    assert_int_equal(dispatch_nkeys(d), 1);
    assert_int_equal(dispatch_key_queue_len(d, "a", 1), 0);
    assert_int_equal(dispatch_key_queue_len(d, "c", 1), 1);
    submit_ok(d, 3, "d"); /* c is active: d shares the overflow flow with b */
    assert_int_equal(dispatch_key_queue_len(d, "~overflow", 9), 2);
    drain_free(d);
}

/* Keys are copied: the caller's buffer may change after submit; long keys overflow. */
static void test_key_copied_and_long(void **state)
{
    struct dispatch *d = make(1, 1, 100, 3600 * NS_PER_SEC, NULL);
    char buf[8] = "alpha";
    char longkey[300];

    assert_int_equal(dispatch_submit_key(d, &w[0], buf, 5, fake_now(), NULL), DISPATCH_QUEUED);
    memcpy(buf, "omega", 5);
    assert_int_equal(dispatch_key_queue_len(d, "alpha", 5), 1);
    assert_int_equal(dispatch_key_queue_len(d, "omega", 5), 0);
    /* Not NUL-terminated, binary bytes fine: "al" is its own key. */
    assert_int_equal(dispatch_submit_key(d, &w[1], "alpha", 2, fake_now(), NULL), DISPATCH_QUEUED);
    assert_int_equal(dispatch_key_queue_len(d, "al", 2), 1);
    memset(longkey, 'x', sizeof(longkey));
    assert_int_equal(dispatch_submit_key(d, &w[2], longkey, sizeof(longkey), fake_now(), NULL),
                     DISPATCH_QUEUED);
    assert_int_equal(dispatch_key_queue_len(d, "~overflow", 9), 1);
    assert_int_equal(dispatch_nkeys(d), 2);
    drain_free(d);
}

/* The upstream's pause: nothing before its end; wake-up at its end; admission counts it. */
static void test_pause_until(void **state)
{
    struct dispatch *d = make(10, 10, 100, 3 * NS_PER_SEC, NULL);
    uint64_t t0 = fake_now();
    int order[8];
    struct dispatch_admission adm;

    submit_ok(d, 0, "A");
    submit_ok(d, 1, "B");
    dispatch_pause_until(d, t0 + 2 * NS_PER_SEC);
    dispatch_pause_until(d, t0 + NS_PER_SEC); /* an earlier end does not shorten it */
    assert_int_equal(dispatch_paused_until(d), t0 + 2 * NS_PER_SEC);
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 2 * NS_PER_SEC);
    assert_int_equal(submit(d, 2, "C", &adm), DISPATCH_QUEUED);
    assert_int_equal(adm.predicted_wait_ns, 2 * NS_PER_SEC);

    /* A pause longer than max_wait: refuse, and not before the pause ends (issue 9: a
     * client told to come back sooner would meet the same refusal). */
    dispatch_pause_until(d, t0 + 5 * NS_PER_SEC);
    assert_int_equal(submit(d, 3, "D", &adm), DISPATCH_LATE);
    assert_int_equal(adm.retry_after_ns, 5 * NS_PER_SEC);
    /* The deadline comes first now: the wake-up is the deadline. */
    assert_int_equal(dispatch_wake_ns(d, fake_now()), w[0].deadline_ns);

    fake_advance_ns(5 * NS_PER_SEC - 1);
    assert_null(dispatch_next(d, fake_now()));
    assert_ptr_equal(dispatch_expired(d, fake_now()), &w[0]);
    assert_ptr_equal(dispatch_expired(d, fake_now()), &w[1]);
    assert_ptr_equal(dispatch_expired(d, fake_now()), &w[2]);
    submit_ok(d, 4, "E");
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 5 * NS_PER_SEC);
    fake_advance_ns(1);
    assert_int_equal(release_now(d, order, 8), 1);
    dispatch_free(d);
}

/* The upstream's budget: no more than `remaining` releases before its reset. */
static void test_budget(void **state)
{
    struct dispatch *d = make(1000, 1000, 100, 60 * NS_PER_SEC, NULL);
    uint64_t t0 = fake_now();
    int order[16];
    uint64_t left, reset;

    for (int i = 0; i < 6; i++)
        submit_ok(d, i, i % 2 ? "A" : "B");
    dispatch_set_budget(d, 3, t0 + 5 * NS_PER_SEC);
    assert_int_equal(dispatch_budget(d, fake_now(), &left, &reset), 1);
    assert_int_equal(left, 3);
    assert_int_equal(release_now(d, order, 16), 3);
    assert_int_equal(dispatch_budget(d, fake_now(), &left, &reset), 1);
    assert_int_equal(left, 0);
    assert_int_equal(reset, t0 + 5 * NS_PER_SEC);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 5 * NS_PER_SEC);
    /* Admission: the budget is spent, so a newcomer waits for the reset. */
    struct dispatch_admission adm;
    assert_int_equal(submit(d, 6, "C", &adm), DISPATCH_QUEUED);
    assert_int_equal(adm.predicted_wait_ns, 5 * NS_PER_SEC);

    fake_advance_ns(5 * NS_PER_SEC - 1);
    assert_null(dispatch_next(d, fake_now()));
    fake_advance_ns(1);
    assert_int_equal(dispatch_budget(d, fake_now(), NULL, NULL), 0);
    assert_int_equal(release_now(d, order, 16), 4); /* the budget no longer applies */

    /* A new budget replaces the old; a reset in the past clears it. */
    for (int i = 10; i < 14; i++)
        submit_ok(d, i, "A");
    dispatch_set_budget(d, 1, fake_now() + NS_PER_SEC);
    dispatch_set_budget(d, 2, fake_now() + NS_PER_SEC);
    assert_int_equal(release_now(d, order, 16), 2);
    dispatch_set_budget(d, 0, fake_now());
    assert_int_equal(dispatch_budget(d, fake_now(), NULL, NULL), 0);
    assert_int_equal(release_now(d, order, 16), 2);
    dispatch_free(d);
}

/* Deadlines expire in arrival order although releases follow the fair order: B's second
 * waiter, arrived after A's last two, goes before them, and they expire (oldest first). */
static void test_deadlines_with_fair_order(void **state)
{
    struct dispatch *d = make(1, 1, 100, 3500 * NS_PER_MS, NULL);
    uint64_t t0 = fake_now();
    int order[8];

    for (int i = 0; i < 4; i++)
        submit_ok(d, i, "A");
    fake_advance_ms(100);
    submit_ok(d, 4, "B");
    submit_ok(d, 5, "B");
    release_timed(d, order, 4);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 4);
    assert_int_equal(order[2], 1);
    assert_int_equal(order[3], 5);
    /* One a second from t0: A's 0, waiting since t0 when the full bucket's token was due,
     * was pulled 0.1 s late and kept the schedule. */
    assert_int_equal(fake_now(), t0 + 3000 * NS_PER_MS);
    /* A's 2 would get a token at t0 + 4 s, after its deadline at t0 + 3.5 s. */
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 3500 * NS_PER_MS);
    fake_advance_ms(499);
    assert_null(dispatch_expired(d, fake_now()));
    fake_advance_ms(1);
    assert_null(dispatch_next(d, fake_now()));
    assert_ptr_equal(dispatch_expired(d, fake_now()), &w[2]);
    assert_ptr_equal(dispatch_expired(d, fake_now()), &w[3]);
    assert_null(dispatch_expired(d, fake_now()));
    assert_int_equal(dispatch_queue_len(d), 0);
    assert_int_equal(dispatch_active_flows(d), 0);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), DISPATCH_NEVER);
    dispatch_free(d);
}

/* Cancel from the middle, the head and the tail of a flow; of a parked flow's head. */
static void test_cancel_in_flows(void **state)
{
    const struct dispatch_limit klim[] = {{1, 1}};
    struct dispatch_fair_config fair = {.key_limits = klim, .nkey_limits = 1};
    struct dispatch *d = make(1000, 1000, 100, 60 * NS_PER_SEC, &fair);
    int order[16];

    for (int i = 0; i < 5; i++)
        submit_ok(d, i, "A");
    submit_ok(d, 5, "B");
    dispatch_cancel(d, &w[2]); /* middle */
    dispatch_cancel(d, &w[0]); /* head */
    dispatch_cancel(d, &w[4]); /* tail */
    dispatch_cancel(d, &w[4]); /* again: no-op */
    assert_int_equal(w[2].queued, 0);
    assert_null(w[2].flow);
    assert_int_equal(dispatch_key_queue_len(d, "A", 1), 2);
    assert_int_equal(dispatch_queue_len(d), 3);
    assert_int_equal(release_now(d, order, 16), 2);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 5);
    /* A is parked with 3 at its head; cancelling it leaves 3's follower... none: A empties. */
    assert_int_equal(dispatch_parked_flows(d), 1);
    dispatch_cancel(d, &w[3]);
    assert_int_equal(dispatch_parked_flows(d), 0);
    assert_int_equal(dispatch_active_flows(d), 0);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), DISPATCH_NEVER);

    /* A parked head with a cheaper follower: cancel the head, the follower is looked at
     * again (and parked again at its own due time). */
    fake_advance_ms(1000);
    w[6].cost = 1;
    submit_ok(d, 6, "C");
    submit_ok(d, 7, "C");
    submit_ok(d, 8, "C");
    assert_int_equal(release_now(d, order, 16), 1);
    assert_int_equal(dispatch_parked_flows(d), 1);
    dispatch_cancel(d, &w[7]);
    assert_int_equal(release_now(d, order, 16), 0);
    assert_int_equal(dispatch_parked_flows(d), 1);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now() + NS_PER_SEC);
    drain_free(d);
}

/* Requeue: back at the head of its own flow, and first of its class; a flow that expired
 * meanwhile sends it to the overflow flow. */
static void test_requeue_head_flows(void **state)
{
    struct dispatch_fair_config fair = {.key_idle_ns = NS_PER_SEC, .max_keys = 1};
    struct dispatch *d = make(1000, 1000, 100, 60 * NS_PER_SEC, &fair);
    int order[16];

    submit_ok(d, 0, "A");
    submit_ok(d, 1, "A");
    submit_ok(d, 2, NULL);
    submit_ok(d, 3, NULL);
    struct waiter *x = dispatch_next(d, fake_now());
    assert_ptr_equal(x, &w[0]);
    assert_int_equal(idx(dispatch_next(d, fake_now())), 2);
    dispatch_requeue_head(d, &w[0]);
    assert_int_equal(dispatch_in_flight(d), 1);
    assert_int_equal(dispatch_key_queue_len(d, "A", 1), 2);
    assert_int_equal(release_now(d, order, 16), 3);
    assert_int_equal(order[0], 0); /* its turn again, before the default flow's 3 */
    assert_int_equal(order[1], 3);
    assert_int_equal(order[2], 1);

    /* The released w[1] comes back after A expired and another key took its place. */
    fake_advance_ms(2000);
    submit_ok(d, 5, "B"); /* expires A (idle 2 s), creates B */
    assert_int_equal(dispatch_nkeys(d), 1);
    assert_int_equal(dispatch_key_queue_len(d, "A", 1), 0);
    dispatch_requeue_head(d, &w[1]);
    assert_int_equal(dispatch_key_queue_len(d, "~overflow", 9), 1);
    assert_int_equal(idx(dispatch_next(d, fake_now())), 1);
    drain_free(d);
}

/* Reconfigure keeps flows, waiters and per-key balances; new per-key limits start full. */
static void test_reconfigure_keeps_flows(void **state)
{
    const struct dispatch_limit klim[] = {{1, 2}};
    struct dispatch_fair_config fair = {.key_limits = klim, .nkey_limits = 1};
    static struct dispatch_limit lim[1] = {{1000, 1000}};
    struct dispatch_config cfg = config(lim, 100, 100, 60 * NS_PER_SEC);
    struct dispatch *d = dispatch_new_fair(&cfg, &fair, fake_now());
    int order[16];

    for (int i = 0; i < 4; i++)
        submit_ok(d, i, "A");
    submit_ok(d, 4, "B");
    assert_int_equal(release_now(d, order, 16), 3); /* A0, B4, A1; A parked */
    assert_float_equal(dispatch_key_tokens(d, "A", 1, 0, fake_now()), 0, 1e-9);

    /* Invalid: nothing changes. */
    const struct dispatch_limit bad[] = {{0, 1}};
    struct dispatch_fair_config badfair = {.key_limits = bad, .nkey_limits = 1};
    assert_int_equal(dispatch_reconfigure_fair(d, &cfg, &badfair, fake_now()), -1);
    badfair = (struct dispatch_fair_config){.priority_classes = 5};
    assert_int_equal(dispatch_reconfigure_fair(d, &cfg, &badfair, fake_now()), -1);
    assert_int_equal(dispatch_nkey_limits(d), 1);

    /* Bigger burst, and a second per-key limit. */
    const struct dispatch_limit next[] = {{1, 4}, {10, 10}};
    struct dispatch_fair_config nfair = {.key_limits = next, .nkey_limits = 2};
    assert_int_equal(dispatch_reconfigure_fair(d, &cfg, &nfair, fake_now()), 0);
    assert_int_equal(dispatch_nkey_limits(d), 2);
    assert_int_equal(dispatch_nkeys(d), 2);
    assert_int_equal(dispatch_queue_len(d), 2);
    assert_float_equal(dispatch_key_tokens(d, "A", 1, 0, fake_now()), 0, 1e-9);  /* kept */
    assert_float_equal(dispatch_key_tokens(d, "A", 1, 1, fake_now()), 10, 1e-9); /* new */
    assert_float_equal(dispatch_key_tokens(d, "B", 1, 0, fake_now()), 1, 1e-9);  /* kept */
    assert_int_equal(release_now(d, order, 16), 0);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now() + NS_PER_SEC);
    /* A plain reconfigure keeps the fair config. */
    assert_int_equal(dispatch_reconfigure(d, &cfg, fake_now()), 0);
    assert_int_equal(dispatch_nkey_limits(d), 2);
    fake_advance_ms(1000);
    assert_int_equal(release_now(d, order, 16), 1);
    assert_int_equal(order[0], 2);
    drain_free(d);
}

/* The predicted wait with several flows: a newcomer of a quiet key is not refused for the
 * flood ahead of it; the flooding key is, exactly as with one flow. */
static void test_late_estimate_fair(void **state)
{
    struct dispatch *d = make(1, 1, 100, 10 * NS_PER_SEC, NULL);
    struct dispatch_admission adm;

    for (int i = 0; i < 11; i++)
        submit_ok(d, i, "A"); /* waits 0..10 s */
    assert_int_equal(submit(d, 11, "A", &adm), DISPATCH_LATE);
    assert_int_equal(adm.predicted_wait_ns, 11 * NS_PER_SEC);
    assert_int_equal(adm.retry_after_ns, NS_PER_SEC);
    /* B: 2 active flows x 1 token = 2 tokens, 1 s (the first is in the burst). */
    assert_int_equal(submit(d, 12, "B", &adm), DISPATCH_QUEUED);
    assert_int_equal(adm.predicted_wait_ns, NS_PER_SEC);
    /* B's second: 2 x 2 = 4 tokens; C's first: 3 x 1. */
    assert_int_equal(submit(d, 13, "B", &adm), DISPATCH_QUEUED);
    assert_int_equal(adm.predicted_wait_ns, 3 * NS_PER_SEC);
    assert_int_equal(submit(d, 14, "C", &adm), DISPATCH_QUEUED);
    assert_int_equal(adm.predicted_wait_ns, 2 * NS_PER_SEC);
    /* The old unkeyed path sees the same fair estimate for the default flow. */
    uint64_t retry = 0;
    assert_int_equal(dispatch_submit(d, &w[15], fake_now(), &retry), DISPATCH_QUEUED);
    drain_free(d);
}

/* Per-key buckets keep their schedule too when pulls come late (issue 9): three keys at
 * 10/s, burst 1, each always backlogged, every pull 0.3 to 0.9 of their interval after the
 * wake-up. Each key still gets 10/s, and no 1 s window holds more than 11 of a key. */
static void test_key_limits_keep_schedule_when_late(void **state)
{
    enum { KEYS = 3, PER_KEY = 32, RELEASES = 3000 };
    static uint64_t at[KEYS][RELEASES];
    size_t n[KEYS] = {0};
    const char *keys[KEYS] = {"A", "B", "C"};
    const struct dispatch_limit klim[] = {{10, 1}};
    struct dispatch_fair_config fair = {.key_limits = klim, .nkey_limits = 1};
    struct dispatch *d = make(1000, 1000, KEYS * PER_KEY, 3600 * NS_PER_SEC, &fair);
    uint64_t lcg = 12345;
    size_t total = 0;

    for (int k = 0; k < KEYS; k++) {
        for (int i = 0; i < PER_KEY; i++)
            submit_ok(d, k * PER_KEY + i, keys[k]);
    }
    while (total < KEYS * (size_t)RELEASES) {
        struct waiter *x;
        while ((x = dispatch_next(d, fake_now())) != NULL) {
            int k = idx(x) / PER_KEY;
            if (n[k] < RELEASES) {
                at[k][n[k]++] = fake_now();
                total++;
            }
            dispatch_done(d);
            submit_ok(d, idx(x), keys[k]);
        }
        uint64_t wake = dispatch_wake_ns(d, fake_now());
        assert_true(wake > fake_now());
        lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
        fake_advance_ns(wake - fake_now() + 30 * NS_PER_MS + (lcg >> 33) % (60 * NS_PER_MS));
    }
    for (int k = 0; k < KEYS; k++) {
        double rate = (double)(RELEASES - 1) * 1e9 / (double)(at[k][RELEASES - 1] - at[k][0]);
        assert_true(rate >= 10 * 0.999 && rate <= 10 * 1.001);
        for (size_t i = 0, j = 0; i < RELEASES; i++) {
            while (j < RELEASES && at[k][j] - at[k][i] <= NS_PER_SEC)
                j++;
            assert_true(j - i <= 11);
        }
    }
    drain_free(d);
}

/* ---- the upstream's pause for one key (issue 9 item 8) ---- */

/* A paused key steps aside; the others flow; nothing of it goes before the pause ends; the
 * wake-up is that end; the observers tell it, and nothing else is paused. */
static void test_key_pause_others_flow(void **state)
{
    struct dispatch *d = make(100, 100, 100, 60 * NS_PER_SEC, NULL);
    uint64_t t0 = fake_now();
    int order[16];

    for (int i = 0; i < 3; i++) {
        submit_ok(d, i, "A");
        submit_ok(d, 10 + i, "B");
    }
    dispatch_pause_key_until(d, "A", 1, t0 + 2 * NS_PER_SEC);
    assert_int_equal(dispatch_key_paused_until(d, "A", 1), t0 + 2 * NS_PER_SEC);
    assert_int_equal(dispatch_key_paused_until(d, "B", 1), 0);
    assert_int_equal(dispatch_key_paused_until(d, "Z", 1), 0); /* unknown key */
    assert_int_equal(dispatch_nkeys(d), 2);                    /* ...and no flow made */
    assert_int_equal(dispatch_paused_until(d), 0);             /* nothing upstream-wide */
    assert_int_equal(dispatch_parked_flows(d), 1);

    assert_int_equal(release_now(d, order, 16), 3); /* B's, in order */
    for (int i = 0; i < 3; i++)
        assert_int_equal(order[i], 10 + i);
    assert_int_equal(dispatch_queue_len(d), 3);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 2 * NS_PER_SEC);

    /* A newcomer of another key goes at once; one of A waits with the others. */
    submit_ok(d, 20, "C");
    submit_ok(d, 3, "A");
    assert_int_equal(release_now(d, order, 16), 1);
    assert_int_equal(order[0], 20);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 2 * NS_PER_SEC);

    fake_advance_ns(2 * NS_PER_SEC - 1);
    assert_null(dispatch_next(d, fake_now()));
    fake_advance_ns(1);
    assert_int_equal(release_now(d, order, 16), 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(order[i], i);
    assert_int_equal(dispatch_key_paused_until(d, "A", 1), 0); /* over */
    assert_int_equal(dispatch_wake_ns(d, fake_now()), DISPATCH_NEVER);
    drain_free(d);
}

/* A later pause extends, an earlier never shortens: neither the pause nor the wait for the
 * key's own tokens. */
static void test_key_pause_extends_not_shortens(void **state)
{
    const struct dispatch_limit klim[] = {{1, 1}};
    struct dispatch_fair_config fair = {.key_limits = klim, .nkey_limits = 1};
    struct dispatch *d = make(100, 100, 100, 60 * NS_PER_SEC, &fair);
    uint64_t t0 = fake_now();
    int order[8];

    submit_ok(d, 0, "A");
    submit_ok(d, 1, "A");
    assert_int_equal(release_now(d, order, 8), 1);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + NS_PER_SEC); /* A's own token */
    /* Shorter than the wait for its token: the token still decides. */
    dispatch_pause_key_until(d, "A", 1, t0 + 500 * NS_PER_MS);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + NS_PER_SEC);
    /* Longer: the pause decides. */
    dispatch_pause_key_until(d, "A", 1, t0 + 3 * NS_PER_SEC);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 3 * NS_PER_SEC);
    dispatch_pause_key_until(d, "A", 1, t0 + 2 * NS_PER_SEC); /* earlier: ignored */
    assert_int_equal(dispatch_key_paused_until(d, "A", 1), t0 + 3 * NS_PER_SEC);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 3 * NS_PER_SEC);
    dispatch_pause_key_until(d, "A", 1, t0 + 4 * NS_PER_SEC);
    assert_int_equal(dispatch_key_paused_until(d, "A", 1), t0 + 4 * NS_PER_SEC);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 4 * NS_PER_SEC);

    fake_advance_ms(3999);
    assert_int_equal(release_now(d, order, 8), 0);
    fake_advance_ms(1);
    assert_int_equal(release_now(d, order, 8), 1);
    assert_int_equal(order[0], 1);
    /* A pause set after it ended starts afresh. */
    submit_ok(d, 2, "A");
    dispatch_pause_key_until(d, "A", 1, fake_now() + 10 * NS_PER_SEC);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now() + 10 * NS_PER_SEC);
    drain_free(d);
}

/* Admission counts the key's pause: a request that could not go before max_wait is LATE at
 * once, told to come back no sooner than the pause's end; other keys are admitted; tokens
 * are counted from the pause's end; a full key's retry waits for the pause too. */
static void test_key_pause_admission(void **state)
{
    struct dispatch_fair_config fair = {.key_queue_share = 2};
    struct dispatch *d = make(10, 1, 100, 3 * NS_PER_SEC, &fair);
    uint64_t t0 = fake_now();
    struct dispatch_admission adm;

    dispatch_pause_key_until(d, "A", 1, t0 + 5 * NS_PER_SEC);
    assert_int_equal(submit(d, 0, "A", &adm), DISPATCH_LATE);
    assert_int_equal(adm.predicted_wait_ns, 5 * NS_PER_SEC);
    assert_true(adm.retry_after_ns >= 5 * NS_PER_SEC); /* not max_wait short of it: 2 s */
    assert_int_equal(w[0].queued, 0);
    assert_int_equal(submit(d, 1, "B", &adm), DISPATCH_QUEUED);
    assert_int_equal(adm.predicted_wait_ns, 0);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[1]);

    /* 1 s pause, 10/s burst 1: K's first goes at the end, its second 100 ms later (the
     * tokens are counted from the end of the pause, not from now). */
    dispatch_pause_key_until(d, "K", 1, t0 + NS_PER_SEC);
    assert_int_equal(submit(d, 2, "K", &adm), DISPATCH_QUEUED);
    assert_int_equal(adm.predicted_wait_ns, NS_PER_SEC);
    assert_int_equal(submit(d, 3, "K", &adm), DISPATCH_QUEUED);
    assert_int_equal(adm.predicted_wait_ns, 1100 * NS_PER_MS);
    /* K at its share: a place frees no sooner than the pause ends. */
    assert_int_equal(submit(d, 4, "K", &adm), DISPATCH_FULL);
    assert_int_equal(adm.key_full, 1);
    assert_true(adm.retry_after_ns >= NS_PER_SEC);

    /* Later (K's clients gone), the remaining pause is what counts. */
    dispatch_cancel(d, &w[2]);
    dispatch_cancel(d, &w[3]);
    fake_advance_ms(1500);
    assert_int_equal(submit(d, 5, "A", &adm), DISPATCH_LATE);
    assert_true(adm.retry_after_ns >= 3500 * NS_PER_MS);
    fake_advance_ms(500); /* 3 s left: within max_wait */
    assert_int_equal(submit(d, 6, "A", &adm), DISPATCH_QUEUED);
    assert_int_equal(adm.predicted_wait_ns, 3 * NS_PER_SEC);
    drain_free(d);
}

/* A requeued waiter of a paused key waits for the pause, also when its flow had expired
 * before the pause was set (the pause makes a flow for the key, and the requeue finds it);
 * other keys go meanwhile. */
static void test_key_pause_requeue(void **state)
{
    struct dispatch_fair_config fair = {.key_idle_ns = NS_PER_SEC};
    struct dispatch *d = make(1000, 1000, 100, 60 * NS_PER_SEC, &fair);
    uint64_t t0 = fake_now();
    int order[8];

    submit_ok(d, 0, "A");
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);
    /* The upstream answers 429, Retry-After: 2 s, for key A. */
    dispatch_pause_key_until(d, "A", 1, t0 + 2 * NS_PER_SEC);
    dispatch_requeue_head(d, &w[0]);
    assert_int_equal(w[0].queued, 1);
    assert_int_equal(dispatch_in_flight(d), 0);
    assert_null(dispatch_next(d, fake_now()));
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + 2 * NS_PER_SEC);
    submit_ok(d, 1, "B");
    assert_int_equal(release_now(d, order, 8), 1);
    assert_int_equal(order[0], 1);
    fake_advance_ms(2000);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[0]);

    /* Its flow expires while it is out; the pause for A comes after that. */
    fake_advance_ms(2000);
    submit_ok(d, 2, "C"); /* expires A and B (idle 2 s) */
    assert_int_equal(dispatch_key_queue_len(d, "A", 1), 0);
    assert_int_equal(dispatch_nkeys(d), 1);
    dispatch_pause_key_until(d, "A", 1, fake_now() + NS_PER_SEC);
    dispatch_requeue_head(d, &w[0]);
    assert_int_equal(dispatch_key_queue_len(d, "A", 1), 1);
    assert_int_equal(dispatch_key_queue_len(d, "~overflow", 9), 0);
    assert_int_equal(release_now(d, order, 8), 1);
    assert_int_equal(order[0], 2);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), fake_now() + NS_PER_SEC);
    fake_advance_ms(1000);
    assert_int_equal(release_now(d, order, 8), 1);
    assert_int_equal(order[0], 0);
    drain_free(d);
}

/* A paused flow is neither freed by idle expiry nor recycled at max_keys, with or without
 * waiters; once its pause is over it expires like any other. */
static void test_key_pause_not_evicted(void **state)
{
    struct dispatch_fair_config fair = {.max_keys = 1, .key_idle_ns = NS_PER_SEC};
    struct dispatch *d = make(1000, 1000, 100, 60 * NS_PER_SEC, &fair);
    uint64_t t0 = fake_now();
    int order[8];

    /* Paused with no waiter at all: the pause made the flow. */
    dispatch_pause_key_until(d, "A", 1, t0 + 10 * NS_PER_SEC);
    assert_int_equal(dispatch_nkeys(d), 1);
    fake_advance_ms(2000);
    submit_ok(d, 0, "B"); /* A idle 2 s but paused: kept; B at the cap: overflow */
    assert_int_equal(dispatch_nkeys(d), 1);
    assert_int_equal(dispatch_key_paused_until(d, "A", 1), t0 + 10 * NS_PER_SEC);
    assert_int_equal(dispatch_key_queue_len(d, "~overflow", 9), 1);
    assert_int_equal(release_now(d, order, 8), 1);

    /* A waiter of A leaves (its client did) while A is paused: the flow, idle again, stays. */
    submit_ok(d, 1, "A");
    assert_int_equal(release_now(d, order, 8), 0);
    fake_advance_ms(1000);
    dispatch_cancel(d, &w[1]);
    fake_advance_ms(3000);
    submit_ok(d, 2, "C");
    assert_int_equal(dispatch_key_paused_until(d, "A", 1), t0 + 10 * NS_PER_SEC);
    assert_int_equal(dispatch_key_queue_len(d, "~overflow", 9), 1);
    assert_int_equal(release_now(d, order, 8), 1);

    /* Pause over (t0 + 10 s) and idle: A goes, and a new key gets its own flow. */
    fake_advance_ns(t0 + 11 * NS_PER_SEC - fake_now());
    submit_ok(d, 3, "D");
    assert_int_equal(dispatch_key_queue_len(d, "D", 1), 1);
    assert_int_equal(dispatch_key_paused_until(d, "A", 1), 0);
    assert_int_equal(dispatch_nkeys(d), 1);
    drain_free(d);
}

/* A pause holds a key's waiters of every priority class, and a reload keeps it held. */
static void test_key_pause_classes_and_reconfigure(void **state)
{
    static struct dispatch_limit lim[1] = {{100, 100}};
    struct dispatch_config cfg = config(lim, 100, 100, 60 * NS_PER_SEC);
    struct dispatch_fair_config fair = {.priority_classes = 2};
    struct dispatch *d = dispatch_new_fair(&cfg, &fair, fake_now());
    uint64_t t0 = fake_now();
    int order[8];

    assert_non_null(d);
    w[0].priority = 0;
    w[1].priority = 1;
    w[2].priority = 1;
    submit_ok(d, 0, "A");
    submit_ok(d, 1, "A");
    dispatch_pause_key_until(d, "A", 1, t0 + NS_PER_SEC);
    assert_int_equal(dispatch_parked_flows(d), 2); /* one per class */
    submit_ok(d, 2, "B");
    assert_int_equal(release_now(d, order, 8), 1);
    assert_int_equal(order[0], 2);
    assert_int_equal(dispatch_reconfigure_fair(d, &cfg, &fair, fake_now()), 0);
    assert_int_equal(dispatch_parked_flows(d), 2);
    assert_int_equal(dispatch_wake_ns(d, fake_now()), t0 + NS_PER_SEC);
    assert_int_equal(release_now(d, order, 8), 0);
    fake_advance_ms(1000);
    assert_int_equal(release_now(d, order, 8), 2);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 1);
    dispatch_free(d);
}

/* ---------------------------------------------------------------- observers (issue 12) */

/* dispatch_predict_wait_ns() for w[i] (its cost) and `key` (key_len bytes) now, checked to
 * change nothing: the same answer twice, no flow made or expired, nothing moved. */
static uint64_t predict_quiet(struct dispatch *d, int i, const char *key, size_t key_len)
{
    size_t nkeys = dispatch_nkeys(d), active = dispatch_active_flows(d);
    size_t parked = dispatch_parked_flows(d), len = dispatch_queue_len(d);
    size_t klen = dispatch_key_queue_len(d, key, key_len);
    uint64_t p = dispatch_predict_wait_ns(d, key, key_len, w[i].cost, fake_now());

    assert_int_equal(dispatch_predict_wait_ns(d, key, key_len, w[i].cost, fake_now()), p);
    assert_int_equal(dispatch_nkeys(d), nkeys);
    assert_int_equal(dispatch_active_flows(d), active);
    assert_int_equal(dispatch_parked_flows(d), parked);
    assert_int_equal(dispatch_queue_len(d), len);
    assert_int_equal(dispatch_key_queue_len(d, key, key_len), klen);
    return p;
}

/* The prediction for w[i] under `key`, then its submit: admission reports the same wait.
 * Returns the verdict (never FULL here); the prediction in *predicted if non-NULL. */
static enum dispatch_admit predict_submit_len(struct dispatch *d, int i, const char *key,
                                              size_t key_len, uint64_t *predicted)
{
    struct dispatch_admission adm;
    uint64_t p = predict_quiet(d, i, key, key_len);
    enum dispatch_admit a = dispatch_submit_key(d, &w[i], key, key_len, fake_now(), &adm);

    assert_int_not_equal(a, DISPATCH_FULL);
    assert_int_equal(adm.predicted_wait_ns, p);
    if (p == DISPATCH_NEVER) {
        assert_int_equal(a, DISPATCH_LATE);
        assert_int_equal(adm.retry_after_ns, DISPATCH_NEVER);
    }
    if (a == DISPATCH_QUEUED)
        wkey[i] = key;
    if (predicted != NULL)
        *predicted = p;
    return a;
}

static enum dispatch_admit predict_submit(struct dispatch *d, int i, const char *key,
                                          uint64_t *predicted)
{
    return predict_submit_len(d, i, key, key != NULL ? strlen(key) : 0, predicted);
}

/* The same, then the waiter taken back out (a probe of the state as it is). */
static uint64_t predict_probe(struct dispatch *d, int i, const char *key)
{
    uint64_t p;

    predict_submit(d, i, key, &p);
    dispatch_cancel(d, &w[i]);
    return p;
}

/* A key never used before, each call a new one. */
static const char *fresh_key(void)
{
    static char names[64][16];
    static unsigned n;

    snprintf(names[n % 64], sizeof(names[0]), "fresh%u", n);
    return names[n++ % 64];
}

/* A prediction is what the next submit predicts, over many states with keys: empty, a
 * backlog, several keys of different costs, the default flow, a new key, per-key limits,
 * a key's pause (also set before its first request), the upstream's pause, a budget, a
 * cost above a key limit's burst or the upstream's (DISPATCH_NEVER), cost 0. */
static void test_predict_wait_keys(void **state)
{
    const struct dispatch_limit klim[] = {{2, 3}};
    struct dispatch_fair_config fair = {.key_limits = klim, .nkey_limits = 1};
    struct dispatch *d = make(10, 4, 1000, 30 * NS_PER_SEC, &fair);
    int order[16], i = 0;
    uint64_t p;

    /* Empty. */
    assert_int_equal(predict_probe(d, i++, "A"), 0);
    assert_int_equal(predict_probe(d, i++, NULL), 0);
    /* A backlog in A: its own limit (2/s burst 3) decides, (n - 3) / 2 s for the n-th. */
    for (int n = 1; n <= 10; n++) {
        assert_int_equal(predict_submit(d, i++, "A", &p), DISPATCH_QUEUED);
        assert_int_equal(p, n <= 3 ? 0 : (uint64_t)(n - 3) * NS_PER_SEC / 2);
    }
    /* Several keys, costs 2, and the default flow: the fair share. */
    for (int n = 0; n < 4; n++) {
        w[i].cost = 2;
        assert_int_equal(predict_submit(d, i++, "B", NULL), DISPATCH_QUEUED);
    }
    for (int n = 0; n < 3; n++)
        assert_int_equal(predict_submit(d, i++, NULL, NULL), DISPATCH_QUEUED);
    const char *probes[] = {"A", "B", "C", NULL, "a new key"};
    for (size_t k = 0; k < sizeof(probes) / sizeof(probes[0]); k++) {
        predict_probe(d, i++, probes[k]);
        w[i].cost = 3;
        predict_probe(d, i++, probes[k]);
    }
    predict_probe(d, i++, fresh_key());
    /* A key's pause, on a flow with waiters and on a key with no flow yet. */
    dispatch_pause_key_until(d, "B", 1, fake_now() + 5 * NS_PER_SEC);
    dispatch_pause_key_until(d, "P", 1, fake_now() + 40 * NS_PER_SEC);
    assert_true(predict_probe(d, i++, "B") >= 5 * NS_PER_SEC);
    assert_int_equal(predict_submit(d, i++, "P", &p), DISPATCH_LATE);
    assert_int_equal(p, 40 * NS_PER_SEC);
    predict_probe(d, i++, "A");
    /* Releases over time. */
    release_timed(d, order, 8);
    for (size_t k = 0; k < sizeof(probes) / sizeof(probes[0]); k++)
        predict_probe(d, i++, probes[k]);
    predict_probe(d, i++, fresh_key());
    /* The upstream's pause, then a budget that runs out (the reset counts). */
    dispatch_pause_until(d, fake_now() + 2 * NS_PER_SEC);
    for (size_t k = 0; k < sizeof(probes) / sizeof(probes[0]); k++)
        assert_true(predict_probe(d, i++, probes[k]) >= 2 * NS_PER_SEC);
    predict_probe(d, i++, fresh_key());
    fake_advance_ms(2000);
    dispatch_set_budget(d, 1, fake_now() + 8 * NS_PER_SEC);
    for (size_t k = 0; k < sizeof(probes) / sizeof(probes[0]); k++)
        predict_probe(d, i++, probes[k]);
    predict_probe(d, i++, fresh_key());
    assert_int_equal(predict_probe(d, i++, "A"), 8 * NS_PER_SEC);
    /* Costs no burst covers: the key limit's (3), the upstream's (4). */
    w[i].cost = 4;
    assert_int_equal(predict_submit(d, i++, "C", &p), DISPATCH_LATE);
    assert_int_equal(p, DISPATCH_NEVER);
    w[i].cost = 5;
    assert_int_equal(predict_submit(d, i++, NULL, &p), DISPATCH_LATE);
    assert_int_equal(p, DISPATCH_NEVER);
    assert_int_equal(dispatch_predict_wait_ns(d, "zz", 2, 4, fake_now()), DISPATCH_NEVER);
    /* Cost 0 counts as 1. */
    w[i].cost = 0;
    assert_int_equal(dispatch_predict_wait_ns(d, "A", 1, 0, fake_now()),
                     dispatch_predict_wait_ns(d, "A", 1, 1, fake_now()));
    predict_probe(d, i++, "A");
    drain_free(d);

    /* A new key's own buckets are full, whatever the default flow's (3 tokens spent: 1.5 s
     * at 2/s); the upstream's 10/s burst 4 has 1 token left, 6 needed for two flows. */
    d = make(10, 4, 1000, 30 * NS_PER_SEC, &fair);
    w[i].cost = 3;
    submit_ok(d, i, NULL);
    assert_ptr_equal(dispatch_next(d, fake_now()), &w[i++]);
    dispatch_done(d);
    w[i].cost = 3;
    assert_int_equal(predict_submit(d, i++, NULL, &p), DISPATCH_QUEUED);
    assert_int_equal(p, 1500 * NS_PER_MS);
    w[i].cost = 3;
    assert_int_equal(predict_submit(d, i++, fresh_key(), &p), DISPATCH_QUEUED);
    assert_int_equal(p, 500 * NS_PER_MS);
    drain_free(d);
}

/* A key without a flow is predicted as admission would place it: in the overflow flow when
 * at max_keys with no flow to recycle, or for a key over 256 bytes; in a flow of its own
 * when an idle flow holding no state can be recycled or expires first. The prediction
 * itself neither expires nor recycles anything, and does not move the clock. */
static void test_predict_wait_key_cap(void **state)
{
    const struct dispatch_limit klim[] = {{1, 1}};
    struct dispatch_fair_config fair = {
        .key_limits = klim, .nkey_limits = 1, .max_keys = 2, .key_idle_ns = NS_PER_SEC};
    struct dispatch *d = make(100, 10, 1000, 60 * NS_PER_SEC, &fair);
    int order[8], i = 0;
    char longkey[300];
    uint64_t p;

    submit_ok(d, i++, "A");
    submit_ok(d, i++, "A");
    submit_ok(d, i++, "B");
    /* At the cap, both keys busy: X goes to the overflow flow, then Y joins it there (1/s
     * burst 1 for the flow: its second token 1 s out, where a flow of its own says 0). */
    assert_int_equal(predict_submit(d, i++, "X", &p), DISPATCH_QUEUED);
    assert_int_equal(p, 0);
    assert_int_equal(dispatch_key_queue_len(d, "~overflow", 9), 1);
    assert_int_equal(predict_submit(d, i++, "Y", &p), DISPATCH_QUEUED);
    assert_int_equal(p, NS_PER_SEC);
    memset(longkey, 'x', sizeof(longkey));
    assert_int_equal(predict_submit_len(d, i++, longkey, sizeof(longkey), &p), DISPATCH_QUEUED);
    assert_int_equal(p, 2 * NS_PER_SEC);
    assert_int_equal(dispatch_key_queue_len(d, "~overflow", 9), 3);

    /* B's client leaves: B holds no state (never released), so a new key recycles it. */
    dispatch_cancel(d, &w[2]);
    assert_int_equal(predict_submit(d, i, "Z", &p), DISPATCH_QUEUED);
    assert_int_equal(p, 0);
    assert_int_equal(dispatch_key_queue_len(d, "Z", 1), 1);
    assert_int_equal(dispatch_key_queue_len(d, "B", 1), 0);
    i++;

    /* One release per flow (burst 1 each): Z goes idle with its bucket spent, so it
     * cannot be recycled: W goes to the overflow flow. */
    assert_int_equal(release_now(d, order, 8), 3);
    assert_int_equal(dispatch_key_queue_len(d, "Z", 1), 0);
    assert_int_equal(predict_submit(d, i++, "W", &p), DISPATCH_QUEUED);
    assert_int_equal(dispatch_key_queue_len(d, "~overflow", 9), 3);
    assert_int_equal(p, 3 * NS_PER_SEC); /* its bucket spent: 3 tokens 1 s apart from +1 s */

    /* 1.5 s on, Z has been idle long enough with a full bucket: a keyed submit expires it
     * first, so a new key gets a flow of its own; the prediction expires nothing itself. */
    fake_advance_ms(1500);
    assert_int_equal(dispatch_nkeys(d), 2);
    p = predict_quiet(d, i, "V", 1);
    assert_int_equal(dispatch_nkeys(d), 2);
    assert_int_equal(predict_submit(d, i++, "V", &p), DISPATCH_QUEUED);
    assert_int_equal(p, 0); /* not the overflow flow's 3 s */
    assert_int_equal(dispatch_key_queue_len(d, "V", 1), 1);
    /* Z again: its flow is gone, both keys busy: the overflow flow. */
    assert_int_equal(predict_submit(d, i++, "Z", &p), DISPATCH_QUEUED);
    assert_int_equal(dispatch_key_queue_len(d, "Z", 1), 0);
    assert_int_equal(dispatch_key_queue_len(d, "~overflow", 9), 4);

    /* A prediction far ahead moves no clock: the next deadline is from now. */
    (void)dispatch_predict_wait_ns(d, "A", 1, 1, fake_now() + 30 * NS_PER_SEC);
    assert_int_equal(predict_submit(d, i, "A", NULL), DISPATCH_QUEUED);
    assert_int_equal(w[i].deadline_ns, fake_now() + 60 * NS_PER_SEC);
    drain_free(d);
}

/* A small deterministic generator, so every run sees the same sequence. */
static uint64_t rnd_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rnd_state = rnd_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)((rnd_state >> 33) % n);
}

/* What dispatch_top_keys() should say, worked out from the waiters themselves. */
struct expect_key {
    const struct fairq_flow *flow;
    const char *key;
    size_t key_len;
    size_t queued;
    uint64_t cost;
};

static int expect_cmp(const void *pa, const void *pb)
{
    const struct expect_key *a = pa, *b = pb;

    if (a->queued != b->queued)
        return a->queued > b->queued ? -1 : 1;
    if (a->cost != b->cost)
        return a->cost > b->cost ? -1 : 1;
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = memcmp(a->key, b->key, n);
    if (c != 0)
        return c;
    return a->key_len < b->key_len ? -1 : a->key_len > b->key_len;
}

/* What the random walk saw of the top keys: most keys listed at once, steps with the
 * overflow flow listed, with a paused key listed. */
static size_t top_most, top_overflow, top_paused;

/* dispatch_top_keys() for several n against a brute force over every waiter (grouped by the
 * flow each is queued in, so overflow flows are counted as the dispatcher does). */
static void check_top_keys(struct dispatch *d)
{
    static struct expect_key exp[NW];
    static struct dispatch_key_info out[NW + 1];
    size_t nexp = 0, total = 0;

    for (int i = 0; i < NW; i++) {
        if (!w[i].queued)
            continue;
        total++;
        size_t len;
        const char *key = fairq_flow_key(w[i].flow, &len);
        if (len == 0)
            continue; /* the default flow */
        size_t e = 0;
        while (e < nexp && exp[e].flow != w[i].flow)
            e++;
        if (e == nexp)
            exp[nexp++] = (struct expect_key){w[i].flow, key, len, 0, 0};
        exp[e].queued++;
        exp[e].cost += w[i].cost;
    }
    assert_int_equal(total, dispatch_queue_len(d));
    qsort(exp, nexp, sizeof(exp[0]), expect_cmp);
    const size_t ns[] = {0, 1, 2, 3, 10, nexp, nexp + 1};
    for (size_t t = 0; t < sizeof(ns) / sizeof(ns[0]); t++) {
        size_t n = ns[t];
        memset(out, 0xa5, sizeof(out));
        size_t k = dispatch_top_keys(d, n, out);
        assert_int_equal(k, n < nexp ? n : nexp);
        for (size_t j = 0; j < k; j++) {
            assert_int_equal(out[j].key_len, exp[j].key_len);
            assert_memory_equal(out[j].key, exp[j].key, exp[j].key_len);
            assert_int_equal(out[j].key[out[j].key_len], '\0');
            assert_int_equal(out[j].queued, exp[j].queued);
            assert_int_equal(out[j].queued_cost, exp[j].cost);
            uint64_t until = dispatch_key_paused_until(d, out[j].key, out[j].key_len);
            assert_int_equal(out[j].paused, until != 0);
        }
        assert_int_equal(out[k].key_len, (size_t)0xa5a5a5a5a5a5a5a5ull); /* untouched */
    }
    int overflow = 0, paused = 0;
    for (size_t j = 0; j < nexp; j++) {
        overflow |= exp[j].key_len == 9 && memcmp(exp[j].key, "~overflow", 9) == 0;
        paused |= out[j].paused;
    }
    top_most = nexp > top_most ? nexp : top_most;
    top_overflow += overflow;
    top_paused += paused;
}

/* A random walk through submits (keys, the default flow, costs, classes, costs above a
 * burst), cancels, releases over time, expiries, the upstream's pauses and budgets and the
 * keys' pauses, over a key cap with its overflow flow and idle expiry. Before each submit
 * the prediction must be what admission reports; with check_top, after every step the top
 * keys must match a brute force. */
static void random_walk(unsigned steps, int check_top)
{
    static const char *keys[] = {"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "kk"};
    const struct dispatch_limit lim[] = {{50, 5}, {20, 10}};
    const struct dispatch_limit klim[] = {{5, 3}};
    struct dispatch_fair_config fair = {.key_limits = klim,
                                        .nkey_limits = 1,
                                        .max_keys = 6,
                                        .key_idle_ns = 2 * NS_PER_SEC,
                                        .key_queue_share = 25,
                                        .priority_classes = 3};
    struct dispatch_config cfg = config(lim, 4, 300, 10 * NS_PER_SEC);
    cfg.nlimits = 2;
    struct dispatch *d = dispatch_new_fair(&cfg, &fair, fake_now());
    int order[64];
    size_t submits = 0, queued = 0, never = 0, full = 0, to_overflow = 0;

    assert_non_null(d);
    for (unsigned step = 0; step < steps; step++) {
        /* Busy and quiet phases: a long backlog, then the queue draining. */
        uint32_t op = rnd(100);
        if ((step / 500) % 2 == 1 && op < 50)
            op = op < 20 ? op : 62 + rnd(20);
        if (op < 50) {
            int i = (int)rnd(NW);
            while (w[i].queued)
                i = (i + 1) % NW;
            uint32_t kc = rnd(12);
            const char *key = kc < 10 ? keys[kc] : NULL;
            w[i].cost = rnd(20) == 0 ? 6 + rnd(10) : 1 + rnd(3);
            w[i].priority = (uint8_t)rnd(4);
            struct dispatch_admission adm;
            uint64_t p = dispatch_predict_wait_ns(d, key, key != NULL ? strlen(key) : 0, w[i].cost,
                                                  fake_now());
            size_t overflow = dispatch_key_queue_len(d, "~overflow", 9);
            enum dispatch_admit a = submit(d, i, key, &adm);
            submits++;
            to_overflow += dispatch_key_queue_len(d, "~overflow", 9) > overflow;
            if (a == DISPATCH_FULL) {
                assert_int_equal(adm.predicted_wait_ns, 0);
                full++;
                continue;
            }
            assert_int_equal(adm.predicted_wait_ns, p);
            never += p == DISPATCH_NEVER;
            queued += a == DISPATCH_QUEUED;
        } else if (op < 62) {
            int i = (int)rnd(NW);
            for (int n = 0; n < NW && !w[i].queued; n++)
                i = (i + 1) % NW;
            dispatch_cancel(d, &w[i]);
        } else if (op < 82) {
            fake_advance_ms(rnd(400));
            release_now(d, order, 64);
        } else if (op < 87) {
            while (dispatch_expired(d, fake_now()) != NULL)
                ;
        } else if (op < 91) {
            dispatch_pause_until(d, fake_now() + rnd(2000) * NS_PER_MS);
        } else if (op < 96) {
            const char *key = keys[rnd(10)];
            dispatch_pause_key_until(d, key, strlen(key), fake_now() + rnd(3000) * NS_PER_MS);
        } else {
            dispatch_set_budget(d, rnd(6), fake_now() + rnd(3000) * NS_PER_MS);
        }
        if (check_top)
            check_top_keys(d);
    }
    /* The walk did reach the interesting states. */
    printf("    %zu submits: %zu queued (%zu to the overflow flow), %zu full, %zu never", submits,
           queued, to_overflow, full, never);
    if (check_top)
        printf("; up to %zu keys listed, the overflow flow in %zu steps, a paused key in %zu",
               top_most, top_overflow, top_paused);
    printf("\n");
    assert_true(queued > submits / 4 && to_overflow > 0 && to_overflow < queued / 2);
    assert_true(never > 0);
    if (check_top)
        assert_true(top_most >= 5 && top_overflow > 0 && top_paused > 0);
    drain_free(d);
}

static void test_predict_wait_random(void **state) { random_walk(6000, 0); }

/* The busiest keys: most queued first; ties by queued cost, then by key (a prefix first);
 * the default flow skipped; a flow with waiters in two classes, or parked by its pause,
 * counted once with all its waiters; idle flows not listed; n below the active flows. */
static void test_top_keys_order(void **state)
{
    struct dispatch_fair_config fair = {.priority_classes = 2};
    struct dispatch *d = make(1000, 1000, 1000, 60 * NS_PER_SEC, &fair);
    struct dispatch_key_info out[8];
    int i = 0;

    for (int n = 0; n < 5; n++) {
        w[i].priority = (uint8_t)(n % 2);
        submit_ok(d, i++, "A");
    }
    for (int n = 0; n < 3; n++) {
        w[i].cost = 2;
        submit_ok(d, i++, "C");
        submit_ok(d, i++, "Dx");
        submit_ok(d, i++, "D");
        submit_ok(d, i++, "B");
    }
    submit_ok(d, i++, "E");
    w[i].priority = 1;
    submit_ok(d, i++, "E");
    dispatch_pause_key_until(d, "E", 1, fake_now() + 5 * NS_PER_SEC);
    for (int n = 0; n < 10; n++)
        submit_ok(d, i++, NULL);
    submit_ok(d, i, "F"); /* F: a flow, idle again */
    dispatch_cancel(d, &w[i++]);
    assert_int_equal(dispatch_parked_flows(d), 2); /* E, both classes */

    static const struct {
        const char *key;
        size_t queued;
        uint64_t cost;
        int paused;
    } want[] = {{"A", 5, 5, 0}, {"C", 3, 6, 0},  {"B", 3, 3, 0},
                {"D", 3, 3, 0}, {"Dx", 3, 3, 0}, {"E", 2, 2, 1}};
    memset(out, 0, sizeof(out));
    assert_int_equal(dispatch_top_keys(d, 8, out), 6);
    size_t sum = 0;
    for (size_t j = 0; j < 6; j++) {
        assert_int_equal(out[j].key_len, strlen(want[j].key));
        assert_string_equal(out[j].key, want[j].key);
        assert_int_equal(out[j].queued, want[j].queued);
        assert_int_equal(out[j].queued_cost, want[j].cost);
        assert_int_equal(out[j].paused, want[j].paused);
        sum += out[j].queued;
    }
    assert_int_equal(dispatch_queue_len(d), sum + 10); /* and the default flow's */

    /* n smaller than the active flows: the first n of the same order. */
    for (size_t n = 1; n <= 6; n++) {
        memset(out, 0, sizeof(out));
        assert_int_equal(dispatch_top_keys(d, n, out), n);
        for (size_t j = 0; j < n; j++)
            assert_string_equal(out[j].key, want[j].key);
        assert_null(out[n].key);
    }
    assert_int_equal(dispatch_top_keys(d, 0, out), 0);
    assert_int_equal(dispatch_top_keys(d, 8, NULL), 0);
    drain_free(d);
}

/* The top keys follow cancels and releases: the overflow flow listed as "~overflow", a
 * flow whose waiters all left no longer listed, nothing once the queue is empty. */
static void test_top_keys_after_changes(void **state)
{
    struct dispatch_fair_config fair = {.max_keys = 2};
    struct dispatch *d = make(100, 3, 1000, 60 * NS_PER_SEC, &fair);
    struct dispatch_key_info out[4];
    int order[8];

    for (int i = 0; i < 4; i++)
        submit_ok(d, i, "A");
    submit_ok(d, 4, "B");
    submit_ok(d, 5, "B");
    submit_ok(d, 6, "X"); /* at the cap: the overflow flow */
    submit_ok(d, 7, "Y");
    submit_ok(d, 8, "X");
    assert_int_equal(dispatch_top_keys(d, 4, out), 3);
    assert_string_equal(out[0].key, "A");
    assert_int_equal(out[0].queued, 4);
    assert_string_equal(out[1].key, "~overflow");
    assert_int_equal(out[1].key_len, 9);
    assert_int_equal(out[1].queued, 3);
    assert_string_equal(out[2].key, "B");

    /* Two of A's clients leave: A ties with B (2 each, same cost): by key. */
    dispatch_cancel(d, &w[0]);
    dispatch_cancel(d, &w[3]);
    assert_int_equal(dispatch_top_keys(d, 4, out), 3);
    assert_string_equal(out[0].key, "~overflow");
    assert_string_equal(out[1].key, "A");
    assert_int_equal(out[1].queued, 2);
    assert_string_equal(out[2].key, "B");
    assert_int_equal(dispatch_top_keys(d, 1, out), 1);
    assert_string_equal(out[0].key, "~overflow");

    /* Three released (burst 3), one per flow in round robin. */
    assert_int_equal(release_now(d, order, 3), 3);
    assert_int_equal(dispatch_top_keys(d, 4, out), 3);
    assert_string_equal(out[0].key, "~overflow");
    assert_int_equal(out[0].queued, 2);
    assert_int_equal(out[1].queued + out[2].queued, 2);

    /* B's last one leaves: B is idle and not listed. */
    for (int i = 4; i <= 5; i++)
        dispatch_cancel(d, &w[i]);
    assert_int_equal(dispatch_top_keys(d, 4, out), 2);
    assert_string_equal(out[0].key, "~overflow");
    assert_string_equal(out[1].key, "A");
    assert_int_equal(dispatch_nkeys(d), 2);

    /* Everything expires. */
    fake_advance_ms(60000);
    while (dispatch_expired(d, fake_now()) != NULL)
        ;
    assert_int_equal(dispatch_top_keys(d, 4, out), 0);
    dispatch_free(d);
}

/* The random walk above, checking the top keys against a brute force after every step. */
static void test_top_keys_random(void **state) { random_walk(3000, 1); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_flood_does_not_delay_other_key, setup),
        cmocka_unit_test_setup(test_weighted_costs, setup),
        cmocka_unit_test_setup(test_small_quantum, setup),
        cmocka_unit_test_setup(test_key_limits, setup),
        cmocka_unit_test_setup(test_key_queue_share, setup),
        cmocka_unit_test_setup(test_priorities_guard, setup),
        cmocka_unit_test_setup(test_priority_with_keys, setup),
        cmocka_unit_test_setup(test_max_keys_overflow_idle, setup),
        cmocka_unit_test_setup(test_cap_keeps_key_state, setup),
        cmocka_unit_test_setup(test_key_copied_and_long, setup),
        cmocka_unit_test_setup(test_pause_until, setup),
        cmocka_unit_test_setup(test_budget, setup),
        cmocka_unit_test_setup(test_deadlines_with_fair_order, setup),
        cmocka_unit_test_setup(test_cancel_in_flows, setup),
        cmocka_unit_test_setup(test_requeue_head_flows, setup),
        cmocka_unit_test_setup(test_reconfigure_keeps_flows, setup),
        cmocka_unit_test_setup(test_late_estimate_fair, setup),
        cmocka_unit_test_setup(test_key_limits_keep_schedule_when_late, setup),
        cmocka_unit_test_setup(test_key_pause_others_flow, setup),
        cmocka_unit_test_setup(test_key_pause_extends_not_shortens, setup),
        cmocka_unit_test_setup(test_key_pause_admission, setup),
        cmocka_unit_test_setup(test_key_pause_requeue, setup),
        cmocka_unit_test_setup(test_key_pause_not_evicted, setup),
        cmocka_unit_test_setup(test_key_pause_classes_and_reconfigure, setup),
        cmocka_unit_test_setup(test_predict_wait_keys, setup),
        cmocka_unit_test_setup(test_predict_wait_key_cap, setup),
        cmocka_unit_test_setup(test_predict_wait_random, setup),
        cmocka_unit_test_setup(test_top_keys_order, setup),
        cmocka_unit_test_setup(test_top_keys_after_changes, setup),
        cmocka_unit_test_setup(test_top_keys_random, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
