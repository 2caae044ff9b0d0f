/*
 * limiter/fairq: the release order of one dispatcher's waiters. Waiters are grouped into
 * flows by key (an API key, a client address...); flows are served by strict priority
 * classes and, within a class, by deficit round robin weighted by cost, FIFO within a flow.
 * Each flow may carry its own token buckets (per-key limits).
 *
 * Contract
 *   - Owned by exactly one dispatcher (limiter/dispatch), which is its only caller. It knows
 *     nothing of deadlines, in-flight counts or the upstream-wide limits: the dispatcher keeps
 *     those, and asks fairq only "whose turn is it" (fairq_select) and tells it "that one
 *     went" (fairq_commit).
 *   - No clock, no I/O, no callbacks: every call that needs time takes `now_ns`.
 *   - Waiters are embedded in the caller's objects and only linked here (fprev/fnext, flow).
 *   - Flows are owned by the fairq: created on first sight of a key (the key bytes copied
 *     once), freed when idle. Two permanent flows are never freed: the default flow (no key:
 *     NULL or length 0) and the overflow flow (FAIRQ_OVERFLOW_KEY).
 *   - Not thread-safe; sluice runs one event loop.
 *
 * Policies
 *   - Cap: at most max_keys keyed flows. A new key arriving at the cap first recycles the
 *     least recently idle flow if that flow has nothing queued, full per-key buckets and no
 *     pause (it carries no state, so nothing is lost); otherwise the new key shares the
 *     overflow flow,
 *     which is one flow for fairness, per-key limits and the per-key queue share. A flow with
 *     waiters is never evicted. Keys longer than FAIRQ_MAX_KEY_LEN also use the overflow flow.
 *   - Idle expiry: a flow with no waiter goes to the tail of an idle list. Every keyed
 *     fairq_flow_get() looks at the head of that list (at most FAIRQ_EXPIRE_PER_CALL flows)
 *     and frees those idle for key_idle_ns whose per-key buckets are full and which are not
 *     paused; any other goes back to the tail. No scan of all flows, no timer.
 *   - DRR: when a flow comes to the front of its class's ring it gets a quantum of
 *     max(quantum, cost of its head) tokens and then releases waiters while their cost fits
 *     its deficit; a flow whose queue empties (or which is parked, below) loses its deficit.
 *     quantum 0 means "the largest cost seen so far", which gives flows of different costs
 *     equal token shares. The head of the front flow is always releasable as far as DRR is
 *     concerned, so choosing is O(1).
 *   - Per-key limits: a flow whose own buckets cannot grant its head's cost is "parked" in a
 *     min-heap by the time they can, out of the ring, so it never blocks the others; it
 *     rejoins the ring's tail when due. O(log n) per park/unpark, n = parked flows. A late
 *     release keeps the per-key schedule as the upstream-wide one does (limiter/bucket.h).
 *   - Per-key pause: a paused flow (fairq_flow_pause_until) is parked the same way until
 *     the pause ends, whatever its tokens, and is never freed or recycled while paused.
 *   - Priorities: class 0 first, strictly, among flows that are eligible (not parked).
 *     Starvation guard: after `priority_guard` consecutive releases from a class while a
 *     lower class had an eligible waiter, the next release comes from the lower classes:
 *     the one whose front waiter has waited longest (aging across the lower classes).
 *
 * Complexity: get (hash look-up, seeded SipHash so clients cannot choose colliding keys),
 * push, push_head, remove, select, commit: O(1) amortised plus O(log n) when a flow is
 * parked or unparked; front and wake: O(FAIRQ_MAX_CLASSES) and O(1); peek as get; a walk
 * over the active flows (fairq_iter) O(active flows), never the idle ones. Reconfigure:
 * O(flows).
 * Memory: about 450 bytes per flow plus its key; the hash table and the parked heap grow
 * with the number of flows (bounded by max_keys), never per request.
 */
#ifndef SLUICE_LIMITER_FAIRQ_H
#define SLUICE_LIMITER_FAIRQ_H

#include <stddef.h>
#include <stdint.h>

struct waiter;
struct fairq;
struct fairq_flow;
struct fairq_sub;

#define FAIRQ_MAX_CLASSES      4
#define FAIRQ_MAX_KEY_LIMITS   4
#define FAIRQ_MAX_KEY_LEN      256
#define FAIRQ_DEFAULT_MAX_KEYS 10000
#define FAIRQ_DEFAULT_IDLE_NS  (60ull * 1000000000ull)
#define FAIRQ_DEFAULT_GUARD    10
#define FAIRQ_EXPIRE_PER_CALL  2
#define FAIRQ_OVERFLOW_KEY     "~overflow"
#define FAIRQ_NEVER            UINT64_MAX

struct fairq_limit {
    double rate_per_sec; /* > 0 */
    double burst_tokens; /* >= 1 */
};

/* Zero in any field means its default. */
struct fairq_config {
    const struct fairq_limit *key_limits; /* per-flow buckets, copied; NULL: none */
    size_t nkey_limits;                   /* 0..FAIRQ_MAX_KEY_LIMITS */
    uint32_t max_keys;                    /* keyed flows; 0: FAIRQ_DEFAULT_MAX_KEYS */
    uint32_t key_queue_share;             /* waiters per flow; 0: no per-flow cap */
    uint64_t key_idle_ns;                 /* idle time before a flow is freed; 0: 60 s */
    uint32_t priority_classes;            /* 0 or 1: one class; at most FAIRQ_MAX_CLASSES */
    uint32_t priority_guard;              /* see Policies; 0: FAIRQ_DEFAULT_GUARD */
    uint32_t quantum_tokens;              /* DRR quantum; 0: the largest cost seen */
    uint64_t hash_seed[2];                /* random bytes from the caller; read by new only */
};

/* 1 if `cfg` would be accepted (by new and reconfigure), else 0. */
int fairq_config_valid(const struct fairq_config *cfg);

/* A fairq with its two permanent flows. NULL on an invalid config or out of memory. */
struct fairq *fairq_new(const struct fairq_config *cfg, uint64_t now_ns)
    __attribute__((warn_unused_result));

/* Frees every flow. Waiters still linked are unlinked from their flows (their arrival
 * links are the dispatcher's business). NULL ok. */
void fairq_free(struct fairq *q);

/* New limits, caps and classes, all or nothing (-1: nothing changed). Flows, their
 * queues and deficits stay; bucket i of every flow keeps its balance when key limit i still
 * exists, a new one starts full. Parked flows rejoin their rings (their due times may have
 * changed). A lower max_keys frees nothing: new keys use the overflow flow until enough
 * flows expire. Waiters keep the class they were queued in. O(flows). */
int fairq_reconfigure(struct fairq *q, const struct fairq_config *cfg, uint64_t now_ns)
    __attribute__((warn_unused_result));

/* The flow for `key` (key_len bytes, need not be NUL-terminated; copied on creation),
 * created if new. NULL/0: the default flow, with no hashing. Never NULL: at the cap, out of
 * memory, or for a key longer than FAIRQ_MAX_KEY_LEN, the overflow flow. Runs the amortised
 * idle expiry. A new flow starts idle: it expires like any other if no waiter joins it.
 * The pointer is valid until the next fairq call that may free flows (get, reconfigure,
 * free) unless a waiter is queued in it. */
struct fairq_flow *fairq_flow_get(struct fairq *q, const char *key, size_t key_len,
                                  uint64_t now_ns);

/* The flow for `key` if it exists (default/overflow flows included), else NULL; creates
 * nothing, expires nothing. */
struct fairq_flow *fairq_flow_find(const struct fairq *q, const char *key, size_t key_len);

/* The flow fairq_flow_get(q, key, key_len, now_ns) would return, changing nothing (no flow
 * made, expired, recycled or moved on the idle list): an existing flow, the overflow flow
 * where get would put the key there (too long; at max_keys with no flow to recycle after
 * the idle expiry get runs first), or NULL where get would make a new flow (or recycle
 * one into it), which starts empty: nothing queued, full per-key buckets, no pause. The
 * fairq_flow_len, _cost, _paused_until and _wait_ns observers take that NULL as such a
 * flow. Out of memory in get (which gives the overflow flow) is not foreseen. O(1)
 * amortised, as get. */
const struct fairq_flow *fairq_flow_peek(const struct fairq *q, const char *key, size_t key_len,
                                         uint64_t now_ns);

/* Whether `f` holds key_queue_share waiters already (always 0 without a share). */
int fairq_flow_full(const struct fairq *q, const struct fairq_flow *f);
/* Waiters queued in `f` and the tokens they need (NULL: a new flow, 0). */
size_t fairq_flow_len(const struct fairq_flow *f);
uint64_t fairq_flow_cost(const struct fairq_flow *f);
/* The first waiter of its highest non-empty class, or NULL. */
const struct waiter *fairq_flow_head(const struct fairq_flow *f);
/* The key bytes and length ("" / 0 for the default flow). */
const char *fairq_flow_key(const struct fairq_flow *f, size_t *key_len);
/* No release from `f` before until_ns (the upstream asked this key to wait): its waiters,
 * queued now or later, step aside (parked) until then, like a flow short of its own tokens.
 * A later end extends the pause, an earlier one never shortens it. While paused the flow is
 * neither freed nor recycled, even with no waiter. O(log n) per class with waiters. */
void fairq_flow_pause_until(struct fairq *q, struct fairq_flow *f, uint64_t until_ns,
                            uint64_t now_ns);
/* The end of f's pause as set (possibly past); 0 if never paused or f is NULL. */
uint64_t fairq_flow_paused_until(const struct fairq_flow *f);
/* Time until every per-key bucket of `f` grants `cost` (0 without per-key limits; NULL: a
 * new flow's full buckets). */
uint64_t fairq_flow_wait_ns(const struct fairq *q, const struct fairq_flow *f, uint64_t cost,
                            uint64_t now_ns);
/* Tokens of per-key limit `i` of `f` now (0 for an index out of range). */
double fairq_flow_tokens(const struct fairq *q, const struct fairq_flow *f, size_t i,
                         uint64_t now_ns);
/* Per-key limits configured, and the burst of limit `i` (0 out of range). */
size_t fairq_nkey_limits(const struct fairq *q);
double fairq_limit_burst(const struct fairq *q, size_t i);
/* Whether `cost` exceeds the burst of some per-key limit (no wait would grant it). */
int fairq_cost_too_big(const struct fairq *q, uint64_t cost);

/* Link `w` (cost >= 1, not in any flow) at the tail of its class in `f`. No cap is checked
 * here: the dispatcher checks fairq_flow_full() first. */
void fairq_push(struct fairq *q, struct fairq_flow *f, struct waiter *w, uint64_t now_ns);

/* Link a released waiter back at the head of its flow (found by w->flow_id; if that flow
 * was freed meanwhile, a flow made since for the same key, else the overflow flow, or the
 * default flow for a default-flow waiter), and put that flow at the front of its class's
 * ring with a fresh turn, so it goes next among its class. If that flow is paused, it is
 * parked until the pause ends instead and rejoins the ring's tail then. Uses
 * w->prio_class. */
void fairq_push_head(struct fairq *q, struct waiter *w, uint64_t now_ns);

/* Unlink `w` from its flow (cancel, expiry, shutdown). No-op if it is in no flow. */
void fairq_remove(struct fairq *q, struct waiter *w, uint64_t now_ns);

/* The waiter whose turn it is, still linked, with its per-key tokens available now; or
 * NULL when no eligible flow has a waiter. Moves due parked flows back into their rings and
 * parks the flows it finds short of per-key tokens. The dispatcher either releases it with
 * fairq_commit() at the same now_ns or leaves it (it stays the answer until something
 * changes). */
struct waiter *fairq_select(struct fairq *q, uint64_t now_ns);

/* The waiter fairq_select() would consider first, without changing anything (parked flows
 * not moved, per-key tokens not checked); NULL if no ring holds a flow. */
const struct waiter *fairq_front(const struct fairq *q);

/* `w`, just returned by fairq_select(q, now_ns), is released: takes its cost from its
 * flow's buckets (bucket_take_since: booked as of their due time when `w` was waiting since
 * since_ns and they came due less than one interval ago) and deficit, unlinks it (w->flow
 * becomes NULL; flow_id stays). */
void fairq_commit(struct fairq *q, struct waiter *w, uint64_t now_ns, uint64_t since_ns);

/* When the earliest parked flow is due (FAIRQ_NEVER if none). */
uint64_t fairq_parked_wake_ns(const struct fairq *q);

/* A walk over the flows holding waiters (fairq_active_flows() of them), each once, in no
 * particular order, without visiting idle flows: the rings and the parked heap hold exactly
 * the active flows' non-empty classes. Start with fairq_iter_init(); fairq_iter_next()
 * gives the next flow or NULL at the end. O(active flows x classes) for a whole walk, no
 * allocation. The walk is valid only while `q` is not changed (any call but the const
 * observers ends it). The fields are the walk's own. */
struct fairq_iter {
    unsigned cls;                 /* ring being walked; FAIRQ_MAX_CLASSES: the parked heap */
    const struct fairq_sub *next; /* next sub in that ring; NULL: its front */
    size_t heap_idx;              /* next index in the parked heap */
};

void fairq_iter_init(struct fairq_iter *it);
const struct fairq_flow *fairq_iter_next(const struct fairq *q, struct fairq_iter *it);

/* Observers: keyed flows allocated (the two permanent ones not counted), flows holding
 * waiters (permanent ones counted), and flows parked for their own tokens. */
size_t fairq_nkeys(const struct fairq *q);
size_t fairq_active_flows(const struct fairq *q);
size_t fairq_parked_flows(const struct fairq *q);
uint32_t fairq_classes(const struct fairq *q);

#endif
