/* Extent lists with nbdkit's rules (see block/extents.h). */
#include "block/extents.h"

#include <errno.h>
#include <stdint.h>
#include <glib.h>

struct BlockExtents {
    GArray *items;     /* BlockExtent */
    uint64_t start, end;
    uint64_t next;     /* where the next added extent must begin */
};

BlockExtents *extents_new(uint64_t start, uint64_t end)
{
    if (start > INT64_MAX || end > INT64_MAX || start > end) {
        errno = ERANGE;
        return NULL;
    }
    BlockExtents *e = g_new0(BlockExtents, 1);
    e->items = g_array_new(FALSE, FALSE, sizeof(BlockExtent));
    e->start = e->next = start;
    e->end = end;
    return e;
}

void extents_free(BlockExtents *e)
{
    if (!e)
        return;
    g_array_free(e->items, TRUE);
    g_free(e);
}

int extents_add(BlockExtents *e, uint64_t offset, uint64_t length, uint32_t type)
{
    /* Before anything is kept, extents wholly before start are skipped; the
     * first kept one must cover start.  Afterwards they must be contiguous. */
    if (e->items->len == 0 && offset + length <= e->start && offset < e->start)
        return 0;
    if (e->items->len == 0 && offset <= e->start) {
        /* Trim a straddling extent to begin at start. */
        length -= e->start - offset;
        offset = e->start;
    } else if (offset != e->next) {
        return -ERANGE;
    }
    if (length == 0)
        return 0;
    e->next = offset + length;
    if (offset >= e->end)
        return 0;
    if (offset + length > e->end)
        length = e->end - offset;

    if (e->items->len > 0) {
        BlockExtent *last = &g_array_index(e->items, BlockExtent, e->items->len - 1);
        if (last->type == type) {
            last->length += length;
            return 0;
        }
    }
    if (e->items->len >= BLOCK_EXTENTS_MAX)
        return 0;
    BlockExtent x = { .offset = offset, .length = length, .type = type };
    g_array_append_val(e->items, x);
    return 0;
}

size_t extents_count(const BlockExtents *e)
{
    return e->items->len;
}

BlockExtent extents_get(const BlockExtents *e, size_t i)
{
    g_assert(i < e->items->len);
    return g_array_index(e->items, BlockExtent, i);
}

uint64_t extents_start(const BlockExtents *e)
{
    return e->start;
}

uint64_t extents_end(const BlockExtents *e)
{
    return e->end;
}

uint64_t extents_next_offset(const BlockExtents *e)
{
    return e->items->len ? e->next : e->start;
}
