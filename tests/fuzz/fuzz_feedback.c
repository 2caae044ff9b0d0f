/*
 * tests/fuzz/fuzz_feedback: libFuzzer harness for proxy/feedback (an upstream's
 * Retry-After and rate-limit headers).
 *
 * Input: up to six header values, one per line ('\n' separates them; a header value can
 * hold no newline), in the order of struct feedback_headers:
 *     Retry-After, RateLimit, RateLimit-Remaining, RateLimit-Reset,
 *     X-RateLimit-Remaining, X-RateLimit-Reset
 * An empty or missing line is an absent header (NULL). Bytes after the sixth newline are
 * ignored. "now" is fixed (the unit tests' 2026-11-23T00:00:00Z), so dates are
 * reproducible.
 *
 * Checked, besides no crash or undefined behaviour (ASan, UBSan), what feedback.h
 * promises:
 *   - feedback_parse returns 1 exactly when it set has_retry_after or has_budget;
 *   - has_retry_after and retry_after_ms agree with feedback_retry_after_ms on the same
 *     Retry-After value;
 *   - feedback_retry_after_ms, on every line, gives -1 or a delay in [0, a day];
 *   - retry_after_ms and reset_ms are at most a day (FEEDBACK_MAX_MS).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/feedback.h"

#define NFIELDS 6
#define NOW     ((time_t)1795392000)  /* 2026-11-23T00:00:00Z, as tests/unit/test_feedback.c */
#define DAY_MS  (24ull * 3600 * 1000) /* the cap documented in feedback.h */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    const char *field[NFIELDS] = {0};
    struct feedback_headers h;
    struct feedback fb;
    size_t start = 0, n = 0;
    int64_t ra;
    int rc;

    if (buf == NULL)
        abort();
    memcpy(buf, data, size);
    buf[size] = '\0';
    /* Split on '\n'; each field is NUL-terminated in place. */
    for (size_t i = 0; i <= size && n < NFIELDS; i++) {
        if (i == size || buf[i] == '\n') {
            buf[i] = '\0';
            field[n++] = buf + start;
            start = i + 1;
        }
    }

    for (size_t i = 0; i < NFIELDS; i++) {
        if (field[i] == NULL)
            continue;
        ra = feedback_retry_after_ms(field[i], NOW);
        if (ra < -1 || ra > (int64_t)DAY_MS)
            abort();
        if (field[i][0] == '\0')
            field[i] = NULL; /* absent */
    }

    h.retry_after = field[0];
    h.ratelimit = field[1];
    h.ratelimit_remaining = field[2];
    h.ratelimit_reset = field[3];
    h.x_ratelimit_remaining = field[4];
    h.x_ratelimit_reset = field[5];
    memset(&fb, 0x5a, sizeof fb);
    rc = feedback_parse(&h, NOW, &fb);

    if (rc != (fb.has_retry_after || fb.has_budget))
        abort();
    ra = feedback_retry_after_ms(h.retry_after, NOW);
    if (fb.has_retry_after != (ra >= 0))
        abort();
    if (fb.has_retry_after && fb.retry_after_ms != (uint64_t)ra)
        abort();
    if (fb.has_retry_after && fb.retry_after_ms > DAY_MS)
        abort();
    if (fb.has_budget && fb.reset_ms > DAY_MS)
        abort();

    free(buf);
    return 0;
}
