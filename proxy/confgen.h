/*
 * proxy/confgen: a configuration generation, reference counted.
 *
 * A reload never frees the config that requests already routed with it point into. The
 * server holds the current generation, every request holds the one it was routed with
 * (its route and upstream config live there), and a retired upstream holds the one it
 * was configured with; the generation (and its struct conf) is freed when the last
 * holder lets go. Event loop only (no locking).
 */
#ifndef SLUICE_PROXY_CONFGEN_H
#define SLUICE_PROXY_CONFGEN_H

#include <stddef.h>

struct conf;

struct confgen {
    struct conf *conf; /* owned */
    size_t refs;
};

/* Wrap a loaded conf; the caller holds the one reference. NULL on out-of-memory
 * (the conf is then freed). */
struct confgen *confgen_new(struct conf *c);
void confgen_hold(struct confgen *g);
void confgen_release(struct confgen *g); /* frees the conf with the last reference; NULL ok */

#endif
