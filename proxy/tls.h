/*
 * proxy/tls: OpenSSL contexts for HTTPS upstreams and TLS listeners, and the reasons a
 * handshake failed.
 *
 * Contexts are built from the config at start-up (and by `sluice -t`), so a bad
 * certificate, key or CA file is reported as FILE:LINE:COL before any request, never
 * at the first one. Defaults: TLS 1.2+, the system trust store, peer verification
 * with the host name checked (SNI sent for names, IP SANs checked for addresses).
 *
 * A `struct tls_ctx` is reference counted: its creator holds one reference, and so does
 * every connection that may still run a handshake with an SSL made from it (OpenSSL's
 * callbacks reach the context through the SSL_CTX's app data, so the context must
 * outlive every such SSL: a reload that replaces a context must not free it under a
 * handshake in progress). Each SSL is owned by the bufferevent it is given to
 * (BEV_OPT_CLOSE_ON_FREE).
 */
#ifndef SLUICE_PROXY_TLS_H
#define SLUICE_PROXY_TLS_H

#include <stddef.h>

struct conf;
struct conf_upstream;
struct conf_listen;
struct tls_ctx;
struct bufferevent;
struct event_base;

/* Client context for an https upstream. NULL with "FILE:LINE:COL: ..." in err. */
struct tls_ctx *tls_client_new(const struct conf *c, const struct conf_upstream *cu, char *err,
                               size_t errlen) __attribute__((warn_unused_result));

/* Server context for a TLS listener. NULL with "FILE:LINE:COL: ..." in err. */
struct tls_ctx *tls_server_new(const struct conf *c, const struct conf_listen *cl, char *err,
                               size_t errlen) __attribute__((warn_unused_result));

/* Take another reference; returns t. */
struct tls_ctx *tls_ctx_hold(struct tls_ctx *t);
/* Drop a reference; the last one frees the context. NULL ok. */
void tls_ctx_release(struct tls_ctx *t);

/* Build every TLS context the config names and free them: what `sluice -t` checks.
 * Returns 0, or -1 with the first error in err. */
int tls_check_conf(const struct conf *c, char *err, size_t errlen);

/* A new bufferevent that will run a TLS client handshake toward the context's server
 * name once evhttp connects it (fd -1 until then). NULL on failure. */
struct bufferevent *tls_client_bev(struct tls_ctx *t, struct event_base *base);

/* Was this TLS bufferevent made from context `t`? */
int tls_bev_uses(const struct tls_ctx *t, struct bufferevent *bev);

/* A new bufferevent for an accepted client connection on a TLS listener. */
struct bufferevent *tls_server_bev(struct tls_ctx *t, struct event_base *base);

/* After a request got no answer on a TLS bufferevent: a Sluice-Reason
 * ("tls_verify_failed" or "tls_handshake_failed") with a human-readable cause in `why`
 * when TLS is to blame (verification failed, an alert or OpenSSL error was recorded, or
 * the handshake never finished), else NULL (e.g. the TCP connect itself failed).
 * `before_request`: the failure came as the connection was set up, before the request
 * was written; a completed handshake then also counts (the upstream refused us). */
const char *tls_failure(struct bufferevent *bev, int before_request, char *why, size_t whylen);

#endif
