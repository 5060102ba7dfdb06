/* The mirror job: a live copy of a node that guests keep writing to
 * (QEMU's blockdev-mirror; see reference/block-jobs.md section 3).
 *
 * The job marks what the source holds dirty in an anonymous bitmap, which
 * an after-write hook on the source also fills, and loops copying dirty
 * regions (holes and zero regions are written as zeroes); the first pass
 * is simply the first time round.  When nothing is dirty it becomes READY and keeps the
 * target in sync.  job-complete pivots: every export of the source switches
 * to the target atomically (drained, final sync, swap); a soft cancel after
 * READY ends the same way without the swap.  In write-blocking mode a
 * guest write reaches the target before it is acknowledged, so the job
 * converges at any write rate. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include "jobs/job.h"
#include "jobs/backup.h"

typedef struct MirrorOptions {
    const char *job_id;        /* NULL gives QEMU's "Invalid job ID ''" */
    const char *device;        /* source node name */
    const char *target;        /* target node name */
    MirrorSyncMode sync;       /* top, full, none */
    int64_t speed;
    uint64_t granularity;      /* 0: default (64 KiB) */
    int64_t buf_size;          /* 0: default (16 MiB) */
    BlockdevOnError on_source_error, on_target_error;
    MirrorCopyMode copy_mode;
    bool auto_finalize, auto_dismiss;
    /* Active commit (QEMU's commit_active_start, jobs/commit.h): the target
     * is the base of the source's backing chain and `intermediate` the
     * nodes between them, top down (the caller checked the chain).  The
     * job then has type commit, its first pass copies only what the source
     * and the intermediate nodes hold, the chain above may keep reading the
     * target, and the intermediate nodes are blocked while it runs. */
    bool active_commit;
    GPtrArray *intermediate; /* BlockNode *; NULL: none */
} MirrorOptions;

/* Validates (QEMU's messages), installs the hooks that track guest writes;
 * the job is `created`, start it with job_start. */
Job *mirror_job_create(const MirrorOptions *opts, GError **errp);
