/*
 * limiter/dispatch: decides when each waiting request of one upstream may go.
 *
 * One dispatcher per upstream. It owns the upstream's queue and its token buckets
 * (every configured limit must grant a token: 10/s AND 5000/h), and counts the
 * requests in flight against max_in_flight. It also owns a fair queue (limiter/fairq)
 * that decides the release order across keys ("flows") and priority classes, and it obeys
 * the upstream's own answers: a pause (Retry-After), upstream-wide or for one key, and a
 * request budget (RateLimit).
 *
 * Release order
 *   - Within one dispatcher: strict priority classes (0 first, with a starvation guard),
 *     and within a class deficit round robin across flows weighted by cost, FIFO within a
 *     flow (see limiter/fairq.h for the exact policies). With no key and priority 0 on every
 *     waiter (the zeroed default) there is one flow and the order is plain FIFO, as before.
 *   - Every release still needs every upstream-wide limit to grant its cost; a flow with
 *     per-key limits must also get its cost from its own buckets, and a flow short of them
 *     steps aside (it never blocks the others).
 *   - Nothing is released before a pause ends, nor beyond the upstream's budget before its
 *     reset. A key's own pause holds only that key's flow, which steps aside like a flow
 *     short of its own tokens (the others go on).
 *
 * Rate bound
 *   The caller's timer fires a little late under load. So that this costs no capacity, a
 *   release is booked in each bucket (upstream-wide and per key) as of the moment that
 *   bucket's tokens came due, when the waiter was already waiting then (queued or back from
 *   dispatch_requeue_head, and past the end of any pause that held it) and that moment is
 *   less than one interval of that limit ago; otherwise as of now (limiter/bucket.h,
 *   bucket_take_since). A bucket nobody waited on gains no credit, and a release one
 *   interval late or more has lost its slot (no catch-up burst). For every limit, any
 *   window of length t (both ends included) holds at most ceil(t / interval) + burst of its
 *   tokens (ceil((t + burst * interval) / interval) with a fractional burst), which is at most
 *   ceil(rate * t) + burst: exactly rate * t + burst when rate * t is a whole number (1 s at
 *   100/s: 101; any multiple of the interval), and for other windows at most one token more
 *   than floor(rate * t) + burst, the bound of plain GCRA. max_in_flight only lowers these.
 *
 * Shared limits (issue 10)
 *   A limit may be shared by several instances (struct dispatch_shared_config): it is then
 *   governed by its lease (limiter/lease.h), the slots this instance holds on the fleet's
 *   schedule, instead of its bucket. A waiter goes only when every local bucket grants its cost
 *   AND every shared limit's lease has `cost` slots in hand now (lease_take); the fair queue
 *   and the priorities still decide which waiter, the lease decides when. A lease holding no
 *   slot (and not in fallback) arms no timer: the caller kicks when a grant arrives. When the
 *   local buckets would let the front waiter go but a lease does not have its whole cost yet,
 *   the slots open now are gathered for it (lease_claim), so a cost above 1 is collected slot
 *   by slot, each in its window, and dispatch_wake_ns() includes the next slot to gather. The
 *   lease's bound (lease.h) replaces the one above for a shared limit. Per-key limits are
 *   always local. Everything stays O(1) per request (a lease holds at most LEASE_MAX_RUNS
 *   runs of slots).
 *
 * Contract
 *   - No HTTP, no libevent, no clock: every call takes `now_ns` from the caller's
 *     monotonic clock. The caller (proxy/upstream) arms ONE timer per dispatcher for
 *     the time dispatch_wake_ns() returns, and calls the pull functions when it fires
 *     and whenever something changes (a submit, a request done). Nothing here polls.
 *   - Pull, not push: the dispatcher never calls back. dispatch_next() hands out one
 *     waiter at a time, so the caller may do anything (even submit or cancel) between
 *     two calls without re-entering the dispatcher.
 *   - Waiters are embedded in the caller's objects (see limiter/queue.h); the
 *     dispatcher links them but never frees them.
 *
 * Invariants
 *   - Besides its place in its flow, every queued waiter is linked in one arrival-ordered
 *     list (limiter/queue, prev/next). Deadlines are non-decreasing along it (every waiter
 *     gets now + max_wait, and a reload that shortens max_wait clamps older deadlines), so
 *     the earliest deadline is always its head's: expiry is O(1) with no per-request timer,
 *     whatever the release order.
 *   - A waiter handed out by dispatch_next() has taken `cost` tokens from every local bucket
 *     and `cost` slots from every shared limit's lease, and counts in flight until
 *     dispatch_done(); a cancelled or expired one took nothing (slots a lease gathered for it
 *     stay gathered, for the waiter that comes next).
 */
#ifndef SLUICE_LIMITER_DISPATCH_H
#define SLUICE_LIMITER_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

struct waiter;
struct dispatch;
struct lease;
struct lease_reply;

#define DISPATCH_MAX_LIMITS     8
#define DISPATCH_MAX_KEY_LIMITS 4          /* per-key limits (= FAIRQ_MAX_KEY_LIMITS) */
#define DISPATCH_MAX_CLASSES    4          /* priority classes (= FAIRQ_MAX_CLASSES) */
#define DISPATCH_NEVER          UINT64_MAX /* "no event to wait for" from dispatch_wake_ns */

struct dispatch_limit {
    double rate_per_sec; /* > 0, fractions allowed */
    double burst_tokens; /* >= 1 */
};

struct dispatch_config {
    const struct dispatch_limit *limits; /* copied; 1..DISPATCH_MAX_LIMITS entries */
    size_t nlimits;
    uint32_t max_in_flight; /* >= 1 */
    uint32_t queue_size;    /* >= 1 */
    uint64_t max_wait_ns;   /* > 0 */
};

/* Fair queuing and priorities. Zero in any field means "off" or its default, so a zeroed
 * struct (or NULL where one is taken) gives one flow and one class: the plain FIFO. This is a
 * separate struct so that callers that fill a struct dispatch_config field by field never
 * leave new fields uninitialised. */
struct dispatch_fair_config {
    const struct dispatch_limit *key_limits; /* copied; each flow gets its own buckets */
    size_t nkey_limits;                      /* 0..DISPATCH_MAX_KEY_LIMITS; 0: none */
    uint32_t max_keys;         /* keyed flows at most; 0: 10000. Beyond: see dispatch_submit_key */
    uint32_t key_queue_share;  /* waiters one flow may hold; 0: no per-key cap */
    uint64_t key_idle_ns;      /* a flow with no waiter and full buckets is freed after this
                                  long; 0: 60 s */
    uint32_t priority_classes; /* 0 or 1: one class; up to DISPATCH_MAX_CLASSES */
    uint32_t priority_guard;   /* after this many releases in a row from a class while a
                                  lower class waits, one from the lower classes; 0: 10 */
    uint32_t quantum_tokens;   /* DRR quantum; 0: the largest cost seen (equal token shares) */
    uint64_t key_hash_seed[2]; /* random bytes (getrandom) so clients cannot choose colliding
                                  keys; read at dispatch_new_fair only; 0: a weak built-in seed */
};

/* Shared limits. A separate struct for the reason given above dispatch_fair_config: callers
 * fill struct dispatch_limit field by field, so a new field there would be left uninitialised.
 * A zeroed struct (or NULL where one is taken) keeps every limit local. */
struct dispatch_shared_config {
    uint32_t limits;     /* bit i set: limits[i] is shared, governed by a lease; bits at or
                            above nlimits are invalid */
    uint64_t horizon_ns; /* lease horizon H; 0: LEASE_DEFAULT_HORIZON_NS (500 ms) */
    uint64_t grace_ns;   /* release grace G; 0: clamp(interval / 2, 1 ms, 20 ms) per limit */
};

enum dispatch_admit {
    DISPATCH_QUEUED, /* linked at the tail; will come out of next() or expired() */
    DISPATCH_FULL,   /* queue at queue_size: refuse (503 queue_full) */
    DISPATCH_LATE,   /* predicted wait exceeds max_wait: refuse now (503 deadline) */
};

/* Returns NULL on an invalid config or out of memory. Buckets start full. One flow, one
 * priority class (dispatch_new_fair with fair == NULL). */
struct dispatch *dispatch_new(const struct dispatch_config *cfg, uint64_t now_ns)
    __attribute__((warn_unused_result));

/* The same with fair queuing configured (fair may be NULL: all defaults). */
struct dispatch *dispatch_new_fair(const struct dispatch_config *cfg,
                                   const struct dispatch_fair_config *fair, uint64_t now_ns)
    __attribute__((warn_unused_result));

/* The same with shared limits (shared may be NULL: all local). A shared limit's lease starts
 * holding no slot, so nothing goes through it before its first grant (or fallback). */
struct dispatch *dispatch_new_shared(const struct dispatch_config *cfg,
                                     const struct dispatch_fair_config *fair,
                                     const struct dispatch_shared_config *shared, uint64_t now_ns)
    __attribute__((warn_unused_result));

/* Frees the dispatcher. Its queue must be empty (drain it with dispatch_pop first). NULL ok. */
void dispatch_free(struct dispatch *d);

/* Apply a new config, keeping the queue and each bucket's token balance (bucket i keeps
 * its balance when limit i still exists; a new limit starts full). Deadlines of queued
 * waiters are clamped to now + new max_wait. A smaller queue_size refuses new waiters
 * until the queue shrinks; nobody already queued is dropped (a queued waiter whose cost
 * now exceeds a burst can only expire). Returns 0, or -1 (nothing changed). */
int dispatch_reconfigure(struct dispatch *d, const struct dispatch_config *cfg, uint64_t now_ns)
    __attribute__((warn_unused_result));

/* dispatch_reconfigure() plus the fair-queuing config (fair == NULL: keep the current one),
 * all or nothing. Flows, their waiters and DRR deficits are kept; per-key bucket i of every
 * flow keeps its balance when key limit i still exists (a new one starts full). A lower
 * max_keys or key_queue_share drops nobody: it only refuses or redirects newcomers.
 * O(flows): a reload is rare. key_hash_seed is not changed. Returns 0 or -1. */
int dispatch_reconfigure_fair(struct dispatch *d, const struct dispatch_config *cfg,
                              const struct dispatch_fair_config *fair, uint64_t now_ns)
    __attribute__((warn_unused_result));

/* dispatch_reconfigure_fair() plus the shared limits, all or nothing (shared == NULL: keep the
 * current shared config, without the bits of limits that no longer exist). A limit that stays
 * shared keeps its lease (slots held stay valid; the new rate, horizon and grace apply to what
 * follows) and its bucket; one that turns from local to shared or back starts fresh (a lease
 * holding nothing, a full bucket). Returns 0 or -1. */
int dispatch_reconfigure_shared(struct dispatch *d, const struct dispatch_config *cfg,
                                const struct dispatch_fair_config *fair,
                                const struct dispatch_shared_config *shared, uint64_t now_ns)
    __attribute__((warn_unused_result));

/* Offer a waiter (its `cost` set by the caller, >= 1; 0 is stored as 1). On
 * DISPATCH_QUEUED its enqueued_ns and deadline_ns are set. The predicted wait is the time
 * for every limit to grant the tokens of the whole queue plus this one; max_in_flight is
 * not part of it; for a shared limit it counts the slots its lease holds, then this
 * instance's expected share of the rest, rate / n (n: instances in the lease's last reply, 1
 * before any), after them (lease_predict_ns). On FULL or LATE it is not linked and
 * *retry_after_ns (if non-NULL) gets
 * an honest estimate of when the same request would be admitted: for FULL, when the head
 * will leave (its tokens come due, or an upstream-wide pause ends, or its deadline,
 * whichever is first; at least 1 ms); for LATE, how much sooner the predicted wait would
 * need to be, but never less than what remains of a pause holding this request (the
 * upstream-wide one, or its key's: see dispatch_submit_key). A cost above some
 * limit's burst can never be granted: LATE with *retry_after_ns = DISPATCH_NEVER (send no
 * Retry-After). A waiter already linked is refused as FULL.
 * This is dispatch_submit_key() for the default flow (no key); when keyed flows are queued
 * too, the predicted wait is the fair one described there. */
enum dispatch_admit dispatch_submit(struct dispatch *d, struct waiter *w, uint64_t now_ns,
                                    uint64_t *retry_after_ns);

/* What dispatch_submit_key() tells besides its verdict. */
struct dispatch_admission {
    uint64_t retry_after_ns;    /* on FULL and LATE, as dispatch_submit's *retry_after_ns;
                                   for a full key: when that key's first waiter should leave */
    uint64_t predicted_wait_ns; /* the wait estimate used for admission (all verdicts but a
                                   full queue or key, where it is 0; DISPATCH_NEVER for a
                                   cost above a burst): dispatch_predict_wait_ns() */
    int key_full;               /* on FULL: 1 if the waiter's flow holds key_queue_share
                                   waiters (other keys still get in), 0 if the queue is full */
};

/* dispatch_submit() for a waiter of flow `key` (key_len bytes, not necessarily
 * NUL-terminated, copied into the flow when the key is new, never kept by reference; NULL
 * or 0: the default flow, without hashing). w->priority picks the class (values at or above
 * priority_classes count as the lowest class). `out` may be NULL.
 *
 * Keys: a flow is created on first sight. At max_keys, a new key recycles the least
 * recently idle flow if it holds no state (no waiter, full per-key buckets, no pause), else
 * it shares
 * the overflow flow "~overflow" (one flow for fairness, per-key limits and share); so does a
 * key longer than 256 bytes. An active flow is never evicted. Idle flows are freed a few at
 * a time by later submits (amortised O(1)).
 *
 * Refusals, in order: queue full (FULL, key_full 0); flow at key_queue_share (FULL,
 * key_full 1); a cost above some limit's or key limit's burst (LATE, DISPATCH_NEVER);
 * predicted wait over max_wait (LATE).
 *
 * Predicted wait: under round robin a newcomer of flow f waits for the tokens of about
 * A x (f's queued cost + its own cost) across all flows, A = flows with waiters counting f,
 * but never more than the whole queue's cost plus its own; so the upstream-wide wait is that
 * many tokens' time. It is then raised to the time f's own buckets need for f's queued cost
 * plus its own and, when the budget will run out before it, to the budget's reset. Under a
 * pause (upstream-wide or f's own, whichever ends later) both token times are counted from
 * the pause's end (the buckets fill up to their burst meanwhile), so the wait is that end
 * plus what the tokens still need then. With one flow this is exactly the whole-queue
 * estimate of dispatch_submit(). Higher priority classes arriving later are not foreseen.
 * On LATE, retry_after_ns is at least what remains of that pause: a client told to come
 * back sooner would meet the same refusal. For a full key (FULL, key_full 1) the retry
 * also waits for the key's pauses. O(1) amortised (one hash look-up). */
enum dispatch_admit dispatch_submit_key(struct dispatch *d, struct waiter *w, const char *key,
                                        size_t key_len, uint64_t now_ns,
                                        struct dispatch_admission *out);

/* Remove a queued waiter (its client left). It consumes no token (slots gathered for it stay
 * for the next waiter). No-op if not queued. */
void dispatch_cancel(struct dispatch *d, struct waiter *w);

/* The next waiter allowed to go now (the fair order: see the top of this file), unlinked,
 * with its tokens taken (upstream-wide and its flow's) and counted in flight; or NULL when
 * the one whose turn it is must wait (tokens, max_in_flight, a pause, the budget) or nobody
 * is eligible. Call repeatedly until NULL. O(1) amortised, plus O(log n) per flow that steps
 * aside for its own tokens or comes back (n = such flows). */
struct waiter *dispatch_next(struct dispatch *d, uint64_t now_ns);

/* A queued waiter whose deadline has passed (deadline_ns <= now_ns), unlinked; or NULL.
 * Call repeatedly until NULL. It consumed no token. Call dispatch_next() first, so that a
 * waiter whose tokens come due exactly at its deadline goes rather than expires. */
struct waiter *dispatch_expired(struct dispatch *d, uint64_t now_ns);

/* Unlink and return the oldest waiter whatever its state (used at shutdown); NULL when
 * empty. */
struct waiter *dispatch_pop(struct dispatch *d);

/* Give a released waiter its turn back at the head (the upstream refused it
 * unprocessed). The tokens it took stay spent: the upstream did see the request, and it
 * takes its cost again when released again. It stops counting in flight. Its deadline is
 * clamped to the current head's, should a reload have shortened max_wait meanwhile.
 * With flows: it goes back at the head of its own flow (if that flow expired meanwhile, a
 * flow made since for the same key, e.g. by dispatch_pause_key_until, else the overflow
 * flow), and that flow to the front of its class's round, so it is the next of its class to
 * go (its flow's own limits and the class order still apply). If that flow is paused, it
 * waits for the pause's end instead and then rejoins its round at the tail. So after a 429
 * for one key, call dispatch_pause_key_until() first, then this. It counts as waiting from
 * the latest `now` seen (see Rate bound). It ignores queue_size and key_queue_share. It
 * still counts against the budget it was released under. */
void dispatch_requeue_head(struct dispatch *d, struct waiter *w);

/* A request handed out by dispatch_next() has finished: one fewer in flight. */
void dispatch_done(struct dispatch *d);

/* Absolute time (same clock as now_ns) of the next moment something can happen without
 * outside help: the tokens of the waiter whose turn it is come due, a flow that stepped
 * aside gets its own tokens back or its key's pause ends, the next slot a lease can gather
 * for it, or the oldest deadline (a shared limit whose lease holds no slot adds no time: a
 * grant comes with a kick); a release
 * time is pushed to the end of an upstream-wide pause, and to the budget's reset while the
 * budget is spent. DISPATCH_NEVER when
 * the queue is empty. While max_in_flight is reached only the deadline counts, since
 * dispatch_done() is the event that frees a slot. O(DISPATCH_MAX_CLASSES). */
uint64_t dispatch_wake_ns(const struct dispatch *d, uint64_t now_ns);

/* The upstream said "not before until_ns" (429/503 Retry-After): no release before then.
 * A later pause extends, an earlier one never shortens a pause under way. Admission counts
 * the pause in its predicted wait. Call dispatch_wake_ns() again afterwards. */
void dispatch_pause_until(struct dispatch *d, uint64_t until_ns);

/* The upstream said "not before until_ns" for one key (a 429 with Retry-After on a keyed
 * route): that key's flow releases nothing before then; it steps aside like a flow short of
 * its own tokens and every other key goes on. A later pause extends, an earlier one never
 * shortens. The flow is created if the key has none (at max_keys or for a key over 256
 * bytes that is the overflow flow, which all such keys share: they pause together; NULL or
 * 0: the default flow), and is not freed or recycled while paused, even with no waiter.
 * Admission counts the pause for that key (dispatch_submit_key), dispatch_wake_ns() its
 * end, and a waiter given back with dispatch_requeue_head() waits for it. Call
 * dispatch_wake_ns() again afterwards. O(1) amortised plus O(log n) per priority class
 * with waiters (n = flows stepped aside). */
void dispatch_pause_key_until(struct dispatch *d, const char *key, size_t key_len,
                              uint64_t until_ns);

/* The upstream said only `remaining` more requests may be sent before reset_ns
 * (RateLimit / X-RateLimit-Remaining + Reset). Replaces any earlier budget: releases are
 * counted against it (one per request, whatever its cost) and none goes while it is 0,
 * until reset_ns, after which it no longer applies. A reset_ns at or before the latest
 * `now` seen clears the budget. Requests already in flight are not subtracted: the caller
 * knows better which of them the upstream had counted. */
void dispatch_set_budget(struct dispatch *d, uint64_t remaining, uint64_t reset_ns);

/* Observers, for metrics and the status page. */
size_t dispatch_queue_len(const struct dispatch *d);
size_t dispatch_queue_cap(const struct dispatch *d);
uint32_t dispatch_in_flight(const struct dispatch *d);
size_t dispatch_nlimits(const struct dispatch *d);
/* Tokens of limit `limit_index` now; 0 for an index out of range. For a shared limit, the
 * slots its lease holds now (held and gathered). */
double dispatch_tokens(const struct dispatch *d, size_t limit_index, uint64_t now_ns);
/* Keyed flows allocated now (default and overflow flows not counted), flows holding
 * waiters, and flows stepped aside for their own tokens. */
size_t dispatch_nkeys(const struct dispatch *d);
size_t dispatch_active_flows(const struct dispatch *d);
size_t dispatch_parked_flows(const struct dispatch *d);
/* Waiters queued under `key` (0 for an unknown key). No flow is created. */
size_t dispatch_key_queue_len(const struct dispatch *d, const char *key, size_t key_len);
/* Tokens of per-key limit `limit_index` for `key` now (for RateLimit headers to the client):
 * a key without a flow has a full bucket; 0 for an index out of range. No flow is created. */
double dispatch_key_tokens(const struct dispatch *d, const char *key, size_t key_len,
                           size_t limit_index, uint64_t now_ns);
size_t dispatch_nkey_limits(const struct dispatch *d);
/* The end of the upstream-wide pause, 0 when there is none beyond the latest `now` the
 * dispatcher has seen (the caller's clock may be further on: compare with it). For an
 * honest Retry-After. */
uint64_t dispatch_paused_until(const struct dispatch *d);
/* The same for `key`'s own pause: 0 when none (or the key has no flow). No flow is created.
 * The key's requests wait for the later of the two. */
uint64_t dispatch_key_paused_until(const struct dispatch *d, const char *key, size_t key_len);
/* Whether a budget applies at now_ns, and if so the requests left and the reset time. */
int dispatch_budget(const struct dispatch *d, uint64_t now_ns, uint64_t *remaining,
                    uint64_t *reset_ns);

/* Observers for the status page and the dashboard (issue 12). Read-only: neither creates a
 * flow, expires one nor moves the dispatcher's clock. Not for the request path. */

/* The wait dispatch_submit_key() would predict for a request of `key` (NULL or 0: the default
 * flow) and `cost` (0 counts as 1) arriving at now_ns, by the same code: every limit, the
 * fair share among the flows with waiters, the key's own limits, pauses (upstream-wide and
 * the key's), the budget and shared limits' leases. A key without a flow is predicted as
 * the flow admission would give it (a new one, or the overflow flow at max_keys or for a
 * key over 256 bytes). DISPATCH_NEVER when some limit's or key limit's burst is below the
 * cost. A full queue or key is not considered (dispatch_queue_len, dispatch_key_queue_len
 * tell), nor is max_wait: the answer may exceed it (admission would refuse as LATE). O(1)
 * amortised (one hash look-up). */
uint64_t dispatch_predict_wait_ns(const struct dispatch *d, const char *key, size_t key_len,
                                  uint32_t cost, uint64_t now_ns);

/* One keyed flow as dispatch_top_keys() sees it. */
struct dispatch_key_info {
    const char *key;      /* the flow's key (key_len bytes, then a NUL), owned by the
                             dispatcher: valid until the next call that changes it (submit,
                             next, cancel, expired, reconfigure...) */
    size_t key_len;       /* bytes */
    size_t queued;        /* waiters queued in the flow now */
    uint64_t queued_cost; /* tokens they need */
    int paused;           /* 1 while the key's own pause holds it (as dispatch_key_paused_until:
                             past the latest `now` seen); the upstream-wide pause not counted */
};

/* The (up to) n keyed flows with the most waiters queued now into out[0..n), most first; ties
 * by queued cost (more first), then by key (bytewise, a prefix first), so the order is stable
 * from one call to the next. The overflow flow ("~overflow") counts as a key; the default
 * (unkeyed) flow does not. Returns how many were written (at most n; 0 when n is 0 or out is
 * NULL). A key's share of the queue is queued / dispatch_queue_len(). Walks only the flows
 * with waiters (dispatch_active_flows()), never the idle ones: O(active flows x log n), no
 * allocation. Called about once a second by the admin page, not on the request path. */
size_t dispatch_top_keys(const struct dispatch *d, size_t n, struct dispatch_key_info *out);

/* Shared limits, for the proxy's store client. `idx` is the limit's index in
 * dispatch_config.limits; for a limit that is not shared (or out of range) the calls do nothing
 * and return 0 (dispatch_lease_want_at_ns: DISPATCH_NEVER, dispatch_lease: NULL). After a
 * grant, a fallback, a recovery or a fleet pause, kick: call dispatch_next() and then
 * dispatch_wake_ns() again. */
size_t dispatch_shared_count(const struct dispatch *d);
/* The lease of limit idx, for its counters, mode and instances (limiter/lease.h); NULL for a
 * local limit. Valid until the next dispatch_reconfigure*() or dispatch_free(). */
const struct lease *dispatch_lease(const struct dispatch *d, size_t idx);
/* Slots to ask for now (lease_want with the tokens queued as the backlog), and when that
 * becomes positive if nothing else happens (lease_want_at_ns: arm a timer for it). */
uint32_t dispatch_lease_want(const struct dispatch *d, size_t idx, uint64_t now_ns);
uint64_t dispatch_lease_want_at_ns(const struct dispatch *d, size_t idx, uint64_t now_ns);
/* A reply for limit idx (lease_grant), for a call sent at t_send_ns, read at t_recv_ns. */
void dispatch_lease_grant(struct dispatch *d, size_t idx, uint64_t t_send_ns, uint64_t t_recv_ns,
                          const struct lease_reply *r);
/* The store is unreachable / answers again (lease_fallback / lease_recover: the debit). */
void dispatch_lease_fallback(struct dispatch *d, size_t idx, uint64_t now_ns);
uint64_t dispatch_lease_recover(struct dispatch *d, size_t idx);
/* The fleet paused this budget until until_ns (lease_drop_until). */
void dispatch_lease_drop_until(struct dispatch *d, size_t idx, uint64_t until_ns);

#endif
