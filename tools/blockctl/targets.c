/* Job targets (see targets.h). */
#include "tools/blockctl/targets.h"
#include "tools/blockctl/cleanup.h"
#include "tools/blockctl/cli.h"
#include "block/drivers/qcow2.h"
#include "block/nbd-uri.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

bool target_is_file(const char *to)
{
    return !nbd_uri_is(to) && strchr(to, '/') != NULL;
}

char *target_absolute(const char *path)
{
    return g_canonicalize_filename(path, NULL);
}

static void delete_node(void *data)
{
    QmpClient *c = qmp_current();
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "node-name", data);
    if (c)
        qmp_run_quietly(c, "blockdev-del", args, true);
}

unsigned target_undo_node(const char *name)
{
    return cleanup_add(delete_node, g_strdup(name), g_free);
}

char *target_add_nbd_node(QmpClient *c, const char *uri, const char *prefix, unsigned *undo)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonObject) args = nbd_uri_to_options(uri, &err);
    if (!args)
        die("%s", err->message);
    char *node = g_strdup_printf("%s-target-%d", prefix, (int)getpid());
    json_object_set_string_member(args, "node-name", node);
    json_node_unref(qmp_run(c, "blockdev-add", args));
    *undo = target_undo_node(node);
    return node;
}

const char *target_probe_file(const char *path)
{
    int err;
    const char *format = qcow2_probe_format(path, &err);
    if (!format)
        die("cannot read %s: %s", path, g_strerror(err));
    return format;
}

static void remove_file(void *data)
{
    if (unlink(data) < 0 && errno != ENOENT)
        g_printerr("blockctl: cannot remove %s: %s\n", (char *)data, g_strerror(errno));
}

/* The name a new image in `path`'s directory records for `backing`: relative
 * to that directory when it is there (as qemu-img does), else absolute. */
static char *backing_name(const char *path, const char *backing)
{
    g_autofree char *dir = g_path_get_dirname(path), *bdir = g_path_get_dirname(backing);
    return strcmp(dir, bdir) == 0 ? g_path_get_basename(backing) : g_strdup(backing);
}

void target_create_file(const char *path, const char *format, uint64_t size, const char *backing, unsigned *undo)
{
    /* O_EXCL: never overwrite an earlier backup (or anything else). */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        die("cannot create %s: %s", path, g_strerror(errno));
    *undo = cleanup_add(remove_file, g_strdup(path), g_free);
    if (strcmp(format, "qcow2") == 0) {
        close(fd);
        g_autoptr(GError) err = NULL;
        g_autofree char *name = backing ? backing_name(path, backing) : NULL;
        if (!qcow2_create_image(path, size, name, backing ? target_probe_file(backing) : NULL, 0, &err))
            die("%s", err->message);
        return;
    }
    int r = ftruncate(fd, (off_t)size);
    int err = errno;
    close(fd);
    if (r < 0)
        die("cannot create %s: %s", path, g_strerror(err));
}
