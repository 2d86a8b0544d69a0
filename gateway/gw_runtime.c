#include "gw_runtime.h"

#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <stddef.h>
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "gw_access_log.h"

#include "gw_admin.h"
#include "gw_limits.h"
#include "gw_listen.h"
#include "gw_log.h"
#include "gw_process.h"
#include "gw_session.h"
#include "gw_watch.h"
#include "gw_snapshot.h"
#include "gw_worker.h"

/* A snapshot a reload replaced, kept (with the certificate store it was built
 * from) until the last session that started on it has ended, so that it is
 * freed here, on the control thread, where its health checks live. */
struct retired {
    struct retired *next;
    struct gw_snapshot *snap;
    struct cert_store *store;
};

struct gw_runtime {
    const struct gw_config *cfg;
    struct gw_build_env env;     /* what a snapshot is built from */
    struct gw_view view;         /* what the admin API shows */
    struct api_diags load_diags; /* the last load's problems */
    struct retired *retired;
    struct event *sweep;
    struct event *reload_ev; /* a reload asked for, shortly after the last request */
    int64_t reload_first_ms; /* when the oldest pending request came */
    char reload_trigger[32]; /* what asked for the pending reload */
    struct gw_watch *watch;
    struct gw_admin *admin;
    struct event *sigusr1;
    int *listening;    /* the ports the workers listen on (a port may be in the set */
    size_t nlistening; /* and not here, when it could not be opened) */
    struct hc_engine *hc;
    struct event *rotate; /* session ticket key rotation */
    int nworkers;
    struct gw_snapshot *snap;
    struct gw_worker **workers;
    struct event_base *control;
    struct event *sigterm, *sigint, *sighup;
    int exit_fd; /* eventfd: workers report that they have ended */
    struct event *exit_ev;
    int exited;
    int stop_signals;
};

int gw_default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

static void print_diags(const struct api_diags *d, FILE *out)
{
    for (size_t i = 0; i < d->count; i++) {
        const struct api_diag *it = &d->items[i];
        fprintf(out, "%s: %s: %s%s\n", it->file, it->field,
                it->severity == API_SEV_WARNING ? "warning: " : "", it->reason);
    }
}

static void log_diags(const struct api_diags *d)
{
    for (size_t i = 0; i < d->count; i++) {
        const struct api_diag *it = &d->items[i];
        gw_log(it->severity == API_SEV_WARNING ? GW_LOG_WARN : GW_LOG_ERROR, "%s: %s: %s%s",
               it->file, it->field, it->severity == API_SEV_ERROR ? "skipped: " : "", it->reason);
    }
}

static struct cert_store *load_store(const struct gw_config *cfg, struct api_diags *diags)
{
    struct cert_store *st = cert_store_load(cfg->certs_path, diags);
    cert_store_set_strict_keys(st, cfg->strict_key_permissions);
    return st;
}

size_t gw_check(const struct gw_config *cfg, const struct api_diags *config_diags)
{
    struct api_diags diags = {0};
    struct gw_build_env env = {.cfg = cfg};
    env.store = load_store(cfg, &diags);
    env.keys = cert_ticket_keys_new();
    if (env.keys == NULL)
        abort();
    struct gw_snapshot *snap = gw_snapshot_load(&env, 1, &diags);
    print_diags(config_diags, stderr);
    print_diags(&diags, stderr);
    size_t errors = api_diags_errors(config_diags) + api_diags_errors(&diags);
    if (snap != NULL) {
        printf("%s: %zu definitions, %zu servable on %zu ports, %zu errors\n", cfg->app_path,
               snap->set.count, snap->napis, snap->nports, errors);
    }
    gw_snapshot_unref(snap);
    cert_store_free(env.store);
    cert_ticket_keys_free(env.keys);
    api_diags_free(&diags);
    return errors;
}

/* ---- listening sockets ------------------------------------------------------ */

static void log_listening(struct gw_runtime *rt, const struct gw_port *port)
{
    char ids[512];
    size_t n = 0;
    ids[0] = '\0';
    for (size_t i = 0; i < port->napis && n < sizeof(ids); i++)
        n += (size_t)snprintf(ids + n, sizeof(ids) - n, "%s%s", i ? "," : "",
                              port->apis[i]->def->api_id);
    gw_info("listening on %s:%d (%s) api_id=%s",
            rt->cfg->listen_address[0] ? rt->cfg->listen_address : "*", port->port,
            api_protocol_name(port->protocol), ids);
}

/* At start: opens the port's sockets and hands them to the workers. */
static int listen_port(struct gw_runtime *rt, struct gw_port *port)
{
    int fds[rt->nworkers];
    char err[256];
    if (gw_listen_open(rt->cfg->listen_address, port->port, rt->nworkers, fds, err, sizeof(err)) !=
        0) {
        gw_error("port %d: cannot listen: %s; its definitions are not served", port->port, err);
        return -1;
    }
    for (int i = 0; i < rt->nworkers; i++) {
        if (gw_worker_listen(rt->workers[i], fds[i], port) != 0) {
            for (int j = i + 1; j < rt->nworkers; j++)
                close(fds[j]);
            for (int j = 0; j < i; j++)
                gw_worker_unlisten(rt->workers[j], port);
            gw_error("port %d: cannot set up the listener; its definitions are not served",
                     port->port);
            return -1;
        }
    }
    log_listening(rt, port);
    return 0;
}

/* ---- reload ------------------------------------------------------------------------ */

static bool is_listening(const struct gw_runtime *rt, int port)
{
    for (size_t i = 0; i < rt->nlistening; i++)
        if (rt->listening[i] == port)
            return true;
    return false;
}

/* After a swap: the ports of snap that were open already, and those just opened. */
static void set_listening(struct gw_runtime *rt, const struct gw_snapshot *snap, const int *opened,
                          size_t nopened)
{
    size_t n = 0;
    int *next = calloc(snap->nports + 1, sizeof(*next));
    if (next == NULL)
        abort();
    for (size_t i = 0; i < snap->nports; i++) {
        int port = snap->ports[i].port;
        bool open = is_listening(rt, port);
        for (size_t j = 0; j < nopened && !open; j++)
            open = opened[j] == port;
        if (open)
            next[n++] = port;
    }
    free(rt->listening);
    rt->listening = next;
    rt->nlistening = n;
}

static void sweep_retired(struct gw_runtime *rt, bool all)
{
    struct retired **pp = &rt->retired;
    while (*pp != NULL) {
        struct retired *r = *pp;
        if (!all && __atomic_load_n(&r->snap->refs, __ATOMIC_ACQUIRE) > 1) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        gw_snapshot_unref(r->snap);
        cert_store_free(r->store);
        free(r);
    }
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_runtime *rt = arg;
    sweep_retired(rt, false);
    if (rt->retired != NULL) { /* sessions still hold one: look again */
        struct timeval again = {1, 0};
        evtimer_add(rt->sweep, &again);
    }
}

static void keep_diags(struct gw_runtime *rt, struct api_diags *diags)
{
    api_diags_free(&rt->load_diags);
    rt->load_diags = *diags;
    memset(diags, 0, sizeof(*diags));
}

static void reload_failed(struct gw_runtime *rt, const char *trigger, const char *why)
{
    struct gw_reload_info *ri = &rt->view.reload;
    ri->failed++;
    ri->last_ok = false;
    ri->last_unix = time(NULL);
    snprintf(ri->last_trigger, sizeof(ri->last_trigger), "%s", trigger);
    snprintf(ri->last_error, sizeof(ri->last_error), "%s", why);
    gw_error("reload (%s) failed: %s; the running definitions stay", trigger, why);
}

/* Reloads the definitions, all or nothing: the new set is loaded and
 * validated, its snapshot (TLS contexts, checks) built and its new ports
 * opened before anything changes; only then do the workers move to it.
 * Returns 0, or -1 with the running set kept. */
static int reload_set(struct gw_runtime *rt, const char *trigger);

static int reload(struct gw_runtime *rt, const char *trigger)
{
    gw_process_notify("RELOADING=1");
    int rc = reload_set(rt, trigger);
    gw_process_notify("READY=1");
    return rc;
}

static int reload_set(struct gw_runtime *rt, const char *trigger)
{
    int nw = rt->nworkers;
    char err[320];
    struct api_diags diags = {0};
    struct gw_build_env env = rt->env;
    /* Certificates are read again, so that changed files take effect. */
    env.store = load_store(rt->cfg, &diags);
    size_t nnew = 0;
    int *ports = NULL, *fds = NULL;
    struct gw_snapshot *snap = gw_snapshot_load(&env, nw, &diags);
    if (snap == NULL) {
        snprintf(err, sizeof(err), "cannot load definitions from %s", rt->cfg->app_path);
        goto fail;
    }
    ports = calloc(snap->nports ? snap->nports : 1, sizeof(*ports));
    fds = calloc((snap->nports ? snap->nports : 1) * (size_t)nw, sizeof(*fds));
    if (ports == NULL || fds == NULL)
        abort();
    for (size_t i = 0; i < snap->nports; i++) {
        int port = snap->ports[i].port;
        if (is_listening(rt, port))
            continue; /* still served: its sockets stay open */
        char why[256];
        if (gw_listen_open(rt->cfg->listen_address, port, nw, &fds[nnew * (size_t)nw], why,
                           sizeof(why)) != 0) {
            snprintf(err, sizeof(err), "port %d: cannot listen: %s", port, why);
            goto fail;
        }
        ports[nnew++] = port;
    }
    /* Swap. Worker w takes column w of the new sockets. */
    int *col = calloc(nnew ? nnew : 1, sizeof(*col));
    if (col == NULL)
        abort();
    for (int w = 0; w < nw; w++) {
        for (size_t i = 0; i < nnew; i++)
            col[i] = fds[i * (size_t)nw + (size_t)w];
        if (gw_worker_update(rt->workers[w], snap, ports, col, nnew) != 0)
            abort(); /* out of memory: a half-applied reload is worse than an exit */
    }
    free(col);
    for (size_t i = 0; i < rt->nlistening; i++)
        if (gw_snapshot_port(snap, rt->listening[i]) == NULL)
            gw_info("reload: port %d is no longer served; its connections drain", rt->listening[i]);
    for (size_t i = 0; i < nnew; i++)
        log_listening(rt, gw_snapshot_port(snap, ports[i]));
    set_listening(rt, snap, ports, nnew);
    free(ports);
    free(fds);
    struct retired *r = calloc(1, sizeof(*r));
    if (r == NULL)
        abort();
    r->snap = rt->snap;
    r->store = rt->env.store;
    r->next = rt->retired;
    rt->retired = r;
    rt->snap = rt->view.snap = snap;
    rt->env.store = env.store;
    hc_engine_commit(rt->hc, true);
    log_diags(&diags);
    size_t errors = api_diags_errors(&diags);
    keep_diags(rt, &diags);
    struct gw_reload_info *ri = &rt->view.reload;
    ri->ok++;
    ri->last_ok = true;
    ri->last_unix = time(NULL);
    ri->last_error[0] = '\0';
    snprintf(ri->last_trigger, sizeof(ri->last_trigger), "%s", trigger);
    gw_info("reload (%s): %zu definitions on %zu ports, %zu skipped with errors", trigger,
            snap->napis, snap->nports, errors);
    struct timeval soon = {1, 0};
    evtimer_add(rt->sweep, &soon);
    return 0;

fail:
    for (size_t i = 0; i < nnew * (size_t)nw; i++)
        close(fds[i]);
    free(ports);
    free(fds);
    gw_snapshot_unref(snap);
    hc_engine_commit(rt->hc, false);
    cert_store_free(env.store);
    log_diags(&diags);
    api_diags_free(&diags); /* /tyk/apis keeps showing the running set's */
    reload_failed(rt, trigger, err);
    return -1;
}

/* Requests that arrive close together make one reload: it runs once they
 * have been quiet for RELOAD_QUIET_MS (an editor's save is several events),
 * and at most RELOAD_MAX_WAIT_MS after the first. */
#define RELOAD_QUIET_MS 250
#define RELOAD_MAX_WAIT_MS 2000

static void on_reload_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_runtime *rt = arg;
    rt->reload_first_ms = 0;
    reload(rt, rt->reload_trigger);
}

static void request_reload(struct gw_runtime *rt, const char *trigger)
{
    if (rt->stop_signals > 0)
        return;
    int64_t now = gw_now_ms();
    if (rt->reload_first_ms == 0)
        rt->reload_first_ms = now;
    snprintf(rt->reload_trigger, sizeof(rt->reload_trigger), "%s", trigger);
    int64_t wait = RELOAD_QUIET_MS;
    if (now + wait > rt->reload_first_ms + RELOAD_MAX_WAIT_MS)
        wait = rt->reload_first_ms + RELOAD_MAX_WAIT_MS - now;
    if (wait < 0)
        wait = 0;
    struct timeval tv = {.tv_sec = wait / 1000, .tv_usec = (wait % 1000) * 1000};
    evtimer_add(rt->reload_ev, &tv);
}

static void on_folder_change(void *arg)
{
    request_reload(arg, "app_path changed");
}

static int admin_reload(void *arg)
{
    struct gw_runtime *rt = arg;
    if (rt->stop_signals > 0) {
        reload_failed(rt, "admin API", "the gateway is shutting down");
        return -1;
    }
    evtimer_del(rt->reload_ev); /* this one covers any pending request */
    rt->reload_first_ms = 0;
    return reload(rt, "admin API");
}

/* ---- control thread ------------------------------------------------------------ */

/* Every open connection, of the running set and of those a reload replaced. */
static int64_t live_connections(const struct gw_runtime *rt)
{
    return __atomic_load_n(rt->snap->active_total, __ATOMIC_RELAXED);
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct gw_runtime *rt = arg;
    rt->stop_signals++;
    if (rt->stop_signals == 1) {
        gw_process_notify("STOPPING=1");
        gw_info("received %s: no longer accepting; draining %lld connections for up to %lld ms",
                sig == SIGINT ? "SIGINT" : "SIGTERM", (long long)live_connections(rt),
                (long long)rt->cfg->drain_timeout_ms);
        for (int i = 0; i < rt->nworkers; i++)
            gw_worker_stop(rt->workers[i], rt->cfg->drain_timeout_ms);
    } else {
        gw_warn("received a second stop signal: closing all connections now");
        for (int i = 0; i < rt->nworkers; i++)
            gw_worker_stop(rt->workers[i], 0);
    }
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    request_reload(arg, "SIGHUP");
}

static void on_usr1(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    struct gw_runtime *rt = arg;
    gw_access_log_reopen(rt->view.access_log);
}

static void on_health_change(void *arg, struct hc_target *t, bool up)
{
    struct gw_runtime *rt = arg;
    if (t == NULL) {
        /* A Sentinel watcher: nodes it added join the definitions, the
         * running set's and those of sessions still on older ones. */
        if (rt->snap != NULL)
            gw_snapshot_sync(rt->snap, &rt->env);
        for (struct retired *r = rt->retired; r != NULL; r = r->next)
            gw_snapshot_sync(r->snap, &rt->env);
        if (hc_engine_take_reload_request(rt->hc))
            request_reload(rt, "sentinel node table full");
    }
    if (up || rt->workers == NULL)
        return;
    for (int i = 0; i < rt->nworkers; i++)
        if (rt->workers[i] != NULL)
            gw_worker_hosts_down(rt->workers[i]);
}

static void on_worker_exit(void *arg)
{
    struct gw_runtime *rt = arg;
    uint64_t one = 1;
    if (write(rt->exit_fd, &one, sizeof(one)) != sizeof(one))
        abort(); /* an eventfd write of 1 cannot fail short of a bug */
}

static void on_exit_event(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct gw_runtime *rt = arg;
    uint64_t v = 0;
    if (read(fd, &v, sizeof(v)) == sizeof(v))
        rt->exited += (int)v;
    if (rt->exited >= rt->nworkers)
        event_base_loopbreak(rt->control);
}

static void log_stats(const struct gw_runtime *rt)
{
    for (size_t i = 0; i < rt->snap->napis; i++) {
        struct gw_api_stats sum;
        char buf[1024];
        gw_stats_sum(rt->snap->apis[i].stats, rt->nworkers, &sum);
        gw_stats_format(&sum, buf, sizeof(buf));
        gw_info("stats api_id=%s %s", rt->snap->apis[i].def->api_id, buf);
    }
    for (size_t i = 0; i < rt->snap->nports; i++) {
        const struct gw_port *p = &rt->snap->ports[i];
        struct gw_port_stats sum;
        gw_port_stats_sum(p->stats, rt->nworkers, &sum);
        char buf[1024];
        size_t n = 0;
        buf[0] = '\0';
#define GW_STAT_FMT(name, desc)                                                                    \
    if (n < sizeof(buf))                                                                           \
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, " " #name "=%lld", (long long)sum.name);
        GW_PORT_COUNTERS(GW_STAT_FMT)
#undef GW_STAT_FMT
        gw_info("stats port=%d%s", p->port, buf);
    }
}

static void on_rotate(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_runtime *rt = arg;
    cert_ticket_keys_rotate(rt->env.keys);
    gw_debug("session ticket keys rotated");
}

static void runtime_free(struct gw_runtime *rt)
{
    gw_admin_free(rt->admin);
    gw_watch_free(rt->watch);
    if (rt->workers != NULL) {
        for (int i = 0; i < rt->nworkers; i++)
            gw_worker_free(rt->workers[i]);
        free(rt->workers);
    }
    gw_access_log_close(rt->view.access_log);
    if (rt->sigusr1 != NULL)
        event_free(rt->sigusr1);
    if (rt->sweep != NULL)
        event_free(rt->sweep);
    if (rt->reload_ev != NULL)
        event_free(rt->reload_ev);
    if (rt->sigterm != NULL)
        event_free(rt->sigterm);
    if (rt->sigint != NULL)
        event_free(rt->sigint);
    if (rt->sighup != NULL)
        event_free(rt->sighup);
    if (rt->exit_ev != NULL)
        event_free(rt->exit_ev);
    if (rt->rotate != NULL)
        event_free(rt->rotate);
    if (rt->exit_fd >= 0)
        close(rt->exit_fd);
    /* The workers that read the targets have ended; checks still in flight
     * are freed while their event loop still exists. */
    sweep_retired(rt, true);
    gw_snapshot_unref(rt->snap); /* releases its checks: before the engine goes */
    rt->snap = NULL;
    hc_engine_free(rt->hc);
    if (rt->control != NULL)
        event_base_free(rt->control);
    cert_store_free(rt->env.store);
    cert_ticket_keys_free(rt->env.keys);
    api_diags_free(&rt->load_diags);
    gw_registry_free(rt->env.registry);
    gw_sources_free(rt->env.sources);
    free(rt->listening);
}

/* The engine, the build environment and the first snapshot, and what the
 * admin API shows of them. */
static int runtime_load(struct gw_runtime *rt)
{
    const struct gw_config *cfg = rt->cfg;
    rt->hc = hc_engine_new(rt->control);
    if (rt->hc == NULL)
        return -1;
    hc_engine_on_change(rt->hc, on_health_change, rt);
    struct api_diags diags = {0};
    rt->env.cfg = cfg;
    rt->env.hc = rt->hc;
    rt->env.registry = gw_registry_new(rt->nworkers);
    rt->env.sources = gw_sources_new();
    if (rt->env.registry == NULL || rt->env.sources == NULL)
        return -1;
    rt->env.store = load_store(cfg, &diags);
    rt->env.keys = cert_ticket_keys_new();
    if (rt->env.keys == NULL)
        abort();
    rt->snap = gw_snapshot_load(&rt->env, rt->nworkers, &diags);
    log_diags(&diags);
    keep_diags(rt, &diags);
    if (rt->snap == NULL) {
        gw_error("cannot load definitions from %s", cfg->app_path);
        return -1;
    }
    for (size_t i = 0; i < rt->snap->set.count; i++) {
        const struct api_def *d = rt->snap->set.defs[i];
        if (!d->active)
            gw_info("%s: api_id=%s is inactive (\"active\": false): not served", d->file,
                    d->api_id);
    }
    rt->view.snap = rt->snap;
    rt->view.nworkers = rt->nworkers;
    rt->view.load_diags = &rt->load_diags;
    rt->view.started_unix = time(NULL);
    if (cfg->access_log[0] != '\0') {
        char err[300];
        rt->view.access_log = gw_access_log_open(cfg->access_log, err, sizeof(err));
        if (rt->view.access_log == NULL) {
            gw_error("%s", err);
            return -1;
        }
    }
    return 0;
}

/* The control thread's events: signals, reloads, the admin API, the folder
 * watch, the workers' exits and the ticket key rotation. */
static int runtime_control(struct gw_runtime *rt)
{
    const struct gw_config *cfg = rt->cfg;
    struct event_base *base = rt->control;
    rt->sweep = evtimer_new(base, on_sweep, rt);
    rt->reload_ev = evtimer_new(base, on_reload_timer, rt);
    rt->sigusr1 = evsignal_new(base, SIGUSR1, on_usr1, rt);
    rt->sigterm = evsignal_new(base, SIGTERM, on_stop_signal, rt);
    rt->sigint = evsignal_new(base, SIGINT, on_stop_signal, rt);
    rt->sighup = evsignal_new(base, SIGHUP, on_hup, rt);
    rt->rotate = event_new(base, -1, EV_PERSIST, on_rotate, rt);
    rt->exit_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rt->exit_fd >= 0)
        rt->exit_ev = event_new(base, rt->exit_fd, EV_READ | EV_PERSIST, on_exit_event, rt);
    struct timeval every = {.tv_sec = cfg->ticket_key_rotation_ms / 1000,
                            .tv_usec = (cfg->ticket_key_rotation_ms % 1000) * 1000};
    if (rt->sweep == NULL || rt->reload_ev == NULL || rt->sigusr1 == NULL || rt->sigterm == NULL ||
        rt->sigint == NULL || rt->sighup == NULL || rt->rotate == NULL || rt->exit_ev == NULL ||
        evsignal_add(rt->sigusr1, NULL) != 0 || evsignal_add(rt->sigterm, NULL) != 0 ||
        evsignal_add(rt->sigint, NULL) != 0 || evsignal_add(rt->sighup, NULL) != 0 ||
        event_add(rt->rotate, &every) != 0 || event_add(rt->exit_ev, NULL) != 0)
        return -1;
    char err[300];
    if (cfg->control_api_port > 0) {
        rt->admin = gw_admin_new(base, cfg, &rt->view, admin_reload, rt, err, sizeof(err));
        if (rt->admin == NULL) {
            gw_error("%s", err);
            return -1;
        }
        gw_info("admin API on %s:%d", cfg->control_api_hostname, cfg->control_api_port);
    }
    rt->watch = gw_watch_new(base, cfg->app_path, on_folder_change, rt, err, sizeof(err));
    if (rt->watch == NULL)
        gw_warn("%s: changes are not picked up by themselves; send SIGHUP to reload", err);
    return 0;
}

/* The workers, the ports they listen on, and then, with the ports bound,
 * the user tcpgate runs as; then the workers start. */
static int runtime_workers(struct gw_runtime *rt)
{
    const struct gw_config *cfg = rt->cfg;
    struct gw_worker_opts wopts = {.max_pipes = cfg->max_pipes,
                                   .drain_ms = cfg->drain_timeout_ms,
                                   .access_log = rt->view.access_log};
    rt->workers = calloc((size_t)rt->nworkers, sizeof(*rt->workers));
    rt->listening = calloc(rt->snap->nports + 1, sizeof(*rt->listening));
    if (rt->workers == NULL || rt->listening == NULL)
        return -1;
    for (int i = 0; i < rt->nworkers; i++) {
        rt->workers[i] = gw_worker_new(i, rt->snap, &wopts, on_worker_exit, rt);
        if (rt->workers[i] == NULL) {
            gw_error("cannot create worker %d", i);
            return -1;
        }
    }
    for (size_t i = 0; i < rt->snap->nports; i++)
        if (listen_port(rt, &rt->snap->ports[i]) == 0)
            rt->listening[rt->nlistening++] = rt->snap->ports[i].port;
    if (rt->snap->nports > 0 && rt->nlistening == 0) {
        gw_error("no port could be opened; exiting");
        return -1;
    }
    if (rt->snap->nports == 0)
        gw_warn("no definition to serve in %s", cfg->app_path);
    if (gw_process_drop_privileges(cfg) != 0)
        return -1;
    for (int i = 0; i < rt->nworkers; i++) {
        if (gw_worker_start(rt->workers[i]) != 0) {
            gw_error("cannot start worker %d: %s", i, strerror(errno));
            for (int j = 0; j < i; j++)
                gw_worker_stop(rt->workers[j], 0);
            return -1;
        }
    }
    return 0;
}

int gw_run(const struct gw_config *cfg)
{
    struct gw_runtime rt = {.cfg = cfg, .exit_fd = -1};
    int rc = 1;
    rt.nworkers = cfg->workers > 0 ? cfg->workers : gw_default_workers();
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigaction(SIGPIPE, &ign, NULL);
    rt.control = event_base_new();
    if (rt.control == NULL || runtime_load(&rt) != 0 || runtime_control(&rt) != 0 ||
        runtime_workers(&rt) != 0)
        goto out;
    gw_info("tcpgate %s started: %d workers, %zu definitions on %zu ports", TCPGATE_VERSION,
            rt.nworkers, rt.snap->napis, rt.nlistening);
    gw_process_notify("READY=1");
    event_base_dispatch(rt.control);
    for (int i = 0; i < rt.nworkers; i++)
        gw_worker_join(rt.workers[i]);
    log_stats(&rt);
    gw_info("stopped");
    rc = 0;
out:
    runtime_free(&rt);
    return rc;
}
