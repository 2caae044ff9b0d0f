/*
 * proxy/request: the per-request context and the answers sluice produces itself.
 * See request.h for who owns a request when.
 */
#include "proxy/request.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdarg.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "limiter/dispatch.h"
#include "proxy/clock.h"
#include "proxy/forward.h"
#include "proxy/frontend.h"
#include "proxy/accesslog.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/reload.h"
#include "proxy/server.h"
#include "proxy/upstream.h"

struct request *request_new(struct server *s, struct evhttp_request *client)
{
    struct request *r = calloc(1, sizeof(*r));
    struct evhttp_connection *evcon;
    char *addr = NULL;
    uint16_t port = 0;

    if (r == NULL)
        return NULL;
    r->id = ++s->next_request_id;
    r->server = s;
    r->gen = s->gen;
    confgen_hold(r->gen);
    r->state = REQUEST_ADMITTING;
    r->client = client;
    r->waiter.data = r;
    r->waiter.cost = 1;
    r->arrived_ns = clock_now_ns();
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
    s->requests_open++;
    r->all_next = s->requests;
    if (s->requests != NULL)
        s->requests->all_prev = r;
    s->requests = r;
    return r;
}

static void request_report(struct request *r)
{
    struct server *s = r->server;
    const char *route = r->route ? r->route->path_prefix : NULL;
    const char *upstream = r->upstream ? upstream_name(r->upstream) : NULL;
    uint64_t queue_ns = METRICS_NONE, upstream_ns = METRICS_NONE;

    if (r->status == 0) {
        r->status = 499; /* nginx's "client closed request" */
        r->reason = "client_closed";
    }
    if (r->state != REQUEST_ADMITTING && r->waiter.enqueued_ns != 0)
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
        };
        accesslog_write(s->access, &e);
    }
}

void request_free(struct request *r)
{
    struct server *s;

    if (r == NULL)
        return;
    s = r->server;
    if (r->all_prev != NULL)
        r->all_prev->all_next = r->all_next;
    else
        s->requests = r->all_next;
    if (r->all_next != NULL)
        r->all_next->all_prev = r->all_prev;
    request_unwatch_client(r);
    request_report(r);
    free(r->target);
    free(r->user_agent);
    confgen_release(r->gen);
    free(r);
    s->requests_open--;
    server_check_idle(s);
}

void request_forget_target(struct request *r)
{
    free(r->target);
    free(r->user_agent);
    r->target = NULL;
    r->user_agent = NULL;
    r->method = "-";
}

uint64_t request_queue_wait_ms(const struct request *r)
{
    uint64_t end = r->released_ns ? r->released_ns : clock_now_ns();
    return end > r->arrived_ns ? (end - r->arrived_ns) / NS_PER_MS : 0;
}

void request_add_ratelimit_headers(const struct request *r, struct evkeyvalq *out)
{
    const struct dispatch *d;
    const struct conf_upstream *cu;
    const struct conf_limit *lim;
    const char *policy;
    double tokens;
    uint64_t now = clock_now_ns();
    char buf[128];
    unsigned long window_s, reset_s;

    /* Only for routes that sort clients by key: it is the client's own budget they tell. */
    if (r->upstream == NULL || r->route == NULL || r->route->key_source == CONF_KEY_NONE)
        return;
    d = upstream_dispatch(r->upstream);
    cu = upstream_conf(r->upstream);
    /* The client's own budget when keys have limits, else the upstream's shared one. */
    if (cu->fairness.nkey_limits > 0 && dispatch_nkey_limits(d) > 0) {
        lim = &cu->fairness.key_limits[0];
        tokens = dispatch_key_tokens(d, r->key, r->key_len, 0, now);
        policy = "key";
    } else {
        lim = &cu->limits[0];
        tokens = dispatch_tokens(d, 0, now);
        policy = "upstream";
    }
    if (tokens < 0)
        tokens = 0;
    window_s = (unsigned long)ceil(lim->burst_tokens / lim->rate_per_sec);
    reset_s = (unsigned long)ceil((lim->burst_tokens - tokens) / lim->rate_per_sec);
    snprintf(buf, sizeof(buf), "\"%s\";q=%lu;w=%lu", policy, (unsigned long)lim->burst_tokens,
             window_s ? window_s : 1);
    evhttp_add_header(out, "RateLimit-Policy", buf);
    snprintf(buf, sizeof(buf), "\"%s\";r=%lu;t=%lu", policy, (unsigned long)floor(tokens), reset_s);
    evhttp_add_header(out, "RateLimit", buf);
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

void request_reply_error(struct request *r, int status, const char *reason, uint32_t retry_after_s,
                         const char *fmt, ...)
{
    struct evbuffer *body;
    struct evkeyvalq *out;
    char msg[512];
    char num[24];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    if (status >= 500)
        log_warn("req=%llu route=%s upstream=%s: %d %s: %s", (unsigned long long)r->id,
                 r->route ? r->route->path_prefix : "-",
                 r->upstream ? upstream_name(r->upstream) : "-", status, reason, msg);
    else
        log_info("req=%llu route=%s upstream=%s: %d %s: %s", (unsigned long long)r->id,
                 r->route ? r->route->path_prefix : "-",
                 r->upstream ? upstream_name(r->upstream) : "-", status, reason, msg);

    request_unwatch_client(r);
    r->status = status;
    r->reason = reason;
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
            request_add_ratelimit_headers(r, out);
        if (r->released_ns != 0 || r->state == REQUEST_QUEUED) {
            snprintf(num, sizeof(num), "%llu", (unsigned long long)request_queue_wait_ms(r));
            evhttp_add_header(out, "Sluice-Queue-Wait", num);
        }
        /* A 4xx of ours (but 404) means the request was refused as it was read: what
         * follows on the connection cannot be trusted (or was never read). Close. */
        if ((status >= 400 && status < 500 && status != 404) || server_is_draining(r->server))
            evhttp_add_header(out, "Connection", "close");
        if (status == 405)
            evhttp_add_header(out, "Allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH");
        body = evbuffer_new();
        if (body != NULL) {
            evbuffer_add_printf(body, "%d %s: %s\n", status, reason, msg);
            r->bytes_out = evbuffer_get_length(body);
        }
        evhttp_send_reply(r->client, status, status_phrase(status), body);
        if (body != NULL)
            evbuffer_free(body);
        r->client = NULL;
    }
    request_free(r);
}

/* The client is gone: take the request out of wherever it is and free it. The client's
 * evhttp request has already been dealt with (r->client is NULL). */
static void request_withdraw(struct request *r)
{
    switch (r->state) {
    case REQUEST_QUEUED:
        upstream_withdraw(r->upstream, r);
        request_free(r);
        break;
    case REQUEST_IN_FLIGHT:
    case REQUEST_RELAYING:
        forward_abort(r);
        break;
    case REQUEST_ADMITTING:
        request_free(r);
        break;
    }
}

static void log_client_left(const struct request *r, const char *when)
{
    log_info("req=%llu route=%s upstream=%s: client closed the connection %s",
             (unsigned long long)r->id, r->route ? r->route->path_prefix : "-",
             r->upstream ? upstream_name(r->upstream) : "-", when);
}

/* EV_CLOSED on the client socket while queued (or in flight after queueing): evhttp is
 * not reading that socket, so the connection is ours to close. */
static void client_closed_cb(evutil_socket_t fd, short what, void *arg)
{
    struct request *r = arg;
    struct evhttp_connection *evcon = evhttp_request_get_connection(r->client);

    log_client_left(r, r->state == REQUEST_QUEUED ? "while queued" : "while in flight");
    request_unwatch_client(r);
    /* Freeing the connection below must not also report it through the relay binding
     * (request_client_closed): the request is withdrawn exactly once, here. */
    if (r->client_bound && evcon != NULL) {
        frontend_bind_request(r->server->frontend, evcon, NULL);
        r->client_bound = 0;
    }
    r->client = NULL;
    /* Frees evhttp's request with it; nobody will write to that client. */
    if (evcon != NULL)
        evhttp_connection_free(evcon);
    request_withdraw(r);
}

void request_client_closed(struct request *r)
{
    struct evhttp_request *orphan = r->client;

    log_client_left(r, "during the answer");
    /* evhttp detaches an unfinished request from a failed connection and leaves it to
     * us; one still attached is freed by evhttp with the connection. */
    r->client = NULL;
    r->client_bound = 0;
    if (orphan != NULL && evhttp_request_get_connection(orphan) == NULL)
        evhttp_request_free(orphan);
    request_withdraw(r);
}

void request_abort_all(struct server *s)
{
    while (s->requests != NULL) {
        struct request *r = s->requests;
        struct evhttp_connection *evcon =
            r->client ? evhttp_request_get_connection(r->client) : NULL;

        log_info("req=%llu: stopping now; closing its client connection",
                 (unsigned long long)r->id);
        request_unwatch_client(r);
        if (r->client_bound && evcon != NULL) {
            frontend_bind_request(s->frontend, evcon, NULL);
            r->client_bound = 0;
        }
        r->client = NULL;
        if (evcon != NULL)
            evhttp_connection_free(evcon);
        request_withdraw(r); /* frees r, which unlinks it */
    }
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

void request_unwatch_client(struct request *r)
{
    if (r->client_watch != NULL) {
        event_free(r->client_watch);
        r->client_watch = NULL;
    }
}
