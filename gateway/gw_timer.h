/* A worker's deadlines: one binary min-heap of entries embedded in their
 * owners (the sessions), and one libevent timer set for the earliest. A
 * session then costs 16 bytes for its deadline rather than an event of its
 * own, and moving a deadline is a sift in the heap, with no call into
 * libevent unless it becomes the earliest. Times are gw_now_ms()
 * milliseconds. One thread only: the base's. */
#ifndef GW_TIMER_H
#define GW_TIMER_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_timer_entry {
    int64_t at_ms;
    size_t slot; /* its place in the heap + 1; 0 while not armed */
};

struct gw_timers;

/* Called for an entry whose time has come; it is disarmed first, so the
 * callback may arm it again or free its owner. */
typedef void (*gw_timer_fn)(struct gw_timer_entry *e);

struct gw_timers {
    struct event ev;
    struct gw_timer_entry **heap;
    size_t n, cap;
    gw_timer_fn fire;
    int64_t ev_at_ms; /* when ev is set to go off; 0: not set */
};

/* Returns 0, or -1 when the timer cannot be added to base. */
int gw_timers_init(struct gw_timers *t, struct event_base *base, gw_timer_fn fire)
    __attribute__((warn_unused_result));
void gw_timers_clear(struct gw_timers *t);

/* Makes room for n armed entries, so that arming them cannot fail. Returns
 * 0, or -1 when memory runs out. */
int gw_timers_reserve(struct gw_timers *t, size_t n) __attribute__((warn_unused_result));

/* Arms e for at_ms, or moves it there. There must be room for it (see
 * gw_timers_reserve); without, it makes room, and aborts when it cannot. */
void gw_timer_set(struct gw_timers *t, struct gw_timer_entry *e, int64_t at_ms);

/* Disarms e; accepts one that is not armed. */
void gw_timer_cancel(struct gw_timers *t, struct gw_timer_entry *e);

static inline bool gw_timer_armed(const struct gw_timer_entry *e)
{
    return e->slot != 0;
}

/* Runs what is due at now_ms (the timer's callback does this). */
void gw_timers_run(struct gw_timers *t, int64_t now_ms);

#endif
