/* A TLS ClientHello reader for routing by SNI without terminating TLS.
 *
 * Pure: it takes the bytes a client has sent so far and says "need more",
 * "here is the SNI and ALPN", "not TLS" or "malformed". It reassembles a
 * ClientHello split across TCP segments and across TLS records (post-quantum
 * key shares make ClientHellos exceed one segment) and never reads past the
 * bytes it is given. */
#ifndef GW_CLIENTHELLO_H
#define GW_CLIENTHELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gw_ch_status {
    GW_CH_NEED_MORE = 0, /* incomplete: read more and call again */
    GW_CH_OK = 1,        /* a whole ClientHello was read */
    GW_CH_NOT_TLS = -1,  /* the bytes are not a TLS handshake */
    GW_CH_MALFORMED = -2,
    GW_CH_TOO_LARGE = -3, /* longer than the caller's cap */
};

#define GW_CH_ALPN_MAX 256 /* bytes of ALPN list kept */

struct gw_client_hello {
    bool has_sni;
    char sni[256];   /* NUL-terminated host_name, as sent */
    size_t alpn_len; /* the protocol_name_list, wire format (u8 length + name)* */
    uint8_t alpn[GW_CH_ALPN_MAX];
    uint16_t legacy_version; /* client_version field */
    size_t length;           /* bytes of records that carried the ClientHello */
};

/* Parses buf[0..len). `cap` bounds the bytes the ClientHello may span. */
enum gw_ch_status gw_client_hello_parse(const uint8_t *buf, size_t len, size_t cap,
                                        struct gw_client_hello *out, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Reads the body of a server_name extension (as OpenSSL's client-hello callback
 * hands it over): the host_name, or "" when the list names none. */
enum gw_ch_status gw_client_hello_sni_ext(const uint8_t *ext, size_t len, char out[256], char *err,
                                          size_t errlen) __attribute__((warn_unused_result));

/* The first ALPN protocol as a string, or "" (for logs). */
void gw_client_hello_first_alpn(const struct gw_client_hello *ch, char *buf, size_t buflen);

#endif
