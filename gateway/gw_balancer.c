#include "gw_balancer.h"

unsigned gw_rr_next(unsigned *counter)
{
    return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}

static bool ok(gw_eligible_fn eligible, void *ctx, size_t i)
{
    return eligible == NULL || eligible(ctx, i);
}

size_t gw_pick_first(unsigned turn, size_t n, gw_eligible_fn eligible, void *ctx)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += ok(eligible, ctx, i);
    if (count == 0)
        return n;
    size_t want = turn % count;
    for (size_t i = 0; i < n; i++)
        if (ok(eligible, ctx, i) && want-- == 0)
            return i;
    return n; /* eligibility changed under us: treat as none */
}

size_t gw_pick_next(size_t prev, size_t n, gw_eligible_fn eligible, void *ctx)
{
    for (size_t k = 1; k <= n; k++) {
        size_t i = (prev + k) % n;
        if (ok(eligible, ctx, i))
            return i;
    }
    return n;
}
