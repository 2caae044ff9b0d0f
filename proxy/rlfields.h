/*
 * proxy/rlfields: the RateLimit-Policy / RateLimit fields (IETF httpapi draft) that
 * tell a client its own budget.
 *
 * Only on routes with a `key:` (it is the client's own budget they describe): its key's
 * first per-key limit when the upstream has key limits, else the upstream's first limit
 * (shared by every key). q = burst, w = seconds to refill it, r = whole tokens now,
 * t = seconds until full again. Read-only on the dispatcher; event loop only.
 */
#ifndef SLUICE_PROXY_RLFIELDS_H
#define SLUICE_PROXY_RLFIELDS_H

#include <stddef.h>

struct upstream;
struct conf_route;
struct evkeyvalq;

/* Add both fields to `out` for a request of `route` to `u` with fair-queuing key
 * `key` (nothing on routes without a key, or before routing: u or route NULL). */
void rlfields_add(struct upstream *u, const struct conf_route *route, const char *key,
                  size_t key_len, struct evkeyvalq *out);

#endif
