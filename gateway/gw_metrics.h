/* The Prometheus text format of everything the gateway counts: per
 * definition under Envoy's TCP proxy statistic names, per target, per port
 * (TLS, PROXY protocol), and reloads. Every name starts with tcpgate_. */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include <event2/buffer.h>

#include "gw_view.h"

/* Control thread: reads the view's snapshot, the counters and check states. */
void gw_metrics_render(struct evbuffer *out, const struct gw_view *v);

#endif
