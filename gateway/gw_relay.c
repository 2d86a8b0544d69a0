#define _GNU_SOURCE /* splice, pipe2 */
#include "gw_relay.h"

#include <errno.h>
#include <event2/event_struct.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* One read's worth: the scratch buffer, and what a splice asks for at once. */
#define CHUNK (64 * 1024)
/* A splice read at least this large keeps a direction on splice; a smaller
 * one sends it back to copying, where small messages are cheaper. */
#define SPLICE_MIN (16 * 1024)
/* Bytes one direction may move per wake-up before it yields to the other
 * connections of the worker. */
#define ROUND_BUDGET (256 * 1024)
/* Idle pipes a pool keeps for reuse; the others are closed when returned. */
#define POOL_KEEP 64

struct gw_relay_pool {
    char *scratch; /* CHUNK bytes */
    int max_pipes; /* in use at once; 0 = no splice */
    int in_use;
    int fd_ceiling;    /* a pipe whose descriptors land above this is not kept */
    bool short_of_fds; /* connections wait for descriptors: pipes give theirs up */
    int nidle;
    int idle[POOL_KEEP][2];
};

/* One direction: bytes read from side src are written to the other side. */
struct dir {
    char *buf; /* what the other side would not take yet; NULL when none */
    size_t off, len;
    int pipe[2]; /* while splicing; -1 when none */
    size_t inpipe;
    bool bulk;   /* the last read was full: splice the next */
    bool paused; /* bytes are owed to the other side: reading waits */
    bool rdhup;  /* src's FIN has arrived, maybe behind data still unread */
    bool eof;    /* src sent its FIN */
    bool shut;   /* and it was passed on */
};

struct gw_relay {
    struct event ev[2];
    int fd[2];
    struct dir d[2]; /* d[i] reads from side i */
    struct gw_relay_pool *pool;
    const struct gw_relay_ops *ops;
    void *arg;
    int failed;    /* the side that failed, or -1 */
    int first_eof; /* the side whose FIN came first, or -1 */
};

/* ---- the pipe pool ----------------------------------------------------------- */

struct gw_relay_pool *gw_relay_pool_new(int max_pipes)
{
    struct gw_relay_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->scratch = malloc(CHUNK);
    if (p->scratch == NULL) {
        free(p);
        return NULL;
    }
    p->max_pipes = max_pipes > 0 ? max_pipes : 0;
    /* Pipes are a saving; connections are the service. Descriptors are given
     * out lowest first, so one numbered in the top eighth of the limit means
     * the process is nearly out: no pipe takes two more then. */
    struct rlimit rl;
    long limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                     ? (long)rl.rlim_cur
                     : 1L << 20;
    p->fd_ceiling = (int)(limit - (limit / 8 > 64 ? limit / 8 : 64));
    return p;
}

/* Closes the idle pipes the pool keeps. */
static void drop_idle(struct gw_relay_pool *p)
{
    for (int i = 0; i < p->nidle; i++) {
        close(p->idle[i][0]);
        close(p->idle[i][1]);
    }
    p->nidle = 0;
}

void gw_relay_pool_short_of_fds(struct gw_relay_pool *p, bool short_of_fds)
{
    p->short_of_fds = short_of_fds;
    if (short_of_fds)
        drop_idle(p);
}

void gw_relay_pool_free(struct gw_relay_pool *p)
{
    if (p == NULL)
        return;
    drop_idle(p);
    free(p->scratch);
    free(p);
}

/* Gives d a pipe; false when splice is off, at its limit, or the descriptors
 * ran out: the direction then copies, which always works. */
static bool pipe_get(struct gw_relay_pool *p, struct dir *d)
{
    if (d->pipe[0] >= 0)
        return true;
    if (p->in_use >= p->max_pipes || p->short_of_fds)
        return false;
    if (p->nidle > 0) {
        p->nidle--;
        d->pipe[0] = p->idle[p->nidle][0];
        d->pipe[1] = p->idle[p->nidle][1];
    } else if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        d->pipe[0] = d->pipe[1] = -1;
        return false;
    } else if (d->pipe[1] >= p->fd_ceiling) {
        close(d->pipe[0]);
        close(d->pipe[1]);
        d->pipe[0] = d->pipe[1] = -1;
        return false;
    }
    p->in_use++;
    return true;
}

/* Returns d's pipe. One that still holds bytes cannot be reused: they would
 * reach another connection's peer. The kernel is asked as well, since a
 * pipe goes back to the pool only when a direction falls idle. */
static void pipe_put(struct gw_relay_pool *p, struct dir *d)
{
    if (d->pipe[0] < 0)
        return;
    int queued = -1;
    if (d->inpipe == 0 && p->nidle < POOL_KEEP && !p->short_of_fds &&
        ioctl(d->pipe[0], FIONREAD, &queued) == 0 && queued == 0) {
        p->idle[p->nidle][0] = d->pipe[0];
        p->idle[p->nidle][1] = d->pipe[1];
        p->nidle++;
    } else {
        close(d->pipe[0]);
        close(d->pipe[1]);
    }
    p->in_use--;
    d->pipe[0] = d->pipe[1] = -1;
    d->inpipe = 0;
}

/* ---- one direction -------------------------------------------------------------- */

static size_t owed(const struct dir *d)
{
    return d->len + d->inpipe;
}

static bool would_block(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK;
}

/* What a step of a direction found. */
enum step { STEP_WAIT, STEP_MORE, STEP_SRC_FAILED, STEP_DST_FAILED };

/* Writes what d owes to dst. STEP_MORE when all of it went. */
static enum step flush(struct gw_relay *r, int i)
{
    struct dir *d = &r->d[i];
    int dst = r->fd[!i];
    while (owed(d) > 0) {
        ssize_t w;
        if (d->inpipe > 0)
            w = splice(d->pipe[0], NULL, dst, NULL, d->inpipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        else
            w = send(dst, d->buf + d->off, d->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return would_block() ? STEP_WAIT : STEP_DST_FAILED;
        if (d->inpipe > 0) {
            d->inpipe -= (size_t)w;
        } else {
            d->off += (size_t)w;
            d->len -= (size_t)w;
        }
        /* After the state moved: the callback may ask what is still owed. */
        r->ops->moved(r->arg, (enum gw_relay_side)i, 0, (size_t)w);
    }
    free(d->buf);
    d->buf = NULL;
    d->off = 0;
    if (!d->bulk)
        pipe_put(r->pool, d);
    return STEP_MORE;
}

/* Reads once from src and writes it on; what dst would not take is kept. */
static enum step read_once(struct gw_relay *r, int i, size_t *moved)
{
    struct dir *d = &r->d[i];
    int src = r->fd[i], dst = r->fd[!i];
    bool spliced = d->bulk && pipe_get(r->pool, d);
    ssize_t n;
    do {
        if (spliced)
            n = splice(src, NULL, d->pipe[1], NULL, CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        else
            n = recv(src, r->pool->scratch, CHUNK, MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n == 0) {
        d->eof = true;
        if (r->first_eof < 0)
            r->first_eof = i;
        pipe_put(r->pool, d);
        return STEP_MORE;
    }
    if (n < 0) {
        if (!would_block())
            return STEP_SRC_FAILED;
        pipe_put(r->pool, d); /* an idle direction holds no pipe */
        return STEP_WAIT;
    }
    *moved += (size_t)n;
    d->bulk = spliced ? n >= SPLICE_MIN : n == CHUNK;
    if (spliced)
        d->inpipe = (size_t)n; /* counted at once: if dst fails, the pipe is not reused */
    ssize_t w;
    do {
        if (spliced)
            w = splice(d->pipe[0], NULL, dst, NULL, (size_t)n, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        else
            w = send(dst, r->pool->scratch, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (w < 0 && errno == EINTR);
    if (w < 0 && !would_block())
        return STEP_DST_FAILED;
    if (w < 0)
        w = 0;
    size_t left = (size_t)(n - w);
    if (spliced) {
        d->inpipe = left;
        if (left == 0 && !d->bulk)
            pipe_put(r->pool, d);
    } else if (left > 0) {
        d->buf = malloc(left);
        if (d->buf == NULL)
            return STEP_DST_FAILED; /* the bytes cannot be kept: the stream is cut */
        memcpy(d->buf, r->pool->scratch + w, left);
        d->len = left;
    }
    r->ops->moved(r->arg, (enum gw_relay_side)i, (size_t)n, (size_t)w);
    if (left > 0)
        return STEP_WAIT;
    /* A short TCP read emptied the socket, and with edge-triggered events a
     * new arrival wakes us again; but a FIN that came with the data brings
     * no further edge, so then we read on to find it. A splice may stop
     * short at the pipe's slot count, so it reads on until the socket says it
     * is empty. */
    return !spliced && !d->rdhup && (size_t)n < CHUNK ? STEP_WAIT : STEP_MORE;
}

/* Reading from side i waits until the other side takes what is owed. */
static void hold_reading(struct gw_relay *r, int i)
{
    if (!r->d[i].paused) {
        r->d[i].paused = true;
        r->ops->flow(r->arg, (enum gw_relay_side)i, true);
    }
}

/* Moves what it can in direction i: first what is owed, then new reads, until
 * something would block or the round's budget is spent. */
static enum step pump(struct gw_relay *r, int i)
{
    struct dir *d = &r->d[i];
    size_t moved = 0;
    for (;;) {
        enum step st = flush(r, i);
        if (st != STEP_MORE) {
            if (st == STEP_WAIT)
                hold_reading(r, i);
            return st;
        }
        if (d->paused) {
            d->paused = false;
            r->ops->flow(r->arg, (enum gw_relay_side)i, false);
        }
        if (r->failed >= 0)
            return STEP_WAIT; /* flushing only: nothing more is read */
        if (d->eof) {
            if (!d->shut) {
                shutdown(r->fd[!i], SHUT_WR);
                d->shut = true;
            }
            return STEP_WAIT;
        }
        if (moved >= ROUND_BUDGET) {
            event_active(&r->ev[i], EV_READ, 0); /* go on after the others */
            return STEP_WAIT;
        }
        st = read_once(r, i, &moved);
        if (st == STEP_WAIT && owed(d) > 0)
            hold_reading(r, i); /* dst is full: its next writable edge goes on */
        if (st != STEP_MORE)
            return st;
    }
}

/* ---- the connection ---------------------------------------------------------------- */

/* Side `side` failed: deliver what it had sent, drop what was owed to it. */
static void fail(struct gw_relay *r, int side)
{
    if (r->failed >= 0) {
        r->ops->done(r->arg); /* the flushing side failed too: nothing more goes */
        return;
    }
    r->failed = side;
    bool flushing = owed(&r->d[side]) > 0;
    r->ops->failed(r->arg, (enum gw_relay_side)side, flushing);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    struct gw_relay *r = arg;
    int i = fd == r->fd[GW_RELAY_CLIENT] ? GW_RELAY_CLIENT : GW_RELAY_UPSTREAM;
    enum step st = STEP_WAIT;
    if (what & EV_CLOSED)
        r->d[i].rdhup = true;
    int failed_side = -1;
    /* Writable: the direction that writes here may go on, if it owes bytes. */
    if ((what & EV_WRITE) && owed(&r->d[!i]) > 0) {
        st = pump(r, !i);
        if (st == STEP_SRC_FAILED)
            failed_side = !i;
        else if (st == STEP_DST_FAILED)
            failed_side = i;
    }
    if (failed_side < 0 && (what & (EV_READ | EV_CLOSED)) && r->failed < 0 && !r->d[i].paused &&
        !r->d[i].eof) {
        st = pump(r, i);
        if (st == STEP_SRC_FAILED)
            failed_side = i;
        else if (st == STEP_DST_FAILED)
            failed_side = !i;
    }
    if (failed_side >= 0) {
        fail(r, failed_side);
        return;
    }
    if (r->failed >= 0 ? owed(&r->d[r->failed]) == 0 : r->d[0].shut && r->d[1].shut)
        r->ops->done(r->arg);
}

struct gw_relay *gw_relay_new(struct event_base *base, struct gw_relay_pool *pool, int client_fd,
                              int upstream_fd, const void *to_upstream, size_t to_upstream_len,
                              const void *to_client, size_t to_client_len,
                              const struct gw_relay_ops *ops, void *arg)
{
    struct gw_relay *r = calloc(1, sizeof(*r));
    if (r == NULL)
        goto fail_fds;
    r->fd[GW_RELAY_CLIENT] = client_fd;
    r->fd[GW_RELAY_UPSTREAM] = upstream_fd;
    r->pool = pool;
    r->ops = ops;
    r->arg = arg;
    r->failed = -1;
    r->first_eof = -1;
    const void *owed_bytes[2] = {to_upstream, to_client};
    size_t owed_len[2] = {to_upstream_len, to_client_len};
    for (int i = 0; i < 2; i++) {
        r->d[i].pipe[0] = r->d[i].pipe[1] = -1;
        if (owed_len[i] > 0) {
            r->d[i].buf = malloc(owed_len[i]);
            if (r->d[i].buf == NULL)
                goto fail_relay;
            memcpy(r->d[i].buf, owed_bytes[i], owed_len[i]);
            r->d[i].len = owed_len[i];
        }
    }
    for (int i = 0; i < 2; i++)
        event_assign(&r->ev[i], base, r->fd[i], EV_READ | EV_WRITE | EV_CLOSED | EV_ET | EV_PERSIST,
                     on_io, r);
    if (event_add(&r->ev[0], NULL) != 0 || event_add(&r->ev[1], NULL) != 0)
        goto fail_events;
    /* The first round runs from the loop, like every other: what the sockets
     * already hold, and what is owed, move then. */
    event_active(&r->ev[0], EV_READ | EV_WRITE, 0);
    event_active(&r->ev[1], EV_READ | EV_WRITE, 0);
    return r;

fail_events:
    event_del(&r->ev[0]);
    event_del(&r->ev[1]);
fail_relay:
    free(r->d[0].buf);
    free(r->d[1].buf);
    free(r);
fail_fds:
    close(client_fd);
    close(upstream_fd);
    return NULL;
}

void gw_relay_free(struct gw_relay *r, enum gw_relay_close how)
{
    if (r == NULL)
        return;
    for (int i = 0; i < 2; i++) {
        event_del(&r->ev[i]);
        /* Bytes owed to side i and never written: its peer must not take the
         * stream for complete. */
        bool cut = how == GW_RELAY_RESET || (how == GW_RELAY_STOP && owed(&r->d[!i]) > 0);
        if (cut) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(r->fd[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
    }
    for (int i = 0; i < 2; i++) {
        close(r->fd[i]);
        pipe_put(r->pool, &r->d[i]);
        free(r->d[i].buf);
    }
    free(r);
}

int gw_relay_fd(const struct gw_relay *r, enum gw_relay_side side)
{
    return r->fd[side];
}

size_t gw_relay_buffered(const struct gw_relay *r, enum gw_relay_side from)
{
    return owed(&r->d[from]);
}

int gw_relay_first_eof(const struct gw_relay *r)
{
    return r->first_eof;
}
