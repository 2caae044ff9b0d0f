/*
 * tests/fuzz/fuzz_conf: libFuzzer harness for the YAML config loader (conf/conf).
 *
 * Input: a config file's text. It is copied into a NUL-terminated string (an embedded
 * NUL ends it early, as it would for conf_load_string's callers) and loaded with
 * conf_load_string(); a loaded config is freed.
 *
 * Checked: no crash, leak or undefined behaviour (ASan, LSan, UBSan), and when the load
 * fails, the message is non-empty and NUL-terminated inside the buffer. The error buffer
 * is on the heap at exactly the daemon's size, so a write past it is caught.
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
    conf_free(c);
    free(err);
    free(yaml);
    return 0;
}
