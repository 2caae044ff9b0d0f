/*
 * limiter/dispatch: one upstream's queue, token buckets and in-flight count (see dispatch.h).
 *
 * Invariants
 *   - Deadlines are non-decreasing from head to tail: submit gives now + max_wait with a
 *     clock that never goes back here (last_ns), reconfigure clamps every deadline to
 *     now + new max_wait, and requeue_head clamps the returning waiter to the head's.
 *   - A waiter leaves through dispatch_next() only after every bucket granted its cost;
 *     cancel, expired and pop take nothing from any bucket.
 *   - Every queued waiter has cost >= 1 (submit turns 0 into 1), so cost_sum counts the
 *     tokens the queue still needs.
 */
#include "limiter/dispatch.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "limiter/bucket.h"
#include "limiter/queue.h"

/* Refusing a full queue never says "retry in 0 s": the caller rounds up, but a zero
 * would invite an immediate retry into the same full queue. */
#define FULL_RETRY_MIN_NS 1000000ull

struct dispatch {
    struct queue queue;                         /* waiters in arrival order */
    struct bucket buckets[DISPATCH_MAX_LIMITS]; /* every one must grant a waiter's cost */
    size_t nlimits;                             /* buckets in use */
    uint32_t in_flight;                         /* handed out by next(), not done yet */
    uint32_t max_in_flight;                     /* next() hands out nothing at this count */
    uint64_t max_wait_ns;                       /* longest stay in the queue, ns */
    uint64_t last_ns;                           /* latest `now` seen, to clamp a clock going back */
};

static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

/* The dispatcher's notion of now: a clock that went back reads as the latest value seen,
 * so a newcomer's deadline is never earlier than those queued before it. */
static uint64_t dispatch_time(const struct dispatch *d, uint64_t now_ns)
{
    return now_ns > d->last_ns ? now_ns : d->last_ns;
}

static uint64_t dispatch_clock(struct dispatch *d, uint64_t now_ns)
{
    d->last_ns = dispatch_time(d, now_ns);
    return d->last_ns;
}

static int dispatch_config_valid(const struct dispatch_config *cfg)
{
    if (cfg == NULL || cfg->limits == NULL)
        return 0;
    if (cfg->nlimits < 1 || cfg->nlimits > DISPATCH_MAX_LIMITS)
        return 0;
    if (cfg->max_in_flight < 1 || cfg->queue_size < 1 || cfg->max_wait_ns == 0)
        return 0;
    /* The rates and bursts are checked by bucket_init/bucket_reconfigure, which also know
     * which slow rate and large burst together no longer fit in the representation. */
    return 1;
}

/* Time until every bucket can grant `cost`: the slowest limit decides. */
static uint64_t dispatch_wait_ns(const struct dispatch *d, uint64_t cost, uint64_t now_ns)
{
    uint64_t wait = 0;

    for (size_t i = 0; i < d->nlimits; i++) {
        uint64_t w = bucket_wait_ns(&d->buckets[i], cost, now_ns);
        if (w > wait)
            wait = w;
    }
    return wait;
}

/* Whether some bucket's whole burst is smaller than `cost`: no wait would ever grant it. */
static int dispatch_cost_too_big(const struct dispatch *d, uint64_t cost)
{
    for (size_t i = 0; i < d->nlimits; i++) {
        const struct bucket *b = &d->buckets[i];
        if (cost > b->burst_ns / b->interval_ns)
            return 1;
    }
    return 0;
}

/* Build the buckets `cfg` asks for into `out`, from the current ones in `old` (nold of them,
 * keeping their balance) or full. Returns 0, or -1 with `old` untouched. */
static int dispatch_build_buckets(struct bucket *out, const struct bucket *old, size_t nold,
                                  const struct dispatch_config *cfg, uint64_t now_ns)
{
    for (size_t i = 0; i < cfg->nlimits; i++) {
        const struct dispatch_limit *lim = &cfg->limits[i];
        if (i < nold) {
            out[i] = old[i];
            if (bucket_reconfigure(&out[i], lim->rate_per_sec, lim->burst_tokens, now_ns) < 0)
                return -1;
        } else if (bucket_init(&out[i], lim->rate_per_sec, lim->burst_tokens, now_ns) < 0) {
            return -1;
        }
    }
    return 0;
}

struct dispatch *dispatch_new(const struct dispatch_config *cfg, uint64_t now_ns)
{
    if (!dispatch_config_valid(cfg))
        return NULL;
    struct dispatch *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    if (dispatch_build_buckets(d->buckets, NULL, 0, cfg, now_ns) < 0) {
        free(d);
        return NULL;
    }
    d->nlimits = cfg->nlimits;
    queue_init(&d->queue, cfg->queue_size);
    d->max_in_flight = cfg->max_in_flight;
    d->max_wait_ns = cfg->max_wait_ns;
    d->last_ns = now_ns;
    return d;
}

void dispatch_free(struct dispatch *d)
{
    if (d == NULL)
        return;
    /* The queue should be empty; if not, unlink what is left so no waiter keeps pointers
     * into freed memory and reads as queued. */
    while (queue_pop(&d->queue) != NULL)
        ;
    free(d);
}

int dispatch_reconfigure(struct dispatch *d, const struct dispatch_config *cfg, uint64_t now_ns)
{
    struct bucket next[DISPATCH_MAX_LIMITS];

    if (!dispatch_config_valid(cfg))
        return -1;
    /* Built aside and copied in only when every limit is accepted: all or nothing. */
    uint64_t now = dispatch_time(d, now_ns);
    if (dispatch_build_buckets(next, d->buckets, d->nlimits, cfg, now) < 0)
        return -1;

    d->last_ns = now;
    memcpy(d->buckets, next, cfg->nlimits * sizeof(next[0]));
    d->nlimits = cfg->nlimits;
    d->queue.cap = cfg->queue_size;
    d->max_in_flight = cfg->max_in_flight;
    d->max_wait_ns = cfg->max_wait_ns;

    /* Min with one value keeps the deadlines non-decreasing along the queue. */
    uint64_t latest = sat_add(now, cfg->max_wait_ns);
    for (struct waiter *w = d->queue.head; w != NULL; w = w->next) {
        if (w->deadline_ns > latest)
            w->deadline_ns = latest;
    }
    return 0;
}

enum dispatch_admit dispatch_submit(struct dispatch *d, struct waiter *w, uint64_t now_ns,
                                    uint64_t *retry_after_ns)
{
    uint64_t now = dispatch_clock(d, now_ns);
    uint64_t retry;

    /* A waiter already linked somewhere is a caller bug: refuse it as full rather than
     * corrupt two queues (or this queue's cost_sum, by touching its cost). */
    if (w->queued) {
        if (retry_after_ns != NULL)
            *retry_after_ns = FULL_RETRY_MIN_NS;
        return DISPATCH_FULL;
    }
    if (w->cost == 0)
        w->cost = 1;

    if (queue_len(&d->queue) >= d->queue.cap) {
        /* A place frees when the head leaves, released or expired, whichever comes first
         * (a cost-1 request stands in for a head when a shrunk cap left the queue empty). */
        const struct waiter *head = queue_peek(&d->queue);
        retry = dispatch_wait_ns(d, head != NULL ? head->cost : 1, now);
        if (head != NULL) {
            uint64_t to_deadline = head->deadline_ns > now ? head->deadline_ns - now : 0;
            if (to_deadline < retry)
                retry = to_deadline;
        }
        if (retry < FULL_RETRY_MIN_NS)
            retry = FULL_RETRY_MIN_NS;
        if (retry_after_ns != NULL)
            *retry_after_ns = retry;
        return DISPATCH_FULL;
    }

    if (dispatch_cost_too_big(d, w->cost)) {
        if (retry_after_ns != NULL)
            *retry_after_ns = DISPATCH_NEVER;
        return DISPATCH_LATE;
    }

    /* Every token the queue ahead needs comes out of the same buckets first. */
    uint64_t predicted = dispatch_wait_ns(d, d->queue.cost_sum + w->cost, now);
    if (predicted > d->max_wait_ns) {
        if (retry_after_ns != NULL)
            *retry_after_ns = predicted - d->max_wait_ns;
        return DISPATCH_LATE;
    }

    w->enqueued_ns = now;
    w->deadline_ns = sat_add(now, d->max_wait_ns);
    int pushed = queue_push(&d->queue, w);
    assert(pushed == 0); /* room and an unlinked waiter were checked above */
    (void)pushed;
    return DISPATCH_QUEUED;
}

void dispatch_cancel(struct dispatch *d, struct waiter *w) { queue_remove(&d->queue, w); }

struct waiter *dispatch_next(struct dispatch *d, uint64_t now_ns)
{
    uint64_t now = dispatch_clock(d, now_ns);
    struct waiter *w = queue_peek(&d->queue);

    if (w == NULL || d->in_flight >= d->max_in_flight)
        return NULL;
    /* Check every bucket before taking from any, so a refusal takes nothing. */
    if (dispatch_wait_ns(d, w->cost, now) != 0)
        return NULL;
    for (size_t i = 0; i < d->nlimits; i++) {
        int taken = bucket_take(&d->buckets[i], w->cost, now);
        assert(taken == 0); /* same arithmetic as bucket_wait_ns() == 0 */
        (void)taken;
    }
    queue_remove(&d->queue, w);
    d->in_flight++;
    return w;
}

struct waiter *dispatch_expired(struct dispatch *d, uint64_t now_ns)
{
    uint64_t now = dispatch_clock(d, now_ns);
    struct waiter *w = queue_peek(&d->queue);

    /* The head has the earliest deadline (see the invariants), so nobody behind it is due. */
    if (w == NULL || w->deadline_ns > now)
        return NULL;
    queue_remove(&d->queue, w);
    return w;
}

struct waiter *dispatch_pop(struct dispatch *d) { return queue_pop(&d->queue); }

void dispatch_requeue_head(struct dispatch *d, struct waiter *w)
{
    if (w->queued)
        return;
    /* Its old deadline may be later than the head's if a reload shortened max_wait while
     * it was out; clamping keeps the head's deadline the earliest. */
    const struct waiter *head = queue_peek(&d->queue);
    if (head != NULL && w->deadline_ns > head->deadline_ns)
        w->deadline_ns = head->deadline_ns;
    if (w->cost == 0)
        w->cost = 1;
    queue_push_head(&d->queue, w);
    if (d->in_flight > 0)
        d->in_flight--;
}

void dispatch_done(struct dispatch *d)
{
    if (d->in_flight > 0)
        d->in_flight--;
}

uint64_t dispatch_wake_ns(const struct dispatch *d, uint64_t now_ns)
{
    const struct waiter *head = queue_peek(&d->queue);
    uint64_t now = dispatch_time(d, now_ns);

    if (head == NULL)
        return DISPATCH_NEVER;
    uint64_t wake = head->deadline_ns;
    /* At max_in_flight, or with a head no bucket could ever grant, only dispatch_done(),
     * a cancel or the deadline can change anything. */
    if (d->in_flight < d->max_in_flight && !dispatch_cost_too_big(d, head->cost)) {
        uint64_t due = sat_add(now, dispatch_wait_ns(d, head->cost, now));
        if (due < wake)
            wake = due;
    }
    return wake;
}

size_t dispatch_queue_len(const struct dispatch *d) { return queue_len(&d->queue); }

size_t dispatch_queue_cap(const struct dispatch *d) { return d->queue.cap; }

uint32_t dispatch_in_flight(const struct dispatch *d) { return d->in_flight; }

size_t dispatch_nlimits(const struct dispatch *d) { return d->nlimits; }

double dispatch_tokens(const struct dispatch *d, size_t limit_index, uint64_t now_ns)
{
    if (limit_index >= d->nlimits)
        return 0.0;
    return bucket_tokens(&d->buckets[limit_index], now_ns);
}
