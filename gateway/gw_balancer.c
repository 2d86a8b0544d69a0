#include "gw_balancer.h"

size_t gw_rr_start(unsigned *counter, size_t n)
{
    if (n <= 1)
        return 0;
    unsigned v = __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
    return v % n;
}

size_t gw_pick(size_t start, unsigned attempt, size_t n, gw_eligible_fn eligible, void *ctx)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += eligible == NULL || eligible(ctx, i);
    if (count == 0)
        return n;
    /* With fewer eligible targets than attempts, the attempts wrap around them. */
    size_t want = attempt % count;
    for (size_t k = 0; k < n; k++) {
        size_t i = (start + k) % n;
        if (eligible != NULL && !eligible(ctx, i))
            continue;
        if (want-- == 0)
            return i;
    }
    return n;
}
