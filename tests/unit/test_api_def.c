/* Unit tests for apidefs/api_def.c: one Tyk classic API definition, parsed and
 * validated, with its diagnostics. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "api_def.h"
#include "api_regex.h"

#define BAD_FILE "apps/bad.json"

/* ---- helpers ------------------------------------------------------------------ */

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Parses JSON written with single quotes (turned into double quotes first), so
 * that the definitions in this file stay readable. */
static struct api_def *parse_sq(const char *file, const char *sq, struct api_diags *d)
{
    char *j = strdup(sq);
    assert_non_null(j);
    for (char *p = j; *p != '\0'; p++)
        if (*p == '\'')
            *p = '"';
    struct api_def *def = api_def_parse(file, j, strlen(j), d);
    free(j);
    return def;
}

static const struct api_diag *find_diag(const struct api_diags *d, const char *field)
{
    for (size_t i = 0; i < d->count; i++)
        if (strcmp(d->items[i].field, field) == 0)
            return &d->items[i];
    return NULL;
}

static void dump_diags(const struct api_diags *d)
{
    for (size_t i = 0; i < d->count; i++)
        print_message("  diag %zu: %s %s: %s: %s\n", i,
                      d->items[i].severity == API_SEV_ERROR ? "error" : "warning", d->items[i].file,
                      d->items[i].field, d->items[i].reason);
}

static void assert_diag(const struct api_diags *d, enum api_severity sev, const char *file,
                        const char *field, const char *needle)
{
    const struct api_diag *it = find_diag(d, field);
    if (it == NULL) {
        dump_diags(d);
        fail_msg("no diagnostic for field \"%s\"", field);
    }
    assert_int_equal(it->severity, sev);
    assert_string_equal(it->file, file);
    assert_true(strlen(it->reason) > 0);
    if (needle != NULL && strstr(it->reason, needle) == NULL)
        fail_msg("diagnostic for \"%s\" is \"%s\", which does not mention \"%s\"", field,
                 it->reason, needle);
}

/* The definition must be rejected with an error on `field`; with `only`, that
 * error must be the only one. */
static void expect_error_ex(const char *sq, const char *field, const char *needle, int only)
{
    struct api_diags d = {0};
    struct api_def *def = parse_sq(BAD_FILE, sq, &d);
    if (def != NULL) {
        api_def_free(def);
        api_diags_free(&d);
        fail_msg("definition should be rejected (field %s): %s", field, sq);
    }
    if (only && api_diags_errors(&d) != 1) {
        dump_diags(&d);
        fail_msg("expected exactly one error, got %zu", api_diags_errors(&d));
    }
    assert_diag(&d, API_SEV_ERROR, BAD_FILE, field, needle);
    api_diags_free(&d);
}

static void expect_error(const char *sq, const char *field, const char *needle)
{
    expect_error_ex(sq, field, needle, 1);
}

/* For inputs whose follow-on diagnostics are checked separately, see
 * test_no_misleading_follow_on_errors. */
static void expect_error_first(const char *sq, const char *field, const char *needle)
{
    expect_error_ex(sq, field, needle, 0);
}

static const struct api_kv *find_kv(const struct api_kv *kv, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(kv[i].key, key) == 0)
            return &kv[i];
    return NULL;
}

static void assert_target(const struct api_target *t, enum api_scheme scheme, const char *host,
                          unsigned port)
{
    assert_int_equal(t->scheme, scheme);
    assert_string_equal(t->host, host);
    assert_int_equal(t->port, port);
}

/* ---- every field -------------------------------------------------------------- */

static void test_full_definition(void **state)
{
    (void)state;
    size_t len;
    char *json = read_text(TEST_FIXTURES "/api_full.json", &len);
    struct api_diags d = {0};
    struct api_def *def = api_def_parse("apps/full.json", json, len, &d);
    free(json);
    if (def == NULL)
        dump_diags(&d);
    assert_non_null(def);

    /* Warnings only: service discovery is read but not supported, and an
     * expect without a message checks nothing. */
    assert_int_equal(d.count, 2);
    assert_int_equal(api_diags_errors(&d), 0);
    assert_diag(&d, API_SEV_WARNING, "apps/full.json",
                "proxy.service_discovery.use_discovery_service", "not supported");
    assert_diag(&d, API_SEV_WARNING, "apps/full.json",
                "uptime_tests.check_list[0].commands[3].message", "checks nothing");

    assert_string_equal(def->file, "apps/full.json");
    assert_string_equal(def->api_id, "full-api");
    assert_string_equal(def->name, "Full API");
    assert_string_equal(def->org_id, "org-1");
    assert_false(def->active);
    assert_int_equal(def->listen_port, 8443);
    assert_int_equal(def->protocol, API_PROTO_TLS);
    assert_string_equal(def->domain, "DB.Example.com");
    assert_false(def->domain_disabled);
    assert_string_equal(api_def_domain(def), "DB.Example.com");

    assert_int_equal(def->ncertificates, 2);
    assert_string_equal(def->certificates[0], "cert-a");
    assert_string_equal(def->certificates[1], "/etc/tcpgate/certs/b.pem");
    assert_true(def->enable_proxy_protocol);
    assert_true(def->use_mutual_tls_auth);
    assert_int_equal(def->nclient_certificates, 3);
    assert_string_equal(def->client_certificates[0], "client-1");
    assert_string_equal(def->client_certificates[1], "client-2");
    assert_string_equal(def->client_certificates[2], "client-3");

    assert_int_equal(def->nupstream_certificates, 2);
    const struct api_kv *kv = find_kv(def->upstream_certificates, 2, "*");
    assert_non_null(kv);
    assert_string_equal(kv->value, "up-any");
    kv = find_kv(def->upstream_certificates, 2, "*.internal");
    assert_non_null(kv);
    assert_string_equal(kv->value, "up-internal");
    assert_true(def->upstream_certificates_disabled);
    assert_int_equal(def->npinned_public_keys, 1);
    assert_string_equal(def->pinned_public_keys[0].key, "db.internal:5432");
    assert_string_equal(def->pinned_public_keys[0].value, "key-1,key-2");
    assert_true(def->certificate_pinning_disabled);
    assert_true(def->do_not_track);

    /* uptime_tests */
    assert_true(def->uptime_tests.disabled);
    assert_int_equal(def->uptime_tests.expire_utime_after, 3600);
    assert_int_equal(def->uptime_tests.recheck_wait, 12);
    assert_int_equal(def->uptime_tests.nchecks, 3);

    const struct api_check *c0 = &def->uptime_tests.checks[0];
    assert_string_equal(c0->url, "tls://10.0.0.1:5432");
    assert_target(&c0->target, API_SCHEME_TLS, "10.0.0.1", 5432);
    assert_string_equal(c0->protocol, "tls");
    assert_int_equal(c0->timeout_ms, 2000); /* 2000000000 ns */
    assert_true(c0->enable_proxy_protocol);
    assert_int_equal(c0->ncommands, 4);
    assert_int_equal(c0->commands[0].kind, API_CMD_SEND);
    assert_int_equal(c0->commands[0].len, 6);
    assert_memory_equal(c0->commands[0].message, "PING\r\n", 7); /* real CR LF, then NUL */
    assert_int_equal(c0->commands[1].kind, API_CMD_EXPECT);
    assert_int_equal(c0->commands[1].len, 5);
    assert_string_equal(c0->commands[1].message, "+PONG");
    assert_int_equal(c0->commands[2].kind, API_CMD_SEND);
    assert_int_equal(c0->commands[2].len, 3); /* "A\u0000B" keeps its NUL */
    assert_memory_equal(c0->commands[2].message, "A\0B", 3);
    assert_int_equal(c0->commands[3].kind, API_CMD_EXPECT);
    assert_non_null(c0->commands[3].message); /* no message: empty */
    assert_int_equal(c0->commands[3].len, 0);
    assert_string_equal(c0->commands[3].message, "");

    const struct api_check *c1 = &def->uptime_tests.checks[1];
    assert_string_equal(c1->url, "10.0.0.2:5432");
    assert_target(&c1->target, API_SCHEME_TCP, "10.0.0.2", 5432);
    assert_string_equal(c1->protocol, "tcp");
    assert_int_equal(c1->timeout_ms, 2000); /* "2s" */
    assert_false(c1->enable_proxy_protocol);
    assert_int_equal(c1->ncommands, 0);

    const struct api_check *c2 = &def->uptime_tests.checks[2];
    assert_target(&c2->target, API_SCHEME_TCP, "::1", 5432);
    assert_null(c2->protocol);
    assert_int_equal(c2->timeout_ms, 1); /* 1 ns rounds up */
    assert_int_equal(c2->ncommands, 0);

    /* proxy */
    assert_string_equal(def->proxy.target_url, "tls://db.internal:5432");
    assert_target(&def->proxy.target, API_SCHEME_TLS, "db.internal", 5432);
    assert_true(def->proxy.enable_load_balancing);
    assert_int_equal(def->proxy.ntargets, 3);
    assert_target(&def->proxy.targets[0], API_SCHEME_TLS, "10.0.0.1", 5432);
    assert_target(&def->proxy.targets[1], API_SCHEME_TCP, "10.0.0.2", 5432);
    assert_target(&def->proxy.targets[2], API_SCHEME_TLS, "10.0.0.1", 5432); /* repeat kept */
    assert_true(def->proxy.check_host_against_uptime_tests);

    const struct api_service_discovery *sd = &def->proxy.service_discovery;
    assert_true(sd->use_discovery_service);
    assert_string_equal(sd->query_endpoint, "http://consul:8500/v1/catalog/service/db");
    assert_true(sd->use_nested_query);
    assert_string_equal(sd->parent_data_path, "node");
    assert_string_equal(sd->data_path, "Address");
    assert_string_equal(sd->port_data_path, "ServicePort");
    assert_string_equal(sd->target_path, "/api");
    assert_true(sd->use_target_list);
    assert_int_equal(sd->cache_timeout, 60);
    assert_true(sd->cache_disabled);
    assert_true(sd->endpoint_returns_list);

    const struct api_transport *tr = &def->proxy.transport;
    assert_true(tr->ssl_insecure_skip_verify);
    assert_int_equal(tr->nssl_ciphers, 2);
    assert_string_equal(tr->ssl_ciphers[0], "TLS_AES_128_GCM_SHA256");
    assert_string_equal(tr->ssl_ciphers[1], "ECDHE-RSA-AES128-GCM-SHA256");
    assert_int_equal(tr->ssl_min_version, 771);
    assert_int_equal(tr->ssl_max_version, 772);
    assert_true(tr->ssl_force_common_name_check);
    assert_string_equal(tr->proxy_url, "http://proxy:3128");

    /* the extension */
    assert_int_equal(def->ext.connect_timeout_ms, 250);
    assert_int_equal(def->ext.idle_timeout_ms, 600000);
    assert_int_equal(def->ext.max_connection_duration_ms, 5400000);
    assert_int_equal(def->ext.max_connect_attempts, 5);
    assert_int_equal(def->ext.drain_timeout_ms, 15000);

    const struct api_target *ups = NULL;
    assert_int_equal(api_def_upstreams(def, &ups), 3);
    assert_ptr_equal(ups, def->proxy.targets);

    api_def_free(def);
    api_diags_free(&d);
}

static void test_minimal_defaults(void **state)
{
    (void)state;
    struct api_diags d = {0};
    struct api_def *def = parse_sq("apps/my-api.json",
                                   "{'listen_port': 6379, 'protocol': 'tcp',"
                                   " 'proxy': {'target_url': 'localhost:6379'}}",
                                   &d);
    assert_non_null(def);
    assert_int_equal(d.count, 0);
    assert_string_equal(def->file, "apps/my-api.json");
    assert_string_equal(def->api_id, "my-api"); /* the file's stem */
    assert_null(def->name);
    assert_null(def->org_id);
    assert_true(def->active);
    assert_int_equal(def->listen_port, 6379);
    assert_int_equal(def->protocol, API_PROTO_TCP);
    assert_string_equal(def->domain, "");
    assert_string_equal(api_def_domain(def), "");
    assert_int_equal(def->ncertificates, 0);
    assert_int_equal(def->nclient_certificates, 0);
    assert_int_equal(def->nupstream_certificates, 0);
    assert_int_equal(def->npinned_public_keys, 0);
    assert_false(def->enable_proxy_protocol);
    assert_false(def->use_mutual_tls_auth);
    assert_false(def->do_not_track);
    assert_false(def->uptime_tests.disabled);
    assert_int_equal(def->uptime_tests.nchecks, 0);
    assert_string_equal(def->proxy.target_url, "localhost:6379");
    assert_target(&def->proxy.target, API_SCHEME_TCP, "localhost", 6379);
    assert_false(def->proxy.enable_load_balancing);
    assert_false(def->proxy.check_host_against_uptime_tests);
    assert_int_equal(def->proxy.ntargets, 0);
    assert_int_equal(def->proxy.transport.ssl_min_version, 0);
    assert_null(def->proxy.transport.proxy_url);

    /* extension defaults */
    assert_int_equal(def->ext.connect_timeout_ms, 5000);
    assert_int_equal(def->ext.idle_timeout_ms, 3600000);
    assert_int_equal(def->ext.max_connection_duration_ms, 0);
    assert_int_equal(def->ext.max_connect_attempts, 3);
    assert_int_equal(def->ext.drain_timeout_ms, -1);
    assert_int_equal(API_DEFAULT_CONNECT_TIMEOUT_MS, 5000);
    assert_int_equal(API_DEFAULT_IDLE_TIMEOUT_MS, 3600000);
    assert_int_equal(API_DEFAULT_MAX_CONNECT_ATTEMPTS, 3);

    const struct api_target *ups = NULL;
    assert_int_equal(api_def_upstreams(def, &ups), 1);
    assert_ptr_equal(ups, &def->proxy.target);
    api_def_free(def);
    api_diags_free(&d);
}

static void test_api_id_from_file_stem(void **state)
{
    (void)state;
    static const char *const files[][2] = {
        {"/etc/tcpgate/apps/redis.json", "redis"},
        {"plain", "plain"},
        {"dir/a.b.json", "a.b"},
        {"dir/.hidden", ".hidden"},
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        struct api_diags d = {0};
        struct api_def *def = parse_sq(files[i][0],
                                       "{'api_id': '', 'listen_port': 1, 'protocol': 'tcp',"
                                       " 'proxy': {'target_url': 'h:1'}}",
                                       &d);
        assert_non_null(def);
        assert_string_equal(def->api_id, files[i][1]);
        api_def_free(def);
        api_diags_free(&d);
    }
}

static void test_certificate_alias(void **state)
{
    (void)state;
    struct api_diags d = {0};
    /* Tyk's docs write "certificate"; Tyk reads "certificates". Both work. */
    struct api_def *def = parse_sq("a.json",
                                   "{'listen_port': 1, 'protocol': 'tls',"
                                   " 'certificate': ['c1', 'c2'],"
                                   " 'proxy': {'target_url': 'h:1'}}",
                                   &d);
    assert_non_null(def);
    assert_int_equal(def->ncertificates, 2);
    assert_string_equal(def->certificates[0], "c1");
    assert_string_equal(def->certificates[1], "c2");
    api_def_free(def);

    /* With both, "certificates" wins. */
    def = parse_sq("a.json",
                   "{'listen_port': 1, 'protocol': 'tls',"
                   " 'certificates': ['real'], 'certificate': ['alias'],"
                   " 'proxy': {'target_url': 'h:1'}}",
                   &d);
    assert_non_null(def);
    assert_int_equal(def->ncertificates, 1);
    assert_string_equal(def->certificates[0], "real");
    api_def_free(def);

    /* An empty "certificates" falls back to the alias. */
    def = parse_sq("a.json",
                   "{'listen_port': 1, 'protocol': 'tls',"
                   " 'certificates': [], 'certificate': ['alias'],"
                   " 'proxy': {'target_url': 'h:1'}}",
                   &d);
    assert_non_null(def);
    assert_int_equal(def->ncertificates, 1);
    assert_string_equal(def->certificates[0], "alias");
    api_def_free(def);
    assert_int_equal(d.count, 0);
    api_diags_free(&d);
}

/* The simplest definition in Tyk's TCP docs, copied as written. */
static void test_tyk_simplest_definition(void **state)
{
    (void)state;
    static const char json[] = "{\n"
                               "  \"listen_port\": 30001,\n"
                               "  \"protocol\": \"tls\",\n"
                               "  \"certificate\": [\"<cert-id>\"],\n"
                               "  \"proxy\": {\n"
                               "    \"target_url\": \"tls://upstream:9191\"\n"
                               "  }\n"
                               "}\n";
    struct api_diags d = {0};
    struct api_def *def = api_def_parse("apps/simple.json", json, strlen(json), &d);
    assert_non_null(def);
    assert_int_equal(d.count, 0);
    assert_int_equal(def->listen_port, 30001);
    assert_int_equal(def->protocol, API_PROTO_TLS);
    assert_int_equal(def->ncertificates, 1);
    assert_string_equal(def->certificates[0], "<cert-id>");
    assert_target(&def->proxy.target, API_SCHEME_TLS, "upstream", 9191);
    assert_string_equal(def->api_id, "simple");
    const struct api_target *ups = NULL;
    assert_int_equal(api_def_upstreams(def, &ups), 1);
    assert_target(&ups[0], API_SCHEME_TLS, "upstream", 9191);
    api_def_free(def);
    api_diags_free(&d);
}

/* Pulls the Redis Sentinel example out of Tyk's docs page: the ```js block after
 * "Complex example". */
static char *sentinel_json(size_t *len)
{
    size_t n;
    char *page = read_text(TEST_SEEDS "/004_773818b118bf6cf2.txt", &n);
    const char *sec = strstr(page, "Complex example");
    assert_non_null(sec);
    const char *fence = strstr(sec, "```js");
    assert_non_null(fence);
    const char *start = strchr(fence, '\n');
    assert_non_null(start);
    start++;
    const char *end = strstr(start, "\n```");
    assert_non_null(end);
    *len = (size_t)(end - start) + 1;
    char *json = malloc(*len + 1);
    assert_non_null(json);
    memcpy(json, start, *len);
    json[*len] = '\0';
    free(page);
    return json;
}

static void test_tyk_redis_sentinel_example(void **state)
{
    (void)state;
    size_t len;
    char *json = sentinel_json(&len);
    struct api_diags d = {0};
    struct api_def *def = api_def_parse("apps/redis-sentinel.json", json, len, &d);
    free(json);
    if (def == NULL)
        dump_diags(&d);
    assert_non_null(def);
    assert_int_equal(api_diags_errors(&d), 0);

    /* The docs put the two proxy flags at the top level: accepted, with warnings. */
    assert_int_equal(d.count, 2);
    assert_diag(&d, API_SEV_WARNING, "apps/redis-sentinel.json", "enable_load_balancing",
                "proxy.enable_load_balancing");
    assert_diag(&d, API_SEV_WARNING, "apps/redis-sentinel.json", "check_host_against_uptime_tests",
                "proxy.check_host_against_uptime_tests");

    assert_string_equal(def->name, "Redis Sentinel");
    assert_string_equal(def->api_id, "redis-sentinel");
    assert_int_equal(def->listen_port, 6379);
    assert_int_equal(def->protocol, API_PROTO_TCP);
    assert_true(def->proxy.enable_load_balancing);
    assert_true(def->proxy.check_host_against_uptime_tests);
    assert_null(def->proxy.target_url);
    assert_int_equal(def->proxy.ntargets, 2);
    assert_target(&def->proxy.targets[0], API_SCHEME_TCP, "192.168.10.1", 6379);
    assert_target(&def->proxy.targets[1], API_SCHEME_TCP, "192.168.10.2", 6379);

    assert_int_equal(def->uptime_tests.nchecks, 2);
    static const char *const urls[] = {"192.168.10.1:6379", "192.168.10.2:6379"};
    static const char *const hosts[] = {"192.168.10.1", "192.168.10.2"};
    for (size_t i = 0; i < 2; i++) {
        const struct api_check *c = &def->uptime_tests.checks[i];
        assert_string_equal(c->url, urls[i]);
        assert_target(&c->target, API_SCHEME_TCP, hosts[i], 6379);
        assert_null(c->protocol);
        assert_int_equal(c->timeout_ms, 0);
        assert_int_equal(c->ncommands, 6);
        assert_int_equal(c->commands[0].kind, API_CMD_SEND);
        assert_int_equal(c->commands[0].len, 6);
        assert_memory_equal(c->commands[0].message, "PING\r\n", 6);
        assert_int_equal(c->commands[1].kind, API_CMD_EXPECT);
        assert_string_equal(c->commands[1].message, "+PONG");
        assert_int_equal(c->commands[2].kind, API_CMD_SEND);
        assert_string_equal(c->commands[2].message, "info  replication\r\n");
        assert_int_equal(c->commands[3].kind, API_CMD_EXPECT);
        assert_string_equal(c->commands[3].message, "role:master");
        assert_int_equal(c->commands[4].kind, API_CMD_SEND);
        assert_string_equal(c->commands[4].message, "QUIT\r\n");
        assert_int_equal(c->commands[5].kind, API_CMD_SEND);
        assert_string_equal(c->commands[5].message, "+OK");
    }

    const struct api_target *ups = NULL;
    assert_int_equal(api_def_upstreams(def, &ups), 2);
    assert_ptr_equal(ups, def->proxy.targets);
    api_def_free(def);
    api_diags_free(&d);
}

/* Fields Tyk has and tcpgate does not read are ignored, not errors. */
static void test_unknown_top_level_fields_ignored(void **state)
{
    (void)state;
    struct api_diags d = {0};
    struct api_def *def = parse_sq("a.json",
                                   "{'listen_port': 1, 'protocol': 'tcp',"
                                   " 'version_data': {'not_versioned': true},"
                                   " 'auth': {'auth_header_name': 'x'},"
                                   " 'use_keyless': true, 'custom_middleware': [1, 2],"
                                   " 'proxy': {'target_url': 'h:1', 'listen_path': '/x'}}",
                                   &d);
    assert_non_null(def);
    assert_int_equal(d.count, 0);
    api_def_free(def);
    api_diags_free(&d);
}

static void test_misplaced_proxy_flags_warn(void **state)
{
    (void)state;
    struct api_diags d = {0};
    struct api_def *def = parse_sq("apps/lb.json",
                                   "{'listen_port': 1, 'protocol': 'tcp',"
                                   " 'enable_load_balancing': true,"
                                   " 'check_host_against_uptime_tests': true,"
                                   " 'proxy': {'target_list': ['a:1', 'b:2']}}",
                                   &d);
    assert_non_null(def);
    assert_int_equal(api_diags_errors(&d), 0);
    assert_int_equal(d.count, 2);
    assert_diag(&d, API_SEV_WARNING, "apps/lb.json", "enable_load_balancing", "proxy.");
    assert_diag(&d, API_SEV_WARNING, "apps/lb.json", "check_host_against_uptime_tests", "proxy.");
    assert_true(def->proxy.enable_load_balancing);
    assert_true(def->proxy.check_host_against_uptime_tests);
    assert_int_equal(def->proxy.ntargets, 2);
    api_def_free(def);
    api_diags_free(&d);

    /* Placed correctly: no warning. */
    def = parse_sq("apps/lb.json",
                   "{'listen_port': 1, 'protocol': 'tcp',"
                   " 'proxy': {'enable_load_balancing': true,"
                   " 'check_host_against_uptime_tests': true, 'target_list': ['a:1']}}",
                   &d);
    assert_non_null(def);
    assert_int_equal(d.count, 0);
    assert_true(def->proxy.enable_load_balancing);
    assert_true(def->proxy.check_host_against_uptime_tests);
    api_def_free(def);
    api_diags_free(&d);
}

static void test_upstreams_and_domain(void **state)
{
    (void)state;
    struct api_diags d = {0};
    /* Load balancing off: the single target_url, even with a target_list. */
    struct api_def *def = parse_sq("a.json",
                                   "{'listen_port': 1, 'protocol': 'tcp', 'domain': 'x.example',"
                                   " 'domain_disabled': true,"
                                   " 'proxy': {'target_url': 'tls://main:1',"
                                   " 'target_list': ['a:1', 'b:2']}}",
                                   &d);
    assert_non_null(def);
    const struct api_target *ups = NULL;
    assert_int_equal(api_def_upstreams(def, &ups), 1);
    assert_target(&ups[0], API_SCHEME_TLS, "main", 1);
    assert_string_equal(def->domain, "x.example");
    assert_string_equal(api_def_domain(def), ""); /* disabled */
    api_def_free(def);

    /* Load balancing on: the list, with repeats kept for weighting. */
    def = parse_sq("a.json",
                   "{'listen_port': 1, 'protocol': 'tcp', 'domain': 'x.example',"
                   " 'proxy': {'target_url': 'tls://main:1', 'enable_load_balancing': true,"
                   " 'target_list': ['a:1', 'a:1', 'b:2']}}",
                   &d);
    assert_non_null(def);
    assert_int_equal(api_def_upstreams(def, &ups), 3);
    assert_target(&ups[0], API_SCHEME_TCP, "a", 1);
    assert_target(&ups[1], API_SCHEME_TCP, "a", 1);
    assert_target(&ups[2], API_SCHEME_TCP, "b", 2);
    assert_string_equal(api_def_domain(def), "x.example");
    api_def_free(def);
    assert_int_equal(d.count, 0);
    api_diags_free(&d);
}

static void test_protocol_name(void **state)
{
    (void)state;
    assert_string_equal(api_protocol_name(API_PROTO_TCP), "tcp");
    assert_string_equal(api_protocol_name(API_PROTO_TLS), "tls");
}

/* ---- errors ------------------------------------------------------------------- */

static void test_listen_port_errors(void **state)
{
    (void)state;
    expect_error("{'protocol': 'tcp', 'proxy': {'target_url': 'h:1'}}", "listen_port", "missing");
    expect_error("{'listen_port': null, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'}}",
                 "listen_port", "missing");
    expect_error("{'listen_port': 0, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'}}",
                 "listen_port", "out of range");
    expect_error("{'listen_port': 70000, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'}}",
                 "listen_port", "70000");
    expect_error("{'listen_port': 65536, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'}}",
                 "listen_port", "out of range");
    expect_error("{'listen_port': -1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'}}",
                 "listen_port", "out of range");
    expect_error("{'listen_port': '8080', 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'}}",
                 "listen_port", "expected an integer, got a string");
    expect_error("{'listen_port': 80.5, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'}}",
                 "listen_port", "expected an integer");
}

static void test_protocol_errors(void **state)
{
    (void)state;
    expect_error("{'listen_port': 1, 'protocol': 'udp', 'proxy': {'target_url': 'h:1'}}",
                 "protocol", "unknown protocol \"udp\"");
    expect_error("{'listen_port': 1, 'protocol': 'TCP', 'proxy': {'target_url': 'h:1'}}",
                 "protocol", "unknown protocol");
    expect_error("{'listen_port': 1, 'protocol': 'http', 'proxy': {'target_url': 'h:1'}}",
                 "protocol", "HTTP");
    expect_error("{'listen_port': 1, 'protocol': 'https', 'proxy': {'target_url': 'h:1'}}",
                 "protocol", "HTTP");
    expect_error("{'listen_port': 1, 'protocol': 'h2c', 'proxy': {'target_url': 'h:1'}}",
                 "protocol", "HTTP");
    expect_error("{'listen_port': 1, 'proxy': {'target_url': 'h:1'}}", "protocol", "missing");
    expect_error("{'listen_port': 1, 'protocol': '', 'proxy': {'target_url': 'h:1'}}", "protocol",
                 "missing");
    expect_error_first("{'listen_port': 1, 'protocol': 6, 'proxy': {'target_url': 'h:1'}}",
                       "protocol", "expected a string");
}

static void test_target_errors(void **state)
{
    (void)state;
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'tcp://h'}}",
                 "proxy.target_url", "no port");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'http://h:80'}}",
                 "proxy.target_url", "unknown scheme");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'tcp://b@d:80'}}",
                 "proxy.target_url", "invalid host");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'tcp://h:0'}}",
                 "proxy.target_url", "out of range");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'enable_load_balancing': true,"
                 " 'target_list': ['a:1', 'tcp://b', 'c:3']}}",
                 "proxy.target_list[1]", "no port");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'enable_load_balancing': true,"
                 " 'target_list': ['a:1', 'ftp://b:21']}}",
                 "proxy.target_list[1]", "unknown scheme");
    expect_error_first("{'listen_port': 1, 'protocol': 'tcp', 'proxy': "
                       "{'enable_load_balancing': true, 'target_list': ['a:1', 5]}}",
                       "proxy.target_list[1]", "expected a string");
    expect_error_first("{'listen_port': 1, 'protocol': 'tcp', 'proxy': "
                       "{'enable_load_balancing': true, 'target_list': 'a:1'}}",
                       "proxy.target_list", "expected an array");
}

static void test_upstream_missing_errors(void **state)
{
    (void)state;
    expect_error("{'listen_port': 1, 'protocol': 'tcp',"
                 " 'proxy': {'enable_load_balancing': true, 'target_list': []}}",
                 "proxy.target_list", "empty");
    expect_error("{'listen_port': 1, 'protocol': 'tcp',"
                 " 'proxy': {'enable_load_balancing': true, 'target_url': 'h:1'}}",
                 "proxy.target_list", "empty");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {}}", "proxy.target_url",
                 "missing");
    expect_error("{'listen_port': 1, 'protocol': 'tcp'}", "proxy.target_url", "missing");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': ''}}",
                 "proxy.target_url", "missing");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_list': ['a:1']}}",
                 "proxy.target_url", "enable_load_balancing");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': 'h:1'}", "proxy",
                 "expected an object");
}

static void test_extension_errors(void **state)
{
    (void)state;
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'tcpgate': {'conect_timeout': '5s'}}",
                 "tcpgate.conect_timeout", "unknown field");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'tcpgate': {'connect_timeout': '5'}}",
                 "tcpgate.connect_timeout", "\"5\"");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'tcpgate': {'idle_timeout': 'soon'}}",
                 "tcpgate.idle_timeout", "soon");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'tcpgate': {'max_connection_duration': 5000}}",
                 "tcpgate.max_connection_duration", "duration string");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'tcpgate': {'drain_timeout': '-1s'}}",
                 "tcpgate.drain_timeout", "-1s");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'tcpgate': {'connect_timeout': '0s'}}",
                 "tcpgate.connect_timeout", "greater than 0");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'tcpgate': {'max_connect_attempts': 0}}",
                 "tcpgate.max_connect_attempts", "between 1 and 100");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'tcpgate': {'max_connect_attempts': 101}}",
                 "tcpgate.max_connect_attempts", "101");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'tcpgate': {'max_connect_attempts': '3'}}",
                 "tcpgate.max_connect_attempts", "expected an integer");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'tcpgate': []}",
                 "tcpgate", "expected an object");
}

static void test_extension_edge_values(void **state)
{
    (void)state;
    struct api_diags d = {0};
    struct api_def *def = parse_sq("a.json",
                                   "{'listen_port': 1, 'protocol': 'tcp',"
                                   " 'proxy': {'target_url': 'h:1'},"
                                   " 'tcpgate': {'idle_timeout': 0, 'drain_timeout': '0',"
                                   " 'max_connection_duration': '1us',"
                                   " 'max_connect_attempts': 100}}",
                                   &d);
    assert_non_null(def);
    assert_int_equal(d.count, 0);
    assert_int_equal(def->ext.connect_timeout_ms, 5000);
    assert_int_equal(def->ext.idle_timeout_ms, 0);
    assert_int_equal(def->ext.drain_timeout_ms, 0);
    assert_int_equal(def->ext.max_connection_duration_ms, 1);
    assert_int_equal(def->ext.max_connect_attempts, 100);
    api_def_free(def);
    api_diags_free(&d);
}

static void test_check_errors(void **state)
{
    (void)state;
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'uptime_tests': {'check_list': [{'url': 'h:1'}, {'url': 'h'}]}}",
                 "uptime_tests.check_list[1].url", "no port");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'uptime_tests': {'check_list': [{'commands': []}]}}",
                 "uptime_tests.check_list[0].url", "missing");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'uptime_tests': {'check_list': [{'url': 'h:1', 'protocol': 'http'}]}}",
                 "uptime_tests.check_list[0].protocol", "unknown check protocol");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'uptime_tests': {'check_list': [{'url': 'h:1', 'timeout': -5}]}}",
                 "uptime_tests.check_list[0].timeout", "negative");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'uptime_tests': {'check_list': [{'url': 'h:1', 'timeout': '2 s'}]}}",
                 "uptime_tests.check_list[0].timeout", "2 s");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'uptime_tests': {'check_list': [{'url': 'h:1', 'timeout': 1.5}]}}",
                 "uptime_tests.check_list[0].timeout", "nanoseconds");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'uptime_tests': {'check_list': [{'url': 'h:1', 'commands':"
                 " [{'name': 'send', 'message': 'x'}, {'name': 'recv', 'message': 'y'}]}]}}",
                 "uptime_tests.check_list[0].commands[1].name", "unknown command \"recv\"");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'uptime_tests': {'check_list': [{'url': 'h:1', 'commands':"
                 " [{'message': 'x'}]}]}}",
                 "uptime_tests.check_list[0].commands[0].name", "missing");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'uptime_tests': {'check_list': [{'url': 'h:1', 'commands':"
                 " [{'name': 'send', 'message': 7}]}]}}",
                 "uptime_tests.check_list[0].commands[0].message", "expected a string");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'uptime_tests': {'check_list': [{'url': 'h:1', 'commands': ['send']}]}}",
                 "uptime_tests.check_list[0].commands[0]", "expected an object");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'uptime_tests': {'check_list': [{'url': 'h:1', 'commands': {}}]}}",
                 "uptime_tests.check_list[0].commands", "expected an array");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'uptime_tests': {'check_list': {'url': 'h:1'}}}",
                 "uptime_tests.check_list", "expected an array");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'uptime_tests': {'check_list': ['h:1']}}",
                 "uptime_tests.check_list[0]", "expected an object");
}

/* Parses a definition with one check command of `kind` and `message`. */
static void expect_regex_error(const char *kind, const char *message, const char *needle)
{
    char sq[512];
    snprintf(sq, sizeof(sq),
             "{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
             " 'uptime_tests': {'check_list': [{'url': 'h:1', 'commands':"
             " [{'name': '%s', 'message': '%s'}]}]}}",
             kind, message);
    expect_error(sq, "uptime_tests.check_list[0].commands[0].message", needle);
}

/* A definition whose expect_regex would exhaust regcomp is rejected before
 * regcomp sees it. (Found by the fuzz targets: "a{1,32767}", ten bytes, took
 * about 6 GB and 7 s in glibc's regcomp; patterns of a few dozen bytes
 * chaining groups that can match nothing, or stacking '?' and '+', took over
 * a minute; at every load and reload of the definition.) Ordinary patterns,
 * intervals included, still load. */
static void test_regex_size_limits(void **state)
{
    (void)state;
    static const char *const too_large[] = {"a{1,32767}",     "(a{1,100}){1,100}", "x{1001}",
                                            "(ab|cd){1,400}", "(a+){600}",         "a{1\\\\,2000}",
                                            "(a?){1000}"};
    for (size_t i = 0; i < sizeof(too_large) / sizeof(too_large[0]); i++)
        expect_regex_error("expect_regex", too_large[i], "too large");
    static const char *const too_many_groups[] = {
        "((a?)*|(b?)?){1,14}", "(ab){17}", "(()|()?|()*){1\\\\,12}", "(()|()?||()*){\\\\0,13}",
        "((a?)*|(b?)?)?((a?)*|(b?)?)?((a?)*|(b?)?)?"
        "((a?)*|(b?)?)?((a?)*|(b?)?)?((a?)*|(b?)?)?"};
    for (size_t i = 0; i < sizeof(too_many_groups) / sizeof(too_many_groups[0]); i++)
        expect_regex_error("expect_not_regex", too_many_groups[i], "groups");
    static const char *const stacked[] = {"a??", "a*+", "a+{2}", "a{2}{3}",
                                          "0?z????????????????????????++++??+?????"};
    for (size_t i = 0; i < sizeof(stacked) / sizeof(stacked[0]); i++)
        expect_regex_error("expect_regex", stacked[i], "in a row");
    /* 17 nested groups: regcomp's parser recurses once per group. */
    char deep[128] = "";
    for (int i = 0; i < API_REGEX_MAX_GROUPS + 1; i++)
        strcat(deep, "(");
    strcat(deep, "a");
    for (int i = 0; i < API_REGEX_MAX_GROUPS + 1; i++)
        strcat(deep, ")");
    expect_regex_error("expect_regex", deep, "groups");

    char err[256];
    static const char *const fine[] = {"role:(master|primary)",
                                       "^\\+PONG\r?$",
                                       "([0-9]{1,3}[.]){3}[0-9]{1,3}",
                                       "[[:digit:]]{1,5}",
                                       "x{400}",
                                       "(a{1,10}){1,16}",
                                       "[]{]{99}",
                                       "a{,200}b{200,}",
                                       "(ab){16}",
                                       "a{",
                                       "{5}",
                                       "(",
                                       ")",
                                       "a|{2}",
                                       "(a*)?",
                                       "a{2}b{3}",
                                       "a{x}?"};
    for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++)
        if (api_regex_check(fine[i], err, sizeof(err)) != 0)
            fail_msg("\"%s\" should pass the size check, got: %s", fine[i], err);
    /* 16 nested groups are fine. */
    deep[0] = '\0';
    for (int i = 0; i < API_REGEX_MAX_GROUPS; i++)
        strcat(deep, "(");
    strcat(deep, "a");
    for (int i = 0; i < API_REGEX_MAX_GROUPS; i++)
        strcat(deep, ")");
    assert_int_equal(api_regex_check(deep, err, sizeof(err)), 0);
    /* A definition with an interval loads. */
    struct api_diags d = {0};
    struct api_def *def =
        parse_sq("a.json",
                 "{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'uptime_tests': {'check_list': [{'url': 'h:1', 'commands':"
                 " [{'name': 'expect_regex', 'message': '([0-9]{1,3}[.]){3}[0-9]{1,3}'}]}]}}",
                 &d);
    assert_non_null(def);
    assert_int_equal(d.count, 0);
    api_def_free(def);
    api_diags_free(&d);
}

static void test_field_type_errors(void **state)
{
    (void)state;
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'active': 'yes',"
                 " 'proxy': {'target_url': 'h:1'}}",
                 "active", "expected true or false");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'certificates': 'c1',"
                 " 'proxy': {'target_url': 'h:1'}}",
                 "certificates", "expected an array");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'client_certificates': ['a', 1],"
                 " 'proxy': {'target_url': 'h:1'}}",
                 "client_certificates[1]", "expected a string");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'upstream_certificates': {'*': 1},"
                 " 'proxy': {'target_url': 'h:1'}}",
                 "upstream_certificates.*", "expected a string");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'pinned_public_keys': ['k'],"
                 " 'proxy': {'target_url': 'h:1'}}",
                 "pinned_public_keys", "expected an object");
    expect_error("{'listen_port': 1, 'protocol': 'tcp',"
                 " 'proxy': {'target_url': 'h:1', 'transport': {'ssl_min_version': 700}}}",
                 "proxy.transport.ssl_min_version", "unknown TLS version 700");
    expect_error("{'listen_port': 1, 'protocol': 'tcp',"
                 " 'proxy': {'target_url': 'h:1', 'transport': {'ssl_max_version': 773}}}",
                 "proxy.transport.ssl_max_version", "773");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'uptime_tests': {'disabled': 1},"
                 " 'proxy': {'target_url': 'h:1'}}",
                 "uptime_tests.disabled", "expected true or false");
}

static void test_invalid_json(void **state)
{
    (void)state;
    static const char json[] = "{\n  \"listen_port\": 80,\n  \"protocol\" \"tcp\"\n}";
    struct api_diags d = {0};
    struct api_def *def = api_def_parse("apps/broken.json", json, strlen(json), &d);
    assert_null(def);
    assert_int_equal(d.count, 1);
    assert_diag(&d, API_SEV_ERROR, "apps/broken.json", "(json)", "invalid JSON");
    assert_non_null(strstr(d.items[0].reason, "line 3"));
    assert_non_null(strstr(d.items[0].reason, "column 18"));
    api_diags_free(&d);

    /* Truncated text and the empty file are invalid JSON too. */
    static const char cut[] = "{\"listen_port\": 1";
    def = api_def_parse("apps/cut.json", cut, strlen(cut), &d);
    assert_null(def);
    assert_diag(&d, API_SEV_ERROR, "apps/cut.json", "(json)", "line 1");
    api_diags_free(&d);
    def = api_def_parse("apps/empty.json", "", 0, &d);
    assert_null(def);
    assert_diag(&d, API_SEV_ERROR, "apps/empty.json", "(json)", "column");
    api_diags_free(&d);
}

/* The health-check snippet in Tyk's docs is not valid JSON as printed. */
static void test_tyk_docs_health_check_snippet_invalid(void **state)
{
    (void)state;
    static const char json[] = "{\n"
                               "\t\"uptime_tests\": {\n"
                               "\t  \"check_list\": [\n"
                               "\t    { \"url\": \"127.0.0.1:6379\" },\n"
                               "        \"commands\": []\n"
                               "\t  ]\n"
                               "\t}\n"
                               "}\n";
    struct api_diags d = {0};
    struct api_def *def = api_def_parse("apps/snippet.json", json, strlen(json), &d);
    assert_null(def);
    assert_int_equal(d.count, 1);
    assert_diag(&d, API_SEV_ERROR, "apps/snippet.json", "(json)", "line 5");
    api_diags_free(&d);
}

static void test_top_level_not_object(void **state)
{
    (void)state;
    expect_error("[{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'}}]",
                 "(json)", "expected an object at the top level, got an array");
    /* jansson refuses scalars at the top level outright. */
    expect_error("'text'", "(json)", "invalid JSON");
    expect_error("42", "(json)", "invalid JSON");
}

/* Several problems in one file are all reported, each against its own field. */
static void test_all_errors_reported(void **state)
{
    (void)state;
    struct api_diags d = {0};
    struct api_def *def = parse_sq(BAD_FILE,
                                   "{'listen_port': 0, 'protocol': 'udp',"
                                   " 'proxy': {'target_url': 'tcp://h'},"
                                   " 'tcpgate': {'retries': 2}}",
                                   &d);
    assert_null(def);
    assert_int_equal(api_diags_errors(&d), 4);
    assert_diag(&d, API_SEV_ERROR, BAD_FILE, "listen_port", "out of range");
    assert_diag(&d, API_SEV_ERROR, BAD_FILE, "protocol", "udp");
    assert_diag(&d, API_SEV_ERROR, BAD_FILE, "proxy.target_url", "no port");
    assert_diag(&d, API_SEV_ERROR, BAD_FILE, "tcpgate.retries", "unknown field");
    api_diags_free(&d);
}

/* A field of the wrong type gets one error saying so, not a second, false one
 * claiming the field is missing or empty.
 * All cases are checked before failing, so the report lists each one. */
static void test_no_misleading_follow_on_errors(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"{'listen_port': 1, 'protocol': 6, 'proxy': {'target_url': 'h:1'}}", "protocol"},
        {"{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 5}}", "proxy.target_url"},
        {"{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'enable_load_balancing': true,"
         " 'target_list': 'a:1'}}",
         "proxy.target_list"},
        {"{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'enable_load_balancing': true,"
         " 'target_list': ['a:1', 5]}}",
         "proxy.target_list[1]"},
        {"{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
         " 'uptime_tests': {'check_list': [{'url': 'h:1', 'commands': [{'name': 5}]}]}}",
         "uptime_tests.check_list[0].commands[0].name"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct api_diags d = {0};
        struct api_def *def = parse_sq(BAD_FILE, cases[i][0], &d);
        assert_null(def);
        assert_diag(&d, API_SEV_ERROR, BAD_FILE, cases[i][1], "expected a");
        if (api_diags_errors(&d) != 1) {
            print_message("follow-on error for: %s\n", cases[i][0]);
            dump_diags(&d);
            bad++;
        }
        api_diags_free(&d);
    }
    assert_int_equal(bad, 0);
}

/* JSON null counts as absent, as in Go. */
static void test_null_is_absent(void **state)
{
    (void)state;
    struct api_diags d = {0};
    struct api_def *def = parse_sq("a.json",
                                   "{'listen_port': 1, 'protocol': 'tcp', 'name': null,"
                                   " 'domain': null, 'certificates': null, 'tcpgate': null,"
                                   " 'uptime_tests': null, 'active': null,"
                                   " 'proxy': {'target_url': 'h:1', 'target_list': null}}",
                                   &d);
    assert_non_null(def);
    assert_int_equal(d.count, 0);
    assert_null(def->name);
    assert_true(def->active);
    assert_string_equal(def->domain, "");
    assert_int_equal(def->ext.max_connect_attempts, 3);
    api_def_free(def);
    api_diags_free(&d);
}

/* ---- tcpgate.sentinel --------------------------------------------------------------- */

#define SN_DEF(proxy, sentinel)                                                                    \
    "{'listen_port': 6379, 'protocol': 'tcp', 'proxy': {" proxy "},"                               \
    " 'tcpgate': {'sentinel': {" sentinel "}}}"

static void test_sentinel_full(void **state)
{
    (void)state;
    struct api_diags d = {0};
    struct api_def *def =
        parse_sq("s.json",
                 SN_DEF("'target_list': ['10.0.0.1:6379', 'tcp://10.0.0.2:6379']",
                        "'master_name': 'mymaster', 'addrs': ['10.0.0.1:26379', "
                        "'sentinel-2:26379', '[::1]:26380'], 'username': 'u', 'password': 'p',"
                        " 'node_username': 'nu', 'node_password': 'np', 'quorum': 2,"
                        " 'timeout': '250ms', 'poll_interval': '2s', 'on_unreachable': 'checks',"
                        " 'role': 'replica'"),
                 &d);
    if (def == NULL)
        dump_diags(&d);
    assert_non_null(def);
    assert_int_equal(d.count, 0);
    const struct api_sentinel *sn = &def->ext.sentinel;
    assert_true(sn->enabled);
    assert_string_equal(sn->master_name, "mymaster");
    assert_int_equal(sn->naddrs, 3);
    assert_string_equal(sn->addrs[1].host, "sentinel-2");
    assert_string_equal(sn->addrs[2].host, "::1");
    assert_int_equal(sn->addrs[2].port, 26380);
    assert_string_equal(sn->username, "u");
    assert_string_equal(sn->node_password, "np");
    assert_int_equal(sn->quorum, 2);
    assert_int_equal(sn->timeout_ms, 250);
    assert_int_equal(sn->poll_interval_ms, 2000);
    assert_true(sn->fallback_to_checks);
    assert_true(sn->replica);
    /* The listed targets are the allow-list, load balancing or not. */
    const struct api_target *t;
    assert_int_equal(api_def_upstreams(def, &t), 2);
    assert_string_equal(t[1].host, "10.0.0.2");
    api_def_free(def);
    api_diags_free(&d);
}

static void test_sentinel_defaults_and_no_allow_list(void **state)
{
    (void)state;
    struct api_diags d = {0};
    struct api_def *def =
        parse_sq("s.json", SN_DEF("", "'master_name': 'm', 'addrs': ['127.0.0.1:26379']"), &d);
    assert_non_null(def);
    const struct api_sentinel *sn = &def->ext.sentinel;
    assert_int_equal(sn->quorum, 0);
    assert_int_equal(sn->timeout_ms, API_SENTINEL_TIMEOUT_MS);
    assert_int_equal(sn->poll_interval_ms, API_SENTINEL_POLL_MS);
    assert_false(sn->fallback_to_checks);
    assert_false(sn->replica);
    assert_null(sn->password);
    /* No target is needed; none listed means any address, with a warning. */
    const struct api_target *t;
    assert_int_equal(api_def_upstreams(def, &t), 0);
    assert_int_equal(api_diags_errors(&d), 0);
    assert_diag(&d, API_SEV_WARNING, "s.json", "tcpgate.sentinel", "any address");
    api_def_free(def);
    api_diags_free(&d);
    /* A target_url alone is an allow-list of one. */
    memset(&d, 0, sizeof(d));
    def = parse_sq("s.json",
                   SN_DEF("'target_url': '10.0.0.1:6379'", "'master_name': 'm', 'addrs': ['h:1']"),
                   &d);
    assert_non_null(def);
    assert_int_equal(api_def_upstreams(def, &t), 1);
    assert_int_equal(d.count, 0);
    api_def_free(def);
    api_diags_free(&d);
}

static void test_sentinel_errors(void **state)
{
    (void)state;
    expect_error(SN_DEF("", "'addrs': ['h:1']"), "tcpgate.sentinel.master_name", "missing");
    expect_error(SN_DEF("", "'master_name': '', 'addrs': ['h:1']"), "tcpgate.sentinel.master_name",
                 "missing");
    expect_error(SN_DEF("", "'master_name': 'my master', 'addrs': ['h:1']"),
                 "tcpgate.sentinel.master_name", "no spaces");
    expect_error(SN_DEF("", "'master_name': 'm'"), "tcpgate.sentinel.addrs", "missing");
    expect_error(SN_DEF("", "'master_name': 'm', 'addrs': []"), "tcpgate.sentinel.addrs",
                 "missing");
    expect_error(SN_DEF("", "'master_name': 'm', 'addrs': ['h']"), "tcpgate.sentinel.addrs[0]",
                 NULL);
    expect_error(SN_DEF("", "'master_name': 'm', 'addrs': ['h:1', 'H:1']"),
                 "tcpgate.sentinel.addrs[1]", "twice");
    expect_error(SN_DEF("", "'master_name': 'm', 'addrs': ['tls://h:1']"),
                 "tcpgate.sentinel.addrs[0]", "TLS");
    expect_error(SN_DEF("", "'master_name': 'm', 'addrs': ['h:1'], 'quorum': 2"),
                 "tcpgate.sentinel.quorum", "between 1 and the number of sentinels");
    expect_error(SN_DEF("", "'master_name': 'm', 'addrs': ['h:1'], 'quorum': -1"),
                 "tcpgate.sentinel.quorum", NULL);
    expect_error(SN_DEF("", "'master_name': 'm', 'addrs': ['h:1'], 'timeout': '10ms'"),
                 "tcpgate.sentinel.timeout", "50ms");
    expect_error(SN_DEF("", "'master_name': 'm', 'addrs': ['h:1'], 'timeout': '11s'"),
                 "tcpgate.sentinel.timeout", "10s");
    expect_error(SN_DEF("", "'master_name': 'm', 'addrs': ['h:1'], 'poll_interval': '50ms'"),
                 "tcpgate.sentinel.poll_interval", "100ms");
    expect_error(SN_DEF("", "'master_name': 'm', 'addrs': ['h:1'], 'on_unreachable': 'wait'"),
                 "tcpgate.sentinel.on_unreachable", "\"keep\" or \"checks\", not \"wait\"");
    expect_error(SN_DEF("", "'master_name': 'm', 'addrs': ['h:1'], 'role': 'slave'"),
                 "tcpgate.sentinel.role", "\"master\" or \"replica\"");
    expect_error(SN_DEF("", "'master_name': 'm', 'addrs': ['h:1'], 'username': 'u'"),
                 "tcpgate.sentinel.username", "needs a password");
    expect_error(SN_DEF("", "'master_name': 'm', 'addrs': ['h:1'], 'node_username': 'u'"),
                 "tcpgate.sentinel.node_username", "needs a node_password");
    expect_error(SN_DEF("", "'master_name': 'm', 'addrs': ['h:1'], 'quorom': 1"),
                 "tcpgate.sentinel.quorom", "unknown field");
    /* The whole list of known keys is shown, however long it is. */
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'proxy': {'target_url': 'h:1'},"
                 " 'tcpgate': {'retries': 2}}",
                 "tcpgate.retries", "max_connections_per_target, sentinel)");
    expect_error(
        SN_DEF("'target_list': ['tls://10.0.0.1:6379']", "'master_name': 'm', 'addrs': ['h:1']"),
        "proxy.target_list", "tls://");
    expect_error("{'listen_port': 1, 'protocol': 'tcp', 'tcpgate': {'sentinel': []}}",
                 "tcpgate.sentinel", "expected an object");
}

static void test_on_marked_down_keep_is_remembered(void **state)
{
    (void)state;
    struct api_diags d = {0};
    struct api_def *def = parse_sq("a.json",
                                   "{'listen_port': 1, 'protocol': 'tcp',"
                                   " 'proxy': {'target_url': 'h:1'},"
                                   " 'tcpgate': {'on_marked_down': 'keep'}}",
                                   &d);
    assert_non_null(def);
    assert_true(def->ext.keep_on_marked_down);
    assert_false(def->ext.close_on_marked_down);
    api_def_free(def);
    api_diags_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sentinel_full),
        cmocka_unit_test(test_sentinel_defaults_and_no_allow_list),
        cmocka_unit_test(test_sentinel_errors),
        cmocka_unit_test(test_on_marked_down_keep_is_remembered),
        cmocka_unit_test(test_full_definition),
        cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_api_id_from_file_stem),
        cmocka_unit_test(test_certificate_alias),
        cmocka_unit_test(test_tyk_simplest_definition),
        cmocka_unit_test(test_tyk_redis_sentinel_example),
        cmocka_unit_test(test_unknown_top_level_fields_ignored),
        cmocka_unit_test(test_misplaced_proxy_flags_warn),
        cmocka_unit_test(test_upstreams_and_domain),
        cmocka_unit_test(test_protocol_name),
        cmocka_unit_test(test_listen_port_errors),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_target_errors),
        cmocka_unit_test(test_upstream_missing_errors),
        cmocka_unit_test(test_extension_errors),
        cmocka_unit_test(test_extension_edge_values),
        cmocka_unit_test(test_check_errors),
        cmocka_unit_test(test_regex_size_limits),
        cmocka_unit_test(test_field_type_errors),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_tyk_docs_health_check_snippet_invalid),
        cmocka_unit_test(test_top_level_not_object),
        cmocka_unit_test(test_all_errors_reported),
        cmocka_unit_test(test_null_is_absent),
        cmocka_unit_test(test_no_misleading_follow_on_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
