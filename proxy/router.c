/*
 * proxy/router: longest-prefix routing. See router.h.
 *
 * Routes are sorted once (longest prefix first; on equal length, host-bound before
 * host-less), so a match is the first route that fits: a scan bounded by the number of
 * configured routes, independent of traffic.
 */
#include "proxy/router.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"

struct router {
    const struct conf_route **sorted;
    size_t n;
};

static int route_cmp(const void *a, const void *b)
{
    const struct conf_route *ra = *(const struct conf_route *const *)a;
    const struct conf_route *rb = *(const struct conf_route *const *)b;
    size_t la = strlen(ra->path_prefix), lb = strlen(rb->path_prefix);

    if (la != lb)
        return la > lb ? -1 : 1;
    if ((ra->host != NULL) != (rb->host != NULL))
        return ra->host != NULL ? -1 : 1;
    return 0;
}

struct router *router_new(const struct conf *c)
{
    struct router *r = calloc(1, sizeof(*r));
    size_t i;

    if (r == NULL)
        return NULL;
    r->sorted = calloc(c->nroutes ? c->nroutes : 1, sizeof(*r->sorted));
    if (r->sorted == NULL) {
        free(r);
        return NULL;
    }
    for (i = 0; i < c->nroutes; i++)
        r->sorted[i] = &c->routes[i];
    r->n = c->nroutes;
    qsort(r->sorted, r->n, sizeof(*r->sorted), route_cmp);
    return r;
}

void router_free(struct router *r)
{
    if (r == NULL)
        return;
    free(r->sorted);
    free(r);
}

/* Host header without its port, compared case-insensitively. */
static int host_matches(const char *want, const char *host)
{
    size_t n;
    const char *colon;

    if (host == NULL)
        return 0;
    if (host[0] == '[') { /* [v6]:port */
        const char *end = strchr(host, ']');
        if (end == NULL)
            return 0;
        n = (size_t)(end - host - 1);
        return strlen(want) == n && strncasecmp(want, host + 1, n) == 0;
    }
    colon = strchr(host, ':');
    n = colon ? (size_t)(colon - host) : strlen(host);
    return strlen(want) == n && strncasecmp(want, host, n) == 0;
}

const struct conf_route *router_match(const struct router *r, const char *host, const char *path)
{
    size_t i;

    for (i = 0; i < r->n; i++) {
        const struct conf_route *rt = r->sorted[i];
        if (strncmp(path, rt->path_prefix, strlen(rt->path_prefix)) != 0)
            continue;
        if (rt->host != NULL && !host_matches(rt->host, host))
            continue;
        return rt;
    }
    return NULL;
}
