/* The generic job (DESIGN seam 6): QEMU's job model.
 *
 * A job has a status from QEMU's JobStatus, changes it only along QEMU's
 * transition table, accepts a management verb only in the states QEMU's verb
 * table allows, and emits JOB_STATUS_CHANGE on every change plus the
 * BLOCK_JOB_* events with QEMU's payloads.  The work runs on a thread of its
 * own (JobDriver.run); completion, transactions and finalisation run on the
 * GLib main loop, like every management call.  One lock (the job lock)
 * guards the state of every job; events are emitted under it, so their
 * order is the order of the transitions. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include "qapi/qapi-types.h"

/* The job enums are the generated ones (qapi/qapi-types.h): JobStatus,
 * JobVerb, JobType, BlockdevOnError, BlockErrorAction, BlockDeviceIoStatus,
 * with their wire names in JobStatus_str[] etc. */

typedef struct Job Job;
typedef struct JobTxn JobTxn;

/* What a job type provides.  run() is called on the job's own thread; the
 * others on the main loop. */
typedef struct JobDriver {
    JobType type;
    bool is_block_job;  /* listed by query-block-jobs, emits BLOCK_JOB_* events */
    /* The work: 0 on success, -errno on failure (with *errp set), or
     * -ECANCELED when it stopped because job_is_cancelled() said so. */
    int (*run)(Job *job, GError **errp);
    /* Finalisation, as QEMU: prepare may still fail the transaction;
     * then commit (success) or abort (failure/cancel), then clean. */
    int (*prepare)(Job *job);
    void (*commit)(Job *job);
    void (*abort)(Job *job);
    void (*clean)(Job *job);
    /* Frees the driver's state when the last reference goes. */
    void (*free)(Job *job);
    /* Wakes run() out of any wait of its own (pause, cancel, speed changes). */
    void (*kick)(Job *job);
    /* QEMU's .cancel: returns whether the cancel is forced (NULL: always);
     * a mirror soft-cancels after READY (it ends without pivot, as a success).
     * Called under the job lock: it must not call job_* functions. */
    bool (*cancel)(Job *job, bool force);
    /* QEMU's .complete (NULL: the job cannot be completed), on the main loop. */
    bool (*complete)(Job *job, GError **errp);
} JobDriver;

/* Receives every event (name and data; the callee copies what it keeps). */
typedef void (*JobEventSink)(const char *name, JsonObject *data);
/* Sets where events go (the QMP layer installs qmp_event_emit). */
void job_set_event_sink(JobEventSink sink);

/* Creates a job in `created` (emits JOB_STATUS_CHANGE created) with
 * `opaque` as the driver's state; fails on a bad or used ID.  txn may be
 * NULL (the job is its own transaction). */
Job *job_create(const char *id, const JobDriver *drv, void *opaque, JobTxn *txn,
                bool auto_finalize, bool auto_dismiss, GError **errp);
/* Starts the job's thread (created -> running). */
void job_start(Job *job);
/* Fails a job that was created but never started: runs the driver's abort
 * and clean, then created -> null (a transaction that failed to prepare). */
void job_early_fail(Job *job);

/* A new job transaction (grouped completion); drop the creator's reference
 * with job_txn_unref once every job was created. */
JobTxn *job_txn_new(void);
void job_txn_unref(JobTxn *txn);

/* Looks a job up by ID (borrowed; valid on the main loop until dismissed). */
Job *job_find(const char *id);
/* Every job, in creation order (borrowed pointers; free the array). */
GPtrArray *job_list(void);

/* Verbs, with QEMU's checks and messages. */
bool job_user_pause(Job *job, GError **errp);
bool job_user_resume(Job *job, GError **errp);
bool job_user_cancel(Job *job, bool force, GError **errp);
bool job_complete(Job *job, GError **errp);
bool job_finalize(Job *job, GError **errp);
bool job_dismiss(Job *job, GError **errp);
/* block-job-set-speed / speed at creation: bytes per second, 0 = unlimited. */
bool job_set_speed(Job *job, int64_t speed, GError **errp);

/* A snapshot of a job for queries. */
typedef struct JobSnapshot {
    char *id;
    JobType type;
    JobStatus status;
    bool is_block_job;
    uint64_t current, total;
    int64_t speed;
    bool busy, paused, ready;
    BlockDeviceIoStatus io_status;
    bool auto_finalize, auto_dismiss;
    char *error;  /* NULL unless failed/cancelled */
} JobSnapshot;
/* Fills `info` (free with job_snapshot_clear). */
void job_get_snapshot(Job *job, JobSnapshot *info);
void job_snapshot_clear(JobSnapshot *info);

/* Accessors. */
const char *job_id(Job *job);
void *job_opaque(Job *job);
JobStatus job_status(Job *job);
/* True if paused by the user or by an error policy (resume undoes it). */
bool job_user_paused(Job *job);
const JobDriver *job_driver(Job *job);

/* --- For job drivers, on the job thread --- */

/* True once the job was cancelled (it should stop soon with -ECANCELED). */
bool job_is_cancelled(Job *job);
/* True once any cancel was requested, soft (after READY) or forced. */
bool job_cancel_requested(Job *job);
/* running -> ready, then BLOCK_JOB_READY (QEMU's job_transition_to_ready). */
void job_transition_to_ready(Job *job);
/* Pauses here if a pause was requested; returns false if cancelled. */
bool job_pause_point(Job *job);
/* True if a pause was requested (drivers drain their in-flight work first). */
bool job_pause_requested(Job *job);
/* Charges `bytes` just dispatched to the speed limit and sleeps until the
 * next dispatch may start (jobs/rate-limit.h); wakes early on cancel,
 * pause or a speed change. */
void job_rate_limit(Job *job, uint64_t bytes);
/* The most bytes to dispatch at once under the job's speed, in whole
 * `unit`s (at least one); UINT64_MAX without a limit. */
uint64_t job_rate_chunk(Job *job, uint64_t unit);
/* Sleeps up to `ms` milliseconds unless cancelled/paused/kicked meanwhile. */
void job_sleep_ms(Job *job, unsigned ms);
/* Progress in bytes (any thread). */
void job_progress_add(Job *job, uint64_t done);
void job_progress_set_total(Job *job, uint64_t total);
void job_progress_add_total(Job *job, uint64_t more);
/* Applies an error policy to an I/O error (errnum positive): emits
 * BLOCK_JOB_ERROR; for `stop` pauses the job (a user pause) and sets
 * io-status.  The caller retries after job_pause_point for stop/ignore. */
BlockErrorAction job_handle_error(Job *job, BlockdevOnError policy, bool is_read, int errnum);
/* Emits BLOCK_JOB_COMPLETED with QEMU's payload for work done without a
 * Job (a pull in increments ends the way a stream job does). */
void job_emit_block_completed(JobType type, const char *id, uint64_t len, uint64_t offset, int64_t speed,
                              const char *error);
/* Wakes a job waiting in job_sleep_ms/job_rate_limit (any thread). */
void job_kick(Job *job);

/* --- Test and shutdown support --- */

/* Cancels every job and waits (running the main context) until their
 * threads ended and they are gone; called at daemon exit. */
void job_shutdown_all(void);
