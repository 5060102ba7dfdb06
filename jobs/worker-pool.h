/* One pool of worker threads for every copy job.
 *
 * Backup's copy engine and mirror hand their chunks to the same threads
 * instead of each keeping a GThreadPool.  A job joins the pool as a
 * WorkerGroup with its own limit of chunks in flight (which the job still
 * enforces itself); the pool's thread limit is the sum of its groups'
 * limits, so a chunk never queues behind another job's (a chunk may wait
 * for work of another job: a backup of a mirror's target runs its
 * copy-before-write inside the mirror's chunks), and idle threads are
 * shared between jobs.  A group counts its tasks until each has returned,
 * so a job frees its state only after its last task is gone. */
#pragma once

typedef struct WorkerGroup WorkerGroup;
typedef void (*WorkerFn)(void *data);

/* Joins the pool with `max_inflight` tasks at most in flight (the caller
 * keeps to it: the pool only sizes its threads by it). */
WorkerGroup *worker_group_new(unsigned max_inflight);
/* Runs fn(data) on a pool thread. */
void worker_group_submit(WorkerGroup *g, WorkerFn fn, void *data);
/* Waits until every task of the group has returned, leaves the pool and
 * frees the group (NULL is ignored). */
void worker_group_free(WorkerGroup *g);
