#include <stddef.h>
#include <stdio.h>
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
