#include "gw_process.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "gw_log.h"

/* After the ports are bound: the user and group of tcpgate.user/.group, with
 * no supplementary groups, for good. */
int gw_process_drop_privileges(const struct gw_config *cfg)
{
    if (cfg->user[0] == '\0' && cfg->group[0] == '\0')
        return 0;
    if (geteuid() != 0) {
        gw_error("tcpgate.user/tcpgate.group: tcpgate must start as root to change user");
        return -1;
    }
    uid_t uid = 0;
    gid_t gid = 0;
    if (cfg->user[0] != '\0') {
        struct passwd *pw = getpwnam(cfg->user);
        if (pw == NULL) {
            gw_error("tcpgate.user: no user \"%s\"", cfg->user);
            return -1;
        }
        uid = pw->pw_uid;
        gid = pw->pw_gid;
    }
    if (cfg->group[0] != '\0') {
        struct group *gr = getgrnam(cfg->group);
        if (gr == NULL) {
            gw_error("tcpgate.group: no group \"%s\"", cfg->group);
            return -1;
        }
        gid = gr->gr_gid;
    }
    if (setgroups(1, &gid) != 0 || setgid(gid) != 0 || (cfg->user[0] != '\0' && setuid(uid) != 0)) {
        gw_error("cannot change to user \"%s\" group %u: %s", cfg->user, (unsigned)gid,
                 strerror(errno));
        return -1;
    }
    if (cfg->user[0] != '\0' && uid != 0 && setuid(0) == 0) {
        gw_error("changed user, but root could be taken back; refusing to run");
        return -1;
    }
    gw_info("running as uid %u gid %u", (unsigned)getuid(), (unsigned)getgid());
    return 0;
}

/* sd_notify's protocol, which is one datagram to $NOTIFY_SOCKET: ready,
 * reloading, stopping. Silent when not started by systemd. */
void gw_process_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(sun.sun_path))
        return;
    memcpy(sun.sun_path, path, strlen(path));
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0'; /* an abstract socket */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, len) < 0)
        gw_debug("sd_notify: %s", strerror(errno));
    close(fd);
}
