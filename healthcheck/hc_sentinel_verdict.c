/* The verdict of a round and the switch it may bring: which node is the
 * master (verified with ROLE before it gets clients), the hold of the old
 * master while a failover is under way, the replicas, and the events that
 * show a failover before the answers do. */
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

/* ---- problems ---------------------------------------------------------------------- */

/* A problem of the watcher as a whole, logged when it changes. NULL: none
 * (a recovery is logged when there was one). */
static void watcher_problem(struct hc_sentinel *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void watcher_problem(struct hc_sentinel *w, const char *fmt, ...)
{
    char msg[sizeof(w->problem)] = "";
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
    }
    if (strcmp(msg, w->problem) == 0)
        return;
    if (msg[0] != '\0')
        gw_warn("sentinel: api_id=%s %s: %s", w->api_id, w->cfg.master_name, msg);
    else
        gw_info("sentinel: api_id=%s %s: over: %s", w->api_id, w->cfg.master_name, w->problem);
    snprintf(w->problem, sizeof(w->problem), "%s", msg);
}

static void node_problem(struct hc_sentinel_node *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void node_problem(struct hc_sentinel_node *n, const char *fmt, ...)
{
    char msg[sizeof(n->problem)] = "";
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
    }
    if (strcmp(msg, n->problem) == 0)
        return;
    if (msg[0] != '\0')
        gw_warn("sentinel: api_id=%s %s: node %s: %s", n->w->api_id, n->w->cfg.master_name, n->name,
                msg);
    snprintf(n->problem, sizeof(n->problem), "%s", msg);
}

/* ---- nodes --------------------------------------------------------------------------- */

static bool node_has(const struct hc_sentinel_node *n, const struct sockaddr *sa)
{
    for (int i = 0; i < n->naddrs; i++)
        if (hc_dns_same_addr((const struct sockaddr *)&n->addrs[i], sa))
            return true;
    return false;
}

/* An address the sentinels name that is not used: counted and logged once
 * per address (of the last REFUSED_KEPT). */
static void refuse(struct hc_sentinel *w, enum hc_sentinel_refusal why, const struct hc_sn_addr *a)
{
    static const char *const reasons[] = {
#define HC_SR_TEXT(name, desc) desc,
        HC_SENTINEL_REFUSALS(HC_SR_TEXT)
#undef HC_SR_TEXT
    };
    for (size_t i = 0; i < REFUSED_KEPT; i++)
        if (hc_sn_addr_equal(&w->refused_addrs[i], a))
            return;
    w->refused_addrs[w->nrefused++ % REFUSED_KEPT] = *a;
    w->refused[why]++;
    char name[HC_SN_HOST_MAX + 16];
    hc_sn_addr_format(a, name, sizeof(name));
    gw_warn("sentinel: api_id=%s %s: refused %s, which the sentinels name: %s", w->api_id,
            w->cfg.master_name, name, reasons[why]);
}

/* The node the sentinels mean by address sa (named a), added when the watcher
 * has no allow-list and does not know it yet. NULL when it is refused. */
static struct hc_sentinel_node *node_for(struct hc_sentinel *w, const struct hc_sn_addr *a,
                                         const struct sockaddr *sa, socklen_t len, bool *added)
{
    for (size_t i = 0; i < w->nnodes; i++) {
        struct hc_sentinel_node *n = &w->nodes[i];
        if (node_has(n, sa)) {
            memcpy(&n->seen, sa, len);
            n->seenlen = len;
            n->named_as = *a;
            return n;
        }
    }
    if (w->allow_list) {
        refuse(w, HC_SR_unlisted, a);
        return NULL;
    }
    if (w->nnodes == HC_SENTINEL_MAX_NODES) {
        refuse(w, HC_SR_capacity, a);
        if (!w->stale) {
            w->stale = true;
            gw_error("sentinel: api_id=%s %s: %d distinct nodes named since it started; a "
                     "reload starts the watcher afresh",
                     w->api_id, w->cfg.master_name, HC_SENTINEL_MAX_NODES);
            hc_engine_ask_reload(w->e);
        }
        return NULL;
    }
    struct hc_sentinel_node *n = &w->nodes[w->nnodes];
    memset(n, 0, sizeof(*n));
    n->w = w;
    n->index = (int)w->nnodes;
    hc_sn_addr_format(a, n->name, sizeof(n->name));
    memcpy(&n->addrs[0], sa, len);
    n->addrlens[0] = len;
    n->naddrs = 1;
    memcpy(&n->seen, sa, len);
    n->seenlen = len;
    n->named_as = *a;
    __atomic_store_n(&w->nnodes, w->nnodes + 1, __ATOMIC_RELEASE);
    *added = true;
    return n;
}

/* A named address as a socket address: a literal at once, a name from the
 * cache (looked up again in the background when old). Returns 0, 1 while the
 * name is being looked up (a round follows the answer), -1 when it does not
 * resolve. */
static void on_name(void *arg, const struct sockaddr *sa, socklen_t len, const char *why)
{
    struct name_entry *ne = arg;
    struct hc_sentinel *w = ne->w;
    ne->req = NULL;
    ne->at_ms = gw_now_ms();
    if (sa != NULL && len <= sizeof(ne->addr)) {
        memcpy(&ne->addr, sa, len);
        ne->len = len;
    } else if (ne->len == 0) {
        char name[HC_SN_HOST_MAX + 16];
        hc_sn_addr_format(&ne->name, name, sizeof(name));
        gw_warn("sentinel: api_id=%s %s: cannot resolve %s: %s", w->api_id, w->cfg.master_name,
                name, why != NULL ? why : "no address");
    }
    /* A round soon, from the loop: this may run inside one (an answer from
     * /etc/hosts comes at once). */
    arm_ms(w->poll, 0);
}

static int named_addr(struct hc_sentinel *w, const struct hc_sn_addr *a,
                      struct sockaddr_storage *out, socklen_t *len)
{
    if (hc_dns_literal(a->host, a->port, out, len) == 0)
        return 0;
    struct name_entry *ne = NULL, *oldest = NULL;
    for (int i = 0; i < NAME_CACHE && ne == NULL; i++) {
        struct name_entry *e = &w->names[i];
        if (e->at_ms != 0 && hc_sn_addr_equal(&e->name, a))
            ne = e;
        else if (e->req == NULL && (oldest == NULL || e->at_ms < oldest->at_ms))
            oldest = e;
    }
    int64_t now = gw_now_ms();
    if (ne == NULL) {
        if (oldest == NULL)
            return -1; /* every entry is being looked up: too many names */
        ne = oldest;
        memset(ne, 0, sizeof(*ne));
        ne->w = w;
        ne->name = *a;
        ne->at_ms = now; /* a place in the cache while the lookup runs */
        ne->req = hc_dns_resolve(hc_engine_dns(w->e), a->host, a->port, on_name, ne);
        if (ne->len == 0)
            return ne->req != NULL ? 1 : -1;
    } else if (ne->req == NULL && now - ne->at_ms > NAME_REFRESH_MS) {
        ne->req = hc_dns_resolve(hc_engine_dns(w->e), a->host, a->port, on_name, ne);
    }
    if (ne->len == 0)
        return ne->req != NULL ? 1 : -1;
    memcpy(out, &ne->addr, ne->len);
    *len = ne->len;
    return 0;
}

/* ---- the switch ------------------------------------------------------------------------ */

/* Holds the master in force, or lets it go. A hold that lasts too long while
 * the sentinels disagree is released until a round shows no failover. */
static void set_hold(struct hc_sentinel *w, bool on)
{
    if (!on)
        w->hold_suppressed = false;
    if (w->master < 0)
        return;
    struct hc_sentinel_node *m = &w->nodes[w->master];
    int64_t now = gw_now_ms();
    int64_t max = HOLD_MAX_MS > HOLD_MAX_POLLS * w->cfg.poll_interval_ms
                      ? HOLD_MAX_MS
                      : HOLD_MAX_POLLS * w->cfg.poll_interval_ms;
    if (on && holding(w) && now - w->hold_since_ms > max) {
        gw_warn("sentinel: api_id=%s %s: master %s held for %lld ms without a new verdict; "
                "serving it again while the sentinels disagree",
                w->api_id, w->cfg.master_name, m->name, (long long)(now - w->hold_since_ms));
        w->hold_suppressed = true;
    }
    if (on && !w->hold_suppressed) {
        if (!holding(w)) {
            w->hold_since_ms = now;
            gw_info("sentinel: api_id=%s %s: a failover is under way: master %s gets no new "
                    "connection until the sentinels agree",
                    w->api_id, w->cfg.master_name, m->name);
        }
        set_flags(&m->flags, NF_HELD, 0);
        set_flags(&w->mode, WF_SETTLING, 0);
    } else if (holding(w)) {
        set_flags(&m->flags, 0, NF_HELD);
        set_flags(&w->mode, 0, WF_SETTLING);
        if (!w->hold_suppressed)
            gw_info("sentinel: api_id=%s %s: master %s is kept: no failover followed", w->api_id,
                    w->cfg.master_name, m->name);
    }
}

static void note_trigger(struct hc_sentinel *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void note_trigger(struct hc_sentinel *w, const char *fmt, ...)
{
    if (w->trigger_ms != 0)
        return;
    w->trigger_ms = gw_now_ms();
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->trigger, sizeof(w->trigger), fmt, ap);
    va_end(ap);
}

static void commit(struct hc_sentinel *w, struct hc_sentinel_node *n, uint64_t epoch, int agree)
{
    int old = w->master;
    if (old >= 0)
        set_flags(&w->nodes[old].flags, 0, NF_MASTER | NF_HELD);
    set_flags(&n->flags, NF_MASTER, NF_HELD | NF_REPLICA);
    n->verified = false;
    n->listed = false;
    w->master = n->index;
    w->candidate = -1;
    w->epoch = epoch;
    w->named_by = agree;
    w->hold_since_ms = 0;
    w->hold_suppressed = false;
    set_flags(&w->mode, WF_DECIDED, WF_SETTLING);
    hc_engine_expedite(w->e, w, (const struct sockaddr *)&n->seen);
    int64_t now = gw_now_ms();
    if (old >= 0) {
        int64_t took = w->trigger_ms != 0 ? now - w->trigger_ms : 0;
        w->switches++;
        w->last_switch_ms = took;
        w->last_switch_unix = (int64_t)time(NULL);
        snprintf(w->last_switch, sizeof(w->last_switch),
                 "master %s -> %s (epoch %" PRIu64 ", %d/%zu sentinels agree, after %s, %lld ms)",
                 w->nodes[old].name, n->name, epoch, agree, w->nlinks,
                 w->trigger[0] != '\0' ? w->trigger : "a poll", (long long)took);
        gw_warn("sentinel: api_id=%s %s: %s", w->api_id, w->cfg.master_name, w->last_switch);
    } else {
        gw_info("sentinel: api_id=%s %s: master is %s (epoch %" PRIu64 ", %d/%zu sentinels agree)",
                w->api_id, w->cfg.master_name, n->name, epoch, agree, w->nlinks);
    }
    w->trigger_ms = 0;
    w->trigger[0] = '\0';
    hc_engine_changed(w->e);
}

/* The first replicas are known once none listed is still being verified. */
static void replicas_decided(struct hc_sentinel *w)
{
    if (w->mode & WF_REPLICAS)
        return;
    for (size_t i = 0; i < w->nnodes; i++)
        if (w->nodes[i].listed && w->nodes[i].verify != NULL)
            return;
    set_flags(&w->mode, WF_REPLICAS, 0);
}

static void verify_done(struct verify *v, const char *failure)
{
    struct hc_sentinel *w = v->w;
    struct hc_sentinel_node *n = v->n;
    bool master = v->master;
    n->verify = NULL;
    hc_redis_free(v->link);
    if (failure != NULL) {
        w->role_verify_failures++;
        n->verify_after_ms = gw_now_ms() + VERIFY_RETRY_MS;
        if (master) {
            n->refuted_epoch = v->epoch + 1;
            n->refuted_until_ms = gw_now_ms() + REFUTED_MS;
            if (w->candidate == n->index)
                w->candidate = -1;
        }
        node_problem(n, "named as %s by the sentinels, but %s; %s",
                     master ? "the master" : "a replica", failure,
                     master ? "not switching" : "not used");
    } else {
        node_problem(n, NULL);
        if (master) {
            n->confirmed_epoch = v->epoch + 1;
            n->confirmed_ms = gw_now_ms();
        }
        if (master && w->candidate == n->index) {
            commit(w, n, v->epoch, v->agree);
        } else if (!master && n->listed && n->index != w->master) {
            n->verified = true;
            set_flags(&n->flags, NF_REPLICA, 0);
        }
    }
    free(v);
    if (!master)
        replicas_decided(w);
}

static void on_role(void *arg, const redisReply *reply, const char *why)
{
    struct verify *v = arg;
    char err[200], msg[240];
    if (reply == NULL) {
        snprintf(msg, sizeof(msg), "ROLE could not be asked: %s", why);
        verify_done(v, msg);
        return;
    }
    struct hc_sn_role_reply role;
    if (hc_sn_parse_role(reply, &role, err, sizeof(err)) != 0) {
        snprintf(msg, sizeof(msg), "%s", err);
        verify_done(v, msg);
        return;
    }
    enum hc_sn_role want = v->master ? HC_SN_ROLE_MASTER : HC_SN_ROLE_SLAVE;
    if (role.role != want) {
        snprintf(msg, sizeof(msg), "ROLE says %s", hc_sn_role_name(role.role));
        verify_done(v, msg);
        return;
    }
    verify_done(v, NULL);
}

/* Asks node n its ROLE on a connection of its own, as the data nodes'
 * credentials allow. */
static void start_verify(struct hc_sentinel *w, struct hc_sentinel_node *n, bool master,
                         uint64_t epoch, int agree)
{
    if (n->verify != NULL) {
        if (n->verify->master == master) {
            n->verify->epoch = epoch;
            n->verify->agree = agree;
            return;
        }
        sn_verify_drop(n);
    }
    if (gw_now_ms() < n->verify_after_ms)
        return;
    struct verify *v = calloc(1, sizeof(*v));
    if (v == NULL)
        return;
    v->w = w;
    v->n = n;
    v->master = master;
    v->epoch = epoch;
    v->agree = agree;
    struct hc_redis_opts o = {
        .timeout_ms = w->cfg.timeout_ms,
        .username = w->cfg.node_username,
        .password = w->cfg.node_password,
        .client_name = "tcpgate-sentinel-verify",
    };
    v->link =
        hc_redis_connect(hc_engine_base(w->e), (const struct sockaddr *)&n->seen, n->seenlen, &o);
    static const char *const role[] = {"ROLE"};
    if (v->link == NULL || hc_redis_command(v->link, 1, role, 1, on_role, v) != 0) {
        hc_redis_free(v->link);
        free(v);
        n->verify_after_ms = gw_now_ms() + VERIFY_RETRY_MS;
        node_problem(n, "cannot connect to ask its ROLE: %s", strerror(errno));
        return;
    }
    n->verify = v;
}

bool sn_verifying_master(const struct hc_sentinel *w)
{
    for (size_t i = 0; i < w->nnodes; i++)
        if (w->nodes[i].verify != NULL && w->nodes[i].verify->master)
            return true;
    return false;
}

/* The replicas of the verdict: those listed are verified before they are
 * used; those no longer listed are dropped. Returns whether any was. */
static bool apply_replicas(struct hc_sentinel *w, const struct hc_sn_verdict *v, bool *added)
{
    for (size_t i = 0; i < w->nnodes; i++)
        w->nodes[i].listed = false;
    for (size_t k = 0; k < v->nreplicas; k++) {
        struct sockaddr_storage sa;
        socklen_t len;
        int rc = named_addr(w, &v->replicas[k], &sa, &len);
        if (rc != 0) {
            if (rc < 0)
                refuse(w, HC_SR_unresolved, &v->replicas[k]);
            continue;
        }
        struct hc_sentinel_node *n =
            node_for(w, &v->replicas[k], (struct sockaddr *)&sa, len, added);
        if (n == NULL || n->index == w->master)
            continue;
        n->listed = true;
        n->named_by = v->agree;
        if (!n->verified)
            start_verify(w, n, false, v->epoch, v->agree);
    }
    bool dropped = false;
    for (size_t i = 0; i < w->nnodes; i++) {
        struct hc_sentinel_node *n = &w->nodes[i];
        if (n->listed)
            continue;
        n->verified = false;
        if (n->flags & NF_REPLICA) {
            set_flags(&n->flags, 0, NF_REPLICA);
            dropped = true;
        }
        if (n->verify != NULL && !n->verify->master)
            sn_verify_drop(n);
    }
    replicas_decided(w);
    return dropped;
}

/* Whether a node's ROLE said it is not the master at this epoch, lately. */
static bool refuted(const struct hc_sentinel_node *n, uint64_t epoch)
{
    return n->refuted_epoch == epoch + 1 && gw_now_ms() < n->refuted_until_ms;
}

/* Whether its ROLE said it is the master at this epoch a moment ago. */
static bool confirmed(const struct hc_sentinel_node *n, uint64_t epoch)
{
    return n->confirmed_epoch == epoch + 1 && gw_now_ms() - n->confirmed_ms <= VERIFY_RETRY_MS;
}

/* A node a sentinel names as the master at a newer epoch than the verdict's:
 * the master in force is held while that claim stands, that is until the
 * node's ROLE refutes it. Returns whether it stands. */
static bool contender_stands(struct hc_sentinel *w, const struct hc_sn_verdict *v, bool *added)
{
    if (!v->has_contender)
        return false;
    struct sockaddr_storage sa;
    socklen_t len;
    int rc = named_addr(w, &v->contender, &sa, &len);
    if (rc != 0)
        return rc > 0; /* being looked up: it may stand */
    struct hc_sentinel_node *n = node_for(w, &v->contender, (struct sockaddr *)&sa, len, added);
    if (n == NULL || n->index == w->master || refuted(n, v->contender_epoch))
        return false;
    if (!confirmed(n, v->contender_epoch))
        start_verify(w, n, true, v->contender_epoch, 1);
    return true;
}

/* Acts on a round's verdict. */
void sn_apply(struct hc_sentinel *w, const struct hc_sn_verdict *v)
{
    int64_t now = gw_now_ms();
    char cur[HC_SN_HOST_MAX + 16];
    snprintf(cur, sizeof(cur), "%s", w->master >= 0 ? w->nodes[w->master].name : "none");
    w->answered = v->answered;
    w->quorum = v->quorum;
    if (v->kind == HC_SN_V_NONE) {
        if (w->unreachable_since_ms == 0)
            w->unreachable_since_ms = now;
        bool fallback =
            w->cfg.fallback_to_checks &&
            now - w->unreachable_since_ms >= UNREACHABLE_POLLS * w->cfg.poll_interval_ms;
        if (fallback && !(w->mode & WF_FALLBACK)) {
            set_flags(&w->mode, WF_FALLBACK, 0);
            hc_engine_changed(w->e);
        }
        watcher_problem(w, "no sentinel answers; %s",
                        w->mode & WF_FALLBACK ? "the checks alone decide (on_unreachable: checks)"
                        : w->master >= 0      ? "the last verdict stands"
                                              : "no verdict yet");
        return;
    }
    w->unreachable_since_ms = 0;
    if (w->mode & WF_FALLBACK) {
        set_flags(&w->mode, 0, WF_FALLBACK);
        hc_engine_changed(w->e);
    }
    if (v->kind == HC_SN_V_UNKNOWN) {
        watcher_problem(w, "the sentinels do not know master name \"%s\"", w->cfg.master_name);
        return;
    }
    bool added = false, dropped = false;
    bool hold = v->down || v->promoting || contender_stands(w, v, &added);
    if (v->kind == HC_SN_V_SPLIT) {
        watcher_problem(w,
                        "no address has the quorum of %d (%d sentinels answered); master %s "
                        "stays",
                        v->quorum, v->answered, cur);
        if (hold)
            note_trigger(w, "a poll that found the sentinels disagreeing");
        set_hold(w, hold);
        if (added)
            hc_engine_changed(w->e);
        return;
    }
    struct sockaddr_storage sa;
    socklen_t len;
    int rc = named_addr(w, &v->master, &sa, &len);
    if (rc != 0) {
        if (rc < 0)
            refuse(w, HC_SR_unresolved, &v->master);
        return; /* a round follows the lookup */
    }
    struct hc_sentinel_node *n = node_for(w, &v->master, (struct sockaddr *)&sa, len, &added);
    if (n == NULL) {
        set_hold(w, hold); /* refused: the verdict in force stays */
    } else if (n->index == w->master) {
        watcher_problem(w, NULL);
        w->candidate = -1;
        if (v->epoch > w->epoch)
            w->epoch = v->epoch;
        w->named_by = v->agree;
        n->named_by = v->agree;
        if (hold) {
            note_trigger(w, "a poll that found a failover under way");
        } else {
            w->trigger_ms = 0;
            w->trigger[0] = '\0';
        }
        set_hold(w, hold);
    } else if (refuted(n, v->epoch)) {
        /* Its ROLE said otherwise a moment ago: the verdict in force stays,
         * and the node is asked again later. */
        w->candidate = -1;
        set_hold(w, hold);
    } else {
        watcher_problem(w, NULL);
        note_trigger(w, "a poll naming %s", n->name);
        n->named_by = v->agree;
        w->candidate = n->index;
        set_hold(w, true); /* the quorum names another: hold this one until it is verified */
        if (confirmed(n, v->epoch))
            commit(w, n, v->epoch, v->agree); /* as a contender, a moment ago */
        else
            start_verify(w, n, true, v->epoch, v->agree);
    }
    if (w->cfg.replica)
        dropped = apply_replicas(w, v, &added);
    if (added || dropped)
        hc_engine_changed(w->e);
}

/* Whether the master in force is the node a promoting event promotes
 * already (the event comes late, as +switch-master does after the failover
 * ends): then there is nothing to hold. */
static bool is_master(const struct hc_sentinel *w, const struct hc_sn_addr *a)
{
    struct sockaddr_storage sa;
    socklen_t len;
    return w->master >= 0 && hc_dns_literal(a->host, a->port, &sa, &len) == 0 &&
           hc_dns_same_addr((struct sockaddr *)&sa,
                            (const struct sockaddr *)&w->nodes[w->master].seen);
}

static bool switched_already(const struct hc_sentinel *w, const struct hc_sn_event *ev)
{
    if (ev->kind == HC_SN_EV_SWITCH_MASTER)
        return is_master(w, &ev->to);
    if (ev->kind == HC_SN_EV_RECONF_SLAVES)
        return !is_master(w, &ev->instance); /* it names the old master */
    return is_master(w, &ev->instance);      /* it names the replica promoted */
}

void sn_event(struct hc_sentinel *w, struct link *l, const struct hc_sn_event *ev)
{
    w->events[ev->kind]++;
    if (hc_sn_event_promoting(ev->kind) && !switched_already(w, ev)) {
        note_trigger(w, "%s from %s", hc_sn_event_name(ev->kind), l->name);
        set_hold(w, true);
    }
    sn_round_start(w);
}

void sn_verify_drop(struct hc_sentinel_node *n)
{
    if (n->verify == NULL)
        return;
    hc_redis_free(n->verify->link);
    free(n->verify);
    n->verify = NULL;
}
