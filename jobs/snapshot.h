/* QEMU 6.0's snapshot jobs: snapshot-save, snapshot-load and
 * snapshot-delete of a tag on the devices the caller names (no default
 * device set).  blockd holds no VM: the VM state it saves is empty, and it
 * refuses to load a snapshot whose VM state is not (docs/snapshots.md). */
#pragma once

#include "jobs/job.h"

typedef enum SnapshotJobKind { SNAPSHOT_JOB_SAVE, SNAPSHOT_JOB_LOAD, SNAPSHOT_JOB_DELETE } SnapshotJobKind;

/* Creates the job (not started): `devices` is NULL-terminated; vmstate is
 * NULL for delete.  Only the job ID is checked here; as in QEMU every
 * other error ends the job (its query-jobs error). */
Job *snapshot_job_create(SnapshotJobKind kind, const char *job_id, const char *tag, const char *vmstate,
                         const char *const *devices, GError **errp);
