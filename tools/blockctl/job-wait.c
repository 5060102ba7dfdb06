/* Job following (see job-wait.h). */
#include "tools/blockctl/job-wait.h"
#include "tools/blockctl/cleanup.h"
#include "tools/blockctl/cli.h"
#include "tools/blockctl/interrupt.h"
#include "tools/blockctl/output.h"
#include "tools/blockctl/progress.h"

#include <string.h>

enum { POLL_MS = 200 };

/* Job `id` from query-jobs (a reference in *ret), NULL if there is none; false if the query failed. */
static bool find_job(QmpClient *c, const char *id, JsonNode **ret, JsonObject **job)
{
    *job = NULL;
    *ret = qmp_try(c, "query-jobs", NULL, NULL);
    if (!*ret)
        return false;
    JsonArray *a = json_node_get_array(*ret);
    for (guint i = 0; a && i < json_array_get_length(a); i++)
        if (strcmp(output_str(json_array_get_object_element(a, i), "id"), id) == 0)
            *job = json_array_get_object_element(a, i);
    return true;
}

static bool run_on_job(QmpClient *c, const char *verb, const char *id)
{
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "id", id);
    return qmp_run_quietly(c, verb, args, false);
}

bool job_wait(QmpClient *c, const char *id, const char *until, bool mirror, JobOutcome *out)
{
    Progress progress;
    progress_start(&progress);
    memset(out, 0, sizeof *out);
    bool cancelled = false;
    for (;;) {
        if (interrupt_signal() && !cancelled) {
            progress_end(&progress);
            warn("cancelling job %s", id);
            run_on_job(c, "job-cancel", id);  /* fails harmlessly if it just concluded */
            cancelled = true;
            out->signal = interrupt_signal();
        }
        if (cancelled && interrupt_count() > 1) {
            warn("not waiting any longer for job %s to end", id);
            out->status = g_strdup("running");
            break;
        }
        JsonNode *ret;
        JsonObject *job;
        if (!find_job(c, id, &ret, &job)) {
            out->status = g_strdup("unknown");
            out->error = g_strdup("the daemon does not answer");
            break;
        }
        if (!job) {
            json_node_unref(ret);
            out->status = g_strdup("gone");
            break;
        }
        const char *status = output_str(job, "status");
        gint64 done = output_int(job, "current-progress");
        out->total = output_int(job, "total-progress");
        if (!cancelled) {
            if (mirror)
                progress_mirror(&progress, done, out->total, status);
            else
                progress_copy(&progress, done, out->total);
        }
        if (strcmp(status, "concluded") == 0 || (!cancelled && strcmp(status, until) == 0)) {
            out->status = g_strdup(status);
            if (json_object_has_member(job, "error"))
                out->error = g_strdup(output_str(job, "error"));
            json_node_unref(ret);
            break;
        }
        json_node_unref(ret);
        interrupt_sleep(POLL_MS);
    }
    progress_end(&progress);
    out->seconds = progress_seconds(&progress);
    if (strcmp(out->status, "concluded") == 0)
        run_on_job(c, "job-dismiss", id);
    return !out->error && !out->signal && strcmp(out->status, until) == 0;
}

void job_outcome_clear(JobOutcome *out)
{
    g_clear_pointer(&out->status, g_free);
    g_clear_pointer(&out->error, g_free);
}

static void abandon_job(void *data)
{
    QmpClient *c = qmp_current();
    const char *id = data;
    if (!c || !run_on_job(c, "job-cancel", id))
        return;  /* no such job (any more), or no daemon */
    JobOutcome out;
    job_wait(c, id, "concluded", false, &out);
    job_outcome_clear(&out);
}

unsigned job_cleanup_add(const char *id)
{
    return cleanup_add(abandon_job, g_strdup(id), g_free);
}

void job_dismiss_stale(QmpClient *c, const char *id)
{
    JsonNode *ret;
    JsonObject *job;
    if (find_job(c, id, &ret, &job) && job && strcmp(output_str(job, "status"), "concluded") == 0) {
        warn("dismissing job %s, concluded%s%s and left by an earlier run", id,
             json_object_has_member(job, "error") ? " with error: " : "",
             json_object_has_member(job, "error") ? output_str(job, "error") : "");
        run_on_job(c, "job-dismiss", id);
    }
    if (ret)
        json_node_unref(ret);
}
