#include "gw_admin.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_log.h"
#include "gw_metrics.h"
#include "hc_engine.h"
#include "hc_sentinel.h"

/* The status page, generated from gateway/status.html at build time. */
extern const unsigned char gw_status_page[];
extern const size_t gw_status_page_len;

struct gw_admin {
    struct evhttp *http;
    const struct gw_config *cfg;
    const struct gw_view *view;
    int (*reload)(void *arg);
    void *arg;
};

bool gw_admin_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strcmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

bool gw_admin_secret_ok(const char *configured, const char *presented)
{
    if (presented == NULL || configured[0] == '\0')
        return false;
    /* Digests of equal length, compared in constant time: neither where the
     * values differ nor the secret's length shows in the timing. */
    unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)configured, strlen(configured), a);
    SHA256((const unsigned char *)presented, strlen(presented), b);
    return CRYPTO_memcmp(a, b, sizeof(a)) == 0;
}

/* ---- responses ------------------------------------------------------------------- */

static void send_json(struct evhttp_request *req, int code, json_t *body)
{
    struct evbuffer *out = evbuffer_new();
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (out == NULL || text == NULL) {
        free(text);
        if (out != NULL)
            evbuffer_free(out);
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add(out, text, strlen(text));
    evbuffer_add(out, "\n", 1);
    free(text);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", out);
    evbuffer_free(out);
}

/* Tyk's shape for status replies: {"status": ..., "message": ...}. */
static void send_status(struct evhttp_request *req, int code, const char *status,
                        const char *message)
{
    send_json(req, code, json_pack("{s:s, s:s}", "status", status, "message", message));
}

/* ---- content ----------------------------------------------------------------------- */

static const char *state_name(enum hc_state s)
{
    return s == HC_UP ? "up" : s == HC_DOWN ? "down" : "unknown";
}

static json_t *check_json(const struct hc_target *hc)
{
    struct hc_status st;
    hc_target_status(hc, &st);
    return json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:s}", "state", state_name(st.state),
                     "eligible", st.eligible, "checks", (json_int_t)st.checks, "failures",
                     (json_int_t)st.failures, "transitions", (json_int_t)st.transitions,
                     "last_duration_ms", (json_int_t)st.last_duration_ms, "last_result",
                     st.last_result);
}

/* What the sentinels say of a target, or null for a definition without them. */
static json_t *node_json(const struct gw_upstream *u)
{
    if (u->node == NULL)
        return json_null();
    struct hc_sentinel_node_status st;
    hc_sentinel_node_status(u->node, &st);
    return json_pack("{s:b, s:b, s:i, s:I, s:s?}", "named", st.named, "eligible", st.eligible,
                     "named_by", st.named_by, "epoch", (json_int_t)st.epoch, "veto",
                     st.veto[0] != '\0' ? st.veto : NULL);
}

/* A definition's watcher: the verdict, each sentinel, and what it counted. */
static json_t *sentinel_json(const struct gw_api *api)
{
    if (api->sentinel == NULL)
        return json_null();
    struct hc_sentinel_status st;
    hc_sentinel_status(api->sentinel, &st);
    json_t *links = json_array();
    for (size_t i = 0; i < st.nlinks; i++) {
        struct hc_sentinel_link_status ls;
        hc_sentinel_link(api->sentinel, i, &ls);
        json_t *failures = json_object();
#define FAILURE_JSON(name, desc)                                                                   \
    json_object_set_new(failures, #name, json_integer((json_int_t)ls.failures[HC_SF_##name]));
        HC_SENTINEL_FAILURES(FAILURE_JSON)
#undef FAILURE_JSON
        json_array_append_new(links,
                              json_pack("{s:s, s:b, s:b, s:s?, s:o}", "sentinel", ls.name, "up",
                                        ls.up, "subscribed", ls.subscribed, "problem",
                                        ls.problem[0] ? ls.problem : NULL, "failures", failures));
    }
    json_t *events = json_object();
    for (int k = 0; k < HC_SN_EV_COUNT; k++)
        if (st.events[k] > 0)
            json_object_set_new(events, hc_sn_event_name((enum hc_sn_event_kind)k),
                                json_integer((json_int_t)st.events[k]));
    json_t *refused = json_object();
#define REFUSAL_JSON(name, desc)                                                                   \
    json_object_set_new(refused, #name, json_integer((json_int_t)st.refused[HC_SR_##name]));
    HC_SENTINEL_REFUSALS(REFUSAL_JSON)
#undef REFUSAL_JSON
    json_t *last = st.last_switch_ms >= 0
                       ? json_pack("{s:I, s:I, s:s}", "delay_ms", (json_int_t)st.last_switch_ms,
                                   "unix", (json_int_t)st.last_switch_unix, "what", st.last_switch)
                       : json_null();
    return json_pack(
        "{s:s, s:s, s:s, s:s?, s:I, s:i, s:i, s:i, s:I, s:o, s:o, s:o, s:I, s:o}", "master_name",
        st.master_name, "role", api->def->ext.sentinel.replica ? "replica" : "master", "state",
        st.state, "master", st.master, "epoch", (json_int_t)st.epoch, "named_by", st.named_by,
        "answered", st.answered, "quorum", st.quorum, "switches", (json_int_t)st.switches,
        "last_switch", last, "sentinels", links, "events", events, "role_verify_failures",
        (json_int_t)st.role_verify_failures, "refused", refused);
}

static json_t *targets_json(const struct gw_view *v, const struct gw_api *api)
{
    json_t *list = json_array();
    for (size_t i = 0; i < api->nups; i++) {
        const struct gw_upstream *u = &api->ups[i];
        bool repeat = false;
        for (size_t j = 0; j < i && !repeat; j++)
            repeat = strcmp(api->ups[j].label, u->label) == 0;
        if (repeat)
            continue;
        struct gw_target_stats sum;
        gw_target_stats_sum(u->stats, v->nworkers, &sum);
        json_t *t = json_pack("{s:s, s:s, s:b}", "target", u->label, "state",
                              u->hc != NULL ? state_name(hc_target_state(u->hc)) : "unchecked",
                              "eligible", gw_upstream_eligible(api, i));
#define GW_STAT_JSON(name, desc) json_object_set_new(t, #name, json_integer(sum.name));
        GW_TARGET_COUNTERS(GW_STAT_JSON)
#undef GW_STAT_JSON
        json_object_set_new(t, "check", u->hc != NULL ? check_json(u->hc) : json_null());
        json_object_set_new(t, "sentinel", node_json(u));
        json_array_append_new(list, t);
    }
    return list;
}

static json_t *apis_json(const struct gw_view *v)
{
    const struct gw_snapshot *s = v->snap;
    json_t *apis = json_array();
    for (size_t i = 0; i < s->napis; i++) {
        const struct gw_api *api = &s->apis[i];
        const struct api_def *d = api->def;
        struct gw_api_stats sum;
        gw_stats_sum(api->stats, v->nworkers, &sum);
        json_t *stats = json_object();
#define GW_STAT_JSON(name, desc) json_object_set_new(stats, #name, json_integer(sum.name));
        GW_API_COUNTERS(GW_STAT_JSON)
#undef GW_STAT_JSON
        json_array_append_new(
            apis, json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:o, s:o, s:o}", "api_id", d->api_id,
                            "name", d->name ? d->name : "", "file", d->file, "listen_port",
                            d->listen_port, "protocol", api_protocol_name(d->protocol), "domain",
                            d->domain ? d->domain : "", "targets", targets_json(v, api), "stats",
                            stats, "sentinel", sentinel_json(api)));
    }
    json_t *errors = json_array();
    for (size_t i = 0; v->load_diags != NULL && i < v->load_diags->count; i++) {
        const struct api_diag *it = &v->load_diags->items[i];
        json_array_append_new(
            errors, json_pack("{s:s, s:s, s:s, s:s}", "severity",
                              it->severity == API_SEV_WARNING ? "warning" : "error", "file",
                              it->file, "field", it->field, "reason", it->reason));
    }
    const struct gw_reload_info *r = &v->reload;
    json_t *reload = json_pack("{s:I, s:I, s:I, s:b, s:s, s:s}", "ok", (json_int_t)r->ok, "failed",
                               (json_int_t)r->failed, "last_unix", (json_int_t)r->last_unix,
                               "last_ok", r->last_unix == 0 || r->last_ok, "last_trigger",
                               r->last_trigger, "last_error", r->last_error);
    json_t *gateway = json_pack("{s:s, s:I, s:i}", "version", TCPGATE_VERSION, "started_unix",
                                (json_int_t)v->started_unix, "workers", v->nworkers);
    return json_pack("{s:o, s:o, s:o, s:o}", "apis", apis, "load_errors", errors, "reload", reload,
                     "gateway", gateway);
}

/* Every target that something decides for: its check, the sentinels, or both. */
static json_t *health_json(const struct gw_view *v)
{
    json_t *list = json_array(), *sentinels = json_array();
    const struct gw_snapshot *s = v->snap;
    for (size_t a = 0; a < s->napis; a++) {
        const struct gw_api *api = &s->apis[a];
        for (size_t i = 0; i < api->nups; i++) {
            const struct gw_upstream *u = &api->ups[i];
            bool repeat = false;
            for (size_t j = 0; j < i && !repeat; j++)
                repeat = strcmp(api->ups[j].label, u->label) == 0;
            if ((u->hc == NULL && u->node == NULL) || repeat)
                continue;
            json_t *c = u->hc != NULL ? check_json(u->hc) : json_object();
            json_object_set_new(c, "api_id", json_string(api->def->api_id));
            json_object_set_new(c, "target", json_string(u->label));
            json_object_set_new(c, "eligible", json_boolean(gw_upstream_eligible(api, i)));
            json_object_set_new(c, "sentinel", node_json(u));
            json_array_append_new(list, c);
        }
        if (api->sentinel != NULL) {
            json_t *sn = sentinel_json(api);
            json_object_set_new(sn, "api_id", json_string(api->def->api_id));
            json_array_append_new(sentinels, sn);
        }
    }
    return json_pack("{s:o, s:o}", "targets", list, "sentinels", sentinels);
}

/* ---- routing ------------------------------------------------------------------------ */

static void on_request(struct evhttp_request *req, void *arg)
{
    struct gw_admin *a = arg;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const char *uri = evhttp_request_get_uri(req);
    struct evhttp_uri *parsed = evhttp_uri_parse(uri);
    const char *path = parsed != NULL ? evhttp_uri_get_path(parsed) : NULL;
    if (path == NULL || path[0] == '\0') {
        send_status(req, 400, "error", "malformed request URI");
        goto out;
    }
    if (cmd != EVHTTP_REQ_GET) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
        send_status(req, 405, "error", "only GET is served");
        goto out;
    }
    if (strcmp(path, "/hello") == 0) {
        send_json(req, 200,
                  json_pack("{s:s, s:s, s:I}", "status", "pass", "version", TCPGATE_VERSION,
                            "definitions", (json_int_t)a->view->snap->napis));
        goto out;
    }
    if (strcmp(path, "/") == 0) {
        /* The page holds no data; it asks the endpoints below, with the secret. */
        struct evbuffer *out = evbuffer_new();
        if (out == NULL) {
            evhttp_send_error(req, 500, "out of memory");
            goto out;
        }
        evbuffer_add(out, gw_status_page, gw_status_page_len);
        struct evkeyvalq *h = evhttp_request_get_output_headers(req);
        evhttp_add_header(h, "Content-Type", "text/html; charset=utf-8");
        evhttp_add_header(h, "Content-Security-Policy",
                          "default-src 'self'; script-src 'unsafe-inline'; "
                          "style-src 'unsafe-inline'; img-src data:");
        evhttp_send_reply(req, 200, "OK", out);
        evbuffer_free(out);
        goto out;
    }
    bool known = strcmp(path, "/metrics") == 0 || strcmp(path, "/tyk/apis") == 0 ||
                 strcmp(path, "/tyk/apis/") == 0 || strcmp(path, "/tyk/reload") == 0 ||
                 strcmp(path, "/tyk/reload/") == 0 || strcmp(path, "/tyk/health") == 0;
    if (!known) {
        send_status(req, 404, "error", "not found");
        goto out;
    }
    const char *secret = a->cfg->secret;
    if (secret != NULL && secret[0] != '\0' &&
        !gw_admin_secret_ok(secret, evhttp_find_header(evhttp_request_get_input_headers(req),
                                                       "x-tyk-authorization"))) {
        send_status(req, 403, "error",
                    "Attempted administrative access with invalid or missing key!");
        goto out;
    }
    if (strcmp(path, "/metrics") == 0) {
        struct evbuffer *out = evbuffer_new();
        if (out == NULL) {
            evhttp_send_error(req, 500, "out of memory");
            goto out;
        }
        gw_metrics_render(out, a->view);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "text/plain; version=0.0.4; charset=utf-8");
        evhttp_send_reply(req, 200, "OK", out);
        evbuffer_free(out);
    } else if (strncmp(path, "/tyk/apis", 9) == 0) {
        send_json(req, 200, apis_json(a->view));
    } else if (strcmp(path, "/tyk/health") == 0) {
        send_json(req, 200, health_json(a->view));
    } else if (a->reload(a->arg) == 0) {
        send_status(req, 200, "ok", "reloaded");
    } else {
        send_status(req, 500, "error", a->view->reload.last_error);
    }
out:
    if (parsed != NULL)
        evhttp_uri_free(parsed);
}

struct gw_admin *gw_admin_new(struct event_base *base, const struct gw_config *cfg,
                              const struct gw_view *view, int (*reload)(void *arg), void *arg,
                              char *err, size_t errlen)
{
    const char *host = cfg->control_api_hostname;
    if ((cfg->secret == NULL || cfg->secret[0] == '\0') && !gw_admin_is_loopback(host)) {
        snprintf(err, errlen,
                 "the admin API would listen on %s, which is not a loopback address, without a "
                 "secret: set \"secret\", or control_api_hostname to 127.0.0.1",
                 host[0] ? host : "every address");
        return NULL;
    }
    struct gw_admin *a = calloc(1, sizeof(*a));
    if (a == NULL || (a->http = evhttp_new(base)) == NULL) {
        free(a);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->cfg = cfg;
    a->view = view;
    a->reload = reload;
    a->arg = arg;
    evhttp_set_gencb(a->http, on_request, a);
    evhttp_set_timeout(a->http, 10);
    evhttp_set_max_headers_size(a->http, 16384);
    evhttp_set_max_body_size(a->http, 65536);
    /* Every method reaches the handler, which answers all but GET with 405. */
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    if (evhttp_bind_socket_with_handle(a->http, host, (ev_uint16_t)cfg->control_api_port) == NULL) {
        snprintf(err, errlen, "admin API: cannot listen on %s:%d", host, cfg->control_api_port);
        gw_admin_free(a);
        return NULL;
    }
    return a;
}

void gw_admin_free(struct gw_admin *a)
{
    if (a == NULL)
        return;
    if (a->http != NULL)
        evhttp_free(a->http);
    free(a);
}
