/* Fuzz target: the value parsers of API definitions: durations
 * (apidefs/api_duration.h), upstream and check targets, and the address
 * blocks of proxy_protocol_trusted (apidefs/api_target.h).
 *
 * The input, NUL-terminated as a JSON string reaches them, goes to each of
 * the three; the seeds of each family steer the fuzzer into its parser. What
 * parses must also survive the way back: a formatted duration or a target's
 * host:port parses to the same value, and an address block contains its own
 * address. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>

#include "api_duration.h"
#include "api_target.h"
#include "fuzz_util.h"

/* The largest duration kept, as api_duration.c bounds it. */
#define DUR_MAX_MS (INT64_MAX / 1000000)

static void dur_check(const char *s)
{
    int64_t ms = -42;
    char err[256];
    memset(err, 'x', sizeof(err));
    err[sizeof(err) - 1] = '\0';
    if (api_duration_parse(s, &ms, err, sizeof(err)) != 0) {
        FUZZ_CHECK(err[0] != '\0' && err[0] != 'x'); /* a rejection says why */
        return;
    }
    FUZZ_CHECK(ms >= 0 && ms <= DUR_MAX_MS);
    /* The shortest exact form parses back to the same value. */
    char text[32];
    api_duration_format(ms, text, sizeof(text));
    int64_t again = -42;
    FUZZ_CHECK(api_duration_parse(text, &again, err, sizeof(err)) == 0 && again == ms);
}

static void dur_check_ns(const uint8_t *data, size_t size)
{
    if (size < sizeof(int64_t))
        return;
    int64_t ns;
    memcpy(&ns, data, sizeof(ns));
    int64_t ms = -42;
    char err[128];
    int rc = api_duration_from_ns(ns, &ms, err, sizeof(err));
    FUZZ_CHECK((rc == 0) == (ns >= 0));
    if (rc == 0) /* rounded up to the millisecond: never shorter, less than 1 ms longer */
        FUZZ_CHECK(ms >= 0 && (__int128)ms * 1000000 >= ns &&
                   (ms == 0 || ((__int128)ms - 1) * 1000000 < ns));
}

static void target_check(const char *s)
{
    struct api_target t;
    char err[512];
    memset(err, 'x', sizeof(err));
    err[sizeof(err) - 1] = '\0';
    if (api_target_parse(s, &t, err, sizeof(err)) != 0) {
        FUZZ_CHECK(err[0] != '\0' && err[0] != 'x');
        return;
    }
    FUZZ_CHECK(t.scheme == API_SCHEME_TCP || t.scheme == API_SCHEME_TLS);
    FUZZ_CHECK(t.port >= 1);
    FUZZ_CHECK(fuzz_terminated(t.host, sizeof(t.host)) && t.host[0] != '\0');
    FUZZ_CHECK(strcmp(api_scheme_name(t.scheme), "tcp") == 0 ||
               strcmp(api_scheme_name(t.scheme), "tls") == 0);
    /* host:port, as logs show it and checks are matched by, reads back the same. */
    char hp[API_HOST_MAX + 16];
    api_target_hostport(&t, hp, sizeof(hp));
    struct api_target back;
    int rc = api_target_parse(hp, &back, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "\"%s\" parsed, but its host:port \"%s\" does not: %s\n", s, hp, err);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(back.scheme == API_SCHEME_TCP && back.port == t.port);
    FUZZ_CHECK(strcmp(back.host, t.host) == 0);
    /* Short buffers are cut, never overrun. */
    for (size_t n = 1; n < 8; n++) {
        char small[8];
        memset(small, 'x', sizeof(small));
        api_target_hostport(&t, small, n);
        FUZZ_CHECK(fuzz_terminated(small, n));
    }
}

/* Whether the first `prefix` bits of a and b agree, bit by bit. */
static bool cidr_bits_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
    for (unsigned i = 0; i < prefix; i++) {
        unsigned bit = 7 - i % 8;
        if (((a[i / 8] >> bit) & 1) != ((b[i / 8] >> bit) & 1))
            return false;
    }
    return true;
}

static void cidr_check(const char *s, const uint8_t *data, size_t size)
{
    struct api_cidr c;
    char err[256];
    memset(err, 'x', sizeof(err));
    err[sizeof(err) - 1] = '\0';
    if (api_cidr_parse(s, &c, err, sizeof(err)) != 0) {
        FUZZ_CHECK(err[0] != '\0' && err[0] != 'x');
        return;
    }
    FUZZ_CHECK((c.family == AF_INET && c.prefix <= 32) ||
               (c.family == AF_INET6 && c.prefix <= 128));

    /* The block's own address is inside it, also written as v4-mapped IPv6. */
    struct sockaddr_in in = {.sin_family = AF_INET};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    if (c.family == AF_INET) {
        memcpy(&in.sin_addr, c.bytes, 4);
        FUZZ_CHECK(api_cidr_contains(&c, (struct sockaddr *)&in));
        in6.sin6_addr.s6_addr[10] = in6.sin6_addr.s6_addr[11] = 0xff;
        memcpy(in6.sin6_addr.s6_addr + 12, c.bytes, 4);
        FUZZ_CHECK(api_cidr_contains(&c, (struct sockaddr *)&in6));
    } else {
        memcpy(&in6.sin6_addr, c.bytes, 16);
        /* A v4-mapped block is made IPv4; one shorter than /96 also holds
         * non-mapped addresses and stays IPv6, matching those only. */
        bool mapped = IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr);
        FUZZ_CHECK(!mapped || c.prefix < 96);
        FUZZ_CHECK(api_cidr_contains(&c, (struct sockaddr *)&in6) == !mapped);
    }

    /* An address made of the input's last bytes: inside exactly when its
     * first prefix bits are the block's. */
    uint8_t addr[16] = {0};
    size_t n = size < 16 ? size : 16;
    memcpy(addr, data + size - n, n);
    bool want = cidr_bits_equal(addr, c.bytes, c.prefix);
    if (c.family == AF_INET) {
        memcpy(&in.sin_addr, addr, 4);
        FUZZ_CHECK(api_cidr_contains(&c, (struct sockaddr *)&in) == want);
    } else {
        memcpy(&in6.sin6_addr, addr, 16);
        bool mapped = IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr);
        FUZZ_CHECK(api_cidr_contains(&c, (struct sockaddr *)&in6) == (want && !mapped));
    }
    struct sockaddr other = {.sa_family = AF_UNIX};
    FUZZ_CHECK(!api_cidr_contains(&c, &other));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    dur_check(s);
    dur_check_ns(data, size);
    target_check(s);
    cidr_check(s, data, size);
    free(s);
    return 0;
}
