/* Unit tests for gateway/gw_config.c: the gateway config file and the
 * ports_whitelist check. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "gw_config.h"

#define CONF "etc/tcpgate.conf"

/* ---- helpers ------------------------------------------------------------------ */

/* Parses JSON written with single quotes over a freshly initialised config. */
static int parse_sq(struct gw_config *cfg, const char *sq, struct api_diags *d)
{
    char *j = strdup(sq);
    assert_non_null(j);
    for (char *p = j; *p != '\0'; p++)
        if (*p == '\'')
            *p = '"';
    gw_config_init(cfg);
    int rc = gw_config_parse(cfg, CONF, j, strlen(j), d);
    free(j);
    return rc;
}

static void dump_diags(const struct api_diags *d)
{
    for (size_t i = 0; i < d->count; i++)
        print_message("  diag %zu: %s %s: %s: %s\n", i,
                      d->items[i].severity == API_SEV_ERROR ? "error" : "warning", d->items[i].file,
                      d->items[i].field, d->items[i].reason);
}

static const struct api_diag *find_diag(const struct api_diags *d, const char *field)
{
    for (size_t i = 0; i < d->count; i++)
        if (strcmp(d->items[i].field, field) == 0)
            return &d->items[i];
    return NULL;
}

/* The config must be rejected with an error on `field` mentioning `needle`. */
static void expect_error(const char *sq, const char *field, const char *needle)
{
    struct gw_config cfg;
    struct api_diags d = {0};
    int rc = parse_sq(&cfg, sq, &d);
    const struct api_diag *it = find_diag(&d, field);
    if (rc != -1 || it == NULL) {
        dump_diags(&d);
        fail_msg("expected rc -1 and an error on \"%s\" for %s (rc=%d)", field, sq, rc);
    }
    assert_int_equal(it->severity, API_SEV_ERROR);
    assert_string_equal(it->file, CONF);
    if (needle != NULL && strstr(it->reason, needle) == NULL)
        fail_msg("diagnostic \"%s\" does not mention \"%s\"", it->reason, needle);
    gw_config_free(&cfg);
    api_diags_free(&d);
}

static void assert_defaults(const struct gw_config *cfg)
{
    assert_null(cfg->file);
    assert_string_equal(cfg->app_path, "apps");
    assert_string_equal(cfg->listen_address, "");
    assert_int_equal(cfg->log_level, GW_LOG_INFO);
    assert_int_equal(cfg->workers, 0);
    assert_int_equal(cfg->drain_timeout_ms, 30000);
    assert_null(cfg->secret);
    assert_null(cfg->node_secret);
    assert_string_equal(cfg->storage.host, "localhost");
    assert_int_equal(cfg->storage.port, 6379);
    assert_null(cfg->storage.password);
    assert_int_equal(cfg->storage.database, 0);
    assert_false(cfg->uptime_tests.disable);
    assert_null(cfg->uptime_tests.poller_group);
    assert_int_equal(cfg->uptime_tests.failure_trigger_sample_size, 3);
    assert_int_equal(cfg->uptime_tests.time_wait, 10);
    assert_int_equal(cfg->uptime_tests.checker_pool_size, 0);
    assert_false(cfg->uptime_tests.enable_uptime_analytics);
    assert_false(cfg->whitelist_present);
    assert_false(cfg->whitelist_tcp.present);
    assert_int_equal(cfg->whitelist_tcp.nports, 0);
    assert_int_equal(cfg->whitelist_tcp.nranges, 0);
    assert_false(cfg->whitelist_tls.present);
}

/* ---- tests -------------------------------------------------------------------- */

static void test_init_defaults(void **state)
{
    (void)state;
    struct gw_config cfg;
    memset(&cfg, 0x5a, sizeof(cfg));
    gw_config_init(&cfg);
    assert_defaults(&cfg);
    assert_string_equal(GW_DEFAULT_APP_PATH, "apps");
    assert_int_equal(GW_DEFAULT_DRAIN_TIMEOUT_MS, 30000);
    gw_config_free(&cfg);
    gw_config_free(&cfg); /* freeing twice is harmless: free zeroes */
}

static void test_empty_object_keeps_defaults(void **state)
{
    (void)state;
    struct gw_config cfg;
    struct api_diags d = {0};
    assert_int_equal(parse_sq(&cfg, "{}", &d), 0);
    assert_int_equal(d.count, 0);
    assert_defaults(&cfg);
    gw_config_free(&cfg);
}

static void check_full(const struct gw_config *cfg)
{
    assert_string_equal(cfg->app_path, "/etc/tcpgate/apps");
    assert_string_equal(cfg->listen_address, "127.0.0.1");
    assert_int_equal(cfg->log_level, GW_LOG_DEBUG);
    assert_string_equal(cfg->secret, "admin-secret");
    assert_string_equal(cfg->node_secret, "node-secret");
    assert_string_equal(cfg->storage.host, "redis.internal");
    assert_int_equal(cfg->storage.port, 6380);
    assert_string_equal(cfg->storage.password, "pw");
    assert_int_equal(cfg->storage.database, 2);
    assert_true(cfg->uptime_tests.disable);
    assert_string_equal(cfg->uptime_tests.poller_group, "group-a");
    assert_int_equal(cfg->uptime_tests.failure_trigger_sample_size, 5);
    assert_int_equal(cfg->uptime_tests.time_wait, 30);
    assert_int_equal(cfg->uptime_tests.checker_pool_size, 50);
    assert_true(cfg->uptime_tests.enable_uptime_analytics);

    assert_true(cfg->whitelist_present);
    assert_true(cfg->whitelist_tcp.present);
    assert_int_equal(cfg->whitelist_tcp.nports, 2);
    assert_int_equal(cfg->whitelist_tcp.ports[0], 6379);
    assert_int_equal(cfg->whitelist_tcp.ports[1], 5432);
    assert_int_equal(cfg->whitelist_tcp.nranges, 1);
    assert_int_equal(cfg->whitelist_tcp.ranges[0].from, 9000);
    assert_int_equal(cfg->whitelist_tcp.ranges[0].to, 9010);
    assert_true(cfg->whitelist_tls.present);
    assert_int_equal(cfg->whitelist_tls.nports, 1);
    assert_int_equal(cfg->whitelist_tls.ports[0], 8443);
    assert_int_equal(cfg->whitelist_tls.nranges, 2);
    assert_int_equal(cfg->whitelist_tls.ranges[0].from, 10000);
    assert_int_equal(cfg->whitelist_tls.ranges[0].to, 10000);
    assert_int_equal(cfg->whitelist_tls.ranges[1].from, 20000);
    assert_int_equal(cfg->whitelist_tls.ranges[1].to, 20100);

    assert_int_equal(cfg->workers, 4);
    /* tcpgate.drain_timeout is read after Tyk's graceful_shutdown_timeout_duration
     * and wins over it. */
    assert_int_equal(cfg->drain_timeout_ms, 90000);
}

static void test_parse_every_field(void **state)
{
    (void)state;
    FILE *f = fopen(TEST_FIXTURES "/gw_full.json", "rb");
    assert_non_null(f);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    assert_true(n > 0 && n < sizeof(buf));

    struct gw_config cfg;
    struct api_diags d = {0};
    gw_config_init(&cfg);
    assert_int_equal(gw_config_parse(&cfg, CONF, buf, n, &d), 0);
    if (d.count != 0)
        dump_diags(&d);
    assert_int_equal(d.count, 0); /* unknown top-level keys are ignored silently */
    check_full(&cfg);
    assert_null(cfg.file); /* parse does not name a file */
    gw_config_free(&cfg);
    api_diags_free(&d);
}

static void test_load_file(void **state)
{
    (void)state;
    struct gw_config cfg;
    struct api_diags d = {0};
    gw_config_init(&cfg);
    assert_int_equal(gw_config_load(&cfg, TEST_FIXTURES "/gw_full.json", &d), 0);
    assert_int_equal(d.count, 0);
    assert_string_equal(cfg.file, TEST_FIXTURES "/gw_full.json");
    check_full(&cfg);
    gw_config_free(&cfg);
    api_diags_free(&d);
}

static void test_load_missing_file(void **state)
{
    (void)state;
    struct gw_config cfg;
    struct api_diags d = {0};
    gw_config_init(&cfg);
    const char *path = TEST_FIXTURES "/no-such-config.json";
    assert_int_equal(gw_config_load(&cfg, path, &d), -1);
    assert_int_equal(d.count, 1);
    assert_int_equal(d.items[0].severity, API_SEV_ERROR);
    assert_string_equal(d.items[0].file, path);
    assert_string_equal(d.items[0].field, "(file)");
    assert_non_null(strstr(d.items[0].reason, "cannot open"));
    assert_defaults(&cfg); /* untouched */
    gw_config_free(&cfg);
    api_diags_free(&d);
}

static void test_graceful_shutdown_seconds(void **state)
{
    (void)state;
    struct gw_config cfg;
    struct api_diags d = {0};
    assert_int_equal(parse_sq(&cfg, "{'graceful_shutdown_timeout_duration': 45}", &d), 0);
    assert_int_equal(cfg.drain_timeout_ms, 45000);
    gw_config_free(&cfg);
    assert_int_equal(parse_sq(&cfg, "{'graceful_shutdown_timeout_duration': 1}", &d), 0);
    assert_int_equal(cfg.drain_timeout_ms, 1000);
    gw_config_free(&cfg);
    assert_int_equal(parse_sq(&cfg, "{'tcpgate': {'drain_timeout': '2500ms'}}", &d), 0);
    assert_int_equal(cfg.drain_timeout_ms, 2500);
    gw_config_free(&cfg);
    assert_int_equal(parse_sq(&cfg, "{'tcpgate': {'drain_timeout': 0}}", &d), 0);
    assert_int_equal(cfg.drain_timeout_ms, 0);
    gw_config_free(&cfg);
    assert_int_equal(d.count, 0);
    expect_error("{'graceful_shutdown_timeout_duration': '30s'}",
                 "graceful_shutdown_timeout_duration", "expected an integer");
}

static void test_log_levels(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        enum gw_log_level level;
    } levels[] = {
        {"debug", GW_LOG_DEBUG}, {"info", GW_LOG_INFO},    {"warn", GW_LOG_WARN},
        {"error", GW_LOG_ERROR}, {"warning", GW_LOG_WARN}, {"DEBUG", GW_LOG_DEBUG},
        {"Error", GW_LOG_ERROR},
    };
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        char json[64];
        snprintf(json, sizeof(json), "{'log_level': '%s'}", levels[i].name);
        struct gw_config cfg;
        struct api_diags d = {0};
        assert_int_equal(parse_sq(&cfg, json, &d), 0);
        assert_int_equal(cfg.log_level, levels[i].level);
        gw_config_free(&cfg);
        api_diags_free(&d);
    }
    expect_error("{'log_level': 'verbose'}", "log_level", "unknown level \"verbose\"");
    expect_error("{'log_level': 3}", "log_level", "expected a string");
}

static void test_unknown_extension_key_is_error(void **state)
{
    (void)state;
    expect_error("{'tcpgate': {'workers': 2, 'threads': 4}}", "tcpgate.threads", "unknown field");
    expect_error("{'tcpgate': 'on'}", "tcpgate", "expected an object");
}

static void test_value_errors(void **state)
{
    (void)state;
    expect_error("{'tcpgate': {'workers': 1025}}", "tcpgate.workers", "between 0 and 1024");
    expect_error("{'tcpgate': {'workers': -1}}", "tcpgate.workers", "-1");
    expect_error("{'tcpgate': {'drain_timeout': '10'}}", "tcpgate.drain_timeout", "unit");
    expect_error("{'tcpgate': {'drain_timeout': 10}}", "tcpgate.drain_timeout", "duration string");
    expect_error("{'storage': {'port': 0}}", "storage.port", "between 1 and 65535");
    expect_error("{'storage': {'port': 70000}}", "storage.port", "70000");
    expect_error("{'storage': {'database': -1}}", "storage.database", "between");
    expect_error("{'storage': {'host': 5}}", "storage.host", "expected a string");
    expect_error("{'storage': []}", "storage", "expected an object");
    expect_error("{'uptime_tests': {'config': {'time_wait': 0}}}", "uptime_tests.config.time_wait",
                 "between 1 and 86400");
    expect_error("{'uptime_tests': {'config': {'failure_trigger_sample_size': 0}}}",
                 "uptime_tests.config.failure_trigger_sample_size", "between 1 and 1000");
    expect_error("{'uptime_tests': {'disable': 'yes'}}", "uptime_tests.disable",
                 "expected true or false");
    expect_error("{'app_path': ['apps']}", "app_path", "expected a string");
    expect_error("{'control_api_port': 65536}", "control_api_port", "between 0 and 65535");
    expect_error("{'tcpgate': {'max_pipes': -1}}", "tcpgate.max_pipes", "between 0 and 65536");
    expect_error("{'tcpgate': {'max_connections': -5}}", "tcpgate.max_connections", "between 0");
    expect_error("{'tcpgate': {'max_connections_per_source': -1}}",
                 "tcpgate.max_connections_per_source", "between 0");
    expect_error("{'tcpgate': {'proxy_header_max': 100}}", "tcpgate.proxy_header_max",
                 "between 108 and 65551");
    expect_error("{'tcpgate': {'cert_chain_max': 100}}", "tcpgate.cert_chain_max", "between 4096");
    expect_error("{'tcpgate': {'strict_key_permissions': 1}}", "tcpgate.strict_key_permissions",
                 "expected true or false");
    expect_error("{'tcpgate': {'access_log': true}}", "tcpgate.access_log", "expected a string");
}

/* The settings of operating and hardening, read and defaulted. */
static void test_operating_fields(void **state)
{
    (void)state;
    struct gw_config cfg;
    struct api_diags d = {0};
    gw_config_init(&cfg);
    assert_string_equal(cfg.control_api_hostname, "127.0.0.1");
    assert_int_equal(cfg.control_api_port, 9696);
    assert_string_equal(cfg.access_log, "");
    assert_int_equal(cfg.max_pipes, 256);
    assert_int_equal(cfg.max_connections, 0);
    assert_int_equal(cfg.proxy_header_max, 16384);
    assert_int_equal(cfg.cert_chain_max, 102400);
    assert_false(cfg.strict_key_permissions);
    gw_config_free(&cfg);
    assert_int_equal(parse_sq(&cfg,
                              "{'control_api_hostname': '::1', 'control_api_port': 0,"
                              " 'secret': 's', 'tcpgate': {'access_log': 'stderr', 'max_pipes': 0,"
                              " 'max_connections': 10, 'max_connections_per_source': 3,"
                              " 'proxy_header_max': 512, 'cert_chain_max': 8192,"
                              " 'strict_key_permissions': true, 'user': 'nobody',"
                              " 'group': 'nogroup'}}",
                              &d),
                     0);
    assert_string_equal(cfg.control_api_hostname, "::1");
    assert_int_equal(cfg.control_api_port, 0);
    assert_string_equal(cfg.secret, "s");
    assert_string_equal(cfg.access_log, "stderr");
    assert_int_equal(cfg.max_pipes, 0);
    assert_int_equal(cfg.max_connections, 10);
    assert_int_equal(cfg.max_connections_per_source, 3);
    assert_int_equal(cfg.proxy_header_max, 512);
    assert_int_equal(cfg.cert_chain_max, 8192);
    assert_true(cfg.strict_key_permissions);
    assert_string_equal(cfg.user, "nobody");
    assert_string_equal(cfg.group, "nogroup");
    assert_int_equal(d.count, 0);
    gw_config_free(&cfg);
    api_diags_free(&d);
}

static void test_whitelist_errors(void **state)
{
    (void)state;
    expect_error("{'ports_whitelist': {'tcp': {'ranges': [{'from': 20, 'to': 10}]}}}",
                 "ports_whitelist.tcp.ranges[0]", "from <= to");
    expect_error("{'ports_whitelist': {'tcp': {'ranges': [{'from': 1, 'to': 70000}]}}}",
                 "ports_whitelist.tcp.ranges[0]", "65535");
    expect_error("{'ports_whitelist': {'tls': {'ranges': [{'from': 1, 'to': 2}, {'from': 0, "
                 "'to': 10}]}}}",
                 "ports_whitelist.tls.ranges[1]", "1 <= from");
    expect_error("{'ports_whitelist': {'tcp': {'ranges': [{'from': 10}]}}}",
                 "ports_whitelist.tcp.ranges[0]", NULL);
    expect_error("{'ports_whitelist': {'tcp': {'ranges': [[1, 2]]}}}",
                 "ports_whitelist.tcp.ranges[0]", "expected");
    expect_error("{'ports_whitelist': {'tcp': {'ranges': {'from': 1, 'to': 2}}}}",
                 "ports_whitelist.tcp", "ranges");
    expect_error("{'ports_whitelist': {'tcp': {'ports': [80, 0]}}}", "ports_whitelist.tcp.ports[1]",
                 "1-65535");
    expect_error("{'ports_whitelist': {'tcp': {'ports': ['80']}}}", "ports_whitelist.tcp.ports[0]",
                 "port number");
    expect_error("{'ports_whitelist': {'tcp': {'ports': 80}}}", "ports_whitelist.tcp", "ports");
    expect_error("{'ports_whitelist': {'tcp': {'port': [80]}}}", "ports_whitelist.tcp.port",
                 "unknown field");
    expect_error("{'ports_whitelist': {'tcp': [80]}}", "ports_whitelist.tcp", "expected an object");
    expect_error("{'ports_whitelist': [80]}", "ports_whitelist", "expected an object");
}

static void test_invalid_json(void **state)
{
    (void)state;
    struct gw_config cfg;
    struct api_diags d = {0};
    static const char json[] = "{\n  \"app_path\": \"apps\",\n}";
    gw_config_init(&cfg);
    assert_int_equal(gw_config_parse(&cfg, CONF, json, strlen(json), &d), -1);
    assert_int_equal(d.count, 1);
    assert_string_equal(d.items[0].file, CONF);
    assert_string_equal(d.items[0].field, "(json)");
    assert_non_null(strstr(d.items[0].reason, "line 3"));
    assert_non_null(strstr(d.items[0].reason, "column"));
    gw_config_free(&cfg);
    api_diags_free(&d);

    gw_config_init(&cfg);
    assert_int_equal(gw_config_parse(&cfg, CONF, "[]", 2, &d), -1);
    assert_int_equal(d.count, 1);
    assert_string_equal(d.items[0].field, "(json)");
    assert_non_null(strstr(d.items[0].reason, "got an array"));
    gw_config_free(&cfg);
    api_diags_free(&d);
}

static void test_port_allowed_without_whitelist(void **state)
{
    (void)state;
    struct gw_config cfg;
    gw_config_init(&cfg);
    assert_true(gw_config_port_allowed(&cfg, API_PROTO_TCP, 1));
    assert_true(gw_config_port_allowed(&cfg, API_PROTO_TCP, 6379));
    assert_true(gw_config_port_allowed(&cfg, API_PROTO_TLS, 443));
    assert_true(gw_config_port_allowed(&cfg, API_PROTO_TLS, 65535));
    gw_config_free(&cfg);
}

static void test_port_allowed_with_whitelist(void **state)
{
    (void)state;
    struct gw_config cfg;
    struct api_diags d = {0};
    assert_int_equal(parse_sq(&cfg,
                              "{'ports_whitelist': {'tcp': {'ports': [6379, 5432],"
                              " 'ranges': [{'from': 9000, 'to': 9010}]}}}",
                              &d),
                     0);
    /* listed ports */
    assert_true(gw_config_port_allowed(&cfg, API_PROTO_TCP, 6379));
    assert_true(gw_config_port_allowed(&cfg, API_PROTO_TCP, 5432));
    /* ranges are inclusive at both ends */
    assert_true(gw_config_port_allowed(&cfg, API_PROTO_TCP, 9000));
    assert_true(gw_config_port_allowed(&cfg, API_PROTO_TCP, 9005));
    assert_true(gw_config_port_allowed(&cfg, API_PROTO_TCP, 9010));
    assert_false(gw_config_port_allowed(&cfg, API_PROTO_TCP, 8999));
    assert_false(gw_config_port_allowed(&cfg, API_PROTO_TCP, 9011));
    /* unlisted */
    assert_false(gw_config_port_allowed(&cfg, API_PROTO_TCP, 6380));
    assert_false(gw_config_port_allowed(&cfg, API_PROTO_TCP, 80));
    /* a protocol missing from the whitelist allows nothing */
    assert_false(gw_config_port_allowed(&cfg, API_PROTO_TLS, 6379));
    assert_false(gw_config_port_allowed(&cfg, API_PROTO_TLS, 9005));
    assert_false(gw_config_port_allowed(&cfg, API_PROTO_TLS, 443));
    gw_config_free(&cfg);

    /* A present but empty whitelist allows nothing. */
    assert_int_equal(parse_sq(&cfg, "{'ports_whitelist': {}}", &d), 0);
    assert_true(cfg.whitelist_present);
    assert_false(gw_config_port_allowed(&cfg, API_PROTO_TCP, 6379));
    assert_false(gw_config_port_allowed(&cfg, API_PROTO_TLS, 443));
    gw_config_free(&cfg);

    /* Protocols are kept apart. */
    assert_int_equal(parse_sq(&cfg,
                              "{'ports_whitelist': {'tcp': {'ports': [1000]},"
                              " 'tls': {'ports': [2000], 'ranges': [{'from': 3000, 'to': 3000}]}}}",
                              &d),
                     0);
    assert_true(gw_config_port_allowed(&cfg, API_PROTO_TCP, 1000));
    assert_false(gw_config_port_allowed(&cfg, API_PROTO_TCP, 2000));
    assert_false(gw_config_port_allowed(&cfg, API_PROTO_TCP, 3000));
    assert_true(gw_config_port_allowed(&cfg, API_PROTO_TLS, 2000));
    assert_true(gw_config_port_allowed(&cfg, API_PROTO_TLS, 3000));
    assert_false(gw_config_port_allowed(&cfg, API_PROTO_TLS, 1000));
    assert_false(gw_config_port_allowed(&cfg, API_PROTO_TLS, 2999));
    assert_false(gw_config_port_allowed(&cfg, API_PROTO_TLS, 3001));
    gw_config_free(&cfg);
    assert_int_equal(d.count, 0);
    api_diags_free(&d);
}

/* A later parse overrides what an earlier one set, without leaking it. */
static void test_parse_overrides(void **state)
{
    (void)state;
    struct gw_config cfg;
    struct api_diags d = {0};
    assert_int_equal(parse_sq(&cfg, "{'app_path': 'one', 'secret': 's1'}", &d), 0);
    static const char second[] = "{\"app_path\": \"two\", \"secret\": \"s2\"}";
    assert_int_equal(gw_config_parse(&cfg, CONF, second, strlen(second), &d), 0);
    assert_string_equal(cfg.app_path, "two");
    assert_string_equal(cfg.secret, "s2");
    gw_config_free(&cfg);
    api_diags_free(&d);
}

/* graceful_shutdown_timeout_duration is in seconds; 10^16 of them would
 * overflow int64 milliseconds, so it must be rejected. */
static void test_graceful_shutdown_overflow(void **state)
{
    (void)state;
    struct gw_config cfg;
    struct api_diags d = {0};
    int rc = parse_sq(&cfg, "{'graceful_shutdown_timeout_duration': 10000000000000000}", &d);
    assert_int_equal(rc, -1);
    assert_non_null(find_diag(&d, "graceful_shutdown_timeout_duration"));
    gw_config_free(&cfg);
    api_diags_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_defaults),
        cmocka_unit_test(test_empty_object_keeps_defaults),
        cmocka_unit_test(test_parse_every_field),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_graceful_shutdown_seconds),
        cmocka_unit_test(test_log_levels),
        cmocka_unit_test(test_unknown_extension_key_is_error),
        cmocka_unit_test(test_value_errors),
        cmocka_unit_test(test_operating_fields),
        cmocka_unit_test(test_whitelist_errors),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_port_allowed_without_whitelist),
        cmocka_unit_test(test_port_allowed_with_whitelist),
        cmocka_unit_test(test_parse_overrides),
        cmocka_unit_test(test_graceful_shutdown_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
