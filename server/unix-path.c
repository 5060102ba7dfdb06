/* Unix socket paths shared safely between daemons (see server/unix-path.h). */
#include "server/unix-path.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

bool unix_path_prepare(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode))
        return true; /* nothing there, or not a socket: bind decides */
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sun.sun_path)) {
        errno = ENAMETOOLONG;
        return false;
    }
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    /* A listener accepts (or queues) the connection; a stale file refuses it.
     * A full backlog (EAGAIN) also means someone is there. */
    int r = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
    int e = errno;
    close(fd);
    if (r == 0 || e == EAGAIN) {
        errno = EADDRINUSE;
        return false;
    }
    if (e == ECONNREFUSED && unlink(path) < 0 && errno != ENOENT)
        return false;
    return true;
}

void unix_path_identify(const char *path, UnixPathId *id)
{
    struct stat st;
    id->valid = lstat(path, &st) == 0;
    id->dev = id->valid ? st.st_dev : 0;
    id->ino = id->valid ? st.st_ino : 0;
}

void unix_path_remove_if_ours(const char *path, const UnixPathId *id)
{
    struct stat st;
    if (id->valid && lstat(path, &st) == 0 && st.st_dev == id->dev && st.st_ino == id->ino)
        unlink(path);
}
