#include "gw_metrics.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "gw_access_log.h"
#include "hc_engine.h"
#include "hc_sentinel.h"

/* Label values may hold any byte a definition allows: escape as the text
 * format requires. */
static void label(struct evbuffer *out, const char *name, const char *value)
{
    evbuffer_add_printf(out, "%s=\"", name);
    for (const char *c = value; *c != '\0'; c++) {
        if (*c == '\\' || *c == '"')
            evbuffer_add_printf(out, "\\%c", *c);
        else if (*c == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, c, 1);
    }
    evbuffer_add(out, "\"", 1);
}

static void family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP tcpgate_%s %s\n# TYPE tcpgate_%s %s\n", name, help, name,
                        type);
}

/* Per definition, under Envoy's names where Envoy has one. */
#define API_METRICS(X)                                                                             \
    X(downstream_cx_total, counter, cx_total, "Connections accepted")                              \
    X(downstream_cx_active, gauge, cx_active, "Connections open now")                              \
    X(downstream_cx_rx_bytes_total, counter, rx_bytes, "Bytes read from clients")                  \
    X(downstream_cx_rx_bytes_buffered, gauge, rx_buffered,                                         \
      "Bytes read from clients and not yet written upstream")                                      \
    X(downstream_cx_tx_bytes_total, counter, tx_bytes, "Bytes written to clients")                 \
    X(downstream_cx_tx_bytes_buffered, gauge, tx_buffered,                                         \
      "Bytes read for clients and not yet written to them")                                        \
    X(downstream_flow_control_paused_reading_total, counter, paused_reading,                       \
      "Times reading from a client paused because its upstream was slow")                          \
    X(downstream_flow_control_resumed_reading_total, counter, resumed_reading,                     \
      "Times reading from a client resumed")                                                       \
    X(upstream_flow_control_paused_reading_total, counter, upstream_paused_reading,                \
      "Times reading from an upstream paused because its client was slow")                         \
    X(upstream_flow_control_resumed_reading_total, counter, upstream_resumed_reading,              \
      "Times reading from an upstream resumed")                                                    \
    X(idle_timeout, counter, idle_timeout, "Connections closed by the idle timeout")               \
    X(max_downstream_connection_duration, counter, max_duration,                                   \
      "Connections closed by max_connection_duration")                                             \
    X(upstream_flush_total, counter, upstream_flush_total,                                         \
      "Connections that went on writing a failed client's bytes upstream")                         \
    X(upstream_flush_active, gauge, upstream_flush_active,                                         \
      "Connections writing a failed client's bytes upstream now")                                  \
    X(upstream_cx_total, counter, upstream_cx_total, "Upstream connections established")           \
    X(upstream_cx_connect_fail, counter, connect_fail, "Upstream connect attempts that failed")    \
    X(upstream_cx_connect_timeout, counter, connect_timeout,                                       \
      "Upstream connect attempts that timed out")                                                  \
    X(upstream_cx_none_healthy, counter, no_upstream,                                              \
      "Clients closed because no target could be reached")                                         \
    X(upstream_cx_closed_on_down, counter, closed_on_down,                                         \
      "Connections closed because their target was marked down")                                   \
    X(downstream_cx_drained, counter, drained, "Connections closed by a drain timeout")            \
    X(downstream_cx_overflow, counter, cx_overflow,                                                \
      "Connections closed because the definition held max_connections")                            \
    X(upstream_cx_overflow, counter, upstream_cx_overflow,                                         \
      "Connections closed because every healthy target held max_connections_per_target")           \
    X(upstream_tls_handshake_failures_total, counter, upstream_tls_failed,                         \
      "Upstream TLS handshakes that failed, verification included")                                \
    X(upstream_tls_pin_mismatch_total, counter, upstream_pin_mismatch,                             \
      "Upstream certificates that matched no pinned key")                                          \
    X(upstream_tls_resumed_total, counter, upstream_tls_resumed,                                   \
      "Upstream TLS handshakes that resumed a session")

static void render_apis(struct evbuffer *out, const struct gw_view *v)
{
    const struct gw_snapshot *s = v->snap;
    struct gw_api_stats sums[s->napis ? s->napis : 1];
    for (size_t i = 0; i < s->napis; i++)
        gw_stats_sum(s->apis[i].stats, v->nworkers, &sums[i]);
#define API_FAMILY(name, type, field, help)                                                        \
    family(out, #name, #type, help);                                                               \
    for (size_t i = 0; i < s->napis; i++) {                                                        \
        evbuffer_add_printf(out, "tcpgate_%s{", #name);                                            \
        label(out, "api_id", s->apis[i].def->api_id);                                              \
        evbuffer_add_printf(out, "} %" PRId64 "\n", sums[i].field);                                \
    }
    API_METRICS(API_FAMILY)
#undef API_FAMILY
}

/* Targets repeated in a list (weights) are one host: shown once. */
static bool first_entry(const struct gw_api *api, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (strcmp(api->ups[j].label, api->ups[i].label) == 0)
            return false;
    return true;
}

static void target_labels(struct evbuffer *out, const char *name, const struct gw_api *api,
                          const struct gw_upstream *u)
{
    evbuffer_add_printf(out, "tcpgate_%s{", name);
    label(out, "api_id", api->def->api_id);
    evbuffer_add(out, ",", 1);
    label(out, "target", u->label);
    evbuffer_add(out, "} ", 2);
}

#define TARGET_COUNTER_METRICS(X)                                                                  \
    X(target_cx_total, counter, cx_total, "Connections established to the target")                 \
    X(target_cx_active, gauge, cx_active, "Connections open to the target now")                    \
    X(target_connect_fail_total, counter, connect_fail, "Connect attempts that failed")            \
    X(target_connect_timeout_total, counter, connect_timeout, "Connect attempts that timed out")   \
    X(target_rx_bytes_total, counter, rx_bytes, "Bytes read from clients of its connections")      \
    X(target_tx_bytes_total, counter, tx_bytes, "Bytes written to clients of its connections")

/* What a target's check says, as numbers. */
#define TARGET_CHECK_METRICS(X)                                                                    \
    X(target_health, gauge, "%d",                                                                  \
      st.state == HC_UP     ? 1                                                                    \
      : st.state == HC_DOWN ? 0                                                                    \
                            : -1,                                                                  \
      "Health by the checks: 1 up, 0 down, -1 not decided yet")                                    \
    X(target_eligible, gauge, "%d", st.eligible ? 1 : 0,                                           \
      "Whether the balancer may pick the target now")                                              \
    X(target_checks_total, counter, "%" PRIu64, st.checks, "Checks run")                           \
    X(target_check_failures_total, counter, "%" PRIu64, st.failures, "Checks that failed")         \
    X(target_check_transitions_total, counter, "%" PRIu64, st.transitions,                         \
      "Changes between up and down")                                                               \
    X(target_check_duration_seconds, gauge, "%.3f", (double)st.last_duration_ms / 1000.0,          \
      "How long the last check took")

static void render_targets(struct evbuffer *out, const struct gw_view *v)
{
    const struct gw_snapshot *s = v->snap;
#define TARGET_FAMILY(name, type, field, help)                                                     \
    family(out, #name, #type, help);                                                               \
    for (size_t a = 0; a < s->napis; a++) {                                                        \
        const struct gw_api *api = &s->apis[a];                                                    \
        for (size_t i = 0; i < api->nups; i++) {                                                   \
            if (!first_entry(api, i))                                                              \
                continue;                                                                          \
            struct gw_target_stats sum;                                                            \
            gw_target_stats_sum(api->ups[i].stats, v->nworkers, &sum);                             \
            target_labels(out, #name, api, &api->ups[i]);                                          \
            evbuffer_add_printf(out, "%" PRId64 "\n", sum.field);                                  \
        }                                                                                          \
    }
    TARGET_COUNTER_METRICS(TARGET_FAMILY)
#undef TARGET_FAMILY
#define CHECK_FAMILY(name, type, fmt, value, help)                                                 \
    family(out, #name, #type, help);                                                               \
    for (size_t a = 0; a < s->napis; a++) {                                                        \
        const struct gw_api *api = &s->apis[a];                                                    \
        for (size_t i = 0; i < api->nups; i++) {                                                   \
            if (api->ups[i].hc == NULL || !first_entry(api, i))                                    \
                continue;                                                                          \
            struct hc_status st;                                                                   \
            hc_target_status(api->ups[i].hc, &st);                                                 \
            target_labels(out, #name, api, &api->ups[i]);                                          \
            evbuffer_add_printf(out, fmt "\n", value);                                             \
        }                                                                                          \
    }
    TARGET_CHECK_METRICS(CHECK_FAMILY)
#undef CHECK_FAMILY
}

/* Sentinel mode: per definition, what its watcher sees and counted. */
static void sentinel_labels(struct evbuffer *out, const char *name, const struct gw_api *api)
{
    evbuffer_add_printf(out, "tcpgate_%s{", name);
    label(out, "api_id", api->def->api_id);
}

/* A gauge per sentinel of each watcher: up, or subscribed. */
static void link_gauge(struct evbuffer *out, const char *name, const char *help,
                       const struct gw_api *const *apis, const struct hc_sentinel_status *st,
                       size_t n, bool subscribed)
{
    family(out, name, "gauge", help);
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < st[i].nlinks; k++) {
            struct hc_sentinel_link_status ls;
            hc_sentinel_link(apis[i]->sentinel, k, &ls);
            sentinel_labels(out, name, apis[i]);
            evbuffer_add(out, ",", 1);
            label(out, "sentinel", ls.name);
            evbuffer_add_printf(out, "} %d\n", (subscribed ? ls.subscribed : ls.up) ? 1 : 0);
        }
    }
}

static void render_sentinels(struct evbuffer *out, const struct gw_view *v)
{
    const struct gw_snapshot *s = v->snap;
    size_t n = 0;
    for (size_t a = 0; a < s->napis; a++)
        n += s->apis[a].sentinel != NULL;
    if (n == 0)
        return;
    struct hc_sentinel_status st[n];
    const struct gw_api *apis[n];
    n = 0;
    for (size_t a = 0; a < s->napis; a++) {
        if (s->apis[a].sentinel != NULL) {
            apis[n] = &s->apis[a];
            hc_sentinel_status(s->apis[a].sentinel, &st[n++]);
        }
    }
    link_gauge(out, "sentinel_up", "1 when the sentinel answered its last queries", apis, st, n,
               false);
    link_gauge(out, "sentinel_subscribed",
               "1 when the sentinel's failover events arrive; 0: it is polled only", apis, st, n,
               true);
    family(out, "sentinel_query_failures_total", "counter",
           "Queries to a sentinel that failed, by reason");
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < st[i].nlinks; k++) {
            struct hc_sentinel_link_status ls;
            hc_sentinel_link(apis[i]->sentinel, k, &ls);
#define FAILURE_SAMPLE(id, desc)                                                                   \
    sentinel_labels(out, "sentinel_query_failures_total", apis[i]);                                \
    evbuffer_add(out, ",", 1);                                                                     \
    label(out, "sentinel", ls.name);                                                               \
    evbuffer_add_printf(out, ",reason=\"" #id "\"} %" PRIu64 "\n", ls.failures[HC_SF_##id]);
            HC_SENTINEL_FAILURES(FAILURE_SAMPLE)
#undef FAILURE_SAMPLE
        }
    }
    family(out, "sentinel_config_epoch", "gauge", "The config epoch of the master in force");
    for (size_t i = 0; i < n; i++) {
        sentinel_labels(out, "sentinel_config_epoch", apis[i]);
        evbuffer_add_printf(out, "} %" PRIu64 "\n", st[i].epoch);
    }
    family(out, "sentinel_named_by", "gauge", "Sentinels that named the master in force");
    for (size_t i = 0; i < n; i++) {
        sentinel_labels(out, "sentinel_named_by", apis[i]);
        evbuffer_add_printf(out, "} %d\n", st[i].named_by);
    }
    family(out, "sentinel_master_switches_total", "counter",
           "Times the master changed by the sentinels' verdict");
    for (size_t i = 0; i < n; i++) {
        sentinel_labels(out, "sentinel_master_switches_total", apis[i]);
        evbuffer_add_printf(out, "} %" PRIu64 "\n", st[i].switches);
    }
    family(out, "sentinel_last_switch_seconds", "gauge",
           "The last switch: from the first event (or answer) that showed it to the commit");
    for (size_t i = 0; i < n; i++) {
        if (st[i].last_switch_ms < 0)
            continue;
        sentinel_labels(out, "sentinel_last_switch_seconds", apis[i]);
        evbuffer_add_printf(out, "} %.3f\n", (double)st[i].last_switch_ms / 1000.0);
    }
    family(out, "sentinel_events_total", "counter", "Sentinel events about the master, by type");
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < HC_SN_EV_COUNT; k++) {
            if (st[i].events[k] == 0)
                continue;
            sentinel_labels(out, "sentinel_events_total", apis[i]);
            evbuffer_add(out, ",", 1);
            label(out, "event", hc_sn_event_name((enum hc_sn_event_kind)k));
            evbuffer_add_printf(out, "} %" PRIu64 "\n", st[i].events[k]);
        }
    }
    family(out, "sentinel_role_verify_failures_total", "counter",
           "Nodes the sentinels named whose ROLE did not confirm it");
    for (size_t i = 0; i < n; i++) {
        sentinel_labels(out, "sentinel_role_verify_failures_total", apis[i]);
        evbuffer_add_printf(out, "} %" PRIu64 "\n", st[i].role_verify_failures);
    }
    family(out, "sentinel_refused_total", "counter",
           "Addresses the sentinels named that were not used, by reason");
    for (size_t i = 0; i < n; i++) {
#define REFUSAL_SAMPLE(name, desc)                                                                 \
    sentinel_labels(out, "sentinel_refused_total", apis[i]);                                       \
    evbuffer_add_printf(out, ",reason=\"" #name "\"} %" PRIu64 "\n", st[i].refused[HC_SR_##name]);
        HC_SENTINEL_REFUSALS(REFUSAL_SAMPLE)
#undef REFUSAL_SAMPLE
    }
    family(out, "target_sentinel_named", "gauge",
           "1 when the sentinels name the target for its definition's role");
    for (size_t i = 0; i < n; i++) {
        const struct gw_api *api = apis[i];
        for (size_t k = 0; k < api->nups; k++) {
            if (api->ups[k].node == NULL || !first_entry(api, k))
                continue;
            target_labels(out, "target_sentinel_named", api, &api->ups[k]);
            evbuffer_add_printf(out, "%d\n", hc_sentinel_node_named(api->ups[k].node) ? 1 : 0);
        }
    }
}

/* A family of per-port counters, one sample per (port, reason). */
struct reason {
    const char *name;
    size_t offset; /* of the counter in gw_port_stats */
};

#define REASON(label, field)                                                                       \
    {                                                                                              \
        label, offsetof(struct gw_port_stats, field)                                               \
    }

static void port_family(struct evbuffer *out, const struct gw_view *v,
                        const struct gw_port_stats *sums, const char *name, const char *help,
                        const struct reason *reasons, size_t n, bool tls_only)
{
    const struct gw_snapshot *s = v->snap;
    family(out, name, "counter", help);
    for (size_t i = 0; i < s->nports; i++) {
        const struct gw_port *p = &s->ports[i];
        if (tls_only && p->mode != GW_ROUTE_TLS)
            continue;
        for (size_t r = 0; r < n; r++) {
            int64_t value;
            memcpy(&value, (const char *)&sums[i] + reasons[r].offset, sizeof(value));
            evbuffer_add_printf(out, "tcpgate_%s{port=\"%d\"", name, p->port);
            if (reasons[r].name != NULL)
                evbuffer_add_printf(out, ",reason=\"%s\"", reasons[r].name);
            evbuffer_add_printf(out, "} %" PRId64 "\n", value);
        }
    }
}

static void render_ports(struct evbuffer *out, const struct gw_view *v)
{
    const struct gw_snapshot *s = v->snap;
    struct gw_port_stats sums[s->nports ? s->nports : 1];
    for (size_t i = 0; i < s->nports; i++)
        gw_port_stats_sum(s->ports[i].stats, v->nworkers, &sums[i]);
    static const struct reason no_route[] = {REASON(NULL, no_route)};
    port_family(out, v, sums, "downstream_cx_no_route",
                "Connections no definition could take (no SNI match, not TLS)", no_route, 1, false);
    static const struct reason handshakes[] = {REASON(NULL, tls_handshakes)};
    port_family(out, v, sums, "tls_handshakes_total", "Client TLS handshakes completed", handshakes,
                1, true);
    static const struct reason resumed[] = {REASON(NULL, tls_resumed)};
    port_family(out, v, sums, "tls_resumed_total", "Client TLS handshakes that resumed a session",
                resumed, 1, true);
    static const struct reason sni[] = {REASON(NULL, sni_not_found)};
    port_family(out, v, sums, "tls_sni_not_found_total",
                "TLS clients whose server name no definition serves", sni, 1, false);
    static const struct reason failures[] = {
        REASON("protocol", tls_fail_protocol),
        REASON("cipher", tls_fail_cipher),
        REASON("client_certificate", tls_fail_client_cert),
        REASON("client_alert", tls_fail_alert),
        REASON("client_closed", tls_fail_closed),
        REASON("timeout", tls_handshake_timeout),
        REASON("other", tls_fail_other),
    };
    port_family(out, v, sums, "tls_handshake_failures_total",
                "Client TLS handshakes (or ClientHellos) that failed, by reason", failures,
                sizeof(failures) / sizeof(failures[0]), false);
    static const struct reason accepted[] = {REASON(NULL, prx_accepted)};
    port_family(out, v, sums, "proxy_protocol_accepted_total", "PROXY protocol headers accepted",
                accepted, 1, false);
    static const struct reason rejected[] = {
        REASON("no_header", prx_not_hdr),   REASON("bad_header", prx_bad_hdr),
        REASON("truncated", prx_truncated), REASON("timeout", prx_timeout),
        REASON("untrusted", prx_untrusted),
    };
    port_family(out, v, sums, "proxy_protocol_rejected_total",
                "Connections refused over their PROXY protocol header, by reason", rejected,
                sizeof(rejected) / sizeof(rejected[0]), false);
    static const struct reason global[] = {REASON(NULL, cx_overflow)};
    port_family(out, v, sums, "downstream_global_cx_overflow",
                "Connections closed because the gateway-wide maximum was reached", global, 1,
                false);
    static const struct reason source[] = {REASON(NULL, source_overflow)};
    port_family(out, v, sums, "downstream_source_cx_overflow",
                "Connections closed because their client address held its maximum", source, 1,
                false);
    static const struct reason bad_hello[] = {REASON(NULL, bad_client_hello)};
    port_family(out, v, sums, "bad_client_hello_total",
                "Malformed or oversized ClientHellos on SNI-routed TCP ports", bad_hello, 1, false);
}

static void render_gateway(struct evbuffer *out, const struct gw_view *v)
{
    const struct gw_reload_info *r = &v->reload;
    family(out, "reloads_total", "counter", "Reloads of the definitions, by result");
    evbuffer_add_printf(out, "tcpgate_reloads_total{result=\"ok\"} %" PRIu64 "\n", r->ok);
    evbuffer_add_printf(out, "tcpgate_reloads_total{result=\"failed\"} %" PRIu64 "\n", r->failed);
    family(out, "reload_last_success", "gauge",
           "1 when the last reload took effect (also before any), 0 when it failed");
    evbuffer_add_printf(out, "tcpgate_reload_last_success %d\n",
                        r->last_unix == 0 || r->last_ok ? 1 : 0);
    family(out, "reload_last_timestamp_seconds", "gauge", "When the last reload ran, 0 for never");
    evbuffer_add_printf(out, "tcpgate_reload_last_timestamp_seconds %" PRId64 "\n", r->last_unix);
    family(out, "definitions", "gauge", "Definitions served");
    evbuffer_add_printf(out, "tcpgate_definitions %zu\n", v->snap->napis);
    family(out, "definition_errors", "gauge", "Problems the last load found (files skipped)");
    evbuffer_add_printf(out, "tcpgate_definition_errors %zu\n",
                        v->load_diags != NULL ? api_diags_errors(v->load_diags) : 0);
    family(out, "listening_ports", "gauge", "Ports listened on");
    evbuffer_add_printf(out, "tcpgate_listening_ports %zu\n", v->snap->nports);
    family(out, "access_log_dropped_total", "counter",
           "Access log lines dropped because the writer fell behind");
    evbuffer_add_printf(out, "tcpgate_access_log_dropped_total %" PRIu64 "\n",
                        gw_access_log_dropped(v->access_log));
    family(out, "start_time_seconds", "gauge", "When the gateway started, in Unix time");
    evbuffer_add_printf(out, "tcpgate_start_time_seconds %" PRId64 "\n", v->started_unix);
}

void gw_metrics_render(struct evbuffer *out, const struct gw_view *v)
{
    render_apis(out, v);
    render_targets(out, v);
    render_sentinels(out, v);
    render_ports(out, v);
    render_gateway(out, v);
}
