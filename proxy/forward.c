/*
 * proxy/forward: one request's exchange with its upstream. See forward.h.
 *
 *   forward_start ── evhttp_make_request ──> upstream
 *        <── headers_cb: status + headers -> client (evhttp_send_reply_start)
 *        <── body_cb:    each piece moved to the client (evhttp_send_reply_chunk);
 *                        over RELAY_HIGH_WATER bytes waiting for a slow client, the
 *                        upstream socket stops being read until the client catches up
 *        <── done_cb:    evhttp_send_reply_end, connection back to the pool
 *   errors: error_cb records why (timeout / bad answer / cancel); done_cb(NULL) answers
 *   502 or 504 unless the answer had already started, in which case the client
 *   connection is closed so that a truncated body never looks complete.
 */
#include "proxy/forward.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <sys/queue.h>
#include <event2/keyvalq_struct.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"
#include "proxy/clock.h"
#include "proxy/frontend.h"
#include "proxy/gate.h"
#include "proxy/http1.h"
#include "proxy/log.h"
#include "proxy/pool.h"
#include "proxy/request.h"
#include "proxy/rlfields.h"
#include "proxy/server.h"
#include "proxy/tls.h"
#include "proxy/upstream.h"

/* Bytes queued toward a client before we stop reading from its upstream. */
#define RELAY_HIGH_WATER (256 * 1024)

static const char *const hop_by_hop[] = {
    "Connection", "Keep-Alive",          "Proxy-Connection",   "TE", "Trailer", "Transfer-Encoding",
    "Upgrade",    "Proxy-Authorization", "Proxy-Authenticate", NULL,
};

/* Is `name` one of the comma-separated tokens of one Connection field value? */
static int connection_lists(const char *connection, const char *name)
{
    size_t n = strlen(name);
    const char *p = connection;

    while (p != NULL && *p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *end = p;
        while (*end != '\0' && *end != ',')
            end++;
        const char *tail = end;
        while (tail > p && (tail[-1] == ' ' || tail[-1] == '\t'))
            tail--;
        if ((size_t)(tail - p) == n && strncasecmp(p, name, n) == 0)
            return 1;
        p = end;
    }
    return 0;
}

int forward_is_hop_by_hop(const char *name, const struct evkeyvalq *headers, int has_connection)
{
    const struct evkeyval *h;
    size_t i;
    char c = (char)(name[0] | 0x20);

    /* Every fixed hop-by-hop name starts with c, k, p, t or u: most headers are
     * decided by their first letter. */
    if (c == 'c' || c == 'k' || c == 'p' || c == 't' || c == 'u')
        for (i = 0; hop_by_hop[i] != NULL; i++)
            if (strcasecmp(name, hop_by_hop[i]) == 0)
                return 1;
    if (!has_connection)
        return 0;
    /* Every Connection field, however long its list: a name it lists is hop-by-hop. */
    TAILQ_FOREACH(h, headers, next)
    if (strcasecmp(h->key, "Connection") == 0 && connection_lists(h->value, name))
        return 1;
    return 0;
}

/* The request-target toward the upstream: base_path + (stripped) path + ?query. */
static int build_target(const struct request *r, char *out, size_t len)
{
    const struct evhttp_uri *uri = r->client ? evhttp_request_get_evhttp_uri(r->client) : NULL;
    const struct conf_upstream *cu = upstream_conf(r->upstream);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    const char *rest;
    int n;

    if (r->part_target != NULL) { /* a part: its own path, mapped by its aggregate */
        n = snprintf(out, len, "%s%s", cu->base_path, r->part_target);
        return n < 0 || (size_t)n >= len ? -1 : 0;
    }
    if (path == NULL || *path == '\0')
        path = "/";
    rest = path;
    if (r->route->strip_prefix) {
        size_t plen = strlen(r->route->path_prefix);
        /* Keep the slash that ends the prefix: /api/ + /api/x -> /x */
        if (plen > 0 && r->route->path_prefix[plen - 1] == '/')
            plen--;
        rest = path + plen;
    }
    n = snprintf(out, len, "%s%s%s%s%s", cu->base_path, *rest == '/' ? "" : "/", rest,
                 query ? "?" : "", query ? query : "");
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* The Host sluice sends to the upstream (its own, with the port when not the default). */
static void upstream_host(const struct conf_upstream *cu, char *host, size_t len)
{
    int default_port = cu->https ? 443 : 80;
    int v6 = strchr(cu->host, ':') != NULL;

    if (cu->port == default_port)
        snprintf(host, len, v6 ? "[%s]" : "%s", cu->host);
    else
        snprintf(host, len, v6 ? "[%s]:%u" : "%s:%u", cu->host, cu->port);
}

/* A part of an aggregate carries none of its client's fields (they were meant for the
 * aggregate, and may hold credentials for none of these APIs): who it is for, and that
 * JSON is wanted. */
static void part_request_headers(struct request *r, struct evhttp_request *out)
{
    struct evkeyvalq *oh = evhttp_request_get_output_headers(out);
    char host[300];

    upstream_host(upstream_conf(r->upstream), host, sizeof(host));
    evhttp_add_header(oh, "Host", host);
    evhttp_add_header(oh, "Accept", "application/json");
    evhttp_add_header(oh, "X-Forwarded-For", r->client_ip);
    evhttp_add_header(oh, "X-Forwarded-Proto", r->client_tls ? "https" : "http");
}

static void copy_request_headers(struct request *r, struct evhttp_request *out)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(r->client);
    struct evkeyvalq *oh = evhttp_request_get_output_headers(out);
    const struct conf_upstream *cu = upstream_conf(r->upstream);
    const char *client_host = evhttp_find_header(in, "Host");
    char xff[1024], host[300];
    int has_connection = evhttp_find_header(in, "Connection") != NULL;
    struct evkeyval *h;
    size_t xff_len = 0;

    xff[0] = '\0';
    TAILQ_FOREACH(h, in, next)
    {
        if (forward_is_hop_by_hop(h->key, in, has_connection) || strcasecmp(h->key, "Host") == 0 ||
            strcasecmp(h->key, "Content-Length") == 0 || strcasecmp(h->key, "Expect") == 0 ||
            strcasecmp(h->key, "X-Forwarded-Proto") == 0 ||
            strcasecmp(h->key, "X-Forwarded-Host") == 0)
            continue;
        if (strcasecmp(h->key, "X-Forwarded-For") == 0) {
            int n = snprintf(xff + xff_len, sizeof(xff) - xff_len, "%s, ", h->value);
            if (n > 0 && (size_t)n < sizeof(xff) - xff_len)
                xff_len += (size_t)n;
            continue;
        }
        evhttp_add_header(oh, h->key, h->value);
    }
    snprintf(xff + xff_len, sizeof(xff) - xff_len, "%s", r->client_ip);
    evhttp_add_header(oh, "X-Forwarded-For", xff);
    evhttp_add_header(oh, "X-Forwarded-Proto", r->client_tls ? "https" : "http");
    if (client_host != NULL)
        evhttp_add_header(oh, "X-Forwarded-Host", client_host);

    if (cu->preserve_host && client_host != NULL) {
        evhttp_add_header(oh, "Host", client_host);
    } else {
        upstream_host(cu, host, sizeof(host));
        evhttp_add_header(oh, "Host", host);
    }
}

/* While relaying, evhttp watches the client connection (it reads for close detection
 * while writing); have its hang-up reach us, or a paused relay would wait forever. */
static void client_bind(struct request *r, int on)
{
    struct evhttp_connection *evcon;

    if (r->client == NULL || r->client_bound == on)
        return;
    evcon = evhttp_request_get_connection(r->client);
    if (evcon == NULL)
        return;
    frontend_bind_request(r->server->frontend, evcon, on ? r : NULL);
    r->client_bound = on;
}

static void relay_start_client(struct request *r, struct evhttp_request *in);

/* Status and headers have arrived: start the client's answer. */
static void relay_start(struct request *r, struct evhttp_request *in)
{
    if (r->client == NULL) { /* a part: its aggregate takes the answer at the end */
        r->headers_ns = clock_now_ns();
        r->status = evhttp_request_get_response_code(in);
        r->reason = "ok";
        request_set_state(r, REQUEST_RELAYING);
        return;
    }
    relay_start_client(r, in);
}

static void relay_start_client(struct request *r, struct evhttp_request *in)
{
    struct evkeyvalq *ih = evhttp_request_get_input_headers(in);
    struct evkeyvalq *oh = evhttp_request_get_output_headers(r->client);
    char wait[24];
    int has_connection = evhttp_find_header(ih, "Connection") != NULL;
    struct evkeyval *h;
    const char *phrase = evhttp_request_get_response_code_line(in);

    TAILQ_FOREACH(h, ih, next)
    {
        if (forward_is_hop_by_hop(h->key, ih, has_connection))
            continue;
        evhttp_add_header(oh, h->key, h->value);
    }
    r->headers_ns = clock_now_ns();
    r->status = evhttp_request_get_response_code(in);
    r->reason = "ok";
    snprintf(wait, sizeof(wait), "%llu", (unsigned long long)request_queue_wait_ms(r));
    evhttp_add_header(oh, "Sluice-Queue-Wait", wait);
    /* The upstream's own RateLimit fields (already copied) describe its budget for all of
     * sluice; the client is told of its own instead. */
    evhttp_remove_header(oh, "RateLimit");
    evhttp_remove_header(oh, "RateLimit-Policy");
    rlfields_add(r->upstream, r->route, r->key, r->key_len, oh);
    if (server_is_draining(r->server))
        evhttp_add_header(oh, "Connection", "close");
    request_set_state(r, REQUEST_RELAYING);
    client_bind(r, 1);
    evhttp_send_reply_start(r->client, evhttp_request_get_response_code(in), phrase ? phrase : "");
}

static int headers_cb(struct evhttp_request *in, void *arg)
{
    struct request *r = arg;
    int64_t pause_ms;

    if (r->client == NULL && r->sink.done == NULL)
        return 0;
    pause_ms =
        upstream_feedback(r->upstream, r->key, r->key_len, evhttp_request_get_response_code(in),
                          evhttp_request_get_input_headers(in));
    /* Refused unprocessed (429): this answer is not the client's; the request goes
     * again after the pause, if this attempt was sent as one that may go again (its body
     * kept: decided once, at send time, whatever a reload changed since), the pause is
     * within bounds, and the queues are still served (not past drain_timeout). */
    if (pause_ms >= 0 && r->retryable && (uint64_t)pause_ms <= r->retry_max_wait_ms &&
        r->server->state != SERVER_STOPPING) {
        r->retrying = 1;
        return 0;
    }
    relay_start(r, in);
    return 0;
}

/* The client's output has drained: read the upstream again. */
static void client_drained_cb(struct evhttp_connection *client_conn, void *arg)
{
    struct request *r = arg;

    if (r->client_paused && r->conn != NULL) {
        r->client_paused = 0;
        bufferevent_enable(evhttp_connection_get_bufferevent(r->conn->evcon), EV_READ);
    }
}

static void body_cb(struct evhttp_request *in, void *arg)
{
    struct request *r = arg;
    struct evbuffer *piece = evhttp_request_get_input_buffer(in);
    struct evhttp_connection *client_conn;

    if (r->sink.done != NULL && r->state == REQUEST_RELAYING && !r->retrying) {
        /* A part: keep up to its limit; what is over is read and dropped (and the part
         * fails too_large), so memory stays bounded whatever the upstream sends. */
        size_t have = evbuffer_get_length(r->collected), n = evbuffer_get_length(piece);
        if (!r->collected_too_large && have + n <= r->sink.max_body) {
            evbuffer_add_buffer(r->collected, piece);
            return;
        }
        r->collected_too_large = 1;
        evbuffer_drain(piece, n);
        return;
    }
    if (r->client == NULL || r->state != REQUEST_RELAYING || r->retrying) {
        evbuffer_drain(piece, evbuffer_get_length(piece));
        return;
    }
    client_conn = evhttp_request_get_connection(r->client);
    if (client_conn != NULL && evbuffer_get_length(bufferevent_get_output(
                                   evhttp_connection_get_bufferevent(client_conn))) +
                                       evbuffer_get_length(piece) >
                                   RELAY_HIGH_WATER) {
        /* Slow client: stop reading the upstream until the client has taken what it has,
         * so memory stays bounded by buffers, not by the body. While paused, watch the
         * client so that its leaving is noticed even though nothing is being written. */
        r->client_paused = 1;
        bufferevent_disable(evhttp_connection_get_bufferevent(r->conn->evcon), EV_READ);
        request_watch_client(r);
        r->bytes_out += evbuffer_get_length(piece);
        evhttp_send_reply_chunk_with_cb(r->client, piece, client_drained_cb, r);
        return;
    }
    r->bytes_out += evbuffer_get_length(piece);
    evhttp_send_reply_chunk(r->client, piece);
}

/* errno values that mean the TCP connection was never made. */
static int connect_errno(int e)
{
    return e == ECONNREFUSED || e == ENETUNREACH || e == EHOSTUNREACH || e == ENETDOWN ||
           e == EADDRNOTAVAIL || e == ETIMEDOUT;
}

static void error_cb(enum evhttp_request_error err, void *arg)
{
    struct request *r = arg;

    /* evhttp restores the socket's errno before calling us: a connect() that failed at
     * once comes as EOF, told apart from a closed connection only by it. */
    if (err == EVREQ_HTTP_EOF && connect_errno(EVUTIL_SOCKET_ERROR()) && r->headers_ns == 0)
        err = (enum evhttp_request_error) - 1;
    r->upstream_error = (int)err + 1; /* 0 means "none recorded": a connect failure */
    /* Read the handshake's verdict now, before anything else touches the session. */
    if (r->conn != NULL && upstream_is_tls(r->upstream) && err != EVREQ_HTTP_REQUEST_CANCEL)
        r->tls_reason = tls_failure(evhttp_connection_get_bufferevent(r->conn->evcon), 0,
                                    r->tls_why, sizeof(r->tls_why));
}

/* The exchange is over (answered, failed or cancelled): give the connection back,
 * free the in-flight slot. evhttp will not call us about `r->outgoing` again. */
static void exchange_end(struct request *r, int reusable)
{
    struct pool_conn *conn = r->conn;

    r->conn = NULL;
    r->client_paused = 0;
    upstream_request_done(r->upstream, conn, reusable);
}

/* The answer cannot be completed after it started: close the client connection, the
 * only honest signal left (a truncated body must never look complete). */
static void relay_failed(struct request *r, const char *reason, const char *why)
{
    if (r->sink.done != NULL) { /* a part: its aggregate hears of the failure */
        request_reply_error(r, 502, reason, 0, "%s mid-answer", why);
        return;
    }
    r->reason = reason;
    request_log(r, LOG_LEVEL_WARN, "%s mid-answer; closing client", why);
    request_detach_client(r, REQUEST_CLOSE);
    request_finish(r);
}

/* The upstream's answer was not valid HTTP (the gate refused it): 502 when nothing was
 * relayed yet, else close the client connection. */
static void upstream_failed_invalid(struct request *r, enum http1_error e)
{
    if (r->state == REQUEST_RELAYING) {
        relay_failed(r, "upstream_invalid", http1_error_text(e));
        return;
    }
    request_reply_error(r, 502, "upstream_invalid", 0, "upstream '%s' sent an invalid answer: %s",
                        upstream_name(r->upstream), http1_error_text(e));
}

static void done_cb(struct evhttp_request *in, void *arg)
{
    struct request *r = arg;
    struct upstream *u = r->upstream;
    struct pool_conn *conn = r->conn;
    int code = in ? evhttp_request_get_response_code(in) : 0;
    int err = r->upstream_error - 1;
    enum http1_error invalid = conn ? gate_error(conn->gate) : HTTP1_OK;

    if (r->retrying) {
        r->retrying = 0;
        if (code != 0 && (r->client != NULL || r->sink.done != NULL)) {
            request_log(r, LOG_LEVEL_INFO, "refused with %d; queued again (attempt %u)", code,
                        r->attempts);
            r->conn = NULL;
            upstream_request_retry(u, conn, r);
            return;
        }
    }
    if (code == 0 && err < 0 && r->tls_reason == NULL && upstream_is_tls(u) && conn != NULL)
        /* evhttp reports a connection reset right after the handshake (a TLS 1.3 server
         * refusing our certificate) as a connect failure, without the error callback. */
        r->tls_reason = tls_failure(evhttp_connection_get_bufferevent(conn->evcon), 1, r->tls_why,
                                    sizeof(r->tls_why));
    upstream_count_outcome(u, code != 0);
    if (code == 0) {
        /* No complete answer. No error recorded means evhttp never connected (it reports
         * connect failures and connect timeouts by calling us without an error). A TLS
         * session that failed cannot be resumed by evhttp's reconnect. */
        exchange_end(r, !upstream_is_tls(u));
        if (invalid != HTTP1_OK)
            upstream_failed_invalid(r, invalid);
        else if (r->state == REQUEST_RELAYING)
            relay_failed(r, "upstream_error", "upstream failed");
        else if (r->tls_reason != NULL)
            request_reply_error(r, 502, r->tls_reason, 0, "upstream '%s': %s", upstream_name(u),
                                r->tls_why);
        else if (err < 0)
            request_reply_error(r, 502, "upstream_connect", 0,
                                "cannot connect to upstream '%s' (%s:%u)", upstream_name(u),
                                upstream_conf(u)->host, upstream_conf(u)->port);
        else if (err == EVREQ_HTTP_TIMEOUT)
            request_reply_error(r, 504, "upstream_timeout", 0,
                                "no answer from upstream '%s' within %llums", upstream_name(u),
                                (unsigned long long)upstream_conf(u)->response_timeout_ms);
        else
            request_reply_error(r, 502, "upstream_error", 0,
                                "upstream '%s' closed the connection without a complete answer",
                                upstream_name(u));
        return;
    }
    if (r->sink.done != NULL) {
        struct evbuffer *rest = evhttp_request_get_input_buffer(in);
        void (*done)(void *, struct request *, int, const char *, struct evbuffer *) = r->sink.done;
        if (r->state != REQUEST_RELAYING)
            relay_start(r, in);
        if (evbuffer_get_length(rest) > 0)
            body_cb(in, r);
        r->sink.done = NULL;
        if (r->collected_too_large)
            r->reason = "too_large";
        r->bytes_out = evbuffer_get_length(r->collected);
        done(r->sink.arg, r, code, r->reason, r->collected);
    } else if (r->client != NULL) {
        struct evbuffer *rest = evhttp_request_get_input_buffer(in);
        if (r->state != REQUEST_RELAYING)
            relay_start(r, in);
        r->bytes_out += evbuffer_get_length(rest);
        if (evbuffer_get_length(rest) > 0)
            evhttp_send_reply_chunk(r->client, rest);
        evhttp_send_reply_end(r->client);
        request_detach_client(r, REQUEST_ANSWERED);
    }
    request_log(r, LOG_LEVEL_DEBUG, "%d, queued %llums", code,
                (unsigned long long)request_queue_wait_ms(r));
    exchange_end(r, 1);
    request_finish(r);
}

/* Cancel the exchange in progress; evhttp then calls error_cb(CANCEL) only, never
 * done_cb, and lets go of r->outgoing (ours: freed with r). */
static void cancel(struct request *r)
{
    if (r->conn != NULL && r->outgoing != NULL)
        evhttp_cancel_request(r->outgoing);
}

/* The gate found the upstream's answer invalid (proxy/gate reports from its own event,
 * outside evhttp): stop the exchange and tell the client. */
static void invalid_cb(void *arg)
{
    struct request *r = arg;
    enum http1_error e = gate_error(r->conn->gate);

    cancel(r);
    r->retrying = 0;
    upstream_count_outcome(r->upstream, 0);
    exchange_end(r, 0);
    upstream_failed_invalid(r, e);
}

void forward_start(struct request *r, struct pool_conn *conn)
{
    struct evhttp_request *out;
    struct bufferevent *bev;
    const struct conf_upstream *cu = upstream_conf(r->upstream);
    struct evbuffer *body = r->client ? evhttp_request_get_input_buffer(r->client) : r->part_body;
    enum evhttp_cmd_type method =
        r->client ? evhttp_request_get_command(r->client) : (enum evhttp_cmd_type)r->part_method;
    bufferevent_data_cb writecb;
    char target[8192];

    r->conn = conn;
    if (build_target(r, target, sizeof(target)) != 0) {
        exchange_end(r, 1);
        request_reply_error(r, 414, "uri_too_long", 0, "request target too long");
        return;
    }
    /* The previous attempt's request (a 429 before this one) is long done with. */
    if (r->outgoing != NULL) {
        evhttp_request_free(r->outgoing);
        r->outgoing = NULL;
    }
    out = evhttp_request_new(done_cb, r);
    if (out == NULL) {
        exchange_end(r, 1);
        request_reply_error(r, 502, "upstream_error", 0, "out of memory");
        return;
    }
    /* Ours, not evhttp's: freed with r from the reaper, never while evhttp may still
     * touch it (it reads it after done_cb returns, and on every failure path). */
    evhttp_request_own(out);
    r->outgoing = out;
    evhttp_request_set_header_cb(out, headers_cb);
    evhttp_request_set_chunked_cb(out, body_cb);
    evhttp_request_set_error_cb(out, error_cb);
    if (r->client != NULL)
        copy_request_headers(r, out);
    else
        part_request_headers(r, out);
    r->attempts++;
    /* Whether this attempt may be sent again after a 429 is decided now, with the body
     * kept for it or not: a reload before the answer cannot change it. */
    r->retryable = cu->feedback && r->attempts < cu->retry_max_attempts;
    r->retry_max_wait_ms = cu->retry_max_wait_ms;
    if ((body != NULL && evbuffer_get_length(body) > 0) || method == EVHTTP_REQ_POST ||
        method == EVHTTP_REQ_PUT || method == EVHTTP_REQ_PATCH) {
        char len[24];
        snprintf(len, sizeof(len), "%zu", body ? evbuffer_get_length(body) : (size_t)0);
        evhttp_add_header(evhttp_request_get_output_headers(out), "Content-Length", len);
        /* The body is never copied: moved, or when it may have to be sent again, shared
         * by reference with the client's buffer (empty bodies need neither). */
        if (body == NULL)
            ; /* no body: Content-Length: 0 */
        else if (r->retryable && evbuffer_get_length(body) > 0) {
            /* libevent refuses to reference a buffer made of references: copy it then. */
            struct evbuffer *ob = evhttp_request_get_output_buffer(out);
            if (evbuffer_add_buffer_reference(ob, body) != 0)
                evbuffer_add(ob, evbuffer_pullup(body, -1), evbuffer_get_length(body));
        } else
            evbuffer_add_buffer(evhttp_request_get_output_buffer(out), body);
    }
    r->sent_ns = clock_now_ns();
    r->upstream_error = 0;
    r->tls_reason = NULL;
    /* The answer is checked before evhttp reads it: a HEAD answer has no body. */
    gate_expect_response(conn->gate, method == EVHTTP_REQ_HEAD);
    gate_on_error(conn->gate, invalid_cb, r);
    request_log(r, LOG_LEVEL_DEBUG, "released after %llums -> %s",
                (unsigned long long)request_queue_wait_ms(r), target);
    if (evhttp_make_request(conn->evcon, out, method, target) != 0) {
        /* Unlinked from the connection, not freed (ours). */
        exchange_end(r, 0);
        request_reply_error(r, 502, "upstream_connect", 0, "cannot connect to upstream '%s'",
                            cu->name);
        return;
    }
    /* evhttp may have failed the exchange inside evhttp_make_request (a connect that
     * fails at once): then r is DONE and conn already given back. */
    if (request_done(r) || r->conn != conn)
        return;
    /* A connection that is still connecting uses the connect timeout until it is up;
     * evhttp then applies the connection's own (response) timeout. evhttp installs no
     * write callback until connected (while sending, it has one), which is how we tell. */
    bev = evhttp_connection_get_bufferevent(conn->evcon);
    bufferevent_getcb(bev, NULL, &writecb, NULL, NULL);
    if (writecb == NULL) {
        struct timeval tv = clock_ms_timeval(cu->connect_timeout_ms);
        bufferevent_set_timeouts(bev, &tv, &tv);
    }
}

void forward_abort(struct request *r)
{
    cancel(r);
    r->retrying = 0;
    if (r->conn != NULL)
        exchange_end(r, !upstream_is_tls(r->upstream));
    request_finish(r);
}
