/*
 * tests/fuzz/fuzz_aggmerge: libFuzzer harness for proxy/aggmerge (an aggregate answer
 * built from its parts' bodies, which are untrusted bytes from upstreams).
 *
 * Input: up to 8 parts separated by 0xFF bytes (never part of valid UTF-8, so never of
 * a JSON text). A part's first byte says what the caller decided: bit 0 set, the part is
 * ok (2xx within its limit) and the rest of its bytes are its body; clear, it failed,
 * with the reason chosen by bits 1-3. A part with no byte at all is ok with an empty
 * body. Part i is named NAMES[i]: names that need JSON escapes and header encoding.
 *
 * Checked, besides no crash, leak or undefined behaviour (ASan, LSan, UBSan), what
 * aggmerge.h promises:
 *   - the body is one JSON object (re-parsed by jansson, duplicates refused) with
 *     exactly the parts' names as keys, in order;
 *   - a failed part is null with the verdict FAILED;
 *   - an ok part is NOT_JSON (and null) exactly when json_loadb refuses its body on its
 *     own or the parsed value nests deeper than AGGMERGE_MAX_DEPTH (a depth measured
 *     on the tree, not by the module's scan); otherwise it is OK and its value in the
 *     answer equals the body's (json_equal, and jansson's own dump of both, which keeps
 *     member order and prints reals with 17 digits);
 *   - the return value counts the OK verdicts; the output has no NUL inside;
 *   - the errors header lists exactly the parts not OK, in order, as name=reason with
 *     only token bytes, '%' escapes, '=' and ", ", and each name percent-decodes back.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "proxy/aggmerge.h"

#define MAX_PARTS 8

static const char *const NAMES[MAX_PARTS] = {
    "weather",  "say \"hi\"",   "back\\slash", "m\xc3\xa9t\xc3\xa9o",
    "a,b=c d%", "\xe2\x98\x80", "tab\there",   "7",
};
static const char *const REASONS[8] = {
    NULL, "upstream_timeout", "status_503", "too_large", "deadline", "x y", "a=b", "%",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t depth_of(const json_t *v)
{
    size_t d = 0, k;
    const char *key;
    json_t *x;

    if (json_is_array(v)) {
        json_array_foreach(v, k, x)
        {
            size_t dx = depth_of(x);
            d = dx > d ? dx : d;
        }
        return d + 1;
    }
    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, key, x)
        {
            size_t dx = depth_of(x);
            d = dx > d ? dx : d;
        }
        return d + 1;
    }
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode s[0..n) (%XX in capitals) into out; 0 when it decodes, -1 otherwise. Every
 * byte must be a tchar or part of an escape. */
static int token_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o + 1 >= cap)
            return -1;
        if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                   strchr("!#$&'*+-.^_`|~", c) != NULL) {
            out[o++] = (char)c;
        } else
            return -1;
    }
    out[o] = '\0';
    return 0;
}

/* The errors header against the verdicts. */
static void check_errors(const struct aggmerge_part *parts, size_t n, const char *hdr)
{
    const char *p = hdr;
    char dec[256];

    for (size_t i = 0; i < n; i++) {
        if (parts[i].verdict == AGGMERGE_OK)
            continue;
        if (p != hdr) {
            if (strncmp(p, ", ", 2) != 0)
                abort();
            p += 2;
        }
        size_t entry = strcspn(p, ", ");
        const char *eq = memchr(p, '=', entry);
        if (eq == NULL || memchr(eq + 1, '=', entry - (size_t)(eq + 1 - p)) != NULL)
            abort();
        if (token_decode(p, (size_t)(eq - p), dec, sizeof dec) != 0 ||
            strcmp(dec, parts[i].name) != 0)
            abort();
        const char *want = parts[i].verdict == AGGMERGE_NOT_JSON ? "not_json"
                           : parts[i].reason != NULL             ? parts[i].reason
                                                                 : "failed";
        if (token_decode(eq + 1, entry - (size_t)(eq + 1 - p), dec, sizeof dec) != 0 ||
            strcmp(dec, want) != 0)
            abort();
        p += entry;
    }
    if (*p != '\0')
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct aggmerge_part parts[MAX_PARTS];
    size_t n = 0, start = 0, outlen, nok = 0;
    json_t *answer;
    char *out, *hdr;
    int rc;

    memset(parts, 0, sizeof parts);
    for (size_t i = 0; i <= size && n < MAX_PARTS; i++) {
        if (i < size && data[i] != 0xff)
            continue;
        struct aggmerge_part *p = &parts[n];
        p->name = NAMES[n];
        if (i == start) {
            p->ok = 1;
        } else {
            p->ok = data[start] & 1;
            p->reason = REASONS[(data[start] >> 1) & 7];
            p->body = (const char *)data + start + 1;
            p->len = i - start - 1;
        }
        n++;
        start = i + 1;
    }

    rc = aggmerge_build(parts, n, &out, &outlen);
    if (rc < 0 || out == NULL || strlen(out) != outlen)
        abort();
    answer = json_loadb(out, outlen, JSON_REJECT_DUPLICATES, NULL);
    if (answer == NULL || !json_is_object(answer) || json_object_size(answer) != n)
        abort();

    void *it = json_object_iter(answer);
    for (size_t i = 0; i < n; i++, it = json_object_iter_next(answer, it)) {
        const struct aggmerge_part *p = &parts[i];
        if (it == NULL || strcmp(json_object_iter_key(it), p->name) != 0)
            abort();
        json_t *got = json_object_iter_value(it);
        if (!p->ok) {
            if (p->verdict != AGGMERGE_FAILED || !json_is_null(got))
                abort();
            continue;
        }
        json_t *ref = json_loadb(p->body != NULL ? p->body : "", p->len,
                                 JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        if (ref == NULL || depth_of(ref) > AGGMERGE_MAX_DEPTH) {
            if (p->verdict != AGGMERGE_NOT_JSON || !json_is_null(got))
                abort();
        } else {
            char *a = json_dumps(ref, JSON_COMPACT | JSON_ENCODE_ANY);
            char *b = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
            if (p->verdict != AGGMERGE_OK || !json_equal(ref, got) || a == NULL || b == NULL ||
                strcmp(a, b) != 0)
                abort();
            free(a);
            free(b);
            nok++;
        }
        json_decref(ref);
    }
    if ((size_t)rc != nok)
        abort();

    hdr = aggmerge_errors(parts, n);
    if (hdr == NULL)
        abort();
    check_errors(parts, n, hdr);

    free(hdr);
    json_decref(answer);
    free(out);
    return 0;
}
