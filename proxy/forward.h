/*
 * proxy/forward: one request's exchange with the upstream: build the outgoing request
 * (path mapping, hop-by-hop headers removed, X-Forwarded-* added, body moved, not
 * copied), send it on a pooled connection, and relay the answer to the client as it
 * arrives (status and headers first, then the body in pieces, pausing the upstream
 * while the client is slow). Upstream failures become 502 / 504 with a Sluice-Reason.
 *
 * Ownership: forward_start takes the request and the connection; when the exchange ends
 * it gives the connection back (upstream_request_done) and frees the request.
 */
#ifndef SLUICE_PROXY_FORWARD_H
#define SLUICE_PROXY_FORWARD_H

struct request;
struct pool_conn;
struct evkeyvalq;

/* Send `r` upstream over `conn` (lent by the pool). Never fails silently: on error the
 * client gets a 502. */
void forward_start(struct request *r, struct pool_conn *conn);

/* The client left while `r` was in flight or relaying: cancel the upstream exchange,
 * give the connection back, close the client connection and free `r`. */
void forward_abort(struct request *r);

/* Hop-by-hop test used in both directions (RFC 9110 7.6.1): the fixed list plus any
 * name listed in any Connection field of `headers` (has_connection: there is one). */
int forward_is_hop_by_hop(const char *name, const struct evkeyvalq *headers, int has_connection);

#endif
