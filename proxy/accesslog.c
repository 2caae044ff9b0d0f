/*
 * proxy/accesslog: one line per finished request. See accesslog.h for the formats.
 *
 * Each line is built in memory (on the stack, or on the heap when a long target or
 * user agent needs it) and written with one write(2) on an O_APPEND descriptor, so lines
 * from this process never interleave and a rotated file never gets half a line.
 *
 * Escaping
 *   text: what the client sent (target, user agent) and config strings are printed as
 *         is except '"', '\', space (in key=value fields), control bytes and bytes >= 0x7f,
 *         which become \xHH (as nginx does), so a line always splits on spaces and quotes.
 *   json: RFC 8259 strings; valid UTF-8 is kept, every other byte becomes \u00HH, so the
 *         line is valid UTF-8 JSON whatever the client sent. Absent values are null.
 */
#include "proxy/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "proxy/log.h"

struct accesslog {
    int fd; /* STDERR_FILENO when to_stderr */
    int to_stderr;
    char *path; /* NULL when to_stderr */
    enum conf_log_format format;
    int write_failing; /* a write failed: logged once until one succeeds */
};

/* A line being built: starts in `stack`, moves to the heap when it outgrows it. */
struct line {
    char *p;
    size_t len, cap;
    int oom;
    char stack[4096];
};

static void line_init(struct line *l)
{
    l->p = l->stack;
    l->len = 0;
    l->cap = sizeof(l->stack);
    l->oom = 0;
}

static void line_deinit(struct line *l)
{
    if (l->p != l->stack)
        free(l->p);
}

static int line_reserve(struct line *l, size_t n)
{
    size_t cap;
    char *p;

    if (l->oom)
        return -1;
    if (l->len + n <= l->cap)
        return 0;
    cap = l->cap * 2;
    while (cap < l->len + n)
        cap *= 2;
    p = l->p == l->stack ? malloc(cap) : realloc(l->p, cap);
    if (p == NULL) {
        l->oom = 1;
        return -1;
    }
    if (l->p == l->stack)
        memcpy(p, l->stack, l->len);
    l->p = p;
    l->cap = cap;
    return 0;
}

static void line_add(struct line *l, const char *s, size_t n)
{
    if (line_reserve(l, n) != 0)
        return;
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void line_adds(struct line *l, const char *s) { line_add(l, s, strlen(s)); }

static void line_printf(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line_printf(struct line *l, const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        line_add(l, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* ---------------------------------------------------------------- text */

static void text_escaped(struct line *l, const char *s, int escape_space)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;

    if (s == NULL || *s == '\0') {
        line_add(l, "-", 1);
        return;
    }
    for (; *p != '\0'; p++) {
        if (*p < 0x20 || *p >= 0x7f || *p == '"' || *p == '\\' || (escape_space && *p == ' ')) {
            char esc[4] = {'\\', 'x', hex[*p >> 4], hex[*p & 15]};
            line_add(l, esc, 4);
        } else {
            line_add(l, (const char *)p, 1);
        }
    }
}

static void format_text(struct line *l, const struct accesslog_entry *e, const struct timeval *tv)
{
    struct tm tm;
    char when[64];

    gmtime_r(&tv->tv_sec, &tm);
    strftime(when, sizeof(when), "[%d/%b/%Y:%H:%M:%S +0000]", &tm);
    text_escaped(l, e->client, 1);
    line_add(l, " - - ", 5);
    line_adds(l, when);
    line_add(l, " \"", 2);
    text_escaped(l, e->method, 1);
    line_add(l, " ", 1);
    text_escaped(l, e->target, 0);
    line_printf(l, "\" %d %" PRIu64 " \"-\" \"", e->status, e->bytes);
    text_escaped(l, e->user_agent, 0);
    line_printf(l, "\" req=%" PRIu64 " route=", e->id);
    text_escaped(l, e->route, 1);
    line_add(l, " upstream=", 10);
    text_escaped(l, e->upstream, 1);
    line_add(l, " reason=", 8);
    text_escaped(l, e->reason, 1);
    line_add(l, " queue_ms=", 10);
    if (e->queue_ms < 0)
        line_add(l, "-", 1);
    else
        line_printf(l, "%" PRId64, e->queue_ms);
    line_add(l, " upstream_ms=", 13);
    if (e->upstream_ms < 0)
        line_add(l, "-", 1);
    else
        line_printf(l, "%" PRId64, e->upstream_ms);
    if (e->parent != 0)
        line_printf(l, " parent=%" PRIu64, e->parent);
    line_add(l, "\n", 1);
}

/* ---------------------------------------------------------------- json */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when p does not start one. */
static size_t utf8_len(const unsigned char *p)
{
    size_t n, i;
    uint32_t cp;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2;
        cp = p[0] & 0x1f;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3;
        cp = p[0] & 0x0f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4;
        cp = p[0] & 0x07;
    } else {
        return 0;
    }
    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) /* also stops at the terminating NUL */
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    /* overlong forms, surrogates, beyond U+10FFFF */
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

static void json_string(struct line *l, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;

    if (s == NULL) {
        line_add(l, "null", 4);
        return;
    }
    line_add(l, "\"", 1);
    while (*p != '\0') {
        size_t n = utf8_len(p);
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            line_add(l, esc, 2);
            p++;
        } else if (n == 0 || *p < 0x20 || *p == 0x7f) {
            char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            line_add(l, esc, 6);
            p++;
        } else {
            line_add(l, (const char *)p, n);
            p += n;
        }
    }
    line_add(l, "\"", 1);
}

static void json_ms(struct line *l, int64_t ms)
{
    if (ms < 0)
        line_add(l, "null", 4);
    else
        line_printf(l, "%" PRId64, ms);
}

static void format_json(struct line *l, const struct accesslog_entry *e, const struct timeval *tv)
{
    struct tm tm;
    char when[64];

    gmtime_r(&tv->tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    line_printf(l, "{\"time\":\"%s.%03ldZ\",\"req\":%" PRIu64 ",\"client\":", when,
                (long)(tv->tv_usec / 1000), e->id);
    json_string(l, e->client);
    line_adds(l, ",\"method\":");
    json_string(l, e->method);
    line_adds(l, ",\"target\":");
    json_string(l, e->target);
    line_printf(l, ",\"status\":%d,\"bytes\":%" PRIu64 ",\"route\":", e->status, e->bytes);
    json_string(l, e->route);
    line_adds(l, ",\"upstream\":");
    json_string(l, e->upstream);
    line_adds(l, ",\"reason\":");
    json_string(l, e->reason);
    line_adds(l, ",\"queue_ms\":");
    json_ms(l, e->queue_ms);
    line_adds(l, ",\"upstream_ms\":");
    json_ms(l, e->upstream_ms);
    line_adds(l, ",\"user_agent\":");
    json_string(l, e->user_agent);
    if (e->parent != 0)
        line_printf(l, ",\"parent\":%" PRIu64, e->parent);
    line_add(l, "}\n", 2);
}

/* ---------------------------------------------------------------- the file */

static int open_path(const char *path)
{
    int fd;

    do
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    while (fd < 0 && errno == EINTR);
    return fd;
}

struct accesslog *accesslog_open(const struct conf_access_log *c, char *err, size_t errlen)
{
    struct accesslog *a = calloc(1, sizeof(*a));

    if (a == NULL) {
        snprintf(err, errlen, "access_log: out of memory");
        return NULL;
    }
    a->format = c->format;
    if (c->path == NULL || strcmp(c->path, "-") == 0) {
        a->to_stderr = 1;
        a->fd = STDERR_FILENO;
        return a;
    }
    a->path = strdup(c->path);
    if (a->path == NULL) {
        snprintf(err, errlen, "access_log: out of memory");
        free(a);
        return NULL;
    }
    a->fd = open_path(a->path);
    if (a->fd < 0) {
        snprintf(err, errlen, "access_log.path: cannot open '%s': %s", a->path, strerror(errno));
        free(a->path);
        free(a);
        return NULL;
    }
    return a;
}

int accesslog_reopen(struct accesslog *a)
{
    int fd;

    if (a == NULL || a->to_stderr)
        return 0;
    fd = open_path(a->path);
    if (fd < 0) {
        log_error("access_log: cannot reopen '%s': %s (still writing to the old file)", a->path,
                  strerror(errno));
        return -1;
    }
    close(a->fd);
    a->fd = fd;
    a->write_failing = 0;
    return 0;
}

void accesslog_write(struct accesslog *a, const struct accesslog_entry *e)
{
    struct line l;
    struct timeval tv;
    size_t off = 0;

    if (a == NULL)
        return;
    gettimeofday(&tv, NULL);
    line_init(&l);
    if (a->format == CONF_LOG_JSON)
        format_json(&l, e, &tv);
    else
        format_text(&l, e, &tv);
    if (l.oom) {
        log_warn("req=%" PRIu64 ": access log line dropped: out of memory", e->id);
        line_deinit(&l);
        return;
    }
    /* One write(2) for the line; the loop only matters for a short write (disk full,
     * a pipe), where the rest follows rather than being lost. */
    while (off < l.len) {
        ssize_t w = write(a->fd, l.p + off, l.len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (!a->write_failing)
                log_error("access_log: write to %s failed: %s (further failures not logged)",
                          a->to_stderr ? "stderr" : a->path,
                          w < 0 ? strerror(errno) : "no progress");
            a->write_failing = 1;
            break;
        }
        off += (size_t)w;
    }
    if (off == l.len)
        a->write_failing = 0;
    line_deinit(&l);
}

void accesslog_close(struct accesslog *a)
{
    if (a == NULL)
        return;
    if (!a->to_stderr && a->fd >= 0)
        close(a->fd);
    free(a->path);
    free(a);
}
