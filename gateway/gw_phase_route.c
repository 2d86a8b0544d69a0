/* The route phases: which definition serves the connection. A port with one
 * definition needs nothing; a tcp port shared by several domains peeks at
 * the ClientHello (phase peek, which leaves it in the socket for the
 * upstream); a tls port terminates TLS, and the server name picks the
 * definition during the handshake (phase handshake, gw_tls_route.c). Both
 * phases have handshake_timeout from their start. */
#include <errno.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "gw_clienthello.h"
#include "gw_limits.h"
#include "gw_log.h"
#include "gw_session_int.h"
#include "gw_tls_route.h"

static void timed_out(struct gw_session *s)
{
    GW_STAT_ADD(s->pst, tls_handshake_timeout, 1);
    session_end(s, END_HANDSHAKE_TIMEOUT);
}

/* ---- peek: the ClientHello read in place --------------------------------------- */

static void peek(struct gw_session *s, short what)
{
    struct cert_io *io = &s->side[GW_RELAY_CLIENT].io;
    uint8_t *buf = (uint8_t *)gw_relay_scratch(s->env->pool);
    size_t cap = s->snap->client_hello_max;
    ssize_t n;
    do
        n = recv(io->fd, buf, cap, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (n <= 0) { /* the client went away before its ClientHello was whole */
        session_end(s, n == 0 ? END_CLOSED : END_CLIENT_ERROR);
        return;
    }
    struct gw_client_hello ch;
    char err[128];
    enum gw_ch_status st = gw_client_hello_parse(buf, (size_t)n, cap, &ch, err, sizeof(err));
    if (st == GW_CH_NEED_MORE) {
        if (s->side[GW_RELAY_CLIENT].closed)
            session_end(s, END_CLOSED);
        else if (session_side_failed(s, GW_RELAY_CLIENT, what))
            session_end(s, END_CLIENT_ERROR);
        return;
    }
    struct gw_api *api = NULL;
    if (st == GW_CH_OK) {
        session_keep_name(s, ch.has_sni ? ch.sni : "");
        api = gw_port_route_sni(s->port, ch.has_sni ? ch.sni : NULL);
        if (api == NULL) {
            GW_STAT_ADD(s->pst, sni_not_found, 1);
            session_end(s, END_NO_ROUTE);
            return;
        }
    } else if (st == GW_CH_NOT_TLS) {
        /* Not TLS: only a definition without a domain can take it. */
        api = gw_sni_lookup(s->port->sni, NULL);
        if (api == NULL) {
            GW_STAT_ADD(s->pst, not_tls, 1);
            s->error = "not_tls";
            session_end(s, END_NO_ROUTE);
            return;
        }
    } else {
        GW_STAT_ADD(s->pst, bad_client_hello, 1);
        gw_debug("port %d: bad ClientHello: %s", s->port->port, err);
        session_end(s, END_BAD_CLIENT_HELLO);
        return;
    }
    phase_connect_begin(s, api);
}

static void peek_on_io(struct gw_session *s, enum gw_relay_side side, short what)
{
    if (side == GW_RELAY_CLIENT && (what & (EV_READ | EV_CLOSED)))
        peek(s, what);
}

const struct gw_phase gw_phase_peek = {
    .name = "peek", .on_io = peek_on_io, .on_deadline = timed_out};

/* ---- handshake: TLS terminated here ---------------------------------------------- */

/* Counts a failed client handshake under one of a few reasons, for metrics. */
static void count_tls_failure(struct gw_session *s, unsigned long e)
{
    int r = ERR_GET_REASON(e);
    if (e == 0)
        GW_STAT_ADD(s->pst, tls_fail_closed, 1);
    else if (r >= SSL_AD_REASON_OFFSET)
        GW_STAT_ADD(s->pst, tls_fail_alert, 1); /* the client refused us, e.g. our certificate */
    else if (r == SSL_R_UNSUPPORTED_PROTOCOL || r == SSL_R_VERSION_TOO_LOW ||
             r == SSL_R_VERSION_TOO_HIGH || r == SSL_R_WRONG_VERSION_NUMBER ||
             r == SSL_R_HTTP_REQUEST || r == SSL_R_HTTPS_PROXY_REQUEST ||
             r == SSL_R_PACKET_LENGTH_TOO_LONG || r == SSL_R_RECORD_LENGTH_MISMATCH)
        GW_STAT_ADD(s->pst, tls_fail_protocol, 1);
    else if (r == SSL_R_NO_SHARED_CIPHER || r == SSL_R_NO_SHARED_GROUPS ||
             r == SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM)
        GW_STAT_ADD(s->pst, tls_fail_cipher, 1);
    else if (r == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE || r == SSL_R_CERTIFICATE_VERIFY_FAILED ||
             r == SSL_R_NO_CERTIFICATES_RETURNED)
        GW_STAT_ADD(s->pst, tls_fail_client_cert, 1);
    else
        GW_STAT_ADD(s->pst, tls_fail_other, 1);
}

static void handshake_failed(struct gw_session *s)
{
    struct cert_io *io = &s->side[GW_RELAY_CLIENT].io;
    bool no_route = false;
    gw_tls_chosen(io->ssl, &no_route);
    session_keep_name(s, gw_tls_requested_name(io->ssl));
    if (no_route) {
        GW_STAT_ADD(s->pst, sni_not_found, 1);
        session_end(s, END_NO_ROUTE);
        return;
    }
    GW_STAT_ADD(s->pst, tls_handshake_failed, 1);
    unsigned long e = io->ssl_err;
    count_tls_failure(s, e);
    static __thread char reason[200]; /* read by the log lines before the next handshake */
    if (e != 0) {
        ERR_error_string_n(e, reason, sizeof(reason));
        for (char *c = reason; *c != '\0'; c++)
            if (*c == ' ')
                *c = '_'; /* one token in the key=value line */
        s->error = strrchr(reason, ':') ? strrchr(reason, ':') + 1 : reason;
    } else {
        s->error = io->err == 0 || io->err == EPIPE ? "client_closed" : "connection_error";
    }
    session_end(s, END_HANDSHAKE_FAILED);
}

static void handshake(struct gw_session *s)
{
    struct cert_io *io = &s->side[GW_RELAY_CLIENT].io;
    int rc = cert_io_handshake(io);
    if (rc == CERT_IO_AGAIN)
        return;
    if (rc != 1) {
        handshake_failed(s);
        return;
    }
    bool no_route = false;
    struct gw_api *api = gw_tls_chosen(io->ssl, &no_route);
    session_keep_name(s, gw_tls_requested_name(io->ssl));
    if (api == NULL) { /* the callback always chooses; this is not reached */
        session_end(s, END_INTERNAL);
        return;
    }
    GW_STAT_ADD(s->pst, tls_handshakes, 1);
    if (SSL_session_reused(io->ssl))
        GW_STAT_ADD(s->pst, tls_resumed, 1);
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(io->ssl, &alpn, &alpn_len);
    if (alpn_len > 0 && (s->alpn = malloc(alpn_len + 1)) != NULL) {
        memcpy(s->alpn, alpn, alpn_len);
        s->alpn[alpn_len] = '\0';
    }
    /* Bytes may have come with the client's last flight: nothing says so
     * again. */
    s->side[GW_RELAY_CLIENT].readable = true;
    phase_connect_begin(s, api);
}

static void handshake_on_io(struct gw_session *s, enum gw_relay_side side, short what)
{
    (void)what;
    if (side == GW_RELAY_CLIENT)
        handshake(s);
}

const struct gw_phase gw_phase_handshake = {
    .name = "handshake", .on_io = handshake_on_io, .on_deadline = timed_out};

/* ---- the start ---------------------------------------------------------------------- */

void phase_route_begin(struct gw_session *s)
{
    /* The client's address is known now, from the PROXY header if any. */
    if (s->snap->max_per_source > 0 && s->snap->sources != NULL) {
        if (!gw_sources_acquire(s->snap->sources, &s->peer.sa, s->snap->max_per_source)) {
            GW_STAT_ADD(s->pst, source_overflow, 1);
            s->error = "max_connections_per_source";
            session_end(s, END_OVERFLOW);
            return;
        }
        s->held_source = true;
    }
    int64_t by = gw_now_ms() + s->snap->handshake_timeout_ms;
    switch (s->port->mode) {
    case GW_ROUTE_SINGLE:
        /* Nothing is read from the client until the upstream is connected:
         * its first bytes wait in the kernel, at no cost here. */
        phase_connect_begin(s, s->port->route);
        return;
    case GW_ROUTE_PEEK:
        session_enter(s, &gw_phase_peek, by);
        /* What came with the connection (or its PROXY header) is there now. */
        peek(s, 0);
        return;
    case GW_ROUTE_TLS:
        if (cert_io_start_tls(&s->side[GW_RELAY_CLIENT].io, SSL_new(s->port->front), true) != 0) {
            session_end(s, END_INTERNAL);
            return;
        }
        session_enter(s, &gw_phase_handshake, by);
        /* The ClientHello usually came with the connection: answer it in
         * this loop turn. */
        handshake(s);
        return;
    }
}
