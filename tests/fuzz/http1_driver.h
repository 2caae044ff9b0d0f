/*
 * tests/fuzz/http1_driver.h: the checks shared by the proxy/http1 stream harnesses
 * (fuzz_http1_request.c, fuzz_http1_response.c).
 *
 * The input is a byte stream as it would arrive on a connection. It is fed through a
 * struct http1_stream twice, once whole and once in pieces whose sizes come from the
 * input itself, applying the ops each time. Checked, besides no crash, leak or UB:
 *   - every input byte is covered by exactly one PASS or DROP, in order;
 *   - the output and the verdict do not depend on how the input was split (TCP may cut
 *     anywhere: the framing must not depend on it);
 *   - the output is canonical: fed again through a fresh stream it passes unchanged,
 *     with no error (what reaches evhttp is always valid HTTP/1.1 in evhttp's shapes).
 */
#ifndef SLUICE_TESTS_FUZZ_HTTP1_DRIVER_H
#define SLUICE_TESTS_FUZZ_HTTP1_DRIVER_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/http1.h"

struct out {
    char *buf;
    size_t len, cap;
    int all_pass; /* every op was a PASS */
};

static void out_add(struct out *o, const char *p, size_t n)
{
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 4096;
        while (cap < o->len + n)
            cap *= 2;
        o->buf = realloc(o->buf, cap);
        if (o->buf == NULL)
            abort();
        o->cap = cap;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
}

/* Feed in[0..len) in pieces: piece i has size sizes[i % nsizes] (0 means the rest). */
static void feed(struct http1_stream *s, const char *in, size_t len, const uint8_t *sizes,
                 size_t nsizes, struct out *o)
{
    size_t off = 0, k = 0;

    o->len = 0;
    o->all_pass = 1;
    while (off < len) {
        size_t n = nsizes ? sizes[k++ % nsizes] : 0;
        size_t end = n == 0 || n > len - off ? len : off + n;
        while (off < end) {
            struct http1_op ops[HTTP1_MAX_OPS];
            size_t nops = 0, src = off, i;
            size_t used = http1_stream_feed(s, in + off, end - off, ops, &nops);
            if (used == 0 && nops == 0)
                abort(); /* no progress */
            for (i = 0; i < nops; i++) {
                if (ops[i].kind != HTTP1_PASS)
                    o->all_pass = 0;
                if (ops[i].kind == HTTP1_EMIT) {
                    out_add(o, ops[i].data, ops[i].len);
                    continue;
                }
                if (ops[i].kind == HTTP1_PASS)
                    out_add(o, in + src, ops[i].len);
                src += ops[i].len;
            }
            if (src != off + used)
                abort(); /* ops do not cover exactly the bytes consumed */
            off += used;
        }
    }
}

/* kind: requests or responses; head_request: responses to a HEAD request. */
static void http1_fuzz_one(enum http1_stream_kind kind, const uint8_t *data, size_t size)
{
    struct http1_limits lim = {.max_head = 2048, .max_body = 1 << 16};
    struct http1_limits lim2 = {.max_head = 2048 + 512, .max_body = 1 << 16};
    struct http1_stream a, b, c;
    struct out whole = {0}, split = {0}, again = {0};
    const uint8_t *sizes;
    size_t nsizes;
    int head_request = 0;

    if (size < 2)
        return;
    /* the first byte: how many piece sizes follow (and, for responses, HEAD or not) */
    nsizes = (data[0] & 0x07) + 1;
    head_request = (data[0] & 0x80) != 0;
    if (size < 1 + nsizes)
        return;
    sizes = data + 1;
    data += 1 + nsizes;
    size -= 1 + nsizes;

    http1_stream_init(&a, kind, &lim);
    http1_stream_init(&b, kind, &lim);
    if (kind == HTTP1_STREAM_RESPONSES) {
        http1_stream_expect_response(&a, head_request);
        http1_stream_expect_response(&b, head_request);
    }
    feed(&a, (const char *)data, size, NULL, 0, &whole);
    feed(&b, (const char *)data, size, sizes, nsizes, &split);
    if (whole.len != split.len || (whole.len && memcmp(whole.buf, split.buf, whole.len) != 0) ||
        a.error != b.error || a.messages != b.messages || a.error_message != b.error_message)
        abort(); /* the verdict depends on where the input was cut */

    /* What reaches evhttp is canonical: a fresh stream passes it through unchanged. The
     * limit is a little higher: a rewritten head (absolute-form) may grow a little. */
    http1_stream_init(&c, kind, &lim2);
    if (kind == HTTP1_STREAM_RESPONSES)
        http1_stream_expect_response(&c, head_request);
    feed(&c, whole.buf ? whole.buf : "", whole.len, NULL, 0, &again);
    if (c.error != HTTP1_OK || !again.all_pass || again.len != whole.len ||
        (whole.len && memcmp(again.buf, whole.buf, whole.len) != 0))
        abort();

    http1_stream_deinit(&a);
    http1_stream_deinit(&b);
    http1_stream_deinit(&c);
    free(whole.buf);
    free(split.buf);
    free(again.buf);
}

#endif
