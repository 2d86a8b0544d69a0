#include "cert_dial.h"

#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { DIAL_CONNECTING, DIAL_PREFIX, DIAL_TLS, DIAL_DONE };

void cert_dial_clear(struct cert_dial *d)
{
    SSL_free(d->ssl);
    d->ssl = NULL;
    free(d->rest);
    d->rest = NULL;
    d->rest_len = 0;
}

int cert_dial_start(struct cert_dial *d, struct cert_io *io, const struct sockaddr *addr,
                    socklen_t addrlen, SSL *ssl)
{
    memset(d, 0, sizeof(*d));
    d->ssl = ssl;
    d->state = DIAL_CONNECTING;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cert_io_init(io, fd);
    if (fd < 0) {
        int e = errno;
        cert_dial_clear(d);
        errno = e;
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, addr, addrlen) != 0 && errno != EINPROGRESS) {
        int e = errno;
        cert_dial_clear(d);
        cert_io_close(io, false);
        errno = e;
        return -1;
    }
    return 0;
}

bool cert_dial_connected(const struct cert_dial *d)
{
    return d->state != DIAL_CONNECTING;
}

/* Sends what is left of the prefix: 1 when it all went. */
static int send_rest(struct cert_dial *d, struct cert_io *io)
{
    while (d->rest_len > 0) {
        ssize_t n = cert_io_write(io, d->rest, d->rest_len);
        if (n < 0)
            return (int)n;
        memmove(d->rest, d->rest + n, d->rest_len - (size_t)n);
        d->rest_len -= (size_t)n;
    }
    free(d->rest);
    d->rest = NULL;
    return 1;
}

int cert_dial_step(struct cert_dial *d, struct cert_io *io, short what, cert_dial_prefix_fn prefix,
                   void *arg)
{
    if (d->state == DIAL_CONNECTING) {
        if (!(what & EV_WRITE))
            return CERT_IO_AGAIN;
        /* Writable alone is connected; readable too is a failure, or a peer
         * that speaks first: only then is the socket asked. */
        if (what & EV_READ) {
            int err = 0;
            socklen_t len = sizeof(err);
            if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                err = errno;
            if (err != 0) {
                io->err = err;
                io->ssl_err = 0;
                return CERT_IO_ERROR;
            }
        }
        d->state = DIAL_PREFIX;
        if (prefix != NULL) {
            uint8_t buf[CERT_DIAL_PREFIX_MAX];
            size_t n = prefix(arg, io->fd, buf, sizeof(buf));
            if (n > 0) {
                d->rest = malloc(n);
                if (d->rest == NULL) {
                    io->err = ENOMEM;
                    return CERT_IO_ERROR;
                }
                memcpy(d->rest, buf, n);
                d->rest_len = n;
            }
        }
    }
    if (d->state == DIAL_PREFIX) {
        int rc = send_rest(d, io);
        if (rc != 1)
            return rc;
        d->state = DIAL_TLS;
    }
    if (d->state == DIAL_TLS) {
        if (d->ssl != NULL) {
            SSL *ssl = d->ssl;
            d->ssl = NULL;
            if (cert_io_start_tls(io, ssl, false) != 0) {
                io->err = ENOMEM;
                return CERT_IO_ERROR;
            }
        }
        if (io->ssl != NULL) {
            int rc = cert_io_handshake(io);
            if (rc == CERT_IO_ERROR)
                d->tls_failed = io->ssl_err != 0 || SSL_get_verify_result(io->ssl) != X509_V_OK;
            if (rc != 1)
                return rc;
        }
        d->state = DIAL_DONE;
    }
    return CERT_DIAL_DONE;
}
