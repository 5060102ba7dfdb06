/* The live progress line of a job, on stderr when it is a terminal:
 * redrawn in place, never wider than the terminal (fewer details, then no
 * bar, then the percentage alone as it gets narrower). */
#pragma once

#include <stdbool.h>
#include <glib.h>

typedef struct Progress {
    bool active;      /* stderr is a terminal */
    gint64 start_us;  /* monotonic time of progress_start */
    int drawn;        /* characters of the line on screen, 0 if none */
} Progress;

/* Starts timing; the line is drawn only if stderr is a terminal. */
void progress_start(Progress *p);
/* Draws a copy: bar, percentage, bytes done of total, rate, time left. */
void progress_copy(Progress *p, gint64 done, gint64 total);
/* Draws a mirror: bar, bytes still dirty, job status, bytes copied, rate. */
void progress_mirror(Progress *p, gint64 done, gint64 total, const char *status);
/* Ends the line (a newline if one is on screen). */
void progress_end(Progress *p);
/* Seconds since progress_start. */
double progress_seconds(const Progress *p);
