#include "gw_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_loader.h"

void gw_config_init(struct gw_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->app_path = api_xstrdup(GW_DEFAULT_APP_PATH);
    cfg->listen_address = api_xstrdup("");
    cfg->control_api_hostname = api_xstrdup("127.0.0.1");
    cfg->control_api_port = GW_DEFAULT_CONTROL_API_PORT;
    cfg->access_log = api_xstrdup("");
    cfg->user = api_xstrdup("");
    cfg->group = api_xstrdup("");
    cfg->log_level = GW_LOG_INFO;
    cfg->drain_timeout_ms = GW_DEFAULT_DRAIN_TIMEOUT_MS;
    cfg->handshake_timeout_ms = GW_DEFAULT_HANDSHAKE_TIMEOUT_MS;
    cfg->ticket_key_rotation_ms = GW_DEFAULT_TICKET_ROTATION_MS;
    cfg->client_hello_max = GW_DEFAULT_CLIENT_HELLO_MAX;
    cfg->proxy_header_max = GW_DEFAULT_PROXY_HEADER_MAX;
    cfg->cert_chain_max = GW_DEFAULT_CERT_CHAIN_MAX;
    cfg->max_pipes = GW_DEFAULT_MAX_PIPES;
    cfg->storage.host = api_xstrdup("localhost");
    cfg->storage.port = 6379;
    cfg->uptime_tests.failure_trigger_sample_size = 3;
    cfg->uptime_tests.time_wait = 10;
}

static void parse_port_rule(struct api_json_ctx *c, json_t *wl, const char *proto,
                            struct gw_port_rule *rule)
{
    char f[96];
    snprintf(f, sizeof(f), "ports_whitelist.%s", proto);
    json_t *o;
    if (api_json_object(c, wl, proto, f, &o) != 0 || o == NULL)
        return;
    rule->present = true;
    static const char *const known[] = {"ports", "ranges", NULL};
    api_json_strict_keys(c, o, f, known);

    json_t *ports = api_json_get(o, "ports");
    if (ports != NULL) {
        if (!json_is_array(ports)) {
            api_json_err(c, f, "ports: expected an array of integers");
        } else {
            size_t n = json_array_size(ports);
            rule->ports = calloc(n ? n : 1, sizeof(int));
            if (rule->ports == NULL)
                abort();
            for (size_t i = 0; i < n; i++) {
                json_t *p = json_array_get(ports, i);
                json_int_t v = json_is_integer(p) ? json_integer_value(p) : -1;
                if (v < 1 || v > 65535) {
                    char f2[128];
                    snprintf(f2, sizeof(f2), "%s.ports[%zu]", f, i);
                    api_json_err(c, f2, "expected a port number (1-65535)");
                    continue;
                }
                rule->ports[rule->nports++] = (int)v;
            }
        }
    }
    json_t *ranges = api_json_get(o, "ranges");
    if (ranges != NULL) {
        if (!json_is_array(ranges)) {
            api_json_err(c, f, "ranges: expected an array of {\"from\": n, \"to\": n}");
            return;
        }
        size_t n = json_array_size(ranges);
        rule->ranges = calloc(n ? n : 1, sizeof(*rule->ranges));
        if (rule->ranges == NULL)
            abort();
        for (size_t i = 0; i < n; i++) {
            json_t *r = json_array_get(ranges, i);
            char f2[128];
            snprintf(f2, sizeof(f2), "%s.ranges[%zu]", f, i);
            int64_t from = -1, to = -1;
            if (!json_is_object(r)) {
                api_json_err(c, f2, "expected {\"from\": n, \"to\": n}");
                continue;
            }
            api_json_int(c, r, "from", f2, &from);
            api_json_int(c, r, "to", f2, &to);
            if (from < 1 || to > 65535 || from > to) {
                api_json_err(c, f2, "expected 1 <= from <= to <= 65535");
                continue;
            }
            rule->ranges[rule->nranges++] = (struct gw_port_range){(int)from, (int)to};
        }
    }
}

static int get_small_int(struct api_json_ctx *c, json_t *o, const char *key, const char *field,
                         int min, int max, int *out)
{
    int64_t v = *out;
    if (api_json_int(c, o, key, field, &v) != 0)
        return -1;
    if (v < min || v > max) {
        api_json_err(c, field, "must be between %d and %d, got %lld", min, max, (long long)v);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int gw_config_parse(struct gw_config *cfg, const char *file, const char *json, size_t len,
                    struct api_diags *diags)
{
    struct api_json_ctx c = {.file = file, .diags = diags, .errors = 0};
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (root == NULL) {
        api_json_err(&c, "(json)", "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
                     jerr.text);
        return -1;
    }
    if (!json_is_object(root)) {
        api_json_err(&c, "(json)", "expected an object at the top level, got %s",
                     api_json_type_name(root));
        json_decref(root);
        return -1;
    }

    api_json_string(&c, root, "app_path", "app_path", &cfg->app_path);
    api_json_string(&c, root, "listen_address", "listen_address", &cfg->listen_address);
    char *level = NULL;
    api_json_string(&c, root, "log_level", "log_level", &level);
    if (level != NULL && gw_log_level_parse(level, &cfg->log_level) != 0)
        api_json_err(&c, "log_level", "unknown level \"%s\" (use debug, info, warn or error)",
                     level);
    free(level);
    api_json_string(&c, root, "secret", "secret", &cfg->secret);
    api_json_string(&c, root, "node_secret", "node_secret", &cfg->node_secret);
    api_json_string(&c, root, "certs_path", "certs_path", &cfg->certs_path);
    api_json_string(&c, root, "control_api_hostname", "control_api_hostname",
                    &cfg->control_api_hostname);
    get_small_int(&c, root, "control_api_port", "control_api_port", 0, 65535,
                  &cfg->control_api_port);

    json_t *hso;
    if (api_json_object(&c, root, "http_server_options", "http_server_options", &hso) == 0 &&
        hso != NULL) {
        /* tyk.conf's http_server_options carries many HTTP settings: only the
         * TLS ones are read, the rest ignored. */
        api_json_tls_version(&c, hso, "min_version", "http_server_options.min_version",
                             &cfg->server_tls.min_version);
        api_json_tls_version(&c, hso, "max_version", "http_server_options.max_version",
                             &cfg->server_tls.max_version);
        api_json_string_array(&c, hso, "ssl_ciphers", "http_server_options.ssl_ciphers",
                              &cfg->server_tls.ssl_ciphers, &cfg->server_tls.nssl_ciphers);
        api_json_string_array(&c, hso, "ssl_certificates", "http_server_options.ssl_certificates",
                              &cfg->server_tls.ssl_certificates,
                              &cfg->server_tls.nssl_certificates);
    }

    /* Tyk's name for the shutdown grace period, in whole seconds. */
    int64_t grace = -1;
    if (api_json_int(&c, root, "graceful_shutdown_timeout_duration",
                     "graceful_shutdown_timeout_duration", &grace) == 0 &&
        grace != -1) {
        if (grace < 0 || grace > GW_MAX_DRAIN_S)
            api_json_err(&c, "graceful_shutdown_timeout_duration",
                         "must be between 0 and %d seconds", GW_MAX_DRAIN_S);
        else
            cfg->drain_timeout_ms = grace * 1000;
    }

    json_t *st;
    if (api_json_object(&c, root, "storage", "storage", &st) == 0 && st != NULL) {
        api_json_string(&c, st, "host", "storage.host", &cfg->storage.host);
        get_small_int(&c, st, "port", "storage.port", 1, 65535, &cfg->storage.port);
        api_json_string(&c, st, "password", "storage.password", &cfg->storage.password);
        get_small_int(&c, st, "database", "storage.database", 0, 1 << 20, &cfg->storage.database);
    }

    json_t *ut;
    if (api_json_object(&c, root, "uptime_tests", "uptime_tests", &ut) == 0 && ut != NULL) {
        api_json_bool(&c, ut, "disable", "uptime_tests.disable", &cfg->uptime_tests.disable);
        api_json_string(&c, ut, "poller_group", "uptime_tests.poller_group",
                        &cfg->uptime_tests.poller_group);
        json_t *uc;
        if (api_json_object(&c, ut, "config", "uptime_tests.config", &uc) == 0 && uc != NULL) {
            get_small_int(&c, uc, "failure_trigger_sample_size",
                          "uptime_tests.config.failure_trigger_sample_size", 1, 1000,
                          &cfg->uptime_tests.failure_trigger_sample_size);
            get_small_int(&c, uc, "time_wait", "uptime_tests.config.time_wait", 1, 86400,
                          &cfg->uptime_tests.time_wait);
            get_small_int(&c, uc, "checker_pool_size", "uptime_tests.config.checker_pool_size", 0,
                          100000, &cfg->uptime_tests.checker_pool_size);
            api_json_bool(&c, uc, "enable_uptime_analytics",
                          "uptime_tests.config.enable_uptime_analytics",
                          &cfg->uptime_tests.enable_uptime_analytics);
        }
    }

    json_t *wl;
    if (api_json_object(&c, root, "ports_whitelist", "ports_whitelist", &wl) == 0 && wl != NULL) {
        cfg->whitelist_present = true;
        parse_port_rule(&c, wl, "tcp", &cfg->whitelist_tcp);
        parse_port_rule(&c, wl, "tls", &cfg->whitelist_tls);
    }

    json_t *ext;
    if (api_json_object(&c, root, API_EXT_KEY, API_EXT_KEY, &ext) == 0 && ext != NULL) {
        static const char *const known[] = {"workers",
                                            "drain_timeout",
                                            "handshake_timeout",
                                            "ticket_key_rotation",
                                            "client_hello_max",
                                            "max_pipes",
                                            "access_log",
                                            "max_connections",
                                            "max_connections_per_source",
                                            "strict_key_permissions",
                                            "user",
                                            "group",
                                            "proxy_header_max",
                                            "cert_chain_max",
                                            NULL};
        api_json_strict_keys(&c, ext, API_EXT_KEY, known);
        get_small_int(&c, ext, "workers", API_EXT_KEY ".workers", 0, 1024, &cfg->workers);
        if (api_json_duration(&c, ext, "drain_timeout", API_EXT_KEY ".drain_timeout",
                              &cfg->drain_timeout_ms) == 0 &&
            cfg->drain_timeout_ms > (int64_t)GW_MAX_DRAIN_S * 1000)
            api_json_err(&c, API_EXT_KEY ".drain_timeout", "must be at most %d seconds",
                         GW_MAX_DRAIN_S);
        if (api_json_duration(&c, ext, "handshake_timeout", API_EXT_KEY ".handshake_timeout",
                              &cfg->handshake_timeout_ms) == 0 &&
            cfg->handshake_timeout_ms <= 0)
            api_json_err(&c, API_EXT_KEY ".handshake_timeout", "must be greater than 0");
        if (api_json_duration(&c, ext, "ticket_key_rotation", API_EXT_KEY ".ticket_key_rotation",
                              &cfg->ticket_key_rotation_ms) == 0 &&
            cfg->ticket_key_rotation_ms < 1000)
            api_json_err(&c, API_EXT_KEY ".ticket_key_rotation", "must be at least 1s");
        get_small_int(&c, ext, "client_hello_max", API_EXT_KEY ".client_hello_max", 1024, 65536,
                      &cfg->client_hello_max);
        get_small_int(&c, ext, "max_pipes", API_EXT_KEY ".max_pipes", 0, 65536, &cfg->max_pipes);
        api_json_string(&c, ext, "access_log", API_EXT_KEY ".access_log", &cfg->access_log);
        if (api_json_int(&c, ext, "max_connections", API_EXT_KEY ".max_connections",
                         &cfg->max_connections) == 0 &&
            (cfg->max_connections < 0 || cfg->max_connections > 100000000))
            api_json_err(&c, API_EXT_KEY ".max_connections",
                         "must be between 0 (no limit) and 100000000");
        get_small_int(&c, ext, "max_connections_per_source",
                      API_EXT_KEY ".max_connections_per_source", 0, 10000000,
                      &cfg->max_connections_per_source);
        api_json_bool(&c, ext, "strict_key_permissions", API_EXT_KEY ".strict_key_permissions",
                      &cfg->strict_key_permissions);
        api_json_string(&c, ext, "user", API_EXT_KEY ".user", &cfg->user);
        /* A v1 header is at most 107 bytes; a v2 one 16 + 65535. */
        get_small_int(&c, ext, "proxy_header_max", API_EXT_KEY ".proxy_header_max", 108, 65551,
                      &cfg->proxy_header_max);
        get_small_int(&c, ext, "cert_chain_max", API_EXT_KEY ".cert_chain_max", 4096, 1048576,
                      &cfg->cert_chain_max);
        api_json_string(&c, ext, "group", API_EXT_KEY ".group", &cfg->group);
    }

    json_decref(root);
    return c.errors > 0 ? -1 : 0;
}

int gw_config_load(struct gw_config *cfg, const char *path, struct api_diags *diags)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        api_diags_add(diags, API_SEV_ERROR, path, "(file)", "cannot open: %s", strerror(errno));
        return -1;
    }
    char *buf = malloc(API_FILE_MAX + 1);
    if (buf == NULL)
        abort();
    size_t n = fread(buf, 1, API_FILE_MAX + 1, f);
    int rc = -1;
    if (ferror(f))
        api_diags_add(diags, API_SEV_ERROR, path, "(file)", "cannot read: %s", strerror(errno));
    else if (n > API_FILE_MAX)
        api_diags_add(diags, API_SEV_ERROR, path, "(file)", "file too large (limit %d bytes)",
                      API_FILE_MAX);
    else
        rc = gw_config_parse(cfg, path, buf, n, diags);
    fclose(f);
    free(buf);
    free(cfg->file);
    cfg->file = api_xstrdup(path);
    return rc;
}

static bool rule_allows(const struct gw_port_rule *r, int port)
{
    for (size_t i = 0; i < r->nports; i++)
        if (r->ports[i] == port)
            return true;
    for (size_t i = 0; i < r->nranges; i++)
        if (port >= r->ranges[i].from && port <= r->ranges[i].to)
            return true;
    return false;
}

bool gw_config_port_allowed(void *ctx, enum api_protocol proto, int port)
{
    const struct gw_config *cfg = ctx;
    if (!cfg->whitelist_present)
        return true;
    return rule_allows(proto == API_PROTO_TLS ? &cfg->whitelist_tls : &cfg->whitelist_tcp, port);
}

void gw_config_free(struct gw_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->file);
    free(cfg->app_path);
    free(cfg->listen_address);
    free(cfg->control_api_hostname);
    free(cfg->access_log);
    free(cfg->user);
    free(cfg->group);
    free(cfg->secret);
    free(cfg->node_secret);
    free(cfg->certs_path);
    for (size_t i = 0; i < cfg->server_tls.nssl_ciphers; i++)
        free(cfg->server_tls.ssl_ciphers[i]);
    free(cfg->server_tls.ssl_ciphers);
    for (size_t i = 0; i < cfg->server_tls.nssl_certificates; i++)
        free(cfg->server_tls.ssl_certificates[i]);
    free(cfg->server_tls.ssl_certificates);
    free(cfg->storage.host);
    free(cfg->storage.password);
    free(cfg->uptime_tests.poller_group);
    free(cfg->whitelist_tcp.ports);
    free(cfg->whitelist_tcp.ranges);
    free(cfg->whitelist_tls.ports);
    free(cfg->whitelist_tls.ranges);
    memset(cfg, 0, sizeof(*cfg));
}
