/*
 * proxy/server: the daemon's context, one per process, created by proxy/main.
 *
 * Everything that runs in the event loop reaches the shared state through this struct
 * (passed as a callback argument), never through globals. main owns it and everything
 * it points to; the modules below own their own objects.
 *
 *   main ──creates──> server ──owns──> frontend (listeners, client connections)
 *                                  ├─> router   (conf routes -> upstream index)
 *                                  └─> upstream[] (dispatcher, timer, connection pool)
 */
#ifndef SLUICE_PROXY_SERVER_H
#define SLUICE_PROXY_SERVER_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evdns_base;
struct event;
struct conf;
struct router;
struct upstream;
struct frontend;
struct metrics;
struct accesslog;
struct admin;
struct confgen;
struct request;
struct shared;
struct history;

enum server_state {
    SERVER_RUNNING,
    SERVER_DRAINING, /* stopped accepting; releasing what is queued at its rate */
    SERVER_STOPPING, /* drain over: the loop exits once the last answer is written */
};

struct server {
    struct event_base *base;
    struct evdns_base *dns; /* non-blocking name resolution for upstream hosts */
    struct conf *conf;      /* the config serving now: gen->conf */
    struct confgen *gen;    /* its reference-counted generation (proxy/reload) */
    struct router *router;
    struct upstream **upstreams; /* indexed like conf->upstreams */
    size_t nupstreams;
    struct upstream **retired; /* removed by a reload, draining; freed when idle */
    size_t nretired;
    struct event *reap; /* activated when a retired upstream becomes idle */
    struct frontend *frontend;
    struct metrics *metrics;  /* kept across reloads */
    struct accesslog *access; /* NULL without access_log */
    struct admin *admin;      /* NULL without admin */
    struct shared *shared;    /* Redis for shared budgets; NULL without a shared section */
    struct history *history;  /* per-second samples for the dashboard; NULL if none */
    uint64_t started_ns;      /* monotonic, at start-up */
    enum server_state state;
    uint64_t next_request_id;      /* request ids in logs, from 1 */
    size_t requests_open;          /* struct request not DONE: queued, in flight or replying */
    struct request *requests;      /* those requests, linked (request_abort_all) */
    struct request *reap_requests; /* DONE, to be freed by request_reaper (proxy/request) */
    struct event *request_reaper;  /* activated when a request is DONE */
    struct event *drain_timer;     /* fires at drain_timeout: answer what is still queued */
    struct event *stop_check;      /* activated when a request or connection ends while draining */
    struct event *grace_timer;     /* last answers get this long to be written before exit */
};

/* Called when a request or a client connection ends (any outcome): lets a draining
 * server notice that it is done. Cheap when running. */
void server_check_idle(struct server *s);

/* Is the server draining or stopping (answers should carry Connection: close)? */
static inline int server_is_draining(const struct server *s) { return s->state != SERVER_RUNNING; }

#endif
