/*
 * proxy/tls: OpenSSL contexts and handshake diagnostics. See tls.h.
 */
#include "proxy/tls.h"

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"

struct tls_ctx {
    unsigned refs; /* the creator's, plus one per connection made from it */
    SSL_CTX *ssl;
    SSL_SESSION *session; /* client: the latest session the upstream gave, to resume */
    char *server_name;    /* client: name checked and sent as SNI */
    int name_is_ip;       /* client: check the IP SAN, send no SNI */
};

/* The newest OpenSSL error as text, and the queue cleared. */
static const char *openssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();

    if (e == 0)
        snprintf(buf, len, "unknown error");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

static void fail_at(char *err, size_t errlen, const char *path, const struct conf_mark *m,
                    const char *what, const char *detail)
{
    char reason[256];

    if (detail == NULL)
        detail = openssl_reason(reason, sizeof(reason));
    snprintf(err, errlen, "%s:%u:%u: %s: %s", path, m->line, m->col, what, detail);
}

/* Load a certificate chain and its key into `ctx` and check that they match. `where`
 * names the config section in messages ("upstreams.api.tls", "listen[ADDR].tls"). */
static int load_cert_key(SSL_CTX *ctx, const struct conf *c, const char *where, const char *cert,
                         const struct conf_mark *cert_mark, const char *key,
                         const struct conf_mark *key_mark, char *err, size_t errlen)
{
    char what[300];

    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(what, sizeof(what), "%s.cert: cannot load '%s'", where, cert);
        fail_at(err, errlen, c->path, cert_mark, what, NULL);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        snprintf(what, sizeof(what), "%s.key: cannot load '%s'", where, key);
        fail_at(err, errlen, c->path, key_mark, what, NULL);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(what, sizeof(what), "%s.key", where);
        fail_at(err, errlen, c->path, key_mark, what, "does not match the certificate in tls.cert");
        return -1;
    }
    return 0;
}

/* A session ticket arrived: keep it as the one to offer next (we take its reference). */
static int client_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_ctx *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));

    if (t == NULL)
        return 0;
    SSL_SESSION_free(t->session);
    t->session = sess;
    return 1;
}

/* A context with an empty SSL_CTX of `method`; NULL with err on out-of-memory. */
static struct tls_ctx *tls_ctx_new(const SSL_METHOD *method, const struct conf *c, char *err,
                                   size_t errlen)
{
    struct tls_ctx *t = calloc(1, sizeof(*t));

    ERR_clear_error();
    if (t != NULL && (t->ssl = SSL_CTX_new(method)) != NULL) {
        t->refs = 1;
        return t;
    }
    free(t);
    snprintf(err, errlen, "%s: out of memory", c->path);
    return NULL;
}

struct tls_ctx *tls_client_new(const struct conf *c, const struct conf_upstream *cu, char *err,
                               size_t errlen)
{
    const struct conf_tls_client *tc = &cu->tls;
    struct tls_ctx *t = tls_ctx_new(TLS_client_method(), c, err, errlen);
    char what[300];

    if (t == NULL)
        return NULL;
    t->server_name = strdup(tc->server_name ? tc->server_name : cu->host);
    if (t->server_name == NULL) {
        snprintf(err, errlen, "%s: out of memory", c->path);
        goto fail;
    }
    t->name_is_ip = conf_host_is_ip(t->server_name);
    SSL_CTX_set_min_proto_version(t->ssl, tc->min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    /* A new connection resumes the latest session (an abbreviated handshake) instead of a
     * full one. OpenSSL's own client cache would keep every session it is given and never
     * offer them; we keep just the newest, so memory stays flat. */
    SSL_CTX_set_app_data(t->ssl, t);
    SSL_CTX_set_session_cache_mode(t->ssl,
                                   SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(t->ssl, client_new_session_cb);
    if (tc->ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(t->ssl, tc->ca_file, NULL) != 1) {
            snprintf(what, sizeof(what), "upstreams.%s.tls.ca_file: cannot load '%s'", cu->name,
                     tc->ca_file);
            fail_at(err, errlen, c->path, &tc->ca_file_mark, what, NULL);
            goto fail;
        }
    } else if (SSL_CTX_set_default_verify_paths(t->ssl) != 1) {
        snprintf(what, sizeof(what), "upstreams.%s.tls: cannot load the system trust store",
                 cu->name);
        fail_at(err, errlen, c->path, &tc->mark, what, NULL);
        goto fail;
    }
    SSL_CTX_set_verify(t->ssl, tc->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (tc->cert != NULL) {
        snprintf(what, sizeof(what), "upstreams.%s.tls", cu->name);
        if (load_cert_key(t->ssl, c, what, tc->cert, &tc->cert_mark, tc->key, &tc->key_mark, err,
                          errlen) != 0)
            goto fail;
    }
    return t;
fail:
    tls_ctx_release(t);
    return NULL;
}

struct tls_ctx *tls_server_new(const struct conf *c, const struct conf_listen *cl, char *err,
                               size_t errlen)
{
    const struct conf_tls_server *ts = &cl->tls;
    struct tls_ctx *t = tls_ctx_new(TLS_server_method(), c, err, errlen);
    char what[300];

    if (t == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(t->ssl, TLS1_2_VERSION);
    /* OpenSSL's default TLS 1.3 suites are sane; for 1.2 keep forward-secret AEAD only. */
    SSL_CTX_set_cipher_list(t->ssl, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!SHA1");
    SSL_CTX_set_options(t->ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    snprintf(what, sizeof(what), "listen[%s].tls", cl->address);
    if (load_cert_key(t->ssl, c, what, ts->cert, &ts->cert_mark, ts->key, &ts->key_mark, err,
                      errlen) != 0)
        goto fail;
    return t;
fail:
    tls_ctx_release(t);
    return NULL;
}

struct tls_ctx *tls_ctx_hold(struct tls_ctx *t)
{
    t->refs++;
    return t;
}

void tls_ctx_release(struct tls_ctx *t)
{
    if (t == NULL || --t->refs > 0)
        return;
    SSL_SESSION_free(t->session);
    SSL_CTX_free(t->ssl);
    free(t->server_name);
    free(t);
}

int tls_check_conf(const struct conf *c, char *err, size_t errlen)
{
    struct tls_ctx *t;
    size_t i;

    for (i = 0; i < c->nupstreams; i++) {
        if (!c->upstreams[i].tls.enabled)
            continue;
        if ((t = tls_client_new(c, &c->upstreams[i], err, errlen)) == NULL)
            return -1;
        tls_ctx_release(t);
    }
    for (i = 0; i < c->nlisten; i++) {
        if (!c->listen[i].tls.enabled)
            continue;
        if ((t = tls_server_new(c, &c->listen[i], err, errlen)) == NULL)
            return -1;
        tls_ctx_release(t);
    }
    return 0;
}

/* How far the handshake got, kept in the SSL's app data. OpenSSL's own state cannot
 * tell afterwards: evhttp resets the connection (and with it the SSL's state machine)
 * before it reports the failure to us. */
static const char handshake_started = 1, handshake_done = 2;

static void handshake_info_cb(const SSL *ssl, int where, int ret)
{
    if ((where & SSL_CB_HANDSHAKE_START) && SSL_get_app_data(ssl) == NULL)
        SSL_set_app_data((SSL *)ssl, (void *)&handshake_started);
    if (where & SSL_CB_HANDSHAKE_DONE)
        SSL_set_app_data((SSL *)ssl, (void *)&handshake_done);
}

struct bufferevent *tls_client_bev(struct tls_ctx *t, struct event_base *base)
{
    SSL *ssl = SSL_new(t->ssl);
    struct bufferevent *bev;

    if (ssl == NULL)
        return NULL;
    SSL_set_info_callback(ssl, handshake_info_cb);
    /* The server decides whether the session is still good; a refusal is a full handshake. */
    if (t->session != NULL)
        SSL_set_session(ssl, t->session);
    if (t->name_is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), t->server_name);
    } else {
        SSL_set_tlsext_host_name(ssl, t->server_name);
        SSL_set1_host(ssl, t->server_name);
        /* No wildcard in the middle of a label, as browsers do. */
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    }
    bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                         BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (bev == NULL) {
        SSL_free(ssl);
        return NULL;
    }
    /* Many servers close without close_notify after a response; the HTTP framing,
     * not TLS, says whether the body was complete. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

int tls_bev_uses(const struct tls_ctx *t, struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    return ssl != NULL && SSL_get_SSL_CTX(ssl) == t->ssl;
}

struct bufferevent *tls_server_bev(struct tls_ctx *t, struct event_base *base)
{
    SSL *ssl = SSL_new(t->ssl);
    struct bufferevent *bev;

    if (ssl == NULL)
        return NULL;
    bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                         BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        SSL_free(ssl);
        return NULL;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

const char *tls_failure(struct bufferevent *bev, int before_request, char *why, size_t whylen)
{
    SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
    const void *progress;
    unsigned long e, more;
    long vr;

    if (ssl == NULL)
        return NULL;
    progress = SSL_get_app_data(ssl);
    vr = SSL_get_verify_result(ssl);
    e = bufferevent_get_openssl_error(bev);
    while ((more = bufferevent_get_openssl_error(bev)) != 0)
        ; /* drop the rest: the first error is the cause */
    if (vr != X509_V_OK) {
        snprintf(why, whylen, "certificate verification failed: %s",
                 X509_verify_cert_error_string(vr));
        return "tls_verify_failed";
    }
    /* An alert counts even when our side had finished: in TLS 1.3 the server refuses a
     * client certificate only after the client considers the handshake done. */
    if (e != 0) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof(buf));
        snprintf(why, whylen, "TLS handshake failed: %s", buf);
        return "tls_handshake_failed";
    }
    if (progress == &handshake_started) {
        snprintf(why, whylen, "TLS handshake failed: the connection closed during the handshake");
        return "tls_handshake_failed";
    }
    if (before_request && progress == &handshake_done) {
        /* Reset as the connection came up, before our request was written: a TLS 1.3
         * server refusing our certificate, whose alert the reset overtook. */
        snprintf(why, whylen,
                 "TLS handshake failed: the upstream reset the connection right "
                 "after the handshake (client certificate refused?)");
        return "tls_handshake_failed";
    }
    return NULL; /* no handshake began (TCP failed) or it had completed */
}
