/* sd_notify(3) without libsystemd (see server/sd-notify.h). */
#include "server/sd-notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <glib.h>

static struct sockaddr_un notify_addr;
static socklen_t notify_addr_len;   /* 0: no notification socket */

void sd_notify_init(void)
{
    const char *name = getenv("NOTIFY_SOCKET");
    notify_addr_len = 0;
    if (!name)
        return;
    size_t len = strlen(name);
    /* Only AF_UNIX addresses: an absolute path or "@" for the abstract
     * namespace (systemd's other forms, vsock:..., are not for us). */
    if ((name[0] == '/' || name[0] == '@') && len >= 2 && len < sizeof(notify_addr.sun_path)) {
        memset(&notify_addr, 0, sizeof(notify_addr));
        notify_addr.sun_family = AF_UNIX;
        memcpy(notify_addr.sun_path, name, len);
        if (name[0] == '@') {
            /* Abstract: a leading NUL, and the length counts no terminator. */
            notify_addr.sun_path[0] = '\0';
            notify_addr_len = offsetof(struct sockaddr_un, sun_path) + len;
        } else {
            notify_addr_len = offsetof(struct sockaddr_un, sun_path) + len + 1;
        }
    } else {
        fprintf(stderr, "blockd: ignoring NOTIFY_SOCKET=%s (not an AF_UNIX address)\n", name);
    }
    unsetenv("NOTIFY_SOCKET");
}

bool sd_notify_enabled(void)
{
    return notify_addr_len > 0;
}

bool sd_notify_send(const char *state)
{
    if (!notify_addr_len) {
        errno = ENOTCONN;
        return false;
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    ssize_t n;
    do {
        n = sendto(fd, state, strlen(state), MSG_NOSIGNAL,
                   (const struct sockaddr *)&notify_addr, notify_addr_len);
    } while (n < 0 && errno == EINTR);
    int saved = errno;
    close(fd);
    errno = saved;
    return n >= 0;
}

void sd_notify_ready(pid_t main_pid)
{
    if (!notify_addr_len)
        return;
    g_autofree char *state = main_pid > 0
        ? g_strdup_printf("READY=1\nMAINPID=%ld\nSTATUS=Serving", (long)main_pid)
        : g_strdup("READY=1\nSTATUS=Serving");
    if (!sd_notify_send(state))
        fprintf(stderr, "blockd: cannot notify the service manager: %s\n", g_strerror(errno));
}

void sd_notify_stopping(void)
{
    if (notify_addr_len && !sd_notify_send("STOPPING=1\nSTATUS=Stopping"))
        fprintf(stderr, "blockd: cannot notify the service manager: %s\n", g_strerror(errno));
}
