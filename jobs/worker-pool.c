/* The copy jobs' worker pool (see jobs/worker-pool.h). */
#include "jobs/worker-pool.h"

#include <glib.h>

struct WorkerGroup {
    unsigned max_inflight;
    GMutex lock;
    GCond idle;        /* the last task returned */
    unsigned inflight; /* tasks submitted and not yet returned */
};

typedef struct WorkerTask {
    WorkerGroup *group;
    WorkerFn fn;
    void *data;
} WorkerTask;

static GMutex pool_lock;  /* the pool's creation and its thread limit */
static GThreadPool *pool; /* created on first use, kept until exit */
static unsigned pool_threads; /* sum of the groups' limits */

static void run_task(gpointer data, gpointer user_data)
{
    WorkerTask *t = data;
    WorkerGroup *g = t->group;
    t->fn(t->data);
    g_free(t);
    g_mutex_lock(&g->lock);
    if (--g->inflight == 0)
        g_cond_broadcast(&g->idle);
    g_mutex_unlock(&g->lock);
}

WorkerGroup *worker_group_new(unsigned max_inflight)
{
    WorkerGroup *g = g_new0(WorkerGroup, 1);
    g->max_inflight = MAX(max_inflight, 1u);
    g_mutex_init(&g->lock);
    g_cond_init(&g->idle);
    g_mutex_lock(&pool_lock);
    pool_threads += g->max_inflight;
    if (!pool)
        pool = g_thread_pool_new(run_task, NULL, (gint)pool_threads, FALSE, NULL);
    else
        g_thread_pool_set_max_threads(pool, (gint)pool_threads, NULL);
    /* A thread that leaves the pool (idle half a second, or above the
     * limit once a job ended) is parked by GLib for reuse, but only two of
     * them by default: the others exit, and the next job starts its
     * threads anew (a clone, a stack and a trip through GLib's spawner
     * thread each, which is most of a small incremental's set-up).  Parked
     * threads still exit after GLib's idle time. */
    if (g_thread_pool_get_max_unused_threads() < (gint)pool_threads)
        g_thread_pool_set_max_unused_threads((gint)pool_threads);
    g_mutex_unlock(&pool_lock);
    return g;
}

void worker_group_submit(WorkerGroup *g, WorkerFn fn, void *data)
{
    WorkerTask *t = g_new(WorkerTask, 1);
    *t = (WorkerTask){ g, fn, data };
    g_mutex_lock(&g->lock);
    g->inflight++;
    g_mutex_unlock(&g->lock);
    g_thread_pool_push(pool, t, NULL);
}

void worker_group_free(WorkerGroup *g)
{
    if (!g)
        return;
    g_mutex_lock(&g->lock);
    while (g->inflight > 0)
        g_cond_wait(&g->idle, &g->lock);
    g_mutex_unlock(&g->lock);
    g_mutex_lock(&pool_lock);
    pool_threads -= g->max_inflight;
    /* Threads above the new limit end once their task returned. */
    g_thread_pool_set_max_threads(pool, (gint)MAX(pool_threads, 1u), NULL);
    g_mutex_unlock(&pool_lock);
    g_mutex_clear(&g->lock);
    g_cond_clear(&g->idle);
    g_free(g);
}
