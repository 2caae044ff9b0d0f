/*
 * proxy/clock: the one real clock sluice reads. limiter/ never reads a clock; proxy/
 * passes clock_now_ns() to it, which is what lets unit tests use a fake one.
 */
#ifndef SLUICE_PROXY_CLOCK_H
#define SLUICE_PROXY_CLOCK_H

#include <stdint.h>
#include <time.h>

#define NS_PER_MS  1000000ull
#define NS_PER_SEC 1000000000ull

/* Monotonic nanoseconds (CLOCK_MONOTONIC: unaffected by wall-clock changes). */
static inline uint64_t clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

#endif
