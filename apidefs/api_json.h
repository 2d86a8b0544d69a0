/* Shared pieces of the JSON front end: diagnostics printed as
 * "file: field: reason", and typed field readers that record them. Used by the
 * definition parser and by the gateway config. */
#ifndef API_JSON_H
#define API_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Problems found while loading, printed as "file: field: reason". */
enum api_severity {
    API_SEV_ERROR,
    API_SEV_WARNING,
};

struct api_diag {
    enum api_severity severity;
    char *file;
    char *field;
    char *reason;
};

struct api_diags {
    struct api_diag *items;
    size_t count;
    size_t cap;
};

void api_diags_add(struct api_diags *d, enum api_severity sev, const char *file, const char *field,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
size_t api_diags_errors(const struct api_diags *d);
void api_diags_free(struct api_diags *d);

/* A string-to-string map entry, as in upstream_certificates. */
struct api_kv {
    char *key;
    char *value;
};

/* The state of one parse: the file being read and where problems go. */
struct api_json_ctx {
    const char *file;
    struct api_diags *diags;
    int errors;
};

void api_json_err(struct api_json_ctx *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void api_json_warn(struct api_json_ctx *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Typed readers: each returns 0 when the field is absent, null or well typed,
 * and -1 after recording an error. A JSON null counts as absent, as in Go. */
json_t *api_json_get(json_t *obj, const char *key);
const char *api_json_type_name(const json_t *v);
int api_json_string(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                    char **out);
int api_json_bool(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                  bool *out);
int api_json_int(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                 int64_t *out);
int api_json_object(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                    json_t **out);
int api_json_string_array(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                          char ***out, size_t *count);
int api_json_string_map(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                        struct api_kv **out, size_t *count);
/* A duration such as "5s" or "250ms", or the integer 0; stored in ms. */
int api_json_duration(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                      int64_t *out_ms);
/* A TLS version: Tyk's numbers (769..772: TLS 1.0..1.3) or "1.2"/"1.3";
 * stored as Tyk's number, 0 when absent. */
int api_json_tls_version(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                         int *out);
/* Records an error for every key of obj not in known (NULL-terminated). */
void api_json_strict_keys(struct api_json_ctx *c, json_t *obj, const char *prefix,
                          const char *const *known);

/* strdup that aborts on exhaustion. */
char *api_xstrdup(const char *s);

#endif
