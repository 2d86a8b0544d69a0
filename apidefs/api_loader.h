/* Loading a folder of API definitions and the checks that span files. */
#ifndef API_LOADER_H
#define API_LOADER_H

#include <stdbool.h>

#include "api_def.h"

/* The accepted definitions, in file-name order. Owns them. */
struct api_set {
    struct api_def **defs;
    size_t count;
    size_t cap;
};

/* Whether `port` may be served with `proto`; NULL allows every port. */
typedef bool (*api_port_allowed_fn)(void *ctx, enum api_protocol proto, int port);

/* Adds a parsed definition after the cross-file checks: port allowed, api_id
 * unique, one protocol per port, one definition per port and domain. Takes
 * ownership of def: kept on success (0), freed with a diagnostic naming both
 * files on rejection (-1). Inactive definitions are kept but claim nothing. */
int api_set_add(struct api_set *set, struct api_def *def, api_port_allowed_fn allowed, void *ctx,
                struct api_diags *diags);

/* Loads every *.json file in dir in file-name order. Bad files are reported
 * and skipped. Returns 0, or -1 when the folder itself cannot be read. */
int api_load_dir(const char *dir, api_port_allowed_fn allowed, void *ctx, struct api_set *out,
                 struct api_diags *diags) __attribute__((warn_unused_result));

void api_set_free(struct api_set *set);

/* Definition files larger than this are rejected unread. */
#define API_FILE_MAX (4 * 1024 * 1024)

#endif
