/* A plugin handle: nbdkit's per-connection life (config .. get_ready for
 * instance-safe plugins, open, the can_* handshake, data calls, close) with
 * the thread model enforced around every call into the plugin. */
#include "block/plugin-host/host-internal.h"

#include <errno.h>
#include <string.h>

#include "block/driver.h"

/* ---- locking and the call context ---- */

/* Takes the lock the thread model requires and makes `h` the current call. */
static void call_begin(PluginHandle *h, HostCall *saved, bool capture)
{
    if (h->model <= NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS)
        g_mutex_lock(&h->lib->all_requests_lock);
    else if (h->model == NBDKIT_THREAD_MODEL_SERIALIZE_REQUESTS)
        g_mutex_lock(&h->request_lock);
    host_call_enter(saved, h->lib, h, capture);
    host_error_reset();
}

static void call_end(PluginHandle *h, const HostCall *saved)
{
    host_call_leave(saved);
    if (h->model <= NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS)
        g_mutex_unlock(&h->lib->all_requests_lock);
    else if (h->model == NBDKIT_THREAD_MODEL_SERIALIZE_REQUESTS)
        g_mutex_unlock(&h->request_lock);
}

/* The negative errno for a callback that returned -1; call it first thing
 * after the callback so errno is still the plugin's. */
static int failure(PluginHandle *h)
{
    int saved_errno = errno;
    return -host_error_for_failure(h->lib, saved_errno);
}

/* ---- configuration (setup lock held) ---- */

bool plugin_run_config(PluginLibrary *lib, const char *const *config, ConfigStages stages,
                       int *model, GError **errp)
{
    const struct nbdkit_plugin *p = &lib->p;
    HostCall saved;
    bool ok = false;
    /* Plugins may keep the key and value pointers (nbdkit passes argv,
     * which lives as long as the process): hand them copies that live as
     * long as the library. */
    if (config) {
        if (!lib->config_kept)
            lib->config_kept = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
        char **kept = g_strdupv((char **)config);
        g_ptr_array_add(lib->config_kept, kept);
        config = (const char *const *)kept;
    }
    host_call_enter(&saved, lib, NULL, true);
    host_last_error_clear();
    for (size_t i = 0; config && config[i]; i += 2) {
        if (!p->config) {
            host_set_gerror(errp, lib->name, "this plugin does not need command line configuration");
            goto out;
        }
        plugin_probe_progress((uint32_t) (i / 2));
        if (p->config(config[i], config[i + 1]) == -1) {
            /* "PLUGIN: parameter 'KEY': what the plugin said". */
            g_autofree char *what = g_strdup_printf("parameter '%s'", config[i]);
            const char *said = plugin_host_last_error();
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "%s: %s: %s", lib->name, what,
                        said ? said : "invalid value");
            goto out;
        }
    }
    plugin_probe_progress(PROBE_CONFIG_COMPLETE);
    if (p->config_complete && p->config_complete() == -1) {
        host_set_gerror(errp, lib->name, "configuration is incomplete");
        goto out;
    }
    *model = p->_thread_model;
    plugin_probe_progress(PROBE_THREAD_MODEL);
    if (p->thread_model) {
        int r = p->thread_model();
        if (r == -1) {
            host_set_gerror(errp, lib->name, "thread_model failed");
            goto out;
        }
        if (r < *model)
            *model = r;
    }
    if (stages == CONFIG_UP_TO_THREAD_MODEL) {
        ok = true;
        goto out;
    }
    if (p->get_ready && p->get_ready() == -1) {
        host_set_gerror(errp, lib->name, "get_ready failed");
        goto out;
    }
    /* blockd does not fork after creating nodes, so this is "after fork". */
    if (p->after_fork && p->after_fork() == -1) {
        host_set_gerror(errp, lib->name, "after_fork failed");
        goto out;
    }
    ok = true;
out:
    host_call_leave(&saved);
    return ok;
}

/* Configures `lib` for a new handle; sets *model. */
static bool configure(PluginLibrary *lib, const char *const *config, int *model, GError **errp)
{
    if (lib->per_node_config) {
        if (!plugin_run_config(lib, config, CONFIG_UP_TO_AFTER_FORK, model, errp))
            return false;
        lib->configured = true;     /* cleanup now pairs with this get_ready */
        return true;
    }
    if (!lib->configured) {
        if (!plugin_run_config(lib, config, CONFIG_UP_TO_AFTER_FORK, &lib->model, errp))
            return false;
        lib->configured = true;
        lib->config = g_strdupv((char **) (config ? config : (const char *const[]) { NULL }));
    } else {
        static const char *const none[] = { NULL };
        if (!g_strv_equal((const char *const *) lib->config, config ? config : none)) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                        "%s: the plugin is already in use with a different configuration", lib->name);
            return false;
        }
    }
    *model = lib->model;
    return true;
}

/* ---- the handshake: get_size and can_*, in nbdkit's order ---- */

/* A boolean can_* (normalised), or `dflt` when the callback is absent. */
static int ask_bool(void *handle, int (*fn)(void *), int dflt)
{
    if (!fn)
        return dflt;
    int r = fn(handle);
    return r == -1 ? -1 : r != 0;
}

static bool fetch_caps(PluginHandle *h, bool read_only, GError **errp)
{
    const struct nbdkit_plugin *p = &h->lib->p;
    const bool v1 = h->lib->api_version == 1;
    PluginCaps *c = &h->caps;
    void *hd = h->handle;
    const char *failed = NULL;

    c->size = p->get_size(hd);
    if (c->size < 0) {
        failed = "get_size failed";
        goto fail;
    }
    if (read_only)
        c->can_write = 0;
    else if ((c->can_write = ask_bool(hd, p->can_write, v1 ? p->_pwrite_v1 != NULL : p->pwrite != NULL)) == -1) {
        failed = "can_write failed";
        goto fail;
    }
    if (!c->can_write)
        c->zero = ZERO_NONE;
    else if (p->can_zero) {
        int r = p->can_zero(hd);
        if (r == -1) {
            failed = "can_zero failed";
            goto fail;
        }
        c->zero = r ? ZERO_NATIVE : ZERO_EMULATE;
    } else
        c->zero = (p->zero || p->_zero_v1) ? ZERO_NATIVE : ZERO_EMULATE;
    if (c->zero == ZERO_NONE)
        c->can_fast_zero = 0;
    else if ((c->can_fast_zero = ask_bool(hd, p->can_fast_zero, p->zero == NULL)) == -1) {
        failed = "can_fast_zero failed";
        goto fail;
    }
    if (!c->can_write)
        c->can_trim = 0;
    else if ((c->can_trim = ask_bool(hd, p->can_trim, v1 ? p->_trim_v1 != NULL : p->trim != NULL)) == -1) {
        failed = "can_trim failed";
        goto fail;
    }
    const bool has_flush = v1 ? p->_flush_v1 != NULL : p->flush != NULL;
    if (!c->can_write)
        c->fua = NBDKIT_FUA_NONE;
    else if (p->can_fua) {
        if ((c->fua = p->can_fua(hd)) == -1) {
            failed = "can_fua failed";
            goto fail;
        }
        c->fua = CLAMP(c->fua, NBDKIT_FUA_NONE, NBDKIT_FUA_NATIVE);
    } else
        c->fua = has_flush ? NBDKIT_FUA_EMULATE : NBDKIT_FUA_NONE;
    if (v1 && c->fua > NBDKIT_FUA_EMULATE)
        c->fua = NBDKIT_FUA_EMULATE;
    if ((c->can_flush = ask_bool(hd, p->can_flush, has_flush)) == -1) {
        failed = "can_flush failed";
        goto fail;
    }
    if ((c->is_rotational = ask_bool(hd, p->is_rotational, 0)) == -1) {
        failed = "is_rotational failed";
        goto fail;
    }
    if ((c->can_multi_conn = ask_bool(hd, p->can_multi_conn, 0)) == -1) {
        failed = "can_multi_conn failed";
        goto fail;
    }
    if (h->model < NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS)
        c->can_multi_conn = 0;
    if (p->can_cache) {
        if ((c->cache = p->can_cache(hd)) == -1) {
            failed = "can_cache failed";
            goto fail;
        }
        c->cache = CLAMP(c->cache, NBDKIT_CACHE_NONE, NBDKIT_CACHE_NATIVE);
    } else
        c->cache = p->cache ? NBDKIT_CACHE_NATIVE : NBDKIT_CACHE_NONE;
    if ((c->can_extents = ask_bool(hd, p->can_extents, p->extents != NULL)) == -1) {
        failed = "can_extents failed";
        goto fail;
    }
    if (p->block_size) {
        uint32_t min = 0, pref = 0, max = 0;
        if (p->block_size(hd, &min, &pref, &max) == -1) {
            failed = "block_size failed";
            goto fail;
        }
        bool none = !min && !pref && !max;
        bool valid = none ||
            (min >= 1 && min <= 65536 && (min & (min - 1)) == 0 &&
             pref >= 512 && pref <= 32 * 1024 * 1024 && (pref & (pref - 1)) == 0 &&
             (max == 0xffffffff || max % min == 0) && min <= pref && pref <= max);
        if (!valid) {
            host_last_error_clear();
            failed = "block_size: invalid minimum, preferred or maximum block size";
            goto fail;
        }
        c->block_min = min;
        c->block_preferred = pref;
        c->block_max = max;
    }
    return true;
fail:
    host_set_gerror(errp, h->lib->name, failed);
    return false;
}

/* ---- open and close ---- */

/* Configures `lib` (one handle already counted on it) and opens a handle;
 * on failure the count is dropped again.  Setup lock held. */
static PluginHandle *open_on(PluginLibrary *lib, const char *const *config, bool read_only, GError **errp);

PluginHandle *plugin_handle_open(const char *plugin, const char *const *config, bool read_only, GError **errp)
{
    plugin_setup_lock();
    PluginLibrary *lib = plugin_library_acquire(plugin, errp);
    PluginHandle *h = lib ? open_on(lib, config, read_only, errp) : NULL;
    plugin_setup_unlock();
    return h;
}

/* Values that nbdkit_read_password would consume (a terminal or an
 * inherited fd can be read only once), so the probe must not see them. */
static bool reads_once(const char *const *config)
{
    for (size_t i = 0; config && config[i]; i += 2) {
        const char *v = config[i + 1];
        if (v[0] == '-' && (v[1] == '\0' || strspn(v + 1, "0123456789") == strlen(v + 1)))
            return true;
    }
    return false;
}

PluginHandle *plugin_handle_open_instance(const char *plugin, const char *const *config,
                                          bool read_only, GError **errp)
{
    g_autofree char *path = plugin_resolve_path(plugin, errp);
    if (!path)
        return NULL;
    const char *probe = g_getenv("BLOCKD_NBDKIT_PROBE");
    if (!(probe && strcmp(probe, "0") == 0) && !reads_once(config) &&
        !plugin_probe_config(path, config, errp))
        return NULL;
    plugin_setup_lock();
    PluginLibrary *lib = plugin_library_load_private(path, errp);
    PluginHandle *h = lib ? open_on(lib, config, read_only, errp) : NULL;
    plugin_setup_unlock();
    return h;
}

static PluginHandle *open_on(PluginLibrary *lib, const char *const *config, bool read_only, GError **errp)
{
    PluginHandle *h = g_new0(PluginHandle, 1);
    h->lib = lib;
    g_mutex_init(&h->request_lock);
    intern_pool_init(&h->interned);

    if (!configure(lib, config, &h->model, errp))
        goto fail;
    if (h->model == NBDKIT_THREAD_MODEL_SERIALIZE_CONNECTIONS && lib->handles > 1) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_BUSY,
                    "%s: the plugin serializes connections and is already in use", lib->name);
        goto fail;
    }

    HostCall saved;
    call_begin(h, &saved, true);
    host_last_error_clear();
    h->handle = lib->p.open(read_only);
    bool ok = h->handle != NULL;
    if (!ok)
        host_set_gerror(errp, lib->name, "open failed");
    else if (!(ok = fetch_caps(h, read_only, errp))) {
        if (lib->p.close)
            lib->p.close(h->handle);
        h->handle = NULL;
    }
    call_end(h, &saved);
    if (!ok)
        goto fail;
    return h;

fail:
    intern_pool_clear(&h->interned);
    g_mutex_clear(&h->request_lock);
    g_free(h);
    plugin_library_release(lib);
    return NULL;
}

void plugin_handle_close(PluginHandle *h)
{
    if (!h)
        return;
    plugin_setup_lock();
    if (h->lib->p.close) {
        HostCall saved;
        call_begin(h, &saved, false);
        h->lib->p.close(h->handle);
        call_end(h, &saved);
    }
    /* Strings interned during the "connection" die with it. */
    intern_pool_clear(&h->interned);
    g_mutex_clear(&h->request_lock);
    plugin_library_release(h->lib);
    g_free(h);
    plugin_setup_unlock();
}

const char *plugin_handle_name(PluginHandle *h)
{
    return h->lib->name;
}

int plugin_handle_thread_model(PluginHandle *h)
{
    return h->model;
}

/* ---- data path: raw_* call the plugin (lock held), return 0 / -errno ---- */

static int raw_pread(PluginHandle *h, void *buf, uint32_t count, uint64_t offset)
{
    const struct nbdkit_plugin *p = &h->lib->p;
    errno = 0;
    int r = h->lib->api_version == 1 ? p->_pread_v1(h->handle, buf, count, offset)
                                     : p->pread(h->handle, buf, count, offset, 0);
    return r == -1 ? failure(h) : 0;
}

static int raw_pwrite(PluginHandle *h, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    const struct nbdkit_plugin *p = &h->lib->p;
    int r;
    errno = 0;
    if (h->lib->api_version == 1)
        r = p->_pwrite_v1 ? p->_pwrite_v1(h->handle, buf, count, offset) : (errno = EROFS, -1);
    else
        r = p->pwrite ? p->pwrite(h->handle, buf, count, offset, flags) : (errno = EROFS, -1);
    return r == -1 ? failure(h) : 0;
}

static int raw_flush(PluginHandle *h)
{
    const struct nbdkit_plugin *p = &h->lib->p;
    int r = 0;
    errno = 0;
    if (h->lib->api_version == 1 && p->_flush_v1)
        r = p->_flush_v1(h->handle);
    else if (h->lib->api_version == 2 && p->flush)
        r = p->flush(h->handle, 0);
    return r == -1 ? failure(h) : 0;
}

/* The node layer (block/node.c) emulates what a plugin lacks -- FUA by a
 * flush, zero by writes, cache by reads -- from the capabilities the handle
 * reports, so a plugin is only ever asked what it said it can do: nbdkit's
 * contract, asserted here as nbdkit's backend.c asserts it. */
static void assert_fua_allowed(PluginHandle *h, uint32_t flags)
{
    g_assert(!(flags & BLOCK_FLAG_FUA) || h->caps.fua == NBDKIT_FUA_NATIVE);
}

int plugin_handle_pread(PluginHandle *h, void *buf, uint32_t count, uint64_t offset)
{
    HostCall saved;
    call_begin(h, &saved, false);
    int r = raw_pread(h, buf, count, offset);
    call_end(h, &saved);
    return r;
}

int plugin_handle_pwrite(PluginHandle *h, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    g_assert(h->caps.can_write);
    assert_fua_allowed(h, flags);
    HostCall saved;
    call_begin(h, &saved, false);
    int r = raw_pwrite(h, buf, count, offset, flags);
    call_end(h, &saved);
    return r;
}

int plugin_handle_flush(PluginHandle *h)
{
    HostCall saved;
    call_begin(h, &saved, false);
    int r = raw_flush(h);
    call_end(h, &saved);
    return r;
}

int plugin_handle_trim(PluginHandle *h, uint32_t count, uint64_t offset, uint32_t flags)
{
    const struct nbdkit_plugin *p = &h->lib->p;
    g_assert(h->caps.can_trim);
    assert_fua_allowed(h, flags);
    HostCall saved;
    call_begin(h, &saved, false);
    int r = 0;
    errno = 0;
    if (h->lib->api_version == 1 && p->_trim_v1)
        r = p->_trim_v1(h->handle, count, offset);
    else if (h->lib->api_version == 2 && p->trim)
        r = p->trim(h->handle, count, offset, flags);
    r = r == -1 ? failure(h) : 0;
    call_end(h, &saved);
    return r;
}

/* nbdkit's plugin_zero for a plugin with a native zero: -ENOTSUP when the
 * plugin cannot do this one (the node layer then writes zeroes, or fails a
 * fast zero). */
int plugin_handle_zero(PluginHandle *h, uint32_t count, uint64_t offset, uint32_t flags)
{
    const struct nbdkit_plugin *p = &h->lib->p;
    g_assert(h->caps.zero == ZERO_NATIVE);
    g_assert(!(flags & BLOCK_FLAG_FAST_ZERO) || h->caps.can_fast_zero);
    assert_fua_allowed(h, flags);
    if (count == 0)
        return 0;
    HostCall saved;
    call_begin(h, &saved, false);
    int r;
    errno = 0;
    if (h->lib->api_version == 2 && p->zero)
        r = p->zero(h->handle, count, offset, flags) == -1 ? failure(h) : 0;
    else if (h->lib->api_version == 1 && p->_zero_v1 && !(flags & BLOCK_FLAG_FAST_ZERO))
        r = p->_zero_v1(h->handle, count, offset, flags & BLOCK_FLAG_MAY_TRIM) == -1 ? failure(h) : 0;
    else
        r = -ENOTSUP;
    call_end(h, &saved);
    return r;
}

int plugin_handle_extents(PluginHandle *h, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *extents)
{
    if (!h->caps.can_extents)
        return extents_add(extents, offset, count, 0);
    HostCall saved;
    call_begin(h, &saved, false);
    errno = 0;
    int r = h->lib->p.extents(h->handle, count, offset, flags, (struct nbdkit_extents *) extents);
    r = r == -1 ? failure(h) : 0;
    if (r == 0 && extents_count(extents) == 0) {
        nbdkit_error("extents: plugin must return at least one extent");
        r = -EINVAL;
    }
    call_end(h, &saved);
    return r;
}

/* A plugin's native cache (plugins that report NBDKIT_CACHE_NATIVE without
 * a callback cache nothing, as in nbdkit). */
int plugin_handle_cache(PluginHandle *h, uint32_t count, uint64_t offset)
{
    const struct nbdkit_plugin *p = &h->lib->p;
    g_assert(h->caps.cache == NBDKIT_CACHE_NATIVE);
    if (!p->cache)
        return 0;
    HostCall saved;
    call_begin(h, &saved, false);
    errno = 0;
    int r = p->cache(h->handle, count, offset, 0) == -1 ? failure(h) : 0;
    call_end(h, &saved);
    return r;
}

int plugin_handle_resize(PluginHandle *h, uint64_t size)
{
    if (!h->lib->resize)
        return -ENOTSUP;
    HostCall saved;
    call_begin(h, &saved, false);
    int r = h->lib->resize(h->handle, size);
    call_end(h, &saved);
    if (r == 0)
        h->caps.size = (int64_t)size;
    return r;
}

void plugin_handle_set_size(PluginHandle *h, uint64_t size)
{
    h->caps.size = (int64_t)size;
}

int plugin_handle_read_fd(PluginHandle *h, uint32_t count, uint64_t offset, int *fd, uint64_t *fd_offset)
{
    if (!h->lib->read_fd)
        return -ENOTSUP;
    HostCall saved;
    call_begin(h, &saved, false);
    int r = h->lib->read_fd(h->handle, count, offset, fd, fd_offset);
    call_end(h, &saved);
    return r == 0 ? 0 : -ENOTSUP;
}
