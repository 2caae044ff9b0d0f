/*
 * proxy/admin: the admin listener (admin.address; loopback by default, never the proxy
 * port) serving
 *   GET /metrics   Prometheus text format (proxy/metrics)
 *   GET /healthz   200 "ok" while serving, 503 "draining" while draining
 *   GET /status    JSON: per upstream its limits, tokens, queue depth and capacity,
 *                  in flight, next release time, counters
 * Anything else: 404. Only GET/HEAD.
 *
 * Owned by the server; rebuilt on reload when the address changes.
 */
#ifndef SLUICE_PROXY_ADMIN_H
#define SLUICE_PROXY_ADMIN_H

struct admin;
struct server;
struct conf_admin;

/* Bind and serve. NULL (logged) when the address cannot be bound. */
struct admin *admin_new(struct server *s, const struct conf_admin *ca);
void admin_free(struct admin *a);

#endif
