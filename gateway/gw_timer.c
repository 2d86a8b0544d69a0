#include "gw_timer.h"

#include <stdlib.h>

#include "gw_clock.h"

static void put(struct gw_timers *t, size_t i, struct gw_timer_entry *e)
{
    t->heap[i] = e;
    e->slot = i + 1;
}

static void sift_up(struct gw_timers *t, size_t i)
{
    struct gw_timer_entry *e = t->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (t->heap[parent]->at_ms <= e->at_ms)
            break;
        put(t, i, t->heap[parent]);
        i = parent;
    }
    put(t, i, e);
}

static void sift_down(struct gw_timers *t, size_t i)
{
    struct gw_timer_entry *e = t->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= t->n)
            break;
        if (c + 1 < t->n && t->heap[c + 1]->at_ms < t->heap[c]->at_ms)
            c++;
        if (e->at_ms <= t->heap[c]->at_ms)
            break;
        put(t, i, t->heap[c]);
        i = c;
    }
    put(t, i, e);
}

/* Sets the libevent timer for the earliest entry, if it is not set for it
 * or earlier already. The coarse clock may lag by a tick: a millisecond of
 * slack avoids a wake-up that finds nothing due yet. */
static void schedule(struct gw_timers *t)
{
    if (t->n == 0)
        return;
    int64_t at = t->heap[0]->at_ms;
    if (t->ev_at_ms != 0 && t->ev_at_ms <= at)
        return;
    int64_t wait = at - gw_now_ms();
    if (wait < 0)
        wait = 0;
    wait += 1;
    struct timeval tv = {.tv_sec = wait / 1000, .tv_usec = (wait % 1000) * 1000};
    if (event_add(&t->ev, &tv) == 0)
        t->ev_at_ms = at;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_timers *t = arg;
    t->ev_at_ms = 0;
    gw_timers_run(t, gw_now_ms());
}

int gw_timers_init(struct gw_timers *t, struct event_base *base, gw_timer_fn fire)
{
    t->heap = NULL;
    t->n = t->cap = 0;
    t->fire = fire;
    t->ev_at_ms = 0;
    return evtimer_assign(&t->ev, base, on_timer, t);
}

void gw_timers_clear(struct gw_timers *t)
{
    evtimer_del(&t->ev);
    for (size_t i = 0; i < t->n; i++)
        t->heap[i]->slot = 0;
    free(t->heap);
    t->heap = NULL;
    t->n = t->cap = 0;
}

int gw_timers_reserve(struct gw_timers *t, size_t n)
{
    if (n <= t->cap)
        return 0;
    size_t cap = t->cap ? t->cap : 64;
    while (cap < n)
        cap *= 2;
    struct gw_timer_entry **h = realloc(t->heap, cap * sizeof(*h));
    if (h == NULL)
        return -1;
    t->heap = h;
    t->cap = cap;
    return 0;
}

void gw_timer_set(struct gw_timers *t, struct gw_timer_entry *e, int64_t at_ms)
{
    if (e->slot == 0) {
        if (gw_timers_reserve(t, t->n + 1) != 0)
            abort(); /* the owner did not reserve its room */
        e->at_ms = at_ms;
        t->heap[t->n] = e;
        e->slot = ++t->n;
        sift_up(t, t->n - 1);
    } else {
        int64_t old = e->at_ms;
        e->at_ms = at_ms;
        if (at_ms < old)
            sift_up(t, e->slot - 1);
        else
            sift_down(t, e->slot - 1);
    }
    schedule(t);
}

void gw_timer_cancel(struct gw_timers *t, struct gw_timer_entry *e)
{
    if (e->slot == 0)
        return;
    size_t i = e->slot - 1;
    e->slot = 0;
    struct gw_timer_entry *last = t->heap[--t->n];
    if (i == t->n)
        return;
    put(t, i, last);
    /* The entry moved into the hole may belong above or below it. */
    sift_up(t, i);
    sift_down(t, last->slot - 1);
}

void gw_timers_run(struct gw_timers *t, int64_t now_ms)
{
    /* Each entry due now runs once: one that a callback arms for now again
     * waits for the next round. */
    for (size_t budget = t->n; budget > 0 && t->n > 0 && t->heap[0]->at_ms <= now_ms; budget--) {
        struct gw_timer_entry *e = t->heap[0];
        gw_timer_cancel(t, e);
        t->fire(e);
    }
    schedule(t);
}
