/*
 * proxy/reload: applying a new configuration to a running server (SIGHUP), all or
 * nothing, without dropping or reordering anything.
 *
 * The new file is loaded and validated completely, then everything that can fail is
 * prepared (TLS contexts, dispatchers, new listeners bound, admin listener, access
 * log) before anything changes. Only then is it committed:
 *   - an upstream kept by name keeps its queue, its in-flight requests and each
 *     limit's token balance; new rates and caps apply from now on;
 *   - a removed upstream retires: it stops receiving requests, drains its queue under
 *     its old settings and is freed once idle;
 *   - listeners are added, kept (certificates re-read) or closed to match;
 *   - routes are rebuilt; requests already routed keep the route they had.
 * A failed reload logs FILE:LINE:COL and leaves the old config serving.
 *
 * Config generations are reference counted (struct confgen): the server holds the
 * current one, every request holds the one it was routed with, and a retired upstream
 * the one it was configured with; a generation is freed when its last holder lets go.
 */
#ifndef SLUICE_PROXY_RELOAD_H
#define SLUICE_PROXY_RELOAD_H

#include <stddef.h>

struct conf;
struct server;

struct confgen {
    struct conf *conf; /* owned */
    size_t refs;
};

/* Wrap a loaded conf; the caller holds the one reference. NULL on out-of-memory
 * (the conf is then freed). */
struct confgen *confgen_new(struct conf *c);
void confgen_hold(struct confgen *g);
void confgen_release(struct confgen *g); /* frees the conf with the last reference; NULL ok */

/* Reload s->conf->path. Returns 0 (applied) or -1 (logged; nothing changed). */
int reload_config(struct server *s);

/* Free the retired upstreams that have nothing queued or in flight any more. */
void reload_reap(struct server *s);

#endif
