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
#include "hc_dns.h"
#include "hc_internal.h"
#include "hc_redis.h"

/* Reconnecting to a sentinel: from BACKOFF_MIN_MS, doubling to BACKOFF_MAX_MS,
 * each wait drawn within 20 % of its value. */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* Rounds come this often while a failover is under way or a node is being
 * verified (or the poll interval, when shorter). */
#define BUSY_POLL_MS 100
/* A ROLE check that failed is tried again after this; a node whose ROLE
 * refuted that it is the master at some epoch is not held to for that
 * epoch for REFUTED_MS. */
#define VERIFY_RETRY_MS 200
#define REFUTED_MS 1000
/* How long a master is held at most before it is served again while the
 * sentinels still disagree: max(HOLD_MAX_MS, HOLD_MAX_POLLS x poll). */
#define HOLD_MAX_MS 5000
#define HOLD_MAX_POLLS 5
/* on_unreachable "checks": after this many poll intervals with no answer. */
#define UNREACHABLE_POLLS 3
/* Names the sentinels give (announce-hostnames), resolved and kept. */
#define NAME_CACHE 16
#define NAME_REFRESH_MS 30000

/* Node flags, read by the workers. */
enum { NF_MASTER = 1, NF_REPLICA = 2, NF_HELD = 4 };
/* Watcher flags, read by the workers. */
enum { WF_DECIDED = 1, WF_FALLBACK = 2, WF_SETTLING = 4, WF_REPLICAS = 8 };

struct verify;

struct hc_sentinel_node {
    struct hc_sentinel *w;
    int index;
    char name[HC_SN_HOST_MAX + 16];
    struct sockaddr_storage addrs[HC_SENTINEL_NODE_ADDRS]; /* allow-list: the target's */
    socklen_t addrlens[HC_SENTINEL_NODE_ADDRS];
    int naddrs;
    int flags; /* NF_*, atomic */

    /* Control thread. */
    struct sockaddr_storage seen; /* the address the sentinels named it by */
    socklen_t seenlen;
    int named_by;
    bool listed;   /* the last verdict lists it as a healthy replica */
    bool verified; /* ROLE said slave since it was listed */
    struct verify *verify;
    int64_t verify_after_ms; /* no new ROLE check before */
    uint64_t refuted_epoch;  /* epoch + 1 at which ROLE said it is not the master; 0: none */
    int64_t refuted_until_ms;
    uint64_t confirmed_epoch; /* epoch + 1 at which ROLE said it is the master; 0: none */
    int64_t confirmed_ms;
    char problem[200]; /* the last problem logged about it */
};

/* A ROLE check of a node on a connection of its own. */
struct verify {
    struct hc_sentinel *w;
    struct hc_sentinel_node *n;
    struct hc_redis *link;
    bool master; /* wants role master; else slave */
    uint64_t epoch;
    int agree;
};

/* One configured sentinel. */
struct link {
    struct hc_sentinel *w;
    char name[API_HOST_MAX + 16];
    const struct api_target *target;
    struct hc_dns_req *dns;
    struct sockaddr_storage addr; /* resolved at each connect */
    socklen_t addrlen;
    struct hc_redis *cmd, *sub;
    struct event *retry, *sub_retry;
    int64_t backoff_ms, sub_backoff_ms;
    bool up;          /* answered its last queries */
    bool subscribed;  /* its events arrive */
    bool sub_refused; /* SUBSCRIBE was refused: polled only until it reconnects */
    bool tilt;        /* in TILT mode (it acts on nothing, but its answers stand) */
    /* The round under way. */
    bool asked;
    int pending; /* replies still to come */
    bool failed; /* a reply was an error, or did not come */
    struct hc_sn_answer ans;
    char problem[200];
    uint64_t failures[HC_SF_COUNT];
};

struct name_entry {
    struct hc_sn_addr name;
    struct sockaddr_storage addr;
    socklen_t len; /* 0: not resolved (yet) */
    int64_t at_ms;
    struct hc_dns_req *req;
    struct hc_sentinel *w;
};

struct hc_sentinel {
    struct hc_sentinel *next;
    struct hc_engine *e;
    int refs;
    bool started; /* every link was started once */
    bool stale;   /* its node table is full: a reload replaces it */

    /* The spec, owned. */
    char *api_id;
    struct api_sentinel cfg;
    bool allow_list;
    size_t nallowed;
    int *allowed_node; /* allowed[i] -> node index */

    struct hc_sentinel_node *nodes; /* HC_SENTINEL_MAX_NODES */
    size_t nnodes;                  /* atomic: nodes below it are complete */
    struct link *links;
    size_t nlinks;
    struct hc_sn_answer *answers; /* one per link: a round's, gathered */
    struct name_entry names[NAME_CACHE];

    /* The verdict in force. */
    int master;    /* node index, -1: none */
    int candidate; /* a new master being verified, -1: none */
    uint64_t epoch;
    int named_by, answered, quorum;
    int mode; /* WF_*, atomic */
    int64_t hold_since_ms;
    bool hold_suppressed; /* held too long: served while the sentinels disagree */
    int64_t unreachable_since_ms;

    /* Rounds. */
    bool round_active, round_again;
    struct event *poll;

    /* The failover under way: what first showed it, and when. */
    int64_t trigger_ms;
    char trigger[128];

    /* Reporting. */
    char problem[200];
    uint64_t switches, role_verify_failures, refused[HC_SR_COUNT], events[HC_SN_EV_COUNT];
    int64_t last_switch_ms, last_switch_unix;
    char last_switch[800];
};

static void round_start(struct hc_sentinel *w);
static void link_connect(struct link *l);

/* ---- small things ------------------------------------------------------------------ */

static bool holding(const struct hc_sentinel *w)
{
    return w->master >= 0 && (w->nodes[w->master].flags & NF_HELD);
}

static void set_flags(int *p, int set, int clear)
{
    int v = __atomic_load_n(p, __ATOMIC_RELAXED);
    __atomic_store_n(p, (v | set) & ~clear, __ATOMIC_RELEASE);
}

static int64_t jitter(int64_t ms)
{
    return ms * (80 + rand() % 41) / 100;
}

static void arm_ms(struct event *ev, int64_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

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
        gw_info("sentinel: api_id=%s %s: the sentinels agree again", w->api_id, w->cfg.master_name);
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

static void refuse(struct hc_sentinel *w, enum hc_sentinel_refusal why, const struct hc_sn_addr *a)
{
    static const char *const reasons[] = {
#define HC_SR_TEXT(name, desc) desc,
        HC_SENTINEL_REFUSALS(HC_SR_TEXT)
#undef HC_SR_TEXT
    };
    char name[HC_SN_HOST_MAX + 16];
    hc_sn_addr_format(a, name, sizeof(name));
    w->refused[why]++;
    watcher_problem(w, "refused %s, which the sentinels name: %s", name, reasons[why]);
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
    round_start(w);
}

static int named_addr(struct hc_sentinel *w, const struct hc_sn_addr *a,
                      struct sockaddr_storage *out, socklen_t *len)
{
    if (hc_dns_literal(a->host, a->port, out, len) == 0)
        return 0;
    struct name_entry *ne = NULL, *oldest = &w->names[0];
    for (int i = 0; i < NAME_CACHE && ne == NULL; i++) {
        if (w->names[i].at_ms != 0 && hc_sn_addr_equal(&w->names[i].name, a))
            ne = &w->names[i];
        else if (w->names[i].req == NULL && w->names[i].at_ms < oldest->at_ms)
            oldest = &w->names[i];
    }
    int64_t now = gw_now_ms();
    if (ne == NULL) {
        if (oldest->req != NULL)
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

static void replicas_decided(struct hc_sentinel *w);

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
        hc_redis_free(n->verify->link);
        free(n->verify);
        n->verify = NULL;
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

static bool verifying(const struct hc_sentinel *w)
{
    for (size_t i = 0; i < w->nnodes; i++)
        if (w->nodes[i].verify != NULL)
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
        if (n->verify != NULL && !n->verify->master) {
            hc_redis_free(n->verify->link);
            free(n->verify);
            n->verify = NULL;
        }
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
static void apply(struct hc_sentinel *w, const struct hc_sn_verdict *v)
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
    dropped = apply_replicas(w, v, &added);
    if (added || dropped)
        hc_engine_changed(w->e);
}

/* ---- rounds ---------------------------------------------------------------------------- */

static int64_t poll_ms(const struct hc_sentinel *w)
{
    bool busy = holding(w) || w->candidate >= 0 || verifying(w) || !(w->mode & WF_DECIDED);
    if (busy && BUSY_POLL_MS < w->cfg.poll_interval_ms)
        return BUSY_POLL_MS;
    return w->cfg.poll_interval_ms;
}

static void round_finish(struct hc_sentinel *w)
{
    size_t n = 0;
    for (size_t i = 0; i < w->nlinks; i++) {
        struct link *l = &w->links[i];
        if (l->asked && !l->failed)
            w->answers[n++] = l->ans;
        l->asked = false;
    }
    const struct hc_sn_addr *cur = NULL;
    struct hc_sn_addr cur_addr;
    if (w->master >= 0) {
        /* The master as the sentinels named it: compare names to names. */
        for (size_t i = 0; i < n && cur == NULL; i++) {
            struct sockaddr_storage sa;
            socklen_t len;
            if (w->answers[i].known &&
                hc_dns_literal(w->answers[i].master.host, w->answers[i].master.port, &sa, &len) ==
                    0 &&
                hc_dns_same_addr((struct sockaddr *)&sa,
                                 (struct sockaddr *)&w->nodes[w->master].seen)) {
                cur_addr = w->answers[i].master;
                cur = &cur_addr;
            }
        }
    }
    struct hc_sn_verdict v;
    hc_sn_decide(w->answers, n, w->cfg.quorum, (int)w->nlinks, cur, w->epoch, &v);
    /* No answer names the master in force by its literal address: fall back
     * to comparing its epoch only. */
    if (cur == NULL && w->master >= 0 && v.kind == HC_SN_V_MASTER && v.epoch < w->epoch &&
        v.agree <= (int)w->nlinks / 2)
        v.kind = HC_SN_V_SPLIT;
    w->round_active = false;
    apply(w, &v);
    if (w->round_again) {
        w->round_again = false;
        round_start(w);
        return;
    }
    arm_ms(w->poll, poll_ms(w));
}

static void round_check(struct hc_sentinel *w)
{
    if (!w->round_active)
        return;
    for (size_t i = 0; i < w->nlinks; i++)
        if (w->links[i].asked && w->links[i].pending > 0)
            return;
    round_finish(w);
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
    if (!l->failed)
        l->backoff_ms = BACKOFF_MIN_MS;
    round_check(l->w);
}

static void link_problem(struct link *l, enum hc_sentinel_failure reason, const char *why)
{
    l->failures[reason]++;
    if (strcmp(l->problem, why) != 0) {
        gw_warn("sentinel: api_id=%s %s: sentinel %s: %s", l->w->api_id, l->w->cfg.master_name,
                l->name, why);
        snprintf(l->problem, sizeof(l->problem), "%s", why);
    }
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

static void link_down(struct link *l, enum hc_sentinel_failure reason, const char *why);

static bool ask(struct link *l)
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

static void round_start(struct hc_sentinel *w)
{
    if (w->round_active) {
        w->round_again = true;
        return;
    }
    w->round_active = true;
    evtimer_del(w->poll);
    for (size_t i = 0; i < w->nlinks; i++) {
        struct link *l = &w->links[i];
        l->asked = false;
        if (l->cmd != NULL)
            ask(l);
    }
    round_check(w);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    round_start(arg);
}

/* ---- links ------------------------------------------------------------------------------- */

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
    arm_ms(l->retry, jitter(l->backoff_ms));
    l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
    round_check(l->w);
}

static void on_cmd_close(void *arg, enum hc_redis_close kind, const char *why)
{
    struct link *l = arg;
    link_down(l, failure_of(kind), why);
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
        round_start(w);
        return;
    }
    if (strcmp(ev.master, w->cfg.master_name) != 0)
        return;
    w->events[ev.kind]++;
    if (hc_sn_event_promoting(ev.kind) && !switched_already(w, &ev)) {
        note_trigger(w, "%s from %s", hc_sn_event_name(ev.kind), l->name);
        set_hold(w, true);
    }
    round_start(w);
}

static void sub_connect(struct link *l);

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
    round_start(l->w); /* events may have been missed meanwhile */
}

static void sub_connect(struct link *l)
{
    struct hc_sentinel *w = l->w;
    if (l->sub != NULL || l->sub_refused || l->cmd == NULL)
        return;
    struct hc_redis_opts o = {
        .timeout_ms = w->cfg.timeout_ms,
        .username = w->cfg.username,
        .password = w->cfg.password,
        .client_name = "tcpgate-events",
        .on_message = on_message,
        .on_close = on_sub_close,
        .arg = l,
    };
    const char *argv[HC_SN_EV_OTHER + 1];
    argv[0] = "SUBSCRIBE";
    for (int k = 0; k < HC_SN_EV_OTHER; k++)
        argv[k + 1] = hc_sn_event_name((enum hc_sn_event_kind)k);
    l->sub = hc_redis_connect(hc_engine_base(w->e), (struct sockaddr *)&l->addr, l->addrlen, &o);
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
    struct hc_redis_opts o = {
        .timeout_ms = w->cfg.timeout_ms,
        .username = w->cfg.username,
        .password = w->cfg.password,
        .client_name = "tcpgate",
        .on_close = on_cmd_close,
        .arg = l,
    };
    l->cmd = hc_redis_connect(hc_engine_base(w->e), sa, len, &o);
    if (l->cmd == NULL) {
        snprintf(msg, sizeof(msg), "cannot open a connection: %s", strerror(errno));
        link_down(l, HC_SF_connect, msg);
        return;
    }
    l->sub_refused = false;
    l->sub_backoff_ms = BACKOFF_MIN_MS;
    sub_connect(l);
    /* A round under way goes without it; the next includes it. A reconnect
     * asks at once (a new watcher asks once all its links are started). */
    if (w->started && !w->round_active)
        round_start(w);
}

static void link_connect(struct link *l)
{
    if (l->cmd != NULL || l->dns != NULL)
        return;
    struct hc_sentinel *w = l->w;
    l->dns = hc_dns_resolve(hc_engine_dns(w->e), l->target->host, l->target->port, on_resolved, l);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    link_connect(arg);
}

/* ---- the watcher -------------------------------------------------------------------------- */

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool same_cfg(const struct api_sentinel *a, const struct api_sentinel *b)
{
    if (!same_str(a->master_name, b->master_name) || !same_str(a->username, b->username) ||
        !same_str(a->password, b->password) || !same_str(a->node_username, b->node_username) ||
        !same_str(a->node_password, b->node_password) || a->quorum != b->quorum ||
        a->timeout_ms != b->timeout_ms || a->poll_interval_ms != b->poll_interval_ms ||
        a->fallback_to_checks != b->fallback_to_checks || a->replica != b->replica ||
        a->naddrs != b->naddrs)
        return false;
    for (size_t i = 0; i < a->naddrs; i++)
        if (strcasecmp(a->addrs[i].host, b->addrs[i].host) != 0 ||
            a->addrs[i].port != b->addrs[i].port)
            return false;
    return true;
}

/* Whether w serves spec exactly: same definition, same sentinels and
 * credentials, same allow-list (by name and address). */
static bool same_spec(const struct hc_sentinel *w, const struct hc_sentinel_spec *spec)
{
    if (w->stale || strcmp(w->api_id, spec->api_id) != 0 || !same_cfg(&w->cfg, spec->cfg) ||
        w->allow_list != (spec->nallowed > 0) || w->nallowed != spec->nallowed)
        return false;
    for (size_t i = 0; i < spec->nallowed; i++) {
        const struct hc_sentinel_allowed *a = &spec->allowed[i];
        const struct hc_sentinel_node *n = &w->nodes[w->allowed_node[i]];
        int na = a->naddrs < HC_SENTINEL_NODE_ADDRS ? a->naddrs : HC_SENTINEL_NODE_ADDRS;
        if (strcmp(n->name, a->name) != 0 || n->naddrs != na)
            return false;
        for (int k = 0; k < na; k++)
            if (!hc_dns_same_addr((const struct sockaddr *)&n->addrs[k],
                                  (const struct sockaddr *)&a->addrs[k]))
                return false;
    }
    return true;
}

static char *dup_or_null(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

static void watcher_free(struct hc_sentinel *w)
{
    if (w == NULL)
        return;
    for (size_t i = 0; w->links != NULL && i < w->nlinks; i++) {
        struct link *l = &w->links[i];
        hc_dns_cancel(l->dns);
        hc_redis_free(l->cmd);
        hc_redis_free(l->sub);
        if (l->retry != NULL)
            event_free(l->retry);
        if (l->sub_retry != NULL)
            event_free(l->sub_retry);
    }
    for (size_t i = 0; w->nodes != NULL && i < w->nnodes; i++) {
        if (w->nodes[i].verify != NULL) {
            hc_redis_free(w->nodes[i].verify->link);
            free(w->nodes[i].verify);
        }
    }
    for (int i = 0; i < NAME_CACHE; i++)
        hc_dns_cancel(w->names[i].req);
    if (w->poll != NULL)
        event_free(w->poll);
    free(w->links);
    free(w->answers);
    free(w->nodes);
    free(w->allowed_node);
    free(w->api_id);
    free(w->cfg.master_name);
    free(w->cfg.addrs);
    free(w->cfg.username);
    free(w->cfg.password);
    free(w->cfg.node_username);
    free(w->cfg.node_password);
    free(w);
}

static struct hc_sentinel *watcher_new(struct hc_engine *e, const struct hc_sentinel_spec *spec,
                                       char *err, size_t errlen)
{
    const struct api_sentinel *c = spec->cfg;
    struct hc_sentinel *w = calloc(1, sizeof(*w));
    if (w == NULL)
        goto oom;
    w->e = e;
    w->refs = 1;
    w->master = w->candidate = -1;
    w->last_switch_ms = -1;
    w->api_id = strdup(spec->api_id);
    w->cfg = *c;
    w->cfg.master_name = strdup(c->master_name);
    w->cfg.username = dup_or_null(c->username);
    w->cfg.password = dup_or_null(c->password);
    w->cfg.node_username = dup_or_null(c->node_username);
    w->cfg.node_password = dup_or_null(c->node_password);
    w->cfg.addrs = calloc(c->naddrs ? c->naddrs : 1, sizeof(*c->addrs));
    w->nodes = calloc(HC_SENTINEL_MAX_NODES, sizeof(*w->nodes));
    w->links = calloc(c->naddrs ? c->naddrs : 1, sizeof(*w->links));
    w->answers = calloc(c->naddrs ? c->naddrs : 1, sizeof(*w->answers));
    w->allowed_node = calloc(spec->nallowed ? spec->nallowed : 1, sizeof(int));
    w->poll = evtimer_new(hc_engine_base(e), on_poll, w);
    if (w->api_id == NULL || w->cfg.master_name == NULL || w->cfg.addrs == NULL ||
        w->nodes == NULL || w->links == NULL || w->answers == NULL || w->allowed_node == NULL ||
        w->poll == NULL || (c->username != NULL && w->cfg.username == NULL) ||
        (c->password != NULL && w->cfg.password == NULL) ||
        (c->node_username != NULL && w->cfg.node_username == NULL) ||
        (c->node_password != NULL && w->cfg.node_password == NULL))
        goto oom;
    memcpy(w->cfg.addrs, c->addrs, c->naddrs * sizeof(*c->addrs));
    w->nlinks = c->naddrs;
    for (size_t i = 0; i < w->nlinks; i++) {
        struct link *l = &w->links[i];
        l->w = w;
        l->target = &w->cfg.addrs[i];
        api_target_hostport(l->target, l->name, sizeof(l->name));
        l->backoff_ms = l->sub_backoff_ms = BACKOFF_MIN_MS;
        l->retry = evtimer_new(hc_engine_base(e), on_retry, l);
        l->sub_retry = evtimer_new(hc_engine_base(e), on_sub_retry, l);
        if (l->retry == NULL || l->sub_retry == NULL)
            goto oom;
    }
    /* The allow-list: one node per distinct target. */
    w->allow_list = spec->nallowed > 0;
    w->nallowed = spec->nallowed;
    for (size_t i = 0; i < spec->nallowed; i++) {
        const struct hc_sentinel_allowed *a = &spec->allowed[i];
        size_t k = 0;
        while (k < w->nnodes && strcmp(w->nodes[k].name, a->name) != 0)
            k++;
        if (k == w->nnodes) {
            if (k == HC_SENTINEL_MAX_NODES) {
                snprintf(err, errlen, "more than %d targets", HC_SENTINEL_MAX_NODES);
                watcher_free(w);
                return NULL;
            }
            struct hc_sentinel_node *n = &w->nodes[k];
            n->w = w;
            n->index = (int)k;
            snprintf(n->name, sizeof(n->name), "%s", a->name);
            n->naddrs = a->naddrs < HC_SENTINEL_NODE_ADDRS ? a->naddrs : HC_SENTINEL_NODE_ADDRS;
            for (int j = 0; j < n->naddrs; j++) {
                n->addrs[j] = a->addrs[j];
                n->addrlens[j] = a->addrlens[j];
            }
            w->nnodes++;
        }
        w->allowed_node[i] = (int)k;
    }
    return w;
oom:
    snprintf(err, errlen, "out of memory");
    watcher_free(w);
    return NULL;
}

struct hc_sentinel *hc_sentinel_get(struct hc_engine *e, const struct hc_sentinel_spec *spec,
                                    char *err, size_t errlen)
{
    struct hc_sentinel **list = hc_engine_watchers(e);
    for (struct hc_sentinel *w = *list; w != NULL; w = w->next) {
        if (same_spec(w, spec)) {
            w->refs++;
            return w;
        }
    }
    struct hc_sentinel *w = watcher_new(e, spec, err, errlen);
    if (w == NULL)
        return NULL;
    w->next = *list;
    *list = w;
    for (size_t i = 0; i < w->nlinks; i++)
        link_connect(&w->links[i]);
    w->started = true;
    round_start(w);
    return w;
}

void hc_sentinel_release(struct hc_sentinel *w)
{
    if (w == NULL || --w->refs > 0)
        return;
    struct hc_sentinel **pp = hc_engine_watchers(w->e);
    while (*pp != w)
        pp = &(*pp)->next;
    *pp = w->next;
    watcher_free(w);
}

void hc_sentinel_free_all(struct hc_sentinel *list)
{
    while (list != NULL) {
        struct hc_sentinel *next = list->next;
        watcher_free(list);
        list = next;
    }
}

/* ---- nodes, for the gateway ------------------------------------------------------------- */

size_t hc_sentinel_nnodes(const struct hc_sentinel *w)
{
    return __atomic_load_n(&w->nnodes, __ATOMIC_ACQUIRE);
}

struct hc_sentinel_node *hc_sentinel_node_at(struct hc_sentinel *w, size_t i)
{
    return i < hc_sentinel_nnodes(w) ? &w->nodes[i] : NULL;
}

struct hc_sentinel_node *hc_sentinel_allowed_node(struct hc_sentinel *w, size_t i)
{
    return w->allow_list && i < w->nallowed ? &w->nodes[w->allowed_node[i]] : NULL;
}

const char *hc_sentinel_node_name(const struct hc_sentinel_node *n)
{
    return n->name;
}

const struct sockaddr *hc_sentinel_node_addr(const struct hc_sentinel_node *n, socklen_t *len)
{
    *len = n->addrlens[0];
    return (const struct sockaddr *)&n->addrs[0];
}

bool hc_sentinel_node_eligible(const struct hc_sentinel_node *n)
{
    const struct hc_sentinel *w = n->w;
    if (__atomic_load_n(&w->mode, __ATOMIC_ACQUIRE) & WF_FALLBACK)
        return true;
    int f = __atomic_load_n(&n->flags, __ATOMIC_ACQUIRE);
    return w->cfg.replica ? (f & NF_REPLICA) != 0 : (f & (NF_MASTER | NF_HELD)) == NF_MASTER;
}

bool hc_sentinel_node_named(const struct hc_sentinel_node *n)
{
    const struct hc_sentinel *w = n->w;
    if (__atomic_load_n(&w->mode, __ATOMIC_ACQUIRE) & WF_FALLBACK)
        return true;
    int f = __atomic_load_n(&n->flags, __ATOMIC_ACQUIRE);
    return (f & (w->cfg.replica ? NF_REPLICA : NF_MASTER)) != 0;
}

bool hc_sentinel_settling(const struct hc_sentinel *w)
{
    int m = __atomic_load_n(&w->mode, __ATOMIC_ACQUIRE);
    if (m & WF_FALLBACK)
        return false;
    if (w->cfg.replica)
        return !(m & WF_REPLICAS);
    return !(m & WF_DECIDED) || (m & WF_SETTLING);
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

/* ---- status --------------------------------------------------------------------------------- */

void hc_sentinel_status(const struct hc_sentinel *w, struct hc_sentinel_status *out)
{
    memset(out, 0, sizeof(*out));
    out->master_name = w->cfg.master_name;
    bool up = false;
    for (size_t i = 0; i < w->nlinks; i++)
        up |= w->links[i].up;
    out->state = w->mode & WF_FALLBACK     ? "fallback"
                 : !up                     ? "unreachable"
                 : w->candidate >= 0       ? "switching"
                 : holding(w)              ? "holding"
                 : !(w->mode & WF_DECIDED) ? "deciding"
                                           : "ok";
    out->master = w->master >= 0 ? w->nodes[w->master].name : NULL;
    out->epoch = w->epoch;
    out->named_by = w->named_by;
    out->answered = w->answered;
    out->quorum = w->quorum;
    out->nlinks = w->nlinks;
    out->switches = w->switches;
    out->last_switch_ms = w->last_switch_ms;
    out->last_switch_unix = w->last_switch_unix;
    snprintf(out->last_switch, sizeof(out->last_switch), "%s", w->last_switch);
    memcpy(out->events, w->events, sizeof(out->events));
    out->role_verify_failures = w->role_verify_failures;
    memcpy(out->refused, w->refused, sizeof(out->refused));
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

void hc_sentinel_node_status(const struct hc_sentinel_node *n, struct hc_sentinel_node_status *out)
{
    const struct hc_sentinel *w = n->w;
    memset(out, 0, sizeof(*out));
    out->named = hc_sentinel_node_named(n);
    out->eligible = hc_sentinel_node_eligible(n);
    out->named_by = out->named ? n->named_by : 0;
    out->epoch = w->epoch;
    if (out->eligible)
        return;
    const char *master = w->master >= 0 ? w->nodes[w->master].name : NULL;
    if (!(w->mode & WF_DECIDED))
        snprintf(out->veto, sizeof(out->veto), "no verdict from the sentinels yet");
    else if (w->cfg.replica && n->index == w->master)
        snprintf(out->veto, sizeof(out->veto), "the master, not a replica");
    else if (!w->cfg.replica && n->index == w->master)
        snprintf(out->veto, sizeof(out->veto),
                 "held: a failover is under way; no new connection until the sentinels agree");
    else if (n->verify != NULL)
        snprintf(out->veto, sizeof(out->veto), "named by the sentinels; its ROLE is being checked");
    else if (n->problem[0] != '\0')
        snprintf(out->veto, sizeof(out->veto), "%s", n->problem);
    else if (w->cfg.replica)
        snprintf(out->veto, sizeof(out->veto), "not a healthy replica of master %s",
                 master != NULL ? master : "(none)");
    else
        snprintf(out->veto, sizeof(out->veto),
                 "not the master: the sentinels name %s (epoch %" PRIu64 ")",
                 master != NULL ? master : "(none)", w->epoch);
}
