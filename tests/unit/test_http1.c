/*
 * Unit tests for proxy/http1: strict heads and the stream that decides what evhttp sees.
 *
 * Stream tests run each input through the stream in every split into two pieces (and in
 * one-byte pieces), apply the ops, and check that the output does not depend on where
 * the input was split: the framing must never depend on how TCP cut the bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proxy/http1.h"

static enum http1_error req(const char *s, struct http1_request *r)
{
    struct http1_scan sc = {0};
    size_t end = http1_head_end(s, strlen(s), &sc);
    if (end == 0)
        return HTTP1_E_COUNT; /* incomplete */
    return http1_parse_request(s, end, r);
}

static enum http1_error resp(const char *s, struct http1_response *r)
{
    struct http1_scan sc = {0};
    size_t end = http1_head_end(s, strlen(s), &sc);
    if (end == 0)
        return HTTP1_E_COUNT;
    return http1_parse_response(s, end, r);
}

static void test_valid_requests(void **state)
{
    struct http1_request r;
    (void)state;
    assert_int_equal(req("GET /a?b=c HTTP/1.1\r\nHost: h\r\n\r\n", &r), HTTP1_OK);
    assert_int_equal(r.method, HTTP1_GET);
    assert_int_equal(r.minor_version, 1);
    assert_int_equal(r.framing, HTTP1_BODY_NONE);
    assert_int_equal(r.target.len, 6);
    assert_int_equal(req("POST /x HTTP/1.1\r\nHost: h:8080\r\nContent-Length: 5\r\n\r\n", &r),
                     HTTP1_OK);
    assert_int_equal(r.framing, HTTP1_BODY_LENGTH);
    assert_int_equal(r.content_length, 5);
    assert_int_equal(req("POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked \r\n\r\n", &r),
                     HTTP1_OK);
    assert_int_equal(r.framing, HTTP1_BODY_CHUNKED);
    assert_int_equal(req("GET / HTTP/1.0\r\n\r\n", &r), HTTP1_OK); /* 1.0: Host optional */
    assert_int_equal(req("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", &r), HTTP1_OK);
    assert_int_equal(r.start, 4);
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: \r\nX-E:\r\nX-U: caf\xc3\xa9\r\n\r\n", &r),
                     HTTP1_OK);
    assert_int_equal(req("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", &r), HTTP1_OK);
    assert_int_equal(req("GET http://a.example:81/p?q HTTP/1.1\r\nHost: b\r\n\r\n", &r), HTTP1_OK);
    assert_true(r.absolute_form);
    assert_int_equal(r.authority.len, strlen("a.example:81"));
    assert_int_equal(req("GET https://a.example?q HTTP/1.1\r\nHost: b\r\n\r\n", &r), HTTP1_OK);
    assert_int_equal(req("OPTIONS /x HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n\r\n", &r),
                     HTTP1_OK);
}

static void test_bad_requests(void **state)
{
    static const struct {
        const char *in;
        enum http1_error want;
    } cases[] = {
        {"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", HTTP1_E_FIELD_NAME},
        {"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", HTTP1_E_FIELD_NAME},
        {"GET /a HTTP/1.1\r\nHost: a\r\nX Bad: 1\r\n\r\n", HTTP1_E_FIELD_NAME},
        {"GET /a HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", HTTP1_E_FIELD_NAME},
        {"GET /a HTTP/1.1\r\nHost: a\r\nX@Y: 1\r\n\r\n", HTTP1_E_FIELD_NAME},
        {"GET /a HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", HTTP1_E_FIELD_NAME},
        {"GET /a HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n", HTTP1_E_FIELD_VALUE},
        {"GET /a HTTP/1.1\r\nHost: a\r\nX: a\x7fz\r\n\r\n", HTTP1_E_FIELD_VALUE},
        {"GET /a HTTP/1.1\r\nHost: a\r\nX: a\rz\r\n\r\n", HTTP1_E_FIELD_VALUE},
        {"GET /a HTTP/1.1\r\nHost: a\r\nX: 1\r\n  folded\r\n\r\n", HTTP1_E_OBS_FOLD},
        {"GET /a HTTP/1.1\nHost: a\n\n", HTTP1_E_LINE_ENDING},
        {"GET /a HTTP/1.1\r\nHost: a\n\r\n", HTTP1_E_LINE_ENDING},
        {"GET /api/crt\rX-Injected: yes HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_E_LINE_ENDING},
        {"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_E_TARGET},
        {"GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_E_TARGET},
        {"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_E_TARGET},
        {"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_E_REQUEST_LINE},
        {"GET  /a HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_E_REQUEST_LINE},
        {"GET /a HTTP/1.1 \r\nHost: a\r\n\r\n", HTTP1_E_REQUEST_LINE},
        {"GET /a\r\nHost: a\r\n\r\n", HTTP1_E_REQUEST_LINE},
        {"G(T /a HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_E_METHOD},
        {"BREW /a HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_E_METHOD_NOT_ALLOWED},
        {"get /a HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_E_METHOD_NOT_ALLOWED},
        {"GET /a HTTP/0.9\r\nHost: a\r\n\r\n", HTTP1_E_VERSION},
        {"GET /a HTTP/1.2\r\nHost: a\r\n\r\n", HTTP1_E_VERSION},
        {"GET /a HTTP/1.10\r\nHost: a\r\n\r\n", HTTP1_E_VERSION},
        {"GET /a http/1.1\r\nHost: a\r\n\r\n", HTTP1_E_VERSION},
        {"GET /a HTTP/1.1\r\n\r\n", HTTP1_E_HOST},
        {"GET /a HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", HTTP1_E_HOST},
        {"GET /a HTTP/1.1\r\nHost: a b\r\n\r\n", HTTP1_E_HOST_VALUE},
        {"GET /a HTTP/1.1\r\nHost: a:99999\r\n\r\n", HTTP1_E_HOST_VALUE},
        {"GET /a HTTP/1.1\r\nHost: a/b\r\n\r\n", HTTP1_E_HOST_VALUE},
        {"GET http://u@a/x HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_E_TARGET},
        {"GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_E_TARGET},
        {"GET * HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_E_TARGET},
        {"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_E_HOST_VALUE},
        {"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", HTTP1_E_CONTENT_LENGTH},
        {"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", HTTP1_E_CONTENT_LENGTH},
        {"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", HTTP1_E_CONTENT_LENGTH},
        {"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", HTTP1_E_CONTENT_LENGTH},
        {"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
         HTTP1_E_CONTENT_LENGTH},
        {"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
         HTTP1_E_FRAMING},
        {"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
         HTTP1_E_TRANSFER_ENCODING},
        {"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
         "chunked\r\n\r\n",
         HTTP1_E_TRANSFER_ENCODING},
        {"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP1_E_TRANSFER_ENCODING},
        {"HEAD /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", HTTP1_E_BODY_NOT_ALLOWED},
        {"GET /a HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", HTTP1_E_EXPECT},
        {"\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n", HTTP1_E_LINE_ENDING},
    };
    size_t i;
    struct http1_request r;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        enum http1_error got = req(cases[i].in, &r);
        if (got != cases[i].want)
            fail_msg("case %zu %s: got %d (%s), want %d (%s)", i, cases[i].in, got,
                     http1_error_text(got), cases[i].want, http1_error_text(cases[i].want));
    }
}

static void test_responses(void **state)
{
    static const struct {
        const char *in;
        size_t len;
        enum http1_error want;
        int status;
        enum http1_framing framing;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
         sizeof("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n") - 1, HTTP1_OK, 200,
         HTTP1_BODY_LENGTH},
        {"HTTP/1.1 200\r\nContent-Length: 5\r\n\r\n",
         sizeof("HTTP/1.1 200\r\nContent-Length: 5\r\n\r\n") - 1, HTTP1_OK, 200, HTTP1_BODY_LENGTH},
        {"HTTP/1.1 204 \r\n\r\n", sizeof("HTTP/1.1 204 \r\n\r\n") - 1, HTTP1_OK, 204,
         HTTP1_BODY_CLOSE},
        {"HTTP/1.0 200 OK\r\n\r\n", sizeof("HTTP/1.0 200 OK\r\n\r\n") - 1, HTTP1_OK, 200,
         HTTP1_BODY_CLOSE},
        {"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
         sizeof("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n") - 1, HTTP1_OK, 103,
         HTTP1_BODY_CLOSE},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
         sizeof("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") - 1, HTTP1_OK, 200,
         HTTP1_BODY_CHUNKED},
        {"HTTP/1.1 999999999999\r\n\r\n", sizeof("HTTP/1.1 999999999999\r\n\r\n") - 1,
         HTTP1_E_STATUS_LINE, 0, 0},
        {"HTTP/1.1 600 X\r\n\r\n", sizeof("HTTP/1.1 600 X\r\n\r\n") - 1, HTTP1_E_STATUS_LINE, 0, 0},
        {"HTTP/1.1 099 X\r\n\r\n", sizeof("HTTP/1.1 099 X\r\n\r\n") - 1, HTTP1_E_STATUS_LINE, 0, 0},
        {"HTTP/1.1 2000 X\r\n\r\n", sizeof("HTTP/1.1 2000 X\r\n\r\n") - 1, HTTP1_E_STATUS_LINE, 0,
         0},
        {"HTTP/1.1 20 X\r\n\r\n", sizeof("HTTP/1.1 20 X\r\n\r\n") - 1, HTTP1_E_STATUS_LINE, 0, 0},
        {"HTTP/1.1 abc\r\n\r\n", sizeof("HTTP/1.1 abc\r\n\r\n") - 1, HTTP1_E_STATUS_LINE, 0, 0},
        {"HTTP/1.1\r\n\r\n", sizeof("HTTP/1.1\r\n\r\n") - 1, HTTP1_E_STATUS_LINE, 0, 0},
        {"HTTP/2.0 200 OK\r\n\r\n", sizeof("HTTP/2.0 200 OK\r\n\r\n") - 1, HTTP1_E_STATUS_LINE, 0,
         0},
        {"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
         sizeof("HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n") - 1, HTTP1_E_FIELD_NAME, 0, 0},
        {"HTTP/1.1 200 OK\r\nX-Foo : y\r\n\r\n", sizeof("HTTP/1.1 200 OK\r\nX-Foo : y\r\n\r\n") - 1,
         HTTP1_E_FIELD_NAME, 0, 0},
        {"HTTP/1.1 200 OK\r\nX: a\x00z\r\n\r\n", sizeof("HTTP/1.1 200 OK\r\nX: a\x00z\r\n\r\n") - 1,
         HTTP1_E_FIELD_VALUE, 0, 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
         sizeof("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n") - 1,
         HTTP1_E_CONTENT_LENGTH, 0, 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n",
         sizeof("HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n") - 1, HTTP1_E_CONTENT_LENGTH, 0, 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
         sizeof("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n") - 1,
         HTTP1_E_CONTENT_LENGTH, 0, 0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
         sizeof("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n") - 1,
         HTTP1_E_FRAMING, 0, 0},
        {"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
         sizeof("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") - 1,
         HTTP1_E_TRANSFER_ENCODING, 0, 0},
        {"HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n",
         sizeof("HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n") - 1, HTTP1_E_OBS_FOLD, 0, 0},
    };
    size_t i;
    struct http1_response r;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *in = cases[i].in;
        size_t len = cases[i].len; /* one value holds a NUL */
        enum http1_error got;
        {
            struct http1_scan sc = {0};
            size_t end = http1_head_end(in, len, &sc);
            got = end ? http1_parse_response(in, end, &r) : HTTP1_E_COUNT;
        }
        if (got != cases[i].want)
            fail_msg("case %zu %s: got %d (%s), want %d", i, in, got, http1_error_text(got),
                     cases[i].want);
        if (got == HTTP1_OK) {
            assert_int_equal(r.status, cases[i].status);
            assert_int_equal(r.framing, cases[i].framing);
        }
    }
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n", &r), HTTP1_OK);
    assert_true(r.connection_not_close);
    assert_int_equal(resp("HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n", &r), HTTP1_OK);
    assert_false(r.connection_not_close);
}

/* ---- stream ---------------------------------------------------------------------- */

struct out {
    char buf[65536];
    size_t len;
};

/* Feed `in` in pieces of `piece` bytes (0: two pieces split at `split`), applying ops. */
static void run(struct http1_stream *s, const char *in, size_t len, size_t piece, size_t split,
                struct out *o, int expect_each)
{
    size_t off = 0;
    o->len = 0;
    while (off < len) {
        size_t n = piece ? piece : (off < split ? split - off : len - off);
        size_t done = 0;
        if (n > len - off)
            n = len - off;
        while (done < n) {
            struct http1_op ops[HTTP1_MAX_OPS];
            size_t nops = 0, used, k, src = off + done;
            used = http1_stream_feed(s, in + src, n - done, ops, &nops);
            assert_true(used > 0 || nops > 0);
            for (k = 0; k < nops; k++) {
                switch (ops[k].kind) {
                case HTTP1_PASS:
                    memcpy(o->buf + o->len, in + src, ops[k].len);
                    o->len += ops[k].len;
                    src += ops[k].len;
                    break;
                case HTTP1_DROP:
                    src += ops[k].len;
                    break;
                case HTTP1_EMIT:
                    memcpy(o->buf + o->len, ops[k].data, ops[k].len);
                    o->len += ops[k].len;
                    break;
                }
            }
            assert_int_equal(src, off + done + used);
            done += used;
        }
        off += n;
        if (expect_each)
            http1_stream_expect_response(s, 0);
    }
}

static const struct http1_limits lim = {.max_head = 8192, .max_body = 1 << 20};

/* Every two-piece split and one-byte pieces give the same output and verdict. */
static void check_stream(enum http1_stream_kind kind, const char *in, size_t len, const char *want,
                         enum http1_error want_err, int head_request)
{
    struct out *o = malloc(sizeof(*o));
    size_t split;

    for (split = 0; split <= len + 1; split++) {
        struct http1_stream s;
        http1_stream_init(&s, kind, &lim);
        if (kind == HTTP1_STREAM_RESPONSES)
            http1_stream_expect_response(&s, head_request);
        if (split == len + 1)
            run(&s, in, len, 1, 0, o, 0);
        else
            run(&s, in, len, 0, split, o, 0);
        if (o->len != strlen(want) || memcmp(o->buf, want, o->len) != 0)
            fail_msg("split %zu: got [%.*s] want [%s]", split, (int)o->len, o->buf, want);
        assert_int_equal(s.error, want_err);
        http1_stream_deinit(&s);
    }
    free(o);
}

#define S(x) x, sizeof(x) - 1

static void test_stream_requests(void **state)
{
    (void)state;
    check_stream(HTTP1_STREAM_REQUESTS, S("GET /a HTTP/1.1\r\nHost: h\r\n\r\n"),
                 "GET /a HTTP/1.1\r\nHost: h\r\n\r\n", HTTP1_OK, 0);
    /* pipelined, with a Content-Length body and leading empty lines */
    check_stream(HTTP1_STREAM_REQUESTS,
                 S("\r\nPOST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                   "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"),
                 "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                 "GET /b HTTP/1.1\r\nHost: h\r\n\r\n",
                 HTTP1_OK, 0);
    /* chunked: extensions and trailers go, sizes become bare hex */
    check_stream(HTTP1_STREAM_REQUESTS,
                 S("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "3;ext=1\r\nabc\r\n0002 ; a=\"b\"\r\nde\r\n0\r\nX-T: 1\r\n\r\n"),
                 "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                 HTTP1_OK, 0);
    /* the smuggling reproducer: refused, replaced by the stand-in, the rest dropped */
    check_stream(HTTP1_STREAM_REQUESTS,
                 S("POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello"
                   "GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"),
                 http1_standin_request, HTTP1_E_FIELD_NAME, 0);
    /* a valid request, then an invalid one */
    check_stream(HTTP1_STREAM_REQUESTS,
                 S("GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n\r\n"),
                 "GET /a HTTP/1.1\r\nHost: h\r\n\r\n" /**/
                 "GET / HTTP/1.1\r\nHost: sluice.invalid\r\nConnection: close\r\n\r\n",
                 HTTP1_E_HOST, 0);
    /* a bad chunk ends the body where it was: the front end answers the error */
    check_stream(HTTP1_STREAM_REQUESTS,
                 S("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "3\r\nabc\r\n0x3\r\nabc\r\n0\r\n\r\n"),
                 "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "3\r\nabc\r\n0\r\n\r\n",
                 HTTP1_E_CHUNK, 0);
    check_stream(HTTP1_STREAM_REQUESTS,
                 S("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "3\r\nabcdef\r\n0\r\n\r\n"),
                 "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "3\r\nabc\r\n0\r\n\r\n",
                 HTTP1_E_CHUNK, 0);
    /* absolute-form: origin-form line, the authority as Host */
    check_stream(
        HTTP1_STREAM_REQUESTS,
        S("GET http://internal.example/secret/x?y HTTP/1.1\r\nHost: other\r\nA: b\r\n\r\n"),
        "GET /secret/x?y HTTP/1.1\r\nA: b\r\nHost: internal.example\r\n\r\n", HTTP1_OK, 0);
}

static void test_stream_responses(void **state)
{
    (void)state;
    /* interim answers are skipped */
    check_stream(HTTP1_STREAM_RESPONSES,
                 S("HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
                   "HTTP/1.1 100 Continue\r\n\r\n"
                   "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
                 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", HTTP1_OK, 0);
    /* bytes after the end are dropped */
    check_stream(HTTP1_STREAM_RESPONSES,
                 S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\n\r\n"),
                 "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", HTTP1_OK, 0);
    check_stream(HTTP1_STREAM_RESPONSES, S("HTTP/1.1 204 No Content\r\n\r\nbody"),
                 "HTTP/1.1 204 No Content\r\n\r\n", HTTP1_OK, 0);
    check_stream(HTTP1_STREAM_RESPONSES, S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
                 "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", HTTP1_OK, 1);
    check_stream(HTTP1_STREAM_RESPONSES, S("HTTP/1.1 101 Switching Protocols\r\n\r\n"), "",
                 HTTP1_E_UPGRADE, 0);
    check_stream(HTTP1_STREAM_RESPONSES,
                 S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "3;x=y\r\nabc\r\n0\r\n\r\nEXTRA"),
                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                 HTTP1_OK, 0);
    check_stream(HTTP1_STREAM_RESPONSES,
                 S("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nX: y\r\n\r\nuntil close"),
                 "HTTP/1.1 200 OK\r\nX: y\r\nConnection: close\r\n\r\nuntil close", HTTP1_OK, 0);
    check_stream(HTTP1_STREAM_RESPONSES,
                 S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n"),
                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP1_E_CHUNK, 0);
}

static void test_stream_limits(void **state)
{
    struct http1_stream s;
    struct http1_limits small = {.max_head = 64, .max_body = 10};
    struct http1_op ops[HTTP1_MAX_OPS];
    size_t nops = 0;
    char big[200];

    (void)state;
    memset(big, 'a', sizeof(big));
    http1_stream_init(&s, HTTP1_STREAM_REQUESTS, &small);
    http1_stream_feed(&s, big, sizeof(big), ops, &nops);
    assert_int_equal(s.error, HTTP1_E_HEAD_TOO_LARGE);
    assert_int_equal(s.error_message, 1);
    http1_stream_deinit(&s);

    http1_stream_init(&s, HTTP1_STREAM_REQUESTS, &small);
    nops = 0;
    {
        const char *r = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n";
        http1_stream_feed(&s, r, strlen(r), ops, &nops);
    }
    assert_int_equal(s.error, HTTP1_E_BODY_TOO_LARGE);
    http1_stream_deinit(&s);

    http1_stream_init(&s, HTTP1_STREAM_REQUESTS, &small);
    nops = 0;
    {
        const char *r = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "8\r\n12345678\r\n8\r\n";
        http1_stream_feed(&s, r, strlen(r), ops, &nops);
        while (s.error == HTTP1_OK && nops < HTTP1_MAX_OPS - 4) {
            size_t used = 0, k;
            for (k = 0; k < nops; k++)
                if (ops[k].kind != HTTP1_EMIT)
                    used += ops[k].len;
            if (used >= strlen(r))
                break;
            http1_stream_feed(&s, r + used, strlen(r) - used, ops, &nops);
        }
    }
    assert_int_equal(s.error, HTTP1_E_BODY_TOO_LARGE);
    assert_int_equal(s.error_message, 1);
    http1_stream_deinit(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_requests),   cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_responses),        cmocka_unit_test(test_stream_requests),
        cmocka_unit_test(test_stream_responses), cmocka_unit_test(test_stream_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
