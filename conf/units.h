/*
 * conf/units: the one parser for durations, sizes and rates written in the config.
 *
 *   durations  "500ms", "30s", "2m", "1h", also "1.5s"; a bare number is rejected
 *   sizes      "512", "64k", "1m", "1g" (powers of 1024; case-insensitive)
 *   rates      "10/s", "5000/h", "0.5/s", "100/m"
 *   numbers    "10", "2.5" (plain decimal: no sign, no exponent, no inf/nan)
 *
 * Each returns 0 and writes *out, or -1 with a short reason in *why (a static string)
 * when the text is malformed, negative, zero where zero makes no sense, or overflows.
 * Pure functions: no allocation, no global state.
 */
#ifndef SLUICE_CONF_UNITS_H
#define SLUICE_CONF_UNITS_H

#include <stdint.h>

int units_parse_duration_ms(const char *s, uint64_t *out, const char **why);
int units_parse_size(const char *s, uint64_t *out, const char **why);
int units_parse_rate(const char *s, double *rate_per_sec, const char **why);
int units_parse_number(const char *s, double *out, const char **why);

#endif
