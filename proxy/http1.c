/*
 * proxy/http1: strict HTTP/1.1 heads and message framing. See http1.h.
 *
 * Grammar (RFC 9112 unless noted), and what is refused:
 *   request-line = method SP request-target SP HTTP-version CRLF     one SP each, exactly
 *   status-line  = HTTP-version SP 3DIGIT [ SP reason-phrase ] CRLF   100..599
 *   HTTP-version = "HTTP/1.0" / "HTTP/1.1"                           nothing else
 *   field-line   = field-name ":" OWS field-value OWS CRLF           name = 1*tchar, no
 *                  whitespace before ":"; value = VCHAR / obs-text / SP / HTAB inside
 *   line endings: CRLF only (a bare CR or LF anywhere is refused); no obs-fold.
 *   framing: Content-Length = 1*DIGIT, once; Transfer-Encoding = "chunked", once, not
 *   in HTTP/1.0, never with Content-Length.
 *   chunked-body: chunk-size = 1*HEXDIG, optional extension (dropped), CRLF after the
 *   data, trailer fields (checked, dropped).
 *
 * The stream emits only the shapes evhttp parses exactly as we did, so that its view of
 * each message boundary is ours: complete heads (held until the empty line), exact
 * Content-Length bodies, chunk-size lines of bare hex digits, and no trailers.
 */
#include "proxy/http1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- character classes ------------------------------------------------------------ */

enum {
    C_TCHAR = 1,  /* token character (RFC 9110 5.6.2) */
    C_VCHAR = 2,  /* visible ASCII 0x21..0x7e */
    C_OBS = 4,    /* obs-text 0x80..0xff */
    C_HEX = 8,    /* HEXDIG */
    C_HOST = 16,  /* reg-name: unreserved / sub-delims / "%" (RFC 3986) */
    C_DIGIT = 32, /* DIGIT */
};

static uint8_t cls[256];

static void classes_init(void)
{
    static int done;
    const char *p;
    int c;

    if (done)
        return;
    for (c = 0x21; c <= 0x7e; c++)
        cls[c] |= C_VCHAR;
    for (c = 0x80; c <= 0xff; c++)
        cls[c] |= C_OBS;
    for (c = '0'; c <= '9'; c++)
        cls[c] |= C_TCHAR | C_HEX | C_HOST | C_DIGIT;
    for (c = 'a'; c <= 'z'; c++)
        cls[c] |= C_TCHAR | C_HOST;
    for (c = 'A'; c <= 'Z'; c++)
        cls[c] |= C_TCHAR | C_HOST;
    for (c = 'a'; c <= 'f'; c++)
        cls[c] |= C_HEX;
    for (c = 'A'; c <= 'F'; c++)
        cls[c] |= C_HEX;
    for (p = "!#$%&'*+-.^_`|~"; *p; p++)
        cls[(unsigned char)*p] |= C_TCHAR;
    for (p = "-._~!$&'()*+,;=%"; *p; p++)
        cls[(unsigned char)*p] |= C_HOST;
    done = 1;
}

#define IS(c, k) (cls[(unsigned char)(c)] & (k))

static int is_value_char(unsigned char c)
{
    return c == ' ' || c == '\t' || IS(c, C_VCHAR | C_OBS);
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    return (c | 0x20) - 'a' + 10;
}

/* ---- errors ------------------------------------------------------------------------- */

static const struct {
    int status;
    const char *reason, *text;
} errors[HTTP1_E_COUNT] = {
    [HTTP1_OK] = {200, "ok", "valid"},
    [HTTP1_E_LINE_ENDING] = {400, "bad_request", "bare CR or LF (lines must end with CRLF)"},
    [HTTP1_E_REQUEST_LINE] = {400, "bad_request", "invalid request line"},
    [HTTP1_E_METHOD] = {400, "bad_request", "method is not a token"},
    [HTTP1_E_METHOD_NOT_ALLOWED] = {405, "method_not_allowed", "method not allowed"},
    [HTTP1_E_TARGET] = {400, "bad_request", "invalid request target"},
    [HTTP1_E_VERSION] = {400, "bad_request", "HTTP version is not HTTP/1.0 or HTTP/1.1"},
    [HTTP1_E_STATUS_LINE] = {502, "upstream_invalid", "invalid status line"},
    [HTTP1_E_UPGRADE] = {502, "upstream_invalid", "101 Switching Protocols was not asked for"},
    [HTTP1_E_FIELD_NAME] = {400, "bad_request", "invalid field name"},
    [HTTP1_E_FIELD_VALUE] = {400, "bad_request", "invalid character in a field value"},
    [HTTP1_E_OBS_FOLD] = {400, "bad_request", "obsolete line folding"},
    [HTTP1_E_TOO_MANY_FIELDS] = {431, "header_too_large", "too many header fields"},
    [HTTP1_E_HOST] = {400, "bad_request", "HTTP/1.1 needs exactly one Host"},
    [HTTP1_E_HOST_VALUE] = {400, "bad_request", "invalid host"},
    [HTTP1_E_CONTENT_LENGTH] = {400, "bad_request", "invalid or repeated Content-Length"},
    [HTTP1_E_TRANSFER_ENCODING] = {400, "bad_request", "unsupported Transfer-Encoding"},
    [HTTP1_E_FRAMING] = {400, "bad_request", "Content-Length with Transfer-Encoding"},
    [HTTP1_E_BODY_NOT_ALLOWED] = {400, "bad_request", "a HEAD request with a body"},
    [HTTP1_E_EXPECT] = {417, "expectation_failed", "unsupported Expect"},
    [HTTP1_E_HEAD_TOO_LARGE] = {431, "header_too_large", "header section too large"},
    [HTTP1_E_BODY_TOO_LARGE] = {413, "body_too_large", "body too large"},
    [HTTP1_E_CHUNK] = {400, "bad_request", "invalid chunked framing"},
    [HTTP1_E_TRAILER] = {400, "bad_request", "invalid trailer section"},
};

int http1_error_status(enum http1_error e) { return e < HTTP1_E_COUNT ? errors[e].status : 400; }
const char *http1_error_reason(enum http1_error e)
{
    return e < HTTP1_E_COUNT ? errors[e].reason : "bad_request";
}
const char *http1_error_text(enum http1_error e)
{
    return e < HTTP1_E_COUNT ? errors[e].text : "invalid";
}

/* ---- heads -------------------------------------------------------------------------- */

size_t http1_head_end(const char *buf, size_t len, struct http1_scan *sc)
{
    size_t i;

    for (i = sc->pos; i < len; i++) {
        char c = buf[i];
        if (c == '\n') {
            if (sc->line_has)
                sc->content = 1;
            else if (sc->content) {
                sc->pos = (uint32_t)(i + 1);
                return i + 1;
            }
            sc->line_has = 0;
        } else if (c != '\r') {
            sc->line_has = 1;
        }
    }
    sc->pos = (uint32_t)len;
    return 0;
}

static int name_is(const char *p, size_t n, const char *lower)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (lower[i] == '\0' || (p[i] | 0x20) != lower[i])
            return 0;
    return lower[n] == '\0';
}

/* Case-insensitive whole-value compare. */
static int value_is(const char *p, size_t n, const char *lower) { return name_is(p, n, lower); }

/* 1*DIGIT, saturating at UINT64_MAX. -1 when not digits. */
static int parse_digits(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i;

    if (n == 0)
        return -1;
    for (i = 0; i < n; i++) {
        unsigned d;
        if (!IS(p[i], C_DIGIT))
            return -1;
        d = (unsigned)(p[i] - '0');
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
    }
    *out = v;
    return 0;
}

/* host [":" port] with host = reg-name / IPv4 / "[" IPv6 "]" (RFC 3986 3.2.2). Empty
 * allowed only when `empty_ok` (a Host field for a target without authority). */
static int valid_authority(const char *p, size_t n, int empty_ok)
{
    size_t i = 0, host_end;

    if (n == 0)
        return empty_ok;
    if (p[0] == '[') {
        for (i = 1; i < n && p[i] != ']'; i++)
            if (!IS(p[i], C_HEX) && p[i] != ':' && p[i] != '.')
                return 0;
        if (i >= n || i == 1)
            return 0;
        i++;
    } else {
        for (; i < n && p[i] != ':'; i++) {
            if (!IS(p[i], C_HOST))
                return 0;
            if (p[i] == '%' && (i + 2 >= n || !IS(p[i + 1], C_HEX) || !IS(p[i + 2], C_HEX)))
                return 0;
        }
        if (i == 0)
            return 0;
    }
    host_end = i;
    if (host_end == n)
        return 1;
    if (p[host_end] != ':')
        return 0;
    /* port = *DIGIT; empty allowed by RFC 3986, bounded to 65535 here */
    {
        uint64_t port = 0;
        if (host_end + 1 == n)
            return 1;
        if (n - host_end - 1 > 5 || parse_digits(p + host_end + 1, n - host_end - 1, &port) != 0)
            return 0;
        return port <= 65535;
    }
}

/* What the field lines of a head say, common to requests and responses. */
struct fields {
    uint32_t count;
    uint8_t host_count, cl_count, te_count;
    uint8_t te_chunked;           /* the one Transfer-Encoding is exactly "chunked" */
    uint8_t expect_bad;           /* an Expect other than 100-continue */
    uint8_t connection_seen;      /* a Connection field was seen */
    uint8_t connection_not_close; /* the first Connection field is not exactly "close" */
    struct http1_span host;
    uint64_t content_length;
    enum http1_error cl_error;
};

/* Check the field lines in buf[p..end) (end is just past the final empty line) and
 * collect what framing needs. */
static enum http1_error scan_fields(const char *buf, size_t p, size_t end, struct fields *f)
{
    memset(f, 0, sizeof(*f));
    for (;;) {
        size_t name_end, v, vend, line_end;

        if (p + 2 > end)
            return HTTP1_E_LINE_ENDING;
        if (buf[p] == '\r') { /* the empty line */
            if (buf[p + 1] != '\n' || p + 2 != end)
                return HTTP1_E_LINE_ENDING;
            return HTTP1_OK;
        }
        if (buf[p] == ' ' || buf[p] == '\t')
            return HTTP1_E_OBS_FOLD;
        if (++f->count > HTTP1_MAX_FIELDS)
            return HTTP1_E_TOO_MANY_FIELDS;
        for (name_end = p; name_end < end && IS(buf[name_end], C_TCHAR); name_end++)
            ;
        if (name_end == p || name_end >= end || buf[name_end] != ':') {
            if (name_end < end && (buf[name_end] == '\r' || buf[name_end] == '\n'))
                return buf[name_end] == '\n' ? HTTP1_E_LINE_ENDING : HTTP1_E_FIELD_NAME;
            return HTTP1_E_FIELD_NAME;
        }
        v = name_end + 1;
        for (line_end = v; line_end < end && buf[line_end] != '\r' && buf[line_end] != '\n';
             line_end++)
            if (!is_value_char((unsigned char)buf[line_end]))
                return HTTP1_E_FIELD_VALUE;
        if (line_end + 1 >= end || buf[line_end] != '\r' || buf[line_end + 1] != '\n')
            return line_end < end && buf[line_end] == '\r' && line_end + 1 < end &&
                           buf[line_end + 1] != '\n'
                       ? HTTP1_E_FIELD_VALUE /* a bare CR inside the value */
                       : HTTP1_E_LINE_ENDING;
        while (v < line_end && (buf[v] == ' ' || buf[v] == '\t'))
            v++;
        vend = line_end;
        while (vend > v && (buf[vend - 1] == ' ' || buf[vend - 1] == '\t'))
            vend--;

        {
            const char *name = buf + p, *val = buf + v;
            size_t nlen = name_end - p, vlen = vend - v;
            if (name_is(name, nlen, "host")) {
                if (f->host_count < 255)
                    f->host_count++;
                f->host.off = (uint32_t)v;
                f->host.len = (uint32_t)vlen;
            } else if (name_is(name, nlen, "content-length")) {
                if (f->cl_count < 255)
                    f->cl_count++;
                if (parse_digits(val, vlen, &f->content_length) != 0)
                    f->cl_error = HTTP1_E_CONTENT_LENGTH;
            } else if (name_is(name, nlen, "transfer-encoding")) {
                if (f->te_count < 255)
                    f->te_count++;
                f->te_chunked = value_is(val, vlen, "chunked");
            } else if (name_is(name, nlen, "expect")) {
                if (!value_is(val, vlen, "100-continue"))
                    f->expect_bad = 1;
            } else if (name_is(name, nlen, "connection")) {
                if (!f->connection_seen)
                    f->connection_not_close = !value_is(val, vlen, "close");
                f->connection_seen = 1;
            }
        }
        p = line_end + 2;
    }
}

/* Content-Length / Transfer-Encoding rules shared by both directions. */
static enum http1_error check_framing(const struct fields *f, int minor,
                                      enum http1_framing *framing)
{
    if (f->te_count > 0) {
        if (f->cl_count > 0)
            return HTTP1_E_FRAMING;
        if (f->te_count > 1 || !f->te_chunked || minor == 0)
            return HTTP1_E_TRANSFER_ENCODING;
        *framing = HTTP1_BODY_CHUNKED;
        return HTTP1_OK;
    }
    if (f->cl_count > 1 || f->cl_error)
        return HTTP1_E_CONTENT_LENGTH;
    *framing = f->cl_count ? HTTP1_BODY_LENGTH : HTTP1_BODY_NONE;
    return HTTP1_OK;
}

static const struct {
    const char *name;
    enum http1_method method;
} methods[] = {
    {"GET", HTTP1_GET},     {"HEAD", HTTP1_HEAD},     {"POST", HTTP1_POST},
    {"PUT", HTTP1_PUT},     {"DELETE", HTTP1_DELETE}, {"OPTIONS", HTTP1_OPTIONS},
    {"PATCH", HTTP1_PATCH},
};

static int parse_version(const char *p, size_t n, uint8_t *minor)
{
    if (n != 8 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1'))
        return -1;
    *minor = (uint8_t)(p[7] - '0');
    return 0;
}

/* The request target: origin-form, or absolute-form with an http(s) scheme. */
static enum http1_error parse_target(const char *buf, size_t t, size_t tend,
                                     struct http1_request *r)
{
    size_t i, a;

    for (i = t; i < tend; i++)
        if (!IS(buf[i], C_VCHAR))
            return HTTP1_E_TARGET;
    if (buf[t] == '/') {
        r->target.off = (uint32_t)t;
        r->target.len = (uint32_t)(tend - t);
        return HTTP1_OK;
    }
    if (tend - t > 7 && name_is(buf + t, 7, "http://"))
        a = t + 7;
    else if (tend - t > 8 && name_is(buf + t, 8, "https://"))
        a = t + 8;
    else
        return HTTP1_E_TARGET; /* asterisk-form, authority-form, other schemes */
    for (i = a; i < tend && buf[i] != '/' && buf[i] != '?' && buf[i] != '#'; i++)
        if (buf[i] == '@')
            return HTTP1_E_TARGET; /* userinfo (RFC 9110 4.2.4) */
    if (i < tend && buf[i] == '#')
        return HTTP1_E_TARGET;
    if (!valid_authority(buf + a, i - a, 0))
        return HTTP1_E_HOST_VALUE;
    r->absolute_form = 1;
    r->authority.off = (uint32_t)a;
    r->authority.len = (uint32_t)(i - a);
    r->target.off = (uint32_t)i; /* may be empty or start with '?': "/" is put in front */
    r->target.len = (uint32_t)(tend - i);
    return HTTP1_OK;
}

enum http1_error http1_parse_request(const char *buf, size_t len, struct http1_request *r)
{
    size_t p = 0, m, t, tend, lend;
    struct fields f;
    enum http1_error e;
    size_t i;

    classes_init();
    memset(r, 0, sizeof(*r));
    r->head_len = (uint32_t)len;
    while (p + 1 < len && buf[p] == '\r' && buf[p + 1] == '\n')
        p += 2; /* empty lines before the request line (RFC 9112 2.2) */
    r->start = (uint32_t)p;
    /* request line */
    for (lend = p; lend < len && buf[lend] != '\n'; lend++)
        if (buf[lend] == '\r' && (lend + 1 >= len || buf[lend + 1] != '\n'))
            return HTTP1_E_LINE_ENDING;
    if (lend >= len || lend == p || buf[lend - 1] != '\r')
        return HTTP1_E_LINE_ENDING;
    lend--; /* at the CR */
    for (m = p; m < lend && IS(buf[m], C_TCHAR); m++)
        ;
    if (m == p)
        return buf[p] == ' ' ? HTTP1_E_REQUEST_LINE : HTTP1_E_METHOD;
    if (m >= lend)
        return HTTP1_E_REQUEST_LINE; /* a method alone */
    if (buf[m] != ' ')
        return HTTP1_E_METHOD; /* "G(T": not a token */
    t = m + 1;
    for (tend = t; tend < lend && buf[tend] != ' '; tend++)
        ;
    if (tend == t || tend >= lend)
        return HTTP1_E_REQUEST_LINE;
    if (parse_version(buf + tend + 1, lend - tend - 1, &r->minor_version) != 0) {
        /* a further SP, or no version at all: the shape of the line is wrong */
        for (i = tend + 1; i < lend; i++)
            if (buf[i] == ' ')
                return HTTP1_E_REQUEST_LINE;
        return HTTP1_E_VERSION;
    }
    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strlen(methods[i].name) == m - p && memcmp(methods[i].name, buf + p, m - p) == 0)
            break;
    if (i == sizeof(methods) / sizeof(methods[0]))
        return HTTP1_E_METHOD_NOT_ALLOWED;
    r->method = methods[i].method;
    if ((e = parse_target(buf, t, tend, r)) != HTTP1_OK)
        return e;

    if ((e = scan_fields(buf, lend + 2, len, &f)) != HTTP1_OK)
        return e;
    if (r->minor_version == 1 ? f.host_count != 1 : f.host_count > 1)
        return HTTP1_E_HOST;
    if (f.host_count) {
        if (!valid_authority(buf + f.host.off, f.host.len, 1))
            return HTTP1_E_HOST_VALUE;
        r->has_host = 1;
        r->host = f.host;
    }
    if ((e = check_framing(&f, r->minor_version, &r->framing)) != HTTP1_OK)
        return e;
    r->content_length = f.content_length;
    if (r->method == HTTP1_HEAD &&
        (r->framing == HTTP1_BODY_CHUNKED || (r->framing == HTTP1_BODY_LENGTH && f.content_length)))
        return HTTP1_E_BODY_NOT_ALLOWED;
    if (f.expect_bad)
        return HTTP1_E_EXPECT;
    return HTTP1_OK;
}

enum http1_error http1_parse_response(const char *buf, size_t len, struct http1_response *r)
{
    size_t lend, i;
    struct fields f;
    enum http1_error e;

    classes_init();
    memset(r, 0, sizeof(*r));
    r->head_len = (uint32_t)len;
    for (lend = 0; lend < len && buf[lend] != '\n'; lend++)
        if (buf[lend] == '\r' && (lend + 1 >= len || buf[lend + 1] != '\n'))
            return HTTP1_E_LINE_ENDING;
    if (lend >= len || lend == 0 || buf[lend - 1] != '\r')
        return HTTP1_E_LINE_ENDING;
    lend--;
    /* "HTTP/1.x" SP 3DIGIT, then nothing or SP reason-phrase */
    if (lend < 12 || parse_version(buf, 8, &r->minor_version) != 0 || buf[8] != ' ' ||
        !IS(buf[9], C_DIGIT) || !IS(buf[10], C_DIGIT) || !IS(buf[11], C_DIGIT) ||
        (lend > 12 && buf[12] != ' '))
        return HTTP1_E_STATUS_LINE;
    r->status = (uint16_t)((buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0'));
    if (r->status < 100 || r->status > 599)
        return HTTP1_E_STATUS_LINE;
    for (i = 13; i < lend; i++)
        if (!is_value_char((unsigned char)buf[i]))
            return HTTP1_E_STATUS_LINE;

    if ((e = scan_fields(buf, lend + 2, len, &f)) != HTTP1_OK)
        return e;
    if ((e = check_framing(&f, r->minor_version, &r->framing)) != HTTP1_OK)
        return e;
    if (r->framing == HTTP1_BODY_NONE)
        r->framing = HTTP1_BODY_CLOSE;
    /* evhttp reads a length above INT64_MAX differently: nothing that large is real. */
    if (r->framing == HTTP1_BODY_LENGTH && f.content_length > ((uint64_t)1 << 62))
        return HTTP1_E_CONTENT_LENGTH;
    r->content_length = f.content_length;
    r->connection_not_close = f.connection_seen && f.connection_not_close;
    return HTTP1_OK;
}

/* ---- the stream --------------------------------------------------------------------- */

const char http1_standin_request[] = "GET / HTTP/1.1\r\nHost: sluice.invalid\r\n"
                                     "Connection: close\r\n\r\n";

enum chunk_state {
    CS_LINE,      /* at the start of a chunk-size line */
    CS_DIGITS,    /* inside the size digits (line being rebuilt) */
    CS_EXT,       /* after the digits: BWS and extensions, up to CR */
    CS_SIZE_LF,   /* CR seen, LF expected */
    CS_DATA,      /* chunk data */
    CS_DATA_CRLF, /* the CRLF after the data */
    CS_DATA_LF,   /* its CR dropped at the end of an input: LF expected */
    CS_TRAILER,   /* at the start of a trailer line, or the final empty line */
    CS_TRAILER_NAME,
    CS_TRAILER_VALUE,
    CS_TRAILER_LF,
    CS_LAST_LF, /* the final CR dropped at the end of an input: LF expected */
};

#define CHUNK_LINE_MAX    4096 /* a chunk-size line with its extensions */
#define CHUNK_SIZE_DIGITS 15   /* significant hex digits: sizes below 2^60 */

int http1_stream_init(struct http1_stream *s, enum http1_stream_kind kind,
                      const struct http1_limits *limits)
{
    classes_init();
    memset(s, 0, sizeof(*s));
    s->kind = kind;
    s->limits = *limits;
    s->phase = kind == HTTP1_STREAM_REQUESTS ? HTTP1_PHASE_HEAD : HTTP1_PHASE_IDLE;
    return 0;
}

void http1_stream_deinit(struct http1_stream *s)
{
    free(s->hold);
    s->hold = NULL;
    free(s->rewrite);
    s->rewrite = NULL;
}

static void head_reset(struct http1_stream *s)
{
    s->hold_len = 0;
    memset(&s->scan, 0, sizeof(s->scan));
}

void http1_stream_expect_response(struct http1_stream *s, int head_request)
{
    if (s->kind != HTTP1_STREAM_RESPONSES || s->phase == HTTP1_PHASE_DEAD)
        return;
    s->phase = HTTP1_PHASE_HEAD;
    s->awaiting = 1;
    s->head_request_pending = (uint8_t)(head_request != 0);
    head_reset(s);
}

/* Append an op, merging it with the previous one when both PASS or both DROP. */
static void op(struct http1_op *ops, size_t *n, enum http1_op_kind kind, size_t len,
               const char *data)
{
    if (len == 0)
        return;
    if (kind != HTTP1_EMIT && *n > 0 && ops[*n - 1].kind == kind) {
        ops[*n - 1].len += (uint32_t)len;
        return;
    }
    ops[*n].kind = kind;
    ops[*n].len = (uint32_t)len;
    ops[*n].data = data;
    (*n)++;
}

static int hold_append(struct http1_stream *s, const char *p, size_t n)
{
    if (s->hold_len + n > s->hold_cap) {
        size_t cap = s->hold_cap ? s->hold_cap : 1024;
        char *grown;
        while (cap < s->hold_len + n)
            cap *= 2;
        grown = realloc(s->hold, cap);
        if (grown == NULL)
            return -1;
        s->hold = grown;
        s->hold_cap = (uint32_t)cap;
    }
    memcpy(s->hold + s->hold_len, p, n);
    s->hold_len += (uint32_t)n;
    return 0;
}

/* A message cannot go on: from here everything is dropped. For requests, evhttp is
 * given something that ends the current message so that the front end receives it and
 * answers with the error: a stand-in head in place of a refused head, or the end of a
 * chunked body (its data so far was whole chunks: errors are only found at framing). */
static void fail(struct http1_stream *s, enum http1_error e, int in_head, struct http1_op *ops,
                 size_t *n)
{
    s->error = e;
    s->phase = HTTP1_PHASE_DEAD;
    if (s->kind != HTTP1_STREAM_REQUESTS)
        return;
    if (in_head) {
        s->messages++;
        op(ops, n, HTTP1_EMIT, sizeof(http1_standin_request) - 1, http1_standin_request);
    } else if (s->chunk_state >= CS_TRAILER) {
        op(ops, n, HTTP1_EMIT, 2, "\r\n"); /* the last-chunk line went through already */
    } else if (s->chunk_state == CS_DATA_CRLF || s->chunk_state == CS_DATA_LF) {
        op(ops, n, HTTP1_EMIT, 7, "\r\n0\r\n\r\n"); /* the data's own CRLF first */
    } else {
        op(ops, n, HTTP1_EMIT, 5, "0\r\n\r\n");
    }
    s->error_message = s->messages;
}

/* Copy buf[from..len) to the rewrite buffer, leaving out fields named `skip`, then
 * add "extra" and the final CRLF. `first_line` replaces the start line when not NULL. */
static const char *rewrite_head(struct http1_stream *s, const char *buf, size_t from, size_t len,
                                const char *first_line, size_t first_len, const char *skip,
                                const char *extra_name, const char *extra_val, size_t extra_len,
                                size_t *out_len)
{
    size_t cap = first_len + (len - from) + strlen(extra_name) + extra_len + 8, p = from, o = 0;
    char *w;

    if (cap > s->rewrite_cap) {
        char *grown = realloc(s->rewrite, cap);
        if (grown == NULL)
            return NULL;
        s->rewrite = grown;
        s->rewrite_cap = cap;
    }
    w = s->rewrite;
    memcpy(w, first_line, first_len);
    o = first_len;
    while (p + 2 < len) { /* field lines; the final CRLF is at len-2 */
        size_t e = p, colon;
        while (buf[e] != '\n')
            e++;
        for (colon = p; buf[colon] != ':'; colon++)
            ;
        if (!name_is(buf + p, colon - p, skip)) {
            memcpy(w + o, buf + p, e + 1 - p);
            o += e + 1 - p;
        }
        p = e + 1;
    }
    o += (size_t)sprintf(w + o, "%s: ", extra_name);
    memcpy(w + o, extra_val, extra_len);
    o += extra_len;
    memcpy(w + o, "\r\n\r\n", 4);
    o += 4;
    *out_len = o;
    return w;
}

/* Forward the head buf[0..len): in place (PASS, as it stands in the input) or from the
 * hold buffer (EMIT), skipping `skip` leading bytes. */
static void release_head(struct http1_stream *s, const char *buf, size_t len, size_t skip,
                         int in_place, struct http1_op *ops, size_t *n)
{
    if (in_place) {
        op(ops, n, HTTP1_DROP, skip, NULL);
        op(ops, n, HTTP1_PASS, len - skip, NULL);
    } else {
        op(ops, n, HTTP1_EMIT, len - skip, buf + skip);
    }
}

static void body_start(struct http1_stream *s, enum http1_framing framing, uint64_t length)
{
    head_reset(s);
    switch (framing) {
    case HTTP1_BODY_LENGTH:
        if (length > 0) {
            s->phase = HTTP1_PHASE_LENGTH;
            s->remaining = length;
            return;
        }
        break;
    case HTTP1_BODY_CHUNKED:
        s->phase = HTTP1_PHASE_CHUNKED;
        s->chunk_state = CS_LINE;
        s->body_total = 0;
        return;
    case HTTP1_BODY_CLOSE:
        s->phase = HTTP1_PHASE_CLOSE;
        return;
    case HTTP1_BODY_NONE:
        break;
    }
    s->phase = s->kind == HTTP1_STREAM_REQUESTS ? HTTP1_PHASE_HEAD : HTTP1_PHASE_IDLE;
}

/* A request head is complete in buf[0..len). in_place: it is the next `len` bytes of
 * input (nothing of it dropped yet); else it is the hold buffer (all of it dropped). */
static void request_head(struct http1_stream *s, const char *buf, size_t len, int in_place,
                         struct http1_op *ops, size_t *n)
{
    struct http1_request *r = &s->head.req;
    enum http1_error e = http1_parse_request(buf, len, r);

    if (e == HTTP1_OK && r->framing == HTTP1_BODY_LENGTH && s->limits.max_body &&
        r->content_length > s->limits.max_body)
        e = HTTP1_E_BODY_TOO_LARGE;
    if (e != HTTP1_OK) {
        if (in_place)
            op(ops, n, HTTP1_DROP, len, NULL);
        fail(s, e, 1, ops, n);
        return;
    }
    s->messages++;
    if (r->absolute_form) {
        /* RFC 9112 3.2.2: the target's authority replaces Host; the request line becomes
         * origin-form, so that evhttp and the router see one host, the checked one. */
        const char *method = buf + r->start;
        const char *sp = memchr(method, ' ', len - r->start);
        const char *nl = memchr(method, '\n', len - r->start);
        size_t mlen = (size_t)(sp - method), llen = mlen + r->target.len + 16, wlen = 0;
        int slash = r->target.len == 0 || buf[r->target.off] != '/';
        char *line = malloc(llen);
        const char *w = NULL;
        if (line != NULL) {
            int l = snprintf(line, llen, "%.*s %s%.*s HTTP/1.%d\r\n", (int)mlen, method,
                             slash ? "/" : "", (int)r->target.len, buf + r->target.off,
                             r->minor_version);
            w = rewrite_head(s, buf, (size_t)(nl - buf) + 1, len, line, (size_t)l, "host", "Host",
                             buf + r->authority.off, r->authority.len, &wlen);
            free(line);
        }
        if (in_place)
            op(ops, n, HTTP1_DROP, len, NULL);
        if (w == NULL) {
            fail(s, HTTP1_E_HEAD_TOO_LARGE, 1, ops, n);
            return;
        }
        op(ops, n, HTTP1_EMIT, wlen, w);
    } else {
        release_head(s, buf, len, r->start, in_place, ops, n);
    }
    body_start(s, r->framing, r->content_length);
}

static void response_head(struct http1_stream *s, const char *buf, size_t len, int in_place,
                          struct http1_op *ops, size_t *n)
{
    struct http1_response *r = &s->head.resp;
    enum http1_error e = http1_parse_response(buf, len, r);
    enum http1_framing framing;

    if (e == HTTP1_OK && r->status == 101)
        e = HTTP1_E_UPGRADE;
    if (e != HTTP1_OK) {
        if (in_place)
            op(ops, n, HTTP1_DROP, len, NULL);
        fail(s, e, 1, ops, n);
        return;
    }
    if (r->status < 200) {
        /* An interim answer (100, 102, 103): never the client's final answer, and evhttp
         * would take it for one. Skip it; the final answer follows. */
        if (in_place)
            op(ops, n, HTTP1_DROP, len, NULL);
        head_reset(s);
        return;
    }
    s->messages++;
    s->awaiting = 0;
    framing = r->framing;
    if (s->head_request_pending || r->status == 204 || r->status == 304) {
        framing = HTTP1_BODY_NONE;
        s->dirty = 1; /* a body the upstream may still send anyway would poison the pool */
    } else if (framing == HTTP1_BODY_CLOSE && r->connection_not_close) {
        /* evhttp reads an unframed body as empty when a Connection field other than
         * "close" is present: say "close", which is what the framing means. */
        const char *nl = memchr(buf, '\n', len);
        size_t wlen = 0;
        const char *w =
            rewrite_head(s, buf, (size_t)(nl - buf) + 1, len, buf, (size_t)(nl - buf) + 1,
                         "connection", "Connection", "close", 5, &wlen);
        if (w == NULL) {
            if (in_place)
                op(ops, n, HTTP1_DROP, len, NULL);
            fail(s, HTTP1_E_HEAD_TOO_LARGE, 1, ops, n);
            return;
        }
        if (in_place)
            op(ops, n, HTTP1_DROP, len, NULL);
        op(ops, n, HTTP1_EMIT, wlen, w);
        body_start(s, framing, 0);
        s->dirty = 1;
        return;
    }
    if (framing == HTTP1_BODY_CLOSE)
        s->dirty = 1;
    release_head(s, buf, len, 0, in_place, ops, n);
    body_start(s, framing, r->content_length);
}

static void head_complete(struct http1_stream *s, const char *buf, size_t len, int in_place,
                          struct http1_op *ops, size_t *n)
{
    if (s->kind == HTTP1_STREAM_REQUESTS)
        request_head(s, buf, len, in_place, ops, n);
    else
        response_head(s, buf, len, in_place, ops, n);
}

/* The head phase: returns input bytes consumed. */
static size_t feed_head(struct http1_stream *s, const char *in, size_t len, struct http1_op *ops,
                        size_t *n)
{
    size_t max = s->limits.max_head, end;

    if (s->hold_len == 0) {
        end = http1_head_end(in, len, &s->scan);
        if (end == 0) {
            if (len > max || hold_append(s, in, len) != 0) {
                op(ops, n, HTTP1_DROP, len, NULL);
                fail(s, HTTP1_E_HEAD_TOO_LARGE, 1, ops, n);
                return len;
            }
            op(ops, n, HTTP1_DROP, len, NULL);
            return len;
        }
        if (end > max) {
            op(ops, n, HTTP1_DROP, end, NULL);
            fail(s, HTTP1_E_HEAD_TOO_LARGE, 1, ops, n);
            return end;
        }
        head_complete(s, in, end, 1, ops, n);
        return end;
    } else {
        size_t before = s->hold_len;
        size_t take = len;
        if (take > max + 1 - before)
            take = max + 1 - before; /* one byte over the limit is enough to know */
        if (hold_append(s, in, take) != 0) {
            op(ops, n, HTTP1_DROP, take, NULL);
            fail(s, HTTP1_E_HEAD_TOO_LARGE, 1, ops, n);
            return take;
        }
        end = http1_head_end(s->hold, s->hold_len, &s->scan);
        if (end == 0 || end > max) {
            op(ops, n, HTTP1_DROP, take, NULL);
            if (s->hold_len > max || end > max)
                fail(s, HTTP1_E_HEAD_TOO_LARGE, 1, ops, n);
            return take;
        }
        op(ops, n, HTTP1_DROP, end - before, NULL);
        s->hold_len = (uint32_t)end;
        head_complete(s, s->hold, end, 0, ops, n);
        return end - before;
    }
}

/* A chunk-size line is complete with `size`: check the limits, emit the canonical line
 * when the input's was dropped, and move to the data (or the trailers). */
static int chunk_too_large(const struct http1_stream *s, uint64_t size)
{
    return s->limits.max_body &&
           (size > s->limits.max_body || s->body_total + size > s->limits.max_body);
}

static int chunk_size_done(struct http1_stream *s, uint64_t size, int emit, struct http1_op *ops,
                           size_t *n)
{
    if (chunk_too_large(s, size)) {
        fail(s, HTTP1_E_BODY_TOO_LARGE, 0, ops, n);
        return -1;
    }
    s->body_total += size;
    if (emit) {
        int l = snprintf(s->line, sizeof(s->line), "%llx\r\n", (unsigned long long)size);
        op(ops, n, HTTP1_EMIT, (size_t)l, s->line);
    }
    s->remaining = size;
    s->chunk_state = size ? CS_DATA : CS_TRAILER;
    s->trailer_len = 0;
    return 0;
}

static void chunk_fail(struct http1_stream *s, enum http1_error e, struct http1_op *ops, size_t *n)
{
    fail(s, e, 0, ops, n);
}

static void message_done(struct http1_stream *s)
{
    head_reset(s);
    s->phase = s->kind == HTTP1_STREAM_REQUESTS ? HTTP1_PHASE_HEAD : HTTP1_PHASE_IDLE;
}

/* The chunked phase. Returns input bytes consumed; stops after an EMIT (its data lives
 * in s->line, which the next line would overwrite). */
static size_t feed_chunked(struct http1_stream *s, const char *in, size_t len, struct http1_op *ops,
                           size_t *n)
{
    size_t i = 0;

    while (i < len && s->phase == HTTP1_PHASE_CHUNKED && *n + 4 <= HTTP1_MAX_OPS) {
        unsigned char c = (unsigned char)in[i];
        switch (s->chunk_state) {
        case CS_LINE: {
            /* Fast path: a whole canonical line (hex digits, CRLF) in this input passes
             * as it is. Anything else (split, extension, leading zeros, upper case) is
             * dropped and rebuilt. */
            size_t j = i, lim = len - i < 40 ? len : i + 40;
            uint64_t size = 0;
            unsigned sig = 0;
            while (j < lim && IS(in[j], C_HEX) && !(in[j] >= 'A' && in[j] <= 'F')) {
                if (sig || in[j] != '0')
                    sig++;
                size = size * 16 + (uint64_t)hexval((unsigned char)in[j]);
                j++;
                if (sig > CHUNK_SIZE_DIGITS)
                    break;
            }
            /* canonical: no leading zero (but "0" itself), which the rebuilt line would
             * not have either, so the output never depends on where the input was cut */
            if (j > i && sig <= CHUNK_SIZE_DIGITS && (in[i] != '0' || j == i + 1) && j + 1 < len &&
                in[j] == '\r' && in[j + 1] == '\n') {
                /* over the limit: the line must not reach evhttp before the error */
                op(ops, n, chunk_too_large(s, size) ? HTTP1_DROP : HTTP1_PASS, j + 2 - i, NULL);
                i = j + 2;
                if (chunk_size_done(s, size, 0, ops, n) != 0)
                    return i;
                continue;
            }
            s->chunk_state = CS_DIGITS;
            s->chunk_digits = 0;
            s->chunk_line_len = 0;
            s->remaining = 0;
            s->chunk_seen_digit = 0;
            s->chunk_seen_semicolon = 0;
            continue;
        }
        case CS_DIGITS:
            if (IS(c, C_HEX)) {
                if (s->chunk_digits || c != '0')
                    s->chunk_digits++;
                if (s->chunk_digits > CHUNK_SIZE_DIGITS || ++s->chunk_line_len > CHUNK_LINE_MAX) {
                    op(ops, n, HTTP1_DROP, 1, NULL);
                    chunk_fail(s, HTTP1_E_CHUNK, ops, n);
                    return i + 1;
                }
                s->remaining = s->remaining * 16 + (uint64_t)hexval(c);
                s->chunk_seen_digit = 1;
                op(ops, n, HTTP1_DROP, 1, NULL);
                i++;
                continue;
            }
            if (!s->chunk_seen_digit || (c != ';' && c != ' ' && c != '\t' && c != '\r')) {
                op(ops, n, HTTP1_DROP, 1, NULL);
                chunk_fail(s, HTTP1_E_CHUNK, ops, n);
                return i + 1;
            }
            s->chunk_state = c == '\r' ? CS_SIZE_LF : CS_EXT;
            s->chunk_seen_semicolon = c == ';';
            op(ops, n, HTTP1_DROP, 1, NULL);
            i++;
            continue;
        case CS_EXT:
            /* chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ): only whitespace may
             * come before the first ';', and no control character anywhere. */
            if (c == '\r') {
                s->chunk_state = CS_SIZE_LF;
            } else if (!is_value_char(c) ||
                       (!s->chunk_seen_semicolon && c != ';' && c != ' ' && c != '\t') ||
                       ++s->chunk_line_len > CHUNK_LINE_MAX) {
                op(ops, n, HTTP1_DROP, 1, NULL);
                chunk_fail(s, HTTP1_E_CHUNK, ops, n);
                return i + 1;
            } else if (c == ';') {
                s->chunk_seen_semicolon = 1;
            }
            op(ops, n, HTTP1_DROP, 1, NULL);
            i++;
            continue;
        case CS_SIZE_LF:
            op(ops, n, HTTP1_DROP, 1, NULL);
            i++;
            if (c != '\n') {
                chunk_fail(s, HTTP1_E_CHUNK, ops, n);
                return i;
            }
            if (chunk_size_done(s, s->remaining, 1, ops, n) != 0)
                return i;
            return i; /* the EMIT uses s->line */
        case CS_DATA: {
            size_t take = len - i;
            if (take > s->remaining)
                take = (size_t)s->remaining;
            op(ops, n, HTTP1_PASS, take, NULL);
            i += take;
            s->remaining -= take;
            if (s->remaining == 0)
                s->chunk_state = CS_DATA_CRLF;
            continue;
        }
        case CS_DATA_CRLF:
            if (i + 1 < len && c == '\r' && in[i + 1] == '\n') {
                op(ops, n, HTTP1_PASS, 2, NULL);
                i += 2;
                s->chunk_state = CS_LINE;
                continue;
            }
            op(ops, n, HTTP1_DROP, 1, NULL);
            i++;
            if (c != '\r' || i < len) { /* not CR, or CR followed by something else */
                chunk_fail(s, HTTP1_E_CHUNK, ops, n);
                return i;
            }
            s->chunk_state = CS_DATA_LF; /* the input ended between CR and LF */
            continue;
        case CS_DATA_LF:
            op(ops, n, HTTP1_DROP, 1, NULL);
            i++;
            if (c != '\n') {
                chunk_fail(s, HTTP1_E_CHUNK, ops, n);
                return i;
            }
            s->chunk_state = CS_LINE;
            op(ops, n, HTTP1_EMIT, 2, "\r\n");
            return i;
        case CS_TRAILER:
            if (c == '\r') {
                if (i + 1 < len && in[i + 1] == '\n') {
                    op(ops, n, HTTP1_PASS, 2, NULL);
                    i += 2;
                    message_done(s);
                    return i;
                }
                op(ops, n, HTTP1_DROP, 1, NULL);
                i++;
                if (i < len) {
                    chunk_fail(s, HTTP1_E_TRAILER, ops, n);
                    return i;
                }
                s->chunk_state = CS_LAST_LF;
                continue;
            }
            if (!IS(c, C_TCHAR)) {
                op(ops, n, HTTP1_DROP, 1, NULL);
                chunk_fail(s, HTTP1_E_TRAILER, ops, n);
                return i + 1;
            }
            s->chunk_state = CS_TRAILER_NAME;
            continue;
        case CS_TRAILER_NAME:
        case CS_TRAILER_VALUE:
        case CS_TRAILER_LF: {
            /* trailer fields are checked like header fields, and dropped */
            int ok;
            if (s->chunk_state == CS_TRAILER_NAME) {
                ok = IS(c, C_TCHAR) || c == ':';
                if (c == ':')
                    s->chunk_state = CS_TRAILER_VALUE;
            } else if (s->chunk_state == CS_TRAILER_VALUE) {
                ok = is_value_char(c) || c == '\r';
                if (c == '\r')
                    s->chunk_state = CS_TRAILER_LF;
            } else {
                ok = c == '\n';
                s->chunk_state = CS_TRAILER;
            }
            op(ops, n, HTTP1_DROP, 1, NULL);
            i++;
            if (!ok || ++s->trailer_len > s->limits.max_head) {
                chunk_fail(s, HTTP1_E_TRAILER, ops, n);
                return i;
            }
            continue;
        }
        case CS_LAST_LF:
            op(ops, n, HTTP1_DROP, 1, NULL);
            i++;
            if (c != '\n') {
                chunk_fail(s, HTTP1_E_TRAILER, ops, n);
                return i;
            }
            op(ops, n, HTTP1_EMIT, 2, "\r\n");
            message_done(s);
            return i;
        }
    }
    return i;
}

uint64_t http1_stream_cut(struct http1_stream *s, const char **standin, size_t *len)
{
    if (s->kind != HTTP1_STREAM_REQUESTS || s->phase == HTTP1_PHASE_DEAD)
        return 0;
    s->phase = HTTP1_PHASE_DEAD;
    s->messages++;
    *standin = http1_standin_request;
    *len = sizeof(http1_standin_request) - 1;
    return s->messages;
}

int http1_stream_head_pending(const struct http1_stream *s)
{
    return s->kind == HTTP1_STREAM_REQUESTS && s->phase == HTTP1_PHASE_HEAD && s->hold_len > 0;
}

size_t http1_stream_feed(struct http1_stream *s, const char *in, size_t len, struct http1_op *ops,
                         size_t *nops)
{
    size_t used = 0;

    /* Every step below adds at most three ops; stop while there is room for them. A step
     * that EMITs returns at once, so EMIT data stays valid until the caller applied it. */
    while (used < len && *nops + 4 <= HTTP1_MAX_OPS) {
        size_t before = *nops, k;
        const char *p = in + used;
        size_t left = len - used;

        switch (s->phase) {
        case HTTP1_PHASE_HEAD:
            if (s->kind == HTTP1_STREAM_RESPONSES && !s->awaiting) {
                s->phase = HTTP1_PHASE_IDLE;
                continue;
            }
            k = feed_head(s, p, left, ops, nops);
            break;
        case HTTP1_PHASE_LENGTH:
            k = left < s->remaining ? left : (size_t)s->remaining;
            op(ops, nops, HTTP1_PASS, k, NULL);
            s->remaining -= k;
            if (s->remaining == 0)
                message_done(s);
            break;
        case HTTP1_PHASE_CHUNKED:
            k = feed_chunked(s, p, left, ops, nops);
            break;
        case HTTP1_PHASE_CLOSE:
            k = left;
            op(ops, nops, HTTP1_PASS, k, NULL);
            break;
        case HTTP1_PHASE_IDLE: /* bytes nobody asked for: never let evhttp read them */
            s->dirty = 1;
            k = left;
            op(ops, nops, HTTP1_DROP, k, NULL);
            break;
        case HTTP1_PHASE_DEAD:
        default:
            k = left;
            op(ops, nops, HTTP1_DROP, k, NULL);
            break;
        }
        used += k;
        for (; before < *nops; before++)
            if (ops[before].kind == HTTP1_EMIT)
                return used;
    }
    return used;
}
