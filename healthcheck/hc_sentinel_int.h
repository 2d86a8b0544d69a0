/* The Sentinel watcher's parts and what they share: the watcher itself
 * (hc_sentinel.c: its life, its rounds, what it shows), the verdict of a
 * round and the switch it may bring (hc_sentinel_verdict.c), and the links
 * to the sentinels (hc_sentinel_link.c). Control thread only, but for the
 * flags the workers read. Private to healthcheck/. */
#ifndef HC_SENTINEL_INT_H
#define HC_SENTINEL_INT_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "hc_dns.h"
#include "hc_redis.h"
#include "hc_sentinel.h"

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
/* Refused addresses remembered, so that each is logged and counted once. */
#define REFUSED_KEPT 16
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
    struct hc_sn_addr named_as; /* and how they wrote it */
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
    bool asking; /* round_start is sending the queries */
    struct event *poll;

    /* The failover under way: what first showed it, and when. */
    int64_t trigger_ms;
    char trigger[128];

    /* Reporting. */
    char problem[200];
    uint64_t switches, role_verify_failures, refused[HC_SR_COUNT], events[HC_SN_EV_COUNT];
    struct hc_sn_addr refused_addrs[REFUSED_KEPT];
    size_t nrefused;
    int64_t last_switch_ms, last_switch_unix;
    char last_switch[800];
};

static inline bool holding(const struct hc_sentinel *w)
{
    return w->master >= 0 && (w->nodes[w->master].flags & NF_HELD);
}

static inline void set_flags(int *p, int set, int clear)
{
    int v = __atomic_load_n(p, __ATOMIC_RELAXED);
    __atomic_store_n(p, (v | set) & ~clear, __ATOMIC_RELEASE);
}

static inline int64_t jitter(int64_t ms)
{
    return ms * (80 + rand() % 41) / 100;
}

static inline void arm_ms(struct event *ev, int64_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* hc_sentinel.c: rounds. */
void sn_round_start(struct hc_sentinel *w);
/* A link's answers are in (or it failed): the round may be complete. */
void sn_round_check(struct hc_sentinel *w);

/* hc_sentinel_verdict.c: the verdict of a round, and events. */
void sn_apply(struct hc_sentinel *w, const struct hc_sn_verdict *v);
/* An event about the master, from link l. */
void sn_event(struct hc_sentinel *w, struct link *l, const struct hc_sn_event *ev);
/* A node named as the master is being asked its ROLE. */
bool sn_verifying_master(const struct hc_sentinel *w);
/* Stops a ROLE check in flight (the watcher goes). */
void sn_verify_drop(struct hc_sentinel_node *n);

/* hc_sentinel_link.c: the links. */
/* Sets up link l of w for the sentinel at target; -1 when memory runs out. */
int sn_link_init(struct link *l, struct hc_sentinel *w, const struct api_target *target);
/* Resolves the sentinel (without blocking) and connects both links. */
void sn_link_start(struct link *l);
/* Asks the round's three queries; false when the link could not take them. */
bool sn_link_ask(struct link *l);
/* Closes everything of l (the watcher goes). */
void sn_link_stop(struct link *l);

#endif
