/* A proxied connection. A session is in one phase at a time, and each phase
 * owns its handlers, its deadline, the counter of those who leave by that
 * deadline and the end reason they leave with:
 *
 *   phase         file                 deadline            on timeout
 *   proxy_header  gw_phase_proxy.c     proxy_protocol_timeout  prx_timeout, proxy_rejected
 *   peek          gw_phase_route.c     handshake_timeout   tls_handshake_timeout, handshake_timeout
 *   handshake     gw_phase_route.c     handshake_timeout   tls_handshake_timeout, handshake_timeout
 *   connect       gw_phase_connect.c   connect_timeout     connect_timeout, next attempt
 *   relay         gw_phase_relay.c     idle_timeout        idle_timeout, idle_timeout
 *   drain         gw_phase_relay.c     10 s flush          -, the failed side's reason
 *   closed        gw_session.c         -                   -
 *
 * proxy_header and the route phases are skipped where the port needs none;
 * drain is entered only when a side fails with bytes still to deliver. Two
 * limits hold in every phase: max_connection_duration and, at shutdown or
 * when a reload removes the port, the drain timeout. A session lives and dies
 * on the worker that accepted it. ARCHITECTURE.md draws the same table. */
#ifndef GW_SESSION_H
#define GW_SESSION_H

#include <event2/event.h>
#include <event2/util.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_clock.h"
#include "gw_relay.h"
#include "gw_snapshot.h"
#include "gw_timer.h"

struct gw_access_log;
struct gw_session;

/* What a worker gives its sessions: one per worker thread, living as long
 * as the thread's sessions do. */
struct gw_session_env {
    struct event_base *base;
    int worker_id;
    struct gw_session *head; /* the live sessions */
    size_t count;
    struct gw_timers timers; /* their deadlines */
    /* The last session closed. */
    void (*on_empty)(void *arg);
    /* A connect found no descriptor free (delta +1, with its errno), or a
     * session that waited for one stopped waiting (-1). While any waits, the
     * worker accepts nothing: each new client would hold a descriptor and
     * wait too. */
    void (*fd_wait)(void *arg, int delta, int err);
    void *arg;
    struct gw_relay_pool *pool;       /* the worker's */
    struct gw_access_log *access_log; /* NULL: none */
};

/* Sets up env for base (the other fields are the caller's to fill). Returns
 * 0 or -1. */
int gw_session_env_init(struct gw_session_env *env, struct event_base *base, int worker_id)
    __attribute__((warn_unused_result));

/* Closes every session left (as a drain of 0 does) and frees what env holds. */
void gw_session_env_clear(struct gw_session_env *env);

/* Starts proxying an accepted client socket (non-blocking) for a port of snap.
 * Takes ownership of fd, and a reference to snap for the session's life. */
void gw_session_accept(struct gw_session_env *env, struct gw_snapshot *snap, struct gw_port *port,
                       evutil_socket_t fd, const struct sockaddr *peer, int peerlen);

/* Shutdown: every session gets until now + its drain timeout (the definition's
 * own, capped by max_ms) to finish; 0 closes them at once. */
void gw_session_drain_all(struct gw_session_env *env, int64_t max_ms);

/* The same for the sessions accepted on one port (a reload removed it). */
void gw_session_drain_port(struct gw_session_env *env, int port, int64_t max_ms);

/* Closes the sessions whose upstream host was marked down, for definitions
 * that ask for it (on_marked_down: close). */
void gw_session_close_down(struct gw_session_env *env);

#endif
