/*
 * limiter/bucket: one token bucket (a rate and a burst), kept in the GCRA form.
 *
 * Contract
 *   - Pure arithmetic: no I/O, no clock. Every call takes `now_ns`, a reading of a
 *     monotonic clock in nanoseconds supplied by the caller (a fake one in tests).
 *   - `now_ns` must never go backwards between calls on one bucket; a reading that
 *     does is treated as equal to the last one.
 *   - The bucket is embedded in its owner (the dispatcher); it allocates nothing.
 *
 * Representation
 *   Instead of a token count refilled on every call, the bucket keeps the
 *   "theoretical arrival time" (tat_ns): the moment at which it would be full again.
 *   Taking `cost` tokens pushes tat forward by cost * interval_ns; a take is allowed
 *   while tat - now stays within burst_ns.  Everything is integer nanoseconds, so no
 *   rounding drift accumulates over long idle periods or long runs (interval_ns is rounded
 *   up, so rounding only ever errs on the slow side).
 *
 * Late takes (bucket_take_since)
 *   A caller whose timer fires late would, with plain GCRA, base the next slot on the late
 *   `now` and lose the lateness every time (with burst 1: a timer 1 % late loses 1 % of the
 *   rate). bucket_take_since() books a take "as of" the instant its tokens came due instead,
 *   when the waiter was already waiting then and that instant is less than one interval
 *   ago; otherwise (nobody waiting then, or one interval or more ago) it books it now, so a
 *   bucket left idle gains no credit and a stalled one gets no catch-up burst.
 *
 * Window bound (exact)
 *   Booked instants form a plain GCRA run and each take happens less than one interval
 *   after its booking, so in any window of length t (both ends included) the tokens taken
 *   are at most
 *       ceil((t + burst_ns) / interval_ns)   = ceil(t / interval) + burst for a whole burst.
 *   As interval >= 1 / rate, that is at most ceil(rate * t) + burst: when rate * t is a
 *   whole number (a 1 s window at 100/s: 101; any window that is a multiple of the
 *   interval) exactly the plain GCRA bound rate * t + burst; for other windows it can be
 *   one token more than floor(rate * t) + burst (a take late by almost an interval, then
 *   the next on time: two within a window shorter than one interval, with burst 1). A
 *   bucket only ever taken from with bucket_take() keeps the plain bound
 *   floor((t + burst_ns) / interval_ns).
 */
#ifndef SLUICE_LIMITER_BUCKET_H
#define SLUICE_LIMITER_BUCKET_H

#include <stdint.h>

struct bucket {
    uint64_t interval_ns; /* time to earn one token: ceil(1e9 / rate_per_sec) */
    uint64_t burst_ns;    /* burst_tokens * interval_ns: how far ahead tat may run */
    uint64_t tat_ns;      /* when the bucket is full again; <= now means full */
    uint64_t last_ns;     /* latest `now` seen, to clamp a clock that goes back */
};

/* Largest rate and burst accepted. The slow end is bounded too: the burst must span at
 * most UINT64_MAX / 4 ns (~146 years; burst_tokens / rate_per_sec in seconds), which keeps
 * every sum of a clock reading and a span inside 64 bits. A rate whose 1e9 / rate is
 * within 1e-12 of an integer (5000.0 / 3600, 10 * (1.0 / 86400)) gets that integer
 * interval; any other is rounded up. */
#define BUCKET_MAX_RATE_PER_SEC 1e9
#define BUCKET_MAX_BURST_TOKENS 1e6

/* Set up a full bucket. rate_per_sec > 0 (fractions allowed: 0.5 = one token every 2 s),
 * 1 <= burst_tokens <= BUCKET_MAX_BURST_TOKENS. Returns 0, or -1 on an invalid argument
 * (NaN, out of range, or a burst too long to represent: see above). */
int bucket_init(struct bucket *b, double rate_per_sec, double burst_tokens, uint64_t now_ns)
    __attribute__((warn_unused_result));

/* Change rate and burst, keeping the tokens the bucket holds now (clamped to the new
 * burst): a reload neither refills nor empties it. Returns 0, or -1 (bucket unchanged). */
int bucket_reconfigure(struct bucket *b, double rate_per_sec, double burst_tokens, uint64_t now_ns)
    __attribute__((warn_unused_result));

/* Nanoseconds until `cost` tokens can be taken (0: now). `cost` may exceed the burst, in
 * which case the answer is the time for the queue ahead to drain that many tokens, which
 * is how the dispatcher predicts the wait of a request at position N (cost = N). */
uint64_t bucket_wait_ns(const struct bucket *b, uint64_t cost, uint64_t now_ns);

/* Take `cost` tokens if they are available now. Returns 0 (taken) or -1 (nothing taken). */
int bucket_take(struct bucket *b, uint64_t cost, uint64_t now_ns);

/* bucket_take() for a waiter that has been waiting since `since_ns` (same clock): when its
 * tokens came due at an instant `due` with since_ns <= due < now and now - due < one
 * interval, the take is booked as of `due` (never before the previous take), so the next
 * tokens come due on the original schedule; otherwise exactly bucket_take(). Whether the
 * take is allowed is decided at now, as bucket_take() does. Returns 0 (taken) or -1. */
int bucket_take_since(struct bucket *b, uint64_t cost, uint64_t now_ns, uint64_t since_ns);

/* Tokens available now, fractional (for metrics and the status page). */
double bucket_tokens(const struct bucket *b, uint64_t now_ns);

/* The configured rate and burst, recomputed from the representation. */
double bucket_rate_per_sec(const struct bucket *b);
double bucket_burst_tokens(const struct bucket *b);

#endif
