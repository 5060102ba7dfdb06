/*
 * ThreadSanitizer shim for GLib, linked into the daemon and the test
 * executables in the TSan build only (meson: b_sanitize=thread).
 *
 * Debian's GLib 2.74 implements GMutex and GCond with raw futexes, which
 * TSan cannot see: without this file every GMutex-protected access looks
 * like a race.  Here the executable interposes the GMutex/GCond entry points
 * (GLib's own callers are unaffected: libglib binds its internal calls
 * directly), calls the real function found with dlsym(RTLD_NEXT) and tells
 * TSan what happened with the __tsan_mutex_* API, so a GMutex gets real
 * mutex semantics: happens-before from unlock to lock, lock-order
 * (potential deadlock) checking, unlock-of-unlocked and destroy-of-locked
 * reports.
 *
 * Handovers that happen inside GLib (its internal locks are invisible) are
 * annotated the same way, each with __tsan_release before the handover and
 * __tsan_acquire where the other thread picks the data up:
 *  - g_once_init_enter/leave: the value and what it points to;
 *  - g_idle_add, g_timeout_add*, g_main_context_invoke*: the callback and
 *    its data, handed to the thread running the main context;
 *  - GThreadPool: a task's data handed to the worker, and the work done by
 *    the tasks handed back to g_thread_pool_free(..., wait_ = TRUE);
 *  - GAsyncQueue push/pop (the locking forms).
 * (Wrapped sources carry the wrapper as their user data: the
 * g_*_remove_by_data functions would not find them; blockd uses none.)
 * Everything else GLib offers for threads (GThread, GRWLock, GRecMutex,
 * GPrivate) is built on pthreads, which TSan intercepts itself.  GSlice
 * recycles memory between threads under its own locks: run with
 * G_SLICE=always-malloc (the tests' environment does).
 *
 * tests/tsan/tsan-selftest.c checks that a deliberate race is still reported
 * and that each of the handovers above is not.
 */
#include <dlfcn.h>
#include <glib.h>
#include <sanitizer/tsan_interface.h>
#include <stdio.h>
#include <stdlib.h>

/* The real GLib function NAME, looked up once (atomically: any thread may
 * be first). */
#define REAL(name)                                                                     \
    ({                                                                                 \
        static __typeof__(&name) real_##name;                                          \
        __typeof__(&name) fn = __atomic_load_n(&real_##name, __ATOMIC_RELAXED);        \
        if (!fn) {                                                                     \
            fn = (__typeof__(&name))dlsym(RTLD_NEXT, #name);                           \
            if (!fn) {                                                                 \
                fprintf(stderr, "glib-tsan: cannot find %s: %s\n", #name, dlerror());  \
                abort();                                                               \
            }                                                                          \
            __atomic_store_n(&real_##name, fn, __ATOMIC_RELAXED);                      \
        }                                                                              \
        fn;                                                                            \
    })

/* ---- GMutex ---- */

void g_mutex_init(GMutex *mutex)
{
    REAL(g_mutex_init)(mutex);
    __tsan_mutex_create(mutex, 0);
}

void g_mutex_clear(GMutex *mutex)
{
    __tsan_mutex_destroy(mutex, 0);
    REAL(g_mutex_clear)(mutex);
}

void g_mutex_lock(GMutex *mutex)
{
    __tsan_mutex_pre_lock(mutex, 0);
    REAL(g_mutex_lock)(mutex);
    __tsan_mutex_post_lock(mutex, 0, 0);
}

gboolean g_mutex_trylock(GMutex *mutex)
{
    __tsan_mutex_pre_lock(mutex, __tsan_mutex_try_lock);
    gboolean locked = REAL(g_mutex_trylock)(mutex);
    __tsan_mutex_post_lock(mutex, __tsan_mutex_try_lock | (locked ? 0 : __tsan_mutex_try_lock_failed), 0);
    return locked;
}

void g_mutex_unlock(GMutex *mutex)
{
    __tsan_mutex_pre_unlock(mutex, 0);
    REAL(g_mutex_unlock)(mutex);
    __tsan_mutex_post_unlock(mutex, 0);
}

/* ---- GCond ----
 * As TSan's own pthread_cond_* interceptors: waiting unlocks and relocks the
 * mutex; signalling gives no happens-before by itself (the data is handed
 * over by the mutex, as it must be with spurious wake-ups). */

static void cond_wait_release(GMutex *mutex)
{
    __tsan_mutex_pre_unlock(mutex, 0);
    __tsan_mutex_post_unlock(mutex, 0);
}

static void cond_wait_reacquire(GMutex *mutex)
{
    __tsan_mutex_pre_lock(mutex, 0);
    __tsan_mutex_post_lock(mutex, 0, 0);
}

void g_cond_wait(GCond *cond, GMutex *mutex)
{
    cond_wait_release(mutex);
    REAL(g_cond_wait)(cond, mutex);
    cond_wait_reacquire(mutex);
}

gboolean g_cond_wait_until(GCond *cond, GMutex *mutex, gint64 end_time)
{
    cond_wait_release(mutex);
    gboolean signalled = REAL(g_cond_wait_until)(cond, mutex, end_time);
    cond_wait_reacquire(mutex);
    return signalled;
}

/* g_cond_signal and g_cond_broadcast need nothing: they touch no data that
 * TSan tracks and order nothing on their own. */

/* ---- g_once_init_enter/leave (parenthesised: they are also macros) ----
 * The fast path (the g_once_init_enter macro) is an instrumented atomic
 * acquire load of *location; it pairs with the release here.  A thread that
 * waited in GLib for another's initialisation acquires when it returns. */

gboolean (g_once_init_enter)(volatile void *location)
{
    gboolean first = REAL(g_once_init_enter)(location);
    if (!first)
        __tsan_acquire((void *)location);
    return first;
}

void (g_once_init_leave)(volatile void *location, gsize result)
{
    __tsan_release((void *)location);
    REAL(g_once_init_leave)(location, result);
}

/* ---- GLib's own memory in a handover ----
 * Handing something over, GLib allocates memory of its own (a GSource, a
 * queue link) in the sending thread and frees it in the receiving thread
 * before the receiver reaches code of ours that could acquire: TSan sees
 * the malloc and the free (it intercepts them) but not the lock between
 * them.  While the real call runs, this thread's memory accesses are ignored
 * (__tsan_ignore_thread_begin), so that memory starts out unowned; only
 * GLib's own work is hidden, since no code of ours runs there -- except a
 * callback that g_main_context_invoke runs at once, for which
 * source_hop_dispatch lifts the ignore.  Synchronisation is not ignored. */

void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);

static __thread int in_glib_handover;

#define GLIB_HANDOVER(call)                                                            \
    ({                                                                                 \
        __tsan_ignore_thread_begin();                                 \
        in_glib_handover++;                                                            \
        __typeof__(call) result_ = (call);                                             \
        in_glib_handover--;                                                            \
        __tsan_ignore_thread_end();                                   \
        result_;                                                                       \
    })

#define GLIB_HANDOVER_VOID(call)                                                       \
    do {                                                                               \
        __tsan_ignore_thread_begin();                                 \
        in_glib_handover++;                                                            \
        call;                                                                          \
        in_glib_handover--;                                                            \
        __tsan_ignore_thread_end();                                   \
    } while (0)

/* ---- Main-context callbacks ----
 * The callback and its data are wrapped; the thread that adds the source
 * releases the wrapper, the thread that runs (or destroys) it acquires.
 * Callbacks run by one context are also ordered after each other, as GLib
 * orders them by the context's ownership (g_main_context_acquire, also
 * invisible): g_main_context_invoke runs the callback in the calling thread
 * when it can take the context, otherwise the owner runs it later. */

typedef struct {
    GSourceFunc func;
    gpointer data;
    GDestroyNotify notify;
    GMainContext *context;
} SourceHop;

static SourceHop *source_hop(GMainContext *context, GSourceFunc func, gpointer data,
                             GDestroyNotify notify)
{
    SourceHop *hop = g_new(SourceHop, 1);
    hop->func = func;
    hop->data = data;
    hop->notify = notify;
    hop->context = context ? context : g_main_context_default();
    __tsan_release(hop);
    return hop;
}

static gboolean source_hop_dispatch(gpointer p)
{
    SourceHop *hop = p;
    int ignored = in_glib_handover;     /* run at once by g_main_context_invoke */
    for (int i = 0; i < ignored; i++)
        __tsan_ignore_thread_end();
    in_glib_handover = 0;
    __tsan_acquire(hop);
    __tsan_acquire(hop->context);
    gboolean again = hop->func(hop->data);
    __tsan_release(hop->context);
    __tsan_release(hop);
    in_glib_handover = ignored;
    for (int i = 0; i < ignored; i++)
        __tsan_ignore_thread_begin();
    return again;
}

static void source_hop_free(gpointer p)
{
    SourceHop *hop = p;
    int ignored = in_glib_handover;     /* as above */
    for (int i = 0; i < ignored; i++)
        __tsan_ignore_thread_end();
    in_glib_handover = 0;
    __tsan_acquire(hop);
    if (hop->notify)
        hop->notify(hop->data);
    g_free(hop);
    in_glib_handover = ignored;
    for (int i = 0; i < ignored; i++)
        __tsan_ignore_thread_begin();
}

guint g_idle_add_full(gint priority, GSourceFunc function, gpointer data, GDestroyNotify notify)
{
    SourceHop *hop = source_hop(NULL, function, data, notify);
    return GLIB_HANDOVER(REAL(g_idle_add_full)(priority, source_hop_dispatch, hop, source_hop_free));
}

guint g_idle_add(GSourceFunc function, gpointer data)
{
    return g_idle_add_full(G_PRIORITY_DEFAULT_IDLE, function, data, NULL);
}

guint g_timeout_add_full(gint priority, guint interval, GSourceFunc function, gpointer data,
                         GDestroyNotify notify)
{
    SourceHop *hop = source_hop(NULL, function, data, notify);
    return GLIB_HANDOVER(REAL(g_timeout_add_full)(priority, interval, source_hop_dispatch, hop,
                                                  source_hop_free));
}

guint g_timeout_add(guint interval, GSourceFunc function, gpointer data)
{
    return g_timeout_add_full(G_PRIORITY_DEFAULT, interval, function, data, NULL);
}

guint g_timeout_add_seconds_full(gint priority, guint interval, GSourceFunc function, gpointer data,
                                 GDestroyNotify notify)
{
    SourceHop *hop = source_hop(NULL, function, data, notify);
    return GLIB_HANDOVER(REAL(g_timeout_add_seconds_full)(priority, interval, source_hop_dispatch,
                                                          hop, source_hop_free));
}

guint g_timeout_add_seconds(guint interval, GSourceFunc function, gpointer data)
{
    return g_timeout_add_seconds_full(G_PRIORITY_DEFAULT, interval, function, data, NULL);
}

void g_main_context_invoke_full(GMainContext *context, gint priority, GSourceFunc function,
                                gpointer data, GDestroyNotify notify)
{
    SourceHop *hop = source_hop(context, function, data, notify);
    GLIB_HANDOVER_VOID(REAL(g_main_context_invoke_full)(context, priority, source_hop_dispatch, hop,
                                                        source_hop_free));
}

void g_main_context_invoke(GMainContext *context, GSourceFunc function, gpointer data)
{
    g_main_context_invoke_full(context, G_PRIORITY_DEFAULT, function, data, NULL);
}

/* ---- GThreadPool ----
 * The pool's function and user data are wrapped (GThreadPool's public
 * func/user_data fields then name the wrapper).  A push releases the
 * wrapper and the worker acquires it before the task; the worker releases
 * it after the task and g_thread_pool_free acquires it, since with wait_ it
 * returns only after the tasks ran. */

typedef struct {
    GFunc func;
    gpointer user_data;
} PoolHop;

static void pool_hop_run(gpointer data, gpointer p)
{
    PoolHop *hop = p;
    __tsan_acquire(hop);
    hop->func(data, hop->user_data);
    __tsan_release(hop);
}

static GThreadPool *pool_new(GFunc func, gpointer user_data, GDestroyNotify item_free,
                             gint max_threads, gboolean exclusive, GError **error)
{
    PoolHop *hop = g_new(PoolHop, 1);
    hop->func = func;
    hop->user_data = user_data;
    __tsan_release(hop);
    GThreadPool *pool = REAL(g_thread_pool_new_full)(pool_hop_run, hop, item_free, max_threads,
                                                     exclusive, error);
    if (!pool)
        g_free(hop);
    return pool;
}

GThreadPool *g_thread_pool_new_full(GFunc func, gpointer user_data, GDestroyNotify item_free_func,
                                    gint max_threads, gboolean exclusive, GError **error)
{
    return pool_new(func, user_data, item_free_func, max_threads, exclusive, error);
}

GThreadPool *g_thread_pool_new(GFunc func, gpointer user_data, gint max_threads,
                               gboolean exclusive, GError **error)
{
    return pool_new(func, user_data, NULL, max_threads, exclusive, error);
}

/* The wrapper, read from GLib's pool structure, which GLib itself frees in
 * whichever worker leaves the pool last: the read is ignored like GLib's own
 * (uninstrumented) reads of it. */
static PoolHop *pool_hop(GThreadPool *pool)
{
    __tsan_ignore_thread_begin();
    PoolHop *hop = pool->user_data;
    __tsan_ignore_thread_end();
    return hop;
}

gboolean g_thread_pool_push(GThreadPool *pool, gpointer data, GError **error)
{
    __tsan_release(pool_hop(pool));
    return GLIB_HANDOVER(REAL(g_thread_pool_push)(pool, data, error));
}

void g_thread_pool_free(GThreadPool *pool, gboolean immediate, gboolean wait_)
{
    PoolHop *hop = pool_hop(pool);
    /* It queues wake-ups for the workers, which they free. */
    GLIB_HANDOVER_VOID(REAL(g_thread_pool_free)(pool, immediate, wait_));
    if (wait_) {
        __tsan_acquire(hop);
        g_free(hop);
    }
    /* Without wait_ queued tasks may still run: the wrapper is left (a few
     * bytes, TSan builds only). */
}

/* ---- GAsyncQueue ----
 * The queue's mutex orders every pop after the pushes before it. */

void g_async_queue_push(GAsyncQueue *queue, gpointer data)
{
    __tsan_release(queue);
    GLIB_HANDOVER_VOID(REAL(g_async_queue_push)(queue, data));
}

void g_async_queue_push_front(GAsyncQueue *queue, gpointer item)
{
    __tsan_release(queue);
    GLIB_HANDOVER_VOID(REAL(g_async_queue_push_front)(queue, item));
}

gpointer g_async_queue_pop(GAsyncQueue *queue)
{
    gpointer data = REAL(g_async_queue_pop)(queue);
    __tsan_acquire(queue);
    return data;
}

gpointer g_async_queue_try_pop(GAsyncQueue *queue)
{
    gpointer data = REAL(g_async_queue_try_pop)(queue);
    __tsan_acquire(queue);
    return data;
}

gpointer g_async_queue_timeout_pop(GAsyncQueue *queue, guint64 timeout)
{
    gpointer data = REAL(g_async_queue_timeout_pop)(queue, timeout);
    __tsan_acquire(queue);
    return data;
}
