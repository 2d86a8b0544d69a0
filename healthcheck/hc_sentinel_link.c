/* The links to the sentinels: per sentinel, a command link that asks the
 * round's queries and a link subscribed to the failover events; resolving,
 * reconnecting with back-off, and each failure counted and logged once. */
#include "hc_sentinel.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gw_clock.h"
#include "gw_log.h"
#include "hc_internal.h"
#include "hc_sentinel_int.h"

static void link_down(struct link *l, enum hc_sentinel_failure reason, const char *why);
static void sub_connect(struct link *l);

/* How both links of a sentinel connect. */
static struct hc_redis *link_open(struct link *l, const char *client_name,
                                  void (*on_message)(void *, const redisReply *),
                                  void (*on_close)(void *, enum hc_redis_close, const char *))
{
    struct hc_redis_opts o = {
        .timeout_ms = l->w->cfg.timeout_ms,
        .username = l->w->cfg.username,
        .password = l->w->cfg.password,
        .client_name = client_name,
        .on_message = on_message,
        .on_close = on_close,
        .arg = l,
    };
    return hc_redis_connect(hc_engine_base(l->w->e), (struct sockaddr *)&l->addr, l->addrlen, &o);
}

static void link_answered(struct link *l)
{
    if (--l->pending > 0)
        return;
    if (!l->failed && !l->up) {
        if (l->problem[0] != '\0')
            gw_info("sentinel: api_id=%s %s: sentinel %s answers again", l->w->api_id,
                    l->w->cfg.master_name, l->name);
        l->problem[0] = '\0';
    }
    l->up = !l->failed;
    if (!l->failed) {
        l->backoff_ms = BACKOFF_MIN_MS;
        /* Once the command link works (its liveness is the events' too), and
         * not before a failed subscription's back-off. */
        if (!evtimer_pending(l->sub_retry, NULL))
            sub_connect(l);
    }
    sn_round_check(l->w);
}

/* A failure of a sentinel: counted each time, logged once until it answers
 * again (the status shows the latest). */
static void link_problem(struct link *l, enum hc_sentinel_failure reason, const char *why)
{
    l->failures[reason]++;
    if (l->problem[0] == '\0')
        gw_warn("sentinel: api_id=%s %s: sentinel %s: %s", l->w->api_id, l->w->cfg.master_name,
                l->name, why);
    snprintf(l->problem, sizeof(l->problem), "%s", why);
}

/* A reply of a round that is an error or malformed: counted, and this
 * sentinel's answer is left out of the round. */
static bool reply_failed(struct link *l, const redisReply *r, int rc, const char *err)
{
    if (r == NULL) {
        l->failed = true; /* the link closed: on_cmd_close says why */
        return true;
    }
    if (rc >= 0)
        return false;
    link_problem(l, r->type == REDIS_REPLY_ERROR ? HC_SF_error : HC_SF_protocol, err);
    l->failed = true;
    return true;
}

static void on_addr(void *arg, const redisReply *r, const char *why)
{
    (void)why;
    struct link *l = arg;
    char err[200] = "";
    int rc = r != NULL ? hc_sn_parse_master_addr(r, &l->ans.master, err, sizeof(err)) : -1;
    if (!reply_failed(l, r, rc, err))
        l->ans.known = rc == 1;
    link_answered(l);
}

static void on_master(void *arg, const redisReply *r, const char *why)
{
    (void)why;
    struct link *l = arg;
    char err[200] = "";
    struct hc_sn_master m;
    int rc = r != NULL ? hc_sn_parse_master(r, &m, err, sizeof(err)) : -1;
    /* A sentinel that does not know the master answers this with an error. */
    if (r != NULL && rc < 0 && !l->ans.known && !l->failed) {
        link_answered(l);
        return;
    }
    if (!reply_failed(l, r, rc, err)) {
        l->ans.epoch = m.config_epoch;
        l->ans.failover = m.failover;
        /* The flags describe the configured master, which a sentinel that
         * promoted a replica no longer names. */
        l->ans.flags =
            hc_sn_addr_equal(&m.addr, &l->ans.master) ? m.flags : (m.flags & HC_SN_F_FAILOVER);
    }
    link_answered(l);
}

static void on_replicas(void *arg, const redisReply *r, const char *why)
{
    (void)why;
    struct link *l = arg;
    char err[200] = "";
    int rc = r != NULL ? hc_sn_parse_replicas(r, l->ans.replicas, HC_SN_REPLICAS_MAX,
                                              &l->ans.nreplicas, err, sizeof(err))
                       : -1;
    if (r != NULL && rc < 0 && !l->ans.known && !l->failed) {
        link_answered(l);
        return;
    }
    reply_failed(l, r, rc, err);
    link_answered(l);
}

bool sn_link_ask(struct link *l)
{
    const char *name = l->w->cfg.master_name;
    const char *a1[] = {"SENTINEL", "get-master-addr-by-name", name};
    const char *a2[] = {"SENTINEL", "master", name};
    const char *a3[] = {"SENTINEL", "replicas", name};
    memset(&l->ans, 0, sizeof(l->ans));
    l->failed = false;
    l->pending = 3;
    l->asked = true;
    if (hc_redis_command(l->cmd, 3, a1, 1, on_addr, l) != 0 ||
        hc_redis_command(l->cmd, 3, a2, 1, on_master, l) != 0 ||
        hc_redis_command(l->cmd, 3, a3, 1, on_replicas, l) != 0) {
        link_down(l, HC_SF_closed, "cannot send to it");
        return false;
    }
    return true;
}

static enum hc_sentinel_failure failure_of(enum hc_redis_close kind)
{
    switch (kind) {
    case HC_REDIS_CONNECT:
        return HC_SF_connect;
    case HC_REDIS_TIMEOUT:
        return HC_SF_timeout;
    case HC_REDIS_AUTH:
        return HC_SF_auth;
    case HC_REDIS_PROTOCOL:
        return HC_SF_protocol;
    case HC_REDIS_CLOSED:
        break;
    }
    return HC_SF_closed;
}

/* The command link failed: both links close, the failure is counted and
 * logged once, and a reconnect follows after the back-off. */
static void link_down(struct link *l, enum hc_sentinel_failure reason, const char *why)
{
    link_problem(l, reason, why);
    l->up = false;
    l->subscribed = false;
    hc_redis_free(l->cmd);
    hc_redis_free(l->sub);
    l->cmd = l->sub = NULL;
    evtimer_del(l->sub_retry);
    if (l->asked && l->pending > 0) {
        l->pending = 0;
        l->failed = true;
    }
    /* A refused AUTH will not pass by itself: wait the longest at once. */
    if (reason == HC_SF_auth)
        l->backoff_ms = BACKOFF_MAX_MS;
    arm_ms(l->retry, jitter(l->backoff_ms));
    l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
    sn_round_check(l->w);
}

static void on_cmd_close(void *arg, enum hc_redis_close kind, const char *why)
{
    struct link *l = arg;
    link_down(l, failure_of(kind), why);
}

static void on_message(void *arg, const redisReply *msg)
{
    struct link *l = arg;
    struct hc_sentinel *w = l->w;
    struct hc_sn_event ev;
    char err[200];
    int rc = hc_sn_parse_message(msg, &ev, err, sizeof(err));
    if (rc == 0)
        return;
    if (rc < 0) {
        link_problem(l, HC_SF_protocol, err);
        return;
    }
    if (ev.kind == HC_SN_EV_TILT || ev.kind == HC_SN_EV_TILT_CLEARED) {
        w->events[ev.kind]++;
        l->tilt = ev.kind == HC_SN_EV_TILT;
        gw_info("sentinel: api_id=%s %s: sentinel %s %s TILT mode", w->api_id, w->cfg.master_name,
                l->name, l->tilt ? "entered" : "left");
        sn_round_start(w);
        return;
    }
    if (strcmp(ev.master, w->cfg.master_name) == 0)
        sn_event(w, l, &ev);
}

static void on_sub_close(void *arg, enum hc_redis_close kind, const char *why)
{
    (void)kind;
    struct link *l = arg;
    hc_redis_free(l->sub);
    l->sub = NULL;
    if (l->subscribed)
        gw_info("sentinel: api_id=%s %s: events from sentinel %s stopped (%s); polling until "
                "they resume",
                l->w->api_id, l->w->cfg.master_name, l->name, why);
    l->subscribed = false;
    if (l->cmd != NULL) {
        arm_ms(l->sub_retry, jitter(l->sub_backoff_ms));
        l->sub_backoff_ms =
            l->sub_backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->sub_backoff_ms * 2;
    }
}

static void on_subscribed(void *arg, const redisReply *r, const char *why)
{
    (void)why;
    struct link *l = arg;
    if (r == NULL)
        return; /* the link closed: on_sub_close follows */
    if (r->type == REDIS_REPLY_ERROR) {
        if (!l->sub_refused)
            gw_warn("sentinel: api_id=%s %s: sentinel %s refuses SUBSCRIBE (%.*s); it is polled "
                    "every %lld ms instead",
                    l->w->api_id, l->w->cfg.master_name, l->name, r->len > 120 ? 120 : (int)r->len,
                    r->str, (long long)l->w->cfg.poll_interval_ms);
        l->sub_refused = true;
        hc_redis_free(l->sub);
        l->sub = NULL;
        return;
    }
    l->subscribed = true;
    l->sub_backoff_ms = BACKOFF_MIN_MS;
    sn_round_start(l->w); /* events may have been missed meanwhile */
}

static void sub_connect(struct link *l)
{
    if (l->sub != NULL || l->sub_refused || l->cmd == NULL)
        return;
    const char *argv[HC_SN_EV_OTHER + 1];
    argv[0] = "SUBSCRIBE";
    for (int k = 0; k < HC_SN_EV_OTHER; k++)
        argv[k + 1] = hc_sn_event_name((enum hc_sn_event_kind)k);
    l->sub = link_open(l, "tcpgate-events", on_message, on_sub_close);
    if (l->sub == NULL ||
        hc_redis_command(l->sub, HC_SN_EV_OTHER + 1, argv, HC_SN_EV_OTHER, on_subscribed, l) != 0) {
        hc_redis_free(l->sub);
        l->sub = NULL;
        arm_ms(l->sub_retry, jitter(l->sub_backoff_ms));
    }
}

static void on_sub_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sub_connect(arg);
}

static void on_resolved(void *arg, const struct sockaddr *sa, socklen_t len, const char *why)
{
    struct link *l = arg;
    struct hc_sentinel *w = l->w;
    char msg[320];
    l->dns = NULL;
    if (sa == NULL || len > sizeof(l->addr)) {
        snprintf(msg, sizeof(msg), "cannot resolve %s: %s", l->target->host,
                 why != NULL ? why : "no address");
        link_down(l, HC_SF_connect, msg);
        return;
    }
    memcpy(&l->addr, sa, len);
    l->addrlen = len;
    l->cmd = link_open(l, "tcpgate", NULL, on_cmd_close);
    if (l->cmd == NULL) {
        snprintf(msg, sizeof(msg), "cannot open a connection: %s", strerror(errno));
        link_down(l, HC_SF_connect, msg);
        return;
    }
    l->sub_refused = false;
    l->sub_backoff_ms = BACKOFF_MIN_MS;
    /* A round under way goes without it; the next includes it. A reconnect
     * asks at once (a new watcher asks once all its links are started). */
    if (w->started && !w->round_active)
        sn_round_start(w);
}

void sn_link_start(struct link *l)
{
    if (l->cmd != NULL || l->dns != NULL)
        return;
    struct sockaddr_storage sa;
    socklen_t len;
    if (hc_dns_literal(l->target->host, l->target->port, &sa, &len) == 0) {
        on_resolved(l, (struct sockaddr *)&sa, len, NULL);
        return;
    }
    l->dns =
        hc_dns_resolve(hc_engine_dns(l->w->e), l->target->host, l->target->port, on_resolved, l);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sn_link_start(arg);
}

void hc_sentinel_link(const struct hc_sentinel *w, size_t i, struct hc_sentinel_link_status *out)
{
    const struct link *l = &w->links[i];
    memset(out, 0, sizeof(*out));
    out->name = l->name;
    out->up = l->up;
    out->subscribed = l->subscribed;
    out->problem = l->problem;
    memcpy(out->failures, l->failures, sizeof(out->failures));
}

int sn_link_init(struct link *l, struct hc_sentinel *w, const struct api_target *target)
{
    l->w = w;
    l->target = target;
    api_target_hostport(target, l->name, sizeof(l->name));
    l->backoff_ms = l->sub_backoff_ms = BACKOFF_MIN_MS;
    l->retry = evtimer_new(hc_engine_base(w->e), on_retry, l);
    l->sub_retry = evtimer_new(hc_engine_base(w->e), on_sub_retry, l);
    return l->retry != NULL && l->sub_retry != NULL ? 0 : -1;
}

void sn_link_stop(struct link *l)
{
    hc_dns_cancel(l->dns);
    hc_redis_free(l->cmd);
    hc_redis_free(l->sub);
    if (l->retry != NULL)
        event_free(l->retry);
    if (l->sub_retry != NULL)
        event_free(l->sub_retry);
    memset(l, 0, sizeof(*l));
}
