/*
 * limiter/lease: one shared limit as one instance sees it. Several sluice instances share a
 * budget through a store (Redis, through a script the proxy runs: proxy/shared); the store
 * keeps one GCRA schedule for the whole fleet and grants each instance "release slots" on it.
 * This module is everything an instance does with those grants: when each slot may be used,
 * dropping the ones it missed, how many to ask for and when, pacing on its own when the store
 * is gone, and what to charge the schedule when it is back.
 *
 * Contract
 *   - Pure arithmetic: no I/O, no clock, no store, no HTTP. Every call takes times from the
 *     caller's monotonic clock in ns (a fake one in tests). `now_ns` going back is read as the
 *     latest value seen.
 *   - Embedded in its owner (limiter/dispatch keeps one per shared limit of an upstream); it
 *     allocates nothing. The owner calls it from the event loop; it never calls back.
 *   - The caller (proxy) owns the store calls: one call in flight per budget, their deadlines,
 *     the backoff. It asks lease_want() how many slots to ask for (0: do not call), passes
 *     every reply to lease_grant() with the local times the call was sent and its reply read,
 *     and arms a timer for lease_want_at_ns() so that it never polls.
 *   - All counts are tokens: a request of cost c needs c slots (see Costs).
 *
 * Grants
 *   A reply grants k slots: slot j (0..k-1) lies at first_offset + j * T after the script's
 *   own `now` (T: the interval the script spaced them by). A negative offset means the slot was
 *   already due at the script's now (the schedule had room: its burst); such slots count as
 *   due at that now. The script's now happened, on the local clock, somewhere between t_send
 *   (call sent) and t_recv (reply read), so slot j, at offset o_j = max(first_offset + j*T, 0),
 *   may be released only in its window
 *       not_before_j = t_recv + o_j   ..   deadline_j = t_send + o_j + G      (both included)
 *   and is DROPPED (counted, never carried) once its deadline has passed. Every release is
 *   then never before its slot and at most G after it on the store's timeline, whatever the
 *   offset between the clocks, the round trip or a stalled loop. A reply whose round trip
 *   exceeds G leaves empty windows: its slots are dropped at once. Slots of one grant are
 *   evenly spaced, so they are kept as a run (first window, spacing, count); a new grant's
 *   slots come after those already held on the schedule and are appended as the next run.
 *   At most LEASE_MAX_RUNS runs are held (lease_want() asks for nothing while they could not
 *   fit); a grant that does not fit is dropped.
 *
 * Costs
 *   A request of cost c goes when c slots are in hand: the slots already gathered for it plus
 *   those whose window is open now. lease_claim() gathers the slots whose window is open while
 *   the rest of the cost is not there yet, so each slot is taken in its own window; gathered
 *   slots wait (never dropped) for the request, or for the next one if it leaves. With cost 1
 *   and one shared limit per upstream nothing is ever gathered.
 *
 * Overshoot bound
 *   Let T be the schedule's interval, tau = (burst - 1) * T its tolerance, G the grace. One
 *   exact GCRA (rate, burst) allows floor((W + tau) / T) + 1 tokens in any window of length W
 *   (both ends included). The slots the script hands out, to every instance, form such a
 *   GCRA run on the store's timeline (tat only moves forward by k * T from max(tat, now); a
 *   slot due before the script's now counts as due at that now, which stays within tau). Each
 *   release lies in [slot, slot + G], so the releases made from leases in a window of length W
 *   come from slots in a window of length W + G, and across the whole fleet any window of
 *   length W holds at most
 *       floor((W + tau) / T) + 1 + ceil(G / T)
 *   tokens: what one exact GCRA (rate, burst) allows, plus ceil(G / T). This holds whatever
 *   the clock offsets between the instances and the store, the round trips or the stalls of
 *   any event loop (clocks are assumed to tick at the same rate over a window). With costs
 *   above 1 or several shared limits on one upstream, add the slots each lease had gathered
 *   when the window opened: at most C - 1 per lease (C with several shared limits on one
 *   upstream), C being the largest cost. Releases made while pacing locally (fallback) are
 *   outside the schedule and outside this bound: the fleet then stays near the limit only as
 *   far as every instance's n is right, and lease_recover() hands their count back so the next
 *   call charges them to the schedule (no burst after the outage).
 *
 * Asking for slots (lease_want)
 *   The instance's share is S = H / T / n slots (at least 1; n from the last reply): it never
 *   holds more, so instances that are all backlogged get rate / n each, whichever asks first.
 *   When the schedule has room, slots are granted from now on and used at once, so an instance
 *   alone with demand still gets the whole rate, S at a time.
 *   Nothing without a backlog (waiting tokens). Nothing while the slots held still reach at
 *   least H/2 ahead (renew when less than half the horizon is covered), while more than S / 2
 *   are held (one call per half share, never one per release), while a zero grant's "ask
 *   again at" has not come, during a fleet pause, or while no run could be stored. Else
 *   backlog + what this instance released over the last horizon (expected arrivals) - slots
 *   held and gathered, when that is positive, capped at S - held. The script caps each grant
 *   at S too (with its own, newer n).
 *
 * The failure ladder
 *   The store slow: nothing to do here, held slots keep being released in their windows.
 *   The store unreachable: the caller calls lease_fallback() as soon as it decides so. Slots
 *   still held are used first (they are the schedule's); once none is held, the lease paces
 *   locally at rate / n (n: instances in the last reply, 1 before any), burst 1, and counts
 *   those releases. The store back: lease_recover() leaves fallback and returns that count
 *   (the debit for the next call), zeroing it.
 *   A fleet pause (an upstream 429 seen by any instance): lease_drop_until() drops held slots
 *   before its end, and slots gathered, and nothing is released before it, in any mode.
 */
#ifndef SLUICE_LIMITER_LEASE_H
#define SLUICE_LIMITER_LEASE_H

#include <stdint.h>

#define LEASE_NEVER              UINT64_MAX
#define LEASE_MAX_RUNS           16
#define LEASE_DEFAULT_HORIZON_NS 500000000ull     /* 500 ms */
#define LEASE_MAX_HORIZON_NS     3600000000000ull /* 1 h */
#define LEASE_GRACE_MIN_NS       1000000ull       /* default grace: clamp(T / 2, 1 ms, 20 ms) */
#define LEASE_GRACE_MAX_NS       20000000ull
#define LEASE_MAX_GRACE_NS       60000000000ull /* largest grace accepted: 1 min */

enum lease_mode {
    LEASE_REDIS,    /* releases follow the slots granted */
    LEASE_FALLBACK, /* the store is unreachable: held slots first, then local pacing */
};

/* One reply of the store's script, as numbers. */
struct lease_reply {
    uint32_t slots;          /* k granted; 0: none */
    int64_t first_offset_ns; /* slot 0 after the script's now; negative: already due */
    uint64_t interval_ns;    /* T the script spaced the slots by; 0: the lease's own */
    uint32_t instances;      /* instances active on the budget (n); 0 read as 1 */
    uint64_t retry_in_ns;    /* slots == 0: ask again no sooner than this after t_recv */
};

/* A run of evenly spaced slots (one grant, or its slots already due). Internal. */
struct lease_run {
    uint64_t nb_ns;   /* not_before of its first slot left (local clock) */
    uint64_t dl_ns;   /* deadline of that slot */
    uint64_t step_ns; /* between two slots: the grant's T, 0 for slots due at once */
    uint32_t count;   /* slots left */
};

/* Counters, for metrics and the status page. Tokens throughout. Invariant:
 * granted = (released - released_in_fallback) + dropped + held + gathered. */
struct lease_counters {
    uint64_t granted;              /* slots granted by replies */
    uint64_t released;             /* tokens released (slots used and fallback releases) */
    uint64_t dropped;              /* slots lost: deadline passed, fleet pause, empty window
                                      (round trip over G), no room to hold them */
    uint64_t released_in_fallback; /* tokens released on local pacing (never reset) */
    uint64_t late_sum_ns;          /* sum over releases timed by a slot of now - not_before */
    uint64_t late_count;           /* releases in that sum */
    uint64_t late_max_ns;          /* the largest of them */
};

struct lease {
    uint64_t interval_ns; /* T: ceil(1e9 / rate), as limiter/bucket rounds it */
    double burst_tokens;  /* the budget's burst (the script's tau = (burst - 1) * T) */
    uint64_t horizon_ns;  /* H: how far ahead slots are asked for */
    uint64_t grace_ns;    /* G: how late a slot may still be released */
    uint32_t instances;   /* n from the last reply, >= 1 */
    int mode;             /* enum lease_mode */
    struct lease_run runs[LEASE_MAX_RUNS]; /* ring, in schedule order */
    uint32_t run_head;                     /* index of the first run */
    uint32_t nruns;                        /* runs held */
    uint64_t held;                         /* slots in the runs */
    uint64_t gathered;                     /* slots claimed for a request not complete yet */
    uint64_t ask_after_ns;                 /* a zero grant said: ask no sooner; 0: none */
    uint64_t pause_until_ns;               /* fleet pause: nothing released before; 0: none */
    uint64_t fb_tat_ns;                    /* fallback: next local release allowed at */
    uint64_t debit;        /* tokens released on local pacing since the last recover */
    uint64_t last_take_ns; /* latest release; 0: none yet */
    uint64_t epoch_ns;     /* start of the current demand epoch (one horizon long) */
    uint64_t demand_cur;   /* tokens released in the current epoch */
    uint64_t demand_prev;  /* ... and in the previous one */
    uint64_t last_ns;      /* latest `now` seen */
    struct lease_counters stats;
};

/* A lease holding no slot, mode LEASE_REDIS, n = 1. rate_per_sec and burst_tokens as for
 * limiter/bucket (the budget's rate and burst); horizon_ns 0: LEASE_DEFAULT_HORIZON_NS, at
 * most LEASE_MAX_HORIZON_NS; grace_ns 0: clamp(T / 2, 1 ms, 20 ms), at most
 * LEASE_MAX_GRACE_NS. Returns 0, or -1 on an invalid argument. */
int lease_init(struct lease *l, double rate_per_sec, double burst_tokens, uint64_t horizon_ns,
               uint64_t grace_ns, uint64_t now_ns) __attribute__((warn_unused_result));

/* New rate, burst, horizon and grace (same rules), keeping the slots held (their windows are
 * fixed), those gathered, the mode, the debit, a pause and the counters. The new T and G apply
 * to later grants, asks and local pacing. Returns 0, or -1 (lease unchanged). */
int lease_reconfigure(struct lease *l, double rate_per_sec, double burst_tokens,
                      uint64_t horizon_ns, uint64_t grace_ns, uint64_t now_ns)
    __attribute__((warn_unused_result));

/* A reply read at t_recv_ns for a call sent at t_send_ns (local clock; t_send <= t_recv, a
 * later t_send is read as t_recv). Appends its slots after those held (see Grants), records n;
 * a zero grant records when to ask again. Slots whose deadline passed before t_recv are
 * dropped first. The caller then kicks its dispatcher: a lease holding no slot made it wait. */
void lease_grant(struct lease *l, uint64_t t_send_ns, uint64_t t_recv_ns,
                 const struct lease_reply *r);

/* Take `cost` tokens (>= 1; 0 read as 1) now. First drops the held slots whose deadline has
 * passed. Succeeds when the slots gathered plus those whose window contains now cover the
 * cost (the earliest are used); in fallback, when no slot is held beyond those open now and
 * the local pace allows a release (the open ones and the gathered ones are used, the rest is
 * charged to the local pace and the debit). Never during a fleet pause. Returns 0 (taken) or
 * -1 (nothing taken but the drops). */
int lease_take(struct lease *l, uint64_t cost, uint64_t now_ns);

/* A request of `cost` cannot go yet: gather the slots whose window is open now for it, up to
 * its cost (see Costs). Drops expired slots first. Nothing during a fleet pause. */
void lease_claim(struct lease *l, uint64_t cost, uint64_t now_ns);

/* Nanoseconds until lease_take(cost) can succeed: 0 exactly when it would now. Later
 * answers assume the slots coming due meanwhile are claimed in their windows. LEASE_NEVER
 * when the slots held (with fallback pacing) cannot cover the cost: the caller then waits for
 * a grant, not a timer. */
uint64_t lease_wait_ns(const struct lease *l, uint64_t cost, uint64_t now_ns);

/* When lease_claim(cost) could next gather a slot (a held slot's window opens; now if one is
 * open), or LEASE_NEVER (nothing held, or the cost already gathered). For the caller's timer
 * while a cost above 1 is being gathered. */
uint64_t lease_claim_at_ns(const struct lease *l, uint64_t cost, uint64_t now_ns);

/* Predicted wait, from start_ns, for `tokens` tokens (a whole queue's) through this lease:
 * the slots gathered and held cover the first ones at their windows, the rest come at this
 * instance's expected share, rate / n (one per T * n), after them or after the fleet pause.
 * For admission; never LEASE_NEVER (saturates). */
uint64_t lease_predict_ns(const struct lease *l, uint64_t tokens, uint64_t start_ns);

/* Slots to ask the store for now, given `backlog` tokens waiting (see Asking for slots). */
uint32_t lease_want(const struct lease *l, uint64_t backlog, uint64_t now_ns);

/* When lease_want(backlog) becomes positive if nothing else happens (no release, no grant,
 * no change of backlog): now_ns if it is now, LEASE_NEVER without a backlog. Never an instant
 * <= now_ns at which lease_want() is 0, so a timer armed for it cannot spin. */
uint64_t lease_want_at_ns(const struct lease *l, uint64_t backlog, uint64_t now_ns);

/* The store is unreachable (the caller decides: a failed or timed-out call, a lost
 * connection): enter LEASE_FALLBACK (see The failure ladder). Again while in it: no change. */
void lease_fallback(struct lease *l, uint64_t now_ns);

/* The store answers again: back to LEASE_REDIS. Returns the tokens released on local pacing
 * since the last recover (the debit the next call charges to the schedule) and zeroes it;
 * the caller keeps it until a call carrying it succeeds. */
uint64_t lease_recover(struct lease *l);

/* LEASE_REDIS or LEASE_FALLBACK. */
int lease_mode(const struct lease *l);

/* The fleet paused the budget until until_ns: drop every held slot whose not_before is before
 * it, and the slots gathered (all counted as dropped), and release nothing before it, in any
 * mode. A later pause extends, an earlier one never shortens. */
void lease_drop_until(struct lease *l, uint64_t until_ns);

/* Observers. Slots held now (those whose deadline passed not counted), slots gathered, n of
 * the last reply, the end of a fleet pause (0: none), the parameters. */
uint64_t lease_held(const struct lease *l, uint64_t now_ns);
uint64_t lease_gathered(const struct lease *l);
uint32_t lease_instances(const struct lease *l);
uint64_t lease_paused_until(const struct lease *l);
uint64_t lease_interval_ns(const struct lease *l);
uint64_t lease_grace_ns(const struct lease *l);
uint64_t lease_horizon_ns(const struct lease *l);
const struct lease_counters *lease_counters(const struct lease *l);

#endif
