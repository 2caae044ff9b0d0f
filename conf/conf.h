/*
 * conf/conf: the configuration, loaded from YAML (libyaml) into plain structs.
 *
 * Contract
 *   - conf_load() reads one file, parses and validates ALL of it, and returns a new
 *     struct conf owned by the caller (free with conf_free), or NULL with a message of
 *     the form "FILE:LINE:COL: key: problem" in `err`. It never touches sockets and
 *     never changes a config that is already serving: a reload parses into a new struct
 *     and the caller swaps only on success.
 *   - Every value has been range-checked, every upstream named by a route or by an
 *     aggregate route's part exists (upstream_index is resolved), listeners do not
 *     overlap, and limits naming a shared budget have a `shared:` section and agree on
 *     its rate and burst. Files
 *     named in the config (TLS certificates, keys, CA files) are checked to be readable;
 *     whether they hold what they should is checked by the module that loads them
 *     (proxy/tls), which reports with the marks kept here. shared.password_file is the
 *     exception: it is read here, at each load (a reload reads it again), so the proxy
 *     never opens it.
 *   - Called at start-up and on reload, from the main loop or before it; not reentrant
 *     with respect to the same err buffer only.
 */
#ifndef SLUICE_CONF_CONF_H
#define SLUICE_CONF_CONF_H

#include <stddef.h>
#include <stdint.h>

struct conf_mark {
    uint32_t line, col; /* 1-based position of the value in the YAML file; 0 if defaulted */
};

enum conf_log_level { CONF_LOG_ERROR, CONF_LOG_WARN, CONF_LOG_INFO, CONF_LOG_DEBUG };
enum conf_log_format { CONF_LOG_TEXT, CONF_LOG_JSON };

/* What sluice does with a new connection at client.max_connections. */
enum conf_conn_limit {
    CONF_CONN_REJECT, /* "reject": accept it and answer 503 connection_limit at once */
    CONF_CONN_PAUSE,  /* "pause": stop accepting until a connection closes */
};

/* What a 429 (or 503 + Retry-After) from an upstream pauses. */
enum conf_feedback_scope {
    CONF_FEEDBACK_UPSTREAM, /* "upstream": every release to the upstream */
    CONF_FEEDBACK_KEY,      /* "key": the fair-queuing key of the refused request only */
};

/* TLS toward an upstream (url: https://...). */
struct conf_tls_client {
    int enabled;       /* 1 when the url scheme is https */
    int verify;        /* default 1 */
    char *ca_file;     /* NULL: the system trust store */
    char *server_name; /* NULL: the url's host (SNI and name check) */
    int min_version;   /* 12 (default) or 13 */
    char *cert, *key;  /* client certificate for mTLS, both or neither */
    struct conf_mark mark, ca_file_mark, cert_mark, key_mark;
};

/* TLS terminated on a listener. */
struct conf_tls_server {
    int enabled;
    char *cert, *key;
    struct conf_mark mark, cert_mark, key_mark;
};

struct conf_listen {
    char *address; /* as written: "127.0.0.1:8080", "[::1]:8080", "0.0.0.0:8443" */
    char *host;    /* the host part without brackets: "127.0.0.1", "::1" */
    uint16_t port;
    struct conf_tls_server tls;
    struct conf_mark mark;
};

struct conf_limit {
    double rate_per_sec; /* from "N/s", "N/m", "N/h"; fractions allowed */
    double burst_tokens; /* default 1 */
    /* NULL: local. Else the budget (1..64 of [A-Za-z0-9_.-]) shared through shared.redis
     * by every instance and every upstream naming it: only in an upstream's limits, never
     * in fairness.key_limits; the limits naming one budget have the same rate and burst,
     * and one upstream names it once. */
    char *shared;
    struct conf_mark mark, shared_mark; /* shared_mark: the `shared:` value; 0 if local */
};

/* Fair queuing among the keys of an upstream's routes. */
struct conf_fairness {
    struct conf_limit *key_limits; /* per-key limits, each key its own buckets; 0..4 */
    size_t nkey_limits;
    uint32_t key_queue_share;  /* default 0: a key may fill the queue; else its cap */
    uint32_t max_keys;         /* default 10000 keys tracked at once */
    uint64_t key_idle_ms;      /* default 60000: an idle key is forgotten after this */
    uint32_t priority_classes; /* default 4 */
    uint32_t starvation_guard; /* default 10: releases in a row from higher classes
                                * before a waiting lower class gets one */
};

struct conf_upstream {
    char *name;      /* the key under `upstreams:` */
    char *url;       /* as written */
    int https;       /* scheme */
    char *host;      /* from the url, no brackets */
    uint16_t port;   /* from the url, or 80 / 443 */
    char *base_path; /* url path without trailing '/', "" when none: prefixed to forwarded paths */
    struct conf_limit *limits; /* at least one */
    size_t nlimits;
    uint32_t max_in_flight;       /* default 64 */
    uint32_t queue_size;          /* default 1000 */
    uint64_t max_wait_ms;         /* default 30000 */
    uint64_t connect_timeout_ms;  /* default 2000 */
    uint64_t response_timeout_ms; /* default 30000 */
    uint32_t keepalive;           /* idle connections kept open; default max_in_flight */
    int preserve_host;        /* forward the client's Host instead of the upstream's; default 0 */
    uint32_t max_header_size; /* default 16k: status line + headers of an answer, else 502 */
    struct conf_fairness fairness;
    int feedback; /* default 1: pause on 429/503+Retry-After, obey RateLimit budgets */
    enum conf_feedback_scope feedback_scope; /* default upstream */
    uint64_t feedback_max_pause_ms; /* default 300000: longest pause an upstream can ask for */
    uint32_t retry_max_attempts;    /* default 3: sends of one request refused with 429 */
    uint64_t retry_max_wait_ms; /* default 60000: longest upstream-requested pause to retry after */
    struct conf_tls_client tls;
    struct conf_mark mark;
};

/* The methods a route accepts, as bits of struct conf_route.methods. */
enum conf_method {
    CONF_METHOD_GET = 1u << 0,
    CONF_METHOD_HEAD = 1u << 1,
    CONF_METHOD_POST = 1u << 2,
    CONF_METHOD_PUT = 1u << 3,
    CONF_METHOD_DELETE = 1u << 4,
    CONF_METHOD_OPTIONS = 1u << 5,
    CONF_METHOD_PATCH = 1u << 6,
};

/* One part of an aggregate route: a request of its own to `upstream`. */
struct conf_part {
    char *name;            /* the key under `parts:`, a JSON object key in the answer: 1..64
                            * bytes of UTF-8 without control characters ('"' and '\' may be
                            * there: escape it wherever it goes) */
    char *upstream;        /* name */
    size_t upstream_index; /* resolved index into conf.upstreams */
    char *path;            /* the part's target: starts with '/', visible ASCII, no '#', no dot
                            * segments; may end in a query ("/quote?s=ACME") */
    struct conf_mark mark; /* the name's position */
};

/* An aggregate route: one request fans out to every part, one JSON answer. */
struct conf_aggregate {
    uint64_t timeout_ms;     /* default 2000, 1ms..10m: deadline of the whole answer */
    uint64_t max_part_size;  /* bytes, default 1m, 1..64m: a part's body over this fails it */
    struct conf_part *parts; /* 1..32, in the order written; names unique */
    size_t nparts;
    struct conf_mark mark; /* the `aggregate:` mapping */
};

/* Where a route finds the key that sorts its requests into fair-queuing flows. */
enum conf_key_source {
    CONF_KEY_NONE,      /* one flow for every request of the upstream */
    CONF_KEY_CLIENT_IP, /* "client_ip" */
    CONF_KEY_HEADER,    /* "header:NAME" */
    CONF_KEY_QUERY,     /* "query:NAME" */
};

struct conf_route {
    char *path_prefix;     /* starts with '/' */
    char *host;            /* NULL: any host; else matched case-insensitively, port ignored */
    int strip_prefix;      /* default 0 */
    char *upstream;        /* name; NULL on an aggregate route */
    size_t upstream_index; /* resolved index into conf.upstreams; SIZE_MAX on an aggregate
                            * route */
    /* NULL: a route to `upstream`. Else the parts this route fans out to (exactly one of
     * upstream and aggregate is set); key, cost and priority apply to every part. */
    struct conf_aggregate *aggregate;
    uint32_t methods; /* bits of enum conf_method; only meaningful on an aggregate route
                       * (`methods:` is refused elsewhere): default GET|HEAD. A method with
                       * a body is there only when `methods:` names it */
    enum conf_key_source key_source; /* default none */
    char *key_name;                  /* header or query parameter name; NULL otherwise */
    uint32_t cost;                   /* default 1: tokens per request, from every limit */
    char *cost_header;               /* NULL: none; else a request header giving the cost */
    uint32_t max_cost;         /* default 100: cost_header values are clamped to 1..max_cost */
    uint32_t priority;         /* default 0 (first) .. 3 */
    char *priority_header;     /* NULL: none; else a request header choosing the class */
    uint32_t priority_allowed; /* bit i: the header may choose class i; default: every
                                * class at or below (numerically >=) `priority` */
    struct conf_mark mark;
};

struct conf_client {
    uint32_t max_connections;   /* default 1024: at the cap, see on_max_connections */
    uint32_t max_header_size;   /* default 8k: request line + headers, else 431 */
    uint64_t max_body_size;     /* default 1m: else 413 */
    uint64_t timeout_ms;        /* default 60000: read/write inactivity, also keep-alive idle */
    uint64_t header_timeout_ms; /* default 10000: request headers complete within, else 408 */
    enum conf_conn_limit on_max_connections; /* default reject */
};

struct conf_admin {
    int enabled; /* 1 when an `admin:` section is present */
    char *address, *host;
    uint16_t port;
    struct conf_mark mark;
};

struct conf_access_log {
    int enabled;                 /* 1 when an `access_log:` section is present */
    char *path;                  /* NULL or "-": stderr */
    enum conf_log_format format; /* default text */
};

/* The store that instances share budgets through (`shared:`, top level, optional). Read
 * and checked only: nothing in conf/ connects to it, so `sluice -t` never does either. */
struct conf_shared {
    int enabled;         /* 1 when a `shared:` section is present */
    char *redis;         /* as written: "127.0.0.1:6379", "[::1]:6379", "redis.internal:6379",
                          * "unix:/run/redis/redis.sock" */
    char *host;          /* TCP: an IP address (no brackets) or a DNS name; NULL for unix: */
    uint16_t port;       /* TCP: 1..65535; 0 for unix: */
    char *unix_path;     /* unix:PATH: the socket's absolute path; NULL for TCP */
    char *password;      /* AUTH: the content of password_file (one line, newline
                          * stripped), read at each load; NULL without password_file.
                          * Never printed; conf_free wipes it */
    uint32_t db;         /* SELECT; default 0, 0..10000 */
    uint64_t timeout_ms; /* deadline of one Redis call; default 50, 1ms..10s */
    uint64_t horizon_ms; /* how far ahead a lease of release slots may reach; default
                          * 500, 10ms..60s */
    char *instance;      /* this instance in the fleet, 1..64 of [A-Za-z0-9_.:-]; NULL:
                          * not set (the proxy uses host:pid) */
    struct conf_mark mark, redis_mark; /* the section; the redis value */
};

struct conf {
    char *path;                 /* the file it came from */
    struct conf_listen *listen; /* at least one */
    size_t nlisten;
    uint64_t drain_timeout_ms;     /* default 30000 */
    enum conf_log_level log_level; /* default info */
    struct conf_client client;
    struct conf_admin admin;
    struct conf_access_log access_log;
    struct conf_shared shared;
    struct conf_upstream *upstreams; /* at least one */
    size_t nupstreams;
    struct conf_route *routes; /* at least one */
    size_t nroutes;
};

/* Load and validate `path`. Returns a new conf, or NULL with "FILE:LINE:COL: message"
 * (or "FILE: message" when no position applies, e.g. the file cannot be opened) in err. */
struct conf *conf_load(const char *path, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Same, from a string in memory; `name` stands for FILE in messages (used by tests). */
struct conf *conf_load_string(const char *name, const char *yaml, char *err, size_t errlen)
    __attribute__((warn_unused_result));

void conf_free(struct conf *c);

/* What a valid config says that is probably not what was meant (`sluice -t` prints it):
 * one line per warning, "FILE: warning: ...\n", written into out (cut to len, always
 * NUL-terminated when len > 0). Returns the number of warnings; 0 leaves out "". */
size_t conf_warnings(const struct conf *c, char *out, size_t len);

/* Is `host` (as stored in the config: no brackets) an IPv4 or IPv6 address rather than
 * a name? Decides SNI vs IP-SAN checks and whether a resolver is needed. */
int conf_host_is_ip(const char *host);

/* Find an upstream by name; NULL when absent. */
const struct conf_upstream *conf_find_upstream(const struct conf *c, const char *name);

#endif
