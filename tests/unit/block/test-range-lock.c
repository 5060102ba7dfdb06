/* The range lock (block/range-lock.c) against a naive model: a plain list
 * of the ranges held, checked for conflicts by brute force.
 *
 * - model: one thread, random try-acquires and releases by several owners
 *   (and anonymous ones); every answer (granted or not, the first busy
 *   range, busy, find, counts) is compared with the model's.
 * - threads: several threads acquire, try, wait for and release random
 *   overlapping ranges (shared, exclusive, anonymous ones released by
 *   another thread, re-entrant ones over the thread's own); every range is
 *   checked against the model of what is held the moment it is granted,
 *   and a watchdog fails the test if any request waits too long.
 * - fairness, re-entrancy past a queued waiter, wait, wake-ups. */
#include "block/range-lock.h"

#include <glib.h>
#include <string.h>

/* ---- the naive model ---- */

typedef struct ModelRange {
    uint64_t start, end;
    RangeLockMode mode;
    const void *owner;
    RangeLockEntry *entry;
} ModelRange;

static bool model_conflict(const ModelRange *a, uint64_t start, uint64_t end, RangeLockMode mode,
                           const void *owner)
{
    bool shared_byte = false;
    for (uint64_t b = start; b < end && !shared_byte; b++)
        shared_byte = a->start <= b && b < a->end;
    if (!shared_byte)
        return false;
    if (a->mode == RANGE_LOCK_SHARED && mode == RANGE_LOCK_SHARED)
        return false;
    return !(owner && a->owner == owner);
}

/* The conflicting held range that starts first (the longest of those), or -1. */
static int model_first_conflict(GArray *held, uint64_t start, uint64_t end, RangeLockMode mode,
                                const void *owner)
{
    int best = -1;
    for (guint i = 0; i < held->len; i++) {
        ModelRange *r = &g_array_index(held, ModelRange, i);
        if (!model_conflict(r, start, end, mode, owner))
            continue;
        ModelRange *b = best < 0 ? NULL : &g_array_index(held, ModelRange, best);
        if (!b || r->start < b->start || (r->start == b->start && r->end > b->end))
            best = (int)i;
    }
    return best;
}

static const char *const owners[] = { "a", "b", "c" };

static const void *random_owner(GRand *rng)
{
    int k = g_rand_int_range(rng, 0, 4);
    return k == 3 ? NULL : owners[k];
}

static void model_run(guint32 seed)
{
    GRand *rng = g_rand_new_with_seed(seed);
    RangeLock *rl = range_lock_new();
    GArray *held = g_array_new(FALSE, FALSE, sizeof(ModelRange));
    for (int op = 0; op < 4000; op++) {
        uint64_t start = (uint64_t)g_rand_int_range(rng, 0, 64);
        uint64_t len = (uint64_t)g_rand_int_range(rng, 0, 12);
        RangeLockMode mode = g_rand_boolean(rng) ? RANGE_LOCK_SHARED : RANGE_LOCK_EXCLUSIVE;
        const void *owner = random_owner(rng);
        int k = g_rand_int_range(rng, 0, 10);
        if (k < 5 || held->len == 0) {
            uint64_t bo = 12345, bl = 12345;
            RangeLockEntry *e = range_lock_try_acquire(rl, start, len, mode, owner, &bo, &bl);
            int c = model_first_conflict(held, start, start + len, mode, owner);
            if (c < 0) {
                g_assert_nonnull(e);
                ModelRange r = { start, start + len, mode, owner, e };
                g_array_append_val(held, r);
            } else {
                g_assert_null(e);
                ModelRange *r = &g_array_index(held, ModelRange, c);
                g_assert_cmpuint(bo, ==, r->start);
                g_assert_cmpuint(bl, ==, r->end - r->start);
            }
        } else if (k < 8) {
            guint i = (guint)g_rand_int_range(rng, 0, (gint32)held->len);
            range_lock_release(rl, g_array_index(held, ModelRange, i).entry);
            g_array_remove_index_fast(held, i);
        } else if (k == 8) {
            g_assert_cmpint(range_lock_busy(rl, start, len, mode, owner), ==,
                            model_first_conflict(held, start, start + len, mode, owner) >= 0);
        } else {
            /* find: an exact range of that owner (any one, if several). */
            RangeLockEntry *e = range_lock_find(rl, start, len, owner);
            bool want = false;
            for (guint i = 0; i < held->len; i++) {
                ModelRange *r = &g_array_index(held, ModelRange, i);
                if (r->start == start && r->end == start + len && r->owner == owner) {
                    want = true;
                    g_assert_true(e != NULL);
                }
                if (e && r->entry == e) {
                    g_assert_cmpuint(r->start, ==, start);
                    g_assert_true(r->owner == owner);
                }
            }
            g_assert_cmpint(e != NULL, ==, want);
        }
        g_assert_cmpuint(range_lock_held_count(rl), ==, held->len);
        g_assert_cmpuint(range_lock_waiting_count(rl), ==, 0);
    }
    for (guint i = 0; i < held->len; i++)
        range_lock_release(rl, g_array_index(held, ModelRange, i).entry);
    g_assert_cmpuint(range_lock_held_count(rl), ==, 0);
    range_lock_free(rl);
    g_array_free(held, TRUE);
    g_rand_free(rng);
}

static void test_model(void)
{
    for (guint32 seed = 1; seed <= 30; seed++)
        model_run(seed);
}

/* ---- several threads ---- */

#define SPACE 256

typedef struct Shared {
    RangeLock *rl;
    GMutex model_lock;
    GArray *held;             /* ModelRange, under model_lock */
    GAsyncQueue *handoff;     /* anonymous entries for the releaser thread */
    gint progress;            /* requests granted so far (atomic) */
    gint finished;            /* workers done (atomic) */
    gint64 max_wait_us;       /* longest single wait seen, under model_lock */
} Shared;

/* Adds a granted range to the model after checking it conflicts with none. */
static void model_add(Shared *s, uint64_t start, uint64_t end, RangeLockMode mode, const void *owner,
                      RangeLockEntry *e)
{
    g_mutex_lock(&s->model_lock);
    int c = model_first_conflict(s->held, start, end, mode, owner);
    if (c >= 0) {
        ModelRange *r = &g_array_index(s->held, ModelRange, c);
        g_error("granted [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT ") %s owner %p while "
                "[%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT ") %s owner %p is held",
                start, end, mode ? "exclusive" : "shared", owner, r->start, r->end,
                r->mode ? "exclusive" : "shared", r->owner);
    }
    ModelRange r = { start, end, mode, owner, e };
    g_array_append_val(s->held, r);
    g_mutex_unlock(&s->model_lock);
    g_atomic_int_inc(&s->progress);
}

/* Removes a range from the model, before it is released. */
static void model_remove(Shared *s, RangeLockEntry *e)
{
    g_mutex_lock(&s->model_lock);
    for (guint i = 0; i < s->held->len; i++) {
        if (g_array_index(s->held, ModelRange, i).entry == e) {
            g_array_remove_index_fast(s->held, i);
            g_mutex_unlock(&s->model_lock);
            return;
        }
    }
    g_mutex_unlock(&s->model_lock);
    g_assert_not_reached();
}

static void note_wait(Shared *s, gint64 t0)
{
    gint64 w = g_get_monotonic_time() - t0;
    g_mutex_lock(&s->model_lock);
    if (w > s->max_wait_us)
        s->max_wait_us = w;
    g_mutex_unlock(&s->model_lock);
}

static void hold_a_while(GRand *rng)
{
    if (g_rand_int_range(rng, 0, 4) == 0)
        g_usleep((gulong)g_rand_int_range(rng, 0, 200));
    else
        g_thread_yield();
}

typedef struct Worker {
    Shared *s;
    guint32 seed;
    int ops;
} Worker;

static gpointer worker_thread(gpointer data)
{
    Worker *w = data;
    Shared *s = w->s;
    GRand *rng = g_rand_new_with_seed(w->seed);
    const void *self = g_thread_self();
    for (int op = 0; op < w->ops; op++) {
        uint64_t start = (uint64_t)g_rand_int_range(rng, 0, SPACE);
        uint64_t len = 1 + (uint64_t)g_rand_int_range(rng, 0, 40);
        uint64_t end = MIN(SPACE, start + len);
        RangeLockMode mode = g_rand_int_range(rng, 0, 3) ? RANGE_LOCK_EXCLUSIVE : RANGE_LOCK_SHARED;
        int kind = g_rand_int_range(rng, 0, 10);
        if (kind == 9)
            mode = RANGE_LOCK_EXCLUSIVE;
        if (kind < 2) {
            /* Anonymous, released by the releaser thread. */
            gint64 t0 = g_get_monotonic_time();
            RangeLockEntry *e = range_lock_acquire(s->rl, start, end - start, mode, NULL);
            note_wait(s, t0);
            model_add(s, start, end, mode, NULL, e);
            g_async_queue_push(s->handoff, e);
        } else if (kind < 4) {
            RangeLockEntry *e = range_lock_try_acquire(s->rl, start, end - start, mode, self, NULL, NULL);
            if (e) {
                model_add(s, start, end, mode, self, e);
                hold_a_while(rng);
                model_remove(s, e);
                range_lock_release(s->rl, e);
            }
        } else if (kind < 5) {
            gint64 t0 = g_get_monotonic_time();
            range_lock_wait(s->rl, start, end - start, mode, self);
            note_wait(s, t0);
            g_atomic_int_inc(&s->progress);
        } else {
            gint64 t0 = g_get_monotonic_time();
            RangeLockEntry *e = range_lock_acquire(s->rl, start, end - start, mode, self);
            note_wait(s, t0);
            model_add(s, start, end, mode, self, e);
            RangeLockEntry *inner = NULL;
            if (kind == 9) {
                /* Re-entrant: a range inside our exclusive one (so that no
                 * two threads can wait for each other's ranges), granted
                 * past the waiters queued for ours. */
                uint64_t is = start + (uint64_t)g_rand_int_range(rng, 0, (gint32)(end - start));
                uint64_t ilen = 1 + (uint64_t)g_rand_int_range(rng, 0, 8);
                uint64_t ie = MIN(end, is + ilen);
                t0 = g_get_monotonic_time();
                inner = range_lock_acquire(s->rl, is, ie - is, RANGE_LOCK_EXCLUSIVE, self);
                g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_TIME_SPAN_SECOND);
                note_wait(s, t0);
                model_add(s, is, ie, RANGE_LOCK_EXCLUSIVE, self, inner);
            }
            hold_a_while(rng);
            if (inner) {
                model_remove(s, inner);
                range_lock_release(s->rl, inner);
            }
            model_remove(s, e);
            range_lock_release(s->rl, e);
        }
    }
    g_rand_free(rng);
    g_atomic_int_inc(&s->finished);
    return NULL;
}

static gpointer releaser_thread(gpointer data)
{
    Shared *s = data;
    for (;;) {
        RangeLockEntry *e = g_async_queue_pop(s->handoff);
        if (e == (RangeLockEntry *)s)
            return NULL;
        g_usleep(20);
        model_remove(s, e);
        range_lock_release(s->rl, e);
    }
}

static void test_threads(void)
{
    enum { NTHREADS = 6 };
    Shared s = { 0 };
    s.rl = range_lock_new();
    g_mutex_init(&s.model_lock);
    s.held = g_array_new(FALSE, FALSE, sizeof(ModelRange));
    s.handoff = g_async_queue_new();
    int ops = g_test_slow() ? 20000 : 3000;
    GThread *rel = g_thread_new("releaser", releaser_thread, &s);
    Worker w[NTHREADS];
    GThread *t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (Worker){ &s, 1000u + (guint32)i, ops };
        t[i] = g_thread_new("worker", worker_thread, &w[i]);
    }
    /* Watchdog: progress must not stop for 20 s (a lost wake-up or a
     * deadlock would stop it for good). */
    gint last = -1;
    gint64 since = g_get_monotonic_time();
    while (g_atomic_int_get(&s.finished) < NTHREADS) {
        g_usleep(50 * 1000);
        gint p = g_atomic_int_get(&s.progress);
        if (p != last) {
            last = p;
            since = g_get_monotonic_time();
        }
        if (g_get_monotonic_time() - since > 20 * G_TIME_SPAN_SECOND)
            g_error("no request granted for 20 s: %u held, %u waiting",
                    range_lock_held_count(s.rl), range_lock_waiting_count(s.rl));
    }
    for (int i = 0; i < NTHREADS; i++)
        g_thread_join(t[i]);
    g_async_queue_push(s.handoff, &s);
    g_thread_join(rel);
    g_assert_cmpuint(range_lock_held_count(s.rl), ==, 0);
    g_assert_cmpuint(range_lock_waiting_count(s.rl), ==, 0);
    g_assert_cmpuint(s.held->len, ==, 0);
    g_test_message("%d requests granted, longest wait %" G_GINT64_FORMAT " us", g_atomic_int_get(&s.progress),
                   s.max_wait_us);
    range_lock_free(s.rl);
    g_array_free(s.held, TRUE);
    g_async_queue_unref(s.handoff);
    g_mutex_clear(&s.model_lock);
}

/* ---- fairness, re-entrancy, waits ---- */

typedef struct Readers {
    RangeLock *rl;
    gint stop;
    gint held;     /* readers holding right now */
    gint rounds;
} Readers;

/* Holds shared [0, 100) in overlapping turns with the other readers, so
 * that without fairness some reader always holds it. */
static gpointer reader_thread(gpointer data)
{
    Readers *r = data;
    while (!g_atomic_int_get(&r->stop)) {
        RangeLockEntry *e = range_lock_acquire(r->rl, 0, 100, RANGE_LOCK_SHARED, g_thread_self());
        g_atomic_int_inc(&r->held);
        g_usleep(300);
        g_atomic_int_dec_and_test(&r->held);
        range_lock_release(r->rl, e);
        g_atomic_int_inc(&r->rounds);
    }
    return NULL;
}

typedef struct Writer {
    Readers *r;
    gint rounds;
} Writer;

/* A writer gets in while the readers keep going, and keeps them out while
 * it holds the range. */
static gpointer writer_thread(gpointer data)
{
    Writer *w = data;
    for (int k = 0; k < 20; k++) {
        RangeLockEntry *e = range_lock_acquire(w->r->rl, 50, 10, RANGE_LOCK_EXCLUSIVE, NULL);
        g_assert_cmpint(g_atomic_int_get(&w->r->held), ==, 0);
        g_usleep(200);
        g_assert_cmpint(g_atomic_int_get(&w->r->held), ==, 0);
        range_lock_release(w->r->rl, e);
        g_atomic_int_inc(&w->rounds);
        g_usleep(1000);
    }
    return NULL;
}

static void test_fairness(void)
{
    Readers r = { range_lock_new(), 0, 0, 0 };
    GThread *t[4];
    for (int i = 0; i < 4; i++)
        t[i] = g_thread_new("reader", reader_thread, &r);
    while (g_atomic_int_get(&r.rounds) < 20)
        g_usleep(1000);
    Writer w = { &r, 0 };
    GThread *wt = g_thread_new("writer", writer_thread, &w);
    gint last = 0;
    gint64 since = g_get_monotonic_time();
    while (g_atomic_int_get(&w.rounds) < 20) {
        g_usleep(10 * 1000);
        if (g_atomic_int_get(&w.rounds) != last) {
            last = g_atomic_int_get(&w.rounds);
            since = g_get_monotonic_time();
        }
        if (g_get_monotonic_time() - since > 10 * G_TIME_SPAN_SECOND)
            g_error("the writer starved: %d rounds in, readers did %d", last, g_atomic_int_get(&r.rounds));
    }
    g_thread_join(wt);
    g_atomic_int_set(&r.stop, 1);
    for (int i = 0; i < 4; i++)
        g_thread_join(t[i]);
    range_lock_free(r.rl);
}

typedef struct Waiter {
    RangeLock *rl;
    uint64_t start, len;
    RangeLockMode mode;
    const void *owner;
    bool wait_only;
    gint done;
} Waiter;

static gpointer waiter_thread(gpointer data)
{
    Waiter *w = data;
    if (w->wait_only) {
        range_lock_wait(w->rl, w->start, w->len, w->mode, w->owner);
    } else {
        RangeLockEntry *e = range_lock_acquire(w->rl, w->start, w->len, w->mode, w->owner);
        g_atomic_int_set(&w->done, 1);
        range_lock_release(w->rl, e);
    }
    g_atomic_int_set(&w->done, 1);
    return NULL;
}

static void wait_until_waiting(RangeLock *rl, unsigned n)
{
    while (range_lock_waiting_count(rl) < n)
        g_usleep(100);
}

static void test_reentrant(void)
{
    RangeLock *rl = range_lock_new();
    int me;
    RangeLockEntry *outer = range_lock_acquire(rl, 0, 10, RANGE_LOCK_EXCLUSIVE, &me);
    /* Another owner queues up behind our range... */
    Waiter w = { rl, 5, 10, RANGE_LOCK_EXCLUSIVE, "other", false, 0 };
    GThread *t = g_thread_new("waiter", waiter_thread, &w);
    wait_until_waiting(rl, 1);
    /* ...and we still get a range overlapping ours and its (it waits for
     * us: waiting for it would deadlock), blocking or not. */
    RangeLockEntry *inner = range_lock_acquire(rl, 8, 4, RANGE_LOCK_EXCLUSIVE, &me);
    RangeLockEntry *inner2 = range_lock_try_acquire(rl, 9, 1, RANGE_LOCK_SHARED, &me, NULL, NULL);
    g_assert_nonnull(inner2);
    g_assert_true(range_lock_find(rl, 8, 4, &me) == inner);
    /* A newcomer without a range here is not let past the waiter. */
    uint64_t bo = 0, bl = 0;
    g_assert_null(range_lock_try_acquire(rl, 12, 1, RANGE_LOCK_SHARED, "third", &bo, &bl));
    g_assert_cmpuint(bo, ==, 5);
    g_assert_cmpuint(bl, ==, 10);
    /* The anonymous owner is never re-entrant. */
    RangeLockEntry *anon = range_lock_acquire(rl, 100, 10, RANGE_LOCK_EXCLUSIVE, NULL);
    g_assert_null(range_lock_try_acquire(rl, 105, 1, RANGE_LOCK_EXCLUSIVE, NULL, NULL, NULL));
    range_lock_release(rl, anon);
    range_lock_release(rl, inner2);
    range_lock_release(rl, inner);
    g_usleep(2000);
    g_assert_cmpint(g_atomic_int_get(&w.done), ==, 0);
    range_lock_release(rl, outer);
    g_thread_join(t);
    g_assert_cmpint(w.done, ==, 1);
    g_assert_cmpuint(range_lock_held_count(rl), ==, 0);
    range_lock_free(rl);
}

static void test_wait_and_wakeups(void)
{
    RangeLock *rl = range_lock_new();
    RangeLockEntry *a = range_lock_acquire(rl, 0, 10, RANGE_LOCK_EXCLUSIVE, NULL);
    RangeLockEntry *b = range_lock_acquire(rl, 20, 10, RANGE_LOCK_EXCLUSIVE, NULL);
    /* Shared ranges do not conflict with each other. */
    RangeLockEntry *s1 = range_lock_acquire(rl, 40, 10, RANGE_LOCK_SHARED, NULL);
    RangeLockEntry *s2 = range_lock_acquire(rl, 45, 10, RANGE_LOCK_SHARED, NULL);
    g_assert_true(range_lock_busy(rl, 42, 1, RANGE_LOCK_EXCLUSIVE, NULL));
    g_assert_false(range_lock_busy(rl, 42, 1, RANGE_LOCK_SHARED, NULL));
    g_assert_false(range_lock_busy(rl, 10, 10, RANGE_LOCK_EXCLUSIVE, NULL));
    Waiter wa = { rl, 5, 1, RANGE_LOCK_SHARED, NULL, true, 0 };
    Waiter wb = { rl, 25, 1, RANGE_LOCK_SHARED, NULL, true, 0 };
    GThread *ta = g_thread_new("wa", waiter_thread, &wa);
    GThread *tb = g_thread_new("wb", waiter_thread, &wb);
    wait_until_waiting(rl, 2);
    /* Releasing b wakes b's waiter only. */
    range_lock_release(rl, b);
    g_thread_join(tb);
    g_assert_cmpint(wb.done, ==, 1);
    g_usleep(2000);
    g_assert_cmpint(g_atomic_int_get(&wa.done), ==, 0);
    g_assert_cmpuint(range_lock_waiting_count(rl), ==, 1);
    range_lock_release(rl, a);
    g_thread_join(ta);
    range_lock_release(rl, s1);
    range_lock_release(rl, s2);
    /* Empty ranges conflict with nothing. */
    RangeLockEntry *x = range_lock_acquire(rl, 0, 100, RANGE_LOCK_EXCLUSIVE, NULL);
    RangeLockEntry *z = range_lock_try_acquire(rl, 50, 0, RANGE_LOCK_EXCLUSIVE, NULL, NULL, NULL);
    g_assert_nonnull(z);
    range_lock_release(rl, z);
    range_lock_release(rl, x);
    g_assert_cmpuint(range_lock_held_count(rl), ==, 0);
    g_assert_cmpuint(range_lock_waiting_count(rl), ==, 0);
    range_lock_free(rl);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/range-lock/model", test_model);
    g_test_add_func("/range-lock/threads", test_threads);
    g_test_add_func("/range-lock/fairness", test_fairness);
    g_test_add_func("/range-lock/reentrant", test_reentrant);
    g_test_add_func("/range-lock/wait-and-wakeups", test_wait_and_wakeups);
    return g_test_run();
}
