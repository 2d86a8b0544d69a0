#include "gw_snapshot.h"

#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gw_tls_route.h"
#include "hc_script.h"

#include "gw_log.h"

static int resolve(struct gw_upstream *u, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG};
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)u->target.port);
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(u->target.host, port, &hints, &res);
    if (rc == EAI_NONAME || rc == EAI_FAMILY) {
        /* AI_ADDRCONFIG hides ::1 and 127.0.0.1 on hosts whose only
         * interface is loopback; ask again without it. */
        hints.ai_flags &= ~AI_ADDRCONFIG;
        rc = getaddrinfo(u->target.host, port, &hints, &res);
    }
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve \"%s\": %s", u->target.host, gai_strerror(rc));
        return -1;
    }
    u->naddrs = 0;
    for (struct addrinfo *ai = res; ai != NULL && u->naddrs < GW_MAX_ADDRS; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(u->addr[0]))
            continue;
        memcpy(&u->addr[u->naddrs], ai->ai_addr, ai->ai_addrlen);
        u->addrlen[u->naddrs] = ai->ai_addrlen;
        u->naddrs++;
    }
    freeaddrinfo(res);
    if (u->naddrs == 0) {
        snprintf(err, errlen, "\"%s\" has no usable address", u->target.host);
        return -1;
    }
    return 0;
}

/* ---- routing ------------------------------------------------------------------------ */

struct gw_api *gw_port_route_sni(const struct gw_port *p, const char *sni)
{
    struct gw_api *api = gw_sni_lookup(p->sni, sni);
    if (api == NULL && (sni == NULL || sni[0] == '\0') && p->napis == 1)
        api = p->apis[0];
    return api;
}

static void unref_all(struct cert_entry **e, int n)
{
    for (int i = 0; i < n; i++)
        cert_entry_unref(e[i]);
}

static int build_server_tls(struct gw_api *api, const struct api_def *def,
                            const struct gw_build_env *env, struct api_diags *diags)
{
    const struct gw_config *cfg = env->cfg;
    char *const *refs = def->certificates;
    size_t nrefs = def->ncertificates;
    const char *field = "certificates";
    if (nrefs == 0) {
        refs = cfg->server_tls.ssl_certificates;
        nrefs = cfg->server_tls.nssl_certificates;
        field = "http_server_options.ssl_certificates";
    }
    if (nrefs == 0) {
        api_diags_add(diags, API_SEV_ERROR, def->file, "certificates",
                      "protocol \"env\" needs a certificate, here or in the gateway's "
                      "http_server_options.ssl_certificates");
        return -1;
    }
    struct cert_entry *certs[nrefs], *cas[def->nclient_certificates + 1];
    int nc = 0, na = 0;
    for (size_t i = 0; i < nrefs; i++) {
        certs[i] = cert_resolve(env->store, refs[i], true, def->file, field, diags);
        if (certs[i] == NULL)
            goto fail;
        nc++;
    }
    if (def->use_mutual_tls_auth) {
        if (def->nclient_certificates == 0) {
            api_diags_add(diags, API_SEV_ERROR, def->file, "client_certificates",
                          "use_mutual_tls_auth is on but no client certificate is listed");
            goto fail;
        }
        for (size_t i = 0; i < def->nclient_certificates; i++) {
            cas[i] = cert_resolve(env->store, def->client_certificates[i], false, def->file,
                                  "client_certificates", diags);
            if (cas[i] == NULL)
                goto fail;
            na++;
        }
    }
    char ciphers[2048], suites[512], err[320];
    const char *const *names = (const char *const *)def->ext.tls_ciphers;
    size_t nnames = def->ext.ntls_ciphers;
    if (nnames == 0) {
        names = (const char *const *)cfg->server_tls.ssl_ciphers;
        nnames = cfg->server_tls.nssl_ciphers;
    }
    if (cert_cipher_lists(names, nnames, ciphers, sizeof(ciphers), suites, sizeof(suites), err,
                          sizeof(err)) != 0) {
        api_diags_add(diags, API_SEV_ERROR, def->file, API_EXT_KEY ".tls_ciphers", "%s", err);
        goto fail;
    }
    struct cert_tls_opts opts = {
        .min_version = cert_tls_version_from_tyk(
            def->ext.tls_min_version ? def->ext.tls_min_version : cfg->server_tls.min_version),
        .max_version = cert_tls_version_from_tyk(
            def->ext.tls_max_version ? def->ext.tls_max_version : cfg->server_tls.max_version),
        .ciphers = ciphers[0] ? ciphers : NULL,
        .ciphersuites = suites[0] ? suites : NULL,
        .max_cert_list = cfg->cert_chain_max,
    };
    api->server_ctx = cert_server_ctx_new(certs, (size_t)nc, cas, (size_t)na, &opts, env->keys,
                                          def->api_id, err, sizeof(err));
    if (api->server_ctx == NULL) {
        api_diags_add(diags, API_SEV_ERROR, def->file, field, "%s", err);
        goto fail;
    }
    for (size_t i = 0; i < def->ext.nalpn; i++) {
        size_t n = strlen(def->ext.alpn[i]);
        if (api->alpn_len + 1 + n > sizeof(api->alpn))
            break;
        api->alpn[api->alpn_len++] = (unsigned char)n;
        memcpy(api->alpn + api->alpn_len, def->ext.alpn[i], n);
        api->alpn_len += n;
    }
    if (api->alpn_len > 0 && cert_server_ctx_set_alpn(api->server_ctx, api->alpn, api->alpn_len))
        goto fail;
    unref_all(certs, nc);
    unref_all(cas, na);
    return 0;
fail:
    unref_all(certs, nc);
    unref_all(cas, na);
    return -1;
}

/* Tyk's host patterns of a map field, as an array for cert_host_pattern_match. */
static int pattern_lookup(const struct api_kv *kv, size_t n, const struct api_target *t)
{
    const char *pats[n ? n : 1];
    for (size_t i = 0; i < n; i++)
        pats[i] = kv[i].key;
    return cert_host_pattern_match(pats, n, t->host, t->port);
}

static bool check_is_tls(const struct api_check *c)
{
    if (c->protocol != NULL && c->protocol[0] != '\0')
        return strcmp(c->protocol, "tls") == 0;
    return c->target.scheme == API_SCHEME_TLS;
}

bool gw_upstream_eligible(const struct gw_api *api, size_t i)
{
    const struct gw_upstream *u = &api->ups[i];
    return (u->hc == NULL || hc_target_eligible(u->hc)) &&
           (u->node == NULL || hc_sentinel_node_eligible(u->node));
}

bool gw_upstream_marked_down(const struct gw_api *api, size_t i)
{
    const struct gw_upstream *u = &api->ups[i];
    return (u->hc != NULL && hc_target_state(u->hc) == HC_DOWN) ||
           (u->node != NULL && !hc_sentinel_node_named(u->node));
}

bool gw_api_settling(const struct gw_api *api)
{
    if (api->sentinel != NULL && hc_sentinel_settling(api->sentinel))
        return true;
    size_t n = gw_api_nups(api);
    for (size_t i = 0; i < n; i++)
        if (api->ups[i].hc != NULL && hc_target_pending(api->ups[i].hc))
            return true;
    return false;
}

/* What a check of target u runs as. */
static void check_spec(const struct gw_api *api, const struct api_check *chk,
                       const struct gw_upstream *u, const struct gw_config *cfg,
                       struct hc_target_spec *spec)
{
    const struct api_def *def = api->def;
    const struct api_ext *ext = &def->ext;
    *spec = (struct hc_target_spec){
        .api_id = def->api_id,
        .name = u->name,
        .addrs = u->addr,
        .addrlens = u->addrlen,
        .naddrs = u->naddrs,
        .check = chk,
        .tls = check_is_tls(chk) ? api->client_ctx : NULL,
        .tls_host = u->target.host,
        .tls_verify = api->verify_upstream,
        .proxy = !chk->enable_proxy_protocol && !ext->send_proxy_protocol ? HC_PROXY_NONE
                 : ext->check_proxy_v1                                    ? HC_PROXY_V1
                                                                          : HC_PROXY_V2_LOCAL,
        .interval_ms = ext->check_interval_ms > 0 ? ext->check_interval_ms
                                                  : (int64_t)cfg->uptime_tests.time_wait * 1000,
        .timeout_ms = chk->timeout_ms > 0         ? chk->timeout_ms
                      : ext->check_timeout_ms > 0 ? ext->check_timeout_ms
                                                  : 3000,
        .fall =
            ext->check_fall > 0 ? ext->check_fall : cfg->uptime_tests.failure_trigger_sample_size,
        .rise = ext->check_rise > 0 ? ext->check_rise : 2,
        .gates = def->proxy.check_host_against_uptime_tests,
        .sentinel = api->sentinel,
    };
}

static bool checks_run(const struct api_def *def, const struct gw_config *cfg)
{
    return !def->uptime_tests.disabled && !cfg->uptime_tests.disable &&
           def->uptime_tests.nchecks > 0;
}

/* Health checks: each check entry applies to the targets with its host:port. */
static int build_checks(struct gw_api *api, const struct api_def *def,
                        const struct gw_build_env *env, struct api_diags *diags)
{
    const struct gw_config *cfg = env->cfg;
    bool gates = def->proxy.check_host_against_uptime_tests;
    size_t n = def->uptime_tests.nchecks;
    if (!checks_run(def, cfg)) {
        if (gates)
            api_diags_add(diags, API_SEV_WARNING, def->file,
                          "proxy.check_host_against_uptime_tests",
                          "no health check runs for this definition, so every target is picked");
        return 0;
    }
    /* Every script compiles before any check starts. */
    for (size_t c = 0; c < n; c++) {
        char field[64], err[256];
        struct hc_script script;
        if (hc_script_compile(&def->uptime_tests.checks[c], &script, err, sizeof(err)) != 0) {
            snprintf(field, sizeof(field), "uptime_tests.check_list[%zu]", c);
            api_diags_add(diags, API_SEV_ERROR, def->file, field, "%s", err);
            return -1;
        }
        hc_script_free(&script);
    }
    if (api->dynamic)
        return 0; /* checks join the nodes the sentinels name (gw_snapshot_sync) */
    for (size_t c = 0; c < n; c++) {
        const struct api_check *chk = &def->uptime_tests.checks[c];
        char field[64], name[API_HOST_MAX + 16], err[256];
        snprintf(field, sizeof(field), "uptime_tests.check_list[%zu]", c);
        api_target_hostport(&chk->target, name, sizeof(name));
        struct gw_upstream *first = NULL;
        for (size_t i = 0; i < api->nups; i++)
            if (strcasecmp(api->ups[i].name, name) == 0 && first == NULL)
                first = &api->ups[i];
        if (first == NULL) {
            api_diags_add(diags, API_SEV_WARNING, def->file, field,
                          "%s is not one of the definition's targets; the check is not run", name);
            continue;
        }
        if (first->hc != NULL) {
            api_diags_add(diags, API_SEV_WARNING, def->file, field,
                          "%s has an earlier check; this one is not run", name);
            continue;
        }
        if (env->hc == NULL)
            continue;
        struct hc_target_spec spec;
        check_spec(api, chk, first, cfg, &spec);
        struct hc_target *t = hc_engine_add(env->hc, &spec, err, sizeof(err));
        if (t == NULL) {
            api_diags_add(diags, API_SEV_ERROR, def->file, field, "%s", err);
            return -1;
        }
        for (size_t i = 0; i < api->nups; i++)
            if (strcasecmp(api->ups[i].name, name) == 0)
                api->ups[i].hc = t;
    }
    return 0;
}

static int build_client_tls(struct gw_api *api, const struct api_def *def,
                            const struct gw_build_env *env, int nworkers, struct api_diags *diags)
{
    const struct api_transport *tr = &def->proxy.transport;
    bool any = false;
    for (size_t i = 0; i < api->nups; i++)
        any |= api->ups[i].target.scheme == API_SCHEME_TLS;
    for (size_t i = 0; i < def->uptime_tests.nchecks; i++)
        any |= check_is_tls(&def->uptime_tests.checks[i]);
    if (!any)
        return 0;
    api->verify_upstream = !tr->ssl_insecure_skip_verify;
    if (!api->verify_upstream)
        api_diags_add(diags, API_SEV_WARNING, def->file, "proxy.transport.ssl_insecure_skip_verify",
                      "upstream certificates are not verified: anyone on the path can pose as "
                      "the upstream");
    char ciphers[2048], suites[512], err[320];
    if (cert_cipher_lists((const char *const *)tr->ssl_ciphers, tr->nssl_ciphers, ciphers,
                          sizeof(ciphers), suites, sizeof(suites), err, sizeof(err)) != 0) {
        api_diags_add(diags, API_SEV_ERROR, def->file, "proxy.transport.ssl_ciphers", "%s", err);
        return -1;
    }
    struct cert_tls_opts opts = {
        .min_version = cert_tls_version_from_tyk(tr->ssl_min_version),
        .max_version = cert_tls_version_from_tyk(tr->ssl_max_version),
        .ciphers = ciphers[0] ? ciphers : NULL,
        .ciphersuites = suites[0] ? suites : NULL,
    };
    api->client_ctx = cert_client_ctx_new(&opts, api->verify_upstream, def->ext.upstream_ca_file,
                                          err, sizeof(err));
    if (api->client_ctx == NULL) {
        api_diags_add(diags, API_SEV_ERROR, def->file,
                      def->ext.upstream_ca_file ? API_EXT_KEY ".upstream_ca_file" : "proxy", "%s",
                      err);
        return -1;
    }
    for (size_t i = 0; i < api->nups; i++) {
        struct gw_upstream *u = &api->ups[i];
        if (u->target.scheme != API_SCHEME_TLS)
            continue;
        u->sessions = calloc((size_t)nworkers, sizeof(*u->sessions));
        if (u->sessions == NULL)
            abort();
        if (!def->upstream_certificates_disabled) {
            int k =
                pattern_lookup(def->upstream_certificates, def->nupstream_certificates, &u->target);
            if (k >= 0) {
                u->client_cert = cert_resolve(env->store, def->upstream_certificates[k].value, true,
                                              def->file, "upstream_certificates", diags);
                if (u->client_cert == NULL)
                    return -1;
            }
        }
        if (!def->certificate_pinning_disabled) {
            int k = pattern_lookup(def->pinned_public_keys, def->npinned_public_keys, &u->target);
            if (k >= 0)
                u->pins = def->pinned_public_keys[k].value;
        }
    }
    return 0;
}

/* ---- definitions ------------------------------------------------------------------ */

/* Names an upstream entry and gives it its counters. */
static void name_upstream(struct gw_api *api, size_t i, const struct api_target *target,
                          struct gw_registry *reg)
{
    struct gw_upstream *u = &api->ups[i];
    char key[API_HOST_MAX + 600];
    u->target = *target;
    api_target_hostport(&u->target, u->name, sizeof(u->name));
    snprintf(u->label, sizeof(u->label), "%s://%s",
             u->target.scheme == API_SCHEME_TLS ? "tls" : "tcp", u->name);
    snprintf(key, sizeof(key), "target:%s %s", api->def->api_id, u->label);
    u->stats = gw_registry_slots(reg, key, sizeof(struct gw_target_stats));
    snprintf(key, sizeof(key), "active:target:%s %s", api->def->api_id, u->label);
    u->active = gw_registry_counter(reg, key);
    u->host_id = (unsigned)i;
    for (size_t j = 0; j < i; j++) {
        if (strcmp(api->ups[j].name, u->name) == 0) {
            u->host_id = api->ups[j].host_id;
            break;
        }
    }
}

/* tcpgate.sentinel: the definition's watcher, with its targets (if listed)
 * as the allow-list. Without an engine (--check) there is none. */
static int attach_sentinel(struct gw_api *api, const struct api_def *def,
                           const struct gw_build_env *env, struct api_diags *diags)
{
    if (!def->ext.sentinel.enabled || env->hc == NULL)
        return 0;
    struct hc_sentinel_allowed allowed[api->dynamic ? 1 : api->nups];
    for (size_t i = 0; !api->dynamic && i < api->nups; i++)
        allowed[i] = (struct hc_sentinel_allowed){.name = api->ups[i].name,
                                                  .addrs = api->ups[i].addr,
                                                  .addrlens = api->ups[i].addrlen,
                                                  .naddrs = api->ups[i].naddrs};
    struct hc_sentinel_spec spec = {.api_id = def->api_id,
                                    .cfg = &def->ext.sentinel,
                                    .allowed = api->dynamic ? NULL : allowed,
                                    .nallowed = api->dynamic ? 0 : api->nups};
    char err[256];
    api->sentinel = hc_sentinel_get(env->hc, &spec, err, sizeof(err));
    if (api->sentinel == NULL) {
        api_diags_add(diags, API_SEV_ERROR, def->file, API_EXT_KEY ".sentinel", "%s", err);
        return -1;
    }
    for (size_t i = 0; !api->dynamic && i < api->nups; i++)
        api->ups[i].node = hc_sentinel_allowed_node(api->sentinel, i);
    return 0;
}

/* A dynamic definition takes the nodes its watcher added: each becomes a
 * target, with the check whose url names it. */
static void sync_api(struct gw_api *api, const struct gw_build_env *env)
{
    if (!api->dynamic || api->sentinel == NULL)
        return;
    const struct api_def *def = api->def;
    size_t have = api->nups, n = hc_sentinel_nnodes(api->sentinel);
    for (size_t i = have; i < n; i++) {
        struct hc_sentinel_node *node = hc_sentinel_node_at(api->sentinel, i);
        struct gw_upstream *u = &api->ups[i];
        struct api_target t = {.scheme = API_SCHEME_TCP};
        char err[320];
        if (api_target_parse(hc_sentinel_node_name(node), &t, err, sizeof(err)) != 0)
            abort(); /* the watcher formats its names as host:port */
        name_upstream(api, i, &t, env->registry);
        socklen_t len;
        const struct sockaddr *sa = hc_sentinel_node_addr(node, &len);
        memcpy(&u->addr[0], sa, len);
        u->addrlen[0] = len;
        u->naddrs = 1;
        u->node = node;
        for (size_t c = 0; checks_run(def, env->cfg) && c < def->uptime_tests.nchecks; c++) {
            const struct api_check *chk = &def->uptime_tests.checks[c];
            char name[API_HOST_MAX + 16];
            api_target_hostport(&chk->target, name, sizeof(name));
            if (strcasecmp(name, u->name) != 0)
                continue;
            struct hc_target_spec spec;
            check_spec(api, chk, u, env->cfg, &spec);
            u->hc = hc_engine_add(env->hc, &spec, err, sizeof(err));
            if (u->hc == NULL)
                gw_error("api_id=%s target %s: its check cannot run: %s", def->api_id, u->name,
                         err);
            break;
        }
        __atomic_store_n(&api->nups, i + 1, __ATOMIC_RELEASE);
    }
}

void gw_snapshot_sync(struct gw_snapshot *s, const struct gw_build_env *env)
{
    struct gw_build_env e = *env;
    if (e.registry == NULL)
        e.registry = s->own_registry;
    for (size_t i = 0; i < s->napis; i++)
        sync_api(&s->apis[i], &e);
}

/* Fills an API entry; returns -1 (with diagnostics) when it cannot be served. */
static int build_api(struct gw_api *api, const struct api_def *def, int nworkers,
                     const struct gw_build_env *env, struct gw_registry *reg,
                     struct api_diags *diags)
{
    const struct api_target *targets;
    size_t n = api_def_upstreams(def, &targets);
    char key[API_HOST_MAX + 600];
    api->def = def;
    api->dynamic = def->ext.sentinel.enabled && n == 0;
    api->close_on_down = def->ext.close_on_marked_down ||
                         (def->ext.sentinel.enabled && !def->ext.keep_on_marked_down);
    api->ups = calloc(api->dynamic ? HC_SENTINEL_MAX_NODES : n ? n : 1, sizeof(*api->ups));
    if (api->ups == NULL)
        abort();
    snprintf(key, sizeof(key), "api:%s", def->api_id);
    api->stats = gw_registry_slots(reg, key, sizeof(struct gw_api_stats));
    snprintf(key, sizeof(key), "active:api:%s", def->api_id);
    api->active = gw_registry_counter(reg, key);
    api->nups = n;
    for (size_t i = 0; i < n; i++) {
        const char *field = def->proxy.ntargets > 0 &&
                                    (def->proxy.enable_load_balancing || def->ext.sentinel.enabled)
                                ? "proxy.target_list"
                                : "proxy.target_url";
        name_upstream(api, i, &targets[i], reg);
        char err[320];
        if (resolve(&api->ups[i], err, sizeof(err)) != 0) {
            api_diags_add(diags, API_SEV_ERROR, def->file, field, "%s", err);
            return -1;
        }
    }
    if (def->protocol == API_PROTO_TLS && build_server_tls(api, def, env, diags) != 0)
        return -1;
    if (build_client_tls(api, def, env, nworkers, diags) != 0)
        return -1;
    if (attach_sentinel(api, def, env, diags) != 0)
        return -1;
    if (build_checks(api, def, env, diags) != 0)
        return -1;
    struct gw_build_env with_reg = *env;
    with_reg.registry = reg;
    sync_api(api, &with_reg);
    return 0;
}

static void free_api(struct gw_api *api, int nworkers)
{
    for (size_t i = 0; api->ups != NULL && i < api->nups; i++) {
        struct gw_upstream *u = &api->ups[i];
        bool first_use = true; /* repeated entries of a host share its check */
        for (size_t j = 0; j < i && first_use; j++)
            first_use = api->ups[j].hc != u->hc;
        if (first_use)
            hc_target_release(u->hc);
        cert_entry_unref(u->client_cert);
        for (int w = 0; u->sessions != NULL && w < nworkers; w++)
            SSL_SESSION_free(u->sessions[w]);
        free(u->sessions);
    }
    hc_sentinel_release(api->sentinel); /* after the checks that name it */
    SSL_CTX_free(api->server_ctx);
    SSL_CTX_free(api->client_ctx);
    free(api->ups);
    memset(api, 0, sizeof(*api));
}

struct gw_port *gw_snapshot_port(struct gw_snapshot *s, int port)
{
    for (size_t i = 0; i < s->nports; i++)
        if (s->ports[i].port == port)
            return &s->ports[i];
    return NULL;
}

/* The inbound PROXY settings are the port's: the header is read before any
 * definition is chosen. The first definition's settings count. */
static void build_port_proxy(struct gw_port *p, struct api_diags *diags)
{
    const struct api_def *first = p->apis[0]->def;
    p->proxy_in = first->enable_proxy_protocol;
    if (!p->proxy_in)
        return;
    p->proxy_optional = first->ext.proxy_protocol_optional;
    p->proxy_timeout_ms = first->ext.proxy_protocol_timeout_ms;
    p->trusted = first->ext.proxy_protocol_trusted;
    p->ntrusted = first->ext.nproxy_protocol_trusted;
    if (p->ntrusted == 0)
        api_diags_add(diags, API_SEV_WARNING, first->file, API_EXT_KEY ".proxy_protocol_trusted",
                      "port %d accepts a PROXY header from anyone, so any client can claim any "
                      "address; list the proxies in front",
                      p->port);
    if (p->proxy_optional)
        api_diags_add(diags, API_SEV_WARNING, first->file, API_EXT_KEY ".proxy_protocol_optional",
                      "port %d also takes connections without a PROXY header: unsafe outside a "
                      "migration",
                      p->port);
    for (size_t j = 1; j < p->napis; j++) {
        const struct api_ext *x = &p->apis[j]->def->ext;
        bool same = x->proxy_protocol_optional == p->proxy_optional &&
                    x->proxy_protocol_timeout_ms == p->proxy_timeout_ms &&
                    x->nproxy_protocol_trusted == p->ntrusted &&
                    (p->ntrusted == 0 || memcmp(x->proxy_protocol_trusted, p->trusted,
                                                p->ntrusted * sizeof(*p->trusted)) == 0);
        if (!same)
            api_diags_add(diags, API_SEV_WARNING, p->apis[j]->def->file, API_EXT_KEY,
                          "port %d takes its PROXY protocol settings from %s", p->port,
                          first->file);
    }
}

static int build_port(struct gw_port *p, const struct gw_build_env *env, struct api_diags *diags)
{
    build_port_proxy(p, diags);
    if (p->protocol == API_PROTO_TCP && p->napis == 1) {
        p->mode = GW_ROUTE_SINGLE;
        p->route = p->apis[0];
        return 0;
    }
    p->mode = p->protocol == API_PROTO_TLS ? GW_ROUTE_TLS : GW_ROUTE_PEEK;
    p->sni = gw_sni_new(p->napis);
    if (p->sni == NULL)
        return -1;
    for (size_t j = 0; j < p->napis; j++)
        if (gw_sni_add(p->sni, api_def_domain(p->apis[j]->def), p->apis[j]) != 0)
            return -1; /* the loader keeps (port, domain) unique */
    if (p->mode == GW_ROUTE_TLS) {
        char err[320];
        /* Sessions and tickets live on this shared context, so they resume on
         * any worker and whichever definition the name picks. The caps on
         * what a client may send are read from it when a handshake starts. */
        struct cert_tls_opts front_opts = {.max_cert_list = env->cfg->cert_chain_max};
        p->front = cert_server_ctx_new(NULL, 0, NULL, 0, &front_opts, env->keys, "tcpgate", err,
                                       sizeof(err));
        if (p->front == NULL) {
            api_diags_add(diags, API_SEV_ERROR, p->apis[0]->def->file, "listen_port", "port %d: %s",
                          p->port, err);
            return -1;
        }
        gw_tls_route_install(p->front, p);
    }
    return 0;
}

struct gw_snapshot *gw_snapshot_build(struct api_set *set, int nworkers,
                                      const struct gw_build_env *env, struct api_diags *diags)
{
    struct gw_snapshot *s = calloc(1, sizeof(*s));
    if (s == NULL)
        abort();
    s->refs = 1;
    s->nworkers = nworkers;
    s->handshake_timeout_ms = env->cfg->handshake_timeout_ms;
    s->client_hello_max = (size_t)env->cfg->client_hello_max;
    s->proxy_header_max = (size_t)env->cfg->proxy_header_max;
    s->set = *set;
    memset(set, 0, sizeof(*set));
    struct gw_registry *reg = env->registry;
    if (reg == NULL && (reg = s->own_registry = gw_registry_new(nworkers)) == NULL)
        abort();
    s->active_total = gw_registry_counter(reg, "active:gateway");
    s->max_connections = env->cfg->max_connections;
    s->max_per_source = env->cfg->max_connections_per_source;
    s->sources = env->sources;
    s->apis = calloc(s->set.count ? s->set.count : 1, sizeof(*s->apis));
    s->ports = calloc(s->set.count ? s->set.count : 1, sizeof(*s->ports));
    if (s->apis == NULL || s->ports == NULL)
        abort();

    for (size_t i = 0; i < s->set.count; i++) {
        const struct api_def *def = s->set.defs[i];
        if (!def->active)
            continue;
        struct gw_api *api = &s->apis[s->napis];
        if (build_api(api, def, nworkers, env, reg, diags) != 0) {
            free_api(api, nworkers);
            continue;
        }
        s->napis++;
        struct gw_port *p = gw_snapshot_port(s, def->listen_port);
        if (p == NULL) {
            p = &s->ports[s->nports++];
            p->port = def->listen_port;
            p->protocol = def->protocol;
            p->apis = calloc(s->set.count, sizeof(*p->apis));
            if (p->apis == NULL)
                abort();
            char key[32];
            snprintf(key, sizeof(key), "port:%d", p->port);
            p->stats = gw_registry_slots(reg, key, sizeof(*p->stats));
        }
        p->apis[p->napis++] = api;
    }
    for (size_t i = 0; i < s->nports; i++) {
        if (build_port(&s->ports[i], env, diags) != 0) {
            gw_snapshot_unref(s);
            return NULL;
        }
    }
    return s;
}

struct gw_snapshot *gw_snapshot_ref(struct gw_snapshot *s)
{
    __atomic_fetch_add(&s->refs, 1, __ATOMIC_RELAXED);
    return s;
}

void gw_snapshot_unref(struct gw_snapshot *s)
{
    if (s == NULL || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (size_t i = 0; i < s->napis; i++)
        free_api(&s->apis[i], s->nworkers);
    for (size_t i = 0; i < s->nports; i++) {
        free(s->ports[i].apis);
        gw_sni_free(s->ports[i].sni);
        SSL_CTX_free(s->ports[i].front);
    }
    free(s->apis);
    free(s->ports);
    api_set_free(&s->set);
    gw_registry_free(s->own_registry);
    free(s);
}

struct gw_snapshot *gw_snapshot_load(const struct gw_build_env *env, int nworkers,
                                     struct api_diags *diags)
{
    struct api_set set = {0};
    if (api_load_dir(env->cfg->app_path, gw_config_port_allowed, (void *)env->cfg, &set, diags) !=
        0) {
        api_set_free(&set);
        return NULL;
    }
    return gw_snapshot_build(&set, nworkers, env, diags);
}
