#include "gw_snapshot.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Fills an API entry; returns -1 (with diagnostics) when it cannot be served. */
static int build_api(struct gw_api *api, const struct api_def *def, int nworkers,
                     struct api_diags *diags)
{
    if (def->protocol == API_PROTO_TLS) {
        api_diags_add(diags, API_SEV_ERROR, def->file, "protocol",
                      "\"tls\" listeners (TLS termination) are not available in this version");
        return -1;
    }
    const struct api_target *targets;
    size_t n = api_def_upstreams(def, &targets);
    api->def = def;
    api->ups = calloc(n, sizeof(*api->ups));
    api->stats = aligned_alloc(64, sizeof(struct gw_api_stats) * (size_t)nworkers);
    if (api->ups == NULL || api->stats == NULL)
        abort();
    memset(api->stats, 0, sizeof(struct gw_api_stats) * (size_t)nworkers);
    api->nups = n;
    for (size_t i = 0; i < n; i++) {
        struct gw_upstream *u = &api->ups[i];
        const char *field =
            def->proxy.enable_load_balancing ? "proxy.target_list" : "proxy.target_url";
        u->target = targets[i];
        api_target_hostport(&u->target, u->name, sizeof(u->name));
        if (u->target.scheme == API_SCHEME_TLS) {
            api_diags_add(diags, API_SEV_ERROR, def->file, field,
                          "\"tls://%s\": upstream TLS is not available in this version", u->name);
            return -1;
        }
        u->host_id = (unsigned)i;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(api->ups[j].name, u->name) == 0) {
                u->host_id = api->ups[j].host_id;
                break;
            }
        }
        char err[320];
        if (resolve(u, err, sizeof(err)) != 0) {
            api_diags_add(diags, API_SEV_ERROR, def->file, field, "%s", err);
            return -1;
        }
    }
    return 0;
}

static void free_api(struct gw_api *api)
{
    free(api->ups);
    free(api->stats);
    memset(api, 0, sizeof(*api));
}

struct gw_port *gw_snapshot_port(struct gw_snapshot *s, int port)
{
    for (size_t i = 0; i < s->nports; i++)
        if (s->ports[i].port == port)
            return &s->ports[i];
    return NULL;
}

struct gw_snapshot *gw_snapshot_build(struct api_set *set, int nworkers, struct api_diags *diags)
{
    struct gw_snapshot *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->refs = 1;
    s->nworkers = nworkers;
    s->set = *set;
    memset(set, 0, sizeof(*set));
    s->apis = calloc(s->set.count ? s->set.count : 1, sizeof(*s->apis));
    s->ports = calloc(s->set.count ? s->set.count : 1, sizeof(*s->ports));
    if (s->apis == NULL || s->ports == NULL)
        abort();

    for (size_t i = 0; i < s->set.count; i++) {
        const struct api_def *def = s->set.defs[i];
        if (!def->active)
            continue;
        struct gw_api *api = &s->apis[s->napis];
        if (build_api(api, def, nworkers, diags) != 0) {
            free_api(api);
            continue;
        }
        s->napis++;
        struct gw_port *p = gw_snapshot_port(s, def->listen_port);
        if (p == NULL) {
            p = &s->ports[s->nports++];
            p->port = def->listen_port;
            p->protocol = def->protocol;
            p->apis = calloc(s->set.count, sizeof(*p->apis));
            p->stats = aligned_alloc(64, sizeof(*p->stats) * (size_t)nworkers);
            if (p->apis == NULL || p->stats == NULL)
                abort();
            memset(p->stats, 0, sizeof(*p->stats) * (size_t)nworkers);
        }
        p->apis[p->napis++] = api;
    }

    for (size_t i = 0; i < s->nports; i++) {
        struct gw_port *p = &s->ports[i];
        if (p->napis == 1) {
            p->route = p->apis[0];
            continue;
        }
        /* Several definitions on one plain-TCP port: without reading the
         * client's TLS ClientHello only the one without a domain can be chosen. */
        for (size_t j = 0; j < p->napis; j++)
            if (api_def_domain(p->apis[j]->def)[0] == '\0')
                p->route = p->apis[j];
        for (size_t j = 0; j < p->napis; j++) {
            if (p->apis[j] == p->route)
                continue;
            api_diags_add(diags, API_SEV_WARNING, p->apis[j]->def->file, "domain",
                          "port %d is shared; routing plain TCP by SNI is not available in this "
                          "version, so \"%s\" gets no connections%s",
                          p->port, api_def_domain(p->apis[j]->def),
                          p->route ? "" : " and the port has no fallback definition");
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
        free_api(&s->apis[i]);
    for (size_t i = 0; i < s->nports; i++) {
        free(s->ports[i].apis);
        free(s->ports[i].stats);
    }
    free(s->apis);
    free(s->ports);
    api_set_free(&s->set);
    free(s);
}

struct gw_snapshot *gw_snapshot_load(const struct gw_config *cfg, int nworkers,
                                     struct api_diags *diags)
{
    struct api_set set = {0};
    if (api_load_dir(cfg->app_path, gw_config_port_allowed, (void *)cfg, &set, diags) != 0) {
        api_set_free(&set);
        return NULL;
    }
    return gw_snapshot_build(&set, nworkers, diags);
}
