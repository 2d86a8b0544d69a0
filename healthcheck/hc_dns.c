#include "hc_dns.h"

#include <arpa/inet.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hc_dns_req {
    struct evdns_getaddrinfo_request *req;
    hc_dns_cb cb;
    void *arg;
    bool cancelled;
};

int hc_dns_literal(const char *host, uint16_t port, struct sockaddr_storage *out, socklen_t *len)
{
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        *len = sizeof(*in);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *len = sizeof(*in6);
        return 0;
    }
    return -1;
}

/* (family, address bytes, port), with v4-mapped IPv6 read as IPv4. */
static int key(const struct sockaddr *sa, uint8_t bytes[16], uint16_t *port)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memcpy(bytes, &in->sin_addr, 4);
        *port = in->sin_port;
        return AF_INET;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        *port = in6->sin6_port;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            memcpy(bytes, &in6->sin6_addr.s6_addr[12], 4);
            return AF_INET;
        }
        memcpy(bytes, &in6->sin6_addr, 16);
        return AF_INET6;
    }
    return -1;
}

int hc_dns_same_addr(const struct sockaddr *a, const struct sockaddr *b)
{
    uint8_t ka[16], kb[16];
    uint16_t pa = 0, pb = 0;
    int fa = key(a, ka, &pa), fb = key(b, kb, &pb);
    if (fa < 0 || fa != fb || pa != pb)
        return 0;
    return memcmp(ka, kb, fa == AF_INET ? 4 : 16) == 0;
}

static void on_done(int err, struct evutil_addrinfo *res, void *arg)
{
    struct hc_dns_req *r = arg;
    if (!r->cancelled) {
        const struct evutil_addrinfo *ai = res;
        while (ai != NULL && ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            ai = ai->ai_next;
        if (err == 0 && ai != NULL)
            r->cb(r->arg, ai->ai_addr, (socklen_t)ai->ai_addrlen, NULL);
        else
            r->cb(r->arg, NULL, 0, err != 0 ? evutil_gai_strerror(err) : "no address");
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
    free(r);
}

struct hc_dns_req *hc_dns_resolve(struct evdns_base *dns, const char *host, uint16_t port,
                                  hc_dns_cb cb, void *arg)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (hc_dns_literal(host, port, &ss, &len) == 0) {
        cb(arg, (struct sockaddr *)&ss, len, NULL);
        return NULL;
    }
    if (dns == NULL) {
        cb(arg, NULL, 0, "not a numeric address, and no resolver");
        return NULL;
    }
    struct hc_dns_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        cb(arg, NULL, 0, "out of memory");
        return NULL;
    }
    r->cb = cb;
    r->arg = arg;
    char service[8];
    snprintf(service, sizeof(service), "%u", (unsigned)port);
    struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct evdns_getaddrinfo_request *q = evdns_getaddrinfo(dns, host, service, &hints, on_done, r);
    if (q == NULL)
        return NULL; /* answered at once: on_done has run and freed r */
    r->req = q;
    return r;
}

void hc_dns_cancel(struct hc_dns_req *r)
{
    if (r == NULL)
        return;
    r->cancelled = true;
    evdns_getaddrinfo_cancel(r->req); /* on_done runs (now or later) and frees r */
}
