#include "hc_engine.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cert_tls.h"
#include "gw_log.h"
#include "gw_proxyproto.h"
#include "hc_dns.h"
#include "hc_internal.h"
#include "hc_script.h"

#define MAX_ADDRS 4
/* An expect that has seen this much without a verdict fails: a check answer
 * is a status line, not a stream. */
#define MAX_EXPECT_BYTES (64 * 1024)
/* How much of an unexpected answer a failure message shows. */
#define SHOWN_BYTES 48

struct hc_target {
    struct hc_target *next;
    struct hc_engine *e;
    int refs; /* snapshots that use it; control thread only */
    char *api_id, *name, *tls_host;
    struct sockaddr_storage addrs[MAX_ADDRS];
    socklen_t addrlens[MAX_ADDRS];
    int naddrs;
    struct hc_script script;
    SSL_CTX *tls;
    SSL_CTX *pending_tls; /* from a reload not yet committed */
    bool tls_verify;
    enum hc_proxy_header proxy;
    int64_t interval_ms, timeout_ms;
    int fall, rise;
    bool gates;
    const struct hc_sentinel *sentinel;

    /* Written here, read by workers: atomics. */
    int state;
    int eligible;
    int expedited;         /* a check asked for at once has not finished yet */
    bool expedite_started; /* the probe in flight began after it was asked for */

    int ok_streak, fail_streak;
    uint64_t checks, failures, transitions;
    int64_t last_duration_ms;
    char last_result[256];

    /* The probe in flight, if any. */
    struct event *tick;
    struct event *deadline;
    struct bufferevent *bev;
    SSL *pending_ssl; /* TLS after a PROXY header: layered on once TCP is up */
    int addr;
    size_t step;
    bool connected;
    int64_t started_ms, step_started_ms;
};

struct hc_engine {
    struct event_base *base;
    struct evdns_base *dns; /* made on first use */
    bool dns_failed;
    struct hc_target *targets;
    struct hc_sentinel *watchers;
    bool reload_asked;
    void (*on_change)(void *arg, struct hc_target *t, bool up);
    void *arg;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *state_name(enum hc_state s)
{
    return s == HC_UP ? "UP" : s == HC_DOWN ? "DOWN" : "UNKNOWN";
}

bool hc_target_eligible(const struct hc_target *t)
{
    return __atomic_load_n(&t->eligible, __ATOMIC_ACQUIRE) != 0;
}

enum hc_state hc_target_state(const struct hc_target *t)
{
    return (enum hc_state)__atomic_load_n(&t->state, __ATOMIC_ACQUIRE);
}

bool hc_target_pending(const struct hc_target *t)
{
    return t->gates &&
           (hc_target_state(t) == HC_UNKNOWN || __atomic_load_n(&t->expedited, __ATOMIC_ACQUIRE));
}

void hc_target_status(const struct hc_target *t, struct hc_status *out)
{
    out->state = hc_target_state(t);
    out->eligible = hc_target_eligible(t);
    out->checks = t->checks;
    out->failures = t->failures;
    out->transitions = t->transitions;
    out->last_duration_ms = t->last_duration_ms;
    snprintf(out->last_result, sizeof(out->last_result), "%s", t->last_result);
}

/* ---- verdicts ------------------------------------------------------------------ */

static void probe_stop(struct hc_target *t)
{
    if (t->bev != NULL)
        bufferevent_free(t->bev);
    t->bev = NULL;
    SSL_free(t->pending_ssl);
    t->pending_ssl = NULL;
    evtimer_del(t->deadline);
}

/* Ends a check: updates the counts and, through fall and rise, the state. */
static void finish(struct hc_target *t, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void finish(struct hc_target *t, bool ok, const char *fmt, ...)
{
    probe_stop(t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->last_result, sizeof(t->last_result), fmt, ap);
    va_end(ap);
    t->last_duration_ms = now_ms() - t->started_ms;
    t->checks++;
    if (ok) {
        t->ok_streak++;
        t->fail_streak = 0;
    } else {
        t->failures++;
        t->fail_streak++;
        t->ok_streak = 0;
    }
    /* A check the sentinels asked for: the host they named needs one pass. */
    bool expedited = t->expedite_started;
    t->expedite_started = false;
    enum hc_state old = hc_target_state(t), state = old;
    if (old == HC_UNKNOWN)
        state = ok ? HC_UP : t->fail_streak >= t->fall ? HC_DOWN : HC_UNKNOWN;
    else if (old == HC_UP && !ok && t->fail_streak >= t->fall)
        state = HC_DOWN;
    else if (old == HC_DOWN && ok && (t->ok_streak >= t->rise || expedited))
        state = HC_UP;
    __atomic_store_n(&t->state, (int)state, __ATOMIC_RELEASE);
    __atomic_store_n(&t->eligible, !t->gates || state == HC_UP, __ATOMIC_RELEASE);
    if (expedited)
        __atomic_store_n(&t->expedited, 0, __ATOMIC_RELEASE);
    if (state == old) {
        if (!ok)
            gw_debug("health: api_id=%s target %s check failed (%d in a row, %s): %s", t->api_id,
                     t->name, t->fail_streak, state_name(state), t->last_result);
        return;
    }
    t->transitions++;
    if (state == HC_UP)
        gw_info("health: api_id=%s target %s is UP (%s%d passed check%s)", t->api_id, t->name,
                old == HC_UNKNOWN ? "first check passed; " : "", t->ok_streak,
                t->ok_streak == 1 ? "" : "s");
    else
        gw_warn("health: api_id=%s target %s is DOWN after %d failed check%s: %s", t->api_id,
                t->name, t->fail_streak, t->fail_streak == 1 ? "" : "s", t->last_result);
    if (t->e->on_change != NULL)
        t->e->on_change(t->e->arg, t, state == HC_UP);
}

/* "step 4 expect "role:master": got "$312\r\n..." after 2.0s" */
static void fail_step(struct hc_target *t, const char *what)
{
    const struct hc_step *st = &t->script.steps[t->step];
    struct evbuffer *in = bufferevent_get_input(t->bev);
    size_t len = evbuffer_get_length(in);
    const uint8_t *data =
        evbuffer_pullup(in, (ev_ssize_t)(len < SHOWN_BYTES + 1 ? len : SHOWN_BYTES + 1));
    char want[96], got[SHOWN_BYTES * 4 + 8];
    hc_escape(st->data, st->len, 40, want, sizeof(want));
    hc_escape(data, len, SHOWN_BYTES, got, sizeof(got));
    finish(t, false, "step %zu %s \"%s\": %s \"%s\" after %.1fs", t->step + 1,
           hc_step_name(st->kind), want, what, got, (double)(now_ms() - t->step_started_ms) / 1000);
}

/* ---- the probe ----------------------------------------------------------------- */

static void arm(struct hc_target *t, int64_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(t->deadline, &tv);
}

/* Runs send steps, and judges the current expect on what has arrived. `final`:
 * no more data will come for it. */
static void run_steps(struct hc_target *t, bool final)
{
    while (t->step < t->script.nsteps) {
        const struct hc_step *st = &t->script.steps[t->step];
        if (st->kind == API_CMD_SEND) {
            bufferevent_write(t->bev, st->data, st->len);
            t->step++;
            t->step_started_ms = now_ms();
            final = false;
            continue;
        }
        struct evbuffer *in = bufferevent_get_input(t->bev);
        size_t len = evbuffer_get_length(in);
        const uint8_t *data = evbuffer_pullup(in, (ev_ssize_t)len);
        enum hc_verdict v = hc_step_judge(st, data, len, final || len >= MAX_EXPECT_BYTES);
        if (v == HC_WAIT) {
            arm(t, t->step_started_ms + t->timeout_ms - now_ms());
            return;
        }
        if (v == HC_FAIL) {
            fail_step(t, st->kind == API_CMD_EXPECT_NOT || st->kind == API_CMD_EXPECT_NOT_REGEX
                             ? (len > 0 ? "found in" : "no answer:")
                             : "got");
            return;
        }
        evbuffer_drain(in, len); /* the next expect looks at what comes after */
        t->step++;
        t->step_started_ms = now_ms();
        final = false;
    }
    finish(t, true, "ok");
}

static void probe_connect(struct hc_target *t);

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    run_steps(arg, false);
}

/* Why the connect failed; *tls tells a TLS refusal (the host answered) from
 * a failure below it (try the name's next address). */
static const char *connect_error(struct hc_target *t, char *buf, size_t len, bool *tls)
{
    SSL *ssl = bufferevent_openssl_get_ssl(t->bev);
    *tls = ssl != NULL && cert_tls_failure(ssl, bufferevent_get_openssl_error(t->bev), buf, len);
    if (*tls)
        return buf;
    int err = EVUTIL_SOCKET_ERROR();
    snprintf(buf, len, "connect: %s", err ? evutil_socket_error_to_string(err) : "closed");
    return buf;
}

/* The PROXY header a check sends first: v2 LOCAL, or v1 with the check
 * connection's own addresses. */
static void write_proxy_header(struct hc_target *t)
{
    if (t->proxy == HC_PROXY_NONE)
        return;
    uint8_t hdr[GW_PP1_MAX + 1];
    int n;
    if (t->proxy == HC_PROXY_V1) {
        struct sockaddr_storage self, peer;
        socklen_t sl = sizeof(self), pl = sizeof(peer);
        evutil_socket_t fd = bufferevent_getfd(t->bev);
        getsockname(fd, (struct sockaddr *)&self, &sl);
        getpeername(fd, (struct sockaddr *)&peer, &pl);
        n = gw_pp1_build((struct sockaddr *)&self, (struct sockaddr *)&peer, (char *)hdr,
                         sizeof(hdr));
    } else {
        n = gw_pp2_build(NULL, NULL, NULL, hdr, sizeof(hdr));
    }
    if (n > 0)
        bufferevent_write(t->bev, hdr, (size_t)n);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct hc_target *t = arg;
    if (!t->connected) {
        if ((what & BEV_EVENT_CONNECTED) && t->pending_ssl != NULL) {
            /* TCP is up: the PROXY header in clear, then TLS over it. */
            write_proxy_header(t);
            SSL *ssl = t->pending_ssl;
            t->pending_ssl = NULL;
            /* On failure the constructor has freed ssl (BEV_OPT_CLOSE_ON_FREE). */
            struct bufferevent *tls = bufferevent_openssl_filter_new(
                t->e->base, t->bev, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
            if (tls == NULL) {
                finish(t, false, "tls: cannot start");
                return;
            }
            t->bev = tls;
            bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
            bufferevent_setcb(tls, on_read, NULL, on_event, t);
            bufferevent_enable(tls, EV_READ | EV_WRITE);
            return;
        }
        if (what & BEV_EVENT_CONNECTED) {
            t->connected = true;
            if (bufferevent_openssl_get_ssl(t->bev) == NULL)
                write_proxy_header(t);
            t->step_started_ms = now_ms();
            run_steps(t, false);
            return;
        }
        char why[256];
        bool tls = false;
        connect_error(t, why, sizeof(why), &tls);
        if (t->addr + 1 < t->naddrs && !tls) {
            t->addr++;
            probe_stop(t);
            probe_connect(t);
            return;
        }
        finish(t, false, "%s", why);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        if (t->step >= t->script.nsteps) {
            finish(t, true, "ok");
            return;
        }
        char why[256];
        snprintf(why, sizeof(why),
                 "connection error (%s):", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        if (t->script.steps[t->step].kind == API_CMD_SEND)
            finish(t, false, "step %zu send: %s", t->step + 1, why);
        else
            fail_step(t, why);
        return;
    }
    if (what & BEV_EVENT_EOF)
        run_steps(t, true); /* what arrived is all there will be */
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct hc_target *t = arg;
    if (!t->connected) {
        finish(t, false, "connect: timed out after %.1fs",
               (double)(now_ms() - t->started_ms) / 1000);
        return;
    }
    run_steps(t, true);
}

static void probe_connect(struct hc_target *t)
{
    struct event_base *base = t->e->base;
    if (t->tls != NULL) {
        SSL *ssl = SSL_new(t->tls);
        if (ssl == NULL || cert_ssl_client_setup(ssl, t->tls_host, t->tls_verify, NULL) != 0) {
            SSL_free(ssl);
            finish(t, false, "tls: cannot set up the connection");
            return;
        }
        if (t->proxy != HC_PROXY_NONE) {
            /* The header must come before TLS: connect plainly first. */
            t->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
            if (t->bev == NULL)
                SSL_free(ssl);
            else
                t->pending_ssl = ssl;
        } else {
            /* On failure the constructor frees ssl (BEV_OPT_CLOSE_ON_FREE). */
            t->bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                    BEV_OPT_CLOSE_ON_FREE);
            if (t->bev != NULL)
                bufferevent_openssl_set_allow_dirty_shutdown(t->bev, 1);
        }
    } else {
        t->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (t->bev == NULL) {
        finish(t, false, "out of memory");
        return;
    }
    t->connected = false;
    t->step = 0;
    bufferevent_setcb(t->bev, on_read, NULL, on_event, t);
    bufferevent_enable(t->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(t->bev, (struct sockaddr *)&t->addrs[t->addr],
                                   (int)t->addrlens[t->addr]) != 0) {
        finish(t, false, "connect: %s", strerror(errno));
        return;
    }
    /* The connect and the TLS handshake share one step's time. */
    arm(t, t->timeout_ms);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct hc_target *t = arg;
    /* The next round is due one interval after this one started. */
    struct timeval every = {.tv_sec = t->interval_ms / 1000,
                            .tv_usec = (t->interval_ms % 1000) * 1000};
    evtimer_add(t->tick, &every);
    if (t->bev != NULL) {
        gw_debug("health: api_id=%s target %s: previous check still running; round skipped",
                 t->api_id, t->name);
        return;
    }
    t->expedite_started = __atomic_load_n(&t->expedited, __ATOMIC_RELAXED) != 0;
    t->started_ms = now_ms();
    t->addr = 0;
    probe_connect(t);
}

/* ---- engine ---------------------------------------------------------------------- */

struct hc_engine *hc_engine_new(struct event_base *base)
{
    struct hc_engine *e = calloc(1, sizeof(*e));
    if (e != NULL)
        e->base = base;
    return e;
}

struct event_base *hc_engine_base(const struct hc_engine *e)
{
    return e->base;
}

/* Made when a name first needs it (its nameserver sockets cost descriptors),
 * from resolv.conf; without a usable one, names resolve from /etc/hosts. */
struct evdns_base *hc_engine_dns(struct hc_engine *e)
{
    if (e->dns == NULL && !e->dns_failed) {
        e->dns = evdns_base_new(e->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        if (e->dns == NULL && (e->dns = evdns_base_new(e->base, 0)) != NULL)
            evdns_base_load_hosts(e->dns, NULL);
        e->dns_failed = e->dns == NULL;
    }
    return e->dns;
}

struct hc_sentinel **hc_engine_watchers(struct hc_engine *e)
{
    return &e->watchers;
}

void hc_engine_changed(struct hc_engine *e)
{
    if (e->on_change != NULL)
        e->on_change(e->arg, NULL, false);
}

void hc_engine_ask_reload(struct hc_engine *e)
{
    e->reload_asked = true;
}

bool hc_engine_take_reload_request(struct hc_engine *e)
{
    bool asked = e->reload_asked;
    e->reload_asked = false;
    return asked;
}

void hc_engine_expedite(struct hc_engine *e, const struct hc_sentinel *w,
                        const struct sockaddr *addr)
{
    for (struct hc_target *t = e->targets; t != NULL; t = t->next) {
        if (t->sentinel != w)
            continue;
        bool probes = false;
        for (int i = 0; i < t->naddrs && !probes; i++)
            probes = hc_dns_same_addr((const struct sockaddr *)&t->addrs[i], addr) != 0;
        if (!probes)
            continue;
        __atomic_store_n(&t->expedited, 1, __ATOMIC_RELEASE);
        /* A probe in flight began before the switch, and may be waiting out
         * its timeout on what the node said then: it is dropped without a
         * verdict, and a new one starts now. */
        probe_stop(t);
        struct timeval now = {0, 0};
        evtimer_add(t->tick, &now);
    }
}

void hc_engine_on_change(struct hc_engine *e, void (*cb)(void *arg, struct hc_target *t, bool up),
                         void *arg)
{
    e->on_change = cb;
    e->arg = arg;
}

static void target_free(struct hc_target *t)
{
    if (t == NULL)
        return;
    if (t->bev != NULL)
        bufferevent_free(t->bev);
    if (t->deadline != NULL)
        event_free(t->deadline);
    if (t->tick != NULL)
        event_free(t->tick);
    hc_script_free(&t->script);
    SSL_CTX_free(t->tls);
    SSL_CTX_free(t->pending_tls);
    free(t->api_id);
    free(t->name);
    free(t->tls_host);
    free(t);
}

/* A target the spec describes exactly, if one runs already: a reload that
 * keeps a check keeps its state, so eligibility does not flap. */
static struct hc_target *find_same(struct hc_engine *e, const struct hc_target_spec *spec,
                                   const struct hc_script *script)
{
    int naddrs = spec->naddrs < MAX_ADDRS ? spec->naddrs : MAX_ADDRS;
    const char *host = spec->tls_host != NULL ? spec->tls_host : "";
    for (struct hc_target *t = e->targets; t != NULL; t = t->next) {
        bool same = strcmp(t->api_id, spec->api_id) == 0 && strcmp(t->name, spec->name) == 0 &&
                    strcmp(t->tls_host, host) == 0 && t->naddrs == naddrs &&
                    (t->tls != NULL) == (spec->tls != NULL) && t->tls_verify == spec->tls_verify &&
                    t->proxy == spec->proxy && t->interval_ms == spec->interval_ms &&
                    t->timeout_ms == spec->timeout_ms && t->fall == spec->fall &&
                    t->rise == spec->rise && t->gates == spec->gates &&
                    t->sentinel == spec->sentinel && hc_script_equal(&t->script, script);
        for (int i = 0; same && i < naddrs; i++)
            same = t->addrlens[i] == spec->addrlens[i] &&
                   memcmp(&t->addrs[i], &spec->addrs[i], spec->addrlens[i]) == 0;
        if (same)
            return t;
    }
    return NULL;
}

struct hc_target *hc_engine_add(struct hc_engine *e, const struct hc_target_spec *spec, char *err,
                                size_t errlen)
{
    struct hc_script script;
    if (hc_script_compile(spec->check, &script, err, errlen) != 0)
        return NULL;
    struct hc_target *same = find_same(e, spec, &script);
    if (same != NULL) {
        hc_script_free(&script);
        /* The new upstream TLS context (a CA file read again) serves the next
         * probes once the reload is committed; a failed reload drops it. */
        if (spec->tls != NULL && spec->tls != same->tls && SSL_CTX_up_ref(spec->tls) == 1) {
            SSL_CTX_free(same->pending_tls);
            same->pending_tls = spec->tls;
        }
        same->refs++;
        return same;
    }
    struct hc_target *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        hc_script_free(&script);
        return NULL;
    }
    t->e = e;
    t->refs = 1;
    t->script = script;
    t->api_id = strdup(spec->api_id);
    t->name = strdup(spec->name);
    t->tls_host = strdup(spec->tls_host != NULL ? spec->tls_host : "");
    t->naddrs = spec->naddrs < MAX_ADDRS ? spec->naddrs : MAX_ADDRS;
    for (int i = 0; i < t->naddrs; i++) {
        t->addrs[i] = spec->addrs[i];
        t->addrlens[i] = spec->addrlens[i];
    }
    if (spec->tls != NULL && SSL_CTX_up_ref(spec->tls) == 1)
        t->tls = spec->tls;
    t->tls_verify = spec->tls_verify;
    t->proxy = spec->proxy;
    t->interval_ms = spec->interval_ms;
    t->timeout_ms = spec->timeout_ms;
    t->fall = spec->fall;
    t->rise = spec->rise;
    t->gates = spec->gates;
    t->sentinel = spec->sentinel;
    t->state = HC_UNKNOWN;
    t->eligible = !spec->gates;
    snprintf(t->last_result, sizeof(t->last_result), "not checked yet");
    t->tick = evtimer_new(e->base, on_tick, t);
    t->deadline = evtimer_new(e->base, on_deadline, t);
    if (t->api_id == NULL || t->name == NULL || t->tls_host == NULL || t->tick == NULL ||
        t->deadline == NULL || (spec->tls != NULL && t->tls == NULL)) {
        snprintf(err, errlen, "out of memory");
        target_free(t);
        return NULL;
    }
    if (t->naddrs == 0) {
        snprintf(err, errlen, "no address to check");
        target_free(t);
        return NULL;
    }
    struct timeval now = {0, 0};
    evtimer_add(t->tick, &now); /* the first round runs at once */
    t->next = e->targets;
    e->targets = t;
    return t;
}

void hc_engine_commit(struct hc_engine *e, bool keep)
{
    for (struct hc_target *t = e->targets; t != NULL; t = t->next) {
        if (t->pending_tls == NULL)
            continue;
        if (keep) {
            SSL_CTX_free(t->tls);
            t->tls = t->pending_tls;
        } else {
            SSL_CTX_free(t->pending_tls);
        }
        t->pending_tls = NULL;
    }
}

void hc_target_release(struct hc_target *t)
{
    if (t == NULL || --t->refs > 0)
        return;
    struct hc_target **pp = &t->e->targets;
    while (*pp != t)
        pp = &(*pp)->next;
    *pp = t->next;
    target_free(t);
}

void hc_engine_free(struct hc_engine *e)
{
    if (e == NULL)
        return;
    hc_sentinel_free_all(e->watchers);
    if (e->dns != NULL)
        evdns_base_free(e->dns, 1);
    struct hc_target *t = e->targets;
    while (t != NULL) {
        struct hc_target *next = t->next;
        target_free(t);
        t = next;
    }
    free(e);
}
