/*
 * proxy/frontend: the client side. One evhttp per configured listener; accepts
 * connections (stopping at client.max_connections and resuming below it), receives
 * complete requests from evhttp, refuses malformed or oversized ones, routes, and hands
 * each routed request to its upstream's admission.
 *
 * Owns the evhttp servers and listeners; client connections belong to evhttp.
 */
#ifndef SLUICE_PROXY_FRONTEND_H
#define SLUICE_PROXY_FRONTEND_H

#include <stddef.h>

struct server;
struct frontend;
struct conf;

/* Bind every listener of s->conf. Returns NULL (logged) when a listener cannot bind. */
struct frontend *frontend_new(struct server *s);

/* Match the listeners to config `c` (which must stay alive while it serves): bind the
 * new ones, re-read certificates of kept TLS listeners, apply client limits, close the
 * ones no longer configured (their open connections finish). All or nothing: on
 * failure nothing changed and err says why (FILE:LINE:COL for a bind). */
int frontend_reconfigure(struct frontend *f, const struct conf *c, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Close the listening sockets (drain): no new connection is accepted. Open client
 * connections stay until their requests are answered. */
void frontend_stop_accepting(struct frontend *f);

/* Free everything, closing every client connection. NULL ok. */
void frontend_free(struct frontend *f);

size_t frontend_connections(const struct frontend *f);

/* While `r` is relaying its answer on client connection `evcon`, a hang-up that evhttp
 * notices calls request_client_closed(r); pass r = NULL to unbind (before the answer
 * ends or the connection is freed by us). */
struct evhttp_connection;
struct request;
void frontend_bind_request(struct frontend *f, struct evhttp_connection *evcon, struct request *r);

#endif
