/* mirror: live-copy a node to an NBD server or a node until both are in
 * sync (--wait), then switch the node's users to the copy (--complete). */
#include "tools/blockctl/commands.h"
#include "tools/blockctl/cleanup.h"
#include "tools/blockctl/cli.h"
#include "tools/blockctl/interrupt.h"
#include "tools/blockctl/job-wait.h"
#include "tools/blockctl/output.h"
#include "tools/blockctl/targets.h"
#include "block/nbd-uri.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Undoes what the command made and exits: 128 + the signal after one, else 1. */
static G_GNUC_NORETURN void give_up(const char *id, JobOutcome *out, const char *when)
{
    if (out->signal)
        warn("mirror %s cancelled", id);
    else
        warn("mirror %s failed %s%s%s", id, when, out->error ? ": " : "", out->error ? out->error : "");
    int sig = out->signal;
    job_outcome_clear(out);
    cleanup_run();
    exit(sig ? 128 + sig : EXIT_FAILURE);
}

/* mirror NODE --to URI|NODE [--speed B] [--job ID] [--write-blocking] [--wait] [--complete] */
int cmd_mirror(int argc, char **argv)
{
    const char *to = NULL, *job = NULL, *speed = NULL;
    bool wait = false, complete = false, blocking = false;
    const CliOption options[] = {
        { "--to", &to, NULL },
        { "--speed", &speed, NULL },
        { "--job", &job, NULL },
        { "--write-blocking", NULL, &blocking },
        { "--wait", NULL, &wait },
        { "--complete", NULL, &complete },
        { NULL },
    };
    int n;
    const char *const *w = cli_parse(argc, argv, options, 1, 1, &n);
    const char *node = w[0];
    if (!to)
        usage_error("NODE and --to are required");
    gint64 bytes_per_s = speed ? (gint64)cli_parse_size("--speed", speed, "bytes per second") : 0;

    QmpClient *c = connect_daemon();
    if (wait || complete)
        interrupt_catch();
    gint64 start = g_get_monotonic_time();
    g_autofree char *id = job ? g_strdup(job) : g_strdup_printf("mirror-%s", node);
    job_dismiss_stale(c, id);
    unsigned node_undo = 0;
    g_autofree char *target = nbd_uri_is(to) ? target_add_nbd_node(c, to, "mirror", &node_undo) : g_strdup(to);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "job-id", id);
    json_object_set_string_member(args, "device", node);
    json_object_set_string_member(args, "target", target);
    json_object_set_string_member(args, "sync", "full");
    if (blocking)
        json_object_set_string_member(args, "copy-mode", "write-blocking");
    if (speed)
        json_object_set_int_member(args, "speed", bytes_per_s);
    /* --wait alone leaves the job to `blockctl job complete`, which lets it go by itself. */
    if (complete)
        json_object_set_boolean_member(args, "auto-dismiss", FALSE);
    json_node_unref(qmp_run(c, "blockdev-mirror", args));
    if (!wait && !complete) {
        cleanup_forget(node_undo);
        printf("started job %s (target node %s)\n", id, target);
        return 0;
    }
    unsigned job_undo = job_cleanup_add(id);
    JobOutcome out;
    if (!job_wait(c, id, "ready", true, &out))
        give_up(id, &out, "before it was ready");
    job_outcome_clear(&out);
    if (!complete) {
        cleanup_forget(job_undo);
        cleanup_forget(node_undo);
        g_autofree char *line = g_strdup_printf(
            "mirror %s ready: %s and %s are in sync (complete with: blockctl job complete %s)", id, node, target, id);
        output_fitted(stdout, line);
        return 0;
    }
    g_autoptr(JsonObject) cargs = json_object_new();
    json_object_set_string_member(cargs, "id", id);
    json_node_unref(qmp_run(c, "job-complete", cargs));
    if (!job_wait(c, id, "concluded", true, &out))
        give_up(id, &out, "to complete");
    cleanup_forget(job_undo);
    cleanup_forget(node_undo);  /* the node's users use it now */
    g_autofree char *line = g_strdup_printf("mirror %s completed in %.2f s: %s's users now use %s", id,
                                            (double)(g_get_monotonic_time() - start) / 1e6,
                                            node, target);
    output_fitted(stdout, line);
    job_outcome_clear(&out);
    return 0;
}
