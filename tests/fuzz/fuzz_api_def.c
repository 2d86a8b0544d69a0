/* Fuzz target: an API definition file, from its bytes to a validated
 * definition (apidefs/api_def.h), the way api_load_dir reads one: the whole
 * file NUL-terminated, api_def_parse, then api_set_add.
 *
 * A definition is returned exactly when no error was reported, and a returned
 * definition holds only values the gateway can act on without checking again:
 * ports in range, upstreams that parsed, check scripts that compile (the
 * routing snapshot compiles them and treats a failure as a bug). */
#include <stdbool.h>
#include <sys/socket.h>

#include "api_def.h"
#include "api_loader.h"
#include "fuzz_util.h"
#include "hc_script.h"

#define DEF_FILE "apps/fuzz.json"

static void def_check_target(const struct api_target *t)
{
    FUZZ_CHECK(t->scheme == API_SCHEME_TCP || t->scheme == API_SCHEME_TLS);
    FUZZ_CHECK(t->port >= 1);
    FUZZ_CHECK(fuzz_terminated(t->host, sizeof(t->host)) && t->host[0] != '\0');
}

static void def_check_tls_version(int v)
{
    FUZZ_CHECK(v == 0 || (v >= 769 && v <= 772));
}

static void def_check_strv(char **v, size_t n)
{
    FUZZ_CHECK(n == 0 || v != NULL);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(v[i] != NULL);
}

static void def_check_check(const struct api_check *chk)
{
    FUZZ_CHECK(chk->url != NULL);
    def_check_target(&chk->target);
    if (chk->protocol != NULL && chk->protocol[0] != '\0')
        FUZZ_CHECK(strcmp(chk->protocol, "tcp") == 0 || strcmp(chk->protocol, "tls") == 0);
    FUZZ_CHECK(chk->timeout_ms >= 0);
    FUZZ_CHECK(chk->ncommands == 0 || chk->commands != NULL);
    for (size_t i = 0; i < chk->ncommands; i++) {
        const struct api_check_cmd *c = &chk->commands[i];
        FUZZ_CHECK(c->kind >= API_CMD_SEND && c->kind <= API_CMD_EXPECT_NOT_REGEX);
        FUZZ_CHECK(c->message != NULL && c->message[c->len] == '\0');
        if (c->kind == API_CMD_EXPECT_REGEX || c->kind == API_CMD_EXPECT_NOT_REGEX)
            FUZZ_CHECK(strlen(c->message) == c->len);
    }
    /* What the loader accepted, the health-check engine can run. */
    struct hc_script script;
    char err[256] = "";
    int rc = hc_script_compile(chk, &script, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "accepted check does not compile: %s\n", err);
    FUZZ_CHECK(rc == 0 && script.nsteps == chk->ncommands);
    hc_script_free(&script);
}

static void def_check(const struct api_def *def)
{
    FUZZ_CHECK(def->file != NULL && strcmp(def->file, DEF_FILE) == 0);
    FUZZ_CHECK(def->api_id != NULL && def->api_id[0] != '\0');
    FUZZ_CHECK(def->listen_port >= 1 && def->listen_port <= 65535);
    FUZZ_CHECK(def->protocol == API_PROTO_TCP || def->protocol == API_PROTO_TLS);
    FUZZ_CHECK(def->domain != NULL && api_def_domain(def) != NULL);
    def_check_strv(def->certificates, def->ncertificates);
    def_check_strv(def->client_certificates, def->nclient_certificates);
    for (size_t i = 0; i < def->nupstream_certificates; i++)
        FUZZ_CHECK(def->upstream_certificates[i].key && def->upstream_certificates[i].value);
    for (size_t i = 0; i < def->npinned_public_keys; i++)
        FUZZ_CHECK(def->pinned_public_keys[i].key && def->pinned_public_keys[i].value);

    FUZZ_CHECK(def->uptime_tests.nchecks == 0 || def->uptime_tests.checks != NULL);
    for (size_t i = 0; i < def->uptime_tests.nchecks; i++)
        def_check_check(&def->uptime_tests.checks[i]);

    /* The balancer always has somewhere to go. */
    const struct api_target *ups = NULL;
    size_t nups = api_def_upstreams(def, &ups);
    FUZZ_CHECK(nups >= 1 && ups != NULL);
    for (size_t i = 0; i < nups; i++)
        def_check_target(&ups[i]);
    def_check_tls_version(def->proxy.transport.ssl_min_version);
    def_check_tls_version(def->proxy.transport.ssl_max_version);
    def_check_strv(def->proxy.transport.ssl_ciphers, def->proxy.transport.nssl_ciphers);

    const struct api_ext *x = &def->ext;
    FUZZ_CHECK(x->connect_timeout_ms > 0);
    FUZZ_CHECK(x->idle_timeout_ms >= 0 && x->max_connection_duration_ms >= 0);
    FUZZ_CHECK(x->drain_timeout_ms >= -1);
    FUZZ_CHECK(x->max_connect_attempts >= 1 && x->max_connect_attempts <= 100);
    def_check_tls_version(x->tls_min_version);
    def_check_tls_version(x->tls_max_version);
    if (x->tls_min_version != 0 && x->tls_max_version != 0)
        FUZZ_CHECK(x->tls_min_version <= x->tls_max_version);
    def_check_strv(x->tls_ciphers, x->ntls_ciphers);
    def_check_strv(x->alpn, x->nalpn);
    for (size_t i = 0; i < x->nalpn; i++)
        FUZZ_CHECK(strlen(x->alpn[i]) >= 1 && strlen(x->alpn[i]) <= 255);
    FUZZ_CHECK(x->check_interval_ms == 0 || x->check_interval_ms >= 100);
    FUZZ_CHECK(x->check_timeout_ms >= 0);
    FUZZ_CHECK(x->check_fall >= 0 && x->check_fall <= 100);
    FUZZ_CHECK(x->check_rise >= 0 && x->check_rise <= 100);
    for (size_t i = 0; i < x->nproxy_protocol_trusted; i++) {
        const struct api_cidr *c = &x->proxy_protocol_trusted[i];
        FUZZ_CHECK((c->family == AF_INET && c->prefix <= 32) ||
                   (c->family == AF_INET6 && c->prefix <= 128));
    }
    FUZZ_CHECK(x->proxy_protocol_timeout_ms >= 3000);
    FUZZ_CHECK(x->send_proxy_protocol >= 0 && x->send_proxy_protocol <= 2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > API_FILE_MAX)
        return 0; /* the loader rejects such a file unread */
    char *text = fuzz_cstr(data, size);
    struct api_diags diags = {0};
    struct api_def *def = api_def_parse(DEF_FILE, text, size, &diags);
    free(text); /* the definition must own everything it keeps */

    FUZZ_CHECK((def != NULL) == (api_diags_errors(&diags) == 0));
    for (size_t i = 0; i < diags.count; i++) {
        const struct api_diag *d = &diags.items[i];
        FUZZ_CHECK(strcmp(d->file, DEF_FILE) == 0);
        FUZZ_CHECK(d->field[0] != '\0' && d->reason[0] != '\0');
    }
    if (def != NULL) {
        def_check(def);
        /* The first definition of a set conflicts with nothing. */
        struct api_set set = {0};
        FUZZ_CHECK(api_set_add(&set, def, NULL, NULL, &diags) == 0);
        FUZZ_CHECK(set.count == 1 && set.defs[0] == def);
        api_set_free(&set);
    }
    api_diags_free(&diags);
    return 0;
}
