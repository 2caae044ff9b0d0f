/*
 * proxy/accesslog: one line per finished request, to a file or stderr, as text
 * (combined-like) or JSON lines:
 *   text: 127.0.0.1 - - [23/Nov/2026:23:40:01 +0000] "GET /api/x?y=1" 200 512 "-" "curl/7.88.1"
 *         req=12 route=/api/ upstream=api reason=ok queue_ms=480 upstream_ms=12
 *   json: {"time":"2026-11-23T23:40:01.123Z","req":12,"client":"127.0.0.1","method":"GET",
 *          "target":"/api/x?y=1","status":200,"bytes":512,"route":"/api/","upstream":"api",
 *          "reason":"ok","queue_ms":480,"upstream_ms":12,"user_agent":"curl/7.88.1"}
 * A value that does not apply (no route, never queued, no user agent) is "-" in text and
 * null in JSON. Client-supplied bytes are escaped: \xHH in text for '"', '\\', controls
 * and non-ASCII; JSON keeps valid UTF-8 and writes any other byte as \u00HH.
 * Owned by the server; reopened on SIGUSR1 (logrotate) and replaced on reload when its
 * settings change. Lines are written with one write(2) each (O_APPEND).
 */
#ifndef SLUICE_PROXY_ACCESSLOG_H
#define SLUICE_PROXY_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

struct accesslog;
struct conf_access_log;

/* What one line says; strings may be NULL ("-"). Durations in ms, -1 when not applicable. */
struct accesslog_entry {
    uint64_t id;
    const char *client;
    const char *method;
    const char *target;
    const char *user_agent;
    const char *route;
    const char *upstream;
    const char *reason;
    int status;
    uint64_t bytes; /* response body bytes sent to the client */
    int64_t queue_ms;
    int64_t upstream_ms;
    uint64_t parent; /* a part of an aggregate route: the aggregate's request id; 0: none */
};

/* Open per the config (path NULL or "-": stderr). NULL with a message in err. */
struct accesslog *accesslog_open(const struct conf_access_log *c, char *err, size_t errlen);

/* Reopen the file (after logrotate moved it). Returns 0 or -1 (the old fd is kept). */
int accesslog_reopen(struct accesslog *a);

void accesslog_write(struct accesslog *a, const struct accesslog_entry *e);

void accesslog_close(struct accesslog *a);

#endif
