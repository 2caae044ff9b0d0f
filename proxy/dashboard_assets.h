/*
 * proxy/dashboard_assets: the files of the admin dashboard (GET / on the admin
 * listener), compiled into the binary.
 *
 * The sources are contrib/dashboard/index.html, app.js, app.css and favicon.svg; the
 * table is proxy/dashboard_assets.c, generated from them by contrib/dashboard/embed.sh
 * (make regenerates it when a source is newer; it is checked in). The data are static and
 * read-only: nothing to free, safe to call from any context. proxy/admin serves them
 * with its own headers (Content-Security-Policy, Cache-Control: no-store, ...); the
 * page needs no other file and no other origin.
 */
#ifndef SLUICE_PROXY_DASHBOARD_ASSETS_H
#define SLUICE_PROXY_DASHBOARD_ASSETS_H

#include <stddef.h>

struct dashboard_asset {
    const char *path;          /* "/", "/app.js", "/app.css", "/favicon.svg" */
    const char *type;          /* the Content-Type to send, with its charset */
    const unsigned char *data; /* the bytes to send (not NUL-terminated for the reader) */
    size_t len;                /* bytes */
};

/* The asset served at `path` (exact match, no query), or NULL: the caller answers 404. */
const struct dashboard_asset *dashboard_asset(const char *path);

#endif
