/* Opening an RBD image for the rbd driver: node options to a librados
 * connection (QEMU 7.2's qemu_rbd_connect, same order and error texts),
 * the image, and its exclusive lock.
 *
 * Timeouts.  Ceph's client defaults wait 300 s for a monitor and forever
 * for a monitor or OSD operation, which would hold blockdev-add (the main
 * loop) or a request indefinitely when the cluster is gone.  Unless the
 * configuration file sets them, blockd uses client_mount_timeout 30 s,
 * rados_mon_op_timeout 30 s and rados_osd_op_timeout 60 s, so an unreachable
 * cluster fails blockdev-add with "error connecting: Connection timed out"
 * and an outage fails requests with ETIMEDOUT (EIO on NBD) instead of
 * hanging them.
 *
 * Exclusive lock.  QEMU leaves the lock to librbd, which hands it from
 * writer to writer on demand, so two QEMUs writing one image take turns
 * and both succeed.  blockd takes the lock explicitly when it opens an
 * image for writing (what `rbd device map --exclusive` does): librbd then
 * refuses to hand it over, another client's writes fail with EROFS, and a
 * second writable open (another blockd, or another node) is refused while
 * the lock owner is alive.  An owner that died keeps its lock until its
 * watch expires (osd_client_watch_timeout); the next writable open then
 * breaks it (librbd blocklists the dead client). */
#include "block/drivers/rbd.h"
#include "objects/objects.h"

#include <errno.h>
#include <string.h>

/* Ceph's "wait forever" defaults and what blockd uses instead. */
static const struct {
    const char *key, *ceph_default, *blockd;
} timeouts[] = {
    { "client_mount_timeout", "300", "30" },
    { "rados_mon_op_timeout", "0", "30" },
    { "rados_osd_op_timeout", "0", "60" },
};

typedef struct RbdOptions {
    const char *pool, *namespace, *image, *conf, *snapshot, *user, *key_secret;
    char *mon_host;      /* server list as rados' mon_host, or NULL */
    char *auth_client;   /* auth-client-required joined with ';', or NULL */
    bool direct;         /* cache.direct: no librbd cache */
} RbdOptions;

static void rbd_options_clear(RbdOptions *o)
{
    g_free(o->mon_host);
    g_free(o->auth_client);
}

/* server: [{host, port}, ...] as QEMU's qemu_rbd_mon_host builds it. */
static void take_servers(const BlockdevOptionsRbd *opts, RbdOptions *o)
{
    GString *hosts = g_string_new(NULL);
    for (const InetSocketAddressBaseList *l = opts->has_server ? opts->server : NULL; l; l = l->next)
        g_string_append_printf(hosts, strchr(l->value->host, ':') ? "%s[%s]:%s" : "%s%s:%s",
                               hosts->len ? ";" : "", l->value->host, l->value->port);
    o->mon_host = hosts->len ? g_string_free(hosts, false) : NULL;
    if (!o->mon_host)
        g_string_free(hosts, true);
}

/* auth-client-required as rados' auth_client_required ("cephx;none"). */
static void take_auth(const BlockdevOptionsRbd *opts, RbdOptions *o)
{
    if (!opts->has_auth_client_required)
        return;
    GString *acr = g_string_new(NULL);
    for (const RbdAuthModeList *l = opts->auth_client_required; l; l = l->next)
        g_string_append_printf(acr, "%s%s", acr->len ? ";" : "", RbdAuthMode_str[l->value]);
    o->auth_client = g_string_free(acr, false);
}

/* cache.direct=on turns librbd's cache off (QEMU's BDRV_O_NOCACHE). */
static bool take_cache(const BlockdevCacheOptions *cache, RbdOptions *o, GError **errp)
{
    o->direct = cache && cache->has_direct && cache->direct;
    if (cache && cache->has_no_flush && cache->no_flush) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "cache.no-flush=on is not supported by the rbd driver");
        return false;
    }
    return true;
}

static bool take_options(const BlockdevOptionsRbd *opts, const BlockdevCacheOptions *cache, RbdOptions *o,
                         GError **errp)
{
    o->pool = opts->pool;
    o->image = opts->image;
    o->namespace = opts->has_namespace ? opts->namespace : NULL;
    o->conf = opts->has_conf ? opts->conf : NULL;
    o->snapshot = opts->has_snapshot ? opts->snapshot : NULL;
    o->user = opts->has_user ? opts->user : NULL;
    o->key_secret = opts->has_key_secret ? opts->key_secret : NULL;
    take_servers(opts, o);
    take_auth(opts, o);
    return take_cache(cache, o, errp);
}

static bool conf_set(rados_t cluster, const char *key, const char *value, GError **errp)
{
    int r = rados_conf_set(cluster, key, value);
    if (r < 0)
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r), "Could not set '%s': %s", key, g_strerror(-r));
    return r == 0;
}

/* Everything before rados_connect, in QEMU's order. */
static bool configure(rados_t cluster, const RbdOptions *o, GError **errp)
{
    /* No conf: the default locations (and $CEPH_CONF), failure ignored. */
    int r = rados_conf_read_file(cluster, o->conf);
    if (o->conf && r < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r), "error reading conf file %s: %s", o->conf,
                    g_strerror(-r));
        return false;
    }
    if (o->mon_host && !conf_set(cluster, "mon_host", o->mon_host, errp))
        return false;
    if (o->key_secret) {
        g_autofree char *key = object_secret_base64(o->key_secret, errp);
        if (!key || !conf_set(cluster, "key", key, errp))
            return false;
    }
    if (o->auth_client && !conf_set(cluster, "auth_client_required", o->auth_client, errp))
        return false;
    rados_conf_set(cluster, "rbd_cache", o->direct ? "false" : "true");
    for (size_t i = 0; i < G_N_ELEMENTS(timeouts); i++) {
        char value[64];
        if (rados_conf_get(cluster, timeouts[i].key, value, sizeof value) == 0 &&
            strcmp(value, timeouts[i].ceph_default) == 0)
            rados_conf_set(cluster, timeouts[i].key, timeouts[i].blockd);
    }
    return true;
}

static bool connect_pool(RbdImage *s, const RbdOptions *o, GError **errp)
{
    int r = rados_create(&s->cluster, o->user);
    if (r < 0) {
        s->cluster = NULL;
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r), "error initializing: %s", g_strerror(-r));
        return false;
    }
    if (!configure(s->cluster, o, errp))
        return false;
    r = rados_connect(s->cluster);
    if (r < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r), "error connecting: %s", g_strerror(-r));
        return false;
    }
    r = rados_ioctx_create(s->cluster, o->pool, &s->ioctx);
    if (r < 0) {
        s->ioctx = NULL;
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r), "error opening pool %s: %s", o->pool,
                    g_strerror(-r));
        return false;
    }
    if (o->namespace && *o->namespace) {
        bool exists = false;
        r = rbd_namespace_exists(s->ioctx, o->namespace, &exists);
        if (r < 0) {
            g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r), "error checking namespace: %s",
                        g_strerror(-r));
            return false;
        }
        if (!exists) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "namespace '%s' does not exist", o->namespace);
            return false;
        }
    }
    rados_ioctx_set_namespace(s->ioctx, o->namespace);
    return true;
}

/* The exclusive lock's owner ("ADDR:0/NONCE"), or NULL if it is free. */
static char *lock_owner(rbd_image_t image)
{
    rbd_lock_mode_t mode;
    char *owners[4];
    size_t n = G_N_ELEMENTS(owners);
    if (rbd_lock_get_owners(image, &mode, owners, &n) < 0 || n == 0)
        return NULL;
    char *owner = g_strdup(owners[0]);
    rbd_lock_get_owners_cleanup(owners, n);
    return owner;
}

/* True if `addr` still watches the image's header (a live client). */
static bool is_watching(rbd_image_t image, const char *addr)
{
    size_t n = 16;
    rbd_image_watcher_t *w = g_new0(rbd_image_watcher_t, n);
    int r = rbd_watchers_list(image, w, &n);
    if (r == -ERANGE) {
        g_free(w);
        w = g_new0(rbd_image_watcher_t, n);
        r = rbd_watchers_list(image, w, &n);
    }
    bool found = r < 0; /* unknown: assume alive, refuse rather than steal */
    if (r == 0) {
        for (size_t i = 0; i < n && !found; i++)
            found = strcmp(w[i].addr, addr) == 0;
        rbd_watchers_list_cleanup(w, n);
    }
    g_free(w);
    return found;
}

static bool take_lock(RbdImage *s, GError **errp)
{
    uint64_t features = 0;
    if (rbd_get_features(s->image, &features) < 0 || !(features & RBD_FEATURE_EXCLUSIVE_LOCK))
        return true; /* no lock on this image: writers are not serialised (as QEMU) */
    g_autofree char *owner = lock_owner(s->image);
    int r = owner && is_watching(s->image, owner) ? -EBUSY : rbd_lock_acquire(s->image, RBD_LOCK_MODE_EXCLUSIVE);
    if (r == 0)
        return true;
    if (!owner)
        owner = lock_owner(s->image);
    if (owner)
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_BUSY,
                    "Image '%s' is in use by another client (%s) that holds its exclusive lock; "
                    "open it with read-only=on", s->spec, owner);
    else
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r), "Could not lock image '%s': %s", s->spec,
                    g_strerror(-r));
    return false;
}

static bool open_image(RbdImage *s, const RbdOptions *o, GError **errp)
{
    /* Read-only opens (snapshots always) need no watch and no lock. */
    bool ro = s->read_only || o->snapshot;
    int r = ro ? rbd_open_read_only(s->ioctx, o->image, &s->image, o->snapshot)
               : rbd_open(s->ioctx, o->image, &s->image, NULL);
    if (r < 0) {
        s->image = NULL;
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r), "error reading header from %s: %s", o->image,
                    g_strerror(-r));
        return false;
    }
    rbd_image_info_t info;
    r = rbd_stat(s->image, &info, sizeof info);
    if (r < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r), "error getting image info from %s: %s",
                    o->image, g_strerror(-r));
        return false;
    }
    s->size = info.size;
    s->object_size = info.obj_size ? info.obj_size : 4 << 20;
    if (o->snapshot && !s->read_only) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_READ_ONLY, "rbd snapshots are read-only");
        return false;
    }
    uint64_t features = 0;
    s->fast_diff = rbd_get_features(s->image, &features) == 0 && (features & RBD_FEATURE_FAST_DIFF);
    return s->read_only || take_lock(s, errp);
}

RbdImage *rbd_image_open(const BlockdevOptionsRbd *opts, const BlockdevCacheOptions *cache, bool read_only,
                         GError **errp)
{
    RbdOptions o = { 0 };
    RbdImage *s = g_new0(RbdImage, 1);
    g_mutex_init(&s->log_lock);
    s->read_only = read_only;
    if (!take_options(opts, cache, &o, errp))
        goto fail;
    s->spec = g_strdup_printf("%s/%s%s%s%s%s", o.pool, o.namespace && *o.namespace ? o.namespace : "",
                              o.namespace && *o.namespace ? "/" : "", o.image, o.snapshot ? "@" : "",
                              o.snapshot ? o.snapshot : "");
    s->name = g_strdup(o.image);
    s->snapshot = o.snapshot != NULL;
    if (!connect_pool(s, &o, errp) || !open_image(s, &o, errp))
        goto fail;
    rbd_options_clear(&o);
    return s;
fail:
    rbd_options_clear(&o);
    rbd_image_close(s);
    return NULL;
}

bool rbd_image_create(const BlockdevCreateOptions *options, GError **errp)
{
    const BlockdevCreateOptionsRbd *c = &options->u.rbd;
    if (c->location->has_snapshot) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Can't use snapshot name for image creation");
        return false;
    }
    int order = 0; /* librbd's default object size */
    if (c->has_cluster_size) {
        if ((c->cluster_size - 1) & c->cluster_size) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "obj size needs to be power of 2");
            return false;
        }
        if (c->cluster_size < 4096) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "obj size too small");
            return false;
        }
        order = g_bit_nth_lsf(c->cluster_size, -1);
    }
    RbdOptions o = { 0 };
    RbdImage *s = g_new0(RbdImage, 1);
    g_mutex_init(&s->log_lock);
    bool ok = take_options(c->location, NULL, &o, errp) && connect_pool(s, &o, errp);
    if (ok) {
        int r = rbd_create(s->ioctx, o.image, c->size, &order);
        if (r < 0) {
            g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r), "error rbd create: %s", g_strerror(-r));
            ok = false;
        }
    }
    rbd_options_clear(&o);
    rbd_image_close(s);
    return ok;
}

bool rbd_image_reopen(RbdImage *s, bool read_only, GError **errp)
{
    if (!read_only && s->snapshot) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_READ_ONLY, "Cannot change node '%s' to r/w when using RBD snapshot",
                    s->spec);
        return false;
    }
    rbd_image_t old = s->image, image = NULL;
    int r = read_only ? rbd_open_read_only(s->ioctx, s->name, &image, NULL) : rbd_open(s->ioctx, s->name, &image, NULL);
    if (r < 0) {
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r), "error reading header from %s: %s", s->name,
                    g_strerror(-r));
        return false;
    }
    s->image = image;
    if (!read_only && !take_lock(s, errp)) {
        rbd_close(image);
        s->image = old;
        return false;
    }
    /* Closing the writable handle flushes it and releases its lock. */
    rbd_close(old);
    s->read_only = read_only;
    return true;
}

void rbd_image_close(RbdImage *s)
{
    if (s->image)
        rbd_close(s->image);
    if (s->ioctx)
        rados_ioctx_destroy(s->ioctx);
    if (s->cluster)
        rados_shutdown(s->cluster);
    g_mutex_clear(&s->log_lock);
    g_free(s->spec);
    g_free(s->json_name);
    g_free(s->name);
    g_free(s);
}
