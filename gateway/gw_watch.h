/* Watches the definitions folder (inotify) and reports changes that matter:
 * a *.json file written, moved in or out, or removed, and the folder itself
 * replaced (as a Kubernetes ConfigMap update does by swapping "..data"). */
#ifndef GW_WATCH_H
#define GW_WATCH_H

#include <event2/event.h>

struct gw_watch;

/* changed runs on base's thread, once per batch of events; the caller
 * coalesces. NULL with a reason when the folder cannot be watched. */
struct gw_watch *gw_watch_new(struct event_base *base, const char *dir, void (*changed)(void *arg),
                              void *arg, char *err, size_t errlen)
    __attribute__((warn_unused_result));
void gw_watch_free(struct gw_watch *w);

#endif
