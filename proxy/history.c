/*
 * proxy/history: per-second samples of every upstream. See history.h.
 *
 * A series is a ring of cumulative samples; the queue-wait buckets are kept for the last
 * HISTORY_WAIT_S + 1 samples only (the percentiles need no more). A rate is the
 * difference between the newest sample and the one HISTORY_RATE_S before it (or the
 * oldest there is), divided by the seconds between them.
 */
#include "proxy/history.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/clock.h"
#include "proxy/metrics.h"
#include "proxy/server.h"
#include "proxy/upstream.h"

struct sample {
    uint64_t t_ns;
    uint32_t queue_depth;
    uint64_t released;
    uint64_t answers[5];
    uint64_t refusals[4];
};

struct series {
    char *name;
    int seen; /* sampled in this round */
    struct sample ring[HISTORY_SECONDS + 1];
    uint64_t waits[HISTORY_WAIT_S + 1][METRICS_WAIT_BUCKETS];
    size_t newest; /* index in ring of the newest sample */
    size_t count;  /* samples held */
    uint64_t seq;  /* samples taken so far: the wait slot of the newest is seq % (WAIT_S + 1) */
};

struct client_sample {
    uint64_t t_ns, connection_limit, header_timeout;
};

struct history {
    struct server *server;
    struct event *timer;
    struct series **series;
    size_t n, cap;
    struct client_sample client[HISTORY_RATE_S + 1];
    size_t client_newest, client_count;
};

#define RING (HISTORY_SECONDS + 1)

/* The sample `back` seconds before the newest (0: the newest); back < count. */
static const struct sample *back_sample(const struct series *se, size_t back)
{
    return &se->ring[(se->newest + RING - back) % RING];
}

static struct series *find(const struct history *h, const char *name)
{
    size_t i;

    for (i = 0; i < h->n; i++)
        if (strcmp(h->series[i]->name, name) == 0)
            return h->series[i];
    return NULL;
}

static struct series *get(struct history *h, const char *name)
{
    struct series *se = find(h, name);

    if (se != NULL)
        return se;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 8;
        struct series **grown = realloc(h->series, cap * sizeof(*grown));
        if (grown == NULL)
            return NULL;
        h->series = grown;
        h->cap = cap;
    }
    se = calloc(1, sizeof(*se));
    if (se == NULL || (se->name = strdup(name)) == NULL) {
        free(se);
        return NULL;
    }
    h->series[h->n++] = se;
    return se;
}

static void series_free(struct series *se)
{
    if (se != NULL) {
        free(se->name);
        free(se);
    }
}

static void sample_upstream(struct history *h, const struct upstream *u, uint64_t now)
{
    struct series *se = get(h, upstream_name(u));
    struct metrics_totals t;
    struct sample *sm;
    size_t slot;

    if (se == NULL)
        return;
    se->seen = 1;
    memset(&t, 0, sizeof(t));
    if (h->server->metrics != NULL)
        metrics_upstream_totals(h->server->metrics, upstream_name(u), &t);
    se->newest = se->count == 0 ? 0 : (se->newest + 1) % RING;
    if (se->count < RING)
        se->count++;
    sm = &se->ring[se->newest];
    sm->t_ns = now;
    sm->queue_depth = (uint32_t)upstream_queue_len(u);
    sm->released = upstream_stats(u)->released;
    memcpy(sm->answers, t.answers, sizeof(sm->answers));
    memcpy(sm->refusals, t.refusals, sizeof(sm->refusals));
    se->seq++;
    slot = se->seq % (HISTORY_WAIT_S + 1);
    memcpy(se->waits[slot], t.wait_buckets, sizeof(se->waits[slot]));
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    struct history *h = arg;
    struct server *s = h->server;
    uint64_t now = clock_now_ns();
    struct client_sample *c;
    size_t i, j;

    for (i = 0; i < h->n; i++)
        h->series[i]->seen = 0;
    for (i = 0; i < s->nupstreams; i++)
        if (s->upstreams[i] != NULL)
            sample_upstream(h, s->upstreams[i], now);
    /* An upstream a reload removed has no series any more. */
    for (i = j = 0; i < h->n; i++) {
        if (h->series[i]->seen)
            h->series[j++] = h->series[i];
        else
            series_free(h->series[i]);
    }
    h->n = j;
    h->client_newest = h->client_count == 0 ? 0 : (h->client_newest + 1) % (HISTORY_RATE_S + 1);
    if (h->client_count < HISTORY_RATE_S + 1)
        h->client_count++;
    c = &h->client[h->client_newest];
    c->t_ns = now;
    if (s->metrics != NULL)
        metrics_client_refusals(s->metrics, &c->connection_limit, &c->header_timeout);
}

struct history *history_new(struct server *s)
{
    struct history *h = calloc(1, sizeof(*h));
    struct timeval tv = {1, 0};

    if (h == NULL)
        return NULL;
    h->server = s;
    h->timer = event_new(s->base, -1, EV_PERSIST, tick, h);
    if (h->timer == NULL || event_add(h->timer, &tv) != 0) {
        history_free(h);
        return NULL;
    }
    /* A first sample now, so what happens in the first second counts in the rates. */
    tick(-1, 0, h);
    return h;
}

void history_free(struct history *h)
{
    size_t i;

    if (h == NULL)
        return;
    if (h->timer != NULL)
        event_free(h->timer);
    for (i = 0; i < h->n; i++)
        series_free(h->series[i]);
    free(h->series);
    free(h);
}

/* The q-th quantile (0..1) of the waits counted in `b` (per bucket), in ms, linear
 * within its bucket. */
static double quantile_ms(const uint64_t *b, uint64_t count, double q)
{
    double want = q * (double)count, cum = 0, lower = 0;
    size_t i;

    for (i = 0; i < METRICS_WAIT_BUCKETS; i++) {
        uint64_t bound = metrics_wait_bucket_bound_ns(i);
        double upper = bound == UINT64_MAX ? lower : (double)bound / 1e6;
        if (b[i] > 0 && cum + (double)b[i] >= want)
            return lower + (upper - lower) * ((want - cum) / (double)b[i]);
        cum += (double)b[i];
        lower = upper;
    }
    return lower;
}

int history_now(const struct history *h, const char *name, struct history_now *out)
{
    const struct series *se = find(h, name);
    const struct sample *a, *b;
    size_t back, i, wback;
    double secs;
    uint64_t d[METRICS_WAIT_BUCKETS];

    memset(out, 0, sizeof(*out));
    if (se == NULL || se->count == 0)
        return 0;
    back = se->count - 1 < HISTORY_RATE_S ? se->count - 1 : HISTORY_RATE_S;
    a = back_sample(se, back);
    b = back_sample(se, 0);
    secs = (double)(b->t_ns - a->t_ns) / 1e9;
    if (secs > 0) {
        out->release_rate = (double)(b->released - a->released) / secs;
        for (i = 0; i < 5; i++)
            out->answers_rate[i] = (double)(b->answers[i] - a->answers[i]) / secs;
        for (i = 0; i < 4; i++)
            out->refusals_rate[i] = (double)(b->refusals[i] - a->refusals[i]) / secs;
    }
    wback = se->count - 1 < HISTORY_WAIT_S ? se->count - 1 : HISTORY_WAIT_S;
    for (i = 0; i < METRICS_WAIT_BUCKETS; i++) {
        d[i] = se->waits[se->seq % (HISTORY_WAIT_S + 1)][i] -
               se->waits[(se->seq - wback) % (HISTORY_WAIT_S + 1)][i];
        out->wait_count += d[i];
    }
    if (out->wait_count > 0) {
        out->wait_p50_ms = quantile_ms(d, out->wait_count, 0.50);
        out->wait_p99_ms = quantile_ms(d, out->wait_count, 0.99);
    }
    return 1;
}

size_t history_series(const struct history *h, const char *name, size_t n, uint32_t *depth,
                      uint32_t *released, uint32_t *refused)
{
    const struct series *se = find(h, name);
    size_t i, have;

    if (se == NULL || se->count < 1)
        return 0;
    have = se->count - 1; /* a second is the difference of two samples */
    if (n > have)
        n = have;
    for (i = 0; i < n; i++) {
        const struct sample *cur = back_sample(se, n - 1 - i), *prev = back_sample(se, n - i);
        uint64_t r0 = 0, r1 = 0;
        size_t k;
        for (k = 0; k < 4; k++) {
            r0 += prev->refusals[k];
            r1 += cur->refusals[k];
        }
        depth[i] = cur->queue_depth;
        released[i] = (uint32_t)(cur->released - prev->released);
        refused[i] = (uint32_t)(r1 - r0);
    }
    return n;
}

void history_client_rates(const struct history *h, double *connection_limit, double *header_timeout)
{
    const struct client_sample *a, *b;
    size_t back;
    double secs;

    *connection_limit = *header_timeout = 0;
    if (h->client_count < 2)
        return;
    back = h->client_count - 1;
    a = &h->client[(h->client_newest + (HISTORY_RATE_S + 1) - back) % (HISTORY_RATE_S + 1)];
    b = &h->client[h->client_newest];
    secs = (double)(b->t_ns - a->t_ns) / 1e9;
    if (secs > 0) {
        *connection_limit = (double)(b->connection_limit - a->connection_limit) / secs;
        *header_timeout = (double)(b->header_timeout - a->header_timeout) / secs;
    }
}
