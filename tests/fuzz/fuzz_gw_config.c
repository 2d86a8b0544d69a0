/* Fuzz target: the gateway config file (gateway/gw_config.h), from its bytes
 * over the defaults, as gw_config_load reads it: the bytes read, not
 * NUL-terminated, and their length.
 *
 * The parse succeeds exactly when no error was reported, and a config that
 * parsed holds only values the runtime uses unchecked. A config that failed
 * is still freed whole: the caller frees it after reporting. */
#include <stdbool.h>

#include "api_loader.h"
#include "fuzz_util.h"
#include "gw_config.h"

#define CONF_FILE "etc/fuzz.conf"

static void conf_check_tls_version(int v)
{
    FUZZ_CHECK(v == 0 || (v >= 769 && v <= 772));
}

static void conf_check_rule(const struct gw_port_rule *r)
{
    for (size_t i = 0; i < r->nports; i++)
        FUZZ_CHECK(r->ports[i] >= 1 && r->ports[i] <= 65535);
    for (size_t i = 0; i < r->nranges; i++)
        FUZZ_CHECK(r->ranges[i].from >= 1 && r->ranges[i].from <= r->ranges[i].to &&
                   r->ranges[i].to <= 65535);
    if (!r->present)
        FUZZ_CHECK(r->nports == 0 && r->nranges == 0);
}

/* The whitelist answer for one port, worked out from the rule's lists. */
static bool conf_rule_allows(const struct gw_port_rule *r, int port)
{
    bool ok = false;
    for (size_t i = 0; i < r->nports && !ok; i++)
        ok = r->ports[i] == port;
    for (size_t i = 0; i < r->nranges && !ok; i++)
        ok = r->ranges[i].from <= port && port <= r->ranges[i].to;
    return ok;
}

static void conf_check(struct gw_config *cfg)
{
    FUZZ_CHECK(cfg->app_path != NULL && cfg->listen_address != NULL);
    FUZZ_CHECK(cfg->log_level >= GW_LOG_DEBUG && cfg->log_level <= GW_LOG_ERROR);
    FUZZ_CHECK(cfg->workers >= 0 && cfg->workers <= 1024);
    FUZZ_CHECK(cfg->drain_timeout_ms >= 0 &&
               cfg->drain_timeout_ms <= (int64_t)GW_MAX_DRAIN_S * 1000);
    FUZZ_CHECK(cfg->handshake_timeout_ms > 0);
    FUZZ_CHECK(cfg->ticket_key_rotation_ms >= 1000);
    FUZZ_CHECK(cfg->client_hello_max >= 1024 && cfg->client_hello_max <= 65536);
    conf_check_tls_version(cfg->server_tls.min_version);
    conf_check_tls_version(cfg->server_tls.max_version);
    for (size_t i = 0; i < cfg->server_tls.nssl_ciphers; i++)
        FUZZ_CHECK(cfg->server_tls.ssl_ciphers[i] != NULL);
    for (size_t i = 0; i < cfg->server_tls.nssl_certificates; i++)
        FUZZ_CHECK(cfg->server_tls.ssl_certificates[i] != NULL);
    FUZZ_CHECK(cfg->storage.host != NULL);
    FUZZ_CHECK(cfg->storage.port >= 1 && cfg->storage.port <= 65535);
    FUZZ_CHECK(cfg->storage.database >= 0 && cfg->storage.database <= 1 << 20);
    FUZZ_CHECK(cfg->uptime_tests.failure_trigger_sample_size >= 1 &&
               cfg->uptime_tests.failure_trigger_sample_size <= 1000);
    FUZZ_CHECK(cfg->uptime_tests.time_wait >= 1 && cfg->uptime_tests.time_wait <= 86400);
    FUZZ_CHECK(cfg->uptime_tests.checker_pool_size >= 0 &&
               cfg->uptime_tests.checker_pool_size <= 100000);
    conf_check_rule(&cfg->whitelist_tcp);
    conf_check_rule(&cfg->whitelist_tls);

    /* The loader's port check agrees with the lists, at their edges. */
    static const int ports[] = {1, 80, 443, 6379, 8443, 65535};
    for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
        bool tcp = gw_config_port_allowed(cfg, API_PROTO_TCP, ports[i]);
        bool tls = gw_config_port_allowed(cfg, API_PROTO_TLS, ports[i]);
        FUZZ_CHECK(tcp ==
                   (!cfg->whitelist_present || conf_rule_allows(&cfg->whitelist_tcp, ports[i])));
        FUZZ_CHECK(tls ==
                   (!cfg->whitelist_present || conf_rule_allows(&cfg->whitelist_tls, ports[i])));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > API_FILE_MAX)
        return 0; /* gw_config_load rejects such a file unread */
    uint8_t *text = fuzz_copy(data, size);
    struct gw_config cfg;
    gw_config_init(&cfg);
    struct api_diags diags = {0};
    int rc = gw_config_parse(&cfg, CONF_FILE, (const char *)text, size, &diags);
    free(text);

    FUZZ_CHECK(rc == 0 || rc == -1);
    FUZZ_CHECK((rc == 0) == (api_diags_errors(&diags) == 0));
    for (size_t i = 0; i < diags.count; i++) {
        FUZZ_CHECK(strcmp(diags.items[i].file, CONF_FILE) == 0);
        FUZZ_CHECK(diags.items[i].field[0] != '\0' && diags.items[i].reason[0] != '\0');
    }
    if (rc == 0)
        conf_check(&cfg);
    gw_config_free(&cfg);
    api_diags_free(&diags);
    return 0;
}
