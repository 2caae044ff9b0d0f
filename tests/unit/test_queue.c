/*
 * tests/unit/test_queue: limiter/queue. After every change the whole list is walked both
 * ways and checked against the expected order, len and cost_sum, so a broken back link
 * or a stale count fails where it happens.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "limiter/queue.h"

#define NW 6

static struct waiter w[NW];

static int setup(void **state)
{
    for (int i = 0; i < NW; i++) {
        w[i] = (struct waiter){.cost = (uint32_t)(i + 1), .data = &w[i]};
    }
    return 0;
}

/* The queue holds exactly `order` (indexes into w[]), linked consistently both ways. */
static void assert_queue(const struct queue *q, const int *order, size_t n)
{
    uint64_t sum = 0;
    const struct waiter *x = q->head;

    assert_int_equal(queue_len(q), n);
    for (size_t i = 0; i < n; i++) {
        assert_ptr_equal(x, &w[order[i]]);
        assert_int_equal(x->queued, 1);
        assert_ptr_equal(x->prev, i == 0 ? NULL : &w[order[i - 1]]);
        sum += x->cost;
        x = x->next;
    }
    assert_null(x);
    assert_ptr_equal(q->tail, n == 0 ? NULL : &w[order[n - 1]]);
    assert_ptr_equal(queue_peek(q), n == 0 ? NULL : &w[order[0]]);
    assert_int_equal(q->cost_sum, sum);
}

static void push_all(struct queue *q, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(queue_push(q, &w[i]), 0);
}

static void test_empty(void **state)
{
    struct queue q;

    queue_init(&q, 4);
    assert_queue(&q, NULL, 0);
    assert_null(queue_pop(&q));
    assert_null(queue_peek(&q));
    assert_int_equal(q.cap, 4);
}

static void test_fifo_order(void **state)
{
    struct queue q;

    queue_init(&q, NW);
    w[0].prev = &w[4]; /* stale links of unqueued waiters must not survive a push */
    w[3].next = &w[5];
    push_all(&q, 4);
    assert_queue(&q, (int[]){0, 1, 2, 3}, 4);
    assert_ptr_equal(queue_peek(&q), &w[0]);
    assert_int_equal(w[0].queued, 1); /* peek leaves it queued */
    for (int i = 0; i < 4; i++) {
        struct waiter *x = queue_pop(&q);
        assert_ptr_equal(x, &w[i]);
        assert_int_equal(x->queued, 0);
        assert_null(x->prev);
        assert_null(x->next);
    }
    assert_queue(&q, NULL, 0);
    /* A popped waiter can go in again, at the tail. */
    push_all(&q, 2);
    assert_int_equal(queue_push(&q, &w[3]), 0);
    assert_queue(&q, (int[]){0, 1, 3}, 3);
}

static void test_remove_positions(void **state)
{
    struct queue q;

    queue_init(&q, NW);
    push_all(&q, 5);
    queue_remove(&q, &w[2]); /* middle */
    assert_queue(&q, (int[]){0, 1, 3, 4}, 4);
    assert_int_equal(w[2].queued, 0);
    queue_remove(&q, &w[0]); /* head */
    assert_queue(&q, (int[]){1, 3, 4}, 3);
    queue_remove(&q, &w[4]); /* tail */
    assert_queue(&q, (int[]){1, 3}, 2);
    queue_remove(&q, &w[3]);
    queue_remove(&q, &w[1]); /* the last one */
    assert_queue(&q, NULL, 0);
    /* The queue still works from empty after removals. */
    assert_int_equal(queue_push(&q, &w[5]), 0);
    assert_queue(&q, (int[]){5}, 1);
}

static void test_remove_twice_is_noop(void **state)
{
    struct queue q;

    queue_init(&q, NW);
    push_all(&q, 3);
    queue_remove(&q, &w[1]);
    queue_remove(&q, &w[1]);
    assert_queue(&q, (int[]){0, 2}, 2);
    /* Never queued at all: left alone too. */
    queue_remove(&q, &w[5]);
    assert_queue(&q, (int[]){0, 2}, 2);
    /* Popped, then removed by a late cancel. */
    assert_ptr_equal(queue_pop(&q), &w[0]);
    queue_remove(&q, &w[0]);
    assert_queue(&q, (int[]){2}, 1);
}

static void test_cap(void **state)
{
    struct queue q;

    queue_init(&q, 3);
    push_all(&q, 3);
    assert_int_equal(queue_push(&q, &w[3]), -1);
    assert_int_equal(w[3].queued, 0);
    assert_queue(&q, (int[]){0, 1, 2}, 3);
    /* A freed place can be taken again. */
    queue_remove(&q, &w[1]);
    assert_int_equal(queue_push(&q, &w[3]), 0);
    assert_queue(&q, (int[]){0, 2, 3}, 3);
    /* A shrunk cap refuses but drops nobody. */
    q.cap = 1;
    assert_int_equal(queue_push(&q, &w[4]), -1);
    assert_queue(&q, (int[]){0, 2, 3}, 3);
}

/* Pushing a waiter that is already linked would corrupt the list: it is refused. */
static void test_push_queued_refused(void **state)
{
    struct queue q;

    queue_init(&q, NW);
    push_all(&q, 2);
    assert_int_equal(queue_push(&q, &w[0]), -1);
    queue_push_head(&q, &w[1]);
    assert_queue(&q, (int[]){0, 1}, 2);
}

static void test_push_head(void **state)
{
    struct queue q;

    queue_init(&q, 2);
    w[0].prev = &w[5]; /* stale links of an unqueued waiter must not survive */
    w[0].next = &w[4];
    queue_push_head(&q, &w[0]); /* into an empty queue */
    assert_queue(&q, (int[]){0}, 1);
    assert_int_equal(queue_push(&q, &w[1]), 0);
    struct waiter *x = queue_pop(&q);
    assert_ptr_equal(x, &w[0]);
    assert_int_equal(queue_push(&q, &w[2]), 0); /* full again: 1, 2 */
    /* Given back its place, beyond cap by design. */
    queue_push_head(&q, x);
    assert_queue(&q, (int[]){0, 1, 2}, 3);
    assert_int_equal(queue_push(&q, &w[3]), -1);
    assert_ptr_equal(queue_pop(&q), &w[0]);
    assert_ptr_equal(queue_pop(&q), &w[1]);
    assert_queue(&q, (int[]){2}, 1);
}

static void test_cost_sum(void **state)
{
    struct queue q;

    queue_init(&q, NW);
    push_all(&q, NW);
    assert_int_equal(q.cost_sum, 1 + 2 + 3 + 4 + 5 + 6);
    queue_remove(&q, &w[3]);
    assert_int_equal(q.cost_sum, 1 + 2 + 3 + 5 + 6);
    assert_ptr_equal(queue_pop(&q), &w[0]);
    assert_int_equal(q.cost_sum, 2 + 3 + 5 + 6);
    queue_push_head(&q, &w[3]);
    assert_int_equal(q.cost_sum, 2 + 3 + 4 + 5 + 6);
    while (queue_pop(&q) != NULL)
        ;
    assert_int_equal(q.cost_sum, 0);
    assert_int_equal(queue_len(&q), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_empty, setup),
        cmocka_unit_test_setup(test_fifo_order, setup),
        cmocka_unit_test_setup(test_remove_positions, setup),
        cmocka_unit_test_setup(test_remove_twice_is_noop, setup),
        cmocka_unit_test_setup(test_cap, setup),
        cmocka_unit_test_setup(test_push_queued_refused, setup),
        cmocka_unit_test_setup(test_push_head, setup),
        cmocka_unit_test_setup(test_cost_sum, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
