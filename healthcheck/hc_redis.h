/* A link to one Redis server or sentinel on a libevent loop: hiredis's
 * command formatter and reply reader over a bufferevent of tcpgate's own.
 *
 * hiredis 0.14.1's async API is not used: it has no connect or command
 * timeouts, resolves names with a blocking getaddrinfo, and asserts (aborting
 * the process) on replies it does not expect. Here instead:
 *   - the peer is a numeric address; callers resolve names without blocking;
 *   - the connect and every command have a deadline, and one that passes
 *     closes the link;
 *   - a reply is bounded in bytes and elements (hiredis bounds the depth),
 *     and anything the link did not ask for closes it with a reason;
 *   - AUTH (a password, or a user and password) and CLIENT SETNAME are sent
 *     first; a refused AUTH closes the link with Redis's own words.
 * One thread: everything runs on the base's thread, and callbacks may free
 * the link they are called for. Used by the Sentinel watchers. */
#ifndef HC_REDIS_H
#define HC_REDIS_H

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* Bytes a reply may span, and elements an array may have. */
#define HC_REDIS_MAX_REPLY_BYTES (1024 * 1024)
#define HC_REDIS_MAX_ELEMENTS 4096

struct hc_redis;

/* Why a link closed. */
enum hc_redis_close {
    HC_REDIS_CONNECT,  /* the connect failed */
    HC_REDIS_TIMEOUT,  /* the connect or a reply did not come in time */
    HC_REDIS_AUTH,     /* AUTH or CLIENT SETNAME was refused */
    HC_REDIS_PROTOCOL, /* a malformed, oversized or unasked-for reply */
    HC_REDIS_CLOSED,   /* the peer closed the connection, or reset it */
};

/* The reply to a command, or reply NULL and why when the link closed before
 * it came. Runs once per command, unless the link is freed first. The reply
 * belongs to the link and lives until the callback returns. */
typedef void (*hc_redis_reply_cb)(void *arg, const redisReply *reply, const char *why);

struct hc_redis_opts {
    int64_t timeout_ms;      /* for the connect, and for each command */
    const char *username;    /* NULL: AUTH with the password alone */
    const char *password;    /* NULL: no AUTH */
    const char *client_name; /* CLIENT SETNAME; NULL: none */
    /* A subscribed link: a reply no command waits for is a message. NULL: such
     * a reply is a protocol error. */
    void (*on_message)(void *arg, const redisReply *msg);
    /* The link closed, for the reason given: the peer closed it, a deadline
     * passed, a reply was malformed or too large, AUTH was refused. Runs
     * after the pending commands' callbacks, and not after hc_redis_free. */
    void (*on_close)(void *arg, enum hc_redis_close kind, const char *why);
    void *arg;
};

/* Starts connecting; commands may be queued at once. The strings in opts are
 * copied. NULL when a socket or memory could not be had. */
struct hc_redis *hc_redis_connect(struct event_base *base, const struct sockaddr *addr,
                                  socklen_t addrlen, const struct hc_redis_opts *opts)
    __attribute__((warn_unused_result));

/* Queues a command (sent as soon as the link is up). `replies` is how many
 * replies it brings: 1, or one per channel for SUBSCRIBE; the callback gets
 * the first, or the first error. Returns 0, or -1 when the link is closed or
 * memory ran out (the callback then never runs). */
int hc_redis_command(struct hc_redis *r, int argc, const char *const *argv, int replies,
                     hc_redis_reply_cb cb, void *arg) __attribute__((warn_unused_result));

/* Whether the TCP connect (and AUTH, when asked for) has completed. */
bool hc_redis_ready(const struct hc_redis *r);

/* Closes the link; no callback runs after this. Accepts NULL. */
void hc_redis_free(struct hc_redis *r);

#endif
