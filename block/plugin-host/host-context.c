/* The thread-local call context and the nbdkit_* functions that depend on
 * it: logging, the error slot, the connection queries, interned strings,
 * sleeping and shutdown. */
#define G_LOG_DOMAIN "blockd-plugin"
#include "block/plugin-host/host-internal.h"
#include "block/io-log.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static __thread HostCall current_call;
static __thread int error_slot;
/* The thread's last nbdkit_error message, freed when the thread exits
 * (NBD worker threads come and go). */
static GPrivate last_error_key = G_PRIVATE_INIT(free);

static int debug_enabled;        /* -v */
static int stdio_safe = 1;

void host_call_enter(HostCall *saved, PluginLibrary *lib, PluginHandle *handle, bool capture)
{
    *saved = current_call;
    current_call = (HostCall) { .lib = lib, .handle = handle, .capture = capture };
}

void host_call_leave(const HostCall *saved)
{
    current_call = *saved;
}

PluginLibrary *host_current_library(void)
{
    return current_call.lib;
}

PluginHandle *host_current_handle(void)
{
    return current_call.handle;
}

static const char *current_name(void)
{
    return current_call.lib ? current_call.lib->name : "nbdkit";
}

/* ---- errors ---- */

void host_error_reset(void)
{
    error_slot = 0;
}

int host_error_for_failure(const PluginLibrary *lib, int saved_errno)
{
    int slot = error_slot;
    error_slot = 0;
    if (slot > 0)
        return slot;
    if (lib->p.errno_is_preserved && saved_errno > 0)
        return saved_errno;
    return EIO;
}

HOST_EXPORT void nbdkit_set_error(int err)
{
    error_slot = err;
}

void host_last_error_clear(void)
{
    g_private_replace(&last_error_key, NULL);
}

const char *plugin_host_last_error(void)
{
    return g_private_get(&last_error_key);
}

void host_set_gerror(GError **errp, const char *name, const char *fallback)
{
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "%s: %s", name,
                plugin_host_last_error() ? plugin_host_last_error() : fallback);
}

/* ---- logging ---- */

static bool debug_on(void)
{
    return g_atomic_int_get(&debug_enabled);
}

void plugin_host_set_debug(bool on)
{
    g_atomic_int_set(&debug_enabled, on);
}

/* Formats with glibc's %m seeing the caller's errno. */
static char *format_message(int saved_errno, const char *fmt, va_list args)
{
    char *msg = NULL;
    errno = saved_errno;
    if (vasprintf(&msg, fmt, args) < 0)
        msg = NULL;
    return msg;
}

HOST_EXPORT void nbdkit_verror(const char *fmt, va_list args)
{
    int saved_errno = errno;
    char *msg = format_message(saved_errno, fmt, args);
    if (current_call.capture) {
        /* The caller turns it into its own error (QMP, command line). */
    } else if (io_log_active()) {
        /* The cause of a failing request: part of its one log line. */
        g_autofree char *cause = g_strdup_printf("%s: %s", current_name(), msg ? msg : fmt);
        io_log_note_cause(cause);
    } else {
        g_message("%s: %s", current_name(), msg ? msg : fmt);
    }
    g_private_replace(&last_error_key, msg ? msg : strdup(fmt));
    errno = saved_errno;
}

HOST_EXPORT void nbdkit_error(const char *fmt, ...)
{
    int saved_errno = errno;
    va_list args;
    va_start(args, fmt);
    nbdkit_verror(fmt, args);
    va_end(args);
    errno = saved_errno;
}

HOST_EXPORT void nbdkit_vdebug(const char *fmt, va_list args)
{
    int saved_errno = errno;
    if (debug_on()) {
        char *msg = format_message(saved_errno, fmt, args);
        g_debug("%s: %s", current_name(), msg ? msg : fmt);
        free(msg);
    }
    errno = saved_errno;
}

HOST_EXPORT void nbdkit_debug(const char *fmt, ...)
{
    int saved_errno = errno;
    va_list args;
    va_start(args, fmt);
    nbdkit_vdebug(fmt, args);
    va_end(args);
    errno = saved_errno;
}

/* ---- the connection ----
 * A plugin handle belongs to a node, not to an NBD client, so inside a call
 * on a handle there is a "connection" but no client: the export name is "",
 * there is no TLS and no peer. */

HOST_EXPORT const char *nbdkit_export_name(void)
{
    if (!current_call.handle) {
        nbdkit_error("no connection in this thread");
        return NULL;
    }
    return "";
}

HOST_EXPORT int nbdkit_is_tls(void)
{
    if (!current_call.handle) {
        nbdkit_error("no connection in this thread");
        return -1;
    }
    return 0;
}

HOST_EXPORT int nbdkit_peer_name(struct sockaddr *addr, socklen_t *addrlen)
{
    nbdkit_error("%s", current_call.handle ? "no client socket (blockd node)"
                                           : "no connection in this thread");
    return -1;
}

static int64_t no_peer_credentials(void)
{
    nbdkit_error("%s", current_call.handle ? "no client socket (blockd node)"
                                           : "no connection in this thread");
    return -1;
}

HOST_EXPORT int64_t nbdkit_peer_pid(void) { return no_peer_credentials(); }
HOST_EXPORT int64_t nbdkit_peer_uid(void) { return no_peer_credentials(); }
HOST_EXPORT int64_t nbdkit_peer_gid(void) { return no_peer_credentials(); }

HOST_EXPORT int nbdkit_stdio_safe(void)
{
    return g_atomic_int_get(&stdio_safe);
}

void plugin_host_set_stdio_safe(bool safe)
{
    g_atomic_int_set(&stdio_safe, safe);
}

/* ---- interned strings ---- */

static InternPool global_pool = { .strings = NULL };

void intern_pool_init(InternPool *pool)
{
    g_mutex_init(&pool->lock);
    pool->strings = g_ptr_array_new_with_free_func(g_free);
}

void intern_pool_clear(InternPool *pool)
{
    g_ptr_array_unref(pool->strings);
    g_mutex_clear(&pool->lock);
}

/* Takes ownership of `s` and ties its lifetime to the current call: the
 * connection if there is one, else the library, else the process. */
static const char *intern_take(char *s)
{
    InternPool *pool = current_call.handle ? &current_call.handle->interned
                     : current_call.lib ? &current_call.lib->interned
                     : &global_pool;
    g_mutex_lock(&pool->lock);
    if (!pool->strings)
        pool->strings = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(pool->strings, s);
    g_mutex_unlock(&pool->lock);
    return s;
}

HOST_EXPORT const char *nbdkit_strndup_intern(const char *str, size_t n)
{
    if (!str) {
        nbdkit_error("nbdkit_strndup_intern: NULL string");
        errno = EINVAL;
        return NULL;
    }
    return intern_take(g_strndup(str, n));
}

HOST_EXPORT const char *nbdkit_strdup_intern(const char *str)
{
    if (!str) {
        nbdkit_error("nbdkit_strdup_intern: NULL string");
        errno = EINVAL;
        return NULL;
    }
    return intern_take(g_strdup(str));
}

HOST_EXPORT const char *nbdkit_vprintf_intern(const char *fmt, va_list args)
{
    char *s = format_message(errno, fmt, args);
    if (!s) {
        nbdkit_error("nbdkit_vprintf_intern: %m");
        return NULL;
    }
    char *copy = g_strdup(s);
    free(s);
    return intern_take(copy);
}

HOST_EXPORT const char *nbdkit_printf_intern(const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    const char *s = nbdkit_vprintf_intern(fmt, args);
    va_end(args);
    return s;
}

/* ---- sleep and shutdown ---- */

static GMutex sleep_lock;
static GCond sleep_cond;
static bool shutting_down;
static void (*shutdown_handler)(const char *plugin, void *opaque);
static void *shutdown_opaque;

void plugin_host_begin_shutdown(void)
{
    g_mutex_lock(&sleep_lock);
    shutting_down = true;
    g_cond_broadcast(&sleep_cond);
    g_mutex_unlock(&sleep_lock);
}

void plugin_host_set_shutdown_handler(void (*fn)(const char *plugin, void *opaque), void *opaque)
{
    g_mutex_lock(&sleep_lock);
    shutdown_handler = fn;
    shutdown_opaque = opaque;
    g_mutex_unlock(&sleep_lock);
}

HOST_EXPORT int nbdkit_nanosleep(unsigned sec, unsigned nsec)
{
    if (sec >= INT_MAX - nsec / 1000000000u) {
        nbdkit_error("sleep request is too long");
        errno = EINVAL;
        return -1;
    }
    gint64 deadline = g_get_monotonic_time() + (gint64) sec * G_USEC_PER_SEC + nsec / 1000;
    g_mutex_lock(&sleep_lock);
    while (!shutting_down && g_cond_wait_until(&sleep_cond, &sleep_lock, deadline))
        ;
    bool interrupted = shutting_down;
    g_mutex_unlock(&sleep_lock);
    if (interrupted) {
        nbdkit_error("aborting sleep to shut down");
        errno = ESHUTDOWN;
        return -1;
    }
    return 0;
}

HOST_EXPORT void nbdkit_shutdown(void)
{
    const char *name = current_name();
    g_mutex_lock(&sleep_lock);
    void (*fn)(const char *, void *) = shutdown_handler;
    void *opaque = shutdown_opaque;
    g_mutex_unlock(&sleep_lock);
    if (fn)
        fn(name, opaque);
    else
        g_message("%s: plugin requested shutdown", name);
}
