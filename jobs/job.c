/* The generic job: QEMU's state machine, verbs, transactions, rate limit
 * and error policies (see jobs/job.h).  The logic follows QEMU's job.c and
 * blockjob.c so that event sequences match qemu-storage-daemon's. */
#define G_LOG_DOMAIN "blockd-jobs"
#include "jobs/job.h"
#include "jobs/rate-limit.h"

#include <errno.h>
#include <string.h>

/* QEMU's JobSTT: allowed[from][to]. */
static const bool transition_allowed[JOB_STATUS__MAX][JOB_STATUS__MAX] = {
    /*                U  C  R  P  Y  S  W  D  X  E  N */
    /* U */          {0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    /* C */          {0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1},
    /* R */          {0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0},
    /* P */          {0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
    /* Y */          {0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0},
    /* S */          {0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    /* W */          {0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0},
    /* D */          {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
    /* X */          {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0},
    /* E */          {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
    /* N */          {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
};

/* QEMU's JobVerbTable: allowed[verb][status]. */
static const bool verb_allowed[JOB_VERB__MAX][JOB_STATUS__MAX] = {
    /*                                  U  C  R  P  Y  S  W  D  X  E  N */
    [JOB_VERB_CANCEL] =                {0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
    [JOB_VERB_PAUSE] =                 {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [JOB_VERB_RESUME] =                {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [JOB_VERB_SET_SPEED] =             {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [JOB_VERB_COMPLETE] =              {0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0},
    [JOB_VERB_FINALIZE] =              {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
    [JOB_VERB_DISMISS] =               {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},
};

struct JobTxn {
    GList *jobs;     /* Job *, newest first (QEMU inserts at the head) */
    int refcount;
    bool aborting;
};

struct Job {
    char *id;
    const JobDriver *drv;
    void *opaque;
    JobTxn *txn;
    JobStatus status;
    bool auto_finalize, auto_dismiss;
    int pause_count;
    bool user_paused;
    bool cancelled, force_cancel;
    bool started, busy, paused, kicked;
    int ret;
    char *error;
    uint64_t progress_current, progress_total; /* atomic */
    int64_t speed;
    /* Rate limiter (QEMU's RateLimit). */
    RateLimit rate;         /* speed limit (under the job lock) */
    BlockDeviceIoStatus io_status;
    GThread *thread;
    GCond cond;
};

static GMutex job_mutex;
static GPtrArray *jobs; /* Job *, creation order */
static JobEventSink event_sink;

void job_set_event_sink(JobEventSink sink)
{
    event_sink = sink;
}

static void emit(const char *name, JsonObject *data)
{
    if (event_sink)
        event_sink(name, data);
    json_object_unref(data);
}

static uint64_t progress_get(uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* BLOCK_JOB_COMPLETED/CANCELLED/READY share {type, device, len, offset, speed}. */
static JsonObject *block_job_event_data(Job *job)
{
    JsonObject *d = json_object_new();
    json_object_set_string_member(d, "type", JobType_str[job->drv->type]);
    json_object_set_string_member(d, "device", job->id);
    json_object_set_int_member(d, "len", (gint64)progress_get(&job->progress_total));
    json_object_set_int_member(d, "offset", (gint64)progress_get(&job->progress_current));
    json_object_set_int_member(d, "speed", job->speed);
    return d;
}

void job_emit_block_completed(JobType type, const char *id, uint64_t len, uint64_t offset, int64_t speed,
                              const char *error)
{
    JsonObject *d = json_object_new();
    json_object_set_string_member(d, "type", JobType_str[type]);
    json_object_set_string_member(d, "device", id);
    json_object_set_int_member(d, "len", (gint64)len);
    json_object_set_int_member(d, "offset", (gint64)offset);
    json_object_set_int_member(d, "speed", speed);
    if (error)
        json_object_set_string_member(d, "error", error);
    /* Under the job lock, as every job event, so it is ordered with theirs. */
    g_mutex_lock(&job_mutex);
    emit("BLOCK_JOB_COMPLETED", d);
    g_mutex_unlock(&job_mutex);
}

static void job_state_transition(Job *job, JobStatus to)
{
    JobStatus from = job->status;
    g_assert(transition_allowed[from][to]);
    job->status = to;
    if (from != to) {
        JsonObject *d = json_object_new();
        json_object_set_string_member(d, "id", job->id);
        json_object_set_string_member(d, "status", JobStatus_str[to]);
        emit("JOB_STATUS_CHANGE", d);
    }
}

static bool job_apply_verb(Job *job, JobVerb verb, GError **errp)
{
    if (verb_allowed[verb][job->status])
        return true;
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                "Job '%s' in state '%s' cannot accept command verb '%s'",
                job->id, JobStatus_str[job->status], JobVerb_str[verb]);
    return false;
}

/* QEMU's job_is_completed: the work is over (successfully or not). */
static bool job_is_completed(Job *job)
{
    return job->status >= JOB_STATUS_WAITING;
}

static bool job_id_valid(const char *id)
{
    if (!id || !g_ascii_isalpha(id[0]))
        return false;
    for (const char *p = id; *p; p++)
        if (!g_ascii_isalnum(*p) && !strchr("-._", *p))
            return false;
    return true;
}

JobTxn *job_txn_new(void)
{
    JobTxn *txn = g_new0(JobTxn, 1);
    txn->refcount = 1;
    return txn;
}

static void job_txn_unref_locked(JobTxn *txn)
{
    if (txn && --txn->refcount == 0) {
        g_assert(txn->jobs == NULL);
        g_free(txn);
    }
}

void job_txn_unref(JobTxn *txn)
{
    g_mutex_lock(&job_mutex);
    job_txn_unref_locked(txn);
    g_mutex_unlock(&job_mutex);
}

static Job *job_find_locked(const char *id)
{
    for (guint i = 0; jobs && i < jobs->len; i++) {
        Job *job = jobs->pdata[i];
        if (strcmp(job->id, id) == 0)
            return job;
    }
    return NULL;
}

Job *job_create(const char *id, const JobDriver *drv, void *opaque, JobTxn *txn,
                bool auto_finalize, bool auto_dismiss, GError **errp)
{
    if (!job_id_valid(id)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Invalid job ID '%s'", id ? id : "");
        return NULL;
    }
    g_mutex_lock(&job_mutex);
    if (job_find_locked(id)) {
        g_mutex_unlock(&job_mutex);
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_EXISTS, "Job ID '%s' already in use", id);
        return NULL;
    }
    Job *job = g_new0(Job, 1);
    job->id = g_strdup(id);
    job->drv = drv;
    job->opaque = opaque;
    job->auto_finalize = auto_finalize;
    job->auto_dismiss = auto_dismiss;
    job->busy = false;
    g_cond_init(&job->cond);
    job->txn = txn ? txn : job_txn_new();
    if (txn)
        txn->refcount++;
    job->txn->jobs = g_list_prepend(job->txn->jobs, job);
    if (!jobs)
        jobs = g_ptr_array_new();
    g_ptr_array_add(jobs, job);
    job_state_transition(job, JOB_STATUS_CREATED);
    g_mutex_unlock(&job_mutex);
    return job;
}

static void job_free(Job *job)
{
    if (job->drv->free)
        job->drv->free(job);
    g_cond_clear(&job->cond);
    g_free(job->error);
    g_free(job->id);
    g_free(job);
}

/* created/concluded -> null: the job leaves every query. */
static void job_do_dismiss(Job *job)
{
    job_state_transition(job, JOB_STATUS_NULL);
    g_ptr_array_remove(jobs, job);
    job_free(job);
}

static void job_txn_del_job(Job *job)
{
    if (!job->txn)
        return;
    job->txn->jobs = g_list_remove(job->txn->jobs, job);
    job_txn_unref_locked(job->txn);
    job->txn = NULL;
}

static bool job_is_cancelled_locked(Job *job)
{
    /* Jobs without their own soft-cancel behave as force-cancelled. */
    return job->cancelled && job->force_cancel;
}

static void job_update_rc(Job *job)
{
    if (!job->ret && job_is_cancelled_locked(job))
        job->ret = -ECANCELED;
    if (job->ret) {
        if (!job->error)
            job->error = g_strdup(g_strerror(-job->ret));
        job_state_transition(job, JOB_STATUS_ABORTING);
    }
}

static void job_finalize_single(Job *job)
{
    job_update_rc(job);
    if (!job->ret) {
        if (job->drv->commit)
            job->drv->commit(job);
    } else if (job->drv->abort) {
        job->drv->abort(job);
    }
    if (job->drv->clean)
        job->drv->clean(job);
    /* Once per job, as its end is decided (the events below say the same). */
    const char *type = JobType_str[job->drv->type];
    if (job_is_cancelled_locked(job))
        g_info("job '%s' (%s) cancelled", job->id, type);
    else if (job->ret)
        g_message("job '%s' (%s) failed: %s", job->id, type, job->error);
    else
        g_info("job '%s' (%s) completed", job->id, type);
    if (job->started && job->drv->is_block_job) {
        JsonObject *d = block_job_event_data(job);
        if (job_is_cancelled_locked(job)) {
            emit("BLOCK_JOB_CANCELLED", d);
        } else {
            if (job->ret)
                json_object_set_string_member(d, "error", job->error);
            emit("BLOCK_JOB_COMPLETED", d);
        }
    }
    job_txn_del_job(job);
    job_state_transition(job, JOB_STATUS_CONCLUDED);
    if (job->auto_dismiss || !job->started)
        job_do_dismiss(job);
}

/* Finalises every member once none is still running (QEMU waits for them
 * synchronously; here the last one to finish calls this again). */
static void job_txn_abort_progress(JobTxn *txn)
{
    for (GList *l = txn->jobs; l; l = l->next) {
        Job *other = l->data;
        if (other->started && !job_is_completed(other))
            return;
    }
    txn->refcount++;
    while (txn->jobs)
        job_finalize_single(txn->jobs->data);
    job_txn_unref_locked(txn);
}

static void job_cancel_async(Job *job, bool force)
{
    if (job->user_paused) {
        job->user_paused = false;
        g_assert(job->pause_count > 0);
        job->pause_count--;
    }
    /* Without a .cancel of its own a job behaves as force-cancelled. */
    force = job->drv->cancel ? job->drv->cancel(job, force) : true;
    if (!job->cancelled) {
        job->cancelled = true;
        job->force_cancel = force;
    } else {
        job->force_cancel |= force;
    }
    g_cond_broadcast(&job->cond);
    if (job->drv->kick)
        job->drv->kick(job);
}

static void job_completed_txn_abort(Job *job)
{
    JobTxn *txn = job->txn;
    if (txn->aborting)
        return; /* another member is already handling the transaction */
    txn->aborting = true;
    for (GList *l = txn->jobs; l; l = l->next)
        if (l->data != job)
            job_cancel_async(l->data, true);
    job_txn_abort_progress(txn);
}

static void job_do_finalize(Job *job)
{
    JobTxn *txn = job->txn;
    GList *members = g_list_copy(txn->jobs);
    int rc = 0;
    for (GList *l = members; l && rc == 0; l = l->next) {
        Job *m = l->data;
        if (!m->ret && m->drv->prepare)
            m->ret = m->drv->prepare(m);
        job_update_rc(m);
        rc = m->ret;
    }
    if (rc) {
        Job *failed = NULL;
        for (GList *l = members; l; l = l->next)
            if (((Job *)l->data)->ret)
                failed = l->data;
        g_list_free(members);
        job_completed_txn_abort(failed ? failed : job);
        return;
    }
    g_list_free(members);
    txn->refcount++;
    while (txn->jobs)
        job_finalize_single(txn->jobs->data);
    job_txn_unref_locked(txn);
}

static void job_completed_txn_success(Job *job)
{
    JobTxn *txn = job->txn;
    job_state_transition(job, JOB_STATUS_WAITING);
    for (GList *l = txn->jobs; l; l = l->next)
        if (!job_is_completed(l->data))
            return;
    bool needs_finalize = false;
    for (GList *l = txn->jobs; l; l = l->next) {
        Job *m = l->data;
        job_state_transition(m, JOB_STATUS_PENDING);
        if (!m->auto_finalize) {
            needs_finalize = true;
            if (m->drv->is_block_job) {
                JsonObject *d = json_object_new();
                json_object_set_string_member(d, "type", JobType_str[m->drv->type]);
                json_object_set_string_member(d, "id", m->id);
                emit("BLOCK_JOB_PENDING", d);
            }
        }
    }
    if (!needs_finalize)
        job_do_finalize(job);
}

static void job_completed(Job *job)
{
    job_update_rc(job);
    if (job->ret) {
        if (job->txn->aborting)
            job_txn_abort_progress(job->txn);
        else
            job_completed_txn_abort(job);
    } else {
        job_completed_txn_success(job);
    }
}

/* Main loop: the job's thread returned from run(). */
static gboolean job_exit_cb(gpointer p)
{
    Job *job = p;
    g_thread_join(job->thread);
    g_mutex_lock(&job_mutex);
    job->thread = NULL;
    job->busy = false;
    job_completed(job);
    g_mutex_unlock(&job_mutex);
    return G_SOURCE_REMOVE;
}

static gpointer job_thread(gpointer p)
{
    Job *job = p;
    GError *err = NULL;
    int ret = job->drv->run(job, &err);
    g_mutex_lock(&job_mutex);
    job->ret = ret;
    /* query-jobs shows the message without its hint (a second line), as QMP's desc. */
    if (ret && ret != -ECANCELED && err && !job->error)
        job->error = g_strndup(err->message, strcspn(err->message, "\n"));
    g_mutex_unlock(&job_mutex);
    g_clear_error(&err);
    g_idle_add(job_exit_cb, job);
    return NULL;
}

void job_start(Job *job)
{
    g_mutex_lock(&job_mutex);
    g_assert(job->status == JOB_STATUS_CREATED);
    job->started = true;
    job->busy = true;
    job_state_transition(job, JOB_STATUS_RUNNING);
    g_autofree char *name = g_strdup_printf("job-%.10s", job->id);
    job->thread = g_thread_new(name, job_thread, job);
    g_mutex_unlock(&job_mutex);
}

void job_early_fail(Job *job)
{
    g_mutex_lock(&job_mutex);
    g_assert(job->status == JOB_STATUS_CREATED && !job->started);
    job->ret = -ECANCELED;
    if (job->drv->abort)
        job->drv->abort(job);
    if (job->drv->clean)
        job->drv->clean(job);
    job_txn_del_job(job);
    job_do_dismiss(job);
    g_mutex_unlock(&job_mutex);
}

Job *job_find(const char *id)
{
    g_mutex_lock(&job_mutex);
    Job *job = job_find_locked(id);
    g_mutex_unlock(&job_mutex);
    return job;
}

GPtrArray *job_list(void)
{
    GPtrArray *list = g_ptr_array_new();
    g_mutex_lock(&job_mutex);
    for (guint i = 0; jobs && i < jobs->len; i++)
        g_ptr_array_add(list, jobs->pdata[i]);
    g_mutex_unlock(&job_mutex);
    return list;
}

static void job_wake(Job *job)
{
    job->kicked = true;
    g_cond_broadcast(&job->cond);
    if (job->drv->kick)
        job->drv->kick(job);
}

bool job_user_pause(Job *job, GError **errp)
{
    g_mutex_lock(&job_mutex);
    bool ok = job_apply_verb(job, JOB_VERB_PAUSE, errp);
    if (ok && job->user_paused) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "Job is already paused");
        ok = false;
    }
    if (ok) {
        job->user_paused = true;
        job->pause_count++;
        job_wake(job);
    }
    g_mutex_unlock(&job_mutex);
    return ok;
}

static void job_resume_locked(Job *job)
{
    g_assert(job->pause_count > 0);
    job->pause_count--;
    if (job->pause_count == 0)
        job_wake(job);
}

bool job_user_resume(Job *job, GError **errp)
{
    g_mutex_lock(&job_mutex);
    bool ok = true;
    if (!job->user_paused) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "Can't resume a job that was not paused");
        ok = false;
    } else if ((ok = job_apply_verb(job, JOB_VERB_RESUME, errp))) {
        job->user_paused = false;
        job->io_status = BLOCK_DEVICE_IO_STATUS_OK; /* block_job_user_resume resets it */
        job_resume_locked(job);
    }
    g_mutex_unlock(&job_mutex);
    return ok;
}

bool job_user_cancel(Job *job, bool force, GError **errp)
{
    g_mutex_lock(&job_mutex);
    bool ok = job_apply_verb(job, JOB_VERB_CANCEL, errp);
    if (ok) {
        job_cancel_async(job, force);
        if (!job->started) {
            job_completed(job);
        } else if (job_is_completed(job)) {
            if (job_is_cancelled_locked(job))
                job_completed_txn_abort(job);
        }
    }
    g_mutex_unlock(&job_mutex);
    return ok;
}

bool job_complete(Job *job, GError **errp)
{
    g_mutex_lock(&job_mutex);
    bool ok = job_apply_verb(job, JOB_VERB_COMPLETE, errp);
    if (ok && (job->cancelled || !job->drv->complete)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "The active block job '%s' cannot be completed", job->id);
        ok = false;
    }
    g_mutex_unlock(&job_mutex);
    /* Unlocked, as QEMU: the driver kicks its thread. */
    return ok && job->drv->complete(job, errp);
}

bool job_finalize(Job *job, GError **errp)
{
    g_mutex_lock(&job_mutex);
    bool ok = job_apply_verb(job, JOB_VERB_FINALIZE, errp);
    if (ok)
        job_do_finalize(job);
    g_mutex_unlock(&job_mutex);
    return ok;
}

bool job_dismiss(Job *job, GError **errp)
{
    g_mutex_lock(&job_mutex);
    bool ok = job_apply_verb(job, JOB_VERB_DISMISS, errp);
    if (ok)
        job_do_dismiss(job);
    g_mutex_unlock(&job_mutex);
    return ok;
}

static void job_set_speed_locked(Job *job, int64_t speed)
{
    job->speed = speed;
    rate_limit_set_speed(&job->rate, (uint64_t)speed, g_get_monotonic_time() * 1000);
}

bool job_set_speed(Job *job, int64_t speed, GError **errp)
{
    g_mutex_lock(&job_mutex);
    bool ok = job_apply_verb(job, JOB_VERB_SET_SPEED, errp);
    if (ok && speed < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameter 'speed' expects a non-negative value");
        ok = false;
    }
    if (ok) {
        job_set_speed_locked(job, speed);
        job_wake(job);
    }
    g_mutex_unlock(&job_mutex);
    return ok;
}

void job_get_snapshot(Job *job, JobSnapshot *info)
{
    g_mutex_lock(&job_mutex);
    info->id = g_strdup(job->id);
    info->type = job->drv->type;
    info->status = job->status;
    info->is_block_job = job->drv->is_block_job;
    info->current = progress_get(&job->progress_current);
    info->total = progress_get(&job->progress_total);
    info->speed = job->speed;
    info->busy = job->busy;
    info->paused = job->pause_count > 0;
    info->ready = job->status == JOB_STATUS_READY || job->status == JOB_STATUS_STANDBY;
    info->io_status = job->io_status;
    info->auto_finalize = job->auto_finalize;
    info->auto_dismiss = job->auto_dismiss;
    info->error = job->status >= JOB_STATUS_ABORTING && job->error ? g_strdup(job->error) : NULL;
    g_mutex_unlock(&job_mutex);
}

void job_snapshot_clear(JobSnapshot *info)
{
    g_free(info->id);
    g_free(info->error);
    memset(info, 0, sizeof(*info));
}

const char *job_id(Job *job) { return job->id; }
void *job_opaque(Job *job) { return job->opaque; }
const JobDriver *job_driver(Job *job) { return job->drv; }

JobStatus job_status(Job *job)
{
    g_mutex_lock(&job_mutex);
    JobStatus s = job->status;
    g_mutex_unlock(&job_mutex);
    return s;
}

bool job_user_paused(Job *job)
{
    g_mutex_lock(&job_mutex);
    bool p = job->user_paused;
    g_mutex_unlock(&job_mutex);
    return p;
}

bool job_is_cancelled(Job *job)
{
    g_mutex_lock(&job_mutex);
    bool c = job_is_cancelled_locked(job);
    g_mutex_unlock(&job_mutex);
    return c;
}

bool job_cancel_requested(Job *job)
{
    g_mutex_lock(&job_mutex);
    bool c = job->cancelled;
    g_mutex_unlock(&job_mutex);
    return c;
}

void job_transition_to_ready(Job *job)
{
    g_mutex_lock(&job_mutex);
    if (job->status == JOB_STATUS_RUNNING) {
        job_state_transition(job, JOB_STATUS_READY);
        emit("BLOCK_JOB_READY", block_job_event_data(job));
    }
    g_mutex_unlock(&job_mutex);
}

bool job_pause_requested(Job *job)
{
    g_mutex_lock(&job_mutex);
    bool p = job->pause_count > 0 && !job->cancelled;
    g_mutex_unlock(&job_mutex);
    return p;
}

bool job_pause_point(Job *job)
{
    g_mutex_lock(&job_mutex);
    if (job->pause_count > 0 && !job->cancelled) {
        JobStatus was = job->status;
        job_state_transition(job, was == JOB_STATUS_READY ? JOB_STATUS_STANDBY : JOB_STATUS_PAUSED);
        job->paused = true;
        job->busy = false;
        while (job->pause_count > 0 && !job->cancelled)
            g_cond_wait(&job->cond, &job_mutex);
        job->paused = false;
        job->busy = true;
        job_state_transition(job, was);
    }
    bool go_on = !job->cancelled;
    g_mutex_unlock(&job_mutex);
    return go_on;
}

/* Waits until `deadline` (monotonic ns) or until woken by cancel, pause or kick. */
static void job_wait_until_locked(Job *job, int64_t deadline_ns)
{
    job->kicked = false;
    job->busy = false;
    while (!job->kicked && !job->cancelled && job->pause_count == 0) {
        int64_t now = g_get_monotonic_time() * 1000;
        if (now >= deadline_ns)
            break;
        g_cond_wait_until(&job->cond, &job_mutex, deadline_ns / 1000);
    }
    job->busy = true;
}

void job_rate_limit(Job *job, uint64_t bytes)
{
    g_mutex_lock(&job_mutex);
    if (job->rate.speed) {
        int64_t now = g_get_monotonic_time() * 1000;
        int64_t next = rate_limit_account(&job->rate, bytes, now);
        if (next > now)
            job_wait_until_locked(job, next);
    }
    g_mutex_unlock(&job_mutex);
}

uint64_t job_rate_chunk(Job *job, uint64_t unit)
{
    g_mutex_lock(&job_mutex);
    uint64_t chunk = rate_limit_chunk(&job->rate, unit);
    g_mutex_unlock(&job_mutex);
    return chunk;
}

void job_sleep_ms(Job *job, unsigned ms)
{
    g_mutex_lock(&job_mutex);
    job_wait_until_locked(job, (g_get_monotonic_time() + (int64_t)ms * 1000) * 1000);
    g_mutex_unlock(&job_mutex);
}

void job_kick(Job *job)
{
    g_mutex_lock(&job_mutex);
    job->kicked = true;
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job_mutex);
}

void job_progress_add(Job *job, uint64_t done)
{
    __atomic_add_fetch(&job->progress_current, done, __ATOMIC_RELAXED);
}

void job_progress_set_total(Job *job, uint64_t total)
{
    __atomic_store_n(&job->progress_total, total, __ATOMIC_RELAXED);
}

void job_progress_add_total(Job *job, uint64_t more)
{
    __atomic_add_fetch(&job->progress_total, more, __ATOMIC_RELAXED);
}

BlockErrorAction job_handle_error(Job *job, BlockdevOnError policy, bool is_read, int errnum)
{
    BlockErrorAction action;
    switch (policy) {
    case BLOCKDEV_ON_ERROR_ENOSPC:
    case BLOCKDEV_ON_ERROR_AUTO:
        action = errnum == ENOSPC ? BLOCK_ERROR_ACTION_STOP : BLOCK_ERROR_ACTION_REPORT;
        break;
    case BLOCKDEV_ON_ERROR_STOP:
        action = BLOCK_ERROR_ACTION_STOP;
        break;
    case BLOCKDEV_ON_ERROR_IGNORE:
        action = BLOCK_ERROR_ACTION_IGNORE;
        break;
    default:
        action = BLOCK_ERROR_ACTION_REPORT;
        break;
    }
    g_mutex_lock(&job_mutex);
    if (!job->user_paused) {
        JsonObject *d = json_object_new();
        json_object_set_string_member(d, "device", job->id);
        json_object_set_string_member(d, "operation", is_read ? "read" : "write");
        json_object_set_string_member(d, "action", BlockErrorAction_str[action]);
        emit("BLOCK_JOB_ERROR", d);
    }
    if (action == BLOCK_ERROR_ACTION_STOP) {
        if (!job->user_paused) {
            job->pause_count++;
            job->user_paused = true; /* resumed from QMP like a user pause */
        }
        if (job->io_status == BLOCK_DEVICE_IO_STATUS_OK)
            job->io_status = errnum == ENOSPC ? BLOCK_DEVICE_IO_STATUS_NOSPACE : BLOCK_DEVICE_IO_STATUS_FAILED;
    }
    g_mutex_unlock(&job_mutex);
    return action;
}

void job_shutdown_all(void)
{
    g_mutex_lock(&job_mutex);
    GPtrArray *snapshot = g_ptr_array_new();
    for (guint i = 0; jobs && i < jobs->len; i++)
        g_ptr_array_add(snapshot, jobs->pdata[i]);
    for (guint i = 0; i < snapshot->len; i++) {
        Job *job = snapshot->pdata[i];
        if (!g_ptr_array_find(jobs, job, NULL))
            continue; /* finalised with an earlier member of its transaction */
        job->auto_dismiss = true;
        if (job->status == JOB_STATUS_CONCLUDED) {
            job_do_dismiss(job);
        } else if (verb_allowed[JOB_VERB_CANCEL][job->status] && !job->cancelled) {
            job_cancel_async(job, true);
            if (!job->started)
                job_completed(job);
            else if (job_is_completed(job))
                job_completed_txn_abort(job);
        }
    }
    g_ptr_array_free(snapshot, TRUE);
    g_mutex_unlock(&job_mutex);
    /* Let the threads return and their completions run. */
    gint64 deadline = g_get_monotonic_time() + 30 * G_TIME_SPAN_SECOND;
    while (g_get_monotonic_time() < deadline) {
        g_mutex_lock(&job_mutex);
        guint left = jobs ? jobs->len : 0;
        g_mutex_unlock(&job_mutex);
        if (left == 0)
            break;
        g_main_context_iteration(NULL, FALSE);
        g_usleep(1000);
    }
    if (jobs && jobs->len == 0)
        g_clear_pointer(&jobs, g_ptr_array_unref);
}
