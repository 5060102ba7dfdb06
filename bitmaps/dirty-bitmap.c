/* Named dirty bitmaps on a node (see bitmaps/dirty-bitmap.h). */
#define G_LOG_DOMAIN "blockd-bitmaps"
#include "bitmaps/dirty-bitmap.h"
#include "bitmaps/bitmap-store.h"
#include "block/chain.h"

#include <gio/gio.h>

#include <errno.h>
#include <string.h>

#define MAX_NAME 1023

/* Everything bitmap-related about one node. */
typedef struct NodeBitmaps {
    BlockNode *node;
    /* Writers hold it for reading while they mark bits; anything that
     * clears bits or changes the list holds it for writing. */
    GRWLock lock;
    GPtrArray *bitmaps;      /* DirtyBitmap *, creation order */
    NodeWriteHook *hook;     /* before-write, installed while there is a bitmap */
    NodeWriteHook *done_hook; /* after-write, likewise */
    BitmapStore *store;      /* sidecar or image, for nodes with persistent bitmaps */
    bool loaded;             /* the image's bitmaps were loaded (dirty_bitmap_load_persistent) */
} NodeBitmaps;

struct DirtyBitmap {
    NodeBitmaps *nb;
    char *name;
    uint32_t granularity;
    uint64_t size;
    HBitmap *bits;
    HBitmap *durable;        /* persistent: granules already on stable storage */
    uint64_t data_offset;    /* persistent: where the words live (0: not updated in place) */
    bool enabled, persistent, inconsistent, readonly;
    bool reset;              /* persistent: bits were cleared (or it is new) since the last store */
    gint busy;
};

static GMutex registry_lock;
static GHashTable *registry; /* BlockNode * -> NodeBitmaps * */

static void dirty_bitmap_free(DirtyBitmap *bm)
{
    hbitmap_free(bm->bits);
    hbitmap_free(bm->durable);
    g_free(bm->name);
    g_free(bm);
}

/* Stores every persistent bitmap of the node (whole-file rewrite).  Called
 * inside a change (change_begin), so no writer marks bits meanwhile: every
 * run queued before the change is covered by what is written here, and the
 * data offsets the writers use change only while they are excluded. */
static bool store_all_locked(NodeBitmaps *nb, bool clean, GError **errp)
{
    /* A read-only image's bitmaps are read-only: nothing to store. */
    if (!nb->store || node_read_only(nb->node))
        return true;
    g_autoptr(GPtrArray) entries = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < nb->bitmaps->len; i++) {
        DirtyBitmap *bm = nb->bitmaps->pdata[i];
        if (!bm->persistent)
            continue;
        StoredBitmap *sb = g_new0(StoredBitmap, 1);
        sb->name = bm->name;
        sb->granularity = bm->granularity;
        sb->node_size = bm->size;
        sb->enabled = bm->enabled;
        sb->inconsistent = bm->inconsistent;
        sb->reset = bm->reset;
        sb->bits = bm->bits;
        sb->durable = bm->durable;
        g_ptr_array_add(entries, sb);
    }
    if (!bitmap_store_rewrite(nb->store, entries, clean, errp))
        return false;
    guint k = 0;
    for (guint i = 0; i < nb->bitmaps->len; i++) {
        DirtyBitmap *bm = nb->bitmaps->pdata[i];
        if (bm->persistent) {
            bm->data_offset = ((StoredBitmap *)entries->pdata[k++])->data_offset;
            bm->reset = false;
        }
    }
    return true;
}

static void update_hook(NodeBitmaps *nb);

/* A change of the node's bitmaps (list, bits other than by marking, states):
 * writers are held off their marking and the sidecar's group commit is
 * stopped between change_begin and change_end. */
static void change_begin(NodeBitmaps *nb)
{
    g_rw_lock_writer_lock(&nb->lock);
    if (nb->store)
        bitmap_store_quiesce(nb->store);
}

/* Ends a change; with `persist` the sidecar is rewritten first.  A failed
 * rewrite is reported but not fatal: the in-memory bitmaps stay right, the
 * old file still covers what it covered (runs queued for it stay queued),
 * and the next rewrite retries.  The write hook is updated last, outside the
 * locks, because removing it waits for writers that may be waiting here. */
static bool change_end(NodeBitmaps *nb, bool persist, bool clean, GError **errp)
{
    g_autoptr(GError) local = NULL;
    bool ok = !persist || store_all_locked(nb, clean, errp ? errp : &local);
    if (local)
        g_message("%s", local->message);
    if (nb->store)
        bitmap_store_resume(nb->store);
    g_rw_lock_writer_unlock(&nb->lock);
    update_hook(nb);
    return ok;
}

/* Marks the range in every enabled bitmap; for persistent ones the marks are
 * queued for the sidecar and the returned ticket (0: none) must be waited for. */
static uint64_t mark_locked(NodeBitmaps *nb, uint64_t offset, uint64_t count)
{
    uint64_t ticket = 0;
    for (guint i = 0; i < nb->bitmaps->len; i++) {
        DirtyBitmap *bm = nb->bitmaps->pdata[i];
        if (!bm->enabled || offset >= bm->size)
            continue;
        uint64_t end = MIN(offset + count, bm->size);
        uint64_t first = offset / bm->granularity, last = (end - 1) / bm->granularity;
        if (bm->durable && nb->store && bm->data_offset) {
            if (hbitmap_all_set(bm->durable, first, last - first + 1))
                continue;
            hbitmap_set(bm->bits, first, last - first + 1);
            ticket = bitmap_store_enqueue(nb->store, bm->data_offset, bm->bits, bm->durable,
                                          first / 64, last / 64);
        } else if (!hbitmap_all_set(bm->bits, first, last - first + 1)) {
            hbitmap_set(bm->bits, first, last - first + 1);
        }
    }
    return ticket;
}

/* The before-write hook: marks the range in every enabled bitmap, and for
 * persistent ones waits until the marks are on stable storage, so the data
 * never lands (even partly, before a crash) outside a stored bitmap. */
static int track_write(BlockNode *node, uint64_t offset, uint64_t count, NodeWriteKind kind, void *opaque)
{
    NodeBitmaps *nb = opaque;
    g_rw_lock_reader_lock(&nb->lock);
    uint64_t ticket = mark_locked(nb, offset, count);
    g_rw_lock_reader_unlock(&nb->lock);
    return ticket ? bitmap_store_wait(nb->store, ticket) : 0;
}

/* The after-write hook: marks again before the write is acknowledged.  A
 * bitmap change between the two marks (a clear, an enable, an add) must not
 * miss a write whose data landed after it; QEMU marks only here.  The common
 * case costs a check that the bits are already set and durable.  A failure
 * to store the marks fails nothing now: the data is written and its granules
 * stay not-durable, so the next write there retries. */
static void track_write_done(BlockNode *node, const void *buf, uint64_t offset, uint64_t count,
                             NodeWriteKind kind, int result, void *opaque)
{
    NodeBitmaps *nb = opaque;
    g_rw_lock_reader_lock(&nb->lock);
    uint64_t ticket = mark_locked(nb, offset, count);
    g_rw_lock_reader_unlock(&nb->lock);
    if (ticket)
        bitmap_store_wait(nb->store, ticket);
}

static void node_closing(BlockNode *node, void *opaque)
{
    NodeBitmaps *nb = opaque;
    change_begin(nb);
    change_end(nb, true, true, NULL); /* the clean store, with checksums */
    g_mutex_lock(&registry_lock);
    g_hash_table_remove(registry, node);
    g_mutex_unlock(&registry_lock);
    if (nb->hook)
        node_remove_before_write_hook(node, nb->hook);
    if (nb->done_hook)
        node_remove_before_write_hook(node, nb->done_hook);
    g_ptr_array_free(nb->bitmaps, TRUE);
    bitmap_store_free(nb->store);
    g_rw_lock_clear(&nb->lock);
    g_free(nb);
}

/* The first `nbits` bits of `old` in a bitmap of that many (the rest clear). */
static HBitmap *bits_resized(const HBitmap *old, uint64_t nbits)
{
    HBitmap *hb = hbitmap_new(nbits);
    uint64_t words = MIN((hbitmap_size(old) + 63) / 64, (nbits + 63) / 64);
    for (uint64_t w = 0; w < words; w++) {
        uint64_t v = hbitmap_word(old, w);
        if (w == nbits / 64 && nbits % 64)
            v &= (UINT64_C(1) << (nbits % 64)) - 1;
        if (v)
            hbitmap_or_word(hb, w, v);
    }
    return hb;
}

/* block_resize: every bitmap covers the new size (QEMU's
 * bdrv_dirty_bitmap_truncate): bits past a smaller end are gone, a larger
 * end adds clean granules; persistent ones are stored again. */
static void node_resized(BlockNode *node, void *opaque)
{
    NodeBitmaps *nb = opaque;
    uint64_t size = node_size(node);
    change_begin(nb);
    bool persist = false;
    for (guint i = 0; i < nb->bitmaps->len; i++) {
        DirtyBitmap *bm = nb->bitmaps->pdata[i];
        uint64_t nbits = (size + bm->granularity - 1) / bm->granularity;
        HBitmap *bits = bits_resized(bm->bits, nbits);
        hbitmap_free(bm->bits);
        bm->bits = bits;
        if (bm->durable) {
            HBitmap *durable = bits_resized(bm->durable, nbits);
            hbitmap_free(bm->durable);
            bm->durable = durable;
        }
        bm->size = size;
        persist |= bm->persistent;
    }
    change_end(nb, persist, false, NULL);
}

/* node_reopen_read_only (a commit or stream reopening a read-only image):
 * persistent bitmaps follow the node, as QEMU's qcow2_reopen_bitmaps_rw
 * and _ro do.  Going read-write, they become writable and are stored in
 * use with blockd's crash-safe marks, so the job's writes are tracked as
 * any other; going read-only, they are stored clean first (while the node
 * can still write), then become read-only. */
/* Persistent bitmaps read-only: nothing is stored or updated in place. */
static void persistent_read_only_locked(NodeBitmaps *nb)
{
    for (guint i = 0; i < nb->bitmaps->len; i++) {
        DirtyBitmap *bm = nb->bitmaps->pdata[i];
        if (!bm->persistent)
            continue;
        bm->readonly = true;
        g_clear_pointer(&bm->durable, hbitmap_free);
        bm->data_offset = 0;
    }
}

static bool node_reopening(BlockNode *node, bool read_only, void *opaque, GError **errp)
{
    NodeBitmaps *nb = opaque;
    if (!nb->store)
        return true;
    change_begin(nb);
    bool ok;
    if (read_only) {
        ok = store_all_locked(nb, true, errp);
        if (ok)
            persistent_read_only_locked(nb);
    } else {
        for (guint i = 0; i < nb->bitmaps->len; i++) {
            DirtyBitmap *bm = nb->bitmaps->pdata[i];
            if (bm->persistent && bm->readonly) {
                bm->readonly = false;
                bm->durable = hbitmap_copy(bm->bits); /* what the read-only image holds */
            }
        }
        ok = store_all_locked(nb, false, errp);
        if (!ok)
            persistent_read_only_locked(nb);
    }
    change_end(nb, false, false, NULL);
    return ok;
}

static NodeBitmaps *node_bitmaps(BlockNode *node, bool create)
{
    g_mutex_lock(&registry_lock);
    if (!registry)
        registry = g_hash_table_new(g_direct_hash, g_direct_equal);
    NodeBitmaps *nb = g_hash_table_lookup(registry, node);
    if (!nb && create) {
        nb = g_new0(NodeBitmaps, 1);
        nb->node = node;
        g_rw_lock_init(&nb->lock);
        nb->bitmaps = g_ptr_array_new_with_free_func((GDestroyNotify)dirty_bitmap_free);
        g_hash_table_insert(registry, node, nb);
        node_add_close_notifier(node, node_closing, nb);
        node_add_resize_notifier(node, node_resized, nb);
        node_add_reopen_notifier(node, node_reopening, nb);
    }
    g_mutex_unlock(&registry_lock);
    return nb;
}

/* Keeps the write hooks installed exactly while the node has bitmaps, so
 * nodes without bitmaps pay nothing on the write path. */
static void update_hook(NodeBitmaps *nb)
{
    if (nb->bitmaps->len && !nb->hook) {
        nb->hook = node_add_before_write_hook(nb->node, NODE_HOOK_ORDER_DIRTY_BITMAP, track_write, nb);
        nb->done_hook = node_add_after_write_hook(nb->node, NODE_HOOK_ORDER_DIRTY_BITMAP, track_write_done, nb);
    } else if (!nb->bitmaps->len && nb->hook) {
        node_remove_before_write_hook(nb->node, nb->hook);
        node_remove_before_write_hook(nb->node, nb->done_hook);
        nb->hook = nb->done_hook = NULL;
    }
}

/* NULL when the bits do not fit in memory (a huge node, a small granularity). */
static DirtyBitmap *bitmap_new(NodeBitmaps *nb, const char *name, uint32_t granularity)
{
    uint64_t size = node_size(nb->node);
    HBitmap *bits = hbitmap_try_new((size + granularity - 1) / granularity);
    if (!bits)
        return NULL;
    DirtyBitmap *bm = g_new0(DirtyBitmap, 1);
    bm->nb = nb;
    bm->name = g_strdup(name);
    bm->granularity = granularity;
    bm->size = size;
    bm->bits = bits;
    return bm;
}

uint32_t dirty_bitmap_default_granularity(BlockNode *node)
{
    /* QEMU's bdrv_get_default_bitmap_granularity: the cluster size, within
     * 4 KiB .. 64 KiB; 64 KiB for nodes without clusters. */
    BlockImageInfo info;
    if (node_image_info(node, &info) && info.cluster_size)
        return MIN(MAX(info.cluster_size, 4096u), 65536u);
    return 65536;
}

DirtyBitmap *dirty_bitmap_find(BlockNode *node, const char *name)
{
    NodeBitmaps *nb = node_bitmaps(node, false);
    if (!nb)
        return NULL;
    for (guint i = 0; i < nb->bitmaps->len; i++) {
        DirtyBitmap *bm = nb->bitmaps->pdata[i];
        if (strcmp(bm->name, name) == 0)
            return bm;
    }
    return NULL;
}

DirtyBitmap *dirty_bitmap_create(BlockNode *node, const char *name, uint32_t granularity,
                                 bool persistent, bool disabled, GError **errp)
{
    if (granularity < 512 || (granularity & (granularity - 1))) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Granularity must be power of 2 and at least 512");
        return NULL;
    }
    bool in_image = persistent && node_bitmaps_supported(node);
    if (in_image) {
        /* The image's own bitmaps first: a store writes the whole set. */
        NodeBitmaps *known = node_bitmaps(node, false);
        if (!known || !known->loaded)
            dirty_bitmap_load_persistent(node);
        /* QEMU's order (qcow2_co_can_store_new_dirty_bitmap): the name is
         * free, then the image's limits. */
        if (dirty_bitmap_find(node, name)) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_EXISTS, "Bitmap already exists: %s", name);
            return NULL;
        }
        NodeBitmaps *nb = node_bitmaps(node, false);
        g_autoptr(GPtrArray) names = g_ptr_array_new();
        for (guint i = 0; nb && i < nb->bitmaps->len; i++) {
            DirtyBitmap *other = nb->bitmaps->pdata[i];
            if (other->persistent)
                g_ptr_array_add(names, other->name);
        }
        GError *why = NULL;
        if (!node_bitmaps_can_add(node, name, granularity, (const char *const *)names->pdata, names->len, &why)) {
            g_set_error(errp, why->domain, why->code, "Can't make bitmap '%s' persistent in '%s': %s",
                        name, node_name(node), why->message);
            g_error_free(why);
            return NULL;
        }
    } else if (persistent) {
        /* Raw images keep persistent bitmaps in a sidecar, so only nodes
         * that are an image file can store them. */
        if (!node_filename(node) || node_read_only(node)) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                        "Can't store persistent bitmaps to %s: Operation not supported", node_name(node));
            return NULL;
        }
        if (strlen(name) > MAX_NAME) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "Can't make bitmap '%s' persistent in '%s': Name length exceeds maximum (%d characters)",
                        name, node_name(node), MAX_NAME);
            return NULL;
        }
    }
    if (dirty_bitmap_find(node, name)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_EXISTS, "Bitmap already exists: %s", name);
        return NULL;
    }
    if (strlen(name) > MAX_NAME) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Bitmap name too long: %s", name);
        return NULL;
    }
    NodeBitmaps *nb = node_bitmaps(node, true);
    DirtyBitmap *bm = bitmap_new(nb, name, granularity);
    if (!bm) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NO_SPACE,
                    "Cannot allocate bitmap '%s': node '%s' is too large for granularity %u",
                    name, node_name(node), granularity);
        return NULL;
    }
    bm->enabled = !disabled;
    bm->persistent = persistent;
    bm->reset = true; /* nothing of it is stored yet */
    if (persistent)
        bm->durable = hbitmap_new(hbitmap_size(bm->bits));
    change_begin(nb);
    if (persistent && !nb->store) {
        if (in_image) {
            nb->store = bitmap_store_new_image(node);
        } else {
            g_autofree char *path = bitmap_store_path_for(node_filename(node));
            nb->store = bitmap_store_new(path);
        }
        bitmap_store_quiesce(nb->store); /* change_end resumes it */
    }
    g_ptr_array_add(nb->bitmaps, bm);
    if (persistent && !store_all_locked(nb, false, errp)) {
        /* Not stored, so not added: nothing was queued for it (the lock
         * kept writers out), so it can go at once. */
        g_ptr_array_remove(nb->bitmaps, bm);
        change_end(nb, false, false, NULL);
        return NULL;
    }
    change_end(nb, false, false, NULL);
    return bm;
}

DirtyBitmap *dirty_bitmap_lookup(const char *node_name_, const char *name, BlockNode **node_out,
                                 GError **errp)
{
    BlockNode *node = node_find(node_name_);
    if (!node) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "Node '%s' not found", node_name_);
        return NULL;
    }
    if (node_out)
        *node_out = node;
    DirtyBitmap *bm = dirty_bitmap_find(node, name);
    if (!bm)
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "Dirty bitmap '%s' not found", name);
    return bm;
}

bool dirty_bitmap_check(DirtyBitmap *bm, unsigned flags, GError **errp)
{
    if (dirty_bitmap_busy(bm)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_BUSY,
                    "Bitmap '%s' is currently in use by another operation and cannot be used", bm->name);
        return false;
    }
    if (!(flags & DIRTY_BITMAP_ALLOW_RO) && bm->readonly) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_READ_ONLY,
                    "Bitmap '%s' is readonly and cannot be modified", bm->name);
        return false;
    }
    if (bm->inconsistent) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "Bitmap '%s' is inconsistent and cannot be used", bm->name);
        return false;
    }
    return true;
}

GPtrArray *dirty_bitmap_list(BlockNode *node)
{
    GPtrArray *list = g_ptr_array_new();
    NodeBitmaps *nb = node_bitmaps(node, false);
    for (guint i = nb ? nb->bitmaps->len : 0; i > 0; i--)
        g_ptr_array_add(list, nb->bitmaps->pdata[i - 1]);
    return list;
}

bool dirty_bitmap_remove(DirtyBitmap *bm, GError **errp)
{
    if (dirty_bitmap_busy(bm)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_BUSY,
                    "Bitmap '%s' is currently in use by another operation and cannot be used", bm->name);
        return false;
    }
    if (bm->readonly) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_READ_ONLY,
                    "Bitmap '%s' is readonly and cannot be modified", bm->name);
        return false;
    }
    NodeBitmaps *nb = bm->nb;
    change_begin(nb);
    guint index;
    g_assert(g_ptr_array_find(nb->bitmaps, bm, &index));
    g_ptr_array_steal_index(nb->bitmaps, index);
    /* Writers that marked it may still wait for their runs: drop those
     * runs now that no flush is running, before the bits are freed. */
    if (nb->store)
        bitmap_store_forget(nb->store, bm->bits);
    change_end(nb, bm->persistent, false, NULL);
    dirty_bitmap_free(bm);
    return true;
}

void dirty_bitmap_clear(DirtyBitmap *bm, HBitmap **backup)
{
    NodeBitmaps *nb = bm->nb;
    change_begin(nb);
    if (backup)
        *backup = hbitmap_copy(bm->bits);
    hbitmap_reset_all(bm->bits);
    if (bm->durable)
        hbitmap_reset_all(bm->durable);
    bm->reset = true;
    change_end(nb, bm->persistent, false, NULL);
}

void dirty_bitmap_restore(DirtyBitmap *bm, HBitmap *saved, bool keep_new_writes)
{
    NodeBitmaps *nb = bm->nb;
    /* The bits are changed in place: queued runs point at bm->bits. */
    change_begin(nb);
    if (!keep_new_writes) {
        hbitmap_reset_all(bm->bits);
        /* Writes skip granules marked durable: they must be re-marked. */
        if (bm->durable)
            hbitmap_reset_all(bm->durable);
        bm->reset = true;
    }
    hbitmap_merge(bm->bits, saved);
    hbitmap_free(saved);
    change_end(nb, bm->persistent, false, NULL);
}

void dirty_bitmap_replace(DirtyBitmap *bm, HBitmap *(*make)(void *opaque), void *opaque)
{
    NodeBitmaps *nb = bm->nb;
    change_begin(nb);
    HBitmap *bits = make(opaque);
    g_assert(hbitmap_size(bits) == hbitmap_size(bm->bits));
    hbitmap_reset_all(bm->bits);
    if (bm->durable)
        hbitmap_reset_all(bm->durable); /* writes must mark what is no longer stored */
    bm->reset = true;
    hbitmap_merge(bm->bits, bits);
    hbitmap_free(bits);
    change_end(nb, bm->persistent, false, NULL);
}

void dirty_bitmap_set_enabled(DirtyBitmap *bm, bool enabled)
{
    NodeBitmaps *nb = bm->nb;
    change_begin(nb);
    bool changed = bm->enabled != enabled;
    bm->enabled = enabled;
    change_end(nb, changed && bm->persistent, false, NULL);
}

/* ORs src into dst, converting granularity when they differ. */
static void merge_bits(DirtyBitmap *dst, HBitmap *dst_bits, DirtyBitmap *src)
{
    if (src->granularity == dst->granularity) {
        hbitmap_merge(dst_bits, src->bits);
        return;
    }
    uint64_t nbits = hbitmap_size(src->bits);
    int64_t b = hbitmap_next_set(src->bits, 0, nbits);
    while (b >= 0) {
        int64_t c = hbitmap_next_clear(src->bits, (uint64_t)b, nbits);
        uint64_t end_bit = c < 0 ? nbits : (uint64_t)c;
        uint64_t start = (uint64_t)b * src->granularity;
        uint64_t end = MIN(end_bit * src->granularity, dst->size);
        if (start < end)
            hbitmap_set(dst_bits, start / dst->granularity,
                        (end - 1) / dst->granularity - start / dst->granularity + 1);
        if (c < 0)
            break;
        b = hbitmap_next_set(src->bits, end_bit, nbits);
    }
}

bool dirty_bitmap_merge(DirtyBitmap *target, GPtrArray *sources, HBitmap **backup, GError **errp)
{
    /* QEMU's order: each source is checked before the target. */
    for (guint i = 0; i < sources->len; i++) {
        DirtyBitmap *src = sources->pdata[i];
        if (!dirty_bitmap_check(src, DIRTY_BITMAP_ALLOW_RO, errp))
            return false;
        if (src->size != target->size) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "Bitmaps are of different sizes (destination size is %" G_GUINT64_FORMAT
                        ", source size is %" G_GUINT64_FORMAT ") and can't be merged",
                        target->size, src->size);
            return false;
        }
    }
    if (!dirty_bitmap_check(target, DIRTY_BITMAP_DEFAULT, errp))
        return false;
    /* Every check passed, so nothing below can fail: all sources or none. */
    NodeBitmaps *nb = target->nb;
    /* Sources on other nodes may be marked meanwhile: reading them beside
     * concurrent hbitmap_set is safe, and their list cannot change (this
     * runs on the main loop, as every change does). */
    change_begin(nb);
    if (backup)
        *backup = hbitmap_copy(target->bits);
    for (guint i = 0; i < sources->len; i++)
        if (sources->pdata[i] != target)
            merge_bits(target, target->bits, sources->pdata[i]);
    change_end(nb, target->persistent, false, NULL);
    return true;
}

void dirty_bitmap_set_busy(DirtyBitmap *bm, bool busy)
{
    if (busy)
        g_atomic_int_inc(&bm->busy);
    else
        g_atomic_int_add(&bm->busy, -1);
}

const char *dirty_bitmap_name(DirtyBitmap *bm) { return bm->name; }
BlockNode *dirty_bitmap_node(DirtyBitmap *bm) { return bm->nb->node; }
uint32_t dirty_bitmap_granularity(DirtyBitmap *bm) { return bm->granularity; }
uint64_t dirty_bitmap_size(DirtyBitmap *bm) { return bm->size; }
bool dirty_bitmap_recording(DirtyBitmap *bm) { return bm->enabled && !bm->inconsistent; }
bool dirty_bitmap_busy(DirtyBitmap *bm) { return g_atomic_int_get(&bm->busy) > 0; }
bool dirty_bitmap_persistent(DirtyBitmap *bm) { return bm->persistent; }
bool dirty_bitmap_inconsistent(DirtyBitmap *bm) { return bm->inconsistent; }
bool dirty_bitmap_readonly(DirtyBitmap *bm) { return bm->readonly; }
size_t dirty_bitmap_memory(DirtyBitmap *bm) { return hbitmap_memory(bm->bits); }

char *dirty_bitmap_sha256(DirtyBitmap *bm)
{
    size_t len = hbitmap_serialized_size(bm->bits);
    /* QEMU's bitmaps have at least one word, also for an empty node (one
     * resized to 0): its hash is that of 8 zero bytes. */
    g_autofree uint8_t *buf = g_malloc0(MAX(len, (size_t)8));
    hbitmap_serialize(bm->bits, buf);
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, buf, MAX(len, (size_t)8));
}

uint64_t dirty_bitmap_count(DirtyBitmap *bm)
{
    if (bm->inconsistent)
        return 0;
    uint64_t nbits = hbitmap_size(bm->bits);
    uint64_t bytes = hbitmap_count(bm->bits) * bm->granularity;
    /* The last granule may extend past the end of the node. */
    if (nbits && hbitmap_get(bm->bits, nbits - 1))
        bytes -= nbits * bm->granularity - bm->size;
    return bytes;
}

void dirty_bitmap_set_range(DirtyBitmap *bm, uint64_t offset, uint64_t len)
{
    if (len == 0 || offset >= bm->size)
        return;
    uint64_t end = MIN(offset + len, bm->size);
    uint64_t first = offset / bm->granularity, last = (end - 1) / bm->granularity;
    g_rw_lock_reader_lock(&bm->nb->lock);
    hbitmap_set(bm->bits, first, last - first + 1);
    g_rw_lock_reader_unlock(&bm->nb->lock);
}

bool dirty_bitmap_sync(DirtyBitmap *bm, GError **errp)
{
    if (!bm->persistent || bm->readonly)
        return true;
    change_begin(bm->nb);
    return change_end(bm->nb, true, false, errp);
}

static int64_t byte_search(DirtyBitmap *bm, uint64_t offset, uint64_t end, bool dirty)
{
    end = MIN(end, bm->size);
    if (offset >= end)
        return -1;
    uint64_t first = offset / bm->granularity;
    uint64_t stop = (end + bm->granularity - 1) / bm->granularity;
    g_rw_lock_reader_lock(&bm->nb->lock);
    int64_t g = dirty ? hbitmap_next_set(bm->bits, first, stop) : hbitmap_next_clear(bm->bits, first, stop);
    g_rw_lock_reader_unlock(&bm->nb->lock);
    if (g < 0)
        return -1;
    uint64_t at = MAX((uint64_t)g * bm->granularity, offset);
    return at < end ? (int64_t)at : -1;
}

int64_t dirty_bitmap_next_dirty(DirtyBitmap *bm, uint64_t offset, uint64_t end)
{
    if (bm->inconsistent)
        return -1;
    return byte_search(bm, offset, end, true);
}

int64_t dirty_bitmap_next_clean(DirtyBitmap *bm, uint64_t offset, uint64_t end)
{
    if (bm->inconsistent)
        return offset < MIN(end, bm->size) ? (int64_t)offset : -1;
    return byte_search(bm, offset, end, false);
}

void dirty_bitmap_load_persistent(BlockNode *node)
{
    GPtrArray *loaded = NULL;
    bool ro = node_read_only(node);
    BitmapStore *st;
    if (node_bitmaps_supported(node)) {
        /* Bitmaps in the image (qcow2), loaded once. */
        NodeBitmaps *nb = node_bitmaps(node, true);
        if (nb->loaded)
            return;
        nb->loaded = true;
        g_autoptr(GError) err = NULL;
        st = bitmap_store_open_image(node, &loaded, &err);
        if (!st)
            g_message("cannot load the dirty bitmaps of node '%s': %s", node_name(node), err->message);
        if (st && loaded->len == 0) {
            bitmap_store_free(st); /* one is made for the first persistent bitmap */
            st = NULL;
        }
    } else {
        const char *image = node_filename(node);
        if (!image)
            return;
        NodeBitmaps *nb = node_bitmaps(node, true);
        if (nb->loaded)
            return;
        nb->loaded = true;
        g_autofree char *path = bitmap_store_path_for(image);
        st = bitmap_store_open(path, ro, node_size(node), &loaded);
    }
    if (!st) {
        g_ptr_array_free(loaded, TRUE);
        return;
    }
    NodeBitmaps *nb = node_bitmaps(node, true);
    change_begin(nb);
    nb->store = st;
    bitmap_store_quiesce(st); /* change_end resumes it */
    for (guint i = 0; i < loaded->len; i++) {
        StoredBitmap *sb = loaded->pdata[i];
        uint32_t gran = sb->inconsistent && (sb->granularity < 512 || (sb->granularity & (sb->granularity - 1)))
                        ? 65536 : sb->granularity;
        DirtyBitmap *bm = g_new0(DirtyBitmap, 1);
        bm->nb = nb;
        bm->name = g_strdup(sb->name);
        bm->granularity = gran;
        bm->size = node_size(node);
        bm->persistent = true;
        bm->readonly = ro;
        bm->inconsistent = sb->inconsistent;
        bm->enabled = sb->enabled && !sb->inconsistent;
        bm->data_offset = sb->data_offset;
        if (sb->bits && hbitmap_size(sb->bits) == (bm->size + gran - 1) / gran) {
            bm->bits = sb->bits;
            sb->bits = NULL;
        } else {
            bm->bits = hbitmap_new((bm->size + gran - 1) / gran);
        }
        if (!ro)
            bm->durable = hbitmap_copy(bm->bits); /* what we loaded is on disk */
        g_ptr_array_add(nb->bitmaps, bm);
    }
    g_ptr_array_free(loaded, TRUE);
    /* Rewrite at once: it drops the clean-close checksums (in-place updates
     * follow) and learns where each bitmap's words live. */
    change_end(nb, !ro, false, NULL);
}

void dirty_bitmap_load_persistent_chain(BlockNode *node)
{
    dirty_bitmap_load_persistent(node);
    for (BlockNode *n = chain_backing(node); n; n = chain_backing(n))
        if (node_bitmaps_supported(n))
            dirty_bitmap_load_persistent(n);
}
