/* backup: a full or incremental backup of a node to an NBD server, a node or
 * a new local image file, and the checkpoint routine of --incremental:
 *
 *   - no usable bitmap B on the node: a FULL backup, with B added in the same
 *     transaction (so B records exactly the writes after the backup's point
 *     in time) together with a disabled marker B~unfinished;
 *   - B exists: an INCREMENTAL backup, sync=incremental with bitmap B.  The
 *     daemon rotates B itself: at the start a successor takes over recording;
 *     on success B becomes the successor (the writes made since the start), on
 *     failure or cancel B gets the successor merged back, so the next attempt
 *     still copies every change since the last good backup.
 *
 * The marker goes once the full backup succeeded; a failed full backup takes
 * B and the marker away.  If blockctl itself dies before it can, the next run
 * finds the marker and starts over with a full backup. */
#include "tools/blockctl/commands.h"
#include "tools/blockctl/cleanup.h"
#include "tools/blockctl/cli.h"
#include "tools/blockctl/interrupt.h"
#include "tools/blockctl/job-wait.h"
#include "tools/blockctl/nodes.h"
#include "tools/blockctl/output.h"
#include "tools/blockctl/targets.h"
#include "block/nbd-uri.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_BITMAP "backup"
#define MARKER_SUFFIX "~unfinished"
#define MARKER_GRANULARITY (1 << 30)  /* the marker records nothing: the coarsest bitmap */

typedef struct BackupArgs {
    const char *node, *to, *bitmap, *job, *speed, *backing, *format, *granularity;
    bool incremental, wait, persistent;
} BackupArgs;

static void parse(int argc, char **argv, BackupArgs *a)
{
    const CliOption options[] = {
        { "--to", &a->to, NULL },
        { "--bitmap", &a->bitmap, NULL },
        { "--speed", &a->speed, NULL },
        { "--job", &a->job, NULL },
        { "--backing", &a->backing, NULL },
        { "--format", &a->format, NULL },
        { "--granularity", &a->granularity, NULL },
        { "--incremental", NULL, &a->incremental },
        { "--persistent", NULL, &a->persistent },
        { "--wait", NULL, &a->wait },
        { NULL },
    };
    int n;
    const char *const *w = cli_parse(argc, argv, options, 1, 1, &n);
    a->node = w[0];
    if (!a->to)
        usage_error("NODE and --to are required");
    bool file = target_is_file(a->to);
    if ((a->backing || a->format) && !file)
        usage_error("--backing and --format are for a file target (--to with a '/' in it)");
    if (a->format && strcmp(a->format, "raw") != 0 && strcmp(a->format, "qcow2") != 0)
        usage_error("bad --format '%s': raw or qcow2", a->format);
    if ((a->persistent || a->granularity) && !a->incremental)
        usage_error("--persistent and --granularity are for the bitmap --incremental adds");
    if (a->speed)
        cli_parse_size("--speed", a->speed, "bytes per second");
    if (a->granularity)
        cli_parse_size("--granularity", a->granularity, "bytes per bit");
    if (a->incremental && !a->bitmap)
        a->bitmap = DEFAULT_BITMAP;
    /* blockctl has to see these to the end: a checkpoint to confirm, a file to keep or remove. */
    if (a->incremental || file)
        a->wait = true;
}

static JsonObject *bitmap_action(const char *type, const char *node, const char *name)
{
    JsonObject *data = json_object_new();
    json_object_set_string_member(data, "node", node);
    json_object_set_string_member(data, "name", name);
    JsonObject *action = json_object_new();
    json_object_set_string_member(action, "type", type);
    json_object_set_object_member(action, "data", data);
    return action;
}

static JsonObject *action_data(JsonObject *action)
{
    return json_object_get_object_member(action, "data");
}

/* A bitmap to remove if the backup that made it does not succeed. */
typedef struct BitmapUndo {
    char *node, *name;
} BitmapUndo;

static void remove_bitmap(void *data)
{
    BitmapUndo *u = data;
    QmpClient *c = qmp_current();
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "node", u->node);
    json_object_set_string_member(args, "name", u->name);
    if (c)
        qmp_run_quietly(c, "block-dirty-bitmap-remove", args, true);
}

static void bitmap_undo_free(void *data)
{
    BitmapUndo *u = data;
    g_free(u->node);
    g_free(u->name);
    g_free(u);
}

static unsigned undo_bitmap(const char *node, const char *name)
{
    BitmapUndo *u = g_new(BitmapUndo, 1);
    u->node = g_strdup(node);
    u->name = g_strdup(name);
    return cleanup_add(remove_bitmap, u, bitmap_undo_free);
}

static void remove_bitmap_now(QmpClient *c, const char *node, const char *name)
{
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "node", node);
    json_object_set_string_member(args, "name", name);
    json_node_unref(qmp_run(c, "block-dirty-bitmap-remove", args));
}

/* --incremental: true if this run must be a full backup that starts the
 * chain (no bitmap, an unfinished earlier start, or an inconsistent one). */
static bool chain_needs_full(QmpClient *c, const BackupArgs *a, const char *marker)
{
    g_autoptr(JsonNode) nodes = nodes_query(c);
    JsonObject *node = nodes_find(nodes, a->node);
    if (!node)
        die("Cannot find device='%s' nor node-name='%s'", a->node, a->node);
    JsonObject *bitmap = nodes_find_bitmap(node, a->bitmap);
    if (nodes_find_bitmap(node, marker)) {
        warn("the full backup that began bitmap '%s' did not finish: starting over with a full backup", a->bitmap);
        remove_bitmap_now(c, a->node, marker);
        if (bitmap)
            remove_bitmap_now(c, a->node, a->bitmap);
        return true;
    }
    if (bitmap && output_bool(bitmap, "inconsistent")) {
        warn("bitmap '%s' is inconsistent (the daemon stopped uncleanly): starting over with a full backup",
             a->bitmap);
        remove_bitmap_now(c, a->node, a->bitmap);
        return true;
    }
    return bitmap == NULL;
}

static void print_result(const BackupArgs *a, const char *id, const char *mode, const JobOutcome *out,
                         bool bitmap_added)
{
    if (cli_json) {
        g_autoptr(JsonObject) o = json_object_new();
        json_object_set_string_member(o, "job", id);
        json_object_set_string_member(o, "mode", mode);
        if (a->bitmap)
            json_object_set_string_member(o, "bitmap", a->bitmap);
        else
            json_object_set_null_member(o, "bitmap");
        json_object_set_string_member(o, "target", a->to);
        json_object_set_int_member(o, "bytes", out->total);
        json_object_set_double_member(o, "seconds", out->seconds);
        g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
        output_json(node);
        return;
    }
    char b1[32], b2[32];
    g_autofree char *line = g_strdup_printf(
        "backup %s done: %s in %.2f s (%s/s), %s%s%s%s", id, output_size((double)out->total, b1, sizeof b1),
        out->seconds, output_size(out->seconds > 0 ? (double)out->total / out->seconds : 0, b2, sizeof b2), mode,
        a->bitmap ? ", bitmap " : "", a->bitmap ? a->bitmap : "", bitmap_added ? " added" : "");
    output_fitted(stdout, line);
}

int cmd_backup(int argc, char **argv)
{
    BackupArgs a = { 0 };
    parse(argc, argv, &a);
    QmpClient *c = connect_daemon();
    if (a.wait)
        interrupt_catch();  /* from here on a signal cancels and undoes instead of killing */
    g_autofree char *id = a.job ? g_strdup(a.job) : g_strdup_printf("backup-%s", a.node);
    g_autofree char *marker = a.bitmap ? g_strconcat(a.bitmap, MARKER_SUFFIX, NULL) : NULL;
    bool file = target_is_file(a.to);
    bool full = !a.incremental || chain_needs_full(c, &a, marker);
    const char *format = a.format ? a.format : "qcow2";
    if (a.incremental && !full && file && !a.backing)
        die("an incremental backup into a new file needs --backing PREVIOUS, the chain's last backup: "
            "the file then reads as the whole disk and records clusters the guest zeroed");
    if (a.incremental && !full && file && strcmp(format, "qcow2") != 0)
        die("an incremental backup into a file must be qcow2: a raw file cannot tell a zeroed cluster "
            "from one that did not change");
    job_dismiss_stale(c, id);

    unsigned file_undo = 0, node_undo = 0;
    g_autofree char *target = NULL;
    if (file) {
        target = target_absolute(a.to);
        g_autofree char *backing = a.backing ? target_absolute(a.backing) : NULL;
        target_create_file(target, format, nodes_size(c, a.node), backing, &file_undo);
    } else if (nbd_uri_is(a.to)) {
        target = target_add_nbd_node(c, a.to, "backup", &node_undo);
    } else {
        target = g_strdup(a.to);
    }

    g_autoptr(JsonArray) actions = json_array_new();
    bool start_chain = a.incremental && full;
    if (start_chain) {
        JsonObject *add = bitmap_action("block-dirty-bitmap-add", a.node, a.bitmap);
        if (a.persistent)
            json_object_set_boolean_member(action_data(add), "persistent", TRUE);
        if (a.granularity)
            json_object_set_int_member(action_data(add), "granularity",
                                       (gint64)cli_parse_size("--granularity", a.granularity, "bytes per bit"));
        json_array_add_object_element(actions, add);
        JsonObject *mark = bitmap_action("block-dirty-bitmap-add", a.node, marker);
        json_object_set_boolean_member(action_data(mark), "disabled", TRUE);
        json_object_set_int_member(action_data(mark), "granularity", MARKER_GRANULARITY);
        if (a.persistent)
            json_object_set_boolean_member(action_data(mark), "persistent", TRUE);
        json_array_add_object_element(actions, mark);
    }
    JsonObject *backup = json_object_new();
    json_object_set_string_member(backup, "job-id", id);
    json_object_set_string_member(backup, "device", a.node);
    json_object_set_string_member(backup, "target", target);
    json_object_set_string_member(backup, "sync", a.incremental && !full ? "incremental" : "full");
    if (file) {
        /* drive-backup opens the new image with the backing chain its header names. */
        json_object_set_string_member(backup, "format", format);
        json_object_set_string_member(backup, "mode", "existing");
    }
    if (a.bitmap && !a.incremental) {  /* a full backup that also starts the bitmap afresh */
        json_object_set_string_member(backup, "bitmap", a.bitmap);
        json_object_set_string_member(backup, "bitmap-mode", "on-success");
    } else if (a.incremental && !full) {
        json_object_set_string_member(backup, "bitmap", a.bitmap);
    }
    if (a.speed)
        json_object_set_int_member(backup, "speed", (gint64)cli_parse_size("--speed", a.speed, "bytes per second"));
    if (a.wait)
        json_object_set_boolean_member(backup, "auto-dismiss", FALSE);
    const char *command = file ? "drive-backup" : "blockdev-backup";

    g_autoptr(GError) err = NULL;
    JsonNode *ret;
    if (json_array_get_length(actions) == 0) {
        ret = qmp_try(c, command, backup, &err);
        json_object_unref(backup);
    } else {
        JsonObject *action = json_object_new();
        json_object_set_string_member(action, "type", command);
        json_object_set_object_member(action, "data", backup);
        json_array_add_object_element(actions, action);
        g_autoptr(JsonObject) args = json_object_new();
        json_object_set_array_member(args, "actions", json_array_ref(actions));
        ret = qmp_try(c, "transaction", args, &err);
    }
    if (!ret)
        die("%s", err->message);
    json_node_unref(ret);
    if (!a.wait) {
        cleanup_forget(node_undo);  /* the job uses the node; it stays */
        printf("started job %s (target node %s)\n", id, target);
        return 0;
    }
    unsigned bitmap_undo = 0, marker_undo = 0;
    if (start_chain) {
        bitmap_undo = undo_bitmap(a.node, a.bitmap);
        marker_undo = undo_bitmap(a.node, marker);
    }
    unsigned job_undo = job_cleanup_add(id);

    JobOutcome out;
    bool ok = job_wait(c, id, "concluded", false, &out);
    cleanup_forget(job_undo);  /* job_wait dismissed it */
    const char *mode = full ? "full" : "incremental";
    if (!ok) {
        int sig = out.signal;
        if (sig)
            warn("backup %s cancelled%s", id, start_chain ? "; the next --incremental backup is a full one" : "");
        else
            warn("backup %s failed: %s%s", id, out.error ? out.error : out.status,
                 start_chain ? "; the next --incremental backup is a full one" : "");
        job_outcome_clear(&out);
        cleanup_run();
        exit(sig ? 128 + sig : EXIT_FAILURE);
    }
    cleanup_forget(file_undo);
    cleanup_forget(bitmap_undo);
    if (start_chain) {
        cleanup_forget(marker_undo);
        g_autoptr(JsonObject) args = json_object_new();
        json_object_set_string_member(args, "node", a.node);
        json_object_set_string_member(args, "name", marker);
        qmp_run_quietly(c, "block-dirty-bitmap-remove", args, true);
    }
    cleanup_run();  /* the target node blockctl added */
    print_result(&a, id, mode, &out, start_chain);
    job_outcome_clear(&out);
    return 0;
}
