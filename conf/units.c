/*
 * conf/units: the one parser for the numbers written in the config (see units.h).
 *
 * Grammar, shared by every parser here:
 *     number   = digit+ [ "." digit+ ]          plain decimal: no sign, no exponent,
 *                                              no spaces, no "inf"/"nan", no "0x"
 *     duration = number ( "ms" | "s" | "m" | "h" )
 *     size     = number [ ( "k" | "m" | "g" ) ] [ "b" ]   case-insensitive, powers of 1024
 *     rate     = number "/" ( "s" | "m" | "h" )
 *
 * Invariants
 *   - Durations and sizes are computed in exact integer arithmetic (integer part times
 *     the unit, plus the fraction times the unit over a power of ten), so "1.5s" is
 *     exactly 1500 and no result is silently rounded: a value finer than the unit of the
 *     result (a fraction of a millisecond or of a byte) is rejected, and so is one that
 *     does not fit in 64 bits.
 *   - Nothing here reads the locale: strtod() would read "1,5" in some locales, and a
 *     daemon's config must mean the same thing everywhere.
 */
#include "conf/units.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* Fraction digits kept after trailing zeros are dropped. With at most 9 of them, the
 * fraction (< 1e9) times any unit used here (<= 2^30) fits in 64 bits. */
#define FRAC_DIGITS_MAX 9

struct decimal {
    uint64_t ipart;     /* digits before the point */
    uint64_t frac;      /* significant digits after the point, trailing zeros removed */
    unsigned nfrac;     /* how many digits `frac` stands for: value = ipart + frac / 10^nfrac */
    int ipart_overflow; /* the integer part alone does not fit in 64 bits */
    int frac_too_long;  /* more than FRAC_DIGITS_MAX significant fraction digits */
    double value;       /* the same number as a double (for rates and plain numbers) */
};

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static uint64_t pow10_u64(unsigned n)
{
    uint64_t p = 1;
    while (n-- > 0)
        p *= 10;
    return p;
}

/* Scan a number at the start of `s`. Returns the number of characters consumed, or 0
 * when `s` does not start with one (a lone "." or "1." is not a number). */
static size_t scan_decimal(const char *s, struct decimal *d)
{
    size_t i = 0;
    memset(d, 0, sizeof *d);
    if (!is_digit(s[0]))
        return 0;
    for (; is_digit(s[i]); i++) {
        unsigned digit = (unsigned)(s[i] - '0');
        if (d->ipart > (UINT64_MAX - digit) / 10)
            d->ipart_overflow = 1;
        else
            d->ipart = d->ipart * 10 + digit;
        d->value = d->value * 10 + digit;
    }
    if (s[i] != '.')
        return i;
    if (!is_digit(s[i + 1]))
        return 0;
    i++;
    /* Remember where the last non-zero digit is, so trailing zeros cost nothing. */
    size_t start = i, last_nonzero = i;
    int any_nonzero = 0;
    for (; is_digit(s[i]); i++) {
        if (s[i] != '0') {
            last_nonzero = i;
            any_nonzero = 1;
        }
    }
    if (!any_nonzero)
        return i;
    size_t n = last_nonzero - start + 1;
    /* As a double: the first 18 fraction digits over 10^18 (both exact in a double)
     * are as precise as a double can hold. */
    uint64_t fsig = 0;
    unsigned fk = 0;
    for (size_t k = start; k < start + n && fk < 18; k++, fk++)
        fsig = fsig * 10 + (uint64_t)(s[k] - '0');
    d->value += (double)fsig / (double)pow10_u64(fk);
    if (n > FRAC_DIGITS_MAX) {
        d->frac_too_long = 1;
        return i;
    }
    for (size_t k = start; k < start + n; k++)
        d->frac = d->frac * 10 + (uint64_t)(s[k] - '0');
    d->nfrac = (unsigned)n;
    return i;
}

/* d * unit exactly. Returns 0, or -1 with *why: overflow, or a result that is not a
 * whole number of the result's unit (`fine_why`). */
static int scale_exact(const struct decimal *d, uint64_t unit, uint64_t *out, const char **why,
                       const char *fine_why)
{
    uint64_t whole, part;
    if (d->frac_too_long) {
        /* More than 9 significant fraction digits can never land on a whole unit for the
         * units used here, except for contrived sizes; call it what the user meant. */
        *why = fine_why;
        return -1;
    }
    if (d->ipart_overflow || __builtin_mul_overflow(d->ipart, unit, &whole)) {
        *why = "too large";
        return -1;
    }
    uint64_t p = pow10_u64(d->nfrac);
    uint64_t num = d->frac * unit; /* < 1e9 * 2^30: fits */
    if (num % p != 0) {
        *why = fine_why;
        return -1;
    }
    part = num / p;
    if (__builtin_add_overflow(whole, part, out)) {
        *why = "too large";
        return -1;
    }
    return 0;
}

int units_parse_duration_ms(const char *s, uint64_t *out, const char **why)
{
    struct decimal d;
    uint64_t unit;

    if (s == NULL || s[0] == '\0') {
        *why = "empty duration";
        return -1;
    }
    if (s[0] == '-') {
        *why = "must not be negative";
        return -1;
    }
    size_t n = scan_decimal(s, &d);
    if (n == 0) {
        *why = "expected a duration like 500ms, 30s, 2m or 1h";
        return -1;
    }
    const char *u = s + n;
    if (u[0] == '\0') {
        *why = "missing unit (ms, s, m or h)";
        return -1;
    }
    if (strcmp(u, "ms") == 0)
        unit = 1;
    else if (strcmp(u, "s") == 0)
        unit = 1000;
    else if (strcmp(u, "m") == 0)
        unit = 60 * 1000;
    else if (strcmp(u, "h") == 0)
        unit = 3600 * 1000;
    else {
        *why = "expected a duration like 500ms, 30s, 2m or 1h";
        return -1;
    }
    return scale_exact(&d, unit, out, why, "finer than a millisecond");
}

static int lower(char c) { return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c; }

int units_parse_size(const char *s, uint64_t *out, const char **why)
{
    struct decimal d;
    uint64_t unit = 1;

    if (s == NULL || s[0] == '\0') {
        *why = "empty size";
        return -1;
    }
    if (s[0] == '-') {
        *why = "must not be negative";
        return -1;
    }
    size_t n = scan_decimal(s, &d);
    if (n == 0) {
        *why = "expected a size like 512, 64k, 1m or 1g";
        return -1;
    }
    const char *u = s + n;
    switch (lower(u[0])) {
    case 'k':
        unit = 1024;
        u++;
        break;
    case 'm':
        unit = 1024 * 1024;
        u++;
        break;
    case 'g':
        unit = 1024 * 1024 * 1024;
        u++;
        break;
    default:
        break;
    }
    if (lower(u[0]) == 'b')
        u++;
    if (u[0] != '\0') {
        *why = "expected a size like 512, 64k, 1m or 1g";
        return -1;
    }
    return scale_exact(&d, unit, out, why, "not a whole number of bytes");
}

int units_parse_rate(const char *s, double *rate_per_sec, const char **why)
{
    struct decimal d;
    double per;

    if (s == NULL || s[0] == '\0') {
        *why = "empty rate";
        return -1;
    }
    if (s[0] == '-') {
        *why = "must be positive";
        return -1;
    }
    size_t n = scan_decimal(s, &d);
    if (n == 0 || s[n] != '/') {
        *why = "expected N/s, N/m or N/h";
        return -1;
    }
    const char *u = s + n + 1;
    if (strcmp(u, "s") == 0)
        per = 1;
    else if (strcmp(u, "m") == 0)
        per = 60;
    else if (strcmp(u, "h") == 0)
        per = 3600;
    else {
        *why = "expected N/s, N/m or N/h";
        return -1;
    }
    double r = d.value / per;
    if (!isfinite(r)) {
        *why = "too large";
        return -1;
    }
    if (!(r > 0)) {
        *why = "must be positive";
        return -1;
    }
    *rate_per_sec = r;
    return 0;
}

int units_parse_number(const char *s, double *out, const char **why)
{
    struct decimal d;

    if (s == NULL || s[0] == '\0') {
        *why = "empty number";
        return -1;
    }
    if (s[0] == '-') {
        *why = "must not be negative";
        return -1;
    }
    size_t n = scan_decimal(s, &d);
    if (n == 0 || s[n] != '\0') {
        *why = "expected a number like 10 or 2.5";
        return -1;
    }
    double v = d.value;
    if (!isfinite(v)) {
        *why = "too large";
        return -1;
    }
    *out = v;
    return 0;
}
