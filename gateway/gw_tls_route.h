/* Routing by SNI during a TLS handshake: on a port of protocol tls, the
 * client hello callback picks the definition the server name asks for, and
 * with it the certificate and TLS settings the handshake goes on with. The
 * table it looks in is the port's (gw_sni.c); this is the OpenSSL side. */
#ifndef GW_TLS_ROUTE_H
#define GW_TLS_ROUTE_H

#include <openssl/ssl.h>
#include <stdbool.h>

struct gw_api;
struct gw_port;

/* Makes handshakes that start on front route by port's definitions. */
void gw_tls_route_install(SSL_CTX *front, const struct gw_port *port);

/* After the handshake: the definition the client hello chose, or NULL (and
 * *no_route set when its server name matched none). */
struct gw_api *gw_tls_chosen(SSL *ssl, bool *no_route);

/* The server name the client asked for in its hello, "" when none. */
const char *gw_tls_requested_name(SSL *ssl);

#endif
