#include "api_def.h"

#include <errno.h>
#include <jansson.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_duration.h"
#include "api_regex.h"
#include "api_json.h"

/* ---- sections --------------------------------------------------------------- */

/* A choice between named values: *out gets the index of the one written. */
static void parse_choice(struct api_json_ctx *c, json_t *obj, const char *key, const char *field,
                         const char *const *names, int *out)
{
    char *v = NULL;
    if (api_json_string(c, obj, key, field, &v) != 0 || v == NULL)
        return;
    for (int i = 0; names[i] != NULL; i++) {
        if (strcmp(v, names[i]) == 0) {
            *out = i;
            free(v);
            return;
        }
    }
    char list[160] = "";
    for (int i = 0; names[i] != NULL; i++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s\"%s\"",
                 i == 0                 ? ""
                 : names[i + 1] == NULL ? " or "
                                        : ", ",
                 names[i]);
    api_json_err(c, field, "use %s, not \"%s\"", list, v);
    free(v);
}

/* tcpgate.sentinel: the sentinels that name the master of master_name. */
static void parse_sentinel(struct api_json_ctx *c, json_t *ext, struct api_sentinel *sn)
{
    json_t *obj;
    /* Present, even malformed: the targets follow sentinel mode's rules, so
     * that "target_url missing" does not follow the real error. */
    sn->enabled = api_json_get(ext, "sentinel") != NULL;
    if (api_json_object(c, ext, "sentinel", API_EXT_KEY ".sentinel", &obj) != 0 || obj == NULL)
        return;
    static const char *const known[] = {"master_name",   "addrs",          "username", "password",
                                        "node_username", "node_password",  "quorum",   "timeout",
                                        "poll_interval", "on_unreachable", "role",     NULL};
    api_json_strict_keys(c, obj, API_EXT_KEY ".sentinel", known);
    sn->timeout_ms = API_SENTINEL_TIMEOUT_MS;
    sn->poll_interval_ms = API_SENTINEL_POLL_MS;
#define SN_FIELD(k) API_EXT_KEY ".sentinel." k
    if (api_json_string(c, obj, "master_name", SN_FIELD("master_name"), &sn->master_name) == 0) {
        if (sn->master_name == NULL || sn->master_name[0] == '\0')
            api_json_err(c, SN_FIELD("master_name"), "missing: the name the sentinels monitor");
        else if (strlen(sn->master_name) > 255 || strpbrk(sn->master_name, " \t\r\n") != NULL)
            api_json_err(c, SN_FIELD("master_name"),
                         "a master name has at most 255 characters and no spaces");
    }
    char **addrs = NULL;
    size_t n = 0;
    if (api_json_string_array(c, obj, "addrs", SN_FIELD("addrs"), &addrs, &n) == 0) {
        if (n == 0)
            api_json_err(c, SN_FIELD("addrs"), "missing: list the sentinels, host:port each");
        else if (n > API_SENTINEL_MAX_ADDRS)
            api_json_err(c, SN_FIELD("addrs"), "at most %d sentinels, got %zu",
                         API_SENTINEL_MAX_ADDRS, n);
        sn->addrs = calloc(n ? n : 1, sizeof(*sn->addrs));
        if (sn->addrs == NULL)
            abort();
        for (size_t i = 0; i < n; i++) {
            char f[64], e[320];
            snprintf(f, sizeof(f), SN_FIELD("addrs[%zu]"), i);
            struct api_target *t = &sn->addrs[sn->naddrs];
            if (api_target_parse(addrs[i], t, e, sizeof(e)) != 0) {
                api_json_err(c, f, "%s", e);
            } else if (t->scheme == API_SCHEME_TLS) {
                api_json_err(c, f, "TLS to sentinels is not supported; write host:port");
            } else {
                bool dup = false;
                for (size_t j = 0; j < sn->naddrs && !dup; j++)
                    dup =
                        strcasecmp(sn->addrs[j].host, t->host) == 0 && sn->addrs[j].port == t->port;
                if (dup)
                    api_json_err(c, f, "\"%s\" is listed twice", addrs[i]);
                else
                    sn->naddrs++;
            }
            free(addrs[i]);
        }
        free(addrs);
    }
    static const char *const creds[] = {"username", "password", "node_username", "node_password"};
    char **cred_out[] = {&sn->username, &sn->password, &sn->node_username, &sn->node_password};
    for (size_t i = 0; i < 4; i++) {
        char f[64];
        snprintf(f, sizeof(f), API_EXT_KEY ".sentinel.%s", creds[i]);
        api_json_string(c, obj, creds[i], f, cred_out[i]);
    }
    if (sn->username != NULL && sn->password == NULL)
        api_json_err(c, SN_FIELD("username"), "needs a password");
    if (sn->node_username != NULL && sn->node_password == NULL)
        api_json_err(c, SN_FIELD("node_username"), "needs a node_password");
    int64_t quorum = 0;
    if (api_json_int(c, obj, "quorum", SN_FIELD("quorum"), &quorum) == 0) {
        if (quorum < 0 || (sn->naddrs > 0 && quorum > (int64_t)sn->naddrs))
            api_json_err(c, SN_FIELD("quorum"),
                         "must be between 1 and the number of sentinels (%zu), or 0 for a "
                         "majority of those that answer",
                         sn->naddrs);
        else
            sn->quorum = (int)quorum;
    }
    if (api_json_duration(c, obj, "timeout", SN_FIELD("timeout"), &sn->timeout_ms) == 0 &&
        (sn->timeout_ms < 50 || sn->timeout_ms > 10000))
        api_json_err(c, SN_FIELD("timeout"), "must be between 50ms and 10s");
    if (api_json_duration(c, obj, "poll_interval", SN_FIELD("poll_interval"),
                          &sn->poll_interval_ms) == 0 &&
        (sn->poll_interval_ms < 100 || sn->poll_interval_ms > 60000))
        api_json_err(c, SN_FIELD("poll_interval"), "must be between 100ms and 1m");
    static const char *const unreachable[] = {"keep", "checks", NULL};
    int u = 0;
    parse_choice(c, obj, "on_unreachable", SN_FIELD("on_unreachable"), unreachable, &u);
    sn->fallback_to_checks = u == 1;
    static const char *const roles[] = {"master", "replica", NULL};
    int r = 0;
    parse_choice(c, obj, "role", SN_FIELD("role"), roles, &r);
    sn->replica = r == 1;
#undef SN_FIELD
}

static void parse_ext(struct api_json_ctx *c, json_t *root, struct api_ext *ext)
{
    ext->connect_timeout_ms = API_DEFAULT_CONNECT_TIMEOUT_MS;
    ext->idle_timeout_ms = API_DEFAULT_IDLE_TIMEOUT_MS;
    ext->max_connection_duration_ms = 0;
    ext->max_connect_attempts = API_DEFAULT_MAX_CONNECT_ATTEMPTS;
    ext->drain_timeout_ms = -1;
    ext->proxy_protocol_timeout_ms = 5000;

    json_t *obj;
    if (api_json_object(c, root, API_EXT_KEY, API_EXT_KEY, &obj) != 0 || obj == NULL)
        return;

    static const char *const known[] = {"connect_timeout",
                                        "idle_timeout",
                                        "max_connection_duration",
                                        "max_connect_attempts",
                                        "drain_timeout",
                                        "tls_min_version",
                                        "tls_max_version",
                                        "tls_ciphers",
                                        "alpn",
                                        "upstream_ca_file",
                                        "check_interval",
                                        "check_timeout",
                                        "check_fall",
                                        "check_rise",
                                        "on_marked_down",
                                        "check_proxy_protocol",
                                        "proxy_protocol_trusted",
                                        "proxy_protocol_optional",
                                        "proxy_protocol_timeout",
                                        "send_proxy_protocol",
                                        "send_proxy_protocol_crc32c",
                                        "max_connections",
                                        "max_connections_per_target",
                                        "sentinel",
                                        NULL};
    api_json_strict_keys(c, obj, API_EXT_KEY, known);
    parse_sentinel(c, obj, &ext->sentinel);

    api_json_duration(c, obj, "connect_timeout", API_EXT_KEY ".connect_timeout",
                      &ext->connect_timeout_ms);
    if (ext->connect_timeout_ms <= 0)
        api_json_err(c, API_EXT_KEY ".connect_timeout", "must be greater than 0");
    api_json_duration(c, obj, "idle_timeout", API_EXT_KEY ".idle_timeout", &ext->idle_timeout_ms);
    api_json_duration(c, obj, "max_connection_duration", API_EXT_KEY ".max_connection_duration",
                      &ext->max_connection_duration_ms);
    api_json_duration(c, obj, "drain_timeout", API_EXT_KEY ".drain_timeout",
                      &ext->drain_timeout_ms);

    static const char *const limits[] = {"max_connections", "max_connections_per_target"};
    int64_t *limit_out[] = {&ext->max_connections, &ext->max_connections_per_target};
    for (size_t i = 0; i < 2; i++) {
        char field[64];
        snprintf(field, sizeof(field), API_EXT_KEY ".%s", limits[i]);
        if (api_json_int(c, obj, limits[i], field, limit_out[i]) == 0 &&
            (*limit_out[i] < 0 || *limit_out[i] > 10000000))
            api_json_err(c, field, "must be between 0 (no limit) and 10000000, got %lld",
                         (long long)*limit_out[i]);
    }

    int64_t attempts = ext->max_connect_attempts;
    if (api_json_int(c, obj, "max_connect_attempts", API_EXT_KEY ".max_connect_attempts",
                     &attempts) == 0) {
        if (attempts < 1 || attempts > 100)
            api_json_err(c, API_EXT_KEY ".max_connect_attempts",
                         "must be between 1 and 100, got %lld", (long long)attempts);
        else
            ext->max_connect_attempts = (int)attempts;
    }

    api_json_tls_version(c, obj, "tls_min_version", API_EXT_KEY ".tls_min_version",
                         &ext->tls_min_version);
    api_json_tls_version(c, obj, "tls_max_version", API_EXT_KEY ".tls_max_version",
                         &ext->tls_max_version);
    if (ext->tls_min_version && ext->tls_max_version && ext->tls_min_version > ext->tls_max_version)
        api_json_err(c, API_EXT_KEY ".tls_max_version", "is below tls_min_version");
    api_json_string_array(c, obj, "tls_ciphers", API_EXT_KEY ".tls_ciphers", &ext->tls_ciphers,
                          &ext->ntls_ciphers);
    api_json_string_array(c, obj, "alpn", API_EXT_KEY ".alpn", &ext->alpn, &ext->nalpn);
    for (size_t i = 0; i < ext->nalpn; i++)
        if (ext->alpn[i][0] == '\0' || strlen(ext->alpn[i]) > 255)
            api_json_err(c, API_EXT_KEY ".alpn", "protocol names are 1 to 255 bytes");
    api_json_string(c, obj, "upstream_ca_file", API_EXT_KEY ".upstream_ca_file",
                    &ext->upstream_ca_file);

    if (api_json_duration(c, obj, "check_interval", API_EXT_KEY ".check_interval",
                          &ext->check_interval_ms) == 0 &&
        api_json_get(obj, "check_interval") != NULL && ext->check_interval_ms < 100)
        api_json_err(c, API_EXT_KEY ".check_interval", "must be at least 100ms");
    if (api_json_duration(c, obj, "check_timeout", API_EXT_KEY ".check_timeout",
                          &ext->check_timeout_ms) == 0 &&
        api_json_get(obj, "check_timeout") != NULL && ext->check_timeout_ms <= 0)
        api_json_err(c, API_EXT_KEY ".check_timeout", "must be greater than 0");
    static const char *const counts[] = {"check_fall", "check_rise"};
    int *count_out[] = {&ext->check_fall, &ext->check_rise};
    for (int i = 0; i < 2; i++) {
        char f[64];
        int64_t v = 0;
        snprintf(f, sizeof(f), API_EXT_KEY ".%s", counts[i]);
        if (api_json_int(c, obj, counts[i], f, &v) != 0)
            continue;
        if (api_json_get(obj, counts[i]) != NULL && (v < 1 || v > 100))
            api_json_err(c, f, "must be between 1 and 100, got %lld", (long long)v);
        else
            *count_out[i] = (int)v;
    }
    char *mode = NULL;
    if (api_json_string(c, obj, "on_marked_down", API_EXT_KEY ".on_marked_down", &mode) == 0 &&
        mode != NULL) {
        if (strcmp(mode, "close") == 0)
            ext->close_on_marked_down = true;
        else if (strcmp(mode, "keep") == 0)
            ext->keep_on_marked_down = true;
        else
            api_json_err(c, API_EXT_KEY ".on_marked_down", "use \"keep\" or \"close\", not \"%s\"",
                         mode);
    }
    free(mode);
    mode = NULL;
    if (api_json_string(c, obj, "check_proxy_protocol", API_EXT_KEY ".check_proxy_protocol",
                        &mode) == 0 &&
        mode != NULL) {
        if (strcmp(mode, "v1") == 0)
            ext->check_proxy_v1 = true;
        else if (strcmp(mode, "v2") != 0)
            api_json_err(c, API_EXT_KEY ".check_proxy_protocol",
                         "use \"v2\" (a LOCAL header) or \"v1\" (real addresses), not \"%s\"",
                         mode);
    }
    free(mode);

    char **cidrs = NULL;
    size_t ncidrs = 0;
    if (api_json_string_array(c, obj, "proxy_protocol_trusted",
                              API_EXT_KEY ".proxy_protocol_trusted", &cidrs, &ncidrs) == 0 &&
        cidrs != NULL) {
        ext->proxy_protocol_trusted = calloc(ncidrs ? ncidrs : 1, sizeof(struct api_cidr));
        if (ext->proxy_protocol_trusted == NULL)
            abort();
        for (size_t i = 0; i < ncidrs; i++) {
            char e[160], f[96];
            if (api_cidr_parse(cidrs[i], &ext->proxy_protocol_trusted[ext->nproxy_protocol_trusted],
                               e, sizeof(e)) == 0) {
                ext->nproxy_protocol_trusted++;
            } else {
                snprintf(f, sizeof(f), API_EXT_KEY ".proxy_protocol_trusted[%zu]", i);
                api_json_err(c, f, "%s", e);
            }
            free(cidrs[i]);
        }
        free(cidrs);
    }
    api_json_bool(c, obj, "proxy_protocol_optional", API_EXT_KEY ".proxy_protocol_optional",
                  &ext->proxy_protocol_optional);
    if (api_json_duration(c, obj, "proxy_protocol_timeout", API_EXT_KEY ".proxy_protocol_timeout",
                          &ext->proxy_protocol_timeout_ms) == 0 &&
        ext->proxy_protocol_timeout_ms < 3000)
        api_json_err(c, API_EXT_KEY ".proxy_protocol_timeout",
                     "must be at least 3s, as the PROXY protocol's specification asks");
    mode = NULL;
    if (api_json_string(c, obj, "send_proxy_protocol", API_EXT_KEY ".send_proxy_protocol", &mode) ==
            0 &&
        mode != NULL) {
        if (strcmp(mode, "v1") == 0)
            ext->send_proxy_protocol = 1;
        else if (strcmp(mode, "v2") == 0)
            ext->send_proxy_protocol = 2;
        else
            api_json_err(c, API_EXT_KEY ".send_proxy_protocol", "use \"v1\" or \"v2\", not \"%s\"",
                         mode);
    }
    free(mode);
    api_json_bool(c, obj, "send_proxy_protocol_crc32c", API_EXT_KEY ".send_proxy_protocol_crc32c",
                  &ext->send_proxy_protocol_crc32c);
}

/* ---- commands and checks ------------------------------------------------------- */

static void parse_command(struct api_json_ctx *c, json_t *cmd, const char *field,
                          struct api_check_cmd *out)
{
    if (!json_is_object(cmd)) {
        api_json_err(c, field,
                     "expected an object {\"name\": \"send\"|\"expect\", \"message\": ...}, got %s",
                     api_json_type_name(cmd));
        return;
    }
    char f[256];
    char *name = NULL;
    snprintf(f, sizeof(f), "%s.name", field);
    if (api_json_string(c, cmd, "name", f, &name) != 0)
        ; /* the type error is reported */
    else if (name == NULL)
        api_json_err(c, f, "missing (use \"send\" or \"expect\")");
    else if (strcmp(name, "send") == 0)
        out->kind = API_CMD_SEND;
    else if (strcmp(name, "expect") == 0)
        out->kind = API_CMD_EXPECT;
    else if (strcmp(name, "expect_not") == 0)
        out->kind = API_CMD_EXPECT_NOT;
    else if (strcmp(name, "expect_regex") == 0)
        out->kind = API_CMD_EXPECT_REGEX;
    else if (strcmp(name, "expect_not_regex") == 0)
        out->kind = API_CMD_EXPECT_NOT_REGEX;
    else
        api_json_err(c, f,
                     "unknown command \"%s\" (use send, expect, expect_not, expect_regex or "
                     "expect_not_regex)",
                     name);
    free(name);

    snprintf(f, sizeof(f), "%s.message", field);
    json_t *m = api_json_get(cmd, "message");
    if (m == NULL) {
        out->message = api_xstrdup("");
        out->len = 0;
    } else if (!json_is_string(m)) {
        api_json_err(c, f, "expected a string, got %s", api_json_type_name(m));
    } else {
        out->len = json_string_length(m);
        out->message = malloc(out->len + 1);
        if (out->message == NULL)
            abort();
        memcpy(out->message, json_string_value(m), out->len + 1);
    }
    if (out->message == NULL)
        return;
    if (out->kind != API_CMD_SEND && out->len == 0)
        api_json_warn(c, f, "an empty expect checks nothing");
    if (out->kind == API_CMD_EXPECT_REGEX || out->kind == API_CMD_EXPECT_NOT_REGEX) {
        regex_t re;
        char why[128] = "contains a NUL character";
        int rc = REG_BADPAT;
        /* Bounded first: regcomp itself is what a large pattern exhausts. */
        if (strlen(out->message) == out->len &&
            api_regex_check(out->message, why, sizeof(why)) == 0) {
            rc = regcomp(&re, out->message, REG_EXTENDED | REG_NOSUB);
            if (rc != 0)
                regerror(rc, NULL, why, sizeof(why));
        }
        if (rc != 0)
            api_json_err(c, f, "invalid regular expression: %s", why);
        else
            regfree(&re);
    }
}

static void parse_check(struct api_json_ctx *c, json_t *e, const char *field, struct api_check *chk)
{
    char f[256];
    if (!json_is_object(e)) {
        api_json_err(c, field, "expected an object, got %s", api_json_type_name(e));
        return;
    }
    snprintf(f, sizeof(f), "%s.url", field);
    if (api_json_string(c, e, "url", f, &chk->url) != 0) {
        /* the type error is reported */
    } else if (chk->url == NULL) {
        api_json_err(c, f, "missing");
    } else {
        char e2[320];
        if (api_target_parse(chk->url, &chk->target, e2, sizeof(e2)) != 0)
            api_json_err(c, f, "%s", e2);
    }

    snprintf(f, sizeof(f), "%s.protocol", field);
    api_json_string(c, e, "protocol", f, &chk->protocol);
    if (chk->protocol != NULL && chk->protocol[0] != '\0') {
        if (strcmp(chk->protocol, "tcp") != 0 && strcmp(chk->protocol, "tls") != 0)
            api_json_err(c, f, "unknown check protocol \"%s\" (use \"tcp\" or \"tls\")",
                         chk->protocol);
    }

    snprintf(f, sizeof(f), "%s.timeout", field);
    json_t *t = api_json_get(e, "timeout");
    char e2[256];
    if (t == NULL) {
        chk->timeout_ms = 0;
    } else if (json_is_integer(t)) {
        if (api_duration_from_ns(json_integer_value(t), &chk->timeout_ms, e2, sizeof(e2)) != 0)
            api_json_err(c, f, "%s", e2);
    } else if (json_is_string(t)) {
        if (api_duration_parse(json_string_value(t), &chk->timeout_ms, e2, sizeof(e2)) != 0)
            api_json_err(c, f, "%s", e2);
    } else {
        api_json_err(c, f, "expected integer nanoseconds or a duration string, got %s",
                     api_json_type_name(t));
    }

    snprintf(f, sizeof(f), "%s.enable_proxy_protocol", field);
    api_json_bool(c, e, "enable_proxy_protocol", f, &chk->enable_proxy_protocol);

    json_t *cmds = api_json_get(e, "commands");
    snprintf(f, sizeof(f), "%s.commands", field);
    if (cmds != NULL && !json_is_array(cmds)) {
        api_json_err(c, f, "expected an array, got %s", api_json_type_name(cmds));
    } else if (cmds != NULL) {
        size_t n = json_array_size(cmds);
        chk->commands = calloc(n ? n : 1, sizeof(*chk->commands));
        if (chk->commands == NULL)
            abort();
        chk->ncommands = n;
        for (size_t i = 0; i < n; i++) {
            char f2[200];
            snprintf(f2, sizeof(f2), "%s.commands[%zu]", field, i);
            parse_command(c, json_array_get(cmds, i), f2, &chk->commands[i]);
        }
    }
}

static void parse_uptime(struct api_json_ctx *c, json_t *root, struct api_def *def)
{
    json_t *ut;
    if (api_json_object(c, root, "uptime_tests", "uptime_tests", &ut) != 0 || ut == NULL)
        return;
    api_json_bool(c, ut, "disabled", "uptime_tests.disabled", &def->uptime_tests.disabled);

    json_t *cfg;
    if (api_json_object(c, ut, "config", "uptime_tests.config", &cfg) == 0 && cfg != NULL) {
        api_json_int(c, cfg, "expire_utime_after", "uptime_tests.config.expire_utime_after",
                     &def->uptime_tests.expire_utime_after);
        api_json_int(c, cfg, "recheck_wait", "uptime_tests.config.recheck_wait",
                     &def->uptime_tests.recheck_wait);
    }

    json_t *list = api_json_get(ut, "check_list");
    if (list == NULL)
        return;
    if (!json_is_array(list)) {
        api_json_err(c, "uptime_tests.check_list", "expected an array, got %s",
                     api_json_type_name(list));
        return;
    }
    size_t n = json_array_size(list);
    def->uptime_tests.checks = calloc(n ? n : 1, sizeof(struct api_check));
    if (def->uptime_tests.checks == NULL)
        abort();
    def->uptime_tests.nchecks = n;
    for (size_t i = 0; i < n; i++) {
        char f[64];
        snprintf(f, sizeof(f), "uptime_tests.check_list[%zu]", i);
        parse_check(c, json_array_get(list, i), f, &def->uptime_tests.checks[i]);
    }
}

static void parse_transport(struct api_json_ctx *c, json_t *proxy, struct api_transport *tr)
{
    json_t *t;
    if (api_json_object(c, proxy, "transport", "proxy.transport", &t) != 0 || t == NULL)
        return;
    api_json_bool(c, t, "ssl_insecure_skip_verify", "proxy.transport.ssl_insecure_skip_verify",
                  &tr->ssl_insecure_skip_verify);
    api_json_string_array(c, t, "ssl_ciphers", "proxy.transport.ssl_ciphers", &tr->ssl_ciphers,
                          &tr->nssl_ciphers);
    api_json_tls_version(c, t, "ssl_min_version", "proxy.transport.ssl_min_version",
                         &tr->ssl_min_version);
    api_json_tls_version(c, t, "ssl_max_version", "proxy.transport.ssl_max_version",
                         &tr->ssl_max_version);
    api_json_bool(c, t, "ssl_force_common_name_check",
                  "proxy.transport.ssl_force_common_name_check", &tr->ssl_force_common_name_check);
    api_json_string(c, t, "proxy_url", "proxy.transport.proxy_url", &tr->proxy_url);
}

static void parse_service_discovery(struct api_json_ctx *c, json_t *proxy,
                                    struct api_service_discovery *sd)
{
    json_t *o;
    if (api_json_object(c, proxy, "service_discovery", "proxy.service_discovery", &o) != 0 ||
        o == NULL)
        return;
#define SD_BOOL(k) api_json_bool(c, o, #k, "proxy.service_discovery." #k, &sd->k)
#define SD_STR(k) api_json_string(c, o, #k, "proxy.service_discovery." #k, &sd->k)
    SD_BOOL(use_discovery_service);
    SD_STR(query_endpoint);
    SD_BOOL(use_nested_query);
    SD_STR(parent_data_path);
    SD_STR(data_path);
    SD_STR(port_data_path);
    SD_STR(target_path);
    SD_BOOL(use_target_list);
    api_json_int(c, o, "cache_timeout", "proxy.service_discovery.cache_timeout",
                 &sd->cache_timeout);
    SD_BOOL(cache_disabled);
    SD_BOOL(endpoint_returns_list);
#undef SD_BOOL
#undef SD_STR
    if (sd->use_discovery_service)
        api_json_warn(c, "proxy.service_discovery.use_discovery_service",
                      "service discovery is not supported by tcpgate; the static targets are used");
}

/* Tyk's docs put these two at the top level; Tyk reads them under "proxy". */
static void parse_misplaced_bool(struct api_json_ctx *c, json_t *root, const char *key, bool *out)
{
    bool v = false;
    json_t *j = api_json_get(root, key);
    if (j == NULL || api_json_bool(c, root, key, key, &v) != 0)
        return;
    api_json_warn(c, key, "belongs under \"proxy\" (proxy.%s); accepted at the top level", key);
    *out = *out || v;
}

static void parse_proxy(struct api_json_ctx *c, json_t *root, struct api_def *def)
{
    json_t *proxy;
    if (api_json_object(c, root, "proxy", "proxy", &proxy) != 0)
        return;
    int url_rc = 0, list_rc = 0;
    if (proxy != NULL) {
        url_rc =
            api_json_string(c, proxy, "target_url", "proxy.target_url", &def->proxy.target_url);
        api_json_bool(c, proxy, "enable_load_balancing", "proxy.enable_load_balancing",
                      &def->proxy.enable_load_balancing);
        api_json_bool(c, proxy, "check_host_against_uptime_tests",
                      "proxy.check_host_against_uptime_tests",
                      &def->proxy.check_host_against_uptime_tests);
        parse_service_discovery(c, proxy, &def->proxy.service_discovery);
        parse_transport(c, proxy, &def->proxy.transport);
    }
    parse_misplaced_bool(c, root, "enable_load_balancing", &def->proxy.enable_load_balancing);
    parse_misplaced_bool(c, root, "check_host_against_uptime_tests",
                         &def->proxy.check_host_against_uptime_tests);

    char **list = NULL;
    size_t n = 0;
    if (proxy != NULL)
        list_rc = api_json_string_array(c, proxy, "target_list", "proxy.target_list", &list, &n);
    if (list_rc == 0 && list != NULL) {
        def->proxy.targets = calloc(n ? n : 1, sizeof(struct api_target));
        if (def->proxy.targets == NULL)
            abort();
        for (size_t i = 0; i < n; i++) {
            char f[64], e[320];
            snprintf(f, sizeof(f), "proxy.target_list[%zu]", i);
            if (api_target_parse(list[i], &def->proxy.targets[def->proxy.ntargets], e, sizeof(e)) !=
                0)
                api_json_err(c, f, "%s", e);
            else
                def->proxy.ntargets++;
            free(list[i]);
        }
        free(list);
    }

    bool has_url = def->proxy.target_url != NULL && def->proxy.target_url[0] != '\0';
    if (has_url) {
        char e[320];
        if (api_target_parse(def->proxy.target_url, &def->proxy.target, e, sizeof(e)) != 0)
            api_json_err(c, "proxy.target_url", "%s", e);
    }
    if (url_rc != 0 || list_rc != 0)
        return; /* a type error is reported; "missing" would mislead */
    if (def->ext.sentinel.enabled) {
        /* The sentinels name the targets; the listed ones are an allow-list. */
        const struct api_target *t;
        size_t nt = api_def_upstreams(def, &t);
        for (size_t i = 0; i < nt; i++)
            if (t[i].scheme == API_SCHEME_TLS)
                api_json_err(c, n > 0 ? "proxy.target_list" : "proxy.target_url",
                             "tcpgate.sentinel reaches the data nodes over plain TCP; tls:// "
                             "targets are not supported with it");
        if (nt == 0)
            api_json_warn(c, API_EXT_KEY ".sentinel",
                          "no target is listed, so any address the sentinels agree on is used; "
                          "list the nodes in proxy.target_list to refuse others");
        return;
    }
    if (def->proxy.enable_load_balancing) {
        if (n == 0)
            api_json_err(c, "proxy.target_list", "empty while load balancing is enabled");
    } else if (!has_url) {
        if (n > 0)
            api_json_err(
                c, "proxy.target_url",
                "missing (target_list is only used with proxy.enable_load_balancing: true)");
        else
            api_json_err(c, "proxy.target_url", "missing: no upstream to proxy to");
    }
}

/* ---- definition -------------------------------------------------------------- */

const char *api_protocol_name(enum api_protocol p)
{
    return p == API_PROTO_TLS ? "tls" : "tcp";
}

size_t api_def_upstreams(const struct api_def *def, const struct api_target **out)
{
    if (def->ext.sentinel.enabled) {
        *out = def->proxy.ntargets > 0 ? def->proxy.targets : &def->proxy.target;
        return def->proxy.ntargets > 0 ? def->proxy.ntargets
               : def->proxy.target_url != NULL && def->proxy.target_url[0] != '\0' ? 1
                                                                                   : 0;
    }
    if (def->proxy.enable_load_balancing) {
        *out = def->proxy.targets;
        return def->proxy.ntargets;
    }
    *out = &def->proxy.target;
    return 1;
}

const char *api_def_domain(const struct api_def *def)
{
    return def->domain_disabled || def->domain == NULL ? "" : def->domain;
}

static char *file_stem(const char *file)
{
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    char *s = api_xstrdup(base);
    char *dot = strrchr(s, '.');
    if (dot != NULL && dot != s)
        *dot = '\0';
    return s;
}

struct api_def *api_def_parse(const char *file, const char *json, size_t len,
                              struct api_diags *diags)
{
    struct api_json_ctx c = {.file = file, .diags = diags, .errors = 0};
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        api_json_err(&c, "(json)", "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
                     jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        api_json_err(&c, "(json)", "expected an object at the top level, got %s",
                     api_json_type_name(root));
        json_decref(root);
        return NULL;
    }

    struct api_def *def = calloc(1, sizeof(*def));
    if (def == NULL)
        abort();
    def->file = api_xstrdup(file);
    def->active = true;

    api_json_string(&c, root, "api_id", "api_id", &def->api_id);
    api_json_string(&c, root, "name", "name", &def->name);
    api_json_string(&c, root, "org_id", "org_id", &def->org_id);
    api_json_bool(&c, root, "active", "active", &def->active);
    if (def->api_id == NULL || def->api_id[0] == '\0') {
        free(def->api_id);
        def->api_id = file_stem(file);
    }

    json_t *port = api_json_get(root, "listen_port");
    if (port == NULL) {
        api_json_err(&c, "listen_port", "missing");
    } else if (!json_is_integer(port)) {
        api_json_err(&c, "listen_port", "expected an integer, got %s", api_json_type_name(port));
    } else {
        json_int_t p = json_integer_value(port);
        if (p < 1 || p > 65535)
            api_json_err(&c, "listen_port", "%lld is out of range (1-65535)", (long long)p);
        else
            def->listen_port = (int)p;
    }

    char *proto = NULL;
    if (api_json_string(&c, root, "protocol", "protocol", &proto) != 0)
        ; /* the type error is reported */
    else if (proto == NULL || proto[0] == '\0')
        api_json_err(&c, "protocol", "missing (use \"tcp\" or \"tls\")");
    else if (strcmp(proto, "tcp") == 0)
        def->protocol = API_PROTO_TCP;
    else if (strcmp(proto, "tls") == 0)
        def->protocol = API_PROTO_TLS;
    else if (strcmp(proto, "http") == 0 || strcmp(proto, "https") == 0 || strcmp(proto, "h2c") == 0)
        api_json_err(&c, "protocol", "\"%s\" is an HTTP API; tcpgate serves \"tcp\" and \"tls\"",
                     proto);
    else
        api_json_err(&c, "protocol", "unknown protocol \"%s\" (use \"tcp\" or \"tls\")", proto);
    free(proto);

    api_json_string(&c, root, "domain", "domain", &def->domain);
    if (def->domain == NULL)
        def->domain = api_xstrdup("");
    api_json_bool(&c, root, "domain_disabled", "domain_disabled", &def->domain_disabled);

    /* Tyk reads "certificates"; its docs write "certificate". Accept both. */
    api_json_string_array(&c, root, "certificates", "certificates", &def->certificates,
                          &def->ncertificates);
    if (def->ncertificates == 0) {
        free(def->certificates);
        def->certificates = NULL;
        api_json_string_array(&c, root, "certificate", "certificate", &def->certificates,
                              &def->ncertificates);
    }

    api_json_bool(&c, root, "enable_proxy_protocol", "enable_proxy_protocol",
                  &def->enable_proxy_protocol);
    api_json_bool(&c, root, "use_mutual_tls_auth", "use_mutual_tls_auth",
                  &def->use_mutual_tls_auth);
    api_json_string_array(&c, root, "client_certificates", "client_certificates",
                          &def->client_certificates, &def->nclient_certificates);
    api_json_string_map(&c, root, "upstream_certificates", "upstream_certificates",
                        &def->upstream_certificates, &def->nupstream_certificates);
    api_json_bool(&c, root, "upstream_certificates_disabled", "upstream_certificates_disabled",
                  &def->upstream_certificates_disabled);
    api_json_string_map(&c, root, "pinned_public_keys", "pinned_public_keys",
                        &def->pinned_public_keys, &def->npinned_public_keys);
    api_json_bool(&c, root, "certificate_pinning_disabled", "certificate_pinning_disabled",
                  &def->certificate_pinning_disabled);
    api_json_bool(&c, root, "do_not_track", "do_not_track", &def->do_not_track);

    parse_uptime(&c, root, def);
    parse_ext(&c, root, &def->ext); /* first: the sentinel changes what proxy needs */
    parse_proxy(&c, root, def);

    json_decref(root);
    if (c.errors > 0) {
        api_def_free(def);
        return NULL;
    }
    return def;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void free_kv(struct api_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

void api_def_free(struct api_def *def)
{
    if (def == NULL)
        return;
    free(def->file);
    free(def->api_id);
    free(def->name);
    free(def->org_id);
    free(def->domain);
    free_strv(def->certificates, def->ncertificates);
    free_strv(def->client_certificates, def->nclient_certificates);
    free_kv(def->upstream_certificates, def->nupstream_certificates);
    free_kv(def->pinned_public_keys, def->npinned_public_keys);
    for (size_t i = 0; i < def->uptime_tests.nchecks; i++) {
        struct api_check *c = &def->uptime_tests.checks[i];
        free(c->url);
        free(c->protocol);
        for (size_t j = 0; j < c->ncommands; j++)
            free(c->commands[j].message);
        free(c->commands);
    }
    free(def->uptime_tests.checks);
    free(def->proxy.target_url);
    free(def->proxy.targets);
    struct api_service_discovery *sd = &def->proxy.service_discovery;
    free(sd->query_endpoint);
    free(sd->parent_data_path);
    free(sd->data_path);
    free(sd->port_data_path);
    free(sd->target_path);
    free_strv(def->proxy.transport.ssl_ciphers, def->proxy.transport.nssl_ciphers);
    free_strv(def->ext.tls_ciphers, def->ext.ntls_ciphers);
    free_strv(def->ext.alpn, def->ext.nalpn);
    free(def->ext.upstream_ca_file);
    free(def->ext.proxy_protocol_trusted);
    struct api_sentinel *sn = &def->ext.sentinel;
    free(sn->master_name);
    free(sn->addrs);
    free(sn->username);
    free(sn->password);
    free(sn->node_username);
    free(sn->node_password);
    free(def->proxy.transport.proxy_url);
    free(def);
}
