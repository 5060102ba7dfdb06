/* The block drivers backed by plugins: "file", "memory" and "null-co" (our
 * built-in plugins, QEMU-style options mapped onto plugin config keys) and
 * "nbdkit" (any installed nbdkit plugin, a private instance per node).
 * Every other callback forwards to the plugin handle; the node layer
 * emulates what the plugin lacks.  The file driver also keeps QEMU's image
 * locks (block/file-lock.h) on the plugin's descriptor: locking is a matter
 * of blockd's node graph, so the plugin itself (also built for real
 * nbdkit, whose file plugin does not lock either) knows nothing of it. */
#include "block/plugin-host/host-internal.h"

#include <errno.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "block/driver.h"
#include "block/file-create.h"
#include "block/file-lock.h"
#include "block/options.h"

/* What a plugin-backed node holds: the plugin handle and, for the file
 * driver, the image locks on the plugin's descriptor. */
typedef struct PluginNode {
    PluginHandle *h;
    FileLock *lock;
    char *filename;   /* file: what a reopen opens again */
    bool direct;
} PluginNode;

static PluginHandle *H(void *opaque) { return ((PluginNode *) opaque)->h; }
static const PluginCaps *C(void *opaque) { return &H(opaque)->caps; }

/* ---- callbacks shared by every plugin-backed driver ---- */

static void drv_close(void *opaque)
{
    PluginNode *n = opaque;
    plugin_handle_close(n->h);      /* closing the descriptor drops its locks */
    file_lock_free(n->lock);
    g_free(n->filename);
    g_free(n);
}

static int64_t drv_get_size(void *opaque) { return C(opaque)->size; }
static int drv_can_write(void *opaque) { return C(opaque)->can_write; }
static int drv_can_flush(void *opaque) { return C(opaque)->can_flush; }
static int drv_can_trim(void *opaque) { return C(opaque)->can_trim; }
static int drv_can_fua(void *opaque) { return C(opaque)->fua; }
static int drv_can_cache(void *opaque) { return C(opaque)->cache; }
static int drv_can_extents(void *opaque) { return C(opaque)->can_extents; }
static int drv_can_multi_conn(void *opaque) { return C(opaque)->can_multi_conn; }
static int drv_is_rotational(void *opaque) { return C(opaque)->is_rotational; }

/* Native zero only; with 0 the node layer writes zero buffers itself. */
static int drv_can_zero(void *opaque)
{
    return C(opaque)->zero == ZERO_NATIVE;
}

static int drv_can_fast_zero(void *opaque)
{
    return C(opaque)->can_fast_zero;
}

static int drv_block_size(void *opaque, uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
    const PluginCaps *c = C(opaque);
    *minimum = c->block_min;
    *preferred = c->block_preferred;
    *maximum = c->block_max;
    return 0;
}

static int drv_pread(void *opaque, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    return plugin_handle_pread(H(opaque), buf, count, offset);
}

static int drv_flush(void *opaque, uint32_t flags)
{
    return plugin_handle_flush(H(opaque));
}

static int drv_pwrite(void *opaque, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    return plugin_handle_pwrite(H(opaque), buf, count, offset, flags);
}

static int drv_trim(void *opaque, uint32_t count, uint64_t offset, uint32_t flags)
{
    return plugin_handle_trim(H(opaque), count, offset, flags);
}

static int drv_zero(void *opaque, uint32_t count, uint64_t offset, uint32_t flags)
{
    return plugin_handle_zero(H(opaque), count, offset, flags);
}

static int drv_extents(void *opaque, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *extents)
{
    return plugin_handle_extents(H(opaque), count, offset, flags & ~BLOCK_FLAG_ALLOCATION, extents);
}

static int drv_cache(void *opaque, uint32_t count, uint64_t offset, uint32_t flags)
{
    return plugin_handle_cache(H(opaque), count, offset);
}

#define PLUGIN_DRIVER_CALLBACKS                      \
    .close = drv_close,                              \
    .get_size = drv_get_size,                        \
    .can_write = drv_can_write,                      \
    .can_flush = drv_can_flush,                      \
    .can_trim = drv_can_trim,                        \
    .can_zero = drv_can_zero,                        \
    .can_fast_zero = drv_can_fast_zero,              \
    .can_fua = drv_can_fua,                          \
    .can_cache = drv_can_cache,                      \
    .can_extents = drv_can_extents,                  \
    .can_multi_conn = drv_can_multi_conn,            \
    .is_rotational = drv_is_rotational,              \
    .block_size = drv_block_size,                    \
    .pread = drv_pread,                              \
    .pwrite = drv_pwrite,         \
    .flush = drv_flush,                              \
    .trim = drv_trim,             \
    .zero = drv_zero,             \
    .extents = drv_extents,       \
    .cache = drv_cache

/* The driver instance over a handle (NULL: the open failed). */
static void *wrap(PluginHandle *h)
{
    if (!h)
        return NULL;
    PluginNode *n = g_new0(PluginNode, 1);
    n->h = h;
    return n;
}

/* Opens `plugin` with a single key=value config pair. */
static void *open_with(const char *plugin, const char *key, const char *value, bool read_only, GError **errp)
{
    const char *const config[] = { key, value, NULL };
    return wrap(plugin_handle_open(plugin, config, read_only, errp));
}

/* cache.direct (O_DIRECT, passed to the plugin as direct=on) and
 * cache.no-flush (only its default, off, is supported). */
static bool cache_options(const BlockdevCacheOptions *cache, bool *direct, GError **errp)
{
    *direct = cache && cache->has_direct && cache->direct;
    if (cache && cache->has_no_flush && cache->no_flush) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "cache.no-flush=on is not supported by the file driver");
        return false;
    }
    return true;
}

/* ---- file ---- */

/* Reports a missing file the way QEMU does, before the plugin sees it. */
static bool file_exists(const char *filename, GError **errp)
{
    struct stat st;
    if (stat(filename, &st) == 0)
        return true;
    int err = errno;
    g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(err), "Could not open '%s': %s",
                filename, g_strerror(err));
    return false;
}

static void *file_open(BlockNode *self, const BlockdevOptionsFile *opts, const BlockdevCacheOptions *cache,
                       bool read_only, GError **errp)
{
    bool direct;
    const char *filename = opts->filename;
    if (!file_exists(filename, errp) || !cache_options(cache, &direct, errp))
        return NULL;
    /* QEMU's rule: Linux AIO needs O_DIRECT. */
    if (opts->has_aio && opts->aio == BLOCKDEV_AIO_OPTIONS_NATIVE && !direct) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "aio=native was specified, but it requires cache.direct=on, which was not specified.");
        return NULL;
    }
    OnOffAuto mode = opts->has_locking ? opts->locking : ON_OFF_AUTO_AUTO;
    const char *const config[] = { "file", filename, "direct", direct ? "on" : "off", NULL };
    PluginNode *n = wrap(plugin_handle_open("file", config, read_only, errp));
    if (!n)
        return NULL;
    int fd;
    uint64_t fd_offset;
    if (plugin_handle_read_fd(n->h, 0, 0, &fd, &fd_offset) == 0)
        n->lock = file_lock_new(fd, filename, mode);
    n->filename = g_strdup(filename);
    n->direct = direct;
    return n;
}

/* The plugin's own descriptor and what it is (fstat); false if it has none. */
static bool handle_fd_stat(PluginHandle *h, int *fd, struct stat *st)
{
    uint64_t fd_offset;
    return plugin_handle_read_fd(h, 0, 0, fd, &fd_offset) == 0 && fstat(*fd, st) == 0;
}

/* QEMU's raw_reopen_prepare: a new descriptor in the new mode on the same
 * file, the image locks moved onto it before the old one closes.  The node
 * layer has drained the node, so no request uses the old handle. */
static bool file_reopen(void *opaque, bool read_only, GError **errp)
{
    PluginNode *n = opaque;
    const char *const config[] = { "file", n->filename, "direct", n->direct ? "on" : "off", NULL };
    g_autoptr(GError) err = NULL;
    PluginHandle *h = plugin_handle_open("file", config, read_only, &err);
    if (!h) {
        g_set_error(errp, err->domain, err->code, "Could not reopen file: %s", err->message);
        return false;
    }
    int old_fd = -1, fd = -1;
    struct stat old_st, st;
    bool have_old = handle_fd_stat(n->h, &old_fd, &old_st), have_new = handle_fd_stat(h, &fd, &st);
    bool ok = have_old == have_new;
    if (ok && have_new && (old_st.st_dev != st.st_dev || old_st.st_ino != st.st_ino)) {
        /* Renamed or replaced since the open: not the node's image any more. */
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "Could not reopen file: '%s' is no longer the node's image",
                    n->filename);
        ok = false;
    } else if (!ok) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "Could not reopen file: %s", g_strerror(EBADF));
    }
    if (ok && n->lock)
        ok = file_lock_move(n->lock, fd, errp);
    if (!ok) {
        plugin_handle_close(h);   /* drops whatever it locked */
        return false;
    }
    PluginHandle *old = n->h;
    n->h = h;
    plugin_handle_close(old);
    return true;
}

/* Image locks (block/file-lock.h) follow the node's permissions. */
static bool file_check_perm(void *opaque, uint64_t perm, uint64_t shared, GError **errp)
{
    PluginNode *n = opaque;
    return !n->lock || file_lock_check(n->lock, perm, shared, errp);
}

static void file_set_perm(void *opaque, uint64_t perm, uint64_t shared)
{
    PluginNode *n = opaque;
    if (n->lock)
        file_lock_commit(n->lock, perm, shared);
}

static void file_abort_perm(void *opaque)
{
    PluginNode *n = opaque;
    if (n->lock)
        file_lock_abort(n->lock);
}

static int file_read_fd(void *opaque, uint32_t count, uint64_t offset, int *fd, uint64_t *fd_offset)
{
    return plugin_handle_read_fd(H(opaque), count, offset, fd, fd_offset);
}

/* Growing a regular file: ftruncate on the plugin's own descriptor (a
 * block device cannot grow; it is large enough or the request fails). */
static int file_grow(void *opaque, uint64_t size)
{
    int fd;
    uint64_t fd_offset;
    if (plugin_handle_read_fd(H(opaque), 0, 0, &fd, &fd_offset) < 0)
        return -ENOTSUP;
    /* One grower at a time: a smaller ftruncate racing a larger one would shrink. */
    static GMutex grow_lock;
    g_mutex_lock(&grow_lock);
    struct stat st;
    int r = 0;
    if (fstat(fd, &st) < 0)
        r = -errno;
    else if (!S_ISREG(st.st_mode))
        r = size <= (uint64_t) C(opaque)->size ? 0 : -ENOSPC;
    else if ((uint64_t) st.st_size < size && ftruncate(fd, (off_t) size) < 0)
        r = -errno;
    g_mutex_unlock(&grow_lock);
    return r;
}

/* block_resize: a regular file is cut or extended to exactly `size` (QEMU's
 * raw_co_truncate); a block device can only be "resized" within its size. */
static bool file_truncate(void *opaque, uint64_t size, GError **errp)
{
    int fd;
    uint64_t fd_offset;
    struct stat st;
    if (plugin_handle_read_fd(H(opaque), 0, 0, &fd, &fd_offset) < 0 || fstat(fd, &st) < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "Image format driver does not support resize");
        return false;
    }
    if (S_ISREG(st.st_mode)) {
        if (!file_truncate_fd(fd, size, PREALLOC_MODE_OFF, errp))
            return false;
    } else if (size > (uint64_t) C(opaque)->size) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "Cannot grow device files");
        return false;
    }
    plugin_handle_set_size(H(opaque), size);
    return true;
}

static bool file_create(const BlockdevCreateOptions *options, GError **errp)
{
    return file_image_create(&options->u.file, errp);
}

static const BlockDriver file_driver = {
    .name = "file",
    .type = BLOCKDEV_DRIVER_FILE,
    .open.file = file_open,
    PLUGIN_DRIVER_CALLBACKS,
    .read_fd = file_read_fd,
    .grow = file_grow,
    .truncate = file_truncate,
    .create = file_create,
    .check_perm = file_check_perm,
    .set_perm = file_set_perm,
    .abort_perm = file_abort_perm,
    .reopen = file_reopen,
};

/* ---- memory ---- */

static void *memory_open(BlockNode *self, const BlockdevOptionsMemory *opts, bool read_only, GError **errp)
{
    char value[32];
    snprintf(value, sizeof value, "%" PRIu64, opts->size);
    return open_with("memory", "size", value, read_only, errp);
}

static bool memory_truncate(void *opaque, uint64_t size, GError **errp)
{
    int r = plugin_handle_resize(H(opaque), size);
    if (r < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r), "Could not resize the memory disk: %s",
                    g_strerror(-r));
        return false;
    }
    return true;
}

static const BlockDriver memory_driver = {
    .name = "memory",
    .type = BLOCKDEV_DRIVER_MEMORY,
    .open.memory = memory_open,
    .truncate = memory_truncate,
    PLUGIN_DRIVER_CALLBACKS,
};

/* ---- null-co ---- */

/* read-zeroes is accepted and ignored: the null plugin always reads zeroes. */
static void *null_open(BlockNode *self, const BlockdevOptionsNull *opts, bool read_only, GError **errp)
{
    uint64_t size = UINT64_C(1) << 30;          /* QEMU's default */
    if (opts->has_size && !block_option_size("size", opts->size, &size, errp))
        return NULL;
    char value[32];
    snprintf(value, sizeof value, "%" PRIu64, size);
    return open_with("null", "size", value, read_only, errp);
}

static const BlockDriver null_driver = {
    .name = "null-co",
    .type = BLOCKDEV_DRIVER_NULL_CO,
    .open.null_co = null_open,
    PLUGIN_DRIVER_CALLBACKS,
};

/* ---- nbdkit: any installed plugin ---- */

/* The plugin's parameters are `args`, key: value in input order (the
 * command line's bare extra keys were folded into it by the QAPI parser). */
static void *nbdkit_open(BlockNode *self, const BlockdevOptionsNbdkit *opts, bool read_only, GError **errp)
{
    g_autoptr(GPtrArray) config = g_ptr_array_new();
    for (const BlockdevNbdkitArgs *a = opts->has_args ? opts->args : NULL; a; a = a->next) {
        g_ptr_array_add(config, a->key);
        g_ptr_array_add(config, a->value);
    }
    g_ptr_array_add(config, NULL);
    return wrap(plugin_handle_open_instance(opts->plugin, (const char *const *) config->pdata, read_only, errp));
}

static const BlockDriver nbdkit_driver = {
    .name = "nbdkit",
    .type = BLOCKDEV_DRIVER_NBDKIT,
    .open.nbdkit = nbdkit_open,
    PLUGIN_DRIVER_CALLBACKS,
};

void plugin_host_register_drivers(void)
{
    block_driver_register(&file_driver);
    block_driver_register(&memory_driver);
    block_driver_register(&null_driver);
    block_driver_register(&nbdkit_driver);
}
