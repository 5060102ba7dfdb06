/* The create job (see create.h). */
#include "jobs/create.h"
#include "block/node.h"

#include <errno.h>
#include <gio/gio.h>

/* A deep copy through the generated visitors: the command's arguments are
 * freed when it returns, the job runs later. */
static BlockdevCreateOptions *options_copy(const BlockdevCreateOptions *options)
{
    g_autoptr(JsonNode) json = qapi_out_BlockdevCreateOptions(options);
    QapiIn in = { .keyval = false };
    BlockdevCreateOptions *copy = NULL;
    g_autoptr(GError) err = NULL;
    bool ok = qapi_in_BlockdevCreateOptions(&in, "", json, &copy, &err);
    g_assert(ok); /* it was valid a moment ago */
    return copy;
}

static int create_run(Job *job, GError **errp)
{
    /* QEMU's blockdev_create_run: one unit of progress, done or failed. */
    job_progress_set_total(job, 1);
    bool ok = block_image_create(job_opaque(job), errp);
    job_progress_add(job, 1);
    return ok ? 0 : -EIO;
}

static void create_free(Job *job)
{
    qapi_free_BlockdevCreateOptions(job_opaque(job));
}

static const JobDriver create_driver = {
    .type = JOB_TYPE_CREATE,
    .is_block_job = false,
    .run = create_run,
    .free = create_free,
};

Job *create_job_start(const char *job_id, const BlockdevCreateOptions *options, GError **errp)
{
    /* QEMU's qmp_blockdev_create: the driver first, then the job. */
    if (!block_image_create_supported(options->driver, errp))
        return NULL;
    BlockdevCreateOptions *copy = options_copy(options);
    Job *job = job_create(job_id, &create_driver, copy, NULL, true, false, errp);
    if (!job) {
        qapi_free_BlockdevCreateOptions(copy);
        return NULL;
    }
    job_start(job);
    return job;
}
