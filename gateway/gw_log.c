#include "gw_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Written once before threads start, read by all of them afterwards. */
static enum gw_log_level min_level = GW_LOG_INFO;

static const char *const names[] = {"debug", "info", "warn", "error"};

int gw_log_level_parse(const char *s, enum gw_log_level *out)
{
    for (int i = GW_LOG_DEBUG; i <= GW_LOG_ERROR; i++) {
        if (strcasecmp(s, names[i]) == 0) {
            *out = (enum gw_log_level)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = GW_LOG_WARN;
        return 0;
    }
    return -1;
}

void gw_log_set_level(enum gw_log_level level)
{
    min_level = level;
}

int gw_log_enabled(enum gw_log_level level)
{
    return level >= min_level;
}

void gw_log(enum gw_log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03ldZ %-5s ", (long)(tv.tv_usec / 1000),
                  names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    n += m;
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    /* One write per line keeps lines from different threads whole. */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
