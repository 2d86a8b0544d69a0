#include "api_target.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

const char *api_scheme_name(enum api_scheme s)
{
    return s == API_SCHEME_TLS ? "tls" : "tcp";
}

static bool valid_hostname(const char *h, size_t n)
{
    if (n == 0 || n > API_HOST_MAX)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (c == '.') {
            if (label == 0 || h[i - 1] == '-')
                return false; /* empty label ("a..b", ".a") or one ending in '-' */
            label = 0;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok || ++label > 63)
            return false;
        if (c == '-' && label == 1)
            return false;
    }
    return h[n - 1] != '-';
}

static int parse_port(const char *p, uint16_t *port, const char *s, char *err, size_t errlen)
{
    if (*p == '\0') {
        snprintf(err, errlen, "target \"%s\" has no port", s);
        return -1;
    }
    unsigned long v = 0;
    for (const char *q = p; *q != '\0'; q++) {
        if (*q == '/' && q[1] == '\0' && q != p)
            break; /* a single trailing slash, as in "tcp://h:1/" */
        if (*q < '0' || *q > '9') {
            snprintf(err, errlen, "target \"%s\": invalid port \"%s\"", s, p);
            return -1;
        }
        v = v * 10 + (unsigned long)(*q - '0');
        if (v > 65535)
            break;
    }
    if (v == 0 || v > 65535) {
        snprintf(err, errlen, "target \"%s\": port out of range (1-65535)", s);
        return -1;
    }
    *port = (uint16_t)v;
    return 0;
}

int api_target_parse(const char *s, struct api_target *out, char *err, size_t errlen)
{
    if (s == NULL || *s == '\0') {
        snprintf(err, errlen, "empty target");
        return -1;
    }
    memset(out, 0, sizeof(*out));
    const char *rest = s;
    const char *sep = strstr(s, "://");
    if (sep != NULL) {
        size_t n = (size_t)(sep - s);
        if (n == 3 && strncasecmp(s, "tcp", 3) == 0)
            out->scheme = API_SCHEME_TCP;
        else if (n == 3 && strncasecmp(s, "tls", 3) == 0)
            out->scheme = API_SCHEME_TLS;
        else {
            snprintf(err, errlen, "target \"%s\": unknown scheme \"%.*s\" (use tcp:// or tls://)",
                     s, (int)(n > 16 ? 16 : n), s);
            return -1;
        }
        rest = sep + 3;
    }

    const char *host;
    size_t hostlen;
    const char *portp;
    if (*rest == '[') {
        const char *close = strchr(rest, ']');
        if (close == NULL) {
            snprintf(err, errlen, "target \"%s\": unterminated IPv6 literal", s);
            return -1;
        }
        host = rest + 1;
        hostlen = (size_t)(close - host);
        char buf[64];
        struct in6_addr a6;
        if (hostlen == 0 || hostlen >= sizeof(buf)) {
            snprintf(err, errlen, "target \"%s\": invalid IPv6 address", s);
            return -1;
        }
        memcpy(buf, host, hostlen);
        buf[hostlen] = '\0';
        if (inet_pton(AF_INET6, buf, &a6) != 1) {
            snprintf(err, errlen, "target \"%s\": invalid IPv6 address \"%s\"", s, buf);
            return -1;
        }
        if (close[1] != ':') {
            snprintf(err, errlen, "target \"%s\" has no port", s);
            return -1;
        }
        portp = close + 2;
    } else {
        const char *colon = strrchr(rest, ':');
        if (colon == NULL) {
            snprintf(err, errlen, "target \"%s\" has no port", s);
            return -1;
        }
        host = rest;
        hostlen = (size_t)(colon - rest);
        if (memchr(host, ':', hostlen) != NULL) {
            snprintf(err, errlen, "target \"%s\": IPv6 addresses need brackets, as in [::1]:6379",
                     s);
            return -1;
        }
        if (!valid_hostname(host, hostlen)) {
            snprintf(err, errlen, "target \"%s\": invalid host \"%.*s\"", s,
                     (int)(hostlen > 64 ? 64 : hostlen), host);
            return -1;
        }
        portp = colon + 1;
    }
    if (parse_port(portp, &out->port, s, err, errlen) != 0)
        return -1;
    memcpy(out->host, host, hostlen);
    out->host[hostlen] = '\0';
    return 0;
}

void api_target_hostport(const struct api_target *t, char *buf, size_t buflen)
{
    if (strchr(t->host, ':') != NULL)
        snprintf(buf, buflen, "[%s]:%u", t->host, (unsigned)t->port);
    else
        snprintf(buf, buflen, "%s:%u", t->host, (unsigned)t->port);
}

int api_cidr_parse(const char *s, struct api_cidr *out, char *err, size_t errlen)
{
    char buf[64];
    memset(out, 0, sizeof(*out));
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n == 0 || n >= sizeof(buf)) {
        snprintf(err, errlen, "\"%.64s\" is not an address block", s);
        return -1;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, out->bytes) == 1) {
        out->family = AF_INET;
        out->prefix = 32;
    } else if (inet_pton(AF_INET6, buf, out->bytes) == 1) {
        out->family = AF_INET6;
        out->prefix = 128;
    } else {
        snprintf(err, errlen, "\"%.64s\" is not an IPv4 or IPv6 address", buf);
        return -1;
    }
    if (slash != NULL) {
        unsigned long p = 0;
        const char *q = slash + 1;
        if (*q == '\0' || strlen(q) > 3) {
            snprintf(err, errlen, "\"%.64s\": bad prefix length", s);
            return -1;
        }
        for (; *q != '\0'; q++) {
            if (*q < '0' || *q > '9') {
                snprintf(err, errlen, "\"%.64s\": bad prefix length", s);
                return -1;
            }
            p = p * 10 + (unsigned long)(*q - '0');
        }
        if (p > out->prefix) {
            snprintf(err, errlen, "\"%.64s\": prefix longer than the address", s);
            return -1;
        }
        out->prefix = (unsigned)p;
    }
    /* A v4-mapped block ("::ffff:10.0.0.0/104") is an IPv4 block: peers are
     * compared as IPv4 however the socket shows them (api_cidr_contains), so
     * kept as IPv6 it would match no one. */
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (out->family == AF_INET6 && out->prefix >= 96 && memcmp(out->bytes, mapped, 12) == 0) {
        memmove(out->bytes, out->bytes + 12, 4);
        memset(out->bytes + 4, 0, 12);
        out->family = AF_INET;
        out->prefix -= 96;
    }
    return 0;
}

bool api_cidr_contains(const struct api_cidr *c, const struct sockaddr *sa)
{
    uint8_t addr[16];
    int family;
    if (sa->sa_family == AF_INET) {
        family = AF_INET;
        memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            family = AF_INET;
            memcpy(addr, &a6->s6_addr[12], 4);
        } else {
            family = AF_INET6;
            memcpy(addr, a6, 16);
        }
    } else {
        return false;
    }
    if (family != c->family)
        return false;
    unsigned full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(addr, c->bytes, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (addr[full] & mask) == (c->bytes[full] & mask);
}
