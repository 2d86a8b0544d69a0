#include "hc_engine.h"

#include <errno.h>
#include <event2/event_struct.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cert_dial.h"
#include "cert_tls.h"
#include "gw_clock.h"
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

    /* The probe in flight, if any: its socket (fd -1 when none), dialed and
     * then read and written from one edge-triggered event. */
    struct event *tick;
    struct event *deadline;
    struct cert_io io;
    struct cert_dial dial;
    struct event ev;
    bool ev_added;
    uint8_t *in; /* what arrived for the current expect */
    size_t in_len, in_cap;
    uint8_t *out; /* what a send step wrote that the socket did not take yet */
    size_t out_len;
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

static bool probing(const struct hc_target *t)
{
    return t->io.fd >= 0;
}

static void probe_stop(struct hc_target *t)
{
    if (t->ev_added)
        event_del(&t->ev);
    t->ev_added = false;
    cert_io_close(&t->io, false);
    cert_dial_clear(&t->dial);
    free(t->in);
    free(t->out);
    t->in = t->out = NULL;
    t->in_len = t->in_cap = t->out_len = 0;
    if (t->deadline != NULL)
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
    t->last_duration_ms = gw_now_ms() - t->started_ms;
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
    char want[96], got[SHOWN_BYTES * 4 + 8];
    hc_escape(st->data, st->len, 40, want, sizeof(want));
    hc_escape(t->in, t->in_len, SHOWN_BYTES, got, sizeof(got));
    finish(t, false, "step %zu %s \"%s\": %s \"%s\" after %.1fs", t->step + 1,
           hc_step_name(st->kind), want, what, got,
           (double)(gw_now_ms() - t->step_started_ms) / 1000);
}

/* ---- the probe ----------------------------------------------------------------- */

static void arm(struct hc_target *t, int64_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(t->deadline, &tv);
}

/* Writes what a send step left; false when the socket failed. */
static bool flush_out(struct hc_target *t)
{
    while (t->out_len > 0) {
        ssize_t n = cert_io_write(&t->io, t->out, t->out_len);
        if (n == CERT_IO_AGAIN)
            return true;
        if (n < 0)
            return false;
        memmove(t->out, t->out + n, t->out_len - (size_t)n);
        t->out_len -= (size_t)n;
    }
    return true;
}

/* Queues a send step's bytes behind what is still waiting, and writes. */
static bool send_bytes(struct hc_target *t, const uint8_t *data, size_t len)
{
    uint8_t *o = realloc(t->out, t->out_len + len);
    if (o == NULL)
        return false;
    t->out = o;
    memcpy(t->out + t->out_len, data, len);
    t->out_len += len;
    return flush_out(t);
}

static void step_error(struct hc_target *t, const char *what)
{
    char why[160];
    snprintf(why, sizeof(why), "connection error (%s):", what);
    if (t->script.steps[t->step].kind == API_CMD_SEND)
        finish(t, false, "step %zu send: %s", t->step + 1, why);
    else
        fail_step(t, why);
}

/* Runs send steps, and judges the current expect on what has arrived. `final`:
 * no more data will come for it. */
static void run_steps(struct hc_target *t, bool final)
{
    while (t->step < t->script.nsteps) {
        const struct hc_step *st = &t->script.steps[t->step];
        if (st->kind == API_CMD_SEND) {
            if (!send_bytes(t, st->data, st->len)) {
                step_error(t, strerror(t->io.err != 0 ? t->io.err : ENOMEM));
                return;
            }
            t->step++;
            t->step_started_ms = gw_now_ms();
            final = false;
            continue;
        }
        enum hc_verdict v =
            hc_step_judge(st, t->in, t->in_len, final || t->in_len >= MAX_EXPECT_BYTES);
        if (v == HC_WAIT) {
            arm(t, t->step_started_ms + t->timeout_ms - gw_now_ms());
            return;
        }
        if (v == HC_FAIL) {
            fail_step(t, st->kind == API_CMD_EXPECT_NOT || st->kind == API_CMD_EXPECT_NOT_REGEX
                             ? (t->in_len > 0 ? "found in" : "no answer:")
                             : "got");
            return;
        }
        t->in_len = 0; /* the next expect looks at what comes after */
        t->step++;
        t->step_started_ms = gw_now_ms();
        final = false;
    }
    finish(t, true, "ok");
}

static void probe_connect(struct hc_target *t);

/* Reads what arrived (up to what an expect may look at) and judges it. */
static void read_answer(struct hc_target *t)
{
    bool got = false;
    for (int i = 0; i < 64; i++) {
        if (t->in_cap - t->in_len < 4096) {
            size_t cap = t->in_cap ? t->in_cap * 2 : 4096;
            if (cap > MAX_EXPECT_BYTES + 4096)
                cap = MAX_EXPECT_BYTES + 4096;
            uint8_t *in = cap > t->in_cap ? realloc(t->in, cap) : NULL;
            if (in == NULL)
                break; /* full: the expect judges what it has */
            t->in = in;
            t->in_cap = cap;
        }
        ssize_t n = cert_io_read(&t->io, t->in + t->in_len, t->in_cap - t->in_len);
        if (n == CERT_IO_AGAIN)
            break;
        if (n == 0) {
            run_steps(t, true); /* what arrived is all there will be */
            return;
        }
        if (n < 0) {
            if (t->step >= t->script.nsteps) {
                finish(t, true, "ok");
                return;
            }
            step_error(t, strerror(t->io.err != 0 ? t->io.err : ECONNRESET));
            return;
        }
        t->in_len += (size_t)n;
        got = true;
    }
    if (got)
        run_steps(t, false);
}

/* Why the connect failed; *tls tells a TLS refusal (the host answered) from
 * a failure below it (try the name's next address). */
static const char *connect_error(struct hc_target *t, char *buf, size_t len, bool *tls)
{
    *tls = t->dial.tls_failed && cert_tls_failure(t->io.ssl, t->io.ssl_err, buf, len);
    if (*tls)
        return buf;
    snprintf(buf, len, "connect: %s", t->io.err ? strerror(t->io.err) : "closed");
    return buf;
}

/* The PROXY header a check sends first: v2 LOCAL, or v1 with the check
 * connection's own addresses. */
static size_t proxy_header(void *arg, int fd, uint8_t *buf, size_t cap)
{
    struct hc_target *t = arg;
    int n = 0;
    if (t->proxy == HC_PROXY_V1) {
        struct sockaddr_storage self, peer;
        socklen_t sl = sizeof(self), pl = sizeof(peer);
        getsockname(fd, (struct sockaddr *)&self, &sl);
        getpeername(fd, (struct sockaddr *)&peer, &pl);
        n = gw_pp1_build((struct sockaddr *)&self, (struct sockaddr *)&peer, (char *)buf, cap);
    } else if (t->proxy == HC_PROXY_V2_LOCAL) {
        n = gw_pp2_build(NULL, NULL, NULL, buf, cap);
    }
    return n > 0 ? (size_t)n : 0;
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct hc_target *t = arg;
    if (!t->connected) {
        int rc = cert_dial_step(&t->dial, &t->io, what, proxy_header, t);
        if (rc == CERT_IO_AGAIN)
            return;
        if (rc == CERT_DIAL_DONE) {
            t->connected = true;
            t->step_started_ms = gw_now_ms();
            run_steps(t, false);
            if (probing(t))
                read_answer(t); /* the host may have answered with the handshake */
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
    if ((what & EV_WRITE) && !flush_out(t)) {
        step_error(t, strerror(t->io.err != 0 ? t->io.err : EPIPE));
        return;
    }
    read_answer(t);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct hc_target *t = arg;
    if (!t->connected) {
        finish(t, false, "connect: timed out after %.1fs",
               (double)(gw_now_ms() - t->started_ms) / 1000);
        return;
    }
    run_steps(t, true);
}

static void probe_connect(struct hc_target *t)
{
    SSL *ssl = NULL;
    if (t->tls != NULL) {
        ssl = SSL_new(t->tls);
        if (ssl == NULL || cert_ssl_client_setup(ssl, t->tls_host, t->tls_verify, NULL) != 0) {
            SSL_free(ssl);
            finish(t, false, "tls: cannot set up the connection");
            return;
        }
    }
    t->connected = false;
    t->step = 0;
    /* The PROXY header goes first, in clear; then TLS, then the script. */
    if (cert_dial_start(&t->dial, &t->io, (struct sockaddr *)&t->addrs[t->addr],
                        t->addrlens[t->addr], ssl) != 0) {
        finish(t, false, "connect: %s", strerror(errno));
        return;
    }
    if (event_assign(&t->ev, t->e->base, t->io.fd,
                     EV_READ | EV_WRITE | EV_CLOSED | EV_ET | EV_PERSIST, on_io, t) != 0 ||
        event_add(&t->ev, NULL) != 0) {
        finish(t, false, "out of memory");
        return;
    }
    t->ev_added = true;
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
    if (probing(t)) {
        gw_debug("health: api_id=%s target %s: previous check still running; round skipped",
                 t->api_id, t->name);
        return;
    }
    t->expedite_started = __atomic_load_n(&t->expedited, __ATOMIC_RELAXED) != 0;
    t->started_ms = gw_now_ms();
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
    probe_stop(t);
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
    cert_io_init(&t->io, -1);
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
