/* Unit tests of the job state machine (jobs/job.c): transitions and their
 * events, verbs per state, pause/resume/cancel, transactions (grouped
 * success with manual finalize, failure cancelling the others), error
 * policies and the rate limiter. */
#include "jobs/job.h"

#include <errno.h>
#include <string.h>

static GMutex events_lock;
static GPtrArray *events; /* "EVENT id detail" strings */

static void record(const char *name, JsonObject *data)
{
    GString *s = g_string_new(name);
    const char *keys[] = { "id", "device", "status", "action", "operation", "error" };
    for (size_t i = 0; i < G_N_ELEMENTS(keys); i++)
        if (json_object_has_member(data, keys[i]))
            g_string_append_printf(s, " %s", json_object_get_string_member(data, keys[i]));
    g_mutex_lock(&events_lock);
    g_ptr_array_add(events, g_string_free(s, FALSE));
    g_mutex_unlock(&events_lock);
}

/* All events so far joined with ", ", then forgotten. */
static char *take_events(void)
{
    g_mutex_lock(&events_lock);
    g_ptr_array_add(events, NULL);
    char *s = g_strjoinv(", ", (char **)events->pdata);
    g_ptr_array_set_size(events, 0);
    g_mutex_unlock(&events_lock);
    return s;
}

typedef struct TestWork {
    gint finish;  /* set to let run() return */
    int result;   /* what run() returns once finished */
    int fail_with; /* if non-zero, report this errno through the error policy first */
    BlockdevOnError policy;
    gint committed, aborted;
} TestWork;

static int test_run(Job *job, GError **errp)
{
    TestWork *w = job_opaque(job);
    job_progress_set_total(job, 100);
    for (;;) {
        if (w->fail_with) {
            BlockErrorAction a = job_handle_error(job, w->policy, false, w->fail_with);
            if (a == BLOCK_ERROR_ACTION_REPORT)
                return -w->fail_with;
            w->fail_with = 0; /* the retry after stop/ignore succeeds */
        }
        if (!job_pause_point(job))
            return -ECANCELED;
        if (g_atomic_int_get(&w->finish)) {
            job_progress_add(job, 100);
            return w->result;
        }
        job_sleep_ms(job, 2);
    }
}

static void test_commit(Job *job) { g_atomic_int_inc(&((TestWork *)job_opaque(job))->committed); }
static void test_abort(Job *job) { g_atomic_int_inc(&((TestWork *)job_opaque(job))->aborted); }

static const JobDriver test_driver = {
    .type = JOB_TYPE_BACKUP, .is_block_job = true,
    .run = test_run, .commit = test_commit, .abort = test_abort,
};

/* Runs the main loop until `id` has status `want` (JOB_STATUS_NULL: gone). */
static void wait_state(const char *id, JobStatus want)
{
    gint64 deadline = g_get_monotonic_time() + 10 * G_TIME_SPAN_SECOND;
    for (;;) {
        g_main_context_iteration(NULL, FALSE);
        Job *job = job_find(id);
        if (want == JOB_STATUS_NULL ? job == NULL : job && job_status(job) == want)
            return;
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        g_usleep(500);
    }
}

static Job *start(const char *id, TestWork *w, JobTxn *txn, bool auto_finalize, bool auto_dismiss)
{
    Job *job = job_create(id, &test_driver, w, txn, auto_finalize, auto_dismiss, NULL);
    g_assert_nonnull(job);
    job_start(job);
    return job;
}

static void test_lifecycle(void)
{
    TestWork w = { .result = 0 };
    g_autoptr(GError) err = NULL;
    g_assert_null(job_create("1bad", &test_driver, &w, NULL, true, true, &err));
    g_assert_cmpstr(err->message, ==, "Invalid job ID '1bad'");
    g_clear_error(&err);

    Job *job = start("j", &w, NULL, true, true);
    g_assert_null(job_create("j", &test_driver, &w, NULL, true, true, &err));
    g_assert_cmpstr(err->message, ==, "Job ID 'j' already in use");
    g_clear_error(&err);
    g_assert_false(job_complete(job, &err));
    g_assert_cmpstr(err->message, ==, "Job 'j' in state 'running' cannot accept command verb 'complete'");
    g_clear_error(&err);
    g_assert_false(job_dismiss(job, &err));
    g_clear_error(&err);
    g_assert_false(job_user_resume(job, &err));
    g_assert_cmpstr(err->message, ==, "Can't resume a job that was not paused");
    g_clear_error(&err);
    g_assert_false(job_set_speed(job, -1, &err));
    g_assert_cmpstr(err->message, ==, "Parameter 'speed' expects a non-negative value");
    g_clear_error(&err);

    g_assert_true(job_user_pause(job, NULL));
    wait_state("j", JOB_STATUS_PAUSED);
    g_assert_false(job_user_pause(job, &err));
    g_assert_cmpstr(err->message, ==, "Job is already paused");
    g_clear_error(&err);
    g_assert_true(job_user_resume(job, NULL));
    wait_state("j", JOB_STATUS_RUNNING);
    g_atomic_int_set(&w.finish, 1);
    wait_state("j", JOB_STATUS_NULL);
    g_autofree char *seq = take_events();
    g_assert_cmpstr(seq, ==, "JOB_STATUS_CHANGE j created, JOB_STATUS_CHANGE j running, "
                    "JOB_STATUS_CHANGE j paused, JOB_STATUS_CHANGE j running, "
                    "JOB_STATUS_CHANGE j waiting, JOB_STATUS_CHANGE j pending, BLOCK_JOB_COMPLETED j, "
                    "JOB_STATUS_CHANGE j concluded, JOB_STATUS_CHANGE j null");
    g_assert_cmpint(w.committed, ==, 1);
    g_assert_cmpint(w.aborted, ==, 0);
}

static void test_cancel_paused(void)
{
    TestWork w = { 0 };
    Job *job = start("c", &w, NULL, true, false);
    g_assert_true(job_user_pause(job, NULL));
    wait_state("c", JOB_STATUS_PAUSED);
    g_assert_true(job_user_cancel(job, false, NULL));
    wait_state("c", JOB_STATUS_CONCLUDED);
    JobSnapshot snap;
    job_get_snapshot(job, &snap);
    g_assert_cmpstr(snap.error, ==, "Operation canceled");
    job_snapshot_clear(&snap);
    g_assert_true(job_dismiss(job, NULL));
    g_autofree char *seq = take_events();
    g_assert_cmpstr(seq, ==, "JOB_STATUS_CHANGE c created, JOB_STATUS_CHANGE c running, "
                    "JOB_STATUS_CHANGE c paused, JOB_STATUS_CHANGE c running, "
                    "JOB_STATUS_CHANGE c aborting, BLOCK_JOB_CANCELLED c, "
                    "JOB_STATUS_CHANGE c concluded, JOB_STATUS_CHANGE c null");
    g_assert_cmpint(w.aborted, ==, 1);
}

static void test_txn_manual_finalize(void)
{
    TestWork a = { 0 }, b = { 0 };
    JobTxn *txn = job_txn_new();
    Job *ja = start("a", &a, txn, false, true);
    start("b", &b, txn, false, true);
    job_txn_unref(txn);
    g_atomic_int_set(&a.finish, 1);
    wait_state("a", JOB_STATUS_WAITING);
    g_atomic_int_set(&b.finish, 1);
    wait_state("b", JOB_STATUS_PENDING);
    g_assert_cmpint(job_status(ja), ==, JOB_STATUS_PENDING);
    g_assert_cmpint(a.committed + b.committed, ==, 0);
    g_free(take_events());
    g_assert_true(job_finalize(ja, NULL));
    wait_state("a", JOB_STATUS_NULL);
    wait_state("b", JOB_STATUS_NULL);
    g_assert_cmpint(a.committed + b.committed, ==, 2);
    g_autofree char *seq = take_events();
    /* Newest member first, as QEMU's transaction list. */
    g_assert_cmpstr(seq, ==, "BLOCK_JOB_COMPLETED b, JOB_STATUS_CHANGE b concluded, JOB_STATUS_CHANGE b null, "
                    "BLOCK_JOB_COMPLETED a, JOB_STATUS_CHANGE a concluded, JOB_STATUS_CHANGE a null");
}

static void test_txn_failure(void)
{
    TestWork ok = { 0 }, bad = { .result = -EIO };
    JobTxn *txn = job_txn_new();
    start("ok", &ok, txn, true, true);
    start("bad", &bad, txn, true, true);
    job_txn_unref(txn);
    g_free(take_events());
    g_atomic_int_set(&bad.finish, 1);
    wait_state("bad", JOB_STATUS_NULL);
    wait_state("ok", JOB_STATUS_NULL);
    g_assert_cmpint(ok.aborted, ==, 1);
    g_assert_cmpint(bad.aborted, ==, 1);
    g_autofree char *seq = take_events();
    g_assert_nonnull(strstr(seq, "BLOCK_JOB_COMPLETED bad Input/output error"));
    g_assert_nonnull(strstr(seq, "JOB_STATUS_CHANGE ok aborting"));
    g_assert_nonnull(strstr(seq, "BLOCK_JOB_CANCELLED ok"));
}

static void test_error_stop(void)
{
    TestWork w = { .fail_with = ENOSPC, .policy = BLOCKDEV_ON_ERROR_ENOSPC };
    Job *job = start("s", &w, NULL, true, true);
    wait_state("s", JOB_STATUS_PAUSED);
    JobSnapshot snap;
    job_get_snapshot(job, &snap);
    g_assert_cmpint(snap.io_status, ==, BLOCK_DEVICE_IO_STATUS_NOSPACE);
    g_assert_true(snap.paused);
    job_snapshot_clear(&snap);
    g_autoptr(GError) err = NULL;
    g_assert_false(job_user_pause(job, &err));
    g_assert_cmpstr(err->message, ==, "Job is already paused");
    g_assert_true(job_user_resume(job, NULL));
    g_atomic_int_set(&w.finish, 1);
    wait_state("s", JOB_STATUS_NULL);
    g_autofree char *seq = take_events();
    g_assert_cmpstr(seq, ==, "JOB_STATUS_CHANGE s created, JOB_STATUS_CHANGE s running, "
                    "BLOCK_JOB_ERROR s stop write, JOB_STATUS_CHANGE s paused, JOB_STATUS_CHANGE s running, "
                    "JOB_STATUS_CHANGE s waiting, JOB_STATUS_CHANGE s pending, BLOCK_JOB_COMPLETED s, "
                    "JOB_STATUS_CHANGE s concluded, JOB_STATUS_CHANGE s null");
}

static void test_rate_limit(void)
{
    TestWork w = { 0 };
    Job *job = job_create("r", &test_driver, &w, NULL, true, true, NULL);
    g_assert_true(job_set_speed(job, 10 << 20, NULL));
    /* 10 MiB/s: 4 MiB takes about 0.3 s after the first slice's worth. */
    gint64 t0 = g_get_monotonic_time();
    for (int i = 0; i < 64; i++)
        job_rate_limit(job, 64 << 10);
    gint64 elapsed = g_get_monotonic_time() - t0;
    g_assert_cmpint(elapsed, >, 200 * 1000);
    g_assert_cmpint(elapsed, <, 2 * G_TIME_SPAN_SECOND);
    g_assert_true(job_user_cancel(job, true, NULL)); /* never started: created -> null */
    wait_state("r", JOB_STATUS_NULL);
    g_free(take_events());
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    events = g_ptr_array_new_with_free_func(g_free);
    job_set_event_sink(record);
    g_test_add_func("/job/lifecycle", test_lifecycle);
    g_test_add_func("/job/cancel-paused", test_cancel_paused);
    g_test_add_func("/job/txn-manual-finalize", test_txn_manual_finalize);
    g_test_add_func("/job/txn-failure", test_txn_failure);
    g_test_add_func("/job/error-stop", test_error_stop);
    g_test_add_func("/job/rate-limit", test_rate_limit);
    int r = g_test_run();
    job_shutdown_all();
    g_ptr_array_unref(events);
    return r;
}
