/* Fuzz target: the PROXY protocol header parser (gateway/gw_proxyproto.h).
 *
 * The input is what a peer sent first on a connection. It is parsed whole,
 * then as it could have arrived, cut short: a session parses whatever has come
 * so far and waits on GW_PP_NEED_MORE, so a prefix must never reach a verdict
 * the whole input would not (a valid header must not be rejected because a
 * segment ended mid-line). The same bytes also drive the v1 and v2 builders,
 * whose headers must parse back to what was put in. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>

#include "fuzz_util.h"
#include "gw_proxyproto.h"

static bool pp_status_known(enum gw_pp_status st)
{
    return st == GW_PP_NEED_MORE || st == GW_PP_OK || st == GW_PP_NOT_PROXY || st == GW_PP_BAD;
}

/* A byte view is empty or lies inside the header. */
static void pp_check_view(const uint8_t *buf, const struct gw_pp_info *info, struct gw_pp_bytes b)
{
    if (b.p == NULL) {
        FUZZ_CHECK(b.len == 0);
        return;
    }
    FUZZ_CHECK(b.p >= buf && b.p <= buf + info->length);
    FUZZ_CHECK(b.len <= (size_t)(buf + info->length - b.p));
}

static void pp_check_addr(const struct sockaddr_storage *ss)
{
    FUZZ_CHECK(ss->ss_family == AF_INET || ss->ss_family == AF_INET6);
}

/* What must hold of any single parse of buf[0..len). */
static void pp_check(const uint8_t *buf, size_t len, enum gw_pp_status st,
                     const struct gw_pp_info *info, const char *err)
{
    FUZZ_CHECK(pp_status_known(st));
    FUZZ_CHECK(fuzz_terminated(err, 128));
    if (st == GW_PP_BAD || st == GW_PP_NOT_PROXY)
        FUZZ_CHECK(err[0] != '\0'); /* a rejection says why */
    if (st != GW_PP_OK)
        return;
    FUZZ_CHECK(info->length > 0 && info->length <= len);
    if (info->version == 1) {
        FUZZ_CHECK(info->length <= GW_PP1_MAX);
        FUZZ_CHECK(memcmp(buf, "PROXY ", 6) == 0);
        FUZZ_CHECK(buf[info->length - 2] == '\r' && buf[info->length - 1] == '\n');
    } else {
        FUZZ_CHECK(info->version == 2);
        FUZZ_CHECK(info->length >= GW_PP2_FIXED);
        FUZZ_CHECK(memcmp(buf, GW_PP2_SIGNATURE, sizeof(GW_PP2_SIGNATURE)) == 0);
        FUZZ_CHECK(info->length == GW_PP2_FIXED + ((size_t)buf[14] << 8 | buf[15]));
    }
    if (info->has_addr) {
        FUZZ_CHECK(!info->local);
        pp_check_addr(&info->src);
        pp_check_addr(&info->dst);
        FUZZ_CHECK(info->src.ss_family == info->dst.ss_family);
    }
    FUZZ_CHECK(info->has_addr || info->local); /* a usable header says whose addresses to use */
    FUZZ_CHECK(info->ncustom <= GW_PP_MAX_CUSTOM);
    const struct gw_pp_bytes views[] = {info->alpn,        info->authority,  info->unique_id,
                                        info->ssl_version, info->ssl_cn,     info->ssl_cipher,
                                        info->ssl_sig_alg, info->ssl_key_alg};
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++)
        pp_check_view(buf, info, views[i]);
    for (size_t i = 0; i < info->ncustom; i++)
        pp_check_view(buf, info, info->custom[i].value);
    FUZZ_CHECK(info->unique_id.len <= 128);
}

/* Two views, each into its own copy of the same bytes, point at the same place. */
static bool pp_same_view(const uint8_t *a0, struct gw_pp_bytes a, const uint8_t *b0,
                         struct gw_pp_bytes b)
{
    if (a.len != b.len || (a.p == NULL) != (b.p == NULL))
        return false;
    return a.p == NULL || a.p - a0 == b.p - b0;
}

/* Two successful parses of the same header agree on everything. */
static void pp_check_same(const uint8_t *a0, const struct gw_pp_info *a, const uint8_t *b0,
                          const struct gw_pp_info *b)
{
    FUZZ_CHECK(a->version == b->version && a->length == b->length && a->local == b->local);
    FUZZ_CHECK(a->has_addr == b->has_addr);
    if (a->has_addr) {
        FUZZ_CHECK(memcmp(&a->src, &b->src, sizeof(a->src)) == 0);
        FUZZ_CHECK(memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0);
    }
    FUZZ_CHECK(pp_same_view(a0, a->alpn, b0, b->alpn));
    FUZZ_CHECK(pp_same_view(a0, a->authority, b0, b->authority));
    FUZZ_CHECK(pp_same_view(a0, a->unique_id, b0, b->unique_id));
    FUZZ_CHECK(a->has_crc32c == b->has_crc32c && a->has_ssl == b->has_ssl);
    FUZZ_CHECK(a->ssl_client == b->ssl_client && a->ssl_verify == b->ssl_verify);
    FUZZ_CHECK(pp_same_view(a0, a->ssl_version, b0, b->ssl_version));
    FUZZ_CHECK(pp_same_view(a0, a->ssl_cn, b0, b->ssl_cn));
    FUZZ_CHECK(pp_same_view(a0, a->ssl_cipher, b0, b->ssl_cipher));
    FUZZ_CHECK(a->ncustom == b->ncustom);
    for (size_t i = 0; i < a->ncustom; i++) {
        FUZZ_CHECK(a->custom[i].type == b->custom[i].type);
        FUZZ_CHECK(pp_same_view(a0, a->custom[i].value, b0, b->custom[i].value));
    }
}

/* ---- the incremental view ----------------------------------------------------------- */

static void pp_check_prefixes(const uint8_t *data, size_t size, const uint8_t *whole_buf,
                              enum gw_pp_status whole, const struct gw_pp_info *whole_info)
{
    size_t cuts[64];
    size_t ncuts = fuzz_prefixes(size, whole == GW_PP_OK ? whole_info->length : 0, cuts);
    for (size_t i = 0; i < ncuts; i++) {
        size_t k = cuts[i];
        uint8_t *buf = fuzz_copy(data, k);
        struct gw_pp_info info;
        char err[128];
        enum gw_pp_status st = gw_pp_parse(buf, k, &info, err, sizeof(err));
        pp_check(buf, k, st, &info, err);
        if (st != GW_PP_NEED_MORE) {
            /* Whatever a prefix decides, more bytes must not change. */
            if (st != whole)
                fprintf(stderr, "prefix %zu of %zu: status %d, whole: %d (%s)\n", k, size, st,
                        whole, err);
            FUZZ_CHECK(st == whole);
            if (st == GW_PP_OK)
                pp_check_same(buf, &info, whole_buf, whole_info);
        }
        /* Once the whole header is in, the answer no longer waits. */
        if (whole == GW_PP_OK && k >= whole_info->length)
            FUZZ_CHECK(st == GW_PP_OK);
        free(buf);
    }
}

/* ---- the builders --------------------------------------------------------------------- */

/* The address the builders see: a v4-mapped IPv6 address counts as IPv4. */
static int pp_reduced_family(const struct sockaddr_storage *ss)
{
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    if (ss->ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
        return AF_INET;
    return ss->ss_family;
}

/* Fills ss from 19 bytes: a selector, 16 address bytes and a port. */
static void pp_make_addr(const uint8_t *p, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    uint16_t port;
    memcpy(&port, p + 17, 2);
    if (p[0] & 1) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, p + 1, 16);
        if (p[0] & 2) { /* v4-mapped, which the builders must treat as IPv4 */
            memset(&in6->sin6_addr, 0, 10);
            in6->sin6_addr.s6_addr[10] = in6->sin6_addr.s6_addr[11] = 0xff;
        }
        in6->sin6_port = port;
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, p + 1, 4);
        in->sin_port = port;
    }
}

/* The parsed address equals the one given, once v4-mapped ones are reduced. */
static void pp_check_addr_equal(const struct sockaddr_storage *want,
                                const struct sockaddr_storage *got)
{
    const uint8_t *wa;
    uint16_t wport;
    if (want->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)want;
        wa = (const uint8_t *)&in->sin_addr;
        wport = in->sin_port;
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)want;
        wa = in6->sin6_addr.s6_addr + (pp_reduced_family(want) == AF_INET ? 12 : 0);
        wport = in6->sin6_port;
    }
    FUZZ_CHECK(got->ss_family == pp_reduced_family(want));
    if (got->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)got;
        FUZZ_CHECK(memcmp(&in->sin_addr, wa, 4) == 0 && in->sin_port == wport);
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)got;
        FUZZ_CHECK(memcmp(&in6->sin6_addr, wa, 16) == 0 && in6->sin6_port == wport);
    }
}

/* A string of at most max bytes from data, stopping at a NUL. */
static size_t pp_take_str(const uint8_t *data, size_t size, size_t *pos, size_t max, char *out)
{
    size_t n = 0;
    while (*pos < size && n < max && data[*pos] != '\0')
        out[n++] = (char)data[(*pos)++];
    if (*pos < size)
        (*pos)++; /* the terminator, or the byte the limit stopped at */
    out[n] = '\0';
    return n;
}

static void pp_check_builders(const uint8_t *data, size_t size)
{
    if (size < 39)
        return;
    struct sockaddr_storage src, dst;
    pp_make_addr(data, &src);
    pp_make_addr(data + 19, &dst);
    uint8_t flags = data[38];
    size_t pos = 39;
    bool same = pp_reduced_family(&src) == pp_reduced_family(&dst);

    /* v1 */
    char line[GW_PP1_MAX + 1];
    int n = gw_pp1_build((struct sockaddr *)&src, (struct sockaddr *)&dst, line, sizeof(line));
    FUZZ_CHECK(n > 0 && (size_t)n < sizeof(line));
    uint8_t *buf = fuzz_copy((const uint8_t *)line, (size_t)n);
    struct gw_pp_info info;
    char err[128];
    enum gw_pp_status st = gw_pp_parse(buf, (size_t)n, &info, err, sizeof(err));
    FUZZ_CHECK(st == GW_PP_OK && info.version == 1 && info.length == (size_t)n);
    FUZZ_CHECK(info.has_addr == same);
    if (same) {
        pp_check_addr_equal(&src, &info.src);
        pp_check_addr_equal(&dst, &info.dst);
    }
    free(buf);

    /* v2, with what the fuzzer chose to carry */
    char authority[65], alpn[33], cn[33];
    pp_take_str(data, size, &pos, 64, authority);
    size_t alpn_len = pp_take_str(data, size, &pos, 32, alpn);
    pp_take_str(data, size, &pos, 32, cn);
    struct gw_pp2_extra extra = {
        .authority = authority,
        .alpn = (const uint8_t *)alpn,
        .alpn_len = alpn_len,
        .ssl = flags & 1,
        .ssl_client_cert = flags & 2,
        .ssl_version = (flags & 4) ? "TLSv1.3" : NULL,
        .ssl_cipher = (flags & 8) ? "TLS_AES_128_GCM_SHA256" : NULL,
        .ssl_cn = cn[0] != '\0' ? cn : NULL,
        .crc32c = flags & 16,
    };
    bool local = flags & 32;
    uint8_t hdr[1024];
    n = gw_pp2_build(local ? NULL : (struct sockaddr *)&src, (struct sockaddr *)&dst, &extra, hdr,
                     sizeof(hdr));
    FUZZ_CHECK(n >= GW_PP2_FIXED && (size_t)n <= sizeof(hdr));
    buf = fuzz_copy(hdr, (size_t)n);
    st = gw_pp_parse(buf, (size_t)n, &info, err, sizeof(err));
    if (st != GW_PP_OK)
        fprintf(stderr, "built v2 header rejected: %s\n", err);
    FUZZ_CHECK(st == GW_PP_OK && info.version == 2 && info.length == (size_t)n);
    FUZZ_CHECK(info.has_crc32c == extra.crc32c);
    if (local) {
        FUZZ_CHECK(info.local && !info.has_addr);
    } else {
        FUZZ_CHECK(info.has_addr == same && info.local == !same);
        if (same) {
            pp_check_addr_equal(&src, &info.src);
            pp_check_addr_equal(&dst, &info.dst);
        }
        size_t alen = strlen(authority);
        FUZZ_CHECK(info.authority.len == alen);
        FUZZ_CHECK(alen == 0 || memcmp(info.authority.p, authority, alen) == 0);
        FUZZ_CHECK(info.alpn.len == alpn_len);
        FUZZ_CHECK(alpn_len == 0 || memcmp(info.alpn.p, alpn, alpn_len) == 0);
        FUZZ_CHECK(info.has_ssl == extra.ssl);
        if (extra.ssl) {
            FUZZ_CHECK((info.ssl_client & GW_PP2_CLIENT_SSL) != 0);
            FUZZ_CHECK(((info.ssl_client & GW_PP2_CLIENT_CERT_CONN) != 0) == extra.ssl_client_cert);
            FUZZ_CHECK(info.ssl_version.len == (extra.ssl_version ? 7 : 0));
            FUZZ_CHECK(info.ssl_cn.len == (extra.ssl_cn ? strlen(extra.ssl_cn) : 0));
        }
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = fuzz_copy(data, size);
    struct gw_pp_info info;
    char err[128];
    enum gw_pp_status st = gw_pp_parse(buf, size, &info, err, sizeof(err));
    pp_check(buf, size, st, &info, err);
    pp_check_prefixes(data, size, buf, st, &info);
    free(buf);
    pp_check_builders(data, size);
    return 0;
}
