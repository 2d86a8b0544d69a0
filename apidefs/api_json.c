#include "api_json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_duration.h"

/* ---- diagnostics ---------------------------------------------------------- */

char *api_xstrdup(const char *s)
{
    char *p = strdup(s != NULL ? s : "");
    if (p == NULL) {
        fprintf(stderr, "tcpgate: out of memory\n");
        abort();
    }
    return p;
}

void api_diags_add(struct api_diags *d, enum api_severity sev, const char *file, const char *field,
                   const char *fmt, ...)
{
    if (d == NULL)
        return;
    if (d->count == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        struct api_diag *n = realloc(d->items, cap * sizeof(*n));
        if (n == NULL)
            abort();
        d->items = n;
        d->cap = cap;
    }
    char reason[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    struct api_diag *it = &d->items[d->count++];
    it->severity = sev;
    it->file = api_xstrdup(file);
    it->field = api_xstrdup(field);
    it->reason = api_xstrdup(reason);
}

size_t api_diags_errors(const struct api_diags *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->count; i++)
        n += d->items[i].severity == API_SEV_ERROR;
    return n;
}

void api_diags_free(struct api_diags *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->count; i++) {
        free(d->items[i].file);
        free(d->items[i].field);
        free(d->items[i].reason);
    }
    free(d->items);
    memset(d, 0, sizeof(*d));
}

/* ---- typed field readers ---------------------------------------------------
 * Each reader returns 0 when the field is absent, null or well typed, and -1
 * after recording an error. A JSON null counts as absent, as in Go. */

void api_json_err(struct api_json_ctx *c, const char *field, const char *fmt, ...)
{
    char reason[480];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    api_diags_add(c->diags, API_SEV_ERROR, c->file, field, "%s", reason);
    c->errors++;
}

void api_json_warn(struct api_json_ctx *c, const char *field, const char *fmt, ...)
{
    char reason[480];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    api_diags_add(c->diags, API_SEV_WARNING, c->file, field, "%s", reason);
}

json_t *api_json_get(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

const char *api_json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

/* A string whose bytes stop at a "\u0000" would silently mean something
 * shorter than what was written. */
static bool has_nul(const json_t *v)
{
    return strlen(json_string_value(v)) != json_string_length(v);
}

int api_json_string(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                    char **out)
{
    json_t *v = api_json_get(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_string(v)) {
        api_json_err(c, field, "expected a string, got %s", api_json_type_name(v));
        return -1;
    }
    if (has_nul(v)) {
        api_json_err(c, field, "contains a NUL character");
        return -1;
    }
    free(*out);
    *out = api_xstrdup(json_string_value(v));
    return 0;
}

int api_json_bool(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                  bool *out)
{
    json_t *v = api_json_get(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_boolean(v)) {
        api_json_err(c, field, "expected true or false, got %s", api_json_type_name(v));
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

int api_json_int(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                 int64_t *out)
{
    json_t *v = api_json_get(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_integer(v)) {
        api_json_err(c, field, "expected an integer, got %s", api_json_type_name(v));
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

int api_json_object(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                    json_t **out)
{
    json_t *v = api_json_get(obj, key);
    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_object(v)) {
        api_json_err(c, field, "expected an object, got %s", api_json_type_name(v));
        return -1;
    }
    *out = v;
    return 0;
}

int api_json_string_array(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                          char ***out, size_t *count)
{
    json_t *v = api_json_get(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_array(v)) {
        api_json_err(c, field, "expected an array of strings, got %s", api_json_type_name(v));
        return -1;
    }
    size_t n = json_array_size(v);
    char **arr = calloc(n ? n : 1, sizeof(char *));
    if (arr == NULL)
        abort();
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_string(e) || has_nul(e)) {
            char f[128];
            snprintf(f, sizeof(f), "%s[%zu]", field, i);
            if (json_is_string(e))
                api_json_err(c, f, "contains a NUL character");
            else
                api_json_err(c, f, "expected a string, got %s", api_json_type_name(e));
            for (size_t j = 0; j < i; j++)
                free(arr[j]);
            free(arr);
            return -1;
        }
        arr[i] = api_xstrdup(json_string_value(e));
    }
    *out = arr;
    *count = n;
    return 0;
}

int api_json_string_map(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                        struct api_kv **out, size_t *count)
{
    json_t *v = api_json_get(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_object(v)) {
        api_json_err(c, field, "expected an object of strings, got %s", api_json_type_name(v));
        return -1;
    }
    size_t n = json_object_size(v), i = 0;
    struct api_kv *kv = calloc(n ? n : 1, sizeof(*kv));
    if (kv == NULL)
        abort();
    const char *k;
    json_t *e;
    json_object_foreach(v, k, e)
    {
        if (!json_is_string(e) || has_nul(e) ||
            strlen(k) != json_object_iter_key_len(json_object_key_to_iter(k))) {
            char f[160];
            snprintf(f, sizeof(f), "%s.%s", field, k);
            if (json_is_string(e))
                api_json_err(c, f, "contains a NUL character");
            else
                api_json_err(c, f, "expected a string, got %s", api_json_type_name(e));
            continue;
        }
        kv[i].key = api_xstrdup(k);
        kv[i].value = api_xstrdup(json_string_value(e));
        i++;
    }
    *out = kv;
    *count = i;
    return 0;
}

/* A duration in the extension object: a string such as "5s", or the integer 0. */
int api_json_duration(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                      int64_t *out_ms)
{
    json_t *v = api_json_get(obj, key);
    if (v == NULL)
        return 0;
    if (json_is_integer(v) && json_integer_value(v) == 0) {
        *out_ms = 0;
        return 0;
    }
    if (!json_is_string(v)) {
        api_json_err(c, field, "expected a duration string such as \"5s\" or \"250ms\", got %s",
                     api_json_type_name(v));
        return -1;
    }
    char e[256];
    if (api_duration_parse(json_string_value(v), out_ms, e, sizeof(e)) != 0) {
        api_json_err(c, field, "%s", e);
        return -1;
    }
    return 0;
}

void api_json_strict_keys(struct api_json_ctx *c, json_t *obj, const char *prefix,
                          const char *const *known)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        bool ok = false;
        for (size_t i = 0; known[i] != NULL && !ok; i++)
            ok = strcmp(k, known[i]) == 0;
        if (ok)
            continue;
        char list[1024] = "";
        size_t n = 0;
        for (size_t i = 0; known[i] != NULL && n < sizeof(list); i++)
            n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "", known[i]);
        char f[200];
        snprintf(f, sizeof(f), "%s.%s", prefix, k);
        api_json_err(c, f, "unknown field (known: %s)", list);
    }
}

int api_json_tls_version(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                         int *out)
{
    json_t *v = api_json_get(obj, key);
    if (v == NULL)
        return 0;
    long n = -1;
    if (json_is_integer(v)) {
        n = (long)json_integer_value(v);
    } else if (json_is_string(v)) {
        static const char *const names[] = {"1.0", "1.1", "1.2", "1.3"};
        const char *s = json_string_value(v);
        if (strncasecmp(s, "TLS", 3) == 0)
            s += s[3] == 'v' || s[3] == 'V' ? 4 : 3;
        for (int i = 0; i < 4; i++)
            if (strcmp(s, names[i]) == 0)
                n = 769 + i;
    }
    if (n != 0 && (n < 769 || n > 772)) {
        char shown[64];
        if (json_is_integer(v))
            snprintf(shown, sizeof(shown), "%lld", (long long)json_integer_value(v));
        else
            snprintf(shown, sizeof(shown), "\"%.40s\"",
                     json_is_string(v) ? json_string_value(v) : api_json_type_name(v));
        api_json_err(c, field, "unknown TLS version %s (use \"1.2\", \"1.3\", 771 or 772)", shown);
        return -1;
    }
    *out = (int)n;
    return 0;
}
