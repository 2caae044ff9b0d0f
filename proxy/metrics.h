/*
 * proxy/metrics: counters, gauges and histograms for operators, rendered in the
 * Prometheus text format (version 0.0.4) by proxy/admin.
 *
 * Owned by the server (one per process, kept across reloads). Updated from the event
 * loop only: metrics_request_done() once per finished request, O(1) (a small hash of
 * label sets), no allocation after a label set has been seen once.
 *
 * Exposed (names are the contract):
 *   sluice_requests_total{upstream,route,status,reason}     counter
 *   sluice_rejections_total{upstream,reason}                 counter (queue_full, deadline,
 * shutdown, key_queue_full) sluice_queue_wait_seconds{upstream}                      histogram
 * (time queued, released or not) sluice_upstream_latency_seconds{upstream}                histogram
 * (sent -> response headers) sluice_queue_depth{upstream} / sluice_queue_capacity{upstream} gauges
 *   sluice_in_flight{upstream} / sluice_max_in_flight{upstream}      gauges
 *   sluice_tokens_available{upstream,limit}                  gauge (limit = "10/s" as configured)
 *   sluice_config_reloads_total{result="ok|failed"}          counter
 *   sluice_config_last_reload_timestamp_seconds              gauge (unix time, start counts)
 *   sluice_config_last_reload_success                        gauge 0/1 (last attempt)
 *   sluice_upstream_retries_total{upstream}                  counter (429/503 given another turn)
 *   sluice_upstream_pauses_total{upstream}                   counter (Retry-After pauses)
 *   sluice_upstream_budget_reports_total{upstream}           counter (RateLimit budgets obeyed)
 *   sluice_upstream_paused{upstream}                         gauge 0/1
 *   sluice_keys{upstream} / sluice_active_keys{upstream}     gauges (fair-queuing keys tracked /
 * queued) sluice_client_connections                                gauge sluice_draining gauge 0/1
 *
 * Labels: upstream and route are "" for a request that never got one (404 no_route,
 * 503 shutdown while draining). limit is the limit's rate in the unit that shows it
 * exactly: "10/s", "0.5/s", "100/m", "5000/h" (the same rate as written, maybe in another
 * unit: 30/m shows as "0.5/s"); a second limit with the same rate gets "#N" appended (its
 * 1-based position). Histogram buckets (seconds): 0.001 0.005 0.01 0.025 0.05 0.1 0.25
 * 0.5 1 2.5 5 10 30 60 +Inf. Series per configured upstream exist from start-up (zero);
 * sluice_requests_total series appear when their label set is first seen.
 */
#ifndef SLUICE_PROXY_METRICS_H
#define SLUICE_PROXY_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct metrics;
struct server;
struct evbuffer;

#define METRICS_NONE UINT64_MAX /* "not applicable" for a duration */

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/* One finished request. `route` and `upstream` may be NULL ("" label); `reason` is
 * "ok" for an answer relayed from the upstream, else the Sluice-Reason (or
 * "client_closed", status 499, when the client left first). queue_wait_ns is METRICS_NONE
 * when the request never entered a queue; upstream_ns when it never reached the upstream
 * or got no response headers. prio_class: the priority class it was queued in (0..3), or
 * -1. Strings are copied when a label set is first seen. */
void metrics_request_done(struct metrics *m, const char *upstream, const char *route, int status,
                          const char *reason, uint64_t queue_wait_ns, uint64_t upstream_ns,
                          int prio_class);

/* An aggregate route answered: outcome "complete", "partial" or "failed", after
 * `took_ns`. And each of its parts: `reason` "ok", "not_json", or why it failed. Strings
 * are copied when first seen (routes and part names come from the config; reasons from a
 * small set and status_NNN). */
void metrics_aggregate_done(struct metrics *m, const char *route, const char *outcome,
                            uint64_t took_ns);
void metrics_aggregate_part(struct metrics *m, const char *route, const char *part,
                            const char *reason);

/* Cumulative totals of one upstream, for the dashboard's history (proxy/history). */
#define METRICS_WAIT_BUCKETS 15 /* the queue-wait histogram's buckets, the last +Inf */
struct metrics_totals {
    uint64_t answers[5];  /* statuses 1xx..5xx of finished requests */
    uint64_t refusals[4]; /* 503 queue_full, deadline, shutdown, key_queue_full */
    uint64_t wait_buckets[METRICS_WAIT_BUCKETS]; /* queue waits per bucket (not cumulative) */
};
/* Fills `out` (zeros for an upstream not seen yet). */
void metrics_upstream_totals(const struct metrics *m, const char *upstream,
                             struct metrics_totals *out);
/* The upper bound of wait bucket i in ns (UINT64_MAX for the last). */
uint64_t metrics_wait_bucket_bound_ns(size_t i);
/* Requests refused before routing: 503 connection_limit, 408 header_timeout. */
void metrics_client_refusals(const struct metrics *m, uint64_t *connection_limit,
                             uint64_t *header_timeout);

/* A reload attempt (and start-up, as ok) at unix time `when`. */
void metrics_config_loaded(struct metrics *m, int ok, int64_t when);

/* The `limit` label of limit li of an upstream ("10/s", "5000/h"; "#N" appended when two
 * limits have the same rate): the metrics' and /status's name for it. */
struct conf_upstream;
void metrics_limit_label(const struct conf_upstream *cu, size_t li, char *buf, size_t len);

/* The aggregate routes' counts (for /status), each series once, routes by path_prefix:
 * `route` with the answers by outcome (complete, partial, failed) and their total time,
 * then `part` for each (route, part, reason) seen. */
struct metrics_aggregate_visitor {
    void (*route)(void *arg, const char *route, const uint64_t outcomes[3], uint64_t took_sum_ns,
                  uint64_t took_count);
    void (*part)(void *arg, const char *route, const char *part, const char *reason,
                 uint64_t count);
    void *arg;
};
void metrics_aggregates(const struct metrics *m, const struct metrics_aggregate_visitor *v);

/* Append the whole exposition to `out`, reading gauges from the server's upstreams. */
void metrics_render(const struct metrics *m, const struct server *s, struct evbuffer *out);

#endif
