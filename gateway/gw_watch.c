#include "gw_watch.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

struct gw_watch {
    int fd;
    struct event *ev;
    void (*changed)(void *arg);
    void *arg;
};

/* Editors write swap and backup files next to the one being edited; only
 * definitions, and the names a ConfigMap swaps, count. */
static bool relevant(const struct inotify_event *ie)
{
    if (ie->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW))
        return true;
    if (ie->len == 0)
        return false;
    size_t n = strlen(ie->name);
    return (n > 5 && strcmp(ie->name + n - 5, ".json") == 0) || strncmp(ie->name, "..", 2) == 0;
}

static void on_events(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct gw_watch *w = arg;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool hit = false;
    for (int round = 0; round < 64; round++) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        for (ssize_t off = 0; off < n;) {
            const struct inotify_event *ie = (const struct inotify_event *)(buf + off);
            hit = hit || relevant(ie);
            off += (ssize_t)(sizeof(*ie) + ie->len);
        }
    }
    if (hit)
        w->changed(w->arg);
}

struct gw_watch *gw_watch_new(struct event_base *base, const char *dir, void (*changed)(void *arg),
                              void *arg, char *err, size_t errlen)
{
    struct gw_watch *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->changed = changed;
    w->arg = arg;
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0 || inotify_add_watch(w->fd, dir,
                                       IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                                           IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF) < 0) {
        snprintf(err, errlen, "cannot watch %s: %s", dir, strerror(errno));
        gw_watch_free(w);
        return NULL;
    }
    w->ev = event_new(base, w->fd, EV_READ | EV_PERSIST, on_events, w);
    if (w->ev == NULL || event_add(w->ev, NULL) != 0) {
        snprintf(err, errlen, "out of memory");
        gw_watch_free(w);
        return NULL;
    }
    return w;
}

void gw_watch_free(struct gw_watch *w)
{
    if (w == NULL)
        return;
    if (w->ev != NULL)
        event_free(w->ev);
    if (w->fd >= 0)
        close(w->fd);
    free(w);
}
