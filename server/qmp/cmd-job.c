/* QMP job commands: job-* and block-job-* verbs, query-jobs and
 * query-block-jobs.  Thin: jobs/job.h does the work and checks the verbs;
 * this file finds the job with QEMU's not-found errors for each family. */
#include "server/qmp/commands.h"
#include "jobs/job.h"
#include "qapi/qapi-commands.h"

/* Jobs report their events through the QMP event queue. */
static void __attribute__((constructor)) cmd_job_install_event_sink(void)
{
    job_set_event_sink(qmp_event_emit);
}

/* job-*: GenericError "Job not found". */
static Job *find_job(const char *id, GError **errp)
{
    Job *job = job_find(id);
    if (!job)
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Job not found");
    return job;
}

/* block-job-*: DeviceNotActive "Block job 'ID' not found" (block jobs only). */
static Job *find_block_job(const char *id, GError **errp)
{
    Job *job = job_find(id);
    if (!job || !job_driver(job)->is_block_job) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_DEVICE_NOT_ACTIVE, "Block job '%s' not found", id);
        return NULL;
    }
    return job;
}

bool qmp_job_pause(QmpSession *s, q_obj_job_pause_arg *args, GError **errp)
{
    Job *job = find_job(args->id, errp);
    return job && job_user_pause(job, errp);
}

bool qmp_job_resume(QmpSession *s, q_obj_job_resume_arg *args, GError **errp)
{
    Job *job = find_job(args->id, errp);
    return job && job_user_resume(job, errp);
}

bool qmp_job_cancel(QmpSession *s, q_obj_job_cancel_arg *args, GError **errp)
{
    Job *job = find_job(args->id, errp);
    return job && job_user_cancel(job, true, errp);
}

bool qmp_job_complete(QmpSession *s, q_obj_job_complete_arg *args, GError **errp)
{
    Job *job = find_job(args->id, errp);
    return job && job_complete(job, errp);
}

bool qmp_job_dismiss(QmpSession *s, q_obj_job_dismiss_arg *args, GError **errp)
{
    Job *job = find_job(args->id, errp);
    return job && job_dismiss(job, errp);
}

bool qmp_job_finalize(QmpSession *s, q_obj_job_finalize_arg *args, GError **errp)
{
    Job *job = find_job(args->id, errp);
    return job && job_finalize(job, errp);
}

bool qmp_block_job_set_speed(QmpSession *s, q_obj_block_job_set_speed_arg *args, GError **errp)
{
    Job *job = find_block_job(args->device, errp);
    return job && job_set_speed(job, args->speed, errp);
}

bool qmp_block_job_cancel(QmpSession *s, q_obj_block_job_cancel_arg *args, GError **errp)
{
    Job *job = find_block_job(args->device, errp);
    if (!job)
        return false;
    bool force = args->has_force && args->force;
    if (job_user_paused(job) && !force) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "The block job for device '%s' is currently paused", args->device);
        return false;
    }
    return job_user_cancel(job, force, errp);
}

bool qmp_block_job_pause(QmpSession *s, q_obj_block_job_pause_arg *args, GError **errp)
{
    Job *job = find_block_job(args->device, errp);
    return job && job_user_pause(job, errp);
}

bool qmp_block_job_resume(QmpSession *s, q_obj_block_job_resume_arg *args, GError **errp)
{
    Job *job = find_block_job(args->device, errp);
    return job && job_user_resume(job, errp);
}

bool qmp_block_job_complete(QmpSession *s, q_obj_block_job_complete_arg *args, GError **errp)
{
    Job *job = find_block_job(args->device, errp);
    return job && job_complete(job, errp);
}

bool qmp_block_job_dismiss(QmpSession *s, q_obj_block_job_dismiss_arg *args, GError **errp)
{
    Job *job = find_block_job(args->id, errp);
    return job && job_dismiss(job, errp);
}

bool qmp_block_job_finalize(QmpSession *s, q_obj_block_job_finalize_arg *args, GError **errp)
{
    Job *job = find_block_job(args->id, errp);
    return job && job_finalize(job, errp);
}

bool qmp_query_jobs(QmpSession *s, JobInfoList **ret, GError **errp)
{
    /* QEMU lists the newest job first: prepend in creation order. */
    g_autoptr(GPtrArray) jobs = job_list();
    JobInfoList *head = NULL;
    for (guint i = 0; i < jobs->len; i++) {
        JobSnapshot snap;
        job_get_snapshot(jobs->pdata[i], &snap);
        JobInfo *info = g_new0(JobInfo, 1);
        info->id = g_strdup(snap.id);
        info->type = snap.type;
        info->status = snap.status;
        info->current_progress = (int64_t)snap.current;
        info->total_progress = (int64_t)snap.total;
        info->has_error = snap.error != NULL;
        info->error = g_strdup(snap.error);
        job_snapshot_clear(&snap);
        JobInfoList *e = g_new0(JobInfoList, 1);
        e->value = info;
        e->next = head;
        head = e;
    }
    *ret = head;
    return true;
}

bool qmp_query_block_jobs(QmpSession *s, BlockJobInfoList **ret, GError **errp)
{
    g_autoptr(GPtrArray) jobs = job_list();
    BlockJobInfoList *head = NULL;
    for (guint i = 0; i < jobs->len; i++) {
        JobSnapshot snap;
        job_get_snapshot(jobs->pdata[i], &snap);
        if (!snap.is_block_job) {
            job_snapshot_clear(&snap);
            continue;
        }
        BlockJobInfo *info = g_new0(BlockJobInfo, 1);
        info->type = g_strdup(JobType_str[snap.type]);
        info->device = g_strdup(snap.id);
        info->len = (int64_t)snap.total;
        info->offset = (int64_t)snap.current;
        info->busy = snap.busy;
        info->paused = snap.paused;
        info->speed = snap.speed;
        info->io_status = snap.io_status;
        info->ready = snap.ready;
        info->status = snap.status;
        info->auto_finalize = snap.auto_finalize;
        info->auto_dismiss = snap.auto_dismiss;
        info->has_error = snap.error != NULL;
        info->error = g_strdup(snap.error);
        job_snapshot_clear(&snap);
        BlockJobInfoList *e = g_new0(BlockJobInfoList, 1);
        e->value = info;
        e->next = head;
        head = e;
    }
    *ret = head;
    return true;
}
