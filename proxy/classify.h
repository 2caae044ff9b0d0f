/*
 * proxy/classify: what a route says about one request for fair queuing: the key of its
 * flow (client address, a header, a query parameter), its cost in tokens and its
 * priority class. Pure functions over the request's headers and target; no I/O.
 */
#ifndef SLUICE_PROXY_CLASSIFY_H
#define SLUICE_PROXY_CLASSIFY_H

#include <stddef.h>
#include <stdint.h>

struct conf_route;
struct evkeyvalq;

/* Longest key kept; longer ones are cut (the limiter caps keys itself too). */
#define CLASSIFY_KEY_MAX 256

/* The flow key into buf (not NUL-terminated); returns its length, 0 for "no key" (the
 * upstream's default flow: no key configured, or the header/parameter absent). `query`
 * is the raw query string or NULL. */
size_t classify_key(const struct conf_route *rt, const char *client_ip,
                    const struct evkeyvalq *headers, const char *query, char *buf, size_t len);

/* Tokens this request costs: the route's cost, or its cost_header's value clamped to
 * 1..max_cost (the route's cost when the header is absent or not a number). */
uint32_t classify_cost(const struct conf_route *rt, const struct evkeyvalq *headers);

/* Priority class 0..3: the route's, or its priority_header's value when that class is in
 * priority_allowed (otherwise the route's). */
uint8_t classify_priority(const struct conf_route *rt, const struct evkeyvalq *headers);

#endif
