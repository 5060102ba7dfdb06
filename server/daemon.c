/* Daemonizing, pidfile and socket activation (see server/daemon.h). */
#include "server/daemon.h"
#include "server/sd-notify.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <gio/gio.h>

int daemon_fork(GError **errp)
{
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno), "pipe: %s", g_strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno), "fork: %s", g_strerror(errno));
        return -1;
    }
    if (pid > 0) {
        /* Parent: success only once the child says so; its errors went to stderr. */
        close(pipefd[1]);
        char byte;
        ssize_t n;
        do {
            n = read(pipefd[0], &byte, 1);
        } while (n < 0 && errno == EINTR);
        if (n == 1) {
            /* We are the process systemd started (Type=notify accepts
             * messages from it alone by default): name the daemon. */
            sd_notify_ready(pid);
            _exit(EXIT_SUCCESS);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        _exit(WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : EXIT_FAILURE);
    }
    close(pipefd[0]);
    if (setsid() < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno), "setsid: %s", g_strerror(errno));
        return -1;
    }
    return pipefd[1];
}

void daemon_ready(int status_fd)
{
    fflush(stdout);
    fflush(stderr);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        if (null > STDERR_FILENO)
            close(null);
    }
    ssize_t n;
    do {
        n = write(status_fd, "1", 1);
    } while (n < 0 && errno == EINTR);
    close(status_fd);
}

bool pidfile_write(const char *path, GError **errp)
{
    g_autofree char *text = g_strdup_printf("%d\n", (int)getpid());
    /* g_file_set_contents writes a temporary file and renames it, so readers
     * never see a partial pid. */
    return g_file_set_contents(path, text, -1, errp);
}

int socket_activation_fds(void)
{
    const char *pid = getenv("LISTEN_PID");
    const char *fds = getenv("LISTEN_FDS");
    if (!pid || !fds)
        return 0;
    char *end;
    long lpid = strtol(pid, &end, 10);
    if (*end || lpid != (long)getpid())
        return 0;
    long n = strtol(fds, &end, 10);
    if (*end || n <= 0 || n > 64)
        return 0;
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    for (int fd = 3; fd < 3 + n; fd++)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    return (int)n;
}

bool exit_with_parent(pid_t parent)
{
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0)
        return false;
    /* The parent may have gone before the request took effect. */
    if (getppid() != parent) {
        errno = ESRCH;
        return false;
    }
    return true;
}
