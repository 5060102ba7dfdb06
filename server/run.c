/* --run (see server/run.h).  As nbdkit's captive mode (server/captive.c
 * there): the variables are shell assignments in front of the command, so
 * they are the command's own and not exported unless it says so. */
#define G_LOG_DOMAIN "blockd-main"
#include "server/run.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include "server/export.h"
#include "server/nbd-control.h"
#include "server/nbd/nbd-server.h"

static char *private_dir;
static GPid child;
static bool exited;
static int wait_status;
static void (*exit_cb)(void *);
static void *exit_opaque;

char *run_private_socket(GError **errp)
{
    private_dir = g_dir_make_tmp("blockd-XXXXXX", errp);
    return private_dir ? g_build_filename(private_dir, "nbd.sock", NULL) : NULL;
}

static void append_var(GString *script, const char *name, const char *value)
{
    g_autofree char *quoted = g_shell_quote(value ? value : "");
    g_string_append_printf(script, "%s=%s\n", name, quoted);
}

/* The assignments nbdkit makes, for the first export on the first listener. */
static char *build_script(const char *command)
{
    NbdServer *srv = nbd_control_server();
    g_autoptr(GPtrArray) exports = export_list();
    const char *name = exports->len ? export_name(exports->pdata[0]) : "";
    g_autoptr(GPtrArray) uris = srv ? nbd_server_uris(srv, name) : g_ptr_array_new();
    unsigned port = srv ? nbd_server_port(srv) : 0;
    g_autofree char *port_text = port ? g_strdup_printf("%u", port) : NULL;

    GString *script = g_string_new(NULL);
    append_var(script, "uri", uris->len ? uris->pdata[0] : "");
    g_string_append(script, "nbd=\"$uri\"\n");
    append_var(script, "exportname", name);
    if (srv && nbd_server_tls_required(srv))
        g_string_append(script, "tls=2\n");
    append_var(script, "port", port_text);
    append_var(script, "unixsocket", srv ? nbd_server_unix_path(srv) : NULL);
    g_string_append(script, command);
    return g_string_free(script, FALSE);
}

static void on_child_exit(GPid pid, gint status, gpointer data)
{
    g_spawn_close_pid(pid);
    exited = true;
    wait_status = status;
    if (exit_cb)
        exit_cb(exit_opaque);
}

/* In the child before exec: blockd ignores SIGPIPE, a shell pipeline must not. */
static void child_setup(gpointer data)
{
    signal(SIGPIPE, SIG_DFL);
}

bool run_command_start(const char *command, void (*on_exit)(void *), void *opaque, GError **errp)
{
    g_autofree char *script = build_script(command);
    char *argv[] = { "/bin/sh", "-c", script, NULL };
    exit_cb = on_exit;
    exit_opaque = opaque;
    if (!g_spawn_async(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_CHILD_INHERITS_STDIN,
                       child_setup, NULL, &child, errp))
        return false;
    g_debug("--run: command started (pid %d)", (int)child);
    g_child_watch_add(child, on_child_exit, NULL);
    return true;
}

int run_command_finish(void)
{
    if (!child)
        return EXIT_FAILURE;
    if (!exited) {
        /* blockd was stopped (signal, QMP quit): the command goes too. */
        g_debug("--run: stopping the command (pid %d)", (int)child);
        exit_cb = NULL;
        kill(child, SIGTERM);
        while (!exited)
            g_main_context_iteration(NULL, TRUE);
    }
    if (WIFEXITED(wait_status))
        return WEXITSTATUS(wait_status);
    if (WIFSIGNALED(wait_status)) {
        g_message("the --run command was killed by signal %d (%s)", WTERMSIG(wait_status),
                  g_strsignal(WTERMSIG(wait_status)));
        return 128 + WTERMSIG(wait_status);
    }
    return EXIT_FAILURE;
}

void run_cleanup(void)
{
    if (private_dir && g_rmdir(private_dir) < 0)
        g_debug("cannot remove %s: %s", private_dir, g_strerror(errno));
    g_clear_pointer(&private_dir, g_free);
}
