/*
 * proxy/classify: key, cost and priority of a request from its route. See classify.h.
 */
#include "proxy/classify.h"

#include <event2/http.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"

static size_t copy_key(const char *v, size_t n, char *buf, size_t len)
{
    if (n > len)
        n = len;
    memcpy(buf, v, n);
    return n;
}

/* The raw value of parameter `name` in a query string, without decoding: two spellings
 * of one key are two keys, which costs fairness nothing and saves a copy. */
static const char *query_param(const char *query, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *p = query;

    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, '&');
        size_t plen = end ? (size_t)(end - p) : strlen(p);
        if (plen > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
            *vlen = plen - nlen - 1;
            return p + nlen + 1;
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

size_t classify_key(const struct conf_route *rt, const char *client_ip,
                    const struct evkeyvalq *headers, const char *query, char *buf, size_t len)
{
    const char *v;
    size_t n;

    switch (rt->key_source) {
    case CONF_KEY_CLIENT_IP:
        return copy_key(client_ip, strlen(client_ip), buf, len);
    case CONF_KEY_HEADER:
        v = evhttp_find_header(headers, rt->key_name);
        return v ? copy_key(v, strlen(v), buf, len) : 0;
    case CONF_KEY_QUERY:
        v = query ? query_param(query, rt->key_name, &n) : NULL;
        return v ? copy_key(v, n, buf, len) : 0;
    case CONF_KEY_NONE:
        break;
    }
    return 0;
}

static int small_number(const char *v, unsigned long max, unsigned long *out)
{
    char *end;
    unsigned long n;

    if (v == NULL || *v < '0' || *v > '9')
        return -1;
    n = strtoul(v, &end, 10);
    if (*end != '\0')
        return -1;
    *out = n > max ? max : n;
    return 0;
}

uint32_t classify_cost(const struct conf_route *rt, const struct evkeyvalq *headers)
{
    unsigned long n;

    if (rt->cost_header == NULL ||
        small_number(evhttp_find_header(headers, rt->cost_header), rt->max_cost, &n) != 0)
        return rt->cost;
    return n < 1 ? 1 : (uint32_t)n;
}

uint8_t classify_priority(const struct conf_route *rt, const struct evkeyvalq *headers)
{
    unsigned long n;

    if (rt->priority_header != NULL &&
        small_number(evhttp_find_header(headers, rt->priority_header), 3, &n) == 0 &&
        (rt->priority_allowed & (1u << n)))
        return (uint8_t)n;
    return (uint8_t)rt->priority;
}
