/* The Redis Sentinel client protocol, pure: what sentinels answer and
 * publish, read into plain structs, and the verdict that a round of answers
 * supports. No I/O and no clock, so unit tests and a fuzzer drive it
 * directly. Replies are hiredis reply trees, as hiredis's reader (itself a
 * pure parser) builds them from the bytes a sentinel sent.
 *
 * Nothing here trusts a reply's shape: every element is type-checked, every
 * string bounded, and a reply that is not what the protocol says is an
 * error with a reason, never a crash. */
#ifndef HC_SENTINEL_PROTO_H
#define HC_SENTINEL_PROTO_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HC_SN_HOST_MAX 255    /* an IP address, or a name with announce-hostnames */
#define HC_SN_NAME_MAX 255    /* a master name */
#define HC_SN_REPLICAS_MAX 32 /* replicas of one master that a round keeps */

/* An instance address as a sentinel names it. */
struct hc_sn_addr {
    char host[HC_SN_HOST_MAX + 1];
    uint16_t port;
};

bool hc_sn_addr_equal(const struct hc_sn_addr *a, const struct hc_sn_addr *b);

/* "host:port", or "[v6]:port". */
void hc_sn_addr_format(const struct hc_sn_addr *a, char *buf, size_t len);

/* Flags of an instance, from the "flags" field of SENTINEL master/replicas. */
enum {
    HC_SN_F_S_DOWN = 1 << 0,
    HC_SN_F_O_DOWN = 1 << 1,
    HC_SN_F_DISCONNECTED = 1 << 2,
    HC_SN_F_FAILOVER = 1 << 3, /* failover_in_progress: this sentinel leads one */
    HC_SN_F_MASTER = 1 << 4,
    HC_SN_F_SLAVE = 1 << 5,
    HC_SN_F_PROMOTED = 1 << 6,
    HC_SN_F_MASTER_DOWN = 1 << 7,
};

unsigned hc_sn_parse_flags(const char *s, size_t len);

/* Where a sentinel leading a failover is ("failover-state"). */
enum hc_sn_failover {
    HC_SN_FO_NONE,
    HC_SN_FO_WAIT_START,
    HC_SN_FO_SELECT_SLAVE,
    HC_SN_FO_SEND_SLAVEOF_NOONE,
    HC_SN_FO_WAIT_PROMOTION,
    HC_SN_FO_RECONF_SLAVES,
    HC_SN_FO_UPDATE_CONFIG,
};

/* From choosing the replica until the promotion shows in the sentinel's
 * answers: the replica may be a master already while the sentinel still
 * names the old one. (From RECONF_SLAVES on, it names the promoted one.) */
static inline bool hc_sn_failover_promoting(enum hc_sn_failover f)
{
    return f >= HC_SN_FO_SELECT_SLAVE && f <= HC_SN_FO_WAIT_PROMOTION;
}

/* SENTINEL get-master-addr-by-name <name>: [ip, port]. Returns 1 with the
 * address, 0 for a nil reply (the sentinel does not know the master), -1
 * with a reason for an error reply or anything malformed. */
int hc_sn_parse_master_addr(const redisReply *r, struct hc_sn_addr *out, char *err, size_t errlen);

/* SENTINEL master <name>: a flat map of field names and values. */
struct hc_sn_master {
    struct hc_sn_addr addr;
    unsigned flags;
    uint64_t config_epoch;
    enum hc_sn_failover failover;
};

int hc_sn_parse_master(const redisReply *r, struct hc_sn_master *out, char *err, size_t errlen);

/* SENTINEL replicas <name>: a list of flat maps. */
struct hc_sn_replica {
    struct hc_sn_addr addr;
    unsigned flags;
    bool link_ok; /* master-link-status: ok */
};

/* Keeps the first `max` well-formed entries in out (*n of them); an entry
 * that is malformed is skipped. Returns 0, or -1 when the reply is not a
 * list at all. */
int hc_sn_parse_replicas(const redisReply *r, struct hc_sn_replica *out, size_t max, size_t *n,
                         char *err, size_t errlen);

/* A replica sentinel would let a reader use: listed as a slave, neither
 * subjectively nor objectively down, connected, and its link to the master
 * up. */
bool hc_sn_replica_healthy(const struct hc_sn_replica *r);

/* ROLE: ["master", offset, [...]] or ["slave", ip, port, state, offset] or
 * ["sentinel", [...]]. */
enum hc_sn_role {
    HC_SN_ROLE_MASTER,
    HC_SN_ROLE_SLAVE,
    HC_SN_ROLE_SENTINEL,
};

struct hc_sn_role_reply {
    enum hc_sn_role role;
    struct hc_sn_addr master; /* a slave's master */
};

int hc_sn_parse_role(const redisReply *r, struct hc_sn_role_reply *out, char *err, size_t errlen);

const char *hc_sn_role_name(enum hc_sn_role r);

/* ---- events ---------------------------------------------------------------------- */

/* What a sentinel publishes, on a channel named after the event. X-macro:
 * id, channel. The ones tcpgate subscribes to. */
#define HC_SN_EVENTS(X)                                                                            \
    X(SWITCH_MASTER, "+switch-master")                                                             \
    X(SELECTED_SLAVE, "+selected-slave")                                                           \
    X(SEND_SLAVEOF_NOONE, "+failover-state-send-slaveof-noone")                                    \
    X(WAIT_PROMOTION, "+failover-state-wait-promotion")                                            \
    X(PROMOTED_SLAVE, "+promoted-slave")                                                           \
    X(RECONF_SLAVES, "+failover-state-reconf-slaves")                                              \
    X(FAILOVER_END, "+failover-end")                                                               \
    X(FAILOVER_END_TIMEOUT, "+failover-end-for-timeout")                                           \
    X(ABORT_NOT_ELECTED, "-failover-abort-not-elected")                                            \
    X(ABORT_NO_GOOD_SLAVE, "-failover-abort-no-good-slave")                                        \
    X(ABORT_SLAVE_TIMEOUT, "-failover-abort-slave-timeout")                                        \
    X(TRY_FAILOVER, "+try-failover")                                                               \
    X(CONVERT_TO_SLAVE, "+convert-to-slave")                                                       \
    X(SLAVE, "+slave")                                                                             \
    X(SDOWN, "+sdown")                                                                             \
    X(SDOWN_CLEARED, "-sdown")                                                                     \
    X(ODOWN, "+odown")                                                                             \
    X(ODOWN_CLEARED, "-odown")                                                                     \
    X(RESET_MASTER, "+reset-master")                                                               \
    X(ROLE_CHANGE, "+role-change")                                                                 \
    X(REBOOT, "+reboot")                                                                           \
    X(TILT, "+tilt")                                                                               \
    X(TILT_CLEARED, "-tilt")

enum hc_sn_event_kind {
#define HC_SN_EVENT_ENUM(id, channel) HC_SN_EV_##id,
    HC_SN_EVENTS(HC_SN_EVENT_ENUM)
#undef HC_SN_EVENT_ENUM
        HC_SN_EV_OTHER, /* a channel tcpgate did not ask for */
    HC_SN_EV_COUNT,
};

/* The channel of an event kind ("other" for HC_SN_EV_OTHER). */
const char *hc_sn_event_name(enum hc_sn_event_kind k);

struct hc_sn_event {
    enum hc_sn_event_kind kind;
    /* The master the event is about: for an instance event, the instance's
     * own name when it is a master, else the name after "@". Empty for
     * events about no master (+tilt). */
    char master[HC_SN_NAME_MAX + 1];
    struct hc_sn_addr instance; /* the instance the event names, if any */
    struct hc_sn_addr to;       /* +switch-master: the new master */
};

/* A reply on a subscribed link. Returns 1 for a ["message", channel,
 * payload] with the event in out; 0 for a subscription's confirmation
 * (["subscribe", channel, count]); -1 with a reason for anything else. */
int hc_sn_parse_message(const redisReply *r, struct hc_sn_event *out, char *err, size_t errlen);

/* An event from its channel and payload. Returns 0, or -1 when the payload
 * is malformed for its kind (the kind is still set). */
int hc_sn_parse_event(const char *channel, size_t chlen, const char *payload, size_t len,
                      struct hc_sn_event *out);

/* Whether the event says that a replica of its master is being promoted, or
 * has been: from then on the old master may no longer be the only one. */
bool hc_sn_event_promoting(enum hc_sn_event_kind k);

/* ---- the verdict ----------------------------------------------------------------- */

/* One sentinel's answer in a round: get-master-addr-by-name, SENTINEL
 * master and SENTINEL replicas, asked together. */
struct hc_sn_answer {
    bool known; /* false: it answered nil, it does not know the master */
    struct hc_sn_addr master;
    uint64_t epoch;
    unsigned flags; /* the master's flags, as this sentinel sees it */
    enum hc_sn_failover failover;
    struct hc_sn_replica replicas[HC_SN_REPLICAS_MAX];
    size_t nreplicas;
};

enum hc_sn_verdict_kind {
    HC_SN_V_NONE,    /* nobody answered */
    HC_SN_V_UNKNOWN, /* every sentinel that answered does not know the master */
    HC_SN_V_SPLIT,   /* no address has the quorum */
    HC_SN_V_MASTER,  /* an address has the quorum at the highest such epoch */
};

struct hc_sn_verdict {
    enum hc_sn_verdict_kind kind;
    struct hc_sn_addr master;
    uint64_t epoch;
    int agree;    /* sentinels that named it */
    int quorum;   /* how many had to */
    int answered; /* sentinels that answered */
    /* The quorum sees the master down (s_down or o_down). */
    bool down;
    /* A failover is under way that the verdict does not show yet: a
     * sentinel leads one past choosing the replica to promote (promoting),
     * or names another address at a newer epoch than the verdict's (or than
     * current_epoch, when there is no verdict): the contender, at the newest
     * such epoch. */
    bool promoting;
    bool has_contender;
    struct hc_sn_addr contender;
    uint64_t contender_epoch;
    /* The master's healthy replicas, each listed as healthy by as many of
     * the sentinels naming the master as the quorum asks (or all of them,
     * when fewer named it). */
    struct hc_sn_addr replicas[HC_SN_REPLICAS_MAX];
    size_t nreplicas;
};

/* The verdict of a round. quorum 0 means a majority of those that answered;
 * nconfigured is how many sentinels are configured. An address at an epoch
 * older than current_epoch wins only with a majority of the configured
 * sentinels (they were reset, say), so a minority of stale sentinels cannot
 * take the master back. current may be NULL (no verdict yet). */
void hc_sn_decide(const struct hc_sn_answer *answers, size_t n, int quorum, int nconfigured,
                  const struct hc_sn_addr *current, uint64_t current_epoch,
                  struct hc_sn_verdict *out);

#endif
