/*
 * proxy/http1: strict HTTP/1.1 message framing (RFC 9110, RFC 9112), as pure functions.
 *
 * No sockets, no libevent, no clock: every function takes bytes and a length, so the
 * libFuzzer harnesses in tests/fuzz/ drive them directly. proxy/gate runs them over a
 * connection's input before evhttp sees a byte of it.
 *
 * Two layers:
 *   - http1_parse_request / http1_parse_response check one complete head (start line,
 *     fields, final empty line) and extract what framing and routing need. Anything that
 *     is not valid HTTP/1.1 is an error: nothing is guessed, trimmed or "fixed".
 *   - struct http1_stream follows a byte stream of messages (requests on a client
 *     connection, responses on an upstream connection) and says, for each stretch of
 *     input, what reaches evhttp: PASS the bytes as they are, DROP them, or EMIT bytes of
 *     its own (a head it held until complete or rewrote, a chunk-size line without its
 *     extension). What it passes is always one of the shapes evhttp 2.1 parses the same
 *     way: complete heads, exact bodies, canonical chunk framing.
 *
 * Ownership: the caller owns a struct http1_stream (init/deinit); EMIT data points into
 * memory the stream owns, valid until the next call on that stream.
 */
#ifndef SLUICE_PROXY_HTTP1_H
#define SLUICE_PROXY_HTTP1_H

#include <stddef.h>
#include <stdint.h>

/* Why a message was refused. Each has a status for requests (http1_error_status) and a
 * short description for logs and error bodies (http1_error_text). */
enum http1_error {
    HTTP1_OK = 0,
    HTTP1_E_LINE_ENDING,  /* bare CR or LF, or a line not ended by CRLF */
    HTTP1_E_REQUEST_LINE, /* not "method SP target SP version" */
    HTTP1_E_METHOD,       /* method is not a token */
    HTTP1_E_METHOD_NOT_ALLOWED /* a token, but not a method sluice forwards (405) */,
    HTTP1_E_TARGET,            /* request target: not visible ASCII, or not origin/absolute form */
    HTTP1_E_VERSION,           /* not exactly HTTP/1.0 or HTTP/1.1 */
    HTTP1_E_STATUS_LINE,       /* response: not "version SP 3DIGIT [SP reason]", or status outside
                                  100..599 */
    HTTP1_E_UPGRADE,           /* response: 101 to a request that asked for no upgrade */
    HTTP1_E_FIELD_NAME,        /* field name empty or not a token (a space before the colon) */
    HTTP1_E_FIELD_VALUE,       /* NUL, CR, LF or another control character in a value */
    HTTP1_E_OBS_FOLD,          /* a line starting with SP or HTAB (obsolete folding) */
    HTTP1_E_TOO_MANY_FIELDS,   /* more than HTTP1_MAX_FIELDS field lines */
    HTTP1_E_HOST,              /* HTTP/1.1 request without Host, or with two */
    HTTP1_E_HOST_VALUE,        /* Host (or an absolute-form authority) is not host[:port] */
    HTTP1_E_CONTENT_LENGTH,    /* not 1*DIGIT, or repeated */
    HTTP1_E_TRANSFER_ENCODING, /* anything but one "chunked"; any in HTTP/1.0 */
    HTTP1_E_FRAMING,           /* Content-Length and Transfer-Encoding together */
    HTTP1_E_BODY_NOT_ALLOWED,  /* a HEAD request with a body */
    HTTP1_E_EXPECT,            /* an Expect other than 100-continue (417) */
    HTTP1_E_HEAD_TOO_LARGE,    /* start line + fields over the limit (431) */
    HTTP1_E_BODY_TOO_LARGE,    /* Content-Length or chunked total over the limit (413) */
    HTTP1_E_CHUNK,             /* chunk size not 1*HEXDIG, bad extension, no CRLF after data */
    HTTP1_E_TRAILER,           /* invalid trailer field, or trailers over the limit */
    HTTP1_E_COUNT
};

/* 400, 405, 413, 417 or 431 for a refused request. */
int http1_error_status(enum http1_error e);
/* The Sluice-Reason for a refused request ("bad_request", "header_too_large"...). */
const char *http1_error_reason(enum http1_error e);
/* A short human description ("invalid field name"...). */
const char *http1_error_text(enum http1_error e);

#define HTTP1_MAX_FIELDS 256 /* field lines in one head (HAProxy allows 101, nginx ~unbounded) */

enum http1_method {
    HTTP1_GET,
    HTTP1_HEAD,
    HTTP1_POST,
    HTTP1_PUT,
    HTTP1_DELETE,
    HTTP1_OPTIONS,
    HTTP1_PATCH,
};

enum http1_framing {
    HTTP1_BODY_NONE,    /* no body */
    HTTP1_BODY_LENGTH,  /* Content-Length bytes */
    HTTP1_BODY_CHUNKED, /* chunked transfer coding */
    HTTP1_BODY_CLOSE,   /* response only: until the connection closes */
};

struct http1_span {
    uint32_t off, len; /* into the head buffer */
};

struct http1_request {
    uint32_t start;    /* offset of the request line (after ignored empty lines) */
    uint32_t head_len; /* bytes through the final CRLF CRLF, from offset 0 */
    enum http1_method method;
    uint8_t minor_version;       /* 0 or 1 */
    uint8_t absolute_form;       /* target was http(s)://authority/path: authority is the Host */
    struct http1_span target;    /* origin-form path[?query] ("/" for an empty absolute path) */
    struct http1_span authority; /* absolute-form only: host[:port] */
    struct http1_span host;      /* the Host field value; len 0 when absent or empty */
    uint8_t has_host;
    enum http1_framing framing;
    uint64_t content_length; /* HTTP1_BODY_LENGTH */
};

/* Check one complete request head buf[0..len) (len from http1_head_end) against
 * RFC 9112 and fill `out`. Empty lines before the request line are skipped (RFC 9112
 * 2.2). Returns HTTP1_OK or why the request must be refused. */
enum http1_error http1_parse_request(const char *buf, size_t len, struct http1_request *out);

struct http1_response {
    uint32_t head_len;
    uint16_t status;            /* 100..599 */
    uint8_t minor_version;      /* 0 or 1 */
    enum http1_framing framing; /* from the fields alone: LENGTH, CHUNKED, or CLOSE */
    uint64_t content_length;
    uint8_t connection_not_close; /* the first Connection field is not exactly "close":
                                   * evhttp would read an unframed body as empty */
};

/* Check one complete response head. framing is what the fields say; whether the
 * response has a body at all (HEAD, 1xx, 204, 304) is decided by the caller. */
enum http1_error http1_parse_response(const char *buf, size_t len, struct http1_response *out);

/* Where the head starting at buf ends: the length through the empty line that follows
 * its first non-empty line, or 0 when not there yet. A bare LF ends a line here too, so
 * that a head with bare LF line endings is refused when complete instead of waiting for
 * a CRLF CRLF that never comes. `scan` (zeroed at first) lets repeated calls on a
 * growing head resume where the last one stopped. */
struct http1_scan {
    uint32_t pos;
    uint8_t content;  /* a non-empty line was seen */
    uint8_t line_has; /* the current line has a byte other than CR */
};
size_t http1_head_end(const char *buf, size_t len, struct http1_scan *scan);

/* ---- the stream ---------------------------------------------------------------- */

enum http1_op_kind { HTTP1_PASS, HTTP1_DROP, HTTP1_EMIT };

struct http1_op {
    enum http1_op_kind kind;
    uint32_t len;     /* bytes of input (PASS, DROP) or of data (EMIT) */
    const char *data; /* EMIT only */
};

#define HTTP1_MAX_OPS 64

struct http1_limits {
    uint32_t max_head; /* start line + fields (+ trailers) */
    uint64_t max_body; /* requests: Content-Length or chunked total; 0: no limit */
};

enum http1_stream_kind { HTTP1_STREAM_REQUESTS, HTTP1_STREAM_RESPONSES };

enum http1_phase {
    HTTP1_PHASE_HEAD,    /* between messages or inside a head */
    HTTP1_PHASE_LENGTH,  /* Content-Length body */
    HTTP1_PHASE_CHUNKED, /* chunked body */
    HTTP1_PHASE_CLOSE,   /* response body until close */
    HTTP1_PHASE_IDLE,    /* responses: the answer is complete; nothing more is expected */
    HTTP1_PHASE_DEAD,    /* an error was found: everything from here is dropped */
};

struct http1_stream {
    enum http1_stream_kind kind;
    struct http1_limits limits;
    enum http1_phase phase;
    enum http1_error error; /* set once, with phase DEAD */
    uint64_t messages;      /* heads released (requests) / final responses started */
    uint64_t error_message; /* requests: the number of the message refused (messages+1
                             * when the head was refused: it is replaced by a stand-in) */
    /* head in progress: bytes held until the head is complete */
    char *hold;
    uint32_t hold_len, hold_cap;
    struct http1_scan scan;
    /* the head of the current message, once parsed */
    union {
        struct http1_request req;
        struct http1_response resp;
    } head;
    uint8_t head_request_pending; /* responses: the request was HEAD (no body) */
    uint8_t awaiting;             /* responses: a request is outstanding */
    uint8_t dirty;                /* responses: the connection carried bytes beyond an answer,
                                   * or an answer it must not be reused after (HEAD/204/304) */
    char *rewrite; /* a head rewritten before it is released (absolute-form, Connection) */
    size_t rewrite_cap;
    /* body */
    uint64_t remaining; /* LENGTH: bytes left; CHUNKED: data left in this chunk */
    uint64_t body_total;
    int chunk_state;
    uint32_t chunk_digits;   /* significant hex digits of the size being read */
    uint32_t chunk_line_len; /* bytes of the size line being read */
    uint32_t trailer_len;    /* bytes of trailer section so far */
    uint8_t chunk_seen_digit, chunk_seen_semicolon;
    char line[48]; /* a canonical chunk-size line to EMIT */
};

/* kind, limits: see above. Returns 0, -1 on out of memory. */
int http1_stream_init(struct http1_stream *s, enum http1_stream_kind kind,
                      const struct http1_limits *limits);
void http1_stream_deinit(struct http1_stream *s);

/* Responses: a request was just sent; its answer comes next (head_request: it was
 * HEAD, so the answer has no body). Resets the stream's view of the previous answer. */
void http1_stream_expect_response(struct http1_stream *s, int head_request);

/* Process up to `len` input bytes. Appends at most HTTP1_MAX_OPS ops to ops[*nops]
 * (which the caller sets to 0 first) and returns how many input bytes they account for
 * (fewer than len when the op array filled up: call again with the rest). Input bytes
 * are always consumed in order and each is covered by exactly one PASS or DROP. */
size_t http1_stream_feed(struct http1_stream *s, const char *in, size_t len, struct http1_op *ops,
                         size_t *nops);

/* Requests: stop reading here for a reason of the caller's (a head that took too long,
 * a connection over the cap), as if the next message had been refused: the stream goes
 * DEAD (error stays as it was) and *standin / *len are the stand-in head to put after
 * what already went through. Returns the number of the stand-in message, or 0 when the
 * stream was already dead (nothing to add). */
uint64_t http1_stream_cut(struct http1_stream *s, const char **standin, size_t *len);

/* Requests: a head is in progress (bytes of it arrived, not all of it yet). */
int http1_stream_head_pending(const struct http1_stream *s);

/* Text of the head a refused request is replaced by, so that evhttp hands the
 * connection's next request to the front end, which answers it with the error. */
extern const char http1_standin_request[];

#endif
