/* The routing snapshot: an immutable view of the loaded definitions that the
 * workers route by. Built on the control thread, shared read-only by workers;
 * a session holds a reference to the snapshot it started on. */
#ifndef GW_SNAPSHOT_H
#define GW_SNAPSHOT_H

#include <stdbool.h>
#include <sys/socket.h>

#include "api_loader.h"
#include "gw_config.h"
#include "gw_stats.h"

#define GW_MAX_ADDRS 4

/* One entry of a definition's target list (repeats are separate entries). */
struct gw_upstream {
    struct api_target target;
    char name[API_HOST_MAX + 16]; /* host:port, for logs */
    unsigned host_id;             /* equal for entries naming the same host:port */
    int naddrs;
    socklen_t addrlen[GW_MAX_ADDRS];
    struct sockaddr_storage addr[GW_MAX_ADDRS];
};

struct gw_api {
    const struct api_def *def; /* owned by the snapshot's set */
    struct gw_upstream *ups;
    size_t nups;
    unsigned rr;                /* round-robin counter, shared by workers */
    struct gw_api_stats *stats; /* one slot per worker */
};

struct gw_port_stats {
    int64_t no_route; /* connections no definition could take */
} __attribute__((aligned(64)));

struct gw_port {
    int port;
    enum api_protocol protocol;
    struct gw_api **apis; /* the definitions served on this port */
    size_t napis;
    struct gw_api *route;        /* where connections go; NULL: none can be chosen */
    struct gw_port_stats *stats; /* one slot per worker */
};

struct gw_snapshot {
    int refs;
    int nworkers;
    struct api_set set;
    struct gw_api *apis;
    size_t napis;
    struct gw_port *ports;
    size_t nports;
};

/* Builds a snapshot from a loaded set (taking it over; it is emptied). Targets are
 * resolved here; a definition that cannot be served is reported and dropped.
 * Returns NULL only when memory runs out. */
struct gw_snapshot *gw_snapshot_build(struct api_set *set, int nworkers, struct api_diags *diags)
    __attribute__((warn_unused_result));

struct gw_snapshot *gw_snapshot_ref(struct gw_snapshot *s);
void gw_snapshot_unref(struct gw_snapshot *s);

/* The port entry for a listening port, or NULL. */
struct gw_port *gw_snapshot_port(struct gw_snapshot *s, int port);

/* Loads app_path and builds the snapshot, as both start-up and --check do. */
struct gw_snapshot *gw_snapshot_load(const struct gw_config *cfg, int nworkers,
                                     struct api_diags *diags) __attribute__((warn_unused_result));

#endif
