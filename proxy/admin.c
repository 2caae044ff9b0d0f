/*
 * proxy/admin: the operator's HTTP listener. See admin.h.
 *
 * A separate evhttp on the server's event base, bound to admin.address. It is not one
 * of the frontend's listeners, so:
 *   - its connections do not count against client.max_connections (an operator can
 *     still look when the proxy is saturated);
 *   - frontend_stop_accepting() does not close it: while draining, /healthz keeps
 *     answering 503 "draining" so that a load balancer takes the instance out.
 * Every answer is computed in the request callback from the server's live state and
 * sent at once; nothing is kept between requests.
 */
#include "proxy/admin.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "limiter/dispatch.h"
#include "limiter/lease.h"
#include "proxy/clock.h"
#include "proxy/dashboard_assets.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/server.h"
#include "proxy/shared.h"
#include "proxy/status.h"
#include "proxy/upstream.h"

/* Admin requests are small: a request line and a few headers, no body. */
#define ADMIN_MAX_HEADERS 16384
#define ADMIN_MAX_BODY    4096
#define ADMIN_TIMEOUT_S   30
/* Connections at once: a few browsers and scrapers. Beyond, accepting pauses until one
 * closes (the proxy's own cap and listeners are not touched). */
#define ADMIN_MAX_CONNECTIONS 32

struct admin {
    struct server *server;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    size_t conns; /* open admin connections */
    int paused;   /* accepting stopped at ADMIN_MAX_CONNECTIONS */
    struct bufferevent *pending[ADMIN_MAX_CONNECTIONS + 8]; /* awaiting their close callback */
    size_t npending;
    struct event *pending_ev; /* priority 0: registers close callbacks */
};

static void reply(struct evhttp_request *req, int code, const char *phrase, const char *ctype,
                  struct evbuffer *body)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);

    evhttp_add_header(out, "Content-Type", ctype);
    evhttp_add_header(out, "Cache-Control", "no-store");
    /* The dashboard is a page of ours only: its own script and style, its own /status,
     * nothing inline, nothing from elsewhere, never framed. */
    evhttp_add_header(out, "Content-Security-Policy",
                      "default-src 'none'; script-src 'self'; style-src 'self'; "
                      "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                      "form-action 'none'; frame-ancestors 'none'");
    evhttp_add_header(out, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(out, "Referrer-Policy", "no-referrer");
    evhttp_send_reply(req, code, phrase, body);
}

static void set_accepting(struct admin *a, int on)
{
    struct evconnlistener *el = a->bound ? evhttp_bound_socket_get_listener(a->bound) : NULL;

    if (el == NULL)
        return;
    if (on)
        evconnlistener_enable(el);
    else
        evconnlistener_disable(el);
}

static void conn_closed_cb(struct evhttp_connection *evcon, void *arg)
{
    struct admin *a = arg;

    a->conns--;
    if (a->paused && a->conns < ADMIN_MAX_CONNECTIONS) {
        a->paused = 0;
        set_accepting(a, 1);
    }
}

static void pending_cb(evutil_socket_t fd, short what, void *arg)
{
    struct admin *a = arg;
    size_t i;

    for (i = 0; i < a->npending; i++) {
        void *evcon = NULL;
        bufferevent_getcb(a->pending[i], NULL, NULL, NULL, &evcon);
        if (evcon != NULL)
            evhttp_connection_set_closecb(evcon, conn_closed_cb, a);
        else
            a->conns--;
    }
    a->npending = 0;
}

/* evhttp's bufferevent callback: count the connection (see proxy/frontend for why the
 * close callback is set from a priority-0 event). */
static struct bufferevent *bev_cb(struct event_base *base, void *arg)
{
    struct admin *a = arg;
    struct bufferevent *bev;

    if (a->npending == sizeof(a->pending) / sizeof(a->pending[0]))
        return NULL; /* evhttp closes the socket */
    bev = bufferevent_socket_new(base, -1, 0);
    if (bev == NULL)
        return NULL;
    a->pending[a->npending++] = bev;
    event_active(a->pending_ev, EV_TIMEOUT, 1);
    if (++a->conns >= ADMIN_MAX_CONNECTIONS && !a->paused) {
        a->paused = 1;
        set_accepting(a, 0);
    }
    return bev;
}

static void reply_text(struct evhttp_request *req, int code, const char *phrase, const char *text)
{
    struct evbuffer *body = evbuffer_new();

    if (body == NULL) {
        evhttp_send_error(req, 500, "Out of memory");
        return;
    }
    evbuffer_add(body, text, strlen(text));
    reply(req, code, phrase, "text/plain; charset=utf-8", body);
    evbuffer_free(body);
}

static void serve_status(struct admin *a, struct evhttp_request *req)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    struct evbuffer *body = evbuffer_new();
    size_t history = 0;

    if (body == NULL) {
        evhttp_send_error(req, 500, "Out of memory");
        return;
    }
    /* ?history=N: the last N seconds of samples (the dashboard asks for 300). */
    if (query != NULL) {
        struct evkeyvalq params;
        const char *h;
        TAILQ_INIT(&params);
        if (evhttp_parse_query_str(query, &params) == 0 &&
            (h = evhttp_find_header(&params, "history")) != NULL)
            history = (size_t)strtoul(h, NULL, 10);
        evhttp_clear_headers(&params);
    }
    if (status_render(a->server, history, body) != 0) {
        evbuffer_free(body);
        evhttp_send_error(req, 500, "Out of memory");
        return;
    }
    reply(req, 200, "OK", "application/json", body);
    evbuffer_free(body);
}

/* The dashboard's files, compiled in (proxy/dashboard_assets). */
static void serve_asset(struct evhttp_request *req, const struct dashboard_asset *asset)
{
    struct evbuffer *body = evbuffer_new();

    if (body == NULL) {
        evhttp_send_error(req, 500, "Out of memory");
        return;
    }
    evbuffer_add_reference(body, asset->data, asset->len, NULL, NULL);
    reply(req, 200, "OK", asset->type, body);
    evbuffer_free(body);
}

static void serve_metrics(struct admin *a, struct evhttp_request *req)
{
    struct evbuffer *body = evbuffer_new();

    if (body == NULL) {
        evhttp_send_error(req, 500, "Out of memory");
        return;
    }
    if (a->server->metrics != NULL)
        metrics_render(a->server->metrics, a->server, body);
    reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
    evbuffer_free(body);
}

static void request_cb(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const struct dashboard_asset *asset;
    int known;

    if (path == NULL)
        path = "";
    asset = dashboard_asset(path);
    known = asset != NULL || strcmp(path, "/metrics") == 0 || strcmp(path, "/healthz") == 0 ||
            strcmp(path, "/status") == 0;
    if (!known) {
        reply_text(req, 404, "Not Found",
                   "not found: try / (the dashboard), /metrics, /healthz or /status\n");
        return;
    }
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_text(req, 405, "Method Not Allowed", "only GET and HEAD\n");
        return;
    }
    if (asset != NULL)
        serve_asset(req, asset);
    else if (strcmp(path, "/metrics") == 0)
        serve_metrics(a, req);
    else if (strcmp(path, "/status") == 0)
        serve_status(a, req);
    else if (a->server->state == SERVER_RUNNING)
        reply_text(req, 200, "OK", "ok\n");
    else
        reply_text(req, 503, "Service Unavailable", "draining\n");
}

struct admin *admin_new(struct server *s, const struct conf_admin *ca)
{
    struct admin *a = calloc(1, sizeof(*a));

    if (a == NULL) {
        log_error("admin: out of memory");
        return NULL;
    }
    a->server = s;
    a->http = evhttp_new(s->base);
    if (a->http == NULL) {
        log_error("admin: cannot create the HTTP server");
        goto fail;
    }
    evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEADERS);
    evhttp_set_max_body_size(a->http, ADMIN_MAX_BODY);
    evhttp_set_timeout(a->http, ADMIN_TIMEOUT_S);
    evhttp_set_default_content_type(a->http, NULL);
    /* Every method reaches request_cb, which answers 405 itself (evhttp would say 501). */
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(a->http, request_cb, a);
    evhttp_set_bevcb(a->http, bev_cb, a);
    a->pending_ev = event_new(s->base, -1, 0, pending_cb, a);
    if (a->pending_ev == NULL)
        goto fail;
    event_priority_set(a->pending_ev, 0);
    a->bound = evhttp_bind_socket_with_handle(a->http, ca->host, ca->port);
    if (a->bound == NULL) {
        int e = errno;
        log_error("%s:%u:%u: admin.address %s: cannot bind: %s", s->conf->path, ca->mark.line,
                  ca->mark.col, ca->address, strerror(e));
        goto fail;
    }
    log_info("admin listening on %s", ca->address);
    return a;
fail:
    admin_free(a);
    return NULL;
}

void admin_free(struct admin *a)
{
    if (a == NULL)
        return;
    a->paused = 0; /* connections closing below must not re-enable the listener */
    a->bound = NULL;
    if (a->http != NULL)
        evhttp_free(a->http); /* closes the listener and every admin connection */
    if (a->pending_ev != NULL)
        event_free(a->pending_ev);
    free(a);
}
