#include "cert_tls.h"

#include <arpa/inet.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Forward secrecy only, AEAD only: Mozilla's "intermediate" list for TLS 1.2. */
#define DEFAULT_CIPHERS                                                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

#define SESSION_TIMEOUT_S 7200
#define TICKET_KEYS 3 /* the current key and two previous ones */

static void set_err(char *err, size_t errlen, const char *what)
{
    char detail[200] = "";
    unsigned long e = ERR_peek_last_error();
    if (e != 0)
        ERR_error_string_n(e, detail, sizeof(detail));
    ERR_clear_error();
    snprintf(err, errlen, "%s%s%s", what, detail[0] ? ": " : "", detail);
}

int cert_tls_version_from_tyk(long v)
{
    switch (v) {
    case 0:
        return 0;
    case 769:
        return TLS1_VERSION;
    case 770:
        return TLS1_1_VERSION;
    case 771:
        return TLS1_2_VERSION;
    case 772:
        return TLS1_3_VERSION;
    default:
        return -1;
    }
}

static bool append(char *buf, size_t len, const char *name)
{
    size_t used = strlen(buf);
    int n = snprintf(buf + used, len - used, "%s%s", used ? ":" : "", name);
    return n > 0 && (size_t)n < len - used;
}

int cert_cipher_lists(const char *const *names, size_t n, char *tls12, size_t len12, char *tls13,
                      size_t len13, char *err, size_t errlen)
{
    tls12[0] = tls13[0] = '\0';
    if (errlen > 0)
        err[0] = '\0';
    if (n == 0)
        return 0;
    SSL_CTX *all = SSL_CTX_new(TLS_method());
    if (all == NULL || SSL_CTX_set_cipher_list(all, "ALL:COMPLEMENTOFALL") != 1) {
        SSL_CTX_free(all);
        set_err(err, errlen, "cannot list ciphers");
        return -1;
    }
    STACK_OF(SSL_CIPHER) *known = SSL_CTX_get_ciphers(all);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const SSL_CIPHER *found = NULL;
        for (int j = 0; j < sk_SSL_CIPHER_num(known) && found == NULL; j++) {
            const SSL_CIPHER *c = sk_SSL_CIPHER_value(known, j);
            const char *std = SSL_CIPHER_standard_name(c);
            if (strcmp(SSL_CIPHER_get_name(c), names[i]) == 0 ||
                (std != NULL && strcmp(std, names[i]) == 0))
                found = c;
        }
        if (found == NULL) {
            snprintf(err, errlen, "unknown cipher \"%s\"", names[i]);
            rc = -1;
        } else if (strcmp(SSL_CIPHER_get_version(found), "TLSv1.3") == 0) {
            if (!append(tls13, len13, SSL_CIPHER_get_name(found)))
                rc = -1;
        } else if (!append(tls12, len12, SSL_CIPHER_get_name(found))) {
            rc = -1;
        }
    }
    if (rc != 0 && err[0] == '\0')
        snprintf(err, errlen, "cipher list too long");
    SSL_CTX_free(all);
    return rc;
}

/* ---- session ticket keys ------------------------------------------------------ */

struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    bool set;
};

struct cert_ticket_keys {
    pthread_rwlock_t lock;
    struct ticket_key keys[TICKET_KEYS]; /* [0] encrypts; all decrypt */
};

static int ticket_ex_index = -1;
static pthread_once_t ticket_ex_once = PTHREAD_ONCE_INIT;

static void ticket_ex_init(void)
{
    ticket_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static void new_key(struct ticket_key *k)
{
    if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
        RAND_bytes(k->hmac, sizeof(k->hmac)) != 1)
        abort(); /* no randomness: nothing safe can be done */
    k->set = true;
}

struct cert_ticket_keys *cert_ticket_keys_new(void)
{
    struct cert_ticket_keys *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    pthread_rwlock_init(&k->lock, NULL);
    new_key(&k->keys[0]);
    return k;
}

void cert_ticket_keys_rotate(struct cert_ticket_keys *k)
{
    struct ticket_key fresh;
    new_key(&fresh);
    pthread_rwlock_wrlock(&k->lock);
    memmove(&k->keys[1], &k->keys[0], sizeof(k->keys[0]) * (TICKET_KEYS - 1));
    k->keys[0] = fresh;
    pthread_rwlock_unlock(&k->lock);
    OPENSSL_cleanse(&fresh, sizeof(fresh));
}

void cert_ticket_keys_free(struct cert_ticket_keys *k)
{
    if (k == NULL)
        return;
    pthread_rwlock_destroy(&k->lock);
    OPENSSL_cleanse(k, sizeof(*k));
    free(k);
}

static int ticket_cb(SSL *s, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    struct cert_ticket_keys *k = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), ticket_ex_index);
    if (k == NULL)
        return 0;
    int rc = 0;
    pthread_rwlock_rdlock(&k->lock);
    const struct ticket_key *use = NULL;
    int slot = 0;
    if (enc) {
        use = &k->keys[0];
        memcpy(key_name, use->name, 16);
        if (RAND_bytes(iv, 16) != 1)
            use = NULL;
    } else {
        for (slot = 0; slot < TICKET_KEYS; slot++) {
            if (k->keys[slot].set && memcmp(k->keys[slot].name, key_name, 16) == 0) {
                use = &k->keys[slot];
                break;
            }
        }
    }
    if (use != NULL) {
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)use->hmac, 32),
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
            OSSL_PARAM_construct_end(),
        };
        int ok = enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, use->aes, iv)
                     : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, use->aes, iv);
        if (ok == 1 && EVP_MAC_CTX_set_params(hctx, params) == 1)
            rc = enc || slot == 0 ? 1 : 2; /* 2: valid, but issue a fresh ticket */
    }
    pthread_rwlock_unlock(&k->lock);
    return rc;
}

/* ---- contexts ------------------------------------------------------------------- */

static int apply_opts(SSL_CTX *ctx, const struct cert_tls_opts *o, char *err, size_t errlen)
{
    int min = o != NULL && o->min_version ? o->min_version : TLS1_2_VERSION;
    int max = o != NULL ? o->max_version : 0;
    if (SSL_CTX_set_min_proto_version(ctx, min) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, max) != 1) {
        set_err(err, errlen, "unsupported TLS version range");
        return -1;
    }
    const char *ciphers = o != NULL && o->ciphers ? o->ciphers : DEFAULT_CIPHERS;
    if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
        set_err(err, errlen, "no usable cipher in the cipher list");
        return -1;
    }
    if (o != NULL && o->ciphersuites != NULL &&
        SSL_CTX_set_ciphersuites(ctx, o->ciphersuites) != 1) {
        set_err(err, errlen, "no usable TLS 1.3 cipher suite");
        return -1;
    }
    /* A peer that closes TCP without close_notify ends its stream; it is not
     * an attack on a byte stream whose framing is the application's. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Caps on what a peer may send before it is known: its certificate
     * chain, and no early data (0-RTT) at all, since a byte stream cannot be
     * told that its first bytes may be replayed. */
    SSL_CTX_set_max_cert_list(ctx, o != NULL && o->max_cert_list > 0 ? o->max_cert_list
                                                                     : CERT_DEFAULT_MAX_CERT_LIST);
    SSL_CTX_set_max_early_data(ctx, 0);
    SSL_CTX_set_recv_max_early_data(ctx, 0);
    return 0;
}

SSL_CTX *cert_server_ctx_new(struct cert_entry *const *certs, size_t ncerts,
                             struct cert_entry *const *client_cas, size_t ncas,
                             const struct cert_tls_opts *opts, struct cert_ticket_keys *keys,
                             const char *session_id_context, char *err, size_t errlen)
{
    pthread_once(&ticket_ex_once, ticket_ex_init);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        set_err(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    if (apply_opts(ctx, opts, err, errlen) != 0)
        goto fail;
    for (size_t i = 0; i < ncerts; i++) {
        struct cert_entry *e = certs[i];
        if (SSL_CTX_use_certificate(ctx, cert_entry_leaf(e)) != 1 ||
            SSL_CTX_use_PrivateKey(ctx, cert_entry_key(e)) != 1) {
            set_err(err, errlen, cert_entry_path(e));
            goto fail;
        }
        STACK_OF(X509) *chain = cert_entry_chain(e);
        for (int j = 0; chain != NULL && j < sk_X509_num(chain); j++) {
            if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(chain, j)) != 1) {
                set_err(err, errlen, cert_entry_path(e));
                goto fail;
            }
        }
    }
    if (ncas > 0) {
        X509_STORE *st = X509_STORE_new();
        if (st == NULL)
            goto fail;
        for (size_t i = 0; i < ncas; i++)
            for (size_t j = 0; j < cert_entry_count(client_cas[i]); j++)
                X509_STORE_add_cert(st, cert_entry_at(client_cas[i], j));
        ERR_clear_error(); /* duplicates are fine */
        /* A listed client certificate is trusted as it is, a CA for what it signs. */
        X509_STORE_set_flags(st, X509_V_FLAG_PARTIAL_CHAIN);
        SSL_CTX_set_cert_store(ctx, st);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, 20480);
    SSL_CTX_set_timeout(ctx, SESSION_TIMEOUT_S);
    if (session_id_context != NULL) {
        unsigned char md[32];
        EVP_Digest(session_id_context, strlen(session_id_context), md, NULL, EVP_sha256(), NULL);
        SSL_CTX_set_session_id_context(ctx, md,
                                       SSL_MAX_SID_CTX_LENGTH < 32 ? SSL_MAX_SID_CTX_LENGTH : 32);
    }
    if (keys != NULL) {
        SSL_CTX_set_ex_data(ctx, ticket_ex_index, keys);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

struct alpn_list {
    size_t len;
    unsigned char wire[256];
};

static int alpn_ex_index = -1;
static pthread_once_t alpn_ex_once = PTHREAD_ONCE_INIT;

void cert_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    free(ptr);
}

const char *cert_tls_failure(SSL *ssl, unsigned long err, char *buf, size_t len)
{
    long v = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (v != X509_V_OK) {
        snprintf(buf, len, "TLS: certificate verify failed: %s", X509_verify_cert_error_string(v));
        return buf;
    }
    if (err != 0) {
        char detail[200];
        ERR_error_string_n(err, detail, sizeof(detail));
        snprintf(buf, len, "TLS: %s", detail);
        return buf;
    }
    return NULL;
}

static void alpn_ex_init(void)
{
    alpn_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, cert_ex_free);
}

/* Server preference: the first of our protocols the client also offers. */
static int alpn_select(SSL *s, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)arg;
    const struct alpn_list *l = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), alpn_ex_index);
    if (l == NULL || l->len == 0)
        return SSL_TLSEXT_ERR_NOACK;
    unsigned char *sel = NULL;
    unsigned char sellen = 0;
    if (SSL_select_next_proto(&sel, &sellen, l->wire, (unsigned)l->len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    *outlen = sellen;
    return SSL_TLSEXT_ERR_OK;
}

int cert_server_ctx_set_alpn(SSL_CTX *ctx, const unsigned char *wire, size_t len)
{
    pthread_once(&alpn_ex_once, alpn_ex_init);
    if (len == 0 || len > sizeof(((struct alpn_list *)0)->wire))
        return -1;
    struct alpn_list *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return -1;
    memcpy(l->wire, wire, len);
    l->len = len;
    SSL_CTX_set_ex_data(ctx, alpn_ex_index, l);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    return 0;
}

void cert_ssl_switch_ctx(SSL *ssl, SSL_CTX *ctx)
{
    /* SSL_set_SSL_CTX takes the certificate and the verify store; the rest of
     * the definition's settings are copied by hand, as nginx does. */
    SSL_set_SSL_CTX(ssl, ctx);
    SSL_set_verify(ssl, SSL_CTX_get_verify_mode(ctx), SSL_CTX_get_verify_callback(ctx));
    SSL_set_verify_depth(ssl, SSL_CTX_get_verify_depth(ctx));
    SSL_clear_options(ssl, SSL_get_options(ssl) & ~SSL_CTX_get_options(ctx));
    SSL_set_options(ssl, SSL_CTX_get_options(ctx));
    SSL_set_min_proto_version(ssl, SSL_CTX_get_min_proto_version(ctx));
    SSL_set_max_proto_version(ssl, SSL_CTX_get_max_proto_version(ctx));
}

static int slot_ex_index = -1;
static pthread_once_t slot_ex_once = PTHREAD_ONCE_INIT;

static void slot_ex_init(void)
{
    slot_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

void cert_ssl_set_session_slot(SSL *ssl, SSL_SESSION **slot)
{
    pthread_once(&slot_ex_once, slot_ex_init);
    SSL_set_ex_data(ssl, slot_ex_index, slot);
}

/* A new session or TLS 1.3 ticket arrived: keep it for the next connection. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    SSL_SESSION **slot = SSL_get_ex_data(ssl, slot_ex_index);
    if (slot == NULL)
        return 0;
    SSL_SESSION_free(*slot);
    *slot = sess;
    return 1; /* we keep the reference */
}

SSL_CTX *cert_client_ctx_new(const struct cert_tls_opts *opts, bool verify, const char *ca_file,
                             char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        set_err(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    if (apply_opts(ctx, opts, err, errlen) != 0)
        goto fail;
    if (verify) {
        int ok = ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                                 : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            set_err(err, errlen, ca_file != NULL ? ca_file : "the system's CA store");
            goto fail;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    pthread_once(&slot_ex_once, slot_ex_init);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

int cert_ssl_client_setup(SSL *ssl, const char *host, bool verify,
                          const struct cert_entry *client_cert)
{
    if (is_ip_literal(host)) {
        if (verify && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
            return -1;
    } else {
        if (SSL_set_tlsext_host_name(ssl, host) != 1)
            return -1;
        if (verify && SSL_set1_host(ssl, host) != 1)
            return -1;
    }
    if (client_cert != NULL && cert_entry_key(client_cert) != NULL) {
        if (SSL_use_certificate(ssl, cert_entry_leaf(client_cert)) != 1 ||
            SSL_use_PrivateKey(ssl, cert_entry_key(client_cert)) != 1)
            return -1;
        STACK_OF(X509) *chain = cert_entry_chain(client_cert);
        for (int j = 0; chain != NULL && j < sk_X509_num(chain); j++)
            if (SSL_add1_chain_cert(ssl, sk_X509_value(chain, j)) != 1)
                return -1;
    }
    return 0;
}

int cert_host_pattern_match(const char *const *patterns, size_t n, const char *host, int port)
{
    int best = -1, best_score = 0;
    size_t hlen = strlen(host);
    const char *dot = strchr(host, '.');
    for (size_t i = 0; i < n; i++) {
        const char *p = patterns[i];
        int score = 0;
        const char *colon = strrchr(p, ':');
        if (colon != NULL && colon[1] != '\0' && strchr(colon + 1, ']') == NULL &&
            strspn(colon + 1, "0123456789") == strlen(colon + 1)) {
            size_t plen = (size_t)(colon - p);
            if (plen == hlen && strncasecmp(p, host, hlen) == 0 && atoi(colon + 1) == port)
                score = 4;
        } else if (strcasecmp(p, host) == 0) {
            score = 3;
        } else if (p[0] == '*' && p[1] == '.' && dot != NULL && strcasecmp(p + 1, dot) == 0) {
            score = 2; /* "*.example.com" covers one label */
        } else if (strcmp(p, "*") == 0) {
            score = 1;
        }
        if (score > best_score) {
            best_score = score;
            best = (int)i;
        }
    }
    return best;
}

bool cert_pins_match(X509 *peer, const char *pins)
{
    if (peer == NULL || pins == NULL)
        return false;
    char id[CERT_ID_LEN + 1];
    char spki[80];
    cert_id_of_x509(peer, id);
    cert_spki_pin(peer, spki, sizeof(spki));
    const char *p = pins;
    while (*p != '\0') {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ", ");
        if (n == 0)
            break;
        if ((n == strlen(id) && strncasecmp(p, id, n) == 0) ||
            (n == strlen(spki) && strncmp(p, spki, n) == 0))
            return true;
        p += n;
    }
    return false;
}
