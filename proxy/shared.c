/*
 * proxy/shared: leases of release slots from Redis. See shared.h for the contract.
 *
 * Redis keys of budget B, all in one hash slot (Redis Cluster): {sluice:B}:tat (the
 * GCRA theoretical arrival time, µs on the Redis clock), {sluice:B}:members (ZSET
 * member -> last seen, µs), {sluice:B}:pause (no slot before this, µs); the channel
 * {sluice:B}:ev carries "pause MS MEMBER" to the fleet.
 *
 * One call per lease, always through EVALSHA (the script is loaded again on NOSCRIPT).
 * A call has its own deadline timer; when it fires first, the call is given up (its
 * late reply is ignored) and retried with backoff, and after a few in a row the
 * connection is taken for stuck and made again. Calls and replies never block the loop.
 */
#include "proxy/shared.h"

#include <errno.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "limiter/dispatch.h"
#include "limiter/lease.h"
#include "proxy/clock.h"
#include "proxy/log.h"

/* Grant up to `want` slots of the budget's GCRA schedule within the horizon, capped at
 * this member's share. KEYS: tat, members, pause. ARGV: member, want, interval T,
 * tolerance tau (burst - 1 intervals), horizon H, member ttl (all µs), debit (slots
 * released while Redis was away) and span (µs: how long that pacing lasted), fence (1:
 * the data may have been lost: start one horizon ahead). The debit is booked as if
 * those releases had gone through the schedule since `now - span` (they were spread over
 * the outage, at rate / instances each): the schedule moves on by what the fleet used
 * beyond its rate, and no burst follows the outage, nor a stall as long as it. Returns {k, first
 * slot's offset from now, when to ask again when k is 0, members, pause left} (µs). Slot j is at
 * first + j*T: it is released no earlier than that, so GCRA holds on Redis's timeline: first >= tat
 * - tau, and after k slots tat = max(tat, first) + k*T. */
static const char lease_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local want, T, tau = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local H, ttl = tonumber(ARGV[5]), tonumber(ARGV[6])\n"
    "local debit, span, fence = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])\n"
    "redis.call('ZADD', KEYS[2], now, ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)\n"
    "redis.call('PEXPIRE', KEYS[2], math.floor(ttl / 1000) + 1000)\n"
    "local n = redis.call('ZCARD', KEYS[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1])) or 0\n"
    "if debit > 0 then\n"
    "  if tat < now - span then tat = now - span end\n"
    "  tat = tat + debit * T\n"
    "end\n"
    "if tat < now then tat = now end\n"
    "if fence > 0 and tat < now + H + tau then tat = now + H + tau end\n"
    "local pause = tonumber(redis.call('GET', KEYS[3])) or 0\n"
    "local first = tat - tau\n"
    "if first < now then first = now end\n"
    "if pause > first then first = pause end\n"
    "local k, retry = 0, 0\n"
    "if first <= now + H then\n"
    "  k = math.floor((now + H - first) / T) + 1\n"
    "  local share = math.floor(H / T / n)\n"
    "  if share < 1 then share = 1 end\n"
    "  if k > share then k = share end\n"
    "  if k > want then k = want end\n"
    "end\n"
    "if k > 0 then\n"
    "  if first > tat then tat = first end\n"
    "  tat = tat + k * T\n"
    "else\n"
    "  retry = first - H - now\n"
    "  if retry < 0 then retry = 0 end\n"
    "end\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',"
    " math.floor((tat - now) / 1000) + 60000)\n"
    "local left = 0\n"
    "if pause > now then left = pause - now end\n"
    "return {k, first - now, retry, n, left}\n";

/* Pause the budget for ARGV[1] µs from now (a later pause extends, an earlier one never
 * shortens). KEYS: pause. */
static const char pause_script[] = "local t = redis.call('TIME')\n"
                                   "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
                                   "local d = tonumber(ARGV[1])\n"
                                   "local p = tonumber(redis.call('GET', KEYS[1])) or 0\n"
                                   "if now + d > p then\n"
                                   "  redis.call('SET', KEYS[1], string.format('%.0f', now + d), "
                                   "'PX', math.floor(d / 1000) + 1000)\n"
                                   "end\n"
                                   "return 1\n";

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define STUCK_TIMEOUTS 3 /* calls timed out in a row: the connection is taken for stuck */

struct conn {
    struct shared *sh;
    redisAsyncContext *ac; /* NULL while down */
    int up;                /* connected, AUTH and SELECT done */
    int sub;               /* the pub/sub connection */
    struct event *retry;   /* reconnect after backoff */
    uint64_t backoff_ms;
    int down_logged; /* "unreachable" said once per outage */
};

struct shared {
    struct event_base *base;
    char *host, *unix_path, *password;
    int port;
    uint32_t db;
    uint64_t timeout_ms, horizon_ns;
    char instance[96];
    char lease_sha[41];
    struct conn cmd, sub;
    char run_id[41]; /* of the Redis we last talked to; "" before */
    uint32_t timeouts_in_row;
    struct shared_user *users;
};

struct shared_call;

struct shared_user {
    struct shared *sh;
    struct shared_user *prev, *next;
    char budget[72];
    char member[200];
    char key_tat[96], key_members[96], key_pause[96], channel[96];
    struct dispatch *d;
    size_t idx;
    void (*wake)(void *arg);
    void *arg;
    struct shared_call *call; /* the lease call in flight, or NULL */
    struct event *again;      /* the next call: after backoff, or when slots enter the horizon */
    uint64_t backoff_ms;
    int fence;                  /* the next call fences the schedule (Redis lost its data) */
    uint64_t debit_owed;        /* releases made in fallback, not yet charged to Redis */
    uint64_t fallback_since_ns; /* when local pacing began (0: not pacing) */
    double burst_tokens;        /* the budget's burst: the script's tolerance */
    uint32_t instances;
    int fallback_logged;
    struct shared_user_stats st;
};

/* One call (lease, or pause): hiredis's privdata until its callback, which always comes
 * (a reply, or NULL when the connection goes away). */
struct shared_call {
    struct shared_user *user; /* NULL once given up (deadline passed) or the user freed */
    struct event *deadline;
    uint64_t t_send_ns;
    uint64_t debit;   /* charged by this call */
    uint64_t span_us; /* over how long it was released */
    uint32_t want;
    uint64_t interval_us; /* T as sent: the slots are spaced by it */
    int fence;
    int noscript_retried;
};

static void sha1_hex(const char *text, char out[41])
{
    unsigned char md[SHA_DIGEST_LENGTH];
    int i;

    SHA1((const unsigned char *)text, strlen(text), md);
    for (i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void conn_connect(struct conn *c);

static void conn_schedule(struct conn *c)
{
    struct timeval tv;

    if (c->backoff_ms == 0)
        c->backoff_ms = BACKOFF_MIN_MS;
    tv = clock_ms_timeval(c->backoff_ms);
    evtimer_add(c->retry, &tv);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

static const char *where(const struct shared *sh, char *buf, size_t len)
{
    if (sh->unix_path != NULL)
        snprintf(buf, len, "unix:%s", sh->unix_path);
    else
        snprintf(buf, len, "%s:%d", sh->host, sh->port);
    return buf;
}

static void conn_down(struct conn *c, const char *why)
{
    char w[300];

    c->up = 0;
    c->ac = NULL;
    if (!c->down_logged) {
        log_warn("shared: Redis at %s %s%s: %s; retrying with backoff, budgets pace on held "
                 "slots, then locally",
                 where(c->sh, w, sizeof(w)), c->sub ? "(pub/sub) " : "", "unreachable", why);
        c->down_logged = 1;
    }
    if (!evtimer_pending(c->retry, NULL))
        conn_schedule(c);
}

static void kick_all(struct shared *sh)
{
    struct shared_user *su;

    for (su = sh->users; su != NULL; su = su->next)
        shared_user_kick(su);
}

static void subscribe_user(struct shared_user *su);

static void connected_cb(const redisAsyncContext *ac, int status)
{
    struct conn *c = ac->data;

    if (status != REDIS_OK)
        conn_down(c, ac->errstr ? ac->errstr : "connect failed"); /* hiredis frees ac */
}

static void disconnected_cb(const redisAsyncContext *ac, int status)
{
    struct conn *c = ac->data;

    if (c->ac == ac)
        conn_down(c, status == REDIS_OK ? "disconnected" : (ac->errstr ? ac->errstr : "error"));
}

/* INFO server: run_id tells a Redis that restarted without its data (or a failover)
 * from the same one come back: then every schedule is fenced one horizon ahead. */
static void info_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    struct conn *c = privdata;
    struct shared *sh = c->sh;
    redisReply *reply = r;
    const char *p;
    char w[300];

    if (reply == NULL || c->ac != ac)
        return;
    if (reply->type != REDIS_REPLY_STRING) {
        log_warn("shared: Redis at %s: INFO failed: %s", where(sh, w, sizeof(w)),
                 reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        redisAsyncDisconnect(ac);
        return;
    }
    p = strstr(reply->str, "run_id:");
    if (p != NULL) {
        char id[41];
        snprintf(id, sizeof(id), "%.40s", p + 7);
        if (sh->run_id[0] != '\0' && strcmp(id, sh->run_id) != 0) {
            struct shared_user *su;
            log_warn("shared: Redis at %s is a new server (run_id %s, was %s): its schedules "
                     "may be lost; fencing each budget one horizon ahead",
                     where(sh, w, sizeof(w)), id, sh->run_id);
            for (su = sh->users; su != NULL; su = su->next)
                su->fence = 1;
        }
        snprintf(sh->run_id, sizeof(sh->run_id), "%s", id);
    }
    c->up = 1;
    c->backoff_ms = 0;
    if (c->down_logged)
        log_info("shared: Redis at %s reachable again", where(sh, w, sizeof(w)));
    c->down_logged = 0;
    kick_all(sh);
}

static void auth_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    struct conn *c = privdata;
    redisReply *reply = r;
    char w[300];

    if (reply != NULL && c->ac == ac && reply->type == REDIS_REPLY_ERROR) {
        log_error("shared: Redis at %s refused %s: %s", where(c->sh, w, sizeof(w)),
                  c->sub ? "AUTH" : "AUTH or SELECT", reply->str);
        redisAsyncDisconnect(ac);
    }
}

/* The pub/sub connection: a pause another instance saw. */
static void message_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    struct conn *c = privdata;
    struct shared *sh = c->sh;
    redisReply *reply = r;
    struct shared_user *su;
    unsigned long long ms;
    char member[200];
    uint64_t now;

    if (reply == NULL || c->ac != ac || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3)
        return;
    if (reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0 ||
        reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    if (sscanf(reply->element[2]->str, "pause %llu %199s", &ms, member) != 2)
        return;
    now = clock_now_ns();
    for (su = sh->users; su != NULL; su = su->next) {
        if (strcmp(su->channel, reply->element[1]->str) != 0 || strcmp(su->member, member) == 0)
            continue;
        /* No slot of this budget before the pause ends, here too. */
        dispatch_lease_drop_until(su->d, su->idx, now + (uint64_t)ms * NS_PER_MS);
        su->st.fleet_pauses++;
        log_info("shared: budget %s paused for %llums by %s (the upstream asked)", su->budget, ms,
                 member);
        su->wake(su->arg);
    }
}

static void subscribe_user(struct shared_user *su)
{
    struct conn *c = &su->sh->sub;

    if (c->ac != NULL)
        redisAsyncCommand(c->ac, message_cb, c, "SUBSCRIBE %s", su->channel);
}

static void conn_connect(struct conn *c)
{
    struct shared *sh = c->sh;
    redisAsyncContext *ac;
    struct shared_user *su;

    ac = sh->unix_path ? redisAsyncConnectUnix(sh->unix_path)
                       : redisAsyncConnect(sh->host, sh->port);
    if (ac == NULL || ac->err) {
        conn_down(c, ac && ac->errstr ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        return;
    }
    ac->data = c;
    if (redisLibeventAttach(ac, sh->base) != REDIS_OK) {
        redisAsyncFree(ac);
        conn_down(c, "cannot attach to the event loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, connected_cb);
    redisAsyncSetDisconnectCallback(ac, disconnected_cb);
    c->ac = ac;
    /* Pipelined: hiredis sends them once connected, in order. */
    if (sh->password != NULL)
        redisAsyncCommand(ac, auth_cb, c, "AUTH %s", sh->password);
    if (c->sub) {
        c->up = 1; /* subscriptions simply start over */
        for (su = sh->users; su != NULL; su = su->next)
            subscribe_user(su);
        return;
    }
    if (sh->db != 0)
        redisAsyncCommand(ac, auth_cb, c, "SELECT %u", sh->db);
    redisAsyncCommand(ac, info_cb, c, "INFO server");
}

static void conn_retry_cb(evutil_socket_t fd, short what, void *arg) { conn_connect(arg); }

static void conn_close(struct conn *c)
{
    if (c->retry != NULL)
        evtimer_del(c->retry);
    if (c->ac != NULL) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        c->up = 0;
        redisAsyncFree(ac); /* pending callbacks get NULL, then disconnected_cb */
    }
}

/* ---- lease calls ------------------------------------------------------------------ */

static void user_again_at(struct shared_user *su, uint64_t ms)
{
    struct timeval tv = clock_ms_timeval(ms);
    evtimer_add(su->again, &tv);
}

/* No answer from Redis for this user: back off, and once the held slots are used up,
 * pace locally at rate / instances. */
static void user_failed(struct shared_user *su, const char *why)
{
    uint64_t now = clock_now_ns();
    const struct lease *l = dispatch_lease(su->d, su->idx);

    su->backoff_ms = su->backoff_ms ? su->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (su->backoff_ms > BACKOFF_MAX_MS)
        su->backoff_ms = BACKOFF_MAX_MS;
    user_again_at(su, su->backoff_ms);
    if (l != NULL && lease_mode(l) != LEASE_FALLBACK) {
        /* The held slots still go first; local pacing at rate / instances after them. */
        dispatch_lease_fallback(su->d, su->idx, now);
        su->fallback_since_ns = now;
        su->st.fallback = 1;
        if (!su->fallback_logged)
            log_warn("shared: budget %s: no lease from Redis (%s): fallback, pacing locally at "
                     "its rate / %u instance(s) until Redis answers",
                     su->budget, why, lease_instances(l));
        su->fallback_logged = 1;
        su->wake(su->arg);
    }
}

static void call_free(struct shared_call *call)
{
    if (call->deadline != NULL)
        event_free(call->deadline);
    free(call);
}

static void send_lease(struct shared_user *su, struct shared_call *call);

static void lease_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    struct shared_call *call = privdata;
    struct shared_user *su = call->user;
    redisReply *reply = r;
    uint64_t now = clock_now_ns();
    long long v[5];
    size_t i;

    (void)ac;

    if (su == NULL) { /* given up, or the user is gone */
        call_free(call);
        return;
    }
    evtimer_del(call->deadline);
    su->call = NULL;
    su->sh->timeouts_in_row = 0;
    if (reply == NULL) {
        su->st.calls_error++;
        call_free(call);
        user_failed(su, "connection lost");
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        if (strncmp(reply->str, "NOSCRIPT", 8) == 0 && !call->noscript_retried) {
            /* A restart, a failover or SCRIPT FLUSH: load it again (EVAL caches it). */
            su->st.calls_noscript++;
            call->noscript_retried = 1;
            send_lease(su, call);
            return;
        }
        log_warn("shared: budget %s: lease call failed: %s", su->budget, reply->str);
        su->st.calls_error++;
        call_free(call);
        user_failed(su, "script error");
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 5) {
        su->st.calls_error++;
        call_free(call);
        user_failed(su, "unexpected reply");
        return;
    }
    for (i = 0; i < 5; i++)
        v[i] = reply->element[i]->type == REDIS_REPLY_INTEGER ? reply->element[i]->integer : 0;
    su->backoff_ms = 0;
    su->instances = v[3] > 0 ? (uint32_t)v[3] : 1;
    su->st.instances = su->instances;
    if (call->fence) {
        su->fence = 0;
        su->st.fences++;
    }
    /* Redis answers: what was released meanwhile is charged now (by this call), but for
     * what was released after it was sent, which the next call charges. */
    if (lease_mode(dispatch_lease(su->d, su->idx)) == LEASE_FALLBACK) {
        uint64_t released = dispatch_lease_recover(su->d, su->idx);
        su->debit_owed = released > call->debit ? released - call->debit : 0;
        su->fallback_since_ns = 0;
        su->st.fallback = 0;
        su->fallback_logged = 0;
        log_info("shared: budget %s: leases from Redis again (%u instance(s))", su->budget,
                 su->instances);
    } else {
        su->debit_owed = su->debit_owed > call->debit ? su->debit_owed - call->debit : 0;
    }
    if (v[4] > 0)
        dispatch_lease_drop_until(su->d, su->idx, now + (uint64_t)v[4] * 1000);
    {
        struct lease_reply lr = {
            .slots = v[0] > 0 ? (uint32_t)v[0] : 0,
            .first_offset_ns = (int64_t)v[1] * 1000,
            .interval_ns = (uint64_t)call->interval_us * 1000,
            .instances = su->instances,
            .retry_in_ns = v[2] > 0 ? (uint64_t)v[2] * 1000 : 0,
        };
        if (lr.slots > 0)
            su->st.calls_ok++;
        else
            su->st.calls_empty++; /* Redis said when something will fit: lease_want_at */
        dispatch_lease_grant(su->d, su->idx, call->t_send_ns, now, &lr);
    }
    call_free(call);
    su->wake(su->arg);
    shared_user_kick(su);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct shared_call *call = arg;
    struct shared_user *su = call->user;
    struct shared *sh;

    if (su == NULL)
        return;
    sh = su->sh;
    call->user = NULL; /* the late reply, if any, is ignored */
    su->call = NULL;
    su->st.calls_timeout++;
    user_failed(su, "timed out");
    if (++sh->timeouts_in_row >= STUCK_TIMEOUTS && sh->cmd.ac != NULL) {
        log_warn("shared: %u Redis calls in a row past shared.timeout: reconnecting",
                 sh->timeouts_in_row);
        sh->timeouts_in_row = 0;
        conn_close(&sh->cmd);
        conn_down(&sh->cmd, "calls timing out");
    }
}

static void send_lease(struct shared_user *su, struct shared_call *call)
{
    struct shared *sh = su->sh;
    const struct lease *l = dispatch_lease(su->d, su->idx);
    unsigned long long T = (lease_interval_ns(l) + 999) / 1000;
    unsigned long long tau =
        su->burst_tokens > 1 ? (unsigned long long)((su->burst_tokens - 1) * (double)T) : 0;
    unsigned long long H = lease_horizon_ns(l) / 1000;
    unsigned long long ttl = H * 4 > 2000000 ? H * 4 : 2000000;
    struct timeval tv = clock_ms_timeval(sh->timeout_ms);
    const char *cmd = call->noscript_retried ? "EVAL" : "EVALSHA";
    const char *body = call->noscript_retried ? lease_script : sh->lease_sha;
    int rc;

    call->interval_us = T;
    call->t_send_ns = clock_now_ns();
    rc = redisAsyncCommand(
        sh->cmd.ac, lease_reply_cb, call, "%s %s 3 %s %s %s %s %u %llu %llu %llu %llu %llu %llu %d",
        cmd, body, su->key_tat, su->key_members, su->key_pause, su->member, call->want, T, tau, H,
        ttl, (unsigned long long)call->debit, (unsigned long long)call->span_us, call->fence);
    if (rc != REDIS_OK) {
        su->st.calls_error++;
        call_free(call);
        user_failed(su, "cannot send");
        return;
    }
    su->call = call;
    evtimer_add(call->deadline, &tv);
}

void shared_user_kick(struct shared_user *su)
{
    struct shared *sh;
    struct shared_call *call;
    uint64_t now;
    uint32_t want;
    const struct lease *l;

    if (su == NULL || su->call != NULL || evtimer_pending(su->again, NULL))
        return;
    sh = su->sh;
    now = clock_now_ns();
    want = dispatch_lease_want(su->d, su->idx, now);
    if (want == 0) {
        /* Nothing to ask now: the lease says when there will be (slots running low, a
         * zero grant's "ask again at"), so renewal needs no outside kick. */
        uint64_t at = dispatch_lease_want_at_ns(su->d, su->idx, now);
        if (at != LEASE_NEVER && at > now)
            user_again_at(su, (at - now + NS_PER_MS - 1) / NS_PER_MS);
        return;
    }
    if (!sh->cmd.up) {
        su->st.calls_error++; /* a lease that could not even be asked for */
        user_failed(su, "not connected");
        return;
    }
    l = dispatch_lease(su->d, su->idx);
    call = calloc(1, sizeof(*call));
    if (call == NULL || (call->deadline = evtimer_new(sh->base, deadline_cb, call)) == NULL) {
        free(call);
        user_failed(su, "out of memory");
        return;
    }
    call->user = su;
    call->want = want;
    call->fence = su->fence;
    /* Releases made while Redis was away are charged to the shared schedule, so the
     * fleet does not burst once Redis is back. */
    if (lease_mode(l) == LEASE_FALLBACK) {
        su->debit_owed = l->debit; /* since the last recover */
        call->span_us = su->fallback_since_ns && now > su->fallback_since_ns
                            ? (now - su->fallback_since_ns) / 1000
                            : 0;
    }
    call->debit = su->debit_owed;
    send_lease(su, call);
}

static void again_cb(evutil_socket_t fd, short what, void *arg) { shared_user_kick(arg); }

static void pause_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;

    /* Best effort: each instance also pauses itself when it sees the 429. */
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
        strncmp(reply->str, "NOSCRIPT", 8) != 0)
        log_warn("shared: pause call failed: %s", reply->str);
    free(privdata);
}

void shared_user_pause(struct shared_user *su, uint64_t pause_ms)
{
    struct shared *sh = su->sh;
    char *keys = strdup(su->key_pause);
    char msg[256];

    dispatch_lease_drop_until(su->d, su->idx, clock_now_ns() + pause_ms * NS_PER_MS);
    if (keys == NULL || sh->cmd.ac == NULL || !sh->cmd.up) {
        free(keys);
        return;
    }
    /* EVAL (not EVALSHA): a pause is rare, and must not be lost to a NOSCRIPT. */
    redisAsyncCommand(sh->cmd.ac, pause_reply_cb, keys, "EVAL %s 1 %s %llu", pause_script,
                      su->key_pause, (unsigned long long)pause_ms * 1000);
    snprintf(msg, sizeof(msg), "pause %llu %s", (unsigned long long)pause_ms, su->member);
    redisAsyncCommand(sh->cmd.ac, NULL, NULL, "PUBLISH %s %s", su->channel, msg);
}

/* ---- life --------------------------------------------------------------------------- */

static int copy_conf(struct shared *sh, const struct conf *c)
{
    const struct conf_shared *cs = &c->shared;
    char host[64];

    free(sh->host);
    free(sh->unix_path);
    if (sh->password != NULL)
        explicit_bzero(sh->password, strlen(sh->password));
    free(sh->password);
    sh->host = cs->host ? strdup(cs->host) : NULL;
    sh->unix_path = cs->unix_path ? strdup(cs->unix_path) : NULL;
    sh->password = cs->password ? strdup(cs->password) : NULL;
    sh->port = cs->port;
    sh->db = cs->db;
    sh->timeout_ms = cs->timeout_ms;
    sh->horizon_ns = cs->horizon_ms * NS_PER_MS;
    if (cs->instance != NULL) {
        snprintf(sh->instance, sizeof(sh->instance), "%s", cs->instance);
    } else {
        if (gethostname(host, sizeof(host)) != 0)
            snprintf(host, sizeof(host), "sluice");
        host[sizeof(host) - 1] = '\0';
        snprintf(sh->instance, sizeof(sh->instance), "%s:%ld", host, (long)getpid());
    }
    return (cs->host == NULL || sh->host != NULL) && (cs->unix_path == NULL || sh->unix_path) &&
                   (cs->password == NULL || sh->password != NULL)
               ? 0
               : -1;
}

struct shared *shared_new(struct event_base *base, const struct conf *c)
{
    struct shared *sh;
    char w[300];

    if (!c->shared.enabled)
        return NULL;
    sh = calloc(1, sizeof(*sh));
    if (sh == NULL)
        return NULL;
    sh->base = base;
    sha1_hex(lease_script, sh->lease_sha);
    sh->cmd.sh = sh->sub.sh = sh;
    sh->sub.sub = 1;
    sh->cmd.retry = evtimer_new(base, conn_retry_cb, &sh->cmd);
    sh->sub.retry = evtimer_new(base, conn_retry_cb, &sh->sub);
    if (sh->cmd.retry == NULL || sh->sub.retry == NULL || copy_conf(sh, c) != 0) {
        shared_free(sh);
        return NULL;
    }
    log_info("shared: budgets through Redis at %s as instance %s (horizon %llums, timeout %llums)",
             where(sh, w, sizeof(w)), sh->instance, (unsigned long long)c->shared.horizon_ms,
             (unsigned long long)sh->timeout_ms);
    conn_connect(&sh->cmd);
    conn_connect(&sh->sub);
    return sh;
}

void shared_free(struct shared *sh)
{
    if (sh == NULL)
        return;
    conn_close(&sh->cmd);
    conn_close(&sh->sub);
    if (sh->cmd.retry != NULL)
        event_free(sh->cmd.retry);
    if (sh->sub.retry != NULL)
        event_free(sh->sub.retry);
    free(sh->host);
    free(sh->unix_path);
    if (sh->password != NULL)
        explicit_bzero(sh->password, strlen(sh->password));
    free(sh->password);
    free(sh);
}

static int same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

void shared_reconfigure(struct shared *sh, const struct conf *c)
{
    const struct conf_shared *cs = &c->shared;
    int moved = !same(sh->host, cs->host) || !same(sh->unix_path, cs->unix_path) ||
                sh->port != cs->port || sh->db != cs->db || !same(sh->password, cs->password);
    struct shared_user *su;

    if (copy_conf(sh, c) != 0)
        log_error("shared: out of memory applying the reload");
    if (!moved)
        return;
    log_info("shared: the Redis to use changed: reconnecting");
    /* Calls in flight on the old connection are given up with it. */
    for (su = sh->users; su != NULL; su = su->next)
        if (su->call != NULL) {
            su->call->user = NULL;
            evtimer_del(su->call->deadline);
            su->call = NULL;
        }
    conn_close(&sh->cmd);
    conn_close(&sh->sub);
    sh->cmd.backoff_ms = sh->sub.backoff_ms = 0;
    conn_connect(&sh->cmd);
    conn_connect(&sh->sub);
}

struct shared_user *shared_user_new(struct shared *sh, const char *budget,
                                    const char *upstream_name, struct dispatch *d,
                                    size_t limit_index, double burst_tokens,
                                    void (*wake)(void *arg), void *arg)
{
    struct shared_user *su = calloc(1, sizeof(*su));

    if (su == NULL)
        return NULL;
    su->again = evtimer_new(sh->base, again_cb, su);
    if (su->again == NULL) {
        free(su);
        return NULL;
    }
    su->sh = sh;
    su->d = d;
    su->idx = limit_index;
    su->burst_tokens = burst_tokens;
    su->wake = wake;
    su->arg = arg;
    snprintf(su->budget, sizeof(su->budget), "%s", budget);
    snprintf(su->member, sizeof(su->member), "%s/%s", sh->instance, upstream_name);
    snprintf(su->key_tat, sizeof(su->key_tat), "{sluice:%s}:tat", budget);
    snprintf(su->key_members, sizeof(su->key_members), "{sluice:%s}:members", budget);
    snprintf(su->key_pause, sizeof(su->key_pause), "{sluice:%s}:pause", budget);
    snprintf(su->channel, sizeof(su->channel), "{sluice:%s}:ev", budget);
    su->st.budget = su->budget;
    su->next = sh->users;
    if (sh->users != NULL)
        sh->users->prev = su;
    sh->users = su;
    subscribe_user(su);
    return su;
}

void shared_user_free(struct shared_user *su)
{
    struct shared *sh;

    if (su == NULL)
        return;
    sh = su->sh;
    if (su->call != NULL) {
        su->call->user = NULL; /* its callback frees it */
        evtimer_del(su->call->deadline);
    }
    if (su->prev != NULL)
        su->prev->next = su->next;
    else
        sh->users = su->next;
    if (su->next != NULL)
        su->next->prev = su->prev;
    event_free(su->again);
    free(su);
}

void shared_user_stats(const struct shared_user *su, struct shared_user_stats *out)
{
    *out = su->st;
}

int shared_connected(const struct shared *sh) { return sh != NULL && sh->cmd.up; }

uint64_t shared_horizon_ns(const struct shared *sh) { return sh->horizon_ns; }
