/*
 * limiter/dispatch: decides when each waiting request of one upstream may go.
 *
 * One dispatcher per upstream. It owns the upstream's queue and its token buckets
 * (every configured limit must grant a token: 10/s AND 5000/h), and counts the
 * requests in flight against max_in_flight.
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
 *   - The queue is FIFO; deadlines are non-decreasing from head to tail (every waiter
 *     gets now + max_wait, and a reload that shortens max_wait clamps older deadlines),
 *     so the earliest deadline is always the head's: expiry is O(1) with no per-request timer.
 *   - A waiter handed out by dispatch_next() has taken `cost` tokens from every bucket
 *     and counts in flight until dispatch_done(); a cancelled or expired one took nothing.
 */
#ifndef SLUICE_LIMITER_DISPATCH_H
#define SLUICE_LIMITER_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

struct waiter;
struct dispatch;

#define DISPATCH_MAX_LIMITS 8
#define DISPATCH_NEVER UINT64_MAX /* "no event to wait for" from dispatch_wake_ns */

struct dispatch_limit {
    double rate_per_sec;  /* > 0, fractions allowed */
    double burst_tokens;  /* >= 1 */
};

struct dispatch_config {
    const struct dispatch_limit *limits; /* copied; 1..DISPATCH_MAX_LIMITS entries */
    size_t nlimits;
    uint32_t max_in_flight; /* >= 1 */
    uint32_t queue_size;    /* >= 1 */
    uint64_t max_wait_ns;   /* > 0 */
};

enum dispatch_admit {
    DISPATCH_QUEUED, /* linked at the tail; will come out of next() or expired() */
    DISPATCH_FULL,   /* queue at queue_size: refuse (503 queue_full) */
    DISPATCH_LATE,   /* predicted wait exceeds max_wait: refuse now (503 deadline) */
};

/* Returns NULL on an invalid config or out of memory. Buckets start full. */
struct dispatch *dispatch_new(const struct dispatch_config *cfg, uint64_t now_ns)
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

/* Offer a waiter (its `cost` set by the caller, >= 1; 0 is stored as 1). On
 * DISPATCH_QUEUED its enqueued_ns and deadline_ns are set. The predicted wait is the time
 * for every limit to grant the tokens of the whole queue plus this one; max_in_flight is
 * not part of it. On FULL or LATE it is not linked and *retry_after_ns (if non-NULL) gets
 * an honest estimate of when the same request would be admitted: for FULL, when the head
 * will leave (its tokens come due or its deadline, whichever is first; at least 1 ms);
 * for LATE, how much sooner the predicted wait would need to be. A cost above some
 * limit's burst can never be granted: LATE with *retry_after_ns = DISPATCH_NEVER (send no
 * Retry-After). A waiter already linked is refused as FULL. */
enum dispatch_admit dispatch_submit(struct dispatch *d, struct waiter *w, uint64_t now_ns,
                                    uint64_t *retry_after_ns);

/* Remove a queued waiter (its client left). It consumes no token. No-op if not queued. */
void dispatch_cancel(struct dispatch *d, struct waiter *w);

/* The next waiter allowed to go now, unlinked, with its tokens taken and counted in
 * flight; or NULL when the head must wait (tokens or max_in_flight) or the queue is empty.
 * Call repeatedly until NULL. */
struct waiter *dispatch_next(struct dispatch *d, uint64_t now_ns);

/* A queued waiter whose deadline has passed (deadline_ns <= now_ns), unlinked; or NULL.
 * Call repeatedly until NULL. It consumed no token. Call dispatch_next() first, so that a
 * waiter whose tokens come due exactly at its deadline goes rather than expires. */
struct waiter *dispatch_expired(struct dispatch *d, uint64_t now_ns);

/* Unlink and return the head whatever its state (used at shutdown); NULL when empty. */
struct waiter *dispatch_pop(struct dispatch *d);

/* Give a released waiter its turn back at the head (the upstream refused it
 * unprocessed). The tokens it took stay spent: the upstream did see the request, and it
 * takes its cost again when released again. It stops counting in flight. Its deadline is
 * clamped to the current head's, should a reload have shortened max_wait meanwhile. */
void dispatch_requeue_head(struct dispatch *d, struct waiter *w);

/* A request handed out by dispatch_next() has finished: one fewer in flight. */
void dispatch_done(struct dispatch *d);

/* Absolute time (same clock as now_ns) of the next moment something can happen without
 * outside help: the head's tokens come due, or the head's deadline. DISPATCH_NEVER when
 * the queue is empty. While max_in_flight is reached only the deadline counts, since
 * dispatch_done() is the event that frees a slot. */
uint64_t dispatch_wake_ns(const struct dispatch *d, uint64_t now_ns);

/* Observers, for metrics and the status page. */
size_t dispatch_queue_len(const struct dispatch *d);
size_t dispatch_queue_cap(const struct dispatch *d);
uint32_t dispatch_in_flight(const struct dispatch *d);
size_t dispatch_nlimits(const struct dispatch *d);
/* Tokens of limit `limit_index` now; 0 for an index out of range. */
double dispatch_tokens(const struct dispatch *d, size_t limit_index, uint64_t now_ns);

#endif
