/*
 * proxy/log: the daemon's own log (not the access log): one line per event on stderr,
 *   2026-11-23T23:40:01.123Z info  upstream api: queue drained
 * Lines about a request start with "req=ID route=PREFIX upstream=NAME" so that the log
 * can be grepped per request.
 *
 * Called from anywhere in the event loop; never from a raw signal handler. Writes are
 * unbuffered single write(2)s so lines from one process never interleave.
 */
#ifndef SLUICE_PROXY_LOG_H
#define SLUICE_PROXY_LOG_H

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

void log_set_level(enum log_level level);
int log_enabled(enum log_level level);

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_write(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_LEVEL_DEBUG))                                                          \
            log_write(LOG_LEVEL_DEBUG, __VA_ARGS__);                                               \
    } while (0)

/* Route libevent's own warnings into this log (call once at start-up). */
void log_capture_libevent(void);

#endif
