/* stream and pull: copy into a node the data of the layers of its backing
 * chain above a base (block-stream), so those layers can go, either as a
 * job (stream, optionally followed to its end with a progress line) or in
 * increments the caller paces (pull: __io.blockd_block-stream-increment,
 * one piece per run, or every piece with --all). */
#include "tools/blockctl/commands.h"
#include "tools/blockctl/cleanup.h"
#include "tools/blockctl/cli.h"
#include "tools/blockctl/interrupt.h"
#include "tools/blockctl/job-wait.h"
#include "tools/blockctl/output.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The block-stream arguments both commands share. */
static void chain_args(JsonObject *args, const char *node, const char *base, const char *backing_file)
{
    json_object_set_string_member(args, "device", node);
    if (base)
        json_object_set_string_member(args, "base-node", base);
    if (backing_file)
        json_object_set_string_member(args, "backing-file", backing_file);
}

static char *result_text(const char *node, const char *base)
{
    return base ? g_strdup_printf("%s now has %s as its backing node", node, base)
                : g_strdup_printf("%s no longer has a backing file", node);
}

/* stream NODE [--base NODE] [--backing-file NAME] [--speed B] [--job ID] [--wait] */
int cmd_stream(int argc, char **argv)
{
    const char *base = NULL, *backing_file = NULL, *speed = NULL, *job = NULL;
    bool wait = false;
    const CliOption options[] = {
        { "--base", &base, NULL },
        { "--backing-file", &backing_file, NULL },
        { "--speed", &speed, NULL },
        { "--job", &job, NULL },
        { "--wait", NULL, &wait },
        { NULL },
    };
    int n;
    const char *const *w = cli_parse(argc, argv, options, 1, 1, &n);
    const char *node = w[0];
    if (backing_file && !base)
        usage_error("--backing-file names the base: give --base too");
    gint64 bytes_per_s = speed ? (gint64)cli_parse_size("--speed", speed, "bytes per second") : 0;

    QmpClient *c = connect_daemon();
    if (wait)
        interrupt_catch();
    gint64 start = g_get_monotonic_time();
    g_autofree char *id = job ? g_strdup(job) : g_strdup_printf("stream-%s", node);
    job_dismiss_stale(c, id);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "job-id", id);
    chain_args(args, node, base, backing_file);
    if (speed)
        json_object_set_int_member(args, "speed", bytes_per_s);
    if (wait)
        json_object_set_boolean_member(args, "auto-dismiss", FALSE);
    json_node_unref(qmp_run(c, "block-stream", args));
    if (!wait) {
        printf("started job %s\n", id);
        return 0;
    }
    unsigned job_undo = job_cleanup_add(id);
    JobOutcome out;
    bool ok = job_wait(c, id, "concluded", false, &out);
    cleanup_forget(job_undo);   /* job_wait dismissed it */
    if (!ok) {
        int sig = out.signal;
        if (sig)
            warn("stream %s cancelled; the backing chain is unchanged", id);
        else
            warn("stream %s failed: %s; the backing chain is unchanged", id, out.error ? out.error : out.status);
        job_outcome_clear(&out);
        exit(sig ? 128 + sig : EXIT_FAILURE);
    }
    g_autofree char *what = result_text(node, base);
    g_autofree char *line = g_strdup_printf("stream %s completed in %.2f s: %s", id,
                                            (double)(g_get_monotonic_time() - start) / 1e6, what);
    output_fitted(stdout, line);
    job_outcome_clear(&out);
    return 0;
}

/* pull NODE [--base NODE] [--backing-file NAME] [--cursor OFFSET] [--length BYTES] [--all] */
int cmd_pull(int argc, char **argv)
{
    const char *base = NULL, *backing_file = NULL, *cursor_s = NULL, *length_s = NULL;
    bool all = false;
    const CliOption options[] = {
        { "--base", &base, NULL },
        { "--backing-file", &backing_file, NULL },
        { "--cursor", &cursor_s, NULL },
        { "--length", &length_s, NULL },
        { "--all", NULL, &all },
        { NULL },
    };
    int n;
    const char *const *w = cli_parse(argc, argv, options, 1, 1, &n);
    const char *node = w[0];
    if (backing_file && !base)
        usage_error("--backing-file names the base: give --base too");
    gint64 cursor = cursor_s ? (gint64)cli_parse_size("--cursor", cursor_s, "bytes") : 0;
    gint64 length = length_s ? (gint64)cli_parse_size("--length", length_s, "bytes") : 0;

    QmpClient *c = connect_daemon();
    if (all)
        interrupt_catch();
    unsigned calls = 0;
    for (;;) {
        g_autoptr(JsonObject) args = json_object_new();
        chain_args(args, node, base, backing_file);
        json_object_set_int_member(args, "cursor", cursor);
        if (length)
            json_object_set_int_member(args, "length", length);
        JsonNode *ret = qmp_run(c, "__io.blockd_block-stream-increment", args);
        JsonObject *r = json_node_get_object(ret);
        cursor = json_object_get_int_member(r, "cursor");
        gint64 end = json_object_get_int_member(r, "end");
        json_node_unref(ret);
        calls++;
        if (cursor == end) {
            g_autofree char *what = result_text(node, base);
            printf("cursor %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT ": pull complete, %s\n", cursor, end, what);
            return 0;
        }
        if (!all) {
            /* The next run goes on from here: blockctl pull NODE --cursor CURSOR. */
            printf("cursor %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT "\n", cursor, end);
            return 0;
        }
        if (interrupt_signal()) {
            warn("pull of %s interrupted at cursor %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT
                 " after %u increments; go on with --cursor %" G_GINT64_FORMAT, node, cursor, end, calls, cursor);
            return 128 + interrupt_signal();
        }
    }
}
