/* systemd's readiness protocol (sd_notify(3)) without libsystemd: state
 * lines sent as one datagram to the AF_UNIX socket named by NOTIFY_SOCKET. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/* Takes the address from NOTIFY_SOCKET (a path, or "@name" in the abstract
 * namespace) and unsets the variable so that children do not inherit it. */
void sd_notify_init(void);
/* True when sd_notify_init found a usable NOTIFY_SOCKET. */
bool sd_notify_enabled(void);
/* Sends STATE ("READY=1\nSTATUS=..."); false (errno set) if it could not be sent. */
bool sd_notify_send(const char *state);
/* Start-up is complete: READY=1, with MAINPID=main_pid when main_pid > 0
 * (a daemonizing parent telling systemd which process to watch). */
void sd_notify_ready(pid_t main_pid);
/* The daemon is shutting down: STOPPING=1. */
void sd_notify_stopping(void);
