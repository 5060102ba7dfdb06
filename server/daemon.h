/* Process plumbing: daemonizing, the pidfile, socket activation. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <glib.h>

/* Forks; the parent waits for daemon_ready/exit of the child and exits with its
 * status (after telling a service manager READY=1 and MAINPID, see
 * sd-notify.h).  Returns in the child with a descriptor to report readiness on. */
int daemon_fork(GError **errp);
/* Tells the waiting parent that start-up succeeded and detaches from the terminal. */
void daemon_ready(int status_fd);
/* Writes the pid atomically (temp file + rename) to `path`. */
bool pidfile_write(const char *path, GError **errp);
/* Returns the sockets passed by systemd-style socket activation (LISTEN_PID/LISTEN_FDS),
 * starting at fd 3, and clears those variables; 0 when not activated. */
int socket_activation_fds(void);
/* Asks for SIGTERM when the process `parent` (our parent at start) exits;
 * false (errno set) if it already has. */
bool exit_with_parent(pid_t parent);
