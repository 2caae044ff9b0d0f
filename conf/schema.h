/*
 * conf/schema: the table-driven walker that reads a node tree (conf/node) into structs.
 *
 * A struct schema_table lists the keys of one struct, one struct schema_key each: name,
 * type, field, bounds, default, and whether it is required. The tables themselves are
 * in conf/conf.c, one line per key, written with the KEY_* macros below; this module
 * knows no key by name.
 *
 * Contract
 *   - schema_load() writes every default of the table into obj, then reads the mapping:
 *     unknown and duplicate keys are errors, each value goes through its type's parser
 *     and bounds, required keys must be there, then the table's finish hook runs. The
 *     first error goes to the struct diag with the value's (or key's) position and the
 *     key path, and -1 comes back at once.
 *   - Defaults are text, parsed like values: a default can never be outside its own
 *     bounds unnoticed (the load fails with "internal error").
 *   - Every heap object is attached to obj (a list allocated zeroed and counted before
 *     its entries are read, a box before its keys are), so schema_free() with the same
 *     table frees everything, whatever error stopped the load. schema_free() frees what obj owns,
 * not obj.
 *   - Called from conf/conf only, at start-up or reload; no state between calls.
 */
#ifndef SLUICE_CONF_SCHEMA_H
#define SLUICE_CONF_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

struct diag;
struct node;

#define SCHEMA_NOFIELD ((size_t)-1)

enum schema_type {
    SCHEMA_STR,       /* char *, non-empty */
    SCHEMA_HOSTNAME,  /* char *, a DNS name or an IPv4 address */
    SCHEMA_FILE,      /* char *, a readable file; its struct conf_mark at aux_off */
    SCHEMA_BOOL,      /* int, true|false */
    SCHEMA_U32,       /* uint32_t, plain whole number */
    SCHEMA_NUMBER,    /* double, plain decimal */
    SCHEMA_DURATION,  /* uint64_t milliseconds, "30s" */
    SCHEMA_SIZE32,    /* uint32_t bytes, "8k" */
    SCHEMA_SIZE64,    /* uint64_t bytes, "1m" */
    SCHEMA_RATE,      /* double per second, "10/s" */
    SCHEMA_ENUM,      /* int, one of `enums` */
    SCHEMA_CUSTOM,    /* `parse` does it all */
    SCHEMA_SECTION,   /* a mapping read into the struct at `off` with `sub` */
    SCHEMA_SWITCH,    /* a SECTION that may also be a bare true|false: that sets the int at
                       * aux_off (which the section's own keys fill too, e.g. `enabled`) */
    SCHEMA_LIST,      /* a list of `sub` structs: pointer at off, size_t count at aux_off */
    SCHEMA_NAMED_MAP, /* a mapping name -> `sub` struct: pointer at off, count at aux_off */
    SCHEMA_BOX,       /* an optional mapping read into a `sub` struct allocated for it:
                       * pointer at off, NULL when the key is absent */
};

#define SCHEMA_REQUIRED 1u /* a missing key is an error */
#define SCHEMA_PRESENCE 2u /* SECTION: the int at aux_off is set to 1 when it is there */

struct schema_enum {
    const char *name;
    int value;
};

struct schema_table;

struct schema_key {
    const char *name;
    enum schema_type type;
    size_t off;                      /* the field, from the start of the table's struct */
    size_t aux_off;                  /* see enum schema_type */
    const char *min, *max;           /* bounds, written like values ("1ms", "24h"); lists:
                                      * entries */
    const char *def;                 /* default, written like a value; NULL: zero / NULL */
    unsigned flags;                  /* SCHEMA_REQUIRED, SCHEMA_PRESENCE */
    const struct schema_enum *enums; /* SCHEMA_ENUM, ended by a NULL name */
    const struct schema_table *sub;  /* SECTION, SWITCH, LIST, NAMED_MAP */
    int (*parse)(struct diag *d, const struct node *value, void *obj); /* SCHEMA_CUSTOM */
};

struct schema_table {
    const struct schema_key *keys; /* ended by KEY_END; at most 16 */
    size_t size;                   /* LIST / NAMED_MAP: size of one entry */
    size_t mark_off;               /* the struct's own struct conf_mark, or SCHEMA_NOFIELD */
    size_t name_off;               /* NAMED_MAP: the entry's char *name */
    const size_t *strings;         /* char * fields that CUSTOM parsers fill, ended by
                                    * SCHEMA_NOFIELD; NULL: none. Freed with the struct. */
    /* NAMED_MAP: what is wrong with an entry's name, NULL when nothing ("invalid name
     * 'x': PROBLEM"). NULL hook: letters, digits, '_', '.' and '-' only. */
    const char *(*name_problem)(const char *name);
    /* Checks across the keys of one struct, once they are all read. */
    int (*finish)(struct diag *d, const struct node *map, void *obj);
};

/*
 * One line per key, in the order the file's readers expect them (unknown-key messages
 * list them in this order):
 *
 *     KEY_U32("max_connections", CL, max_connections, "1", "1000000", "1024")
 *             key                T   field            min  max        DEF
 *
 * T is the struct the table fills (a short #define), F a field of it; MIN, MAX and a
 * default are written as in the file ("1ms", "24h", "10/s"). DEF is a default,
 * NO_DEFAULT (zero / NULL / absent) or REQUIRED (the key must be there; no default).
 * DEF is the last argument of a macro, and REQUIRED expands to two initializers.
 */
#define NO_DEFAULT NULL
#define REQUIRED   NULL, .flags = SCHEMA_REQUIRED

/* clang-format off */
#define KEY_NUM_(NAME, TYPE, T, F, MIN, MAX, ...) \
    {.name = NAME, .type = TYPE, .off = offsetof(T, F), .min = MIN, .max = MAX, \
     .def = __VA_ARGS__}
#define KEY_U32(NAME, T, F, MIN, MAX, ...) \
    KEY_NUM_(NAME, SCHEMA_U32, T, F, MIN, MAX, __VA_ARGS__)
#define KEY_NUMBER(NAME, T, F, MIN, MAX, ...) \
    KEY_NUM_(NAME, SCHEMA_NUMBER, T, F, MIN, MAX, __VA_ARGS__)
#define KEY_DURATION(NAME, T, F, MIN, MAX, ...) \
    KEY_NUM_(NAME, SCHEMA_DURATION, T, F, MIN, MAX, __VA_ARGS__)
#define KEY_SIZE32(NAME, T, F, MIN, MAX, ...) \
    KEY_NUM_(NAME, SCHEMA_SIZE32, T, F, MIN, MAX, __VA_ARGS__)
#define KEY_SIZE64(NAME, T, F, MIN, MAX, ...) \
    KEY_NUM_(NAME, SCHEMA_SIZE64, T, F, MIN, MAX, __VA_ARGS__)
#define KEY_RATE(NAME, T, F, MIN, MAX, ...) \
    KEY_NUM_(NAME, SCHEMA_RATE, T, F, MIN, MAX, __VA_ARGS__)
#define KEY_BOOL(NAME, T, F, ...) \
    {.name = NAME, .type = SCHEMA_BOOL, .off = offsetof(T, F), .def = __VA_ARGS__}
#define KEY_ENUM(NAME, T, F, ENUMS, ...) \
    {.name = NAME, .type = SCHEMA_ENUM, .off = offsetof(T, F), .enums = ENUMS, \
     .def = __VA_ARGS__}
#define KEY_STR(NAME, T, F, ...) \
    {.name = NAME, .type = SCHEMA_STR, .off = offsetof(T, F), .def = __VA_ARGS__}
#define KEY_HOSTNAME(NAME, T, F, ...) \
    {.name = NAME, .type = SCHEMA_HOSTNAME, .off = offsetof(T, F), .def = __VA_ARGS__}
/* MARK: the struct conf_mark field that keeps the value's position (for errors about what
 * the file holds, found later by proxy/tls). */
#define KEY_FILE(NAME, T, F, MARK, ...) \
    {.name = NAME, .type = SCHEMA_FILE, .off = offsetof(T, F), .aux_off = offsetof(T, MARK), \
     .def = __VA_ARGS__}
/* PARSE fills what it likes; the char * it allocates are listed in the table's .strings. */
#define KEY_CUSTOM(NAME, PARSE, ...) \
    {.name = NAME, .type = SCHEMA_CUSTOM, .parse = PARSE, .def = __VA_ARGS__}
/* A mapping read into the struct at field F; KEY_INLINE: into this same struct. */
#define KEY_SECTION(NAME, T, F, SUB) \
    {.name = NAME, .type = SCHEMA_SECTION, .off = offsetof(T, F), .sub = SUB}
#define KEY_INLINE(NAME, SUB) \
    {.name = NAME, .type = SCHEMA_SECTION, .off = 0, .sub = SUB}
/* An optional section: the int field ENABLED is 1 when it is there. */
#define KEY_OPTIONAL(NAME, T, F, SUB, ENABLED) \
    {.name = NAME, .type = SCHEMA_SECTION, .off = offsetof(T, F), .sub = SUB, \
     .flags = SCHEMA_PRESENCE, .aux_off = offsetof(T, ENABLED)}
/* A section (into this same struct) that may also be written true|false: a bare
 * true|false sets the int field ENABLED, the mapping form has its own key for it. */
#define KEY_SWITCH(NAME, T, ENABLED, SUB) \
    {.name = NAME, .type = SCHEMA_SWITCH, .off = 0, .aux_off = offsetof(T, ENABLED), .sub = SUB}
/* MIN..MAX entries (NULL: no bound) of SUB structs: the pointer at F, a size_t count at N. */
#define KEY_LIST(NAME, T, F, N, MIN, MAX, SUB, ...) \
    {.name = NAME, .type = SCHEMA_LIST, .off = offsetof(T, F), .aux_off = offsetof(T, N), \
     .min = MIN, .max = MAX, .sub = SUB, .def = __VA_ARGS__}
/* The same for a mapping of names (letters, digits, '_', '.', '-') to SUB structs. */
#define KEY_NAMED_MAP(NAME, T, F, N, MIN, MAX, SUB, ...) \
    {.name = NAME, .type = SCHEMA_NAMED_MAP, .off = offsetof(T, F), .aux_off = offsetof(T, N), \
     .min = MIN, .max = MAX, .sub = SUB, .def = __VA_ARGS__}
/* An optional mapping read into a SUB struct allocated for it, the pointer at field F
 * (NULL when absent; freed with its owner). */
#define KEY_BOX(NAME, T, F, SUB) \
    {.name = NAME, .type = SCHEMA_BOX, .off = offsetof(T, F), .sub = SUB}
#define KEY_END {.name = NULL}
/* clang-format on */

/* Write t's defaults into obj, then read the mapping `map` into it (see the contract).
 * Returns 0, or -1 after diag_fail(). */
int schema_load(struct diag *d, const struct schema_table *t, const struct node *map, void *obj)
    __attribute__((warn_unused_result));

/* Free every char *, list and map that obj holds by t (and by t's sections); not obj. */
void schema_free(const struct schema_table *t, void *obj);

/* For CUSTOM parsers and finish hooks. */

/* The text of scalar n, or NULL after diag_fail("expected WHAT, got ...") when n is not a
 * scalar with a value. */
const char *schema_scalar(struct diag *d, const struct node *n, const char *what);

/* Replace the char * at obj + off with a copy of value (the old one is freed). */
int schema_set_str(struct diag *d, void *obj, size_t off, const char *value)
    __attribute__((warn_unused_result));

/* A whole number of plain digits: 0, or -1 with *why ("too large", "must not be negative",
 * "expected a whole number"). */
int schema_parse_whole(const char *s, uint64_t *out, const char **why);

/* A DNS name (labels of letters, digits, '-' and '_', 1..63 long, no '-' at either end)
 * or an IPv4 address; a name of only digits and dots must be a valid address. */
int schema_valid_hostname(const char *s, size_t len);

#endif
