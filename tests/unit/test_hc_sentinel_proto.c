/* Unit tests for healthcheck/hc_sentinel_proto.c: the Sentinel replies and
 * events, read from the bytes a sentinel sends (through hiredis's reader, as
 * the link reads them), every malformed shape refused with a reason, and the
 * verdict of a round (quorum, epochs, a failover under way, replicas). All
 * pure. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "hc_sentinel_proto.h"

/* ---- helpers ------------------------------------------------------------------------ */

/* The reply that `resp` (RESP bytes) reads as; the test frees it. */
static redisReply *reply_of(const char *resp)
{
    redisReader *r = redisReaderCreate();
    assert_non_null(r);
    assert_int_equal(redisReaderFeed(r, resp, strlen(resp)), REDIS_OK);
    void *out = NULL;
    assert_int_equal(redisReaderGetReply(r, &out), REDIS_OK);
    assert_non_null(out);
    redisReaderFree(r);
    return out;
}

/* A flat map reply from "k1", "v1", ..., NULL. */
static redisReply *map_of(const char *first, ...)
{
    char buf[4096];
    const char *items[64];
    int n = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s != NULL && n < 64; s = va_arg(ap, const char *))
        items[n++] = s;
    va_end(ap);
    int len = snprintf(buf, sizeof(buf), "*%d\r\n", n);
    for (int i = 0; i < n; i++)
        len += snprintf(buf + len, sizeof(buf) - (size_t)len, "$%zu\r\n%s\r\n", strlen(items[i]),
                        items[i]);
    return reply_of(buf);
}

static struct hc_sn_addr addr(const char *host, uint16_t port)
{
    struct hc_sn_addr a;
    memset(&a, 0, sizeof(a));
    snprintf(a.host, sizeof(a.host), "%s", host);
    a.port = port;
    return a;
}

static struct hc_sn_answer answer(const char *host, uint16_t port, uint64_t epoch)
{
    struct hc_sn_answer a;
    memset(&a, 0, sizeof(a));
    a.known = true;
    a.master = addr(host, port);
    a.epoch = epoch;
    a.flags = HC_SN_F_MASTER;
    return a;
}

static void add_replica(struct hc_sn_answer *a, const char *host, uint16_t port, unsigned flags,
                        bool link_ok)
{
    struct hc_sn_replica *r = &a->replicas[a->nreplicas++];
    r->addr = addr(host, port);
    r->flags = flags;
    r->link_ok = link_ok;
}

/* ---- get-master-addr-by-name ------------------------------------------------------------ */

static void test_master_addr(void **state)
{
    (void)state;
    char err[200];
    struct hc_sn_addr a;
    redisReply *r = reply_of("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n");
    assert_int_equal(hc_sn_parse_master_addr(r, &a, err, sizeof(err)), 1);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 6379);
    freeReplyObject(r);

    r = reply_of("*2\r\n$3\r\n::1\r\n$5\r\n26380\r\n");
    assert_int_equal(hc_sn_parse_master_addr(r, &a, err, sizeof(err)), 1);
    char text[64];
    hc_sn_addr_format(&a, text, sizeof(text));
    assert_string_equal(text, "[::1]:26380");
    freeReplyObject(r);

    r = reply_of("*-1\r\n"); /* the master is unknown to this sentinel */
    assert_int_equal(hc_sn_parse_master_addr(r, &a, err, sizeof(err)), 0);
    freeReplyObject(r);
}

static void test_master_addr_refuses_what_is_not_an_address(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "-IDONTKNOW I don't know\r\n",
        "+OK\r\n",
        ":1\r\n",
        "*1\r\n$9\r\n127.0.0.1\r\n",
        "*3\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\n1\r\n",
        "*2\r\n$9\r\n127.0.0.1\r\n$5\r\n65536\r\n",
        "*2\r\n$9\r\n127.0.0.1\r\n$1\r\n0\r\n",
        "*2\r\n$9\r\n127.0.0.1\r\n$3\r\n6x9\r\n",
        "*2\r\n$0\r\n\r\n$4\r\n6379\r\n",
        "*2\r\n$7\r\nbad hos\r\n$4\r\n6379\r\n",
        "*2\r\n$4\r\na\x01"
        "bc\r\n$4\r\n6379\r\n",
        "*2\r\n*0\r\n$4\r\n6379\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[200] = "";
        struct hc_sn_addr a;
        redisReply *r = reply_of(bad[i]);
        assert_int_equal(hc_sn_parse_master_addr(r, &a, err, sizeof(err)), -1);
        assert_true(strlen(err) > 0);
        freeReplyObject(r);
    }
    char err[200];
    struct hc_sn_addr a;
    assert_int_equal(hc_sn_parse_master_addr(NULL, &a, err, sizeof(err)), -1);
    redisReply *r = reply_of("-ERR No such master\r\n");
    assert_int_equal(hc_sn_parse_master_addr(r, &a, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "ERR No such master"));
    freeReplyObject(r);
}

/* ---- SENTINEL master / replicas ---------------------------------------------------------- */

static void test_master_map(void **state)
{
    (void)state;
    char err[200] = "";
    struct hc_sn_master m;
    redisReply *r = map_of("name", "mymaster", "ip", "10.0.0.1", "port", "6379", "runid", "x",
                           "flags", "master,s_down,o_down,failover_in_progress", "failover-state",
                           "wait_promotion", "config-epoch", "18446744073709551615", NULL);
    assert_int_equal(hc_sn_parse_master(r, &m, err, sizeof(err)), 0);
    assert_string_equal(m.addr.host, "10.0.0.1");
    assert_int_equal(m.addr.port, 6379);
    assert_int_equal(m.flags, HC_SN_F_MASTER | HC_SN_F_S_DOWN | HC_SN_F_O_DOWN | HC_SN_F_FAILOVER);
    assert_int_equal(m.failover, HC_SN_FO_WAIT_PROMOTION);
    assert_true(hc_sn_failover_promoting(m.failover));
    assert_true(m.config_epoch == UINT64_MAX);
    freeReplyObject(r);

    /* Without the failover flag, a failover-state is not read. */
    r = map_of("ip", "10.0.0.1", "port", "6379", "flags", "master", "failover-state",
               "send_slaveof_noone", "config-epoch", "3", NULL);
    assert_int_equal(hc_sn_parse_master(r, &m, err, sizeof(err)), 0);
    assert_int_equal(m.failover, HC_SN_FO_NONE);
    freeReplyObject(r);

    /* Fields in any order; unknown flags ignored. */
    r = map_of("config-epoch", "7", "flags", "master,brand_new_flag", "port", "7000", "ip", "::1",
               NULL);
    assert_int_equal(hc_sn_parse_master(r, &m, err, sizeof(err)), 0);
    assert_int_equal(m.flags, HC_SN_F_MASTER);
    assert_int_equal(m.config_epoch, 7);
    freeReplyObject(r);
}

static void test_master_map_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "*3\r\n$2\r\nip\r\n$3\r\n::1\r\n$4\r\nport\r\n", /* odd length */
        "-ERR No such master with that name\r\n",
        "$5\r\nhello\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[200] = "";
        struct hc_sn_master m;
        redisReply *r = reply_of(bad[i]);
        assert_int_equal(hc_sn_parse_master(r, &m, err, sizeof(err)), -1);
        assert_true(strlen(err) > 0);
        freeReplyObject(r);
    }
    char err[200];
    struct hc_sn_master m;
    redisReply *r = map_of("ip", "10.0.0.1", "port", "6379", "flags", "master", NULL);
    assert_int_equal(hc_sn_parse_master(r, &m, err, sizeof(err)), -1); /* no epoch */
    freeReplyObject(r);
    r = map_of("ip", "10.0.0.1", "port", "6379", "config-epoch", "-1", NULL);
    assert_int_equal(hc_sn_parse_master(r, &m, err, sizeof(err)), -1);
    freeReplyObject(r);
    r = map_of("ip", "10.0.0.1", "config-epoch", "1", NULL);
    assert_int_equal(hc_sn_parse_master(r, &m, err, sizeof(err)), -1); /* no port */
    freeReplyObject(r);
}

static void test_replicas(void **state)
{
    (void)state;
    const char *resp = "*4\r\n"
                       /* healthy */
                       "*8\r\n$2\r\nip\r\n$8\r\n10.0.0.2\r\n$4\r\nport\r\n$4\r\n6379\r\n"
                       "$5\r\nflags\r\n$5\r\nslave\r\n"
                       "$18\r\nmaster-link-status\r\n$2\r\nok\r\n"
                       /* down */
                       "*8\r\n$2\r\nip\r\n$8\r\n10.0.0.3\r\n$4\r\nport\r\n$4\r\n6379\r\n"
                       "$5\r\nflags\r\n$12\r\ns_down,slave\r\n"
                       "$18\r\nmaster-link-status\r\n$2\r\nok\r\n"
                       /* malformed: skipped */
                       "$3\r\nxyz\r\n"
                       /* link down */
                       "*8\r\n$2\r\nip\r\n$8\r\n10.0.0.4\r\n$4\r\nport\r\n$4\r\n6380\r\n"
                       "$5\r\nflags\r\n$5\r\nslave\r\n"
                       "$18\r\nmaster-link-status\r\n$3\r\nerr\r\n";
    redisReply *r = reply_of(resp);
    struct hc_sn_replica reps[8];
    size_t n = 0;
    char err[200];
    assert_int_equal(hc_sn_parse_replicas(r, reps, 8, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 3);
    assert_true(hc_sn_replica_healthy(&reps[0]));
    assert_false(hc_sn_replica_healthy(&reps[1]));
    assert_false(hc_sn_replica_healthy(&reps[2]));
    assert_int_equal(reps[2].addr.port, 6380);
    /* At most max kept. */
    assert_int_equal(hc_sn_parse_replicas(r, reps, 1, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 1);
    freeReplyObject(r);
    r = reply_of("+OK\r\n");
    assert_int_equal(hc_sn_parse_replicas(r, reps, 8, &n, err, sizeof(err)), -1);
    freeReplyObject(r);
}

static void test_role(void **state)
{
    (void)state;
    char err[200];
    struct hc_sn_role_reply role;
    redisReply *r = reply_of("*3\r\n$6\r\nmaster\r\n:3129659\r\n*0\r\n");
    assert_int_equal(hc_sn_parse_role(r, &role, err, sizeof(err)), 0);
    assert_int_equal(role.role, HC_SN_ROLE_MASTER);
    freeReplyObject(r);
    r = reply_of(
        "*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:9999\r\n$9\r\nconnected\r\n:3167038\r\n");
    assert_int_equal(hc_sn_parse_role(r, &role, err, sizeof(err)), 0);
    assert_int_equal(role.role, HC_SN_ROLE_SLAVE);
    assert_int_equal(role.master.port, 9999);
    freeReplyObject(r);
    r = reply_of("*2\r\n$8\r\nsentinel\r\n*0\r\n");
    assert_int_equal(hc_sn_parse_role(r, &role, err, sizeof(err)), 0);
    assert_int_equal(role.role, HC_SN_ROLE_SENTINEL);
    freeReplyObject(r);
    static const char *const bad[] = {"*0\r\n", "*1\r\n$7\r\nleader?\r\n", "*1\r\n$5\r\nslave\r\n",
                                      "-NOAUTH Authentication required.\r\n", ":1\r\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = reply_of(bad[i]);
        assert_int_equal(hc_sn_parse_role(r, &role, err, sizeof(err)), -1);
        freeReplyObject(r);
    }
}

/* ---- events -------------------------------------------------------------------------------- */

static int event(const char *channel, const char *payload, struct hc_sn_event *ev)
{
    return hc_sn_parse_event(channel, strlen(channel), payload, strlen(payload), ev);
}

static void test_events(void **state)
{
    (void)state;
    struct hc_sn_event ev;
    assert_int_equal(event("+switch-master", "mymaster 10.0.0.1 6379 10.0.0.2 6380", &ev), 0);
    assert_int_equal(ev.kind, HC_SN_EV_SWITCH_MASTER);
    assert_string_equal(ev.master, "mymaster");
    assert_string_equal(ev.instance.host, "10.0.0.1");
    assert_int_equal(ev.to.port, 6380);
    assert_true(hc_sn_event_promoting(ev.kind));

    assert_int_equal(
        event("+selected-slave", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379", &ev),
        0);
    assert_int_equal(ev.kind, HC_SN_EV_SELECTED_SLAVE);
    assert_string_equal(ev.master, "mymaster");
    assert_int_equal(ev.instance.port, 6380);

    /* A master instance: the name is its own. */
    assert_int_equal(event("+failover-state-reconf-slaves", "master mymaster 10.0.0.1 6379", &ev),
                     0);
    assert_string_equal(ev.master, "mymaster");
    assert_int_equal(ev.instance.port, 6379);

    /* Free text after the instance, as +role-change and +odown add. */
    assert_int_equal(event("+role-change",
                           "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379 new "
                           "reported role is master",
                           &ev),
                     0);
    assert_string_equal(ev.master, "mymaster");
    assert_int_equal(event("+odown", "master mymaster 10.0.0.1 6379 #quorum 2/2", &ev), 0);
    assert_int_equal(ev.kind, HC_SN_EV_ODOWN);
    assert_string_equal(ev.master, "mymaster");

    /* About no master. */
    assert_int_equal(event("+tilt", "#tilt mode entered", &ev), 0);
    assert_int_equal(ev.kind, HC_SN_EV_TILT);
    assert_string_equal(ev.master, "");
    assert_int_equal(event("+something-new", "whatever it says", &ev), 0);
    assert_int_equal(ev.kind, HC_SN_EV_OTHER);
    assert_string_equal(hc_sn_event_name(ev.kind), "other");
    assert_string_equal(hc_sn_event_name(HC_SN_EV_SWITCH_MASTER), "+switch-master");
}

static void test_events_malformed(void **state)
{
    (void)state;
    struct hc_sn_event ev;
    assert_int_equal(event("+switch-master", "mymaster 10.0.0.1 6379", &ev), -1);
    assert_int_equal(event("+switch-master", "mymaster 10.0.0.1 6379 10.0.0.2 99999", &ev), -1);
    assert_int_equal(event("+sdown", "slave x 10.0.0.2", &ev), -1);
    assert_int_equal(event("+sdown", "slave x 10.0.0.2 port @ m 1 2", &ev), -1);
    /* A slave must name its master after "@". */
    assert_int_equal(event("+sdown", "slave x 10.0.0.2 6379", &ev), -1);
    assert_int_equal(event("+sdown", "", &ev), -1);
    assert_int_equal(ev.kind, HC_SN_EV_SDOWN);
}

static void test_messages(void **state)
{
    (void)state;
    char err[200];
    struct hc_sn_event ev;
    redisReply *r = reply_of("*3\r\n$7\r\nmessage\r\n$14\r\n+switch-master\r\n"
                             "$36\r\nmymaster 10.0.0.1 6379 10.0.0.2 6380\r\n");
    assert_int_equal(hc_sn_parse_message(r, &ev, err, sizeof(err)), 1);
    assert_int_equal(ev.kind, HC_SN_EV_SWITCH_MASTER);
    freeReplyObject(r);
    r = reply_of("*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n");
    assert_int_equal(hc_sn_parse_message(r, &ev, err, sizeof(err)), 0);
    freeReplyObject(r);
    r = reply_of("*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$6\r\n+sdown\r\n"
                 "$45\r\nslave a:1 10.0.0.3 6379 @ mymaster 10.0.0.1 1\r\n");
    assert_int_equal(hc_sn_parse_message(r, &ev, err, sizeof(err)), 1);
    assert_string_equal(ev.master, "mymaster");
    freeReplyObject(r);
    static const char *const bad[] = {
        ":1\r\n",
        "*2\r\n$7\r\nmessage\r\n$1\r\nx\r\n",
        "*3\r\n$4\r\npong\r\n$0\r\n\r\n$0\r\n\r\n",
        "*3\r\n$7\r\nmessage\r\n:1\r\n$1\r\nx\r\n",
        "*3\r\n$7\r\nmessage\r\n$6\r\n+sdown\r\n$3\r\nbad\r\n",
        "-NOPERM no permissions\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = reply_of(bad[i]);
        assert_int_equal(hc_sn_parse_message(r, &ev, err, sizeof(err)), -1);
        freeReplyObject(r);
    }
}

/* ---- the verdict --------------------------------------------------------------------------- */

static void test_decide_quorum(void **state)
{
    (void)state;
    struct hc_sn_verdict v;
    struct hc_sn_answer a[3] = {answer("10.0.0.1", 6379, 3), answer("10.0.0.1", 6379, 3),
                                answer("10.0.0.1", 6379, 3)};
    hc_sn_decide(a, 3, 0, 3, NULL, 0, &v);
    assert_int_equal(v.kind, HC_SN_V_MASTER);
    assert_int_equal(v.agree, 3);
    assert_int_equal(v.quorum, 2);
    assert_int_equal(v.epoch, 3);
    assert_false(v.promoting || v.has_contender || v.down);

    /* Nobody answered; nobody knows. */
    hc_sn_decide(a, 0, 0, 3, NULL, 0, &v);
    assert_int_equal(v.kind, HC_SN_V_NONE);
    a[0].known = a[1].known = a[2].known = false;
    hc_sn_decide(a, 3, 0, 3, NULL, 0, &v);
    assert_int_equal(v.kind, HC_SN_V_UNKNOWN);

    /* Three different answers: no quorum (a majority of 3 is 2). */
    a[0] = answer("10.0.0.1", 6379, 3);
    a[1] = answer("10.0.0.2", 6379, 3);
    a[2] = answer("10.0.0.3", 6379, 3);
    hc_sn_decide(a, 3, 0, 3, NULL, 0, &v);
    assert_int_equal(v.kind, HC_SN_V_SPLIT);
    /* With a quorum of 1 the highest epoch wins. */
    a[2].epoch = 4;
    hc_sn_decide(a, 3, 1, 3, NULL, 0, &v);
    assert_int_equal(v.kind, HC_SN_V_MASTER);
    assert_string_equal(v.master.host, "10.0.0.3");
    /* A configured quorum that the answers cannot reach. */
    a[1] = answer("10.0.0.1", 6379, 3);
    hc_sn_decide(a, 2, 3, 3, NULL, 0, &v);
    assert_int_equal(v.kind, HC_SN_V_SPLIT);
    /* Only one of three answered: a majority of those answering is 1. */
    hc_sn_decide(a, 1, 0, 3, NULL, 0, &v);
    assert_int_equal(v.kind, HC_SN_V_MASTER);
    assert_int_equal(v.quorum, 1);
}

static void test_decide_failover_under_way(void **state)
{
    (void)state;
    struct hc_sn_verdict v;
    struct hc_sn_addr cur = addr("10.0.0.1", 6379);
    /* The leader promotes: it still names the old master, flagged. */
    struct hc_sn_answer a[3] = {answer("10.0.0.1", 6379, 3), answer("10.0.0.1", 6379, 3),
                                answer("10.0.0.1", 6379, 3)};
    a[0].flags |= HC_SN_F_FAILOVER;
    a[0].failover = HC_SN_FO_SEND_SLAVEOF_NOONE;
    hc_sn_decide(a, 3, 0, 3, &cur, 3, &v);
    assert_int_equal(v.kind, HC_SN_V_MASTER);
    assert_string_equal(v.master.host, "10.0.0.1");
    assert_true(v.promoting);
    assert_false(v.has_contender);
    /* Electing only: nothing is promoted yet. */
    a[0].failover = HC_SN_FO_WAIT_START;
    hc_sn_decide(a, 3, 0, 3, &cur, 3, &v);
    assert_false(v.promoting);
    /* The promotion shows: the leader names the new one at the new epoch;
     * the others have not heard yet. */
    a[0] = answer("10.0.0.2", 6379, 4);
    a[0].flags |= HC_SN_F_FAILOVER;
    a[0].failover = HC_SN_FO_RECONF_SLAVES;
    hc_sn_decide(a, 3, 0, 3, &cur, 3, &v);
    assert_string_equal(v.master.host, "10.0.0.1");
    assert_false(v.promoting);
    assert_true(v.has_contender);
    assert_string_equal(v.contender.host, "10.0.0.2");
    assert_int_equal(v.contender_epoch, 4);
    /* One more hears of it: the quorum moves, at the newest epoch. */
    a[1] = answer("10.0.0.2", 6379, 4);
    hc_sn_decide(a, 3, 0, 3, &cur, 3, &v);
    assert_int_equal(v.kind, HC_SN_V_MASTER);
    assert_string_equal(v.master.host, "10.0.0.2");
    assert_int_equal(v.epoch, 4);
    assert_int_equal(v.agree, 2);
    assert_false(v.has_contender); /* the straggler is older, not newer */
}

static void test_decide_stale_and_down(void **state)
{
    (void)state;
    struct hc_sn_verdict v;
    struct hc_sn_addr cur = addr("10.0.0.2", 6379);
    /* Two of five stale sentinels name the old master at an older epoch: a
     * configuration older than the one in force needs a majority of all. */
    struct hc_sn_answer a[2] = {answer("10.0.0.1", 6379, 3), answer("10.0.0.1", 6379, 3)};
    hc_sn_decide(a, 2, 0, 5, &cur, 4, &v);
    assert_int_equal(v.kind, HC_SN_V_SPLIT);
    /* Three of five: they were reset, and win. */
    struct hc_sn_answer b[3] = {answer("10.0.0.1", 6379, 0), answer("10.0.0.1", 6379, 0),
                                answer("10.0.0.1", 6379, 0)};
    hc_sn_decide(b, 3, 0, 5, &cur, 4, &v);
    assert_int_equal(v.kind, HC_SN_V_MASTER);
    assert_string_equal(v.master.host, "10.0.0.1");
    /* Down by the quorum. */
    b[0].flags |= HC_SN_F_S_DOWN;
    b[1].flags |= HC_SN_F_O_DOWN | HC_SN_F_S_DOWN;
    hc_sn_decide(b, 3, 0, 5, NULL, 0, &v);
    assert_true(v.down);
    b[1].flags = HC_SN_F_MASTER;
    hc_sn_decide(b, 3, 0, 5, NULL, 0, &v);
    assert_false(v.down);
}

static void test_decide_replicas(void **state)
{
    (void)state;
    struct hc_sn_verdict v;
    struct hc_sn_answer a[3] = {answer("10.0.0.1", 6379, 3), answer("10.0.0.1", 6379, 3),
                                answer("10.0.0.9", 6379, 2)};
    for (int i = 0; i < 3; i++) {
        add_replica(&a[i], "10.0.0.2", 6379, HC_SN_F_SLAVE, true);
        add_replica(&a[i], "10.0.0.1", 6379, HC_SN_F_SLAVE, true); /* the master itself */
    }
    add_replica(&a[0], "10.0.0.3", 6379, HC_SN_F_SLAVE, true);
    add_replica(&a[1], "10.0.0.3", 6379, HC_SN_F_SLAVE | HC_SN_F_S_DOWN, true);
    add_replica(&a[0], "10.0.0.4", 6379, HC_SN_F_SLAVE, true);
    add_replica(&a[1], "10.0.0.4", 6379, HC_SN_F_SLAVE, true);
    add_replica(&a[2], "10.0.0.5", 6379, HC_SN_F_SLAVE, true); /* from a stale sentinel */
    hc_sn_decide(a, 3, 0, 3, NULL, 0, &v);
    assert_int_equal(v.kind, HC_SN_V_MASTER);
    assert_int_equal(v.nreplicas, 2);
    assert_string_equal(v.replicas[0].host, "10.0.0.2");
    assert_string_equal(v.replicas[1].host, "10.0.0.4");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_master_addr),
        cmocka_unit_test(test_master_addr_refuses_what_is_not_an_address),
        cmocka_unit_test(test_master_map),
        cmocka_unit_test(test_master_map_malformed),
        cmocka_unit_test(test_replicas),
        cmocka_unit_test(test_role),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_events_malformed),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_decide_quorum),
        cmocka_unit_test(test_decide_failover_under_way),
        cmocka_unit_test(test_decide_stale_and_down),
        cmocka_unit_test(test_decide_replicas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
