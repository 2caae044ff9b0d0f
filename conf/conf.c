/*
 * conf/conf: load the YAML config into struct conf (see conf.h for the contract).
 *
 * How a file becomes a struct conf
 *
 *     text --libyaml events--> node tree --key tables--> struct conf --cross checks--> caller
 *
 *   1. parse_tree() reads libyaml's event stream (yaml_parser_parse) into a small tree of
 *      nodes, each keeping its start mark. Anchors, aliases, tags, non-scalar keys and a
 *      second document are refused here: they are legal YAML but have no use in this
 *      config and would only let a value come from somewhere other than where it is read.
 *   2. load_struct() walks a mapping node against a key table (struct key[] below, the
 *      one declaration of every option: name, type, bounds, default, whether required).
 *      Defaults are written in the table as text and go through the same parser as the
 *      file, so a default can never be out of its own bounds unnoticed (a unit test loads
 *      a minimal config and checks them).
 *   3. cross_check() looks at what no single key can see: listeners that overlap, routes
 *      naming upstreams that do not exist, two routes for the same prefix and host.
 *
 * Invariants
 *   - Only the first error is reported: fail() records it and every caller returns -1
 *     straight away, so later checks never see a half-filled struct.
 *   - Every heap object hangs off the struct conf from the moment it is allocated (a list
 *     is allocated zeroed and counted before its entries are filled), so conf_free() on a
 *     struct abandoned at any error frees everything.
 *   - A struct's mark is the position of the mapping that describes it, except an
 *     upstream's, which is its name (the key under `upstreams:`), and tls_client's of an
 *     https upstream without a `tls:` section, which is the url that enabled it.
 */
#include "conf/conf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "conf/units.h"

#define MAX_DEPTH     32         /* nesting of the YAML; the config needs 6 */
#define MAX_FILE_SIZE (4u << 20) /* a config larger than this is a mistake */
#define MAX_KEYS      16         /* keys per table (checked in load_struct) */
#define NOFIELD       ((size_t)-1)

_Static_assert(sizeof(enum conf_log_level) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum conf_log_format) == sizeof(int), "enums are stored as int");

/* ---------------------------------------------------------------- node tree */

enum node_kind { NODE_SCALAR, NODE_MAP, NODE_SEQ };

struct node {
    enum node_kind kind;
    struct conf_mark mark; /* start of the node, 1-based */
    char *text;            /* NODE_SCALAR: the value, NUL-terminated (NULs are refused) */
    int plain;             /* NODE_SCALAR: written without quotes or block style */
    struct node **kids;    /* NODE_MAP: key, value, key, value...; NODE_SEQ: the items */
    size_t nkids, cap;
};

struct loader {
    const char *file; /* FILE in messages */
    char *err;
    size_t errlen;
    int failed;     /* an error has been recorded; later ones are dropped */
    char path[256]; /* key path of what is being read: "upstreams.api.limits[0]" */
    size_t pathlen;
    const char *input; /* the YAML text, for hints about syntax errors */
    size_t inputlen;
};

static void fail(struct loader *ld, const struct conf_mark *m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record the first error as "FILE:LINE:COL: path: message" ("FILE: message" without a
 * position, "FILE:LINE:COL: message" at the top level). */
static void fail(struct loader *ld, const struct conf_mark *m, const char *fmt, ...)
{
    va_list ap;
    size_t used;
    int n;

    if (ld->failed)
        return;
    ld->failed = 1;
    if (ld->errlen == 0)
        return;
    if (m != NULL && m->line != 0)
        n = snprintf(ld->err, ld->errlen, "%s:%u:%u: ", ld->file, (unsigned)m->line,
                     (unsigned)m->col);
    else
        n = snprintf(ld->err, ld->errlen, "%s: ", ld->file);
    if (n < 0 || (size_t)n >= ld->errlen)
        return;
    used = (size_t)n;
    if (ld->pathlen > 0) {
        n = snprintf(ld->err + used, ld->errlen - used, "%s: ", ld->path);
        if (n < 0 || (size_t)n >= ld->errlen - used)
            return;
        used += (size_t)n;
    }
    va_start(ap, fmt);
    vsnprintf(ld->err + used, ld->errlen - used, fmt, ap);
    va_end(ap);
}

static void fail_oom(struct loader *ld) { fail(ld, NULL, "out of memory"); }

/* Append ".name" (or "name" at the top) to the path; returns the length to restore.
 * The name may be a key as the user wrote it: control characters become '?', so that a
 * message stays on one line. */
static size_t path_push(struct loader *ld, const char *name)
{
    size_t old = ld->pathlen;
    int n = snprintf(ld->path + old, sizeof ld->path - old, "%s%s", old ? "." : "", name);
    if (n > 0)
        ld->pathlen = old + (size_t)n < sizeof ld->path ? old + (size_t)n : sizeof ld->path - 1;
    for (size_t i = old; i < ld->pathlen; i++)
        if ((unsigned char)ld->path[i] < 0x20 || ld->path[i] == 0x7f)
            ld->path[i] = '?';
    return old;
}

static size_t path_index(struct loader *ld, size_t i)
{
    size_t old = ld->pathlen;
    int n = snprintf(ld->path + old, sizeof ld->path - old, "[%zu]", i);
    if (n > 0)
        ld->pathlen = old + (size_t)n < sizeof ld->path ? old + (size_t)n : sizeof ld->path - 1;
    return old;
}

static void path_pop(struct loader *ld, size_t len)
{
    ld->pathlen = len;
    ld->path[len] = '\0';
}

static void path_reset(struct loader *ld) { path_pop(ld, 0); }

/* A value as quoted in a message: at most 48 characters, control characters as '?'. */
static const char *excerpt(const char *s, char *buf, size_t size)
{
    size_t i, n = 0, max = size - 4;
    for (i = 0; s[i] != '\0' && n < max && n < 48; i++)
        buf[n++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (s[i] != '\0') {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

static struct conf_mark mark_of(const yaml_mark_t *m)
{
    struct conf_mark cm = {(uint32_t)m->line + 1, (uint32_t)m->column + 1};
    return cm;
}

static void node_free(struct node *n)
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

static int node_is_null(const struct node *n)
{
    return n->kind == NODE_SCALAR && n->plain &&
           (n->text[0] == '\0' || strcmp(n->text, "~") == 0 || strcmp(n->text, "null") == 0 ||
            strcmp(n->text, "Null") == 0 || strcmp(n->text, "NULL") == 0);
}

/* What a node is, for "expected X, got Y". */
static const char *node_describe(const struct node *n, char *buf, size_t size)
{
    char ex[64];
    if (n->kind == NODE_MAP)
        return "a mapping";
    if (n->kind == NODE_SEQ)
        return "a list";
    if (node_is_null(n))
        return "an empty value";
    snprintf(buf, size, "'%s'", excerpt(n->text, ex, sizeof ex));
    return buf;
}

static const struct node *map_get(const struct node *map, const char *key)
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
static void fail_syntax(struct loader *ld, const yaml_parser_t *p)
{
    struct conf_mark m = mark_of(&p->problem_mark);
    const char *problem = p->problem ? p->problem : "invalid YAML";
    const char *hint = "";
    if (strstr(problem, "tab") == NULL &&
        line_indented_with_tab(ld->input, ld->inputlen, p->problem_mark.line))
        hint = " (tabs are not allowed in indentation; use spaces)";
    path_reset(ld);
    if (p->error == YAML_MEMORY_ERROR)
        fail_oom(ld);
    else if (p->context != NULL)
        fail(ld, &m, "%s%s (%s at %u:%u)", problem, hint, p->context,
             (unsigned)p->context_mark.line + 1, (unsigned)p->context_mark.column + 1);
    else
        fail(ld, &m, "%s%s", problem, hint);
}

/* Build the node tree of the (single) document. Returns 0 with *out (NULL for a stream
 * without any document), or -1 after fail(). */
static int parse_tree(struct loader *ld, struct node **out)
{
    yaml_parser_t p;
    yaml_event_t ev;
    struct node *stack[MAX_DEPTH];
    struct node *root = NULL;
    size_t depth = 0;
    int ndocs = 0, done = 0, rc = -1;

    *out = NULL;
    if (!yaml_parser_initialize(&p)) {
        fail_oom(ld);
        return -1;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)ld->input, ld->inputlen);

    while (!done) {
        struct node *n = NULL;
        const yaml_char_t *anchor = NULL, *tag = NULL;
        struct conf_mark m;

        if (!yaml_parser_parse(&p, &ev)) {
            fail_syntax(ld, &p);
            goto out;
        }
        m = mark_of(&ev.start_mark);
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (ndocs++ > 0) {
                fail(ld, &m, "only one YAML document is allowed, found a second one");
                goto out_event;
            }
            break;
        case YAML_ALIAS_EVENT:
            fail(ld, &m, "aliases (*%s) are not allowed; write the value out",
                 (const char *)ev.data.alias.anchor);
            goto out_event;
        case YAML_SCALAR_EVENT:
            anchor = ev.data.scalar.anchor;
            tag = ev.data.scalar.tag;
            if (anchor == NULL && tag == NULL &&
                memchr(ev.data.scalar.value, '\0', ev.data.scalar.length) != NULL) {
                fail(ld, &m, "NUL characters are not allowed");
                goto out_event;
            }
            n = calloc(1, sizeof *n);
            if (n == NULL || (n->text = malloc(ev.data.scalar.length + 1)) == NULL) {
                free(n);
                fail_oom(ld);
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
                fail(ld, &m, "nested more than %d levels deep", MAX_DEPTH);
                goto out_event;
            }
            n = calloc(1, sizeof *n);
            if (n == NULL) {
                fail_oom(ld);
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
                fail_oom(ld);
                goto out_event;
            }
            if (anchor != NULL) {
                fail(ld, &m, "anchors (&%s) are not allowed", (const char *)anchor);
                goto out_event;
            }
            if (tag != NULL) {
                fail(ld, &m, "tags (%s) are not allowed", (const char *)tag);
                goto out_event;
            }
            if (depth > 0 && stack[depth - 1]->kind == NODE_MAP &&
                stack[depth - 1]->nkids % 2 == 1 && n->kind != NODE_SCALAR) {
                fail(ld, &m, "mapping keys must be strings, not lists or mappings");
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

/* ---------------------------------------------------------------- key tables */

enum key_type {
    KEY_STR,       /* char *, non-empty */
    KEY_HOSTNAME,  /* char *, a DNS name or an IPv4 address */
    KEY_FILE,      /* char *, a readable file; its mark at aux_off */
    KEY_BOOL,      /* int, true|false */
    KEY_U32,       /* uint32_t, plain whole number */
    KEY_NUMBER,    /* double, plain decimal */
    KEY_DURATION,  /* uint64_t milliseconds, "30s" */
    KEY_SIZE32,    /* uint32_t bytes, "8k" */
    KEY_SIZE64,    /* uint64_t bytes, "1m" */
    KEY_RATE,      /* double per second, "10/s" */
    KEY_ENUM,      /* int, one of `enums` */
    KEY_CUSTOM,    /* `parse` does it all */
    KEY_SECTION,   /* a mapping read into the struct at `off` with `sub` */
    KEY_LIST,      /* a list of `sub` structs: pointer at off, size_t count at aux_off */
    KEY_NAMED_MAP, /* a mapping name -> `sub` struct: pointer at off, count at aux_off */
};

#define K_REQUIRED 1u /* missing key is an error */
#define K_PRESENCE 2u /* KEY_SECTION: set the int at aux_off to 1 when the section is there */

struct key_enum {
    const char *name;
    int value;
};

struct table;

struct key {
    const char *name;
    enum key_type type;
    size_t off;                   /* the field, from the start of the table's struct */
    size_t aux_off;               /* see enum key_type */
    const char *min, *max;        /* bounds, written like values ("1ms", "24h"); lists: entries */
    const char *def;              /* default, written like a value; NULL: zero / NULL */
    unsigned flags;               /* K_* */
    const struct key_enum *enums; /* KEY_ENUM, ended by a NULL name */
    const struct table *sub;      /* KEY_SECTION, KEY_LIST, KEY_NAMED_MAP */
    int (*parse)(struct loader *ld, const struct node *value, void *obj); /* KEY_CUSTOM */
};

struct table {
    const struct key *keys; /* ended by a NULL name */
    size_t size;            /* KEY_LIST / KEY_NAMED_MAP: size of one entry */
    size_t mark_off;        /* the struct's own struct conf_mark, or NOFIELD */
    size_t name_off;        /* KEY_NAMED_MAP: the entry's char *name */
    /* Checks across the keys of one struct, once they are all read. */
    int (*finish)(struct loader *ld, const struct node *map, void *obj);
};

#define FIELD(obj, off) ((void *)((char *)(obj) + (off)))

static int set_str(struct loader *ld, void *obj, size_t off, const char *value)
{
    char *copy = strdup(value), *old;
    if (copy == NULL) {
        fail_oom(ld);
        return -1;
    }
    memcpy(&old, FIELD(obj, off), sizeof old);
    free(old);
    memcpy(FIELD(obj, off), &copy, sizeof copy);
    return 0;
}

static void set_ptr(void *obj, size_t off, void *p) { memcpy(FIELD(obj, off), &p, sizeof p); }

/* The scalar text of `n`, or NULL after fail() when it is not a scalar with a value. */
static const char *scalar_text(struct loader *ld, const struct node *n, const char *what)
{
    char buf[80];
    if (n->kind != NODE_SCALAR || node_is_null(n)) {
        fail(ld, &n->mark, "expected %s, got %s", what, node_describe(n, buf, sizeof buf));
        return NULL;
    }
    return n->text;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* A whole number of plain digits, or -1 ("too large" sets *why accordingly). */
static int parse_whole(const char *s, uint64_t *out, const char **why)
{
    uint64_t v = 0;
    if (s[0] == '-') {
        *why = "must not be negative";
        return -1;
    }
    if (!is_digit(s[0])) {
        *why = "expected a whole number";
        return -1;
    }
    for (; is_digit(*s); s++) {
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10) {
            *why = "too large";
            return -1;
        }
        v = v * 10 + (uint64_t)(*s - '0');
    }
    if (*s != '\0') {
        *why = "expected a whole number";
        return -1;
    }
    *out = v;
    return 0;
}

union value {
    uint64_t u;
    double d;
};

static int type_is_double(enum key_type t) { return t == KEY_NUMBER || t == KEY_RATE; }

/* Parse `s` as a value of a number-like type. */
static int parse_typed(enum key_type t, const char *s, union value *v, const char **why)
{
    switch (t) {
    case KEY_U32:
        return parse_whole(s, &v->u, why);
    case KEY_NUMBER:
        return units_parse_number(s, &v->d, why);
    case KEY_DURATION:
        return units_parse_duration_ms(s, &v->u, why);
    case KEY_SIZE32:
    case KEY_SIZE64:
        return units_parse_size(s, &v->u, why);
    case KEY_RATE:
        return units_parse_rate(s, &v->d, why);
    default:
        *why = "not a number type";
        return -1;
    }
}

/* -1: below min, 1: above max, 0: within (bounds are parsed with the value's parser). */
static int out_of_bounds(const struct key *k, const union value *v)
{
    union value b;
    const char *why;
    int dbl = type_is_double(k->type);
    if (k->min != NULL && parse_typed(k->type, k->min, &b, &why) == 0 &&
        (dbl ? v->d < b.d : v->u < b.u))
        return -1;
    if (k->max != NULL && parse_typed(k->type, k->max, &b, &why) == 0 &&
        (dbl ? v->d > b.d : v->u > b.u))
        return 1;
    return 0;
}

static void enum_names(const struct key_enum *e, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (; e->name != NULL && used < size; e++) {
        int n = snprintf(buf + used, size - used, "%s%s", used ? ", " : "", e->name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

#define VALUE_BAD   (-1) /* malformed: *why says how */
#define VALUE_RANGE (-2) /* well-formed but outside the key's bounds */

/* Parse `s` for a scalar key and store it in obj. Used for values and for defaults. */
static int store_text(const struct key *k, const char *s, void *obj, const char **why)
{
    void *field = FIELD(obj, k->off);
    union value v;
    uint32_t u32;
    int i;

    switch (k->type) {
    case KEY_BOOL:
        if (strcmp(s, "true") == 0)
            i = 1;
        else if (strcmp(s, "false") == 0)
            i = 0;
        else {
            *why = "expected true or false";
            return VALUE_BAD;
        }
        memcpy(field, &i, sizeof i);
        return 0;
    case KEY_ENUM:
        for (const struct key_enum *e = k->enums; e->name != NULL; e++) {
            if (strcmp(s, e->name) == 0) {
                memcpy(field, &e->value, sizeof e->value);
                return 0;
            }
        }
        *why = NULL; /* the caller lists the names */
        return VALUE_BAD;
    case KEY_U32:
    case KEY_SIZE32:
    case KEY_SIZE64:
    case KEY_DURATION:
    case KEY_NUMBER:
    case KEY_RATE:
        if (parse_typed(k->type, s, &v, why) != 0)
            return VALUE_BAD;
        if (out_of_bounds(k, &v))
            return VALUE_RANGE;
        if (k->type == KEY_U32 || k->type == KEY_SIZE32) {
            if (v.u > UINT32_MAX) /* tables keep max below this; a last line */
                return VALUE_RANGE;
            u32 = (uint32_t)v.u;
            memcpy(field, &u32, sizeof u32);
        } else if (type_is_double(k->type))
            memcpy(field, &v.d, sizeof v.d);
        else
            memcpy(field, &v.u, sizeof v.u);
        return 0;
    default:
        *why = "not a scalar type";
        return VALUE_BAD;
    }
}

static const char *type_what(const struct key *k)
{
    switch (k->type) {
    case KEY_STR:
        return "a string";
    case KEY_HOSTNAME:
        return "a host name";
    case KEY_FILE:
        return "a file name";
    case KEY_BOOL:
        return "true or false";
    case KEY_U32:
        return "a whole number";
    case KEY_NUMBER:
        return "a number";
    case KEY_DURATION:
        return "a duration like 30s";
    case KEY_SIZE32:
    case KEY_SIZE64:
        return "a size like 64k";
    case KEY_RATE:
        return "a rate like 10/s";
    case KEY_LIST:
        return "a list";
    default:
        return "a mapping";
    }
}

/* ---------------------------------------------------------------- value checks */

static int parse_port(const char *s, uint16_t *port)
{
    uint64_t v;
    const char *why;
    if (parse_whole(s, &v, &why) != 0 || v < 1 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

/* A DNS name (labels of letters, digits, '-' and '_', 1..63 long, no '-' at either end)
 * or an IPv4 address; a name made only of digits and dots must be a valid address. */
static int valid_hostname(const char *s, size_t len)
{
    size_t label = 0;
    int all_numeric = 1;
    struct in_addr a;
    char buf[256];

    if (len == 0 || len > 253)
        return 0;
    for (size_t i = 0; i <= len; i++) {
        char c = i < len ? s[i] : '.';
        if (c == '.') {
            if (label == 0 || label > 63 || s[i - 1] == '-' || s[i - label] == '-')
                return 0;
            label = 0;
            continue;
        }
        if (!(is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
              c == '_'))
            return 0;
        if (!is_digit(c))
            all_numeric = 0;
        label++;
    }
    if (!all_numeric)
        return 1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return inet_pton(AF_INET, buf, &a) == 1;
}

static int has_space_or_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

static int check_readable(struct loader *ld, const struct node *n, const char *file)
{
    char ex[64];
    struct stat st;
    FILE *f;

    if (access(file, R_OK) != 0 || (f = fopen(file, "r")) == NULL) {
        fail(ld, &n->mark, "cannot read '%s': %s", excerpt(file, ex, sizeof ex), strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        fail(ld, &n->mark, "cannot read '%s': %s", excerpt(file, ex, sizeof ex), strerror(EISDIR));
        return -1;
    }
    fclose(f);
    return 0;
}

static int load_struct(struct loader *ld, const struct table *t, const struct node *map,
                       const struct node *mark_node, void *obj);
static int apply_defaults(struct loader *ld, const struct table *t, void *obj);

static int load_scalar(struct loader *ld, const struct key *k, const struct node *n, void *obj)
{
    char ex[64], names[128], what[140];
    const char *why = NULL, *s;
    int r;

    if (k->type == KEY_ENUM) {
        enum_names(k->enums, names, sizeof names);
        snprintf(what, sizeof what, "one of %s", names);
        s = scalar_text(ld, n, what);
    } else
        s = scalar_text(ld, n, type_what(k));
    if (s == NULL)
        return -1;
    switch (k->type) {
    case KEY_STR:
    case KEY_FILE:
    case KEY_HOSTNAME:
        if (s[0] == '\0') {
            fail(ld, &n->mark, "must not be empty");
            return -1;
        }
        if (k->type == KEY_HOSTNAME && !valid_hostname(s, strlen(s))) {
            fail(ld, &n->mark, "expected a host name (no port), got '%s'",
                 excerpt(s, ex, sizeof ex));
            return -1;
        }
        if (k->type == KEY_FILE) {
            if (check_readable(ld, n, s) != 0)
                return -1;
            memcpy(FIELD(obj, k->aux_off), &n->mark, sizeof n->mark);
        }
        return set_str(ld, obj, k->off, s);
    case KEY_BOOL:
        if (!n->plain) {
            fail(ld, &n->mark, "expected true or false (without quotes), got '%s'",
                 excerpt(s, ex, sizeof ex));
            return -1;
        }
        break;
    default:
        break;
    }
    r = store_text(k, s, obj, &why);
    if (r == 0)
        return 0;
    if (r == VALUE_BAD && k->type == KEY_ENUM)
        fail(ld, &n->mark, "expected %s, got '%s'", what, excerpt(s, ex, sizeof ex));
    else if (r == VALUE_BAD)
        fail(ld, &n->mark, "%s, got '%s'", why, excerpt(s, ex, sizeof ex));
    else if (k->min != NULL && k->max != NULL)
        fail(ld, &n->mark, "must be between %s and %s, got '%s'", k->min, k->max,
             excerpt(s, ex, sizeof ex));
    else if (k->min != NULL)
        fail(ld, &n->mark, "must be at least %s, got '%s'", k->min, excerpt(s, ex, sizeof ex));
    else
        fail(ld, &n->mark, "must be at most %s, got '%s'", k->max, excerpt(s, ex, sizeof ex));
    return -1;
}

/* Check a list's or map's number of entries against the key's bounds. */
static int check_count(struct loader *ld, const struct key *k, const struct node *n, size_t count)
{
    uint64_t min = 0, max = UINT64_MAX;
    const char *why;
    if (k->min != NULL && parse_whole(k->min, &min, &why) != 0)
        min = 0;
    if (k->max != NULL && parse_whole(k->max, &max, &why) != 0)
        max = UINT64_MAX;
    if (count == 0 && min > 0) {
        fail(ld, &n->mark, "must not be empty");
        return -1;
    }
    if (count < min || count > max) {
        fail(ld, &n->mark, "expected %s to %s entries, got %zu", k->min ? k->min : "0",
             k->max ? k->max : "any number of", count);
        return -1;
    }
    return 0;
}

static int load_list(struct loader *ld, const struct key *k, const struct node *n, void *obj)
{
    const struct table *t = k->sub;
    char buf[80];
    char *arr;

    if (n->kind != NODE_SEQ) {
        fail(ld, &n->mark, "expected a list, got %s", node_describe(n, buf, sizeof buf));
        return -1;
    }
    if (check_count(ld, k, n, n->nkids) != 0)
        return -1;
    arr = calloc(n->nkids, t->size);
    if (arr == NULL) {
        fail_oom(ld);
        return -1;
    }
    /* Owned by obj (and counted) before any entry is read: see the invariants on top. */
    set_ptr(obj, k->off, arr);
    memcpy(FIELD(obj, k->aux_off), &n->nkids, sizeof n->nkids);
    for (size_t i = 0; i < n->nkids; i++) {
        size_t save = path_index(ld, i);
        void *elem = arr + i * t->size;
        if (apply_defaults(ld, t, elem) != 0 ||
            load_struct(ld, t, n->kids[i], n->kids[i], elem) != 0)
            return -1;
        path_pop(ld, save);
    }
    return 0;
}

static int valid_name(const char *s)
{
    if (s[0] == '\0')
        return 0;
    for (; *s; s++)
        if (!(is_digit(*s) || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
              *s == '.' || *s == '-'))
            return 0;
    return 1;
}

static int load_named_map(struct loader *ld, const struct key *k, const struct node *n, void *obj)
{
    const struct table *t = k->sub;
    char buf[80], ex[64];
    size_t count = n->nkids / 2;
    char *arr;

    if (n->kind != NODE_MAP) {
        fail(ld, &n->mark, "expected a mapping of names, got %s",
             node_describe(n, buf, sizeof buf));
        return -1;
    }
    if (check_count(ld, k, n, count) != 0)
        return -1;
    arr = calloc(count, t->size);
    if (arr == NULL) {
        fail_oom(ld);
        return -1;
    }
    set_ptr(obj, k->off, arr);
    memcpy(FIELD(obj, k->aux_off), &count, sizeof count);
    for (size_t i = 0; i < count; i++) {
        const struct node *key = n->kids[2 * i], *value = n->kids[2 * i + 1];
        void *elem = arr + i * t->size;
        if (!valid_name(key->text)) {
            fail(ld, &key->mark, "invalid name '%s': use letters, digits, '_', '.' and '-'",
                 excerpt(key->text, ex, sizeof ex));
            return -1;
        }
        size_t save = path_push(ld, key->text);
        for (size_t j = 0; j < i; j++) {
            const struct node *prev = n->kids[2 * j];
            if (strcmp(prev->text, key->text) == 0) {
                fail(ld, &key->mark, "duplicate key, first at %u:%u", (unsigned)prev->mark.line,
                     (unsigned)prev->mark.col);
                return -1;
            }
        }
        if (apply_defaults(ld, t, elem) != 0 || set_str(ld, elem, t->name_off, key->text) != 0 ||
            load_struct(ld, t, value, key, elem) != 0)
            return -1;
        path_pop(ld, save);
    }
    return 0;
}

static int load_value(struct loader *ld, const struct key *k, const struct node *n, void *obj)
{
    int one = 1;
    switch (k->type) {
    case KEY_SECTION:
        if (k->flags & K_PRESENCE)
            memcpy(FIELD(obj, k->aux_off), &one, sizeof one);
        return load_struct(ld, k->sub, n, n, FIELD(obj, k->off));
    case KEY_LIST:
        return load_list(ld, k, n, obj);
    case KEY_NAMED_MAP:
        return load_named_map(ld, k, n, obj);
    case KEY_CUSTOM:
        return k->parse(ld, n, obj);
    default:
        return load_scalar(ld, k, n, obj);
    }
}

static void key_names(const struct key *k, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (; k->name != NULL && used < size; k++) {
        int n = snprintf(buf + used, size - used, "%s%s", used ? ", " : "", k->name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* Read a mapping into obj with table t: unknown and duplicate keys are errors, each key
 * goes through its type, then required keys and t->finish are checked. The struct's
 * mark is mark_node's. Defaults must have been applied by the caller. */
static int load_struct(struct loader *ld, const struct table *t, const struct node *map,
                       const struct node *mark_node, void *obj)
{
    const struct node *seen[MAX_KEYS] = {0};
    char buf[256];
    size_t i, nkeys;

    for (nkeys = 0; t->keys[nkeys].name != NULL; nkeys++)
        ;
    if (nkeys > MAX_KEYS) {
        fail(ld, &map->mark, "internal error: table with more than %d keys", MAX_KEYS);
        return -1;
    }
    if (map->kind != NODE_MAP) {
        fail(ld, &map->mark, "expected a mapping, got %s", node_describe(map, buf, sizeof buf));
        return -1;
    }
    if (t->mark_off != NOFIELD)
        memcpy(FIELD(obj, t->mark_off), &mark_node->mark, sizeof mark_node->mark);

    for (i = 0; i + 1 < map->nkids; i += 2) {
        const struct node *key = map->kids[i], *value = map->kids[i + 1];
        size_t idx, save;

        for (idx = 0; idx < nkeys; idx++)
            if (strcmp(t->keys[idx].name, key->text) == 0)
                break;
        save = path_push(ld, key->text);
        if (idx == nkeys) {
            key_names(t->keys, buf, sizeof buf);
            /* "{ key:value }" is one key "key:value" to YAML: say so. */
            fail(ld, &key->mark, "unknown key (expected one of: %s)%s", buf,
                 strchr(key->text, ':') != NULL ? "; is a space missing after ':'?" : "");
            return -1;
        }
        if (seen[idx] != NULL) {
            fail(ld, &key->mark, "duplicate key, first at %u:%u", (unsigned)seen[idx]->mark.line,
                 (unsigned)seen[idx]->mark.col);
            return -1;
        }
        seen[idx] = key;
        if (load_value(ld, &t->keys[idx], value, obj) != 0)
            return -1;
        path_pop(ld, save);
    }
    for (i = 0; i < nkeys; i++) {
        if ((t->keys[i].flags & K_REQUIRED) && seen[i] == NULL) {
            fail(ld, &map->mark, "missing required key '%s'", t->keys[i].name);
            return -1;
        }
    }
    return t->finish ? t->finish(ld, map, obj) : 0;
}

/* Write every default of t (and of its sections) into obj. */
static int apply_defaults(struct loader *ld, const struct table *t, void *obj)
{
    for (const struct key *k = t->keys; k->name != NULL; k++) {
        const char *why;
        if (k->type == KEY_SECTION) {
            if (apply_defaults(ld, k->sub, FIELD(obj, k->off)) != 0)
                return -1;
            continue;
        }
        if (k->def == NULL)
            continue;
        if (k->type == KEY_STR) {
            if (set_str(ld, obj, k->off, k->def) != 0)
                return -1;
        } else if (store_text(k, k->def, obj, &why) != 0) {
            fail(ld, NULL, "internal error: bad default '%s' for %s", k->def, k->name);
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- custom keys */

/* "HOST:PORT" or "[IPV6]:PORT", HOST an IP address or "localhost". */
static int parse_hostport(struct loader *ld, const struct node *n, char **address, char **host,
                          uint16_t *port)
{
    const char *s = scalar_text(ld, n, "HOST:PORT");
    const char *h, *hend, *p;
    char ex[64], hbuf[64];
    unsigned char addr[16];
    size_t hlen;
    int ok = 0;

    if (s == NULL)
        return -1;
    if (s[0] == '[') {
        h = s + 1;
        hend = strchr(h, ']');
        if (hend == NULL || hend[1] != ':') {
            fail(ld, &n->mark, "expected [IPV6]:PORT, got '%s'", excerpt(s, ex, sizeof ex));
            return -1;
        }
        p = hend + 2;
    } else {
        h = s;
        hend = strrchr(s, ':');
        if (hend == NULL) {
            fail(ld, &n->mark, "expected HOST:PORT, got '%s'", excerpt(s, ex, sizeof ex));
            return -1;
        }
        if (memchr(s, ':', (size_t)(hend - s)) != NULL) {
            fail(ld, &n->mark, "IPv6 addresses need brackets, as in [::1]:8080, got '%s'",
                 excerpt(s, ex, sizeof ex));
            return -1;
        }
        p = hend + 1;
    }
    hlen = (size_t)(hend - h);
    if (hlen == 0) {
        fail(ld, &n->mark, "missing host (0.0.0.0 listens on every address), got '%s'",
             excerpt(s, ex, sizeof ex));
        return -1;
    }
    if (hlen < sizeof hbuf) {
        memcpy(hbuf, h, hlen);
        hbuf[hlen] = '\0';
        if (s[0] == '[')
            ok = inet_pton(AF_INET6, hbuf, addr) == 1;
        else
            ok = strcasecmp(hbuf, "localhost") == 0 || inet_pton(AF_INET, hbuf, addr) == 1;
    }
    if (!ok) {
        fail(ld, &n->mark, "host must be an IP address or localhost, got '%s'",
             excerpt(s, ex, sizeof ex));
        return -1;
    }
    if (parse_port(p, port) != 0) {
        fail(ld, &n->mark, "port must be a number from 1 to 65535, got '%s'",
             excerpt(s, ex, sizeof ex));
        return -1;
    }
    free(*address);
    free(*host);
    *address = strdup(s);
    *host = strdup(hbuf);
    if (*address == NULL || *host == NULL) {
        fail_oom(ld);
        return -1;
    }
    return 0;
}

static int parse_listen_address(struct loader *ld, const struct node *n, void *obj)
{
    struct conf_listen *l = obj;
    return parse_hostport(ld, n, &l->address, &l->host, &l->port);
}

static int parse_admin_address(struct loader *ld, const struct node *n, void *obj)
{
    struct conf_admin *a = obj;
    return parse_hostport(ld, n, &a->address, &a->host, &a->port);
}

/* http[s]://HOST[:PORT][/PATH], HOST a DNS name, an IPv4 address or [IPV6]. */
static int parse_url(struct loader *ld, const struct node *n, void *obj)
{
    struct conf_upstream *u = obj;
    const char *s = scalar_text(ld, n, "a URL");
    const char *p, *auth_end, *h, *hend, *after;
    char ex[64], hbuf[256];
    unsigned char addr[16];
    size_t hlen, plen;

    if (s == NULL)
        return -1;
    if (strncasecmp(s, "http://", 7) == 0) {
        u->https = 0;
        p = s + 7;
    } else if (strncasecmp(s, "https://", 8) == 0) {
        u->https = 1;
        p = s + 8;
    } else {
        fail(ld, &n->mark, "expected an http:// or https:// URL, got '%s'",
             excerpt(s, ex, sizeof ex));
        return -1;
    }
    if (has_space_or_control(s)) {
        fail(ld, &n->mark, "spaces and control characters are not allowed in a URL, got '%s'",
             excerpt(s, ex, sizeof ex));
        return -1;
    }
    if (strpbrk(s, "?#") != NULL) {
        fail(ld, &n->mark, "a query (?) or fragment (#) is not allowed, got '%s'",
             excerpt(s, ex, sizeof ex));
        return -1;
    }
    auth_end = p + strcspn(p, "/");
    if (memchr(p, '@', (size_t)(auth_end - p)) != NULL) {
        fail(ld, &n->mark, "user information (user@host) is not allowed, got '%s'",
             excerpt(s, ex, sizeof ex));
        return -1;
    }
    if (*p == '[') {
        h = p + 1;
        hend = memchr(h, ']', (size_t)(auth_end - h));
        if (hend == NULL) {
            fail(ld, &n->mark, "unclosed '[' in '%s'", excerpt(s, ex, sizeof ex));
            return -1;
        }
        after = hend + 1;
    } else {
        h = p;
        hend = memchr(p, ':', (size_t)(auth_end - p));
        if (hend == NULL)
            hend = auth_end;
        after = hend;
    }
    hlen = (size_t)(hend - h);
    if (hlen == 0 || hlen >= sizeof hbuf) {
        fail(ld, &n->mark, "missing or invalid host in '%s'", excerpt(s, ex, sizeof ex));
        return -1;
    }
    memcpy(hbuf, h, hlen);
    hbuf[hlen] = '\0';
    if (*p == '[' ? inet_pton(AF_INET6, hbuf, addr) != 1 : !valid_hostname(hbuf, hlen)) {
        fail(ld, &n->mark, "invalid host '%s'", excerpt(hbuf, ex, sizeof ex));
        return -1;
    }
    if (after < auth_end && *after == ':') {
        char pbuf[8];
        size_t pl = (size_t)(auth_end - after - 1);
        if (pl < sizeof pbuf) {
            memcpy(pbuf, after + 1, pl);
            pbuf[pl] = '\0';
        }
        if (pl >= sizeof pbuf || parse_port(pbuf, &u->port) != 0) {
            fail(ld, &n->mark, "port must be a number from 1 to 65535, got '%s'",
                 excerpt(s, ex, sizeof ex));
            return -1;
        }
    } else if (after != auth_end) {
        fail(ld, &n->mark, "unexpected text after the host in '%s'", excerpt(s, ex, sizeof ex));
        return -1;
    } else
        u->port = u->https ? 443 : 80;

    plen = strlen(auth_end);
    while (plen > 0 && auth_end[plen - 1] == '/')
        plen--;
    free(u->url);
    free(u->host);
    free(u->base_path);
    u->url = strdup(s);
    u->host = strdup(hbuf);
    u->base_path = strndup(auth_end, plen);
    if (u->url == NULL || u->host == NULL || u->base_path == NULL) {
        fail_oom(ld);
        return -1;
    }
    return 0;
}

static int parse_path_prefix(struct loader *ld, const struct node *n, void *obj)
{
    struct conf_route *r = obj;
    const char *s = scalar_text(ld, n, "a path like /api/");
    char ex[64];
    if (s == NULL)
        return -1;
    if (s[0] != '/') {
        fail(ld, &n->mark, "must start with '/', got '%s'", excerpt(s, ex, sizeof ex));
        return -1;
    }
    if (has_space_or_control(s)) {
        fail(ld, &n->mark, "spaces and control characters are not allowed, got '%s'",
             excerpt(s, ex, sizeof ex));
        return -1;
    }
    return set_str(ld, r, offsetof(struct conf_route, path_prefix), s);
}

/* key: client_ip | header:NAME | query:NAME */
static int parse_route_key(struct loader *ld, const struct node *n, void *obj)
{
    struct conf_route *r = obj;
    const char *s = scalar_text(ld, n, "client_ip, header:NAME or query:NAME");
    const char *name = NULL;
    char ex[64];

    if (s == NULL)
        return -1;
    if (strcmp(s, "client_ip") == 0) {
        r->key_source = CONF_KEY_CLIENT_IP;
        return 0;
    }
    if (strncmp(s, "header:", 7) == 0) {
        r->key_source = CONF_KEY_HEADER;
        name = s + 7;
    } else if (strncmp(s, "query:", 6) == 0) {
        r->key_source = CONF_KEY_QUERY;
        name = s + 6;
    }
    if (name == NULL || *name == '\0' || has_space_or_control(name) || strchr(name, ':')) {
        fail(ld, &n->mark, "expected client_ip, header:NAME or query:NAME, got '%s'",
             excerpt(s, ex, sizeof ex));
        return -1;
    }
    return set_str(ld, r, offsetof(struct conf_route, key_name), name);
}

/* priority_allowed: [1, 2, 3] -> a bit per class */
static int parse_priority_allowed(struct loader *ld, const struct node *n, void *obj)
{
    struct conf_route *r = obj;
    size_t i;

    if (n->kind != NODE_SEQ || n->nkids == 0) {
        fail(ld, &n->mark, "expected a non-empty list of classes, like [1, 2, 3]");
        return -1;
    }
    r->priority_allowed = 0;
    for (i = 0; i < n->nkids; i++) {
        const struct node *k = n->kids[i];
        if (k->kind != NODE_SCALAR || strlen(k->text) != 1 || k->text[0] < '0' ||
            k->text[0] > '3') {
            fail(ld, &k->mark, "expected a class from 0 to 3");
            return -1;
        }
        r->priority_allowed |= 1u << (k->text[0] - '0');
    }
    return 0;
}

/* ---------------------------------------------------------------- finish hooks */

/* A priority header may by default only lower a request's class, never raise it. */
static int finish_route(struct loader *ld, const struct node *map, void *obj)
{
    struct conf_route *r = obj;

    (void)ld;
    (void)map;
    if (r->priority_allowed == 0)
        r->priority_allowed = 0xfu & ~((1u << r->priority) - 1u);
    return 0;
}

static int finish_tls_client(struct loader *ld, const struct node *map, void *obj)
{
    struct conf_tls_client *t = obj;
    if (t->cert != NULL && t->key == NULL) {
        fail(ld, &t->cert_mark, "cert given without key (a client certificate needs both)");
        return -1;
    }
    if (t->key != NULL && t->cert == NULL) {
        fail(ld, &t->key_mark, "key given without cert (a client certificate needs both)");
        return -1;
    }
    return 0;
}

static int finish_upstream(struct loader *ld, const struct node *map, void *obj)
{
    struct conf_upstream *u = obj;
    const struct node *tls = map_get(map, "tls"), *url = map_get(map, "url");

    if (tls != NULL && !u->https) {
        size_t save = path_push(ld, "tls");
        fail(ld, &tls->mark, "only allowed with an https:// url");
        path_pop(ld, save);
        return -1;
    }
    if (u->https) {
        u->tls.enabled = 1;
        if (tls == NULL && url != NULL)
            u->tls.mark = url->mark;
    }
    return 0;
}

/* ---------------------------------------------------------------- the tables */

static const struct key_enum log_levels[] = {
    {"error", CONF_LOG_ERROR},
    {"warn", CONF_LOG_WARN},
    {"info", CONF_LOG_INFO},
    {"debug", CONF_LOG_DEBUG},
    {NULL, 0},
};

static const struct key_enum log_formats[] = {
    {"text", CONF_LOG_TEXT},
    {"json", CONF_LOG_JSON},
    {NULL, 0},
};

static const struct key_enum tls_versions[] = {{"1.2", 12}, {"1.3", 13}, {NULL, 0}};

#define TS struct conf_tls_server
static const struct key tls_server_keys[] = {
    {.name = "cert",
     .type = KEY_FILE,
     .off = offsetof(TS, cert),
     .aux_off = offsetof(TS, cert_mark),
     .flags = K_REQUIRED},
    {.name = "key",
     .type = KEY_FILE,
     .off = offsetof(TS, key),
     .aux_off = offsetof(TS, key_mark),
     .flags = K_REQUIRED},
    {.name = NULL},
};
static const struct table tls_server_table = {.keys = tls_server_keys,
                                              .mark_off = offsetof(TS, mark)};
#undef TS

#define L struct conf_listen
static const struct key listen_keys[] = {
    {.name = "address", .type = KEY_CUSTOM, .parse = parse_listen_address, .flags = K_REQUIRED},
    {.name = "tls",
     .type = KEY_SECTION,
     .off = offsetof(L, tls),
     .sub = &tls_server_table,
     .flags = K_PRESENCE,
     .aux_off = offsetof(L, tls.enabled)},
    {.name = NULL},
};
static const struct table listen_table = {
    .keys = listen_keys, .size = sizeof(L), .mark_off = offsetof(L, mark)};
#undef L

#define CL struct conf_client
static const struct key client_keys[] = {
    {.name = "max_connections",
     .type = KEY_U32,
     .off = offsetof(CL, max_connections),
     .min = "1",
     .max = "1000000",
     .def = "1024"},
    {.name = "max_header_size",
     .type = KEY_SIZE32,
     .off = offsetof(CL, max_header_size),
     .min = "1k",
     .max = "1m",
     .def = "8k"},
    {.name = "max_body_size",
     .type = KEY_SIZE64,
     .off = offsetof(CL, max_body_size),
     .min = "0",
     .max = "1g",
     .def = "1m"},
    {.name = "timeout",
     .type = KEY_DURATION,
     .off = offsetof(CL, timeout_ms),
     .min = "1s",
     .max = "1h",
     .def = "60s"},
    {.name = NULL},
};
static const struct table client_table = {.keys = client_keys, .mark_off = NOFIELD};
#undef CL

static const struct key admin_keys[] = {
    {.name = "address", .type = KEY_CUSTOM, .parse = parse_admin_address, .flags = K_REQUIRED},
    {.name = NULL},
};
static const struct table admin_table = {.keys = admin_keys,
                                         .mark_off = offsetof(struct conf_admin, mark)};

#define AL struct conf_access_log
static const struct key access_log_keys[] = {
    {.name = "path", .type = KEY_STR, .off = offsetof(AL, path), .def = "-"},
    {.name = "format",
     .type = KEY_ENUM,
     .off = offsetof(AL, format),
     .enums = log_formats,
     .def = "text"},
    {.name = NULL},
};
static const struct table access_log_table = {.keys = access_log_keys, .mark_off = NOFIELD};
#undef AL

#define LI struct conf_limit
/* Bounds keep every limit representable by limiter/bucket (rate <= 1e9/s, and
 * burst / rate within its ~146-year span even at the largest burst). */
static const struct key limit_keys[] = {
    {.name = "rate",
     .type = KEY_RATE,
     .off = offsetof(LI, rate_per_sec),
     .min = "1/h",
     .max = "1000000000/s",
     .flags = K_REQUIRED},
    {.name = "burst",
     .type = KEY_NUMBER,
     .off = offsetof(LI, burst_tokens),
     .min = "1",
     .max = "1000000",
     .def = "1"},
    {.name = NULL},
};
static const struct table limit_table = {
    .keys = limit_keys, .size = sizeof(LI), .mark_off = offsetof(LI, mark)};
#undef LI

#define U struct conf_upstream
/* queue: and timeouts: are sections of the upstream itself (offset 0): their keys
 * fill fields of struct conf_upstream. */
static const struct key queue_keys[] = {
    {.name = "size",
     .type = KEY_U32,
     .off = offsetof(U, queue_size),
     .min = "1",
     .max = "10000000",
     .def = "1000"},
    {.name = "max_wait",
     .type = KEY_DURATION,
     .off = offsetof(U, max_wait_ms),
     .min = "1ms",
     .max = "24h",
     .def = "30s"},
    {.name = NULL},
};
static const struct table queue_table = {.keys = queue_keys, .mark_off = NOFIELD};

static const struct key timeouts_keys[] = {
    {.name = "connect",
     .type = KEY_DURATION,
     .off = offsetof(U, connect_timeout_ms),
     .min = "1ms",
     .max = "10m",
     .def = "2s"},
    {.name = "response",
     .type = KEY_DURATION,
     .off = offsetof(U, response_timeout_ms),
     .min = "1ms",
     .max = "24h",
     .def = "30s"},
    {.name = NULL},
};
static const struct table timeouts_table = {.keys = timeouts_keys, .mark_off = NOFIELD};

/* retry: how a request the upstream refused unprocessed (429, 503 + Retry-After) is
 * given another turn; with feedback off there are no retries. */
static const struct key retry_keys[] = {
    {.name = "max_attempts",
     .type = KEY_U32,
     .off = offsetof(U, retry_max_attempts),
     .min = "1",
     .max = "100",
     .def = "3"},
    {.name = "max_wait",
     .type = KEY_DURATION,
     .off = offsetof(U, retry_max_wait_ms),
     .min = "1ms",
     .max = "1h",
     .def = "60s"},
    {.name = NULL},
};
static const struct table retry_table = {.keys = retry_keys, .mark_off = NOFIELD};

#define FA struct conf_fairness
static const struct key fairness_keys[] = {
    {.name = "key_limits",
     .type = KEY_LIST,
     .off = offsetof(FA, key_limits),
     .aux_off = offsetof(FA, nkey_limits),
     .min = "1",
     .max = "4",
     .sub = &limit_table},
    {.name = "key_queue_share",
     .type = KEY_U32,
     .off = offsetof(FA, key_queue_share),
     .min = "0",
     .max = "10000000",
     .def = "0"},
    {.name = "max_keys",
     .type = KEY_U32,
     .off = offsetof(FA, max_keys),
     .min = "1",
     .max = "1000000",
     .def = "10000"},
    {.name = "key_idle",
     .type = KEY_DURATION,
     .off = offsetof(FA, key_idle_ms),
     .min = "1s",
     .max = "24h",
     .def = "60s"},
    {.name = "priority_classes",
     .type = KEY_U32,
     .off = offsetof(FA, priority_classes),
     .min = "1",
     .max = "4",
     .def = "4"},
    {.name = "starvation_guard",
     .type = KEY_U32,
     .off = offsetof(FA, starvation_guard),
     .min = "1",
     .max = "1000000",
     .def = "10"},
    {.name = NULL},
};
static const struct table fairness_table = {.keys = fairness_keys, .mark_off = NOFIELD};
#undef FA

#define TC struct conf_tls_client
static const struct key tls_client_keys[] = {
    {.name = "verify", .type = KEY_BOOL, .off = offsetof(TC, verify), .def = "true"},
    {.name = "ca_file",
     .type = KEY_FILE,
     .off = offsetof(TC, ca_file),
     .aux_off = offsetof(TC, ca_file_mark)},
    {.name = "server_name", .type = KEY_HOSTNAME, .off = offsetof(TC, server_name)},
    {.name = "min_version",
     .type = KEY_ENUM,
     .off = offsetof(TC, min_version),
     .enums = tls_versions,
     .def = "1.2"},
    {.name = "cert",
     .type = KEY_FILE,
     .off = offsetof(TC, cert),
     .aux_off = offsetof(TC, cert_mark)},
    {.name = "key", .type = KEY_FILE, .off = offsetof(TC, key), .aux_off = offsetof(TC, key_mark)},
    {.name = NULL},
};
static const struct table tls_client_table = {
    .keys = tls_client_keys, .mark_off = offsetof(TC, mark), .finish = finish_tls_client};
#undef TC

static const struct key upstream_keys[] = {
    {.name = "url", .type = KEY_CUSTOM, .parse = parse_url, .flags = K_REQUIRED},
    {.name = "limits",
     .type = KEY_LIST,
     .off = offsetof(U, limits),
     .aux_off = offsetof(U, nlimits),
     .min = "1",
     .max = "8",
     .sub = &limit_table,
     .flags = K_REQUIRED},
    {.name = "max_in_flight",
     .type = KEY_U32,
     .off = offsetof(U, max_in_flight),
     .min = "1",
     .max = "100000",
     .def = "64"},
    {.name = "queue", .type = KEY_SECTION, .off = 0, .sub = &queue_table},
    {.name = "timeouts", .type = KEY_SECTION, .off = 0, .sub = &timeouts_table},
    {.name = "keepalive",
     .type = KEY_U32,
     .off = offsetof(U, keepalive),
     .min = "0",
     .max = "100000",
     .def = "32"},
    {.name = "preserve_host", .type = KEY_BOOL, .off = offsetof(U, preserve_host), .def = "false"},
    {.name = "max_header_size",
     .type = KEY_SIZE32,
     .off = offsetof(U, max_header_size),
     .min = "1k",
     .max = "1m",
     .def = "16k"},
    {.name = "tls", .type = KEY_SECTION, .off = offsetof(U, tls), .sub = &tls_client_table},
    {.name = "fairness", .type = KEY_SECTION, .off = offsetof(U, fairness), .sub = &fairness_table},
    {.name = "feedback", .type = KEY_BOOL, .off = offsetof(U, feedback), .def = "true"},
    {.name = "retry", .type = KEY_SECTION, .off = 0, .sub = &retry_table},
    {.name = NULL},
};
static const struct table upstream_table = {.keys = upstream_keys,
                                            .size = sizeof(U),
                                            .mark_off = offsetof(U, mark),
                                            .name_off = offsetof(U, name),
                                            .finish = finish_upstream};
#undef U

#define R struct conf_route
static const struct key route_keys[] = {
    {.name = "path_prefix", .type = KEY_CUSTOM, .parse = parse_path_prefix, .flags = K_REQUIRED},
    {.name = "host", .type = KEY_HOSTNAME, .off = offsetof(R, host)},
    {.name = "strip_prefix", .type = KEY_BOOL, .off = offsetof(R, strip_prefix), .def = "false"},
    {.name = "upstream", .type = KEY_STR, .off = offsetof(R, upstream), .flags = K_REQUIRED},
    {.name = "key", .type = KEY_CUSTOM, .parse = parse_route_key},
    {.name = "cost",
     .type = KEY_U32,
     .off = offsetof(R, cost),
     .min = "1",
     .max = "1000",
     .def = "1"},
    {.name = "cost_header", .type = KEY_STR, .off = offsetof(R, cost_header)},
    {.name = "max_cost",
     .type = KEY_U32,
     .off = offsetof(R, max_cost),
     .min = "1",
     .max = "1000",
     .def = "100"},
    {.name = "priority",
     .type = KEY_U32,
     .off = offsetof(R, priority),
     .min = "0",
     .max = "3",
     .def = "0"},
    {.name = "priority_header", .type = KEY_STR, .off = offsetof(R, priority_header)},
    {.name = "priority_allowed", .type = KEY_CUSTOM, .parse = parse_priority_allowed},
    {.name = NULL},
};
static const struct table route_table = {
    .keys = route_keys, .size = sizeof(R), .mark_off = offsetof(R, mark), .finish = finish_route};
#undef R

#define C struct conf
static const struct key conf_keys[] = {
    {.name = "listen",
     .type = KEY_LIST,
     .off = offsetof(C, listen),
     .aux_off = offsetof(C, nlisten),
     .min = "1",
     .sub = &listen_table,
     .flags = K_REQUIRED},
    {.name = "drain_timeout",
     .type = KEY_DURATION,
     .off = offsetof(C, drain_timeout_ms),
     .min = "0s",
     .max = "1h",
     .def = "30s"},
    {.name = "log_level",
     .type = KEY_ENUM,
     .off = offsetof(C, log_level),
     .enums = log_levels,
     .def = "info"},
    {.name = "client", .type = KEY_SECTION, .off = offsetof(C, client), .sub = &client_table},
    {.name = "admin",
     .type = KEY_SECTION,
     .off = offsetof(C, admin),
     .sub = &admin_table,
     .flags = K_PRESENCE,
     .aux_off = offsetof(C, admin.enabled)},
    {.name = "access_log",
     .type = KEY_SECTION,
     .off = offsetof(C, access_log),
     .sub = &access_log_table,
     .flags = K_PRESENCE,
     .aux_off = offsetof(C, access_log.enabled)},
    {.name = "upstreams",
     .type = KEY_NAMED_MAP,
     .off = offsetof(C, upstreams),
     .aux_off = offsetof(C, nupstreams),
     .min = "1",
     .sub = &upstream_table,
     .flags = K_REQUIRED},
    {.name = "routes",
     .type = KEY_LIST,
     .off = offsetof(C, routes),
     .aux_off = offsetof(C, nroutes),
     .min = "1",
     .sub = &route_table,
     .flags = K_REQUIRED},
    {.name = NULL},
};
static const struct table conf_table = {.keys = conf_keys, .mark_off = NOFIELD};
#undef C

/* ---------------------------------------------------------------- cross checks */

struct host_addr {
    int localhost; /* the name "localhost": both loopback addresses */
    int family;    /* AF_INET or AF_INET6 otherwise */
    unsigned char bytes[16];
};

static void host_addr_of(const char *host, struct host_addr *a)
{
    memset(a, 0, sizeof *a);
    if (strcasecmp(host, "localhost") == 0)
        a->localhost = 1;
    else if (inet_pton(AF_INET, host, a->bytes) == 1)
        a->family = AF_INET;
    else if (inet_pton(AF_INET6, host, a->bytes) == 1)
        a->family = AF_INET6;
}

static int host_is_wildcard(const struct host_addr *a)
{
    static const unsigned char zero[16];
    return !a->localhost && memcmp(a->bytes, zero, sizeof zero) == 0;
}

static int host_is_loopback(const struct host_addr *a)
{
    static const unsigned char v4[4] = {127, 0, 0, 1};
    static const unsigned char v6[16] = {[15] = 1};
    return a->localhost || (a->family == AF_INET && memcmp(a->bytes, v4, 4) == 0) ||
           (a->family == AF_INET6 && memcmp(a->bytes, v6, 16) == 0);
}

/* Would binding both fail, or steal each other's connections? Same port and the same
 * address, or a wildcard address (which takes the port on every address). */
static int addresses_overlap(const char *h1, uint16_t p1, const char *h2, uint16_t p2)
{
    struct host_addr a, b;
    if (p1 != p2)
        return 0;
    host_addr_of(h1, &a);
    host_addr_of(h2, &b);
    if (host_is_wildcard(&a) || host_is_wildcard(&b))
        return 1;
    if (a.localhost || b.localhost)
        return host_is_loopback(&a) && host_is_loopback(&b);
    return a.family == b.family && memcmp(a.bytes, b.bytes, sizeof a.bytes) == 0;
}

static const struct node *list_item_key(const struct node *root, const char *list, size_t i,
                                        const char *key)
{
    const struct node *l = map_get(root, list);
    if (l == NULL || l->kind != NODE_SEQ || i >= l->nkids)
        return NULL;
    return map_get(l->kids[i], key);
}

static void path_set_item(struct loader *ld, const char *list, size_t i, const char *key)
{
    path_reset(ld);
    path_push(ld, list);
    path_index(ld, i);
    path_push(ld, key);
}

static int cross_check(struct loader *ld, struct conf *c, const struct node *root)
{
    char names[128], ex[64];

    for (size_t i = 0; i < c->nlisten; i++) {
        for (size_t j = 0; j < i; j++) {
            if (!addresses_overlap(c->listen[i].host, c->listen[i].port, c->listen[j].host,
                                   c->listen[j].port))
                continue;
            const struct node *n = list_item_key(root, "listen", i, "address");
            path_set_item(ld, "listen", i, "address");
            fail(ld, n ? &n->mark : NULL, "overlaps listen[%zu] (%s at %u:%u)", j,
                 c->listen[j].address, (unsigned)c->listen[j].mark.line,
                 (unsigned)c->listen[j].mark.col);
            return -1;
        }
    }
    if (c->admin.enabled) {
        for (size_t j = 0; j < c->nlisten; j++) {
            if (!addresses_overlap(c->admin.host, c->admin.port, c->listen[j].host,
                                   c->listen[j].port))
                continue;
            const struct node *n = map_get(map_get(root, "admin"), "address");
            path_reset(ld);
            path_push(ld, "admin.address");
            fail(ld, n ? &n->mark : NULL, "overlaps listen[%zu] (%s at %u:%u)", j,
                 c->listen[j].address, (unsigned)c->listen[j].mark.line,
                 (unsigned)c->listen[j].mark.col);
            return -1;
        }
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        struct conf_route *r = &c->routes[i];
        const struct conf_upstream *u = conf_find_upstream(c, r->upstream);
        if (u == NULL) {
            size_t used = 0;
            names[0] = '\0';
            for (size_t j = 0; j < c->nupstreams && used < sizeof names; j++) {
                int n = snprintf(names + used, sizeof names - used, "%s%s", j ? ", " : "",
                                 c->upstreams[j].name);
                if (n < 0)
                    break;
                used += (size_t)n;
            }
            const struct node *n = list_item_key(root, "routes", i, "upstream");
            path_set_item(ld, "routes", i, "upstream");
            fail(ld, n ? &n->mark : NULL, "no upstream named '%s' (defined: %s)",
                 excerpt(r->upstream, ex, sizeof ex), names);
            return -1;
        }
        r->upstream_index = (size_t)(u - c->upstreams);
        for (size_t j = 0; j < i; j++) {
            const struct conf_route *o = &c->routes[j];
            int same_host = r->host == NULL || o->host == NULL ? r->host == o->host
                                                               : strcasecmp(r->host, o->host) == 0;
            if (!same_host || strcmp(r->path_prefix, o->path_prefix) != 0)
                continue;
            const struct node *n = list_item_key(root, "routes", i, "path_prefix");
            path_set_item(ld, "routes", i, "path_prefix");
            fail(ld, n ? &n->mark : NULL,
                 "same path_prefix and host as routes[%zu] at %u:%u, which would always win", j,
                 (unsigned)o->mark.line, (unsigned)o->mark.col);
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- entry points */

static struct conf *load(const char *name, const char *yaml, size_t len, char *err, size_t errlen)
{
    struct loader ld = {.file = name, .err = err, .errlen = errlen, .input = yaml, .inputlen = len};
    struct node *root = NULL;
    struct conf *c;

    if (errlen > 0)
        err[0] = '\0';
    c = calloc(1, sizeof *c);
    if (c == NULL || (c->path = strdup(name)) == NULL) {
        fail_oom(&ld);
        goto fail;
    }
    if (parse_tree(&ld, &root) != 0)
        goto fail;
    if (root == NULL) {
        fail(&ld, NULL, "empty file (expected listen, upstreams and routes)");
        goto fail;
    }
    if (apply_defaults(&ld, &conf_table, c) != 0 ||
        load_struct(&ld, &conf_table, root, root, c) != 0 || cross_check(&ld, c, root) != 0)
        goto fail;
    node_free(root);
    return c;
fail:
    node_free(root);
    conf_free(c);
    return NULL;
}

struct conf *conf_load_string(const char *name, const char *yaml, char *err, size_t errlen)
{
    return load(name, yaml, strlen(yaml), err, errlen);
}

struct conf *conf_load(const char *path, char *err, size_t errlen)
{
    struct loader ld = {.file = path, .err = err, .errlen = errlen};
    struct conf *c = NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *f;

    if (errlen > 0)
        err[0] = '\0';
    f = fopen(path, "rb");
    if (f == NULL) {
        fail(&ld, NULL, "cannot open: %s", strerror(errno));
        return NULL;
    }
    buf = malloc(MAX_FILE_SIZE + 1);
    if (buf == NULL) {
        fail_oom(&ld);
        goto out;
    }
    len = fread(buf, 1, MAX_FILE_SIZE + 1, f);
    if (ferror(f)) {
        fail(&ld, NULL, "cannot read: %s", strerror(errno));
        goto out;
    }
    if (len > MAX_FILE_SIZE) {
        fail(&ld, NULL, "larger than %u bytes; is this the right file?", MAX_FILE_SIZE);
        goto out;
    }
    c = load(path, buf, len, err, errlen);
out:
    free(buf);
    fclose(f);
    return c;
}

void conf_free(struct conf *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nlisten; i++) {
        struct conf_listen *l = &c->listen[i];
        free(l->address);
        free(l->host);
        free(l->tls.cert);
        free(l->tls.key);
    }
    free(c->listen);
    free(c->admin.address);
    free(c->admin.host);
    free(c->access_log.path);
    for (size_t i = 0; i < c->nupstreams; i++) {
        struct conf_upstream *u = &c->upstreams[i];
        free(u->name);
        free(u->url);
        free(u->host);
        free(u->base_path);
        free(u->limits);
        free(u->tls.ca_file);
        free(u->tls.server_name);
        free(u->tls.cert);
        free(u->tls.key);
        free(u->fairness.key_limits);
    }
    free(c->upstreams);
    for (size_t i = 0; i < c->nroutes; i++) {
        free(c->routes[i].path_prefix);
        free(c->routes[i].host);
        free(c->routes[i].upstream);
        free(c->routes[i].key_name);
        free(c->routes[i].cost_header);
        free(c->routes[i].priority_header);
    }
    free(c->routes);
    free(c->path);
    free(c);
}

int conf_host_is_ip(const char *host)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

const struct conf_upstream *conf_find_upstream(const struct conf *c, const char *name)
{
    for (size_t i = 0; i < c->nupstreams; i++)
        if (strcmp(c->upstreams[i].name, name) == 0)
            return &c->upstreams[i];
    return NULL;
}
