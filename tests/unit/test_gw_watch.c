/* Unit tests for gateway/gw_watch.c: which changes in the definitions folder
 * count. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gw_watch.h"

static void changed(void *arg)
{
    (*(int *)arg)++;
}

/* Turns the loop until *count moves or about 300 ms pass. */
static int settle(struct event_base *base, int *count)
{
    int before = *count;
    for (int i = 0; i < 60 && *count == before; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        usleep(5000);
    }
    return *count - before;
}

static void put(const char *dir, const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_only_definitions_count(void **state)
{
    (void)state;
    char dir[] = "/tmp/tcpgate-watch-XXXXXX", err[256];
    assert_non_null(mkdtemp(dir));
    struct event_base *base = event_base_new();
    int count = 0;
    struct gw_watch *w = gw_watch_new(base, dir, changed, &count, err, sizeof(err));
    assert_non_null(w);
    put(dir, ".a.json.swp", "x"); /* an editor's swap file */
    put(dir, "notes.txt", "x");
    assert_int_equal(settle(base, &count), 0);
    put(dir, "a.json", "{}");
    assert_true(settle(base, &count) >= 1);
    char from[256], to[256];
    snprintf(from, sizeof(from), "%s/a.json", dir);
    snprintf(to, sizeof(to), "%s/a.json.bak", dir);
    assert_int_equal(rename(from, to), 0); /* a definition moved out */
    assert_true(settle(base, &count) >= 1);
    put(dir, "..data", "x"); /* a ConfigMap swap */
    assert_true(settle(base, &count) >= 1);
    unlink(to);
    snprintf(from, sizeof(from), "%s/..data", dir);
    unlink(from);
    snprintf(from, sizeof(from), "%s/.a.json.swp", dir);
    unlink(from);
    snprintf(from, sizeof(from), "%s/notes.txt", dir);
    unlink(from);
    gw_watch_free(w);
    event_base_free(base);
    rmdir(dir);
}

static void test_missing_folder(void **state)
{
    (void)state;
    char err[256] = "";
    struct event_base *base = event_base_new();
    int count = 0;
    assert_null(gw_watch_new(base, "/nonexistent-tcpgate-dir", changed, &count, err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent-tcpgate-dir"));
    gw_watch_free(NULL);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_only_definitions_count),
        cmocka_unit_test(test_missing_folder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
