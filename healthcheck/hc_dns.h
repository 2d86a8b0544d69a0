/* Name resolution that never blocks the loop it runs on: a numeric address
 * is answered at once, a name is looked up with libevent's evdns (which reads
 * resolv.conf and /etc/hosts). Used by the control thread for the sentinels
 * and the nodes they name. */
#ifndef HC_DNS_H
#define HC_DNS_H

#include <event2/dns.h>
#include <stdint.h>
#include <sys/socket.h>

struct hc_dns_req;

/* The first address of host:port, or addr NULL and why. */
typedef void (*hc_dns_cb)(void *arg, const struct sockaddr *addr, socklen_t len, const char *why);

/* Resolves host (an IPv4 or IPv6 literal, or a name) for port. The callback
 * may run before this returns, and then NULL is returned; otherwise the
 * request, which hc_dns_cancel can stop. dns NULL: literals only. */
struct hc_dns_req *hc_dns_resolve(struct evdns_base *dns, const char *host, uint16_t port,
                                  hc_dns_cb cb, void *arg);

/* The callback will not run. Only for a request whose callback has not run. */
void hc_dns_cancel(struct hc_dns_req *req);

/* Reads a literal address into out; returns 0, or -1 when host is a name. */
int hc_dns_literal(const char *host, uint16_t port, struct sockaddr_storage *out, socklen_t *len);

/* Whether two addresses are the same IP and port (an IPv4-mapped IPv6
 * address is its IPv4 one). */
int hc_dns_same_addr(const struct sockaddr *a, const struct sockaddr *b);

#endif
