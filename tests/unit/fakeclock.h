/*
 * tests/unit/fakeclock.h: the only fake in sluice's tests. limiter/ takes `now` as an
 * argument, so a test owns time: it starts at an arbitrary non-zero instant (to catch
 * code that assumes 0) and moves only when the test says so.
 */
#ifndef SLUICE_TESTS_FAKECLOCK_H
#define SLUICE_TESTS_FAKECLOCK_H

#include <stdint.h>

#define NS_PER_MS  1000000ull
#define NS_PER_SEC 1000000000ull

static uint64_t fake_now_ns = 1000 * NS_PER_SEC;

static inline uint64_t fake_now(void) { return fake_now_ns; }
static inline void fake_advance_ns(uint64_t ns) { fake_now_ns += ns; }
static inline void fake_advance_ms(uint64_t ms) { fake_now_ns += ms * NS_PER_MS; }

#endif
