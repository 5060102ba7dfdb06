/* Range locks: QEMU's "tracked requests" (serialising requests), once.
 *
 * A RangeLock serialises the overlapping requests that one user of a node
 * has in flight over the node's bytes: a job that copies a node locks the
 * region it is copying, and the guest writes that must not overtake the
 * copy (a backup's copy-before-write, a mirror's write-blocking writes;
 * later stream and commit) lock or wait for their region in the same lock.
 * Each such job has a lock of its own over its source node (as QEMU's
 * block-copy and mirror keep their own request lists): a guest write may
 * hold one job's range across the write while another job's hook runs, so
 * ranges of different jobs must not wait for each other.
 *
 * Ranges are held SHARED or EXCLUSIVE; two ranges conflict when they
 * overlap, at least one is exclusive and they have different owners.  An
 * owner is any pointer (a thread, a job); a range with the NULL owner (say
 * a copy handed to a worker thread, which releases it) conflicts with
 * every other.  The same owner may lock ranges that overlap its own
 * (re-entrant: a nested request of a thread that holds the region).  A
 * range that outlives the call that took it should be anonymous: a
 * write-blocking mirror's guest write keeps its range until its copy to
 * the target completes on another thread, and the next write of the same
 * thread to that region must wait for it, not pass as re-entrant.
 *
 * Waiting is fair: an acquire waits for the conflicting ranges held and for
 * the conflicting acquires that started waiting before it, so a stream of
 * shared ranges cannot starve an exclusive one.  An owner that already
 * holds a range in the lock only waits for conflicting held ranges (an
 * earlier waiter may be waiting for that owner's own range).  A release
 * wakes only the waiters whose range overlaps it.
 *
 * Locking (docs/architecture.md "Locking"): the lock's own mutex is a leaf,
 * so the non-blocking calls may be made under a job's lock; a thread that
 * waits (acquire, wait) must hold no lock that a holder of a conflicting
 * range might take before releasing it.  A held range is like a held lock:
 * a thread may hold one while it takes a job's lock or does I/O. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef struct RangeLock RangeLock;
typedef struct RangeLockEntry RangeLockEntry;

typedef enum RangeLockMode {
    RANGE_LOCK_SHARED,
    RANGE_LOCK_EXCLUSIVE,
} RangeLockMode;

/* A new lock with nothing held. */
RangeLock *range_lock_new(void);
/* Frees the lock; nothing may be held or waited for. */
void range_lock_free(RangeLock *rl);

/* Locks [offset, offset+len) in `mode` for `owner` (NULL: anonymous),
 * waiting as long as the rules above say.  Returns the held range, for
 * range_lock_release (from any thread). */
RangeLockEntry *range_lock_acquire(RangeLock *rl, uint64_t offset, uint64_t len,
                                   RangeLockMode mode, const void *owner);
/* Like range_lock_acquire if it would not wait; NULL otherwise, with the
 * conflicting range (held or waited for) that starts first, the longest of
 * those, in *busy_offset and *busy_len (either may be NULL). */
RangeLockEntry *range_lock_try_acquire(RangeLock *rl, uint64_t offset, uint64_t len,
                                       RangeLockMode mode, const void *owner,
                                       uint64_t *busy_offset, uint64_t *busy_len);
/* Releases a held range and wakes the waiters it overlaps. */
void range_lock_release(RangeLock *rl, RangeLockEntry *e);
/* Waits until [offset, offset+len) could be locked in `mode` by `owner`
 * (what range_lock_acquire waits for) and returns without holding it:
 * every conflicting range held or waited for when the call began has
 * been released. */
void range_lock_wait(RangeLock *rl, uint64_t offset, uint64_t len, RangeLockMode mode,
                     const void *owner);
/* True if a range that conflicts with [offset, offset+len) in `mode` for
 * `owner` is held right now. */
bool range_lock_busy(RangeLock *rl, uint64_t offset, uint64_t len, RangeLockMode mode,
                     const void *owner);
/* The range [offset, offset+len) that `owner` holds, or NULL. */
RangeLockEntry *range_lock_find(RangeLock *rl, uint64_t offset, uint64_t len, const void *owner);
/* Ranges held, and acquires waiting (for tests and assertions). */
unsigned range_lock_held_count(RangeLock *rl);
unsigned range_lock_waiting_count(RangeLock *rl);
