/*
 * proxy/aggmerge: the body of an aggregate route's answer, built from its parts' bodies,
 * and the value of its Sluice-Aggregate-Errors header.
 *
 * Pure: bytes in, bytes out, with jansson; no libevent, no sockets, no clock, no state
 * between calls. proxy/aggregate calls it from the event loop once every part has its
 * outcome; tests/fuzz/fuzz_aggmerge.c drives it with untrusted bodies.
 *
 * The answer is one compact JSON object, the parts under their names in the order given:
 *
 *     {"weather":{"temp":21.5},"news":null,"stock":[1,2]}
 *
 * A part the caller accepted (ok: it answered 2xx within its size limit) is parsed with
 * jansson (json_loadb, JSON_DECODE_ANY: any JSON value, a bare string or number too)
 * and written out from the parsed value, never from the bytes as they came. It becomes
 * null with the verdict AGGMERGE_NOT_JSON when it is not one JSON text (RFC 8259) as
 * jansson reads it:
 *   - empty or only whitespace, a syntax error, bytes after the value, a byte order mark,
 *     invalid UTF-8, a lone surrogate escape, "\u0000" in a string or key;
 *   - an object with the same key twice (JSON_REJECT_DUPLICATES). RFC 8259 leaves what
 *     that means to each reader (the first wins, the last wins, or an error), and a value
 *     written out from the parsed tree would keep one of them silently: the upstream's
 *     other readers and this client could then disagree on what the part said. Refused,
 *     as I-JSON (RFC 7493) does, so the part shows as failed instead of altered;
 *   - arrays and objects nested deeper than AGGMERGE_MAX_DEPTH, found by a scan before
 *     jansson (whose own limit, JSON_PARSER_MAX_DEPTH, is fixed when jansson is built:
 *     2048 in Debian's), so a hostile body can neither exhaust the stack here nor hand
 *     the client a document its own parser may refuse;
 *   - a number jansson cannot hold: an integer outside int64 ("too big integer"), a real
 *     beyond a double's range.
 * A part not ok is null with the verdict AGGMERGE_FAILED (the caller's reason).
 *
 * What comes out for a value: object members in their order; strings as UTF-8 with only
 * '"', '\' and control characters escaped; integers as they read (so "-0" becomes 0);
 * reals as the shortest text that reads back as the same double, positional below 1e16,
 * always with a '.' or an exponent (0.1 stays 0.1, 1e2 becomes 100.0). Whitespace goes.
 * Reals are printed in the C locale's format: sluice never calls setlocale().
 *
 * Memory: one part's tree at a time (parsed, written out, freed). jansson's tree of a
 * body of many small values takes some tens of bytes per value, so a part can cost that
 * many times its size (bounded by aggregate.max_part_size) while it is written out.
 */
#ifndef SLUICE_PROXY_AGGMERGE_H
#define SLUICE_PROXY_AGGMERGE_H

#include <stddef.h>

/* Arrays and objects nested deeper than this make a part NOT_JSON ("[[1]]" is 2 deep). */
#define AGGMERGE_MAX_DEPTH 512

enum aggmerge_verdict {
    AGGMERGE_OK,       /* embedded as the JSON value it is */
    AGGMERGE_NOT_JSON, /* ok by the caller, but not a JSON text: null */
    AGGMERGE_FAILED,   /* not ok by the caller (its reason): null */
};

/* One part. The caller owns every pointer; aggmerge_build only writes `verdict`. */
struct aggmerge_part {
    const char *name;   /* the key in the answer: NUL-terminated UTF-8 (conf checks it),
                         * unique among the parts; escaped in the JSON, encoded in the
                         * header (see aggmerge_errors) */
    int ok;             /* 1: the part answered 2xx within its size limit; 0: it failed */
    const char *reason; /* ok == 0: why, as sluice names it ("upstream_timeout",
                         * "status_503", "too_large", "deadline"); NULL reads "failed" */
    const char *body;   /* ok == 1: the body, len bytes, not NUL-terminated (may be NULL
                         * when len is 0); not read otherwise */
    size_t len;
    enum aggmerge_verdict verdict; /* out: set by aggmerge_build */
};

/* Build the answer's body from parts[0..nparts) (nparts may be 0: "{}") and set each
 * part's verdict. Returns the number of parts with the verdict AGGMERGE_OK (nparts:
 * Sluice-Aggregate: complete; 0: every part failed), with *out a malloc'd buffer of
 * *outlen bytes (NUL-terminated beyond them) that the caller frees. Returns -1 with *out
 * NULL and errno ENOMEM (out of memory), or EINVAL (a name NULL or not valid UTF-8). */
int aggmerge_build(struct aggmerge_part *parts, size_t nparts, char **out, size_t *outlen)
    __attribute__((warn_unused_result));

/* "ok", "not_json" or "failed". */
const char *aggmerge_verdict_name(enum aggmerge_verdict v);

/* The value of Sluice-Aggregate-Errors after aggmerge_build: "name=reason" for each part
 * whose verdict is not OK, in order, joined by ", ", as in
 *
 *     news=upstream_timeout, stock=status_503, weather=not_json
 *
 * The reason is the part's `reason` (FAILED; "failed" when NULL) or "not_json". A name
 * (and a reason) is written as an HTTP token (RFC 9110 tchar): every other byte, and
 * '%' itself, as %XX in capitals, so a name holding ',', '=', ' ', '"' or UTF-8 reads
 * back unambiguously by splitting on ", " and '=' and percent-decoding ("a=b c" ->
 * "a%3Db%20c", "météo" -> "m%C3%A9t%C3%A9o"). "" when no part failed. Returns a malloc'd
 * string the caller frees, or NULL (ENOMEM). */
char *aggmerge_errors(const struct aggmerge_part *parts, size_t nparts)
    __attribute__((warn_unused_result));

#endif
