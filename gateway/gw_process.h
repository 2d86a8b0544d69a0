/* What tcpgate does as a process, apart from serving: the user it runs as,
 * and what it tells systemd. Control thread. */
#ifndef GW_PROCESS_H
#define GW_PROCESS_H

#include "gw_config.h"

/* After the ports are bound: the user and group of tcpgate.user/.group, with
 * no supplementary groups, for good. Returns 0, or -1 (logged). */
int gw_process_drop_privileges(const struct gw_config *cfg) __attribute__((warn_unused_result));

/* sd_notify's protocol, one datagram to $NOTIFY_SOCKET ("READY=1",
 * "RELOADING=1", "STOPPING=1"); silent when not started by systemd. */
void gw_process_notify(const char *state);

#endif
