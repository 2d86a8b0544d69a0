/* A proxied connection: a small state machine that owns one deadline per state.
 *   connect (attempt n of max) -> relay -> closed
 * Half-close is kept in relay: one side's FIN is passed on once everything it
 * sent has been delivered, and the other direction keeps flowing. A session
 * lives and dies on the worker that accepted it. */
#ifndef GW_SESSION_H
#define GW_SESSION_H

#include <event2/event.h>
#include <event2/util.h>
#include <stddef.h>
#include <stdint.h>

#include "gw_clock.h"
#include "gw_relay.h"
#include "gw_snapshot.h"

struct gw_access_log;

/* How much one direction may buffer before its reader is paused. */
#define GW_RELAY_HIGH_WATERMARK (64 * 1024)

struct gw_session;

/* A worker's live sessions. on_empty is called when the last one closes. */
struct gw_session_list {
    struct gw_session *head;
    size_t count;
    void (*on_empty)(void *arg);
    void *arg;
};

struct gw_session_env {
    struct event_base *base;
    int worker_id;
    struct gw_session_list *list;
    /* A connect found no descriptor free (waiting = +1), or a session that
     * waited for one stopped waiting (-1). While any waits, the worker accepts
     * nothing: each new client would hold a descriptor and wait too. */
    void (*fd_wait)(void *arg, int delta, int err);
    void *arg;
    struct gw_relay_pool *pool;       /* the worker's, for plain relays */
    struct gw_access_log *access_log; /* NULL: none */
};

/* Starts proxying an accepted client socket (non-blocking) for a port of snap.
 * Takes ownership of fd, and a reference to snap for the session's life. */
void gw_session_accept(const struct gw_session_env *env, struct gw_snapshot *snap,
                       struct gw_port *port, evutil_socket_t fd, const struct sockaddr *peer,
                       int peerlen);

/* Shutdown: every session gets until now + its drain timeout (the definition's
 * own, capped by max_ms) to finish; 0 closes them at once. */
void gw_session_list_drain(struct gw_session_list *list, int64_t max_ms);

/* The same for the sessions accepted on one port (a reload removed it). */
void gw_session_list_drain_port(struct gw_session_list *list, int port, int64_t max_ms);

/* Closes the sessions whose upstream host was marked down, for definitions
 * that ask for it (on_marked_down: close). */
void gw_session_list_close_down(struct gw_session_list *list);

#endif
