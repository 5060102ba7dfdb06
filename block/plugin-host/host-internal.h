/* Private to block/plugin-host/: the loaded-library and per-node handle
 * records, and the thread-local "current call" context that the exported
 * nbdkit_* functions consult (plugin name for messages, the connection for
 * nbdkit_export_name, the owner of interned strings, the error slot). */
#pragma once

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include <gio/gio.h>

#include "block/plugin-host/plugin-host.h"

/* Every definition of an exported nbdkit_* function carries this, so the
 * host works even if it is ever built with -fvisibility=hidden. */
#define HOST_EXPORT __attribute__((visibility("default")))

/* Strings handed out by nbdkit_*_intern, freed with their owner. */
typedef struct InternPool {
    GMutex lock;
    GPtrArray *strings;
} InternPool;

/* One loaded plugin (a built-in or a dlopen'ed .so), shared by its nodes. */
typedef struct PluginLibrary {
    char *key;               /* table key: built-in name or real path */
    char *name;              /* the plugin's .name, copied */
    void *dl;                /* NULL for built-ins */
    struct nbdkit_plugin p;  /* host-sized copy, zero-filled past _struct_size */
    int api_version;
    bool builtin;            /* never unloaded */
    bool private_instance;   /* this node's own copy of the .so (driver=nbdkit) */
    int copy_fd;             /* the memfd holding the private copy, or -1 */
    char *copy_path;         /* or the temporary file holding it, or NULL */
    bool per_node_config;    /* instance-safe: config..get_ready for every node */
    bool configured;         /* shared config done (not per_node_config) */
    int model;               /* effective thread model of the shared config */
    char **config;           /* the shared config, to compare with later nodes */
    GPtrArray *config_kept;  /* char ** of every config run: nbdkit's argv outlives the
                              * plugin, and plugins (eval, sh) keep pointers to keys and
                              * values until unload; freed with the library */
    int (*read_fd)(void *handle, uint32_t count, uint64_t offset,
                   int *fd, uint64_t *fd_offset); /* blockd-only hook or NULL */
    int (*resize)(void *handle, uint64_t size); /* blockd-only hook or NULL */
    unsigned handles;        /* open handles (nodes) */
    GMutex all_requests_lock;/* thread model <= SERIALIZE_ALL_REQUESTS */
    InternPool interned;     /* strings interned outside a connection */
} PluginLibrary;

/* What the plugin said at open, in nbdkit's terms. */
typedef struct PluginCaps {
    int64_t size;
    int can_write, can_flush, is_rotational, can_trim;
    int zero;                /* NBDKIT_ZERO_NONE/EMULATE/NATIVE */
    int can_fast_zero, fua, can_multi_conn, can_extents, cache;
    uint32_t block_min, block_preferred, block_max;
} PluginCaps;

/* One open plugin handle: what a node holds. */
struct PluginHandle {
    PluginLibrary *lib;
    void *handle;            /* the plugin's handle */
    int model;               /* effective thread model */
    GMutex request_lock;     /* thread model == SERIALIZE_REQUESTS */
    InternPool interned;     /* strings interned inside this "connection" */
    PluginCaps caps;
};

#define ZERO_NONE    0
#define ZERO_EMULATE 1
#define ZERO_NATIVE  2

/* ---- host-context.c ---- */

/* The thread's current call into a plugin; saved and restored around calls. */
typedef struct HostCall {
    PluginLibrary *lib;
    PluginHandle *handle;
    bool capture;            /* keep nbdkit_error messages for a GError */
} HostCall;

/* Makes (lib, handle, capture) current, saving the previous state in *saved. */
void host_call_enter(HostCall *saved, PluginLibrary *lib, PluginHandle *handle, bool capture);
/* Restores the state saved by host_call_enter. */
void host_call_leave(const HostCall *saved);
/* The library of the current call, or NULL. */
PluginLibrary *host_current_library(void);
/* The handle of the current call (our "connection"), or NULL. */
PluginHandle *host_current_handle(void);
/* Clears the thread's nbdkit_set_error slot. */
void host_error_reset(void);
/* The errno for a data callback that returned -1: the slot, the plugin's
 * errno (`saved_errno`) if it preserves errno, else EIO. */
int host_error_for_failure(const PluginLibrary *lib, int saved_errno);
/* Forgets the thread's last nbdkit_error message. */
void host_last_error_clear(void);
/* Sets *errp to "NAME: <last nbdkit_error message, or fallback>". */
void host_set_gerror(GError **errp, const char *name, const char *fallback);
/* Initialises / frees an intern pool. */
void intern_pool_init(InternPool *pool);
void intern_pool_clear(InternPool *pool);

/* ---- plugin-library.c ---- */

/* Finds or loads the plugin `spec` (built-in name, installed name or path);
 * counts a new handle on it.  Caller holds the setup lock. */
PluginLibrary *plugin_library_acquire(const char *spec, GError **errp);
/* The real path of plugin `spec` (an installed plugin's name or a path). */
char *plugin_resolve_path(const char *spec, GError **errp);
/* Loads a private copy of the .so at `path` (one handle counted, not shared). */
PluginLibrary *plugin_library_load_private(const char *path, GError **errp);
/* Drops a handle count; the last one cleans up (and unloads a .so). */
void plugin_library_release(PluginLibrary *lib);
/* Serialises configuration, open and close of plugin handles. */
void plugin_setup_lock(void);
void plugin_setup_unlock(void);

/* ---- plugin-handle.c ---- */

/* How far plugin_run_config goes. */
typedef enum {
    CONFIG_UP_TO_THREAD_MODEL,   /* load-time checks only (the fork probe) */
    CONFIG_UP_TO_AFTER_FORK,     /* everything before the first open */
} ConfigStages;
/* Runs config (each pair), config_complete, thread_model and, if asked,
 * get_ready and after_fork; sets *model; errors name plugin and parameter. */
bool plugin_run_config(PluginLibrary *lib, const char *const *config, ConfigStages stages,
                       int *model, GError **errp);

/* ---- plugin-probe.c ---- */

/* Runs load..thread_model of the plugin at `path` in a forked child, so a
 * plugin that crashes (or exits) while parsing its parameters cannot take
 * blockd down; false with an error naming the plugin and the parameter. */
bool plugin_probe_config(const char *path, const char *const *config, GError **errp);
/* Stages reported by the probe child: a config pair's index, or these. */
#define PROBE_LOAD            0xfffffff0u
#define PROBE_CONFIG_COMPLETE 0xfffffff1u
#define PROBE_THREAD_MODEL    0xfffffff2u
#define PROBE_OK              0xfffffffeu
#define PROBE_ERROR           0xffffffffu
/* In the probe child: tells the parent which stage is starting (no-op otherwise). */
void plugin_probe_progress(uint32_t stage);

/* ---- host-lists.c ---- */

struct nbdkit_exports;
/* True if the plugin called nbdkit_use_default_export on `e`. */
bool plugin_host_exports_use_default(const struct nbdkit_exports *e);
