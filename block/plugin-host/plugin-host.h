/* The nbdkit plugin host: runs an nbdkit plugin (built in, or any installed
 * .so) as a blockd node.  It plays the part of the nbdkit server: calls the
 * plugin's callbacks in nbdkit's order, enforces its thread model, provides
 * every exported nbdkit_* function, and emulates what the plugin lacks
 * exactly as nbdkit 1.32 does (FUA by flush, zero by writing, cache by
 * reading).  See reference/nbdkit-plugin-host.md. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

#include "block/extents.h"

typedef struct PluginHandle PluginHandle;

/* Registers the drivers "file", "memory", "null-co" (built-in plugins) and
 * "nbdkit" (plugin=NAME-or-PATH, args: the plugin's parameters). */
void plugin_host_register_drivers(void);

/* Opens a handle on plugin `plugin` -- a built-in name ("file", "memory",
 * "null"), an installed nbdkit plugin name, or a path to a .so -- passing
 * `config` (NULL-terminated key, value, key, value, ...) to its config
 * callback.  Built-in plugins are configured per handle; an external one is
 * configured once and later handles must use the same config. */
PluginHandle *plugin_handle_open(const char *plugin, const char *const *config,
                                 bool read_only, GError **errp);
/* Opens a handle on a private instance of the installed nbdkit plugin
 * `plugin` (a name in nbdkit's plugin directory, or a path to a .so): the
 * .so is loaded afresh for this handle, configured with `config` (after a
 * crash-safe probe in a child process), and unloaded when it is closed. */
PluginHandle *plugin_handle_open_instance(const char *plugin, const char *const *config,
                                          bool read_only, GError **errp);
/* Closes the plugin handle (the plugin is cleaned up with its last handle). */
void plugin_handle_close(PluginHandle *h);
/* The plugin's name. */
const char *plugin_handle_name(PluginHandle *h);
/* The effective thread model (NBDKIT_THREAD_MODEL_*). */
int plugin_handle_thread_model(PluginHandle *h);

/* Data functions: locked per the thread model; 0 or a negative errno.
 * Flags are BLOCK_FLAG_*.  They only ask the plugin what its capabilities
 * (plugin_handle_caps) allow -- FUA only if native, zero and cache only if
 * native -- and assert it: the node layer emulates the rest. */
int plugin_handle_pread(PluginHandle *h, void *buf, uint32_t count, uint64_t offset);
int plugin_handle_pwrite(PluginHandle *h, const void *buf, uint32_t count, uint64_t offset, uint32_t flags);
int plugin_handle_flush(PluginHandle *h);
int plugin_handle_trim(PluginHandle *h, uint32_t count, uint64_t offset, uint32_t flags);
/* The plugin's native zero; -ENOTSUP if it cannot do this request. */
int plugin_handle_zero(PluginHandle *h, uint32_t count, uint64_t offset, uint32_t flags);
/* Block status into `extents`; one data extent when the plugin has none. */
int plugin_handle_extents(PluginHandle *h, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *extents);
/* The plugin's native cache (a no-op if it has no callback). */
int plugin_handle_cache(PluginHandle *h, uint32_t count, uint64_t offset);
/* Resizes the plugin's disk through a blockd-only hook (the memory
 * plugin's), no request in flight: 0, -ENOTSUP without the hook, or -errno. */
int plugin_handle_resize(PluginHandle *h, uint64_t size);
/* Records a new size that the plugin's disk got behind its back (a file
 * truncated through its descriptor). */
void plugin_handle_set_size(PluginHandle *h, uint64_t size);
/* Zero-copy read through a blockd-only plugin hook, or -ENOTSUP. */
int plugin_handle_read_fd(PluginHandle *h, uint32_t count, uint64_t offset, int *fd, uint64_t *fd_offset);

/* The calling thread's last nbdkit_error message, or NULL. */
const char *plugin_host_last_error(void);
/* Turns nbdkit_debug output (debug-level log messages) on or off (-v). */
void plugin_host_set_debug(bool on);
/* What nbdkit_stdio_safe() answers (1 until the daemon says otherwise). */
void plugin_host_set_stdio_safe(bool safe);
/* Wakes every nbdkit_nanosleep with ESHUTDOWN: the daemon is stopping. */
void plugin_host_begin_shutdown(void);
/* Called (on the plugin's thread) when a plugin calls nbdkit_shutdown(). */
void plugin_host_set_shutdown_handler(void (*fn)(const char *plugin, void *opaque), void *opaque);
