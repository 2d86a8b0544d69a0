#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_stats.h"

void gw_stats_sum(const struct gw_api_stats *slots, int count, struct gw_api_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < count; i++) {
#define GW_STAT_SUM(name, desc) out->name += __atomic_load_n(&slots[i].name, __ATOMIC_RELAXED);
        GW_API_COUNTERS(GW_STAT_SUM)
#undef GW_STAT_SUM
    }
}

void gw_target_stats_sum(const struct gw_target_stats *slots, int count,
                         struct gw_target_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < count; i++) {
#define GW_STAT_SUM(name, desc) out->name += __atomic_load_n(&slots[i].name, __ATOMIC_RELAXED);
        GW_TARGET_COUNTERS(GW_STAT_SUM)
#undef GW_STAT_SUM
    }
}

void gw_port_stats_sum(const struct gw_port_stats *slots, int count, struct gw_port_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < count; i++) {
#define GW_STAT_SUM(name, desc) out->name += __atomic_load_n(&slots[i].name, __ATOMIC_RELAXED);
        GW_PORT_COUNTERS(GW_STAT_SUM)
#undef GW_STAT_SUM
    }
}

void gw_stats_format(const struct gw_api_stats *s, char *buf, size_t buflen)
{
    size_t n = 0;
    if (buflen == 0)
        return;
    buf[0] = '\0';
#define GW_STAT_FMT(name, desc)                                                                    \
    if (n < buflen)                                                                                \
        n += (size_t)snprintf(buf + n, buflen - n, "%s" #name "=%lld", n ? " " : "",               \
                              (long long)s->name);
    GW_API_COUNTERS(GW_STAT_FMT)
#undef GW_STAT_FMT
}

/* ---- registry ------------------------------------------------------------------ */

#define REGISTRY_BUCKETS 1024

struct reg_entry {
    struct reg_entry *next;
    char *key;
    void *slots;
};

struct gw_registry {
    int nworkers;
    struct reg_entry *buckets[REGISTRY_BUCKETS];
};

struct gw_registry *gw_registry_new(int nworkers)
{
    struct gw_registry *r = calloc(1, sizeof(*r));
    if (r != NULL)
        r->nworkers = nworkers;
    return r;
}

void gw_registry_free(struct gw_registry *r)
{
    if (r == NULL)
        return;
    for (size_t b = 0; b < REGISTRY_BUCKETS; b++) {
        struct reg_entry *e = r->buckets[b];
        while (e != NULL) {
            struct reg_entry *next = e->next;
            free(e->key);
            free(e->slots);
            free(e);
            e = next;
        }
    }
    free(r);
}

static size_t key_hash(const char *key)
{
    size_t h = 5381;
    for (const unsigned char *c = (const unsigned char *)key; *c != '\0'; c++)
        h = h * 33 + *c;
    return h % REGISTRY_BUCKETS;
}

void *gw_registry_slots(struct gw_registry *r, const char *key, size_t slot_size)
{
    size_t b = key_hash(key);
    for (struct reg_entry *e = r->buckets[b]; e != NULL; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e->slots;
    struct reg_entry *e = calloc(1, sizeof(*e));
    size_t bytes = slot_size * (size_t)r->nworkers;
    if (e == NULL || (e->key = strdup(key)) == NULL ||
        (e->slots = aligned_alloc(64, bytes)) == NULL)
        abort();
    memset(e->slots, 0, bytes);
    e->next = r->buckets[b];
    r->buckets[b] = e;
    return e->slots;
}

int64_t *gw_registry_counter(struct gw_registry *r, const char *key)
{
    /* Slots of 64 bytes, one per worker; the first is the counter, alone on
     * its cache line. */
    return gw_registry_slots(r, key, 64);
}
