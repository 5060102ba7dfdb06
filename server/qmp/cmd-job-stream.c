/* QMP block-stream and __io.blockd_block-stream-increment.  Thin: the
 * arguments become StreamOptions / StreamPullOptions for jobs/stream.h. */
#include "server/qmp/commands.h"
#include "jobs/stream.h"
#include "qapi/qapi-commands.h"

#define OPT(a, m) ((a)->has_##m ? (a)->m : NULL)

bool qmp_block_stream(QmpSession *s, q_obj_block_stream_arg *a, GError **errp)
{
    StreamOptions o = {
        .job_id = a->has_job_id ? a->job_id : a->device, /* see docs/qmp.md */
        .device = a->device,
        .base = OPT(a, base),
        .base_node = OPT(a, base_node),
        .bottom = OPT(a, bottom),
        .backing_file = OPT(a, backing_file),
        .speed = a->has_speed ? a->speed : 0,
        .on_error = a->has_on_error ? a->on_error : BLOCKDEV_ON_ERROR_REPORT,
        .filter_node_name = OPT(a, filter_node_name),
        .auto_finalize = !a->has_auto_finalize || a->auto_finalize,
        .auto_dismiss = !a->has_auto_dismiss || a->auto_dismiss,
    };
    Job *job = stream_job_create(&o, errp);
    if (job)
        job_start(job);
    return job != NULL;
}

bool qmp___io_blockd_block_stream_increment(QmpSession *s, q_obj___io_blockd_block_stream_increment_arg *a,
                                            __io_blockd_StreamIncrement **ret, GError **errp)
{
    if ((a->has_cursor && a->cursor < 0) || (a->has_length && a->length < 0)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s' expects a non-negative value",
                    a->has_cursor && a->cursor < 0 ? "cursor" : "length");
        return false;
    }
    StreamPullOptions o = {
        .id = OPT(a, job_id),
        .device = a->device,
        .base = OPT(a, base),
        .base_node = OPT(a, base_node),
        .backing_file = OPT(a, backing_file),
        .cursor = a->has_cursor ? (uint64_t)a->cursor : 0,
        .length = a->has_length ? (uint64_t)a->length : 0,
    };
    uint64_t cursor, end;
    if (!stream_pull_increment(&o, &cursor, &end, errp))
        return false;
    *ret = g_new0(__io_blockd_StreamIncrement, 1);
    (*ret)->cursor = (int64_t)cursor;
    (*ret)->end = (int64_t)end;
    return true;
}
