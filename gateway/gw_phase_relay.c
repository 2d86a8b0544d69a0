/* Phases relay and drain: both sides are up and gw_relay moves the bytes.
 *   relay: both ways, half-close included, until both ends are passed on.
 *     Deadline: idle_timeout after the last byte moved (a slow reader whose
 *     kernel queue still drains counts as moving).
 *   drain: a side failed. What it sent that tcpgate acknowledged is still
 *     delivered to the other side, and once that side's send queue is empty
 *     it gets a reset, so its peer learns that the stream was cut without
 *     losing a byte of it. Deadline: 10 s; then it gets a FIN if nothing it
 *     is owed is left in tcpgate (the kernel delivers the rest), else a reset.
 * The counters of bytes and of flow control are kept here, from the relay's
 * one report of what moved. */
#include <string.h>

#include "gw_log.h"
#include "gw_session_int.h"

/* How long the side left may take to get what the failed side sent. */
#define FLUSH_TIMEOUT_MS 10000
/* How often a drain looks whether the side left has acknowledged it all. */
#define QUEUE_POLL_MS 10

/* ---- what the relay reports ----------------------------------------------------- */

/* Brings the buffered-bytes gauges up to date with what this session holds:
 * bytes from the client not yet written upstream, and the reverse. */
static void sync_buffered(struct gw_session *s)
{
    int64_t rx = (int64_t)gw_relay_buffered(&s->relay, GW_RELAY_CLIENT);
    int64_t tx = (int64_t)gw_relay_buffered(&s->relay, GW_RELAY_UPSTREAM);
    if (rx == s->rx_buffered && tx == s->tx_buffered)
        return;
    GW_STAT_ADD(s->st, rx_buffered, rx - s->rx_buffered);
    GW_STAT_ADD(s->st, tx_buffered, tx - s->tx_buffered);
    s->rx_buffered = rx;
    s->tx_buffered = tx;
}

static void moved(void *arg, enum gw_relay_side from, size_t nread, size_t nwritten)
{
    struct gw_session *s = arg;
    if (from == GW_RELAY_CLIENT) {
        s->rx += nread;
        GW_STAT_ADD(s->st, rx_bytes, (int64_t)nread);
        GW_STAT_ADD(s->tst, rx_bytes, (int64_t)nread);
    } else {
        s->tx += nwritten;
        GW_STAT_ADD(s->st, tx_bytes, (int64_t)nwritten);
        GW_STAT_ADD(s->tst, tx_bytes, (int64_t)nwritten);
    }
    s->active_ms = gw_now_ms();
    sync_buffered(s);
}

static void flow(void *arg, enum gw_relay_side from, bool paused)
{
    struct gw_session *s = arg;
    if (from == GW_RELAY_CLIENT && paused)
        GW_STAT_ADD(s->st, paused_reading, 1);
    else if (from == GW_RELAY_CLIENT)
        GW_STAT_ADD(s->st, resumed_reading, 1);
    else if (paused)
        GW_STAT_ADD(s->st, upstream_paused_reading, 1);
    else
        GW_STAT_ADD(s->st, upstream_resumed_reading, 1);
}

static const struct gw_relay_ops ops = {.moved = moved, .flow = flow};

/* ---- drain ------------------------------------------------------------------------ */

static struct cert_io *side_left(struct gw_session *s)
{
    return &s->side[!s->relay.failed].io;
}

/* The failed side was read to its end and all of it was written on: the
 * side left gets its reset once it has acknowledged everything. */
static void delivered(struct gw_session *s)
{
    s->delivered = true;
    if (cert_io_unacked(side_left(s)) == 0) {
        session_end(s, s->failure);
        return;
    }
    int64_t poll = gw_now_ms() + QUEUE_POLL_MS;
    session_deadline(s, poll < s->flush_by_ms ? poll : s->flush_by_ms);
}

static void begin_drain(struct gw_session *s)
{
    bool client = s->relay.failed == GW_RELAY_CLIENT;
    s->failure = client ? END_CLIENT_ERROR : END_UPSTREAM_ERROR;
    gw_debug("api_id=%s %s failed: %s", session_api_id(s), client ? "client" : "upstream",
             strerror(s->side[s->relay.failed].io.err));
    s->flush_by_ms = gw_now_ms() + FLUSH_TIMEOUT_MS;
    session_enter(s, &gw_phase_drain, s->flush_by_ms);
}

/* Acts on what the relay has come to. */
static void follow(struct gw_session *s, enum gw_relay_result res)
{
    switch (res) {
    case GW_RELAY_GOING:
        return;
    case GW_RELAY_FAILED:
        begin_drain(s);
        if (s->relay.failed == GW_RELAY_CLIENT) {
            s->flushing_up = true;
            GW_STAT_ADD(s->st, upstream_flush_total, 1);
            GW_STAT_ADD(s->st, upstream_flush_active, 1);
        }
        return;
    case GW_RELAY_DONE:
        if (s->relay.failed < 0) {
            session_end(s, END_CLOSED);
            return;
        }
        if (s->phase != &gw_phase_drain)
            begin_drain(s); /* it failed with nothing left to deliver */
        delivered(s);
        return;
    case GW_RELAY_BROKEN:
        if (s->failure == END_NONE)
            s->failure = s->relay.failed == GW_RELAY_CLIENT ? END_CLIENT_ERROR : END_UPSTREAM_ERROR;
        session_end(s, s->failure);
        return;
    }
}

static void drain_on_io(struct gw_session *s, enum gw_relay_side side, short what)
{
    if (!s->delivered) {
        follow(s, gw_relay_on_io(&s->relay, side, what));
        return;
    }
    /* Waiting for the acknowledgements: a side left that fails now has lost
     * what it was still owed; there is nothing left to wait for. */
    if ((int)side != s->relay.failed && (what & EV_READ) && (what & EV_WRITE) &&
        cert_io_take_error(side_left(s)) != 0) {
        s->delivered = false;
        s->relay.broken = true;
        session_end(s, s->failure);
    }
}

static void drain_on_deadline(struct gw_session *s)
{
    if (gw_now_ms() >= s->flush_by_ms) {
        /* Out of time: what the kernel still holds for the side left goes
         * with a FIN; a reset would drop it. */
        s->delivered = false;
        session_end(s, s->failure);
        return;
    }
    delivered(s);
}

const struct gw_phase gw_phase_drain = {
    .name = "drain", .on_io = drain_on_io, .on_deadline = drain_on_deadline};

/* ---- relay ------------------------------------------------------------------------ */

static void relay_on_io(struct gw_session *s, enum gw_relay_side side, short what)
{
    follow(s, gw_relay_on_io(&s->relay, side, what));
}

static int64_t idle_deadline(const struct gw_session *s)
{
    int64_t idle = s->api->def->ext.idle_timeout_ms;
    return idle > 0 ? s->active_ms + idle : 0;
}

/* A slow reader drains the kernel's send queue long before the socket is
 * writable again (the kernel waits for a third of the buffer to be free), so
 * no event sees it. Whether the queues moved since the last look tells a
 * slow reader from a stalled one. */
static bool kernel_progress(struct gw_session *s)
{
    int64_t total = cert_io_unacked(&s->side[GW_RELAY_CLIENT].io) +
                    cert_io_unacked(&s->side[GW_RELAY_UPSTREAM].io);
    bool moved = total != s->kernel_queued;
    s->kernel_queued = total;
    return moved && total > 0;
}

static void relay_on_deadline(struct gw_session *s)
{
    int64_t now = gw_now_ms();
    if (now < idle_deadline(s)) {
        session_deadline(s, idle_deadline(s)); /* bytes moved since it was set */
        return;
    }
    if (kernel_progress(s)) {
        s->active_ms = now;
        session_deadline(s, idle_deadline(s));
        return;
    }
    session_end(s, END_IDLE_TIMEOUT);
}

const struct gw_phase gw_phase_relay = {
    .name = "relay", .on_io = relay_on_io, .on_deadline = relay_on_deadline};

void phase_relay_begin(struct gw_session *s)
{
    s->relaying = true;
    s->active_ms = gw_now_ms();
    session_enter(s, &gw_phase_relay, idle_deadline(s));
    follow(s, gw_relay_start(&s->relay, s->side, s->env->pool, &ops, s));
}
