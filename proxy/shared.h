/*
 * proxy/shared: budgets shared by several sluice instances through Redis.
 *
 * One struct shared per process, made when the config has a `shared:` section: a
 * hiredis connection (libevent adapter) for lease calls and one for the fleet's pause
 * messages (pub/sub), each reconnected with backoff. Every shared limit of every
 * upstream is a struct shared_user: it asks Redis for leases of release slots on the
 * budget's shared GCRA schedule (one Lua script, one round trip per lease, never one per
 * request) and hands them to its dispatcher's lease (limiter/lease); the local fair
 * queue decides which request takes a slot, the lease decides when.
 *
 * Calls have a deadline of their own (hiredis 0.14 has no async timeouts) and at most
 * one is in flight per user. The failure ladder: Redis slow → the held slots keep being
 * released, the call is retried with backoff; Redis unreachable and no slot held → the
 * lease paces locally at rate / instances (fallback); Redis back → the first call
 * charges what was released meanwhile (no burst after an outage); a Redis that lost its
 * data (a new run_id) → the schedule is fenced one horizon ahead before granting;
 * NOSCRIPT → the script is loaded again. Every transition is logged once.
 *
 * Ownership: the server owns the struct shared; an upstream owns its users (and must
 * free them before its dispatcher). Nothing here knows upstreams: a user wakes its
 * owner through the callback given at creation. Event loop only.
 */
#ifndef SLUICE_PROXY_SHARED_H
#define SLUICE_PROXY_SHARED_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct conf;
struct dispatch;
struct shared;
struct shared_user;

/* NULL (logged) on failure, or when c has no shared section. Connects in the
 * background: nothing here blocks. */
struct shared *shared_new(struct event_base *base, const struct conf *c);

/* Close the connections and free. Every user must have been freed. NULL ok. */
void shared_free(struct shared *sh);

/* A reload: reconnect when where or how to connect changed (address, db, password);
 * deadlines and the horizon apply from the next call. */
void shared_reconfigure(struct shared *sh, const struct conf *c);

/* A shared limit: limit `limit_index` of dispatcher `d` (burst `burst_tokens`), budget
 * `budget`, of upstream `upstream_name` (this instance's member is "INSTANCE/UPSTREAM"). wake(arg)
 * is called when the dispatcher may release more (slots granted, a pause over). NULL on out of
 * memory. */
struct shared_user *shared_user_new(struct shared *sh, const char *budget,
                                    const char *upstream_name, struct dispatch *d,
                                    size_t limit_index, double burst_tokens,
                                    void (*wake)(void *arg), void *arg);
void shared_user_free(struct shared_user *su); /* NULL ok */

/* After each release pass: ask for a lease when the dispatcher wants slots (no call in
 * flight, not backing off). O(1) when nothing is needed. */
void shared_user_kick(struct shared_user *su);

/* The upstream answered 429/503 with a pause of `pause_ms`: pause the shared schedule
 * in Redis for every instance and tell them (pub/sub). */
void shared_user_pause(struct shared_user *su, uint64_t pause_ms);

/* For metrics and /status. */
struct shared_user_stats {
    const char *budget;
    int fallback;       /* 1 while pacing locally */
    uint32_t instances; /* in the last reply */
    uint64_t calls_ok, calls_empty, calls_error, calls_timeout, calls_noscript;
    uint64_t fleet_pauses; /* pauses heard from other instances */
    uint64_t fences;       /* schedules fenced after a data loss */
};
void shared_user_stats(const struct shared_user *su, struct shared_user_stats *out);

/* The lease horizon in force (shared.horizon). */
uint64_t shared_horizon_ns(const struct shared *sh);

/* "redis" or "fallback", and whether the command connection is up. */
int shared_connected(const struct shared *sh);

#endif
