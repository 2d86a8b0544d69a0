/* Fuzz target: the Sentinel protocol (healthcheck/hc_sentinel_proto.h), fed
 * the way a sentinel feeds it.
 *
 * The input is what a sentinel sent on a link. hiredis's reader turns it into
 * replies, as the Redis link does; every reply goes through every reply
 * parser (get-master-addr-by-name, SENTINEL master and replicas, ROLE, a
 * pub/sub message). Replies taken three at a time make one sentinel's answer
 * of a round, and the answers make a verdict, under a quorum and an epoch in
 * force read from the first bytes. The input is also read as an event
 * (channel, a space, payload). Besides crashes and leaks it checks that a
 * refusal says why, that what is accepted is in range, and that a verdict
 * only names an address enough sentinels named. */
#include <stdbool.h>

#include "fuzz_util.h"
#include "hc_sentinel_proto.h"

#define MAX_ANSWERS 5

static void check_addr(const struct hc_sn_addr *a)
{
    size_t n = strnlen(a->host, sizeof(a->host));
    FUZZ_CHECK(n > 0 && n <= HC_SN_HOST_MAX);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK((unsigned char)a->host[i] > ' ' && (unsigned char)a->host[i] < 0x7f);
    FUZZ_CHECK(a->port > 0);
}

static void check_err(int rc, const char *err)
{
    FUZZ_CHECK(fuzz_terminated(err, 200));
    if (rc < 0)
        FUZZ_CHECK(err[0] != '\0');
}

/* Every parser over one reply; the parts of an answer it fills. */
static void parse_all(const redisReply *r, struct hc_sn_answer *a, int part)
{
    char err[200];
    struct hc_sn_addr addr;
    memset(err, 0, sizeof(err));
    int rc = hc_sn_parse_master_addr(r, &addr, err, sizeof(err));
    FUZZ_CHECK(rc >= -1 && rc <= 1);
    check_err(rc, err);
    if (rc == 1)
        check_addr(&addr);
    if (part == 0) {
        a->known = rc == 1;
        if (rc == 1)
            a->master = addr;
    }

    struct hc_sn_master m;
    memset(err, 0, sizeof(err));
    rc = hc_sn_parse_master(r, &m, err, sizeof(err));
    check_err(rc, err);
    if (rc == 0) {
        check_addr(&m.addr);
        FUZZ_CHECK(m.failover <= HC_SN_FO_UPDATE_CONFIG);
        if (part == 1) {
            a->epoch = m.config_epoch;
            a->flags = m.flags;
            a->failover = m.failover;
        }
    }

    struct hc_sn_replica reps[HC_SN_REPLICAS_MAX];
    size_t n = 0;
    memset(err, 0, sizeof(err));
    rc = hc_sn_parse_replicas(r, reps, HC_SN_REPLICAS_MAX, &n, err, sizeof(err));
    check_err(rc, err);
    FUZZ_CHECK(n <= HC_SN_REPLICAS_MAX);
    FUZZ_CHECK(rc == 0 || n == 0);
    for (size_t i = 0; i < n; i++)
        check_addr(&reps[i].addr);
    if (part == 2 && rc == 0) {
        memcpy(a->replicas, reps, n * sizeof(reps[0]));
        a->nreplicas = n;
    }

    struct hc_sn_role_reply role;
    memset(err, 0, sizeof(err));
    rc = hc_sn_parse_role(r, &role, err, sizeof(err));
    check_err(rc, err);
    if (rc == 0 && role.role == HC_SN_ROLE_SLAVE)
        check_addr(&role.master);

    struct hc_sn_event ev;
    memset(err, 0, sizeof(err));
    rc = hc_sn_parse_message(r, &ev, err, sizeof(err));
    FUZZ_CHECK(rc >= -1 && rc <= 1);
    check_err(rc, err);
    if (rc == 1)
        FUZZ_CHECK(ev.kind < HC_SN_EV_COUNT);
}

static void check_verdict(const struct hc_sn_answer *a, size_t n, int quorum,
                          const struct hc_sn_verdict *v)
{
    FUZZ_CHECK(v->answered == (int)n);
    if (v->kind != HC_SN_V_MASTER)
        return;
    FUZZ_CHECK(v->quorum >= 1);
    if (quorum > 0)
        FUZZ_CHECK(v->quorum == quorum);
    FUZZ_CHECK(v->agree >= v->quorum && v->agree <= (int)n);
    int named = 0;
    for (size_t i = 0; i < n; i++)
        named += a[i].known && hc_sn_addr_equal(&a[i].master, &v->master);
    FUZZ_CHECK(named == v->agree);
    FUZZ_CHECK(v->nreplicas <= HC_SN_REPLICAS_MAX);
    for (size_t i = 0; i < v->nreplicas; i++) {
        FUZZ_CHECK(!hc_sn_addr_equal(&v->replicas[i], &v->master));
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(!hc_sn_addr_equal(&v->replicas[i], &v->replicas[j]));
    }
    if (v->has_contender) {
        FUZZ_CHECK(v->contender_epoch > v->epoch);
        FUZZ_CHECK(!hc_sn_addr_equal(&v->contender, &v->master));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int quorum = data[0] % 4;
    uint64_t epoch = data[1] % 8;
    const uint8_t *in = data + 2;
    size_t n = size - 2;

    /* As an event: channel, then payload after the first space. */
    char *text = (char *)fuzz_copy(in, n);
    const char *sp = memchr(text, ' ', n);
    size_t chlen = sp != NULL ? (size_t)(sp - text) : n;
    struct hc_sn_event ev;
    int rc = hc_sn_parse_event(text, chlen, sp != NULL ? sp + 1 : text + n,
                               sp != NULL ? n - chlen - 1 : 0, &ev);
    FUZZ_CHECK(rc == 0 || rc == -1);
    FUZZ_CHECK(ev.kind < HC_SN_EV_COUNT);
    FUZZ_CHECK(fuzz_terminated(ev.master, sizeof(ev.master)));
    free(text);

    /* As replies. */
    redisReader *reader = redisReaderCreate();
    FUZZ_CHECK(reader != NULL);
    uint8_t *buf = fuzz_copy(in, n);
    if (redisReaderFeed(reader, (const char *)buf, n) != REDIS_OK) {
        free(buf);
        redisReaderFree(reader);
        return 0;
    }
    free(buf);
    struct hc_sn_answer *answers = calloc(MAX_ANSWERS, sizeof(*answers));
    FUZZ_CHECK(answers != NULL);
    size_t count = 0;
    for (int part = 0; count < MAX_ANSWERS;) {
        void *reply = NULL;
        if (redisReaderGetReply(reader, &reply) != REDIS_OK || reply == NULL)
            break;
        parse_all(reply, &answers[count], part);
        freeReplyObject(reply);
        if (++part == 3) {
            part = 0;
            count++;
        }
    }
    redisReaderFree(reader);
    struct hc_sn_verdict v;
    hc_sn_decide(answers, count, quorum, (int)count + 1, NULL, 0, &v);
    check_verdict(answers, count, quorum, &v);
    /* With the first answer's master in force at an epoch. */
    if (count > 0 && answers[0].known) {
        struct hc_sn_addr cur = answers[0].master;
        hc_sn_decide(answers, count, quorum, (int)count, &cur, epoch, &v);
        check_verdict(answers, count, quorum, &v);
    }
    free(answers);
    return 0;
}
