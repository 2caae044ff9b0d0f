/*
 * proxy/history: the last five minutes of each upstream, one sample a second, for the
 * dashboard (GET / on the admin listener) and /status?history=N.
 *
 * One timer for the whole server takes a sample of every upstream each second: its
 * queue depth, and the cumulative counts it has (released, answers by status class,
 * refusals by reason, queue waits per histogram bucket) from proxy/upstream and
 * proxy/metrics. Rates and the last minute's queue-wait percentiles are differences of
 * two samples, so nothing is added to the request path. Memory is fixed per upstream
 * (a ring of HISTORY_SECONDS + 1 samples); the series of an upstream a reload removed
 * goes with the next sample.
 *
 * Ownership: the server owns it. Event loop only.
 */
#ifndef SLUICE_PROXY_HISTORY_H
#define SLUICE_PROXY_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#define HISTORY_SECONDS 300 /* samples kept: five minutes */
#define HISTORY_RATE_S  10  /* rates are over the last this many seconds */
#define HISTORY_WAIT_S  60  /* queue-wait percentiles over the last minute */

struct server;
struct history;

struct history *history_new(struct server *s);
void history_free(struct history *h); /* NULL ok */

/* What the last samples of upstream `name` say; 0 when it has no sample yet. */
struct history_now {
    double release_rate;     /* released per second */
    double answers_rate[5];  /* finished requests per second, by status class 1xx..5xx */
    double refusals_rate[4]; /* 503 per second: queue_full, deadline, shutdown, key_queue_full */
    uint64_t wait_count;     /* requests whose queue wait counted in the last minute */
    double wait_p50_ms, wait_p99_ms; /* their percentiles (within a histogram bucket) */
};
int history_now(const struct history *h, const char *name, struct history_now *out);

/* The last `n` seconds (n <= HISTORY_SECONDS; fewer when not that old), oldest first:
 * queue depth at each sample, and released and refused in each second. Returns how many
 * were written to each array. */
size_t history_series(const struct history *h, const char *name, size_t n, uint32_t *depth,
                      uint32_t *released, uint32_t *refused);

/* Client refusals per second over the last HISTORY_RATE_S: connection_limit,
 * header_timeout. */
void history_client_rates(const struct history *h, double *connection_limit,
                          double *header_timeout);

#endif
