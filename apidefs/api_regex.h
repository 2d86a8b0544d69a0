/* The limits a check script's regular expression must keep before glibc's
 * regcomp sees it, and their check: beside the scripts (expect_regex,
 * expect_not_regex), read from the definitions by api_def.c. */
#ifndef API_REGEX_H
#define API_REGEX_H

#include <stddef.h>

/* How large an expect_regex pattern may be, because glibc's regcomp is what a
 * pattern exhausts. It builds a copy of an expression per repetition, with
 * closure tables that grow with the square of the copies: "a{1,32767}", ten
 * bytes, takes gigabytes. Nested parts that can match nothing take time
 * exponential in their number: "((a?)*|(b?)?){1,14}" takes seconds, two more
 * copies minutes, and so does "a" followed by twenty '?' and a few '+'. And
 * its parser recurses once per nested group. So a pattern is accepted when,
 * with every repetition written out, it has at most API_REGEX_MAX_SIZE
 * elements (a few megabytes to compile at worst) and at most
 * API_REGEX_MAX_GROUPS parenthesised groups, and when no repetition operator
 * follows another (which POSIX leaves undefined). */
#define API_REGEX_MAX_SIZE 1000
#define API_REGEX_MAX_GROUPS 16

/* Checks a NUL-terminated pattern against those limits before it is given to
 * regcomp, which reports everything else. Returns 0, or -1 with a reason. */
int api_regex_check(const char *pattern, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
