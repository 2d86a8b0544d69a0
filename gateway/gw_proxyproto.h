/* The PROXY protocol (haproxy's doc/proxy-protocol.txt): headers that carry a
 * connection's original addresses across proxies. The parser and the builder
 * are pure functions over caller buffers, so unit tests and fuzzers drive them
 * directly. */
#ifndef GW_PROXYPROTO_H
#define GW_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The 12-byte signature that starts every v2 header. */
extern const uint8_t GW_PP2_SIGNATURE[12];

/* The longest v1 line, CRLF included (the spec's 107 bytes). */
#define GW_PP1_MAX 107
/* A v2 header's fixed part; the length field allows 65535 more bytes. */
#define GW_PP2_FIXED 16

/* v2 TLV types. */
enum {
    GW_PP2_TYPE_ALPN = 0x01,
    GW_PP2_TYPE_AUTHORITY = 0x02,
    GW_PP2_TYPE_CRC32C = 0x03,
    GW_PP2_TYPE_NOOP = 0x04,
    GW_PP2_TYPE_UNIQUE_ID = 0x05,
    GW_PP2_TYPE_SSL = 0x20,
    GW_PP2_SUBTYPE_SSL_VERSION = 0x21,
    GW_PP2_SUBTYPE_SSL_CN = 0x22,
    GW_PP2_SUBTYPE_SSL_CIPHER = 0x23,
    GW_PP2_SUBTYPE_SSL_SIG_ALG = 0x24,
    GW_PP2_SUBTYPE_SSL_KEY_ALG = 0x25,
    GW_PP2_TYPE_NETNS = 0x30,
};

/* SSL TLV client bits. */
enum {
    GW_PP2_CLIENT_SSL = 0x01,
    GW_PP2_CLIENT_CERT_CONN = 0x02,
    GW_PP2_CLIENT_CERT_SESS = 0x04,
};

enum gw_pp_status {
    GW_PP_NEED_MORE = 0, /* incomplete: read more and call again */
    GW_PP_OK = 1,
    GW_PP_NOT_PROXY = -1, /* neither signature: not a PROXY header at all */
    GW_PP_BAD = -2,       /* a header, but malformed */
};

/* A view of a byte range inside the parsed buffer. */
struct gw_pp_bytes {
    const uint8_t *p;
    size_t len;
};

#define GW_PP_MAX_CUSTOM 8

struct gw_pp_info {
    int version; /* 1 or 2 */
    bool local;  /* v2 LOCAL (or v1 UNKNOWN): keep the connection's own addresses */
    bool has_addr;
    struct sockaddr_storage src, dst; /* when has_addr */
    size_t length;                    /* bytes the header takes, to skip */
    /* v2 TLVs */
    struct gw_pp_bytes alpn, authority, unique_id;
    bool has_crc32c;
    bool has_ssl;
    uint8_t ssl_client;
    uint32_t ssl_verify;
    struct gw_pp_bytes ssl_version, ssl_cn, ssl_cipher, ssl_sig_alg, ssl_key_alg;
    struct {
        uint8_t type;
        struct gw_pp_bytes value;
    } custom[GW_PP_MAX_CUSTOM]; /* other TLVs, kept (the first few) */
    size_t ncustom;
};

/* Parses a header at the start of buf. On GW_PP_OK, info->length bytes are
 * the header (always skipped whole); byte views point into buf. On
 * GW_PP_BAD, err says why. Incomplete input is GW_PP_NEED_MORE, never a
 * verdict. */
enum gw_pp_status gw_pp_parse(const uint8_t *buf, size_t len, struct gw_pp_info *info, char *err,
                              size_t errlen) __attribute__((warn_unused_result));

/* Writes a v1 line: "PROXY TCP4|TCP6 src dst sport dport\r\n", or
 * "PROXY UNKNOWN\r\n" when the addresses are not both IPv4 or both IPv6
 * (a v4-mapped IPv6 address counts as IPv4). Returns its length, or -1 when
 * buf is too small. */
int gw_pp1_build(const struct sockaddr *src, const struct sockaddr *dst, char *buf, size_t len);

/* What a v2 header may carry besides the addresses. */
struct gw_pp2_extra {
    const char *authority; /* the SNI; NULL: none */
    const uint8_t *alpn;   /* the protocol name; NULL: none */
    size_t alpn_len;
    bool ssl;                /* the proxy terminated TLS: add an SSL TLV */
    bool ssl_client_cert;    /* a client certificate was verified on this connection */
    const char *ssl_version; /* "TLSv1.3" */
    const char *ssl_cipher;
    const char *ssl_cn; /* the client certificate's common name; NULL: none */
    bool crc32c;        /* append a CRC32C TLV over the whole header */
};

/* Writes a v2 header. With src == NULL it is a LOCAL header (the proxy's own
 * connection, such as a health check); otherwise a PROXY header over TCP.
 * Returns its length, or -1 when buf is too small. */
int gw_pp2_build(const struct sockaddr *src, const struct sockaddr *dst,
                 const struct gw_pp2_extra *extra, uint8_t *buf, size_t len);

/* CRC-32C (Castagnoli), as the v2 CRC32C TLV uses. */
uint32_t gw_crc32c(uint32_t crc, const uint8_t *data, size_t len);

#endif
