/* The PROXY protocol (haproxy's doc/proxy-protocol.txt): headers that carry a
 * connection's original addresses across proxies. Pure functions that write
 * into a caller's buffer, so tests drive them directly. */
#ifndef GW_PROXYPROTO_H
#define GW_PROXYPROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The 12-byte signature that starts every v2 header. */
extern const uint8_t GW_PP2_SIGNATURE[12];

/* The longest v1 line, CRLF included (the spec's 107 bytes). */
#define GW_PP1_MAX 107

/* Writes a v1 line: "PROXY TCP4|TCP6 src dst sport dport\r\n", or
 * "PROXY UNKNOWN\r\n" when the addresses are not both IPv4 or both IPv6
 * (a v4-mapped IPv6 address counts as IPv4). Returns its length, or -1 when
 * buf is too small. */
int gw_pp1_build(const struct sockaddr *src, const struct sockaddr *dst, char *buf, size_t len);

/* Writes a v2 header. With src == NULL it is a LOCAL header (the proxy's own
 * connection, such as a health check); otherwise a PROXY header over TCP.
 * Returns its length, or -1 when buf is too small. */
int gw_pp2_build(const struct sockaddr *src, const struct sockaddr *dst, uint8_t *buf, size_t len);

#endif
