/*
 * proxy/confgen: reference-counted configuration generations. See confgen.h.
 */
#include "proxy/confgen.h"

#include <stdlib.h>

#include "conf/conf.h"

struct confgen *confgen_new(struct conf *c)
{
    struct confgen *g = calloc(1, sizeof(*g));

    if (g == NULL) {
        conf_free(c);
        return NULL;
    }
    g->conf = c;
    g->refs = 1;
    return g;
}

void confgen_hold(struct confgen *g) { g->refs++; }

void confgen_release(struct confgen *g)
{
    if (g == NULL || --g->refs > 0)
        return;
    conf_free(g->conf);
    free(g);
}
