/* Test helpers shared by test_cert_store.c and test_cert_tls.c: keys and
 * certificates made in memory with the OpenSSL 3 API, PEM files written into a
 * temporary folder, and the folder removed afterwards. Header only (static
 * inline), so each test program compiles its own copy. */
#ifndef TEST_CERTGEN_H
#define TEST_CERTGEN_H

#include <ftw.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum cg_kind {
    CG_LEAF, /* an end-entity certificate: serverAuth and clientAuth */
    CG_CA,   /* a CA: CA:TRUE, keyCertSign */
};

static inline EVP_PKEY *cg_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (k == NULL)
        abort();
    return k;
}

static inline void cg_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL || X509_add_ext(x, ext, -1) != 1)
        abort();
    X509_EXTENSION_free(ext);
}

/* A certificate for `key` named `cn` (also its DNS SAN), valid from
 * `from_days` to `to_days` around now, signed by issuer (self-signed when
 * NULL). */
static inline X509 *cg_cert(EVP_PKEY *key, const char *cn, enum cg_kind kind, X509 *issuer,
                            EVP_PKEY *issuer_key, long from_days, long to_days)
{
    static long serial = 1000;
    X509 *x = X509_new();
    if (x == NULL)
        abort();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), from_days * 86400L);
    X509_gmtime_adj(X509_getm_notAfter(x), to_days * 86400L);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
    cg_ext(x, issuer, NID_subject_key_identifier, "hash");
    if (issuer != NULL)
        cg_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
    if (kind == CG_CA) {
        cg_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE");
        cg_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        char san[300];
        snprintf(san, sizeof(san), "DNS:%s", cn);
        cg_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE");
        cg_ext(x, issuer, NID_key_usage, "critical,digitalSignature,keyEncipherment");
        cg_ext(x, issuer, NID_ext_key_usage, "serverAuth,clientAuth");
        cg_ext(x, issuer, NID_subject_alt_name, san);
    }
    if (X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()) <= 0)
        abort();
    return x;
}

/* A self-signed leaf valid for a year. */
static inline X509 *cg_self_signed(EVP_PKEY *key, const char *cn)
{
    return cg_cert(key, cn, CG_LEAF, NULL, NULL, -1, 365);
}

/* Writes certs (in order) then key (when not NULL) as PEM, with `mode`. */
static inline void cg_write(const char *path, X509 *const *certs, size_t n, EVP_PKEY *key,
                            mode_t mode)
{
    BIO *b = BIO_new_file(path, "w");
    if (b == NULL)
        abort();
    for (size_t i = 0; i < n; i++)
        if (PEM_write_bio_X509(b, certs[i]) != 1)
            abort();
    if (key != NULL && PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) != 1)
        abort();
    BIO_free(b);
    if (chmod(path, mode) != 0)
        abort();
}

static inline void cg_write_text(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        abort();
    fputs(text, f);
    fclose(f);
    if (chmod(path, mode) != 0)
        abort();
}

/* PEM text of certs then key, as a malloc'd string. */
static inline char *cg_pem_text(X509 *const *certs, size_t n, EVP_PKEY *key)
{
    BIO *b = BIO_new(BIO_s_mem());
    for (size_t i = 0; i < n; i++)
        PEM_write_bio_X509(b, certs[i]);
    if (key != NULL)
        PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL);
    char *data = NULL;
    long len = BIO_get_mem_data(b, &data);
    char *s = malloc((size_t)len + 1);
    if (s == NULL)
        abort();
    memcpy(s, data, (size_t)len);
    s[len] = '\0';
    BIO_free(b);
    return s;
}

/* Lowercase hex SHA-256 of the certificate's DER, computed independently of
 * the library under test. */
static inline void cg_der_sha256_hex(X509 *x, char out[65])
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (n <= 0 || EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        abort();
    OPENSSL_free(der);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

/* "sha256//" + base64(SHA-256(DER of the SubjectPublicKeyInfo of key)). */
static inline void cg_spki_pin(EVP_PKEY *key, char out[80])
{
    unsigned char *der = NULL;
    int n = i2d_PUBKEY(key, &der);
    unsigned char md[32];
    unsigned char b64[64];
    if (n <= 0 || EVP_Digest(der, (size_t)n, md, NULL, EVP_sha256(), NULL) != 1)
        abort();
    OPENSSL_free(der);
    EVP_EncodeBlock(b64, md, 32);
    snprintf(out, 80, "sha256//%s", (const char *)b64);
}

static inline int cg_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

/* Creates a fresh temporary folder; path must hold at least 64 bytes. */
static inline void cg_mkdtemp(char *path, size_t len)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(path, len, "%s/tcpgate-unit-XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
    if (mkdtemp(path) == NULL)
        abort();
}

static inline void cg_rmtree(const char *path)
{
    nftw(path, cg_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
