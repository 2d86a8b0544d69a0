/* The admin API: evhttp on the control thread (control_api_hostname and
 * control_api_port, 127.0.0.1:9696 by default).
 *   GET /            the status page (self-contained HTML)
 *   GET /hello       liveness; no secret needed
 *   GET /metrics     Prometheus text format (gw_metrics)
 *   GET /tyk/apis    definitions, load errors, targets and their health
 *   GET /tyk/reload  reloads the definitions and reports the result
 *   GET /tyk/health  per-target check details
 * Everything but /hello needs the `secret` in the x-tyk-authorization header
 * when one is set. Responses are JSON except the page and the metrics. */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "gw_config.h"
#include "gw_view.h"

struct gw_admin;

/* Listens; NULL with a reason when it cannot (the port is taken, or the
 * address is not loopback and no secret is set). reload runs a reload and
 * returns 0 when it took effect. */
struct gw_admin *gw_admin_new(struct event_base *base, const struct gw_config *cfg,
                              const struct gw_view *view, int (*reload)(void *arg), void *arg,
                              char *err, size_t errlen) __attribute__((warn_unused_result));
void gw_admin_free(struct gw_admin *a);

/* Whether an address (numeric or "localhost") is a loopback one. */
bool gw_admin_is_loopback(const char *host);

/* Compares a presented secret with the configured one in time that does not
 * depend on where they differ. */
bool gw_admin_secret_ok(const char *configured, const char *presented);

#endif
