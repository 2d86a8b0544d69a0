/* Unit tests for gateway/gw_stats.c: per-worker counter slots, summed and
 * formatted. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "gw_stats.h"

/* Gives counter number k (0-based, in report order) of slot s a distinct value. */
static void fill(struct gw_api_stats *slot, int s)
{
    int64_t k = 0;
#define FILL(name, desc)                                                                           \
    slot->name = (int64_t)(s + 1) * 1000 + k;                                                      \
    k++;
    GW_API_COUNTERS(FILL)
#undef FILL
}

static void test_sum_three_slots(void **state)
{
    (void)state;
    struct gw_api_stats slots[3];
    memset(slots, 0, sizeof(slots));
    for (int s = 0; s < 3; s++)
        fill(&slots[s], s);
    struct gw_api_stats out;
    memset(&out, 0x7f, sizeof(out));
    gw_stats_sum(slots, 3, &out);
    /* (1000 + k) + (2000 + k) + (3000 + k) */
    int64_t k = 0;
#define CHECK(name, desc)                                                                          \
    assert_int_equal(out.name, 6000 + 3 * k);                                                      \
    k++;
    GW_API_COUNTERS(CHECK)
#undef CHECK
    assert_int_equal(out.cx_total, 6000);
    assert_int_equal(out.rx_bytes, 6006);
}

static void test_sum_with_add_macro(void **state)
{
    (void)state;
    struct gw_api_stats slots[3];
    memset(slots, 0, sizeof(slots));
    GW_STAT_ADD(&slots[0], cx_total, 5);
    GW_STAT_ADD(&slots[1], cx_total, 7);
    GW_STAT_ADD(&slots[2], cx_total, 11);
    GW_STAT_ADD(&slots[0], cx_active, 3);
    GW_STAT_ADD(&slots[2], cx_active, -1);
    GW_STAT_ADD(&slots[1], rx_bytes, 1LL << 40);
    GW_STAT_ADD(&slots[2], rx_bytes, 1LL << 40);
    struct gw_api_stats out;
    gw_stats_sum(slots, 3, &out);
    assert_int_equal(out.cx_total, 23);
    assert_int_equal(out.cx_active, 2);
    assert_int_equal(out.rx_bytes, 1LL << 41);
    assert_int_equal(out.tx_bytes, 0);
    assert_int_equal(out.drained, 0);
}

static void test_sum_zero_slots(void **state)
{
    (void)state;
    struct gw_api_stats out;
    memset(&out, 0x7f, sizeof(out));
    gw_stats_sum(NULL, 0, &out);
    assert_int_equal(out.cx_total, 0);
    assert_int_equal(out.resumed_reading, 0);
}

static void test_slots_are_cache_line_aligned(void **state)
{
    (void)state;
    assert_int_equal(_Alignof(struct gw_api_stats), 64);
    assert_int_equal(sizeof(struct gw_api_stats) % 64, 0);
}

static void test_format(void **state)
{
    (void)state;
    struct gw_api_stats s;
    memset(&s, 0, sizeof(s));
    fill(&s, 0);
    s.cx_total = 42;
    s.tx_bytes = -3;
    char buf[1024];
    gw_stats_format(&s, buf, sizeof(buf));
    assert_non_null(strstr(buf, "cx_total="));
    /* Every counter, in report order, as name=value separated by one space. */
    char want[1024];
    size_t n = 0;
#define EXPECT(name, desc)                                                                         \
    n += (size_t)snprintf(want + n, sizeof(want) - n, "%s" #name "=%lld", n ? " " : "",            \
                          (long long)s.name);
    GW_API_COUNTERS(EXPECT)
#undef EXPECT
    assert_string_equal(buf, want);
    assert_int_equal(strncmp(buf, "cx_total=42 cx_active=1001 rx_bytes=1002 tx_bytes=-3 ", 52), 0);
}

static void test_format_zero(void **state)
{
    (void)state;
    struct gw_api_stats s;
    memset(&s, 0, sizeof(s));
    char buf[512];
    gw_stats_format(&s, buf, sizeof(buf));
    assert_int_equal(strncmp(buf, "cx_total=0 cx_active=0 rx_bytes=0 tx_bytes=0 ", 44), 0);
    for (const char *p = buf; (p = strchr(p, '=')) != NULL; p++)
        assert_true(p[1] == '0' && (p[2] == ' ' || p[2] == '\0'));
}

/* A short buffer gets a truncated, terminated prefix and nothing past its end. */
static void test_format_truncates(void **state)
{
    (void)state;
    struct gw_api_stats s;
    memset(&s, 0, sizeof(s));
    s.cx_total = 123;
    char buf[64];
    memset(buf, 'X', sizeof(buf));
    gw_stats_format(&s, buf, 16);
    assert_string_equal(buf, "cx_total=123 cx");
    assert_int_equal(buf[16], 'X');
    for (size_t len = 1; len < 40; len++) {
        memset(buf, 'X', sizeof(buf));
        gw_stats_format(&s, buf, len);
        assert_int_equal(strlen(buf), len - 1);
        assert_int_equal(buf[len], 'X');
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sum_three_slots),
        cmocka_unit_test(test_sum_with_add_macro),
        cmocka_unit_test(test_sum_zero_slots),
        cmocka_unit_test(test_slots_are_cache_line_aligned),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_zero),
        cmocka_unit_test(test_format_truncates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
