#include "gw_proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

const uint8_t GW_PP2_SIGNATURE[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                      0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

#define PP2_VERSION 0x20
#define PP2_CMD_LOCAL 0x00
#define PP2_CMD_PROXY 0x01
#define PP2_AF_UNSPEC 0x00
#define PP2_AF_INET 0x10
#define PP2_AF_INET6 0x20
#define PP2_TRANS_STREAM 0x01

/* An address reduced to its family, bytes and port; v4-mapped IPv6 becomes IPv4. */
struct addr {
    int family; /* AF_INET, AF_INET6, or 0 when unusable */
    uint8_t bytes[16];
    uint16_t port; /* host order */
};

static struct addr reduce(const struct sockaddr *sa)
{
    struct addr a = {0};
    if (sa == NULL)
        return a;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        a.family = AF_INET;
        memcpy(a.bytes, &in->sin_addr, 4);
        a.port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        a.port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            a.family = AF_INET;
            memcpy(a.bytes, &in6->sin6_addr.s6_addr[12], 4);
        } else {
            a.family = AF_INET6;
            memcpy(a.bytes, &in6->sin6_addr, 16);
        }
    }
    return a;
}

int gw_pp1_build(const struct sockaddr *src, const struct sockaddr *dst, char *buf, size_t len)
{
    struct addr s = reduce(src), d = reduce(dst);
    int n;
    if (s.family == 0 || s.family != d.family) {
        n = snprintf(buf, len, "PROXY UNKNOWN\r\n");
    } else {
        char sh[INET6_ADDRSTRLEN], dh[INET6_ADDRSTRLEN];
        inet_ntop(s.family, s.bytes, sh, sizeof(sh));
        inet_ntop(d.family, d.bytes, dh, sizeof(dh));
        n = snprintf(buf, len, "PROXY %s %s %s %u %u\r\n", s.family == AF_INET ? "TCP4" : "TCP6",
                     sh, dh, (unsigned)s.port, (unsigned)d.port);
    }
    return n < 0 || (size_t)n >= len ? -1 : n;
}

int gw_pp2_build(const struct sockaddr *src, const struct sockaddr *dst, uint8_t *buf, size_t len)
{
    struct addr s = reduce(src), d = reduce(dst);
    bool local = src == NULL;
    size_t alen = 0;
    uint8_t fam = PP2_AF_UNSPEC;
    if (!local && s.family != 0 && s.family == d.family) {
        fam = (s.family == AF_INET ? PP2_AF_INET : PP2_AF_INET6) | PP2_TRANS_STREAM;
        alen = s.family == AF_INET ? 12 : 36;
    }
    if (len < 16 + alen)
        return -1;
    memcpy(buf, GW_PP2_SIGNATURE, 12);
    buf[12] = PP2_VERSION | (local ? PP2_CMD_LOCAL : PP2_CMD_PROXY);
    buf[13] = fam;
    buf[14] = (uint8_t)(alen >> 8);
    buf[15] = (uint8_t)alen;
    if (alen > 0) {
        size_t w = s.family == AF_INET ? 4 : 16;
        memcpy(buf + 16, s.bytes, w);
        memcpy(buf + 16 + w, d.bytes, w);
        buf[16 + 2 * w] = (uint8_t)(s.port >> 8);
        buf[17 + 2 * w] = (uint8_t)s.port;
        buf[18 + 2 * w] = (uint8_t)(d.port >> 8);
        buf[19 + 2 * w] = (uint8_t)d.port;
    }
    return (int)(16 + alen);
}
