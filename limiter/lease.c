/*
 * limiter/lease: the slots one instance holds on a shared schedule (see lease.h).
 *
 * Invariants
 *   - runs[] is a ring of nruns runs from run_head, in schedule order; no run is empty
 *     (count >= 1) after any mutating call returns; held is the sum of their counts.
 *   - Within a run, slot j has the window [nb + j*step, dl + j*step], nb <= dl. Across runs
 *     not_before is not necessarily increasing (two replies can see different round trips),
 *     so slots are always used front first: a slot is used only when every slot before it
 *     is used too (or dropped).
 *   - A slot is used (taken or claimed) only while now lies in its window; it is dropped, never
 *     used, once its deadline is before now. Gathered slots were all used in their windows.
 *   - granted = (released - released_in_fallback) + dropped + held + gathered.
 *   - last_ns never decreases; every function reads time as max(now_ns, last_ns).
 */
#include "limiter/lease.h"

#include <stddef.h>

#include "limiter/bucket.h"

/* Longest span added to a clock reading; larger products saturate (as limiter/bucket). */
#define SPAN_MAX_NS (UINT64_MAX / 4)

static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    return a != 0 && b > UINT64_MAX / a ? UINT64_MAX : a * b;
}

static uint64_t lease_time(const struct lease *l, uint64_t now_ns)
{
    return max_u64(now_ns, l->last_ns);
}

static uint64_t lease_clock(struct lease *l, uint64_t now_ns)
{
    l->last_ns = lease_time(l, now_ns);
    return l->last_ns;
}

/* ---------------------------------------------------------------- runs */

static struct lease_run *run_at(struct lease *l, uint32_t i)
{
    return &l->runs[(l->run_head + i) % LEASE_MAX_RUNS];
}

static const struct lease_run *run_at_c(const struct lease *l, uint32_t i)
{
    return &l->runs[(l->run_head + i) % LEASE_MAX_RUNS];
}

/* Slots of `r`, from its first, whose deadline is before t. */
static uint64_t run_expired(const struct lease_run *r, uint64_t t)
{
    if (r->dl_ns >= t)
        return 0;
    if (r->step_ns == 0)
        return r->count;
    return min_u64(r->count, (t - r->dl_ns - 1) / r->step_ns + 1);
}

/* Slots of `r`, from its first, whose not_before is at or before t. */
static uint64_t run_open(const struct lease_run *r, uint64_t t)
{
    if (r->nb_ns > t)
        return 0;
    if (r->step_ns == 0)
        return r->count;
    return min_u64(r->count, (t - r->nb_ns) / r->step_ns + 1);
}

/* Slots of `r`, from its first, whose not_before is before t. */
static uint64_t run_before(const struct lease_run *r, uint64_t t)
{
    if (r->nb_ns >= t)
        return 0;
    if (r->step_ns == 0)
        return r->count;
    return min_u64(r->count, (t - r->nb_ns - 1) / r->step_ns + 1);
}

static void run_advance(struct lease_run *r, uint64_t m)
{
    uint64_t by = sat_mul(m, r->step_ns);

    r->nb_ns = sat_add(r->nb_ns, by);
    r->dl_ns = sat_add(r->dl_ns, by);
    r->count -= (uint32_t)m;
}

/* not_before and deadline of the run's slot j (j < count). */
static uint64_t run_nb(const struct lease_run *r, uint64_t j)
{
    return sat_add(r->nb_ns, sat_mul(j, r->step_ns));
}

static uint64_t run_dl(const struct lease_run *r, uint64_t j)
{
    return sat_add(r->dl_ns, sat_mul(j, r->step_ns));
}

/* Run i as it stands at t: without its slots whose deadline passed. */
static struct lease_run run_view(const struct lease *l, uint32_t i, uint64_t t)
{
    struct lease_run v = *run_at_c(l, i);

    run_advance(&v, run_expired(&v, t));
    return v;
}

/* Remove empty runs, keeping the order. */
static void runs_compact(struct lease *l)
{
    uint32_t kept = 0;

    for (uint32_t i = 0; i < l->nruns; i++) {
        struct lease_run r = *run_at(l, i);
        if (r.count > 0)
            *run_at(l, kept++) = r;
    }
    l->nruns = kept;
    if (kept == 0)
        l->run_head = 0;
}

/* Drop, from the front of every run, the slots `front(run, t)` counts (counted as
 * dropped): run_expired (deadline passed) or run_before (window opens before t). */
static void drop_front(struct lease *l, uint64_t (*front)(const struct lease_run *, uint64_t),
                       uint64_t t)
{
    int emptied = 0;

    for (uint32_t i = 0; i < l->nruns; i++) {
        struct lease_run *r = run_at(l, i);
        uint64_t m = front(r, t);
        if (m == 0)
            continue;
        run_advance(r, m);
        l->held -= m;
        l->stats.dropped += m;
        emptied |= r->count == 0;
    }
    if (emptied)
        runs_compact(l);
}

/* Drop every held slot whose deadline is before t (counted). */
static void drop_expired(struct lease *l, uint64_t t) { drop_front(l, run_expired, t); }

/* ---------------------------------------------------------------- views at t (const) */

/* Slots held at t (expired ones not counted), and runs that still hold one. */
static uint64_t held_at(const struct lease *l, uint64_t t, uint32_t *nonempty)
{
    uint64_t held = 0;
    uint32_t runs = 0;

    for (uint32_t i = 0; i < l->nruns; i++) {
        struct lease_run v = run_view(l, i, t);
        held += v.count;
        runs += v.count > 0;
    }
    if (nonempty != NULL)
        *nonempty = runs;
    return held;
}

/* Front slots at t (expired ones skipped) whose window is open at t, in order, stopping at the
 * first one not open yet; at most `limit`. */
static uint64_t open_at(const struct lease *l, uint64_t t, uint64_t limit)
{
    uint64_t open = 0;

    for (uint32_t i = 0; i < l->nruns && open < limit; i++) {
        struct lease_run v = run_view(l, i, t);
        if (v.count == 0)
            continue;
        uint64_t o = run_open(&v, t);
        open += o;
        if (o < v.count)
            break;
    }
    return min_u64(open, limit);
}

/* When the first `need` slots held at t (need >= 1) are all open: the latest of their
 * not_befores; LEASE_NEVER if fewer are held. */
static uint64_t ready_at(const struct lease *l, uint64_t t, uint64_t need)
{
    uint64_t at = 0;

    for (uint32_t i = 0; i < l->nruns && need > 0; i++) {
        struct lease_run v = run_view(l, i, t);
        if (v.count == 0)
            continue;
        uint64_t use = min_u64(need, v.count);
        at = max_u64(at, run_nb(&v, use - 1));
        need -= use;
    }
    return need > 0 ? LEASE_NEVER : at;
}

/* The deadline of slot `idx` (from the front, 0-based) among those held at t; LEASE_NEVER if
 * fewer are held. */
static uint64_t nth_dl(const struct lease *l, uint64_t t, uint64_t idx)
{
    for (uint32_t i = 0; i < l->nruns; i++) {
        struct lease_run v = run_view(l, i, t);
        if (idx < v.count)
            return run_dl(&v, idx);
        idx -= v.count;
    }
    return LEASE_NEVER;
}

/* The latest not_before and deadline among the slots held at t (0 when none). */
static void last_slot(const struct lease *l, uint64_t t, uint64_t *nb, uint64_t *dl)
{
    *nb = 0;
    *dl = 0;
    for (uint32_t i = 0; i < l->nruns; i++) {
        struct lease_run v = run_view(l, i, t);
        if (v.count == 0)
            continue;
        *nb = max_u64(*nb, run_nb(&v, v.count - 1));
        *dl = max_u64(*dl, run_dl(&v, v.count - 1));
    }
}

/* ---------------------------------------------------------------- parameters */

static uint64_t default_grace(uint64_t interval_ns)
{
    uint64_t g = interval_ns / 2;

    if (g < LEASE_GRACE_MIN_NS)
        g = LEASE_GRACE_MIN_NS;
    if (g > LEASE_GRACE_MAX_NS)
        g = LEASE_GRACE_MAX_NS;
    return g;
}

/* Validate and translate; -1 if anything is out of range. */
static int lease_params(double rate_per_sec, double burst_tokens, uint64_t horizon_ns,
                        uint64_t grace_ns, uint64_t now_ns, uint64_t *interval, uint64_t *horizon,
                        uint64_t *grace)
{
    struct bucket b;

    /* The interval a local bucket of this rate would use, with the same checks. */
    if (bucket_init(&b, rate_per_sec, burst_tokens, now_ns) < 0)
        return -1;
    if (horizon_ns > LEASE_MAX_HORIZON_NS || grace_ns > LEASE_MAX_GRACE_NS)
        return -1;
    *interval = b.interval_ns;
    *horizon = horizon_ns != 0 ? horizon_ns : LEASE_DEFAULT_HORIZON_NS;
    *grace = grace_ns != 0 ? grace_ns : default_grace(b.interval_ns);
    return 0;
}

int lease_init(struct lease *l, double rate_per_sec, double burst_tokens, uint64_t horizon_ns,
               uint64_t grace_ns, uint64_t now_ns)
{
    uint64_t interval, horizon, grace;

    if (lease_params(rate_per_sec, burst_tokens, horizon_ns, grace_ns, now_ns, &interval, &horizon,
                     &grace) < 0)
        return -1;
    *l = (struct lease){
        .interval_ns = interval,
        .burst_tokens = burst_tokens,
        .horizon_ns = horizon,
        .grace_ns = grace,
        .instances = 1,
        .mode = LEASE_REDIS,
        .epoch_ns = now_ns,
        .last_ns = now_ns,
    };
    return 0;
}

int lease_reconfigure(struct lease *l, double rate_per_sec, double burst_tokens,
                      uint64_t horizon_ns, uint64_t grace_ns, uint64_t now_ns)
{
    uint64_t interval, horizon, grace;

    if (lease_params(rate_per_sec, burst_tokens, horizon_ns, grace_ns, now_ns, &interval, &horizon,
                     &grace) < 0)
        return -1;
    lease_clock(l, now_ns);
    l->interval_ns = interval;
    l->burst_tokens = burst_tokens;
    l->horizon_ns = horizon;
    l->grace_ns = grace;
    return 0;
}

/* Local pacing in fallback: one token every T * n. */
static uint64_t fallback_interval(const struct lease *l)
{
    return sat_mul(l->interval_ns, l->instances);
}

/* This instance's share of the horizon: H / T / n slots, at least 1. It never holds more, so
 * backlogged instances split the schedule evenly: without this cap, whoever happens to ask
 * just after the horizon's edge moved takes the room, and a phase that favours one instance
 * keeps favouring it (seen: one of three instances at 4 % of the releases). */
static uint64_t share_slots(const struct lease *l)
{
    uint64_t share = l->horizon_ns / l->interval_ns / l->instances;
    return share > 0 ? share : 1;
}

/* Tokens released over about the last horizon: what the instance expects to need next. */
static uint64_t recent_demand(const struct lease *l, uint64_t t)
{
    uint64_t el = t - min_u64(t, l->epoch_ns);

    if (el < l->horizon_ns)
        return max_u64(l->demand_prev, l->demand_cur);
    if (el < sat_mul(2, l->horizon_ns))
        return l->demand_cur;
    return 0;
}

/* ---------------------------------------------------------------- grants */

/* Append a run after those held; 0, or -1 when no room is left. A run that continues the last
 * one exactly (same spacing, next window) extends it. */
static int runs_push(struct lease *l, const struct lease_run *r)
{
    if (l->nruns > 0) {
        struct lease_run *tail = run_at(l, l->nruns - 1);
        if (tail->step_ns == r->step_ns && r->step_ns != 0 &&
            (uint64_t)tail->count + r->count <= UINT32_MAX &&
            run_nb(tail, tail->count) == r->nb_ns && run_dl(tail, tail->count) == r->dl_ns) {
            tail->count += r->count;
            l->held += r->count;
            return 0;
        }
    }
    if (l->nruns >= LEASE_MAX_RUNS)
        return -1;
    *run_at(l, l->nruns++) = *r;
    l->held += r->count;
    return 0;
}

void lease_grant(struct lease *l, uint64_t t_send_ns, uint64_t t_recv_ns,
                 const struct lease_reply *r)
{
    uint64_t t_send = min_u64(t_send_ns, t_recv_ns);
    uint64_t t_recv = t_recv_ns;

    lease_clock(l, t_recv);
    l->instances = r->instances != 0 ? r->instances : 1;
    drop_expired(l, l->last_ns);
    if (r->slots == 0) {
        l->ask_after_ns = sat_add(t_recv, r->retry_in_ns);
        return;
    }
    l->ask_after_ns = 0;

    uint64_t k = r->slots;
    uint64_t step = r->interval_ns != 0 ? r->interval_ns : l->interval_ns;
    if (step > SPAN_MAX_NS)
        step = SPAN_MAX_NS;
    l->stats.granted += k;
    /* The script's now lies in [t_send, t_recv]: a window exists only if the round trip is
     * within G. Otherwise no release could be proved within G of its slot. */
    if (t_recv - t_send > l->grace_ns) {
        l->stats.dropped += k;
        return;
    }

    /* Slots at or before the script's now (a negative offset: the schedule had room) are all
     * due at that now; m of them. The first later one is at p1 > 0. */
    uint64_t m = 0, p1;
    if (r->first_offset_ns > 0) {
        p1 = (uint64_t)r->first_offset_ns;
    } else {
        uint64_t back = r->first_offset_ns == 0 ? 0 : (uint64_t)(-(r->first_offset_ns + 1)) + 1;
        m = min_u64(k, back / step + 1);
        p1 = m * step - back; /* m * step <= back + step, no wrap; > 0 by the choice of m */
    }
    if (p1 > SPAN_MAX_NS)
        p1 = SPAN_MAX_NS;

    uint64_t dropped = 0;
    if (m > 0) {
        struct lease_run due = {
            .nb_ns = t_recv,
            .dl_ns = t_send + l->grace_ns,
            .step_ns = 0,
            .count = (uint32_t)m,
        };
        if (runs_push(l, &due) < 0)
            dropped += m;
    }
    if (k > m) {
        struct lease_run later = {
            .nb_ns = sat_add(t_recv, p1),
            .dl_ns = sat_add(sat_add(t_send, p1), l->grace_ns),
            .step_ns = step,
            .count = (uint32_t)(k - m),
        };
        if (runs_push(l, &later) < 0)
            dropped += k - m;
    }
    l->stats.dropped += dropped;
}

/* ---------------------------------------------------------------- taking */

/* Use the first m held slots (all open at now): consumed from the front. Records the lateness
 * of the first one. */
static void consume(struct lease *l, uint64_t m, uint64_t now)
{
    if (m == 0)
        return;
    uint64_t late = now - min_u64(now, run_at(l, 0)->nb_ns);
    l->stats.late_sum_ns = sat_add(l->stats.late_sum_ns, late);
    l->stats.late_count++;
    l->stats.late_max_ns = max_u64(l->stats.late_max_ns, late);
    while (m > 0) {
        struct lease_run *r = run_at(l, 0);
        uint64_t use = min_u64(m, r->count);
        run_advance(r, use);
        l->held -= use;
        m -= use;
        if (r->count == 0) {
            l->run_head = (l->run_head + 1) % LEASE_MAX_RUNS;
            l->nruns--;
        }
    }
    if (l->nruns == 0)
        l->run_head = 0;
}

/* Book a release of `cost` tokens at now (demand estimate, counters). */
static void released(struct lease *l, uint64_t cost, uint64_t now)
{
    if (now - min_u64(now, l->epoch_ns) >= l->horizon_ns) {
        l->demand_prev = now - l->epoch_ns < sat_mul(2, l->horizon_ns) ? l->demand_cur : 0;
        l->demand_cur = 0;
        l->epoch_ns = now;
    }
    l->demand_cur = sat_add(l->demand_cur, cost);
    l->stats.released += cost;
    l->last_take_ns = now;
}

int lease_take(struct lease *l, uint64_t cost, uint64_t now_ns)
{
    uint64_t now = lease_clock(l, now_ns);

    if (cost == 0)
        cost = 1;
    drop_expired(l, now);
    if (now < l->pause_until_ns)
        return -1;
    uint64_t from_gathered = min_u64(l->gathered, cost);
    uint64_t need = cost - from_gathered;
    uint64_t open = open_at(l, now, need);

    if (open >= need) {
        consume(l, need, now);
        l->gathered -= from_gathered;
        released(l, cost, now);
        if (l->mode == LEASE_FALLBACK) /* local pacing resumes one interval after it */
            l->fb_tat_ns = max_u64(l->fb_tat_ns, sat_add(now, fallback_interval(l)));
        return 0;
    }
    if (l->mode == LEASE_FALLBACK && open == l->held && now >= l->fb_tat_ns) {
        /* Nothing held beyond what is open now: the rest comes from the local pace (burst 1),
         * which keeps its schedule when less than one of its intervals late. */
        uint64_t rest = need - open;
        uint64_t fi = fallback_interval(l);
        uint64_t base = now - l->fb_tat_ns < fi ? l->fb_tat_ns : now;
        consume(l, open, now);
        l->gathered -= from_gathered;
        l->fb_tat_ns = sat_add(base, sat_mul(rest, fi));
        l->debit = sat_add(l->debit, rest);
        l->stats.released_in_fallback += rest;
        released(l, cost, now);
        return 0;
    }
    return -1;
}

void lease_claim(struct lease *l, uint64_t cost, uint64_t now_ns)
{
    uint64_t now = lease_clock(l, now_ns);

    if (cost == 0)
        cost = 1;
    drop_expired(l, now);
    if (now < l->pause_until_ns || l->gathered >= cost)
        return;
    uint64_t open = open_at(l, now, cost - l->gathered);
    consume(l, open, now);
    l->gathered += open;
}

uint64_t lease_wait_ns(const struct lease *l, uint64_t cost, uint64_t now_ns)
{
    uint64_t now = lease_time(l, now_ns);
    uint64_t t = max_u64(now, l->pause_until_ns);

    if (cost == 0)
        cost = 1;
    uint64_t need = cost - min_u64(l->gathered, cost);
    if (need == 0)
        return t - now;
    uint64_t at = ready_at(l, t, need);
    if (at != LEASE_NEVER)
        return max_u64(at, t) - now;
    if (l->mode != LEASE_FALLBACK)
        return LEASE_NEVER;
    /* Fallback: every slot held must be open (used first), then the local pace. */
    uint64_t held = held_at(l, t, NULL);
    at = max_u64(t, l->fb_tat_ns);
    if (held > 0)
        at = max_u64(at, ready_at(l, t, held));
    return at - now;
}

uint64_t lease_claim_at_ns(const struct lease *l, uint64_t cost, uint64_t now_ns)
{
    uint64_t t = max_u64(lease_time(l, now_ns), l->pause_until_ns);

    if (cost == 0)
        cost = 1;
    if (l->gathered >= cost)
        return LEASE_NEVER;
    uint64_t at = ready_at(l, t, 1);
    return at == LEASE_NEVER ? LEASE_NEVER : max_u64(at, t);
}

uint64_t lease_predict_ns(const struct lease *l, uint64_t tokens, uint64_t start_ns)
{
    uint64_t t = max_u64(max_u64(start_ns, l->last_ns), l->pause_until_ns);
    uint64_t need = tokens - min_u64(l->gathered, tokens);

    if (need == 0)
        return t - start_ns;
    uint64_t held = held_at(l, t, NULL);
    if (need <= held)
        return max_u64(ready_at(l, t, need), t) - start_ns;
    uint64_t per = fallback_interval(l); /* this instance's share: one token every T * n */
    uint64_t rest = need - held;
    uint64_t base = held > 0 ? max_u64(ready_at(l, t, held), t) : t;
    uint64_t at;
    if (l->mode == LEASE_FALLBACK && held == 0)
        at = sat_add(max_u64(base, l->fb_tat_ns), sat_mul(rest - 1, per));
    else
        at = sat_add(base, sat_mul(rest, per));
    return at - start_ns;
}

/* ---------------------------------------------------------------- asking */

uint32_t lease_want(const struct lease *l, uint64_t backlog, uint64_t now_ns)
{
    uint64_t t = lease_time(l, now_ns);
    uint32_t runs;

    if (backlog == 0 || t < l->ask_after_ns || t < l->pause_until_ns)
        return 0;
    uint64_t held = held_at(l, t, &runs);
    if (LEASE_MAX_RUNS - runs < 2) /* a grant may need two runs */
        return 0;
    if (held > 0) {
        uint64_t nb, dl;
        last_slot(l, t, &nb, &dl);
        if (nb > t && nb - t >= l->horizon_ns / 2)
            return 0;
    }
    /* Up to the share, asked for once half of it is used: a call per half share, never one
     * per release. Gathered slots are used ones (waiting for the rest of a cost), not held. */
    uint64_t share = share_slots(l);
    if (held > share / 2)
        return 0;
    uint64_t demand = sat_add(backlog, recent_demand(l, t));
    uint64_t have = held + l->gathered;
    if (demand <= have)
        return 0;
    return (uint32_t)min_u64(min_u64(demand - have, share - held), UINT32_MAX);
}

uint64_t lease_want_at_ns(const struct lease *l, uint64_t backlog, uint64_t now_ns)
{
    uint64_t t = lease_time(l, now_ns);

    if (backlog == 0)
        return LEASE_NEVER;
    if (lease_want(l, backlog, t) > 0)
        return t;
    /* All must hold: less than H/2 covered, at most half the share held, and fewer slots in
     * hand than the demand. Held slots pass by their deadlines at the latest. */
    uint64_t c = max_u64(t, max_u64(l->ask_after_ns, l->pause_until_ns));
    uint64_t nb, dl;
    last_slot(l, c, &nb, &dl);
    uint64_t at = c;
    if (nb > c && nb - c >= l->horizon_ns / 2)
        at = nb - l->horizon_ns / 2 + 1;
    uint64_t held = held_at(l, c, NULL);
    uint64_t half = share_slots(l) / 2;
    if (held > half)
        at = max_u64(at, sat_add(nth_dl(l, c, held - half - 1), 1));
    uint64_t demand = sat_add(backlog, recent_demand(l, c));
    if (demand <= sat_add(held, l->gathered) && demand > l->gathered) {
        /* Held slots cover it: once all but demand - gathered - 1 of them have passed. */
        uint64_t pass = held - (demand - l->gathered - 1);
        at = max_u64(at, sat_add(nth_dl(l, c, pass - 1), 1));
    }
    if (at > t && lease_want(l, backlog, at) > 0)
        return at;
    /* Recent demand fading meanwhile, or no room for a run: once no slot is held. */
    if (dl != 0) {
        at = max_u64(c, sat_add(dl, 1));
        if (at > t && lease_want(l, backlog, at) > 0)
            return at;
    }
    return LEASE_NEVER;
}

/* ---------------------------------------------------------------- the ladder */

void lease_fallback(struct lease *l, uint64_t now_ns)
{
    uint64_t now = lease_clock(l, now_ns);

    if (l->mode == LEASE_FALLBACK)
        return;
    l->mode = LEASE_FALLBACK;
    /* The local pace starts one of its intervals after the last release. */
    l->fb_tat_ns = l->last_take_ns != 0 ? sat_add(l->last_take_ns, fallback_interval(l)) : now;
}

uint64_t lease_recover(struct lease *l)
{
    uint64_t debit = l->debit;

    l->mode = LEASE_REDIS;
    l->debit = 0;
    return debit;
}

int lease_mode(const struct lease *l) { return l->mode; }

void lease_drop_until(struct lease *l, uint64_t until_ns)
{
    if (until_ns > l->pause_until_ns)
        l->pause_until_ns = until_ns;
    drop_front(l, run_before, until_ns);
    l->stats.dropped += l->gathered;
    l->gathered = 0;
}

/* ---------------------------------------------------------------- observers */

uint64_t lease_held(const struct lease *l, uint64_t now_ns)
{
    return held_at(l, lease_time(l, now_ns), NULL);
}

uint64_t lease_gathered(const struct lease *l) { return l->gathered; }

uint32_t lease_instances(const struct lease *l) { return l->instances; }

uint64_t lease_paused_until(const struct lease *l)
{
    return l->pause_until_ns > l->last_ns ? l->pause_until_ns : 0;
}

uint64_t lease_interval_ns(const struct lease *l) { return l->interval_ns; }

uint64_t lease_grace_ns(const struct lease *l) { return l->grace_ns; }

uint64_t lease_horizon_ns(const struct lease *l) { return l->horizon_ns; }

const struct lease_counters *lease_counters(const struct lease *l) { return &l->stats; }
