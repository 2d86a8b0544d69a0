/* The session's core: the live list, accepting, the one transition function
 * and the deadlines, the events' dispatch to the phase, and the end. What
 * each phase does is in its own file (the table is in gw_session.h). */
#include "gw_session.h"

#include <stdlib.h>
#include <string.h>

#include "gw_limits.h"
#include "gw_log.h"
#include "gw_session_int.h"

const char *const gw_end_names[] = {
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

/* ---- helpers the phases share ------------------------------------------------- */

const char *session_api_id(const struct gw_session *s)
{
    return s->api != NULL ? s->api->def->api_id : "-";
}

/* A client chooses these bytes: anything that is not a host-name character
 * becomes '_', so it cannot forge fields in the log. */
void session_keep_name(struct gw_session *s, const char *name)
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

void session_stop_fd_wait(struct gw_session *s)
{
    if (s->fd_waiting && s->env->fd_wait != NULL)
        s->env->fd_wait(s->env->arg, -1, 0);
    s->fd_waiting = false;
}

/* ---- deadlines -------------------------------------------------------------------- */

static int64_t earliest(int64_t a, int64_t b)
{
    if (a == 0)
        return b;
    if (b == 0)
        return a;
    return a < b ? a : b;
}

/* The session's limits: the drain timeout, and its maximum duration. */
static int64_t limits_ms(const struct gw_session *s)
{
    int64_t max = s->api != NULL ? s->api->def->ext.max_connection_duration_ms : 0;
    return earliest(s->stop_ms, max > 0 ? s->started_ms + max : 0);
}

static void arm(struct gw_session *s)
{
    int64_t at = earliest(s->deadline_ms, limits_ms(s));
    if (at == 0)
        gw_timer_cancel(&s->env->timers, &s->timer);
    else if (!gw_timer_armed(&s->timer) || s->timer.at_ms != at)
        gw_timer_set(&s->env->timers, &s->timer, at);
}

void session_deadline(struct gw_session *s, int64_t deadline_ms)
{
    s->deadline_ms = deadline_ms;
    arm(s);
}

void session_enter(struct gw_session *s, const struct gw_phase *phase, int64_t deadline_ms)
{
    s->phase = phase;
    session_deadline(s, deadline_ms);
}

static void on_timer(struct gw_timer_entry *e)
{
    struct gw_session *s = (struct gw_session *)((char *)e - offsetof(struct gw_session, timer));
    int64_t now = gw_now_ms();
    if (s->stop_ms != 0 && now >= s->stop_ms) {
        session_end(s, END_DRAIN);
        return;
    }
    int64_t max = s->api != NULL ? s->api->def->ext.max_connection_duration_ms : 0;
    if (max > 0 && now >= s->started_ms + max) {
        session_end(s, END_MAX_DURATION);
        return;
    }
    if (s->deadline_ms != 0 && now >= s->deadline_ms) {
        s->phase->on_deadline(s);
        return;
    }
    arm(s);
}

/* ---- events ------------------------------------------------------------------------- */

static void on_io(struct gw_session *s, enum gw_relay_side side, short what)
{
    if (what & (EV_READ | EV_CLOSED))
        s->side[side].readable = true;
    if (what & EV_CLOSED)
        s->side[side].closed = true;
    s->phase->on_io(s, side, what);
}

static void on_client_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    on_io(arg, GW_RELAY_CLIENT, what);
}

static void on_upstream_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    on_io(arg, GW_RELAY_UPSTREAM, what);
}

int session_watch(struct gw_session *s, enum gw_relay_side side)
{
    struct gw_side *sd = &s->side[side];
    event_callback_fn cb = side == GW_RELAY_CLIENT ? on_client_io : on_upstream_io;
    if (event_assign(&sd->ev, s->env->base, sd->io.fd,
                     EV_READ | EV_WRITE | EV_CLOSED | EV_ET | EV_PERSIST, cb, s) != 0 ||
        event_add(&sd->ev, NULL) != 0)
        return -1;
    sd->ev_added = true;
    return 0;
}

bool session_side_failed(struct gw_session *s, enum gw_relay_side side, short what)
{
    /* A reset is reported as readable and writable at once (EPOLLERR). */
    bool maybe = (what & EV_CLOSED) || (what & (EV_READ | EV_WRITE)) == (EV_READ | EV_WRITE);
    return maybe && cert_io_take_error(&s->side[side].io) != 0;
}

static void unwatch(struct gw_side *sd)
{
    if (sd->ev_added)
        event_del(&sd->ev);
    sd->ev_added = false;
    sd->readable = sd->closed = false;
}

void session_drop_upstream(struct gw_session *s)
{
    struct gw_side *up = &s->side[GW_RELAY_UPSTREAM];
    unwatch(up);
    cert_io_close(&up->io, false);
    cert_dial_clear(&s->dial);
}

/* ---- the end -------------------------------------------------------------------------- */

static void release_limits(struct gw_session *s)
{
    if (s->held_target >= 0)
        gw_limit_release(s->api->ups[s->held_target].active);
    s->held_target = -1;
    if (s->held_api)
        gw_limit_release(s->api->active);
    if (s->held_source)
        gw_sources_release(s->snap->sources, &s->peer.sa);
    if (s->held_total)
        gw_limit_release(s->snap->active_total);
    s->held_api = s->held_source = s->held_total = false;
}

static void count_end(struct gw_session *s, enum gw_end why)
{
    if (why == END_NO_ROUTE)
        GW_STAT_ADD(s->pst, no_route, 1);
    if (s->st == NULL)
        return;
    GW_STAT_ADD(s->st, cx_active, -1);
    GW_STAT_ADD(s->st, rx_buffered, -s->rx_buffered);
    GW_STAT_ADD(s->st, tx_buffered, -s->tx_buffered);
    if (s->flushing_up)
        GW_STAT_ADD(s->st, upstream_flush_active, -1);
    if (s->target_counted)
        GW_STAT_ADD(s->tst, cx_active, -1);
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

/* How a relaying session's sides close (the rule is gw_relay_end's). */
static enum gw_relay_end relay_end_how(const struct gw_session *s, enum gw_end why)
{
    if (why == END_CLOSED)
        return GW_RELAY_CLEAN;
    if (s->relay.broken)
        return GW_RELAY_RESET;
    if (s->delivered)
        return GW_RELAY_DELIVERED;
    return GW_RELAY_STOP;
}

void session_end(struct gw_session *s, enum gw_end why)
{
    struct gw_session_env *env = s->env;
    session_stop_fd_wait(s);
    if (s->relaying && s->relay.first_eof >= 0)
        s->first_eof = s->relay.first_eof;
    session_log_end(s, why);
    count_end(s, why);
    release_limits(s);
    gw_timer_cancel(&env->timers, &s->timer);
    unwatch(&s->side[GW_RELAY_CLIENT]);
    unwatch(&s->side[GW_RELAY_UPSTREAM]);
    if (s->relaying) {
        gw_relay_end(&s->relay, relay_end_how(s, why));
    } else {
        cert_io_close(&s->side[GW_RELAY_CLIENT].io, false);
        cert_io_close(&s->side[GW_RELAY_UPSTREAM].io, false);
    }
    cert_dial_clear(&s->dial);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        env->head = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    env->count--;
    gw_snapshot_unref(s->snap);
    free(s->sni);
    free(s->alpn);
    free(s);
    if (env->count == 0 && env->on_empty != NULL)
        env->on_empty(env->arg);
}

/* ---- accepting ------------------------------------------------------------------------- */

void gw_session_accept(struct gw_session_env *env, struct gw_snapshot *snap, struct gw_port *port,
                       evutil_socket_t fd, const struct sockaddr *peer, int peerlen)
{
    struct gw_session *s = calloc(1, sizeof(*s));
    if (s == NULL || gw_timers_reserve(&env->timers, env->count + 1) != 0) {
        free(s);
        evutil_closesocket(fd);
        return;
    }
    s->env = env;
    s->snap = gw_snapshot_ref(snap);
    s->port = port;
    s->pst = &port->stats[env->worker_id];
    s->started_ms = s->active_ms = gw_now_ms();
    s->first_eof = -1;
    s->held_target = -1;
    cert_io_init(&s->side[GW_RELAY_CLIENT].io, fd);
    cert_io_init(&s->side[GW_RELAY_UPSTREAM].io, -1);
    if (peerlen > 0 && (size_t)peerlen <= sizeof(s->peer)) {
        memcpy(&s->peer, peer, (size_t)peerlen);
        s->peerlen = (socklen_t)peerlen;
    }
    s->next = env->head;
    if (env->head != NULL)
        env->head->prev = s;
    env->head = s;
    env->count++;
    if (session_watch(s, GW_RELAY_CLIENT) != 0) {
        session_end(s, END_INTERNAL);
        return;
    }
    /* Over the gateway-wide maximum the client is closed at once (as
     * Envoy's overload manager does) rather than left waiting. */
    if (!gw_limit_acquire(snap->active_total, snap->max_connections)) {
        GW_STAT_ADD(s->pst, cx_overflow, 1);
        s->error = "max_connections_gateway";
        session_end(s, END_OVERFLOW);
        return;
    }
    s->held_total = true;
    if (port->proxy_in)
        phase_proxy_begin(s);
    else
        phase_route_begin(s);
}

/* ---- the worker's calls ----------------------------------------------------------------- */

int gw_session_env_init(struct gw_session_env *env, struct event_base *base, int worker_id)
{
    memset(env, 0, sizeof(*env));
    env->base = base;
    env->worker_id = worker_id;
    return gw_timers_init(&env->timers, base, on_timer);
}

/* Every session (port 0), or those accepted on one port, gets until now + its
 * drain timeout (the definition's own, capped by max_ms) to finish. */
static void drain(struct gw_session_env *env, int port, int64_t max_ms)
{
    int64_t now = gw_now_ms();
    struct gw_session *s = env->head;
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
            session_end(s, END_DRAIN);
        } else {
            s->stop_ms = now + ms;
            arm(s);
        }
        s = next;
    }
}

void gw_session_env_clear(struct gw_session_env *env)
{
    drain(env, 0, 0);
    gw_timers_clear(&env->timers);
}

void gw_session_drain_all(struct gw_session_env *env, int64_t max_ms)
{
    drain(env, 0, max_ms);
}

void gw_session_drain_port(struct gw_session_env *env, int port, int64_t max_ms)
{
    drain(env, port, max_ms);
}

void gw_session_close_down(struct gw_session_env *env)
{
    struct gw_session *s = env->head;
    while (s != NULL) {
        struct gw_session *next = s->next;
        if (s->phase == &gw_phase_relay && s->api->close_on_down &&
            gw_upstream_marked_down(s->api, s->ups)) {
            s->error = "marked_down";
            session_end(s, END_UPSTREAM_DOWN);
        }
        s = next;
    }
}
