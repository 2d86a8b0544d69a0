#define _GNU_SOURCE /* splice, pipe2 */
#include "gw_relay.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* A splice read at least this large keeps a direction on splice; a smaller
 * one sends it back to copying, where small messages are cheaper. */
#define SPLICE_MIN (16 * 1024)
/* Bytes one direction may move per wake-up before it yields to the other
 * connections of the worker. */
#define ROUND_BUDGET (256 * 1024)
/* Idle pipes a pool keeps for reuse; the others are closed when returned. */
#define POOL_KEEP 64

struct gw_relay_pool {
    char *scratch; /* GW_RELAY_SCRATCH bytes */
    int max_pipes; /* in use at once; 0 = no splice */
    int in_use;
    int fd_ceiling;    /* a pipe whose descriptors land above this is not kept */
    bool short_of_fds; /* connections wait for descriptors: pipes give theirs up */
    int nidle;
    int idle[POOL_KEEP][2];
};

/* ---- the pipe pool ----------------------------------------------------------- */

struct gw_relay_pool *gw_relay_pool_new(int max_pipes)
{
    struct gw_relay_pool *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->scratch = malloc(GW_RELAY_SCRATCH);
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

char *gw_relay_scratch(struct gw_relay_pool *p)
{
    return p->scratch;
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
static bool pipe_get(struct gw_relay_pool *p, struct gw_relay_dir *d)
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
static void pipe_put(struct gw_relay_pool *p, struct gw_relay_dir *d)
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

static size_t owed(const struct gw_relay_dir *d)
{
    return (size_t)d->len + d->inpipe;
}

static bool would_block(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK;
}

/* What a step of a direction found. */
enum step { STEP_WAIT, STEP_MORE, STEP_SRC_FAILED, STEP_DST_FAILED };

/* Moves bytes from d's pipe to the destination: how many, CERT_IO_AGAIN or
 * CERT_IO_ERROR, as cert_io_write does. */
static ssize_t splice_out(struct gw_relay_dir *d, int dst, size_t n)
{
    ssize_t w;
    do
        w = splice(d->pipe[0], NULL, dst, NULL, n, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    while (w < 0 && errno == EINTR);
    if (w >= 0)
        return w;
    return would_block() ? CERT_IO_AGAIN : CERT_IO_ERROR;
}

/* Writes what d owes to dst. STEP_MORE when all of it went. */
static enum step flush(struct gw_relay *r, int i)
{
    struct gw_relay_dir *d = &r->d[i];
    struct cert_io *dst = &r->side[!i].io;
    while (owed(d) > 0) {
        ssize_t w = d->inpipe > 0 ? splice_out(d, dst->fd, d->inpipe)
                                  : cert_io_write(dst, d->buf + d->off, d->len);
        if (w == CERT_IO_AGAIN) {
            d->wr_on_read = dst->ssl != NULL && !dst->want_write;
            return STEP_WAIT;
        }
        if (w < 0)
            return STEP_DST_FAILED;
        d->wr_on_read = false;
        if (d->inpipe > 0) {
            d->inpipe -= (uint32_t)w;
        } else {
            d->off += (uint32_t)w;
            d->len -= (uint32_t)w;
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

/* The source's end: it has nothing more to send. */
static void source_ended(struct gw_relay *r, int i)
{
    r->d[i].eof = true;
    if (r->first_eof < 0)
        r->first_eof = (int8_t)i;
    if (r->d[i].inpipe == 0)
        pipe_put(r->pool, &r->d[i]);
}

/* Reads once from src and writes it on; what dst would not take is kept. */
static enum step read_once(struct gw_relay *r, int i, size_t *moved)
{
    struct gw_relay_dir *d = &r->d[i];
    struct cert_io *src = &r->side[i].io, *dst = &r->side[!i].io;
    char *scratch = r->pool->scratch;
    bool spliced = r->splice_ok && d->bulk && pipe_get(r->pool, d);
    ssize_t n;
    if (spliced) {
        do
            n = splice(src->fd, NULL, d->pipe[1], NULL, GW_RELAY_CHUNK,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            n = would_block() ? CERT_IO_AGAIN : CERT_IO_ERROR;
        if (n == CERT_IO_ERROR)
            src->err = errno;
    } else {
        n = cert_io_read(src, scratch, GW_RELAY_CHUNK);
    }
    if (n == 0) {
        source_ended(r, i);
        return STEP_MORE;
    }
    if (n == CERT_IO_AGAIN) {
        d->rd_on_write = src->want_write;
        pipe_put(r->pool, d); /* an idle direction holds no pipe */
        return STEP_WAIT;
    }
    if (n < 0)
        return STEP_SRC_FAILED;
    d->rd_on_write = false;
    *moved += (size_t)n;
    d->bulk = spliced ? n >= SPLICE_MIN : n == GW_RELAY_CHUNK;
    if (spliced)
        d->inpipe = (uint32_t)n; /* counted at once: if dst fails, the pipe is not reused */
    ssize_t w =
        spliced ? splice_out(d, dst->fd, (size_t)n) : cert_io_write(dst, scratch, (size_t)n);
    if (w == CERT_IO_ERROR)
        return STEP_DST_FAILED;
    if (w == CERT_IO_AGAIN) {
        d->wr_on_read = dst->ssl != NULL && !dst->want_write;
        w = 0;
    }
    size_t left = (size_t)(n - w);
    if (spliced) {
        d->inpipe = (uint32_t)left;
        if (left == 0 && !d->bulk)
            pipe_put(r->pool, d);
    } else if (left > 0) {
        d->buf = malloc(left);
        if (d->buf == NULL)
            return STEP_DST_FAILED; /* the bytes cannot be kept: the stream is cut */
        memcpy(d->buf, scratch + w, left);
        d->len = (uint32_t)left;
    }
    r->ops->moved(r->arg, (enum gw_relay_side)i, (size_t)n, (size_t)w);
    if (left > 0)
        return STEP_WAIT;
    /* A short TCP read emptied the socket, and with edge-triggered events a
     * new arrival wakes us again; but a FIN that came with the data brings
     * no further edge, so then we read on to find it. A splice may stop
     * short at the pipe's slot count, and TLS hands out one record per
     * read: both read on until the socket says it is empty. */
    return !spliced && src->ssl == NULL && !d->rdhup && (size_t)n < GW_RELAY_CHUNK ? STEP_WAIT
                                                                                   : STEP_MORE;
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
    struct gw_relay_dir *d = &r->d[i];
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
        if (d->eof) {
            /* After a failure the session decides how the other side ends. */
            if (!d->shut && r->failed < 0) {
                int rc = cert_io_shutdown(&r->side[!i].io);
                if (rc == CERT_IO_AGAIN)
                    return STEP_WAIT; /* close_notify waits for room */
                if (rc < 0)
                    return STEP_DST_FAILED;
                d->shut = true;
            }
            return STEP_WAIT;
        }
        if (moved >= ROUND_BUDGET) {
            event_active(&r->side[i].ev, EV_READ, 0); /* go on after the others */
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

/* Drops what direction i owes: its destination failed. */
static void drop(struct gw_relay *r, int i)
{
    struct gw_relay_dir *d = &r->d[i];
    free(d->buf);
    d->buf = NULL;
    d->off = d->len = 0;
    pipe_put(r->pool, d); /* a pipe that holds bytes is closed, not reused */
    d->dead = true;
}

/* Side `side` failed: a read from it (which then has nothing more to give),
 * a write to it, or its socket's error. The first failure: what it sent is
 * still delivered, and what was owed to it is dropped. The other side's
 * failure after that leaves nothing to deliver. */
static void fail(struct gw_relay *r, int side, bool read_ended)
{
    if (r->failed >= 0 && r->failed != side) {
        r->broken = true;
        return;
    }
    if (r->failed < 0) {
        r->failed = (int8_t)side;
        drop(r, !side);
    }
    if (read_ended)
        source_ended(r, side);
}

/* Runs direction i and records what failed. */
static void run(struct gw_relay *r, int i)
{
    enum step st = pump(r, i);
    if (st == STEP_SRC_FAILED)
        fail(r, i, true);
    else if (st == STEP_DST_FAILED) {
        fail(r, !i, false);
        /* What the failed side sent may wait in its socket with no edge to
         * come for it: read it now. */
        const struct gw_relay_dir *back = &r->d[!i];
        if (!r->broken && !back->eof && !back->paused)
            run(r, !i);
    }
}

/* Whether direction i's destination is wanted by an event on it. */
static bool wants_dst(const struct gw_relay *r, int i, short what)
{
    const struct gw_relay_dir *d = &r->d[i];
    if (d->dead)
        return false;
    bool pending = owed(d) > 0 || (d->eof && !d->shut && r->failed < 0);
    return pending && ((what & EV_WRITE) || (d->wr_on_read && (what & EV_READ)));
}

/* Whether direction i's source is wanted by an event on it. */
static bool wants_src(const struct gw_relay *r, int i, short what)
{
    const struct gw_relay_dir *d = &r->d[i];
    if (d->dead || d->paused || d->eof)
        return false;
    return (what & (EV_READ | EV_CLOSED)) || (d->rd_on_write && (what & EV_WRITE));
}

static enum gw_relay_result result(struct gw_relay *r, int failed_before)
{
    if (r->broken)
        return GW_RELAY_BROKEN;
    if (r->failed >= 0) {
        const struct gw_relay_dir *d = &r->d[r->failed];
        if (d->eof && owed(d) == 0)
            return GW_RELAY_DONE;
        return failed_before < 0 ? GW_RELAY_FAILED : GW_RELAY_GOING;
    }
    return r->d[0].shut && r->d[1].shut ? GW_RELAY_DONE : GW_RELAY_GOING;
}

enum gw_relay_result gw_relay_on_io(struct gw_relay *r, enum gw_relay_side side, short what)
{
    int k = (int)side, failed_before = r->failed;
    if (r->broken)
        return GW_RELAY_BROKEN;
    if (what & EV_CLOSED)
        r->d[k].rdhup = true;
    /* The direction that writes to k, then the one that reads from it. */
    if (wants_dst(r, !k, what))
        run(r, !k);
    if (!r->broken && wants_src(r, k, what)) {
        run(r, k);
    } else if (!r->broken && r->failed != k && r->side[k].io.ssl == NULL &&
               (what & (EV_READ | EV_CLOSED)) && ((what & EV_CLOSED) || (what & EV_WRITE))) {
        /* k is not being read (it is paused, or it ended) and its event says
         * it may have closed or failed: a reset must not wait for the next
         * read, which may be long in coming. (Under TLS a reset is a dirty
         * shutdown, which the next read finds, like a FIN.) */
        if (cert_io_take_error(&r->side[k].io) != 0)
            fail(r, k, r->d[k].eof);
    }
    return result(r, failed_before);
}

enum gw_relay_result gw_relay_start(struct gw_relay *r, struct gw_side *sides,
                                    struct gw_relay_pool *pool, const struct gw_relay_ops *ops,
                                    void *arg)
{
    memset(r, 0, sizeof(*r));
    r->side = sides;
    r->pool = pool;
    r->ops = ops;
    r->arg = arg;
    r->failed = -1;
    r->first_eof = -1;
    r->splice_ok = sides[0].io.ssl == NULL && sides[1].io.ssl == NULL;
    for (int i = 0; i < 2; i++)
        r->d[i].pipe[0] = r->d[i].pipe[1] = -1;
    /* What arrived before: the edges that said so came before the relay. */
    for (int i = 0; i < 2; i++)
        r->d[i].rdhup = sides[i].closed;
    for (int i = 0; i < 2 && !r->broken; i++)
        if (sides[i].readable || sides[i].closed || cert_io_pending(&sides[i].io))
            run(r, i);
    return result(r, -1);
}

void gw_relay_end(struct gw_relay *r, enum gw_relay_end how)
{
    for (int i = 0; i < 2; i++) {
        struct cert_io *io = &r->side[i].io;
        bool owed_to_i = owed(&r->d[!i]) > 0 && !r->d[!i].dead;
        bool reset = how == GW_RELAY_RESET || (how == GW_RELAY_STOP && owed_to_i) ||
                     (how == GW_RELAY_DELIVERED && i != r->failed);
        if (!reset && !r->d[i].eof)
            cert_io_discard_input(io);
        cert_io_close(io, reset || (how == GW_RELAY_DELIVERED && i == r->failed));
    }
    for (int i = 0; i < 2; i++) {
        pipe_put(r->pool, &r->d[i]);
        free(r->d[i].buf);
        r->d[i].buf = NULL;
    }
}

size_t gw_relay_buffered(const struct gw_relay *r, enum gw_relay_side from)
{
    return owed(&r->d[from]);
}
