/*
 * proxy/status: the /status document. See status.h.
 */
#include "proxy/status.h"

#include <event2/buffer.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "conf/conf.h"
#include "limiter/dispatch.h"
#include "limiter/lease.h"
#include "proxy/clock.h"
#include "proxy/frontend.h"
#include "proxy/history.h"
#include "proxy/metrics.h"
#include "proxy/server.h"
#include "proxy/shared.h"
#include "proxy/upstream.h"

#define TOP_KEYS 10

/* A JSON string of n bytes from outside: anything that is not UTF-8 (or a NUL) becomes
 * U+FFFD, so jansson takes it and nothing can end the string early. */
static json_t *text(const char *s, size_t n)
{
    char *buf = malloc(n * 3 + 1);
    size_t i = 0, o = 0;
    json_t *j;

    if (buf == NULL)
        return NULL;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80                 ? 1
                     : c >= 0xc2 && c <= 0xdf ? 2
                     : c >= 0xe0 && c <= 0xef ? 3
                     : c >= 0xf0 && c <= 0xf4 ? 4
                                              : 0;
        size_t k;
        int ok = len > 0 && i + len <= n && c != 0;
        for (k = 1; ok && k < len; k++)
            ok = ((unsigned char)s[i + k] & 0xc0) == 0x80;
        if (ok && len == 3) { /* no overlong forms, no surrogates */
            unsigned char d = (unsigned char)s[i + 1];
            ok = !(c == 0xe0 && d < 0xa0) && !(c == 0xed && d >= 0xa0);
        } else if (ok && len == 4) {
            unsigned char d = (unsigned char)s[i + 1];
            ok = !(c == 0xf0 && d < 0x90) && !(c == 0xf4 && d >= 0x90);
        }
        if (ok) {
            memcpy(buf + o, s + i, len);
            o += len;
            i += len;
        } else {
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    j = json_stringn(buf, o);
    free(buf);
    return j;
}

static json_t *str(const char *s) { return s ? text(s, strlen(s)) : json_null(); }

static json_t *ms(uint64_t ns)
{
    return json_integer((json_int_t)((ns + NS_PER_MS - 1) / NS_PER_MS));
}

static json_t *limits_json(const struct upstream *u, uint64_t now)
{
    const struct conf_upstream *cu = upstream_conf(u);
    const struct dispatch *d = upstream_dispatch(u);
    json_t *arr = json_array();
    size_t i;

    for (i = 0; arr && i < cu->nlimits && i < dispatch_nlimits(d); i++) {
        const struct conf_limit *cl = &cu->limits[i];
        const struct shared_user *su = upstream_shared_user(u, i);
        const struct lease *l = dispatch_lease(d, i);
        char label[64];
        json_t *o = json_object(), *sh = json_null();
        metrics_limit_label(cu, i, label, sizeof(label));
        if (su != NULL && l != NULL) {
            struct shared_user_stats st;
            const struct lease_counters *lc = lease_counters(l);
            shared_user_stats(su, &st);
            sh = json_pack(
                "{s:o, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:{s:I,s:I,s:I,s:I,s:I}}", "budget",
                str(st.budget), "mode", lease_mode(l) == LEASE_FALLBACK ? "fallback" : "redis",
                "instances", (json_int_t)lease_instances(l), "slots_held",
                (json_int_t)lease_held(l, now), "granted", (json_int_t)lc->granted, "released",
                (json_int_t)lc->released, "dropped", (json_int_t)lc->dropped, "fleet_pauses",
                (json_int_t)st.fleet_pauses, "fences", (json_int_t)st.fences, "calls", "ok",
                (json_int_t)st.calls_ok, "empty", (json_int_t)st.calls_empty, "error",
                (json_int_t)st.calls_error, "timeout", (json_int_t)st.calls_timeout, "noscript",
                (json_int_t)st.calls_noscript);
        }
        if (o == NULL)
            break;
        json_object_set_new(o, "label", json_string(label));
        json_object_set_new(o, "rate_per_sec", json_real(cl->rate_per_sec));
        json_object_set_new(o, "burst", json_real(cl->burst_tokens));
        json_object_set_new(o, "tokens", json_real(dispatch_tokens(d, i, now)));
        json_object_set_new(o, "shared", sh ? sh : json_null());
        json_array_append_new(arr, o);
    }
    return arr;
}

static json_t *keys_json(const struct upstream *u)
{
    const struct dispatch *d = upstream_dispatch(u);
    struct dispatch_key_info top[TOP_KEYS];
    size_t n = dispatch_top_keys(d, TOP_KEYS, top), i, queued = dispatch_queue_len(d);
    json_t *arr = json_array();

    for (i = 0; arr && i < n; i++)
        json_array_append_new(arr, json_pack("{s:o, s:I, s:f, s:b}", "key",
                                             text(top[i].key, top[i].key_len), "queued",
                                             (json_int_t)top[i].queued, "share",
                                             queued ? (double)top[i].queued / (double)queued : 0.0,
                                             "paused", top[i].paused));
    return json_pack("{s:I, s:I, s:o}", "tracked", (json_int_t)dispatch_nkeys(d), "active",
                     (json_int_t)dispatch_active_flows(d), "top", arr ? arr : json_array());
}

static json_t *pause_json(const struct upstream *u, uint64_t now)
{
    const char *cause, *key;
    uint64_t left;
    size_t key_len;

    if (!upstream_pause_info(u, now, &cause, &left, &key, &key_len))
        return json_null();
    return json_pack("{s:s, s:s, s:o, s:o}", "cause", cause, "scope", key ? "key" : "upstream",
                     "key", key ? text(key, key_len) : json_null(), "left_ms", ms(left));
}

static json_t *series(const uint32_t *v, size_t n)
{
    json_t *arr = json_array();
    size_t i;

    for (i = 0; arr && i < n; i++)
        json_array_append_new(arr, json_integer(v[i]));
    return arr;
}

static json_t *upstream_json(struct server *s, const struct upstream *u, uint64_t now,
                             size_t history)
{
    const struct conf_upstream *cu = upstream_conf(u);
    const struct dispatch *d = upstream_dispatch(u);
    const struct upstream_stats *st = upstream_stats(u);
    uint64_t wake = dispatch_wake_ns(d, now),
             predicted = dispatch_predict_wait_ns(d, NULL, 0, 1, now);
    struct history_now hn;
    struct metrics_totals tot;
    json_t *o;

    memset(&tot, 0, sizeof(tot));
    if (s->metrics != NULL)
        metrics_upstream_totals(s->metrics, cu->name, &tot);
    if (s->history == NULL || !history_now(s->history, cu->name, &hn))
        memset(&hn, 0, sizeof(hn));
    o = json_pack(
        "{s:o, s:o, s:b, s:o, s:f, s:I, s:I, s:I, s:I, s:I, s:o, s:o, "
        "s:{s:f, s:f, s:I, s:I}, "
        "s:{s:f, s:f, s:f, s:f}, s:{s:f, s:f, s:f, s:f}, s:{s:I, s:I, s:I, s:I}, "
        "s:o, s:{s:I, s:I, s:I}, s:o, "
        "s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}}",
        "name", str(cu->name), "url", str(cu->url), "tls", upstream_is_tls(u), "limits",
        limits_json(u, now), "release_rate", hn.release_rate, "queue_depth",
        (json_int_t)dispatch_queue_len(d), "queue_capacity", (json_int_t)dispatch_queue_cap(d),
        "in_flight", (json_int_t)dispatch_in_flight(d), "max_in_flight",
        (json_int_t)cu->max_in_flight, "max_wait_ms", (json_int_t)cu->max_wait_ms,
        "next_release_in_ms",
        wake == DISPATCH_NEVER || dispatch_queue_len(d) == 0 ? json_null()
                                                             : ms(wake > now ? wake - now : 0),
        "predicted_wait_ms", predicted == DISPATCH_NEVER ? json_null() : ms(predicted),
        "queue_wait_ms", "p50", hn.wait_p50_ms, "p99", hn.wait_p99_ms, "window_s",
        (json_int_t)HISTORY_WAIT_S, "count", (json_int_t)hn.wait_count, "answers_rate", "2xx",
        hn.answers_rate[1], "3xx", hn.answers_rate[2], "4xx", hn.answers_rate[3], "5xx",
        hn.answers_rate[4], "refusals_rate", "queue_full", hn.refusals_rate[0], "deadline",
        hn.refusals_rate[1], "shutdown", hn.refusals_rate[2], "key_queue_full", hn.refusals_rate[3],
        "refusals", "queue_full", (json_int_t)tot.refusals[0], "deadline",
        (json_int_t)tot.refusals[1], "shutdown", (json_int_t)tot.refusals[2], "key_queue_full",
        (json_int_t)tot.refusals[3], "pause", pause_json(u, now), "pool", "idle",
        (json_int_t)upstream_pool_idle(u), "lent", (json_int_t)upstream_pool_lent(u), "keepalive",
        (json_int_t)cu->keepalive, "keys", keys_json(u), "counters", "admitted",
        (json_int_t)st->admitted, "released", (json_int_t)st->released, "refused_full",
        (json_int_t)st->refused_full, "refused_late", (json_int_t)st->refused_late, "expired",
        (json_int_t)st->expired, "withdrawn", (json_int_t)st->withdrawn, "responses",
        (json_int_t)st->responses, "failures", (json_int_t)st->failures, "retried",
        (json_int_t)st->retried, "paused", (json_int_t)st->paused, "budgets",
        (json_int_t)st->budgets);
    if (o == NULL)
        return NULL;
    {
        /* Kept for readers of the first /status: one entry per shared limit. */
        json_t *shared = json_array();
        json_t *limits = json_object_get(o, "limits");
        size_t i;
        json_t *lim;
        json_array_foreach(limits, i, lim)
        {
            json_t *sh = json_object_get(lim, "shared");
            if (shared != NULL && json_is_object(sh)) {
                json_t *c = json_deep_copy(sh);
                if (c != NULL) {
                    json_object_set_new(c, "limit", json_integer((json_int_t)i));
                    json_array_append_new(shared, c);
                }
            }
        }
        json_object_set_new(o, "shared", shared ? shared : json_array());
    }
    if (history > 0 && s->history != NULL) {
        uint32_t *buf = calloc(3 * history, sizeof(uint32_t));
        if (buf != NULL) {
            size_t n = history_series(s->history, cu->name, history, buf, buf + history,
                                      buf + 2 * history);
            json_object_set_new(o, "history",
                                json_pack("{s:I, s:o, s:o, s:o}", "interval_s", (json_int_t)1,
                                          "queue_depth", series(buf, n), "released",
                                          series(buf + history, n), "refused",
                                          series(buf + 2 * history, n)));
            free(buf);
        }
    }
    return o;
}

static void agg_route(void *arg, const char *route, const uint64_t outcomes[3],
                      uint64_t took_sum_ns, uint64_t took_count)
{
    json_t *o = json_object_get(arg, route);

    if (o == NULL) /* a route a reload removed */
        return;
    json_object_set_new(o, "answers",
                        json_pack("{s:I, s:I, s:I}", "complete", (json_int_t)outcomes[0], "partial",
                                  (json_int_t)outcomes[1], "failed", (json_int_t)outcomes[2]));
    json_object_set_new(
        o, "mean_ms",
        took_count == 0 ? json_null() : json_real((double)took_sum_ns / (double)took_count / 1e6));
}

static void agg_part(void *arg, const char *route, const char *part, const char *reason,
                     uint64_t count)
{
    json_t *o = json_object_get(arg, route);
    json_t *p = o ? json_object_get(json_object_get(o, "parts"), part) : NULL;

    if (p != NULL) /* else a part a reload removed */
        json_object_set_new(p, reason, json_integer((json_int_t)count));
}

/* {path_prefix: {answers: {complete, partial, failed}, mean_ms, parts: {name: {reason:
 * count}}}} for each configured aggregate route, from the metrics' counts. */
static json_t *aggregates_json(const struct server *s)
{
    json_t *all = json_object();
    struct metrics_aggregate_visitor v = {agg_route, agg_part, all};
    size_t i, j;

    for (i = 0; all && i < s->conf->nroutes; i++) {
        const struct conf_route *cr = &s->conf->routes[i];
        json_t *parts = json_object();
        if (cr->aggregate == NULL || parts == NULL) {
            json_decref(parts);
            continue;
        }
        for (j = 0; j < cr->aggregate->nparts; j++)
            json_object_set_new(parts, cr->aggregate->parts[j].name, json_object());
        json_object_set_new(all, cr->path_prefix,
                            json_pack("{s:{s:i, s:i, s:i}, s:n, s:o}", "answers", "complete", 0,
                                      "partial", 0, "failed", 0, "mean_ms", "parts", parts));
    }
    if (all != NULL && s->metrics != NULL)
        metrics_aggregates(s->metrics, &v);
    return all ? all : json_object();
}

static int dump_cb(const char *buffer, size_t size, void *data)
{
    return evbuffer_add(data, buffer, size);
}

int status_render(struct server *s, size_t history, struct evbuffer *out)
{
    uint64_t now = clock_now_ns(), cl = 0, ht = 0;
    double clr = 0, htr = 0;
    struct timeval tv;
    json_t *doc, *ups = json_array();
    size_t i;
    int rc;

    if (history > HISTORY_SECONDS)
        history = HISTORY_SECONDS;
    if (s->metrics != NULL)
        metrics_client_refusals(s->metrics, &cl, &ht);
    if (s->history != NULL)
        history_client_rates(s->history, &clr, &htr);
    gettimeofday(&tv, NULL);
    for (i = 0; ups && i < s->nupstreams; i++)
        if (s->upstreams[i] != NULL)
            json_array_append_new(ups, upstream_json(s, s->upstreams[i], now, history));
    doc = json_pack(
        "{s:s, s:s, s:I, s:I, s:{s:I, s:I, s:{s:I, s:I}, s:{s:f, s:f}}, s:o, s:o}", "state",
        server_is_draining(s) ? "draining" : "running", "version", SLUICE_VERSION, "uptime_s",
        (json_int_t)((now - s->started_ns) / NS_PER_SEC), "now_unix_ms",
        (json_int_t)tv.tv_sec * 1000 + (json_int_t)(tv.tv_usec / 1000), "client", "connections",
        (json_int_t)(s->frontend ? frontend_connections(s->frontend) : 0), "max_connections",
        (json_int_t)s->conf->client.max_connections, "refused", "connection_limit", (json_int_t)cl,
        "header_timeout", (json_int_t)ht, "refused_rate", "connection_limit", clr, "header_timeout",
        htr, "upstreams", ups ? ups : json_array(), "aggregates", aggregates_json(s));
    if (doc == NULL)
        return -1;
    rc = json_dump_callback(doc, dump_cb, out, JSON_COMPACT);
    evbuffer_add(out, "\n", 1);
    json_decref(doc);
    return rc == 0 ? 0 : -1;
}
