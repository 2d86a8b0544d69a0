#include "hc_sentinel_proto.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

bool hc_sn_addr_equal(const struct hc_sn_addr *a, const struct hc_sn_addr *b)
{
    return a->port == b->port && strcasecmp(a->host, b->host) == 0;
}

void hc_sn_addr_format(const struct hc_sn_addr *a, char *buf, size_t len)
{
    if (strchr(a->host, ':') != NULL)
        snprintf(buf, len, "[%s]:%u", a->host, (unsigned)a->port);
    else
        snprintf(buf, len, "%s:%u", a->host, (unsigned)a->port);
}

/* ---- reply pieces ------------------------------------------------------------------ */

static bool is_str(const redisReply *r)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static bool str_is(const redisReply *r, const char *s)
{
    size_t n = strlen(s);
    return is_str(r) && r->len == n && strncasecmp(r->str, s, n) == 0;
}

/* An error reply's text, for the reason. */
static int error_reply(const redisReply *r, const char *what, char *err, size_t errlen)
{
    if (r == NULL) {
        snprintf(err, errlen, "%s: no reply", what);
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        int n = r->len > 120 ? 120 : (int)r->len;
        snprintf(err, errlen, "%s: %.*s", what, n, r->str);
        return -1;
    }
    return 0;
}

/* A host as sentinel writes it: an address or a name, printable, no
 * spaces, bounded. */
static int copy_host(const char *s, size_t len, char *out)
{
    if (len == 0 || len > HC_SN_HOST_MAX)
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || c == '[' || c == ']' || c == '/' || c == '@')
            return -1;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

/* A decimal number in [min, max], the whole string. */
static int parse_uint(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    if (len == 0 || len > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int parse_port(const redisReply *r, uint16_t *out)
{
    uint64_t v = 0;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER) {
        if (r->integer < 1 || r->integer > 65535)
            return -1;
        *out = (uint16_t)r->integer;
        return 0;
    }
    if (!is_str(r) || parse_uint(r->str, r->len, 65535, &v) != 0 || v == 0)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

int hc_sn_parse_master_addr(const redisReply *r, struct hc_sn_addr *out, char *err, size_t errlen)
{
    if (error_reply(r, "get-master-addr-by-name", err, errlen) != 0)
        return -1;
    if (r->type == REDIS_REPLY_NIL)
        return 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || !is_str(r->element[0]) ||
        copy_host(r->element[0]->str, r->element[0]->len, out->host) != 0 ||
        parse_port(r->element[1], &out->port) != 0) {
        snprintf(err, errlen, "get-master-addr-by-name: not an [ip, port] reply");
        return -1;
    }
    return 1;
}

unsigned hc_sn_parse_flags(const char *s, size_t len)
{
    static const struct {
        const char *name;
        unsigned flag;
    } names[] = {
        {"s_down", HC_SN_F_S_DOWN},
        {"o_down", HC_SN_F_O_DOWN},
        {"disconnected", HC_SN_F_DISCONNECTED},
        {"failover_in_progress", HC_SN_F_FAILOVER},
        {"master", HC_SN_F_MASTER},
        {"slave", HC_SN_F_SLAVE},
        {"promoted", HC_SN_F_PROMOTED},
        {"master_down", HC_SN_F_MASTER_DOWN},
    };
    unsigned flags = 0;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && s[j] != ',')
            j++;
        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++)
            if (strlen(names[k].name) == j - i && memcmp(names[k].name, s + i, j - i) == 0)
                flags |= names[k].flag;
        i = j + 1;
    }
    return flags;
}

static enum hc_sn_failover parse_failover(const redisReply *v)
{
    static const char *const states[] = {
        "none",           "wait_start",    "select_slave",  "send_slaveof_noone",
        "wait_promotion", "reconf_slaves", "update_config",
    };
    for (size_t i = 1; i < sizeof(states) / sizeof(states[0]); i++)
        if (str_is(v, states[i]))
            return (enum hc_sn_failover)i;
    return HC_SN_FO_NONE;
}

/* The value of a field of a flat map ([k1, v1, k2, v2, ...]), or NULL. */
static const redisReply *map_get(const redisReply *r, const char *key)
{
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (str_is(r->element[i], key))
            return r->element[i + 1];
    return NULL;
}

static bool is_map(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements % 2 == 0;
}

/* ip and port of a flat map. */
static int map_addr(const redisReply *r, struct hc_sn_addr *out)
{
    const redisReply *ip = map_get(r, "ip"), *port = map_get(r, "port");
    if (!is_str(ip) || copy_host(ip->str, ip->len, out->host) != 0 || parse_port(port, &out->port))
        return -1;
    return 0;
}

int hc_sn_parse_master(const redisReply *r, struct hc_sn_master *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (error_reply(r, "SENTINEL master", err, errlen) != 0)
        return -1;
    if (!is_map(r) || map_addr(r, &out->addr) != 0) {
        snprintf(err, errlen, "SENTINEL master: not a map with ip and port");
        return -1;
    }
    const redisReply *flags = map_get(r, "flags"), *epoch = map_get(r, "config-epoch");
    if (is_str(flags))
        out->flags = hc_sn_parse_flags(flags->str, flags->len);
    if (!is_str(epoch) || parse_uint(epoch->str, epoch->len, UINT64_MAX, &out->config_epoch)) {
        snprintf(err, errlen, "SENTINEL master: no config-epoch");
        return -1;
    }
    const redisReply *fo = map_get(r, "failover-state");
    if ((out->flags & HC_SN_F_FAILOVER) && fo != NULL)
        out->failover = parse_failover(fo);
    return 0;
}

int hc_sn_parse_replicas(const redisReply *r, struct hc_sn_replica *out, size_t max, size_t *n,
                         char *err, size_t errlen)
{
    *n = 0;
    if (error_reply(r, "SENTINEL replicas", err, errlen) != 0)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "SENTINEL replicas: not a list");
        return -1;
    }
    for (size_t i = 0; i < r->elements && *n < max; i++) {
        const redisReply *e = r->element[i];
        struct hc_sn_replica *rep = &out[*n];
        memset(rep, 0, sizeof(*rep));
        if (!is_map(e) || map_addr(e, &rep->addr) != 0)
            continue;
        const redisReply *flags = map_get(e, "flags"), *link = map_get(e, "master-link-status");
        if (is_str(flags))
            rep->flags = hc_sn_parse_flags(flags->str, flags->len);
        rep->link_ok = str_is(link, "ok");
        (*n)++;
    }
    return 0;
}

bool hc_sn_replica_healthy(const struct hc_sn_replica *r)
{
    return (r->flags & HC_SN_F_SLAVE) &&
           !(r->flags & (HC_SN_F_S_DOWN | HC_SN_F_O_DOWN | HC_SN_F_DISCONNECTED)) && r->link_ok;
}

int hc_sn_parse_role(const redisReply *r, struct hc_sn_role_reply *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (error_reply(r, "ROLE", err, errlen) != 0)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || !is_str(r->element[0])) {
        snprintf(err, errlen, "ROLE: not a role reply");
        return -1;
    }
    const redisReply *kind = r->element[0];
    if (str_is(kind, "master")) {
        out->role = HC_SN_ROLE_MASTER;
        return 0;
    }
    if (str_is(kind, "sentinel")) {
        out->role = HC_SN_ROLE_SENTINEL;
        return 0;
    }
    if (str_is(kind, "slave") && r->elements >= 3 && is_str(r->element[1]) &&
        copy_host(r->element[1]->str, r->element[1]->len, out->master.host) == 0 &&
        parse_port(r->element[2], &out->master.port) == 0) {
        out->role = HC_SN_ROLE_SLAVE;
        return 0;
    }
    snprintf(err, errlen, "ROLE: unknown role \"%.*s\"", kind->len > 32 ? 32 : (int)kind->len,
             kind->str);
    return -1;
}

const char *hc_sn_role_name(enum hc_sn_role r)
{
    return r == HC_SN_ROLE_MASTER ? "master" : r == HC_SN_ROLE_SLAVE ? "slave" : "sentinel";
}

/* ---- events ------------------------------------------------------------------------ */

static const char *const event_names[] = {
#define HC_SN_EVENT_NAME(id, channel) channel,
    HC_SN_EVENTS(HC_SN_EVENT_NAME)
#undef HC_SN_EVENT_NAME
        "other",
};

const char *hc_sn_event_name(enum hc_sn_event_kind k)
{
    return k < HC_SN_EV_COUNT ? event_names[k] : "other";
}

bool hc_sn_event_promoting(enum hc_sn_event_kind k)
{
    return k == HC_SN_EV_SELECTED_SLAVE || k == HC_SN_EV_SEND_SLAVEOF_NOONE ||
           k == HC_SN_EV_WAIT_PROMOTION || k == HC_SN_EV_PROMOTED_SLAVE ||
           k == HC_SN_EV_RECONF_SLAVES || k == HC_SN_EV_SWITCH_MASTER;
}

/* Splits a payload into its first `max` space-separated words (an event may
 * add free text after its instance, as +role-change does). */
static size_t split_words(const char *s, size_t len, const char **w, size_t *wl, size_t max)
{
    size_t n = 0, i = 0;
    while (i < len && n < max) {
        while (i < len && s[i] == ' ')
            i++;
        if (i >= len)
            break;
        size_t j = i;
        while (j < len && s[j] != ' ')
            j++;
        w[n] = s + i;
        wl[n] = j - i;
        n++;
        i = j;
    }
    return n;
}

static int word_addr(const char *host, size_t hl, const char *port, size_t pl,
                     struct hc_sn_addr *out)
{
    uint64_t p;
    if (copy_host(host, hl, out->host) != 0 || parse_uint(port, pl, 65535, &p) != 0 || p == 0)
        return -1;
    out->port = (uint16_t)p;
    return 0;
}

static int copy_name(const char *s, size_t len, char *out)
{
    if (len == 0 || len > HC_SN_NAME_MAX || memchr(s, '\0', len) != NULL)
        return -1;
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

int hc_sn_parse_event(const char *channel, size_t chlen, const char *payload, size_t len,
                      struct hc_sn_event *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = HC_SN_EV_OTHER;
    for (int k = 0; k < HC_SN_EV_OTHER; k++) {
        if (strlen(event_names[k]) == chlen && memcmp(event_names[k], channel, chlen) == 0) {
            out->kind = (enum hc_sn_event_kind)k;
            break;
        }
    }
    if (out->kind == HC_SN_EV_TILT || out->kind == HC_SN_EV_TILT_CLEARED ||
        out->kind == HC_SN_EV_OTHER)
        return 0; /* about no master */
    const char *w[8];
    size_t wl[8];
    size_t n = split_words(payload, len, w, wl, 8);
    if (out->kind == HC_SN_EV_SWITCH_MASTER) {
        /* <name> <old-ip> <old-port> <new-ip> <new-port> */
        if (n < 5 || copy_name(w[0], wl[0], out->master) != 0 ||
            word_addr(w[1], wl[1], w[2], wl[2], &out->instance) != 0 ||
            word_addr(w[3], wl[3], w[4], wl[4], &out->to) != 0)
            return -1;
        return 0;
    }
    /* <type> <name> <ip> <port> [@ <master-name> <master-ip> <master-port>] [text] */
    if (n < 4 || word_addr(w[2], wl[2], w[3], wl[3], &out->instance) != 0)
        return -1;
    if (n == 8 && wl[4] == 1 && w[4][0] == '@')
        return copy_name(w[5], wl[5], out->master);
    if (wl[0] != 6 || memcmp(w[0], "master", 6) != 0)
        return -1; /* only a master names no master after "@" */
    return copy_name(w[1], wl[1], out->master);
}

int hc_sn_parse_message(const redisReply *r, struct hc_sn_event *out, char *err, size_t errlen)
{
    if (error_reply(r, "subscription", err, errlen) != 0)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || !is_str(r->element[0])) {
        snprintf(err, errlen, "subscription: not a pub/sub message");
        return -1;
    }
    if (str_is(r->element[0], "subscribe") || str_is(r->element[0], "psubscribe"))
        return 0;
    const redisReply *ch = r->element[1], *payload = r->element[2];
    if (str_is(r->element[0], "pmessage") && r->elements == 4) {
        ch = r->element[2];
        payload = r->element[3];
    } else if (!str_is(r->element[0], "message") || r->elements != 3) {
        snprintf(err, errlen, "subscription: not a pub/sub message");
        return -1;
    }
    if (!is_str(ch) || !is_str(payload)) {
        snprintf(err, errlen, "subscription: a message without a channel or payload");
        return -1;
    }
    if (hc_sn_parse_event(ch->str, ch->len, payload->str, payload->len, out) != 0) {
        snprintf(err, errlen, "event %s: malformed payload", hc_sn_event_name(out->kind));
        return -1;
    }
    return 1;
}

/* ---- the verdict -------------------------------------------------------------------- */

void hc_sn_decide(const struct hc_sn_answer *answers, size_t n, int quorum, int nconfigured,
                  const struct hc_sn_addr *current, uint64_t current_epoch,
                  struct hc_sn_verdict *out)
{
    memset(out, 0, sizeof(*out));
    out->answered = (int)n;
    if (n == 0) {
        out->kind = HC_SN_V_NONE;
        return;
    }
    out->quorum = quorum > 0 ? quorum : (int)n / 2 + 1;
    size_t known = 0;
    for (size_t i = 0; i < n; i++)
        known += answers[i].known;
    if (known == 0) {
        out->kind = HC_SN_V_UNKNOWN;
        return;
    }
    /* Each distinct address: how many name it, at which highest epoch. */
    const struct hc_sn_answer *best = NULL;
    int best_agree = 0;
    uint64_t best_epoch = 0;
    for (size_t i = 0; i < n; i++) {
        const struct hc_sn_answer *a = &answers[i];
        if (!a->known)
            continue;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = answers[j].known && hc_sn_addr_equal(&answers[j].master, &a->master);
        if (seen)
            continue;
        int agree = 0;
        uint64_t epoch = 0;
        for (size_t j = i; j < n; j++) {
            if (answers[j].known && hc_sn_addr_equal(&answers[j].master, &a->master)) {
                agree++;
                if (answers[j].epoch > epoch)
                    epoch = answers[j].epoch;
            }
        }
        if (agree < out->quorum)
            continue;
        /* Stale: an older configuration than the one in force, which only a
         * majority of all the sentinels may bring back. */
        if (current != NULL && epoch < current_epoch && agree <= nconfigured / 2)
            continue;
        bool better = best == NULL || epoch > best_epoch ||
                      (epoch == best_epoch && agree > best_agree) ||
                      (epoch == best_epoch && agree == best_agree && current != NULL &&
                       hc_sn_addr_equal(&a->master, current));
        if (better) {
            best = a;
            best_agree = agree;
            best_epoch = epoch;
        }
    }
    /* A failover the verdict does not show yet holds the current master. */
    uint64_t ref_epoch = best != NULL ? best_epoch : current_epoch;
    const struct hc_sn_addr *ref = best != NULL ? &best->master : current;
    for (size_t i = 0; i < n; i++) {
        const struct hc_sn_answer *a = &answers[i];
        if ((a->flags & HC_SN_F_FAILOVER) && hc_sn_failover_promoting(a->failover))
            out->promoting = true;
        if (!a->known || ref == NULL || a->epoch <= ref_epoch || hc_sn_addr_equal(&a->master, ref))
            continue;
        if (!out->has_contender || a->epoch > out->contender_epoch) {
            out->has_contender = true;
            out->contender = a->master;
            out->contender_epoch = a->epoch;
        }
    }
    if (best == NULL) {
        out->kind = HC_SN_V_SPLIT;
        return;
    }
    out->kind = HC_SN_V_MASTER;
    out->master = best->master;
    out->epoch = best_epoch;
    out->agree = best_agree;
    int down = 0;
    for (size_t i = 0; i < n; i++)
        if (answers[i].known && hc_sn_addr_equal(&answers[i].master, &best->master) &&
            (answers[i].flags & (HC_SN_F_S_DOWN | HC_SN_F_O_DOWN)))
            down++;
    out->down = down >= out->quorum;

    /* Replicas: those the sentinels that name the master list as healthy. */
    int need = out->quorum < best_agree ? out->quorum : best_agree;
    for (size_t i = 0; i < n; i++) {
        const struct hc_sn_answer *a = &answers[i];
        if (!a->known || !hc_sn_addr_equal(&a->master, &best->master))
            continue;
        for (size_t k = 0; k < a->nreplicas; k++) {
            const struct hc_sn_addr *r = &a->replicas[k].addr;
            if (!hc_sn_replica_healthy(&a->replicas[k]) || hc_sn_addr_equal(r, &best->master))
                continue;
            bool dup = false;
            for (size_t m = 0; m < out->nreplicas && !dup; m++)
                dup = hc_sn_addr_equal(&out->replicas[m], r);
            if (dup || out->nreplicas == HC_SN_REPLICAS_MAX)
                continue;
            int listed = 0;
            for (size_t j = 0; j < n; j++) {
                const struct hc_sn_answer *b = &answers[j];
                if (!b->known || !hc_sn_addr_equal(&b->master, &best->master))
                    continue;
                for (size_t q = 0; q < b->nreplicas; q++)
                    if (hc_sn_replica_healthy(&b->replicas[q]) &&
                        hc_sn_addr_equal(&b->replicas[q].addr, r)) {
                        listed++;
                        break;
                    }
            }
            if (listed >= need)
                out->replicas[out->nreplicas++] = *r;
        }
    }
}
