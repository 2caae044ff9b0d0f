/*
 * tests/unit/test_conf: conf_load on good configs (every value and every default) and on
 * a table of bad ones, each with the exact "LINE:COL: key: message" it must produce.
 *
 * Runs from the repository root (as `make test-unit` does): one test loads the shipped
 * proxy.yaml.sample. Under ASan every bad case also proves that the error paths free
 * everything they allocated.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf/conf.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* A minimal valid config in three parts, so that a case can replace one of them.
 * Line numbers: LISTEN is lines 1-2, UPSTREAMS 3-7, ROUTES 8-10. */
#define LISTEN "listen:\n  - address: 127.0.0.1:8080\n"
#define UPSTREAMS                                                                                  \
    "upstreams:\n"                                                                                 \
    "  api:\n"                                                                                     \
    "    url: http://127.0.0.1:18080\n"                                                            \
    "    limits:\n"                                                                                \
    "      - rate: 10/s\n"
#define ROUTES  "routes:\n  - path_prefix: /\n    upstream: api\n"
#define MINIMAL LISTEN UPSTREAMS ROUTES
/* A shared: section for configs whose limits name a budget; cases put it last. */
#define SHARED "shared:\n  redis: 127.0.0.1:6379\n"

/* An aggregate route's first lines (8-9), its keys from line 10; AGG_PART: one part. */
#define AGG      LISTEN UPSTREAMS "routes:\n  - path_prefix: /c\n"
#define AGG_PART "    aggregate: { parts: { a: { upstream: api, path: / } } }\n"

/* The upstream part with extra lines at the end of the `api` mapping; cases using it put
 * it first, so the extra lines start at line 6. */
#define UPSTREAMS_WITH(extra) UPSTREAMS extra

static struct conf *load_ok(const char *yaml)
{
    char err[512];
    struct conf *c = conf_load_string("t.yaml", yaml, err, sizeof err);
    if (c == NULL)
        fail_msg("unexpected error: %s", err);
    return c;
}

/* ------------------------------------------------------------------- good configs */

static const char full_yaml[] = "listen:\n"                                      /* 1 */
                                "  - address: 127.0.0.1:8080\n"                  /* 2 */
                                "  - address: \"[::1]:8443\"\n"                  /* 3 */
                                "    tls: { cert: /dev/null, key: /dev/null }\n" /* 4 */
                                "drain_timeout: 5s\n"                            /* 5 */
                                "log_level: debug\n"                             /* 6 */
                                "client:\n"                                      /* 7 */
                                "  max_connections: 10\n"                        /* 8 */
                                "  max_header_size: 16k\n"                       /* 9 */
                                "  max_body_size: 0\n"                           /* 10 */
                                "  timeout: 1.5s\n"                              /* 11 */
                                "admin:\n"                                       /* 12 */
                                "  address: localhost:9901\n"                    /* 13 */
                                "access_log:\n"                                  /* 14 */
                                "  path: /tmp/access.log\n"                      /* 15 */
                                "  format: json\n"                               /* 16 */
                                "upstreams:\n"                                   /* 17 */
                                "  api:\n"                                       /* 18 */
                                "    url: http://127.0.0.1:18080/base/\n"        /* 19 */
                                "    limits:\n"                                  /* 20 */
                                "      - rate: 20/s\n"                           /* 21 */
                                "        burst: 2.5\n"                           /* 22 */
                                "      - rate: 5000/h\n"                         /* 23 */
                                "    max_in_flight: 3\n"                         /* 24 */
                                "    queue: { size: 7, max_wait: 250ms }\n"      /* 25 */
                                "    timeouts:\n"                                /* 26 */
                                "      connect: 1s\n"                            /* 27 */
                                "      response: 2m\n"                           /* 28 */
                                "    keepalive: 0\n"                             /* 29 */
                                "    preserve_host: true\n"                      /* 30 */
                                "  gh:\n"                                        /* 31 */
                                "    url: https://api.github.com\n"              /* 32 */
                                "    limits: [{ rate: 0.5/s }]\n"                /* 33 */
                                "    tls:\n"                                     /* 34 */
                                "      verify: false\n"                          /* 35 */
                                "      ca_file: /dev/null\n"                     /* 36 */
                                "      server_name: github.com\n"                /* 37 */
                                "      min_version: 1.3\n"                       /* 38 */
                                "      cert: /dev/null\n"                        /* 39 */
                                "      key: /dev/null\n"                         /* 40 */
                                "  v6:\n"                                        /* 41 */
                                "    url: HTTPS://[::1]:8443\n"                  /* 42 */
                                "    limits:\n"                                  /* 43 */
                                "      - rate: 1/h\n"                            /* 44 */
                                "routes:\n"                                      /* 45 */
                                "  - path_prefix: /api/\n"                       /* 46 */
                                "    host: API.example.com\n"                    /* 47 */
                                "    strip_prefix: true\n"                       /* 48 */
                                "    upstream: api\n"                            /* 49 */
                                "  - path_prefix: /api/\n"                       /* 50 */
                                "    upstream: gh\n"                             /* 51 */
                                "  - path_prefix: /v6\n"                         /* 52 */
                                "    upstream: v6\n";                            /* 53 */

static void test_full(void **state)
{
    struct conf *c = load_ok(full_yaml);

    assert_string_equal(c->path, "t.yaml");
    assert_int_equal(c->nlisten, 2);
    assert_string_equal(c->listen[0].address, "127.0.0.1:8080");
    assert_string_equal(c->listen[0].host, "127.0.0.1");
    assert_int_equal(c->listen[0].port, 8080);
    assert_int_equal(c->listen[0].tls.enabled, 0);
    assert_int_equal(c->listen[0].mark.line, 2);
    assert_int_equal(c->listen[0].mark.col, 5);
    assert_string_equal(c->listen[1].address, "[::1]:8443");
    assert_string_equal(c->listen[1].host, "::1");
    assert_int_equal(c->listen[1].port, 8443);
    assert_int_equal(c->listen[1].tls.enabled, 1);
    assert_string_equal(c->listen[1].tls.cert, "/dev/null");
    assert_string_equal(c->listen[1].tls.key, "/dev/null");
    assert_int_equal(c->listen[1].tls.mark.line, 4);
    assert_int_equal(c->listen[1].tls.mark.col, 10);
    assert_int_equal(c->listen[1].tls.cert_mark.line, 4);
    assert_int_equal(c->listen[1].tls.cert_mark.col, 18);
    assert_int_equal(c->listen[1].tls.key_mark.col, 34);

    assert_int_equal(c->drain_timeout_ms, 5000);
    assert_int_equal(c->log_level, CONF_LOG_DEBUG);
    assert_int_equal(c->client.max_connections, 10);
    assert_int_equal(c->client.max_header_size, 16384);
    assert_int_equal(c->client.max_body_size, 0);
    assert_int_equal(c->client.timeout_ms, 1500);
    assert_int_equal(c->admin.enabled, 1);
    assert_string_equal(c->admin.address, "localhost:9901");
    assert_string_equal(c->admin.host, "localhost");
    assert_int_equal(c->admin.port, 9901);
    assert_int_equal(c->admin.mark.line, 13);
    assert_int_equal(c->access_log.enabled, 1);
    assert_string_equal(c->access_log.path, "/tmp/access.log");
    assert_int_equal(c->access_log.format, CONF_LOG_JSON);

    assert_int_equal(c->nupstreams, 3);
    const struct conf_upstream *u = &c->upstreams[0];
    assert_string_equal(u->name, "api");
    assert_int_equal(u->mark.line, 18);
    assert_int_equal(u->mark.col, 3);
    assert_string_equal(u->url, "http://127.0.0.1:18080/base/");
    assert_int_equal(u->https, 0);
    assert_string_equal(u->host, "127.0.0.1");
    assert_int_equal(u->port, 18080);
    assert_string_equal(u->base_path, "/base");
    assert_int_equal(u->nlimits, 2);
    assert_true(u->limits[0].rate_per_sec == 20);
    assert_true(u->limits[0].burst_tokens == 2.5);
    assert_int_equal(u->limits[0].mark.line, 21);
    assert_int_equal(u->limits[0].mark.col, 9);
    assert_true(u->limits[1].rate_per_sec == 5000.0 / 3600);
    assert_true(u->limits[1].burst_tokens == 1);
    assert_int_equal(u->max_in_flight, 3);
    assert_int_equal(u->queue_size, 7);
    assert_int_equal(u->max_wait_ms, 250);
    assert_int_equal(u->connect_timeout_ms, 1000);
    assert_int_equal(u->response_timeout_ms, 120000);
    assert_int_equal(u->keepalive, 0);
    assert_int_equal(u->preserve_host, 1);
    assert_int_equal(u->tls.enabled, 0);

    u = &c->upstreams[1];
    assert_string_equal(u->name, "gh");
    assert_int_equal(u->https, 1);
    assert_string_equal(u->host, "api.github.com");
    assert_int_equal(u->port, 443);
    assert_string_equal(u->base_path, "");
    assert_true(u->limits[0].rate_per_sec == 0.5);
    assert_int_equal(u->max_in_flight, 64); /* defaults next to set values */
    assert_int_equal(u->tls.enabled, 1);
    assert_int_equal(u->tls.verify, 0);
    assert_string_equal(u->tls.ca_file, "/dev/null");
    assert_string_equal(u->tls.server_name, "github.com");
    assert_int_equal(u->tls.min_version, 13);
    assert_string_equal(u->tls.cert, "/dev/null");
    assert_string_equal(u->tls.key, "/dev/null");
    assert_int_equal(u->tls.mark.line, 35);
    assert_int_equal(u->tls.ca_file_mark.line, 36);
    assert_int_equal(u->tls.ca_file_mark.col, 16);
    assert_int_equal(u->tls.cert_mark.line, 39);
    assert_int_equal(u->tls.key_mark.line, 40);

    u = &c->upstreams[2];
    assert_int_equal(u->https, 1);
    assert_string_equal(u->host, "::1");
    assert_int_equal(u->port, 8443);
    assert_true(u->limits[0].rate_per_sec == 1.0 / 3600);
    assert_int_equal(u->tls.enabled, 1);
    assert_int_equal(u->tls.verify, 1);
    assert_int_equal(u->tls.min_version, 12);
    assert_null(u->tls.ca_file);
    /* No tls: section: the url that turned TLS on stands for it. */
    assert_int_equal(u->tls.mark.line, 42);
    assert_int_equal(u->tls.mark.col, 10);

    assert_int_equal(c->nroutes, 3);
    assert_string_equal(c->routes[0].path_prefix, "/api/");
    assert_string_equal(c->routes[0].host, "API.example.com");
    assert_int_equal(c->routes[0].strip_prefix, 1);
    assert_string_equal(c->routes[0].upstream, "api");
    assert_int_equal(c->routes[0].upstream_index, 0);
    assert_int_equal(c->routes[0].mark.line, 46);
    assert_null(c->routes[1].host);
    assert_int_equal(c->routes[1].strip_prefix, 0);
    assert_int_equal(c->routes[1].upstream_index, 1);
    assert_int_equal(c->routes[2].upstream_index, 2);

    assert_ptr_equal(conf_find_upstream(c, "gh"), &c->upstreams[1]);
    assert_null(conf_find_upstream(c, "nope"));
    conf_free(c);
}

static void test_defaults(void **state)
{
    struct conf *c = load_ok(MINIMAL);

    assert_int_equal(c->drain_timeout_ms, 30000);
    assert_int_equal(c->log_level, CONF_LOG_INFO);
    assert_int_equal(c->client.max_connections, 1024);
    assert_int_equal(c->client.max_header_size, 8192);
    assert_int_equal(c->client.max_body_size, 1048576);
    assert_int_equal(c->client.timeout_ms, 60000);
    assert_int_equal(c->client.header_timeout_ms, 10000);
    assert_int_equal(c->client.on_max_connections, CONF_CONN_REJECT);
    assert_int_equal(c->admin.enabled, 0);
    assert_null(c->admin.address);
    assert_int_equal(c->access_log.enabled, 0);
    assert_int_equal(c->access_log.format, CONF_LOG_TEXT);

    const struct conf_upstream *u = &c->upstreams[0];
    assert_int_equal(u->port, 18080);
    assert_string_equal(u->base_path, "");
    assert_true(u->limits[0].burst_tokens == 1);
    assert_int_equal(u->max_in_flight, 64);
    assert_int_equal(u->queue_size, 1000);
    assert_int_equal(u->max_wait_ms, 30000);
    assert_int_equal(u->connect_timeout_ms, 2000);
    assert_int_equal(u->response_timeout_ms, 30000);
    assert_int_equal(u->keepalive, 64); /* max_in_flight */
    assert_int_equal(u->preserve_host, 0);
    assert_int_equal(u->feedback, 1);
    assert_int_equal(u->feedback_scope, CONF_FEEDBACK_UPSTREAM);
    assert_int_equal(u->feedback_max_pause_ms, 300000);
    assert_int_equal(u->tls.enabled, 0);
    assert_int_equal(u->tls.mark.line, 0);

    assert_null(c->routes[0].host);
    assert_int_equal(c->routes[0].strip_prefix, 0);
    assert_int_equal(c->routes[0].upstream_index, 0);
    assert_null(c->routes[0].aggregate);
    assert_int_equal(c->routes[0].methods, CONF_METHOD_GET | CONF_METHOD_HEAD);
    conf_free(c);

    /* Sections present but empty take the defaults too; access_log gets "-". */
    c = load_ok(MINIMAL "client: {}\naccess_log: {}\n");
    assert_int_equal(c->client.max_connections, 1024);
    assert_int_equal(c->access_log.enabled, 1);
    assert_string_equal(c->access_log.path, "-");
    conf_free(c);
}

/* Corners that are valid: overlapping-looking listeners that are not, url forms. */
static void test_good_corners(void **state)
{
    struct conf *c = load_ok("listen:\n"
                             "  - address: 127.0.0.1:8080\n"
                             "  - address: 127.0.0.2:8080\n" /* another address */
                             "  - address: 0.0.0.0:8081\n"   /* another port */
                             "  - address: '[::1]:8080'\n"   /* another family */
                             "admin: { address: 127.0.0.1:9901 }\n"
                             "drain_timeout: 0s\n"
                             "upstreams:\n"
                             "  a-b.c_1:\n"
                             "    url: http://svc.internal:8080/x/y//\n"
                             "    limits: [ { rate: 1000000000/s, burst: 1000000 } ]\n"
                             "routes:\n"
                             "  - { path_prefix: /, upstream: a-b.c_1 }\n"
                             "  - { path_prefix: /, host: a.example, upstream: a-b.c_1 }\n"
                             "  - { path_prefix: /, host: b.example, upstream: a-b.c_1 }\n");
    assert_int_equal(c->nlisten, 4);
    assert_int_equal(c->drain_timeout_ms, 0);
    assert_string_equal(c->upstreams[0].host, "svc.internal");
    assert_string_equal(c->upstreams[0].base_path, "/x/y");
    assert_true(c->upstreams[0].limits[0].rate_per_sec == 1e9);
    assert_true(c->upstreams[0].limits[0].burst_tokens == 1e6);
    conf_free(c);
}

/* Aggregate routes: parts in the order written, names that need JSON escapes, paths with
 * a query, upstreams resolved, methods (default GET|HEAD, a body method only when named). */
static const char aggregate_yaml[] = LISTEN                                  /* 1-2 */
    "upstreams:\n"                                                           /* 3 */
    "  weather: { url: http://127.0.0.1:18081, limits: [{ rate: 1/s }] }\n"  /* 4 */
    "  news: { url: http://127.0.0.1:18082, limits: [{ rate: 1/s }] }\n"     /* 5 */
    "  stocks: { url: http://127.0.0.1:18083, limits: [{ rate: 1/s }] }\n"   /* 6 */
    "routes:\n"                                                              /* 7 */
    "  - path_prefix: /combo\n"                                              /* 8 */
    "    aggregate:\n"                                                       /* 9 */
    "      timeout: 1500ms\n"                                                /* 10 */
    "      max_part_size: 64k\n"                                             /* 11 */
    "      parts:\n"                                                         /* 12 */
    "        weather: { upstream: weather, path: /v1/now }\n"                /* 13 */
    "        news:    { upstream: news,    path: /top }\n"                   /* 14 */
    "        stock:   { upstream: stocks,  path: '/quote?s=ACME&x=../y' }\n" /* 15 */
    "        'say \"hi\"': { upstream: news, path: /a%2Fb }\n"               /* 16 */
    "        \"back\\\\slash\": { upstream: news, path: / }\n"               /* 17 */
    "        météo ☀ 1.2: { upstream: weather, path: /x;y }\n"               /* 18 */
    "    key: header:X-Api-Key\n"                                            /* 19 */
    "    cost: 2\n"                                                          /* 20 */
    "  - path_prefix: /post\n"                                               /* 21 */
    "    methods: [POST, GET]\n"                                             /* 22 */
    "    aggregate: { parts: { a: { upstream: news, path: /p } } }\n"        /* 23 */
    "  - path_prefix: /\n"                                                   /* 24 */
    "    upstream: stocks\n";                                                /* 25 */

static void test_aggregate(void **state)
{
    struct conf *c = load_ok(aggregate_yaml);
    const struct conf_route *r = &c->routes[0];
    const struct conf_aggregate *a = r->aggregate;

    assert_int_equal(c->nroutes, 3);
    assert_null(r->upstream);
    assert_true(r->upstream_index == SIZE_MAX);
    assert_int_equal(r->methods, CONF_METHOD_GET | CONF_METHOD_HEAD);
    assert_int_equal(r->key_source, CONF_KEY_HEADER);
    assert_int_equal(r->cost, 2);
    assert_int_equal(r->strip_prefix, 0);
    assert_non_null(a);
    assert_int_equal(a->timeout_ms, 1500);
    assert_int_equal(a->max_part_size, 65536);
    assert_int_equal(a->mark.line, 10);
    assert_int_equal(a->mark.col, 7);
    assert_int_equal(a->nparts, 6);

    static const struct {
        const char *name, *upstream, *path;
        size_t index;
        unsigned line, col;
    } want[] = {
        {"weather", "weather", "/v1/now", 0, 13, 9},
        {"news", "news", "/top", 1, 14, 9},
        {"stock", "stocks", "/quote?s=ACME&x=../y", 2, 15, 9},
        {"say \"hi\"", "news", "/a%2Fb", 1, 16, 9},
        {"back\\slash", "news", "/", 1, 17, 9},
        {"météo ☀ 1.2", "weather", "/x;y", 0, 18, 9},
    };
    for (size_t i = 0; i < ARRAY_LEN(want); i++) {
        const struct conf_part *p = &a->parts[i];
        assert_string_equal(p->name, want[i].name);
        assert_string_equal(p->upstream, want[i].upstream);
        assert_string_equal(p->path, want[i].path);
        assert_int_equal(p->upstream_index, want[i].index);
        assert_int_equal(p->mark.line, want[i].line);
        assert_int_equal(p->mark.col, want[i].col);
    }

    r = &c->routes[1];
    assert_int_equal(r->methods, CONF_METHOD_POST | CONF_METHOD_GET);
    assert_int_equal(r->aggregate->timeout_ms, 2000);       /* default */
    assert_int_equal(r->aggregate->max_part_size, 1048576); /* default */
    assert_int_equal(r->aggregate->nparts, 1);
    assert_int_equal(r->aggregate->parts[0].upstream_index, 1);

    r = &c->routes[2];
    assert_null(r->aggregate);
    assert_string_equal(r->upstream, "stocks");
    assert_int_equal(r->upstream_index, 2);
    conf_free(c);

    /* Every method, the bounds of each key, 32 parts, a 64-byte name. */
    char yaml[4096];
    int n =
        snprintf(yaml, sizeof yaml,
                 LISTEN UPSTREAMS "routes:\n  - path_prefix: /\n"
                                  "    methods: [GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH]\n"
                                  "    aggregate:\n      timeout: 10m\n"
                                  "      max_part_size: 64m\n      parts:\n");
    for (int i = 0; i < 31; i++)
        n += snprintf(yaml + n, sizeof yaml - (size_t)n,
                      "        p%d: { upstream: api, path: /%d }\n", i, i);
    n += snprintf(yaml + n, sizeof yaml - (size_t)n,
                  "        x123456789x123456789x123456789x123456789x123456789x123456789x1é:"
                  " { upstream: api, path: / }\n");
    assert_true((size_t)n < sizeof yaml);
    c = load_ok(yaml);
    r = &c->routes[0];
    assert_int_equal(r->methods, 0x7f);
    assert_int_equal(r->aggregate->timeout_ms, 600000);
    assert_int_equal(r->aggregate->max_part_size, 64u << 20);
    assert_int_equal(r->aggregate->nparts, 32);
    assert_int_equal(strlen(r->aggregate->parts[31].name), 64);
    conf_free(c);

    c = load_ok(LISTEN UPSTREAMS "routes:\n  - path_prefix: /\n"
                                 "    aggregate: { timeout: 1ms, max_part_size: 1, "
                                 "parts: { a: { upstream: api, path: / } } }\n");
    assert_int_equal(c->routes[0].aggregate->timeout_ms, 1);
    assert_int_equal(c->routes[0].aggregate->max_part_size, 1);
    conf_free(c);
}

/* client.header_timeout and client.on_max_connections. */
static void test_client_keys(void **state)
{
    struct conf *c = load_ok(MINIMAL "client:\n"
                                     "  header_timeout: 100ms\n"
                                     "  on_max_connections: pause\n");
    assert_int_equal(c->client.header_timeout_ms, 100);
    assert_int_equal(c->client.on_max_connections, CONF_CONN_PAUSE);
    assert_int_equal(c->client.max_connections, 1024); /* the others keep their defaults */
    conf_free(c);

    c = load_ok(MINIMAL "client: { header_timeout: 1h, on_max_connections: reject }\n");
    assert_int_equal(c->client.header_timeout_ms, 3600000);
    assert_int_equal(c->client.on_max_connections, CONF_CONN_REJECT);
    conf_free(c);
}

/* feedback: a bool as before, or a mapping; each form's defaults. */
static void test_feedback_forms(void **state)
{
    struct conf *c =
        load_ok(LISTEN "upstreams:\n"
                       "  a: { url: http://h, limits: [{rate: 1/s}], feedback: true }\n"
                       "  b: { url: http://h, limits: [{rate: 1/s}], feedback: false }\n"
                       "  c:\n"
                       "    url: http://h\n"
                       "    limits: [{rate: 1/s}]\n"
                       "    feedback:\n"
                       "      scope: key\n"
                       "      max_pause: 1s\n"
                       "  d:\n"
                       "    url: http://h\n"
                       "    limits: [{rate: 1/s}]\n"
                       "    feedback: { enabled: false, max_pause: 24h }\n"
                       "  e: { url: http://h, limits: [{rate: 1/s}], feedback: {} }\n"
                       "  f: { url: http://h, limits: [{rate: 1/s}] }\n"
                       "routes:\n"
                       "  - { path_prefix: /, upstream: a }\n");
    const struct conf_upstream *u = conf_find_upstream(c, "a");
    assert_int_equal(u->feedback, 1);
    assert_int_equal(u->feedback_scope, CONF_FEEDBACK_UPSTREAM);
    assert_int_equal(u->feedback_max_pause_ms, 300000);
    u = conf_find_upstream(c, "b");
    assert_int_equal(u->feedback, 0);
    assert_int_equal(u->feedback_scope, CONF_FEEDBACK_UPSTREAM);
    assert_int_equal(u->feedback_max_pause_ms, 300000);
    /* scope: key with no keyed route pointing at c: accepted (every request is one key). */
    u = conf_find_upstream(c, "c");
    assert_int_equal(u->feedback, 1);
    assert_int_equal(u->feedback_scope, CONF_FEEDBACK_KEY);
    assert_int_equal(u->feedback_max_pause_ms, 1000);
    u = conf_find_upstream(c, "d");
    assert_int_equal(u->feedback, 0);
    assert_int_equal(u->feedback_scope, CONF_FEEDBACK_UPSTREAM);
    assert_int_equal(u->feedback_max_pause_ms, 86400000);
    u = conf_find_upstream(c, "e");
    assert_int_equal(u->feedback, 1);
    assert_int_equal(u->feedback_scope, CONF_FEEDBACK_UPSTREAM);
    assert_int_equal(u->feedback_max_pause_ms, 300000);
    u = conf_find_upstream(c, "f");
    assert_int_equal(u->feedback, 1);
    assert_int_equal(u->feedback_max_pause_ms, 300000);
    conf_free(c);
}

/* keepalive: max_in_flight unless given; a given value wins, 0 included. */
static void test_keepalive_default(void **state)
{
    struct conf *c =
        load_ok(LISTEN "upstreams:\n"
                       "  a: { url: http://h, limits: [{rate: 1/s}], max_in_flight: 7 }\n"
                       "  b: { url: http://h, limits: [{rate: 1/s}], max_in_flight: 7,\n"
                       "       keepalive: 3 }\n"
                       "  c: { url: http://h, limits: [{rate: 1/s}], keepalive: 0 }\n"
                       "  d: { url: http://h, limits: [{rate: 1/s}], keepalive: 100000,\n"
                       "       max_in_flight: 1 }\n"
                       "routes:\n"
                       "  - { path_prefix: /, upstream: a }\n");
    assert_int_equal(conf_find_upstream(c, "a")->keepalive, 7);
    assert_int_equal(conf_find_upstream(c, "b")->keepalive, 3);
    assert_int_equal(conf_find_upstream(c, "c")->keepalive, 0);
    assert_int_equal(conf_find_upstream(c, "d")->keepalive, 100000);
    conf_free(c);
}

/* conf_warnings: the queues can hold more requests than client.max_connections lets in. */
static void test_warnings(void **state)
{
    char out[512];
    const char *two = LISTEN "upstreams:\n"
                             "  a: { url: http://h, limits: [{rate: 1/s}] }\n"
                             "  b: { url: http://h, limits: [{rate: 1/s}], queue: { size: 24 } }\n"
                             "routes:\n"
                             "  - { path_prefix: /, upstream: a }\n";
    char yaml[1024];

    struct conf *c = load_ok(MINIMAL);
    memset(out, 'x', sizeof out);
    assert_int_equal(conf_warnings(c, out, sizeof out), 0); /* 1000 of 1024 */
    assert_string_equal(out, "");
    conf_free(c);

    c = load_ok(two); /* 1000 + 24 = 1024: every queued request fits */
    assert_int_equal(conf_warnings(c, out, sizeof out), 0);
    conf_free(c);

    snprintf(yaml, sizeof yaml, "%sclient: { max_connections: 1023 }\n", two);
    c = load_ok(yaml);
    assert_int_equal(conf_warnings(c, out, sizeof out), 1);
    assert_string_equal(out, "t.yaml: warning: the queues hold up to 1024 requests but "
                             "client.max_connections is 1023: at most 1023 can wait at once "
                             "(raise client.max_connections or lower queue sizes)\n");
    /* A short buffer is cut and terminated; no buffer at all is fine. */
    memset(out, 'x', sizeof out);
    assert_int_equal(conf_warnings(c, out, 10), 1);
    assert_string_equal(out, "t.yaml: w");
    assert_int_equal(out[10], 'x');
    assert_int_equal(conf_warnings(c, NULL, 0), 1);
    conf_free(c);
}

/* The shipped sample must load, and say what it says. */
static void test_sample(void **state)
{
    char err[512];
    struct conf *c = conf_load("proxy.yaml.sample", err, sizeof err);
    if (c == NULL)
        fail_msg("proxy.yaml.sample: %s", err);
    assert_int_equal(c->nlisten, 1);
    assert_string_equal(c->listen[0].address, "127.0.0.1:8080");
    const struct conf_upstream *u = conf_find_upstream(c, "demo");
    assert_non_null(u);
    assert_string_equal(u->url, "http://127.0.0.1:18080");
    assert_int_equal(u->nlimits, 1);
    assert_true(u->limits[0].rate_per_sec == 2);
    assert_true(u->limits[0].burst_tokens == 1);
    assert_int_equal(u->queue_size, 100);
    assert_int_equal(u->max_wait_ms, 30000);
    assert_int_equal(c->nroutes, 1);
    assert_string_equal(c->routes[0].path_prefix, "/demo/");
    assert_int_equal(c->routes[0].strip_prefix, 1);
    assert_string_equal(c->routes[0].upstream, "demo");
    conf_free(c);

    /* The commented-out aggregate route, uncommented, loads and says what it says. */
    char yaml[8192], line[256];
    FILE *f = fopen("proxy.yaml.sample", "r");
    int in = 0;
    size_t used = (size_t)snprintf(
        yaml, sizeof yaml,
        LISTEN "upstreams:\n"
               "  weather: { url: http://127.0.0.1:18081, limits: [{ rate: 1/s }] }\n"
               "  news: { url: http://127.0.0.1:18082, limits: [{ rate: 1/s }] }\n"
               "  stocks: { url: http://127.0.0.1:18083, limits: [{ rate: 1/s }] }\n"
               "routes:\n");
    assert_non_null(f);
    while (fgets(line, sizeof line, f) != NULL) {
        if (strstr(line, "  # - path_prefix: /combo") == line)
            in = 1;
        else if (in && strncmp(line, "  #   ", 6) != 0)
            break;
        if (in) {
            used += (size_t)snprintf(yaml + used, sizeof yaml - used, "  %s", line + 4);
            assert_true(used < sizeof yaml);
        }
    }
    fclose(f);
    assert_true(in);
    c = load_ok(yaml);
    const struct conf_aggregate *a = c->routes[0].aggregate;
    assert_non_null(a);
    assert_int_equal(a->timeout_ms, 2000);
    assert_int_equal(a->max_part_size, 1048576);
    assert_int_equal(a->nparts, 3);
    assert_string_equal(a->parts[2].name, "stock");
    assert_string_equal(a->parts[2].upstream, "stocks");
    assert_string_equal(a->parts[2].path, "/quote?s=ACME");
    assert_int_equal(c->routes[0].methods, CONF_METHOD_GET | CONF_METHOD_HEAD);
    conf_free(c);
}

/* ------------------------------------------------------------------- files */

static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/sluice-test-conf-XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static void test_files(void **state)
{
    char err[512], expect[600];

    char *path = write_temp(MINIMAL);
    struct conf *c = conf_load(path, err, sizeof err);
    if (c == NULL)
        fail_msg("%s", err);
    assert_string_equal(c->path, path);
    conf_free(c);
    unlink(path);
    free(path);

    path = write_temp(MINIMAL "drain_timeout: 30\n");
    assert_null(conf_load(path, err, sizeof err));
    snprintf(expect, sizeof expect,
             "%s:11:16: drain_timeout: missing unit (ms, s, m or h), got '30'", path);
    assert_string_equal(err, expect);
    unlink(path);
    free(path);

    path = write_temp("");
    assert_null(conf_load(path, err, sizeof err));
    snprintf(expect, sizeof expect, "%s: empty file (expected listen, upstreams and routes)", path);
    assert_string_equal(err, expect);
    unlink(path);

    /* Gone now. */
    assert_null(conf_load(path, err, sizeof err));
    snprintf(expect, sizeof expect, "%s: cannot open: No such file or directory", path);
    assert_string_equal(err, expect);
    free(path);

    assert_null(conf_load("/", err, sizeof err));
    assert_string_equal(err, "/: cannot read: Is a directory");
}

/* The error buffer is never overrun, and may be absent. */
static void test_err_buffer(void **state)
{
    char err[16];
    memset(err, 'x', sizeof err);
    assert_null(conf_load_string("t.yaml", "listen: 1\n", err, 10));
    assert_string_equal(err, "t.yaml:1:");
    assert_int_equal(err[10], 'x');
    assert_null(conf_load_string("t.yaml", "listen: 1\n", NULL, 0));
    assert_null(conf_load(NULL ? NULL : "/nonexistent/x", NULL, 0));
    conf_free(NULL);
}

/* shared: absent, its defaults, every form of redis, and limits naming budgets. */
static void test_shared(void **state)
{
    struct conf *c = load_ok(MINIMAL);
    assert_int_equal(c->shared.enabled, 0);
    assert_null(c->shared.redis);
    assert_null(c->upstreams[0].limits[0].shared);
    assert_int_equal(c->upstreams[0].limits[0].shared_mark.line, 0);
    conf_free(c);

    /* A section that no limit uses is valid; each default. */
    c = load_ok(MINIMAL "shared: { redis: localhost:6379 }\n");
    assert_int_equal(c->shared.enabled, 1);
    assert_string_equal(c->shared.redis, "localhost:6379");
    assert_string_equal(c->shared.host, "localhost");
    assert_int_equal(c->shared.port, 6379);
    assert_null(c->shared.unix_path);
    assert_null(c->shared.password);
    assert_int_equal(c->shared.db, 0);
    assert_int_equal(c->shared.timeout_ms, 50);
    assert_int_equal(c->shared.horizon_ms, 500);
    assert_null(c->shared.instance);
    assert_int_equal(c->shared.mark.line, 11);
    assert_int_equal(c->shared.mark.col, 9);
    assert_int_equal(c->shared.redis_mark.line, 11);
    assert_int_equal(c->shared.redis_mark.col, 18);
    conf_free(c);

    c = load_ok(MINIMAL "shared:\n"
                        "  redis: unix:/run/redis/redis.sock\n"
                        "  db: 10000\n"
                        "  timeout: 10s\n"
                        "  horizon: 10ms\n"
                        "  instance: web-1.eu_west:8080\n");
    assert_string_equal(c->shared.redis, "unix:/run/redis/redis.sock");
    assert_string_equal(c->shared.unix_path, "/run/redis/redis.sock");
    assert_null(c->shared.host);
    assert_int_equal(c->shared.port, 0);
    assert_int_equal(c->shared.db, 10000);
    assert_int_equal(c->shared.timeout_ms, 10000);
    assert_int_equal(c->shared.horizon_ms, 10);
    assert_string_equal(c->shared.instance, "web-1.eu_west:8080");
    assert_int_equal(c->shared.redis_mark.line, 12);
    assert_int_equal(c->shared.redis_mark.col, 10);
    conf_free(c);

    c = load_ok(MINIMAL "shared: { redis: '[::1]:6380', timeout: 1ms, horizon: 60s }\n");
    assert_string_equal(c->shared.host, "::1");
    assert_int_equal(c->shared.port, 6380);
    assert_int_equal(c->shared.timeout_ms, 1);
    assert_int_equal(c->shared.horizon_ms, 60000);
    conf_free(c);

    c = load_ok(MINIMAL "shared: { redis: redis.internal:6379 }\n");
    assert_string_equal(c->shared.host, "redis.internal");
    conf_free(c);

    /* One budget across upstreams, its rate written in another unit; a budget next to a
     * local limit; a budget named like a number. */
    c = load_ok(LISTEN "upstreams:\n"                                               /* 3 */
                       "  api:\n"                                                   /* 4 */
                       "    url: http://127.0.0.1:18080\n"                          /* 5 */
                       "    limits:\n"                                              /* 6 */
                       "      - rate: 30/s\n"                                       /* 7 */
                       "        burst: 2\n"                                         /* 8 */
                       "        shared: api-budget\n"                               /* 9 */
                       "      - rate: 5000/h\n"                                     /* 10 */
                       "      - { rate: 1/s, shared: '42' }\n"                      /* 11 */
                       "  api2:\n"                                                  /* 12 */
                       "    url: http://127.0.0.1:18081\n"                          /* 13 */
                       "    limits:\n"                                              /* 14 */
                       "      - { rate: 1800/m, burst: 2.0, shared: api-budget }\n" /* 15 */
                       "    fairness: { key_limits: [{ rate: 1/s }] }\n"            /* 16 */
                ROUTES SHARED);
    const struct conf_upstream *u = conf_find_upstream(c, "api");
    assert_string_equal(u->limits[0].shared, "api-budget");
    assert_int_equal(u->limits[0].shared_mark.line, 9);
    assert_int_equal(u->limits[0].shared_mark.col, 17);
    assert_null(u->limits[1].shared);
    assert_string_equal(u->limits[2].shared, "42");
    u = conf_find_upstream(c, "api2");
    assert_string_equal(u->limits[0].shared, "api-budget");
    assert_int_equal(u->limits[0].shared_mark.line, 15);
    assert_null(u->fairness.key_limits[0].shared);
    conf_free(c);
}

/* password_file: read at load (one line, its newline dropped), each way it can be wrong,
 * and never a byte of it in a message. */
static void test_shared_password_file(void **state)
{
    static const struct {
        const char *content, *password, *problem;
    } cases[] = {
        {"s3cret\n", "s3cret", NULL},
        {"s3cret", "s3cret", NULL},
        {"s3cret\r\n", "s3cret", NULL},
        {" with spaces\t \n", " with spaces\t ", NULL},
        {"", NULL, "is empty"},
        {"\n", NULL, "is empty"},
        {"s3cret\nsecond\n", NULL, "has more than one line"},
        {"s3cret\n\n", NULL, "has more than one line"},
        {"s3c\rret\n", NULL, "has more than one line"},
    };
    char yaml[512], err[512], expect[700];

    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char *path = write_temp(cases[i].content);
        snprintf(yaml, sizeof yaml, MINIMAL "shared:\n  redis: h:1\n  password_file: %s\n", path);
        struct conf *c = conf_load_string("t.yaml", yaml, err, sizeof err);
        if (cases[i].problem == NULL) {
            if (c == NULL)
                fail_msg("case %zu: %s", i, err);
            assert_string_equal(c->shared.password, cases[i].password);
            conf_free(c);
        } else {
            assert_null(c);
            snprintf(expect, sizeof expect,
                     "t.yaml:13:18: shared.password_file: '%s' %s (expected the Redis password "
                     "on one line)",
                     path, cases[i].problem);
            assert_string_equal(err, expect);
        }
        unlink(path);
        free(path);
    }

    /* 4096 bytes is the most; the newline counts. */
    char big[4098];
    memset(big, 'p', sizeof big);
    big[4096] = '\0';
    char *path = write_temp(big);
    snprintf(yaml, sizeof yaml, MINIMAL "shared:\n  redis: h:1\n  password_file: %s\n", path);
    struct conf *c = load_ok(yaml);
    assert_int_equal(strlen(c->shared.password), 4096);
    conf_free(c);
    unlink(path);
    free(path);

    big[4095] = '\n';
    big[4096] = 'p';
    big[4097] = '\0';
    path = write_temp(big);
    snprintf(yaml, sizeof yaml, MINIMAL "shared:\n  redis: h:1\n  password_file: %s\n", path);
    assert_null(conf_load_string("t.yaml", yaml, err, sizeof err));
    snprintf(expect, sizeof expect,
             "t.yaml:13:18: shared.password_file: '%s' is larger than 4096 bytes (expected the "
             "Redis password on one line)",
             path);
    assert_string_equal(err, expect);
    assert_null(strstr(err, "pppp"));
    unlink(path);
    free(path);

    /* A path through a file: open() fails for every user, root included (a chmod 0 file
     * would not, and the test must run the same everywhere). */
    path = write_temp("s3cret\n");
    snprintf(yaml, sizeof yaml, MINIMAL "shared:\n  redis: h:1\n  password_file: %s/x\n", path);
    assert_null(conf_load_string("t.yaml", yaml, err, sizeof err));
    snprintf(expect, sizeof expect,
             "t.yaml:13:18: shared.password_file: cannot read '%s/x': Not a directory", path);
    assert_string_equal(err, expect);
    unlink(path);
    free(path);

    /* A later error still frees (and wipes) the password read before it. */
    path = write_temp("s3cret\n");
    snprintf(yaml, sizeof yaml, MINIMAL "shared:\n  redis: h:1\n  password_file: %s\n  db: 10001\n",
             path);
    assert_null(conf_load_string("t.yaml", yaml, err, sizeof err));
    assert_string_equal(err, "t.yaml:14:7: shared.db: must be between 0 and 10000, got '10001'");
    unlink(path);
    free(path);
}

/* ------------------------------------------------------------------- bad configs */

struct bad {
    const char *yaml;
    const char *expect; /* after "t.yaml:": "LINE:COL: ..." or " message" */
};

static const struct bad bad_cases[] = {
    /* YAML syntax, as libyaml says it, at its problem mark */
    {"listen: [a, b\n",
     "2:1: did not find expected ',' or ']' (while parsing a flow sequence at 1:9)"},
    {"listen:\n\t- address: 127.0.0.1:8080\n",
     "2:1: found character that cannot start any token (tabs are not allowed in indentation; "
     "use spaces) (while scanning for the next token at 2:1)"},
    {"drain_timeout: \"30s\n",
     "2:1: found unexpected end of stream (while scanning a quoted scalar at 1:16)"},
    {"a: b: c\n", "1:5: mapping values are not allowed in this context"},
    {"listen:\n  - address: 127.0.0.1:8080\n\t\n",
     "3:1: found a tab character that violates indentation (while scanning a plain scalar at "
     "2:14)"},

    /* what YAML allows and sluice does not */
    {"drain_timeout: &d 30s\n" MINIMAL, "1:16: anchors (&d) are not allowed"},
    {"drain_timeout: *d\n" MINIMAL, "1:16: aliases (*d) are not allowed; write the value out"},
    {MINIMAL "---\n" MINIMAL, "11:1: only one YAML document is allowed, found a second one"},
    {"drain_timeout: !!str 30s\n" MINIMAL, "1:16: tags (tag:yaml.org,2002:str) are not allowed"},
    {"? [a]\n: 1\n", "1:3: mapping keys must be strings, not lists or mappings"},
    {"drain_timeout: \"3\\00s\"\n", "1:16: NUL characters are not allowed"},

    /* empty, or not a mapping */
    {"", " empty file (expected listen, upstreams and routes)"},
    {"# nothing but a comment\n", " empty file (expected listen, upstreams and routes)"},
    {"- listen\n", "1:1: expected a mapping, got a list"},

    /* unknown and duplicate keys, at every depth */
    {MINIMAL "bogus: 1\n",
     "11:1: bogus: unknown key (expected one of: listen, drain_timeout, log_level, client, "
     "admin, access_log, shared, upstreams, routes)"},
    {UPSTREAMS_WITH("    queue:\n      sise: 10\n") LISTEN ROUTES,
     "7:7: upstreams.api.queue.sise: unknown key (expected one of: size, max_wait)"},
    {LISTEN "upstreams:\n  api:\n    url: http://127.0.0.1:18080\n    limits:\n"
            "      - rate: 10/s\n        brust: 2\n" ROUTES,
     "8:9: upstreams.api.limits[0].brust: unknown key (expected one of: rate, burst, shared)"},
    {"listen:\n  - address: 127.0.0.1:8443\n    tls: { cert:/dev/null, key: /dev/null }\n" UPSTREAMS
         ROUTES,
     "3:12: listen[0].tls.cert:/dev/null: unknown key (expected one of: cert, key); is a space "
     "missing after ':'?"},
    {MINIMAL "\"a\\nb\": 1\n",
     "11:1: a?b: unknown key (expected one of: listen, drain_timeout, log_level, client, "
     "admin, access_log, shared, upstreams, routes)"},
    {MINIMAL "drain_timeout: 1s\ndrain_timeout: 2s\n",
     "12:1: drain_timeout: duplicate key, first at 11:1"},
    {UPSTREAMS_WITH("    url: http://127.0.0.1:1\n") LISTEN ROUTES,
     "6:5: upstreams.api.url: duplicate key, first at 3:5"},
    {UPSTREAMS "  api:\n    url: http://127.0.0.1:1\n    limits: [{rate: 1/s}]\n" LISTEN ROUTES,
     "6:3: upstreams.api: duplicate key, first at 2:3"},

    /* wrong types */
    {"listen: { address: 127.0.0.1:8080 }\n" UPSTREAMS ROUTES,
     "1:9: listen: expected a list, got a mapping"},
    {"listen:\n" UPSTREAMS ROUTES, "1:8: listen: expected a list, got an empty value"},
    {MINIMAL "client: 5\n", "11:9: client: expected a mapping, got '5'"},
    {MINIMAL "drain_timeout: { s: 30 }\n",
     "11:16: drain_timeout: expected a duration like 30s, got a mapping"},
    {MINIMAL "log_level: [info]\n",
     "11:12: log_level: expected one of error, warn, info, debug, got a list"},
    {"listen:\n  - 127.0.0.1:8080\n" UPSTREAMS ROUTES,
     "2:5: listen[0]: expected a mapping, got '127.0.0.1:8080'"},
    {LISTEN UPSTREAMS "routes:\n  - path_prefix: /\n    upstream:\n",
     "10:14: routes[0].upstream: expected a string, got an empty value"},
    {LISTEN UPSTREAMS "routes:\n  - path_prefix: /\n    upstream: ''\n",
     "10:15: routes[0].upstream: must not be empty"},

    /* bad values and ranges */
    {MINIMAL "drain_timeout: 30\n", "11:16: drain_timeout: missing unit (ms, s, m or h), got '30'"},
    {MINIMAL "drain_timeout: 2h\n", "11:16: drain_timeout: must be between 0s and 1h, got '2h'"},
    {MINIMAL "drain_timeout: -1s\n", "11:16: drain_timeout: must not be negative, got '-1s'"},
    {LISTEN "upstreams:\n  api:\n    url: http://127.0.0.1:18080\n    limits:\n"
            "      - rate: 10 per second\n" ROUTES,
     "7:15: upstreams.api.limits[0].rate: expected N/s, N/m or N/h, got '10 per second'"},
    {LISTEN "upstreams:\n  api:\n    url: http://127.0.0.1:18080\n    limits:\n"
            "      - rate: 0/s\n" ROUTES,
     "7:15: upstreams.api.limits[0].rate: must be positive, got '0/s'"},
    {LISTEN "upstreams:\n  api:\n    url: http://127.0.0.1:18080\n    limits:\n"
            "      - rate: 0.5/h\n" ROUTES,
     "7:15: upstreams.api.limits[0].rate: must be between 1/h and 1000000000/s, got '0.5/h'"},
    {UPSTREAMS_WITH("    limits: [ { rate: 1/s, burst: 0.5 } ]\n") LISTEN ROUTES,
     "6:5: upstreams.api.limits: duplicate key, first at 4:5"},
    {LISTEN "upstreams:\n  api:\n    url: http://127.0.0.1:18080\n"
            "    limits: [ { rate: 1/s, burst: 0.5 } ]\n" ROUTES,
     "6:35: upstreams.api.limits[0].burst: must be between 1 and 1000000, got '0.5'"},
    {MINIMAL "client:\n  max_header_size: 8x\n",
     "12:20: client.max_header_size: expected a size like 512, 64k, 1m or 1g, got '8x'"},
    {MINIMAL "client:\n  max_header_size: 512\n",
     "12:20: client.max_header_size: must be between 1k and 1m, got '512'"},
    {MINIMAL "client:\n  max_connections: 0\n",
     "12:20: client.max_connections: must be between 1 and 1000000, got '0'"},
    {MINIMAL "client:\n  max_connections: 99999999999999999999999\n",
     "12:20: client.max_connections: too large, got '99999999999999999999999'"},
    {UPSTREAMS_WITH("    max_in_flight: 1.5\n") LISTEN ROUTES,
     "6:20: upstreams.api.max_in_flight: expected a whole number, got '1.5'"},
    {UPSTREAMS_WITH("    queue: { max_wait: 0ms }\n") LISTEN ROUTES,
     "6:24: upstreams.api.queue.max_wait: must be between 1ms and 24h, got '0ms'"},
    {UPSTREAMS_WITH("    timeouts: { connect: 11m }\n") LISTEN ROUTES,
     "6:26: upstreams.api.timeouts.connect: must be between 1ms and 10m, got '11m'"},
    {UPSTREAMS_WITH("    preserve_host: yes\n") LISTEN ROUTES,
     "6:20: upstreams.api.preserve_host: expected true or false, got 'yes'"},
    {UPSTREAMS_WITH("    preserve_host: \"true\"\n") LISTEN ROUTES,
     "6:20: upstreams.api.preserve_host: expected true or false (without quotes), got 'true'"},
    {MINIMAL "log_level: verbose\n",
     "11:12: log_level: expected one of error, warn, info, debug, got 'verbose'"},
    {MINIMAL "access_log: { format: xml }\n",
     "11:23: access_log.format: expected one of text, json, got 'xml'"},
    {LISTEN "upstreams:\n  api:\n    url: https://example.com\n    limits: [{rate: 1/s}]\n"
            "    tls: { min_version: 1.1 }\n" ROUTES,
     "7:25: upstreams.api.tls.min_version: expected one of 1.2, 1.3, got '1.1'"},

    /* addresses */
    {"listen:\n  - address: 8080\n" UPSTREAMS ROUTES,
     "2:14: listen[0].address: expected HOST:PORT, got '8080'"},
    {"listen:\n  - address: example.com:80\n" UPSTREAMS ROUTES,
     "2:14: listen[0].address: host must be an IP address or localhost, got 'example.com:80'"},
    {"listen:\n  - address: 127.0.0.1:0\n" UPSTREAMS ROUTES,
     "2:14: listen[0].address: port must be a number from 1 to 65535, got '127.0.0.1:0'"},
    {"listen:\n  - address: 127.0.0.1:65536\n" UPSTREAMS ROUTES,
     "2:14: listen[0].address: port must be a number from 1 to 65535, got '127.0.0.1:65536'"},
    {"listen:\n  - address: ::1:8080\n" UPSTREAMS ROUTES,
     "2:14: listen[0].address: IPv6 addresses need brackets, as in [::1]:8080, got '::1:8080'"},
    {"listen:\n  - address: '[::g]:8080'\n" UPSTREAMS ROUTES,
     "2:14: listen[0].address: host must be an IP address or localhost, got '[::g]:8080'"},
    {"listen:\n  - address: :8080\n" UPSTREAMS ROUTES,
     "2:14: listen[0].address: missing host (0.0.0.0 listens on every address), got ':8080'"},
    {"listen: []\n" UPSTREAMS ROUTES, "1:9: listen: must not be empty"},

    /* overlapping listeners, at the second one */
    {"listen:\n  - address: 127.0.0.1:8080\n  - address: 127.0.0.1:8080\n" UPSTREAMS ROUTES,
     "3:14: listen[1].address: overlaps listen[0] (127.0.0.1:8080 at 2:5)"},
    {"listen:\n  - address: 127.0.0.1:8080\n  - address: 0.0.0.0:8080\n" UPSTREAMS ROUTES,
     "3:14: listen[1].address: overlaps listen[0] (127.0.0.1:8080 at 2:5)"},
    {"listen:\n  - address: '[::]:8080'\n  - address: 10.0.0.1:8080\n" UPSTREAMS ROUTES,
     "3:14: listen[1].address: overlaps listen[0] ([::]:8080 at 2:5)"},
    {"listen:\n  - address: '[::1]:8080'\n  - address: '[0:0::1]:8080'\n" UPSTREAMS ROUTES,
     "3:14: listen[1].address: overlaps listen[0] ([::1]:8080 at 2:5)"},
    {"listen:\n  - address: 127.0.0.1:8080\n  - address: localhost:8080\n" UPSTREAMS ROUTES,
     "3:14: listen[1].address: overlaps listen[0] (127.0.0.1:8080 at 2:5)"},
    {MINIMAL "admin:\n  address: 0.0.0.0:8080\n",
     "12:12: admin.address: overlaps listen[0] (127.0.0.1:8080 at 2:5)"},
    {MINIMAL "admin: {}\n", "11:8: admin: missing required key 'address'"},

    /* required keys */
    {UPSTREAMS ROUTES, "1:1: missing required key 'listen'"},
    {LISTEN ROUTES, "1:1: missing required key 'upstreams'"},
    {LISTEN UPSTREAMS, "1:1: missing required key 'routes'"},
    {LISTEN "upstreams:\n  api:\n    limits: [{rate: 1/s}]\n" ROUTES,
     "5:5: upstreams.api: missing required key 'url'"},
    {LISTEN "upstreams:\n  api:\n    url: http://127.0.0.1:1\n" ROUTES,
     "5:5: upstreams.api: missing required key 'limits'"},
    {LISTEN "upstreams:\n  api:\n    url: http://127.0.0.1:1\n    limits: []\n" ROUTES,
     "6:13: upstreams.api.limits: must not be empty"},
    {LISTEN "upstreams:\n  api:\n    url: http://127.0.0.1:1\n    limits: [{burst: 2}]\n" ROUTES,
     "6:14: upstreams.api.limits[0]: missing required key 'rate'"},
    {LISTEN "upstreams:\n  api:\n    url: http://127.0.0.1:1\n"
            "    limits: [{rate: 1/s}, {rate: 1/s}, {rate: 1/s}, {rate: 1/s}, {rate: 1/s},\n"
            "             {rate: 1/s}, {rate: 1/s}, {rate: 1/s}, {rate: 1/s}]\n" ROUTES,
     "6:13: upstreams.api.limits: expected 1 to 8 entries, got 9"},
    {LISTEN "upstreams: {}\n" ROUTES, "3:12: upstreams: must not be empty"},
    {LISTEN UPSTREAMS "routes: []\n", "8:9: routes: must not be empty"},
    {LISTEN UPSTREAMS "routes:\n  - upstream: api\n",
     "9:5: routes[0]: missing required key 'path_prefix'"},

    /* upstream urls and names */
    {LISTEN "upstreams:\n  api:\n    url: ftp://127.0.0.1\n    limits: [{rate: 1/s}]\n" ROUTES,
     "5:10: upstreams.api.url: expected an http:// or https:// URL, got 'ftp://127.0.0.1'"},
    {LISTEN "upstreams:\n  api:\n    url: http://h/p?q=1\n    limits: [{rate: 1/s}]\n" ROUTES,
     "5:10: upstreams.api.url: a query (?) or fragment (#) is not allowed, got 'http://h/p?q=1'"},
    {LISTEN "upstreams:\n  api:\n    url: http://u:p@h/\n    limits: [{rate: 1/s}]\n" ROUTES,
     "5:10: upstreams.api.url: user information (user@host) is not allowed, got "
     "'http://u:p@h/'"},
    {LISTEN "upstreams:\n  api:\n    url: http://h:0/\n    limits: [{rate: 1/s}]\n" ROUTES,
     "5:10: upstreams.api.url: port must be a number from 1 to 65535, got 'http://h:0/'"},
    {LISTEN
     "upstreams:\n  api:\n    url: http://bad_host-.com/\n    limits: [{rate: 1/s}]\n" ROUTES,
     "5:10: upstreams.api.url: invalid host 'bad_host-.com'"},
    {LISTEN "upstreams:\n  api:\n    url: http:///x\n    limits: [{rate: 1/s}]\n" ROUTES,
     "5:10: upstreams.api.url: missing or invalid host in 'http:///x'"},
    {LISTEN "upstreams:\n  api:\n    url: http://300.1.1.1/\n    limits: [{rate: 1/s}]\n" ROUTES,
     "5:10: upstreams.api.url: invalid host '300.1.1.1'"},
    {LISTEN "upstreams:\n  api v2:\n    url: http://h\n    limits: [{rate: 1/s}]\n" ROUTES,
     "4:3: upstreams: invalid name 'api v2': use letters, digits, '_', '.' and '-'"},

    /* TLS */
    {UPSTREAMS_WITH("    tls: { verify: false }\n") LISTEN ROUTES,
     "6:10: upstreams.api.tls: only allowed with an https:// url"},
    {LISTEN "upstreams:\n  api:\n    url: https://h\n    limits: [{rate: 1/s}]\n"
            "    tls:\n      ca_file: /nonexistent/ca.pem\n" ROUTES,
     "8:16: upstreams.api.tls.ca_file: cannot read '/nonexistent/ca.pem': No such file or "
     "directory"},
    {LISTEN "upstreams:\n  api:\n    url: https://h\n    limits: [{rate: 1/s}]\n"
            "    tls: { ca_file: / }\n" ROUTES,
     "7:21: upstreams.api.tls.ca_file: cannot read '/': Is a directory"},
    {LISTEN "upstreams:\n  api:\n    url: https://h\n    limits: [{rate: 1/s}]\n"
            "    tls:\n      cert: /dev/null\n" ROUTES,
     "8:13: upstreams.api.tls: cert given without key (a client certificate needs both)"},
    {LISTEN "upstreams:\n  api:\n    url: https://h\n    limits: [{rate: 1/s}]\n"
            "    tls:\n      verify: true\n      key: /dev/null\n" ROUTES,
     "9:12: upstreams.api.tls: key given without cert (a client certificate needs both)"},
    {LISTEN "upstreams:\n  api:\n    url: https://h\n    limits: [{rate: 1/s}]\n"
            "    tls: { server_name: 'a b' }\n" ROUTES,
     "7:25: upstreams.api.tls.server_name: expected a host name (no port), got 'a b'"},
    {"listen:\n  - address: 127.0.0.1:8443\n    tls: { cert: /dev/null }\n" UPSTREAMS ROUTES,
     "3:10: listen[0].tls: missing required key 'key'"},
    {"listen:\n  - address: 127.0.0.1:8443\n    tls:\n      cert: /nonexistent.crt\n"
     "      key: /dev/null\n" UPSTREAMS ROUTES,
     "4:13: listen[0].tls.cert: cannot read '/nonexistent.crt': No such file or directory"},

    /* routes */
    {LISTEN UPSTREAMS "routes:\n  - path_prefix: /\n    upstream: apx\n",
     "10:15: routes[0].upstream: no upstream named 'apx' (defined: api)"},
    {LISTEN "routes:\n  - path_prefix: /\n    upstream: nope\n" UPSTREAMS,
     "5:15: routes[0].upstream: no upstream named 'nope' (defined: api)"},
    {LISTEN UPSTREAMS "routes:\n  - path_prefix: api/\n    upstream: api\n",
     "9:18: routes[0].path_prefix: must start with '/', got 'api/'"},
    {LISTEN UPSTREAMS "routes:\n  - { path_prefix: /a, upstream: api }\n"
                      "  - { path_prefix: /a, upstream: api }\n",
     "10:20: routes[1].path_prefix: same path_prefix and host as routes[0] at 9:5, which would "
     "always win"},
    {LISTEN UPSTREAMS "routes:\n  - { path_prefix: /a, host: A.example, upstream: api }\n"
                      "  - { path_prefix: /a, host: a.EXAMPLE, upstream: api }\n",
     "10:20: routes[1].path_prefix: same path_prefix and host as routes[0] at 9:5, which would "
     "always win"},
    {LISTEN UPSTREAMS "routes:\n  - { path_prefix: /a, host: 'a.example:8080', upstream: api }\n",
     "9:30: routes[0].host: expected a host name (no port), got 'a.example:8080'"},

    /* client.header_timeout, client.on_max_connections */
    {MINIMAL "client:\n  header_timeout: 99ms\n",
     "12:19: client.header_timeout: must be between 100ms and 1h, got '99ms'"},
    {MINIMAL "client:\n  header_timeout: 61m\n",
     "12:19: client.header_timeout: must be between 100ms and 1h, got '61m'"},
    {MINIMAL "client:\n  header_timeout: 10\n",
     "12:19: client.header_timeout: missing unit (ms, s, m or h), got '10'"},
    {MINIMAL "client:\n  on_max_connections: drop\n",
     "12:23: client.on_max_connections: expected one of reject, pause, got 'drop'"},
    {MINIMAL "client: { on_max_connections: [pause] }\n",
     "11:31: client.on_max_connections: expected one of reject, pause, got a list"},

    /* feedback: true | false | { enabled, scope, max_pause } */
    {UPSTREAMS_WITH("    feedback: yes\n") LISTEN ROUTES,
     "6:15: upstreams.api.feedback: expected true, false or a mapping, got 'yes'"},
    {UPSTREAMS_WITH("    feedback: \"true\"\n") LISTEN ROUTES,
     "6:15: upstreams.api.feedback: expected true or false without quotes, or a mapping, got "
     "'true'"},
    {UPSTREAMS_WITH("    feedback:\n") LISTEN ROUTES,
     "6:14: upstreams.api.feedback: expected true, false or a mapping, got an empty value"},
    {UPSTREAMS_WITH("    feedback: [true]\n") LISTEN ROUTES,
     "6:15: upstreams.api.feedback: expected true, false or a mapping, got a list"},
    {UPSTREAMS_WITH("    feedback: true\n    feedback: false\n") LISTEN ROUTES,
     "7:5: upstreams.api.feedback: duplicate key, first at 6:5"},
    {UPSTREAMS_WITH("    feedback: { scope: user }\n") LISTEN ROUTES,
     "6:24: upstreams.api.feedback.scope: expected one of upstream, key, got 'user'"},
    {UPSTREAMS_WITH("    feedback:\n      enabled: yes\n") LISTEN ROUTES,
     "7:16: upstreams.api.feedback.enabled: expected true or false, got 'yes'"},
    {UPSTREAMS_WITH("    feedback: { max_pause: 999ms }\n") LISTEN ROUTES,
     "6:28: upstreams.api.feedback.max_pause: must be between 1s and 24h, got '999ms'"},
    {UPSTREAMS_WITH("    feedback: { max_pause: 25h }\n") LISTEN ROUTES,
     "6:28: upstreams.api.feedback.max_pause: must be between 1s and 24h, got '25h'"},
    {UPSTREAMS_WITH("    feedback: { retry: 3 }\n") LISTEN ROUTES,
     "6:17: upstreams.api.feedback.retry: unknown key (expected one of: enabled, scope, "
     "max_pause)"},

    /* keepalive (default max_in_flight) keeps its bounds */
    {UPSTREAMS_WITH("    keepalive: 100001\n") LISTEN ROUTES,
     "6:16: upstreams.api.keepalive: must be between 0 and 100000, got '100001'"},
    {UPSTREAMS_WITH("    keepalive: -1\n") LISTEN ROUTES,
     "6:16: upstreams.api.keepalive: must not be negative, got '-1'"},

    /* shared: the section (at the end, line 11 on) */
    {MINIMAL "shared: {}\n", "11:9: shared: missing required key 'redis'"},
    {MINIMAL "shared:\n", "11:8: shared: expected a mapping, got an empty value"},
    {MINIMAL "shared: 127.0.0.1:6379\n", "11:9: shared: expected a mapping, got '127.0.0.1:6379'"},
    {MINIMAL "shared: { redis: h:1, passwd: x }\n",
     "11:23: shared.passwd: unknown key (expected one of: redis, password_file, db, timeout, "
     "horizon, instance)"},
    {MINIMAL "shared:\n  redis: h:1\n  redis: h:2\n",
     "13:3: shared.redis: duplicate key, first at 12:3"},
    {MINIMAL "shared:\n  redis: localhost\n",
     "12:10: shared.redis: expected HOST:PORT or unix:/path/to/socket, got 'localhost'"},
    {MINIMAL "shared:\n  redis: redis://127.0.0.1:6379\n",
     "12:10: shared.redis: expected HOST:PORT or unix:/path/to/socket, got "
     "'redis://127.0.0.1:6379'"},
    {MINIMAL "shared:\n  redis: 'h :6379'\n",
     "12:10: shared.redis: expected HOST:PORT or unix:/path/to/socket, got 'h :6379'"},
    {MINIMAL "shared:\n  redis: ::1:6379\n",
     "12:10: shared.redis: IPv6 addresses need brackets, as in [::1]:6379, got '::1:6379'"},
    {MINIMAL "shared:\n  redis: '[::1]6379'\n",
     "12:10: shared.redis: expected [IPV6]:PORT, got '[::1]6379'"},
    {MINIMAL "shared:\n  redis: '[::g]:6379'\n",
     "12:10: shared.redis: host must be an IP address or a DNS name, got '[::g]:6379'"},
    {MINIMAL "shared:\n  redis: :6379\n",
     "12:10: shared.redis: host must be an IP address or a DNS name, got ':6379'"},
    {MINIMAL "shared:\n  redis: redis-.internal:6379\n",
     "12:10: shared.redis: host must be an IP address or a DNS name, got "
     "'redis-.internal:6379'"},
    {MINIMAL "shared:\n  redis: 300.1.1.1:6379\n",
     "12:10: shared.redis: host must be an IP address or a DNS name, got '300.1.1.1:6379'"},
    {MINIMAL "shared:\n  redis: h:0\n",
     "12:10: shared.redis: port must be a number from 1 to 65535, got 'h:0'"},
    {MINIMAL "shared:\n  redis: h:65536\n",
     "12:10: shared.redis: port must be a number from 1 to 65535, got 'h:65536'"},
    {MINIMAL "shared:\n  redis: 'h:'\n",
     "12:10: shared.redis: port must be a number from 1 to 65535, got 'h:'"},
    {MINIMAL "shared:\n  redis: unix:run/redis.sock\n",
     "12:10: shared.redis: expected unix:/absolute/path/to/socket, got 'unix:run/redis.sock'"},
    {MINIMAL "shared:\n  redis: 'unix:'\n",
     "12:10: shared.redis: expected unix:/absolute/path/to/socket, got 'unix:'"},
    {MINIMAL "shared:\n  redis: unix:/x123456789x123456789x123456789x123456789x123456789"
             "x123456789x123456789x123456789x123456789x123456789x12345678\n",
     "12:10: shared.redis: a socket path has at most 107 bytes, got "
     "'unix:/x123456789x123456789x123456789x123456789x1...'"},
    {MINIMAL "shared:\n  redis: [h:1]\n",
     "12:10: shared.redis: expected HOST:PORT or unix:/path/to/socket, got a list"},
    {MINIMAL "shared:\n  redis: h:1\n  password_file: /nonexistent/redis.pass\n",
     "13:18: shared.password_file: cannot read '/nonexistent/redis.pass': No such file or "
     "directory"},
    {MINIMAL "shared:\n  redis: h:1\n  password_file: /\n",
     "13:18: shared.password_file: cannot read '/': Is a directory"},
    {MINIMAL "shared:\n  redis: h:1\n  password_file: /dev/null\n",
     "13:18: shared.password_file: cannot read '/dev/null': not a regular file"},
    {MINIMAL "shared:\n  redis: h:1\n  password_file: ''\n",
     "13:18: shared.password_file: must not be empty"},
    {MINIMAL "shared:\n  redis: h:1\n  db: 10001\n",
     "13:7: shared.db: must be between 0 and 10000, got '10001'"},
    {MINIMAL "shared:\n  redis: h:1\n  db: -1\n",
     "13:7: shared.db: must not be negative, got '-1'"},
    {MINIMAL "shared:\n  redis: h:1\n  timeout: 0ms\n",
     "13:12: shared.timeout: must be between 1ms and 10s, got '0ms'"},
    {MINIMAL "shared:\n  redis: h:1\n  timeout: 11s\n",
     "13:12: shared.timeout: must be between 1ms and 10s, got '11s'"},
    {MINIMAL "shared:\n  redis: h:1\n  timeout: 50\n",
     "13:12: shared.timeout: missing unit (ms, s, m or h), got '50'"},
    {MINIMAL "shared:\n  redis: h:1\n  horizon: 9ms\n",
     "13:12: shared.horizon: must be between 10ms and 60s, got '9ms'"},
    {MINIMAL "shared:\n  redis: h:1\n  horizon: 61s\n",
     "13:12: shared.horizon: must be between 10ms and 60s, got '61s'"},
    {MINIMAL "shared:\n  redis: h:1\n  instance: 'web 1'\n",
     "13:13: shared.instance: expected 1 to 64 letters, digits, '_', '.', ':' or '-', got "
     "'web 1'"},
    {MINIMAL "shared:\n  redis: h:1\n  instance: ''\n",
     "13:13: shared.instance: expected 1 to 64 letters, digits, '_', '.', ':' or '-', got ''"},
    {MINIMAL "shared:\n  redis: h:1\n  instance: "
             "x123456789x123456789x123456789x123456789x123456789x123456789x1234\n",
     "13:13: shared.instance: expected 1 to 64 letters, digits, '_', '.', ':' or '-', got "
     "'x123456789x123456789x123456789x123456789x1234567...'"},
    {MINIMAL "shared:\n  redis: h:1\n  instance:\n",
     "13:12: shared.instance: expected a name, got an empty value"},

    /* shared: on a limit (extra lines from 6 continue limits[0]) */
    {UPSTREAMS_WITH("        shared: api-budget\n") LISTEN ROUTES,
     "6:17: upstreams.api.limits[0].shared: a shared limit needs the top-level shared: section "
     "(the Redis every instance uses)"},
    {UPSTREAMS_WITH("        shared: true\n") LISTEN ROUTES SHARED,
     "6:17: upstreams.api.limits[0].shared: expected the name of a budget (as in shared: "
     "api-budget), got 'true'"},
    {UPSTREAMS_WITH("        shared: 'a b'\n") LISTEN ROUTES SHARED,
     "6:17: upstreams.api.limits[0].shared: expected 1 to 64 letters, digits, '_', '.' or '-', "
     "got 'a b'"},
    {UPSTREAMS_WITH("        shared: a:b\n") LISTEN ROUTES SHARED,
     "6:17: upstreams.api.limits[0].shared: expected 1 to 64 letters, digits, '_', '.' or '-', "
     "got 'a:b'"},
    {UPSTREAMS_WITH("        shared: "
                    "x123456789x123456789x123456789x123456789x123456789x123456789x1234\n")
         LISTEN ROUTES SHARED,
     "6:17: upstreams.api.limits[0].shared: expected 1 to 64 letters, digits, '_', '.' or '-', "
     "got 'x123456789x123456789x123456789x123456789x1234567...'"},
    {UPSTREAMS_WITH("        shared:\n") LISTEN ROUTES SHARED,
     "6:16: upstreams.api.limits[0].shared: expected a budget name, got an empty value"},
    {UPSTREAMS_WITH("        shared: b\n      - rate: 1/h\n        shared: b\n")
         LISTEN ROUTES SHARED,
     "8:17: upstreams.api.limits[1].shared: budget 'b' is already taken by limits[0] at 6:17 "
     "(one upstream names a budget once)"},
    {UPSTREAMS_WITH("        shared: b\n"
                    "  gh:\n"
                    "    url: http://h\n"
                    "    limits:\n"
                    "      - rate: 20/s\n"
                    "        shared: b\n") LISTEN ROUTES SHARED,
     "11:17: upstreams.gh.limits[0].shared: budget 'b' has another rate at 6:17 "
     "(upstreams.api.limits[0]): every limit naming a budget needs the same rate and burst"},
    {UPSTREAMS_WITH("        shared: b\n"
                    "  gh:\n"
                    "    url: http://h\n"
                    "    limits:\n"
                    "      - { rate: 1/h }\n"
                    "      - { rate: 600/m, burst: 2, shared: b }\n") LISTEN ROUTES SHARED,
     "11:42: upstreams.gh.limits[1].shared: budget 'b' has another burst at 6:17 "
     "(upstreams.api.limits[0]): every limit naming a budget needs the same rate and burst"},
    {UPSTREAMS_WITH("        shared: b\n"
                    "  gh: { url: http://h, limits: [{ rate: 1/s, burst: 2, shared: b }] }\n")
         LISTEN ROUTES SHARED,
     "7:64: upstreams.gh.limits[0].shared: budget 'b' has another rate and burst at 6:17 "
     "(upstreams.api.limits[0]): every limit naming a budget needs the same rate and burst"},
    {UPSTREAMS_WITH("    fairness:\n      key_limits:\n        - rate: 1/s\n"
                    "          shared: b\n") LISTEN ROUTES SHARED,
     "9:19: upstreams.api.fairness.key_limits[0].shared: not allowed in key_limits: per-key "
     "limits stay local to each instance (a shared budget goes in the upstream's limits)"},
    /* aggregate routes (AGG: lines 8-9 open the route, its keys from line 10) */
    {AGG "    upstream: api\n    aggregate: { parts: { a: { upstream: api, path: / } } }\n",
     "11:16: routes[0].aggregate: not allowed with upstream: (at 10:15): a route has either "
     "upstream: or aggregate:"},
    {AGG "    aggregate: { parts: { a: { upstream: api, path: / } } }\n    upstream: api\n",
     "10:16: routes[0].aggregate: not allowed with upstream: (at 11:15): a route has either "
     "upstream: or aggregate:"},
    {LISTEN UPSTREAMS "routes:\n  - path_prefix: /\n    cost: 2\n",
     "9:5: routes[0]: missing required key 'upstream'"},
    {AGG "    strip_prefix: false\n" AGG_PART,
     "10:19: routes[0].strip_prefix: not allowed on an aggregate route (each part has its "
     "own path)"},
    {LISTEN UPSTREAMS "routes:\n  - path_prefix: /\n    upstream: api\n    methods: [GET]\n",
     "11:14: routes[0].methods: only allowed on an aggregate route (a route with upstream: "
     "forwards every method sluice accepts)"},
    {AGG "    methods: [get]\n" AGG_PART,
     "10:15: routes[0].methods: expected one of GET, HEAD, POST, PUT, DELETE, OPTIONS, "
     "PATCH, got 'get'"},
    {AGG "    methods: [GET, CONNECT]\n" AGG_PART,
     "10:20: routes[0].methods: expected one of GET, HEAD, POST, PUT, DELETE, OPTIONS, "
     "PATCH, got 'CONNECT'"},
    {AGG "    methods: [GET, HEAD, GET]\n" AGG_PART,
     "10:26: routes[0].methods: duplicate method 'GET', first at 10:15"},
    {AGG "    methods: []\n" AGG_PART,
     "10:14: routes[0].methods: expected a non-empty list of methods, like [GET, HEAD]"},
    {AGG "    methods: POST\n" AGG_PART,
     "10:14: routes[0].methods: expected a non-empty list of methods, like [GET, HEAD]"},
    {AGG "    methods: [[GET]]\n" AGG_PART,
     "10:15: routes[0].methods: expected one of GET, HEAD, POST, PUT, DELETE, OPTIONS, "
     "PATCH, got a list"},
    {AGG "    aggregate: []\n", "10:16: routes[0].aggregate: expected a mapping, got a list"},
    {AGG "    aggregate:\n", "10:15: routes[0].aggregate: expected a mapping, got an empty value"},
    {AGG "    aggregate: { timeout: 2s }\n",
     "10:16: routes[0].aggregate: missing required key 'parts'"},
    {AGG "    aggregate: { parts: {} }\n", "10:25: routes[0].aggregate.parts: must not be empty"},
    {AGG "    aggregate: { parts: [a] }\n",
     "10:25: routes[0].aggregate.parts: expected a mapping of names, got a list"},
    {AGG "    aggregate: { parts: { a: { upstream: api, path: / } }, deadline: 1s }\n",
     "10:60: routes[0].aggregate.deadline: unknown key (expected one of: timeout, "
     "max_part_size, parts)"},
    {AGG "    aggregate:\n      timeout: 0ms\n      parts: { a: { upstream: api, path: / } }\n",
     "11:16: routes[0].aggregate.timeout: must be between 1ms and 10m, got '0ms'"},
    {AGG "    aggregate:\n      timeout: 11m\n      parts: { a: { upstream: api, path: / } }\n",
     "11:16: routes[0].aggregate.timeout: must be between 1ms and 10m, got '11m'"},
    {AGG "    aggregate:\n      timeout: 2\n      parts: { a: { upstream: api, path: / } }\n",
     "11:16: routes[0].aggregate.timeout: missing unit (ms, s, m or h), got '2'"},
    {AGG "    aggregate:\n      max_part_size: 0\n      parts: { a: { upstream: api, path: / } }\n",
     "11:22: routes[0].aggregate.max_part_size: must be between 1 and 64m, got '0'"},
    {AGG
     "    aggregate:\n      max_part_size: 65m\n      parts: { a: { upstream: api, path: / } }\n",
     "11:22: routes[0].aggregate.max_part_size: must be between 1 and 64m, got '65m'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api }\n",
     "12:12: routes[0].aggregate.parts.a: missing required key 'path'"},
    {AGG "    aggregate:\n      parts:\n        a: { path: / }\n",
     "12:12: routes[0].aggregate.parts.a: missing required key 'upstream'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: /, method: GET }\n",
     "12:38: routes[0].aggregate.parts.a.method: unknown key (expected one of: upstream, "
     "path)"},
    {AGG "    aggregate:\n      parts:\n        a: /x\n",
     "12:12: routes[0].aggregate.parts.a: expected a mapping, got '/x'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: apx, path: / }\n",
     "12:24: routes[0].aggregate.parts.a.upstream: no upstream named 'apx' (defined: api)"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: / }\n        a: { "
         "upstream: api, path: /b }\n",
     "13:9: routes[0].aggregate.parts.a: duplicate key, first at 12:9"},
    {AGG "    aggregate:\n      parts:\n        '': { upstream: api, path: / }\n",
     "12:9: routes[0].aggregate.parts: invalid name '': a part's name has 1 to 64 bytes"},
    {AGG "    aggregate:\n      parts:\n        "
         "x123456789x123456789x123456789x123456789x123456789x123456789x12345: { upstream: api, "
         "path: / }\n",
     "12:9: routes[0].aggregate.parts: invalid name "
     "'x123456789x123456789x123456789x123456789x1234567...': a part's name has 1 to 64 "
     "bytes"},
    {AGG "    aggregate:\n      parts:\n        \"a\\tb\": { upstream: api, path: / }\n",
     "12:9: routes[0].aggregate.parts: invalid name 'a?b': control characters are not "
     "allowed"},
    {AGG "    aggregate:\n      parts:\n        \"a\\x7fb\": { upstream: api, path: / }\n",
     "12:9: routes[0].aggregate.parts: invalid name 'a?b': control characters are not "
     "allowed"},
    {AGG "    aggregate:\n      parts:\n        \"a\\x85b\": { upstream: api, path: / }\n",
     "12:9: routes[0].aggregate.parts: invalid name 'a?b': control characters are not "
     "allowed"},
    /* the excerpt stops before the 'é' that would cross its 48 bytes */
    {AGG "    aggregate:\n      parts:\n        "
         "x123456789x123456789x123456789x123456789x123456éééééééééé: { upstream: api, path: / }\n",
     "12:9: routes[0].aggregate.parts: invalid name "
     "'x123456789x123456789x123456789x123456789x123456...': a part's name has 1 to 64 bytes"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: x }\n",
     "12:35: routes[0].aggregate.parts.a.path: must start with '/', got 'x'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: '/a b' }\n",
     "12:35: routes[0].aggregate.parts.a.path: only visible ASCII is allowed "
     "(percent-encode the rest), got '/a b'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: /météo }\n",
     "12:35: routes[0].aggregate.parts.a.path: only visible ASCII is allowed "
     "(percent-encode the rest), got '/météo'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: '/a#top' }\n",
     "12:35: routes[0].aggregate.parts.a.path: a fragment (#) is not allowed, got '/a#top'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: /a/../b }\n",
     "12:35: routes[0].aggregate.parts.a.path: dot segments ('.' or '..', also "
     "percent-encoded) are not allowed, got '/a/../b'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: /. }\n",
     "12:35: routes[0].aggregate.parts.a.path: dot segments ('.' or '..', also "
     "percent-encoded) are not allowed, got '/.'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: /a/%2E%2e/b }\n",
     "12:35: routes[0].aggregate.parts.a.path: dot segments ('.' or '..', also "
     "percent-encoded) are not allowed, got '/a/%2E%2e/b'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: '/a/..;x/b' }\n",
     "12:35: routes[0].aggregate.parts.a.path: dot segments ('.' or '..', also "
     "percent-encoded) are not allowed, got '/a/..;x/b'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: '/a%5c..?q=1' }\n",
     "12:35: routes[0].aggregate.parts.a.path: dot segments ('.' or '..', also "
     "percent-encoded) are not allowed, got '/a%5c..?q=1'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: /a%00 }\n",
     "12:35: routes[0].aggregate.parts.a.path: an encoded NUL (%00) is not allowed, got "
     "'/a%00'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: /a%zz }\n",
     "12:35: routes[0].aggregate.parts.a.path: '%' must start a percent-encoding like %2F, "
     "got '/a%zz'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: /a% }\n",
     "12:35: routes[0].aggregate.parts.a.path: '%' must start a percent-encoding like %2F, "
     "got '/a%'"},
    {AGG "    aggregate:\n      parts:\n        a: { upstream: api, path: }\n",
     "12:35: routes[0].aggregate.parts.a.path: expected a path like /v1/now, got an empty "
     "value"},
};

static void test_bad_table(void **state)
{
    char err[512], expect[600];
    int failures = 0;

    for (size_t i = 0; i < ARRAY_LEN(bad_cases); i++) {
        memset(err, 0, sizeof err);
        struct conf *c = conf_load_string("t.yaml", bad_cases[i].yaml, err, sizeof err);
        snprintf(expect, sizeof expect, "t.yaml:%s", bad_cases[i].expect);
        if (c != NULL) {
            print_error("case %zu: loaded, expected \"%s\"\n", i, expect);
            conf_free(c);
            failures++;
        } else if (strcmp(err, expect) != 0) {
            print_error("case %zu:\n   got \"%s\"\n  want \"%s\"\n", i, err, expect);
            failures++;
        }
    }
    if (failures > 0)
        fail_msg("%d of %zu bad configs gave the wrong answer", failures, ARRAY_LEN(bad_cases));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_good_corners),
        cmocka_unit_test(test_sample),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_err_buffer),
        cmocka_unit_test(test_client_keys),
        cmocka_unit_test(test_feedback_forms),
        cmocka_unit_test(test_keepalive_default),
        cmocka_unit_test(test_warnings),
        cmocka_unit_test(test_shared),
        cmocka_unit_test(test_shared_password_file),
        cmocka_unit_test(test_aggregate),
        cmocka_unit_test(test_bad_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
