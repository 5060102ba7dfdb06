/* QMP block-commit.  Thin: the arguments become CommitOptions for
 * jobs/commit.h, which resolves the chain and picks an intermediate or an
 * active commit as QEMU's qmp_block_commit does.  filter-node-name is
 * accepted and unused: blockd's jobs act through write hooks, not filter
 * nodes (docs/architecture.md). */
#include "server/qmp/commands.h"
#include "jobs/commit.h"
#include "qapi/qapi-commands.h"

bool qmp_block_commit(QmpSession *s, q_obj_block_commit_arg *a, GError **errp)
{
    CommitOptions o = {
        /* QEMU names the job after the device's BlockBackend, which a
         * node of the storage daemon does not have: "Invalid job ID ''". */
        .job_id = a->has_job_id ? a->job_id : NULL,
        .device = a->device,
        .top = a->has_top ? a->top : NULL,
        .top_node = a->has_top_node ? a->top_node : NULL,
        .base = a->has_base ? a->base : NULL,
        .base_node = a->has_base_node ? a->base_node : NULL,
        .backing_file = a->has_backing_file ? a->backing_file : NULL,
        .speed = a->has_speed ? a->speed : 0,
        .on_error = a->has_on_error ? a->on_error : BLOCKDEV_ON_ERROR_REPORT,
        .auto_finalize = !a->has_auto_finalize || a->auto_finalize,
        .auto_dismiss = !a->has_auto_dismiss || a->auto_dismiss,
    };
    Job *job = commit_job_create(&o, errp);
    if (job)
        job_start(job);
    return job != NULL;
}
