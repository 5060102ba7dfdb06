/* Opening a driver instance from parsed options (see block/driver.h):
 * each driver gets its own member of BlockdevOptions' union. */
#include "block/driver.h"

#include <gio/gio.h>

void *block_driver_open(const BlockDriver *drv, BlockNode *self, const BlockdevOptions *o, bool read_only,
                        GError **errp)
{
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
