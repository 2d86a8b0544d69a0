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
#include "hc_sentinel_int.h"

/* ---- rounds ---------------------------------------------------------------------------- */

static int64_t poll_ms(const struct hc_sentinel *w)
{
    bool busy = holding(w) || w->candidate >= 0 || sn_verifying_master(w);
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
    /* The master in force as the sentinels named it: names compare to names. */
    const struct hc_sn_addr *cur = w->master >= 0 ? &w->nodes[w->master].named_as : NULL;
    struct hc_sn_verdict v;
    hc_sn_decide(w->answers, n, w->cfg.quorum, (int)w->nlinks, cur, w->epoch, &v);
    w->round_active = false;
    sn_apply(w, &v);
    if (w->round_again) {
        w->round_again = false;
        sn_round_start(w);
        return;
    }
    arm_ms(w->poll, poll_ms(w));
}

void sn_round_check(struct hc_sentinel *w)
{
    if (!w->round_active || w->asking)
        return;
    for (size_t i = 0; i < w->nlinks; i++)
        if (w->links[i].asked && w->links[i].pending > 0)
            return;
    round_finish(w);
}

void sn_round_start(struct hc_sentinel *w)
{
    if (w->round_active) {
        w->round_again = true;
        return;
    }
    w->round_active = true;
    evtimer_del(w->poll);
    w->asking = true; /* a link that fails while asked must not end the round yet */
    for (size_t i = 0; i < w->nlinks; i++) {
        struct link *l = &w->links[i];
        l->asked = false;
        if (l->cmd != NULL)
            sn_link_ask(l);
    }
    w->asking = false;
    sn_round_check(w);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sn_round_start(arg);
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
    for (size_t i = 0; w->links != NULL && i < w->nlinks; i++)
        sn_link_stop(&w->links[i]);
    for (size_t i = 0; w->nodes != NULL && i < w->nnodes; i++)
        sn_verify_drop(&w->nodes[i]);
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
    for (size_t i = 0; i < w->nlinks; i++)
        if (sn_link_init(&w->links[i], w, &w->cfg.addrs[i]) != 0)
            goto oom;
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
        sn_link_start(&w->links[i]);
    w->started = true;
    sn_round_start(w);
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
