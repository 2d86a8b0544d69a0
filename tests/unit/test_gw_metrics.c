/* Unit tests for gateway/gw_metrics.c: the Prometheus text of a snapshot
 * built from real definitions, with counters summed over workers and label
 * values escaped. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gw_metrics.h"

struct fx {
    char dir[64];
    struct gw_config cfg;
    struct gw_build_env env;
    struct gw_snapshot *snap;
    struct api_diags diags;
};

static void put(const char *dir, const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/tcpgate-metrics-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    put(f->dir, "a.json",
        "{\"api_id\": \"a\\\"b\", \"listen_port\": 17601, \"protocol\": \"tcp\","
        " \"proxy\": {\"enable_load_balancing\": true,"
        " \"target_list\": [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:1\"]}}");
    put(f->dir, "bad.json", "{");
    gw_config_init(&f->cfg);
    free(f->cfg.app_path);
    f->cfg.app_path = strdup(f->dir);
    f->env.cfg = &f->cfg;
    f->env.keys = cert_ticket_keys_new();
    f->snap = gw_snapshot_load(&f->env, 2, &f->diags);
    assert_non_null(f->snap);
    assert_int_equal(f->snap->napis, 1);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    gw_snapshot_unref(f->snap);
    cert_ticket_keys_free(f->env.keys);
    gw_config_free(&f->cfg);
    api_diags_free(&f->diags);
    char path[256];
    snprintf(path, sizeof(path), "%s/a.json", f->dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/bad.json", f->dir);
    unlink(path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static char *render(struct fx *f)
{
    struct gw_view v = {
        .snap = f->snap, .nworkers = 2, .load_diags = &f->diags, .started_unix = 1700000000};
    v.reload.ok = 3;
    v.reload.failed = 1;
    v.reload.last_unix = 1700000100;
    v.reload.last_ok = false;
    struct evbuffer *out = evbuffer_new();
    gw_metrics_render(out, &v);
    size_t n = evbuffer_get_length(out);
    char *text = malloc(n + 1);
    evbuffer_remove(out, text, n);
    text[n] = '\0';
    evbuffer_free(out);
    return text;
}

static void assert_line(const char *text, const char *line)
{
    char want[512];
    snprintf(want, sizeof(want), "\n%s\n", line);
    if (strstr(text, want) == NULL)
        fail_msg("no line \"%s\" in:\n%s", line, text);
}

static void test_sums_workers_and_escapes(void **state)
{
    struct fx *f = *state;
    struct gw_api *api = &f->snap->apis[0];
    api->stats[0].cx_total = 2;
    api->stats[1].cx_total = 3;
    api->stats[1].rx_buffered = 100;
    api->ups[0].stats[0].connect_fail = 4;
    api->ups[1].stats[1].cx_active = 1;
    f->snap->ports[0].stats[1].prx_timeout = 7;
    char *t = render(f);
    assert_line(t, "tcpgate_downstream_cx_total{api_id=\"a\\\"b\"} 5");
    assert_line(t, "tcpgate_downstream_cx_rx_bytes_buffered{api_id=\"a\\\"b\"} 100");
    assert_line(t, "# TYPE tcpgate_downstream_cx_total counter");
    assert_line(t, "# TYPE tcpgate_downstream_cx_active gauge");
    /* A target listed twice is one host, shown once. */
    assert_line(t, "tcpgate_target_connect_fail_total{api_id=\"a\\\"b\","
                   "target=\"tcp://127.0.0.1:1\"} 4");
    assert_line(t, "tcpgate_target_cx_active{api_id=\"a\\\"b\",target=\"tcp://127.0.0.1:2\"} 1");
    assert_null(strstr(strstr(t, "target=\"tcp://127.0.0.1:1\"} 4") + 1,
                       "tcpgate_target_connect_fail_total{api_id=\"a\\\"b\","
                       "target=\"tcp://127.0.0.1:1\"}"));
    assert_line(t, "tcpgate_proxy_protocol_rejected_total{port=\"17601\",reason=\"timeout\"} 7");
    assert_line(t, "tcpgate_reloads_total{result=\"ok\"} 3");
    assert_line(t, "tcpgate_reloads_total{result=\"failed\"} 1");
    assert_line(t, "tcpgate_reload_last_success 0");
    assert_line(t, "tcpgate_definition_errors 1");
    assert_line(t, "tcpgate_definitions 1");
    assert_line(t, "tcpgate_start_time_seconds 1700000000");
    /* No check runs here, so no health series. */
    assert_null(strstr(t, "tcpgate_target_health{"));
    /* Every sample belongs to a family announced before it. */
    for (char *line = t; *line != '\0';) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        if (*line != '#') {
            char name[128];
            size_t k = strcspn(line, "{ ");
            assert_true(k < sizeof(name));
            memcpy(name, line, k);
            name[k] = '\0';
            char type[160];
            snprintf(type, sizeof(type), "# TYPE %s ", name);
            char *decl = strstr(t, type);
            assert_non_null(decl);
            assert_true(decl < line);
            assert_memory_equal(name, "tcpgate_", 8);
        }
        line = nl + 1;
    }
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sums_workers_and_escapes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
