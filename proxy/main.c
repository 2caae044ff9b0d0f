/*
 * proxy/main: the daemon's life, and nothing else: command line, config, the event
 * base, signals, and the drain on SIGTERM/SIGINT.
 *
 * Shutdown: the first SIGTERM/SIGINT closes the listeners and keeps releasing what is
 * queued at its configured rate; requests in flight finish. At drain_timeout whatever
 * is still queued is answered 503 (Sluice-Reason: shutdown). Once no request is open
 * and every answer has been written (or after a short grace), the loop ends and the
 * process exits 0. A second signal skips the wait.
 */
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "conf/conf.h"
#include "proxy/accesslog.h"
#include "proxy/admin.h"
#include "proxy/clock.h"
#include "proxy/frontend.h"
#include "proxy/history.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/confgen.h"
#include "proxy/reload.h"
#include "proxy/request.h"
#include "proxy/router.h"
#include "proxy/server.h"
#include "proxy/shared.h"
#include "proxy/tls.h"
#include "proxy/upstream.h"

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "dev"
#endif
#ifndef SLUICE_DEFAULT_CONF
#define SLUICE_DEFAULT_CONF "/usr/local/etc/sluice/proxy.yaml"
#endif

/* Answers already handed to evhttp get this long to reach their clients at exit. */
#define EXIT_GRACE_MS 1000

static void usage(FILE *out)
{
    fprintf(out, "usage: sluice [-t] [-c FILE]\n"
                 "  -c FILE  configuration (default " SLUICE_DEFAULT_CONF ")\n"
                 "  -t       check the configuration and exit (0 valid, 1 invalid)\n"
                 "  -v       print the version and exit\n"
                 "  -h       print this help and exit\n"
                 "signals: TERM/INT drain and exit, HUP reload the configuration, USR1 reopen the "
                 "access log\n");
}

void server_check_idle(struct server *s)
{
    if (s->state != SERVER_RUNNING && s->requests_open == 0 && s->stop_check != NULL)
        event_active(s->stop_check, EV_TIMEOUT, 1);
}

static void stop_check_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    struct timeval tv;

    if (s->requests_open > 0)
        return;
    if (frontend_connections(s->frontend) == 0) {
        event_base_loopexit(s->base, NULL);
        return;
    }
    /* Idle keep-alive clients may hold connections open: give the last answers a
     * moment to be written, then go. */
    if (!evtimer_pending(s->grace_timer, NULL)) {
        tv = clock_ms_timeval(EXIT_GRACE_MS);
        evtimer_add(s->grace_timer, &tv);
    }
}

static void grace_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    event_base_loopexit(s->base, NULL);
}

static void flush_queues(struct server *s)
{
    size_t i;

    for (i = 0; i < s->nupstreams; i++)
        upstream_flush_queue(s->upstreams[i], "shutdown");
    for (i = 0; i < s->nretired; i++)
        upstream_flush_queue(s->retired[i], "shutdown");
}

/* SIGHUP: load the file again and apply it, or keep serving the old one. */
static void reload_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct server *s = arg;

    log_info("signal %d: reloading %s", (int)sig, s->conf->path);
    reload_config(s);
}

static void reap_cb(evutil_socket_t fd, short what, void *arg) { reload_reap(arg); }

/* Requests that ended are freed here, outside the callbacks that ended them. */
static void request_reaper_cb(evutil_socket_t fd, short what, void *arg) { request_reap(arg); }

static void drain_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;

    log_info("drain_timeout reached: answering what is still queued with 503");
    s->state = SERVER_STOPPING;
    flush_queues(s);
    server_check_idle(s);
}

static void shutdown_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct server *s = arg;
    struct timeval tv;
    size_t i, queued = 0;

    if (s->state != SERVER_RUNNING) {
        log_info("signal %d again: stopping now", (int)sig);
        s->state = SERVER_STOPPING;
        flush_queues(s);
        request_abort_all(s);
        /* Not an immediate exit: the 503s just queued still have to be written. With no
         * request open, the exit follows as soon as they are (or after the grace). */
        server_check_idle(s);
        return;
    }
    for (i = 0; i < s->nupstreams; i++)
        queued += upstream_queue_len(s->upstreams[i]);
    log_info("signal %d: draining (%zu queued, drain_timeout %llums)", (int)sig, queued,
             (unsigned long long)s->conf->drain_timeout_ms);
    s->state = SERVER_DRAINING;
    frontend_stop_accepting(s->frontend);
    tv = clock_ms_timeval(s->conf->drain_timeout_ms);
    evtimer_add(s->drain_timer, &tv);
    server_check_idle(s);
}

/* SIGUSR1: logrotate moved the access log; write to a new file at the same path. */
static void reopen_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct server *s = arg;

    if (s->access == NULL)
        return;
    if (accesslog_reopen(s->access) == 0)
        log_info("signal %d: access log reopened", (int)sig);
}

static enum log_level to_log_level(enum conf_log_level l)
{
    switch (l) {
    case CONF_LOG_ERROR:
        return LOG_LEVEL_ERROR;
    case CONF_LOG_WARN:
        return LOG_LEVEL_WARN;
    case CONF_LOG_DEBUG:
        return LOG_LEVEL_DEBUG;
    case CONF_LOG_INFO:
        break;
    }
    return LOG_LEVEL_INFO;
}

static struct event_base *base_new(void)
{
    struct event_config *cfg = event_config_new();
    struct event_base *base;

    if (cfg == NULL)
        return NULL;
    /* timerfd-backed timers: token release times are honoured to the microsecond
     * instead of epoll's millisecond rounding. EV_CLOSED needs early-close support. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    /* evhttp turns read/write interest on and off several times per request; the
     * changelist folds those into one epoll_ctl per fd per loop turn (measured: half
     * the epoll_ctl calls, ~15% more requests per CPU-second). sluice never dup()s the
     * fds it watches, which is the changelist's one caveat. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    event_config_require_features(cfg, EV_FEATURE_EARLY_CLOSE);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    /* Priority 0 for internal bookkeeping that must run before I/O (frontend). */
    if (base != NULL && event_base_priority_init(base, 2) != 0) {
        event_base_free(base);
        return NULL;
    }
    return base;
}

/* Open files sluice may need beyond client connections: listeners, the admin listener,
 * the access log, epoll, signals, DNS, and a margin. */
#define FD_OWN_NEEDS 64
#define FD_REFUSING  64 /* connections over the cap being answered 503 (proxy/frontend) */

/* Raise the soft open-file limit to the hard one (nothing is gained by a lower one), and
 * warn when the config can need more than that: accept() would then fail under load
 * (sluice backs off rather than spin, but clients wait). */
static void raise_fd_limit(const struct conf *c)
{
    struct rlimit rl;
    unsigned long long need =
        (unsigned long long)c->client.max_connections + FD_REFUSING + FD_OWN_NEEDS;
    size_t i;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl = raised;
    }
    for (i = 0; i < c->nupstreams; i++)
        need += c->upstreams[i].max_in_flight + c->upstreams[i].keepalive;
    if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur)
        log_warn("the open-file limit is %llu, but client.max_connections (%u) plus upstream "
                 "connections may need %llu: raise it (LimitNOFILE=, ulimit -n) or lower "
                 "client.max_connections",
                 (unsigned long long)rl.rlim_cur, c->client.max_connections, need);
}

static int server_start(struct server *s)
{
    size_t i;
    char err[1024];

    s->metrics = metrics_new();
    if (s->metrics == NULL)
        return -1;
    metrics_config_loaded(s->metrics, 1, (int64_t)time(NULL));
    if (s->conf->access_log.enabled) {
        s->access = accesslog_open(&s->conf->access_log, err, sizeof(err));
        if (s->access == NULL) {
            log_error("%s: %s", s->conf->path, err);
            return -1;
        }
    }

    if (s->conf->shared.enabled && (s->shared = shared_new(s->base, s->conf)) == NULL)
        log_error("shared: cannot set up the Redis client: shared limits pace locally");
    s->nupstreams = s->conf->nupstreams;
    s->upstreams = calloc(s->nupstreams ? s->nupstreams : 1, sizeof(*s->upstreams));
    if (s->upstreams == NULL)
        return -1;
    for (i = 0; i < s->nupstreams; i++) {
        s->upstreams[i] = upstream_new(s, &s->conf->upstreams[i]);
        if (s->upstreams[i] == NULL)
            return -1;
        log_info("upstream %s: %s, %zu limit(s), queue %u, max_wait %llums",
                 s->conf->upstreams[i].name, s->conf->upstreams[i].url,
                 s->conf->upstreams[i].nlimits, s->conf->upstreams[i].queue_size,
                 (unsigned long long)s->conf->upstreams[i].max_wait_ms);
    }
    s->router = router_new(s->conf);
    if (s->router == NULL)
        return -1;
    s->frontend = frontend_new(s);
    if (s->frontend == NULL)
        return -1;
    if (s->conf->admin.enabled) {
        s->admin = admin_new(s, &s->conf->admin);
        if (s->admin == NULL)
            return -1;
    }
    return 0;
}

static void server_stop(struct server *s)
{
    size_t i;

    admin_free(s->admin);
    s->admin = NULL;
    history_free(s->history);
    s->history = NULL;
    /* Closing client connections first: nothing may call into an upstream after. */
    frontend_free(s->frontend);
    for (i = 0; i < s->nupstreams && s->upstreams != NULL; i++)
        upstream_free(s->upstreams[i]);
    free(s->upstreams);
    for (i = 0; i < s->nretired; i++)
        upstream_free(s->retired[i]);
    free(s->retired);
    router_free(s->router);
    shared_free(s->shared); /* after the upstreams: their lease clients are gone */
    s->shared = NULL;
    request_reap(s);
    /* Last: freeing requests above still reports them. */
    accesslog_close(s->access);
    s->access = NULL;
    metrics_free(s->metrics);
    s->metrics = NULL;
}

int main(int argc, char **argv)
{
    const char *conf_path = SLUICE_DEFAULT_CONF;
    int check_only = 0, opt, rc = 1;
    char err[1024];
    struct server s;
    struct event *sig_term = NULL, *sig_int = NULL, *sig_usr1 = NULL, *sig_hup = NULL;

    memset(&s, 0, sizeof(s));
    while ((opt = getopt(argc, argv, "c:tvh")) != -1) {
        switch (opt) {
        case 'c':
            conf_path = optarg;
            break;
        case 't':
            check_only = 1;
            break;
        case 'v':
            printf("sluice %s\n", SLUICE_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "sluice: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    s.conf = conf_load(conf_path, err, sizeof(err));
    if (s.conf == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    s.gen = confgen_new(s.conf);
    if (s.gen == NULL) {
        fprintf(stderr, "%s: out of memory\n", conf_path);
        return 1;
    }
    /* Certificates, keys and CA files are loaded now, so that a bad one is reported
     * with its position before anything starts, by -t as well. */
    if (tls_check_conf(s.conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        confgen_release(s.gen);
        return 1;
    }
    if (check_only) {
        /* Valid but probably not meant: said on stderr, still exit 0. */
        if (conf_warnings(s.conf, err, sizeof(err)) > 0)
            fputs(err, stderr);
        printf("%s: configuration ok\n", conf_path);
        confgen_release(s.gen);
        return 0;
    }
    log_set_level(to_log_level(s.conf->log_level));
    log_capture_libevent();
    signal(SIGPIPE, SIG_IGN);

    s.base = base_new();
    if (s.base == NULL) {
        log_error("cannot create the event loop (epoll with EV_CLOSED support needed)");
        goto out;
    }
    s.dns = evdns_base_new(s.base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (s.dns == NULL)
        s.dns = evdns_base_new(s.base, 0); /* no resolv.conf: IP literals still work */
    s.drain_timer = evtimer_new(s.base, drain_timeout_cb, &s);
    s.stop_check = event_new(s.base, -1, 0, stop_check_cb, &s);
    s.grace_timer = evtimer_new(s.base, grace_cb, &s);
    sig_term = evsignal_new(s.base, SIGTERM, shutdown_signal_cb, &s);
    sig_int = evsignal_new(s.base, SIGINT, shutdown_signal_cb, &s);
    sig_usr1 = evsignal_new(s.base, SIGUSR1, reopen_signal_cb, &s);
    sig_hup = evsignal_new(s.base, SIGHUP, reload_signal_cb, &s);
    s.reap = event_new(s.base, -1, 0, reap_cb, &s);
    s.request_reaper = event_new(s.base, -1, 0, request_reaper_cb, &s);
    if (s.request_reaper == NULL || s.dns == NULL || s.drain_timer == NULL ||
        s.stop_check == NULL || s.grace_timer == NULL || sig_term == NULL || sig_int == NULL ||
        sig_usr1 == NULL || evsignal_add(sig_term, NULL) != 0 || evsignal_add(sig_int, NULL) != 0 ||
        evsignal_add(sig_usr1, NULL) != 0 || sig_hup == NULL || s.reap == NULL ||
        evsignal_add(sig_hup, NULL) != 0) {
        log_error("cannot set up the event loop");
        goto out;
    }
    raise_fd_limit(s.conf);
    s.started_ns = clock_now_ns();
    if (server_start(&s) != 0)
        goto out;
    /* The dashboard's five minutes; without it /status just has no history. */
    if ((s.history = history_new(&s)) == NULL)
        log_warn("cannot keep the per-second history (out of memory)");
    log_info("sluice %s started (config %s)", SLUICE_VERSION, conf_path);

    event_base_dispatch(s.base);
    log_info("sluice stopped");
    rc = 0;
out:
    server_stop(&s);
    if (sig_term != NULL)
        event_free(sig_term);
    if (sig_int != NULL)
        event_free(sig_int);
    if (sig_usr1 != NULL)
        event_free(sig_usr1);
    if (sig_hup != NULL)
        event_free(sig_hup);
    if (s.reap != NULL)
        event_free(s.reap);
    if (s.request_reaper != NULL)
        event_free(s.request_reaper);
    if (s.drain_timer != NULL)
        event_free(s.drain_timer);
    if (s.stop_check != NULL)
        event_free(s.stop_check);
    if (s.grace_timer != NULL)
        event_free(s.grace_timer);
    if (s.dns != NULL)
        evdns_base_free(s.dns, 0);
    if (s.base != NULL)
        event_base_free(s.base);
    confgen_release(s.gen);
    libevent_global_shutdown();
    return rc;
}
