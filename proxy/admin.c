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
#include <event2/http.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "limiter/dispatch.h"
#include "limiter/lease.h"
#include "proxy/clock.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/server.h"
#include "proxy/shared.h"
#include "proxy/upstream.h"

/* Admin requests are small: a request line and a few headers, no body. */
#define ADMIN_MAX_HEADERS 16384
#define ADMIN_MAX_BODY    4096
#define ADMIN_TIMEOUT_S   30

struct admin {
    struct server *server;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
};

static void reply(struct evhttp_request *req, int code, const char *phrase, const char *ctype,
                  struct evbuffer *body)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);

    evhttp_add_header(out, "Content-Type", ctype);
    evhttp_add_header(out, "Cache-Control", "no-store");
    evhttp_send_reply(req, code, phrase, body);
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

/* A JSON string: quotes, backslashes and control characters escaped. */
static void add_json_string(struct evbuffer *out, const char *s)
{
    evbuffer_add(out, "\"", 1);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            evbuffer_add_printf(out, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            evbuffer_add_printf(out, "\\u%04x", c);
        else
            evbuffer_add(out, s, 1);
    }
    evbuffer_add(out, "\"", 1);
}

/* ,"shared":[...]: each shared limit's lease (proxy/shared, limiter/lease). */
static void status_shared(struct evbuffer *out, const struct upstream *u, uint64_t now)
{
    const struct dispatch *d = upstream_dispatch(u);
    size_t i, n = 0;

    evbuffer_add(out, ",\"shared\":[", 11);
    for (i = 0; i < DISPATCH_MAX_LIMITS; i++) {
        const struct shared_user *su = upstream_shared_user(u, i);
        const struct lease *l = dispatch_lease(d, i);
        const struct lease_counters *lc;
        struct shared_user_stats st;
        if (su == NULL || l == NULL)
            continue;
        shared_user_stats(su, &st);
        lc = lease_counters(l);
        if (n++ > 0)
            evbuffer_add(out, ",", 1);
        evbuffer_add(out, "{\"budget\":", 10);
        add_json_string(out, st.budget);
        evbuffer_add_printf(
            out,
            ",\"limit\":%zu,\"mode\":\"%s\",\"instances\":%u,\"slots_held\":%" PRIu64
            ",\"granted\":%" PRIu64 ",\"released\":%" PRIu64 ",\"dropped\":%" PRIu64
            ",\"fleet_pauses\":%" PRIu64 ",\"fences\":%" PRIu64 ",\"calls\":{\"ok\":%" PRIu64
            ",\"empty\":%" PRIu64 ",\"error\":%" PRIu64 ",\"timeout\":%" PRIu64
            ",\"noscript\":%" PRIu64 "}}",
            i, lease_mode(l) == LEASE_FALLBACK ? "fallback" : "redis", lease_instances(l),
            lease_held(l, now), lc->granted, lc->released, lc->dropped, st.fleet_pauses,
            st.fences, st.calls_ok, st.calls_empty, st.calls_error, st.calls_timeout,
            st.calls_noscript);
    }
    evbuffer_add(out, "]", 1);
}

static void status_upstream(struct evbuffer *out, const struct upstream *u, uint64_t now)
{
    const struct conf_upstream *cu = upstream_conf(u);
    const struct dispatch *d = upstream_dispatch(u);
    const struct upstream_stats *st = upstream_stats(u);
    uint64_t wake = dispatch_wake_ns(d, now);
    size_t i;

    evbuffer_add(out, "{\"name\":", 8);
    add_json_string(out, cu->name);
    evbuffer_add(out, ",\"url\":", 7);
    add_json_string(out, cu->url);
    evbuffer_add(out, ",\"limits\":[", 11);
    for (i = 0; i < dispatch_nlimits(d) && i < cu->nlimits; i++)
        evbuffer_add_printf(out, "%s{\"rate_per_sec\":%.17g,\"burst\":%.17g,\"tokens\":%.3f}",
                            i ? "," : "", cu->limits[i].rate_per_sec, cu->limits[i].burst_tokens,
                            dispatch_tokens(d, i, now));
    evbuffer_add_printf(out,
                        "],\"queue_depth\":%zu,\"queue_capacity\":%zu,\"in_flight\":%" PRIu32
                        ",\"max_in_flight\":%" PRIu32 ",\"max_wait_ms\":%" PRIu64
                        ",\"next_release_in_ms\":",
                        dispatch_queue_len(d), dispatch_queue_cap(d), dispatch_in_flight(d),
                        cu->max_in_flight, cu->max_wait_ms);
    if (wake == DISPATCH_NEVER || dispatch_queue_len(d) == 0)
        evbuffer_add(out, "null", 4);
    else /* rounded up: "in 0 ms" only when it is due now */
        evbuffer_add_printf(out, "%" PRIu64,
                            wake > now ? (uint64_t)((wake - now + NS_PER_MS - 1) / NS_PER_MS) : 0);
    evbuffer_add_printf(out,
                        ",\"counters\":{\"admitted\":%" PRIu64 ",\"released\":%" PRIu64
                        ",\"refused_full\":%" PRIu64 ",\"refused_late\":%" PRIu64
                        ",\"expired\":%" PRIu64 ",\"withdrawn\":%" PRIu64 ",\"responses\":%" PRIu64
                        ",\"failures\":%" PRIu64 "}",
                        st->admitted, st->released, st->refused_full, st->refused_late, st->expired,
                        st->withdrawn, st->responses, st->failures);
    status_shared(out, u, now);
    evbuffer_add(out, "}", 1);
}

static void serve_status(struct admin *a, struct evhttp_request *req)
{
    struct server *s = a->server;
    struct evbuffer *body = evbuffer_new();
    uint64_t now = clock_now_ns();
    size_t i, n = 0;

    if (body == NULL) {
        evhttp_send_error(req, 500, "Out of memory");
        return;
    }
    evbuffer_add_printf(body, "{\"state\":\"%s\",\"upstreams\":[",
                        server_is_draining(s) ? "draining" : "running");
    for (i = 0; i < s->nupstreams; i++) {
        if (s->upstreams[i] == NULL)
            continue;
        if (n++ > 0)
            evbuffer_add(body, ",", 1);
        status_upstream(body, s->upstreams[i], now);
    }
    evbuffer_add(body, "]}\n", 3);
    reply(req, 200, "OK", "application/json", body);
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
    int known;

    if (path == NULL)
        path = "";
    known = strcmp(path, "/metrics") == 0 || strcmp(path, "/healthz") == 0 ||
            strcmp(path, "/status") == 0;
    if (!known) {
        reply_text(req, 404, "Not Found", "not found: try /metrics, /healthz or /status\n");
        return;
    }
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_text(req, 405, "Method Not Allowed", "only GET and HEAD\n");
        return;
    }
    if (strcmp(path, "/metrics") == 0)
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
    if (a->http != NULL)
        evhttp_free(a->http); /* closes the listener and every admin connection */
    free(a);
}
