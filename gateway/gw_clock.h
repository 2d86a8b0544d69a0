/* The clock for deadlines and durations: milliseconds on the monotonic
 * clock, read coarsely (a tick of a few milliseconds), which is cheap enough
 * for the data path. Any thread. */
#ifndef GW_CLOCK_H
#define GW_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t gw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
