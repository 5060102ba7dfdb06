/* snapshot: put a new qcow2 overlay on top of a node while its exports keep
 * serving (blockdev-snapshot-sync); the node becomes the overlay's backing
 * file and writes go to the overlay from then on. */
#include "tools/blockctl/commands.h"
#include "tools/blockctl/cli.h"
#include "tools/blockctl/output.h"

#include <stdlib.h>
#include <string.h>

/* The new node's default name: the file's base name up to its first dot,
 * with anything a node name cannot hold replaced by '-'. */
static char *default_name(const char *file)
{
    g_autofree char *base = g_path_get_basename(file);
    char *dot = strchr(base, '.');
    if (dot && dot != base)
        *dot = '\0';
    GString *s = g_string_new(NULL);
    for (const char *p = base; *p; p++)
        g_string_append_c(s, g_ascii_isalnum(*p) || *p == '-' || *p == '_' ? *p : '-');
    if (!s->len || !g_ascii_isalpha(s->str[0]))
        g_string_prepend(s, "snap-");
    return g_string_free(s, FALSE);
}

/* snapshot NODE FILE [--name NEWNODE] [--existing] */
int cmd_snapshot(int argc, char **argv)
{
    const char *name = NULL;
    bool existing = false;
    const CliOption options[] = {
        { "--name", &name, NULL },
        { "--existing", NULL, &existing },
        { NULL },
    };
    int n;
    const char *const *w = cli_parse(argc, argv, options, 2, 2, &n);
    /* The daemon resolves relative names against its own directory: send an absolute one. */
    g_autofree char *cwd = g_get_current_dir();
    g_autofree char *file = g_path_is_absolute(w[1]) ? g_strdup(w[1]) : g_build_filename(cwd, w[1], NULL);
    g_autofree char *node = name ? g_strdup(name) : default_name(file);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "node-name", w[0]);
    json_object_set_string_member(args, "snapshot-file", file);
    json_object_set_string_member(args, "snapshot-node-name", node);
    json_object_set_string_member(args, "format", "qcow2");
    if (existing)
        json_object_set_string_member(args, "mode", "existing");
    g_autofree char *done = g_strdup_printf("node %s now on top of %s (%s)", node, w[0], file);
    return output_done(qmp_run(connect_daemon(), "blockdev-snapshot-sync", args), done);
}
