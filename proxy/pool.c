/*
 * proxy/pool: keep-alive connections of one upstream. See pool.h.
 *
 * Invariants
 *   - A pool_conn is in exactly one place: the idle list (LIFO: the most recently used
 *     connection is the one most likely still open), lent (counted in `lent`), or the
 *     closing list.
 *   - An idle connection's gate is clean: its last answer ended exactly where its
 *     framing said and nothing followed; the gate drops (and marks) anything that
 *     arrives while it is idle.
 */
#include "proxy/pool.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdlib.h>

#include "conf/conf.h"
#include "proxy/tls.h"

struct pool {
    struct event_base *base;
    struct evdns_base *dns;
    const struct conf_upstream *conf;
    struct tls_ctx *tls;    /* held: new connections' context (https), or NULL */
    int ip_literal;         /* host is an address: no resolver needed */
    uint32_t endpoint;      /* bumped when a reload changes where connections lead */
    struct pool_conn *idle; /* LIFO */
    uint32_t nidle;
    uint32_t lent;
    struct pool_conn *closing; /* given back, not kept: freed by pool_reap */
};

static void conn_free(struct pool_conn *c)
{
    /* The gate first: it sits on the connection's bufferevent. */
    gate_free(c->gate);
    if (c->evcon != NULL)
        evhttp_connection_free(c->evcon);
    tls_ctx_release(c->tls);
    free(c);
}

static void free_list(struct pool_conn *c)
{
    while (c != NULL) {
        struct pool_conn *next = c->next;
        conn_free(c);
        c = next;
    }
}

struct pool *pool_new(struct event_base *base, struct evdns_base *dns,
                      const struct conf_upstream *cu, struct tls_ctx *tls)
{
    struct pool *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->base = base;
    p->dns = dns;
    p->conf = cu;
    p->tls = tls ? tls_ctx_hold(tls) : NULL;
    p->ip_literal = conf_host_is_ip(cu->host);
    return p;
}

void pool_free(struct pool *p)
{
    if (p == NULL)
        return;
    free_list(p->idle);
    free_list(p->closing);
    tls_ctx_release(p->tls);
    free(p);
}

static struct pool_conn *conn_new(struct pool *p)
{
    const struct conf_upstream *cu = p->conf;
    struct http1_limits limits = {.max_head = cu->max_header_size, .max_body = 0};
    struct pool_conn *c = calloc(1, sizeof(*c));
    struct timeval tv;

    if (c == NULL)
        return NULL;
    c->endpoint = p->endpoint;
    if (p->tls != NULL) {
        struct bufferevent *bev = tls_client_bev(p->tls, p->base);
        if (bev == NULL)
            goto fail;
        c->evcon = evhttp_connection_base_bufferevent_new(p->base, p->ip_literal ? NULL : p->dns,
                                                          bev, cu->host, cu->port);
        if (c->evcon == NULL) {
            bufferevent_free(bev);
            goto fail;
        }
        c->tls = tls_ctx_hold(p->tls);
    } else {
        c->evcon =
            evhttp_connection_base_new(p->base, p->ip_literal ? NULL : p->dns, cu->host, cu->port);
        if (c->evcon == NULL)
            goto fail;
    }
    c->gate = gate_new(p->base, HTTP1_STREAM_RESPONSES, &limits);
    if (c->gate == NULL || gate_attach(c->gate, evhttp_connection_get_bufferevent(c->evcon)) != 0)
        goto fail;
    /* Reconnect to the address already resolved instead of resolving again. */
    evhttp_connection_set_flags(c->evcon, EVHTTP_CON_REUSE_CONNECTED_ADDR);
    /* Never resend on our own: a request may not be idempotent. */
    evhttp_connection_set_retries(c->evcon, 0);
    tv.tv_sec = (time_t)(cu->response_timeout_ms / 1000);
    tv.tv_usec = (suseconds_t)((cu->response_timeout_ms % 1000) * 1000);
    evhttp_connection_set_timeout_tv(c->evcon, &tv);
    return c;
fail:
    conn_free(c);
    return NULL;
}

struct pool_conn *pool_get(struct pool *p, gate_error_fn *on_invalid, void *arg)
{
    struct pool_conn *c;

    while ((c = p->idle) != NULL) {
        p->idle = c->next;
        p->nidle--;
        /* evhttp would reconnect a closed connection on the same TLS session object,
         * which cannot be reused: drop closed TLS connections and make fresh ones. */
        if (c->tls == NULL || bufferevent_getfd(evhttp_connection_get_bufferevent(c->evcon)) >= 0)
            break;
        conn_free(c);
    }
    if (c == NULL && (c = conn_new(p)) == NULL)
        return NULL;
    c->next = NULL;
    gate_on_error(c->gate, on_invalid, arg);
    p->lent++;
    return c;
}

void pool_put(struct pool *p, struct pool_conn *c, int reusable)
{
    if (c == NULL)
        return;
    p->lent--;
    /* Nobody is listening any more: a late report on this connection is ignored. */
    gate_on_error(c->gate, NULL, NULL);
    if (reusable && gate_clean(c->gate) && c->endpoint == p->endpoint && c->tls == p->tls &&
        p->nidle < p->conf->keepalive) {
        c->next = p->idle;
        p->idle = c;
        p->nidle++;
        return;
    }
    /* evhttp may still be inside this connection's callback chain: never free it here. */
    c->next = p->closing;
    p->closing = c;
}

void pool_reap(struct pool *p)
{
    free_list(p->closing);
    p->closing = NULL;
}

void pool_drop_idle(struct pool *p)
{
    free_list(p->idle);
    p->idle = NULL;
    p->nidle = 0;
}

void pool_reconfigure(struct pool *p, const struct conf_upstream *cu, int endpoint_changed,
                      struct tls_ctx *tls)
{
    p->conf = cu;
    p->ip_literal = conf_host_is_ip(cu->host);
    if (endpoint_changed) {
        /* Idle connections lead to the old endpoint; lent ones are closed when they come
         * back (their endpoint generation no longer matches). */
        p->endpoint++;
        pool_drop_idle(p);
    }
    tls_ctx_release(p->tls);
    p->tls = tls ? tls_ctx_hold(tls) : NULL;
    /* Fewer idle connections allowed: close the oldest (at the end of the LIFO). */
    if (p->nidle > cu->keepalive) {
        struct pool_conn **link = &p->idle;
        uint32_t kept = 0;
        while (*link != NULL && kept < cu->keepalive) {
            link = &(*link)->next;
            kept++;
        }
        free_list(*link);
        *link = NULL;
        p->nidle = kept;
    }
}

uint32_t pool_lent(const struct pool *p) { return p->lent; }
uint32_t pool_idle(const struct pool *p) { return p->nidle; }
