/*
 * proxy/aggregate: one request, several upstreams, one JSON answer. See aggregate.h.
 *
 *   aggregate_start: one part request per configured part (request_new_part), each
 *       submitted to its upstream at once (upstream_submit, with start_by_ns = the
 *       deadline: a predicted wait past it is refused at once);
 *   part_done (each part's sink, once): its status, reason and body are kept;
 *   the last part done, the deadline timer, or the client leaving: every part still out
 *       is taken back (request_withdraw: queued ones spend no token, in-flight ones are
 *       cut), and the answer is built (proxy/aggmerge) and sent.
 * While parts are being submitted (`starting`), a part that finishes at once (refused at
 * admission) only records itself; the answer waits for the loop to end, so nothing is
 * freed under it.
 */
#include "proxy/aggregate.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "proxy/aggmerge.h"
#include "proxy/classify.h"
#include "proxy/clock.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/request.h"
#include "proxy/server.h"
#include "proxy/upstream.h"

struct aggregate;

struct aggregate_part {
    struct aggregate *agg;
    const struct conf_part *conf;
    struct request *r; /* the part's request while it is out; NULL once done */
    int done;
    int status;             /* the upstream's, or sluice's own */
    const char *reason;     /* "ok", sluice's reason, "too_large", "deadline"... */
    char status_reason[24]; /* "status_503" (room for any int: no truncation warning) */
    struct evbuffer *body;  /* kept for the merge (2xx only) */
};

struct aggregate {
    struct request *r; /* the client's request: answers the client */
    const struct conf_aggregate *conf;
    struct aggregate_part *parts;
    size_t nparts, pending;
    struct event *deadline;
    uint64_t started_ns;
    int starting;
};

static void aggregate_free(struct aggregate *a)
{
    size_t i;

    if (a == NULL)
        return;
    for (i = 0; i < a->nparts; i++)
        if (a->parts[i].body != NULL)
            evbuffer_free(a->parts[i].body);
    if (a->deadline != NULL)
        event_free(a->deadline);
    free(a->parts);
    free(a);
}

/* Every part still out is taken back: queued ones withdrawn (no token), in-flight ones
 * cut. Each is recorded as `reason`. */
static void take_back(struct aggregate *a, const char *reason)
{
    size_t i;

    for (i = 0; i < a->nparts; i++) {
        struct aggregate_part *p = &a->parts[i];
        struct request *pr = p->r;
        if (p->done || pr == NULL)
            continue;
        p->r = NULL;
        p->done = 1;
        p->reason = reason;
        a->pending--;
        pr->status = strcmp(reason, "client_closed") == 0 ? 499 : 504;
        pr->reason = reason;
        request_withdraw(pr);
    }
}

/* Every part has its outcome: build and send the answer, finish the client's request. */
static void answer(struct aggregate *a)
{
    struct request *r = a->r;
    struct aggmerge_part mp[64];
    struct evbuffer *body = NULL;
    struct evkeyvalq *out;
    char *json = NULL, *errors = NULL;
    size_t i, len = 0, n = a->nparts < 64 ? a->nparts : 64;
    int ok, status;
    const char *outcome;
    uint64_t took = clock_now_ns() - a->started_ns;

    evtimer_del(a->deadline);
    for (i = 0; i < n; i++) {
        struct aggregate_part *p = &a->parts[i];
        int good = p->status >= 200 && p->status < 300 && p->reason != NULL &&
                   strcmp(p->reason, "ok") == 0;
        if (!good && p->status >= 100 && p->reason != NULL && strcmp(p->reason, "ok") == 0) {
            /* The upstream answered, but not 2xx: its status is the reason. */
            snprintf(p->status_reason, sizeof(p->status_reason), "status_%d", p->status);
            p->reason = p->status_reason;
        }
        mp[i].name = p->conf->name;
        mp[i].ok = good;
        mp[i].reason = p->reason;
        mp[i].body = good && p->body ? (const char *)evbuffer_pullup(p->body, -1) : NULL;
        mp[i].len = good && p->body ? evbuffer_get_length(p->body) : 0;
    }
    ok = aggmerge_build(mp, n, &json, &len);
    if (ok < 0) {
        request_reply_error(r, 502, "upstream_error", 0, "cannot build the aggregate answer: %s",
                            strerror(errno));
        aggregate_free(a);
        return;
    }
    errors = aggmerge_errors(mp, n);
    outcome = (size_t)ok == n ? "complete" : ok > 0 ? "partial" : "failed";
    status = ok > 0 || n == 0 ? 200 : 502;
    if (r->server->metrics != NULL) {
        metrics_aggregate_done(r->server->metrics, r->route->path_prefix, outcome, took);
        for (i = 0; i < n; i++)
            metrics_aggregate_part(r->server->metrics, r->route->path_prefix, mp[i].name,
                                   mp[i].verdict == AGGMERGE_OK ? "ok"
                                   : mp[i].verdict == AGGMERGE_NOT_JSON
                                       ? "not_json"
                                       : (mp[i].reason ? mp[i].reason : "failed"));
    }
    r->status = status;
    r->reason = status == 200 ? "ok" : "upstream_error";
    request_log(r, (size_t)ok == n ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO,
                "aggregate %s in %llums (%d of %zu parts)%s%s", outcome,
                (unsigned long long)(took / NS_PER_MS), ok, n, errors && *errors ? ": " : "",
                errors ? errors : "");
    if (r->client != NULL && (body = evbuffer_new()) != NULL) {
        out = evhttp_request_get_output_headers(r->client);
        evhttp_add_header(out, "Content-Type", "application/json");
        evhttp_add_header(out, "Sluice-Aggregate", (size_t)ok == n ? "complete" : "partial");
        if (errors != NULL && *errors != '\0')
            evhttp_add_header(out, "Sluice-Aggregate-Errors", errors);
        if (status != 200)
            evhttp_add_header(out, "Sluice-Reason", "upstream_error");
        if (server_is_draining(r->server))
            evhttp_add_header(out, "Connection", "close");
        evbuffer_add(body, json, len);
        request_send(r, status, status == 200 ? "OK" : "Bad Gateway", body);
        evbuffer_free(body);
        request_detach_client(r, REQUEST_ANSWERED);
    }
    free(json);
    free(errors);
    aggregate_free(a);
    request_finish(r);
}

/* A part's sink: its answer, once. */
static void part_done(void *arg, struct request *pr, int status, const char *reason,
                      struct evbuffer *body)
{
    struct aggregate_part *p = arg;
    struct aggregate *a = p->agg;

    if (p->done)
        return;
    p->done = 1;
    p->r = NULL;
    p->status = status;
    p->reason = reason;
    if (status >= 200 && status < 300 && body != NULL && reason != NULL &&
        strcmp(reason, "ok") == 0 && (p->body = evbuffer_new()) != NULL)
        evbuffer_add_buffer(p->body, body);
    a->pending--;
    if (a->pending == 0 && !a->starting)
        answer(a);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct aggregate *a = arg;

    request_log(a->r, LOG_LEVEL_INFO, "aggregate.timeout reached with %zu part(s) out", a->pending);
    take_back(a, "deadline");
    answer(a);
}

/* The client left: take every part back, no answer. */
static void client_gone(struct request *r)
{
    struct aggregate *a = r->owner;

    r->on_client_gone = NULL;
    r->owner = NULL;
    take_back(a, "client_closed");
    aggregate_free(a);
    request_finish(r);
}

/* path[?query] of a part: its configured path, with the client's query appended. */
static char *part_target(const char *path, const char *query)
{
    size_t n = strlen(path) + (query ? strlen(query) + 2 : 1);
    char *t = malloc(n);

    if (t == NULL)
        return NULL;
    if (query != NULL && *query != '\0')
        snprintf(t, n, "%s%c%s", path, strchr(path, '?') ? '&' : '?', query);
    else
        snprintf(t, n, "%s", path);
    return t;
}

void aggregate_start(struct request *r)
{
    struct server *s = r->server;
    const struct conf_aggregate *ca = r->route->aggregate;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(r->client);
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    struct evkeyvalq *in = evhttp_request_get_input_headers(r->client);
    int method = evhttp_request_get_command(r->client);
    struct evbuffer *body = evhttp_request_get_input_buffer(r->client);
    struct aggregate *a = calloc(1, sizeof(*a));
    struct timeval tv;
    char key[256];
    size_t i, key_len;
    uint32_t cost, prio;

    if (a == NULL || (a->parts = calloc(ca->nparts, sizeof(*a->parts))) == NULL ||
        (a->deadline = evtimer_new(s->base, deadline_cb, a)) == NULL) {
        aggregate_free(a);
        request_reply_error(r, 503, "internal_error", 0, "out of memory");
        return;
    }
    a->r = r;
    a->conf = ca;
    a->nparts = ca->nparts;
    a->pending = ca->nparts;
    a->started_ns = clock_now_ns();
    r->owner = a;
    r->on_client_gone = client_gone;
    request_set_state(r, REQUEST_IN_FLIGHT);
    tv = clock_ms_timeval(ca->timeout_ms);
    evtimer_add(a->deadline, &tv);
    /* A HEAD is answered with the GET's head: the parts are GETs (their bodies make it). */
    if (method == EVHTTP_REQ_HEAD)
        method = EVHTTP_REQ_GET;
    key_len = classify_key(r->route, r->client_ip, in, query, key, sizeof(key));
    cost = classify_cost(r->route, in);
    prio = classify_priority(r->route, in);
    a->starting = 1;
    for (i = 0; i < ca->nparts; i++) {
        struct aggregate_part *p = &a->parts[i];
        const struct conf_part *cp = &ca->parts[i];
        struct request_sink sink = {.done = part_done, .arg = p, .max_body = ca->max_part_size};
        char *target = part_target(cp->path, query);
        struct request *pr;
        p->agg = a;
        p->conf = cp;
        pr = target ? request_new_part(r, target, method, method == EVHTTP_REQ_GET ? NULL : body,
                                       &sink)
                    : NULL;
        free(target);
        if (pr == NULL) {
            p->done = 1;
            p->reason = "internal_error";
            a->pending--;
            continue;
        }
        p->r = pr;
        pr->route = r->route;
        pr->upstream = s->upstreams[cp->upstream_index];
        pr->key_len = (uint16_t)key_len;
        memcpy(pr->key, key, key_len);
        pr->waiter.cost = cost;
        pr->waiter.priority = prio;
        pr->start_by_ns = a->started_ns + ca->timeout_ms * NS_PER_MS;
        upstream_submit(pr->upstream, pr); /* may answer it at once (part_done) */
    }
    a->starting = 0;
    /* Watch the client while the parts are out (evhttp does not read it meanwhile). */
    if (a->pending > 0) {
        if (request_watch_client(r) != 0)
            request_log(r, LOG_LEVEL_WARN, "cannot watch the client socket");
        return;
    }
    answer(a);
}
