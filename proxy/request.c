/*
 * proxy/request: the per-request context, its one state, and the answers sluice
 * produces itself. See request.h for who holds a request when.
 *
 * Ending a request is two steps, so that nothing ever runs on freed memory:
 *   request_finish: the request is over (DONE): client let go, reported, unlinked from
 *                   the server's open list, put on the server's reap list;
 *   request_reap:   from the server's reaper event (after the callback chain that
 *                   finished it has unwound), the memory and what it holds are freed.
 * This is PgBouncer's JUSTFREE / Redis's freeClientAsync.
 */
#include "proxy/request.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "proxy/accesslog.h"
#include "proxy/clock.h"
#include "proxy/confgen.h"
#include "proxy/forward.h"
#include "proxy/frontend.h"
#include "proxy/metrics.h"
#include "proxy/rlfields.h"
#include "proxy/server.h"
#include "proxy/upstream.h"

/* What every request starts with: an id, its config generation held, the admitting
 * state, a waiter of cost 1, and a place on the server's list of open requests. */
static void request_start(struct request *r, struct server *s, struct confgen *gen)
{
    r->id = ++s->next_request_id;
    r->server = s;
    r->gen = gen;
    confgen_hold(r->gen);
    r->state = REQUEST_ADMITTING;
    r->waiter.data = r;
    r->waiter.cost = 1;
    r->arrived_ns = clock_now_ns();
    s->requests_open++;
    r->all_next = s->requests;
    if (s->requests != NULL)
        s->requests->all_prev = r;
    s->requests = r;
}

struct request *request_new(struct server *s, struct evhttp_request *client)
{
    struct request *r = calloc(1, sizeof(*r));
    struct evhttp_connection *evcon;
    char *addr = NULL;
    uint16_t port = 0;

    if (r == NULL)
        return NULL;
    request_start(r, s, s->gen);
    r->client = client;
    evcon = evhttp_request_get_connection(client);
    if (evcon != NULL)
        evhttp_connection_get_peer(evcon, &addr, &port);
    snprintf(r->client_ip, sizeof(r->client_ip), "%s", addr ? addr : "-");
    r->method = request_method_name(evhttp_request_get_command(client));
    if (s->access != NULL) {
        const char *ua = evhttp_find_header(evhttp_request_get_input_headers(client), "User-Agent");
        r->target = strdup(evhttp_request_get_uri(client));
        r->user_agent = ua ? strdup(ua) : NULL;
    }
    return r;
}

struct request *request_new_part(struct request *parent, const char *target, int method,
                                 struct evbuffer *body, const struct request_sink *sink)
{
    struct server *s = parent->server;
    struct request *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->part_target = strdup(target);
    if (body != NULL && evbuffer_get_length(body) > 0) {
        /* A copy of its own per part (a POST fan-out): forward shares it by reference for
         * retries, and a reference of a reference is refused by libevent. Bounded by
         * client.max_body_size. */
        r->part_body = evbuffer_new();
        if (r->part_body != NULL &&
            evbuffer_add(r->part_body, evbuffer_pullup(body, -1), evbuffer_get_length(body)) != 0) {
            evbuffer_free(r->part_body);
            r->part_body = NULL;
        }
    }
    r->collected = evbuffer_new();
    if (r->part_target == NULL || r->collected == NULL ||
        (body != NULL && evbuffer_get_length(body) > 0 && r->part_body == NULL)) {
        free(r->part_target);
        if (r->part_body != NULL)
            evbuffer_free(r->part_body);
        if (r->collected != NULL)
            evbuffer_free(r->collected);
        free(r);
        return NULL;
    }
    request_start(r, s, parent->gen);
    r->sink = *sink;
    r->parent_id = parent->id;
    r->part_method = method;
    r->client_tls = parent->client_tls;
    memcpy(r->client_ip, parent->client_ip, sizeof(r->client_ip));
    r->method = request_method_name(method);
    if (s->access != NULL) {
        r->target = strdup(target);
        r->user_agent = parent->user_agent ? strdup(parent->user_agent) : NULL;
    }
    return r;
}

void request_set_state(struct request *r, enum request_state state)
{
    /* DONE is entered only through request_finish, and never left. */
    if (r->state != REQUEST_DONE && state != REQUEST_DONE)
        r->state = state;
}

void request_log(const struct request *r, enum log_level level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_write(level, "req=%llu route=%s upstream=%s: %s", (unsigned long long)r->id,
              r->route ? r->route->path_prefix : "-",
              r->upstream ? upstream_name(r->upstream) : "-", msg);
}

static void unwatch_client(struct request *r)
{
    if (r->client_watch != NULL) {
        event_free(r->client_watch);
        r->client_watch = NULL;
    }
}

void request_detach_client(struct request *r, enum request_detach how)
{
    struct evhttp_request *client = r->client;
    struct evhttp_connection *evcon;

    unwatch_client(r);
    if (client == NULL)
        return;
    r->client = NULL;
    evcon = evhttp_request_get_connection(client);
    /* First unbind, so that closing the connection below cannot report a hang-up back
     * to this request (request_client_closed): the client side ends here, once. */
    if (r->client_bound) {
        if (evcon != NULL)
            frontend_bind_request(r->server->frontend, evcon, NULL);
        r->client_bound = 0;
    }
    switch (how) {
    case REQUEST_ANSWERED:
        break; /* evhttp writes the answer, then keeps or closes the connection */
    case REQUEST_CLOSE:
        if (evcon != NULL)
            evhttp_connection_free(evcon); /* frees evhttp's request with it */
        break;
    case REQUEST_GONE:
        /* evhttp detaches an unfinished request from a failed connection and leaves it
         * to us; one still attached is freed by evhttp with the connection. */
        if (evcon == NULL)
            evhttp_request_free(client);
        break;
    }
}

static void report(struct request *r)
{
    struct server *s = r->server;
    const char *route = r->route ? r->route->path_prefix : NULL;
    const char *upstream = r->upstream ? upstream_name(r->upstream) : NULL;
    uint64_t queue_ns = METRICS_NONE, upstream_ns = METRICS_NONE;

    if (r->status == 0) {
        r->status = 499; /* nginx's "client closed request" */
        r->reason = "client_closed";
    }
    if (r->waiter.enqueued_ns != 0)
        queue_ns = (r->released_ns ? r->released_ns : clock_now_ns()) - r->arrived_ns;
    if (r->sent_ns != 0 && r->headers_ns != 0)
        upstream_ns = r->headers_ns - r->sent_ns;
    if (s->metrics != NULL)
        metrics_request_done(s->metrics, upstream, route, r->status, r->reason, queue_ns,
                             upstream_ns, queue_ns == METRICS_NONE ? -1 : r->waiter.prio_class);
    if (s->access != NULL) {
        struct accesslog_entry e = {
            .id = r->id,
            .client = r->client_ip,
            .method = r->method,
            .target = r->target,
            .user_agent = r->user_agent,
            .route = route,
            .upstream = upstream,
            .reason = r->reason,
            .status = r->status,
            .bytes = r->bytes_out,
            .queue_ms = queue_ns == METRICS_NONE ? -1 : (int64_t)(queue_ns / NS_PER_MS),
            .upstream_ms = upstream_ns == METRICS_NONE ? -1 : (int64_t)(upstream_ns / NS_PER_MS),
            .parent = r->parent_id,
        };
        accesslog_write(s->access, &e);
    }
}

void request_finish(struct request *r)
{
    struct server *s;

    if (r == NULL || r->state == REQUEST_DONE)
        return;
    s = r->server;
    request_detach_client(r, REQUEST_CLOSE); /* still attached: it got no answer */
    if (r->sink.done != NULL) {
        /* A part ended without an answer of its own (cut short): its aggregate must
         * still hear of it, once. */
        void (*done)(void *, struct request *, int, const char *, struct evbuffer *) = r->sink.done;
        r->sink.done = NULL;
        done(r->sink.arg, r, r->status ? r->status : 502, r->reason ? r->reason : "upstream_error",
             NULL);
    }
    r->state = REQUEST_DONE;
    report(r);
    /* Out of the open list, onto the reap list (same links). */
    if (r->all_prev != NULL)
        r->all_prev->all_next = r->all_next;
    else
        s->requests = r->all_next;
    if (r->all_next != NULL)
        r->all_next->all_prev = r->all_prev;
    r->all_prev = NULL;
    r->all_next = s->reap_requests;
    s->reap_requests = r;
    if (s->request_reaper != NULL)
        event_active(s->request_reaper, EV_TIMEOUT, 1);
    s->requests_open--;
    server_check_idle(s);
}

void request_reap(struct server *s)
{
    while (s->reap_requests != NULL) {
        struct request *r = s->reap_requests;
        s->reap_requests = r->all_next;
        /* Ours since evhttp_request_own: evhttp has let go of both by now. */
        if (r->outgoing != NULL)
            evhttp_request_free(r->outgoing);
        if (r->spent != NULL)
            evhttp_request_free(r->spent);
        free(r->target);
        free(r->user_agent);
        free(r->part_target);
        if (r->part_body != NULL)
            evbuffer_free(r->part_body);
        if (r->collected != NULL)
            evbuffer_free(r->collected);
        confgen_release(r->gen);
        free(r);
    }
}

uint64_t request_queue_wait_ms(const struct request *r)
{
    uint64_t end = r->released_ns ? r->released_ns : clock_now_ns();
    return end > r->arrived_ns ? (end - r->arrived_ns) / NS_PER_MS : 0;
}

void request_forget_target(struct request *r)
{
    free(r->target);
    free(r->user_agent);
    r->target = NULL;
    r->user_agent = NULL;
    r->method = "-";
}

const char *request_method_name(int cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    default:
        return "-";
    }
}

static const char *status_phrase(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 417:
        return "Expectation Failed";
    case 431:
        return "Request Header Fields Too Large";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Error";
    }
}

/* The Allow of a 405: what the route takes (an aggregate route's methods:), else every
 * method sluice forwards. */
static const char *allowed_methods(const struct request *r, char *buf, size_t len)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } m[] = {{CONF_METHOD_GET, "GET"},       {CONF_METHOD_HEAD, "HEAD"},
             {CONF_METHOD_POST, "POST"},     {CONF_METHOD_PUT, "PUT"},
             {CONF_METHOD_DELETE, "DELETE"}, {CONF_METHOD_OPTIONS, "OPTIONS"},
             {CONF_METHOD_PATCH, "PATCH"}};
    size_t i, used = 0;

    if (r->route == NULL || r->route->aggregate == NULL)
        return "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH";
    buf[0] = '\0';
    for (i = 0; i < sizeof(m) / sizeof(m[0]); i++)
        if (r->route->methods & m[i].bit) {
            int n = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", m[i].name);
            if (n > 0 && (size_t)n < len - used)
                used += (size_t)n;
        }
    return buf;
}

void request_send(struct request *r, int status, const char *phrase, struct evbuffer *body)
{
    size_t len = body ? evbuffer_get_length(body) : 0;

    /* A HEAD gets the head a GET would: its Content-Length, and no body (evhttp would
     * send it after the head, where a keep-alive client reads it as the next answer). */
    if (evhttp_request_get_command(r->client) == EVHTTP_REQ_HEAD) {
        char cl[24];
        snprintf(cl, sizeof(cl), "%zu", len);
        evhttp_remove_header(evhttp_request_get_output_headers(r->client), "Content-Length");
        evhttp_add_header(evhttp_request_get_output_headers(r->client), "Content-Length", cl);
        evhttp_send_reply(r->client, status, phrase, NULL);
        return;
    }
    r->bytes_out = len;
    evhttp_send_reply(r->client, status, phrase, body);
}

void request_reply_error(struct request *r, int status, const char *reason, uint32_t retry_after_s,
                         const char *fmt, ...)
{
    struct evbuffer *body;
    struct evkeyvalq *out;
    char msg[512];
    char num[80];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    request_log(r, status >= 500 ? LOG_LEVEL_WARN : LOG_LEVEL_INFO, "%d %s: %s", status, reason,
                msg);
    r->status = status;
    r->reason = reason;
    if (r->sink.done != NULL && r->state != REQUEST_DONE) {
        /* A part: the aggregate hears of it instead of a client. */
        r->sink.done(r->sink.arg, r, status, reason, NULL);
        r->sink.done = NULL;
    }
    if (r->client != NULL) {
        out = evhttp_request_get_output_headers(r->client);
        evhttp_clear_headers(out);
        evhttp_add_header(out, "Content-Type", "text/plain; charset=utf-8");
        evhttp_add_header(out, "Sluice-Reason", reason);
        if (retry_after_s > 0) {
            snprintf(num, sizeof(num), "%u", retry_after_s);
            evhttp_add_header(out, "Retry-After", num);
        }
        if (status == 503)
            rlfields_add(r->upstream, r->route, r->key, r->key_len, out);
        if (r->released_ns != 0 || r->state == REQUEST_QUEUED) {
            snprintf(num, sizeof(num), "%llu", (unsigned long long)request_queue_wait_ms(r));
            evhttp_add_header(out, "Sluice-Queue-Wait", num);
        }
        /* A 4xx of ours (but 404) means the request was refused as it was read: what
         * follows on the connection cannot be trusted (or was never read). Close. */
        if ((status >= 400 && status < 500 && status != 404) || server_is_draining(r->server))
            evhttp_add_header(out, "Connection", "close");
        if (status == 405)
            evhttp_add_header(out, "Allow", allowed_methods(r, num, sizeof(num)));
        body = evbuffer_new();
        if (body != NULL)
            evbuffer_add_printf(body, "%d %s: %s\n", status, reason, msg);
        request_send(r, status, status_phrase(status), body);
        if (body != NULL)
            evbuffer_free(body);
        request_detach_client(r, REQUEST_ANSWERED);
    }
    request_finish(r);
}

/* The client is gone (its side already detached): take the request out of wherever it
 * is, and finish it. */
static void withdraw(struct request *r)
{
    if (r->on_client_gone != NULL && r->state != REQUEST_DONE) {
        r->on_client_gone(r);
        return;
    }
    switch (r->state) {
    case REQUEST_QUEUED:
        upstream_withdraw(r->upstream, r);
        request_finish(r);
        break;
    case REQUEST_IN_FLIGHT:
    case REQUEST_RELAYING:
        forward_abort(r); /* cancels the exchange and finishes r */
        break;
    case REQUEST_ADMITTING:
        request_finish(r);
        break;
    case REQUEST_DONE:
        break;
    }
}

/* EV_CLOSED on the client socket while watched: evhttp is not reading that socket, so
 * the connection is ours to close. */
static void client_closed_cb(evutil_socket_t fd, short what, void *arg)
{
    struct request *r = arg;

    request_log(r, LOG_LEVEL_INFO, "client closed the connection %s",
                r->state == REQUEST_QUEUED ? "while queued" : "while in flight");
    request_detach_client(r, REQUEST_CLOSE);
    withdraw(r);
}

void request_client_closed(struct request *r)
{
    request_log(r, LOG_LEVEL_INFO, "client closed the connection during the answer");
    r->client_bound = 0; /* evhttp is calling us from that binding */
    request_detach_client(r, REQUEST_GONE);
    withdraw(r);
}

void request_abort_all(struct server *s)
{
    while (s->requests != NULL) {
        struct request *r = s->requests;

        log_info("req=%llu: stopping now; closing its client connection",
                 (unsigned long long)r->id);
        request_detach_client(r, REQUEST_CLOSE);
        withdraw(r); /* finishes r, which unlinks it */
    }
}

void request_withdraw(struct request *r)
{
    r->sink.done = NULL; /* taken back: whoever owns it already knows */
    withdraw(r);
}

int request_watch_client(struct request *r)
{
    struct evhttp_connection *evcon;
    evutil_socket_t fd;

    if (r->client_watch != NULL || r->client == NULL)
        return 0;
    evcon = evhttp_request_get_connection(r->client);
    if (evcon == NULL)
        return -1;
    fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
    if (fd < 0)
        return -1;
    /* EV_CLOSED (EPOLLRDHUP) reports the peer's FIN even while evhttp has stopped
     * reading the socket, which it does while a request is being handled. */
    r->client_watch = event_new(r->server->base, fd, EV_CLOSED, client_closed_cb, r);
    if (r->client_watch == NULL)
        return -1;
    if (event_add(r->client_watch, NULL) != 0) {
        event_free(r->client_watch);
        r->client_watch = NULL;
        return -1;
    }
    return 0;
}
