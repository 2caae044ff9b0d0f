/*
 * proxy/aggmerge: an aggregate answer from its parts (see aggmerge.h for the contract).
 *
 *     part body --depth scan--> json_loadb --write_value--> out buffer, then json_decref
 *
 * Invariants
 *   - Nothing a part sent reaches the output unparsed: each ok part's body is parsed by
 *     jansson and written out by write_value() from the tree; names are checked UTF-8
 *     and escaped by write_string(). The output is therefore one JSON text whatever the
 *     bodies hold (the fuzz harness re-parses it and compares every part).
 *   - write_value() recurses once per nesting level, at most AGGMERGE_MAX_DEPTH deep,
 *     because the scan refused anything deeper before jansson saw it.
 *   - Only one part's tree exists at a time.
 *   - struct buf: p[0..len) written, len < cap (room for the NUL), oom sticky: after a
 *     failed allocation every write is a no-op and the caller sees it once, at the end.
 */
#include "proxy/aggmerge.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- output buffer */

struct buf {
    char *p;
    size_t len, cap;
    int oom;
};

static int buf_reserve(struct buf *b, size_t more)
{
    size_t want, cap;
    char *p;

    if (b->oom)
        return -1;
    if (more < b->cap - b->len) /* keeps one byte for the NUL */
        return 0;
    if (more > SIZE_MAX / 2 - b->len) {
        b->oom = 1;
        return -1;
    }
    want = b->len + more + 1;
    cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap *= 2;
    p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static void buf_add(struct buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) != 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void buf_addc(struct buf *b, char c) { buf_add(b, &c, 1); }

static void buf_adds(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

/* ---------------------------------------------------------------- checks */

/* Is s[0..len) valid UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF)? */
static int utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        uint32_t cp, min;
        size_t n;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            n = 2, cp = c & 0x1fu, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
            n = 3, cp = c & 0x0fu, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            n = 4, cp = c & 0x07u, min = 0x10000;
        else
            return 0;
        if (n > len - i)
            return 0;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n;
    }
    return 1;
}

/* Do arrays and objects nest deeper than max in s[0..len)? Brackets inside strings do
 * not count. Exact for a valid JSON text; for anything else the answer does not matter,
 * since jansson refuses it (within its own depth limit). */
static int deeper_than(const char *s, size_t len, unsigned max)
{
    unsigned depth = 0;
    int in_string = 0;

    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\')
                i++; /* the escaped character, whatever it is */
            else if (c == '"')
                in_string = 0;
        } else if (c == '"')
            in_string = 1;
        else if (c == '[' || c == '{') {
            if (++depth > max)
                return 1;
        } else if ((c == ']' || c == '}') && depth > 0)
            depth--;
    }
    return 0;
}

/* ---------------------------------------------------------------- writing JSON */

/* A JSON string of s[0..len) (valid UTF-8): only '"', '\' and control characters
 * escaped, the rest as it is. */
static void write_string(struct buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    buf_addc(b, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        size_t n = 2;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        buf_add(b, s + run, i - run);
        run = i + 1;
        esc[0] = '\\';
        switch (c) {
        case '"':
        case '\\':
            esc[1] = (char)c;
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            n = 6;
        }
        buf_add(b, esc, n);
    }
    buf_add(b, s + run, len - run);
    buf_addc(b, '"');
}

/* The shortest text that reads back as v (finite: jansson refuses overflow), positional
 * for exponents from -4 to 15, always recognisable as a real ('.' or an exponent). */
static void write_real(struct buf *b, double v)
{
    char text[40];
    const char *e;
    int prec;

    for (prec = 1; prec < 17; prec++) {
        snprintf(text, sizeof text, "%.*g", prec, v);
        if (strtod(text, NULL) == v)
            break;
    }
    if (prec == 17)
        snprintf(text, sizeof text, "%.17g", v);
    /* %g chose an exponent because it is at least prec: below 1e16, print the integer
     * digits out instead (more digits than prec, so it still reads back as v). */
    e = strchr(text, 'e');
    if (e != NULL && e[1] == '+') {
        int exp = atoi(e + 2);
        if (exp < 16)
            snprintf(text, sizeof text, "%.*g", exp + 1, v);
    }
    if (strpbrk(text, ".e") == NULL)
        strcat(text, ".0");
    buf_adds(b, text);
}

static void write_value(struct buf *b, const json_t *v)
{
    char num[32];
    size_t i;
    void *it;

    switch (json_typeof(v)) {
    case JSON_OBJECT:
        buf_addc(b, '{');
        for (it = json_object_iter((json_t *)v), i = 0; it != NULL;
             it = json_object_iter_next((json_t *)v, it), i++) {
            if (i > 0)
                buf_addc(b, ',');
            write_string(b, json_object_iter_key(it), json_object_iter_key_len(it));
            buf_addc(b, ':');
            write_value(b, json_object_iter_value(it));
        }
        buf_addc(b, '}');
        break;
    case JSON_ARRAY:
        buf_addc(b, '[');
        for (i = 0; i < json_array_size(v); i++) {
            if (i > 0)
                buf_addc(b, ',');
            write_value(b, json_array_get(v, i));
        }
        buf_addc(b, ']');
        break;
    case JSON_STRING:
        write_string(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        buf_adds(b, num);
        break;
    case JSON_REAL:
        write_real(b, json_real_value(v));
        break;
    case JSON_TRUE:
        buf_adds(b, "true");
        break;
    case JSON_FALSE:
        buf_adds(b, "false");
        break;
    case JSON_NULL:
        buf_adds(b, "null");
        break;
    }
}

/* ---------------------------------------------------------------- entry points */

/* One ok part's value, or null; its verdict. Returns -1 only when jansson ran out of
 * memory. */
static int write_part(struct buf *b, struct aggmerge_part *p)
{
    json_error_t err;
    json_t *v;

    if (deeper_than(p->body, p->len, AGGMERGE_MAX_DEPTH)) {
        p->verdict = AGGMERGE_NOT_JSON;
        buf_adds(b, "null");
        return 0;
    }
    v = json_loadb(p->body != NULL ? p->body : "", p->len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES,
                   &err);
    if (v == NULL) {
        if (json_error_code(&err) == json_error_out_of_memory)
            return -1;
        p->verdict = AGGMERGE_NOT_JSON;
        buf_adds(b, "null");
        return 0;
    }
    p->verdict = AGGMERGE_OK;
    write_value(b, v);
    json_decref(v);
    return 0;
}

int aggmerge_build(struct aggmerge_part *parts, size_t nparts, char **out, size_t *outlen)
{
    struct buf b = {0};
    int nok = 0;

    *out = NULL;
    *outlen = 0;
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].name == NULL ||
            !utf8_valid((const unsigned char *)parts[i].name, strlen(parts[i].name))) {
            errno = EINVAL;
            return -1;
        }
    }
    buf_addc(&b, '{');
    for (size_t i = 0; i < nparts && !b.oom; i++) {
        struct aggmerge_part *p = &parts[i];
        if (i > 0)
            buf_addc(&b, ',');
        write_string(&b, p->name, strlen(p->name));
        buf_addc(&b, ':');
        if (!p->ok) {
            p->verdict = AGGMERGE_FAILED;
            buf_adds(&b, "null");
        } else if (write_part(&b, p) != 0)
            b.oom = 1;
        if (p->verdict == AGGMERGE_OK)
            nok++;
    }
    buf_addc(&b, '}');
    if (b.oom) {
        free(b.p);
        errno = ENOMEM;
        return -1;
    }
    b.p[b.len] = '\0';
    *out = b.p;
    *outlen = b.len;
    return nok;
}

const char *aggmerge_verdict_name(enum aggmerge_verdict v)
{
    switch (v) {
    case AGGMERGE_OK:
        return "ok";
    case AGGMERGE_NOT_JSON:
        return "not_json";
    case AGGMERGE_FAILED:
        break;
    }
    return "failed";
}

/* s as an HTTP token: tchar bytes but '%' as they are, every other byte as %XX. */
static void write_token(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c != '\0' && strchr("!#$&'*+-.^_`|~", c) != NULL)) {
            buf_addc(b, (char)c);
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 0xf]};
            buf_add(b, esc, 3);
        }
    }
}

char *aggmerge_errors(const struct aggmerge_part *parts, size_t nparts)
{
    struct buf b = {0};
    int first = 1;

    if (buf_reserve(&b, 0) != 0)
        return NULL;
    for (size_t i = 0; i < nparts; i++) {
        const struct aggmerge_part *p = &parts[i];
        if (p->verdict == AGGMERGE_OK)
            continue;
        if (!first)
            buf_adds(&b, ", ");
        first = 0;
        write_token(&b, p->name);
        buf_addc(&b, '=');
        write_token(&b, p->verdict == AGGMERGE_NOT_JSON ? "not_json"
                        : p->reason != NULL             ? p->reason
                                                        : "failed");
    }
    if (b.oom) {
        free(b.p);
        errno = ENOMEM;
        return NULL;
    }
    b.p[b.len] = '\0';
    return b.p;
}
