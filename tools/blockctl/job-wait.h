/* Following a job that blockctl started until it ends: progress line,
 * cancel on a signal, dismissal.
 *
 * job_wait polls query-jobs until the status is `until` ("concluded", or
 * "ready" for a mirror), the job concluded or it disappeared (an
 * auto-dismissed job), drawing the copy or the mirror progress line.  A
 * signal caught meanwhile (interrupt.h) cancels the job, and the wait goes on
 * to its end; a second signal gives up waiting. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include "tools/blockctl/qmp-client.h"

typedef struct JobOutcome {
    char *status;   /* the status reached: `until`, "concluded", or "gone" (dismissed by the daemon) */
    char *error;    /* why the job failed (also "Operation canceled"), NULL if it did not */
    gint64 total;   /* total-progress when last seen */
    double seconds; /* time spent waiting */
    int signal;     /* the signal that made blockctl cancel the job, 0 if none */
} JobOutcome;

/* Follows job `id` to status `until` (or its end), cancelling it on a signal and dismissing it once concluded; true if it got there unharmed. */
bool job_wait(QmpClient *c, const char *id, const char *until, bool mirror, JobOutcome *out);
/* Frees the strings of *out. */
void job_outcome_clear(JobOutcome *out);
/* Registers a cleanup (cleanup.h) that cancels job `id`, waits for its end and dismisses it. */
unsigned job_cleanup_add(const char *id);
/* Dismisses a concluded job `id` left by an earlier run that ended before it could (with a note). */
void job_dismiss_stale(QmpClient *c, const char *id);
