/* Unit tests for gateway/gw_admin.c: the secret comparison and the loopback
 * test that decides whether the admin API may run without a secret. (The
 * HTTP side is tested against the real binary in test_admin_api.py.) */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "gw_admin.h"

static void test_secret(void **state)
{
    (void)state;
    assert_true(gw_admin_secret_ok("s3cret", "s3cret"));
    assert_false(gw_admin_secret_ok("s3cret", "s3cre"));
    assert_false(gw_admin_secret_ok("s3cret", "s3cret!"));
    assert_false(gw_admin_secret_ok("s3cret", "S3cret"));
    assert_false(gw_admin_secret_ok("s3cret", ""));
    assert_false(gw_admin_secret_ok("s3cret", NULL));
    /* An empty secret is no secret: nothing matches it. */
    assert_false(gw_admin_secret_ok("", ""));
}

static void test_loopback(void **state)
{
    (void)state;
    assert_true(gw_admin_is_loopback("127.0.0.1"));
    assert_true(gw_admin_is_loopback("127.10.0.5"));
    assert_true(gw_admin_is_loopback("::1"));
    assert_true(gw_admin_is_loopback("localhost"));
    assert_false(gw_admin_is_loopback(""));
    assert_false(gw_admin_is_loopback("0.0.0.0"));
    assert_false(gw_admin_is_loopback("::"));
    assert_false(gw_admin_is_loopback("192.0.2.1"));
    assert_false(gw_admin_is_loopback("::ffff:10.0.0.1"));
    assert_false(gw_admin_is_loopback("admin.example.com"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret),
        cmocka_unit_test(test_loopback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
