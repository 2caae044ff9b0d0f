/*
 * conf/diag: the one error of a config load, written "FILE:LINE:COL: key.path: problem".
 *
 * Contract
 *   - A struct diag lives on the stack of one load (conf_load, conf_load_string) and is
 *     passed down to every stage: conf/node (YAML syntax), conf/schema (keys and values)
 *     and conf/conf (checks across keys). Nothing else in the process uses it.
 *   - Only the first error is kept: diag_fail() records it and the caller returns -1 at
 *     once; every later diag_fail() is ignored, so a message never mixes two errors.
 *   - The key path ("upstreams.api.limits[0]") follows the walk: diag_push/diag_index
 *     append to it and return the length that diag_pop restores. A message carries the
 *     path unless it is empty (top level, YAML syntax).
 *   - The caller's buffer is only written by diag_fail: never past errlen, always
 *     NUL-terminated (nothing is written when errlen is 0). No allocation, no I/O.
 */
#ifndef SLUICE_CONF_DIAG_H
#define SLUICE_CONF_DIAG_H

#include <stddef.h>

struct conf_mark;

struct diag {
    const char *file; /* FILE in messages */
    char *err;        /* the caller's buffer (NULL when errlen is 0) */
    size_t errlen;
    int failed;     /* an error has been recorded; later ones are dropped */
    char path[256]; /* key path of what is being read: "upstreams.api.limits[0]" */
    size_t pathlen;
};

/* Record the first error as "FILE:LINE:COL: path: message" ("FILE: message" when m is NULL
 * or has no position, no "path: " at the top level). */
void diag_fail(struct diag *d, const struct conf_mark *m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* diag_fail(d, NULL, "out of memory"). */
void diag_oom(struct diag *d);

/* Append ".name" ("name" at the top) or "[i]" to the path; return the length to restore
 * with diag_pop. Control characters of a name as the user wrote it become '?', so that a
 * message stays on one line. */
size_t diag_push(struct diag *d, const char *name);
size_t diag_index(struct diag *d, size_t i);
void diag_pop(struct diag *d, size_t len);
void diag_reset(struct diag *d); /* back to the top level */

/* `s` as quoted in a message: at most 48 bytes (then "...", never inside a UTF-8
 * sequence), control characters (C0, DEL, C1) as '?'. Written into buf (size at least
 * 8), which is returned. */
const char *diag_excerpt(const char *s, char *buf, size_t size);

#endif
