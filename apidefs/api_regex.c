#include "api_regex.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* What a piece of a pattern costs regcomp once its repetitions are written
 * out: elements, and parenthesised groups. Counts saturate just past their
 * limits, so that no product overflows. */
struct rx_cost {
    size_t size, groups;
};

static size_t rx_sat(size_t v, size_t limit)
{
    return v > limit ? limit + 1 : v;
}

static struct rx_cost rx_add(struct rx_cost a, struct rx_cost b)
{
    return (struct rx_cost){rx_sat(a.size + b.size, API_REGEX_MAX_SIZE),
                            rx_sat(a.groups + b.groups, API_REGEX_MAX_GROUPS)};
}

/* n copies of a, each with a node that joins it to the next. */
static struct rx_cost rx_copies(struct rx_cost a, size_t n)
{
    size_t size = a.size + 1, lim = API_REGEX_MAX_SIZE + 1, glim = API_REGEX_MAX_GROUPS + 1;
    return (struct rx_cost){size > lim / n ? lim : rx_sat(size * n, API_REGEX_MAX_SIZE),
                            a.groups > glim / n ? glim
                                                : rx_sat(a.groups * n, API_REGEX_MAX_GROUPS)};
}

/* After '{': the copies an interval "{m}", "{m,}" or "{m,n}" makes of the
 * element before it (at least 1), and *end past its '}'. 0 when it is not an
 * interval, which regcomp then rejects. Read as glibc reads it: an escaped
 * character inside stands for itself ("{\0\,13}" is "{0,13}"). */
static size_t rx_interval(const char *p, const char **end)
{
    size_t num[2] = {0, 0}, lim = API_REGEX_MAX_SIZE + 1;
    bool digits[2] = {false, false};
    int part = 0;
    for (;;) {
        bool escaped = p[0] == '\\' && p[1] != '\0';
        char c = escaped ? p[1] : p[0];
        if (c == '}' && !escaped)
            break;
        if (c == ',' && part == 0) {
            part = 1;
        } else if (c >= '0' && c <= '9') {
            num[part] = rx_sat(num[part] * 10 + (size_t)(c - '0'), lim);
            digits[part] = true;
        } else {
            return 0;
        }
        p += escaped ? 2 : 1;
    }
    if (!digits[0] && !digits[1])
        return 0;
    *end = p + 1;
    size_t m = num[0], n = num[1];
    /* "{m,}" is written out as m copies and a starred one. */
    size_t copies = part == 0 ? m : digits[1] ? (n > m ? n : m) : m + 1;
    return copies > 0 ? copies : 1;
}

/* Past a bracket expression that starts at p ('['). */
static const char *rx_bracket(const char *p)
{
    const char *q = p + 1;
    q += *q == '^';
    q += *q == ']'; /* a leading ']' is a member */
    while (*q != '\0' && *q != ']') {
        if (*q == '[' && (q[1] == ':' || q[1] == '.' || q[1] == '=')) {
            const char *close = strchr(q + 2, q[1]); /* "[:alpha:]" ends at ":]" */
            while (close != NULL && close[1] != ']')
                close = strchr(close + 1, q[1]);
            q = close != NULL ? close + 2 : q + 1;
        } else {
            q++;
        }
    }
    return *q == ']' ? q + 1 : q;
}

int api_regex_check(const char *pattern, char *err, size_t errlen)
{
    /* One frame per open group: the cost of its finished alternatives, of
     * the current alternative before its last element, and of that element,
     * which a repetition multiplies. */
    struct {
        struct rx_cost done, branch, last;
    } st[API_REGEX_MAX_GROUPS + 1];
    memset(st, 0, sizeof(st));
    size_t depth = 0;
    const struct rx_cost one = {1, 0};
    bool repeated = false; /* the last token was a repetition operator */
    for (const char *p = pattern; *p != '\0';) {
        struct rx_cost atom = {0, 0}; /* an element that ends here, if size > 0 */
        const char *end = NULL;
        size_t copies = 0;
        bool repeat = *p == '*' || *p == '?' || *p == '+' ||
                      (*p == '{' && (copies = rx_interval(p + 1, &end)) > 0);
        /* POSIX leaves adjacent repetitions undefined; glibc nests them, and
         * "a???????+++" alone takes minutes to compile. */
        if (repeat && repeated) {
            snprintf(err, errlen, "two repetition operators in a row (such as \"a*?\")");
            return -1;
        }
        repeated = repeat;
        switch (*p) {
        case '\\':
            p += p[1] != '\0' ? 2 : 1;
            atom = one;
            break;
        case '[':
            p = rx_bracket(p);
            atom = one;
            break;
        case '(':
            if (depth == API_REGEX_MAX_GROUPS) {
                snprintf(err, errlen, "more than %d groups", API_REGEX_MAX_GROUPS);
                return -1;
            }
            depth++;
            memset(&st[depth], 0, sizeof(st[depth]));
            p++;
            break;
        case ')':
            if (depth > 0) {
                atom = rx_add(rx_add(st[depth].done, st[depth].branch), st[depth].last);
                atom = rx_add(atom, (struct rx_cost){1, 1});
                depth--;
            } else {
                atom = one;
            }
            p++;
            break;
        case '|':
            st[depth].done = rx_add(st[depth].done, rx_add(st[depth].branch, st[depth].last));
            st[depth].branch = st[depth].last = (struct rx_cost){0, 0};
            p++;
            break;
        case '*':
        case '?': /* a node around the element */
            st[depth].last = rx_add(st[depth].last, one);
            p++;
            break;
        case '+': /* written out as the element and a starred copy */
            st[depth].last = rx_copies(st[depth].last, 2);
            p++;
            break;
        case '{':
            if (copies == 0) {
                atom = one;
                p++;
            } else {
                st[depth].last = rx_copies(st[depth].last, copies);
                p = end;
            }
            break;
        default: /* a character, '.', '^' or '$' */
            atom = one;
            p++;
            break;
        }
        if (atom.size > 0) {
            st[depth].branch = rx_add(st[depth].branch, st[depth].last);
            st[depth].last = atom;
        }
        struct rx_cost total = {0, 0};
        for (size_t d = 0; d <= depth; d++)
            total = rx_add(total, rx_add(st[d].done, rx_add(st[d].branch, st[d].last)));
        if (total.size > API_REGEX_MAX_SIZE) {
            snprintf(err, errlen,
                     "too large once its repetitions are written out (more than %d elements)",
                     API_REGEX_MAX_SIZE);
            return -1;
        }
        if (total.groups > API_REGEX_MAX_GROUPS) {
            snprintf(err, errlen, "more than %d groups once its repetitions are written out",
                     API_REGEX_MAX_GROUPS);
            return -1;
        }
    }
    return 0;
}
