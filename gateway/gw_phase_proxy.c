/* Phase proxy_header: the inbound PROXY protocol header, which comes first,
 * before TLS and before any routing, from trusted sources only. It is peeked
 * (MSG_PEEK) until it is whole, then taken from the socket exactly, so the
 * client's own bytes stay where the next phase reads them. Deadline:
 * proxy_protocol_timeout from accept. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "gw_log.h"
#include "gw_proxyproto.h"
#include "gw_session_int.h"

static bool trusted_source(const struct gw_port *p, const struct sockaddr *peer)
{
    if (p->ntrusted == 0)
        return true;
    for (size_t i = 0; i < p->ntrusted; i++)
        if (api_cidr_contains(&p->trusted[i], peer))
            return true;
    return false;
}

static void rejected(struct gw_session *s, int64_t *counter, const char *why)
{
    /* This worker is the counter's only writer (see GW_STAT_ADD). */
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    s->error = why;
    session_end(s, END_PROXY_REJECTED);
}

/* Looks at what the client sent so far, after an event (what; 0 when none
 * came yet). */
static void read_header(struct gw_session *s, short what)
{
    struct cert_io *io = &s->side[GW_RELAY_CLIENT].io;
    uint8_t *buf = (uint8_t *)gw_relay_scratch(s->env->pool);
    size_t max = s->snap->proxy_header_max;
    ssize_t n;
    do
        n = recv(io->fd, buf, max, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (n <= 0) { /* closed or reset before its header was whole */
        rejected(s, &s->pst->prx_truncated, "proxy_header_truncated");
        return;
    }
    struct gw_pp_info info;
    char err[128];
    enum gw_pp_status st = gw_pp_parse(buf, (size_t)n, &info, err, sizeof(err));
    if (st == GW_PP_NEED_MORE && (size_t)n >= max) {
        snprintf(err, sizeof(err), "longer than proxy_header_max (%zu bytes)", max);
        st = GW_PP_BAD;
    }
    if (st == GW_PP_NEED_MORE) {
        /* Nothing more will come after the client's end, or a reset. */
        if (s->side[GW_RELAY_CLIENT].closed || session_side_failed(s, GW_RELAY_CLIENT, what))
            rejected(s, &s->pst->prx_truncated, "proxy_header_truncated");
        return;
    }
    if (st == GW_PP_NOT_PROXY && s->port->proxy_optional) {
        phase_route_begin(s); /* no header: the bytes are the client's */
        return;
    }
    if (st != GW_PP_OK) {
        gw_debug("port %d: PROXY header rejected: %s", s->port->port, err);
        if (st == GW_PP_NOT_PROXY)
            rejected(s, &s->pst->prx_not_hdr, "no_proxy_header");
        else
            rejected(s, &s->pst->prx_bad_hdr, "bad_proxy_header");
        return;
    }
    GW_STAT_ADD(s->pst, prx_accepted, 1);
    if (info.has_addr) {
        /* The header's addresses are the client's, everywhere from now on. */
        memcpy(&s->peer, &info.src, sizeof(s->peer));
        memcpy(&s->orig_dst, &info.dst, sizeof(s->orig_dst));
        s->has_orig_dst = true;
    }
    /* The bytes were peeked, so they are there: this takes exactly them. */
    ssize_t got;
    do
        got = recv(io->fd, buf, info.length, MSG_DONTWAIT);
    while (got < 0 && errno == EINTR);
    if (got != (ssize_t)info.length) {
        rejected(s, &s->pst->prx_truncated, "proxy_header_truncated");
        return;
    }
    phase_route_begin(s);
}

static void on_io(struct gw_session *s, enum gw_relay_side side, short what)
{
    if (side == GW_RELAY_CLIENT && (what & (EV_READ | EV_CLOSED)))
        read_header(s, what);
}

static void on_deadline(struct gw_session *s)
{
    rejected(s, &s->pst->prx_timeout, "proxy_header_timeout");
}

const struct gw_phase gw_phase_proxy_header = {
    .name = "proxy_header", .on_io = on_io, .on_deadline = on_deadline};

void phase_proxy_begin(struct gw_session *s)
{
    if (!trusted_source(s->port, &s->peer.sa)) {
        rejected(s, &s->pst->prx_untrusted, "untrusted_proxy_source");
        return;
    }
    session_enter(s, &gw_phase_proxy_header, s->started_ms + s->port->proxy_timeout_ms);
    /* The header usually came with the connection (the port defers accepts
     * until the client has sent something): look now, not a loop turn later. */
    read_header(s, 0);
}
