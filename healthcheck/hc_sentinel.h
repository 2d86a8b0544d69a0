/* Sentinel watchers: which data node the Redis sentinels name as the master
 * of a master name, and which replicas they list as healthy, followed the
 * way the Sentinel client guidelines ask.
 *
 *   - Two links per sentinel (hc_redis): one for commands, one subscribed to
 *     the failover events. The command link asks, every poll_interval and
 *     at once on an event, get-master-addr-by-name, SENTINEL master and
 *     SENTINEL replicas together; the answers make a round.
 *   - A round's verdict (hc_sn_decide): the address a quorum names, at the
 *     highest config epoch. A new master is verified with ROLE on a fresh
 *     connection before it gets clients; replicas are verified the same way.
 *   - From the first event of a failover that promotes a replica until the
 *     new verdict, the old master is held: it gets no new connection, and
 *     its sessions stay until the switch closes them. So a demoted master
 *     that still says role:master never gets a client.
 *   - A sentinel that is down, hung or lying degrades nothing else: its links
 *     time out, the others decide, and each problem is logged once.
 *
 * A watcher runs on the control thread's loop (its engine's) and is kept
 * across reloads while its spec stays the same. The workers ask only
 * hc_sentinel_node_eligible(), which reads atomics. */
#ifndef HC_SENTINEL_H
#define HC_SENTINEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "api_def.h"
#include "hc_sentinel_proto.h"

struct hc_engine;
struct hc_sentinel;
struct hc_sentinel_node;

/* Distinct data nodes one watcher can know (the allow-list's, or those the
 * sentinels named). A watcher that fills up asks for a reload, which starts
 * a fresh one. */
#define HC_SENTINEL_MAX_NODES 64
#define HC_SENTINEL_NODE_ADDRS 4

/* An allow-listed node: a target of the definition. */
struct hc_sentinel_allowed {
    const char *name; /* host:port, as written */
    const struct sockaddr_storage *addrs;
    const socklen_t *addrlens;
    int naddrs;
};

struct hc_sentinel_spec {
    const char *api_id; /* the definition it serves: each has its own watcher */
    const struct api_sentinel *cfg;
    /* NULL (and 0): any address the sentinels agree on may be used. */
    const struct hc_sentinel_allowed *allowed;
    size_t nallowed;
};

/* The watcher for spec: one that runs already with exactly this spec (its
 * state, links and history kept), with one more reference, or a new one,
 * whose first round starts at once. NULL with a reason on error. Control
 * thread. */
struct hc_sentinel *hc_sentinel_get(struct hc_engine *e, const struct hc_sentinel_spec *spec,
                                    char *err, size_t errlen) __attribute__((warn_unused_result));

/* Drops a reference; the last stops the watcher and closes its links. */
void hc_sentinel_release(struct hc_sentinel *w);

/* Nodes. With an allow-list, node i is allowed[i] of the spec (entries with
 * the same name share one); without, nodes are added as the sentinels name
 * them, and never removed while the watcher runs, so a node pointer stays
 * valid for the watcher's life. */
size_t hc_sentinel_nnodes(const struct hc_sentinel *w); /* any thread */
struct hc_sentinel_node *hc_sentinel_node_at(struct hc_sentinel *w, size_t i);
/* allow-list only: the node of allowed[i]. */
struct hc_sentinel_node *hc_sentinel_allowed_node(struct hc_sentinel *w, size_t i);

const char *hc_sentinel_node_name(const struct hc_sentinel_node *n);
/* The address the sentinels named it by (dynamic nodes). */
const struct sockaddr *hc_sentinel_node_addr(const struct hc_sentinel_node *n, socklen_t *len);

/* Lock-free; any thread. Whether a node may take a new connection: it is the
 * master (and not held), or for a role "replica" watcher a healthy replica;
 * or the sentinels are unreachable and on_unreachable is "checks". */
bool hc_sentinel_node_eligible(const struct hc_sentinel_node *n);

/* Lock-free. Whether the sentinels still name the node for the watcher's
 * role (a held master still is): a session to a node that is no longer
 * named is closed, unless on_marked_down is "keep". */
bool hc_sentinel_node_named(const struct hc_sentinel_node *n);

/* Lock-free. Whether a new connection should wait for a verdict: none has
 * been reached yet, or the master is held in a failover. */
bool hc_sentinel_settling(const struct hc_sentinel *w);

/* ---- what the admin API and metrics show (control thread) --------------------------- */

/* Query failures, by reason. */
#define HC_SENTINEL_FAILURES(X)                                                                    \
    X(connect, "the connect failed")                                                               \
    X(timeout, "no answer in time")                                                                \
    X(auth, "AUTH was refused")                                                                    \
    X(error, "an error reply")                                                                     \
    X(protocol, "a malformed reply")                                                               \
    X(closed, "the sentinel closed the link")

enum hc_sentinel_failure {
#define HC_SF_ENUM(name, desc) HC_SF_##name,
    HC_SENTINEL_FAILURES(HC_SF_ENUM)
#undef HC_SF_ENUM
        HC_SF_COUNT,
};

/* Addresses the sentinels named that were not used, by reason. */
#define HC_SENTINEL_REFUSALS(X)                                                                    \
    X(unlisted, "not among the definition's targets")                                              \
    X(capacity, "more distinct nodes than a watcher keeps")                                        \
    X(unresolved, "a name that did not resolve")

enum hc_sentinel_refusal {
#define HC_SR_ENUM(name, desc) HC_SR_##name,
    HC_SENTINEL_REFUSALS(HC_SR_ENUM)
#undef HC_SR_ENUM
        HC_SR_COUNT,
};

struct hc_sentinel_link_status {
    const char *name; /* host:port as configured */
    bool up;          /* answered its last queries */
    bool subscribed;  /* gets the events; false: polled only */
    const char *problem;
    uint64_t failures[HC_SF_COUNT];
};

struct hc_sentinel_status {
    const char *master_name;
    const char *state;  /* "deciding", "ok", "holding", "switching", "unreachable", "fallback" */
    const char *master; /* NULL: no verdict */
    uint64_t epoch;
    int named_by, answered, quorum;
    size_t nlinks;
    uint64_t switches;
    int64_t last_switch_ms; /* first event or differing answer -> commit; -1: none yet */
    int64_t last_switch_unix;
    char last_switch[800]; /* its log line */
    uint64_t events[HC_SN_EV_COUNT];
    uint64_t role_verify_failures;
    uint64_t refused[HC_SR_COUNT];
};

void hc_sentinel_status(const struct hc_sentinel *w, struct hc_sentinel_status *out);
void hc_sentinel_link(const struct hc_sentinel *w, size_t i, struct hc_sentinel_link_status *out);

/* A node as the sentinels see it, for the watcher's role: whether they name
 * it, how many, at which epoch, and why it is vetoed ("" when eligible). */
struct hc_sentinel_node_status {
    bool named;
    bool eligible;
    int named_by;
    uint64_t epoch;
    char veto[400];
};

void hc_sentinel_node_status(const struct hc_sentinel_node *n, struct hc_sentinel_node_status *out);

#endif
