/* Target images for drive-backup and drive-mirror (see drive-target.h). */
#include "server/qmp/drive-target.h"
#include "server/qmp/qapi-runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <json-glib/json-glib.h>

BlockNode *qmp_open_drive_target(const char *command, const char *path, const char *format,
                                 bool existing, const char *node_name, uint64_t size,
                                 GError **errp)
{
    static unsigned counter;
    if (format && strcmp(format, "raw") != 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "%s: format '%s' is not supported (only raw)", command, format);
        return NULL;
    }
    if (!existing) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
            int err = errno;
            if (fd >= 0)
                close(fd);
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Could not create '%s': %s",
                        path, g_strerror(err));
            return NULL;
        }
        close(fd);
    }
    g_autoptr(JsonObject) opts = json_object_new();
    g_autofree char *name = node_name ? g_strdup(node_name)
                                      : g_strdup_printf("%s-%u", command, ++counter);
    json_object_set_string_member(opts, "driver", "file");
    json_object_set_string_member(opts, "node-name", name);
    json_object_set_string_member(opts, "filename", path);
    return node_create(opts, errp);
}
