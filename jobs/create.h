/* The create job (QEMU's blockdev-create, block/create.c): makes an image
 * on its own thread through the driver's create callback.  Not a block
 * job (no BLOCK_JOB_* events); finalised automatically and dismissed by
 * the user, so its result stays in query-jobs until then. */
#pragma once

#include "jobs/job.h"

/* Starts job `job_id` creating what `options` describe (copied); NULL with
 * QEMU's error if the driver cannot create images or the ID is bad or taken. */
Job *create_job_start(const char *job_id, const BlockdevCreateOptions *options, GError **errp);
