/* The data path of every connection: bytes relayed between a session's two
 * sides, each a socket with TLS over it or not (certs/cert_io.h). Plain and
 * TLS sides follow one contract; only the calls that move the bytes differ.
 *
 * It is built for the common case of an idle or lightly used connection:
 *   - each socket has one edge-triggered event, registered once by the
 *     session, which hands every wake-up to gw_relay_on_io; a message costs
 *     one read and one write and no epoll_ctl;
 *   - bytes are read into the worker's scratch buffer and written on at once;
 *     only what the destination would not take is copied to a buffer of the
 *     direction's own, and reading stops until it has gone. An idle
 *     connection holds no buffer, and each direction holds at most one read;
 *   - between two plain sockets, a direction that moves full reads switches
 *     to splice() through a pipe from the worker's pool, so bulk data never
 *     enters user space. The pipe goes back when the direction falls idle.
 *
 * The rules, written here once for both transports:
 *   - half-close: one side's end (a FIN, or TLS close_notify) is passed on
 *     once everything it sent has been written (close_notify, then the FIN),
 *     and the other direction keeps flowing;
 *   - backpressure: a direction whose destination would not take all of a
 *     read stops reading until it has; its source's failure is still
 *     noticed at once (the socket is asked when its event says it closed);
 *   - a side that fails (a reset, a write error) is read to its end, and
 *     every byte it sent that tcpgate acknowledged goes to the other side;
 *     what was owed to the failed side is dropped. Then gw_relay_end():
 *     the other side gets a reset once its send queue is empty, so that its
 *     peer learns the stream was cut without losing what it was sent;
 *   - byte counting: ops->moved, and nowhere else. */
#ifndef GW_RELAY_H
#define GW_RELAY_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cert_io.h"

/* A worker's scratch buffer and pipe pool; used by that worker's thread only. */
struct gw_relay_pool;

/* max_pipes bounds the pipes in use at once (2 descriptors each); 0 disables
 * splice. NULL when out of memory. */
struct gw_relay_pool *gw_relay_pool_new(int max_pipes);
void gw_relay_pool_free(struct gw_relay_pool *pool);

/* While connections wait for a descriptor, the pool closes its idle pipes,
 * takes no new ones and closes those given back, so that splice never costs
 * a connection. Pipes are also refused when their descriptors would be in
 * the top eighth of RLIMIT_NOFILE. */
void gw_relay_pool_short_of_fds(struct gw_relay_pool *pool, bool short_of_fds);

/* What one read asks for. */
#define GW_RELAY_CHUNK (64 * 1024)
/* The worker's scratch buffer, for a reader that is done with it before it
 * returns to the loop: a read, a peeked ClientHello, or a PROXY header (up
 * to 16 + 65535 bytes). */
#define GW_RELAY_SCRATCH (GW_RELAY_CHUNK + 4096)
char *gw_relay_scratch(struct gw_relay_pool *pool);

enum gw_relay_side { GW_RELAY_CLIENT = 0, GW_RELAY_UPSTREAM = 1 };

/* One side of a session: its socket, and the one event the session keeps
 * for it (read, write and closed, edge-triggered). */
struct gw_side {
    struct cert_io io;
    struct event ev;
    bool ev_added;
    bool readable; /* an edge said so, and nothing has been read since */
    bool closed;   /* an edge said its end arrived (EV_CLOSED) */
};

struct gw_relay_ops {
    /* Bytes moved: read from side `from`, and written to the other side. */
    void (*moved)(void *arg, enum gw_relay_side from, size_t nread, size_t nwritten);
    /* Reading from `from` stopped because the other side would not take more
     * (paused), or resumed once it did. */
    void (*flow)(void *arg, enum gw_relay_side from, bool paused);
};

/* One direction: bytes read from side i are written to the other side. */
struct gw_relay_dir {
    char *buf; /* what the destination would not take yet; NULL when none */
    uint32_t off, len;
    int pipe[2]; /* while splicing; -1 when none */
    uint32_t inpipe;
    bool bulk;        /* the last read was full: splice the next */
    bool paused;      /* bytes are owed to the destination: reading waits */
    bool rdhup;       /* the source's end has arrived, maybe behind data unread */
    bool eof;         /* the source ended (or, once it failed, was read to its end) */
    bool shut;        /* and its end was passed on */
    bool dead;        /* the destination failed: nothing more is moved */
    bool rd_on_write; /* a TLS read waits for the source to be writable */
    bool wr_on_read;  /* a TLS write waits for the destination to be readable */
};

struct gw_relay {
    struct gw_side *side; /* the session's two, [GW_RELAY_CLIENT] and [GW_RELAY_UPSTREAM] */
    struct gw_relay_pool *pool;
    const struct gw_relay_ops *ops;
    void *arg;
    struct gw_relay_dir d[2]; /* d[i] reads from side i */
    int8_t failed;            /* the side that failed, or -1 */
    int8_t first_eof;         /* the side whose end came first, or -1 */
    bool broken;              /* nothing more can be delivered */
    bool splice_ok;           /* both sides are plain */
};

/* What a relay has come to. */
enum gw_relay_result {
    GW_RELAY_GOING,
    /* A side failed just now (r->failed); what it sent is still being
     * delivered to the other side. Reported once. */
    GW_RELAY_FAILED,
    /* Both directions ended and their ends were passed on; or a side failed
     * and everything it sent reached the other side's socket. */
    GW_RELAY_DONE,
    /* Nothing more can be delivered: both sides failed. */
    GW_RELAY_BROKEN,
};

/* Starts relaying between two connected sides, both with their events
 * added; the relay keeps pointers to them and to ops. Sides marked readable
 * (or closed) are read at once, as is a TLS side that holds bytes already. The
 * callbacks run on the base's thread, from this call and gw_relay_on_io. */
enum gw_relay_result gw_relay_start(struct gw_relay *r, struct gw_side *sides,
                                    struct gw_relay_pool *pool, const struct gw_relay_ops *ops,
                                    void *arg);

/* The event of side `side` fired with `what` (EV_READ, EV_WRITE, EV_CLOSED). */
enum gw_relay_result gw_relay_on_io(struct gw_relay *r, enum gw_relay_side side, short what);

/* How the sides are closed at the end:
 *   CLEAN: both directions ended: each gets its FIN (it has one already);
 *   DELIVERED: a side failed and all it sent was delivered: the other side
 *     gets a reset (call it once that side's send queue is empty);
 *   STOP: the session was stopped (a timeout, a drain, a deadline): a side
 *     that is still owed bytes gets a reset, since they are lost; the other
 *     its FIN, after anything it sent that was not read is dropped (unread
 *     input would make the kernel reset it and drop what it was sent);
 *   RESET: both sides get a reset. */
enum gw_relay_end { GW_RELAY_CLEAN, GW_RELAY_DELIVERED, GW_RELAY_STOP, GW_RELAY_RESET };

/* Closes both sides' sockets by that rule and frees what the relay holds.
 * The events must have been deleted. */
void gw_relay_end(struct gw_relay *r, enum gw_relay_end how);

/* Bytes read from `from` and not yet written to the other side. */
size_t gw_relay_buffered(const struct gw_relay *r, enum gw_relay_side from);

#endif
