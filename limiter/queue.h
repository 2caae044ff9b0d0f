/*
 * limiter/queue: a bounded FIFO of waiters with O(1) push, pop and removal.
 *
 * Contract
 *   - The queue owns nothing: a `struct waiter` is embedded in its owner's object (the
 *     proxy's per-request context) and is only linked here. The owner must take its
 *     waiter out (queue_remove / queue_pop) before freeing the object.
 *   - Knows nothing of HTTP or of time: it never reads a clock; the fields
 *     `enqueued_ns` and `deadline_ns` are written by the dispatcher and carried here so
 *     that one structure holds everything about a waiting request.
 *   - Not thread-safe; sluice runs one event loop.
 *
 * Invariant: `len` equals the number of linked waiters and never exceeds `cap`
 * (queue_push_head and queue_insert_before, used to give a request back its place, may
 * exceed it by design).
 */
#ifndef SLUICE_LIMITER_QUEUE_H
#define SLUICE_LIMITER_QUEUE_H

#include <stddef.h>
#include <stdint.h>

struct fairq_flow;

/* Embedded in its owner's object (proxy: struct request), zero-initialised by the owner,
 * which sets `cost`, `priority` and `data` before submitting it. Everything else is written
 * by limiter/ (dispatch, queue, fairq) and is only to be read by the owner. A zeroed waiter
 * belongs to the default flow (no key) at priority 0, which is exactly the pre-fairness
 * behaviour. */
struct waiter {
    struct waiter *prev, *next;   /* arrival-order links (limiter/queue: the dispatcher's
                                     deadline list); meaningful only while queued */
    struct waiter *fprev, *fnext; /* links in its flow's FIFO for its priority class
                                     (limiter/fairq); meaningful only while queued */
    struct fairq_flow *flow;      /* the flow it is queued in; NULL when not queued
                                     (limiter/fairq); never dereference it outside limiter/ */
    uint64_t flow_id;             /* identity of that flow, kept after release so that
                                     dispatch_requeue_head() can find it again if it still
                                     exists (limiter/fairq) */
    uint64_t flow_hash;           /* that flow's key hash, for the same look-up */
    uint64_t enqueued_ns;         /* when it entered the queue */
    uint64_t deadline_ns;         /* when it must leave the queue, released or not */
    uint64_t ready_ns;            /* waiting since: its submit, or its return through
                                     dispatch_requeue_head() (limiter/dispatch: a release
                                     that fires late is booked as of the tokens' due time
                                     only if it was waiting then) */
    uint32_t cost;                /* tokens it takes from every limit when released (>= 1);
                                     fixed while queued (cost_sum counts it) */
    uint8_t priority;             /* set by the owner: class 0 is served first; values at or
                                     above the dispatcher's classes count as the lowest */
    uint8_t prio_class;           /* the class it was queued in (limiter/fairq) */
    uint8_t queued;               /* 1 while linked in a queue */
    uint8_t requeued;             /* given its turn back (dispatch_requeue_head) and not
                                     released since: such waiters keep arrival order among
                                     themselves at the head */
    uint64_t seq;                 /* arrival order in its dispatcher (set at submit) */
    void *data;                   /* the owner's object; never touched by limiter/ */
};

struct queue {
    struct waiter *head, *tail;
    size_t len;        /* waiters linked now */
    size_t cap;        /* bound for queue_push */
    uint64_t cost_sum; /* sum of `cost` over linked waiters: the tokens the queue needs */
};

void queue_init(struct queue *q, size_t cap);

/* Append at the tail. Returns 0, or -1 when the queue already holds `cap` waiters.
 * The waiter must not be queued anywhere (one already linked is refused with -1). */
int queue_push(struct queue *q, struct waiter *w) __attribute__((warn_unused_result));

/* Insert at the head regardless of `cap` (a request given back its turn). A waiter
 * already linked is left alone. */
void queue_push_head(struct queue *q, struct waiter *w);

/* Insert `w` just before `pos` (NULL: at the tail), regardless of `cap`. A waiter already
 * linked is left alone. */
void queue_insert_before(struct queue *q, struct waiter *pos, struct waiter *w);

/* The head, or NULL when empty; the waiter stays queued. */
struct waiter *queue_peek(const struct queue *q);

/* Unlink and return the head, or NULL when empty. */
struct waiter *queue_pop(struct queue *q);

/* Unlink `w` from wherever it is in `q`. A waiter that is not queued is left alone. */
void queue_remove(struct queue *q, struct waiter *w);

static inline size_t queue_len(const struct queue *q) { return q->len; }

#endif
