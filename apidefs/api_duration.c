#include "api_duration.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define NS_PER_MS 1000000LL
/* Largest duration we keep, about 292 years in ms; anything above is a typo. */
#define MAX_MS (INT64_MAX / NS_PER_MS)

struct unit {
    const char *name;
    int64_t ns;
};

/* Longer names first so that "ms" is not read as "m" followed by "s". */
static const struct unit units[] = {
    {"ns", 1LL},
    {"us", 1000LL},
    {"\xc2\xb5s", 1000LL}, /* µs, as Go writes it */
    {"ms", NS_PER_MS},
    {"s", 1000LL * NS_PER_MS},
    {"m", 60LL * 1000LL * NS_PER_MS},
    {"h", 3600LL * 1000LL * NS_PER_MS},
};

static const struct unit *match_unit(const char *p, size_t *len)
{
    const struct unit *best = NULL;
    size_t bestlen = 0;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        size_t n = strlen(units[i].name);
        if (n > bestlen && strncmp(p, units[i].name, n) == 0) {
            best = &units[i];
            bestlen = n;
        }
    }
    *len = bestlen;
    return best;
}

int api_duration_parse(const char *s, int64_t *out_ms, char *err, size_t errlen)
{
    if (s == NULL || *s == '\0') {
        snprintf(err, errlen, "empty duration");
        return -1;
    }
    if (strcmp(s, "0") == 0) {
        *out_ms = 0;
        return 0;
    }
    /* Exact integer arithmetic in nanoseconds: a decimal fraction such as
     * "4.35s" must give 4350 ms, not whatever binary floating point rounds to. */
    const __int128 limit = (__int128)MAX_MS * NS_PER_MS;
    __int128 total_ns = 0;
    const char *p = s;
    while (*p != '\0') {
        if (!(*p >= '0' && *p <= '9') && *p != '.') {
            snprintf(err, errlen, "invalid duration \"%s\": expected a number at \"%s\"", s, p);
            return -1;
        }
        __int128 whole = 0, frac = 0, scale = 1;
        bool frac_rest = false; /* non-zero digits beyond the precision kept */
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            whole = whole * 10 + (*p - '0');
            digits++;
            p++;
            if (whole > limit) {
                snprintf(err, errlen, "invalid duration \"%s\": too large", s);
                return -1;
            }
        }
        if (*p == '.') {
            p++;
            while (*p >= '0' && *p <= '9') {
                if (scale < 1000000000000000000LL) {
                    frac = frac * 10 + (*p - '0');
                    scale *= 10;
                } else if (*p != '0') {
                    frac_rest = true;
                }
                digits++;
                p++;
            }
        }
        if (digits == 0) {
            snprintf(err, errlen, "invalid duration \"%s\": expected a number", s);
            return -1;
        }
        size_t ulen = 0;
        const struct unit *u = match_unit(p, &ulen);
        if (u == NULL) {
            snprintf(err, errlen,
                     "invalid duration \"%s\": missing or unknown unit (use ms, s, m or h)", s);
            return -1;
        }
        p += ulen;
        __int128 part = frac * u->ns;
        total_ns += whole * u->ns + part / scale + (part % scale != 0 || frac_rest);
        if (total_ns > limit) {
            snprintf(err, errlen, "invalid duration \"%s\": too large", s);
            return -1;
        }
    }
    int64_t ns = (int64_t)total_ns;
    *out_ms = ns / NS_PER_MS + (ns % NS_PER_MS != 0);
    return 0;
}

int api_duration_from_ns(int64_t ns, int64_t *out_ms, char *err, size_t errlen)
{
    if (ns < 0) {
        snprintf(err, errlen, "negative duration %lld ns", (long long)ns);
        return -1;
    }
    *out_ms = ns / NS_PER_MS + (ns % NS_PER_MS != 0);
    return 0;
}

void api_duration_format(int64_t ms, char *buf, size_t buflen)
{
    if (ms == 0)
        snprintf(buf, buflen, "0");
    else if (ms % 3600000 == 0)
        snprintf(buf, buflen, "%lldh", (long long)(ms / 3600000));
    else if (ms % 60000 == 0)
        snprintf(buf, buflen, "%lldm", (long long)(ms / 60000));
    else if (ms % 1000 == 0)
        snprintf(buf, buflen, "%llds", (long long)(ms / 1000));
    else
        snprintf(buf, buflen, "%lldms", (long long)ms);
}
