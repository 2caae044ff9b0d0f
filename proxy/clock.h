/*
 * proxy/clock: the one real clock sluice reads. limiter/ never reads a clock; proxy/
 * passes clock_now_ns() to it, which is what lets unit tests use a fake one.
 */
#ifndef SLUICE_PROXY_CLOCK_H
#define SLUICE_PROXY_CLOCK_H

#include <stdint.h>
#include <sys/time.h>
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

/* A duration in milliseconds as the struct timeval libevent takes. */
static inline struct timeval clock_ms_timeval(uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

/* A duration in nanoseconds as a struct timeval, rounded up to the microsecond (a timer
 * that fires a microsecond early would find nothing to do and spin once more). */
static inline struct timeval clock_ns_timeval(uint64_t ns)
{
    uint64_t us = ns / 1000 + (ns % 1000 != 0);
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
    return tv;
}

#endif
