#include "gw_session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "gw_access_log.h"
#include "gw_balancer.h"
#include "gw_clienthello.h"
#include "gw_limits.h"
#include "gw_proxyproto.h"
#include "gw_log.h"

enum state {
    ST_PROXY_HEADER, /* reading the client's PROXY protocol header */
    ST_PEEK,         /* reading the ClientHello to route by SNI */
    ST_HANDSHAKE,    /* terminating TLS; the SNI picks the definition */
    ST_CONNECT,
    ST_RELAY,
};

/* Why a session ended, for the connection log line. */
enum end_reason {
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

static const char *const end_names[] = {
    "none",
    "closed",
    "client_error",
    "upstream_error",
    "connect_failed",
    "no_route",
    "idle_timeout",
    "max_duration",
    "drain",
    "internal_error",
    "handshake_failed",
    "handshake_timeout",
    "bad_client_hello",
    "upstream_down",
    "proxy_rejected",
    "overflow",
};

/* One relay direction: bytes read from src are queued on dst. */
struct dir {
    bool eof;    /* src sent FIN (or failed) */
    bool shut;   /* FIN passed on to dst */
    bool paused; /* src reading stopped until dst drains */
};

/* An IP address and port, no larger than it needs to be: a session keeps two. */
union gw_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

struct gw_session {
    struct gw_session *prev, *next;
    struct gw_session_env env;
    struct gw_snapshot *snap;
    struct gw_port *port;
    struct gw_port_stats *pst;
    struct gw_api *api;
    struct gw_api_stats *st;

    struct bufferevent *cli;
    struct bufferevent *up;
    struct gw_relay *relay; /* relaying between plain sockets: cli and up are gone */
    struct event *timer;
    enum state state;

    unsigned rr_turn;      /* this connection's round-robin turn */
    unsigned attempt;      /* connect attempts made so far */
    size_t ups;            /* current upstream index */
    int addr;              /* address index within it */
    uint64_t failed_hosts; /* host_ids that failed a connect, to skip on retry */
    int last_errno;
    const char *last_error;  /* why the current connect attempt failed, if not errno */
    enum end_reason failure; /* set when a side failed and the other is flushing */

    struct dir c2u, u2c;
    int64_t started_ms, active_ms, connect_deadline_ms, drain_deadline_ms, route_deadline_ms;
    int64_t flush_deadline_ms;    /* a side failed: the other's queued bytes must go by then */
    int64_t eligible_deadline_ms; /* waiting for a first health verdict until then */
    int64_t retry_at_ms;          /* out of descriptors: when to try the connect again */
    struct evbuffer_cb_entry *cli_out_cb, *up_out_cb;
    int64_t kernel_queued; /* bytes in both sockets' send queues at the last idle check */
    bool fd_waiting;       /* counted in the worker's descriptor waiters */
    SSL *up_ssl;           /* upstream TLS waiting for the TCP connect and PROXY header */
    bool proxy_sent;       /* the outbound PROXY header is queued */
    uint64_t rx, tx;
    int64_t rx_buffered, tx_buffered;       /* what this session adds to the gauges now */
    bool target_counted;                    /* in its target's cx_active */
    struct gw_target_stats *tst;            /* its target's counters, once connected */
    bool held_total, held_source, held_api; /* slots taken of the connection limits */
    int held_target;                        /* the target whose slot it holds, or -1 */
    bool flushing_up;                       /* in upstream_flush_active */
    bool flushed;      /* a side failed and all it sent was delivered: close with FIN */
    int first_eof;     /* 0: the client's FIN came first, 1: the upstream's, -1 */
    char *sni;         /* the client's server name; NULL when none */
    char *alpn;        /* the protocol negotiated with the client; NULL when none */
    const char *error; /* a short reason for the log line, static storage */

    union gw_addr peer; /* the client: from the PROXY header when there was one */
    socklen_t peerlen;
    union gw_addr orig_dst; /* the address the client connected to, from the header */
    bool has_orig_dst;
};

static void format_addr(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(buf, len, "%s:%u", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            /* A dual-stack listener's IPv4 client, shown as IPv4. */
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, sizeof(host));
            snprintf(buf, len, "%s:%u", host, port);
            return;
        }
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, port);
    } else {
        snprintf(buf, len, "unknown");
    }
}

static const char *api_id(const struct gw_session *s)
{
    return s->api != NULL ? s->api->def->api_id : "-";
}

static const char *target_name(const struct gw_session *s)
{
    return s->api != NULL && s->state == ST_RELAY ? s->api->ups[s->ups].name : "-";
}

/* ---- list and teardown ----------------------------------------------------- */

static void list_add(struct gw_session_list *l, struct gw_session *s)
{
    s->prev = NULL;
    s->next = l->head;
    if (l->head != NULL)
        l->head->prev = s;
    l->head = s;
    l->count++;
}

static void list_remove(struct gw_session_list *l, struct gw_session *s)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        l->head = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    l->count--;
}

/* Keeps the client's server name for the log line and an outbound PROXY
 * header. A client chooses these bytes: anything that is not a host-name
 * character becomes '_', so it cannot forge fields in the log. */
static void keep_name(struct gw_session *s, const char *name)
{
    size_t n = strnlen(name, 255);
    free(s->sni);
    s->sni = n > 0 ? malloc(n + 1) : NULL;
    if (s->sni == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '_' || c == '*';
        s->sni[i] = ok ? c : '_';
    }
    s->sni[n] = '\0';
}

static SSL *bev_ssl(struct bufferevent *bev)
{
    return bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;
}

/* " tls=TLSv1.3/TLS_AES_256_GCM_SHA384" and the verified client's subject. */
static void describe_tls(const char *label, struct bufferevent *bev, char *buf, size_t len)
{
    SSL *ssl = bev_ssl(bev);
    buf[0] = '\0';
    if (ssl == NULL || !SSL_is_init_finished(ssl))
        return;
    int n = snprintf(buf, len, " %s=%s/%s", label, SSL_get_version(ssl),
                     SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
    X509 *peer = SSL_is_server(ssl) ? SSL_get0_peer_certificate(ssl) : NULL;
    if (peer != NULL && n > 0 && (size_t)n < len) {
        char subject[256];
        X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof(subject));
        for (char *c = subject; *c != '\0'; c++)
            if (*c == ' ' || *c == '"')
                *c = '_'; /* keep the line one key=value list */
        snprintf(buf + n, len - (size_t)n, " client_subject=%s", subject);
    }
}

/* Frees one side. A stream cut short reaches the peer as a reset, not as a
 * clean end: after the other side failed (unless everything it sent was
 * delivered: a reset would make the peer's kernel drop what its application
 * has not read yet), or when queued bytes are dropped. */
static void close_side(struct bufferevent *bev, struct evbuffer_cb_entry *cb, enum end_reason why,
                       bool flushed)
{
    if (bev == NULL)
        return;
    struct evbuffer *out = bufferevent_get_output(bev);
    if (cb != NULL)
        evbuffer_remove_cb_entry(out, cb);
    bool cut = ((why == END_CLIENT_ERROR || why == END_UPSTREAM_ERROR) && !flushed) ||
               (why != END_CLOSED && evbuffer_get_length(out) > 0);
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (cut && fd >= 0) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    bufferevent_free(bev);
}

static void stop_fd_wait(struct gw_session *s)
{
    if (s->fd_waiting && s->env.fd_wait != NULL)
        s->env.fd_wait(s->env.arg, -1, 0);
    s->fd_waiting = false;
}

/* Appends `,"key":"value"` (or null) to out, the value escaped for JSON. */
static void json_str(struct evbuffer *out, const char *key, const char *v)
{
    if (v == NULL) {
        evbuffer_add_printf(out, ",\"%s\":null", key);
        return;
    }
    evbuffer_add_printf(out, ",\"%s\":\"", key);
    const char *run = v; /* bytes that need no escape go out in runs */
    for (const unsigned char *c = (const unsigned char *)v;; c++) {
        bool esc = *c == '"' || *c == '\\' || (*c < 0x20 && *c != '\0') || *c == 0x7f;
        if (!esc && *c != '\0')
            continue;
        evbuffer_add(out, run, (size_t)((const char *)c - run));
        if (*c == '\0')
            break;
        if (*c == '"' || *c == '\\')
            evbuffer_add_printf(out, "\\%c", *c);
        else
            evbuffer_add_printf(out, "\\u%04x", *c);
        run = (const char *)c + 1;
    }
    evbuffer_add(out, "\"", 1);
}

static void tls_names(struct bufferevent *bev, const char **version, const char **cipher)
{
    SSL *ssl = bev_ssl(bev);
    *version = *cipher = NULL;
    if (ssl != NULL && SSL_is_init_finished(ssl)) {
        *version = SSL_get_version(ssl);
        *cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl));
    }
}

/* The access log's line: one JSON object per connection. */
static void access_log(struct gw_session *s, enum end_reason why)
{
    char client[INET6_ADDRSTRLEN + 16], when[40];
    struct evbuffer *out = evbuffer_new();
    if (out == NULL)
        return;
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    int64_t duration = gw_now_ms() - s->started_ms;
    int64_t start_ms = (int64_t)wall.tv_sec * 1000 + wall.tv_nsec / 1000000 - duration;
    time_t start_s = (time_t)(start_ms / 1000);
    struct tm tm;
    gmtime_r(&start_s, &tm);
    size_t w = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof(when) - w, ".%03dZ", (int)(start_ms % 1000));
    format_addr(&s->peer.sa, client, sizeof(client));
    const char *end = end_names[why];
    if (why == END_CLOSED)
        end = s->first_eof == 1 ? "upstream_closed" : "client_closed";
    const char *tv, *tc, *uv, *uc;
    tls_names(s->cli, &tv, &tc);
    tls_names(s->up, &uv, &uc);
    evbuffer_add_printf(out, "{\"time\":\"%s\",\"duration_ms\":%lld", when, (long long)duration);
    json_str(out, "client", client);
    evbuffer_add_printf(out, ",\"listen_port\":%d", s->port->port);
    json_str(out, "api_id", s->api != NULL ? s->api->def->api_id : NULL);
    json_str(out, "sni", s->sni);
    json_str(out, "tls_version", tv);
    json_str(out, "tls_cipher", tc);
    json_str(out, "alpn", s->alpn);
    json_str(out, "target", s->api != NULL && s->attempt > 0 ? s->api->ups[s->ups].label : NULL);
    json_str(out, "upstream_tls_version", uv);
    json_str(out, "upstream_tls_cipher", uc);
    evbuffer_add_printf(out, ",\"attempts\":%u,\"rx_bytes\":%llu,\"tx_bytes\":%llu", s->attempt,
                        (unsigned long long)s->rx, (unsigned long long)s->tx);
    json_str(out, "end", end);
    json_str(out, "error", s->error);
    evbuffer_add(out, "}", 1);
    size_t n = evbuffer_get_length(out);
    gw_access_log_write(s->env.access_log, (const char *)evbuffer_pullup(out, -1), n);
    evbuffer_free(out);
}

static void release_target(struct gw_session *s)
{
    if (s->held_target >= 0)
        gw_limit_release(s->api->ups[s->held_target].active);
    s->held_target = -1;
}

static void release_limits(struct gw_session *s)
{
    release_target(s);
    if (s->held_api)
        gw_limit_release(s->api->active);
    if (s->held_source)
        gw_sources_release(s->snap->sources, &s->peer.sa);
    if (s->held_total)
        gw_limit_release(s->snap->active_total);
    s->held_api = s->held_source = s->held_total = false;
}

static void session_close(struct gw_session *s, enum end_reason why)
{
    stop_fd_wait(s);
    if (s->relay != NULL && s->first_eof < 0)
        s->first_eof = gw_relay_first_eof(s->relay);
    if (s->env.access_log != NULL)
        access_log(s, why);
    if (gw_log_enabled(GW_LOG_INFO)) {
        char client[INET6_ADDRSTRLEN + 16], down[400], up[128];
        format_addr(&s->peer.sa, client, sizeof(client));
        describe_tls("tls", s->cli, down, sizeof(down));
        describe_tls("upstream_tls", s->up, up, sizeof(up));
        gw_info("conn client=%s port=%d api_id=%s sni=%s%s%s%s target=%s attempts=%u rx=%llu "
                "tx=%llu duration_ms=%lld end=%s%s%s%s",
                client, s->port->port, api_id(s), s->sni ? s->sni : "-", down,
                s->alpn ? " alpn=" : "", s->alpn ? s->alpn : "", target_name(s), s->attempt,
                (unsigned long long)s->rx, (unsigned long long)s->tx,
                (long long)(gw_now_ms() - s->started_ms), end_names[why], up,
                s->error ? " error=" : "", s->error ? s->error : "");
    }
    if (why == END_NO_ROUTE)
        GW_STAT_ADD(s->pst, no_route, 1);
    release_limits(s);
    if (s->st != NULL) {
        GW_STAT_ADD(s->st, cx_active, -1);
        GW_STAT_ADD(s->st, rx_buffered, -s->rx_buffered);
        GW_STAT_ADD(s->st, tx_buffered, -s->tx_buffered);
        if (s->flushing_up)
            GW_STAT_ADD(s->st, upstream_flush_active, -1);
        if (s->target_counted)
            GW_STAT_ADD(&s->api->ups[s->ups].stats[s->env.worker_id], cx_active, -1);
        if (why == END_IDLE_TIMEOUT)
            GW_STAT_ADD(s->st, idle_timeout, 1);
        else if (why == END_MAX_DURATION)
            GW_STAT_ADD(s->st, max_duration, 1);
        else if (why == END_DRAIN)
            GW_STAT_ADD(s->st, drained, 1);
        else if (why == END_CONNECT_FAILED)
            GW_STAT_ADD(s->st, no_upstream, 1);
        else if (why == END_UPSTREAM_DOWN)
            GW_STAT_ADD(s->st, closed_on_down, 1);
    }
    close_side(s->cli, s->cli_out_cb, why, s->flushed);
    close_side(s->up, s->up_out_cb, why, s->flushed);
    bool error = (why == END_CLIENT_ERROR || why == END_UPSTREAM_ERROR) && !s->flushed;
    gw_relay_free(s->relay, why == END_CLOSED ? GW_RELAY_CLEAN
                            : error           ? GW_RELAY_RESET
                                              : GW_RELAY_STOP);
    SSL_free(s->up_ssl);
    if (s->timer != NULL)
        event_free(s->timer);
    struct gw_session_list *l = s->env.list;
    list_remove(l, s);
    gw_snapshot_unref(s->snap);
    free(s->sni);
    free(s->alpn);
    free(s);
    if (l->count == 0 && l->on_empty != NULL)
        l->on_empty(l->arg);
}

/* ---- deadlines ---------------------------------------------------------------- */

static int64_t min_deadline(int64_t a, int64_t b)
{
    if (a == 0)
        return b;
    if (b == 0)
        return a;
    return a < b ? a : b;
}

/* The earliest deadline of the current state, 0 for none. */
static int64_t next_deadline(const struct gw_session *s)
{
    int64_t d = s->drain_deadline_ms;
    if (s->state == ST_PROXY_HEADER || s->state == ST_PEEK || s->state == ST_HANDSHAKE)
        return min_deadline(d, s->route_deadline_ms);
    const struct api_ext *ext = &s->api->def->ext;
    if (ext->max_connection_duration_ms > 0)
        d = min_deadline(d, s->started_ms + ext->max_connection_duration_ms);
    if (s->state == ST_CONNECT)
        return min_deadline(min_deadline(d, s->connect_deadline_ms), s->retry_at_ms);
    if (s->failure != END_NONE)
        return min_deadline(d, s->flush_deadline_ms);
    if (ext->idle_timeout_ms > 0)
        d = min_deadline(d, s->active_ms + ext->idle_timeout_ms);
    return d;
}

static void arm_timer(struct gw_session *s)
{
    int64_t d = next_deadline(s);
    if (d == 0) {
        evtimer_del(s->timer);
        return;
    }
    int64_t wait = d - gw_now_ms();
    if (wait < 0)
        wait = 0;
    /* The coarse clock may lag by a tick; a millisecond of slack avoids a
     * wake-up that finds nothing due yet. */
    wait += 1;
    struct timeval tv = {.tv_sec = wait / 1000, .tv_usec = (wait % 1000) * 1000};
    evtimer_add(s->timer, &tv);
}

/* ---- relay --------------------------------------------------------------------- */

/* Brings the buffered-bytes gauges up to date with what this session holds:
 * bytes from the client not yet written upstream, and the reverse. */
static void sync_buffered(struct gw_session *s)
{
    int64_t rx = 0, tx = 0;
    if (s->relay != NULL) {
        rx = (int64_t)gw_relay_buffered(s->relay, GW_RELAY_CLIENT);
        tx = (int64_t)gw_relay_buffered(s->relay, GW_RELAY_UPSTREAM);
    } else {
        if (s->up != NULL)
            rx = (int64_t)evbuffer_get_length(bufferevent_get_output(s->up));
        if (s->cli != NULL)
            tx = (int64_t)evbuffer_get_length(bufferevent_get_output(s->cli));
    }
    if (s->st == NULL || (rx == s->rx_buffered && tx == s->tx_buffered))
        return;
    GW_STAT_ADD(s->st, rx_buffered, rx - s->rx_buffered);
    GW_STAT_ADD(s->st, tx_buffered, tx - s->tx_buffered);
    s->rx_buffered = rx;
    s->tx_buffered = tx;
}

/* The client failed and its last bytes are still being written upstream. */
static void start_upstream_flush(struct gw_session *s)
{
    s->flushing_up = true;
    GW_STAT_ADD(s->st, upstream_flush_total, 1);
    GW_STAT_ADD(s->st, upstream_flush_active, 1);
}

static bool relay_done(const struct gw_session *s)
{
    return s->c2u.shut && s->u2c.shut;
}

/* Passes src's FIN on once dst has nothing left to write. */
static void maybe_shutdown(struct bufferevent *dst, struct dir *d)
{
    if (!d->eof || d->shut)
        return;
    if (evbuffer_get_length(bufferevent_get_output(dst)) > 0) {
        bufferevent_setwatermark(dst, EV_WRITE, 0, 0);
        return;
    }
    SSL *ssl = bev_ssl(dst);
    if (ssl != NULL) {
        /* TLS half-close: close_notify first, then the TCP FIN. */
        SSL_shutdown(ssl);
        ERR_clear_error();
    }
    /* Over a filter (TLS after a PROXY header) close_notify is still queued
     * below: the TCP FIN waits for the final close. */
    if (bufferevent_get_underlying(dst) == NULL)
        shutdown(bufferevent_getfd(dst), SHUT_WR);
    d->shut = true;
}

/* libevent 2.1 reads at most 4 KiB per wake-up. When such a read came back
 * full, read on from the socket straight into dst's output buffer, up to the
 * watermark. An EOF or error found here is left in the socket for libevent's
 * next read, so it is reported through on_event like any other. */
#define LIBEVENT_READ_CHUNK 4096
#define READ_MORE_CHUNK (64 * 1024)

static size_t read_more(evutil_socket_t fd, struct evbuffer *out, size_t room, bool *failed)
{
    size_t total = 0;
    while (room > 0) {
        size_t want = room < READ_MORE_CHUNK ? room : READ_MORE_CHUNK;
        struct evbuffer_iovec v[2];
        int nv = evbuffer_reserve_space(out, (ev_ssize_t)want, v, 2);
        if (nv <= 0)
            break;
        struct iovec iov[2];
        size_t space = 0;
        for (int i = 0; i < nv; i++) {
            iov[i].iov_base = v[i].iov_base;
            iov[i].iov_len = v[i].iov_len;
            space += v[i].iov_len;
        }
        ssize_t r = readv(fd, iov, nv);
        if (r <= 0) {
            /* A reset read here would be gone when libevent reads next. */
            *failed = r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
            evbuffer_commit_space(out, v, 0);
            break;
        }
        size_t left = (size_t)r;
        int used = 0;
        for (; used < nv && left > 0; used++) {
            if (v[used].iov_len > left)
                v[used].iov_len = left;
            left -= v[used].iov_len;
        }
        evbuffer_commit_space(out, v, used);
        total += (size_t)r;
        room -= (size_t)r < room ? (size_t)r : room;
        if ((size_t)r < space)
            break; /* the socket is drained */
    }
    return total;
}

/* Moves what src has read to dst's output. Returns false when reading on
 * found src failed (a reset): the caller then treats src as failed. */
static bool relay(struct gw_session *s, struct bufferevent *src, struct bufferevent *dst,
                  struct dir *d)
{
    struct evbuffer *in = bufferevent_get_input(src);
    struct evbuffer *out = bufferevent_get_output(dst);
    size_t n = evbuffer_get_length(in);
    bool failed = false;
    if (n == 0)
        return true;
    bool was_empty = evbuffer_get_length(out) == 0;
    evbuffer_add_buffer(out, in);
    /* A plain socket with nothing queued is written at once: waiting for the
     * next loop turn costs a request/response exchange one more epoll round. */
    if (was_empty && bev_ssl(dst) == NULL && bufferevent_get_underlying(dst) == NULL &&
        (bufferevent_get_enabled(dst) & EV_WRITE))
        evbuffer_write(out, bufferevent_getfd(dst));
    size_t queued = evbuffer_get_length(out);
    if (n >= LIBEVENT_READ_CHUNK && queued < GW_RELAY_HIGH_WATERMARK && bev_ssl(src) == NULL)
        n += read_more(bufferevent_getfd(src), out, GW_RELAY_HIGH_WATERMARK - queued, &failed);
    if (src == s->cli) {
        s->rx += n;
        GW_STAT_ADD(s->st, rx_bytes, (int64_t)n);
        if (s->tst != NULL)
            GW_STAT_ADD(s->tst, rx_bytes, (int64_t)n);
    }
    s->active_ms = gw_now_ms();
    if (!d->paused && evbuffer_get_length(out) >= GW_RELAY_HIGH_WATERMARK) {
        /* Stop reading until dst has written half of it (le-proxy's scheme). */
        bufferevent_disable(src, EV_READ);
        bufferevent_setwatermark(dst, EV_WRITE, GW_RELAY_HIGH_WATERMARK / 2, 0);
        d->paused = true;
        if (src == s->cli)
            GW_STAT_ADD(s->st, paused_reading, 1);
        else
            GW_STAT_ADD(s->st, upstream_paused_reading, 1);
    }
    sync_buffered(s);
    return !failed;
}

/* Bytes left an output buffer: the connection is alive even when nothing is
 * read (a slow reader), and bytes written to the client are counted here, when
 * they are written rather than when they are queued. */
static void on_output_drained(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct gw_session *s = arg;
    if (info->n_deleted == 0)
        return;
    s->active_ms = gw_now_ms();
    if (s->cli != NULL && buf == bufferevent_get_output(s->cli)) {
        s->tx += info->n_deleted;
        GW_STAT_ADD(s->st, tx_bytes, (int64_t)info->n_deleted);
        if (s->tst != NULL)
            GW_STAT_ADD(s->tst, tx_bytes, (int64_t)info->n_deleted);
    }
    sync_buffered(s);
}

static void peek(struct gw_session *s);
static void proxy_header(struct gw_session *s);
static void proxy_rejected(struct gw_session *s, int64_t *counter, const char *why);
static void relay_failed(struct gw_session *s, struct bufferevent *bev);

static void on_read(struct bufferevent *bev, void *arg)
{
    struct gw_session *s = arg;
    if (s->state == ST_PROXY_HEADER) {
        proxy_header(s);
        return;
    }
    if (s->state == ST_PEEK) {
        peek(s);
        return;
    }
    if (s->state != ST_RELAY)
        return; /* client bytes wait in the input buffer until connected */
    bool ok = bev == s->cli ? relay(s, s->cli, s->up, &s->c2u) : relay(s, s->up, s->cli, &s->u2c);
    if (!ok)
        relay_failed(s, bev);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct gw_session *s = arg;
    if (s->state != ST_RELAY)
        return;
    if (s->failure != END_NONE) {
        /* The other side failed; this one was flushing what it had sent. */
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
            s->flushed = true;
            session_close(s, s->failure);
        }
        return;
    }
    struct bufferevent *src = bev == s->up ? s->cli : s->up;
    struct dir *d = bev == s->up ? &s->c2u : &s->u2c;
    if (d->paused) {
        d->paused = false;
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
        if (!d->eof)
            bufferevent_enable(src, EV_READ);
        if (src == s->cli)
            GW_STAT_ADD(s->st, resumed_reading, 1);
        else
            GW_STAT_ADD(s->st, upstream_resumed_reading, 1);
    }
    maybe_shutdown(bev, d);
    if (relay_done(s))
        session_close(s, END_CLOSED);
}

/* How long the side left may take to flush what the failed side sent. */
#define FLUSH_TIMEOUT_MS 10000

/* A side failed: deliver what it had sent to the other side, then close. The
 * other side is then reset, so its peer learns that the stream was cut. */
static void relay_failed(struct gw_session *s, struct bufferevent *bev)
{
    if (s->failure != END_NONE) {
        /* The side that was flushing failed too: nothing more can be delivered. */
        session_close(s, s->failure);
        return;
    }
    s->failure = bev == s->cli ? END_CLIENT_ERROR : END_UPSTREAM_ERROR;
    struct bufferevent *other = bev == s->cli ? s->up : s->cli;
    struct dir *from_bev = bev == s->cli ? &s->c2u : &s->u2c;
    relay(s, bev, other, from_bev);
    bufferevent_disable(bev, EV_READ | EV_WRITE);
    bufferevent_disable(other, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(other)) == 0) {
        session_close(s, s->failure);
        return;
    }
    bufferevent_setwatermark(other, EV_WRITE, 0, 0); /* on_write closes once flushed */
    if (bev == s->cli)
        start_upstream_flush(s);
    s->flush_deadline_ms = gw_now_ms() + FLUSH_TIMEOUT_MS;
    arm_timer(s);
}

static void relay_event(struct gw_session *s, struct bufferevent *bev, short what)
{
    if (what & BEV_EVENT_ERROR) {
        gw_debug("api_id=%s %s error: %s", api_id(s), bev == s->cli ? "client" : "upstream",
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        relay_failed(s, bev);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        struct bufferevent *other = bev == s->cli ? s->up : s->cli;
        struct dir *d = bev == s->cli ? &s->c2u : &s->u2c;
        relay(s, bev, other, d);
        d->eof = true;
        if (s->first_eof < 0)
            s->first_eof = bev == s->cli ? 0 : 1;
        maybe_shutdown(other, d);
        if (relay_done(s))
            session_close(s, END_CLOSED);
    }
}

/* ---- connect ---------------------------------------------------------------------- */

static void connect_next(struct gw_session *s);
static void connect_failed(struct gw_session *s, bool timeout);

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

/* No target may be picked. While a verdict is due (a target was never
 * checked because the gateway has just started, or the sentinels have not
 * named the master yet, or hold it in a failover), a new connection waits
 * for it, up to its connect timeout, rather than fail at once or land on a
 * replica. */
#define ELIGIBLE_POLL_MS 50

static bool wait_for_eligible(struct gw_session *s)
{
    int64_t now = gw_now_ms();
    if (s->eligible_deadline_ms == 0)
        s->eligible_deadline_ms = now + s->api->def->ext.connect_timeout_ms;
    if (s->attempt > 0 || now + ELIGIBLE_POLL_MS >= s->eligible_deadline_ms ||
        !gw_api_settling(s->api))
        return false;
    s->retry_at_ms = now + ELIGIBLE_POLL_MS;
    arm_timer(s);
    return true;
}

static void set_nodelay(evutil_socket_t fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* The outbound PROXY header: the client's addresses (from its own header
 * when it sent one), and with v2 the SNI, ALPN and TLS details. It is queued
 * before any client byte, so it goes first, also when the server speaks first. */
static void send_proxy_header(struct gw_session *s)
{
    struct sockaddr_storage dst;
    socklen_t dl = sizeof(dst);
    if (s->has_orig_dst)
        memcpy(&dst, &s->orig_dst, sizeof(s->orig_dst));
    else if (getsockname(bufferevent_getfd(s->cli), (struct sockaddr *)&dst, &dl) != 0)
        memset(&dst, 0, sizeof(dst));
    const struct sockaddr *src = &s->peer.sa;
    uint8_t hdr[1024];
    int n;
    if (s->api->def->ext.send_proxy_protocol == 1) {
        n = gw_pp1_build(src, (const struct sockaddr *)&dst, (char *)hdr, sizeof(hdr));
    } else {
        struct gw_pp2_extra x = {.authority = s->sni,
                                 .alpn = (const uint8_t *)s->alpn,
                                 .alpn_len = s->alpn ? strlen(s->alpn) : 0,
                                 .crc32c = s->api->def->ext.send_proxy_protocol_crc32c};
        SSL *ssl = bev_ssl(s->cli);
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
        n = gw_pp2_build(src, (const struct sockaddr *)&dst, &x, hdr, sizeof(hdr));
    }
    if (n > 0)
        bufferevent_write(s->up, hdr, (size_t)n);
    s->proxy_sent = true;
}

/* ---- the plain relay (gw_relay) ----------------------------------------------- */

static void plain_moved(void *arg, enum gw_relay_side from, size_t nread, size_t nwritten)
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

static void plain_flow(void *arg, enum gw_relay_side from, bool paused)
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

static void plain_failed(void *arg, enum gw_relay_side side, bool flushing)
{
    struct gw_session *s = arg;
    s->failure = side == GW_RELAY_CLIENT ? END_CLIENT_ERROR : END_UPSTREAM_ERROR;
    gw_debug("api_id=%s %s failed", api_id(s), side == GW_RELAY_CLIENT ? "client" : "upstream");
    if (!flushing) {
        session_close(s, s->failure);
        return;
    }
    if (side == GW_RELAY_CLIENT)
        start_upstream_flush(s);
    s->flush_deadline_ms = gw_now_ms() + FLUSH_TIMEOUT_MS;
    arm_timer(s);
}

static void plain_done(void *arg)
{
    struct gw_session *s = arg;
    s->flushed = s->failure != END_NONE; /* a failed side's bytes all went */
    session_close(s, s->failure != END_NONE ? s->failure : END_CLOSED);
}

static const struct gw_relay_ops plain_ops = {
    .moved = plain_moved, .flow = plain_flow, .failed = plain_failed, .done = plain_done};

static bool plain(struct bufferevent *bev)
{
    return bev_ssl(bev) == NULL && bufferevent_get_underlying(bev) == NULL;
}

/* Takes the socket out of a bufferevent, which then no longer closes it. */
static evutil_socket_t take_fd(struct bufferevent *bev)
{
    evutil_socket_t fd = bufferevent_getfd(bev);
    bufferevent_disable(bev, EV_READ | EV_WRITE);
    bufferevent_setfd(bev, -1);
    return fd;
}

/* Both sides are clear text: their sockets, and the bytes the bufferevents
 * hold (a PROXY header, the client's first bytes), go to a plain relay. */
static void start_plain_relay(struct gw_session *s)
{
    struct evbuffer *to_up = bufferevent_get_output(s->up);
    struct evbuffer *to_cli = bufferevent_get_output(s->cli);
    evbuffer_remove_cb_entry(to_cli, s->cli_out_cb);
    s->cli_out_cb = NULL;
    size_t first = evbuffer_get_length(bufferevent_get_input(s->cli));
    evbuffer_add_buffer(to_up, bufferevent_get_input(s->cli));
    evbuffer_add_buffer(to_cli, bufferevent_get_input(s->up));
    size_t nup = evbuffer_get_length(to_up), ncli = evbuffer_get_length(to_cli);
    evutil_socket_t cfd = take_fd(s->cli), ufd = take_fd(s->up);
    s->relay = gw_relay_new(s->env.base, s->env.pool, cfd, ufd, evbuffer_pullup(to_up, -1), nup,
                            evbuffer_pullup(to_cli, -1), ncli, &plain_ops, s);
    /* We may be inside the upstream's connect callback, after which libevent
     * writes what its output holds to the descriptor it saw: leave nothing. */
    evbuffer_drain(to_up, nup);
    evbuffer_drain(to_cli, ncli);
    bufferevent_free(s->cli);
    bufferevent_free(s->up);
    s->cli = s->up = NULL;
    if (s->relay == NULL) {
        session_close(s, END_INTERNAL);
        return;
    }
    s->rx += first;
    GW_STAT_ADD(s->st, rx_bytes, (int64_t)first);
    GW_STAT_ADD(s->tst, rx_bytes, (int64_t)first);
    sync_buffered(s);
    arm_timer(s);
}

static void connected(struct gw_session *s)
{
    struct gw_upstream *u = &s->api->ups[s->ups];
    SSL *ssl = bev_ssl(s->up);
    if (ssl != NULL) {
        if (u->pins != NULL && !cert_pins_match(SSL_get0_peer_certificate(ssl), u->pins)) {
            GW_STAT_ADD(s->st, upstream_pin_mismatch, 1);
            gw_warn("api_id=%s upstream %s: its public key matches none of the pinned keys",
                    api_id(s), u->name);
            s->last_error = "public_key_not_pinned";
            connect_failed(s, false);
            return;
        }
        if (SSL_session_reused(ssl))
            GW_STAT_ADD(s->st, upstream_tls_resumed, 1);
    }
    s->state = ST_RELAY;
    s->active_ms = gw_now_ms();
    GW_STAT_ADD(s->st, upstream_cx_total, 1);
    struct gw_target_stats *ts = &u->stats[s->env.worker_id];
    GW_STAT_ADD(ts, cx_total, 1);
    GW_STAT_ADD(ts, cx_active, 1);
    s->target_counted = true;
    s->tst = ts;
    set_nodelay(bufferevent_getfd(s->up));
    gw_debug("api_id=%s connected to %s (attempt %u)", api_id(s), u->name, s->attempt);
    if (s->api->def->ext.send_proxy_protocol && !s->proxy_sent)
        send_proxy_header(s);
    if (plain(s->cli) && plain(s->up)) {
        start_plain_relay(s);
        return;
    }
    s->up_out_cb = evbuffer_add_cb(bufferevent_get_output(s->up), on_output_drained, s);
    /* From now on flow control is by the output buffers, not the input. */
    bufferevent_setwatermark(s->cli, EV_READ, 0, 0);
    bufferevent_enable(s->up, EV_READ | EV_WRITE);
    if (!s->c2u.eof)
        bufferevent_enable(s->cli, EV_READ);
    relay(s, s->cli, s->up, &s->c2u);
    maybe_shutdown(s->up, &s->c2u);
    arm_timer(s);
}

/* The reason an upstream connect or TLS handshake failed, for the log; *tls
 * tells whether TLS itself failed (the host answered, but not acceptably). */
static const char *upstream_failure(struct gw_session *s, char *buf, size_t len, bool *tls)
{
    *tls = true;
    if (s->last_error != NULL)
        return s->last_error;
    SSL *ssl = bev_ssl(s->up);
    const char *why =
        ssl != NULL ? cert_tls_failure(ssl, bufferevent_get_openssl_error(s->up), buf, len) : NULL;
    if (why != NULL)
        return why;
    *tls = false;
    return evutil_socket_error_to_string(s->last_errno);
}

static void connect_failed(struct gw_session *s, bool timeout)
{
    const struct gw_upstream *u = &s->api->ups[s->ups];
    char addr[INET6_ADDRSTRLEN + 16], why[320];
    format_addr((const struct sockaddr *)&u->addr[s->addr], addr, sizeof(addr));
    struct gw_target_stats *ts = &u->stats[s->env.worker_id];
    if (timeout) {
        GW_STAT_ADD(s->st, connect_timeout, 1);
        GW_STAT_ADD(ts, connect_timeout, 1);
    } else {
        GW_STAT_ADD(s->st, connect_fail, 1);
        GW_STAT_ADD(ts, connect_fail, 1);
    }
    bool tls_failed = false;
    const char *reason = timeout ? "timed out" : upstream_failure(s, why, sizeof(why), &tls_failed);
    if (tls_failed && s->last_error == NULL)
        GW_STAT_ADD(s->st, upstream_tls_failed, 1);
    gw_info("api_id=%s connect to %s (%s) failed: %s (attempt %u of %d)", api_id(s), u->name, addr,
            reason, s->attempt, s->api->def->ext.max_connect_attempts);
    s->last_error = NULL;
    bufferevent_free(s->up);
    s->up = NULL;
    SSL_free(s->up_ssl);
    s->up_ssl = NULL;
    s->proxy_sent = false;
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

static void routed(struct gw_session *s, struct gw_api *api);

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

/* The client's TLS handshake ended, well or not. */
static void handshake_event(struct gw_session *s, short what)
{
    SSL *ssl = bev_ssl(s->cli);
    bool no_route = false;
    struct gw_api *api = gw_tls_chosen(ssl, &no_route);
    keep_name(s, gw_tls_requested_name(ssl));
    if (!(what & BEV_EVENT_CONNECTED) || api == NULL) {
        if (no_route) {
            GW_STAT_ADD(s->pst, sni_not_found, 1);
            session_close(s, END_NO_ROUTE);
            return;
        }
        GW_STAT_ADD(s->pst, tls_handshake_failed, 1);
        unsigned long e = bufferevent_get_openssl_error(s->cli);
        count_tls_failure(s, e);
        static __thread char reason[200];
        if (e != 0) {
            ERR_error_string_n(e, reason, sizeof(reason));
            for (char *c = reason; *c != '\0'; c++)
                if (*c == ' ')
                    *c = '_'; /* one token in the key=value line */
            s->error = strrchr(reason, ':') ? strrchr(reason, ':') + 1 : reason;
        } else {
            s->error = (what & BEV_EVENT_EOF) ? "client_closed" : "connection_error";
        }
        session_close(s, END_HANDSHAKE_FAILED);
        return;
    }
    GW_STAT_ADD(s->pst, tls_handshakes, 1);
    if (SSL_session_reused(ssl))
        GW_STAT_ADD(s->pst, tls_resumed, 1);
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    if (alpn_len > 0 && (s->alpn = malloc(alpn_len + 1)) != NULL) {
        memcpy(s->alpn, alpn, alpn_len);
        s->alpn[alpn_len] = '\0';
    }
    routed(s, api);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct gw_session *s = arg;
    if (s->state == ST_RELAY) {
        relay_event(s, bev, what);
        return;
    }
    if (s->state == ST_HANDSHAKE) {
        handshake_event(s, what);
        return;
    }
    if (bev == s->up) {
        if ((what & BEV_EVENT_CONNECTED) && s->up_ssl != NULL) {
            /* TCP is up: the PROXY header first, in clear, then TLS over it. */
            send_proxy_header(s);
            SSL *ssl = s->up_ssl;
            s->up_ssl = NULL;
            /* On failure the constructor has freed ssl (BEV_OPT_CLOSE_ON_FREE). */
            struct bufferevent *tls = bufferevent_openssl_filter_new(
                s->env.base, s->up, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
            if (tls == NULL) {
                s->last_error = "cannot start TLS";
                connect_failed(s, false);
                return;
            }
            s->up = tls;
            bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
            bufferevent_setcb(tls, on_read, on_write, on_event, s);
            bufferevent_set_max_single_write(tls, GW_RELAY_HIGH_WATERMARK);
            bufferevent_enable(tls, EV_READ | EV_WRITE);
        } else if (what & BEV_EVENT_CONNECTED) {
            connected(s);
        } else {
            s->last_errno = EVUTIL_SOCKET_ERROR();
            connect_failed(s, false);
        }
        return;
    }
    if (s->state == ST_PROXY_HEADER) { /* closed or reset before its header was whole */
        proxy_rejected(s, &s->pst->prx_truncated, "proxy_header_truncated");
        return;
    }
    /* The client went away while we were reading its ClientHello or connecting. */
    if ((what & BEV_EVENT_ERROR) || s->state == ST_PEEK || s->state == ST_PROXY_HEADER) {
        session_close(s, (what & BEV_EVENT_ERROR) ? END_CLIENT_ERROR : END_CLOSED);
        return;
    }
    if (what & BEV_EVENT_EOF)
        s->c2u.eof = true; /* its bytes, if any, are still in the input buffer */
}

/* A new upstream bufferevent for target u: plain, or TLS with SNI,
 * verification, client certificate, a cached session and the client's ALPN.
 * When a PROXY header must go first, TLS waits for the TCP connect: the
 * prepared SSL is kept in s->up_ssl and layered on after the header. */
static struct bufferevent *upstream_bev(struct gw_session *s, struct gw_upstream *u)
{
    if (u->target.scheme != API_SCHEME_TLS)
        return bufferevent_socket_new(s->env.base, -1, BEV_OPT_CLOSE_ON_FREE);
    SSL *ssl = SSL_new(s->api->client_ctx);
    if (ssl == NULL)
        return NULL;
    if (cert_ssl_client_setup(ssl, u->target.host, s->api->verify_upstream, u->client_cert) != 0) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_SESSION **slot = &u->sessions[s->env.worker_id];
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
    if (s->api->def->ext.send_proxy_protocol) {
        struct bufferevent *bev = bufferevent_socket_new(s->env.base, -1, BEV_OPT_CLOSE_ON_FREE);
        if (bev == NULL)
            SSL_free(ssl);
        else
            s->up_ssl = ssl;
        return bev;
    }
    /* On failure the constructor has freed ssl (BEV_OPT_CLOSE_ON_FREE). */
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        s->env.base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    if (bev != NULL)
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

/* Out of descriptors: how long to wait before trying a connect again. */
#define FD_RETRY_MS 100

static void connect_next(struct gw_session *s)
{
    const struct api_ext *ext = &s->api->def->ext;
    s->state = ST_CONNECT;
    while (s->attempt < (unsigned)ext->max_connect_attempts) {
        if (s->addr == 0) {
            size_t n = gw_api_nups(s->api), i;
            if (s->attempt == 0)
                i = gw_pick_first(s->rr_turn, n, healthy, s);
            else if ((i = gw_pick_next(s->ups, n, healthy_not_failed, s)) == n)
                i = gw_pick_next(s->ups, n, healthy, s); /* all failed once: go round again */
            if (i == n) {
                if (wait_for_eligible(s))
                    return;
                if (gw_pick_first(s->rr_turn, n, healthy_only, s) != n) {
                    /* Healthy targets exist, but every one is full. */
                    GW_STAT_ADD(s->st, upstream_cx_overflow, 1);
                    s->error = "max_connections_per_target";
                    session_close(s, END_OVERFLOW);
                    return;
                }
                s->error = "no_healthy_target";
                break;
            }
            s->ups = i;
            release_target(s);
            if (!gw_limit_acquire(s->api->ups[i].active,
                                  s->api->def->ext.max_connections_per_target)) {
                /* Another worker took its last slot a moment ago. */
                GW_STAT_ADD(s->st, upstream_cx_overflow, 1);
                s->error = "max_connections_per_target";
                session_close(s, END_OVERFLOW);
                return;
            }
            s->held_target = (int)i;
        }
        s->attempt++;
        struct gw_upstream *u = &s->api->ups[s->ups];
        s->up = upstream_bev(s, u);
        if (s->up == NULL)
            break;
        bufferevent_setcb(s->up, on_read, on_write, on_event, s);
        bufferevent_set_max_single_write(s->up, GW_RELAY_HIGH_WATERMARK);
        if (!s->fd_waiting) /* a retry for a descriptor keeps its deadline */
            s->connect_deadline_ms = gw_now_ms() + ext->connect_timeout_ms;
        s->retry_at_ms = 0;
        stop_fd_wait(s);
        /* A refused connect is reported through on_event, like any other. */
        if (bufferevent_socket_connect(s->up, (const struct sockaddr *)&u->addr[s->addr],
                                       (int)u->addrlen[s->addr]) == 0) {
            arm_timer(s);
            return;
        }
        s->last_errno = errno;
        bufferevent_free(s->up);
        s->up = NULL;
        if (s->last_errno == EMFILE || s->last_errno == ENFILE || s->last_errno == ENOBUFS ||
            s->last_errno == ENOMEM) {
            /* Our shortage, not the target's fault: stop accepting for a while
             * and try again shortly, within the connect timeout. */
            s->attempt--;
            if (!s->fd_waiting && s->env.fd_wait != NULL)
                s->env.fd_wait(s->env.arg, +1, s->last_errno);
            s->fd_waiting = true;
            if (gw_now_ms() + FD_RETRY_MS < s->connect_deadline_ms) {
                s->retry_at_ms = gw_now_ms() + FD_RETRY_MS;
                arm_timer(s);
                return;
            }
            s->error = "out_of_descriptors";
            session_close(s, END_INTERNAL);
            return;
        }
        GW_STAT_ADD(s->st, connect_fail, 1);
        GW_STAT_ADD(&u->stats[s->env.worker_id], connect_fail, 1);
        gw_info("api_id=%s connect to %s failed at once: %s (attempt %u of %d)", api_id(s), u->name,
                strerror(s->last_errno), s->attempt, ext->max_connect_attempts);
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
    format_addr(&s->peer.sa, client, sizeof(client));
    if (s->error != NULL)
        gw_warn("api_id=%s client=%s no target may be picked: every one is down", api_id(s),
                client);
    else
        gw_warn("api_id=%s client=%s no target could be reached after %u attempts", api_id(s),
                client, s->attempt);
    session_close(s, END_CONNECT_FAILED);
}

/* The definition is known: count the connection and start connecting. */
static void routed(struct gw_session *s, struct gw_api *api)
{
    s->api = api;
    s->st = &api->stats[s->env.worker_id];
    GW_STAT_ADD(s->st, cx_total, 1);
    GW_STAT_ADD(s->st, cx_active, 1);
    if (!gw_limit_acquire(api->active, api->def->ext.max_connections)) {
        GW_STAT_ADD(s->st, cx_overflow, 1);
        s->error = "max_connections";
        session_close(s, END_OVERFLOW);
        return;
    }
    s->held_api = true;
    /* While connecting, client bytes wait in the input buffer, up to a bound. */
    bufferevent_setwatermark(s->cli, EV_READ, 0, GW_RELAY_HIGH_WATERMARK);
    s->rr_turn = gw_rr_next(&api->rr);
    connect_next(s);
}

/* ---- routing by a peeked ClientHello ---------------------------------------------- */

static void peek(struct gw_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->cli);
    size_t len = evbuffer_get_length(in);
    const uint8_t *data = evbuffer_pullup(in, (ev_ssize_t)len);
    struct gw_client_hello ch;
    char err[128];
    enum gw_ch_status st =
        gw_client_hello_parse(data, len, s->snap->client_hello_max, &ch, err, sizeof(err));
    if (st == GW_CH_NEED_MORE)
        return; /* the read watermark bounds what we hold */
    struct gw_api *api = NULL;
    if (st == GW_CH_OK) {
        keep_name(s, ch.has_sni ? ch.sni : "");
        api = gw_port_route_sni(s->port, ch.has_sni ? ch.sni : NULL);
        if (api == NULL) {
            GW_STAT_ADD(s->pst, sni_not_found, 1);
            session_close(s, END_NO_ROUTE);
            return;
        }
    } else if (st == GW_CH_NOT_TLS) {
        /* Not TLS: only a definition without a domain can take it. */
        api = gw_sni_lookup(s->port->sni, NULL);
        if (api == NULL) {
            GW_STAT_ADD(s->pst, not_tls, 1);
            s->error = "not_tls";
            session_close(s, END_NO_ROUTE);
            return;
        }
    } else {
        GW_STAT_ADD(s->pst, bad_client_hello, 1);
        gw_debug("port %d: bad ClientHello: %s", s->port->port, err);
        session_close(s, END_BAD_CLIENT_HELLO);
        return;
    }
    routed(s, api);
}

/* ---- timer -------------------------------------------------------------------------- */

/* A slow reader drains the kernel's send queue long before the socket is
 * writable again (the kernel waits for a third of the buffer to be free), so
 * no callback sees it. Whether the queues moved since the last look tells a
 * slow reader from a stalled one. */
static bool kernel_progress(struct gw_session *s)
{
    int64_t total = 0;
    struct bufferevent *sides[2] = {s->cli, s->up};
    for (int i = 0; i < 2; i++) {
        int q = 0;
        int fd = s->relay != NULL   ? gw_relay_fd(s->relay, (enum gw_relay_side)i)
                 : sides[i] != NULL ? bufferevent_getfd(sides[i])
                                    : -1;
        if (fd >= 0 && ioctl(fd, SIOCOUTQ, &q) == 0)
            total += q;
    }
    bool moved = total != s->kernel_queued;
    s->kernel_queued = total;
    return moved && total > 0;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_session *s = arg;
    int64_t now = gw_now_ms();
    if (s->drain_deadline_ms != 0 && now >= s->drain_deadline_ms) {
        session_close(s, END_DRAIN);
        return;
    }
    const struct api_ext *ext = s->api != NULL ? &s->api->def->ext : NULL;
    if (ext != NULL && ext->max_connection_duration_ms > 0 &&
        now >= s->started_ms + ext->max_connection_duration_ms) {
        session_close(s, END_MAX_DURATION);
        return;
    }
    if (s->state == ST_PROXY_HEADER && now >= s->route_deadline_ms) {
        proxy_rejected(s, &s->pst->prx_timeout, "proxy_header_timeout");
        return;
    }
    if (s->state == ST_PEEK || s->state == ST_HANDSHAKE || s->state == ST_PROXY_HEADER) {
        if (now >= s->route_deadline_ms) {
            GW_STAT_ADD(s->pst, tls_handshake_timeout, 1);
            session_close(s, END_HANDSHAKE_TIMEOUT);
        } else {
            arm_timer(s);
        }
        return;
    }
    if (s->state == ST_CONNECT) {
        if (s->up == NULL && s->retry_at_ms != 0 && now >= s->retry_at_ms)
            connect_next(s);
        else if (s->up != NULL && now >= s->connect_deadline_ms)
            connect_failed(s, true);
        else
            arm_timer(s);
        return;
    }
    if (s->failure != END_NONE && now >= s->flush_deadline_ms) {
        session_close(s, s->failure);
        return;
    }
    if (ext->idle_timeout_ms > 0 && now >= s->active_ms + ext->idle_timeout_ms) {
        if (!kernel_progress(s)) {
            session_close(s, END_IDLE_TIMEOUT);
            return;
        }
        s->active_ms = now;
    }
    arm_timer(s);
}

/* ---- public ------------------------------------------------------------------------ */

/* The client's TLS begins after its PROXY header: wrap the plain bufferevent,
 * whose input may already hold the first bytes of the ClientHello. */
static int wrap_tls(struct gw_session *s)
{
    SSL *ssl = SSL_new(s->port->front);
    if (ssl == NULL)
        return -1;
    evbuffer_remove_cb_entry(bufferevent_get_output(s->cli), s->cli_out_cb);
    s->cli_out_cb = NULL;
    bufferevent_setwatermark(s->cli, EV_READ, 0, 0);
    /* On failure the constructor frees ssl (BEV_OPT_CLOSE_ON_FREE); the plain
     * bufferevent stays ours. */
    struct bufferevent *tls = bufferevent_openssl_filter_new(
        s->env.base, s->cli, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (tls == NULL)
        return -1;
    s->cli = tls;
    bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
    bufferevent_setcb(tls, on_read, on_write, on_event, s);
    bufferevent_set_max_single_write(tls, GW_RELAY_HIGH_WATERMARK);
    s->cli_out_cb = evbuffer_add_cb(bufferevent_get_output(tls), on_output_drained, s);
    return 0;
}

/* The port's route is chosen now: at once, by a peeked ClientHello, or by the
 * SNI in a TLS handshake. */
static void begin_routing(struct gw_session *s)
{
    /* The client's address is known now, from the PROXY header if any. */
    if (s->snap->max_per_source > 0 && s->snap->sources != NULL) {
        if (!gw_sources_acquire(s->snap->sources, &s->peer.sa, s->snap->max_per_source)) {
            GW_STAT_ADD(s->pst, source_overflow, 1);
            s->error = "max_connections_per_source";
            session_close(s, END_OVERFLOW);
            return;
        }
        s->held_source = true;
    }
    switch (s->port->mode) {
    case GW_ROUTE_SINGLE:
        /* Nothing is read from the client until the upstream is connected:
         * its first bytes wait in the kernel, at no cost here. */
        routed(s, s->port->route);
        return;
    case GW_ROUTE_PEEK:
        s->state = ST_PEEK;
        /* Hold no more than a ClientHello may span. */
        bufferevent_setwatermark(s->cli, EV_READ, 0, s->snap->client_hello_max);
        break;
    case GW_ROUTE_TLS:
        if (bev_ssl(s->cli) == NULL && wrap_tls(s) != 0) {
            session_close(s, END_INTERNAL);
            return;
        }
        s->state = ST_HANDSHAKE;
        break;
    }
    s->route_deadline_ms = gw_now_ms() + s->snap->handshake_timeout_ms;
    bufferevent_enable(s->cli, EV_READ);
    arm_timer(s);
    if (s->state == ST_PEEK && evbuffer_get_length(bufferevent_get_input(s->cli)) > 0)
        peek(s); /* bytes that came with the PROXY header */
}

/* ---- the inbound PROXY header ------------------------------------------------------ */

static bool trusted_source(const struct gw_port *p, const struct sockaddr *peer)
{
    if (p->ntrusted == 0)
        return true;
    for (size_t i = 0; i < p->ntrusted; i++)
        if (api_cidr_contains(&p->trusted[i], peer))
            return true;
    return false;
}

static void proxy_rejected(struct gw_session *s, int64_t *counter, const char *why)
{
    /* This worker is the counter's only writer (see GW_STAT_ADD). */
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    s->error = why;
    session_close(s, END_PROXY_REJECTED);
}

static void proxy_header(struct gw_session *s)
{
    struct evbuffer *in = bufferevent_get_input(s->cli);
    size_t len = evbuffer_get_length(in);
    const uint8_t *data = evbuffer_pullup(in, (ev_ssize_t)len);
    struct gw_pp_info info;
    char err[128];
    enum gw_pp_status st = gw_pp_parse(data, len, &info, err, sizeof(err));
    if (st == GW_PP_NEED_MORE && len >= s->snap->proxy_header_max) {
        snprintf(err, sizeof(err), "longer than proxy_header_max (%zu bytes)",
                 s->snap->proxy_header_max);
        st = GW_PP_BAD;
    }
    if (st == GW_PP_NEED_MORE)
        return;
    if (st == GW_PP_NOT_PROXY && s->port->proxy_optional) {
        begin_routing(s); /* no header: the bytes are the client's */
        return;
    }
    if (st != GW_PP_OK) {
        gw_debug("port %d: PROXY header rejected: %s", s->port->port, err);
        if (st == GW_PP_NOT_PROXY)
            proxy_rejected(s, &s->pst->prx_not_hdr, "no_proxy_header");
        else
            proxy_rejected(s, &s->pst->prx_bad_hdr, "bad_proxy_header");
        return;
    }
    GW_STAT_ADD(s->pst, prx_accepted, 1);
    if (info.has_addr) {
        /* The header's addresses are the client's, everywhere from now on. */
        memcpy(&s->peer, &info.src, sizeof(s->peer));
        memcpy(&s->orig_dst, &info.dst, sizeof(s->orig_dst));
        s->has_orig_dst = true;
    }
    evbuffer_drain(in, info.length);
    begin_routing(s);
}

void gw_session_accept(const struct gw_session_env *env, struct gw_snapshot *snap,
                       struct gw_port *port, evutil_socket_t fd, const struct sockaddr *peer,
                       int peerlen)
{
    struct gw_session *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        evutil_closesocket(fd);
        return;
    }
    s->env = *env;
    s->snap = gw_snapshot_ref(snap);
    s->port = port;
    s->pst = &port->stats[env->worker_id];
    s->started_ms = s->active_ms = gw_now_ms();
    s->first_eof = -1;
    s->held_target = -1;
    if (peerlen > 0 && (size_t)peerlen <= sizeof(s->peer)) {
        memcpy(&s->peer, peer, (size_t)peerlen);
        s->peerlen = (socklen_t)peerlen;
    }
    list_add(env->list, s);
    set_nodelay(fd);
    s->timer = evtimer_new(env->base, on_timer, s);
    if (port->mode == GW_ROUTE_TLS && !port->proxy_in) {
        SSL *ssl = SSL_new(port->front);
        /* On failure the constructor has freed ssl (BEV_OPT_CLOSE_ON_FREE);
         * whether it closed fd is not said, so fd is left alone. */
        s->cli = ssl == NULL
                     ? NULL
                     : bufferevent_openssl_socket_new(env->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                      BEV_OPT_CLOSE_ON_FREE);
        if (ssl == NULL)
            evutil_closesocket(fd);
        if (s->cli != NULL)
            bufferevent_openssl_set_allow_dirty_shutdown(s->cli, 1);
    } else {
        s->cli = bufferevent_socket_new(env->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (s->cli == NULL)
            evutil_closesocket(fd);
    }
    if (s->cli == NULL || s->timer == NULL) {
        session_close(s, END_INTERNAL);
        return;
    }
    bufferevent_setcb(s->cli, on_read, on_write, on_event, s);
    bufferevent_set_max_single_write(s->cli, GW_RELAY_HIGH_WATERMARK);
    s->cli_out_cb = evbuffer_add_cb(bufferevent_get_output(s->cli), on_output_drained, s);
    /* Over the gateway-wide maximum the client is closed at once (as
     * Envoy's overload manager does) rather than left waiting. */
    if (!gw_limit_acquire(snap->active_total, snap->max_connections)) {
        GW_STAT_ADD(s->pst, cx_overflow, 1);
        s->error = "max_connections_gateway";
        session_close(s, END_OVERFLOW);
        return;
    }
    s->held_total = true;
    if (!port->proxy_in) {
        begin_routing(s);
        return;
    }
    /* The PROXY header comes first, before TLS and before any routing. */
    if (!trusted_source(port, peer)) {
        proxy_rejected(s, &s->pst->prx_untrusted, "untrusted_proxy_source");
        return;
    }
    s->state = ST_PROXY_HEADER;
    bufferevent_setwatermark(s->cli, EV_READ, 0, s->snap->proxy_header_max);
    s->route_deadline_ms = s->started_ms + port->proxy_timeout_ms;
    bufferevent_enable(s->cli, EV_READ);
    arm_timer(s);
}

/* Every session (port 0), or those accepted on one port, gets until now + its
 * drain timeout (the definition's own, capped by max_ms) to finish. */
static void drain(struct gw_session_list *list, int port, int64_t max_ms)
{
    int64_t now = gw_now_ms();
    struct gw_session *s = list->head;
    while (s != NULL) {
        struct gw_session *next = s->next;
        if (port != 0 && s->port->port != port) {
            s = next;
            continue;
        }
        int64_t ms = max_ms;
        if (s->api != NULL && s->api->def->ext.drain_timeout_ms >= 0 &&
            s->api->def->ext.drain_timeout_ms < ms)
            ms = s->api->def->ext.drain_timeout_ms;
        if (ms <= 0) {
            session_close(s, END_DRAIN);
        } else {
            s->drain_deadline_ms = now + ms;
            arm_timer(s);
        }
        s = next;
    }
}

void gw_session_list_drain(struct gw_session_list *list, int64_t max_ms)
{
    drain(list, 0, max_ms);
}

void gw_session_list_drain_port(struct gw_session_list *list, int port, int64_t max_ms)
{
    drain(list, port, max_ms);
}

void gw_session_list_close_down(struct gw_session_list *list)
{
    struct gw_session *s = list->head;
    while (s != NULL) {
        struct gw_session *next = s->next;
        if (s->state == ST_RELAY && s->api->close_on_down &&
            gw_upstream_marked_down(s->api, s->ups)) {
            s->error = "marked_down";
            session_close(s, END_UPSTREAM_DOWN);
        }
        s = next;
    }
}
