/* The two lines a session leaves when it ends: the access log's JSON object
 * and the info line of the gateway's log. */
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "gw_access_log.h"
#include "gw_log.h"
#include "gw_session_int.h"

void session_format_addr(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(buf, len, "%s:%u", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            /* A dual-stack listener's IPv4 client, shown as IPv4. */
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, sizeof(host));
            snprintf(buf, len, "%s:%u", host, port);
            return;
        }
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, port);
    } else {
        snprintf(buf, len, "unknown");
    }
}

/* " tls=TLSv1.3/TLS_AES_256_GCM_SHA384" and the verified client's subject. */
static void describe_tls(const char *label, const struct cert_io *io, char *buf, size_t len)
{
    buf[0] = '\0';
    const char *version = cert_io_version(io);
    if (version == NULL)
        return;
    int n = snprintf(buf, len, " %s=%s/%s", label, version, cert_io_cipher(io));
    X509 *peer = SSL_is_server(io->ssl) ? SSL_get0_peer_certificate(io->ssl) : NULL;
    if (peer != NULL && n > 0 && (size_t)n < len) {
        char subject[256];
        X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof(subject));
        for (char *c = subject; *c != '\0'; c++)
            if (*c == ' ' || *c == '"')
                *c = '_'; /* keep the line one key=value list */
        snprintf(buf + n, len - (size_t)n, " client_subject=%s", subject);
    }
}

/* Appends `,"key":"value"` (or null) to out, the value escaped for JSON. */
static void json_str(struct evbuffer *out, const char *key, const char *v)
{
    if (v == NULL) {
        evbuffer_add_printf(out, ",\"%s\":null", key);
        return;
    }
    evbuffer_add_printf(out, ",\"%s\":\"", key);
    const char *run = v; /* bytes that need no escape go out in runs */
    for (const unsigned char *c = (const unsigned char *)v;; c++) {
        bool esc = *c == '"' || *c == '\\' || (*c < 0x20 && *c != '\0') || *c == 0x7f;
        if (!esc && *c != '\0')
            continue;
        evbuffer_add(out, run, (size_t)((const char *)c - run));
        if (*c == '\0')
            break;
        if (*c == '"' || *c == '\\')
            evbuffer_add_printf(out, "\\%c", *c);
        else
            evbuffer_add_printf(out, "\\u%04x", *c);
        run = (const char *)c + 1;
    }
    evbuffer_add(out, "\"", 1);
}

/* One JSON object per connection. */
static void access_log(struct gw_session *s, enum gw_end why)
{
    char client[INET6_ADDRSTRLEN + 16], when[40];
    struct evbuffer *out = evbuffer_new();
    if (out == NULL)
        return;
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    int64_t duration = gw_now_ms() - s->started_ms;
    int64_t start_ms = (int64_t)wall.tv_sec * 1000 + wall.tv_nsec / 1000000 - duration;
    time_t start_s = (time_t)(start_ms / 1000);
    struct tm tm;
    gmtime_r(&start_s, &tm);
    size_t w = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof(when) - w, ".%03dZ", (int)(start_ms % 1000));
    session_format_addr(&s->peer.sa, client, sizeof(client));
    const char *end = gw_end_names[why];
    if (why == END_CLOSED)
        end = s->first_eof == 1 ? "upstream_closed" : "client_closed";
    const struct cert_io *cli = &s->side[GW_RELAY_CLIENT].io, *up = &s->side[GW_RELAY_UPSTREAM].io;
    evbuffer_add_printf(out, "{\"time\":\"%s\",\"duration_ms\":%lld", when, (long long)duration);
    json_str(out, "client", client);
    evbuffer_add_printf(out, ",\"listen_port\":%d", s->port->port);
    json_str(out, "api_id", s->api != NULL ? s->api->def->api_id : NULL);
    json_str(out, "sni", s->sni);
    json_str(out, "tls_version", cert_io_version(cli));
    json_str(out, "tls_cipher", cert_io_cipher(cli));
    json_str(out, "alpn", s->alpn);
    json_str(out, "target", s->api != NULL && s->attempt > 0 ? s->api->ups[s->ups].label : NULL);
    json_str(out, "upstream_tls_version", cert_io_version(up));
    json_str(out, "upstream_tls_cipher", cert_io_cipher(up));
    evbuffer_add_printf(out, ",\"attempts\":%u,\"rx_bytes\":%llu,\"tx_bytes\":%llu", s->attempt,
                        (unsigned long long)s->rx, (unsigned long long)s->tx);
    json_str(out, "end", end);
    json_str(out, "error", s->error);
    evbuffer_add(out, "}", 1);
    size_t n = evbuffer_get_length(out);
    gw_access_log_write(s->env->access_log, (const char *)evbuffer_pullup(out, -1), n);
    evbuffer_free(out);
}

void session_log_end(struct gw_session *s, enum gw_end why)
{
    if (s->env->access_log != NULL)
        access_log(s, why);
    if (!gw_log_enabled(GW_LOG_INFO))
        return;
    char client[INET6_ADDRSTRLEN + 16], down[400], up[128];
    session_format_addr(&s->peer.sa, client, sizeof(client));
    describe_tls("tls", &s->side[GW_RELAY_CLIENT].io, down, sizeof(down));
    describe_tls("upstream_tls", &s->side[GW_RELAY_UPSTREAM].io, up, sizeof(up));
    gw_info("conn client=%s port=%d api_id=%s sni=%s%s%s%s target=%s attempts=%u rx=%llu "
            "tx=%llu duration_ms=%lld end=%s%s%s%s",
            client, s->port->port, session_api_id(s), s->sni ? s->sni : "-", down,
            s->alpn ? " alpn=" : "", s->alpn ? s->alpn : "",
            s->relaying ? s->api->ups[s->ups].name : "-", s->attempt, (unsigned long long)s->rx,
            (unsigned long long)s->tx, (long long)(gw_now_ms() - s->started_ms), gw_end_names[why],
            up, s->error ? " error=" : "", s->error ? s->error : "");
}
