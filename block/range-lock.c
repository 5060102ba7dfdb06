/* Range locks (see block/range-lock.h).
 *
 * One list per lock, in arrival order, of every range held or waited for
 * (a few dozen at most: a job's chunks in flight and the guest writes
 * waiting for them), scanned under the lock's mutex.  A waiting entry has
 * its own condition variable, signalled by the releases that overlap it. */
#include "block/range-lock.h"

#include <glib.h>

struct RangeLockEntry {
    RangeLockEntry *prev, *next;
    uint64_t start, end;
    RangeLockMode mode;
    const void *owner;
    bool held;
    bool waiting; /* sleeping on cond */
    GCond cond;
};

struct RangeLock {
    GMutex mutex;
    RangeLockEntry *head, *tail;
    unsigned held, waiting;
};

RangeLock *range_lock_new(void)
{
    RangeLock *rl = g_new0(RangeLock, 1);
    g_mutex_init(&rl->mutex);
    return rl;
}

void range_lock_free(RangeLock *rl)
{
    if (!rl)
        return;
    g_assert(rl->head == NULL);
    g_mutex_clear(&rl->mutex);
    g_free(rl);
}

/* True if [s1, e1) and [s2, e2) share a byte (an empty range shares none). */
static bool overlap(uint64_t s1, uint64_t e1, uint64_t s2, uint64_t e2)
{
    return MAX(s1, s2) < MIN(e1, e2);
}

static bool conflicts(const RangeLockEntry *a, uint64_t start, uint64_t end, RangeLockMode mode,
                      const void *owner)
{
    if (!overlap(a->start, a->end, start, end))
        return false;
    if (a->mode == RANGE_LOCK_SHARED && mode == RANGE_LOCK_SHARED)
        return false;
    return !(owner && a->owner == owner);
}

/* Of a and b (either may be NULL), the one starting first; the longer one
 * of two starting together. */
static RangeLockEntry *starts_first(RangeLockEntry *a, RangeLockEntry *b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    if (b->start < a->start || (b->start == a->start && b->end > a->end))
        return b;
    return a;
}

/* What keeps [start, end) in `mode` for `owner` from being granted: the
 * conflicting entry that starts first, or NULL.  `self` is the queued
 * entry asking (NULL: a request arriving now, after every entry).  Locked. */
static RangeLockEntry *first_blocker(RangeLock *rl, const RangeLockEntry *self, uint64_t start, uint64_t end,
                                     RangeLockMode mode, const void *owner)
{
    bool owner_holds = false;
    RangeLockEntry *held = NULL, *queued = NULL;
    bool earlier = true; /* still before `self` in arrival order */
    for (RangeLockEntry *e = rl->head; e; e = e->next) {
        if (e == self) {
            earlier = false;
            continue;
        }
        if (owner && e->held && e->owner == owner)
            owner_holds = true;
        if (!conflicts(e, start, end, mode, owner))
            continue;
        if (e->held)
            held = starts_first(held, e);
        else if (earlier)
            queued = starts_first(queued, e);
    }
    /* An owner holding a range already waits only for held ranges: an
     * earlier waiter may be waiting for that owner (re-entrancy). */
    if (owner_holds || !queued)
        return held;
    return starts_first(held, queued);
}

static RangeLockEntry *entry_new(uint64_t offset, uint64_t len, RangeLockMode mode, const void *owner)
{
    g_assert(offset + len >= offset);
    RangeLockEntry *e = g_new0(RangeLockEntry, 1);
    e->start = offset;
    e->end = offset + len;
    e->mode = mode;
    e->owner = owner;
    return e;
}

static void append_locked(RangeLock *rl, RangeLockEntry *e)
{
    e->prev = rl->tail;
    e->next = NULL;
    if (rl->tail)
        rl->tail->next = e;
    else
        rl->head = e;
    rl->tail = e;
}

static void unlink_locked(RangeLock *rl, RangeLockEntry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        rl->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        rl->tail = e->prev;
    e->prev = e->next = NULL;
}

/* e was just granted: waiters of the same owner (another thread acting for
 * it) now wait only for held ranges.  Locked. */
static void granted_locked(RangeLock *rl, RangeLockEntry *e)
{
    if (!e->owner || rl->waiting == 0)
        return;
    for (RangeLockEntry *w = rl->head; w; w = w->next)
        if (w->waiting && w->owner == e->owner)
            g_cond_signal(&w->cond);
}

RangeLockEntry *range_lock_try_acquire(RangeLock *rl, uint64_t offset, uint64_t len,
                                       RangeLockMode mode, const void *owner,
                                       uint64_t *busy_offset, uint64_t *busy_len)
{
    RangeLockEntry *e = entry_new(offset, len, mode, owner);
    g_mutex_lock(&rl->mutex);
    RangeLockEntry *b = first_blocker(rl, NULL, e->start, e->end, mode, owner);
    if (b) {
        if (busy_offset)
            *busy_offset = b->start;
        if (busy_len)
            *busy_len = b->end - b->start;
        g_mutex_unlock(&rl->mutex);
        g_free(e);
        return NULL;
    }
    e->held = true;
    append_locked(rl, e);
    rl->held++;
    granted_locked(rl, e);
    g_mutex_unlock(&rl->mutex);
    return e;
}

RangeLockEntry *range_lock_acquire(RangeLock *rl, uint64_t offset, uint64_t len,
                                   RangeLockMode mode, const void *owner)
{
    RangeLockEntry *e = entry_new(offset, len, mode, owner);
    g_mutex_lock(&rl->mutex);
    append_locked(rl, e);
    if (first_blocker(rl, e, e->start, e->end, mode, owner)) {
        g_cond_init(&e->cond);
        e->waiting = true;
        rl->waiting++;
        do
            g_cond_wait(&e->cond, &rl->mutex);
        while (first_blocker(rl, e, e->start, e->end, mode, owner));
        rl->waiting--;
        e->waiting = false;
        g_cond_clear(&e->cond);
    }
    e->held = true;
    rl->held++;
    granted_locked(rl, e);
    g_mutex_unlock(&rl->mutex);
    return e;
}

/* Unlinks e (held or queued) and wakes the waiters it overlaps.  Locked. */
static void remove_locked(RangeLock *rl, RangeLockEntry *e)
{
    unlink_locked(rl, e);
    if (rl->waiting == 0)
        return;
    for (RangeLockEntry *w = rl->head; w; w = w->next)
        if (w->waiting && overlap(w->start, w->end, e->start, e->end))
            g_cond_signal(&w->cond);
}

void range_lock_release(RangeLock *rl, RangeLockEntry *e)
{
    g_mutex_lock(&rl->mutex);
    g_assert(e->held);
    rl->held--;
    remove_locked(rl, e);
    g_mutex_unlock(&rl->mutex);
    g_free(e);
}

void range_lock_wait(RangeLock *rl, uint64_t offset, uint64_t len, RangeLockMode mode, const void *owner)
{
    range_lock_release(rl, range_lock_acquire(rl, offset, len, mode, owner));
}

bool range_lock_busy(RangeLock *rl, uint64_t offset, uint64_t len, RangeLockMode mode, const void *owner)
{
    bool busy = false;
    g_mutex_lock(&rl->mutex);
    for (RangeLockEntry *e = rl->head; e && !busy; e = e->next)
        busy = e->held && conflicts(e, offset, offset + len, mode, owner);
    g_mutex_unlock(&rl->mutex);
    return busy;
}

RangeLockEntry *range_lock_find(RangeLock *rl, uint64_t offset, uint64_t len, const void *owner)
{
    RangeLockEntry *found = NULL;
    g_mutex_lock(&rl->mutex);
    for (RangeLockEntry *e = rl->head; e && !found; e = e->next)
        if (e->held && e->owner == owner && e->start == offset && e->end == offset + len)
            found = e;
    g_mutex_unlock(&rl->mutex);
    return found;
}

unsigned range_lock_held_count(RangeLock *rl)
{
    g_mutex_lock(&rl->mutex);
    unsigned n = rl->held;
    g_mutex_unlock(&rl->mutex);
    return n;
}

unsigned range_lock_waiting_count(RangeLock *rl)
{
    g_mutex_lock(&rl->mutex);
    unsigned n = rl->waiting;
    g_mutex_unlock(&rl->mutex);
    return n;
}
