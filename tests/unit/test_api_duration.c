/* Unit tests for apidefs/api_duration.c: Go-style duration strings, Tyk's
 * integer nanoseconds, and formatting back. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "api_duration.h"

struct ok_case {
    const char *in;
    int64_t ms;
};

static void assert_parses(const char *in, int64_t want)
{
    int64_t ms = -12345;
    char err[256] = "";
    int rc = api_duration_parse(in, &ms, err, sizeof(err));
    if (rc != 0)
        fail_msg("\"%s\" should parse, got error: %s", in, err);
    if (ms != want)
        fail_msg("\"%s\": expected %lld ms, got %lld ms", in, (long long)want, (long long)ms);
}

static void assert_rejects(const char *in, const char *needle)
{
    int64_t ms = -12345;
    char err[256] = "";
    int rc = api_duration_parse(in, &ms, err, sizeof(err));
    if (rc != -1)
        fail_msg("\"%s\" should be rejected, got rc=%d ms=%lld", in, rc, (long long)ms);
    assert_true(strlen(err) > 0);
    if (needle != NULL && strstr(err, needle) == NULL)
        fail_msg("\"%s\": error \"%s\" does not mention \"%s\"", in, err, needle);
}

static void test_parse_units(void **state)
{
    (void)state;
    static const struct ok_case cases[] = {
        {"250ms", 250},
        {"5s", 5000},
        {"1m", 60000},
        {"1h", 3600000},
        {"1h30m", 5400000},
        {"1m30s", 90000},
        {"2h45m30s", 9930000},
        {"1s500ms", 1500},
        {"1.5s", 1500},
        {"1.5h", 5400000},
        {"0.5m", 30000},
        {".5s", 500},
        {"0", 0},
        {"0s", 0},
        {"0ms", 0},
        {"1000000ns", 1},
        {"2000us", 2},
        {"2000\xc2\xb5s", 2}, /* µs in UTF-8, as Go writes it */
        {"9223372036854ms", 9223372036854LL},
        {"2562047h", 2562047LL * 3600000LL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_parses(cases[i].in, cases[i].ms);
}

/* Sub-millisecond remainders round up, so a tiny timeout never means "off". */
static void test_parse_rounds_up(void **state)
{
    (void)state;
    assert_parses("1us", 1);
    assert_parses("1\xc2\xb5s", 1);
    assert_parses("500ns", 1);
    assert_parses("1ns", 1);
    assert_parses("1000001ns", 2);
    assert_parses("1500\xc2\xb5s", 2);
    assert_parses("1.5ms", 2);
    assert_parses("0.2ms", 1);
    assert_parses("1.0000001s", 1001);
}

/* Decimal fractions must be exact: "4.35s" is 4350 ms, not 4351.
 * Every case is checked before failing, so the report shows how many. */
static void test_parse_decimal_fraction_exact(void **state)
{
    (void)state;
    static const struct ok_case cases[] = {
        {"0.1s", 100},    {"1.1s", 1100},  {"2.2s", 2200},   {"1.15s", 1150},
        {"4.35s", 4350},  {"0.105s", 105}, {"0.123s", 123},  {"0.5m", 30000},
        {"0.001h", 3600}, {"0.01m", 600},  {"1.999s", 1999}, {"12.156s", 12156},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t ms = -1;
        char err[256] = "";
        if (api_duration_parse(cases[i].in, &ms, err, sizeof(err)) != 0 || ms != cases[i].ms) {
            print_message("wrong: \"%s\" -> %lld ms, expected %lld\n", cases[i].in, (long long)ms,
                          (long long)cases[i].ms);
            bad++;
        }
    }
    /* Every w.xyz second value for w < 10. */
    int sweep_bad = 0;
    for (int w = 0; w < 10; w++) {
        for (int f = 0; f < 1000; f++) {
            char in[32];
            int64_t ms = -1;
            char err[256] = "";
            snprintf(in, sizeof(in), "%d.%03ds", w, f);
            if (api_duration_parse(in, &ms, err, sizeof(err)) != 0 || ms != w * 1000 + f)
                sweep_bad++;
        }
    }
    if (sweep_bad != 0)
        print_message("wrong: %d of 10000 values \"w.xyzs\" parse wrong\n", sweep_bad);
    assert_int_equal(bad, 0);
    assert_int_equal(sweep_bad, 0);
}

static void test_parse_errors(void **state)
{
    (void)state;
    assert_rejects("", "empty");
    assert_rejects(NULL, "empty");
    assert_rejects("5", "unit");
    assert_rejects("s", "\"s\"");
    assert_rejects("5x", "unit");
    assert_rejects("-1s", "-1s");
    assert_rejects("+1s", "+1s");
    assert_rejects("1..5s", "1..5s");
    assert_rejects(".", ".");
    assert_rejects(".s", ".s");
    assert_rejects("00", "unit");
    assert_rejects("1e3s", "unit");
    assert_rejects(" 1s", " 1s");
    assert_rejects("1s ", "1s ");
    assert_rejects("1sm", "1sm");
    assert_rejects("5 s", "5 s");
    assert_rejects("5S", "unit");
}

static void test_parse_too_large(void **state)
{
    (void)state;
    assert_rejects("9223372036855ms", "too large");
    assert_rejects("2562048h", "too large");
    assert_rejects("99999999999999999999h", "too large");
    assert_rejects("9999999999999999999999999999999999999999s", "too large");
    assert_rejects("2562047h2562047h", "too large");
}

static void test_from_ns(void **state)
{
    (void)state;
    int64_t ms = -1;
    char err[128] = "";
    assert_int_equal(api_duration_from_ns(1000000000, &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 1000);
    assert_int_equal(api_duration_from_ns(1, &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 1);
    assert_int_equal(api_duration_from_ns(0, &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(api_duration_from_ns(999999, &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 1);
    assert_int_equal(api_duration_from_ns(1000000, &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 1);
    assert_int_equal(api_duration_from_ns(1000001, &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 2);
    assert_int_equal(api_duration_from_ns(2500000000LL, &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 2500);
    assert_int_equal(api_duration_from_ns(INT64_MAX, &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, INT64_MAX / 1000000 + 1);
}

static void test_from_ns_negative(void **state)
{
    (void)state;
    int64_t ms = 77;
    char err[128] = "";
    assert_int_equal(api_duration_from_ns(-1, &ms, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "negative"));
    assert_non_null(strstr(err, "-1"));
    assert_int_equal(ms, 77);
    err[0] = '\0';
    assert_int_equal(api_duration_from_ns(INT64_MIN, &ms, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "negative"));
}

static void assert_formats(int64_t ms, const char *want)
{
    char buf[64];
    memset(buf, 'X', sizeof(buf));
    api_duration_format(ms, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

static void test_format(void **state)
{
    (void)state;
    assert_formats(0, "0");
    assert_formats(1, "1ms");
    assert_formats(250, "250ms");
    assert_formats(1000, "1s");
    assert_formats(5000, "5s");
    assert_formats(1500, "1500ms");
    assert_formats(60000, "1m");
    assert_formats(90000, "90s");
    assert_formats(3600000, "1h");
    assert_formats(5400000, "90m");
    assert_formats(7200000, "2h");
    assert_formats(86400000, "24h");
}

static void test_format_round_trips(void **state)
{
    (void)state;
    static const int64_t values[] = {
        0,     1,     7,       250,     999,     1000,    1001,     59999,
        60000, 61000, 3599999, 3600000, 3601000, 5400000, 86400000, 9223372036854LL};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char buf[64];
        api_duration_format(values[i], buf, sizeof(buf));
        assert_parses(buf, values[i]);
    }
}

static void test_format_truncates(void **state)
{
    (void)state;
    char buf[8];
    memset(buf, 'X', sizeof(buf));
    api_duration_format(250, buf, 3);
    assert_string_equal(buf, "25");
    assert_int_equal(buf[3], 'X');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_units),
        cmocka_unit_test(test_parse_rounds_up),
        cmocka_unit_test(test_parse_decimal_fraction_exact),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_too_large),
        cmocka_unit_test(test_from_ns),
        cmocka_unit_test(test_from_ns_negative),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_format_round_trips),
        cmocka_unit_test(test_format_truncates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
