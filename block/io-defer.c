/* Deferred completions (see block/io-defer.h). */
#include "block/io-defer.h"

#include <glib.h>

struct IoDefer {
    GMutex lock;
    GCond cond;     /* pending reached 0 */
    gint pending;   /* atomic; lowered to 0 under lock */
    bool used;      /* something was added since the scope opened (owner's thread) */
};

static __thread IoDefer *current;

static void defer_free(gpointer p)
{
    IoDefer *d = p;
    g_mutex_clear(&d->lock);
    g_cond_clear(&d->cond);
    g_free(d);
}

/* A thread opens one scope at a time and waits for it before the next:
 * each keeps its scope for reuse (a batch of requests costs no allocation). */
static GPrivate spare = G_PRIVATE_INIT(defer_free);

IoDefer *io_defer_open(void)
{
    g_assert(current == NULL);
    IoDefer *d = g_private_get(&spare);
    if (d) {
        g_private_set(&spare, NULL);
    } else {
        d = g_new0(IoDefer, 1);
        g_mutex_init(&d->lock);
        g_cond_init(&d->cond);
    }
    d->used = false;
    current = d;
    return d;
}

bool io_defer_close(IoDefer *d)
{
    g_assert(current == d);
    current = NULL;
    return g_atomic_int_get(&d->pending) > 0;
}

void io_defer_wait(IoDefer *d)
{
    g_assert(current != d);
    /* Taking the lock also waits for a completion still signalling. */
    if (d->used) {
        g_mutex_lock(&d->lock);
        while (g_atomic_int_get(&d->pending) > 0)
            g_cond_wait(&d->cond, &d->lock);
        g_mutex_unlock(&d->lock);
    }
    if (!g_private_get(&spare))
        g_private_set(&spare, d);
    else
        defer_free(d);
}

IoDefer *io_defer_current(void)
{
    return current;
}

void io_defer_add(IoDefer *d)
{
    g_assert(current == d);
    d->used = true;
    g_atomic_int_inc(&d->pending);
}

void io_defer_done(IoDefer *d)
{
    /* All but the last completion only count down, without the lock: the
     * owner cannot see 0 (and free the scope) before the last one, so they
     * never touch a freed scope.  This runs once per write-through on the
     * target's I/O thread, where a lock taken per write contended with the
     * owner checking the count. */
    for (;;) {
        gint v = g_atomic_int_get(&d->pending);
        g_assert(v > 0);
        if (v == 1)
            break;
        if (g_atomic_int_compare_and_exchange(&d->pending, v, v - 1))
            return;
    }
    /* The last one, under the lock: the owner then either sees 0 or is
     * woken, and frees the scope only once this is done with it.  No
     * other completion is left to race with the decrement. */
    g_mutex_lock(&d->lock);
    if (g_atomic_int_dec_and_test(&d->pending))
        g_cond_signal(&d->cond);
    g_mutex_unlock(&d->lock);
}
