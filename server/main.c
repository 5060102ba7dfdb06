/* blockd: the storage daemon's entry point.  Turns the command line into
 * nodes, exports and NBD listeners, then runs the main loop until a signal
 * (or until the --run command exits). */
#define G_LOG_DOMAIN "blockd-main"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib-unix.h>

#include "block/io-log.h"
#include "block/node.h"
#include "block/plugin-host/plugin-host.h"
#include "jobs/job.h"
#include "server/cli.h"
#include "server/daemon.h"
#include "server/export.h"
#include "server/keyval.h"
#include "server/log.h"
#include "server/nbd/nbd-server.h"
#include "server/nbd-control.h"
#include "objects/objects.h"
#include "server/qmp/cmd-object.h"
#include "server/qmp/commands.h"
#include "server/qmp/monitor.h"
#include "server/sd-notify.h"
#include "server/run.h"

#define DEFAULT_PORT "10809"

typedef struct Daemon {
    GMainLoop *loop;
} Daemon;

/* The built-in default: a 1 GiB memory export "disk0". */
static bool add_default_export(GError **errp)
{
    g_autoptr(JsonObject) node = json_object_new();
    json_object_set_string_member(node, "driver", "memory");
    json_object_set_string_member(node, "node-name", "disk0");
    json_object_set_string_member(node, "size", "1G");
    if (!qmp_cli_blockdev(node, errp))
        return false;
    g_autoptr(JsonObject) exp = json_object_new();
    json_object_set_string_member(exp, "type", "nbd");
    json_object_set_string_member(exp, "id", "disk0");
    json_object_set_string_member(exp, "node-name", "disk0");
    json_object_set_string_member(exp, "writable", "on");
    json_object_set_string_member(exp, "description", "blockd default 1 GiB memory disk");
    return qmp_cli_export(exp, errp);
}

/* The default listeners: a Unix socket and 127.0.0.1:10809, as --nbd-server would add them. */
static bool add_default_listeners(GError **errp)
{
    g_autofree char *path = geteuid() == 0
        ? g_strdup("/run/blockd.sock")
        : g_strdup_printf("%s/blockd-%u.sock", g_get_tmp_dir(), (unsigned)geteuid());
    g_autofree char *unix_opts = g_strdup_printf("addr.type=unix,addr.path=%s", path);
    const char *inet_opts = "addr.type=inet,addr.host=127.0.0.1,addr.port=" DEFAULT_PORT;
    const char *all[] = { unix_opts, inet_opts };
    for (size_t i = 0; i < G_N_ELEMENTS(all); i++) {
        g_autoptr(JsonObject) opts = keyval_parse(all[i], errp);
        if (!opts || !qmp_cli_nbd_server(opts, errp))
            return false;
    }
    return true;
}

/* --run without an NBD server: a Unix socket in a private directory, as
 * nbdkit -U - (nothing else can reach the captive server). */
static bool add_private_listener(GError **errp)
{
    g_autofree char *path = run_private_socket(errp);
    if (!path)
        return false;
    g_autofree char *text = g_strdup_printf("addr.type=unix,addr.path=%s", path);
    g_autoptr(JsonObject) opts = keyval_parse(text, errp);
    return opts && qmp_cli_nbd_server(opts, errp);
}

/* Applies the command line in order; errors name the option they came from. */
static bool startup(CliConfig *cfg, int activated, GError **errp)
{
    /* Inherited sockets first, so `nbdinfo -- [ blockd ... ]` is served
     * whatever else the command line adds. */
    for (int i = 0; i < activated; i++)
        if (!nbd_control_listen_fd(3 + i, errp))
            return false;
    bool have_server = activated > 0;
    for (guint i = 0; i < cfg->items->len; i++)
        have_server |= ((CliItem *)cfg->items->pdata[i])->kind == CLI_NBD_SERVER;
    if (cfg->run && !have_server) {
        if (!add_private_listener(errp))
            return false;
        have_server = true;
    }
    if (cfg->items->len == 0 &&
        !(add_default_export(errp) && (have_server || add_default_listeners(errp))))
        return false;
    /* qemu-storage-daemon refuses an NBD export while no NBD server runs.
     * blockd takes --nbd-server anywhere on the line (or inherited sockets),
     * but still refuses an export that no client could ever reach. */
    for (guint i = 0; i < cfg->items->len && !have_server; i++) {
        CliItem *item = cfg->items->pdata[i];
        if (item->kind == CLI_EXPORT) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "%s %s: NBD server not running",
                        cli_kind_option(item->kind), item->text);
            return false;
        }
    }
    for (guint i = 0; i < cfg->items->len; i++) {
        CliItem *item = cfg->items->pdata[i];
        GError *err = NULL;
        bool ok = false;
        switch (item->kind) {
        case CLI_BLOCKDEV:
            ok = qmp_cli_blockdev(item->opts, &err);
            break;
        case CLI_NBD_SERVER:
            ok = qmp_cli_nbd_server(item->opts, &err);
            break;
        case CLI_EXPORT:
            ok = qmp_cli_export(item->opts, &err);
            break;
        case CLI_CHARDEV:
            ok = qmp_chardev_add(item->text, &err);
            break;
        case CLI_MONITOR:
            ok = qmp_monitor_add(item->text, &err);
            break;
        case CLI_OBJECT:
            ok = qmp_cli_object(item->opts, &err);
            break;
        }
        if (!ok) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "%s %s: %s",
                        cli_kind_option(item->kind), item->text, err->message);
            g_error_free(err);
            return false;
        }
    }
    return true;
}

static void print_uris(void)
{
    NbdServer *server = nbd_control_server();
    if (!server)
        return;
    g_autoptr(GPtrArray) exports = export_list();
    for (guint i = 0; i < exports->len; i++) {
        Export *exp = exports->pdata[i];
        printf("blockd: export '%s' (%" G_GUINT64_FORMAT " bytes, %s)\n", export_name(exp),
               (guint64)export_size(exp), export_read_only(exp) ? "read-only" : "writable");
        g_autoptr(GPtrArray) uris = nbd_server_uris(server, export_name(exp));
        for (guint j = 0; j < uris->len; j++)
            printf("  %s\n", (const char *)uris->pdata[j]);
    }
    fflush(stdout);
}

static gboolean on_signal(gpointer data)
{
    g_main_loop_quit(((Daemon *)data)->loop);
    return G_SOURCE_CONTINUE;
}

static void on_command_exit(void *data)
{
    g_main_loop_quit(((Daemon *)data)->loop);
}

static void remove_sources(const guint *sources, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g_source_remove(sources[i]);
}

static void shutdown_all(void)
{
    /* Jobs first: their threads use nodes and their last events go to the monitors. */
    job_shutdown_all();
    qmp_monitors_shutdown();
    /* Wake plugins sleeping in nbdkit_nanosleep before waiting for clients. */
    plugin_host_begin_shutdown();
    nbd_control_shutdown();
    qmp_block_forget_all();
    export_remove_all();
    node_graph_shutdown();
    /* Repeated I/O errors not yet summed up in the log. */
    io_log_flush();
    /* Last: the server and nodes that used objects are gone now. */
    objects_remove_all();
    run_cleanup();
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    /* Before anything can start a child process that would inherit it. */
    sd_notify_init();
    log_init_early();
    pid_t parent = getppid();
    GError *err = NULL;
    CliConfig *cfg = cli_parse(argc, argv, &err);
    if (!cfg) {
        fprintf(stderr, "blockd: %s\n", err->message);
        g_error_free(err);
        return EXIT_FAILURE;
    }
    int activated = socket_activation_fds();
    if (activated > 0 && cfg->run) {
        /* As nbdkit: the activator is the client; there is no one to run for. */
        fprintf(stderr, "blockd: --run cannot be used under socket activation\n");
        cli_config_free(cfg);
        return EXIT_FAILURE;
    }
    log_setup(cfg->log_target, cfg->daemonize, cfg->verbose);
    g_debug("blockd %s", BLOCKD_VERSION);
    if (cfg->verbose)
        plugin_host_set_debug(true);
    int status_fd = -1;
    if (cfg->daemonize && (status_fd = daemon_fork(&err)) < 0) {
        fprintf(stderr, "blockd: %s\n", err->message);
        g_error_free(err);
        cli_config_free(cfg);
        return EXIT_FAILURE;
    }

    /* A socket-activated blockd serves the process that started it (nbdinfo
     * -- [ blockd ... ]): when that process is gone, even by a crash, no one
     * else can reach the inherited socket, so blockd goes too (as nbdkit). */
    if ((cfg->exit_with_parent || (activated > 0 && !cfg->daemonize)) && !exit_with_parent(parent)) {
        fprintf(stderr, "blockd: the parent process exited before start-up\n");
        cli_config_free(cfg);
        return EXIT_FAILURE;
    }

    block_drivers_init();
    Daemon d = { 0 };
    bool started = startup(cfg, activated, &err);
    /* Plugins may use stdin/stdout only while the command line is processed. */
    plugin_host_set_stdio_safe(false);
    /* Before the pidfile and READY=1: whoever sends SIGTERM as soon as
     * either appears must get a clean stop, not the default action. */
    d.loop = g_main_loop_new(NULL, FALSE);
    guint sources[] = {
        g_unix_signal_add(SIGTERM, on_signal, &d),
        g_unix_signal_add(SIGINT, on_signal, &d),
        g_unix_signal_add(SIGHUP, on_signal, &d),
    };
    if (!started ||
        (cfg->pidfile && !pidfile_write(cfg->pidfile, &err))) {
        fprintf(stderr, "blockd: %s\n", err->message);
        g_error_free(err);
        remove_sources(sources, G_N_ELEMENTS(sources));
        g_main_loop_unref(d.loop);
        shutdown_all();
        cli_config_free(cfg);
        return EXIT_FAILURE;
    }
    /* Under socket activation stdout belongs to the client that started
     * us, under --run to the command. */
    if (activated == 0 && !cfg->run)
        print_uris();
    /* Start-up is complete: every option is applied and the pidfile
     * written.  A daemonizing parent tells the service manager. */
    if (status_fd >= 0)
        daemon_ready(status_fd);
    else
        sd_notify_ready(0);

    if (cfg->run && !run_command_start(cfg->run, on_command_exit, &d, &err)) {
        fprintf(stderr, "blockd: --run: %s\n", err->message);
        g_error_free(err);
        remove_sources(sources, G_N_ELEMENTS(sources));
        g_main_loop_unref(d.loop);
        shutdown_all();
        if (cfg->pidfile)
            unlink(cfg->pidfile);
        cli_config_free(cfg);
        return EXIT_FAILURE;
    }
    qmp_set_quit_handler((void (*)(void *))g_main_loop_quit, d.loop);
    g_main_loop_run(d.loop);
    sd_notify_stopping();
    remove_sources(sources, G_N_ELEMENTS(sources));
    /* The stop has begun: another SIGTERM (a service manager's, an
     * impatient Ctrl-C) must not cut short the drain that finishes the
     * requests in flight and stores the bitmaps.  SIGKILL still works. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    g_main_loop_unref(d.loop);

    /* The command first: it is the client of what shutdown_all closes. */
    int status = cfg->run ? run_command_finish() : EXIT_SUCCESS;
    shutdown_all();
    if (cfg->pidfile)
        unlink(cfg->pidfile);
    cli_config_free(cfg);
    return status;
}
