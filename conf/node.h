/*
 * conf/node: the YAML reader. A config file's text becomes a small tree of nodes
 * (scalars, mappings, lists), each with the line and column where it starts.
 *
 * Contract
 *   - node_parse() reads libyaml's event stream into the tree. What YAML allows but a
 *     config has no use for is refused there, at its position: anchors, aliases, tags,
 *     mapping keys that are not scalars, NUL characters in a scalar, a second document,
 *     nesting deeper than 32. A syntax error is libyaml's own message at its problem
 *     mark (with a hint when a tab in the indentation is the likely cause).
 *   - Duplicate keys are not refused here (the tree keeps them in order): conf/schema
 *     refuses them where it reads a mapping, naming the first one's position.
 *   - The tree is owned by the caller (node_free); nodes never point into the text.
 *   - Errors go to the struct diag (conf/diag), at the top level of the key path.
 */
#ifndef SLUICE_CONF_NODE_H
#define SLUICE_CONF_NODE_H

#include <stddef.h>

#include "conf/conf.h"

struct diag;

enum node_kind { NODE_SCALAR, NODE_MAP, NODE_SEQ };

struct node {
    enum node_kind kind;
    struct conf_mark mark; /* start of the node, 1-based */
    char *text;            /* NODE_SCALAR: the value, NUL-terminated (NULs are refused) */
    int plain;             /* NODE_SCALAR: written without quotes or block style */
    struct node **kids;    /* NODE_MAP: key, value, key, value...; NODE_SEQ: the items */
    size_t nkids, cap;
};

/* Build the tree of the (single) document in text[0..len). Returns 0 with *out (NULL for
 * a stream without any document: empty, or only comments), or -1 after diag_fail(). */
int node_parse(struct diag *d, const char *text, size_t len, struct node **out)
    __attribute__((warn_unused_result));

/* Free a tree; NULL is fine. */
void node_free(struct node *n);

/* Is n a plain scalar that YAML reads as null ("", "~", "null", "Null", "NULL")? */
int node_is_null(const struct node *n);

/* What n is, for "expected X, got Y": "a mapping", "a list", "an empty value" or the
 * quoted value (an excerpt, in buf). */
const char *node_describe(const struct node *n, char *buf, size_t size);

/* The value of `key` in mapping `map` (the first one); NULL when map is NULL, not a
 * mapping, or has no such key. */
const struct node *node_get(const struct node *map, const char *key);

#endif
