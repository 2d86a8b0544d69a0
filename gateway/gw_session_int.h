/* The session's own parts, shared by the files of its phases (see the table
 * in gw_session.h). Nothing outside those files includes this.
 *
 * The rules every phase keeps:
 *   - the state is the phase: s->phase, changed only by session_enter(),
 *     which also arms the phase's deadline;
 *   - each side's socket has one edge-triggered event for its whole life
 *     (read, write and closed), whose wake-ups go to s->phase->on_io; an
 *     edge is not repeated, so a phase that does not read a side leaves
 *     s->side[i].readable set for the phase that will;
 *   - session_end() frees the session: whoever calls it, or calls something
 *     that may, returns at once without touching s again. */
#ifndef GW_SESSION_INT_H
#define GW_SESSION_INT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "cert_dial.h"
#include "gw_relay.h"
#include "gw_session.h"
#include "gw_timer.h"

/* Why a session ended, for the log lines. */
enum gw_end {
    END_NONE,
    END_CLOSED,         /* both sides finished */
    END_CLIENT_ERROR,   /* the client reset or failed */
    END_UPSTREAM_ERROR, /* the upstream reset or failed */
    END_CONNECT_FAILED, /* no target could be reached */
    END_NO_ROUTE,       /* nothing serves this connection */
    END_IDLE_TIMEOUT,
    END_MAX_DURATION,
    END_DRAIN,
    END_INTERNAL, /* out of memory or descriptors */
    END_HANDSHAKE_FAILED,
    END_HANDSHAKE_TIMEOUT, /* also a ClientHello that did not arrive in time */
    END_BAD_CLIENT_HELLO,  /* malformed or oversized, on an SNI-routed TCP port */
    END_UPSTREAM_DOWN,     /* its host was marked down (on_marked_down: close) */
    END_PROXY_REJECTED,    /* a missing, malformed, late or untrusted PROXY header */
    END_OVERFLOW,          /* a connection limit was reached */
};

extern const char *const gw_end_names[];

struct gw_session;

/* A phase: what handles the session's events while it is in it. */
struct gw_phase {
    const char *name; /* as the architecture document names it */
    /* An event on side's socket (what: EV_READ, EV_WRITE, EV_CLOSED). */
    void (*on_io)(struct gw_session *s, enum gw_relay_side side, short what);
    /* The phase's deadline passed. */
    void (*on_deadline)(struct gw_session *s);
};

/* In the order a connection meets them. */
extern const struct gw_phase gw_phase_proxy_header; /* gw_phase_proxy.c */
extern const struct gw_phase gw_phase_peek;         /* gw_phase_route.c */
extern const struct gw_phase gw_phase_handshake;    /* gw_phase_route.c */
extern const struct gw_phase gw_phase_connect;      /* gw_phase_connect.c */
extern const struct gw_phase gw_phase_relay;        /* gw_phase_relay.c */
extern const struct gw_phase gw_phase_drain;        /* gw_phase_relay.c */

/* An IP address and port, no larger than it needs to be: a session keeps two. */
union gw_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

struct gw_session {
    struct gw_session *prev, *next;
    struct gw_session_env *env;
    const struct gw_phase *phase;
    struct gw_timer_entry timer; /* the earliest of the deadline and the limits */
    int64_t deadline_ms;         /* the phase's; 0: none */
    int64_t stop_ms;             /* the drain timeout of a shutdown or reload; 0: none */

    struct gw_snapshot *snap;
    struct gw_port *port;
    struct gw_port_stats *pst;
    struct gw_api *api; /* once routed */
    struct gw_api_stats *st;
    struct gw_target_stats *tst; /* its target's counters, once connected */

    struct gw_side side[2]; /* [GW_RELAY_CLIENT], [GW_RELAY_UPSTREAM] */
    struct gw_relay relay;  /* from the relay phase on */
    struct cert_dial dial;  /* the connect phase's */

    /* connect */
    unsigned rr_turn;       /* this connection's round-robin turn */
    unsigned attempt;       /* connect attempts made so far */
    size_t ups;             /* current upstream index */
    int addr;               /* address index within it */
    int held_target;        /* the target whose slot it holds, or -1 */
    uint64_t failed_hosts;  /* host_ids that failed a connect, to skip on retry */
    int64_t connect_by_ms;  /* the current attempt's deadline */
    int64_t eligible_by_ms; /* waiting for a first health verdict until then */

    int64_t started_ms, active_ms;
    int64_t kernel_queued; /* bytes in both sockets' send queues at the last idle check */
    int64_t flush_by_ms;   /* drain: the failed side's bytes must be delivered by then */
    uint64_t rx, tx;       /* bytes read from the client, written to it */
    int64_t rx_buffered, tx_buffered; /* what this session adds to the gauges now */
    enum gw_end failure;              /* drain: the failed side's end reason */
    const char *error;                /* a short reason for the log line, static storage */
    char *sni;                        /* the client's server name; NULL when none */
    char *alpn;                       /* the protocol negotiated with the client; NULL when none */
    bool held_total, held_source, held_api; /* slots taken of the connection limits */
    bool target_counted;                    /* in its target's cx_active */
    bool fd_waiting;                        /* counted in the worker's descriptor waiters */
    bool flushing_up;                       /* in upstream_flush_active */
    bool relaying;                          /* s->relay is set up */
    bool delivered; /* drain: the failed side's bytes all reached the other side's peer */
    bool has_orig_dst;
    int8_t first_eof; /* who closed first, for the log: 0 client, 1 upstream */

    union gw_addr peer;     /* the client: from the PROXY header when there was one */
    union gw_addr orig_dst; /* the address the client connected to, from the header */
    socklen_t peerlen;
};

/* ---- gw_session.c: the core -------------------------------------------------- */

/* Moves s into phase, with its deadline (0: none). */
void session_enter(struct gw_session *s, const struct gw_phase *phase, int64_t deadline_ms);

/* Moves the current phase's deadline (0: none). */
void session_deadline(struct gw_session *s, int64_t deadline_ms);

/* Registers side's event for its socket (s->side[side].io.fd). */
int session_watch(struct gw_session *s, enum gw_relay_side side)
    __attribute__((warn_unused_result));

/* Whether an event (what) on a side that is not being read says it may
 * have failed, and its socket confirms it (the error is taken). A reset
 * while its bytes are only peeked, or not read yet, shows no other way. */
bool session_side_failed(struct gw_session *s, enum gw_relay_side side, short what);

/* Stops watching the upstream's socket and closes it (a failed attempt). */
void session_drop_upstream(struct gw_session *s);

/* Closes the session and frees it, writing its log lines. */
void session_end(struct gw_session *s, enum gw_end why);

/* The session's definition id for logs, "-" before routing. */
const char *session_api_id(const struct gw_session *s);

/* Keeps the client's server name (sanitised) for the log and PROXY v2. */
void session_keep_name(struct gw_session *s, const char *name);

/* The session no longer waits for a descriptor. */
void session_stop_fd_wait(struct gw_session *s);

/* ---- the phases' entries --------------------------------------------------------- */

/* gw_phase_proxy.c: reads the inbound PROXY header, then routes. */
void phase_proxy_begin(struct gw_session *s);

/* gw_phase_route.c: the client's address is known: limits by source, then
 * the port's way of choosing a definition. */
void phase_route_begin(struct gw_session *s);

/* gw_phase_connect.c: the definition is known: count it and connect. */
void phase_connect_begin(struct gw_session *s, struct gw_api *api);

/* gw_phase_relay.c: both sides are up. */
void phase_relay_begin(struct gw_session *s);

/* ---- gw_session_log.c ------------------------------------------------------------ */

/* "1.2.3.4:5678", "[::1]:80" (a v4-mapped address shown as IPv4). */
void session_format_addr(const struct sockaddr *sa, char *buf, size_t len);

/* The access log's JSON line and the info line, for a session that ends. */
void session_log_end(struct gw_session *s, enum gw_end why);

#endif
