/* A read-only node reopened read-write for a job (see open-writable.h).
 *
 * QEMU loads every qcow2 node's bitmaps at open, so a base opened as a
 * backing file has them, and its reopen makes them writable
 * (qcow2_reopen_bitmaps_rw).  blockd loads them with the node a client
 * adds; a backing file opened from a header gets them here, before its
 * reopen, so that the bitmap layer's reopen notifier carries them over
 * instead of the image marking them in use and losing them. */
#include "jobs/open-writable.h"
#include "bitmaps/dirty-bitmap.h"

bool job_open_writable(BlockNode *node, bool *reopened, GError **errp)
{
    *reopened = false;
    if (!node_read_only(node))
        return true;
    dirty_bitmap_load_persistent(node);
    if (!node_reopen_read_only(node, false, errp))
        return false;
    *reopened = true;
    return true;
}
