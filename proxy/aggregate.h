/*
 * proxy/aggregate: aggregate routes. One client request fans out to several upstreams at
 * once and gets one JSON answer.
 *
 * Each part is a request of its own (proxy/request, with a sink instead of a client)
 * through its upstream's admission, queue, limits, max_in_flight, fairness (the route's
 * key, cost and priority), feedback pauses and TLS, exactly as a client's request to that
 * upstream would go. All parts are submitted at once, so the answer takes as long as the
 * slowest part, not the sum. A part whose predicted wait already runs past the
 * aggregate's deadline fails at once (deadline) instead of holding a place; when the
 * deadline passes, parts still queued are withdrawn (no token spent, nothing sent), parts
 * in flight are cut, and the answer goes out partial at once. A client that leaves takes
 * every part back the same way.
 *
 * The answer (proxy/aggmerge builds it): 200 application/json {"part": <its JSON>, ...}
 * in the configured order, `Sluice-Aggregate: complete` when every part answered 2xx
 * with valid JSON, else `partial` with the failed parts null and
 * `Sluice-Aggregate-Errors: name=reason, ...`; every part failed: 502 with the same.
 *
 * Ownership: aggregate_start takes the client's request (it stays the request that
 * answers the client, is reported once, and is finished when the answer is handed to
 * evhttp); the struct aggregate lives until then and owns its parts' bodies; each part's
 * request belongs to its upstream or forward as any request, and reports to the
 * aggregate through its sink exactly once, or is taken back (request_withdraw).
 */
#ifndef SLUICE_PROXY_AGGREGATE_H
#define SLUICE_PROXY_AGGREGATE_H

struct request;

/* r was routed to an aggregate route (r->route->aggregate): fan out. Takes r. */
void aggregate_start(struct request *r);

#endif
