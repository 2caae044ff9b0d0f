/*
 * proxy/status: the /status document (JSON), which the dashboard is a view of.
 *
 * Built with jansson from the server's live state, proxy/history's samples and
 * proxy/metrics' totals at the moment it is asked for; nothing here is kept between
 * requests. Every string that came from outside (fair-queuing keys from clients,
 * upstream names, urls) goes through a JSON string of jansson's, with bytes that are not
 * UTF-8 replaced, so a client's key can never break out of it.
 *
 * Fields: see README ("Operations") and contrib/dashboard/app.js. Event loop only.
 */
#ifndef SLUICE_PROXY_STATUS_H
#define SLUICE_PROXY_STATUS_H

#include <stddef.h>

struct server;
struct evbuffer;

/* Append the document to `out`, with the last `history` seconds of samples per upstream
 * (0: none; at most HISTORY_SECONDS). Returns 0, -1 on out of memory. */
int status_render(struct server *s, size_t history, struct evbuffer *out);

#endif
