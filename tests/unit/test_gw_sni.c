/* Unit tests for gateway/gw_sni.c: routing by TLS server name. An exact name
 * beats a one-label wildcard ("*.example.com"), which beats the fallback (the
 * definition with an empty domain); case and a trailing dot do not matter. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "gw_sni.h"

/* Distinct values to route to. */
static int exact_v, wild_v, fallback_v, other_v;

static int setup(void **state)
{
    *state = gw_sni_new(4);
    return *state == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    gw_sni_free(*state);
    return 0;
}

static void test_exact(void **state)
{
    struct gw_sni *t = *state;
    assert_int_equal(gw_sni_add(t, "www.example.com", &exact_v), 0);
    assert_int_equal(gw_sni_add(t, "api.example.com", &other_v), 0);
    assert_ptr_equal(gw_sni_lookup(t, "www.example.com"), &exact_v);
    assert_ptr_equal(gw_sni_lookup(t, "api.example.com"), &other_v);
    assert_null(gw_sni_lookup(t, "example.com"));
    assert_null(gw_sni_lookup(t, "www.example.co"));
    assert_null(gw_sni_lookup(t, "ww.example.com"));
    assert_null(gw_sni_lookup(t, "www.example.com.evil"));
    assert_null(gw_sni_lookup(t, "xwww.example.com"));
}

static void test_case_insensitive(void **state)
{
    struct gw_sni *t = *state;
    assert_int_equal(gw_sni_add(t, "WWW.Example.COM", &exact_v), 0);
    assert_int_equal(gw_sni_add(t, "lower.example.com", &other_v), 0);
    /* upper-case domain, any-case names */
    assert_ptr_equal(gw_sni_lookup(t, "www.example.com"), &exact_v);
    assert_ptr_equal(gw_sni_lookup(t, "WWW.EXAMPLE.COM"), &exact_v);
    assert_ptr_equal(gw_sni_lookup(t, "wWw.eXaMpLe.CoM"), &exact_v);
    /* lower-case domain, upper-case names */
    assert_ptr_equal(gw_sni_lookup(t, "LOWER.EXAMPLE.COM"), &other_v);
    assert_ptr_equal(gw_sni_lookup(t, "Lower.Example.Com"), &other_v);
    /* Only ASCII letters fold: bytes above 0x7f are compared as they are. */
    assert_int_equal(gw_sni_add(t, "caf\xc3\xa9.example", &wild_v), 0);
    assert_ptr_equal(gw_sni_lookup(t, "CAF\xc3\xa9.example"), &wild_v);
    assert_null(gw_sni_lookup(t, "caf\xc3\x89.example"));
}

static void test_trailing_dot(void **state)
{
    struct gw_sni *t = *state;
    assert_int_equal(gw_sni_add(t, "www.example.com", &exact_v), 0);
    assert_int_equal(gw_sni_add(t, "dotted.example.com.", &other_v), 0);
    assert_ptr_equal(gw_sni_lookup(t, "www.example.com."), &exact_v);
    assert_ptr_equal(gw_sni_lookup(t, "WWW.EXAMPLE.COM."), &exact_v);
    assert_ptr_equal(gw_sni_lookup(t, "dotted.example.com"), &other_v);
    assert_ptr_equal(gw_sni_lookup(t, "dotted.example.com."), &other_v);
    /* only one dot is dropped */
    assert_null(gw_sni_lookup(t, "www.example.com.."));
    /* the same name with and without the dot is one name */
    assert_int_equal(gw_sni_add(t, "www.example.com.", &wild_v), -1);
    assert_int_equal(gw_sni_add(t, "dotted.example.com", &wild_v), -1);
}

static void test_wildcard_one_label(void **state)
{
    struct gw_sni *t = *state;
    assert_int_equal(gw_sni_add(t, "*.example.com", &wild_v), 0);
    assert_ptr_equal(gw_sni_lookup(t, "a.example.com"), &wild_v);
    assert_ptr_equal(gw_sni_lookup(t, "www.example.com"), &wild_v);
    assert_ptr_equal(gw_sni_lookup(t, "A-Long-Label.EXAMPLE.com."), &wild_v);
    assert_null(gw_sni_lookup(t, "example.com"));     /* no label */
    assert_null(gw_sni_lookup(t, "a.b.example.com")); /* two labels */
    assert_null(gw_sni_lookup(t, ".example.com"));    /* an empty label */
    assert_null(gw_sni_lookup(t, "aexample.com"));
    assert_null(gw_sni_lookup(t, "a.example.org"));
    assert_null(gw_sni_lookup(t, "a.notexample.com"));
    /* wildcards at different depths are separate entries */
    assert_int_equal(gw_sni_add(t, "*.b.example.com", &other_v), 0);
    assert_ptr_equal(gw_sni_lookup(t, "a.b.example.com"), &other_v);
    assert_ptr_equal(gw_sni_lookup(t, "b.example.com"), &wild_v);
    assert_null(gw_sni_lookup(t, "x.a.b.example.com"));
    /* upper-case wildcard */
    assert_int_equal(gw_sni_add(t, "*.UPPER.Example", &exact_v), 0);
    assert_ptr_equal(gw_sni_lookup(t, "x.upper.example"), &exact_v);
    assert_ptr_equal(gw_sni_lookup(t, "X.UPPER.EXAMPLE."), &exact_v);
}

static void test_exact_beats_wildcard(void **state)
{
    struct gw_sni *t = *state;
    /* order of adding does not matter */
    assert_int_equal(gw_sni_add(t, "*.example.com", &wild_v), 0);
    assert_int_equal(gw_sni_add(t, "www.example.com", &exact_v), 0);
    assert_int_equal(gw_sni_add(t, "api.example.org", &other_v), 0);
    assert_int_equal(gw_sni_add(t, "*.example.org", &wild_v), 0);
    assert_int_equal(gw_sni_add(t, "", &fallback_v), 0);
    assert_ptr_equal(gw_sni_lookup(t, "www.example.com"), &exact_v);
    assert_ptr_equal(gw_sni_lookup(t, "WWW.example.com."), &exact_v);
    assert_ptr_equal(gw_sni_lookup(t, "ftp.example.com"), &wild_v);
    assert_ptr_equal(gw_sni_lookup(t, "api.example.org"), &other_v);
    assert_ptr_equal(gw_sni_lookup(t, "web.example.org"), &wild_v);
    /* wildcard beats fallback, fallback catches the rest */
    assert_ptr_equal(gw_sni_lookup(t, "x.y.example.com"), &fallback_v);
    assert_ptr_equal(gw_sni_lookup(t, "example.com"), &fallback_v);
}

static void test_fallback(void **state)
{
    struct gw_sni *t = *state;
    assert_int_equal(gw_sni_add(t, "www.example.com", &exact_v), 0);
    assert_null(gw_sni_lookup(t, NULL));
    assert_null(gw_sni_lookup(t, ""));
    assert_null(gw_sni_lookup(t, "unknown.example"));
    assert_int_equal(gw_sni_add(t, "", &fallback_v), 0);
    assert_ptr_equal(gw_sni_lookup(t, NULL), &fallback_v);
    assert_ptr_equal(gw_sni_lookup(t, ""), &fallback_v);
    assert_ptr_equal(gw_sni_lookup(t, "unknown.example"), &fallback_v);
    assert_ptr_equal(gw_sni_lookup(t, "localhost"), &fallback_v);
    assert_ptr_equal(gw_sni_lookup(t, "www.example.com"), &exact_v);
    /* one fallback only; "." is the empty name too */
    assert_int_equal(gw_sni_add(t, "", &other_v), -1);
    assert_int_equal(gw_sni_add(t, ".", &other_v), -1);
    assert_ptr_equal(gw_sni_lookup(t, NULL), &fallback_v);
}

static void test_fallback_null_value(void **state)
{
    struct gw_sni *t = *state;
    /* A fallback whose value is NULL is still the only fallback. */
    assert_int_equal(gw_sni_add(t, ".", NULL), 0);
    assert_int_equal(gw_sni_add(t, "", &other_v), -1);
}

static void test_duplicates(void **state)
{
    struct gw_sni *t = *state;
    assert_int_equal(gw_sni_add(t, "www.example.com", &exact_v), 0);
    assert_int_equal(gw_sni_add(t, "www.example.com", &other_v), -1);
    assert_int_equal(gw_sni_add(t, "WWW.EXAMPLE.COM", &other_v), -1);
    assert_int_equal(gw_sni_add(t, "Www.Example.Com.", &other_v), -1);
    assert_int_equal(gw_sni_add(t, "*.example.com", &wild_v), 0);
    assert_int_equal(gw_sni_add(t, "*.EXAMPLE.com", &other_v), -1);
    /* the first one stays */
    assert_ptr_equal(gw_sni_lookup(t, "www.example.com"), &exact_v);
    assert_ptr_equal(gw_sni_lookup(t, "x.example.com"), &wild_v);
}

static void test_growth_5000(void **state)
{
    (void)state;
    /* Starts small: the table grows many times. */
    struct gw_sni *t = gw_sni_new(1);
    assert_non_null(t);
    static char values[5000];
    char name[64];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "host%d.tenant%d.example.com", i, i % 37);
        assert_int_equal(gw_sni_add(t, name, &values[i]), 0);
    }
    assert_int_equal(gw_sni_add(t, "*.wild.example.com", &wild_v), 0);
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "HOST%d.Tenant%d.example.com.", i, i % 37);
        assert_ptr_equal(gw_sni_lookup(t, name), &values[i]);
        snprintf(name, sizeof(name), "host%d.tenant%d.example.com", i, i % 37);
        assert_int_equal(gw_sni_add(t, name, &other_v), -1);
        snprintf(name, sizeof(name), "host%d.tenant%d.example.com", i, (i + 1) % 37);
        assert_null(gw_sni_lookup(t, name));
    }
    assert_ptr_equal(gw_sni_lookup(t, "h.wild.example.com"), &wild_v);
    assert_null(gw_sni_lookup(t, "host5000.tenant5.example.com"));
    gw_sni_free(t);

    /* Sized for them up front: the same answers. */
    t = gw_sni_new(5000);
    assert_non_null(t);
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "n%d.example", i);
        assert_int_equal(gw_sni_add(t, name, &values[i]), 0);
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "N%d.EXAMPLE", i);
        assert_ptr_equal(gw_sni_lookup(t, name), &values[i]);
    }
    gw_sni_free(t);
}

static void test_long_names(void **state)
{
    struct gw_sni *t = *state;
    /* 255 characters: four labels of 63 and one of 3. */
    char name[256];
    memset(name, 'a', 255);
    name[255] = '\0';
    name[63] = name[127] = name[191] = name[251] = '.';
    assert_int_equal(strlen(name), 255);
    assert_int_equal(gw_sni_add(t, name, &exact_v), 0);
    assert_ptr_equal(gw_sni_lookup(t, name), &exact_v);
    char upper[257];
    for (int i = 0; i < 255; i++)
        upper[i] = name[i] == 'a' ? 'A' : name[i];
    upper[255] = '.';
    upper[256] = '\0';
    assert_ptr_equal(gw_sni_lookup(t, upper), &exact_v); /* with a trailing dot: 256 */

    /* a wildcard covering it */
    char wild[256];
    snprintf(wild, sizeof(wild), "*%s", name + 63);
    assert_int_equal(gw_sni_add(t, wild, &wild_v), 0);
    char sibling[256];
    memcpy(sibling, name, sizeof(sibling));
    sibling[0] = 'b';
    assert_ptr_equal(gw_sni_lookup(t, sibling), &wild_v);
    assert_ptr_equal(gw_sni_lookup(t, name), &exact_v);
}

static void test_over_255_is_another_name(void **state)
{
    struct gw_sni *t = *state;
    char name[256];
    memset(name, 'a', 255);
    name[255] = '\0';
    name[63] = name[127] = name[191] = name[251] = '.';
    assert_int_equal(gw_sni_add(t, name, &exact_v), 0);
    /* A name longer than 255 characters is not the 255-character name it starts
     * with: it must not route there. */
    char longer[300];
    memcpy(longer, name, 255);
    memcpy(longer + 255, "zzz", 4);
    assert_ptr_not_equal(gw_sni_lookup(t, longer), &exact_v);
    assert_null(gw_sni_lookup(t, longer));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_case_insensitive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trailing_dot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wildcard_one_label, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exact_beats_wildcard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fallback_null_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates, setup, teardown),
        cmocka_unit_test(test_growth_5000),
        cmocka_unit_test_setup_teardown(test_long_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_over_255_is_another_name, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
