/* The runtime: owns the config, the routing snapshot, the listening sockets,
 * the workers and the control thread (signals). */
#ifndef GW_RUNTIME_H
#define GW_RUNTIME_H

#include "gw_config.h"

/* The number of online cores, at least 1. */
int gw_default_workers(void);

/* Validates the config's definitions without serving, printing one line per
 * problem as "file: field: reason". Returns the number of errors. */
size_t gw_check(const struct gw_config *cfg, const struct api_diags *config_diags);

/* Serves until SIGTERM or SIGINT, then drains. Returns the process exit code. */
int gw_run(const struct gw_config *cfg);

#endif
