/* What the admin API, the metrics and the status page show: one struct,
 * owned by the runtime, which updates it on the control thread (the thread
 * those run on). Readers only read. */
#ifndef GW_VIEW_H
#define GW_VIEW_H

#include <stdbool.h>
#include <stdint.h>

#include "api_json.h"
#include "gw_snapshot.h"

struct gw_access_log;

struct gw_reload_info {
    uint64_t ok, failed;
    int64_t last_unix; /* 0: none yet */
    bool last_ok;
    char last_trigger[32];
    char last_error[512];
};

struct gw_view {
    struct gw_snapshot *snap; /* the running set */
    int nworkers;
    const struct api_diags *load_diags; /* the last load's problems */
    struct gw_reload_info reload;
    int64_t started_unix;
    struct gw_access_log *access_log; /* NULL: none */
};

#endif
