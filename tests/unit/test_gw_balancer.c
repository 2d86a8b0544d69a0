/* Unit tests for gateway/gw_balancer.c: round robin with weighting by repeats,
 * over the targets that may be picked, and retries that move to the next one. */
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

static void test_rr_next_sequence(void **state)
{
    (void)state;
    unsigned counter = 0, other = 0;
    for (unsigned k = 0; k < 6; k++)
        assert_int_equal(gw_rr_next(&counter), k);
    assert_int_equal(counter, 6);
    assert_int_equal(gw_rr_next(&other), 0); /* counters are independent */
}

static void test_first_all_eligible(void **state)
{
    (void)state;
    static const bool all[4] = {true, true, true, true};
    struct elig e = {.ok = all, .n = 4, .calls = 0};
    for (unsigned turn = 0; turn < 12; turn++) {
        assert_int_equal(gw_pick_first(turn, 4, NULL, NULL), turn % 4);
        assert_int_equal(gw_pick_first(turn, 4, eligible, &e), turn % 4);
    }
    assert_true(e.calls > 0);
    assert_int_equal(gw_pick_first(7, 1, NULL, NULL), 0);
}

static void test_first_spreads_over_eligible(void **state)
{
    (void)state;
    /* A target out of three is out: the other two share evenly. */
    static const bool ok[3] = {true, false, true};
    struct elig e = {.ok = ok, .n = 3, .calls = 0};
    int hits[3] = {0, 0, 0};
    unsigned counter = 0;
    for (int k = 0; k < 300; k++) {
        size_t i = gw_pick_first(gw_rr_next(&counter), 3, eligible, &e);
        assert_true(i < 3);
        hits[i]++;
    }
    assert_int_equal(hits[0], 150);
    assert_int_equal(hits[1], 0);
    assert_int_equal(hits[2], 150);
}

static void test_first_none_eligible(void **state)
{
    (void)state;
    static const bool none[3] = {false, false, false};
    struct elig e = {.ok = none, .n = 3, .calls = 0};
    for (unsigned t = 0; t < 4; t++)
        assert_int_equal(gw_pick_first(t, 3, eligible, &e), 3);
    assert_int_equal(gw_pick_first(0, 0, NULL, NULL), 0);
}

/* Repeating a target weights it: [A, A, B] gives A two picks in three. */
static void test_weighted_by_repeats(void **state)
{
    (void)state;
    static const char list[3] = {'A', 'A', 'B'};
    unsigned counter = 0;
    int a = 0, b = 0;
    for (int k = 0; k < 300; k++) {
        size_t i = gw_pick_first(gw_rr_next(&counter), 3, NULL, NULL);
        assert_true(i < 3);
        if (list[i] == 'A')
            a++;
        else
            b++;
    }
    assert_int_equal(a, 200);
    assert_int_equal(b, 100);
}

static void test_next_moves_to_successor(void **state)
{
    (void)state;
    for (size_t prev = 0; prev < 4; prev++)
        assert_int_equal(gw_pick_next(prev, 4, NULL, NULL), (prev + 1) % 4);
    /* Skips what may not be picked, wrapping. */
    static const bool ok[4] = {true, false, false, true};
    struct elig e = {.ok = ok, .n = 4, .calls = 0};
    assert_int_equal(gw_pick_next(0, 4, eligible, &e), 3);
    assert_int_equal(gw_pick_next(3, 4, eligible, &e), 0);
    assert_int_equal(gw_pick_next(1, 4, eligible, &e), 3);
    /* Only the failed one left: it is tried again. */
    static const bool self[3] = {false, true, false};
    struct elig e1 = {.ok = self, .n = 3, .calls = 0};
    assert_int_equal(gw_pick_next(1, 3, eligible, &e1), 1);
    static const bool none[3] = {false, false, false};
    struct elig e0 = {.ok = none, .n = 3, .calls = 0};
    assert_int_equal(gw_pick_next(1, 3, eligible, &e0), 3);
}

/* [A, dead, B]: the dead target's turn goes to B on retry, not to A. */
static void test_dead_share_goes_to_successor(void **state)
{
    (void)state;
    int hits[3] = {0, 0, 0};
    unsigned counter = 0;
    for (int k = 0; k < 30; k++) {
        size_t i = gw_pick_first(gw_rr_next(&counter), 3, NULL, NULL);
        if (i == 1)
            i = gw_pick_next(i, 3, NULL, NULL);
        hits[i]++;
    }
    assert_int_equal(hits[0], 10);
    assert_int_equal(hits[1], 0);
    assert_int_equal(hits[2], 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rr_next_sequence),
        cmocka_unit_test(test_first_all_eligible),
        cmocka_unit_test(test_first_spreads_over_eligible),
        cmocka_unit_test(test_first_none_eligible),
        cmocka_unit_test(test_weighted_by_repeats),
        cmocka_unit_test(test_next_moves_to_successor),
        cmocka_unit_test(test_dead_share_goes_to_successor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
