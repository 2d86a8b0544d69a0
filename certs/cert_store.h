/* Certificates and keys from PEM files.
 *
 * A `certificates` entry in a definition is a path to a PEM file, an inline PEM,
 * or an id: the lowercase hex SHA-256 of the certificate's DER (what Tyk's ids
 * are built on) naming a file in the gateway's certificate folder (`certs_path`).
 * A PEM holds the certificate first, then any chain; the key sits in the same
 * file or beside it as FILE.key (or STEM.key for STEM.pem / STEM.crt).
 *
 * Entries are reference counted and immutable once loaded, so TLS contexts on
 * every worker may share them. */
#ifndef CERT_STORE_H
#define CERT_STORE_H

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stddef.h>

#include "api_json.h"

#define CERT_ID_LEN 64

struct cert_entry;
struct cert_store;

/* The id of a certificate: lowercase hex SHA-256 of its DER. */
void cert_id_of_x509(X509 *x, char out[CERT_ID_LEN + 1]);

/* The id of the first certificate in a PEM file (`tcpgate cert-id FILE`). */
int cert_id_of_file(const char *path, char out[CERT_ID_LEN + 1], char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Loads a PEM file. With need_key, a missing or mismatching key is an error.
 * Warnings (expired, key readable by others) and errors go to diags under
 * (file, field), the definition or config that asked for it. */
struct cert_entry *cert_entry_load(const char *path, bool need_key, const char *file,
                                   const char *field, struct api_diags *diags)
    __attribute__((warn_unused_result));

struct cert_entry *cert_entry_ref(struct cert_entry *e);
void cert_entry_unref(struct cert_entry *e);

const char *cert_entry_id(const struct cert_entry *e);
const char *cert_entry_path(const struct cert_entry *e);
X509 *cert_entry_leaf(const struct cert_entry *e);
STACK_OF(X509) * cert_entry_chain(const struct cert_entry *e); /* may be NULL */
EVP_PKEY *cert_entry_key(const struct cert_entry *e);          /* may be NULL */
/* Every certificate in the file, leaf first (for CA bundles). */
size_t cert_entry_count(const struct cert_entry *e);
X509 *cert_entry_at(const struct cert_entry *e, size_t i);

/* Loads every *.pem and *.crt in dir (NULL or "" gives an empty store),
 * indexed by id. Bad files are reported and skipped. */
struct cert_store *cert_store_load(const char *dir, struct api_diags *diags)
    __attribute__((warn_unused_result));
void cert_store_free(struct cert_store *st);

/* From now on cert_resolve refuses a private key that group or others may
 * read (an error rather than a warning). */
void cert_store_set_strict_keys(struct cert_store *st, bool strict);

/* Resolves a `certificates` entry: an id (64 hex digits) looked up in the
 * store, an inline PEM, or a path. Returns a new reference or NULL after a
 * diagnostic on (file, field). */
struct cert_entry *cert_resolve(struct cert_store *st, const char *ref, bool need_key,
                                const char *file, const char *field, struct api_diags *diags)
    __attribute__((warn_unused_result));

/* sha256//BASE64 of the certificate's SubjectPublicKeyInfo, as curl writes pins. */
void cert_spki_pin(X509 *x, char *out, size_t outlen);

#endif
