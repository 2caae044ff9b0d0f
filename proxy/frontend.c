/*
 * proxy/frontend: listeners, client connections, and the first look at each request.
 *
 *   accept ─> bev_cb (count the connection; at client.max_connections stop accepting)
 *   evhttp reads a complete request (header/body limits and timeouts enforced there)
 *   ─> request_cb: refuse what is malformed or oversized (4xx), route (404 when no
 *      route), then upstream_submit() takes it.
 *
 * Counting connections: evhttp tells us of a new connection only through the
 * bufferevent callback, before the connection object exists, and of its end only
 * through the connection's close callback. So bev_cb queues the new bufferevent, and a
 * priority-0 event (it runs before any I/O of the new connection can) finds the
 * connection behind it (evhttp registers it as the bufferevent's callback argument)
 * and installs the close callback.
 */
#include "proxy/frontend.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"
#include "proxy/classify.h"
#include "proxy/log.h"
#include "proxy/request.h"
#include "proxy/router.h"
#include "proxy/server.h"
#include "proxy/tls.h"
#include "proxy/upstream.h"

struct listener {
    struct frontend *frontend;
    const struct conf_listen *conf; /* in the serving config; NULL once retired */
    struct tls_ctx *tls;            /* TLS listeners: the server context */
    struct evhttp *http;
    struct evhttp_bound_socket *bound; /* NULL once closed */
    struct listener *next;
};

struct frontend {
    struct server *server;
    struct listener *listeners;   /* serving, in config order */
    struct listener *retired;     /* closed by a reload; their connections finish, freed at exit */
    size_t connections;           /* open client connections */
    int paused;                   /* accepting stopped at max_connections */
    struct bufferevent **pending; /* new connections awaiting their close callback */
    size_t npending, pending_cap;
    struct event *pending_ev; /* priority 0: registers close callbacks */
};

static void set_accepting(struct frontend *f, int on)
{
    struct listener *l;

    for (l = f->listeners; l != NULL; l = l->next) {
        struct evconnlistener *el;
        if (l->bound == NULL)
            continue;
        el = evhttp_bound_socket_get_listener(l->bound);
        if (on)
            evconnlistener_enable(el);
        else
            evconnlistener_disable(el);
    }
}

static void conn_closed_cb(struct evhttp_connection *evcon, void *arg)
{
    struct frontend *f = arg;

    f->connections--;
    server_check_idle(f->server);
    if (f->paused && f->connections < f->server->conf->client.max_connections) {
        f->paused = 0;
        set_accepting(f, 1);
        log_info("below client.max_connections (%u): accepting again",
                 f->server->conf->client.max_connections);
    }
}

/* The connection of a request being relayed went away (evhttp saw the hang-up while
 * writing): tell the request, then count the connection as closed. */
static void conn_closed_relaying_cb(struct evhttp_connection *evcon, void *arg)
{
    struct request *r = arg;
    struct frontend *f = r->server->frontend;

    request_client_closed(r);
    conn_closed_cb(evcon, f);
}

void frontend_bind_request(struct frontend *f, struct evhttp_connection *evcon, struct request *r)
{
    if (r != NULL)
        evhttp_connection_set_closecb(evcon, conn_closed_relaying_cb, r);
    else
        evhttp_connection_set_closecb(evcon, conn_closed_cb, f);
}

static void pending_cb(evutil_socket_t fd, short what, void *arg)
{
    struct frontend *f = arg;
    size_t i;

    for (i = 0; i < f->npending; i++) {
        void *evcon = NULL;
        bufferevent_getcb(f->pending[i], NULL, NULL, NULL, &evcon);
        if (evcon != NULL)
            evhttp_connection_set_closecb(evcon, conn_closed_cb, f);
    }
    f->npending = 0;
}

static struct bufferevent *bev_cb(struct event_base *base, void *arg)
{
    struct listener *l = arg;
    struct frontend *f = l->frontend;
    struct bufferevent *bev =
        l->tls ? tls_server_bev(l->tls, base) : bufferevent_socket_new(base, -1, 0);

    if (bev == NULL)
        return NULL;
    if (f->npending == f->pending_cap) {
        size_t cap = f->pending_cap ? f->pending_cap * 2 : 64;
        struct bufferevent **grown = realloc(f->pending, cap * sizeof(*grown));
        if (grown == NULL) {
            bufferevent_free(bev);
            return NULL;
        }
        f->pending = grown;
        f->pending_cap = cap;
    }
    f->pending[f->npending++] = bev;
    event_active(f->pending_ev, EV_TIMEOUT, 1);
    f->connections++;
    if (!f->paused && f->connections >= f->server->conf->client.max_connections) {
        f->paused = 1;
        set_accepting(f, 0);
        log_warn("client.max_connections (%u) reached: not accepting until one closes",
                 f->server->conf->client.max_connections);
    }
    return bev;
}

/* A path segment "." or ".." (also percent-encoded) could climb out of the route's
 * prefix on the upstream: refuse rather than guess how the upstream normalises. */
static int has_dot_segment(const char *path)
{
    const char *p = path;

    while (*p != '\0') {
        const char *seg = ++p; /* after '/' */
        int dots = 0, other = 0;
        while (*p != '\0' && *p != '/') {
            if (*p == '.') {
                dots++;
                p++;
            } else if (p[0] == '%' && p[1] == '2' && (p[2] == 'e' || p[2] == 'E')) {
                dots++;
                p += 3;
            } else {
                other = 1;
                p++;
            }
        }
        if (!other && (dots == 1 || dots == 2) && p > seg)
            return 1;
    }
    return 0;
}

static int header_count(struct evkeyvalq *headers, const char *name)
{
    struct evkeyval *h;
    int n = 0;

    TAILQ_FOREACH(h, headers, next)
    n += strcasecmp(h->key, name) == 0;
    return n;
}

static size_t header_bytes(struct evhttp_request *req)
{
    struct evkeyval *h;
    size_t n = strlen(evhttp_request_get_uri(req)) + 16; /* request line */

    TAILQ_FOREACH(h, evhttp_request_get_input_headers(req), next)
    n += strlen(h->key) + strlen(h->value) + 4; /* ": " and CRLF */
    return n;
}

static void request_cb(struct evhttp_request *req, void *arg)
{
    struct listener *l = arg;
    struct server *s = l->frontend->server;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *te = evhttp_find_header(in, "Transfer-Encoding");
    struct request *r = request_new(s, req);

    if (r == NULL) {
        evhttp_send_error(req, 503, "Out of memory");
        return;
    }
    if (s->state != SERVER_RUNNING) {
        request_reply_error(r, 503, "shutdown", 0, "sluice is shutting down");
        return;
    }
    if (header_bytes(req) > s->conf->client.max_header_size) {
        request_reply_error(r, 431, "header_too_large", 0,
                            "request line and headers exceed client.max_header_size (%u bytes)",
                            s->conf->client.max_header_size);
        return;
    }
    /* evhttp already refuses Content-Length with Transfer-Encoding, duplicate lengths
     * and chunked not last; we also refuse codings we would not forward faithfully. */
    if (header_count(in, "Content-Length") > 1 || header_count(in, "Transfer-Encoding") > 1) {
        /* The framing is ambiguous (evhttp used the first): the connection may hold the
         * rest of a smuggled request, so it is closed after this answer. */
        request_reply_error(r, 400, "bad_request", 0,
                            "repeated Content-Length or Transfer-Encoding");
        return;
    }
    if (te != NULL && strcasecmp(te, "chunked") != 0) {
        request_reply_error(r, 400, "bad_request", 0, "unsupported Transfer-Encoding");
        return;
    }
    if (path == NULL || path[0] != '/' || has_dot_segment(path)) {
        request_reply_error(r, 400, "bad_request", 0, "invalid request target");
        return;
    }
    r->route = router_match(s->router, evhttp_request_get_host(req), path);
    if (r->route == NULL) {
        request_reply_error(r, 404, "no_route", 0, "no route for this host and path");
        return;
    }
    r->upstream = s->upstreams[r->route->upstream_index];
    r->client_tls = l->tls != NULL;
    r->key_len = (uint16_t)classify_key(r->route, r->client_ip, in, evhttp_uri_get_query(uri),
                                        r->key, sizeof(r->key));
    r->waiter.cost = classify_cost(r->route, in);
    r->waiter.priority = classify_priority(r->route, in);
    upstream_submit(r->upstream, r);
}

/* Client limits and timeouts from the config, applied to one evhttp (at start and on
 * reload, so kept listeners follow the new values). */
static void listener_apply_limits(struct listener *l, const struct conf *c)
{
    struct timeval tv;

    tv.tv_sec = (time_t)(c->client.timeout_ms / 1000);
    tv.tv_usec = (suseconds_t)((c->client.timeout_ms % 1000) * 1000);
    /* evhttp's own header limit is a memory bound; the exact limit is checked in
     * request_cb so that it can answer 431 rather than evhttp's 413. */
    evhttp_set_max_headers_size(l->http, (ev_ssize_t)c->client.max_header_size * 4);
    evhttp_set_max_body_size(l->http, (ev_ssize_t)c->client.max_body_size);
    evhttp_set_timeout_tv(l->http, &tv);
}

static void listener_free(struct listener *l)
{
    if (l == NULL)
        return;
    if (l->http != NULL)
        evhttp_free(l->http);
    tls_ctx_free(l->tls);
    free(l);
}

/* A new listener for `cl`, bound. NULL with the reason in err. */
static struct listener *listener_new(struct frontend *f, const struct conf *c,
                                     const struct conf_listen *cl, char *err, size_t errlen)
{
    struct listener *l = calloc(1, sizeof(*l));

    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->frontend = f;
    l->conf = cl;
    if (cl->tls.enabled && (l->tls = tls_server_new(c, cl, err, errlen)) == NULL)
        goto fail;
    l->http = evhttp_new(f->server->base);
    if (l->http == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    listener_apply_limits(l, c);
    evhttp_set_default_content_type(l->http, NULL);
    evhttp_set_allowed_methods(l->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(l->http, request_cb, l);
    evhttp_set_bevcb(l->http, bev_cb, l);
    l->bound = evhttp_bind_socket_with_handle(l->http, cl->host, cl->port);
    if (l->bound == NULL) {
        snprintf(err, errlen, "%s:%u:%u: listen %s: cannot bind: %s", c->path, cl->mark.line,
                 cl->mark.col, cl->address, strerror(errno));
        goto fail;
    }
    if (f->paused)
        evconnlistener_disable(evhttp_bound_socket_get_listener(l->bound));
    return l;
fail:
    listener_free(l);
    return NULL;
}

static void listener_close(struct listener *l)
{
    if (l->bound != NULL) {
        evhttp_del_accept_socket(l->http, l->bound);
        l->bound = NULL;
    }
}

/* Same socket? (Same address and port, and TLS or not.) */
static int listener_same(const struct conf_listen *a, const struct conf_listen *b)
{
    return a->port == b->port && strcmp(a->host, b->host) == 0 && a->tls.enabled == b->tls.enabled;
}

struct frontend *frontend_new(struct server *s)
{
    struct frontend *f = calloc(1, sizeof(*f));
    const struct conf *c = s->conf;
    struct listener **tail;
    char err[512];
    size_t i;

    if (f == NULL)
        return NULL;
    f->server = s;
    f->pending_ev = event_new(s->base, -1, 0, pending_cb, f);
    if (f->pending_ev == NULL)
        goto fail;
    event_priority_set(f->pending_ev, 0);
    tail = &f->listeners;
    for (i = 0; i < c->nlisten; i++) {
        struct listener *l = listener_new(f, c, &c->listen[i], err, sizeof(err));
        if (l == NULL) {
            log_error("%s", err);
            goto fail;
        }
        *tail = l;
        tail = &l->next;
        log_info("listening on %s%s", l->conf->address, l->tls ? " (TLS)" : "");
    }
    return f;
fail:
    frontend_free(f);
    return NULL;
}

int frontend_reconfigure(struct frontend *f, const struct conf *c, char *err, size_t errlen)
{
    struct listener **built = calloc(c->nlisten ? c->nlisten : 1, sizeof(*built));
    struct tls_ctx **certs = calloc(c->nlisten ? c->nlisten : 1, sizeof(*certs));
    struct listener *l, *next, **tail;
    size_t i;

    if (built == NULL || certs == NULL) {
        snprintf(err, errlen, "out of memory");
        free(built);
        free(certs);
        return -1;
    }
    /* Prepare everything that can fail (binds, certificates) before changing anything. */
    for (i = 0; i < c->nlisten; i++) {
        const struct conf_listen *cl = &c->listen[i];
        for (l = f->listeners; l != NULL; l = l->next)
            if (listener_same(l->conf, cl))
                break;
        if (l != NULL) {
            /* Kept: the certificate and key are read again, so a renewed pair takes
             * effect on reload; connections already open keep their session. */
            if (cl->tls.enabled && (certs[i] = tls_server_new(c, cl, err, errlen)) == NULL)
                goto rollback;
            continue;
        }
        if ((built[i] = listener_new(f, c, cl, err, errlen)) == NULL)
            goto rollback;
    }
    /* Commit: the new list in config order; listeners no longer configured retire. */
    for (i = 0; i < c->nlisten; i++) {
        const struct conf_listen *cl = &c->listen[i];
        if (built[i] != NULL)
            continue;
        for (tail = &f->listeners; *tail != NULL; tail = &(*tail)->next)
            if (listener_same((*tail)->conf, cl))
                break;
        l = *tail;
        *tail = l->next;
        l->conf = cl;
        if (certs[i] != NULL) {
            tls_ctx_free(l->tls);
            l->tls = certs[i];
        }
        listener_apply_limits(l, c);
        built[i] = l;
    }
    for (l = f->listeners; l != NULL; l = next) {
        next = l->next;
        log_info("listener %s removed by reload: closed", l->conf->address);
        listener_close(l);
        l->conf = NULL;
        l->next = f->retired;
        f->retired = l;
    }
    tail = &f->listeners;
    for (i = 0; i < c->nlisten; i++) {
        *tail = built[i];
        built[i]->next = NULL;
        tail = &built[i]->next;
    }
    free(built);
    free(certs);
    return 0;
rollback:
    for (i = 0; i < c->nlisten; i++) {
        listener_free(built[i]);
        tls_ctx_free(certs[i]);
    }
    free(built);
    free(certs);
    return -1;
}

void frontend_stop_accepting(struct frontend *f)
{
    struct listener *l;

    for (l = f->listeners; l != NULL; l = l->next)
        listener_close(l);
}

void frontend_free(struct frontend *f)
{
    struct listener *l, *next;

    if (f == NULL)
        return;
    for (l = f->listeners; l != NULL; l = next) {
        next = l->next;
        listener_free(l);
    }
    for (l = f->retired; l != NULL; l = next) {
        next = l->next;
        listener_free(l);
    }
    if (f->pending_ev != NULL)
        event_free(f->pending_ev);
    free(f->pending);
    free(f);
}

size_t frontend_connections(const struct frontend *f) { return f->connections; }
