/*
 * conf/conf: load the YAML config into struct conf (see conf.h for the contract).
 *
 * How a file becomes a struct conf
 *
 *     text --conf/node--> node tree --conf/schema + the tables below--> struct conf
 *          --cross_check()--> caller
 *
 *   1. node_parse() (conf/node) reads libyaml's events into a tree of nodes, each with
 *      its start mark; YAML this config has no use for is refused there.
 *   2. schema_load() (conf/schema) walks the tree against the key tables below, the one
 *      declaration of every option: name, field, bounds, default, whether required. The
 *      custom parsers and finish hooks here handle what a table line cannot say.
 *   3. cross_check() looks at what no single key can see: listeners that overlap, routes
 *      and aggregate routes' parts naming upstreams that do not exist, two routes for the
 *      same prefix and host, limits naming a shared budget without a `shared:` section or
 *      with another rate.
 *   Every error goes through one struct diag (conf/diag): the first one wins, and reads
 *   "FILE:LINE:COL: key.path: problem".
 *
 * Invariants
 *   - Every heap object hangs off the struct conf from the moment it is allocated, and
 *     conf_free() frees by the same tables (schema_free), so a struct abandoned at any
 *     error is freed completely. A custom parser that allocates a string names its field
 *     in its table's .strings.
 *   - A struct's mark is the position of the mapping that describes it, except an
 *     upstream's, which is its name (the key under `upstreams:`), and tls_client's of an
 *     https upstream without a `tls:` section, which is the url that enabled it.
 */
#include "conf/conf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf/diag.h"
#include "conf/node.h"
#include "conf/schema.h"

#define MAX_FILE_SIZE     (4u << 20) /* a config larger than this is a mistake */
#define SHARED_NAME_MAX   64         /* a budget's or an instance's name, in characters */
#define PASSWORD_FILE_MAX 4096       /* a password file larger than this is not one */

_Static_assert(sizeof(enum conf_log_level) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum conf_log_format) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum conf_conn_limit) == sizeof(int), "enums are stored as int");
_Static_assert(sizeof(enum conf_feedback_scope) == sizeof(int), "enums are stored as int");

/* ---------------------------------------------------------------- value checks */

static int parse_port(const char *s, uint16_t *port)
{
    uint64_t v;
    const char *why;
    if (schema_parse_whole(s, &v, &why) != 0 || v < 1 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

static int has_space_or_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

/* ---------------------------------------------------------------- custom keys */

/* Splits "HOST:PORT" or "[IPV6]:PORT" at its last colon: the host (without brackets),
 * its length and the port's text. `expected` names the accepted forms in the error,
 * `port_eg` is the port of the bracket hint's example. */
static int split_hostport(struct diag *d, const struct node *n, const char *s, const char *expected,
                          const char *port_eg, const char **host, size_t *hlen, const char **port)
{
    const char *hend;
    char ex[64];

    if (s[0] == '[') {
        *host = s + 1;
        hend = strchr(*host, ']');
        if (hend == NULL || hend[1] != ':') {
            diag_fail(d, &n->mark, "expected [IPV6]:PORT, got '%s'",
                      diag_excerpt(s, ex, sizeof ex));
            return -1;
        }
        *port = hend + 2;
    } else {
        *host = s;
        hend = strrchr(s, ':');
        if (hend == NULL) {
            diag_fail(d, &n->mark, "expected %s, got '%s'", expected,
                      diag_excerpt(s, ex, sizeof ex));
            return -1;
        }
        if (memchr(s, ':', (size_t)(hend - s)) != NULL) {
            diag_fail(d, &n->mark, "IPv6 addresses need brackets, as in [::1]:%s, got '%s'",
                      port_eg, diag_excerpt(s, ex, sizeof ex));
            return -1;
        }
        *port = hend + 1;
    }
    *hlen = (size_t)(hend - *host);
    return 0;
}

/* "HOST:PORT" or "[IPV6]:PORT", HOST an IP address or "localhost". */
static int parse_hostport(struct diag *d, const struct node *n, char **address, char **host,
                          uint16_t *port)
{
    const char *s = schema_scalar(d, n, "HOST:PORT");
    const char *h, *p;
    char ex[64], hbuf[64];
    unsigned char addr[16];
    size_t hlen;
    int ok = 0;

    if (s == NULL || split_hostport(d, n, s, "HOST:PORT", "8080", &h, &hlen, &p) != 0)
        return -1;
    if (hlen == 0) {
        diag_fail(d, &n->mark, "missing host (0.0.0.0 listens on every address), got '%s'",
                  diag_excerpt(s, ex, sizeof ex));
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
        diag_fail(d, &n->mark, "host must be an IP address or localhost, got '%s'",
                  diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    if (parse_port(p, port) != 0) {
        diag_fail(d, &n->mark, "port must be a number from 1 to 65535, got '%s'",
                  diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    free(*address);
    free(*host);
    *address = strdup(s);
    *host = strdup(hbuf);
    if (*address == NULL || *host == NULL) {
        diag_oom(d);
        return -1;
    }
    return 0;
}

static int parse_listen_address(struct diag *d, const struct node *n, void *obj)
{
    struct conf_listen *l = obj;
    return parse_hostport(d, n, &l->address, &l->host, &l->port);
}

static int parse_admin_address(struct diag *d, const struct node *n, void *obj)
{
    struct conf_admin *a = obj;
    return parse_hostport(d, n, &a->address, &a->host, &a->port);
}

/* http[s]://HOST[:PORT][/PATH], HOST a DNS name, an IPv4 address or [IPV6]. */
static int parse_url(struct diag *d, const struct node *n, void *obj)
{
    struct conf_upstream *u = obj;
    const char *s = schema_scalar(d, n, "a URL");
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
        diag_fail(d, &n->mark, "expected an http:// or https:// URL, got '%s'",
                  diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    if (has_space_or_control(s)) {
        diag_fail(d, &n->mark, "spaces and control characters are not allowed in a URL, got '%s'",
                  diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    if (strpbrk(s, "?#") != NULL) {
        diag_fail(d, &n->mark, "a query (?) or fragment (#) is not allowed, got '%s'",
                  diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    auth_end = p + strcspn(p, "/");
    if (memchr(p, '@', (size_t)(auth_end - p)) != NULL) {
        diag_fail(d, &n->mark, "user information (user@host) is not allowed, got '%s'",
                  diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    if (*p == '[') {
        h = p + 1;
        hend = memchr(h, ']', (size_t)(auth_end - h));
        if (hend == NULL) {
            diag_fail(d, &n->mark, "unclosed '[' in '%s'", diag_excerpt(s, ex, sizeof ex));
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
        diag_fail(d, &n->mark, "missing or invalid host in '%s'", diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    memcpy(hbuf, h, hlen);
    hbuf[hlen] = '\0';
    if (*p == '[' ? inet_pton(AF_INET6, hbuf, addr) != 1 : !schema_valid_hostname(hbuf, hlen)) {
        diag_fail(d, &n->mark, "invalid host '%s'", diag_excerpt(hbuf, ex, sizeof ex));
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
            diag_fail(d, &n->mark, "port must be a number from 1 to 65535, got '%s'",
                      diag_excerpt(s, ex, sizeof ex));
            return -1;
        }
    } else if (after != auth_end) {
        diag_fail(d, &n->mark, "unexpected text after the host in '%s'",
                  diag_excerpt(s, ex, sizeof ex));
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
        diag_oom(d);
        return -1;
    }
    return 0;
}

static int parse_path_prefix(struct diag *d, const struct node *n, void *obj)
{
    struct conf_route *r = obj;
    const char *s = schema_scalar(d, n, "a path like /api/");
    char ex[64];
    if (s == NULL)
        return -1;
    if (s[0] != '/') {
        diag_fail(d, &n->mark, "must start with '/', got '%s'", diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    if (has_space_or_control(s)) {
        diag_fail(d, &n->mark, "spaces and control characters are not allowed, got '%s'",
                  diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    return schema_set_str(d, r, offsetof(struct conf_route, path_prefix), s);
}

/* key: client_ip | header:NAME | query:NAME */
static int parse_route_key(struct diag *d, const struct node *n, void *obj)
{
    struct conf_route *r = obj;
    const char *s = schema_scalar(d, n, "client_ip, header:NAME or query:NAME");
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
        diag_fail(d, &n->mark, "expected client_ip, header:NAME or query:NAME, got '%s'",
                  diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    return schema_set_str(d, r, offsetof(struct conf_route, key_name), name);
}

/* priority_allowed: [1, 2, 3] -> a bit per class */
static int parse_priority_allowed(struct diag *d, const struct node *n, void *obj)
{
    struct conf_route *r = obj;
    size_t i;

    if (n->kind != NODE_SEQ || n->nkids == 0) {
        diag_fail(d, &n->mark, "expected a non-empty list of classes, like [1, 2, 3]");
        return -1;
    }
    r->priority_allowed = 0;
    for (i = 0; i < n->nkids; i++) {
        const struct node *k = n->kids[i];
        if (k->kind != NODE_SCALAR || strlen(k->text) != 1 || k->text[0] < '0' ||
            k->text[0] > '3') {
            diag_fail(d, &k->mark, "expected a class from 0 to 3");
            return -1;
        }
        r->priority_allowed |= 1u << (k->text[0] - '0');
    }
    return 0;
}

/* ---------------------------------------------------------------- aggregate routes */

#define PART_NAME_MAX 64 /* bytes of a part's name */

static const struct {
    const char *name;
    uint32_t bit;
} method_names[] = {
    {"GET", CONF_METHOD_GET},     {"HEAD", CONF_METHOD_HEAD},     {"POST", CONF_METHOD_POST},
    {"PUT", CONF_METHOD_PUT},     {"DELETE", CONF_METHOD_DELETE}, {"OPTIONS", CONF_METHOD_OPTIONS},
    {"PATCH", CONF_METHOD_PATCH},
};
#define NMETHODS (sizeof method_names / sizeof method_names[0])

/* methods: [GET, HEAD] -> a bit per method. Only the methods sluice forwards, each once,
 * in capitals as HTTP writes them. Whether the route may have this key is finish_route's. */
static int parse_methods(struct diag *d, const struct node *n, void *obj)
{
    struct conf_route *r = obj;
    const struct node *first[NMETHODS] = {0};

    if (n->kind != NODE_SEQ || n->nkids == 0) {
        diag_fail(d, &n->mark, "expected a non-empty list of methods, like [GET, HEAD]");
        return -1;
    }
    r->methods = 0;
    for (size_t i = 0; i < n->nkids; i++) {
        const struct node *k = n->kids[i];
        size_t m;
        for (m = 0; m < NMETHODS; m++)
            if (k->kind == NODE_SCALAR && strcmp(k->text, method_names[m].name) == 0)
                break;
        if (m == NMETHODS) {
            char got[80];
            diag_fail(d, &k->mark,
                      "expected one of GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, got %s",
                      node_describe(k, got, sizeof got));
            return -1;
        }
        if (first[m] != NULL) {
            diag_fail(d, &k->mark, "duplicate method '%s', first at %u:%u", method_names[m].name,
                      (unsigned)first[m]->mark.line, (unsigned)first[m]->mark.col);
            return -1;
        }
        first[m] = k;
        r->methods |= method_names[m].bit;
    }
    return 0;
}

/* Length of the UTF-8 sequence at s (1..4), or 0 when it is not valid UTF-8 (overlong
 * forms, surrogates and code points above U+10FFFF are not). *cp gets the code point. */
static size_t utf8_next(const unsigned char *s, uint32_t *cp)
{
    uint32_t c = s[0], min;
    size_t len;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, c &= 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, c &= 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, c &= 0x07, min = 0x10000;
    } else
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) /* a NUL ends the string here, too */
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

/* A part's name becomes a JSON object key (escaped there) and a name in the
 * Sluice-Aggregate-Errors header (percent-encoded there): any UTF-8 but control
 * characters (C0, DEL, C1), which have no business in either. libyaml has already refused
 * invalid UTF-8; checked again here, since the answer depends on it. */
static const char *part_name_problem(const char *name)
{
    const unsigned char *s = (const unsigned char *)name;
    size_t len = strlen(name);

    if (len == 0 || len > PART_NAME_MAX)
        return "a part's name has 1 to 64 bytes";
    while (*s != '\0') {
        uint32_t cp;
        size_t n = utf8_next(s, &cp);
        if (n == 0)
            return "not valid UTF-8";
        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
            return "control characters are not allowed";
        s += n;
    }
    return NULL;
}

/* Length of a path separator at p as some upstream may read it: "/", "\\", or their
 * percent-encodings "%2f" and "%5c"; 0 when p is not one (as proxy/frontend reads a
 * client's path). */
static size_t path_separator_len(const char *p)
{
    if (*p == '/' || *p == '\\')
        return 1;
    if (p[0] == '%' &&
        ((p[1] == '2' && (p[2] | 0x20) == 'f') || (p[1] == '5' && (p[2] | 0x20) == 'c')))
        return 3;
    return 0;
}

/* Does the path (up to its query) hold a dot segment: "." or "..", dots also written
 * %2e, a segment also ending at ";" or "%3b"? The same rule proxy/frontend applies to a
 * client's path, which gets 400 for it: a part's path must not do what a client's may
 * not. */
static int has_dot_segment(const char *p, const char *end)
{
    while (p < end) {
        size_t sep = path_separator_len(p);
        int dots = 0, other = 0;
        if (sep == 0) {
            p++;
            continue;
        }
        p += sep;
        while (p < end && path_separator_len(p) == 0 && *p != ';' &&
               !(p[0] == '%' && p[1] == '3' && (p[2] | 0x20) == 'b')) {
            if (*p == '.') {
                dots++;
                p++;
            } else if (p[0] == '%' && p[1] == '2' && (p[2] | 0x20) == 'e') {
                dots++;
                p += 3;
            } else {
                other = 1;
                p++;
            }
        }
        if (!other && (dots == 1 || dots == 2))
            return 1;
    }
    return 0;
}

/* path: /v1/now, /quote?s=ACME. Sent as the part's target (after the upstream's base
 * path), so it must be one as written: visible ASCII, no fragment, no dot segment, no
 * encoded NUL. */
static int parse_part_path(struct diag *d, const struct node *n, void *obj)
{
    const char *s = schema_scalar(d, n, "a path like /v1/now");
    char ex[64];

    if (s == NULL)
        return -1;
    if (s[0] != '/') {
        diag_fail(d, &n->mark, "must start with '/', got '%s'", diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
            diag_fail(d, &n->mark,
                      "only visible ASCII is allowed (percent-encode the rest), got '%s'",
                      diag_excerpt(s, ex, sizeof ex));
            return -1;
        }
    }
    if (strchr(s, '#') != NULL) {
        diag_fail(d, &n->mark, "a fragment (#) is not allowed, got '%s'",
                  diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    for (const char *p = strchr(s, '%'); p != NULL; p = strchr(p + 1, '%')) {
        if (!isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2])) {
            diag_fail(d, &n->mark, "'%%' must start a percent-encoding like %%2F, got '%s'",
                      diag_excerpt(s, ex, sizeof ex));
            return -1;
        }
    }
    if (strstr(s, "%00") != NULL) {
        diag_fail(d, &n->mark, "an encoded NUL (%%00) is not allowed, got '%s'",
                  diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    if (has_dot_segment(s, s + strcspn(s, "?"))) {
        diag_fail(d, &n->mark,
                  "dot segments ('.' or '..', also percent-encoded) are not allowed, got '%s'",
                  diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    return schema_set_str(d, obj, offsetof(struct conf_part, path), s);
}

/* ---------------------------------------------------------------- shared: */

/* 1..SHARED_NAME_MAX characters, each an ASCII letter, a digit or one of `extra`: these
 * names go into Redis keys and log lines as they are. */
static int valid_shared_name(const char *s, const char *extra)
{
    size_t len = strlen(s);
    if (len == 0 || len > SHARED_NAME_MAX)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr(extra, *s) != NULL))
            return 0;
    return 1;
}

/* redis: HOST:PORT (an IP address, [IPV6] or a DNS name) or unix:/path/to/socket. Only
 * the form is checked: nothing here resolves or connects (`sluice -t` neither). */
static int parse_redis(struct diag *d, const struct node *n, void *obj)
{
    struct conf_shared *sh = obj;
    const char *s = schema_scalar(d, n, "HOST:PORT or unix:/path/to/socket");
    const char *h, *p;
    char ex[64], hbuf[256];
    unsigned char addr[16];
    size_t hlen;

    if (s == NULL)
        return -1;
    if (strncmp(s, "unix:", 5) == 0) {
        const char *path = s + 5;
        if (path[0] != '/' || has_space_or_control(path)) {
            diag_fail(d, &n->mark, "expected unix:/absolute/path/to/socket, got '%s'",
                      diag_excerpt(s, ex, sizeof ex));
            return -1;
        }
        if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            diag_fail(d, &n->mark, "a socket path has at most %zu bytes, got '%s'",
                      sizeof(((struct sockaddr_un *)0)->sun_path) - 1,
                      diag_excerpt(s, ex, sizeof ex));
            return -1;
        }
        free(sh->host);
        sh->host = NULL;
        sh->port = 0;
        if (schema_set_str(d, sh, offsetof(struct conf_shared, unix_path), path) != 0)
            return -1;
    } else {
        if (has_space_or_control(s) || strstr(s, "://") != NULL) {
            diag_fail(d, &n->mark, "expected HOST:PORT or unix:/path/to/socket, got '%s'",
                      diag_excerpt(s, ex, sizeof ex));
            return -1;
        }
        if (split_hostport(d, n, s, "HOST:PORT or unix:/path/to/socket", "6379", &h, &hlen, &p) !=
            0)
            return -1;
        if (hlen > 0 && hlen < sizeof hbuf) {
            memcpy(hbuf, h, hlen);
            hbuf[hlen] = '\0';
        }
        if (hlen == 0 || hlen >= sizeof hbuf ||
            (s[0] == '[' ? inet_pton(AF_INET6, hbuf, addr) != 1
                         : !schema_valid_hostname(hbuf, hlen))) {
            diag_fail(d, &n->mark, "host must be an IP address or a DNS name, got '%s'",
                      diag_excerpt(s, ex, sizeof ex));
            return -1;
        }
        if (parse_port(p, &sh->port) != 0) {
            diag_fail(d, &n->mark, "port must be a number from 1 to 65535, got '%s'",
                      diag_excerpt(s, ex, sizeof ex));
            return -1;
        }
        free(sh->unix_path);
        sh->unix_path = NULL;
        if (schema_set_str(d, sh, offsetof(struct conf_shared, host), hbuf) != 0)
            return -1;
    }
    sh->redis_mark = n->mark;
    return schema_set_str(d, sh, offsetof(struct conf_shared, redis), s);
}

/* password_file: read here, at each load, so that the proxy never opens it and a reload
 * reads it again. Messages name the file and why, never a byte of what it holds. */
static int parse_password_file(struct diag *d, const struct node *n, void *obj)
{
    struct conf_shared *sh = obj;
    const char *file = schema_scalar(d, n, "a file name");
    char buf[PASSWORD_FILE_MAX + 1], ex[64];
    const char *problem = NULL;
    struct stat st;
    size_t len = 0;
    int fd, rc = -1;

    if (file == NULL)
        return -1;
    if (file[0] == '\0') {
        diag_fail(d, &n->mark, "must not be empty");
        return -1;
    }
    diag_excerpt(file, ex, sizeof ex);
    /* O_NONBLOCK: a FIFO named by mistake must not hang a load (or `sluice -t`). */
    fd = open(file, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        diag_fail(d, &n->mark, "cannot read '%s': %s", ex, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        diag_fail(d, &n->mark, "cannot read '%s': %s", ex, strerror(errno));
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        diag_fail(d, &n->mark, "cannot read '%s': %s", ex, strerror(EISDIR));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        diag_fail(d, &n->mark, "cannot read '%s': not a regular file", ex);
        goto out;
    }
    while (len < sizeof buf) {
        ssize_t got = read(fd, buf + len, sizeof buf - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            diag_fail(d, &n->mark, "cannot read '%s': %s", ex, strerror(errno));
            goto out;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    if (len > PASSWORD_FILE_MAX)
        problem = "is larger than 4096 bytes";
    else {
        if (len > 0 && buf[len - 1] == '\n')
            len--;
        if (len > 0 && buf[len - 1] == '\r')
            len--;
        if (len == 0)
            problem = "is empty";
        else if (memchr(buf, '\n', len) != NULL || memchr(buf, '\r', len) != NULL)
            problem = "has more than one line";
        else if (memchr(buf, '\0', len) != NULL)
            problem = "holds a NUL byte";
    }
    if (problem != NULL) {
        diag_fail(d, &n->mark, "'%s' %s (expected the Redis password on one line)", ex, problem);
        goto out;
    }
    /* A reload replaces the whole struct; wipe an old copy all the same. */
    if (sh->password != NULL)
        explicit_bzero(sh->password, strlen(sh->password));
    free(sh->password);
    sh->password = strndup(buf, len);
    if (sh->password == NULL) {
        diag_oom(d);
        goto out;
    }
    rc = 0;
out:
    explicit_bzero(buf, sizeof buf);
    close(fd);
    return rc;
}

/* instance: this instance's name in the fleet (members of a budget, log lines). */
static int parse_instance(struct diag *d, const struct node *n, void *obj)
{
    const char *s = schema_scalar(d, n, "a name");
    char ex[64];

    if (s == NULL)
        return -1;
    if (!valid_shared_name(s, "_.:-")) {
        diag_fail(d, &n->mark, "expected 1 to 64 letters, digits, '_', '.', ':' or '-', got '%s'",
                  diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    return schema_set_str(d, obj, offsetof(struct conf_shared, instance), s);
}

/* A limit's shared: the name of the budget it takes its tokens from, fleet-wide. Whether
 * the section is there and the limits naming it agree is for cross_check(). */
static int parse_limit_shared(struct diag *d, const struct node *n, void *obj)
{
    struct conf_limit *l = obj;
    const char *s = schema_scalar(d, n, "a budget name");
    char ex[64];

    if (s == NULL)
        return -1;
    /* `shared: true` reads as a switch but would name a budget "true". */
    if (n->plain && (strcmp(s, "true") == 0 || strcmp(s, "false") == 0)) {
        diag_fail(d, &n->mark, "expected the name of a budget (as in shared: api-budget), got '%s'",
                  s);
        return -1;
    }
    if (!valid_shared_name(s, "_.-")) {
        diag_fail(d, &n->mark, "expected 1 to 64 letters, digits, '_', '.' or '-', got '%s'",
                  diag_excerpt(s, ex, sizeof ex));
        return -1;
    }
    l->shared_mark = n->mark;
    return schema_set_str(d, l, offsetof(struct conf_limit, shared), s);
}

/* ---------------------------------------------------------------- finish hooks */

/* A route is a route to an upstream or an aggregate route, never both. A priority header
 * may by default only lower a request's class, never raise it. */
static int finish_route(struct diag *d, const struct node *map, void *obj)
{
    struct conf_route *r = obj;
    const struct node *up = node_get(map, "upstream"), *agg = node_get(map, "aggregate");
    const struct node *strip = node_get(map, "strip_prefix"), *methods = node_get(map, "methods");

    if (agg == NULL && up == NULL) {
        /* schema's own message for a required key: `upstream` was required before
         * aggregate routes, and stays what a plain route is told. */
        diag_fail(d, &map->mark, "missing required key 'upstream'");
        return -1;
    }
    if (agg != NULL && up != NULL) {
        diag_push(d, "aggregate");
        diag_fail(d, &agg->mark,
                  "not allowed with upstream: (at %u:%u): a route has either upstream: or "
                  "aggregate:",
                  (unsigned)up->mark.line, (unsigned)up->mark.col);
        return -1;
    }
    if (agg != NULL && strip != NULL) {
        diag_push(d, "strip_prefix");
        diag_fail(d, &strip->mark,
                  "not allowed on an aggregate route (each part has its own path)");
        return -1;
    }
    if (agg == NULL && methods != NULL) {
        diag_push(d, "methods");
        diag_fail(d, &methods->mark,
                  "only allowed on an aggregate route (a route with upstream: forwards every "
                  "method sluice accepts)");
        return -1;
    }
    if (agg != NULL)
        r->upstream_index = SIZE_MAX;
    /* Never a method with a body by default: an aggregate would send it to every part. */
    if (methods == NULL)
        r->methods = CONF_METHOD_GET | CONF_METHOD_HEAD;
    if (r->priority_allowed == 0)
        r->priority_allowed = 0xfu & ~((1u << r->priority) - 1u);
    return 0;
}

/* Per-key limits stay local to each instance: a key's budget is not shared. */
static int finish_fairness(struct diag *d, const struct node *map, void *obj)
{
    struct conf_fairness *f = obj;

    (void)map;
    for (size_t i = 0; i < f->nkey_limits; i++) {
        if (f->key_limits[i].shared == NULL)
            continue;
        diag_push(d, "key_limits");
        diag_index(d, i);
        diag_push(d, "shared");
        diag_fail(d, &f->key_limits[i].shared_mark,
                  "not allowed in key_limits: per-key limits stay local to each instance (a "
                  "shared budget goes in the upstream's limits)");
        return -1;
    }
    return 0;
}

static int finish_tls_client(struct diag *d, const struct node *map, void *obj)
{
    struct conf_tls_client *t = obj;
    if (t->cert != NULL && t->key == NULL) {
        diag_fail(d, &t->cert_mark, "cert given without key (a client certificate needs both)");
        return -1;
    }
    if (t->key != NULL && t->cert == NULL) {
        diag_fail(d, &t->key_mark, "key given without cert (a client certificate needs both)");
        return -1;
    }
    return 0;
}

static int finish_upstream(struct diag *d, const struct node *map, void *obj)
{
    struct conf_upstream *u = obj;
    const struct node *tls = node_get(map, "tls"), *url = node_get(map, "url");

    if (tls != NULL && !u->https) {
        size_t save = diag_push(d, "tls");
        diag_fail(d, &tls->mark, "only allowed with an https:// url");
        diag_pop(d, save);
        return -1;
    }
    if (u->https) {
        u->tls.enabled = 1;
        if (tls == NULL && url != NULL)
            u->tls.mark = url->mark;
    }
    /* A pool smaller than the requests in flight would close and reopen connections all
     * the time under ordinary load; an explicit value (0 too) wins. */
    if (node_get(map, "keepalive") == NULL)
        u->keepalive = u->max_in_flight;
    return 0;
}

/* ---------------------------------------------------------------- the tables */

/*
 * One line per key: the key, the field it fills, its bounds and its default, as written
 * in proxy.yaml.sample. Defaults are text and go through the value's own parser and
 * bounds; REQUIRED keys have none, NO_DEFAULT ones are zero / NULL when absent.
 */

static const struct schema_enum log_levels[] = {
    {"error", CONF_LOG_ERROR},
    {"warn", CONF_LOG_WARN},
    {"info", CONF_LOG_INFO},
    {"debug", CONF_LOG_DEBUG},
    {NULL, 0},
};
static const struct schema_enum log_formats[] = {
    {"text", CONF_LOG_TEXT},
    {"json", CONF_LOG_JSON},
    {NULL, 0},
};
static const struct schema_enum tls_versions[] = {{"1.2", 12}, {"1.3", 13}, {NULL, 0}};
static const struct schema_enum conn_limits[] = {
    {"reject", CONF_CONN_REJECT},
    {"pause", CONF_CONN_PAUSE},
    {NULL, 0},
};
static const struct schema_enum feedback_scopes[] = {
    {"upstream", CONF_FEEDBACK_UPSTREAM},
    {"key", CONF_FEEDBACK_KEY},
    {NULL, 0},
};

/* clang-format off */

#define TS struct conf_tls_server
static const struct schema_key tls_server_keys[] = {
    KEY_FILE    ("cert",               TS, cert, cert_mark,                             REQUIRED),
    KEY_FILE    ("key",                TS, key, key_mark,                               REQUIRED),
    KEY_END
};
static const struct schema_table tls_server_table = {
    .keys = tls_server_keys, .mark_off = offsetof(TS, mark)};
#undef TS

#define L struct conf_listen
static const struct schema_key listen_keys[] = {
    KEY_CUSTOM  ("address",            parse_listen_address,                            REQUIRED),
    KEY_OPTIONAL("tls",                L, tls, &tls_server_table, tls.enabled),
    KEY_END
};
static const struct schema_table listen_table = {
    .keys = listen_keys, .size = sizeof(L), .mark_off = offsetof(L, mark),
    .strings = (const size_t[]){offsetof(L, address), offsetof(L, host), SCHEMA_NOFIELD}};
#undef L

#define CL struct conf_client
static const struct schema_key client_keys[] = {
    KEY_U32     ("max_connections",    CL, max_connections,      "1",    "1000000",     "1024"),
    KEY_ENUM    ("on_max_connections", CL, on_max_connections, conn_limits,             "reject"),
    KEY_SIZE32  ("max_header_size",    CL, max_header_size,      "1k",   "1m",          "8k"),
    KEY_SIZE64  ("max_body_size",      CL, max_body_size,        "0",    "1g",          "1m"),
    KEY_DURATION("timeout",            CL, timeout_ms,           "1s",   "1h",          "60s"),
    KEY_DURATION("header_timeout",     CL, header_timeout_ms,    "100ms", "1h",         "10s"),
    KEY_END
};
static const struct schema_table client_table = {.keys = client_keys, .mark_off = SCHEMA_NOFIELD};
#undef CL

#define AD struct conf_admin
static const struct schema_key admin_keys[] = {
    KEY_CUSTOM  ("address",            parse_admin_address,                             REQUIRED),
    KEY_END
};
static const struct schema_table admin_table = {
    .keys = admin_keys, .mark_off = offsetof(AD, mark),
    .strings = (const size_t[]){offsetof(AD, address), offsetof(AD, host), SCHEMA_NOFIELD}};
#undef AD

#define AL struct conf_access_log
static const struct schema_key access_log_keys[] = {
    KEY_STR     ("path",               AL, path,                                        "-"),
    KEY_ENUM    ("format",             AL, format, log_formats,                         "text"),
    KEY_END
};
static const struct schema_table access_log_table = {
    .keys = access_log_keys, .mark_off = SCHEMA_NOFIELD};
#undef AL

/* The Redis that instances share budgets through; see struct conf_shared. */
#define SH struct conf_shared
static const struct schema_key shared_keys[] = {
    KEY_CUSTOM  ("redis",              parse_redis,                                     REQUIRED),
    KEY_CUSTOM  ("password_file",      parse_password_file,                             NO_DEFAULT),
    KEY_U32     ("db",                 SH, db,                   "0",    "10000",       "0"),
    KEY_DURATION("timeout",            SH, timeout_ms,           "1ms",  "10s",         "50ms"),
    KEY_DURATION("horizon",            SH, horizon_ms,           "10ms", "60s",         "500ms"),
    KEY_CUSTOM  ("instance",           parse_instance,                                  NO_DEFAULT),
    KEY_END
};
static const struct schema_table shared_table = {
    .keys = shared_keys, .mark_off = offsetof(SH, mark),
    .strings = (const size_t[]){offsetof(SH, redis), offsetof(SH, host), offsetof(SH, unix_path),
                                offsetof(SH, password), offsetof(SH, instance), SCHEMA_NOFIELD}};
#undef SH

/* Bounds keep every limit representable by limiter/bucket (rate <= 1e9/s, and burst / rate
 * within its ~146-year span even at the largest burst). */
#define LI struct conf_limit
static const struct schema_key limit_keys[] = {
    KEY_RATE    ("rate",               LI, rate_per_sec,         "1/h",  "1000000000/s", REQUIRED),
    KEY_NUMBER  ("burst",              LI, burst_tokens,         "1",    "1000000",     "1"),
    /* not in fairness.key_limits (finish_fairness); checked across limits by cross_check */
    KEY_CUSTOM  ("shared",             parse_limit_shared,                              NO_DEFAULT),
    KEY_END
};
static const struct schema_table limit_table = {
    .keys = limit_keys, .size = sizeof(LI), .mark_off = offsetof(LI, mark),
    .strings = (const size_t[]){offsetof(LI, shared), SCHEMA_NOFIELD}};
#undef LI

/* queue:, timeouts: and retry: are sections of the upstream itself (KEY_INLINE): their
 * keys fill fields of struct conf_upstream. */
#define U struct conf_upstream
static const struct schema_key queue_keys[] = {
    KEY_U32     ("size",               U, queue_size,            "1",    "10000000",    "1000"),
    KEY_DURATION("max_wait",           U, max_wait_ms,           "1ms",  "24h",         "30s"),
    KEY_END
};
static const struct schema_table queue_table = {.keys = queue_keys, .mark_off = SCHEMA_NOFIELD};

static const struct schema_key timeouts_keys[] = {
    KEY_DURATION("connect",            U, connect_timeout_ms,    "1ms",  "10m",         "2s"),
    KEY_DURATION("response",           U, response_timeout_ms,   "1ms",  "24h",         "30s"),
    KEY_END
};
static const struct schema_table timeouts_table = {
    .keys = timeouts_keys, .mark_off = SCHEMA_NOFIELD};

/* How a request the upstream refused unprocessed (429, 503 + Retry-After) is given another
 * turn; with feedback off there are no retries. */
static const struct schema_key retry_keys[] = {
    KEY_U32     ("max_attempts",       U, retry_max_attempts,    "1",    "100",         "3"),
    KEY_DURATION("max_wait",           U, retry_max_wait_ms,     "1ms",  "1h",          "60s"),
    KEY_END
};
static const struct schema_table retry_table = {.keys = retry_keys, .mark_off = SCHEMA_NOFIELD};

/* feedback: true | false | { enabled, scope, max_pause } */
static const struct schema_key feedback_keys[] = {
    KEY_BOOL    ("enabled",            U, feedback,                                     "true"),
    KEY_ENUM    ("scope",              U, feedback_scope, feedback_scopes,              "upstream"),
    KEY_DURATION("max_pause",          U, feedback_max_pause_ms, "1s",   "24h",         "5m"),
    KEY_END
};
static const struct schema_table feedback_table = {
    .keys = feedback_keys, .mark_off = SCHEMA_NOFIELD};

#define FA struct conf_fairness
static const struct schema_key fairness_keys[] = {
    KEY_LIST("key_limits", FA, key_limits, nkey_limits, "1", "4", &limit_table,         NO_DEFAULT),
    KEY_U32     ("key_queue_share",    FA, key_queue_share,      "0",    "10000000",    "0"),
    KEY_U32     ("max_keys",           FA, max_keys,             "1",    "1000000",     "10000"),
    KEY_DURATION("key_idle",           FA, key_idle_ms,          "1s",   "24h",         "60s"),
    KEY_U32     ("priority_classes",   FA, priority_classes,     "1",    "4",           "4"),
    KEY_U32     ("starvation_guard",   FA, starvation_guard,     "1",    "1000000",     "10"),
    KEY_END
};
static const struct schema_table fairness_table = {
    .keys = fairness_keys, .mark_off = SCHEMA_NOFIELD, .finish = finish_fairness};
#undef FA

#define TC struct conf_tls_client
static const struct schema_key tls_client_keys[] = {
    KEY_BOOL    ("verify",             TC, verify,                                      "true"),
    KEY_FILE    ("ca_file",            TC, ca_file, ca_file_mark,                       NO_DEFAULT),
    KEY_HOSTNAME("server_name",        TC, server_name,                                 NO_DEFAULT),
    KEY_ENUM    ("min_version",        TC, min_version, tls_versions,                   "1.2"),
    KEY_FILE    ("cert",               TC, cert, cert_mark,                             NO_DEFAULT),
    KEY_FILE    ("key",                TC, key, key_mark,                               NO_DEFAULT),
    KEY_END
};
static const struct schema_table tls_client_table = {
    .keys = tls_client_keys, .mark_off = offsetof(TC, mark), .finish = finish_tls_client};
#undef TC

static const struct schema_key upstream_keys[] = {
    KEY_CUSTOM  ("url",                parse_url,                                       REQUIRED),
    KEY_LIST    ("limits",             U, limits, nlimits, "1", "8", &limit_table,      REQUIRED),
    KEY_U32     ("max_in_flight",      U, max_in_flight,         "1",    "100000",      "64"),
    KEY_INLINE  ("queue",              &queue_table),
    KEY_INLINE  ("timeouts",           &timeouts_table),
    /* keepalive defaults to max_in_flight (finish_upstream) */
    KEY_U32     ("keepalive",          U, keepalive,             "0",    "100000",      NO_DEFAULT),
    KEY_BOOL    ("preserve_host",      U, preserve_host,                                "false"),
    KEY_SIZE32  ("max_header_size",    U, max_header_size,       "1k",   "1m",          "16k"),
    KEY_SECTION ("tls",                U, tls, &tls_client_table),
    KEY_SECTION ("fairness",           U, fairness, &fairness_table),
    KEY_SWITCH  ("feedback",           U, feedback, &feedback_table),
    KEY_INLINE  ("retry",              &retry_table),
    KEY_END
};
static const struct schema_table upstream_table = {
    .keys = upstream_keys, .size = sizeof(U), .mark_off = offsetof(U, mark),
    .name_off = offsetof(U, name), .finish = finish_upstream,
    .strings = (const size_t[]){offsetof(U, url), offsetof(U, host), offsetof(U, base_path),
                                SCHEMA_NOFIELD}};
#undef U

/* An aggregate route's parts: name -> { upstream, path }, in the order written. */
#define PA struct conf_part
static const struct schema_key part_keys[] = {
    KEY_STR     ("upstream",           PA, upstream,                                    REQUIRED),
    KEY_CUSTOM  ("path",               parse_part_path,                                 REQUIRED),
    KEY_END
};
static const struct schema_table part_table = {
    .keys = part_keys, .size = sizeof(PA), .mark_off = offsetof(PA, mark),
    .name_off = offsetof(PA, name), .name_problem = part_name_problem,
    .strings = (const size_t[]){offsetof(PA, path), SCHEMA_NOFIELD}};
#undef PA

#define AG struct conf_aggregate
static const struct schema_key aggregate_keys[] = {
    KEY_DURATION("timeout",            AG, timeout_ms,           "1ms",  "10m",         "2s"),
    KEY_SIZE64  ("max_part_size",      AG, max_part_size,        "1",    "64m",         "1m"),
    KEY_NAMED_MAP("parts",   AG, parts, nparts, "1", "32", &part_table,                 REQUIRED),
    KEY_END
};
static const struct schema_table aggregate_table = {
    .keys = aggregate_keys, .size = sizeof(AG), .mark_off = offsetof(AG, mark)};
#undef AG

/* A route has exactly one of upstream and aggregate; strip_prefix is not for aggregate
 * routes, methods only for them (finish_route). */
#define R struct conf_route
static const struct schema_key route_keys[] = {
    KEY_CUSTOM  ("path_prefix",        parse_path_prefix,                               REQUIRED),
    KEY_HOSTNAME("host",               R, host,                                         NO_DEFAULT),
    KEY_BOOL    ("strip_prefix",       R, strip_prefix,                                 "false"),
    KEY_STR     ("upstream",           R, upstream,                                     NO_DEFAULT),
    KEY_BOX     ("aggregate",          R, aggregate, &aggregate_table),
    /* default GET|HEAD (finish_route) */
    KEY_CUSTOM  ("methods",            parse_methods,                                   NO_DEFAULT),
    KEY_CUSTOM  ("key",                parse_route_key,                                 NO_DEFAULT),
    KEY_U32     ("cost",               R, cost,                  "1",    "1000",        "1"),
    KEY_STR     ("cost_header",        R, cost_header,                                  NO_DEFAULT),
    KEY_U32     ("max_cost",           R, max_cost,              "1",    "1000",        "100"),
    KEY_U32     ("priority",           R, priority,              "0",    "3",           "0"),
    KEY_STR     ("priority_header",    R, priority_header,                              NO_DEFAULT),
    KEY_CUSTOM  ("priority_allowed",   parse_priority_allowed,                          NO_DEFAULT),
    KEY_END
};
static const struct schema_table route_table = {
    .keys = route_keys, .size = sizeof(R), .mark_off = offsetof(R, mark), .finish = finish_route,
    .strings = (const size_t[]){offsetof(R, path_prefix), offsetof(R, key_name), SCHEMA_NOFIELD}};
#undef R

#define C struct conf
static const struct schema_key conf_keys[] = {
    KEY_LIST    ("listen",             C, listen, nlisten, "1", NULL, &listen_table,    REQUIRED),
    KEY_DURATION("drain_timeout",      C, drain_timeout_ms,      "0s",   "1h",          "30s"),
    KEY_ENUM    ("log_level",          C, log_level, log_levels,                        "info"),
    KEY_SECTION ("client",             C, client, &client_table),
    KEY_OPTIONAL("admin",              C, admin, &admin_table, admin.enabled),
    KEY_OPTIONAL("access_log",         C, access_log, &access_log_table, access_log.enabled),
    KEY_OPTIONAL("shared",             C, shared, &shared_table, shared.enabled),
    KEY_NAMED_MAP("upstreams", C, upstreams, nupstreams, "1", NULL, &upstream_table,    REQUIRED),
    KEY_LIST    ("routes",             C, routes, nroutes, "1", NULL, &route_table,     REQUIRED),
    KEY_END
};
static const struct schema_table conf_table = {.keys = conf_keys, .mark_off = SCHEMA_NOFIELD};
#undef C

/* clang-format on */

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
    const struct node *l = node_get(root, list);
    if (l == NULL || l->kind != NODE_SEQ || i >= l->nkids)
        return NULL;
    return node_get(l->kids[i], key);
}

static void path_set_item(struct diag *d, const char *list, size_t i, const char *key)
{
    diag_reset(d);
    diag_push(d, list);
    diag_index(d, i);
    diag_push(d, key);
}

/* Rates and bursts as parsed: the same value written in another unit ("30/s", "1800/m")
 * may differ in the last bit. */
static int same_value(double a, double b)
{
    double diff = a > b ? a - b : b - a, big = a > b ? a : b;
    return diff <= big * 1e-9;
}

static void path_set_shared(struct diag *d, const struct conf_upstream *u, size_t i)
{
    diag_reset(d);
    diag_push(d, "upstreams");
    diag_push(d, u->name);
    diag_push(d, "limits");
    diag_index(d, i);
    diag_push(d, "shared");
}

/* The first limit of upstreams[0..before) naming `budget`, in file order; NULL if none. */
static const struct conf_limit *first_naming(const struct conf *c, size_t before,
                                             const char *budget, size_t *ui, size_t *li)
{
    for (*ui = 0; *ui < before; (*ui)++) {
        const struct conf_upstream *u = &c->upstreams[*ui];
        for (*li = 0; *li < u->nlimits; (*li)++)
            if (u->limits[*li].shared != NULL && strcmp(u->limits[*li].shared, budget) == 0)
                return &u->limits[*li];
    }
    return NULL;
}

/* A shared budget is one schedule in Redis: every limit naming it must describe the same
 * one, and one upstream takes from it once. Errors are at the later limit's `shared:`. */
static int check_shared_limits(struct diag *d, const struct conf *c)
{
    char ex[64];

    for (size_t ui = 0; ui < c->nupstreams; ui++) {
        const struct conf_upstream *u = &c->upstreams[ui];
        for (size_t li = 0; li < u->nlimits; li++) {
            const struct conf_limit *l = &u->limits[li], *o;
            size_t uj, lj;
            if (l->shared == NULL)
                continue;
            if (!c->shared.enabled) {
                path_set_shared(d, u, li);
                diag_fail(d, &l->shared_mark,
                          "a shared limit needs the top-level shared: "
                          "section (the Redis every instance uses)");
                return -1;
            }
            for (lj = 0; lj < li; lj++) {
                o = &u->limits[lj];
                if (o->shared == NULL || strcmp(o->shared, l->shared) != 0)
                    continue;
                path_set_shared(d, u, li);
                diag_fail(d, &l->shared_mark,
                          "budget '%s' is already taken by limits[%zu] at %u:%u (one upstream "
                          "names a budget once)",
                          diag_excerpt(l->shared, ex, sizeof ex), lj, (unsigned)o->shared_mark.line,
                          (unsigned)o->shared_mark.col);
                return -1;
            }
            o = first_naming(c, ui, l->shared, &uj, &lj);
            if (o == NULL)
                continue;
            int rate = same_value(o->rate_per_sec, l->rate_per_sec);
            int burst = same_value(o->burst_tokens, l->burst_tokens);
            if (rate && burst)
                continue;
            path_set_shared(d, u, li);
            diag_fail(d, &l->shared_mark,
                      "budget '%s' has another %s at %u:%u (upstreams.%s.limits[%zu]): every "
                      "limit naming a budget needs the same rate and burst",
                      diag_excerpt(l->shared, ex, sizeof ex),
                      !rate && !burst ? "rate and burst"
                      : !rate         ? "rate"
                                      : "burst",
                      (unsigned)o->shared_mark.line, (unsigned)o->shared_mark.col,
                      c->upstreams[uj].name, lj);
            return -1;
        }
    }
    return 0;
}

/* "a, b, c": the upstreams' names, for "no upstream named ..." (cut to size). */
static const char *upstream_names(const struct conf *c, char *names, size_t size)
{
    size_t used = 0;
    names[0] = '\0';
    for (size_t j = 0; j < c->nupstreams && used < size; j++) {
        int n = snprintf(names + used, size - used, "%s%s", j ? ", " : "", c->upstreams[j].name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return names;
}

/* Resolve every part's upstream; an error is at the part's `upstream:` value. */
static int check_parts(struct diag *d, struct conf *c, size_t ri, const struct node *root)
{
    const struct conf_aggregate *a = c->routes[ri].aggregate;
    const struct node *parts = node_get(list_item_key(root, "routes", ri, "aggregate"), "parts");
    char names[128], ex[64];

    for (size_t i = 0; i < a->nparts; i++) {
        struct conf_part *p = &a->parts[i];
        const struct conf_upstream *u = conf_find_upstream(c, p->upstream);
        if (u != NULL) {
            p->upstream_index = (size_t)(u - c->upstreams);
            continue;
        }
        /* The map's entries are in the file's order, as parts are. */
        const struct node *n = parts != NULL && parts->kind == NODE_MAP && 2 * i + 1 < parts->nkids
                                   ? node_get(parts->kids[2 * i + 1], "upstream")
                                   : NULL;
        path_set_item(d, "routes", ri, "aggregate");
        diag_push(d, "parts");
        diag_push(d, p->name);
        diag_push(d, "upstream");
        diag_fail(d, n ? &n->mark : NULL, "no upstream named '%s' (defined: %s)",
                  diag_excerpt(p->upstream, ex, sizeof ex), upstream_names(c, names, sizeof names));
        return -1;
    }
    return 0;
}

static int cross_check(struct diag *d, struct conf *c, const struct node *root)
{
    char names[128], ex[64];

    for (size_t i = 0; i < c->nlisten; i++) {
        for (size_t j = 0; j < i; j++) {
            if (!addresses_overlap(c->listen[i].host, c->listen[i].port, c->listen[j].host,
                                   c->listen[j].port))
                continue;
            const struct node *n = list_item_key(root, "listen", i, "address");
            path_set_item(d, "listen", i, "address");
            diag_fail(d, n ? &n->mark : NULL, "overlaps listen[%zu] (%s at %u:%u)", j,
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
            const struct node *n = node_get(node_get(root, "admin"), "address");
            diag_reset(d);
            diag_push(d, "admin.address");
            diag_fail(d, n ? &n->mark : NULL, "overlaps listen[%zu] (%s at %u:%u)", j,
                      c->listen[j].address, (unsigned)c->listen[j].mark.line,
                      (unsigned)c->listen[j].mark.col);
            return -1;
        }
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        struct conf_route *r = &c->routes[i];
        if (r->aggregate != NULL) {
            if (check_parts(d, c, i, root) != 0)
                return -1;
        } else {
            const struct conf_upstream *u = conf_find_upstream(c, r->upstream);
            if (u == NULL) {
                const struct node *n = list_item_key(root, "routes", i, "upstream");
                path_set_item(d, "routes", i, "upstream");
                diag_fail(d, n ? &n->mark : NULL, "no upstream named '%s' (defined: %s)",
                          diag_excerpt(r->upstream, ex, sizeof ex),
                          upstream_names(c, names, sizeof names));
                return -1;
            }
            r->upstream_index = (size_t)(u - c->upstreams);
        }
        for (size_t j = 0; j < i; j++) {
            const struct conf_route *o = &c->routes[j];
            int same_host = r->host == NULL || o->host == NULL ? r->host == o->host
                                                               : strcasecmp(r->host, o->host) == 0;
            if (!same_host || strcmp(r->path_prefix, o->path_prefix) != 0)
                continue;
            const struct node *n = list_item_key(root, "routes", i, "path_prefix");
            path_set_item(d, "routes", i, "path_prefix");
            diag_fail(d, n ? &n->mark : NULL,
                      "same path_prefix and host as routes[%zu] at %u:%u, which would always win",
                      j, (unsigned)o->mark.line, (unsigned)o->mark.col);
            return -1;
        }
    }
    return check_shared_limits(d, c);
}

/* ---------------------------------------------------------------- entry points */

static struct conf *load(const char *name, const char *yaml, size_t len, char *err, size_t errlen)
{
    struct diag d = {.file = name, .err = err, .errlen = errlen};
    struct node *root = NULL;
    struct conf *c;

    if (errlen > 0)
        err[0] = '\0';
    c = calloc(1, sizeof *c);
    if (c == NULL || (c->path = strdup(name)) == NULL) {
        diag_oom(&d);
        goto fail;
    }
    if (node_parse(&d, yaml, len, &root) != 0)
        goto fail;
    if (root == NULL) {
        diag_fail(&d, NULL, "empty file (expected listen, upstreams and routes)");
        goto fail;
    }
    if (schema_load(&d, &conf_table, root, c) != 0 || cross_check(&d, c, root) != 0)
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
    struct diag d = {.file = path, .err = err, .errlen = errlen};
    struct conf *c = NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *f;

    if (errlen > 0)
        err[0] = '\0';
    f = fopen(path, "rb");
    if (f == NULL) {
        diag_fail(&d, NULL, "cannot open: %s", strerror(errno));
        return NULL;
    }
    buf = malloc(MAX_FILE_SIZE + 1);
    if (buf == NULL) {
        diag_oom(&d);
        goto out;
    }
    len = fread(buf, 1, MAX_FILE_SIZE + 1, f);
    if (ferror(f)) {
        diag_fail(&d, NULL, "cannot read: %s", strerror(errno));
        goto out;
    }
    if (len > MAX_FILE_SIZE) {
        diag_fail(&d, NULL, "larger than %u bytes; is this the right file?", MAX_FILE_SIZE);
        goto out;
    }
    c = load(path, buf, len, err, errlen);
out:
    free(buf);
    fclose(f);
    return c;
}

size_t conf_warnings(const struct conf *c, char *out, size_t len)
{
    uint64_t queued = 0;
    size_t n = 0;

    if (len > 0)
        out[0] = '\0';
    for (size_t i = 0; i < c->nupstreams; i++)
        queued += c->upstreams[i].queue_size;
    /* Each queued request holds its client's connection: the cap bounds the queues. */
    if (queued > c->client.max_connections) {
        if (len > 0)
            snprintf(out, len,
                     "%s: warning: the queues hold up to %llu requests but "
                     "client.max_connections is %u: at most %u can wait at once (raise "
                     "client.max_connections or lower queue sizes)\n",
                     c->path, (unsigned long long)queued, (unsigned)c->client.max_connections,
                     (unsigned)c->client.max_connections);
        n++;
    }
    return n;
}

void conf_free(struct conf *c)
{
    if (c == NULL)
        return;
    if (c->shared.password != NULL)
        explicit_bzero(c->shared.password, strlen(c->shared.password));
    schema_free(&conf_table, c);
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
