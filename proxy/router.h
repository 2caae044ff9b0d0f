/*
 * proxy/router: which route a request takes, from its Host and path.
 *
 * Longest path_prefix wins; a route with `host:` applies only when the request's Host
 * (port ignored, case-insensitive) matches, and beats a host-less route of the same
 * prefix length. No match means 404: sluice is never an open proxy.
 *
 * Built from a validated conf and read-only afterwards; points into that conf's routes.
 */
#ifndef SLUICE_PROXY_ROUTER_H
#define SLUICE_PROXY_ROUTER_H

struct conf;
struct conf_route;
struct router;

struct router *router_new(const struct conf *c);
void router_free(struct router *r);

/* `host` may be NULL (HTTP/1.0 without Host). Returns the route or NULL. */
const struct conf_route *router_match(const struct router *r, const char *host, const char *path);

#endif
