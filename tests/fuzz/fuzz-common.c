/* Helpers shared by the fuzz targets (see fuzz.h). */
#include "tests/fuzz/fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>

static char *tmpdir;

const char *fuzz_tmpdir(void)
{
    if (!tmpdir) {
        tmpdir = g_build_filename(g_get_tmp_dir(), "blockd-fuzz-XXXXXX", NULL);
        if (!g_mkdtemp(tmpdir))
            g_error("fuzz: mkdtemp %s: %s", tmpdir, g_strerror(errno));
    }
    return tmpdir;
}

void fuzz_tmpdir_remove(void)
{
    if (!tmpdir)
        return;
    GDir *dir = g_dir_open(tmpdir, 0, NULL);
    const char *name;
    while (dir && (name = g_dir_read_name(dir))) {
        g_autofree char *p = g_build_filename(tmpdir, name, NULL);
        g_unlink(p);
    }
    if (dir)
        g_dir_close(dir);
    g_rmdir(tmpdir);
    g_clear_pointer(&tmpdir, g_free);
}

void fuzz_write_file(const char *path, const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        g_error("fuzz: open %s: %s", path, g_strerror(errno));
    while (size > 0) {
        ssize_t n = write(fd, data, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            g_error("fuzz: write %s: %s", path, g_strerror(errno));
        data += n;
        size -= (size_t)n;
    }
    close(fd);
}

static void log_handler(const gchar *domain, GLogLevelFlags level, const gchar *message, gpointer data)
{
    (void)data;
    if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING))
        fprintf(stderr, "%s: %s\n", domain ? domain : "blockd", message);
}

static void drop_print(const gchar *string)
{
    (void)string;
}

void fuzz_quiet_logging(void)
{
    /* Messages about refused clients and warnings about damaged files are
     * what bad input is supposed to produce; they would flood the output. */
    g_log_set_default_handler(log_handler, NULL);
    g_set_printerr_handler(drop_print);
    /* As under g_test_init (the replay test): a warning or critical is a finding. */
    g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_WARNING | G_LOG_LEVEL_CRITICAL);
}
