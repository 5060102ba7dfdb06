/* Pulls in increments (see stream.h): each call does a bounded piece of a
 * stream's copy on the caller's thread (the QMP handler's: the piece is
 * small so the main loop is held briefly), keeping nothing between calls:
 * the client holds the cursor, and every call resolves the chain anew, so
 * a graph change between calls is seen. */
#include "jobs/stream.h"

#include <errno.h>
#include <gio/gio.h>

bool stream_pull_increment(const StreamPullOptions *o, uint64_t *cursor_out, uint64_t *end, GError **errp)
{
    ChainStreamRange range;
    if (!chain_resolve_stream(o->device, o->base, o->base_node, NULL, o->backing_file, &range, errp))
        return false;
    uint64_t size = node_size(range.top);
    if (o->cursor > size) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameter 'cursor' is past the end of '%s' (%" G_GUINT64_FORMAT " bytes)", o->device,
                    (guint64)size);
        return false;
    }
    if (o->length > STREAM_PULL_MAX_LENGTH) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameter 'length' expects a value of at most %u", STREAM_PULL_MAX_LENGTH);
        return false;
    }
    *end = size;
    if (chain_backing(range.top) == range.base) {
        *cursor_out = size;    /* nothing (left) to pull: no layer between them */
        return true;
    }
    const char *id = o->id ? o->id : o->device;
    StreamCopier *c = stream_copier_new(&range, id, errp);
    if (!c)
        return false;
    uint64_t budget = o->length ? o->length : STREAM_PULL_DEFAULT_LENGTH;
    uint64_t pos = o->cursor, copied_total = 0;
    int r = 0;
    while (r == 0 && pos < size && copied_total < budget) {
        uint64_t done, copied;
        r = stream_copier_step(c, pos, MIN(budget - copied_total, 1u << 20), &done, &copied);
        if (r == 0) {
            pos += done;
            copied_total += copied;
        }
    }
    if (r < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r),
                    "Pulling into '%s' failed at offset %" G_GUINT64_FORMAT ": %s; the backing chain is unchanged",
                    o->device, (guint64)pos, g_strerror(-r));
        stream_copier_free(c);
        return false;
    }
    *cursor_out = pos;
    if (pos < size) {
        stream_copier_free(c);
        return true;
    }
    stream_copier_detach(c);
    bool ok = stream_copier_relink(c, o->backing_file, errp);
    stream_copier_free(c);
    if (ok)
        job_emit_block_completed(JOB_TYPE_STREAM, id, size, size, 0, NULL);
    return ok;
}
