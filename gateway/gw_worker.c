#include "gw_worker.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "gw_log.h"
#include "gw_session.h"

/* After accept fails for lack of descriptors or memory, the listener rests this
 * long, so the loop does not spin while nothing can be accepted. */
#define ACCEPT_BACKOFF_MS 100
/* Accept errors are logged at most once per this interval. */
#define ACCEPT_LOG_INTERVAL_MS 5000

struct listener {
    struct gw_worker *w;
    struct gw_port *port;
    struct evconnlistener *lev;
    struct event *retry;
};

/* A reload, as one worker sees it: the new snapshot and a listening socket
 * for each port it adds. */
struct update {
    struct update *next;
    struct gw_snapshot *snap; /* a reference */
    size_t n;
    int *ports;
    int *fds;
};

struct gw_worker {
    int id;
    pthread_t thread;
    bool started;
    struct event_base *base;
    struct gw_snapshot *snap;
    struct listener **listeners; /* each separately allocated: libevent holds pointers */
    size_t nlisteners;
    struct gw_session_env sessions; /* and with them, the pipe pool and the access log */
    bool sessions_ready;
    int cmd_fd;  /* eventfd: the control thread's only way in */
    int pending; /* CMD_* bits, set by the control thread before it writes cmd_fd */
    struct event *cmd;
    bool stopping;           /* worker thread only */
    int64_t stop_drain_ms;   /* written before cmd is activated */
    int64_t last_accept_log; /* ms */
    uint64_t accept_errors_since_log;
    int fd_waiters;               /* sessions waiting for a descriptor to connect */
    int64_t drain_ms;             /* what the sessions of a removed port get to finish */
    pthread_mutex_t updates_lock; /* the control thread queues, the worker takes */
    struct update *updates;
    bool updates_lock_ready;
    void (*on_exit)(void *arg);
    void *arg;
};

static void on_sessions_empty(void *arg)
{
    struct gw_worker *w = arg;
    if (w->stopping)
        event_base_loopexit(w->base, NULL);
}

static void pause_accepting(struct gw_worker *w, int err, const char *what);

static void on_fd_wait(void *arg, int delta, int err)
{
    struct gw_worker *w = arg;
    w->fd_waiters += delta;
    gw_relay_pool_short_of_fds(w->sessions.pool, w->fd_waiters > 0);
    if (delta > 0)
        pause_accepting(w, err, "upstream socket");
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)lev;
    struct listener *l = arg;
    gw_session_accept(&l->w->sessions, l->w->snap, l->port, fd, sa, salen);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct listener *l = arg;
    if (l->lev == NULL)
        return;
    if (l->w->fd_waiters > 0) {
        /* Sessions still wait for a descriptor: keep the backlog waiting too. */
        struct timeval tv = {.tv_sec = 0, .tv_usec = ACCEPT_BACKOFF_MS * 1000};
        evtimer_add(l->retry, &tv);
        return;
    }
    gw_relay_pool_short_of_fds(l->w->sessions.pool, false);
    evconnlistener_enable(l->lev);
}

/* Out of descriptors or memory: every listener of this worker rests, then
 * listens again. Live sessions go on meanwhile, and their closing frees
 * descriptors; clients wait in the kernel's backlog rather than being
 * accepted and dropped. Logged at most once per interval, with a count. */
static void pause_accepting(struct gw_worker *w, int err, const char *what)
{
    int64_t now = gw_now_ms();
    w->accept_errors_since_log++;
    if (now - w->last_accept_log >= ACCEPT_LOG_INTERVAL_MS) {
        gw_error("worker %d: %s failed: %s (%llu times since the last report); "
                 "pausing accepts for %d ms",
                 w->id, what, evutil_socket_error_to_string(err),
                 (unsigned long long)w->accept_errors_since_log, ACCEPT_BACKOFF_MS);
        w->last_accept_log = now;
        w->accept_errors_since_log = 0;
    }
    struct timeval tv = {.tv_sec = 0, .tv_usec = ACCEPT_BACKOFF_MS * 1000};
    for (size_t i = 0; i < w->nlisteners; i++) {
        struct listener *l = w->listeners[i];
        if (l->lev == NULL)
            continue;
        evconnlistener_disable(l->lev);
        evtimer_add(l->retry, &tv);
    }
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    (void)lev;
    struct listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    if (err == EMFILE || err == ENFILE)
        gw_relay_pool_short_of_fds(l->w->sessions.pool, true); /* until accepting resumes */
    pause_accepting(l->w, err, "accept");
}

static void close_listeners(struct gw_worker *w)
{
    for (size_t i = 0; i < w->nlisteners; i++) {
        struct listener *l = w->listeners[i];
        if (l->lev != NULL)
            evconnlistener_free(l->lev);
        if (l->retry != NULL)
            event_free(l->retry);
        l->lev = NULL;
        l->retry = NULL;
    }
}

enum { CMD_STOP = 1, CMD_HOSTS_DOWN = 2, CMD_UPDATE = 4 };

/* Closes a listener's socket and frees it. */
static void listener_free(struct listener *l)
{
    if (l->lev != NULL)
        evconnlistener_free(l->lev);
    if (l->retry != NULL)
        event_free(l->retry);
    free(l);
}

static void update_free(struct update *u)
{
    if (u == NULL)
        return;
    for (size_t i = 0; i < u->n; i++)
        if (u->fds[i] >= 0)
            close(u->fds[i]);
    gw_snapshot_unref(u->snap);
    free(u->ports);
    free(u->fds);
    free(u);
}

/* Takes one update on the worker's thread: listeners of ports the new
 * snapshot still serves follow it (their sockets stay open, so there is no
 * gap in accepting), the others close, and the new ports' sockets are added.
 * Sessions keep the snapshot they started on; those of a removed port get
 * the drain timeout to finish. */
static void apply_update(struct gw_worker *w, struct update *u)
{
    size_t kept = 0;
    for (size_t i = 0; i < w->nlisteners; i++) {
        struct listener *l = w->listeners[i];
        struct gw_port *np = gw_snapshot_port(u->snap, l->port->port);
        if (np != NULL) {
            l->port = np;
            w->listeners[kept++] = l;
            continue;
        }
        gw_session_drain_port(&w->sessions, l->port->port, w->drain_ms);
        listener_free(l);
    }
    w->nlisteners = kept;
    for (size_t i = 0; i < u->n; i++) {
        struct gw_port *np = gw_snapshot_port(u->snap, u->ports[i]);
        int fd = u->fds[i];
        u->fds[i] = -1;
        if (np == NULL || gw_worker_listen(w, fd, np) != 0)
            gw_error("worker %d: port %d: cannot set up the listener", w->id, u->ports[i]);
    }
    gw_snapshot_unref(w->snap);
    w->snap = u->snap;
    u->snap = NULL;
}

static void on_cmd(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct gw_worker *w = arg;
    uint64_t v;
    if (read(fd, &v, sizeof(v)) != sizeof(v))
        return;
    int cmds = __atomic_exchange_n(&w->pending, 0, __ATOMIC_ACQ_REL);
    if (cmds & CMD_UPDATE) {
        pthread_mutex_lock(&w->updates_lock);
        struct update *list = w->updates;
        w->updates = NULL;
        pthread_mutex_unlock(&w->updates_lock);
        /* Queued newest first: apply in the order they were made. */
        struct update *ordered = NULL;
        while (list != NULL) {
            struct update *next = list->next;
            list->next = ordered;
            ordered = list;
            list = next;
        }
        while (ordered != NULL) {
            struct update *next = ordered->next;
            if (!w->stopping)
                apply_update(w, ordered);
            update_free(ordered);
            ordered = next;
        }
    }
    if (cmds & CMD_HOSTS_DOWN)
        gw_session_close_down(&w->sessions);
    if (!(cmds & CMD_STOP))
        return;
    w->stopping = true;
    close_listeners(w);
    int64_t drain = __atomic_load_n(&w->stop_drain_ms, __ATOMIC_ACQUIRE);
    gw_session_drain_all(&w->sessions, drain);
    if (w->sessions.count == 0)
        event_base_loopexit(w->base, NULL);
}

struct gw_worker *gw_worker_new(int id, struct gw_snapshot *snap, const struct gw_worker_opts *o,
                                void (*on_exit)(void *arg), void *arg)
{
    struct gw_worker *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->id = id;
    w->cmd_fd = -1;
    w->on_exit = on_exit;
    w->arg = arg;
    w->drain_ms = o->drain_ms;
    if (pthread_mutex_init(&w->updates_lock, NULL) != 0) {
        free(w);
        return NULL;
    }
    w->updates_lock_ready = true;
    struct event_config *cfg = event_config_new();
    if (cfg == NULL)
        goto fail;
    /* One thread owns this base and other threads reach it only through the
     * eventfd, so libevent needs no locks here. */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    w->base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (w->base == NULL)
        goto fail;
    w->cmd_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->cmd_fd < 0)
        goto fail;
    w->cmd = event_new(w->base, w->cmd_fd, EV_READ | EV_PERSIST, on_cmd, w);
    if (w->cmd == NULL || event_add(w->cmd, NULL) != 0)
        goto fail;
    if (gw_session_env_init(&w->sessions, w->base, id) != 0)
        goto fail;
    w->sessions_ready = true;
    w->sessions.on_empty = on_sessions_empty;
    w->sessions.fd_wait = on_fd_wait;
    w->sessions.arg = w;
    w->sessions.access_log = o->access_log;
    w->sessions.pool = gw_relay_pool_new(o->max_pipes);
    if (w->sessions.pool == NULL)
        goto fail;
    w->snap = gw_snapshot_ref(snap);
    return w;
fail:
    gw_worker_free(w);
    return NULL;
}

int gw_worker_listen(struct gw_worker *w, int fd, struct gw_port *port)
{
    struct listener **n = realloc(w->listeners, (w->nlisteners + 1) * sizeof(*n));
    struct listener *l = calloc(1, sizeof(*l));
    if (n != NULL)
        w->listeners = n;
    if (n == NULL || l == NULL) {
        free(l);
        evutil_closesocket(fd);
        return -1;
    }
    l->w = w;
    l->port = port;
    l->retry = evtimer_new(w->base, on_retry, l);
    /* backlog 0: the socket is already listening. */
    l->lev = evconnlistener_new(w->base, on_accept, l,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    if (l->lev == NULL || l->retry == NULL) {
        if (l->lev == NULL)
            evutil_closesocket(fd);
        else
            evconnlistener_free(l->lev);
        if (l->retry != NULL)
            event_free(l->retry);
        free(l);
        return -1;
    }
    evconnlistener_set_error_cb(l->lev, on_accept_error);
    w->listeners[w->nlisteners++] = l;
    return 0;
}

static void *worker_main(void *arg)
{
    struct gw_worker *w = arg;
    event_base_dispatch(w->base);
    close_listeners(w);
    if (w->on_exit != NULL)
        w->on_exit(w->arg);
    return NULL;
}

int gw_worker_start(struct gw_worker *w)
{
    /* Asynchronous signals are the control thread's business; the thread
     * inherits this mask from its creation on. Faults stay unblocked. */
    sigset_t async, old;
    sigemptyset(&async);
    int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGPIPE, SIGCHLD, SIGALRM};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&async, sigs[i]);
    pthread_sigmask(SIG_BLOCK, &async, &old);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return -1;
    w->started = true;
    return 0;
}

void gw_worker_unlisten(struct gw_worker *w, const struct gw_port *port)
{
    size_t kept = 0;
    for (size_t i = 0; i < w->nlisteners; i++) {
        struct listener *l = w->listeners[i];
        if (l->port != port) {
            w->listeners[kept++] = l;
            continue;
        }
        listener_free(l);
    }
    w->nlisteners = kept;
}

static void send_cmd(struct gw_worker *w, int cmd)
{
    __atomic_fetch_or(&w->pending, cmd, __ATOMIC_ACQ_REL);
    uint64_t one = 1;
    if (write(w->cmd_fd, &one, sizeof(one)) != sizeof(one))
        gw_error("worker %d: cannot reach the worker: %s", w->id, strerror(errno));
}

void gw_worker_stop(struct gw_worker *w, int64_t drain_ms)
{
    __atomic_store_n(&w->stop_drain_ms, drain_ms, __ATOMIC_RELEASE);
    send_cmd(w, CMD_STOP);
}

void gw_worker_hosts_down(struct gw_worker *w)
{
    send_cmd(w, CMD_HOSTS_DOWN);
}

int gw_worker_update(struct gw_worker *w, struct gw_snapshot *snap, const int *ports, int *fds,
                     size_t n)
{
    struct update *u = calloc(1, sizeof(*u));
    if (u != NULL) {
        u->ports = calloc(n ? n : 1, sizeof(*u->ports));
        u->fds = calloc(n ? n : 1, sizeof(*u->fds));
    }
    if (u == NULL || u->ports == NULL || u->fds == NULL) {
        if (u != NULL) {
            free(u->ports);
            free(u->fds);
        }
        free(u);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        u->ports[i] = ports[i];
        u->fds[i] = fds[i];
        fds[i] = -1; /* the worker's now */
    }
    u->n = n;
    u->snap = gw_snapshot_ref(snap);
    pthread_mutex_lock(&w->updates_lock);
    u->next = w->updates;
    w->updates = u;
    pthread_mutex_unlock(&w->updates_lock);
    send_cmd(w, CMD_UPDATE);
    return 0;
}

void gw_worker_join(struct gw_worker *w)
{
    if (w->started)
        pthread_join(w->thread, NULL);
    w->started = false;
}

void gw_worker_free(struct gw_worker *w)
{
    if (w == NULL)
        return;
    gw_worker_join(w);
    /* Sessions still open here (a forced exit) close with the base. */
    if (w->sessions_ready)
        gw_session_env_clear(&w->sessions);
    close_listeners(w);
    for (size_t i = 0; i < w->nlisteners; i++)
        free(w->listeners[i]);
    free(w->listeners);
    if (w->cmd != NULL)
        event_free(w->cmd);
    if (w->cmd_fd >= 0)
        close(w->cmd_fd);
    if (w->base != NULL)
        event_base_free(w->base);
    gw_relay_pool_free(w->sessions.pool);
    while (w->updates != NULL) { /* made after the worker stopped */
        struct update *next = w->updates->next;
        update_free(w->updates);
        w->updates = next;
    }
    if (w->updates_lock_ready)
        pthread_mutex_destroy(&w->updates_lock);
    gw_snapshot_unref(w->snap);
    free(w);
}
