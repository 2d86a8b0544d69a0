/* Unit tests for certs/cert_tls.c: Tyk versions and cipher names, host
 * patterns, pins, and real handshakes in memory (BIO pairs): session tickets
 * with the rotating key ring, client certificates (mTLS), switching a
 * connection to a definition's context, and upstream verification.
 *
 * Keys and certificates are made in the test (certgen.h) and written into a
 * temporary folder, removed afterwards. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <cmocka.h>

#include "cert_store.h"
#include "cert_tls.h"
#include "certgen.h"

/* ---- cert_tls_version_from_tyk --------------------------------------------------- */

static void test_version_from_tyk(void **state)
{
    (void)state;
    assert_int_equal(cert_tls_version_from_tyk(0), 0);
    assert_int_equal(cert_tls_version_from_tyk(769), TLS1_VERSION);
    assert_int_equal(cert_tls_version_from_tyk(770), TLS1_1_VERSION);
    assert_int_equal(cert_tls_version_from_tyk(771), TLS1_2_VERSION);
    assert_int_equal(cert_tls_version_from_tyk(772), TLS1_3_VERSION);
    assert_int_equal(cert_tls_version_from_tyk(768), -1); /* SSL 3.0 */
    assert_int_equal(cert_tls_version_from_tyk(773), -1);
    assert_int_equal(cert_tls_version_from_tyk(-1), -1);
    assert_int_equal(cert_tls_version_from_tyk(12), -1);
    assert_int_equal(cert_tls_version_from_tyk(0x10000 + 771), -1);
}

/* ---- cert_cipher_lists -------------------------------------------------------------- */

static int lists(const char *const *names, size_t n, char *t12, char *t13, char *err)
{
    strcpy(t12, "stale");
    strcpy(t13, "stale");
    err[0] = '\0';
    return cert_cipher_lists(names, n, t12, 512, t13, 256, err, 256);
}

static void test_cipher_lists(void **state)
{
    (void)state;
    char t12[512], t13[256], err[256];

    assert_int_equal(lists(NULL, 0, t12, t13, err), 0);
    assert_string_equal(t12, "");
    assert_string_equal(t13, "");

    static const char *const openssl_names[] = {"ECDHE-RSA-AES128-GCM-SHA256",
                                                "ECDHE-ECDSA-AES256-GCM-SHA384"};
    assert_int_equal(lists(openssl_names, 2, t12, t13, err), 0);
    assert_string_equal(t12, "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384");
    assert_string_equal(t13, "");

    static const char *const iana[] = {"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                                       "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                                       "TLS_RSA_WITH_AES_128_GCM_SHA256"};
    assert_int_equal(lists(iana, 3, t12, t13, err), 0);
    assert_string_equal(t12, "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
                             "AES128-GCM-SHA256");
    assert_string_equal(t13, "");

    /* TLS 1.3 suites go to the second list, in order; the rest to the first */
    static const char *const mixed[] = {"TLS_AES_128_GCM_SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                                        "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_256_GCM_SHA384",
                                        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"};
    assert_int_equal(lists(mixed, 5, t12, t13, err), 0);
    assert_string_equal(t12, "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256");
    assert_string_equal(
        t13, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384");

    /* The lists are ones OpenSSL takes. */
    struct cert_tls_opts opts = {.ciphers = t12, .ciphersuites = t13};
    SSL_CTX *ctx = cert_client_ctx_new(&opts, false, NULL, err, sizeof(err));
    assert_non_null(ctx);
    SSL_CTX_free(ctx);

    /* unknown names */
    static const char *const bad[] = {"ECDHE-RSA-AES128-GCM-SHA256", "TLS_NOT_A_CIPHER"};
    assert_int_equal(lists(bad, 2, t12, t13, err), -1);
    assert_non_null(strstr(err, "TLS_NOT_A_CIPHER"));
    static const char *const lower[] = {"ecdhe-rsa-aes128-gcm-sha256"};
    assert_int_equal(lists(lower, 1, t12, t13, err), -1);
    static const char *const empty[] = {""};
    assert_int_equal(lists(empty, 1, t12, t13, err), -1);
    /* a cipher string is not a cipher name */
    static const char *const str[] = {"HIGH:!aNULL"};
    assert_int_equal(lists(str, 1, t12, t13, err), -1);
}

static void test_cipher_lists_too_long(void **state)
{
    (void)state;
    static const char *const names[] = {"ECDHE-RSA-AES128-GCM-SHA256",
                                        "ECDHE-RSA-AES256-GCM-SHA384"};
    char t12[30], t13[64], err[128];
    /* The caller's error buffer holds something from before. */
    strcpy(err, "stale text");
    assert_int_equal(
        cert_cipher_lists(names, 2, t12, sizeof(t12), t13, sizeof(t13), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "too long"));
    static const char *const suites[] = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"};
    strcpy(err, "");
    assert_int_equal(
        cert_cipher_lists(suites, 2, t13, sizeof(t13), t12, sizeof(t12), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "too long"));
}

/* ---- cert_host_pattern_match ---------------------------------------------------------- */

static void test_host_patterns(void **state)
{
    (void)state;
    static const char *const p[] = {"*", "*.example.com", "api.example.com",
                                    "api.example.com:8443"};
    assert_int_equal(cert_host_pattern_match(p, 4, "api.example.com", 8443), 3);
    assert_int_equal(cert_host_pattern_match(p, 4, "API.Example.COM", 8443), 3);
    assert_int_equal(cert_host_pattern_match(p, 4, "api.example.com", 443), 2);
    assert_int_equal(cert_host_pattern_match(p, 4, "www.example.com", 8443), 1);
    assert_int_equal(cert_host_pattern_match(p, 4, "WWW.EXAMPLE.COM", 1), 1);
    assert_int_equal(cert_host_pattern_match(p, 4, "a.b.example.com", 443), 0); /* two labels */
    assert_int_equal(cert_host_pattern_match(p, 4, "example.com", 443), 0);     /* no label */
    assert_int_equal(cert_host_pattern_match(p, 4, "other.org", 443), 0);

    /* the same patterns in another order */
    static const char *const r[] = {"api.example.com:8443", "api.example.com", "*.example.com",
                                    "*"};
    assert_int_equal(cert_host_pattern_match(r, 4, "api.example.com", 8443), 0);
    assert_int_equal(cert_host_pattern_match(r, 4, "api.example.com", 443), 1);
    assert_int_equal(cert_host_pattern_match(r, 4, "x.example.com", 443), 2);
    assert_int_equal(cert_host_pattern_match(r, 4, "x.example.org", 443), 3);

    /* no "*": nothing for the others */
    static const char *const q[] = {"*.example.com", "db.internal:5432"};
    assert_int_equal(cert_host_pattern_match(q, 2, "other.org", 443), -1);
    assert_int_equal(cert_host_pattern_match(q, 2, "example.com", 443), -1);
    assert_int_equal(cert_host_pattern_match(q, 2, "db.internal", 5432), 1);
    assert_int_equal(cert_host_pattern_match(q, 2, "db.internal", 5433), -1);
    assert_int_equal(cert_host_pattern_match(q, 2, "db.internal5432", 5432), -1);
    assert_int_equal(cert_host_pattern_match(q, 2, "xdb.internal", 5432), -1);
    assert_int_equal(cert_host_pattern_match(q, 0, "db.internal", 5432), -1);

    /* a wildcard does not match a suffix that is not a label */
    static const char *const w[] = {"*.example.com"};
    assert_int_equal(cert_host_pattern_match(w, 1, "a.notexample.com", 443), -1);
    assert_int_equal(cert_host_pattern_match(w, 1, "a.example.com.evil", 443), -1);

    /* IP addresses, as hosts and with ports */
    static const char *const ip[] = {"10.0.0.1", "10.0.0.1:443"};
    assert_int_equal(cert_host_pattern_match(ip, 2, "10.0.0.1", 443), 1);
    assert_int_equal(cert_host_pattern_match(ip, 2, "10.0.0.1", 80), 0);
    assert_int_equal(cert_host_pattern_match(ip, 2, "10.0.0.2", 443), -1);
}

/* ---- cert_pins_match ------------------------------------------------------------------- */

static void test_pins(void **state)
{
    (void)state;
    EVP_PKEY *k = cg_key(), *k2 = cg_key();
    X509 *x = cg_self_signed(k, "pinned.example");
    X509 *other = cg_self_signed(k2, "other.example");
    char id[65], pin[80], other_id[65], other_pin[80];
    cg_der_sha256_hex(x, id);
    cg_spki_pin(k, pin);
    cg_der_sha256_hex(other, other_id);
    cg_spki_pin(k2, other_pin);

    assert_true(cert_pins_match(x, id));
    assert_true(cert_pins_match(x, pin));
    char up[65];
    memcpy(up, id, sizeof(up));
    for (char *c = up; *c; c++)
        if (*c >= 'a' && *c <= 'f')
            *c = (char)(*c - 'a' + 'A');
    assert_true(cert_pins_match(x, up)); /* ids are hex: case does not matter */

    char list[512];
    snprintf(list, sizeof(list), "%s,%s", other_id, pin);
    assert_true(cert_pins_match(x, list));
    snprintf(list, sizeof(list), " %s , %s ", other_pin, id);
    assert_true(cert_pins_match(x, list));
    snprintf(list, sizeof(list), "%s, %s,,", other_pin, other_id);
    assert_false(cert_pins_match(x, list));
    assert_true(cert_pins_match(other, list));

    /* mismatches */
    assert_false(cert_pins_match(x, other_id));
    assert_false(cert_pins_match(x, other_pin));
    assert_false(cert_pins_match(x, ""));
    assert_false(cert_pins_match(x, " , ,"));
    assert_false(cert_pins_match(x, NULL));
    assert_false(cert_pins_match(NULL, id));
    /* a piece of an id or pin is not a match */
    char part[80];
    snprintf(part, sizeof(part), "%.32s", id);
    assert_false(cert_pins_match(x, part));
    snprintf(part, sizeof(part), "%sab", id);
    assert_false(cert_pins_match(x, part));
    snprintf(part, sizeof(part), "%.40s", pin);
    assert_false(cert_pins_match(x, part));
    /* base64 is case sensitive */
    snprintf(part, sizeof(part), "%s", pin);
    for (char *c = part + 8; *c; c++)
        if (*c >= 'a' && *c <= 'z') {
            *c = (char)(*c - 'a' + 'A');
            break;
        }
    assert_false(cert_pins_match(x, part));
    /* the pin needs its prefix */
    assert_false(cert_pins_match(x, pin + 8));

    X509_free(x);
    X509_free(other);
    EVP_PKEY_free(k);
    EVP_PKEY_free(k2);
}

/* ---- handshakes in memory ---------------------------------------------------------------- */

struct fx {
    char dir[256];
    EVP_PKEY *server_key, *client_key, *other_key, *ca_key, *issued_key;
    struct cert_entry *server;     /* "localhost", self-signed, key */
    struct cert_entry *client;     /* "client.example", self-signed, key */
    struct cert_entry *client_pub; /* the same certificate, no key */
    struct cert_entry *other;      /* "intruder.example", self-signed, key */
    struct cert_entry *ca;         /* "Test CA", no key */
    struct cert_entry *issued;     /* "issued.example" signed by the CA, key */
    struct cert_entry *ca_server;  /* "localhost" signed by the CA, key */
    char ca_path[512];
    struct cert_ticket_keys *keys;
};

static struct cert_entry *load(struct fx *fx, const char *name, X509 *const *certs, size_t n,
                               EVP_PKEY *key)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/%s", fx->dir, name);
    cg_write(p, certs, n, key, 0600);
    struct api_diags d = {0};
    struct cert_entry *e = cert_entry_load(p, key != NULL, "test", "certificates", &d);
    assert_int_equal(d.count, 0);
    api_diags_free(&d);
    assert_non_null(e);
    return e;
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    cg_mkdtemp(fx->dir, sizeof(fx->dir));
    fx->server_key = cg_key();
    fx->client_key = cg_key();
    fx->other_key = cg_key();
    fx->ca_key = cg_key();
    fx->issued_key = cg_key();
    X509 *server = cg_self_signed(fx->server_key, "localhost");
    X509 *client = cg_self_signed(fx->client_key, "client.example");
    X509 *other = cg_self_signed(fx->other_key, "intruder.example");
    X509 *ca = cg_cert(fx->ca_key, "Test CA", CG_CA, NULL, NULL, -1, 3650);
    X509 *issued = cg_cert(fx->issued_key, "issued.example", CG_LEAF, ca, fx->ca_key, -1, 365);
    X509 *ca_server = cg_cert(fx->server_key, "localhost", CG_LEAF, ca, fx->ca_key, -1, 365);
    fx->server = load(fx, "server.pem", &server, 1, fx->server_key);
    fx->client = load(fx, "client.pem", &client, 1, fx->client_key);
    fx->client_pub = load(fx, "client-pub.pem", &client, 1, NULL);
    fx->other = load(fx, "other.pem", &other, 1, fx->other_key);
    fx->ca = load(fx, "ca.pem", &ca, 1, NULL);
    X509 *chain[] = {issued, ca};
    fx->issued = load(fx, "issued.pem", chain, 2, fx->issued_key);
    fx->ca_server = load(fx, "ca-server.pem", &ca_server, 1, fx->server_key);
    snprintf(fx->ca_path, sizeof(fx->ca_path), "%s/ca.pem", fx->dir);
    X509_free(server);
    X509_free(client);
    X509_free(other);
    X509_free(ca);
    X509_free(issued);
    X509_free(ca_server);
    fx->keys = cert_ticket_keys_new();
    assert_non_null(fx->keys);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    cg_rmtree(fx->dir);
    cert_entry_unref(fx->server);
    cert_entry_unref(fx->client);
    cert_entry_unref(fx->client_pub);
    cert_entry_unref(fx->other);
    cert_entry_unref(fx->ca);
    cert_entry_unref(fx->issued);
    cert_entry_unref(fx->ca_server);
    EVP_PKEY_free(fx->server_key);
    EVP_PKEY_free(fx->client_key);
    EVP_PKEY_free(fx->other_key);
    EVP_PKEY_free(fx->ca_key);
    EVP_PKEY_free(fx->issued_key);
    cert_ticket_keys_free(fx->keys);
    free(fx);
    ERR_clear_error();
    return 0;
}

static SSL_CTX *server_ctx(struct fx *fx, struct cert_entry *cert, struct cert_entry *const *cas,
                           size_t ncas, struct cert_ticket_keys *keys, int max_version)
{
    char err[256] = "";
    struct cert_tls_opts opts = {.max_version = max_version};
    SSL_CTX *ctx = cert_server_ctx_new(&cert, 1, cas, ncas, &opts, keys, "api-1", err, sizeof(err));
    if (ctx == NULL)
        fail_msg("cert_server_ctx_new: %s", err);
    (void)fx;
    return ctx;
}

static SSL_CTX *client_ctx(bool verify, const char *ca_file)
{
    char err[256] = "";
    SSL_CTX *ctx = cert_client_ctx_new(NULL, verify, ca_file, err, sizeof(err));
    if (ctx == NULL)
        fail_msg("cert_client_ctx_new: %s", err);
    return ctx;
}

/* The result of one connection. */
struct conn {
    bool ok;          /* both handshakes done and a byte went each way */
    bool reused;      /* the client resumed a session */
    bool server_ok;   /* the server's handshake finished */
    bool peer_cert;   /* the server saw a client certificate */
    SSL_SESSION *new; /* the session the client got (a reference), or NULL */
};

struct conn_opts {
    SSL_SESSION *resume;                 /* offered by the client */
    const struct cert_entry *client_crt; /* the client's certificate */
    const char *host;                    /* "localhost" */
    bool verify;                         /* the client checks the server */
    SSL_SESSION **final;                 /* the client's session at the end */
};

/* Drives both ends to completion through a BIO pair, bounded. */
static bool drive(SSL *c, SSL *s, bool *c_done, bool *s_done)
{
    for (int i = 0; i < 100 && !(*c_done && *s_done); i++) {
        if (!*c_done) {
            int r = SSL_do_handshake(c);
            if (r == 1)
                *c_done = true;
            else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ &&
                     SSL_get_error(c, r) != SSL_ERROR_WANT_WRITE)
                return false;
        }
        if (!*s_done) {
            int r = SSL_do_handshake(s);
            if (r == 1)
                *s_done = true;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ &&
                     SSL_get_error(s, r) != SSL_ERROR_WANT_WRITE)
                return false;
        }
    }
    return *c_done && *s_done;
}

/* Reads one byte on `r` after `w` wrote it, bounded. */
static bool pass_byte(SSL *w, SSL *r, char byte)
{
    if (SSL_write(w, &byte, 1) != 1)
        return false;
    char got = 0;
    for (int i = 0; i < 20; i++) {
        int n = SSL_read(r, &got, 1);
        if (n == 1)
            return got == byte;
        int e = SSL_get_error(r, n);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            return false;
    }
    return false;
}

static struct conn connect_pair(SSL_CTX *sctx, SSL_CTX *cctx, const struct conn_opts *o)
{
    struct conn res = {0};
    SSL *s = SSL_new(sctx);
    SSL *c = SSL_new(cctx);
    assert_non_null(s);
    assert_non_null(c);
    BIO *bc = NULL, *bs = NULL;
    assert_int_equal(BIO_new_bio_pair(&bc, 0, &bs, 0), 1);
    SSL_set_bio(c, bc, bc);
    SSL_set_bio(s, bs, bs);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    SSL_SESSION *slot = NULL;
    cert_ssl_set_session_slot(c, &slot);
    assert_int_equal(
        cert_ssl_client_setup(c, o->host ? o->host : "localhost", o->verify, o->client_crt), 0);
    if (o->resume != NULL)
        assert_int_equal(SSL_set_session(c, o->resume), 1);
    bool c_done = false, s_done = false;
    res.ok = drive(c, s, &c_done, &s_done);
    res.server_ok = s_done;
    /* Application data both ways: the client takes in the tickets on its way. */
    if (res.ok)
        res.ok = pass_byte(s, c, 'S') && pass_byte(c, s, 'C');
    res.reused = res.ok && SSL_session_reused(c) == 1;
    if (res.ok)
        assert_int_equal(SSL_session_reused(s), SSL_session_reused(c));
    X509 *peer = SSL_get1_peer_certificate(s);
    res.peer_cert = peer != NULL;
    X509_free(peer);
    res.new = slot; /* the slot's reference goes to the caller */
    if (o->final != NULL)
        *o->final = res.ok ? SSL_get1_session(c) : NULL;
    if (res.ok) {
        /* A clean close: OpenSSL marks the session of a connection freed
         * without close_notify as not resumable. */
        SSL_shutdown(c);
        SSL_shutdown(s);
    }
    SSL_free(c);
    SSL_free(s);
    ERR_clear_error();
    return res;
}

static struct conn run(SSL_CTX *sctx, SSL_CTX *cctx, SSL_SESSION *resume,
                       const struct cert_entry *client_crt)
{
    struct conn_opts o = {.resume = resume, .client_crt = client_crt};
    return connect_pair(sctx, cctx, &o);
}

static void test_handshake_basic(void **state)
{
    struct fx *fx = *state;
    SSL_CTX *sctx = server_ctx(fx, fx->server, NULL, 0, fx->keys, 0);
    SSL_CTX *cctx = client_ctx(false, NULL);
    struct conn r = run(sctx, cctx, NULL, NULL);
    assert_true(r.ok);
    assert_false(r.reused);
    assert_false(r.peer_cert); /* no mTLS: not asked */
    assert_non_null(r.new);    /* the slot got the session */
    assert_int_equal(SSL_SESSION_get_protocol_version(r.new), TLS1_3_VERSION);
    SSL_SESSION_free(r.new);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

/* A session from the first connection; returns it (a reference). */
static SSL_SESSION *first_session(SSL_CTX *sctx, SSL_CTX *cctx)
{
    struct conn r = run(sctx, cctx, NULL, NULL);
    assert_true(r.ok);
    assert_false(r.reused);
    assert_non_null(r.new);
    assert_int_equal(SSL_SESSION_has_ticket(r.new), 1);
    return r.new;
}

/* Whether a connection offering a copy of sess resumes. A copy, because an
 * OpenSSL client with a session cache uses a TLS 1.3 session once (it marks it
 * not resumable after use), and the tests offer the same ticket again. */
static bool resumes(SSL_CTX *sctx, SSL_CTX *cctx, SSL_SESSION *sess)
{
    SSL_SESSION *copy = SSL_SESSION_dup(sess);
    assert_non_null(copy);
    assert_int_equal(SSL_SESSION_is_resumable(copy), 1);
    struct conn r = run(sctx, cctx, copy, NULL);
    SSL_SESSION_free(copy);
    assert_true(r.ok); /* resumed or not, the connection works */
    SSL_SESSION_free(r.new);
    return r.reused;
}

static void ticket_rotation(struct fx *fx, int max_version)
{
    SSL_CTX *sctx = server_ctx(fx, fx->server, NULL, 0, fx->keys, max_version);
    SSL_CTX *cctx = client_ctx(false, NULL);
    SSL_SESSION *s0 = first_session(sctx, cctx);
    assert_true(resumes(sctx, cctx, s0));
    /* one rotation: the old key still decrypts */
    cert_ticket_keys_rotate(fx->keys);
    assert_true(resumes(sctx, cctx, s0));
    /* three more: it is gone, and a full handshake follows */
    for (int i = 0; i < 3; i++)
        cert_ticket_keys_rotate(fx->keys);
    assert_false(resumes(sctx, cctx, s0));
    /* a fresh session resumes again */
    SSL_SESSION *s1 = first_session(sctx, cctx);
    assert_true(resumes(sctx, cctx, s1));
    SSL_SESSION_free(s1);
    SSL_SESSION_free(s0);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

static void test_tickets_rotation_tls13(void **state)
{
    ticket_rotation(*state, 0);
}

static void test_tickets_rotation_tls12(void **state)
{
    ticket_rotation(*state, TLS1_2_VERSION);
}

static bool same_ticket(const SSL_SESSION *a, const SSL_SESSION *b)
{
    const unsigned char *ta = NULL, *tb = NULL;
    size_t na = 0, nb = 0;
    SSL_SESSION_get0_ticket(a, &ta, &na);
    SSL_SESSION_get0_ticket(b, &tb, &nb);
    return na == nb && memcmp(ta, tb, na) == 0;
}

/* A client that comes back after every two rotations keeps resuming: a ticket
 * under an old key is renewed under the current one.
 *
 * TLS 1.3 is checked the way upstream connections do it: each connection
 * offers the session the previous one left in the slot. With TLS 1.2 OpenSSL
 * does not hand a resumed connection's renewed ticket to the new-session
 * callback, so the test takes the client's session at the end instead. */
static void ticket_chain(struct fx *fx, int max_version)
{
    SSL_CTX *sctx = server_ctx(fx, fx->server, NULL, 0, fx->keys, max_version);
    SSL_CTX *cctx = client_ctx(false, NULL);
    SSL_SESSION *cur = first_session(sctx, cctx);
    for (int i = 0; i < 6; i++) {
        cert_ticket_keys_rotate(fx->keys);
        cert_ticket_keys_rotate(fx->keys);
        SSL_SESSION *final = NULL;
        struct conn_opts o = {.resume = cur, .final = &final};
        struct conn r = connect_pair(sctx, cctx, &o);
        assert_true(r.ok);
        assert_true(r.reused);
        assert_non_null(final);
        SSL_SESSION *next = max_version == 0 ? r.new : final;
        assert_non_null(next);
        assert_false(same_ticket(next, cur)); /* renewed */
        SSL_SESSION_up_ref(next);
        SSL_SESSION_free(r.new);
        SSL_SESSION_free(final);
        SSL_SESSION_free(cur);
        cur = next;
    }
    SSL_SESSION_free(cur);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

static void test_tickets_renewed_tls13(void **state)
{
    ticket_chain(*state, 0);
}

static void test_tickets_renewed_tls12(void **state)
{
    ticket_chain(*state, TLS1_2_VERSION);
}

static void test_tickets_two_rotations_boundary(void **state)
{
    struct fx *fx = *state;
    /* "old keys still decrypt for two rotations": after two, yes; after three, no. */
    SSL_CTX *sctx = server_ctx(fx, fx->server, NULL, 0, fx->keys, 0);
    SSL_CTX *cctx = client_ctx(false, NULL);
    SSL_SESSION *s0 = first_session(sctx, cctx);
    cert_ticket_keys_rotate(fx->keys);
    cert_ticket_keys_rotate(fx->keys);
    assert_true(resumes(sctx, cctx, s0));
    cert_ticket_keys_rotate(fx->keys);
    assert_false(resumes(sctx, cctx, s0));
    SSL_SESSION_free(s0);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

static void test_tickets_shared_between_contexts(void **state)
{
    struct fx *fx = *state;
    /* Two workers' contexts on one key ring: a session resumes on either. A
     * context with its own ring does not take the ticket. */
    SSL_CTX *a = server_ctx(fx, fx->server, NULL, 0, fx->keys, 0);
    SSL_CTX *b = server_ctx(fx, fx->server, NULL, 0, fx->keys, 0);
    struct cert_ticket_keys *own = cert_ticket_keys_new();
    SSL_CTX *c = server_ctx(fx, fx->server, NULL, 0, own, 0);
    SSL_CTX *cctx = client_ctx(false, NULL);
    SSL_SESSION *s0 = first_session(a, cctx);
    assert_true(resumes(b, cctx, s0));
    assert_true(resumes(a, cctx, s0));
    assert_false(resumes(c, cctx, s0));
    SSL_SESSION_free(s0);
    SSL_CTX_free(cctx);
    SSL_CTX_free(a);
    SSL_CTX_free(b);
    SSL_CTX_free(c);
    cert_ticket_keys_free(own);
}

static void test_mtls_listed_certificate(void **state)
{
    struct fx *fx = *state;
    struct cert_entry *cas[] = {fx->client_pub};
    SSL_CTX *sctx = server_ctx(fx, fx->server, cas, 1, fx->keys, 0);
    assert_int_equal(SSL_CTX_get_verify_mode(sctx),
                     SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    SSL_CTX *cctx = client_ctx(false, NULL);

    struct conn r = run(sctx, cctx, NULL, NULL); /* no certificate */
    assert_false(r.ok);
    assert_false(r.server_ok);
    SSL_SESSION_free(r.new);

    r = run(sctx, cctx, NULL, fx->other); /* another certificate */
    assert_false(r.ok);
    assert_false(r.server_ok);
    SSL_SESSION_free(r.new);

    r = run(sctx, cctx, NULL, fx->issued); /* a CA-signed one, CA not listed */
    assert_false(r.ok);
    SSL_SESSION_free(r.new);

    r = run(sctx, cctx, NULL, fx->client); /* the listed one */
    assert_true(r.ok);
    assert_true(r.peer_cert);
    /* and its session resumes */
    assert_non_null(r.new);
    assert_true(resumes(sctx, cctx, r.new));
    SSL_SESSION_free(r.new);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

static void test_mtls_ca(void **state)
{
    struct fx *fx = *state;
    struct cert_entry *cas[] = {fx->ca};
    SSL_CTX *sctx = server_ctx(fx, fx->server, cas, 1, NULL, 0);
    SSL_CTX *cctx = client_ctx(false, NULL);
    struct conn r = run(sctx, cctx, NULL, fx->issued); /* signed by the CA */
    assert_true(r.ok);
    assert_true(r.peer_cert);
    SSL_SESSION_free(r.new);
    r = run(sctx, cctx, NULL, fx->client); /* self-signed, not listed */
    assert_false(r.ok);
    SSL_SESSION_free(r.new);
    r = run(sctx, cctx, NULL, NULL);
    assert_false(r.ok);
    SSL_SESSION_free(r.new);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);

    /* Several entries: the CA and a listed certificate. */
    struct cert_entry *both[] = {fx->ca, fx->client_pub};
    sctx = server_ctx(fx, fx->server, both, 2, NULL, 0);
    cctx = client_ctx(false, NULL);
    r = run(sctx, cctx, NULL, fx->issued);
    assert_true(r.ok);
    SSL_SESSION_free(r.new);
    r = run(sctx, cctx, NULL, fx->client);
    assert_true(r.ok);
    SSL_SESSION_free(r.new);
    r = run(sctx, cctx, NULL, fx->other);
    assert_false(r.ok);
    SSL_SESSION_free(r.new);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

static void test_mtls_tls12(void **state)
{
    struct fx *fx = *state;
    struct cert_entry *cas[] = {fx->client_pub};
    SSL_CTX *sctx = server_ctx(fx, fx->server, cas, 1, fx->keys, TLS1_2_VERSION);
    SSL_CTX *cctx = client_ctx(false, NULL);
    struct conn r = run(sctx, cctx, NULL, NULL);
    assert_false(r.ok);
    SSL_SESSION_free(r.new);
    r = run(sctx, cctx, NULL, fx->other);
    assert_false(r.ok);
    SSL_SESSION_free(r.new);
    r = run(sctx, cctx, NULL, fx->client);
    assert_true(r.ok);
    assert_non_null(r.new);
    assert_int_equal(SSL_SESSION_get_protocol_version(r.new), TLS1_2_VERSION);
    SSL_SESSION_free(r.new);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

/* The port's shared context hands each connection to a definition's context
 * in the client-hello callback, as gw_snapshot.c does. */
static int switch_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    cert_ssl_switch_ctx(ssl, arg);
    return SSL_CLIENT_HELLO_SUCCESS;
}

static void test_switch_ctx(void **state)
{
    struct fx *fx = *state;
    SSL_CTX *port = server_ctx(fx, fx->server, NULL, 0, fx->keys, 0);
    struct cert_entry *cas[] = {fx->client_pub};
    SSL_CTX *def = server_ctx(fx, fx->server, cas, 1, fx->keys, 0);

    /* directly */
    SSL *ssl = SSL_new(port);
    assert_non_null(ssl);
    assert_int_equal(SSL_get_verify_mode(ssl), SSL_VERIFY_NONE);
    cert_ssl_switch_ctx(ssl, def);
    assert_ptr_equal(SSL_get_SSL_CTX(ssl), def);
    assert_int_equal(SSL_get_verify_mode(ssl), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    /* and back */
    cert_ssl_switch_ctx(ssl, port);
    assert_int_equal(SSL_get_verify_mode(ssl), SSL_VERIFY_NONE);
    SSL_free(ssl);

    /* versions follow too */
    char err[256];
    struct cert_tls_opts only12 = {.min_version = TLS1_2_VERSION, .max_version = TLS1_2_VERSION};
    SSL_CTX *def12 =
        cert_server_ctx_new(&fx->server, 1, NULL, 0, &only12, fx->keys, "x", err, sizeof(err));
    assert_non_null(def12);
    ssl = SSL_new(port);
    cert_ssl_switch_ctx(ssl, def12);
    assert_int_equal(SSL_get_max_proto_version(ssl), TLS1_2_VERSION);
    SSL_free(ssl);

    /* in a handshake: the definition's mTLS applies */
    SSL_CTX_set_client_hello_cb(port, switch_cb, def);
    SSL_CTX *cctx = client_ctx(false, NULL);
    struct conn r = run(port, cctx, NULL, NULL);
    assert_false(r.ok);
    SSL_SESSION_free(r.new);
    r = run(port, cctx, NULL, fx->other);
    assert_false(r.ok);
    SSL_SESSION_free(r.new);
    r = run(port, cctx, NULL, fx->client);
    assert_true(r.ok);
    assert_true(r.peer_cert);
    SSL_SESSION_free(r.new);

    /* and the definition's versions */
    SSL_CTX_set_client_hello_cb(port, switch_cb, def12);
    r = run(port, cctx, NULL, NULL);
    assert_true(r.ok);
    assert_non_null(r.new);
    assert_int_equal(SSL_SESSION_get_protocol_version(r.new), TLS1_2_VERSION);
    SSL_SESSION_free(r.new);

    SSL_CTX_free(cctx);
    SSL_CTX_free(def12);
    SSL_CTX_free(def);
    SSL_CTX_free(port);
}

static void test_upstream_verify(void **state)
{
    struct fx *fx = *state;
    SSL_CTX *sctx = server_ctx(fx, fx->ca_server, NULL, 0, NULL, 0);
    SSL_CTX *cctx = client_ctx(true, fx->ca_path);
    struct conn_opts o = {.verify = true, .host = "localhost"};
    struct conn r = connect_pair(sctx, cctx, &o);
    assert_true(r.ok);
    SSL_SESSION_free(r.new);
    /* the wrong name */
    o.host = "other.example";
    r = connect_pair(sctx, cctx, &o);
    assert_false(r.ok);
    SSL_SESSION_free(r.new);
    /* an IP address the certificate does not name */
    o.host = "127.0.0.1";
    r = connect_pair(sctx, cctx, &o);
    assert_false(r.ok);
    SSL_SESSION_free(r.new);
    SSL_CTX_free(sctx);
    /* a server certificate the CA did not sign */
    sctx = server_ctx(fx, fx->server, NULL, 0, NULL, 0);
    o.host = "localhost";
    r = connect_pair(sctx, cctx, &o);
    assert_false(r.ok);
    SSL_SESSION_free(r.new);
    /* without verification it connects */
    SSL_CTX *loose = client_ctx(false, NULL);
    o.verify = false;
    r = connect_pair(sctx, loose, &o);
    assert_true(r.ok);
    SSL_SESSION_free(r.new);
    SSL_CTX_free(loose);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

static void test_server_ctx_errors(void **state)
{
    struct fx *fx = *state;
    char err[256] = "";
    /* a certificate without its key */
    assert_null(
        cert_server_ctx_new(&fx->client_pub, 1, NULL, 0, NULL, NULL, NULL, err, sizeof(err)));
    assert_true(err[0] != '\0');
    /* an impossible version range */
    struct cert_tls_opts bad = {.min_version = TLS1_3_VERSION, .max_version = TLS1_2_VERSION};
    SSL_CTX *ctx = cert_server_ctx_new(&fx->server, 1, NULL, 0, &bad, NULL, NULL, err, sizeof(err));
    if (ctx != NULL) {
        /* OpenSSL takes the range; no handshake can succeed with it */
        SSL_CTX *cctx = client_ctx(false, NULL);
        struct conn r = run(ctx, cctx, NULL, NULL);
        assert_false(r.ok);
        SSL_SESSION_free(r.new);
        SSL_CTX_free(cctx);
        SSL_CTX_free(ctx);
    }
    /* a cipher list with nothing usable */
    struct cert_tls_opts none = {.ciphers = "NO-SUCH-CIPHER"};
    err[0] = '\0';
    assert_null(cert_server_ctx_new(&fx->server, 1, NULL, 0, &none, NULL, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "cipher"));
    /* ALPN */
    ctx = cert_server_ctx_new(&fx->server, 1, NULL, 0, NULL, NULL, NULL, err, sizeof(err));
    assert_non_null(ctx);
    static const unsigned char h2[] = {2, 'h', '2'};
    assert_int_equal(cert_server_ctx_set_alpn(ctx, h2, sizeof(h2)), 0);
    assert_int_equal(cert_server_ctx_set_alpn(ctx, h2, 0), -1);
    SSL_CTX_free(ctx);
    ERR_clear_error();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_from_tyk),
        cmocka_unit_test(test_cipher_lists),
        cmocka_unit_test(test_cipher_lists_too_long),
        cmocka_unit_test(test_host_patterns),
        cmocka_unit_test(test_pins),
        cmocka_unit_test_setup_teardown(test_handshake_basic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tickets_rotation_tls13, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tickets_two_rotations_boundary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tickets_rotation_tls12, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tickets_renewed_tls13, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tickets_renewed_tls12, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tickets_shared_between_contexts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mtls_listed_certificate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mtls_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mtls_tls12, setup, teardown),
        cmocka_unit_test_setup_teardown(test_switch_ctx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_ctx_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
