/*
 * proxy/upstream: queue, dispatcher timer and connection pool of one upstream.
 *
 * The data path through here:
 *   upstream_submit ─> dispatch_submit ─(QUEUED)─> upstream_kick
 *   upstream_kick: expired waiters -> 503 deadline; ready waiters -> forward_start
 *                  (each with a pooled connection); then arm the ONE timer for
 *                  dispatch_wake_ns(): the next token or the head's deadline.
 *   upstream_request_done: connection back to the pool, dispatch_done, and the timer
 *                  activated at once so the kick runs outside the evhttp callback.
 *
 * Invariants
 *   - Exactly one timer per upstream, armed iff the queue is non-empty (or a kick is pending).
 *   - Connections belong to the pool (proxy/pool): idle there, or lent to exactly one
 *     in-flight request.
 */
#include "proxy/upstream.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <string.h>
#include <time.h>

#include "conf/conf.h"
#include "limiter/dispatch.h"
#include "proxy/clock.h"
#include "proxy/feedback.h"
#include "proxy/forward.h"
#include "proxy/log.h"
#include "proxy/pool.h"
#include "proxy/request.h"
#include "proxy/confgen.h"
#include "proxy/server.h"
#include "proxy/shared.h"
#include "proxy/tls.h"

struct upstream {
    struct server *server;
    const struct conf_upstream *conf;
    struct dispatch *dispatch;
    struct event *timer; /* the dispatcher's one wake-up */
    struct tls_ctx *tls; /* https upstreams: the client context (held) */
    struct pool *pool;   /* keep-alive connections */
    struct shared_user *shared[DISPATCH_MAX_LIMITS]; /* limit i shared: its lease client */
    struct upstream_stats stats;
    /* The last pause the upstream asked for, for the dashboard: why, until when, whose. */
    const char *pause_cause;
    uint64_t pause_until_ns;
    char pause_key[256];
    uint16_t pause_key_len;
    uint32_t queued_by_class[DISPATCH_MAX_CLASSES]; /* waiters queued now, per priority class */
    struct confgen *retired_gen; /* retired by a reload: the config `conf` points into */
};

/* Everything a reload needs to change an upstream, built before anything changes. */
struct upstream_change {
    const struct conf_upstream *conf;
    struct tls_ctx *tls;  /* new client context (https), or NULL */
    int endpoint_changed; /* url or TLS settings differ: drop idle connections */
};

static void kick(struct upstream *u, const struct request *submitted, int *released);

static void upstream_kick(struct upstream *u) { kick(u, NULL, NULL); }

static void timer_cb(evutil_socket_t fd, short what, void *arg) { upstream_kick(arg); }

/* Per-class queue depth follows the waiter in and out of the queue. */
static void queue_entered(struct upstream *u, const struct waiter *w)
{
    u->queued_by_class[w->prio_class % DISPATCH_MAX_CLASSES]++;
}

static void queue_left(struct upstream *u, const struct waiter *w)
{
    uint32_t *n = &u->queued_by_class[w->prio_class % DISPATCH_MAX_CLASSES];
    if (*n > 0)
        (*n)--;
}

uint32_t upstream_queue_len_class(const struct upstream *u, unsigned cls)
{
    return cls < DISPATCH_MAX_CLASSES ? u->queued_by_class[cls] : 0;
}

/* The fair-queuing part of the dispatcher's config, from the upstream's `fairness:`. */
static void fill_fair_config(const struct conf_upstream *cu, struct dispatch_limit *key_limits,
                             struct dispatch_fair_config *fc)
{
    const struct conf_fairness *cf = &cu->fairness;
    size_t i;

    memset(fc, 0, sizeof(*fc));
    for (i = 0; i < cf->nkey_limits && i < DISPATCH_MAX_KEY_LIMITS; i++) {
        key_limits[i].rate_per_sec = cf->key_limits[i].rate_per_sec;
        key_limits[i].burst_tokens = cf->key_limits[i].burst_tokens;
    }
    fc->key_limits = i ? key_limits : NULL;
    fc->nkey_limits = i;
    fc->max_keys = cf->max_keys;
    fc->key_queue_share = cf->key_queue_share;
    fc->key_idle_ns = cf->key_idle_ms * NS_PER_MS;
    fc->priority_classes = cf->priority_classes;
    fc->priority_guard = cf->starvation_guard;
    /* Keys come from clients: a secret seed keeps them from choosing colliding ones. */
    if (getrandom(fc->key_hash_seed, sizeof(fc->key_hash_seed), 0) !=
        (ssize_t)sizeof(fc->key_hash_seed))
        fc->key_hash_seed[0] = fc->key_hash_seed[1] = 0; /* the limiter's built-in seed */
}

/* Which limits are shared budgets (proxy/shared leases their slots from Redis). */
static void fill_shared_config(const struct server *s, const struct conf_upstream *cu,
                               struct dispatch_shared_config *sc)
{
    size_t i;

    memset(sc, 0, sizeof(*sc));
    for (i = 0; i < cu->nlimits && i < DISPATCH_MAX_LIMITS; i++)
        if (cu->limits[i].shared != NULL)
            sc->limits |= 1u << i;
    sc->horizon_ns = s->shared != NULL ? shared_horizon_ns(s->shared) : 0;
}

static void shared_wake(void *arg)
{
    struct upstream *u = arg;
    event_active(u->timer, EV_TIMEOUT, 1);
}

static void shared_users_free(struct upstream *u)
{
    size_t i;

    for (i = 0; i < DISPATCH_MAX_LIMITS; i++) {
        shared_user_free(u->shared[i]);
        u->shared[i] = NULL;
    }
}

/* A lease client for each shared limit of u->conf. Without a store (no shared section
 * made, or out of memory) a shared limit paces locally at its own rate. */
static void shared_users_make(struct upstream *u)
{
    const struct conf_upstream *cu = u->conf;
    uint64_t now = clock_now_ns();
    size_t i;

    for (i = 0; i < cu->nlimits && i < DISPATCH_MAX_LIMITS; i++) {
        if (cu->limits[i].shared == NULL)
            continue;
        if (u->server->shared != NULL)
            u->shared[i] =
                shared_user_new(u->server->shared, cu->limits[i].shared, cu->name, u->dispatch, i,
                                cu->limits[i].burst_tokens, shared_wake, u);
        if (u->shared[i] == NULL) {
            log_error("upstream %s: budget %s: no client for Redis: pacing locally", cu->name,
                      cu->limits[i].shared);
            dispatch_lease_fallback(u->dispatch, i, now);
        }
    }
}

static void fill_dispatch_config(const struct conf_upstream *cu, struct dispatch_limit *limits,
                                 struct dispatch_config *dc)
{
    size_t i;

    for (i = 0; i < cu->nlimits && i < DISPATCH_MAX_LIMITS; i++) {
        limits[i].rate_per_sec = cu->limits[i].rate_per_sec;
        limits[i].burst_tokens = cu->limits[i].burst_tokens;
    }
    dc->limits = limits;
    dc->nlimits = i;
    dc->max_in_flight = cu->max_in_flight;
    dc->queue_size = cu->queue_size;
    dc->max_wait_ns = cu->max_wait_ms * NS_PER_MS;
}

struct upstream *upstream_new(struct server *s, const struct conf_upstream *cu)
{
    struct dispatch_limit limits[DISPATCH_MAX_LIMITS], key_limits[DISPATCH_MAX_KEY_LIMITS];
    struct dispatch_config dc;
    struct dispatch_fair_config fc;
    struct dispatch_shared_config sc;
    struct upstream *u = calloc(1, sizeof(*u));

    if (u == NULL)
        return NULL;
    u->server = s;
    u->conf = cu;
    fill_dispatch_config(cu, limits, &dc);
    fill_fair_config(cu, key_limits, &fc);
    fill_shared_config(s, cu, &sc);
    u->dispatch = dispatch_new_shared(&dc, &fc, &sc, clock_now_ns());
    u->timer = evtimer_new(s->base, timer_cb, u);
    if (cu->https) {
        char err[512];
        u->tls = tls_client_new(s->conf, cu, err, sizeof(err));
        if (u->tls == NULL) {
            log_error("%s", err);
            upstream_free(u);
            return NULL;
        }
        if (!cu->tls.verify)
            log_warn("upstream %s: tls.verify is false: the upstream's certificate is NOT checked",
                     cu->name);
    }
    u->pool = pool_new(s->base, s->dns, cu, u->tls);
    if (u->dispatch == NULL || u->timer == NULL || u->pool == NULL) {
        log_error("upstream %s: cannot create (invalid limits or out of memory)", cu->name);
        upstream_free(u);
        return NULL;
    }
    shared_users_make(u);
    return u;
}

void upstream_free(struct upstream *u)
{
    if (u == NULL)
        return;
    pool_free(u->pool);
    shared_users_free(u); /* before the dispatcher whose leases they feed */
    if (u->timer != NULL)
        event_free(u->timer);
    dispatch_free(u->dispatch);
    tls_ctx_release(u->tls);
    confgen_release(u->retired_gen);
    free(u);
}

const struct conf_upstream *upstream_conf(const struct upstream *u) { return u->conf; }
const char *upstream_name(const struct upstream *u) { return u->conf->name; }
size_t upstream_queue_len(const struct upstream *u) { return dispatch_queue_len(u->dispatch); }
uint32_t upstream_in_flight(const struct upstream *u) { return dispatch_in_flight(u->dispatch); }
const struct upstream_stats *upstream_stats(const struct upstream *u) { return &u->stats; }
int upstream_is_tls(const struct upstream *u) { return u->tls != NULL; }
const struct dispatch *upstream_dispatch(const struct upstream *u) { return u->dispatch; }

/* Whole seconds for Retry-After: rounded up, at least 1; 0 (no header) when the
 * dispatcher says the request can never be admitted (cost above a burst). */
static uint32_t retry_after_seconds(uint64_t ns)
{
    uint64_t s;

    if (ns == DISPATCH_NEVER)
        return 0;
    s = ns / NS_PER_SEC + (ns % NS_PER_SEC != 0);
    if (s < 1)
        s = 1;
    if (s > 86400)
        s = 86400;
    return (uint32_t)s;
}

void upstream_submit(struct upstream *u, struct request *r)
{
    struct dispatch_admission adm;
    uint64_t now = clock_now_ns();
    uint64_t retry_ns;
    enum dispatch_admit verdict;
    int released = 0;

    memset(&adm, 0, sizeof(adm));
    verdict = dispatch_submit_key(u->dispatch, &r->waiter, r->key_len ? r->key : NULL, r->key_len,
                                  now, &adm);
    retry_ns = adm.retry_after_ns;
    if (verdict == DISPATCH_FULL && adm.key_full) {
        u->stats.refused_full++;
        request_reply_error(r, 503, "key_queue_full", retry_after_seconds(retry_ns),
                            "this key already holds its share of upstream '%s' queue (%u)",
                            u->conf->name, u->conf->fairness.key_queue_share);
        return;
    }
    if (verdict == DISPATCH_QUEUED && r->start_by_ns != 0 &&
        now + adm.predicted_wait_ns > r->start_by_ns) {
        /* A part of an aggregate that could not go before the aggregate's deadline: say
         * so now, rather than hold a place (and a token later) for nothing. */
        dispatch_cancel(u->dispatch, &r->waiter);
        u->stats.refused_late++;
        request_reply_error(r, 503, "deadline", retry_after_seconds(adm.predicted_wait_ns),
                            "upstream '%s' predicted wait %llums is past the aggregate's deadline",
                            u->conf->name, (unsigned long long)(adm.predicted_wait_ns / NS_PER_MS));
        return;
    }
    switch (verdict) {
    case DISPATCH_QUEUED:
        u->stats.admitted++;
        queue_entered(u, &r->waiter);
        request_set_state(r, REQUEST_QUEUED);
        kick(u, r, &released);
        /* Still queued after the kick: watch for the client leaving. A request released
         * at once is not watched, which keeps the pass-through path free of extra
         * syscalls; its upstream response timeout bounds it. */
        if (!released && request_watch_client(r) != 0)
            request_log(r, LOG_LEVEL_WARN, "cannot watch the client socket");
        return;
    case DISPATCH_FULL:
        u->stats.refused_full++;
        request_reply_error(r, 503, "queue_full", retry_after_seconds(retry_ns),
                            "upstream '%s' queue is full (%zu waiting)", u->conf->name,
                            dispatch_queue_len(u->dispatch));
        return;
    case DISPATCH_LATE:
        u->stats.refused_late++;
        request_reply_error(r, 503, "deadline", retry_after_seconds(retry_ns),
                            "upstream '%s' predicted wait exceeds max_wait %llums", u->conf->name,
                            (unsigned long long)u->conf->max_wait_ms);
        return;
    }
}

void upstream_withdraw(struct upstream *u, struct request *r)
{
    if (r->waiter.queued)
        queue_left(u, &r->waiter);
    dispatch_cancel(u->dispatch, &r->waiter);
    u->stats.withdrawn++;
    /* The head may have changed: re-arm for the new head's time. */
    event_active(u->timer, EV_TIMEOUT, 1);
}

void upstream_request_done(struct upstream *u, struct pool_conn *conn, int reusable)
{
    pool_put(u->pool, conn, reusable);
    dispatch_done(u->dispatch);
    event_active(u->timer, EV_TIMEOUT, 1);
}

void upstream_request_retry(struct upstream *u, struct pool_conn *conn, struct request *r)
{
    pool_put(u->pool, conn, 1);
    dispatch_requeue_head(u->dispatch, &r->waiter);
    queue_entered(u, &r->waiter);
    u->stats.retried++;
    request_set_state(r, REQUEST_QUEUED);
    r->released_ns = 0;
    r->status = 0;
    r->reason = NULL;
    if (request_watch_client(r) != 0)
        request_log(r, LOG_LEVEL_WARN, "cannot watch the client socket");
    event_active(u->timer, EV_TIMEOUT, 1);
}

int64_t upstream_feedback(struct upstream *u, const char *key, size_t key_len, int code,
                          struct evkeyvalq *h)
{
    struct feedback_headers fh = {
        .retry_after = evhttp_find_header(h, "Retry-After"),
        .ratelimit = evhttp_find_header(h, "RateLimit"),
        .ratelimit_remaining = evhttp_find_header(h, "RateLimit-Remaining"),
        .ratelimit_reset = evhttp_find_header(h, "RateLimit-Reset"),
        .x_ratelimit_remaining = evhttp_find_header(h, "X-RateLimit-Remaining"),
        .x_ratelimit_reset = evhttp_find_header(h, "X-RateLimit-Reset"),
    };
    struct feedback fb;
    uint64_t now = clock_now_ns();
    uint64_t pause_ms;
    int refused;

    if (!u->conf->feedback)
        return -1;
    feedback_parse(&fh, time(NULL), &fb);
    if (fb.has_budget) {
        dispatch_set_budget(u->dispatch, fb.remaining, now + fb.reset_ms * NS_PER_MS);
        u->stats.budgets++;
    }
    refused = code == 429 || (code == 503 && fb.has_retry_after);
    if (!refused)
        return -1;
    pause_ms = fb.has_retry_after ? fb.retry_after_ms : 1000;
    if (pause_ms > u->conf->feedback_max_pause_ms) {
        /* An upstream cannot stop sluice for longer than the operator allows. */
        log_warn("upstream %s: answered %d asking for a %llums pause; pausing for "
                 "feedback.max_pause (%llums) instead",
                 u->conf->name, code, (unsigned long long)pause_ms,
                 (unsigned long long)u->conf->feedback_max_pause_ms);
        pause_ms = u->conf->feedback_max_pause_ms;
        u->stats.pauses_clamped++;
    }
    if (pause_ms > 0) {
        /* scope key: the upstream limits each key on its own (one token per tenant), so
         * one tenant's 429 must not hold up the others. */
        int per_key = u->conf->feedback_scope == CONF_FEEDBACK_KEY && key_len > 0;
        if (per_key) {
            dispatch_pause_key_until(u->dispatch, key, key_len, now + pause_ms * NS_PER_MS);
        } else {
            dispatch_pause_until(u->dispatch, now + pause_ms * NS_PER_MS);
            /* A shared budget: every instance stops for it too. */
            for (size_t i = 0; i < DISPATCH_MAX_LIMITS; i++)
                if (u->shared[i] != NULL)
                    shared_user_pause(u->shared[i], pause_ms);
        }
        u->stats.paused++;
        u->pause_cause = !fb.has_retry_after ? "429 (no Retry-After: 1 s)"
                         : code == 429       ? "429 Retry-After"
                                             : "503 Retry-After";
        u->pause_until_ns = now + pause_ms * NS_PER_MS;
        u->pause_key_len = per_key ? (uint16_t)(key_len < sizeof(u->pause_key) ? key_len : 0) : 0;
        if (u->pause_key_len)
            memcpy(u->pause_key, key, u->pause_key_len);
        log_info("upstream %s: answered %d; pausing releases%s for %llums", u->conf->name, code,
                 per_key ? " of that key" : "", (unsigned long long)pause_ms);
    }
    event_active(u->timer, EV_TIMEOUT, 1);
    return (int64_t)pause_ms;
}

/* Release what may go, expire what waited too long, arm the timer. `submitted` (may be
 * NULL): a request just queued; *released tells whether this kick let it go. */
static void kick(struct upstream *u, const struct request *submitted, int *released)
{
    struct waiter *w;
    struct request *r;
    struct pool_conn *conn;
    uint64_t now = clock_now_ns();
    uint64_t wake;
    struct timeval tv;

    pool_reap(u->pool);
    while ((w = dispatch_next(u->dispatch, now)) != NULL) {
        queue_left(u, w);
        r = w->data;
        if (r == submitted)
            *released = 1;
        r->released_ns = now;
        u->stats.released++;
        conn = pool_get(u->pool, NULL, NULL);
        if (conn == NULL) {
            dispatch_done(u->dispatch);
            request_reply_error(r, 502, "upstream_connect", 0,
                                "cannot create a connection to upstream '%s'", u->conf->name);
            continue;
        }
        request_set_state(r, REQUEST_IN_FLIGHT);
        forward_start(r, conn);
    }
    /* After releasing: a waiter whose token comes due exactly at its deadline goes. */
    while ((w = dispatch_expired(u->dispatch, now)) != NULL) {
        uint64_t paused;
        queue_left(u, w);
        r = w->data;
        u->stats.expired++;
        /* Paused by the upstream: coming back before the pause ends is pointless. */
        paused = dispatch_paused_until(u->dispatch);
        if (r->key_len > 0) {
            uint64_t kp = dispatch_key_paused_until(u->dispatch, r->key, r->key_len);
            paused = kp > paused ? kp : paused;
        }
        request_reply_error(r, 503, "deadline",
                            retry_after_seconds(paused > now ? paused - now : NS_PER_SEC),
                            "waited %llums in upstream '%s' queue (max_wait)",
                            (unsigned long long)request_queue_wait_ms(r), u->conf->name);
    }
    /* Shared budgets: ask Redis for slots when the leases run low (one call per lease,
     * never one per request; O(1) when nothing is needed). */
    for (size_t i = 0; i < DISPATCH_MAX_LIMITS; i++)
        if (u->shared[i] != NULL)
            shared_user_kick(u->shared[i]);
    wake = dispatch_wake_ns(u->dispatch, now);
    if (wake == DISPATCH_NEVER) {
        evtimer_del(u->timer);
        if (u->retired_gen != NULL && upstream_idle(u) && u->server->reap != NULL)
            event_active(u->server->reap, EV_TIMEOUT, 1);
        return;
    }
    tv = clock_ns_timeval(wake > now ? wake - now : 0);
    evtimer_add(u->timer, &tv);
}

void upstream_count_outcome(struct upstream *u, int ok)
{
    if (ok)
        u->stats.responses++;
    else
        u->stats.failures++;
}

int upstream_idle(const struct upstream *u)
{
    return dispatch_queue_len(u->dispatch) == 0 && dispatch_in_flight(u->dispatch) == 0 &&
           pool_lent(u->pool) == 0;
}

static int same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int same_endpoint(const struct conf_upstream *a, const struct conf_upstream *b)
{
    const struct conf_tls_client *ta = &a->tls, *tb = &b->tls;

    return a->https == b->https && a->port == b->port && strcmp(a->host, b->host) == 0 &&
           ta->verify == tb->verify && ta->min_version == tb->min_version &&
           same_str(ta->ca_file, tb->ca_file) && same_str(ta->server_name, tb->server_name) &&
           same_str(ta->cert, tb->cert) && same_str(ta->key, tb->key);
}

struct upstream_change *upstream_prepare(struct upstream *u, const struct conf_upstream *cu,
                                         char *err, size_t errlen)
{
    struct dispatch_limit limits[DISPATCH_MAX_LIMITS], key_limits[DISPATCH_MAX_KEY_LIMITS];
    struct dispatch_config dc;
    struct dispatch_fair_config fc;
    struct dispatch_shared_config sc;
    struct upstream_change *ch = calloc(1, sizeof(*ch));
    struct dispatch *probe;

    if (ch == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ch->conf = cu;
    /* The dispatcher's reconfigure is all or nothing, but a reload must not fail half
     * way through committing: prove the new limits valid on a scratch dispatcher now. */
    fill_dispatch_config(cu, limits, &dc);
    fill_fair_config(cu, key_limits, &fc);
    fill_shared_config(u->server, cu, &sc);
    probe = dispatch_new_shared(&dc, &fc, &sc, clock_now_ns());
    if (probe == NULL) {
        snprintf(err, errlen, "upstreams.%s: limits cannot be represented", cu->name);
        goto fail;
    }
    dispatch_free(probe);
    ch->endpoint_changed = !same_endpoint(u->conf, cu);
    /* Certificates are read again on every reload, so renewed files take effect. */
    if (cu->https && (ch->tls = tls_client_new(u->server->conf, cu, err, errlen)) == NULL)
        goto fail;
    return ch;
fail:
    upstream_change_free(ch);
    return NULL;
}

void upstream_change_free(struct upstream_change *ch)
{
    if (ch == NULL)
        return;
    tls_ctx_release(ch->tls);
    free(ch);
}

void upstream_commit(struct upstream *u, struct upstream_change *ch)
{
    struct dispatch_limit limits[DISPATCH_MAX_LIMITS], key_limits[DISPATCH_MAX_KEY_LIMITS];
    struct dispatch_config dc;
    struct dispatch_fair_config fc;
    struct dispatch_shared_config sc;
    uint32_t renamed = 0;
    size_t i;

    fill_dispatch_config(ch->conf, limits, &dc);
    fill_fair_config(ch->conf, key_limits, &fc);
    fill_shared_config(u->server, ch->conf, &sc);
    /* A limit that stays shared keeps its lease (held slots stay good), unless it now
     * names another budget: those slots belong to the old one, so it starts afresh. */
    for (i = 0; i < ch->conf->nlimits && i < u->conf->nlimits && i < DISPATCH_MAX_LIMITS; i++)
        if (ch->conf->limits[i].shared != NULL && u->conf->limits[i].shared != NULL &&
            strcmp(ch->conf->limits[i].shared, u->conf->limits[i].shared) != 0)
            renamed |= 1u << i;
    shared_users_free(u);
    /* Cannot fail: upstream_prepare proved these limits valid. */
    if (renamed != 0) {
        struct dispatch_shared_config local = sc;
        local.limits &= ~renamed;
        if (dispatch_reconfigure_shared(u->dispatch, &dc, &fc, &local, clock_now_ns()) != 0)
            log_error("upstream %s: reconfigure failed unexpectedly", u->conf->name);
    }
    if (dispatch_reconfigure_shared(u->dispatch, &dc, &fc, &sc, clock_now_ns()) != 0)
        log_error("upstream %s: reconfigure failed unexpectedly; old limits kept", u->conf->name);
    /* The pool takes its own reference on the new context; in-flight connections keep
     * theirs on the old one until they close. */
    pool_reconfigure(u->pool, ch->conf, ch->endpoint_changed, ch->tls);
    tls_ctx_release(u->tls);
    u->tls = ch->tls;
    ch->tls = NULL;
    u->conf = ch->conf;
    shared_users_make(u);
    upstream_change_free(ch);
    /* New rates: re-arm the timer for the head's new due time. */
    event_active(u->timer, EV_TIMEOUT, 1);
}

void upstream_retire(struct upstream *u, struct confgen *gen)
{
    confgen_hold(gen);
    u->retired_gen = gen;
    pool_drop_idle(u->pool);
    event_active(u->timer, EV_TIMEOUT, 1);
}

void upstream_flush_queue(struct upstream *u, const char *reason)
{
    struct waiter *w;

    while ((w = dispatch_pop(u->dispatch)) != NULL) {
        queue_left(u, w);
        request_reply_error(w->data, 503, reason, 0,
                            "sluice is shutting down; the request was not sent to '%s'",
                            u->conf->name);
    }
    evtimer_del(u->timer);
}

const struct shared_user *upstream_shared_user(const struct upstream *u, size_t limit_index)
{
    return limit_index < DISPATCH_MAX_LIMITS ? u->shared[limit_index] : NULL;
}

int upstream_pause_info(const struct upstream *u, uint64_t now_ns, const char **cause,
                        uint64_t *left_ns, const char **key, size_t *key_len)
{
    uint64_t remaining = 0, reset = 0;

    if (u->pause_until_ns > now_ns) {
        *cause = u->pause_cause;
        *left_ns = u->pause_until_ns - now_ns;
        *key = u->pause_key_len ? u->pause_key : NULL;
        *key_len = u->pause_key_len;
        return 1;
    }
    /* A remaining budget of 0 holds releases until its reset just as well. */
    if (dispatch_budget(u->dispatch, now_ns, &remaining, &reset) && remaining == 0 &&
        reset > now_ns) {
        *cause = "RateLimit r=0";
        *left_ns = reset - now_ns;
        *key = NULL;
        *key_len = 0;
        return 1;
    }
    return 0;
}

uint32_t upstream_pool_idle(const struct upstream *u) { return pool_idle(u->pool); }
uint32_t upstream_pool_lent(const struct upstream *u) { return pool_lent(u->pool); }
