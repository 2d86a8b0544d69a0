#include "hc_redis.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_clock.h"

/* A command sent, waiting for its replies. */
struct cmd {
    struct cmd *next;
    hc_redis_reply_cb cb; /* NULL: one of the link's own (AUTH, CLIENT SETNAME) */
    void *arg;
    const char *what; /* the link's own: its name, for a refusal's reason */
    int replies;      /* still to come */
    bool answered;    /* cb has run */
    int64_t sent_ms;
};

struct hc_redis {
    struct event_base *base;
    struct bufferevent *bev;
    redisReader *reader;
    struct event *timer;
    struct cmd *head, *tail;
    int64_t timeout_ms;
    int64_t started_ms;
    bool connected; /* TCP is up */
    bool auth_pending;
    bool closed;    /* closed, by the peer or a deadline; only freeing is left */
    int busy;       /* callbacks running: freeing waits until they return */
    bool freed;     /* hc_redis_free was called during a callback */
    bool too_large; /* the reader refused an array */
    void (*on_message)(void *arg, const redisReply *msg);
    void (*on_close)(void *arg, enum hc_redis_close kind, const char *why);
    void *arg;
};

/* ---- a reader with bounds --------------------------------------------------------- */

static redisReplyObjectFunctions defaults, bounded;
static pthread_once_t functions_once = PTHREAD_ONCE_INIT;

static void *create_array(const redisReadTask *task, int elements)
{
    if (elements > HC_REDIS_MAX_ELEMENTS) {
        struct hc_redis *r = task->privdata;
        if (r != NULL)
            r->too_large = true;
        return NULL; /* the reader stops with an error */
    }
    return defaults.createArray(task, elements);
}

static void functions_init(void)
{
    redisReader *tmp = redisReaderCreate();
    if (tmp == NULL)
        abort(); /* at start-up, out of memory */
    defaults = *tmp->fn;
    redisReaderFree(tmp);
    bounded = defaults;
    bounded.createArray = create_array;
}

/* ---- teardown ---------------------------------------------------------------------- */

static void link_free(struct hc_redis *r)
{
    while (r->head != NULL) {
        struct cmd *c = r->head;
        r->head = c->next;
        free(c);
    }
    if (r->bev != NULL)
        bufferevent_free(r->bev);
    if (r->reader != NULL)
        redisReaderFree(r->reader);
    if (r->timer != NULL)
        event_free(r->timer);
    free(r);
}

void hc_redis_free(struct hc_redis *r)
{
    if (r == NULL)
        return;
    if (r->busy > 0) {
        r->freed = true; /* freed once the callbacks return */
        r->on_close = NULL;
        return;
    }
    link_free(r);
}

/* Closes the link for a reason: the pending commands learn it, then the
 * owner. The struct stays until hc_redis_free. */
static void link_close(struct hc_redis *r, enum hc_redis_close kind, const char *why)
{
    if (r->closed)
        return;
    r->closed = true;
    if (r->bev != NULL) {
        bufferevent_free(r->bev);
        r->bev = NULL;
    }
    evtimer_del(r->timer);
    r->busy++;
    while (r->head != NULL && !r->freed) {
        struct cmd *c = r->head;
        r->head = c->next;
        if (c->cb != NULL && !c->answered)
            c->cb(c->arg, NULL, why);
        free(c);
    }
    if (!r->freed && r->on_close != NULL)
        r->on_close(r->arg, kind, why);
    r->busy--;
}

/* ---- deadlines --------------------------------------------------------------------- */

static void arm(struct hc_redis *r)
{
    int64_t start = r->connected && !r->auth_pending ? 0 : r->started_ms;
    if (start == 0 && r->head != NULL)
        start = r->head->sent_ms;
    if (start == 0) {
        evtimer_del(r->timer); /* nothing outstanding: a subscribed link is quiet */
        return;
    }
    int64_t wait = start + r->timeout_ms - gw_now_ms();
    if (wait < 0)
        wait = 0;
    wait += 1; /* the coarse clock may lag by a tick */
    struct timeval tv = {.tv_sec = wait / 1000, .tv_usec = (wait % 1000) * 1000};
    evtimer_add(r->timer, &tv);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct hc_redis *r = arg;
    char why[96];
    if (!r->connected)
        snprintf(why, sizeof(why), "connect timed out after %lld ms", (long long)r->timeout_ms);
    else
        snprintf(why, sizeof(why), "no reply within %lld ms", (long long)r->timeout_ms);
    link_close(r, HC_REDIS_TIMEOUT, why);
    if (r->freed)
        link_free(r);
}

/* ---- replies ----------------------------------------------------------------------- */

/* One reply: to the oldest command, or a message on a subscribed link.
 * Returns -1 when the link was closed by it. */
static int dispatch(struct hc_redis *r, redisReply *reply)
{
    struct cmd *c = r->head;
    if (c == NULL) {
        if (r->on_message == NULL) {
            link_close(r, HC_REDIS_PROTOCOL, "a reply that no command asked for");
            return -1;
        }
        r->on_message(r->arg, reply);
        return r->closed || r->freed ? -1 : 0;
    }
    if (c->cb == NULL && reply->type == REDIS_REPLY_ERROR) {
        /* AUTH or CLIENT SETNAME refused: Redis's words are the reason. */
        char why[192];
        snprintf(why, sizeof(why), "%s refused: %.*s", c->what,
                 reply->len > 150 ? 150 : (int)reply->len, reply->str);
        link_close(r, HC_REDIS_AUTH, why);
        return -1;
    }
    bool first_error = reply->type == REDIS_REPLY_ERROR && !c->answered;
    if (c->cb != NULL && (!c->answered || first_error)) {
        c->answered = true;
        c->cb(c->arg, reply, NULL);
        if (r->closed || r->freed)
            return -1;
    }
    /* An error reply to a multi-reply command (SUBSCRIBE refused) ends it. */
    if (--c->replies == 0 || reply->type == REDIS_REPLY_ERROR) {
        if (r->head == c) {
            r->head = c->next;
            if (r->tail == c)
                r->tail = NULL;
        }
        if (c->cb == NULL && strcmp(c->what, "AUTH") == 0)
            r->auth_pending = false;
        free(c);
    }
    arm(r);
    return 0;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct hc_redis *r = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    r->busy++;
    while (!r->closed && !r->freed && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t n = v.iov_len;
        if (redisReaderFeed(r->reader, v.iov_base, n) != REDIS_OK) {
            link_close(r, HC_REDIS_PROTOCOL, "out of memory reading a reply");
            break;
        }
        evbuffer_drain(in, n);
        if (r->reader->len - r->reader->pos > HC_REDIS_MAX_REPLY_BYTES) {
            link_close(r, HC_REDIS_PROTOCOL, "a reply larger than 1 MiB");
            break;
        }
        for (;;) {
            void *reply = NULL;
            if (redisReaderGetReply(r->reader, &reply) != REDIS_OK) {
                char why[160];
                snprintf(why, sizeof(why), "malformed reply: %s",
                         r->too_large ? "an array with too many elements" : r->reader->errstr);
                link_close(r, HC_REDIS_PROTOCOL, why);
                break;
            }
            if (reply == NULL)
                break;
            int rc = dispatch(r, reply);
            freeReplyObject(reply);
            if (rc != 0)
                break;
        }
    }
    r->busy--;
    if (r->freed)
        link_free(r);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct hc_redis *r = arg;
    r->busy++;
    if (what & BEV_EVENT_CONNECTED) {
        r->connected = true;
        arm(r);
    } else {
        char why[160];
        int err = EVUTIL_SOCKET_ERROR();
        if ((what & BEV_EVENT_ERROR) && err != 0)
            snprintf(why, sizeof(why), "%s: %s", r->connected ? "connection" : "connect",
                     evutil_socket_error_to_string(err));
        else
            snprintf(why, sizeof(why), "connection closed by the peer");
        link_close(r, r->connected ? HC_REDIS_CLOSED : HC_REDIS_CONNECT, why);
    }
    r->busy--;
    if (r->freed)
        link_free(r);
}

/* ---- commands ---------------------------------------------------------------------- */

static int send_cmd(struct hc_redis *r, int argc, const char *const *argv, int replies,
                    hc_redis_reply_cb cb, void *arg, const char *what)
{
    if (r->closed || r->freed || argc < 1 || replies < 1)
        return -1;
    size_t lens[argc];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    char *wire = NULL;
    int n = redisFormatCommandArgv(&wire, argc, (const char **)argv, lens);
    struct cmd *c = calloc(1, sizeof(*c));
    if (n < 0 || c == NULL || bufferevent_write(r->bev, wire, (size_t)n) != 0) {
        redisFreeCommand(wire);
        free(c);
        return -1;
    }
    redisFreeCommand(wire);
    c->cb = cb;
    c->arg = arg;
    c->what = what;
    c->replies = replies;
    c->sent_ms = gw_now_ms();
    if (r->tail != NULL)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
    arm(r);
    return 0;
}

int hc_redis_command(struct hc_redis *r, int argc, const char *const *argv, int replies,
                     hc_redis_reply_cb cb, void *arg)
{
    if (cb == NULL)
        return -1;
    return send_cmd(r, argc, argv, replies, cb, arg, NULL);
}

bool hc_redis_ready(const struct hc_redis *r)
{
    return r != NULL && r->connected && !r->auth_pending && !r->closed;
}

struct hc_redis *hc_redis_connect(struct event_base *base, const struct sockaddr *addr,
                                  socklen_t addrlen, const struct hc_redis_opts *o)
{
    pthread_once(&functions_once, functions_init);
    struct hc_redis *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->base = base;
    r->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 1000;
    r->on_message = o->on_message;
    r->on_close = o->on_close;
    r->arg = o->arg;
    r->started_ms = gw_now_ms();
    r->reader = redisReaderCreateWithFunctions(&bounded);
    r->timer = evtimer_new(base, on_timer, r);
    r->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (r->reader == NULL || r->timer == NULL || r->bev == NULL) {
        link_free(r);
        return NULL;
    }
    r->reader->privdata = r;
    r->reader->maxbuf = 0; /* keep the buffer between replies: they are small */
    bufferevent_setcb(r->bev, on_read, NULL, on_event, r);
    if (bufferevent_enable(r->bev, EV_READ | EV_WRITE) != 0 ||
        bufferevent_socket_connect(r->bev, (struct sockaddr *)addr, (int)addrlen) != 0) {
        link_free(r);
        return NULL;
    }
    if (o->password != NULL) {
        const char *auth[3] = {"AUTH", o->username != NULL ? o->username : o->password,
                               o->password};
        r->auth_pending = true;
        if (send_cmd(r, o->username != NULL ? 3 : 2, auth, 1, NULL, NULL, "AUTH") != 0) {
            link_free(r);
            return NULL;
        }
    }
    if (o->client_name != NULL) {
        const char *setname[3] = {"CLIENT", "SETNAME", o->client_name};
        if (send_cmd(r, 3, setname, 1, NULL, NULL, "CLIENT SETNAME") != 0) {
            link_free(r);
            return NULL;
        }
    }
    arm(r);
    return r;
}
