/* Target selection: round robin over a definition's targets, where repeating a
 * target weights it (as in Tyk), over whichever targets may be picked now.
 * Pure functions, so that unit tests drive them directly. */
#ifndef GW_BALANCER_H
#define GW_BALANCER_H

#include <stdbool.h>
#include <stddef.h>

/* Whether target i may be picked now (health, limits, an earlier failure of
 * this connection). NULL: all may. */
typedef bool (*gw_eligible_fn)(void *ctx, size_t i);

/* Takes the next value of a definition's round-robin counter, shared by the
 * workers. The first connection gets 0. */
unsigned gw_rr_next(unsigned *counter);

/* A connection's first target: the (turn mod e)-th of the e eligible targets,
 * so that load spreads evenly over those that may be picked, whichever they
 * are. Returns n when none is eligible. */
size_t gw_pick_first(unsigned turn, size_t n, gw_eligible_fn eligible, void *ctx);

/* A retry after target `prev` failed: the first eligible target after it,
 * wrapping, so that a dead target's share moves to its successor. Returns n
 * when none is eligible. */
size_t gw_pick_next(size_t prev, size_t n, gw_eligible_fn eligible, void *ctx);

#endif
