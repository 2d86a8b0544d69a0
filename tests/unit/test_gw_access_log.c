/* Unit tests for gateway/gw_access_log.c: lines reach the file whole and in
 * order, reopen follows a rename (logrotate), and an unopenable path is an
 * error with its reason. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gw_access_log.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return strdup("");
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

static void test_lines_in_order_and_reopen(void **state)
{
    (void)state;
    char dir[] = "/tmp/tcpgate-alog-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], moved[256], err[256];
    snprintf(path, sizeof(path), "%s/access.log", dir);
    snprintf(moved, sizeof(moved), "%s/access.log.1", dir);
    struct gw_access_log *l = gw_access_log_open(path, err, sizeof(err));
    assert_non_null(l);
    char line[64];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(line, sizeof(line), "{\"n\":%d}", i);
        gw_access_log_write(l, line, (size_t)n);
    }
    /* Rotation: the file is moved away, then reopened by name. */
    for (int i = 0; i < 200 && access(path, F_OK) == 0; i++) {
        usleep(5000); /* let the writer catch up before the move */
        char *now = slurp(path);
        bool all = strstr(now, "{\"n\":999}\n") != NULL;
        free(now);
        if (all)
            break;
    }
    assert_int_equal(rename(path, moved), 0);
    gw_access_log_reopen(l);
    gw_access_log_write(l, "after", 5);
    gw_access_log_close(l); /* writes out what is queued */
    char *old = slurp(moved), *cur = slurp(path);
    char *p = old;
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(line, sizeof(line), "{\"n\":%d}\n", i);
        assert_memory_equal(p, line, (size_t)n);
        p += n;
    }
    assert_string_equal(p, "");
    assert_string_equal(cur, "after\n");
    assert_int_equal(gw_access_log_dropped(NULL), 0);
    free(old);
    free(cur);
    unlink(path);
    unlink(moved);
    rmdir(dir);
}

static void test_unopenable_path(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(gw_access_log_open("/nonexistent-dir/x/access.log", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent-dir/x/access.log"));
    assert_non_null(strstr(err, "No such file"));
    /* NULL is accepted everywhere. */
    gw_access_log_write(NULL, "x", 1);
    gw_access_log_reopen(NULL);
    gw_access_log_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_in_order_and_reopen),
        cmocka_unit_test(test_unopenable_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
