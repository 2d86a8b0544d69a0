/* One API definition in Tyk's classic format, parsed and validated.
 *
 * The struct is a read-only value once built: the loader owns it, the routing
 * snapshot borrows it. Every Tyk field a TCP/TLS gateway reads is kept, even those
 * that later parts of the gateway act on, so a definition written for Tyk loads
 * unchanged. Features Tyk lacks live in one extension object, "tcpgate", which is
 * validated strictly. */
#ifndef API_DEF_H
#define API_DEF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api_json.h"
#include "api_target.h"

/* The name of the extension object in a definition and in the gateway config. */
#define API_EXT_KEY "tcpgate"

enum api_protocol {
    API_PROTO_TCP,
    API_PROTO_TLS,
};

enum api_cmd_kind {
    API_CMD_SEND,
    API_CMD_EXPECT,           /* the text appears in what arrived since the last step */
    API_CMD_EXPECT_NOT,       /* it does not, by the time the peer is quiet or closes */
    API_CMD_EXPECT_REGEX,     /* a POSIX extended regular expression matches */
    API_CMD_EXPECT_NOT_REGEX, /* it does not */
};

struct api_check_cmd {
    enum api_cmd_kind kind;
    char *message; /* JSON escapes already decoded; may contain NUL, see len */
    size_t len;
};

struct api_check {
    char *url;                /* as written */
    struct api_target target; /* parsed url */
    char *protocol;           /* "tcp", "tls" or NULL (then the url's scheme) */
    int64_t timeout_ms;       /* 0: the engine's default */
    bool enable_proxy_protocol;
    struct api_check_cmd *commands;
    size_t ncommands;
};

struct api_service_discovery {
    bool use_discovery_service;
    char *query_endpoint;
    bool use_nested_query;
    char *parent_data_path;
    char *data_path;
    char *port_data_path;
    char *target_path;
    bool use_target_list;
    int64_t cache_timeout;
    bool cache_disabled;
    bool endpoint_returns_list;
};

struct api_transport {
    bool ssl_insecure_skip_verify;
    char **ssl_ciphers;
    size_t nssl_ciphers;
    int ssl_min_version; /* Tyk's numbers: 769..772; 0 = default */
    int ssl_max_version;
    bool ssl_force_common_name_check;
    char *proxy_url;
};

/* tcpgate.sentinel: the Redis sentinels that name the master (and the
 * replicas) of master_name. Durations are milliseconds. */
struct api_sentinel {
    bool enabled;
    char *master_name;
    struct api_target *addrs; /* the sentinels, host:port */
    size_t naddrs;
    char *username, *password;           /* for the sentinels; NULL: none */
    char *node_username, *node_password; /* for the data nodes (ROLE); NULL: none */
    int quorum;                          /* sentinels that must agree; 0: a majority of those
                                            that answer */
    int64_t timeout_ms;                  /* the connect and each command; default 500 ms */
    int64_t poll_interval_ms;            /* default 1 s */
    bool fallback_to_checks;             /* on_unreachable "checks"; default "keep" */
    bool replica;                        /* role "replica": balance over the replicas */
};

#define API_SENTINEL_TIMEOUT_MS 500
#define API_SENTINEL_POLL_MS 1000
#define API_SENTINEL_MAX_ADDRS 16

/* The "tcpgate" extension object. Durations are milliseconds. */
struct api_ext {
    int64_t connect_timeout_ms;         /* default 5 s */
    int64_t idle_timeout_ms;            /* default 1 h; 0 disables */
    int64_t max_connection_duration_ms; /* default 0: off */
    int max_connect_attempts;           /* default 3 */
    int64_t drain_timeout_ms;           /* -1: the gateway's drain timeout */
    int tls_min_version;                /* Tyk's numbers; 0: the gateway's */
    int tls_max_version;
    char **tls_ciphers; /* listener ciphers, OpenSSL or IANA names */
    size_t ntls_ciphers;
    char **alpn; /* protocols a tls listener offers, in preference order */
    size_t nalpn;
    char *upstream_ca_file; /* CA bundle for tls:// targets; NULL: the system's */

    /* Health checks; 0 or -1: the gateway's default. */
    int64_t check_interval_ms; /* between rounds; default uptime_tests.config.time_wait */
    int64_t check_timeout_ms;  /* per step, when the check entry sets none */
    int check_fall;            /* consecutive failures that mark a host down */
    int check_rise;            /* consecutive successes that bring it back */
    bool close_on_marked_down; /* on_marked_down: "close" ends live connections */
    bool keep_on_marked_down;  /* on_marked_down: "keep" written out (sentinel mode closes) */
    bool check_proxy_v1;       /* check_proxy_protocol: "v1" (real addresses), else v2 LOCAL */

    /* The PROXY protocol. Inbound is Tyk's enable_proxy_protocol. */
    struct api_cidr *proxy_protocol_trusted; /* who may send a header; none: anyone */
    size_t nproxy_protocol_trusted;
    bool proxy_protocol_optional;      /* accept connections without a header (unsafe) */
    int64_t proxy_protocol_timeout_ms; /* default 5 s, at least 3 s */
    int send_proxy_protocol;           /* 0: none, 1: v1, 2: v2 */
    bool send_proxy_protocol_crc32c;   /* v2: add a CRC32C TLV */

    /* Circuit breakers; 0: no limit. */
    int64_t max_connections;            /* open connections of the definition */
    int64_t max_connections_per_target; /* open connections to each target */

    struct api_sentinel sentinel;
};

#define API_DEFAULT_CONNECT_TIMEOUT_MS 5000
#define API_DEFAULT_IDLE_TIMEOUT_MS 3600000
#define API_DEFAULT_MAX_CONNECT_ATTEMPTS 3

struct api_def {
    char *file; /* the path it was loaded from */

    char *api_id;
    char *name;
    char *org_id;
    bool active;

    int listen_port;
    enum api_protocol protocol;
    char *domain; /* "" when absent: the port's fallback service */
    bool domain_disabled;

    char **certificates;
    size_t ncertificates;
    bool enable_proxy_protocol;
    bool use_mutual_tls_auth;
    char **client_certificates;
    size_t nclient_certificates;
    struct api_kv *upstream_certificates;
    size_t nupstream_certificates;
    bool upstream_certificates_disabled;
    struct api_kv *pinned_public_keys;
    size_t npinned_public_keys;
    bool certificate_pinning_disabled;
    bool do_not_track;

    struct {
        bool disabled;
        struct api_check *checks;
        size_t nchecks;
        int64_t expire_utime_after; /* seconds */
        int64_t recheck_wait;       /* seconds */
    } uptime_tests;

    struct {
        char *target_url; /* as written; NULL when absent */
        struct api_target target;
        bool enable_load_balancing;
        struct api_target *targets; /* target_list, repeats kept (they weight) */
        size_t ntargets;
        bool check_host_against_uptime_tests;
        struct api_service_discovery service_discovery;
        struct api_transport transport;
    } proxy;

    struct api_ext ext;
};

/* The targets the balancer picks from: target_list with load balancing on,
 * otherwise the single target_url. With tcpgate.sentinel, the targets the
 * definition lists (target_list, else target_url), which the sentinels'
 * verdict may use: none means any address they agree on. */
size_t api_def_upstreams(const struct api_def *def, const struct api_target **out);

/* The effective SNI key: "" when domain_disabled or absent. */
const char *api_def_domain(const struct api_def *def);

const char *api_protocol_name(enum api_protocol p);

/* Parses a definition from JSON text. `file` names it in diagnostics. Returns
 * NULL when the definition must be skipped; every problem (and every warning)
 * is appended to diags. */
struct api_def *api_def_parse(const char *file, const char *json, size_t len,
                              struct api_diags *diags) __attribute__((warn_unused_result));

void api_def_free(struct api_def *def);

#endif
