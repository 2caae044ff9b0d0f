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
 * Config generations (proxy/confgen) keep what requests already routed point into.
 */
#ifndef SLUICE_PROXY_RELOAD_H
#define SLUICE_PROXY_RELOAD_H

#include <stddef.h>

struct conf;
struct server;

/* Reload s->conf->path. Returns 0 (applied) or -1 (logged; nothing changed). */
int reload_config(struct server *s);

/* Free the retired upstreams that have nothing queued or in flight any more. */
void reload_reap(struct server *s);

#endif
