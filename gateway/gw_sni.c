#include "gw_sni.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 255

struct slot {
    char *key; /* lowercase; "*.x" for wildcards */
    void *value;
};

struct gw_sni {
    struct slot *slots;
    size_t mask;
    size_t count;
    void *fallback;
    bool has_fallback;
};

static uint64_t hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

#define TOO_LONG ((size_t)-1)

/* Lowercases a name into buf and drops one trailing dot; returns its length,
 * or TOO_LONG for a name too long to be a host name (it matches nothing). */
static size_t normalize(const char *name, char buf[NAME_MAX_LEN + 1])
{
    size_t n = strnlen(name, NAME_MAX_LEN + 2);
    if (n > NAME_MAX_LEN && !(n == NAME_MAX_LEN + 1 && name[NAME_MAX_LEN] == '.')) {
        buf[0] = '\0';
        return TOO_LONG;
    }
    if (n > NAME_MAX_LEN)
        n = NAME_MAX_LEN; /* 255 characters and a trailing dot */
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        buf[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    if (n > 0 && buf[n - 1] == '.')
        n--;
    buf[n] = '\0';
    return n;
}

struct gw_sni *gw_sni_new(size_t expected)
{
    struct gw_sni *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    size_t size = 16;
    while (size < expected * 2)
        size *= 2;
    t->slots = calloc(size, sizeof(*t->slots));
    if (t->slots == NULL) {
        free(t);
        return NULL;
    }
    t->mask = size - 1;
    return t;
}

void gw_sni_free(struct gw_sni *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i <= t->mask; i++)
        free(t->slots[i].key);
    free(t->slots);
    free(t);
}

static struct slot *find(const struct gw_sni *t, const char *key, size_t n)
{
    for (size_t i = hash(key, n) & t->mask;; i = (i + 1) & t->mask) {
        struct slot *s = &t->slots[i];
        if (s->key == NULL || (strlen(s->key) == n && memcmp(s->key, key, n) == 0))
            return s;
    }
}

static int grow(struct gw_sni *t)
{
    size_t size = (t->mask + 1) * 2;
    struct slot *old = t->slots;
    size_t oldsize = t->mask + 1;
    t->slots = calloc(size, sizeof(*t->slots));
    if (t->slots == NULL) {
        t->slots = old;
        return -1;
    }
    t->mask = size - 1;
    for (size_t i = 0; i < oldsize; i++)
        if (old[i].key != NULL)
            *find(t, old[i].key, strlen(old[i].key)) = old[i];
    free(old);
    return 0;
}

int gw_sni_add(struct gw_sni *t, const char *domain, void *value)
{
    char key[NAME_MAX_LEN + 1];
    size_t n = normalize(domain, key);
    if (n == TOO_LONG)
        return -1;
    if (n == 0) {
        if (t->has_fallback)
            return -1;
        t->fallback = value;
        t->has_fallback = true;
        return 0;
    }
    if ((t->count + 1) * 2 > t->mask + 1 && grow(t) != 0)
        return -1;
    struct slot *s = find(t, key, n);
    if (s->key != NULL)
        return -1;
    s->key = strdup(key);
    if (s->key == NULL)
        return -1;
    s->value = value;
    t->count++;
    return 0;
}

void *gw_sni_lookup(const struct gw_sni *t, const char *name)
{
    if (name != NULL && name[0] != '\0') {
        char key[NAME_MAX_LEN + 3];
        size_t n = normalize(name, key + 2);
        if (n == TOO_LONG)
            return NULL; /* not a host name: no definition, not even the fallback */
        struct slot *s = find(t, key + 2, n);
        if (s->key != NULL)
            return s->value;
        /* "a.example.com" -> "*.example.com": the wildcard covers one label. */
        char *dot = memchr(key + 2, '.', n);
        if (dot != NULL && dot != key + 2) {
            char *w = dot - 1;
            *w = '*';
            s = find(t, w, n - (size_t)(w - (key + 2)));
            if (s->key != NULL)
                return s->value;
        }
    }
    return t->has_fallback ? t->fallback : NULL;
}
