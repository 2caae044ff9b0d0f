/*
 * limiter/dispatch: one upstream's queue, token buckets and in-flight count (see dispatch.h).
 *
 * Two structures hold every queued waiter: `queue` in arrival order (deadlines, the global
 * count and cost, shutdown) and `fq` (limiter/fairq) in release order. A waiter enters and
 * leaves both in the same call.
 *
 * Invariants
 *   - Deadlines are non-decreasing along `queue`: submit gives now + max_wait with a
 *     clock that never goes back here (last_ns), reconfigure clamps every deadline to
 *     now + new max_wait, and requeue_head clamps the returning waiter to the head's.
 *   - w->queued == 1 iff w is linked in `queue` iff w->flow != NULL (linked in `fq`).
 *   - A waiter leaves through dispatch_next() only after every local bucket granted its cost
 *     and every shared limit's lease had its cost in slots; cancel, expired and pop take
 *     nothing from any bucket or lease.
 *   - shared_mask has bits only below nlimits; leases[i] is meaningful iff bit i is set, and
 *     then buckets[i] is kept (for its rate and burst) but never taken from.
 *   - Every queued waiter has cost >= 1 (submit turns 0 into 1), so cost_sum counts the
 *     tokens the queue still needs.
 */
#include "limiter/dispatch.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "limiter/bucket.h"
#include "limiter/fairq.h"
#include "limiter/lease.h"
#include "limiter/queue.h"

_Static_assert(DISPATCH_MAX_KEY_LIMITS == FAIRQ_MAX_KEY_LIMITS, "key limits");
_Static_assert(DISPATCH_MAX_CLASSES == FAIRQ_MAX_CLASSES, "classes");
_Static_assert(sizeof(struct dispatch_limit) == sizeof(struct fairq_limit), "limit layout");

/* Refusing a full queue never says "retry in 0 s": the caller rounds up, but a zero
 * would invite an immediate retry into the same full queue. */
#define FULL_RETRY_MIN_NS 1000000ull

struct dispatch {
    struct queue queue;                         /* waiters in arrival order */
    struct fairq *fq;                           /* the same waiters in release order */
    struct bucket buckets[DISPATCH_MAX_LIMITS]; /* every one must grant a waiter's cost */
    size_t nlimits;                             /* buckets in use */
    uint32_t in_flight;                         /* handed out by next(), not done yet */
    uint32_t max_in_flight;                     /* next() hands out nothing at this count */
    uint64_t max_wait_ns;                       /* longest stay in the queue, ns */
    uint64_t last_ns;                           /* latest `now` seen, to clamp a clock going back */
    uint64_t pause_until_ns;                    /* no release before; 0: never paused */
    uint64_t budget_left;                       /* releases allowed before budget_reset_ns */
    uint64_t budget_reset_ns;                   /* budget applies while now < this; 0: none */
    uint64_t seq;                               /* arrival counter for waiter.seq */
    uint32_t shared_mask;                       /* bit i: limit i is shared (its lease governs) */
    uint64_t shared_horizon_ns;                 /* as configured (0: the lease's default) */
    uint64_t shared_grace_ns;                   /* as configured (0: the lease's default) */
    struct lease leases[DISPATCH_MAX_LIMITS];   /* leases[i] for a shared limit i */
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

static int limit_shared(const struct dispatch *d, size_t i) { return (d->shared_mask >> i) & 1; }

/* Time until every local bucket can grant `cost`: the slowest limit decides. */
static uint64_t local_wait_ns(const struct dispatch *d, uint64_t cost, uint64_t now_ns)
{
    uint64_t wait = 0;

    for (size_t i = 0; i < d->nlimits; i++) {
        if (limit_shared(d, i))
            continue;
        uint64_t w = bucket_wait_ns(&d->buckets[i], cost, now_ns);
        if (w > wait)
            wait = w;
    }
    return wait;
}

/* Whether every shared limit's lease can give `cost` slots now. */
static int leases_ready(const struct dispatch *d, uint64_t cost, uint64_t now)
{
    for (size_t i = 0; i < d->nlimits; i++) {
        if (limit_shared(d, i) && lease_wait_ns(&d->leases[i], cost, now) != 0)
            return 0;
    }
    return 1;
}

/* Predicted time for `tokens` tokens through every limit from start_ns (admission): the time
 * to earn them for a bucket, the slots held and then this instance's share for a lease. */
static uint64_t dispatch_wait_ns(const struct dispatch *d, uint64_t tokens, uint64_t start_ns)
{
    uint64_t wait = local_wait_ns(d, tokens, start_ns);

    for (size_t i = 0; i < d->nlimits; i++) {
        if (!limit_shared(d, i))
            continue;
        uint64_t w = lease_predict_ns(&d->leases[i], tokens, start_ns);
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

/* The fairq view of a dispatch_fair_config (NULL: all defaults). `limits` holds the copy. */
static void fair_to_fairq(const struct dispatch_fair_config *fair, struct fairq_limit *limits,
                          struct fairq_config *out)
{
    memset(out, 0, sizeof(*out));
    if (fair == NULL)
        return;
    size_t n = fair->nkey_limits;
    for (size_t i = 0; i < n && i < FAIRQ_MAX_KEY_LIMITS && fair->key_limits != NULL; i++) {
        limits[i].rate_per_sec = fair->key_limits[i].rate_per_sec;
        limits[i].burst_tokens = fair->key_limits[i].burst_tokens;
    }
    out->key_limits = n > 0 && fair->key_limits != NULL ? limits : NULL;
    out->nkey_limits = n; /* fairq_config_valid refuses more than it can hold */
    out->max_keys = fair->max_keys;
    out->key_queue_share = fair->key_queue_share;
    out->key_idle_ns = fair->key_idle_ns;
    out->priority_classes = fair->priority_classes;
    out->priority_guard = fair->priority_guard;
    out->quantum_tokens = fair->quantum_tokens;
    out->hash_seed[0] = fair->key_hash_seed[0];
    out->hash_seed[1] = fair->key_hash_seed[1];
}

/* Build the buckets `cfg` asks for into `out`, from the current ones in `old` (nold of them,
 * keeping their balance) or full (those beyond nold, and those with their bit in `fresh`).
 * Returns 0, or -1 with `old` untouched. */
static int dispatch_build_buckets(struct bucket *out, const struct bucket *old, size_t nold,
                                  uint32_t fresh, const struct dispatch_config *cfg,
                                  uint64_t now_ns)
{
    for (size_t i = 0; i < cfg->nlimits; i++) {
        const struct dispatch_limit *lim = &cfg->limits[i];
        if (i < nold && !((fresh >> i) & 1)) {
            out[i] = old[i];
            if (bucket_reconfigure(&out[i], lim->rate_per_sec, lim->burst_tokens, now_ns) < 0)
                return -1;
        } else if (bucket_init(&out[i], lim->rate_per_sec, lim->burst_tokens, now_ns) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Build the leases `sc` asks for into `out`: a limit shared before (its bit in old_mask, below
 * nold) keeps its lease from `old`, reconfigured; any other starts fresh. Returns 0, or -1. */
static int dispatch_build_leases(struct lease *out, const struct lease *old, size_t nold,
                                 uint32_t old_mask, const struct dispatch_config *cfg,
                                 const struct dispatch_shared_config *sc, uint64_t now_ns)
{
    for (size_t i = 0; i < cfg->nlimits; i++) {
        if (!((sc->limits >> i) & 1))
            continue;
        const struct dispatch_limit *lim = &cfg->limits[i];
        if (i < nold && ((old_mask >> i) & 1)) {
            out[i] = old[i];
            if (lease_reconfigure(&out[i], lim->rate_per_sec, lim->burst_tokens, sc->horizon_ns,
                                  sc->grace_ns, now_ns) < 0)
                return -1;
        } else if (lease_init(&out[i], lim->rate_per_sec, lim->burst_tokens, sc->horizon_ns,
                              sc->grace_ns, now_ns) < 0) {
            return -1;
        }
    }
    return 0;
}

struct dispatch *dispatch_new(const struct dispatch_config *cfg, uint64_t now_ns)
{
    return dispatch_new_shared(cfg, NULL, NULL, now_ns);
}

struct dispatch *dispatch_new_fair(const struct dispatch_config *cfg,
                                   const struct dispatch_fair_config *fair, uint64_t now_ns)
{
    return dispatch_new_shared(cfg, fair, NULL, now_ns);
}

struct dispatch *dispatch_new_shared(const struct dispatch_config *cfg,
                                     const struct dispatch_fair_config *fair,
                                     const struct dispatch_shared_config *shared, uint64_t now_ns)
{
    struct fairq_limit klimits[FAIRQ_MAX_KEY_LIMITS];
    struct fairq_config fcfg;
    const struct dispatch_shared_config none = {0};

    if (!dispatch_config_valid(cfg))
        return NULL;
    if (shared == NULL)
        shared = &none;
    if ((shared->limits >> cfg->nlimits) != 0)
        return NULL;
    fair_to_fairq(fair, klimits, &fcfg);
    if (!fairq_config_valid(&fcfg))
        return NULL;
    struct dispatch *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return NULL;
    if (dispatch_build_buckets(d->buckets, NULL, 0, 0, cfg, now_ns) < 0 ||
        dispatch_build_leases(d->leases, NULL, 0, 0, cfg, shared, now_ns) < 0) {
        free(d);
        return NULL;
    }
    d->shared_mask = shared->limits;
    d->shared_horizon_ns = shared->horizon_ns;
    d->shared_grace_ns = shared->grace_ns;
    d->fq = fairq_new(&fcfg, now_ns);
    if (d->fq == NULL) {
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
    fairq_free(d->fq); /* unlinks their flow links too */
    free(d);
}

int dispatch_reconfigure(struct dispatch *d, const struct dispatch_config *cfg, uint64_t now_ns)
{
    return dispatch_reconfigure_shared(d, cfg, NULL, NULL, now_ns);
}

int dispatch_reconfigure_fair(struct dispatch *d, const struct dispatch_config *cfg,
                              const struct dispatch_fair_config *fair, uint64_t now_ns)
{
    return dispatch_reconfigure_shared(d, cfg, fair, NULL, now_ns);
}

int dispatch_reconfigure_shared(struct dispatch *d, const struct dispatch_config *cfg,
                                const struct dispatch_fair_config *fair,
                                const struct dispatch_shared_config *shared, uint64_t now_ns)
{
    struct bucket next[DISPATCH_MAX_LIMITS];
    struct lease next_leases[DISPATCH_MAX_LIMITS];
    struct fairq_limit klimits[FAIRQ_MAX_KEY_LIMITS];
    struct fairq_config fcfg;
    struct dispatch_shared_config sc;

    if (!dispatch_config_valid(cfg))
        return -1;
    if (shared != NULL) {
        sc = *shared;
        if ((sc.limits >> cfg->nlimits) != 0)
            return -1;
    } else {
        /* Keep the current shared config, for the limits that still exist. */
        sc.limits = d->shared_mask & ((1u << cfg->nlimits) - 1);
        sc.horizon_ns = d->shared_horizon_ns;
        sc.grace_ns = d->shared_grace_ns;
    }
    if (fair != NULL) {
        fair_to_fairq(fair, klimits, &fcfg);
        if (!fairq_config_valid(&fcfg))
            return -1;
    }
    /* Built aside and copied in only when every limit is accepted: all or nothing. */
    uint64_t now = dispatch_time(d, now_ns);
    /* A limit turning from local to shared or back starts fresh; one staying keeps its state. */
    uint32_t fresh = d->shared_mask ^ sc.limits;
    if (dispatch_build_buckets(next, d->buckets, d->nlimits, fresh, cfg, now) < 0 ||
        dispatch_build_leases(next_leases, d->leases, d->nlimits, d->shared_mask, cfg, &sc, now) <
            0)
        return -1;
    /* Valid (checked above), so this cannot fail any more: nothing to undo. */
    if (fair != NULL && fairq_reconfigure(d->fq, &fcfg, now) < 0)
        return -1;

    d->last_ns = now;
    memcpy(d->buckets, next, cfg->nlimits * sizeof(next[0]));
    for (size_t i = 0; i < cfg->nlimits; i++) {
        if ((sc.limits >> i) & 1)
            d->leases[i] = next_leases[i];
    }
    d->shared_mask = sc.limits;
    d->shared_horizon_ns = sc.horizon_ns;
    d->shared_grace_ns = sc.grace_ns;
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

/* Whether a budget applies at `now`. */
static int budget_on(const struct dispatch *d, uint64_t now)
{
    return d->budget_reset_ns != 0 && now < d->budget_reset_ns;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    return a != 0 && b > UINT64_MAX / a ? UINT64_MAX : a * b;
}

/* When the waiters of flow `f` may go again as far as pauses go: the later of the
 * upstream-wide pause and f's own, or `now` when neither holds them. */
static uint64_t pause_end(const struct dispatch *d, const struct fairq_flow *f, uint64_t now)
{
    uint64_t end = now;

    if (d->pause_until_ns > end)
        end = d->pause_until_ns;
    if (fairq_flow_paused_until(f) > end)
        end = fairq_flow_paused_until(f);
    return end;
}

/* The predicted wait of a newcomer of cost `cost` in flow `f` (see dispatch_submit_key; NULL:
 * a flow not made yet, as fairq_flow_peek gives). */
static uint64_t dispatch_predict(const struct dispatch *d, const struct fairq_flow *f,
                                 uint64_t cost, uint64_t now)
{
    uint64_t own = fairq_flow_cost(f) + cost;
    uint64_t total = d->queue.cost_sum + cost;
    uint64_t active = fairq_active_flows(d->fq) + (fairq_flow_len(f) == 0 ? 1 : 0);
    uint64_t need = sat_mul(own, active);
    if (need > total)
        need = total;

    /* Nothing of f goes before its pauses end; the tokens it needs are counted from then
     * (buckets fill up to their burst meanwhile, no further). */
    uint64_t start = pause_end(d, f, now);
    uint64_t wait = dispatch_wait_ns(d, need, start);
    uint64_t key_wait = fairq_flow_wait_ns(d->fq, f, own, start);
    if (key_wait > wait)
        wait = key_wait;
    wait = sat_add(wait, start - now);
    if (budget_on(d, now)) {
        /* Requests ahead of it by the same reasoning, plus itself. */
        uint64_t ahead = sat_mul(fairq_flow_len(f) + 1, active);
        if (ahead > queue_len(&d->queue) + 1)
            ahead = queue_len(&d->queue) + 1;
        if (ahead > d->budget_left && d->budget_reset_ns - now > wait)
            wait = d->budget_reset_ns - now;
    }
    return wait;
}

/* Admission's estimate for a newcomer of `cost` (>= 1) in flow `f` (NULL: a flow not made
 * yet) at the dispatcher's time `now`: DISPATCH_NEVER when some limit's or key limit's burst
 * is below the cost (no wait would grant it), else dispatch_predict(). The one code path of
 * both dispatch_admit() and dispatch_predict_wait_ns(). A prediction that saturates at
 * DISPATCH_NEVER (centuries) reads as never too. */
static uint64_t admission_wait(const struct dispatch *d, const struct fairq_flow *f, uint64_t cost,
                               uint64_t now)
{
    if (dispatch_cost_too_big(d, cost) || fairq_cost_too_big(d->fq, cost))
        return DISPATCH_NEVER;
    return dispatch_predict(d, f, cost, now);
}

static enum dispatch_admit dispatch_admit(struct dispatch *d, struct waiter *w, const char *key,
                                          size_t key_len, uint64_t now_ns,
                                          struct dispatch_admission *out)
{
    uint64_t now = dispatch_clock(d, now_ns);
    uint64_t retry;

    out->retry_after_ns = 0;
    out->predicted_wait_ns = 0;
    out->key_full = 0;
    /* A waiter already linked somewhere is a caller bug: refuse it as full rather than
     * corrupt two queues (or this queue's cost_sum, by touching its cost). */
    if (w->queued) {
        out->retry_after_ns = FULL_RETRY_MIN_NS;
        return DISPATCH_FULL;
    }
    if (w->cost == 0)
        w->cost = 1;

    if (queue_len(&d->queue) >= d->queue.cap) {
        /* A place frees when the head leaves, released or expired, whichever comes first
         * (a cost-1 request stands in for a head when a shrunk cap left the queue empty). */
        const struct waiter *head = queue_peek(&d->queue);
        retry = dispatch_wait_ns(d, head != NULL ? head->cost : 1, now);
        /* Nobody is released before an upstream-wide pause ends. */
        if (d->pause_until_ns > now && d->pause_until_ns - now > retry)
            retry = d->pause_until_ns - now;
        if (head != NULL) {
            uint64_t to_deadline = head->deadline_ns > now ? head->deadline_ns - now : 0;
            if (to_deadline < retry)
                retry = to_deadline;
        }
        if (retry < FULL_RETRY_MIN_NS)
            retry = FULL_RETRY_MIN_NS;
        out->retry_after_ns = retry;
        return DISPATCH_FULL;
    }

    struct fairq_flow *f = fairq_flow_get(d->fq, key, key_len, now);
    if (fairq_flow_full(d->fq, f)) {
        /* A place in this flow frees when its first waiter leaves: about one round of the
         * active flows at its cost, or its deadline. */
        const struct waiter *head = fairq_flow_head(f);
        retry = FULL_RETRY_MIN_NS;
        if (head != NULL) {
            uint64_t need = sat_mul(head->cost, fairq_active_flows(d->fq));
            uint64_t own = fairq_flow_wait_ns(d->fq, f, head->cost, now);
            retry = dispatch_wait_ns(d, need, now);
            /* ...and no sooner than the flow's own buckets and its pauses let its head go. */
            if (own > retry)
                retry = own;
            if (pause_end(d, f, now) - now > retry)
                retry = pause_end(d, f, now) - now;
            uint64_t to_deadline = head->deadline_ns > now ? head->deadline_ns - now : 0;
            if (to_deadline < retry)
                retry = to_deadline;
        }
        if (retry < FULL_RETRY_MIN_NS)
            retry = FULL_RETRY_MIN_NS;
        out->retry_after_ns = retry;
        out->key_full = 1;
        return DISPATCH_FULL;
    }

    /* Every token the flows ahead need comes out of the same buckets first. */
    uint64_t predicted = admission_wait(d, f, w->cost, now);
    out->predicted_wait_ns = predicted;
    if (predicted == DISPATCH_NEVER) {
        out->retry_after_ns = DISPATCH_NEVER;
        return DISPATCH_LATE;
    }
    if (predicted > d->max_wait_ns) {
        /* While a pause holds this key, coming back before it ends would only meet the same
         * refusal (or the upstream's): never sooner than its end. */
        retry = predicted - d->max_wait_ns;
        if (pause_end(d, f, now) - now > retry)
            retry = pause_end(d, f, now) - now;
        out->retry_after_ns = retry;
        return DISPATCH_LATE;
    }

    w->enqueued_ns = now;
    w->ready_ns = now;
    w->seq = ++d->seq;
    w->requeued = 0;
    w->deadline_ns = sat_add(now, d->max_wait_ns);
    int pushed = queue_push(&d->queue, w);
    assert(pushed == 0); /* room and an unlinked waiter were checked above */
    (void)pushed;
    fairq_push(d->fq, f, w, now);
    return DISPATCH_QUEUED;
}

enum dispatch_admit dispatch_submit(struct dispatch *d, struct waiter *w, uint64_t now_ns,
                                    uint64_t *retry_after_ns)
{
    struct dispatch_admission out;
    enum dispatch_admit a = dispatch_admit(d, w, NULL, 0, now_ns, &out);

    if (a != DISPATCH_QUEUED && retry_after_ns != NULL)
        *retry_after_ns = out.retry_after_ns;
    return a;
}

enum dispatch_admit dispatch_submit_key(struct dispatch *d, struct waiter *w, const char *key,
                                        size_t key_len, uint64_t now_ns,
                                        struct dispatch_admission *out)
{
    struct dispatch_admission ignored;

    return dispatch_admit(d, w, key, key_len, now_ns, out != NULL ? out : &ignored);
}

/* Unlink a queued waiter from both structures. */
static void dispatch_unlink(struct dispatch *d, struct waiter *w, uint64_t now)
{
    queue_remove(&d->queue, w);
    fairq_remove(d->fq, w, now);
}

void dispatch_cancel(struct dispatch *d, struct waiter *w)
{
    if (!w->queued)
        return;
    dispatch_unlink(d, w, d->last_ns);
}

struct waiter *dispatch_next(struct dispatch *d, uint64_t now_ns)
{
    uint64_t now = dispatch_clock(d, now_ns);

    if (queue_len(&d->queue) == 0 || d->in_flight >= d->max_in_flight)
        return NULL;
    if (now < d->pause_until_ns)
        return NULL;
    if (d->budget_reset_ns != 0 && now >= d->budget_reset_ns)
        d->budget_reset_ns = 0; /* reset reached: the budget no longer applies */
    if (budget_on(d, now) && d->budget_left == 0)
        return NULL;

    struct waiter *w = fairq_select(d->fq, now);
    if (w == NULL)
        return NULL;
    /* Check every bucket and lease before taking from any, so a refusal takes nothing. */
    if (local_wait_ns(d, w->cost, now) != 0)
        return NULL;
    if (!leases_ready(d, w->cost, now)) {
        /* Only the leases hold it back: gather the slots open now for it, each in its window
         * (a cost above 1, or a second shared limit whose slot comes later). */
        for (size_t i = 0; i < d->nlimits; i++) {
            if (limit_shared(d, i))
                lease_claim(&d->leases[i], w->cost, now);
        }
        return NULL;
    }
    /* A release that fires late keeps the schedule: each bucket books it as of the moment
     * its tokens came due, if the waiter was waiting then and that is less than one of its
     * intervals ago (limiter/bucket.h). A pause held it back: it counts as waiting only
     * from the pause's end, so the schedule restarts there. */
    uint64_t since = w->ready_ns;
    if (d->pause_until_ns > since)
        since = d->pause_until_ns;
    if (fairq_flow_paused_until(w->flow) > since)
        since = fairq_flow_paused_until(w->flow);
    for (size_t i = 0; i < d->nlimits; i++) {
        int taken = limit_shared(d, i) ? lease_take(&d->leases[i], w->cost, now)
                                       : bucket_take_since(&d->buckets[i], w->cost, now, since);
        assert(taken == 0); /* same arithmetic as bucket_wait_ns() / lease_wait_ns() == 0 */
        (void)taken;
    }
    fairq_commit(d->fq, w, now, since);
    queue_remove(&d->queue, w);
    w->requeued = 0;
    d->in_flight++;
    if (budget_on(d, now))
        d->budget_left--;
    return w;
}

struct waiter *dispatch_expired(struct dispatch *d, uint64_t now_ns)
{
    uint64_t now = dispatch_clock(d, now_ns);
    struct waiter *w = queue_peek(&d->queue);

    /* The head has the earliest deadline (see the invariants), so nobody behind it is due. */
    if (w == NULL || w->deadline_ns > now)
        return NULL;
    dispatch_unlink(d, w, now);
    return w;
}

struct waiter *dispatch_pop(struct dispatch *d)
{
    struct waiter *w = queue_peek(&d->queue);

    if (w != NULL)
        dispatch_unlink(d, w, d->last_ns);
    return w;
}

void dispatch_requeue_head(struct dispatch *d, struct waiter *w)
{
    if (w->queued)
        return;
    /* Waiters given their turn back stay in arrival order among themselves (several
     * refused by one 429 go again in the order they came), ahead of everyone else. */
    struct waiter *pos = queue_peek(&d->queue);
    while (pos != NULL && pos->requeued && pos->seq < w->seq)
        pos = pos->next;
    /* Its old deadline may be later than the next one's if a reload shortened max_wait
     * while it was out; clamping keeps deadlines non-decreasing along the arrival list. */
    if (pos != NULL && w->deadline_ns > pos->deadline_ns)
        w->deadline_ns = pos->deadline_ns;
    if (w->cost == 0)
        w->cost = 1;
    w->requeued = 1;
    /* It was in flight, not waiting, until now (the latest clock reading seen). */
    w->ready_ns = d->last_ns;
    queue_insert_before(&d->queue, pos, w);
    fairq_push_head(d->fq, w, d->last_ns);
    if (d->in_flight > 0)
        d->in_flight--;
}

void dispatch_done(struct dispatch *d)
{
    if (d->in_flight > 0)
        d->in_flight--;
}

/* When a front waiter of `cost` can go: once every local bucket allows it, the first moment
 * every lease has its cost in hand from then on (never, while a lease then holds too few slots
 * and is not in fallback: a grant comes with a kick); or sooner, once the local buckets allow
 * it, when a lease can gather its next slot for it (lease_claim in dispatch_next), so that a
 * cost above 1, or the slot of one of several shared limits, is collected in its window. */
static uint64_t front_due_ns(const struct dispatch *d, uint64_t cost, uint64_t now)
{
    uint64_t local = sat_add(now, local_wait_ns(d, cost, now));
    uint64_t due = local, gather = DISPATCH_NEVER;

    for (size_t i = 0; i < d->nlimits; i++) {
        if (!limit_shared(d, i))
            continue;
        const struct lease *l = &d->leases[i];
        uint64_t w = due == DISPATCH_NEVER ? 0 : lease_wait_ns(l, cost, due);
        if (w == LEASE_NEVER)
            due = DISPATCH_NEVER;
        else
            due = sat_add(due, w);
        uint64_t claim = lease_claim_at_ns(l, cost, local);
        if (claim < gather)
            gather = claim;
    }
    return gather < due ? gather : due;
}

uint64_t dispatch_wake_ns(const struct dispatch *d, uint64_t now_ns)
{
    const struct waiter *head = queue_peek(&d->queue);
    uint64_t now = dispatch_time(d, now_ns);

    if (head == NULL)
        return DISPATCH_NEVER;
    uint64_t wake = head->deadline_ns;
    /* At max_in_flight only dispatch_done(), a cancel or the deadline can change anything. */
    if (d->in_flight >= d->max_in_flight)
        return wake;

    uint64_t release = fairq_parked_wake_ns(d->fq);
    const struct waiter *front = fairq_front(d->fq);
    /* A front no bucket could ever grant can only expire. */
    if (front != NULL && !dispatch_cost_too_big(d, front->cost)) {
        uint64_t due = front_due_ns(d, front->cost, now);
        if (due < release)
            release = due;
    }
    if (release != DISPATCH_NEVER) {
        if (release < d->pause_until_ns)
            release = d->pause_until_ns;
        if (budget_on(d, now) && d->budget_left == 0 && release < d->budget_reset_ns)
            release = d->budget_reset_ns;
    }
    return release < wake ? release : wake;
}

void dispatch_pause_until(struct dispatch *d, uint64_t until_ns)
{
    if (until_ns > d->pause_until_ns)
        d->pause_until_ns = until_ns;
}

void dispatch_pause_key_until(struct dispatch *d, const char *key, size_t key_len,
                              uint64_t until_ns)
{
    struct fairq_flow *f = fairq_flow_get(d->fq, key, key_len, d->last_ns);

    fairq_flow_pause_until(d->fq, f, until_ns, d->last_ns);
}

void dispatch_set_budget(struct dispatch *d, uint64_t remaining, uint64_t reset_ns)
{
    if (reset_ns <= d->last_ns) {
        d->budget_reset_ns = 0;
        return;
    }
    d->budget_left = remaining;
    d->budget_reset_ns = reset_ns;
}

size_t dispatch_queue_len(const struct dispatch *d) { return queue_len(&d->queue); }

size_t dispatch_queue_cap(const struct dispatch *d) { return d->queue.cap; }

uint32_t dispatch_in_flight(const struct dispatch *d) { return d->in_flight; }

size_t dispatch_nlimits(const struct dispatch *d) { return d->nlimits; }

double dispatch_tokens(const struct dispatch *d, size_t limit_index, uint64_t now_ns)
{
    if (limit_index >= d->nlimits)
        return 0.0;
    if (limit_shared(d, limit_index)) {
        const struct lease *l = &d->leases[limit_index];
        return (double)(lease_held(l, now_ns) + lease_gathered(l));
    }
    return bucket_tokens(&d->buckets[limit_index], now_ns);
}

size_t dispatch_nkeys(const struct dispatch *d) { return fairq_nkeys(d->fq); }

size_t dispatch_active_flows(const struct dispatch *d) { return fairq_active_flows(d->fq); }

size_t dispatch_parked_flows(const struct dispatch *d) { return fairq_parked_flows(d->fq); }

size_t dispatch_nkey_limits(const struct dispatch *d) { return fairq_nkey_limits(d->fq); }

size_t dispatch_key_queue_len(const struct dispatch *d, const char *key, size_t key_len)
{
    const struct fairq_flow *f = fairq_flow_find(d->fq, key, key_len);

    return f != NULL ? fairq_flow_len(f) : 0;
}

double dispatch_key_tokens(const struct dispatch *d, const char *key, size_t key_len,
                           size_t limit_index, uint64_t now_ns)
{
    const struct fairq_flow *f = fairq_flow_find(d->fq, key, key_len);

    /* An unknown key would start with a full bucket: the default flow's parameters, full. */
    if (f == NULL)
        return fairq_limit_burst(d->fq, limit_index);
    return fairq_flow_tokens(d->fq, f, limit_index, now_ns);
}

uint64_t dispatch_paused_until(const struct dispatch *d)
{
    return d->pause_until_ns > d->last_ns ? d->pause_until_ns : 0;
}

uint64_t dispatch_key_paused_until(const struct dispatch *d, const char *key, size_t key_len)
{
    uint64_t until = fairq_flow_paused_until(fairq_flow_find(d->fq, key, key_len));

    return until > d->last_ns ? until : 0;
}

int dispatch_budget(const struct dispatch *d, uint64_t now_ns, uint64_t *remaining,
                    uint64_t *reset_ns)
{
    uint64_t now = dispatch_time(d, now_ns);

    if (!budget_on(d, now))
        return 0;
    if (remaining != NULL)
        *remaining = d->budget_left;
    if (reset_ns != NULL)
        *reset_ns = d->budget_reset_ns;
    return 1;
}

uint64_t dispatch_predict_wait_ns(const struct dispatch *d, const char *key, size_t key_len,
                                  uint32_t cost, uint64_t now_ns)
{
    uint64_t now = dispatch_time(d, now_ns);
    const struct fairq_flow *f = fairq_flow_peek(d->fq, key, key_len, now);

    return admission_wait(d, f, cost != 0 ? cost : 1, now);
}

/* Whether `a` ranks before `b` in dispatch_top_keys(): more queued, then more cost, then the
 * key bytewise (a prefix first). */
static int key_info_before(const struct dispatch_key_info *a, const struct dispatch_key_info *b)
{
    if (a->queued != b->queued)
        return a->queued > b->queued;
    if (a->queued_cost != b->queued_cost)
        return a->queued_cost > b->queued_cost;
    int c = memcmp(a->key, b->key, a->key_len < b->key_len ? a->key_len : b->key_len);
    if (c != 0)
        return c < 0;
    return a->key_len < b->key_len;
}

static void key_info_swap(struct dispatch_key_info *a, struct dispatch_key_info *b)
{
    struct dispatch_key_info t = *a;

    *a = *b;
    *b = t;
}

/* h[0..k) is a heap whose root ranks last (the first to drop out): restore it from i down. */
static void top_sift_down(struct dispatch_key_info *h, size_t k, size_t i)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= k)
            break;
        if (c + 1 < k && key_info_before(&h[c], &h[c + 1]))
            c++; /* the child that ranks later */
        if (!key_info_before(&h[i], &h[c]))
            break;
        key_info_swap(&h[i], &h[c]);
        i = c;
    }
}

static void top_sift_up(struct dispatch_key_info *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!key_info_before(&h[p], &h[i]))
            break;
        key_info_swap(&h[p], &h[i]);
        i = p;
    }
}

size_t dispatch_top_keys(const struct dispatch *d, size_t n, struct dispatch_key_info *out)
{
    struct fairq_iter it;
    const struct fairq_flow *f;
    size_t k = 0;

    if (n == 0 || out == NULL)
        return 0;
    /* A bounded selection in out[]: a heap of the n best so far, the weakest at its root. */
    fairq_iter_init(&it);
    while ((f = fairq_iter_next(d->fq, &it)) != NULL) {
        struct dispatch_key_info info;
        info.key = fairq_flow_key(f, &info.key_len);
        if (info.key_len == 0)
            continue; /* the default flow: no key (every keyed flow has one byte at least) */
        info.queued = fairq_flow_len(f);
        info.queued_cost = fairq_flow_cost(f);
        info.paused = fairq_flow_paused_until(f) > d->last_ns;
        if (k < n) {
            out[k] = info;
            top_sift_up(out, k++);
        } else if (key_info_before(&info, &out[0])) {
            out[0] = info;
            top_sift_down(out, k, 0);
        }
    }
    /* Heap sort: the weakest goes to the end each time, so out[] ends most first. */
    for (size_t end = k; end > 1; end--) {
        key_info_swap(&out[0], &out[end - 1]);
        top_sift_down(out, end - 1, 0);
    }
    return k;
}

/* The lease of limit idx if it is shared, else NULL. */
static struct lease *shared_lease(struct dispatch *d, size_t idx)
{
    return idx < d->nlimits && limit_shared(d, idx) ? &d->leases[idx] : NULL;
}

size_t dispatch_shared_count(const struct dispatch *d)
{
    return (size_t)__builtin_popcount(d->shared_mask);
}

const struct lease *dispatch_lease(const struct dispatch *d, size_t idx)
{
    return idx < d->nlimits && limit_shared(d, idx) ? &d->leases[idx] : NULL;
}

uint32_t dispatch_lease_want(const struct dispatch *d, size_t idx, uint64_t now_ns)
{
    const struct lease *l = dispatch_lease(d, idx);

    return l != NULL ? lease_want(l, d->queue.cost_sum, dispatch_time(d, now_ns)) : 0;
}

uint64_t dispatch_lease_want_at_ns(const struct dispatch *d, size_t idx, uint64_t now_ns)
{
    const struct lease *l = dispatch_lease(d, idx);

    if (l == NULL)
        return DISPATCH_NEVER;
    return lease_want_at_ns(l, d->queue.cost_sum, dispatch_time(d, now_ns));
}

void dispatch_lease_grant(struct dispatch *d, size_t idx, uint64_t t_send_ns, uint64_t t_recv_ns,
                          const struct lease_reply *r)
{
    struct lease *l = shared_lease(d, idx);

    if (l != NULL)
        lease_grant(l, t_send_ns, t_recv_ns, r);
}

void dispatch_lease_fallback(struct dispatch *d, size_t idx, uint64_t now_ns)
{
    struct lease *l = shared_lease(d, idx);

    if (l != NULL)
        lease_fallback(l, dispatch_clock(d, now_ns));
}

uint64_t dispatch_lease_recover(struct dispatch *d, size_t idx)
{
    struct lease *l = shared_lease(d, idx);

    return l != NULL ? lease_recover(l) : 0;
}

void dispatch_lease_drop_until(struct dispatch *d, size_t idx, uint64_t until_ns)
{
    struct lease *l = shared_lease(d, idx);

    if (l != NULL)
        lease_drop_until(l, until_ns);
}
