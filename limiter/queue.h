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
 * (queue_push_head, used to give a request back its place, may exceed it by design).
 */
#ifndef SLUICE_LIMITER_QUEUE_H
#define SLUICE_LIMITER_QUEUE_H

#include <stddef.h>
#include <stdint.h>

struct waiter {
    struct waiter *prev, *next; /* links; meaningful only while queued */
    uint64_t enqueued_ns;       /* when it entered the queue */
    uint64_t deadline_ns;       /* when it must leave the queue, released or not */
    uint32_t cost;              /* tokens it takes from every limit when released (>= 1);
                                   fixed while queued (cost_sum counts it) */
    uint8_t queued;             /* 1 while linked in a queue */
    void *data;                 /* the owner's object; never touched by limiter/ */
};

struct queue {
    struct waiter *head, *tail;
    size_t len;       /* waiters linked now */
    size_t cap;       /* bound for queue_push */
    uint64_t cost_sum; /* sum of `cost` over linked waiters: the tokens the queue needs */
};

void queue_init(struct queue *q, size_t cap);

/* Append at the tail. Returns 0, or -1 when the queue already holds `cap` waiters.
 * The waiter must not be queued anywhere (one already linked is refused with -1). */
int queue_push(struct queue *q, struct waiter *w) __attribute__((warn_unused_result));

/* Insert at the head regardless of `cap` (a request given back its turn). A waiter
 * already linked is left alone. */
void queue_push_head(struct queue *q, struct waiter *w);

/* The head, or NULL when empty; the waiter stays queued. */
struct waiter *queue_peek(const struct queue *q);

/* Unlink and return the head, or NULL when empty. */
struct waiter *queue_pop(struct queue *q);

/* Unlink `w` from wherever it is in `q`. A waiter that is not queued is left alone. */
void queue_remove(struct queue *q, struct waiter *w);

static inline size_t queue_len(const struct queue *q) { return q->len; }

#endif
