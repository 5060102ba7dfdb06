/* The configuration probe: before a node's private plugin instance is
 * configured inside blockd, the same plugin is loaded in a forked child and
 * taken through load, config (every parameter), config_complete and
 * thread_model.  nbdkit treats every error up to get_ready as fatal to the
 * process and plugins behave accordingly (some call exit(), a buggy one may
 * crash on a bad value); the child absorbs that, and blockd reports which
 * parameter was being processed.
 *
 * What is protected: crashes, exit() and hangs (30 s) in load, config,
 * config_complete and thread_model.  Not protected: get_ready, after_fork,
 * open and everything later, which run only inside blockd (they are not
 * repeatable without side effects: get_ready may create files, after_fork
 * starts threads).
 *
 * Child -> parent protocol on a pipe: a sequence of records, each a 32-bit
 * stage (the index of the config pair about to be passed, or one of the
 * PROBE_* values), PROBE_ERROR followed by the error text up to EOF, or
 * PROBE_OK.  The last stage seen before EOF tells where a crash happened. */
#include "block/plugin-host/host-internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROBE_TIMEOUT_MS 30000

static int plugin_probe_progress_fd = -1;

void plugin_probe_progress(uint32_t stage)
{
    if (plugin_probe_progress_fd >= 0 &&
        write(plugin_probe_progress_fd, &stage, sizeof stage) != sizeof stage)
        _exit(3);
}

/* A plugin calling exit() in the child: leave at once, skipping the
 * sanitizers' exit-time leak check (meaningless in a forked copy). */
static void exit_now(int status, void *unused)
{
    _exit(status);
}

/* In the child: load, configure, report; never returns. */
static G_NORETURN void probe_child(int fd, const char *path, const char *const *config)
{
    GError *err = NULL;
    on_exit(exit_now, NULL);
    plugin_probe_progress_fd = fd;
    plugin_probe_progress(PROBE_LOAD);
    /* RTLD_LOCAL, like the instance the parent will load. */
    PluginLibrary *lib = plugin_library_load_private(path, &err);
    int model;
    if (lib && plugin_run_config(lib, config, CONFIG_UP_TO_THREAD_MODEL, &model, &err)) {
        plugin_probe_progress(PROBE_OK);
        _exit(0);
    }
    plugin_probe_progress(PROBE_ERROR);
    const char *msg = err ? err->message : "configuration failed";
    size_t len = strlen(msg);
    while (len > 0) {
        ssize_t n = write(fd, msg, len);
        if (n <= 0)
            break;
        msg += n;
        len -= (size_t) n;
    }
    _exit(1);
}

/* Reads the child's records until EOF or the deadline. */
static bool read_report(int fd, uint32_t *last_stage, GString *message)
{
    gint64 deadline = g_get_monotonic_time() + PROBE_TIMEOUT_MS * 1000;
    GByteArray *buf = g_byte_array_new();
    bool eof = false;
    while (!eof) {
        gint64 left = (deadline - g_get_monotonic_time()) / 1000;
        if (left <= 0)
            break;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, (int) left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        guint8 chunk[4096];
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            eof = true;
        else
            g_byte_array_append(buf, chunk, (guint) n);
    }
    /* Decode: stages, then optionally PROBE_ERROR + text. */
    size_t i = 0;
    while (i + sizeof(uint32_t) <= buf->len) {
        uint32_t stage;
        memcpy(&stage, buf->data + i, sizeof stage);
        i += sizeof stage;
        *last_stage = stage;
        if (stage == PROBE_ERROR) {
            g_string_append_len(message, (const char *) buf->data + i, (gssize) (buf->len - i));
            break;
        }
    }
    g_byte_array_unref(buf);
    return eof;
}

static char *plugin_label(const char *path)
{
    g_autofree char *base = g_path_get_basename(path);
    if (g_str_has_prefix(base, "nbdkit-") && g_str_has_suffix(base, "-plugin.so"))
        return g_strndup(base + 7, strlen(base) - 7 - strlen("-plugin.so"));
    return g_strdup(path);
}

/* Where the child was when it died, for the error message. */
static char *describe_stage(uint32_t stage, const char *const *config)
{
    if (stage == PROBE_LOAD)
        return g_strdup("while loading");
    if (stage == PROBE_CONFIG_COMPLETE)
        return g_strdup("in config_complete (after all parameters were accepted)");
    if (stage == PROBE_THREAD_MODEL)
        return g_strdup("in thread_model");
    size_t pairs = 0;
    while (config && config[2 * pairs])
        pairs++;
    if (stage < pairs)
        return g_strdup_printf("in config while processing parameter '%s'", config[2 * stage]);
    return g_strdup("during configuration");
}

bool plugin_probe_config(const char *path, const char *const *config, GError **errp)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot create a pipe for the plugin probe");
        return false;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        close(fds[0]);
        close(fds[1]);
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(err), "cannot fork the plugin probe: %s",
                    g_strerror(err));
        return false;
    }
    if (pid == 0) {
        close(fds[0]);
        /* blockd's stdout carries its URIs: the plugin must not write there
         * (its nbdkit_error messages are captured anyway). */
        int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null_fd >= 0) {
            dup2(null_fd, STDIN_FILENO);
            dup2(null_fd, STDOUT_FILENO);
        }
        /* A crash should kill the child, not start a sanitizer report. */
        static const int fatal[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT };
        for (size_t i = 0; i < G_N_ELEMENTS(fatal); i++)
            signal(fatal[i], SIG_DFL);
        probe_child(fds[1], path, config);
    }
    close(fds[1]);
    uint32_t stage = PROBE_LOAD;
    g_autoptr(GString) message = g_string_new(NULL);
    bool finished = read_report(fds[0], &stage, message);
    close(fds[0]);
    if (!finished)
        kill(pid, SIGKILL);      /* our own child, hung in the plugin */
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (finished && stage == PROBE_OK && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return true;
    if (finished && stage == PROBE_ERROR) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "%s", message->str);
        return false;
    }
    g_autofree char *label = plugin_label(path);
    g_autofree char *where = describe_stage(stage, config);
    if (!finished)
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
                    "nbdkit plugin '%s' did not finish its configuration within %d s (stopped %s)",
                    label, PROBE_TIMEOUT_MS / 1000, where);
    else if (WIFSIGNALED(status))
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "nbdkit plugin '%s' crashed (%s) %s",
                    label, g_strsignal(WTERMSIG(status)), where);
    else
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "nbdkit plugin '%s' exited (status %d) %s",
                    label, WIFEXITED(status) ? WEXITSTATUS(status) : -1, where);
    return false;
}
