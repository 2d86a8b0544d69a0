/* tcpgate: a TCP/TLS gateway configured by Tyk-style API definitions. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cert_store.h"
#include "gw_config.h"
#include "gw_log.h"
#include "gw_runtime.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tcpgate [options]\n"
            "       tcpgate cert-id FILE\n"
            "\n"
            "A TCP/TLS gateway that serves the Tyk-style API definitions (*.json) in a folder.\n"
            "\n"
            "  -c, --config FILE      gateway config (JSON, tyk.conf names); flags override it\n"
            "  -a, --apps DIR         folder of API definitions (app_path; default \"%s\")\n"
            "  -w, --workers N        worker threads (default: one per core, here %d)\n"
            "  -l, --log-level LEVEL  debug, info, warn or error (default info)\n"
            "      --check            validate the config and every definition, print one line\n"
            "                         per problem as \"file: field: reason\", exit 0 if all is\n"
            "                         valid and 1 otherwise\n"
            "  -V, --version          print the version and exit\n"
            "  -h, --help             print this help and exit\n"
            "\n"
            "cert-id FILE prints the id of the first certificate in a PEM file: the lowercase\n"
            "hex SHA-256 of its DER, which a definition's certificates entries may use.\n"
            "\n"
            "Signals:\n"
            "  SIGTERM, SIGINT   stop accepting and let live connections finish for up to the\n"
            "                    drain timeout (default 30s); a second one closes them at once\n"
            "  SIGHUP            reload the definitions (also done when a *.json file in the\n"
            "                    folder changes, and by GET /tyk/reload on the admin API)\n"
            "  SIGUSR1           reopen the access log file (after logrotate moved it)\n"
            "\n"
            "The admin API listens on control_api_hostname:control_api_port from the config\n"
            "(127.0.0.1:9696 by default; 0 turns it off): GET / (status page), /hello,\n"
            "/metrics, /tyk/apis, /tyk/health, /tyk/reload; all but / and /hello need the\n"
            "config's secret in the x-tyk-authorization header when one is set.\n"
            "\n"
            "Under systemd (NOTIFY_SOCKET set), readiness, reloads and stopping are reported\n"
            "with sd_notify messages, for a Type=notify unit.\n",
            GW_DEFAULT_APP_PATH, gw_default_workers());
}

static int cert_id(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: tcpgate cert-id FILE\n");
        return 2;
    }
    char id[CERT_ID_LEN + 1], err[512];
    if (cert_id_of_file(argv[2], id, err, sizeof(err)) != 0) {
        fprintf(stderr, "tcpgate: %s\n", err);
        return 1;
    }
    printf("%s\n", id);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "cert-id") == 0)
        return cert_id(argc, argv);
    enum { OPT_CHECK = 256 };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},  {"apps", required_argument, NULL, 'a'},
        {"workers", required_argument, NULL, 'w'}, {"log-level", required_argument, NULL, 'l'},
        {"check", no_argument, NULL, OPT_CHECK},   {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *apps = NULL, *level = NULL;
    int workers = -1;
    int check = 0;
    int c;
    while ((c = getopt_long(argc, argv, "c:a:w:l:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'a':
            apps = optarg;
            break;
        case 'w': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || v < 1 || v > 1024) {
                fprintf(stderr, "tcpgate: --workers: expected a number from 1 to 1024\n");
                return 2;
            }
            workers = (int)v;
            break;
        }
        case 'l':
            level = optarg;
            break;
        case OPT_CHECK:
            check = 1;
            break;
        case 'V':
            printf("tcpgate %s\n", TCPGATE_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tcpgate: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    struct gw_config cfg;
    struct api_diags diags = {0};
    gw_config_init(&cfg);
    int config_ok = config == NULL || gw_config_load(&cfg, config, &diags) == 0;
    if (apps != NULL) {
        free(cfg.app_path);
        cfg.app_path = strdup(apps);
    }
    if (workers > 0)
        cfg.workers = workers;
    if (level != NULL && gw_log_level_parse(level, &cfg.log_level) != 0) {
        fprintf(stderr, "tcpgate: --log-level: unknown level \"%s\"\n", level);
        gw_config_free(&cfg);
        api_diags_free(&diags);
        return 2;
    }
    gw_log_set_level(cfg.log_level);

    int rc;
    if (check) {
        rc = gw_check(&cfg, &diags) > 0 ? 1 : 0;
    } else if (!config_ok) {
        for (size_t i = 0; i < diags.count; i++)
            gw_error("%s: %s: %s", diags.items[i].file, diags.items[i].field,
                     diags.items[i].reason);
        rc = 1;
    } else {
        for (size_t i = 0; i < diags.count; i++)
            gw_warn("%s: %s: %s", diags.items[i].file, diags.items[i].field, diags.items[i].reason);
        rc = gw_run(&cfg);
    }
    gw_config_free(&cfg);
    api_diags_free(&diags);
    return rc;
}
