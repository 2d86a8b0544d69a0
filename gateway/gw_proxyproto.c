#include "gw_proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
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
#define PP2_AF_UNIX 0x30
#define PP2_TRANS_STREAM 0x01

static enum gw_pp_status bad(char *err, size_t errlen, const char *why)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", why);
    return GW_PP_BAD;
}

uint32_t gw_crc32c(uint32_t crc, const uint8_t *data, size_t len)
{
    crc = ~crc;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* ---- v1 --------------------------------------------------------------------------- */

/* A decimal without leading zeros, at most max. */
static bool parse_uint(const char *s, size_t n, unsigned long max, unsigned long *out)
{
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return false;
    unsigned long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_ipv4(const char *s, size_t n, struct in_addr *out)
{
    char buf[16];
    if (n == 0 || n >= sizeof(buf))
        return false;
    /* Four decimal octets, no leading zeros: inet_pton alone allows "01". */
    size_t start = 0;
    int octets = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            unsigned long v;
            if (!parse_uint(s + start, i - start, 255, &v) || ++octets > 4)
                return false;
            start = i + 1;
        }
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    return octets == 4 && inet_pton(AF_INET, buf, out) == 1;
}

static bool parse_ipv6(const char *s, size_t n, struct in6_addr *out)
{
    char buf[INET6_ADDRSTRLEN + 1];
    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(AF_INET6, buf, out) == 1;
}

static enum gw_pp_status parse_v1(const uint8_t *buf, size_t len, struct gw_pp_info *info,
                                  char *err, size_t errlen)
{
    /* Find the CRLF, within the spec's 107 bytes; a lone CR or LF is wrong. */
    size_t end = 0;
    bool found = false;
    for (size_t i = 0; i < len && i < GW_PP1_MAX - 1; i++) { /* CR at 105 at the latest */
        if (buf[i] == '\n')
            return bad(err, errlen, "v1: LF without CR");
        if (buf[i] == '\r') {
            if (i + 1 == len)
                return GW_PP_NEED_MORE;
            if (buf[i + 1] != '\n')
                return bad(err, errlen, "v1: CR without LF");
            end = i;
            found = true;
            break;
        }
        if (buf[i] < 0x20 || buf[i] > 0x7e)
            return bad(err, errlen, "v1: not a text line");
    }
    if (!found)
        return len >= GW_PP1_MAX - 1 ? bad(err, errlen, "v1: line longer than 107 bytes")
                                     : GW_PP_NEED_MORE;
    const char *line = (const char *)buf;
    /* Split on single spaces. */
    const char *tok[7];
    size_t toklen[7];
    int ntok = 0;
    size_t start = 0;
    for (size_t i = 0; i <= end; i++) {
        if (i == end || line[i] == ' ') {
            if (ntok == 7)
                return bad(err, errlen, "v1: too many fields");
            tok[ntok] = line + start;
            toklen[ntok] = i - start;
            ntok++;
            start = i + 1;
        }
    }
    info->version = 1;
    info->length = end + 2;
    if (ntok >= 2 && toklen[1] == 7 && memcmp(tok[1], "UNKNOWN", 7) == 0) {
        info->local = true; /* whatever follows is ignored, as the spec says */
        return GW_PP_OK;
    }
    bool v4 = ntok >= 2 && toklen[1] == 4 && memcmp(tok[1], "TCP4", 4) == 0;
    bool v6 = ntok >= 2 && toklen[1] == 4 && memcmp(tok[1], "TCP6", 4) == 0;
    if (!v4 && !v6)
        return bad(err, errlen, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
    if (ntok != 6)
        return bad(err, errlen, "v1: expected source, destination and two ports");
    for (int i = 0; i < ntok; i++)
        if (toklen[i] == 0)
            return bad(err, errlen, "v1: empty field (double space)");
    unsigned long sport, dport;
    if (!parse_uint(tok[4], toklen[4], 65535, &sport) ||
        !parse_uint(tok[5], toklen[5], 65535, &dport))
        return bad(err, errlen, "v1: bad port");
    memset(&info->src, 0, sizeof(info->src));
    memset(&info->dst, 0, sizeof(info->dst));
    if (v4) {
        struct sockaddr_in *s = (struct sockaddr_in *)&info->src;
        struct sockaddr_in *d = (struct sockaddr_in *)&info->dst;
        if (!parse_ipv4(tok[2], toklen[2], &s->sin_addr) ||
            !parse_ipv4(tok[3], toklen[3], &d->sin_addr))
            return bad(err, errlen, "v1: bad IPv4 address");
        s->sin_family = d->sin_family = AF_INET;
        s->sin_port = htons((uint16_t)sport);
        d->sin_port = htons((uint16_t)dport);
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&info->src;
        struct sockaddr_in6 *d = (struct sockaddr_in6 *)&info->dst;
        if (!parse_ipv6(tok[2], toklen[2], &s->sin6_addr) ||
            !parse_ipv6(tok[3], toklen[3], &d->sin6_addr))
            return bad(err, errlen, "v1: bad IPv6 address");
        s->sin6_family = d->sin6_family = AF_INET6;
        s->sin6_port = htons((uint16_t)sport);
        d->sin6_port = htons((uint16_t)dport);
    }
    info->has_addr = true;
    return GW_PP_OK;
}

/* ---- v2 --------------------------------------------------------------------------- */

static unsigned be16(const uint8_t *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static enum gw_pp_status parse_ssl(const uint8_t *v, size_t n, struct gw_pp_info *info, char *err,
                                   size_t errlen)
{
    if (n < 5)
        return bad(err, errlen, "v2: SSL TLV shorter than its fixed part");
    info->has_ssl = true;
    info->ssl_client = v[0];
    info->ssl_verify = (uint32_t)v[1] << 24 | (uint32_t)v[2] << 16 | (uint32_t)v[3] << 8 | v[4];
    size_t pos = 5;
    while (pos < n) {
        if (n - pos < 3)
            return bad(err, errlen, "v2: SSL sub-TLV header runs past the SSL TLV");
        uint8_t type = v[pos];
        size_t l = be16(v + pos + 1);
        if (l > n - pos - 3)
            return bad(err, errlen, "v2: SSL sub-TLV runs past the SSL TLV");
        struct gw_pp_bytes b = {v + pos + 3, l};
        if (type == GW_PP2_SUBTYPE_SSL_VERSION)
            info->ssl_version = b;
        else if (type == GW_PP2_SUBTYPE_SSL_CN)
            info->ssl_cn = b;
        else if (type == GW_PP2_SUBTYPE_SSL_CIPHER)
            info->ssl_cipher = b;
        else if (type == GW_PP2_SUBTYPE_SSL_SIG_ALG)
            info->ssl_sig_alg = b;
        else if (type == GW_PP2_SUBTYPE_SSL_KEY_ALG)
            info->ssl_key_alg = b;
        pos += 3 + l;
    }
    return GW_PP_OK;
}

static enum gw_pp_status parse_v2(const uint8_t *buf, size_t len, struct gw_pp_info *info,
                                  char *err, size_t errlen)
{
    if (len < GW_PP2_FIXED)
        return GW_PP_NEED_MORE;
    uint8_t ver = buf[12] & 0xf0, cmd = buf[12] & 0x0f;
    uint8_t fam = buf[13] & 0xf0, trans = buf[13] & 0x0f;
    size_t total = GW_PP2_FIXED + be16(buf + 14);
    if (ver != PP2_VERSION)
        return bad(err, errlen, "v2: unsupported version");
    if (cmd != PP2_CMD_LOCAL && cmd != PP2_CMD_PROXY)
        return bad(err, errlen, "v2: unknown command");
    if (fam > PP2_AF_UNIX || trans > 0x02)
        return bad(err, errlen, "v2: unknown address family or transport");
    if (len < total)
        return GW_PP_NEED_MORE;
    size_t addrlen = fam == PP2_AF_INET    ? 12
                     : fam == PP2_AF_INET6 ? 36
                     : fam == PP2_AF_UNIX  ? 216
                                           : 0;
    if (total - GW_PP2_FIXED < addrlen)
        return bad(err, errlen, "v2: length shorter than the address block");
    info->version = 2;
    info->length = total;
    info->local = cmd == PP2_CMD_LOCAL;
    const uint8_t *a = buf + GW_PP2_FIXED;
    if (!info->local && trans == PP2_TRANS_STREAM && (fam == PP2_AF_INET || fam == PP2_AF_INET6)) {
        memset(&info->src, 0, sizeof(info->src));
        memset(&info->dst, 0, sizeof(info->dst));
        if (fam == PP2_AF_INET) {
            struct sockaddr_in *s = (struct sockaddr_in *)&info->src;
            struct sockaddr_in *d = (struct sockaddr_in *)&info->dst;
            s->sin_family = d->sin_family = AF_INET;
            memcpy(&s->sin_addr, a, 4);
            memcpy(&d->sin_addr, a + 4, 4);
            memcpy(&s->sin_port, a + 8, 2);
            memcpy(&d->sin_port, a + 10, 2);
        } else {
            struct sockaddr_in6 *s = (struct sockaddr_in6 *)&info->src;
            struct sockaddr_in6 *d = (struct sockaddr_in6 *)&info->dst;
            s->sin6_family = d->sin6_family = AF_INET6;
            memcpy(&s->sin6_addr, a, 16);
            memcpy(&d->sin6_addr, a + 16, 16);
            memcpy(&s->sin6_port, a + 32, 2);
            memcpy(&d->sin6_port, a + 34, 2);
        }
        info->has_addr = true;
    } else if (!info->local) {
        /* UNSPEC, UNIX or datagrams: nothing a TCP gateway can use; keep the
         * connection's own addresses, as the spec allows. */
        info->local = true;
    }
    size_t pos = GW_PP2_FIXED + addrlen;
    size_t crc_at = 0;
    while (pos < total) {
        if (total - pos < 3)
            return bad(err, errlen, "v2: TLV header runs past the header's length");
        uint8_t type = buf[pos];
        size_t l = be16(buf + pos + 1);
        if (l > total - pos - 3)
            return bad(err, errlen, "v2: TLV runs past the header's length");
        struct gw_pp_bytes v = {buf + pos + 3, l};
        switch (type) {
        case GW_PP2_TYPE_ALPN:
            info->alpn = v;
            break;
        case GW_PP2_TYPE_AUTHORITY:
            info->authority = v;
            break;
        case GW_PP2_TYPE_UNIQUE_ID:
            if (l > 128)
                return bad(err, errlen, "v2: UNIQUE_ID longer than 128 bytes");
            info->unique_id = v;
            break;
        case GW_PP2_TYPE_CRC32C:
            if (l != 4)
                return bad(err, errlen, "v2: CRC32C TLV is not 4 bytes");
            if (info->has_crc32c)
                return bad(err, errlen, "v2: two CRC32C TLVs");
            info->has_crc32c = true;
            crc_at = pos + 3;
            break;
        case GW_PP2_TYPE_NOOP:
            break;
        case GW_PP2_TYPE_SSL: {
            enum gw_pp_status st = parse_ssl(v.p, l, info, err, errlen);
            if (st != GW_PP_OK)
                return st;
            break;
        }
        default:
            if (info->ncustom < GW_PP_MAX_CUSTOM) {
                info->custom[info->ncustom].type = type;
                info->custom[info->ncustom].value = v;
                info->ncustom++;
            }
        }
        pos += 3 + l;
    }
    if (crc_at != 0) {
        /* The checksum covers the whole header with its own field zeroed. */
        static const uint8_t zero[4] = {0};
        uint32_t crc = gw_crc32c(0, buf, crc_at);
        crc = gw_crc32c(crc, zero, 4);
        crc = gw_crc32c(crc, buf + crc_at + 4, total - crc_at - 4);
        uint32_t want = (uint32_t)buf[crc_at] << 24 | (uint32_t)buf[crc_at + 1] << 16 |
                        (uint32_t)buf[crc_at + 2] << 8 | buf[crc_at + 3];
        if (crc != want)
            return bad(err, errlen, "v2: CRC32C mismatch");
    }
    return GW_PP_OK;
}

enum gw_pp_status gw_pp_parse(const uint8_t *buf, size_t len, struct gw_pp_info *info, char *err,
                              size_t errlen)
{
    memset(info, 0, sizeof(*info));
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (len == 0)
        return GW_PP_NEED_MORE;
    /* Decide by the first bytes as soon as they disagree with both forms. */
    size_t n1 = len < 6 ? len : 6, n2 = len < 12 ? len : 12;
    if (memcmp(buf, "PROXY ", n1) == 0)
        return len < 6 ? GW_PP_NEED_MORE : parse_v1(buf, len, info, err, errlen);
    if (memcmp(buf, GW_PP2_SIGNATURE, n2) == 0)
        return len < 12 ? GW_PP_NEED_MORE : parse_v2(buf, len, info, err, errlen);
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "no PROXY protocol signature");
    return GW_PP_NOT_PROXY;
}

/* ---- builders ---------------------------------------------------------------------- */

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

/* Appends one TLV; false when it does not fit. */
static bool put_tlv(uint8_t *buf, size_t len, size_t *pos, uint8_t type, const void *v, size_t n)
{
    if (n > 0xffff || *pos + 3 + n > len)
        return false;
    buf[*pos] = type;
    buf[*pos + 1] = (uint8_t)(n >> 8);
    buf[*pos + 2] = (uint8_t)n;
    if (n > 0)
        memcpy(buf + *pos + 3, v, n);
    *pos += 3 + n;
    return true;
}

static bool put_ssl(const struct gw_pp2_extra *x, uint8_t *buf, size_t len, size_t *pos)
{
    uint8_t v[512];
    size_t n = 5;
    v[0] = GW_PP2_CLIENT_SSL | (x->ssl_client_cert ? GW_PP2_CLIENT_CERT_CONN : 0);
    memset(v + 1, 0, 4); /* verify: 0 = the client certificate (if any) verified */
    const char *subs[3] = {x->ssl_version, x->ssl_cipher, x->ssl_cn};
    const uint8_t types[3] = {GW_PP2_SUBTYPE_SSL_VERSION, GW_PP2_SUBTYPE_SSL_CIPHER,
                              GW_PP2_SUBTYPE_SSL_CN};
    for (int i = 0; i < 3; i++)
        if (subs[i] != NULL && !put_tlv(v, sizeof(v), &n, types[i], subs[i], strlen(subs[i])))
            return false;
    return put_tlv(buf, len, pos, GW_PP2_TYPE_SSL, v, n);
}

int gw_pp2_build(const struct sockaddr *src, const struct sockaddr *dst,
                 const struct gw_pp2_extra *extra, uint8_t *buf, size_t len)
{
    struct addr s = reduce(src), d = reduce(dst);
    bool local = src == NULL;
    size_t alen = 0;
    uint8_t fam = PP2_AF_UNSPEC;
    if (!local && s.family != 0 && s.family == d.family) {
        fam = (s.family == AF_INET ? PP2_AF_INET : PP2_AF_INET6) | PP2_TRANS_STREAM;
        alen = s.family == AF_INET ? 12 : 36;
    }
    if (len < GW_PP2_FIXED + alen)
        return -1;
    memcpy(buf, GW_PP2_SIGNATURE, 12);
    buf[12] = PP2_VERSION | (local ? PP2_CMD_LOCAL : PP2_CMD_PROXY);
    buf[13] = fam;
    if (alen > 0) {
        size_t w = s.family == AF_INET ? 4 : 16;
        uint8_t *a = buf + GW_PP2_FIXED;
        memcpy(a, s.bytes, w);
        memcpy(a + w, d.bytes, w);
        a[2 * w] = (uint8_t)(s.port >> 8);
        a[2 * w + 1] = (uint8_t)s.port;
        a[2 * w + 2] = (uint8_t)(d.port >> 8);
        a[2 * w + 3] = (uint8_t)d.port;
    }
    size_t pos = GW_PP2_FIXED + alen, crc_at = 0;
    if (extra != NULL && !local) {
        if (extra->authority != NULL && extra->authority[0] != '\0' &&
            !put_tlv(buf, len, &pos, GW_PP2_TYPE_AUTHORITY, extra->authority,
                     strlen(extra->authority)))
            return -1;
        if (extra->alpn != NULL && extra->alpn_len > 0 &&
            !put_tlv(buf, len, &pos, GW_PP2_TYPE_ALPN, extra->alpn, extra->alpn_len))
            return -1;
        if (extra->ssl && !put_ssl(extra, buf, len, &pos))
            return -1;
    }
    if (extra != NULL && extra->crc32c) {
        static const uint8_t zero[4] = {0};
        crc_at = pos + 3;
        if (!put_tlv(buf, len, &pos, GW_PP2_TYPE_CRC32C, zero, 4))
            return -1;
    }
    size_t body = pos - GW_PP2_FIXED;
    if (body > 0xffff)
        return -1;
    buf[14] = (uint8_t)(body >> 8);
    buf[15] = (uint8_t)body;
    if (crc_at != 0) {
        uint32_t crc = gw_crc32c(0, buf, pos);
        buf[crc_at] = (uint8_t)(crc >> 24);
        buf[crc_at + 1] = (uint8_t)(crc >> 16);
        buf[crc_at + 2] = (uint8_t)(crc >> 8);
        buf[crc_at + 3] = (uint8_t)crc;
    }
    return (int)pos;
}
