/* Unit tests for certs/cert_io.c and certs/cert_dial.c: one side of a
 * connection, plain and TLS, over real sockets (loopback TCP, and socket
 * pairs for the TLS pairs), driven by poll() as an edge-triggered loop would
 * drive them; and dialing: connect, a prefix in clear, then TLS. Covers the
 * ends of a stream (FIN, close_notify, a bare FIN under TLS, a reset), short
 * writes and their retries, half-close under TLS, TLS refused, and who owns
 * the socket and the SSL when a constructor fails. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cert_dial.h"
#include "cert_io.h"
#include "cert_store.h"
#include "cert_tls.h"
#include "certgen.h"

/* ---- helpers ----------------------------------------------------------------------- */

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int listener(struct sockaddr_in *sin)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(l >= 0);
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(*sin);
    assert_int_equal(bind(l, (struct sockaddr *)sin, len), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)sin, &len), 0);
    assert_int_equal(listen(l, 8), 0);
    return l;
}

/* A connected loopback TCP pair, both non-blocking. */
static void tcp_pair(int *a, int *b)
{
    struct sockaddr_in sin;
    int l = listener(&sin);
    *a = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*a, (struct sockaddr *)&sin, sizeof(sin)), 0);
    *b = accept(l, NULL, NULL);
    assert_true(*b >= 0);
    close(l);
    nonblock(*a);
    nonblock(*b);
}

/* libevent's flags for what poll() says of fd within ms. */
static short ready(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
    if (poll(&p, 1, ms) != 1)
        return 0;
    short what = 0;
    if (p.revents & (POLLIN | POLLERR | POLLHUP))
        what |= EV_READ;
    if (p.revents & (POLLOUT | POLLERR | POLLHUP))
        what |= EV_WRITE;
    return what;
}

struct tls_fx {
    EVP_PKEY *key;
    X509 *crt;
    SSL_CTX *sctx, *cctx;
};

static int tls_setup(void **state)
{
    struct tls_fx *f = calloc(1, sizeof(*f));
    f->key = cg_key();
    f->crt = cg_cert(f->key, "io.example.com", CG_LEAF, NULL, NULL, -1, 30);
    char err[256];
    f->sctx = cert_server_ctx_new(NULL, 0, NULL, 0, NULL, NULL, "io", err, sizeof(err));
    assert_non_null(f->sctx);
    assert_int_equal(SSL_CTX_use_certificate(f->sctx, f->crt), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(f->sctx, f->key), 1);
    f->cctx = cert_client_ctx_new(NULL, false, NULL, err, sizeof(err));
    assert_non_null(f->cctx);
    *state = f;
    return 0;
}

static int tls_teardown(void **state)
{
    struct tls_fx *f = *state;
    SSL_CTX_free(f->sctx);
    SSL_CTX_free(f->cctx);
    X509_free(f->crt);
    EVP_PKEY_free(f->key);
    free(f);
    return 0;
}

/* Both ends of a TLS connection over a socket pair, handshaken. */
static void tls_pair(struct tls_fx *f, struct cert_io *srv, struct cert_io *cli)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    cert_io_init(srv, sv[0]);
    cert_io_init(cli, sv[1]);
    assert_int_equal(cert_io_start_tls(srv, SSL_new(f->sctx), true), 0);
    assert_int_equal(cert_io_start_tls(cli, SSL_new(f->cctx), false), 0);
    int s = CERT_IO_AGAIN, c = CERT_IO_AGAIN;
    for (int i = 0; i < 200 && (s != 1 || c != 1); i++) {
        if (c != 1)
            c = cert_io_handshake(cli);
        if (s != 1)
            s = cert_io_handshake(srv);
        assert_true(c != CERT_IO_ERROR && s != CERT_IO_ERROR);
        if (s != 1 || c != 1)
            ready(sv[0], 5);
    }
    assert_int_equal(s, 1);
    assert_int_equal(c, 1);
    assert_non_null(cert_io_version(srv));
    assert_non_null(cert_io_cipher(cli));
}

/* Reads from io until n bytes came, or its end (returns what came). */
static size_t read_all(struct cert_io *io, char *buf, size_t n, bool *eof)
{
    size_t got = 0;
    *eof = false;
    for (int i = 0; i < 2000 && got < n; i++) {
        ssize_t r = cert_io_read(io, buf + got, n - got);
        if (r == 0) {
            *eof = true;
            break;
        }
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        assert_int_equal(r, CERT_IO_AGAIN);
        ready(io->fd, 5);
    }
    return got;
}

/* ---- plain ------------------------------------------------------------------------- */

static void test_plain_read_write_end(void **state)
{
    (void)state;
    int a, b;
    tcp_pair(&a, &b);
    struct cert_io x, y;
    cert_io_init(&x, a);
    cert_io_init(&y, b);
    char buf[16];
    assert_int_equal(cert_io_read(&y, buf, sizeof(buf)), CERT_IO_AGAIN);
    assert_false(y.want_write);
    assert_int_equal(cert_io_write(&x, "hello", 5), 5);
    bool eof;
    assert_int_equal(read_all(&y, buf, 5, &eof), 5);
    assert_memory_equal(buf, "hello", 5);
    assert_false(cert_io_pending(&y));
    /* Half-close: the FIN is the end for y, and y can still write. */
    assert_int_equal(cert_io_shutdown(&x), 1);
    assert_int_equal(read_all(&y, buf, 1, &eof), 0);
    assert_true(eof);
    assert_int_equal(cert_io_write(&y, "back", 4), 4);
    assert_int_equal(read_all(&x, buf, 4, &eof), 4);
    /* A reset: the peer's next read is an error, with errno kept. */
    cert_io_close(&x, true);
    assert_int_equal(x.fd, -1);
    ssize_t r = CERT_IO_AGAIN;
    for (int i = 0; i < 100 && r == CERT_IO_AGAIN; i++) {
        ready(b, 10);
        r = cert_io_write(&y, "x", 1) < 0 ? CERT_IO_ERROR : cert_io_read(&y, buf, 1);
    }
    assert_int_equal(r, CERT_IO_ERROR);
    assert_true(y.err == ECONNRESET || y.err == EPIPE);
    assert_int_equal(y.ssl_err, 0);
    cert_io_close(&y, false);
    cert_io_close(&y, false); /* closing twice is harmless */
}

static void test_plain_full_socket(void **state)
{
    (void)state;
    int a, b;
    tcp_pair(&a, &b);
    struct cert_io x;
    cert_io_init(&x, a);
    static char chunk[65536];
    size_t sent = 0;
    ssize_t n = 0;
    for (int i = 0; i < 10000 && (n = cert_io_write(&x, chunk, sizeof(chunk))) > 0; i++)
        sent += (size_t)n;
    assert_int_equal(n, CERT_IO_AGAIN);
    assert_true(x.want_write);
    assert_true(sent > 0);
    assert_true(cert_io_unacked(&x) >= 0);
    cert_io_close(&x, false);
    close(b);
}

/* ---- TLS --------------------------------------------------------------------------- */

static void test_tls_read_write_and_close_notify(void **state)
{
    struct cert_io srv, cli;
    tls_pair(*state, &srv, &cli);
    char buf[64];
    bool eof;
    assert_int_equal(cert_io_write(&cli, "ping", 4), 4);
    assert_int_equal(read_all(&srv, buf, 4, &eof), 4);
    assert_memory_equal(buf, "ping", 4);
    /* Half-close under TLS: close_notify and the FIN; the other way goes on. */
    assert_int_equal(cert_io_shutdown(&cli), 1);
    assert_int_equal(read_all(&srv, buf, 1, &eof), 0);
    assert_true(eof);
    assert_int_equal(cert_io_write(&srv, "pong", 4), 4);
    assert_int_equal(read_all(&cli, buf, 4, &eof), 4);
    assert_memory_equal(buf, "pong", 4);
    assert_int_equal(cert_io_shutdown(&srv), 1);
    assert_int_equal(read_all(&cli, buf, 1, &eof), 0);
    assert_true(eof);
    cert_io_close(&srv, false);
    cert_io_close(&cli, false);
}

static void test_tls_bare_fin_is_the_end(void **state)
{
    struct cert_io srv, cli;
    tls_pair(*state, &srv, &cli);
    char buf[8];
    bool eof;
    /* The peer goes without close_notify: a byte stream ends here. */
    shutdown(cli.fd, SHUT_WR);
    assert_int_equal(read_all(&srv, buf, 1, &eof), 0);
    assert_true(eof);
    cert_io_close(&srv, false);
    cert_io_close(&cli, false);
}

static void test_tls_short_writes_resume(void **state)
{
    struct cert_io srv, cli;
    tls_pair(*state, &srv, &cli);
    /* Write until the pair is full, then read it all on the other side,
     * retrying the rest from a different buffer with the same bytes. */
    size_t total = 4 << 20, sent = 0, got = 0;
    char *out = malloc(total), *copy = malloc(65536), *in = malloc(total);
    for (size_t i = 0; i < total; i++)
        out[i] = (char)(i * 7 + 3);
    int again = 0;
    for (int i = 0; i < 10000 && got < total; i++) {
        /* Write until the socket is full, then read until it is empty. */
        for (int j = 0; j < 1000 && sent < total; j++) {
            size_t len = total - sent < 65536 ? total - sent : 65536;
            memcpy(copy, out + sent, len); /* a moving write buffer */
            ssize_t n = cert_io_write(&cli, copy, len);
            if (n == CERT_IO_AGAIN) {
                again++;
                break;
            }
            if (n <= 0)
                fail_msg("write failed: %d", cli.err);
            sent += (size_t)n;
        }
        for (int j = 0; j < 1000 && got < total; j++) {
            ssize_t r = cert_io_read(&srv, in + got, total - got);
            if (r == CERT_IO_AGAIN)
                break;
            assert_true(r > 0);
            got += (size_t)r;
        }
    }
    assert_int_equal(got, total);
    assert_memory_equal(in, out, total);
    assert_true(again > 0);
    free(out);
    free(copy);
    free(in);
    cert_io_close(&srv, false);
    cert_io_close(&cli, false);
}

static void test_tls_refused_and_garbage(void **state)
{
    struct tls_fx *f = *state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct cert_io srv;
    cert_io_init(&srv, sv[0]);
    assert_int_equal(cert_io_start_tls(&srv, SSL_new(f->sctx), true), 0);
    assert_int_equal(write(sv[1], "GET / HTTP/1.1\r\n\r\n", 18), 18);
    int rc = CERT_IO_AGAIN;
    for (int i = 0; i < 50 && rc == CERT_IO_AGAIN; i++) {
        rc = cert_io_handshake(&srv);
        if (rc == CERT_IO_AGAIN)
            ready(sv[0], 5);
    }
    assert_int_equal(rc, CERT_IO_ERROR);
    assert_true(srv.ssl_err != 0); /* TLS said no */
    cert_io_close(&srv, false);
    close(sv[1]);
    /* A peer that closes during the handshake: below TLS. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    cert_io_init(&srv, sv[0]);
    assert_int_equal(cert_io_start_tls(&srv, SSL_new(f->sctx), true), 0);
    close(sv[1]);
    assert_int_equal(cert_io_handshake(&srv), CERT_IO_ERROR);
    assert_int_equal(srv.ssl_err, 0);
    cert_io_close(&srv, false);
}

static void test_start_tls_takes_the_ssl(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct cert_io io;
    cert_io_init(&io, sv[0]);
    /* No SSL to layer on: refused, and the socket stays the io's. */
    assert_int_equal(cert_io_start_tls(&io, NULL, true), -1);
    assert_int_equal(io.fd, sv[0]);
    assert_null(io.ssl);
    cert_io_close(&io, false);
    assert_int_equal(fcntl(sv[0], F_GETFD), -1); /* closed by the io */
    close(sv[1]);
}

/* ---- dialing ----------------------------------------------------------------------- */

static size_t prefix_fn(void *arg, int fd, uint8_t *buf, size_t cap)
{
    (void)fd;
    const char *p = arg;
    size_t n = strlen(p);
    assert_true(n <= cap);
    memcpy(buf, p, n);
    return n;
}

/* Steps d until it is done or fails, polling its socket. */
static int dial_run(struct cert_dial *d, struct cert_io *io, cert_dial_prefix_fn pf, void *arg,
                    struct cert_io *peer)
{
    int rc = CERT_IO_AGAIN;
    for (int i = 0; i < 400 && rc == CERT_IO_AGAIN; i++) {
        short what = ready(io->fd, 5);
        if (what != 0)
            rc = cert_dial_step(d, io, what, pf, arg);
        if (peer != NULL && peer->ssl != NULL && !SSL_is_init_finished(peer->ssl))
            cert_io_handshake(peer);
    }
    return rc;
}

static void test_dial_plain_with_prefix(void **state)
{
    (void)state;
    struct sockaddr_in sin;
    int l = listener(&sin);
    struct cert_dial d;
    struct cert_io io;
    assert_int_equal(cert_dial_start(&d, &io, (struct sockaddr *)&sin, sizeof(sin), NULL), 0);
    assert_false(cert_dial_connected(&d));
    assert_int_equal(dial_run(&d, &io, prefix_fn, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", NULL),
                     CERT_DIAL_DONE);
    assert_true(cert_dial_connected(&d));
    int a = accept(l, NULL, NULL);
    assert_int_equal(cert_io_write(&io, "data", 4), 4);
    char buf[64] = "";
    size_t want = strlen("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\ndata"), got = 0;
    for (int i = 0; i < 100 && got < want; i++) {
        ssize_t n = read(a, buf + got, want - got);
        if (n > 0)
            got += (size_t)n;
    }
    assert_string_equal(buf, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\ndata");
    cert_dial_clear(&d);
    cert_io_close(&io, false);
    close(a);
    close(l);
}

static void test_dial_refused(void **state)
{
    (void)state;
    struct sockaddr_in sin;
    int l = listener(&sin);
    close(l); /* nobody listens there now */
    struct cert_dial d;
    struct cert_io io;
    int rc = cert_dial_start(&d, &io, (struct sockaddr *)&sin, sizeof(sin), NULL);
    if (rc == 0) {
        rc = dial_run(&d, &io, NULL, NULL, NULL);
        assert_int_equal(rc, CERT_IO_ERROR);
        assert_int_equal(io.err, ECONNREFUSED);
        assert_false(d.tls_failed);
        cert_io_close(&io, false);
    } else {
        assert_int_equal(errno, ECONNREFUSED); /* refused at once, io closed */
        assert_int_equal(io.fd, -1);
    }
    cert_dial_clear(&d);
}

static void test_dial_tls_after_prefix(void **state)
{
    struct tls_fx *f = *state;
    struct sockaddr_in sin;
    int l = listener(&sin);
    struct cert_dial d;
    struct cert_io io;
    SSL *ssl = SSL_new(f->cctx);
    assert_int_equal(cert_dial_start(&d, &io, (struct sockaddr *)&sin, sizeof(sin), ssl), 0);
    int a = accept(l, NULL, NULL);
    nonblock(a);
    /* The server reads the prefix in clear, then takes TLS over. */
    struct cert_io peer;
    cert_io_init(&peer, a);
    int rc = CERT_IO_AGAIN;
    char head[6] = "";
    size_t got = 0;
    for (int i = 0; i < 400 && rc == CERT_IO_AGAIN; i++) {
        short what = ready(io.fd, 5);
        if (what != 0)
            rc = cert_dial_step(&d, &io, what, prefix_fn, "HELLO\n");
        if (got < 6) {
            ssize_t n = read(a, head + got, 6 - got);
            if (n > 0 && (got += (size_t)n) == 6)
                assert_int_equal(cert_io_start_tls(&peer, SSL_new(f->sctx), true), 0);
        } else {
            cert_io_handshake(&peer);
        }
    }
    assert_int_equal(rc, CERT_DIAL_DONE);
    assert_memory_equal(head, "HELLO\n", 6);
    assert_non_null(io.ssl);
    assert_int_equal(cert_io_write(&io, "secret", 6), 6);
    char buf[8];
    bool eof;
    assert_int_equal(read_all(&peer, buf, 6, &eof), 6);
    assert_memory_equal(buf, "secret", 6);
    cert_dial_clear(&d);
    cert_io_close(&io, false);
    cert_io_close(&peer, false);
    close(l);
}

static void test_dial_tls_refused(void **state)
{
    struct tls_fx *f = *state;
    struct sockaddr_in sin;
    int l = listener(&sin);
    struct cert_dial d;
    struct cert_io io;
    assert_int_equal(
        cert_dial_start(&d, &io, (struct sockaddr *)&sin, sizeof(sin), SSL_new(f->cctx)), 0);
    int a = accept(l, NULL, NULL);
    /* Not a TLS server: it answers with text and closes. */
    int rc = CERT_IO_AGAIN;
    bool answered = false;
    for (int i = 0; i < 400 && rc == CERT_IO_AGAIN; i++) {
        short what = ready(io.fd, 5);
        if (what != 0)
            rc = cert_dial_step(&d, &io, what, NULL, NULL);
        if (!answered && write(a, "-ERR not TLS\r\n", 14) == 14)
            answered = true;
    }
    assert_int_equal(rc, CERT_IO_ERROR);
    assert_true(d.tls_failed);
    cert_dial_clear(&d);
    cert_io_close(&io, false);
    close(a);
    close(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_read_write_end),
        cmocka_unit_test(test_plain_full_socket),
        cmocka_unit_test_setup_teardown(test_tls_read_write_and_close_notify, tls_setup,
                                        tls_teardown),
        cmocka_unit_test_setup_teardown(test_tls_bare_fin_is_the_end, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_tls_short_writes_resume, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_tls_refused_and_garbage, tls_setup, tls_teardown),
        cmocka_unit_test(test_start_tls_takes_the_ssl),
        cmocka_unit_test(test_dial_plain_with_prefix),
        cmocka_unit_test(test_dial_refused),
        cmocka_unit_test_setup_teardown(test_dial_tls_after_prefix, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_dial_tls_refused, tls_setup, tls_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
