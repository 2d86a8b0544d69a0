/* The routing snapshot: an immutable view of the loaded definitions that the
 * workers route by. Built on the control thread, shared read-only by workers;
 * a session holds a reference to the snapshot it started on. */
#ifndef GW_SNAPSHOT_H
#define GW_SNAPSHOT_H

#include <stdbool.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "api_loader.h"
#include "cert_store.h"
#include "cert_tls.h"
#include "gw_config.h"
#include "gw_sni.h"
#include "gw_stats.h"
#include "hc_engine.h"
#include "hc_sentinel.h"

#define GW_MAX_ADDRS 4

/* One entry of a definition's target list (repeats are separate entries). */
struct gw_upstream {
    struct api_target target;
    char name[API_HOST_MAX + 16];  /* host:port, for logs */
    char label[API_HOST_MAX + 24]; /* scheme://host:port, for metrics */
    unsigned host_id;              /* equal for entries naming the same host:port */
    int naddrs;
    socklen_t addrlen[GW_MAX_ADDRS];
    struct sockaddr_storage addr[GW_MAX_ADDRS];
    /* tls:// targets */
    struct cert_entry *client_cert; /* from upstream_certificates; NULL: none */
    const char *pins;               /* from pinned_public_keys; NULL: none */
    SSL_SESSION **sessions;         /* one resumable session per worker */
    struct hc_target *hc;           /* its health check; NULL: not checked */
    struct hc_sentinel_node *node;  /* sentinel mode: the node it is; NULL: no sentinel */
    struct gw_target_stats *stats;  /* one slot per worker, from the registry */
    int64_t *active;                /* connections holding a slot of it, all workers */
};

struct gw_api {
    const struct api_def *def; /* owned by the snapshot's set */
    struct gw_upstream *ups;
    /* Entries of ups in use. Fixed, but for a sentinel definition without an
     * allow-list, whose ups (of HC_SENTINEL_MAX_NODES entries) follow the
     * nodes its watcher names: the control thread fills an entry, then
     * raises nups (release); workers read it with gw_api_nups (acquire). */
    size_t nups;
    struct hc_sentinel *sentinel; /* tcpgate.sentinel: its watcher; NULL: none */
    bool dynamic;                 /* sentinel mode without an allow-list */
    bool close_on_down;           /* on_marked_down, resolved: close live sessions */
    unsigned rr;                  /* round-robin counter, shared by workers */
    struct gw_api_stats *stats;   /* one slot per worker, from the registry */
    int64_t *active;              /* its open connections, all workers (max_connections) */
    SSL_CTX *server_ctx;          /* protocol tls: this definition's certificate */
    SSL_CTX *client_ctx;          /* tls:// targets */
    bool verify_upstream;
    unsigned char alpn[256]; /* the listener's ALPN list, wire format */
    size_t alpn_len;
};

enum gw_route_mode {
    GW_ROUTE_SINGLE, /* one definition: nothing to choose */
    GW_ROUTE_PEEK,   /* tcp, several domains: peek at the ClientHello's SNI */
    GW_ROUTE_TLS,    /* tls: the SNI picks certificate and definition in the handshake */
};

struct gw_port {
    int port;
    enum api_protocol protocol;
    struct gw_api **apis; /* the definitions served on this port */
    size_t napis;
    enum gw_route_mode mode;
    struct gw_api *route; /* GW_ROUTE_SINGLE: where connections go */
    struct gw_sni *sni;   /* PEEK and TLS: server name -> definition */
    SSL_CTX *front;       /* TLS: the context handshakes start on */
    /* Inbound PROXY protocol: a port-wide setting, since the header comes first. */
    bool proxy_in;
    bool proxy_optional;
    int64_t proxy_timeout_ms;
    const struct api_cidr *trusted; /* NULL: anyone may send a header */
    size_t ntrusted;
    struct gw_port_stats *stats; /* one slot per worker, from the registry */
};

/* What the snapshot needs beyond the definitions: the gateway config, the
 * certificate folder and the ticket keys, all owned by the runtime. */
struct gw_build_env {
    const struct gw_config *cfg;
    struct cert_store *store;
    struct cert_ticket_keys *keys;
    struct hc_engine *hc;         /* NULL: validate checks without running them (--check) */
    struct gw_registry *registry; /* counters by name; NULL: the snapshot's own */
    struct gw_sources *sources;   /* connections per client address; NULL: no such limit */
};

/* Upstreams api has now. Lock-free. */
static inline size_t gw_api_nups(const struct gw_api *api)
{
    return __atomic_load_n(&api->nups, __ATOMIC_ACQUIRE);
}

/* Whether the balancer may pick upstream i of api now: the one question the
 * gateway asks the health checks (and the sentinels). Lock-free. */
bool gw_upstream_eligible(const struct gw_api *api, size_t i);

/* Whether upstream i was marked down (its check failed, or the sentinels no
 * longer name it), so that its live sessions close (api->close_on_down).
 * Lock-free. */
bool gw_upstream_marked_down(const struct gw_api *api, size_t i);

/* Whether a connection that finds no eligible target should wait for a
 * verdict (up to its connect timeout): a gating check has not decided yet,
 * one the sentinels asked for is running, or the sentinels have not named
 * the master yet or hold it in a failover. Lock-free. */
bool gw_api_settling(const struct gw_api *api);

/* The definition a client may reach on a port for a server name (NULL: none
 * sent): exact, wildcard, the fallback, or the port's only definition when the
 * client sent no name. NULL when none matches. */
struct gw_api *gw_port_route_sni(const struct gw_port *p, const char *sni);

struct gw_snapshot {
    int refs;
    int nworkers;
    int64_t handshake_timeout_ms; /* before routing: TLS handshake or ClientHello */
    size_t client_hello_max;
    size_t proxy_header_max; /* bytes an inbound PROXY header may span */
    struct api_set set;
    struct gw_api *apis;
    size_t napis;
    struct gw_port *ports;
    size_t nports;
    struct gw_registry *own_registry; /* when the build env brought none */
    /* Limits across the gateway. */
    int64_t *active_total;      /* open connections, all workers */
    int64_t max_connections;    /* gateway-wide; 0: the descriptor limit only */
    int max_per_source;         /* 0: no limit */
    struct gw_sources *sources; /* borrowed from the runtime */
};

/* Builds a snapshot from a loaded set (taking it over; it is emptied). Targets are
 * resolved here; a definition that cannot be served is reported and dropped.
 * Returns NULL when a port cannot be set up at all (its shared TLS context:
 * reported in diags), which fails the whole build. Running out of memory
 * aborts, as on every build path (ARCHITECTURE.md, "Out of memory"). */
struct gw_snapshot *gw_snapshot_build(struct api_set *set, int nworkers,
                                      const struct gw_build_env *env, struct api_diags *diags)
    __attribute__((warn_unused_result));

struct gw_snapshot *gw_snapshot_ref(struct gw_snapshot *s);
void gw_snapshot_unref(struct gw_snapshot *s);

/* The port entry for a listening port, or NULL. */
struct gw_port *gw_snapshot_port(struct gw_snapshot *s, int port);

/* Control thread: the definitions whose targets the sentinels name take the
 * nodes their watchers added since (with their counters and checks). */
void gw_snapshot_sync(struct gw_snapshot *s, const struct gw_build_env *env);

/* Loads app_path and builds the snapshot, as both start-up and --check do. */
struct gw_snapshot *gw_snapshot_load(const struct gw_build_env *env, int nworkers,
                                     struct api_diags *diags) __attribute__((warn_unused_result));

#endif
