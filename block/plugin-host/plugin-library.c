/* Loading plugins: the built-in table, name resolution, dlopen, nbdkit's
 * registration checks, .load once per library, and reference counting so
 * the last handle cleans up (and unloads a .so).
 *
 * Private instances (driver=nbdkit): a plugin's configuration is global to
 * its loaded library, so every such node loads its own copy of the .so.
 * The file is copied into a memfd and dlopen'ed as /proc/self/fd/N; glibc
 * identifies loaded objects by name and by device/inode, so each copy is a
 * separate library with its own globals, and dlclose of one copy unloads
 * only that one.  (The plugin's own dependencies, e.g. libcurl, are shared
 * as usual.)  If the kernel refuses executable memfds, a temporary file is
 * used instead and removed when the instance is unloaded. */
#include "block/plugin-host/host-internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/plugin-host/plugin-host-config.h"   /* generated: NBDKIT_PLUGINDIR */
#include "plugins/builtin-plugins.h"

typedef struct BuiltinPlugin {
    const char *name;
    struct nbdkit_plugin *(*init)(void);
    int (*read_fd)(void *handle, uint32_t count, uint64_t offset, int *fd, uint64_t *fd_offset);
    int (*resize)(void *handle, uint64_t size);
} BuiltinPlugin;

/* Our own plugins are instance-safe (see plugins/null.c), so each handle
 * gets its own configuration. */
static const BuiltinPlugin builtin_plugins[] = {
    { "file", blockd_plugin_file_init, blockd_file_read_fd, NULL },
    { "memory", blockd_plugin_memory_init, NULL, blockd_memory_resize },
    { "null", blockd_plugin_null_init, NULL, NULL },
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
    if (lib->copy_fd >= 0)
        close(lib->copy_fd);
    if (lib->copy_path) {
        unlink(lib->copy_path);
        g_free(lib->copy_path);
    }
    g_free(lib->key);
    g_free(lib->name);
    g_strfreev(lib->config);
    if (lib->config_kept)
        g_ptr_array_unref(lib->config_kept);
    g_mutex_clear(&lib->all_requests_lock);
    intern_pool_clear(&lib->interned);
    g_free(lib);
}

static PluginLibrary *library_new(const char *key)
{
    PluginLibrary *lib = g_new0(PluginLibrary, 1);
    lib->key = g_strdup(key);
    lib->copy_fd = -1;
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
    lib->resize = b->resize;
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

char *plugin_resolve_path(const char *spec, GError **errp)
{
    g_autofree char *path = plugin_path(spec, errp);
    if (!path)
        return NULL;
    char *real = realpath(path, NULL);
    if (!real) {
        int err = errno;
        if (strchr(spec, '/'))
            g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(err),
                        "cannot load nbdkit plugin %s: %s", path, g_strerror(err));
        else
            g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(err),
                        "cannot load nbdkit plugin '%s': %s: %s (is it installed?)",
                        spec, path, g_strerror(err));
    }
    return real;
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

/* LeakSanitizer's interface, present only in sanitized builds. */
extern void __lsan_disable(void) __attribute__((weak));
extern void __lsan_enable(void) __attribute__((weak));

/* dlopen, with allocations made by the plugin's constructors hidden from
 * LeakSanitizer: nbdkit's common code registers things (e.g. the sparse
 * allocators of the data and memory plugins) in constructor-built vectors
 * that nothing frees, which become unreachable once the copy is unloaded. */
static void *dlopen_quiet(const char *name, int flags)
{
    if (__lsan_disable)
        __lsan_disable();
    void *dl = dlopen(name, flags);
    if (__lsan_enable)
        __lsan_enable();
    return dl;
}

/* Copies `from` into `to` (both open); false with errno set on failure. */
static bool copy_fd(int from, int to, off_t size)
{
    off_t done = 0;
    while (done < size) {
        ssize_t n = sendfile(to, from, NULL, (size_t) (size - done));
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return false;
        }
        done += n;
    }
    return true;
}

/* Copies `path` to a memfd (or a temporary file) and dlopens the copy. */
static void *dlopen_private_copy(const char *path, PluginLibrary *lib, GError **errp)
{
    int in = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (in < 0 || fstat(in, &st) < 0) {
        int err = errno;
        if (in >= 0)
            close(in);
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(err), "cannot load plugin %s: %s",
                    path, g_strerror(err));
        return NULL;
    }
    g_autofree char *base = g_path_get_basename(path);
    void *dl = NULL;
    int out = memfd_create(base, MFD_CLOEXEC);
    if (out >= 0) {
        if (copy_fd(in, out, st.st_size)) {
            g_autofree char *name = g_strdup_printf("/proc/self/fd/%d", out);
            dl = dlopen_quiet(name, RTLD_NOW | RTLD_LOCAL);
        }
        if (dl)
            lib->copy_fd = out;      /* kept open: the name must stay unique */
        else
            close(out);
    }
    if (!dl) {
        /* No memfd, or an executable memfd is not allowed: a temporary file. */
        g_autofree char *tmpl = g_build_filename(g_get_tmp_dir(), "blockd-plugin-XXXXXX.so", NULL);
        out = g_mkstemp_full(tmpl, O_RDWR | O_CLOEXEC, 0700);
        if (out >= 0 && lseek(in, 0, SEEK_SET) == 0 && copy_fd(in, out, st.st_size))
            dl = dlopen_quiet(tmpl, RTLD_NOW | RTLD_LOCAL);
        if (out >= 0)
            close(out);
        if (dl)
            lib->copy_path = g_steal_pointer(&tmpl);
        else if (out >= 0)
            unlink(tmpl);
    }
    close(in);
    if (!dl) {
        /* dlopen's message names the copy; the reason is what matters. */
        const char *why = dlerror();
        const char *colon = why ? strstr(why, ": ") : NULL;
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot load plugin %s: %s", path,
                    colon ? colon + 2 : why ? why : g_strerror(errno));
    }
    return dl;
}

PluginLibrary *plugin_library_load_private(const char *path, GError **errp)
{
    PluginLibrary *lib = library_new(path);
    lib->private_instance = true;
    lib->per_node_config = true;
    lib->dl = dlopen_private_copy(path, lib, errp);
    if (!lib->dl) {
        library_free(lib);
        return NULL;
    }
    struct nbdkit_plugin *(*init)(void) = (struct nbdkit_plugin *(*)(void)) dlsym(lib->dl, "plugin_init");
    if (!init) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "%s: not an nbdkit plugin (no plugin_init)", path);
        dlclose(lib->dl);
        library_free(lib);
        return NULL;
    }
    if (!register_plugin(lib, init(), path, errp)) {
        dlclose(lib->dl);
        library_free(lib);
        return NULL;
    }
    call_load(lib);
    lib->handles = 1;
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
    if (lib->configured)
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
    if (!lib->private_instance)
        g_hash_table_remove(libraries, lib->key);
    /* Like nbdkit under valgrind: keeping the code mapped lets leak
     * checkers name the plugin that leaked. */
    if (!g_getenv("BLOCKD_KEEP_PLUGINS_LOADED"))
        dlclose(lib->dl);
    else
        lib->copy_fd = -1;      /* the symbolizer reads the copy by this name */
    library_free(lib);
}
