/* nbdkit's extents and exports lists, and the filter-only functions.
 *
 * A struct nbdkit_extents * is a BlockExtents * (block/extents.h already
 * follows nbdkit's rules), so the node layer's list goes to the plugin
 * unchanged.  blockd loads no nbdkit filters; the filter helpers that only
 * need the next backend's public ops (extents_full, extents_aligned) still
 * work, the context-management ones fail cleanly. */
#include "block/plugin-host/host-internal.h"
#include <nbdkit-filter.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/extents.h"

#define MAX_EXPORTS 10000
#define MAX_STRING 4096

static BlockExtents *as_block(const struct nbdkit_extents *e)
{
    return (BlockExtents *) e;
}

HOST_EXPORT struct nbdkit_extents *nbdkit_extents_new(uint64_t start, uint64_t end)
{
    BlockExtents *e = extents_new(start, end);
    if (!e) {
        nbdkit_error("nbdkit_extents_new: start (%" PRIu64 ") or end (%" PRIu64 ") is out of range",
                     start, end);
        errno = ERANGE;
    }
    return (struct nbdkit_extents *) e;
}

HOST_EXPORT void nbdkit_extents_free(struct nbdkit_extents *e)
{
    extents_free(as_block(e));
}

HOST_EXPORT size_t nbdkit_extents_count(const struct nbdkit_extents *e)
{
    return extents_count(as_block(e));
}

HOST_EXPORT struct nbdkit_extent nbdkit_get_extent(const struct nbdkit_extents *e, size_t i)
{
    BlockExtent x = extents_get(as_block(e), i);
    return (struct nbdkit_extent) { .offset = x.offset, .length = x.length, .type = x.type };
}

HOST_EXPORT int nbdkit_add_extent(struct nbdkit_extents *e, uint64_t offset, uint64_t length, uint32_t type)
{
    BlockExtents *b = as_block(e);
    bool first = extents_count(b) == 0;
    int r = extents_add(b, offset, length, type);
    if (r == 0)
        return 0;
    if (r == -ERANGE && first && offset > extents_start(b))
        nbdkit_error("nbdkit_add_extent: first extent must not be > start (%" PRIu64 ")",
                     extents_start(b));
    else if (r == -ERANGE)
        nbdkit_error("nbdkit_add_extent: extents must be added in ascending order and must be contiguous");
    else
        nbdkit_error("nbdkit_add_extent: %s", g_strerror(-r));
    errno = -r;
    return -1;
}

/* Queries `next` until [offset, offset+count) is fully described. */
HOST_EXPORT struct nbdkit_extents *nbdkit_extents_full(nbdkit_next *next, uint32_t count, uint64_t offset,
                                                       uint32_t flags, int *err)
{
    const uint64_t end = offset + count;
    struct nbdkit_extents *all = nbdkit_extents_new(offset, end);
    if (!all) {
        *err = errno;
        return NULL;
    }
    while (offset < end) {
        struct nbdkit_extents *part = nbdkit_extents_new(offset, end);
        if (!part) {
            *err = errno;
            goto fail;
        }
        if (next->extents(next, end - offset, offset, flags & ~NBDKIT_FLAG_REQ_ONE, part, err) == -1) {
            nbdkit_extents_free(part);
            goto fail;
        }
        size_t n = nbdkit_extents_count(part);
        for (size_t i = 0; i < n; i++) {
            struct nbdkit_extent x = nbdkit_get_extent(part, i);
            if (nbdkit_add_extent(all, x.offset, x.length, x.type) == -1) {
                *err = errno;
                nbdkit_extents_free(part);
                goto fail;
            }
            offset = x.offset + x.length;
        }
        nbdkit_extents_free(part);
        if (n == 0) {
            nbdkit_error("nbdkit_extents_full: plugin returned no extents");
            *err = EINVAL;
            goto fail;
        }
    }
    return all;
fail:
    nbdkit_extents_free(all);
    return NULL;
}

/* Describes [offset, offset+count) to `exts` (which must be empty) with every
 * extent a multiple of `align`; a short leading extent is merged with what
 * follows, the merged type being the AND of the parts (always safe). */
HOST_EXPORT int nbdkit_extents_aligned(nbdkit_next *next, uint32_t count, uint64_t offset, uint32_t flags,
                                       uint32_t align, struct nbdkit_extents *exts, int *err)
{
    g_assert(align && (offset % align) == 0 && (count % align) == 0);
    struct nbdkit_extents *got = nbdkit_extents_new(offset, extents_end(as_block(exts)));
    if (!got) {
        *err = errno;
        return -1;
    }
    if (next->extents(next, count, offset, flags, got, err) == -1)
        goto fail;
    size_t n = nbdkit_extents_count(got);
    for (size_t i = 0; i < n; i++) {
        struct nbdkit_extent x = nbdkit_get_extent(got, i);
        if (x.length % align == 0) {
            if (nbdkit_add_extent(exts, x.offset, x.length, x.type) == -1)
                goto fail_errno;
            continue;
        }
        if (x.offset + x.length > offset + align) {
            /* Unaligned but long: keep its aligned part and stop. */
            uint64_t len = x.length - x.length % align;
            if (len && nbdkit_add_extent(exts, x.offset, len, x.type) == -1)
                goto fail_errno;
            break;
        }
        /* The first extent is shorter than align: merge until it is not. */
        uint64_t len = x.length;
        uint32_t type = x.type;
        size_t j = i + 1;
        while (len < align) {
            struct nbdkit_extent y;
            if (j < n) {
                y = nbdkit_get_extent(got, j++);
            } else {
                struct nbdkit_extents *more = nbdkit_extents_new(offset + len, offset + align);
                if (!more) {
                    *err = errno;
                    goto fail;
                }
                if (next->extents(next, align - len, offset + len, flags & ~NBDKIT_FLAG_REQ_ONE,
                                  more, err) == -1 || nbdkit_extents_count(more) == 0) {
                    if (nbdkit_extents_count(more) == 0)
                        *err = EINVAL;
                    nbdkit_extents_free(more);
                    goto fail;
                }
                y = nbdkit_get_extent(more, 0);
                nbdkit_extents_free(more);
            }
            len += y.length;
            type &= y.type;
        }
        if (nbdkit_add_extent(exts, offset, len - len % align, type) == -1)
            goto fail_errno;
        break;
    }
    nbdkit_extents_free(got);
    return 0;
fail_errno:
    *err = errno;
fail:
    nbdkit_extents_free(got);
    return -1;
}

/* ---- exports ---- */

struct nbdkit_exports {
    GArray *items;          /* struct nbdkit_export */
    bool use_default;
};

static void export_clear(gpointer p)
{
    struct nbdkit_export *x = p;
    free(x->name);
    free(x->description);
}

HOST_EXPORT struct nbdkit_exports *nbdkit_exports_new(void)
{
    struct nbdkit_exports *e = g_new0(struct nbdkit_exports, 1);
    e->items = g_array_new(FALSE, FALSE, sizeof(struct nbdkit_export));
    g_array_set_clear_func(e->items, export_clear);
    return e;
}

HOST_EXPORT void nbdkit_exports_free(struct nbdkit_exports *e)
{
    if (!e)
        return;
    g_array_unref(e->items);
    g_free(e);
}

HOST_EXPORT size_t nbdkit_exports_count(const struct nbdkit_exports *e)
{
    return e->items->len;
}

/* The header declares a const-qualified return type; match it. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-qualifiers"
HOST_EXPORT const struct nbdkit_export nbdkit_get_export(const struct nbdkit_exports *e, size_t i)
{
    g_assert(i < e->items->len);
    return g_array_index(e->items, struct nbdkit_export, i);
}
#pragma GCC diagnostic pop

HOST_EXPORT int nbdkit_add_export(struct nbdkit_exports *e, const char *name, const char *description)
{
    if (e->items->len >= MAX_EXPORTS) {
        nbdkit_error("nbdkit_add_export: too many exports");
        errno = EINVAL;
        return -1;
    }
    if (!name || strlen(name) > MAX_STRING) {
        nbdkit_error("nbdkit_add_export: %s", name ? "name too long" : "name must not be NULL");
        errno = EINVAL;
        return -1;
    }
    if (description && strlen(description) > MAX_STRING) {
        nbdkit_error("nbdkit_add_export: description too long");
        errno = EINVAL;
        return -1;
    }
    struct nbdkit_export x = { .name = strdup(name), .description = description ? strdup(description) : NULL };
    if (!x.name || (description && !x.description)) {
        nbdkit_error("nbdkit_add_export: strdup: %m");
        free(x.name);
        free(x.description);
        errno = ENOMEM;
        return -1;
    }
    g_array_append_val(e->items, x);
    return 0;
}

HOST_EXPORT int nbdkit_use_default_export(struct nbdkit_exports *e)
{
    e->use_default = true;
    return 0;
}

bool plugin_host_exports_use_default(const struct nbdkit_exports *e)
{
    return e->use_default;
}

/* ---- backend management: only nbdkit filters call these ---- */

HOST_EXPORT nbdkit_backend *nbdkit_context_get_backend(nbdkit_context *context)
{
    nbdkit_error("nbdkit_context_get_backend: blockd does not host nbdkit filters");
    return NULL;
}

HOST_EXPORT nbdkit_next *nbdkit_next_context_open(nbdkit_backend *backend, int readonly,
                                                  const char *exportname, int shared)
{
    nbdkit_error("nbdkit_next_context_open: blockd does not host nbdkit filters");
    return NULL;
}

HOST_EXPORT void nbdkit_next_context_close(nbdkit_next *next)
{
}

HOST_EXPORT nbdkit_next *nbdkit_context_set_next(nbdkit_context *context, nbdkit_next *next)
{
    nbdkit_error("nbdkit_context_set_next: blockd does not host nbdkit filters");
    return NULL;
}
