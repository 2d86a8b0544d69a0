/* Making an outgoing connection: a non-blocking connect, then bytes in clear
 * (a PROXY header, which must precede TLS), then TLS when asked for. Each
 * step is resumed from the owner's edge-triggered event on the socket, the
 * event the connection keeps for the rest of its life, so that the socket is
 * registered once. The sessions' upstreams and the health checks both dial
 * this way.
 *
 *   cert_dial_start()         socket, connect; the owner registers its event
 *   cert_dial_step() on each event, until CERT_DIAL_DONE or CERT_IO_ERROR
 *
 * The prefix is asked for once the connect is done (a v1 header names the
 * connection's own addresses), from the owner's callback. */
#ifndef CERT_DIAL_H
#define CERT_DIAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cert_io.h"

#define CERT_DIAL_DONE 1

struct cert_dial {
    SSL *ssl;      /* layered on after the prefix; NULL: plain */
    uint8_t *rest; /* the part of the prefix the socket did not take at once */
    size_t rest_len;
    uint8_t state;
    bool tls_failed; /* after CERT_IO_ERROR: TLS refused (the host answered) */
};

/* Writes the prefix into buf (cap bytes) for the connection on fd; returns
 * its length (0: none). */
typedef size_t (*cert_dial_prefix_fn)(void *arg, int fd, uint8_t *buf, size_t cap);

#define CERT_DIAL_PREFIX_MAX 1024

/* Opens a non-blocking socket for addr and starts connecting it, as io's
 * (cert_io_init); ssl (NULL: plain) is taken in every case. Returns 0, or
 * -1 with errno when no socket could be had or the connect failed at once
 * (io is then closed). */
int cert_dial_start(struct cert_dial *d, struct cert_io *io, const struct sockaddr *addr,
                    socklen_t addrlen, SSL *ssl) __attribute__((warn_unused_result));

/* Goes on after an event (what: libevent's EV_READ/EV_WRITE bits): returns
 * CERT_DIAL_DONE once connected, prefixed and (with TLS) handshaken;
 * CERT_IO_AGAIN; or CERT_IO_ERROR, with io->err (errno of a failed connect
 * or write) or io->ssl_err and d->tls_failed. prefix may be NULL. */
int cert_dial_step(struct cert_dial *d, struct cert_io *io, short what, cert_dial_prefix_fn prefix,
                   void *arg);

/* Whether the TCP connect has completed. */
bool cert_dial_connected(const struct cert_dial *d);

/* Frees what a dial holds that its io does not (an SSL not yet layered on, a
 * prefix not yet sent). The io is the caller's to close. */
void cert_dial_clear(struct cert_dial *d);

#endif
