/* The gateway config file (tyk.conf names where Tyk has them, new settings in
 * the "tcpgate" extension object) and the command-line flags that override it. */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "api_def.h"
#include "gw_log.h"

struct gw_port_range {
    int from, to; /* inclusive */
};

struct gw_port_rule {
    bool present; /* the protocol has an entry in ports_whitelist */
    int *ports;
    size_t nports;
    struct gw_port_range *ranges;
    size_t nranges;
};

struct gw_config {
    char *file; /* NULL when no --config was given */
    char *app_path;
    char *listen_address; /* "" = every address */
    enum gw_log_level log_level;
    int workers;              /* 0 = one per core */
    int64_t drain_timeout_ms; /* SIGTERM: how long live connections may finish */
    char *secret;             /* the admin API's x-tyk-authorization secret; "" = none */
    char *node_secret;
    char *control_api_hostname; /* the admin API's address */
    int control_api_port;       /* 0 = no admin API */
    char *access_log;           /* "" = none, "stderr", or a file path */
    char *certs_path;           /* folder of PEM certificates that ids refer to */

    /* Listener TLS defaults (tyk.conf's http_server_options). */
    struct {
        int min_version; /* Tyk's numbers; 0: TLS 1.2 */
        int max_version;
        char **ssl_ciphers;
        size_t nssl_ciphers;
        char **ssl_certificates; /* served when a tls definition names none */
        size_t nssl_certificates;
    } server_tls;
    int64_t handshake_timeout_ms;   /* TLS handshake, or ClientHello peek */
    int64_t ticket_key_rotation_ms; /* session ticket keys */
    int client_hello_max;           /* bytes a peeked ClientHello may span */
    int proxy_header_max;           /* bytes an inbound PROXY header may span */
    int cert_chain_max;             /* bytes a client's certificate chain may take */
    int max_pipes;                  /* per worker, for splice(); 0 = no splice */
    int64_t max_connections;        /* gateway-wide; 0 = the descriptor limit only */
    int max_connections_per_source; /* per client IP; 0 = no limit */
    bool strict_key_permissions;    /* refuse private keys others may read */
    char *user, *group;             /* drop to these after binding; "" = stay */

    struct {
        char *host;
        int port;
        char *password;
        int database;
    } storage;

    struct {
        bool disable;
        char *poller_group;
        int failure_trigger_sample_size;
        int time_wait; /* seconds between rounds */
        int checker_pool_size;
        bool enable_uptime_analytics;
    } uptime_tests;

    bool whitelist_present;
    struct gw_port_rule whitelist_tcp;
    struct gw_port_rule whitelist_tls;
};

#define GW_DEFAULT_APP_PATH "apps"
#define GW_DEFAULT_DRAIN_TIMEOUT_MS 30000
#define GW_DEFAULT_HANDSHAKE_TIMEOUT_MS 10000
#define GW_DEFAULT_TICKET_ROTATION_MS 3600000
#define GW_DEFAULT_CLIENT_HELLO_MAX 16384
#define GW_DEFAULT_PROXY_HEADER_MAX 16384
#define GW_DEFAULT_CERT_CHAIN_MAX (100 * 1024)
#define GW_DEFAULT_CONTROL_API_PORT 9696
/* Pipes for splice() per worker: 2 descriptors each, held only while a bulk
 * direction has data in flight. */
#define GW_DEFAULT_MAX_PIPES 256
#define GW_MAX_DRAIN_S (7 * 24 * 3600) /* a week: longer is a typo */

/* Fills defaults. */
void gw_config_init(struct gw_config *cfg);

/* Reads a config file over the defaults. Problems go to diags as
 * "file: field: reason"; returns -1 if any is an error. */
int gw_config_load(struct gw_config *cfg, const char *path, struct api_diags *diags)
    __attribute__((warn_unused_result));

/* Same, from text (for tests and fuzzing). */
int gw_config_parse(struct gw_config *cfg, const char *file, const char *json, size_t len,
                    struct api_diags *diags) __attribute__((warn_unused_result));

/* The ports_whitelist check, in the shape the definition loader asks for. */
bool gw_config_port_allowed(void *cfg, enum api_protocol proto, int port);

void gw_config_free(struct gw_config *cfg);

#endif
