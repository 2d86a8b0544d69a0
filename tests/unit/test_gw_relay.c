/* Unit tests for gateway/gw_relay.c: the plain-socket relay, between real
 * loopback TCP connections, with splice on and off. The test plays the client
 * application and the upstream server on the far ends of two connections. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gw_relay.h"

struct fixture {
    struct event_base *base;
    struct gw_relay_pool *pool;
    struct gw_relay *relay;
    int app;       /* the client application's end */
    int srv;       /* the upstream server's end */
    size_t rx, tx; /* read from the client; written to the client */
    int paused, resumed;
    int failed_side;
    bool flushing, done;
};

static void on_moved(void *arg, enum gw_relay_side from, size_t nread, size_t nwritten)
{
    struct fixture *f = arg;
    if (from == GW_RELAY_CLIENT)
        f->rx += nread;
    else
        f->tx += nwritten;
}

static void on_flow(void *arg, enum gw_relay_side from, bool paused)
{
    struct fixture *f = arg;
    (void)from;
    if (paused)
        f->paused++;
    else
        f->resumed++;
}

static void on_failed(void *arg, enum gw_relay_side side, bool flushing)
{
    struct fixture *f = arg;
    f->failed_side = (int)side;
    f->flushing = flushing;
}

static void on_done(void *arg)
{
    struct fixture *f = arg;
    f->done = true;
}

static const struct gw_relay_ops ops = {on_moved, on_flow, on_failed, on_done};

static void set_nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* A connected loopback TCP pair: *a dialled, *b accepted; both non-blocking. */
static void tcp_pair(int *a, int *b)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(l >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    assert_int_equal(bind(l, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&sin, &len), 0);
    *a = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*a, (struct sockaddr *)&sin, sizeof(sin)), 0);
    *b = accept(l, NULL, NULL);
    assert_true(*b >= 0);
    close(l);
    set_nonblock(*a);
    set_nonblock(*b);
}

static struct fixture *start(int max_pipes, const char *to_up, const char *to_cli)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->failed_side = -1;
    f->base = event_base_new();
    f->pool = gw_relay_pool_new(max_pipes);
    assert_non_null(f->base);
    assert_non_null(f->pool);
    int gw_cli, gw_up;
    tcp_pair(&f->app, &gw_cli);
    tcp_pair(&gw_up, &f->srv);
    f->relay = gw_relay_new(f->base, f->pool, gw_cli, gw_up, to_up, to_up ? strlen(to_up) : 0,
                            to_cli, to_cli ? strlen(to_cli) : 0, &ops, f);
    assert_non_null(f->relay);
    return f;
}

static void stop(struct fixture *f, enum gw_relay_close how)
{
    gw_relay_free(f->relay, how);
    gw_relay_pool_free(f->pool);
    event_base_free(f->base);
    close(f->app);
    close(f->srv);
    free(f);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Turns the loop for up to ms milliseconds, or until *flag is set. */
static void spin(struct fixture *f, int ms, const bool *flag)
{
    int64_t end = now_ms() + ms;
    while (now_ms() < end && (flag == NULL || !*flag)) {
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        usleep(500);
    }
}

/* Reads from fd, turning the loop, until want bytes came or EOF; bounded. */
static size_t read_all(struct fixture *f, int fd, char *buf, size_t want, bool *eof)
{
    size_t got = 0;
    *eof = false;
    int64_t end = now_ms() + 5000;
    while (got < want && now_ms() < end) {
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        ssize_t n = recv(fd, buf + got, want - got, 0);
        if (n == 0) {
            *eof = true;
            break;
        }
        if (n > 0)
            got += (size_t)n;
        else
            usleep(200);
    }
    return got;
}

static void test_owed_bytes_go_first(void **state)
{
    (void)state;
    struct fixture *f = start(0, "HDR ", "hello ");
    assert_int_equal(send(f->app, "abc", 3, 0), 3);
    char buf[16] = {0};
    bool eof;
    assert_int_equal(read_all(f, f->srv, buf, 7, &eof), 7);
    assert_memory_equal(buf, "HDR abc", 7);
    assert_int_equal(send(f->srv, "xyz", 3, 0), 3);
    memset(buf, 0, sizeof(buf));
    assert_int_equal(read_all(f, f->app, buf, 9, &eof), 9);
    assert_memory_equal(buf, "hello xyz", 9);
    assert_int_equal(f->rx, 3); /* the owed bytes were counted by whoever read them */
    assert_int_equal(f->tx, 9);
    assert_false(f->done);
    stop(f, GW_RELAY_STOP);
}

/* One side's FIN is passed on, and the other direction keeps flowing. */
static void test_half_close(void **state)
{
    (void)state;
    struct fixture *f = start(0, NULL, NULL);
    assert_int_equal(send(f->app, "last", 4, 0), 4);
    shutdown(f->app, SHUT_WR);
    char buf[16];
    bool eof;
    assert_int_equal(read_all(f, f->srv, buf, sizeof(buf), &eof), 4);
    assert_true(eof);
    assert_false(f->done);
    assert_int_equal(send(f->srv, "reply", 5, 0), 5);
    assert_int_equal(read_all(f, f->app, buf, 5, &eof), 5);
    assert_memory_equal(buf, "reply", 5);
    shutdown(f->srv, SHUT_WR);
    spin(f, 2000, &f->done);
    assert_true(f->done);
    assert_int_equal(f->failed_side, -1);
    assert_int_equal(read_all(f, f->app, buf, sizeof(buf), &eof), 0);
    assert_true(eof);
    stop(f, GW_RELAY_CLEAN);
}

/* Data and FIN arriving together, before the relay starts, still end it. */
static void test_data_and_fin_before_start(void **state)
{
    (void)state;
    struct fixture *f = start(0, NULL, NULL);
    assert_int_equal(send(f->srv, "bye", 3, 0), 3);
    shutdown(f->srv, SHUT_WR);
    usleep(20000); /* both are in the relay's socket before its first round */
    char buf[8];
    bool eof;
    assert_int_equal(read_all(f, f->app, buf, sizeof(buf), &eof), 3);
    assert_true(eof);
    stop(f, GW_RELAY_STOP);
}

/* Megabytes against a reader that stalls: the relay pauses with a bounded
 * amount held, and every byte arrives in order once the reader reads. */
static void bulk(int max_pipes)
{
    struct fixture *f = start(max_pipes, NULL, NULL);
    const size_t total = 32u << 20; /* more than the socket buffers hold */
    unsigned char *out = malloc(total), *in = malloc(total);
    assert_non_null(out);
    assert_non_null(in);
    for (size_t i = 0; i < total; i++)
        out[i] = (unsigned char)(i * 7 + i / 4099);
    size_t sent = 0, got = 0;
    int64_t end = now_ms() + 10000;
    /* Phase 1: write until the path is full; the server does not read. */
    for (int idle = 0; idle < 50 && sent < total && now_ms() < end;) {
        ssize_t n = send(f->app, out + sent, total - sent, 0);
        if (n > 0) {
            sent += (size_t)n;
            idle = 0;
        } else {
            idle++;
        }
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        usleep(200);
    }
    assert_true(sent < total);
    assert_true(f->paused >= 1);
    assert_true(gw_relay_buffered(f->relay, GW_RELAY_CLIENT) <= 64 * 1024);
    /* Phase 2: both ends move. */
    while (got < total && now_ms() < end) {
        if (sent < total) {
            ssize_t n = send(f->app, out + sent, total - sent, 0);
            if (n > 0)
                sent += (size_t)n;
        }
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        ssize_t n = recv(f->srv, in + got, total - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    assert_int_equal(got, total);
    assert_memory_equal(in, out, total);
    assert_int_equal(f->rx, total);
    assert_true(f->resumed >= 1);
    free(out);
    free(in);
    stop(f, GW_RELAY_CLEAN);
}

static void test_bulk_copy(void **state)
{
    (void)state;
    bulk(0);
}

static void test_bulk_splice(void **state)
{
    (void)state;
    bulk(4);
}

/* The upstream resets: the relay reports it, and freeing it with RESET makes
 * the client see a reset too, not a clean end. */
static void test_upstream_reset(void **state)
{
    (void)state;
    struct fixture *f = start(0, NULL, NULL);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(f->srv, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(f->srv);
    f->srv = -1;
    spin(f, 2000, &f->done);
    for (int i = 0; i < 2000 && f->failed_side < 0; i++)
        spin(f, 1, NULL);
    assert_int_equal(f->failed_side, GW_RELAY_UPSTREAM);
    assert_false(f->flushing);
    gw_relay_free(f->relay, GW_RELAY_RESET);
    f->relay = NULL;
    char buf[4];
    ssize_t n = -1;
    for (int i = 0; i < 1000; i++) {
        n = recv(f->app, buf, sizeof(buf), 0);
        if (n >= 0 || errno != EAGAIN)
            break;
        usleep(1000);
    }
    assert_int_equal(n, -1);
    assert_int_equal(errno, ECONNRESET);
    stop(f, GW_RELAY_RESET);
}

/* Streams n bytes from the client application to the server end and checks
 * them: a pattern seeded by `seed`, so bytes from another stream show. */
static void stream_and_check(struct fixture *f, size_t n, unsigned seed)
{
    unsigned char *out = malloc(n), *in = malloc(n);
    assert_non_null(out);
    assert_non_null(in);
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)(i * 13 + seed + i / 977);
    size_t sent = 0, got = 0;
    int64_t end = now_ms() + 10000;
    while (got < n && now_ms() < end) {
        if (sent < n) {
            ssize_t w = send(f->app, out + sent, n - sent, 0);
            if (w > 0)
                sent += (size_t)w;
        }
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        ssize_t r = recv(f->srv, in + got, n - got, 0);
        if (r > 0)
            got += (size_t)r;
    }
    assert_int_equal(got, n);
    assert_memory_equal(in, out, n);
    free(out);
    free(in);
}

/* After a connection fails in the middle of a bulk transfer, the next one on
 * the same pool gets exactly its own bytes: no pipe comes back from the
 * pool holding another connection's. */
static void test_failed_splice_leaves_no_bytes_behind(void **state)
{
    (void)state;
    struct fixture *a = start(1, NULL, NULL);
    struct gw_relay_pool *shared = a->pool;
    stream_and_check(a, 1u << 20, 1); /* bulk: the relay splices through the pool's pipe */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(a->srv, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(a->srv);
    a->srv = -1;
    unsigned char junk[65536];
    memset(junk, 0xEE, sizeof(junk));
    for (int i = 0; i < 200 && a->failed_side < 0; i++) {
        if (send(a->app, junk, sizeof(junk), MSG_NOSIGNAL) < 0 && errno != EAGAIN)
            break;
        event_base_loop(a->base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
    assert_true(a->failed_side >= 0);
    gw_relay_free(a->relay, GW_RELAY_RESET);
    a->relay = NULL;
    /* A second connection on the same worker's pool. */
    struct fixture *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    b->failed_side = -1;
    b->base = a->base;
    int gw_cli, gw_up;
    tcp_pair(&b->app, &gw_cli);
    tcp_pair(&gw_up, &b->srv);
    b->relay = gw_relay_new(b->base, shared, gw_cli, gw_up, NULL, 0, NULL, 0, &ops, b);
    assert_non_null(b->relay);
    stream_and_check(b, 4u << 20, 7);
    gw_relay_free(b->relay, GW_RELAY_CLEAN);
    close(b->app);
    close(b->srv);
    free(b);
    stop(a, GW_RELAY_RESET);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_owed_bytes_go_first),
        cmocka_unit_test(test_half_close),
        cmocka_unit_test(test_data_and_fin_before_start),
        cmocka_unit_test(test_bulk_copy),
        cmocka_unit_test(test_bulk_splice),
        cmocka_unit_test(test_upstream_reset),
        cmocka_unit_test(test_failed_splice_leaves_no_bytes_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
