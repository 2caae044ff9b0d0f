/*
 * limiter/queue: an intrusive doubly linked FIFO of waiters (see queue.h).
 *
 * Invariants
 *   - head->prev == NULL, tail->next == NULL; head == NULL iff tail == NULL iff len == 0.
 *   - A waiter has queued == 1 exactly while it is linked; unlinking clears its links, so
 *     a stale pointer to a neighbour can never be followed.
 *   - cost_sum is the sum of `cost` over the linked waiters, updated on every link and
 *     unlink (the dispatcher reads it to predict the wait of a newcomer in O(1)).
 */
#include "limiter/queue.h"

void queue_init(struct queue *q, size_t cap)
{
    q->head = NULL;
    q->tail = NULL;
    q->len = 0;
    q->cap = cap;
    q->cost_sum = 0;
}

int queue_push(struct queue *q, struct waiter *w)
{
    /* A waiter linked twice would corrupt both lists: refuse it like a full queue. */
    if (q->len >= q->cap || w->queued)
        return -1;
    w->prev = q->tail;
    w->next = NULL;
    if (q->tail != NULL)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
    w->queued = 1;
    q->len++;
    q->cost_sum += w->cost;
    return 0;
}

void queue_insert_before(struct queue *q, struct waiter *pos, struct waiter *w)
{
    if (w->queued)
        return;
    w->next = pos;
    w->prev = pos != NULL ? pos->prev : q->tail;
    if (w->prev != NULL)
        w->prev->next = w;
    else
        q->head = w;
    if (pos != NULL)
        pos->prev = w;
    else
        q->tail = w;
    w->queued = 1;
    q->len++;
    q->cost_sum += w->cost;
}

void queue_push_head(struct queue *q, struct waiter *w)
{
    if (w->queued)
        return;
    w->prev = NULL;
    w->next = q->head;
    if (q->head != NULL)
        q->head->prev = w;
    else
        q->tail = w;
    q->head = w;
    w->queued = 1;
    q->len++;
    q->cost_sum += w->cost;
}

struct waiter *queue_peek(const struct queue *q) { return q->head; }

struct waiter *queue_pop(struct queue *q)
{
    struct waiter *w = q->head;

    if (w != NULL)
        queue_remove(q, w);
    return w;
}

void queue_remove(struct queue *q, struct waiter *w)
{
    if (!w->queued)
        return;
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->prev = NULL;
    w->next = NULL;
    w->queued = 0;
    q->len--;
    q->cost_sum -= w->cost;
}
