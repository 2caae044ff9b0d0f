/*
 * proxy/feedback: parse rate-limit feedback headers. See feedback.h.
 */
#include "proxy/feedback.h"

#include <ctype.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Longest wait we believe: an upstream asking for more is treated as asking for this. */
#define FEEDBACK_MAX_MS (24ull * 3600 * 1000)

static int parse_uint(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    while (*s == ' ' || *s == '\t')
        s++;
    if (!isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    while (*end == ' ' || *end == '\t')
        end++;
    if (*end != '\0')
        return -1;
    *out = v;
    return 0;
}

static uint64_t clamp_ms(uint64_t seconds)
{
    return seconds > FEEDBACK_MAX_MS / 1000 ? FEEDBACK_MAX_MS : seconds * 1000;
}

/* An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"); the obsolete forms are rare enough. */
static int parse_http_date(const char *s, time_t *out)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    char mon[4];
    int day, year, h, m, sec, n = 0;
    struct tm tm;
    const char *p;

    if (sscanf(s, "%*3s, %2d %3s %4d %2d:%2d:%2d GMT%n", &day, mon, &year, &h, &m, &sec, &n) != 6 ||
        n == 0)
        return -1;
    p = strstr(months, mon);
    if (p == NULL || (p - months) % 3 != 0)
        return -1;
    memset(&tm, 0, sizeof(tm));
    tm.tm_mday = day;
    tm.tm_mon = (int)((p - months) / 3);
    tm.tm_year = year - 1900;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = sec;
    *out = timegm(&tm);
    return *out == (time_t)-1 ? -1 : 0;
}

int64_t feedback_retry_after_ms(const char *value, time_t now)
{
    uint64_t secs;
    time_t when;

    if (value == NULL)
        return -1;
    if (parse_uint(value, &secs) == 0)
        return (int64_t)clamp_ms(secs);
    if (parse_http_date(value, &when) == 0)
        return when <= now ? 0 : (int64_t)clamp_ms((uint64_t)(when - now));
    return -1;
}

/* A reset value: seconds from now, or a Unix time when it is that large. */
static uint64_t reset_ms(uint64_t v, time_t now)
{
    if (v > 1000000000ull)
        return (time_t)v <= now ? 0 : clamp_ms(v - (uint64_t)now);
    return clamp_ms(v);
}

/* The draft's structured field: `"policy";r=3;t=5`, possibly several items separated
 * by commas; the most restrictive item wins (least remaining). */
static int parse_ratelimit(const char *v, uint64_t *remaining, uint64_t *reset_s)
{
    int found = 0;

    while (v != NULL && *v != '\0') {
        const char *item_end = strchr(v, ',');
        size_t len = item_end ? (size_t)(item_end - v) : strlen(v);
        uint64_t r = UINT64_MAX, t = UINT64_MAX;
        const char *p = v;

        while (p < v + len) {
            const char *semi = memchr(p, ';', (size_t)(v + len - p));
            if (semi == NULL)
                break;
            p = semi + 1;
            while (*p == ' ')
                p++;
            if ((p[0] == 'r' || p[0] == 't') && p[1] == '=') {
                char *end = (char *)p + 2;
                unsigned long long num = 0;
                /* Digits only, then the end of the parameter: "-5" (which strtoull would
                 * wrap to a huge count) or "5x" is no value, as if absent. */
                if (isdigit((unsigned char)p[2])) {
                    errno = 0;
                    num = strtoull(p + 2, &end, 10);
                    if (errno != 0 || (end < v + len && *end != ';' && *end != ' ' && *end != '\t'))
                        end = (char *)p + 2;
                }
                if (end != p + 2) {
                    if (p[0] == 'r')
                        r = num;
                    else
                        t = num;
                }
            }
        }
        if (r != UINT64_MAX && (!found || r < *remaining)) {
            *remaining = r;
            *reset_s = t == UINT64_MAX ? 0 : t;
            found = 1;
        }
        v = item_end ? item_end + 1 : NULL;
    }
    return found ? 0 : -1;
}

int feedback_parse(const struct feedback_headers *h, time_t now, struct feedback *fb)
{
    int64_t ra;
    uint64_t rem, rst;

    memset(fb, 0, sizeof(*fb));
    ra = feedback_retry_after_ms(h->retry_after, now);
    if (ra >= 0) {
        fb->has_retry_after = 1;
        fb->retry_after_ms = (uint64_t)ra;
    }
    if (h->ratelimit != NULL && parse_ratelimit(h->ratelimit, &rem, &rst) == 0) {
        fb->has_budget = 1;
        fb->remaining = rem;
        fb->reset_ms = clamp_ms(rst);
    } else if (h->ratelimit_remaining != NULL && h->ratelimit_reset != NULL &&
               parse_uint(h->ratelimit_remaining, &rem) == 0 &&
               parse_uint(h->ratelimit_reset, &rst) == 0) {
        fb->has_budget = 1;
        fb->remaining = rem;
        fb->reset_ms = reset_ms(rst, now);
    } else if (h->x_ratelimit_remaining != NULL && h->x_ratelimit_reset != NULL &&
               parse_uint(h->x_ratelimit_remaining, &rem) == 0 &&
               parse_uint(h->x_ratelimit_reset, &rst) == 0) {
        fb->has_budget = 1;
        fb->remaining = rem;
        fb->reset_ms = reset_ms(rst, now);
    }
    return fb->has_retry_after || fb->has_budget;
}
