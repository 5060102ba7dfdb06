/* blockd: the storage daemon's entry point.  Turns the command line into
 * nodes, exports and NBD listeners, then runs the main loop until a signal. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib-unix.h>

#include "block/node.h"
#include "block/options.h"
#include "server/cli.h"
#include "server/daemon.h"
#include "server/export.h"
#include "server/nbd/nbd-server.h"
#include "server/nbd-control.h"
#include "server/qmp/commands.h"
#include "server/qmp/monitor.h"

#define DEFAULT_PORT "10809"

/* One NBD listener, validated before the server is created. */
typedef struct Listener {
    char *type;   /* "unix", "inet" or "fd" */
    char *a, *b;  /* path | host+port | fd number */
} Listener;

typedef struct Daemon {
    NbdServer *server;
    GPtrArray *listeners;     /* Listener * */
    unsigned max_connections;
    GMainLoop *loop;
} Daemon;

static void listener_free(Listener *l)
{
    g_free(l->type);
    g_free(l->a);
    g_free(l->b);
    g_free(l);
}

/* Parses one --nbd-server option into listeners (addr.type=unix|inet|fd). */
static bool parse_nbd_server(Daemon *d, JsonObject *obj, GError **errp)
{
    BlockOptions *opts = block_options_new(obj, "");
    bool ok = false;
    JsonObject *addr = block_options_get_object(opts, "addr");
    uint64_t max = d->max_connections;
    if (!block_options_get_uint(opts, "max-connections", UINT32_MAX, &max, errp))
        goto out;
    if (!addr) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Parameter 'addr' is missing");
        goto out;
    }
    BlockOptions *aopts = block_options_new(addr, "addr.");
    Listener *l = g_new0(Listener, 1);
    const char *type = block_options_get_str(aopts, "type", true, errp);
    if (type && strcmp(type, "unix") == 0) {
        const char *path = block_options_get_str(aopts, "path", true, errp);
        l->a = g_strdup(path);
    } else if (type && strcmp(type, "inet") == 0) {
        const char *host = block_options_get_str(aopts, "host", true, errp);
        const char *port = host ? block_options_get_str(aopts, "port", false, errp) : NULL;
        l->a = g_strdup(host);
        l->b = g_strdup(port ? port : DEFAULT_PORT);
    } else if (type && strcmp(type, "fd") == 0) {
        const char *fd = block_options_get_str(aopts, "str", true, errp);
        l->a = g_strdup(fd);
    } else if (type) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameter 'addr.type' does not accept value '%s'", type);
    }
    l->type = g_strdup(type);
    ok = l->a && block_options_check_all_used(aopts, errp) && block_options_check_all_used(opts, errp);
    block_options_free(aopts);
    if (!ok) {
        listener_free(l);
        goto out;
    }
    d->max_connections = (unsigned)max;
    g_ptr_array_add(d->listeners, l);
out:
    block_options_free(opts);
    return ok;
}

/* The built-in default: a 1 GiB memory export "disk0". */
static bool add_default_export(GError **errp)
{
    g_autoptr(JsonObject) node = json_object_new();
    json_object_set_string_member(node, "driver", "memory");
    json_object_set_string_member(node, "node-name", "disk0");
    json_object_set_string_member(node, "size", "1G");
    if (!node_create(node, errp))
        return false;
    ExportConfig cfg = { .id = "disk0", .node_name = "disk0", .writable = true,
                         .description = "blockd default 1 GiB memory disk" };
    return export_add(&cfg, errp) != NULL;
}

static void add_default_listeners(Daemon *d)
{
    Listener *u = g_new0(Listener, 1);
    u->type = g_strdup("unix");
    u->a = geteuid() == 0 ? g_strdup("/run/blockd.sock")
                          : g_strdup_printf("%s/blockd-%u.sock", g_get_tmp_dir(), (unsigned)geteuid());
    g_ptr_array_add(d->listeners, u);
    Listener *t = g_new0(Listener, 1);
    t->type = g_strdup("inet");
    t->a = g_strdup("127.0.0.1");
    t->b = g_strdup(DEFAULT_PORT);
    g_ptr_array_add(d->listeners, t);
}

static bool start_listeners(Daemon *d, int activated, GError **errp)
{
    if (d->listeners->len == 0 && activated == 0)
        return true;
    d->server = nbd_server_new(d->max_connections);
    for (int i = 0; i < activated; i++)
        if (!nbd_server_listen_fd(d->server, 3 + i, errp))
            return false;
    for (guint i = 0; i < d->listeners->len; i++) {
        Listener *l = d->listeners->pdata[i];
        bool ok;
        if (strcmp(l->type, "unix") == 0) {
            ok = nbd_server_listen_unix(d->server, l->a, errp);
        } else if (strcmp(l->type, "inet") == 0) {
            ok = nbd_server_listen_inet(d->server, l->a, l->b, errp);
        } else {
            char *end;
            long fd = strtol(l->a, &end, 10);
            if (*end || fd < 0 || fd > INT32_MAX) {
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                            "Parameter 'addr.str' expects a file descriptor number, not '%s'", l->a);
                return false;
            }
            ok = nbd_server_listen_fd(d->server, (int)fd, errp);
        }
        if (!ok)
            return false;
    }
    return true;
}

/* Applies the command line in order; errors name the option they came from. */
static bool startup(Daemon *d, CliConfig *cfg, int activated, GError **errp)
{
    if (cfg->items->len == 0) {
        if (!add_default_export(errp))
            return false;
        if (activated == 0)
            add_default_listeners(d);
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
            ok = parse_nbd_server(d, item->opts, &err);
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
        }
        if (!ok) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "%s %s: %s",
                        cli_kind_option(item->kind), item->text, err->message);
            g_error_free(err);
            return false;
        }
    }
    return start_listeners(d, activated, errp);
}

static void print_uris(Daemon *d)
{
    if (!d->server)
        return;
    g_autoptr(GPtrArray) exports = export_list();
    for (guint i = 0; i < exports->len; i++) {
        Export *exp = exports->pdata[i];
        printf("blockd: export '%s' (%" G_GUINT64_FORMAT " bytes, %s)\n", export_name(exp),
               (guint64)export_size(exp), export_read_only(exp) ? "read-only" : "writable");
        g_autoptr(GPtrArray) uris = nbd_server_uris(d->server, export_name(exp));
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

static void shutdown_all(Daemon *d)
{
    qmp_monitors_shutdown();
    /* The server may have been stopped or replaced over QMP: nbd-control owns it. */
    nbd_control_adopt(d->server);
    nbd_control_shutdown();
    d->server = NULL;
    qmp_block_forget_all();
    export_remove_all();
    node_graph_shutdown();
    g_ptr_array_free(d->listeners, TRUE);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    GError *err = NULL;
    CliConfig *cfg = cli_parse(argc, argv, &err);
    if (!cfg) {
        fprintf(stderr, "blockd: %s\n", err->message);
        g_error_free(err);
        return EXIT_FAILURE;
    }
    int activated = socket_activation_fds();
    int status_fd = -1;
    if (cfg->daemonize && (status_fd = daemon_fork(&err)) < 0) {
        fprintf(stderr, "blockd: %s\n", err->message);
        g_error_free(err);
        cli_config_free(cfg);
        return EXIT_FAILURE;
    }

    block_drivers_init();
    Daemon d = { .listeners = g_ptr_array_new_with_free_func((GDestroyNotify)listener_free) };
    if (!startup(&d, cfg, activated, &err) ||
        (cfg->pidfile && !pidfile_write(cfg->pidfile, &err))) {
        fprintf(stderr, "blockd: %s\n", err->message);
        g_error_free(err);
        shutdown_all(&d);
        cli_config_free(cfg);
        return EXIT_FAILURE;
    }
    nbd_control_adopt(d.server);
    if (activated == 0)
        print_uris(&d);
    d.server = NULL; /* nbd-control owns it now: QMP may stop or replace it */
    if (status_fd >= 0)
        daemon_ready(status_fd);

    d.loop = g_main_loop_new(NULL, FALSE);
    qmp_set_quit_handler((void (*)(void *))g_main_loop_quit, d.loop);
    guint sources[] = {
        g_unix_signal_add(SIGTERM, on_signal, &d),
        g_unix_signal_add(SIGINT, on_signal, &d),
        g_unix_signal_add(SIGHUP, on_signal, &d),
    };
    g_main_loop_run(d.loop);
    for (size_t i = 0; i < G_N_ELEMENTS(sources); i++)
        g_source_remove(sources[i]);
    g_main_loop_unref(d.loop);

    shutdown_all(&d);
    if (cfg->pidfile)
        unlink(cfg->pidfile);
    cli_config_free(cfg);
    return EXIT_SUCCESS;
}
