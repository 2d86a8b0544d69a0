/* Connection counts that span workers, for the limits: how many connections
 * each client address holds (max_connections_per_source). The per-definition,
 * per-target and gateway-wide counts are single atomics in the registry. */
#ifndef GW_LIMITS_H
#define GW_LIMITS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct gw_sources;

struct gw_sources *gw_sources_new(void) __attribute__((warn_unused_result));
void gw_sources_free(struct gw_sources *t);

/* Any thread. Counts one more connection from addr's IP (the port is
 * ignored; an IPv4-mapped IPv6 address is its IPv4 one) unless it already
 * holds max; returns whether it was counted. A non-IP address always is. */
bool gw_sources_acquire(struct gw_sources *t, const struct sockaddr *addr, int max);

/* Any thread. Gives back what gw_sources_acquire counted. */
void gw_sources_release(struct gw_sources *t, const struct sockaddr *addr);

/* Any thread. Takes one unit of *count unless it has reached max (0 = no
 * limit); returns whether it took it. */
static inline bool gw_limit_acquire(int64_t *count, int64_t max)
{
    int64_t n = __atomic_add_fetch(count, 1, __ATOMIC_RELAXED);
    if (max > 0 && n > max) {
        __atomic_sub_fetch(count, 1, __ATOMIC_RELAXED);
        return false;
    }
    return true;
}

static inline void gw_limit_release(int64_t *count)
{
    __atomic_sub_fetch(count, 1, __ATOMIC_RELAXED);
}

#endif
