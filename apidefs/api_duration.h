/* Durations as operators write them: Go-style strings ("250ms", "5s", "1m30s")
 * and, where Tyk stores a Go time.Duration, integer nanoseconds. */
#ifndef API_DURATION_H
#define API_DURATION_H

#include <stddef.h>
#include <stdint.h>

/* Parses a Go-style duration string into milliseconds, rounding a sub-millisecond
 * remainder up so that "1us" never becomes "disabled". Units: ns, us (or µs), ms,
 * s, m, h; terms may be chained ("1h30m") and may carry a fraction ("1.5s").
 * A bare "0" is accepted. Returns 0, or -1 with a reason in err. */
int api_duration_parse(const char *s, int64_t *out_ms, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Converts Tyk's integer nanoseconds to milliseconds, rounding up. Negative
 * input is an error. */
int api_duration_from_ns(int64_t ns, int64_t *out_ms, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Writes a duration back in the shortest exact form ("250ms", "5s", "1h"). */
void api_duration_format(int64_t ms, char *buf, size_t buflen);

#endif
