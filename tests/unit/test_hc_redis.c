/* Unit tests for healthcheck/hc_redis.c: the Redis link, against a server
 * the test plays itself on a loopback socket (the kernel completes the
 * connect, the test reads the commands and writes the replies it chooses,
 * and runs the link's event loop in between). Covers replies split byte by
 * byte, AUTH first and AUTH refused, deadlines, replies nobody asked for,
 * oversized and malformed replies, subscriptions, and a link freed from its
 * own callback. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hc_redis.h"

/* ---- the server the test plays ---------------------------------------------------------- */

struct fx {
    struct event_base *base;
    int lfd, cfd;
    struct sockaddr_in addr;
    struct hc_redis *r;
    /* What the link reported. */
    int replies, closes, messages;
    char last_reply[256];
    int last_type;
    char last_why[256];
    enum hc_redis_close close_kind;
    bool free_in_cb;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->base = event_base_new();
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    f->cfd = -1;
    f->addr.sin_family = AF_INET;
    f->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&f->addr, sizeof(f->addr)), 0);
    socklen_t len = sizeof(f->addr);
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&f->addr, &len), 0);
    assert_int_equal(listen(f->lfd, 8), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    hc_redis_free(f->r);
    if (f->cfd >= 0)
        close(f->cfd);
    close(f->lfd);
    event_base_free(f->base);
    free(f);
    return 0;
}

/* Runs the loop until cond holds or ms pass. */
#define RUN_UNTIL(f, cond, ms)                                                                     \
    do {                                                                                           \
        int64_t until_ = now_ms() + (ms);                                                          \
        while (!(cond) && now_ms() < until_) {                                                     \
            event_base_loop((f)->base, EVLOOP_NONBLOCK);                                           \
            usleep(1000);                                                                          \
        }                                                                                          \
    } while (0)

static void on_reply(void *arg, const redisReply *reply, const char *why)
{
    struct fx *f = arg;
    f->replies++;
    f->last_type = reply != NULL ? reply->type : -1;
    snprintf(f->last_reply, sizeof(f->last_reply), "%s",
             reply != NULL && reply->str != NULL ? reply->str : "");
    snprintf(f->last_why, sizeof(f->last_why), "%s", why != NULL ? why : "");
    if (f->free_in_cb) {
        hc_redis_free(f->r);
        f->r = NULL;
    }
}

static void on_message(void *arg, const redisReply *msg)
{
    struct fx *f = arg;
    (void)msg;
    f->messages++;
}

static void on_close(void *arg, enum hc_redis_close kind, const char *why)
{
    struct fx *f = arg;
    f->closes++;
    f->close_kind = kind;
    snprintf(f->last_why, sizeof(f->last_why), "%s", why);
}

static void link_up(struct fx *f, const char *password, int64_t timeout_ms, bool subscribed)
{
    struct hc_redis_opts o = {.timeout_ms = timeout_ms,
                              .password = password,
                              .on_message = subscribed ? on_message : NULL,
                              .on_close = on_close,
                              .arg = f};
    f->r = hc_redis_connect(f->base, (struct sockaddr *)&f->addr, sizeof(f->addr), &o);
    assert_non_null(f->r);
    /* connect() ran in hc_redis_connect; the kernel completes it. */
    f->cfd = accept(f->lfd, NULL, NULL);
    assert_true(f->cfd >= 0);
}

/* Reads exactly n bytes the link sent (bounded wait), running its loop. */
static void expect_sent(struct fx *f, const char *want)
{
    size_t n = strlen(want), got = 0;
    char buf[1024];
    assert_true(n < sizeof(buf));
    int64_t until = now_ms() + 2000;
    while (got < n && now_ms() < until) {
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        struct pollfd p = {.fd = f->cfd, .events = POLLIN};
        if (poll(&p, 1, 5) == 1) {
            ssize_t k = read(f->cfd, buf + got, n - got);
            assert_true(k > 0);
            got += (size_t)k;
        }
    }
    buf[got] = '\0';
    assert_string_equal(buf, want);
}

/* Writes bytes to the link, running its loop while the socket is full. */
static void serve(struct fx *f, const char *bytes, size_t len)
{
    size_t done = 0;
    int64_t until = now_ms() + 3000;
    while (done < len && now_ms() < until) {
        ssize_t k = send(f->cfd, bytes + done, len - done, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0)
            done += (size_t)k;
        else if (errno == EAGAIN || errno == EWOULDBLOCK)
            event_base_loop(f->base, EVLOOP_NONBLOCK);
        else
            break; /* the link closed: the test looks at why */
    }
}

#define SERVE(f, lit) serve((f), (lit), sizeof(lit) - 1)

static void command(struct fx *f, const char *a, const char *b)
{
    const char *argv[2] = {a, b};
    assert_int_equal(hc_redis_command(f->r, b != NULL ? 2 : 1, argv, 1, on_reply, f), 0);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_command_and_reply(void **state)
{
    struct fx *f = *state;
    link_up(f, NULL, 1000, false);
    command(f, "PING", NULL);
    expect_sent(f, "*1\r\n$4\r\nPING\r\n");
    SERVE(f, "+PONG\r\n");
    RUN_UNTIL(f, f->replies == 1, 1000);
    assert_int_equal(f->replies, 1);
    assert_int_equal(f->last_type, REDIS_REPLY_STATUS);
    assert_string_equal(f->last_reply, "PONG");
    assert_true(hc_redis_ready(f->r));
    /* A quiet link with nothing asked stays up past its timeout. */
    RUN_UNTIL(f, f->closes > 0, 1300);
    assert_int_equal(f->closes, 0);
}

static void test_reply_byte_by_byte(void **state)
{
    struct fx *f = *state;
    link_up(f, NULL, 2000, false);
    command(f, "GET", "k");
    expect_sent(f, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    static const char reply[] = "*2\r\n$5\r\nhello\r\n:42\r\n";
    for (size_t i = 0; i + 1 < sizeof(reply); i++) {
        serve(f, reply + i, 1);
        RUN_UNTIL(f, false, 2);
        assert_int_equal(f->replies, i + 2 < sizeof(reply) ? 0 : 1);
    }
    RUN_UNTIL(f, f->replies == 1, 1000);
    assert_int_equal(f->last_type, REDIS_REPLY_ARRAY);
    assert_int_equal(f->closes, 0);
}

static void test_auth_goes_first(void **state)
{
    struct fx *f = *state;
    link_up(f, "s3cret", 1000, false);
    command(f, "PING", NULL);
    expect_sent(f, "*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n*1\r\n$4\r\nPING\r\n");
    assert_false(hc_redis_ready(f->r));
    SERVE(f, "+OK\r\n+PONG\r\n");
    RUN_UNTIL(f, f->replies == 1, 1000);
    assert_string_equal(f->last_reply, "PONG");
    assert_true(hc_redis_ready(f->r));
}

static void test_auth_refused_closes_with_redis_words(void **state)
{
    struct fx *f = *state;
    link_up(f, "wrong", 1000, false);
    command(f, "PING", NULL);
    expect_sent(f, "*2\r\n$4\r\nAUTH\r\n$5\r\nwrong\r\n*1\r\n$4\r\nPING\r\n");
    SERVE(f, "-WRONGPASS invalid username-password pair\r\n");
    RUN_UNTIL(f, f->closes == 1, 1000);
    assert_int_equal(f->closes, 1);
    assert_int_equal(f->close_kind, HC_REDIS_AUTH);
    assert_non_null(strstr(f->last_why, "AUTH refused: WRONGPASS invalid"));
    assert_int_equal(f->replies, 1); /* the command learnt it too, before the owner */
    assert_int_equal(f->last_type, -1);
    const char *argv[1] = {"PING"};
    assert_int_equal(hc_redis_command(f->r, 1, argv, 1, on_reply, f), -1);
}

static void test_no_reply_in_time(void **state)
{
    struct fx *f = *state;
    link_up(f, NULL, 100, false);
    command(f, "PING", NULL);
    expect_sent(f, "*1\r\n$4\r\nPING\r\n");
    int64_t t0 = now_ms();
    RUN_UNTIL(f, f->closes == 1, 2000);
    assert_int_equal(f->close_kind, HC_REDIS_TIMEOUT);
    assert_string_equal(f->last_why, "no reply within 100 ms");
    assert_int_equal(f->replies, 1);
    assert_true(now_ms() - t0 < 1000);
}

static void test_unasked_reply_closes(void **state)
{
    struct fx *f = *state;
    link_up(f, NULL, 1000, false);
    SERVE(f, "+OK\r\n");
    RUN_UNTIL(f, f->closes == 1, 1000);
    assert_int_equal(f->close_kind, HC_REDIS_PROTOCOL);
    assert_string_equal(f->last_why, "a reply that no command asked for");
}

static void test_bounds_and_garbage(void **state)
{
    struct fx *f = *state;
    /* An array of more elements than a reply may have. */
    link_up(f, NULL, 1000, false);
    command(f, "SENTINEL", "replicas");
    SERVE(f, "*5000\r\n");
    RUN_UNTIL(f, f->closes == 1, 1000);
    assert_int_equal(f->close_kind, HC_REDIS_PROTOCOL);
    assert_non_null(strstr(f->last_why, "too many elements"));
    hc_redis_free(f->r);
    f->r = NULL;
    close(f->cfd);
    /* A bulk string larger than a reply may be. */
    f->closes = f->replies = 0;
    link_up(f, NULL, 5000, false);
    command(f, "GET", "k");
    SERVE(f, "$2000000\r\n");
    char *big = malloc(1100000);
    memset(big, 'x', 1100000);
    serve(f, big, 1100000);
    free(big);
    RUN_UNTIL(f, f->closes == 1, 3000);
    assert_int_equal(f->close_kind, HC_REDIS_PROTOCOL);
    assert_non_null(strstr(f->last_why, "larger than 1 MiB"));
    hc_redis_free(f->r);
    f->r = NULL;
    close(f->cfd);
    /* Not RESP at all. */
    f->closes = f->replies = 0;
    link_up(f, NULL, 1000, false);
    command(f, "PING", NULL);
    SERVE(f, "%\x07not resp\r\n");
    RUN_UNTIL(f, f->closes == 1, 1000);
    assert_int_equal(f->close_kind, HC_REDIS_PROTOCOL);
    assert_non_null(strstr(f->last_why, "malformed reply"));
    /* Nested deeper than hiredis reads. */
    hc_redis_free(f->r);
    f->r = NULL;
    close(f->cfd);
    f->closes = f->replies = 0;
    link_up(f, NULL, 1000, false);
    command(f, "PING", NULL);
    SERVE(f, "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n");
    RUN_UNTIL(f, f->closes == 1, 1000);
    assert_int_equal(f->close_kind, HC_REDIS_PROTOCOL);
}

static void test_subscription(void **state)
{
    struct fx *f = *state;
    link_up(f, NULL, 1000, true);
    const char *argv[3] = {"SUBSCRIBE", "a", "b"};
    assert_int_equal(hc_redis_command(f->r, 3, argv, 2, on_reply, f), 0);
    expect_sent(f, "*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n");
    SERVE(f, "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
             "*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
             "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n");
    RUN_UNTIL(f, f->messages == 1, 1000);
    assert_int_equal(f->replies, 1);
    assert_int_equal(f->messages, 1);
    /* Messages keep no deadline: a quiet subscription stays. */
    RUN_UNTIL(f, f->closes > 0, 1300);
    assert_int_equal(f->closes, 0);
}

static void test_subscription_refused(void **state)
{
    struct fx *f = *state;
    link_up(f, NULL, 1000, true);
    const char *argv[3] = {"SUBSCRIBE", "a", "b"};
    assert_int_equal(hc_redis_command(f->r, 3, argv, 2, on_reply, f), 0);
    SERVE(f, "-NOPERM this user has no permissions to access one of the channels\r\n");
    RUN_UNTIL(f, f->replies == 1, 1000);
    assert_int_equal(f->last_type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(f->last_reply, "NOPERM"));
    /* The command is over: the link is still good for the next. */
    command(f, "PING", NULL);
    SERVE(f, "+PONG\r\n");
    RUN_UNTIL(f, f->replies == 2, 1000);
    assert_string_equal(f->last_reply, "PONG");
    assert_int_equal(f->closes, 0);
}

static void test_freed_from_its_callback(void **state)
{
    struct fx *f = *state;
    link_up(f, NULL, 1000, false);
    f->free_in_cb = true;
    command(f, "PING", NULL);
    command(f, "PING", NULL);
    SERVE(f, "+PONG\r\n+PONG\r\n");
    RUN_UNTIL(f, f->replies >= 1, 1000);
    RUN_UNTIL(f, false, 20);
    assert_int_equal(f->replies, 1); /* nothing after the free */
    assert_int_equal(f->closes, 0);
    assert_null(f->r);
}

static void test_peer_closes_and_refuses(void **state)
{
    struct fx *f = *state;
    link_up(f, NULL, 1000, false);
    command(f, "PING", NULL);
    expect_sent(f, "*1\r\n$4\r\nPING\r\n");
    close(f->cfd);
    f->cfd = -1;
    RUN_UNTIL(f, f->closes == 1, 1000);
    assert_int_equal(f->close_kind, HC_REDIS_CLOSED);
    assert_int_equal(f->replies, 1);
    hc_redis_free(f->r);
    f->r = NULL;
    /* Nobody listens: the connect is refused. */
    f->closes = 0;
    struct sockaddr_in dead = f->addr;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    dead.sin_port = 0;
    assert_int_equal(bind(s, (struct sockaddr *)&dead, sizeof(dead)), 0);
    socklen_t len = sizeof(dead);
    assert_int_equal(getsockname(s, (struct sockaddr *)&dead, &len), 0);
    close(s); /* bound once, never listened: refused */
    struct hc_redis_opts o = {.timeout_ms = 1000, .on_close = on_close, .arg = f};
    f->r = hc_redis_connect(f->base, (struct sockaddr *)&dead, sizeof(dead), &o);
    assert_non_null(f->r);
    RUN_UNTIL(f, f->closes == 1, 1000);
    assert_int_equal(f->close_kind, HC_REDIS_CONNECT);
    assert_non_null(strstr(f->last_why, "refused"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_command_and_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_byte_by_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_goes_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth_refused_closes_with_redis_words, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_reply_in_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unasked_reply_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds_and_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscription, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscription_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_freed_from_its_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_closes_and_refuses, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
