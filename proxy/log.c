/*
 * proxy/log: timestamped, levelled lines on stderr. See log.h.
 */
#include "proxy/log.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOG_LEVEL_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level) { current_level = level; }

int log_enabled(enum log_level level) { return level <= current_level; }

static void log_vwrite(enum log_level level, const char *fmt, va_list ap)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    size_t n;
    int r;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    r = snprintf(line + n, sizeof(line) - n, ".%03ldZ %-5s ", (long)(tv.tv_usec / 1000),
                 level_names[level]);
    if (r > 0)
        n += (size_t)r;
    r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    if (r > 0)
        n += (size_t)r;
    if (n > sizeof(line) - 2) /* truncated: keep the newline */
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* One write so concurrent writers (e.g. a test reading stderr) see whole lines. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}

static void libevent_log_cb(int severity, const char *msg)
{
    enum log_level level = severity >= EVENT_LOG_ERR    ? LOG_LEVEL_ERROR
                           : severity == EVENT_LOG_WARN ? LOG_LEVEL_WARN
                           : severity == EVENT_LOG_MSG  ? LOG_LEVEL_INFO
                                                        : LOG_LEVEL_DEBUG;
    log_write(level, "libevent: %s", msg);
}

void log_capture_libevent(void) { event_set_log_callback(libevent_log_cb); }
