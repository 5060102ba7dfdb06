/* Target images for drive-backup and drive-mirror (see drive-target.h).
 *
 * Like QEMU's drive-backup/drive-mirror, the target is named by a file
 * name (or a URI) rather than a node: this opens the protocol node (a file,
 * or an NBD client for a URI) and, for qcow2, the format node on top of it,
 * which also opens the backing chain the image header names. */
#include "server/qmp/drive-target.h"
#include "server/qmp/qapi-runtime.h"
#include "qapi/qapi-types.h"
#include "block/drivers/qcow2.h"
#include "block/nbd-uri.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <json-glib/json-glib.h>

/* The probed format of an existing file; an unreadable one is called raw
 * and opening its file node reports the error. */
static const char *probe_format(const char *path)
{
    int err;
    const char *format = qcow2_probe_format(path, &err);
    return format ? format : "raw";
}

/* The backing file name and format a new image over `base` records (NULL
 * when it has no file name: a memory node, say).  A file node is a raw image. */
static void base_file(BlockNode *base, const char **file, const char **format)
{
    BlockImageInfo img;
    *file = *format = NULL;
    if (!base)
        return;
    if (node_image_info(base, &img) && img.filename) {
        *file = img.filename;
        *format = node_driver_name(base);
    } else if (node_filename(base)) {
        *file = node_filename(base);
        *format = "raw";
    }
}

/* The node a new image for `source` sits on under `base`, or NULL. */
static BlockNode *base_node(BlockNode *source, DriveTargetBase base)
{
    BlockImageInfo img;
    if (base == DRIVE_TARGET_SOURCE)
        return source;
    if (base == DRIVE_TARGET_SOURCE_BACKING && node_image_info(source, &img))
        return img.backing;
    return NULL;
}

static bool create_image(const char *path, const char *format, uint64_t size, BlockNode *base,
                         GError **errp)
{
    if (strcmp(format, "qcow2") == 0) {
        g_autoptr(GError) err = NULL;
        const char *bfile, *bformat;
        base_file(base, &bfile, &bformat);
        if (!qcow2_create_image(path, size, bfile, bformat, 0, &err)) {
            g_set_error_literal(errp, QMP_ERROR, QMP_ERROR_GENERIC, err->message);
            return false;
        }
        return true;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Could not create '%s': %s", path, g_strerror(err));
        return false;
    }
    close(fd);
    return true;
}

/* A node from options built here (parsed as blockdev-add's would be). */
static BlockNode *create_node(JsonObject *opts, GError **errp)
{
    QapiIn in = { .keyval = false };
    JsonNode *json = json_node_init_object(json_node_alloc(), opts);
    g_autoptr(BlockdevOptions) o = NULL;
    BlockNode *node = qapi_in_BlockdevOptions(&in, "", json, &o, errp) ? node_create(o, errp) : NULL;
    json_node_unref(json);
    return node;
}

/* The format node `name` of `format` over the protocol options `proto`;
 * `backing` is blockdev-add's backing reference: a node name, "" for none,
 * or NULL for the one the image names. */
static BlockNode *open_format(const char *format, const char *name, JsonObject *proto, const char *backing,
                              GError **errp)
{
    g_autoptr(JsonObject) opts = json_object_new();
    json_object_set_string_member(opts, "driver", format);
    json_object_set_string_member(opts, "node-name", name);
    json_object_set_object_member(opts, "file", json_object_ref(proto));
    if (backing)
        json_object_set_string_member(opts, "backing", backing);
    return create_node(opts, errp);
}

BlockNode *qmp_open_snapshot_overlay(const char *path, const char *format, bool existing, const char *name,
                                     BlockNode *node, GError **errp)
{
    if (!existing && strcmp(format, "qcow2") != 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Backing file not supported for file format '%s'", format);
        return NULL;
    }
    if (!existing && !create_image(path, format, node_size(node), node, errp))
        return NULL;
    g_autoptr(JsonObject) proto = json_object_new();
    json_object_set_string_member(proto, "driver", "file");
    json_object_set_string_member(proto, "filename", path);
    /* Opened without its backing file: the snapshot attaches the live node. */
    return open_format(format, name, proto, "", errp);
}

BlockNode *qmp_open_drive_target(const char *command, const char *path, const char *format,
                                 bool existing, const char *target_name, BlockNode *source,
                                 DriveTargetBase base, GError **errp)
{
    static unsigned counter;
    if (format && strcmp(format, "raw") != 0 && strcmp(format, "qcow2") != 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "%s: format '%s' is not supported (raw or qcow2)", command, format);
        return NULL;
    }
    bool uri = nbd_uri_is(path);
    /* An export cannot be created: as QEMU does, a "new" image on NBD is
     * the existing export, opened (the job checks its size). */
    bool created_is_opened = uri && !existing;
    if (uri)
        existing = true;
    if (!format)
        format = existing && !uri ? probe_format(path) : "raw";
    BlockNode *under = existing ? NULL : base_node(source, base);
    if (!existing && !create_image(path, format, node_size(source), under, errp))
        return NULL;

    g_autoptr(JsonObject) proto = NULL;
    if (uri) {
        g_autoptr(GError) err = NULL;
        proto = nbd_uri_to_options(path, &err);
        if (!proto) {
            if (created_is_opened)
                g_prefix_error(&err, "Protocol driver 'nbd' does not support image creation, and opening "
                               "the image failed: ");
            g_propagate_error(errp, g_steal_pointer(&err));
            return NULL;
        }
    } else {
        proto = json_object_new();
        json_object_set_string_member(proto, "driver", "file");
        json_object_set_string_member(proto, "filename", path);
    }
    g_autofree char *name = target_name ? g_strdup(target_name)
                                      : g_strdup_printf("%s-%u", command, ++counter);
    g_autoptr(GError) err = NULL;
    BlockNode *node = NULL;
    if (strcmp(format, "raw") == 0) {
        /* A raw image is its protocol node, as before (no extra layer). */
        json_object_set_string_member(proto, "node-name", name);
        node = create_node(proto, &err);
    } else {
        /* Over the source itself the image uses the live node, as QEMU
         * does, not a second opening of its file. */
        node = open_format(format, name, proto, under == source ? node_name(source) : NULL, &err);
    }
    if (!node && created_is_opened)
        g_prefix_error(&err, "Protocol driver 'nbd' does not support image creation, and opening the "
                       "image failed: ");
    if (!node)
        g_propagate_error(errp, g_steal_pointer(&err));
    return node;
}
