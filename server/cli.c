/* Command-line parsing (see server/cli.h). */
#include "server/cli.h"
#include "server/keyval.h"
#include "block/driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ParseState {
    CliConfig *cfg;
} ParseState;

static void item_free(CliItem *item)
{
    g_free(item->text);
    if (item->opts)
        json_object_unref(item->opts);
    g_free(item);
}

const char *cli_kind_option(CliKind kind)
{
    switch (kind) {
    case CLI_BLOCKDEV: return "--blockdev";
    case CLI_NBD_SERVER: return "--nbd-server";
    case CLI_EXPORT: return "--export";
    case CLI_CHARDEV: return "--chardev";
    case CLI_MONITOR: return "--monitor";
    case CLI_OBJECT: return "--object";
    }
    return "?";
}

/* QEMU's implied first key of each option ("--blockdev file,..."). */
static const char *implied_key(CliKind kind)
{
    switch (kind) {
    case CLI_BLOCKDEV: return "driver";
    case CLI_EXPORT: return "type";
    case CLI_OBJECT: return "qom-type";
    default: return NULL;
    }
}

/* `--blockdev help` and friends: what the option takes, then exit.
 * (qemu-storage-daemon answers "Help is not available for this option"
 * for --blockdev and --export.) */
static void print_help_and_exit(CliKind kind)
{
    if (kind == CLI_BLOCKDEV) {
        g_autoptr(GPtrArray) names = block_driver_names();
        printf("Available block drivers:\n");
        for (guint i = 0; i < names->len; i++)
            printf("  %s\n", (const char *)names->pdata[i]);
    } else if (kind == CLI_EXPORT) {
        printf("Available export types:\n  nbd\n");
    } else if (kind == CLI_OBJECT) {
        printf("List of user creatable objects:\n  authz-simple\n  tls-creds-psk\n  tls-creds-x509\n");
    } else {
        printf("Available chardev backend types:\n  socket\n");
    }
    exit(EXIT_SUCCESS);
}

static gboolean add_item(CliConfig *cfg, CliKind kind, const char *value, GError **errp)
{
    if (implied_key(kind) && strcmp(value, "help") == 0)
        print_help_and_exit(kind);
    GError *err = NULL;
    JsonObject *opts = keyval_parse_implied(value, implied_key(kind), &err);
    if (!opts) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "%s %s: %s",
                    cli_kind_option(kind), value, err->message);
        g_error_free(err);
        return FALSE;
    }
    CliItem *item = g_new0(CliItem, 1);
    item->kind = kind;
    item->text = g_strdup(value);
    item->opts = opts;
    g_ptr_array_add(cfg->items, item);
    return TRUE;
}

/* --chardev and --monitor keep their text: QEMU lets their first key be implied. */
static gboolean add_text_item(CliConfig *cfg, CliKind kind, const char *value)
{
    CliItem *item = g_new0(CliItem, 1);
    item->kind = kind;
    item->text = g_strdup(value);
    g_ptr_array_add(cfg->items, item);
    return TRUE;
}

static gboolean on_chardev(const char *name, const char *value, gpointer data, GError **errp)
{
    if (strcmp(value, "help") == 0)
        print_help_and_exit(CLI_CHARDEV);
    return add_text_item(((ParseState *)data)->cfg, CLI_CHARDEV, value);
}

static gboolean on_monitor(const char *name, const char *value, gpointer data, GError **errp)
{
    return add_text_item(((ParseState *)data)->cfg, CLI_MONITOR, value);
}

static gboolean on_blockdev(const char *name, const char *value, gpointer data, GError **errp)
{
    return add_item(((ParseState *)data)->cfg, CLI_BLOCKDEV, value, errp);
}

static gboolean on_nbd_server(const char *name, const char *value, gpointer data, GError **errp)
{
    return add_item(((ParseState *)data)->cfg, CLI_NBD_SERVER, value, errp);
}

static gboolean on_export(const char *name, const char *value, gpointer data, GError **errp)
{
    return add_item(((ParseState *)data)->cfg, CLI_EXPORT, value, errp);
}

static gboolean on_object(const char *name, const char *value, gpointer data, GError **errp)
{
    return add_item(((ParseState *)data)->cfg, CLI_OBJECT, value, errp);
}

static const char summary[] =
    "Serves block devices over NBD, the way qemu-storage-daemon does.\n"
    "\n"
    "With no --blockdev, --nbd-server or --export it serves a 1 GiB in-memory\n"
    "export 'disk0' on a Unix socket and on 127.0.0.1:10809.\n"
    "\n"
    "  --blockdev driver=memory,node-name=N,size=SIZE\n"
    "  --blockdev driver=file,node-name=N,filename=PATH[,read-only=on]\n"
    "  --blockdev driver=raw,node-name=N,file=CHILD[,offset=OFF][,size=SIZE]\n"
    "  --blockdev driver=null-co,node-name=N[,size=SIZE]\n"
    "  --nbd-server addr.type=unix,addr.path=PATH[,max-connections=N]\n"
    "  --nbd-server addr.type=inet,addr.host=HOST,addr.port=PORT[,max-connections=N]\n"
    "  --export type=nbd,id=ID,node-name=N[,name=NAME][,writable=on][,description=TEXT]\n"
    "  --chardev socket,id=ID,path=PATH,server=on,wait=off  --monitor chardev=ID\n"
    "  --object tls-creds-x509,id=ID,dir=DIR,endpoint=server[,verify-peer=on]\n"
    "  --object tls-creds-psk,id=ID,dir=DIR,endpoint=server\n"
    "  --object authz-simple,id=ID,identity=DN-OR-USERNAME\n"
    "  (--nbd-server ...,tls-creds=ID[,tls-authz=ID] then requires TLS)\n"
    "\n"
    "Under systemd socket activation (LISTEN_PID/LISTEN_FDS) the inherited\n"
    "sockets are served.\n"
    "\n"
    "--run 'COMMAND' runs COMMAND with /bin/sh once blockd serves, with $uri\n"
    "(also $nbd), $exportname, $unixsocket and $port set as nbdkit sets them;\n"
    "blockd stops when COMMAND exits and exits with its status.  Without\n"
    "--nbd-server it listens on a private Unix socket only.  See blockd(8).";

CliConfig *cli_parse(int argc, char **argv, GError **errp)
{
    CliConfig *cfg = g_new0(CliConfig, 1);
    cfg->items = g_ptr_array_new_with_free_func((GDestroyNotify)item_free);
    ParseState state = { .cfg = cfg };
    gboolean version = FALSE;
    gboolean daemonize = FALSE;
    gboolean exit_with_parent = FALSE;
    gboolean verbose = FALSE;
    char *pidfile = NULL;
    char *log = NULL;
    char *run = NULL;

    GOptionEntry entries[] = {
        { "blockdev", 0, 0, G_OPTION_ARG_CALLBACK, (gpointer)on_blockdev,
          "Add a block node", "OPTIONS" },
        { "nbd-server", 0, 0, G_OPTION_ARG_CALLBACK, (gpointer)on_nbd_server,
          "Listen for NBD clients (may be given more than once)", "OPTIONS" },
        { "export", 0, 0, G_OPTION_ARG_CALLBACK, (gpointer)on_export,
          "Export a node over NBD", "OPTIONS" },
        { "object", 0, 0, G_OPTION_ARG_CALLBACK, (gpointer)on_object,
          "Create an object (tls-creds-x509, tls-creds-psk, authz-simple)", "OPTIONS" },
        { "chardev", 0, 0, G_OPTION_ARG_CALLBACK, (gpointer)on_chardev,
          "Create a listening socket for a monitor (socket,id=ID,path=PATH,server=on,wait=off)", "OPTIONS" },
        { "monitor", 0, 0, G_OPTION_ARG_CALLBACK, (gpointer)on_monitor,
          "Run a QMP monitor on a chardev ([chardev=]ID[,pretty=on])", "OPTIONS" },
        { "pidfile", 0, 0, G_OPTION_ARG_FILENAME, &pidfile,
          "Write the process id to FILE once exports are ready", "FILE" },
        { "daemonize", 0, 0, G_OPTION_ARG_NONE, &daemonize,
          "Run in the background once start-up succeeded", NULL },
        { "exit-with-parent", 0, 0, G_OPTION_ARG_NONE, &exit_with_parent,
          "Exit when the parent process exits (implied under socket activation)", NULL },
        { "log", 0, 0, G_OPTION_ARG_STRING, &log,
          "Send log messages to stderr, syslog or journal (default: stderr; "
          "journal or syslog with --daemonize)", "stderr|syslog|journal" },
        { "verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Log debug messages too", NULL },
        { "run", 0, 0, G_OPTION_ARG_STRING, &run,
          "Run COMMAND once serving ($uri names the first export); exit when it exits, with its status",
          "'COMMAND'" },
        { "version", 'V', 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", NULL },
        { NULL },
    };
    GOptionContext *ctx = g_option_context_new("- block storage daemon");
    GOptionGroup *group = g_option_group_new("blockd", "blockd options", "blockd options", &state, NULL);
    g_option_group_add_entries(group, entries);
    g_option_context_set_main_group(ctx, group);
    g_option_context_set_summary(ctx, summary);
    g_option_context_set_strict_posix(ctx, FALSE);

    bool ok = g_option_context_parse(ctx, &argc, &argv, errp);
    if (ok && argc > 1) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                    "Unexpected argument '%s'", argv[1]);
        ok = false;
    }
    if (ok && daemonize && exit_with_parent) {
        /* The parent of a daemon is the process that exits at once. */
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                    "--exit-with-parent and --daemonize cannot be used together");
        ok = false;
    }
    if (ok && daemonize && run) {
        /* The command runs in the foreground: blockd must outlive it there. */
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                    "--run and --daemonize cannot be used together");
        ok = false;
    }
    LogTarget log_target = LOG_TARGET_DEFAULT;
    if (ok && log && !log_target_parse(log, &log_target)) {
        g_set_error(errp, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--log %s: must be stderr, syslog or journal", log);
        ok = false;
    }
    g_free(log);
    g_option_context_free(ctx);
    if (ok && version) {
        printf("blockd %s\n", BLOCKD_VERSION);
        g_free(pidfile);
        g_free(run);
        cli_config_free(cfg);
        exit(EXIT_SUCCESS);
    }
    if (!ok) {
        g_free(pidfile);
        g_free(run);
        cli_config_free(cfg);
        return NULL;
    }
    cfg->pidfile = pidfile;
    cfg->daemonize = daemonize;
    cfg->exit_with_parent = exit_with_parent;
    cfg->log_target = log_target;
    cfg->verbose = verbose;
    cfg->run = run;
    return cfg;
}

void cli_config_free(CliConfig *cfg)
{
    if (!cfg)
        return;
    g_ptr_array_free(cfg->items, TRUE);
    g_free(cfg->pidfile);
    g_free(cfg->run);
    g_free(cfg);
}
