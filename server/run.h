/* --run: nbdkit's captive mode.  blockd runs a shell command once it serves
 * and stops when the command exits, with the command's exit status. */
#pragma once

#include <stdbool.h>
#include <glib.h>

/* Creates a private directory for the --run socket when the command line
 * has no NBD server: the Unix socket path to listen on (nbdkit -U -). */
char *run_private_socket(GError **errp);
/* Starts `command` with /bin/sh -c, the variables $uri, $nbd, $exportname,
 * $port, $unixsocket (and $tls) describing the running NBD server and its
 * first export; calls on_exit on the main loop when the command exits. */
bool run_command_start(const char *command, void (*on_exit)(void *), void *opaque, GError **errp);
/* The exit status to return: the command's (128+N if a signal N killed it).
 * A command still running is sent SIGTERM first and waited for. */
int run_command_finish(void);
/* Removes the private directory (its socket is already gone). */
void run_cleanup(void);
