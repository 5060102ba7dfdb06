/* restore: rebuilds a disk image from a full backup and its increments.
 *
 * Each increment is a qcow2 image holding the clusters that changed since
 * the backup before it (data, or zero clusters for regions the guest
 * zeroed).  blockctl opens the list in the daemon as one read-only qcow2
 * chain, each image's backing being the one before it in the list (the
 * names in the headers are not used), and copies the top of the chain with
 * a backup job: every cluster comes from the newest image that holds it,
 * which is the full backup with each increment applied in order.  A raw file
 * is refused as an increment: it cannot tell a cluster the guest zeroed from
 * one that did not change. */
#include "tools/blockctl/commands.h"
#include "tools/blockctl/cleanup.h"
#include "tools/blockctl/cli.h"
#include "tools/blockctl/image-reader.h"
#include "tools/blockctl/interrupt.h"
#include "tools/blockctl/job-wait.h"
#include "tools/blockctl/nodes.h"
#include "tools/blockctl/output.h"
#include "tools/blockctl/targets.h"
#include "tools/blockctl/verify.h"
#include "block/nbd-uri.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The protocol layer of one backup: a file node, or an NBD client node. */
static JsonObject *protocol_options(const char *name)
{
    if (nbd_uri_is(name)) {
        g_autoptr(GError) err = NULL;
        JsonObject *o = nbd_uri_to_options(name, &err);
        if (!o)
            die("%s", err->message);
        return o;
    }
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "driver", "file");
    json_object_set_string_member(o, "filename", name);
    return o;
}

/* "raw" or "qcow2" for the stored bytes of `name`. */
static const char *probe(const char *name)
{
    g_autoptr(GError) err = NULL;
    ImageReader *r = image_reader_open(name, &err);
    const char *format = r ? image_reader_probe(r, &err) : NULL;
    image_reader_close(r);
    if (!format)
        die("%s", err->message);
    return format;
}

/* The backing file name the qcow2 header of `name` records, NULL if none (or unreadable). */
static char *header_backing(const char *name)
{
    ImageReader *r = image_reader_open(name, NULL);
    unsigned char h[20];
    char *backing = NULL;
    if (r && image_reader_pread(r, h, sizeof h, 0, NULL)) {
        uint64_t off = 0;
        for (int i = 8; i < 16; i++)
            off = off << 8 | h[i];
        uint32_t len = (uint32_t)h[16] << 24 | (uint32_t)h[17] << 16 | (uint32_t)h[18] << 8 | h[19];
        if (off && len && len <= 1023 && off + len <= image_reader_size(r)) {
            backing = g_malloc0(len + 1);
            if (!image_reader_pread(r, backing, len, off, NULL))
                g_clear_pointer(&backing, g_free);
        }
    }
    image_reader_close(r);
    return backing;
}

/* Warns when increment `inc` (a file) records another backing file than `previous`:
 * the list's order is used, but a mistake in it would restore garbage. */
static void check_order(const char *inc, const char *previous)
{
    g_autofree char *recorded = header_backing(inc);
    if (!recorded || nbd_uri_is(recorded) || nbd_uri_is(inc))
        return;
    g_autofree char *dir = g_path_get_dirname(inc);
    g_autofree char *resolved = g_canonicalize_filename(recorded, dir);
    if (strcmp(resolved, previous) != 0)
        warn("%s records %s as its backing file, not %s; restoring in the order given", inc, recorded, previous);
}

/* The blockdev-add definition of backups[0..n) as a chain, newest on top. */
static JsonObject *chain_options(char **backups, int n)
{
    JsonObject *below = NULL;
    for (int i = 0; i < n; i++) {
        const char *format = probe(backups[i]);
        if (i > 0 && strcmp(format, "qcow2") != 0) {
            if (below)
                json_object_unref(below);
            die("%s is not a qcow2 image: an increment must be one (a raw file cannot tell a cluster the guest "
                "zeroed from one that did not change)", backups[i]);
        }
        if (i > 0)
            check_order(backups[i], backups[i - 1]);
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "driver", format);
        json_object_set_boolean_member(o, "read-only", TRUE);
        json_object_set_object_member(o, "file", protocol_options(backups[i]));
        if (strcmp(format, "qcow2") == 0) {
            if (below)
                json_object_set_object_member(o, "backing", below);
            else
                json_object_set_null_member(o, "backing");
        }
        below = o;
    }
    return below;
}

/* restore FULL [INCREMENT...] --to PATH|URI|NODE [--format raw|qcow2] [--verify URI] [--speed S] [--job ID] */
int cmd_restore(int argc, char **argv)
{
    const char *to = NULL, *format = NULL, *verify = NULL, *speed = NULL, *job = NULL;
    const CliOption options[] = {
        { "--to", &to, NULL },
        { "--format", &format, NULL },
        { "--verify", &verify, NULL },
        { "--speed", &speed, NULL },
        { "--job", &job, NULL },
        { NULL },
    };
    int n;
    const char *const *w = cli_parse(argc, argv, options, 1, -1, &n);
    if (!to)
        usage_error("--to is required");
    bool file = target_is_file(to);
    if (format && !file)
        usage_error("--format is for a file (--to with a '/' in it)");
    if (format && strcmp(format, "raw") != 0 && strcmp(format, "qcow2") != 0)
        usage_error("bad --format '%s': raw or qcow2", format);
    if (!format)
        format = "raw";
    if (verify && !nbd_uri_is(verify))
        usage_error("bad --verify '%s': an NBD URI", verify);
    if (verify && !(nbd_uri_is(to) || (file && strcmp(format, "raw") == 0)))
        usage_error("--verify reads the restored image: --to a raw file or an NBD URI");
    gint64 bytes_per_s = speed ? (gint64)cli_parse_size("--speed", speed, "bytes per second") : 0;
    g_auto(GStrv) backups = g_new0(char *, n + 1);
    for (int i = 0; i < n; i++)
        backups[i] = nbd_uri_is(w[i]) ? g_strdup(w[i]) : target_absolute(w[i]);

    g_autoptr(JsonObject) chain = chain_options(backups, n);
    QmpClient *c = connect_daemon();
    interrupt_catch();
    g_autofree char *id = job ? g_strdup(job) : g_strdup("restore");
    job_dismiss_stale(c, id);
    g_autofree char *source = g_strdup_printf("restore-%d", (int)getpid());
    json_object_set_string_member(chain, "node-name", source);
    json_node_unref(qmp_run(c, "blockdev-add", chain));
    target_undo_node(source);

    unsigned file_undo = 0, node_undo = 0;
    g_autofree char *target = NULL;
    if (file) {
        target = target_absolute(to);
        target_create_file(target, format, nodes_size(c, source), NULL, &file_undo);
    } else if (nbd_uri_is(to)) {
        target = target_add_nbd_node(c, to, "restore", &node_undo);
    } else {
        target = g_strdup(to);
    }
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "job-id", id);
    json_object_set_string_member(args, "device", source);
    json_object_set_string_member(args, "target", target);
    json_object_set_string_member(args, "sync", "full");
    json_object_set_boolean_member(args, "auto-dismiss", FALSE);
    if (speed)
        json_object_set_int_member(args, "speed", bytes_per_s);
    if (file) {
        json_object_set_string_member(args, "format", format);
        json_object_set_string_member(args, "mode", "existing");
    }
    json_node_unref(qmp_run(c, file ? "drive-backup" : "blockdev-backup", args));
    unsigned job_undo = job_cleanup_add(id);
    JobOutcome out;
    bool ok = job_wait(c, id, "concluded", false, &out);
    cleanup_forget(job_undo);
    if (!ok) {
        int sig = out.signal;
        warn("restore %s %s%s", id, sig ? "cancelled" : "failed: ", sig ? "" : out.error ? out.error : out.status);
        job_outcome_clear(&out);
        cleanup_run();
        exit(sig ? 128 + sig : EXIT_FAILURE);
    }
    cleanup_forget(file_undo);  /* the restored image stays, also if the verify below fails */
    cleanup_run();              /* the chain and the target node */
    char b1[32];
    g_autofree char *line = g_strdup_printf("restored %s from %d backup%s: %s in %.2f s", to, n, n == 1 ? "" : "s",
                                            output_size((double)out.total, b1, sizeof b1), out.seconds);
    if (!cli_json)
        output_fitted(stdout, line);
    job_outcome_clear(&out);
    bool verified = false;
    if (verify) {
        g_autoptr(GError) err = NULL;
        if (!verify_same(file ? target : to, verify, &err)) {
            if (interrupt_signal()) {
                warn("verify of %s interrupted", to);
                exit(128 + interrupt_signal());
            }
            die("verify failed: %s", err->message);
        }
        verified = true;
        if (!cli_json) {
            g_autofree char *vline = g_strdup_printf("verified: %s equals %s", to, verify);
            output_fitted(stdout, vline);
        }
    }
    if (cli_json) {
        g_autoptr(JsonObject) o = json_object_new();
        json_object_set_string_member(o, "job", id);
        json_object_set_string_member(o, "target", to);
        json_object_set_int_member(o, "backups", n);
        json_object_set_boolean_member(o, "verified", verified);
        g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
        output_json(node);
    }
    return 0;
}
