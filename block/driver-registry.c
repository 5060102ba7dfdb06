/* The table of block drivers, by name. */
#include "block/driver.h"
#include "block/plugin-host/plugin-host.h"

#include <gio/gio.h>
#include <string.h>

static GHashTable *drivers; /* name -> const BlockDriver * */

void block_driver_register(const BlockDriver *drv)
{
    if (!drivers)
        drivers = g_hash_table_new(g_str_hash, g_str_equal);
    g_hash_table_replace(drivers, (gpointer)drv->name, (gpointer)drv);
}

const BlockDriver *block_driver_find(const char *name)
{
    block_drivers_init();
    return g_hash_table_lookup(drivers, name);
}

extern const BlockDriver block_driver_raw;
extern const BlockDriver block_driver_nbd;
extern const BlockDriver block_driver_overlay;
extern const BlockDriver block_driver_qcow2;
extern const BlockDriver block_driver_blkdebug;
#ifdef BLOCKD_HAVE_RBD
extern const BlockDriver block_driver_rbd;
#else
/* The schema lists rbd either way: say why it cannot be opened. */
static void *rbd_unavailable(BlockNode *self, const BlockdevOptionsRbd *opts, const BlockdevCacheOptions *cache,
                             bool read_only, GError **errp)
{
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                "The rbd driver is not available: blockd was built without librbd");
    return NULL;
}
static const BlockDriver block_driver_rbd = {
    .name = "rbd",
    .type = BLOCKDEV_DRIVER_RBD,
    .open.rbd = rbd_unavailable,
};
#endif

void block_drivers_init(void)
{
    static gsize done;
    if (g_once_init_enter(&done)) {
        block_driver_register(&block_driver_raw);
        block_driver_register(&block_driver_nbd);
        block_driver_register(&block_driver_overlay);
        block_driver_register(&block_driver_qcow2);
        block_driver_register(&block_driver_blkdebug);
        block_driver_register(&block_driver_rbd);
        plugin_host_register_drivers();
        g_once_init_leave(&done, 1);
    }
}

static int compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

GPtrArray *block_driver_names(void)
{
    block_drivers_init();
    GPtrArray *names = g_ptr_array_new();
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, drivers);
    while (g_hash_table_iter_next(&it, &key, NULL))
        g_ptr_array_add(names, key);
    g_ptr_array_sort(names, compare_names);
    return names;
}

bool block_driver_reopen_passthrough(void *opaque, bool read_only, GError **errp)
{
    return true;
}
