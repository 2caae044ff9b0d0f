/*
 * proxy/pool: the keep-alive connections of one upstream.
 *
 * Ownership: the upstream owns its pool; the pool owns every struct pool_conn it made,
 * and each pool_conn owns its evhttp_connection (and the bufferevent, SSL and gate
 * under it) and holds a reference on the TLS context it was made with. A connection is
 * either idle in the pool, lent to exactly one request (pool_get .. pool_put), or
 * waiting to be freed: given back but not kept, freed by pool_reap (the upstream's next
 * kick), never inside the evhttp callback that gave it back.
 *
 * The pool keeps a connection only when its last answer was exactly framed and nothing
 * else arrived on it (the gate says so: gate_clean), so a pooled connection never
 * carries a byte from one exchange into the next.
 *
 * All functions run in the event loop.
 */
#ifndef SLUICE_PROXY_POOL_H
#define SLUICE_PROXY_POOL_H

#include <stdint.h>

#include "proxy/gate.h"

struct event_base;
struct evdns_base;
struct evhttp_connection;
struct conf_upstream;
struct tls_ctx;
struct pool;

struct pool_conn {
    struct evhttp_connection *evcon; /* owned */
    struct gate *gate;               /* strict check of the answers, owned */
    struct tls_ctx *tls;             /* held: the context its SSL was made from, or NULL */
    uint32_t endpoint;               /* the pool's endpoint generation when made */
    struct pool_conn *next;          /* in the idle or the closing list */
};

/* A pool for `cu` (not copied: it must outlive the pool or be replaced by
 * pool_reconfigure), making TLS connections from `tls` (held) when not NULL. */
struct pool *pool_new(struct event_base *base, struct evdns_base *dns,
                      const struct conf_upstream *cu, struct tls_ctx *tls);

/* Free every connection; none may be lent. NULL ok. */
void pool_free(struct pool *p);

/* Lend a connection (idle, or new). on_invalid(arg) is called from the event loop if
 * the answer on it is not valid HTTP (the gate's report). NULL on failure. */
struct pool_conn *pool_get(struct pool *p, gate_error_fn *on_invalid, void *arg);

/* Take a lent connection back: kept for reuse when `reusable`, its gate says clean, and
 * it leads to the current endpoint with the current TLS context; else freed by the next
 * pool_reap. Safe inside evhttp callbacks. */
void pool_put(struct pool *p, struct pool_conn *c, int reusable);

/* Free the connections given back but not kept. Call outside evhttp callbacks. */
void pool_reap(struct pool *p);

/* Apply a reload (cannot fail): `cu` replaces the config; `endpoint_changed` drops
 * idle connections (lent ones are not kept when they come back); `tls` (held; NULL for
 * plain http) replaces the context for new connections; keepalive follows cu. */
void pool_reconfigure(struct pool *p, const struct conf_upstream *cu, int endpoint_changed,
                      struct tls_ctx *tls);

/* Close every idle connection (a retired upstream keeps none). */
void pool_drop_idle(struct pool *p);

uint32_t pool_lent(const struct pool *p);
uint32_t pool_idle(const struct pool *p);

#endif
