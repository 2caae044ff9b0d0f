/*
 * proxy/feedback: what an upstream's answer says about its own rate limit.
 *
 * Pure parsing, no I/O: the caller passes header values (NULL when absent) and the
 * current wall-clock time (for HTTP dates and epoch resets); durations come back in
 * milliseconds relative to now, capped at a day (an upstream asking for longer is taken
 * to ask for a day). Understood:
 *   Retry-After: 120 | Retry-After: Wed, 21 Oct 2026 07:28:00 GMT        (RFC 9110 10.2.3)
 *   RateLimit: "default";r=3;t=5  (IETF httpapi draft: remaining r, reset in t seconds)
 *   RateLimit-Remaining: 3 / RateLimit-Reset: 5                           (older drafts)
 *   X-RateLimit-Remaining: 3 / X-RateLimit-Reset: 1700000000 or 5         (GitHub and others;
 *                                                      a value past 1e9 is a Unix time)
 */
#ifndef SLUICE_PROXY_FEEDBACK_H
#define SLUICE_PROXY_FEEDBACK_H

#include <stdint.h>
#include <time.h>

struct feedback_headers {
    const char *retry_after;
    const char *ratelimit;
    const char *ratelimit_remaining, *ratelimit_reset;
    const char *x_ratelimit_remaining, *x_ratelimit_reset;
};

struct feedback {
    int has_retry_after;
    uint64_t retry_after_ms; /* wait before sending again */
    int has_budget;
    uint64_t remaining; /* requests the upstream still accepts before the reset */
    uint64_t reset_ms;  /* when the budget renews */
};

/* Fill `fb` from the headers present. Returns 1 when anything was understood, else 0. */
int feedback_parse(const struct feedback_headers *h, time_t now, struct feedback *fb);

/* Retry-After value alone: delay in ms, or -1 when it is not a number of seconds or an
 * HTTP date. A date in the past gives 0. */
int64_t feedback_retry_after_ms(const char *value, time_t now);

#endif
