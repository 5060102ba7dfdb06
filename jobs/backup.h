/* The backup job: a point-in-time copy of a node pushed to a target node
 * (QEMU's blockdev-backup; see reference/block-jobs.md section 2).
 *
 * At creation a copy-before-write hook is put on the source, so the target
 * receives the source as it was at that instant however guests write
 * meanwhile; a bitmap given for the job is snapshotted and cleared (the
 * bitmap itself then records only writes made during the job, QEMU's
 * "successor") and handed back at the end according to bitmap-mode. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include "jobs/job.h"

/* sync is QEMU's MirrorSyncMode, bitmap-mode its BitmapSyncMode (qapi/qapi-types.h). */
typedef struct BackupOptions {
    const char *job_id;        /* NULL gives QEMU's "Invalid job ID ''" */
    const char *device;        /* source node name */
    const char *target;        /* target node name */
    MirrorSyncMode sync;
    const char *bitmap;        /* NULL: none */
    bool has_bitmap_mode;
    BitmapSyncMode bitmap_mode;
    int64_t speed;
    BlockdevOnError on_source_error, on_target_error;
    bool auto_finalize, auto_dismiss;
    unsigned max_workers;      /* 0: default */
    uint64_t max_chunk;        /* 0: default */
    bool delete_target_at_end; /* drive-backup: the target node is the job's own */
    bool compress;             /* compressed clusters on the target (qcow2) */
    JobTxn *txn;               /* grouped transaction, or NULL */
} BackupOptions;

/* Validates (QEMU's order and messages), installs the copy-before-write hook
 * and freezes the bitmap; the job is `created`, start it with job_start. */
Job *backup_job_create(const BackupOptions *opts, GError **errp);
