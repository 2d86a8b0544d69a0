/* The health-check engine: send/expect probes against upstream hosts, run on
 * the control thread's event loop, and the host states they decide.
 *
 * gateway/ asks only one question of it, hc_target_eligible(), which any
 * thread may ask at any time: it reads one atomic. Everything else happens on
 * the control thread. */
#ifndef HC_ENGINE_H
#define HC_ENGINE_H

#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "api_def.h"

struct hc_engine;
struct hc_target;
struct hc_sentinel;

enum hc_state {
    HC_UNKNOWN, /* not checked yet */
    HC_UP,
    HC_DOWN,
};

enum hc_proxy_header {
    HC_PROXY_NONE,
    HC_PROXY_V1,       /* "PROXY TCP4 ..." with the check connection's real addresses */
    HC_PROXY_V2_LOCAL, /* a v2 LOCAL header: the proxy's own connection */
};

/* One checked host of one definition. */
struct hc_target_spec {
    const char *api_id;
    const char *name; /* host:port, for logs */
    const struct sockaddr_storage *addrs;
    const socklen_t *addrlens;
    int naddrs;
    const struct api_check *check; /* compiled into the target's own script */
    SSL_CTX *tls;                  /* a TLS check: the upstream context (a reference is taken) */
    const char *tls_host;          /* SNI and name to verify */
    bool tls_verify;
    enum hc_proxy_header proxy;
    int64_t interval_ms;
    int64_t timeout_ms; /* per step; the connect and handshake count as one */
    int fall, rise;
    bool gates; /* check_host_against_uptime_tests: eligible only once it passed */
    /* The Sentinel watcher that names this host, if any: when it names the
     * host the master, the check runs at once and one pass brings it up. */
    const struct hc_sentinel *sentinel;
};

/* What the admin API and metrics read (later), and the logs now. */
struct hc_status {
    enum hc_state state;
    bool eligible;
    uint64_t checks, failures, transitions;
    int64_t last_duration_ms;
    char last_result[256]; /* "ok", or why the last check failed */
};

struct hc_engine *hc_engine_new(struct event_base *base) __attribute__((warn_unused_result));
void hc_engine_free(struct hc_engine *e);

/* Called on the control thread after a target changes state, or with t NULL
 * when a Sentinel watcher changed which nodes are eligible (or added a node
 * to its table). */
void hc_engine_on_change(struct hc_engine *e, void (*cb)(void *arg, struct hc_target *t, bool up),
                         void *arg);

/* Whether a watcher asked for a reload since the last call (its node table
 * is full); the flag is cleared. Control thread. */
bool hc_engine_take_reload_request(struct hc_engine *e);

/* Adds a target; its first check runs at once. When a target with exactly
 * this spec runs already (a reload kept the check), that one is returned with
 * one more reference, state and history intact. NULL with a reason on error. */
struct hc_target *hc_engine_add(struct hc_engine *e, const struct hc_target_spec *spec, char *err,
                                size_t errlen) __attribute__((warn_unused_result));

/* Ends a reload: with keep, the targets it kept take the TLS contexts it
 * built (their next probes use them); without, those contexts are dropped
 * and the running checks stay exactly as they were. Control thread only. */
void hc_engine_commit(struct hc_engine *e, bool keep);

/* Drops a reference taken by hc_engine_add; the last one stops the checks.
 * Control thread only. Accepts NULL. */
void hc_target_release(struct hc_target *t);

/* Lock-free; any thread. */
bool hc_target_eligible(const struct hc_target *t);
enum hc_state hc_target_state(const struct hc_target *t);
/* A gating check with no verdict yet, or one asked for at once (the
 * sentinels named the host) that has not finished: a new connection may
 * wait for it. */
bool hc_target_pending(const struct hc_target *t);

/* Control thread only. */
void hc_target_status(const struct hc_target *t, struct hc_status *out);

#endif
