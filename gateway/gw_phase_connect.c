/* Phase connect: the balancer picks an eligible target and the upstream is
 * dialed (certs/cert_dial.h: the TCP connect, the outbound PROXY header in
 * clear, then TLS for tls:// targets). A failed attempt moves on to the next
 * target within max_connect_attempts; another address of the same name is
 * part of the same attempt. Deadline: connect_timeout per attempt (the
 * connect and the TLS handshake together); the same phase also waits, with
 * a short deadline, for a first health verdict or for a free descriptor. */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "gw_balancer.h"
#include "gw_limits.h"
#include "gw_log.h"
#include "gw_proxyproto.h"
#include "gw_session_int.h"

/* No target may be picked. While a verdict is due (a target was never
 * checked because the gateway has just started, or the sentinels have not
 * named the master yet, or hold it in a failover), a new connection waits
 * for it, up to its connect timeout, rather than fail at once or land on a
 * replica. */
#define ELIGIBLE_POLL_MS 50
/* Out of descriptors: how long to wait before trying a connect again. */
#define FD_RETRY_MS 100

static void connect_next(struct gw_session *s);

/* ---- picking ---------------------------------------------------------------------- */

static bool has_room(const struct gw_session *s, size_t i)
{
    int64_t max = s->api->def->ext.max_connections_per_target;
    return max == 0 || (int)i == s->held_target ||
           __atomic_load_n(s->api->ups[i].active, __ATOMIC_RELAXED) < max;
}

static bool healthy_only(void *ctx, size_t i)
{
    const struct gw_session *s = ctx;
    return gw_upstream_eligible(s->api, i);
}

/* May take a connection: healthy, and below its max_connections_per_target. */
static bool healthy(void *ctx, size_t i)
{
    return healthy_only(ctx, i) && has_room(ctx, i);
}

static bool healthy_not_failed(void *ctx, size_t i)
{
    const struct gw_session *s = ctx;
    unsigned id = s->api->ups[i].host_id;
    return healthy(ctx, i) && (id >= 64 || (s->failed_hosts & (1ULL << id)) == 0);
}

static bool wait_for_eligible(struct gw_session *s)
{
    int64_t now = gw_now_ms();
    if (s->eligible_by_ms == 0)
        s->eligible_by_ms = now + s->api->def->ext.connect_timeout_ms;
    if (s->attempt > 0 || now + ELIGIBLE_POLL_MS >= s->eligible_by_ms || !gw_api_settling(s->api))
        return false;
    session_enter(s, &gw_phase_connect, now + ELIGIBLE_POLL_MS);
    return true;
}

static void overflow(struct gw_session *s)
{
    GW_STAT_ADD(s->st, upstream_cx_overflow, 1);
    s->error = "max_connections_per_target";
    session_end(s, END_OVERFLOW);
}

/* Picks the target of the next attempt and takes a slot of it: false when
 * the session ended, or (with *none) when no target may be picked. */
static bool pick(struct gw_session *s, bool *none)
{
    size_t n = gw_api_nups(s->api), i;
    *none = false;
    if (s->attempt == 0)
        i = gw_pick_first(s->rr_turn, n, healthy, s);
    else if ((i = gw_pick_next(s->ups, n, healthy_not_failed, s)) == n)
        i = gw_pick_next(s->ups, n, healthy, s); /* all failed once: go round again */
    if (i == n) {
        if (wait_for_eligible(s))
            return false;
        if (gw_pick_first(s->rr_turn, n, healthy_only, s) != n) {
            overflow(s); /* healthy targets exist, but every one is full */
            return false;
        }
        s->error = "no_healthy_target";
        *none = true;
        return true;
    }
    s->ups = i;
    if (s->held_target >= 0)
        gw_limit_release(s->api->ups[s->held_target].active);
    s->held_target = -1;
    if (!gw_limit_acquire(s->api->ups[i].active, s->api->def->ext.max_connections_per_target)) {
        overflow(s); /* another worker took its last slot a moment ago */
        return false;
    }
    s->held_target = (int)i;
    return true;
}

/* ---- dialing ------------------------------------------------------------------------ */

/* The upstream TLS connection for target u: SNI, verification, a client
 * certificate, a cached session and the client's ALPN. NULL when it cannot
 * be set up. */
static SSL *upstream_ssl(struct gw_session *s, struct gw_upstream *u)
{
    SSL *ssl = SSL_new(s->api->client_ctx);
    if (ssl == NULL)
        return NULL;
    if (cert_ssl_client_setup(ssl, u->target.host, s->api->verify_upstream, u->client_cert) != 0) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_SESSION **slot = &u->sessions[s->env->worker_id];
    if (*slot != NULL)
        SSL_set_session(ssl, *slot);
    cert_ssl_set_session_slot(ssl, slot);
    size_t n = s->alpn ? strlen(s->alpn) : 0;
    if (n > 0) {
        unsigned char wire[256];
        wire[0] = (unsigned char)n;
        memcpy(wire + 1, s->alpn, n);
        SSL_set_alpn_protos(ssl, wire, (unsigned)n + 1);
    }
    return ssl;
}

/* The outbound PROXY header, written when the TCP connect is done: the
 * client's addresses (from its own header when it sent one), and with v2
 * the SNI, ALPN and TLS details. It goes before any byte of either side. */
static size_t proxy_header(void *arg, int fd, uint8_t *buf, size_t cap)
{
    (void)fd;
    struct gw_session *s = arg;
    const struct api_ext *ext = &s->api->def->ext;
    if (!ext->send_proxy_protocol)
        return 0;
    struct sockaddr_storage dst;
    socklen_t dl = sizeof(dst);
    if (s->has_orig_dst)
        memcpy(&dst, &s->orig_dst, sizeof(s->orig_dst));
    else if (getsockname(s->side[GW_RELAY_CLIENT].io.fd, (struct sockaddr *)&dst, &dl) != 0)
        memset(&dst, 0, sizeof(dst));
    int n;
    if (ext->send_proxy_protocol == 1) {
        n = gw_pp1_build(&s->peer.sa, (const struct sockaddr *)&dst, (char *)buf, cap);
    } else {
        struct gw_pp2_extra x = {.authority = s->sni,
                                 .alpn = (const uint8_t *)s->alpn,
                                 .alpn_len = s->alpn ? strlen(s->alpn) : 0,
                                 .crc32c = ext->send_proxy_protocol_crc32c};
        SSL *ssl = s->side[GW_RELAY_CLIENT].io.ssl;
        char cn[256] = "";
        if (ssl != NULL) {
            x.ssl = true;
            x.ssl_version = SSL_get_version(ssl);
            x.ssl_cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl));
            X509 *peer = SSL_get0_peer_certificate(ssl);
            if (peer != NULL) {
                x.ssl_client_cert = true;
                if (X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn,
                                              sizeof(cn)) > 0)
                    x.ssl_cn = cn;
            }
        }
        n = gw_pp2_build(&s->peer.sa, (const struct sockaddr *)&dst, &x, buf, cap);
    }
    return n > 0 ? (size_t)n : 0;
}

/* The reason an attempt failed, for the log; *tls tells whether TLS itself
 * failed (the host answered, but not acceptably). */
static const char *failure_reason(struct gw_session *s, const char *given, char *buf, size_t len,
                                  bool *tls)
{
    *tls = true;
    if (given != NULL)
        return given;
    const struct cert_io *io = &s->side[GW_RELAY_UPSTREAM].io;
    const char *why = s->dial.tls_failed ? cert_tls_failure(io->ssl, io->ssl_err, buf, len) : NULL;
    if (why != NULL)
        return why;
    *tls = false;
    return strerror(io->err != 0 ? io->err : ECONNRESET);
}

/* The attempt failed: timed out, refused, or (given) refused by tcpgate. */
static void attempt_failed(struct gw_session *s, bool timeout, const char *given)
{
    const struct gw_upstream *u = &s->api->ups[s->ups];
    char addr[INET6_ADDRSTRLEN + 16], why[320];
    session_format_addr((const struct sockaddr *)&u->addr[s->addr], addr, sizeof(addr));
    struct gw_target_stats *ts = &u->stats[s->env->worker_id];
    if (timeout) {
        GW_STAT_ADD(s->st, connect_timeout, 1);
        GW_STAT_ADD(ts, connect_timeout, 1);
    } else {
        GW_STAT_ADD(s->st, connect_fail, 1);
        GW_STAT_ADD(ts, connect_fail, 1);
    }
    bool tls_failed = false;
    const char *reason =
        timeout ? "timed out" : failure_reason(s, given, why, sizeof(why), &tls_failed);
    if (tls_failed && given == NULL)
        GW_STAT_ADD(s->st, upstream_tls_failed, 1);
    gw_info("api_id=%s connect to %s (%s) failed: %s (attempt %u of %d)", session_api_id(s),
            u->name, addr, reason, s->attempt, s->api->def->ext.max_connect_attempts);
    session_drop_upstream(s);
    /* Another address of the same name belongs to the same attempt; a TLS
     * failure is the host's answer, not the address's. */
    if (!tls_failed && s->addr + 1 < u->naddrs) {
        s->addr++;
        s->attempt--;
    } else {
        s->addr = 0;
        if (u->host_id < 64)
            s->failed_hosts |= 1ULL << u->host_id;
    }
    connect_next(s);
}

/* Connected (and, for tls://, handshaken): count it and relay. */
static void connected(struct gw_session *s)
{
    struct gw_upstream *u = &s->api->ups[s->ups];
    SSL *ssl = s->side[GW_RELAY_UPSTREAM].io.ssl;
    if (ssl != NULL) {
        if (u->pins != NULL && !cert_pins_match(SSL_get0_peer_certificate(ssl), u->pins)) {
            GW_STAT_ADD(s->st, upstream_pin_mismatch, 1);
            gw_warn("api_id=%s upstream %s: its public key matches none of the pinned keys",
                    session_api_id(s), u->name);
            attempt_failed(s, false, "public_key_not_pinned");
            return;
        }
        if (SSL_session_reused(ssl))
            GW_STAT_ADD(s->st, upstream_tls_resumed, 1);
        /* Its first records may have come with the handshake's last flight. */
        s->side[GW_RELAY_UPSTREAM].readable = true;
    }
    GW_STAT_ADD(s->st, upstream_cx_total, 1);
    s->tst = &u->stats[s->env->worker_id];
    GW_STAT_ADD(s->tst, cx_total, 1);
    GW_STAT_ADD(s->tst, cx_active, 1);
    s->target_counted = true;
    gw_debug("api_id=%s connected to %s (attempt %u)", session_api_id(s), u->name, s->attempt);
    phase_relay_begin(s);
}

/* Starts the next attempt; false when it could not start (errno says why). */
static bool dial(struct gw_session *s, struct gw_upstream *u)
{
    SSL *ssl = NULL;
    if (u->target.scheme == API_SCHEME_TLS && (ssl = upstream_ssl(s, u)) == NULL) {
        errno = EPROTO; /* the target's TLS settings could not be applied */
        return false;
    }
    if (cert_dial_start(&s->dial, &s->side[GW_RELAY_UPSTREAM].io,
                        (const struct sockaddr *)&u->addr[s->addr], u->addrlen[s->addr], ssl) != 0)
        return false;
    if (session_watch(s, GW_RELAY_UPSTREAM) != 0) {
        session_drop_upstream(s);
        errno = ENOMEM;
        return false;
    }
    return true;
}

static bool short_of_fds(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

static void connect_next(struct gw_session *s)
{
    const struct api_ext *ext = &s->api->def->ext;
    while (s->attempt < (unsigned)ext->max_connect_attempts) {
        if (s->addr == 0) {
            bool none;
            if (!pick(s, &none))
                return;
            if (none)
                break;
        }
        s->attempt++;
        struct gw_upstream *u = &s->api->ups[s->ups];
        if (!s->fd_waiting) /* a retry for a descriptor keeps its deadline */
            s->connect_by_ms = gw_now_ms() + ext->connect_timeout_ms;
        if (dial(s, u)) {
            session_stop_fd_wait(s);
            session_enter(s, &gw_phase_connect, s->connect_by_ms);
            return;
        }
        int err = errno;
        if (short_of_fds(err)) {
            /* Our shortage, not the target's fault: stop accepting for a while
             * and try again shortly, within the connect timeout. */
            s->attempt--;
            if (!s->fd_waiting && s->env->fd_wait != NULL)
                s->env->fd_wait(s->env->arg, +1, err);
            s->fd_waiting = true;
            if (gw_now_ms() + FD_RETRY_MS < s->connect_by_ms) {
                session_enter(s, &gw_phase_connect, gw_now_ms() + FD_RETRY_MS);
                return;
            }
            s->error = "out_of_descriptors";
            session_end(s, END_INTERNAL);
            return;
        }
        session_stop_fd_wait(s);
        GW_STAT_ADD(s->st, connect_fail, 1);
        GW_STAT_ADD(&u->stats[s->env->worker_id], connect_fail, 1);
        gw_info("api_id=%s connect to %s failed at once: %s (attempt %u of %d)", session_api_id(s),
                u->name, strerror(err), s->attempt, ext->max_connect_attempts);
        if (s->addr + 1 < u->naddrs) {
            s->addr++; /* the same attempt, the name's next address */
            s->attempt--;
            continue;
        }
        s->addr = 0;
        if (u->host_id < 64)
            s->failed_hosts |= 1ULL << u->host_id;
    }
    char client[INET6_ADDRSTRLEN + 16];
    session_format_addr(&s->peer.sa, client, sizeof(client));
    if (s->error != NULL)
        gw_warn("api_id=%s client=%s no target may be picked: every one is down", session_api_id(s),
                client);
    else
        gw_warn("api_id=%s client=%s no target could be reached after %u attempts",
                session_api_id(s), client, s->attempt);
    session_end(s, END_CONNECT_FAILED);
}

/* ---- the phase ------------------------------------------------------------------------ */

/* The client's socket says it may have gone while we connect. A reset with
 * nothing left to read ends the session (dialing on would serve nobody); a
 * FIN, or bytes still to read, is the relay's to deliver. */
static void client_event(struct gw_session *s, short what)
{
    struct cert_io *io = &s->side[GW_RELAY_CLIENT].io;
    if (!(what & (EV_READ | EV_CLOSED)))
        return; /* writable: nothing to know */
    int unread = 0;
    if (cert_io_pending(io) || ioctl(io->fd, FIONREAD, &unread) != 0 || unread > 0)
        return;
    /* Under TLS a reset is the client's (dirty) end, as a read would say. */
    if (session_side_failed(s, GW_RELAY_CLIENT, what))
        session_end(s, io->ssl != NULL ? END_CLOSED : END_CLIENT_ERROR);
}

static void on_io(struct gw_session *s, enum gw_relay_side side, short what)
{
    if (side == GW_RELAY_CLIENT) {
        client_event(s, what);
        return;
    }
    struct cert_io *io = &s->side[GW_RELAY_UPSTREAM].io;
    int rc = cert_dial_step(&s->dial, io, what, proxy_header, s);
    if (rc == CERT_DIAL_DONE)
        connected(s);
    else if (rc == CERT_IO_ERROR)
        attempt_failed(s, false, NULL);
}

static void on_deadline(struct gw_session *s)
{
    if (s->side[GW_RELAY_UPSTREAM].io.fd >= 0)
        attempt_failed(s, true, NULL);
    else
        connect_next(s); /* a wait for a verdict or a descriptor is over */
}

const struct gw_phase gw_phase_connect = {
    .name = "connect", .on_io = on_io, .on_deadline = on_deadline};

/* Before an upstream is dialed for a TLS client: whether it is still there. A client that closes as
 * soon as its handshake is done (a TLS probe, a load balancer's check) has often sent its end along
 * with its Finished; peeking finds it without consuming anything. END_NONE
 * while it is there, or has sent bytes. */
static enum gw_end client_left(struct gw_session *s)
{
    SSL *ssl = s->side[GW_RELAY_CLIENT].io.ssl;
    char b;
    size_t got = 0;
    ERR_clear_error();
    if (SSL_peek_ex(ssl, &b, 1, &got) == 1)
        return END_NONE;
    int e = SSL_get_error(ssl, 0);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return END_NONE;
    return e == SSL_ERROR_ZERO_RETURN ? END_CLOSED : END_CLIENT_ERROR;
}

void phase_connect_begin(struct gw_session *s, struct gw_api *api)
{
    s->api = api;
    s->st = &api->stats[s->env->worker_id];
    GW_STAT_ADD(s->st, cx_total, 1);
    GW_STAT_ADD(s->st, cx_active, 1);
    if (!gw_limit_acquire(api->active, api->def->ext.max_connections)) {
        GW_STAT_ADD(s->st, cx_overflow, 1);
        s->error = "max_connections";
        session_end(s, END_OVERFLOW);
        return;
    }
    s->held_api = true;
    enum gw_end left = s->side[GW_RELAY_CLIENT].io.ssl != NULL ? client_left(s) : END_NONE;
    if (left != END_NONE) {
        session_end(s, left);
        return;
    }
    s->rr_turn = gw_rr_next(&api->rr);
    connect_next(s);
}
