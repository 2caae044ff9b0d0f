/*
 * proxy/frontend: listeners, client connections, and the first look at each request.
 *
 *   accept ─> bev_cb: count the connection (at client.max_connections stop accepting),
 *             put a gate (proxy/gate) on its input: evhttp reads only checked bytes
 *   evhttp reads a complete request (body included)
 *   ─> request_cb: a request the gate refused is answered with its error (4xx, then
 *      close); paths that could climb out of a route are refused; route (404 when no
 *      route), then upstream_submit() takes it.
 *
 * Connections: evhttp tells us of a new connection only through the bufferevent
 * callback, before the connection object exists, and of its end only through the
 * connection's close callback. So bev_cb makes our struct client_conn and queues it,
 * and a priority-0 event (it runs before any I/O of the new connection can) finds the
 * evhttp connection behind it (evhttp registers it as the bufferevent's callback
 * argument), installs the close callback and files the client_conn under its socket,
 * which is how request_cb finds the gate of the connection a request came on.
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
#include "proxy/aggregate.h"
#include "proxy/classify.h"
#include "proxy/clock.h"
#include "proxy/gate.h"
#include "proxy/http1.h"
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

/* One client connection, from accept to evhttp's close callback. */
struct client_conn {
    struct frontend *frontend;
    struct bufferevent *bev;          /* evhttp's */
    struct evhttp_connection *evcon;  /* evhttp's; known from pending_cb on */
    evutil_socket_t fd;               /* -1 until pending_cb */
    struct gate *gate;                /* owned: the strict check of its input */
    uint64_t requests;                /* requests evhttp has handed to request_cb */
    struct request *relaying;         /* its answer is being written (frontend_bind_request) */
    struct client_conn *next_pending; /* in frontend.pending until pending_cb */
    int refused;                      /* accepted over client.max_connections: answered 503 */
    int cut_status;                   /* the gate was cut (gate_cut): its stand-in gets this */
    const char *cut_reason;           /* ... with this Sluice-Reason */
    uint64_t head_deadline_ns;        /* in the head list: when its head must be complete */
    struct client_conn *head_prev, *head_next;
    int in_head_list;
};

/* How many connections beyond client.max_connections may be in the middle of being told
 * 503 connection_limit before accepting pauses anyway: the bound on file descriptors. */
#define REFUSING_MAX  64
#define FD_BACKOFF_MS 100 /* accept() out of file descriptors: stop accepting this long */

struct frontend {
    struct server *server;
    struct listener *listeners;  /* serving, in config order */
    struct listener *retired;    /* closed by a reload; their connections finish, freed at exit */
    size_t connections;          /* open client connections served (the cap counts these) */
    size_t refusing;             /* connections over the cap being answered 503 */
    int accepting;               /* the listeners are enabled */
    int cap_paused;              /* pause mode at the cap, or REFUSING_MAX reached */
    int fd_paused;               /* backing off after accept() ran out of descriptors */
    int closing;                 /* frontend_free: nothing may re-enable listeners */
    struct event *fd_backoff;    /* ends fd_paused */
    uint64_t fd_logged_ns;       /* last log line about it (at most one a second) */
    uint64_t fd_failures;        /* accept() failures since that line */
    struct client_conn *pending; /* new connections awaiting their close callback */
    struct event *pending_ev;    /* priority 0: registers close callbacks */
    struct client_conn **by_fd;  /* open connections by socket */
    size_t by_fd_cap;
    struct client_conn *head_first, *head_last; /* waiting for a head, oldest deadline first */
    struct event *head_timer;                   /* the one timer: the first one's deadline */
};

/* evconnlistener's error callback gets evhttp's argument, not ours; there is one front
 * end per process, so this is how that callback finds it. */
static struct frontend *error_frontend;

static void set_accepting(struct frontend *f, int on)
{
    struct listener *l;

    f->accepting = on;
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

/* Accept while below the cap (pause mode) or the refusal bound (reject mode), and not
 * backing off from a lack of file descriptors. */
static void update_accepting(struct frontend *f)
{
    const struct conf_client *cl = &f->server->conf->client;
    int cap = cl->on_max_connections == CONF_CONN_PAUSE ? f->connections >= cl->max_connections
                                                        : f->refusing >= REFUSING_MAX;
    int want;

    if (cap != f->cap_paused) {
        f->cap_paused = cap;
        if (cap)
            log_warn("client.max_connections (%u) reached: %s", cl->max_connections,
                     cl->on_max_connections == CONF_CONN_PAUSE
                         ? "not accepting until one closes"
                         : "answering 503 connection_limit, and not accepting more until "
                           "those are answered");
        else
            log_info("below client.max_connections (%u): accepting again", cl->max_connections);
    }
    want = !f->cap_paused && !f->fd_paused && !f->closing;
    if (want != f->accepting)
        set_accepting(f, want);
}

/* ---- the head deadline (client.header_timeout) ----------------------------------------
 * Every connection waiting for a request head is in one list, in order of deadline
 * (each gets now + header_timeout when it starts waiting), and one timer is armed for
 * the first: no timer per connection. A connection waits from accept, and again from
 * the first byte of each later head, until the head is complete. */

static void head_timer_arm(struct frontend *f)
{
    struct timeval tv;
    uint64_t now;

    if (f->head_first == NULL) {
        evtimer_del(f->head_timer);
        return;
    }
    now = clock_now_ns();
    tv = clock_ns_timeval(
        f->head_first->head_deadline_ns > now ? f->head_first->head_deadline_ns - now : 0);
    evtimer_add(f->head_timer, &tv);
}

static void head_wait(struct frontend *f, struct client_conn *cc)
{
    if (cc->in_head_list)
        return;
    cc->head_deadline_ns = clock_now_ns() + f->server->conf->client.header_timeout_ms * NS_PER_MS;
    cc->in_head_list = 1;
    cc->head_next = NULL;
    cc->head_prev = f->head_last;
    if (f->head_last != NULL)
        f->head_last->head_next = cc;
    else
        f->head_first = cc;
    f->head_last = cc;
    if (f->head_first == cc)
        head_timer_arm(f);
}

static void head_done(struct frontend *f, struct client_conn *cc)
{
    if (!cc->in_head_list)
        return;
    if (cc->head_prev != NULL)
        cc->head_prev->head_next = cc->head_next;
    else
        f->head_first = cc->head_next;
    if (cc->head_next != NULL)
        cc->head_next->head_prev = cc->head_prev;
    else
        f->head_last = cc->head_prev;
    cc->in_head_list = 0;
    cc->head_prev = cc->head_next = NULL;
}

/* The gate took new bytes: is a head pending now? */
static void conn_input_cb(void *arg)
{
    struct client_conn *cc = arg;

    if (gate_head_pending(cc->gate))
        head_wait(cc->frontend, cc);
    else
        head_done(cc->frontend, cc);
}

/* Stop reading this connection and answer its next request with `status` / `reason`
 * (the front end's own refusals: 408 header_timeout, 503 connection_limit). May run
 * request_cb, and close the connection, before it returns: cc is not touched after. */
static void conn_cut(struct client_conn *cc, int status, const char *reason)
{
    cc->cut_status = status;
    cc->cut_reason = reason;
    gate_cut(cc->gate);
}

static void head_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct frontend *f = arg;
    uint64_t now = clock_now_ns();

    while (f->head_first != NULL && f->head_first->head_deadline_ns <= now) {
        struct client_conn *cc = f->head_first;
        head_done(f, cc);
        log_info("client %s: request headers not complete within client.header_timeout; 408",
                 cc->evcon ? "connection" : "(new)");
        conn_cut(cc, 408, "header_timeout");
    }
    head_timer_arm(f);
}

static void conn_free(struct client_conn *cc)
{
    gate_free(cc->gate);
    free(cc);
}

/* evhttp is freeing a client connection (the bufferevent still exists). */
static void conn_closed_cb(struct evhttp_connection *evcon, void *arg)
{
    struct client_conn *cc = arg;
    struct frontend *f = cc->frontend;

    /* Its answer was being written: the request learns that its client left. */
    if (cc->relaying != NULL) {
        struct request *r = cc->relaying;
        cc->relaying = NULL;
        request_client_closed(r);
    }
    if (cc->fd >= 0 && (size_t)cc->fd < f->by_fd_cap && f->by_fd[cc->fd] == cc)
        f->by_fd[cc->fd] = NULL;
    head_done(f, cc);
    if (cc->refused)
        f->refusing--;
    else
        f->connections--;
    conn_free(cc);
    server_check_idle(f->server);
    update_accepting(f);
}

/* The client_conn of an evhttp connection, found by its socket. */
static struct client_conn *conn_of(struct frontend *f, struct evhttp_connection *evcon)
{
    evutil_socket_t fd;
    struct client_conn *cc;

    if (evcon == NULL)
        return NULL;
    fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
    if (fd < 0 || (size_t)fd >= f->by_fd_cap)
        return NULL;
    cc = f->by_fd[fd];
    return cc != NULL && cc->evcon == evcon ? cc : NULL;
}

void frontend_bind_request(struct frontend *f, struct evhttp_connection *evcon, struct request *r)
{
    struct client_conn *cc = conn_of(f, evcon);

    if (cc != NULL)
        cc->relaying = r;
}

static int file_by_fd(struct frontend *f, struct client_conn *cc)
{
    if ((size_t)cc->fd >= f->by_fd_cap) {
        size_t cap = f->by_fd_cap ? f->by_fd_cap : 256;
        struct client_conn **grown;
        while (cap <= (size_t)cc->fd)
            cap *= 2;
        grown = realloc(f->by_fd, cap * sizeof(*grown));
        if (grown == NULL)
            return -1;
        memset(grown + f->by_fd_cap, 0, (cap - f->by_fd_cap) * sizeof(*grown));
        f->by_fd = grown;
        f->by_fd_cap = cap;
    }
    f->by_fd[cc->fd] = cc;
    return 0;
}

static void pending_cb(evutil_socket_t fd, short what, void *arg)
{
    struct frontend *f = arg;
    struct client_conn *cc, *next;

    for (cc = f->pending; cc != NULL; cc = next) {
        void *evcon = NULL;
        next = cc->next_pending;
        cc->next_pending = NULL;
        bufferevent_getcb(cc->bev, NULL, NULL, NULL, &evcon);
        cc->evcon = evcon;
        cc->fd = bufferevent_getfd(cc->bev);
        if (evcon == NULL || cc->fd < 0 || file_by_fd(f, cc) != 0) {
            /* evhttp could not make the connection (out of memory): nothing will come. */
            log_error("cannot track a new client connection; closing it");
            if (evcon != NULL)
                evhttp_connection_free(evcon); /* calls no close callback: none is set */
            if (cc->refused)
                f->refusing--;
            else
                f->connections--;
            conn_free(cc);
            continue;
        }
        evhttp_connection_set_closecb(evcon, conn_closed_cb, cc);
        gate_on_input(cc->gate, conn_input_cb, cc);
        if (cc->refused)
            /* Over client.max_connections: a fast, clear answer rather than a wait in the
             * kernel's backlog; nothing of the request is read beyond what is dropped. */
            conn_cut(cc, 503, "connection_limit");
        else
            head_wait(f, cc);
    }
    f->pending = NULL;
    update_accepting(f);
}

static struct bufferevent *bev_cb(struct event_base *base, void *arg)
{
    struct listener *l = arg;
    struct frontend *f = l->frontend;
    const struct conf_client *cl = &f->server->conf->client;
    struct http1_limits limits = {.max_head = cl->max_header_size, .max_body = cl->max_body_size};
    struct bufferevent *bev =
        l->tls ? tls_server_bev(l->tls, base) : bufferevent_socket_new(base, -1, 0);
    struct client_conn *cc = calloc(1, sizeof(*cc));

    if (bev == NULL || cc == NULL)
        goto fail;
    cc->frontend = f;
    cc->bev = bev;
    cc->fd = -1;
    cc->gate = gate_new(base, HTTP1_STREAM_REQUESTS, &limits);
    if (cc->gate == NULL || gate_attach(cc->gate, bev) != 0)
        goto fail;
    cc->next_pending = f->pending;
    f->pending = cc;
    event_active(f->pending_ev, EV_TIMEOUT, 1);
    if (f->connections >= cl->max_connections && cl->on_max_connections == CONF_CONN_REJECT) {
        cc->refused = 1;
        f->refusing++;
    } else {
        f->connections++;
    }
    /* At a bound, stop now: the listener's accept loop checks after each connection. */
    update_accepting(f);
    return bev;
fail:
    if (cc != NULL)
        conn_free(cc);
    if (bev != NULL)
        bufferevent_free(bev);
    return NULL;
}

/* Length of a path separator at p as some upstream may read it: "/", "\\" (Windows
 * servers), or their percent-encodings "%2f" and "%5c" (servers that decode before
 * splitting); 0 when p is not one. */
static int separator_len(const char *p)
{
    if (*p == '/' || *p == '\\')
        return 1;
    if (p[0] == '%' && (p[1] == '2' || p[1] == '5') && p[2] != '\0') {
        char b = (char)(p[2] | 0x20);
        if ((p[1] == '2' && b == 'f') || (p[1] == '5' && b == 'c'))
            return 3;
    }
    return 0;
}

/* Could the upstream resolve this path outside the route's prefix? Refused rather than
 * guessed: a dot segment ("." or "..", dots also percent-encoded, a segment also ending
 * at ";params" as Tomcat reads "..;", or at "%3b" for servers that decode first)
 * between any separators an upstream may use, and
 * an encoded NUL. Encoded slashes elsewhere stay: APIs use them inside names
 * (GitLab's "group%2Fproject"). */
static int unsafe_path(const char *path)
{
    const char *p = path;

    while (*p != '\0') {
        int dots = 0, other = 0, sep = separator_len(p);
        if (sep == 0) { /* not at a separator: skip to the next one */
            if (p[0] == '%' && p[1] == '0' && p[2] == '0')
                return 1;
            p++;
            continue;
        }
        p += sep;
        while (*p != '\0' && separator_len(p) == 0 && *p != ';' &&
               !(p[0] == '%' && p[1] == '3' && (p[2] | 0x20) == 'b')) {
            if (*p == '.') {
                dots++;
                p++;
            } else if (p[0] == '%' && p[1] == '2' && (p[2] == 'e' || p[2] == 'E')) {
                dots++;
                p += 3;
            } else {
                if (p[0] == '%' && p[1] == '0' && p[2] == '0')
                    return 1;
                other = 1;
                p++;
            }
        }
        if (!other && (dots == 1 || dots == 2))
            return 1;
    }
    return 0;
}

/* The conf_method bit of an evhttp_cmd_type (0 for a method sluice does not forward). */
static uint32_t method_bit(int cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return CONF_METHOD_GET;
    case EVHTTP_REQ_HEAD:
        return CONF_METHOD_HEAD;
    case EVHTTP_REQ_POST:
        return CONF_METHOD_POST;
    case EVHTTP_REQ_PUT:
        return CONF_METHOD_PUT;
    case EVHTTP_REQ_DELETE:
        return CONF_METHOD_DELETE;
    case EVHTTP_REQ_OPTIONS:
        return CONF_METHOD_OPTIONS;
    case EVHTTP_REQ_PATCH:
        return CONF_METHOD_PATCH;
    default:
        return 0;
    }
}

static void request_cb(struct evhttp_request *req, void *arg)
{
    struct listener *l = arg;
    struct frontend *f = l->frontend;
    struct server *s = f->server;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    struct client_conn *cc = conn_of(f, evhttp_request_get_connection(req));
    struct request *r = request_new(s, req);
    uint64_t refused;

    if (r == NULL) {
        evhttp_send_error(req, 503, "Out of memory");
        return;
    }
    if (cc == NULL) {
        /* Cannot happen (pending_cb runs before any I/O): without the gate's verdict the
         * request cannot be trusted. */
        request_reply_error(r, 503, "internal_error", 0, "connection not tracked");
        return;
    }
    cc->requests++;
    if (cc->cut_status != 0 && gate_cut_message(cc->gate) == cc->requests) {
        request_forget_target(r);
        request_reply_error(r, cc->cut_status, cc->cut_reason, cc->cut_status == 503 ? 1 : 0, "%s",
                            cc->cut_status == 503
                                ? "too many client connections (client.max_connections)"
                                : "request headers not complete within client.header_timeout");
        return;
    }
    refused = gate_refused_message(cc->gate);
    if (refused != 0 && refused == cc->requests) {
        /* What evhttp handed over is the gate's stand-in (or a body it cut short): the
         * client's own request was refused, and the connection closes after this. */
        enum http1_error e = gate_error(cc->gate);
        request_forget_target(r);
        request_reply_error(r, http1_error_status(e), http1_error_reason(e), 0, "%s",
                            http1_error_text(e));
        return;
    }
    if (s->state != SERVER_RUNNING) {
        request_reply_error(r, 503, "shutdown", 0, "sluice is shutting down");
        return;
    }
    if (path == NULL || path[0] != '/' || unsafe_path(path)) {
        request_reply_error(r, 400, "bad_request", 0, "invalid request target");
        return;
    }
    r->route = router_match(s->router, evhttp_request_get_host(req), path);
    if (r->route == NULL) {
        request_reply_error(r, 404, "no_route", 0, "no route for this host and path");
        return;
    }
    r->client_tls = l->tls != NULL;
    if (r->route->aggregate != NULL) {
        if (!(r->route->methods & method_bit(evhttp_request_get_command(req)))) {
            request_reply_error(r, 405, "method_not_allowed", 0,
                                "this aggregate route does not take this method (methods:)");
            return;
        }
        aggregate_start(r);
        return;
    }
    r->upstream = s->upstreams[r->route->upstream_index];
    r->key_len = (uint16_t)classify_key(r->route, r->client_ip, in, evhttp_uri_get_query(uri),
                                        r->key, sizeof(r->key));
    r->waiter.cost = classify_cost(r->route, in);
    r->waiter.priority = classify_priority(r->route, in);
    upstream_submit(r->upstream, r);
}

static void fd_backoff_cb(evutil_socket_t fd, short what, void *arg)
{
    struct frontend *f = arg;

    f->fd_paused = 0;
    update_accepting(f);
}

/* accept() failed. Out of file descriptors (or kernel memory) the listening socket stays
 * readable, so retrying at once would spin: stop accepting for FD_BACKOFF_MS, and say
 * so at most once a second (the clients wait in the backlog meanwhile). */
static void accept_error_cb(struct evconnlistener *el, void *arg)
{
    struct frontend *f = error_frontend;
    int err = EVUTIL_SOCKET_ERROR();
    uint64_t now = clock_now_ns();

    if (f == NULL)
        return;
    f->fd_failures++;
    if (now - f->fd_logged_ns >= NS_PER_SEC) {
        log_warn("accept: %s (%llu failures in the last second): not accepting for %d ms; "
                 "raise the open-file limit (LimitNOFILE, ulimit -n) or lower "
                 "client.max_connections",
                 strerror(err), (unsigned long long)f->fd_failures, FD_BACKOFF_MS);
        f->fd_logged_ns = now;
        f->fd_failures = 0;
    }
    if (!f->fd_paused) {
        struct timeval tv = clock_ms_timeval(FD_BACKOFF_MS);
        f->fd_paused = 1;
        update_accepting(f);
        evtimer_add(f->fd_backoff, &tv);
    }
}

/* Client limits and timeouts from the config, applied to one evhttp (at start and on
 * reload, so kept listeners follow the new values). */
static void listener_apply_limits(struct listener *l, const struct conf *c)
{
    struct timeval tv;

    tv.tv_sec = (time_t)(c->client.timeout_ms / 1000);
    tv.tv_usec = (suseconds_t)((c->client.timeout_ms % 1000) * 1000);
    /* The gate enforces both limits exactly (431, 413 with a reason); evhttp's own are a
     * backstop, with room for a head the gate rewrote (absolute-form: a new Host). */
    evhttp_set_max_headers_size(l->http, (ev_ssize_t)c->client.max_header_size + 4096);
    evhttp_set_max_body_size(l->http, (ev_ssize_t)c->client.max_body_size);
    evhttp_set_timeout_tv(l->http, &tv);
}

static void listener_free(struct listener *l)
{
    if (l == NULL)
        return;
    if (l->http != NULL)
        evhttp_free(l->http);
    tls_ctx_release(l->tls);
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
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(l->bound), accept_error_cb);
    if (!f->accepting)
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
    f->accepting = 1;
    error_frontend = f;
    f->pending_ev = event_new(s->base, -1, 0, pending_cb, f);
    f->head_timer = evtimer_new(s->base, head_timer_cb, f);
    f->fd_backoff = evtimer_new(s->base, fd_backoff_cb, f);
    if (f->pending_ev == NULL || f->head_timer == NULL || f->fd_backoff == NULL)
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
            tls_ctx_release(l->tls);
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
        tls_ctx_release(certs[i]);
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
    f->closing = 1; /* closing connections must not re-enable listeners being freed */
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
    if (f->head_timer != NULL)
        event_free(f->head_timer);
    if (f->fd_backoff != NULL)
        event_free(f->fd_backoff);
    if (error_frontend == f)
        error_frontend = NULL;
    free(f->by_fd);
    free(f);
}

size_t frontend_connections(const struct frontend *f) { return f->connections; }
