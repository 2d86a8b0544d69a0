/* Listening sockets: one per worker and port, bound with SO_REUSEPORT, so
 * that each worker accepts on its own. */
#ifndef GW_LISTEN_H
#define GW_LISTEN_H

#include <stddef.h>

/* Opens n listening sockets for port on addr ("" or NULL: every address,
 * IPv6 and IPv4), all or none, into fds. Refuses a port that someone else
 * listens on already, which SO_REUSEPORT would otherwise let a second
 * gateway share quietly. Returns 0, or -1 with a reason. */
int gw_listen_open(const char *addr, int port, int n, int *fds, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
