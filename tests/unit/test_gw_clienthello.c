/* Unit tests for gateway/gw_clienthello.c: the ClientHello reader that routes
 * by SNI without terminating TLS.
 *
 * Recorded ClientHellos (the .bin files in tests/fixtures/clienthello, from openssl
 * s_client) and ClientHellos built here: a large "post-quantum" one (an
 * X25519MLKEM768 key share, ~1800 bytes of handshake) whole, spread over 2 and
 * 3 records and over one-byte records, and hand-made malformed ones.
 *
 * tls13-large-pq.bin is the large ClientHello built by build_large_pq() below;
 * the test checks that the file and the builder agree. To write it again:
 *     build/tests/test_gw_clienthello --write-fixture tests/fixtures/clienthello/tls13-large-pq.bin
 *
 * Every parse is handed a heap buffer of exactly the bytes it may read, so that
 * the sanitizer build catches a read past them. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "gw_clienthello.h"

#define CAP 65536 /* a cap no test message comes near, unless the test says so */
#define FIXTURE_DIR TEST_FIXTURES "/clienthello/"

/* ---- byte buffers ------------------------------------------------------------------ */

struct bb {
    uint8_t *d;
    size_t n, cap;
};

static void bb_put(struct bb *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        b->d = realloc(b->d, cap);
        assert_non_null(b->d);
        b->cap = cap;
    }
    if (n > 0)
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
    bb_u8(b, v);
}

static void bb_u24(struct bb *b, size_t v)
{
    bb_u8(b, (unsigned)(v >> 16));
    bb_u16(b, (unsigned)(v & 0xffff));
}

static void bb_fill(struct bb *b, uint8_t byte, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bb_u8(b, byte);
}

static void bb_free(struct bb *b)
{
    free(b->d);
    memset(b, 0, sizeof(*b));
}

/* A deterministic generator (xorshift64*) for "random" fields and mutations. */
static uint64_t rng_state;

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static void bb_random(struct bb *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bb_u8(b, (unsigned)(rng() >> 56));
}

/* ---- ClientHello builder ------------------------------------------------------------ */

/* An extension: type, u16 length, body. */
static void ext_raw(struct bb *e, unsigned type, const void *body, size_t n)
{
    bb_u16(e, type);
    bb_u16(e, (unsigned)n);
    bb_put(e, body, n);
}

/* server_name with one host_name entry of n bytes. */
static void ext_sni_n(struct bb *e, const char *host, size_t n)
{
    bb_u16(e, 0);
    bb_u16(e, (unsigned)(n + 5));
    bb_u16(e, (unsigned)(n + 3));
    bb_u8(e, 0);
    bb_u16(e, (unsigned)n);
    bb_put(e, host, n);
}

static void ext_sni(struct bb *e, const char *host)
{
    ext_sni_n(e, host, strlen(host));
}

static void ext_alpn(struct bb *e, const char *const *protos, size_t n)
{
    struct bb list = {0};
    for (size_t i = 0; i < n; i++) {
        bb_u8(&list, (unsigned)strlen(protos[i]));
        bb_put(&list, protos[i], strlen(protos[i]));
    }
    bb_u16(e, 16);
    bb_u16(e, (unsigned)(list.n + 2));
    bb_u16(e, (unsigned)list.n);
    bb_put(e, list.d, list.n);
    bb_free(&list);
}

struct hello {
    unsigned hs_type;      /* 1: ClientHello */
    unsigned sid_len;      /* the session id length byte (and as many bytes) */
    unsigned suites_len;   /* the cipher suites length field (and as many bytes) */
    unsigned comp_len;     /* compression methods */
    const struct bb *exts; /* the extensions; NULL: no extensions block at all */
    int exts_len_delta;    /* added to the declared extensions length */
    int body_len_delta;    /* added to the declared handshake length */
};

#define HELLO_DEFAULTS .hs_type = 1, .sid_len = 32, .suites_len = 6, .comp_len = 1

/* The handshake message (type, u24 length, body). */
static void build_hs(struct bb *hs, const struct hello *h)
{
    struct bb body = {0};
    bb_u16(&body, 0x0303);
    bb_random(&body, 32);
    bb_u8(&body, h->sid_len);
    bb_random(&body, h->sid_len);
    bb_u16(&body, h->suites_len);
    static const uint8_t suites[] = {0x13, 0x02, 0x13, 0x03, 0x13, 0x01, 0xc0, 0x2c, 0xc0, 0x30};
    for (unsigned i = 0; i < h->suites_len; i++)
        bb_u8(&body, suites[i % sizeof(suites)]);
    bb_u8(&body, h->comp_len);
    bb_fill(&body, 0, h->comp_len);
    if (h->exts != NULL) {
        bb_u16(&body, (unsigned)((int)h->exts->n + h->exts_len_delta));
        bb_put(&body, h->exts->d, h->exts->n);
    }
    bb_u8(hs, h->hs_type);
    bb_u24(hs, (size_t)((long)body.n + h->body_len_delta));
    bb_put(hs, body.d, body.n);
    bb_free(&body);
}

/* Wraps a handshake into records of at most `chunk` bytes each. */
static void wrap_chunks(struct bb *out, const uint8_t *hs, size_t n, size_t chunk)
{
    for (size_t off = 0; off < n; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        bb_u8(out, 0x16);
        bb_u16(out, off == 0 ? 0x0301 : 0x0303);
        bb_u16(out, (unsigned)k);
        bb_put(out, hs + off, k);
    }
}

/* Wraps a handshake into `nrec` records of about equal size. */
static void wrap_records(struct bb *out, const uint8_t *hs, size_t n, size_t nrec)
{
    wrap_chunks(out, hs, n, (n + nrec - 1) / nrec);
}

#define PQ_HS_LEN 1800 /* handshake bytes of the large ClientHello */
#define PQ_SNI "pq.example.com"

/* A TLS 1.3 ClientHello as a browser with post-quantum key agreement sends:
 * SNI, ALPN h2/http/1.1, supported_versions, supported_groups, a key_share with
 * an X25519MLKEM768 share (1216 bytes) and an X25519 one (32), and padding to
 * PQ_HS_LEN bytes of handshake. Deterministic. */
static void build_large_pq(struct bb *hs)
{
    rng_state = 0x9e3779b97f4a7c15ULL;
    struct bb e = {0};
    ext_sni(&e, PQ_SNI);
    static const char *const alpn[] = {"h2", "http/1.1"};
    ext_alpn(&e, alpn, 2);
    static const uint8_t versions[] = {4, 0x03, 0x04, 0x03, 0x03};
    ext_raw(&e, 43, versions, sizeof(versions));
    static const uint8_t groups[] = {0, 6, 0x11, 0xec, 0x00, 0x1d, 0x00, 0x17};
    ext_raw(&e, 10, groups, sizeof(groups));
    static const uint8_t sigalgs[] = {0, 8, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x08, 0x07};
    ext_raw(&e, 13, sigalgs, sizeof(sigalgs));
    static const uint8_t psk_modes[] = {1, 1};
    ext_raw(&e, 45, psk_modes, sizeof(psk_modes));
    struct bb ks = {0};
    bb_u16(&ks, (4 + 1216) + (4 + 32));
    bb_u16(&ks, 0x11ec); /* X25519MLKEM768: ML-KEM-768 key (1184) + X25519 (32) */
    bb_u16(&ks, 1216);
    bb_random(&ks, 1216);
    bb_u16(&ks, 0x001d); /* X25519 */
    bb_u16(&ks, 32);
    bb_random(&ks, 32);
    ext_raw(&e, 51, ks.d, ks.n);
    bb_free(&ks);
    /* Everything but the padding extension, to size the padding. */
    const size_t fixed = 4 + 2 + 32 + 1 + 32 + 2 + 6 + 1 + 1 + 2;
    assert_true(fixed + e.n + 4 < PQ_HS_LEN);
    size_t pad = PQ_HS_LEN - fixed - e.n - 4;
    bb_u16(&e, 21);
    bb_u16(&e, (unsigned)pad);
    bb_fill(&e, 0, pad);
    struct hello h = {HELLO_DEFAULTS, .exts = &e};
    build_hs(hs, &h);
    bb_free(&e);
    assert_int_equal(hs->n, PQ_HS_LEN);
}

/* ---- parse helpers ------------------------------------------------------------------ */

/* Parses a copy of buf[0..len) in a heap block of exactly len bytes. */
static enum gw_ch_status parse_exact(const uint8_t *buf, size_t len, size_t cap,
                                     struct gw_client_hello *out)
{
    uint8_t *copy = malloc(len > 0 ? len : 1);
    assert_non_null(copy);
    if (len > 0)
        memcpy(copy, buf, len);
    char err[128];
    enum gw_ch_status st = gw_client_hello_parse(copy, len, cap, out, err, sizeof(err));
    if (st < 0)
        assert_true(err[0] != '\0'); /* a verdict comes with a reason */
    free(copy);
    return st;
}

static void parse_expect(const uint8_t *buf, size_t len, size_t cap, enum gw_ch_status want)
{
    struct gw_client_hello ch;
    enum gw_ch_status st = parse_exact(buf, len, cap, &ch);
    if (st != want)
        fail_msg("status %d, want %d (len %zu)", st, want, len);
    if (st != GW_CH_OK) {
        assert_false(ch.has_sni);
        assert_int_equal(ch.alpn_len, 0);
    }
}

static void load_fixture(const char *name, struct bb *out)
{
    char path[512];
    snprintf(path, sizeof(path), FIXTURE_DIR "%s", name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    uint8_t chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        bb_put(out, chunk, n);
    fclose(f);
    assert_true(out->n > 0);
}

/* Every truncation gives NEED_MORE; a receive buffer filled in two reads (the
 * first k bytes, then the rest) gives NEED_MORE then the full result. */
static void check_all_prefixes(const uint8_t *buf, size_t n, const char *sni)
{
    struct gw_client_hello ch;
    for (size_t k = 0; k < n; k++) {
        enum gw_ch_status st = parse_exact(buf, k, CAP, &ch);
        if (st != GW_CH_NEED_MORE)
            fail_msg("prefix of %zu of %zu bytes: status %d, want NEED_MORE", k, n, st);
    }
    char err[128];
    for (size_t k = 0; k < n; k++) {
        /* The first read leaves stale results in ch; the second must not keep them. */
        uint8_t *rx = malloc(k > 0 ? k : 1);
        assert_non_null(rx);
        memcpy(rx, buf, k);
        assert_int_equal(gw_client_hello_parse(rx, k, CAP, &ch, err, sizeof(err)), GW_CH_NEED_MORE);
        rx = realloc(rx, n);
        assert_non_null(rx);
        memcpy(rx + k, buf + k, n - k);
        assert_int_equal(gw_client_hello_parse(rx, n, CAP, &ch, err, sizeof(err)), GW_CH_OK);
        free(rx);
        assert_int_equal(ch.has_sni, sni != NULL);
        if (sni != NULL)
            assert_string_equal(ch.sni, sni);
        assert_int_equal(ch.length, n);
    }
}

static void check_alpn(const struct gw_client_hello *ch, const char *const *protos, size_t n)
{
    struct bb want = {0};
    for (size_t i = 0; i < n; i++) {
        bb_u8(&want, (unsigned)strlen(protos[i]));
        bb_put(&want, protos[i], strlen(protos[i]));
    }
    assert_int_equal(ch->alpn_len, want.n);
    if (want.n > 0)
        assert_memory_equal(ch->alpn, want.d, want.n);
    bb_free(&want);
}

/* ---- recorded ClientHellos ----------------------------------------------------------- */

struct fixture {
    const char *file;
    const char *sni; /* NULL: none */
    uint16_t version;
};

static const struct fixture fixtures[] = {
    {"tls13-sni-alpn.bin", "www.example.com", 0x0303},
    {"tls12-sni.bin", "db.internal.example", 0x0303},
    {"tls13-nosni.bin", NULL, 0x0303},
    {"tls13-sni-upper.bin", "WWW.Example.COM", 0x0303},
    {"tls13-large-pq.bin", PQ_SNI, 0x0303},
};
#define NFIXTURES (sizeof(fixtures) / sizeof(fixtures[0]))

static void test_fixtures_parse(void **state)
{
    (void)state;
    static const char *const h2_h11[] = {"h2", "http/1.1"};
    for (size_t i = 0; i < NFIXTURES; i++) {
        struct bb b = {0};
        load_fixture(fixtures[i].file, &b);
        struct gw_client_hello ch;
        enum gw_ch_status st = parse_exact(b.d, b.n, CAP, &ch);
        if (st != GW_CH_OK)
            fail_msg("%s: status %d", fixtures[i].file, st);
        assert_int_equal(ch.has_sni, fixtures[i].sni != NULL);
        if (fixtures[i].sni != NULL)
            assert_string_equal(ch.sni, fixtures[i].sni);
        else
            assert_string_equal(ch.sni, "");
        assert_int_equal(ch.legacy_version, fixtures[i].version);
        assert_int_equal(ch.length, b.n); /* one record, nothing after it */
        if (strcmp(fixtures[i].file, "tls13-sni-alpn.bin") == 0 ||
            strcmp(fixtures[i].file, "tls13-large-pq.bin") == 0)
            check_alpn(&ch, h2_h11, 2);
        else
            check_alpn(&ch, NULL, 0);
        bb_free(&b);
    }
}

static void test_fixtures_every_prefix_and_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < NFIXTURES; i++) {
        struct bb b = {0};
        load_fixture(fixtures[i].file, &b);
        check_all_prefixes(b.d, b.n, fixtures[i].sni);
        bb_free(&b);
    }
}

static void test_fixture_bytes_after_hello(void **state)
{
    (void)state;
    /* Whatever follows the ClientHello's record is not the reader's business. */
    struct bb b = {0};
    load_fixture("tls13-sni-alpn.bin", &b);
    size_t n = b.n;
    static const uint8_t app[] = {0x17, 0x03, 0x03, 0x00, 0x02, 'h', 'i'};
    bb_put(&b, app, sizeof(app));
    struct gw_client_hello ch;
    assert_int_equal(parse_exact(b.d, b.n, CAP, &ch), GW_CH_OK);
    assert_string_equal(ch.sni, "www.example.com");
    assert_int_equal(ch.length, n);
    bb_free(&b);
}

static void test_first_alpn(void **state)
{
    (void)state;
    struct bb b = {0};
    load_fixture("tls13-sni-alpn.bin", &b);
    struct gw_client_hello ch;
    assert_int_equal(parse_exact(b.d, b.n, CAP, &ch), GW_CH_OK);
    char buf[32];
    gw_client_hello_first_alpn(&ch, buf, sizeof(buf));
    assert_string_equal(buf, "h2");
    gw_client_hello_first_alpn(&ch, buf, 2); /* truncated to the buffer */
    assert_string_equal(buf, "h");
    gw_client_hello_first_alpn(&ch, buf, 1);
    assert_string_equal(buf, "");
    buf[0] = 'x';
    gw_client_hello_first_alpn(&ch, buf, 0); /* writes nothing */
    assert_int_equal(buf[0], 'x');
    bb_free(&b);

    struct bb c = {0};
    load_fixture("tls13-nosni.bin", &c);
    assert_int_equal(parse_exact(c.d, c.n, CAP, &ch), GW_CH_OK);
    strcpy(buf, "stale");
    gw_client_hello_first_alpn(&ch, buf, sizeof(buf));
    assert_string_equal(buf, "");
    bb_free(&c);

    /* http/1.1 first */
    struct bb e = {0}, hs = {0};
    static const char *const protos[] = {"http/1.1", "h2"};
    ext_alpn(&e, protos, 2);
    struct hello h = {HELLO_DEFAULTS, .exts = &e};
    build_hs(&hs, &h);
    struct bb rec = {0};
    wrap_records(&rec, hs.d, hs.n, 1);
    assert_int_equal(parse_exact(rec.d, rec.n, CAP, &ch), GW_CH_OK);
    gw_client_hello_first_alpn(&ch, buf, sizeof(buf));
    assert_string_equal(buf, "http/1.1");
    bb_free(&e);
    bb_free(&hs);
    bb_free(&rec);
}

/* ---- the large post-quantum ClientHello ------------------------------------------------ */

static void test_large_pq_matches_fixture(void **state)
{
    (void)state;
    struct bb hs = {0}, rec = {0}, file = {0};
    build_large_pq(&hs);
    wrap_records(&rec, hs.d, hs.n, 1);
    load_fixture("tls13-large-pq.bin", &file);
    assert_int_equal(file.n, PQ_HS_LEN + 5);
    assert_int_equal(file.n, rec.n);
    assert_memory_equal(file.d, rec.d, rec.n);
    /* It does exceed a typical segment. */
    assert_true(file.n > 1460);
    bb_free(&hs);
    bb_free(&rec);
    bb_free(&file);
}

static void test_large_pq_records(void **state)
{
    (void)state;
    static const char *const h2_h11[] = {"h2", "http/1.1"};
    struct bb hs = {0};
    build_large_pq(&hs);
    for (size_t nrec = 1; nrec <= 3; nrec++) {
        struct bb rec = {0};
        wrap_records(&rec, hs.d, hs.n, nrec);
        assert_int_equal(rec.n, hs.n + 5 * nrec);
        struct gw_client_hello ch;
        assert_int_equal(parse_exact(rec.d, rec.n, CAP, &ch), GW_CH_OK);
        assert_true(ch.has_sni);
        assert_string_equal(ch.sni, PQ_SNI);
        check_alpn(&ch, h2_h11, 2);
        assert_int_equal(ch.length, rec.n);
        /* Byte by byte: every prefix needs more, the whole is OK. */
        check_all_prefixes(rec.d, rec.n, PQ_SNI);
        bb_free(&rec);
    }
    bb_free(&hs);
}

static void test_large_pq_tiny_records(void **state)
{
    (void)state;
    /* The handshake spread over records of 1 and of 7 bytes. */
    struct bb hs = {0};
    build_large_pq(&hs);
    static const size_t chunks[] = {1, 7, 1000};
    for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        struct bb rec = {0};
        wrap_chunks(&rec, hs.d, hs.n, chunks[i]);
        struct gw_client_hello ch;
        assert_int_equal(parse_exact(rec.d, rec.n, CAP, &ch), GW_CH_OK);
        assert_string_equal(ch.sni, PQ_SNI);
        assert_int_equal(ch.length, rec.n);
        /* every prefix of the first few hundred bytes, and of the last ones */
        for (size_t k = 0; k < rec.n; k += (k < 300 || k > rec.n - 300) ? 1 : 97)
            parse_expect(rec.d, k, CAP, GW_CH_NEED_MORE);
        bb_free(&rec);
    }
    bb_free(&hs);
}

static void test_large_pq_cap(void **state)
{
    (void)state;
    struct bb hs = {0};
    build_large_pq(&hs);
    for (size_t nrec = 1; nrec <= 3; nrec++) {
        struct bb rec = {0};
        wrap_records(&rec, hs.d, hs.n, nrec);
        struct gw_client_hello ch;
        /* exactly the message: fine */
        assert_int_equal(parse_exact(rec.d, rec.n, rec.n, &ch), GW_CH_OK);
        static const size_t caps[] = {0, 4, 5, 100, 1024, 1460, 1500};
        for (size_t c = 0; c <= sizeof(caps) / sizeof(caps[0]); c++) {
            size_t cap = c < sizeof(caps) / sizeof(caps[0]) ? caps[c] : rec.n - 1;
            parse_expect(rec.d, rec.n, cap, GW_CH_TOO_LARGE);
            /* no prefix ever passes for a whole ClientHello */
            for (size_t k = 0; k <= rec.n; k++) {
                enum gw_ch_status st = parse_exact(rec.d, k, cap, &ch);
                if (st != GW_CH_NEED_MORE && st != GW_CH_TOO_LARGE)
                    fail_msg("cap %zu, %zu of %zu bytes: status %d", cap, k, rec.n, st);
            }
        }
        bb_free(&rec);
    }
    /* A cap above the first record but below the whole: judged by the handshake
     * length, before the second record arrives. */
    struct bb rec = {0};
    wrap_records(&rec, hs.d, hs.n, 2);
    parse_expect(rec.d, rec.n, rec.n / 2 + 10, GW_CH_TOO_LARGE);
    /* only the first record (905 bytes) is in */
    assert_int_equal(rec.n / 2, 5 + PQ_HS_LEN / 2);
    parse_expect(rec.d, rec.n / 2, rec.n / 2 + 10, GW_CH_TOO_LARGE);
    bb_free(&rec);
    bb_free(&hs);
}

/* A record header that would end past the cap makes the ClientHello too large
 * whatever the header says, and the verdict must not depend on how much of
 * that header has arrived. (Found by the fuzz target: with the header cut
 * short the parser said TOO_LARGE, with the same header whole it said
 * MALFORMED, or NOT_TLS at the very start under a cap below 5 bytes.) */
static void test_cap_inside_record_header(void **state)
{
    (void)state;
    struct bb hs = {0};
    build_large_pq(&hs);
    /* 10-byte records: their headers make 1800 bytes of handshake span 2700,
     * so the cap can sit inside a header while the handshake length fits. */
    struct bb rec = {0};
    wrap_chunks(&rec, hs.d, hs.n, 10);
    const size_t at = 120 * 15; /* the header of the 121st record */
    const size_t cap = at + 2;  /* that header cannot fit under it */
    assert_true(hs.n <= cap && at + 5 < rec.n && rec.d[at] == 0x16);
    /* A valid header there, one of another content type, of a bad version,
     * of length 0: too large, whole or cut anywhere in it. */
    static const struct {
        size_t off;
        uint8_t byte;
    } damage[] = {{0, 0x16}, {0, 0x17}, {1, 0x02}, {3, 0x00}};
    for (size_t i = 0; i < sizeof(damage) / sizeof(damage[0]); i++) {
        uint8_t saved[5];
        memcpy(saved, rec.d + at, 5);
        rec.d[at + damage[i].off] = damage[i].byte;
        if (damage[i].off == 3)
            rec.d[at + 4] = 0x00;
        parse_expect(rec.d, rec.n, cap, GW_CH_TOO_LARGE);
        for (size_t k = at; k <= at + 5; k++)
            parse_expect(rec.d, k, cap, GW_CH_TOO_LARGE);
        memcpy(rec.d + at, saved, 5);
    }
    /* Before that header, the ClientHello might still end in time. */
    parse_expect(rec.d, at - 1, cap, GW_CH_NEED_MORE);
    /* A cap below one record header: every input is too large, TLS or not. */
    static const uint8_t http[] = "GET / HTTP/1.1\r\n";
    for (size_t k = 0; k < sizeof(http) - 1; k++)
        parse_expect(http, k, 4, GW_CH_TOO_LARGE);
    bb_free(&rec);
    bb_free(&hs);
}

static void test_alpn_long_list_kept_whole(void **state)
{
    (void)state;
    /* 30 names of 10 bytes: 330 bytes of list, more than the 256 kept. Whole
     * entries are kept: 23 of them, 253 bytes. */
    const char *protos[30];
    char names[30][11];
    for (int i = 0; i < 30; i++) {
        snprintf(names[i], sizeof(names[i]), "proto-%04d", i);
        protos[i] = names[i];
    }
    struct bb e = {0}, hs = {0}, rec = {0};
    ext_sni(&e, "a.example");
    ext_alpn(&e, protos, 30);
    struct hello h = {HELLO_DEFAULTS, .exts = &e};
    build_hs(&hs, &h);
    wrap_records(&rec, hs.d, hs.n, 1);
    struct gw_client_hello ch;
    assert_int_equal(parse_exact(rec.d, rec.n, CAP, &ch), GW_CH_OK);
    check_alpn(&ch, protos, 23);
    assert_string_equal(ch.sni, "a.example");
    bb_free(&e);
    bb_free(&hs);
    bb_free(&rec);

    /* One name of 255 bytes fills the buffer exactly. */
    char longname[256];
    memset(longname, 'p', 255);
    longname[255] = '\0';
    const char *one[] = {longname, "h2"};
    ext_alpn(&e, one, 2);
    build_hs(&hs, &h);
    wrap_records(&rec, hs.d, hs.n, 1);
    assert_int_equal(parse_exact(rec.d, rec.n, CAP, &ch), GW_CH_OK);
    check_alpn(&ch, one, 1);
    bb_free(&e);
    bb_free(&hs);
    bb_free(&rec);
}

static void test_no_extensions_and_other_names(void **state)
{
    (void)state;
    struct gw_client_hello ch;
    /* A ClientHello without an extensions block (SSL 3 style) is fine: no SNI. */
    struct bb hs = {0}, rec = {0};
    struct hello h = {HELLO_DEFAULTS, .exts = NULL};
    build_hs(&hs, &h);
    wrap_records(&rec, hs.d, hs.n, 1);
    assert_int_equal(parse_exact(rec.d, rec.n, CAP, &ch), GW_CH_OK);
    assert_false(ch.has_sni);
    bb_free(&hs);
    bb_free(&rec);

    /* An empty extensions block. */
    struct bb e = {0};
    h.exts = &e;
    build_hs(&hs, &h);
    wrap_records(&rec, hs.d, hs.n, 1);
    assert_int_equal(parse_exact(rec.d, rec.n, CAP, &ch), GW_CH_OK);
    assert_false(ch.has_sni);
    bb_free(&hs);
    bb_free(&rec);

    /* A server_name list with an unknown name type only: no SNI. */
    static const uint8_t other[] = {0x00, 0x06, 0x01, 0x00, 0x03, 'a', 'b', 'c'};
    ext_raw(&e, 0, other, sizeof(other));
    build_hs(&hs, &h);
    wrap_records(&rec, hs.d, hs.n, 1);
    assert_int_equal(parse_exact(rec.d, rec.n, CAP, &ch), GW_CH_OK);
    assert_false(ch.has_sni);
    bb_free(&e);
    bb_free(&hs);
    bb_free(&rec);

    /* A host name of 255 bytes is the longest there is. */
    char name[256];
    memset(name, 'a', 255);
    name[255] = '\0';
    for (int i = 63; i < 255; i += 64)
        name[i] = '.';
    ext_sni(&e, name);
    build_hs(&hs, &h);
    wrap_records(&rec, hs.d, hs.n, 1);
    assert_int_equal(parse_exact(rec.d, rec.n, CAP, &ch), GW_CH_OK);
    assert_true(ch.has_sni);
    assert_string_equal(ch.sni, name);
    bb_free(&e);
    bb_free(&hs);
    bb_free(&rec);
}

/* ---- malformed and foreign input --------------------------------------------------------- */

/* A message built from h, in one record, parses to `want`. */
static void expect_hello(const struct hello *h, enum gw_ch_status want)
{
    struct bb hs = {0}, rec = {0};
    build_hs(&hs, h);
    wrap_records(&rec, hs.d, hs.n, 1);
    parse_expect(rec.d, rec.n, CAP, want);
    /* The verdict does not change when the message comes in two records. */
    if (hs.n >= 2) {
        struct bb two = {0};
        wrap_records(&two, hs.d, hs.n, 2);
        parse_expect(two.d, two.n, CAP, want);
        bb_free(&two);
    }
    bb_free(&hs);
    bb_free(&rec);
}

/* A ClientHello with the given extensions parses to `want`. */
static void expect_exts(const struct bb *e, enum gw_ch_status want)
{
    struct hello h = {HELLO_DEFAULTS, .exts = e};
    expect_hello(&h, want);
}

static void test_malformed_fields(void **state)
{
    (void)state;
    struct bb e = {0};
    ext_sni(&e, "ok.example");
    struct hello good = {HELLO_DEFAULTS, .exts = &e};
    expect_hello(&good, GW_CH_OK);

    struct hello h = good;
    h.hs_type = 2; /* ServerHello */
    expect_hello(&h, GW_CH_MALFORMED);
    h = good;
    h.hs_type = 0x16;
    expect_hello(&h, GW_CH_MALFORMED);

    h = good;
    h.sid_len = 33;
    expect_hello(&h, GW_CH_MALFORMED);
    h.sid_len = 255;
    expect_hello(&h, GW_CH_MALFORMED);
    h.sid_len = 0; /* an empty session id is fine */
    expect_hello(&h, GW_CH_OK);

    h = good;
    h.suites_len = 7;
    expect_hello(&h, GW_CH_MALFORMED);
    h.suites_len = 1;
    expect_hello(&h, GW_CH_MALFORMED);
    h.suites_len = 0;
    expect_hello(&h, GW_CH_MALFORMED);

    h = good;
    h.comp_len = 0;
    expect_hello(&h, GW_CH_MALFORMED);

    h = good;
    h.exts_len_delta = 1; /* declares more than there is */
    expect_hello(&h, GW_CH_MALFORMED);
    h.exts_len_delta = -1; /* declares less */
    expect_hello(&h, GW_CH_MALFORMED);
    h.exts_len_delta = -(int)e.n; /* declares none, but there are some */
    expect_hello(&h, GW_CH_MALFORMED);

    /* The handshake length says the message ends inside the fields. */
    h = good;
    h.exts = NULL;
    h.body_len_delta = -3;
    expect_hello(&h, GW_CH_MALFORMED);
    /* ... or in the extensions length (one byte of it) */
    h = good;
    h.body_len_delta = -(int)e.n - 1;
    expect_hello(&h, GW_CH_MALFORMED);
    bb_free(&e);

    /* A handshake of length 0. */
    static const uint8_t empty_hs[] = {0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00};
    parse_expect(empty_hs, sizeof(empty_hs), CAP, GW_CH_MALFORMED);
}

static void test_malformed_extensions(void **state)
{
    (void)state;
    struct bb e = {0};

    /* An extension that runs past the message (its length says 10 more bytes). */
    ext_sni(&e, "ok.example");
    bb_u16(&e, 0x1234);
    bb_u16(&e, 10);
    bb_fill(&e, 0, 4);
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);
    /* Half an extension header at the end. */
    ext_sni(&e, "ok.example");
    bb_u16(&e, 0x1234);
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);

    /* server_name: list length one more, one less than the extension. */
    for (int delta = -1; delta <= 1; delta += 2) {
        bb_u16(&e, 0);
        bb_u16(&e, 5 + 3);
        bb_u16(&e, (unsigned)(3 + 3 + delta));
        bb_u8(&e, 0);
        bb_u16(&e, 3);
        bb_put(&e, "a.b", 3);
        expect_exts(&e, GW_CH_MALFORMED);
        bb_free(&e);
    }
    /* an empty list; an empty extension */
    static const uint8_t empty_list[] = {0, 0};
    ext_raw(&e, 0, empty_list, sizeof(empty_list));
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);
    ext_raw(&e, 0, NULL, 0);
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);
    /* an entry running past the list */
    static const uint8_t past[] = {0x00, 0x06, 0x00, 0x00, 0x09, 'a', 'b', 'c'};
    ext_raw(&e, 0, past, sizeof(past));
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);

    /* host name length 0 */
    ext_sni_n(&e, "", 0);
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);

    /* host name of 256 bytes */
    char big[257];
    memset(big, 'a', 256);
    big[256] = '\0';
    ext_sni(&e, big);
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);

    /* a NUL in the host name: at the start, in the middle, at the end */
    static const char *const nul_names[] = {"\0evil.example", "good.example\0.evil",
                                            "good.example\0"};
    static const size_t nul_lens[] = {13, 18, 13};
    for (int i = 0; i < 3; i++) {
        ext_sni_n(&e, nul_names[i], nul_lens[i]);
        expect_exts(&e, GW_CH_MALFORMED);
        bb_free(&e);
    }

    /* two host names in one list */
    static const uint8_t two[] = {0x00, 0x0c, 0x00, 0x00, 0x03, 'a', '.',
                                  'b',  0x00, 0x00, 0x03, 'c',  '.', 'd'};
    ext_raw(&e, 0, two, sizeof(two));
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);

    /* the server_name extension twice, with the same or another name */
    ext_sni(&e, "a.example");
    ext_sni(&e, "a.example");
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);
    ext_sni(&e, "a.example");
    bb_u16(&e, 0x002b);
    bb_u16(&e, 3);
    bb_u8(&e, 2);
    bb_u16(&e, 0x0304);
    ext_sni(&e, "b.example");
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);

    /* ALPN: an empty protocol name, first or last */
    static const uint8_t alpn_empty_first[] = {0x00, 0x04, 0x00, 0x02, 'h', '2'};
    static const uint8_t alpn_empty_last[] = {0x00, 0x04, 0x02, 'h', '2', 0x00};
    ext_sni(&e, "a.example");
    ext_raw(&e, 16, alpn_empty_first, sizeof(alpn_empty_first));
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);
    ext_raw(&e, 16, alpn_empty_last, sizeof(alpn_empty_last));
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);
    /* ALPN: empty list, list length mismatch, a name running past the list */
    static const uint8_t alpn_none[] = {0x00, 0x00};
    static const uint8_t alpn_short[] = {0x00, 0x02, 0x02, 'h', '2'};
    static const uint8_t alpn_past[] = {0x00, 0x03, 0x05, 'h', '2'};
    ext_raw(&e, 16, alpn_none, sizeof(alpn_none));
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);
    ext_raw(&e, 16, alpn_short, sizeof(alpn_short));
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);
    ext_raw(&e, 16, alpn_past, sizeof(alpn_past));
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);
    /* ALPN twice */
    static const char *const h2[] = {"h2"};
    ext_alpn(&e, h2, 1);
    ext_alpn(&e, h2, 1);
    expect_exts(&e, GW_CH_MALFORMED);
    bb_free(&e);
}

static void test_malformed_records(void **state)
{
    (void)state;
    /* record length 0, and over 2^14 */
    static const uint8_t zero[] = {0x16, 0x03, 0x01, 0x00, 0x00};
    parse_expect(zero, sizeof(zero), CAP, GW_CH_MALFORMED);
    static const uint8_t over[] = {0x16, 0x03, 0x01, 0x40, 0x01, 0x01};
    parse_expect(over, sizeof(over), CAP, GW_CH_MALFORMED);
    static const uint8_t max[] = {0x16, 0x03, 0x01, 0x40, 0x00, 0x01};
    parse_expect(max, sizeof(max), CAP, GW_CH_NEED_MORE); /* 2^14 itself is allowed */

    struct bb hs = {0};
    build_large_pq(&hs);
    struct bb rec = {0};
    wrap_records(&rec, hs.d, hs.n, 2);
    size_t second = 5 + (hs.n + 1) / 2; /* where the second record starts */
    assert_int_equal(rec.d[second], 0x16);

    /* Application data (0x17), an alert (0x15), a CCS (0x14) in the middle. */
    static const uint8_t types[] = {0x17, 0x15, 0x14, 0x00};
    for (size_t i = 0; i < sizeof(types); i++) {
        rec.d[second] = types[i];
        parse_expect(rec.d, rec.n, CAP, GW_CH_MALFORMED);
        /* judged as soon as the type byte arrives */
        parse_expect(rec.d, second + 1, CAP, GW_CH_MALFORMED);
    }
    rec.d[second] = 0x16;
    /* a bad version byte in the second record */
    rec.d[second + 1] = 0x02;
    parse_expect(rec.d, rec.n, CAP, GW_CH_MALFORMED);
    parse_expect(rec.d, second + 2, CAP, GW_CH_MALFORMED);
    rec.d[second + 1] = 0x03;
    /* a second record of length 0, or over 2^14 */
    uint8_t l0 = rec.d[second + 3], l1 = rec.d[second + 4];
    rec.d[second + 3] = 0;
    rec.d[second + 4] = 0;
    parse_expect(rec.d, rec.n, CAP, GW_CH_MALFORMED);
    rec.d[second + 3] = 0x40;
    rec.d[second + 4] = 0x01;
    parse_expect(rec.d, rec.n, CAP, GW_CH_MALFORMED);
    rec.d[second + 3] = l0;
    rec.d[second + 4] = l1;
    parse_expect(rec.d, rec.n, CAP, GW_CH_OK);
    bb_free(&rec);
    bb_free(&hs);
}

static void test_not_tls(void **state)
{
    (void)state;
    static const char http[] = "GET / HTTP/1.1\r\n";
    parse_expect((const uint8_t *)http, strlen(http), CAP, GW_CH_NOT_TLS);
    parse_expect((const uint8_t *)http, 1, CAP, GW_CH_NOT_TLS); /* one byte is enough */
    static const uint8_t badver[] = {0x16, 0x02};
    parse_expect(badver, sizeof(badver), CAP, GW_CH_NOT_TLS);
    parse_expect(badver, 1, CAP, GW_CH_NEED_MORE);
    static const uint8_t badver2[] = {0x16, 0x00, 0x01, 0x00, 0x10};
    parse_expect(badver2, sizeof(badver2), CAP, GW_CH_NOT_TLS);
    /* An SSL 2.0 style ClientHello (as old clients send for compatibility). */
    static const uint8_t sslv2[] = {0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00,
                                    0x00, 0x10, 0x00, 0x00, 0x35, 0x00, 0x00, 0x2f};
    parse_expect(sslv2, sizeof(sslv2), CAP, GW_CH_NOT_TLS);
    /* other record types at the start */
    static const uint8_t appdata[] = {0x17, 0x03, 0x03, 0x00, 0x01, 0x00};
    parse_expect(appdata, sizeof(appdata), CAP, GW_CH_NOT_TLS);
    static const uint8_t zeros[] = {0, 0, 0, 0, 0, 0, 0, 0};
    parse_expect(zeros, sizeof(zeros), CAP, GW_CH_NOT_TLS);
    /* nothing at all: need more */
    parse_expect(zeros, 0, CAP, GW_CH_NEED_MORE);
}

/* ---- gw_client_hello_sni_ext ------------------------------------------------------------ */

static enum gw_ch_status sni_ext(const uint8_t *body, size_t n, char out[256])
{
    uint8_t *copy = malloc(n > 0 ? n : 1);
    assert_non_null(copy);
    memcpy(copy, body, n);
    char err[128] = "";
    memset(out, 'X', 256);
    enum gw_ch_status st = gw_client_hello_sni_ext(copy, n, out, err, sizeof(err));
    free(copy);
    assert_non_null(memchr(out, '\0', 256)); /* always a string */
    if (st != GW_CH_OK)
        assert_true(err[0] != '\0');
    return st;
}

static void test_sni_ext(void **state)
{
    (void)state;
    char out[256];
    static const uint8_t ok[] = {0x00, 0x0e, 0x00, 0x00, 0x0b, 'e', 'x', 'a',
                                 'm',  'p',  'l',  'e',  '.',  'c', 'o', 'm'};
    assert_int_equal(sni_ext(ok, sizeof(ok), out), GW_CH_OK);
    assert_string_equal(out, "example.com");
    /* case is kept as sent */
    static const uint8_t upper[] = {0x00, 0x06, 0x00, 0x00, 0x03, 'A', '.', 'B'};
    assert_int_equal(sni_ext(upper, sizeof(upper), out), GW_CH_OK);
    assert_string_equal(out, "A.B");
    /* a list naming no host_name: "" */
    static const uint8_t other[] = {0x00, 0x06, 0x05, 0x00, 0x03, 'a', '.', 'b'};
    assert_int_equal(sni_ext(other, sizeof(other), out), GW_CH_OK);
    assert_string_equal(out, "");
    /* another type, then the host_name */
    static const uint8_t mixed[] = {0x00, 0x0c, 0x05, 0x00, 0x03, 'x', '.',
                                    'y',  0x00, 0x00, 0x03, 'a',  '.', 'b'};
    assert_int_equal(sni_ext(mixed, sizeof(mixed), out), GW_CH_OK);
    assert_string_equal(out, "a.b");
    /* 255 bytes */
    uint8_t longest[5 + 255];
    longest[0] = 0x01;
    longest[1] = 0x02; /* 258 */
    longest[2] = 0x00;
    longest[3] = 0x00;
    longest[4] = 0xff;
    memset(longest + 5, 'z', 255);
    assert_int_equal(sni_ext(longest, sizeof(longest), out), GW_CH_OK);
    assert_int_equal(strlen(out), 255);

    /* invalid bodies */
    assert_int_equal(sni_ext(ok, 0, out), GW_CH_MALFORMED);
    assert_int_equal(sni_ext(ok, 1, out), GW_CH_MALFORMED);
    assert_int_equal(sni_ext(ok, sizeof(ok) - 1, out), GW_CH_MALFORMED); /* list too long */
    uint8_t extra[sizeof(ok) + 1];
    memcpy(extra, ok, sizeof(ok));
    extra[sizeof(ok)] = 'x'; /* list too short */
    assert_int_equal(sni_ext(extra, sizeof(extra), out), GW_CH_MALFORMED);
    static const uint8_t empty_list[] = {0x00, 0x00};
    assert_int_equal(sni_ext(empty_list, sizeof(empty_list), out), GW_CH_MALFORMED);
    static const uint8_t zero_name[] = {0x00, 0x03, 0x00, 0x00, 0x00};
    assert_int_equal(sni_ext(zero_name, sizeof(zero_name), out), GW_CH_MALFORMED);
    static const uint8_t past[] = {0x00, 0x06, 0x00, 0x00, 0x04, 'a', '.', 'b'};
    assert_int_equal(sni_ext(past, sizeof(past), out), GW_CH_MALFORMED);
    static const uint8_t half[] = {0x00, 0x02, 0x00, 0x00};
    assert_int_equal(sni_ext(half, sizeof(half), out), GW_CH_MALFORMED);
    static const uint8_t nul[] = {0x00, 0x06, 0x00, 0x00, 0x03, 'a', '\0', 'b'};
    assert_int_equal(sni_ext(nul, sizeof(nul), out), GW_CH_MALFORMED);
    static const uint8_t two[] = {0x00, 0x0c, 0x00, 0x00, 0x03, 'a', '.',
                                  'b',  0x00, 0x00, 0x03, 'c',  '.', 'd'};
    assert_int_equal(sni_ext(two, sizeof(two), out), GW_CH_MALFORMED);
    uint8_t toolong[5 + 256];
    toolong[0] = 0x01;
    toolong[1] = 0x03;
    toolong[2] = 0x00;
    toolong[3] = 0x01;
    toolong[4] = 0x00;
    memset(toolong + 5, 'z', 256);
    assert_int_equal(sni_ext(toolong, sizeof(toolong), out), GW_CH_MALFORMED);
}

/* ---- mutations ------------------------------------------------------------------------- */

static void check_invariants(const uint8_t *buf, size_t len, size_t cap, enum gw_ch_status st,
                             const struct gw_client_hello *ch)
{
    if (st != GW_CH_NEED_MORE && st != GW_CH_OK && st != GW_CH_NOT_TLS && st != GW_CH_MALFORMED &&
        st != GW_CH_TOO_LARGE)
        fail_msg("unknown status %d", st);
    if (st != GW_CH_OK) {
        assert_false(ch->has_sni);
        return;
    }
    assert_true(ch->length <= cap);
    assert_true(ch->alpn_len <= sizeof(ch->alpn));
    /* the ALPN kept is whole entries of non-empty names */
    for (size_t i = 0; i < ch->alpn_len; i += 1 + ch->alpn[i]) {
        assert_true(ch->alpn[i] > 0);
        assert_true(i + 1 + ch->alpn[i] <= ch->alpn_len);
    }
    if (!ch->has_sni) {
        assert_string_equal(ch->sni, "");
        return;
    }
    const char *nul = memchr(ch->sni, '\0', sizeof(ch->sni));
    assert_non_null(nul);
    size_t n = (size_t)(nul - ch->sni);
    assert_true(n >= 1 && n <= 255);
    /* When the ClientHello sits in one record, the name is in the input with
     * its own length right before it: no NUL was cut off. */
    size_t rlen = (size_t)buf[3] << 8 | buf[4];
    if (ch->length == 5 + rlen) {
        bool found = false;
        for (size_t at = 7; at + n <= len && !found; at++)
            found = memcmp(buf + at, ch->sni, n) == 0 &&
                    ((size_t)buf[at - 2] << 8 | buf[at - 1]) == n && buf[at - 3] == 0;
        if (!found)
            fail_msg("SNI \"%s\" is not a host_name entry of the input", ch->sni);
    }
}

static void test_random_mutations(void **state)
{
    (void)state;
    struct bb inputs[NFIXTURES + 2];
    memset(inputs, 0, sizeof(inputs));
    size_t ninputs = 0;
    for (size_t i = 0; i < NFIXTURES; i++)
        load_fixture(fixtures[i].file, &inputs[ninputs++]);
    struct bb hs = {0};
    build_large_pq(&hs);
    wrap_records(&inputs[ninputs++], hs.d, hs.n, 3);
    wrap_chunks(&inputs[ninputs++], hs.d, hs.n, 64);
    bb_free(&hs);

    rng_state = 0x5eed5eed12345678ULL;
    int verdicts[6] = {0};
    for (int iter = 0; iter < 6000; iter++) {
        const struct bb *in = &inputs[rng() % ninputs];
        size_t len = in->n;
        uint8_t *m = malloc(len);
        assert_non_null(m);
        memcpy(m, in->d, len);
        int nmut = 1 + (int)(rng() % 4);
        for (int k = 0; k < nmut; k++) {
            /* Mutations near the start reach the fields and the first extensions. */
            size_t span = (rng() & 1) ? (len < 200 ? len : 200) : len;
            size_t at = rng() % span;
            switch (rng() % 4) {
            case 0:
                m[at] ^= (uint8_t)(1u << (rng() % 8));
                break;
            case 1:
                m[at] = (uint8_t)rng();
                break;
            case 2:
                m[at] = (rng() & 1) ? 0x00 : 0xff;
                break;
            default:
                m[at] = (uint8_t)(m[at] + ((rng() & 1) ? 1 : 0xff));
                break;
            }
        }
        if (rng() % 8 == 0)
            len = rng() % (len + 1); /* also a truncation */
        size_t cap = (rng() % 8 == 0) ? (size_t)(rng() % (in->n + 64)) : CAP;
        uint8_t *exact = malloc(len > 0 ? len : 1);
        assert_non_null(exact);
        memcpy(exact, m, len);
        free(m);
        struct gw_client_hello ch;
        memset(&ch, 0xa5, sizeof(ch)); /* whatever was there before */
        char err[64];
        enum gw_ch_status st = gw_client_hello_parse(exact, len, cap, &ch, err, sizeof(err));
        check_invariants(exact, len, cap, st, &ch);
        verdicts[st + 3]++;
        if (st == GW_CH_OK) {
            char first[16];
            gw_client_hello_first_alpn(&ch, first, sizeof(first));
            assert_true(strlen(first) < sizeof(first));
        }
        /* The SNI extension reader on random slices of the mutated bytes. */
        if (len > 0) {
            size_t from = rng() % len;
            size_t n = rng() % (len - from + 1);
            char name[256];
            enum gw_ch_status sst =
                gw_client_hello_sni_ext(exact + from, n, name, err, sizeof(err));
            assert_true(sst == GW_CH_OK || sst == GW_CH_MALFORMED);
            assert_non_null(memchr(name, '\0', sizeof(name)));
        }
        free(exact);
    }
    /* The loop did reach both sides. */
    assert_true(verdicts[GW_CH_OK + 3] > 100);
    assert_true(verdicts[GW_CH_MALFORMED + 3] > 100);
    for (size_t i = 0; i < ninputs; i++)
        bb_free(&inputs[i]);
}

/* ---- main --------------------------------------------------------------------------------- */

static int write_fixture(const char *path)
{
    struct bb hs = {0}, rec = {0};
    build_large_pq(&hs);
    wrap_records(&rec, hs.d, hs.n, 1);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(rec.d, 1, rec.n, f) != rec.n || fclose(f) != 0) {
        perror(path);
        return 1;
    }
    printf("wrote %zu bytes to %s\n", rec.n, path);
    bb_free(&hs);
    bb_free(&rec);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-fixture") == 0)
        return write_fixture(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures_parse),
        cmocka_unit_test(test_fixtures_every_prefix_and_split),
        cmocka_unit_test(test_fixture_bytes_after_hello),
        cmocka_unit_test(test_first_alpn),
        cmocka_unit_test(test_large_pq_matches_fixture),
        cmocka_unit_test(test_large_pq_records),
        cmocka_unit_test(test_large_pq_tiny_records),
        cmocka_unit_test(test_large_pq_cap),
        cmocka_unit_test(test_cap_inside_record_header),
        cmocka_unit_test(test_alpn_long_list_kept_whole),
        cmocka_unit_test(test_no_extensions_and_other_names),
        cmocka_unit_test(test_malformed_fields),
        cmocka_unit_test(test_malformed_extensions),
        cmocka_unit_test(test_malformed_records),
        cmocka_unit_test(test_not_tls),
        cmocka_unit_test(test_sni_ext),
        cmocka_unit_test(test_random_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
