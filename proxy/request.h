/*
 * proxy/request: one client request from arrival to its answer, and the answers sluice
 * gives itself.
 *
 * Ownership: created by proxy/frontend when evhttp hands over a complete request; then
 * exactly one module holds it at a time:
 *   frontend (admission) -> upstream (QUEUED: its waiter is linked in the dispatcher)
 *   -> forward (IN_FLIGHT, then RELAYING the answer) -> DONE.
 * The state moves only through the functions below and upstream/forward's transitions
 * (request_set_state), one enum, no side flags:
 *
 *   ADMITTING ──submit──> QUEUED ──released──> IN_FLIGHT ──headers──> RELAYING
 *        │                  ▲  │                  │                      │
 *        │                  └──┼──── requeued ────┘ (429: its turn back) │
 *        └──────────────────┴──┴──────────────────┴──────────────────────┴──> DONE
 *
 * DONE means answered or its client gone: it is reported (metrics, access log) once,
 * unlinked from everything, and freed later from one deferred point (the server's
 * reaper event), never inside the callback chain that ended it. So a caller up the
 * stack (forward_start after evhttp_make_request, a kick after forward_start) may
 * still read a request that ended under it, and see request_done().
 *
 * The client side: the client's evhttp_request belongs to evhttp; a request holds it
 * from request_new until request_detach_client, the one place it lets go (its answer
 * handed to evhttp, its connection closed by us, or closed by evhttp). While attached,
 * a client hang-up is watched (EV_CLOSED) when nothing else would notice it: queued,
 * or relaying with the upstream paused for a slow client.
 */
#ifndef SLUICE_PROXY_REQUEST_H
#define SLUICE_PROXY_REQUEST_H

#include <stdint.h>

#include "limiter/queue.h"
#include "proxy/log.h"

struct evhttp_request;
struct evhttp_connection;
struct evbuffer;
struct pool_conn;
struct request;

/* A request without a client of its own: a part of an aggregate route (proxy/aggregate).
 * Its answer goes to done() instead of a client, once: sluice's own error (status,
 * reason, body NULL), or the upstream's answer (status, reason "ok", or "too_large" when
 * its body went over max_body: the rest was read and dropped; body: what was kept, owned
 * by the request). The request is finished right after done() returns. */
struct request_sink {
    void (*done)(void *arg, struct request *r, int status, const char *reason,
                 struct evbuffer *body);
    void *arg;
    uint64_t max_body;
};
struct event;
struct server;
struct upstream;
struct conf_route;
struct confgen;

enum request_state {
    REQUEST_ADMITTING, /* created, not yet admitted */
    REQUEST_QUEUED,    /* waiter linked in the upstream's dispatcher */
    REQUEST_IN_FLIGHT, /* sent upstream, no answer yet */
    REQUEST_RELAYING,  /* status and headers sent to the client, body streaming */
    REQUEST_DONE,      /* answered or gone; reported; freed by the reaper */
};

struct request {
    struct request *all_prev, *all_next; /* the server's open requests; then its reap list */
    uint64_t id;                         /* for logs, from server.next_request_id */
    struct server *server;
    enum request_state state;
    struct evhttp_request *client;  /* evhttp's; NULL once detached */
    struct confgen *gen;            /* held: the config `route` points into */
    const struct conf_route *route; /* NULL before routing */
    struct upstream *upstream;      /* NULL before routing */
    struct waiter waiter;           /* linked while queued; waiter.data == this */
    struct event *client_watch;     /* EV_CLOSED on the client socket, while watched */
    int client_bound;               /* frontend reports a hang-up during the relay */
    /* the exchange with the upstream (proxy/forward) */
    struct evhttp_request *outgoing; /* ours (evhttp_request_own), this attempt's */
    struct evhttp_request *spent;    /* the previous attempt's, freed at the next start */
    struct pool_conn *conn;          /* pooled upstream connection while in flight */
    int client_paused;               /* relaying: upstream reads paused for a slow client */
    uint32_t attempts;               /* times sent to the upstream */
    int retryable;                   /* this attempt may be sent again (body kept) */
    uint64_t retry_max_wait_ms;      /* decided with it, at send time */
    int retrying;                    /* the upstream refused it unprocessed: going again */
    int upstream_error;              /* evhttp_request_error + 1 from the error callback; 0: none */
    const char *tls_reason;          /* set when the upstream TLS handshake failed */
    char tls_why[200];               /* its cause, for the log and the error body */
    int client_tls;                  /* arrived on a TLS listener */
    uint64_t arrived_ns;             /* monotonic, when evhttp handed it over */
    uint64_t released_ns;            /* when the dispatcher let it go (0: not yet) */
    char client_ip[64];              /* for X-Forwarded-For and logs */
    uint16_t key_len;                /* fair-queuing key (proxy/classify); 0: none */
    char key[256];
    /* A part of an aggregate (sink.done set; no client): what to send, and its answer. */
    struct request_sink sink;
    uint64_t parent_id;         /* the aggregate's request id (access log) */
    char *part_target;          /* path[?query] toward the upstream (before base_path) */
    int part_method;            /* an evhttp_cmd_type */
    struct evbuffer *part_body; /* the client's body, by reference; NULL: none */
    struct evbuffer *collected; /* the upstream's body, kept up to sink.max_body */
    int collected_too_large;
    /* Set by an owner other than the queue (an aggregate holding its client request):
     * how the request is taken back when its client leaves. */
    void (*on_client_gone)(struct request *r);
    void *owner;
    uint64_t start_by_ns; /* admission: a predicted start later than this is refused 503
                           * deadline at once (an aggregate's deadline); 0: none */
    /* What the access log and metrics report when the request ends. */
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

/* A part of `parent` (an aggregate's client request): no client; `target` (copied) is
 * the path[?query] to send, `method` an evhttp_cmd_type, `body` the parent's body to
 * send by reference (NULL: none). Its answer goes to `sink`. NULL on out-of-memory. */
struct request *request_new_part(struct request *parent, const char *target, int method,
                                 struct evbuffer *body, const struct request_sink *sink);

/* Take the request back from wherever it is (queue: withdrawn, no token spent; in flight
 * or relaying: the exchange cut) and finish it, without an answer. */
void request_withdraw(struct request *r);

static inline int request_done(const struct request *r) { return r->state == REQUEST_DONE; }

/* Move to `state` (not DONE: see request_finish). */
void request_set_state(struct request *r, enum request_state state);

/* How the client side ends. */
enum request_detach {
    REQUEST_ANSWERED, /* the answer was handed to evhttp: it writes it, then keeps or
                       * closes the connection itself */
    REQUEST_CLOSE,    /* no (complete) answer: close the client connection now */
    REQUEST_GONE,     /* evhttp is closing the connection (the client hung up) */
};

/* The one place the client side is let go: stop watching, unbind from the frontend, and
 * close the connection or hand evhttp's request back as `how` says. No-op when already
 * detached. */
void request_detach_client(struct request *r, enum request_detach how);

/* The request is over: detaches the client if still attached (closing its connection:
 * it got no answer), reports it to the metrics and the access log (status/reason as
 * set, or 499 client_closed when no answer was given), unlinks it from the server and
 * hands it to the reaper. Idempotent. The waiter must be unlinked and the upstream
 * exchange over. */
void request_finish(struct request *r);

/* Free every request the reaper holds (the server's reap event; and at exit). */
void request_reap(struct server *s);

/* Send the client an answer sluice made (an error, an aggregate's JSON): `body` is
 * copied out (the caller frees it); a HEAD gets the head only, with the body's
 * Content-Length. The client must be attached; the caller detaches it after. */
void request_send(struct request *r, int status, const char *phrase, struct evbuffer *body);

/* Answer the client with an error sluice produced itself: `status`, a short text body,
 * `Sluice-Reason: reason`, and `Retry-After: retry_after_s` when > 0; then finish `r`.
 * Logs one line at info (warn for 5xx). */
void request_reply_error(struct request *r, int status, const char *reason, uint32_t retry_after_s,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Watch the client socket for a hang-up (EV_CLOSED), which evhttp does not see while
 * it is not reading; on hang-up the request is withdrawn from wherever it is (queue or
 * upstream) and finished. Idempotent. */
int request_watch_client(struct request *r);

/* evhttp is freeing the client connection (the client hung up mid-answer): withdraw
 * the request from wherever it is and finish it. */
void request_client_closed(struct request *r);

/* Stopping now (a second TERM/INT): close every open request's client connection and
 * cancel its upstream exchange, so that nothing is left for the exit to leak. */
void request_abort_all(struct server *s);

/* "GET", "POST"...: the name of an evhttp_cmd_type. */
const char *request_method_name(int cmd);

/* What evhttp handed over is not what the client sent (a refused request's stand-in):
 * log the method and target as "-". */
void request_forget_target(struct request *r);

/* Milliseconds spent queued (released_ns - arrived_ns, or until now when not released). */
uint64_t request_queue_wait_ms(const struct request *r);

/* A line of the daemon's log about `r`, prefixed "req=ID route=PREFIX upstream=NAME: ". */
void request_log(const struct request *r, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
