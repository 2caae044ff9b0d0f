/*
 * limiter/fairq: flows by key, strict priority classes, deficit round robin (see fairq.h).
 *
 * Structure
 *   flow ── sub[class] ── FIFO of waiters (fprev/fnext)
 *   ring[class]: circular list of the subs of that class that have waiters and are eligible;
 *                ring.front is the sub whose turn it is.
 *   heap:        subs whose flow's own buckets cannot grant their head yet, by due time.
 *   table:       keyed flows by seeded hash (chaining); lru: keyed flows with no waiter.
 *
 * Invariants
 *   - A sub is in exactly one of three states: EMPTY (no waiter, deficit 0, turn 0, in no
 *     ring, not in the heap), ACTIVE (waiters, in its class's ring), PARKED (waiters, in the
 *     heap, deficit 0, turn 0).
 *   - Only a ring's front may have turn == 1; a front with turn == 1 has deficit >= its head's
 *     cost (normalize() restores this after every change to the front), so the front's head is
 *     always the next waiter of its class as far as DRR goes. A front with turn == 0 gets
 *     max(quantum, head cost) when it releases, which covers its head: choosing is O(1).
 *   - f->nqueued == 0 iff the flow is on the idle list (keyed flows) or idle (permanent ones);
 *     nactive counts flows with nqueued > 0.
 *   - Every flow's bucket i has the parameters of key limit i (reconfigure applies them to all).
 *   - heap_cap >= (nkeys + 2) * FAIRQ_MAX_CLASSES, ensured when a flow is created, so parking
 *     never allocates.
 */
#include "limiter/fairq.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "limiter/bucket.h"
#include "limiter/queue.h"

#define HEAP_NONE   UINT32_MAX
#define TABLE_MIN   16
#define ID_DEFAULT  1
#define ID_OVERFLOW 2

enum { SUB_EMPTY, SUB_ACTIVE, SUB_PARKED };
enum { FLOW_KEYED, FLOW_DEFAULT, FLOW_OVERFLOW };

struct fairq_sub {
    struct waiter *head, *tail;      /* this flow's waiters of this class, FIFO */
    struct fairq_sub *rprev, *rnext; /* ring links while ACTIVE */
    uint64_t deficit;                /* DRR credit, tokens */
    uint64_t due_ns;                 /* while PARKED: when the flow's buckets grant the head */
    uint32_t heap_idx;               /* while PARKED: index in the heap, else HEAP_NONE */
    uint8_t cls;                     /* index in flow->sub[] */
    uint8_t state;                   /* SUB_* */
    uint8_t turn;                    /* 1: at the front, quantum already added */
};

struct fairq_flow {
    struct fairq_flow *hnext;               /* hash chain */
    struct fairq_flow *lprev, *lnext;       /* idle list, while in_lru */
    uint64_t hash;                          /* seeded hash of the key */
    uint64_t id;                            /* unique within this fairq, never reused */
    uint64_t idle_since_ns;                 /* when it joined the idle list */
    uint64_t cost_queued;                   /* sum of its waiters' costs, tokens */
    uint64_t pause_until_ns;                /* no release before (the upstream said so for
                                               this key); 0: never paused */
    uint32_t nqueued;                       /* waiters linked, all classes */
    uint16_t key_len;                       /* bytes in key[] (no NUL counted) */
    uint8_t kind;                           /* FLOW_* */
    uint8_t in_lru;                         /* 1 while on the idle list */
    struct bucket kb[FAIRQ_MAX_KEY_LIMITS]; /* per-key buckets, nkey_limits in use */
    struct fairq_sub sub[FAIRQ_MAX_CLASSES];
    char key[]; /* key_len bytes + NUL */
};

struct fairq_ring {
    struct fairq_sub *front; /* whose turn it is; NULL when the ring is empty */
};

struct fairq {
    struct fairq_ring ring[FAIRQ_MAX_CLASSES];
    struct fairq_flow **table; /* nbuckets chains */
    size_t nbuckets;           /* power of two */
    size_t nkeys;              /* keyed flows allocated */
    size_t nactive;            /* flows with waiters */
    struct fairq_flow *lru_head, *lru_tail;
    struct fairq_sub **heap; /* parked subs, min-heap by due_ns */
    size_t nheap, heap_cap;
    struct fairq_flow *dflt, *overflow; /* the permanent flows */
    struct fairq_limit key_limits[FAIRQ_MAX_KEY_LIMITS];
    size_t nkey_limits;
    uint32_t max_keys;
    uint32_t share;    /* waiters per flow, 0: none */
    uint32_t nclasses; /* 1..FAIRQ_MAX_CLASSES */
    uint32_t guard;    /* releases before a lower class gets one */
    uint32_t quantum;  /* 0: max_cost */
    uint32_t max_cost; /* largest cost pushed so far */
    uint32_t streak;   /* consecutive releases that passed over an eligible lower class */
    uint64_t idle_ns;
    uint64_t seed[2];
    uint64_t next_id;
};

/* ---- hashing: SipHash-1-3, keyed, so clients cannot aim keys at one chain ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t siphash13(const uint64_t k[2], const unsigned char *in, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ull ^ k[0], v1 = 0x646f72616e646f6dull ^ k[1];
    uint64_t v2 = 0x6c7967656e657261ull ^ k[0], v3 = 0x7465646279746573ull ^ k[1];
    uint64_t b = (uint64_t)len << 56;
    size_t i, n = len - len % 8;

    for (i = 0; i < n; i += 8) {
        uint64_t m = 0;
        for (int j = 0; j < 8; j++)
            m |= (uint64_t)in[i + j] << (8 * j);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    for (int j = 0; i + j < len; j++)
        b |= (uint64_t)in[i + j] << (8 * j);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- small helpers ---- */

static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

static struct fairq_flow *flow_of(struct fairq_sub *s)
{
    return (struct fairq_flow *)((char *)(s - s->cls) - offsetof(struct fairq_flow, sub));
}

static const struct fairq_flow *flow_of_const(const struct fairq_sub *s)
{
    return (const struct fairq_flow *)((const char *)(s - s->cls) -
                                       offsetof(struct fairq_flow, sub));
}

static uint64_t quantum_of(const struct fairq *q) { return q->quantum ? q->quantum : q->max_cost; }

/* Whether `f` is paused at now_ns. */
static int flow_paused(const struct fairq_flow *f, uint64_t now_ns)
{
    return f->pause_until_ns > now_ns;
}

/* Whether freeing `f` (with no waiter) loses nothing: full per-key buckets and no pause. */
static int flow_stateless(const struct fairq *q, const struct fairq_flow *f, uint64_t now_ns)
{
    if (flow_paused(f, now_ns))
        return 0;
    for (size_t i = 0; i < q->nkey_limits; i++) {
        if (f->kb[i].tat_ns > now_ns)
            return 0;
    }
    return 1;
}

/* ---- rings ---- */

/* Insert before the front: last in the round. */
static void ring_append(struct fairq *q, struct fairq_sub *s)
{
    struct fairq_ring *r = &q->ring[s->cls];

    s->turn = 0;
    if (r->front == NULL) {
        s->rprev = s->rnext = s;
        r->front = s;
        return;
    }
    s->rnext = r->front;
    s->rprev = r->front->rprev;
    s->rprev->rnext = s;
    r->front->rprev = s;
}

static void ring_remove(struct fairq *q, struct fairq_sub *s)
{
    struct fairq_ring *r = &q->ring[s->cls];

    if (s->rnext == s) {
        r->front = NULL;
    } else {
        s->rprev->rnext = s->rnext;
        s->rnext->rprev = s->rprev;
        if (r->front == s)
            r->front = s->rnext;
    }
    s->rprev = s->rnext = NULL;
    s->turn = 0;
}

/* Make `s` (ACTIVE, in its ring or just appended) the front; the old front's turn ends. */
static void ring_to_front(struct fairq *q, struct fairq_sub *s)
{
    struct fairq_ring *r = &q->ring[s->cls];

    if (r->front == s)
        return;
    ring_remove(q, s);
    ring_append(q, s);
    if (r->front != s) {
        r->front->turn = 0;
        r->front = s;
    }
}

/* Restore "the front's head fits its deficit": a front whose turn has used its credit
 * passes the turn on (at most one step: the next sub has turn == 0). */
static void normalize(struct fairq *q, unsigned cls)
{
    struct fairq_sub *s = q->ring[cls].front;

    if (s != NULL && s->turn && s->deficit < s->head->cost) {
        s->turn = 0;
        q->ring[cls].front = s->rnext;
    }
}

/* ---- parked heap ---- */

static void heap_set(struct fairq *q, size_t i, struct fairq_sub *s)
{
    q->heap[i] = s;
    s->heap_idx = (uint32_t)i;
}

static void heap_up(struct fairq *q, size_t i)
{
    struct fairq_sub *s = q->heap[i];

    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (q->heap[p]->due_ns <= s->due_ns)
            break;
        heap_set(q, i, q->heap[p]);
        i = p;
    }
    heap_set(q, i, s);
}

static void heap_down(struct fairq *q, size_t i)
{
    struct fairq_sub *s = q->heap[i];

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= q->nheap)
            break;
        if (c + 1 < q->nheap && q->heap[c + 1]->due_ns < q->heap[c]->due_ns)
            c++;
        if (q->heap[c]->due_ns >= s->due_ns)
            break;
        heap_set(q, i, q->heap[c]);
        i = c;
    }
    heap_set(q, i, s);
}

static void heap_remove(struct fairq *q, struct fairq_sub *s)
{
    size_t i = s->heap_idx;
    struct fairq_sub *last = q->heap[--q->nheap];

    if (i != q->nheap) {
        heap_set(q, i, last);
        heap_up(q, i);
        heap_down(q, last->heap_idx);
    }
    s->heap_idx = HEAP_NONE;
}

/* Park a sub that is in no ring (EMPTY with a waiter just linked, or just taken out). */
static void heap_push(struct fairq *q, struct fairq_sub *s, uint64_t due_ns)
{
    s->state = SUB_PARKED;
    s->deficit = 0;
    s->turn = 0;
    s->due_ns = due_ns;
    assert(q->nheap < q->heap_cap);
    q->heap[q->nheap] = s;
    s->heap_idx = (uint32_t)q->nheap++;
    heap_up(q, q->nheap - 1);
}

static void park(struct fairq *q, struct fairq_sub *s, uint64_t due_ns)
{
    ring_remove(q, s);
    heap_push(q, s, due_ns);
}

/* A parked sub's due time changes (either way). */
static void heap_redue(struct fairq *q, struct fairq_sub *s, uint64_t due_ns)
{
    s->due_ns = due_ns;
    heap_up(q, s->heap_idx);
    heap_down(q, s->heap_idx);
}

static void unpark(struct fairq *q, struct fairq_sub *s)
{
    heap_remove(q, s);
    s->state = SUB_ACTIVE;
    ring_append(q, s);
}

static int heap_reserve(struct fairq *q, size_t nflows)
{
    size_t need = nflows * FAIRQ_MAX_CLASSES;

    if (need <= q->heap_cap)
        return 0;
    size_t cap = q->heap_cap ? q->heap_cap : 4 * FAIRQ_MAX_CLASSES;
    while (cap < need)
        cap *= 2;
    struct fairq_sub **h = realloc(q->heap, cap * sizeof(*h));
    if (h == NULL)
        return -1;
    q->heap = h;
    q->heap_cap = cap;
    return 0;
}

/* ---- idle list ---- */

static void lru_append(struct fairq *q, struct fairq_flow *f, uint64_t now_ns)
{
    f->idle_since_ns = now_ns;
    f->lnext = NULL;
    f->lprev = q->lru_tail;
    if (q->lru_tail != NULL)
        q->lru_tail->lnext = f;
    else
        q->lru_head = f;
    q->lru_tail = f;
    f->in_lru = 1;
}

static void lru_remove(struct fairq *q, struct fairq_flow *f)
{
    if (!f->in_lru)
        return;
    if (f->lprev != NULL)
        f->lprev->lnext = f->lnext;
    else
        q->lru_head = f->lnext;
    if (f->lnext != NULL)
        f->lnext->lprev = f->lprev;
    else
        q->lru_tail = f->lprev;
    f->lprev = f->lnext = NULL;
    f->in_lru = 0;
}

/* ---- flows ---- */

static void flow_init_buckets(const struct fairq *q, struct fairq_flow *f, uint64_t now_ns)
{
    for (size_t i = 0; i < q->nkey_limits; i++) {
        int ok = bucket_init(&f->kb[i], q->key_limits[i].rate_per_sec,
                             q->key_limits[i].burst_tokens, now_ns);
        assert(ok == 0); /* validated by fairq_config_valid */
        (void)ok;
    }
}

static struct fairq_flow *flow_alloc(struct fairq *q, const char *key, size_t key_len, int kind,
                                     uint64_t hash, uint64_t now_ns)
{
    struct fairq_flow *f = malloc(sizeof(*f) + key_len + 1);

    if (f == NULL)
        return NULL;
    memset(f, 0, sizeof(*f));
    for (unsigned c = 0; c < FAIRQ_MAX_CLASSES; c++) {
        f->sub[c].cls = (uint8_t)c;
        f->sub[c].heap_idx = HEAP_NONE;
    }
    memcpy(f->key, key, key_len);
    f->key[key_len] = '\0';
    f->key_len = (uint16_t)key_len;
    f->kind = (uint8_t)kind;
    f->hash = hash;
    f->id = kind == FLOW_DEFAULT ? ID_DEFAULT : kind == FLOW_OVERFLOW ? ID_OVERFLOW : q->next_id++;
    flow_init_buckets(q, f, now_ns);
    return f;
}

static size_t chain_of(const struct fairq *q, uint64_t hash) { return hash & (q->nbuckets - 1); }

static void flow_destroy(struct fairq *q, struct fairq_flow *f)
{
    struct fairq_flow **p = &q->table[chain_of(q, f->hash)];

    while (*p != f)
        p = &(*p)->hnext;
    *p = f->hnext;
    lru_remove(q, f);
    q->nkeys--;
    free(f);
}

/* Double the table when the load passes 1; stays as it is if memory is short (chains
 * grow a little, nothing breaks). Bounded by max_keys. */
static void table_grow(struct fairq *q)
{
    size_t n = q->nbuckets * 2;
    struct fairq_flow **t = calloc(n, sizeof(*t));

    if (t == NULL)
        return;
    for (size_t i = 0; i < q->nbuckets; i++) {
        struct fairq_flow *f = q->table[i];
        while (f != NULL) {
            struct fairq_flow *next = f->hnext;
            size_t c = f->hash & (n - 1);
            f->hnext = t[c];
            t[c] = f;
            f = next;
        }
    }
    free(q->table);
    q->table = t;
    q->nbuckets = n;
}

/* Whether `f` (on the idle list) has been idle for key_idle_ns: expire_some() looks at it. */
static int idle_due(const struct fairq *q, const struct fairq_flow *f, uint64_t now_ns)
{
    return now_ns >= f->idle_since_ns && now_ns - f->idle_since_ns >= q->idle_ns;
}

/* Keep fairq_flow_peek() in step with any change here. */
static void expire_some(struct fairq *q, uint64_t now_ns, unsigned n)
{
    while (n-- > 0) {
        struct fairq_flow *f = q->lru_head;
        if (f == NULL || !idle_due(q, f, now_ns))
            return;
        if (flow_stateless(q, f, now_ns)) {
            flow_destroy(q, f);
        } else {
            /* Its own limits still remember recent use (forgetting them would hand the key a
             * full burst), or it is paused. Look again one idle period later. */
            lru_remove(q, f);
            lru_append(q, f, now_ns);
        }
    }
}

static struct fairq_flow *flow_lookup(const struct fairq *q, const char *key, size_t key_len,
                                      uint64_t hash)
{
    for (struct fairq_flow *f = q->table[chain_of(q, hash)]; f != NULL; f = f->hnext) {
        if (f->hash == hash && f->key_len == key_len && memcmp(f->key, key, key_len) == 0)
            return f;
    }
    return NULL;
}

/* ---- config ---- */

int fairq_config_valid(const struct fairq_config *cfg)
{
    struct bucket b;

    if (cfg == NULL)
        return 0;
    if (cfg->nkey_limits > FAIRQ_MAX_KEY_LIMITS ||
        (cfg->nkey_limits > 0 && cfg->key_limits == NULL))
        return 0;
    if (cfg->priority_classes > FAIRQ_MAX_CLASSES)
        return 0;
    for (size_t i = 0; i < cfg->nkey_limits; i++) {
        if (bucket_init(&b, cfg->key_limits[i].rate_per_sec, cfg->key_limits[i].burst_tokens, 0) <
            0)
            return 0;
    }
    return 1;
}

static void apply_config(struct fairq *q, const struct fairq_config *cfg)
{
    for (size_t i = 0; i < cfg->nkey_limits; i++)
        q->key_limits[i] = cfg->key_limits[i];
    q->nkey_limits = cfg->nkey_limits;
    q->max_keys = cfg->max_keys ? cfg->max_keys : FAIRQ_DEFAULT_MAX_KEYS;
    q->share = cfg->key_queue_share;
    q->idle_ns = cfg->key_idle_ns ? cfg->key_idle_ns : FAIRQ_DEFAULT_IDLE_NS;
    q->nclasses = cfg->priority_classes ? cfg->priority_classes : 1;
    q->guard = cfg->priority_guard ? cfg->priority_guard : FAIRQ_DEFAULT_GUARD;
    q->quantum = cfg->quantum_tokens;
}

struct fairq *fairq_new(const struct fairq_config *cfg, uint64_t now_ns)
{
    if (!fairq_config_valid(cfg))
        return NULL;
    struct fairq *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    apply_config(q, cfg);
    q->max_cost = 1;
    q->next_id = ID_OVERFLOW + 1;
    q->seed[0] = cfg->hash_seed[0];
    q->seed[1] = cfg->hash_seed[1];
    if (q->seed[0] == 0 && q->seed[1] == 0) {
        /* No seed given: better than a constant, not a substitute for random bytes. */
        q->seed[0] = (uint64_t)(uintptr_t)q * 0x9e3779b97f4a7c15ull;
        q->seed[1] = (uint64_t)(uintptr_t)&q->seed ^ now_ns;
    }
    q->nbuckets = TABLE_MIN;
    q->table = calloc(q->nbuckets, sizeof(*q->table));
    q->dflt = flow_alloc(q, "", 0, FLOW_DEFAULT, 0, now_ns);
    q->overflow =
        flow_alloc(q, FAIRQ_OVERFLOW_KEY, strlen(FAIRQ_OVERFLOW_KEY), FLOW_OVERFLOW, 0, now_ns);
    if (q->table == NULL || q->dflt == NULL || q->overflow == NULL || heap_reserve(q, 2) < 0) {
        fairq_free(q);
        return NULL;
    }
    return q;
}

static void flow_release_waiters(struct fairq_flow *f)
{
    for (unsigned c = 0; c < FAIRQ_MAX_CLASSES; c++) {
        struct waiter *w = f->sub[c].head;
        while (w != NULL) {
            struct waiter *next = w->fnext;
            w->fprev = w->fnext = NULL;
            w->flow = NULL;
            w = next;
        }
    }
}

void fairq_free(struct fairq *q)
{
    if (q == NULL)
        return;
    for (size_t i = 0; q->table != NULL && i < q->nbuckets; i++) {
        struct fairq_flow *f = q->table[i];
        while (f != NULL) {
            struct fairq_flow *next = f->hnext;
            flow_release_waiters(f);
            free(f);
            f = next;
        }
    }
    if (q->dflt != NULL)
        flow_release_waiters(q->dflt);
    if (q->overflow != NULL)
        flow_release_waiters(q->overflow);
    free(q->dflt);
    free(q->overflow);
    free(q->table);
    free(q->heap);
    free(q);
}

static void flow_reconfigure(const struct fairq *q, struct fairq_flow *f, size_t nold,
                             uint64_t now_ns)
{
    for (size_t i = 0; i < q->nkey_limits; i++) {
        const struct fairq_limit *l = &q->key_limits[i];
        int ok = i < nold ? bucket_reconfigure(&f->kb[i], l->rate_per_sec, l->burst_tokens, now_ns)
                          : bucket_init(&f->kb[i], l->rate_per_sec, l->burst_tokens, now_ns);
        assert(ok == 0);
        (void)ok;
    }
}

/* Unpark the parked subs of `f` (their due times are stale), unless it is paused. */
static void flow_recheck(struct fairq *q, struct fairq_flow *f, uint64_t now_ns)
{
    for (unsigned c = 0; c < FAIRQ_MAX_CLASSES; c++) {
        struct fairq_sub *s = &f->sub[c];
        if (s->state != SUB_PARKED)
            continue;
        if (flow_paused(f, now_ns))
            heap_redue(q, s, f->pause_until_ns);
        else
            unpark(q, s);
    }
}

int fairq_reconfigure(struct fairq *q, const struct fairq_config *cfg, uint64_t now_ns)
{
    if (!fairq_config_valid(cfg))
        return -1;
    size_t nold = q->nkey_limits;
    apply_config(q, cfg);
    flow_reconfigure(q, q->dflt, nold, now_ns);
    flow_reconfigure(q, q->overflow, nold, now_ns);
    for (size_t i = 0; i < q->nbuckets; i++) {
        for (struct fairq_flow *f = q->table[i]; f != NULL; f = f->hnext)
            flow_reconfigure(q, f, nold, now_ns);
    }
    /* Due times were computed with the old limits: let select() look at each again, except
     * for paused flows, which stay parked until their pause ends. O(flows). */
    flow_recheck(q, q->dflt, now_ns);
    flow_recheck(q, q->overflow, now_ns);
    for (size_t i = 0; i < q->nbuckets; i++) {
        for (struct fairq_flow *f = q->table[i]; f != NULL; f = f->hnext)
            flow_recheck(q, f, now_ns);
    }
    return 0;
}

/* ---- flows: look-up ---- */

/* Keep fairq_flow_peek() in step with any change here. */
struct fairq_flow *fairq_flow_get(struct fairq *q, const char *key, size_t key_len, uint64_t now_ns)
{
    if (key == NULL || key_len == 0)
        return q->dflt;
    if (key_len > FAIRQ_MAX_KEY_LEN)
        return q->overflow;
    expire_some(q, now_ns, FAIRQ_EXPIRE_PER_CALL);

    uint64_t hash = siphash13(q->seed, (const unsigned char *)key, key_len);
    struct fairq_flow *f = flow_lookup(q, key, key_len, hash);
    if (f != NULL)
        return f;

    if (q->nkeys >= q->max_keys) {
        /* The least recently idle flow may go early if it holds no state at all. */
        struct fairq_flow *old = q->lru_head;
        if (old == NULL || !flow_stateless(q, old, now_ns))
            return q->overflow;
        flow_destroy(q, old);
    }
    if (heap_reserve(q, q->nkeys + 3) < 0)
        return q->overflow;
    f = flow_alloc(q, key, key_len, FLOW_KEYED, hash, now_ns);
    if (f == NULL)
        return q->overflow;
    if (q->nkeys >= q->nbuckets)
        table_grow(q);
    size_t c = chain_of(q, hash);
    f->hnext = q->table[c];
    q->table[c] = f;
    q->nkeys++;
    lru_append(q, f, now_ns);
    return f;
}

struct fairq_flow *fairq_flow_find(const struct fairq *q, const char *key, size_t key_len)
{
    if (key == NULL || key_len == 0)
        return q->dflt;
    if (key_len == strlen(FAIRQ_OVERFLOW_KEY) && memcmp(key, FAIRQ_OVERFLOW_KEY, key_len) == 0)
        return q->overflow;
    if (key_len > FAIRQ_MAX_KEY_LEN)
        return NULL;
    return flow_lookup(q, key, key_len, siphash13(q->seed, (const unsigned char *)key, key_len));
}

const struct fairq_flow *fairq_flow_peek(const struct fairq *q, const char *key, size_t key_len,
                                         uint64_t now_ns)
{
    const struct fairq_flow *freed[FAIRQ_EXPIRE_PER_CALL];
    size_t nfreed = 0;

    if (key == NULL || key_len == 0)
        return q->dflt;
    if (key_len > FAIRQ_MAX_KEY_LEN)
        return q->overflow;
    /* expire_some() on a virtual idle list: `head` is where its head would be. A flow it
     * would move to the tail has state and is idle since now, so the walk stops at it if
     * the list comes round to it again. */
    const struct fairq_flow *head = q->lru_head;
    for (unsigned n = 0; n < FAIRQ_EXPIRE_PER_CALL; n++) {
        if (head == NULL || !idle_due(q, head, now_ns))
            break;
        if (flow_stateless(q, head, now_ns))
            freed[nfreed++] = head;
        head = head->lnext;
    }
    uint64_t hash = siphash13(q->seed, (const unsigned char *)key, key_len);
    const struct fairq_flow *f = flow_lookup(q, key, key_len, hash);
    for (size_t i = 0; i < nfreed && f != NULL; i++) {
        if (freed[i] == f)
            return NULL; /* expired first, then made afresh */
    }
    if (f != NULL)
        return f;
    if (q->nkeys - nfreed < q->max_keys)
        return NULL;
    /* At the cap: get recycles the idle list's head if it holds no state. With `head` NULL
     * that head is a flow moved above (it has state) or there is none. */
    return head != NULL && flow_stateless(q, head, now_ns) ? NULL : q->overflow;
}

/* The flow a released waiter came from, if it still exists; else one made since for the
 * same key (same seeded 64-bit hash: a pause set for the key after its flow expired must
 * hold its requeued waiter too); else the overflow flow. */
static struct fairq_flow *flow_by_id(const struct fairq *q, uint64_t hash, uint64_t id)
{
    struct fairq_flow *same_key = NULL;

    if (id == ID_DEFAULT || id == 0)
        return q->dflt;
    if (id == ID_OVERFLOW)
        return q->overflow;
    for (struct fairq_flow *f = q->table[chain_of(q, hash)]; f != NULL; f = f->hnext) {
        if (f->id == id)
            return f;
        if (f->hash == hash && same_key == NULL)
            same_key = f;
    }
    return same_key != NULL ? same_key : q->overflow;
}

int fairq_flow_full(const struct fairq *q, const struct fairq_flow *f)
{
    return q->share != 0 && f->nqueued >= q->share;
}

size_t fairq_flow_len(const struct fairq_flow *f) { return f != NULL ? f->nqueued : 0; }

uint64_t fairq_flow_cost(const struct fairq_flow *f) { return f != NULL ? f->cost_queued : 0; }

const struct waiter *fairq_flow_head(const struct fairq_flow *f)
{
    for (unsigned c = 0; c < FAIRQ_MAX_CLASSES; c++) {
        if (f->sub[c].head != NULL)
            return f->sub[c].head;
    }
    return NULL;
}

const char *fairq_flow_key(const struct fairq_flow *f, size_t *key_len)
{
    if (key_len != NULL)
        *key_len = f->key_len;
    return f->key;
}

uint64_t fairq_flow_wait_ns(const struct fairq *q, const struct fairq_flow *f, uint64_t cost,
                            uint64_t now_ns)
{
    uint64_t wait = 0;

    for (size_t i = 0; i < q->nkey_limits; i++) {
        const struct bucket *b = f != NULL ? &f->kb[i] : NULL;
        struct bucket fresh;
        if (b == NULL) {
            /* A new flow's bucket: the configured limit (the default flow has it), full. */
            fresh = q->dflt->kb[i];
            fresh.tat_ns = fresh.last_ns = now_ns;
            b = &fresh;
        }
        wait = max_u64(wait, bucket_wait_ns(b, cost, now_ns));
    }
    return wait;
}

double fairq_flow_tokens(const struct fairq *q, const struct fairq_flow *f, size_t i,
                         uint64_t now_ns)
{
    if (i >= q->nkey_limits)
        return 0.0;
    return bucket_tokens(&f->kb[i], now_ns);
}

size_t fairq_nkey_limits(const struct fairq *q) { return q->nkey_limits; }

double fairq_limit_burst(const struct fairq *q, size_t i)
{
    return i < q->nkey_limits ? bucket_burst_tokens(&q->dflt->kb[i]) : 0.0;
}

int fairq_cost_too_big(const struct fairq *q, uint64_t cost)
{
    for (size_t i = 0; i < q->nkey_limits; i++) {
        const struct bucket *b = &q->dflt->kb[i];
        if (cost > b->burst_ns / b->interval_ns)
            return 1;
    }
    return 0;
}

void fairq_flow_pause_until(struct fairq *q, struct fairq_flow *f, uint64_t until_ns,
                            uint64_t now_ns)
{
    if (until_ns <= f->pause_until_ns)
        return; /* an earlier end never shortens a pause */
    f->pause_until_ns = until_ns;
    if (until_ns <= now_ns)
        return;
    /* Out of the rounds now, so the wake-up time and the next select see it. */
    for (unsigned c = 0; c < FAIRQ_MAX_CLASSES; c++) {
        struct fairq_sub *s = &f->sub[c];
        if (s->state == SUB_ACTIVE)
            park(q, s, until_ns);
        else if (s->state == SUB_PARKED && s->due_ns < until_ns)
            heap_redue(q, s, until_ns);
    }
}

uint64_t fairq_flow_paused_until(const struct fairq_flow *f)
{
    return f != NULL ? f->pause_until_ns : 0;
}

/* ---- linking ---- */

static void flow_gains(struct fairq *q, struct fairq_flow *f, const struct waiter *w)
{
    if (f->nqueued++ == 0) {
        lru_remove(q, f);
        q->nactive++;
    }
    f->cost_queued += w->cost;
    if (w->cost > q->max_cost)
        q->max_cost = w->cost;
}

void fairq_push(struct fairq *q, struct fairq_flow *f, struct waiter *w, uint64_t now_ns)
{
    unsigned cls = w->priority < q->nclasses ? w->priority : q->nclasses - 1;
    struct fairq_sub *s = &f->sub[cls];

    w->prio_class = (uint8_t)cls;
    w->flow = f;
    w->flow_id = f->id;
    w->flow_hash = f->hash;
    flow_gains(q, f, w);
    w->fnext = NULL;
    w->fprev = s->tail;
    if (s->tail != NULL)
        s->tail->fnext = w;
    else
        s->head = w;
    s->tail = w;
    if (s->state == SUB_EMPTY) {
        if (flow_paused(f, now_ns)) {
            heap_push(q, s, f->pause_until_ns); /* steps aside until the pause ends */
        } else {
            s->state = SUB_ACTIVE;
            ring_append(q, s);
        }
    }
    /* A PARKED sub keeps its head, so its due time holds; an ACTIVE one keeps its place. */
}

void fairq_push_head(struct fairq *q, struct waiter *w, uint64_t now_ns)
{
    struct fairq_flow *f = flow_by_id(q, w->flow_hash, w->flow_id);
    unsigned cls = w->prio_class < FAIRQ_MAX_CLASSES ? w->prio_class : FAIRQ_MAX_CLASSES - 1;
    struct fairq_sub *s = &f->sub[cls];

    w->prio_class = (uint8_t)cls;
    w->flow = f;
    w->flow_id = f->id;
    w->flow_hash = f->hash;
    flow_gains(q, f, w);
    /* After the waiters of this flow already given their turn back and older than w,
     * so that several refused at once go again in arrival order. */
    struct waiter *pos = s->head;
    while (pos != NULL && pos->requeued && pos->seq < w->seq)
        pos = pos->fnext;
    w->fnext = pos;
    w->fprev = pos != NULL ? pos->fprev : s->tail;
    if (w->fprev != NULL)
        w->fprev->fnext = w;
    else
        s->head = w;
    if (pos != NULL)
        pos->fprev = w;
    else
        s->tail = w;

    if (flow_paused(f, now_ns)) {
        /* It goes first of its class again, but not before its flow's pause ends: parked
         * until then, it rejoins the round there (the tokens are checked again then). */
        if (s->state == SUB_EMPTY)
            heap_push(q, s, f->pause_until_ns);
        else if (s->state == SUB_PARKED)
            heap_redue(q, s, f->pause_until_ns);
        else
            park(q, s, f->pause_until_ns);
        return;
    }
    switch (s->state) {
    case SUB_EMPTY:
        s->state = SUB_ACTIVE;
        ring_append(q, s);
        break;
    case SUB_PARKED:
        unpark(q, s);
        break;
    default:
        if (q->ring[cls].front == s && s->turn) {
            normalize(q, cls); /* its head changed mid-turn */
            return;
        }
        break;
    }
    ring_to_front(q, s);
}

void fairq_remove(struct fairq *q, struct waiter *w, uint64_t now_ns)
{
    struct fairq_flow *f = w->flow;

    if (f == NULL)
        return;
    struct fairq_sub *s = &f->sub[w->prio_class];
    int was_head = s->head == w;

    if (w->fprev != NULL)
        w->fprev->fnext = w->fnext;
    else
        s->head = w->fnext;
    if (w->fnext != NULL)
        w->fnext->fprev = w->fprev;
    else
        s->tail = w->fprev;
    w->fprev = w->fnext = NULL;
    w->flow = NULL;
    f->nqueued--;
    f->cost_queued -= w->cost;

    if (s->head == NULL) {
        if (s->state == SUB_ACTIVE)
            ring_remove(q, s);
        else if (s->state == SUB_PARKED)
            heap_remove(q, s);
        s->state = SUB_EMPTY;
        s->deficit = 0;
        s->turn = 0;
    } else if (was_head) {
        /* The new head may cost less: let select() look again (when the pause ends, if any). */
        if (s->state == SUB_PARKED && flow_paused(f, now_ns))
            heap_redue(q, s, f->pause_until_ns);
        else if (s->state == SUB_PARKED)
            unpark(q, s);
        else if (q->ring[s->cls].front == s)
            normalize(q, s->cls);
    }
    if (f->nqueued == 0) {
        q->nactive--;
        if (f->kind == FLOW_KEYED)
            lru_append(q, f, now_ns);
    }
}

/* ---- choosing ---- */

/* The class to serve: the highest with an eligible flow, unless the guard is due and a
 * lower class has one, in which case the lower class whose front waiter is oldest. */
static int choose_class(const struct fairq *q)
{
    int hi = -1;

    for (int c = 0; c < FAIRQ_MAX_CLASSES; c++) {
        if (q->ring[c].front != NULL) {
            hi = c;
            break;
        }
    }
    if (hi < 0 || q->streak < q->guard)
        return hi;
    int best = -1;
    uint64_t oldest = 0;
    for (int c = hi + 1; c < FAIRQ_MAX_CLASSES; c++) {
        const struct fairq_sub *s = q->ring[c].front;
        if (s != NULL && (best < 0 || s->head->enqueued_ns < oldest)) {
            best = c;
            oldest = s->head->enqueued_ns;
        }
    }
    return best >= 0 ? best : hi;
}

static void unpark_due(struct fairq *q, uint64_t now_ns)
{
    while (q->nheap > 0 && q->heap[0]->due_ns <= now_ns)
        unpark(q, q->heap[0]);
}

struct waiter *fairq_select(struct fairq *q, uint64_t now_ns)
{
    unpark_due(q, now_ns);
    for (;;) {
        int cls = choose_class(q);
        if (cls < 0)
            return NULL;
        struct fairq_sub *s = q->ring[cls].front;
        struct waiter *w = s->head;
        if (flow_paused(flow_of(s), now_ns)) {
            /* A safety net: a pause parks its flow when set and keeps it parked. */
            park(q, s, flow_of(s)->pause_until_ns);
            continue;
        }
        if (q->nkey_limits == 0)
            return w;
        uint64_t wait = fairq_flow_wait_ns(q, flow_of(s), w->cost, now_ns);
        if (wait == 0)
            return w;
        /* Short of its own tokens: out of the way until they are due. */
        park(q, s, fairq_cost_too_big(q, w->cost) ? FAIRQ_NEVER : now_ns + wait);
    }
}

const struct waiter *fairq_front(const struct fairq *q)
{
    int cls = choose_class(q);

    return cls < 0 ? NULL : q->ring[cls].front->head;
}

void fairq_commit(struct fairq *q, struct waiter *w, uint64_t now_ns, uint64_t since_ns)
{
    struct fairq_flow *f = w->flow;
    unsigned cls = w->prio_class;
    struct fairq_sub *s = &f->sub[cls];

    assert(q->ring[cls].front == s && s->head == w);
    for (size_t i = 0; i < q->nkey_limits; i++) {
        int taken = bucket_take_since(&f->kb[i], w->cost, now_ns, since_ns);
        assert(taken == 0); /* select() saw the tokens at this now_ns */
        (void)taken;
    }

    /* Starvation guard bookkeeping: did this release pass over an eligible lower class? */
    int hi = 0;
    while (q->ring[hi].front == NULL)
        hi++;
    int lower = 0;
    for (unsigned c = cls + 1; c < FAIRQ_MAX_CLASSES; c++)
        lower |= q->ring[c].front != NULL;
    if ((int)cls > hi || !lower)
        q->streak = 0; /* a guard release, or nobody was waiting below */
    else
        q->streak++;

    if (!s->turn) {
        s->deficit += max_u64(quantum_of(q), w->cost);
        s->turn = 1;
    }
    s->deficit -= w->cost;
    fairq_remove(q, w, now_ns);
}

uint64_t fairq_parked_wake_ns(const struct fairq *q)
{
    return q->nheap > 0 ? q->heap[0]->due_ns : FAIRQ_NEVER;
}

/* ---- walking the active flows ---- */

void fairq_iter_init(struct fairq_iter *it) { memset(it, 0, sizeof(*it)); }

/* The first non-empty class of `f`: the one sub through which a walk reports it. */
static const struct fairq_sub *flow_first_sub(const struct fairq_flow *f)
{
    for (unsigned c = 0; c < FAIRQ_MAX_CLASSES; c++) {
        if (f->sub[c].head != NULL)
            return &f->sub[c];
    }
    return NULL;
}

const struct fairq_flow *fairq_iter_next(const struct fairq *q, struct fairq_iter *it)
{
    for (;;) {
        const struct fairq_sub *s;
        if (it->cls < FAIRQ_MAX_CLASSES) {
            const struct fairq_sub *front = q->ring[it->cls].front;
            s = it->next != NULL ? it->next : front;
            if (s == NULL) {
                it->cls++;
                continue;
            }
            it->next = s->rnext;
            if (it->next == front) {
                it->cls++;
                it->next = NULL;
            }
        } else if (it->heap_idx < q->nheap) {
            s = q->heap[it->heap_idx++];
        } else {
            return NULL;
        }
        /* Every non-empty sub is in one ring or in the heap: report each flow once. */
        const struct fairq_flow *f = flow_of_const(s);
        if (flow_first_sub(f) == s)
            return f;
    }
}

size_t fairq_nkeys(const struct fairq *q) { return q->nkeys; }

size_t fairq_active_flows(const struct fairq *q) { return q->nactive; }

size_t fairq_parked_flows(const struct fairq *q) { return q->nheap; }

uint32_t fairq_classes(const struct fairq *q) { return q->nclasses; }
