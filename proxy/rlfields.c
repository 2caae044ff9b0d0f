/*
 * proxy/rlfields: a client's own budget as RateLimit fields. See rlfields.h.
 */
#include "proxy/rlfields.h"

#include <event2/http.h>
#include <math.h>
#include <stdio.h>

#include "conf/conf.h"
#include "limiter/dispatch.h"
#include "proxy/clock.h"
#include "proxy/upstream.h"

void rlfields_add(struct upstream *u, const struct conf_route *route, const char *key,
                  size_t key_len, struct evkeyvalq *out)
{
    const struct dispatch *d;
    const struct conf_upstream *cu;
    const struct conf_limit *lim;
    const char *policy;
    double tokens;
    uint64_t now = clock_now_ns();
    char buf[128];
    unsigned long window_s, reset_s;

    /* Only for routes that sort clients by key: it is the client's own budget they tell. */
    if (u == NULL || route == NULL || route->key_source == CONF_KEY_NONE)
        return;
    d = upstream_dispatch(u);
    cu = upstream_conf(u);
    /* The client's own budget when keys have limits, else the upstream's shared one. */
    if (cu->fairness.nkey_limits > 0 && dispatch_nkey_limits(d) > 0) {
        lim = &cu->fairness.key_limits[0];
        tokens = dispatch_key_tokens(d, key, key_len, 0, now);
        policy = "key";
    } else {
        lim = &cu->limits[0];
        tokens = dispatch_tokens(d, 0, now);
        policy = "upstream";
    }
    if (tokens < 0)
        tokens = 0;
    window_s = (unsigned long)ceil(lim->burst_tokens / lim->rate_per_sec);
    reset_s = (unsigned long)ceil((lim->burst_tokens - tokens) / lim->rate_per_sec);
    snprintf(buf, sizeof(buf), "\"%s\";q=%lu;w=%lu", policy, (unsigned long)lim->burst_tokens,
             window_s ? window_s : 1);
    evhttp_add_header(out, "RateLimit-Policy", buf);
    snprintf(buf, sizeof(buf), "\"%s\";r=%lu;t=%lu", policy, (unsigned long)floor(tokens), reset_s);
    evhttp_add_header(out, "RateLimit", buf);
}
