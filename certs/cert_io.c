#include "cert_io.h"

#include <errno.h>
#include <linux/sockios.h>
#include <openssl/err.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

void cert_io_init(struct cert_io *io, int fd)
{
    memset(io, 0, sizeof(*io));
    io->fd = fd;
}

int cert_io_start_tls(struct cert_io *io, SSL *ssl, bool server)
{
    if (ssl == NULL || SSL_set_fd(ssl, io->fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return -1;
    }
    /* A partial write returns what went; a retry may pass the rest from
     * elsewhere (the relay keeps it in a buffer of its own). */
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (server)
        SSL_set_accept_state(ssl);
    else
        SSL_set_connect_state(ssl);
    io->ssl = ssl;
    return 0;
}

/* What an SSL call that returned n <= 0 means, for a caller that reads,
 * writes or handshakes: AGAIN with the direction to wait for, the end, or an
 * error with its reasons kept. */
static int ssl_result(struct cert_io *io, int n, bool reading)
{
    int e = SSL_get_error(io->ssl, n);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        io->want_write = false;
        return CERT_IO_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        io->want_write = true;
        return CERT_IO_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        if (reading)
            return 0;
        io->err = 0; /* the peer closed */
        break;
    case SSL_ERROR_SYSCALL:
        io->err = errno != 0 ? errno : EPIPE;
        /* A bare FIN where the option does not apply, or a reset: a TLS
         * stream that ends without close_notify ends there (a dirty
         * shutdown), however TCP ended it. */
        if (reading && (errno == 0 || errno == ECONNRESET) && ERR_peek_error() == 0)
            return 0;
        break;
    default:
        io->err = 0;
        break;
    }
    io->ssl_err = ERR_peek_error();
    ERR_clear_error();
    return CERT_IO_ERROR;
}

int cert_io_handshake(struct cert_io *io)
{
    ERR_clear_error();
    errno = 0;
    int n = SSL_do_handshake(io->ssl);
    if (n == 1)
        return 1;
    return ssl_result(io, n, false);
}

static bool would_block(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK;
}

ssize_t cert_io_read(struct cert_io *io, void *buf, size_t len)
{
    if (io->ssl == NULL) {
        ssize_t n;
        do
            n = recv(io->fd, buf, len, MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n >= 0)
            return n;
        if (would_block()) {
            io->want_write = false;
            return CERT_IO_AGAIN;
        }
        io->err = errno;
        io->ssl_err = 0;
        return CERT_IO_ERROR;
    }
    size_t got = 0;
    ERR_clear_error();
    errno = 0;
    int n = SSL_read_ex(io->ssl, buf, len, &got);
    if (n == 1)
        return (ssize_t)got;
    return ssl_result(io, 0, true);
}

ssize_t cert_io_write(struct cert_io *io, const void *buf, size_t len)
{
    if (io->ssl == NULL) {
        ssize_t n;
        do
            n = send(io->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n >= 0)
            return n;
        if (would_block()) {
            io->want_write = true;
            return CERT_IO_AGAIN;
        }
        io->err = errno;
        io->ssl_err = 0;
        return CERT_IO_ERROR;
    }
    /* With partial writes on, each call writes one record: go on until the
     * socket is full, so that a short write means what it means for TCP. */
    size_t total = 0;
    while (total < len) {
        size_t put = 0;
        ERR_clear_error();
        errno = 0;
        if (SSL_write_ex(io->ssl, (const char *)buf + total, len - total, &put) != 1) {
            int rc = ssl_result(io, 0, false);
            /* What went is reported now; the AGAIN or error comes next time. */
            return total > 0 ? (ssize_t)total : rc;
        }
        total += put;
    }
    return (ssize_t)total;
}

int cert_io_shutdown(struct cert_io *io)
{
    if (io->ssl != NULL && !(SSL_get_shutdown(io->ssl) & SSL_SENT_SHUTDOWN)) {
        ERR_clear_error();
        errno = 0;
        int n = SSL_shutdown(io->ssl);
        if (n < 0) {
            int rc = ssl_result(io, n, false);
            if (rc == CERT_IO_AGAIN)
                return rc;
            /* close_notify could not be written: the FIN still goes. */
        }
    }
    if (shutdown(io->fd, SHUT_WR) != 0 && errno != ENOTCONN) {
        io->err = errno;
        return CERT_IO_ERROR;
    }
    return 1;
}

bool cert_io_pending(const struct cert_io *io)
{
    return io->ssl != NULL && SSL_has_pending(io->ssl);
}

void cert_io_close(struct cert_io *io, bool reset)
{
    SSL_free(io->ssl);
    io->ssl = NULL;
    if (io->fd < 0)
        return;
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(io->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(io->fd);
    io->fd = -1;
}

int cert_io_take_error(struct cert_io *io)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (io->fd < 0 || getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return 0;
    if (err != 0)
        io->err = err;
    return err;
}

void cert_io_discard_input(struct cert_io *io)
{
    /* MSG_TRUNC: TCP drops the bytes without copying them; bounded, since
     * only what the receive buffer holds is there. */
    for (int i = 0; io->fd >= 0 && i < 64; i++) {
        ssize_t n = recv(io->fd, NULL, 1 << 30, MSG_DONTWAIT | MSG_TRUNC);
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;
    }
}

int cert_io_unacked(const struct cert_io *io)
{
    int q = 0;
    if (io->fd < 0 || ioctl(io->fd, SIOCOUTQ, &q) != 0)
        return 0;
    return q;
}

const char *cert_io_version(const struct cert_io *io)
{
    return io->ssl != NULL && SSL_is_init_finished(io->ssl) ? SSL_get_version(io->ssl) : NULL;
}

const char *cert_io_cipher(const struct cert_io *io)
{
    return io->ssl != NULL && SSL_is_init_finished(io->ssl)
               ? SSL_CIPHER_get_name(SSL_get_current_cipher(io->ssl))
               : NULL;
}
