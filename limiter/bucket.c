/*
 * limiter/bucket: one token bucket kept as a GCRA "theoretical arrival time" (see bucket.h).
 *
 * Invariants
 *   - 1 <= interval_ns and interval_ns <= burst_ns <= SPAN_MAX_NS: every quantity the bucket
 *     adds to a clock reading is at most SPAN_MAX_NS (~146 years), and cost * interval_ns is
 *     saturated there, so max(tat, now) + cost * interval_ns cannot wrap for any clock
 *     reading below UINT64_MAX / 2. The additions saturate anyway, as a last line.
 *   - tat_ns <= last_ns + burst_ns: a take never pushes tat past the burst, and init and
 *     reconfigure place it within the burst.
 *   - last_ns never decreases; every function reads time as max(now_ns, last_ns).
 *   - Every take is booked at an instant `at` (now, or for bucket_take_since possibly the
 *     earlier instant its tokens came due) with last_ns(before) <= at <= now < at + interval,
 *     and is allowed at `at`: tat - at <= burst_ns afterwards. So the booked instants form an
 *     ordinary GCRA run, and each real take is less than one interval after its booking,
 *     which is where the window bound of bucket.h comes from.
 */
#include "limiter/bucket.h"

#include <math.h>

/* Longest span (ns) the bucket ever adds to a clock reading. */
#define SPAN_MAX_NS (UINT64_MAX / 4)

static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

/* Time to earn `cost` tokens, saturated so that a huge cost is merely "never within burst". */
static uint64_t span_ns(const struct bucket *b, uint64_t cost)
{
    if (cost > SPAN_MAX_NS / b->interval_ns)
        return SPAN_MAX_NS;
    return cost * b->interval_ns;
}

/* The bucket's notion of now: a clock that went back reads as the latest value seen. */
static uint64_t bucket_now(const struct bucket *b, uint64_t now_ns)
{
    return max_u64(now_ns, b->last_ns);
}

/* Translate a rate and a burst into the integer representation, or -1 if they are out
 * of range or too slow to represent (burst / rate beyond SPAN_MAX_NS). */
static int bucket_params(double rate_per_sec, double burst_tokens, uint64_t *interval_ns,
                         uint64_t *burst_ns)
{
    /* Negated comparisons so that NaN is rejected too. */
    if (!(rate_per_sec > 0 && rate_per_sec <= BUCKET_MAX_RATE_PER_SEC))
        return -1;
    if (!(burst_tokens >= 1 && burst_tokens <= BUCKET_MAX_BURST_TOKENS))
        return -1;

    double q = 1e9 / rate_per_sec; /* >= 1 since rate <= 1e9 */
    if (!(q <= (double)SPAN_MAX_NS))
        return -1;
    /* A rate written as a quotient (5000/h arrives as 5000.0 / 3600) is a few ulps off its
     * exact value, and ceil() would turn its 720000000 ns into 720000001. A quotient within
     * 1e-12 of an integer, relatively, is taken as that integer (an error no clock can
     * measure); anything else is rounded up, so the limit only ever errs on the slow side. */
    double n = nearbyint(q);
    double iv = fabs(q - n) <= n * 1e-12 ? n : ceil(q);
    uint64_t interval = iv < 1 ? 1 : (uint64_t)iv;
    if (interval > SPAN_MAX_NS)
        return -1;

    /* Whole tokens in integers, so a burst of N is exactly N intervals (N immediate takes);
     * a fractional part is rounded down to the nanosecond. */
    double whole_tokens = floor(burst_tokens);
    uint64_t whole = (uint64_t)whole_tokens;
    if (whole > SPAN_MAX_NS / interval)
        return -1;
    uint64_t bns = whole * interval;
    uint64_t part = (uint64_t)((burst_tokens - whole_tokens) * (double)interval);
    if (part >= interval)
        part = interval - 1;
    if (part > SPAN_MAX_NS - bns)
        return -1;

    *interval_ns = interval;
    *burst_ns = bns + part;
    return 0;
}

int bucket_init(struct bucket *b, double rate_per_sec, double burst_tokens, uint64_t now_ns)
{
    uint64_t interval, burst;

    if (bucket_params(rate_per_sec, burst_tokens, &interval, &burst) < 0)
        return -1;
    b->interval_ns = interval;
    b->burst_ns = burst;
    b->tat_ns = now_ns;
    b->last_ns = now_ns;
    return 0;
}

int bucket_reconfigure(struct bucket *b, double rate_per_sec, double burst_tokens, uint64_t now_ns)
{
    uint64_t interval, burst;

    if (bucket_params(rate_per_sec, burst_tokens, &interval, &burst) < 0)
        return -1;
    uint64_t now = bucket_now(b, now_ns);
    uint64_t ahead = b->tat_ns > now ? b->tat_ns - now : 0;
    /* The tokens held, as the time it took to earn them at the old rate... */
    uint64_t credit = ahead < b->burst_ns ? b->burst_ns - ahead : 0;
    /* ...converted to the new rate. long double keeps the product exact in the usual
     * cases; the conversion truncates, so a rate change never creates a token. */
    if (interval != b->interval_ns) {
        long double c = (long double)credit * (long double)interval / (long double)b->interval_ns;
        credit = c >= (long double)burst ? burst : (uint64_t)c;
    }
    if (credit > burst)
        credit = burst;

    b->interval_ns = interval;
    b->burst_ns = burst;
    b->tat_ns = now + (burst - credit);
    b->last_ns = now;
    return 0;
}

uint64_t bucket_wait_ns(const struct bucket *b, uint64_t cost, uint64_t now_ns)
{
    uint64_t now = bucket_now(b, now_ns);
    uint64_t due = sat_add(max_u64(b->tat_ns, now), span_ns(b, cost));
    uint64_t ahead = due - now;

    return ahead > b->burst_ns ? ahead - b->burst_ns : 0;
}

int bucket_take(struct bucket *b, uint64_t cost, uint64_t now_ns)
{
    uint64_t now = bucket_now(b, now_ns);
    uint64_t tat = sat_add(max_u64(b->tat_ns, now), span_ns(b, cost));

    b->last_ns = now;
    if (tat - now > b->burst_ns)
        return -1;
    b->tat_ns = tat;
    return 0;
}

int bucket_take_since(struct bucket *b, uint64_t cost, uint64_t now_ns, uint64_t since_ns)
{
    uint64_t now = bucket_now(b, now_ns);
    uint64_t span = span_ns(b, cost);
    uint64_t last = b->last_ns;

    b->last_ns = now;
    if (sat_add(max_u64(b->tat_ns, now), span) - now > b->burst_ns)
        return -1;
    /* The tokens came due at tat + span - burst, the first instant this take was allowed
     * (none: they always were). Booking the take then, rather than now, is what keeps a
     * late release on schedule; it is allowed at that instant by construction. */
    uint64_t at = now;
    uint64_t need = sat_add(b->tat_ns, span);
    if (need > b->burst_ns) {
        uint64_t due = need - b->burst_ns;
        /* Only for a waiter that was there when they came due (no credit for a bucket
         * nobody was waiting on), and only within one interval (beyond: the slot is lost).
         * Never before the previous take, so the booked instants stay in order. */
        if (since_ns <= due && due < now && now - due < b->interval_ns)
            at = max_u64(due, last);
    }
    b->tat_ns = sat_add(max_u64(b->tat_ns, at), span);
    return 0;
}

double bucket_tokens(const struct bucket *b, uint64_t now_ns)
{
    uint64_t now = bucket_now(b, now_ns);
    uint64_t ahead = b->tat_ns > now ? b->tat_ns - now : 0;

    /* Subtract in integers first: burst_ns may exceed 2^53, where a double loses ns. */
    if (ahead <= b->burst_ns)
        return (double)(b->burst_ns - ahead) / (double)b->interval_ns;
    return -((double)(ahead - b->burst_ns) / (double)b->interval_ns);
}

double bucket_rate_per_sec(const struct bucket *b) { return 1e9 / (double)b->interval_ns; }

double bucket_burst_tokens(const struct bucket *b)
{
    return (double)b->burst_ns / (double)b->interval_ns;
}
