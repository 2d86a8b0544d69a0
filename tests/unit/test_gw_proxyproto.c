/* Unit tests for gateway/gw_proxyproto.c: the PROXY protocol v1/v2 parser,
 * the v1 and v2 builders, and CRC-32C.
 *
 * The headers come from haproxy's doc/proxy-protocol.txt: its v1 examples
 * (the worst cases of TCP4, TCP6 and UNKNOWN, and the 192.168.0.1 example
 * followed by an HTTP request) and the v2 layouts it specifies (LOCAL, PROXY
 * over INET/INET6, UNSPEC, UNIX, TLVs), built byte by byte here.
 *
 * Every parse is handed a heap buffer of exactly the bytes it may read, so the
 * sanitizer build catches a read past them. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "gw_proxyproto.h"

/* ---- helpers ---------------------------------------------------------------------- */

/* A parse over a heap copy of exactly n bytes. The copy stays alive (views in
 * info point into it) until pp_free. */
struct pp {
    uint8_t *buf;
    struct gw_pp_info info;
    char err[128];
    enum gw_pp_status st;
};

static enum gw_pp_status pp_parse(struct pp *p, const void *data, size_t n)
{
    p->buf = malloc(n > 0 ? n : 1);
    assert_non_null(p->buf);
    if (n > 0)
        memcpy(p->buf, data, n);
    memset(p->err, 'x', sizeof(p->err));
    p->err[sizeof(p->err) - 1] = '\0';
    p->st = gw_pp_parse(p->buf, n, &p->info, p->err, sizeof(p->err));
    return p->st;
}

static void pp_free(struct pp *p)
{
    free(p->buf);
    p->buf = NULL;
}

/* The status alone; the buffer is freed at once. */
static enum gw_pp_status status_of(const void *data, size_t n)
{
    struct pp p;
    enum gw_pp_status st = pp_parse(&p, data, n);
    if (st == GW_PP_BAD)
        assert_true(p.err[0] != '\0' && p.err[0] != 'x'); /* BAD says why */
    pp_free(&p);
    return st;
}

static enum gw_pp_status status_str(const char *s)
{
    return status_of(s, strlen(s));
}

#define assert_status(data, n, want)                                                               \
    do {                                                                                           \
        enum gw_pp_status got_ = status_of((data), (n));                                           \
        if (got_ != (want))                                                                        \
            fail_msg("%s:%d: status %d, want %d", __FILE__, __LINE__, (int)got_, (int)(want));     \
    } while (0)

#define assert_status_str(s, want)                                                                 \
    do {                                                                                           \
        enum gw_pp_status got_ = status_str(s);                                                    \
        if (got_ != (want))                                                                        \
            fail_msg("%s:%d: %s -> status %d, want %d", __FILE__, __LINE__, (s), (int)got_,        \
                     (int)(want));                                                                 \
    } while (0)

static void assert_bytes(struct gw_pp_bytes b, const char *want)
{
    size_t n = strlen(want);
    if (b.len != n || (n > 0 && memcmp(b.p, want, n) != 0))
        fail_msg("bytes %.*s (%zu), want %s (%zu)", (int)b.len, b.p ? (const char *)b.p : "", b.len,
                 want, n);
}

static void assert_v4(const struct sockaddr_storage *ss, const char *ip, unsigned port)
{
    const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
    assert_int_equal(in->sin_family, AF_INET);
    char got[INET_ADDRSTRLEN];
    assert_non_null(inet_ntop(AF_INET, &in->sin_addr, got, sizeof(got)));
    assert_string_equal(got, ip);
    assert_int_equal(ntohs(in->sin_port), port);
}

static void assert_v6(const struct sockaddr_storage *ss, const char *ip, unsigned port)
{
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    assert_int_equal(in6->sin6_family, AF_INET6);
    struct in6_addr want;
    assert_int_equal(inet_pton(AF_INET6, ip, &want), 1);
    assert_memory_equal(&in6->sin6_addr, &want, 16);
    assert_int_equal(ntohs(in6->sin6_port), port);
}

static struct sockaddr_in sin4(const char *ip, unsigned port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
    return a;
}

static struct sockaddr_in6 sin6(const char *ip, unsigned port)
{
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof(a));
    a.sin6_family = AF_INET6;
    a.sin6_port = htons((uint16_t)port);
    assert_int_equal(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
    return a;
}

/* ---- v2 header assembly ------------------------------------------------------------ */

struct bb {
    uint8_t d[70000];
    size_t n;
};

static void bb_put(struct bb *b, const void *p, size_t n)
{
    assert_true(b->n + n <= sizeof(b->d));
    memcpy(b->d + b->n, p, n);
    b->n += n;
}

static void bb_u8(struct bb *b, unsigned v)
{
    uint8_t x = (uint8_t)v;
    bb_put(b, &x, 1);
}

static void bb_u16(struct bb *b, unsigned v)
{
    bb_u8(b, v >> 8);
    bb_u8(b, v & 0xff);
}

static void bb_tlv(struct bb *b, unsigned type, const void *v, size_t n)
{
    bb_u8(b, type);
    bb_u16(b, (unsigned)n);
    bb_put(b, v, n);
}

/* Starts a v2 header: signature, ver/cmd, fam/trans, a length set by v2_end. */
static void v2_begin(struct bb *b, unsigned ver_cmd, unsigned fam_trans)
{
    b->n = 0;
    bb_put(b, GW_PP2_SIGNATURE, 12);
    bb_u8(b, ver_cmd);
    bb_u8(b, fam_trans);
    bb_u16(b, 0);
}

static void v2_end(struct bb *b)
{
    size_t body = b->n - GW_PP2_FIXED;
    assert_true(body <= 0xffff);
    b->d[14] = (uint8_t)(body >> 8);
    b->d[15] = (uint8_t)body;
}

static void v2_inet(struct bb *b, const char *src, const char *dst, unsigned sp, unsigned dp)
{
    struct in_addr s, d;
    assert_int_equal(inet_pton(AF_INET, src, &s), 1);
    assert_int_equal(inet_pton(AF_INET, dst, &d), 1);
    bb_put(b, &s, 4);
    bb_put(b, &d, 4);
    bb_u16(b, sp);
    bb_u16(b, dp);
}

static void v2_inet6(struct bb *b, const char *src, const char *dst, unsigned sp, unsigned dp)
{
    struct in6_addr s, d;
    assert_int_equal(inet_pton(AF_INET6, src, &s), 1);
    assert_int_equal(inet_pton(AF_INET6, dst, &d), 1);
    bb_put(b, &s, 16);
    bb_put(b, &d, 16);
    bb_u16(b, sp);
    bb_u16(b, dp);
}

/* An independent, table-driven CRC-32C (reflected 0x82F63B78). */
static uint32_t ref_crc32c(const uint8_t *p, size_t n)
{
    static uint32_t table[256];
    static bool ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
            table[i] = c;
        }
        ready = true;
    }
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++)
        crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return crc ^ 0xffffffffu;
}

/* Appends a CRC32C TLV, finishes the length and fills in the checksum over
 * the whole header with the field zeroed. Returns the value's offset. */
static size_t v2_end_crc(struct bb *b)
{
    static const uint8_t zero[4] = {0};
    bb_tlv(b, GW_PP2_TYPE_CRC32C, zero, 4);
    size_t at = b->n - 4;
    v2_end(b);
    uint32_t crc = ref_crc32c(b->d, b->n);
    b->d[at] = (uint8_t)(crc >> 24);
    b->d[at + 1] = (uint8_t)(crc >> 16);
    b->d[at + 2] = (uint8_t)(crc >> 8);
    b->d[at + 3] = (uint8_t)crc;
    return at;
}

/* An SSL TLV value: client bits, verify, then sub-TLVs given as
 * (type, string) pairs ending with type 0. */
static size_t ssl_value(uint8_t *v, size_t cap, unsigned client, uint32_t verify, ...)
{
    size_t n = 0;
    assert_true(cap >= 5);
    v[n++] = (uint8_t)client;
    v[n++] = (uint8_t)(verify >> 24);
    v[n++] = (uint8_t)(verify >> 16);
    v[n++] = (uint8_t)(verify >> 8);
    v[n++] = (uint8_t)verify;
    va_list ap;
    va_start(ap, verify);
    for (;;) {
        unsigned type = va_arg(ap, unsigned);
        if (type == 0)
            break;
        const char *s = va_arg(ap, const char *);
        size_t l = strlen(s);
        assert_true(n + 3 + l <= cap);
        v[n++] = (uint8_t)type;
        v[n++] = (uint8_t)(l >> 8);
        v[n++] = (uint8_t)l;
        memcpy(v + n, s, l);
        n += l;
    }
    va_end(ap);
    return n;
}

/* Every strict prefix of a valid header is NEED_MORE, never a verdict. */
static void assert_every_prefix_needs_more(const uint8_t *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        enum gw_pp_status st = status_of(h, i);
        if (st != GW_PP_NEED_MORE)
            fail_msg("prefix of %zu of %zu bytes: status %d, want NEED_MORE", i, n, (int)st);
    }
}

/* ---- CRC-32C ------------------------------------------------------------------------ */

static void test_crc32c_vector(void **state)
{
    (void)state;
    const uint8_t *v = (const uint8_t *)"123456789";
    assert_int_equal(gw_crc32c(0, v, 9), 0xE3069283u);
    assert_int_equal(ref_crc32c(v, 9), 0xE3069283u);
    /* Incremental: the running value continues. */
    assert_int_equal(gw_crc32c(gw_crc32c(0, v, 4), v + 4, 5), 0xE3069283u);
    assert_int_equal(gw_crc32c(0, v, 0), 0);
    /* 32 zero bytes: the iSCSI (RFC 3720, B.4) vector. */
    uint8_t z[32] = {0};
    assert_int_equal(gw_crc32c(0, z, sizeof(z)), 0x8A9136AAu);
    uint8_t ff[32];
    memset(ff, 0xff, sizeof(ff));
    assert_int_equal(gw_crc32c(0, ff, sizeof(ff)), 0x62A8AB43u);
}

/* ---- v1 ----------------------------------------------------------------------------- */

#define FFFF6 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
static const char V1_TCP4_MAX[] = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
static const char V1_TCP6_MAX[] = "PROXY TCP6 " FFFF6 " " FFFF6 " 65535 65535\r\n";
static const char V1_UNKNOWN[] = "PROXY UNKNOWN\r\n";
static const char V1_UNKNOWN_MAX[] = "PROXY UNKNOWN " FFFF6 " " FFFF6 " 65535 65535\r\n";
static const char V1_SPEC_EXAMPLE[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";

static void test_v1_spec_examples(void **state)
{
    (void)state;
    /* The spec's sizes: 56, 104, 15 and 107 bytes. */
    assert_int_equal(strlen(V1_TCP4_MAX), 56);
    assert_int_equal(strlen(V1_TCP6_MAX), 104);
    assert_int_equal(strlen(V1_UNKNOWN), 15);
    assert_int_equal(strlen(V1_UNKNOWN_MAX), GW_PP1_MAX);

    struct pp p;
    assert_int_equal(pp_parse(&p, V1_TCP4_MAX, strlen(V1_TCP4_MAX)), GW_PP_OK);
    assert_int_equal(p.info.version, 1);
    assert_false(p.info.local);
    assert_true(p.info.has_addr);
    assert_int_equal(p.info.length, 56);
    assert_v4(&p.info.src, "255.255.255.255", 65535);
    assert_v4(&p.info.dst, "255.255.255.255", 65535);
    pp_free(&p);

    assert_int_equal(pp_parse(&p, V1_TCP6_MAX, strlen(V1_TCP6_MAX)), GW_PP_OK);
    assert_int_equal(p.info.version, 1);
    assert_true(p.info.has_addr);
    assert_int_equal(p.info.length, 104);
    assert_v6(&p.info.src, FFFF6, 65535);
    assert_v6(&p.info.dst, FFFF6, 65535);
    pp_free(&p);

    assert_int_equal(pp_parse(&p, V1_UNKNOWN, strlen(V1_UNKNOWN)), GW_PP_OK);
    assert_int_equal(p.info.version, 1);
    assert_true(p.info.local);
    assert_false(p.info.has_addr);
    assert_int_equal(p.info.length, 15);
    pp_free(&p);

    /* UNKNOWN's long form: the rest of the line is ignored. */
    assert_int_equal(pp_parse(&p, V1_UNKNOWN_MAX, strlen(V1_UNKNOWN_MAX)), GW_PP_OK);
    assert_true(p.info.local);
    assert_false(p.info.has_addr);
    assert_int_equal(p.info.length, 107);
    pp_free(&p);

    /* The spec's example with the request behind it: the header's length is
     * that of the line alone. */
    char req[256];
    snprintf(req, sizeof(req), "%sGET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n", V1_SPEC_EXAMPLE);
    assert_int_equal(pp_parse(&p, req, strlen(req)), GW_PP_OK);
    assert_int_equal(p.info.length, strlen(V1_SPEC_EXAMPLE));
    assert_v4(&p.info.src, "192.168.0.1", 56324);
    assert_v4(&p.info.dst, "192.168.0.11", 443);
    pp_free(&p);

    /* A NULL error buffer is allowed. */
    struct gw_pp_info info;
    const uint8_t bad[] = "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n";
    assert_int_equal(gw_pp_parse(bad, sizeof(bad) - 1, &info, NULL, 0), GW_PP_BAD);
    assert_int_equal(gw_pp_parse((const uint8_t *)"GET", 3, &info, NULL, 0), GW_PP_NOT_PROXY);
}

static void test_v1_every_prefix(void **state)
{
    (void)state;
    const char *all[] = {V1_TCP4_MAX,
                         V1_TCP6_MAX,
                         V1_UNKNOWN,
                         V1_UNKNOWN_MAX,
                         V1_SPEC_EXAMPLE,
                         "PROXY TCP6 2001:db8::1 ::1 1 0\r\n",
                         "PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n"};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        assert_status_str(all[i], GW_PP_OK);
        assert_every_prefix_needs_more((const uint8_t *)all[i], strlen(all[i]));
    }
}

static void test_v1_length_limit(void **state)
{
    (void)state;
    /* 107 bytes, CRLF included: the longest line allowed. */
    char line[160];
    snprintf(line, sizeof(line), "PROXY UNKNOWN %s %s 65535 65535\r\n", FFFF6, FFFF6);
    assert_int_equal(strlen(line), 107);
    assert_status_str(line, GW_PP_OK);
    /* ...followed by payload, still 107. */
    char more[200];
    snprintf(more, sizeof(more), "%sSSH-2.0-x\r\n", line);
    struct pp p;
    assert_int_equal(pp_parse(&p, more, strlen(more)), GW_PP_OK);
    assert_int_equal(p.info.length, 107);
    pp_free(&p);

    /* 108 bytes: one more digit. */
    snprintf(line, sizeof(line), "PROXY UNKNOWN %s %s 65535 655350\r\n", FFFF6, FFFF6);
    assert_int_equal(strlen(line), 108);
    assert_status_str(line, GW_PP_BAD);
    /* It is rejected as soon as 106 bytes arrived without the CR... */
    assert_status(line, 106, GW_PP_BAD);
    /* ...and not before. */
    assert_status(line, 105, GW_PP_NEED_MORE);

    /* A TCP4 line padded to 108 bytes with a long host part. */
    char pad[160];
    memset(pad, '1', sizeof(pad));
    snprintf(line, sizeof(line), "PROXY TCP4 1.2.3.4 5.6.7.8 1 2%.*s\r\n", 108 - 32, pad);
    assert_int_equal(strlen(line), 108);
    assert_status_str(line, GW_PP_BAD);

    /* Endless text that starts like a header is never NEED_MORE forever. */
    char endless[400];
    memset(endless, 'A', sizeof(endless));
    memcpy(endless, "PROXY ", 6);
    assert_status(endless, sizeof(endless), GW_PP_BAD);
}

static void test_v1_lone_cr_lf(void **state)
{
    (void)state;
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n", GW_PP_BAD);
    assert_status_str("PROXY UNKNOWN\n", GW_PP_BAD);
    assert_status_str("PROXY UNKNOWN\r ", GW_PP_BAD);
    /* The CR alone at the end of the input: wait for what follows. */
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", GW_PP_NEED_MORE);
    assert_status_str("PROXY \n", GW_PP_BAD);
}

static void test_v1_leading_zeros(void **state)
{
    (void)state;
    assert_status_str("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.02.3.4 5.6.7.8 1 2\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.004 5.6.7.8 1 2\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.00 1 2\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 010.6.7.8 1 2\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 065535\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP6 ::1 ::1 01 2\r\n", GW_PP_BAD);
    /* A lone zero is a number, not a leading zero. */
    struct pp p;
    const char *zero = "PROXY TCP4 0.0.0.0 10.0.0.1 0 0\r\n";
    assert_int_equal(pp_parse(&p, zero, strlen(zero)), GW_PP_OK);
    assert_v4(&p.info.src, "0.0.0.0", 0);
    assert_v4(&p.info.dst, "10.0.0.1", 0);
    pp_free(&p);
}

static void test_v1_ports(void **state)
{
    (void)state;
    struct pp p;
    const char *ok = "PROXY TCP4 1.2.3.4 5.6.7.8 65535 1\r\n";
    assert_int_equal(pp_parse(&p, ok, strlen(ok)), GW_PP_OK);
    assert_v4(&p.info.src, "1.2.3.4", 65535);
    assert_v4(&p.info.dst, "5.6.7.8", 1);
    pp_free(&p);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 100000 1\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 4294967297 1\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 -1 1\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 +1 1\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 0x10 1\r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n", GW_PP_BAD);
    assert_status_str("PROXY TCP6 ::1 ::1 65536 1\r\n", GW_PP_BAD);
}

static void test_v1_malformed(void **state)
{
    (void)state;
    const char *bad[] = {
        "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY \r\n",
        "PROXY TCP4\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n",
        "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
        "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        "PROXY TCP6 ::1 1.2.3.4 1 2\r\n",
        "PROXY TCP6 ::1::2 ::1 1 2\r\n",
        "PROXY TCP6 fe80::1%lo ::1 1 2\r\n",
        "PROXY TCP6 [::1] ::1 1 2\r\n",
        "PROXY UNKNOWNX\r\n",
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_status_str(bad[i], GW_PP_BAD);
    /* Not text: a NUL and a high byte inside the line. */
    const uint8_t nul[] = "PROXY TCP4 1.2.3.4\0005.6.7.8 1 2\r\n";
    assert_status(nul, sizeof(nul) - 1, GW_PP_BAD);
    const uint8_t high[] = "PROXY TCP4 1.2.3.\xc4 5.6.7.8 1 2\r\n";
    assert_status(high, sizeof(high) - 1, GW_PP_BAD);
}

static void test_v1_ipv6(void **state)
{
    (void)state;
    struct pp p;
    const char *h = "PROXY TCP6 2001:db8::1 2001:db8:0:1::2 51234 8443\r\nhello";
    assert_int_equal(pp_parse(&p, h, strlen(h)), GW_PP_OK);
    assert_int_equal(p.info.version, 1);
    assert_true(p.info.has_addr);
    assert_false(p.info.local);
    assert_int_equal(p.info.length, strlen(h) - 5);
    assert_v6(&p.info.src, "2001:db8::1", 51234);
    assert_v6(&p.info.dst, "2001:db8:0:1::2", 8443);
    pp_free(&p);
    /* A v4-mapped address in a TCP6 line is an IPv6 address to the parser. */
    const char *m = "PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n";
    assert_int_equal(pp_parse(&p, m, strlen(m)), GW_PP_OK);
    assert_v6(&p.info.src, "::ffff:192.0.2.1", 1);
    pp_free(&p);
}

/* ---- not a PROXY header at all ------------------------------------------------------ */

static void test_not_proxy_early(void **state)
{
    (void)state;
    assert_status("", 0, GW_PP_NEED_MORE);
    /* The first byte already differs from both signatures. */
    assert_status("G", 1, GW_PP_NOT_PROXY);
    assert_status("\x16", 1, GW_PP_NOT_PROXY); /* a TLS record */
    assert_status("\x00", 1, GW_PP_NOT_PROXY);
    assert_status("p", 1, GW_PP_NOT_PROXY);
    assert_status_str("GET / HTTP/1.1\r\n\r\n", GW_PP_NOT_PROXY);
    assert_status_str("SSH-2.0-OpenSSH_9.2\r\n", GW_PP_NOT_PROXY);

    /* "PROXY ": NEED_MORE up to the first differing byte, then NOT_PROXY. */
    const char *sig1 = "PROXY ";
    for (size_t k = 0; k < 6; k++) {
        char b[8];
        memcpy(b, sig1, k);
        assert_status(b, k, GW_PP_NEED_MORE);
        b[k] = (char)(sig1[k] ^ 0x20); /* "proxy " style: lowercase, and "\0" for the space */
        assert_status(b, k + 1, GW_PP_NOT_PROXY);
        b[k] = 'Z';
        assert_status(b, k + 1, GW_PP_NOT_PROXY);
    }
    /* The v2 signature: the same at each of its 12 bytes. */
    for (size_t k = 0; k < 12; k++) {
        uint8_t b[16];
        memcpy(b, GW_PP2_SIGNATURE, k);
        assert_status(b, k, GW_PP_NEED_MORE);
        b[k] = (uint8_t)(GW_PP2_SIGNATURE[k] ^ 0x01);
        assert_status(b, k + 1, GW_PP_NOT_PROXY);
        /* Whatever follows does not matter once a byte differed. */
        memset(b + k + 1, 0, sizeof(b) - k - 1);
        assert_status(b, sizeof(b), GW_PP_NOT_PROXY);
    }
    /* "PROXY" without its space. */
    assert_status_str("PROXY\r\n", GW_PP_NOT_PROXY);
    assert_status_str("PROXYTCP4", GW_PP_NOT_PROXY);
}

/* ---- v2 ----------------------------------------------------------------------------- */

static void test_v2_local(void **state)
{
    (void)state;
    struct bb *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    struct pp p;
    /* LOCAL, UNSPEC, no address block. */
    v2_begin(b, 0x20, 0x00);
    v2_end(b);
    assert_int_equal(b->n, 16);
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_int_equal(p.info.version, 2);
    assert_true(p.info.local);
    assert_false(p.info.has_addr);
    assert_int_equal(p.info.length, 16);
    pp_free(&p);
    assert_every_prefix_needs_more(b->d, b->n);

    /* LOCAL with an INET address block: the addresses are skipped, unused. */
    v2_begin(b, 0x20, 0x11);
    v2_inet(b, "10.1.2.3", "10.4.5.6", 1000, 2000);
    v2_end(b);
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_true(p.info.local);
    assert_false(p.info.has_addr);
    assert_int_equal(p.info.length, 28);
    pp_free(&p);
    free(b);
}

static void test_v2_proxy_inet(void **state)
{
    (void)state;
    struct bb *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    struct pp p;
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "192.0.2.10", "198.51.100.20", 51000, 443);
    v2_end(b);
    assert_int_equal(b->n, 28);
    assert_every_prefix_needs_more(b->d, b->n);
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_int_equal(p.info.version, 2);
    assert_false(p.info.local);
    assert_true(p.info.has_addr);
    assert_int_equal(p.info.length, 28);
    assert_v4(&p.info.src, "192.0.2.10", 51000);
    assert_v4(&p.info.dst, "198.51.100.20", 443);
    assert_int_equal(p.info.alpn.len, 0);
    assert_int_equal(p.info.authority.len, 0);
    assert_false(p.info.has_ssl);
    assert_false(p.info.has_crc32c);
    assert_int_equal(p.info.ncustom, 0);
    pp_free(&p);

    /* The same with TLVs: ALPN, AUTHORITY, NOOP, UNIQUE_ID. */
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "192.0.2.10", "198.51.100.20", 51000, 443);
    bb_tlv(b, GW_PP2_TYPE_ALPN, "h2", 2);
    bb_tlv(b, GW_PP2_TYPE_AUTHORITY, "app.example.com", 15);
    bb_tlv(b, GW_PP2_TYPE_NOOP, "\0\0\0", 3);
    bb_tlv(b, GW_PP2_TYPE_UNIQUE_ID, "id-42", 5);
    bb_tlv(b, GW_PP2_TYPE_NOOP, "", 0);
    v2_end(b);
    assert_every_prefix_needs_more(b->d, b->n);
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_int_equal(p.info.length, b->n);
    assert_v4(&p.info.src, "192.0.2.10", 51000);
    assert_bytes(p.info.alpn, "h2");
    assert_bytes(p.info.authority, "app.example.com");
    assert_bytes(p.info.unique_id, "id-42");
    assert_int_equal(p.info.ncustom, 0); /* NOOP is not kept */
    /* The views point into the parsed buffer. */
    assert_true(p.info.alpn.p > p.buf && p.info.alpn.p < p.buf + b->n);
    pp_free(&p);
    free(b);
}

static void test_v2_proxy_inet6(void **state)
{
    (void)state;
    struct bb *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    struct pp p;
    v2_begin(b, 0x21, 0x21);
    v2_inet6(b, "2001:db8::7", "2001:db8::8", 40000, 8443);
    v2_end(b);
    assert_int_equal(b->n, 52);
    assert_every_prefix_needs_more(b->d, b->n);
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_false(p.info.local);
    assert_true(p.info.has_addr);
    assert_int_equal(p.info.length, 52);
    assert_v6(&p.info.src, "2001:db8::7", 40000);
    assert_v6(&p.info.dst, "2001:db8::8", 8443);
    pp_free(&p);

    v2_begin(b, 0x21, 0x21);
    v2_inet6(b, "::1", "fe80::1", 1, 65535);
    bb_tlv(b, GW_PP2_TYPE_AUTHORITY, "v6.example.net", 14);
    bb_tlv(b, GW_PP2_TYPE_ALPN, "http/1.1", 8);
    v2_end_crc(b);
    assert_every_prefix_needs_more(b->d, b->n);
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_v6(&p.info.src, "::1", 1);
    assert_v6(&p.info.dst, "fe80::1", 65535);
    assert_bytes(p.info.authority, "v6.example.net");
    assert_bytes(p.info.alpn, "http/1.1");
    assert_true(p.info.has_crc32c);
    pp_free(&p);
    free(b);
}

static void test_v2_unusable_families(void **state)
{
    (void)state;
    struct bb *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    struct pp p;
    /* PROXY over UNSPEC: no addresses; the connection's own are kept. */
    v2_begin(b, 0x21, 0x00);
    v2_end(b);
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_true(p.info.local);
    assert_false(p.info.has_addr);
    pp_free(&p);
    /* UNIX stream: 216 bytes of paths. */
    v2_begin(b, 0x21, 0x31);
    uint8_t paths[216] = {0};
    memcpy(paths, "/run/a.sock", 11);
    memcpy(paths + 108, "/run/b.sock", 11);
    bb_put(b, paths, sizeof(paths));
    bb_tlv(b, GW_PP2_TYPE_AUTHORITY, "u", 1);
    v2_end(b);
    assert_every_prefix_needs_more(b->d, b->n);
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_true(p.info.local);
    assert_false(p.info.has_addr);
    assert_int_equal(p.info.length, 16 + 216 + 4);
    assert_bytes(p.info.authority, "u");
    pp_free(&p);
    /* UDP over IPv4: parsed and skipped, not a TCP source. */
    v2_begin(b, 0x21, 0x12);
    v2_inet(b, "1.2.3.4", "5.6.7.8", 53, 53);
    v2_end(b);
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_true(p.info.local);
    assert_false(p.info.has_addr);
    pp_free(&p);
    free(b);
}

static void test_v2_bad_fixed_part(void **state)
{
    (void)state;
    struct bb *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    const struct {
        unsigned vc, ft;
    } bad[] = {
        {0x11, 0x11}, /* version 1 in a v2 signature */
        {0x31, 0x11}, /* version 3 */
        {0x01, 0x11}, /* version 0 */
        {0x22, 0x11}, /* command 2 */
        {0x2f, 0x11}, /* command 15 */
        {0x21, 0x41}, /* family 4 */
        {0x21, 0xf1}, /* family 15 */
        {0x21, 0x13}, /* transport 3 */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v2_begin(b, bad[i].vc, bad[i].ft);
        v2_inet(b, "1.2.3.4", "5.6.7.8", 1, 2);
        v2_end(b);
        assert_status(b->d, b->n, GW_PP_BAD);
        /* Known from the fixed 16 bytes: no need to wait for the rest. */
        assert_status(b->d, 16, GW_PP_BAD);
    }
    /* A length shorter than the family's address block. */
    const struct {
        unsigned ft;
        size_t len;
    } short_[] = {{0x11, 11}, {0x11, 0}, {0x21, 35}, {0x21, 12}, {0x31, 215}};
    for (size_t i = 0; i < sizeof(short_) / sizeof(short_[0]); i++) {
        v2_begin(b, 0x21, short_[i].ft);
        uint8_t zeros[256] = {0};
        bb_put(b, zeros, short_[i].len);
        v2_end(b);
        assert_status(b->d, b->n, GW_PP_BAD);
    }
    free(b);
}

static void test_v2_length_honoured(void **state)
{
    (void)state;
    struct bb *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    struct pp p;
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "203.0.113.5", "203.0.113.6", 1234, 5678);
    v2_end(b);
    size_t hdr = b->n;
    /* Payload behind the header (here: a TLS record and a v1 line) is not
     * part of it. */
    bb_put(b, "\x16\x03\x01\x00\x05hello", 10);
    bb_put(b, V1_SPEC_EXAMPLE, strlen(V1_SPEC_EXAMPLE));
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_int_equal(p.info.length, hdr);
    assert_v4(&p.info.src, "203.0.113.5", 1234);
    pp_free(&p);

    /* The length covers padding after the addresses (a NOOP here): all of it
     * belongs to the header. */
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "203.0.113.5", "203.0.113.6", 1234, 5678);
    uint8_t pad[1000] = {0};
    bb_tlv(b, GW_PP2_TYPE_NOOP, pad, sizeof(pad));
    v2_end(b);
    hdr = b->n;
    bb_put(b, "payload", 7);
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_int_equal(p.info.length, hdr);
    pp_free(&p);
    assert_status(b->d, hdr - 1, GW_PP_NEED_MORE);

    /* The largest length, 65535: everything up to it is NEED_MORE. */
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "203.0.113.5", "203.0.113.6", 1234, 5678);
    static uint8_t big[65535 - 12 - 3];
    memset(big, 'n', sizeof(big));
    bb_tlv(b, 0xE0, big, sizeof(big));
    v2_end(b);
    assert_int_equal(b->n, 16 + 65535);
    assert_status(b->d, 16 + 65534, GW_PP_NEED_MORE);
    assert_status(b->d, 16 + 100, GW_PP_NEED_MORE);
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_int_equal(p.info.length, 16 + 65535);
    assert_int_equal(p.info.ncustom, 1);
    assert_int_equal(p.info.custom[0].value.len, sizeof(big));
    pp_free(&p);
    free(b);
}

static void test_v2_tlv_overrun_underrun(void **state)
{
    (void)state;
    struct bb *b = calloc(1, sizeof(*b));
    assert_non_null(b);

    /* Overrun: a TLV's length runs past the header's length. */
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "1.2.3.4", "5.6.7.8", 1, 2);
    bb_u8(b, GW_PP2_TYPE_ALPN);
    bb_u16(b, 3);
    bb_put(b, "h2", 2); /* one byte short */
    v2_end(b);
    assert_status(b->d, b->n, GW_PP_BAD);
    /* ...even when bytes follow in the buffer (they are payload). */
    bb_put(b, "XYZ", 3);
    assert_status(b->d, b->n, GW_PP_BAD);

    /* Overrun by one byte on the last of several TLVs. */
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "1.2.3.4", "5.6.7.8", 1, 2);
    bb_tlv(b, GW_PP2_TYPE_AUTHORITY, "a.example", 9);
    bb_u8(b, 0xE1);
    bb_u16(b, 0x0100);
    bb_put(b, "x", 1);
    v2_end(b);
    assert_status(b->d, b->n, GW_PP_BAD);

    /* Underrun: the header's length leaves 1 or 2 bytes, too few for a TLV. */
    for (size_t extra = 1; extra <= 2; extra++) {
        v2_begin(b, 0x21, 0x11);
        v2_inet(b, "1.2.3.4", "5.6.7.8", 1, 2);
        bb_tlv(b, GW_PP2_TYPE_ALPN, "h2", 2);
        bb_put(b, "\x01\x00", extra);
        v2_end(b);
        assert_status(b->d, b->n, GW_PP_BAD);
    }
    /* Underrun: a TLV's length is shorter than its value, so the rest of the
     * value is read as a TLV that does not fit. */
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "1.2.3.4", "5.6.7.8", 1, 2);
    bb_u8(b, GW_PP2_TYPE_AUTHORITY);
    bb_u16(b, 1);
    bb_put(b, "ab", 2);
    v2_end(b);
    assert_status(b->d, b->n, GW_PP_BAD);

    /* The same faults inside the SSL TLV. */
    uint8_t v[64];
    size_t n =
        ssl_value(v, sizeof(v), GW_PP2_CLIENT_SSL, 0, GW_PP2_SUBTYPE_SSL_VERSION, "TLSv1.3", 0);
    /* A sub-TLV longer than the SSL TLV. */
    v[7]++;
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "1.2.3.4", "5.6.7.8", 1, 2);
    bb_tlv(b, GW_PP2_TYPE_SSL, v, n);
    v2_end(b);
    assert_status(b->d, b->n, GW_PP_BAD);
    /* A sub-TLV header cut (one or two bytes left). */
    v[7]--;
    for (size_t extra = 1; extra <= 2; extra++) {
        uint8_t w[64];
        memcpy(w, v, n);
        memcpy(w + n, "\x22\x00", extra);
        v2_begin(b, 0x21, 0x11);
        v2_inet(b, "1.2.3.4", "5.6.7.8", 1, 2);
        bb_tlv(b, GW_PP2_TYPE_SSL, w, n + extra);
        v2_end(b);
        assert_status(b->d, b->n, GW_PP_BAD);
    }
    /* An SSL TLV shorter than its client and verify fields. */
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "1.2.3.4", "5.6.7.8", 1, 2);
    bb_tlv(b, GW_PP2_TYPE_SSL, "\x01\x00\x00\x00", 4);
    v2_end(b);
    assert_status(b->d, b->n, GW_PP_BAD);

    /* CRC32C of the wrong size, or twice. */
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "1.2.3.4", "5.6.7.8", 1, 2);
    bb_tlv(b, GW_PP2_TYPE_CRC32C, "\0\0\0", 3);
    v2_end(b);
    assert_status(b->d, b->n, GW_PP_BAD);
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "1.2.3.4", "5.6.7.8", 1, 2);
    bb_tlv(b, GW_PP2_TYPE_CRC32C, "\0\0\0\0\0", 5);
    v2_end(b);
    assert_status(b->d, b->n, GW_PP_BAD);
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "1.2.3.4", "5.6.7.8", 1, 2);
    bb_tlv(b, GW_PP2_TYPE_CRC32C, "\0\0\0\0", 4);
    v2_end_crc(b);
    assert_status(b->d, b->n, GW_PP_BAD);

    /* A UNIQUE_ID of 128 bytes is allowed, 129 is not. */
    uint8_t id[129];
    memset(id, 'u', sizeof(id));
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "1.2.3.4", "5.6.7.8", 1, 2);
    bb_tlv(b, GW_PP2_TYPE_UNIQUE_ID, id, 128);
    v2_end(b);
    assert_status(b->d, b->n, GW_PP_OK);
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "1.2.3.4", "5.6.7.8", 1, 2);
    bb_tlv(b, GW_PP2_TYPE_UNIQUE_ID, id, 129);
    v2_end(b);
    assert_status(b->d, b->n, GW_PP_BAD);
    free(b);
}

static void test_v2_crc32c(void **state)
{
    (void)state;
    struct bb *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    struct pp p;
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "192.0.2.1", "192.0.2.2", 33333, 6379);
    bb_tlv(b, GW_PP2_TYPE_AUTHORITY, "redis.example.com", 17);
    bb_tlv(b, GW_PP2_TYPE_ALPN, "resp", 4);
    size_t crc_at = v2_end_crc(b);
    size_t n = b->n;
    assert_int_equal(pp_parse(&p, b->d, n), GW_PP_OK);
    assert_true(p.info.has_crc32c);
    assert_bytes(p.info.authority, "redis.example.com");
    pp_free(&p);
    assert_every_prefix_needs_more(b->d, n);
    /* With payload after it, the checksum still covers the header alone. */
    bb_put(b, "PING\r\n", 6);
    assert_status(b->d, b->n, GW_PP_OK);
    b->n = n;

    /* A flipped bit anywhere the checksum protects and the structure does
     * not: the addresses, the TLV values, the checksum itself. */
    size_t positions[64], np = 0;
    for (size_t i = 16; i < 28; i++)
        positions[np++] = i; /* addresses and ports */
    for (size_t i = 28 + 3; i < 28 + 3 + 17; i += 4)
        positions[np++] = i;           /* the AUTHORITY value */
    positions[np++] = 28 + 3 + 17 + 3; /* the ALPN value */
    for (size_t i = crc_at; i < crc_at + 4; i++)
        positions[np++] = i;
    positions[np++] = 13; /* INET -> INET6 is also caught, as BAD of some kind */
    for (size_t k = 0; k < np; k++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            b->d[positions[k]] ^= (uint8_t)(1u << bit);
            enum gw_pp_status st = status_of(b->d, n);
            b->d[positions[k]] ^= (uint8_t)(1u << bit);
            if (st != GW_PP_BAD)
                fail_msg("bit %u of byte %zu flipped: status %d, want BAD", bit, positions[k],
                         (int)st);
        }
    }
    /* A checksum of 0 is a wrong checksum, not "no checksum". */
    memset(b->d + crc_at, 0, 4);
    assert_status(b->d, n, GW_PP_BAD);
    free(b);
}

static void test_v2_ssl_tlv(void **state)
{
    (void)state;
    struct bb *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    struct pp p;
    uint8_t v[256];
    size_t n = ssl_value(
        v, sizeof(v), GW_PP2_CLIENT_SSL | GW_PP2_CLIENT_CERT_CONN | GW_PP2_CLIENT_CERT_SESS,
        0x01020304u, GW_PP2_SUBTYPE_SSL_VERSION, "TLSv1.3", GW_PP2_SUBTYPE_SSL_CN, "client-alice",
        GW_PP2_SUBTYPE_SSL_CIPHER, "TLS_AES_256_GCM_SHA384", GW_PP2_SUBTYPE_SSL_SIG_ALG, "SHA256",
        GW_PP2_SUBTYPE_SSL_KEY_ALG, "EC256", 0x2f, "an unknown sub-TLV", 0);
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "10.0.0.1", "10.0.0.2", 4000, 443);
    bb_tlv(b, GW_PP2_TYPE_SSL, v, n);
    bb_tlv(b, 0xE0, "custom-one", 10);
    bb_tlv(b, GW_PP2_TYPE_NETNS, "ns1", 3);
    bb_tlv(b, 0xEE, "", 0);
    v2_end(b);
    assert_every_prefix_needs_more(b->d, b->n);
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_true(p.info.has_ssl);
    assert_int_equal(p.info.ssl_client,
                     GW_PP2_CLIENT_SSL | GW_PP2_CLIENT_CERT_CONN | GW_PP2_CLIENT_CERT_SESS);
    assert_int_equal(p.info.ssl_verify, 0x01020304u);
    assert_bytes(p.info.ssl_version, "TLSv1.3");
    assert_bytes(p.info.ssl_cn, "client-alice");
    assert_bytes(p.info.ssl_cipher, "TLS_AES_256_GCM_SHA384");
    assert_bytes(p.info.ssl_sig_alg, "SHA256");
    assert_bytes(p.info.ssl_key_alg, "EC256");
    /* Custom TLVs are kept, in order, with their values. */
    assert_int_equal(p.info.ncustom, 3);
    assert_int_equal(p.info.custom[0].type, 0xE0);
    assert_bytes(p.info.custom[0].value, "custom-one");
    assert_int_equal(p.info.custom[1].type, GW_PP2_TYPE_NETNS);
    assert_bytes(p.info.custom[1].value, "ns1");
    assert_int_equal(p.info.custom[2].type, 0xEE);
    assert_int_equal(p.info.custom[2].value.len, 0);
    pp_free(&p);

    /* An SSL TLV with no sub-TLVs: a TLS connection without a certificate. */
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "10.0.0.1", "10.0.0.2", 4000, 443);
    bb_tlv(b, GW_PP2_TYPE_SSL, "\x01\x00\x00\x00\x00", 5);
    v2_end(b);
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_true(p.info.has_ssl);
    assert_int_equal(p.info.ssl_client, GW_PP2_CLIENT_SSL);
    assert_int_equal(p.info.ssl_verify, 0);
    assert_int_equal(p.info.ssl_version.len, 0);
    assert_int_equal(p.info.ssl_cn.len, 0);
    pp_free(&p);

    /* More custom TLVs than are kept: the first ones are, the header is fine. */
    v2_begin(b, 0x21, 0x11);
    v2_inet(b, "10.0.0.1", "10.0.0.2", 4000, 443);
    for (unsigned i = 0; i < GW_PP_MAX_CUSTOM + 4; i++) {
        uint8_t x = (uint8_t)i;
        bb_tlv(b, 0xE0 + i, &x, 1);
    }
    v2_end(b);
    assert_int_equal(pp_parse(&p, b->d, b->n), GW_PP_OK);
    assert_int_equal(p.info.ncustom, GW_PP_MAX_CUSTOM);
    for (unsigned i = 0; i < GW_PP_MAX_CUSTOM; i++) {
        assert_int_equal(p.info.custom[i].type, 0xE0 + i);
        assert_int_equal(p.info.custom[i].value.len, 1);
        assert_int_equal(p.info.custom[i].value.p[0], i);
    }
    pp_free(&p);
    free(b);
}

/* ---- builders and round trips ------------------------------------------------------ */

static void test_v1_build_round_trip(void **state)
{
    (void)state;
    char buf[GW_PP1_MAX + 1];
    struct pp p;
    struct sockaddr_in s4 = sin4("192.0.2.33", 51515), d4 = sin4("198.51.100.1", 6379);
    int n = gw_pp1_build((struct sockaddr *)&s4, (struct sockaddr *)&d4, buf, sizeof(buf));
    assert_int_equal(n, (int)strlen("PROXY TCP4 192.0.2.33 198.51.100.1 51515 6379\r\n"));
    assert_memory_equal(buf, "PROXY TCP4 192.0.2.33 198.51.100.1 51515 6379\r\n", (size_t)n);
    assert_int_equal(pp_parse(&p, buf, (size_t)n), GW_PP_OK);
    assert_int_equal(p.info.length, (size_t)n);
    assert_v4(&p.info.src, "192.0.2.33", 51515);
    assert_v4(&p.info.dst, "198.51.100.1", 6379);
    pp_free(&p);
    /* Too small a buffer, at every size: -1. */
    for (size_t len = 0; len <= (size_t)n; len++)
        assert_int_equal(gw_pp1_build((struct sockaddr *)&s4, (struct sockaddr *)&d4, buf, len),
                         -1);

    /* IPv6, the longest: fits in 104 bytes. */
    struct sockaddr_in6 s6 = sin6(FFFF6, 65535), d6 = sin6("2001:db8::1", 0);
    n = gw_pp1_build((struct sockaddr *)&s6, (struct sockaddr *)&d6, buf, sizeof(buf));
    assert_true(n > 0 && n <= 104);
    assert_int_equal(pp_parse(&p, buf, (size_t)n), GW_PP_OK);
    assert_v6(&p.info.src, FFFF6, 65535);
    assert_v6(&p.info.dst, "2001:db8::1", 0);
    pp_free(&p);
    s6 = sin6(FFFF6, 65535);
    d6 = sin6(FFFF6, 65535);
    n = gw_pp1_build((struct sockaddr *)&s6, (struct sockaddr *)&d6, buf, sizeof(buf));
    assert_int_equal(n, 104);
    assert_memory_equal(buf, V1_TCP6_MAX, 104);

    /* v4-mapped IPv6 (a dual-stack listener's IPv4 client) becomes TCP4. */
    struct sockaddr_in6 m1 = sin6("::ffff:203.0.113.9", 40001), m2 = sin6("::ffff:10.0.0.1", 443);
    n = gw_pp1_build((struct sockaddr *)&m1, (struct sockaddr *)&m2, buf, sizeof(buf));
    assert_true(n > 0);
    assert_memory_equal(buf, "PROXY TCP4 203.0.113.9 10.0.0.1 40001 443\r\n", (size_t)n);
    assert_int_equal(pp_parse(&p, buf, (size_t)n), GW_PP_OK);
    assert_v4(&p.info.src, "203.0.113.9", 40001);
    assert_v4(&p.info.dst, "10.0.0.1", 443);
    pp_free(&p);
    /* ...also when only one side is mapped and the other is IPv4. */
    n = gw_pp1_build((struct sockaddr *)&m1, (struct sockaddr *)&d4, buf, sizeof(buf));
    assert_memory_equal(buf, "PROXY TCP4 203.0.113.9 198.51.100.1 40001 6379\r\n", (size_t)n);

    /* Mixed families: UNKNOWN, which parses as LOCAL. */
    n = gw_pp1_build((struct sockaddr *)&s4, (struct sockaddr *)&d6, buf, sizeof(buf));
    assert_int_equal(n, 15);
    assert_memory_equal(buf, "PROXY UNKNOWN\r\n", 15);
    assert_int_equal(pp_parse(&p, buf, (size_t)n), GW_PP_OK);
    assert_true(p.info.local);
    assert_false(p.info.has_addr);
    pp_free(&p);
    /* A non-IP source: UNKNOWN too. */
    struct sockaddr_storage unix_ss;
    memset(&unix_ss, 0, sizeof(unix_ss));
    unix_ss.ss_family = AF_UNIX;
    n = gw_pp1_build((struct sockaddr *)&unix_ss, (struct sockaddr *)&d4, buf, sizeof(buf));
    assert_int_equal(n, 15);
    assert_memory_equal(buf, "PROXY UNKNOWN\r\n", 15);
}

static void test_v2_build_round_trip(void **state)
{
    (void)state;
    uint8_t buf[1024];
    struct pp p;
    struct sockaddr_in s4 = sin4("192.0.2.33", 51515), d4 = sin4("198.51.100.1", 8443);
    static const uint8_t alpn[] = "h2";
    struct gw_pp2_extra x = {.authority = "app.example.com",
                             .alpn = alpn,
                             .alpn_len = 2,
                             .ssl = true,
                             .ssl_client_cert = true,
                             .ssl_version = "TLSv1.3",
                             .ssl_cipher = "TLS_AES_128_GCM_SHA256",
                             .ssl_cn = "client-alice",
                             .crc32c = true};
    int n = gw_pp2_build((struct sockaddr *)&s4, (struct sockaddr *)&d4, &x, buf, sizeof(buf));
    assert_true(n > 28);
    assert_memory_equal(buf, GW_PP2_SIGNATURE, 12);
    assert_int_equal(buf[12], 0x21);
    assert_int_equal(buf[13], 0x11);
    assert_int_equal((size_t)(buf[14] << 8 | buf[15]), (size_t)n - 16);
    assert_every_prefix_needs_more(buf, (size_t)n);
    assert_int_equal(pp_parse(&p, buf, (size_t)n), GW_PP_OK);
    assert_int_equal(p.info.version, 2);
    assert_int_equal(p.info.length, (size_t)n);
    assert_false(p.info.local);
    assert_true(p.info.has_addr);
    assert_v4(&p.info.src, "192.0.2.33", 51515);
    assert_v4(&p.info.dst, "198.51.100.1", 8443);
    assert_bytes(p.info.authority, "app.example.com");
    assert_bytes(p.info.alpn, "h2");
    assert_true(p.info.has_ssl);
    assert_int_equal(p.info.ssl_client, GW_PP2_CLIENT_SSL | GW_PP2_CLIENT_CERT_CONN);
    assert_int_equal(p.info.ssl_verify, 0);
    assert_bytes(p.info.ssl_version, "TLSv1.3");
    assert_bytes(p.info.ssl_cipher, "TLS_AES_128_GCM_SHA256");
    assert_bytes(p.info.ssl_cn, "client-alice");
    assert_true(p.info.has_crc32c);
    assert_int_equal(p.info.ncustom, 0);
    pp_free(&p);
    /* The checksum agrees with the independent implementation. */
    {
        uint8_t copy[1024];
        memcpy(copy, buf, (size_t)n);
        size_t at = (size_t)n - 4;
        assert_int_equal(copy[at - 3], GW_PP2_TYPE_CRC32C);
        uint32_t got = (uint32_t)copy[at] << 24 | (uint32_t)copy[at + 1] << 16 |
                       (uint32_t)copy[at + 2] << 8 | copy[at + 3];
        memset(copy + at, 0, 4);
        assert_int_equal(got, ref_crc32c(copy, (size_t)n));
    }
    /* Flip one byte of the address: the checksum no longer holds. */
    buf[20] ^= 0x40;
    assert_status(buf, (size_t)n, GW_PP_BAD);
    buf[20] ^= 0x40;
    assert_status(buf, (size_t)n, GW_PP_OK);
    /* Too small a buffer, at every size: -1. */
    for (size_t len = 0; len < (size_t)n; len++) {
        uint8_t *small = malloc(len > 0 ? len : 1);
        assert_non_null(small);
        assert_int_equal(
            gw_pp2_build((struct sockaddr *)&s4, (struct sockaddr *)&d4, &x, small, len), -1);
        free(small);
    }

    /* No client certificate, no CN: the SSL TLV says only "TLS". */
    struct gw_pp2_extra y = {.ssl = true, .ssl_version = "TLSv1.2", .ssl_cipher = "ECDHE"};
    n = gw_pp2_build((struct sockaddr *)&s4, (struct sockaddr *)&d4, &y, buf, sizeof(buf));
    assert_int_equal(pp_parse(&p, buf, (size_t)n), GW_PP_OK);
    assert_true(p.info.has_ssl);
    assert_int_equal(p.info.ssl_client, GW_PP2_CLIENT_SSL);
    assert_bytes(p.info.ssl_version, "TLSv1.2");
    assert_int_equal(p.info.ssl_cn.len, 0);
    assert_int_equal(p.info.authority.len, 0);
    assert_int_equal(p.info.alpn.len, 0);
    assert_false(p.info.has_crc32c);
    pp_free(&p);

    /* No extras at all: the 28-byte address-only header. An empty authority
     * is no TLV. */
    n = gw_pp2_build((struct sockaddr *)&s4, (struct sockaddr *)&d4, NULL, buf, sizeof(buf));
    assert_int_equal(n, 28);
    struct gw_pp2_extra empty = {.authority = "", .alpn = alpn, .alpn_len = 0};
    n = gw_pp2_build((struct sockaddr *)&s4, (struct sockaddr *)&d4, &empty, buf, sizeof(buf));
    assert_int_equal(n, 28);
    assert_int_equal(pp_parse(&p, buf, (size_t)n), GW_PP_OK);
    assert_v4(&p.info.src, "192.0.2.33", 51515);
    assert_int_equal(p.info.authority.len, 0);
    pp_free(&p);

    /* IPv6. */
    struct sockaddr_in6 s6 = sin6("2001:db8::33", 1), d6 = sin6("2001:db8::1", 65535);
    n = gw_pp2_build((struct sockaddr *)&s6, (struct sockaddr *)&d6, &x, buf, sizeof(buf));
    assert_true(n > 52);
    assert_int_equal(buf[13], 0x21);
    assert_int_equal(pp_parse(&p, buf, (size_t)n), GW_PP_OK);
    assert_v6(&p.info.src, "2001:db8::33", 1);
    assert_v6(&p.info.dst, "2001:db8::1", 65535);
    assert_bytes(p.info.authority, "app.example.com");
    assert_true(p.info.has_crc32c);
    pp_free(&p);

    /* v4-mapped IPv6 becomes INET (0x11) with 12 address bytes. */
    struct sockaddr_in6 m1 = sin6("::ffff:203.0.113.9", 40001), m2 = sin6("::ffff:10.0.0.1", 443);
    n = gw_pp2_build((struct sockaddr *)&m1, (struct sockaddr *)&m2, NULL, buf, sizeof(buf));
    assert_int_equal(n, 28);
    assert_int_equal(buf[13], 0x11);
    assert_int_equal(pp_parse(&p, buf, (size_t)n), GW_PP_OK);
    assert_v4(&p.info.src, "203.0.113.9", 40001);
    assert_v4(&p.info.dst, "10.0.0.1", 443);
    pp_free(&p);

    /* Mixed families: PROXY over UNSPEC, which keeps the connection's own. */
    n = gw_pp2_build((struct sockaddr *)&s4, (struct sockaddr *)&d6, NULL, buf, sizeof(buf));
    assert_int_equal(n, 16);
    assert_int_equal(buf[12], 0x21);
    assert_int_equal(buf[13], 0x00);
    assert_int_equal(pp_parse(&p, buf, (size_t)n), GW_PP_OK);
    assert_false(p.info.has_addr);
    pp_free(&p);
}

static void test_v2_build_local(void **state)
{
    (void)state;
    uint8_t buf[256];
    struct pp p;
    struct sockaddr_in d4 = sin4("198.51.100.1", 8443);
    int n = gw_pp2_build(NULL, (struct sockaddr *)&d4, NULL, buf, sizeof(buf));
    assert_int_equal(n, 16);
    assert_memory_equal(buf, GW_PP2_SIGNATURE, 12);
    assert_int_equal(buf[12], 0x20);
    assert_int_equal(buf[13], 0x00);
    assert_int_equal(buf[14], 0);
    assert_int_equal(buf[15], 0);
    assert_int_equal(pp_parse(&p, buf, (size_t)n), GW_PP_OK);
    assert_int_equal(p.info.version, 2);
    assert_true(p.info.local);
    assert_false(p.info.has_addr);
    assert_int_equal(p.info.length, 16);
    pp_free(&p);
    /* A LOCAL header carries no connection details, but may be checksummed. */
    struct gw_pp2_extra x = {.authority = "app.example.com", .ssl = true, .crc32c = true};
    n = gw_pp2_build(NULL, NULL, &x, buf, sizeof(buf));
    assert_int_equal(n, 16 + 7);
    assert_int_equal(pp_parse(&p, buf, (size_t)n), GW_PP_OK);
    assert_true(p.info.local);
    assert_true(p.info.has_crc32c);
    assert_int_equal(p.info.authority.len, 0);
    assert_false(p.info.has_ssl);
    pp_free(&p);
    assert_int_equal(gw_pp2_build(NULL, NULL, NULL, buf, 15), -1);
    assert_int_equal(gw_pp2_build(NULL, NULL, NULL, buf, 16), 16);
}

/* Random headers built by the builders always parse back; random bytes after
 * a valid prefix never crash the parser (under the sanitizers). */
static uint32_t rnd_seed = 12345;

static unsigned rnd(void)
{
    rnd_seed = rnd_seed * 1103515245u + 12345u;
    return (rnd_seed >> 16) & 0x7fff;
}

static void test_random_round_trips(void **state)
{
    (void)state;
    rnd_seed = 12345;
#define RND() rnd()
    for (int iter = 0; iter < 2000; iter++) {
        uint8_t buf[1024];
        char sni[64], cipher[40];
        struct sockaddr_in s4 = sin4("0.0.0.0", 0), d4 = sin4("0.0.0.0", 0);
        uint32_t a = (uint32_t)RND() << 16;
        a |= RND();
        uint32_t b = (uint32_t)RND() << 16;
        b |= RND();
        memcpy(&s4.sin_addr, &a, 4);
        memcpy(&d4.sin_addr, &b, 4);
        s4.sin_port = htons((uint16_t)RND());
        d4.sin_port = htons((uint16_t)(RND() * 2));
        size_t sl = RND() % 40;
        for (size_t i = 0; i < sl; i++)
            sni[i] = (char)('a' + RND() % 26);
        sni[sl] = '\0';
        snprintf(cipher, sizeof(cipher), "CIPHER-%u", (unsigned)RND());
        struct gw_pp2_extra x = {.authority = sni,
                                 .alpn = (const uint8_t *)"http/1.1",
                                 .alpn_len = RND() % 9,
                                 .ssl = RND() & 1,
                                 .ssl_version = "TLSv1.3",
                                 .ssl_cipher = cipher,
                                 .crc32c = RND() & 1};
        int n = gw_pp2_build((struct sockaddr *)&s4, (struct sockaddr *)&d4, &x, buf, sizeof(buf));
        assert_true(n >= 28);
        struct pp p;
        assert_int_equal(pp_parse(&p, buf, (size_t)n), GW_PP_OK);
        assert_int_equal(p.info.length, (size_t)n);
        assert_memory_equal(&((struct sockaddr_in *)&p.info.src)->sin_addr, &a, 4);
        assert_memory_equal(&((struct sockaddr_in *)&p.info.dst)->sin_addr, &b, 4);
        assert_int_equal(((struct sockaddr_in *)&p.info.src)->sin_port, s4.sin_port);
        assert_int_equal(((struct sockaddr_in *)&p.info.dst)->sin_port, d4.sin_port);
        assert_bytes(p.info.authority, sni);
        assert_int_equal(p.info.alpn.len, x.alpn_len);
        assert_int_equal(p.info.has_ssl, x.ssl);
        assert_int_equal(p.info.has_crc32c, x.crc32c);
        pp_free(&p);
        /* A random byte changed: any status, but a sane one, and OK only
         * with a length inside the buffer. */
        size_t at = RND() % (size_t)n;
        buf[at] = (uint8_t)RND();
        enum gw_pp_status st = pp_parse(&p, buf, (size_t)n);
        assert_true(st == GW_PP_OK || st == GW_PP_BAD || st == GW_PP_NEED_MORE ||
                    st == GW_PP_NOT_PROXY);
        if (st == GW_PP_OK)
            assert_true(p.info.length <= (size_t)n);
        pp_free(&p);

        char line[GW_PP1_MAX + 1];
        n = gw_pp1_build((struct sockaddr *)&s4, (struct sockaddr *)&d4, line, sizeof(line));
        assert_true(n > 0);
        assert_int_equal(pp_parse(&p, line, (size_t)n), GW_PP_OK);
        assert_memory_equal(&((struct sockaddr_in *)&p.info.src)->sin_addr, &a, 4);
        assert_int_equal(((struct sockaddr_in *)&p.info.dst)->sin_port, d4.sin_port);
        pp_free(&p);
    }
#undef RND
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vector),
        cmocka_unit_test(test_v1_spec_examples),
        cmocka_unit_test(test_v1_every_prefix),
        cmocka_unit_test(test_v1_length_limit),
        cmocka_unit_test(test_v1_lone_cr_lf),
        cmocka_unit_test(test_v1_leading_zeros),
        cmocka_unit_test(test_v1_ports),
        cmocka_unit_test(test_v1_malformed),
        cmocka_unit_test(test_v1_ipv6),
        cmocka_unit_test(test_not_proxy_early),
        cmocka_unit_test(test_v2_local),
        cmocka_unit_test(test_v2_proxy_inet),
        cmocka_unit_test(test_v2_proxy_inet6),
        cmocka_unit_test(test_v2_unusable_families),
        cmocka_unit_test(test_v2_bad_fixed_part),
        cmocka_unit_test(test_v2_length_honoured),
        cmocka_unit_test(test_v2_tlv_overrun_underrun),
        cmocka_unit_test(test_v2_crc32c),
        cmocka_unit_test(test_v2_ssl_tlv),
        cmocka_unit_test(test_v1_build_round_trip),
        cmocka_unit_test(test_v2_build_round_trip),
        cmocka_unit_test(test_v2_build_local),
        cmocka_unit_test(test_random_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
