/*
 * conf/schema: the table-driven walker (see schema.h for the contract).
 *
 *     mapping node --schema_table--> struct     (load_struct, per key: load_value)
 *
 *   Each key of a mapping is looked up in the table, checked for duplicates, and read by
 *   its type: scalars through store_text() (the same function that writes defaults, so a
 *   value and a default go through one parser and one bounds check), sections and list
 *   or map entries by recursion with the key path pushed. Then required keys, then the
 *   table's finish hook.
 *
 * Invariants
 *   - Only the first error is reported (conf/diag); every function returns -1 straight
 *     after it, so later checks never see a half-filled struct.
 *   - A struct's mark is the position of the mapping that describes it, except a named
 *     map entry's, which is its name (the key).
 *   - What schema_free() frees is exactly what this file (and a table's .strings) can
 *     allocate: char * of STR/HOSTNAME/FILE keys, lists and maps with their entries, the
 *     names of map entries, boxes.
 */
#include "conf/schema.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/diag.h"
#include "conf/node.h"
#include "conf/units.h"

#define MAX_KEYS 16 /* keys per table (checked in load_struct) */

#define FIELD(obj, off) ((void *)((char *)(obj) + (off)))

int schema_set_str(struct diag *d, void *obj, size_t off, const char *value)
{
    char *copy = strdup(value), *old;
    if (copy == NULL) {
        diag_oom(d);
        return -1;
    }
    memcpy(&old, FIELD(obj, off), sizeof old);
    free(old);
    memcpy(FIELD(obj, off), &copy, sizeof copy);
    return 0;
}

static void set_ptr(void *obj, size_t off, void *p) { memcpy(FIELD(obj, off), &p, sizeof p); }

const char *schema_scalar(struct diag *d, const struct node *n, const char *what)
{
    char buf[80];
    if (n->kind != NODE_SCALAR || node_is_null(n)) {
        diag_fail(d, &n->mark, "expected %s, got %s", what, node_describe(n, buf, sizeof buf));
        return NULL;
    }
    return n->text;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

int schema_parse_whole(const char *s, uint64_t *out, const char **why)
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

static int type_is_double(enum schema_type t) { return t == SCHEMA_NUMBER || t == SCHEMA_RATE; }

/* Parse `s` as a value of a number-like type. */
static int parse_typed(enum schema_type t, const char *s, union value *v, const char **why)
{
    switch (t) {
    case SCHEMA_U32:
        return schema_parse_whole(s, &v->u, why);
    case SCHEMA_NUMBER:
        return units_parse_number(s, &v->d, why);
    case SCHEMA_DURATION:
        return units_parse_duration_ms(s, &v->u, why);
    case SCHEMA_SIZE32:
    case SCHEMA_SIZE64:
        return units_parse_size(s, &v->u, why);
    case SCHEMA_RATE:
        return units_parse_rate(s, &v->d, why);
    default:
        *why = "not a number type";
        return -1;
    }
}

/* -1: below min, 1: above max, 0: within (bounds are parsed with the value's parser). */
static int out_of_bounds(const struct schema_key *k, const union value *v)
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

static void enum_names(const struct schema_enum *e, char *buf, size_t size)
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
static int store_text(const struct schema_key *k, const char *s, void *obj, const char **why)
{
    void *field = FIELD(obj, k->off);
    union value v;
    uint32_t u32;
    int i;

    switch (k->type) {
    case SCHEMA_BOOL:
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
    case SCHEMA_ENUM:
        for (const struct schema_enum *e = k->enums; e->name != NULL; e++) {
            if (strcmp(s, e->name) == 0) {
                memcpy(field, &e->value, sizeof e->value);
                return 0;
            }
        }
        *why = NULL; /* the caller lists the names */
        return VALUE_BAD;
    case SCHEMA_U32:
    case SCHEMA_SIZE32:
    case SCHEMA_SIZE64:
    case SCHEMA_DURATION:
    case SCHEMA_NUMBER:
    case SCHEMA_RATE:
        if (parse_typed(k->type, s, &v, why) != 0)
            return VALUE_BAD;
        if (out_of_bounds(k, &v))
            return VALUE_RANGE;
        if (k->type == SCHEMA_U32 || k->type == SCHEMA_SIZE32) {
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

static const char *type_what(const struct schema_key *k)
{
    switch (k->type) {
    case SCHEMA_STR:
        return "a string";
    case SCHEMA_HOSTNAME:
        return "a host name";
    case SCHEMA_FILE:
        return "a file name";
    case SCHEMA_BOOL:
        return "true or false";
    case SCHEMA_U32:
        return "a whole number";
    case SCHEMA_NUMBER:
        return "a number";
    case SCHEMA_DURATION:
        return "a duration like 30s";
    case SCHEMA_SIZE32:
    case SCHEMA_SIZE64:
        return "a size like 64k";
    case SCHEMA_RATE:
        return "a rate like 10/s";
    case SCHEMA_LIST:
        return "a list";
    default:
        return "a mapping";
    }
}

int schema_valid_hostname(const char *s, size_t len)
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

static int check_readable(struct diag *d, const struct node *n, const char *file)
{
    char ex[64];
    struct stat st;
    FILE *f;

    if (access(file, R_OK) != 0 || (f = fopen(file, "r")) == NULL) {
        diag_fail(d, &n->mark, "cannot read '%s': %s", diag_excerpt(file, ex, sizeof ex),
                  strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        diag_fail(d, &n->mark, "cannot read '%s': %s", diag_excerpt(file, ex, sizeof ex),
                  strerror(EISDIR));
        return -1;
    }
    fclose(f);
    return 0;
}

static int load_struct(struct diag *d, const struct schema_table *t, const struct node *map,
                       const struct node *mark_node, void *obj);
static int apply_defaults(struct diag *d, const struct schema_table *t, void *obj);

static int load_scalar(struct diag *d, const struct schema_key *k, const struct node *n, void *obj)
{
    char ex[64], names[128], what[140];
    const char *why = NULL, *s;
    int r;

    if (k->type == SCHEMA_ENUM) {
        enum_names(k->enums, names, sizeof names);
        snprintf(what, sizeof what, "one of %s", names);
        s = schema_scalar(d, n, what);
    } else
        s = schema_scalar(d, n, type_what(k));
    if (s == NULL)
        return -1;
    switch (k->type) {
    case SCHEMA_STR:
    case SCHEMA_FILE:
    case SCHEMA_HOSTNAME:
        if (s[0] == '\0') {
            diag_fail(d, &n->mark, "must not be empty");
            return -1;
        }
        if (k->type == SCHEMA_HOSTNAME && !schema_valid_hostname(s, strlen(s))) {
            diag_fail(d, &n->mark, "expected a host name (no port), got '%s'",
                      diag_excerpt(s, ex, sizeof ex));
            return -1;
        }
        if (k->type == SCHEMA_FILE) {
            if (check_readable(d, n, s) != 0)
                return -1;
            memcpy(FIELD(obj, k->aux_off), &n->mark, sizeof n->mark);
        }
        return schema_set_str(d, obj, k->off, s);
    case SCHEMA_BOOL:
        if (!n->plain) {
            diag_fail(d, &n->mark, "expected true or false (without quotes), got '%s'",
                      diag_excerpt(s, ex, sizeof ex));
            return -1;
        }
        break;
    default:
        break;
    }
    r = store_text(k, s, obj, &why);
    if (r == 0)
        return 0;
    if (r == VALUE_BAD && k->type == SCHEMA_ENUM)
        diag_fail(d, &n->mark, "expected %s, got '%s'", what, diag_excerpt(s, ex, sizeof ex));
    else if (r == VALUE_BAD)
        diag_fail(d, &n->mark, "%s, got '%s'", why, diag_excerpt(s, ex, sizeof ex));
    else if (k->min != NULL && k->max != NULL)
        diag_fail(d, &n->mark, "must be between %s and %s, got '%s'", k->min, k->max,
                  diag_excerpt(s, ex, sizeof ex));
    else if (k->min != NULL)
        diag_fail(d, &n->mark, "must be at least %s, got '%s'", k->min,
                  diag_excerpt(s, ex, sizeof ex));
    else
        diag_fail(d, &n->mark, "must be at most %s, got '%s'", k->max,
                  diag_excerpt(s, ex, sizeof ex));
    return -1;
}

/* Check a list's or map's number of entries against the key's bounds. */
static int check_count(struct diag *d, const struct schema_key *k, const struct node *n,
                       size_t count)
{
    uint64_t min = 0, max = UINT64_MAX;
    const char *why;
    if (k->min != NULL && schema_parse_whole(k->min, &min, &why) != 0)
        min = 0;
    if (k->max != NULL && schema_parse_whole(k->max, &max, &why) != 0)
        max = UINT64_MAX;
    if (count == 0 && min > 0) {
        diag_fail(d, &n->mark, "must not be empty");
        return -1;
    }
    if (count < min || count > max) {
        diag_fail(d, &n->mark, "expected %s to %s entries, got %zu", k->min ? k->min : "0",
                  k->max ? k->max : "any number of", count);
        return -1;
    }
    return 0;
}

static int load_list(struct diag *d, const struct schema_key *k, const struct node *n, void *obj)
{
    const struct schema_table *t = k->sub;
    char buf[80];
    char *arr;

    if (n->kind != NODE_SEQ) {
        diag_fail(d, &n->mark, "expected a list, got %s", node_describe(n, buf, sizeof buf));
        return -1;
    }
    if (check_count(d, k, n, n->nkids) != 0)
        return -1;
    arr = calloc(n->nkids, t->size);
    if (arr == NULL) {
        diag_oom(d);
        return -1;
    }
    /* Owned by obj (and counted) before any entry is read: see the contract. */
    set_ptr(obj, k->off, arr);
    memcpy(FIELD(obj, k->aux_off), &n->nkids, sizeof n->nkids);
    for (size_t i = 0; i < n->nkids; i++) {
        size_t save = diag_index(d, i);
        void *elem = arr + i * t->size;
        if (apply_defaults(d, t, elem) != 0 || load_struct(d, t, n->kids[i], n->kids[i], elem) != 0)
            return -1;
        diag_pop(d, save);
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

static int load_named_map(struct diag *d, const struct schema_key *k, const struct node *n,
                          void *obj)
{
    const struct schema_table *t = k->sub;
    const char *problem;
    char buf[80], ex[64];
    size_t count = n->nkids / 2;
    char *arr;

    if (n->kind != NODE_MAP) {
        diag_fail(d, &n->mark, "expected a mapping of names, got %s",
                  node_describe(n, buf, sizeof buf));
        return -1;
    }
    if (check_count(d, k, n, count) != 0)
        return -1;
    arr = calloc(count, t->size);
    if (arr == NULL) {
        diag_oom(d);
        return -1;
    }
    set_ptr(obj, k->off, arr);
    memcpy(FIELD(obj, k->aux_off), &count, sizeof count);
    for (size_t i = 0; i < count; i++) {
        const struct node *key = n->kids[2 * i], *value = n->kids[2 * i + 1];
        void *elem = arr + i * t->size;
        if (t->name_problem != NULL)
            problem = t->name_problem(key->text);
        else
            problem = valid_name(key->text) ? NULL : "use letters, digits, '_', '.' and '-'";
        if (problem != NULL) {
            diag_fail(d, &key->mark, "invalid name '%s': %s",
                      diag_excerpt(key->text, ex, sizeof ex), problem);
            return -1;
        }
        size_t save = diag_push(d, key->text);
        for (size_t j = 0; j < i; j++) {
            const struct node *prev = n->kids[2 * j];
            if (strcmp(prev->text, key->text) == 0) {
                diag_fail(d, &key->mark, "duplicate key, first at %u:%u", (unsigned)prev->mark.line,
                          (unsigned)prev->mark.col);
                return -1;
            }
        }
        if (apply_defaults(d, t, elem) != 0 ||
            schema_set_str(d, elem, t->name_off, key->text) != 0 ||
            load_struct(d, t, value, key, elem) != 0)
            return -1;
        diag_pop(d, save);
    }
    return 0;
}

/* A BOX: the struct is allocated and owned by obj before its keys are read (so that
 * schema_free finds it whatever error follows); a duplicate key never gets here twice. */
static int load_box(struct diag *d, const struct schema_key *k, const struct node *n, void *obj)
{
    void *box = calloc(1, k->sub->size);

    if (box == NULL) {
        diag_oom(d);
        return -1;
    }
    set_ptr(obj, k->off, box);
    if (apply_defaults(d, k->sub, box) != 0)
        return -1;
    return load_struct(d, k->sub, n, n, box);
}

/* A SWITCH: a mapping is read as its section, a plain true|false sets the int at aux_off
 * (and leaves the section's defaults). */
static int load_switch(struct diag *d, const struct schema_key *k, const struct node *n, void *obj)
{
    char buf[80];
    int on;

    if (n->kind == NODE_MAP)
        return load_struct(d, k->sub, n, n, FIELD(obj, k->off));
    if (n->kind == NODE_SCALAR && (strcmp(n->text, "true") == 0 || strcmp(n->text, "false") == 0)) {
        if (!n->plain) {
            diag_fail(d, &n->mark, "expected true or false without quotes, or a mapping, got '%s'",
                      n->text);
            return -1;
        }
        on = n->text[0] == 't';
        memcpy(FIELD(obj, k->aux_off), &on, sizeof on);
        return 0;
    }
    diag_fail(d, &n->mark, "expected true, false or a mapping, got %s",
              node_describe(n, buf, sizeof buf));
    return -1;
}

static int load_value(struct diag *d, const struct schema_key *k, const struct node *n, void *obj)
{
    int one = 1;
    switch (k->type) {
    case SCHEMA_SECTION:
        if (k->flags & SCHEMA_PRESENCE)
            memcpy(FIELD(obj, k->aux_off), &one, sizeof one);
        return load_struct(d, k->sub, n, n, FIELD(obj, k->off));
    case SCHEMA_SWITCH:
        return load_switch(d, k, n, obj);
    case SCHEMA_LIST:
        return load_list(d, k, n, obj);
    case SCHEMA_NAMED_MAP:
        return load_named_map(d, k, n, obj);
    case SCHEMA_BOX:
        return load_box(d, k, n, obj);
    case SCHEMA_CUSTOM:
        return k->parse(d, n, obj);
    default:
        return load_scalar(d, k, n, obj);
    }
}

static void key_names(const struct schema_key *k, char *buf, size_t size)
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
static int load_struct(struct diag *d, const struct schema_table *t, const struct node *map,
                       const struct node *mark_node, void *obj)
{
    const struct node *seen[MAX_KEYS] = {0};
    char buf[256];
    size_t i, nkeys;

    for (nkeys = 0; t->keys[nkeys].name != NULL; nkeys++)
        ;
    if (nkeys > MAX_KEYS) {
        diag_fail(d, &map->mark, "internal error: table with more than %d keys", MAX_KEYS);
        return -1;
    }
    if (map->kind != NODE_MAP) {
        diag_fail(d, &map->mark, "expected a mapping, got %s", node_describe(map, buf, sizeof buf));
        return -1;
    }
    if (t->mark_off != SCHEMA_NOFIELD)
        memcpy(FIELD(obj, t->mark_off), &mark_node->mark, sizeof mark_node->mark);

    for (i = 0; i + 1 < map->nkids; i += 2) {
        const struct node *key = map->kids[i], *value = map->kids[i + 1];
        size_t idx, save;

        for (idx = 0; idx < nkeys; idx++)
            if (strcmp(t->keys[idx].name, key->text) == 0)
                break;
        save = diag_push(d, key->text);
        if (idx == nkeys) {
            key_names(t->keys, buf, sizeof buf);
            /* "{ key:value }" is one key "key:value" to YAML: say so. */
            diag_fail(d, &key->mark, "unknown key (expected one of: %s)%s", buf,
                      strchr(key->text, ':') != NULL ? "; is a space missing after ':'?" : "");
            return -1;
        }
        if (seen[idx] != NULL) {
            diag_fail(d, &key->mark, "duplicate key, first at %u:%u",
                      (unsigned)seen[idx]->mark.line, (unsigned)seen[idx]->mark.col);
            return -1;
        }
        seen[idx] = key;
        if (load_value(d, &t->keys[idx], value, obj) != 0)
            return -1;
        diag_pop(d, save);
    }
    for (i = 0; i < nkeys; i++) {
        if ((t->keys[i].flags & SCHEMA_REQUIRED) && seen[i] == NULL) {
            diag_fail(d, &map->mark, "missing required key '%s'", t->keys[i].name);
            return -1;
        }
    }
    return t->finish ? t->finish(d, map, obj) : 0;
}

/* Write every default of t (and of its sections) into obj. */
static int apply_defaults(struct diag *d, const struct schema_table *t, void *obj)
{
    for (const struct schema_key *k = t->keys; k->name != NULL; k++) {
        const char *why;
        if (k->type == SCHEMA_SECTION || k->type == SCHEMA_SWITCH) {
            if (apply_defaults(d, k->sub, FIELD(obj, k->off)) != 0)
                return -1;
            continue;
        }
        if (k->def == NULL)
            continue;
        if (k->type == SCHEMA_STR) {
            if (schema_set_str(d, obj, k->off, k->def) != 0)
                return -1;
        } else if (store_text(k, k->def, obj, &why) != 0) {
            diag_fail(d, NULL, "internal error: bad default '%s' for %s", k->def, k->name);
            return -1;
        }
    }
    return 0;
}

int schema_load(struct diag *d, const struct schema_table *t, const struct node *map, void *obj)
{
    if (apply_defaults(d, t, obj) != 0)
        return -1;
    return load_struct(d, t, map, map, obj);
}

static void free_str(void *obj, size_t off)
{
    char *s;
    memcpy(&s, FIELD(obj, off), sizeof s);
    free(s);
}

void schema_free(const struct schema_table *t, void *obj)
{
    for (const struct schema_key *k = t->keys; k->name != NULL; k++) {
        char *arr;
        size_t n;

        switch (k->type) {
        case SCHEMA_STR:
        case SCHEMA_HOSTNAME:
        case SCHEMA_FILE:
            free_str(obj, k->off);
            break;
        case SCHEMA_SECTION:
        case SCHEMA_SWITCH:
            schema_free(k->sub, FIELD(obj, k->off));
            break;
        case SCHEMA_LIST:
        case SCHEMA_NAMED_MAP:
            memcpy(&arr, FIELD(obj, k->off), sizeof arr);
            memcpy(&n, FIELD(obj, k->aux_off), sizeof n);
            for (size_t i = 0; i < n; i++) {
                if (k->type == SCHEMA_NAMED_MAP)
                    free_str(arr + i * k->sub->size, k->sub->name_off);
                schema_free(k->sub, arr + i * k->sub->size);
            }
            free(arr);
            break;
        case SCHEMA_BOX:
            memcpy(&arr, FIELD(obj, k->off), sizeof arr);
            if (arr != NULL) {
                schema_free(k->sub, arr);
                free(arr);
            }
            break;
        default:
            break;
        }
    }
    for (const size_t *off = t->strings; off != NULL && *off != SCHEMA_NOFIELD; off++)
        free_str(obj, *off);
}
