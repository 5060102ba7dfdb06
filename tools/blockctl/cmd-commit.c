/* commit: merge the layers of a backing chain down into a lower one
 * (block-commit).  An intermediate commit (--top below NODE) ends by
 * itself; an active commit (the default: NODE's own data too) becomes
 * ready once the base is in sync, and --wait then switches NODE's users to
 * the base, unless --no-complete leaves it ready for `blockctl job
 * complete` (or `job cancel`, which keeps the chain as it was). */
#include "tools/blockctl/commands.h"
#include "tools/blockctl/cleanup.h"
#include "tools/blockctl/cli.h"
#include "tools/blockctl/interrupt.h"
#include "tools/blockctl/job-wait.h"
#include "tools/blockctl/output.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Cancels what is left of the job and exits: 128 + the signal after one, else 1. */
static G_GNUC_NORETURN void give_up(const char *id, JobOutcome *out, const char *when)
{
    if (out->signal)
        warn("commit %s cancelled: the chain is as it was", id);
    else
        warn("commit %s failed %s%s%s", id, when, out->error ? ": " : "", out->error ? out->error : "");
    int sig = out->signal;
    job_outcome_clear(out);
    cleanup_run();
    exit(sig ? 128 + sig : EXIT_FAILURE);
}

/* commit NODE [--top NODE] [--base NODE] [--backing-file NAME] [--speed B] [--job ID] [--wait] [--no-complete] */
int cmd_commit(int argc, char **argv)
{
    const char *top = NULL, *base = NULL, *backing = NULL, *job = NULL, *speed = NULL;
    bool wait = false, no_complete = false;
    const CliOption options[] = {
        { "--top", &top, NULL },
        { "--base", &base, NULL },
        { "--backing-file", &backing, NULL },
        { "--speed", &speed, NULL },
        { "--job", &job, NULL },
        { "--wait", NULL, &wait },
        { "--no-complete", NULL, &no_complete },
        { NULL },
    };
    int n;
    const char *const *w = cli_parse(argc, argv, options, 1, 1, &n);
    const char *node = w[0];
    gint64 bytes_per_s = speed ? (gint64)cli_parse_size("--speed", speed, "bytes per second") : 0;
    bool active = !top || strcmp(top, node) == 0;
    if (no_complete && !active)
        usage_error("--no-complete is for an active commit (without --top below NODE)");

    QmpClient *c = connect_daemon();
    if (wait)
        interrupt_catch();
    gint64 start = g_get_monotonic_time();
    g_autofree char *id = job ? g_strdup(job) : g_strdup_printf("commit-%s", node);
    job_dismiss_stale(c, id);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "job-id", id);
    json_object_set_string_member(args, "device", node);
    if (top)
        json_object_set_string_member(args, "top-node", top);
    if (base)
        json_object_set_string_member(args, "base-node", base);
    if (backing)
        json_object_set_string_member(args, "backing-file", backing);
    if (speed)
        json_object_set_int_member(args, "speed", bytes_per_s);
    /* --wait reads the outcome of a job that failed before it dismisses it. */
    if (wait && !no_complete)
        json_object_set_boolean_member(args, "auto-dismiss", FALSE);
    json_node_unref(qmp_run(c, "block-commit", args));
    if (!wait) {
        printf("started job %s\n", id);
        return 0;
    }
    unsigned job_undo = job_cleanup_add(id);
    JobOutcome out;
    if (active) {
        if (!job_wait(c, id, "ready", true, &out))
            give_up(id, &out, "before it was ready");
        job_outcome_clear(&out);
        if (no_complete) {
            cleanup_forget(job_undo);
            g_autofree char *line = g_strdup_printf(
                "commit %s ready: the base is in sync with %s (switch with: blockctl job complete %s)", id, node,
                id);
            output_fitted(stdout, line);
            return 0;
        }
        g_autoptr(JsonObject) cargs = json_object_new();
        json_object_set_string_member(cargs, "id", id);
        json_node_unref(qmp_run(c, "job-complete", cargs));
    }
    if (!job_wait(c, id, "concluded", active, &out))
        give_up(id, &out, active ? "to complete" : "");
    cleanup_forget(job_undo);
    double secs = (double)(g_get_monotonic_time() - start) / 1e6;
    g_autofree char *line = active
        ? g_strdup_printf("commit %s completed in %.2f s: %s's users now use the base", id, secs, node)
        : g_strdup_printf("commit %s completed in %.2f s: the layers from %s down are merged into the base", id,
                          secs, top);
    output_fitted(stdout, line);
    job_outcome_clear(&out);
    return 0;
}
