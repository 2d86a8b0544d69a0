/* One side of a connection: a non-blocking socket, with TLS over it or not.
 * The one place where tcpgate reads and writes TLS, and where the ownership
 * of a socket and its SSL is decided:
 *   - an io owns its descriptor from cert_io_init, and its SSL from
 *     cert_io_start_tls, also when that fails; cert_io_close frees both;
 *   - an io has no event and no callback: its owner registers one
 *     edge-triggered event for the socket (read, write and closed, once) and
 *     calls in when it fires. AGAIN means: wait for the next edge. With TLS
 *     the edge may have to be a writable one during a read (want_write), and
 *     a read may find bytes OpenSSL holds already (cert_io_pending), so the
 *     owner reads until AGAIN.
 * No allocation of its own: the struct is embedded in its owner. Used by the
 * sessions, the relay and the health checks. */
#ifndef CERT_IO_H
#define CERT_IO_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* What read, write, handshake and shutdown return besides a count. */
#define CERT_IO_AGAIN (-2)
#define CERT_IO_ERROR (-1)

struct cert_io {
    int fd;   /* -1: closed */
    SSL *ssl; /* NULL: plain */
    /* After CERT_IO_ERROR: errno (0 when TLS itself failed), and OpenSSL's
     * first error (0 when below TLS). */
    int err;
    unsigned long ssl_err;
    /* After CERT_IO_AGAIN: the socket must become writable, not readable. */
    bool want_write;
};

/* Takes fd (non-blocking), plain. */
void cert_io_init(struct cert_io *io, int fd);

/* Puts TLS on the io's socket, as the server (accepting) or the client;
 * takes ssl in every case. Bytes already exchanged in clear (a PROXY header)
 * stay what they were. Returns 0, or -1 when ssl could not take the socket
 * (it is freed; the socket stays the io's). */
int cert_io_start_tls(struct cert_io *io, SSL *ssl, bool server)
    __attribute__((warn_unused_result));

/* The TLS handshake, resumed on each edge: 1 when it is done, CERT_IO_AGAIN,
 * or CERT_IO_ERROR (err, ssl_err and SSL_get_verify_result say why). */
int cert_io_handshake(struct cert_io *io);

/* Reads up to len bytes: how many, 0 at the peer's end, CERT_IO_AGAIN or
 * CERT_IO_ERROR. The end is a FIN, or with TLS close_notify; a TLS stream
 * cut without close_notify, by a FIN or a reset, ends there too (a dirty
 * shutdown: see SSL_OP_IGNORE_UNEXPECTED_EOF), since its framing is the
 * application's. A plain stream's reset is an error. */
ssize_t cert_io_read(struct cert_io *io, void *buf, size_t len);

/* Writes up to len bytes: how many (fewer only when the socket is full, or
 * failed after them), CERT_IO_AGAIN or CERT_IO_ERROR. After a short write or
 * AGAIN, the next write must start with the bytes not yet taken (their
 * address may change: TLS keeps a record of them that is half written). */
ssize_t cert_io_write(struct cert_io *io, const void *buf, size_t len);

/* Ends the writing half: TLS close_notify, then the FIN. 1 when done,
 * CERT_IO_AGAIN (close_notify waits for room; call again when writable) or
 * CERT_IO_ERROR. Reading goes on. */
int cert_io_shutdown(struct cert_io *io);

/* Whether TLS holds bytes read from the socket already: a read may give
 * data with no new edge to come. Always false for a plain io. */
bool cert_io_pending(const struct cert_io *io);

/* Frees the SSL and closes the socket; with reset, the peer gets a RST and
 * whatever is still queued to it is dropped. Accepts a closed io. */
void cert_io_close(struct cert_io *io, bool reset);

/* The socket's pending error (SO_ERROR), which this takes: a reset that
 * came while nothing was being read. 0 when none. The bytes that arrived
 * before it can still be read; the read after them then returns 0. */
int cert_io_take_error(struct cert_io *io);

/* Drops what the peer sent and nobody read, so that a close sends a FIN:
 * the kernel answers a close with unread input by a reset, and drops what
 * was still queued to the peer. */
void cert_io_discard_input(struct cert_io *io);

/* Bytes queued in the kernel to the peer and not acknowledged yet. */
int cert_io_unacked(const struct cert_io *io);

/* The version ("TLSv1.3") and cipher of a finished handshake; NULL when
 * there is none. */
const char *cert_io_version(const struct cert_io *io);
const char *cert_io_cipher(const struct cert_io *io);

#endif
