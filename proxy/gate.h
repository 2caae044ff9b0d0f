/*
 * proxy/gate: the strict HTTP/1.1 check in front of evhttp on one connection.
 *
 * A gate sits on a bufferevent's input buffer as an evbuffer callback, which libevent
 * runs as soon as bytes arrive and before the bufferevent's read callback (evhttp's
 * parser) sees them. It runs a struct http1_stream over the new bytes and rewrites the
 * buffer so that evhttp only ever reads what the stream let through: complete, checked
 * heads; exact bodies; canonical chunk framing. Everything else never reaches evhttp:
 *   - client connections: a refused request is replaced by a stand-in head, so evhttp
 *     hands the front end a request, in order, which the front end answers with the
 *     error (gate_refused_message); nothing after it is read.
 *   - upstream connections: interim 1xx answers are removed, bytes beyond an answer are
 *     dropped (the connection is then not clean: gate_clean), and an invalid answer
 *     calls the owner's on_error from the event loop (never from inside evhttp).
 *
 * Ownership: the creator owns the gate and must free it (gate_free) while the
 * bufferevent still exists, e.g. in the connection's close callback; freeing removes
 * the evbuffer callback. The bufferevent stays evhttp's.
 */
#ifndef SLUICE_PROXY_GATE_H
#define SLUICE_PROXY_GATE_H

#include <stdint.h>

#include "proxy/http1.h"

struct gate;
struct bufferevent;
struct event_base;

/* Upstream gates: called once, from an event of the gate's own (never from inside
 * evhttp), after the stream found an invalid answer. */
typedef void gate_error_fn(void *arg);

struct gate *gate_new(struct event_base *base, enum http1_stream_kind kind,
                      const struct http1_limits *limits);

/* Upstream gates: who hears of an invalid answer (fn NULL: nobody, e.g. while idle). */
void gate_on_error(struct gate *g, gate_error_fn *fn, void *arg);

/* Start checking `bev`'s input. Returns 0, -1 on failure. */
int gate_attach(struct gate *g, struct bufferevent *bev);

/* Detach and free. NULL ok. */
void gate_free(struct gate *g);

/* Upstream gates: a request is about to be sent; head: it is a HEAD request. */
void gate_expect_response(struct gate *g, int head);

/* Upstream gates: the last answer ended exactly where its framing said, nothing else
 * arrived, and it was not one after which the connection must not be reused (HEAD,
 * 204, 304, close-delimited). Only such connections go back to the pool. */
int gate_clean(const struct gate *g);

/* The error found, HTTP1_OK when none. */
enum http1_error gate_error(const struct gate *g);

/* Client gates: the number (1 = first on the connection) of the request refused, 0
 * when none was. */
uint64_t gate_refused_message(const struct gate *g);

/* Client gates: after each input run, on_input(arg) is told (the front end follows
 * whether a head is pending, for its header deadline). */
void gate_on_input(struct gate *g, void (*on_input)(void *arg), void *arg);

/* Client gates: a head is in progress (some of it arrived, not all). */
int gate_head_pending(const struct gate *g);

/* Client gates: stop the connection here for a reason of the caller's: what already
 * went through stays, a stand-in head follows it, nothing more is read. evhttp is
 * prodded to read the stand-in now when it is waiting for a request (else it reads it
 * after the answer it is busy with). Returns the stand-in's request number (the front
 * end answers that request with its reason), 0 when the gate had already stopped. The
 * front end's request callback may run before this returns. */
uint64_t gate_cut(struct gate *g);

/* The request number of the stand-in gate_cut put in, 0 when none. Set before evhttp
 * can read the stand-in. */
uint64_t gate_cut_message(const struct gate *g);

#endif
