/*
 * conf/node: the YAML reader (see node.h for the contract).
 *
 * One pass over libyaml's events (yaml_parser_parse) with an explicit stack of the open
 * mappings and lists. Anchors, aliases and tags are legal YAML but have no use in this
 * config and would only let a value come from somewhere other than where it is read.
 *
 * Invariant: a node is attached to its parent (or becomes the root) as soon as it is
 * made, before anything about it is checked, so every error path frees it with the tree.
 */
#include "conf/node.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "conf/diag.h"

#define MAX_DEPTH 32 /* nesting of the YAML; the config needs 6 */

static struct conf_mark mark_of(const yaml_mark_t *m)
{
    struct conf_mark cm = {(uint32_t)m->line + 1, (uint32_t)m->column + 1};
    return cm;
}

void node_free(struct node *n)
{
    if (n == NULL)
        return;
    for (size_t i = 0; i < n->nkids; i++)
        node_free(n->kids[i]);
    free(n->kids);
    free(n->text);
    free(n);
}

static int node_add(struct node *parent, struct node *kid)
{
    if (parent->nkids == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        struct node **k = realloc(parent->kids, cap * sizeof *k);
        if (k == NULL)
            return -1;
        parent->kids = k;
        parent->cap = cap;
    }
    parent->kids[parent->nkids++] = kid;
    return 0;
}

int node_is_null(const struct node *n)
{
    return n->kind == NODE_SCALAR && n->plain &&
           (n->text[0] == '\0' || strcmp(n->text, "~") == 0 || strcmp(n->text, "null") == 0 ||
            strcmp(n->text, "Null") == 0 || strcmp(n->text, "NULL") == 0);
}

const char *node_describe(const struct node *n, char *buf, size_t size)
{
    char ex[64];
    if (n->kind == NODE_MAP)
        return "a mapping";
    if (n->kind == NODE_SEQ)
        return "a list";
    if (node_is_null(n))
        return "an empty value";
    snprintf(buf, size, "'%s'", diag_excerpt(n->text, ex, sizeof ex));
    return buf;
}

const struct node *node_get(const struct node *map, const char *key)
{
    if (map == NULL || map->kind != NODE_MAP)
        return NULL;
    for (size_t i = 0; i + 1 < map->nkids; i += 2)
        if (strcmp(map->kids[i]->text, key) == 0)
            return map->kids[i + 1];
    return NULL;
}

/* Does line `line` (0-based) of the input start with whitespace holding a tab? */
static int line_indented_with_tab(const char *s, size_t len, size_t line)
{
    size_t i = 0;
    while (line > 0 && i < len) {
        if (s[i++] == '\n')
            line--;
    }
    for (; i < len && (s[i] == ' ' || s[i] == '\t'); i++)
        if (s[i] == '\t')
            return 1;
    return 0;
}

/* libyaml's own message for a syntax error, at its problem mark, with its context and a
 * hint for the most common cause (a tab in the indentation). */
static void fail_syntax(struct diag *d, const yaml_parser_t *p, const char *text, size_t len)
{
    struct conf_mark m = mark_of(&p->problem_mark);
    const char *problem = p->problem ? p->problem : "invalid YAML";
    const char *hint = "";
    if (strstr(problem, "tab") == NULL && line_indented_with_tab(text, len, p->problem_mark.line))
        hint = " (tabs are not allowed in indentation; use spaces)";
    diag_reset(d);
    if (p->error == YAML_MEMORY_ERROR)
        diag_oom(d);
    else if (p->context != NULL)
        diag_fail(d, &m, "%s%s (%s at %u:%u)", problem, hint, p->context,
                  (unsigned)p->context_mark.line + 1, (unsigned)p->context_mark.column + 1);
    else
        diag_fail(d, &m, "%s%s", problem, hint);
}

int node_parse(struct diag *d, const char *text, size_t len, struct node **out)
{
    yaml_parser_t p;
    yaml_event_t ev;
    struct node *stack[MAX_DEPTH];
    struct node *root = NULL;
    size_t depth = 0;
    int ndocs = 0, done = 0, rc = -1;

    *out = NULL;
    if (!yaml_parser_initialize(&p)) {
        diag_oom(d);
        return -1;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);

    while (!done) {
        struct node *n = NULL;
        const yaml_char_t *anchor = NULL, *tag = NULL;
        struct conf_mark m;

        if (!yaml_parser_parse(&p, &ev)) {
            fail_syntax(d, &p, text, len);
            goto out;
        }
        m = mark_of(&ev.start_mark);
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (ndocs++ > 0) {
                diag_fail(d, &m, "only one YAML document is allowed, found a second one");
                goto out_event;
            }
            break;
        case YAML_ALIAS_EVENT:
            diag_fail(d, &m, "aliases (*%s) are not allowed; write the value out",
                      (const char *)ev.data.alias.anchor);
            goto out_event;
        case YAML_SCALAR_EVENT:
            anchor = ev.data.scalar.anchor;
            tag = ev.data.scalar.tag;
            if (anchor == NULL && tag == NULL &&
                memchr(ev.data.scalar.value, '\0', ev.data.scalar.length) != NULL) {
                diag_fail(d, &m, "NUL characters are not allowed");
                goto out_event;
            }
            n = calloc(1, sizeof *n);
            if (n == NULL || (n->text = malloc(ev.data.scalar.length + 1)) == NULL) {
                free(n);
                diag_oom(d);
                goto out_event;
            }
            n->kind = NODE_SCALAR;
            memcpy(n->text, ev.data.scalar.value, ev.data.scalar.length);
            n->text[ev.data.scalar.length] = '\0';
            n->plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
            break;
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
            if (ev.type == YAML_SEQUENCE_START_EVENT) {
                anchor = ev.data.sequence_start.anchor;
                tag = ev.data.sequence_start.tag;
            } else {
                anchor = ev.data.mapping_start.anchor;
                tag = ev.data.mapping_start.tag;
            }
            if (depth == MAX_DEPTH) {
                diag_fail(d, &m, "nested more than %d levels deep", MAX_DEPTH);
                goto out_event;
            }
            n = calloc(1, sizeof *n);
            if (n == NULL) {
                diag_oom(d);
                goto out_event;
            }
            n->kind = ev.type == YAML_SEQUENCE_START_EVENT ? NODE_SEQ : NODE_MAP;
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            depth--;
            break;
        default: /* stream start, document end */
            break;
        }

        if (n != NULL) {
            n->mark = m;
            /* Attach first, so that every later error frees it with the tree. */
            if (depth == 0)
                root = n;
            else if (node_add(stack[depth - 1], n) != 0) {
                node_free(n);
                diag_oom(d);
                goto out_event;
            }
            if (anchor != NULL) {
                diag_fail(d, &m, "anchors (&%s) are not allowed", (const char *)anchor);
                goto out_event;
            }
            if (tag != NULL) {
                diag_fail(d, &m, "tags (%s) are not allowed", (const char *)tag);
                goto out_event;
            }
            if (depth > 0 && stack[depth - 1]->kind == NODE_MAP &&
                stack[depth - 1]->nkids % 2 == 1 && n->kind != NODE_SCALAR) {
                diag_fail(d, &m, "mapping keys must be strings, not lists or mappings");
                goto out_event;
            }
            if (n->kind != NODE_SCALAR)
                stack[depth++] = n;
        }
        yaml_event_delete(&ev);
    }
    *out = root;
    root = NULL;
    rc = 0;
    goto out;
out_event:
    yaml_event_delete(&ev);
out:
    node_free(root);
    yaml_parser_delete(&p);
    return rc;
}
