/*
 * tests/unit/test_aggmerge: the body and the errors header of an aggregate answer
 * (proxy/aggmerge): valid, invalid, empty, huge, nested and scalar parts, names that need
 * JSON escapes, every part failed, the configured order kept, numbers and strings written
 * out from the parsed value.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/aggmerge.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* An ok part whose body is a C string. */
#define OK_PART(NAME, BODY)                                                                        \
    {                                                                                              \
        .name = NAME, .ok = 1, .body = BODY, .len = sizeof(BODY) - 1                               \
    }
#define FAILED_PART(NAME, REASON)                                                                  \
    {                                                                                              \
        .name = NAME, .ok = 0, .reason = REASON                                                    \
    }

/* Build and compare the whole body; returns the number of ok parts. */
static int build_expect(struct aggmerge_part *parts, size_t n, const char *want)
{
    char *out = NULL;
    size_t len = 0;
    int nok = aggmerge_build(parts, n, &out, &len);

    assert_true(nok >= 0);
    assert_non_null(out);
    assert_int_equal(len, strlen(out)); /* NUL-terminated, no NUL inside */
    assert_string_equal(out, want);
    free(out);
    return nok;
}

/* The verdict and the written value of one ok body, alone under the name "p". */
static void one(const char *body, enum aggmerge_verdict verdict, const char *value)
{
    struct aggmerge_part p = {.name = "p", .ok = 1, .body = body, .len = strlen(body)};
    char want[256];

    snprintf(want, sizeof want, "{\"p\":%s}", value);
    char *out = NULL;
    size_t len;
    int nok = aggmerge_build(&p, 1, &out, &len);
    if (nok < 0 || strcmp(out, want) != 0 || p.verdict != verdict)
        fail_msg("body '%s': got %d %s verdict %s, want %s verdict %s", body, nok,
                 out ? out : "(null)", aggmerge_verdict_name(p.verdict), want,
                 aggmerge_verdict_name(verdict));
    assert_int_equal(nok, verdict == AGGMERGE_OK);
    free(out);
}

static char *errors(const struct aggmerge_part *parts, size_t n)
{
    char *e = aggmerge_errors(parts, n);
    assert_non_null(e);
    return e;
}

static void test_valid(void **state)
{
    struct aggmerge_part parts[] = {
        OK_PART("weather", "{ \"temp\": 21.5, \"sky\": \"clear\" }\n"),
        OK_PART("news", "[{\"id\": 1, \"title\": \"A\"}, {\"id\": 2, \"title\": \"B\"}]"),
        OK_PART("stock", "{\"s\":\"ACME\",\"p\":[1,2,3],\"up\":true,\"note\":null}"),
    };

    assert_int_equal(
        build_expect(parts, ARRAY_LEN(parts),
                     "{\"weather\":{\"temp\":21.5,\"sky\":\"clear\"},"
                     "\"news\":[{\"id\":1,\"title\":\"A\"},{\"id\":2,\"title\":\"B\"}],"
                     "\"stock\":{\"s\":\"ACME\",\"p\":[1,2,3],\"up\":true,\"note\":null}}"),
        3);
    for (size_t i = 0; i < ARRAY_LEN(parts); i++)
        assert_int_equal(parts[i].verdict, AGGMERGE_OK);
    char *e = errors(parts, ARRAY_LEN(parts));
    assert_string_equal(e, "");
    free(e);
}

static void test_invalid(void **state)
{
    static const char *const bad[] = {
        "{",
        "nope",
        "[1,]",
        "{\"a\":1,}",
        "{\"a\":1}x",         /* bytes after the value */
        "{\"a\":1}{\"b\":2}", /* two values */
        "\xef\xbb\xbf{}",     /* a byte order mark */
        "\"\xff\"",           /* invalid UTF-8 */
        "\"\xc0\xaf\"",       /* overlong */
        "\"\\ud800\"",        /* a lone surrogate */
        "\"\\u0000\"",        /* NUL in a string */
        "{\"a\\u0000b\":1}",  /* NUL in a key */
        "{\"a\":1,\"a\":2}",  /* a key twice */
        "[{\"b\":[], \"b\":{}}]",
        "99999999999999999999", /* beyond int64 */
        "9223372036854775808",
        "1e400", /* beyond a double */
        "-1e400",
        "NaN",
        "Infinity",
        "'single'",
        "\"tab\there\"", /* a raw control character in a string */
        "01",
        "+1",
        ".5",
        "[1 2]",
        "{\"a\" 1}",
        "tru",
    };

    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        one(bad[i], AGGMERGE_NOT_JSON, "null");

    /* NUL bytes inside the body (not a C string). */
    struct aggmerge_part p = {.name = "p", .ok = 1, .body = "[1]\0", .len = 4};
    char *out;
    size_t len;
    assert_int_equal(aggmerge_build(&p, 1, &out, &len), 0);
    assert_string_equal(out, "{\"p\":null}");
    assert_int_equal(p.verdict, AGGMERGE_NOT_JSON);
    free(out);
    char *e = errors(&p, 1);
    assert_string_equal(e, "p=not_json");
    free(e);
}

static void test_empty(void **state)
{
    struct aggmerge_part parts[] = {
        {.name = "null_body", .ok = 1, .body = NULL, .len = 0},
        {.name = "empty", .ok = 1, .body = "", .len = 0},
        OK_PART("blank", " \r\n\t "),
        OK_PART("obj", "{}"),
        OK_PART("arr", "[ ]"),
        OK_PART("str", "\"\""),
    };

    assert_int_equal(build_expect(parts, ARRAY_LEN(parts),
                                  "{\"null_body\":null,\"empty\":null,\"blank\":null,"
                                  "\"obj\":{},\"arr\":[],\"str\":\"\"}"),
                     3);
    char *e = errors(parts, ARRAY_LEN(parts));
    assert_string_equal(e, "null_body=not_json, empty=not_json, blank=not_json");
    free(e);

    /* No parts at all. */
    char *out;
    size_t len;
    assert_int_equal(aggmerge_build(NULL, 0, &out, &len), 0);
    assert_string_equal(out, "{}");
    free(out);
}

/* Several MB in one part: written out exactly (the input is already compact). */
static void test_huge(void **state)
{
    static const char item[] = "{\"id\":123456,\"name\":\"caf\xc3\xa9\",\"ok\":true,\"r\":0.25},";
    size_t n = 120000, ilen = sizeof item - 1;
    size_t blen = 1 + n * ilen;
    char *body = malloc(blen + 1), *want = malloc(blen + 32), *out;
    size_t len;

    assert_non_null(body);
    assert_non_null(want);
    body[0] = '[';
    for (size_t i = 0; i < n; i++)
        memcpy(body + 1 + i * ilen, item, ilen);
    body[blen - 1] = ']'; /* over the last ',' */
    body[blen] = '\0';
    assert_true(blen > 5u << 20);

    struct aggmerge_part parts[] = {
        {.name = "big", .ok = 1, .body = body, .len = blen},
        OK_PART("small", "1"),
    };
    assert_int_equal(aggmerge_build(parts, 2, &out, &len), 2);
    snprintf(want, blen + 32, "{\"big\":%s,\"small\":1}", body);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(out, want, len);
    free(out);

    /* One string of 4 MB, with escapes every 1000 bytes. */
    blen = 4u << 20;
    for (size_t i = 0; i < blen; i++)
        body[i] = i % 1000 == 999 ? '\n' : 'x';
    body[0] = '"';
    body[blen - 1] = '"';
    parts[0].len = blen;
    /* The raw newlines make it invalid... */
    assert_int_equal(aggmerge_build(parts, 1, &out, &len), 0);
    assert_string_equal(out, "{\"big\":null}");
    free(out);
    /* ...escaped, valid, and escaped again on the way out. */
    for (size_t i = 1; i + 1 < blen; i++)
        if (body[i] == '\n')
            body[i - 1] = '\\', body[i] = 'n';
    assert_int_equal(aggmerge_build(parts, 1, &out, &len), 1);
    assert_int_equal(len, blen + strlen("{\"big\":}"));
    assert_memory_equal(out + 7, body, blen);
    free(out);
    free(body);
    free(want);
}

/* depth levels of c (an array "[...]" or an object {"a":...}) around 0. */
static char *nested(size_t depth, char c)
{
    size_t open = c == '[' ? 1 : 5, size = depth * (open + 1) + 2;
    char *s = malloc(size), *p = s;

    assert_non_null(s);
    for (size_t i = 0; i < depth; i++, p += open)
        memcpy(p, c == '[' ? "[" : "{\"a\":", open);
    *p++ = '0';
    for (size_t i = 0; i < depth; i++)
        *p++ = c == '[' ? ']' : '}';
    *p = '\0';
    return s;
}

static void nested_case(size_t depth, char c, enum aggmerge_verdict verdict)
{
    char *body = nested(depth, c), *out;
    struct aggmerge_part p = {.name = "n", .ok = 1, .body = body, .len = strlen(body)};
    size_t len;

    assert_int_equal(aggmerge_build(&p, 1, &out, &len), verdict == AGGMERGE_OK);
    assert_int_equal(p.verdict, verdict);
    if (verdict == AGGMERGE_OK) {
        assert_int_equal(len, strlen("{\"n\":}") + strlen(body));
        assert_memory_equal(out + 5, body, strlen(body));
    } else
        assert_string_equal(out, "{\"n\":null}");
    free(out);
    free(body);
}

static void test_nested(void **state)
{
    nested_case(1, '[', AGGMERGE_OK);
    nested_case(AGGMERGE_MAX_DEPTH, '[', AGGMERGE_OK);
    nested_case(AGGMERGE_MAX_DEPTH + 1, '[', AGGMERGE_NOT_JSON);
    nested_case(AGGMERGE_MAX_DEPTH, '{', AGGMERGE_OK);
    nested_case(AGGMERGE_MAX_DEPTH + 1, '{', AGGMERGE_NOT_JSON);
    /* Far past jansson's own limit (2048) and deep enough to hurt a recursive parser. */
    nested_case(100000, '[', AGGMERGE_NOT_JSON);

    /* Brackets inside strings (escaped quotes too) are not nesting. */
    char body[4096];
    size_t n = 0;
    n += (size_t)snprintf(body, sizeof body, "[\"\\\"");
    for (int i = 0; i < 1000; i++)
        body[n++] = i % 2 ? '[' : '{';
    n += (size_t)snprintf(body + n, sizeof body - n, "\", {\"k[\": \"]]]\"}]");
    struct aggmerge_part p = {.name = "s", .ok = 1, .body = body, .len = n};
    char *out;
    size_t len;
    assert_int_equal(aggmerge_build(&p, 1, &out, &len), 1);
    assert_int_equal(p.verdict, AGGMERGE_OK);
    free(out);

    /* Closing brackets first do not buy depth back. */
    char *deep = nested(AGGMERGE_MAX_DEPTH + 1, '[');
    char *trick = malloc(strlen(deep) + 8);
    sprintf(trick, "]]]]%s", deep);
    one(trick, AGGMERGE_NOT_JSON, "null");
    free(trick);
    free(deep);
}

static void test_scalars(void **state)
{
    one("42", AGGMERGE_OK, "42");
    one(" -7 \n", AGGMERGE_OK, "-7");
    one("-0", AGGMERGE_OK, "0");
    one("9223372036854775807", AGGMERGE_OK, "9223372036854775807");
    one("-9223372036854775808", AGGMERGE_OK, "-9223372036854775808");
    one("1.5", AGGMERGE_OK, "1.5");
    one("0.1", AGGMERGE_OK, "0.1");
    one("3.14", AGGMERGE_OK, "3.14");
    one("0.30000000000000004", AGGMERGE_OK, "0.30000000000000004");
    one("1.0", AGGMERGE_OK, "1.0");
    one("-0.0", AGGMERGE_OK, "-0.0");
    one("1e2", AGGMERGE_OK, "100.0");
    one("1E+15", AGGMERGE_OK, "1000000000000000.0");
    one("1e16", AGGMERGE_OK, "1e+16");
    one("12345678901234567890.0", AGGMERGE_OK, "1.2345678901234567e+19");
    one("1e300", AGGMERGE_OK, "1e+300");
    one("2.5e-7", AGGMERGE_OK, "2.5e-07");
    one("0.0001", AGGMERGE_OK, "0.0001");
    one("5e-324", AGGMERGE_OK, "5e-324");
    one("1.7976931348623157e308", AGGMERGE_OK, "1.7976931348623157e+308");
    one("true", AGGMERGE_OK, "true");
    one("false", AGGMERGE_OK, "false");
    one("null", AGGMERGE_OK, "null"); /* a part that says null is a part that answered */
    one("\"text\"", AGGMERGE_OK, "\"text\"");

    /* Strings: only '"', '\' and control characters escaped; the rest as UTF-8. */
    one("\"\\u00e9\\u2603\\ud83d\\ude00\"", AGGMERGE_OK,
        "\"\xc3\xa9\xe2\x98\x83\xf0\x9f\x98\x80\"");
    one("\"a\\/b\"", AGGMERGE_OK, "\"a/b\"");
    one("\"q\\\"b\\\\\"", AGGMERGE_OK, "\"q\\\"b\\\\\"");
    one("\"\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f\"", AGGMERGE_OK,
        "\"\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\"");
    one("{\"\\n\\u00e9\":1}", AGGMERGE_OK, "{\"\\n\xc3\xa9\":1}");
    one("\"\xe2\x80\xa8\"", AGGMERGE_OK, "\"\xe2\x80\xa8\""); /* U+2028 is valid JSON */
}

static void test_names(void **state)
{
    struct aggmerge_part parts[] = {
        OK_PART("say \"hi\"", "1"),
        OK_PART("back\\slash", "2"),
        OK_PART("m\xc3\xa9t\xc3\xa9o \xe2\x98\x80", "3"),
        OK_PART("tab\there\x01", "4"), /* conf refuses control characters; escaped anyway */
        OK_PART("a,b=c d%", "5"),
    };

    assert_int_equal(build_expect(parts, ARRAY_LEN(parts),
                                  "{\"say \\\"hi\\\"\":1,\"back\\\\slash\":2,"
                                  "\"m\xc3\xa9t\xc3\xa9o \xe2\x98\x80\":3,"
                                  "\"tab\\there\\u0001\":4,\"a,b=c d%\":5}"),
                     5);

    /* A name that is not UTF-8 is the caller's bug: refused, nothing built. */
    struct aggmerge_part bad[] = {OK_PART("ok", "1"), OK_PART("caf\xe9", "2")};
    char *out = (char *)"x";
    size_t len = 9;
    errno = 0;
    assert_int_equal(aggmerge_build(bad, 2, &out, &len), -1);
    assert_int_equal(errno, EINVAL);
    assert_null(out);
    bad[1].name = NULL;
    assert_int_equal(aggmerge_build(bad, 2, &out, &len), -1);
    assert_int_equal(errno, EINVAL);
}

static void test_all_failed(void **state)
{
    struct aggmerge_part parts[] = {
        FAILED_PART("weather", "upstream_timeout"),
        FAILED_PART("news", "status_503"),
        FAILED_PART("stock", NULL),
        FAILED_PART("late", "deadline"),
        {.name = "big", .ok = 0, .reason = "too_large", .body = "{}", .len = 2},
    };

    assert_int_equal(
        build_expect(parts, ARRAY_LEN(parts),
                     "{\"weather\":null,\"news\":null,\"stock\":null,\"late\":null,\"big\":null}"),
        0);
    for (size_t i = 0; i < ARRAY_LEN(parts); i++)
        assert_int_equal(parts[i].verdict, AGGMERGE_FAILED);
    char *e = errors(parts, ARRAY_LEN(parts));
    assert_string_equal(e, "weather=upstream_timeout, news=status_503, stock=failed, "
                           "late=deadline, big=too_large");
    free(e);
}

/* The configured order, not the names' order; members inside a part keep theirs. */
static void test_order(void **state)
{
    struct aggmerge_part parts[] = {
        OK_PART("z", "{\"z\":1,\"a\":2,\"m\":{\"y\":1,\"b\":2}}"),
        FAILED_PART("a", "upstream_error"),
        OK_PART("m", "[3,2,1]"),
        OK_PART("b", "{oops"),
        OK_PART("0", "\"last\""),
    };

    assert_int_equal(build_expect(parts, ARRAY_LEN(parts),
                                  "{\"z\":{\"z\":1,\"a\":2,\"m\":{\"y\":1,\"b\":2}},\"a\":null,"
                                  "\"m\":[3,2,1],\"b\":null,\"0\":\"last\"}"),
                     3);
    assert_int_equal(parts[0].verdict, AGGMERGE_OK);
    assert_int_equal(parts[1].verdict, AGGMERGE_FAILED);
    assert_int_equal(parts[2].verdict, AGGMERGE_OK);
    assert_int_equal(parts[3].verdict, AGGMERGE_NOT_JSON);
    assert_int_equal(parts[4].verdict, AGGMERGE_OK);
    char *e = errors(parts, ARRAY_LEN(parts));
    assert_string_equal(e, "a=upstream_error, b=not_json");
    free(e);
}

/* Names and reasons in the header are tokens: anything else percent-encoded. */
static void test_errors_header(void **state)
{
    struct aggmerge_part parts[] = {
        FAILED_PART("a,b=c d", "status_404"),
        FAILED_PART("m\xc3\xa9t\xc3\xa9o", "upstream_connect"),
        FAILED_PART("100%", "x y"),
        FAILED_PART("say \"hi\"\\", "deadline"),
        FAILED_PART("ok_-.~!#$&'*+^`|", "status_503"),
    };
    char *out;
    size_t len;

    assert_int_equal(aggmerge_build(parts, ARRAY_LEN(parts), &out, &len), 0);
    free(out);
    char *e = errors(parts, ARRAY_LEN(parts));
    assert_string_equal(e, "a%2Cb%3Dc%20d=status_404, m%C3%A9t%C3%A9o=upstream_connect, "
                           "100%25=x%20y, say%20%22hi%22%5C=deadline, "
                           "ok_-.~!#$&'*+^`|=status_503");
    free(e);

    assert_string_equal(aggmerge_verdict_name(AGGMERGE_OK), "ok");
    assert_string_equal(aggmerge_verdict_name(AGGMERGE_NOT_JSON), "not_json");
    assert_string_equal(aggmerge_verdict_name(AGGMERGE_FAILED), "failed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),  cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_empty),  cmocka_unit_test(test_huge),
        cmocka_unit_test(test_nested), cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_names),  cmocka_unit_test(test_all_failed),
        cmocka_unit_test(test_order),  cmocka_unit_test(test_errors_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
