#include "cert_store.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

struct cert_entry {
    int refs;
    char id[CERT_ID_LEN + 1];
    char *path;
    STACK_OF(X509) * certs; /* leaf first, then the chain */
    STACK_OF(X509) * chain; /* certs without the leaf; NULL when none */
    EVP_PKEY *key;
    char *keypath; /* the file the key came from; NULL for inline PEM */
};

struct cert_store {
    struct cert_entry **entries;
    size_t count;
    bool strict_keys; /* a key others may read is an error, not a warning */
};

static void openssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (e == 0)
        snprintf(buf, len, "no details");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
}

void cert_id_of_x509(X509 *x, char out[CERT_ID_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    X509_digest(x, EVP_sha256(), md, &n);
    for (unsigned i = 0; i < n && i < CERT_ID_LEN / 2; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[CERT_ID_LEN] = '\0';
}

void cert_spki_pin(X509 *x, char *out, size_t outlen)
{
    unsigned char *der = NULL;
    int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
    unsigned char md[32];
    unsigned char b64[64];
    if (n <= 0) {
        snprintf(out, outlen, "sha256//");
        return;
    }
    EVP_Digest(der, (size_t)n, md, NULL, EVP_sha256(), NULL);
    OPENSSL_free(der);
    EVP_EncodeBlock(b64, md, sizeof(md));
    snprintf(out, outlen, "sha256//%s", b64);
}

static void entry_free(struct cert_entry *e)
{
    if (e == NULL)
        return;
    free(e->path);
    free(e->keypath);
    sk_X509_pop_free(e->certs, X509_free);
    sk_X509_free(e->chain); /* shares the certs' references */
    EVP_PKEY_free(e->key);
    free(e);
}

struct cert_entry *cert_entry_ref(struct cert_entry *e)
{
    if (e != NULL)
        __atomic_fetch_add(&e->refs, 1, __ATOMIC_RELAXED);
    return e;
}

void cert_entry_unref(struct cert_entry *e)
{
    if (e != NULL && __atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) == 0)
        entry_free(e);
}

const char *cert_entry_id(const struct cert_entry *e)
{
    return e->id;
}

const char *cert_entry_path(const struct cert_entry *e)
{
    return e->path;
}

X509 *cert_entry_leaf(const struct cert_entry *e)
{
    return sk_X509_value(e->certs, 0);
}

STACK_OF(X509) * cert_entry_chain(const struct cert_entry *e)
{
    return e->chain;
}

EVP_PKEY *cert_entry_key(const struct cert_entry *e)
{
    return e->key;
}

size_t cert_entry_count(const struct cert_entry *e)
{
    return (size_t)sk_X509_num(e->certs);
}

X509 *cert_entry_at(const struct cert_entry *e, size_t i)
{
    return sk_X509_value(e->certs, (int)i);
}

/* Reads every certificate and the first private key from a BIO. */
static int read_pem(BIO *bio, STACK_OF(X509) * certs, EVP_PKEY **key)
{
    STACK_OF(X509_INFO) *infos = PEM_X509_INFO_read_bio(bio, NULL, NULL, NULL);
    if (infos == NULL)
        return -1;
    for (int i = 0; i < sk_X509_INFO_num(infos); i++) {
        X509_INFO *info = sk_X509_INFO_value(infos, i);
        if (info->x509 != NULL) {
            sk_X509_push(certs, info->x509);
            info->x509 = NULL;
        }
        if (info->x_pkey != NULL && info->x_pkey->dec_pkey != NULL && *key == NULL) {
            *key = info->x_pkey->dec_pkey;
            info->x_pkey->dec_pkey = NULL;
        }
    }
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    return 0;
}

/* A private key that others may read: a warning, or with strict keys an
 * error that refuses the certificate. Returns -1 when refused. */
static int check_key_mode(const char *keypath, bool strict, const char *file, const char *field,
                          struct api_diags *diags)
{
    struct stat st;
    if (stat(keypath, &st) != 0 || (st.st_mode & (S_IRWXG | S_IRWXO)) == 0)
        return 0;
    api_diags_add(diags, strict ? API_SEV_ERROR : API_SEV_WARNING, file, field,
                  "private key %s is readable by others (mode %03o); chmod 600 it", keypath,
                  (unsigned)(st.st_mode & 0777));
    return strict ? -1 : 0;
}

/* The key files tried beside a certificate: FILE.key, then STEM.key. */
static EVP_PKEY *load_key_beside(const char *path, char *found, size_t foundlen)
{
    char cand[2][4096];
    snprintf(cand[0], sizeof(cand[0]), "%s.key", path);
    snprintf(cand[1], sizeof(cand[1]), "%s", path);
    char *dot = strrchr(cand[1], '.');
    char *slash = strrchr(cand[1], '/');
    if (dot != NULL && (slash == NULL || dot > slash) && strlen(dot) < 5)
        strcpy(dot, ".key");
    else
        cand[1][0] = '\0';
    for (int i = 0; i < 2; i++) {
        if (cand[i][0] == '\0')
            continue;
        BIO *bio = BIO_new_file(cand[i], "r");
        if (bio == NULL)
            continue;
        EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        BIO_free(bio);
        if (key != NULL) {
            size_t n = strnlen(cand[i], foundlen - 1);
            memcpy(found, cand[i], n);
            found[n] = '\0';
            return key;
        }
    }
    ERR_clear_error();
    return NULL;
}

/* The checks a certificate that must serve (with its key) passes. */
static int check_key(const struct cert_entry *e, bool strict, const char *file, const char *field,
                     struct api_diags *diags)
{
    if (e->key == NULL) {
        api_diags_add(diags, API_SEV_ERROR, file, field,
                      "%s: no private key in the file, nor in %s.key", e->path, e->path);
        return -1;
    }
    if (X509_check_private_key(sk_X509_value(e->certs, 0), e->key) != 1) {
        ERR_clear_error();
        api_diags_add(diags, API_SEV_ERROR, file, field,
                      "%s: the private key does not match the certificate", e->path);
        return -1;
    }
    return e->keypath != NULL ? check_key_mode(e->keypath, strict, file, field, diags) : 0;
}

static struct cert_entry *entry_from_bio(BIO *bio, const char *path, bool inline_pem, bool need_key,
                                         bool strict, const char *file, const char *field,
                                         struct api_diags *diags)
{
    char reason[256];
    struct cert_entry *e = calloc(1, sizeof(*e));
    if (e == NULL)
        abort();
    e->refs = 1;
    e->path = api_xstrdup(path);
    e->certs = sk_X509_new_null();
    if (e->certs == NULL || read_pem(bio, e->certs, &e->key) != 0) {
        openssl_reason(reason, sizeof(reason));
        api_diags_add(diags, API_SEV_ERROR, file, field, "%s: not a readable PEM: %s", path,
                      reason);
        goto fail;
    }
    if (sk_X509_num(e->certs) == 0) {
        api_diags_add(diags, API_SEV_ERROR, file, field, "%s: no certificate in the file", path);
        goto fail;
    }
    X509 *leaf = sk_X509_value(e->certs, 0);
    cert_id_of_x509(leaf, e->id);
    if (sk_X509_num(e->certs) > 1) {
        e->chain = sk_X509_new_null();
        if (e->chain == NULL)
            abort();
        for (int i = 1; i < sk_X509_num(e->certs); i++)
            sk_X509_push(e->chain, sk_X509_value(e->certs, i));
    }
    char keypath[4096] = "";
    if (e->key != NULL) {
        snprintf(keypath, sizeof(keypath), "%s", inline_pem ? "" : path);
    } else if (!inline_pem) {
        e->key = load_key_beside(path, keypath, sizeof(keypath));
    }
    if (keypath[0] != '\0')
        e->keypath = api_xstrdup(keypath);
    if (need_key && check_key(e, strict, file, field, diags) != 0)
        goto fail;
    if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0)
        api_diags_add(diags, API_SEV_WARNING, file, field, "%s: the certificate has expired", path);
    return e;
fail:
    entry_free(e);
    return NULL;
}

static struct cert_entry *load_path(const char *path, bool need_key, bool strict, const char *file,
                                    const char *field, struct api_diags *diags)
{
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        ERR_clear_error();
        api_diags_add(diags, API_SEV_ERROR, file, field, "%s: cannot read: %s", path,
                      strerror(errno ? errno : ENOENT));
        return NULL;
    }
    struct cert_entry *e = entry_from_bio(bio, path, false, need_key, strict, file, field, diags);
    BIO_free(bio);
    return e;
}

struct cert_entry *cert_entry_load(const char *path, bool need_key, const char *file,
                                   const char *field, struct api_diags *diags)
{
    return load_path(path, need_key, false, file, field, diags);
}

int cert_id_of_file(const char *path, char out[CERT_ID_LEN + 1], char *err, size_t errlen)
{
    struct api_diags d = {0};
    struct cert_entry *e = cert_entry_load(path, false, path, "certificate", &d);
    if (e == NULL) {
        snprintf(err, errlen, "%s", d.count > 0 ? d.items[0].reason : "cannot load");
        api_diags_free(&d);
        return -1;
    }
    memcpy(out, e->id, CERT_ID_LEN + 1);
    cert_entry_unref(e);
    api_diags_free(&d);
    return 0;
}

static int cert_file(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return d->d_name[0] != '.' && n > 4 &&
           (strcmp(d->d_name + n - 4, ".pem") == 0 || strcmp(d->d_name + n - 4, ".crt") == 0);
}

static int byname(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

struct cert_store *cert_store_load(const char *dir, struct api_diags *diags)
{
    struct cert_store *st = calloc(1, sizeof(*st));
    if (st == NULL)
        abort();
    if (dir == NULL || dir[0] == '\0')
        return st;
    struct dirent **names = NULL;
    int n = scandir(dir, &names, cert_file, byname);
    if (n < 0) {
        api_diags_add(diags, API_SEV_ERROR, dir, "certs_path", "cannot read folder: %s",
                      strerror(errno));
        return st;
    }
    st->entries = calloc((size_t)n + 1, sizeof(*st->entries));
    if (st->entries == NULL)
        abort();
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        free(names[i]);
        /* A file without a key is still useful: a CA or a client certificate. */
        struct cert_entry *e = cert_entry_load(path, false, path, "certs_path", diags);
        if (e != NULL)
            st->entries[st->count++] = e;
    }
    free(names);
    return st;
}

void cert_store_free(struct cert_store *st)
{
    if (st == NULL)
        return;
    for (size_t i = 0; i < st->count; i++)
        cert_entry_unref(st->entries[i]);
    free(st->entries);
    free(st);
}

static bool is_id(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        char c = s[n];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return n == CERT_ID_LEN;
}

struct cert_entry *cert_resolve(struct cert_store *st, const char *ref, bool need_key,
                                const char *file, const char *field, struct api_diags *diags)
{
    bool strict = st != NULL && st->strict_keys;
    if (strncmp(ref, "-----BEGIN", 10) == 0) {
        BIO *bio = BIO_new_mem_buf(ref, -1);
        if (bio == NULL)
            abort();
        struct cert_entry *e =
            entry_from_bio(bio, "(inline PEM)", true, need_key, false, file, field, diags);
        BIO_free(bio);
        return e;
    }
    if (is_id(ref)) {
        for (size_t i = 0; st != NULL && i < st->count; i++) {
            if (strcasecmp(st->entries[i]->id, ref) != 0)
                continue;
            struct cert_entry *e = st->entries[i];
            if (need_key && e->key == NULL) {
                api_diags_add(diags, API_SEV_ERROR, file, field,
                              "certificate %s (%s) has no private key", ref, e->path);
                return NULL;
            }
            if (need_key && check_key(e, strict, file, field, diags) != 0)
                return NULL;
            return cert_entry_ref(e);
        }
        api_diags_add(diags, API_SEV_ERROR, file, field,
                      "no certificate with id %s in the certificate folder (certs_path)", ref);
        return NULL;
    }
    return load_path(ref, need_key, strict, file, field, diags);
}

void cert_store_set_strict_keys(struct cert_store *st, bool strict)
{
    st->strict_keys = strict;
}
