#include "gw_clienthello.h"

#include <stdio.h>
#include <string.h>

#define REC_HEADER 5
#define REC_MAX 16384 /* RFC 8446 5.1: a plaintext record never exceeds 2^14 */
#define HS_CLIENT_HELLO 1
#define EXT_SERVER_NAME 0
#define EXT_ALPN 16
/* The reassembled handshake is kept on the stack; no ClientHello seen in the
 * wild comes near this, post-quantum ones included. */
#define HS_MAX 65536

/* A bounds-checked reader over one buffer. */
struct cur {
    const uint8_t *p;
    size_t left;
    bool bad;
};

static unsigned get8(struct cur *c)
{
    if (c->left < 1) {
        c->bad = true;
        return 0;
    }
    c->left--;
    return *c->p++;
}

static unsigned get16(struct cur *c)
{
    unsigned hi = get8(c);
    return hi << 8 | get8(c);
}

static const uint8_t *take(struct cur *c, size_t n)
{
    if (c->left < n) {
        c->bad = true;
        return NULL;
    }
    const uint8_t *p = c->p;
    c->p += n;
    c->left -= n;
    return p;
}

/* A sub-reader for the next n bytes. */
static struct cur sub(struct cur *c, size_t n)
{
    struct cur s = {.p = take(c, n), .left = n, .bad = false};
    if (s.p == NULL) {
        s.left = 0;
        s.bad = true;
    }
    return s;
}

static enum gw_ch_status fail(char *err, size_t errlen, enum gw_ch_status st, const char *why)
{
    snprintf(err, errlen, "%s", why);
    return st;
}

static enum gw_ch_status parse_sni(struct cur *ext, struct gw_client_hello *out, char *err,
                                   size_t errlen)
{
    size_t list = get16(ext);
    if (ext->bad || list != ext->left || list == 0)
        return fail(err, errlen, GW_CH_MALFORMED, "server_name: bad list length");
    while (ext->left > 0) {
        unsigned type = get8(ext);
        size_t n = get16(ext);
        const uint8_t *name = take(ext, n);
        if (ext->bad)
            return fail(err, errlen, GW_CH_MALFORMED, "server_name: entry runs past the list");
        if (type != 0)
            continue; /* only host_name is defined */
        if (out->has_sni)
            return fail(err, errlen, GW_CH_MALFORMED, "server_name: two host names");
        if (n == 0 || n > 255)
            return fail(err, errlen, GW_CH_MALFORMED, "server_name: bad host name length");
        if (memchr(name, '\0', n) != NULL)
            return fail(err, errlen, GW_CH_MALFORMED, "server_name: NUL in host name");
        memcpy(out->sni, name, n);
        out->sni[n] = '\0';
        out->has_sni = true;
    }
    return GW_CH_OK;
}

static enum gw_ch_status parse_alpn(struct cur *ext, struct gw_client_hello *out, char *err,
                                    size_t errlen)
{
    size_t list = get16(ext);
    if (ext->bad || list != ext->left || list == 0)
        return fail(err, errlen, GW_CH_MALFORMED, "alpn: bad list length");
    const uint8_t *start = ext->p;
    while (ext->left > 0) {
        size_t n = get8(ext);
        if (n == 0 || take(ext, n) == NULL)
            return fail(err, errlen, GW_CH_MALFORMED, "alpn: bad protocol name length");
    }
    /* Keep whole entries only, up to the buffer's size. */
    size_t keep = 0;
    while (keep < list && keep + 1 + start[keep] <= sizeof(out->alpn))
        keep += 1 + (size_t)start[keep];
    memcpy(out->alpn, start, keep);
    out->alpn_len = keep;
    return GW_CH_OK;
}

static enum gw_ch_status parse_body(struct cur *c, struct gw_client_hello *out, char *err,
                                    size_t errlen)
{
    out->legacy_version = (uint16_t)get16(c);
    take(c, 32); /* random */
    size_t sid = get8(c);
    if (sid > 32)
        return fail(err, errlen, GW_CH_MALFORMED, "session id longer than 32 bytes");
    take(c, sid);
    size_t suites = get16(c);
    if (!c->bad && (suites < 2 || suites % 2 != 0))
        return fail(err, errlen, GW_CH_MALFORMED, "bad cipher suites length");
    take(c, suites);
    size_t comp = get8(c);
    if (!c->bad && comp < 1)
        return fail(err, errlen, GW_CH_MALFORMED, "no compression methods");
    take(c, comp);
    if (c->bad)
        return fail(err, errlen, GW_CH_MALFORMED, "ClientHello fields run past the message");
    if (c->left == 0)
        return GW_CH_OK; /* no extensions at all */
    size_t exts = get16(c);
    if (c->bad || exts != c->left)
        return fail(err, errlen, GW_CH_MALFORMED, "extensions length does not match the message");
    bool seen_sni = false, seen_alpn = false;
    while (c->left > 0) {
        unsigned type = get16(c);
        size_t n = get16(c);
        struct cur ext = sub(c, n);
        if (c->bad)
            return fail(err, errlen, GW_CH_MALFORMED, "extension runs past the message");
        enum gw_ch_status st = GW_CH_OK;
        if (type == EXT_SERVER_NAME) {
            if (seen_sni)
                return fail(err, errlen, GW_CH_MALFORMED, "server_name extension repeated");
            seen_sni = true;
            st = parse_sni(&ext, out, err, errlen);
        } else if (type == EXT_ALPN) {
            if (seen_alpn)
                return fail(err, errlen, GW_CH_MALFORMED, "alpn extension repeated");
            seen_alpn = true;
            st = parse_alpn(&ext, out, err, errlen);
        }
        if (st != GW_CH_OK)
            return st;
    }
    return GW_CH_OK;
}

enum gw_ch_status gw_client_hello_parse(const uint8_t *buf, size_t len, size_t cap,
                                        struct gw_client_hello *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (cap > HS_MAX + REC_HEADER * 8)
        cap = HS_MAX + REC_HEADER * 8;
    uint8_t hs[HS_MAX];
    size_t hlen = 0, pos = 0;
    for (;;) {
        /* A record header that cannot fit under the cap means the ClientHello
         * cannot end within it, whatever the header says. Judged before the
         * header's bytes, so that the header cut short and the header whole
         * reach the same verdict. */
        if (pos + REC_HEADER > cap)
            return fail(err, errlen, GW_CH_TOO_LARGE, "ClientHello larger than the cap");
        /* Judge a record header as soon as its bytes arrive. */
        if (pos < len && buf[pos] != 0x16)
            return fail(err, errlen, pos == 0 ? GW_CH_NOT_TLS : GW_CH_MALFORMED,
                        pos == 0 ? "not a TLS handshake record"
                                 : "ClientHello interrupted by a non-handshake record");
        if (pos + 1 < len && buf[pos + 1] != 3)
            return fail(err, errlen, pos == 0 ? GW_CH_NOT_TLS : GW_CH_MALFORMED,
                        "not a TLS record version");
        if (pos + REC_HEADER > len)
            return GW_CH_NEED_MORE;
        size_t rlen = (size_t)buf[pos + 3] << 8 | buf[pos + 4];
        if (rlen == 0 || rlen > REC_MAX)
            return fail(err, errlen, GW_CH_MALFORMED, "bad record length");
        if (pos + REC_HEADER + rlen > cap)
            return fail(err, errlen, GW_CH_TOO_LARGE, "ClientHello larger than the cap");
        size_t avail = len - (pos + REC_HEADER);
        if (avail > rlen)
            avail = rlen;
        if (hlen + avail > sizeof(hs))
            return fail(err, errlen, GW_CH_TOO_LARGE, "ClientHello larger than the cap");
        memcpy(hs + hlen, buf + pos + REC_HEADER, avail);
        hlen += avail;

        if (hlen >= 1 && hs[0] != HS_CLIENT_HELLO)
            return fail(err, errlen, GW_CH_MALFORMED,
                        "first handshake message is not a ClientHello");
        if (hlen >= 4) {
            size_t mlen = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
            if (4 + mlen > sizeof(hs) || 4 + mlen > cap)
                return fail(err, errlen, GW_CH_TOO_LARGE, "ClientHello larger than the cap");
            if (hlen >= 4 + mlen) {
                struct cur c = {.p = hs + 4, .left = mlen, .bad = false};
                enum gw_ch_status st = parse_body(&c, out, err, errlen);
                if (st != GW_CH_OK) {
                    memset(out, 0, sizeof(*out));
                    return st;
                }
                out->length = pos + REC_HEADER + rlen;
                return GW_CH_OK;
            }
        }
        if (avail < rlen)
            return GW_CH_NEED_MORE;
        pos += REC_HEADER + rlen;
    }
}

void gw_client_hello_first_alpn(const struct gw_client_hello *ch, char *buf, size_t buflen)
{
    if (ch->alpn_len == 0 || buflen == 0) {
        if (buflen > 0)
            buf[0] = '\0';
        return;
    }
    size_t n = ch->alpn[0];
    if (n >= buflen)
        n = buflen - 1;
    memcpy(buf, ch->alpn + 1, n);
    buf[n] = '\0';
}

enum gw_ch_status gw_client_hello_sni_ext(const uint8_t *ext, size_t len, char out[256], char *err,
                                          size_t errlen)
{
    struct gw_client_hello ch;
    memset(&ch, 0, sizeof(ch));
    struct cur c = {.p = ext, .left = len, .bad = false};
    enum gw_ch_status st = parse_sni(&c, &ch, err, errlen);
    memcpy(out, ch.has_sni ? ch.sni : "", ch.has_sni ? strlen(ch.sni) + 1 : 1);
    return st;
}
