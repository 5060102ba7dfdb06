/* QMP blockdev-mirror and drive-mirror.  Thin: the arguments become
 * MirrorOptions for jobs/mirror.h; drive-mirror first opens (or creates)
 * its raw target file as a node of its own, which stays after the job (it
 * is the node the exports use after a pivot). */
#include "server/qmp/commands.h"
#include "jobs/mirror.h"
#include "block/node.h"
#include "server/qmp/drive-target.h"
#include "qapi/qapi-commands.h"

#include <string.h>

/* The members BlockdevMirror and DriveMirror share. */
#define MIRROR_COMMON_TO_OPTIONS(a, o)                                                   \
    do {                                                                                 \
        (o)->job_id = (a)->has_job_id ? (a)->job_id : (a)->device; /* see docs/qmp.md */ \
        (o)->device = (a)->device;                                                       \
        (o)->sync = (a)->sync;                                                           \
        (o)->speed = (a)->has_speed ? (a)->speed : 0;                                    \
        (o)->granularity = (a)->has_granularity ? (a)->granularity : 0;                  \
        (o)->buf_size = (a)->has_buf_size ? (a)->buf_size : 0;                           \
        (o)->on_source_error = (a)->has_on_source_error ? (a)->on_source_error           \
                                                        : BLOCKDEV_ON_ERROR_REPORT;      \
        (o)->on_target_error = (a)->has_on_target_error ? (a)->on_target_error           \
                                                        : BLOCKDEV_ON_ERROR_REPORT;      \
        (o)->copy_mode = (a)->has_copy_mode ? (a)->copy_mode                             \
                                            : MIRROR_COPY_MODE_BACKGROUND;               \
        (o)->auto_finalize = !(a)->has_auto_finalize || (a)->auto_finalize;              \
        (o)->auto_dismiss = !(a)->has_auto_dismiss || (a)->auto_dismiss;                 \
    } while (0)

/* `replaces` names the node to swap out at the pivot; only the source itself is supported. */
static bool check_replaces(bool has_replaces, const char *replaces, const char *device, GError **errp)
{
    if (has_replaces && strcmp(replaces, device) != 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "replaces: only the source node '%s' can be replaced", device);
        return false;
    }
    return true;
}

bool qmp_blockdev_mirror(QmpSession *s, q_obj_blockdev_mirror_arg *args, GError **errp)
{
    MirrorOptions o = { .target = args->target };
    MIRROR_COMMON_TO_OPTIONS(args, &o);
    if (!check_replaces(args->has_replaces, args->replaces, args->device, errp))
        return false;
    Job *job = mirror_job_create(&o, errp);
    if (job)
        job_start(job);
    return job != NULL;
}

bool qmp_drive_mirror(QmpSession *s, DriveMirror *args, GError **errp)
{
    BlockNode *source = node_find(args->device);
    if (!source) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Cannot find device='%s' nor node-name='%s'", args->device, args->device);
        return false;
    }
    if (!check_replaces(args->has_replaces, args->replaces, args->device, errp))
        return false;
    MirrorOptions o = { 0 };
    MIRROR_COMMON_TO_OPTIONS(args, &o);
    BlockNode *target = qmp_open_drive_target(
        "drive-mirror", args->target, args->has_format ? args->format : NULL,
        args->has_mode && args->mode == NEW_IMAGE_MODE_EXISTING,
        args->has_node_name ? args->node_name : NULL, source,
        /* QEMU's qmp_drive_mirror: top sits on the source's backing, none on the source. */
        args->sync == MIRROR_SYNC_MODE_TOP    ? DRIVE_TARGET_SOURCE_BACKING
        : args->sync == MIRROR_SYNC_MODE_NONE ? DRIVE_TARGET_SOURCE
                                              : DRIVE_TARGET_NO_BASE,
        errp);
    if (!target)
        return false;
    g_autofree char *target_name = g_strdup(node_name(target));
    o.target = target_name;
    Job *job = mirror_job_create(&o, errp);
    if (!job) {
        node_delete(target_name, NULL);
        return false;
    }
    job_start(job);
    return true;
}
