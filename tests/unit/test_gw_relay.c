/* Unit tests for gateway/gw_relay.c: the relay between real loopback TCP
 * connections, plain (with splice on and off) and with TLS on the client
 * side. The test plays the client application and the upstream server on
 * the far ends of two connections, and the session: it owns the two sides'
 * events and hands each wake-up to the relay, as gw_phase_relay.c does. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cert_tls.h"
#include "certgen.h"
#include "gw_relay.h"

struct fixture {
    struct event_base *base;
    struct gw_relay_pool *pool;
    struct gw_side side[2];
    struct gw_relay relay;
    bool started, ended;
    struct cert_io app; /* the client application's end (TLS when asked for) */
    int srv;            /* the upstream server's end */
    size_t rx, tx;      /* read from the client; written to the client */
    int paused, resumed;
    bool failed_seen;          /* GW_RELAY_FAILED was reported */
    enum gw_relay_result last; /* the last result other than GOING */
    SSL_CTX *sctx, *cctx;      /* TLS fixtures, or NULL */
    EVP_PKEY *key;
    X509 *crt;
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

static const struct gw_relay_ops ops = {.moved = on_moved, .flow = on_flow};

static void note(struct fixture *f, enum gw_relay_result res)
{
    if (res == GW_RELAY_FAILED)
        f->failed_seen = true;
    if (res != GW_RELAY_GOING)
        f->last = res;
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    struct fixture *f = arg;
    enum gw_relay_side side =
        fd == f->side[GW_RELAY_CLIENT].io.fd ? GW_RELAY_CLIENT : GW_RELAY_UPSTREAM;
    if (!f->started) { /* what the session's earlier phases would have noted */
        f->side[side].readable |= (what & (EV_READ | EV_CLOSED)) != 0;
        f->side[side].closed |= (what & EV_CLOSED) != 0;
        return;
    }
    if (f->last == GW_RELAY_DONE || f->last == GW_RELAY_BROKEN)
        return; /* the session would have ended it */
    note(f, gw_relay_on_io(&f->relay, side, what));
}

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

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void turn(struct fixture *f)
{
    event_base_loop(f->base, EVLOOP_NONBLOCK);
}

/* Handshakes the application's end with the relay's client side. */
static void handshake(struct fixture *f)
{
    struct cert_io *srv = &f->side[GW_RELAY_CLIENT].io;
    assert_int_equal(cert_io_start_tls(srv, SSL_new(f->sctx), true), 0);
    assert_int_equal(cert_io_start_tls(&f->app, SSL_new(f->cctx), false), 0);
    int s = CERT_IO_AGAIN, c = CERT_IO_AGAIN;
    for (int i = 0; i < 2000 && (s != 1 || c != 1); i++) {
        if (c != 1)
            c = cert_io_handshake(&f->app);
        if (s != 1)
            s = cert_io_handshake(srv);
        assert_true(c != CERT_IO_ERROR && s != CERT_IO_ERROR);
        usleep(100);
    }
    assert_int_equal(s, 1);
    assert_int_equal(c, 1);
}

/* Two connections and the relay's sides with their events; tls: the client
 * side speaks TLS. The relay starts with start(). */
static struct fixture *setup(int max_pipes, bool tls)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = event_base_new();
    f->pool = gw_relay_pool_new(max_pipes);
    assert_non_null(f->base);
    assert_non_null(f->pool);
    int app, gw_cli, gw_up;
    tcp_pair(&app, &gw_cli);
    tcp_pair(&gw_up, &f->srv);
    cert_io_init(&f->app, app);
    cert_io_init(&f->side[GW_RELAY_CLIENT].io, gw_cli);
    cert_io_init(&f->side[GW_RELAY_UPSTREAM].io, gw_up);
    if (tls) {
        char err[256];
        f->key = cg_key();
        f->crt = cg_cert(f->key, "relay.example.com", CG_LEAF, NULL, NULL, -1, 30);
        f->sctx = cert_server_ctx_new(NULL, 0, NULL, 0, NULL, NULL, "relay", err, sizeof(err));
        assert_non_null(f->sctx);
        assert_int_equal(SSL_CTX_use_certificate(f->sctx, f->crt), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey(f->sctx, f->key), 1);
        f->cctx = cert_client_ctx_new(NULL, false, NULL, err, sizeof(err));
        assert_non_null(f->cctx);
        handshake(f);
    }
    for (int i = 0; i < 2; i++) {
        struct gw_side *s = &f->side[i];
        assert_int_equal(event_assign(&s->ev, f->base, s->io.fd,
                                      EV_READ | EV_WRITE | EV_CLOSED | EV_ET | EV_PERSIST, on_io,
                                      f),
                         0);
        assert_int_equal(event_add(&s->ev, NULL), 0);
    }
    return f;
}

static void start(struct fixture *f)
{
    turn(f); /* the edges of what came before */
    f->started = true;
    note(f, gw_relay_start(&f->relay, f->side, f->pool, &ops, f));
}

static struct fixture *started(int max_pipes, bool tls)
{
    struct fixture *f = setup(max_pipes, tls);
    start(f);
    return f;
}

static void end(struct fixture *f, enum gw_relay_end how)
{
    if (f->ended)
        return;
    event_del(&f->side[0].ev);
    event_del(&f->side[1].ev);
    gw_relay_end(&f->relay, how);
    f->ended = true;
}

static void teardown(struct fixture *f, enum gw_relay_end how)
{
    end(f, how);
    gw_relay_pool_free(f->pool);
    event_base_free(f->base);
    cert_io_close(&f->app, false);
    if (f->srv >= 0)
        close(f->srv);
    SSL_CTX_free(f->sctx);
    SSL_CTX_free(f->cctx);
    X509_free(f->crt);
    EVP_PKEY_free(f->key);
    free(f);
}

/* Turns the loop for up to ms milliseconds, or until the relay reports
 * `until`. */
static void spin(struct fixture *f, int ms, enum gw_relay_result until)
{
    int64_t stop = now_ms() + ms;
    while (now_ms() < stop && f->last != until) {
        turn(f);
        usleep(200);
    }
}

/* Reads from the application's end, turning the loop, until want bytes
 * came, its end or an error (*end: 0, 1 for the end, -1 for an error). */
static size_t app_read(struct fixture *f, char *buf, size_t want, int *end_seen)
{
    size_t got = 0;
    *end_seen = 0;
    int64_t stop = now_ms() + 10000;
    while (got < want && now_ms() < stop) {
        turn(f);
        ssize_t n = cert_io_read(&f->app, buf + got, want - got);
        if (n == 0) {
            *end_seen = 1;
            break;
        }
        if (n == CERT_IO_ERROR) {
            *end_seen = -1;
            break;
        }
        if (n > 0)
            got += (size_t)n;
        else
            usleep(200);
    }
    return got;
}

static size_t srv_read(struct fixture *f, char *buf, size_t want, bool *eof)
{
    size_t got = 0;
    *eof = false;
    int64_t stop = now_ms() + 10000;
    while (got < want && now_ms() < stop) {
        turn(f);
        ssize_t n = recv(f->srv, buf + got, want - got, 0);
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

static void app_write(struct fixture *f, const void *buf, size_t len)
{
    size_t sent = 0;
    for (int i = 0; i < 100000 && sent < len; i++) {
        ssize_t n = cert_io_write(&f->app, (const char *)buf + sent, len - sent);
        if (n > 0)
            sent += (size_t)n;
        else
            turn(f);
    }
    assert_int_equal(sent, len);
}

/* ---- half-close ---------------------------------------------------------------------- */

/* One side's end is passed on, and the other direction keeps flowing; then
 * both ends are passed on and the relay is done. */
static void half_close(bool tls)
{
    struct fixture *f = started(0, tls);
    app_write(f, "last", 4);
    for (int i = 0; i < 100 && cert_io_shutdown(&f->app) != 1; i++)
        turn(f);
    char buf[16];
    bool eof;
    int end_seen;
    assert_int_equal(srv_read(f, buf, sizeof(buf), &eof), 4);
    assert_true(eof);
    assert_int_equal(f->last, GW_RELAY_GOING);
    assert_int_equal(send(f->srv, "reply", 5, 0), 5);
    assert_int_equal(app_read(f, buf, 5, &end_seen), 5);
    assert_memory_equal(buf, "reply", 5);
    shutdown(f->srv, SHUT_WR);
    spin(f, 2000, GW_RELAY_DONE);
    assert_int_equal(f->last, GW_RELAY_DONE);
    assert_int_equal(f->relay.failed, -1);
    assert_int_equal(f->relay.first_eof, GW_RELAY_CLIENT);
    assert_int_equal(app_read(f, buf, sizeof(buf), &end_seen), 0);
    assert_int_equal(end_seen, 1); /* with TLS: close_notify, then the FIN */
    if (tls)
        assert_true(SSL_get_shutdown(f->app.ssl) & SSL_RECEIVED_SHUTDOWN);
    assert_int_equal(f->rx, 4);
    assert_int_equal(f->tx, 5);
    teardown(f, GW_RELAY_CLEAN);
}

static void test_half_close_plain(void **state)
{
    (void)state;
    half_close(false);
}

static void test_half_close_tls(void **state)
{
    (void)state;
    half_close(true);
}

/* Data and the FIN arrive together before the relay starts: the session's
 * note of the edges is enough for the relay to find both. */
static void test_data_and_fin_before_start(void **state)
{
    (void)state;
    struct fixture *f = setup(0, false);
    assert_int_equal(send(f->srv, "bye", 3, 0), 3);
    shutdown(f->srv, SHUT_WR);
    usleep(20000);
    start(f);
    char buf[8];
    int end_seen;
    assert_int_equal(app_read(f, buf, sizeof(buf), &end_seen), 3);
    assert_int_equal(end_seen, 1);
    teardown(f, GW_RELAY_STOP);
}

/* ---- bulk and backpressure ------------------------------------------------------------- */

/* Megabytes against a reader that stalls: the relay pauses with a bounded
 * amount held, and every byte arrives in order once the reader reads. */
static void bulk(int max_pipes, bool tls)
{
    struct fixture *f = started(max_pipes, tls);
    const size_t total = 16u << 20; /* more than the socket buffers hold */
    unsigned char *out = malloc(total), *in = malloc(total);
    assert_non_null(out);
    assert_non_null(in);
    for (size_t i = 0; i < total; i++)
        out[i] = (unsigned char)(i * 7 + i / 4099);
    size_t sent = 0, got = 0;
    int64_t stop = now_ms() + 20000;
    /* Phase 1: write until the path is full; the server does not read. */
    for (int idle = 0; idle < 50 && sent < total && now_ms() < stop;) {
        ssize_t n = cert_io_write(&f->app, out + sent, total - sent);
        if (n > 0) {
            sent += (size_t)n;
            idle = 0;
        } else {
            idle++;
        }
        turn(f);
        usleep(200);
    }
    assert_true(sent < total);
    assert_true(f->paused >= 1);
    assert_true(gw_relay_buffered(&f->relay, GW_RELAY_CLIENT) <= GW_RELAY_CHUNK);
    /* Phase 2: both ends move. */
    while (got < total && now_ms() < stop) {
        if (sent < total) {
            ssize_t n = cert_io_write(&f->app, out + sent, total - sent);
            if (n > 0)
                sent += (size_t)n;
        }
        turn(f);
        ssize_t n = recv(f->srv, in + got, total - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    assert_int_equal(got, total);
    assert_memory_equal(in, out, total);
    assert_int_equal(f->rx, total);
    assert_true(f->resumed >= 1);
    /* And back, to the TLS side's writes. */
    got = 0;
    sent = 0;
    while (got < total && now_ms() < stop) {
        if (sent < total) {
            ssize_t n = send(f->srv, out + sent, total - sent, MSG_DONTWAIT);
            if (n > 0)
                sent += (size_t)n;
        }
        turn(f);
        ssize_t n = cert_io_read(&f->app, in + got, total - got);
        if (n > 0)
            got += (size_t)n;
    }
    assert_int_equal(got, total);
    assert_memory_equal(in, out, total);
    assert_int_equal(f->tx, total);
    free(out);
    free(in);
    teardown(f, GW_RELAY_STOP);
}

static void test_bulk_copy(void **state)
{
    (void)state;
    bulk(0, false);
}

static void test_bulk_splice(void **state)
{
    (void)state;
    bulk(4, false);
}

static void test_bulk_tls(void **state)
{
    (void)state;
    bulk(4, true); /* no splice with TLS on a side, pipes or not */
}

/* ---- a side fails --------------------------------------------------------------------- */

static int unacked(int fd)
{
    int q = 0;
    ioctl(fd, SIOCOUTQ, &q);
    return q;
}

/* The upstream sends `size` bytes to a client that is not reading, waits
 * until the gateway has acknowledged all of them, and resets. The relay
 * notices at once, also when it had stopped reading that upstream; every
 * byte still reaches the client, then a reset. */
static void upstream_resets_after_sending(bool tls, size_t size)
{
    struct fixture *f = started(0, tls);
    unsigned char *out = malloc(size), *in = malloc(size + 1);
    assert_non_null(out);
    assert_non_null(in);
    for (size_t i = 0; i < size; i++)
        out[i] = (unsigned char)(i * 31 + i / 1021);
    size_t sent = 0;
    for (int64_t stop = now_ms() + 10000;
         now_ms() < stop && (sent < size || unacked(f->srv) > 0);) {
        ssize_t n = sent < size ? send(f->srv, out + sent, size - sent, MSG_DONTWAIT) : 0;
        if (n > 0)
            sent += (size_t)n;
        turn(f);
        usleep(200);
    }
    assert_int_equal(sent, size);
    assert_int_equal(unacked(f->srv), 0);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(f->srv, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(f->srv);
    f->srv = -1;
    for (int i = 0; i < 200 && f->relay.failed < 0; i++) {
        turn(f);
        usleep(1000);
    }
    /* Failed, with bytes to deliver still (or all of them handed over). */
    assert_int_equal(f->relay.failed, GW_RELAY_UPSTREAM);
    assert_true(f->failed_seen || f->last == GW_RELAY_DONE);
    /* The client reads now; the relay delivers and then is done. */
    size_t got = 0;
    int end_seen = 0;
    for (int64_t t = now_ms() + 10000; now_ms() < t && f->last != GW_RELAY_DONE;) {
        turn(f);
        ssize_t n = cert_io_read(&f->app, in + got, size - got);
        if (n > 0)
            got += (size_t)n;
    }
    assert_int_equal(f->last, GW_RELAY_DONE);
    for (int i = 0; i < 1000 && unacked(f->side[GW_RELAY_CLIENT].io.fd) > 0; i++) {
        ssize_t n = cert_io_read(&f->app, in + got, size - got);
        if (n > 0)
            got += (size_t)n;
    }
    end(f, GW_RELAY_DELIVERED);
    /* One byte more than was sent: the read after the last one sees the end. */
    got += app_read(f, (char *)in + got, size + 1 - got, &end_seen);
    assert_int_equal(got, sent);
    assert_memory_equal(in, out, sent);
    if (!tls) {
        assert_int_equal(end_seen, -1);
        assert_int_equal(f->app.err, ECONNRESET);
    } else {
        assert_int_not_equal(end_seen, 0); /* a reset under TLS: a dirty shutdown */
    }
    free(out);
    free(in);
    teardown(f, GW_RELAY_RESET);
}

static void test_upstream_resets_after_sending(void **state)
{
    (void)state;
    upstream_resets_after_sending(false, 256 << 10);
    upstream_resets_after_sending(false, 4 << 20);
}

static void test_upstream_resets_after_sending_tls(void **state)
{
    (void)state;
    upstream_resets_after_sending(true, 256 << 10);
    upstream_resets_after_sending(true, 4 << 20);
}

/* The client fails while its bytes wait for an upstream that does not
 * read; then the upstream fails too: nothing more can be delivered. */
static void test_both_fail(void **state)
{
    (void)state;
    struct fixture *f = started(0, false);
    unsigned char junk[65536];
    memset(junk, 0x5A, sizeof(junk));
    for (int idle = 0, i = 0; idle < 100 && i < 10000; i++) {
        if (send(f->app.fd, junk, sizeof(junk), MSG_DONTWAIT) > 0)
            idle = 0;
        else
            idle++;
        turn(f);
        usleep(100);
    }
    assert_true(f->paused >= 1);
    for (int i = 0; i < 1000 && unacked(f->app.fd) > 0; i++)
        turn(f);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(f->app.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    cert_io_close(&f->app, true);
    for (int i = 0; i < 200 && !f->failed_seen; i++) {
        turn(f);
        usleep(1000);
    }
    assert_true(f->failed_seen);
    assert_int_equal(f->relay.failed, GW_RELAY_CLIENT);
    assert_int_equal(f->last, GW_RELAY_FAILED); /* its bytes still wait */
    setsockopt(f->srv, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(f->srv);
    f->srv = -1;
    spin(f, 2000, GW_RELAY_BROKEN);
    assert_int_equal(f->last, GW_RELAY_BROKEN);
    teardown(f, GW_RELAY_RESET);
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
    int64_t stop = now_ms() + 10000;
    while (got < n && now_ms() < stop) {
        if (sent < n) {
            ssize_t w = send(f->app.fd, out + sent, n - sent, MSG_DONTWAIT);
            if (w > 0)
                sent += (size_t)w;
        }
        turn(f);
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
    struct fixture *a = started(1, false);
    stream_and_check(a, 1u << 20, 1); /* bulk: the relay splices through the pool's pipe */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(a->srv, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(a->srv);
    a->srv = -1;
    unsigned char junk[65536];
    memset(junk, 0xEE, sizeof(junk));
    for (int i = 0; i < 200 && a->relay.failed < 0; i++) {
        if (send(a->app.fd, junk, sizeof(junk), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN)
            break;
        turn(a);
        usleep(1000);
    }
    assert_true(a->relay.failed >= 0);
    end(a, GW_RELAY_RESET);
    /* A second connection on the same worker's pool. */
    struct fixture *b = setup(1, false);
    gw_relay_pool_free(b->pool);
    b->pool = a->pool;
    start(b);
    stream_and_check(b, 4u << 20, 7);
    b->pool = gw_relay_pool_new(0); /* teardown frees one of its own */
    teardown(b, GW_RELAY_STOP);
    teardown(a, GW_RELAY_RESET);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_close_plain),
        cmocka_unit_test(test_half_close_tls),
        cmocka_unit_test(test_data_and_fin_before_start),
        cmocka_unit_test(test_bulk_copy),
        cmocka_unit_test(test_bulk_splice),
        cmocka_unit_test(test_bulk_tls),
        cmocka_unit_test(test_upstream_resets_after_sending),
        cmocka_unit_test(test_upstream_resets_after_sending_tls),
        cmocka_unit_test(test_both_fail),
        cmocka_unit_test(test_failed_splice_leaves_no_bytes_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
