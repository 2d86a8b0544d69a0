/* Unit tests for apidefs/api_target.c: upstream and check addresses, and the
 * address blocks of proxy_protocol_trusted. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "api_target.h"

static void assert_target(const char *in, enum api_scheme scheme, const char *host, unsigned port)
{
    struct api_target t;
    char err[320] = "";
    memset(&t, 0x5a, sizeof(t));
    int rc = api_target_parse(in, &t, err, sizeof(err));
    if (rc != 0)
        fail_msg("\"%s\" should parse, got error: %s", in, err);
    assert_int_equal(t.scheme, scheme);
    assert_string_equal(t.host, host);
    assert_int_equal(t.port, port);
}

/* Rejects `in`; the reason must quote the input and mention `needle`. */
static void assert_rejects(const char *in, const char *needle)
{
    struct api_target t;
    char err[1024] = "";
    int rc = api_target_parse(in, &t, err, sizeof(err));
    if (rc != -1)
        fail_msg("\"%s\" should be rejected, got rc=%d", in, rc);
    assert_true(strlen(err) > 0);
    if (strstr(err, needle) == NULL)
        fail_msg("\"%s\": error \"%s\" does not mention \"%s\"", in, err, needle);
    if (in[0] != '\0' && strstr(err, in) == NULL)
        fail_msg("\"%s\": error \"%s\" does not quote the input", in, err);
}

static void test_schemes(void **state)
{
    (void)state;
    assert_target("tcp://db.internal:5432", API_SCHEME_TCP, "db.internal", 5432);
    assert_target("tls://db.internal:5432", API_SCHEME_TLS, "db.internal", 5432);
    assert_target("TCP://H:1", API_SCHEME_TCP, "H", 1);
    assert_target("TLS://upstream:9191", API_SCHEME_TLS, "upstream", 9191);
    assert_target("Tls://upstream:9191", API_SCHEME_TLS, "upstream", 9191);
}

/* Tyk reads "localhost:6379" as scheme "localhost"; tcpgate reads it as tcp. */
static void test_bare_host_port_is_tcp(void **state)
{
    (void)state;
    assert_target("localhost:6379", API_SCHEME_TCP, "localhost", 6379);
    assert_target("192.168.10.1:6379", API_SCHEME_TCP, "192.168.10.1", 6379);
    assert_target("redis_1.svc-a.local:1", API_SCHEME_TCP, "redis_1.svc-a.local", 1);
    assert_target("h:65535", API_SCHEME_TCP, "h", 65535);
}

static void test_ipv6(void **state)
{
    (void)state;
    assert_target("[::1]:80", API_SCHEME_TCP, "::1", 80);
    assert_target("tcp://[::1]:80", API_SCHEME_TCP, "::1", 80);
    assert_target("tls://[2001:db8::7]:443", API_SCHEME_TLS, "2001:db8::7", 443);
}

static void test_trailing_slash_accepted(void **state)
{
    (void)state;
    assert_target("tcp://h:1/", API_SCHEME_TCP, "h", 1);
}

static void test_port_errors(void **state)
{
    (void)state;
    assert_rejects("localhost", "no port");
    assert_rejects("tcp://localhost", "no port");
    assert_rejects("h:", "no port");
    assert_rejects("tcp://", "no port");
    assert_rejects("[::1]", "no port");
    assert_rejects("[::1]80", "no port");
    assert_rejects("h:0", "out of range");
    assert_rejects("h:65536", "out of range");
    assert_rejects("h:99999999999999999999", "out of range");
    assert_rejects("h:8o", "invalid port");
    assert_rejects("h:-1", "invalid port");
    assert_rejects("h:+80", "invalid port");
    assert_rejects("h:80 ", "invalid port");
    assert_rejects("h:/", "invalid port");
}

static void test_scheme_errors(void **state)
{
    (void)state;
    assert_rejects("http://h:80", "unknown scheme \"http\"");
    assert_rejects("https://h:443", "unknown scheme \"https\"");
    assert_rejects("udp://h:53", "unknown scheme \"udp\"");
    assert_rejects("://h:80", "unknown scheme");
}

static void test_host_errors(void **state)
{
    (void)state;
    assert_rejects(":80", "invalid host");
    assert_rejects("tcp://:80", "invalid host");
    assert_rejects("bad host:80", "invalid host");
    assert_rejects("h*st:80", "invalid host");
    assert_rejects("a..b:80", "invalid host");
    assert_rejects(".a:80", "invalid host");
    assert_rejects("-a:80", "invalid host");
    assert_rejects(" h:1", "invalid host");
    assert_rejects("user@h:80", "invalid host");
    assert_rejects("tcp://h/x:80", "invalid host");
}

static void test_host_length_limits(void **state)
{
    (void)state;
    char in[400];
    char label[64];
    /* A 63-character label is the most a DNS name allows. */
    memset(label, 'a', 63);
    label[63] = '\0';
    snprintf(in, sizeof(in), "%s:1", label);
    assert_target(in, API_SCHEME_TCP, label, 1);
    snprintf(in, sizeof(in), "%sa:1", label);
    assert_rejects(in, "invalid host");
    /* The whole name is capped at API_HOST_MAX characters. */
    char host[API_HOST_MAX + 2];
    memset(host, 'a', sizeof(host));
    for (size_t i = 50; i < API_HOST_MAX; i += 51)
        host[i] = '.';
    host[API_HOST_MAX] = '\0';
    snprintf(in, sizeof(in), "%s:1", host);
    assert_target(in, API_SCHEME_TCP, host, 1);
    host[API_HOST_MAX] = 'a';
    host[API_HOST_MAX + 1] = '\0';
    snprintf(in, sizeof(in), "%s:1", host);
    assert_rejects(in, "invalid host");
}

static void test_ipv6_errors(void **state)
{
    (void)state;
    assert_rejects("::1:80", "brackets");
    assert_rejects("tcp://2001:db8::1:80", "brackets");
    assert_rejects("[::1:80", "unterminated");
    assert_rejects("[zz::1]:80", "invalid IPv6");
    assert_rejects("[]:80", "invalid IPv6");
    assert_rejects("[1.2.3.4]:80", "invalid IPv6");
}

static void test_trailing_path_rejected(void **state)
{
    (void)state;
    assert_rejects("h:80/x", "invalid port");
    assert_rejects("tcp://h:80/x", "invalid port");
    assert_rejects("h:80//", "invalid port");
    assert_rejects("[::1]:80/x", "invalid port");
}

static void test_empty(void **state)
{
    (void)state;
    struct api_target t;
    char err[64] = "";
    assert_int_equal(api_target_parse("", &t, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "empty"));
    err[0] = '\0';
    assert_int_equal(api_target_parse(NULL, &t, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "empty"));
}

static void test_hostport(void **state)
{
    (void)state;
    struct api_target t;
    char err[320];
    char buf[300];
    assert_int_equal(api_target_parse("tls://db.internal:5432", &t, err, sizeof(err)), 0);
    api_target_hostport(&t, buf, sizeof(buf));
    assert_string_equal(buf, "db.internal:5432");
    assert_int_equal(api_target_parse("localhost:6379", &t, err, sizeof(err)), 0);
    api_target_hostport(&t, buf, sizeof(buf));
    assert_string_equal(buf, "localhost:6379");
    assert_int_equal(api_target_parse("tcp://[::1]:80", &t, err, sizeof(err)), 0);
    api_target_hostport(&t, buf, sizeof(buf));
    assert_string_equal(buf, "[::1]:80");
    assert_int_equal(api_target_parse("tcp://h:1/", &t, err, sizeof(err)), 0);
    api_target_hostport(&t, buf, sizeof(buf));
    assert_string_equal(buf, "h:1");

    /* Truncates within the buffer. */
    char small[8];
    memset(small, 'X', sizeof(small));
    assert_int_equal(api_target_parse("db.internal:5432", &t, err, sizeof(err)), 0);
    api_target_hostport(&t, small, 5);
    assert_string_equal(small, "db.i");
    assert_int_equal(small[5], 'X');
}

static void test_scheme_name(void **state)
{
    (void)state;
    assert_string_equal(api_scheme_name(API_SCHEME_TCP), "tcp");
    assert_string_equal(api_scheme_name(API_SCHEME_TLS), "tls");
}

/* Whether the block `cidr` contains the address `ip` (IPv4 or IPv6 text). */
static bool cidr_has(const char *cidr, const char *ip)
{
    struct api_cidr c;
    char err[256] = "";
    if (api_cidr_parse(cidr, &c, err, sizeof(err)) != 0)
        fail_msg("\"%s\" should parse, got error: %s", cidr, err);
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
    memset(&in, 0, sizeof(in));
    memset(&in6, 0, sizeof(in6));
    in.sin_family = AF_INET;
    in6.sin6_family = AF_INET6;
    if (inet_pton(AF_INET, ip, &in.sin_addr) == 1)
        return api_cidr_contains(&c, (struct sockaddr *)&in);
    assert_int_equal(inet_pton(AF_INET6, ip, &in6.sin6_addr), 1);
    return api_cidr_contains(&c, (struct sockaddr *)&in6);
}

/* A block written as v4-mapped IPv6 holds IPv4 peers, however the socket
 * shows them: a dual-stack listener sees "::ffff:10.1.2.3", which is compared
 * as IPv4. (Found by the fuzz target: such a block was kept as IPv6 and
 * matched no peer at all, not even its own address.) */
static void test_cidr_v4_mapped(void **state)
{
    (void)state;
    assert_true(cidr_has("::ffff:10.0.0.0/104", "10.1.2.3"));
    assert_true(cidr_has("::ffff:10.0.0.0/104", "::ffff:10.1.2.3"));
    assert_false(cidr_has("::ffff:10.0.0.0/104", "11.1.2.3"));
    assert_true(cidr_has("::ffff:192.0.2.1", "192.0.2.1"));
    assert_true(cidr_has("::ffff:192.0.2.1", "::ffff:192.0.2.1"));
    assert_false(cidr_has("::ffff:192.0.2.1", "192.0.2.2"));
    assert_true(cidr_has("::ffff:0:0/96", "203.0.113.7"));
    /* The same blocks written as IPv4, and IPv6 ones, as before. */
    assert_true(cidr_has("10.0.0.0/8", "::ffff:10.1.2.3"));
    assert_true(cidr_has("2001:db8::/32", "2001:db8::1"));
    assert_false(cidr_has("2001:db8::/32", "10.1.2.3"));
    assert_false(cidr_has("::/0", "10.1.2.3"));
    struct api_cidr c;
    char err[256];
    assert_int_equal(api_cidr_parse("::ffff:10.0.0.0/104", &c, err, sizeof(err)), 0);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schemes),     cmocka_unit_test(test_bare_host_port_is_tcp),
        cmocka_unit_test(test_ipv6),        cmocka_unit_test(test_trailing_slash_accepted),
        cmocka_unit_test(test_port_errors), cmocka_unit_test(test_scheme_errors),
        cmocka_unit_test(test_host_errors), cmocka_unit_test(test_host_length_limits),
        cmocka_unit_test(test_ipv6_errors), cmocka_unit_test(test_trailing_path_rejected),
        cmocka_unit_test(test_empty),       cmocka_unit_test(test_hostport),
        cmocka_unit_test(test_scheme_name), cmocka_unit_test(test_cidr_v4_mapped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
