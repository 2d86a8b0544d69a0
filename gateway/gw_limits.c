#include "gw_limits.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Striped: a connection locks one of STRIPES buckets for a moment at its
 * start and at its end, never on the data path. */
#define STRIPES 64
#define BUCKETS_PER_STRIPE 64

struct source {
    struct source *next;
    uint8_t ip[16];
    int count;
};

struct stripe {
    pthread_mutex_t lock;
    struct source *buckets[BUCKETS_PER_STRIPE];
} __attribute__((aligned(64)));

struct gw_sources {
    struct stripe stripes[STRIPES];
};

struct gw_sources *gw_sources_new(void)
{
    struct gw_sources *t = aligned_alloc(64, sizeof(*t));
    if (t == NULL)
        return NULL;
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&t->stripes[i].lock, NULL);
    return t;
}

void gw_sources_free(struct gw_sources *t)
{
    if (t == NULL)
        return;
    for (int i = 0; i < STRIPES; i++) {
        for (int b = 0; b < BUCKETS_PER_STRIPE; b++) {
            struct source *s = t->stripes[i].buckets[b];
            while (s != NULL) {
                struct source *next = s->next;
                free(s);
                s = next;
            }
        }
        pthread_mutex_destroy(&t->stripes[i].lock);
    }
    free(t);
}

/* The IP as 16 bytes (IPv4 mapped), or false for other families. */
static bool ip_key(const struct sockaddr *addr, uint8_t ip[16])
{
    memset(ip, 0, 16);
    if (addr->sa_family == AF_INET) {
        ip[10] = ip[11] = 0xff;
        memcpy(ip + 12, &((const struct sockaddr_in *)addr)->sin_addr, 4);
        return true;
    }
    if (addr->sa_family == AF_INET6) {
        memcpy(ip, &((const struct sockaddr_in6 *)addr)->sin6_addr, 16);
        return true;
    }
    return false;
}

static uint32_t ip_hash(const uint8_t ip[16])
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ ip[i]) * 16777619u;
    return h;
}

static struct source **find(struct gw_sources *t, const uint8_t ip[16], struct stripe **st)
{
    uint32_t h = ip_hash(ip);
    *st = &t->stripes[h % STRIPES];
    struct source **pp = &(*st)->buckets[(h / STRIPES) % BUCKETS_PER_STRIPE];
    while (*pp != NULL && memcmp((*pp)->ip, ip, 16) != 0)
        pp = &(*pp)->next;
    return pp;
}

bool gw_sources_acquire(struct gw_sources *t, const struct sockaddr *addr, int max)
{
    uint8_t ip[16];
    if (!ip_key(addr, ip))
        return true;
    struct stripe *st;
    bool ok = true;
    /* find() picks the same stripe from the same hash. */
    uint32_t h = ip_hash(ip);
    pthread_mutex_lock(&t->stripes[h % STRIPES].lock);
    struct source **pp = find(t, ip, &st);
    if (*pp == NULL) {
        struct source *s = calloc(1, sizeof(*s));
        if (s != NULL) {
            memcpy(s->ip, ip, 16);
            s->count = 1;
            *pp = s;
        } else {
            ok = false; /* out of memory: refused rather than left uncounted */
        }
    } else if ((*pp)->count >= max) {
        ok = false;
    } else {
        (*pp)->count++;
    }
    pthread_mutex_unlock(&st->lock);
    return ok;
}

void gw_sources_release(struct gw_sources *t, const struct sockaddr *addr)
{
    uint8_t ip[16];
    if (!ip_key(addr, ip))
        return;
    struct stripe *st;
    uint32_t h = ip_hash(ip);
    pthread_mutex_lock(&t->stripes[h % STRIPES].lock);
    struct source **pp = find(t, ip, &st);
    struct source *s = *pp;
    if (s != NULL && --s->count == 0) {
        *pp = s->next;
        free(s);
    }
    pthread_mutex_unlock(&st->lock);
}
