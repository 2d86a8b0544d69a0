/* Unit tests for gateway/gw_limits.c: counts per client address, and the
 * single-counter limits. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "gw_limits.h"

static struct sockaddr_in v4(const char *ip, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
    return a;
}

static struct sockaddr_in6 v6(const char *ip, int port)
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
    assert_int_equal(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
    return a;
}

static void test_per_address_count(void **state)
{
    (void)state;
    struct gw_sources *t = gw_sources_new();
    assert_non_null(t);
    struct sockaddr_in a1 = v4("192.0.2.1", 1000), a2 = v4("192.0.2.1", 2000);
    struct sockaddr_in b = v4("192.0.2.2", 1000);
    /* The port does not matter: the address holds the count. */
    assert_true(gw_sources_acquire(t, (struct sockaddr *)&a1, 2));
    assert_true(gw_sources_acquire(t, (struct sockaddr *)&a2, 2));
    assert_false(gw_sources_acquire(t, (struct sockaddr *)&a1, 2));
    assert_true(gw_sources_acquire(t, (struct sockaddr *)&b, 2));
    gw_sources_release(t, (struct sockaddr *)&a2);
    assert_true(gw_sources_acquire(t, (struct sockaddr *)&a1, 2));
    assert_false(gw_sources_acquire(t, (struct sockaddr *)&a2, 2));
    gw_sources_release(t, (struct sockaddr *)&a1);
    gw_sources_release(t, (struct sockaddr *)&a1);
    gw_sources_release(t, (struct sockaddr *)&b);
    gw_sources_free(t); /* LeakSanitizer: every entry went with its last connection */
}

static void test_mapped_ipv4_is_ipv4(void **state)
{
    (void)state;
    struct gw_sources *t = gw_sources_new();
    struct sockaddr_in a = v4("198.51.100.7", 1);
    struct sockaddr_in6 mapped = v6("::ffff:198.51.100.7", 2), other = v6("2001:db8::7", 3);
    assert_true(gw_sources_acquire(t, (struct sockaddr *)&a, 1));
    assert_false(gw_sources_acquire(t, (struct sockaddr *)&mapped, 1));
    assert_true(gw_sources_acquire(t, (struct sockaddr *)&other, 1));
    gw_sources_release(t, (struct sockaddr *)&mapped); /* frees a's count */
    assert_true(gw_sources_acquire(t, (struct sockaddr *)&a, 1));
    gw_sources_release(t, (struct sockaddr *)&a);
    gw_sources_release(t, (struct sockaddr *)&other);
    gw_sources_free(t);
}

static void test_non_ip_is_not_limited(void **state)
{
    (void)state;
    struct gw_sources *t = gw_sources_new();
    struct sockaddr_un u = {.sun_family = AF_UNIX};
    for (int i = 0; i < 5; i++)
        assert_true(gw_sources_acquire(t, (struct sockaddr *)&u, 1));
    gw_sources_release(t, (struct sockaddr *)&u);
    gw_sources_free(t);
    gw_sources_free(NULL);
}

static void test_counter_limit(void **state)
{
    (void)state;
    int64_t n = 0;
    assert_true(gw_limit_acquire(&n, 2));
    assert_true(gw_limit_acquire(&n, 2));
    assert_false(gw_limit_acquire(&n, 2));
    assert_int_equal(n, 2); /* a refusal leaves the count as it was */
    gw_limit_release(&n);
    assert_true(gw_limit_acquire(&n, 2));
    for (int i = 0; i < 100; i++)
        assert_true(gw_limit_acquire(&n, 0)); /* 0: no limit */
    assert_int_equal(n, 102);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_per_address_count),
        cmocka_unit_test(test_mapped_ipv4_is_ipv4),
        cmocka_unit_test(test_non_ip_is_not_limited),
        cmocka_unit_test(test_counter_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
