#include "gw_tls_route.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cert_tls.h"
#include "gw_clienthello.h"
#include "gw_snapshot.h"

static int route_ex_index = -1;
static pthread_once_t route_ex_once = PTHREAD_ONCE_INIT;
static char no_route_mark; /* ex_data value: the client hello matched no definition */

static int name_ex_index = -1; /* a copy of the requested server name */

static void route_ex_init(void)
{
    route_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    name_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, cert_ex_free);
}

const char *gw_tls_requested_name(SSL *ssl)
{
    const char *name = SSL_get_ex_data(ssl, name_ex_index);
    return name != NULL ? name : "";
}

struct gw_api *gw_tls_chosen(SSL *ssl, bool *no_route)
{
    void *v = SSL_get_ex_data(ssl, route_ex_index);
    *no_route = v == &no_route_mark;
    return *no_route ? NULL : v;
}

/* Runs in the handshake, before version and certificate selection: the SNI
 * picks the definition, and with it the certificate and TLS settings. */
static int client_hello_cb(SSL *ssl, int *alert, void *arg)
{
    const struct gw_port *p = arg;
    const unsigned char *ext = NULL;
    size_t len = 0;
    char name[256] = "";
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &len) == 1) {
        char err[128];
        if (gw_client_hello_sni_ext(ext, len, name, err, sizeof(err)) != GW_CH_OK) {
            *alert = SSL_AD_DECODE_ERROR;
            return SSL_CLIENT_HELLO_ERROR;
        }
    }
    if (name[0] != '\0')
        SSL_set_ex_data(ssl, name_ex_index, strdup(name));
    struct gw_api *api = gw_port_route_sni(p, name);
    if (api == NULL) {
        SSL_set_ex_data(ssl, route_ex_index, &no_route_mark);
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_CLIENT_HELLO_ERROR;
    }
    SSL_set_ex_data(ssl, route_ex_index, api);
    cert_ssl_switch_ctx(ssl, api->server_ctx);
    return SSL_CLIENT_HELLO_SUCCESS;
}

void gw_tls_route_install(SSL_CTX *front, const struct gw_port *port)
{
    pthread_once(&route_ex_once, route_ex_init);
    SSL_CTX_set_client_hello_cb(front, client_hello_cb, (void *)port);
}
