/* Upstream and check addresses: "tcp://host:port", "tls://host:port", a bare
 * "host:port" (which means tcp://), with IPv6 literals in brackets. */
#ifndef API_TARGET_H
#define API_TARGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum api_scheme {
    API_SCHEME_TCP,
    API_SCHEME_TLS,
};

#define API_HOST_MAX 255

struct api_target {
    enum api_scheme scheme;
    char host[API_HOST_MAX + 1]; /* without brackets for IPv6 literals */
    uint16_t port;
};

/* Parses one target. Rejects an unknown scheme, a missing or out-of-range port,
 * an empty or malformed host and anything after the port. Pure: no DNS.
 * Returns 0, or -1 with a reason in err. */
int api_target_parse(const char *s, struct api_target *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* "host:port" or "[v6]:port", for logs and for matching checks to targets. */
void api_target_hostport(const struct api_target *t, char *buf, size_t buflen);

const char *api_scheme_name(enum api_scheme s);

/* An address block such as "10.0.0.0/8", "::1/128" or a bare address. */
struct api_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t bytes[16];
    unsigned prefix;
};

int api_cidr_parse(const char *s, struct api_cidr *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Whether an address (IPv4, IPv6, or IPv4-mapped IPv6) is inside the block. */
struct sockaddr;
bool api_cidr_contains(const struct api_cidr *c, const struct sockaddr *sa);

#endif
