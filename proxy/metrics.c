/*
 * proxy/metrics: counters and histograms kept per label set, gauges read at render
 * time, all rendered in the Prometheus text format 0.0.4. See metrics.h.
 *
 * Storage: two tables of series, each an array in first-seen order (so the exposition
 * is stable from one scrape to the next) indexed by a small open-addressing hash of
 * slot numbers:
 *   reqs     (upstream, route, status, reason) -> count
 *   ups      upstream name -> queue-wait and latency histograms, rejections by reason
 * Label strings are copied when a set is first seen; after that an update is a hash,
 * a probe or two and increments: no allocation.
 *
 * Invariants
 *   - Each table's index has a power-of-two capacity at least twice its entries, so a
 *     probe always ends at an empty slot.
 *   - Histogram buckets hold per-bucket (not cumulative) counts; the last is +Inf.
 *     Cumulative counts are computed when rendering.
 */
#include "proxy/metrics.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "limiter/dispatch.h"
#include "limiter/lease.h"
#include "proxy/clock.h"
#include "proxy/frontend.h"
#include "proxy/server.h"
#include "proxy/shared.h"
#include "proxy/upstream.h"

/* Upper bounds of the histogram buckets, in ns; the +Inf bucket follows them. */
static const uint64_t bucket_bounds_ns[] = {
    1000000ull,    5000000ull,     10000000ull,    25000000ull,    50000000ull,
    100000000ull,  250000000ull,   500000000ull,   1000000000ull,  2500000000ull,
    5000000000ull, 10000000000ull, 30000000000ull, 60000000000ull,
};
static const char *const bucket_labels[] = {
    "0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
    "0.5",   "1",     "2.5",  "5",     "10",   "30",  "60",
};
#define NBOUNDS  (sizeof(bucket_bounds_ns) / sizeof(bucket_bounds_ns[0]))
#define NBUCKETS (NBOUNDS + 1)

/* Reasons counted as rejections (503 before reaching the upstream). */
#define METRICS_CLASSES 4 /* priority classes (limiter: DISPATCH_MAX_CLASSES) */

static const char *const rejection_reasons[] = {"queue_full", "deadline", "shutdown",
                                                "key_queue_full"};
#define NREJECTIONS (sizeof(rejection_reasons) / sizeof(rejection_reasons[0]))

struct histogram {
    uint64_t buckets[NBUCKETS]; /* per bucket, not cumulative; last is +Inf */
    uint64_t count;
    uint64_t sum_ns;
};

struct req_series {
    char *upstream, *route, *reason; /* owned copies; "" for none */
    int status;
    uint64_t hash;
    uint64_t count;
};

struct up_series {
    char *name; /* owned copy; "" for requests that never got an upstream */
    uint64_t hash;
    struct histogram queue_wait;
    struct histogram latency;
    uint64_t rejections[NREJECTIONS];
    uint64_t answers[5];                     /* finished requests by status class 1xx..5xx */
    uint64_t class_wait_ns[METRICS_CLASSES]; /* queue wait summed per priority class */
    uint64_t class_waits[METRICS_CLASSES];
};

/* Open-addressing index of slot numbers + 1 (0: empty) into a series array. */
struct index {
    uint32_t *slots;
    size_t cap; /* power of two, or 0 before the first insert */
};

/* Aggregate routes: few routes and parts (from the config), so a list each. */
struct agg_series {
    struct agg_series *next;
    char *route;
    uint64_t outcomes[3]; /* complete, partial, failed */
    uint64_t took_sum_ns, took_count;
};

struct aggpart_series {
    struct aggpart_series *next;
    char *route, *part, *reason;
    uint64_t count;
};

static const char *const agg_outcomes[3] = {"complete", "partial", "failed"};

struct metrics {
    uint64_t refused_connection_limit, refused_header_timeout; /* before routing */
    struct agg_series *aggs;
    struct aggpart_series *aggparts;
    struct req_series *reqs;
    size_t nreqs, reqs_cap;
    struct index reqs_index;
    struct up_series *ups;
    size_t nups, ups_cap;
    struct index ups_index;
    uint64_t reloads_ok, reloads_failed;
    int64_t last_reload_unix; /* last successful load (start-up counts), unix seconds */
    int last_reload_ok;       /* outcome of the last attempt */
};

/* ---------------------------------------------------------------- hashing */

static uint64_t hash_str(uint64_t h, const char *s)
{
    /* FNV-1a, with a terminating byte so ("ab","c") and ("a","bc") differ. */
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    h ^= 0xff;
    h *= 1099511628211ull;
    return h;
}

static uint64_t hash_req(const char *upstream, const char *route, int status, const char *reason)
{
    uint64_t h = 14695981039346656037ull;

    h = hash_str(h, upstream);
    h = hash_str(h, route);
    h = hash_str(h, reason);
    h ^= (uint64_t)(unsigned)status;
    h *= 1099511628211ull;
    return h;
}

static uint64_t hash_name(const char *name) { return hash_str(14695981039346656037ull, name); }

/* Rebuild `ix` at `cap` slots for series 0..n-1. Returns 0 or -1 (ix unchanged). */
static int index_rebuild(struct index *ix, size_t cap, uint64_t (*hash_at)(const void *, size_t),
                         const void *series, size_t n)
{
    uint32_t *slots = calloc(cap, sizeof(*slots));
    size_t i;

    if (slots == NULL)
        return -1;
    for (i = 0; i < n; i++) {
        size_t j = (size_t)hash_at(series, i) & (cap - 1);
        while (slots[j] != 0)
            j = (j + 1) & (cap - 1);
        slots[j] = (uint32_t)(i + 1);
    }
    free(ix->slots);
    ix->slots = slots;
    ix->cap = cap;
    return 0;
}

static uint64_t req_hash_at(const void *series, size_t i)
{
    return ((const struct req_series *)series)[i].hash;
}

static uint64_t up_hash_at(const void *series, size_t i)
{
    return ((const struct up_series *)series)[i].hash;
}

/* Room for entry n in an array of `elem`-sized entries: returns the (maybe moved) array,
 * or NULL (the old one still valid). */
static void *grow_array(void *array, size_t *cap, size_t n, size_t elem)
{
    size_t ncap;
    void *grown;

    if (n < *cap)
        return array;
    ncap = *cap ? *cap * 2 : 16;
    grown = realloc(array, ncap * elem);
    if (grown != NULL)
        *cap = ncap;
    return grown;
}

/* Keep the index at most half full once entry n is added. */
static int grow_index(struct index *ix, size_t n, uint64_t (*hash_at)(const void *, size_t),
                      const void *series)
{
    size_t icap = ix->cap ? ix->cap : 32;

    while ((n + 1) * 2 > icap)
        icap *= 2;
    if (icap == ix->cap)
        return 0;
    return index_rebuild(ix, icap, hash_at, series, n);
}

static void index_put(struct index *ix, uint64_t hash, size_t slot_no)
{
    size_t j = (size_t)hash & (ix->cap - 1);

    while (ix->slots[j] != 0)
        j = (j + 1) & (ix->cap - 1);
    ix->slots[j] = (uint32_t)(slot_no + 1);
}

/* ---------------------------------------------------------------- lookups */

static struct req_series *req_get(struct metrics *m, const char *upstream, const char *route,
                                  int status, const char *reason)
{
    uint64_t h = hash_req(upstream, route, status, reason);
    struct req_series *e, *grown;

    if (m->reqs_index.cap != 0) {
        size_t j = (size_t)h & (m->reqs_index.cap - 1);
        while (m->reqs_index.slots[j] != 0) {
            e = &m->reqs[m->reqs_index.slots[j] - 1];
            if (e->hash == h && e->status == status && strcmp(e->upstream, upstream) == 0 &&
                strcmp(e->route, route) == 0 && strcmp(e->reason, reason) == 0)
                return e;
            j = (j + 1) & (m->reqs_index.cap - 1);
        }
    }
    grown = grow_array(m->reqs, &m->reqs_cap, m->nreqs, sizeof(*m->reqs));
    if (grown == NULL)
        return NULL;
    m->reqs = grown;
    if (grow_index(&m->reqs_index, m->nreqs, req_hash_at, m->reqs) != 0)
        return NULL;
    e = &m->reqs[m->nreqs];
    memset(e, 0, sizeof(*e));
    e->upstream = strdup(upstream);
    e->route = strdup(route);
    e->reason = strdup(reason);
    if (e->upstream == NULL || e->route == NULL || e->reason == NULL) {
        free(e->upstream);
        free(e->route);
        free(e->reason);
        return NULL;
    }
    e->status = status;
    e->hash = h;
    index_put(&m->reqs_index, h, m->nreqs);
    m->nreqs++;
    return e;
}

static struct up_series *up_find(const struct metrics *m, const char *name, uint64_t h)
{
    if (m->ups_index.cap != 0) {
        size_t j = (size_t)h & (m->ups_index.cap - 1);
        while (m->ups_index.slots[j] != 0) {
            struct up_series *e = &m->ups[m->ups_index.slots[j] - 1];
            if (e->hash == h && strcmp(e->name, name) == 0)
                return e;
            j = (j + 1) & (m->ups_index.cap - 1);
        }
    }
    return NULL;
}

static struct up_series *up_get(struct metrics *m, const char *name)
{
    uint64_t h = hash_name(name);
    struct up_series *e = up_find(m, name, h), *grown;

    if (e != NULL)
        return e;
    grown = grow_array(m->ups, &m->ups_cap, m->nups, sizeof(*m->ups));
    if (grown == NULL)
        return NULL;
    m->ups = grown;
    if (grow_index(&m->ups_index, m->nups, up_hash_at, m->ups) != 0)
        return NULL;
    e = &m->ups[m->nups];
    memset(e, 0, sizeof(*e));
    e->name = strdup(name);
    if (e->name == NULL)
        return NULL;
    e->hash = h;
    index_put(&m->ups_index, h, m->nups);
    m->nups++;
    return e;
}

/* ---------------------------------------------------------------- updates */

struct metrics *metrics_new(void) { return calloc(1, sizeof(struct metrics)); }

void metrics_free(struct metrics *m)
{
    size_t i;

    if (m == NULL)
        return;
    for (i = 0; i < m->nreqs; i++) {
        free(m->reqs[i].upstream);
        free(m->reqs[i].route);
        free(m->reqs[i].reason);
    }
    for (i = 0; i < m->nups; i++)
        free(m->ups[i].name);
    while (m->aggs != NULL) {
        struct agg_series *a = m->aggs;
        m->aggs = a->next;
        free(a->route);
        free(a);
    }
    while (m->aggparts != NULL) {
        struct aggpart_series *p = m->aggparts;
        m->aggparts = p->next;
        free(p->route);
        free(p->part);
        free(p->reason);
        free(p);
    }
    free(m->reqs);
    free(m->reqs_index.slots);
    free(m->ups);
    free(m->ups_index.slots);
    free(m);
}

static void histogram_observe(struct histogram *h, uint64_t ns)
{
    size_t i = 0;

    while (i < NBOUNDS && ns > bucket_bounds_ns[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum_ns += ns;
}

void metrics_request_done(struct metrics *m, const char *upstream, const char *route, int status,
                          const char *reason, uint64_t queue_wait_ns, uint64_t upstream_ns,
                          int prio_class)
{
    struct req_series *rs;
    struct up_series *us;
    size_t i;

    if (upstream == NULL)
        upstream = "";
    if (route == NULL)
        route = "";
    if (reason == NULL)
        reason = "";
    rs = req_get(m, upstream, route, status, reason);
    if (rs != NULL)
        rs->count++;
    if (*upstream == '\0') {
        if (strcmp(reason, "connection_limit") == 0)
            m->refused_connection_limit++;
        else if (strcmp(reason, "header_timeout") == 0)
            m->refused_header_timeout++;
        /* Refused before routing: only a 503 (shutdown) has anything for the "" series. */
        if (status != 503)
            return;
    }
    /* Per-upstream series (every request that reached one counts in answers[]). */
    us = up_get(m, upstream);
    if (us == NULL)
        return;
    if (queue_wait_ns != METRICS_NONE) {
        histogram_observe(&us->queue_wait, queue_wait_ns);
        if (prio_class >= 0 && prio_class < METRICS_CLASSES) {
            us->class_wait_ns[prio_class] += queue_wait_ns;
            us->class_waits[prio_class]++;
        }
    }
    if (upstream_ns != METRICS_NONE)
        histogram_observe(&us->latency, upstream_ns);
    if (status >= 100 && status <= 599)
        us->answers[status / 100 - 1]++;
    if (status == 503)
        for (i = 0; i < NREJECTIONS; i++)
            if (strcmp(reason, rejection_reasons[i]) == 0)
                us->rejections[i]++;
}

void metrics_aggregate_done(struct metrics *m, const char *route, const char *outcome,
                            uint64_t took_ns)
{
    struct agg_series *a;
    size_t i;

    for (a = m->aggs; a != NULL && strcmp(a->route, route) != 0; a = a->next)
        ;
    if (a == NULL) {
        a = calloc(1, sizeof(*a));
        if (a == NULL || (a->route = strdup(route)) == NULL) {
            free(a);
            return;
        }
        a->next = m->aggs;
        m->aggs = a;
    }
    for (i = 0; i < 3; i++)
        if (strcmp(outcome, agg_outcomes[i]) == 0)
            a->outcomes[i]++;
    a->took_sum_ns += took_ns;
    a->took_count++;
}

void metrics_aggregate_part(struct metrics *m, const char *route, const char *part,
                            const char *reason)
{
    struct aggpart_series *p;

    for (p = m->aggparts; p != NULL; p = p->next)
        if (strcmp(p->route, route) == 0 && strcmp(p->part, part) == 0 &&
            strcmp(p->reason, reason) == 0)
            break;
    if (p == NULL) {
        p = calloc(1, sizeof(*p));
        if (p == NULL)
            return;
        p->route = strdup(route);
        p->part = strdup(part);
        p->reason = strdup(reason);
        if (p->route == NULL || p->part == NULL || p->reason == NULL) {
            free(p->route);
            free(p->part);
            free(p->reason);
            free(p);
            return;
        }
        p->next = m->aggparts;
        m->aggparts = p;
    }
    p->count++;
}

_Static_assert(NBUCKETS == METRICS_WAIT_BUCKETS, "metrics.h must know the bucket count");

void metrics_upstream_totals(const struct metrics *m, const char *upstream,
                             struct metrics_totals *out)
{
    const struct up_series *us = up_find(m, upstream, hash_name(upstream));

    memset(out, 0, sizeof(*out));
    if (us == NULL)
        return;
    memcpy(out->answers, us->answers, sizeof(out->answers));
    memcpy(out->refusals, us->rejections, sizeof(out->refusals));
    memcpy(out->wait_buckets, us->queue_wait.buckets, sizeof(out->wait_buckets));
}

uint64_t metrics_wait_bucket_bound_ns(size_t i)
{
    return i < NBOUNDS ? bucket_bounds_ns[i] : UINT64_MAX;
}

void metrics_client_refusals(const struct metrics *m, uint64_t *connection_limit,
                             uint64_t *header_timeout)
{
    *connection_limit = m->refused_connection_limit;
    *header_timeout = m->refused_header_timeout;
}

void metrics_config_loaded(struct metrics *m, int ok, int64_t when)
{
    if (ok) {
        m->reloads_ok++;
        m->last_reload_unix = when;
    } else {
        m->reloads_failed++;
    }
    m->last_reload_ok = ok != 0;
}

/* ---------------------------------------------------------------- rendering */

static void add_escaped(struct evbuffer *out, const char *s)
{
    const char *run = s;

    for (; *s != '\0'; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;
        if (esc == NULL)
            continue;
        evbuffer_add(out, run, (size_t)(s - run));
        evbuffer_add(out, esc, 2);
        run = s + 1;
    }
    evbuffer_add(out, run, (size_t)(s - run));
}

static void family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* `name{upstream="..."` without the closing brace. */
static void open_upstream(struct evbuffer *out, const char *name, const char *upstream)
{
    evbuffer_add_printf(out, "%s{upstream=\"", name);
    add_escaped(out, upstream);
    evbuffer_add(out, "\"", 1);
}

static void add_seconds(struct evbuffer *out, uint64_t ns)
{
    evbuffer_add_printf(out, "%" PRIu64 ".%09" PRIu64, ns / (uint64_t)NS_PER_SEC,
                        ns % (uint64_t)NS_PER_SEC);
}

static void add_double(struct evbuffer *out, double v)
{
    if (isnan(v))
        evbuffer_add_printf(out, "NaN");
    else if (isinf(v))
        evbuffer_add_printf(out, v > 0 ? "+Inf" : "-Inf");
    else
        evbuffer_add_printf(out, "%.10g", v);
}

static void render_histogram(struct evbuffer *out, const char *name, const char *upstream,
                             const struct histogram *h)
{
    uint64_t cum = 0;
    size_t i;

    for (i = 0; i < NBUCKETS; i++) {
        cum += h->buckets[i];
        evbuffer_add_printf(out, "%s_bucket{upstream=\"", name);
        add_escaped(out, upstream);
        evbuffer_add_printf(out, "\",le=\"%s\"} %" PRIu64 "\n",
                            i < NBOUNDS ? bucket_labels[i] : "+Inf", cum);
    }
    evbuffer_add_printf(out, "%s_sum{upstream=\"", name);
    add_escaped(out, upstream);
    evbuffer_add(out, "\"} ", 3);
    add_seconds(out, h->sum_ns);
    evbuffer_add_printf(out, "\n%s_count{upstream=\"", name);
    add_escaped(out, upstream);
    evbuffer_add_printf(out, "\"} %" PRIu64 "\n", h->count);
}

/* Is `name` one of the upstreams serving now? */
static int configured(const struct server *s, const char *name)
{
    size_t i;

    for (i = 0; i < s->nupstreams; i++)
        if (s->upstreams[i] != NULL && strcmp(upstream_name(s->upstreams[i]), name) == 0)
            return 1;
    return 0;
}

/* Histograms of every configured upstream (zero until it sees traffic), then of every
 * other upstream that has data (one removed by a reload keeps its history). */
static void render_histograms(const struct metrics *m, const struct server *s, struct evbuffer *out,
                              const char *name, int latency)
{
    static const struct histogram empty;
    size_t i;

    for (i = 0; i < s->nupstreams; i++) {
        const char *un;
        const struct up_series *us;
        if (s->upstreams[i] == NULL)
            continue;
        un = upstream_name(s->upstreams[i]);
        us = up_find(m, un, hash_name(un));
        render_histogram(out, name, un,
                         us == NULL ? &empty
                         : latency  ? &us->latency
                                    : &us->queue_wait);
    }
    for (i = 0; i < m->nups; i++) {
        const struct up_series *us = &m->ups[i];
        const struct histogram *h = latency ? &us->latency : &us->queue_wait;
        if (h->count > 0 && !configured(s, us->name))
            render_histogram(out, name, us->name, h);
    }
}

static int whole(double v) { return v >= 1 && fabs(v - nearbyint(v)) < 1e-9 * v; }

/* "10/s", "0.5/s", "100/m", "5000/h": per second when that takes at most three decimals,
 * else the unit in which the rate is a whole number, else per second as %g. */
static void format_rate(double rate, char *buf, size_t len)
{
    if (whole(rate * 1000) && rate < 1e12) {
        char *p;
        snprintf(buf, len, "%.3f", rate);
        p = buf + strlen(buf);
        while (p[-1] == '0')
            *--p = '\0';
        if (p[-1] == '.')
            *--p = '\0';
        snprintf(p, len - (size_t)(p - buf), "/s");
    } else if (whole(rate * 60)) {
        snprintf(buf, len, "%.0f/m", rate * 60);
    } else if (whole(rate * 3600)) {
        snprintf(buf, len, "%.0f/h", rate * 3600);
    } else {
        snprintf(buf, len, "%g/s", rate);
    }
}

void metrics_limit_label(const struct conf_upstream *cu, size_t li, char *buf, size_t len)
{
    char other[48];
    size_t j, dup = 0;

    format_rate(cu->limits[li].rate_per_sec, buf, len);
    for (j = 0; j < li; j++) {
        format_rate(cu->limits[j].rate_per_sec, other, sizeof(other));
        if (strcmp(other, buf) == 0)
            dup = 1;
    }
    /* Two limits with the same rate (different bursts) still need distinct series. */
    if (dup) {
        size_t n = strlen(buf);
        snprintf(buf + n, len - n, "#%zu", li + 1);
    }
}

void metrics_aggregates(const struct metrics *m, const struct metrics_aggregate_visitor *v)
{
    const struct agg_series *a;
    const struct aggpart_series *p;

    for (a = m->aggs; a != NULL; a = a->next)
        v->route(v->arg, a->route, a->outcomes, a->took_sum_ns, a->took_count);
    for (p = m->aggparts; p != NULL; p = p->next)
        v->part(v->arg, p->route, p->part, p->reason, p->count);
}

static void render_aggregates(const struct metrics *m, struct evbuffer *out)
{
    const struct agg_series *a;
    const struct aggpart_series *p;
    size_t i;

    if (m->aggs == NULL && m->aggparts == NULL)
        return;
    family(out, "sluice_aggregate_answers_total", "counter",
           "Answers of aggregate routes by outcome (complete, partial, failed).");
    for (a = m->aggs; a != NULL; a = a->next)
        for (i = 0; i < 3; i++) {
            evbuffer_add_printf(out, "sluice_aggregate_answers_total{route=\"");
            add_escaped(out, a->route);
            evbuffer_add_printf(out, "\",outcome=\"%s\"} %" PRIu64 "\n", agg_outcomes[i],
                                a->outcomes[i]);
        }
    family(out, "sluice_aggregate_duration_seconds", "summary",
           "Time from an aggregate request to its answer.");
    for (a = m->aggs; a != NULL; a = a->next) {
        evbuffer_add_printf(out, "sluice_aggregate_duration_seconds_sum{route=\"");
        add_escaped(out, a->route);
        evbuffer_add(out, "\"} ", 3);
        add_seconds(out, a->took_sum_ns);
        evbuffer_add_printf(out, "\nsluice_aggregate_duration_seconds_count{route=\"");
        add_escaped(out, a->route);
        evbuffer_add_printf(out, "\"} %" PRIu64 "\n", a->took_count);
    }
    family(out, "sluice_aggregate_parts_total", "counter",
           "Parts of aggregate answers by outcome: ok, not_json, or why they failed.");
    for (p = m->aggparts; p != NULL; p = p->next) {
        evbuffer_add_printf(out, "sluice_aggregate_parts_total{route=\"");
        add_escaped(out, p->route);
        evbuffer_add(out, "\",part=\"", 8);
        add_escaped(out, p->part);
        evbuffer_add(out, "\",reason=\"", 10);
        add_escaped(out, p->reason);
        evbuffer_add_printf(out, "\"} %" PRIu64 "\n", p->count);
    }
}

/* `name{upstream="U",budget="B"` without the closing brace. */
static void open_budget(struct evbuffer *out, const char *name, const struct upstream *u,
                        const char *budget)
{
    open_upstream(out, name, upstream_name(u));
    evbuffer_add(out, ",budget=\"", 9);
    add_escaped(out, budget);
    evbuffer_add(out, "\"", 1);
}

/* Shared budgets (proxy/shared, limiter/lease): one series per shared limit. */
static void render_shared(const struct server *s, struct evbuffer *out)
{
    static const char *const results[] = {"ok", "empty", "error", "timeout", "noscript"};
    static const char *const outcomes[] = {"granted", "released", "dropped"};
    size_t i, j, k;
    int any = 0;

    for (i = 0; i < s->nupstreams && !any; i++)
        for (j = 0; s->upstreams[i] != NULL && j < DISPATCH_MAX_LIMITS && !any; j++)
            any = upstream_shared_user(s->upstreams[i], j) != NULL;
    if (!any)
        return;
    for (k = 0; k < 8; k++) {
        static const char *const names[] = {"sluice_shared_lease_calls_total",
                                            "sluice_shared_slots_total",
                                            "sluice_shared_mode",
                                            "sluice_shared_instances",
                                            "sluice_shared_fleet_pauses_total",
                                            "sluice_shared_fences_total",
                                            "sluice_shared_release_lateness_seconds",
                                            "sluice_shared_release_lateness_max_seconds"};
        static const char *const types[] = {"counter", "counter", "gauge",   "gauge",
                                            "counter", "counter", "summary", "gauge"};
        static const char *const helps[] = {
            "Lease calls to Redis by result.",
            "Release slots of shared budgets: granted by Redis, released, dropped (missed).",
            "1 for the mode a shared limit is in: redis (leases) or fallback (local pacing).",
            "Instances sharing the budget, as Redis last counted them.",
            "Pauses of the budget heard from other instances (their upstream said 429).",
            "Schedules fenced one horizon ahead after Redis lost its data (new run_id).",
            "How late each release was after its slot opened (sum and count).",
            "The latest a release was after its slot opened."};
        family(out, names[k], types[k], helps[k]);
        for (i = 0; i < s->nupstreams; i++) {
            const struct upstream *u = s->upstreams[i];
            for (j = 0; u != NULL && j < DISPATCH_MAX_LIMITS; j++) {
                const struct shared_user *su = upstream_shared_user(u, j);
                const struct lease *l = dispatch_lease(upstream_dispatch(u), j);
                const struct lease_counters *lc;
                struct shared_user_stats st;
                size_t r;
                if (su == NULL || l == NULL)
                    continue;
                shared_user_stats(su, &st);
                lc = lease_counters(l);
                switch (k) {
                case 0: {
                    const uint64_t v[] = {st.calls_ok, st.calls_empty, st.calls_error,
                                          st.calls_timeout, st.calls_noscript};
                    for (r = 0; r < 5; r++) {
                        open_budget(out, names[k], u, st.budget);
                        evbuffer_add_printf(out, ",result=\"%s\"} %" PRIu64 "\n", results[r], v[r]);
                    }
                    break;
                }
                case 1: {
                    const uint64_t v[] = {lc->granted, lc->released, lc->dropped};
                    for (r = 0; r < 3; r++) {
                        open_budget(out, names[k], u, st.budget);
                        evbuffer_add_printf(out, ",outcome=\"%s\"} %" PRIu64 "\n", outcomes[r],
                                            v[r]);
                    }
                    break;
                }
                case 2: {
                    int fb = lease_mode(l) == LEASE_FALLBACK;
                    open_budget(out, names[k], u, st.budget);
                    evbuffer_add_printf(out, ",mode=\"redis\"} %d\n", !fb);
                    open_budget(out, names[k], u, st.budget);
                    evbuffer_add_printf(out, ",mode=\"fallback\"} %d\n", fb);
                    break;
                }
                case 6:
                    open_upstream(out, "sluice_shared_release_lateness_seconds_sum",
                                  upstream_name(u));
                    evbuffer_add(out, ",budget=\"", 9);
                    add_escaped(out, st.budget);
                    evbuffer_add(out, "\"} ", 3);
                    add_seconds(out, lc->late_sum_ns);
                    evbuffer_add(out, "\n", 1);
                    open_upstream(out, "sluice_shared_release_lateness_seconds_count",
                                  upstream_name(u));
                    evbuffer_add(out, ",budget=\"", 9);
                    add_escaped(out, st.budget);
                    evbuffer_add_printf(out, "\"} %" PRIu64 "\n", lc->late_count);
                    break;
                default:
                    open_budget(out, names[k], u, st.budget);
                    evbuffer_add(out, "} ", 2);
                    if (k == 3)
                        evbuffer_add_printf(out, "%u", lease_instances(l));
                    else if (k == 4)
                        evbuffer_add_printf(out, "%" PRIu64, st.fleet_pauses);
                    else if (k == 5)
                        evbuffer_add_printf(out, "%" PRIu64, st.fences);
                    else
                        add_seconds(out, lc->late_max_ns);
                    evbuffer_add(out, "\n", 1);
                }
            }
        }
    }
}

static void render_gauge_u(struct evbuffer *out, const struct server *s, const char *name,
                           const char *type, const char *help,
                           uint64_t (*get)(const struct upstream *))
{
    size_t i;

    family(out, name, type, help);
    for (i = 0; i < s->nupstreams; i++) {
        if (s->upstreams[i] == NULL)
            continue;
        open_upstream(out, name, upstream_name(s->upstreams[i]));
        evbuffer_add_printf(out, "} %" PRIu64 "\n", get(s->upstreams[i]));
    }
}

static uint64_t get_queue_depth(const struct upstream *u)
{
    return dispatch_queue_len(upstream_dispatch(u));
}
static uint64_t get_queue_cap(const struct upstream *u)
{
    return dispatch_queue_cap(upstream_dispatch(u));
}
static uint64_t get_in_flight(const struct upstream *u)
{
    return dispatch_in_flight(upstream_dispatch(u));
}
static uint64_t get_max_in_flight(const struct upstream *u)
{
    return upstream_conf(u)->max_in_flight;
}
static uint64_t get_retries(const struct upstream *u) { return upstream_stats(u)->retried; }
static uint64_t get_pauses(const struct upstream *u) { return upstream_stats(u)->paused; }
static uint64_t get_pauses_clamped(const struct upstream *u)
{
    return upstream_stats(u)->pauses_clamped;
}
static uint64_t get_budgets(const struct upstream *u) { return upstream_stats(u)->budgets; }
static uint64_t get_paused(const struct upstream *u)
{
    return dispatch_paused_until(upstream_dispatch(u)) > clock_now_ns();
}
static uint64_t get_keys(const struct upstream *u) { return dispatch_nkeys(upstream_dispatch(u)); }
static uint64_t get_active_keys(const struct upstream *u)
{
    return dispatch_active_flows(upstream_dispatch(u));
}

/* Per priority class: queue depth now, and queue wait as a summary (_sum, _count). */
static void render_class_metrics(const struct metrics *m, const struct server *s,
                                 struct evbuffer *out)
{
    size_t i;
    unsigned c;

    family(out, "sluice_queue_depth_by_class", "gauge",
           "Requests waiting in the queue now, by priority class (0 first).");
    for (i = 0; i < s->nupstreams; i++) {
        const char *un = upstream_name(s->upstreams[i]);
        for (c = 0; c < METRICS_CLASSES; c++) {
            open_upstream(out, "sluice_queue_depth_by_class", un);
            evbuffer_add_printf(out, ",class=\"%u\"} %u\n", c,
                                upstream_queue_len_class(s->upstreams[i], c));
        }
    }
    /* Two counters rather than a summary: rate(seconds) / rate(requests) is the mean wait
     * per class over any window. */
    family(out, "sluice_queue_wait_by_class_seconds_total", "counter",
           "Seconds requests spent queued, summed, by priority class.");
    for (i = 0; i < s->nupstreams; i++) {
        const char *un = upstream_name(s->upstreams[i]);
        const struct up_series *us = up_find(m, un, hash_name(un));
        for (c = 0; c < METRICS_CLASSES; c++) {
            open_upstream(out, "sluice_queue_wait_by_class_seconds_total", un);
            evbuffer_add_printf(out, ",class=\"%u\"} %.6f\n", c,
                                us ? (double)us->class_wait_ns[c] / 1e9 : 0.0);
        }
    }
    family(out, "sluice_queued_by_class_total", "counter",
           "Requests that went through the queue, by priority class.");
    for (i = 0; i < s->nupstreams; i++) {
        const char *un = upstream_name(s->upstreams[i]);
        const struct up_series *us = up_find(m, un, hash_name(un));
        for (c = 0; c < METRICS_CLASSES; c++) {
            open_upstream(out, "sluice_queued_by_class_total", un);
            evbuffer_add_printf(out, ",class=\"%u\"} %" PRIu64 "\n", c,
                                us ? us->class_waits[c] : 0);
        }
    }
}

void metrics_render(const struct metrics *m, const struct server *s, struct evbuffer *out)
{
    uint64_t now = clock_now_ns();
    size_t i, j;

    family(out, "sluice_requests_total", "counter",
           "Finished requests by upstream, route, status and reason (ok or Sluice-Reason).");
    for (i = 0; i < m->nreqs; i++) {
        const struct req_series *e = &m->reqs[i];
        open_upstream(out, "sluice_requests_total", e->upstream);
        evbuffer_add(out, ",route=\"", 8);
        add_escaped(out, e->route);
        evbuffer_add_printf(out, "\",status=\"%d\",reason=\"", e->status);
        add_escaped(out, e->reason);
        evbuffer_add_printf(out, "\"} %" PRIu64 "\n", e->count);
    }

    family(out, "sluice_rejections_total", "counter",
           "Requests answered 503 before reaching the upstream, by reason.");
    for (i = 0; i < s->nupstreams; i++) {
        const char *un;
        const struct up_series *us;
        if (s->upstreams[i] == NULL)
            continue;
        un = upstream_name(s->upstreams[i]);
        us = up_find(m, un, hash_name(un));
        for (j = 0; j < NREJECTIONS; j++) {
            open_upstream(out, "sluice_rejections_total", un);
            evbuffer_add_printf(out, ",reason=\"%s\"} %" PRIu64 "\n", rejection_reasons[j],
                                us ? us->rejections[j] : 0);
        }
    }
    for (i = 0; i < m->nups; i++) {
        const struct up_series *us = &m->ups[i];
        if (configured(s, us->name))
            continue;
        for (j = 0; j < NREJECTIONS; j++) {
            if (us->rejections[j] == 0)
                continue;
            open_upstream(out, "sluice_rejections_total", us->name);
            evbuffer_add_printf(out, ",reason=\"%s\"} %" PRIu64 "\n", rejection_reasons[j],
                                us->rejections[j]);
        }
    }

    family(out, "sluice_queue_wait_seconds", "histogram",
           "Time requests spent queued, whether released or not.");
    render_histograms(m, s, out, "sluice_queue_wait_seconds", 0);
    family(out, "sluice_upstream_latency_seconds", "histogram",
           "Time from sending a request upstream to its response headers.");
    render_histograms(m, s, out, "sluice_upstream_latency_seconds", 1);

    render_gauge_u(out, s, "sluice_queue_depth", "gauge", "Requests waiting in the queue now.",
                   get_queue_depth);
    render_gauge_u(out, s, "sluice_queue_capacity", "gauge", "Configured queue size.",
                   get_queue_cap);
    render_gauge_u(out, s, "sluice_in_flight", "gauge", "Requests at the upstream now.",
                   get_in_flight);
    render_gauge_u(out, s, "sluice_max_in_flight", "gauge", "Configured max_in_flight.",
                   get_max_in_flight);
    render_gauge_u(out, s, "sluice_upstream_retries_total", "counter",
                   "Requests given their turn back after the upstream refused them (429/503).",
                   get_retries);
    render_gauge_u(out, s, "sluice_upstream_pauses_total", "counter",
                   "Pauses the upstream asked for (Retry-After).", get_pauses);
    render_gauge_u(out, s, "sluice_upstream_pauses_clamped_total", "counter",
                   "Pauses asked for longer than feedback.max_pause, cut to it.",
                   get_pauses_clamped);
    render_gauge_u(out, s, "sluice_upstream_budget_reports_total", "counter",
                   "Remaining-budget reports (RateLimit, X-RateLimit-*) obeyed.", get_budgets);
    render_gauge_u(out, s, "sluice_upstream_paused", "gauge",
                   "1 while releases are paused at the upstream's request.", get_paused);
    render_gauge_u(out, s, "sluice_keys", "gauge", "Fair-queuing keys tracked now.", get_keys);
    render_class_metrics(m, s, out);
    render_gauge_u(out, s, "sluice_active_keys", "gauge", "Keys with requests queued now.",
                   get_active_keys);

    family(out, "sluice_tokens_available", "gauge",
           "Tokens in each limit's bucket now (limit: its rate as configured).");
    for (i = 0; i < s->nupstreams; i++) {
        const struct upstream *u = s->upstreams[i];
        const struct conf_upstream *cu;
        const struct dispatch *d;
        char label[64];
        if (u == NULL)
            continue;
        cu = upstream_conf(u);
        d = upstream_dispatch(u);
        for (j = 0; j < cu->nlimits && j < dispatch_nlimits(d); j++) {
            metrics_limit_label(cu, j, label, sizeof(label));
            open_upstream(out, "sluice_tokens_available", upstream_name(u));
            evbuffer_add(out, ",limit=\"", 8);
            add_escaped(out, label);
            evbuffer_add(out, "\"} ", 3);
            add_double(out, dispatch_tokens(d, j, now));
            evbuffer_add(out, "\n", 1);
        }
    }

    render_shared(s, out);
    render_aggregates(m, out);

    family(out, "sluice_config_reloads_total", "counter",
           "Configuration loads by result (start-up counts as ok).");
    evbuffer_add_printf(out, "sluice_config_reloads_total{result=\"ok\"} %" PRIu64 "\n",
                        m->reloads_ok);
    evbuffer_add_printf(out, "sluice_config_reloads_total{result=\"failed\"} %" PRIu64 "\n",
                        m->reloads_failed);
    family(out, "sluice_config_last_reload_timestamp_seconds", "gauge",
           "Unix time the serving configuration was loaded.");
    evbuffer_add_printf(out, "sluice_config_last_reload_timestamp_seconds %" PRId64 "\n",
                        m->last_reload_unix);
    family(out, "sluice_config_last_reload_success", "gauge",
           "1 when the last load attempt succeeded, else 0.");
    evbuffer_add_printf(out, "sluice_config_last_reload_success %d\n", m->last_reload_ok);

    family(out, "sluice_client_connections", "gauge", "Open client connections (proxy listeners).");
    evbuffer_add_printf(out, "sluice_client_connections %zu\n",
                        s->frontend ? frontend_connections(s->frontend) : (size_t)0);
    family(out, "sluice_draining", "gauge", "1 while draining or stopping, else 0.");
    evbuffer_add_printf(out, "sluice_draining %d\n", server_is_draining(s) ? 1 : 0);
}
