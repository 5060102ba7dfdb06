/* The commit job: QEMU's block-commit (blockdev.c's qmp_block_commit,
 * block/commit.c, commit_active_start in block/mirror.c; see
 * reference/block-jobs.md section 5 and docs/chains.md).
 *
 * The data of the layers from `top` down to, not including, `base` moves
 * into `base`.  An intermediate commit (top below the active layer) copies
 * what those layers hold while clients keep writing to the layers above,
 * then makes base the backing node of the overlay above top (its image
 * header rewritten) and the committed layers leave the chain; it ends by
 * itself.  An active commit (top is the device) is a mirror of type
 * "commit" from top into base (jobs/mirror.h): READY when in sync,
 * job-complete moves every user of top to base, a cancel after READY
 * leaves the chain as it was. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include "jobs/job.h"

typedef struct CommitOptions {
    const char *job_id;        /* NULL gives QEMU's "Invalid job ID ''" */
    const char *device;        /* the chain's root node */
    const char *top, *top_node;   /* NULL: absent (top: the device) */
    const char *base, *base_node; /* NULL: absent (base: the chain's bottom) */
    const char *backing_file;  /* NULL: base's file name */
    int64_t speed;
    BlockdevOnError on_error;
    bool auto_finalize, auto_dismiss;
} CommitOptions;

/* Resolves and checks the arguments with QEMU's messages, in QEMU's order,
 * and creates the job (an active commit when top is the device); the job
 * is `created`, start it with job_start. */
Job *commit_job_create(const CommitOptions *opts, GError **errp);
