/*
 * proxy/gate: runs proxy/http1's stream over a connection's input. See gate.h.
 *
 * How the input buffer is rewritten. When the callback runs, the buffer holds
 *   [ bytes already let through, not yet read by evhttp ][ n_added new bytes ]
 * The stream looks at the new bytes one contiguous segment at a time. As long as it
 * PASSes everything (the common case: whole heads and bodies in one read), the buffer
 * is left alone: no copy, no move. At the first op that is not a PASS, the bytes before
 * that point move to a side buffer (chains move, nothing is copied but a split chain's
 * part), each op then moves (PASS), drains (DROP) or adds (EMIT) at the front, and at
 * the end the side buffer becomes the input again. Our own changes to the buffer call
 * the callback again; `busy` makes those calls return at once.
 */
#include "proxy/gate.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

struct gate {
    struct http1_stream stream;
    struct bufferevent *bev;      /* the bufferevent it is attached to */
    struct evbuffer *input;       /* its input */
    struct evbuffer_cb_entry *cb; /* our callback on it */
    struct evbuffer *side;        /* scratch for rewrites, empty between calls */
    struct event *error_ev;       /* upstream gates: reports an error from the loop */
    gate_error_fn *on_error;
    void *arg;
    void (*on_input)(void *arg); /* client gates: after every input run */
    void *input_arg;
    int busy;             /* inside our own rewrite: ignore the callbacks it causes */
    uint64_t cut_message; /* the stand-in gate_cut put in (its request number), or 0 */
    int reported;         /* on_error has been scheduled */
};

static void error_ev_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gate *g = arg;

    if (g->on_error != NULL)
        g->on_error(g->arg);
}

/* Apply ops to the front of `in` (the segment fed starts there), appending to `out`. */
static void apply(struct evbuffer *in, struct evbuffer *out, const struct http1_op *ops,
                  size_t nops)
{
    size_t i;

    for (i = 0; i < nops; i++) {
        switch (ops[i].kind) {
        case HTTP1_PASS:
            evbuffer_remove_buffer(in, out, ops[i].len);
            break;
        case HTTP1_DROP:
            evbuffer_drain(in, ops[i].len);
            break;
        case HTTP1_EMIT:
            evbuffer_add(out, ops[i].data, ops[i].len);
            break;
        }
    }
}

static int all_pass(const struct http1_op *ops, size_t nops)
{
    size_t i;

    for (i = 0; i < nops; i++)
        if (ops[i].kind != HTTP1_PASS)
            return 0;
    return 1;
}

/* The last `raw` bytes of `buf` are new: run the stream over them. */
static void gate_run(struct gate *g, struct evbuffer *buf, size_t raw)
{
    size_t pos = evbuffer_get_length(buf) - raw; /* next new byte, while nothing changed */
    int rewriting = 0;

    while (raw > 0) {
        struct evbuffer_ptr ptr;
        struct evbuffer_iovec v;
        struct http1_op ops[HTTP1_MAX_OPS];
        size_t nops = 0, seg, used;

        if (evbuffer_ptr_set(buf, &ptr, rewriting ? 0 : pos, EVBUFFER_PTR_SET) != 0 ||
            evbuffer_peek(buf, (ev_ssize_t)raw, &ptr, &v, 1) < 1 || v.iov_len == 0)
            break; /* cannot happen: the bytes are there */
        seg = v.iov_len < raw ? v.iov_len : raw;
        used = http1_stream_feed(&g->stream, v.iov_base, seg, ops, &nops);
        if (used == 0 && nops == 0)
            break; /* cannot happen: the stream always takes a byte */
        if (!rewriting) {
            if (all_pass(ops, nops)) {
                pos += used;
                raw -= used;
                continue;
            }
            rewriting = 1;
            /* Most connections never need it: made at the first rewrite, then kept. */
            if (g->side == NULL && (g->side = evbuffer_new()) == NULL) {
                g->stream.error = HTTP1_E_HEAD_TOO_LARGE; /* out of memory: stop here */
                g->stream.phase = HTTP1_PHASE_DEAD;
                evbuffer_drain(buf, evbuffer_get_length(buf));
                return;
            }
            evbuffer_remove_buffer(buf, g->side, pos);
        }
        apply(buf, g->side, ops, nops);
        raw -= used;
    }
    if (rewriting)
        evbuffer_add_buffer(buf, g->side);
}

static void input_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct gate *g = arg;
    size_t raw = info->n_added;

    if (g->busy || raw == 0)
        return;
    if (raw > evbuffer_get_length(buf))
        raw = evbuffer_get_length(buf);
    g->busy = 1;
    gate_run(g, buf, raw);
    g->busy = 0;
    if (g->on_input != NULL)
        g->on_input(g->input_arg);
    if (g->stream.error != HTTP1_OK && g->error_ev != NULL && !g->reported) {
        g->reported = 1;
        event_active(g->error_ev, EV_TIMEOUT, 1);
    }
}

struct gate *gate_new(struct event_base *base, enum http1_stream_kind kind,
                      const struct http1_limits *limits)
{
    struct gate *g = calloc(1, sizeof(*g));

    if (g == NULL)
        return NULL;
    if (http1_stream_init(&g->stream, kind, limits) != 0)
        goto fail;
    if (kind == HTTP1_STREAM_RESPONSES &&
        (g->error_ev = event_new(base, -1, 0, error_ev_cb, g)) == NULL)
        goto fail;
    return g;
fail:
    gate_free(g);
    return NULL;
}

void gate_on_error(struct gate *g, gate_error_fn *fn, void *arg)
{
    g->on_error = fn;
    g->arg = arg;
}

int gate_attach(struct gate *g, struct bufferevent *bev)
{
    g->bev = bev;
    g->input = bufferevent_get_input(bev);
    g->cb = evbuffer_add_cb(g->input, input_cb, g);
    return g->cb != NULL ? 0 : -1;
}

void gate_free(struct gate *g)
{
    if (g == NULL)
        return;
    if (g->cb != NULL)
        evbuffer_remove_cb_entry(g->input, g->cb);
    if (g->error_ev != NULL)
        event_free(g->error_ev);
    if (g->side != NULL)
        evbuffer_free(g->side);
    http1_stream_deinit(&g->stream);
    free(g);
}

void gate_expect_response(struct gate *g, int head)
{
    http1_stream_expect_response(&g->stream, head);
}

int gate_clean(const struct gate *g)
{
    return g->stream.error == HTTP1_OK && !g->stream.dirty && g->stream.phase == HTTP1_PHASE_IDLE;
}

enum http1_error gate_error(const struct gate *g) { return g->stream.error; }

uint64_t gate_refused_message(const struct gate *g)
{
    return g->stream.error != HTTP1_OK ? g->stream.error_message : 0;
}

void gate_on_input(struct gate *g, void (*on_input)(void *arg), void *arg)
{
    g->on_input = on_input;
    g->input_arg = arg;
}

int gate_head_pending(const struct gate *g) { return http1_stream_head_pending(&g->stream); }

uint64_t gate_cut(struct gate *g)
{
    const char *standin;
    size_t len;
    uint64_t n = http1_stream_cut(&g->stream, &standin, &len);

    if (n == 0)
        return 0;
    g->cut_message = n; /* before evhttp may read it: the front end asks during the read */
    g->busy = 1;
    /* A socket bufferevent keeps its input's end frozen outside its own reads: thaw it
     * for the stand-in, and freeze it again as it was. */
    if (evbuffer_add(g->input, standin, len) != 0) {
        evbuffer_unfreeze(g->input, 0);
        evbuffer_add(g->input, standin, len);
        evbuffer_freeze(g->input, 0);
    }
    g->busy = 0;
    /* evhttp reads only when its socket has news: tell it now, if it is waiting for a
     * request at all (reading enabled; while it handles one, it has reading off and
     * reads the stand-in after its answer). */
    if (bufferevent_get_enabled(g->bev) & EV_READ)
        bufferevent_trigger(g->bev, EV_READ, 0);
    return n;
}

uint64_t gate_cut_message(const struct gate *g) { return g->cut_message; }
