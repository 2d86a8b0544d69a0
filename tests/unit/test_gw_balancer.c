/* Unit tests for gateway/gw_balancer.c: round robin with weighting by repeats,
 * skipping targets that may not be picked. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "gw_balancer.h"

/* ctx: a bool per target; counts the calls. */
struct elig {
    const bool *ok;
    size_t n;
    int calls;
};

static bool eligible(void *ctx, size_t i)
{
    struct elig *e = ctx;
    e->calls++;
    assert_true(i < e->n);
    return e->ok[i];
}

static void test_rr_start_sequence(void **state)
{
    (void)state;
    unsigned counter = 0;
    static const size_t want[] = {0, 1, 2, 0, 1, 2};
    for (size_t k = 0; k < sizeof(want) / sizeof(want[0]); k++)
        assert_int_equal(gw_rr_start(&counter, 3), want[k]);
    assert_int_equal(counter, 6);
}

static void test_rr_start_single_and_empty(void **state)
{
    (void)state;
    unsigned counter = 0;
    for (int k = 0; k < 5; k++)
        assert_int_equal(gw_rr_start(&counter, 1), 0);
    assert_int_equal(gw_rr_start(&counter, 0), 0);
    /* The first pick of a fresh counter is index 0. */
    unsigned fresh = 0;
    assert_int_equal(gw_rr_start(&fresh, 5), 0);
    assert_int_equal(gw_rr_start(&fresh, 5), 1);
}

static void test_rr_start_counters_independent(void **state)
{
    (void)state;
    unsigned a = 0, b = 0;
    assert_int_equal(gw_rr_start(&a, 2), 0);
    assert_int_equal(gw_rr_start(&a, 2), 1);
    assert_int_equal(gw_rr_start(&b, 2), 0);
    assert_int_equal(gw_rr_start(&a, 2), 0);
}

static void test_pick_all_eligible(void **state)
{
    (void)state;
    const size_t n = 4;
    static const bool all[4] = {true, true, true, true};
    struct elig e = {.ok = all, .n = 4, .calls = 0};
    for (size_t start = 0; start < n; start++) {
        for (unsigned attempt = 0; attempt < 10; attempt++) {
            size_t want = (start + attempt) % n;
            assert_int_equal(gw_pick(start, attempt, n, NULL, NULL), want);
            assert_int_equal(gw_pick(start, attempt, n, eligible, &e), want);
        }
    }
    assert_true(e.calls > 0);
}

static void test_pick_skips_ineligible(void **state)
{
    (void)state;
    static const bool ok[4] = {true, false, true, false};
    struct elig e = {.ok = ok, .n = 4, .calls = 0};
    /* From start 1, the first eligible target is 2, then 0. */
    assert_int_equal(gw_pick(1, 0, 4, eligible, &e), 2);
    assert_int_equal(gw_pick(1, 1, 4, eligible, &e), 0);
    assert_int_equal(gw_pick(0, 0, 4, eligible, &e), 0);
    assert_int_equal(gw_pick(0, 1, 4, eligible, &e), 2);
    assert_int_equal(gw_pick(3, 0, 4, eligible, &e), 0);
    assert_int_equal(gw_pick(3, 1, 4, eligible, &e), 2);
    assert_int_equal(gw_pick(2, 0, 4, eligible, &e), 2);
    assert_int_equal(gw_pick(2, 1, 4, eligible, &e), 0);
}

static void test_pick_wraps_over_eligible(void **state)
{
    (void)state;
    static const bool ok[5] = {false, true, false, true, false};
    struct elig e = {.ok = ok, .n = 5, .calls = 0};
    /* Two eligible targets, six attempts: 1, 3, 1, 3, 1, 3. */
    static const size_t want[] = {1, 3, 1, 3, 1, 3};
    for (unsigned a = 0; a < 6; a++)
        assert_int_equal(gw_pick(0, a, 5, eligible, &e), want[a]);
    /* Starting past the last eligible one wraps to the front. */
    assert_int_equal(gw_pick(4, 0, 5, eligible, &e), 1);
    assert_int_equal(gw_pick(4, 1, 5, eligible, &e), 3);
    assert_int_equal(gw_pick(4, 2, 5, eligible, &e), 1);

    /* One eligible target: every attempt goes to it. */
    static const bool one[3] = {false, false, true};
    struct elig e1 = {.ok = one, .n = 3, .calls = 0};
    for (unsigned a = 0; a < 5; a++)
        for (size_t s = 0; s < 3; s++)
            assert_int_equal(gw_pick(s, a, 3, eligible, &e1), 2);
}

static void test_pick_none_eligible(void **state)
{
    (void)state;
    static const bool none[3] = {false, false, false};
    struct elig e = {.ok = none, .n = 3, .calls = 0};
    for (unsigned a = 0; a < 4; a++)
        assert_int_equal(gw_pick(a % 3, a, 3, eligible, &e), 3);
    /* No targets at all. */
    assert_int_equal(gw_pick(0, 0, 0, NULL, NULL), 0);
}

/* Repeating a target weights it: [A, A, B] gives A two picks in three. */
static void test_weighted_by_repeats(void **state)
{
    (void)state;
    static const char list[3] = {'A', 'A', 'B'};
    unsigned counter = 0;
    int a = 0, b = 0;
    for (int k = 0; k < 300; k++) {
        size_t start = gw_rr_start(&counter, 3);
        size_t i = gw_pick(start, 0, 3, NULL, NULL);
        assert_true(i < 3);
        if (list[i] == 'A')
            a++;
        else
            b++;
    }
    assert_int_equal(a, 200);
    assert_int_equal(b, 100);
}

/* Round robin keeps an even spread when a target is out: its share moves to the
 * next eligible target. */
static void test_spread_with_ineligible(void **state)
{
    (void)state;
    static const bool ok[3] = {true, false, true};
    struct elig e = {.ok = ok, .n = 3, .calls = 0};
    unsigned counter = 0;
    int hits[3] = {0, 0, 0};
    for (int k = 0; k < 300; k++) {
        size_t i = gw_pick(gw_rr_start(&counter, 3), 0, 3, eligible, &e);
        assert_true(i < 3);
        hits[i]++;
    }
    assert_int_equal(hits[0], 100);
    assert_int_equal(hits[1], 0);
    assert_int_equal(hits[2], 200);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rr_start_sequence),
        cmocka_unit_test(test_rr_start_single_and_empty),
        cmocka_unit_test(test_rr_start_counters_independent),
        cmocka_unit_test(test_pick_all_eligible),
        cmocka_unit_test(test_pick_skips_ineligible),
        cmocka_unit_test(test_pick_wraps_over_eligible),
        cmocka_unit_test(test_pick_none_eligible),
        cmocka_unit_test(test_weighted_by_repeats),
        cmocka_unit_test(test_spread_with_ineligible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
