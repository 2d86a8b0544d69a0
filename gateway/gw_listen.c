#include "gw_listen.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int open_listener(const char *addr, int port, bool shared, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len;
    memset(&ss, 0, sizeof(ss));
    bool any = addr == NULL || addr[0] == '\0';
    if (any) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_any;
        in6->sin6_port = htons((uint16_t)port);
        len = sizeof(*in6);
    } else {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_PASSIVE | AI_NUMERICHOST};
        struct addrinfo *res = NULL;
        char portstr[8];
        snprintf(portstr, sizeof(portstr), "%d", port);
        int rc = getaddrinfo(addr, portstr, &hints, &res);
        if (rc != 0) {
            snprintf(err, errlen, "listen_address \"%s\": %s", addr, gai_strerror(rc));
            return -1;
        }
        memcpy(&ss, res->ai_addr, res->ai_addrlen);
        len = res->ai_addrlen;
        freeaddrinfo(res);
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 && any && errno == EAFNOSUPPORT) {
        /* No IPv6 on this host: every IPv4 address instead. */
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        memset(&ss, 0, sizeof(ss));
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_ANY);
        in->sin_port = htons((uint16_t)port);
        len = sizeof(*in);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    }
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (shared && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        snprintf(err, errlen, "SO_REUSEPORT: %s", strerror(errno));
        goto fail;
    }
    if (ss.ss_family == AF_INET6 && any)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        snprintf(err, errlen, "bind: %s", strerror(errno));
        goto fail;
    }
    if (shared && listen(fd, SOMAXCONN) != 0) {
        snprintf(err, errlen, "listen: %s", strerror(errno));
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return -1;
}

/* Whether someone else listens on the port already: SO_REUSEPORT would
 * otherwise let a second gateway quietly take half of its connections. */
static int port_taken(const char *addr, int port, char *err, size_t errlen)
{
    int fd = open_listener(addr, port, false, err, errlen);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

int gw_listen_open(const char *addr, int port, int n, int *fds, char *err, size_t errlen)
{
    if (port_taken(addr, port, err, errlen) != 0)
        return -1;
    for (int i = 0; i < n; i++) {
        fds[i] = open_listener(addr, port, true, err, errlen);
        if (fds[i] < 0) {
            for (int j = 0; j < i; j++)
                close(fds[j]);
            return -1;
        }
    }
    return 0;
}
