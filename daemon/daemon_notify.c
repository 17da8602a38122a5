/* daemon_notify.c - the sd_notify protocol (READY=1, STOPPING=1, WATCHDOG=1) written directly:
 * one datagram to the AF_UNIX socket named by $NOTIFY_SOCKET ('@' = abstract namespace). No
 * libsystemd dependency for three lines of protocol. */
#include "daemon/daemon.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

void daemon_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@') ||
        strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        return;
    }
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t n = strlen(path);
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@') {
        sa.sun_path[0] = '\0';
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return;
    }
    (void)sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
                 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    close(fd);
}
