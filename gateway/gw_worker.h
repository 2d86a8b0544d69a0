/* A worker thread: its own event_base, its own SO_REUSEPORT listener per port,
 * and the sessions it accepted. Nothing on its data path is shared with other
 * workers except the read-only snapshot and the per-definition round-robin
 * counter. */
#ifndef GW_WORKER_H
#define GW_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include "gw_snapshot.h"

struct gw_access_log;

struct gw_worker;

/* on_exit runs on the worker's thread just before it ends. */
struct gw_worker_opts {
    int max_pipes;                    /* for splice(); 0 = none */
    int64_t drain_ms;                 /* what the sessions of a port a reload removes get */
    struct gw_access_log *access_log; /* NULL: none */
};

struct gw_worker *gw_worker_new(int id, struct gw_snapshot *snap, const struct gw_worker_opts *o,
                                void (*on_exit)(void *arg), void *arg)
    __attribute__((warn_unused_result));

/* Adds a listening socket for a port of the worker's snapshot; takes the fd. */
int gw_worker_listen(struct gw_worker *w, int fd, struct gw_port *port)
    __attribute__((warn_unused_result));

/* Removes the listeners of a port again (before the worker starts). */
void gw_worker_unlisten(struct gw_worker *w, const struct gw_port *port);

int gw_worker_start(struct gw_worker *w) __attribute__((warn_unused_result));

/* Thread-safe. Closes the listeners; live sessions get drain_ms to finish
 * (0: close them now). The thread ends when none are left. */
void gw_worker_stop(struct gw_worker *w, int64_t drain_ms);

/* Thread-safe. A host was marked down: close the sessions to it of the
 * definitions that ask for it. */
void gw_worker_hosts_down(struct gw_worker *w);

/* Thread-safe. A reload: the worker moves to snap (taking a reference) and
 * listens on fds[i] for ports[i] (taking the descriptors, which are set to
 * -1); its listeners of ports snap no longer serves close. Applied in order
 * on the worker's thread. */
int gw_worker_update(struct gw_worker *w, struct gw_snapshot *snap, const int *ports, int *fds,
                     size_t n) __attribute__((warn_unused_result));

void gw_worker_join(struct gw_worker *w);
void gw_worker_free(struct gw_worker *w);

#endif
