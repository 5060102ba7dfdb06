/* Dirty bitmaps against writes that are in flight while the bitmap changes.
 *
 * A "gate" driver holds each write inside the driver until the test opens
 * the gate, so a bitmap operation can run deterministically between a
 * write's before-write marking and its completion.  Whatever the operation
 * (clear, enable, add, remove of another bitmap), a write that completes
 * after it must be recorded by every enabled bitmap, in memory and, for
 * persistent bitmaps, in the sidecar file before the write returns. */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

#include "block/node.h"
#include "bitmaps/dirty-bitmap.h"
#include "bitmaps/bitmap-store.h"

#define SIZE (16u << 20)
#define GRAN 65536u

typedef struct Gate {
    GMutex lock;
    GCond cond;
    bool open;
    int waiting;        /* writes held at the gate */
} Gate;

static Gate gate;
static char *tmpdir;

/* Stands in for the file driver: its filename names only the sidecar. */
static void *gate_open(BlockNode *self, const BlockdevOptionsFile *opts, const BlockdevCacheOptions *cache,
                       bool read_only, GError **errp)
{
    return &gate;
}

static int64_t gate_size(void *opaque) { return SIZE; }

static int gate_pread(void *opaque, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    memset(buf, 0, count);
    return 0;
}

static int gate_pwrite(void *opaque, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    g_mutex_lock(&gate.lock);
    gate.waiting++;
    g_cond_broadcast(&gate.cond);
    while (!gate.open)
        g_cond_wait(&gate.cond, &gate.lock);
    gate.waiting--;
    g_mutex_unlock(&gate.lock);
    return 0;
}

static const BlockDriver gate_driver = {
    .name = "file",
    .type = BLOCKDEV_DRIVER_FILE,
    .open.file = gate_open,
    .get_size = gate_size,
    .pread = gate_pread,
    .pwrite = gate_pwrite,
};

static void gate_set(bool open)
{
    g_mutex_lock(&gate.lock);
    gate.open = open;
    g_cond_broadcast(&gate.cond);
    g_mutex_unlock(&gate.lock);
}

static void gate_wait_held(int n)
{
    g_mutex_lock(&gate.lock);
    while (gate.waiting < n)
        g_cond_wait(&gate.cond, &gate.lock);
    g_mutex_unlock(&gate.lock);
}

static BlockNode *make_node(const char *name, const char *filename)
{
    /* Built by hand: without a filename the node has no sidecar. */
    BlockdevOptions o = {
        .driver = BLOCKDEV_DRIVER_FILE,
        .has_node_name = true,
        .node_name = (char *)name,
        .u.file.filename = (char *)filename,
    };
    g_autoptr(GError) err = NULL;
    BlockNode *node = node_create(&o, &err);
    g_assert_no_error(err);
    return node;
}

typedef struct Write {
    BlockNode *node;
    uint64_t offset;
    int result;
} Write;

static gpointer write_thread(gpointer data)
{
    Write *w = data;
    static char buf[4096];
    w->result = node_pwrite(w->node, buf, sizeof buf, w->offset, 0);
    return NULL;
}

/* Starts a 4 KiB write at `offset` and returns once it waits at the gate
 * (its before-write marking is done). */
static GThread *start_held_write(Write *w)
{
    gate_set(false);
    GThread *t = g_thread_new("writer", write_thread, w);
    gate_wait_held(1);
    return t;
}

static void finish_write(GThread *t, Write *w)
{
    gate_set(true);
    g_thread_join(t);
    g_assert_cmpint(w->result, ==, 0);
}

static bool dirty_at(DirtyBitmap *bm, uint64_t offset)
{
    return dirty_bitmap_next_dirty(bm, offset, offset + 1) == (int64_t)offset;
}

/* The bits of bitmap `name` as stored in the sidecar of `image` right now. */
static StoredBitmap *stored(const char *image, const char *name)
{
    g_autofree char *side = bitmap_store_path_for(image);
    GPtrArray *loaded = NULL;
    BitmapStore *st = bitmap_store_open(side, true, SIZE, &loaded);
    g_assert_nonnull(st);
    StoredBitmap *found = NULL;
    for (guint i = 0; i < loaded->len; i++) {
        StoredBitmap *sb = loaded->pdata[i];
        if (strcmp(sb->name, name) == 0) {
            found = sb;
            loaded->pdata[i] = NULL;
        }
    }
    g_ptr_array_set_free_func(loaded, NULL);
    for (guint i = 0; i < loaded->len; i++)
        stored_bitmap_free(loaded->pdata[i]);
    g_ptr_array_free(loaded, TRUE);
    bitmap_store_free(st);
    g_assert_nonnull(found);
    return found;
}

static void test_clear_during_write(gconstpointer persistent_p)
{
    bool persistent = GPOINTER_TO_INT(persistent_p);
    g_autofree char *image = g_build_filename(tmpdir, persistent ? "clear-p.img" : "clear.img", NULL);
    BlockNode *node = make_node(persistent ? "clearp" : "clear", image);
    g_autoptr(GError) err = NULL;
    DirtyBitmap *bm = dirty_bitmap_create(node, "b", GRAN, persistent, false, &err);
    g_assert_no_error(err);

    Write w = { node, 3 * GRAN, 0 };
    GThread *t = start_held_write(&w);
    g_assert_true(dirty_at(bm, w.offset));     /* marked before the data */
    dirty_bitmap_clear(bm, NULL);              /* e.g. a backup starting now */
    g_assert_false(dirty_at(bm, w.offset));
    finish_write(t, &w);
    /* The data landed after the clear: the next incremental must copy it. */
    g_assert_true(dirty_at(bm, w.offset));
    if (persistent) {
        StoredBitmap *sb = stored(image, "b");
        g_assert_true(hbitmap_get(sb->bits, w.offset / GRAN));
        stored_bitmap_free(sb);
    }
    g_assert_true(node_delete(node_name(node), NULL));
}

static void test_enable_and_add_during_write(gconstpointer persistent_p)
{
    bool persistent = GPOINTER_TO_INT(persistent_p);
    g_autofree char *image = g_build_filename(tmpdir, persistent ? "enable-p.img" : "enable.img", NULL);
    BlockNode *node = make_node(persistent ? "enablep" : "enable", image);
    g_autoptr(GError) err = NULL;
    DirtyBitmap *off = dirty_bitmap_create(node, "off", GRAN, persistent, true, &err);
    g_assert_no_error(err);

    Write w = { node, 5 * GRAN, 0 };
    GThread *t = start_held_write(&w);
    g_assert_false(dirty_at(off, w.offset));   /* disabled when the write began */
    dirty_bitmap_set_enabled(off, true);
    DirtyBitmap *added = dirty_bitmap_create(node, "added", GRAN, persistent, false, &err);
    g_assert_no_error(err);
    finish_write(t, &w);
    g_assert_true(dirty_at(off, w.offset));
    g_assert_true(dirty_at(added, w.offset));
    if (persistent) {
        for (const char *const *n = (const char *const[]){ "off", "added", NULL }; *n; n++) {
            StoredBitmap *sb = stored(image, *n);
            g_assert_true(hbitmap_get(sb->bits, w.offset / GRAN));
            stored_bitmap_free(sb);
        }
    }
    g_assert_true(node_delete(node_name(node), NULL));
}

/* Removing a persistent bitmap whose marks a held write queued: the write
 * completes, the other bitmap records it, nothing touches the freed bits. */
static void test_remove_during_write(void)
{
    g_autofree char *image = g_build_filename(tmpdir, "remove.img", NULL);
    BlockNode *node = make_node("remove", image);
    g_autoptr(GError) err = NULL;
    DirtyBitmap *keep = dirty_bitmap_create(node, "keep", GRAN, true, false, &err);
    g_assert_no_error(err);
    for (int round = 0; round < 20; round++) {
        DirtyBitmap *gone = dirty_bitmap_create(node, "gone", 4096, true, false, &err);
        g_assert_no_error(err);
        Write w = { node, (uint64_t)round * GRAN, 0 };
        GThread *t = start_held_write(&w);
        g_assert_true(dirty_bitmap_remove(gone, &err));
        g_assert_no_error(err);
        finish_write(t, &w);
        g_assert_true(dirty_at(keep, w.offset));
    }
    StoredBitmap *sb = stored(image, "keep");
    g_assert_cmpuint(hbitmap_count(sb->bits), ==, 20);
    stored_bitmap_free(sb);
    g_assert_true(node_delete(node_name(node), NULL));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    block_drivers_init();
    block_driver_register(&gate_driver); /* replaces the file driver */
    tmpdir = g_dir_make_tmp("blockd-dirty-bitmap.XXXXXX", NULL);
    g_mutex_init(&gate.lock);
    g_cond_init(&gate.cond);
    g_test_add_data_func("/dirty-bitmap/clear-during-write", GINT_TO_POINTER(0), test_clear_during_write);
    g_test_add_data_func("/dirty-bitmap/clear-during-write-persistent", GINT_TO_POINTER(1),
                         test_clear_during_write);
    g_test_add_data_func("/dirty-bitmap/enable-add-during-write", GINT_TO_POINTER(0),
                         test_enable_and_add_during_write);
    g_test_add_data_func("/dirty-bitmap/enable-add-during-write-persistent", GINT_TO_POINTER(1),
                         test_enable_and_add_during_write);
    g_test_add_func("/dirty-bitmap/remove-during-write", test_remove_during_write);
    int r = g_test_run();
    node_graph_shutdown();
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
    (void)!system(cmd);
    g_free(tmpdir);
    return r;
}
