/*
 * tests/fuzz/fuzz_conf: libFuzzer harness for the YAML config loader (conf/conf).
 *
 * Input: a config file's text. It is copied into a NUL-terminated string (an embedded
 * NUL ends it early, as it would for conf_load_string's callers) and loaded with
 * conf_load_string(); a loaded config is freed.
 *
 * Checked: no crash, leak or undefined behaviour (ASan, LSan, UBSan), and when the load
 * fails, the message is non-empty and NUL-terminated inside the buffer. The error buffer
 * is on the heap at exactly the daemon's size, so a write past it is caught. When it
 * loads, what conf.h promises of routes: exactly one of upstream and aggregate, every
 * upstream_index resolved (SIZE_MAX on an aggregate route), an aggregate's 1..32 parts
 * with names of 1..64 bytes, methods a non-empty set of the seven.
 *
 * Paths named in the input (TLS cert, key, CA file) are opened read-only to check they are
 * readable, and shared.password_file is read (a regular file only, at most 4 KiB, opened
 * non-blocking, so no input can make a load hang); nothing is written.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"

#define ERR_LEN 1024 /* as proxy/main.c and proxy/reload.c */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_route(const struct conf *c, const struct conf_route *r)
{
    const struct conf_aggregate *a = r->aggregate;

    if (r->methods == 0 || (r->methods & ~0x7fu) != 0)
        abort();
    if (a == NULL) {
        if (r->upstream == NULL || r->upstream_index >= c->nupstreams)
            abort();
        return;
    }
    if (r->upstream != NULL || r->upstream_index != SIZE_MAX || r->strip_prefix)
        abort();
    if (a->nparts < 1 || a->nparts > 32 || a->timeout_ms < 1 || a->max_part_size < 1)
        abort();
    for (size_t i = 0; i < a->nparts; i++) {
        const struct conf_part *p = &a->parts[i];
        size_t len = strlen(p->name);
        if (len < 1 || len > 64 || p->upstream_index >= c->nupstreams || p->path[0] != '/')
            abort();
        for (size_t j = 0; j < i; j++)
            if (strcmp(a->parts[j].name, p->name) == 0)
                abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *yaml = malloc(size + 1);
    char *err = malloc(ERR_LEN);
    struct conf *c;

    if (yaml == NULL || err == NULL)
        abort();
    memcpy(yaml, data, size);
    yaml[size] = '\0';
    memset(err, 'X', ERR_LEN); /* no NUL: a message that is not terminated shows */

    c = conf_load_string("fuzz.yaml", yaml, err, ERR_LEN);
    if (c == NULL) {
        if (memchr(err, '\0', ERR_LEN) == NULL || err[0] == '\0')
            abort();
    }
    for (size_t i = 0; c != NULL && i < c->nroutes; i++)
        check_route(c, &c->routes[i]);
    conf_free(c);
    free(err);
    free(yaml);
    return 0;
}
