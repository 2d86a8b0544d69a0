/* The relay between two plain TCP sockets: the data path of every connection
 * whose client and upstream sides are both clear text (TLS sessions relay
 * through bufferevents in gw_session.c).
 *
 * It is built for the common case of an idle or lightly used connection:
 *   - one edge-triggered event per socket, registered once, so a message costs
 *     one read and one write and no epoll_ctl;
 *   - bytes are read into the worker's scratch buffer and written on at once;
 *     only what the destination would not take is copied to a buffer of the
 *     connection's own, and reading stops until it has gone. An idle
 *     connection holds no buffer, and each direction holds at most one read;
 *   - a direction that moves full reads switches to splice() through a pipe
 *     from the worker's pool, so bulk data never enters user space. The pipe
 *     goes back to the pool when the direction falls idle.
 * Half-close is kept: one side's FIN is passed on once everything it sent has
 * been written, and the other direction keeps flowing. */
#ifndef GW_RELAY_H
#define GW_RELAY_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

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

enum gw_relay_side { GW_RELAY_CLIENT = 0, GW_RELAY_UPSTREAM = 1 };

struct gw_relay_ops {
    /* Bytes moved: read from side `from`, and written to the other side. */
    void (*moved)(void *arg, enum gw_relay_side from, size_t nread, size_t nwritten);
    /* Reading from `from` stopped because the other side would not take more
     * (paused), or resumed once it did. */
    void (*flow)(void *arg, enum gw_relay_side from, bool paused);
    /* A side failed (a reset, or a write error). When flushing is true, what
     * the failed side had sent is still being written to the other side, and
     * done() follows once it is; otherwise the relay is finished. */
    void (*failed)(void *arg, enum gw_relay_side side, bool flushing);
    /* Both directions ended cleanly, or a failed side's bytes were flushed. */
    void (*done)(void *arg);
};

struct gw_relay;

/* Starts relaying between two connected non-blocking sockets; takes ownership
 * of both descriptors (also on failure, when it returns NULL). to_upstream
 * and to_client are bytes already read from one side for the other (a
 * PROXY header, the client's first bytes); they are copied. The callbacks run
 * on the base's thread; after failed(flushing = false) or done(), the relay
 * calls nothing more and must be freed. */
struct gw_relay *gw_relay_new(struct event_base *base, struct gw_relay_pool *pool, int client_fd,
                              int upstream_fd, const void *to_upstream, size_t to_upstream_len,
                              const void *to_client, size_t to_client_len,
                              const struct gw_relay_ops *ops, void *arg);

/* How a relay is freed: after a clean end; stopped early (a side with bytes
 * still owed to it is reset, as they are lost); or reset on both sides, so
 * each peer learns that the stream was cut. */
enum gw_relay_close { GW_RELAY_CLEAN, GW_RELAY_STOP, GW_RELAY_RESET };

/* Closes both sockets and frees the relay. Accepts NULL. */
void gw_relay_free(struct gw_relay *r, enum gw_relay_close how);

int gw_relay_fd(const struct gw_relay *r, enum gw_relay_side side);

/* The side whose FIN came first (who closed), or -1 while neither has. */
int gw_relay_first_eof(const struct gw_relay *r);

/* Bytes read from `from` and not yet written to the other side. */
size_t gw_relay_buffered(const struct gw_relay *r, enum gw_relay_side from);

#endif
