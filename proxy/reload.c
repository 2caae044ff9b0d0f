/*
 * proxy/reload: apply a new configuration to the running server. See reload.h.
 */
#include "proxy/reload.h"
#include "proxy/confgen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf/conf.h"
#include "proxy/accesslog.h"
#include "proxy/admin.h"
#include "proxy/frontend.h"
#include "proxy/log.h"
#include "proxy/metrics.h"
#include "proxy/router.h"
#include "proxy/server.h"
#include "proxy/shared.h"
#include "proxy/tls.h"
#include "proxy/upstream.h"

/* The two enums list the same levels in the same order. */
_Static_assert((int)CONF_LOG_ERROR == (int)LOG_LEVEL_ERROR &&
                   (int)CONF_LOG_DEBUG == (int)LOG_LEVEL_DEBUG,
               "conf and log levels must match");

static int same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static struct upstream *find_upstream(struct server *s, const char *name)
{
    size_t i;

    for (i = 0; i < s->nupstreams; i++)
        if (strcmp(upstream_name(s->upstreams[i]), name) == 0)
            return s->upstreams[i];
    return NULL;
}

static int retire_add(struct server *s, struct upstream *u)
{
    struct upstream **grown = realloc(s->retired, (s->nretired + 1) * sizeof(*grown));

    if (grown == NULL)
        return -1;
    s->retired = grown;
    s->retired[s->nretired++] = u;
    return 0;
}

void reload_reap(struct server *s)
{
    size_t i = 0;

    while (i < s->nretired) {
        struct upstream *u = s->retired[i];
        if (upstream_idle(u)) {
            log_info("upstream %s (removed by reload): drained, freed", upstream_name(u));
            upstream_free(u);
            s->retired[i] = s->retired[--s->nretired];
        } else {
            i++;
        }
    }
}

/* What a reload builds before it changes anything. */
struct pending {
    struct confgen *gen;
    struct upstream **upstreams;      /* indexed like the new conf */
    struct upstream_change **changes; /* for kept upstreams */
    unsigned char *created;           /* upstreams[i] is new */
    struct router *router;
    struct admin *admin; /* new admin listener, when it moves */
    int admin_replaced;
    struct accesslog *access;
    int access_replaced;
};

static void pending_abort(struct pending *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        upstream_change_free(p->changes[i]);
        if (p->created[i])
            upstream_free(p->upstreams[i]);
    }
    free(p->upstreams);
    free(p->changes);
    free(p->created);
    router_free(p->router);
    admin_free(p->admin);
    accesslog_close(p->access);
}

static int prepare(struct server *s, struct pending *p, char *err, size_t errlen)
{
    const struct conf *c = p->gen->conf;
    const struct conf *old = s->conf;
    size_t i, n = c->nupstreams;

    /* Shared budgets now and not before: connect first, so that upstreams made below get
     * their lease clients (an idle connection is all a failed reload leaves behind). */
    if (c->shared.enabled && s->shared == NULL)
        s->shared = shared_new(s->base, c);
    p->upstreams = calloc(n ? n : 1, sizeof(*p->upstreams));
    p->changes = calloc(n ? n : 1, sizeof(*p->changes));
    p->created = calloc(n ? n : 1, 1);
    p->router = router_new(c);
    if (p->upstreams == NULL || p->changes == NULL || p->created == NULL || p->router == NULL) {
        snprintf(err, errlen, "%s: out of memory", c->path);
        return -1;
    }
    for (i = 0; i < n; i++) {
        const struct conf_upstream *cu = &c->upstreams[i];
        struct upstream *u = find_upstream(s, cu->name);
        if (u != NULL) {
            p->upstreams[i] = u;
            p->changes[i] = upstream_prepare(u, cu, err, errlen);
            if (p->changes[i] == NULL)
                return -1;
        } else {
            /* upstream_new reads s->conf only for messages; its limits come from cu. */
            p->upstreams[i] = upstream_new(s, cu);
            if (p->upstreams[i] == NULL) {
                snprintf(err, errlen, "%s:%u:%u: upstreams.%s: cannot create (see above)", c->path,
                         cu->mark.line, cu->mark.col, cu->name);
                return -1;
            }
            p->created[i] = 1;
        }
    }
    if (c->admin.enabled != old->admin.enabled ||
        (c->admin.enabled &&
         (c->admin.port != old->admin.port || strcmp(c->admin.host, old->admin.host) != 0))) {
        p->admin_replaced = 1;
        if (c->admin.enabled && (p->admin = admin_new(s, &c->admin)) == NULL) {
            snprintf(err, errlen, "%s:%u:%u: admin.address %s: cannot bind", c->path,
                     c->admin.mark.line, c->admin.mark.col, c->admin.address);
            return -1;
        }
    }
    if (c->access_log.enabled != old->access_log.enabled ||
        (c->access_log.enabled && (c->access_log.format != old->access_log.format ||
                                   !same_str(c->access_log.path, old->access_log.path)))) {
        p->access_replaced = 1;
        if (c->access_log.enabled &&
            (p->access = accesslog_open(&c->access_log, err, errlen)) == NULL)
            return -1;
    }
    /* Last, because it is all or nothing on its own and binds sockets. */
    return frontend_reconfigure(s->frontend, c, err, errlen);
}

static void commit(struct server *s, struct pending *p)
{
    struct confgen *old_gen = s->gen;
    size_t i, j, n = p->gen->conf->nupstreams;

    /* Where and how to reach Redis first: the upstreams' lease clients follow. (Without
     * a shared section now, the connection stays, idle, for upstreams still draining.) */
    if (s->shared != NULL && p->gen->conf->shared.enabled)
        shared_reconfigure(s->shared, p->gen->conf);
    for (i = 0; i < n; i++) {
        if (p->changes[i] != NULL) {
            upstream_commit(p->upstreams[i], p->changes[i]);
            p->changes[i] = NULL;
        }
    }
    /* Upstreams no longer configured retire: they drain under their old settings. */
    for (j = 0; j < s->nupstreams; j++) {
        struct upstream *u = s->upstreams[j];
        int kept = 0;
        for (i = 0; i < n && !kept; i++)
            kept = p->upstreams[i] == u;
        if (kept)
            continue;
        if (retire_add(s, u) != 0) {
            /* Out of memory for the list: answer its queue now rather than lose it. */
            upstream_flush_queue(u, "upstream_removed");
            log_error("upstream %s: removed by reload; cannot keep it draining", upstream_name(u));
            continue;
        }
        upstream_retire(u, old_gen);
        log_info("upstream %s: removed by reload; draining %zu queued, %u in flight",
                 upstream_name(u), upstream_queue_len(u), upstream_in_flight(u));
    }
    free(s->upstreams);
    s->upstreams = p->upstreams;
    s->nupstreams = n;
    router_free(s->router);
    s->router = p->router;
    if (p->admin_replaced) {
        admin_free(s->admin);
        s->admin = p->admin;
    }
    if (p->access_replaced) {
        accesslog_close(s->access);
        s->access = p->access;
    }
    s->gen = p->gen;
    s->conf = p->gen->conf;
    confgen_release(old_gen);
    free(p->changes);
    free(p->created);
}

int reload_config(struct server *s)
{
    struct pending p;
    struct conf *c;
    char err[1024];
    const char *path = s->conf->path;

    memset(&p, 0, sizeof(p));
    if (s->state != SERVER_RUNNING) {
        log_warn("reload ignored: sluice is draining");
        return -1;
    }
    c = conf_load(path, err, sizeof(err));
    if (c == NULL || tls_check_conf(c, err, sizeof(err)) != 0) {
        conf_free(c);
        goto failed;
    }
    p.gen = confgen_new(c);
    if (p.gen == NULL) {
        snprintf(err, sizeof(err), "%s: out of memory", path);
        goto failed;
    }
    if (prepare(s, &p, err, sizeof(err)) != 0) {
        pending_abort(&p, p.gen->conf->nupstreams);
        confgen_release(p.gen);
        goto failed;
    }
    commit(s, &p);
    if (s->metrics != NULL)
        metrics_config_loaded(s->metrics, 1, (int64_t)time(NULL));
    /* Said at the old level, so that a reload to a quieter level is still reported. */
    log_info("reloaded %s: %zu upstream(s), %zu route(s), %zu listener(s)", s->conf->path,
             s->conf->nupstreams, s->conf->nroutes, s->conf->nlisten);
    log_set_level((enum log_level)s->conf->log_level);
    return 0;
failed:
    log_error("reload failed, the previous configuration keeps serving: %s", err);
    if (s->metrics != NULL)
        metrics_config_loaded(s->metrics, 0, (int64_t)time(NULL));
    return -1;
}
