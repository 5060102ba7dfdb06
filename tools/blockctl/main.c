/* blockctl: a command-line QMP client for blockd (and qemu-storage-daemon).
 *
 *   blockctl [-s SOCKET] [--json] COMMAND [ARGS] [--json]
 *
 * Prints tables and sentences for people by default and JSON with --json.
 * This file holds the command table and the global options; each command
 * lives in a cmd-*.c file. */
#include "tools/blockctl/cli.h"
#include "tools/blockctl/commands.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *socket_path;

typedef struct Command {
    const char *name;   /* one word, or "GROUP WORD" */
    const char *usage;  /* after "blockctl " */
    const char *help;
    int (*run)(int argc, char **argv);
} Command;

static const Command commands[] = {
    { "nodes", "nodes", "list block nodes", cmd_nodes },
    { "exports", "exports", "list exports", cmd_exports },
    { "add-file", "add-file NODE FILE [read-only]", "add a file node", cmd_add_file },
    { "export", "export NODE [NAME] [writable]", "export a node over NBD", cmd_export },
    { "unexport", "unexport ID", "remove an export", cmd_unexport },
    { "qmp", "qmp '{\"execute\": NAME, \"arguments\": {...}}' | qmp COMMAND ['{ARGS}']",
      "run any QMP command, print its return value", cmd_qmp },
    { "events", "events", "print events (local time) as they arrive", cmd_events },
    { "bitmap add", "bitmap add NODE NAME [--persistent] [--granularity SIZE] [--disabled]",
      "add a dirty bitmap; SIZE takes k/M/G", cmd_bitmap_add },
    { "bitmap list", "bitmap list [NODE]", "list dirty bitmaps: node, name, granularity, dirty bytes, state",
      cmd_bitmap_list },
    { "bitmap remove", "bitmap remove NODE NAME", "remove a dirty bitmap", cmd_bitmap_remove },
    { "bitmap clear", "bitmap clear NODE NAME", "clear a dirty bitmap", cmd_bitmap_clear },
    { "bitmap enable", "bitmap enable NODE NAME", "let a bitmap record writes", cmd_bitmap_enable },
    { "bitmap disable", "bitmap disable NODE NAME", "stop a bitmap recording writes", cmd_bitmap_disable },
    { "bitmap merge", "bitmap merge NODE TARGET SOURCE...", "add the bits of the SOURCE bitmaps to TARGET",
      cmd_bitmap_merge },
    { "backup",
      "backup NODE --to URI|NODE|FILE [--incremental] [--bitmap B] [--backing FILE] [--format raw|qcow2] "
      "[--persistent] [--granularity SIZE] [--speed BYTES/S] [--job ID] [--wait]",
      "back NODE up; --incremental: a full backup that adds bitmap B (default 'backup') the first time, "
      "then only what changed since the last one; progress bar with --wait", cmd_backup },
    { "restore",
      "restore FULL [INCREMENT...] --to FILE|URI|NODE [--format raw|qcow2] [--verify URI] [--speed BYTES/S] "
      "[--job ID]",
      "rebuild an image from a full backup and its qcow2 increments, in order; --verify compares it with URI",
      cmd_restore },
    { "mirror", "mirror NODE --to URI|NODE [--speed BYTES/S] [--job ID] [--write-blocking] [--wait] [--complete]",
      "live-copy NODE until in sync (--wait), then switch its users (--complete)", cmd_mirror },
    { "commit",
      "commit NODE [--top NODE] [--base NODE] [--backing-file NAME] [--speed BYTES/S] [--job ID] [--wait] "
      "[--no-complete]",
      "merge NODE's chain from --top (default NODE) down into --base (default the bottom); with --wait a "
      "commit of NODE itself then switches NODE's users to the base", cmd_commit },
    { "stream", "stream NODE [--base NODE] [--backing-file NAME] [--speed BYTES/S] [--job ID] [--wait]",
      "copy into NODE what it reads from its backing chain above --base, then drop those layers", cmd_stream },
    { "pull", "pull NODE [--base NODE] [--backing-file NAME] [--cursor OFFSET] [--length BYTES] [--all]",
      "one increment of a stream from --cursor (prints the next cursor); --all: every increment", cmd_pull },
    { "snapshot", "snapshot NODE FILE [--name NEWNODE] [--existing]",
      "put a new qcow2 overlay FILE on top of NODE while its exports keep serving", cmd_snapshot },
    { "create",
      "create FILE SIZE [--format raw|qcow2] [--backing FILE [--backing-format FMT]] [--cluster-size SIZE] "
      "[--preallocation off|falloc|full] [--job ID]",
      "make a new image FILE through the daemon (blockdev-create jobs); SIZE takes k/M/G", cmd_create },
    { "resize", "resize NODE SIZE", "grow or shrink a node (block_resize); SIZE takes k/M/G", cmd_resize },
    { "jobs", "jobs", "list block jobs", cmd_jobs },
    { "job", "job pause|resume|cancel|complete|finalize|dismiss ID", "control a job", cmd_job },
};

QmpClient *connect_daemon(void)
{
    if (!socket_path)
        socket_path = g_getenv("BLOCKCTL_SOCKET");
    if (!socket_path)
        die("no socket: use -s PATH (the --chardev path of blockd's monitor) or set BLOCKCTL_SOCKET");
    return qmp_connect(socket_path);
}

/* True if `name` is "GROUP ..." for `group`. */
static bool in_group(const char *name, const char *group)
{
    size_t len = strlen(group);
    return strncmp(name, group, len) == 0 && name[len] == ' ';
}

static bool is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

static void print_group_usage(FILE *f, const char *group)
{
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
        if (in_group(commands[i].name, group))
            fprintf(f, "usage: blockctl %s\n  %s\n", commands[i].usage, commands[i].help);
}

/* The command argv[0] (and argv[1] for a group) names; *used is how many words that took. */
static const Command *find_command(int argc, char **argv, int *used)
{
    bool group = false;
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (strcmp(commands[i].name, argv[0]) == 0) {
            *used = 1;
            return &commands[i];
        }
        if (in_group(commands[i].name, argv[0])) {
            group = true;
            if (argc > 1 && strcmp(commands[i].name + strlen(argv[0]) + 1, argv[1]) == 0) {
                *used = 2;
                return &commands[i];
            }
        }
    }
    if (!group)
        usage_error("unknown command '%s' (try --help)", argv[0]);
    if (argc > 1 && is_help(argv[1])) {
        print_group_usage(stdout, argv[0]);
        exit(0);
    }
    fprintf(stderr, argc > 1 ? "blockctl: unknown command '%s %s'\n" : "blockctl: %s needs a command\n", argv[0],
            argc > 1 ? argv[1] : "");
    print_group_usage(stderr, argv[0]);
    exit(2);
}

int main(int argc, char **argv)
{
    gboolean version = FALSE;
    GOptionEntry entries[] = {
        { "socket", 's', 0, G_OPTION_ARG_FILENAME, &socket_path, "QMP socket (default $BLOCKCTL_SOCKET)", "PATH" },
        { "json", 'j', 0, G_OPTION_ARG_NONE, &cli_json, "Print JSON instead of tables", NULL },
        { "version", 'V', 0, G_OPTION_ARG_NONE, &version, "Print the version", NULL },
        { NULL },
    };
    GString *summary = g_string_new("Commands (blockctl COMMAND --help for one):\n");
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
        g_string_append_printf(summary, "  %s\n      %s\n", commands[i].usage, commands[i].help);
    GOptionContext *ctx = g_option_context_new("COMMAND [ARGS] - control blockd over QMP");
    g_option_context_add_main_entries(ctx, entries, NULL);
    /* Global options come before the command; everything after it is the
     * command's own (backup --to ...). */
    g_option_context_set_strict_posix(ctx, TRUE);
    g_option_context_set_summary(ctx, summary->str);
    static GError *err;  /* static: usage_error exits with it still referenced */
    bool parsed = g_option_context_parse(ctx, &argc, &argv, &err);
    g_option_context_free(ctx);
    g_string_free(summary, TRUE);
    if (!parsed)
        usage_error("%s", err->message);
    if (version) {
        printf("blockctl %s\n", BLOCKD_VERSION);
        return 0;
    }
    if (argc < 2)
        usage_error("no command (try --help)");
    int used;
    const Command *cmd = find_command(argc - 1, argv + 1, &used);
    cli_set_command(cmd->name, cmd->usage);
    int n = argc - 1 - used;
    char **rest = argv + 1 + used;
    for (int i = 0; i < n && strcmp(rest[i], "--") != 0; i++) {
        if (is_help(rest[i])) {
            printf("usage: blockctl %s\n  %s\n", cmd->usage, cmd->help);
            return 0;
        }
    }
    return cmd->run(n, rest);
}
