/* TLS contexts: listeners (termination, client mTLS, session tickets with
 * rotating keys) and upstreams (verification, client certificates, pinning).
 * Contexts are built on the control thread and shared by all workers. */
#ifndef CERT_TLS_H
#define CERT_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

#include "api_json.h"
#include "cert_store.h"

#define CERT_DEFAULT_MAX_CERT_LIST (100 * 1024)

struct cert_tls_opts {
    int min_version;          /* OpenSSL's TLS1_2_VERSION etc.; 0: TLS 1.2 */
    int max_version;          /* 0: the highest supported */
    const char *ciphers;      /* TLS 1.2 cipher list; NULL: the secure default */
    const char *ciphersuites; /* TLS 1.3 suites; NULL: OpenSSL's default */
    long max_cert_list;       /* bytes the peer's certificate chain may take; 0: 100 KiB */
};

/* Tyk's numeric versions (769..772) to OpenSSL's; 0 stays 0. -1 if unknown. */
int cert_tls_version_from_tyk(long v);

/* Splits cipher names (OpenSSL's, or the IANA names Tyk and Go use) into an
 * OpenSSL cipher list for TLS 1.2 and a suite list for TLS 1.3. Both are ""
 * for n == 0. Returns -1 with a reason for an unknown name. */
int cert_cipher_lists(const char *const *names, size_t n, char *tls12, size_t len12, char *tls13,
                      size_t len13, char *err, size_t errlen) __attribute__((warn_unused_result));

/* Server-side session tickets: a key ring shared by every listener context, so
 * that a session resumes on whichever worker the client lands. The control
 * thread rotates it; old keys still decrypt for two rotations. */
struct cert_ticket_keys;
struct cert_ticket_keys *cert_ticket_keys_new(void) __attribute__((warn_unused_result));
void cert_ticket_keys_rotate(struct cert_ticket_keys *k);
void cert_ticket_keys_free(struct cert_ticket_keys *k);

/* A listener context serving `certs` (each with a key). NULL on error, with a
 * reason. mTLS: `client_cas` (may be empty) lists the certificates a client
 * certificate must chain to, or be. */
SSL_CTX *cert_server_ctx_new(struct cert_entry *const *certs, size_t ncerts,
                             struct cert_entry *const *client_cas, size_t ncas,
                             const struct cert_tls_opts *opts, struct cert_ticket_keys *keys,
                             const char *session_id_context, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* ALPN offered by a listener context, in preference order (wire format). */
int cert_server_ctx_set_alpn(SSL_CTX *ctx, const unsigned char *wire, size_t len);

/* Applies a definition's context to a connection whose handshake began on the
 * port's shared context: certificate, verification, versions, session id
 * context. Call from the client-hello callback. */
void cert_ssl_switch_ctx(SSL *ssl, SSL_CTX *ctx);

/* An upstream context. verify: check chain and host name against ca_file, or
 * the system store when ca_file is NULL. */
SSL_CTX *cert_client_ctx_new(const struct cert_tls_opts *opts, bool verify, const char *ca_file,
                             char *err, size_t errlen) __attribute__((warn_unused_result));

/* Prepares an upstream connection: SNI and host-name check for `host`, and a
 * client certificate when given. Returns 0 or -1. */
int cert_ssl_client_setup(SSL *ssl, const char *host, bool verify,
                          const struct cert_entry *client_cert);

/* Where an upstream connection keeps the session the server hands out (with
 * TLS 1.3 that is after the handshake), for the next connection to resume.
 * The slot owns its reference; it is used by one thread only. */
void cert_ssl_set_session_slot(SSL *ssl, SSL_SESSION **slot);

/* The best entry for host:port among Tyk's host patterns ("host:port",
 * "host", "*.domain", "*"), most specific first; -1 when none matches. */
int cert_host_pattern_match(const char *const *patterns, size_t n, const char *host, int port);

/* Why a client-side TLS connection failed, as one line: a verification
 * error, else the OpenSSL error `err` (as libevent's
 * bufferevent_get_openssl_error returns it). NULL when neither says anything:
 * the failure was below TLS. */
const char *cert_tls_failure(SSL *ssl, unsigned long err, char *buf, size_t len);

/* An ex_data free callback that free()s the value. */
void cert_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp);

/* Whether the peer's certificate matches one of `pins`, a comma-separated list
 * of certificate ids and sha256//BASE64 SPKI pins. */
bool cert_pins_match(X509 *peer, const char *pins);

#endif
