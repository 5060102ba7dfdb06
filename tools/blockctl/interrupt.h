/* SIGINT, SIGTERM and SIGHUP while a command waits on a job: noted, so the
 * command can cancel what it started and exit 128 + the signal number. */
#pragma once

/* From now on the three signals set a flag instead of killing blockctl (sleeps end early). */
void interrupt_catch(void);
/* The first caught signal's number, 0 if none. */
int interrupt_signal(void);
/* How many signals were caught (a second one gives up waiting for a cancel). */
int interrupt_count(void);
/* Sleeps up to `ms` milliseconds; returns early when a signal arrives. */
void interrupt_sleep(int ms);
