/* Fuzz target: the ClientHello reader that routes passthrough ports by SNI
 * (gateway/gw_clienthello.h).
 *
 * The input is what a client sent first. It is parsed under several caps (the
 * default client_hello_max, the config's smallest and largest, and one just
 * below the input's size), whole and cut short, because a session re-parses
 * whatever has arrived on every read: a prefix may only say "need more" or
 * reach the verdict the whole input reaches. A larger cap may only turn a
 * "too large" into something else, never change a ClientHello that was read.
 * The server_name extension reader OpenSSL's callback uses gets the raw bytes
 * too. */
#include <stdbool.h>

#include "fuzz_util.h"
#include "gw_clienthello.h"
#include "gw_config.h"

static bool ch_status_known(enum gw_ch_status st)
{
    return st == GW_CH_NEED_MORE || st == GW_CH_OK || st == GW_CH_NOT_TLS ||
           st == GW_CH_MALFORMED || st == GW_CH_TOO_LARGE;
}

/* The ALPN list kept is whole entries of non-empty names. */
static void ch_check_alpn(const struct gw_client_hello *ch)
{
    FUZZ_CHECK(ch->alpn_len <= sizeof(ch->alpn));
    size_t i = 0;
    while (i < ch->alpn_len) {
        FUZZ_CHECK(ch->alpn[i] > 0);
        i += 1 + (size_t)ch->alpn[i];
    }
    FUZZ_CHECK(i == ch->alpn_len);
    /* The first name as a string, into buffers of every awkward size. */
    static const size_t sizes[] = {1, 2, 3, 16, 256};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        char first[256];
        memset(first, 'x', sizeof(first));
        gw_client_hello_first_alpn(ch, first, sizes[k]);
        FUZZ_CHECK(fuzz_terminated(first, sizes[k]));
        if (ch->alpn_len > 0 && ch->alpn[0] < sizes[k])
            FUZZ_CHECK(memcmp(first, ch->alpn + 1, ch->alpn[0]) == 0);
    }
}

/* What must hold of any single parse of buf[0..len) under cap. */
static void ch_check(const uint8_t *buf, size_t len, size_t cap, enum gw_ch_status st,
                     const struct gw_client_hello *ch, const char *err)
{
    FUZZ_CHECK(ch_status_known(st));
    FUZZ_CHECK(fuzz_terminated(err, 128));
    if (st == GW_CH_NEED_MORE) {
        FUZZ_CHECK(!ch->has_sni);
        return;
    }
    if (st != GW_CH_OK) {
        FUZZ_CHECK(err[0] != '\0'); /* a rejection says why */
        FUZZ_CHECK(!ch->has_sni && ch->alpn_len == 0);
        return;
    }
    FUZZ_CHECK(ch->length >= 5 + 4 && ch->length <= cap);
    ch_check_alpn(ch);
    FUZZ_CHECK(fuzz_terminated(ch->sni, sizeof(ch->sni)));
    size_t n = strlen(ch->sni);
    FUZZ_CHECK(ch->has_sni ? n >= 1 : n == 0);
    /* A ClientHello in one record is a plain slice of the input: the name
     * must appear there as a host_name entry, its length just before it. */
    size_t rlen = (size_t)buf[3] << 8 | buf[4];
    if (ch->has_sni && ch->length == 5 + rlen && ch->length <= len) {
        bool found = false;
        for (size_t at = 8; at + n <= ch->length && !found; at++)
            found = buf[at - 3] == 0 && ((size_t)buf[at - 2] << 8 | buf[at - 1]) == n &&
                    memcmp(buf + at, ch->sni, n) == 0;
        FUZZ_CHECK(found);
    }
}

/* Two successful parses read the same ClientHello. */
static void ch_check_same(const struct gw_client_hello *a, const struct gw_client_hello *b)
{
    FUZZ_CHECK(a->has_sni == b->has_sni && strcmp(a->sni, b->sni) == 0);
    FUZZ_CHECK(a->alpn_len == b->alpn_len && memcmp(a->alpn, b->alpn, a->alpn_len) == 0);
    FUZZ_CHECK(a->legacy_version == b->legacy_version && a->length == b->length);
}

static enum gw_ch_status ch_parse(const uint8_t *data, size_t len, size_t cap,
                                  struct gw_client_hello *ch)
{
    uint8_t *buf = fuzz_copy(data, len);
    char err[128];
    memset(ch, 0xa5, sizeof(*ch)); /* whatever a caller's stack held */
    memset(err, 'x', sizeof(err));
    err[sizeof(err) - 1] = '\0';
    enum gw_ch_status st = gw_client_hello_parse(buf, len, cap, ch, err, sizeof(err));
    ch_check(buf, len, cap, st, ch, err);
    free(buf);
    return st;
}

static enum gw_ch_status ch_check_cap(const uint8_t *data, size_t size, size_t cap,
                                      struct gw_client_hello *whole_ch)
{
    enum gw_ch_status whole = ch_parse(data, size, cap, whole_ch);
    size_t cuts[64];
    size_t ncuts = fuzz_prefixes(size, whole == GW_CH_OK ? whole_ch->length : 0, cuts);
    for (size_t i = 0; i < ncuts; i++) {
        struct gw_client_hello ch;
        enum gw_ch_status st = ch_parse(data, cuts[i], cap, &ch);
        if (st != GW_CH_NEED_MORE) {
            if (st != whole)
                fprintf(stderr, "cap %zu, prefix %zu of %zu: status %d, whole: %d\n", cap, cuts[i],
                        size, st, whole);
            FUZZ_CHECK(st == whole);
            if (st == GW_CH_OK)
                ch_check_same(&ch, whole_ch);
        }
        if (whole == GW_CH_OK && cuts[i] >= whole_ch->length)
            FUZZ_CHECK(st == GW_CH_OK);
    }
    return whole;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Ascending, so that a ClientHello read under one cap can be compared
     * with every larger one. The first three are the config's default,
     * smallest and largest client_hello_max. */
    size_t caps[4] = {1024, GW_DEFAULT_CLIENT_HELLO_MAX, 65536, 0};
    size_t ncaps = 3;
    if (size > 1 && size - 1 < caps[0]) { /* a cap the input just exceeds */
        memmove(caps + 1, caps, 3 * sizeof(caps[0]));
        caps[0] = size - 1;
        ncaps = 4;
    }
    struct gw_client_hello first;
    bool have_first = false;
    for (size_t i = 0; i < ncaps; i++) {
        struct gw_client_hello ch;
        enum gw_ch_status st = ch_check_cap(data, size, caps[i], &ch);
        if (st == GW_CH_OK && have_first)
            ch_check_same(&ch, &first);
        else if (st == GW_CH_OK)
            first = ch, have_first = true;
        else
            FUZZ_CHECK(!have_first); /* a larger cap cannot lose a ClientHello */
    }

    /* The server_name extension body, as OpenSSL hands it over. */
    uint8_t *buf = fuzz_copy(data, size);
    char name[256], err[128];
    memset(name, 'x', sizeof(name));
    err[0] = '\0';
    enum gw_ch_status st = gw_client_hello_sni_ext(buf, size, name, err, sizeof(err));
    FUZZ_CHECK(st == GW_CH_OK || st == GW_CH_MALFORMED);
    FUZZ_CHECK(fuzz_terminated(name, sizeof(name)));
    if (st == GW_CH_MALFORMED)
        FUZZ_CHECK(err[0] != '\0');
    free(buf);
    return 0;
}
