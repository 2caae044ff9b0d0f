/*
 * conf/diag: the one error of a config load (see diag.h for the contract).
 *
 * Invariant: d->path[d->pathlen] is always '\0' and pathlen < sizeof d->path; a path too
 * long for the buffer is cut, never overrun.
 */
#include "conf/diag.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "conf/conf.h"

void diag_fail(struct diag *d, const struct conf_mark *m, const char *fmt, ...)
{
    va_list ap;
    size_t used;
    int n;

    if (d->failed)
        return;
    d->failed = 1;
    if (d->errlen == 0)
        return;
    if (m != NULL && m->line != 0)
        n = snprintf(d->err, d->errlen, "%s:%u:%u: ", d->file, (unsigned)m->line, (unsigned)m->col);
    else
        n = snprintf(d->err, d->errlen, "%s: ", d->file);
    if (n < 0 || (size_t)n >= d->errlen)
        return;
    used = (size_t)n;
    if (d->pathlen > 0) {
        n = snprintf(d->err + used, d->errlen - used, "%s: ", d->path);
        if (n < 0 || (size_t)n >= d->errlen - used)
            return;
        used += (size_t)n;
    }
    va_start(ap, fmt);
    vsnprintf(d->err + used, d->errlen - used, fmt, ap);
    va_end(ap);
}

void diag_oom(struct diag *d) { diag_fail(d, NULL, "out of memory"); }

size_t diag_push(struct diag *d, const char *name)
{
    size_t old = d->pathlen;
    int n = snprintf(d->path + old, sizeof d->path - old, "%s%s", old ? "." : "", name);
    if (n > 0)
        d->pathlen = old + (size_t)n < sizeof d->path ? old + (size_t)n : sizeof d->path - 1;
    for (size_t i = old; i < d->pathlen; i++)
        if ((unsigned char)d->path[i] < 0x20 || d->path[i] == 0x7f)
            d->path[i] = '?';
    return old;
}

size_t diag_index(struct diag *d, size_t i)
{
    size_t old = d->pathlen;
    int n = snprintf(d->path + old, sizeof d->path - old, "[%zu]", i);
    if (n > 0)
        d->pathlen = old + (size_t)n < sizeof d->path ? old + (size_t)n : sizeof d->path - 1;
    return old;
}

void diag_pop(struct diag *d, size_t len)
{
    d->pathlen = len;
    d->path[len] = '\0';
}

void diag_reset(struct diag *d) { diag_pop(d, 0); }

const char *diag_excerpt(const char *s, char *buf, size_t size)
{
    size_t i, n = 0, max = size - 4, cut_i = 0, cut_n = 0;
    for (i = 0; s[i] != '\0' && n < max && n < 48; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c & 0xc0) != 0x80) { /* a character starts here: a place to cut */
            cut_i = i;
            cut_n = n;
        }
        if (c == 0xc2 && (unsigned char)s[i + 1] >= 0x80 && (unsigned char)s[i + 1] <= 0x9f) {
            buf[n++] = '?'; /* a C1 control character (U+0080..U+009F; NEL breaks lines) */
            i++;
        } else
            buf[n++] = c < 0x20 || c == 0x7f ? '?' : s[i];
    }
    /* Cut before a UTF-8 sequence rather than inside it. */
    if (((unsigned char)s[i] & 0xc0) == 0x80) {
        i = cut_i;
        n = cut_n;
    }
    if (s[i] != '\0') {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}
