/*
 * proxy/request: one client request from arrival to its answer.
 *
 * Ownership: created by proxy/frontend when evhttp hands over a complete request;
 * from then on exactly one module holds it at a time:
 *   frontend (admission) -> upstream (queued: its waiter is linked in the dispatcher)
 *   -> forward (in flight to the upstream, then relaying the answer) -> freed.
 * Whoever answers the client (request_reply_error, or forward at the end of the
 * relay) frees it with request_free in the same step; nothing else may free it.
 *
 * The client's evhttp_request belongs to evhttp; we keep a pointer to it only until we
 * hand the answer back (evhttp_send_*), after which evhttp may free it at any time.
 */
#ifndef SLUICE_PROXY_REQUEST_H
#define SLUICE_PROXY_REQUEST_H

#include <stdint.h>

#include "limiter/queue.h"

struct evhttp_request;
struct evhttp_connection;
struct pool_conn;
struct event;
struct server;
struct upstream;
struct conf_route;
struct confgen;

enum request_state {
    REQUEST_ADMITTING,
    REQUEST_QUEUED,    /* waiter linked in the upstream's dispatcher */
    REQUEST_IN_FLIGHT, /* sent upstream, no answer yet */
    REQUEST_RELAYING,  /* status and headers sent to the client, body streaming */
};

struct request {
    struct request *all_prev, *all_next; /* the server's list of open requests */
    uint64_t id;                         /* for logs, from server.next_request_id */
    struct server *server;
    enum request_state state;
    struct evhttp_request *client;   /* evhttp's; NULL once answered */
    struct confgen *gen;             /* held: the config `route` points into */
    const struct conf_route *route;  /* NULL before routing */
    struct upstream *upstream;       /* NULL before routing */
    struct waiter waiter;            /* linked while queued; waiter.data == this */
    struct event *client_watch;      /* EV_CLOSED on the client socket while queued/in flight */
    struct evhttp_request *outgoing; /* evhttp's outgoing request while in flight */
    struct pool_conn *conn;          /* pooled upstream connection while in flight */
    uint64_t arrived_ns;             /* monotonic, when evhttp handed it over */
    uint64_t released_ns;            /* when the dispatcher let it go (0: not yet) */
    char client_ip[64];              /* for X-Forwarded-For and logs */
    int client_paused;               /* relaying: upstream reads paused for a slow client */
    int client_bound;                /* frontend_bind_request() is in force */
    uint32_t attempts;               /* times sent to the upstream */
    uint16_t key_len;                /* fair-queuing key (proxy/classify); 0: none */
    char key[256];
    int retrying;           /* the upstream refused it unprocessed: going again */
    int upstream_error;     /* evhttp_request_error + 1 from the error callback; 0: none */
    const char *tls_reason; /* set when the upstream TLS handshake failed */
    char tls_why[200];      /* its cause, for the log and the error body */
    int client_tls;         /* arrived on a TLS listener */
    /* What the access log and metrics report when the request ends (request_free). */
    int status;          /* sent to the client; 0: none (client left: 499) */
    const char *reason;  /* "ok" or the Sluice-Reason; static string */
    uint64_t sent_ns;    /* handed to the upstream connection (0: never) */
    uint64_t headers_ns; /* upstream's response headers arrived (0: never) */
    uint64_t bytes_out;  /* response body bytes handed to the client */
    const char *method;  /* static string */
    char *target;        /* the client's request-target; only with an access log */
    char *user_agent;    /* only with an access log */
};

/* Allocate for evhttp's `client` request. Returns NULL on out-of-memory. */
struct request *request_new(struct server *s, struct evhttp_request *client);

/* Free; the waiter must be unlinked and the client answered or gone. Reports the
 * request to the metrics and the access log (status/reason as set, or 499
 * client_closed when no answer was given). NULL ok. */
void request_free(struct request *r);

/* Answer the client with an error sluice produced itself: `status`, a short text body,
 * `Sluice-Reason: reason`, and `Retry-After: retry_after_s` when > 0. Then free `r`.
 * Logs one line at info (warn for 5xx caused by the upstream). */
void request_reply_error(struct request *r, int status, const char *reason, uint32_t retry_after_s,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Start/stop watching the client socket for a hang-up (EV_CLOSED). On hang-up the
 * request is withdrawn from wherever it is (queue or upstream) and freed, and the
 * client connection closed. Idempotent. */
int request_watch_client(struct request *r);
void request_unwatch_client(struct request *r);

/* Add RateLimit-Policy / RateLimit (IETF httpapi draft) describing the client's budget,
 * on routes with a `key:`: its key's first per-key limit when the upstream has key
 * limits, else the upstream's first limit (shared by every key). q = burst, w = seconds to refill
 * it, r = whole tokens now, t = seconds until full again. */
struct evkeyvalq;
void request_add_ratelimit_headers(const struct request *r, struct evkeyvalq *out);

/* "GET", "POST"...: the name of an evhttp_cmd_type. */
const char *request_method_name(int cmd);

/* evhttp is freeing the client connection (the client hung up mid-answer): withdraw
 * the request from wherever it is and free it. evhttp's request is released here when
 * evhttp left it to us. */
void request_client_closed(struct request *r);

/* Stopping now (a second TERM/INT): close every open request's client connection and
 * cancel its upstream exchange, so that nothing is left for the exit to leak. */
void request_abort_all(struct server *s);

/* What evhttp handed over is not what the client sent (a refused request's stand-in):
 * log the method and target as "-". */
void request_forget_target(struct request *r);

/* Milliseconds spent queued (released_ns - arrived_ns, or until now when not released). */
uint64_t request_queue_wait_ms(const struct request *r);

#endif
