/* Target selection: round robin over a definition's targets, where repeating a
 * target weights it (as in Tyk), skipping targets that may not be picked.
 * Pure functions, so that unit tests drive them directly. */
#ifndef GW_BALANCER_H
#define GW_BALANCER_H

#include <stdbool.h>
#include <stddef.h>

/* Whether target i may be picked now (health, limits). NULL: all may. */
typedef bool (*gw_eligible_fn)(void *ctx, size_t i);

/* Takes the next round-robin start index from a definition's shared counter.
 * The first pick is index 0. */
size_t gw_rr_start(unsigned *counter, size_t n);

/* The target for connect attempt `attempt` (0-based) of a connection whose
 * round-robin start is `start`: the attempt-th eligible target from start on,
 * wrapping. Returns n when no target is eligible. */
size_t gw_pick(size_t start, unsigned attempt, size_t n, gw_eligible_fn eligible, void *ctx);

#endif
