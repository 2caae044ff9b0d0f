/*
 * tests/fuzz/fuzz_units: libFuzzer harness for conf/units (durations, sizes, rates,
 * plain numbers).
 *
 * Input: one value as written in the config. It is copied into a NUL-terminated string
 * (an embedded NUL ends it early) and given to every parser of conf/units.h.
 *
 * Checked, besides no crash or undefined behaviour (ASan, UBSan), what units.h promises:
 *   - each parser returns 0 or -1, and on -1 sets a non-empty reason and leaves *out as
 *     it was;
 *   - a rate is finite and > 0; a number is finite and >= 0;
 *   - an accepted duration or size reads back the same when printed in its base unit
 *     ("1.5s" -> 1500 -> "1500ms" -> 1500), so the exact integer arithmetic holds.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/units.h"

#define SENTINEL_U64 0x5a5a5a5a5a5a5a5aull
#define SENTINEL_DBL (-12345.0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A failed parse has a reason and left the output alone. */
static void check_failure(const char *why)
{
    if (why == NULL || why[0] == '\0')
        abort();
}

static void check_u64(int (*parse)(const char *, uint64_t *, const char **), const char *s,
                      const char *unit)
{
    uint64_t out = SENTINEL_U64, again = SENTINEL_U64;
    const char *why = NULL;
    char text[32];
    int rc = parse(s, &out, &why);

    if (rc == -1) {
        check_failure(why);
        if (out != SENTINEL_U64)
            abort();
        return;
    }
    if (rc != 0)
        abort();
    snprintf(text, sizeof text, "%llu%s", (unsigned long long)out, unit);
    if (parse(text, &again, &why) != 0 || again != out)
        abort();
}

static void check_dbl(int (*parse)(const char *, double *, const char **), const char *s,
                      int positive)
{
    double out = SENTINEL_DBL;
    const char *why = NULL;
    int rc = parse(s, &out, &why);

    if (rc == -1) {
        check_failure(why);
        if (out != SENTINEL_DBL)
            abort();
        return;
    }
    if (rc != 0 || !isfinite(out) || out < 0 || (positive && !(out > 0)))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    if (s == NULL)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';

    check_u64(units_parse_duration_ms, s, "ms");
    check_u64(units_parse_size, s, "");
    check_dbl(units_parse_rate, s, 1);
    check_dbl(units_parse_number, s, 0);

    free(s);
    return 0;
}
