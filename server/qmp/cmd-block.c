/* QMP block-node commands: blockdev-add, blockdev-del, query-named-block-nodes.
 * Thin: the arguments arrive validated and typed; the node graph does the work. */
#include "server/qmp/commands.h"
#include "block/snapshot.h"
#include "block/node.h"
#include "bitmaps/dirty-bitmap.h"
#include "qapi/qapi-commands.h"

#include <string.h>
#include <sys/stat.h>

/* What query-named-block-nodes reports as a node's file name, by node name.
 * The node graph does not keep options, so blockdev-add remembers it here. */
static GHashTable *node_filenames;

static const char *filename_of(const char *node_name)
{
    const char *f = node_filenames ? g_hash_table_lookup(node_filenames, node_name) : NULL;
    return f ? f : "";
}

/* The file name QEMU would show for a new node: the image path for file
 * nodes, the child's for raw, "DRIVER://" for the ones without a file
 * (nbd and rbd: "" here, the driver reports QEMU's URI or json: name). */
static char *describe_filename(const BlockdevOptions *o)
{
    switch (o->driver) {
    case BLOCKDEV_DRIVER_FILE:
        return g_strdup(o->u.file.filename);
    case BLOCKDEV_DRIVER_RAW:
    case BLOCKDEV_DRIVER_QCOW2: {
        const BlockdevRef *ref = o->driver == BLOCKDEV_DRIVER_RAW ? o->u.raw.file : o->u.qcow2.file;
        if (ref->type == QAPI_QTYPE_QSTRING)
            return g_strdup(filename_of(ref->u.reference));
        return describe_filename(ref->u.definition);
    }
    case BLOCKDEV_DRIVER_BLKDEBUG: {
        /* QEMU's "blkdebug:CONFIG:IMAGE" while no other option is set. */
        const BlockdevOptionsBlkdebug *b = &o->u.blkdebug;
        if (b->has_align || b->has_max_transfer || b->has_opt_write_zero || b->has_max_write_zero ||
            b->has_opt_discard || b->has_max_discard || b->has_inject_error || b->has_set_state)
            return g_strdup("blkdebug://");
        g_autofree char *image = b->image->type == QAPI_QTYPE_QSTRING ? g_strdup(filename_of(b->image->u.reference))
                                                                      : describe_filename(b->image->u.definition);
        return g_strdup_printf("blkdebug:%s:%s", b->has_config ? b->config : "", image);
    }
    case BLOCKDEV_DRIVER_NBD:
    case BLOCKDEV_DRIVER_RBD:
        return g_strdup(""); /* the driver's image_info knows QEMU's URI or json: name */
    default:
        return g_strdup_printf("%s://", BlockdevDriver_str[o->driver]);
    }
}

bool qmp_blockdev_add_options(BlockdevOptions *options, GError **errp)
{
    if (!options->has_node_name) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "'node-name' must be specified for the root node");
        return false;
    }
    BlockNode *node = node_create(options, errp);
    if (!node)
        return false;
    /* Persistent dirty bitmaps of an image (and of its backing files) come back with its node. */
    dirty_bitmap_load_persistent_chain(node);
    if (!node_filenames)
        node_filenames = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_hash_table_replace(node_filenames, g_strdup(options->node_name), describe_filename(options));
    return true;
}

bool qmp_blockdev_add(QmpSession *session, BlockdevOptions *args, GError **errp)
{
    return qmp_blockdev_add_options(args, errp);
}

bool qmp_blockdev_del(QmpSession *session, q_obj_blockdev_del_arg *args, GError **errp)
{
    if (!node_delete(args->node_name, errp))
        return false;
    if (node_filenames)
        g_hash_table_remove(node_filenames, args->node_name);
    return true;
}

/* Length of a node's backing chain (format drivers report their backing). */
static int64_t backing_depth(BlockNode *node)
{
    BlockImageInfo img;
    int64_t depth = 0;
    while (depth < 1000 && node_image_info(node, &img) && img.backing) {
        depth++;
        node = img.backing;
    }
    return depth;
}

/* The file name QMP shows for a node. */
static const char *shown_filename(BlockNode *node, const BlockImageInfo *img, bool has_img)
{
    const char *file = filename_of(node_name(node));
    /* Nodes a format driver opened itself were not added through QMP. */
    if (!*file && node_filename(node))
        file = node_filename(node);
    if (!*file && has_img && img->filename)
        file = img->filename;
    return file;
}

/* QEMU's ImageInfo of a node; with `chain`, its backing images nested
 * (backing-image), as query-named-block-nodes shows them unless flat. */
static ImageInfo *image_info(BlockNode *node, bool chain, int depth)
{
    BlockImageInfo img;
    bool has_img = node_image_info(node, &img);
    const char *file = shown_filename(node, &img, has_img);
    ImageInfo *ii = g_new0(ImageInfo, 1);
    ii->filename = g_strdup(file);
    ii->format = g_strdup(node_driver_name(node));
    ii->virtual_size = (int64_t)node_size(node);
    /* QEMU 7.2 reports it (false) for drivers with bdrv_get_info. */
    static const char *const get_info_drivers[] = { "file", "host_device", "raw", "qcow2", NULL };
    ii->has_dirty_flag = g_strv_contains(get_info_drivers, node_driver_name(node));
    struct stat st;
    if (*file && stat(file, &st) == 0) {
        ii->has_actual_size = true;
        ii->actual_size = (int64_t)st.st_blocks * 512;
    }
    if (!has_img)
        return ii;
    if (img.cluster_size) {
        ii->has_cluster_size = true;
        ii->cluster_size = img.cluster_size;
    }
    if (img.backing_filename) {
        ii->has_backing_filename = ii->has_full_backing_filename = true;
        ii->backing_filename = g_strdup(img.backing_filename);
        ii->full_backing_filename =
            g_strdup(img.full_backing_filename ? img.full_backing_filename : img.backing_filename);
    }
    if (img.backing_format) {
        ii->has_backing_filename_format = true;
        ii->backing_filename_format = g_strdup(img.backing_format);
    }
    /* Internal snapshots, in table order (as QEMU: absent when none). */
    GArray *snaps = node_snapshot_list(node);
    if (snaps && snaps->len) {
        SnapshotInfoList **tail = &ii->snapshots;
        for (guint i = 0; i < snaps->len; i++) {
            *tail = g_new0(SnapshotInfoList, 1);
            (*tail)->value = qmp_snapshot_info(&g_array_index(snaps, BlockSnapshot, i));
            tail = &(*tail)->next;
        }
        ii->has_snapshots = true;
    }
    if (snaps)
        block_snapshot_list_free(snaps);
    if (chain && img.backing && depth < 1000) {
        ii->has_backing_image = true;
        ii->backing_image = image_info(img.backing, true, depth + 1);
    }
    return ii;
}

static BlockDeviceInfo *node_info(BlockNode *node, bool flat)
{
    BlockDeviceInfo *info = g_new0(BlockDeviceInfo, 1);
    BlockImageInfo img;
    bool has_img = node_image_info(node, &img);
    info->file = g_strdup(shown_filename(node, &img, has_img));
    info->has_node_name = true;
    info->node_name = g_strdup(node_name(node));
    info->ro = node_read_only(node);
    info->drv = g_strdup(node_driver_name(node));
    info->detect_zeroes = BLOCKDEV_DETECT_ZEROES_OPTIONS_OFF;
    info->image = image_info(node, !flat, 0);
    if (has_img) {
        /* QEMU shows the backing file's full name here. */
        if (info->image->has_full_backing_filename) {
            info->has_backing_file = true;
            info->backing_file = g_strdup(info->image->full_backing_filename);
        }
        info->backing_file_depth = backing_depth(node);
    }
    info->cache = g_new0(BlockdevCacheInfo, 1);
    info->cache->writeback = true;
    /* Dirty bitmaps, newest first as QEMU lists them; absent when none. */
    g_autoptr(GPtrArray) bitmaps = dirty_bitmap_list(node);
    BlockDirtyInfoList **tail = &info->dirty_bitmaps;
    for (guint i = 0; i < bitmaps->len; i++) {
        DirtyBitmap *bm = bitmaps->pdata[i];
        BlockDirtyInfo *d = g_new0(BlockDirtyInfo, 1);
        d->has_name = true;
        d->name = g_strdup(dirty_bitmap_name(bm));
        d->count = (int64_t)dirty_bitmap_count(bm);
        d->granularity = dirty_bitmap_granularity(bm);
        d->recording = dirty_bitmap_recording(bm);
        d->busy = dirty_bitmap_busy(bm);
        d->persistent = dirty_bitmap_persistent(bm);
        d->has_inconsistent = d->inconsistent = dirty_bitmap_inconsistent(bm);
        *tail = g_new0(BlockDirtyInfoList, 1);
        (*tail)->value = d;
        tail = &(*tail)->next;
    }
    info->has_dirty_bitmaps = bitmaps->len > 0;
    return info;
}

bool qmp_query_named_block_nodes(QmpSession *session, q_obj_query_named_block_nodes_arg *args,
                                 BlockDeviceInfoList **ret, GError **errp)
{
    /* QEMU lists the newest node first: prepend in creation order. */
    g_autoptr(GPtrArray) nodes = node_list();
    BlockDeviceInfoList *head = NULL;
    for (guint i = 0; i < nodes->len; i++) {
        BlockDeviceInfoList *e = g_new0(BlockDeviceInfoList, 1);
        e->value = node_info(nodes->pdata[i], args->has_flat && args->flat);
        e->next = head;
        head = e;
    }
    *ret = head;
    return true;
}

void qmp_block_forget_all(void)
{
    if (node_filenames)
        g_hash_table_destroy(node_filenames);
    node_filenames = NULL;
}
