/* The counters: per definition, per target and per port. Each worker owns
 * one slot of each and is its only writer, so the data path takes no lock and
 * does no atomic read-modify-write; readers (the control thread) sum the
 * slots with relaxed loads. */
#ifndef GW_STATS_H
#define GW_STATS_H

#include <stdint.h>

/* X-macro: name, description. The order is the order of reports. */
#define GW_API_COUNTERS(X)                                                                         \
    X(cx_total, "connections accepted")                                                            \
    X(cx_active, "connections open now")                                                           \
    X(rx_bytes, "bytes read from clients")                                                         \
    X(tx_bytes, "bytes written to clients")                                                        \
    X(upstream_cx_total, "upstream connections established")                                       \
    X(connect_fail, "upstream connect attempts that failed")                                       \
    X(connect_timeout, "upstream connect attempts that timed out")                                 \
    X(no_upstream, "clients closed because no target could be reached")                            \
    X(idle_timeout, "connections closed by the idle timeout")                                      \
    X(max_duration, "connections closed by max_connection_duration")                               \
    X(drained, "connections closed by the drain timeout at shutdown")                              \
    X(rx_buffered, "bytes read from clients and not yet written upstream (a gauge)")               \
    X(tx_buffered, "bytes read for clients and not yet written to them (a gauge)")                 \
    X(paused_reading, "times reading from a client paused because its upstream was slow")          \
    X(resumed_reading, "times reading from a client resumed")                                      \
    X(upstream_paused_reading,                                                                     \
      "times reading from an upstream paused because its client was slow")                         \
    X(upstream_resumed_reading, "times reading from an upstream resumed")                          \
    X(upstream_flush_total, "connections that flushed a failed client's bytes upstream")           \
    X(upstream_flush_active, "connections flushing a failed client's bytes upstream now")          \
    X(upstream_tls_failed, "upstream TLS handshakes that failed (verification included)")          \
    X(upstream_pin_mismatch, "upstream certificates that matched no pinned key")                   \
    X(upstream_tls_resumed, "upstream TLS handshakes that resumed a session")                      \
    X(closed_on_down, "connections closed because their upstream was marked down")                 \
    X(cx_overflow, "connections closed because the definition held max_connections")               \
    X(upstream_cx_overflow, "connections closed because every target held its maximum")

struct gw_api_stats {
#define GW_STAT_FIELD(name, desc) int64_t name;
    GW_API_COUNTERS(GW_STAT_FIELD)
#undef GW_STAT_FIELD
} __attribute__((aligned(64)));

/* Single-writer update: a plain load and store, atomic only so readers on other
 * threads see whole values. */
#define GW_STAT_ADD(slot, field, n)                                                                \
    __atomic_store_n(&(slot)->field, __atomic_load_n(&(slot)->field, __ATOMIC_RELAXED) + (n),      \
                     __ATOMIC_RELAXED)

/* Per-target counters (a target is one host:port of one definition). */
#define GW_TARGET_COUNTERS(X)                                                                      \
    X(cx_total, "connections established to the target")                                           \
    X(cx_active, "connections open to the target now")                                             \
    X(connect_fail, "connect attempts to the target that failed")                                  \
    X(connect_timeout, "connect attempts to the target that timed out")                            \
    X(rx_bytes, "bytes read from clients of the target's connections")                             \
    X(tx_bytes, "bytes written to clients of the target's connections")

struct gw_target_stats {
#define GW_STAT_FIELD(name, desc) int64_t name;
    GW_TARGET_COUNTERS(GW_STAT_FIELD)
#undef GW_STAT_FIELD
} __attribute__((aligned(64)));

/* Per-port counters; X-macro as for the per-API ones. */
#define GW_PORT_COUNTERS(X)                                                                        \
    X(no_route, "connections no definition could take")                                            \
    X(tls_handshakes, "TLS handshakes completed")                                                  \
    X(tls_resumed, "TLS handshakes that resumed a session")                                        \
    X(tls_handshake_failed, "TLS handshakes that failed")                                          \
    X(tls_fail_protocol, "failed handshakes: a TLS version not allowed, or not TLS at all")        \
    X(tls_fail_cipher, "failed handshakes: no cipher, group or signature in common")               \
    X(tls_fail_client_cert, "failed handshakes: a client certificate missing or not trusted")      \
    X(tls_fail_alert, "failed handshakes: the client sent an alert (e.g. it refused ours)")        \
    X(tls_fail_closed, "failed handshakes: the client closed the connection")                      \
    X(tls_fail_other, "failed handshakes: any other reason")                                       \
    X(tls_handshake_timeout, "TLS handshakes or ClientHellos that did not finish in time")         \
    X(sni_not_found, "TLS clients whose server name no definition serves")                         \
    X(not_tls, "connections to an SNI-routed TCP port that did not start with TLS")                \
    X(bad_client_hello, "malformed or oversized ClientHellos")                                     \
    X(prx_accepted, "PROXY headers accepted")                                                      \
    X(prx_not_hdr, "connections without the PROXY header the port requires")                       \
    X(prx_bad_hdr, "malformed PROXY headers")                                                      \
    X(prx_truncated, "connections closed before their PROXY header was complete")                  \
    X(prx_timeout, "PROXY headers that did not arrive in time")                                    \
    X(prx_untrusted, "connections from sources not trusted to send a PROXY header")                \
    X(cx_overflow, "connections closed because the gateway-wide maximum was reached")              \
    X(source_overflow, "connections closed because their address held its maximum")

struct gw_port_stats {
#define GW_STAT_FIELD(name, desc) int64_t name;
    GW_PORT_COUNTERS(GW_STAT_FIELD)
#undef GW_STAT_FIELD
} __attribute__((aligned(64)));

/* Sums `count` per-worker slots into out. */
void gw_port_stats_sum(const struct gw_port_stats *slots, int count, struct gw_port_stats *out);

/* Counters outlive snapshots: a reload must not reset them, and the sessions
 * of an old snapshot count into the same slots as those of the new one. The
 * registry keeps one zeroed array of per-worker slots per key ("api:ID",
 * "port:N", ...) for the life of the process. Lookups are for the control
 * thread; the slots are written by the workers as before. */
struct gw_registry;

struct gw_registry *gw_registry_new(int nworkers) __attribute__((warn_unused_result));
void gw_registry_free(struct gw_registry *r);

/* The slots for key, created on first use: nworkers slots of slot_size bytes
 * (a multiple of 64), cache-line aligned. Aborts when memory runs out, as the
 * rest of start-up does. */
void *gw_registry_slots(struct gw_registry *r, const char *key, size_t slot_size);

/* A single counter shared by every worker (atomic updates), created zeroed
 * on first use and kept for the life of the process. */
int64_t *gw_registry_counter(struct gw_registry *r, const char *key);

/* Sums `count` per-worker slots into out. */
void gw_stats_sum(const struct gw_api_stats *slots, int count, struct gw_api_stats *out);

void gw_target_stats_sum(const struct gw_target_stats *slots, int count,
                         struct gw_target_stats *out);

/* Formats "name=value name=value ..." for the log. */
void gw_stats_format(const struct gw_api_stats *s, char *buf, size_t buflen);

#endif
