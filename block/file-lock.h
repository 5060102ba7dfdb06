/* QEMU's image locks on a file node's descriptor (block/file-posix.c):
 * for each permission bit i (block/node-perm.h) the node holds, a shared
 * OFD lock on byte 100+i; for each it does not share, one on byte 200+i.
 * Before taking a permission the node checks that no other open file
 * description locks byte 200+i, and before refusing to share one that none
 * locks byte 100+i.  Every process using the image sees the others this
 * way, whatever program they run (QEMU, qemu-img, another blockd), and the
 * kernel drops the locks when the descriptor's last copy closes, even on
 * a crash.  Transactions follow node-perm.h: check, then commit or abort. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "qapi/qapi-types.h"

typedef struct FileLock FileLock;

/* The lock state of descriptor `fd` (borrowed: it must outlive the
 * FileLock) of the image called `filename` in messages; nothing held yet.
 * `mode` is the file driver's locking option: auto locks and silently
 * does not when the file system cannot, on fails then, off never locks. */
FileLock *file_lock_new(int fd, const char *filename, OnOffAuto mode);
/* Forgets the state (closing the descriptor is what drops the locks). */
void file_lock_free(FileLock *lock);
/* Takes what (perm, shared) needs on top of what is held and tests the
 * other processes' locks; false with QEMU's error (the first line its QMP
 * desc, the second its hint) and back to the old state if they conflict. */
bool file_lock_check(FileLock *lock, uint64_t perm, uint64_t shared, GError **errp);
/* Keeps (perm, shared) after a successful check: unlocks what it no
 * longer needs. */
void file_lock_commit(FileLock *lock, uint64_t perm, uint64_t shared);
/* Goes back to the state before the last successful check. */
void file_lock_abort(FileLock *lock);
/* The image was reopened on descriptor `fd` (borrowed, as in
 * file_lock_new): takes the bytes held on the old descriptor on the new one
 * too and uses it from now on; closing the old one then drops its copies.
 * False with QEMU's error (the caller closes `fd`, dropping what it got). */
bool file_lock_move(FileLock *lock, int fd, GError **errp);
/* Whether locks are in use (false with locking=off, or auto on a file
 * system without OFD locks). */
bool file_lock_active(const FileLock *lock);
