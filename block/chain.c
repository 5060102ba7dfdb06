/* Backing chains (see chain.h). */
#include "block/chain.h"
#include "block/error.h"
#include "block/allocation-depth.h"
#include "block/driver.h"
#include "block/node-internal.h"
#include "block/user.h"
#include "qapi/qapi-visit.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <gio/gio.h>

BlockNode *chain_backing(BlockNode *node)
{
    BlockImageInfo info;
    return node && node_image_info(node, &info) ? info.backing : NULL;
}

bool chain_contains(BlockNode *top, BlockNode *node)
{
    for (BlockNode *n = top; n; n = chain_backing(n)) {
        if (n == node)
            return true;
    }
    return false;
}

BlockNode *chain_overlay(BlockNode *top, BlockNode *node)
{
    for (BlockNode *n = top; n; n = chain_backing(n)) {
        if (chain_backing(n) == node)
            return n;
    }
    return NULL;
}

BlockNode *chain_bottom(BlockNode *top)
{
    BlockNode *n = top;
    while (chain_backing(n))
        n = chain_backing(n);
    return n;
}

/* The canonical path of `name` taken relative to the directory of `image`
 * (a file name, or NULL), or NULL if it does not resolve. */
static char *canonical(const char *image, const char *name)
{
    g_autofree char *path = NULL;
    if (g_path_is_absolute(name) || !image) {
        path = g_strdup(name);
    } else {
        g_autofree char *dir = g_path_get_dirname(image);
        path = g_build_filename(dir, name, NULL);
    }
    char buf[PATH_MAX];
    return realpath(path, buf) ? g_strdup(buf) : NULL;
}

/* QEMU's bdrv_backing_overridden: the backing node was not opened from the
 * image's header (named by node name, or set since). */
static bool backing_overridden(BlockNode *n)
{
    BlockNode *b = chain_backing(n);
    return b && !node_is_implicit_child(n, b);
}

BlockNode *chain_find_image(BlockNode *top, const char *filename)
{
    /* QEMU compares protocol names (nbd://...) as strings and file names
     * as canonical paths, `filename` taken relative to each overlay. */
    bool is_protocol = strstr(filename, "://") != NULL;
    for (BlockNode *n = top; chain_backing(n); n = chain_backing(n)) {
        BlockNode *below = chain_backing(n);
        if (backing_overridden(n)) {
            /* QEMU then compares with the backing node's own file name,
             * which is a "json:" pseudo name (matching nothing) when its
             * backing is overridden too. */
            BlockImageInfo bi;
            const char *name = node_image_info(below, &bi) && bi.filename ? bi.filename : node_filename(below);
            if (!backing_overridden(below) && name && strcmp(filename, name) == 0)
                return below;
            continue;
        }
        BlockImageInfo info;
        node_image_info(n, &info);
        if (!info.backing_filename)
            continue;
        if (is_protocol || strstr(info.backing_filename, "://")) {
            if (strcmp(filename, info.backing_filename) == 0 ||
                (info.full_backing_filename && strcmp(filename, info.full_backing_filename) == 0))
                return info.backing;
            continue;
        }
        g_autofree char *wanted = canonical(info.filename, filename);
        g_autofree char *have = info.full_backing_filename ? canonical(NULL, info.full_backing_filename) : NULL;
        if (wanted && have && strcmp(wanted, have) == 0)
            return info.backing;
    }
    return NULL;
}

static BlockNode *lookup_node(const char *name, GError **errp)
{
    BlockNode *n = node_find(name);
    if (!n)
        block_fail(errp, "Cannot find device='' nor node-name='%s'", name);
    return n;
}

/* QEMU's op blocker walk: every node from `from` down to, not including, `end`. */
static bool check_ops_down_to(BlockNode *from, BlockNode *end, GError **errp)
{
    for (BlockNode *n = from; n && n != end; n = chain_backing(n)) {
        if (!node_check_ops(n, errp))
            return false;
    }
    return true;
}

bool chain_resolve_stream(const char *device, const char *base, const char *base_node, const char *bottom,
                          const char *backing_file, ChainStreamRange *out, GError **errp)
{
    memset(out, 0, sizeof(*out));
    if (base && base_node)
        return block_fail(errp, "'base' and 'base-node' cannot be specified at the same time");
    if (base && bottom)
        return block_fail(errp, "'base' and 'bottom' cannot be specified at the same time");
    if (bottom && base_node)
        return block_fail(errp, "'bottom' and 'base-node' cannot be specified at the same time");
    BlockNode *top = node_find(device);
    if (!top)
        return block_fail(errp, "Cannot find device='%s' nor node-name='%s'", device, device);
    BlockNode *base_bs = NULL, *bottom_bs = NULL;
    if (base) {
        base_bs = chain_find_image(top, base);
        if (!base_bs)
            return block_fail(errp, "Can't find '%s' in the backing chain", base);
    }
    if (base_node) {
        if (!(base_bs = lookup_node(base_node, errp)))
            return false;
        if (base_bs == top || !chain_contains(top, base_bs))
            return block_fail(errp, "Node '%s' is not a backing image of '%s'", base_node, device);
    }
    if (bottom) {
        if (!(bottom_bs = lookup_node(bottom, errp)))
            return false;
        if (!chain_contains(top, bottom_bs))
            return block_fail(errp, "Node '%s' is not in a chain starting from '%s'", bottom, device);
    }
    BlockNode *end = bottom_bs ? chain_backing(bottom_bs) : base_bs;
    if (!check_ops_down_to(top, end, errp))
        return false;
    if (!base_bs && backing_file)
        return block_fail(errp, "backing file specified, but streaming the entire chain");
    out->top = top;
    if (bottom_bs) {
        out->bottom = bottom_bs;
        out->base = chain_backing(bottom_bs);
    } else {
        out->base = base_bs;
        out->bottom = base_bs ? chain_overlay(top, base_bs) : chain_bottom(top);
    }
    return true;
}

bool chain_resolve_commit(const char *device, const char *top, const char *top_node, const char *base,
                          const char *base_node, ChainCommitRange *out, GError **errp)
{
    memset(out, 0, sizeof(*out));
    BlockNode *root = node_find(device);
    /* libvirt probes for this class, so the lookup comes first (QEMU's note). */
    if (!root) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_DEVICE_NOT_FOUND, "Device '%s' not found", device);
        return false;
    }
    /* A node a job works on has that job as a parent in QEMU (a mirror's
     * or commit's filter, the job's own edge), so it is no root then. */
    if (node_has_parent(root) || !node_check_ops(root, NULL))
        return block_fail(errp, "Need a root block node");
    BlockNode *top_bs = root;
    if (top_node && top)
        return block_fail(errp, "'top-node' and 'top' are mutually exclusive");
    if (top_node) {
        if (!(top_bs = lookup_node(top_node, errp)))
            return false;
        if (!chain_contains(root, top_bs))
            return block_fail(errp, "'%s' is not in this backing file chain", top_node);
    } else if (top) {
        const char *fn = node_filename(root);
        BlockImageInfo info;
        if (node_image_info(root, &info) && info.filename)
            fn = info.filename;
        if (!fn || strcmp(fn, top) != 0)
            top_bs = chain_find_image(root, top);
    }
    if (!top_bs)
        return block_fail(errp, "Top image file %s not found", top ? top : "NULL");
    BlockNode *base_bs;
    if (base_node && base)
        return block_fail(errp, "'base-node' and 'base' are mutually exclusive");
    if (base_node) {
        if (!(base_bs = lookup_node(base_node, errp)))
            return false;
        if (!chain_contains(top_bs, base_bs))
            return block_fail(errp, "'%s' is not in this backing file chain", base_node);
    } else if (base) {
        if (!(base_bs = chain_find_image(top_bs, base)))
            return block_fail(errp, "Can't find '%s' in the backing chain", base);
    } else {
        base_bs = chain_bottom(top_bs);
        if (!base_bs)
            return block_fail(errp, "There is no backimg image");
    }
    if (!check_ops_down_to(top_bs, chain_backing(base_bs), errp))
        return false;
    if (top_bs == base_bs)
        return block_fail(errp, "cannot commit an image into itself");
    out->root = root;
    out->top = top_bs;
    out->base = base_bs;
    return true;
}

int chain_is_allocated_above(BlockNode *top, BlockNode *base, uint64_t offset, uint64_t bytes, uint64_t *pnum)
{
    g_assert(top != base && (!base || chain_contains(top, base)));
    g_assert(offset <= node_size(top));
    *pnum = 0;
    bytes = MIN(bytes, node_size(top) - offset);
    if (bytes == 0)
        return 0;
    uint32_t count = (uint32_t)MIN(bytes, (uint64_t)1 << 30);
    BlockExtents *ext = extents_new(offset, offset + count);
    if (!ext)
        return -ERANGE;
    int r = node_allocation_depth_above(top, base, count, offset, 0, ext);
    int allocated = 0;
    if (r == 0 && extents_count(ext) > 0) {
        /* The first run of one answer, across the layers that give it. */
        allocated = extents_get(ext, 0).type != 0;
        uint64_t end = offset;
        for (size_t i = 0; i < extents_count(ext); i++) {
            BlockExtent e = extents_get(ext, i);
            if ((e.type != 0) != allocated)
                break;
            end = e.offset + e.length;
        }
        *pnum = MIN(end, offset + count) - offset;
    } else if (r == 0) {
        r = -EIO;   /* a driver reported nothing for a non-empty range */
    }
    extents_free(ext);
    return r < 0 ? r : allocated;
}

/* The nodes from `above`'s backing node down to, not including, `keep`. */
static GPtrArray *falling_out(BlockNode *above, BlockNode *keep)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)node_unref);
    for (BlockNode *n = chain_backing(above); n && n != keep; n = chain_backing(n))
        g_ptr_array_add(out, node_ref(n));
    return out;
}

bool chain_relink(BlockNode *above, BlockNode *new_backing, const char *backing_file, GError **errp)
{
    g_assert(above != new_backing && (!new_backing || chain_contains(above, new_backing)));
    BlockNode *old = chain_backing(above);
    if (old == new_backing)
        return true;
    if (!above->drv->set_backing || !above->drv->change_backing_file)
        return block_fail(errp, "Node '%s' cannot change its backing file", node_name(above));
    const char *name = NULL, *fmt = NULL;
    BlockImageInfo info = { 0 };
    if (new_backing) {
        /* QEMU's stream_prepare: the name given, else the image's file
         * name; the format is the node's driver, unless it is a protocol. */
        name = backing_file;
        if (!name)
            name = node_image_info(new_backing, &info) && info.filename ? info.filename : node_filename(new_backing);
        if (!name)
            return block_fail(errp, "Node '%s' has no file name to record as backing file", node_name(new_backing));
        fmt = node_driver_name(new_backing);
    }
    g_autoptr(GPtrArray) fallen = falling_out(above, new_backing);
    node_drain_begin(above);
    bool ok = node_set_backing(above, new_backing, errp);
    if (ok && !node_change_backing_file(above, name, fmt, errp)) {
        /* Back to the old link, which asks for nothing new. */
        if (!node_set_backing(above, old, NULL))
            g_error("restoring the backing node of '%s'", node_name(above));
        ok = false;
    }
    node_drain_end(above);
    if (!ok)
        return false;
    /* The node above keeps what a leaving node had opened for it ... */
    if (new_backing && fallen->len > 0 && node_is_implicit_child(fallen->pdata[fallen->len - 1], new_backing))
        node_adopt_implicit_child(fallen->pdata[fallen->len - 1], above, new_backing);
    /* ... and closes what it had opened itself (which closes what that had
     * opened, down the chain), once our own references are gone. */
    g_ptr_array_set_size(fallen, 0);
    node_release_implicit_child(above, old);
    return true;
}
