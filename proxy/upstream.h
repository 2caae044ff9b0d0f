/*
 * proxy/upstream: one configured upstream at run time: its dispatcher (queue and token
 * buckets, from limiter/), the one timer that wakes the dispatcher, and the pool of
 * keep-alive connections toward the upstream (proxy/pool).
 *
 * Ownership: the server owns every upstream. An upstream links queued requests (through
 * their waiters) but does not own them: a queued request is owned by the queue slot it
 * sits in until upstream hands it to forward_start() or answers it.
 *
 * All functions run in the event loop. None of them re-enters another: work that would
 * (a finished request freeing a slot) is deferred to the upstream's timer, activated at once.
 */
#ifndef SLUICE_PROXY_UPSTREAM_H
#define SLUICE_PROXY_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

struct server;
struct request;
struct conf_upstream;
struct pool_conn;
struct upstream;
struct dispatch;
struct confgen;
struct upstream_change;

struct upstream_stats {
    uint64_t admitted, released, refused_full, refused_late, expired, withdrawn;
    uint64_t responses, failures;
    uint64_t retried;        /* requests given their turn back after a 429/503 */
    uint64_t paused;         /* pauses the upstream asked for (Retry-After) */
    uint64_t pauses_clamped; /* of those, longer than feedback.max_pause: cut to it */
    uint64_t budgets;        /* remaining-budget reports obeyed (RateLimit, X-RateLimit-*) */
};

/* Create from a validated config entry (not copied: it must outlive the upstream or be
 * replaced by upstream_reconfigure). Returns NULL on failure (logged). */
struct upstream *upstream_new(struct server *s, const struct conf_upstream *cu);

/* Free: the queue must be empty and nothing in flight; idle connections are closed. NULL ok. */
void upstream_free(struct upstream *u);

/* Admission. Takes ownership of r: queues it (it will be released, expired or withdrawn
 * later) or answers it at once with 503 (queue_full / deadline) and frees it. */
void upstream_submit(struct upstream *u, struct request *r);

/* Take a queued request out of the queue without consuming a token (its client left).
 * Ownership returns to the caller. */
void upstream_withdraw(struct upstream *u, struct request *r);

/* A forwarded request is over: give its connection back to the pool (`reusable` 0
 * closes it) and free its in-flight slot. Safe to call from inside evhttp callbacks. */
void upstream_request_done(struct upstream *u, struct pool_conn *conn, int reusable);

/* Reload, in two steps so that a reload applies all or nothing. upstream_prepare builds
 * what `cu` needs (TLS context, checked limits) without changing `u`; NULL with err on
 * failure. upstream_commit applies it and cannot fail: the queue and each limit's token
 * balance are kept, new rates apply from now. `cu` must outlive its use (the new
 * config generation). A change not committed is freed with upstream_change_free. */
struct upstream_change *upstream_prepare(struct upstream *u, const struct conf_upstream *cu,
                                         char *err, size_t errlen);
void upstream_commit(struct upstream *u, struct upstream_change *ch);
void upstream_change_free(struct upstream_change *ch);

/* The upstream was removed by a reload: it gets no new requests, drains its queue under
 * its old settings (holding `gen`, the config they live in) and asks the server to
 * reap it (server.reap) once idle. */
void upstream_retire(struct upstream *u, struct confgen *gen);

/* Nothing queued, in flight or lent. */
int upstream_idle(const struct upstream *u);

/* The upstream answered a request of fair-queuing key `key` (key_len 0: none) with
 * status `code` and `headers` (an evkeyvalq): apply what it says about its limit
 * (feedback on): a RateLimit / X-RateLimit budget caps releases until its reset; a 429,
 * or a 503 with Retry-After, pauses releases until the time it names (1 s when a 429
 * names none; at most feedback.max_pause): every release, or with feedback.scope key
 * only that key's. Returns the pause in ms, or -1 when the answer is not a refusal. */
struct evkeyvalq;
int64_t upstream_feedback(struct upstream *u, const char *key, size_t key_len, int code,
                          struct evkeyvalq *headers);

/* The upstream refused `r` unprocessed: give its connection back, and put it back at
 * the head of the queue to go again after the pause (its tokens stay spent). */
void upstream_request_retry(struct upstream *u, struct pool_conn *conn, struct request *r);

/* Count a finished exchange for /status: an answer relayed (ok) or a failure (502/504). */
void upstream_count_outcome(struct upstream *u, int ok);

/* Answer every queued request with 503 `reason` (shutdown after drain_timeout). */
void upstream_flush_queue(struct upstream *u, const char *reason);

/* Observers. */
const struct conf_upstream *upstream_conf(const struct upstream *u);
const char *upstream_name(const struct upstream *u);
size_t upstream_queue_len(const struct upstream *u);
/* Waiters queued now in priority class `cls` (0..3). */
uint32_t upstream_queue_len_class(const struct upstream *u, unsigned cls);
uint32_t upstream_in_flight(const struct upstream *u);
const struct upstream_stats *upstream_stats(const struct upstream *u);
int upstream_is_tls(const struct upstream *u);
/* A pause in force now (the upstream's Retry-After, or a spent RateLimit budget): its
 * cause ("429 Retry-After", "503 Retry-After", "429 (no Retry-After: 1 s)", "RateLimit
 * r=0"), the time left, and the key it holds (NULL: every key). 0 when none. */
int upstream_pause_info(const struct upstream *u, uint64_t now_ns, const char **cause,
                        uint64_t *left_ns, const char **key, size_t *key_len);
/* Connections of the pool: idle, and lent to requests in flight. */
uint32_t upstream_pool_idle(const struct upstream *u);
uint32_t upstream_pool_lent(const struct upstream *u);

/* The lease client of limit `limit_index` when it is a shared budget, else NULL. */
struct shared_user;
const struct shared_user *upstream_shared_user(const struct upstream *u, size_t limit_index);
/* The dispatcher, for read-only observers (limiter/dispatch.h): metrics, status page. */
const struct dispatch *upstream_dispatch(const struct upstream *u);

#endif
