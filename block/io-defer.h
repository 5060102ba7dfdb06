/* Deferred completions: QEMU yields a coroutine where blockd would block a
 * thread.
 *
 * A request thread of the NBD server answers a batch of requests only once
 * everything they set off has finished.  It opens a deferral scope on its
 * thread around executing the batch; a read or write whose result its
 * issuer can take later (the batch's own requests on an nbd node, whose
 * replies are built after the wait; a write-blocking mirror's
 * write-through: the guest's write succeeded either way, a failed copy
 * only marks the region dirty) may then be started with node_pread_async()
 * or node_pwrite_async() and finished in a completion on another thread,
 * and the scope's owner waits for all of them together before the replies
 * go out: one wake-up per batch instead of a thread sleeping on every such
 * request.
 *
 * Locking: the scope's mutex is a leaf; completions may run on a driver's
 * I/O thread (with its library's lock held) and must not block there. */
#pragma once

#include <stdbool.h>

typedef struct IoDefer IoDefer;

/* Opens a scope on the calling thread (none may be open on it). */
IoDefer *io_defer_open(void);
/* Closes the scope on the calling thread; what was started in it stays
 * pending.  True if anything is. */
bool io_defer_close(IoDefer *d);
/* Waits until nothing started in the (closed) scope is pending, and frees
 * it (by the thread that opened it). */
void io_defer_wait(IoDefer *d);
/* The scope open on the calling thread, or NULL. */
IoDefer *io_defer_current(void);
/* One more completion pending in `d` (on the thread that has it open). */
void io_defer_add(IoDefer *d);
/* A completion added with io_defer_add finished (any thread). */
void io_defer_done(IoDefer *d);
