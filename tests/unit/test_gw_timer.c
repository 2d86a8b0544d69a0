/* Unit tests for gateway/gw_timer.c: entries fire in deadline order, once,
 * also after being moved or cancelled in any order; a callback may arm its
 * entry again; and the libevent timer wakes the loop for the earliest. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "gw_clock.h"
#include "gw_timer.h"

#define N 200

struct item {
    struct gw_timer_entry t;
    int id;
    int fired;
    int rearm; /* times the callback arms it again */
};

static int order[4 * N], norder;
static struct gw_timers *current;

static void on_fire(struct gw_timer_entry *e)
{
    struct item *it = (struct item *)e;
    assert_false(gw_timer_armed(e));
    it->fired++;
    order[norder++] = it->id;
    if (it->rearm > 0) {
        it->rearm--;
        gw_timer_set(current, e, e->at_ms + 5);
    }
}

static struct event_base *base;
static struct gw_timers timers;

static int setup(void **state)
{
    (void)state;
    base = event_base_new();
    assert_non_null(base);
    assert_int_equal(gw_timers_init(&timers, base, on_fire), 0);
    current = &timers;
    norder = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    gw_timers_clear(&timers);
    event_base_free(base);
    return 0;
}

/* Whether the heap keeps its order: every parent at or before its children,
 * and every entry knows its slot. */
static void check_heap(const struct gw_timers *t)
{
    for (size_t i = 0; i < t->n; i++) {
        assert_int_equal(t->heap[i]->slot, i + 1);
        if (i > 0)
            assert_true(t->heap[(i - 1) / 2]->at_ms <= t->heap[i]->at_ms);
    }
}

static void test_fires_in_order_after_moves_and_cancels(void **state)
{
    (void)state;
    static struct item items[N];
    srand(7);
    for (int i = 0; i < N; i++) {
        items[i] = (struct item){.id = i};
        gw_timer_set(&timers, &items[i].t, 1000 + rand() % 500);
    }
    check_heap(&timers);
    /* Move some earlier, some later, and cancel every fifth. */
    for (int i = 0; i < N; i += 3) {
        gw_timer_set(&timers, &items[i].t, 900 + rand() % 800);
        check_heap(&timers);
    }
    int cancelled = 0;
    for (int i = 0; i < N; i += 5) {
        gw_timer_cancel(&timers, &items[i].t);
        gw_timer_cancel(&timers, &items[i].t); /* twice is harmless */
        assert_false(gw_timer_armed(&items[i].t));
        cancelled++;
        check_heap(&timers);
    }
    assert_int_equal(timers.n, N - cancelled);
    /* Nothing is due before the earliest deadline. */
    gw_timers_run(&timers, 899);
    assert_int_equal(norder, 0);
    gw_timers_run(&timers, 10000);
    assert_int_equal(norder, N - cancelled);
    for (int i = 1; i < norder; i++)
        assert_true(items[order[i - 1]].t.at_ms <= items[order[i]].t.at_ms);
    for (int i = 0; i < N; i++)
        assert_int_equal(items[i].fired, i % 5 == 0 ? 0 : 1);
    assert_int_equal(timers.n, 0);
}

static void test_callback_may_arm_again(void **state)
{
    (void)state;
    struct item a = {.id = 1, .rearm = 2}, b = {.id = 2};
    gw_timer_set(&timers, &a.t, 100);
    gw_timer_set(&timers, &b.t, 103);
    gw_timers_run(&timers, 104);
    /* a fired at 100 and was armed for 105; b fired at 103. */
    assert_int_equal(norder, 2);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 2);
    assert_true(gw_timer_armed(&a.t));
    /* An entry armed again for a time already due waits for the next run. */
    gw_timers_run(&timers, 200);
    assert_int_equal(a.fired, 2);
    gw_timers_run(&timers, 200);
    assert_int_equal(a.fired, 3);
    assert_false(gw_timer_armed(&a.t));
}

static void test_the_loop_wakes_for_the_earliest(void **state)
{
    (void)state;
    struct item late = {.id = 1}, soon = {.id = 2};
    int64_t now = gw_now_ms();
    gw_timer_set(&timers, &late.t, now + 60000);
    gw_timer_set(&timers, &soon.t, now + 30);
    /* The loop has nothing else to do: it returns when soon is due. */
    for (int i = 0; i < 100 && soon.fired == 0; i++)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(soon.fired, 1);
    assert_int_equal(late.fired, 0);
    assert_true(gw_now_ms() >= now + 30);
    gw_timer_cancel(&timers, &late.t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fires_in_order_after_moves_and_cancels, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_callback_may_arm_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_the_loop_wakes_for_the_earliest, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
