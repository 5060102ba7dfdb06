/* Loading plugins: the built-in table, name resolution, dlopen, nbdkit's
 * registration checks, .load once per library, and reference counting so
 * the last handle cleans up (and unloads a .so). */
#include "block/plugin-host/host-internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/plugin-host/plugin-host-config.h"   /* generated: NBDKIT_PLUGINDIR */
#include "plugins/builtin-plugins.h"

typedef struct BuiltinPlugin {
    const char *name;
    struct nbdkit_plugin *(*init)(void);
    int (*read_fd)(void *handle, uint32_t count, uint64_t offset, int *fd, uint64_t *fd_offset);
} BuiltinPlugin;

/* Our own plugins are instance-safe (see plugins/null.c), so each handle
 * gets its own configuration. */
static const BuiltinPlugin builtin_plugins[] = {
    { "file", blockd_plugin_file_init, blockd_file_read_fd },
    { "memory", blockd_plugin_memory_init, NULL },
    { "null", blockd_plugin_null_init, NULL },
};

static GMutex setup_lock;
static GHashTable *libraries;   /* key -> PluginLibrary */

void plugin_setup_lock(void)
{
    g_mutex_lock(&setup_lock);
}

void plugin_setup_unlock(void)
{
    g_mutex_unlock(&setup_lock);
}

static bool valid_plugin_name(const char *name)
{
    if (!name || !g_ascii_isalnum(name[0]))
        return false;
    for (const char *p = name; *p; p++)
        if (!g_ascii_isalnum(*p) && *p != '-')
            return false;
    return true;
}

/* nbdkit's checks on what plugin_init returned, then the size-safe copy. */
static bool register_plugin(PluginLibrary *lib, const struct nbdkit_plugin *src,
                            const char *what, GError **errp)
{
    if (!src) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "%s: plugin registration function failed", what);
        return false;
    }
    if (src->_api_version < 1 || src->_api_version > 2) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "%s: plugin is incompatible with this version of blockd (_api_version = %d)",
                    what, src->_api_version);
        return false;
    }
    memset(&lib->p, 0, sizeof lib->p);
    memcpy(&lib->p, src, MIN(sizeof lib->p, src->_struct_size));
    lib->api_version = src->_api_version;

    const struct nbdkit_plugin *p = &lib->p;
    if (!valid_plugin_name(p->name)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "%s: plugin.name field must be non-empty, start with an ASCII alphanumeric "
                    "character and contain only alphanumerics and '-'", what);
        return false;
    }
    const char *missing = !p->open ? "open" : !p->get_size ? "get_size"
                        : !(lib->api_version == 2 ? p->pread != NULL : p->_pread_v1 != NULL) ? "pread" : NULL;
    if (missing) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "%s: plugin must have a .%s callback",
                    what, missing);
        return false;
    }
    lib->name = g_strdup(p->name);
    return true;
}

static void library_free(PluginLibrary *lib)
{
    g_free(lib->key);
    g_free(lib->name);
    g_strfreev(lib->config);
    g_mutex_clear(&lib->all_requests_lock);
    intern_pool_clear(&lib->interned);
    g_free(lib);
}

static PluginLibrary *library_new(const char *key)
{
    PluginLibrary *lib = g_new0(PluginLibrary, 1);
    lib->key = g_strdup(key);
    g_mutex_init(&lib->all_requests_lock);
    intern_pool_init(&lib->interned);
    return lib;
}

static void call_load(PluginLibrary *lib)
{
    if (lib->p.load) {
        HostCall saved;
        host_call_enter(&saved, lib, NULL, false);
        lib->p.load();
        host_call_leave(&saved);
    }
}

static PluginLibrary *load_builtin(const BuiltinPlugin *b, GError **errp)
{
    PluginLibrary *lib = library_new(b->name);
    if (!register_plugin(lib, b->init(), b->name, errp)) {
        library_free(lib);
        return NULL;
    }
    lib->builtin = true;
    lib->per_node_config = true;
    lib->read_fd = b->read_fd;
    call_load(lib);
    return lib;
}

/* The .so for `spec`: a path (contains '/') or an installed plugin name. */
static char *plugin_path(const char *spec, GError **errp)
{
    if (strchr(spec, '/'))
        return g_strdup(spec);
    if (!valid_plugin_name(spec)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "invalid plugin name '%s'", spec);
        return NULL;
    }
    return g_strdup_printf("%s/nbdkit-%s-plugin.so", NBDKIT_PLUGINDIR, spec);
}

static PluginLibrary *load_external(const char *path, const char *key, GError **errp)
{
    void *dl = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (!dl) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot load plugin: %s", dlerror());
        return NULL;
    }
    struct nbdkit_plugin *(*init)(void) = (struct nbdkit_plugin *(*)(void)) dlsym(dl, "plugin_init");
    if (!init) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "%s: not an nbdkit plugin (no plugin_init)", path);
        dlclose(dl);
        return NULL;
    }
    PluginLibrary *lib = library_new(key);
    if (!register_plugin(lib, init(), path, errp)) {
        library_free(lib);
        dlclose(dl);
        return NULL;
    }
    lib->dl = dl;
    call_load(lib);
    return lib;
}

PluginLibrary *plugin_library_acquire(const char *spec, GError **errp)
{
    if (!libraries)
        libraries = g_hash_table_new(g_str_hash, g_str_equal);

    const BuiltinPlugin *builtin = NULL;
    for (size_t i = 0; i < G_N_ELEMENTS(builtin_plugins); i++)
        if (strcmp(spec, builtin_plugins[i].name) == 0)
            builtin = &builtin_plugins[i];

    g_autofree char *path = NULL, *key = NULL;
    if (builtin)
        key = g_strdup(builtin->name);
    else {
        path = plugin_path(spec, errp);
        if (!path)
            return NULL;
        key = realpath(path, NULL);
        if (!key) {
            g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno),
                        "cannot load plugin %s: %s", path, g_strerror(errno));
            return NULL;
        }
    }

    PluginLibrary *lib = g_hash_table_lookup(libraries, key);
    if (!lib) {
        lib = builtin ? load_builtin(builtin, errp) : load_external(key, key, errp);
        if (!lib)
            return NULL;
        g_hash_table_insert(libraries, lib->key, lib);
    }
    lib->handles++;
    return lib;
}

static void call_cleanup(PluginLibrary *lib)
{
    if (lib->p.cleanup) {
        HostCall saved;
        host_call_enter(&saved, lib, NULL, false);
        lib->p.cleanup();
        host_call_leave(&saved);
    }
}

void plugin_library_release(PluginLibrary *lib)
{
    g_assert(lib->handles > 0);
    if (--lib->handles > 0)
        return;
    /* Cleanup only pairs with a successful get_ready. */
    if (lib->configured || lib->per_node_config)
        call_cleanup(lib);
    if (lib->builtin) {
        /* Built-ins stay loaded (.load ran once); the next node starts a
         * fresh configuration. */
        lib->configured = false;
        return;
    }
    if (lib->p.unload) {
        HostCall saved;
        host_call_enter(&saved, lib, NULL, false);
        lib->p.unload();
        host_call_leave(&saved);
    }
    g_hash_table_remove(libraries, lib->key);
    /* Like nbdkit under valgrind: keeping the code mapped lets leak
     * checkers name the plugin that leaked. */
    if (!g_getenv("BLOCKD_KEEP_PLUGINS_LOADED"))
        dlclose(lib->dl);
    library_free(lib);
}
