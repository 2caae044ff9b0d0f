/*
 * bench/dispatch_bench: the cost of limiter/dispatch per request as the number of active
 * keys grows (issue 5: "dispatch cost per request stays flat from 1 to 100 000 active keys").
 *
 * For each flow count N, every flow holds 2 queued waiters (N active flows), then each
 * operation is one steady-state request: dispatch_next() releases the waiter whose turn it
 * is, dispatch_done() ends it, and the same waiter is submitted again under its key
 * (dispatch_submit_key: hash look-up, admission estimate, linking). The limits are generous
 * so the buckets always grant; the clock is a counter, as in the unit tests. Time is the
 * process's monotonic clock around the whole loop; the table gives ns per operation
 * (submit + next + done), best of a few runs.
 *
 * Built -O2 like the daemon: `make bench-dispatch`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "limiter/dispatch.h"
#include "limiter/queue.h"

#define PER_FLOW 2
#define RUNS     3

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct item {
    struct waiter w;
    uint32_t flow; /* index into keys[] */
};

/* One run with `nflows` flows (0: the unkeyed default flow) and `ops` operations; returns
 * ns per operation, or -1 on a failure. `key_limits` adds one generous per-key limit. */
static double run(size_t nflows, size_t ops, int key_limits, size_t *nkeys_out)
{
    const struct dispatch_limit lim[] = {{1e9, 1e6}};
    const struct dispatch_limit klim[] = {{1e9, 1e6}};
    size_t flows = nflows ? nflows : 1;
    size_t nitems = flows * PER_FLOW;
    struct dispatch_config cfg = {
        .limits = lim,
        .nlimits = 1,
        .max_in_flight = UINT32_MAX,
        .queue_size = (uint32_t)(nitems + 16),
        .max_wait_ns = 3600ull * 1000000000ull,
    };
    struct dispatch_fair_config fair = {
        .key_limits = key_limits ? klim : NULL,
        .nkey_limits = key_limits ? 1 : 0,
        .max_keys = (uint32_t)flows,
        .key_hash_seed = {0x0123456789abcdefull, 0xfedcba9876543210ull},
    };
    uint64_t now = 1000ull * 1000000000ull;
    struct item *items = calloc(nitems, sizeof(*items));
    char(*keys)[16] = calloc(flows, sizeof(*keys));
    size_t *klen = calloc(flows, sizeof(*klen));
    struct dispatch *d = dispatch_new_fair(&cfg, &fair, now);
    double result = -1;

    if (items == NULL || keys == NULL || klen == NULL || d == NULL)
        goto out;
    for (size_t f = 0; f < flows; f++)
        klen[f] = (size_t)snprintf(keys[f], sizeof(keys[f]), "key-%zu", f);
    for (size_t i = 0; i < nitems; i++) {
        struct item *it = &items[i];
        it->flow = (uint32_t)(i % flows);
        it->w.cost = 1;
        it->w.data = it;
        const char *k = nflows ? keys[it->flow] : NULL;
        if (dispatch_submit_key(d, &it->w, k, nflows ? klen[it->flow] : 0, now, NULL) !=
            DISPATCH_QUEUED)
            goto out;
    }

    uint64_t t0 = mono_ns();
    for (size_t op = 0; op < ops; op++) {
        now += 1000; /* 1 us of fake time: the 1e9/s buckets never run dry */
        struct waiter *w = dispatch_next(d, now);
        if (w == NULL)
            goto out;
        dispatch_done(d);
        struct item *it = w->data;
        const char *k = nflows ? keys[it->flow] : NULL;
        if (dispatch_submit_key(d, w, k, nflows ? klen[it->flow] : 0, now, NULL) != DISPATCH_QUEUED)
            goto out;
    }
    uint64_t t1 = mono_ns();
    result = (double)(t1 - t0) / (double)ops;
    if (nkeys_out != NULL)
        *nkeys_out = dispatch_nkeys(d);

out:
    if (d != NULL) {
        while (dispatch_pop(d) != NULL)
            ;
        dispatch_free(d);
    }
    free(items);
    free(keys);
    free(klen);
    return result;
}

static double best_of(size_t nflows, size_t ops, int key_limits, size_t *nkeys)
{
    double best = -1;

    for (int r = 0; r < RUNS; r++) {
        double v = run(nflows, ops, key_limits, nkeys);
        if (v < 0)
            return -1;
        if (best < 0 || v < best)
            best = v;
    }
    return best;
}

int main(int argc, char **argv)
{
    const size_t counts[] = {0, 1, 100, 10000, 100000};
    size_t ops = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 2000000;

    printf("dispatch_bench: ns per request (submit_key + next + done), %zu ops, best of %d\n", ops,
           RUNS);
    printf("%-22s %10s %16s %10s\n", "active flows", "ns/op", "ns/op key limits", "flows");
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        size_t nkeys = 0;
        double plain = best_of(counts[i], ops, 0, &nkeys);
        double limited = best_of(counts[i], ops, 1, NULL);
        if (plain < 0 || limited < 0) {
            fprintf(stderr, "dispatch_bench: run with %zu flows failed\n", counts[i]);
            return 1;
        }
        char label[32];
        if (counts[i] == 0)
            snprintf(label, sizeof(label), "1 (no key)");
        else
            snprintf(label, sizeof(label), "%zu", counts[i]);
        printf("%-22s %10.1f %16.1f %10zu\n", label, plain, limited, nkeys);
    }
    return 0;
}
