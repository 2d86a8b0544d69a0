/* Unit tests for certs/cert_store.c: PEM files, certificate ids, keys beside
 * certificates, diagnostics, the certificate folder and SPKI pins.
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
#include <sys/stat.h>
#include <cmocka.h>

#include "cert_store.h"
#include "certgen.h"

/* ---- fixtures ----------------------------------------------------------------- */

struct fx {
    char dir[256];
    EVP_PKEY *key, *key2, *ca_key;
    X509 *cert;    /* self-signed "leaf.example", key */
    X509 *cert2;   /* self-signed "other.example", key2 */
    X509 *ca;      /* "Test CA", ca_key */
    X509 *issued;  /* "issued.example" signed by ca, key */
    X509 *expired; /* "old.example", key, expired yesterday */
    struct api_diags d;
};

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    cg_mkdtemp(fx->dir, sizeof(fx->dir));
    fx->key = cg_key();
    fx->key2 = cg_key();
    fx->ca_key = cg_key();
    fx->cert = cg_self_signed(fx->key, "leaf.example");
    fx->cert2 = cg_self_signed(fx->key2, "other.example");
    fx->ca = cg_cert(fx->ca_key, "Test CA", CG_CA, NULL, NULL, -1, 3650);
    fx->issued = cg_cert(fx->key, "issued.example", CG_LEAF, fx->ca, fx->ca_key, -1, 365);
    fx->expired = cg_cert(fx->key, "old.example", CG_LEAF, NULL, NULL, -30, -1);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    cg_rmtree(fx->dir);
    X509_free(fx->cert);
    X509_free(fx->cert2);
    X509_free(fx->ca);
    X509_free(fx->issued);
    X509_free(fx->expired);
    EVP_PKEY_free(fx->key);
    EVP_PKEY_free(fx->key2);
    EVP_PKEY_free(fx->ca_key);
    api_diags_free(&fx->d);
    free(fx);
    return 0;
}

static const char *path_in(const struct fx *fx, const char *name)
{
    static char paths[4][512];
    static int turn;
    char *p = paths[turn++ % 4];
    snprintf(p, sizeof(paths[0]), "%s/%s", fx->dir, name);
    return p;
}

static size_t count(const struct api_diags *d, enum api_severity sev)
{
    size_t n = 0;
    for (size_t i = 0; i < d->count; i++)
        n += d->items[i].severity == sev;
    return n;
}

/* The first diagnostic of `sev` whose reason holds every given string. */
static const struct api_diag *find_diag(const struct api_diags *d, enum api_severity sev,
                                        const char *a, const char *b)
{
    for (size_t i = 0; i < d->count; i++) {
        const struct api_diag *x = &d->items[i];
        if (x->severity == sev && strstr(x->reason, a) != NULL &&
            (b == NULL || strstr(x->reason, b) != NULL))
            return x;
    }
    return NULL;
}

static void dump(const struct api_diags *d)
{
    for (size_t i = 0; i < d->count; i++)
        print_message("  %s: %s: %s: %s\n",
                      d->items[i].severity == API_SEV_ERROR ? "error" : "warning", d->items[i].file,
                      d->items[i].field, d->items[i].reason);
}

static void expect_diag(const struct api_diags *d, enum api_severity sev, const char *a,
                        const char *b)
{
    if (find_diag(d, sev, a, b) == NULL) {
        dump(d);
        fail_msg("no %s with \"%s\"%s%s", sev == API_SEV_ERROR ? "error" : "warning", a,
                 b ? " and " : "", b ? b : "");
    }
}

static void expect_clean(const struct api_diags *d)
{
    if (d->count != 0) {
        dump(d);
        fail_msg("%zu unexpected diagnostics", d->count);
    }
}

/* ---- ids and pins ------------------------------------------------------------------ */

static void test_id_is_sha256_of_der(void **state)
{
    struct fx *fx = *state;
    X509 *certs[] = {fx->cert, fx->cert2, fx->ca, fx->issued};
    for (size_t i = 0; i < 4; i++) {
        char want[65], got[CERT_ID_LEN + 1];
        cg_der_sha256_hex(certs[i], want);
        memset(got, 'X', sizeof(got));
        cert_id_of_x509(certs[i], got);
        assert_string_equal(got, want);
    }
    char a[CERT_ID_LEN + 1], b[CERT_ID_LEN + 1];
    cert_id_of_x509(fx->cert, a);
    cert_id_of_x509(fx->cert2, b);
    assert_string_not_equal(a, b);
}

static void test_id_of_file(void **state)
{
    struct fx *fx = *state;
    X509 *chain[] = {fx->issued, fx->ca};
    cg_write(path_in(fx, "chain.pem"), chain, 2, NULL, 0644);
    char id[CERT_ID_LEN + 1], want[65], err[256] = "";
    assert_int_equal(cert_id_of_file(path_in(fx, "chain.pem"), id, err, sizeof(err)), 0);
    cg_der_sha256_hex(fx->issued, want); /* the first certificate's */
    assert_string_equal(id, want);

    err[0] = '\0';
    assert_int_equal(cert_id_of_file(path_in(fx, "missing.pem"), id, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "missing.pem"));
    cg_write_text(path_in(fx, "junk.pem"), "not a certificate\n", 0644);
    err[0] = '\0';
    assert_int_equal(cert_id_of_file(path_in(fx, "junk.pem"), id, err, sizeof(err)), -1);
    assert_true(err[0] != '\0');
}

static void test_spki_pin(void **state)
{
    struct fx *fx = *state;
    struct {
        X509 *x;
        EVP_PKEY *k;
    } cases[] = {
        {fx->cert, fx->key}, {fx->cert2, fx->key2}, {fx->issued, fx->key}, {fx->ca, fx->ca_key}};
    for (size_t i = 0; i < 4; i++) {
        char want[80], got[128];
        cg_spki_pin(cases[i].k, want);
        cert_spki_pin(cases[i].x, got, sizeof(got));
        assert_string_equal(got, want);
        assert_int_equal(strlen(got), 8 + 44);
    }
    /* same key, same pin; another key, another pin */
    char a[128], b[128], c[128];
    cert_spki_pin(fx->cert, a, sizeof(a));
    cert_spki_pin(fx->issued, b, sizeof(b));
    cert_spki_pin(fx->cert2, c, sizeof(c));
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    /* an RSA key as well */
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    assert_non_null(rsa);
    X509 *x = cg_self_signed(rsa, "rsa.example");
    char want[80], got[128];
    cg_spki_pin(rsa, want);
    cert_spki_pin(x, got, sizeof(got));
    assert_string_equal(got, want);
    X509_free(x);
    EVP_PKEY_free(rsa);
}

/* ---- loading one file ---------------------------------------------------------------- */

static void test_key_in_same_file(void **state)
{
    struct fx *fx = *state;
    const char *p = path_in(fx, "leaf.pem");
    cg_write(p, &fx->cert, 1, fx->key, 0600);
    struct cert_entry *e = cert_entry_load(p, true, "def.json", "certificates", &fx->d);
    expect_clean(&fx->d);
    assert_non_null(e);
    char want[65];
    cg_der_sha256_hex(fx->cert, want);
    assert_string_equal(cert_entry_id(e), want);
    assert_string_equal(cert_entry_path(e), p);
    assert_int_equal(X509_cmp(cert_entry_leaf(e), fx->cert), 0);
    assert_non_null(cert_entry_key(e));
    assert_int_equal(EVP_PKEY_eq(cert_entry_key(e), fx->key), 1);
    assert_null(cert_entry_chain(e));
    assert_int_equal(cert_entry_count(e), 1);
    assert_ptr_equal(cert_entry_at(e, 0), cert_entry_leaf(e));
    /* references */
    assert_ptr_equal(cert_entry_ref(e), e);
    cert_entry_unref(e);
    cert_entry_unref(e);
}

static void test_key_first_in_file(void **state)
{
    struct fx *fx = *state;
    /* The key before the certificate (as some tools write it). */
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, fx->key, NULL, NULL, 0, NULL, NULL);
    PEM_write_bio_X509(b, fx->cert);
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    char *text = strndup(data, (size_t)n);
    BIO_free(b);
    const char *p = path_in(fx, "keyfirst.pem");
    cg_write_text(p, text, 0600);
    free(text);
    struct cert_entry *e = cert_entry_load(p, true, "def.json", "certificates", &fx->d);
    expect_clean(&fx->d);
    assert_non_null(e);
    assert_int_equal(X509_cmp(cert_entry_leaf(e), fx->cert), 0);
    cert_entry_unref(e);
}

static void test_key_beside_file_key(void **state)
{
    struct fx *fx = *state;
    /* FILE.key: leaf.pem.key */
    const char *p = path_in(fx, "a.pem");
    cg_write(p, &fx->cert, 1, NULL, 0644);
    cg_write(path_in(fx, "a.pem.key"), NULL, 0, fx->key, 0600);
    struct cert_entry *e = cert_entry_load(p, true, "def.json", "certificates", &fx->d);
    expect_clean(&fx->d);
    assert_non_null(e);
    assert_int_equal(EVP_PKEY_eq(cert_entry_key(e), fx->key), 1);
    cert_entry_unref(e);
}

static void test_key_beside_stem_key(void **state)
{
    struct fx *fx = *state;
    /* STEM.key for STEM.crt and STEM.pem */
    static const char *const names[][2] = {{"b.crt", "b.key"}, {"c.pem", "c.key"}};
    for (int i = 0; i < 2; i++) {
        const char *p = path_in(fx, names[i][0]);
        cg_write(p, &fx->cert, 1, NULL, 0644);
        cg_write(path_in(fx, names[i][1]), NULL, 0, fx->key, 0600);
        struct cert_entry *e = cert_entry_load(p, true, "def.json", "certificates", &fx->d);
        expect_clean(&fx->d);
        assert_non_null(e);
        assert_int_equal(EVP_PKEY_eq(cert_entry_key(e), fx->key), 1);
        cert_entry_unref(e);
    }
    /* FILE.key wins over STEM.key */
    const char *p = path_in(fx, "d.pem");
    cg_write(p, &fx->cert, 1, NULL, 0644);
    cg_write(path_in(fx, "d.pem.key"), NULL, 0, fx->key, 0600);
    cg_write(path_in(fx, "d.key"), NULL, 0, fx->key2, 0600);
    struct cert_entry *e = cert_entry_load(p, true, "def.json", "certificates", &fx->d);
    expect_clean(&fx->d);
    assert_non_null(e);
    assert_int_equal(EVP_PKEY_eq(cert_entry_key(e), fx->key), 1);
    cert_entry_unref(e);
}

static void test_chain_kept(void **state)
{
    struct fx *fx = *state;
    const char *p = path_in(fx, "chain.pem");
    X509 *chain[] = {fx->issued, fx->ca};
    cg_write(p, chain, 2, fx->key, 0600);
    struct cert_entry *e = cert_entry_load(p, true, "def.json", "certificates", &fx->d);
    expect_clean(&fx->d);
    assert_non_null(e);
    char want[65];
    cg_der_sha256_hex(fx->issued, want); /* the id is the leaf's */
    assert_string_equal(cert_entry_id(e), want);
    assert_int_equal(X509_cmp(cert_entry_leaf(e), fx->issued), 0);
    STACK_OF(X509) *ch = cert_entry_chain(e);
    assert_non_null(ch);
    assert_int_equal(sk_X509_num(ch), 1);
    assert_int_equal(X509_cmp(sk_X509_value(ch, 0), fx->ca), 0);
    assert_int_equal(cert_entry_count(e), 2);
    assert_int_equal(X509_cmp(cert_entry_at(e, 1), fx->ca), 0);
    cert_entry_unref(e);
}

static void test_missing_key(void **state)
{
    struct fx *fx = *state;
    const char *p = path_in(fx, "nokey.pem");
    cg_write(p, &fx->cert, 1, NULL, 0644);
    struct cert_entry *e = cert_entry_load(p, true, "def.json", "certificates", &fx->d);
    assert_null(e);
    expect_diag(&fx->d, API_SEV_ERROR, p, "private key");
    const struct api_diag *x = find_diag(&fx->d, API_SEV_ERROR, p, NULL);
    assert_string_equal(x->file, "def.json");
    assert_string_equal(x->field, "certificates");
    api_diags_free(&fx->d);

    /* Without need_key the same file is fine (a CA, a client certificate). */
    e = cert_entry_load(p, false, "def.json", "certificates", &fx->d);
    expect_clean(&fx->d);
    assert_non_null(e);
    assert_null(cert_entry_key(e));
    cert_entry_unref(e);
}

static void test_key_mismatch(void **state)
{
    struct fx *fx = *state;
    /* in the same file */
    const char *p = path_in(fx, "mismatch.pem");
    cg_write(p, &fx->cert, 1, fx->key2, 0600);
    assert_null(cert_entry_load(p, true, "def.json", "certificates", &fx->d));
    expect_diag(&fx->d, API_SEV_ERROR, "does not match", p);
    assert_int_equal(api_diags_errors(&fx->d), 1);
    api_diags_free(&fx->d);
    /* beside */
    p = path_in(fx, "mm2.pem");
    cg_write(p, &fx->cert, 1, NULL, 0644);
    cg_write(path_in(fx, "mm2.pem.key"), NULL, 0, fx->key2, 0600);
    assert_null(cert_entry_load(p, true, "def.json", "certificates", &fx->d));
    expect_diag(&fx->d, API_SEV_ERROR, "does not match", p);
}

static void test_expired_is_a_warning(void **state)
{
    struct fx *fx = *state;
    const char *p = path_in(fx, "old.pem");
    cg_write(p, &fx->expired, 1, fx->key, 0600);
    struct cert_entry *e = cert_entry_load(p, true, "def.json", "certificates", &fx->d);
    assert_non_null(e);
    assert_int_equal(api_diags_errors(&fx->d), 0);
    assert_int_equal(count(&fx->d, API_SEV_WARNING), 1);
    expect_diag(&fx->d, API_SEV_WARNING, "expired", p);
    cert_entry_unref(e);
    api_diags_free(&fx->d);
    /* A certificate not yet valid has not expired. */
    X509 *future = cg_cert(fx->key, "future.example", CG_LEAF, NULL, NULL, 10, 20);
    p = path_in(fx, "future.pem");
    cg_write(p, &future, 1, fx->key, 0600);
    X509_free(future);
    e = cert_entry_load(p, true, "def.json", "certificates", &fx->d);
    assert_non_null(e);
    assert_null(find_diag(&fx->d, API_SEV_WARNING, "expired", NULL));
    cert_entry_unref(e);
}

static void test_key_readable_by_others(void **state)
{
    struct fx *fx = *state;
    /* a key beside, world readable */
    const char *p = path_in(fx, "open.pem");
    const char *k = path_in(fx, "open.pem.key");
    cg_write(p, &fx->cert, 1, NULL, 0644);
    cg_write(k, NULL, 0, fx->key, 0644);
    struct cert_entry *e = cert_entry_load(p, true, "def.json", "certificates", &fx->d);
    assert_non_null(e);
    assert_int_equal(api_diags_errors(&fx->d), 0);
    expect_diag(&fx->d, API_SEV_WARNING, "readable by others", k);
    cert_entry_unref(e);
    api_diags_free(&fx->d);

    /* the key in the certificate's file, group readable */
    p = path_in(fx, "group.pem");
    cg_write(p, &fx->cert, 1, fx->key, 0640);
    e = cert_entry_load(p, true, "def.json", "certificates", &fx->d);
    assert_non_null(e);
    assert_int_equal(api_diags_errors(&fx->d), 0);
    expect_diag(&fx->d, API_SEV_WARNING, "readable by others", p);
    cert_entry_unref(e);
    api_diags_free(&fx->d);

    /* 0600 (and 0400) is quiet */
    chmod(p, 0400);
    e = cert_entry_load(p, true, "def.json", "certificates", &fx->d);
    assert_non_null(e);
    expect_clean(&fx->d);
    cert_entry_unref(e);
}

static void test_unreadable_and_not_pem(void **state)
{
    struct fx *fx = *state;
    const char *p = path_in(fx, "does-not-exist.pem");
    assert_null(cert_entry_load(p, false, "def.json", "certificates", &fx->d));
    expect_diag(&fx->d, API_SEV_ERROR, p, NULL);
    api_diags_free(&fx->d);

    /* a folder is not a certificate */
    assert_null(cert_entry_load(fx->dir, false, "def.json", "certificates", &fx->d));
    assert_int_equal(api_diags_errors(&fx->d), 1);
    api_diags_free(&fx->d);

    static const char *const junk[] = {
        "hello world\n", "",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n", /* cut short */
    };
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "junk%zu.pem", i);
        p = path_in(fx, name);
        cg_write_text(p, junk[i], 0644);
        assert_null(cert_entry_load(p, false, "def.json", "certificates", &fx->d));
        expect_diag(&fx->d, API_SEV_ERROR, p, NULL);
        assert_int_equal(api_diags_errors(&fx->d), 1);
        api_diags_free(&fx->d);
    }

    /* a key alone is not a certificate */
    p = path_in(fx, "onlykey.pem");
    cg_write(p, NULL, 0, fx->key, 0600);
    assert_null(cert_entry_load(p, true, "def.json", "certificates", &fx->d));
    expect_diag(&fx->d, API_SEV_ERROR, p, "no certificate");
}

/* ---- the certificate folder and cert_resolve ------------------------------------------- */

static void upper(char *s)
{
    for (; *s; s++)
        if (*s >= 'a' && *s <= 'f')
            *s = (char)(*s - 'a' + 'A');
}

static void test_store_and_resolve(void **state)
{
    struct fx *fx = *state;
    char store_dir[512];
    snprintf(store_dir, sizeof(store_dir), "%s/certs", fx->dir);
    assert_int_equal(mkdir(store_dir, 0700), 0);
    char p[600];
    snprintf(p, sizeof(p), "%s/one.pem", store_dir);
    cg_write(p, &fx->cert, 1, fx->key, 0600);
    snprintf(p, sizeof(p), "%s/ca.crt", store_dir);
    cg_write(p, &fx->ca, 1, NULL, 0644);
    snprintf(p, sizeof(p), "%s/two.pem", store_dir);
    cg_write(p, &fx->cert2, 1, NULL, 0644);
    snprintf(p, sizeof(p), "%s/two.key", store_dir);
    cg_write(p, NULL, 0, fx->key2, 0600);
    snprintf(p, sizeof(p), "%s/README.txt", store_dir); /* ignored */
    cg_write_text(p, "certificates\n", 0644);
    snprintf(p, sizeof(p), "%s/.hidden.pem", store_dir); /* ignored */
    cg_write_text(p, "junk\n", 0644);
    snprintf(p, sizeof(p), "%s/broken.pem", store_dir); /* reported, skipped */
    cg_write_text(p, "junk\n", 0644);

    struct cert_store *st = cert_store_load(store_dir, &fx->d);
    assert_non_null(st);
    assert_int_equal(api_diags_errors(&fx->d), 1);
    expect_diag(&fx->d, API_SEV_ERROR, "broken.pem", NULL);
    assert_null(find_diag(&fx->d, API_SEV_ERROR, ".hidden.pem", NULL));
    api_diags_free(&fx->d);

    char id1[65], id2[65], idca[65];
    cg_der_sha256_hex(fx->cert, id1);
    cg_der_sha256_hex(fx->cert2, id2);
    cg_der_sha256_hex(fx->ca, idca);

    /* by id, lowercase and uppercase */
    struct cert_entry *e = cert_resolve(st, id1, true, "def.json", "certificates", &fx->d);
    expect_clean(&fx->d);
    assert_non_null(e);
    assert_string_equal(cert_entry_id(e), id1);
    assert_int_equal(EVP_PKEY_eq(cert_entry_key(e), fx->key), 1);
    char up[65];
    memcpy(up, id1, sizeof(up));
    upper(up);
    struct cert_entry *e2 = cert_resolve(st, up, true, "def.json", "certificates", &fx->d);
    expect_clean(&fx->d);
    assert_ptr_equal(e2, e); /* the same entry, another reference */
    cert_entry_unref(e2);
    cert_entry_unref(e);

    /* a key beside a certificate in the folder (STEM.key) */
    e = cert_resolve(st, id2, true, "def.json", "certificates", &fx->d);
    expect_clean(&fx->d);
    assert_non_null(e);
    assert_int_equal(EVP_PKEY_eq(cert_entry_key(e), fx->key2), 1);
    cert_entry_unref(e);

    /* a CA without a key: fine without need_key, an error with it */
    e = cert_resolve(st, idca, false, "def.json", "client_certificates", &fx->d);
    expect_clean(&fx->d);
    assert_non_null(e);
    assert_int_equal(X509_cmp(cert_entry_leaf(e), fx->ca), 0);
    cert_entry_unref(e);
    assert_null(cert_resolve(st, idca, true, "def.json", "certificates", &fx->d));
    expect_diag(&fx->d, API_SEV_ERROR, idca, "private key");
    api_diags_free(&fx->d);

    /* an unknown id */
    static const char unknown[] =
        "0000000000000000000000000000000000000000000000000000000000000000";
    assert_null(cert_resolve(st, unknown, false, "def.json", "certificates", &fx->d));
    expect_diag(&fx->d, API_SEV_ERROR, unknown, "certs_path");
    const struct api_diag *x = find_diag(&fx->d, API_SEV_ERROR, unknown, NULL);
    assert_string_equal(x->file, "def.json");
    assert_string_equal(x->field, "certificates");
    api_diags_free(&fx->d);

    /* by path */
    snprintf(p, sizeof(p), "%s/one.pem", store_dir);
    e = cert_resolve(st, p, true, "def.json", "certificates", &fx->d);
    expect_clean(&fx->d);
    assert_non_null(e);
    assert_string_equal(cert_entry_id(e), id1);
    cert_entry_unref(e);
    /* a path outside the folder works too, and without a store */
    const char *outside = path_in(fx, "outside.pem");
    cg_write(outside, &fx->cert2, 1, fx->key2, 0600);
    e = cert_resolve(NULL, outside, true, "def.json", "certificates", &fx->d);
    expect_clean(&fx->d);
    assert_non_null(e);
    assert_string_equal(cert_entry_id(e), id2);
    cert_entry_unref(e);

    /* by inline PEM: certificate and key, certificate only */
    char *pem = cg_pem_text(&fx->cert, 1, fx->key);
    e = cert_resolve(st, pem, true, "def.json", "certificates", &fx->d);
    expect_clean(&fx->d);
    assert_non_null(e);
    assert_string_equal(cert_entry_id(e), id1);
    assert_int_equal(EVP_PKEY_eq(cert_entry_key(e), fx->key), 1);
    cert_entry_unref(e);
    free(pem);
    pem = cg_pem_text(&fx->ca, 1, NULL);
    e = cert_resolve(st, pem, false, "def.json", "client_certificates", &fx->d);
    expect_clean(&fx->d);
    assert_non_null(e);
    assert_string_equal(cert_entry_id(e), idca);
    cert_entry_unref(e);
    assert_null(cert_resolve(st, pem, true, "def.json", "certificates", &fx->d));
    expect_diag(&fx->d, API_SEV_ERROR, "private key", NULL);
    api_diags_free(&fx->d);
    free(pem);
    /* inline PEM with a key that does not match */
    pem = cg_pem_text(&fx->cert, 1, fx->key2);
    assert_null(cert_resolve(st, pem, true, "def.json", "certificates", &fx->d));
    expect_diag(&fx->d, API_SEV_ERROR, "does not match", NULL);
    api_diags_free(&fx->d);
    free(pem);

    cert_store_free(st);
}

static void test_resolve_id_checks_key(void **state)
{
    struct fx *fx = *state;
    /* A certificate in the folder with a key beside it that is not its key:
     * asking for it by id with need_key must say so, as asking by path does. */
    char store_dir[512], p[600];
    snprintf(store_dir, sizeof(store_dir), "%s/certs", fx->dir);
    assert_int_equal(mkdir(store_dir, 0700), 0);
    snprintf(p, sizeof(p), "%s/wrong.pem", store_dir);
    cg_write(p, &fx->cert, 1, NULL, 0644);
    snprintf(p, sizeof(p), "%s/wrong.key", store_dir);
    cg_write(p, NULL, 0, fx->key2, 0600);
    struct cert_store *st = cert_store_load(store_dir, &fx->d);
    api_diags_free(&fx->d);
    char id[65];
    cg_der_sha256_hex(fx->cert, id);
    struct cert_entry *e = cert_resolve(st, id, true, "def.json", "certificates", &fx->d);
    if (e != NULL)
        cert_entry_unref(e);
    cert_store_free(st);
    assert_null(e);
    expect_diag(&fx->d, API_SEV_ERROR, "does not match", NULL);
}

static void test_store_empty_and_missing(void **state)
{
    struct fx *fx = *state;
    char id[65];
    cg_der_sha256_hex(fx->cert, id);
    struct cert_store *st = cert_store_load(NULL, &fx->d);
    assert_non_null(st);
    expect_clean(&fx->d);
    assert_null(cert_resolve(st, id, false, "def.json", "certificates", &fx->d));
    expect_diag(&fx->d, API_SEV_ERROR, id, "certs_path");
    cert_store_free(st);
    api_diags_free(&fx->d);

    st = cert_store_load("", &fx->d);
    assert_non_null(st);
    expect_clean(&fx->d);
    cert_store_free(st);

    /* a folder that is not there */
    const char *none = path_in(fx, "no-such-folder");
    st = cert_store_load(none, &fx->d);
    assert_non_null(st);
    expect_diag(&fx->d, API_SEV_ERROR, "cannot read", NULL);
    cert_store_free(st);
    cert_store_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_id_is_sha256_of_der, setup, teardown),
        cmocka_unit_test_setup_teardown(test_id_of_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spki_pin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_in_same_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_first_in_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_beside_file_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_beside_stem_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chain_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_is_a_warning, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_readable_by_others, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unreadable_and_not_pem, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_and_resolve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolve_id_checks_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_empty_and_missing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
