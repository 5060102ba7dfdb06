/* Opening a driver instance from parsed options (see block/driver.h):
 * each driver gets its own member of BlockdevOptions' union. */
#include "block/driver.h"
#include "block/options.h"

#include <gio/gio.h>

/* Until every driver takes its struct: the options back as JSON. */
static void *open_from_json(const BlockDriver *drv, BlockNode *self, const BlockdevOptions *o, bool read_only,
                            GError **errp)
{
    JsonNode *json = qapi_out_BlockdevOptions(o);
    BlockOptions *opts = block_options_new(json_node_get_object(json), "");
    /* node_create took these. */
    static const char *const base[] = { "driver", "node-name", "read-only", "discard" };
    for (size_t i = 0; i < G_N_ELEMENTS(base); i++)
        block_options_mark_used(opts, base[i]);
    void *s = drv->open_json(self, opts, read_only, errp);
    if (s && !block_options_check_all_used(opts, errp)) {
        drv->close(s);
        s = NULL;
    }
    block_options_free(opts);
    json_node_unref(json);
    return s;
}

void *block_driver_open(const BlockDriver *drv, BlockNode *self, const BlockdevOptions *o, bool read_only,
                        GError **errp)
{
    if (drv->open_json)
        return open_from_json(drv, self, o, read_only, errp);
    g_assert(drv->type == o->driver);
    const BlockdevCacheOptions *cache = o->has_cache ? o->cache : NULL;
    bool takes_cache = false;
    void *s = NULL;
    switch (o->driver) {
    case BLOCKDEV_DRIVER_BLKDEBUG:
        s = drv->open.blkdebug(self, &o->u.blkdebug, read_only, errp);
        break;
    case BLOCKDEV_DRIVER_FILE:
        s = drv->open.file(self, &o->u.file, cache, read_only, errp);
        takes_cache = true;
        break;
    case BLOCKDEV_DRIVER_MEMORY:
        s = drv->open.memory(self, &o->u.memory, read_only, errp);
        break;
    case BLOCKDEV_DRIVER_NBD:
        s = drv->open.nbd(self, &o->u.nbd, read_only, errp);
        break;
    case BLOCKDEV_DRIVER_NBDKIT:
        s = drv->open.nbdkit(self, &o->u.nbdkit, read_only, errp);
        break;
    case BLOCKDEV_DRIVER_NULL_CO:
        s = drv->open.null_co(self, &o->u.null_co, read_only, errp);
        break;
    case BLOCKDEV_DRIVER_OVERLAY:
        s = drv->open.overlay(self, &o->u.overlay, read_only, errp);
        break;
    case BLOCKDEV_DRIVER_QCOW2:
        s = drv->open.qcow2(self, &o->u.qcow2, read_only, errp);
        break;
    case BLOCKDEV_DRIVER_RAW:
        s = drv->open.raw(self, &o->u.raw, read_only, errp);
        break;
    case BLOCKDEV_DRIVER_RBD:
        s = drv->open.rbd(self, &o->u.rbd, cache, read_only, errp);
        takes_cache = true;
        break;
    case BLOCKDEV_DRIVER__MAX:
        g_assert_not_reached();
    }
    /* Only file and rbd act on cache; the others refuse it, after the
     * rest of their options, as blockd always has. */
    if (s && cache && !takes_cache) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Parameter 'cache' is unexpected");
        if (drv->close)
            drv->close(s);
        s = NULL;
    }
    return s;
}
