/* Helpers shared by the fuzz targets.
 *
 * Every target hands the parser under test a heap copy of exactly the bytes it
 * may read, so AddressSanitizer reports a read one byte past them; libFuzzer's
 * own buffer is not guaranteed to sit at the end of an allocation. Invariants
 * are checked with FUZZ_CHECK rather than assert(): the fuzz build is optimised
 * with NDEBUG, and a violated invariant must still stop libFuzzer with the
 * input that caused it. */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* An exact-size copy of data[0..n): no byte beyond it is addressable. */
static inline uint8_t *fuzz_copy(const uint8_t *data, size_t n)
{
    uint8_t *p = malloc(n > 0 ? n : 1);
    FUZZ_CHECK(p != NULL);
    if (n > 0)
        memcpy(p, data, n);
    return p;
}

/* A NUL-terminated copy, as a file's contents reach the JSON parsers and as a
 * JSON string reaches the value parsers. Embedded NULs stay in place. */
static inline char *fuzz_cstr(const uint8_t *data, size_t n)
{
    char *p = malloc(n + 1);
    FUZZ_CHECK(p != NULL);
    if (n > 0)
        memcpy(p, data, n);
    p[n] = '\0';
    return p;
}

/* Whether s is NUL-terminated within its n bytes. */
static inline int fuzz_terminated(const char *s, size_t n)
{
    return memchr(s, '\0', n) != NULL;
}

/* The prefix lengths worth re-parsing for an input of n bytes: all of them for
 * short inputs, otherwise the first few, a spread over the rest, the last few,
 * and `extra` (a length the caller cares about, such as a header's end) with
 * its neighbours. Returns how many were written to out (at most 64). */
static inline size_t fuzz_prefixes(size_t n, size_t extra, size_t out[64])
{
    size_t k = 0;
    if (n <= 48) {
        for (size_t i = 0; i < n; i++)
            out[k++] = i;
        return k;
    }
    for (size_t i = 0; i < 16; i++)
        out[k++] = i;
    for (size_t i = 1; i < 32; i++)
        out[k++] = 16 + (n - 32) * i / 32;
    for (size_t i = n - 8; i < n; i++)
        out[k++] = i;
    for (size_t d = 0; d < 3; d++) {
        size_t v = extra + d;
        if (v >= 1 && v - 1 < n && k < 64)
            out[k++] = v - 1; /* extra - 1, extra, extra + 1 */
    }
    return k;
}

#endif
